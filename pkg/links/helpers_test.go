package links_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skfwd/skfwd/internal/leakcheck"
	"github.com/skfwd/skfwd/pkg/links"
)

// Timings short enough that the package runs in seconds.
const (
	heartbeat = 50 * time.Millisecond
	// deadTime is long enough that a loaded machine (a 2-core box running -race suites side
	// by side starves a process of CPU for 500ms at times) never flaps a link in a test that
	// is not about dead peers.
	deadTime = 2 * time.Second
	// silentDeadTime is the dead time of the test that freezes a peer.
	silentDeadTime = 300 * time.Millisecond
	// waitLimit bounds every wait for something that should happen promptly; a test that hits
	// it fails instead of hanging.
	waitLimit = 5 * time.Second
)

// T is what the helpers need of a test: *testing.T, or one attempt of a test that is retried
// when the machine was too loaded to judge it (see steadyAttempts).
type T interface {
	Helper()
	Cleanup(func())
	Log(args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
}

type grant struct {
	secret []byte
	cost   int
}

// site is one Manager serving on its own loopback listener, with everything it starts undone
// by t.Cleanup.
type site struct {
	t       T
	name    string
	m       *links.Manager
	addr    string
	tunnels chan *links.Tunnel // what OnTunnel received
	changes atomic.Int64       // OnChange calls

	grantMu sync.Mutex
	grants  map[string]grant

	cancel   context.CancelFunc
	stopOnce sync.Once
	stopped  chan struct{} // closed once Wait returned
	logw     *testLogWriter
}

// newSite starts a site with the test timings; tweak may change its options.
func newSite(t T, name string, tweak func(*links.Options)) *site {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &site{
		t: t, name: name, addr: ln.Addr().String(),
		tunnels: make(chan *links.Tunnel, 64),
		grants:  map[string]grant{},
		cancel:  cancel,
		stopped: make(chan struct{}),
		logw:    &testLogWriter{t: t, prefix: name + ": "},
	}
	var notifying atomic.Int32
	opts := links.Options{
		Self:              name,
		HeartbeatInterval: heartbeat,
		DeadTime:          deadTime,
		MaxBackoff:        200 * time.Millisecond,
		PoolSize:          2,
		Grant: func(cred string) ([]byte, int, bool) {
			s.grantMu.Lock()
			defer s.grantMu.Unlock()
			g, ok := s.grants[cred]
			return g.secret, g.cost, ok
		},
		OnTunnel: func(tun *links.Tunnel) {
			select {
			case s.tunnels <- tun:
			default:
				tun.Conn.Close()
				tun.Done()
				t.Errorf("site %s: more tunnels than the test expected", name)
			}
		},
		OnChange: func() {
			if notifying.Add(1) != 1 {
				t.Errorf("site %s: OnChange called concurrently", name)
			}
			s.changes.Add(1)
			notifying.Add(-1)
		},
		Log: slog.New(slog.NewTextHandler(s.logw, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if tweak != nil {
		tweak(&opts)
	}
	s.m = links.New(ctx, opts)
	s.m.Start()
	s.m.Serve(ln)
	t.Cleanup(s.stop)
	return s
}

// stop cancels the site's context and checks that Wait returns promptly.
func (s *site) stop() {
	s.stopOnce.Do(func() {
		s.cancel()
		go func() {
			s.m.Wait()
			close(s.stopped)
		}()
		select {
		case <-s.stopped:
		case <-time.After(waitLimit):
			s.t.Errorf("site %s: Wait did not return within %v of cancel\n%s", s.name, waitLimit, stacks())
			<-s.stopped
		}
		s.logw.close()
		for {
			select {
			case tun := <-s.tunnels:
				tun.Conn.Close()
				tun.Done()
			default:
				return
			}
		}
	})
}

// grant lets a dialing site in with credential name.
func (s *site) grant(name string, secret []byte, cost int) {
	s.grantMu.Lock()
	defer s.grantMu.Unlock()
	s.grants[name] = grant{secret, cost}
}

// connect makes from dial to with a link called name: from configures dialCost, to granted
// the credential with grantCost. It does not wait for the link.
func connect(from, to *site, name string, dialCost, grantCost int) {
	secret := []byte("secret of " + name)
	to.grant(name, secret, grantCost)
	from.m.Dial(links.DialSpec{Name: name, Cost: dialCost, Endpoints: []string{to.addr}, Secret: secret})
}

// status returns the status entry of link name, or false.
func (s *site) status(name string) (links.LinkStatus, bool) {
	for _, st := range s.m.Status() {
		if st.Name == name {
			return st, true
		}
	}
	return links.LinkStatus{}, false
}

// nextTunnel waits for OnTunnel to hand over a tunnel, and has it closed at cleanup.
func (s *site) nextTunnel(t T) *links.Tunnel {
	t.Helper()
	select {
	case tun := <-s.tunnels:
		t.Cleanup(func() {
			tun.Conn.Close()
			tun.Done()
		})
		return tun
	case <-time.After(waitLimit):
		t.Fatalf("site %s: OnTunnel not called within %v", s.name, waitLimit)
		return nil
	}
}

// eventually polls cond until it holds, failing with its last explanation after waitLimit.
func eventually(t T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, waitLimit, why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkGoroutines fails the test if goroutines outlive it (leakcheck.Goroutines).
func checkGoroutines(t *testing.T) { t.Helper(); leakcheck.Goroutines(t, waitLimit) }

func stacks() []byte {
	buf := make([]byte, 1<<20)
	return buf[:runtime.Stack(buf, true)]
}

// testLogWriter sends a manager's log lines to t.Log until the manager has stopped.
type testLogWriter struct {
	mu     sync.Mutex
	t      T
	prefix string
	done   bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(w.prefix + string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (w *testLogWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// readResult reads c until it has want bytes or fails, in the background.
func readResult(c net.Conn, want int) <-chan readOutcome {
	ch := make(chan readOutcome, 1)
	go func() {
		buf := make([]byte, want)
		n, err := readFull(c, buf)
		ch <- readOutcome{buf[:n], err}
	}()
	return ch
}

type readOutcome struct {
	data []byte
	err  error
}

func readFull(c net.Conn, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func waitRead(t T, what string, ch <-chan readOutcome) readOutcome {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitLimit):
		t.Fatalf("%s: no result within %v", what, waitLimit)
		return readOutcome{}
	}
}

// proxy forwards TCP connections to target until frozen: then it stops moving bytes without
// closing anything, as a peer that hangs or a cable that is cut does, and closes any new
// connection at once.
type proxy struct {
	ln   net.Listener
	done chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	target   string
	frozen   bool
	cut      bool // closes every new connection at once, as a peer that is down refuses
	conns    map[*net.TCPConn]struct{}
	pairs    map[int][2]*net.TCPConn // by accepted number, from 1
	accepted int                     // connections accepted so far
	// The first connection's client-to-server bytes past holdAfter wait holdFor (a lost
	// segment being retransmitted, say).
	holdAfter int
	holdFor   time.Duration
}

func startProxy(t T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, done: make(chan struct{}), conns: map[*net.TCPConn]struct{}{}, pairs: map[int][2]*net.TCPConn{}}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		in := c.(*net.TCPConn)
		p.mu.Lock()
		frozen, target := p.frozen || p.cut, p.target
		p.accepted++
		n := p.accepted
		first := n == 1
		holdAfter, holdFor := p.holdAfter, p.holdFor
		p.mu.Unlock()
		if frozen {
			in.Close()
			continue
		}
		nc, err := net.Dial("tcp", target)
		if err != nil {
			in.Close()
			continue
		}
		out := nc.(*net.TCPConn)
		if !p.track(in, out) {
			return
		}
		p.mu.Lock()
		p.pairs[n] = [2]*net.TCPConn{in, out}
		p.mu.Unlock()
		if !first {
			holdFor = 0
		}
		p.wg.Add(2)
		go p.pump(out, in, holdAfter, holdFor)
		go p.pump(in, out, 0, 0)
	}
}

func (p *proxy) track(cs ...*net.TCPConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		for _, c := range cs {
			c.Close()
		}
		return false
	default:
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *proxy) pump(dst, src *net.TCPConn, holdAfter int, holdFor time.Duration) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	forwarded := 0
	for {
		n, err := src.Read(buf)
		if holdFor > 0 && forwarded+n > holdAfter {
			// Forward up to the hold point, then wait before the rest.
			k := max(holdAfter-forwarded, 0)
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
			select {
			case <-time.After(holdFor):
			case <-p.done:
				return
			}
			copy(buf, buf[k:n])
			n -= k
			forwarded += k
			holdFor = 0
		}
		forwarded += n
		p.mu.Lock()
		frozen := p.frozen
		p.mu.Unlock()
		if frozen {
			// Hold on to everything, forward nothing, close nothing.
			<-p.done
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			_ = dst.CloseWrite()
			return
		}
	}
}

// retarget sends new connections to target.
func (p *proxy) retarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

func (p *proxy) freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

// sever closes every connection the proxy carries and turns new ones away until restore: a
// peer that went down (its connections reset, new ones refused).
func (p *proxy) sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// severAccepted resets the n-th connection the proxy accepted (from 1), both sides.
func (p *proxy) severAccepted(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.pairs[n] {
		if c != nil {
			_ = c.SetLinger(0)
			c.Close()
		}
	}
}

// restore lets new connections through again after sever.
func (p *proxy) restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// holdFirstConnection makes the first connection's client-to-server bytes after the first
// after wait d.
func (p *proxy) holdFirstConnection(after int, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holdAfter, p.holdFor = after, d
}

// acceptedCount is how many connections the proxy has accepted.
func (p *proxy) acceptedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

func (p *proxy) close() {
	p.mu.Lock()
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// steadyAttempts runs a timing-sensitive test up to attempts times. An attempt that fails
// while this process was starved of CPU (a 5ms ticker saw a gap longer than maxStall) is
// retried with fresh sites: its timings were the machine's, not the code's. A failure in an
// attempt that ran steadily, or in the last attempt, fails the test, so a real regression,
// which fails every attempt, still shows.
func steadyAttempts(t *testing.T, attempts int, maxStall time.Duration, f func(t T)) {
	t.Helper()
	for i := 1; ; i++ {
		w := watchStalls()
		a := &attempt{t: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			f(a)
		}()
		<-done
		a.runCleanups()
		stall := w.stop()
		if a.skipped != "" {
			t.Skip(a.skipped)
		}
		if len(a.failures) == 0 {
			return
		}
		if stall <= maxStall || i == attempts {
			for _, msg := range a.failures {
				t.Error(msg)
			}
			t.Logf("attempt %d of %d: longest stall %v", i, attempts, stall)
			return
		}
		t.Logf("attempt %d failed while the process stalled for %v; retrying. Failures: %q", i, stall, a.failures)
	}
}

// attempt is one try of a test under steadyAttempts: it records failures instead of failing
// the test, and runs its own cleanups.
type attempt struct {
	t        *testing.T
	mu       sync.Mutex
	failures []string
	skipped  string
	cleanups []func()
}

func (a *attempt) Helper()         {}
func (a *attempt) Log(args ...any) { a.t.Log(args...) }

func (a *attempt) Cleanup(f func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cleanups = append(a.cleanups, f)
}

func (a *attempt) Errorf(format string, args ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failures = append(a.failures, fmt.Sprintf(format, args...))
}

// Fatal and Fatalf end the attempt's goroutine, as FailNow ends a test's.
func (a *attempt) Fatal(args ...any) {
	a.Errorf("%s", fmt.Sprint(args...))
	runtime.Goexit()
}

func (a *attempt) Fatalf(format string, args ...any) {
	a.Errorf(format, args...)
	runtime.Goexit()
}

func (a *attempt) Skip(args ...any) {
	a.mu.Lock()
	a.skipped = fmt.Sprint(args...)
	a.mu.Unlock()
	runtime.Goexit()
}

func (a *attempt) runCleanups() {
	for {
		a.mu.Lock()
		n := len(a.cleanups)
		if n == 0 {
			a.mu.Unlock()
			return
		}
		f := a.cleanups[n-1]
		a.cleanups = a.cleanups[:n-1]
		a.mu.Unlock()
		f()
	}
}

// stallWatch measures how late a 5ms ticker runs: how long this process went without CPU.
type stallWatch struct {
	quit  chan struct{}
	worst chan time.Duration
}

func watchStalls() *stallWatch {
	w := &stallWatch{quit: make(chan struct{}), worst: make(chan time.Duration)}
	go func() {
		const tick = 5 * time.Millisecond
		tk := time.NewTicker(tick)
		defer tk.Stop()
		last, worst := time.Now(), time.Duration(0)
		for {
			select {
			case <-w.quit:
				w.worst <- worst
				return
			case now := <-tk.C:
				worst = max(worst, now.Sub(last)-tick)
				last = now
			}
		}
	}()
	return w
}

func (w *stallWatch) stop() time.Duration {
	close(w.quit)
	return <-w.worst
}
