package routes

import "slices"

// LSA is what one site says about itself.
type LSA struct {
	Origin string         // site name
	Seq    uint64         // higher replaces lower; equal or lower is ignored
	Links  map[string]int // peer site -> effective cost (>=1) of this site's cheapest up link to that peer
	Keys   []string       // routing keys for which the origin has at least one healthy connector (sorted, unique)
}

// Clone returns a deep copy, so the DB never shares maps or slices with a
// caller that may go on mutating its own.
func (l LSA) Clone() LSA {
	c := l
	if l.Links != nil {
		c.Links = make(map[string]int, len(l.Links))
		for peer, cost := range l.Links {
			c.Links[peer] = cost
		}
	}
	c.Keys = slices.Clone(l.Keys)
	return c
}
