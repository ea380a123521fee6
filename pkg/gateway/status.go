package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sort"
	"sync/atomic"
	"time"

	"github.com/skfwd/skfwd/pkg/datapath"
	"github.com/skfwd/skfwd/pkg/links"
	"github.com/skfwd/skfwd/pkg/selector"
)

// Status is what `skfwd status` shows and /status serves: links, routes, services and the
// data-path mode.
type Status struct {
	Site     string `json:"site"`
	DataPath string `json:"data_path"`
	// DataPathNote says why the kernel path is not in use, when it was wanted but is not.
	DataPathNote string `json:"data_path_note,omitempty"`
	// Warnings are problems of the host found at start that the operator should fix.
	Warnings []string `json:"warnings,omitempty"`
	// Clients is the client connections held now against ConnectionLimit (max-connections;
	// 0: none), with the descriptor limit the default is derived from.
	Clients         int64  `json:"clients"`
	ConnectionLimit int64  `json:"connection_limit"`
	FileLimit       uint64 `json:"file_limit"`
	// Kernel is the kernel path's activity; nil on the userspace path.
	Kernel     *KernelStatus `json:"kernel,omitempty"`
	Goroutines int           `json:"goroutines"`
	// IdleWorkers of Goroutines wait for the next connection to serve (they end after 10 s).
	IdleWorkers int `json:"idle_workers"`
	// InProgress counts client connections and tunnels being served now; 0 when idle.
	InProgress int                `json:"in_progress"`
	Links      []links.LinkStatus `json:"links"`
	Routes     []RouteStatus      `json:"routes"`
	Services   []ServiceStatus    `json:"services"`
	Connectors []ConnectorStatus  `json:"connectors"`
	Listeners  []ListenerStatus   `json:"listeners"`
}

// KernelStatus is what the kernel (sockmap) path is doing.
type KernelStatus struct {
	Active   int64  `json:"active"`   // connections on the kernel path now
	Promoted uint64 `json:"promoted"` // connections moved to it since start
	// Demoted counts directions sent back to userspace because their reader was slower than
	// their writer by more than max-kernel-backlog.
	Demoted uint64 `json:"demoted"`
	// Fallbacks counts, by reason, connections that stayed in userspace although the kernel
	// path was wanted.
	Fallbacks    map[string]uint64 `json:"fallbacks,omitempty"`
	BacklogBytes int64             `json:"backlog_bytes"` // redirected, not yet in the target's send buffer
	Error        string            `json:"error,omitempty"`
}

// RouteStatus is the least-cost route to one site.
type RouteStatus struct {
	Dest    string   `json:"dest"`
	NextHop string   `json:"next_hop"`
	Cost    int      `json:"cost"`
	Path    []string `json:"path"`
}

// ServiceStatus shows, for one routing key, every candidate in the order the next connection
// would try them, with the score that put it there.
type ServiceStatus struct {
	RoutingKey string            `json:"routing_key"`
	Candidates []CandidateStatus `json:"candidates"`
	// Withdrawn are local connectors for the key that are down: not candidates until their
	// probe succeeds again.
	Withdrawn []CandidateStatus `json:"withdrawn,omitempty"`
}

// CandidateStatus is one place a connection can go; Score = PathCost + Open.
type CandidateStatus struct {
	Target   string `json:"target"`
	Local    bool   `json:"local"`
	NextHop  string `json:"next_hop,omitempty"` // remote: the neighbor the tunnel goes to
	PathCost int    `json:"path_cost"`
	Open     int    `json:"open"`
	Score    int    `json:"score"`
	// Health is "up" for a candidate (a local connector answering its probe, a reachable site
	// advertising the key), "down" for a withdrawn local connector.
	Health string `json:"health"`
}

// ConnectorStatus is one local backend and its health.
type ConnectorStatus struct {
	Name       string `json:"name"`
	RoutingKey string `json:"routing_key"`
	Address    string `json:"address"`
	Healthy    bool   `json:"healthy"`
}

// ListenerStatus is one client listener; Accepting is false while no candidate exists.
type ListenerStatus struct {
	Name       string `json:"name"`
	RoutingKey string `json:"routing_key"`
	Address    string `json:"address"`
	Accepting  bool   `json:"accepting"`
	// MaxConnections and IdleTimeout are the Listener's settings (0: none).
	MaxConnections int    `json:"max_connections,omitempty"`
	IdleTimeout    string `json:"idle_timeout,omitempty"`
}

func kernelStatus(k *datapath.Kernel) *KernelStatus {
	ks := &KernelStatus{Active: k.Active.Load(), Promoted: k.Promoted.Load(), Demoted: k.Demoted.Load(), Fallbacks: map[string]uint64{}}
	k.Fallbacks.Range(func(reason, n any) bool {
		ks.Fallbacks[reason.(string)] = n.(*atomic.Uint64).Load()
		return true
	})
	st, err := k.Stats()
	ks.BacklogBytes = st.Backlog
	if err != nil {
		ks.Error = err.Error()
	}
	return ks
}

// Status reports the site's state now.
func (g *Gateway) Status() Status {
	st := Status{Site: g.self, DataPath: g.path.Mode(), DataPathNote: g.pathNote, Warnings: g.warnings,
		Clients: g.admission.open.Load(), ConnectionLimit: g.admission.limit, FileLimit: g.fileLimit, Goroutines: runtime.NumGoroutine(), IdleWorkers: g.workers.Idle(), Links: g.links.Status()}
	if k, ok := g.path.(*datapath.Kernel); ok {
		st.Kernel = kernelStatus(k)
	}
	g.activeMu.Lock()
	st.InProgress = len(g.active)
	g.activeMu.Unlock()
	routes := g.links.Routes()
	for _, r := range routes.Routes() {
		st.Routes = append(st.Routes, RouteStatus{Dest: r.Dest, NextHop: r.NextHop, Cost: r.Cost, Path: r.Path})
	}
	keys := map[string]bool{}
	for _, l := range g.listeners {
		keys[l.cfg.RoutingKey] = true
		st.Listeners = append(st.Listeners, ListenerStatus{Name: l.cfg.Name, RoutingKey: l.cfg.RoutingKey, Address: l.cfg.Address(), Accepting: l.isAccepting(),
			MaxConnections: l.cfg.MaxConnections, IdleTimeout: durationOrEmpty(l.cfg.IdleTimeout)})
	}
	for key, cs := range g.connectors {
		keys[key] = true
		for _, c := range cs {
			st.Connectors = append(st.Connectors, ConnectorStatus{Name: c.cfg.Name, RoutingKey: key, Address: c.cfg.Address(), Healthy: c.healthy.Load()})
		}
	}
	sort.Slice(st.Connectors, func(i, j int) bool { return st.Connectors[i].Name < st.Connectors[j].Name })
	for key := range keys {
		g.pickMu.Lock()
		ranked := selector.Rank(g.candidates(key, true), g.turn+1)
		g.pickMu.Unlock()
		svc := ServiceStatus{RoutingKey: key, Candidates: []CandidateStatus{}}
		for _, c := range ranked {
			cs := CandidateStatus{Target: c.Target, Local: c.Local, PathCost: c.PathCost, Open: c.Open, Score: c.Score(), Health: "up"}
			if !c.Local {
				if r, ok := routes.Lookup(c.Target); ok {
					cs.NextHop = r.NextHop
				}
			}
			svc.Candidates = append(svc.Candidates, cs)
		}
		for _, c := range g.connectors[key] {
			if !c.healthy.Load() {
				svc.Withdrawn = append(svc.Withdrawn, CandidateStatus{Target: c.cfg.Name, Local: true, Open: g.open.Open(key, c.target()), Health: "down"})
			}
		}
		sort.Slice(svc.Withdrawn, func(i, j int) bool { return svc.Withdrawn[i].Target < svc.Withdrawn[j].Target })
		st.Services = append(st.Services, svc)
	}
	sort.Slice(st.Services, func(i, j int) bool { return st.Services[i].RoutingKey < st.Services[j].RoutingKey })
	return st
}

// handlePprof adds Go's profiles under /debug/pprof/ to mux. They are registered here, not
// through net/http/pprof's init on http.DefaultServeMux, so that they exist only on the admin
// server and only when the pprof setting is on.
func handlePprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index) // also serves every named profile (heap, goroutine, ...)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// serveAdmin serves the admin endpoints: /status (JSON), /metrics (Prometheus), /readyz and,
// with the pprof setting on, /debug/pprof/.
func (g *Gateway) serveAdmin() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(g.Status())
	})
	if g.metrics != nil {
		mux.Handle("GET /metrics", g.metrics.Handler())
	}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	if g.settings.Pprof {
		handlePprof(mux)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-g.ctx.Done()
		srv.Close()
	}()
	_ = srv.Serve(g.admin)
}

func durationOrEmpty(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}
