package mux

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/skfwd/skfwd/pkg/tunnel"
)

// A move in each direction: the reader gets exactly the bytes written before the peer's move,
// then ErrMoved with the peer's token; writes after a move fail; the stream then goes from
// both sessions without a reset.
func TestMoveEndsEachDirectionInOrder(t *testing.T) {
	accepted := make(chan *Stream, 1)
	d, a := pair(t, Options{}, func(st *Stream) { _ = st.Accept(); accepted <- st })
	st, err := d.Open(req("db"), []byte("first "))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Answer(); err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	hooked := make(chan uint64, 1)
	peer.OnMove(func(tok uint64) { hooked <- tok })

	before := bytes.Repeat([]byte("a"), 100000) // several frames and window updates
	if _, err := st.Write(before); err != nil {
		t.Fatal(err)
	}
	if err := st.SendMove(41); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("late")); !errors.Is(err, ErrMoved) {
		t.Fatalf("write after the move: %v", err)
	}
	got, err := io.ReadAll(peer)
	if !errors.Is(err, ErrMoved) || len(got) != len("first ")+len(before) {
		t.Fatalf("read %d bytes, then %v; want %d, then ErrMoved", len(got), err, len("first ")+len(before))
	}
	if tok, ok := peer.MoveToken(); !ok || tok != 41 {
		t.Fatalf("move token %d %v", tok, ok)
	}
	waitHook(t, hooked, 41)

	// The other way, from the acceptor.
	if _, err := peer.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	if err := peer.SendMove(41); err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(st)
	if !errors.Is(err, ErrMoved) || string(back) != "reply" {
		t.Fatalf("read %q, then %v", back, err)
	}
	waitFor(t, "moved stream to leave both sessions", func() bool { return d.NumStreams() == 0 && a.NumStreams() == 0 })
	st.Close()
	peer.Close()
}

// A move after this side's FIN only asks the peer to move: its reads are untouched (they end
// with EOF), and its hook hears the token, so it can move the direction still open.
func TestMoveAfterEndAsksThePeer(t *testing.T) {
	accepted := make(chan *Stream, 1)
	d, _ := pair(t, Options{}, func(st *Stream) { _ = st.Accept(); accepted <- st })
	st, err := d.Open(req("db"), []byte("request"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	got, err := io.ReadAll(peer)
	if err != nil || string(got) != "request" {
		t.Fatalf("read %q, %v", got, err)
	}
	hooked := make(chan uint64, 1)
	peer.OnMove(func(tok uint64) { hooked <- tok })
	if err := st.SendMove(7); err != nil {
		t.Fatal(err)
	}
	waitHook(t, hooked, 7)
	// The peer's direction moves: the opener's reads end with ErrMoved after its bytes.
	if _, err := peer.Write([]byte("head")); err != nil {
		t.Fatal(err)
	}
	if err := peer.SendMove(7); err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(st)
	if !errors.Is(err, ErrMoved) || string(back) != "head" {
		t.Fatalf("read %q, then %v", back, err)
	}
}

// A move frame whose offset is not where the sender's bytes end is malformed: bytes would be
// lost or doubled, so the link connection ends rather than deliver them out of place.
func TestMoveAtWrongOffsetEndsTheConnection(t *testing.T) {
	dc, ac := tcpPair(t)
	errs := make(chan error, 1)
	accepted := make(chan *Stream, 1)
	var a *Session
	go func() {
		var err error
		a, err = New(ac, Options{OnOpen: func(st *Stream) { accepted <- st }})
		errs <- err
	}()
	if _, err := dc.Write(tunnel.AppendPreface(nil, DefaultWindow)); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	defer a.Close(nil)
	open, err := tunnel.AppendOpen(nil, 1, req("db"), []byte("12345"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dc.Write(tunnel.AppendMove(open, 1, 4, 9)); err != nil {
		t.Fatal(err)
	}
	st := <-accepted
	<-a.Done()
	if !errors.Is(a.Err(), tunnel.ErrMalformed) {
		t.Fatalf("session ended with %v", a.Err())
	}
	if _, err := io.ReadAll(st); !isLinkLost(err) {
		t.Fatalf("stream read after the malformed move: %v", err)
	}
}

// waitHook waits for an OnMove hook to report the token want.
func waitHook(t *testing.T, hooked <-chan uint64, want uint64) {
	t.Helper()
	select {
	case tok := <-hooked:
		if tok != want {
			t.Fatalf("hook got token %d, want %d", tok, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("move hook not called")
	}
}
