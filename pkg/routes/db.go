package routes

import (
	"slices"
	"strings"
	"time"
)

// DB holds the newest LSA per origin. Not safe for concurrent use (the caller
// owns locking).
type DB struct {
	self string
	lsas map[string]LSA
	// unreachable holds, per stored origin that self cannot reach, the first Expire that
	// found it so.
	unreachable map[string]time.Time
}

// NewDB returns an empty database for the site named self.
func NewDB(self string) *DB {
	return &DB{self: self, lsas: make(map[string]LSA), unreachable: make(map[string]time.Time)}
}

// Self returns the name of the site this database computes routes for.
func (db *DB) Self() string { return db.self }

// Update stores a copy of l if it is newer than the stored LSA for l.Origin
// (or none is stored), and reports whether it did. An LSA without an origin
// is dropped: it could never be replaced or routed to.
func (db *DB) Update(l LSA) bool {
	if l.Origin == "" {
		return false
	}
	if old, ok := db.lsas[l.Origin]; ok && l.Seq <= old.Seq {
		return false
	}
	db.lsas[l.Origin] = l.Clone()
	return true
}

// Get returns a copy of the stored LSA for origin.
func (db *DB) Get(origin string) (LSA, bool) {
	l, ok := db.lsas[origin]
	if !ok {
		return LSA{}, false
	}
	return l.Clone(), true
}

// All returns copies of every stored LSA, sorted by origin.
func (db *DB) All() []LSA {
	out := make([]LSA, 0, len(db.lsas))
	for _, l := range db.lsas {
		out = append(out, l.Clone())
	}
	slices.SortFunc(out, func(a, b LSA) int { return strings.Compare(a.Origin, b.Origin) })
	return out
}

// Expire removes the LSA of every origin that self has not reached for at least after, as
// seen by the calls to Expire (now is the caller's clock), and returns those origins, sorted.
// An unreachable origin's LSA gives no route (an edge needs both ends, and no live site lists
// a departed one), so removing it changes no route; it only stops a departed site from being
// kept, and handed to every new neighbor, for ever. A site that comes back floods a new LSA
// as its link comes up.
func (db *DB) Expire(now time.Time, after time.Duration) []string {
	g := newGraph(db.lsas)
	reached := map[string]bool{}
	if self, ok := g.index[db.self]; ok {
		for _, n := range g.component(self) {
			reached[g.names[n]] = true
		}
	}
	var gone []string
	for origin := range db.lsas {
		if reached[origin] || origin == db.self {
			delete(db.unreachable, origin)
			continue
		}
		since, ok := db.unreachable[origin]
		if !ok {
			db.unreachable[origin] = now
			continue
		}
		if now.Sub(since) >= after {
			delete(db.lsas, origin)
			delete(db.unreachable, origin)
			gone = append(gone, origin)
		}
	}
	slices.Sort(gone)
	return gone
}
