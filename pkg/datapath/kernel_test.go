package datapath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

func newKernel(t *testing.T, always bool, promoteBytes int64) *Kernel {
	t.Helper()
	return newKernelWith(t, KernelOptions{PromoteBytes: promoteBytes, PromoteAfter: time.Hour, Always: always, MaxPromoted: 4096})
}

func newKernelWith(t *testing.T, opts KernelOptions) *Kernel {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel data path tests need root (CAP_BPF, CAP_NET_ADMIN); CI runs as root")
	}
	k, err := NewKernel(opts)
	if err != nil {
		t.Fatalf("kernel data path: %v", err)
	}
	t.Cleanup(func() {
		// Connections closed by the tests end asynchronously (the monitor sees the FIN or
		// reset); wait for that before checking that nothing was left behind.
		if !k.waitIdle(5 * time.Second) {
			t.Errorf("%d connections still on the kernel path 5s after the tests closed them", k.Active.Load())
		}
		for _, m := range []*ebpf.Map{k.objs.Sockets(), k.objs.Targets(), k.objs.Directions(), k.objs.Limits(), k.objs.Leaving()} {
			if n := entries(t, m); n != 0 {
				t.Errorf("%v holds %d entries after every connection ended", m, n)
			}
		}
		if err := k.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := k.Close(); err != nil { // a second Close is harmless
			t.Errorf("second close: %v", err)
		}
	})
	return k
}

func entries(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	return countKeys[uint64](m)
}

// spliced is a connection through a Path: client A's bytes reach client B and back.
type spliced struct {
	clientA, clientB *net.TCPConn
	result           chan Result
}

// splice makes two TCP connections on loopback and joins their server sides with p.
// before runs once both server sides exist but before p gets them.
func splice(t *testing.T, p Path, before func(a, b *net.TCPConn)) spliced {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dial := func() (client, server *net.TCPConn) {
		c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.AcceptTCP()
		if err != nil {
			t.Fatal(err)
		}
		return c, s
	}
	ca, sa := dial()
	cb, sb := dial()
	if before != nil {
		before(ca, cb)
	}
	s := spliced{clientA: ca, clientB: cb, result: make(chan Result, 1)}
	go func() { s.result <- p.Splice(context.Background(), sa, sb) }()
	t.Cleanup(func() { ca.Close(); cb.Close() })
	return s
}

func (s spliced) wait(t *testing.T) Result {
	t.Helper()
	select {
	case r := <-s.result:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("splice did not end within 10s of both sides closing")
	}
	return Result{}
}

// sendAndCheck sends n pseudo-random bytes from src and reads them at dst, comparing checksums;
// src half-closes after its bytes, and dst must then see end of stream. The read deadline
// allows 30 s plus 20 MiB/s, far below any path's speed, even in the kernel's slow state.
func sendAndCheck(src, dst *net.TCPConn, n int64, seed uint64) error {
	return sendAndCheckPaced(src, dst, n, seed, 0)
}

// sendAndCheckPaced is sendAndCheck with a pause after each 256 KiB write.
func sendAndCheckPaced(src, dst *net.TCPConn, n int64, seed uint64, pace time.Duration) error {
	w := startWriter(src, n, seed, pace)
	got := newChecksum()
	_ = dst.SetReadDeadline(time.Now().Add(30*time.Second + time.Duration(n/(20<<20))*time.Second))
	m, err := io.CopyBuffer(got, dst, make([]byte, 256<<10))
	if err != nil {
		return err
	}
	if err := <-w.done; err != nil {
		return err
	}
	if m != n {
		return fmt.Errorf("%d bytes arrived of %d sent", m, n)
	}
	if !bytes.Equal(got.Sum(nil), w.sum) {
		return errors.New("checksum differs")
	}
	return nil
}

// TestKernelPathChecksummedBothWaysWithHalfClose: 4 GiB each way at once through one promoted
// pair, checksummed, each side half-closing after its last byte.
func TestKernelPathChecksummedBothWaysWithHalfClose(t *testing.T) {
	k := newKernel(t, true, 1)
	s := splice(t, k, nil)
	if !k.waitActive(1, 3*time.Second) {
		t.Fatalf("not promoted: %v", fallbacks(k))
	}
	const n = 4 << 30
	began := time.Now()
	if err := both(s, n, 1); err != nil {
		t.Fatal(err)
	}
	t.Logf("4 GiB each way at once in %v", time.Since(began).Round(time.Millisecond))
	if k.Promoted.Load() != 1 {
		t.Fatalf("promoted %d connections, want 1", k.Promoted.Load())
	}
}

func TestKernelPathHalfCloseOneWayThenTheOther(t *testing.T) {
	k := newKernel(t, true, 1)
	s := splice(t, k, nil)
	if !k.waitActive(1, 3*time.Second) {
		t.Fatalf("not promoted: %v", fallbacks(k))
	}
	// A finishes first; B keeps talking for a while after A's end of stream arrived.
	if err := sendAndCheck(s.clientA, s.clientB, 1<<20, 3); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := sendAndCheck(s.clientB, s.clientA, 3<<20, 4); err != nil {
		t.Fatal(err)
	}
	if r := s.wait(t); r.Err != nil || r.AToB != 1<<20 || r.BToA != 3<<20 {
		t.Fatalf("result %+v", r)
	}
}

// TestKernelPathBytesQueuedBeforePromotion: bytes that arrived before the sockets entered the
// sockmap, with nothing sent after them, must still be delivered (a request waiting for its
// answer, a server's banner).
func TestKernelPathBytesQueuedBeforePromotion(t *testing.T) {
	k := newKernel(t, true, 1)
	s := splice(t, k, func(a, b *net.TCPConn) {
		_, _ = a.Write([]byte("request from a"))
		_, _ = b.Write([]byte("banner from b"))
		time.Sleep(20 * time.Millisecond) // let both land in the receive queues
	})
	if !k.waitActive(1, 3*time.Second) {
		t.Fatalf("the pair was not promoted (fallbacks: %v)", fallbacks(k))
	}
	for _, c := range []struct {
		conn *net.TCPConn
		want string
	}{{s.clientB, "request from a"}, {s.clientA, "banner from b"}} {
		got := make([]byte, len(c.want))
		_ = c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.ReadFull(c.conn, got); err != nil || string(got) != c.want {
			t.Fatalf("got %q, %v; want %q", got, err, c.want)
		}
	}
	// And the kernel path carries on from there.
	if err := sendAndCheck(s.clientA, s.clientB, 1<<20, 10); err != nil {
		t.Fatal(err)
	}
	if err := sendAndCheck(s.clientB, s.clientA, 1<<20, 11); err != nil {
		t.Fatal(err)
	}
	if r := s.wait(t); r.Err != nil || r.AToB != 1<<20+14 || r.BToA != 1<<20+13 {
		t.Fatalf("result %+v", r)
	}
}

// TestKernelPathDrainGivesUpOnAStalledDestination: the pre-insert drain finds megabytes
// queued and a destination that takes nothing for a second. It must not wait for it (two
// gateways draining into one tunnel toward each other would wait for ever): the connection
// stays in userspace, which writes what the drain had read first, then everything else, in
// order.
func TestKernelPathDrainGivesUpOnAStalledDestination(t *testing.T) {
	k := newKernel(t, true, 1)
	const n = 32 << 20
	var w *writer
	s := splice(t, stalledDestination{k}, func(a, b *net.TCPConn) { w = startWriter(a, n, 31, 0) })
	time.Sleep(time.Second)
	got := newChecksum()
	_ = s.clientB.SetReadDeadline(time.Now().Add(30 * time.Second))
	m, err := io.Copy(got, s.clientB)
	if err != nil || m != n {
		t.Fatalf("read %d of %d bytes: %v (active %d, demoted %d, fallbacks %v)", m, n, err, k.Active.Load(), k.Demoted.Load(), fallbacks(k))
	}
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Sum(nil), w.sum) {
		t.Fatal("checksum differs")
	}
	s.clientB.Close()
	if r := s.wait(t); r.Err != nil || r.AToB != n || r.Promoted {
		t.Fatalf("result %+v", r)
	}
	if fb := fallbacks(k); fb["busy"] != 1 {
		t.Fatalf("fallbacks %v, want one busy", fb)
	}
}

// stalledDestination sets up TestKernelPathDrainGivesUpOnAStalledDestination: a's receive
// queue may hold megabytes, b's send buffer little (with b's client not reading yet, b takes
// about 300 KiB), and the Splice starts once a's queue has filled.
type stalledDestination struct{ Path }

func (p stalledDestination) Splice(ctx context.Context, a, b *net.TCPConn) Result {
	_ = a.SetReadBuffer(16 << 20)
	_ = b.SetWriteBuffer(64 << 10)
	time.Sleep(200 * time.Millisecond)
	return p.Path.Splice(ctx, a, b)
}

func fallbacks(k *Kernel) map[string]uint64 {
	out := map[string]uint64{}
	k.Fallbacks.Range(func(key, v any) bool {
		out[key.(string)] = v.(interface{ Load() uint64 }).Load()
		return true
	})
	return out
}

func TestKernelPathResetEitherWay(t *testing.T) {
	k := newKernel(t, true, 1)
	for i, aResets := range []bool{true, false} {
		s := splice(t, k, nil)
		resetter, other := s.clientA, s.clientB
		if !aResets {
			resetter, other = s.clientB, s.clientA
		}
		if err := resetter.SetLinger(0); err != nil {
			t.Fatal(err)
		}
		// Make sure the pair is on the kernel path before the reset: a byte through, and the
		// promotion complete (under emulation in the VM, the byte can arrive through the
		// pre-insert drain well before the insert).
		_, _ = resetter.Write([]byte("x"))
		one := make([]byte, 1)
		_ = other.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.ReadFull(other, one); err != nil {
			t.Fatal(err)
		}
		if !waitUntil(3*time.Second, func() bool { return k.Promoted.Load() > uint64(i) }) {
			t.Fatalf("the pair was not promoted (fallbacks: %v)", fallbacks(k))
		}
		resetter.Close()
		_, err := other.Read(one)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("reset by a=%v: the other side read %v, want ECONNRESET", aResets, err)
		}
		if r := s.wait(t); r.Err == nil {
			t.Fatalf("reset by a=%v: splice ended without error", aResets)
		}
	}
}

// TestKernelPathHalfClosedBeforePromotion: a socket whose peer already sent FIN cannot enter a
// sockhash (EOPNOTSUPP); the connection must carry on in userspace, intact.
func TestKernelPathHalfClosedBeforePromotion(t *testing.T) {
	k := newKernel(t, true, 1)
	s := splice(t, k, func(a, b *net.TCPConn) {
		_, _ = a.Write([]byte("all of it"))
		_ = a.CloseWrite()
		time.Sleep(20 * time.Millisecond)
	})
	_ = s.clientB.SetReadDeadline(time.Now().Add(3 * time.Second))
	got, err := io.ReadAll(s.clientB)
	if err != nil || string(got) != "all of it" {
		t.Fatalf("got %q, %v", got, err)
	}
	if err := sendAndCheck(s.clientB, s.clientA, 1<<20, 5); err != nil {
		t.Fatal(err)
	}
	if r := s.wait(t); r.Err != nil {
		t.Fatal(r.Err)
	}
	if v, ok := k.Fallbacks.Load("not-established"); !ok || v.(interface{ Load() uint64 }).Load() != 1 {
		t.Fatalf("want one fallback counted as not-established")
	}
}

func TestAutoPromotesOnlyBulk(t *testing.T) {
	k := newKernel(t, false, 1<<20)
	short := splice(t, k, nil)
	if err := sendAndCheck(short.clientA, short.clientB, 1000, 6); err != nil {
		t.Fatal(err)
	}
	if err := sendAndCheck(short.clientB, short.clientA, 1000, 7); err != nil {
		t.Fatal(err)
	}
	short.wait(t)
	if k.Promoted.Load() != 0 {
		t.Fatalf("a 1000-byte exchange was promoted")
	}
	bulk := splice(t, k, nil)
	if err := sendAndCheck(bulk.clientA, bulk.clientB, 32<<20, 8); err != nil {
		t.Fatal(err)
	}
	if err := sendAndCheck(bulk.clientB, bulk.clientA, 10, 9); err != nil {
		t.Fatal(err)
	}
	if r := bulk.wait(t); r.Err != nil || r.AToB != 32<<20 || r.BToA != 10 {
		t.Fatalf("result %+v", r)
	}
	if k.Promoted.Load() != 1 {
		t.Fatalf("a 32 MiB transfer was not promoted")
	}
}

func TestSelfTestAndSelect(t *testing.T) {
	k := newKernel(t, false, 1<<20)
	if err := k.SelfTest(); err != nil {
		t.Fatalf("self-test: %v", err)
	}
	p, fallback, err := Select(ModeUserspace, KernelOptions{})
	if err != nil || p.Mode() != "userspace" || fallback != "" {
		t.Fatalf("userspace: %v %q %v", p, fallback, err)
	}
	if _, _, err := Select("turbo", KernelOptions{}); err == nil {
		t.Fatal("unknown mode accepted")
	}
	p, fallback, err = Select(ModeSockmap, KernelOptions{PromoteBytes: 1, PromoteAfter: time.Hour, MaxPromoted: 64})
	if err != nil || p.Mode() != "sockmap" || fallback != "" {
		t.Fatalf("sockmap: %v %q %v", p, fallback, err)
	}
	p.(*Kernel).Close()
}

func TestMapCounts(t *testing.T) {
	k := newKernel(t, false, 1<<20)
	c := k.Counts()
	r1 := c.Acquire("db", "east")
	r2 := c.Acquire("db", "east")
	r3 := c.Acquire("db", "@local")
	if c.Open("db", "east") != 2 || c.Open("db", "@local") != 1 || c.Open("web", "east") != 0 {
		t.Fatalf("counts %d %d %d", c.Open("db", "east"), c.Open("db", "@local"), c.Open("web", "east"))
	}
	r1()
	r1() // idempotent
	if c.Open("db", "east") != 1 {
		t.Fatalf("after one release: %d", c.Open("db", "east"))
	}
	// The map follows within a flush: one pair open, then none.
	mapHolds := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for c.Entries() != want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := c.Entries(); n != want {
			t.Fatalf("map holds %d entries, want %d", n, want)
		}
	}
	mapHolds(2)
	r2()
	r3()
	mapHolds(0)
	if c.Open("db", "east") != 0 || c.Open("db", "@local") != 0 {
		t.Fatal("counts left after every release")
	}
}

// TestAutoPromotesMidTransferBothWays: promotion while bytes flow both ways at once, with
// checksums; the userspace phase is stopped mid-stream and the kernel takes over. The writers
// pause 1 ms every 256 KiB: unpaced, loopback carries 32 MiB and the FIN before the promotion
// has drained the queues, and the connection rightly stays in userspace.
func TestAutoPromotesMidTransferBothWays(t *testing.T) {
	k := newKernel(t, false, 1<<20)
	s := splice(t, k, nil)
	const n = 32 << 20
	var wg sync.WaitGroup
	var errAB, errBA error
	wg.Add(2)
	go func() { defer wg.Done(); errAB = sendAndCheckPaced(s.clientA, s.clientB, n, 21, time.Millisecond) }()
	go func() { defer wg.Done(); errBA = sendAndCheckPaced(s.clientB, s.clientA, n, 22, time.Millisecond) }()
	wg.Wait()
	if errAB != nil || errBA != nil {
		t.Fatalf("a->b: %v, b->a: %v", errAB, errBA)
	}
	if r := s.wait(t); r.Err != nil || r.AToB != n || r.BToA != n {
		t.Fatalf("result %+v", r)
	}
	if k.Promoted.Load() != 1 {
		t.Fatalf("not promoted: %v", fallbacks(k))
	}
	t.Logf("promoted %d, fallbacks %v", k.Promoted.Load(), fallbacks(k))
}
