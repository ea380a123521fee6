package netns

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
	"github.com/skfwd/skfwd/pkg/auth"
	"github.com/skfwd/skfwd/pkg/gateway"
	"github.com/skfwd/skfwd/pkg/links"
	"github.com/skfwd/skfwd/pkg/metrics"
	"github.com/skfwd/skfwd/pkg/mux"
	"github.com/skfwd/skfwd/pkg/tunnel"
)

func TestStandbyLinkTakesOverWhenTheCheaperDies(t *testing.T) {
	lab := newLab(t)
	n := twoSites(t, lab, func(a, b *netlab.Site) {
		link(t, lab, a, b, 5)
	})
	a := n.a
	cheap := n.link
	routeCost := func(cost int) func(gateway.Status) bool {
		return func(st gateway.Status) bool {
			return len(st.Routes) == 1 && st.Routes[0].Dest == "b" && st.Routes[0].Cost == cost
		}
	}
	check(t, a.WaitFor(converged, "route to b at cost 1 over the cheaper link", routeCost(1)))
	check(t, a.WaitCandidates(converged, svc, "b"))
	name, err := netlab.Hello(a, svcAddr, timeout)
	check(t, err)
	if name != "b" {
		t.Fatalf("answered by %s", name)
	}
	st := must[gateway.Status](t)(a.Status())
	for _, l := range st.Links {
		if l.State != "up" {
			t.Fatalf("both links should be up, one standing by: %+v", st.Links)
		}
	}
	check(t, a.SetLink(cheap, false))
	check(t, a.WaitFor(converged, "route to b at cost 5 over the standby link", routeCost(5)))
	name, err = netlab.Hello(a, svcAddr, timeout)
	check(t, err)
	if name != "b" {
		t.Fatalf("answered by %s over the standby link", name)
	}
}

func TestLinkReconnectsAfterPeerRestart(t *testing.T) {
	lab := newLab(t)
	n := twoSites(t, lab, nil)
	a, b := n.a, n.b
	check(t, a.WaitCandidates(converged, svc, "b"))
	b.Kill()
	check(t, a.WaitCandidates(converged, svc))
	check(t, b.Start())
	// The dialer's backoff is capped by reconnect-max-backoff (5 s by default).
	check(t, a.WaitCandidates(converged, svc, "b"))
	name, err := netlab.Hello(a, svcAddr, timeout)
	check(t, err)
	if name != "b" {
		t.Fatalf("answered by %s after the restart", name)
	}
}

// TestFlappingLinkBackWithinASecond takes the dialer's link interface down and up again
// five times, each outage long enough for the peer to be declared dead and two redials to
// fail, and asserts the link is up within 1 s of each recovery: a session that came up resets
// the reconnect backoff, so flaps do not push the dialer to reconnect-max-backoff (5 s).
// (Within one outage the backoff still doubles: after a long one the link returns within
// about as long again, up to the cap.)
func TestFlappingLinkBackWithinASecond(t *testing.T) {
	const (
		flaps    = 5
		downFor  = 500 * time.Millisecond // after the 1 s dead time: dials at 100 and 300 ms fail
		backWhen = time.Second
	)
	lab := newLab(t)
	n := twoSites(t, lab, nil)
	a := n.a
	linkState := func(want string) func(gateway.Status) bool {
		return func(st gateway.Status) bool { return len(st.Links) == 1 && st.Links[0].State == want }
	}
	check(t, a.WaitFor(converged, "link up", linkState("up")))
	for i := 1; i <= flaps; i++ {
		check(t, a.SetLink(n.link, false))
		check(t, a.WaitFor(converged, fmt.Sprintf("flap %d: link declared dead", i), linkState("connecting")))
		time.Sleep(downFor)
		check(t, a.SetLink(n.link, true))
		back := time.Now()
		check(t, a.WaitFor(converged, fmt.Sprintf("flap %d: link up again", i), linkState("up")))
		took := time.Since(back)
		t.Logf("flap %d: link up %v after the interface came back", i, took)
		if took > backWhen {
			t.Errorf("flap %d: link up %v after the interface came back, want within %v", i, took, backWhen)
		}
	}
	check(t, a.WaitCandidates(converged, svc, "b"))
	if name, err := netlab.Hello(a, svcAddr, timeout); err != nil || name != "b" {
		t.Fatalf("after the flaps: answered by %q, %v", name, err)
	}
}

// TestBadPeersHarmNothingElse sends the accepting site garbage: an unauthenticated
// connection, a malformed tunnel request on a properly authenticated tunnel, and a handshake
// with the wrong secret. Each closes only its own connection, is logged and counted under its
// reason, and a connection in progress carries on.
func TestBadPeersHarmNothingElse(t *testing.T) {
	lab := newLab(t)
	n := twoSites(t, lab, nil)
	a, b := n.a, n.b
	check(t, a.WaitCandidates(converged, svc, "b"))
	held, _, err := netlab.Hold(a, svcAddr, timeout)
	check(t, err)
	defer held.Close()

	// Every rejection is exported at 0 before the first one.
	before := scrape(t, b)
	for _, r := range metrics.HandshakeReasons {
		checkSample(t, before, fmt.Sprintf(`skfwd_link_handshakes_rejected_total{reason=%q,site="b"}`, r), 0)
	}
	badRequests := `skfwd_requests_refused_total{reason="bad-request",routing_key="other",site="b",source_site="other"}`
	checkSample(t, before, badRequests, 0)

	linkAddr, credential, secret := linkOf(t, a.ConfigDir())
	closedByPeer := func(c net.Conn) error {
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		_, err := io.ReadAll(c)
		return err
	}

	// Unauthenticated: not even our handshake.
	c, err := a.Dial(linkAddr, timeout)
	check(t, err)
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if err := closedByPeer(c); err != nil && !isReset(err) {
		t.Fatalf("garbage on the link port: %v, want the connection closed", err)
	}
	c.Close()

	// Authenticated, then a tunnel request that is not one.
	c, err = a.Dial(linkAddr, timeout)
	check(t, err)
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := auth.Dial(c, "a", credential, secret, auth.TunnelOut); err != nil {
		t.Fatalf("handshake with the real credential: %v", err)
	}
	_ = c.SetDeadline(time.Time{})
	_, _ = c.Write([]byte("SK\x01\x01\xff\xffnot a request"))
	if err := closedByPeer(c); err != nil && !isReset(err) {
		t.Fatalf("malformed tunnel request: %v, want the tunnel closed", err)
	}
	c.Close()

	// The right credential with the wrong secret, as a site given a stale Secret would try.
	c, err = a.Dial(linkAddr, timeout)
	check(t, err)
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := auth.Dial(c, "a", credential, []byte("not the secret"), auth.Control); !errors.Is(err, auth.ErrBadProof) {
		t.Fatalf("handshake with a wrong secret: %v, want a bad proof", err)
	}
	c.Close()

	// Each rejection counted under its reason, nothing under the others.
	wantRejected := map[string]float64{links.RejectMalformed: 1, links.RejectBadProof: 1}
	check(t, waitSamples(b, func(body string) error {
		for _, r := range metrics.HandshakeReasons {
			if err := sampleIs(body, fmt.Sprintf(`skfwd_link_handshakes_rejected_total{reason=%q,site="b"}`, r), wantRejected[r]); err != nil {
				return err
			}
		}
		return sampleIs(body, badRequests, 1)
	}))

	for _, want := range []string{"link connection rejected", "bad tunnel request"} {
		if !logContains(b.LogPath, want) {
			t.Errorf("accepting site did not log %q", want)
		}
	}
	// The connection in progress and new connections are unaffected.
	if _, err := fmt.Fprintf(held, "still here\n"); err != nil {
		t.Fatal(err)
	}
	_ = held.SetReadDeadline(time.Now().Add(timeout))
	line := make([]byte, len("still here\n"))
	if _, err := io.ReadFull(held, line); err != nil || string(line) != "still here\n" {
		t.Fatalf("connection in progress disturbed: %q, %v", line, err)
	}
	if _, err := netlab.Hello(a, svcAddr, timeout); err != nil {
		t.Fatalf("new connection after the bad peers: %v", err)
	}
	st := must[gateway.Status](t)(a.Status())
	if len(st.Links) != 1 || st.Links[0].State != "up" {
		t.Fatalf("link disturbed: %+v", st.Links)
	}
}

// TestInventedRoutingKeysAddNoSeries: an authenticated peer that sends requests for routing
// keys and source sites the accepting site never heard of is refused each time, and every
// refusal is counted under routing_key and source_site "other": no new series per key.
func TestInventedRoutingKeysAddNoSeries(t *testing.T) {
	const invented = 40
	lab := newLab(t)
	n := twoSites(t, lab, nil)
	a, b := n.a, n.b
	check(t, a.WaitCandidates(converged, svc, "b"))
	linkAddr, credential, secret := linkOf(t, a.ConfigDir())
	// A peer with a's credential that calls itself z: its own link, beside a's.
	c, err := a.Dial(linkAddr, timeout)
	check(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := auth.Dial(c, "z", credential, secret, auth.Control); err != nil {
		t.Fatalf("handshake with the real credential: %v", err)
	}
	exchangeHellos(t, c)
	_ = c.SetDeadline(time.Time{})
	ms, err := mux.New(c, mux.Options{Dialer: true})
	check(t, err)
	defer ms.Close(nil)
	for i := range invented {
		st, err := ms.Open(tunnel.Request{FlowID: uint64(i + 1), RoutingKey: fmt.Sprintf("invented-%d", i), DestSite: "b",
			SourceSite: fmt.Sprintf("nowhere-%d", i)}, []byte("hello"))
		check(t, err)
		ans, err := st.Answer()
		if !errors.Is(err, mux.ErrRefused) || ans.Reason != tunnel.ReasonNoConnector {
			t.Fatalf("stream for an invented key: answer %+v, %v; want refused, no-connector", ans, err)
		}
	}
	body := scrape(t, b)
	if strings.Contains(body, "invented-") || strings.Contains(body, "nowhere-") {
		t.Errorf("a routing key or site from the wire got series of its own:\n%s", grepLines(body, "invented-", "nowhere-"))
	}
	checkSample(t, body, `skfwd_requests_refused_total{reason="no-connector",routing_key="other",site="b",source_site="other"}`, invented)
}

// exchangeHellos plays the dialing side of the links package's hello on c: a control
// message (4-byte length, type 1, JSON) with the cost, and the peer's in return.
func exchangeHellos(t *testing.T, c net.Conn) {
	t.Helper()
	payload := []byte(`{"cost":1}`)
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(payload)+1))
	msg = append(append(msg, 1), payload...)
	_, err := c.Write(msg)
	check(t, err)
	var head [5]byte
	_, err = io.ReadFull(c, head[:])
	check(t, err)
	if head[4] != 1 {
		t.Fatalf("peer sent control message type %d, want its hello", head[4])
	}
	_, err = io.ReadFull(c, make([]byte, binary.BigEndian.Uint32(head[:4])-1))
	check(t, err)
}

// grepLines returns the lines of s that contain any of subs.
func grepLines(s string, subs ...string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(line, sub) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

var (
	hostLine   = regexp.MustCompile(`(?m)^\s+host: "?([^"\s]+)"?$`)
	portLine   = regexp.MustCompile(`(?m)^\s+port: (\d+)$`)
	nameLine   = regexp.MustCompile(`(?m)^  tlsCredentials: (\S+)$`)
	secretData = regexp.MustCompile(`(?m)^  secret: (\S+)$`)
)

// linkOf reads the endpoint and credential of the (single) generated link in dir.
func linkOf(t *testing.T, dir string) (addr, credential string, secret []byte) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "link-*.yaml"))
	if len(files) != 1 {
		t.Fatalf("want one link file in %s, got %v", dir, files)
	}
	b, err := os.ReadFile(files[0])
	check(t, err)
	host, port := hostLine.FindSubmatch(b), portLine.FindSubmatch(b)
	name, sec := nameLine.FindSubmatch(b), secretData.FindSubmatch(b)
	if host == nil || port == nil || name == nil || sec == nil {
		t.Fatalf("cannot read the generated link:\n%s", b)
	}
	secret, err = base64.StdEncoding.DecodeString(string(sec[1]))
	check(t, err)
	return net.JoinHostPort(string(host[1]), string(port[1])), string(name[1]), secret
}
