package netlab

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Forward relays TCP connections from a listener in the caller's namespace (the host's) to an
// address inside a site's namespace. A site's admin address is a loopback address of its own
// namespace, which no program on the host can reach; a forward makes it reachable without
// touching the host's interfaces or routes.
type Forward struct {
	site   *Site
	target string
	ln     net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// forwardDialTimeout bounds the dial into the site: a site whose gateway is gone refuses at once,
// so only a stuck namespace takes this long.
const forwardDialTimeout = 2 * time.Second

// Forward listens on listenAddr in the calling goroutine's namespace ("127.0.0.1:0" picks a free
// port: see Addr) and relays every connection to target inside the site, until Close.
func (s *Site) Forward(listenAddr, target string) (*Forward, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("forward to %s in site %s: %w", target, s.Name, err)
	}
	f := &Forward{site: s, target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

// Addr is the address the forward listens on.
func (f *Forward) Addr() string { return f.ln.Addr().String() }

func (f *Forward) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of file descriptors, say: a scraper retries, so wait instead of giving up.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !f.track(c) {
			c.Close()
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.untrack(c)
			f.relay(c)
		}()
	}
}

// track records a connection so Close can end it; false once the forward is closed.
func (f *Forward) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forward) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

// relay copies both ways, passing each half-close on, until both directions have ended.
func (f *Forward) relay(in net.Conn) {
	out, err := f.site.Dial(f.target, forwardDialTimeout)
	if err != nil {
		return // the client sees its connection closed, as if the target refused it
	}
	if !f.track(out) {
		out.Close()
		return
	}
	defer f.untrack(out)
	var both sync.WaitGroup
	both.Add(2)
	go func() {
		defer both.Done()
		_, _ = io.Copy(out, in)
		_ = out.CloseWrite()
	}()
	go func() {
		defer both.Done()
		_, _ = io.Copy(in, out)
		if tc, ok := in.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	both.Wait()
}

// Close stops listening, ends every relayed connection and waits for the relays to finish.
func (f *Forward) Close() error {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	err := f.ln.Close()
	f.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil // closed twice
	}
	return err
}
