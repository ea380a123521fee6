package datapath_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/skfwd/skfwd/internal/leakcheck"
	"github.com/skfwd/skfwd/pkg/datapath"
)

// Every test joins two loopback TCP connections through Userspace.Splice:
//
//	A (test) <-> a (spliced) ... b (spliced) <-> B (test)
//
// so AToB counts what A sent and B received.

const waitLimit = 10 * time.Second

// tcpPair returns the two ends of one loopback TCP connection.
func tcpPair(t *testing.T) (near, far *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	acc := <-ch
	if acc.err != nil {
		d.Close()
		t.Fatal(acc.err)
	}
	near, far = acc.c.(*net.TCPConn), d.(*net.TCPConn)
	t.Cleanup(func() {
		near.Close()
		far.Close()
	})
	return near, far
}

// joined is one spliced connection: the test drives A and B; Splice owns a and b.
type joined struct {
	A, B *net.TCPConn
	a, b *net.TCPConn
	res  chan datapath.Result
}

func join(t *testing.T) *joined {
	t.Helper()
	return joinCtx(t, context.Background())
}

func joinCtx(t *testing.T, ctx context.Context) *joined {
	t.Helper()
	a, A := tcpPair(t)
	b, B := tcpPair(t)
	j := &joined{A: A, B: B, a: a, b: b, res: make(chan datapath.Result, 1)}
	go func() { j.res <- datapath.Userspace{}.Splice(ctx, a, b) }()
	return j
}

func (j *joined) result(t *testing.T) datapath.Result {
	t.Helper()
	select {
	case r := <-j.res:
		return r
	case <-time.After(waitLimit):
		t.Fatalf("Splice did not return within %v", waitLimit)
		return datapath.Result{}
	}
}

// assertClosed checks that Splice closed both of its sockets.
func (j *joined) assertClosed(t *testing.T) {
	t.Helper()
	for name, c := range map[string]*net.TCPConn{"a": j.a, "b": j.b} {
		if err := c.SetDeadline(time.Time{}); !errors.Is(err, net.ErrClosed) {
			t.Errorf("socket %s after Splice: SetDeadline error %v, want net.ErrClosed (socket left open)", name, err)
		}
	}
}

// checkGoroutines fails the test if goroutines outlive it (leakcheck.Goroutines). Call it
// first so its cleanup runs last.
func checkGoroutines(t *testing.T) { t.Helper(); leakcheck.Goroutines(t, 5*time.Second) }

// stream writes n pseudo-random bytes from seed to w.
func stream(w io.Writer, seed uint64, n int64) error {
	src := io.LimitReader(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}), n)
	_, err := io.CopyBuffer(w, src, make([]byte, 256<<10))
	return err
}

// send writes n pseudo-random bytes from seed to c, then half-closes c, and returns the sha256
// of what it wrote.
func send(c *net.TCPConn, seed uint64, n int64) ([32]byte, error) {
	h := sha256.New()
	if err := stream(io.MultiWriter(c, h), seed, n); err != nil {
		return [32]byte{}, err
	}
	if err := c.CloseWrite(); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(h.Sum(nil)), nil
}

// recv reads c to end of stream and returns how much it read and its sha256.
func recv(c *net.TCPConn) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, c, make([]byte, 256<<10))
	return n, [32]byte(h.Sum(nil)), err
}

type transfer struct {
	n   int64
	sum [32]byte
	err error
}

func goSend(c *net.TCPConn, seed uint64, n int64) <-chan transfer {
	ch := make(chan transfer, 1)
	go func() {
		sum, err := send(c, seed, n)
		ch <- transfer{n, sum, err}
	}()
	return ch
}

func goRecv(c *net.TCPConn) <-chan transfer {
	ch := make(chan transfer, 1)
	go func() {
		n, sum, err := recv(c)
		ch <- transfer{n, sum, err}
	}()
	return ch
}

func wait[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("%s: nothing within %v", what, waitLimit)
		var zero T
		return zero
	}
}

func TestMode(t *testing.T) {
	var p datapath.Path = datapath.Userspace{}
	if got := p.Mode(); got != "userspace" {
		t.Errorf("Mode() = %q, want %q", got, "userspace")
	}
}

func TestSpliceBothWaysChecksummed(t *testing.T) {
	checkGoroutines(t)
	sizes := []struct {
		name       string
		aToB, bToA int64
	}{
		{"64MiB each way", 64 << 20, 64 << 20},
		{"odd sizes", 1<<20 + 7, 3},
		{"nothing one way", 5 << 20, 0},
		{"nothing either way", 0, 0},
	}
	for _, sz := range sizes {
		t.Run(sz.name, func(t *testing.T) {
			j := join(t)
			sentAB, sentBA := goSend(j.A, 1, sz.aToB), goSend(j.B, 2, sz.bToA)
			gotAB, gotBA := goRecv(j.B), goRecv(j.A)

			for _, c := range []struct {
				dir        string
				sent, recv <-chan transfer
			}{{"A->B", sentAB, gotAB}, {"B->A", sentBA, gotBA}} {
				s, r := wait(t, c.dir+" send", c.sent), wait(t, c.dir+" receive", c.recv)
				if s.err != nil || r.err != nil {
					t.Fatalf("%s: send error %v, receive error %v", c.dir, s.err, r.err)
				}
				if r.n != s.n || r.sum != s.sum {
					t.Errorf("%s: received %d bytes sha256 %x, sent %d bytes sha256 %x", c.dir, r.n, r.sum, s.n, s.sum)
				}
			}
			res := j.result(t)
			want := datapath.Result{AToB: sz.aToB, BToA: sz.bToA}
			if res != want {
				t.Errorf("Result = %+v, want %+v", res, want)
			}
			j.assertClosed(t)
		})
	}
}

func TestSpliceManyConcurrent(t *testing.T) {
	checkGoroutines(t)
	const conns, size = 40, 256 << 10
	type outcome struct {
		i   int
		err error
	}
	js := make([]*joined, conns)
	for i := range js {
		js[i] = join(t)
	}
	done := make(chan outcome, conns)
	for i, j := range js {
		go func() {
			sentAB, sentBA := goSend(j.A, uint64(2*i), size+int64(i)), goSend(j.B, uint64(2*i+1), size-int64(i))
			gotAB, gotBA := goRecv(j.B), goRecv(j.A)
			sAB, sBA, rAB, rBA := <-sentAB, <-sentBA, <-gotAB, <-gotBA
			var err error
			switch {
			case sAB.err != nil || sBA.err != nil || rAB.err != nil || rBA.err != nil:
				err = errors.Join(sAB.err, sBA.err, rAB.err, rBA.err)
			case rAB.sum != sAB.sum || rAB.n != sAB.n:
				err = fmt.Errorf("A->B: got %d bytes %x, sent %d bytes %x", rAB.n, rAB.sum, sAB.n, sAB.sum)
			case rBA.sum != sBA.sum || rBA.n != sBA.n:
				err = fmt.Errorf("B->A: got %d bytes %x, sent %d bytes %x", rBA.n, rBA.sum, sBA.n, sBA.sum)
			}
			done <- outcome{i, err}
		}()
	}
	for range conns {
		o := wait(t, "transfer", done)
		if o.err != nil {
			t.Errorf("connection %d: %v", o.i, o.err)
		}
	}
	for i, j := range js {
		res := j.result(t)
		want := datapath.Result{AToB: size + int64(i), BToA: size - int64(i)}
		if res != want {
			t.Errorf("connection %d: Result = %+v, want %+v", i, res, want)
		}
		j.assertClosed(t)
	}
}

// TestSpliceHalfClose: one side sends and half-closes; the other sees the data then EOF, and
// can still send for as long as it likes, and all of it arrives.
func TestSpliceHalfClose(t *testing.T) {
	checkGoroutines(t)
	tests := []struct {
		name   string
		first  func(j *joined) *net.TCPConn // half-closes first
		second func(j *joined) *net.TCPConn
		// Which Result field counts first's bytes.
		firstIsA bool
	}{
		{"A closes first", func(j *joined) *net.TCPConn { return j.A }, func(j *joined) *net.TCPConn { return j.B }, true},
		{"B closes first", func(j *joined) *net.TCPConn { return j.B }, func(j *joined) *net.TCPConn { return j.A }, false},
	}
	const request, response = 1000, 3<<20 + 1
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := join(t)
			first, second := tt.first(j), tt.second(j)

			reqSum, err := send(first, 10, request)
			if err != nil {
				t.Fatal(err)
			}
			// The request and then its FIN reach the other side while the connection stays open
			// the other way.
			got := wait(t, "request", goRecv(second))
			if got.err != nil || got.n != request || got.sum != reqSum {
				t.Fatalf("request: got %d bytes (err %v), want %d, sums equal %v", got.n, got.err, request, got.sum == reqSum)
			}
			select {
			case r := <-j.res:
				t.Fatalf("Splice returned after one half-close: %+v", r)
			default:
			}

			// The half-closed side goes on receiving: first in pieces with pauses, then in bulk.
			gotResp := goRecv(first)
			h := sha256.New()
			out := io.MultiWriter(second, h)
			for i := range 3 {
				if _, err := out.Write(bytes.Repeat([]byte{byte('x' + i)}, 100)); err != nil {
					t.Fatalf("write after the peer's half-close: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := stream(out, 11, response); err != nil {
				t.Fatalf("write after the peer's half-close: %v", err)
			}
			if err := second.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			resp := wait(t, "response", gotResp)
			if resp.err != nil || resp.n != 300+response || resp.sum != [32]byte(h.Sum(nil)) {
				t.Fatalf("response: got %d bytes (err %v), want %d, sums equal %v", resp.n, resp.err, 300+response, resp.sum == [32]byte(h.Sum(nil)))
			}

			res := j.result(t)
			want := datapath.Result{AToB: request, BToA: 300 + response}
			if !tt.firstIsA {
				want.AToB, want.BToA = want.BToA, want.AToB
			}
			if res != want {
				t.Errorf("Result = %+v, want %+v", res, want)
			}
			j.assertClosed(t)
		})
	}
}

// TestSpliceReset: a peer that resets its connection makes Splice reset the other one too, so
// a failure is never mistaken for a clean end of stream.
func TestSpliceReset(t *testing.T) {
	checkGoroutines(t)
	tests := []struct {
		name      string
		resetA    bool // else B resets
		otherSend bool // the surviving side is sending, not waiting in a read
	}{
		{name: "A resets, B reading", resetA: true},
		{name: "B resets, A reading", resetA: false},
		{name: "A resets, B sending", resetA: true, otherSend: true},
		{name: "B resets, A sending", resetA: false, otherSend: true},
	}
	const before = 1000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := join(t)
			resetter, other := j.B, j.A
			if tt.resetA {
				resetter, other = j.A, j.B
			}
			// Some bytes first, received in full, so the counts are known exactly.
			if _, err := resetter.Write(bytes.Repeat([]byte{'r'}, before)); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(other, make([]byte, before)); err != nil {
				t.Fatal(err)
			}

			otherErr := make(chan error, 1)
			if tt.otherSend {
				go func() {
					// Keep writing until the reset arrives.
					buf := make([]byte, 64<<10)
					for {
						if _, err := other.Write(buf); err != nil {
							otherErr <- err
							return
						}
					}
				}()
				time.Sleep(50 * time.Millisecond) // let the buffers fill
			} else {
				go func() {
					_, err := other.Read(make([]byte, 1))
					otherErr <- err
				}()
				time.Sleep(20 * time.Millisecond) // let the read block
			}
			datapath.Abort(resetter)

			err := wait(t, "the other side's error", otherErr)
			if tt.otherSend {
				// The first failed send reports the reset; had the RST been seen by a read
				// first, a send reports EPIPE. Either way it is a failure, never silence.
				if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
					t.Errorf("other side's write error = %v, want ECONNRESET or EPIPE", err)
				}
			} else if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("other side's read error = %v, want ECONNRESET", err)
			}

			res := j.result(t)
			if res.Err == nil {
				t.Errorf("Result.Err = nil after a reset, want an error")
			}
			if !tt.otherSend && !errors.Is(res.Err, syscall.ECONNRESET) {
				t.Errorf("Result.Err = %v, want ECONNRESET", res.Err)
			}
			fromResetter := res.BToA
			if tt.resetA {
				fromResetter = res.AToB
			}
			if fromResetter != before {
				t.Errorf("Result = %+v: %d bytes counted from the resetting side, want %d", res, fromResetter, before)
			}
			if !tt.otherSend && (res.AToB+res.BToA != before) {
				t.Errorf("Result = %+v: want %d bytes in total, all from the resetting side", res, before)
			}
			j.assertClosed(t)
		})
	}
}

// TestSpliceResetAfterHalfClose: A sends its request and half-closes, B reads it to EOF, then
// A resets. B is not reading any more (it has seen EOF) and may be idle, computing a reply; the
// reset must still reach it and Splice must end, rather than both sockets and two goroutines
// waiting for B's next write.
func TestSpliceResetAfterHalfClose(t *testing.T) {

	checkGoroutines(t)
	j := join(t)
	if _, err := send(j.A, 20, 500); err != nil {
		t.Fatal(err)
	}
	if got := wait(t, "request", goRecv(j.B)); got.err != nil || got.n != 500 {
		t.Fatalf("request: %d bytes, err %v", got.n, got.err)
	}
	datapath.Abort(j.A)

	select {
	case res := <-j.res:
		if !errors.Is(res.Err, syscall.ECONNRESET) || res.AToB != 500 || res.BToA != 0 {
			t.Errorf("Result = %+v, want AToB 500, BToA 0, Err ECONNRESET", res)
		}
	case <-time.After(2 * time.Second):
		// Unblock Splice so the test ends cleanly: B's write makes it notice.
		_, _ = j.B.Write([]byte("x"))
		res := j.result(t)
		t.Fatalf("Splice still running 2s after A's reset; it ended only once B wrote, with %+v", res)
	}
	// B already has EOF, so it learns of the reset on its next write; a reset in CLOSE_WAIT
	// reads as EPIPE there (tcp_reset), as it would behind no forwarder.
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, err := j.B.Write([]byte("reply"))
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("B's write after A's reset: %v, want ECONNRESET or EPIPE", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	j.assertClosed(t)
}

// TestSpliceContextEnds: when the context ends first (the site stops, the link under the
// connection died), both peers see a reset and Result.Err says why.
func TestSpliceContextEnds(t *testing.T) {
	checkGoroutines(t)
	errLinkDied := errors.New("link died")
	tests := []struct {
		name    string
		cancel  func(context.CancelCauseFunc)
		wantErr error
	}{
		{"cancelled", func(c context.CancelCauseFunc) { c(nil) }, context.Canceled},
		{"cancelled with a cause", func(c context.CancelCauseFunc) { c(errLinkDied) }, errLinkDied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			t.Cleanup(func() { cancel(nil) })
			j := joinCtx(t, ctx)
			// Bytes each way first, so the counts are known exactly.
			if _, err := j.A.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(j.B, make([]byte, 4)); err != nil {
				t.Fatal(err)
			}
			if _, err := j.B.Write([]byte("pong!")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(j.A, make([]byte, 5)); err != nil {
				t.Fatal(err)
			}
			readA, readB := readErr(j.A), readErr(j.B)
			time.Sleep(20 * time.Millisecond) // let the reads block
			tt.cancel(cancel)

			for name, ch := range map[string]<-chan error{"A": readA, "B": readB} {
				if err := wait(t, name+"'s read", ch); !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("%s's read after the context ended: %v, want ECONNRESET", name, err)
				}
			}
			res := j.result(t)
			if !errors.Is(res.Err, tt.wantErr) || res.AToB != 4 || res.BToA != 5 {
				t.Errorf("Result = %+v, want AToB 4, BToA 5, Err %v", res, tt.wantErr)
			}
			j.assertClosed(t)
		})
	}
}

func readErr(c *net.TCPConn) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		ch <- err
	}()
	return ch
}

// TestSpliceContextEndsAsSpliceReturns: a context that ends just as both directions end must
// leave a consistent Result (run with -race: the cancel callback and Splice's return touch
// the same Result).
func TestSpliceContextEndsAsSpliceReturns(t *testing.T) {
	checkGoroutines(t)
	for i := range 200 {
		ctx, cancel := context.WithCancel(context.Background())
		j := joinCtx(t, ctx)
		// Both ends close at once, so Splice returns at about the moment ctx ends.
		_ = j.A.CloseWrite()
		_ = j.B.CloseWrite()
		if i%2 == 0 {
			runtime.Gosched()
		}
		cancel()
		res := j.result(t)
		if res.AToB != 0 || res.BToA != 0 || (res.Err != nil && !errors.Is(res.Err, context.Canceled)) {
			t.Fatalf("round %d: Result = %+v, want no bytes and either no error or context.Canceled", i, res)
		}
		j.assertClosed(t)
		j.A.Close()
		j.B.Close()
	}
}
