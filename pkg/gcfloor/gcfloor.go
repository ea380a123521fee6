// Package gcfloor gives the garbage collector a heap floor: it does not start a cycle before
// the heap has grown by at least a fixed amount, however small the live heap is.
//
// A gateway's live heap is small (a few MiB when no connection is open) while every client
// connection allocates a few KiB, so Go's default (a cycle whenever the heap doubles) runs
// a collection every few thousand connections: several a second at the connection rates of
// make bench, where a heap floor of 64 MiB made 10 % more connections a second at 7 % less
// gateway CPU each. Once the live heap is larger than the floor, the default applies again,
// so memory stays bounded by twice the live heap, or the live heap plus the floor.
//
// Memory a burst took comes back at once when it ends: Go's scavenger alone returns freed
// heap to the kernel over minutes (5000 idle clients left 150 MiB with a gateway 2 s after
// they had gone). Connections are goroutines: when their number has fallen to under half its
// peak, by at least a thousand, a collection runs and the free heap is returned in one go.
package gcfloor

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// DefaultFloor is the heap growth that may pass before a collection.
const DefaultFloor = 64 << 20

// minLive is the live heap assumed before the first cycle has measured it, and below it: Go's
// own minimum heap target.
const minLive = 4 << 20

// percentFor is the GOGC that lets a live heap grow by floor before the next cycle, never
// below Go's default of 100.
func percentFor(live, floor uint64) int {
	live = max(live, minLive)
	if live >= floor {
		return 100
	}
	return int(floor * 100 / live)
}

// burst is the fall in goroutines that counts as a burst's end: some 500 connections.
const burst = 1000

// releaseNow reports whether a burst has ended: the goroutines are under half their peak
// since the last release, and fewer by at least burst.
func releaseNow(goroutines, peak uint64) bool {
	return goroutines < peak/2 && peak-goroutines >= burst
}

// Run adjusts GOGC to the live heap every interval until ctx ends, then restores it, and
// returns free heap to the kernel when a burst has ended. The GOGC part does nothing when the
// operator set GOGC: their setting stands.
func Run(ctx context.Context, floor uint64, interval time.Duration) {
	tune := os.Getenv("GOGC") == ""
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/sched/goroutines:goroutines"}}
	if tune {
		old := debug.SetGCPercent(100)
		defer debug.SetGCPercent(old)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	set, peak := 100, uint64(0)
	for {
		metrics.Read(sample)
		live, goroutines := sample[0].Value.Uint64(), sample[1].Value.Uint64()
		peak = max(peak, goroutines)
		if releaseNow(goroutines, peak) {
			debug.FreeOSMemory()
			peak = goroutines
		}
		if pct := percentFor(live, floor); tune && pct != set {
			debug.SetGCPercent(pct)
			set = pct
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
