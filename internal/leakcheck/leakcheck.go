// Package leakcheck fails a test that leaves goroutines running, and counts descriptors.
package leakcheck

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// Goroutines fails tb if, once it and the cleanups registered after this call are done, more
// goroutines run than before it; it waits up to limit for them to end, then prints every
// stack. Call it first in a test so its cleanup runs last.
func Goroutines(tb testing.TB, limit time.Duration) {
	tb.Helper()
	before := runtime.NumGoroutine()
	tb.Cleanup(func() {
		deadline := time.Now().Add(limit)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				tb.Errorf("goroutines: %d before the test, %d after it; stacks:\n%s", before, n, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// OpenFDs counts this process's open file descriptors.
func OpenFDs(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}
