package datapath

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Data path modes, as in the data-path setting.
const (
	ModeAuto      = "auto"
	ModeSockmap   = "sockmap"
	ModeUserspace = "userspace"
)

// Select returns the data path for mode:
//   - "userspace": splice(2) only;
//   - "auto": the hybrid kernel path where it loads and passes its self-test, else userspace;
//     fallback says why (empty when the kernel path is in use);
//   - "sockmap": every connection on the kernel path at once, or an error: no silent fallback.
func Select(mode string, opts KernelOptions) (p Path, fallback string, err error) {
	switch mode {
	case ModeUserspace:
		return Userspace{}, "", nil
	case ModeAuto, ModeSockmap:
	default:
		return nil, "", fmt.Errorf("data path %q: use auto, sockmap or userspace", mode)
	}
	opts.Always = mode == ModeSockmap
	k, err := NewKernel(opts)
	if err == nil {
		if err = k.SelfTest(); err != nil {
			k.Close()
			err = fmt.Errorf("self-test: %w", err)
		}
	}
	if err != nil {
		if mode == ModeSockmap {
			return nil, "", fmt.Errorf("data path sockmap: %w", err)
		}
		return Userspace{}, err.Error(), nil
	}
	return k, "", nil
}

// SelfTest pushes a checksummed transfer each way, with half-close, through a socket pair on
// the kernel path, on loopback. A kernel that loads the program but forwards wrongly is caught
// here, before a client's byte is at stake.
func (k *Kernel) SelfTest() error {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fmt.Errorf("listen on loopback: %w", err)
	}
	defer ln.Close()
	ca, sa, err := loopbackPair(ln)
	if err != nil {
		return err
	}
	defer ca.Close()
	cb, sb, err := loopbackPair(ln)
	if err != nil {
		sa.Close()
		return err
	}
	defer cb.Close()
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range []*net.TCPConn{ca, cb} {
		_ = c.SetDeadline(deadline)
	}
	result := make(chan Result, 1)
	go func() { result <- k.promote(context.Background(), sa, sb, Result{}) }()
	// Send only once the pair is on the kernel path: bytes and a FIN that came first would be
	// forwarded in userspace and the pair would (rightly) stay there, testing nothing.
	if !k.waitActive(1, time.Until(deadline)) {
		return errors.New("the pair never reached the kernel path")
	}

	payload := make([]byte, 1<<20)
	if _, err := rand.Read(payload); err != nil {
		return err
	}
	check := func(src, dst *net.TCPConn) error {
		errc := make(chan error, 1)
		go func() {
			_, err := src.Write(payload)
			if err == nil {
				err = src.CloseWrite()
			}
			errc <- err
		}()
		got, err := io.ReadAll(dst)
		if werr := <-errc; werr != nil {
			return werr
		}
		if err != nil {
			return err
		}
		if !bytes.Equal(got, payload) {
			return fmt.Errorf("%d bytes arrived of %d sent, or they differ", len(got), len(payload))
		}
		return nil
	}
	if err := errors.Join(check(ca, cb), check(cb, ca)); err != nil {
		return err
	}
	select {
	case r := <-result:
		if r.Err != nil {
			return r.Err
		}
		if r.AToB != int64(len(payload)) || r.BToA != int64(len(payload)) {
			return fmt.Errorf("kernel counted %d and %d bytes, want %d each way", r.AToB, r.BToA, len(payload))
		}
	case <-time.After(time.Until(deadline)):
		return errors.New("promoted pair did not end after both sides closed")
	}
	if k.Promoted.Load() == 0 {
		return errors.New("the pair never reached the kernel path")
	}
	return nil
}

// loopbackPair dials ln and accepts: the two ends of one new connection.
func loopbackPair(ln *net.TCPListener) (client, server *net.TCPConn, err error) {
	if client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr)); err != nil {
		return nil, nil, err
	}
	if server, err = ln.AcceptTCP(); err != nil {
		client.Close()
		return nil, nil, err
	}
	return client, server, nil
}
