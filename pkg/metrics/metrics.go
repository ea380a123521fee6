package metrics

import (
	"net/http"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is one site's metrics on a private registry. Its event methods are safe for
// concurrent use and do nothing on a nil *Metrics.
type Metrics struct {
	reg *prometheus.Registry

	accepted        *prometheus.CounterVec
	opened          *prometheus.CounterVec
	closed          *prometheus.CounterVec
	failed          *prometheus.CounterVec
	setup           *prometheus.HistogramVec
	bytes           *prometheus.CounterVec
	attemptFailures *prometheus.CounterVec
	retries         *prometheus.CounterVec
	delivered       *prometheus.CounterVec
	refused         *prometheus.CounterVec
	rejected        *prometheus.CounterVec
	admission       *prometheus.CounterVec
	idleReset       *prometheus.CounterVec
	heartbeatMisses *prometheus.CounterVec
	poolMisses      *prometheus.CounterVec
	moves           *prometheus.CounterVec
	promotions      prometheus.Counter
	demotions       *prometheus.CounterVec
	fallbacks       *prometheus.CounterVec
	trimmed         prometheus.Counter

	state  *stateCollector
	bounds bounds

	mu         sync.Mutex
	connectors []Connector        // the site's connectors, for LinkUp
	targets    map[[2]string]bool // (routing key, dest site) exported by Target
}

// New makes the metrics of site, built as version. Nothing is read at scrape time until
// SetSource is called.
func New(site, version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), targets: map[[2]string]bool{}}
	// Every series carries site=, so one Prometheus scraping every site needs no relabelling.
	r := prometheus.WrapRegistererWith(prometheus.Labels{"site": site}, m.reg)
	counter := func(d Def) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: d.Name, Help: d.Help}, d.Labels)
		r.MustRegister(c)
		return c
	}
	m.accepted = counter(defAccepted)
	m.opened = counter(defOpened)
	m.closed = counter(defClosed)
	m.failed = counter(defFailed)
	m.bytes = counter(defBytes)
	m.attemptFailures = counter(defAttemptFailures)
	m.retries = counter(defRetries)
	m.delivered = counter(defDelivered)
	m.refused = counter(defRefused)
	m.rejected = counter(defHandshakesRejected)
	m.admission = counter(defAdmissionRefused)
	m.idleReset = counter(defIdleReset)
	// Rejections are exported at 0 from start, so an alert on increase() sees the first one.
	for _, r := range HandshakeReasons {
		m.rejected.WithLabelValues(r)
	}
	m.refused.WithLabelValues(Other, Other, ReasonBadRequest)
	m.heartbeatMisses = counter(defHeartbeatMisses)
	m.poolMisses = counter(defPoolMisses)
	m.moves = counter(defMoves)
	for _, r := range []string{MoveMoved, MoveNoTunnel, MoveNoAttach} {
		m.moves.WithLabelValues(r)
	}
	m.demotions = counter(defDemotions)
	m.fallbacks = counter(defFallbacks)
	m.setup = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: defSetup.Name, Help: defSetup.Help, Buckets: SetupBuckets}, defSetup.Labels)
	r.MustRegister(m.setup)
	plain := func(d Def) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: d.Name, Help: d.Help})
		r.MustRegister(c)
		return c
	}
	m.promotions = plain(defPromotions)
	m.trimmed = plain(defTrimmed)
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: defBuildInfo.Name, Help: defBuildInfo.Help}, defBuildInfo.Labels)
	info.WithLabelValues(version, runtime.Version()).Set(1)
	r.MustRegister(info)
	m.state = &stateCollector{}
	r.MustRegister(m.state)
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry is the private registry, for tests and for adding the Go runtime's collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetSource sets where scrape-time metrics are read; kernel may be nil (userspace path).
func (m *Metrics) SetSource(src Source, kernel KernelSource) {
	if m == nil {
		return
	}
	m.state.set(src, kernel)
}

// Configured exports at 0 the event series whose labels this site's configuration names, so
// rate() and increase() see them from the first scrape, not from the first event, and every
// dashboard panel has a value on a fresh network: per listened key, accepted, failed and
// retries by every reason; per key that is both listened for and served by a local connector,
// the target series of this site (see Target). connectors are kept for LinkUp.
func (m *Metrics) Configured(self string, listenKeys []string, connectors []Connector) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.connectors = slices.Clone(connectors)
	m.mu.Unlock()
	for _, k := range listenKeys {
		m.accepted.WithLabelValues(k)
		m.failed.WithLabelValues(k)
		for _, r := range Reasons {
			m.retries.WithLabelValues(k, r)
		}
		for _, c := range connectors {
			if c.RoutingKey == k {
				m.Target(k, self, true)
				break
			}
		}
	}
}

// Target exports at 0 the series of connections for key placed on dest (opened, closed by
// outcome, bytes by direction, setup latency), once dest is a candidate for key: this site
// for a local connector at start, a remote site when routing first reaches it advertising
// key. A local target also gets its attempt failures by every reason. A remote one does not:
// that would be keys x sites x reasons, while the others cost what its first connection would
// create anyway. A site outside the bounds (see SetBounds) gets nothing.
func (m *Metrics) Target(key, dest string, local bool) {
	if m == nil {
		return
	}
	key, dest = m.bounds.key(key), m.bounds.site(dest)
	if key == Other || dest == Other {
		return
	}
	// The gateway offers every candidate at every reconcile: create each target's series once.
	t := [2]string{key, dest}
	m.mu.Lock()
	done := m.targets[t]
	m.targets[t] = true
	m.mu.Unlock()
	if done {
		return
	}
	m.opened.WithLabelValues(key, dest)
	m.setup.WithLabelValues(key, dest)
	for _, o := range []string{OutcomeOK, OutcomeReset} {
		m.closed.WithLabelValues(key, dest, o)
	}
	for _, d := range []string{ToTarget, ToClient} {
		m.bytes.WithLabelValues(key, dest, d)
	}
	if local {
		for _, r := range Reasons {
			m.attemptFailures.WithLabelValues(key, dest, r)
		}
	}
}

// Accepted counts a client connection accepted for key.
func (m *Metrics) Accepted(key string) {
	if m == nil {
		return
	}
	m.accepted.WithLabelValues(m.bounds.key(key)).Inc()
}

// Committed counts a client connection for key bound to its target at dest, setup after it
// was accepted.
func (m *Metrics) Committed(key, dest string, setup time.Duration) {
	if m == nil {
		return
	}
	key, dest = m.bounds.key(key), m.bounds.site(dest)
	m.opened.WithLabelValues(key, dest).Inc()
	m.setup.WithLabelValues(key, dest).Observe(setup.Seconds())
}

// Closed counts the end of a committed connection and the bytes it carried.
func (m *Metrics) Closed(key, dest, outcome string, toTarget, toClient int64) {
	if m == nil {
		return
	}
	key, dest = m.bounds.key(key), m.bounds.site(dest)
	m.closed.WithLabelValues(key, dest, outcome).Inc()
	m.bytes.WithLabelValues(key, dest, ToTarget).Add(float64(toTarget))
	m.bytes.WithLabelValues(key, dest, ToClient).Add(float64(toClient))
}

// AttemptFailed counts one failed attempt to place a connection for key on a target at dest,
// for reason why.
func (m *Metrics) AttemptFailed(key, dest, why string) {
	if m == nil {
		return
	}
	m.attemptFailures.WithLabelValues(m.bounds.key(key), m.bounds.site(dest), reason(why)).Inc()
}

// Retried counts a connection for key tried on its next candidate after a failure for reason
// why.
func (m *Metrics) Retried(key, why string) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(m.bounds.key(key), reason(why)).Inc()
}

// Failed counts a client connection that no candidate could take.
func (m *Metrics) Failed(key string) {
	if m == nil {
		return
	}
	m.failed.WithLabelValues(m.bounds.key(key)).Inc()
}

// Delivered counts a connection from source delivered to a local connector.
func (m *Metrics) Delivered(key, source, connector string) {
	if m == nil {
		return
	}
	m.delivered.WithLabelValues(m.bounds.key(key), m.bounds.site(source), connector).Inc()
}

// Refused counts a request from source for key that this site refused for reason why. key
// and source come from the wire: they are bounded (see SetBounds).
func (m *Metrics) Refused(key, source, why string) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(m.bounds.key(key), m.bounds.site(source), reason(why)).Inc()
}

// BadRequest counts a request from a neighbor that could not be read, under routing key and
// source site "other": nothing in it can be trusted.
func (m *Metrics) BadRequest() {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(Other, Other, ReasonBadRequest).Inc()
}

// Move counts a connection's move to a tunnel, or a move that could not happen, by result.
func (m *Metrics) Move(result string) {
	if m == nil {
		return
	}
	m.moves.WithLabelValues(result).Inc()
}

// ListenerOpened exports listener's admission refusals and idle resets at 0.
func (m *Metrics) ListenerOpened(listener string) {
	if m == nil {
		return
	}
	for _, r := range []string{RefusedListenerLimit, RefusedSiteLimit} {
		m.admission.WithLabelValues(listener, r)
	}
	m.idleReset.WithLabelValues(listener)
}

// IdleReset counts a client connection listener reset for passing its idle-timeout.
func (m *Metrics) IdleReset(listener string) {
	if m == nil {
		return
	}
	m.idleReset.WithLabelValues(listener).Inc()
}

// AdmissionRefused counts a client connection listener reset at once for reason.
func (m *Metrics) AdmissionRefused(listener, reason string) {
	if m == nil {
		return
	}
	m.admission.WithLabelValues(listener, reason).Inc()
}

// HandshakeRejected counts a connection to the link port rejected for reason (one of
// HandshakeReasons).
func (m *Metrics) HandshakeRejected(reason string) {
	if m == nil {
		return
	}
	m.rejected.WithLabelValues(reason).Inc()
}

// HeartbeatMiss counts a heartbeat interval without a message from peer on link.
func (m *Metrics) HeartbeatMiss(link, peer string) {
	if m == nil {
		return
	}
	m.heartbeatMisses.WithLabelValues(link, peer).Inc()
}

// LinkUp exports the per-link event counters of link at 0, so a dashboard shows a value for
// a link that has had no event yet, and the deliveries from peer to every local connector:
// a neighbor is the likeliest source of connections, and an authenticated one.
func (m *Metrics) LinkUp(link, peer string) {
	if m == nil {
		return
	}
	m.heartbeatMisses.WithLabelValues(link, peer)
	m.poolMisses.WithLabelValues(link, peer)
	if peer = m.bounds.admit(peer); peer == Other {
		return
	}
	m.mu.Lock()
	connectors := m.connectors
	m.mu.Unlock()
	for _, c := range connectors {
		m.delivered.WithLabelValues(m.bounds.key(c.RoutingKey), peer, c.Name)
	}
}

// PoolMiss counts a connection that found no idle tunnel on link.
func (m *Metrics) PoolMiss(link, peer string) {
	if m == nil {
		return
	}
	m.poolMisses.WithLabelValues(link, peer).Inc()
}

// Promoted counts a connection moved to the kernel path.
func (m *Metrics) Promoted() {
	if m == nil {
		return
	}
	m.promotions.Inc()
}

// Demoted counts a connection moved back to the userspace path.
func (m *Metrics) Demoted(reason string) {
	if m == nil {
		return
	}
	m.demotions.WithLabelValues(reason).Inc()
}

// Trimmed counts bytes of retransmitted segments the kernel path kept from being delivered twice.
func (m *Metrics) Trimmed(bytes uint64) {
	if m == nil {
		return
	}
	m.trimmed.Add(float64(bytes))
}

// FellBack counts a connection kept on the userspace path although the kernel path was wanted.
func (m *Metrics) FellBack(reason string) {
	if m == nil {
		return
	}
	m.fallbacks.WithLabelValues(reason).Inc()
}

// stateCollector reads the gateway's state at scrape time.
type stateCollector struct {
	mu     sync.Mutex
	src    Source
	kernel KernelSource
	errs   map[string]float64
}

func (c *stateCollector) set(src Source, kernel KernelSource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.src, c.kernel = src, kernel
}
