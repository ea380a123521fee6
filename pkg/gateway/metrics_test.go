package gateway

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/skfwd/skfwd/pkg/config"
	"github.com/skfwd/skfwd/pkg/metrics"
	"github.com/skfwd/skfwd/pkg/statedir"
)

// TestMetricsFromStart starts two linked sites in-process, each with a listener and a
// connector for one key, and scrapes both before any client connection: every metric is
// exported except those its reference entry says are absent on a fresh userspace site, and
// the series of the configured keys, the local and remote targets and the neighbor are at 0.
func TestMetricsFromStart(t *testing.T) {
	backend := listen(t) // answers the connectors' health probes
	defer backend.Close()
	accessPort, eastDB, westDB := freePort(t), freePort(t), freePort(t)
	stateEast := t.TempDir()
	dir, err := statedir.Open(stateEast, "east")
	check(t, err)
	grant, err := dir.Issue("west-to-east", 1)
	check(t, err)
	common := func(name, state string, listenPort int) string {
		return fmt.Sprintf(`apiVersion: skupper.io/v2alpha1
kind: Site
metadata: {name: %s}
spec: {settings: {admin-address: "off", state-dir: %q}}
---
apiVersion: skupper.io/v2alpha1
kind: Listener
metadata: {name: db}
spec: {routingKey: db, host: 127.0.0.1, port: %d}
---
apiVersion: skupper.io/v2alpha1
kind: Connector
metadata: {name: db-%s}
spec: {routingKey: db, host: 127.0.0.1, port: %d}
`, name, state, listenPort, name, backend.Addr().(*net.TCPAddr).Port)
	}
	east := common("east", stateEast, eastDB) + fmt.Sprintf(`---
apiVersion: skupper.io/v2alpha1
kind: RouterAccess
metadata: {name: access}
spec: {bindHost: 127.0.0.1, roles: [{name: inter-router, port: %d}]}
`, accessPort)
	west := common("west", t.TempDir(), westDB) + fmt.Sprintf(`---
apiVersion: skupper.io/v2alpha1
kind: Link
metadata: {name: west-to-east}
spec: {cost: 1, tlsCredentials: west-to-east, endpoints: [{name: inter-router, host: 127.0.0.1, port: %d}]}
---
apiVersion: v1
kind: Secret
metadata: {name: west-to-east}
data: {%s: %s}
`, accessPort, SecretKey, base64.StdEncoding.EncodeToString(grant.Secret))

	sites := map[string]*metrics.Metrics{}
	for _, s := range []struct{ name, yaml string }{{"east", east}, {"west", west}} {
		cfg, err := config.Parse([]config.File{{Name: s.name + ".yaml", Data: []byte(s.yaml)}})
		check(t, err)
		m := metrics.New(s.name, "test")
		g, err := Start(context.Background(), cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: m})
		check(t, err)
		t.Cleanup(g.Stop)
		sites[s.name] = m
	}
	// Fresh means no client yet, not no link: RTT and pools exist only for an up link.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(scrapeAll(t, sites["west"]), `skfwd_route_cost{dest_site="east"`) ||
		!strings.Contains(scrapeAll(t, sites["east"]), `skfwd_route_cost{dest_site="west"`) {
		if time.Now().After(deadline) {
			t.Fatal("the sites did not reach each other within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	for name, m := range sites {
		peer := map[string]string{"east": "west", "west": "east"}[name]
		body := scrapeAll(t, m)
		for _, d := range metrics.Definitions {
			if absentAtStart(d) {
				continue
			}
			if !strings.Contains(body, "\n"+d.Name+"{") && !strings.Contains(body, "\n"+d.Name+" ") &&
				!strings.Contains(body, "\n"+d.Name+"_count{") {
				t.Errorf("%s: %s not exported on a fresh site", name, d.Name)
			}
		}
		s := `site="` + name + `"`
		zero := []string{
			`skfwd_connections_opened_total{dest_site="` + name + `",routing_key="db",` + s + `}`,
			`skfwd_connections_opened_total{dest_site="` + peer + `",routing_key="db",` + s + `}`,
			`skfwd_connection_attempt_failures_total{dest_site="` + name + `",reason="connect-failed",routing_key="db",` + s + `}`,
			`skfwd_connection_retries_total{reason="answer-timeout",routing_key="db",` + s + `}`,
			`skfwd_connections_delivered_total{connector="db-` + name + `",routing_key="db",` + s + `,source_site="` + peer + `"}`,
			`skfwd_connections_open{connector="db-` + name + `",dest_site="` + name + `",routing_key="db",` + s + `}`,
			`skfwd_connections_open{connector="",dest_site="` + peer + `",routing_key="db",` + s + `}`,
			`skfwd_link_heartbeat_misses_total{link="west-to-east",peer_site="` + peer + `",` + s + `}`,
			`skfwd_connections_refused_total{listener="db",reason="site-limit",` + s + `}`,
		}
		for _, series := range zero {
			if !strings.Contains(body, "\n"+series+" 0\n") {
				t.Errorf("%s: %s not exported at 0", name, series)
			}
		}
	}
}

// absentAtStart reports whether d's reference entry says it has no series on a fresh site of
// the userspace path.
func absentAtStart(d metrics.Def) bool {
	return strings.Contains(d.Note, metrics.KernelOnlyNote) || strings.Contains(d.Note, metrics.NoSeriesNote)
}

func scrapeAll(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var b strings.Builder
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		b.WriteString("\n" + sc.Text())
	}
	return b.String() + "\n"
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(t, err)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}

// freePort is a loopback port nobody listens on now; the site binds it a moment later.
func freePort(t *testing.T) int {
	t.Helper()
	l := listen(t)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
