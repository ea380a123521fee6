package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/skfwd/skfwd/pkg/loader"
	"golang.org/x/sys/unix"
)

// Bounded memory on the kernel path.
//
// A byte the verdict redirects leaves its source socket's receive queue, so the source's
// window reopens at once; it then waits in the peer's psock queue until the peer's send
// buffer has room. That queue is charged to no socket and has no bound: behind a slow reader
// it grows as fast as the writer sends (measured: 503 MB in 10 s, shared/sockmap-notes.md).
//
// The backlog of a direction is what the verdict redirected from its source minus what
// entered the peer's send stream since promotion (TCP_INFO bytes_acked + SIOCOUTQ, against the
// base taken at promotion). Polling that for every connection costs syscalls even when
// nothing moves, so the verdict tells us instead: each direction has a check_at (limits map);
// when its redirected count reaches it, the verdict sends the socket's cookie on a ring
// buffer, once. Here we compare with the peer's real progress:
//   - backlog within the bound: check_at moves to (sent by the peer + bound), so a healthy
//     direction costs one event per bound's worth of bytes and an idle one costs nothing;
//   - backlog past the bound: the direction is demoted. Its source leaves the verdict map, so
//     its bytes stay in its own receive queue under TCP flow control; once everything already
//     redirected has entered the peer's send stream, a userspace splice(2) carries the rest,
//     in order. The other direction stays on the kernel path.
//
// The gateway therefore holds at most the bound per direction, plus what arrives between the
// event and the demotion (one ring-buffer wakeup and a few syscalls: tens of microseconds), on
// top of ordinary socket buffers. A demoted direction stays in userspace until the
// connection ends: putting it back would need the same ordering dance for no measured gain.

// DefaultMaxBacklog bounds the bytes one direction may hold in the kernel path.
const DefaultMaxBacklog = 4 << 20

// guardBacklogs reads the verdict's events until the ring buffer is closed.
func (k *Kernel) guardBacklogs() {
	defer close(k.guardDone)
	var rec ringbuf.Record
	for {
		if err := k.events.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return
			}
			k.log.Error("kernel data path: reading backlog events", "err", err)
			continue
		}
		if len(rec.RawSample) < 8 {
			continue
		}
		cookie := binary.NativeEndian.Uint64(rec.RawSample)
		if v, ok := k.bySocket.Load(cookie); ok {
			s := v.(*promotedSocket)
			s.conn.checkBacklog(s)
		}
	}
}

// limitFor is the limits entry asking for an event once s has redirected bound bytes more
// than its peer has sent.
func (k *Kernel) limitFor(delivered uint64) loader.Limit {
	return loader.Limit{CheckAt: delivered + uint64(k.maxBacklog)}
}

// delivered is how many of the bytes redirected from s have entered its peer's send stream,
// and how many bytes the peer's send queue still holds (the same snapshot).
// The caller holds c.mu with the connection not finished, so both descriptors are open.
func delivered(s *promotedSocket) (uint64, int, error) {
	sent, queued, err := sendStream(s.peer.fd)
	if err != nil {
		return 0, 0, err
	}
	return sent - s.peer.base, queued, nil
}

// checkBacklog runs on an event for s: it moves s's check_at on, or demotes s.
func (c *promotedConn) checkBacklog(s *promotedSocket) {
	k := c.k
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return
	}
	if lost := k.direction(s).Lost; lost > 0 {
		c.failing = true
		go c.abort(fmt.Errorf("kernel data path: dropped %d bytes of a retransmitted segment whose already-delivered front it could not cut off", lost))
		return
	}
	// An ended direction redirects nothing more: what it holds drains on its own.
	if s.demoted || s.eof {
		return
	}
	for {
		done, _, err := delivered(s)
		if err != nil {
			go c.abort(err)
			return
		}
		if held := k.redirected(s) - done; held > uint64(k.maxBacklog) {
			c.demote(s, held)
			return
		}
		limit := k.limitFor(done)
		if err := k.updateLimit(s, limit); err != nil {
			go c.abort(fmt.Errorf("update backlog limit: %w", err))
			return
		}
		// The verdict may have passed the new check_at before it was in place (it then saw
		// the old, already signalled entry): look again rather than wait for an event that
		// will not come.
		if k.redirected(s) < limit.CheckAt {
			return
		}
	}
}

func (k *Kernel) updateLimit(s *promotedSocket, limit loader.Limit) error {
	if !k.guard.use() {
		return errClosed
	}
	defer k.guard.done()
	return k.objs.Limits().Update(s.cookie, limit, ebpf.UpdateExist)
}

// leaveVerdict takes s out of the verdict map: its bytes stay in its own receive queue.
//
// It asks the sock_ops program to do it (bpf/skfwd.c, leaving), which happens at s's next
// segment in or out, under s's lock, where no verdict batch can be running; removing it from
// here can cut such a batch short and lose its bytes. A socket that sends and receives
// nothing for leaveWait has no batch running either, and is removed from here.
func (k *Kernel) leaveVerdict(s *promotedSocket) error {
	if !k.guard.use() {
		return errClosed
	}
	defer k.guard.done()
	if k.objs.LeavesUnderLock() != nil {
		return k.objs.Sockets().Delete(s.cookie)
	}
	leaving := k.objs.Leaving()
	if err := leaving.Update(s.cookie, loader.LeaveAsked, ebpf.UpdateNoExist); err != nil {
		return fmt.Errorf("leaving: %w", err)
	}
	defer leaving.Delete(s.cookie)
	left := waitUntil(leaveWait, func() bool {
		var state uint32
		return leaving.Lookup(s.cookie, &state) == nil && state == loader.LeaveDone
	})
	if left {
		k.LeftUnderLock.Add(1)
		return nil
	}
	k.log.Debug("kernel data path: a demoted socket saw no segment for the sock_ops program to act on; removing it from userspace", "waited", leaveWait)
	// The program may still take the socket out between the wait and this delete: only the
	// first removal finds it.
	if err := k.objs.Sockets().Delete(s.cookie); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

// leaveWait is how long a demotion waits for s's next segment. A socket receiving in bulk
// acknowledges every other segment, and each ACK it sends runs the program (measured under
// load: nine demotions in ten left that way, the rest had stopped receiving). One receiving a
// trickle may delay its ACK past the wait; then a batch in flight at the removal is unlikely,
// not impossible.
const leaveWait = 20 * time.Millisecond

// demote takes the direction s -> peer off the kernel path; c.mu is held.
func (c *promotedConn) demote(s *promotedSocket, held uint64) {
	k := c.k
	s.demoted = true
	k.Demoted.Add(1)
	if k.obs != nil {
		k.obs.Demoted("backlog")
	}
	k.log.Debug("connection direction left the kernel path: its reader is slower than its writer",
		"backlog_bytes", held, "max_backlog", k.maxBacklog)
	go c.copyInUserspace(s)
}

// copyInUserspace carries a demoted direction to its end with splice(2), after everything the
// kernel redirected has reached the peer's send stream.
func (c *promotedConn) copyInUserspace(s *promotedSocket) {
	// Not under c.mu: leaving can wait for s's next segment.
	if err := c.k.leaveVerdict(s); err != nil {
		c.abortUnlessOver(fmt.Errorf("demote: leave the verdict map: %w", err))
		return
	}
	// TCP_INFO locks the socket, so a verdict that was running for s on another CPU when s
	// left the map has finished, and counted its bytes, once this returns.
	c.mu.Lock()
	if !c.finished {
		_, _ = tcpInfo(s.fd, bytesAcked)
	}
	c.mu.Unlock()
	if !c.awaitDelivered(s) {
		return
	}
	if err := c.accountAtDemotion(s); err != nil {
		c.abortUnlessOver(err)
		return
	}
	src, err := fileConn(s.fd)
	if err != nil {
		c.abort(err)
		return
	}
	dst, err := fileConn(s.peer.fd)
	if err != nil {
		src.Close()
		c.abort(err)
		return
	}
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		src.Close()
		dst.Close()
		return
	}
	// end() closes these to stop the copy when the connection fails meanwhile.
	c.userspace = append(c.userspace, src, dst)
	c.mu.Unlock()

	n, err := io.Copy(dst, src)
	s.copied.Store(n)
	if err == nil {
		err = c.accountFor(s, uint64(n))
	}
	if err == nil {
		err = endOfStream(dst, src)
	}
	if err != nil {
		c.abortUnlessOver(err)
		return
	}
	c.mu.Lock()
	s.peer.shut = true
	both := c.a.shut && c.b.shut
	c.mu.Unlock()
	if both {
		c.finish()
	}
}

// awaitDelivered waits until every byte redirected from s has entered its peer's send stream.
// Nothing signals that moment, so it polls, backing off. It reports false when the
// connection ended meanwhile (or failed here, and was aborted).
//
// A peer that has sent everything it was given (empty send queue) and still gets nothing of
// what it is owed for deliveryStall will not get it (seen rarely under load before the two
// kernel faults accountFor names were avoided: the verdict counted bytes that never reached
// the peer).
// Waiting for ever would hang both clients, and going on would pass a FIN, or userspace bytes,
// ahead of bytes still missing; the connection is reset instead, so both ends learn it failed.
// A slow reader does not trip this: its peer's send queue is not empty.
func (c *promotedConn) awaitDelivered(s *promotedSocket) bool {
	wait := 100 * time.Microsecond
	var last uint64
	progressed := time.Now()
	for {
		c.mu.Lock()
		if c.over() {
			c.mu.Unlock()
			return false
		}
		done, queued, err := delivered(s)
		redirected := c.k.redirected(s)
		c.mu.Unlock()
		if err != nil {
			c.abort(err)
			return false
		}
		if done >= redirected {
			return true
		}
		if done != last || queued > 0 {
			last, progressed = done, time.Now()
		} else if time.Since(progressed) > deliveryStall {
			c.k.log.Warn("kernel data path: redirected bytes stopped reaching the peer; resetting the connection",
				"redirected", redirected, "delivered", done, "stalled_for", time.Since(progressed).Round(time.Millisecond))
			c.abort(fmt.Errorf("kernel data path: %d of %d redirected bytes never reached the peer", redirected-done, redirected))
			return false
		}
		time.Sleep(wait)
		wait = min(wait*2, 20*time.Millisecond)
	}
}

// deliveryStall is how long a peer with an empty send queue may go without the bytes it is
// owed: the kernel moves them within a few timer ticks when it moves them at all.
const deliveryStall = 5 * time.Second

// fileConn returns a Go connection on its own duplicate of fd.
func fileConn(fd int) (*net.TCPConn, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup socket: %w", err)
	}
	f := os.NewFile(uintptr(dup), "promoted socket")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("socket back to userspace: %w", err)
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("socket back to userspace: %T is not TCP", c)
	}
	return tc, nil
}

// held is the backlog of s now, for the metrics (a demoted direction's until it has drained).
func (c *promotedConn) held(s *promotedSocket) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return 0
	}
	done, _, err := delivered(s)
	if err != nil {
		return 0
	}
	return max(c.k.redirected(s), done) - done
}
