package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skfwd/skfwd/pkg/config"
)

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(env{
		stdout:  &out,
		stderr:  &errb,
		getenv:  func(k string) string { return vars[k] },
		signals: func(chan<- os.Signal) {},
	}, args)
	return result{code, out.String(), errb.String()}
}

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const site = "apiVersion: skupper.io/v2alpha1\nkind: Site\nmetadata: {name: west}\nspec:\n  settings: {admin-address: \"off\"}\n"

func doc(kind, body string) string {
	return "---\napiVersion: skupper.io/v2alpha1\nkind: " + kind + "\n" + body
}

var secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {secret: c2VjcmV0}\n"

func TestCheckRejectsEachBadInput(t *testing.T) {
	listener := func(name, port string) string {
		return doc("Listener", "metadata: {name: "+name+"}\nspec: {routingKey: db, host: 127.0.0.1, port: "+port+"}\n")
	}
	link := func(cost string) string {
		return doc("Link", "metadata: {name: l}\nspec:\n  cost: "+cost+"\n  tlsCredentials: s\n  endpoints: [{name: inter-router, host: 10.0.0.2, port: 55671}]\n") + secret
	}
	cases := []struct {
		name, input string
		field, hint string // what stderr must name
	}{
		{"unknown kind", site + doc("Gateway", "metadata: {name: g}\n"), "Gateway", "kind"},
		{"unknown apiVersion", site + "---\napiVersion: skupper.io/v1\nkind: Listener\nmetadata: {name: l}\n", "apiVersion", "skupper.io/v2alpha1"},
		{"no Site", strings.TrimPrefix(listener("a", "8080"), "---\n"), "Site", "fix"},
		{"two Sites", site + "---\n" + strings.Replace(site, "west", "east", 1), "Site", "fix"},
		{"cost 0", site + link("0"), "spec.cost", "fix"},
		{"negative cost", site + link("-3"), "spec.cost", "fix"},
		{"cost not an integer", site + link("1.5"), "spec.cost", "fix"},
		{"port out of range", site + listener("a", "70000"), "spec.port", "65535"},
		{"duplicate names", site + listener("a", "8080") + listener("a", "8081"), "metadata.name", "fix"},
		{"listener on the link endpoint address", site + listener("a", "55671") +
			doc("RouterAccess", "metadata: {name: ra}\nspec:\n  roles: [{name: inter-router, port: 55671}]\n"), "RouterAccess", "fix"},
		{"missing routing key", site + doc("Connector", "metadata: {name: c}\nspec: {host: 127.0.0.1, port: 9000}\n"), "spec.routingKey", "fix"},
		{"listener host not an address", site + doc("Listener", "metadata: {name: a}\nspec: {routingKey: db, host: 999.1.1.1, port: 8080}\n"), "spec.host", "fix"},
		{"connector host not a name", site + doc("Connector", "metadata: {name: c}\nspec: {routingKey: db, host: db..local, port: 9000}\n"), "spec.host", "fix"},
		{"empty link secret", site + strings.Replace(link("1"), "c2VjcmV0", "''", 1), "data.secret", "skfwd link generate"},
		{"link secret under another key", site + strings.Replace(link("1"), "{secret:", "{tls.key:", 1), "data.secret", "tls.key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := write(t, t.TempDir(), "site.yaml", c.input)
			r := runCLI(t, nil, "check", "-f", f)
			if r.code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, exitUsage, r.stderr)
			}
			wants := []string{"site.yaml", c.field, c.hint}
			if c.name != "no Site" { // a missing Site belongs to no document
				wants = append(wants, "document")
			}
			for _, want := range wants {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr does not name %q:\n%s", want, r.stderr)
				}
			}
		})
	}
}

func TestCheckReportsAllProblemsAtOnce(t *testing.T) {
	input := site +
		doc("Listener", "metadata: {name: a}\nspec: {routingKey: db, host: 127.0.0.1, port: 0}\n") +
		doc("Connector", "metadata: {name: c}\nspec: {host: 127.0.0.1, port: 9000}\n") +
		doc("Widget", "metadata: {name: w}\n")
	f := write(t, t.TempDir(), "site.yaml", input)
	r := runCLI(t, nil, "check", "-f", f)
	if r.code != exitUsage || !strings.Contains(r.stderr, "3 problem(s)") {
		t.Fatalf("exit %d; want 3 problems reported together:\n%s", r.code, r.stderr)
	}
}

func TestCheckValid(t *testing.T) {
	f := write(t, t.TempDir(), "site.yaml", site+doc("Listener", "metadata: {name: a}\nspec: {routingKey: db, host: 127.0.0.1, port: 8080}\n"))
	r := runCLI(t, nil, "check", "-f", f)
	if r.code != exitOK || !strings.Contains(r.stdout, `site "west" is valid: 1 listener(s)`) {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

func TestEnvironmentAndFlagsOverrideSettings(t *testing.T) {
	f := write(t, t.TempDir(), "site.yaml", site)
	r := runCLI(t, map[string]string{"SKFWD_HEARTBEAT_INTERVAL": "soon"}, "check", "-f", f)
	if r.code != exitUsage || !strings.Contains(r.stderr, "heartbeat-interval") {
		t.Fatalf("bad SKFWD_HEARTBEAT_INTERVAL accepted: exit %d\n%s", r.code, r.stderr)
	}
	// A flag on the command line wins over the environment.
	r = runCLI(t, map[string]string{"SKFWD_HEARTBEAT_INTERVAL": "soon"}, "check", "-f", f, "--heartbeat-interval", "100ms")
	if r.code != exitOK {
		t.Fatalf("flag did not override the environment: exit %d\n%s", r.code, r.stderr)
	}
	// The configuration file itself can come from the environment.
	r = runCLI(t, map[string]string{"SKFWD_F": f}, "check")
	if r.code != exitOK {
		t.Fatalf("SKFWD_F ignored: exit %d\n%s", r.code, r.stderr)
	}
}

func TestLinkGenerateIssuesWhatTheDialerLoads(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	acceptor := filepath.Join(dir, "east")
	os.Mkdir(acceptor, 0o755)
	write(t, acceptor, "site.yaml", strings.Replace(site, "west", "east", 1)+
		doc("RouterAccess", "metadata: {name: skupper-router}\nspec:\n  roles: [{name: inter-router, port: 55671}, {name: edge, port: 45671}]\n"))

	r := runCLI(t, nil, "link", "generate", "-f", acceptor, "--state-dir", state, "--endpoint", "192.0.2.7:55671", "--cost", "7", "--name", "west-link")
	if r.code != exitOK {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	dialer := filepath.Join(dir, "west")
	os.Mkdir(dialer, 0o755)
	write(t, dialer, "site.yaml", site)
	write(t, dialer, "link.yaml", r.stdout)
	cfg, err := config.Load(dialer)
	if err != nil {
		t.Fatalf("the generated YAML does not load:\n%s\n%v", r.stdout, err)
	}
	l := cfg.Links[0]
	if l.Name != "west-link" || l.Cost != 7 || l.Endpoints[0].Address() != "192.0.2.7:55671" || len(cfg.Secrets[l.Credentials].Data["secret"]) != 32 {
		t.Fatalf("generated link %+v, secret %d bytes", l, len(cfg.Secrets[l.Credentials].Data["secret"]))
	}
	st, err := os.Stat(filepath.Join(state, "east"))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("state directory: %v, mode %v", err, st.Mode().Perm())
	}
	if r := runCLI(t, nil, "link", "generate", "-f", acceptor, "--state-dir", state, "--endpoint", "192.0.2.7:55671", "--name", "west-link"); r.code == exitOK {
		t.Error("issuing the same link name twice succeeded")
	}
	if r := runCLI(t, nil, "link", "generate", "-f", acceptor, "--state-dir", state); r.code != exitUsage || !strings.Contains(r.stderr, "--endpoint") {
		t.Errorf("a wildcard RouterAccess without --endpoint: exit %d, %s", r.code, r.stderr)
	}
	if r := runCLI(t, nil, "link", "generate", "-f", dialer, "--state-dir", state, "--endpoint", "192.0.2.7:1"); r.code != exitUsage || !strings.Contains(r.stderr, "RouterAccess") {
		t.Errorf("a site without RouterAccess: exit %d, %s", r.code, r.stderr)
	}
}

func TestRunRefusesAPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	f := write(t, dir, "site.yaml", site+doc("Listener", fmt.Sprintf("metadata: {name: db}\nspec: {routingKey: db, host: 127.0.0.1, port: %d}\n", port)))
	r := runCLI(t, nil, "run", "-f", f, "--state-dir", filepath.Join(dir, "state"))
	if r.code != exitFailure || !strings.Contains(r.stderr, `Listener \"db\"`) || !strings.Contains(r.stderr, "free the port") {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
}

// running is a `skfwd run` started by startRun.
type running struct {
	stop func() (code int, stderr string) // signals SIGTERM and waits for the exit
}

// startRun runs `skfwd run -f f` with more args and the environment vars in the background
// and waits until it is ready.
func startRun(t *testing.T, dir, f string, vars map[string]string, args ...string) running {
	t.Helper()
	ready := filepath.Join(dir, "ready")
	var errb bytes.Buffer
	sig := make(chan chan<- os.Signal, 1)
	exited := make(chan int, 1)
	go func() {
		exited <- run(env{
			stdout: &bytes.Buffer{}, stderr: &errb,
			getenv:  func(k string) string { return vars[k] },
			signals: func(c chan<- os.Signal) { sig <- c },
		}, append([]string{"run", "-f", f, "--state-dir", filepath.Join(dir, "state"), "--ready-file", ready}, args...))
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case code := <-exited:
			t.Fatalf("run exited with %d before it was ready:\n%s", code, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("run not ready within 10s")
		}
	}
	return running{stop: func() (int, string) {
		(<-sig) <- syscall.SIGTERM
		code := <-exited
		return code, errb.String()
	}}
}

func TestRunServesUntilSignalled(t *testing.T) {
	dir := t.TempDir()
	r := startRun(t, dir, write(t, dir, "site.yaml", site), nil)
	code, stderr := r.stop()
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "ready")); !os.IsNotExist(err) {
		t.Error("ready file left behind")
	}
	if !strings.Contains(stderr, "stopped") {
		t.Errorf("no stop logged:\n%s", stderr)
	}
}

// TestPprofOnlyWhenOn: /debug/pprof/ on the admin address is 404 by default and served when
// the pprof setting is on, from the Site, a flag or the environment.
func TestPprofOnlyWhenOn(t *testing.T) {
	siteWith := func(settings string) string {
		return "apiVersion: skupper.io/v2alpha1\nkind: Site\nmetadata: {name: west}\nspec:\n  settings: {" + settings + "}\n"
	}
	cases := []struct {
		name     string
		settings string
		vars     map[string]string
		flags    []string
		want     int
	}{
		{name: "default", want: 404},
		{name: "site setting", settings: `pprof: "on"`, want: 200},
		{name: "flag", flags: []string{"--pprof", "on"}, want: 200},
		{name: "environment", vars: map[string]string{"SKFWD_PPROF": "on"}, want: 200},
		{name: "flag off wins over the site", settings: `pprof: "on"`, flags: []string{"--pprof", "off"}, want: 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			admin := freeAddr(t)
			r := startRun(t, dir, write(t, dir, "site.yaml", siteWith(tc.settings)), tc.vars, append([]string{"--admin-address", admin}, tc.flags...)...)
			defer r.stop()
			if code, body := get(t, "http://"+admin+"/debug/pprof/"); code != tc.want || (code == 200 && !strings.Contains(body, "goroutine")) {
				t.Errorf("GET /debug/pprof/: %d, want %d\n%.300s", code, tc.want, body)
			}
			if code, _ := get(t, "http://"+admin+"/debug/pprof/goroutine?debug=1"); code != tc.want {
				t.Errorf("GET /debug/pprof/goroutine: %d, want %d", code, tc.want)
			}
			if code, _ := get(t, "http://"+admin+"/metrics"); code != 200 {
				t.Errorf("GET /metrics: %d, want 200 either way", code)
			}
		})
	}
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestUsageAndVersion(t *testing.T) {
	if r := runCLI(t, nil, "version"); r.code != exitOK || !strings.HasPrefix(r.stdout, "skfwd ") {
		t.Errorf("version: %+v", r)
	}
	if r := runCLI(t, nil); r.code != exitUsage || !strings.Contains(r.stderr, "Usage:") {
		t.Errorf("no arguments: %+v", r)
	}
	if r := runCLI(t, nil, "frobnicate"); r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %+v", r)
	}
	if r := runCLI(t, nil, "check"); r.code != exitUsage || !strings.Contains(r.stderr, "-f PATH") {
		t.Errorf("check without -f: %+v", r)
	}
}
