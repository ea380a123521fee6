package gateway

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/skfwd/skfwd/pkg/config"
	"github.com/skfwd/skfwd/pkg/datapath"
	"github.com/skfwd/skfwd/pkg/metrics"
)

// listener accepts client connections for one routing key while any candidate exists. It
// closes its socket while none does: a client then gets "connection refused" at once instead
// of a connection that is accepted only to be closed.
type listener struct {
	g   *Gateway
	cfg config.Listener

	mu        sync.Mutex
	ln        net.Listener // nil while not accepting
	accepting bool
	lastErr   string

	admission admission // the Listener's max-connections
}

func (l *listener) setAvailable(ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.g.ctx.Err() != nil {
		return
	}
	switch {
	case ok && !l.accepting:
		if l.ln == nil {
			// Accepted connections get no TCP keepalive (four setsockopt(2) calls each); see
			// connector.dial.
			ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(l.g.ctx, "tcp", l.cfg.Address())
			if err != nil {
				// Retried by the reconcile loop; the rest of the site keeps running.
				if l.lastErr != err.Error() {
					l.g.log.Error("listener cannot reopen, will retry", "listener", l.cfg.Name, "address", l.cfg.Address(), "err", err)
				}
				l.lastErr = err.Error()
				return
			}
			l.ln = ln
		}
		l.lastErr = ""
		l.accepting = true
		ln := l.ln
		l.g.goRun(func() { l.acceptLoop(ln) })
		l.g.log.Info("listener accepting", "listener", l.cfg.Name, "routing_key", l.cfg.RoutingKey, "address", l.cfg.Address())
	case !ok && l.ln != nil:
		l.ln.Close()
		l.ln = nil
		if l.accepting {
			l.g.log.Warn("listener refusing: no candidate for routing key", "listener", l.cfg.Name, "routing_key", l.cfg.RoutingKey)
		}
		l.accepting = false
	}
}

func (l *listener) isAccepting() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepting
}

func (l *listener) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		l.ln.Close()
		l.ln = nil
	}
	l.accepting = false
}

// acceptLoop accepts clients on ln until it closes. The goroutine that accepts a client serves
// it, and the loop goes on in a worker: a new connection's first bytes wait for no hand-off
// between goroutines (the waking of one that is parked is most of a gateway's added latency
// at low load), the next accept does.
func (l *listener) acceptLoop(ln net.Listener) {
	var pause time.Duration
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return // closed: no candidate, or stopping
		}
		if err != nil {
			// Out of descriptors or memory for a moment (EMFILE, ENFILE, ENOBUFS): the
			// listener stays, and tries again shortly, as net/http's server does.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			l.g.rateLog.Warn("accept", "listener cannot accept, retrying", "listener", l.cfg.Name, "err", err, "retry_in", pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		client := c.(*net.TCPConn)
		if reason := l.admit(); reason != "" {
			datapath.Abort(client) // a reset at once: the client must not wait on a connection nobody serves
			l.g.metrics.AdmissionRefused(l.cfg.Name, reason)
			l.g.rateLog.Warn(reason, "client connection refused at a connection limit", "listener", l.cfg.Name, "reason", reason,
				"listener_limit", l.admission.limit, "site_limit", l.g.admission.limit)
			continue
		}
		if !l.g.trackActive(client, l) {
			l.leave()
			client.Close()
			return
		}
		l.g.goServe(func() { l.acceptLoop(ln) })
		defer l.leave()
		defer l.g.untrackActive(client)
		l.g.serveClient(l.cfg.RoutingKey, client)
		return
	}
}

// admit counts a new client connection against the listener's and the site's limits, or
// returns the limit that refuses it.
func (l *listener) admit() string {
	if !l.admission.enter() {
		return metrics.RefusedListenerLimit
	}
	if !l.g.admission.enter() {
		l.admission.leave()
		return metrics.RefusedSiteLimit
	}
	return ""
}

func (l *listener) leave() {
	l.admission.leave()
	l.g.admission.leave()
}
