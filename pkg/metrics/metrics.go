package metrics

import (
	"net/http"
	"runtime"
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
	heartbeatMisses *prometheus.CounterVec
	poolMisses      *prometheus.CounterVec
	moves           *prometheus.CounterVec
	promotions      prometheus.Counter
	demotions       *prometheus.CounterVec
	fallbacks       *prometheus.CounterVec
	trimmed         prometheus.Counter

	state  *stateCollector
	bounds bounds
}

// New makes the metrics of site, built as version. Nothing is read at scrape time until
// SetSource is called.
func New(site, version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
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

// ListenerKeys pre-creates the per-routing-key event series of the keys this site listens
// for, so rate() and increase() see them from the first scrape, not from the first event.
func (m *Metrics) ListenerKeys(keys []string) {
	if m == nil {
		return
	}
	for _, k := range keys {
		m.accepted.WithLabelValues(k)
		m.failed.WithLabelValues(k)
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

// ListenerOpened exports listener's admission refusals at 0.
func (m *Metrics) ListenerOpened(listener string) {
	if m == nil {
		return
	}
	for _, r := range []string{RefusedListenerLimit, RefusedSiteLimit} {
		m.admission.WithLabelValues(listener, r)
	}
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
// a link that has had no event yet.
func (m *Metrics) LinkUp(link, peer string) {
	if m == nil {
		return
	}
	m.heartbeatMisses.WithLabelValues(link, peer)
	m.poolMisses.WithLabelValues(link, peer)
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
