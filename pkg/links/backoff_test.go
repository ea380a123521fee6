package links

import (
	"slices"
	"testing"
	"time"
)

// TestBackoff: waits double across failed dials up to the cap, and a session that came up
// starts them over.
func TestBackoff(t *testing.T) {
	ms := time.Millisecond
	b := backoff{max: time.Second}
	var got []time.Duration
	for range 6 {
		got = append(got, b.next())
	}
	if want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second}; !slices.Equal(got, want) {
		t.Errorf("waits %v, want %v", got, want)
	}
	b.reset()
	if w := b.next(); w != 100*ms {
		t.Errorf("first wait after a reset %v, want 100ms", w)
	}
	small := backoff{max: 30 * ms}
	if w1, w2 := small.next(), small.next(); w1 != 30*ms || w2 != 30*ms {
		t.Errorf("a cap below the first wait: waits %v, %v, want 30ms each", w1, w2)
	}
}
