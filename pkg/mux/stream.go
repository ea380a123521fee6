package mux

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/skfwd/skfwd/pkg/tunnel"
)

// Stream is one client connection carried on a session. Read, WriteTo and WaitReadable are
// for one reading goroutine, Write, CopyFrom and CloseWrite for one writing goroutine; Reset
// and Close may be called from anywhere.
type Stream struct {
	s        *Session
	id       uint32
	opener   bool
	req      tunnel.Request // at the accepting end: what the peer asked for
	openedAt time.Time

	// Write side, guarded by s.w.mu.
	credit   int    // bytes the peer will still take
	queuedIn uint64 // the writer batch holding this stream's last frame
	werr     error
	finSent  bool
	movedOut bool // this side's direction continues on a tunnel
	sent     int64

	// Read side, guarded by mu.
	mu       sync.Mutex
	cond     sync.Cond
	chunks   []*[]byte // received bytes not yet read, oldest first; from chunkPool
	off      int       // read offset in chunks[0]
	buffered int
	unacked  int // bytes read since the last window update
	rfin     bool
	rmoved   bool  // the peer's direction continues on a tunnel after the buffered bytes
	received int64 // bytes the peer sent on the stream
	moveSeen bool  // a move frame arrived (moveTok is set)
	moveTok  uint64
	onMove   func(token uint64)
	rerr     error
	state    answerState
	answer   tunnel.Answer
	lending  bool // WriteTo is writing from chunks[0] with the lock released
}

type answerState uint8

const (
	answerPending answerState = iota
	answerOK
	answerRefused
)

func newStream(s *Session, id uint32, opener bool) *Stream {
	st := &Stream{s: s, id: id, opener: opener, credit: s.peerWindow}
	st.cond.L = &st.mu
	if !opener {
		// The peer's open is its own answer: a stream it opened is live at once here.
		st.state = answerOK
	}
	return st
}

// chunkSize is the unit of receive buffering: a frame's payload fits in one chunk or two.
const chunkSize = 16 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}

// Request is what the peer asked for when it opened this stream.
func (st *Stream) Request() tunnel.Request { return st.req }

// receive buffers p (a frame's payload, valid only during the call).
func (st *Stream) receive(p []byte, fin bool) error {
	if err := st.buffer(p, fin); err != nil {
		return err
	}
	if fin {
		st.forgetIfDone()
	}
	return nil
}

func (st *Stream) buffer(p []byte, fin bool) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.rerr != nil {
		return nil // reset or refused here: the peer has not heard yet
	}
	if st.rfin || st.rmoved {
		return fmt.Errorf("data on stream %d after its end or move: %w", st.id, tunnel.ErrMalformed)
	}
	if st.buffered+len(p) > st.s.opts.Window {
		return fmt.Errorf("stream %d sent %d bytes past its window of %d: %w", st.id, st.buffered+len(p)-st.s.opts.Window, st.s.opts.Window, tunnel.ErrMalformed)
	}
	for len(p) > 0 {
		var c *[]byte
		if n := len(st.chunks); n > 0 && len(*st.chunks[n-1]) < chunkSize {
			c = st.chunks[n-1]
		} else {
			c = chunkPool.Get().(*[]byte)
			st.chunks = append(st.chunks, c)
		}
		k := min(len(p), chunkSize-len(*c))
		*c = append(*c, p[:k]...)
		p = p[k:]
		st.buffered += k
		st.received += int64(k)
	}
	st.rfin = fin
	st.cond.Broadcast()
	return nil
}

// forgetIfDone drops the stream from its session once both directions have ended: nothing
// more can arrive for it (bytes already buffered stay readable). It takes the stream's lock
// and then the session's, never both at once (the sweeper takes them the other way round).
func (st *Stream) forgetIfDone() {
	st.mu.Lock()
	readDone := st.rfin || st.rmoved
	st.mu.Unlock()
	if readDone && st.s.w.writeDone(st) {
		st.s.remove(st)
	}
}

// Read reads stream bytes; io.EOF once the peer has ended its direction and everything before
// has been read; ErrReset, ErrRefused or ErrLinkLost (wrapped) when the stream failed.
func (st *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	st.mu.Lock()
	if err := st.waitDataLocked(); err != nil {
		st.mu.Unlock()
		return 0, err
	}
	n := 0
	for n < len(p) && st.buffered > 0 {
		c := *st.chunks[0]
		k := copy(p[n:], c[st.off:])
		n += k
		st.consumeLocked(k)
	}
	grant := st.takeGrantLocked()
	st.mu.Unlock()
	st.sendGrant(grant)
	return n, nil
}

// WriteTo writes the stream's bytes to w straight from the receive buffers until the peer's
// end of stream (nil), its move (ErrMoved, every byte before it written) or a failure of
// either side.
func (st *Stream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		st.mu.Lock()
		if err := st.waitDataLocked(); err != nil {
			st.mu.Unlock()
			if err == io.EOF {
				err = nil
			}
			return total, err
		}
		// The receiver only appends past len of the last chunk, so the bytes in this slice
		// stay put while the lock is released for the write.
		c := *st.chunks[0]
		piece := c[st.off:]
		st.lending = true
		st.mu.Unlock()

		n, err := w.Write(piece)
		total += int64(n)
		st.mu.Lock()
		st.lending = false
		if st.rerr == nil && n > 0 {
			st.consumeLocked(n)
		}
		grant := st.takeGrantLocked()
		st.mu.Unlock()
		st.sendGrant(grant)
		if err != nil {
			return total, err
		}
	}
}

// waitDataLocked waits until bytes are buffered (nil), the peer's direction has ended or
// moved with nothing left (io.EOF or ErrMoved), or the stream failed (its error).
func (st *Stream) waitDataLocked() error {
	for st.buffered == 0 && !st.rfin && !st.rmoved && st.rerr == nil {
		st.cond.Wait()
	}
	if st.rerr != nil {
		return st.rerr
	}
	if st.buffered == 0 {
		if st.rmoved {
			return ErrMoved
		}
		return io.EOF
	}
	return nil
}

// consumeLocked marks k bytes of chunks[0] read, releasing the chunk once it is all read.
func (st *Stream) consumeLocked(k int) {
	st.off += k
	st.buffered -= k
	st.unacked += k
	c := st.chunks[0]
	if st.off == len(*c) && (len(*c) == chunkSize || len(st.chunks) > 1 || st.buffered == 0) {
		*c = (*c)[:0]
		chunkPool.Put(c)
		st.chunks[0] = nil
		st.chunks = st.chunks[1:]
		st.off = 0
		if len(st.chunks) == 0 {
			st.chunks = nil // an idle stream holds no buffer
		}
	}
}

// takeGrantLocked returns the credit to give back to the peer: read bytes are returned in
// batches of half a window, so a stream that stays under that costs no window frame at all.
func (st *Stream) takeGrantLocked() int {
	if st.unacked < st.s.opts.Window/2 || st.rerr != nil || st.rfin || st.rmoved {
		return 0
	}
	g := st.unacked
	st.unacked = 0
	return g
}

func (st *Stream) sendGrant(n int) {
	if n == 0 {
		return
	}
	_ = st.s.w.urgentNow(func(b []byte) []byte { return tunnel.AppendWindow(b, st.id, uint32(n)) })
}

// WaitReadable blocks until the stream has a byte to read, has ended (nil), has failed (the
// error), or until() turns true (nil; call Wake after changing what it reads). It consumes
// nothing.
func (st *Stream) WaitReadable(until func() bool) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	for st.buffered == 0 && !st.rfin && !st.rmoved && st.rerr == nil && !until() {
		st.cond.Wait()
	}
	return st.rerr
}

// Wake wakes a WaitReadable so it checks its until() again.
func (st *Stream) Wake() {
	st.mu.Lock()
	st.cond.Broadcast()
	st.mu.Unlock()
}

// Write queues p on the stream, waiting while the peer's window is full.
func (st *Stream) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return st.s.w.write(st, p, false)
}

// CopyFrom copies r onto the stream until r's end of stream (then the stream's direction is
// ended with CloseWrite) or an error (returned; the direction stays open for the caller to
// reset). buf is the copy buffer.
func (st *Stream) CopyFrom(r io.Reader, buf []byte) (int64, error) {
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := st.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return total, st.CloseWrite()
		}
		if err != nil {
			return total, err
		}
	}
}

// CloseWrite ends this side's direction after the bytes already written (a FIN).
func (st *Stream) CloseWrite() error {
	if _, err := st.s.w.write(st, nil, true); err != nil {
		return err
	}
	st.forgetIfDone()
	return nil
}

// SendMove ends this side's direction on the stream after the bytes already written: they
// continue on the tunnel attached with token, in order, and the peer's reads return ErrMoved
// after the last byte before the move. On a direction that has already ended it asks the peer
// to move its own direction there.
func (st *Stream) SendMove(token uint64) error {
	if err := st.s.w.move(st, token); err != nil {
		return err
	}
	st.forgetIfDone()
	return nil
}

// OnMove sets fn to be called, on the session's reading goroutine, when the peer's move frame
// arrives (at once if it has already): fn must not block. It lets the end that did not start a
// move move its own direction, which its reads alone would not tell it once they have ended.
func (st *Stream) OnMove(fn func(token uint64)) {
	st.mu.Lock()
	st.onMove = fn
	seen, tok := st.moveSeen, st.moveTok
	st.mu.Unlock()
	if seen && fn != nil {
		fn(tok)
	}
}

// MoveToken returns the token of the peer's move, if one arrived.
func (st *Stream) MoveToken() (uint64, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.moveTok, st.moveSeen
}

// moveReceived acts on the peer's move frame: at offset, which must be where its bytes on the
// stream end, its direction continues on the tunnel token names.
func (st *Stream) moveReceived(offset, token uint64) error {
	st.mu.Lock()
	if st.rerr != nil {
		st.mu.Unlock()
		return nil // ended here: the peer has not heard yet
	}
	if st.moveSeen || offset != uint64(st.received) {
		st.mu.Unlock()
		return fmt.Errorf("move of stream %d at offset %d, after %d bytes (moved before: %v): %w", st.id, offset, st.received, st.moveSeen, tunnel.ErrMalformed)
	}
	st.moveSeen, st.moveTok = true, token
	if !st.rfin {
		st.rmoved = true
		st.cond.Broadcast()
	}
	fn := st.onMove
	st.mu.Unlock()
	if fn != nil {
		fn(token)
	}
	st.forgetIfDone()
	return nil
}

// Answer waits for the far end's answer to an open: nil when it accepted; ErrRefused (with
// the answer giving the reason) when it refused; the stream's failure otherwise.
func (st *Stream) Answer() (tunnel.Answer, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for st.state == answerPending && st.rerr == nil {
		st.cond.Wait()
	}
	switch st.state {
	case answerOK:
		return st.answer, nil
	case answerRefused:
		return st.answer, ErrRefused
	}
	return tunnel.Answer{}, st.rerr
}

func (st *Stream) awaitingAnswer() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.state == answerPending && st.rerr == nil
}

func (st *Stream) answered(a tunnel.Answer) {
	st.mu.Lock()
	if st.state != answerPending || st.rerr != nil {
		st.mu.Unlock()
		return
	}
	st.answer = a
	if a.Status == tunnel.StatusOK {
		st.state = answerOK
		st.cond.Broadcast()
		st.mu.Unlock()
		return
	}
	st.state = answerRefused
	st.mu.Unlock()
	// A refusal ends the stream both ways at both ends: nothing more is sent for it.
	st.endLocal(fmt.Errorf("%w: %s %s", ErrRefused, a.Reason, a.Message), false)
}

// Accept answers the peer's open with ok.
func (st *Stream) Accept() error {
	return st.s.w.urgentNow(func(b []byte) []byte {
		return tunnel.AppendAnswerFrame(b, st.id, tunnel.Answer{Status: tunnel.StatusOK})
	})
}

// Refuse answers the peer's open with a refusal and ends the stream.
func (st *Stream) Refuse(reason tunnel.Reason, msg string) {
	_ = st.s.w.urgent(func(b []byte) []byte {
		return tunnel.AppendAnswerFrame(b, st.id, tunnel.Answer{Status: tunnel.StatusRefused, Reason: reason, Message: msg})
	})
	st.endLocal(ErrClosed, false)
}

// Reset aborts the stream both ways; the peer's reads and writes fail with ErrReset.
func (st *Stream) Reset() { st.endLocal(ErrClosed, true) }

// Close releases the stream: a stream whose both directions ended or moved cleanly just
// goes; any other is reset, so the peer never waits on a stream nobody serves.
func (st *Stream) Close() error {
	st.mu.Lock()
	clean := (st.rfin || st.rmoved) && st.rerr == nil && st.buffered == 0
	st.mu.Unlock()
	st.endLocal(ErrClosed, !(clean && st.s.w.finishedCleanly(st)))
	return nil
}

// peerReset: the far end aborted the stream.
func (st *Stream) peerReset(msg string) {
	err := ErrReset
	if msg != "" {
		err = fmt.Errorf("%w: %s", ErrReset, msg)
	}
	st.endLocal(err, false)
}

// endLocal ends the stream here: reads and writes fail with err (unless they already
// failed), buffers go back to the pool, and the session forgets the stream. With tell the
// peer gets a reset, unless both directions had already ended.
func (st *Stream) endLocal(err error, tell bool) {
	st.mu.Lock()
	first := st.rerr == nil
	if first {
		st.rerr = err
	}
	readOpen := !st.rfin && !st.rmoved
	for i, c := range st.chunks {
		if i == 0 && st.lending {
			continue // WriteTo is still writing from it: leave it to the garbage collector
		}
		*c = (*c)[:0]
		chunkPool.Put(c)
	}
	st.chunks, st.off, st.buffered = nil, 0, 0
	st.cond.Broadcast()
	st.mu.Unlock()
	writeOpen := st.s.w.failWrites(st, err)
	st.s.remove(st)
	if tell && first && (readOpen || writeOpen) {
		_ = st.s.w.urgent(func(b []byte) []byte {
			return tunnel.AppendFrameHeader(b, tunnel.FrameHeader{Type: tunnel.FrameReset, Stream: st.id})
		})
	}
}
