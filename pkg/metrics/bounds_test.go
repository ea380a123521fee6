package metrics

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// labelValues gathers m and returns, per label name, the distinct values its series carry,
// and how many series there are in all.
func labelValues(t *testing.T, m *Metrics) (map[string]map[string]bool, int) {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	values, series := map[string]map[string]bool{}, 0
	for _, f := range families {
		for _, s := range f.GetMetric() {
			series++
			for _, l := range s.GetLabel() {
				if values[l.GetName()] == nil {
					values[l.GetName()] = map[string]bool{}
				}
				values[l.GetName()][l.GetValue()] = true
			}
		}
	}
	return values, series
}

// drive sends every event method that takes a routing key or a site from the wire n invented
// keys, sources and reasons, as an authenticated but hostile (or newer) peer could.
func drive(m *Metrics, n int) {
	for i := range n {
		key, site := fmt.Sprintf("invented-key-%d", i), fmt.Sprintf("invented-site-%d", i)
		m.Refused(key, site, ReasonNoConnector)
		m.Refused("db", site, fmt.Sprintf("reason-%d", 100+i%150))
		m.Delivered(key, site, "db")
		m.AttemptFailed(key, site, fmt.Sprintf("reason-%d", i))
		m.Retried(key, ReasonLinkLost)
		m.Committed(key, site, time.Millisecond)
		m.Closed(key, site, OutcomeOK, 1, 1)
		m.Accepted(key)
		m.Failed(key)
	}
}

// TestSeriesBoundedByConfiguration: 400 invented routing keys and sites add no series beyond
// those of the configured key, the known sites and one "other" value each.
func TestSeriesBoundedByConfiguration(t *testing.T) {
	m := New("b", "test")
	m.SetBounds([]string{"db"}, func(site string) bool { return site == "a" || site == "b" })
	m.Refused("db", "a", ReasonNoConnector) // a known peer, for contrast
	drive(m, 400)
	values, series := labelValues(t, m)
	allowed := map[string]map[string]bool{
		"routing_key": {"db": true, Other: true, "": true},
		"source_site": {"a": true, Other: true, "": true},
		"dest_site":   {Other: true},
	}
	for label, ok := range allowed {
		for v := range values[label] {
			if !ok[v] {
				t.Errorf("label %s has value %q from the wire; want only %v", label, v, ok)
			}
		}
	}
	for v := range values["reason"] {
		if v != Other && !slices.Contains(Reasons, v) && !slices.Contains(HandshakeReasons, v) {
			t.Errorf("label reason has value %q from the wire", v)
		}
	}
	// Start-up series, plus a handful per metric for db/other x a/other: far from 400.
	if series > 120 {
		t.Errorf("%d series after 400 invented keys, want a bounded number (at most 120)", series)
	}
}

// TestSiteLabelsCapped: sites that routing claims to know still stop at MaxSiteLabels, since
// link state comes from the wire too.
func TestSiteLabelsCapped(t *testing.T) {
	m := New("b", "test")
	m.SetBounds([]string{"db"}, func(string) bool { return true })
	drive(m, MaxSiteLabels+200)
	values, _ := labelValues(t, m)
	for _, label := range []string{"source_site", "dest_site"} {
		if n := len(values[label]); n > MaxSiteLabels+2 { // the admitted sites, other and ""
			t.Errorf("label %s has %d values, want at most %d", label, n, MaxSiteLabels+2)
		}
	}
	if !values["source_site"][Other] {
		t.Error("sites past the cap are not counted as other")
	}
}
