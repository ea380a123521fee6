package gateway

import (
	"net"
	"sync"

	"github.com/skfwd/skfwd/pkg/config"
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

func (l *listener) acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed: no candidate, or stopping
		}
		client := c.(*net.TCPConn)
		if !l.g.trackActive(client) {
			client.Close()
			return
		}
		l.g.goRun(func() {
			defer l.g.untrackActive(client)
			l.g.serveClient(l.cfg.RoutingKey, client)
		})
	}
}
