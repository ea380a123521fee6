package mux

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/skfwd/skfwd/pkg/tunnel"
)

// writer sends a session's frames. Frames are appended to two queues under one mutex: the
// urgent one (pings, link messages, answers, windows, resets) goes first in every write, so
// none of them waits behind stream data in this process; the data queue holds at most one
// frame per stream, so the streams with data share the wire round robin and a small message
// waits for at most one frame of each bulk stream. One writev sends both queues; a stream
// whose frame is in the queue waits for that write before queueing its next one.
//
// Who writes: a stream's own goroutine, when it queues a frame and no write is in progress,
// tries the write itself, once and without blocking (a waiting writer goroutine would cost a
// wake-up and a switch per frame, which at low load is most of a frame's cost); whatever the
// socket does not take, and everything queued while a write is in progress, is sent by the
// session's writer goroutine, which may block.
type writer struct {
	s     *Session
	mu    sync.Mutex
	wake  sync.Cond // the writer waits for frames
	taken sync.Cond // streams wait for their queued frame to be taken, or for credit

	urg, data []byte
	batch     uint64 // number of the batch being filled; a stream's queuedIn names one
	closed    bool

	busy   bool   // a write holds the spare buffers and rest
	rest   []byte // the tail of a write the socket did not take: sent before anything else
	spareU []byte // the buffers the queues swap with, owned by whoever is busy
	spareD []byte
	raw    syscall.RawConn // nil: no write from the streams' goroutines
	// writeOnce's system call and its results, used by whoever is busy.
	iov          [2]unix.Iovec
	iovN         int
	wrote        int
	wrErr        error
	writev       func(fd uintptr) bool
	writingSince atomic.Int64 // unix nanoseconds at which the write in progress began; 0: none
}

func (w *writer) init(s *Session) {
	w.s = s
	w.wake.L = &w.mu
	w.taken.L = &w.mu
	w.batch = 1
	if sc, ok := s.conn.(syscall.Conn); ok {
		w.raw, _ = sc.SyscallConn()
	}
	w.writev = w.writevOnce
}

// maxKeep bounds the queue buffers kept between writes, so a burst does not pin memory.
const maxKeep = 1 << 20

// takeLocked takes both queues for a write, leaving the spare buffers in their place.
func (w *writer) takeLocked() (u, d []byte) {
	u, w.urg = w.urg, w.spareU[:0]
	d, w.data = w.data, w.spareD[:0]
	w.spareU, w.spareD = nil, nil
	w.batch++
	w.taken.Broadcast()
	return u, d
}

// giveBackLocked returns the written buffers as the next spares.
func (w *writer) giveBackLocked(u, d []byte) {
	if cap(u) <= maxKeep {
		w.spareU = u[:0]
	}
	if cap(d) <= maxKeep {
		w.spareD = d[:0]
	}
}

func (w *writer) pendingLocked() bool { return len(w.urg) > 0 || len(w.data) > 0 || len(w.rest) > 0 }

func (w *writer) loop() {
	for {
		w.mu.Lock()
		for (w.busy || !w.pendingLocked()) && !w.closed {
			w.wake.Wait()
		}
		if w.closed {
			w.mu.Unlock()
			return
		}
		w.busy = true
		rest := w.rest
		w.rest = nil
		outU, outD := w.takeLocked()
		w.mu.Unlock()

		bufs := net.Buffers{rest, outU, outD}
		w.writingSince.Store(time.Now().UnixNano())
		_, err := bufs.WriteTo(w.s.conn)
		w.writingSince.Store(0)
		if err != nil {
			w.s.fail(fmt.Errorf("write link connection: %w", err))
			return
		}
		w.mu.Lock()
		w.busy = false
		w.giveBackLocked(outU, outD)
		w.mu.Unlock()
	}
}

// flushLocked sends what is queued from the calling goroutine, when nobody is writing: one
// writev(2) that does not wait for the socket. What it leaves, or everything while a write is
// in progress, goes to the writer goroutine. It releases mu during the system call.
func (w *writer) flushLocked() {
	if w.busy || w.closed || w.raw == nil || len(w.rest) > 0 {
		w.wake.Signal()
		return
	}
	w.busy = true
	outU, outD := w.takeLocked()
	w.mu.Unlock()
	n, err := w.writeOnce(outU, outD)
	w.mu.Lock()
	w.busy = false
	if err != nil {
		w.mu.Unlock()
		w.s.fail(fmt.Errorf("write link connection: %w", err))
		w.mu.Lock()
		return
	}
	if left := len(outU) + len(outD) - n; left > 0 {
		// The socket is full: the writer goroutine sends the rest, before anything queued since.
		if n < len(outU) {
			w.rest = append(append(w.rest, outU[n:]...), outD...)
		} else {
			w.rest = append(w.rest, outD[n-len(outU):]...)
		}
	}
	w.giveBackLocked(outU, outD)
	if w.pendingLocked() {
		w.wake.Signal()
	}
}

// writeOnce makes one non-blocking writev of u and d and returns the bytes the socket took
// (0 when it was full).
func (w *writer) writeOnce(u, d []byte) (int, error) {
	w.iovN, w.wrote, w.wrErr = 0, 0, nil
	for _, b := range [...][]byte{u, d} {
		if len(b) > 0 {
			w.iov[w.iovN] = unix.Iovec{Base: &b[0]}
			w.iov[w.iovN].SetLen(len(b))
			w.iovN++
		}
	}
	if w.iovN == 0 {
		return 0, nil
	}
	err := w.raw.Write(w.writev)
	w.iov = [2]unix.Iovec{} // the buffers go back to the queues: keep no pointer into them
	if err == nil {
		err = w.wrErr
	}
	return w.wrote, err
}

// writevOnce is the system call of writeOnce, bound once as w.writev: a closure made per
// write escaped to the heap, an allocation per frame batch.
func (w *writer) writevOnce(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(w.iovN))
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
		case e != 0:
			w.wrErr = e
		default:
			w.wrote = int(r)
		}
		return true // never wait: the writer goroutine does the waiting
	}
}

func (w *writer) stuckSince() time.Time {
	if ns := w.writingSince.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

func (w *writer) close() {
	w.mu.Lock()
	w.closed = true
	w.wake.Broadcast()
	w.taken.Broadcast()
	w.mu.Unlock()
}

// urgent queues a frame written by add ahead of stream data, for the writer goroutine: the
// session's reader and ticker use it, and must not spend their time writing.
func (w *writer) urgent(add func([]byte) []byte) error { return w.urgentBy(add, false) }

// urgentNow is urgent from a stream's goroutine, which may write it at once (flushLocked).
func (w *writer) urgentNow(add func([]byte) []byte) error { return w.urgentBy(add, true) }

func (w *writer) urgentBy(add func([]byte) []byte, now bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrLinkLost
	}
	w.urg = add(w.urg)
	if now {
		w.flushLocked()
	} else {
		w.wake.Signal()
	}
	return nil
}

// queue queues a stream's frame written by add, carrying n bytes of its credit, without
// waiting; the caller has checked the credit (an open's first bytes fit the initial window).
func (w *writer) queue(st *Stream, add func([]byte) ([]byte, error), n int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrLinkLost
	}
	b, err := add(w.data)
	if err != nil {
		return err
	}
	w.data = b
	st.credit -= n
	st.sent += int64(n)
	st.queuedIn = w.batch
	w.flushLocked()
	return nil
}

// write queues p on st as data frames of at most a frame size each, waiting for credit and
// for the stream's previous frame to be taken; with fin the last frame (an empty one when p
// is empty) ends the stream's direction. It returns the bytes queued.
func (w *writer) write(st *Stream, p []byte, fin bool) (int, error) {
	size := w.s.opts.FrameSize
	done := 0
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for st.werr == nil && !w.closed && (st.queuedIn == w.batch || (len(p) > 0 && st.credit <= 0)) {
			w.taken.Wait()
		}
		if st.werr != nil {
			return done, st.werr
		}
		if w.closed {
			return done, ErrLinkLost
		}
		if st.movedOut {
			return done, ErrMoved
		}
		if st.finSent {
			return done, ErrClosed
		}
		n := min(len(p), size, st.credit)
		last := n == len(p)
		var flags uint8
		if last && fin {
			flags = tunnel.FlagFIN
			st.finSent = true
		}
		w.data = tunnel.AppendFrameHeader(w.data, tunnel.FrameHeader{Type: tunnel.FrameData, Flags: flags, Stream: st.id, Length: uint32(n)})
		w.data = append(w.data, p[:n]...)
		st.credit -= n
		st.sent += int64(n)
		st.queuedIn = w.batch
		w.flushLocked()
		done += n
		p = p[n:]
		if last {
			return done, nil
		}
	}
}

// move queues st's move frame behind its data: the direction moves when it is still open,
// else the frame only asks the peer to move its own.
func (w *writer) move(st *Stream, token uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case st.werr != nil:
		return st.werr
	case w.closed:
		return ErrLinkLost
	case st.movedOut:
		return ErrMoved
	}
	w.data = tunnel.AppendMove(w.data, st.id, uint64(st.sent), token)
	st.movedOut = !st.finSent
	w.flushLocked()
	return nil
}

// grant adds credit the peer granted to st.
func (w *writer) grant(st *Stream, credit int) {
	w.mu.Lock()
	st.credit += credit
	w.taken.Broadcast()
	w.mu.Unlock()
}

// failWrites makes st's writes fail with err from now on (the first error sticks) and wakes
// a writer waiting on it. It reports whether the stream's direction was still open.
func (w *writer) failWrites(st *Stream, err error) (wasOpen bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wasOpen = st.werr == nil && !st.finSent && !st.movedOut
	if st.werr == nil {
		st.werr = err
	}
	w.taken.Broadcast()
	return wasOpen
}

// finishedCleanly reports whether st's direction ended with its FIN or move queued.
func (w *writer) finishedCleanly(st *Stream) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return (st.finSent || st.movedOut) && st.werr == nil
}

// writeDone reports whether st's direction has ended (FIN or move queued, or failed).
func (w *writer) writeDone(st *Stream) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return st.finSent || st.movedOut || st.werr != nil
}
