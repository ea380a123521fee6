package metrics

import (
	"slices"
	"sync"
)

// Other is the label value that stands for every routing key, site or reason outside the
// bounds: what a peer sends is counted, but never creates a series of its own.
const Other = "other"

// MaxSiteLabels caps the distinct site label values (source_site, dest_site) of event
// metrics. Sites are admitted while routing knows them, and link state comes from the wire
// too, so the cap is the backstop against a peer that floods invented sites.
const MaxSiteLabels = 256

// bounds maps label values that come from the wire onto the values the site's configuration
// and routing know, so an authenticated peer that sends requests for invented routing keys or
// sites adds to existing series instead of creating new ones.
type bounds struct {
	mu    sync.Mutex
	set   bool            // false until SetBounds: every value passes (unit tests of callers)
	keys  map[string]bool // routing keys of this site's listeners and connectors
	known func(site string) bool
	sites map[string]bool // site values admitted so far
}

// SetBounds limits routing_key to keys (the routing keys of the site's listeners and
// connectors) and site labels to sites for which known is true (this site and the sites
// routing reaches), at most MaxSiteLabels of them; everything else is counted as Other.
func (m *Metrics) SetBounds(keys []string, known func(site string) bool) {
	if m == nil {
		return
	}
	b := &m.bounds
	b.mu.Lock()
	defer b.mu.Unlock()
	b.set, b.known = true, known
	b.keys = map[string]bool{}
	for _, k := range keys {
		b.keys[k] = true
	}
	if b.sites == nil {
		b.sites = map[string]bool{}
	}
}

// key is the routing_key label for k.
func (b *bounds) key(k string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.set || b.keys[k] {
		return k
	}
	return Other
}

// site is the source_site or dest_site label for s. An empty site stays empty: one value.
func (b *bounds) site(s string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.set || s == "" || b.sites[s] {
		return s
	}
	if len(b.sites) >= MaxSiteLabels || !b.known(s) {
		return Other
	}
	b.sites[s] = true
	return s
}

// admit is the site label for s, a neighbor whose link is up: admitted before routing reaches
// it (its link state may not have arrived yet), within MaxSiteLabels.
func (b *bounds) admit(s string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.set || s == "" || b.sites[s] {
		return s
	}
	if len(b.sites) >= MaxSiteLabels {
		return Other
	}
	b.sites[s] = true
	return s
}

// reason is the reason label for r: one of Reasons, else Other (a newer peer's refusal reason
// prints as reason-N).
func reason(r string) string {
	if slices.Contains(Reasons, r) {
		return r
	}
	return Other
}
