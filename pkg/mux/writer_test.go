package mux

import (
	"bytes"
	"testing"
	"time"

	"github.com/skfwd/skfwd/pkg/tunnel"
)

// The fairness rule itself, at the queue: while a bulk stream has a frame waiting for the
// writer, it queues no other, so a small message queued after it is at most one frame back.
// The writer loop is not running here, so nothing is taken off the queue during the test.
func TestWriterQueuesOneFramePerStream(t *testing.T) {
	s := &Session{opts: Options{}, peerWindow: 4 << 20}
	s.opts.setDefaults()
	s.w.init(s)
	bulk := newStream(s, 1, true)
	short := newStream(s, 3, true)
	done := make(chan error, 1)
	go func() {
		_, err := bulk.Write(make([]byte, 1<<20))
		done <- err
	}()
	queued := func() int {
		s.w.mu.Lock()
		defer s.w.mu.Unlock()
		return len(s.w.data)
	}
	deadline := time.Now().Add(5 * time.Second)
	for queued() < s.opts.FrameSize {
		if time.Now().After(deadline) {
			t.Fatal("the bulk stream queued nothing")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for a writer that broke the rule to queue more
	if _, err := short.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	s.w.mu.Lock()
	q := bytes.Clone(s.w.data)
	s.w.mu.Unlock()
	s.w.close()
	<-done

	ahead := 0
	for len(q) >= tunnel.FrameHeaderLen {
		h, err := tunnel.ParseFrameHeader(q)
		if err != nil {
			t.Fatal(err)
		}
		if h.Stream == short.id {
			break
		}
		ahead += tunnel.FrameHeaderLen + int(h.Length)
		q = q[tunnel.FrameHeaderLen+int(h.Length):]
	}
	if len(q) < tunnel.FrameHeaderLen {
		t.Fatal("the short stream's frame is not in the queue")
	}
	if limit := tunnel.FrameHeaderLen + s.opts.FrameSize; ahead > limit {
		t.Fatalf("%d bytes of the bulk stream queued ahead of a short message, want at most one frame (%d)", ahead, limit)
	}
}
