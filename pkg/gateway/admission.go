package gateway

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Admission control: the site holds at most max-connections client connections at once (as
// the ingress that accepted them and as the destination that delivers them), and a listener
// at most its own max-connections. Past a limit a new connection is refused at once (reset at
// the ingress, refused over-limit at a destination, which the ingress then tries elsewhere),
// counted and logged at most once a second: never accepted only to hang. The default limit
// leaves descriptors for links, tunnels and control; an idle client then costs a socket at
// each end and nothing else (no buffer, no tunnel).

// fdReserve is the descriptors the default limit keeps for links, tunnel pools, listeners,
// health probes and the admin server.
const fdReserve = 1024

// admission counts the client connections held against a limit.
type admission struct {
	limit int64 // 0: none
	open  atomic.Int64
}

// enter counts one more connection, or reports false (counting nothing) at the limit.
func (a *admission) enter() bool {
	if a.limit == 0 {
		a.open.Add(1)
		return true
	}
	if a.open.Add(1) > a.limit {
		a.open.Add(-1)
		return false
	}
	return true
}

func (a *admission) leave() { a.open.Add(-1) }

// siteLimit is the max-connections setting, or, at 0, what the descriptor limit allows: a
// client connection takes at most two descriptors here (client and backend sockets).
func siteLimit(setting int) (limit int64, fds uint64) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil {
		fds = rl.Cur
	}
	if setting > 0 {
		return int64(setting), fds
	}
	if fds == 0 || fds == unix.RLIM_INFINITY {
		return 0, fds
	}
	return max(64, (int64(fds)-fdReserve)/2), fds
}

// RaiseFileLimit raises this process's descriptor limit to its hard limit and returns both
// values, for the start-up log.
func RaiseFileLimit() (before, after uint64, err error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, err
	}
	before = rl.Cur
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			return before, before, err
		}
	}
	return before, rl.Cur, nil
}
