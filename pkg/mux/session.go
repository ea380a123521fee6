// Package mux carries many client connections as streams over one authenticated link
// connection (design section 5): open with the request and the client's first bytes, answer
// ok or refused, per-stream flow control, half-close and reset, link-level control messages
// and heartbeats that never wait behind stream data.
//
// What it costs per stream is the point (shared/conn-rate-notes.md): one writer goroutine per
// link connection sends everything queued since its last write in one writev, so a stream
// costs a fraction of a write syscall instead of one per frame; no timer or goroutine exists
// per stream (answer timeouts and liveness are swept by the session's one ticker); a stream
// holds receive buffers only while bytes wait in them.
package mux

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skfwd/skfwd/pkg/tunnel"
)

// Errors callers branch on.
var (
	// ErrLinkLost: the link connection under the stream failed or was closed.
	ErrLinkLost = errors.New("link connection lost")
	// ErrReset: the far end reset the stream.
	ErrReset = errors.New("stream reset by peer")
	// ErrRefused: the far end refused the open; Stream.Answer has the reason.
	ErrRefused = errors.New("stream refused")
	// ErrAnswerTimeout: no answer came within Options.AnswerTimeout.
	ErrAnswerTimeout = errors.New("no answer in time")
	// ErrTooManyStreams: the session already carries Options.MaxStreams streams.
	ErrTooManyStreams = errors.New("too many streams on the link connection")
	// ErrSilent: nothing arrived from the peer for Options.DeadTime.
	ErrSilent = errors.New("peer silent")
	// ErrClosed: the stream was closed or reset here.
	ErrClosed = errors.New("stream closed")
	// ErrMoved: the direction continues on a tunnel (see Stream.SendMove): reads return it
	// after the last byte sent before the peer's move, writes after this side's.
	ErrMoved = errors.New("stream moved to a tunnel")
)

// Options configure a Session. Zero values take the defaults.
type Options struct {
	// Dialer is true at the end that dialed the link connection: it numbers its streams odd,
	// the other end even, so both can open streams without agreeing first.
	Dialer bool
	// Window is the receive window of each stream: a stream never holds more unread bytes
	// than this, and its sender stalls (that stream only) until the reader catches up.
	Window int
	// FrameSize bounds a data frame's payload, and so how long a bulk stream can delay
	// another stream's frame on the wire.
	FrameSize int
	// MaxStreams bounds the streams open at once on this session.
	MaxStreams int
	// HeartbeatInterval is the ping period; DeadTime how long the peer may stay silent (no
	// byte of any frame) before the session fails with ErrSilent.
	HeartbeatInterval time.Duration
	DeadTime          time.Duration
	// AnswerTimeout bounds how long an opened stream waits for its answer.
	AnswerTimeout time.Duration
	// OnOpen serves a stream the peer opened. It runs in its own goroutine and must answer
	// (Accept or Refuse) and eventually close the stream.
	OnOpen func(*Stream)
	// Go runs OnOpen's goroutine (a worker pool's); nil: a new goroutine each time.
	Go func(func())
	// OnLink receives a link-level control message; it runs on the session's reader and must
	// not block or keep msg (the bytes are reused).
	OnLink func(msg []byte)
	// OnHeartbeatMiss hears of a heartbeat interval that brought nothing from the peer.
	OnHeartbeatMiss func()
}

// Defaults.
const (
	DefaultWindow     = 256 << 10
	DefaultFrameSize  = 16 << 10
	DefaultMaxStreams = 1 << 16
)

func (o *Options) setDefaults() {
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.FrameSize <= 0 {
		o.FrameSize = DefaultFrameSize
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 250 * time.Millisecond
	}
	if o.DeadTime <= 0 {
		o.DeadTime = time.Second
	}
	if o.AnswerTimeout <= 0 {
		o.AnswerTimeout = 5 * time.Second
	}
}

// readBufferSize must hold the largest frame the reader peeks in place (data and open
// frames; larger control messages are read into their own buffer).
const readBufferSize = 64 << 10

// Session is one link connection carrying streams.
type Session struct {
	conn net.Conn
	opts Options

	peerWindow int // initial credit of each stream toward the peer

	w writer

	smu     sync.Mutex
	streams map[uint32]*Stream
	nextID  uint32
	err     error // set once, when the session ends
	done    chan struct{}

	lastRead atomic.Int64 // when a read last brought bytes: the peer's proof of life
	rtt      atomic.Int64
	started  time.Time
	closeOne sync.Once
	wg       sync.WaitGroup
}

// New runs a session over conn, which is already authenticated: it exchanges prefaces and
// starts the session's reader, writer and ticker. On error conn is closed.
func New(conn net.Conn, o Options) (*Session, error) {
	o.setDefaults()
	if o.FrameSize+tunnel.FrameHeaderLen > readBufferSize {
		conn.Close()
		return nil, fmt.Errorf("frame size %d exceeds %d", o.FrameSize, readBufferSize-tunnel.FrameHeaderLen)
	}
	s := &Session{
		conn:    conn,
		opts:    o,
		streams: map[uint32]*Stream{},
		done:    make(chan struct{}),
		started: time.Now(),
	}
	s.nextID = 2
	if o.Dialer {
		s.nextID = 1
	}
	s.w.init(s)
	s.lastRead.Store(time.Now().UnixNano())
	br := bufio.NewReaderSize(heardReader{conn, &s.lastRead}, readBufferSize)
	if err := s.exchangePrefaces(br); err != nil {
		conn.Close()
		return nil, err
	}
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.w.loop() }()
	go func() { defer s.wg.Done(); s.readLoop(br) }()
	go func() { defer s.wg.Done(); s.tickLoop() }()
	return s, nil
}

func (s *Session) exchangePrefaces(br *bufio.Reader) error {
	deadline := time.Now().Add(s.opts.DeadTime + 5*time.Second)
	_ = s.conn.SetDeadline(deadline)
	defer s.conn.SetDeadline(time.Time{})
	if _, err := s.conn.Write(tunnel.AppendPreface(nil, uint32(s.opts.Window))); err != nil {
		return fmt.Errorf("write link preface: %w", err)
	}
	p := make([]byte, tunnel.PrefaceLen)
	if _, err := io.ReadFull(br, p); err != nil {
		return fmt.Errorf("read link preface: %w", err)
	}
	w, err := tunnel.ParsePreface(p)
	if err != nil {
		return err
	}
	s.peerWindow = int(w)
	return nil
}

// heardReader notes when a read last brought bytes: any byte proves the peer alive, so a
// saturated link never looks silent and heartbeats need not overtake data to count.
type heardReader struct {
	r    io.Reader
	last *atomic.Int64 // unix nanoseconds
}

func (c heardReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err says why the session ended; nil while it runs.
func (s *Session) Err() error {
	s.smu.Lock()
	defer s.smu.Unlock()
	return s.err
}

// RTT is the last heartbeat round trip.
func (s *Session) RTT() time.Duration { return time.Duration(s.rtt.Load()) }

// NumStreams is how many streams are open.
func (s *Session) NumStreams() int {
	s.smu.Lock()
	defer s.smu.Unlock()
	return len(s.streams)
}

// Close ends the session with cause (nil: a plain close): the connection is closed and every
// open stream fails with ErrLinkLost. It waits for the session's goroutines, OnOpen handlers
// included; a handler must not call it.
func (s *Session) Close(cause error) {
	s.fail(cause)
	s.wg.Wait()
}

func (s *Session) fail(cause error) {
	s.closeOne.Do(func() {
		if cause == nil {
			cause = net.ErrClosed
		}
		s.smu.Lock()
		s.err = cause
		streams := s.streams
		s.streams = map[uint32]*Stream{}
		s.smu.Unlock()
		s.conn.Close()
		s.w.close()
		lost := fmt.Errorf("%w: %w", ErrLinkLost, cause)
		for _, st := range streams {
			st.endLocal(lost, false)
		}
		close(s.done)
	})
}

// SendLink queues a link-level control message ahead of stream data.
func (s *Session) SendLink(msg []byte) error {
	if len(msg) > tunnel.MaxPayload {
		return fmt.Errorf("link message of %d bytes: %w", len(msg), tunnel.ErrTooLarge)
	}
	return s.w.urgent(func(b []byte) []byte {
		b = tunnel.AppendFrameHeader(b, tunnel.FrameHeader{Type: tunnel.FrameLink, Length: uint32(len(msg))})
		return append(b, msg...)
	})
}

// Open opens a stream carrying req and the client's first bytes: one frame's worth travels
// in the open itself, the rest in data frames right behind it. The answer comes later
// (Answer); more bytes may be written before it.
func (s *Session) Open(req tunnel.Request, first []byte) (*Stream, error) {
	inOpen := first[:min(len(first), s.opts.FrameSize, s.peerWindow)]
	rest := first[len(inOpen):]
	st := newStream(s, 0, true)
	st.openedAt = time.Now() // before the stream is shared: the answer sweeper reads it
	s.smu.Lock()
	if s.err != nil {
		err := s.err
		s.smu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrLinkLost, err)
	}
	if len(s.streams) >= s.opts.MaxStreams {
		s.smu.Unlock()
		return nil, ErrTooManyStreams
	}
	id := s.allocIDLocked()
	st.id = id
	s.streams[id] = st
	s.smu.Unlock()
	err := s.w.queue(st, func(b []byte) ([]byte, error) {
		return tunnel.AppendOpen(b, id, req, inOpen)
	}, len(inOpen))
	if err == nil && len(rest) > 0 {
		_, err = st.Write(rest)
	}
	if err != nil {
		st.endLocal(err, true)
		return nil, err
	}
	return st, nil
}

// allocIDLocked returns the next free stream id of this side's parity; ids wrap after 2^31
// opens (keeping their parity), skipping 0 and any still in use.
func (s *Session) allocIDLocked() uint32 {
	for {
		id := s.nextID
		s.nextID += 2
		if _, used := s.streams[id]; !used && id != 0 {
			return id
		}
	}
}

func (s *Session) stream(id uint32) *Stream {
	s.smu.Lock()
	defer s.smu.Unlock()
	return s.streams[id]
}

func (s *Session) remove(st *Stream) {
	s.smu.Lock()
	if s.streams[st.id] == st {
		delete(s.streams, st.id)
	}
	s.smu.Unlock()
}

func (s *Session) readLoop(br *bufio.Reader) {
	err := s.readFrames(br)
	s.fail(err)
}

// readFrames dispatches frames until the connection fails. A malformed frame ends this link
// connection only.
func (s *Session) readFrames(br *bufio.Reader) error {
	var big []byte
	for {
		hb, err := br.Peek(tunnel.FrameHeaderLen)
		if err != nil {
			return readErr(err)
		}
		h, err := tunnel.ParseFrameHeader(hb)
		if err != nil {
			return err
		}
		_, _ = br.Discard(tunnel.FrameHeaderLen)
		n := int(h.Length)
		inPlace := n <= br.Size() // read in the buffer; larger link messages get their own
		var p []byte
		if inPlace {
			if p, err = br.Peek(n); err != nil {
				return readErr(err)
			}
		} else {
			if cap(big) < n {
				big = make([]byte, n)
			}
			p = big[:n]
			if _, err := io.ReadFull(br, p); err != nil {
				return readErr(err)
			}
		}
		if err := s.handle(h, p); err != nil {
			return err
		}
		if inPlace {
			_, _ = br.Discard(n)
		}
	}
}

func readErr(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("peer closed the link connection: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// handle acts on one frame; p is valid only during the call.
func (s *Session) handle(h tunnel.FrameHeader, p []byte) error {
	switch h.Type {
	case tunnel.FramePing:
		if h.Flags&tunnel.FlagAck != 0 {
			sent := time.Duration(int64(binary.BigEndian.Uint64(p)))
			s.rtt.Store(int64(time.Since(s.started) - sent))
			return nil
		}
		var echo [8]byte
		copy(echo[:], p)
		return s.w.urgent(func(b []byte) []byte {
			b = tunnel.AppendFrameHeader(b, tunnel.FrameHeader{Type: tunnel.FramePing, Flags: tunnel.FlagAck, Length: 8})
			return append(b, echo[:]...)
		})
	case tunnel.FrameLink:
		if s.opts.OnLink != nil {
			s.opts.OnLink(p)
		}
		return nil
	case tunnel.FrameOpen:
		return s.handleOpen(h, p)
	}
	st := s.stream(h.Stream)
	if st == nil {
		// A frame for a stream that has ended here (a reset crossing data, a late window):
		// normal, and harmless to drop.
		return nil
	}
	switch h.Type {
	case tunnel.FrameData:
		return st.receive(p, h.Flags&tunnel.FlagFIN != 0)
	case tunnel.FrameWindow:
		credit, err := tunnel.ParseWindow(p)
		if err != nil {
			return err
		}
		s.w.grant(st, int(credit))
	case tunnel.FrameAnswer:
		a, err := tunnel.ParseAnswerFrame(p)
		if err != nil {
			return err
		}
		if !st.opener {
			return fmt.Errorf("answer on stream %d opened by the peer: %w", h.Stream, tunnel.ErrMalformed)
		}
		st.answered(a)
	case tunnel.FrameReset:
		st.peerReset(string(p))
	case tunnel.FrameMove:
		offset, token, err := tunnel.ParseMove(p)
		if err != nil {
			return err
		}
		return st.moveReceived(offset, token)
	}
	return nil
}

func (s *Session) handleOpen(h tunnel.FrameHeader, p []byte) error {
	if (h.Stream%2 == 1) != !s.opts.Dialer {
		return fmt.Errorf("open of stream %d, which is this side's to number: %w", h.Stream, tunnel.ErrMalformed)
	}
	req, first, err := tunnel.ParseOpen(p)
	if err != nil {
		return err
	}
	st := newStream(s, h.Stream, false)
	st.req = req
	s.smu.Lock()
	if s.err != nil {
		s.smu.Unlock()
		return nil
	}
	if _, dup := s.streams[h.Stream]; dup {
		s.smu.Unlock()
		return fmt.Errorf("open of stream %d, which is open: %w", h.Stream, tunnel.ErrMalformed)
	}
	full := len(s.streams) >= s.opts.MaxStreams
	if !full {
		s.streams[h.Stream] = st
	}
	s.smu.Unlock()
	if full {
		return s.w.urgent(func(b []byte) []byte {
			return tunnel.AppendAnswerFrame(b, h.Stream, tunnel.Answer{Status: tunnel.StatusRefused, Reason: tunnel.ReasonNoTunnel, Message: "too many streams on the link connection"})
		})
	}
	if err := st.receive(first, false); err != nil {
		return err
	}
	if s.opts.OnOpen == nil {
		st.Refuse(tunnel.ReasonNoConnector, "this end serves no streams")
		return nil
	}
	// Counted with the session's own goroutines, so Close returns only once every stream's
	// handler has (they end quickly then: their streams have failed).
	s.wg.Add(1)
	serve := func() {
		defer s.wg.Done()
		s.opts.OnOpen(st)
	}
	if s.opts.Go != nil {
		s.opts.Go(serve)
	} else {
		go serve()
	}
	return nil
}

// tickLoop is the session's only timer: heartbeats, liveness, a writer stuck on a peer that
// does not read, and answer timeouts. It wakes at each heartbeat and at the moment the peer
// would have been silent for the dead time, so a silent peer is declared dead on time.
func (s *Session) tickLoop() {
	interval, dead := s.opts.HeartbeatInterval, s.opts.DeadTime
	nextPing := time.Now().Add(interval)
	missCheck := s.lastRead.Load()
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		now := time.Now()
		heard := time.Unix(0, s.lastRead.Load())
		if now.Sub(heard) >= dead {
			s.fail(fmt.Errorf("%w for %v", ErrSilent, dead))
			return
		}
		if stuck := s.w.stuckSince(); !stuck.IsZero() && now.Sub(stuck) >= dead {
			s.fail(fmt.Errorf("write blocked for %v: peer not reading", dead))
			return
		}
		if !now.Before(nextPing) {
			if last := s.lastRead.Load(); last == missCheck && s.opts.OnHeartbeatMiss != nil {
				s.opts.OnHeartbeatMiss() // a whole interval brought nothing
			} else {
				missCheck = last
			}
			s.expireAnswers(now)
			if err := s.ping(now); err != nil {
				return
			}
			nextPing = now.Add(interval)
		}
		wake := min(nextPing.Sub(now), heard.Add(dead).Sub(now))
		t.Reset(max(wake, time.Millisecond))
	}
}

func (s *Session) ping(now time.Time) error {
	sent := uint64(now.Sub(s.started))
	return s.w.urgent(func(b []byte) []byte {
		b = tunnel.AppendFrameHeader(b, tunnel.FrameHeader{Type: tunnel.FramePing, Length: 8})
		return binary.BigEndian.AppendUint64(b, sent)
	})
}

// expireAnswers fails the streams whose answer is overdue. It runs once per heartbeat
// interval, so an answer timeout is honoured to within one interval.
func (s *Session) expireAnswers(now time.Time) {
	var late []*Stream
	s.smu.Lock()
	for _, st := range s.streams {
		if st.opener && st.awaitingAnswer() && now.Sub(st.openedAt) >= s.opts.AnswerTimeout {
			late = append(late, st)
		}
	}
	s.smu.Unlock()
	for _, st := range late {
		st.endLocal(fmt.Errorf("%w (%v)", ErrAnswerTimeout, s.opts.AnswerTimeout), true)
	}
}
