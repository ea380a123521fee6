package datapath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/skfwd/skfwd/pkg/loader"
	"golang.org/x/sys/unix"
)

// Kernel is the hybrid data path. Every connection starts on splice(2), the cheapest path for
// short connections; one that proves to be bulk (promoteBytes in one direction, or
// promoteAfter old) is promoted: both sockets go into the sockmap, and the verdict program in
// bpf/skfwd.c moves each side's bytes to the other side's egress. Userspace then sees only end
// of stream and errors. (Measured reasons: shared/sockmap-notes.md.)
type Kernel struct {
	closeOnce    sync.Once
	closeErr     error
	objs         *loader.Objects
	guard        *openMaps // held by every use of objs, so Close never frees a map in use
	log          *slog.Logger
	promoteBytes int64
	promoteAfter time.Duration
	always       bool
	maxBacklog   int64
	mon          *monitor
	events       *ringbuf.Reader
	guardDone    chan struct{}
	countsStop   chan struct{} // closed by Close: Counts stop flushing
	bySocket     sync.Map      // cookie -> *promotedSocket, for the backlog events

	obs KernelObserver

	// Stats, for status and metrics.
	Promoted atomic.Uint64 // connections moved to the kernel path
	Demoted  atomic.Uint64 // directions moved back to userspace (backlog past the bound)
	// LeftUnderLock: demoted directions taken out of the verdict map by the sock_ops program
	// (leaveVerdict), as opposed to from userspace.
	LeftUnderLock atomic.Uint64
	Fallbacks     sync.Map     // reason -> *atomic.Uint64: connections that stayed in userspace
	Active        atomic.Int64 // connections on the kernel path now
}

// KernelOptions configure NewKernel.
type KernelOptions struct {
	PromoteBytes int64         // bytes in one direction before promotion
	PromoteAfter time.Duration // age before promotion
	Always       bool          // promote every connection at once ("sockmap" mode)
	MaxPromoted  int           // connections on the kernel path at once
	MaxBacklog   int64         // bytes a direction may hold in the kernel path; 0: DefaultMaxBacklog
	Log          *slog.Logger
	Observer     KernelObserver // nil: none

	maxCuts uint32 // tests: loader.Options.MaxCuts
}

// KernelObserver hears of promotions and fallbacks (metrics).
type KernelObserver interface {
	Promoted()
	Demoted(reason string)
	FellBack(reason string)
	// Trimmed: bytes of retransmitted segments that the kernel would have delivered twice
	// (bpf/skfwd.c, overlap()), counted when their connection ends.
	Trimmed(bytes uint64)
}

// NewKernel loads the BPF objects and starts the end-of-stream monitor.
func NewKernel(opts KernelOptions) (*Kernel, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	objs, err := loader.Load(loader.Options{MaxSockets: uint32(2 * opts.MaxPromoted), MaxCuts: opts.maxCuts})
	if err != nil {
		return nil, err
	}
	if opts.MaxBacklog <= 0 {
		opts.MaxBacklog = DefaultMaxBacklog
	}
	events, err := ringbuf.NewReader(objs.Events())
	if err != nil {
		objs.Close()
		return nil, fmt.Errorf("backlog events: %w", err)
	}
	mon, err := newMonitor(opts.Log)
	if err != nil {
		events.Close()
		objs.Close()
		return nil, err
	}
	k := &Kernel{objs: objs, guard: &openMaps{}, log: opts.Log, promoteBytes: opts.PromoteBytes, promoteAfter: opts.PromoteAfter, always: opts.Always,
		maxBacklog: opts.MaxBacklog, mon: mon, events: events, guardDone: make(chan struct{}), countsStop: make(chan struct{}), obs: opts.Observer}
	if err := objs.LeavesUnderLock(); err != nil {
		k.log.Warn("kernel data path: demotions take sockets out of the verdict map from userspace, where the kernel can drop a batch in flight (the connection is then reset); the sock_ops program that avoids it is not attached", "err", err)
	}
	if !objs.TrimsRetransmissions() {
		k.log.Warn("kernel data path: this kernel cannot cut the already-delivered front off a retransmitted segment (needs Linux 6.2 or later); a promoted connection that receives one is reset at its end instead of ending cleanly")
	}
	go k.guardBacklogs()
	return k, nil
}

// Close stops the monitor and the backlog guard and releases the BPF objects. Connections
// still on the kernel path are reset first. Closing again returns the first Close's result.
func (k *Kernel) Close() error {
	k.closeOnce.Do(func() {
		close(k.countsStop)
		k.mon.close()
		k.events.Close()
		<-k.guardDone
		k.closeErr = k.guard.close(k.objs.Close)
	})
	return k.closeErr
}

// openMaps keeps the BPF objects open while anything uses them: a scrape, a promotion or a
// teardown can still be running when the gateway stops, or when a self-test that timed out is
// closed (both seen as data races in the VM suite).
type openMaps struct {
	mu     sync.RWMutex
	closed bool
}

// use reports whether the objects are open and, if so, keeps them open until done.
func (o *openMaps) use() bool {
	o.mu.RLock()
	if o.closed {
		o.mu.RUnlock()
		return false
	}
	return true
}

func (o *openMaps) done() { o.mu.RUnlock() }

func (o *openMaps) close(release func() error) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	return release()
}

var errClosed = errors.New("kernel data path closed")

// Mode implements Path.
func (k *Kernel) Mode() string {
	if k.always {
		return "sockmap"
	}
	return "auto"
}

// Objects exposes the loaded maps (counts, entries) to the metrics and tests.
func (k *Kernel) Objects() *loader.Objects { return k.objs }

func ctxDone(ctx context.Context) bool { return ctx.Err() != nil }

// waitActive waits until at least n connections are on the kernel path.
func (k *Kernel) waitActive(n int64, timeout time.Duration) bool {
	return waitUntil(timeout, func() bool { return k.Active.Load() >= n })
}

// waitIdle waits until no connection is on the kernel path.
func (k *Kernel) waitIdle(timeout time.Duration) bool {
	return waitUntil(timeout, func() bool { return k.Active.Load() == 0 })
}

// waitUntil polls cond every millisecond until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

func (k *Kernel) fallback(reason string) {
	v, _ := k.Fallbacks.LoadOrStore(reason, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
	if k.obs != nil {
		k.obs.FellBack(reason)
	}
}

// Splice implements Path.
func (k *Kernel) Splice(ctx context.Context, a, b *net.TCPConn) Result {
	var res Result
	if !k.always {
		var done bool
		if res, done = k.untilBulk(ctx, a, b); done {
			return res
		}
	}
	return k.promote(ctx, a, b, res)
}

// untilBulk splices in userspace until the connection proves bulk. It reports done when the
// connection was finished here instead: it ended, failed, or half-closed (a socket whose peer
// sent FIN cannot enter a sockhash, so such a connection stays in userspace to its end).
func (k *Kernel) untilBulk(ctx context.Context, a, b *net.TCPConn) (Result, bool) {
	var once sync.Once
	stop := func() {
		once.Do(func() {
			// A read deadline in the past ends splice(2) cleanly: whatever it read has been
			// written before it returns, so nothing is left in between.
			_ = a.SetReadDeadline(time.Unix(1, 0))
			_ = b.SetReadDeadline(time.Unix(1, 0))
		})
	}
	timer := time.AfterFunc(k.promoteAfter, stop)
	// Cancelled meanwhile: stop copying; the check below then resets both sides.
	stopOnCancel := context.AfterFunc(ctx, stop)
	type dirResult struct {
		n   int64
		eof bool
		err error
	}
	var failOnce sync.Once
	fail := func() {
		// One direction failed: reset both now, which also ends the other direction's wait.
		failOnce.Do(func() { Abort(a); Abort(b) })
	}
	run := func(dst, src *net.TCPConn) dirResult {
		n, err := io.CopyN(dst, src, k.promoteBytes)
		switch {
		case err == nil: // the threshold: this connection is bulk
			stop()
			return dirResult{n: n}
		case errors.Is(err, io.EOF):
			if err := endOfStream(dst, src); err != nil {
				fail()
				return dirResult{n: n, err: err}
			}
			return dirResult{n: n, eof: true}
		case errors.Is(err, os.ErrDeadlineExceeded) && !ctxDone(ctx):
			return dirResult{n: n}
		}
		fail()
		return dirResult{n: n, err: err}
	}
	var ab dirResult
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); ab = run(b, a) }()
	ba := run(a, b)
	wg.Wait()
	timer.Stop()
	stopOnCancel()
	res := Result{AToB: ab.n, BToA: ba.n}
	if ctx.Err() != nil && ab.err == nil && ba.err == nil {
		ab.err = context.Cause(ctx)
	}
	if err := errors.Join(ab.err, ba.err); err != nil {
		fail()
		res.Err = err
		return res, true
	}
	_ = a.SetReadDeadline(time.Time{})
	_ = b.SetReadDeadline(time.Time{})
	if !ab.eof && !ba.eof {
		return res, false
	}
	k.fallback("half-closed")
	// Finish the direction still open, if any, in userspace.
	rest := join(ctx, a, b, !ab.eof, !ba.eof, carried{})
	return Result{AToB: res.AToB + rest.AToB, BToA: res.BToA + rest.BToA, Err: rest.Err}, true
}

// promote moves both sockets to the kernel path and waits until the connection ends there.
func (k *Kernel) promote(ctx context.Context, a, b *net.TCPConn, pre Result) Result {
	pa, err := newPromotedSocket(a)
	if err != nil {
		k.fallback("socket")
		return k.stayUserspace(ctx, a, b, pre, carried{})
	}
	pb, err := newPromotedSocket(b)
	if err != nil {
		pa.close()
		k.fallback("socket")
		return k.stayUserspace(ctx, a, b, pre, carried{})
	}
	pa.peer, pb.peer = pb, pa
	c := &promotedConn{k: k, a: pa, b: pb, done: make(chan struct{})}
	pa.conn, pb.conn = c, c
	// Hand on, in userspace, whatever is queued: the verdict is fed whole skbs from the
	// receive queue and ignores how much of the first one userspace already read, so a
	// partly read skb at insert would be forwarded again from its start (seen: a tunnel
	// answer read by the gateway, delivered a second time to the client with the banner
	// that shared its skb). After the drain the queue holds only whole skbs.
	// Both directions at once, and neither waits long for its destination: a drain blocked
	// writing into a tunnel whose far gateway is itself draining, and so no longer reads
	// that tunnel, waits for ever; both gateways of a bulk transfer promote at about the same
	// time, so this was seen (the netns 1 GiB each-way test, hung). Such a connection stays in
	// userspace, which reads both ways again, with the bytes the drain could not write.
	var drainedAB int64
	var leftAB []byte
	var errAB error
	done := make(chan struct{})
	go func() { drainedAB, leftAB, errAB = drain(pa.fd, b); close(done) }()
	drainedBA, leftBA, errBA := drain(pb.fd, a)
	<-done
	pre.AToB += drainedAB
	pre.BToA += drainedBA
	if errors.Is(errAB, errBusy) || errors.Is(errBA, errBusy) {
		pa.close()
		pb.close()
		k.fallback("busy")
		return k.stayUserspace(ctx, a, b, pre, carried{ab: leftAB, ba: leftBA})
	}
	if err := errors.Join(errAB, errBA); err != nil {
		pa.close()
		pb.close()
		Abort(a)
		Abort(b)
		pre.Err = err
		return pre
	}
	if err = pa.mark(); err == nil {
		err = pb.mark()
	}
	if err != nil {
		pa.close()
		pb.close()
		k.fallback("socket")
		return k.stayUserspace(ctx, a, b, pre, carried{})
	}
	if err := k.insert(pa, pb); err != nil {
		// A scrape may have found the pair in bySocket before the insert undid it: mark the
		// connection over under its lock before the descriptors go.
		c.mu.Lock()
		c.finished = true
		c.mu.Unlock()
		pa.close()
		pb.close()
		reason := "map"
		switch {
		case errors.Is(err, unix.EOPNOTSUPP):
			reason = "not-established"
		case errors.Is(err, unix.E2BIG), errors.Is(err, unix.ENOMEM), errors.Is(err, unix.ENOSPC):
			reason = "map-full"
		}
		k.fallback(reason)
		// A peer that already sent its FIN is ordinary for short connections: counted, not
		// worth a warning each.
		level := slog.LevelWarn
		if reason == "not-established" {
			level = slog.LevelDebug
		}
		k.log.Log(context.Background(), level, "connection stays on the userspace path", "reason", reason, "err", err)
		return k.stayUserspace(ctx, a, b, pre, carried{})
	}
	// Out of Go's netpoller: the kernel raises a readable wakeup per verdict batch, and we
	// only want end of stream and errors (notes, pitfall 8). The sockets live on in pa/pb.
	a.Close()
	b.Close()
	pa.pushQueued()
	pb.pushQueued()
	k.Promoted.Add(1)
	if k.obs != nil {
		k.obs.Promoted()
	}
	k.Active.Add(1)
	defer k.Active.Add(-1)
	if err := k.mon.watch(c); err != nil {
		c.abort(err)
	}
	stop := context.AfterFunc(ctx, func() { c.abort(context.Cause(ctx)) })
	defer stop()
	<-c.done
	res := c.res
	res.AToB += pre.AToB
	res.BToA += pre.BToA
	return res
}

// errBusy: the drain could not finish quickly, because bytes kept arriving as fast as it read
// them (the queue was never seen empty) or its destination stopped taking them; the
// connection stays on the userspace path, which handles that load anyway.
var errBusy = errors.New("receive queue never empty, or its destination not taking bytes")

// maxDrain bounds a drain: a queue holds a few MiB at most, so reading far more means the
// peer keeps it full.
const maxDrain = 32 << 20

// drainWriteWait is how long a drain waits for its destination to take bytes; a healthy one
// takes a receive queue's worth in well under that.
const drainWriteWait = 500 * time.Millisecond

// drain reads everything queued on fd now (without waiting) and writes it to dst. On errBusy,
// left holds bytes read and not written.
func drain(fd int, dst *net.TCPConn) (total int64, left []byte, err error) {
	_ = dst.SetWriteDeadline(time.Now().Add(drainWriteWait))
	defer func() { _ = dst.SetWriteDeadline(time.Time{}) }()
	buf := make([]byte, 64<<10)
	for {
		if total > maxDrain {
			return total, nil, errBusy
		}
		n, err := unix.Read(fd, buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if errors.Is(werr, os.ErrDeadlineExceeded) {
				return total, bytes.Clone(buf[w:n]), errBusy
			}
			if werr != nil {
				return total, nil, werr
			}
		}
		switch {
		case errors.Is(err, unix.EAGAIN):
			return total, nil, nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return total, nil, err
		case n == 0:
			// End of stream: the pair cannot enter the sockhash now; insert reports it
			// (EOPNOTSUPP) and the connection carries on in userspace.
			return total, nil, nil
		}
	}
}

func (k *Kernel) stayUserspace(ctx context.Context, a, b *net.TCPConn, pre Result, carry carried) Result {
	r := join(ctx, a, b, true, true, carry)
	return Result{AToB: pre.AToB + r.AToB, BToA: pre.BToA + r.BToA, Err: r.Err}
}

// insert puts a promoted pair into the maps in the only safe order: directions first (the
// verdict needs them), then both sockets into the program-less target map, then both into
// the verdict map; so a verdict never runs before its peer can be redirected to (notes,
// pitfall 1). On error everything inserted is removed again.
func (k *Kernel) insert(a, b *promotedSocket) (err error) {
	if !k.guard.use() {
		return errClosed
	}
	defer k.guard.done()
	m := k.objs
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	for _, s := range []*promotedSocket{a, b} {
		if err := m.Directions().Update(s.cookie, loader.Direction{Peer: s.peer.cookie}, ebpf.UpdateNoExist); err != nil {
			return fmt.Errorf("directions: %w", err)
		}
		undo = append(undo, func() { _ = m.Directions().Delete(s.cookie) })
		if err := m.Limits().Update(s.cookie, k.limitFor(0), ebpf.UpdateNoExist); err != nil {
			return fmt.Errorf("limits: %w", err)
		}
		undo = append(undo, func() { _ = m.Limits().Delete(s.cookie) })
		k.bySocket.Store(s.cookie, s)
		undo = append(undo, func() { k.bySocket.Delete(s.cookie) })
	}
	for _, mp := range []*ebpf.Map{m.Targets(), m.Sockets()} {
		for _, s := range []*promotedSocket{a, b} {
			if err := mp.Update(s.cookie, uint64(s.fd), ebpf.UpdateNoExist); err != nil {
				return fmt.Errorf("%s: %w", mp, err)
			}
			undo = append(undo, func() { _ = mp.Delete(s.cookie) })
		}
	}
	return nil
}

// remove takes a promoted pair out of the maps in teardown order: the verdict map first, so
// no new bytes are redirected, then the targets, then the directions (read for the counts).
func (k *Kernel) remove(a, b *promotedSocket) (ab, ba loader.Direction) {
	if !k.guard.use() {
		return ab, ba
	}
	defer k.guard.done()
	m := k.objs
	for _, mp := range []*ebpf.Map{m.Sockets(), m.Targets()} {
		_ = mp.Delete(a.cookie)
		_ = mp.Delete(b.cookie)
	}
	_ = m.Directions().Lookup(a.cookie, &ab)
	_ = m.Directions().Lookup(b.cookie, &ba)
	for _, s := range []*promotedSocket{a, b} {
		_ = m.Directions().Delete(s.cookie)
		_ = m.Limits().Delete(s.cookie)
		k.bySocket.Delete(s.cookie)
	}
	return ab, ba
}

// direction reads the verdict's counts for the bytes s receives.
func (k *Kernel) direction(s *promotedSocket) loader.Direction {
	var d loader.Direction
	if k.guard.use() {
		_ = k.objs.Directions().Lookup(s.cookie, &d)
		k.guard.done()
	}
	return d
}

// redirected reads how many bytes the kernel has moved from s to its peer.
func (k *Kernel) redirected(s *promotedSocket) uint64 { return k.direction(s).Redirected }

// KernelStats is what the kernel path holds now.
type KernelStats struct {
	Bytes int64 // forwarded by the kernel for the connections on its path now
	// Backlog: bytes redirected toward a peer that has not yet taken them into its send
	// stream; memory no socket is charged for (backlog.go).
	Backlog int64
	Maps    []MapUsage
}

// MapUsage is one BPF map's fill.
type MapUsage struct {
	Name              string
	Entries, Capacity int
}

// Stats reads, for metrics at scrape time, the bytes the kernel has forwarded for the
// connections on its path now, and how full each map is.
func (k *Kernel) Stats() (KernelStats, error) {
	var st KernelStats
	k.bySocket.Range(func(_, v any) bool {
		s := v.(*promotedSocket)
		st.Backlog += int64(s.conn.held(s))
		return true
	})
	if !k.guard.use() {
		return st, errClosed
	}
	defer k.guard.done()
	var cookie uint64
	var d loader.Direction
	it := k.objs.Directions().Iterate()
	for it.Next(&cookie, &d) {
		st.Bytes += int64(d.Redirected)
	}
	if err := it.Err(); err != nil {
		return st, fmt.Errorf("read directions map: %w", err)
	}
	for name, m := range map[string]*ebpf.Map{
		"sockets": k.objs.Sockets(), "targets": k.objs.Targets(), "directions": k.objs.Directions(), "limits": k.objs.Limits(),
	} {
		st.Maps = append(st.Maps, MapUsage{Name: name, Entries: countKeys[uint64](m), Capacity: int(m.MaxEntries())})
	}
	st.Maps = append(st.Maps, MapUsage{Name: "open_counts", Entries: countKeys[loader.OpenKey](k.objs.OpenCounts()), Capacity: int(k.objs.OpenCounts().MaxEntries())})
	sort.Slice(st.Maps, func(i, j int) bool { return st.Maps[i].Name < st.Maps[j].Name })
	return st, nil
}
