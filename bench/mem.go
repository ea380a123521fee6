package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// kibField reads the value of a "Key:   123 kB" line, as /proc/PID/status, /proc/PID/smaps_rollup
// and /proc/meminfo write them, in KiB.
func kibField(text, key string) (int64, error) {
	for _, l := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s: unexpected value %q", key, strings.TrimSpace(v))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", key, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("no %s line", key)
}

// procMemory is a process's memory in KiB: its proportional set size (Pss, from smaps_rollup:
// pages shared with other processes, such as the two gateways' copies of the skfwd binary,
// count by their share), or its resident set (VmRSS) on a kernel without smaps_rollup.
func procMemory(pid int) (int64, error) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
		return kibField(string(b), "Pss")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return kibField(string(b), "VmRSS")
}

// procMem is one forwarder process's memory (KiB) and open descriptors.
type procMem struct {
	KiB int64 `json:"kib"`
	FDs int   `json:"fds"`
}

// memSnap is the memory held now: by each forwarder process (gw1's then gw2's) and by the
// whole machine's unreclaimable kernel slab (SUnreclaim: TCP sockets, open files, epoll
// entries live there; the reclaimable part, dentry and inode caches, the kernel shrinks
// whenever it likes, and in a run of 500 connections that noise alone once took the figure
// below zero).
type memSnap struct {
	Procs []procMem `json:"procs"`
	Slab  int64     `json:"sunreclaim_kib"`
}

func snapMem(pids []int) (memSnap, error) {
	var s memSnap
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return s, err
	}
	if s.Slab, err = kibField(string(b), "SUnreclaim"); err != nil {
		return s, fmt.Errorf("/proc/meminfo: %w", err)
	}
	for _, pid := range pids {
		kib, err := procMemory(pid)
		if err != nil {
			return s, fmt.Errorf("forwarder process %d: %w", pid, err)
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			return s, fmt.Errorf("forwarder process %d: %w", pid, err)
		}
		s.Procs = append(s.Procs, procMem{kib, len(fds)})
	}
	return s, nil
}

// idleMeasures turns the snapshots of the idle workload into its rows: before the clients
// connected, while n of them were held, and after they closed and the forwarders let go.
func idleMeasures(before, hold, after memSnap, n int) []measure {
	per := func(d int64) float64 { return float64(d) / float64(n) }
	m := []measure{{"idle_slab", per(hold.Slab - before.Slab)}}
	if len(before.Procs) != 2 || len(hold.Procs) != 2 || len(after.Procs) != 2 {
		return m // no forwarder (direct routing): only the kernel's share
	}
	var fds int
	var kept int64
	for i, id := range []string{"idle_gw1", "idle_gw2"} {
		m = append(m, measure{id, per(hold.Procs[i].KiB - before.Procs[i].KiB)})
		fds += hold.Procs[i].FDs - before.Procs[i].FDs
		kept += after.Procs[i].KiB - before.Procs[i].KiB
	}
	return append(m, measure{"idle_fds", per(int64(fds))}, measure{"idle_kept", float64(kept) / 1024})
}

// releasedSlack: descriptors a forwarder may hold above its count before the idle clients
// came (health checks, probes, skfwd's tunnel pools) and still count as having let go.
const releasedSlack = 32

// waitReleased waits until every forwarder process holds no more descriptors than before
// the idle clients came (within releasedSlack), and returns the snapshot that showed it.
func waitReleased(ctx context.Context, pids []int, before memSnap, timeout time.Duration) (memSnap, error) {
	deadline := time.Now().Add(timeout)
	for {
		s, err := snapMem(pids)
		if err != nil {
			return s, err
		}
		held := ""
		for i, p := range s.Procs {
			if extra := p.FDs - before.Procs[i].FDs; extra > releasedSlack {
				held += fmt.Sprintf(" %s %d more", []string{"gw1", "gw2"}[i], extra)
			}
		}
		if held == "" {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("descriptors not released %v after the idle clients closed:%s", timeout, held)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return s, err
		}
	}
}
