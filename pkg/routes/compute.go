package routes

import (
	"container/heap"
	"math"
	"slices"
)

// maxLinkCost caps a listed cost. Skupper's costs are int32; capping there
// keeps path sums far from overflowing int64 for any realistic site count.
const maxLinkCost = math.MaxInt32

// Compute returns the routes from Self() to every site it can reach over
// usable edges. See the package doc for the edge and tie-breaking rules.
func (db *DB) Compute() Table {
	g := newGraph(db.lsas)
	self, ok := g.index[db.self]
	if !ok {
		return newTable(db.self, nil, nil)
	}
	var routes []Route
	w := newWork(len(g.names))
	for _, d := range g.component(self) {
		if d == self {
			continue
		}
		routes = append(routes, g.routeTo(w, self, d))
	}
	return newTable(db.self, routes, func(dest string) []string { return db.lsas[dest].Keys })
}

type edge struct {
	to   int
	cost int64
}

// graph holds the usable edges between sites with a stored LSA. Node indices
// follow site-name order, so comparing indices compares names.
type graph struct {
	names []string
	index map[string]int
	adj   [][]edge
}

func newGraph(lsas map[string]LSA) *graph {
	g := &graph{index: make(map[string]int, len(lsas))}
	for origin := range lsas {
		g.names = append(g.names, origin)
	}
	slices.Sort(g.names)
	for i, n := range g.names {
		g.index[n] = i
	}
	g.adj = make([][]edge, len(g.names))
	for a, name := range g.names {
		for peer, costAB := range lsas[name].Links {
			b, ok := g.index[peer]
			if !ok || b == a || costAB < 1 {
				continue
			}
			// The edge needs both ends to agree the link is up. Each end
			// adds its own direction, so the graph comes out symmetric.
			costBA, ok := lsas[peer].Links[name]
			if !ok || costBA < 1 {
				continue
			}
			g.adj[a] = append(g.adj[a], edge{to: b, cost: min(int64(max(costAB, costBA)), maxLinkCost)})
		}
		slices.SortFunc(g.adj[a], func(x, y edge) int { return x.to - y.to })
	}
	return g
}

// component returns the nodes connected to from, in index order.
func (g *graph) component(from int) []int {
	seen := make([]bool, len(g.names))
	seen[from] = true
	stack := []int{from}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, e := range g.adj[n] {
			if !seen[e.to] {
				seen[e.to] = true
				stack = append(stack, e.to)
			}
		}
	}
	var out []int
	for n, ok := range seen {
		if ok {
			out = append(out, n)
		}
	}
	return out
}

// routeTo builds self's route to d by walking up the shortest-path tree
// rooted at d. self must be connected to d.
func (g *graph) routeTo(w *work, self, d int) Route {
	g.treeTowards(w, d, self)
	dist, parent := w.dist, w.parent
	path := []string{g.names[self]}
	for n := self; n != d; {
		n = parent[n]
		path = append(path, g.names[n])
	}
	cost := dist[self]
	if cost > math.MaxInt {
		cost = math.MaxInt // only reachable where int is 32 bits
	}
	return Route{Dest: g.names[d], NextHop: path[1], Cost: int(cost), Path: path}
}

// treeTowards runs Dijkstra from root until stop is settled, leaving in w
// the distances and parents (next hop toward root). A node's parent is the
// smallest-index neighbour on a shortest path: all such neighbours are
// strictly closer to root (costs are >= 1), so they are settled, and have
// relaxed the node, before it is settled itself. Hence stopping early at
// stop leaves stop and every node on its path with final parents, the same
// ones a full run would give, whichever site does the computing.
func (g *graph) treeTowards(w *work, root, stop int) {
	dist, parent, settled := w.dist, w.parent, w.settled
	for i := range dist {
		dist[i] = -1
		parent[i] = -1
		settled[i] = false
	}
	dist[root] = 0
	q := &w.q
	*q = append((*q)[:0], item{node: root})
	for q.Len() > 0 {
		it := heap.Pop(q).(item)
		u := it.node
		if settled[u] || it.dist != dist[u] {
			continue // stale entry
		}
		settled[u] = true
		if u == stop {
			break
		}
		for _, e := range g.adj[u] {
			v := e.to
			if settled[v] {
				continue
			}
			nd := dist[u] + e.cost
			switch {
			case dist[v] < 0 || nd < dist[v]:
				dist[v], parent[v] = nd, u
				heap.Push(q, item{dist: nd, node: v})
			case nd == dist[v] && u < parent[v]:
				parent[v] = u
			}
		}
	}
}

// work is treeTowards' scratch space, reused across destinations so that one
// Compute allocates it once rather than once per site.
type work struct {
	dist    []int64
	parent  []int
	settled []bool
	q       queue
}

func newWork(n int) *work {
	return &work{dist: make([]int64, n), parent: make([]int, n), settled: make([]bool, n)}
}

type item struct {
	dist int64
	node int
}

// queue is a min-heap by distance, then node index (site name), so nodes at
// equal distance are settled in name order.
type queue []item

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].dist != q[j].dist {
		return q[i].dist < q[j].dist
	}
	return q[i].node < q[j].node
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(item)) }
func (q *queue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}
