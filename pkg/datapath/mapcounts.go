package datapath

import (
	"sync"

	"github.com/cilium/ebpf"
	"github.com/skfwd/skfwd/pkg/counts"
	"github.com/skfwd/skfwd/pkg/loader"
)

// MapCounts keeps open connections per (routing key, target) in the kernel data path's
// open_counts BPF map, so the counts live with the data plane and any tool can read them
// (bpftool map dump). Routing keys and targets get small ids; the map is keyed by the pair.
// Only this process writes the map, under one lock, so read-modify-write is safe. When the map
// is full the connection is counted in an in-process table instead: never lost, never failed.
type MapCounts struct {
	m        *ebpf.Map
	guard    *openMaps // the kernel path's: the map is read only while open
	mu       sync.Mutex
	ids      map[string]uint32
	overflow counts.Table
}

var _ counts.Counter = (*MapCounts)(nil)

// Counts returns the open-connection counts kept in the kernel path's map.
func (k *Kernel) Counts() *MapCounts {
	return &MapCounts{m: k.objs.OpenCounts(), guard: k.guard, ids: map[string]uint32{}}
}

func (c *MapCounts) key(routingKey, target string) loader.OpenKey {
	id := func(s string) uint32 {
		if v, ok := c.ids[s]; ok {
			return v
		}
		v := uint32(len(c.ids) + 1)
		c.ids[s] = v
		return v
	}
	// Routing keys and targets share one id space; the "k:" and "t:" prefixes keep a key and
	// a target of the same name apart.
	return loader.OpenKey{RoutingKey: id("k:" + routingKey), Target: id("t:" + target)}
}

// Open implements counts.Counter.
func (c *MapCounts) Open(routingKey, target string) int {
	c.mu.Lock()
	k := c.key(routingKey, target)
	var n uint64
	if c.guard.use() {
		_ = c.m.Lookup(k, &n)
		c.guard.done()
	}
	c.mu.Unlock()
	return int(n) + c.overflow.Open(routingKey, target)
}

// Acquire implements counts.Counter.
func (c *MapCounts) Acquire(routingKey, target string) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.key(routingKey, target)
	if !c.guard.use() {
		return c.overflow.Acquire(routingKey, target)
	}
	var n uint64
	_ = c.m.Lookup(k, &n)
	err := c.m.Put(k, n+1)
	c.guard.done()
	if err != nil {
		return c.overflow.Acquire(routingKey, target)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if !c.guard.use() {
				return
			}
			defer c.guard.done()
			var n uint64
			_ = c.m.Lookup(k, &n)
			if n <= 1 {
				_ = c.m.Delete(k) // at zero the entry goes: the map holds only open pairs
				return
			}
			_ = c.m.Put(k, n-1)
		})
	}
}

// Each implements counts.Counter.
func (c *MapCounts) Each(f func(routingKey, target string, open int)) {
	c.mu.Lock()
	names := make(map[uint32]string, len(c.ids))
	for s, id := range c.ids {
		names[id] = s[2:] // without the "k:" / "t:" prefix
	}
	var k loader.OpenKey
	var n uint64
	type entry struct {
		key, target string
		n           int
	}
	var entries []entry
	if c.guard.use() {
		for it := c.m.Iterate(); it.Next(&k, &n); {
			entries = append(entries, entry{names[k.RoutingKey], names[k.Target], int(n)})
		}
		c.guard.done()
	}
	c.mu.Unlock()
	for _, e := range entries {
		f(e.key, e.target, e.n)
	}
	c.overflow.Each(f)
}

// Entries returns how many (routing key, target) pairs the map holds.
func (c *MapCounts) Entries() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.guard.use() {
		return 0
	}
	defer c.guard.done()
	return countKeys[loader.OpenKey](c.m)
}

// countKeys counts the keys of a map of key type K.
func countKeys[K any](m *ebpf.Map) int {
	n := 0
	var key K
	var prev any // nil: start from the first key
	for m.NextKey(prev, &key) == nil {
		n++
		k := key
		prev = &k
	}
	return n
}
