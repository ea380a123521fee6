package links_test

import (
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/skfwd/skfwd/pkg/auth"
	"github.com/skfwd/skfwd/pkg/links"
	"github.com/skfwd/skfwd/pkg/metrics"
)

// rejections is an Observer that records HandshakeRejected calls.
type rejections struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *rejections) PoolMiss(string, string)      {}
func (r *rejections) HeartbeatMiss(string, string) {}
func (r *rejections) LinkUp(string, string)        {}
func (r *rejections) HandshakeRejected(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[reason]++
}

func (r *rejections) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.n)
}

// TestRejectedHandshakesCounted: every way a connection to the link port can be turned away
// is reported to the Observer once, under its own reason, and nothing else is reported.
func TestRejectedHandshakesCounted(t *testing.T) {
	checkGoroutines(t)
	obs := &rejections{n: map[string]int{}}
	b := newSite(t, "b", func(o *links.Options) { o.Observer = obs })
	b.grant("ab", []byte("secret"), 1)
	dial := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}
	handshake := func(self, cred, secret string, p auth.Purpose) func(t *testing.T) {
		return func(t *testing.T) {
			c := dial(t)
			_, _ = auth.Dial(c, self, cred, []byte(secret), p)
			c.Close() // as a dialer does once the handshake failed
		}
	}
	cases := map[string]func(t *testing.T){
		links.RejectUnknownCredential: handshake("a", "nobody", "secret", auth.Control),
		links.RejectBadProof:          handshake("a", "ab", "not the secret", auth.Control),
		links.RejectOwnSiteName:       handshake("b", "ab", "secret", auth.Control),
		links.RejectNoSession:         handshake("a", "ab", "secret", auth.TunnelOut), // no control session: waits 5 s
		links.RejectMalformed: func(t *testing.T) {
			_, _ = dial(t).Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		},
		links.RejectClosed: func(t *testing.T) {
			c := dial(t)
			_, _ = c.Write([]byte("SKFL")) // a hello cut short
			c.Close()
		},
		links.RejectTimeout: func(t *testing.T) { dial(t) }, // says nothing for 5 s
	}
	want := map[string]int{}
	for reason, run := range cases {
		want[reason] = 1
		run(t)
	}
	if got := slices.Sorted(maps.Keys(want)); !slices.Equal(got, slices.Sorted(slices.Values(links.RejectReasons))) {
		t.Fatalf("cases cover %v, want every one of %v", got, links.RejectReasons)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := obs.counts()
		if maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rejections %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRejectReasonsAreTheMetricsLabels: the metrics reference documents (and exports at 0)
// exactly the reasons this package reports.
func TestRejectReasonsAreTheMetricsLabels(t *testing.T) {
	if !slices.Equal(links.RejectReasons, metrics.HandshakeReasons) {
		t.Errorf("links.RejectReasons %v, metrics.HandshakeReasons %v: keep them equal", links.RejectReasons, metrics.HandshakeReasons)
	}
}
