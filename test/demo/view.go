package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/skfwd/skfwd/pkg/gateway"
)

const why = "  why: each new connection goes to the lowest score = path cost + connections open to that target;\n" +
	"       on a tie, the lower path cost wins. open counts, at this instant, the held connections and any short one in flight\n"

// candidate finds target among the candidates of the routing key in st.
func candidate(st gateway.Status, key, target string) (gateway.CandidateStatus, bool) {
	for _, svc := range st.Services {
		if svc.RoutingKey != key {
			continue
		}
		for _, c := range svc.Candidates {
			if !c.Local && c.Target == target {
				return c, true
			}
		}
	}
	return gateway.CandidateStatus{}, false
}

// ranking is the gateway's ordering for the routing key, e.g. "near 1+0=1, far 5+0=5".
func ranking(st gateway.Status, key string) (best string, text string) {
	var parts []string
	for _, svc := range st.Services {
		if svc.RoutingKey != key {
			continue
		}
		for i, c := range svc.Candidates {
			if i == 0 {
				best = c.Target
			}
			parts = append(parts, fmt.Sprintf("%s %d+%d=%d", c.Target, c.PathCost, c.Open, c.Score))
		}
	}
	return best, strings.Join(parts, ", ")
}

// paths reads the route to every target from a status: "client>hub>far".
func paths(st gateway.Status) map[string]string {
	out := map[string]string{}
	for _, r := range st.Routes {
		out[r.Dest] = strings.Join(r.Path, ">")
	}
	return out
}

// window counts the short connections that started in [from, to).
type window struct {
	total, failed int
	per           map[string]int
}

func countWindow(events []event, from, to time.Time) window {
	w := window{per: map[string]int{}}
	for _, ev := range events {
		if ev.start.Before(from) || !ev.start.Before(to) {
			continue
		}
		w.total++
		if ev.err != nil {
			w.failed++
			continue
		}
		w.per[ev.backend]++
	}
	return w
}

// printView prints one second of the live view: the client gateway's ranking as its status
// shows it now, and where the short connections of the last second actually went.
func (d *demo) printView(now time.Time, sec int) {
	st, stErr := d.client.Status()
	// Count the second's connections only once they have all ended: one in flight has no answer yet.
	for deadline := time.Now().Add(dialTimeout + time.Second); !d.log.settled(now) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	from, span := now.Add(-time.Second), "in the last second"
	if d.killedAt.After(from) {
		// The first view after the kill counts only what came after it.
		from, span = d.killedAt, fmt.Sprintf("since the kill (%v)", now.Sub(d.killedAt).Round(time.Millisecond))
	}
	w := countWindow(d.log.snapshot(), from, now)
	p := d.paths
	if stErr == nil {
		p = paths(st)
	}
	fmt.Fprintf(d.out, "\nt=%ds  where new connections from site %q go (routing key %q):\n", sec, "client", routingKey)
	fmt.Fprintf(d.out, "  %-6s  %-15s  %9s  %4s  %5s   %s\n", "target", "path", "path cost", "open", "score", "new connections started "+span)
	for _, target := range targets {
		share := fmt.Sprintf("%5d", w.per[target])
		if w.total > 0 {
			share += fmt.Sprintf("  %3d%%", (100*w.per[target]+w.total/2)/w.total)
		}
		path := p[target]
		if path == "" {
			path = "(no route)"
		}
		c, ok := candidate(st, routingKey, target)
		switch {
		case stErr != nil:
			fmt.Fprintf(d.out, "  %-6s  %-15s  %9s  %4s  %5s   %s\n", target, path, "?", "?", "?", share)
		case ok:
			fmt.Fprintf(d.out, "  %-6s  %-15s  %9d  %4d  %5d   %s\n", target, path, c.PathCost, c.Open, c.Score, share)
		default:
			fmt.Fprintf(d.out, "  %-6s  %-15s  %9s  %4s  %5s   %s   <- not a candidate: no healthy backend there\n", target, path, "-", "-", "-", share)
		}
	}
	if stErr != nil {
		fmt.Fprintf(d.out, "  (client's status unavailable: %v)\n", stErr)
		d.problem("status of site client unavailable at t=%ds: %v", sec, stErr)
	}
	failed := ""
	if w.failed > 0 {
		failed = fmt.Sprintf("   <- %d FAILED", w.failed)
	}
	fmt.Fprintf(d.out, "  %s: %d new connections, %d failed%s; held open by this demo: %s\n", span, w.total, w.failed, failed, d.heldLine())
	for _, note := range d.news(now) {
		fmt.Fprintf(d.out, "  >> %s\n", note)
	}
	fmt.Fprint(d.out, why)
}

// heldLine says where the held connections are: "near 17, far 13 (17 ended)".
func (d *demo) heldLine() string {
	open := map[string]int{}
	endedN := 0
	for _, h := range d.held {
		if done, _, _ := h.ended(); done {
			endedN++
			continue
		}
		open[h.target]++
	}
	var parts []string
	for _, t := range targets {
		parts = append(parts, fmt.Sprintf("%s %d", t, open[t]))
	}
	s := strings.Join(parts, ", ")
	if endedN > 0 {
		s += fmt.Sprintf(" (%d ended)", endedN)
	}
	return s
}

// news reports, once each, what happened since the kill: held connections ending and the
// client gateway dropping near from its candidates.
func (d *demo) news(now time.Time) []string {
	if d.killedAt.IsZero() {
		return nil
	}
	var out []string
	var fresh []*heldConn
	for _, h := range d.held {
		if done, at, _ := h.ended(); done && !h.reported && !at.After(now) {
			h.reported = true
			fresh = append(fresh, h)
		}
	}
	if len(fresh) > 0 {
		slices.SortFunc(fresh, func(a, b *heldConn) int { return a.endedAt.Compare(b.endedAt) })
		kinds := map[string]int{}
		for _, h := range fresh {
			kinds[fmt.Sprintf("%s on %s", howEnded(h.err), h.target)]++
		}
		var parts []string
		for k, n := range kinds {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
		slices.Sort(parts)
		out = append(out, fmt.Sprintf("held connections ended: %s (the last %v after the kill)",
			strings.Join(parts, ", "), fresh[len(fresh)-1].endedAt.Sub(d.killedAt).Round(time.Millisecond)))
	}
	if !d.reportedWithdrawn {
		select {
		case r := <-d.withdrawn:
			d.withdrawal = r
			d.reportedWithdrawn = true
			if r.err == nil {
				out = append(out, fmt.Sprintf("client's gateway dropped near from its candidates %v after the kill (near's connector failed, so near stopped advertising %q)",
					r.at.Sub(d.killedAt).Round(time.Millisecond), routingKey))
			}
		default:
		}
	}
	return out
}

// targets are the remote sites with a backend, in the order the view lists them.
var targets = []string{"near", "far"}
