// Package counts keeps the number of connections this site holds open per routing key and
// target: the open(k, d) term of the selector's score.
//
// This is the in-process table used by the userspace data path and by tests; the kernel data
// path keeps the same counts behind the same methods and mirrors them into a BPF map.
package counts

import "sync"

// Counter is the seam between whoever keeps the counts (this in-process Table, or the kernel
// data path's BPF maps) and the gateway, which counts a connection open when it picks a target
// and reads the counts to pick the next one.
type Counter interface {
	Open(routingKey, target string) int
	Acquire(routingKey, target string) (release func())
	// Each calls f for every (routing key, target) with connections open, for metrics.
	Each(f func(routingKey, target string, open int))
}

var _ Counter = (*Table)(nil)

type key struct{ routingKey, target string }

// Table counts open connections. The zero value is ready to use and safe for concurrent use.
type Table struct {
	mu   sync.Mutex
	open map[key]int
}

// Open returns how many connections for routingKey to target are open now.
func (t *Table) Open(routingKey, target string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.open[key{routingKey, target}]
}

// Acquire counts one more open connection and returns the function that ends it. The
// returned function is idempotent, so every exit path may call it.
func (t *Table) Acquire(routingKey, target string) (release func()) {
	k := key{routingKey, target}
	t.mu.Lock()
	if t.open == nil {
		t.open = make(map[key]int)
	}
	t.open[k]++
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			if t.open[k] <= 1 {
				// Deleting at zero keeps the table as small as the set of open connections.
				delete(t.open, k)
			} else {
				t.open[k]--
			}
			t.mu.Unlock()
		})
	}
}

// Each calls f for every (routing key, target) pair with open connections, for metrics read
// at scrape time. f must not call back into t.
func (t *Table) Each(f func(routingKey, target string, open int)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, n := range t.open {
		f(k.routingKey, k.target, n)
	}
}

// Len returns the number of (routing key, target) pairs with open connections; zero once
// every connection has ended.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}
