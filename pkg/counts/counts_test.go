package counts

import (
	"fmt"
	"sync"
	"testing"
)

type pair struct{ key, target string }

func TestAcquireOpenLen(t *testing.T) {
	tests := []struct {
		name     string
		acquire  []pair
		release  []int // indexes into acquire, released in this order
		wantOpen map[pair]int
		wantLen  int
	}{
		{
			name:     "empty table",
			wantOpen: map[pair]int{{"db", "a"}: 0},
			wantLen:  0,
		},
		{
			name:     "one connection",
			acquire:  []pair{{"db", "a"}},
			wantOpen: map[pair]int{{"db", "a"}: 1, {"db", "b"}: 0, {"web", "a"}: 0},
			wantLen:  1,
		},
		{
			name:     "same pair counts up",
			acquire:  []pair{{"db", "a"}, {"db", "a"}, {"db", "a"}},
			wantOpen: map[pair]int{{"db", "a"}: 3},
			wantLen:  1,
		},
		{
			name:     "key and target are both part of the pair",
			acquire:  []pair{{"db", "a"}, {"db", "b"}, {"web", "a"}, {"db", "b"}},
			wantOpen: map[pair]int{{"db", "a"}: 1, {"db", "b"}: 2, {"web", "a"}: 1, {"web", "b"}: 0},
			wantLen:  3,
		},
		{
			// A naive "key+target" string would make these two pairs collide.
			name:     "no collision between concatenations",
			acquire:  []pair{{"ab", "c"}, {"a", "bc"}},
			wantOpen: map[pair]int{{"ab", "c"}: 1, {"a", "bc"}: 1},
			wantLen:  2,
		},
		{
			name:     "release counts down",
			acquire:  []pair{{"db", "a"}, {"db", "a"}, {"db", "a"}},
			release:  []int{1},
			wantOpen: map[pair]int{{"db", "a"}: 2},
			wantLen:  1,
		},
		{
			name:     "releasing every connection of a pair removes it",
			acquire:  []pair{{"db", "a"}, {"db", "a"}, {"web", "b"}},
			release:  []int{0, 1},
			wantOpen: map[pair]int{{"db", "a"}: 0, {"web", "b"}: 1},
			wantLen:  1,
		},
		{
			name:     "everything released",
			acquire:  []pair{{"db", "a"}, {"db", "b"}, {"web", "a"}},
			release:  []int{2, 0, 1},
			wantOpen: map[pair]int{{"db", "a"}: 0, {"db", "b"}: 0, {"web", "a"}: 0},
			wantLen:  0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tab Table
			var releases []func()
			for _, p := range tt.acquire {
				releases = append(releases, tab.Acquire(p.key, p.target))
			}
			for _, i := range tt.release {
				releases[i]()
			}
			for p, want := range tt.wantOpen {
				if got := tab.Open(p.key, p.target); got != want {
					t.Errorf("Open(%q, %q) = %d, want %d", p.key, p.target, got, want)
				}
			}
			if got := tab.Len(); got != tt.wantLen {
				t.Errorf("Len() = %d, want %d", got, tt.wantLen)
			}
		})
	}
}

func TestReleaseIsIdempotent(t *testing.T) {
	var tab Table
	r1 := tab.Acquire("db", "a")
	r2 := tab.Acquire("db", "a")
	r3 := tab.Acquire("db", "a")

	// Releasing one connection many times must end only that one.
	for range 5 {
		r1()
	}
	if got := tab.Open("db", "a"); got != 2 {
		t.Fatalf("after releasing one of three five times: Open = %d, want 2", got)
	}
	r2()
	r2()
	if got := tab.Open("db", "a"); got != 1 {
		t.Fatalf("after releasing two of three: Open = %d, want 1", got)
	}
	r3()
	r3()
	r1()
	if got, gotLen := tab.Open("db", "a"), tab.Len(); got != 0 || gotLen != 0 {
		t.Fatalf("after releasing all: Open = %d, Len = %d, want 0, 0", got, gotLen)
	}

	// A release called again after the pair reached zero must not resurrect it or take a
	// later connection's count.
	r4 := tab.Acquire("db", "a")
	r1()
	r2()
	r3()
	if got := tab.Open("db", "a"); got != 1 {
		t.Fatalf("stale releases after a new Acquire: Open = %d, want 1", got)
	}
	r4()
	if got, gotLen := tab.Open("db", "a"), tab.Len(); got != 0 || gotLen != 0 {
		t.Fatalf("at the end: Open = %d, Len = %d, want 0, 0", got, gotLen)
	}
}

func TestConcurrentAcquireRelease(t *testing.T) {
	const (
		goroutines = 64
		perG       = 500
	)
	var tab Table
	keys := []string{"db", "web", "cache"}
	targets := []string{"a", "b"}

	var wg sync.WaitGroup
	start := make(chan struct{})
	held := make(chan func(), goroutines*perG)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range perG {
				k, d := keys[(g+i)%len(keys)], targets[i%len(targets)]
				release := tab.Acquire(k, d)
				_ = tab.Open(k, d) // readers run alongside writers
				_ = tab.Len()
				switch i % 3 {
				case 0:
					release()
				case 1:
					// Every exit path may call it: twice, from two goroutines at once.
					var both sync.WaitGroup
					both.Add(2)
					go func() { defer both.Done(); release() }()
					go func() { defer both.Done(); release() }()
					both.Wait()
				case 2:
					held <- release // released later, after all acquires
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(held)

	var still []func()
	for r := range held {
		still = append(still, r)
	}
	total := 0
	for _, k := range keys {
		for _, d := range targets {
			total += tab.Open(k, d)
		}
	}
	if total != len(still) {
		t.Fatalf("open connections summed over pairs = %d, want %d (the ones still held)", total, len(still))
	}

	// Release the held ones concurrently, each twice.
	var rel sync.WaitGroup
	for i, r := range still {
		rel.Add(1)
		go func() {
			defer rel.Done()
			r()
			if i%2 == 0 {
				r()
			}
		}()
	}
	rel.Wait()

	for _, k := range keys {
		for _, d := range targets {
			if got := tab.Open(k, d); got != 0 {
				t.Errorf("Open(%q, %q) = %d after every release, want 0", k, d, got)
			}
		}
	}
	if got := tab.Len(); got != 0 {
		t.Errorf("Len() = %d after every release, want 0", got)
	}
}

func ExampleTable() {
	var tab Table
	release := tab.Acquire("db", "site-b")
	fmt.Println(tab.Open("db", "site-b"), tab.Len())
	release()
	release() // idempotent
	fmt.Println(tab.Open("db", "site-b"), tab.Len())
	// Output:
	// 1 1
	// 0 0
}
