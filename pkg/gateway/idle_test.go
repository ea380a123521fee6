package gateway

import (
	"testing"
	"time"
)

func TestIdleSweepEvery(t *testing.T) {
	for _, tc := range []struct {
		timeouts []time.Duration
		want     time.Duration
	}{
		{nil, 0},
		{[]time.Duration{0, 0}, 0}, // no listener with a timeout: no sweeper
		{[]time.Duration{0, time.Minute, 20 * time.Second}, 5 * time.Second},
		{[]time.Duration{2 * time.Second}, time.Second}, // never more often than once a second
		{[]time.Duration{time.Hour}, 30 * time.Second},  // nor less than twice a minute
	} {
		if got := idleSweepEvery(tc.timeouts); got != tc.want {
			t.Errorf("idleSweepEvery(%v) = %v, want %v", tc.timeouts, got, tc.want)
		}
	}
}
