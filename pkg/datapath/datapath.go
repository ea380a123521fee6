// Package datapath moves bytes between the two sockets of one forwarded connection.
//
// It owns nothing but the byte path: which sockets to join is decided elsewhere. Every
// connection starts on the userspace path, splice(2) between the sockets, which measures
// cheaper than a userspace buffer copy (shared/sockmap-notes.md). The kernel (sockmap) path
// plugs in behind the same Path interface.
package datapath

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Path joins two connected sockets until both directions have ended.
type Path interface {
	// Splice forwards a<->b, propagating half-close (FIN) and reset in both directions,
	// and closes both sockets before it returns.
	Splice(a, b *net.TCPConn) Result
	// Mode names the path for logs and status ("userspace", later "sockmap", "auto").
	Mode() string
}

// Result says how a spliced connection ended.
type Result struct {
	AToB, BToA int64 // bytes forwarded in each direction
	// Err is the first error seen in either direction; nil when both sides closed cleanly.
	// When Err is not nil both sockets were reset, so each peer learns of the failure.
	Err error
}

// Userspace splices with splice(2): io.Copy between two *net.TCPConn uses it.
type Userspace struct{}

// Mode implements Path.
func (Userspace) Mode() string { return "userspace" }

// Splice implements Path.
func (Userspace) Splice(a, b *net.TCPConn) Result {
	var (
		res     Result
		errOnce sync.Once
		wg      sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() {
			res.Err = err
			// A failure in one direction must reach both peers: a reset on one side
			// becomes a reset on the other, and the surviving direction's blocked
			// read or write is released.
			Abort(a)
			Abort(b)
		})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, err := pipe(b, a)
		res.AToB = n
		if err != nil {
			fail(err)
		}
	}()
	n, err := pipe(a, b)
	res.BToA = n
	if err != nil {
		fail(err)
	}
	wg.Wait()
	if res.Err == nil {
		a.Close()
		b.Close()
	}
	return res
}

// pipe copies src to dst until src's end of stream, then half-closes dst so the FIN travels on.
func pipe(dst, src *net.TCPConn) (int64, error) {
	n, err := io.Copy(dst, src)
	if err != nil {
		return n, err
	}
	if err := dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
		return n, err
	}
	return n, nil
}

// Abort closes c with a reset (SO_LINGER 0) instead of a FIN, so its peer sees the
// connection fail rather than end.
func Abort(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}
