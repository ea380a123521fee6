package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
)

// event is one short client connection: connect, read the backend's name, close.
type event struct {
	start, end time.Time
	backend    string // who answered; empty on failure
	err        error
}

// eventLog collects the short connections of every worker. It also knows which are still in
// flight, so a view of one second can wait until that second's connections have all ended.
type eventLog struct {
	mu      sync.Mutex
	events  []event
	pending map[*time.Time]struct{} // start times of connections in flight
}

// begin records that a connection starts now and returns its start time.
func (l *eventLog) begin() *time.Time {
	start := time.Now()
	l.mu.Lock()
	if l.pending == nil {
		l.pending = map[*time.Time]struct{}{}
	}
	l.pending[&start] = struct{}{}
	l.mu.Unlock()
	return &start
}

func (l *eventLog) end(start *time.Time, backend string, err error) {
	l.mu.Lock()
	delete(l.pending, start)
	l.events = append(l.events, event{start: *start, end: time.Now(), backend: backend, err: err})
	l.mu.Unlock()
}

// settled reports whether every connection started before t has ended.
func (l *eventLog) settled(t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for start := range l.pending {
		if start.Before(t) {
			return false
		}
	}
	return true
}

func (l *eventLog) snapshot() []event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]event(nil), l.events...)
}

// shortLoad runs workers that each open short connections, one at a time, until stopped.
type shortLoad struct {
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// startShortLoad opens rate connections a second on average, spread over workers. Arrivals are
// random (exponential gaps), as from many independent clients: now and then two overlap, and the
// second one then sees the first counted open.
func startShortLoad(site *netlab.Site, addr string, workers, rate int, timeout time.Duration, log *eventLog) *shortLoad {
	l := &shortLoad{stop: make(chan struct{})}
	mean := float64(time.Duration(workers) * time.Second / time.Duration(rate))
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			next := time.Now()
			for {
				next = next.Add(time.Duration(rand.ExpFloat64() * mean))
				select {
				case <-l.stop:
					return
				case <-time.After(time.Until(next)):
				}
				start := log.begin()
				backend, err := netlab.Hello(site, addr, timeout)
				log.end(start, backend, err)
			}
		}()
	}
	return l
}

// halt stops the workers and waits for the connections in flight; safe to call twice.
func (l *shortLoad) halt() {
	if l == nil {
		return
	}
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// heldConn is one long-lived client connection. A reader goroutine owns its reads, so the
// moment the connection ends (a reset from a dead backend, say) is recorded when it happens.
type heldConn struct {
	n      int
	conn   *net.TCPConn
	target string // the backend that answered

	echoes   chan string
	done     chan struct{} // closed when reading has ended; err and endedAt are set by then
	err      error
	endedAt  time.Time
	reported bool // the live view has told of its end
}

func openHeld(site *netlab.Site, addr string, n int, timeout time.Duration) (*heldConn, error) {
	c, name, err := netlab.Hold(site, addr, timeout)
	if err != nil {
		return nil, err
	}
	h := &heldConn{n: n, conn: c, target: name, echoes: make(chan string, 1), done: make(chan struct{})}
	go h.watch()
	return h, nil
}

func (h *heldConn) watch() {
	defer close(h.done)
	r := bufio.NewReader(h.conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			h.err, h.endedAt = err, time.Now()
			return
		}
		select {
		case h.echoes <- line:
		default:
		}
	}
}

// ended reports whether the connection has ended, and why.
func (h *heldConn) ended() (done bool, at time.Time, err error) {
	select {
	case <-h.done:
		return true, h.endedAt, h.err
	default:
		return false, time.Time{}, nil
	}
}

// echo checks the connection still carries bytes both ways: the backend echoes each line.
func (h *heldConn) echo(timeout time.Duration) error {
	msg := fmt.Sprintf("held connection %d still there?\n", h.n)
	_ = h.conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(h.conn, msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	select {
	case got := <-h.echoes:
		if got != msg {
			return fmt.Errorf("echo %q, want %q", got, msg)
		}
		return nil
	case <-h.done:
		return fmt.Errorf("ended: %w", h.err)
	case <-time.After(timeout):
		return fmt.Errorf("no echo within %v", timeout)
	}
}

func (h *heldConn) close() {
	h.conn.Close()
	<-h.done
}

// endedByPeer reports whether the other end reset or closed the connection.
func endedByPeer(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)
}

// howEnded names the way a connection ended in words a reader of the summary knows.
func howEnded(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, io.EOF):
		return "closed (end of stream)"
	default:
		return err.Error()
	}
}
