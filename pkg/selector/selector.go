// Package selector chooses where a new client connection for a routing key goes: a local connector or a remote
// site, by least cost (path cost plus connections already held open). It is pure: candidates and their counts come
// in, an ordering comes out. It owns no sockets, clocks or state; the caller gathers candidates from routes and
// connector health and reads open counts through OpenCounts.
package selector

import (
	"cmp"
	"slices"
)

// Candidate is one place a new connection for a routing key can go.
type Candidate struct {
	Target   string // connector name when Local, else the remote site name
	Local    bool
	PathCost int // sum of link costs to the remote site; 0 for local
	Open     int // connections this site holds open for this key to this target
}

// Score is the cost of sending one more connection to c. Counting open connections in the score is what spreads load:
// a remote at path cost c starts taking connections once every cheaper target holds c more than it does.
func (c Candidate) Score() int { return c.PathCost + c.Open }

// OpenCounts is the seam through which the selector's caller reads open-connection counts; the in-process table now,
// BPF maps later.
type OpenCounts interface {
	Open(routingKey, target string) int
}

// Rank orders candidates best first without modifying the input. turn rotates ties among local candidates with equal
// score (the caller passes an increasing counter), so idle backends take turns.
//
// Ordering: lowest score first. Ties: local before remote (local workloads cost nothing to reach); among remotes the
// lower path cost, then the site name, so every site breaks ties the same way; among locals with equal score the
// group is sorted by name and then rotated left by turn % len(group).
func Rank(cands []Candidate, turn uint64) []Candidate {
	out := slices.Clone(cands)
	if out == nil {
		out = []Candidate{}
	}
	slices.SortStableFunc(out, compare)
	for i := 0; i < len(out); {
		j := i + 1
		if out[i].Local {
			for j < len(out) && out[j].Local && out[j].Score() == out[i].Score() {
				j++
			}
			rotate(out[i:j], turn)
		}
		i = j
	}
	return out
}

func compare(a, b Candidate) int {
	if c := cmp.Compare(a.Score(), b.Score()); c != 0 {
		return c
	}
	if a.Local != b.Local {
		if a.Local {
			return -1
		}
		return 1
	}
	if !a.Local {
		if c := cmp.Compare(a.PathCost, b.PathCost); c != 0 {
			return c
		}
	}
	return cmp.Compare(a.Target, b.Target)
}

// rotate moves the first turn % len(g) elements of g to its end.
func rotate(g []Candidate, turn uint64) {
	if len(g) < 2 {
		return
	}
	k := int(turn % uint64(len(g)))
	if k == 0 {
		return
	}
	slices.Reverse(g[:k])
	slices.Reverse(g[k:])
	slices.Reverse(g)
}
