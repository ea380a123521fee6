package links

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/skfwd/skfwd/pkg/tunnel"
)

// Moves: a stream that proves to be bulk leaves its link connection for a tunnel of its own
// from the link's pool (shared/design.md, section 5). The end that moves first takes an idle
// tunnel and writes an attach naming the stream; the other end's pool accepted that tunnel
// (it waits for a first frame there) and pairs it with the stream by the token. Attach and
// move frame travel on different connections, so whichever arrives first waits for the other.

// moveWait bounds how long either half of a move waits for the other: the attach and the
// move frame are sent together, so only a failing link separates them by more than an RTT.
const moveWait = 5 * time.Second

// TakeTunnel takes an idle tunnel of the stream's link and attaches it under a new token (in
// Tunnel.Token, for the stream's move frame), without waiting: with none idle it returns
// ErrNoTunnel (the stream stays where it is, and the pool grows for the next move). Tokens
// are random: stream numbers repeat across a link's connections, and a collision of two
// random 64-bit tokens among a link's moves in flight is not a practical concern.
func (st *Stream) TakeTunnel() (*Tunnel, error) {
	s := st.s
	c := s.popIdle()
	if c == nil {
		s.miss()
		return nil, fmt.Errorf("link %q to %q: %w", s.name, s.peer, ErrNoTunnel)
	}
	t, err := s.track(c)
	if err != nil {
		return nil, err
	}
	t.Token = rand.Uint64()
	// Fourteen bytes on an idle connection: the socket buffer takes them at once.
	if _, err := c.Write(tunnel.Attach{Token: t.Token}.Append(nil)); err != nil {
		abort(c)
		t.Done()
		return nil, fmt.Errorf("link %q: attach tunnel: %w", s.name, err)
	}
	return t, nil
}

// AwaitTunnel returns the tunnel the peer attached under token (its move frame's), waiting
// for it if the attach has not arrived yet.
func (st *Stream) AwaitTunnel(token uint64) (*Tunnel, error) {
	s := st.s
	slot, err := s.attachSlot(token)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(moveWait)
	defer timer.Stop()
	select {
	case t := <-slot:
		s.dropSlot(token, slot)
		return t, nil
	case <-timer.C:
		s.dropSlot(token, slot)
		return nil, fmt.Errorf("link %q to %q: no tunnel attached with token %#x within %v: %w", s.name, s.peer, token, moveWait, ErrNoTunnel)
	case <-s.ctx.Done():
		return nil, fmt.Errorf("link %q to %q: %w", s.name, s.peer, ErrNoLink)
	}
}

// Attach pairs a tunnel the peer attached with token to its stream. A tunnel nobody claims in
// time (its stream failed meanwhile) is closed; so is a second one with the same token.
func (t *Tunnel) Attach(token uint64) {
	s := t.s
	slot, err := s.attachSlot(token)
	if err != nil {
		abort(t.Conn)
		t.Done()
		return
	}
	select {
	case slot <- t:
	default:
		abort(t.Conn)
		t.Done()
		return
	}
	time.AfterFunc(moveWait, func() {
		select {
		case left := <-slot:
			s.dropSlot(token, slot)
			abort(left.Conn)
			left.Done()
		default: // claimed
		}
	})
}

func (s *session) attachSlot(token uint64) (chan *Tunnel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return nil, fmt.Errorf("link %q to %q: %w", s.name, s.peer, ErrNoLink)
	}
	slot, ok := s.attached[token]
	if !ok {
		slot = make(chan *Tunnel, 1)
		s.attached[token] = slot
	}
	return slot, nil
}

func (s *session) dropSlot(token uint64, slot chan *Tunnel) {
	s.mu.Lock()
	if s.attached[token] == slot {
		delete(s.attached, token)
	}
	s.mu.Unlock()
}

// miss counts a request for a tunnel that found none idle and grows the pool: the dialing
// side dials more, the other asks it to.
func (s *session) miss() {
	s.misses.Add(1)
	s.lastMiss.Store(time.Now().UnixNano())
	s.m.opts.Observer.PoolMiss(s.name, s.peer)
	if s.dialer {
		s.mu.Lock()
		s.outTarget = s.grown(s.outTarget)
		s.mu.Unlock()
		s.kick()
		return
	}
	if b, err := encodeMsg(msgWant, wantMsg{N: 1}); err == nil {
		s.send(b)
	}
}
