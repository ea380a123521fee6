package netlab

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// Plain networking for sites that run no gateway (clients, backends) and for programs other
// than skfwd (the benchmark's HAProxy, iperf3 and delay line): plain veth pairs, routes,
// sysctls and commands inside a site's namespace.

// Veth is a veth pair between two sites, with one address at each end (a /24 of its own).
type Veth struct {
	AIf, BIf string // interface names, in site A's and site B's namespace
	AIP, BIP string
}

// Veth joins a and b with a new veth pair and addresses, without any skfwd link.
func (l *Lab) Veth(a, b *Site) (Veth, error) {
	l.mu.Lock()
	l.subnet++
	n := l.subnet
	l.mu.Unlock()
	v := Veth{
		AIf: fmt.Sprintf("v%d-%.8s", n, b.Name), BIf: fmt.Sprintf("v%d-%.8s", n, a.Name),
		AIP: fmt.Sprintf("10.199.%d.1", n), BIP: fmt.Sprintf("10.199.%d.2", n),
	}
	if out, err := exec.Command("ip", "link", "add", v.AIf, "netns", a.ns.name, "type", "veth",
		"peer", "name", v.BIf, "netns", b.ns.name).CombinedOutput(); err != nil {
		return Veth{}, fmt.Errorf("add veth: %v: %s", err, out)
	}
	for _, c := range []struct {
		s          *Site
		ifname, ip string
	}{{a, v.AIf, v.AIP}, {b, v.BIf, v.BIP}} {
		if err := c.s.ns.ip("addr", "add", c.ip+"/24", "dev", c.ifname); err != nil {
			return Veth{}, err
		}
		if err := c.s.ns.ip("link", "set", c.ifname, "up"); err != nil {
			return Veth{}, err
		}
	}
	return v, nil
}

// IP runs an ip(8) command inside the site's namespace.
func (s *Site) IP(args ...string) error { return s.ns.ip(args...) }

// IfAddr returns the first IPv4 address of an interface of the site.
func (s *Site) IfAddr(ifname string) (string, error) {
	out, err := exec.Command("ip", "-n", s.ns.name, "-4", "-o", "addr", "show", "dev", ifname).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip addr show %s in %s: %v: %s", ifname, s.ns.name, err, out)
	}
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "inet" && i+1 < len(f) {
			return strings.SplitN(f[i+1], "/", 2)[0], nil
		}
	}
	return "", fmt.Errorf("no IPv4 address on %s in %s", ifname, s.ns.name)
}

// Sysctl sets a network sysctl of the site's namespace, key as in sysctl(8): "net.ipv4.ip_forward".
func (s *Site) Sysctl(key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	return s.Do(func() error {
		// /proc/sys/net shows the namespace of the thread that opens it, which Do has entered.
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, s.ns.name, err)
		}
		return nil
	})
}

// Command returns a command that runs inside the site's namespace, in its own process group
// and killed with the calling process, so nothing it starts can outlive the lab's owner.
func (s *Site) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", s.ns.name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Pid returns the process id of the site's running gateway, 0 when none runs. (`ip netns
// exec` execs the gateway, so this is skfwd itself.)
func (s *Site) Pid() int {
	if !s.Running() {
		return 0
	}
	return s.cmd.Process.Pid
}
