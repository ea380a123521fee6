package workers

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/skfwd/skfwd/internal/leakcheck"
)

// TestWorkersAreReused: tasks given one after another run on one worker, which stays idle
// between them.
func TestWorkersAreReused(t *testing.T) {
	leakcheck.Goroutines(t, 5*time.Second)
	p := New(time.Minute, 100)
	defer p.Close()
	ids := make(chan int64, 10)
	for i := 0; i < 10; i++ {
		done := make(chan struct{})
		p.Go(func() { ids <- goid(); close(done) })
		<-done
		waitIdle(t, p, 1)
		// A worker counts itself idle just before it waits for the next task: a task given in
		// between goes to a new worker (correct, not what this test is about), so let it wait.
		time.Sleep(10 * time.Millisecond)
	}
	first := <-ids
	for i := 1; i < 10; i++ {
		if id := <-ids; id != first {
			t.Fatalf("task %d ran on goroutine %d, the first on %d: the worker was not reused", i, id, first)
		}
	}
}

// TestConcurrentTasksGetTheirOwnWorkers: Go never waits for a busy worker.
func TestConcurrentTasksGetTheirOwnWorkers(t *testing.T) {
	leakcheck.Goroutines(t, 5*time.Second)
	p := New(time.Minute, 100)
	defer p.Close()
	const n = 50
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(n)
	for i := 0; i < n; i++ {
		p.Go(func() { started.Done(); <-release })
	}
	started.Wait() // every task runs at once, or this never returns
	close(release)
	waitIdle(t, p, n)
}

// TestIdleWorkersEnd: a worker left without a task ends after the idle time.
func TestIdleWorkersEnd(t *testing.T) {
	leakcheck.Goroutines(t, 5*time.Second)
	p := New(50*time.Millisecond, 100)
	defer p.Close()
	for i := 0; i < 5; i++ {
		p.Go(func() { time.Sleep(10 * time.Millisecond) })
	}
	waitIdle(t, p, 5)
	waitIdle(t, p, 0)
}

func waitIdle(t *testing.T, p *Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Idle() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle workers, want %d", p.Idle(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// goid is the calling goroutine's id, from its stack header ("goroutine 7 [running]:").
func goid() int64 {
	var buf [64]byte
	s := buf[:runtime.Stack(buf[:], false)]
	s = bytes.TrimPrefix(s, []byte("goroutine "))
	id, _ := strconv.ParseInt(string(s[:bytes.IndexByte(s, ' ')]), 10, 64)
	return id
}

// TestIdleWorkersAreCapped: after a burst, no more than maxIdle workers wait.
func TestIdleWorkersAreCapped(t *testing.T) {
	leakcheck.Goroutines(t, 5*time.Second)
	p := New(time.Minute, 3)
	defer p.Close()
	release := make(chan struct{})
	var started, done sync.WaitGroup
	started.Add(10)
	done.Add(10)
	for i := 0; i < 10; i++ {
		p.Go(func() { started.Done(); <-release; done.Done() })
	}
	started.Wait()
	close(release)
	done.Wait()
	waitIdle(t, p, 3)
	time.Sleep(20 * time.Millisecond)
	if n := p.Idle(); n != 3 {
		t.Errorf("%d idle workers after a burst of 10, want the cap of 3", n)
	}
}
