// Command bench measures skfwd side by side with direct routing and an HAProxy 2.6 chain, on
// one machine, in one run: `make bench` (full) or `make bench-quick` (CI). It builds a network
// of namespaces (client, gw1, gw2, two backend sites), runs the same workloads through each
// forwarder, interleaving repetitions, and prints a Markdown table of medians with min-max and
// ratios. Raw results land in bench/results/<timestamp>/.
//
//	client --veth-- gw1 ==link (veth, or the delay line)== gw2 --veth-- be1
//	                                                            \--veth-- be2
//
// The same binary also runs the helpers it starts inside the namespaces: the echo server
// (`bench echo`), the load client (`bench load`) and the inter-site delay line
// (`bench delayline`). Everything it starts is removed when it ends, also on failure and on
// Ctrl-C. It needs root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "echo":
			return cmdEcho(args[1:])
		case "load":
			return cmdLoad(args[1:])
		case "delayline":
			return cmdDelayLine(args[1:])
		}
	}
	return cmdBench(args)
}

// plan holds how long and how often each workload runs.
type plan struct {
	Reps        int
	Bulk        time.Duration // each iperf3 run
	Rate        time.Duration // each connection-rate run
	TTFBProbes  int           // sequential new connections per TTFB measurement
	FailRun     time.Duration // load duration of a failover run
	FailAt      time.Duration // when, into that run, the backend dies or the site is cut
	Delay       time.Duration // one-way inter-site delay for TTFB
	FailWorkers int
	Sustain     time.Duration // the sustained-rate run, in the first repetition only
	IdleConns   int           // connections the idle workload holds
	Mix         time.Duration // the connection load of the mix, while bulk streams flow
}

func fullPlan() plan {
	return plan{Reps: 3, Bulk: 10 * time.Second, Rate: 10 * time.Second, TTFBProbes: 20,
		FailRun: 8 * time.Second, FailAt: 2 * time.Second, Delay: 10 * time.Millisecond, FailWorkers: 8,
		Sustain: 120 * time.Second, IdleConns: 5000, Mix: 10 * time.Second}
}

func quickPlan() plan {
	return plan{Reps: 1, Bulk: 2 * time.Second, Rate: 2 * time.Second, TTFBProbes: 5,
		FailRun: 5 * time.Second, FailAt: time.Second, Delay: 10 * time.Millisecond, FailWorkers: 8,
		Sustain: 3 * time.Second, IdleConns: 500, Mix: 3 * time.Second}
}

func cmdBench(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	skfwd := fs.String("skfwd", "bin/skfwd", "skfwd binary to benchmark")
	quick := fs.Bool("quick", false, "a few seconds per workload and 1 repetition (CI)")
	reps := fs.Int("reps", 0, "repetitions (default 3, quick 1)")
	out := fs.String("out", "", "results directory (default bench/results/<timestamp>)")
	delay := fs.Duration("delay", 10*time.Millisecond, "one-way inter-site delay of the delay line, for time to first byte")
	only := fs.String("workloads", "", "comma-separated workloads to run (default all): "+workloadNames())
	fwds := fs.String("forwarders", "", "comma-separated forwarders to run (default all): "+forwarderNames())
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (network namespaces)")
		return 1
	}
	p := fullPlan()
	if *quick {
		p = quickPlan()
	}
	if *reps > 0 {
		p.Reps = *reps
	}
	p.Delay = *delay
	bin, err := filepath.Abs(*skfwd)
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: skfwd binary: %v (run `make build`)\n", err)
		return 1
	}
	dir := *out
	if dir == "" {
		dir = filepath.Join("bench", "results", time.Now().Format("20060102-150405"))
	}
	if dir, err = filepath.Abs(dir); err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: results directory: %v\n", err)
		return 1
	}
	wl, err := selectWorkloads(*only)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	fw, err := selectForwarders(*fwds)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	b := &bench{plan: p, skfwd: bin, dir: dir, workloads: wl, forwarders: fw, quick: *quick}
	if err := b.run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}
