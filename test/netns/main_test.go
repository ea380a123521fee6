// Package netns holds skfwd's integration tests: real multi-site networks in network
// namespaces, driving the skfwd binary end to end. They need root; run as another user they
// skip, and say so.
package netns

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
	"github.com/skfwd/skfwd/pkg/gateway"
)

var skfwdBin string

// dataPath is the data path every gateway of this run uses: the suite runs once per mode
// (make test-netns loops over them), so each test covers userspace, auto and sockmap.
var dataPath = os.Getenv("SKFWD_TEST_DATA_PATH")

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("SKIP test/netns: needs root for network namespaces (CI runs as root)")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "skfwd-netns-")
	if err != nil {
		panic(err)
	}
	// The gateways run race-enabled: a data race under real traffic exits 66, which fails the
	// test that stops the site. The race runtime's default 1 s pause at exit only slows us.
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	// A machine without a Go toolchain (the VM of make vm-test) gets a binary built elsewhere.
	skfwdBin = os.Getenv("SKFWD_TEST_SKFWD_BIN")
	if skfwdBin == "" {
		skfwdBin = filepath.Join(dir, "skfwd")
		if out, err := exec.Command("go", "build", "-race", "-o", skfwdBin, "../../cmd/skfwd").CombinedOutput(); err != nil {
			fmt.Printf("build skfwd: %v\n%s", err, out)
			os.Exit(1)
		}
	} else if _, err := os.Stat(skfwdBin); err != nil {
		fmt.Printf("SKFWD_TEST_SKFWD_BIN: %v (set it to a built skfwd binary, or unset it to build one)\n", err)
		os.Exit(1)
	}
	if dataPath == "" {
		dataPath = "userspace"
	}
	fmt.Printf("test/netns: every gateway runs with data-path %s\n", dataPath)
	netlab.RemoveStale()
	code := m.Run()
	if left := netlab.Namespaces(); len(left) > 0 {
		fmt.Printf("FAIL: namespaces left behind: %v\n", left)
		code = 1
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// newLab returns a lab removed (with a leak check) when the test ends.
func newLab(t *testing.T) *netlab.Lab {
	t.Helper()
	goroutinesBefore := runtime.NumGoroutine()
	// Default settings but the data path, so the 4 MiB backlog bound demotes some bulk
	// transfers of this suite in the middle of their checksummed streams (a few per run).
	lab := netlab.New(skfwdBin, t.TempDir(), map[string]string{"data-path": dataPath})
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
		if left := netlab.Namespaces(); len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
		}
		// Backends and clients ran in this process: none of their goroutines may survive.
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > goroutinesBefore && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > goroutinesBefore {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines leaked in the test process:\n%s", n-goroutinesBefore, buf[:runtime.Stack(buf, true)])
		}
	})
	return lab
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func site(t *testing.T, lab *netlab.Lab, name string) *netlab.Site {
	t.Helper()
	return must[*netlab.Site](t)(lab.Site(name))
}

func link(t *testing.T, lab *netlab.Lab, dialer, acceptor *netlab.Site, cost int) (string, string) {
	t.Helper()
	a, b, err := lab.Link(dialer, acceptor, cost)
	check(t, err)
	return a, b
}

func backend(t *testing.T, s *netlab.Site, name, addr string) *netlab.Backend {
	t.Helper()
	b := must[*netlab.Backend](t)(netlab.StartBackend(s, name, addr))
	t.Cleanup(b.Close)
	return b
}

// pairNet is the smallest network: site a offers the service, site b runs its backend
// (answering "b"), and one link runs from a to b.
type pairNet struct {
	a, b    *netlab.Site
	backend *netlab.Backend
	link    string // the link's name at a
}

// twoSites builds and starts a pairNet with a link of cost 1. configure, if not nil, runs
// before the sites start (settings, more links, a run prefix); b starts first, so that a's
// link finds it listening.
func twoSites(t *testing.T, lab *netlab.Lab, configure func(a, b *netlab.Site)) pairNet {
	t.Helper()
	n := pairNet{a: site(t, lab, "a"), b: site(t, lab, "b")}
	n.link, _ = link(t, lab, n.a, n.b, 1)
	n.a.Listener("backend", svc, svcPort)
	n.b.Connector("backend", svc, beAddr)
	n.backend = backend(t, n.b, "b", beAddr)
	if configure != nil {
		configure(n.a, n.b)
	}
	start(t, n.b, n.a)
	return n
}

func start(t *testing.T, sites ...*netlab.Site) {
	t.Helper()
	for _, s := range sites {
		check(t, s.Start())
	}
}

// quiesced waits until a site serves nothing: no connection in progress, no tunnel in use,
// no open count left, and no goroutine beyond those of its idle tunnel pools and workers.
func quiesced(t *testing.T, s *netlab.Site, baseline gateway.Status) {
	t.Helper()
	err := s.WaitFor(5*time.Second, "no connections, tunnels or goroutines left", func(st gateway.Status) bool {
		if st.InProgress != 0 {
			return false
		}
		for _, l := range st.Links {
			if l.Active != 0 {
				return false
			}
		}
		for _, svc := range st.Services {
			for _, c := range svc.Candidates {
				if c.Open != 0 {
					return false
				}
			}
		}
		// Each tunnel waiting for the peer's request has one goroutine; pools may have grown.
		busy := st.Goroutines - st.IdleWorkers
		return busy <= baseline.Goroutines-baseline.IdleWorkers+peerTunnels(st)-peerTunnels(baseline)+3
	})
	check(t, err)
}

func peerTunnels(st gateway.Status) int {
	n := 0
	for _, l := range st.Links {
		n += l.PeerTunnels
	}
	return n
}
