package netlab

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// netns is one network namespace the lab made.
type netns struct {
	name string
	fd   int // open handle, so Do can enter it without a path lookup
}

func newNetns(name string) (*netns, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	ns := &netns{name: name, fd: fd}
	if err := ns.ip("link", "set", "lo", "up"); err != nil {
		ns.remove()
		return nil, err
	}
	return ns, nil
}

// ip runs an ip(8) command inside the namespace.
func (ns *netns) ip(args ...string) error {
	full := append([]string{"-n", ns.name}, args...)
	if out, err := exec.Command("ip", full...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(full, " "), err, out)
	}
	return nil
}

// Do runs f on an OS thread that is inside the namespace. Sockets keep the namespace they
// were made in, so a listener or connection created in f lives there afterwards.
func (ns *netns) Do(f func() error) error {
	errc := make(chan error, 1)
	// A fresh goroutine: if switching back fails, its thread stays locked and dies with it
	// instead of returning to the scheduler inside the wrong namespace.
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns.name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave netns %s: %w", ns.name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func (ns *netns) remove() {
	unix.Close(ns.fd)
	_ = exec.Command("ip", "netns", "del", ns.name).Run()
}

// RemoveStale deletes namespaces left by earlier runs whose process is gone (a test binary
// killed mid-run cannot clean up after itself).
func RemoveStale() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		var pid, lab int
		var site string
		if n, _ := fmt.Sscanf(strings.ReplaceAll(e.Name(), "-", " "), prefix+"%d %d %s", &pid, &lab, &site); n < 2 {
			continue
		}
		if unix.Kill(pid, 0) == nil {
			continue // still running: not ours to remove
		}
		_ = exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// Namespaces lists the namespaces of this process's labs that still exist.
func Namespaces() []string {
	entries, _ := os.ReadDir("/run/netns")
	mine := fmt.Sprintf("%s%d-", prefix, os.Getpid())
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), mine) {
			out = append(out, e.Name())
		}
	}
	return out
}
