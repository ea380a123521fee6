// Package workers runs short tasks, such as serving one client connection, on goroutines
// that outlive their task and take the next one.
//
// A new goroutine starts on a small stack, and serving a connection (dialing, framing) grows
// it: in the connection-rate profile the copies of growing stacks were 8 % of each gateway's
// CPU. A worker that has served one connection serves the next on the stack it already has.
// Idle workers end after a while, and past a number at once, so a burst leaves nothing
// behind.
package workers

import (
	"sync"
	"sync/atomic"
	"time"
)

// Pool is a set of workers. The zero value is not usable: see New.
type Pool struct {
	tasks   chan func() // unbuffered: a send succeeds only when a worker is waiting
	stop    chan struct{}
	stopped sync.Once
	idleFor time.Duration
	maxIdle int64
	idle    atomic.Int64
	wg      sync.WaitGroup
}

// New returns a pool whose workers end after idleFor without a task; a worker that finds
// maxIdle others idle ends at once.
func New(idleFor time.Duration, maxIdle int) *Pool {
	return &Pool{tasks: make(chan func()), stop: make(chan struct{}), idleFor: idleFor, maxIdle: int64(maxIdle)}
}

// Go runs task on an idle worker, or on a new one when none is idle. It never waits.
func (p *Pool) Go(task func()) {
	select {
	case p.tasks <- task:
		return
	default:
	}
	p.wg.Add(1)
	go p.work(task)
}

// Idle is how many workers wait for a task.
func (p *Pool) Idle() int { return int(p.idle.Load()) }

// Close ends the idle workers, and each busy one after its task, and waits for them all.
// Tasks given after Close still run, each on a goroutine of its own.
func (p *Pool) Close() {
	p.stopped.Do(func() { close(p.stop) })
	p.wg.Wait()
}

// becomeIdle counts the caller idle, unless maxIdle workers already are.
func (p *Pool) becomeIdle() bool {
	for {
		n := p.idle.Load()
		if n >= p.maxIdle {
			return false
		}
		if p.idle.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (p *Pool) work(task func()) {
	defer p.wg.Done()
	var idle *time.Timer
	for {
		task()
		if !p.becomeIdle() {
			return
		}
		if idle == nil {
			idle = time.NewTimer(p.idleFor)
		} else {
			idle.Reset(p.idleFor)
		}
		select {
		case task = <-p.tasks:
			p.idle.Add(-1)
		case <-idle.C:
			p.idle.Add(-1)
			return
		case <-p.stop:
			p.idle.Add(-1)
			idle.Stop()
			return
		}
	}
}
