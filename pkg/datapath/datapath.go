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
	"sync/atomic"
	"time"

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
	// Moved: the connection left its stream for a tunnel of its own (JoinStream).
	Moved bool
}

// Userspace splices with splice(2): io.Copy between two *net.TCPConn uses it.
type Userspace struct{}

// Mode implements Path.
func (Userspace) Mode() string { return "userspace" }

// Splice implements Path.
func (Userspace) Splice(ctx context.Context, a, b *net.TCPConn) Result {
	return join(ctx, a, b, true, true, carried{})
}

// carried holds bytes already read from one side of a connection and not yet written to the
// other: the userspace path writes them first.
type carried struct{ ab, ba []byte }

// join forwards the directions still open (a to b when openAB, b to a when openBA) with
// splice(2), and closes both sockets before it returns. A direction already ended, here or by an
// earlier path, is not copied but watched: its source may still be reset, and that must reach the
// other peer even while the open direction is idle.
func join(ctx context.Context, a, b *net.TCPConn, openAB, openBA bool, carry carried) Result {
	var (
		res     Result
		once    sync.Once
		wg      sync.WaitGroup
		pending atomic.Int32 // directions still copying
	)
	// end runs once: the first failure (or the context) resets both sockets so each peer
	// learns of it and the surviving direction's blocked read or write is released; a clean
	// end closes them. Whoever comes second waits for the first inside once.Do, so res.Err is
	// settled when join returns.
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
	releaseWatchers := func() {
		_ = a.SetReadDeadline(time.Unix(1, 0))
		_ = b.SetReadDeadline(time.Unix(1, 0))
	}
	for _, open := range []bool{openAB, openBA} {
		if open {
			pending.Add(1)
		}
	}
	if pending.Load() == 0 {
		releaseWatchers()
	}
	// direction copies src to dst when open, then watches src for a reset until the last
	// open direction has ended, which releases the watchers with a read deadline.
	direction := func(dst, src *net.TCPConn, open bool, first []byte, n *int64) {
		defer wg.Done()
		if open {
			var err error
			*n, err = pipe(dst, src, first)
			if err != nil {
				end(err)
				return
			}
			if pending.Add(-1) == 0 {
				releaseWatchers()
				return
			}
		}
		if err := awaitReset(src); err != nil {
			end(err)
		}
	}
	wg.Add(2)
	go direction(b, a, openAB, carry.ab, &res.AToB)
	direction(a, b, openBA, carry.ba, &res.BToA)
	wg.Wait()
	stop()
	end(nil)
	return res
}

// awaitReset waits, without polling, until c (whose read side has ended) fails or its read
// deadline passes, and returns the socket error, if any. A reset after end of stream is not
// reported by recv(2), which keeps returning 0 once the FIN was seen (tcp_recvmsg checks
// SOCK_DONE before sk_err); but it wakes the socket's waiters, so Go's poller runs the check
// again then. A reset that arrives after the FIN is reported by the kernel as EPIPE (tcp_reset,
// CLOSE_WAIT), which says "reset" here.
func awaitReset(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var sockErr error
	_ = rc.Read(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil || v == 0:
		case unix.Errno(v) == unix.EPIPE:
			sockErr = unix.ECONNRESET
		default:
			sockErr = unix.Errno(v)
		}
		return sockErr != nil
	})
	return sockErr
}

// pipe writes first to dst, then copies src to dst until src's end of stream, then half-closes
// dst so the FIN travels on.
func pipe(dst, src *net.TCPConn, first []byte) (int64, error) {
	// Only when there is something: a write of nothing is still a system call, and on a
	// reset socket it takes the pending error that endOfStream looks for.
	if len(first) > 0 {
		if _, err := dst.Write(first); err != nil {
			return 0, err
		}
	}
	n, err := io.Copy(dst, src)
	n += int64(len(first))
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
