// Package datapath moves bytes between the two sockets of one forwarded connection.
//
// It owns nothing but the byte path: which sockets to join is decided elsewhere. Every
// connection starts on the userspace path, splice(2) between the sockets, which measures
// cheaper than a userspace buffer copy (shared/sockmap-notes.md). The kernel (sockmap) path
// plugs in behind the same Path interface.
package datapath

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// Path joins two connected sockets until both directions have ended.
type Path interface {
	// Splice forwards a<->b, propagating half-close (FIN) and reset in both directions,
	// and closes both sockets before it returns. When ctx ends first (the site stops, a link
	// under the connection died), both sockets are reset.
	Splice(ctx context.Context, a, b *net.TCPConn) Result
	// Mode names the path for logs and status ("userspace", later "sockmap", "auto").
	Mode() string
}

// Result says how a spliced connection ended.
type Result struct {
	AToB, BToA int64 // bytes forwarded in each direction
	// Err is the first error seen in either direction; nil when both sides closed cleanly.
	// When Err is not nil both sockets were reset, so each peer learns of the failure.
	Err error
	// Promoted: the connection went to the kernel path; Demoted: a direction of it came back
	// to userspace because its reader was slower than its writer.
	Promoted, Demoted bool
}

// Userspace splices with splice(2): io.Copy between two *net.TCPConn uses it.
type Userspace struct{}

// Mode implements Path.
func (Userspace) Mode() string { return "userspace" }

// Splice implements Path.
func (Userspace) Splice(ctx context.Context, a, b *net.TCPConn) Result {
	var (
		res  Result
		once sync.Once
		wg   sync.WaitGroup
	)
	// end runs once: the first failure (or the context) resets both sockets so each peer
	// learns of it and the surviving direction's blocked read or write is released; a clean
	// end closes them. Whoever comes second waits for the first inside once.Do, so res.Err is
	// settled when Splice returns.
	end := func(err error) {
		once.Do(func() {
			res.Err = err
			if err != nil {
				Abort(a)
				Abort(b)
				return
			}
			a.Close()
			b.Close()
		})
	}
	stop := context.AfterFunc(ctx, func() { end(context.Cause(ctx)) })
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, err := pipe(b, a)
		res.AToB = n
		if err != nil {
			end(err)
		}
	}()
	n, err := pipe(a, b)
	res.BToA = n
	if err != nil {
		end(err)
	}
	wg.Wait()
	stop()
	end(nil)
	return res
}

// pipe copies src to dst until src's end of stream, then half-closes dst so the FIN travels on.
func pipe(dst, src *net.TCPConn) (int64, error) {
	n, err := io.Copy(dst, src)
	if err != nil {
		return n, err
	}
	return n, endOfStream(dst, src)
}

// endOfStream passes src's end of stream on to dst. splice(2) from a socket that was reset can
// report a plain end of stream (tcp_splice_read looks at SOCK_DONE before sk_err), and passing
// that on as a FIN would turn the client's reset into a clean close at the backend: the
// pending socket error tells the two apart.
func endOfStream(dst, src *net.TCPConn) error {
	if err := socketError(src); err != nil {
		return err
	}
	if err := dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// socketError returns the socket's pending error (SO_ERROR), if any.
func socketError(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var soErr int
	if cerr := rc.Control(func(fd uintptr) { soErr, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR) }); cerr != nil {
		return cerr
	}
	if err != nil {
		return err
	}
	if soErr != 0 {
		return unix.Errno(soErr)
	}
	return nil
}

// Abort closes c with a reset (SO_LINGER 0) instead of a FIN, so its peer sees the
// connection fail rather than end.
func Abort(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}
