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
	j := newStreamJoin(conn, st, m, nil)
	j.d.start(j.toStream)
	return j.finish()
}

// streamJoin is a connection joined with its stream: conn -> st in a goroutine of its own,
// st -> conn on the caller's.
type streamJoin struct {
	conn *net.TCPConn
	st   *mux.Stream
	mv   *mover  // nil: the connection stays on st
	k    *keeper // nil: the far end took the connection before it was joined
	d    directions

	abMoved, baMoved bool // each set by its own direction, read after both returned
}

func newStreamJoin(conn *net.TCPConn, st *mux.Stream, m *Mover, k *keeper) *streamJoin {
	j := &streamJoin{conn: conn, st: st, k: k}
	j.d.abort = func() { st.Reset(); Abort(conn) }
	if m != nil {
		j.mv = newMover(m, conn, st)
	}
	return j
}

// toStream is the direction conn -> st.
func (j *streamJoin) toStream() (int64, error) {
	n, err := socketToStream(j.conn, j.st, j.mv, j.k)
	switch {
	case errors.Is(err, errAbandoned):
		err = nil // the connection goes on to another stream: not a failure
	case errors.Is(err, mux.ErrMoved):
		j.abMoved, err = true, nil
	}
	return n, err
}

// finish runs st -> conn here until both directions have ended or moved, then the moved
// directions on their tunnel.
func (j *streamJoin) finish() Result {
	if j.mv == nil {
		return j.d.finish(func() (int64, error) { return streamTo(j.st, j.conn) },
			func() { j.conn.Close(); j.st.Close() })
	}
	var w halfCloser = j.conn
	if j.mv.After > 0 {
		w = countingWriter{j.conn, j.mv}
	}
	res := j.d.finish(func() (int64, error) {
		n, err := streamTo(j.st, w)
		if errors.Is(err, mux.ErrMoved) {
			j.baMoved, err = true, nil
		}
		return n, err
	}, func() {})
	return j.mv.afterStream(res, j.abMoved, j.baMoved)
}

// joinDirections runs ab in a goroutine and ba here until both have returned. The first
// failure aborts both ends (which also releases the other direction, blocked on its end);
// when both end cleanly, both ends are closed.
func joinDirections(ab, ba func() (int64, error), abort, closeBoth func()) Result {
	d := &directions{abort: abort}
	d.start(ab)
	return d.finish(ba, closeBoth)
}

// directions is a connection's two directions: one in its own goroutine, started first,
// the other on the caller's.
type directions struct {
	abort func()
	res   Result
	once  sync.Once
	wg    sync.WaitGroup
}

// fail aborts both ends on the first failure, which it keeps as the result's error.
func (d *directions) fail(err error) {
	d.once.Do(func() {
		d.res.Err = err
		d.abort()
	})
}

// start runs ab, the direction that counts as AToB, in a goroutine.
func (d *directions) start(ab func() (int64, error)) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		n, err := ab()
		d.res.AToB = n
		if err != nil {
			d.fail(err)
		}
	}()
}

// finish runs ba here, waits for ab and closes both ends with closeBoth if neither failed.
func (d *directions) finish(ba func() (int64, error), closeBoth func()) Result {
	n, err := ba()
	d.res.BToA = n
	if err != nil {
		d.fail(err)
	}
	d.wg.Wait()
	d.once.Do(closeBoth)
	return d.res
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
// stream's half-close. It holds a buffer only while a read returns bytes, so an idle
// connection holds none. With mv, it stops at a byte boundary when a move is due and sends
// the move instead (mux.ErrMoved). With k, bytes read before the far end commits are kept
// for a replay, and the copy stops (errAbandoned) when the caller abandons the stream.
func socketToStream(conn *net.TCPConn, st *mux.Stream, mv *mover, k *keeper) (int64, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		total int64
		bp    *[]byte
		room  int // bytes this read may take
		n     int
		rerr  error
	)
	read := func(fd uintptr) bool {
		if bp == nil {
			bp = streamBufs.Get().(*[]byte)
		}
		for {
			n, rerr = unix.Read(int(fd), (*bp)[:room])
			if !errors.Is(rerr, unix.EINTR) {
				break
			}
		}
		if errors.Is(rerr, unix.EAGAIN) {
			streamBufs.Put(bp) // not held while waiting
			bp = nil
			return false
		}
		return true
	}
	for {
		if mv != nil && mv.want.Load() {
			return total, mv.sendMove()
		}
		room = streamBufSize
		if k != nil {
			if room, err = k.room(room); err != nil {
				return total, err
			}
		}
		n, rerr = 0, nil // rc.Read may return without reading: at a deadline already past
		err := rc.Read(read)
		if err == nil {
			err = rerr
		}
		n = max(n, 0) // -1 with an error
		if n > 0 {
			p := (*bp)[:n]
			if k != nil {
				k.keep(p)
			}
			_, werr := st.Write(p)
			streamBufs.Put(bp)
			bp = nil
			if werr != nil {
				return total, k.streamFailed(werr)
			}
			total += int64(n)
			if k != nil {
				k.forwarded()
			}
			if mv != nil && k.committed() {
				mv.count(n)
			}
			continue
		}
		if bp != nil {
			streamBufs.Put(bp)
			bp = nil
		}
		switch {
		case k.abandonedRead(err):
			return total, errAbandoned
		case mv.interrupted(err):
			continue
		case err != nil:
			return total, err
		case mv != nil:
			return total, k.streamFailed(mv.endOfStream())
		}
		return total, k.streamFailed(st.CloseWrite()) // n == 0: end of stream
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
