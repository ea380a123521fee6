package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
)

// forwarder is one column of the table. Adding a forwarder (or a skfwd data-path mode) is
// one entry in forwarders.
type forwarder struct {
	id   string // flags and raw results
	name string // column header
	// na, when set, means the forwarder cannot run yet: its column says so.
	na string
	// proxy: it forwards connections (so it can fail over); direct routing does not.
	proxy bool
	// vsHAProxy: the table shows its ratios to the HAProxy chains.
	vsHAProxy bool
	start     func(ctx context.Context, t *topo, dir string) (*instance, error)
}

// instance is a running forwarder.
type instance struct {
	addrs func(key string) []string // where the client connects for a routing key
	pids  func() []int              // the forwarder's processes, gw1's then gw2's (none: direct)
	stop  func() error
	// sites: skfwd's gateways, gw1 then gw2, for their status and profiles; nil for others.
	sites []*netlab.Site
	// linkDowns counts the forwarder's links that went down so far; nil: it has none.
	linkDowns func() int
}

// flaps is linkDowns, or -1 for a forwarder without links.
func (i *instance) flaps() int {
	if i.linkDowns == nil {
		return -1
	}
	return i.linkDowns()
}

var forwarders = []forwarder{
	{id: "direct", name: "direct routing", start: startDirect},
	{id: "haproxy", name: "HAProxy 2.6 chain", proxy: true, start: startHAProxy("")},
	{id: "haproxy-splice", name: "HAProxy 2.6 chain, splice-auto", proxy: true, start: startHAProxy("    option splice-auto\n")},
	{id: "skfwd", name: "skfwd userspace", proxy: true, vsHAProxy: true, start: startSkfwd("userspace")},
	{id: "skfwd-auto", name: "skfwd auto", proxy: true, vsHAProxy: true, start: startSkfwd("auto")},
	{id: "skfwd-sockmap", name: "skfwd sockmap", proxy: true, start: startSkfwd("sockmap")},
}

func forwarderNames() string {
	var n []string
	for _, f := range forwarders {
		n = append(n, f.id)
	}
	return strings.Join(n, ",")
}

func selectForwarders(list string) ([]forwarder, error) {
	if list == "" {
		return forwarders, nil
	}
	var out []forwarder
	for _, id := range strings.Split(list, ",") {
		found := false
		for _, f := range forwarders {
			if f.id == id {
				out, found = append(out, f), true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown forwarder %q (have %s)", id, forwarderNames())
		}
	}
	return out, nil
}

// startDirect: no forwarder, the client reaches the backends through both gateway
// namespaces by IP forwarding. The upper bound.
func startDirect(ctx context.Context, t *topo, dir string) (*instance, error) {
	return &instance{
		addrs: t.backendAddrs,
		pids:  func() []int { return nil },
		stop:  func() error { return nil },
	}, nil
}

// HAProxy as a user would set up a gateway chain: TCP mode, leastconn, health checks every
// second (down after 2 failures, up after 2 successes), connect timeout equal to skfwd's
// default, and failed connects retried on another server.
// maxconn: HAProxy wants 2 file descriptors per connection up front, and this machine's
// limit is 20000 (splicing needs pipes too: maxpipes defaults to a quarter of maxconn); 6000
// is above what the workloads hold open (the idle workload's 5000, the most).
const haproxyGlobal = `global
    maxconn 6000
defaults
    mode tcp
    balance leastconn
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 1s
    retries 3
    option redispatch 1
    default-server check inter 1s fall 2 rise 2
`

func haproxyConfig(bindIP, options string, servers func(key string) []string) string {
	var b strings.Builder
	b.WriteString(haproxyGlobal)
	b.WriteString(options)
	for _, k := range keys {
		fmt.Fprintf(&b, "frontend %s\n    bind %s:%d\n    default_backend %s\n", k.name, bindIP, k.front, k.name)
		fmt.Fprintf(&b, "backend %s\n", k.name)
		for i, s := range servers(k.name) {
			fmt.Fprintf(&b, "    server s%d %s\n", i+1, s)
		}
	}
	return b.String()
}

// startHAProxy returns a starter for the chain with extra lines for its defaults section.
func startHAProxy(options string) func(ctx context.Context, t *topo, dir string) (*instance, error) {
	return func(ctx context.Context, t *topo, dir string) (*instance, error) {
		return haproxyChain(ctx, t, dir, options)
	}
}

func haproxyChain(ctx context.Context, t *topo, dir, options string) (*instance, error) {
	cfg1 := haproxyConfig(t.front.BIP, options, func(key string) []string {
		for _, k := range keys {
			if k.name == key {
				return []string{fmt.Sprintf("%s:%d", t.gw2IP, k.front)}
			}
		}
		return nil
	})
	cfg2 := haproxyConfig(t.gw2IP, options, t.backendAddrs)
	var procs []*proc
	stop := func() error {
		for _, p := range procs {
			p.stop()
		}
		return nil
	}
	// gw2 first, so gw1's health check finds it up.
	for _, c := range []struct {
		name, cfg string
		site      *netlab.Site
	}{{"gw2", cfg2, t.gw2}, {"gw1", cfg1, t.gw1}} {
		path := filepath.Join(dir, "haproxy-"+c.name+".cfg")
		if err := os.WriteFile(path, []byte(c.cfg), 0o644); err != nil {
			return nil, err
		}
		p, err := startProc(c.site.Command("haproxy", "-db", "-f", path), filepath.Join(dir, "haproxy-"+c.name+".log"), "")
		if err != nil {
			_ = stop()
			return nil, err
		}
		procs = append(procs, p)
		if c.name == "gw2" {
			// gw1's first health checks must find gw2 listening: a failed one takes a
			// server down for two seconds (rise 2), into the first workload.
			if err := waitListening(ctx, t.gw2, 10*time.Second); err != nil {
				_ = stop()
				return nil, fmt.Errorf("haproxy at gw2: %w", err)
			}
		}
	}
	inst := &instance{
		addrs: func(key string) []string { return []string{t.frontAddr(key)} },
		pids:  func() []int { return []int{procs[1].pid(), procs[0].pid()} }, // started gw2 first

		stop: stop,
	}
	if err := waitBackends(ctx, t.client, inst.addrs("banner"), []string{"be1", "be2"}, 15*time.Second); err != nil {
		_ = stop()
		return nil, fmt.Errorf("haproxy chain not forwarding: %w", err)
	}
	return inst, nil
}

// waitListening waits until something listens in site on every key's front port (as ss
// shows it: a test connection would reach the backends, and iperf3 takes it for a test).
func waitListening(ctx context.Context, site *netlab.Site, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, err := site.Command("ss", "-Hltn").Output()
		missing := ""
		for _, k := range keys {
			if err == nil && !bytes.Contains(out, []byte(fmt.Sprintf(":%d ", k.front))) {
				missing += fmt.Sprintf(" %d", k.front)
			}
		}
		if err == nil && missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ports%s not listening within %v (ss: %v)", missing, timeout, err)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// startSkfwd returns a starter for skfwd with the data path mode (the data-path setting,
// given as SKFWD_DATA_PATH so the sites' configuration stays the same for every column); a
// gateway that reports another mode fails the start. The sites are configured once: a
// listener per routing key at gw1, connectors to both backends at gw2, and the gw1 -> gw2
// link made by the topology.
func startSkfwd(mode string) func(ctx context.Context, t *topo, dir string) (*instance, error) {
	env := map[string]string{"SKFWD_DATA_PATH": mode}
	return func(ctx context.Context, t *topo, dir string) (*instance, error) {
		if !t.skfwdConfigured {
			t.skfwdConfigured = true
			for _, k := range keys {
				t.gw1.Listener(k.name, k.name, k.front)
				for i, a := range t.backendAddrs(k.name) {
					t.gw2.Connector(fmt.Sprintf("%s-be%d", k.name, i+1), k.name, a)
				}
			}
		}
		for k, v := range env {
			os.Setenv(k, v)
		}
		defer func() {
			for k := range env {
				os.Unsetenv(k)
			}
		}()
		stop := func() error {
			err1 := t.gw1.Stop()
			err2 := t.gw2.Stop()
			if err1 != nil {
				return err1
			}
			return err2
		}
		if err := t.gw2.Start(); err != nil {
			return nil, err
		}
		if err := t.gw1.Start(); err != nil {
			_ = stop()
			return nil, err
		}
		inst := &instance{
			addrs: func(key string) []string { return []string{t.frontAddr(key)} },
			pids:  func() []int { return []int{t.gw1.Pid(), t.gw2.Pid()} },
			stop:  stop,
			sites: []*netlab.Site{t.gw1, t.gw2},
			linkDowns: func() int {
				n := 0
				for _, s := range []*netlab.Site{t.gw1, t.gw2} {
					b, _ := os.ReadFile(s.LogPath)
					n += bytes.Count(b, []byte(`msg="link down"`))
				}
				return n
			},
		}
		for _, k := range keys {
			if err := t.gw1.WaitCandidates(15*time.Second, k.name, "gw2"); err != nil {
				_ = stop()
				return nil, err
			}
		}
		for _, s := range []*netlab.Site{t.gw1, t.gw2} {
			st, err := s.Status()
			if err == nil && st.DataPath != mode {
				err = fmt.Errorf("site %s runs data path %q, want %q", s.Name, st.DataPath, mode)
			}
			if err != nil {
				_ = stop()
				return nil, err
			}
		}
		if err := waitBackends(ctx, t.client, inst.addrs("banner"), []string{"be1", "be2"}, 15*time.Second); err != nil {
			_ = stop()
			return nil, fmt.Errorf("skfwd not forwarding: %w", err)
		}
		return inst, nil
	}
}
