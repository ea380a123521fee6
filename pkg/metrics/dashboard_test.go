package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

type dashboard struct {
	UID        *string `json:"uid"`
	Templating struct {
		List []struct {
			Name, Type string
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		Expr       string          `json:"expr"`
		Datasource json.RawMessage `json:"datasource"`
	} `json:"targets"`
}

var (
	metricName = regexp.MustCompile(`skfwd_[a-z_]+`)
	rangeSel   = regexp.MustCompile(`\[([^\]]*)\]`)
)

// defined reports whether name (a series name, maybe a histogram's _bucket, _sum or _count)
// is a defined metric.
func defined(name string) bool {
	for _, d := range Definitions {
		if name == d.Name || (d.Kind == Histogram && strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count") == d.Name) {
			return true
		}
	}
	return false
}

// TestDashboardStatic checks the shipped dashboard without a Prometheus: the datasource is a
// variable everywhere, no uid is hard-coded, rates use $__rate_interval, and every metric it
// names exists. test/netns evaluates the same expressions against a live network.
func TestDashboardStatic(t *testing.T) {
	b, err := os.ReadFile("../../dashboards/skfwd.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID != nil {
		t.Errorf("dashboard has a hard-coded uid %q", *d.UID)
	}
	hasDS := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" {
			hasDS = true
		}
	}
	if !hasDS {
		t.Error("no datasource variable")
	}
	const ds = `{"type":"prometheus","uid":"${datasource}"}`
	exprs := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if compact(p.Datasource) != ds {
			t.Errorf("panel %q: datasource %s, want %s", p.Title, p.Datasource, ds)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			if compact(tg.Datasource) != ds {
				t.Errorf("panel %q: target datasource %s, want %s", p.Title, tg.Datasource, ds)
			}
			for _, m := range rangeSel.FindAllStringSubmatch(tg.Expr, -1) {
				if m[1] != "$__rate_interval" {
					t.Errorf("panel %q: range [%s], want [$__rate_interval]: %s", p.Title, m[1], tg.Expr)
				}
			}
			names := metricName.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: no skfwd metric in %s", p.Title, tg.Expr)
			}
			for _, n := range names {
				if !defined(n) {
					t.Errorf("panel %q: %s is not a defined metric", p.Title, n)
				}
			}
		}
	}
	if exprs < 30 {
		t.Errorf("only %d queries in the dashboard", exprs)
	}
}

func compact(raw json.RawMessage) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// TestAlertsNameDefinedMetrics: every metric the alerting rules use exists.
func TestAlertsNameDefinedMetrics(t *testing.T) {
	b, err := os.ReadFile("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		expr, ok := strings.CutPrefix(strings.TrimSpace(line), "expr:")
		if !ok {
			continue
		}
		n++
		for _, name := range metricName.FindAllString(expr, -1) {
			if !defined(name) {
				t.Errorf("alert expression %q: %s is not a defined metric", expr, name)
			}
		}
	}
	if n != 3 {
		t.Errorf("%d alert expressions, want 3 (link down, connector down, no candidate)", n)
	}
}
