package netns

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
)

// TestIdleTimeoutResetsOnlyQuietConnections: on a listener with idle-timeout 2s, a connection
// that goes quiet after its first exchange is reset after 2 s (and within two sweeps more), one
// that sends a line every 400 ms keeps working for twice the timeout, and the reset is
// counted for the listener.
func TestIdleTimeoutResetsOnlyQuietConnections(t *testing.T) {
	const idle = 2 * time.Second
	lab := newLab(t)
	a, b := site(t, lab, "a"), site(t, lab, "b")
	link(t, lab, a, b, 1)
	a.Doc(fmt.Sprintf("kind: Listener\nmetadata: {name: quiet}\nspec: {routingKey: %s, host: 0.0.0.0, port: %d, settings: {idle-timeout: %s}}\n", svc, svcPort, idle))
	b.Connector("backend", svc, beAddr)
	backend(t, b, "b", beAddr)
	start(t, b, a)
	check(t, a.WaitCandidates(converged, svc, "b"))

	hold := func() *net.TCPConn {
		c, _, err := netlab.Hold(a, svcAddr, timeout)
		check(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	quiet, busy := hold(), hold()
	quietFrom := time.Now()

	reset := make(chan error, 1)
	go func() {
		_ = quiet.SetReadDeadline(time.Now().Add(3 * idle))
		_, err := quiet.Read(make([]byte, 1))
		reset <- err
	}()
	r := bufio.NewReader(busy)
	for i := 0; time.Since(quietFrom) < 2*idle; i++ {
		line := fmt.Sprintf("line %d\n", i)
		if _, err := busy.Write([]byte(line)); err != nil {
			t.Fatalf("the busy connection failed after %v: %v", time.Since(quietFrom), err)
		}
		_ = busy.SetReadDeadline(time.Now().Add(timeout))
		if got, err := r.ReadString('\n'); err != nil || got != line {
			t.Fatalf("the busy connection's echo after %v: %q, %v; want %q", time.Since(quietFrom), got, err, line)
		}
		time.Sleep(400 * time.Millisecond)
	}
	err := <-reset
	after := time.Since(quietFrom)
	if !isReset(err) {
		t.Fatalf("the quiet connection's read ended with %v after %v, want a reset", err, after)
	}
	// The sweeper looks once a second and starts counting when it first sees a connection:
	// the reset comes between the timeout and two sweeps later.
	if limit := idle + 2*time.Second + 500*time.Millisecond; after < idle || after > limit {
		t.Errorf("the quiet connection was reset after %v, want between %v and %v", after, idle, limit)
	}
	check(t, waitSamples(a, func(body string) error {
		return sampleIs(body, `skfwd_connections_idle_reset_total{listener="quiet",site="a"}`, 1)
	}))
}
