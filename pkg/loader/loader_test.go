package loader

import (
	"errors"
	"os"
	"testing"
)

func TestCheckKernel(t *testing.T) {
	cases := []struct {
		release string
		ok      bool
	}{
		{"6.18.44-fc-v669", true},
		{"6.4", true},
		{"6.4.0", true},
		{"7.0.1", true},
		{"6.1.32", true},
		{"6.1.119", true},
		{"6.1.31", false},
		{"6.1.0-28-amd64", false}, // a Debian ABI name alone says nothing of the patch level
		{"6.3.13", false},
		{"5.15.0-91-generic", false},
		{"garbage", false},
	}
	for _, c := range cases {
		err := CheckKernel(c.release)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrNotSupported)) {
			t.Errorf("CheckKernel(%q) = %v, want ok=%v", c.release, err, c.ok)
		}
	}
}

func TestKernelVersionReadsDebianPatchLevel(t *testing.T) {
	proc := "Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)"
	if v := KernelVersion("6.1.0-28-amd64", proc); v != "6.1.119" {
		t.Fatalf("got %q, want 6.1.119", v)
	}
	if v := KernelVersion("6.18.44-fc-v669", "Linux version 6.18.44-fc-v669 (root@build) #1 SMP"); v != "6.18.44-fc-v669" {
		t.Fatalf("got %q", v)
	}
}

// TestLoad loads and attaches the real objects. Root can load them on every kernel this
// project supports, so as root a failure here is a failure, never a skip.
func TestLoad(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF, CAP_NET_ADMIN) to load BPF objects; CI runs as root")
	}
	o, err := Load(Options{MaxSockets: 1024, MaxCounts: 256})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	defer o.Close()
	if got := o.Sockets().MaxEntries(); got != 1024 {
		t.Errorf("sockets map has %d entries, want the 1024 asked for", got)
	}
	if got := o.OpenCounts().MaxEntries(); got != 256 {
		t.Errorf("open_counts map has %d entries, want 256", got)
	}
}
