package routes

import (
	"slices"
	"strings"
)

// DB holds the newest LSA per origin. Not safe for concurrent use (the caller
// owns locking).
type DB struct {
	self string
	lsas map[string]LSA
}

// NewDB returns an empty database for the site named self.
func NewDB(self string) *DB {
	return &DB{self: self, lsas: make(map[string]LSA)}
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
