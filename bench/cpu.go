package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/stat and /proc/PID/stat (100 on every Linux
// architecture Go supports).
const clockTicks = 100

// machineBusy parses /proc/stat's first line: the CPU time of the whole machine, in seconds,
// that was not idle (user, nice, system, irq, softirq, steal; not idle or iowait).
func machineBusy(procStat string) (float64, error) {
	line, _, _ := strings.Cut(procStat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat first line %q", line)
	}
	var busy uint64
	for i, v := range f[1:9] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat field %d: %w", i+1, err)
		}
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		busy += n
	}
	return float64(busy) / clockTicks, nil
}

// processCPU parses /proc/PID/stat: utime + stime of the process (all its threads), in
// seconds. The command name may hold spaces and parentheses, so fields count from the last ')'.
func processCPU(pidStat string) (float64, error) {
	i := strings.LastIndexByte(pidStat, ')')
	if i < 0 {
		return 0, errors.New("no ')' in /proc/PID/stat")
	}
	f := strings.Fields(pidStat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/PID/stat: %q", pidStat)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/PID/stat times: %w", err)
	}
	return float64(u+s) / clockTicks, nil
}

// cpuSnap is the CPU time used so far: by the whole machine, and by the forwarder's processes.
type cpuSnap struct {
	machine, fwd float64
}

func snapCPU(pids []int) (cpuSnap, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSnap{}, err
	}
	var s cpuSnap
	if s.machine, err = machineBusy(string(b)); err != nil {
		return s, err
	}
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return s, fmt.Errorf("forwarder process %d: %w", pid, err)
		}
		c, err := processCPU(string(b))
		if err != nil {
			return s, err
		}
		s.fwd += c
	}
	return s, nil
}

func (a cpuSnap) since(b cpuSnap) cpuSnap {
	return cpuSnap{machine: a.machine - b.machine, fwd: a.fwd - b.fwd}
}
