package routes

import (
	"iter"
	"slices"
	"sort"
)

// Route is self's least-cost way to one destination site.
type Route struct {
	Dest    string
	NextHop string   // neighbor of self to forward to (== Dest for a direct neighbor)
	Cost    int      // path cost = sum of link costs
	Path    []string // self ... Dest
}

func (r Route) clone() Route {
	r.Path = slices.Clone(r.Path)
	return r
}

// Table is the routes from one site to every site it can reach. It is an
// immutable snapshot, safe to share between goroutines: every method returns
// copies, so callers may modify what they get. The zero Table has no routes.
type Table struct {
	self   string
	byDest map[string]Route
	sorted []Route            // by Dest
	byKey  map[string][]Route // routing key -> advertisers, by Cost then Dest
}

// Self returns the site the routes start from.
func (t Table) Self() string { return t.self }

// Lookup returns the route to dest. Self has no route to itself: local
// traffic needs none.
func (t Table) Lookup(dest string) (Route, bool) {
	r, ok := t.byDest[dest]
	if !ok {
		return Route{}, false
	}
	return r.clone(), true
}

// NextHop returns the neighbor the route to dest leaves by: Lookup without the copy, for the
// path of every new connection.
func (t Table) NextHop(dest string) (string, bool) {
	r, ok := t.byDest[dest]
	return r.NextHop, ok
}

// AdvertiserCosts yields the destination and cost of each route Advertisers returns, in its
// order, without copying them.
func (t Table) AdvertiserCosts(key string) iter.Seq2[string, int] {
	return func(yield func(string, int) bool) {
		for _, r := range t.byKey[key] {
			if !yield(r.Dest, r.Cost) {
				return
			}
		}
	}
}

// Routes returns every route, sorted by Dest. Self is not included.
func (t Table) Routes() []Route {
	return cloneRoutes(t.sorted)
}

// Advertisers returns the routes to the reachable sites, other than self,
// whose LSA advertises key, sorted by Cost then Dest: the order the selector
// prefers them in when their load is equal. Self is left out because its
// local connectors are the selector's business, not routing's.
func (t Table) Advertisers(key string) []Route {
	return cloneRoutes(t.byKey[key])
}

// Reachable reports whether there is a route to site. Like Lookup, it is
// false for self.
func (t Table) Reachable(site string) bool {
	_, ok := t.byDest[site]
	return ok
}

func cloneRoutes(rs []Route) []Route {
	if len(rs) == 0 {
		return nil
	}
	out := make([]Route, len(rs))
	for i, r := range rs {
		out[i] = r.clone()
	}
	return out
}

func newTable(self string, routes []Route, keysOf func(dest string) []string) Table {
	t := Table{
		self:   self,
		byDest: make(map[string]Route, len(routes)),
		sorted: routes,
		byKey:  make(map[string][]Route),
	}
	sort.Slice(t.sorted, func(i, j int) bool { return t.sorted[i].Dest < t.sorted[j].Dest })
	for _, r := range t.sorted {
		t.byDest[r.Dest] = r
		// Keys are documented as sorted and unique, but a peer's LSA is
		// not ours to trust: a duplicate must not list a site twice.
		seen := make(map[string]bool)
		for _, k := range keysOf(r.Dest) {
			if !seen[k] {
				seen[k] = true
				t.byKey[k] = append(t.byKey[k], r)
			}
		}
	}
	for _, rs := range t.byKey {
		sort.Slice(rs, func(i, j int) bool {
			if rs[i].Cost != rs[j].Cost {
				return rs[i].Cost < rs[j].Cost
			}
			return rs[i].Dest < rs[j].Dest
		})
	}
	return t
}
