package gateway

import (
	"net"
	"time"

	"github.com/skfwd/skfwd/pkg/datapath"
	"golang.org/x/sys/unix"
)

// Idle timeouts (a Listener's idle-timeout setting). No timer and no bookkeeping per byte:
// a sweeper reads each client socket's byte counters from the kernel (TCP_INFO: bytes
// received, bytes acknowledged) a few times per timeout, which sees traffic whatever path
// carries it (userspace, splice, the kernel's sockmap), and resets a connection whose
// counters have not moved for the whole timeout.

// activeConn is a client connection in progress on a listener with an idle timeout, as the
// sweeper knows it.
type activeConn struct {
	l *listener
	// Read and written by the sweeper only.
	bytes      uint64    // received plus acknowledged at the last sweep
	quietSince time.Time // when bytes last moved (or the sweeper first saw the connection)
}

// idleSweepEvery is how often the sweeper looks: a quarter of the shortest timeout, within
// 1 s to 30 s. A quiet connection is reset between its timeout and two sweeps later (the
// count starts when a sweep first sees the connection).
func idleSweepEvery(timeouts []time.Duration) time.Duration {
	shortest := time.Duration(0)
	for _, t := range timeouts {
		if t > 0 && (shortest == 0 || t < shortest) {
			shortest = t
		}
	}
	if shortest == 0 {
		return 0
	}
	return min(max(shortest/4, time.Second), 30*time.Second)
}

func (g *Gateway) idleLoop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case now := <-t.C:
			g.sweepIdle(now)
		}
	}
}

// sweepIdle resets the connections of listeners with an idle timeout that passed it.
func (g *Gateway) sweepIdle(now time.Time) {
	type watched struct {
		c *net.TCPConn
		a *activeConn
	}
	var list []watched
	g.activeMu.Lock()
	for c, a := range g.active {
		if a != nil {
			list = append(list, watched{c, a})
		}
	}
	g.activeMu.Unlock()
	for _, w := range list {
		n, ok := socketBytes(w.c)
		if !ok {
			continue // closed meanwhile
		}
		if n != w.a.bytes || w.a.quietSince.IsZero() {
			w.a.bytes, w.a.quietSince = n, now
			continue
		}
		if quiet := now.Sub(w.a.quietSince); quiet >= w.a.l.cfg.IdleTimeout {
			datapath.Abort(w.c) // the connection's own goroutines see it and end
			g.metrics.IdleReset(w.a.l.cfg.Name)
			g.rateLog.Warn("idle-timeout", "client connection reset at the listener's idle timeout",
				"listener", w.a.l.cfg.Name, "idle_timeout", w.a.l.cfg.IdleTimeout, "quiet_for", quiet.Round(time.Second))
		}
	}
}

// socketBytes is what c has received plus what it sent that the peer acknowledged.
func socketBytes(c *net.TCPConn) (uint64, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || ierr != nil {
		return 0, false
	}
	return info.Bytes_received + info.Bytes_acked, true
}
