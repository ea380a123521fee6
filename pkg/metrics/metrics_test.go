package metrics

import (
	"bufio"
	"errors"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"
)

// scrape returns every sample the handler serves, "name{labels} value", minus build info
// (its Go version varies).
func scrape(t *testing.T, m *Metrics) map[string]string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "skfwd_build_info") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		out[line[:i]] = line[i+1:]
	}
	return out
}

type fakeSource struct{ st State }

func (f *fakeSource) MetricsState() State { return f.st }

type fakeKernel struct {
	ks  KernelState
	err error
}

func (f *fakeKernel) KernelState() (KernelState, error) { return f.ks, f.err }

// step is one scripted moment: what happens, then the samples that must read exactly so.
type step struct {
	name string
	do   func(m *Metrics, src *fakeSource, k *fakeKernel)
	want map[string]string
	gone []string // samples that must not exist
}

func TestScriptedSequence(t *testing.T) {
	const s = `site="west"`
	up := Link{Name: "west-to-east", Peer: "east", Role: "dialer", Up: true, Cost: 1, RTT: 1500 * time.Microsecond, IdleOwn: 8, IdlePeer: 7, Active: 1}
	steps := []step{
		{
			name: "idle site with one listener and a link up",
			do: func(m *Metrics, src *fakeSource, k *fakeKernel) {
				m.Configured("west", []string{"db"}, []Connector{{Name: "db-local", RoutingKey: "db"}})
				src.st = State{
					DataPath:  "userspace",
					Listeners: []Listener{{Name: "db", RoutingKey: "db", Accepting: true}},
					Services: []Service{{RoutingKey: "db", Candidates: []Candidate{
						{DestSite: "west", Connector: "db-local", PathCost: 0, Score: 0},
						{DestSite: "east", PathCost: 1, Score: 1},
					}}},
					Connectors: []Connector{{Name: "db-local", RoutingKey: "db", Up: true}},
					Links:      []Link{up},
					Routes:     []Route{{Dest: "east", NextHop: "east", Cost: 1}},
				}
			},
			want: map[string]string{
				`skfwd_connections_accepted_total{routing_key="db",` + s + `}`:                           "0",
				`skfwd_connections_failed_total{routing_key="db",` + s + `}`:                             "0",
				`skfwd_datapath_mode{mode="userspace",` + s + `}`:                                        "1",
				`skfwd_connections_in_progress{` + s + `}`:                                               "0",
				`skfwd_routing_key_candidates{routing_key="db",` + s + `}`:                               "2",
				`skfwd_selector_score{connector="db-local",dest_site="west",routing_key="db",` + s + `}`: "0",
				`skfwd_selector_score{connector="",dest_site="east",routing_key="db",` + s + `}`:         "1",
				`skfwd_selector_path_cost{connector="",dest_site="east",routing_key="db",` + s + `}`:     "1",
				`skfwd_listener_accepting{listener="db",routing_key="db",` + s + `}`:                     "1",
				`skfwd_connector_up{connector="db-local",routing_key="db",` + s + `}`:                    "1",
				`skfwd_link_up{link="west-to-east",peer_site="east",role="dialer",` + s + `}`:            "1",
				`skfwd_link_cost{link="west-to-east",peer_site="east",role="dialer",` + s + `}`:          "1",
				`skfwd_link_rtt_seconds{link="west-to-east",peer_site="east",role="dialer",` + s + `}`:   "0.0015",
				`skfwd_tunnel_pool_size{link="west-to-east",peer_site="east",pool="own",` + s + `}`:      "8",
				`skfwd_tunnel_pool_size{link="west-to-east",peer_site="east",pool="peer",` + s + `}`:     "7",
				`skfwd_tunnels_active{link="west-to-east",peer_site="east",` + s + `}`:                   "1",
				`skfwd_route_cost{dest_site="east",next_hop="east",` + s + `}`:                           "1",
				`skfwd_kernel_promotions_total{` + s + `}`:                                               "0",
			},
			gone: []string{`skfwd_connections_open{`, `skfwd_kernel_bytes`, `skfwd_collect_errors_total`},
		},
		{
			name: "two connections: one local, one to east after a refusal",
			do: func(m *Metrics, src *fakeSource, k *fakeKernel) {
				m.Accepted("db")
				m.Committed("db", "west", 800*time.Microsecond)
				m.Accepted("db")
				m.AttemptFailed("db", "west", ReasonConnectFailed)
				m.Retried("db", ReasonConnectFailed)
				m.Committed("db", "east", 30*time.Millisecond)
				src.st.Open = []Open{{RoutingKey: "db", DestSite: "west", Connector: "db-local", N: 1}, {RoutingKey: "db", DestSite: "east", N: 1}}
				src.st.InProgress = 2
			},
			want: map[string]string{
				`skfwd_connections_accepted_total{routing_key="db",` + s + `}`:                                                 "2",
				`skfwd_connections_opened_total{dest_site="west",routing_key="db",` + s + `}`:                                  "1",
				`skfwd_connections_opened_total{dest_site="east",routing_key="db",` + s + `}`:                                  "1",
				`skfwd_connection_attempt_failures_total{dest_site="west",reason="connect-failed",routing_key="db",` + s + `}`: "1",
				`skfwd_connection_retries_total{reason="connect-failed",routing_key="db",` + s + `}`:                           "1",
				`skfwd_connection_setup_seconds_bucket{dest_site="west",routing_key="db",` + s + `,le="0.0005"}`:               "0",
				`skfwd_connection_setup_seconds_bucket{dest_site="west",routing_key="db",` + s + `,le="0.001"}`:                "1",
				`skfwd_connection_setup_seconds_bucket{dest_site="east",routing_key="db",` + s + `,le="0.025"}`:                "0",
				`skfwd_connection_setup_seconds_bucket{dest_site="east",routing_key="db",` + s + `,le="0.05"}`:                 "1",
				`skfwd_connection_setup_seconds_count{dest_site="east",routing_key="db",` + s + `}`:                            "1",
				`skfwd_connections_open{connector="db-local",dest_site="west",routing_key="db",` + s + `}`:                     "1",
				`skfwd_connections_open{connector="",dest_site="east",routing_key="db",` + s + `}`:                             "1",
				`skfwd_connections_in_progress{` + s + `}`:                                                                     "2",
				`skfwd_connections_closed_total{dest_site="west",outcome="ok",routing_key="db",` + s + `}`:                     "0",
			},
			gone: []string{`skfwd_connections_closed_total{dest_site="east"`},
		},
		{
			name: "both end: one ok, one reset; bytes counted each way",
			do: func(m *Metrics, src *fakeSource, k *fakeKernel) {
				m.Closed("db", "west", OutcomeOK, 100, 2000)
				m.Closed("db", "east", OutcomeReset, 5, 0)
				src.st.Open, src.st.InProgress = nil, 0
			},
			want: map[string]string{
				`skfwd_connections_closed_total{dest_site="west",outcome="ok",routing_key="db",` + s + `}`:        "1",
				`skfwd_connections_closed_total{dest_site="east",outcome="reset",routing_key="db",` + s + `}`:     "1",
				`skfwd_connection_bytes_total{dest_site="west",direction="to_target",routing_key="db",` + s + `}`: "100",
				`skfwd_connection_bytes_total{dest_site="west",direction="to_client",routing_key="db",` + s + `}`: "2000",
				`skfwd_connection_bytes_total{dest_site="east",direction="to_target",routing_key="db",` + s + `}`: "5",
				`skfwd_connections_in_progress{` + s + `}`:                                                        "0",
			},
			gone: []string{`skfwd_connections_open{`},
		},
		{
			name: "the local backend dies: connector down, a failed client, a refusal served to east",
			do: func(m *Metrics, src *fakeSource, k *fakeKernel) {
				src.st.Connectors[0].Up = false
				src.st.Services[0].Candidates = src.st.Services[0].Candidates[1:]
				m.Accepted("db")
				m.AttemptFailed("db", "east", ReasonBackendRefused)
				m.Failed("db")
				m.Refused("db", "east", ReasonNoConnector)
				m.Delivered("db", "east", "db-local")
			},
			want: map[string]string{
				`skfwd_connector_up{connector="db-local",routing_key="db",` + s + `}`:                                           "0",
				`skfwd_routing_key_candidates{routing_key="db",` + s + `}`:                                                      "1",
				`skfwd_connection_attempt_failures_total{dest_site="east",reason="backend-refused",routing_key="db",` + s + `}`: "1",
				`skfwd_connection_retries_total{reason="connect-failed",routing_key="db",` + s + `}`:                            "1",
				`skfwd_connections_failed_total{routing_key="db",` + s + `}`:                                                    "1",
				`skfwd_requests_refused_total{reason="no-connector",routing_key="db",` + s + `,source_site="east"}`:             "1",
				`skfwd_connections_delivered_total{connector="db-local",routing_key="db",` + s + `,source_site="east"}`:         "1",
			},
			gone: []string{`skfwd_selector_score{connector="db-local"`},
		},
		{
			name: "link loss: heartbeats missed, then the link is connecting and the route gone",
			do: func(m *Metrics, src *fakeSource, k *fakeKernel) {
				for range 4 {
					m.HeartbeatMiss("west-to-east", "east")
				}
				m.PoolMiss("west-to-east", "east")
				src.st.Links = []Link{{Name: "west-to-east", Peer: "east", Role: "dialer", Cost: 1}}
				src.st.Routes = nil
				src.st.Services[0].Candidates = nil
				src.st.Listeners[0].Accepting = false
			},
			want: map[string]string{
				`skfwd_link_heartbeat_misses_total{link="west-to-east",peer_site="east",` + s + `}`: "4",
				`skfwd_tunnel_pool_misses_total{link="west-to-east",peer_site="east",` + s + `}`:    "1",
				`skfwd_link_up{link="west-to-east",peer_site="east",role="dialer",` + s + `}`:       "0",
				`skfwd_link_cost{link="west-to-east",peer_site="east",role="dialer",` + s + `}`:     "1",
				`skfwd_routing_key_candidates{routing_key="db",` + s + `}`:                          "0",
				`skfwd_listener_accepting{listener="db",routing_key="db",` + s + `}`:                "0",
			},
			// A link that is not up has no RTT or pools to show.
			gone: []string{`skfwd_link_rtt_seconds`, `skfwd_tunnel_pool_size`, `skfwd_tunnels_active`, `skfwd_route_cost`, `skfwd_selector_score`},
		},
		{
			name: "kernel path: maps read at scrape time, a failed read counted",
			do: func(m *Metrics, src *fakeSource, k *fakeKernel) {
				src.st.DataPath = "sockmap"
				k.ks = KernelState{Bytes: 4096, Maps: []MapUsage{{Name: "sockets", Entries: 3, Capacity: 65536}}}
				m.SetSource(src, k)
				m.Promoted()
				m.Demoted("verdict-error")
				m.FellBack("no-sockmap")
				m.Trimmed(10)
				m.Trimmed(20)
			},
			want: map[string]string{
				`skfwd_datapath_mode{mode="sockmap",` + s + `}`:                  "1",
				`skfwd_kernel_bytes{` + s + `}`:                                  "4096",
				`skfwd_bpf_map_entries{map="sockets",` + s + `}`:                 "3",
				`skfwd_bpf_map_capacity{map="sockets",` + s + `}`:                "65536",
				`skfwd_collect_errors_total{collector="kernel",` + s + `}`:       "0",
				`skfwd_kernel_promotions_total{` + s + `}`:                       "1",
				`skfwd_kernel_demotions_total{reason="verdict-error",` + s + `}`: "1",
				`skfwd_kernel_fallbacks_total{reason="no-sockmap",` + s + `}`:    "1",
				`skfwd_kernel_retransmission_trimmed_bytes_total{` + s + `}`:     "30",
			},
			gone: []string{`skfwd_datapath_mode{mode="userspace"`},
		},
		{
			name: "a kernel read that fails drops its metrics from that scrape and counts the error",
			do: func(m *Metrics, src *fakeSource, k *fakeKernel) {
				k.err = errors.New("map lookup failed")
			},
			want: map[string]string{
				`skfwd_collect_errors_total{collector="kernel",` + s + `}`: "1",
			},
			gone: []string{`skfwd_kernel_bytes`, `skfwd_bpf_map_entries`},
		},
	}
	m := New("west", "v1.2.3")
	src, k := &fakeSource{}, &fakeKernel{}
	m.SetSource(src, nil)
	for _, st := range steps {
		st.do(m, src, k)
		got := scrape(t, m)
		for name, want := range st.want {
			if got[name] != want {
				t.Errorf("%s: %s = %q, want %q", st.name, name, got[name], want)
			}
		}
		for _, prefix := range st.gone {
			for name := range got {
				if strings.HasPrefix(name, prefix) {
					t.Errorf("%s: %s present, want absent", st.name, name)
				}
			}
		}
	}
}

func TestBuildInfo(t *testing.T) {
	rec := httptest.NewRecorder()
	New("east", "v0.9").Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), `skfwd_build_info{goversion="go`) || !strings.Contains(rec.Body.String(), `site="east",version="v0.9"} 1`) {
		t.Fatalf("build info missing or wrong:\n%s", rec.Body)
	}
}

// TestNilMetricsIsNoOp: code without metrics calls the same methods on a nil *Metrics.
func TestNilMetricsIsNoOp(t *testing.T) {
	var m *Metrics
	m.Configured("s", []string{"k"}, []Connector{{Name: "c", RoutingKey: "k"}})
	m.Target("k", "s", true)
	m.LinkUp("l", "p")
	m.Accepted("k")
	m.Committed("k", "s", time.Second)
	m.Closed("k", "s", OutcomeOK, 1, 1)
	m.AttemptFailed("k", "s", ReasonLinkLost)
	m.Retried("k", ReasonLinkLost)
	m.Failed("k")
	m.Delivered("k", "s", "c")
	m.Refused("k", "s", ReasonNoRoute)
	m.HeartbeatMiss("l", "p")
	m.PoolMiss("l", "p")
	m.AdmissionRefused("l", RefusedSiteLimit)
	m.IdleReset("l")
	m.Promoted()
	m.Demoted("r")
	m.FellBack("r")
	m.SetSource(nil, nil)
}

// TestDefinitionsAreServed: every defined metric is served once something has happened, with
// the help and type the reference documents, and only defined metrics are served.
func TestDefinitionsAreServed(t *testing.T) {
	m := New("west", "v1")
	m.Accepted("k")
	m.Committed("k", "s", time.Millisecond)
	m.Closed("k", "s", OutcomeOK, 1, 1)
	m.AttemptFailed("k", "s", ReasonLinkLost)
	m.Retried("k", ReasonLinkLost)
	m.Failed("k")
	m.Delivered("k", "s", "c")
	m.Refused("k", "s", ReasonNoRoute)
	m.HeartbeatMiss("l", "p")
	m.PoolMiss("l", "p")
	m.AdmissionRefused("l", RefusedSiteLimit)
	m.IdleReset("l")
	m.Promoted()
	m.Demoted("r")
	m.FellBack("r")
	m.SetSource(&fakeSource{State{
		DataPath: "userspace", Open: []Open{{"k", "s", "", 1}},
		Services:   []Service{{RoutingKey: "k", Candidates: []Candidate{{DestSite: "s", PathCost: 1, Score: 2}}}},
		Listeners:  []Listener{{"l", "k", true}},
		Connectors: []Connector{{"c", "k", true}},
		Links:      []Link{{Name: "l", Peer: "p", Role: "dialer", Up: true, Cost: 1}},
		Routes:     []Route{{"s", "p", 1}},
	}}, &fakeKernel{ks: KernelState{Maps: []MapUsage{{"m", 1, 2}}}})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var served []string
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "# TYPE ") {
			served = append(served, strings.TrimPrefix(line, "# TYPE "))
		}
	}
	var want []string
	for _, d := range Definitions {
		want = append(want, d.Name+" "+string(d.Kind))
		if !strings.Contains(rec.Body.String(), "# HELP "+d.Name+" "+d.Help+"\n") {
			t.Errorf("%s: help not served as defined", d.Name)
		}
	}
	sort.Strings(want)
	sort.Strings(served)
	if strings.Join(served, "\n") != strings.Join(want, "\n") {
		t.Fatalf("served metrics:\n%s\nwant:\n%s", strings.Join(served, "\n"), strings.Join(want, "\n"))
	}
}

// TestLabelsDocumented: every label of every metric is explained in the reference.
func TestLabelsDocumented(t *testing.T) {
	for _, d := range Definitions {
		for _, l := range append([]string{"site"}, d.Labels...) {
			if LabelHelp[l] == "" {
				t.Errorf("%s: label %s has no LabelHelp entry", d.Name, l)
			}
		}
		if !strings.HasPrefix(d.Name, "skfwd_") {
			t.Errorf("%s: no skfwd_ prefix", d.Name)
		}
		if (d.Kind == Counter) != strings.HasSuffix(d.Name, "_total") {
			t.Errorf("%s: counters, and only counters, end in _total", d.Name)
		}
	}
}

// TestRejectionsFromStart: every rejection reason and the bad-request refusal are exported at
// 0 before anything happens, so increase() sees the first one, and count from there.
func TestRejectionsFromStart(t *testing.T) {
	m := New("b", "test")
	badRequest := `skfwd_requests_refused_total{reason="bad-request",routing_key="other",site="b",source_site="other"}`
	rejected := func(r string) string { return `skfwd_link_handshakes_rejected_total{reason="` + r + `",site="b"}` }
	got := scrape(t, m)
	for _, r := range HandshakeReasons {
		if v := got[rejected(r)]; v != "0" {
			t.Errorf("%s = %q at start, want 0", rejected(r), v)
		}
	}
	if v := got[badRequest]; v != "0" {
		t.Errorf("%s = %q at start, want 0", badRequest, v)
	}
	m.HandshakeRejected("bad-proof")
	m.BadRequest()
	m.BadRequest()
	got = scrape(t, m)
	if got[rejected("bad-proof")] != "1" || got[rejected("malformed")] != "0" || got[badRequest] != "2" {
		t.Errorf("after one bad proof and two bad requests: bad-proof %s, malformed %s, bad-request %s",
			got[rejected("bad-proof")], got[rejected("malformed")], got[badRequest])
	}
}

// TestSeriesFromStart: what the configuration names is exported at 0 before any event, a
// remote target once it is a candidate, a neighbor's deliveries once its link is up; sites
// outside the bounds get nothing.
func TestSeriesFromStart(t *testing.T) {
	m := New("a", "test")
	m.Configured("a", []string{"db", "web"}, []Connector{{Name: "db-local", RoutingKey: "db"}, {Name: "cache", RoutingKey: "cache"}})
	m.SetBounds([]string{"db", "web", "cache"}, func(site string) bool { return site == "a" || site == "b" })
	m.Target("web", "b", false)
	m.Target("web", "z", false) // not reachable: no series
	m.LinkUp("a-to-c", "c")
	got := scrape(t, m)
	const s = `site="a"`
	want := []string{
		`skfwd_connections_accepted_total{routing_key="web",` + s + `}`,
		`skfwd_connections_failed_total{routing_key="db",` + s + `}`,
		`skfwd_connections_opened_total{dest_site="a",routing_key="db",` + s + `}`,
		`skfwd_connections_closed_total{dest_site="a",outcome="reset",routing_key="db",` + s + `}`,
		`skfwd_connection_bytes_total{dest_site="a",direction="to_client",routing_key="db",` + s + `}`,
		`skfwd_connection_setup_seconds_count{dest_site="a",routing_key="db",` + s + `}`,
		`skfwd_connections_opened_total{dest_site="b",routing_key="web",` + s + `}`,
		`skfwd_connections_closed_total{dest_site="b",outcome="ok",routing_key="web",` + s + `}`,
		`skfwd_connection_bytes_total{dest_site="b",direction="to_target",routing_key="web",` + s + `}`,
		`skfwd_connection_setup_seconds_bucket{dest_site="b",routing_key="web",` + s + `,le="+Inf"}`,
		`skfwd_connections_delivered_total{connector="db-local",routing_key="db",` + s + `,source_site="c"}`,
		`skfwd_connections_delivered_total{connector="cache",routing_key="cache",` + s + `,source_site="c"}`,
		`skfwd_link_heartbeat_misses_total{link="a-to-c",peer_site="c",` + s + `}`,
		`skfwd_tunnel_pool_misses_total{link="a-to-c",peer_site="c",` + s + `}`,
	}
	for _, r := range Reasons {
		for _, k := range []string{"db", "web"} {
			want = append(want, `skfwd_connection_retries_total{reason="`+r+`",routing_key="`+k+`",`+s+`}`)
		}
		want = append(want, `skfwd_connection_attempt_failures_total{dest_site="a",reason="`+r+`",routing_key="db",`+s+`}`)
	}
	for _, name := range want {
		if v, ok := got[name]; v != "0" {
			t.Errorf("%s = %q (exported %v), want 0", name, v, ok)
		}
	}
	for name := range got {
		for _, bad := range []string{
			`routing_key="cache"` + "," + s + `}`, // served here, not listened for: no ingress series
			`dest_site="z"`,
			`skfwd_connection_attempt_failures_total{dest_site="b"`, // remote: from its first failure
			`skfwd_connections_opened_total{dest_site="a",routing_key="web"`,
		} {
			if strings.Contains(name, bad) {
				t.Errorf("%s exported, want absent", name)
			}
		}
	}
	// Counting goes on from the pre-created series.
	m.Committed("web", "b", time.Millisecond)
	if v := scrape(t, m)[`skfwd_connections_opened_total{dest_site="b",routing_key="web",`+s+`}`]; v != "1" {
		t.Errorf("after one connection to b: opened %q, want 1", v)
	}
}
