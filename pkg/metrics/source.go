package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Source supplies the state read at every scrape: the gateway implements it from what it
// already keeps (the same data /status serves).
type Source interface {
	MetricsState() State
}

// KernelSource is implemented by a data path that keeps counts in BPF maps; they are read at
// scrape time. An error becomes skfwd_collect_errors_total{collector="kernel"}.
type KernelSource interface {
	KernelState() (KernelState, error)
}

// State is one site's state at a scrape.
type State struct {
	DataPath   string
	InProgress int
	Open       []Open      // every non-zero open-connection count
	Services   []Service   // routing keys with a listener here
	Listeners  []Listener  // every listener
	Connectors []Connector // every connector
	Links      []Link
	Routes     []Route
}

// Open is the number of connections held open for a routing key to one target.
type Open struct {
	RoutingKey, DestSite, Connector string
	N                               int
}

// Service is a routing key with a listener here and its candidates now.
type Service struct {
	RoutingKey string
	Candidates []Candidate
}

// Candidate is one place the next connection for a key can go.
type Candidate struct {
	DestSite, Connector string // Connector is set for a local connector
	PathCost, Score     int
}

// Listener is one client listener.
type Listener struct {
	Name, RoutingKey string
	Accepting        bool
}

// Connector is one local backend and its health.
type Connector struct {
	Name, RoutingKey string
	Up               bool
}

// Link is one link, up or connecting.
type Link struct {
	Name, Peer, Role string
	Up               bool
	Cost             int
	RTT              time.Duration
	IdleOwn          int // idle tunnels for this site's requests
	IdlePeer         int // tunnels waiting for the peer's requests
	Active           int
}

// Route is the least-cost route to one site.
type Route struct {
	Dest, NextHop string
	Cost          int
}

// KernelState is what the kernel path keeps in BPF maps.
type KernelState struct {
	Bytes   int64 // forwarded by the kernel for connections open now
	Backlog int64 // redirected but not yet in the target's send buffer
	Maps    []MapUsage
}

// MapUsage is one BPF map's fill.
type MapUsage struct {
	Name              string
	Entries, Capacity int
}

var scrapeDefs = []Def{
	defOpen, defInProgress, defScore, defPathCost, defCandidates, defListener, defConnectorUp,
	defLinkUp, defLinkCost, defLinkRTT, defPoolIdle, defTunnelsActive, defRouteCost, defDataPath,
	defKernelBytes, defKernelBacklog, defMapEntries, defMapCapacity, defCollectErrors,
}

func desc(d Def) *prometheus.Desc { return prometheus.NewDesc(d.Name, d.Help, d.Labels, nil) }

var descs = func() map[string]*prometheus.Desc {
	out := map[string]*prometheus.Desc{}
	for _, d := range scrapeDefs {
		out[d.Name] = desc(d)
	}
	return out
}()

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range scrapeDefs {
		ch <- descs[d.Name]
	}
}

// Collect implements prometheus.Collector: it reads the sources now.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	src, kernel := c.src, c.kernel
	c.mu.Unlock()
	emit := func(d Def, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(descs[d.Name], t, v, labels...)
	}
	gauge := func(d Def, v float64, labels ...string) { emit(d, prometheus.GaugeValue, v, labels...) }
	if src != nil {
		st := src.MetricsState()
		gauge(defDataPath, 1, st.DataPath)
		gauge(defInProgress, float64(st.InProgress))
		for _, o := range st.Open {
			gauge(defOpen, float64(o.N), o.RoutingKey, o.DestSite, o.Connector)
		}
		for _, s := range st.Services {
			gauge(defCandidates, float64(len(s.Candidates)), s.RoutingKey)
			for _, cand := range s.Candidates {
				gauge(defScore, float64(cand.Score), s.RoutingKey, cand.DestSite, cand.Connector)
				gauge(defPathCost, float64(cand.PathCost), s.RoutingKey, cand.DestSite, cand.Connector)
			}
		}
		for _, l := range st.Listeners {
			gauge(defListener, boolValue(l.Accepting), l.Name, l.RoutingKey)
		}
		for _, cn := range st.Connectors {
			gauge(defConnectorUp, boolValue(cn.Up), cn.Name, cn.RoutingKey)
		}
		for _, l := range st.Links {
			gauge(defLinkUp, boolValue(l.Up), l.Name, l.Peer, l.Role)
			gauge(defLinkCost, float64(l.Cost), l.Name, l.Peer, l.Role)
			if !l.Up {
				continue
			}
			gauge(defLinkRTT, l.RTT.Seconds(), l.Name, l.Peer, l.Role)
			gauge(defPoolIdle, float64(l.IdleOwn), l.Name, l.Peer, "own")
			gauge(defPoolIdle, float64(l.IdlePeer), l.Name, l.Peer, "peer")
			gauge(defTunnelsActive, float64(l.Active), l.Name, l.Peer)
		}
		for _, r := range st.Routes {
			gauge(defRouteCost, float64(r.Cost), r.Dest, r.NextHop)
		}
	}
	if kernel != nil {
		ks, err := kernel.KernelState()
		c.mu.Lock()
		if c.errs == nil {
			c.errs = map[string]float64{}
		}
		c.errs["kernel"] += 0 // the series exists from the first scrape, not the first error
		if err != nil {
			c.errs["kernel"]++
		}
		c.mu.Unlock()
		if err == nil {
			gauge(defKernelBytes, float64(ks.Bytes))
			gauge(defKernelBacklog, float64(ks.Backlog))
			for _, mu := range ks.Maps {
				gauge(defMapEntries, float64(mu.Entries), mu.Name)
				gauge(defMapCapacity, float64(mu.Capacity), mu.Name)
			}
		}
	}
	c.mu.Lock()
	for name, n := range c.errs {
		emit(defCollectErrors, prometheus.CounterValue, n, name)
	}
	c.mu.Unlock()
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
