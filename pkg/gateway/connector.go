package gateway

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skfwd/skfwd/pkg/config"
)

// connector is a local backend for a routing key, health-probed with a TCP connect.
type connector struct {
	g       *Gateway
	cfg     config.Connector
	healthy atomic.Bool
}

// target names the connector in open-connection counts. The '@' cannot start a site name, so
// a connector and a site never share a count.
func (c *connector) target() string { return "@" + c.cfg.Name }

func (g *Gateway) probeAll() {
	var wg sync.WaitGroup
	for _, cs := range g.connectors {
		for _, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.setHealthy(c.probe() == nil, nil)
			}()
		}
	}
	wg.Wait()
}

func (c *connector) probe() error {
	timeout := min(c.g.settings.ConnectTimeout, c.g.settings.ProbeInterval)
	conn, err := c.dial(timeout)
	if err != nil {
		return err
	}
	conn.Close()
	return nil
}

func (c *connector) dial(timeout time.Duration) (*net.TCPConn, error) {
	// No TCP keepalive: its three setsockopt(2) calls were 3 % of a destination gateway's CPU
	// in the connection-rate profile, and a dead backend shows in the health probe and the
	// client's own timeouts (HAProxy leaves it off by default too).
	d := net.Dialer{KeepAlive: -1}
	conn, err := d.DialContext(deadlineOnly(time.Now().Add(timeout)), "tcp", c.cfg.Address())
	if err != nil {
		return nil, err
	}
	return conn.(*net.TCPConn), nil
}

// deadlineOnly is a context with a deadline and no cancellation: the dialer enforces the
// deadline with the socket's write deadline alone, without the timer and the cancel hook that
// a context.WithTimeout under the gateway's context cost on every connect (4 % of a
// destination gateway's CPU, a third of its allocations, in the connection-rate profile). A
// site that stops while a connect is in progress waits for it, at most the connect timeout.
type deadlineOnly time.Time

func (d deadlineOnly) Deadline() (time.Time, bool) { return time.Time(d), true }
func (deadlineOnly) Done() <-chan struct{}         { return nil }
func (deadlineOnly) Err() error                    { return nil }
func (deadlineOnly) Value(any) any                 { return nil }

func (c *connector) probeLoop() {
	t := time.NewTicker(c.g.settings.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-c.g.ctx.Done():
			return
		case <-t.C:
			c.setHealthy(c.probe() == nil, nil)
		}
	}
}

// setHealthy records a probe or a real connection's outcome; a change is logged and
// re-advertised at once.
func (c *connector) setHealthy(ok bool, cause error) {
	if c.healthy.Swap(ok) == ok {
		return
	}
	if ok {
		c.g.log.Info("connector up", "connector", c.cfg.Name, "routing_key", c.cfg.RoutingKey, "address", c.cfg.Address())
	} else {
		c.g.log.Warn("connector down", "connector", c.cfg.Name, "routing_key", c.cfg.RoutingKey, "address", c.cfg.Address(), "err", cause)
	}
	if c.g.links != nil {
		c.g.reconcile()
	}
}
