package datapath

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestSlowReaderBoundsKernelMemory: a fast writer behind a reader taking 1 KiB a millisecond.
// Without a bound the kernel path would queue everything the writer offers (hundreds of MB);
// with it, the bytes written but not yet read stay within the socket buffers on the way plus
// the bound. Then the reader speeds up: every byte must arrive, in order, and the connection
// must end cleanly, with the other direction still working on the kernel path.
func TestSlowReaderBoundsKernelMemory(t *testing.T) {
	const bound = 1 << 20
	k := newKernelWith(t, KernelOptions{PromoteBytes: 1, PromoteAfter: time.Hour, Always: true, MaxPromoted: 64, MaxBacklog: bound})
	s := splice(t, k, nil)
	if !k.waitActive(1, 3*time.Second) {
		t.Fatalf("not promoted: %v", fallbacks(k))
	}
	const offered = 256 << 20
	w := startWriter(s.clientA, offered, 31)

	// Sockets on the way: the writer's send buffer, the path's receive and send buffers, the
	// reader's receive buffer.
	allowed := 2*sysctlMax(t, "tcp_wmem") + 2*sysctlMax(t, "tcp_rmem") + bound + 2<<20
	got := sha256.New()
	var read int64
	var worst int64
	buf := make([]byte, 1024)
	tick := time.NewTicker(time.Millisecond)
	slowUntil := time.Now().Add(3 * time.Second)
	for time.Now().Before(slowUntil) {
		<-tick.C
		_ = s.clientB.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.ReadFull(s.clientB, buf)
		if err != nil {
			t.Fatalf("slow read after %d bytes: %v", read, err)
		}
		got.Write(buf[:n])
		read += int64(n)
		worst = max(worst, w.written.Load()-read)
	}
	tick.Stop()
	t.Logf("slow phase: read %d bytes, writer ahead by at most %d bytes (allowed %d), demotions %d",
		read, worst, allowed, k.Demoted.Load())
	if worst > allowed {
		t.Errorf("the writer got %d bytes ahead of a slow reader; the bound allows %d", worst, allowed)
	}
	if k.Demoted.Load() == 0 {
		t.Errorf("the slow direction was not demoted")
	}
	// The other direction is still on the kernel path and must work meanwhile.
	if err := sendAndCheck(t, s.clientB, s.clientA, 8<<20, 32); err != nil {
		t.Fatalf("reverse direction: %v", err)
	}

	_ = s.clientB.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := io.Copy(got, s.clientB)
	if err != nil {
		t.Fatalf("fast read: %v", err)
	}
	if err := <-w.done; err != nil {
		t.Fatalf("writer: %v", err)
	}
	if read+n != offered || !bytes.Equal(got.Sum(nil), w.sum) {
		t.Fatalf("read %d bytes of %d, checksum equal: %v", read+n, offered, bytes.Equal(got.Sum(nil), w.sum))
	}
	r := s.wait(t)
	if r.Err != nil || r.AToB != offered || r.BToA != 8<<20 || !r.Demoted {
		t.Fatalf("result %+v", r)
	}
}

// writer sends n seeded random bytes and half-closes; sum is valid once done delivered nil.
type writer struct {
	written atomic.Int64
	done    chan error
	sum     []byte
}

func startWriter(c *net.TCPConn, n int64, seed uint64) *writer {
	w := &writer{done: make(chan error, 1)}
	go func() {
		rng := rand.New(rand.NewPCG(seed, seed))
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for left := n; left > 0; {
			k := min(int64(len(buf)), left)
			for i := range buf[:k] {
				buf[i] = byte(rng.Uint32())
			}
			h.Write(buf[:k])
			if _, err := c.Write(buf[:k]); err != nil {
				w.done <- err
				return
			}
			w.written.Add(k)
			left -= k
		}
		w.sum = h.Sum(nil)
		w.done <- c.CloseWrite()
	}()
	return w
}

// sysctlMax reads the largest buffer TCP autotuning may give a socket (net.ipv4.<name>).
func sysctlMax(t *testing.T, name string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 3 {
		t.Fatalf("%s: %q", name, b)
	}
	v, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		t.Fatal(fmt.Errorf("%s: %w", name, err))
	}
	return v
}
