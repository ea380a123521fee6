package datapath_test

import (
	"errors"
	"testing"

	"github.com/skfwd/skfwd/pkg/datapath"
	"github.com/skfwd/skfwd/pkg/mux"
	"github.com/skfwd/skfwd/pkg/tunnel"
)

var openReq = tunnel.Request{FlowID: 1, RoutingKey: "db", DestSite: "b", SourceSite: "a"}

// linkedSessions is a link connection's two sessions: streams opened on the first arrive, in
// order, on the channel; both close when the test ends.
func linkedSessions(t *testing.T) (*mux.Session, <-chan *mux.Stream) {
	dc, ac := tcpPair(t)
	accepted := make(chan *mux.Stream, 2)
	ds, as := sessionPair(t, dc, ac, func(st *mux.Stream) { accepted <- st })
	t.Cleanup(func() { ds.Close(nil); as.Close(nil) })
	return ds, accepted
}

// An opening connection refused by its first target goes to the next with every byte the
// client sent: the kept bytes replay in the second open, the rest follows on the stream, and
// the far end receives the client's transfer whole and in order, checksummed. Before the
// refusal no more than the limit is kept.
func TestOpeningRefusedReplaysEveryByte(t *testing.T) {
	checkGoroutines(t)
	ds, accepted := linkedSessions(t)
	a, A := tcpPair(t)
	b, B := tcpPair(t)
	const limit = 16 << 10
	up := goSend(A, 1, 4<<20)
	var kept []byte
	st1, err := ds.Open(openReq, nil)
	if err != nil {
		t.Fatal(err)
	}
	op := datapath.Open(a, st1, &kept, limit, nil)
	refused := wait(t, "first open", accepted)
	if err := refused.WaitReadable(func() bool { return false }); err != nil {
		t.Fatal(err)
	}
	refused.Refuse(tunnel.ReasonBackendRefused, "first target refuses")
	if _, err := st1.Answer(); !errors.Is(err, mux.ErrRefused) {
		t.Fatalf("answer of the first open: %v, want a refusal", err)
	}
	if !op.Forwarded() {
		t.Error("client bytes had reached the refused stream, Forwarded says none did")
	}
	if err := op.Abandon(); err != nil {
		t.Fatalf("abandon: %v (the client did not fail)", err)
	}
	if len(kept) == 0 || len(kept) > limit {
		t.Fatalf("%d bytes kept, want 1..%d", len(kept), limit)
	}

	st2, err := ds.Open(openReq, kept)
	if err != nil {
		t.Fatal(err)
	}
	replayed := int64(len(kept))
	op = datapath.Open(a, st2, &kept, limit, nil)
	peer := wait(t, "second open", accepted)
	if err := peer.Accept(); err != nil {
		t.Fatal(err)
	}
	far := make(chan datapath.Result, 1)
	go func() { far <- datapath.JoinStream(b, peer, nil) }()
	down := goSend(B, 2, 1<<20)
	if _, err := st2.Answer(); err != nil {
		t.Fatal(err)
	}
	gotUp, gotDown := goRecv(B), goRecv(A)
	res := op.Commit()
	checkTransfer(t, "client to far end", wait(t, "upload", up), wait(t, "far end's receive", gotUp))
	checkTransfer(t, "far end to client", wait(t, "download", down), wait(t, "client's receive", gotDown))
	if res.Err != nil || res.AToB+replayed != 4<<20 || res.BToA != 1<<20 {
		t.Errorf("result %+v with %d replayed, want no error and every byte counted", res, replayed)
	}
	if r := wait(t, "far join", far); r.Err != nil {
		t.Errorf("far join: %v", r.Err)
	}
}

// A client that resets before its target commits is the client's failure: Abandon reports
// it, and the stream is reset, so the far end does not serve a connection nobody holds.
func TestOpeningClientResetBeforeCommit(t *testing.T) {
	checkGoroutines(t)
	ds, accepted := linkedSessions(t)
	a, A := tcpPair(t)
	st, err := ds.Open(openReq, nil)
	if err != nil {
		t.Fatal(err)
	}
	var kept []byte
	op := datapath.Open(a, st, &kept, 1<<10, nil)
	peer := wait(t, "open", accepted)
	datapath.Abort(A)
	if _, err := st.Answer(); err == nil {
		t.Fatal("the stream was answered after its client reset, want it failed")
	}
	if err := op.Abandon(); err == nil {
		t.Fatal("abandon after the client reset: nil, want the client's failure")
	}
	if err := peer.WaitReadable(func() bool { return false }); !errors.Is(err, mux.ErrReset) {
		t.Errorf("far end of the stream: %v, want a reset", err)
	}
}
