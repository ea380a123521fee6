package links

import (
	"time"
)

// Pool bounds. Misses grow a pool fast (a burst of bulk connections wants tunnels at once), up
// to a bound; a pool that then goes PoolShrinkAfter without a miss is halved back toward
// PoolSize, its idle tunnels beyond the target closed, so a burst leaves no descriptors or
// goroutines behind for good.

// grown is the target after a miss: doubled (plus one, so an empty pool grows), at most
// four times the configured size or 64, whichever is more.
func (s *session) grown(target int) int {
	limit := min(max(64, 4*s.m.opts.PoolSize), maxPool)
	return min(target*2+1, limit)
}

// shrinkLocked (dialing side, fill loop) halves the targets of pools idle since the last
// miss, at most once per PoolShrinkAfter, and closes the idle tunnels beyond them. The
// accepting side's copies of the closed tunnels go at its next sweep.
func (s *session) shrinkLocked() {
	base, after := s.m.opts.PoolSize, s.m.opts.PoolShrinkAfter
	if s.outTarget <= base && s.inTarget <= base {
		return
	}
	now := time.Now()
	if now.Sub(time.Unix(0, s.lastMiss.Load())) < after || now.Sub(s.lastShrink) < after {
		return
	}
	s.lastShrink = now
	s.outTarget = max(base, s.outTarget/2)
	s.inTarget = max(base, s.inTarget/2)
	for len(s.idle) > s.outTarget {
		select {
		case c := <-s.idle:
			c.Close()
		default:
		}
	}
	extra := len(s.waiting) - s.inTarget
	for c := range s.waiting {
		if extra <= 0 {
			break
		}
		c.Close() // its waiter sees the close and forgets it
		extra--
	}
}

// sweepLoop (accepting side) drops idle tunnels the dialer has closed, so they do not hold a
// descriptor until a move happens to pick them.
func (s *session) sweepLoop() {
	t := time.NewTicker(s.m.opts.PoolShrinkAfter / 4)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		for range len(s.idle) {
			select {
			case c := <-s.idle:
				if idleAlive(c) {
					s.addIdle(c)
				} else {
					c.Close()
				}
			default:
			}
		}
	}
}
