package netns

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
	"github.com/skfwd/skfwd/pkg/gateway"
	"github.com/skfwd/skfwd/pkg/metrics"
)

// The Prometheus test runs one real Prometheus (the distribution's package) for the whole
// network, in a monitoring namespace of its own joined to every site by a veth pair: each
// site's admin-address is its end of that pair, so Prometheus scrapes every site over a real
// network, as it would scrape hosts, and queries across sites (sum by dest_site over every
// ingress) work as they do in production. One Prometheus per site would not test that.

const (
	promScrape = time.Second
	// The test's stand-in for Grafana's $__rate_interval: long enough to hold the whole run.
	promRange = "2m"
)

var (
	dashboardPath = filepath.Join("..", "..", "dashboards", "skfwd.json")
	alertsPath    = filepath.Join("..", "..", "deploy", "prometheus", "alerts.yaml")
)

// kernelOnly names the metrics that exist only on the kernel data path (or once it has
// demoted or fallen back): on a userspace network their queries must succeed and be empty.
var kernelOnly = []string{"skfwd_kernel_demotions_total", "skfwd_kernel_fallbacks_total", "skfwd_kernel_bytes",
	"skfwd_bpf_map_entries", "skfwd_collect_errors_total"}

func TestPrometheusScrapesLiveNetwork(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not installed (Debian package prometheus; scripts/install-deps.sh installs it)")
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not installed (Debian package prometheus)")
	}
	t.Run("promtool check rules", func(t *testing.T) {
		out, err := exec.Command(promtool, "check", "rules", alertsPath).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS: 3 rules found") {
			t.Fatalf("promtool check rules: %v\n%s", err, out)
		}
	})

	lab := newLab(t)
	// Pools of one tunnel run dry under load, so the pool-miss series has data.
	lab.Settings["tunnel-pool-size"] = "1"
	a, b, c := site(t, lab, "a"), site(t, lab, "b"), site(t, lab, "c")
	ifB, _ := link(t, lab, a, b, 1)
	link(t, lab, a, c, 2)
	a.Listener("backend", svc, svcPort)
	// A listener whose key nothing serves: the no-candidate alert must fire for it.
	a.Listener("orphan", "orphan", 8081)
	b.Connector("backend", svc, beAddr)
	c.Connector("backend", svc, beAddr)
	beB := backend(t, b, "b", beAddr)
	backend(t, c, "c", beAddr)

	mon := site(t, lab, "mon") // no gateway: Prometheus runs here
	var targets []string
	for _, s := range []*netlab.Site{a, b, c} {
		v, err := lab.Veth(mon, s)
		check(t, err)
		s.Set("admin-address", v.BIP+":9441")
		targets = append(targets, v.BIP+":9441")
	}
	start(t, b, c, a)
	check(t, a.WaitCandidates(converged, svc, "b", "c"))

	prom := startPrometheus(t, promBin, mon, targets)
	check(t, prom.waitTargetsUp(15*time.Second, len(targets)))

	// Load, with connections held open (so open counts and active tunnels are non-zero at
	// every scrape), and the backend at b killed halfway through.
	_, held := holdN(t, a, 6)
	defer closeAll(held)
	stop := make(chan struct{})
	go func() {
		time.Sleep(3 * time.Second)
		beB.StopListening()
		time.Sleep(3 * time.Second)
		close(stop)
	}()
	events := netlab.Load(a, svcAddr, 8, timeout, stop)
	sum := netlab.Summarize(events, time.Time{}, time.Time{})
	t.Logf("load: %d connections, %d failed, per backend %v", sum.Total, sum.Failed, sum.PerBackend)
	if sum.Failed != 0 {
		t.Errorf("%d client connections failed: %v", sum.Failed, sum.FirstFailures)
	}
	check(t, a.WaitCandidates(converged, svc, "c"))

	// The backend kill shows in the health and failure series.
	check(t, prom.waitFor(10*time.Second, `skfwd_connector_up{site="b",connector="backend"} == 0`))
	// Every failed attempt came after the kill: the series start then.
	failures := prom.mustQuery(t, `sum by (reason) (skfwd_connection_attempt_failures_total{site="a",dest_site="b"}) > 0`)
	if len(failures) == 0 {
		t.Fatal("no failed attempts toward b after its backend was killed")
	}
	for _, f := range failures {
		t.Logf("failed attempts a→b after the kill: reason=%s count=%s", f.Metric["reason"], f.value())
	}
	refused := prom.mustQuery(t, `skfwd_requests_refused_total{site="b",source_site="a"}`)
	if len(refused) == 0 {
		t.Error("b counted no refusal for a after its backend died")
	}

	// A silent link cut: heartbeats stop, the dialer shows the link down.
	check(t, a.SetLink(ifB, false))
	check(t, prom.waitFor(10*time.Second, `skfwd_link_up{site="a",peer_site="b"} == 0`))
	check(t, prom.waitFor(10*time.Second, `skfwd_link_heartbeat_misses_total{site="a",peer_site="b"} > 0`))
	time.Sleep(3 * promScrape) // every series that just appeared gets a second sample for rate()

	t.Run("every dashboard expression", func(t *testing.T) {
		for _, e := range dashboardExprs(t) {
			prom.checkExpr(t, e.where, e.expr)
		}
	})
	t.Run("every alert expression", func(t *testing.T) {
		want := map[string]map[string]string{
			"SkfwdLinkDown":      {"site": "a", "peer_site": "b", "role": "dialer"},
			"SkfwdConnectorDown": {"site": "b", "connector": "backend", "routing_key": svc},
			"SkfwdNoCandidate":   {"site": "a", "routing_key": "orphan"},
		}
		for name, expr := range alertExprs(t) {
			got := prom.checkExpr(t, "alert "+name, expr)
			if len(got) != 1 || !labelsInclude(got[0].Metric, want[name]) {
				t.Errorf("alert %s (%s) = %v, want one series with %v", name, expr, got, want[name])
			}
		}
	})
}

type promServer struct {
	mon    *netlab.Site
	addr   string
	client *http.Client
}

func startPrometheus(t *testing.T, bin string, mon *netlab.Site, targets []string) *promServer {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs(alertsPath)
	check(t, err)
	cfg := fmt.Sprintf(`global:
  scrape_interval: %v
  evaluation_interval: %v
rule_files: [%q]
scrape_configs:
  - job_name: skfwd
    static_configs:
      - targets: ["%s"]
`, promScrape, promScrape, rules, strings.Join(targets, `", "`))
	check(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644))
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	check(t, err)
	defer logf.Close()
	const addr = "127.0.0.1:9090"
	cmd := exec.Command("ip", "netns", "exec", mon.Netns(), bin,
		"--config.file", filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path", filepath.Join(dir, "data"),
		"--web.listen-address", addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	check(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", tail(b, 8000))
		}
	})
	p := &promServer{mon: mon, addr: addr, client: &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
				return mon.Dial(a, 2*time.Second)
			},
		},
	}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := p.client.Get("http://" + addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Fatalf("prometheus exited during start:\n%s", tail(b, 8000))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within 20s: %v", err)
		}
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s sample) value() string { v, _ := s.Value[1].(string); return v }

func (p *promServer) get(path string, q url.Values) (json.RawMessage, error) {
	return netlab.PromGet(p.client, "http://"+p.addr, path, q)
}

// query evaluates expr now through the HTTP API.
func (p *promServer) query(expr string) ([]sample, error) {
	data, err := p.get("/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	var v struct {
		ResultType string   `json:"resultType"`
		Result     []sample `json:"result"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	if v.ResultType != "vector" {
		return nil, fmt.Errorf("%s: result type %s, want vector", expr, v.ResultType)
	}
	return v.Result, nil
}

func (p *promServer) mustQuery(t *testing.T, expr string) []sample {
	t.Helper()
	r, err := p.query(expr)
	check(t, err)
	return r
}

func (p *promServer) waitFor(timeout time.Duration, expr string) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		r, err := p.query(expr)
		if err == nil && len(r) > 0 {
			return nil
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("prometheus: %s empty after %v (last error %v)", expr, timeout, last)
}

func (p *promServer) waitTargetsUp(timeout time.Duration, n int) error {
	if err := p.waitFor(timeout, fmt.Sprintf(`count(up{job="skfwd"} == 1) == %d`, n)); err != nil {
		data, _ := p.get("/api/v1/targets", nil)
		return fmt.Errorf("%w; targets: %s", err, data)
	}
	return nil
}

// checkExpr evaluates one dashboard or alert expression, as Grafana would with every site
// selected, and checks that it returns data with exactly the labels the expression promises;
// expressions over kernel-path metrics must be valid and empty on this userspace network.
func (p *promServer) checkExpr(t *testing.T, where, expr string) []sample {
	t.Helper()
	q := strings.NewReplacer("$__rate_interval", promRange, "$site", ".*").Replace(expr)
	got, err := p.query(q)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return nil
	}
	names := metricNames.FindAllString(expr, -1)
	if slices.ContainsFunc(names, func(n string) bool { return slices.Contains(kernelOnly, n) }) {
		if dataPath == "userspace" {
			if len(got) != 0 {
				t.Errorf("%s: %s returned %v on the userspace path, want nothing", where, expr, got)
			}
			t.Logf("ok (kernel path only, empty here): %s", expr)
			return got
		}
		if len(got) == 0 {
			t.Logf("ok (kernel path only, no data yet on data path %s): %s", dataPath, expr)
			return got
		}
	}
	if len(got) == 0 {
		t.Errorf("%s: %s returned no data", where, expr)
		return nil
	}
	want := expectedLabels(t, expr)
	for _, s := range got {
		var labels []string
		for l := range s.Metric {
			if l != "__name__" {
				labels = append(labels, l)
			}
		}
		// A remote candidate has no connector, and Prometheus drops empty labels.
		if slices.Contains(want, "connector") && s.Metric["connector"] == "" {
			labels = append(labels, "connector")
		}
		sort.Strings(labels)
		if strings.Join(labels, ",") != strings.Join(want, ",") {
			t.Errorf("%s: %s returned labels %v, want %v", where, expr, labels, want)
			break
		}
		for _, l := range labels {
			if l != "connector" && s.Metric[l] == "" {
				t.Errorf("%s: %s: label %s empty in %v", where, expr, l, s.Metric)
			}
		}
	}
	t.Logf("ok (%d series, labels %s): %s", len(got), strings.Join(want, ","), expr)
	return got
}

var (
	metricNames = regexp.MustCompile(`skfwd_[a-z_]+`)
	byClause    = regexp.MustCompile(`by \(([^)]*)\)`)
)

// expectedLabels: an aggregation keeps its by-labels (a histogram quantile drops le); a plain
// selector keeps the metric's labels, site, and the labels Prometheus adds to every target.
func expectedLabels(t *testing.T, expr string) []string {
	var out []string
	if m := byClause.FindAllStringSubmatch(expr, -1); m != nil {
		for _, l := range strings.Split(m[len(m)-1][1], ",") {
			if l = strings.TrimSpace(l); l != "le" {
				out = append(out, l)
			}
		}
	} else {
		name := metricNames.FindString(expr)
		var def *metrics.Def
		for i := range metrics.Definitions {
			if metrics.Definitions[i].Name == strings.TrimSuffix(name, "_bucket") {
				def = &metrics.Definitions[i]
			}
		}
		if def == nil {
			t.Fatalf("%s: %s is not a defined metric", expr, name)
		}
		out = append([]string{"site", "instance", "job"}, def.Labels...)
	}
	sort.Strings(out)
	return out
}

type located struct{ where, expr string }

func dashboardExprs(t *testing.T) []located {
	b, err := os.ReadFile(dashboardPath)
	check(t, err)
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	check(t, json.Unmarshal(b, &d))
	var out []located
	for _, p := range d.Panels {
		for i, tg := range p.Targets {
			out = append(out, located{where: fmt.Sprintf("panel %q query %d", p.Title, i), expr: tg.Expr})
		}
	}
	if len(out) < 30 {
		t.Fatalf("only %d dashboard expressions found", len(out))
	}
	return out
}

// alertExprs reads alert name → expression from the rules file (one line each, as written).
func alertExprs(t *testing.T) map[string]string {
	b, err := os.ReadFile(alertsPath)
	check(t, err)
	out := map[string]string{}
	var name string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "- alert:"); ok {
			name = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "expr:"); ok {
			out[name] = strings.TrimSpace(v)
		}
	}
	if len(out) != 3 {
		t.Fatalf("alert expressions %v, want 3", out)
	}
	return out
}

func labelsInclude(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// metricsReference is the metrics list the README points to (generated from pkg/metrics).
var metricsReference = filepath.Join("..", "..", "docs", "metrics.md")

// TestMetricsFreshNetwork starts two linked sites, each with a listener and a connector for
// one key, and scrapes both before any client connection: every metric of the reference must
// be exported, unless its entry there says it has no series yet (kernel path only, on a site
// that is not on it; reasons of the kernel path's own). The list comes from the reference
// itself, so the documentation and this test cannot drift apart.
func TestMetricsFreshNetwork(t *testing.T) {
	documented := documentedMetrics(t)
	lab := newLab(t)
	n := twoSites(t, lab, func(a, b *netlab.Site) {
		a.Connector("backend-a", svc, beAddr)
		b.Listener("backend", svc, svcPort)
		backend(t, a, "a", beAddr)
	})
	check(t, n.a.WaitCandidates(converged, svc, "b", "local:backend-a"))
	check(t, n.b.WaitCandidates(converged, svc, "a", "local:backend"))
	for _, s := range []*netlab.Site{n.a, n.b} {
		st := must[gateway.Status](t)(s.Status())
		body := scrape(t, s)
		var absent []string
		for _, d := range documented {
			if strings.Contains(d.meaning, metrics.NoSeriesNote) ||
				(strings.Contains(d.meaning, metrics.KernelOnlyNote) && st.DataPath == "userspace") {
				continue
			}
			if !exported(body, d.name) {
				absent = append(absent, d.name)
			}
		}
		if len(absent) > 0 {
			t.Errorf("site %s (data path %s): documented metrics absent before any traffic: %s", s.Name, st.DataPath, strings.Join(absent, ", "))
		}
		// A panel must read 0, not "no data": a few series of each kind of label.
		peer := map[string]string{"a": "b", "b": "a"}[s.Name]
		self := `site="` + s.Name + `"`
		for _, series := range []string{
			`skfwd_connections_opened_total{dest_site="` + peer + `",routing_key="backend",` + self + `}`,
			`skfwd_connection_retries_total{reason="link-lost",routing_key="backend",` + self + `}`,
			`skfwd_connections_delivered_total{connector="` + map[string]string{"a": "backend-a", "b": "backend"}[s.Name] + `",routing_key="backend",` + self + `,source_site="` + peer + `"}`,
			`skfwd_connection_moves_total{result="no-tunnel",` + self + `}`,
		} {
			checkSample(t, body, series, 0)
		}
	}
}

type documentedMetric struct{ name, meaning string }

// documentedMetrics reads the metric table of the reference: | `name` | type | source | labels | meaning |.
func documentedMetrics(t *testing.T) []documentedMetric {
	b, err := os.ReadFile(metricsReference)
	check(t, err)
	var out []documentedMetric
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, " | ")
		if len(cells) != 5 || !strings.HasPrefix(cells[0], "| `skfwd_") {
			continue
		}
		out = append(out, documentedMetric{name: strings.Trim(cells[0], "| `"), meaning: cells[4]})
	}
	if len(out) < len(metrics.Definitions) {
		t.Fatalf("%s lists %d metrics, the code defines %d: regenerate it (go run ./pkg/metrics/cmd/gendoc)", metricsReference, len(out), len(metrics.Definitions))
	}
	return out
}

// exported reports whether the exposition body has a sample of the metric name (a histogram's
// under name_count).
func exported(body, name string) bool {
	for _, line := range strings.Split(body, "\n") {
		for _, n := range []string{name, name + "_count"} {
			if strings.HasPrefix(line, n+"{") || strings.HasPrefix(line, n+" ") {
				return true
			}
		}
	}
	return false
}
