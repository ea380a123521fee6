package gateway

import (
	"sort"
	"strings"

	"github.com/skfwd/skfwd/pkg/datapath"
	"github.com/skfwd/skfwd/pkg/metrics"
)

// configureMetrics exports at 0 the series the configuration names. It runs before any link
// can come up, so the first link's LinkUp already knows the connectors.
func (g *Gateway) configureMetrics() {
	var keys []string
	for _, l := range g.listeners {
		keys = append(keys, l.cfg.RoutingKey)
	}
	var connectors []metrics.Connector
	for _, c := range g.cfg.Connectors {
		connectors = append(connectors, metrics.Connector{Name: c.Name, RoutingKey: c.RoutingKey})
	}
	g.metrics.Configured(g.self, keys, connectors)
}

// remoteTargetMetrics exports at 0 the series of every remote site that is a candidate for a
// key listened for here, once routing reaches it.
func (g *Gateway) remoteTargetMetrics() {
	if g.metrics == nil {
		return
	}
	routes := g.links.Routes()
	for _, l := range g.listeners {
		for _, r := range routes.Advertisers(l.cfg.RoutingKey) {
			g.metrics.Target(l.cfg.RoutingKey, r.Dest, false)
		}
	}
}

// watchMetrics points the metrics' scrape-time collector at this gateway and, when the data
// path keeps counts in BPF maps, at the data path.
func (g *Gateway) watchMetrics() {
	if g.metrics == nil {
		return
	}
	var keys []string
	for _, l := range g.listeners {
		keys = append(keys, l.cfg.RoutingKey)
	}
	// Requests from other sites name routing keys and sites of their own choosing: only those
	// this site's configuration and routing know get series of their own.
	for key := range g.connectors {
		keys = append(keys, key)
	}
	g.metrics.SetBounds(keys, func(site string) bool {
		return site == g.self || g.links.Routes().Reachable(site)
	})
	var kernel metrics.KernelSource
	if k, ok := g.path.(*datapath.Kernel); ok {
		kernel = kernelSource{k}
	}
	g.metrics.SetSource(g, kernel)
}

// kernelSource reads the kernel path's maps for the metrics.
type kernelSource struct{ k *datapath.Kernel }

func (s kernelSource) KernelState() (metrics.KernelState, error) {
	st, err := s.k.Stats()
	ks := metrics.KernelState{Bytes: st.Bytes, Backlog: st.Backlog}
	for _, m := range st.Maps {
		ks.Maps = append(ks.Maps, metrics.MapUsage{Name: m.Name, Entries: m.Entries, Capacity: m.Capacity})
	}
	return ks, err
}

// MetricsState implements metrics.Source: the site's state at a scrape, from the same data as
// Status.
func (g *Gateway) MetricsState() metrics.State {
	st := g.Status()
	ms := metrics.State{DataPath: st.DataPath, InProgress: st.InProgress}
	g.open.Each(func(key, target string, n int) {
		o := metrics.Open{RoutingKey: key, DestSite: target, N: n}
		if name, local := strings.CutPrefix(target, "@"); local {
			o.DestSite, o.Connector = g.self, name
		}
		ms.Open = append(ms.Open, o)
	})
	// Every candidate shows its count, 0 included, so the open-connections panel has a value
	// on an idle network: a listened key's candidates, and the local connectors of a key only
	// served here (its connections come from other sites).
	counted := map[metrics.Open]bool{}
	for _, o := range ms.Open {
		o.N = 0
		counted[o] = true
	}
	listened := map[string]bool{}
	for _, l := range st.Listeners {
		listened[l.RoutingKey] = true
	}
	for _, svc := range st.Services {
		for _, c := range svc.Candidates {
			o := metrics.Open{RoutingKey: svc.RoutingKey, DestSite: c.Target}
			if c.Local {
				o.DestSite, o.Connector = g.self, c.Target
			}
			if (c.Local || listened[svc.RoutingKey]) && !counted[o] {
				counted[o] = true
				ms.Open = append(ms.Open, o)
			}
		}
	}
	sort.Slice(ms.Open, func(i, j int) bool {
		a, b := ms.Open[i], ms.Open[j]
		return a.RoutingKey+"\x00"+a.DestSite+"\x00"+a.Connector < b.RoutingKey+"\x00"+b.DestSite+"\x00"+b.Connector
	})
	for _, l := range st.Listeners {
		ms.Listeners = append(ms.Listeners, metrics.Listener{Name: l.Name, RoutingKey: l.RoutingKey, Accepting: l.Accepting})
	}
	for _, svc := range st.Services {
		if !listened[svc.RoutingKey] {
			continue // a key only served here has no selection to show
		}
		s := metrics.Service{RoutingKey: svc.RoutingKey}
		for _, c := range svc.Candidates {
			mc := metrics.Candidate{DestSite: c.Target, PathCost: c.PathCost, Score: c.Score}
			if c.Local {
				mc.DestSite, mc.Connector = g.self, c.Target
			}
			s.Candidates = append(s.Candidates, mc)
		}
		ms.Services = append(ms.Services, s)
	}
	for _, c := range st.Connectors {
		ms.Connectors = append(ms.Connectors, metrics.Connector{Name: c.Name, RoutingKey: c.RoutingKey, Up: c.Healthy})
	}
	for _, l := range st.Links {
		ms.Links = append(ms.Links, metrics.Link{Name: l.Name, Peer: l.Peer, Role: l.Role, Up: l.State == "up",
			Cost: l.Cost, RTT: l.RTT, IdleOwn: l.IdleTunnels, IdlePeer: l.PeerTunnels, Active: l.Active})
	}
	for _, r := range st.Routes {
		ms.Routes = append(ms.Routes, metrics.Route{Dest: r.Dest, NextHop: r.NextHop, Cost: r.Cost})
	}
	return ms
}
