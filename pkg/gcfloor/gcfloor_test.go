package gcfloor

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	for _, tc := range []struct {
		live, floor uint64
		want        int
	}{
		{live: 0, floor: 64 << 20, want: 1600},       // not measured yet: Go's minimum heap
		{live: 4 << 20, floor: 64 << 20, want: 1600}, // a small heap grows by the floor
		{live: 64 << 20, floor: 64 << 20, want: 100},
		{live: 1 << 30, floor: 64 << 20, want: 100}, // a large heap: the default
		{live: 1 << 10, floor: 64 << 20, want: 1600},
	} {
		if got := percentFor(tc.live, tc.floor); got != tc.want {
			t.Errorf("percentFor(%d, %d) = %d, want %d", tc.live, tc.floor, got, tc.want)
		}
	}
}

func TestReleaseNow(t *testing.T) {
	for _, tc := range []struct {
		goroutines, peak uint64
		want             bool
	}{
		{goroutines: 600, peak: 10600, want: true},   // 5000 idle clients have gone
		{goroutines: 9000, peak: 10600, want: false}, // a dip under steady load
		{goroutines: 100, peak: 900, want: false},    // too small a burst to matter
	} {
		if got := releaseNow(tc.goroutines, tc.peak); got != tc.want {
			t.Errorf("releaseNow(%d goroutines, peak %d) = %v, want %v", tc.goroutines, tc.peak, got, tc.want)
		}
	}
}

// Run raises GOGC while the live heap is below the floor, and restores it when done.
func TestRunRaisesAndRestores(t *testing.T) {
	t.Setenv("GOGC", "")
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Run(ctx, 1<<30, time.Millisecond) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pct := gogc()
		if pct > 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC stayed %d with a live heap far below the floor", pct)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if pct := gogc(); pct != 100 {
		t.Errorf("GOGC %d after Run ended, want 100 restored", pct)
	}
}

func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
