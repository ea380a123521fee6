package links_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/skfwd/skfwd/internal/leakcheck"
	"github.com/skfwd/skfwd/pkg/links"
)

// A burst of tunnel requests grows the pools; once the burst is over they shrink back to
// their configured size, and the descriptors and goroutines the burst took are given back.
func TestPoolsShrinkBackAfterABurst(t *testing.T) {
	checkGoroutines(t)
	opts := func(o *links.Options) {
		o.PoolSize = 2
		o.PoolShrinkAfter = 200 * time.Millisecond
	}
	a, b := newSite(t, "a", opts), newSite(t, "b", opts)
	connect(a, b, "ab", 1, 1)
	waitUp(t, a, b, "ab", 1)
	waitPools(t, a, b, "ab", 2)
	settle := func() (goroutines, fds int) {
		time.Sleep(100 * time.Millisecond)
		return runtime.NumGoroutine(), leakcheck.OpenFDs(t)
	}
	g0, f0 := settle()

	// Both ends take tunnels at once, more than the pools hold.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var taken []*links.Tunnel
	for i := range 24 {
		from, to := a, b
		if i%2 == 1 {
			from, to = b, a
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			tun, err := from.m.OpenTunnel(ctx, to.name)
			if err != nil {
				t.Errorf("OpenTunnel: %v", err)
				return
			}
			mu.Lock()
			taken = append(taken, tun)
			mu.Unlock()
		}()
	}
	wg.Wait()
	grown, _ := a.status("ab")
	if grown.Misses == 0 {
		t.Fatal("the burst found every tunnel idle: it tested nothing")
	}
	for _, tun := range taken {
		tun.Conn.Close()
		tun.Done()
	}
	eventually(t, "pools back to their size", func() (bool, string) {
		d, _ := a.status("ab")
		acc, _ := b.status("ab")
		return d.IdleTunnels == 2 && d.PeerTunnels == 2 && acc.IdleTunnels == 2 && acc.PeerTunnels == 2,
			fmt.Sprintf("dialer idle %d peer %d, acceptor idle %d peer %d", d.IdleTunnels, d.PeerTunnels, acc.IdleTunnels, acc.PeerTunnels)
	})
	eventually(t, "descriptors and goroutines back to their baseline", func() (bool, string) {
		g, f := settle()
		return g <= g0 && f <= f0, fmt.Sprintf("goroutines %d (before the burst %d), descriptors %d (before %d)", g, g0, f, f0)
	})
}
