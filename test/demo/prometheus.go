package main

// With -prometheus, the demo runs a real Prometheus (the distribution's package) that scrapes
// every site, so Grafana can show the run on dashboards/skfwd.json while it happens. Prometheus
// runs in the host's namespace, listening on the loopback address given, so a Grafana on this
// machine reaches it as it is. Each site serves /metrics on a loopback address of its own
// namespace; a netlab.Forward per site relays a free host loopback port to it. At the end the
// demo asks Prometheus what it counted and checks that against the connections it made itself.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
)

const (
	promScrape = time.Second
	// promExample is the address the help and the Makefile suggest: not 9090, where the Debian
	// package's own service listens once installed on a machine with systemd.
	promExample = "127.0.0.1:9099"
	// promRules are the shipped alerting rules, loaded when the demo runs from the repository.
	promRules = "deploy/prometheus/alerts.yaml"
	// openedExpr counts, per target, the connections the client site placed.
	openedExpr = `sum by (dest_site) (skfwd_connections_opened_total{site="client",routing_key="` + routingKey + `"})`
)

// checkPromAddr accepts a loopback host:port: the demo's Prometheus has no authentication, so it
// must not listen where other machines reach it.
func checkPromAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-prometheus %q: want host:port, e.g. %s", addr, promExample)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("-prometheus %q: port %q: want a number from 1 to 65535, e.g. %s", addr, port, promExample)
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		return fmt.Errorf("-prometheus %q: want a loopback address, e.g. %s (the demo's Prometheus has no authentication)", addr, promExample)
	}
	return nil
}

// promServer is the demo's Prometheus process and the forwards it scrapes through.
type promServer struct {
	addr     string // where it serves its UI and API
	dir      string // configuration, data and log; removed by stop
	rules    string // alerting rules loaded, "" when none
	cmd      *exec.Cmd
	exited   chan struct{}
	forwards []*netlab.Forward
	client   *http.Client
}

func (p *promServer) url() string { return "http://" + p.addr }

// start runs Prometheus on addr, scraping every site, and returns once every site is scraped.
// On error, stop releases what it made.
func (p *promServer) start(ctx context.Context, bin string, sites []*netlab.Site) error {
	// Prometheus would only log a bind error; this says which address and what to do.
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("-prometheus %s: cannot listen there: %w (the Debian package's own Prometheus may hold it: pick another address, e.g. -prometheus %s)", p.addr, err, promExample)
	}
	ln.Close()
	if p.dir, err = os.MkdirTemp("", "skfwd-demo-prometheus-"); err != nil {
		return err
	}
	var targets []string
	for _, s := range sites {
		f, err := s.Forward("127.0.0.1:0", s.AdminAddress())
		if err != nil {
			return err
		}
		p.forwards = append(p.forwards, f)
		targets = append(targets, fmt.Sprintf("      - targets: [%q]\n        labels: {instance: %q}\n", f.Addr(), s.Name))
	}
	if abs, err := filepath.Abs(promRules); err == nil {
		if _, err := os.Stat(abs); err == nil {
			p.rules = abs
		}
	}
	if err := os.WriteFile(filepath.Join(p.dir, "prometheus.yml"), []byte(promConfig(targets, p.rules)), 0o644); err != nil {
		return err
	}
	if err := p.run(bin); err != nil {
		return err
	}
	if err := p.waitReady(ctx, 30*time.Second); err != nil {
		return err
	}
	return p.waitTargetsUp(ctx, 15*time.Second, len(sites))
}

// promConfig is a prometheus.yml with one job: every site, instance named after it.
func promConfig(targets []string, rules string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %v\n  evaluation_interval: %v\n", promScrape, promScrape)
	if rules != "" {
		fmt.Fprintf(&b, "rule_files: [%q]\n", rules)
	}
	b.WriteString("scrape_configs:\n  - job_name: skfwd\n    static_configs:\n")
	b.WriteString(strings.Join(targets, ""))
	return b.String()
}

func (p *promServer) logPath() string { return filepath.Join(p.dir, "prometheus.log") }

func (p *promServer) run(bin string) error {
	logf, err := os.Create(p.logPath())
	if err != nil {
		return err
	}
	defer logf.Close()
	p.cmd = exec.Command(bin,
		"--config.file", filepath.Join(p.dir, "prometheus.yml"),
		"--storage.tsdb.path", filepath.Join(p.dir, "data"),
		"--web.listen-address", p.addr)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// Its own process group, so a Ctrl-C at the terminal reaches only the demo, which stops
	// Prometheus after it has stopped the load; killed with the demo if the demo is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		p.cmd = nil
		return fmt.Errorf("start prometheus: %w", err)
	}
	p.exited = make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	p.client = &http.Client{Timeout: 5 * time.Second}
	return nil
}

func (p *promServer) logTail() string {
	b, _ := os.ReadFile(p.logPath())
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// poll calls done every 100ms until it reports true, Prometheus exits, ctx ends or timeout passes.
func (p *promServer) poll(ctx context.Context, timeout time.Duration, what string, done func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := done()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("prometheus: %s not reached within %v: %v", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.exited:
			return fmt.Errorf("prometheus exited (%s) before %s:\n%s", p.cmd.ProcessState, what, p.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *promServer) waitReady(ctx context.Context, timeout time.Duration) error {
	return p.poll(ctx, timeout, "ready", func() (bool, error) {
		resp, err := p.client.Get(p.url() + "/-/ready")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("/-/ready: %s", resp.Status)
	})
}

type promTarget struct {
	Labels    map[string]string `json:"labels"`
	Health    string            `json:"health"`
	LastError string            `json:"lastError"`
}

// waitTargetsUp waits until Prometheus has scraped every site successfully.
func (p *promServer) waitTargetsUp(ctx context.Context, timeout time.Duration, n int) error {
	return p.poll(ctx, timeout, fmt.Sprintf("%d targets up", n), func() (bool, error) {
		data, err := p.get("/api/v1/targets", nil)
		if err != nil {
			return false, err
		}
		var v struct {
			ActiveTargets []promTarget `json:"activeTargets"`
		}
		if err := json.Unmarshal(data, &v); err != nil {
			return false, err
		}
		up := 0
		var down []string
		for _, t := range v.ActiveTargets {
			if t.Health == "up" {
				up++
			} else {
				down = append(down, fmt.Sprintf("%s %s %s", t.Labels["instance"], t.Health, t.LastError))
			}
		}
		return up == n, fmt.Errorf("%d of %d targets up; not up: %s", up, n, strings.Join(down, "; "))
	})
}

// get calls the HTTP API and returns its data, or the error Prometheus gave.
func (p *promServer) get(path string, q url.Values) (json.RawMessage, error) {
	return netlab.PromGet(p.client, p.url(), path, q)
}

// valuesBy evaluates expr at the given time and returns each series' value by one label.
func (p *promServer) valuesBy(expr, label string, at time.Time) (map[string]int, error) {
	data, err := p.get("/api/v1/query", url.Values{"query": {expr}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}})
	if err != nil {
		return nil, err
	}
	var v struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, s := range v.Result {
		text, _ := s.Value[1].(string)
		f, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: value %q of %v: %w", expr, text, s.Metric, err)
		}
		out[s.Metric[label]] = int(f)
	}
	return out, nil
}

// stop ends Prometheus, closes the forwards and removes the directory. Safe on a partial start.
func (p *promServer) stop() error {
	var errs []error
	if p.cmd != nil {
		pid := p.cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-p.exited
			errs = append(errs, errors.New("prometheus did not stop within 10s of SIGTERM: killed"))
		}
	}
	for _, f := range p.forwards {
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if p.dir != "" {
		if err := os.RemoveAll(p.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove prometheus directory: %w", err))
		}
	}
	return errors.Join(errs...)
}

// findPrometheus finds the prometheus binary, before the demo builds anything.
func findPrometheus() (string, error) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		return "", fmt.Errorf("-prometheus: %w (install the Debian package: make deps, or apt-get install prometheus)", err)
	}
	return bin, nil
}

// startPrometheus starts the demo's Prometheus over every site and tells the user where it is.
func (d *demo) startPrometheus(ctx context.Context, bin string) error {
	d.prom = &promServer{addr: d.opts.prometheus}
	began := time.Now()
	if err := d.prom.start(ctx, bin, []*netlab.Site{d.client, d.near, d.hub, d.far}); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "\nPrometheus (%s) scrapes all four sites every %v, up %v after its start: %s\n",
		bin, promScrape, time.Since(began).Round(100*time.Millisecond), d.prom.url())
	var via []string
	for i, s := range []*netlab.Site{d.client, d.near, d.hub, d.far} {
		via = append(via, fmt.Sprintf("%s %s", s.Name, d.prom.forwards[i].Addr()))
	}
	fmt.Fprintf(d.out, "  each site's admin address (%s in its namespace) is reached from this host at: %s\n",
		d.client.AdminAddress(), strings.Join(via, ", "))
	if d.prom.rules != "" {
		fmt.Fprintf(d.out, "  alerting rules: %s (SkfwdConnectorDown fires a minute after near's backend dies)\n", promRules)
	}
	fmt.Fprintf(d.out, "  Grafana: add a Prometheus data source at %s (scrape interval 1s) and import dashboards/skfwd.json\n", d.prom.url())
	if d.opts.hold {
		fmt.Fprintln(d.out, "  with -hold, the network and Prometheus stay up after the summary until Ctrl-C")
	} else {
		fmt.Fprintln(d.out, "  it is removed when the demo ends (-hold keeps it up after the summary until Ctrl-C)")
	}
	return nil
}

// tally is what the demo itself saw placed per target: the connections that a backend answered
// (short and held), and those in flight at the kill that near's death ended. The gateway counted
// the first for sure, and those of the second that had reached near's backend before it died.
type tally struct {
	answered map[string]int
	inFlight int
}

// checkPrometheus asks Prometheus what site client placed, per target, over the whole run and
// since the kill, and records a problem where that disagrees with what the demo measured.
func (d *demo) checkPrometheus(ctx context.Context) {
	p := d.prom
	// A scrape after the last connection ended, and one after the kill, so both counts are whole.
	end := d.loadStopped.Add(2 * promScrape)
	afterKill := d.killedAt.Add(2 * promScrape)
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Until(end)):
	}
	atEnd, err := p.valuesBy(openedExpr, "dest_site", end)
	if err == nil && len(atEnd) == 0 {
		err = errors.New("no series: it scraped nothing of the demo's traffic")
	}
	var atKill map[string]int
	if err == nil {
		atKill, err = p.valuesBy(openedExpr, "dest_site", afterKill)
	}
	if err != nil {
		d.problem("Prometheus at %s: %s: %v", p.url(), openedExpr, err)
		return
	}
	want := d.tally.answered
	fmt.Fprintf(d.out, "  Prometheus (%s) asked for %s:\n", p.url(), openedExpr)
	fmt.Fprintf(d.out, "    site client placed: %s; the demo's clients were answered by: %s", perTarget(atEnd), perTarget(want))
	if d.tally.inFlight > 0 {
		fmt.Fprintf(d.out, ", and %d ended in flight by near's death", d.tally.inFlight)
	}
	fmt.Fprintln(d.out)
	moved := map[string]int{}
	var grew []string
	for _, t := range targets {
		moved[t] = atEnd[t] - atKill[t]
		grew = append(grew, fmt.Sprintf("%s +%d", t, moved[t]))
	}
	fmt.Fprintf(d.out, "    from %v after the kill to the end: %s\n", afterKill.Sub(d.killedAt), strings.Join(grew, ", "))
	if atEnd["far"] != want["far"] {
		d.problem("Prometheus counted %d connections placed on far, the demo's clients were answered by far %d times", atEnd["far"], want["far"])
	}
	if atEnd["near"] < want["near"] || atEnd["near"] > want["near"]+d.tally.inFlight {
		d.problem("Prometheus counted %d connections placed on near, want %d answered by near plus up to %d in flight at the kill",
			atEnd["near"], want["near"], d.tally.inFlight)
	}
	if moved["near"] != 0 {
		d.problem("Prometheus counted %d connections placed on near after its backend died", moved["near"])
	}
	if moved["far"] == 0 {
		d.problem("Prometheus saw no connection placed on far after near's backend died: the traffic did not move")
	}
}

// hold keeps the network and Prometheus up until Ctrl-C, for a look at the run in Grafana.
func (d *demo) hold(ctx context.Context) {
	fmt.Fprintf(d.out, "\nholding (-hold): Prometheus at %s and the network stay up (the load has stopped, the held\n", d.prom.url())
	fmt.Fprintln(d.out, "connections on far stay open); Ctrl-C removes everything")
	<-ctx.Done()
	fmt.Fprintln(d.out, "\nstopping: removing Prometheus and the network...")
}
