package datapath

import (
	"errors"
	"io"
	"net"
	"sync"

	"github.com/skfwd/skfwd/pkg/mux"
	"golang.org/x/sys/unix"
)

// Streams: a client connection carried on a link connection. Bytes cross with read(2) and
// write(2) through pooled buffers, never splice(2) (a pipe costs two system calls per chunk,
// which is most of a small message's cost), and neither direction holds a buffer while idle.

// streamBufSize is one read from a socket onto a stream: a frame's worth.
const streamBufSize = mux.DefaultFrameSize

var streamBufs = sync.Pool{New: func() any { b := make([]byte, streamBufSize); return &b }}

// JoinStream forwards conn <-> st until both directions have ended, propagating half-close and
// reset both ways, and closes both before it returns. AToB counts conn's bytes onto the
// stream, BToA the stream's bytes onto conn. A failure of the link connection under st
// resets conn.
//
// With a Mover the connection may move onto a tunnel (see Mover); nil keeps it on st.
func JoinStream(conn *net.TCPConn, st *mux.Stream, m *Mover) Result {
	if m != nil {
		return joinMovable(conn, st, m)
	}
	return joinDirections(
		func() (int64, error) { return socketToStream(conn, st, nil) },
		func() (int64, error) { return streamTo(st, conn) },
		func() { st.Reset(); Abort(conn) },
		func() { conn.Close(); st.Close() })
}

// joinDirections runs ab in a goroutine and ba here until both have returned. The first
// failure aborts both ends (which also releases the other direction, blocked on its end);
// when both end cleanly, both ends are closed.
func joinDirections(ab, ba func() (int64, error), abort, closeBoth func()) Result {
	var (
		res  Result
		once sync.Once
		wg   sync.WaitGroup
	)
	fail := func(err error) {
		once.Do(func() {
			res.Err = err
			abort()
		})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, err := ab()
		res.AToB = n
		if err != nil {
			fail(err)
		}
	}()
	n, err := ba()
	res.BToA = n
	if err != nil {
		fail(err)
	}
	wg.Wait()
	once.Do(closeBoth)
	return res
}

// halfCloser is a socket or a stream: what a direction writes into and half-closes.
type halfCloser interface {
	io.Writer
	CloseWrite() error
}

// streamTo writes st's bytes to w until st's end, which it passes on as w's half-close.
func streamTo(st *mux.Stream, w halfCloser) (int64, error) {
	n, err := st.WriteTo(w)
	if err == nil {
		err = w.CloseWrite()
	}
	return n, err
}

// socketToStream copies conn onto st until conn's end of stream, which it passes on as the
// stream's half-close. It waits for conn to be readable before taking a buffer, so an idle
// connection holds none. With mv, it stops at a byte boundary when a move is due and sends
// the move instead (mux.ErrMoved).
func socketToStream(conn *net.TCPConn, st *mux.Stream, mv *mover) (int64, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	for {
		if mv != nil && mv.want.Load() {
			return total, mv.sendMove()
		}
		bp := streamBufs.Get().(*[]byte)
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, rerr = unix.Read(int(fd), *bp)
				if !errors.Is(rerr, unix.EINTR) {
					return !errors.Is(rerr, unix.EAGAIN)
				}
			}
		})
		if err == nil {
			err = rerr
		}
		n = max(n, 0) // -1 with an error
		if n > 0 {
			_, werr := st.Write((*bp)[:n])
			streamBufs.Put(bp)
			if werr != nil {
				return total, werr
			}
			total += int64(n)
			if mv != nil {
				mv.count(n)
			}
			continue
		}
		streamBufs.Put(bp)
		switch {
		case mv.interrupted(err):
			continue
		case err != nil:
			return total, err
		case mv != nil:
			return total, mv.endOfStream()
		}
		return total, st.CloseWrite() // n == 0: end of stream
	}
}

// RelayStreams joins two streams at a transit site: every byte, half-close and reset of one
// reaches the other. AToB counts a's bytes onto b.
func RelayStreams(a, b *mux.Stream) Result {
	return joinDirections(
		func() (int64, error) { return streamTo(a, b) },
		func() (int64, error) { return streamTo(b, a) },
		func() { a.Reset(); b.Reset() },
		func() { a.Close(); b.Close() })
}
