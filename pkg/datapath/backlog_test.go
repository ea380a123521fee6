package datapath

import (
	"bytes"
	"fmt"
	"hash"
	"hash/crc32"
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
	const offered = 512 << 20
	memBefore := memAvailable(t)
	w := startWriter(s.clientA, offered, 31, 0)

	// Sockets on the way: the writer's send buffer, the path's receive and send buffers, the
	// reader's receive buffer.
	allowed := 2*sysctlMax(t, "tcp_wmem") + 2*sysctlMax(t, "tcp_rmem") + bound + 2<<20
	got := newChecksum()
	var read int64
	var worst, memGrowth int64
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
		if read%(64<<10) == 0 {
			memGrowth = max(memGrowth, memBefore-memAvailable(t))
		}
	}
	tick.Stop()
	t.Logf("slow phase: read %d bytes, writer ahead by at most %d bytes (allowed %d), system memory grew by at most %d bytes, demotions %d",
		read, worst, allowed, memGrowth, k.Demoted.Load())
	// Every byte the writer wrote and the reader has not read is held in kernel memory on the
	// way (socket buffers, the verdict's queue): the writer's lead is that memory, measured
	// to within one write. The machine's MemAvailable is logged too, but other processes move
	// it by more than the bound, so it is not asserted.
	if worst > allowed {
		t.Errorf("the writer got %d bytes ahead of a slow reader; the bound allows %d", worst, allowed)
	}
	if k.Demoted.Load() == 0 {
		t.Errorf("the slow direction was not demoted")
	}
	// The writer never pauses, so the sock_ops program sees a segment within the wait.
	if err := k.objs.LeavesUnderLock(); err != nil {
		t.Errorf("demotions cannot leave the verdict map under the socket's lock: %v", err)
	} else if k.LeftUnderLock.Load() != k.Demoted.Load() {
		t.Errorf("%d of %d demotions left the verdict map under the socket's lock", k.LeftUnderLock.Load(), k.Demoted.Load())
	}
	// The other direction is still on the kernel path and must work meanwhile.
	if err := sendAndCheck(s.clientB, s.clientA, 8<<20, 32); err != nil {
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

// startWriter writes n bytes from seed to c in 256 KiB writes, pausing pace after each.
func startWriter(c *net.TCPConn, n int64, seed uint64, pace time.Duration) *writer {
	w := &writer{done: make(chan error, 1)}
	go func() {
		h := newChecksum()
		// ChaCha8 is fast enough that gigabytes of test data cost little beside the hashing.
		src := io.LimitReader(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)}), n)
		buf := make([]byte, 256<<10)
		for {
			k, err := io.ReadFull(src, buf)
			if k > 0 {
				h.Write(buf[:k])
				if _, werr := c.Write(buf[:k]); werr != nil {
					w.done <- werr
					return
				}
				w.written.Add(int64(k))
				time.Sleep(pace)
			}
			if err != nil { // io.EOF or io.ErrUnexpectedEOF: all n bytes were read
				break
			}
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

// newChecksum is CRC-32C, which the CPU computes at many GB/s: gigabytes of test data cost
// little, and with the exact byte count it still catches lost, duplicated or reordered bytes.
func newChecksum() hash.Hash { return crc32.New(crc32.MakeTable(crc32.Castagnoli)) }

// memAvailable reads the kernel's estimate of memory available to new work (/proc/meminfo).
func memAvailable(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no MemAvailable in /proc/meminfo")
	return 0
}
