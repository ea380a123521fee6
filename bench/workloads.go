package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// workload runs once per forwarder and repetition and returns its measurements.
type workload struct {
	id, name string
	// proxyOnly: skipped for direct routing (nothing to fail over).
	proxyOnly bool
	// firstRepOnly: run in the first repetition only (a long stability check, not a race).
	firstRepOnly bool
	run          func(ctx context.Context, r *runCtx) ([]measure, error)
}

// measure is one number a workload produced; the metric ids are those of the metrics table.
type measure struct {
	metric string
	value  float64
}

// runCtx is what a workload gets: the network, the running forwarder and where to put raw output.
type runCtx struct {
	plan plan
	t    *topo
	fwd  forwarder
	inst *instance
	dir  string // raw output of this forwarder and repetition
}

// workloads, in the order they run on each forwarder; idle first, on a fresh one (see idle).
var workloads = []workload{
	{id: "idle", name: "idle connections held", run: idle},
	{id: "bulk1", name: "bulk, 1 stream", run: bulk(1)},
	{id: "bulk8", name: "bulk, 8 streams", run: bulk(8)},
	{id: "rate32", name: "connection rate, 32 workers", run: rate("rate32", 32)},
	{id: "rate256", name: "connection rate, 256 workers", run: rate("rate256", 256)},
	{id: "lat1", name: "latency, 1 worker", run: rate("lat1", 1)},
	{id: "ttfb", name: "time to first byte across the delay line", run: ttfb},
	{id: "mix", name: "connection rate while bulk flows", run: mix},
	{id: "sustain", name: "sustained connection rate", firstRepOnly: true, run: sustain},
	{id: "kill", name: "backend killed under load", proxyOnly: true, run: failover("kill")},
	{id: "cut", name: "backend site cut under load", proxyOnly: true, run: failover("cut")},
}

func workloadNames() string {
	var n []string
	for _, w := range workloads {
		n = append(n, w.id)
	}
	return strings.Join(n, ",")
}

func selectWorkloads(list string) ([]workload, error) {
	if list == "" {
		return workloads, nil
	}
	var out []workload
	for _, id := range strings.Split(list, ",") {
		found := false
		for _, w := range workloads {
			if w.id == id {
				out, found = append(out, w), true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown workload %q (have %s)", id, workloadNames())
		}
	}
	return out, nil
}

// runHelper runs cmd to completion and returns its stdout; on ctx's end it kills the
// command's process group.
func runHelper(ctx context.Context, cmd *exec.Cmd) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return stdout.Bytes(), fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, tail(stderr.String()+stdout.String()))
		}
		return stdout.Bytes(), nil
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return nil, ctx.Err()
	}
}

func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}

func (r *runCtx) load(ctx context.Context, args ...string) (loadResult, error) {
	var res loadResult
	out, err := runHelper(ctx, r.t.client.Command(r.t.self, append([]string{"load"}, args...)...))
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return res, fmt.Errorf("load client output: %w", err)
	}
	return res, nil
}

// save writes a raw result next to the others.
func (r *runCtx) save(name string, v any) {
	b, err := json.MarshalIndent(v, "", " ")
	if err == nil {
		err = os.WriteFile(filepath.Join(r.dir, name), b, 0o644)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: save %s: %v\n", name, err)
	}
}

type iperfOut struct {
	End struct {
		SumReceived struct {
			Bytes float64 `json:"bytes"`
			Bps   float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// iperf runs iperf3 from the client through the forwarder with streams parallel streams
// for secs seconds after omit seconds left out of the result (slow start), and saves its
// output as name.
func (r *runCtx) iperf(ctx context.Context, streams, secs, omit int, name string) (iperfOut, error) {
	var res iperfOut
	host, port, _ := net.SplitHostPort(r.inst.addrs("iperf")[0])
	args := []string{"-c", host, "-p", port, "-t", fmt.Sprint(secs), "-P", fmt.Sprint(streams), "-J"}
	if omit > 0 {
		args = append(args, "-O", fmt.Sprint(omit))
	}
	out, err := runHelper(ctx, r.t.client.Command("iperf3", args...))
	if os.WriteFile(filepath.Join(r.dir, name), out, 0o644) != nil {
		fmt.Fprintln(os.Stderr, "bench: could not save iperf3 output")
	}
	if jerr := json.Unmarshal(out, &res); jerr == nil && res.Error != "" {
		return res, fmt.Errorf("iperf3: %s", res.Error)
	} else if err != nil {
		return res, err
	} else if jerr != nil {
		return res, fmt.Errorf("iperf3 output: %w", jerr)
	}
	if res.End.SumReceived.Bytes <= 0 {
		return res, fmt.Errorf("iperf3 moved no data")
	}
	return res, nil
}

func bulk(streams int) func(ctx context.Context, r *runCtx) ([]measure, error) {
	return func(ctx context.Context, r *runCtx) ([]measure, error) {
		secs := max(1, int(r.plan.Bulk.Seconds()))
		before, err := snapCPU(r.inst.pids())
		if err != nil {
			return nil, err
		}
		res, err := r.iperf(ctx, streams, secs, 0, fmt.Sprintf("iperf3-P%d.json", streams))
		if err != nil {
			return nil, err
		}
		after, err := snapCPU(r.inst.pids())
		if err != nil {
			return nil, err
		}
		gb := res.End.SumReceived.Bytes / 1e9
		d := after.since(before)
		id := fmt.Sprintf("bulk%d", streams)
		m := []measure{{id + "_gbps", res.End.SumReceived.Bps / 1e9}, {id + "_cpu", d.machine / gb}}
		if r.fwd.proxy {
			m = append(m, measure{id + "_fwdcpu", d.fwd / gb})
		}
		return m, nil
	}
}

// echoRun runs the connection load (connect, 64 B echo, close) with workers workers for d,
// saves its result as name.json and fails when no connection succeeded.
func (r *runCtx) echoRun(ctx context.Context, name string, workers int, d time.Duration) (loadResult, error) {
	res, err := r.load(ctx, "-addrs", strings.Join(r.inst.addrs("echo"), ","),
		"-workers", fmt.Sprint(workers), "-duration", d.String())
	if err != nil {
		return res, err
	}
	r.save(name+".json", res)
	if res.Conns == 0 {
		return res, fmt.Errorf("no connection succeeded (%d errors: %v)", res.Errors, res.FirstErrs)
	}
	return res, nil
}

// rateMeasures: a connection load's rate, latency and failures, as rows id_cps, _p50, _p99, _err.
func rateMeasures(id string, res loadResult) []measure {
	return []measure{
		{id + "_cps", float64(res.Conns) / (float64(res.ElapsedNs) / 1e9)},
		{id + "_p50", float64(res.P50Ns) / 1e6},
		{id + "_p99", float64(res.P99Ns) / 1e6},
		{id + "_err", float64(res.Errors)},
	}
}

func rate(id string, workers int) func(ctx context.Context, r *runCtx) ([]measure, error) {
	return func(ctx context.Context, r *runCtx) ([]measure, error) {
		before, err := snapCPU(r.inst.pids())
		if err != nil {
			return nil, err
		}
		res, err := r.echoRun(ctx, id, workers, r.plan.Rate)
		if err != nil {
			return nil, err
		}
		after, err := snapCPU(r.inst.pids())
		if err != nil {
			return nil, err
		}
		d := after.since(before)
		n := float64(res.Conns)
		m := append(rateMeasures(id, res), measure{id + "_cpu", d.machine * 1e6 / n})
		if r.fwd.proxy {
			m = append(m, measure{id + "_fwdcpu", d.fwd * 1e6 / n})
		}
		return m, nil
	}
}

// mixStreams and mixWorkers: the bulk streams and the connection workers of the mix.
const (
	mixStreams = 4
	mixWorkers = 32
)

// mix runs mixStreams bulk streams (iperf3) through the forwarder and, while they flow, the
// connection load with mixWorkers workers for plan.Mix: the short connections' rate and
// latency next to bulk (a forwarder that lets bulk crowd them out shows in their p99), and
// the bulk throughput meanwhile.
func mix(ctx context.Context, r *runCtx) ([]measure, error) {
	type bulkResult struct {
		res iperfOut
		err error
	}
	// The streams run a second longer than the load on each side: the first second is left
	// out of their result (slow start; skfwd moves them to tunnels then) and the load starts
	// after it.
	secs := max(1, int(r.plan.Mix.Seconds())) + 1
	ch := make(chan bulkResult, 1)
	go func() {
		res, err := r.iperf(ctx, mixStreams, secs, 1, "iperf3-mix.json")
		ch <- bulkResult{res, err}
	}()
	if err := sleep(ctx, time.Second); err != nil {
		<-ch
		return nil, err
	}
	res, err := r.echoRun(ctx, "mix", mixWorkers, r.plan.Mix)
	b := <-ch
	if err != nil {
		return nil, err
	}
	if b.err != nil {
		return nil, fmt.Errorf("bulk streams: %w", b.err)
	}
	return append(rateMeasures("mix", res), measure{"mix_gbps", b.res.End.SumReceived.Bps / 1e9}), nil
}

// sustain runs the 32-worker connection load for plan.Sustain: its mean rate, the rate of
// its slowest tenth (a collapse shows there, as TIME_WAIT exhaustion once did after a
// minute), failures, and for skfwd the link flaps (links that went down) during the run.
func sustain(ctx context.Context, r *runCtx) ([]measure, error) {
	flapsBefore := r.inst.flaps()
	res, err := r.echoRun(ctx, "sustain", 32, r.plan.Sustain)
	if err != nil {
		return nil, err
	}
	if len(res.PerSecond) == 0 {
		return nil, fmt.Errorf("no connection succeeded (%d errors: %v)", res.Errors, res.FirstErrs)
	}
	window := max(len(res.PerSecond)/10, 1)
	slowest := -1.0
	for i := 0; i+window <= len(res.PerSecond); i += window {
		var n int64
		for _, c := range res.PerSecond[i : i+window] {
			n += c
		}
		if rate := float64(n) / float64(window); slowest < 0 || rate < slowest {
			slowest = rate
		}
	}
	m := []measure{
		{"sustain_cps", float64(res.Conns) / (float64(res.ElapsedNs) / 1e9)},
		{"sustain_low", slowest},
		{"sustain_err", float64(res.Errors)},
	}
	if flapsBefore >= 0 {
		m = append(m, measure{"sustain_flaps", float64(r.inst.flaps() - flapsBefore)})
	}
	return m, nil
}

func ttfb(ctx context.Context, r *runCtx) ([]measure, error) {
	if err := r.t.delayOn(ctx, r.plan.Delay); err != nil {
		return nil, err
	}
	defer func() {
		if err := r.t.delayOff(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: delay line off: %v\n", err)
		}
	}()
	// Let pools and health checks settle at the new distance.
	if err := sleep(ctx, time.Second); err != nil {
		return nil, err
	}
	var m []measure
	for _, c := range []struct{ id, mode, key string }{
		{"ttfb_client", "ttfb-client", "echo"},
		{"ttfb_server", "ttfb-server", "banner"},
	} {
		res, err := r.load(ctx, "-mode", c.mode, "-addrs", strings.Join(r.inst.addrs(c.key), ","),
			"-probes", fmt.Sprint(r.plan.TTFBProbes), "-gap", "100ms")
		if err != nil {
			return nil, err
		}
		r.save(c.id+".json", res)
		m = append(m, measure{c.id, float64(res.P50Ns) / 1e6})
	}
	return m, nil
}

// stallLimit: a connection slower than this counts as caught by the failure (normal ones
// take about a millisecond here).
const stallLimit = 100 * time.Millisecond

func failover(kind string) func(ctx context.Context, r *runCtx) ([]measure, error) {
	return func(ctx context.Context, r *runCtx) ([]measure, error) {
		t := r.t
		type result struct {
			res loadResult
			err error
		}
		ch := make(chan result, 1)
		go func() {
			res, err := r.load(ctx, "-addrs", strings.Join(r.inst.addrs("echo"), ","), "-events",
				"-workers", fmt.Sprint(r.plan.FailWorkers), "-duration", r.plan.FailRun.String())
			ch <- result{res, err}
		}()
		if err := sleep(ctx, r.plan.FailAt); err != nil {
			<-ch
			return nil, err
		}
		var actErr error
		if kind == "kill" {
			t.echo[0].kill() // returns once the process is gone
		} else {
			actErr = t.be[0].IP("link", "set", t.beVeth[0].BIf, "down")
		}
		// The failure is complete now: a connection started earlier may already have reached
		// the backend, one started later cannot.
		at := time.Now()
		lr := <-ch
		// Put the backend back whatever happened, so the next workload finds both.
		var restoreErr error
		if kind == "kill" {
			t.echo[0], restoreErr = t.startEcho(0)
		} else if restoreErr = t.be[0].IP("link", "set", t.beVeth[0].BIf, "up"); restoreErr == nil {
			restoreErr = t.beRoute(0)
		}
		for _, err := range []error{actErr, lr.err, restoreErr} {
			if err != nil {
				return nil, err
			}
		}
		f := analyzeFailover(lr.res.Events, at.UnixNano(), stallLimit)
		lr.res.Events = nil // large; the summary is what matters
		r.save(kind+".json", struct {
			Load loadResult `json:"load"`
			Fail failStats  `json:"failover"`
		}{lr.res, f})
		// Both backends must answer again, through the forwarder, before the next workload.
		if err := waitBackends(ctx, t.client, r.inst.addrs("banner"), []string{"be1", "be2"}, 30*time.Second); err != nil {
			return nil, fmt.Errorf("after %s: %w", kind, err)
		}
		if err := sleep(ctx, 1500*time.Millisecond); err != nil { // the other keys' health checks
			return nil, err
		}
		return []measure{
			{kind + "_failed", float64(f.Failed)},
			{kind + "_inflight", float64(f.InFlight)},
			{kind + "_recovery", f.Recovery.Seconds()},
			{kind + "_stalled", float64(f.Stalled)},
		}, nil
	}
}

// failStats sums up a failover run.
type failStats struct {
	Total int `json:"total"`
	// Failed: connections that started after the failure and failed. Those are the
	// forwarder's to save: it has a healthy backend to send them to.
	Failed int `json:"failed"`
	// InFlight: connections already exchanging bytes with the failed backend when it failed,
	// that failed or hung (to the client's timeout). No forwarder can move them: their
	// bytes went to the backend that is gone.
	InFlight int `json:"in_flight"`
	Stalled  int `json:"stalled"` // started after the failure, succeeded, but slower than the stall limit
	// Recovery: from the failure until the last connection started after it that failed or
	// stalled ended; after that, new connections flowed normally. Zero when none noticed.
	Recovery time.Duration `json:"recovery_ns"`
}

// analyzeFailover reads a failover run's connections; at is when the failure happened (unix ns).
func analyzeFailover(events []event, at int64, stall time.Duration) failStats {
	var f failStats
	for _, e := range events {
		f.Total++
		slow := time.Duration(e.End-e.Start) > stall
		bad := !e.OK || slow
		switch {
		case e.Start < at:
			if bad && e.End > at {
				f.InFlight++
			}
		case !e.OK:
			f.Failed++
		case slow:
			f.Stalled++
		}
		if bad && e.Start >= at {
			f.Recovery = max(f.Recovery, time.Duration(e.End-at))
		}
	}
	return f
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
