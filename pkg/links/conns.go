package links

import (
	"context"
	"net"
	"slices"
	"time"

	"github.com/skfwd/skfwd/pkg/auth"
	"github.com/skfwd/skfwd/pkg/mux"
)

// A link keeps several link connections (Options.LinkConnections): the control connection,
// which carries link state and whose loss is the link's, and more that carry only streams.
// The dialing side dials them all, after the control connection's hello, and redials one that
// dies with capped backoff while the others carry new streams.

// maxLinkConnections bounds the connections an accepting side serves for one link.
const maxLinkConnections = 64

func (s *session) addConn(ms *mux.Session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cur []*mux.Session
	if p := s.conns.Load(); p != nil {
		cur = *p
	}
	if s.dead || len(cur) >= maxLinkConnections {
		return false
	}
	next := append(slices.Clip(cur), ms)
	s.conns.Store(&next)
	return true
}

func (s *session) removeConn(ms *mux.Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := slices.DeleteFunc(slices.Clone(*s.conns.Load()), func(c *mux.Session) bool { return c == ms })
	s.conns.Store(&next)
}

// numConns is how many link connections carry streams now.
func (s *session) numConns() int {
	if p := s.conns.Load(); p != nil {
		return len(*p)
	}
	return 0
}

// runConn carries streams on ms until it or the link ends.
func (s *session) runConn(ms *mux.Session) {
	if !s.addConn(ms) {
		ms.Close(ErrNoLink)
		return
	}
	select {
	case <-ms.Done():
	case <-s.ctx.Done():
	}
	s.removeConn(ms)
	ms.Close(context.Cause(s.ctx))
	if err := ms.Err(); err != nil && s.ctx.Err() == nil {
		s.m.log.Warn("link connection lost; its streams were reset, the link's others carry new ones",
			"link", s.name, "peer", s.peer, "err", err)
	}
}

// serveConn (accepting side) serves one more link connection the dialer opened.
func (s *session) serveConn(c *net.TCPConn) {
	ms, err := mux.New(c, s.muxOptions())
	if err != nil {
		s.m.log.Warn("link connection preface failed", "link", s.name, "peer", s.peer, "err", err)
		return
	}
	s.runConn(ms)
}

// keepConn (dialing side) keeps one more link connection up while the link is.
func (s *session) keepConn() {
	b := backoff{max: s.m.opts.MaxBackoff}
	for s.ctx.Err() == nil {
		c, _, err := s.m.dialAuthenticated(s.ctx, s.addr, s.name, s.secret, auth.Streams)
		if err == nil {
			var ms *mux.Session
			if ms, err = mux.New(c, s.muxOptions()); err == nil {
				b.reset() // it came up: a loss is redialed at once
				s.runConn(ms)
			}
		}
		if err != nil && s.ctx.Err() == nil {
			s.m.log.Debug("link connection dial failed", "link", s.name, "peer", s.peer, "err", err)
		}
		t := time.NewTimer(b.next())
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return
		}
	}
}
