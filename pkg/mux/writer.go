package mux

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skfwd/skfwd/pkg/tunnel"
)

// writer is a session's only writer. Frames are appended to two queues under one mutex: the
// urgent one (pings, link messages, answers, windows, resets) goes first in every write, so
// none of them waits behind stream data in this process; the data queue holds at most one
// frame per stream, so the streams with data share the wire round robin and a small message
// waits for at most one frame of each bulk stream. One writev sends both queues; a stream
// whose frame is in the queue waits for that write before queueing its next one.
type writer struct {
	s     *Session
	mu    sync.Mutex
	wake  sync.Cond // the writer waits for frames
	taken sync.Cond // streams wait for their queued frame to be taken, or for credit

	urg, data []byte
	batch     uint64 // number of the batch being filled; a stream's queuedIn names one
	closed    bool

	writingSince atomic.Int64 // unix nanoseconds at which the write in progress began; 0: none
}

func (w *writer) init(s *Session) {
	w.s = s
	w.wake.L = &w.mu
	w.taken.L = &w.mu
	w.batch = 1
}

// maxKeep bounds the queue buffers kept between writes, so a burst does not pin memory.
const maxKeep = 1 << 20

func (w *writer) loop() {
	var outU, outD []byte
	for {
		w.mu.Lock()
		for len(w.urg) == 0 && len(w.data) == 0 && !w.closed {
			w.wake.Wait()
		}
		if w.closed {
			w.mu.Unlock()
			return
		}
		outU, w.urg = w.urg, outU[:0]
		outD, w.data = w.data, outD[:0]
		w.batch++
		w.taken.Broadcast()
		w.mu.Unlock()

		bufs := net.Buffers{outU, outD}
		w.writingSince.Store(time.Now().UnixNano())
		_, err := bufs.WriteTo(w.s.conn)
		w.writingSince.Store(0)
		if err != nil {
			w.s.fail(fmt.Errorf("write link connection: %w", err))
			return
		}
		if cap(outU) > maxKeep {
			outU = nil
		}
		if cap(outD) > maxKeep {
			outD = nil
		}
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

// urgent queues a frame written by add ahead of stream data.
func (w *writer) urgent(add func([]byte) []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrLinkLost
	}
	w.urg = add(w.urg)
	w.wake.Signal()
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
	w.wake.Signal()
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
		w.wake.Signal()
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
	w.wake.Signal()
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
