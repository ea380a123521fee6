package netns

import (
	"strings"
	"testing"

	"github.com/skfwd/skfwd/internal/netlab"
	"github.com/skfwd/skfwd/pkg/gateway"
)

// withoutBPFPrivileges runs a gateway as root but without the capabilities the kernel path
// needs: dropped from the bounding set, so the exec'd skfwd never gets them.
var withoutBPFPrivileges = []string{"setpriv", "--bounding-set=-bpf,-net_admin,-sys_admin,-perfmon", "--"}

// TestKernelPathFallbackWithoutPrivileges: where BPF cannot load, data-path auto runs the
// userspace path, says why in one log line and in status, and forwards intact; data-path
// sockmap refuses to start instead of falling back silently.
func TestKernelPathFallbackWithoutPrivileges(t *testing.T) {
	lab := newLab(t)
	n := twoSites(t, lab, func(a, b *netlab.Site) {
		a.Set("data-path", "auto")
		a.RunPrefix = withoutBPFPrivileges
	})
	a := n.a
	check(t, a.WaitCandidates(converged, svc, "b"))

	st := must[gateway.Status](t)(a.Status())
	if st.DataPath != "userspace" || !strings.Contains(st.DataPathNote, "needs CAP_BPF and CAP_NET_ADMIN") {
		t.Fatalf("status: data path %q, note %q; want userspace and a note naming the missing capabilities", st.DataPath, st.DataPathNote)
	}
	if !logContains(a.LogPath, `data path: userspace (splice); the kernel path is not available here`) {
		t.Fatalf("no fallback log line in %s", a.LogPath)
	}
	c, name, err := netlab.Hold(a, svcAddr, timeout)
	check(t, err)
	defer c.Close()
	if name != "b" {
		t.Fatalf("connection went to %s, want b", name)
	}
	check(t, netlab.Xfer(c, 16<<20, 16<<20, 3, 4))

	t.Run("sockmap refuses to start", func(t *testing.T) {
		s := site(t, lab, "s")
		s.Set("data-path", "sockmap")
		s.RunPrefix = withoutBPFPrivileges
		err := s.Start()
		if err == nil {
			t.Fatal("data-path sockmap started without the privileges BPF needs")
		}
		if !strings.Contains(err.Error(), "data path not available; use data-path auto or userspace") {
			t.Fatalf("start failed without the expected reason: %v", err)
		}
	})
}
