// Package loader loads, checks and attaches the BPF objects of skfwd's kernel data path
// (bpf/skfwd.c, compiled by bpf2go into skfwd_bpfel.{go,o}), and says precisely why it could
// not: a missing capability, a kernel feature or version, or the verifier's full log.
package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Errors callers branch on.
var (
	// ErrNotSupported: this kernel cannot run the kernel data path (feature or version).
	ErrNotSupported = errors.New("kernel data path not supported by this kernel")
	// ErrPermission: the process lacks a capability the kernel data path needs.
	ErrPermission = errors.New("kernel data path needs CAP_BPF and CAP_NET_ADMIN (or root)")
)

// Capabilities the kernel data path needs, as data for docs and checks.
var Capabilities = []string{"CAP_BPF", "CAP_NET_ADMIN"}

// Options size the maps.
type Options struct {
	// MaxSockets bounds the promoted sockets (two per connection). 0: the compiled default.
	MaxSockets uint32
	// MaxCounts bounds the (routing key, target) pairs with open connections. 0: default.
	MaxCounts uint32
	// MaxCuts bounds the cuts the verdict may make in one retransmitted segment (4095 bytes
	// each). 0: the compiled default, 64; tests lower it to reach the verdict's drop path.
	MaxCuts uint32
}

// Objects are the loaded and attached programs and maps. Close releases all of them.
type Objects struct {
	objs  skfwdObjects
	trims bool
	// leaver is the sock_ops program's attachment to our cgroup; nil where it could not be
	// made (see LeavesUnderLock).
	leaver    link.Link
	leaverErr error
}

// Direction mirrors struct direction in bpf/skfwd.c.
type Direction = skfwdDirection

// OpenKey mirrors struct open_key in bpf/skfwd.c.
type OpenKey = skfwdOpenKey

// Limit mirrors struct limit in bpf/skfwd.c.
type Limit = skfwdLimit

// Load checks the kernel, loads the objects and attaches the verdict program. Every resource
// is released on any error path.
func Load(opts Options) (o *Objects, err error) {
	if err := Probe(); err != nil {
		return nil, err
	}
	spec, err := loadSkfwd()
	if err != nil {
		return nil, fmt.Errorf("read BPF object: %w", err)
	}
	if opts.MaxSockets > 0 {
		for _, name := range []string{"targets", "sockets", "directions", "limits", "leaving"} {
			spec.Maps[name].MaxEntries = opts.MaxSockets
		}
	}
	if opts.MaxCounts > 0 {
		spec.Maps["open_counts"].MaxEntries = opts.MaxCounts
	}
	if opts.MaxCuts > 0 {
		if err := spec.Variables["max_cuts"].Set(opts.MaxCuts); err != nil {
			return nil, fmt.Errorf("set max_cuts: %w", err)
		}
	}
	o = &Objects{trims: kernelHas("bpf_cast_to_kern_ctx", "bpf_rdonly_cast")}
	if err := spec.LoadAndAssign(&o.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			// The verifier's whole log: the last line alone rarely says why.
			return nil, fmt.Errorf("load BPF objects: %+v", ve)
		}
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("load BPF objects: %w: %v", ErrPermission, err)
		}
		return nil, fmt.Errorf("load BPF objects: %w", err)
	}
	defer func() {
		if err != nil {
			o.objs.Close()
		}
	}()
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target:  o.objs.Sockets.FD(),
		Program: o.objs.SkfwdVerdict,
		Attach:  ebpf.AttachSkSKBStreamVerdict,
	}); err != nil {
		return nil, fmt.Errorf("attach stream verdict program: %w", err)
	}
	o.leaver, o.leaverErr = attachToOwnCgroup(o.objs.SkfwdSockops)
	return o, nil
}

// LeavesUnderLock reports whether demotions can take a socket out of the verdict map from
// the sock_ops program, under the socket's lock (bpf/skfwd.c, leaving), and if not, why. That
// needs cgroup v2, where the program attaches to the cgroup skfwd runs in.
func (o *Objects) LeavesUnderLock() error {
	return o.leaverErr
}

// attachToOwnCgroup attaches prog as sock_ops to the cgroup v2 group of this process, which
// covers the sockets it creates and accepts.
func attachToOwnCgroup(prog *ebpf.Program) (link.Link, error) {
	rel, err := ownCgroup()
	if err != nil {
		return nil, err
	}
	root, unmount, err := cgroup2Root()
	if err != nil {
		return nil, err
	}
	defer unmount()
	dir := filepath.Join(root, rel)
	l, err := link.AttachCgroup(link.CgroupOptions{Path: dir, Attach: ebpf.AttachCGroupSockOps, Program: prog})
	if err != nil {
		return nil, fmt.Errorf("attach sock_ops program to cgroup %s: %w", dir, err)
	}
	return l, nil
}

// ownCgroup is this process's cgroup v2 group: the "0::" line of /proc/self/cgroup.
func ownCgroup() (string, error) {
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(cg), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return path, nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

// cgroup2Root finds where the cgroup2 file system is mounted. Where it is not (a mount
// namespace of its own, as "ip netns exec" makes, remounts /sys without it), it mounts it on
// a directory of its own, long enough to attach: the attachment belongs to the cgroup, not to
// the mount, and unmount removes the mount and the directory again.
func cgroup2Root() (root string, unmount func(), err error) {
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", nil, err
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		// mountinfo: ID parent major:minor root mountpoint options... - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 5 {
			return f[4], func() {}, nil
		}
	}
	dir, err := os.MkdirTemp("", "skfwd-cgroup2-")
	if err != nil {
		return "", nil, err
	}
	if err := unix.Mount("cgroup2", dir, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		os.Remove(dir)
		return "", nil, fmt.Errorf("cgroup v2 is not mounted here, and mounting it failed: %w", err)
	}
	return dir, func() {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		os.Remove(dir)
	}, nil
}

// TrimsRetransmissions reports whether the verdict can cut off the front of a retransmitted
// segment that TCP had already passed on (bpf/skfwd.c, overlap()). It needs two kfuncs of
// Linux 6.2; without them such bytes reach the peer twice, and the end-of-stream accounting
// (pkg/datapath) resets the connection.
func (o *Objects) TrimsRetransmissions() bool { return o.trims }

// kernelHas reports whether the running kernel's BTF declares every named function.
func kernelHas(funcs ...string) bool {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return false
	}
	for _, name := range funcs {
		var fn *btf.Func
		if spec.TypeByName(name, &fn) != nil {
			return false
		}
	}
	return true
}

// Close detaches and releases everything. Sockets still in the maps leave them.
func (o *Objects) Close() error {
	if o.leaver != nil {
		o.leaver.Close()
	}
	return o.objs.Close()
}

// Leaving is the map through which demotions ask the sock_ops program to take a socket out of
// the verdict map (values LeaveAsked, LeaveDone).
func (o *Objects) Leaving() *ebpf.Map { return o.objs.Leaving }

// States of a Leaving entry, as in bpf/skfwd.c.
const (
	LeaveAsked uint32 = 0
	LeaveDone  uint32 = 1
)

// Targets is the program-less sockhash that redirects resolve against.
func (o *Objects) Targets() *ebpf.Map { return o.objs.Targets }

// Sockets is the sockhash that carries the verdict program.
func (o *Objects) Sockets() *ebpf.Map { return o.objs.Sockets }

// Directions holds one entry per promoted socket: its peer and byte counts.
func (o *Objects) Directions() *ebpf.Map { return o.objs.Directions }

// Limits holds, per promoted socket, the redirected count at which the verdict sends an event.
func (o *Objects) Limits() *ebpf.Map { return o.objs.Limits }

// Events is the ring buffer of cookies whose direction reached its limit.
func (o *Objects) Events() *ebpf.Map { return o.objs.Events }

// OpenCounts holds open connections per (routing key id, target id).
func (o *Objects) OpenCounts() *ebpf.Map { return o.objs.OpenCounts }

// Probe tells whether this kernel can run the kernel data path: the kernel version floor,
// then the map and program types and helpers it uses. A feature probe that cannot decide
// (neither supported nor ErrNotSupported) is an error of its own, reported as such.
func Probe() error {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	procVersion, _ := os.ReadFile("/proc/version")
	if err := CheckKernel(KernelVersion(unix.ByteSliceToString(uts.Release[:]), string(procVersion))); err != nil {
		return err
	}
	probes := []struct {
		what string
		err  func() error
	}{
		{"map type sockhash", func() error { return features.HaveMapType(ebpf.SockHash) }},
		{"program type sk_skb", func() error { return features.HaveProgramType(ebpf.SkSKB) }},
		{"helper bpf_sk_redirect_hash in sk_skb", func() error {
			return features.HaveProgramHelper(ebpf.SkSKB, asm.FnSkRedirectHash)
		}},
		{"helper bpf_get_socket_cookie in sk_skb", func() error {
			return features.HaveProgramHelper(ebpf.SkSKB, asm.FnGetSocketCookie)
		}},
		{"map type ringbuf", func() error { return features.HaveMapType(ebpf.RingBuf) }},
		{"helper bpf_ringbuf_output in sk_skb", func() error {
			return features.HaveProgramHelper(ebpf.SkSKB, asm.FnRingbufOutput)
		}},
	}
	for _, p := range probes {
		switch err := p.err(); {
		case err == nil:
		case errors.Is(err, ebpf.ErrNotSupported):
			return fmt.Errorf("%s: %w", p.what, ErrNotSupported)
		case errors.Is(err, unix.EPERM):
			return fmt.Errorf("probe %s: %w", p.what, ErrPermission)
		default:
			return fmt.Errorf("probe %s: inconclusive: %w", p.what, err)
		}
	}
	return nil
}

// CheckKernel applies the version floor: the sockmap stall fixes the kernel path relies on
// (the post-insert recv() and redirect retry behaviour) landed in 6.4 and were backported to
// 6.1.32; 6.2 and 6.3 never got them.
func CheckKernel(release string) error {
	major, minor, patch, ok := parseRelease(release)
	if !ok {
		return fmt.Errorf("kernel release %q not understood: %w", release, ErrNotSupported)
	}
	switch {
	case major > 6 || (major == 6 && minor >= 4):
		return nil
	case major == 6 && minor == 1 && patch >= 32:
		return nil
	}
	return fmt.Errorf("kernel %s is below the floor (6.1.32 on 6.1, else 6.4): %w", release, ErrNotSupported)
}

var debianVersion = regexp.MustCompile(`Debian (\d+\.\d+\.\d+)`)

// KernelVersion returns the kernel's version from its release (uname -r) and /proc/version.
// Debian names its kernels by ABI ("6.1.0-28-amd64" is really 6.1.119 or so); the real version
// then stands in /proc/version as "Debian 6.1.119-1".
func KernelVersion(release, procVersion string) string {
	// The compiler's version ("gcc-12 (Debian 12.2.0-14)") comes first; the kernel's is last.
	if m := debianVersion.FindAllStringSubmatch(procVersion, -1); m != nil {
		return m[len(m)-1][1]
	}
	return release
}

func parseRelease(r string) (major, minor, patch int, ok bool) {
	// "6.18.44-fc-v669", "6.1.119", "6.4".
	r, _, _ = strings.Cut(r, "-")
	parts := strings.SplitN(r, ".", 3)
	if len(parts) < 2 {
		return 0, 0, 0, false
	}
	var err error
	if major, err = strconv.Atoi(parts[0]); err != nil {
		return 0, 0, 0, false
	}
	if minor, err = strconv.Atoi(parts[1]); err != nil {
		return 0, 0, 0, false
	}
	if len(parts) == 3 {
		p := strings.TrimRightFunc(parts[2], func(c rune) bool { return c < '0' || c > '9' })
		if patch, err = strconv.Atoi(p); err != nil {
			return 0, 0, 0, false
		}
	}
	return major, minor, patch, true
}
