package netns

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
	"github.com/skfwd/skfwd/pkg/gateway"
)

// TestIdleFloodRefusedAtTheLimit: 1000 clients connect to a listener limited to 200 and send
// nothing. The first 200 are held (a socket at each gateway, nothing more); the other 800 are
// reset at once and counted; clients of another listener keep working throughout; and once
// the idle clients leave, the gateways' descriptors and counts come back.
func TestIdleFloodRefusedAtTheLimit(t *testing.T) {
	const limit, flood = 200, 1000
	lab := newLab(t)
	a, b := site(t, lab, "a"), site(t, lab, "b")
	link(t, lab, a, b, 1)
	a.Listener("backend", svc, svcPort)
	a.Doc(fmt.Sprintf("kind: Listener\nmetadata: {name: flooded}\nspec: {routingKey: flooded, host: 0.0.0.0, port: 8081, settings: {max-connections: \"%d\"}}\n", limit))
	b.Connector("backend", svc, beAddr)
	b.Connector("flooded", "flooded", beAddr)
	backend(t, b, "b", beAddr)
	start(t, b, a)
	check(t, a.WaitCandidates(converged, svc, "b"))
	check(t, a.WaitCandidates(converged, "flooded", "b"))
	fds := func(s *netlab.Site) int {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.Pid()))
		check(t, err)
		return len(ents)
	}
	fdsA, fdsB := fds(a), fds(b)

	var held []interface{ Close() error }
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range flood {
		c, err := a.Dial("127.0.0.1:8081", timeout)
		if isReset(err) {
			continue // refused so fast that connect(2) saw the reset
		}
		check(t, err)
		held = append(held, c)
	}
	refused := `skfwd_connections_refused_total{listener="flooded",reason="listener-limit",site="a"}`
	check(t, waitSamples(a, func(body string) error { return sampleIs(body, refused, flood-limit) }))
	st := must[gateway.Status](t)(a.Status())
	if st.Clients != limit {
		t.Errorf("site a holds %d client connections, want the listener's limit %d", st.Clients, limit)
	}
	// Other clients are served meanwhile.
	for i := range 50 {
		if _, err := netlab.Hello(a, svcAddr, timeout); err != nil {
			t.Fatalf("client %d of the other listener during the flood: %v", i, err)
		}
	}
	// A held idle client costs a socket at each gateway (and the ingress's stream, no socket).
	if d := fds(a) - fdsA; d > limit+20 {
		t.Errorf("site a holds %d more descriptors during the flood, want about %d", d, limit)
	}
	if d := fds(b) - fdsB; d > limit+20 {
		t.Errorf("site b holds %d more descriptors during the flood, want about %d", d, limit)
	}

	for _, c := range held {
		c.Close()
	}
	held = nil
	deadline := time.Now().Add(converged)
	for (fds(a) > fdsA+5 || fds(b) > fdsB+5 || must[gateway.Status](t)(a.Status()).Clients != 0) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if fds(a) > fdsA+5 || fds(b) > fdsB+5 {
		t.Errorf("descriptors after the flood: a %d (before %d), b %d (before %d)", fds(a), fdsA, fds(b), fdsB)
	}
	if n := must[gateway.Status](t)(a.Status()).Clients; n != 0 {
		t.Errorf("site a still counts %d client connections after they all left", n)
	}
}

// TestDestinationLimitRefusesToTheIngress: a destination at its max-connections refuses new
// streams with reason over-limit, so the ingress moves on to another candidate (here the only
// other one, c) and the client never notices.
func TestDestinationLimitRefusesToTheIngress(t *testing.T) {
	lab := newLab(t)
	a, b, c := site(t, lab, "a"), site(t, lab, "b"), site(t, lab, "c")
	link(t, lab, a, b, 1)
	link(t, lab, a, c, 50)
	b.Set("max-connections", "3")
	a.Listener("backend", svc, svcPort)
	b.Connector("backend", svc, beAddr)
	c.Connector("backend", svc, beAddr)
	backend(t, b, "b", beAddr)
	backend(t, c, "c", beAddr)
	start(t, b, c, a)
	check(t, a.WaitCandidates(converged, svc, "b", "c"))
	got := map[string]int{}
	for range 6 {
		conn, name, err := netlab.Hold(a, svcAddr, timeout)
		check(t, err)
		defer conn.Close()
		got[name]++
	}
	if got["b"] != 3 || got["c"] != 3 {
		t.Fatalf("held connections went %v, want 3 to b (its limit) and the rest to c", got)
	}
	check(t, waitSamples(b, func(body string) error {
		v, err := sampleValue(body, `skfwd_requests_refused_total{reason="over-limit",routing_key="backend",site="b",source_site="a"}`)
		if err == nil && v < 1 {
			err = fmt.Errorf("no over-limit refusal counted at b")
		}
		return err
	}))
}
