package datapath

import (
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The accounting checks guard against kernel faults that cannot be caused on demand (a batch
// dropped as a socket leaves the verdict map, bytes counted twice). These tests fake the
// fault from the other side: they make every promoted socket's record claim that userspace
// read fewer bytes before the promotion than it did, so the bytes received since then no
// longer match the bytes passed on, exactly as if the kernel had lost some. The connection
// must then be reset, never ended cleanly.

// skewConsumed moves every promoted socket's pre-promotion read count back by n bytes and
// reports how many sockets it changed.
func skewConsumed(k *Kernel, n uint64) int {
	changed := 0
	k.bySocket.Range(func(_, v any) bool {
		s := v.(*promotedSocket)
		s.conn.mu.Lock()
		s.consumed -= n
		s.conn.mu.Unlock()
		changed++
		return true
	})
	return changed
}

// readUntilError reads c to its end and returns how many bytes came and the error that ended
// it (nil for a clean end of stream).
func readUntilError(c io.Reader) (int64, error) {
	return io.Copy(io.Discard, c)
}

// TestKernelPathAccountingMismatchAtEndResets: at end of stream the bytes received since the
// promotion must equal the bytes redirected; when they do not, the reader gets a reset
// instead of a clean end of a wrong stream.
func TestKernelPathAccountingMismatchAtEndResets(t *testing.T) {
	k := newKernel(t, true, 1)
	s := splice(t, k, nil)
	if !k.waitActive(1, 3*time.Second) {
		t.Fatalf("not promoted: %v", fallbacks(k))
	}
	if n := skewConsumed(k, 100); n != 2 {
		t.Fatalf("skewed %d promoted sockets, want 2", n)
	}
	w := startWriter(s.clientA, 1<<20, 41, 0)
	_ = s.clientB.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := readUntilError(s.clientB)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reader got %d bytes and then %v; want ECONNRESET", got, err)
	}
	<-w.done
	r := s.wait(t)
	if r.Err == nil || !strings.Contains(r.Err.Error(), "since promotion") {
		t.Fatalf("splice ended with %v; want the accounting error", r.Err)
	}
}

// TestKernelPathAccountingMismatchAtDemotionResets: when a direction leaves the kernel path,
// the bytes received since the promotion must equal those redirected plus those still queued;
// when they do not, userspace must not copy on over the hole.
func TestKernelPathAccountingMismatchAtDemotionResets(t *testing.T) {
	k := newKernelWith(t, KernelOptions{PromoteBytes: 1, PromoteAfter: time.Hour, Always: true, MaxPromoted: 64, MaxBacklog: 1 << 20})
	s := splice(t, k, nil)
	if !k.waitActive(1, 3*time.Second) {
		t.Fatalf("not promoted: %v", fallbacks(k))
	}
	if n := skewConsumed(k, 100); n != 2 {
		t.Fatalf("skewed %d promoted sockets, want 2", n)
	}
	const offered = 256 << 20
	w := startWriter(s.clientA, offered, 43, 0)
	// Not reading lets the backlog pass the bound, which demotes the direction.
	if !waitUntil(5*time.Second, func() bool { return k.Demoted.Load() > 0 }) {
		t.Fatalf("the unread direction was not demoted")
	}
	_ = s.clientB.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := readUntilError(s.clientB)
	if !errors.Is(err, syscall.ECONNRESET) || got >= offered {
		t.Fatalf("reader got %d of %d bytes and then %v; want a reset before the end", got, offered, err)
	}
	<-w.done
	r := s.wait(t)
	if r.Err == nil || !strings.Contains(r.Err.Error(), "demoted") {
		t.Fatalf("splice ended with %v; want the accounting error at demotion", r.Err)
	}
}
