package routes

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// lsa builds an LSA with Seq 1.
func lsa(origin string, links map[string]int, keys ...string) LSA {
	return LSA{Origin: origin, Seq: 1, Links: links, Keys: keys}
}

// symmetric builds one LSA per site from edges written "a-b:cost", both ends
// listing the same cost. Sites with no edge can be named alone ("x").
func symmetric(edges ...string) []LSA {
	links := map[string]map[string]int{}
	add := func(n string) {
		if links[n] == nil {
			links[n] = map[string]int{}
		}
	}
	for _, e := range edges {
		var a, b string
		var cost int
		if !strings.Contains(e, "-") {
			add(e)
			continue
		}
		pair, c, _ := strings.Cut(e, ":")
		a, b, _ = strings.Cut(pair, "-")
		if _, err := fmt.Sscan(c, &cost); err != nil {
			panic(err)
		}
		add(a)
		add(b)
		links[a][b] = cost
		links[b][a] = cost
	}
	var out []LSA
	for n, l := range links {
		out = append(out, lsa(n, l))
	}
	return out
}

func dbOf(self string, lsas []LSA) *DB {
	db := NewDB(self)
	for _, l := range lsas {
		db.Update(l)
	}
	return db
}

func route(cost int, path ...string) Route {
	return Route{Dest: path[len(path)-1], NextHop: path[1], Cost: cost, Path: path}
}

func TestCompute(t *testing.T) {
	tests := []struct {
		name string
		self string
		lsas []LSA
		want []Route
	}{
		{
			name: "line sums costs and forwards to the first hop",
			self: "a",
			lsas: symmetric("a-b:2", "b-c:3"),
			want: []Route{route(2, "a", "b"), route(5, "a", "b", "c")},
		},
		{
			name: "line from the middle",
			self: "b",
			lsas: symmetric("a-b:2", "b-c:3"),
			want: []Route{route(2, "b", "a"), route(3, "b", "c")},
		},
		{
			name: "diamond tie goes through the smaller name",
			self: "a",
			lsas: symmetric("a-b:1", "a-c:1", "b-d:1", "c-d:1"),
			want: []Route{route(1, "a", "b"), route(1, "a", "c"), route(2, "a", "b", "d")},
		},
		{
			name: "diamond tie seen from the other end",
			self: "d",
			lsas: symmetric("a-b:1", "a-c:1", "b-d:1", "c-d:1"),
			want: []Route{route(2, "d", "b", "a"), route(1, "d", "b"), route(1, "d", "c")},
		},
		{
			// Direct a-d costs 2, as does a-b-d: the parent of a toward d is
			// the smaller of b and d, whatever the hop count.
			name: "equal cost with fewer hops still breaks by name",
			self: "a",
			lsas: symmetric("a-d:2", "a-b:1", "b-d:1"),
			want: []Route{route(1, "a", "b"), route(2, "a", "b", "d")},
		},
		{
			// Two equal paths s-a-y-d and s-b-x-d. The tree rooted at d
			// gives s the parent a (a < b). A source-rooted rule that picks
			// d's smaller predecessor would have chosen x, i.e. s-b-x-d.
			name: "tie broken in the tree rooted at the destination",
			self: "s",
			lsas: symmetric("s-a:1", "s-b:1", "a-y:1", "b-x:1", "x-d:1", "y-d:1"),
			want: []Route{
				route(1, "s", "a"), route(1, "s", "b"), route(3, "s", "a", "y", "d"),
				route(2, "s", "b", "x"), route(2, "s", "a", "y"),
			},
		},
		{
			name: "asymmetric costs: the higher end wins",
			self: "a",
			lsas: []LSA{lsa("a", map[string]int{"b": 1}), lsa("b", map[string]int{"a": 5})},
			want: []Route{route(5, "a", "b")},
		},
		{
			name: "asymmetric costs from the cheap end's peer",
			self: "b",
			lsas: []LSA{lsa("a", map[string]int{"b": 7}), lsa("b", map[string]int{"a": 3})},
			want: []Route{route(7, "b", "a")},
		},
		{
			name: "one-sided link is unusable",
			self: "a",
			lsas: []LSA{
				lsa("a", map[string]int{"b": 1, "c": 1}),
				lsa("b", map[string]int{"c": 1}),
				lsa("c", map[string]int{"a": 1, "b": 1}),
			},
			// a-b is listed only by a, so b is reached through c.
			want: []Route{route(2, "a", "c", "b"), route(1, "a", "c")},
		},
		{
			name: "one-sided link from the silent end",
			self: "b",
			lsas: []LSA{
				lsa("a", map[string]int{"b": 1}),
				lsa("b", map[string]int{}),
			},
			want: nil,
		},
		{
			name: "unreachable sites have no route",
			self: "a",
			lsas: append(symmetric("a-b:1", "c-d:1", "e"),
				// b lists z, but z has no LSA: no edge.
				LSA{Origin: "b", Seq: 2, Links: map[string]int{"a": 1, "z": 1}}),
			want: []Route{route(1, "a", "b")},
		},
		{
			name: "cheaper two-hop path beats an expensive direct link",
			self: "a",
			lsas: symmetric("a-b:10", "a-c:1", "c-b:1"),
			want: []Route{route(2, "a", "c", "b"), route(1, "a", "c")},
		},
		{
			name: "9999 backup link is used only as a last resort",
			self: "a",
			lsas: symmetric("a-c:9999", "a-b:1", "b-c:1", "c-d:1"),
			want: []Route{route(1, "a", "b"), route(2, "a", "b", "c"), route(3, "a", "b", "c", "d")},
		},
		{
			name: "9999 backup link carries traffic when the primary path is down",
			self: "a",
			lsas: symmetric("a-c:9999", "a-b:1", "c-d:1"),
			want: []Route{route(1, "a", "b"), route(9999, "a", "c"), route(10000, "a", "c", "d")},
		},
		{
			name: "no routes without self's own LSA",
			self: "a",
			lsas: []LSA{lsa("b", map[string]int{"a": 1})},
			want: nil,
		},
		{
			name: "self-loops and costs below 1 are ignored",
			self: "a",
			lsas: []LSA{
				lsa("a", map[string]int{"a": 1, "b": 0, "c": 1}),
				lsa("b", map[string]int{"a": 1}),
				lsa("c", map[string]int{"a": -3}),
			},
			want: nil,
		},
		{
			name: "huge costs are capped at MaxInt32 instead of overflowing",
			self: "a",
			lsas: symmetric("a-b:9223372036854775807", "b-c:9223372036854775807"),
			want: []Route{route(2147483647, "a", "b"), route(2*2147483647, "a", "b", "c")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl := dbOf(tt.self, tt.lsas).Compute()
			if tbl.Self() != tt.self {
				t.Errorf("Self() = %q, want %q", tbl.Self(), tt.self)
			}
			got := tbl.Routes()
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Routes() =\n  %v\nwant\n  %v", got, tt.want)
			}
			for _, r := range tt.want {
				got, ok := tbl.Lookup(r.Dest)
				if !ok || !reflect.DeepEqual(got, r) {
					t.Errorf("Lookup(%q) = %v, %v; want %v, true", r.Dest, got, ok, r)
				}
				if hop, ok := tbl.NextHop(r.Dest); !ok || hop != r.NextHop {
					t.Errorf("NextHop(%q) = %q, %v; want %q, true", r.Dest, hop, ok, r.NextHop)
				}
				if !tbl.Reachable(r.Dest) {
					t.Errorf("Reachable(%q) = false, want true", r.Dest)
				}
			}
			if _, ok := tbl.Lookup(tt.self); ok {
				t.Errorf("Lookup(self) found a route")
			}
			if _, ok := tbl.NextHop(tt.self); ok {
				t.Errorf("NextHop(self) found a route")
			}
			if tbl.Reachable(tt.self) {
				t.Errorf("Reachable(self) = true")
			}
		})
	}
}

func TestUnreachableLookup(t *testing.T) {
	tbl := dbOf("a", append(symmetric("a-b:1", "c-d:1"),
		LSA{Origin: "b", Seq: 2, Links: map[string]int{"a": 1, "z": 1}})).Compute()
	for _, site := range []string{"c", "d", "z", "nowhere"} {
		if r, ok := tbl.Lookup(site); ok {
			t.Errorf("Lookup(%q) = %v, want none", site, r)
		}
		if tbl.Reachable(site) {
			t.Errorf("Reachable(%q) = true", site)
		}
	}
}

func TestZeroTable(t *testing.T) {
	var tbl Table
	if tbl.Self() != "" || tbl.Routes() != nil || tbl.Advertisers("k") != nil || tbl.Reachable("a") {
		t.Fatalf("zero Table is not empty: %+v", tbl)
	}
	if _, ok := tbl.Lookup("a"); ok {
		t.Fatalf("zero Table has a route")
	}
}

func TestUpdate(t *testing.T) {
	type step struct {
		lsa  LSA
		want bool
	}
	tests := []struct {
		name    string
		steps   []step
		wantSeq uint64
		wantLen int
	}{
		{"first LSA is stored even at seq 0", []step{{LSA{Origin: "b"}, true}}, 0, 1},
		{"higher seq replaces", []step{{LSA{Origin: "b", Seq: 1}, true}, {LSA{Origin: "b", Seq: 2}, true}}, 2, 1},
		{"equal seq is ignored", []step{{LSA{Origin: "b", Seq: 5}, true}, {LSA{Origin: "b", Seq: 5, Keys: []string{"x"}}, false}}, 5, 1},
		{"lower seq is ignored", []step{{LSA{Origin: "b", Seq: 5}, true}, {LSA{Origin: "b", Seq: 4}, false}}, 5, 1},
		{"max seq then anything is ignored", []step{{LSA{Origin: "b", Seq: ^uint64(0)}, true}, {LSA{Origin: "b", Seq: 1}, false}}, ^uint64(0), 1},
		{"empty origin is dropped", []step{{LSA{Seq: 9}, false}}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := NewDB("a")
			for i, s := range tt.steps {
				if got := db.Update(s.lsa); got != s.want {
					t.Fatalf("step %d: Update(%+v) = %v, want %v", i, s.lsa, got, s.want)
				}
			}
			if n := len(db.All()); n != tt.wantLen {
				t.Fatalf("len(All()) = %d, want %d", n, tt.wantLen)
			}
			if tt.wantLen == 0 {
				return
			}
			got, ok := db.Get("b")
			if !ok || got.Seq != tt.wantSeq || got.Keys != nil {
				t.Fatalf("Get(b) = %+v, %v; want Seq %d, no keys", got, ok, tt.wantSeq)
			}
		})
	}
}

func TestUpdateReroutes(t *testing.T) {
	db := dbOf("a", symmetric("a-b:1", "b-c:1", "a-c:5"))
	if r, _ := db.Compute().Lookup("c"); !reflect.DeepEqual(r, route(2, "a", "b", "c")) {
		t.Fatalf("before: %v", r)
	}
	// b drops its link to c; c still lists b, but one end is enough.
	if !db.Update(LSA{Origin: "b", Seq: 2, Links: map[string]int{"a": 1}}) {
		t.Fatal("newer LSA not stored")
	}
	if r, _ := db.Compute().Lookup("c"); !reflect.DeepEqual(r, route(5, "a", "c")) {
		t.Fatalf("after: %v", r)
	}
	// A stale LSA restoring the link must not bring it back.
	if db.Update(LSA{Origin: "b", Seq: 1, Links: map[string]int{"a": 1, "c": 1}}) {
		t.Fatal("stale LSA stored")
	}
	if r, _ := db.Compute().Lookup("c"); !reflect.DeepEqual(r, route(5, "a", "c")) {
		t.Fatalf("after stale: %v", r)
	}
}

func TestDBCopies(t *testing.T) {
	in := LSA{Origin: "b", Seq: 1, Links: map[string]int{"a": 1}, Keys: []string{"k"}}
	db := NewDB("a")
	if db.Self() != "a" {
		t.Fatalf("Self() = %q", db.Self())
	}
	db.Update(in)
	db.Update(LSA{Origin: "a", Seq: 1, Links: map[string]int{"b": 1}})
	in.Links["a"] = 99
	in.Keys[0] = "changed"

	got, _ := db.Get("b")
	got.Links["a"] = 42
	got.Keys[0] = "changed"
	all := db.All()
	all[1].Links["a"] = 43

	want := LSA{Origin: "b", Seq: 1, Links: map[string]int{"a": 1}, Keys: []string{"k"}}
	if got, _ := db.Get("b"); !reflect.DeepEqual(got, want) {
		t.Fatalf("stored LSA changed through a caller's copy: %+v", got)
	}
	if origins := []string{all[0].Origin, all[1].Origin}; !slices.Equal(origins, []string{"a", "b"}) {
		t.Fatalf("All() order = %v", origins)
	}

	tbl := db.Compute()
	r, _ := tbl.Lookup("b")
	r.Path[0] = "x"
	tbl.Routes()[0].Path[0] = "y"
	tbl.Advertisers("k")[0].Path[0] = "z"
	if r, _ := tbl.Lookup("b"); !reflect.DeepEqual(r, route(1, "a", "b")) {
		t.Fatalf("table changed through a caller's copy: %v", r)
	}
}

func TestClone(t *testing.T) {
	if c := (LSA{Origin: "a"}).Clone(); c.Links != nil || c.Keys != nil {
		t.Fatalf("Clone of nil fields = %+v", c)
	}
	l := LSA{Origin: "a", Seq: 3, Links: map[string]int{"b": 2}, Keys: []string{"k"}}
	c := l.Clone()
	c.Links["b"] = 9
	c.Keys[0] = "x"
	if l.Links["b"] != 2 || l.Keys[0] != "k" {
		t.Fatalf("Clone shares storage: %+v", l)
	}
}

func TestAdvertisers(t *testing.T) {
	// a is self; b (cost 1), c (cost 3), d (cost 3), e (cost 9999 backup)
	// are reachable; f is linked to nobody; g lists a but a does not list g.
	lsas := []LSA{
		lsa("a", map[string]int{"b": 1, "c": 3, "d": 3, "e": 9999}, "web", "db"),
		lsa("b", map[string]int{"a": 1}, "web"),
		lsa("c", map[string]int{"a": 3}, "db", "web"),
		lsa("d", map[string]int{"a": 3}, "web", "web"), // duplicate key from a sloppy peer
		lsa("e", map[string]int{"a": 9999}, "web", "db"),
		lsa("f", nil, "web", "db"),
		lsa("g", map[string]int{"a": 1}, "web"),
	}
	tbl := dbOf("a", lsas).Compute()
	tests := []struct {
		key  string
		want []Route
	}{
		{"web", []Route{route(1, "a", "b"), route(3, "a", "c"), route(3, "a", "d"), route(9999, "a", "e")}},
		{"db", []Route{route(3, "a", "c"), route(9999, "a", "e")}},
		{"none", nil},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if got := tbl.Advertisers(tt.key); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Advertisers(%q) =\n  %v\nwant\n  %v", tt.key, got, tt.want)
			}
			i := 0
			for dest, cost := range tbl.AdvertiserCosts(tt.key) {
				if i >= len(tt.want) || dest != tt.want[i].Dest || cost != tt.want[i].Cost {
					t.Errorf("AdvertiserCosts(%q) yields %s at cost %d in place %d, want the order of %v", tt.key, dest, cost, i, tt.want)
				}
				i++
			}
			if i != len(tt.want) {
				t.Errorf("AdvertiserCosts(%q) yields %d routes, want %d", tt.key, i, len(tt.want))
			}
		})
	}

	// When the primary's link goes, only the backup is left.
	db := dbOf("a", lsas)
	db.Update(LSA{Origin: "b", Seq: 2, Keys: []string{"web"}})
	db.Update(LSA{Origin: "c", Seq: 2, Links: map[string]int{"a": 3}, Keys: []string{"db"}})
	db.Update(LSA{Origin: "d", Seq: 2, Links: map[string]int{"a": 3}})
	want := []Route{route(9999, "a", "e")}
	if got := db.Compute().Advertisers("web"); !reflect.DeepEqual(got, want) {
		t.Fatalf("after failover Advertisers(web) = %v, want %v", got, want)
	}
}

// TestAgreement checks every route of every site against an independent
// oracle (Floyd-Warshall distances) and the rule that all sites agree:
//   - a route exists exactly when the destination is connected;
//   - its cost is the least-cost distance;
//   - its next hop is the smallest-named neighbour on some least-cost path;
//   - its path is self followed by the next hop's own path, so a transit
//     forwards along exactly the rest of the ingress's path.
func TestAgreement(t *testing.T) {
	tests := []struct {
		name string
		lsas []LSA
	}{
		{"diamond", symmetric("a-b:1", "a-c:1", "b-d:1", "c-d:1")},
		{"two diamonds in a row", symmetric("a-b:1", "a-c:1", "b-d:1", "c-d:1", "d-e:1", "d-f:1", "e-g:1", "f-g:1")},
		{"grid 3x3", grid(3, 3)},
		{"grid 4x5", grid(4, 5)},
		{"ring of 6", symmetric("a-b:1", "b-c:1", "c-d:1", "d-e:1", "e-f:1", "f-a:1")},
		{"mixed costs with a backup", symmetric("a-b:1", "b-c:2", "a-c:3", "c-d:1", "b-d:3", "a-d:9999", "d-e:2", "c-e:4")},
		{"asymmetric ends", []LSA{
			lsa("a", map[string]int{"b": 1, "c": 2}),
			lsa("b", map[string]int{"a": 2, "d": 1}),
			lsa("c", map[string]int{"a": 1, "d": 1, "e": 1}),
			lsa("d", map[string]int{"b": 1, "c": 1}),
			lsa("e", map[string]int{}),
		}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		tests = append(tests, struct {
			name string
			lsas []LSA
		}{fmt.Sprintf("random %d", i), randomNet(rng, 6+i, 2)})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkAgreement(t, tt.lsas)
		})
	}
}

func grid(rows, cols int) []LSA {
	name := func(r, c int) string { return fmt.Sprintf("n%d%d", r, c) }
	var edges []string
	for r := range rows {
		for c := range cols {
			if r+1 < rows {
				edges = append(edges, name(r, c)+"-"+name(r+1, c)+":1")
			}
			if c+1 < cols {
				edges = append(edges, name(r, c)+"-"+name(r, c+1)+":1")
			}
		}
	}
	return symmetric(edges...)
}

// randomNet makes n sites with random links, some one-sided and some with
// different costs at each end; costs are small so ties are common.
func randomNet(rng *rand.Rand, n, maxCost int) []LSA {
	lsas := make([]LSA, n)
	for i := range lsas {
		lsas[i] = lsa(fmt.Sprintf("s%02d", i), map[string]int{})
	}
	for i := range n {
		for j := i + 1; j < n; j++ {
			if rng.IntN(3) != 0 {
				continue
			}
			if rng.IntN(8) != 0 {
				lsas[i].Links[lsas[j].Origin] = 1 + rng.IntN(maxCost)
			}
			if rng.IntN(8) != 0 {
				lsas[j].Links[lsas[i].Origin] = 1 + rng.IntN(maxCost)
			}
		}
	}
	return lsas
}

func checkAgreement(t *testing.T, lsas []LSA) {
	t.Helper()
	const inf = int(^uint(0) >> 2)
	byName := map[string]LSA{}
	var names []string
	for _, l := range lsas {
		byName[l.Origin] = l
		names = append(names, l.Origin)
	}
	slices.Sort(names)
	w := func(a, b string) (int, bool) {
		ca, okA := byName[a].Links[b]
		cb, okB := byName[b].Links[a]
		if a == b || !okA || !okB || ca < 1 || cb < 1 {
			return 0, false
		}
		return max(ca, cb), true
	}
	dist := map[[2]string]int{}
	for _, a := range names {
		for _, b := range names {
			switch c, ok := w(a, b); {
			case a == b:
				dist[[2]string{a, b}] = 0
			case ok:
				dist[[2]string{a, b}] = c
			default:
				dist[[2]string{a, b}] = inf
			}
		}
	}
	for _, k := range names {
		for _, a := range names {
			for _, b := range names {
				if d := dist[[2]string{a, k}] + dist[[2]string{k, b}]; d < dist[[2]string{a, b}] {
					dist[[2]string{a, b}] = d
				}
			}
		}
	}

	tables := map[string]Table{}
	for _, s := range names {
		tables[s] = dbOf(s, lsas).Compute()
	}
	for _, s := range names {
		for _, d := range names {
			if s == d {
				continue
			}
			r, ok := tables[s].Lookup(d)
			want := dist[[2]string{s, d}]
			if want == inf {
				if ok {
					t.Errorf("%s -> %s: route %v to an unconnected site", s, d, r)
				}
				continue
			}
			if !ok {
				t.Errorf("%s -> %s: no route, want cost %d", s, d, want)
				continue
			}
			if r.Cost != want {
				t.Errorf("%s -> %s: cost %d, want %d (%v)", s, d, r.Cost, want, r.Path)
			}
			var hop string
			for _, n := range names { // names are sorted: first match is smallest
				if c, ok := w(s, n); ok && c+dist[[2]string{n, d}] == want {
					hop = n
					break
				}
			}
			if r.NextHop != hop {
				t.Errorf("%s -> %s: next hop %s, want %s", s, d, r.NextHop, hop)
			}
			wantPath := []string{s, d}
			if hop != d {
				rest, _ := tables[hop].Lookup(d)
				wantPath = append([]string{s}, rest.Path...)
			}
			if !slices.Equal(r.Path, wantPath) {
				t.Errorf("%s -> %s: path %v, want %v (the next hop's own path)", s, d, r.Path, wantPath)
			}
		}
	}
}

// BenchmarkCompute sizes the per-destination Dijkstra at the scale the
// package doc promises: a few hundred sites.
func BenchmarkCompute(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	lsas := make([]LSA, 300)
	for i := range lsas {
		lsas[i] = lsa(fmt.Sprintf("s%03d", i), map[string]int{})
	}
	for i := range lsas { // a ring for connectivity plus a few random chords per site
		for _, j := range []int{(i + 1) % len(lsas), rng.IntN(len(lsas)), rng.IntN(len(lsas))} {
			if j != i {
				c := 1 + rng.IntN(5)
				lsas[i].Links[lsas[j].Origin] = c
				lsas[j].Links[lsas[i].Origin] = c
			}
		}
	}
	db := dbOf("s000", lsas)
	for b.Loop() {
		if n := len(db.Compute().Routes()); n != len(lsas)-1 {
			b.Fatalf("%d routes", n)
		}
	}
}

// TestExpire: a site that self no longer reaches is dropped once unreachable for the whole
// expiry, not before, and without changing a route; one reached again in time is kept and its
// clock starts over.
func TestExpire(t *testing.T) {
	const after = time.Minute
	t0 := time.Unix(1000, 0)
	db := dbOf("a", symmetric("a-b:1", "b-c:1", "c-d:1"))
	if gone := db.Expire(t0, after); gone != nil {
		t.Fatalf("everything reachable: expired %v", gone)
	}
	// c leaves: b stops listing it, so c and d (reached only through c) are unreachable.
	db.Update(LSA{Origin: "b", Seq: 2, Links: map[string]int{"a": 1}})
	if gone := db.Expire(t0.Add(time.Second), after); gone != nil {
		t.Fatalf("just unreachable: expired %v", gone)
	}
	// d comes back by a link to b, before its time is up: its clock starts over.
	db.Update(LSA{Origin: "b", Seq: 3, Links: map[string]int{"a": 1, "d": 1}})
	db.Update(LSA{Origin: "d", Seq: 2, Links: map[string]int{"b": 1}})
	if gone := db.Expire(t0.Add(30*time.Second), after); gone != nil {
		t.Fatalf("d reached again: expired %v", gone)
	}
	if gone := db.Expire(t0.Add(after+time.Second-time.Nanosecond), after); gone != nil {
		t.Fatalf("a nanosecond early: expired %v", gone)
	}
	before := db.Compute().Routes()
	if gone := db.Expire(t0.Add(after+time.Second), after); !slices.Equal(gone, []string{"c"}) {
		t.Fatalf("expired %v, want [c]", gone)
	}
	if after := db.Compute().Routes(); !reflect.DeepEqual(after, before) {
		t.Errorf("routes changed by the expiry: %+v, were %+v", after, before)
	}
	if _, ok := db.Get("c"); ok {
		t.Error("c's LSA still stored after it expired")
	}
	if _, ok := db.Get("d"); !ok {
		t.Error("d's LSA expired although d is reachable")
	}
	// The self LSA is never expired, even with nothing else known.
	lone := dbOf("x", []LSA{lsa("x", nil), lsa("y", nil)})
	lone.Expire(t0, after)
	if gone := lone.Expire(t0.Add(after), after); !slices.Equal(gone, []string{"y"}) {
		t.Fatalf("lone site expired %v, want [y]", gone)
	}
	if _, ok := lone.Get("x"); !ok {
		t.Error("self's LSA expired")
	}
}
