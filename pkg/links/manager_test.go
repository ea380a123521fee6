package links_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/skfwd/skfwd/pkg/auth"
	"github.com/skfwd/skfwd/pkg/links"
	"github.com/skfwd/skfwd/pkg/routes"
)

// statusCore is the part of a LinkStatus that a test can predict exactly.
func statusCore(st links.LinkStatus) links.LinkStatus {
	return links.LinkStatus{Name: st.Name, Peer: st.Peer, Role: st.Role, State: st.State, Cost: st.Cost, Error: st.Error}
}

// waitUp waits until link name is up on both ends with effective cost, and each end routes to
// the other directly.
func waitUp(t T, dialer, acceptor *site, name string, cost int) {
	t.Helper()
	wantD := links.LinkStatus{Name: name, Peer: acceptor.name, Role: "dialer", State: "up", Cost: cost}
	wantA := links.LinkStatus{Name: name, Peer: dialer.name, Role: "acceptor", State: "up", Cost: cost}
	eventually(t, "link "+name+" up", func() (bool, string) {
		d, _ := dialer.status(name)
		a, _ := acceptor.status(name)
		rd, _ := dialer.m.Routes().Lookup(acceptor.name)
		ra, _ := acceptor.m.Routes().Lookup(dialer.name)
		ok := statusCore(d) == wantD && statusCore(a) == wantA &&
			reflect.DeepEqual(rd, routes.Route{Dest: acceptor.name, NextHop: acceptor.name, Cost: cost, Path: []string{dialer.name, acceptor.name}}) &&
			reflect.DeepEqual(ra, routes.Route{Dest: dialer.name, NextHop: dialer.name, Cost: cost, Path: []string{acceptor.name, dialer.name}})
		return ok, fmt.Sprintf("dialer status %+v, acceptor status %+v, dialer route %+v, acceptor route %+v", d, a, rd, ra)
	})
}

// waitPools waits until both tunnel pools of link name hold n idle tunnels, as counted at
// both ends: each end's idle tunnels are the other end's tunnels waiting for a request.
func waitPools(t T, dialer, acceptor *site, name string, n int) {
	t.Helper()
	var d, a links.LinkStatus
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		d, _ = dialer.status(name)
		a, _ = acceptor.status(name)
		if d.IdleTunnels == n && d.PeerTunnels == n && a.IdleTunnels == n && a.PeerTunnels == n {
			return
		}
	}
	t.Fatalf("tunnel pools of %s not full within %v: dialer idle %d waiting %d, acceptor idle %d waiting %d (want %d each)",
		name, waitLimit, d.IdleTunnels, d.PeerTunnels, a.IdleTunnels, a.PeerTunnels, n)
}

func waitAdvertisers(t T, s *site, key string, want []routes.Route) {
	t.Helper()
	eventually(t, fmt.Sprintf("site %s: advertisers of %q", s.name, key), func() (bool, string) {
		got := s.m.Routes().Advertisers(key)
		return reflect.DeepEqual(got, want), fmt.Sprintf("got %+v, want %+v", got, want)
	})
}

func TestLinkUpEffectiveCost(t *testing.T) {
	tests := []struct {
		name                string
		dialCost, grantCost int
		want                int
	}{
		{"equal costs", 1, 1, 1},
		{"dialer's cost higher", 7, 2, 7},
		{"grant's cost higher", 3, 10, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			a, b := newSite(t, "a", nil), newSite(t, "b", nil)
			if got := a.m.Routes().Routes(); got != nil {
				t.Fatalf("routes before any link: %+v, want none", got)
			}
			connect(a, b, "a-to-b", tt.dialCost, tt.grantCost)
			waitUp(t, a, b, "a-to-b", tt.want)
			waitPools(t, a, b, "a-to-b", 2)

			if n := len(a.m.Status()); n != 1 {
				t.Errorf("dialer lists %d links, want 1: %+v", n, a.m.Status())
			}
			if n := len(b.m.Status()); n != 1 {
				t.Errorf("acceptor lists %d links, want 1: %+v", n, b.m.Status())
			}
			if a.changes.Load() == 0 || b.changes.Load() == 0 {
				t.Errorf("OnChange calls: dialer %d, acceptor %d; want some on both", a.changes.Load(), b.changes.Load())
			}
			// Heartbeats are answered, so both ends measure a round-trip time.
			eventually(t, "RTT measured", func() (bool, string) {
				d, _ := a.status("a-to-b")
				ac, _ := b.status("a-to-b")
				return d.RTT > 0 && ac.RTT > 0, fmt.Sprintf("dialer RTT %v, acceptor RTT %v", d.RTT, ac.RTT)
			})
		})
	}
}

func TestKeysFloodOverOneLink(t *testing.T) {
	checkGoroutines(t)
	a, b := newSite(t, "a", nil), newSite(t, "b", nil)
	// Keys set before the link is up reach the peer once it is; duplicates count once.
	a.m.SetKeys([]string{"web", "db", "web"})
	connect(a, b, "ab", 2, 1)
	waitUp(t, a, b, "ab", 2)

	toA := routes.Route{Dest: "a", NextHop: "a", Cost: 2, Path: []string{"b", "a"}}
	toB := routes.Route{Dest: "b", NextHop: "b", Cost: 2, Path: []string{"a", "b"}}
	waitAdvertisers(t, b, "db", []routes.Route{toA})
	waitAdvertisers(t, b, "web", []routes.Route{toA})
	if got := a.m.Routes().Advertisers("web"); got != nil {
		t.Errorf("a's own keys in its advertisers: %+v, want none (local connectors are not routes)", got)
	}

	// From the accepting side to the dialing side.
	b.m.SetKeys([]string{"cache"})
	waitAdvertisers(t, a, "cache", []routes.Route{toB})

	// Withdrawals flood too.
	a.m.SetKeys([]string{"web"})
	waitAdvertisers(t, b, "db", nil)
	waitAdvertisers(t, b, "web", []routes.Route{toA})
	a.m.SetKeys(nil)
	waitAdvertisers(t, b, "web", nil)
	b.m.SetKeys(nil)
	waitAdvertisers(t, a, "cache", nil)
}

// TestKeysFloodOverThreeSites: a line a-b-c, where b accepts a's link and dials c's.
func TestKeysFloodOverThreeSites(t *testing.T) {
	checkGoroutines(t)
	a, b, c := newSite(t, "a", nil), newSite(t, "b", nil), newSite(t, "c", nil)
	// b-c first, and c's keys known at b, before a links to b: c's advertisement then reaches a
	// only because a new neighbor is sent everything b knows.
	connect(b, c, "bc", 1, 3)
	waitUp(t, b, c, "bc", 3)
	c.m.SetKeys([]string{"db"})
	waitAdvertisers(t, b, "db", []routes.Route{{Dest: "c", NextHop: "c", Cost: 3, Path: []string{"b", "c"}}})
	connect(a, b, "ab", 2, 1)
	waitUp(t, a, b, "ab", 2)
	a.m.SetKeys([]string{"web"})
	aToC := routes.Route{Dest: "c", NextHop: "b", Cost: 5, Path: []string{"a", "b", "c"}}
	cToA := routes.Route{Dest: "a", NextHop: "b", Cost: 5, Path: []string{"c", "b", "a"}}
	waitAdvertisers(t, a, "db", []routes.Route{aToC})
	waitAdvertisers(t, c, "web", []routes.Route{cToA})
	waitAdvertisers(t, b, "db", []routes.Route{{Dest: "c", NextHop: "c", Cost: 3, Path: []string{"b", "c"}}})
	waitAdvertisers(t, b, "web", []routes.Route{{Dest: "a", NextHop: "a", Cost: 2, Path: []string{"b", "a"}}})

	// A nearer advertiser comes first.
	b.m.SetKeys([]string{"db"})
	aToB := routes.Route{Dest: "b", NextHop: "b", Cost: 2, Path: []string{"a", "b"}}
	waitAdvertisers(t, a, "db", []routes.Route{aToB, aToC})

	// Tunnels go to neighbors only: c is two hops from a.
	if _, err := a.m.OpenTunnel(context.Background(), "c"); !errors.Is(err, links.ErrNoLink) {
		t.Errorf("OpenTunnel to a site two hops away: %v, want ErrNoLink", err)
	}
	if _, err := a.m.OpenTunnel(context.Background(), "nowhere"); !errors.Is(err, links.ErrNoLink) {
		t.Errorf("OpenTunnel to an unknown site: %v, want ErrNoLink", err)
	}

	// c going away takes its keys and routes with it, at a as well.
	c.stop()
	waitAdvertisers(t, a, "db", []routes.Route{aToB})
	eventually(t, "a's routes without c", func() (bool, string) {
		got := a.m.Routes().Routes()
		return reflect.DeepEqual(got, []routes.Route{aToB}), fmt.Sprintf("%+v", got)
	})
}

func TestOpenTunnel(t *testing.T) {
	tests := []struct {
		name       string
		byAcceptor bool // else the dialing side opens
		poolSize   int
		wantMisses uint64 // on the opening side, after the first tunnel
	}{
		{name: "dialer opens, pool ready", poolSize: 2, wantMisses: 0},
		{name: "acceptor opens, pool ready", byAcceptor: true, poolSize: 2, wantMisses: 0},
		{name: "dialer opens, no pool", poolSize: 0, wantMisses: 1},
		{name: "acceptor opens, no pool", byAcceptor: true, poolSize: 0, wantMisses: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			pool := func(o *links.Options) { o.PoolSize = tt.poolSize }
			a, b := newSite(t, "a", pool), newSite(t, "b", pool)
			connect(a, b, "ab", 1, 1)
			waitUp(t, a, b, "ab", 1)
			if tt.poolSize > 0 {
				waitPools(t, a, b, "ab", tt.poolSize)
			}
			opener, receiver := a, b
			if tt.byAcceptor {
				opener, receiver = b, a
			}
			// Several in turn, so used tunnels are replaced (or dialed on demand).
			for i := range 4 {
				ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
				out, err := opener.m.OpenTunnel(ctx, receiver.name)
				cancel()
				if err != nil {
					t.Fatalf("tunnel %d: OpenTunnel: %v", i, err)
				}
				t.Cleanup(func() {
					out.Conn.Close()
					out.Done()
				})
				if out.Peer != receiver.name || out.Link != "ab" {
					t.Errorf("tunnel %d: opened with Peer %q Link %q, want %q %q", i, out.Peer, out.Link, receiver.name, "ab")
				}
				if i == 0 {
					st, _ := opener.status("ab")
					if st.Misses != tt.wantMisses {
						t.Errorf("pool misses after the first tunnel = %d, want %d", st.Misses, tt.wantMisses)
					}
				}
				exchangeOver(t, out, opener, receiver)
			}
		})
	}
}

// exchangeOver sends a request on out, takes the tunnel at receiver's OnTunnel, answers it, and
// closes both ends in order, checking that each end is tracked as active until Done.
func exchangeOver(t T, out *links.Tunnel, opener, receiver *site) {
	t.Helper()
	req := "request from " + opener.name
	if _, err := out.Conn.Write([]byte(req)); err != nil {
		t.Fatalf("write request: %v", err)
	}
	in := receiver.nextTunnel(t)
	if in.Peer != opener.name || in.Link != out.Link {
		t.Errorf("received with Peer %q Link %q, want %q %q", in.Peer, in.Link, opener.name, out.Link)
	}
	got := waitRead(t, "request", readResult(in.Conn, len(req)))
	if got.err != nil || string(got.data) != req {
		t.Fatalf("received %q (err %v), want %q", got.data, got.err, req)
	}
	for _, s := range []*site{opener, receiver} {
		if st, _ := s.status(out.Link); st.Active != 1 {
			t.Errorf("site %s: %d active tunnels while one is in use, want 1", s.name, st.Active)
		}
	}
	reply := "reply from " + receiver.name
	if _, err := in.Conn.Write([]byte(reply)); err != nil {
		t.Fatalf("write reply: %v", err)
	}
	got = waitRead(t, "reply", readResult(out.Conn, len(reply)))
	if got.err != nil || string(got.data) != reply {
		t.Fatalf("opener received %q (err %v), want %q", got.data, got.err, reply)
	}

	// End to end: the opener's FIN reaches the receiver, and then the receiver's.
	if err := out.Conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got := waitRead(t, "end of request", readResult(in.Conn, 1)); !errors.Is(got.err, io.EOF) {
		t.Errorf("receiver after the opener's half-close: %q, %v; want EOF", got.data, got.err)
	}
	in.Conn.Close()
	in.Done()
	if got := waitRead(t, "end of reply", readResult(out.Conn, 1)); !errors.Is(got.err, io.EOF) {
		t.Errorf("opener after the receiver's close: %q, %v; want EOF", got.data, got.err)
	}
	out.Conn.Close()
	out.Done()
	for _, s := range []*site{opener, receiver} {
		if st, _ := s.status(out.Link); st.Active != 0 {
			t.Errorf("site %s: %d active tunnels after Done, want 0", s.name, st.Active)
		}
	}
}

func TestBadCredentialNeverComesUp(t *testing.T) {
	tests := []struct {
		name    string
		grant   bool
		secret  string
		wantErr error
	}{
		{name: "wrong secret", grant: true, secret: "not the secret", wantErr: auth.ErrBadProof},
		{name: "unknown credential", grant: false, secret: "secret", wantErr: auth.ErrUnknownCredential},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			a, b := newSite(t, "a", nil), newSite(t, "b", nil)
			if tt.grant {
				b.grant("ab", []byte("secret"), 1)
			}
			a.m.Dial(links.DialSpec{Name: "ab", Cost: 4, Endpoints: []string{b.addr}, Secret: []byte(tt.secret)})

			eventually(t, "dial error in status", func() (bool, string) {
				st, _ := a.status("ab")
				return strings.Contains(st.Error, tt.wantErr.Error()), fmt.Sprintf("%+v", st)
			})
			// It keeps retrying, and never comes up on either side.
			for end := time.Now().Add(600 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
				st, ok := a.status("ab")
				if !ok || st.State != "connecting" || st.Role != "dialer" || st.Cost != 4 || !strings.Contains(st.Error, tt.wantErr.Error()) {
					t.Fatalf("dialer status %+v (listed %v), want state connecting, cost 4, error containing %q", st, ok, tt.wantErr)
				}
				if n := len(a.m.Status()); n != 1 {
					t.Fatalf("dialer lists %d links, want 1", n)
				}
				if st := b.m.Status(); len(st) != 0 {
					t.Fatalf("acceptor lists links %+v, want none", st)
				}
				if ra, rb := a.m.Routes().Routes(), b.m.Routes().Routes(); ra != nil || rb != nil {
					t.Fatalf("routes without a link: a %+v, b %+v", ra, rb)
				}
			}
		})
	}
}

// TestSilentPeerDeclaredDead: a link whose peer stops answering, without closing anything, is
// dropped within the dead time on both ends, and the tunnels in use on it are reset.
func TestSilentPeerDeclaredDead(t *testing.T) {
	checkGoroutines(t)
	steadyAttempts(t, 4, 100*time.Millisecond, silentPeerDeclaredDead)
}

func silentPeerDeclaredDead(t T) {
	short := func(o *links.Options) { o.DeadTime = silentDeadTime }
	a, b := newSite(t, "a", short), newSite(t, "b", short)
	b.grant("ab", []byte("s"), 1)
	p := startProxy(t, b.addr) // its cleanup runs before the sites stop
	a.m.Dial(links.DialSpec{Name: "ab", Cost: 1, Endpoints: []string{p.addr()}, Secret: []byte("s")})
	waitUp(t, a, b, "ab", 1)
	waitPools(t, a, b, "ab", 2)

	// An idle but healthy link stays up, on the same session, for several dead times.
	da, _ := a.status("ab")
	db, _ := b.status("ab")
	time.Sleep(3 * silentDeadTime)
	da2, _ := a.status("ab")
	db2, _ := b.status("ab")
	if da2.State != "up" || !da2.Since.Equal(da.Since) || db2.State != "up" || !db2.Since.Equal(db.Since) {
		t.Fatalf("idle link did not stay up: dialer %+v then %+v; acceptor %+v then %+v", da, da2, db, db2)
	}

	// One tunnel in use each way.
	var ends []net.Conn
	for _, dir := range []struct{ opener, receiver *site }{{a, b}, {b, a}} {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		out, err := dir.opener.m.OpenTunnel(ctx, dir.receiver.name)
		cancel()
		if err != nil {
			t.Fatalf("OpenTunnel from %s: %v", dir.opener.name, err)
		}
		t.Cleanup(func() {
			out.Conn.Close()
			out.Done()
		})
		if _, err := out.Conn.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		in := dir.receiver.nextTunnel(t)
		if got := waitRead(t, "hi", readResult(in.Conn, 2)); got.err != nil {
			t.Fatalf("tunnel from %s: %v", dir.opener.name, got.err)
		}
		ends = append(ends, out.Conn, in.Conn)
	}
	reads := make([]<-chan readOutcome, len(ends))
	for i, c := range ends {
		reads[i] = readResult(c, 1)
	}

	// Taken before the freeze, so a pause of this goroutine can only make the measured time
	// longer, never shorter.
	frozen := time.Now()
	p.freeze()
	var lostA, lostB time.Duration
	for lostA == 0 || lostB == 0 {
		if lostA == 0 && !a.m.Routes().Reachable("b") {
			lostA = time.Since(frozen)
		}
		if lostB == 0 && !b.m.Routes().Reachable("a") {
			lostB = time.Since(frozen)
		}
		if time.Since(frozen) > waitLimit {
			t.Fatalf("peer still reachable %v after the link froze: a lost b after %v, b lost a after %v", waitLimit, lostA, lostB)
		}
		time.Sleep(2 * time.Millisecond)
	}
	// The slack is for scheduling under -race. No lower bound: a loaded machine that delays
	// heartbeats before the freeze rightly makes the peer look silent sooner (an idle link
	// staying up, above, is what shows heartbeats keep a live peer alive).
	const slack = 300 * time.Millisecond
	for _, l := range []struct {
		who  string
		took time.Duration
	}{{"dialer", lostA}, {"acceptor", lostB}} {
		if l.took > silentDeadTime+slack {
			t.Errorf("%s declared its silent peer dead after %v, want within the dead time %v (+%v slack)", l.who, l.took, silentDeadTime, slack)
		}
	}

	for i, r := range reads {
		got := waitRead(t, "tunnel on the dead link", r)
		if got.err == nil || errors.Is(got.err, io.EOF) || len(got.data) != 0 {
			t.Errorf("tunnel end %d after the link died: read %q, %v; want an error (reset), not data or a clean EOF", i, got.data, got.err)
		}
	}
	eventually(t, "dialer status after the link died", func() (bool, string) {
		st, _ := a.status("ab")
		return st.State == "connecting" && st.Error != "", fmt.Sprintf("%+v", st)
	})
	if st := b.m.Status(); len(st) != 0 {
		t.Errorf("acceptor still lists %+v", st)
	}
}

// TestClosedLinkNoticedAtOnceAndRedialed: a peer that closes its end is noticed at once, not
// after the dead time, and the dialer reconnects (here to a restarted site of the same name).
func TestClosedLinkNoticedAtOnceAndRedialed(t *testing.T) {
	checkGoroutines(t)
	a, b1, b2 := newSite(t, "a", nil), newSite(t, "b", nil), newSite(t, "b", nil)
	b1.grant("ab", []byte("s"), 1)
	b2.grant("ab", []byte("s"), 3)
	p := startProxy(t, b1.addr)
	a.m.Dial(links.DialSpec{Name: "ab", Cost: 1, Endpoints: []string{p.addr()}, Secret: []byte("s")})
	waitUp(t, a, b1, "ab", 1)
	b1.m.SetKeys([]string{"db"})
	waitAdvertisers(t, a, "db", []routes.Route{{Dest: "b", NextHop: "b", Cost: 1, Path: []string{"a", "b"}}})

	p.retarget(b2.addr)
	start := time.Now()
	b1.cancel() // b1.stop would also count the time Wait takes
	for a.m.Routes().Reachable("b") {
		if time.Since(start) > waitLimit {
			t.Fatal("b still reachable after it stopped")
		}
		time.Sleep(time.Millisecond)
	}
	if took := time.Since(start); took >= deadTime {
		t.Errorf("closed link noticed after %v, want well before the dead time %v", took, deadTime)
	}
	b1.stop()

	// b2 is the same site restarted: its advertisement replaces b1's, keys and all.
	waitUp(t, a, b2, "ab", 3)
	waitAdvertisers(t, a, "db", nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	out, err := a.m.OpenTunnel(ctx, "b")
	if err != nil {
		t.Fatalf("OpenTunnel after reconnecting: %v", err)
	}
	t.Cleanup(func() {
		out.Conn.Close()
		out.Done()
	})
	exchangeOver(t, out, a, b2)
}

// TestFlappingLinkRedialsFast: a link that was up and dropped is redialed at once, however
// many times it flapped before, and however short its sessions were: the backoff grows only
// across failed dials in a row. Before, it doubled after every session and reset only after
// one of over 10 s, so after a few flaps the dialer waited its cap (5 s here) with the peer
// back.
func TestFlappingLinkRedialsFast(t *testing.T) {
	checkGoroutines(t)
	steadyAttempts(t, 3, 300*time.Millisecond, flappingLinkRedialsFast)
}

func flappingLinkRedialsFast(t T) {
	const (
		flaps    = 6
		session  = 150 * time.Millisecond // up this long before each cut: well under 10 s
		downFor  = 300 * time.Millisecond // the peer refuses this long: a few failed dials
		backWhen = time.Second            // the link must be up again this soon after
	)
	a := newSite(t, "a", func(o *links.Options) { o.MaxBackoff = 5 * time.Second })
	b := newSite(t, "b", nil)
	b.grant("ab", []byte("s"), 1)
	p := startProxy(t, b.addr)
	a.m.Dial(links.DialSpec{Name: "ab", Cost: 1, Endpoints: []string{p.addr()}, Secret: []byte("s")})
	waitUp(t, a, b, "ab", 1)
	for i := 1; i <= flaps; i++ {
		time.Sleep(session)
		p.sever()
		eventually(t, fmt.Sprintf("flap %d: link down at the dialer", i), func() (bool, string) {
			st, _ := a.status("ab")
			return st.State != "up", "state " + st.State
		})
		time.Sleep(downFor)
		p.restore()
		back := time.Now()
		waitUp(t, a, b, "ab", 1)
		took := time.Since(back)
		t.Log(fmt.Sprintf("flap %d: up again after %v", i, took))
		if took > backWhen {
			t.Errorf("flap %d: link up %v after the peer was reachable again, want within %v", i, took, backWhen)
		}
	}
}

// TestShutdown: cancelling a manager's context ends the manager, resets the tunnels it still
// tracks, and leaves no goroutine behind.
func TestShutdown(t *testing.T) {
	checkGoroutines(t)
	a, b, c := newSite(t, "a", nil), newSite(t, "b", nil), newSite(t, "c", nil)
	connect(a, b, "ab", 1, 1)
	connect(b, c, "bc", 1, 1)
	waitUp(t, a, b, "ab", 1)
	waitUp(t, b, c, "bc", 1)

	var reads []<-chan readOutcome
	for _, dir := range []struct{ opener, receiver *site }{{a, b}, {c, b}, {b, c}} {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		out, err := dir.opener.m.OpenTunnel(ctx, dir.receiver.name)
		cancel()
		if err != nil {
			t.Fatalf("OpenTunnel from %s: %v", dir.opener.name, err)
		}
		t.Cleanup(func() {
			out.Conn.Close()
			out.Done()
		})
		if _, err := out.Conn.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		in := dir.receiver.nextTunnel(t)
		if got := waitRead(t, "x", readResult(in.Conn, 1)); got.err != nil {
			t.Fatal(got.err)
		}
		reads = append(reads, readResult(out.Conn, 1), readResult(in.Conn, 1))
	}

	for _, s := range []*site{b, a, c} {
		start := time.Now()
		s.stop()
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("site %s: Wait returned %v after cancel, want promptly", s.name, took)
		}
	}
	for i, r := range reads {
		got := waitRead(t, "tunnel after shutdown", r)
		if got.err == nil || errors.Is(got.err, io.EOF) || len(got.data) != 0 {
			t.Errorf("tunnel end %d after shutdown: read %q, %v; want an error (reset)", i, got.data, got.err)
		}
	}
}

// TestShutdownDuringHandshake: a connection stuck in the link handshake (a peer that connected
// and went quiet, or an endpoint that accepts and never answers) must not hold up shutdown.
func TestShutdownDuringHandshake(t *testing.T) {
	tests := []struct {
		name  string
		stuck func(t *testing.T) *site // returns the site to stop, with a stuck handshake
	}{
		{
			name: "accepting side, peer silent",
			stuck: func(t *testing.T) *site {
				b := newSite(t, "b", nil)
				c, err := net.Dial("tcp", b.addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				time.Sleep(50 * time.Millisecond) // accepted, now reading the hello
				return b
			},
		},
		{
			name: "dialing side, endpoint silent",
			stuck: func(t *testing.T) *site {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				accepted := make(chan net.Conn, 1)
				go func() {
					c, err := ln.Accept()
					if err == nil {
						accepted <- c
					}
				}()
				a := newSite(t, "a", nil)
				a.m.Dial(links.DialSpec{Name: "ab", Cost: 1, Endpoints: []string{ln.Addr().String()}, Secret: []byte("s")})
				select {
				case c := <-accepted:
					t.Cleanup(func() { c.Close() })
				case <-time.After(waitLimit):
					t.Fatal("the dialer never connected")
				}
				ln.Close()
				time.Sleep(50 * time.Millisecond) // now waiting for the challenge
				return a
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			s := tt.stuck(t)
			start := time.Now()
			s.cancel()
			waited := make(chan struct{})
			go func() {
				s.m.Wait()
				close(waited)
			}()
			select {
			case <-waited:
			case <-time.After(time.Second):
				<-waited
				t.Errorf("Wait returned %v after cancel, want within 1s", time.Since(start))
			}
		})
	}
}

// TestTunnelsDialedBeforeAcceptorRegisters: the dialer starts filling its tunnel pools as soon
// as it has the acceptor's hello, which can be before the acceptor has read the dialer's hello
// and registered the link (here the dialer's hello is held up 150ms, as a lost segment
// would be). Tunnels that arrive in that window must not leave the pools wrong
// for good, nor make the dialer redial in a tight loop.
func TestTunnelsDialedBeforeAcceptorRegisters(t *testing.T) {
	checkGoroutines(t)
	a, b := newSite(t, "a", nil), newSite(t, "b", nil)
	b.grant("ab", []byte("s"), 1)
	p := startProxy(t, b.addr)
	// The link handshake of credential "ab" from site "a": hello (magic 4, version 1,
	// purpose 1, credential 1+2, site 1+1, nonce 32) then proof (32). What follows is the
	// dialer's link hello.
	const authBytes = 4 + 1 + 1 + 1 + 2 + 1 + 1 + 32 + 32
	p.holdFirstConnection(authBytes, 150*time.Millisecond)
	a.m.Dial(links.DialSpec{Name: "ab", Cost: 1, Endpoints: []string{p.addr()}, Secret: []byte("s")})
	waitUp(t, a, b, "ab", 1)

	// Every pool full, and what each end counts agrees with the other end.
	eventually(t, "pools agree", func() (bool, string) {
		d, _ := a.status("ab")
		ac, _ := b.status("ab")
		return d.IdleTunnels == 2 && d.PeerTunnels == 2 && ac.IdleTunnels == 2 && ac.PeerTunnels == 2,
			fmt.Sprintf("dialer idle %d waiting %d, acceptor idle %d waiting %d (want 2 each); %d connections so far",
				d.IdleTunnels, d.PeerTunnels, ac.IdleTunnels, ac.PeerTunnels, p.acceptedCount())
	})
	// One control connection and four pooled tunnels, plus a few that the acceptor turned away.
	if n := p.acceptedCount(); n > 20 {
		t.Errorf("%d connections to bring up one link with two pools of 2", n)
	}
	// The first tunnel each way comes from the pool, without a miss.
	for _, dir := range []struct{ opener, receiver *site }{{a, b}, {b, a}} {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		out, err := dir.opener.m.OpenTunnel(ctx, dir.receiver.name)
		cancel()
		if err != nil {
			t.Fatalf("OpenTunnel from %s: %v", dir.opener.name, err)
		}
		t.Cleanup(func() {
			out.Conn.Close()
			out.Done()
		})
		if st, _ := dir.opener.status("ab"); st.Misses != 0 {
			t.Errorf("site %s: %d pool misses on its first tunnel, want 0", dir.opener.name, st.Misses)
		}
		exchangeOver(t, out, dir.opener, dir.receiver)
	}
}

// TestDepartedSiteLinkStateExpires: a site that leaves the network is dropped from every
// other site's link state once routing has not reached it for LSAExpiry; a site still there
// is kept however long that is.
func TestDepartedSiteLinkStateExpires(t *testing.T) {
	checkGoroutines(t)
	const expiry = 400 * time.Millisecond
	short := func(o *links.Options) { o.LSAExpiry = expiry }
	a, b, c := newSite(t, "a", short), newSite(t, "b", short), newSite(t, "c", short)
	connect(a, b, "ab", 1, 1)
	connect(b, c, "bc", 1, 1)
	waitUp(t, a, b, "ab", 1)
	waitUp(t, b, c, "bc", 1)
	origins := func(s *site) string {
		var out []string
		for _, l := range s.m.LinkState() {
			out = append(out, l.Origin)
		}
		return strings.Join(out, ",")
	}
	eventually(t, "a knows c", func() (bool, string) { got := origins(a); return got == "a,b,c", got })
	time.Sleep(3 * expiry)
	if got := origins(a); got != "a,b,c" {
		t.Fatalf("a's link state %s after 3 expiry times with every site up, want a,b,c", got)
	}
	c.stop()
	left := time.Now()
	for _, s := range []*site{a, b} {
		eventually(t, s.name+" forgets c", func() (bool, string) { got := origins(s); return got == "a,b", got })
	}
	if took := time.Since(left); took < expiry {
		t.Errorf("c's link state expired %v after it left, before the expiry of %v", took, expiry)
	}
}
