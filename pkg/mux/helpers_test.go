package mux

import (
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/skfwd/skfwd/internal/leakcheck"
	"github.com/skfwd/skfwd/pkg/tunnel"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (*net.TCPConn, *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	a := <-accepted
	if a == nil {
		tb.Fatal("accept failed")
	}
	return d.(*net.TCPConn), a.(*net.TCPConn)
}

// pair runs a dialer session and an accepting session over loopback TCP; onOpen serves the
// streams the dialer opens. Both are closed, and goroutines checked, at the end of the test.
func pair(tb testing.TB, o Options, onOpen func(*Stream)) (dialer, acceptor *Session) {
	tb.Helper()
	ao := o
	ao.OnOpen = onOpen
	return sessions(tb, o, ao)
}

// sessions runs a dialer session with options do and an accepting one with ao.
func sessions(tb testing.TB, do, ao Options) (dialer, acceptor *Session) {
	tb.Helper()
	leakcheck.Goroutines(tb, 5*time.Second)
	dc, ac := tcpPair(tb)
	errs := make(chan error, 1)
	go func() {
		ao.Dialer = false
		var err error
		acceptor, err = New(ac, ao)
		errs <- err
	}()
	do.Dialer = true
	dialer, err := New(dc, do)
	if err != nil {
		tb.Fatal(err)
	}
	if err := <-errs; err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		dialer.Close(nil)
		acceptor.Close(nil)
	})
	return dialer, acceptor
}

func req(key string) tunnel.Request {
	return tunnel.Request{FlowID: 1, RoutingKey: key, DestSite: "b", SourceSite: "a"}
}

// echo serves an accepted stream by echoing it: the backend of most tests.
func echo(st *Stream) {
	if err := st.Accept(); err != nil {
		st.Reset()
		return
	}
	buf := make([]byte, 32<<10)
	if _, err := st.CopyFrom(st, buf); err != nil {
		st.Reset()
		return
	}
	st.Close()
}

// randomStream is a deterministic pseudo-random byte source of n bytes.
type randomStream struct {
	r *rand.ChaCha8
	n int64
}

func newRandom(seed byte, n int64) *randomStream {
	var s [32]byte
	s[0] = seed
	return &randomStream{r: rand.NewChaCha8(s), n: n}
}

func (r *randomStream) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n)]
	_, _ = r.r.Read(p)
	r.n -= int64(len(p))
	return len(p), nil
}

// sum hashes n pseudo-random bytes of seed.
func sum(seed byte, n int64) [32]byte {
	h := sha256.New()
	_, _ = io.Copy(h, newRandom(seed, n))
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// readSum hashes everything r yields until its end, and returns the count.
func readSum(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, n, err
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isLinkLost(err error) bool { return errors.Is(err, ErrLinkLost) }
