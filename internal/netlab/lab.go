// Package netlab builds real multi-site skfwd networks on one machine: a network namespace
// per site, veth pairs for links, one skfwd process per site configured with real YAML and
// real `skfwd link generate` credentials, and backends and clients that run inside the
// namespaces. The netns integration tests and `make demo` are built on it.
//
// It needs root (namespaces, veths). Everything it makes is removed by Close.
package netlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/skfwd/skfwd/pkg/gateway"
)

const prefix = "skft"

// LinkPort is the inter-router port of every site's RouterAccess.
const LinkPort = 55671

var labSeq atomic.Int64

// Lab is one network under construction or running.
type Lab struct {
	Bin      string // path of the skfwd binary
	Dir      string // configs, state and logs live here
	Settings map[string]string

	id     int64
	mu     sync.Mutex
	sites  []*Site
	subnet int
}

// New makes an empty lab. settings go into every site's Site spec.settings.
func New(bin, dir string, settings map[string]string) *Lab {
	return &Lab{Bin: bin, Dir: dir, Settings: settings, id: labSeq.Add(1)}
}

// Site is one site of the lab: a namespace and, once started, an skfwd process.
type Site struct {
	Name string
	lab  *Lab
	ns   *netns
	dir  string
	docs []string

	hasRouterAccess bool
	links           int
	settings        map[string]string // Site spec.settings

	cmd     *exec.Cmd
	exited  chan struct{}
	LogPath string
	// RunPrefix runs the gateway under a wrapper inside its namespace (e.g. setpriv to drop
	// capabilities); empty: as is.
	RunPrefix []string
}

// Site adds a site with its own namespace.
func (l *Lab) Site(name string) (*Site, error) {
	ns, err := newNetns(fmt.Sprintf("%s%d-%d-%s", prefix, os.Getpid(), l.id, name))
	if err != nil {
		return nil, err
	}
	s := &Site{Name: name, lab: l, ns: ns, dir: filepath.Join(l.Dir, name)}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		ns.remove()
		return nil, err
	}
	s.LogPath = filepath.Join(l.Dir, name+".log")
	s.settings = map[string]string{"state-dir": filepath.Join(l.Dir, "state")}
	for k, v := range l.Settings {
		s.settings[k] = v
	}
	s.docs = append(s.docs, s.siteDoc())
	l.mu.Lock()
	l.sites = append(l.sites, s)
	l.mu.Unlock()
	return s, nil
}

func (s *Site) siteDoc() string {
	var settings []string
	for _, k := range sortedCopy(mapKeys(s.settings)) {
		settings = append(settings, fmt.Sprintf("%s: %q", k, s.settings[k]))
	}
	return fmt.Sprintf("kind: Site\nmetadata: {name: %s}\nspec:\n  settings: {%s}\n", s.Name, strings.Join(settings, ", "))
}

func mapKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Set sets one Site spec.settings key for this site alone (over the lab's); call it before
// Start.
func (s *Site) Set(key, value string) {
	s.settings[key] = value
	s.docs[0] = s.siteDoc()
}

// AdminAddress is where the site's gateway serves /status and /metrics, inside its namespace.
func (s *Site) AdminAddress() string {
	if a, ok := s.settings["admin-address"]; ok {
		return a
	}
	return "127.0.0.1:9441"
}

// Netns returns the site's namespace name.
func (s *Site) Netns() string { return s.ns.name }

// Link joins dialer to acceptor with a new veth pair and a link of the given cost, issued by
// `skfwd link generate` on the acceptor. It returns the names of the interface at each end,
// so a test can cut the link.
func (l *Lab) Link(dialer, acceptor *Site, cost int) (dialerIf, acceptorIf string, err error) {
	l.mu.Lock()
	l.subnet++
	n := l.subnet
	l.mu.Unlock()
	dialer.links++
	acceptor.links++
	dialerIf = fmt.Sprintf("l%d-%.8s", n, acceptor.Name)
	acceptorIf = fmt.Sprintf("l%d-%.8s", n, dialer.Name)
	if out, err := exec.Command("ip", "link", "add", dialerIf, "netns", dialer.ns.name, "type", "veth",
		"peer", "name", acceptorIf, "netns", acceptor.ns.name).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("add veth: %v: %s", err, out)
	}
	dialerIP := fmt.Sprintf("10.199.%d.1", n)
	acceptorIP := fmt.Sprintf("10.199.%d.2", n)
	for _, c := range []struct {
		s      *Site
		ifname string
		ip     string
	}{{dialer, dialerIf, dialerIP}, {acceptor, acceptorIf, acceptorIP}} {
		if err := c.s.ns.ip("addr", "add", c.ip+"/24", "dev", c.ifname); err != nil {
			return "", "", err
		}
		if err := c.s.ns.ip("link", "set", c.ifname, "up"); err != nil {
			return "", "", err
		}
	}
	if !acceptor.hasRouterAccess {
		acceptor.hasRouterAccess = true
		acceptor.docs = append(acceptor.docs, fmt.Sprintf("kind: RouterAccess\nmetadata: {name: skupper-router}\nspec:\n  roles: [{name: inter-router, port: %d}]\n", LinkPort))
		if err := acceptor.writeConfig(); err != nil {
			return "", "", err
		}
	}
	name := fmt.Sprintf("%s-to-%s-%d", dialer.Name, acceptor.Name, n)
	out, err := l.skfwd("link", "generate", "-f", acceptor.dir, "--endpoint", fmt.Sprintf("%s:%d", acceptorIP, LinkPort),
		"--cost", fmt.Sprint(cost), "--name", name)
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(dialer.dir, "link-"+name+".yaml"), out, 0o600); err != nil {
		return "", "", err
	}
	return dialerIf, acceptorIf, nil
}

// Listener adds a Listener for key on port (all addresses of the site).
func (s *Site) Listener(name, key string, port int) {
	s.docs = append(s.docs, fmt.Sprintf("kind: Listener\nmetadata: {name: %s}\nspec: {routingKey: %s, host: 0.0.0.0, port: %d}\n", name, key, port))
}

// Connector adds a Connector for key to addr (host:port inside the site).
func (s *Site) Connector(name, key, addr string) {
	host, port, _ := net.SplitHostPort(addr)
	s.docs = append(s.docs, fmt.Sprintf("kind: Connector\nmetadata: {name: %s}\nspec: {routingKey: %s, host: %s, port: %s}\n", name, key, host, port))
}

// Doc adds a raw YAML document (apiVersion is added) to the site's configuration.
func (s *Site) Doc(yaml string) { s.docs = append(s.docs, yaml) }

// ConfigDir is the directory holding the site's configuration.
func (s *Site) ConfigDir() string { return s.dir }

func (s *Site) writeConfig() error {
	var b bytes.Buffer
	for _, d := range s.docs {
		b.WriteString("---\napiVersion: skupper.io/v2alpha1\n")
		b.WriteString(d)
	}
	return os.WriteFile(filepath.Join(s.dir, "site.yaml"), b.Bytes(), 0o644)
}

func (l *Lab) skfwd(args ...string) ([]byte, error) {
	cmd := exec.Command(l.Bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("skfwd %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// Start writes the site's configuration and starts its gateway, returning once it is ready.
func (s *Site) Start() error {
	if err := s.writeConfig(); err != nil {
		return err
	}
	ready := filepath.Join(s.lab.Dir, s.Name+".ready")
	os.Remove(ready)
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := append(append([]string{"netns", "exec", s.ns.name}, s.RunPrefix...),
		s.lab.Bin, "run", "-f", s.dir, "--ready-file", ready, "--log-level", "debug")
	s.cmd = exec.Command("ip", args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	// Its own process group, so a test killed by the harness does not take the site with it
	// mid-flight and the lab can always reap what it started.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start site %s: %w", s.Name, err)
	}
	s.exited = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(ready); err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("site %s exited during start: %s", s.Name, s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.Kill()
	return fmt.Errorf("site %s not ready within 15s: %s", s.Name, s.logTail())
}

func (s *Site) logTail() string {
	b, _ := os.ReadFile(s.LogPath)
	if len(b) > 16000 {
		b = b[len(b)-16000:]
	}
	return string(b)
}

// Running reports whether the site's process runs.
func (s *Site) Running() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Stop asks the gateway to stop (SIGTERM) and waits; it returns the exit error, if any.
func (s *Site) Stop() error {
	if !s.Running() {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		if s.cmd.ProcessState.ExitCode() != 0 {
			return fmt.Errorf("site %s exited with %s: %s", s.Name, s.cmd.ProcessState, s.logTail())
		}
		return nil
	case <-time.After(10 * time.Second):
		s.Kill()
		return fmt.Errorf("site %s did not stop within 10s of SIGTERM", s.Name)
	}
}

// Kill kills the gateway at once (SIGKILL), like a crashed site.
func (s *Site) Kill() {
	if !s.Running() {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
}

// SetLink brings one of the site's interfaces up or down. Down is a silent cut: no FIN or RST
// reaches the other side.
func (s *Site) SetLink(ifname string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return s.ns.ip("link", "set", ifname, state)
}

// Do runs f inside the site's namespace (see netns.Do).
func (s *Site) Do(f func() error) error { return s.ns.Do(f) }

// Dial connects from inside the site to addr.
func (s *Site) Dial(addr string, timeout time.Duration) (*net.TCPConn, error) {
	var c net.Conn
	err := s.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// Listen listens inside the site on addr.
func (s *Site) Listen(addr string) (*net.TCPListener, error) {
	var ln net.Listener
	err := s.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// Status fetches the site gateway's status from its admin address.
func (s *Site) Status() (gateway.Status, error) {
	var st gateway.Status
	resp, err := s.AdminGet("/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// AdminGet fetches path from the site gateway's admin address, from inside its namespace.
// The caller closes the body.
func (s *Site) AdminGet(path string) (*http.Response, error) {
	client := http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return s.Dial(addr, 2*time.Second)
			},
		},
	}
	return client.Get("http://" + s.AdminAddress() + path)
}

// WaitFor polls the site's status until cond holds or timeout passes.
func (s *Site) WaitFor(timeout time.Duration, what string, cond func(gateway.Status) bool) error {
	deadline := time.Now().Add(timeout)
	var last gateway.Status
	var lastErr error
	for time.Now().Before(deadline) {
		last, lastErr = s.Status()
		if lastErr == nil && cond(last) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	if lastErr != nil {
		return fmt.Errorf("site %s: %s not reached within %v: %w", s.Name, what, timeout, lastErr)
	}
	js, _ := json.MarshalIndent(last, "", " ")
	return fmt.Errorf("site %s: %s not reached within %v; last status:\n%s", s.Name, what, timeout, js)
}

// WaitCandidates waits until the site's candidates for key are exactly targets (in any order;
// remote sites by name, local connectors as "local:NAME").
func (s *Site) WaitCandidates(timeout time.Duration, key string, targets ...string) error {
	want := strings.Join(sortedCopy(targets), ",")
	return s.WaitFor(timeout, fmt.Sprintf("candidates for %s = [%s], its listeners accepting if any", key, want), func(st gateway.Status) bool {
		if strings.Join(sortedCopy(Candidates(st, key)), ",") != want {
			return false
		}
		// A listener opens its socket once the gateway has seen a candidate, a moment after
		// the candidate shows in the status: a test that dials then must not be refused.
		for _, l := range st.Listeners {
			if l.RoutingKey == key && len(targets) > 0 && !l.Accepting {
				return false
			}
		}
		return true
	})
}

// Candidates lists the candidate targets of key in a status.
func Candidates(st gateway.Status, key string) []string {
	var out []string
	for _, svc := range st.Services {
		if svc.RoutingKey != key {
			continue
		}
		for _, c := range svc.Candidates {
			if c.Local {
				out = append(out, "local:"+c.Target)
			} else {
				out = append(out, c.Target)
			}
		}
	}
	return out
}

// Close stops every site and removes every namespace. It returns what went wrong, joined.
func (l *Lab) Close() error {
	l.mu.Lock()
	sites := l.sites
	l.sites = nil
	l.mu.Unlock()
	var errs []error
	for _, s := range sites {
		if err := s.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range sites {
		s.ns.remove()
	}
	return errors.Join(errs...)
}
