package datapath

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skfwd/skfwd/pkg/mux"
)

// Moving a connection off its stream (shared/design.md, section 5): a connection that proves
// to be bulk leaves the link connection, where every byte is framed and copied through
// userspace, for a tunnel of its own, where the sockets can be spliced or joined in the
// kernel. The end that opened the stream decides: it takes a tunnel, stops reading its socket
// at a byte boundary, sends its move and continues on the tunnel. The other end, told by the
// move frame, does the same with its own direction. Each end reads the stream up to the
// peer's move and the tunnel after it, so no byte is lost or reordered; a direction that had
// already ended stays ended.

// Mover lets JoinStream move the connection onto a tunnel.
type Mover struct {
	// After is, at the end that starts moves, the bytes (both directions together) after
	// which the connection moves; 0 at the other end, which only follows.
	After int64
	// Take takes a tunnel of the stream's link and attaches it to the stream; an error keeps
	// the connection on the stream.
	Take func() (Tunnel, error)
	// Await returns the tunnel the peer attached with token (its move frame's).
	Await func(token uint64) (Tunnel, error)
	// Path carries the moved connection.
	Path Path
}

// Tunnel is a connection of a link's pool that a moved stream continues on.
type Tunnel struct {
	Conn  *net.TCPConn
	Token uint64          // the starting end's: its move frame names the tunnel by it
	Ctx   context.Context // ends when the link dies: the moved connection is then reset
	Done  func()          // the tunnel is finished with
}

// mover is one connection's move state.
type mover struct {
	*Mover
	conn *net.TCPConn
	st   *mux.Stream

	want   atomic.Bool  // this end's direction moves at its next byte boundary
	seen   atomic.Int64 // bytes both ways, counted by the starting end
	nextAt atomic.Int64 // when seen reaches it, try to move (again)

	mu     sync.Mutex             // orders a move against the direction ending
	ended  bool                   // conn's direction onto the stream has ended (FIN sent)
	tunnel atomic.Pointer[Tunnel] // the starting end's tunnel, once taken
}

func newMover(m *Mover, conn *net.TCPConn, st *mux.Stream) *mover {
	mv := &mover{Mover: m, conn: conn, st: st}
	mv.nextAt.Store(m.After)
	if m.After == 0 {
		st.OnMove(func(uint64) { mv.moveOwn() })
	}
	return mv
}

// count adds n bytes seen at the starting end and starts the move once they reach the
// threshold. A move that finds no tunnel is tried again after four times as many bytes.
func (mv *mover) count(n int) {
	if mv.After == 0 {
		return
	}
	total := mv.seen.Add(int64(n))
	at := mv.nextAt.Load()
	if at <= 0 || total < at || !mv.nextAt.CompareAndSwap(at, -1) {
		return
	}
	t, err := mv.Take()
	if err != nil {
		mv.nextAt.Store(total * 4)
		return
	}
	mv.mu.Lock()
	defer mv.mu.Unlock()
	mv.tunnel.Store(&t)
	if mv.ended {
		// This end's direction is over: the move frame asks the peer to move its own.
		_ = mv.st.SendMove(t.Token)
		return
	}
	mv.moveOwn() // under mu: the direction cannot end without seeing it
}

// moveOwn makes the direction conn -> stream move at its next byte boundary: a read blocked
// on conn is woken by a deadline in the past. It never blocks (the following end calls it
// on the session's reading goroutine).
func (mv *mover) moveOwn() {
	mv.want.Store(true)
	_ = mv.conn.SetReadDeadline(time.Unix(1, 0))
}

// interrupted reports whether a failed read on conn was the wake-up of moveOwn.
func (mv *mover) interrupted(err error) bool {
	return mv != nil && mv.want.Load() && errors.Is(err, os.ErrDeadlineExceeded)
}

// sendMove ends conn's direction on the stream with a move frame.
func (mv *mover) sendMove() error {
	token, ok := mv.token()
	if !ok {
		return errors.New("move without a tunnel token")
	}
	if err := mv.st.SendMove(token); err != nil {
		return err
	}
	return mux.ErrMoved
}

func (mv *mover) token() (uint64, bool) {
	if t := mv.tunnel.Load(); t != nil {
		return t.Token, true
	}
	return mv.st.MoveToken()
}

// endOfStream passes conn's end of stream on as the stream's FIN, unless a move is due: then
// the move goes first and the end of stream follows on the tunnel (a read at end of stream
// returns it again).
func (mv *mover) endOfStream() error {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	if mv.want.Load() {
		return mv.sendMove()
	}
	mv.ended = true
	return mv.st.CloseWrite()
}

// countingWriter counts the bytes the starting end writes to its socket from the stream.
type countingWriter struct {
	*net.TCPConn
	mv *mover
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.TCPConn.Write(p)
	w.mv.count(n)
	return n, err
}

// afterStream finishes a connection whose stream phase ended with res: when a direction
// moved, the moved directions continue on the tunnel; otherwise the tunnel taken, if any,
// goes back unused.
func (mv *mover) afterStream(res Result, abMoved, baMoved bool) Result {
	conn, st := mv.conn, mv.st
	taken := mv.tunnel.Load()
	if res.Err != nil || !(abMoved || baMoved) {
		if taken != nil {
			Abort(taken.Conn)
			taken.Done()
		}
		if res.Err == nil {
			conn.Close()
			st.Close()
		}
		return res
	}
	var t Tunnel
	if taken != nil {
		t = *taken
	} else {
		token, _ := st.MoveToken() // moved here only after the peer's move frame
		var err error
		if t, err = mv.Await(token); err != nil {
			st.Reset()
			Abort(conn)
			res.Err = err
			return res
		}
	}
	st.Close() // both directions ended or moved: it just goes
	_ = conn.SetReadDeadline(time.Time{})
	var moved Result
	if abMoved && baMoved {
		moved = mv.Path.Splice(t.Ctx, conn, t.Conn)
	} else {
		moved = join(t.Ctx, conn, t.Conn, abMoved, baMoved, carried{})
	}
	t.Done()
	moved.AToB += res.AToB
	moved.BToA += res.BToA
	moved.Moved = true
	return moved
}
