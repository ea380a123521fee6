package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// loadResult is what `bench load` prints (JSON) for the orchestrator.
type loadResult struct {
	Conns     int      `json:"conns"`  // completed successfully
	Errors    int      `json:"errors"` // failed
	ElapsedNs int64    `json:"elapsed_ns"`
	P50Ns     int64    `json:"p50_ns"`
	P99Ns     int64    `json:"p99_ns"`
	FirstErrs []string `json:"first_errors,omitempty"`
	// Events: every connection (start, end, ok), with -events, for failover analysis.
	Events []event `json:"events,omitempty"`
	// TTFB: time to first byte of each probe, in the ttfb modes.
	TTFBNs []int64 `json:"ttfb_ns,omitempty"`
	// PerSecond: connections completed in each second of an echo run.
	PerSecond []int64 `json:"per_second,omitempty"`
}

// event is one client connection: unix nanoseconds.
type event struct {
	Start int64 `json:"s"`
	End   int64 `json:"e"`
	OK    bool  `json:"ok"`
}

// cmdLoad is the client, run inside the client namespace.
//
//   - mode echo: workers each loop connect, send 64 B, read the 64 B echo, close;
//   - mode ttfb-client: sequential new connections, each sending 64 B at once; time from
//     connect() to the first byte of the answer;
//   - mode ttfb-server: the same, but the server speaks first (banner port);
//   - mode idle: see idleHold.
func cmdLoad(args []string) int {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	addrs := fs.String("addrs", "", "comma-separated host:port targets, used in turn")
	mode := fs.String("mode", "echo", "echo, ttfb-client, ttfb-server or idle")
	workers := fs.Int("workers", 32, "concurrent workers (echo)")
	duration := fs.Duration("duration", 10*time.Second, "how long (echo)")
	probes := fs.Int("probes", 20, "connections (ttfb)")
	gap := fs.Duration("gap", 100*time.Millisecond, "pause between probes (ttfb)")
	withEvents := fs.Bool("events", false, "report every connection (echo)")
	timeout := fs.Duration("timeout", 10*time.Second, "limit for one connection")
	conns := fs.Int("conns", 500, "connections held (idle)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	targets := strings.Split(*addrs, ",")
	if *addrs == "" {
		fmt.Fprintln(os.Stderr, "load: -addrs is required")
		return 2
	}
	var res loadResult
	switch *mode {
	case "echo":
		res = echoLoad(targets, *workers, *duration, *timeout, *withEvents)
	case "ttfb-client", "ttfb-server":
		var err error
		res, err = ttfbLoad(targets, *mode == "ttfb-server", *probes, *gap, *timeout)
		if err != nil {
			fmt.Fprintf(os.Stderr, "load: %v\n", err)
			return 1
		}
	case "idle":
		if err := idleHold(targets, *conns, *timeout, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "load: %v\n", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(os.Stderr, "load: unknown mode %q\n", *mode)
		return 2
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

func echoLoad(targets []string, workers int, duration, timeout time.Duration, withEvents bool) loadResult {
	var (
		next   atomic.Uint64
		mu     sync.Mutex
		lat    []int64
		events []event
		errs   errTally
		wg     sync.WaitGroup
	)
	start := time.Now()
	stopAt := start.Add(duration)
	msg := bytes.Repeat([]byte{'x'}, msgSize)
	perSecond := make([]atomic.Int64, int(duration/time.Second)+2)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var myLat []int64
			var myEv []event
			buf := make([]byte, msgSize)
			for time.Now().Before(stopAt) {
				addr := targets[next.Add(1)%uint64(len(targets))]
				t0 := time.Now()
				err := echoOnce(addr, msg, buf, timeout)
				t1 := time.Now()
				if withEvents {
					myEv = append(myEv, event{t0.UnixNano(), t1.UnixNano(), err == nil})
				}
				if err == nil {
					myLat = append(myLat, t1.Sub(t0).Nanoseconds())
					perSecond[min(int(t1.Sub(start)/time.Second), len(perSecond)-1)].Add(1)
					continue
				}
				errs.add(err)
				time.Sleep(10 * time.Millisecond) // a failing target must not spin
			}
			mu.Lock()
			lat = append(lat, myLat...)
			events = append(events, myEv...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	slices.SortFunc(events, func(a, b event) int { return int(a.Start - b.Start) })
	counts := make([]int64, int(elapsed/time.Second)) // whole seconds only
	for i := range min(len(counts), len(perSecond)) {
		counts[i] = perSecond[i].Load()
	}
	return loadResult{Conns: len(lat), Errors: errs.n, ElapsedNs: elapsed.Nanoseconds(),
		P50Ns: percentile(lat, 50), P99Ns: percentile(lat, 99), FirstErrs: errs.first, Events: events, PerSecond: counts}
}

// errTally counts a run's failed connections and keeps the first few errors.
type errTally struct {
	mu    sync.Mutex
	n     int
	first []string
}

func (t *errTally) add(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	if len(t.first) < 5 {
		t.first = append(t.first, err.Error())
	}
}

// percentile of sorted values (nearest rank); 0 for none.
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func echoOnce(addr string, msg, buf []byte, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	return echoOn(c, msg, buf, timeout)
}

// echoOn sends msg on c and reads the echo into buf, within timeout.
func echoOn(c net.Conn, msg, buf []byte, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(buf, msg) {
		return errors.New("echo differs from the request")
	}
	return nil
}

func ttfbLoad(targets []string, serverFirst bool, probes int, gap, timeout time.Duration) (loadResult, error) {
	var res loadResult
	msg := bytes.Repeat([]byte{'x'}, msgSize)
	start := time.Now()
	for i := range probes {
		addr := targets[i%len(targets)]
		t0 := time.Now()
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return res, err
		}
		_ = c.SetDeadline(time.Now().Add(timeout))
		if !serverFirst {
			if _, err := c.Write(msg); err != nil {
				c.Close()
				return res, err
			}
		}
		buf := make([]byte, msgSize)
		_, err = io.ReadFull(c, buf[:1])
		d := time.Since(t0)
		if err == nil {
			// The rest too, so the connection ends with a FIN, not a reset for unread data.
			_, err = io.ReadFull(c, buf[1:])
		}
		c.Close()
		if err != nil {
			return res, fmt.Errorf("probe %d: %w", i, err)
		}
		res.TTFBNs = append(res.TTFBNs, d.Nanoseconds())
		res.Conns++
		time.Sleep(gap)
	}
	res.ElapsedNs = time.Since(start).Nanoseconds()
	sorted := slices.Clone(res.TTFBNs)
	slices.Sort(sorted)
	res.P50Ns, res.P99Ns = percentile(sorted, 50), percentile(sorted, 99)
	return res, nil
}

// idleOpeners: how many connections mode idle opens at once.
const idleOpeners = 64

// idleChecks: how many of the held connections echo again on "check".
const idleChecks = 50

// idleHold is mode idle: it opens n connections, each sending 64 B and reading the echo (so
// the path is established end to end), keeps them open and silent, and prints a loadResult
// line (setup latency, failures). Then it reads commands, one a line, from in: "check" echoes
// again on up to idleChecks of them, spread over the set, and prints a loadResult line;
// "close" (or the end of in) closes them all, prints an empty line and returns.
func idleHold(targets []string, n int, timeout time.Duration, in io.Reader, out io.Writer) error {
	if err := raiseFileLimit(uint64(n) + 256); err != nil {
		return err
	}
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	msg := bytes.Repeat([]byte{'x'}, msgSize)
	var (
		next atomic.Int64
		errs errTally
		mu   sync.Mutex
		lat  []int64
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range min(idleOpeners, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, msgSize)
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				t0 := time.Now()
				c, err := net.DialTimeout("tcp", targets[i%len(targets)], timeout)
				if err == nil {
					if err = echoOn(c, msg, buf, timeout); err != nil {
						c.Close()
					}
				}
				if err != nil {
					errs.add(err)
					continue
				}
				_ = c.SetDeadline(time.Time{})
				conns[i] = c
				mu.Lock()
				lat = append(lat, time.Since(t0).Nanoseconds())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	enc := json.NewEncoder(out)
	if err := enc.Encode(loadResult{Conns: len(lat), Errors: errs.n, FirstErrs: errs.first,
		ElapsedNs: time.Since(start).Nanoseconds(), P50Ns: percentile(lat, 50), P99Ns: percentile(lat, 99)}); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		switch cmd := strings.TrimSpace(sc.Text()); cmd {
		case "check":
			var res loadResult
			var errs errTally
			buf := make([]byte, msgSize)
			for _, i := range spread(n, idleChecks) {
				if conns[i] == nil {
					continue
				}
				if err := echoOn(conns[i], msg, buf, timeout); err != nil {
					errs.add(fmt.Errorf("connection %d: %w", i, err))
					continue
				}
				res.Conns++
			}
			res.Errors, res.FirstErrs = errs.n, errs.first
			if err := enc.Encode(res); err != nil {
				return err
			}
		case "close":
			return closeAll(conns, out)
		default:
			return fmt.Errorf("idle: unknown command %q", cmd)
		}
	}
	return closeAll(conns, out)
}

func closeAll(conns []net.Conn, out io.Writer) error {
	for i, c := range conns {
		if c != nil {
			c.Close()
			conns[i] = nil
		}
	}
	_, err := fmt.Fprintln(out)
	return err
}

// spread picks k indices out of n, evenly spaced from the first (all of them when k >= n).
func spread(n, k int) []int {
	k = min(k, n)
	out := make([]int, k)
	for j := range k {
		out[j] = j * n / k
	}
	return out
}

// raiseFileLimit makes sure this process may open need descriptors. Go already raises the
// soft limit to the hard one at start; root may raise the hard limit too (up to
// fs.nr_open), for more connections than the machine's hard limit allows.
func raiseFileLimit(need uint64) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	if rl.Cur >= need {
		return nil
	}
	rl.Cur, rl.Max = need, max(rl.Max, need)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("raise the descriptor limit to %d: %w", need, err)
	}
	return nil
}
