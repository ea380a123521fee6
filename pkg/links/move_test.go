package links_test

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/skfwd/skfwd/pkg/links"
	"github.com/skfwd/skfwd/pkg/tunnel"
)

// A stream's move: the opener takes an idle tunnel and attaches it under a token; the peer's
// pool accepts it, and the peer's stream claims it by that token, whichever came first. Both
// ways round (dialer and acceptor opening), and with no tunnel idle.
func TestMoveTunnelPairsByToken(t *testing.T) {
	for _, byAcceptor := range []bool{false, true} {
		name := "dialer moves"
		if byAcceptor {
			name = "acceptor moves"
		}
		t.Run(name, func(t *testing.T) {
			checkGoroutines(t)
			streams := make(chan *links.Stream, 4)
			opts := func(o *links.Options) {
				o.OnStream = func(st *links.Stream) { _ = st.Accept(); streams <- st }
			}
			a, b := newSite(t, "a", opts), newSite(t, "b", opts)
			connect(a, b, "ab", 1, 1)
			waitUp(t, a, b, "ab", 1)
			waitPools(t, a, b, "ab", 2)
			opener, peer := a, b
			if byAcceptor {
				opener, peer = b, a
			}
			st, err := opener.m.OpenStream(peer.name, tunnel.Request{FlowID: 1, RoutingKey: "db", DestSite: peer.name, SourceSite: opener.name}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			remote := <-streams
			defer remote.Close()

			out, err := st.TakeTunnel()
			if err != nil {
				t.Fatalf("TakeTunnel with the pool full: %v", err)
			}
			defer func() { out.Conn.Close(); out.Done() }()
			// What the gateway's OnTunnel does: read the attach, hand the tunnel over.
			in := peer.nextTunnel(t)
			att, err := tunnel.ReadAttach(in.Conn)
			if err != nil || att.Token != out.Token {
				t.Fatalf("attach %+v, %v; want token %#x", att, err, out.Token)
			}
			in.Attach(att.Token)
			got, err := remote.AwaitTunnel(out.Token)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { got.Conn.Close(); got.Done() }()
			if got.Conn != in.Conn {
				t.Fatal("AwaitTunnel returned another tunnel than the one attached")
			}
			if _, err := out.Conn.Write([]byte("moved bytes")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, len("moved bytes"))
			_ = got.Conn.SetReadDeadline(time.Now().Add(waitLimit))
			if _, err := io.ReadFull(got.Conn, buf); err != nil || string(buf) != "moved bytes" {
				t.Fatalf("read %q, %v", buf, err)
			}
		})
	}
}

func TestMoveWithoutIdleTunnelFailsAtOnce(t *testing.T) {
	checkGoroutines(t)
	streams := make(chan *links.Stream, 1)
	a := newSite(t, "a", func(o *links.Options) { o.PoolSize = 0 })
	b := newSite(t, "b", func(o *links.Options) {
		o.PoolSize = 0
		o.OnStream = func(st *links.Stream) { _ = st.Accept(); streams <- st }
	})
	connect(a, b, "ab", 1, 1)
	waitUp(t, a, b, "ab", 1)
	st, err := a.m.OpenStream("b", tunnel.Request{FlowID: 1, RoutingKey: "db", DestSite: "b", SourceSite: "a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	defer (<-streams).Close()
	began := time.Now()
	if _, err := st.TakeTunnel(); !errors.Is(err, links.ErrNoTunnel) {
		t.Fatalf("TakeTunnel with no tunnel idle: %v, want ErrNoTunnel", err)
	}
	if el := time.Since(began); el > 100*time.Millisecond {
		t.Fatalf("TakeTunnel waited %v: a move must never wait for a tunnel", el)
	}
	eventually(t, "the miss counted", func() (bool, string) {
		s, _ := a.status("ab")
		return s.Misses == 1, fmt.Sprintf("misses %d", s.Misses)
	})
}
