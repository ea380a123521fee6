// Package routes owns skfwd's link-state database and least-cost route
// computation. It is pure: LSAs come in through DB.Update, a Table comes out
// of DB.Compute, and nothing here touches sockets, clocks (Expire is given the time) or
// goroutines.
//
// # Link state
//
// Every site floods an LSA naming its up links (peer and effective cost) and
// the routing keys it can serve. A DB keeps the newest LSA per origin, by
// sequence number.
//
// An edge A-B is usable only when A's LSA lists B and B's LSA lists A: a link
// that one end still believes up but the other has dropped carries nothing.
// The edge cost is the higher of the two listed costs, which is Skupper's
// rule for a link's effective cost. A listed cost below 1 breaks the LSA
// contract and is treated as not listed; a cost above math.MaxInt32 (beyond
// Skupper's int32 cost) is clamped to it so that path sums cannot overflow.
// A site without a stored LSA has no usable edges, so it is unreachable even
// when its neighbours list it; in particular self has no routes until the
// caller stores self's own LSA.
//
// # Expiry
//
// Nothing refreshes an LSA on a timer, so a departed site's last one would stay for ever.
// DB.Expire drops the LSA of an origin that self has not reached over a whole expiry time,
// measured on the clock the caller passes. That changes no route: an unreachable origin's LSA
// contributes no usable edge to self's part of the graph.
//
// # Tie-breaking: every site agrees on the same path
//
// Skfwd routes by source: the ingress picks the destination site and every
// transit site forwards along its own least-cost route to that destination.
// That only works if, whenever several paths cost the same, every site breaks
// the tie the same way, so that a transit's own route to d is exactly the rest
// of the ingress's path to d. Breaking ties from the source's point of view
// (for example, "smaller first hop") does not guarantee that.
//
// So the rule is stated per destination d: build the shortest-path tree rooted
// at d (Dijkstra from d; edges are symmetric), where a node's parent, its next
// hop toward d, is the neighbour on a shortest path with the smallest site
// name, and nodes at equal distance are settled in name order (the parent
// rule alone already fixes the tree; the settling order keeps every run the
// same step by step). Every site
// holding the same LSAs builds the same tree, and a route is the walk up that
// tree: Path = self, parent(self), ..., d; NextHop = parent(self). Because
// every cost is at least 1, each parent is strictly closer to d, so
// hop-by-hop forwarding along NextHop never loops.
//
// Compute runs Dijkstra once per reachable destination, stopping as soon as
// self is settled. That is O(V·E·log V) in the worst case, which is small for
// the few hundred sites a network has.
package routes
