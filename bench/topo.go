package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
)

// Ports of the backends and of the forwarders' front ends (the same for every forwarder, as
// only one runs at a time).
const (
	echoPort   = 5001 // 64 B echo: client speaks first
	bannerPort = 5002 // 64 B banner naming the backend, then echo: server speaks first
	iperfPort  = 5201
	frontEcho  = 7001
	frontBann  = 7002
	frontIperf = 7201
)

// Routing keys, and which backend port each one reaches.
var keys = []struct {
	name     string
	port     int
	front    int
	backends int // how many backend sites serve it
}{
	{"echo", echoPort, frontEcho, 2},
	{"banner", bannerPort, frontBann, 2},
	{"iperf", iperfPort, frontIperf, 1},
}

// topo is the benchmark's network: namespaces, veths, backends and the delay line.
type topo struct {
	self string // this binary, run again inside namespaces for the helpers
	dir  string
	lab  *netlab.Lab

	client, gw1, gw2 *netlab.Site
	be               [2]*netlab.Site
	front            netlab.Veth    // client (A) - gw1 (B)
	beVeth           [2]netlab.Veth // gw2 (A) - backend (B)
	gw1If, gw2If     string         // the gw1-gw2 link's interfaces
	gw1IP, gw2IP     string

	echo  [2]*proc
	iperf *proc
	delay *proc

	skfwdConfigured bool // listeners and connectors added to the gateway sites' configuration
}

// sysctls every namespace gets: a connection-rate run opens hundreds of thousands of
// connections, so TIME_WAIT ports are reused and the port range is wide; the delay line
// delivers packets on an interface other than the one their address lives on, so reverse
// path filtering is off.
var nsSysctls = [][2]string{
	{"net.ipv4.tcp_tw_reuse", "1"},
	{"net.ipv4.ip_local_port_range", "1024 65000"},
	{"net.ipv4.conf.all.rp_filter", "0"},
	{"net.ipv4.conf.default.rp_filter", "0"},
	{"net.core.somaxconn", "8192"},
	{"net.ipv4.tcp_max_syn_backlog", "8192"},
}

func newTopo(ctx context.Context, skfwdBin, dir string) (t *topo, err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	t = &topo{self: self, dir: dir}
	t.lab = netlab.New(skfwdBin, filepath.Join(dir, "sites"), nil)
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	site := func(name string) *netlab.Site {
		if err != nil {
			return nil
		}
		var s *netlab.Site
		s, err = t.lab.Site(name)
		for _, kv := range nsSysctls {
			if err == nil {
				err = s.Sysctl(kv[0], kv[1])
			}
		}
		return s
	}
	t.client, t.gw1, t.gw2 = site("client"), site("gw1"), site("gw2")
	t.be[0], t.be[1] = site("be1"), site("be2")
	if err != nil {
		return t, err
	}
	if t.front, err = t.lab.Veth(t.client, t.gw1); err != nil {
		return t, err
	}
	// The gateway link is a real skfwd link (credential from `skfwd link generate`); direct
	// routing and HAProxy use the same veth.
	if t.gw1If, t.gw2If, err = t.lab.Link(t.gw1, t.gw2, 1); err != nil {
		return t, err
	}
	if t.gw1IP, err = t.gw1.IfAddr(t.gw1If); err != nil {
		return t, err
	}
	if t.gw2IP, err = t.gw2.IfAddr(t.gw2If); err != nil {
		return t, err
	}
	for i := range t.be {
		if t.beVeth[i], err = t.lab.Veth(t.gw2, t.be[i]); err != nil {
			return t, err
		}
	}
	// Plain IP routing through both gateways: the direct path, and the way back.
	steps := []func() error{
		func() error { return t.gw1.Sysctl("net.ipv4.ip_forward", "1") },
		func() error { return t.gw2.Sysctl("net.ipv4.ip_forward", "1") },
		func() error { return t.client.IP("route", "add", "default", "via", t.front.BIP) },
		func() error { return t.gw1.IP("route", "add", "default", "via", t.gw2IP) },
		func() error { return t.gw2.IP("route", "add", subnet(t.front.AIP), "via", t.gw1IP) },
		func() error { return t.beRoute(0) },
		func() error { return t.beRoute(1) },
	}
	for _, f := range steps {
		if err = f(); err != nil {
			return t, err
		}
	}
	for i := range t.be {
		if t.echo[i], err = t.startEcho(i); err != nil {
			return t, fmt.Errorf("echo server be%d: %w", i+1, err)
		}
	}
	t.iperf, err = startProc(t.be[0].Command("iperf3", "-s", "-p", fmt.Sprint(iperfPort)), filepath.Join(dir, "iperf3-server.log"), "")
	if err != nil {
		return t, err
	}
	return t, t.waitDirect(ctx)
}

func (t *topo) beRoute(i int) error {
	return t.be[i].IP("route", "replace", "default", "via", t.beVeth[i].AIP)
}

// subnet turns 10.199.1.1 into 10.199.1.0/24 (every lab veth has a /24 of its own).
func subnet(ip string) string {
	return ip[:strings.LastIndex(ip, ".")] + ".0/24"
}

func (t *topo) startEcho(i int) (*proc, error) {
	name := fmt.Sprintf("be%d", i+1)
	return startProc(t.be[i].Command(t.self, "echo", "-name", name,
		"-echo", fmt.Sprintf(":%d", echoPort), "-banner", fmt.Sprintf(":%d", bannerPort)),
		filepath.Join(t.dir, "echo-"+name+".log"), "ready")
}

// backendAddrs returns the backend addresses of a key, as direct routing reaches them.
func (t *topo) backendAddrs(key string) []string {
	for _, k := range keys {
		if k.name == key {
			var out []string
			for i := 0; i < k.backends; i++ {
				out = append(out, fmt.Sprintf("%s:%d", t.beVeth[i].BIP, k.port))
			}
			return out
		}
	}
	return nil
}

// frontAddr is where the client reaches a forwarder's listener for key.
func (t *topo) frontAddr(key string) string {
	for _, k := range keys {
		if k.name == key {
			return fmt.Sprintf("%s:%d", t.front.BIP, k.front)
		}
	}
	return ""
}

// waitDirect waits until both backends answer through plain routing.
func (t *topo) waitDirect(ctx context.Context) error {
	return waitBackends(ctx, t.client, t.backendAddrs("banner"), []string{"be1", "be2"}, 10*time.Second)
}

// delayOn starts the delay line (once) and routes gw1<->gw2 traffic through it; delayOff
// routes it back over the veth. Connections open across the switch carry on: only the
// route changes, not the addresses.
func (t *topo) delayOn(ctx context.Context, d time.Duration) error {
	if t.delay != nil {
		t.delay.kill()
		t.delay = nil
	}
	var err error
	t.delay, err = startProc(exec.Command(t.self, "delayline",
		"-ns-a", "/run/netns/"+t.gw1.Netns(), "-if-a", "dl-gw2",
		"-ns-b", "/run/netns/"+t.gw2.Netns(), "-if-b", "dl-gw1",
		"-delay", d.String()), filepath.Join(t.dir, "delayline.log"), "ready")
	if err != nil {
		return fmt.Errorf("delay line: %w", err)
	}
	steps := [][]string{
		{"gw1", "link", "set", "dl-gw2", "up", "mtu", "1500"},
		{"gw2", "link", "set", "dl-gw1", "up", "mtu", "1500"},
		{"gw1", "route", "add", t.gw2IP + "/32", "dev", "dl-gw2", "src", t.gw1IP},
		{"gw1", "route", "replace", "default", "dev", "dl-gw2", "src", t.gw1IP},
		{"gw2", "route", "add", t.gw1IP + "/32", "dev", "dl-gw1", "src", t.gw2IP},
		{"gw2", "route", "replace", subnet(t.front.AIP), "dev", "dl-gw1", "src", t.gw2IP},
	}
	return t.ipSteps(steps)
}

func (t *topo) delayOff() error {
	steps := [][]string{
		{"gw1", "route", "del", t.gw2IP + "/32", "dev", "dl-gw2"},
		{"gw1", "route", "replace", "default", "via", t.gw2IP, "dev", t.gw1If},
		{"gw2", "route", "del", t.gw1IP + "/32", "dev", "dl-gw1"},
		{"gw2", "route", "replace", subnet(t.front.AIP), "via", t.gw1IP, "dev", t.gw2If},
	}
	err := t.ipSteps(steps)
	if t.delay != nil {
		t.delay.kill()
		t.delay = nil
	}
	return err
}

func (t *topo) ipSteps(steps [][]string) error {
	for _, s := range steps {
		site := t.gw1
		if s[0] == "gw2" {
			site = t.gw2
		}
		if err := site.IP(s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// close removes everything: helper processes, gateways, namespaces (and with them the veths
// and TUN devices).
func (t *topo) close() {
	for _, p := range []*proc{t.delay, t.iperf, t.echo[0], t.echo[1]} {
		if p != nil {
			p.kill()
		}
	}
	if t.lab != nil {
		if err := t.lab.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: cleanup: %v\n", err)
		}
	}
}

// proc is a helper process the benchmark started.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// startProc starts cmd with its output in logPath; with ready set, it waits until the
// process prints that line on stdout.
func startProc(cmd *exec.Cmd, logPath, ready string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	cmd.Stderr = logf
	var stdout io.ReadCloser
	if ready != "" {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			logf.Close()
			return nil, err
		}
	} else {
		cmd.Stdout = logf
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Args, err)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	if ready == "" {
		logf.Close() // the child has its own copy
		go func() { _ = cmd.Wait(); close(p.exited) }()
		return p, nil
	}
	got := make(chan bool, 1)
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			if !ok && strings.TrimSpace(sc.Text()) == ready {
				ok = true
				got <- true
			}
			fmt.Fprintln(logf, sc.Text())
		}
		if !ok {
			got <- false
		}
		_ = cmd.Wait()
		close(p.exited)
	}()
	select {
	case ok := <-got:
		if ok {
			return p, nil
		}
		<-p.exited
		return nil, fmt.Errorf("%s exited before it was ready (log %s)", cmd.Args, logPath)
	case <-time.After(10 * time.Second):
		p.kill()
		return nil, fmt.Errorf("%s not ready within 10s (log %s)", cmd.Args, logPath)
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// kill kills the whole process group at once and waits for the process.
func (p *proc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// stop asks politely (SIGTERM), then kills after 5 s.
func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		p.kill()
	}
}
