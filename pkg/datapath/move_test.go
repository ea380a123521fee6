package datapath_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/skfwd/skfwd/pkg/datapath"
	"github.com/skfwd/skfwd/pkg/mux"
	"github.com/skfwd/skfwd/pkg/tunnel"
)

// Moves are tested on a connection carried as a stream between two joins, with a loopback
// connection standing in for the link's tunnel:
//
//	A (test) <-> a [JoinStream, opener] =stream/tunnel= [JoinStream, acceptor] b <-> B (test)

type streamed struct {
	A, B     *net.TCPConn
	opener   chan datapath.Result
	acceptor chan datapath.Result
}

// moveAfter is the opener's threshold in these tests: small, so every test crosses it fast.
const moveAfter = 256 << 10

// joinStreamed builds the chain. With tunnels false the opener finds no tunnel to move to.
func joinStreamed(t *testing.T, tunnels bool, after int64) *streamed {
	t.Helper()
	dc, ac := tcpPair(t)
	accepted := make(chan *mux.Stream, 1)
	ds, as := sessionPair(t, dc, ac, func(st *mux.Stream) { accepted <- st })
	a, A := tcpPair(t)
	b, B := tcpPair(t)
	tn, tf := tcpPair(t)
	var taken bool
	take := func() (datapath.Tunnel, error) {
		if !tunnels || taken {
			return datapath.Tunnel{}, errors.New("no tunnel idle")
		}
		taken = true
		return datapath.Tunnel{Conn: tn, Token: 7, Ctx: context.Background(), Done: func() {}}, nil
	}
	await := func(token uint64) (datapath.Tunnel, error) {
		if token != 7 {
			return datapath.Tunnel{}, fmt.Errorf("awaited token %d, want the opener's 7", token)
		}
		return datapath.Tunnel{Conn: tf, Token: 7, Ctx: context.Background(), Done: func() {}}, nil
	}
	s := &streamed{A: A, B: B, opener: make(chan datapath.Result, 1), acceptor: make(chan datapath.Result, 1)}
	st, err := ds.Open(tunnel.Request{FlowID: 1, RoutingKey: "db", DestSite: "b", SourceSite: "a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if err := peer.Accept(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Answer(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.opener <- datapath.JoinStream(a, st, &datapath.Mover{After: after, Take: take, Path: datapath.Userspace{}})
	}()
	go func() {
		s.acceptor <- datapath.JoinStream(b, peer, &datapath.Mover{Await: await, Path: datapath.Userspace{}})
	}()
	t.Cleanup(func() { ds.Close(nil); as.Close(nil) })
	return s
}

func sessionPair(t *testing.T, dc, ac *net.TCPConn, onOpen func(*mux.Stream)) (*mux.Session, *mux.Session) {
	t.Helper()
	type made struct {
		s   *mux.Session
		err error
	}
	ch := make(chan made, 1)
	go func() {
		s, err := mux.New(ac, mux.Options{OnOpen: onOpen})
		ch <- made{s, err}
	}()
	ds, err := mux.New(dc, mux.Options{Dialer: true})
	if err != nil {
		t.Fatal(err)
	}
	m := <-ch
	if m.err != nil {
		t.Fatal(m.err)
	}
	return ds, m.s
}

func (s *streamed) results(t *testing.T) (opener, acceptor datapath.Result) {
	t.Helper()
	return wait(t, "opener's join", s.opener), wait(t, "acceptor's join", s.acceptor)
}

func checkTransfer(t *testing.T, what string, sent, got transfer) {
	t.Helper()
	if sent.err != nil || got.err != nil || got.n != sent.n || got.sum != sent.sum {
		t.Errorf("%s: sent %d bytes (err %v), received %d (err %v), checksums equal %v", what, sent.n, sent.err, got.n, got.err, got.sum == sent.sum)
	}
}

// Checksummed both ways at once: the connection moves mid-transfer and every byte arrives
// once, in order, counted at both ends. 8 MiB (32 times the threshold) keeps the test within
// its limits under emulation (make vm-test); the netns suite moves 64 MiB.
func TestMoveMidTransferBothWaysChecksummed(t *testing.T) {
	checkGoroutines(t)
	const size = 8 << 20
	s := joinStreamed(t, true, moveAfter)
	upRecv, downRecv := goRecv(s.B), goRecv(s.A)
	up, down := goSend(s.A, 1, size), goSend(s.B, 2, size)
	checkTransfer(t, "A to B", wait(t, "A's send", up), wait(t, "B's receive", upRecv))
	checkTransfer(t, "B to A", wait(t, "B's send", down), wait(t, "A's receive", downRecv))
	o, a := s.bothMoved(t)
	if o.AToB != size || o.BToA != size || a.AToB != size || a.BToA != size {
		t.Fatalf("counted opener %d/%d, acceptor %d/%d, want %d each", o.AToB, o.BToA, a.AToB, a.BToA, size)
	}
}

// A client that sends its request and half-closes, then downloads: the opener's direction has
// ended when the move is due, so its move frame asks the acceptor to move the download.
func TestMoveDownloadAfterClientHalfClose(t *testing.T) {
	checkGoroutines(t)
	s := joinStreamed(t, true, moveAfter)
	oneWay(t, "request", s.A, s.B, 3, 100)
	oneWay(t, "download", s.B, s.A, 4, 8<<20)
	s.bothMoved(t)
}

// The backend answers and half-closes at once; the client uploads: only the upload moves.
func TestMoveUploadAfterBackendHalfClose(t *testing.T) {
	checkGoroutines(t)
	s := joinStreamed(t, true, moveAfter)
	oneWay(t, "reply", s.B, s.A, 5, 10)
	oneWay(t, "upload", s.A, s.B, 6, 8<<20)
	s.bothMoved(t)
}

// oneWay sends n checksummed bytes from src, half-closes it, and checks what dst receives.
func oneWay(t *testing.T, what string, src, dst *net.TCPConn, seed uint64, n int64) {
	t.Helper()
	got := goRecv(dst)
	checkTransfer(t, what, wait(t, what+" send", goSend(src, seed, n)), wait(t, what+" receive", got))
}

// bothMoved waits for both joins and checks that both moved the connection and ended cleanly.
func (s *streamed) bothMoved(t *testing.T) (opener, acceptor datapath.Result) {
	t.Helper()
	o, a := s.results(t)
	if !o.Moved || !a.Moved || o.Err != nil || a.Err != nil {
		t.Fatalf("opener %+v, acceptor %+v: want both moved, no error", o, a)
	}
	return o, a
}

// Without a tunnel the connection stays on the stream, intact; a short one never moves.
func TestNoMoveWithoutTunnelOrBelowThreshold(t *testing.T) {
	checkGoroutines(t)
	for _, c := range []struct {
		name    string
		tunnels bool
		size    int64
	}{{"no tunnel", false, 4 << 20}, {"short", true, moveAfter / 4}} {
		t.Run(c.name, func(t *testing.T) {
			s := joinStreamed(t, c.tunnels, moveAfter)
			upRecv, downRecv := goRecv(s.B), goRecv(s.A)
			checkTransfer(t, "A to B", wait(t, "A's send", goSend(s.A, 7, c.size)), wait(t, "B's receive", upRecv))
			checkTransfer(t, "B to A", wait(t, "B's send", goSend(s.B, 8, c.size)), wait(t, "A's receive", downRecv))
			o, a := s.results(t)
			if o.Moved || a.Moved || o.Err != nil || a.Err != nil {
				t.Fatalf("opener %+v, acceptor %+v: want neither moved, no error", o, a)
			}
		})
	}
}

// A client reset after the move reaches the backend as a reset, not as a clean end.
func TestResetAfterMoveReachesTheOtherEnd(t *testing.T) {
	checkGoroutines(t)
	s := joinStreamed(t, true, moveAfter)
	go func() { _, _ = io.Copy(io.Discard, s.A) }()
	if err := stream(s.A, 9, 4<<20); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4<<20)
	if _, err := io.ReadFull(s.B, got); err != nil {
		t.Fatal(err)
	}
	datapath.Abort(s.A)
	_ = s.B.SetReadDeadline(time.Now().Add(waitLimit))
	_, err := io.Copy(io.Discard, s.B)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("backend read after the client's reset: %v, want a reset", err)
	}
	o, a := s.results(t)
	if !o.Moved || o.Err == nil || a.Err == nil {
		t.Fatalf("opener %+v, acceptor %+v: want moved, both failed", o, a)
	}
}
