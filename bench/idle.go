package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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

// idleSettle: how long the forwarders are left alone before a memory snapshot, so that what
// a burst of setups took and gave back (a Go heap's garbage, HAProxy's buffers) has settled.
const idleSettle = 2 * time.Second

// idle holds plan.IdleConns connections open and silent through the forwarder (each sent 64 B
// and read the echo first) and measures what each gateway's forwarder process holds for them:
// its memory (Pss) and descriptors, per connection, and the machine's kernel slab (sockets
// live there) per connection. Then some of them echo again, they all close, and each process
// must give its descriptors back; the memory it still holds then is a row too.
//
// It runs first on a fresh forwarder (first in the workload table): after a bulk or
// connection-rate run, a Go process keeps freed heap that new connections would reuse
// without growing, and the difference would hide their cost.
func idle(ctx context.Context, r *runCtx) ([]measure, error) {
	n := r.plan.IdleConns
	pids := r.inst.pids()
	var raw struct {
		Setup      loadResult     `json:"setup"`
		Check      loadResult     `json:"check"`
		Before     memSnap        `json:"before"`
		Hold       memSnap        `json:"hold"`
		After      memSnap        `json:"after_close"`
		Goroutines map[string]int `json:"goroutines,omitempty"` // skfwd gateways, while held
	}
	var err error
	if raw.Before, err = snapMem(pids); err != nil {
		return nil, err
	}
	c, err := startIdleClient(r.t.client, r.t.self, "-addrs", strings.Join(r.inst.addrs("echo"), ","),
		"-conns", fmt.Sprint(n))
	if err != nil {
		return nil, err
	}
	defer c.kill()
	defer r.save("idle.json", &raw)
	// Opening takes a few seconds at the slowest forwarder's rate (~1000/s).
	if raw.Setup, err = c.next(ctx, 60*time.Second+time.Duration(n)*5*time.Millisecond); err != nil {
		return nil, fmt.Errorf("opening the idle connections: %w", err)
	}
	if raw.Setup.Conns != n {
		return nil, fmt.Errorf("%d of %d idle connections opened (%d errors: %v)", raw.Setup.Conns, n, raw.Setup.Errors, raw.Setup.FirstErrs)
	}
	if err := sleep(ctx, idleSettle); err != nil {
		return nil, err
	}
	if raw.Hold, err = snapMem(pids); err != nil {
		return nil, err
	}
	raw.Goroutines = r.inst.profile(r.dir, "idle")
	if err := c.send("check"); err != nil {
		return nil, err
	}
	if raw.Check, err = c.next(ctx, 60*time.Second); err != nil {
		return nil, fmt.Errorf("checking the idle connections: %w", err)
	}
	if raw.Check.Errors > 0 || raw.Check.Conns == 0 {
		return nil, fmt.Errorf("idle connections broken after %v: %d failed (%v)", idleSettle, raw.Check.Errors, raw.Check.FirstErrs)
	}
	if err := c.send("close"); err != nil {
		return nil, err
	}
	if _, err := c.next(ctx, 30*time.Second); err != nil {
		return nil, fmt.Errorf("closing the idle connections: %w", err)
	}
	if len(pids) > 0 {
		if _, err := waitReleased(ctx, pids, raw.Before, 15*time.Second); err != nil {
			return nil, err
		}
	}
	if err := sleep(ctx, idleSettle); err != nil {
		return nil, err
	}
	if raw.After, err = snapMem(pids); err != nil {
		return nil, err
	}
	return idleMeasures(raw.Before, raw.Hold, raw.After, n), nil
}

// idleClient drives `bench load -mode idle` in the client namespace: it reads the lines the
// client prints and sends it commands.
type idleClient struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	lines  chan string
	exited chan struct{}
	stderr bytes.Buffer
}

func startIdleClient(site *netlab.Site, self string, args ...string) (*idleClient, error) {
	c := &idleClient{cmd: site.Command(self, append([]string{"load", "-mode", "idle"}, args...)...),
		lines: make(chan string, 4), exited: make(chan struct{})}
	c.cmd.Stderr = &c.stderr
	var err error
	if c.in, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// next waits for the client's next line: a loadResult, or an empty line (closed).
func (c *idleClient) next(ctx context.Context, timeout time.Duration) (loadResult, error) {
	var res loadResult
	select {
	case l := <-c.lines:
		if l == "" {
			return res, nil
		}
		if err := json.Unmarshal([]byte(l), &res); err != nil {
			return res, fmt.Errorf("idle client output: %w", err)
		}
		return res, nil
	case <-c.exited:
		return res, fmt.Errorf("idle client exited: %s: %s", c.cmd.ProcessState, tail(c.stderr.String()))
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(timeout):
		return res, fmt.Errorf("idle client silent for %v", timeout)
	}
}

func (c *idleClient) send(cmd string) error {
	_, err := fmt.Fprintln(c.in, cmd)
	return err
}

// kill ends the client (and so its connections) if it still runs, and waits for it.
func (c *idleClient) kill() {
	c.in.Close()
	select {
	case <-c.exited:
		return
	case <-time.After(5 * time.Second):
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	for {
		select {
		case <-c.exited:
			return
		case <-c.lines: // drain, so the reader reaches Wait
		}
	}
}

// profile records what skfwd's gateways hold now: their goroutine counts (from status),
// and with SKFWD_PPROF=on their heap profiles, saved in dir as <tag>-<site>-heap.pb.gz (for
// `go tool pprof`) and .txt. Other forwarders: nothing.
func (i *instance) profile(dir, tag string) map[string]int {
	if len(i.sites) == 0 {
		return nil
	}
	out := map[string]int{}
	for _, s := range i.sites {
		if st, err := s.Status(); err == nil {
			out[s.Name] = st.Goroutines
		}
		if os.Getenv("SKFWD_PPROF") != "on" {
			continue
		}
		// The profile for `go tool pprof`, and its text form, which ends with the runtime's
		// MemStats (heap in use, goroutine stacks in use).
		for path, name := range map[string]string{"/debug/pprof/heap": "heap.pb.gz", "/debug/pprof/heap?debug=1": "heap.txt"} {
			if err := saveAdmin(s, path, filepath.Join(dir, tag+"-"+s.Name+"-"+name)); err != nil {
				fmt.Fprintf(os.Stderr, "bench: heap profile of %s: %v\n", s.Name, err)
			}
		}
	}
	return out
}

// saveAdmin saves what the skfwd site's admin address serves at path in file.
func saveAdmin(s *netlab.Site, path, file string) error {
	resp, err := s.AdminGet(path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}
