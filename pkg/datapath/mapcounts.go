package datapath

import (
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/skfwd/skfwd/pkg/counts"
	"github.com/skfwd/skfwd/pkg/loader"
)

// MapCounts keeps open connections per (routing key, target) for the selector and mirrors
// them into the kernel data path's open_counts BPF map, so the counts live with the data plane
// and any tool can read them (bpftool map dump). The per-connection path never makes a system
// call for them: the selector, metrics and status read the in-process counts, and the pairs
// that changed are written to the map in one batch at most flushEvery after the change (the
// map lags by that much, never more). Routing keys and targets get small ids; the map is keyed
// by the pair and holds only pairs with connections open. A full map leaves a pair out of the
// map, never out of the counts.
type MapCounts struct {
	m     *ebpf.Map
	guard *openMaps // the kernel path's: the map is written only while open
	stop  <-chan struct{}
	kick  chan struct{}

	mu    sync.Mutex
	ids   map[string]uint32
	open  map[loader.OpenKey]int
	dirty map[loader.OpenKey]struct{}
}

var _ counts.Counter = (*MapCounts)(nil)

// flushEvery batches the map writes: every pair changed within it costs one write.
const flushEvery = 100 * time.Millisecond

// Counts returns the open-connection counts mirrored into the kernel path's map. They are
// flushed there until the Kernel closes.
func (k *Kernel) Counts() *MapCounts {
	c := &MapCounts{m: k.objs.OpenCounts(), guard: k.guard, stop: k.countsStop, kick: make(chan struct{}, 1),
		ids: map[string]uint32{}, open: map[loader.OpenKey]int{}, dirty: map[loader.OpenKey]struct{}{}}
	go c.flushLoop()
	return c
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
	defer c.mu.Unlock()
	return c.open[c.key(routingKey, target)]
}

// Acquire implements counts.Counter.
func (c *MapCounts) Acquire(routingKey, target string) func() {
	c.mu.Lock()
	k := c.key(routingKey, target)
	c.changeLocked(k, +1)
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			c.changeLocked(k, -1)
			c.mu.Unlock()
		})
	}
}

func (c *MapCounts) changeLocked(k loader.OpenKey, by int) {
	if n := c.open[k] + by; n > 0 {
		c.open[k] = n
	} else {
		delete(c.open, k) // at zero the pair goes: the counts hold only open pairs
	}
	if len(c.dirty) == 0 {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	c.dirty[k] = struct{}{}
}

// flushLoop writes changed pairs to the map, a batch at a time, until the Kernel closes.
func (c *MapCounts) flushLoop() {
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		}
		select {
		case <-c.stop:
			return
		case <-time.After(flushEvery):
		}
		c.flush()
	}
}

// flush writes every pair changed since the last flush: its count, or its removal at zero.
func (c *MapCounts) flush() {
	c.mu.Lock()
	type write struct {
		k loader.OpenKey
		n uint64
	}
	writes := make([]write, 0, len(c.dirty))
	for k := range c.dirty {
		writes = append(writes, write{k, uint64(c.open[k])})
	}
	clear(c.dirty)
	c.mu.Unlock()
	if !c.guard.use() {
		return
	}
	defer c.guard.done()
	for _, w := range writes {
		if w.n == 0 {
			_ = c.m.Delete(w.k)
		} else {
			_ = c.m.Put(w.k, w.n) // a full map misses the pair; the counts have it
		}
	}
}

// Each implements counts.Counter.
func (c *MapCounts) Each(f func(routingKey, target string, open int)) {
	c.mu.Lock()
	names := make(map[uint32]string, len(c.ids))
	for s, id := range c.ids {
		names[id] = s[2:] // without the "k:" / "t:" prefix
	}
	type entry struct {
		key, target string
		n           int
	}
	entries := make([]entry, 0, len(c.open))
	for k, n := range c.open {
		entries = append(entries, entry{names[k.RoutingKey], names[k.Target], n})
	}
	c.mu.Unlock()
	for _, e := range entries {
		f(e.key, e.target, e.n)
	}
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
