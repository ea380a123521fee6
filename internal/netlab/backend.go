package netlab

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Backend is a test server inside a site. It runs in the lab's process so a test can ask it
// exactly what it received. Every connection is served by one protocol, chosen by the
// client's first bytes or by the backend's mode:
//
//   - banner (default): the backend speaks first, "NAME\n", then echoes until end of stream
//     and half-closes back;
//   - "xfer SEED-UP N SEED-DOWN M\n" from the client: the backend checks N bytes of the
//     up stream, sends M bytes of the down stream meanwhile, then after the client's end of
//     stream answers "OK\n" or "BAD ...\n" and closes.
type Backend struct {
	Name string
	Addr string
	site *Site

	mu    sync.Mutex
	ln    *net.TCPListener
	conns map[*net.TCPConn]struct{}
	wg    sync.WaitGroup

	Accepted atomic.Int64
	// FinFirstReceived is how many bytes the last "finfirst" client sent after the backend's FIN.
	FinFirstReceived atomic.Int64
	// Errors holds every connection error the backend saw (resets included), in order.
	errMu  sync.Mutex
	errors []ConnError
}

// StartBackend starts a backend called name listening on addr inside site.
func StartBackend(site *Site, name, addr string) (*Backend, error) {
	b := &Backend{Name: name, Addr: addr, site: site, conns: map[*net.TCPConn]struct{}{}}
	return b, b.Start()
}

// Start (re)starts listening.
func (b *Backend) Start() error {
	ln, err := b.site.Listen(b.Addr)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.ln = ln
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			b.Accepted.Add(1)
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				start := time.Now()
				err := b.serve(c)
				if err != nil {
					b.errMu.Lock()
					b.errors = append(b.errors, ConnError{Err: err, Lived: time.Since(start)})
					b.errMu.Unlock()
				}
				b.mu.Lock()
				delete(b.conns, c)
				b.mu.Unlock()
				c.Close()
			}()
		}
	}()
	return nil
}

// StopListening closes the listening socket: new connections are refused, those open carry on.
// This is what a gateway sees of a backend that died or was taken away.
func (b *Backend) StopListening() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln != nil {
		b.ln.Close()
		b.ln = nil
	}
}

// ResetAll resets every open connection of the backend.
func (b *Backend) ResetAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.conns {
		_ = c.SetLinger(0)
		c.Close()
	}
}

// Open returns how many connections the backend holds open.
func (b *Backend) Open() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// ConnError is what a backend connection ended with, and how long it lived: a test can tell
// the connection it held from a gateway's health probe, which connects and closes at once.
type ConnError struct {
	Err   error
	Lived time.Duration
}

func (e ConnError) Error() string { return fmt.Sprintf("%v (after %v)", e.Err, e.Lived) }

// Errors returns the connection errors the backend has seen.
func (b *Backend) Errors() []ConnError {
	b.errMu.Lock()
	defer b.errMu.Unlock()
	return append([]ConnError(nil), b.errors...)
}

// Close stops the backend and waits for its connections to end.
func (b *Backend) Close() {
	b.StopListening()
	b.ResetAll()
	b.wg.Wait()
}

func (b *Backend) serve(c *net.TCPConn) error {
	r := bufio.NewReader(c)
	// Peek without blocking for long: an xfer client speaks first, a banner client waits.
	if _, err := c.Write([]byte(b.Name + "\n")); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) && line == "" {
			return c.CloseWrite()
		}
		return err
	}
	if strings.HasPrefix(line, "xfer ") {
		return b.xfer(c, r, line)
	}
	if line == "finfirst\n" {
		// The backend ends its direction first; the client's direction must stay open.
		if err := c.CloseWrite(); err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, r)
		b.FinFirstReceived.Store(n)
		return err
	}
	// Echo mode: the line, then everything else, then our end of stream.
	if _, err := c.Write([]byte(line)); err != nil {
		return err
	}
	if _, err := r.WriteTo(c); err != nil {
		return err
	}
	return c.CloseWrite()
}

func (b *Backend) xfer(c *net.TCPConn, r *bufio.Reader, header string) error {
	f := strings.Fields(header)
	if len(f) != 5 {
		return fmt.Errorf("bad xfer header %q", header)
	}
	seedUp, _ := strconv.ParseUint(f[1], 10, 64)
	n, _ := strconv.ParseInt(f[2], 10, 64)
	seedDown, _ := strconv.ParseUint(f[3], 10, 64)
	m, _ := strconv.ParseInt(f[4], 10, 64)
	sendErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, io.LimitReader(NewStream(seedDown), m))
		sendErr <- err
	}()
	verdict := "OK\n"
	if err := VerifyStream(r, seedUp, n); err != nil {
		verdict = "BAD " + err.Error() + "\n"
	}
	if err := <-sendErr; err != nil {
		return fmt.Errorf("send down stream: %w", err)
	}
	if _, err := c.Write([]byte(verdict)); err != nil {
		return err
	}
	if verdict != "OK\n" {
		return errors.New(strings.TrimSpace(verdict))
	}
	return c.CloseWrite()
}

// Stream is an endless deterministic byte stream: word k is splitmix64(seed+k). Cheap enough
// to generate and check at several GB/s, and any lost, duplicated or reordered byte shows.
type Stream struct {
	seed, k uint64
	pend    [8]byte
	npend   int
}

// NewStream returns the stream for seed.
func NewStream(seed uint64) *Stream { return &Stream{seed: seed} }

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Read fills p with the next bytes of the stream.
func (s *Stream) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && s.npend > 0 {
		p[n] = s.pend[8-s.npend]
		s.npend--
		n++
	}
	for len(p)-n >= 8 {
		binary.LittleEndian.PutUint64(p[n:], splitmix(s.seed+s.k))
		s.k++
		n += 8
	}
	if n < len(p) {
		binary.LittleEndian.PutUint64(s.pend[:], splitmix(s.seed+s.k))
		s.k++
		s.npend = 8
		for n < len(p) {
			p[n] = s.pend[8-s.npend]
			s.npend--
			n++
		}
	}
	return n, nil
}

// VerifyStream reads exactly n bytes of the stream for seed from r, then expects end of
// stream; it reports the first difference.
func VerifyStream(r io.Reader, seed uint64, n int64) error {
	want := NewStream(seed)
	got := make([]byte, 64<<10)
	exp := make([]byte, 64<<10)
	var off int64
	for off < n {
		chunk := int(min(int64(len(got)), n-off))
		k, err := io.ReadFull(r, got[:chunk])
		_, _ = want.Read(exp[:k])
		for i := 0; i < k; i++ {
			if got[i] != exp[i] {
				return fmt.Errorf("byte %d differs: got %#x want %#x", off+int64(i), got[i], exp[i])
			}
		}
		off += int64(k)
		if err != nil {
			return fmt.Errorf("stream ended after %d of %d bytes: %w", off, n, err)
		}
	}
	var one [1]byte
	if k, err := r.Read(one[:]); k != 0 || !errors.Is(err, io.EOF) {
		return fmt.Errorf("more than %d bytes, or no end of stream after them (read %d, %v)", n, k, err)
	}
	return nil
}
