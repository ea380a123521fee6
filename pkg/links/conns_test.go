package links_test

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/skfwd/skfwd/pkg/links"
	"github.com/skfwd/skfwd/pkg/mux"
	"github.com/skfwd/skfwd/pkg/tunnel"
)

// A link keeps its link connections: streams spread over all of them; one that dies resets
// only its own streams, new streams go over the others meanwhile, it is redialed, and the
// link never goes down.
func TestLinkConnectionsShareStreamsAndRecoverAlone(t *testing.T) {
	checkGoroutines(t)
	streams := make(chan *links.Stream, 64)
	opts := func(o *links.Options) {
		o.PoolSize = 0 // only link connections go through the proxy: 1 is the control one
		o.LinkConnections = 3
		o.OnStream = func(st *links.Stream) {
			_ = st.Accept()
			streams <- st
			_, _ = io.Copy(st, st) // an echo until the opener closes
			_ = st.CloseWrite()
			st.Close()
		}
	}
	a, b := newSite(t, "a", opts), newSite(t, "b", opts)
	b.grant("ab", []byte("s"), 1)
	p := startProxy(t, b.addr)
	a.m.Dial(links.DialSpec{Name: "ab", Cost: 1, Endpoints: []string{p.addr()}, Secret: []byte("s")})
	waitUp(t, a, b, "ab", 1)
	connections := func(s *site, want int) {
		t.Helper()
		eventually(t, fmt.Sprintf("site %s: %d link connections", s.name, want), func() (bool, string) {
			st, _ := s.status("ab")
			return st.Connections == want, fmt.Sprintf("%d", st.Connections)
		})
	}
	connections(a, 3)
	connections(b, 3)

	open := func() *links.Stream {
		t.Helper()
		st, err := a.m.OpenStream("b", tunnel.Request{FlowID: 1, RoutingKey: "db", DestSite: "b", SourceSite: "a"}, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Answer(); err != nil {
			t.Fatal(err)
		}
		return st
	}
	var held []*links.Stream
	for range 9 {
		held = append(held, open())
	}
	for range held {
		<-streams
	}
	up, _ := a.status("ab")
	// Cut one link connection other than the control one.
	p.severAccepted(2)
	var reset, alive int
	for _, st := range held {
		if _, err := st.Write([]byte("ping")); err != nil {
			reset++
			continue
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(st, buf); err != nil {
			if !errors.Is(err, mux.ErrLinkLost) {
				t.Errorf("stream on the cut connection failed with %v, want the link connection lost", err)
			}
			reset++
			continue
		}
		alive++
	}
	if reset != 3 || alive != 6 {
		t.Fatalf("after one of 3 link connections was cut: %d streams failed, %d carried on; want 3 and 6", reset, alive)
	}
	for range 6 {
		st := open()
		<-streams
		st.Close()
	}
	connections(a, 3)
	if s, _ := a.status("ab"); s.State != "up" || !s.Since.Equal(up.Since) {
		t.Fatalf("link after losing one connection: %+v; it was up since %v and must have stayed up", s, up.Since)
	}
	for _, st := range held {
		st.Close()
	}
}
