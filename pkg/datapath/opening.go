package datapath

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/skfwd/skfwd/pkg/mux"
	"golang.org/x/sys/unix"
)

// An opening connection: the client's stream has been opened toward a remote site but the far
// end has not committed yet (shared/design.md, section 6). The client's bytes flow onto the
// stream at once, so no round trip is spent before data does, and a copy of them is kept so
// that, when the far end refuses or fails before exchanging any byte, the connection can go to
// the next candidate with the same bytes. The direction that reads the client is the
// connection's own from the start: committing costs no hand-off between goroutines, only the
// rare retry does.

// errAbandoned ends the client's direction onto a stream the caller gave up.
var errAbandoned = errors.New("stream abandoned before commit")

// Opening is a client connection joined with a stream that is not committed yet.
type Opening struct {
	j *streamJoin
	k *keeper
}

// Open starts copying conn onto st, appending what it reads to *kept (up to limit bytes; past
// them conn is not read until the caller decides) until Commit or Abandon. m as in JoinStream;
// moves start only after Commit.
func Open(conn *net.TCPConn, st *mux.Stream, kept *[]byte, limit int, m *Mover) *Opening {
	k := &keeper{st: st, kept: kept, limit: limit, decided: make(chan struct{})}
	j := newStreamJoin(conn, st, m, k)
	j.d.start(j.toStream)
	return &Opening{j: j, k: k}
}

// Forwarded reports whether a client byte has gone onto the stream. WaitReadable on the
// stream wakes when it turns true.
func (o *Opening) Forwarded() bool { return o.k.sent.Load() }

// Commit binds the connection to the stream and forwards it to its end, as JoinStream.
func (o *Opening) Commit() Result {
	o.k.decide(stateCommitted)
	return o.j.finish()
}

// Abandon gives the stream up (it is reset) and stops reading the client. When it returns,
// *kept holds every byte read from the client, in order, and the client can be opened again;
// the error is the client's own failure (the client was then reset), nil otherwise.
func (o *Opening) Abandon() error {
	o.k.decide(stateAbandoned)
	o.j.st.Reset() // releases a write waiting for window
	conn := o.j.conn
	_ = conn.SetReadDeadline(time.Unix(1, 0)) // releases a blocked read
	o.j.d.wg.Wait()
	_ = conn.SetReadDeadline(time.Time{})
	return o.j.d.res.Err
}

const (
	stateKeeping int32 = iota
	stateCommitted
	stateAbandoned
)

// keeper is the client direction's side of an opening: it keeps the bytes and waits for the
// decision where the direction cannot go on without it. Its methods are safe on nil, which
// stands for a connection that was committed when joined.
type keeper struct {
	st      *mux.Stream
	kept    *[]byte
	limit   int
	state   atomic.Int32
	decided chan struct{} // closed at Commit or Abandon
	sent    atomic.Bool
}

func (k *keeper) decide(state int32) {
	if k.state.CompareAndSwap(stateKeeping, state) {
		close(k.decided)
	}
}

func (k *keeper) committed() bool { return k == nil || k.state.Load() == stateCommitted }

// room is how much of want the next read may take: all of it once committed; before, what is
// left of the limit, waiting for the decision when nothing is.
func (k *keeper) room(want int) (int, error) {
	if k == nil || k.state.Load() == stateCommitted {
		return want, nil
	}
	if left := k.limit - len(*k.kept); k.state.Load() == stateKeeping && left > 0 {
		return min(want, left), nil
	}
	<-k.decided
	if k.state.Load() == stateAbandoned {
		return 0, errAbandoned
	}
	return want, nil
}

// keep keeps p while the far end has not committed.
func (k *keeper) keep(p []byte) {
	if k.state.Load() == stateKeeping {
		*k.kept = append(*k.kept, p...)
	}
}

// forwarded notes that client bytes went onto the stream.
func (k *keeper) forwarded() {
	if k != nil && !k.sent.Load() {
		k.sent.Store(true)
		k.st.Wake()
	}
}

// streamFailed passes on a failure to write onto the stream, unless the stream was not
// committed: then the caller's decision says what it means, so wait for it.
func (k *keeper) streamFailed(err error) error {
	if err == nil || k.committed() {
		return err
	}
	<-k.decided
	if k.state.Load() == stateAbandoned {
		return errAbandoned
	}
	return err
}

// abandonedRead reports whether a failed read was Abandon's wake-up. A real failure of the
// client is passed on as such: a reset socket reports it once only.
func (k *keeper) abandonedRead(err error) bool {
	return k != nil && k.state.Load() == stateAbandoned && errors.Is(err, os.ErrDeadlineExceeded)
}

// TakeReady appends to *kept what conn has already received, up to limit bytes, without
// waiting: a client that sent its request with its connect has it carried in the stream's
// open, one frame and one write on the link fewer. A failure is the client's (a reset).
func TakeReady(conn *net.TCPConn, kept *[]byte, limit int) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	bp := streamBufs.Get().(*[]byte)
	defer streamBufs.Put(bp)
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), (*bp)[:min(streamBufSize, limit-len(*kept))])
			if !errors.Is(rerr, unix.EINTR) {
				return true // done, whether or not there was anything to read
			}
		}
	})
	switch {
	case err != nil:
		return err
	case errors.Is(rerr, unix.EAGAIN):
		return nil
	case rerr != nil:
		return rerr
	}
	*kept = append(*kept, (*bp)[:n]...) // n == 0, end of stream: read again, and passed on, later
	return nil
}
