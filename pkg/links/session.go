package links

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skfwd/skfwd/pkg/auth"
	"github.com/skfwd/skfwd/pkg/mux"
	"github.com/skfwd/skfwd/pkg/routes"
	"github.com/skfwd/skfwd/pkg/tunnel"
)

const (
	maxPool         = 1024 // the idle channel's capacity: tunnel-pool-size's bound
	takeTimeout     = 3 * time.Second
	refillRetryTime = time.Second
)

// session is one live link: its control connection and its tunnels.
type session struct {
	m       *Manager
	name    string // link name; on the accepting side the credential name, which is the same
	peer    string
	dialer  bool
	ownCost int
	cost    int // effective: the higher of both ends' configured costs
	conn    *net.TCPConn
	addr    string // dialer only: the endpoint tunnels are dialed to
	secret  []byte // dialer only
	since   time.Time

	ctx    context.Context
	cancel context.CancelCauseFunc
	// streams is the link connection as a multiplexed session (set by startStreams, before
	// the session is shared): link messages, heartbeats and client streams.
	streams *mux.Session
	// conns are the link's connections carrying streams now, streams first; replaced whole
	// (under mu) when one comes or goes, so opening a stream takes no lock.
	conns atomic.Pointer[[]*mux.Session]
	turn  atomic.Uint32

	idle   chan *net.TCPConn // tunnels this side can send a request on
	refill chan struct{}     // dialer: wake the pool filler
	misses atomic.Uint64
	// lastMiss is when a tunnel was last wanted and none was idle (unix ns): pools grown by
	// misses shrink back once they have been idle for Options.PoolShrinkAfter.
	lastMiss   atomic.Int64
	lastShrink time.Time // fill loop only

	mu        sync.Mutex
	dead      bool
	active    map[*Tunnel]struct{}
	waiting   map[*net.TCPConn]struct{} // tunnels waiting for the peer's request
	attached  map[uint64]chan *Tunnel   // moves: tunnels the peer attached, by token
	outTarget int                       // dialer: idle tunnels to keep for our requests
	inTarget  int                       // dialer: idle tunnels to keep for the peer's requests
	dialing   [2]int                    // dialer: tunnel dials in flight, out and in
}

func (m *Manager) newSession(name, peer string, dialer bool, c *net.TCPConn, cost int) *session {
	ctx, cancel := context.WithCancelCause(m.ctx)
	return &session{
		m: m, name: name, peer: peer, dialer: dialer, ownCost: cost, conn: c, since: time.Now(),
		ctx: ctx, cancel: cancel,
		idle:      make(chan *net.TCPConn, maxPool),
		refill:    make(chan struct{}, 1),
		active:    map[*Tunnel]struct{}{},
		waiting:   map[*net.TCPConn]struct{}{},
		attached:  map[uint64]chan *Tunnel{},
		outTarget: m.opts.PoolSize,
		inTarget:  m.opts.PoolSize,
	}
}

// handshake exchanges hellos: each end tells its configured cost and both take the higher.
func (s *session) handshake() error {
	b, err := encodeMsg(msgHello, helloMsg{Cost: s.ownCost})
	if err != nil {
		return err
	}
	_ = s.conn.SetDeadline(time.Now().Add(handshakeTimeout))
	defer s.conn.SetDeadline(time.Time{})
	if _, err := s.conn.Write(b); err != nil {
		return err
	}
	t, payload, err := readMsg(s.conn)
	if err != nil {
		return err
	}
	var h helloMsg
	if t != msgHello || json.Unmarshal(payload, &h) != nil || h.Cost < 1 {
		return fmt.Errorf("peer sent message type %d instead of a valid hello", t)
	}
	s.cost = max(s.ownCost, h.Cost)
	return nil
}

// startStreams turns the link connection, hellos exchanged, into a multiplexed session: link
// messages, heartbeats and client streams. On error the connection is closed.
func (s *session) startStreams() error {
	o := s.muxOptions()
	o.OnLink = s.handleLink
	ms, err := mux.New(s.conn, o)
	s.streams = ms
	if err == nil {
		s.addConn(ms)
	}
	return err
}

// muxOptions are the options of each of the link's connections as a multiplexed session.
func (s *session) muxOptions() mux.Options {
	var onOpen func(*mux.Stream)
	if s.m.opts.OnStream != nil {
		onOpen = s.serveStream // without one, the multiplexer refuses every stream
	}
	return mux.Options{
		Dialer:            s.dialer,
		Window:            s.m.opts.StreamWindow,
		HeartbeatInterval: s.m.opts.HeartbeatInterval,
		DeadTime:          s.m.opts.DeadTime,
		AnswerTimeout:     s.m.opts.AnswerTimeout,
		OnOpen:            onOpen,
		Go:                s.m.opts.Go,
		OnHeartbeatMiss:   func() { s.m.opts.Observer.HeartbeatMiss(s.name, s.peer) },
	}
}

// serve runs the session until it fails or the manager stops, and returns why it ended.
func (s *session) serve() error {
	var wg sync.WaitGroup
	if s.dialer {
		wg.Add(1)
		go func() { defer wg.Done(); s.fillLoop() }()
		for range s.m.opts.LinkConnections - 1 {
			wg.Add(1)
			go func() { defer wg.Done(); s.keepConn() }()
		}
	}
	if !s.dialer {
		wg.Add(1)
		go func() { defer wg.Done(); s.sweepLoop() }()
	}
	select {
	case <-s.streams.Done():
		s.fail(s.streams.Err())
	case <-s.ctx.Done():
	}
	s.streams.Close(context.Cause(s.ctx))
	wg.Wait()
	return context.Cause(s.ctx)
}

func (s *session) fail(err error) { s.cancel(err) }

// handleLink acts on a link message; msg is valid only during the call.
func (s *session) handleLink(msg []byte) {
	t, payload, err := readMsg(bytes.NewReader(msg))
	if err == nil {
		err = s.handle(t, payload)
	}
	if err != nil {
		s.fail(fmt.Errorf("control message type %d: %w", t, err))
	}
}

func (s *session) handle(t msgType, payload []byte) error {
	switch t {
	case msgLSA:
		var l routes.LSA
		if err := json.Unmarshal(payload, &l); err != nil {
			return err
		}
		s.m.receiveLSA(s, l)
	case msgWant:
		var w wantMsg
		if err := json.Unmarshal(payload, &w); err != nil {
			return err
		}
		if s.dialer {
			s.mu.Lock()
			s.inTarget = s.grown(s.inTarget)
			s.mu.Unlock()
			s.lastMiss.Store(time.Now().UnixNano())
			s.kick()
		}
	default:
		// Unknown types come from a newer peer; ignoring them keeps mixed versions linked.
	}
	return nil
}

// send queues a control message ahead of stream data.
func (s *session) send(b []byte) {
	if err := s.streams.SendLink(b); err != nil {
		s.fail(err)
	}
}

func (s *session) sendLSA(l routes.LSA) {
	b, err := encodeMsg(msgLSA, l)
	if err != nil {
		s.fail(err)
		return
	}
	s.send(b)
}

// openStream opens a stream to the peer carrying req and the client's first bytes.
// The link's connections take new streams in turn; one that has just died is passed over
// (its loss resets only its own streams).
func (s *session) openStream(req tunnel.Request, first []byte) (*Stream, error) {
	conns := *s.conns.Load()
	turn := int(s.turn.Add(1))
	var err error
	for i := range conns {
		var st *mux.Stream
		if st, err = conns[(turn+i)%len(conns)].Open(req, first); err == nil {
			return &Stream{Stream: st, Peer: s.peer, Link: s.name, s: s}, nil
		}
		if !errors.Is(err, mux.ErrLinkLost) {
			break
		}
	}
	return nil, fmt.Errorf("link %q to %q: %w", s.name, s.peer, err)
}

// serveStream hands a stream the peer opened to the gateway.
func (s *session) serveStream(st *mux.Stream) {
	s.m.opts.OnStream(&Stream{Stream: st, Peer: s.peer, Link: s.name, s: s})
}

// Stream is a client connection carried as a stream on a link.
type Stream struct {
	*mux.Stream
	Peer string // the neighbor site at the other end
	Link string
	s    *session
}

// teardown runs once the session is out of the routes: every tunnel on it is closed, and the
// ones carrying client connections are reset so nothing is left hanging.
func (s *session) teardown() {
	s.mu.Lock()
	s.dead = true
	active, waiting := s.active, s.waiting
	s.active, s.waiting = nil, nil
	s.mu.Unlock()
	for t := range active {
		abort(t.Conn)
	}
	for c := range waiting {
		c.Close()
	}
	for {
		select {
		case c := <-s.idle:
			c.Close()
		default:
			return
		}
	}
}

// Tunnel is one tunnel connection carrying (or about to carry) one client connection.
type Tunnel struct {
	Conn  *net.TCPConn
	Peer  string // the neighbor site at the other end
	Link  string
	Token uint64 // a moved stream's: set by Stream.TakeTunnel
	s     *session
}

// Context ends when the link under the tunnel dies (or the site stops): a connection spliced
// over it must then be reset, whichever data path carries it.
func (t *Tunnel) Context() context.Context { return t.s.ctx }

// Done tells the link the tunnel is finished with (the caller has closed Conn).
func (t *Tunnel) Done() {
	t.s.mu.Lock()
	delete(t.s.active, t)
	t.s.mu.Unlock()
}

func (s *session) track(c *net.TCPConn) (*Tunnel, error) {
	t := &Tunnel{Conn: c, Peer: s.peer, Link: s.name, s: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		c.Close()
		return nil, fmt.Errorf("link %q to %q: %w", s.name, s.peer, ErrNoLink)
	}
	s.active[t] = struct{}{}
	return t, nil
}

// take returns an idle tunnel for a new request, or makes one.
func (s *session) take(ctx context.Context) (*Tunnel, error) {
	if c := s.popIdle(); c != nil {
		return s.track(c)
	}
	s.miss()
	if s.dialer {
		c, _, err := s.m.dialAuthenticated(ctx, s.addr, s.name, s.secret, auth.TunnelOut)
		if err != nil {
			return nil, fmt.Errorf("link %q: dial tunnel: %w", s.name, err)
		}
		return s.track(c)
	}
	// Only the dialing side dials: miss asked it for more; wait for one to arrive.
	timer := time.NewTimer(takeTimeout)
	defer timer.Stop()
	for {
		select {
		case c := <-s.idle:
			if !idleAlive(c) {
				c.Close()
				continue
			}
			return s.track(c)
		case <-timer.C:
			return nil, fmt.Errorf("link %q to %q: %w", s.name, s.peer, ErrNoTunnel)
		case <-s.ctx.Done():
			return nil, fmt.Errorf("link %q to %q: %w", s.name, s.peer, ErrNoLink)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// popIdle takes a live idle tunnel off the pool (and has the filler replace it), or returns
// nil when none is left.
func (s *session) popIdle() *net.TCPConn {
	for {
		select {
		case c := <-s.idle:
			s.kick()
			if idleAlive(c) {
				return c
			}
			c.Close()
		default:
			return nil
		}
	}
}

func (s *session) addIdle(c *net.TCPConn) {
	s.mu.Lock()
	dead := s.dead
	s.mu.Unlock()
	if dead {
		c.Close()
		return
	}
	select {
	case s.idle <- c:
	default:
		c.Close()
	}
}

// awaitRequest waits until the peer starts a request on c, then hands c to OnTunnel.
func (s *session) awaitRequest(c *net.TCPConn) {
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.waiting[c] = struct{}{}
	s.mu.Unlock()
	s.m.wg.Add(1)
	go func() {
		defer s.m.wg.Done()
		ok := waitReadable(c)
		s.mu.Lock()
		delete(s.waiting, c)
		s.mu.Unlock()
		s.kick()
		if !ok {
			c.Close()
			return
		}
		t, err := s.track(c)
		if err != nil {
			return
		}
		s.m.opts.OnTunnel(t)
	}()
}

func (s *session) kick() {
	select {
	case s.refill <- struct{}{}:
	default:
	}
}

// fillLoop (dialing side only) keeps both pools at their targets.
func (s *session) fillLoop() {
	retry := time.NewTicker(min(refillRetryTime, s.m.opts.PoolShrinkAfter/2))
	defer retry.Stop()
	for {
		s.fill()
		select {
		case <-s.ctx.Done():
			return
		case <-s.refill:
		case <-retry.C:
		}
	}
}

const (
	poolOut = 0
	poolIn  = 1
)

func (s *session) fill() {
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		return
	}
	s.shrinkLocked()
	needOut := s.outTarget - len(s.idle) - s.dialing[poolOut]
	needIn := s.inTarget - len(s.waiting) - s.dialing[poolIn]
	needOut, needIn = max(needOut, 0), max(needIn, 0)
	s.dialing[poolOut] += needOut
	s.dialing[poolIn] += needIn
	s.mu.Unlock()
	for range needOut {
		s.dialPooled(poolOut)
	}
	for range needIn {
		s.dialPooled(poolIn)
	}
}

func (s *session) dialPooled(pool int) {
	purpose := auth.TunnelOut
	if pool == poolIn {
		purpose = auth.TunnelIn
	}
	s.m.wg.Add(1)
	go func() {
		defer s.m.wg.Done()
		c, _, err := s.m.dialAuthenticated(s.ctx, s.addr, s.name, s.secret, purpose)
		s.mu.Lock()
		s.dialing[pool]--
		s.mu.Unlock()
		if err != nil {
			if s.ctx.Err() == nil {
				s.m.log.Debug("tunnel dial failed", "link", s.name, "err", err)
			}
			return
		}
		if pool == poolOut {
			s.addIdle(c)
		} else {
			s.awaitRequest(c)
		}
	}()
}

// LinkStatus describes one link for status output.
type LinkStatus struct {
	Name        string        `json:"name"`
	Peer        string        `json:"peer,omitempty"`
	Role        string        `json:"role"` // "dialer" or "acceptor"
	State       string        `json:"state"`
	Cost        int           `json:"cost,omitempty"`
	RTT         time.Duration `json:"rtt,omitempty"`
	Connections int           `json:"connections,omitempty"` // link connections carrying streams
	IdleTunnels int           `json:"idle_tunnels"`
	PeerTunnels int           `json:"peer_tunnels"` // tunnels waiting for the peer's requests
	Active      int           `json:"active_tunnels"`
	Misses      uint64        `json:"pool_misses"`
	Since       time.Time     `json:"since"`
	Error       string        `json:"error,omitempty"`
}

// Status lists every link: the sessions up and the dialed links not up.
func (m *Manager) Status() []LinkStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []LinkStatus
	up := map[string]bool{}
	for s := range m.sessions {
		role := "acceptor"
		if s.dialer {
			role = "dialer"
			up[s.name] = true
		}
		s.mu.Lock()
		out = append(out, LinkStatus{
			Name: s.name, Peer: s.peer, Role: role, State: "up", Cost: s.cost,
			RTT: s.streams.RTT(), Connections: s.numConns(),
			IdleTunnels: len(s.idle), PeerTunnels: len(s.waiting), Active: len(s.active),
			Misses: s.misses.Load(), Since: s.since,
		})
		s.mu.Unlock()
	}
	for name, d := range m.dials {
		if !up[name] {
			out = append(out, LinkStatus{Name: name, Peer: d.peer, Role: "dialer", State: "connecting", Cost: d.spec.Cost, Since: d.since, Error: d.lastErr})
		}
	}
	sortStatus(out)
	return out
}
