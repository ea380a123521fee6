// Package links owns the connections between sites: link sessions (dialed and accepted),
// their authentication, heartbeats, link-state flooding, the resulting routes, and the pools
// of pre-established tunnel connections that carry client connections across each link.
//
// A link is one authenticated control connection plus tunnels. The dialing side also dials
// every tunnel, in two pools: tunnels it sends its own requests on, and tunnels the accepting
// side sends requests on, so the accepting side never dials back (the dialer may sit behind
// NAT). An idle tunnel is consumed by exactly one client connection and then replaced.
package links

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skfwd/skfwd/pkg/auth"
	"github.com/skfwd/skfwd/pkg/ratelog"
	"github.com/skfwd/skfwd/pkg/routes"
	"github.com/skfwd/skfwd/pkg/tunnel"
)

// Errors callers branch on.
var (
	ErrNoLink   = errors.New("no link up to that site")
	ErrNoTunnel = errors.New("no tunnel available on the link")
)

// Options configure a Manager.
type Options struct {
	Self              string
	HeartbeatInterval time.Duration
	DeadTime          time.Duration // a peer silent this long is declared dead
	MaxBackoff        time.Duration // cap of the reconnect backoff
	PoolSize          int           // idle tunnels each pool starts with
	// PoolShrinkAfter is how long a pool grown by misses must go without one before it is
	// halved back toward PoolSize (0: 30 s).
	PoolShrinkAfter time.Duration
	// LinkConnections is how many link connections a dialed link keeps (the control one
	// included); 0: one per CPU, at least 2. The accepting side takes what the dialer opens.
	LinkConnections int
	// Grant resolves a credential presented by a dialing site to its secret and the cost
	// configured when it was issued.
	Grant func(name string) (secret []byte, cost int, ok bool)
	// OnTunnel serves a tunnel on which the peer has started to send a request. It runs in its
	// own goroutine and must call Tunnel.Done when the tunnel is finished with.
	OnTunnel func(*Tunnel)
	// OnStream serves a stream the peer opened on a link connection. It runs in its own
	// goroutine and must answer the stream and close it.
	OnStream func(*Stream)
	// Go runs OnStream's goroutine (a worker pool's); nil: a new goroutine each time.
	Go func(func())
	// StreamWindow is each stream's receive window (0: the multiplexer's default).
	StreamWindow int
	// AnswerTimeout bounds how long an opened stream waits for its answer.
	AnswerTimeout time.Duration
	// LSAExpiry is how long the link state of a site that routing no longer reaches is kept
	// (0: DefaultLSAExpiry).
	LSAExpiry time.Duration
	// OnChange is called, never concurrently, after routes or link states change.
	OnChange func()
	// Observer hears link events as they happen (metrics); nil: nobody.
	Observer Observer
	Log      *slog.Logger
}

// Observer hears the link events that are counted, not kept: the metrics package implements
// it. Methods are called on hot paths and must not block.
type Observer interface {
	// PoolMiss: a connection found no idle tunnel on link and waited for a new one.
	PoolMiss(link, peer string)
	// HeartbeatMiss: a heartbeat interval passed with nothing from the peer.
	HeartbeatMiss(link, peer string)
	// LinkUp: link to peer came up (its counters start from 0).
	LinkUp(link, peer string)
	// HandshakeRejected: an accepted connection was refused before it carried anything, for
	// one of RejectReasons.
	HandshakeRejected(reason string)
}

type noObserver struct{}

func (noObserver) PoolMiss(string, string)      {}
func (noObserver) HeartbeatMiss(string, string) {}
func (noObserver) LinkUp(string, string)        {}
func (noObserver) HandshakeRejected(string)     {}

// Reasons an accepted connection is rejected (Observer.HandshakeRejected): a fixed list, so
// that whatever a stranger sends, metrics and the log see one of these.
const (
	RejectUnknownCredential = "unknown-credential" // a credential this site never issued (or revoked)
	RejectBadProof          = "bad-proof"          // the right credential name, the wrong secret
	RejectMalformed         = "malformed"          // not skfwd's handshake (a scanner, another protocol, a version skew)
	RejectTimeout           = "timeout"            // the handshake did not finish in time
	RejectClosed            = "closed"             // the connection ended or failed mid-handshake
	RejectOwnSiteName       = "own-site-name"      // the peer presented this site's own name
	RejectNoSession         = "no-session"         // a tunnel or link connection for a link whose session is not up here
)

// RejectReasons lists every reason HandshakeRejected is called with.
var RejectReasons = []string{
	RejectUnknownCredential, RejectBadProof, RejectMalformed, RejectTimeout, RejectClosed, RejectOwnSiteName, RejectNoSession,
}

// DefaultLSAExpiry is how long a departed site's link state is kept. Dropping it changes no
// route (an unreachable site has none), so the time only needs to outlast a flap of the links
// to it, to spare re-flooding; a site that comes back advertises itself afresh anyway.
const DefaultLSAExpiry = time.Minute

// DialSpec is a link this site dials.
type DialSpec struct {
	Name      string
	Cost      int
	Endpoints []string // host:port, tried in order
	Secret    []byte
}

// Manager runs every link of one site.
type Manager struct {
	opts Options
	log  *slog.Logger
	// rejectLog logs rejected connections, at most one line a second per reason: a stranger
	// hammering the link port must not flood the log (the metric counts every one).
	rejectLog *ratelog.Logger
	ctx       context.Context
	wg        sync.WaitGroup

	table   atomic.Pointer[routes.Table]
	changed chan struct{}

	mu       sync.Mutex
	db       *routes.DB
	keys     []string
	seq      uint64
	sessions map[*session]struct{}
	dials    map[string]*dialState

	// byPeer is sessions by peer, cheapest first, rebuilt under mu whenever they change: a
	// stream's open reads it without taking mu, and allocates nothing.
	byPeer atomic.Pointer[map[string][]*session]
}

type dialState struct {
	spec    DialSpec
	peer    string // the site at the other end, once the link has been up
	lastErr string
	since   time.Time
}

// New makes a Manager whose goroutines, once Start is called, end when ctx is done; Wait
// waits for them. Nothing calls back into the caller before Start.
func New(ctx context.Context, opts Options) *Manager {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Observer == nil {
		opts.Observer = noObserver{}
	}
	if opts.PoolShrinkAfter <= 0 {
		opts.PoolShrinkAfter = 30 * time.Second
	}
	if opts.LSAExpiry <= 0 {
		opts.LSAExpiry = DefaultLSAExpiry
	}
	if opts.LinkConnections <= 0 {
		opts.LinkConnections = max(2, runtime.NumCPU())
	}
	m := &Manager{
		opts:      opts,
		log:       opts.Log,
		rejectLog: ratelog.New(opts.Log, time.Second),
		ctx:       ctx,
		changed:   make(chan struct{}, 1),
		db:        routes.NewDB(opts.Self),
		sessions:  map[*session]struct{}{},
		dials:     map[string]*dialState{},
	}
	m.mu.Lock()
	m.originateLocked()
	m.mu.Unlock()
	return m
}

// Start starts delivering OnChange calls and expiring departed sites' link state.
func (m *Manager) Start() {
	m.wg.Add(2)
	go m.notifyLoop()
	go m.expireLoop()
}

// expireLoop drops the link state of sites routing has not reached for LSAExpiry, checking
// four times in that time, so an entry goes at most a quarter late.
func (m *Manager) expireLoop() {
	defer m.wg.Done()
	t := time.NewTicker(m.opts.LSAExpiry / 4)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case now := <-t.C:
			m.mu.Lock()
			gone := m.db.Expire(now, m.opts.LSAExpiry)
			m.mu.Unlock()
			if len(gone) > 0 {
				m.log.Info("link state of departed sites expired", "sites", gone, "unreachable_for", m.opts.LSAExpiry)
			}
		}
	}
}

// LinkState returns the link-state database: the newest LSA of every site known, reachable
// or not (until it expires).
func (m *Manager) LinkState() []routes.LSA {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.db.All()
}

// Wait blocks until every goroutine of the manager has ended (after its context is done).
func (m *Manager) Wait() { m.wg.Wait() }

// Routes returns the current route table.
func (m *Manager) Routes() routes.Table { return *m.table.Load() }

// SetKeys sets the routing keys this site advertises (those with a healthy connector).
func (m *Manager) SetKeys(keys []string) {
	keys = slices.Clone(keys)
	sort.Strings(keys)
	keys = slices.Compact(keys)
	m.mu.Lock()
	defer m.mu.Unlock()
	if slices.Equal(keys, m.keys) {
		return
	}
	m.keys = keys
	m.originateLocked()
}

// OpenTunnel returns an idle tunnel to the neighbor site peer, on the cheapest link up to it.
func (m *Manager) OpenTunnel(ctx context.Context, peer string) (*Tunnel, error) {
	return onCheapest(m, peer, func(s *session) (*Tunnel, error) { return s.take(ctx) })
}

// OpenStream opens a stream carrying req and the client's first bytes to the neighbor site
// peer, on the cheapest link up to it. It costs no connection and no handshake: streams ride
// the link's authenticated connection.
func (m *Manager) OpenStream(peer string, req tunnel.Request, first []byte) (*Stream, error) {
	return onCheapest(m, peer, func(s *session) (*Stream, error) { return s.openStream(req, first) })
}

// onCheapest returns what open gives on the cheapest session to peer that works, or every
// session's error (ErrNoLink when there is none).
func onCheapest[T any](m *Manager, peer string, open func(*session) (T, error)) (T, error) {
	var errs []error
	for _, s := range m.sessionsTo(peer) {
		v, err := open(s)
		if err == nil {
			return v, nil
		}
		errs = append(errs, err)
	}
	var zero T
	if len(errs) == 0 {
		return zero, fmt.Errorf("site %q: %w", peer, ErrNoLink)
	}
	return zero, errors.Join(errs...)
}

// sessionsTo lists the sessions to peer, cheapest first: with two links between the same pair
// of sites the cheaper carries traffic and the other stands by.
func (m *Manager) sessionsTo(peer string) []*session {
	if idx := m.byPeer.Load(); idx != nil {
		return (*idx)[peer]
	}
	return nil
}

// indexLocked rebuilds byPeer from sessions.
func (m *Manager) indexLocked() {
	idx := map[string][]*session{}
	for s := range m.sessions {
		idx[s.peer] = append(idx[s.peer], s)
	}
	for _, ss := range idx {
		slices.SortFunc(ss, func(a, b *session) int {
			if c := cmp.Compare(a.cost, b.cost); c != 0 {
				return c
			}
			return cmp.Compare(a.name, b.name)
		})
	}
	m.byPeer.Store(&idx)
}

// Serve accepts links (control and tunnel connections) on ln until the manager's context ends.
func (m *Manager) Serve(ln net.Listener) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		<-m.ctx.Done()
		ln.Close()
	}()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if m.ctx.Err() == nil {
					m.log.Error("link listener stopped", "address", ln.Addr().String(), "err", err)
				}
				return
			}
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				m.accept(c.(*net.TCPConn))
			}()
		}
	}()
}

const handshakeTimeout = 5 * time.Second

func (m *Manager) accept(c *net.TCPConn) {
	remote := c.RemoteAddr().String()
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	// A peer that connects and says nothing must not hold up a stopping site.
	stopHandshake := context.AfterFunc(m.ctx, func() { c.Close() })
	var grantCost int
	peer, err := auth.Accept(c, m.opts.Self, func(name string) ([]byte, bool) {
		secret, cost, ok := m.opts.Grant(name)
		grantCost = cost
		return secret, ok
	})
	stopHandshake()
	if err != nil {
		if m.ctx.Err() != nil {
			c.Close() // we are stopping: the handshake was cut short by us, not the peer
			return
		}
		// A bad or unauthenticated connection harms nothing else: count it, log it and drop
		// only it.
		m.reject(c, rejectReason(err), "link connection rejected", "remote", remote, "err", err)
		return
	}
	_ = c.SetDeadline(time.Time{})
	if peer.Site == m.opts.Self {
		m.reject(c, RejectOwnSiteName, "link connection from a site with our own name rejected; site names must be unique",
			"remote", remote, "credential", peer.Credential)
		return
	}
	switch peer.Purpose {
	case auth.Control:
		s := m.newSession(peer.Credential, peer.Site, false, c, grantCost)
		m.runSession(s)
	case auth.Streams, auth.TunnelIn, auth.TunnelOut:
		// More connections of a link that is up: they join its session.
		s := m.awaitAcceptedSession(peer.Credential, peer.Site)
		if s == nil {
			if m.ctx.Err() == nil {
				what := "tunnel"
				if peer.Purpose == auth.Streams {
					what = "link connection"
				}
				m.reject(c, RejectNoSession, what+" for a link that is not up here rejected",
					"remote", remote, "link", peer.Credential, "peer", peer.Site)
			} else {
				c.Close()
			}
			return
		}
		switch peer.Purpose {
		case auth.Streams:
			s.serveConn(c)
		case auth.TunnelIn:
			s.addIdle(c)
		default:
			s.awaitRequest(c)
		}
	}
}

// reject closes an accepted connection, counts it under reason and logs msg (rate-limited).
func (m *Manager) reject(c *net.TCPConn, reason, msg string, args ...any) {
	c.Close()
	m.opts.Observer.HandshakeRejected(reason)
	level := m.rejectLog.Warn
	if reason == RejectOwnSiteName {
		level = m.rejectLog.Error // a configuration fault that breaks routing, not a stranger
	}
	level(reason, msg, append(args, "reason", reason)...)
}

// rejectReason classifies why auth.Accept failed into one of RejectReasons.
func rejectReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, auth.ErrUnknownCredential):
		return RejectUnknownCredential
	case errors.Is(err, auth.ErrBadProof):
		return RejectBadProof
	case errors.Is(err, auth.ErrMalformed):
		return RejectMalformed
	case errors.As(err, &ne) && ne.Timeout():
		return RejectTimeout
	}
	return RejectClosed
}

// awaitAcceptedSession finds the session a tunnel belongs to. The dialer starts its pools as
// soon as it has our hello, which can be a moment before we have registered the session
// (we register after reading its hello), so a tunnel may arrive first: wait for the session
// briefly rather than refuse a good tunnel and have it redialed.
func (m *Manager) awaitAcceptedSession(credential, site string) *session {
	deadline := time.Now().Add(handshakeTimeout)
	for {
		if s := m.acceptedSession(credential, site); s != nil {
			return s
		}
		if time.Now().After(deadline) || m.ctx.Err() != nil {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (m *Manager) acceptedSession(credential, site string) *session {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := range m.sessions {
		if !s.dialer && s.name == credential && s.peer == site {
			return s
		}
	}
	return nil
}

// Dial keeps the link spec up until the manager's context ends, reconnecting with capped
// exponential backoff for ever.
func (m *Manager) Dial(spec DialSpec) {
	m.mu.Lock()
	m.dials[spec.Name] = &dialState{spec: spec, since: time.Now()}
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		b := backoff{max: m.opts.MaxBackoff}
		for m.ctx.Err() == nil {
			if m.dialOnce(spec, b.peek()) {
				// The peer was reachable and accepted us: what ended the session says
				// nothing about the next dial, so it starts fast again. Only consecutive
				// failed dials back off.
				b.reset()
			}
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(b.next()):
			}
		}
	}()
}

// dialOnce dials spec and serves the session until it ends. It reports whether the session
// came up (authenticated and hello exchanged); retryIn is only for the log.
func (m *Manager) dialOnce(spec DialSpec, retryIn time.Duration) bool {
	s, err := m.dialSession(spec)
	if err != nil {
		m.setDialError(spec.Name, err)
		m.log.Warn("link down, retrying", "link", spec.Name, "err", err, "retry_in", retryIn)
		return false
	}
	m.setDialError(spec.Name, nil)
	m.mu.Lock()
	m.dials[spec.Name].peer = s.peer
	m.mu.Unlock()
	up := m.runSession(s)
	m.setDialError(spec.Name, errors.New("session ended"))
	return up
}

// firstBackoff is the wait before the first redial after a session, and after the first
// failed dial.
const firstBackoff = 100 * time.Millisecond

// backoff is the capped exponential wait between consecutive failed dials.
type backoff struct {
	max  time.Duration
	wait time.Duration // the next wait; 0: firstBackoff
}

// peek is the wait next will return.
func (b *backoff) peek() time.Duration {
	if b.wait == 0 {
		return min(firstBackoff, b.max)
	}
	return b.wait
}

// next returns the wait before the next dial and doubles the one after it, up to max.
func (b *backoff) next() time.Duration {
	w := b.peek()
	b.wait = min(2*w, b.max)
	return w
}

func (b *backoff) reset() { b.wait = 0 }

func (m *Manager) setDialError(name string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.dials[name]
	d.since = time.Now()
	d.lastErr = ""
	if err != nil {
		d.lastErr = err.Error()
	}
}

func (m *Manager) dialSession(spec DialSpec) (*session, error) {
	var errs []error
	for _, addr := range spec.Endpoints {
		c, peer, err := m.dialAuthenticated(m.ctx, addr, spec.Name, spec.Secret, auth.Control)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s := m.newSession(spec.Name, peer, true, c, spec.Cost)
		s.addr, s.secret = addr, spec.Secret
		return s, nil
	}
	return nil, errors.Join(errs...)
}

func (m *Manager) dialAuthenticated(ctx context.Context, addr, credential string, secret []byte, p auth.Purpose) (*net.TCPConn, string, error) {
	d := net.Dialer{Timeout: handshakeTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, "", err
	}
	c := nc.(*net.TCPConn)
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	stopHandshake := context.AfterFunc(ctx, func() { c.Close() })
	peer, err := auth.Dial(c, m.opts.Self, credential, secret, p)
	stopHandshake()
	if err != nil {
		c.Close()
		if errors.Is(err, auth.ErrUnknownCredential) || errors.Is(err, auth.ErrBadProof) {
			return nil, "", fmt.Errorf("%s: %w (fix: add the Link and Secret printed by `skfwd link generate` on the peer site)", addr, err)
		}
		return nil, "", fmt.Errorf("%s: %w", addr, err)
	}
	if peer == m.opts.Self {
		c.Close()
		return nil, "", fmt.Errorf("%s is this site itself (%q): a link must point at another site", addr, peer)
	}
	_ = c.SetDeadline(time.Time{})
	return c, peer, nil
}

// runSession completes the hello exchange, registers the session, and serves it until it ends.
// It reports whether the session came up (the hello exchange succeeded).
func (m *Manager) runSession(s *session) bool {
	if err := s.handshake(); err != nil {
		m.log.Warn("link hello failed", "link", s.name, "peer", s.peer, "err", err)
		s.conn.Close()
		return false
	}
	// The link connection runs as a multiplexed session before the session is registered, so
	// everything sent from registration on (the flood below) goes straight onto it.
	if err := s.startStreams(); err != nil {
		m.log.Warn("link preface failed", "link", s.name, "peer", s.peer, "err", err)
		return false
	}
	m.mu.Lock()
	if !s.dialer {
		// A dialer that reconnects before we noticed its old session dying replaces it.
		for old := range m.sessions {
			if !old.dialer && old.name == s.name && old.peer == s.peer {
				old.fail(errors.New("replaced by a new connection"))
			}
		}
	}
	m.sessions[s] = struct{}{}
	m.indexLocked()
	m.originateLocked()
	// A new neighbor needs everything we know; after that, flooding keeps it current.
	for _, l := range m.db.All() {
		s.sendLSA(l)
	}
	m.mu.Unlock()
	m.opts.Observer.LinkUp(s.name, s.peer)
	m.log.Info("link up", "link", s.name, "peer", s.peer, "cost", s.cost, "dialer", s.dialer)

	err := s.serve()

	m.mu.Lock()
	delete(m.sessions, s)
	m.indexLocked()
	m.originateLocked()
	m.mu.Unlock()
	// Routes no longer use this link before its tunnels are torn down, so the connections
	// that were waiting on them are retried elsewhere.
	s.teardown()
	m.log.Warn("link down", "link", s.name, "peer", s.peer, "err", err)
	return true
}

// originateLocked issues a new LSA for this site, stores and floods it, and recomputes routes.
func (m *Manager) originateLocked() {
	linksTo := map[string]int{}
	for s := range m.sessions {
		if c, ok := linksTo[s.peer]; !ok || s.cost < c {
			linksTo[s.peer] = s.cost
		}
	}
	// Sequence numbers start from the clock so a restarted site's LSAs replace the ones its
	// peers remember from before the restart.
	m.seq = max(m.seq+1, uint64(time.Now().UnixNano()))
	l := routes.LSA{Origin: m.opts.Self, Seq: m.seq, Links: linksTo, Keys: slices.Clone(m.keys)}
	m.db.Update(l)
	m.floodLocked(l, nil)
	m.recomputeLocked()
}

func (m *Manager) floodLocked(l routes.LSA, except *session) {
	for s := range m.sessions {
		if s != except {
			s.sendLSA(l)
		}
	}
}

func (m *Manager) receiveLSA(from *session, l routes.LSA) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l.Origin == m.opts.Self {
		// Someone remembers an LSA of ours newer than what we hold (we restarted and the
		// clock went back): jump past it so ours wins again.
		if l.Seq >= m.seq {
			m.seq = l.Seq
			m.originateLocked()
		}
		return
	}
	if !m.db.Update(l) {
		return
	}
	m.floodLocked(l, from)
	m.recomputeLocked()
}

func (m *Manager) recomputeLocked() {
	t := m.db.Compute()
	m.table.Store(&t)
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

func (m *Manager) notifyLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.changed:
			if m.opts.OnChange != nil {
				m.opts.OnChange()
			}
		}
	}
}

func sortStatus(out []LinkStatus) {
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Peer < out[j].Peer
	})
}
