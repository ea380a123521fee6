package netns

import (
	"errors"
	"io"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
	"github.com/skfwd/skfwd/pkg/gateway"
)

const (
	svc       = "backend"
	svcPort   = 8080
	svcAddr   = "127.0.0.1:8080"
	beAddr    = "127.0.0.1:9000"
	timeout   = 5 * time.Second
	converged = 10 * time.Second
)

// twoBackends builds the everyday topology: an ingress site "a" with only a listener, linked
// to "b" (cost costB) and "c" (cost costC), each running a backend named after its site.
func twoBackends(t *testing.T, costB, costC int) (lab *netlab.Lab, a, b, c *netlab.Site, ifB, ifC string, beB, beC *netlab.Backend) {
	lab = newLab(t)
	a, b, c = site(t, lab, "a"), site(t, lab, "b"), site(t, lab, "c")
	ifB, _ = link(t, lab, a, b, costB)
	ifC, _ = link(t, lab, a, c, costC)
	a.Listener("backend", svc, svcPort)
	b.Connector("backend", svc, beAddr)
	c.Connector("backend", svc, beAddr)
	beB, beC = backend(t, b, "b", beAddr), backend(t, c, "c", beAddr)
	start(t, b, c, a)
	check(t, a.WaitCandidates(converged, svc, "b", "c"))
	return
}

func holdN(t *testing.T, s *netlab.Site, n int) (map[string]int, []*net.TCPConn) {
	t.Helper()
	got := map[string]int{}
	var conns []*net.TCPConn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, name, err := netlab.Hold(s, svcAddr, timeout)
		check(t, err)
		conns = append(conns, c)
		got[name]++
	}
	return got, conns
}

func closeAll(conns []*net.TCPConn) {
	for _, c := range conns {
		c.Close()
	}
}

func TestCostSplitWithHeldConnections(t *testing.T) {
	_, a, _, _, _, _, _, _ := twoBackends(t, 1, 50)
	baseline := must[gateway.Status](t)(a.Status())
	for _, n := range []int{100, 200} {
		got, conns := holdN(t, a, n)
		// Scores equalize at 1+b = 50+c with b+c = n: b = (n+49)/2, c = (n-49)/2.
		wantB, wantC := (n+49)/2, (n-49)/2
		if abs(got["b"]-wantB) > 1 || abs(got["c"]-wantC) > 1 || got["b"]+got["c"] != n {
			t.Errorf("%d held connections: b=%d c=%d, want b=%d c=%d (±1)", n, got["b"], got["c"], wantB, wantC)
		}
		st := must[gateway.Status](t)(a.Status())
		for _, cand := range st.Services[0].Candidates {
			if cand.Open != got[cand.Target] {
				t.Errorf("status shows %d open to %s, clients hold %d", cand.Open, cand.Target, got[cand.Target])
			}
		}
		closeAll(conns)
		quiesced(t, a, baseline)
	}
}

func TestMultiHopCostSum(t *testing.T) {
	lab := newLab(t)
	a, tr, d, e := site(t, lab, "a"), site(t, lab, "t"), site(t, lab, "d"), site(t, lab, "e")
	link(t, lab, a, tr, 2)
	link(t, lab, tr, d, 3)
	link(t, lab, a, e, 4)
	a.Listener("backend", svc, svcPort)
	d.Connector("backend", svc, beAddr)
	e.Connector("backend", svc, beAddr)
	backend(t, d, "d", beAddr)
	backend(t, e, "e", beAddr)
	start(t, d, e, tr, a)
	check(t, a.WaitCandidates(converged, svc, "d", "e"))
	st := must[gateway.Status](t)(a.Status())
	var toD *gateway.RouteStatus
	for i := range st.Routes {
		if st.Routes[i].Dest == "d" {
			toD = &st.Routes[i]
		}
	}
	if toD == nil || toD.Cost != 5 || toD.NextHop != "t" || len(toD.Path) != 3 {
		t.Fatalf("route a->d = %+v, want cost 5 via t, path a t d", toD)
	}
	baseline := st
	// e scores 4+open, d 5+open: held connections split so e stays one ahead.
	got, conns := holdN(t, a, 21)
	if got["e"] != 11 || got["d"] != 10 {
		t.Errorf("21 held connections: e=%d d=%d, want e=11 d=10", got["e"], got["d"])
	}
	// Bytes through the transit site arrive intact both ways.
	c, name, err := netlab.Hold(a, svcAddr, timeout)
	check(t, err)
	if name != "e" {
		t.Fatalf("next connection went to %s, want e (score 4+11 vs 5+10 ties, lower path cost wins)", name)
	}
	c.Close()
	closeAll(conns)
	quiesced(t, a, baseline)
	conns = nil
	for range 10 {
		c, name, err := netlab.Hold(a, svcAddr, timeout)
		check(t, err)
		conns = append(conns, c)
		if name == "d" {
			check(t, netlab.Xfer(c, 64<<20, 64<<20, 11, 12))
			closeAll(conns)
			quiesced(t, a, baseline)
			quiesced(t, tr, must[gateway.Status](t)(tr.Status()))
			return
		}
	}
	t.Fatal("no connection reached d through the transit site")
}

func TestBackupTakesNothingThenEverything(t *testing.T) {
	_, a, p, _, _, _, _, _ := twoBackends(t, 1, 9999)
	got, held := holdN(t, a, 300)
	if got["c"] != 0 {
		t.Fatalf("backup at cost 9999 took %d of 300 connections while the primary was up", got["c"])
	}
	p.Kill() // the primary site dies: process gone, links closed by the kernel
	check(t, a.WaitCandidates(converged, svc, "c"))
	// Connections that were spliced to the dead site end: reset, never left hanging.
	for _, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("connection to the dead site still open after its link died: %v", err)
		}
	}
	closeAll(held)
	for range 20 {
		name, err := netlab.Hello(a, svcAddr, timeout)
		check(t, err)
		if name != "c" {
			t.Fatalf("connection went to %s after the primary died, want the backup c", name)
		}
	}
}

func TestBackendKilledUnderLoad(t *testing.T) {
	_, a, _, _, _, _, beB, _ := twoBackends(t, 1, 2)
	baseline := must[gateway.Status](t)(a.Status())
	stop := make(chan struct{})
	var killed time.Time
	go func() {
		time.Sleep(time.Second)
		killed = time.Now()
		beB.StopListening()
		time.Sleep(2 * time.Second)
		close(stop)
	}()
	events := netlab.Load(a, svcAddr, 8, timeout, stop)
	all := netlab.Summarize(events, time.Time{}, time.Time{})
	before := netlab.Summarize(events, time.Time{}, killed)
	after := netlab.Summarize(events, killed.Add(100*time.Millisecond), time.Time{})
	t.Logf("load: %d connections, %d failed; before kill %v; after kill %v; max latency %v",
		all.Total, all.Failed, before.PerBackend, after.PerBackend, all.MaxLatency)
	if all.Failed != 0 {
		t.Errorf("%d client connections failed when a backend died: %v", all.Failed, all.FirstFailures)
	}
	if before.PerBackend["b"] == 0 || before.PerBackend["c"] == 0 {
		t.Errorf("before the kill both backends should take load: %v", before.PerBackend)
	}
	if after.PerBackend["b"] != 0 || after.PerBackend["c"] == 0 {
		t.Errorf("after the kill all load must move to c: %v", after.PerBackend)
	}
	quiesced(t, a, baseline)
}

func TestSilentLinkCutReroutes(t *testing.T) {
	_, a, _, _, ifB, _, _, _ := twoBackends(t, 1, 2)
	// A connection spliced over the link that will be cut.
	held, name, err := netlab.Hold(a, svcAddr, timeout)
	check(t, err)
	defer held.Close()
	if name != "b" {
		t.Fatalf("first connection went to %s, want b (cost 1)", name)
	}
	stop := make(chan struct{})
	var cut time.Time
	go func() {
		time.Sleep(time.Second)
		cut = time.Now()
		if err := a.SetLink(ifB, false); err != nil {
			t.Error(err)
		}
		time.Sleep(2500 * time.Millisecond)
		close(stop)
	}()
	events := netlab.Load(a, svcAddr, 8, timeout, stop)
	all := netlab.Summarize(events, time.Time{}, time.Time{})
	// Connections that went to b just after the cut wait for the link to be declared dead and
	// are then retried at c: the longest such wait is the reroute time.
	afterCut := netlab.Summarize(events, cut, time.Time{})
	late := netlab.Summarize(events, cut.Add(1100*time.Millisecond), time.Time{})
	t.Logf("silent cut: %d connections, %d failed; connections started after the cut waited at most %v; after 1.1s: %v",
		all.Total, all.Failed, afterCut.MaxLatency, late.PerBackend)
	if all.Failed != 0 {
		t.Errorf("%d client connections failed across a silent link cut: %v", all.Failed, all.FirstFailures)
	}
	if afterCut.MaxLatency > 1200*time.Millisecond {
		t.Errorf("a connection started after the cut waited %v, want rerouted within 1s (+0.2s slack)", afterCut.MaxLatency)
	}
	if late.PerBackend["b"] != 0 {
		t.Errorf("connections still reached b after the link was declared dead: %v", late.PerBackend)
	}
	_ = held.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := held.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("connection spliced over the dead link still open: %v", err)
	}
}

func TestNoCandidateRefusesAtOnceAndRecovers(t *testing.T) {
	lab := newLab(t)
	n := twoSites(t, lab, nil)
	a := n.a
	be := n.backend
	check(t, a.WaitCandidates(converged, svc, "b"))
	be.StopListening()
	check(t, a.WaitCandidates(converged, svc))
	check(t, a.WaitFor(timeout, "listener closed", func(st gateway.Status) bool { return !st.Listeners[0].Accepting }))
	began := time.Now()
	_, err := a.Dial(svcAddr, timeout)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("with no candidate, connect gave %v, want connection refused", err)
	}
	if d := time.Since(began); d > 100*time.Millisecond {
		t.Errorf("refusal took %v, want immediate", d)
	}
	check(t, be.Start())
	check(t, a.WaitCandidates(converged, svc, "b"))
	check(t, a.WaitFor(timeout, "listener accepting", func(st gateway.Status) bool { return st.Listeners[0].Accepting }))
	name, err := netlab.Hello(a, svcAddr, timeout)
	check(t, err)
	if name != "b" {
		t.Fatalf("after recovery the connection went to %s", name)
	}
}

func TestProtocolsTransferAndClose(t *testing.T) {
	_, a, _, _, _, _, beB, _ := twoBackends(t, 1, 50)
	baseline := must[gateway.Status](t)(a.Status())

	t.Run("server speaks first", func(t *testing.T) {
		name, err := netlab.Hello(a, svcAddr, timeout)
		check(t, err)
		if name != "b" {
			t.Fatalf("banner from %q, want b", name)
		}
	})
	t.Run("client speaks first and half-closes before the answer", func(t *testing.T) {
		c := must[*net.TCPConn](t)(a.Dial(svcAddr, timeout))
		defer c.Close()
		_, err := c.Write([]byte("hello across sites\n"))
		check(t, err)
		check(t, c.CloseWrite())
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		got, err := io.ReadAll(c)
		check(t, err)
		if string(got) != "b\nhello across sites\n" {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("checksummed 1 GiB each way", func(t *testing.T) {
		c, _, err := netlab.Hold(a, svcAddr, timeout)
		check(t, err)
		defer c.Close()
		began := time.Now()
		check(t, netlab.Xfer(c, 1<<30, 1<<30, 1, 2))
		t.Logf("1 GiB each way at once in %v", time.Since(began).Round(time.Millisecond))
	})
	t.Run("bulk moves to a tunnel, checksummed both ways, after either half-close", func(t *testing.T) {
		moved := func() float64 {
			v, err := sampleValue(scrape(t, a), `skfwd_connection_moves_total{result="moved",site="a"}`)
			check(t, err)
			return v
		}
		before := moved()
		// 16 MiB: 16 times move-bytes, and quick enough under emulation (make vm-test).
		for _, x := range []struct{ up, down int64 }{{16 << 20, 16 << 20}, {0, 16 << 20}, {16 << 20, 0}} {
			c, _, err := netlab.Hold(a, svcAddr, timeout)
			check(t, err)
			err = netlab.Xfer(c, x.up, x.down, 3, 4)
			c.Close()
			if err != nil {
				t.Fatalf("%d bytes up, %d down: %v", x.up, x.down, err)
			}
		}
		if got := moved() - before; got != 3 {
			t.Fatalf("%v connections moved to a tunnel, want 3", got)
		}
	})
	t.Run("backend half-closes first", func(t *testing.T) {
		c, _, err := netlab.Hold(a, svcAddr, timeout)
		check(t, err)
		defer c.Close()
		_, err = c.Write([]byte("finfirst\n"))
		check(t, err)
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		if n, err := c.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Fatalf("want end of stream from the backend, got %d bytes, %v", n, err)
		}
		_, err = c.Write(make([]byte, 12345))
		check(t, err)
		check(t, c.CloseWrite())
		deadline := time.Now().Add(timeout)
		for beB.FinFirstReceived.Load() != 12345 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := beB.FinFirstReceived.Load(); got != 12345 {
			t.Fatalf("backend received %d bytes after its FIN, want 12345", got)
		}
	})
	t.Run("client reset reaches the backend", func(t *testing.T) {
		c, _, err := netlab.Hold(a, svcAddr, timeout)
		check(t, err)
		// Health probes connect and close at once, and their close resets the backend's side
		// too (its banner is unread): only a reset of a connection that lived as long as ours
		// is ours.
		const held = 300 * time.Millisecond
		time.Sleep(held)
		errsBefore := len(beB.Errors())
		_ = c.SetLinger(0)
		c.Close()
		reset := func() bool {
			return slices.ContainsFunc(beB.Errors()[errsBefore:], func(e netlab.ConnError) bool {
				return e.Lived >= held && errors.Is(e.Err, syscall.ECONNRESET)
			})
		}
		deadline := time.Now().Add(timeout)
		for !reset() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !reset() {
			t.Fatalf("backend errors %v, want a connection reset", beB.Errors()[errsBefore:])
		}
	})
	t.Run("backend reset reaches the client", func(t *testing.T) {
		c, _, err := netlab.Hold(a, svcAddr, timeout)
		check(t, err)
		defer c.Close()
		beB.ResetAll()
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client read %v, want connection reset", err)
		}
	})
	quiesced(t, a, baseline)
}

func TestWrongCredentialRejected(t *testing.T) {
	lab := newLab(t)
	n := twoSites(t, lab, func(a, b *netlab.Site) {
		// A Secret that is not the one b issued: same credential name, other bytes.
		check(t, tamperSecret(a.ConfigDir()))
	})
	a, b := n.a, n.b
	err := a.WaitFor(3*time.Second, "link up", func(st gateway.Status) bool {
		return len(st.Links) == 1 && st.Links[0].State == "up"
	})
	if err == nil {
		t.Fatal("link came up with a secret the accepting site never issued")
	}
	st := must[gateway.Status](t)(a.Status())
	if len(st.Links) != 1 || st.Links[0].State != "connecting" || !contains(st.Links[0].Error, "proof") {
		t.Fatalf("dialer status %+v, want the link connecting with a proof error", st.Links)
	}
	if !logContains(b.LogPath, "link connection rejected") {
		t.Fatal("accepting site did not log the rejected connection")
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestAccessLogOnAndOff: with access-log off (the default) a connection that ends well leaves
// no line and one that fails does; with it on, every connection leaves one.
func TestAccessLogOnAndOff(t *testing.T) {
	lab := newLab(t)
	a, b := site(t, lab, "a"), site(t, lab, "b")
	link(t, lab, a, b, 1)
	a.Listener("backend", svc, svcPort)
	b.Connector("backend", svc, beAddr)
	b.Set("access-log", "on")
	backend(t, b, "b", beAddr)
	start(t, b, a)
	check(t, a.WaitCandidates(converged, svc, "b"))

	if _, err := netlab.Hello(a, svcAddr, timeout); err != nil {
		t.Fatal(err)
	}
	c, _, err := netlab.Hold(a, svcAddr, timeout)
	check(t, err)
	_ = c.SetLinger(0)
	c.Close() // a reset: a failure, logged at a too
	deadline := time.Now().Add(timeout)
	for !(logContains(a.LogPath, "outcome=reset") && logContains(b.LogPath, "outcome=ok")) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !logContains(a.LogPath, "outcome=reset") {
		t.Error("site a (access-log off) did not log the reset connection")
	}
	if logContains(a.LogPath, "outcome=ok") {
		t.Error("site a (access-log off) logged a connection that ended well")
	}
	if !logContains(b.LogPath, "outcome=ok") {
		t.Error("site b (access-log on) did not log the connection that ended well")
	}
}
