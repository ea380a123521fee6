// Command demo shows skfwd at work on a real network: four sites, each in its own network
// namespace with its own skfwd process, and clients inside the "client" site.
//
//	client --cost 1-- near        (backend "near")
//	   |
//	   +---cost 2---- hub --cost 3-- far   (backend "far", path cost 2+3 = 5)
//
// It opens long-lived connections one at a time, so their split follows the selector's score
// (path cost + connections open), runs a steady stream of short connections beside them, prints
// once a second where new connections go and why, then kills near's backend and shows the
// traffic move to far with no client connection failing. Every number printed is measured:
// from the client gateway's status, or from the connections the demo itself made.
//
// It needs root (namespaces, veth pairs). `make demo` runs it:
//
//	go build -o bin/skfwd ./cmd/skfwd && go run ./test/demo -skfwd bin/skfwd
//
// One second of its output (the short connections arrive at random, so now and then one finds
// another in flight and goes to far):
//
//	t=3s  where new connections from site "client" go (routing key "backend"):
//	  target  path             path cost  open  score   new connections started in the last second
//	  near    client>near              1    17     18      39   93%
//	  far     client>hub>far           5    13     18       3    7%
//	  in the last second: 42 new connections, 0 failed; held open by this demo: near 17, far 13
//	  why: each new connection goes to the lowest score = path cost + connections open to that target;
//	       on a tie, the lower path cost wins. open counts, at this instant, the held connections and any short one in flight
//
// With -prometheus 127.0.0.1:9099 it also runs a real Prometheus scraping every site, for a
// Grafana on this machine to show the run on dashboards/skfwd.json, and checks at the end that
// Prometheus counted the connections the demo made (prometheus.go); -hold keeps it all up after
// the summary until Ctrl-C. `make demo DEMO_ARGS="-prometheus 127.0.0.1:9099 -hold"` runs that.
//
// It exits 0 when everything behaved as described, 1 otherwise (and keeps the sites' logs).
// Ctrl-C stops it at any point and removes every namespace and process it made.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
	"github.com/skfwd/skfwd/pkg/gateway"
)

const (
	routingKey  = "backend"
	listenPort  = 8080
	listenAddr  = "127.0.0.1:8080" // the client site's listener, as its clients reach it
	backendAddr = "127.0.0.1:9000" // each backend, inside its own site
	dialTimeout = 5 * time.Second
	converge    = 15 * time.Second
	// hangLimit is how long a connection spliced to a dead backend may stay open before we call
	// it left hanging.
	hangLimit = 5 * time.Second
)

type options struct {
	bin       string
	duration  time.Duration
	killAfter time.Duration
	held      int
	workers   int
	rate      int
	keep      bool
	// prometheus is the loopback address of the demo's Prometheus; "" runs none.
	prometheus string
	hold       bool
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.bin, "skfwd", "bin/skfwd", "path of the skfwd binary (go build -o bin/skfwd ./cmd/skfwd)")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "how long the load runs and the live view prints")
	fs.DurationVar(&o.killAfter, "kill-after", 0, "when to kill near's backend, from the start of the load (default: a third of -duration)")
	fs.IntVar(&o.held, "held", 30, "long-lived connections to open, one at a time, before the load starts")
	fs.IntVar(&o.workers, "workers", 4, "clients opening short connections in parallel")
	fs.IntVar(&o.rate, "rate", 50, "short connections per second, all workers together")
	fs.BoolVar(&o.keep, "keep", false, "keep the sites' configuration and logs (they are always kept when something fails)")
	fs.StringVar(&o.prometheus, "prometheus", "", "run a Prometheus scraping every site, listening here (a loopback address, e.g. "+promExample+"), for Grafana and dashboards/skfwd.json")
	fs.BoolVar(&o.hold, "hold", false, "with -prometheus: keep the network and Prometheus up after the summary until Ctrl-C")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.killAfter == 0 {
		o.killAfter = max(time.Second, (o.duration / 3).Round(time.Second))
	}
	var errs []error
	if o.duration < 3*time.Second {
		errs = append(errs, fmt.Errorf("-duration %v: want at least 3s", o.duration))
	}
	if o.killAfter < time.Second || o.killAfter >= o.duration {
		errs = append(errs, fmt.Errorf("-kill-after %v: want at least 1s and less than -duration %v", o.killAfter, o.duration))
	}
	if o.held < 0 {
		errs = append(errs, fmt.Errorf("-held %d: want 0 or more", o.held))
	}
	if o.workers < 1 || o.rate < o.workers {
		errs = append(errs, fmt.Errorf("-workers %d -rate %d: want at least one worker and one connection a second each", o.workers, o.rate))
	}
	if o.prometheus != "" {
		if err := checkPromAddr(o.prometheus); err != nil {
			errs = append(errs, err)
		}
		// Prometheus must scrape some traffic after the kill for the end check to see it move.
		if o.duration-o.killAfter < 3*time.Second {
			errs = append(errs, fmt.Errorf("-kill-after %v -duration %v: with -prometheus, want -duration at least 3s past -kill-after", o.killAfter, o.duration))
		}
	}
	if o.hold && o.prometheus == "" {
		errs = append(errs, fmt.Errorf("-hold: needs -prometheus (it keeps Prometheus up to look at the run), e.g. -prometheus %s -hold", promExample))
	}
	return o, errors.Join(errs...)
}

// demo is one run: the network, the load on it, and what was seen.
type demo struct {
	opts options
	out  io.Writer
	lab  *netlab.Lab
	dir  string

	client, near, hub, far *netlab.Site
	backends               map[string]*netlab.Backend
	paths                  map[string]string

	held        []*heldConn
	log         eventLog
	load        *shortLoad
	loadStart   time.Time
	loadStopped time.Time

	promBin string      // the prometheus binary, with -prometheus
	prom    *promServer // nil without -prometheus
	tally   tally       // set by summary

	killedAt          time.Time
	withdrawn         chan withdrawal
	withdrawal        withdrawal
	reportedWithdrawn bool

	problems []string
}

// withdrawal is when the client gateway dropped near from its candidates, or why we never saw it.
type withdrawal struct {
	at  time.Time
	err error
}

func (d *demo) problem(format string, args ...any) {
	d.problems = append(d.problems, fmt.Sprintf(format, args...))
}

func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "demo: needs root to make network namespaces and veth pairs (try sudo make demo)")
		return 1
	}
	bin, err := filepath.Abs(opts.bin)
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		fmt.Fprintf(stderr, "demo: skfwd binary: %v (build it: go build -o bin/skfwd ./cmd/skfwd)\n", err)
		return 1
	}
	var promBin string
	if opts.prometheus != "" {
		if promBin, err = findPrometheus(); err != nil {
			fmt.Fprintf(stderr, "demo: %v\n", err)
			return 1
		}
	}
	// Caught from here to the end: a Ctrl-C must never skip the cleanup below, or namespaces and
	// skfwd processes would outlive us.
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	dir, err := os.MkdirTemp("", "skfwd-demo-")
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	netlab.RemoveStale()
	d := &demo{opts: opts, out: stdout, dir: dir, lab: netlab.New(bin, dir, nil), promBin: promBin,
		backends: map[string]*netlab.Backend{}, withdrawn: make(chan withdrawal, 1)}

	playErr := d.play(ctx)
	interrupted := ctx.Err() != nil
	if interrupted {
		fmt.Fprintln(stdout, "\ninterrupted: stopping the load and removing the network...")
	}
	d.stopLoad()
	if !interrupted && playErr == nil {
		d.checkHeldAtEnd()
		d.summary()
		if d.prom != nil {
			d.checkPrometheus(ctx)
		}
		if opts.hold {
			d.hold(ctx)
		}
	}
	cleanErr := d.cleanup()

	failed := playErr != nil || cleanErr != nil || len(d.problems) > 0 || interrupted
	switch {
	case playErr != nil && !interrupted:
		fmt.Fprintf(stdout, "\nFAILED: %v\n", playErr)
	case interrupted:
		fmt.Fprintln(stdout, "interrupted by a signal: the demo did not finish")
	}
	if cleanErr != nil {
		fmt.Fprintf(stdout, "FAILED to clean up: %v\n", cleanErr)
	}
	for _, p := range d.problems {
		fmt.Fprintf(stdout, "FAILED: %s\n", p)
	}
	if (failed && !interrupted) || opts.keep {
		fmt.Fprintf(stdout, "the sites' configuration and logs are in %s\n", dir)
	} else {
		os.RemoveAll(dir)
	}
	if failed {
		return 1
	}
	fmt.Fprintln(stdout, "\nresult: OK")
	return 0
}

// play builds the network and runs the show; it returns early on a setup error or a signal.
func (d *demo) play(ctx context.Context) error {
	if err := d.build(ctx); err != nil {
		return err
	}
	if d.opts.prometheus != "" {
		if err := d.startPrometheus(ctx, d.promBin); err != nil {
			return err
		}
	}
	if err := d.openHeld(ctx); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "\nnow %d clients open %d short connections a second (connect, read the backend's name, close) beside the held ones.\n",
		d.opts.workers, d.opts.rate)
	fmt.Fprintf(d.out, "at t=%ds the backend at near dies. The live view follows, once a second.\n", int(d.opts.killAfter/time.Second))
	d.loadStart = time.Now()
	d.load = startShortLoad(d.client, listenAddr, d.opts.workers, d.opts.rate, dialTimeout, &d.log)
	d.live(ctx)
	return nil
}

func (d *demo) build(ctx context.Context) error {
	fmt.Fprint(d.out, `building four sites, each in its own network namespace running its own skfwd:

  client --cost 1-- near                   near runs a backend that answers "near"
     |
     +----cost 2--- hub --cost 3-- far     far runs a backend that answers "far"

site client has only a listener for routing key "backend" (port 8080) and no backend of its own.
`)
	var err error
	sites := map[string]**netlab.Site{"client": &d.client, "near": &d.near, "hub": &d.hub, "far": &d.far}
	for _, name := range []string{"client", "near", "hub", "far"} {
		if *sites[name], err = d.lab.Site(name); err != nil {
			return fmt.Errorf("make site %s: %w", name, err)
		}
	}
	for _, l := range []struct {
		dialer, acceptor *netlab.Site
		cost             int
	}{{d.client, d.near, 1}, {d.client, d.hub, 2}, {d.hub, d.far, 3}} {
		if _, _, err := d.lab.Link(l.dialer, l.acceptor, l.cost); err != nil {
			return fmt.Errorf("link %s to %s: %w", l.dialer.Name, l.acceptor.Name, err)
		}
	}
	d.client.Listener("backend", routingKey, listenPort)
	for _, s := range []*netlab.Site{d.near, d.far} {
		s.Connector("backend", routingKey, backendAddr)
		b, err := netlab.StartBackend(s, s.Name, backendAddr)
		if b != nil && err == nil {
			d.backends[s.Name] = b
		}
		if err != nil {
			return fmt.Errorf("start backend at %s: %w", s.Name, err)
		}
	}
	for _, s := range []*netlab.Site{d.near, d.far, d.hub, d.client} {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := s.Start(); err != nil {
			return err
		}
	}
	began := time.Now()
	st, err := waitStatus(ctx, d.client, converge, "candidates near and far", func(st gateway.Status) bool {
		got := netlab.Candidates(st, routingKey)
		slices.Sort(got)
		return slices.Equal(got, []string{"far", "near"})
	})
	if err != nil {
		return err
	}
	d.paths = paths(st)
	fmt.Fprintf(d.out, "all four gateways are up; %v later client's gateway has both targets for %q (routes from its status):\n", time.Since(began).Round(time.Millisecond), routingKey)
	for _, t := range targets {
		c, _ := candidate(st, routingKey, t)
		fmt.Fprintf(d.out, "  %-4s via %-15s path cost %d\n", t, d.paths[t], c.PathCost)
	}
	return nil
}

// openHeld opens the long-lived connections one by one, showing the ranking the gateway held
// before each and where the connection went.
func (d *demo) openHeld(ctx context.Context) error {
	if d.opts.held == 0 {
		return nil
	}
	fmt.Fprintf(d.out, "\nopening %d long-lived connections from site client, one at a time.\n", d.opts.held)
	fmt.Fprintln(d.out, "before each, client's gateway ranks its targets by score = path cost + connections open (shown as cost+open=score):")
	wrong := 0
	for i := 1; i <= d.opts.held; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		st, err := d.client.Status()
		if err != nil {
			return fmt.Errorf("status of site client: %w", err)
		}
		best, rank := ranking(st, routingKey)
		h, err := openHeld(d.client, listenAddr, i, dialTimeout)
		if err != nil {
			return fmt.Errorf("held connection %d: %w", i, err)
		}
		d.held = append(d.held, h)
		mark := ""
		if h.target != best {
			mark = fmt.Sprintf("   <- UNEXPECTED: the lowest score was %s", best)
			wrong++
		}
		fmt.Fprintf(d.out, "  #%-2d  %-30s -> answered by %s%s\n", i, rank, h.target, mark)
		// The next ranking must count this connection, or the walk-through would show a stale score.
		if _, err := waitStatus(ctx, d.client, dialTimeout, fmt.Sprintf("%d connections open", i), func(st gateway.Status) bool {
			return openTotal(st) == i
		}); err != nil {
			return err
		}
	}
	if wrong > 0 {
		d.problem("%d of %d held connections did not go to the target of lowest score", wrong, d.opts.held)
	}
	st, err := d.client.Status()
	if err != nil {
		return fmt.Errorf("status of site client: %w", err)
	}
	_, rank := ranking(st, routingKey)
	fmt.Fprintf(d.out, "held open now: %s; scores %s\n", d.heldLine(), rank)
	return nil
}

func openTotal(st gateway.Status) int {
	n := 0
	for _, svc := range st.Services {
		for _, c := range svc.Candidates {
			n += c.Open
		}
	}
	return n
}

// live prints the view once a second and kills near's backend on time.
func (d *demo) live(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			sec := int(now.Sub(d.loadStart).Round(time.Second) / time.Second)
			d.printView(now, sec)
			if d.killedAt.IsZero() && sec >= int(d.opts.killAfter/time.Second) {
				d.kill(ctx, sec)
			}
			if sec >= int(d.opts.duration/time.Second) {
				return
			}
		}
	}
}

func (d *demo) kill(ctx context.Context, sec int) {
	bar := strings.Repeat("=", 100)
	fmt.Fprintf(d.out, "\n%s\n  t=%ds  killing the backend at site near: its listener closes and its %d open connections are reset\n%s\n",
		bar, sec, d.backends["near"].Open(), bar)
	be := d.backends["near"]
	be.StopListening()
	// From here no new connection can reach near's backend.
	d.killedAt = time.Now()
	be.ResetAll()
	go func() {
		_, err := waitStatus(ctx, d.client, converge, "near dropped from the candidates", func(st gateway.Status) bool {
			return slices.Equal(netlab.Candidates(st, routingKey), []string{"far"})
		})
		d.withdrawn <- withdrawal{at: time.Now(), err: err}
	}()
}

// stopLoad stops the short connections and notes when the last one ended.
func (d *demo) stopLoad() {
	if d.load != nil && d.loadStopped.IsZero() {
		d.load.halt()
		d.loadStopped = time.Now()
	}
}

// checkHeldAtEnd checks that the held connections on far lived through it all and still carry
// bytes, and that those on near ended rather than hang.
func (d *demo) checkHeldAtEnd() {
	for _, h := range d.held {
		done, at, err := h.ended()
		switch {
		case h.target == "far" && done:
			d.problem("held connection %d on far ended during the run: %s", h.n, howEnded(err))
		case h.target == "far":
			if err := h.echo(dialTimeout); err != nil {
				d.problem("held connection %d on far does not echo at the end: %v", h.n, err)
			}
		case h.target == "near" && !done:
			d.problem("held connection %d on near still open %v after its backend died: left hanging", h.n, time.Since(d.killedAt).Round(time.Millisecond))
		case h.target == "near" && at.Sub(d.killedAt) > hangLimit:
			d.problem("held connection %d on near ended only %v after its backend died", h.n, at.Sub(d.killedAt).Round(time.Millisecond))
		}
	}
}

// summary prints what the run measured and records what went against the design.
func (d *demo) summary() {
	events := d.log.snapshot()
	slices.SortFunc(events, func(a, b event) int { return a.start.Compare(b.start) })
	var total, failed, inFlight, nearAfter int
	var firstErrs []string
	before, after := map[string]int{}, map[string]int{}
	var slowBefore, slowAfter time.Duration
	var firstFar *event
	for i, ev := range events {
		total++
		isAfter := !ev.start.Before(d.killedAt)
		lat := ev.end.Sub(ev.start)
		if ev.err != nil {
			// One already spliced to near's backend when it died goes down with it, like a held one:
			// that is not a new connection failing.
			if ev.start.Before(d.killedAt) && !ev.end.Before(d.killedAt) && endedByPeer(ev.err) {
				inFlight++
				continue
			}
			failed++
			if len(firstErrs) < 3 {
				firstErrs = append(firstErrs, fmt.Sprintf("started %+v from the kill: %v", ev.start.Sub(d.killedAt).Round(time.Millisecond), ev.err))
			}
			continue
		}
		if isAfter {
			after[ev.backend]++
			slowAfter = max(slowAfter, lat)
			if ev.backend == "near" {
				nearAfter++
			}
			if ev.backend == "far" && firstFar == nil {
				firstFar = &events[i]
			}
		} else {
			before[ev.backend]++
			slowBefore = max(slowBefore, lat)
		}
	}
	if !d.reportedWithdrawn {
		select {
		case d.withdrawal = <-d.withdrawn:
		case <-time.After(converge):
			d.withdrawal = withdrawal{err: errors.New("no answer")}
		}
	}

	fmt.Fprintf(d.out, "\n%s\nsummary (every number measured during this run)\n", strings.Repeat("-", 100))
	fmt.Fprintf(d.out, "  new (short) connections: %d made, %d failed\n", total, failed)
	fmt.Fprintf(d.out, "    before the kill: %s  (slowest %v)\n", perTarget(before), slowBefore.Round(time.Microsecond*100))
	fmt.Fprintf(d.out, "    after the kill:  %s  (slowest %v)\n", perTarget(after), slowAfter.Round(time.Microsecond*100))
	for _, e := range firstErrs {
		fmt.Fprintf(d.out, "    failed: %s\n", e)
	}
	if inFlight > 0 {
		fmt.Fprintf(d.out, "    in flight at the moment of the kill and ended by it (reset or closed): %d, not counted as failed\n", inFlight)
	}
	byTarget := map[string][]*heldConn{}
	for _, h := range d.held {
		byTarget[h.target] = append(byTarget[h.target], h)
	}
	d.tally = tally{answered: map[string]int{}, inFlight: inFlight}
	for _, m := range []map[string]int{before, after} {
		for t, n := range m {
			d.tally.answered[t] += n
		}
	}
	for t, hs := range byTarget {
		d.tally.answered[t] += len(hs)
	}
	fmt.Fprintf(d.out, "  held connections: %d opened (%s)\n", len(d.held), perTarget(map[string]int{"near": len(byTarget["near"]), "far": len(byTarget["far"])}))
	if hs := byTarget["near"]; len(hs) > 0 {
		kinds := map[string]int{}
		var last time.Duration
		for _, h := range hs {
			if done, at, err := h.ended(); done {
				kinds[howEnded(err)]++
				last = max(last, at.Sub(d.killedAt))
			}
		}
		var parts []string
		for k, n := range kinds {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
		slices.Sort(parts)
		fmt.Fprintf(d.out, "    on near: %s, the last %v after the kill. Expected: they were spliced to the backend that died;\n",
			strings.Join(parts, ", "), last.Round(time.Millisecond))
		fmt.Fprintln(d.out, "             the client sees the backend's reset instead of a connection left hanging")
	}
	if hs := byTarget["far"]; len(hs) > 0 {
		ok := 0
		for _, h := range hs {
			if done, _, _ := h.ended(); !done {
				ok++
			}
		}
		fmt.Fprintf(d.out, "    on far: %d of %d still open at the end and echoing a line sent on each\n", ok, len(hs))
	}
	fmt.Fprintln(d.out, "  failover:")
	if firstFar != nil {
		fmt.Fprintf(d.out, "    traffic flowed to far %v after the kill: the first new connection after it started at +%v (when the load\n",
			firstFar.end.Sub(d.killedAt).Round(100*time.Microsecond), firstFar.start.Sub(d.killedAt).Round(100*time.Microsecond))
		fmt.Fprintf(d.out, "    happened to open one) and far answered it %v later\n", firstFar.end.Sub(firstFar.start).Round(100*time.Microsecond))
		fmt.Fprintf(d.out, "    of the %d new connections started after the kill, %d were answered by far\n", sum(after), after["far"])
	} else {
		d.problem("no new connection reached far after near's backend died")
	}
	if d.withdrawal.err == nil {
		fmt.Fprintf(d.out, "    near left client's candidate list %v after the kill; a connection that picked near until then was refused\n",
			d.withdrawal.at.Sub(d.killedAt).Round(time.Millisecond))
		fmt.Fprintln(d.out, "    there and retried at far, so its client never saw the failure;")
		if retried, noCandidate, err := retriesInLog(d.client.LogPath); err == nil {
			fmt.Fprintf(d.out, "    client's gateway log: %s served after a retry, %s failed for want of a working target\n",
				plural(retried, "connection"), plural(noCandidate, "connection"))
		} else {
			fmt.Fprintf(d.out, "    (could not read client's gateway log: %v)\n", err)
		}
	} else {
		d.problem("client's gateway did not drop near from its candidates: %v", d.withdrawal.err)
	}
	if failed > 0 {
		d.problem("%d new client connections failed (want 0: a dead backend must be retried around)", failed)
	}
	if nearAfter > 0 {
		d.problem("%d new connections started after the kill were answered by near, whose backend was dead", nearAfter)
	}
}

func perTarget(m map[string]int) string {
	var parts []string
	for _, t := range targets {
		parts = append(parts, fmt.Sprintf("%s %d", t, m[t]))
	}
	for k, n := range m {
		if !slices.Contains(targets, k) {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	return strings.Join(parts, ", ")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// retriesInLog counts, in a gateway's log, the client connections that were served only after a
// retry and those that failed because no target worked. The log is the gateway's own account;
// the demo's clients cannot see a retry, only that they were served.
func retriesInLog(path string) (retried, noCandidate int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, " msg=connection ") {
			continue
		}
		if strings.Contains(line, " outcome=no-candidate-worked") {
			noCandidate++
			continue
		}
		if strings.Contains(line, " outcome=ok ") && !strings.Contains(line, " retries=0") {
			retried++
		}
	}
	return retried, noCandidate, nil
}

// cleanup removes everything the run made: load, held connections, backends, Prometheus, then
// the sites' processes and namespaces.
func (d *demo) cleanup() error {
	d.stopLoad()
	for _, h := range d.held {
		h.close()
	}
	for _, b := range d.backends {
		b.Close()
	}
	var errs []error
	stopped := ""
	if d.prom != nil {
		if err := d.prom.stop(); err != nil {
			errs = append(errs, err)
		}
		stopped = " Prometheus stopped and its directory removed,"
	}
	if err := d.lab.Close(); err != nil {
		errs = append(errs, err)
	}
	for _, s := range []*netlab.Site{d.client, d.near, d.hub, d.far} {
		if s != nil && s.Running() {
			errs = append(errs, fmt.Errorf("skfwd of site %s still running", s.Name))
		}
	}
	if left := netlab.Namespaces(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("namespaces left behind: %v", left))
	}
	if len(errs) == 0 {
		fmt.Fprintf(d.out, "\ncleaned up: load stopped, backends closed,%s every skfwd process stopped and every namespace removed\n", stopped)
	}
	return errors.Join(errs...)
}

// waitStatus polls a site's status until cond holds, the timeout passes or ctx ends.
func waitStatus(ctx context.Context, s *netlab.Site, timeout time.Duration, what string, cond func(gateway.Status) bool) (gateway.Status, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := s.Status()
		if err == nil && cond(st) {
			return st, nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return st, fmt.Errorf("site %s: %s not reached within %v: %w", s.Name, what, timeout, err)
			}
			return st, fmt.Errorf("site %s: %s not reached within %v", s.Name, what, timeout)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
