package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
)

// bench is one benchmark run.
type bench struct {
	plan       plan
	skfwd      string
	dir        string
	workloads  []workload
	forwarders []forwarder
	quick      bool

	started time.Time
	samples []sample
	errs    []string
}

func (b *bench) progress(format string, args ...any) {
	el := time.Since(b.started).Round(time.Second)
	fmt.Fprintf(os.Stderr, "[%6s] %s\n", el, fmt.Sprintf(format, args...))
}

func (b *bench) run(ctx context.Context) error {
	b.started = time.Now()
	netlab.RemoveStale()
	facts := machineFacts(b.skfwd)
	b.progress("results in %s", b.dir)
	for _, f := range facts {
		b.progress("%s", f)
	}
	t, err := newTopo(ctx, b.skfwd, b.dir)
	if err != nil {
		return fmt.Errorf("build the network: %w", err)
	}
	defer func() {
		b.progress("removing the network")
		t.close()
	}()
	b.progress("network up: client, gw1, gw2, be1, be2")

	for rep := 1; rep <= b.plan.Reps; rep++ {
		for _, f := range b.forwarders {
			if f.na != "" {
				continue
			}
			if err := b.runForwarder(ctx, t, rep, f); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				b.fail(rep, f.id, "start", err)
			}
		}
	}

	rtt := (2 * b.plan.Delay).String()
	md := b.markdown(facts, rtt)
	if err := os.WriteFile(filepath.Join(b.dir, "table.md"), []byte(md), 0o644); err != nil {
		return err
	}
	raw := struct {
		Machine []string `json:"machine"`
		Plan    plan     `json:"plan"`
		Samples []sample `json:"samples"`
		Errors  []string `json:"errors"`
	}{facts, b.plan, b.samples, b.errs}
	js, _ := json.MarshalIndent(raw, "", " ")
	if err := os.WriteFile(filepath.Join(b.dir, "results.json"), js, 0o644); err != nil {
		return err
	}
	fmt.Println(md)
	if len(b.errs) > 0 {
		return fmt.Errorf("%d workload(s) failed:\n  %s", len(b.errs), strings.Join(b.errs, "\n  "))
	}
	return nil
}

func (b *bench) fail(rep int, fwd, wl string, err error) {
	msg := fmt.Sprintf("rep %d, %s, %s: %v", rep, fwd, wl, err)
	b.errs = append(b.errs, msg)
	b.progress("FAILED %s", msg)
}

// runForwarder starts one forwarder, runs every workload through it and stops it.
func (b *bench) runForwarder(ctx context.Context, t *topo, rep int, f forwarder) error {
	dir := filepath.Join(b.dir, fmt.Sprintf("rep%d", rep), f.id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b.progress("rep %d/%d · %s: starting", rep, b.plan.Reps, f.name)
	inst, err := f.start(ctx, t, dir)
	if err != nil {
		return err
	}
	defer func() {
		if err := inst.stop(); err != nil {
			b.fail(rep, f.id, "stop", err)
		}
	}()
	r := &runCtx{plan: b.plan, t: t, fwd: f, inst: inst, dir: dir}
	for _, w := range b.workloads {
		if (w.proxyOnly && !f.proxy) || (w.firstRepOnly && rep > 1) {
			continue
		}
		ms, err := w.run(ctx, r)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			b.fail(rep, f.id, w.id, err)
			continue
		}
		var parts []string
		for _, m := range ms {
			b.samples = append(b.samples, sample{Rep: rep, Fwd: f.id, Metric: m.metric, Value: m.value})
			parts = append(parts, fmt.Sprintf("%s=%.4g", m.metric, m.value))
		}
		b.progress("rep %d/%d · %s · %s: %s", rep, b.plan.Reps, f.name, w.name, strings.Join(parts, " "))
	}
	return nil
}

func (b *bench) markdown(facts []string, rtt string) string {
	var s strings.Builder
	mode := "full"
	if b.quick {
		mode = "quick"
	}
	fmt.Fprintf(&s, "skfwd benchmark (%s), %s\n\n", mode, b.started.Format("2006-01-02 15:04 MST"))
	for _, f := range facts {
		fmt.Fprintf(&s, "- %s\n", f)
	}
	p := b.plan
	fmt.Fprintf(&s, "- %d repetition(s), interleaved; each cell: median (min–max); ratios are of medians\n", p.Reps)
	fmt.Fprintf(&s, "- bulk: iperf3 %v; connection rate: %v per run, 64 B echo; time to first byte: %d new connections, delay line %v each way; failover: %d workers, failure %v into a %v run; sustained rate: %v, first repetition only, to backends on non-loopback addresses\n",
		p.Bulk, p.Rate, p.TTFBProbes, p.Delay, p.FailWorkers, p.FailAt, p.FailRun, p.Sustain)
	fmt.Fprintf(&s, "- idle: %d connections held open and silent on a fresh forwarder (each echoed 64 B first), memory %v after the last opened, minus before; mix: %d workers for %v while %d iperf3 streams flow\n\n",
		p.IdleConns, idleSettle, mixWorkers, p.Mix, mixStreams)
	s.WriteString(table(b.forwarders, b.samples, rtt))
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&s, "\nLoad average at the end: %s (anything else running on the machine shows in these numbers).\n",
			strings.Join(strings.Fields(string(load))[:3], " "))
	}
	return s.String()
}

// machineFacts describes the machine and the software measured, for the table's header.
func machineFacts(skfwd string) []string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	first := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil && len(out) == 0 {
			return name + ": " + err.Error()
		}
		l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return l
	}
	load, _ := os.ReadFile("/proc/loadavg")
	return []string{
		fmt.Sprintf("machine: %s, %d CPUs%s, Linux %s; load average at start %s", cpu, runtime.NumCPU(), mem,
			strings.TrimSpace(string(kernel)), strings.Join(strings.Fields(string(load))[:3], " ")),
		fmt.Sprintf("software: skfwd %s; %s; %s; bench built with %s",
			first(skfwd, "version"), first("haproxy", "-v"), first("iperf3", "-v"), runtime.Version()),
	}
}
