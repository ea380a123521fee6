// Package gateway runs one site: it owns the configuration, links, listeners and connectors
// and wires them together. One new connection's trip reads top to bottom in flow.go.
package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skfwd/skfwd/pkg/config"
	"github.com/skfwd/skfwd/pkg/counts"
	"github.com/skfwd/skfwd/pkg/datapath"
	"github.com/skfwd/skfwd/pkg/links"
	"github.com/skfwd/skfwd/pkg/metrics"
	"github.com/skfwd/skfwd/pkg/ratelog"
	"github.com/skfwd/skfwd/pkg/statedir"
	"github.com/skfwd/skfwd/pkg/workers"
)

// Options are what the caller supplies beyond the configuration.
type Options struct {
	Log  *slog.Logger
	Path datapath.Path // nil: the userspace splice(2) path
	// PathNote says why the kernel path is not in use although it was asked for (status).
	PathNote string
	// Counts keeps open connections per routing key and target; nil: an in-process table.
	Counts counts.Counter
	// Metrics counts events and reads the site's state at scrape time; served at /metrics on
	// the admin address. nil: no metrics.
	Metrics *metrics.Metrics
}

// Gateway is one running site.
type Gateway struct {
	cfg      *config.Config
	settings config.Settings
	self     string
	log      *slog.Logger
	// rateLog writes what a flood could repeat (bad requests from neighbors, failed
	// connections with access-log off, refusals at a limit) at most once a second per
	// kind; the kinds are bounded sets of reasons, so one flood does not hide another.
	rateLog  *ratelog.Logger
	warnings []string // what the operator should fix, found at start (status too)
	// admission bounds the client connections the site holds (max-connections), counted
	// at the ingress that accepted them and at the destination that delivers them.
	admission admission
	fileLimit uint64 // the descriptor limit the site runs with
	path      datapath.Path
	pathNote  string
	state     *statedir.Dir
	links     *links.Manager
	open      counts.Counter
	metrics   *metrics.Metrics // nil-safe

	linkListeners []net.Listener
	listeners     []*listener
	connectors    map[string][]*connector // by routing key
	admin         net.Listener

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	workers *workers.Pool // serves client connections and streams
	pickMu  sync.Mutex
	turn    uint64
	flowSeq atomic.Uint64

	activeMu sync.Mutex
	active   map[*net.TCPConn]*activeConn // client-side sockets of connections in progress
}

// Start binds every address the configuration names, then starts the site. Binding comes
// first so that a port in use or a bad address fails the start before anything runs.
func Start(ctx context.Context, cfg *config.Config, opts Options) (g *Gateway, err error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Path == nil {
		opts.Path = datapath.Userspace{}
	}
	if opts.Counts == nil {
		opts.Counts = &counts.Table{}
	}
	s := cfg.Site.Settings
	g = &Gateway{
		cfg: cfg, settings: s, self: cfg.Site.Name, log: opts.Log, rateLog: ratelog.New(opts.Log, time.Second), path: opts.Path, pathNote: opts.PathNote, open: opts.Counts, metrics: opts.Metrics,
		connectors: map[string][]*connector{},
		active:     map[*net.TCPConn]*activeConn{},
	}
	g.state, err = statedir.Open(s.StateDir, g.self)
	if err != nil {
		return nil, err
	}
	var bound []net.Listener
	defer func() {
		if err != nil {
			for _, l := range bound {
				l.Close()
			}
		}
	}()
	bind := func(what, addr string) (net.Listener, error) {
		// No TCP keepalive on accepted sockets: four setsockopt(2) calls each, and links
		// have heartbeats (see connector.dial).
		l, err := (&net.ListenConfig{KeepAlive: -1}).Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s: listen on %s: %w (fix: free the port or change the address in the configuration)", what, addr, err)
		}
		bound = append(bound, l)
		return l, nil
	}
	for _, ra := range cfg.RouterAccess {
		l, err := bind(fmt.Sprintf("RouterAccess %q", ra.Name), ra.Address())
		if err != nil {
			return nil, err
		}
		g.linkListeners = append(g.linkListeners, l)
	}
	for _, lc := range cfg.Listeners {
		l, err := bind(fmt.Sprintf("Listener %q", lc.Name), lc.Address())
		if err != nil {
			return nil, err
		}
		g.listeners = append(g.listeners, &listener{g: g, cfg: lc, ln: l, admission: admission{limit: int64(lc.MaxConnections)}})
		g.metrics.ListenerOpened(lc.Name)
	}
	g.admission.limit, g.fileLimit = siteLimit(s.MaxConnections)
	if s.AdminAddress != "" {
		if g.admin, err = bind("admin-address setting", s.AdminAddress); err != nil {
			return nil, err
		}
	}

	g.ctx, g.cancel = context.WithCancel(ctx)
	g.workers = workers.New(workerIdleTime, maxIdleWorkers)
	for _, cc := range cfg.Connectors {
		g.connectors[cc.RoutingKey] = append(g.connectors[cc.RoutingKey], &connector{g: g, cfg: cc})
	}
	g.probeAll() // the first advertisement already reflects which backends answer
	g.configureMetrics()

	var observer links.Observer
	if g.metrics != nil {
		observer = g.metrics
	}
	g.links = links.New(g.ctx, links.Options{
		Self:              g.self,
		HeartbeatInterval: s.HeartbeatInterval,
		DeadTime:          s.LinkDeadTime,
		MaxBackoff:        s.ReconnectMaxBackoff,
		PoolSize:          s.TunnelPoolSize,
		LinkConnections:   s.LinkConnections,
		Grant: func(name string) ([]byte, int, bool) {
			gr, ok := g.state.Grant(name)
			return gr.Secret, gr.Cost, ok
		},
		OnTunnel:      g.serveTunnel,
		OnStream:      g.serveStream,
		Go:            g.workers.Go,
		StreamWindow:  s.StreamWindow,
		AnswerTimeout: s.AnswerTimeout,
		OnChange:      g.reconcile,
		Observer:      observer,
		Log:           g.log,
	})
	g.links.SetKeys(g.healthyKeys())
	g.links.Start()
	for _, l := range g.linkListeners {
		g.links.Serve(l)
	}
	for _, lk := range cfg.Links {
		spec := links.DialSpec{Name: lk.Name, Cost: lk.Cost, Secret: cfg.Secrets[lk.Credentials].Data[SecretKey]}
		for _, e := range lk.Endpoints {
			spec.Endpoints = append(spec.Endpoints, e.Address())
		}
		g.links.Dial(spec)
	}
	for _, cs := range g.connectors {
		for _, c := range cs {
			g.goRun(c.probeLoop)
		}
	}
	g.watchMetrics()
	g.goRun(g.reconcileLoop)
	var timeouts []time.Duration
	for _, l := range g.listeners {
		timeouts = append(timeouts, l.cfg.IdleTimeout)
	}
	if every := idleSweepEvery(timeouts); every > 0 {
		g.goRun(func() { g.idleLoop(every) })
	}
	if g.admin != nil {
		g.goRun(g.serveAdmin)
	}
	g.reconcile()
	g.warnings = portWarnings(cfg.Connectors, readProc)
	for _, w := range g.warnings {
		g.log.Warn(w)
	}
	g.log.Info("site started", "site", g.self, "data_path", g.path.Mode(),
		"listeners", len(g.listeners), "connectors", len(cfg.Connectors), "links", len(cfg.Links),
		"router_access", len(g.linkListeners), "admin", s.AdminAddress, "state_dir", g.state.Path())
	return g, nil
}

// SecretKey is the key in a link's Secret that holds the shared secret.
const SecretKey = config.SecretKey

func (g *Gateway) goRun(f func()) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
}

// goServe runs f, which serves one client connection, on a worker.
func (g *Gateway) goServe(f func()) {
	g.wg.Add(1)
	g.workers.Go(func() {
		defer g.wg.Done()
		f()
	})
}

// workerIdleTime is how long a worker waits for its next connection before it ends: long
// enough to span the gaps of a steady load, short enough that a burst's workers are gone
// soon after it.
const workerIdleTime = 10 * time.Second

// maxIdleWorkers bounds the workers kept waiting: enough for the concurrency of a busy site's
// steady load, while the rest of a burst's workers (and their stacks) go at once.
const maxIdleWorkers = 256

// Stop stops accepting, resets the connections in progress, closes every link and waits
// until nothing of the site runs any more.
func (g *Gateway) Stop() {
	g.cancel()
	for _, l := range g.listeners {
		l.close()
	}
	if g.admin != nil {
		g.admin.Close()
	}
	g.activeMu.Lock()
	for c := range g.active {
		datapath.Abort(c)
	}
	g.activeMu.Unlock()
	g.links.Wait()
	g.wg.Wait()
	g.workers.Close()
}

// Done is closed when the gateway has been asked to stop.
func (g *Gateway) Done() <-chan struct{} { return g.ctx.Done() }

func (g *Gateway) trackActive(c *net.TCPConn, l *listener) bool {
	g.activeMu.Lock()
	defer g.activeMu.Unlock()
	if g.ctx.Err() != nil {
		return false
	}
	var a *activeConn // nil without an idle timeout: nothing to watch, nothing allocated
	if l.cfg.IdleTimeout > 0 {
		a = &activeConn{l: l}
	}
	g.active[c] = a
	return true
}

func (g *Gateway) untrackActive(c *net.TCPConn) {
	g.activeMu.Lock()
	delete(g.active, c)
	g.activeMu.Unlock()
}

// healthyKeys are the routing keys this site advertises: those with a healthy connector.
func (g *Gateway) healthyKeys() []string {
	var keys []string
	for k, cs := range g.connectors {
		for _, c := range cs {
			if c.healthy.Load() {
				keys = append(keys, k)
				break
			}
		}
	}
	sort.Strings(keys)
	return keys
}

// reconcile brings advertisements and listeners in line with health and routes: a listener
// with no candidate anywhere stops accepting, so clients are refused at once.
func (g *Gateway) reconcile() {
	if g.ctx.Err() != nil {
		return
	}
	g.links.SetKeys(g.healthyKeys())
	for _, l := range g.listeners {
		l.setAvailable(g.hasCandidate(l.cfg.RoutingKey))
	}
	g.remoteTargetMetrics()
}

// reconcileLoop retries what reconcile could not do at once (a listen address still taken).
func (g *Gateway) reconcileLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
			g.reconcile()
		}
	}
}

func (g *Gateway) hasCandidate(key string) bool {
	for _, c := range g.connectors[key] {
		if c.healthy.Load() {
			return true
		}
	}
	return len(g.links.Routes().Advertisers(key)) > 0
}
