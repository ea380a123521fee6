package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/skfwd/skfwd/pkg/datapath"
	"github.com/skfwd/skfwd/pkg/links"
	"github.com/skfwd/skfwd/pkg/metrics"
	"github.com/skfwd/skfwd/pkg/mux"
	"github.com/skfwd/skfwd/pkg/selector"
	"github.com/skfwd/skfwd/pkg/tunnel"
	"golang.org/x/sys/unix"
)

// A new client connection, from accept to splice:
//
//  1. pick the candidate of least score (selector), count it open;
//  2. local connector: connect, then splice. Remote site: take a pre-established tunnel to the
//     next hop, write the request and, right behind it, the client's first bytes (kept, up to
//     first-bytes-limit, until the answer); no round trip is spent before data flows;
//  3. on "refused" or a tunnel that fails before answering, try the next candidate, replaying
//     the kept bytes; the client sees a failure only when no candidate works;
//  4. on "ok", splice client and tunnel until both directions end.

// maxAttempts bounds retries for one client connection.
const maxAttempts = 8

type outcome string

const (
	outcomeOK      outcome = "ok"
	outcomeReset   outcome = "reset"
	outcomeFailed  outcome = "no-candidate-worked"
	outcomeRefused outcome = "refused"
)

func (g *Gateway) serveClient(key string, client *net.TCPConn) {
	start := time.Now()
	g.metrics.Accepted(key)
	flowID := g.flowSeq.Add(1)
	first := &firstBytes{limit: g.settings.FirstBytesLimit}
	tried := map[string]bool{}
	var errs []error
	lastReason := ""
	// What the client sent with its connect travels in the first open.
	ready := datapath.TakeReady(client, &first.buf, first.limit)
	if ready != nil {
		errs = append(errs, fmt.Errorf("%w: %v", errClientGone, ready))
	}
	for attempt := 0; ready == nil && attempt < maxAttempts; attempt++ {
		cand, release, ok := g.pick(key, tried)
		if !ok {
			break
		}
		if lastReason != "" {
			g.metrics.Retried(key, lastReason)
		}
		tried[candidateKey(cand)] = true
		var done bool
		var err error
		if cand.Local {
			done, err = g.toConnector(key, cand.Target, client, first, start, attempt)
		} else {
			done, err = g.toSite(key, flowID, cand.Target, client, first, start, attempt)
		}
		release()
		if done {
			return
		}
		errs = append(errs, err)
		if errors.Is(err, errClientGone) {
			break
		}
		dest := cand.Target
		if cand.Local {
			dest = g.self
		}
		lastReason = reasonOf(err)
		g.metrics.AttemptFailed(key, dest, lastReason)
	}
	datapath.Abort(client)
	g.metrics.Failed(key)
	g.logFlow(start, flowLog{key: key, source: g.self, outcome: outcomeFailed, retries: max(len(errs)-1, 0), err: errors.Join(errs...)})
}

// attemptError is a failed attempt to place a connection on one target, with the reason it is
// counted under.
type attemptError struct {
	reason string
	err    error
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

func failed(reason string, err error) error { return &attemptError{reason: reason, err: err} }

// reasonOf is the metrics reason of a failed attempt.
func reasonOf(err error) string {
	var ae *attemptError
	if errors.As(err, &ae) {
		return ae.reason
	}
	return metrics.ReasonLinkLost
}

// commitFailure classifies an error of the commit wait: the client's own failure stays as it
// is (it is not the target's), anything else is the target failing before any byte.
func commitFailure(err error) error {
	if errors.Is(err, errClientGone) {
		return err
	}
	return failed(metrics.ReasonResetBeforeCommit, err)
}

func candidateKey(c selector.Candidate) string {
	if c.Local {
		return "@" + c.Target
	}
	return c.Target
}

// pick chooses the best candidate not yet tried and counts a connection open to it. Choice and
// count happen under one lock so a burst of connections spreads as the formula says.
func (g *Gateway) pick(key string, tried map[string]bool) (selector.Candidate, func(), bool) {
	g.pickMu.Lock()
	defer g.pickMu.Unlock()
	cands := g.candidates(key, true)
	g.turn++
	for _, c := range selector.Rank(cands, g.turn) {
		if tried[candidateKey(c)] {
			continue
		}
		return c, g.open.Acquire(key, candidateKey(c)), true
	}
	return selector.Candidate{}, nil, false
}

// candidates lists where a connection for key can go now: healthy local connectors and, when
// remote is set, every reachable site advertising key.
func (g *Gateway) candidates(key string, remote bool) []selector.Candidate {
	var out []selector.Candidate
	for _, c := range g.connectors[key] {
		if c.healthy.Load() {
			out = append(out, selector.Candidate{Target: c.cfg.Name, Local: true, Open: g.open.Open(key, c.target())})
		}
	}
	if remote {
		for dest, cost := range g.links.Routes().AdvertiserCosts(key) {
			out = append(out, selector.Candidate{Target: dest, PathCost: cost, Open: g.open.Open(key, dest)})
		}
	}
	return out
}

func (g *Gateway) connectorNamed(key, name string) *connector {
	for _, c := range g.connectors[key] {
		if c.cfg.Name == name {
			return c
		}
	}
	return nil
}

// toConnector forwards the client to a local backend. It reports done once the connection has
// been handled (spliced to its end), or the error that makes the caller try the next candidate.
func (g *Gateway) toConnector(key, name string, client *net.TCPConn, first *firstBytes, start time.Time, retries int) (bool, error) {
	c := g.connectorNamed(key, name)
	backend, err := c.dial(g.settings.ConnectTimeout)
	if err != nil {
		c.setHealthy(false, err)
		reason := metrics.ReasonConnectFailed
		if isTimeout(err) {
			reason = metrics.ReasonConnectTimeout
		}
		return false, failed(reason, fmt.Errorf("connector %q: %w", name, err))
	}
	// Bytes read from the client for an earlier candidate that refused go first.
	if len(first.buf) > 0 {
		if _, err := backend.Write(first.buf); err != nil {
			datapath.Abort(backend)
			return false, failed(metrics.ReasonResetBeforeCommit, fmt.Errorf("connector %q: %w", name, err))
		}
	}
	if err := g.commit(backend, client, first, len(first.buf) > 0); err != nil {
		datapath.Abort(backend)
		return false, commitFailure(fmt.Errorf("connector %q: %w", name, err))
	}
	g.metrics.Committed(key, g.self, time.Since(start))
	res := g.path.Splice(g.ctx, client, backend)
	g.endFlow(start, flowLog{key: key, source: g.self, dest: g.self, target: name, retries: retries}, res, int64(len(first.buf)))
	return true, nil
}

var errClientGone = errors.New("client connection failed")

// toSite forwards the client to a remote site as a stream on the link to the next hop: no
// connection and no handshake are spent, and the client's first bytes travel in the open.
func (g *Gateway) toSite(key string, flowID uint64, site string, client *net.TCPConn, first *firstBytes, start time.Time, retries int) (bool, error) {
	nextHop, ok := g.links.Routes().NextHop(site)
	if !ok {
		return false, failed(metrics.ReasonNoRoute, fmt.Errorf("site %q: no route", site))
	}
	req := tunnel.Request{FlowID: flowID, RoutingKey: key, DestSite: site, SourceSite: g.self}
	st, err := g.links.OpenStream(nextHop, req, first.buf)
	if err != nil {
		if errors.Is(err, links.ErrNoLink) || errors.Is(err, mux.ErrLinkLost) {
			return false, failed(metrics.ReasonLinkDown, err)
		}
		return false, failed(metrics.ReasonNoTunnel, err)
	}
	replayed := first.buf
	var mv *datapath.Mover
	if nextHop == site {
		mv = g.startsMoves(st)
	}
	op := datapath.Open(client, st.Stream, &first.buf, first.limit, mv)
	if err := g.awaitCommit(st, op, len(replayed) > 0); err != nil {
		return false, fmt.Errorf("site %q: %w", site, err)
	}
	g.metrics.Committed(key, site, time.Since(start))
	res := op.Commit()
	g.endFlow(start, flowLog{key: key, source: g.self, dest: site, target: site, retries: retries}, res, int64(len(replayed)))
	return true, nil
}

// awaitCommit waits for the answer to st's open while the client's bytes flow onto it, then
// for the commit (see pump.awaitCommit); sent: the open carried client bytes. On an error
// the stream has been abandoned: the client's bytes are all in first.buf again.
func (g *Gateway) awaitCommit(st *links.Stream, op *datapath.Opening, sent bool) error {
	abandon := func(err error) error {
		if cerr := op.Abandon(); cerr != nil {
			return fmt.Errorf("%w: %v", errClientGone, cerr)
		}
		return err
	}
	ans, err := st.Answer()
	if err != nil {
		switch {
		case errors.Is(err, mux.ErrRefused):
			err = failed(ans.Reason.String(), fmt.Errorf("refused: %s %s", ans.Reason, ans.Message))
		case errors.Is(err, mux.ErrAnswerTimeout):
			err = failed(metrics.ReasonAnswerTimeout, fmt.Errorf("answer from %q: %w", st.Peer, err))
		default:
			err = failed(metrics.ReasonLinkLost, fmt.Errorf("answer from %q: %w", st.Peer, err))
		}
		return abandon(err)
	}
	if sent || op.Forwarded() {
		return nil
	}
	if err := st.WaitReadable(op.Forwarded); err != nil && !op.Forwarded() {
		return abandon(failed(metrics.ReasonResetBeforeCommit, fmt.Errorf("target failed before exchanging any byte: %w", err)))
	}
	return nil
}

// commit decides, for a backend that has just accepted, whether the connection is now bound
// to it. See awaitCommit.
func (g *Gateway) commit(target, client *net.TCPConn, first *firstBytes, sent bool) error {
	if sent {
		return nil // a client byte has gone to the target: committed (see awaitCommit)
	}
	p := first.startPump(client, target)
	wake := func() { _ = target.SetReadDeadline(time.Unix(1, 0)) } // wakes waitFirstByte
	err := p.awaitCommit(wake, func() error { return waitFirstByte(target) })
	// The pump has stopped before the deadline is cleared: a forward after the clear would
	// set it again.
	_ = target.SetReadDeadline(time.Time{})
	return err
}

// awaitCommit waits until the target sends its first byte (or ends its stream) or until a
// client byte has gone to it, then stops the pump. Until then nothing has been exchanged, so
// a target that resets now, such as a backend that died with our connection in its accept
// queue, or a link that died between the answer and the first reply, can be left for the
// next candidate without the client noticing. After it, failures reach the client as resets.
// waitFirstByte waits for the target's first byte without consuming it; wake makes it
// return when a client byte has gone to the target.
func (p *pump) awaitCommit(wake func(), waitFirstByte func() error) error {
	p.commitPhase(wake)
	if !p.forwardedAny() {
		if err := waitFirstByte(); err != nil && !p.forwardedAny() {
			if perr := p.stop(); perr != nil {
				return perr
			}
			return fmt.Errorf("target failed before exchanging any byte: %w", err)
		}
	}
	return p.stop()
}

// waitFirstByte blocks until conn has a byte to read or has ended (nil), or fails (the error).
// It consumes nothing.
func waitFirstByte(conn *net.TCPConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var peekErr error
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, e := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if errors.Is(e, unix.EAGAIN) {
			return false
		}
		peekErr = e
		return true
	})
	if err != nil {
		return err
	}
	return peekErr
}

// firstBytes keeps what the client sent before its target committed, so it can be replayed to
// the next candidate if this one refuses.
type firstBytes struct {
	limit int
	buf   []byte
	eof   bool
}

// pump reads the client into buf and writes each piece to the target, until stopped, the
// client's end of stream, or the limit: past it the client is simply not read, so TCP flow
// control holds it back.
type pump struct {
	f         *firstBytes
	client    *net.TCPConn
	done      chan error
	forwarded atomic.Int64
	wake      atomic.Pointer[func()] // set in the commit phase: wakes the first-byte wait on a forward
}

func (f *firstBytes) startPump(client *net.TCPConn, target io.Writer) *pump {
	p := &pump{f: f, client: client, done: make(chan error, 1)}
	go func() { p.done <- p.run(target) }()
	return p
}

func (p *pump) run(target io.Writer) error {
	var chunk [16 << 10]byte
	f := p.f
	for !f.eof && len(f.buf) < f.limit {
		n, err := p.client.Read(chunk[:min(len(chunk), f.limit-len(f.buf))])
		if n > 0 {
			f.buf = append(f.buf, chunk[:n]...)
			if _, werr := target.Write(chunk[:n]); werr != nil {
				return nil // the target failed: the answer or the commit wait reports it
			}
			p.forwarded.Add(int64(n))
			if wake := p.wake.Load(); wake != nil {
				(*wake)() // a client byte reached the target: the connection is committed
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			f.eof = true
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil
		default:
			return fmt.Errorf("%w: %v", errClientGone, err)
		}
	}
	return nil
}

func (p *pump) commitPhase(wake func()) { p.wake.Store(&wake) }

// forwardedAny reports whether a client byte has gone to the target since the pump started.
func (p *pump) forwardedAny() bool { return p.forwarded.Load() > 0 }

// stop stops the pump (a read deadline in the past wakes its blocked read) and returns the
// client's error, if the client failed. Everything the pump read was written to the target
// before it returns, so byte order is kept.
func (p *pump) stop() error {
	_ = p.client.SetReadDeadline(time.Unix(1, 0))
	err := <-p.done
	_ = p.client.SetReadDeadline(time.Time{})
	return err
}

// serveTunnel serves a tunnel on which a neighbor sent its first frame: an attach, which pairs
// the tunnel with the stream moving onto it. Client connections travel as streams, so a
// request on a tunnel (a peer of an older version) is refused like a malformed frame: counted,
// logged (rate-limited), and only this tunnel is lost.
func (g *Gateway) serveTunnel(t *links.Tunnel) {
	_ = t.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	a, err := tunnel.ReadAttach(t.Conn)
	if err == nil {
		_ = t.Conn.SetReadDeadline(time.Time{})
		t.Attach(a.Token)
		return
	}
	defer t.Done()
	why := "unreadable first frame"
	if errors.Is(err, tunnel.ErrUnexpectedFrame) {
		why = "a request on a tunnel: this version carries connections as streams, upgrade the peer"
	}
	// The answer says why, so a peer of another version does not take it for a failed backend.
	g.metrics.BadRequest()
	g.rateLog.Warn(tunnel.ReasonBadRequest.String(), "bad tunnel request, tunnel closed",
		"link", t.Link, "peer", t.Peer, "why", why, "err", err)
	g.refuse(t.Conn, tunnel.ReasonBadRequest, why)
}

// startsMoves lets a connection this site opened to a neighbor move onto a tunnel of the link
// once it proves bulk (the move-bytes setting); streams through a transit site stay streams.
func (g *Gateway) startsMoves(st *links.Stream) *datapath.Mover {
	if g.settings.MoveBytes == 0 {
		return nil
	}
	return &datapath.Mover{
		After: int64(g.settings.MoveBytes),
		Take:  g.moveTunnel(st.TakeTunnel, metrics.MoveNoTunnel),
		Path:  g.path,
	}
}

// followsMoves lets a connection a neighbor opened here follow its move.
func (g *Gateway) followsMoves(st *links.Stream) *datapath.Mover {
	return &datapath.Mover{
		Await: func(token uint64) (datapath.Tunnel, error) {
			return g.moveTunnel(func() (*links.Tunnel, error) { return st.AwaitTunnel(token) }, metrics.MoveNoAttach)()
		},
		Path: g.path,
	}
}

// moveTunnel gets a moving stream's tunnel with get, counting a failure under result.
func (g *Gateway) moveTunnel(get func() (*links.Tunnel, error), result string) func() (datapath.Tunnel, error) {
	return func() (datapath.Tunnel, error) {
		t, err := get()
		if err != nil {
			g.metrics.Move(result)
			return datapath.Tunnel{}, err
		}
		return datapath.Tunnel{Conn: t.Conn, Token: t.Token, Ctx: t.Context(), Done: t.Done}, nil
	}
}

// serveStream serves a stream a neighbor opened: deliver it to a local connector when this
// site is the destination, else relay it one hop on.
func (g *Gateway) serveStream(st *links.Stream) {
	req := st.Request()
	if g.ctx.Err() != nil {
		st.Refuse(tunnel.ReasonShuttingDown, "site stopping")
		return
	}
	if req.DestSite == g.self {
		if !g.admission.enter() {
			// Refused before any backend is dialed: the ingress tries its next candidate.
			st.Refuse(tunnel.ReasonOverLimit, fmt.Sprintf("site %s holds its max-connections (%d)", g.self, g.admission.limit))
			g.metrics.Refused(req.RoutingKey, req.SourceSite, tunnel.ReasonOverLimit.String())
			g.rateLog.Warn("over-limit", "connection from another site refused at the site's connection limit",
				"source_site", req.SourceSite, "routing_key", req.RoutingKey, "site_limit", g.admission.limit)
			return
		}
		defer g.admission.leave()
		g.deliver(st, req)
	} else {
		g.transit(st, req)
	}
}

// deliver connects to a local backend before answering ok, so a refusing backend costs the
// client nothing: the ingress moves on to its next candidate.
func (g *Gateway) deliver(st *links.Stream, req tunnel.Request) {
	start := time.Now()
	tried := map[string]bool{}
	reason, msg := tunnel.ReasonNoConnector, "no healthy connector for "+req.RoutingKey
	for {
		g.pickMu.Lock()
		g.turn++
		ranked := selector.Rank(g.candidates(req.RoutingKey, false), g.turn)
		g.pickMu.Unlock()
		var c *connector
		for _, cand := range ranked {
			if !tried[cand.Target] {
				c = g.connectorNamed(req.RoutingKey, cand.Target)
				break
			}
		}
		if c == nil {
			break
		}
		tried[c.cfg.Name] = true
		backend, err := c.dial(g.settings.ConnectTimeout)
		if err != nil {
			c.setHealthy(false, err)
			reason, msg = tunnel.ReasonBackendRefused, err.Error()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				reason = tunnel.ReasonBackendTimeout
			}
			continue
		}
		release := g.open.Acquire(req.RoutingKey, c.target())
		if err := st.Accept(); err != nil {
			release()
			datapath.Abort(backend)
			st.Reset()
			return
		}
		g.metrics.Delivered(req.RoutingKey, req.SourceSite, c.cfg.Name)
		var mv *datapath.Mover
		if req.SourceSite == st.Peer {
			mv = g.followsMoves(st)
		}
		res := datapath.JoinStream(backend, st.Stream, mv)
		release()
		if res.Moved {
			g.metrics.Move(metrics.MoveMoved)
		}
		g.logFlow(start, flowLog{key: req.RoutingKey, source: req.SourceSite, dest: g.self, target: c.cfg.Name,
			toTarget: res.BToA, toClient: res.AToB, outcome: resultOutcome(res), retries: len(tried) - 1,
			path: resultPath(res), moved: res.Moved, err: res.Err})
		return
	}
	st.Refuse(reason, msg)
	g.metrics.Refused(req.RoutingKey, req.SourceSite, reason.String())
	g.logFlow(start, flowLog{key: req.RoutingKey, source: req.SourceSite, dest: g.self, outcome: outcomeRefused,
		retries: max(len(tried)-1, 0), err: errors.New(msg)})
}

// transit relays a stream one hop toward its destination without terminating it: the
// answer, data, half-close and reset all travel through unchanged.
func (g *Gateway) transit(st *links.Stream, req tunnel.Request) {
	refuse := func(reason tunnel.Reason, msg string) {
		st.Refuse(reason, msg)
		g.metrics.Refused(req.RoutingKey, req.SourceSite, reason.String())
	}
	nextHop, ok := g.links.Routes().NextHop(req.DestSite)
	if !ok {
		refuse(tunnel.ReasonNoRoute, "no route from "+g.self+" to "+req.DestSite)
		return
	}
	next, err := g.links.OpenStream(nextHop, req, nil)
	if err != nil {
		refuse(tunnel.ReasonNoTunnel, err.Error())
		return
	}
	ans, err := next.Answer()
	if err != nil {
		next.Reset()
		if errors.Is(err, mux.ErrRefused) {
			// Passed back as it came, so the ingress counts the destination's reason.
			st.Refuse(ans.Reason, ans.Message)
			return
		}
		refuse(tunnel.ReasonNoTunnel, err.Error())
		return
	}
	if err := st.Accept(); err != nil {
		next.Reset()
		st.Reset()
		return
	}
	datapath.RelayStreams(st.Stream, next.Stream)
}

// refuse answers a request on a tunnel with a refusal and closes the tunnel gracefully: the
// bytes already on their way are read and dropped, so the close is a FIN and the answer
// arrives, not a reset that could overtake it.
func (g *Gateway) refuse(c *net.TCPConn, reason tunnel.Reason, msg string) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(tunnel.Answer{Status: tunnel.StatusRefused, Reason: reason, Message: msg}.Append(nil)); err == nil {
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	}
	c.Close()
}

func resultOutcome(r datapath.Result) outcome {
	if r.Err != nil {
		return outcomeReset
	}
	return outcomeOK
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// flowLog is what the line a connection leaves when it ends says.
type flowLog struct {
	key          string
	source, dest string // sites; dest is empty when no target took the connection
	target       string // the connector, or the destination site seen from the ingress
	toTarget     int64  // bytes from the client toward the backend
	toClient     int64
	outcome      outcome
	retries      int    // failed attempts before the one that took the connection
	path         string // the data path that carried the bytes; empty when none did
	moved        bool   // the connection left its stream for a tunnel of its own
	err          error
}

// endFlow counts and logs the end of a connection accepted here that reached its target;
// replayed bytes went to the target before the splice and are not in res.
func (g *Gateway) endFlow(start time.Time, f flowLog, res datapath.Result, replayed int64) {
	f.toTarget, f.toClient = res.AToB+replayed, res.BToA
	f.outcome, f.err = resultOutcome(res), res.Err
	f.path, f.moved = resultPath(res), res.Moved
	if res.Moved {
		g.metrics.Move(metrics.MoveMoved)
	}
	g.metrics.Closed(f.key, f.dest, string(f.outcome), f.toTarget, f.toClient)
	g.logFlow(start, f)
}

// logFlow writes the line a connection leaves when it ends, at every site that served it as
// ingress or destination: every connection with access-log on; otherwise only failures, at
// most one line a second per outcome, so a flood of failing connections cannot flood the log.
func (g *Gateway) logFlow(start time.Time, f flowLog) {
	suppressed := 0
	if !g.settings.AccessLog {
		if f.outcome == outcomeOK {
			return
		}
		var ok bool
		if ok, suppressed = g.rateLog.Allow(string(f.outcome)); !ok {
			return
		}
	}
	attrs := []any{"routing_key", f.key, "site", g.self, "source_site", f.source, "dest_site", f.dest,
		"target", f.target, "outcome", string(f.outcome), "retries", f.retries,
		"bytes_to_target", f.toTarget, "bytes_to_client", f.toClient,
		"duration", time.Since(start).Round(time.Microsecond)}
	if f.path != "" {
		attrs = append(attrs, "data_path", f.path)
	}
	if f.moved {
		attrs = append(attrs, "moved_to_tunnel", true)
	}
	if f.err != nil {
		attrs = append(attrs, "err", f.err.Error())
	}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed) // failures with this outcome not logged since the last line
	}
	g.log.Info("connection", attrs...)
}

// resultPath names the path a connection took: it starts in userspace and may be promoted
// to the kernel, and a direction whose reader falls behind comes back (demoted).
func resultPath(r datapath.Result) string {
	switch {
	case r.Demoted:
		return "kernel-demoted"
	case r.Promoted:
		return "kernel"
	}
	return "userspace"
}
