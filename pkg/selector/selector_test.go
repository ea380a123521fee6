package selector

import (
	"slices"
	"testing"
)

func targets(cs []Candidate) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Target
	}
	return out
}

func TestScore(t *testing.T) {
	tests := []struct {
		c    Candidate
		want int
	}{
		{Candidate{Target: "a", Local: true}, 0},
		{Candidate{Target: "a", Local: true, Open: 7}, 7},
		{Candidate{Target: "s", PathCost: 5}, 5},
		{Candidate{Target: "s", PathCost: 5, Open: 3}, 8},
	}
	for _, tt := range tests {
		if got := tt.c.Score(); got != tt.want {
			t.Errorf("%+v.Score() = %d, want %d", tt.c, got, tt.want)
		}
	}
}

func TestRankOrder(t *testing.T) {
	tests := []struct {
		name  string
		cands []Candidate
		turn  uint64
		want  []string
	}{
		{
			name:  "nil",
			cands: nil,
			want:  []string{},
		},
		{
			name:  "empty",
			cands: []Candidate{},
			want:  []string{},
		},
		{
			name:  "lowest score first",
			cands: []Candidate{{Target: "far", PathCost: 10}, {Target: "near", PathCost: 2}, {Target: "mid", PathCost: 5}},
			want:  []string{"near", "mid", "far"},
		},
		{
			name:  "local before remote on equal score",
			cands: []Candidate{{Target: "site-b", PathCost: 1}, {Target: "conn", Local: true, Open: 1}},
			want:  []string{"conn", "site-b"},
		},
		{
			name:  "loaded local loses to idle remote",
			cands: []Candidate{{Target: "conn", Local: true, Open: 2}, {Target: "site-b", PathCost: 1}},
			want:  []string{"site-b", "conn"},
		},
		{
			name: "remote tie broken by lower path cost",
			cands: []Candidate{
				{Target: "a", PathCost: 5, Open: 0},
				{Target: "b", PathCost: 1, Open: 4},
			},
			want: []string{"b", "a"},
		},
		{
			name: "remote tie with equal path cost broken by name",
			cands: []Candidate{
				{Target: "zeta", PathCost: 3},
				{Target: "alpha", PathCost: 3},
				{Target: "mu", PathCost: 3},
			},
			turn: 7, // turn never rotates remotes
			want: []string{"alpha", "mu", "zeta"},
		},
		{
			name: "locals with equal score sorted by name at turn 0",
			cands: []Candidate{
				{Target: "c", Local: true},
				{Target: "a", Local: true},
				{Target: "b", Local: true},
			},
			want: []string{"a", "b", "c"},
		},
		{
			name: "rotation only within the tied local group",
			cands: []Candidate{
				{Target: "busy", Local: true, Open: 3},
				{Target: "y", Local: true, Open: 1},
				{Target: "x", Local: true, Open: 1},
				{Target: "site-b", PathCost: 1},
				{Target: "idle", Local: true},
			},
			turn: 1,
			// score 0: [idle]; score 1: locals [x y] rotated by 1 -> [y x], then the remote; score 3: busy.
			want: []string{"idle", "y", "x", "site-b", "busy"},
		},
		{
			name: "two tied local groups rotate independently",
			cands: []Candidate{
				{Target: "a", Local: true},
				{Target: "b", Local: true},
				{Target: "c", Local: true},
				{Target: "d", Local: true, Open: 1},
				{Target: "e", Local: true, Open: 1},
			},
			turn: 4,
			// group of 3 rotated by 4%3=1, group of 2 by 4%2=0.
			want: []string{"b", "c", "a", "d", "e"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := targets(Rank(tt.cands, tt.turn))
			if !slices.Equal(got, tt.want) {
				t.Errorf("Rank = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRankRotatesIdleLocals(t *testing.T) {
	cands := []Candidate{
		{Target: "b", Local: true},
		{Target: "c", Local: true},
		{Target: "a", Local: true},
		{Target: "site-b", PathCost: 1},
	}
	want := []string{"a", "b", "c", "a", "b", "c"}
	for turn := range uint64(6) {
		got := Rank(cands, turn)
		if got[0].Target != want[turn] {
			t.Errorf("turn %d: first = %q, want %q", turn, got[0].Target, want[turn])
		}
		if got[3].Target != "site-b" {
			t.Errorf("turn %d: last = %q, want site-b", turn, got[3].Target)
		}
	}
}

func TestRankDoesNotModifyInput(t *testing.T) {
	in := []Candidate{
		{Target: "z", PathCost: 9, Open: 1},
		{Target: "c", Local: true},
		{Target: "b", Local: true},
		{Target: "a", Local: true},
		{Target: "m", PathCost: 1},
	}
	orig := slices.Clone(in)
	got := Rank(in, 2)
	if !slices.Equal(in, orig) {
		t.Fatalf("input modified: %+v, want %+v", in, orig)
	}
	got[0].Open = 1000
	if !slices.Equal(in, orig) {
		t.Fatalf("result shares memory with input: %+v", in)
	}
}

// hold simulates n connections that all stay open: each is sent to the best candidate, whose Open count then grows.
func hold(cands []Candidate, n int) map[string]int {
	cs := slices.Clone(cands)
	for i := range n {
		best := Rank(cs, uint64(i))[0]
		for j := range cs {
			if cs[j].Target == best.Target && cs[j].Local == best.Local {
				cs[j].Open++
			}
		}
	}
	counts := make(map[string]int, len(cs))
	for _, c := range cs {
		counts[c.Target] = c.Open
	}
	return counts
}

func TestIdleLocalTakesEveryConnection(t *testing.T) {
	// Idle: every connection closes before the next arrives, so counts stay at zero.
	cands := []Candidate{{Target: "site-b", PathCost: 1}, {Target: "conn", Local: true}}
	for turn := range uint64(10) {
		if got := Rank(cands, turn)[0].Target; got != "conn" {
			t.Fatalf("turn %d: first = %q, want conn", turn, got)
		}
	}
}

func within1(got int, twiceWant int) bool {
	d := 2*got - twiceWant
	return d >= -2 && d <= 2
}

func TestHeldConnectionsSplit(t *testing.T) {
	tests := []struct {
		name  string
		cands []Candidate
		n     int
		want  map[string]int
		// approx holds twice the design's approximate share, to keep it an integer.
		approx map[string]int
	}{
		{
			name:   "remotes at cost 1 and 50, N=100",
			cands:  []Candidate{{Target: "near", PathCost: 1}, {Target: "far", PathCost: 50}},
			n:      100,
			want:   map[string]int{"near": 75, "far": 25},
			approx: map[string]int{"near": 100 + 49, "far": 100 - 49},
		},
		{
			name:   "remotes at cost 1 and 50, N=200",
			cands:  []Candidate{{Target: "near", PathCost: 1}, {Target: "far", PathCost: 50}},
			n:      200,
			want:   map[string]int{"near": 125, "far": 75},
			approx: map[string]int{"near": 200 + 49, "far": 200 - 49},
		},
		{
			// local takes 2, then they alternate: a remote at cost c takes a share once the local has c more open.
			name:   "local vs remote cost 1, N=100",
			cands:  []Candidate{{Target: "conn", Local: true}, {Target: "site-b", PathCost: 1}},
			n:      100,
			want:   map[string]int{"conn": 51, "site-b": 49},
			approx: map[string]int{"conn": 100 + 1, "site-b": 100 - 1},
		},
		{
			name:   "local vs remote cost 1, N=101",
			cands:  []Candidate{{Target: "conn", Local: true}, {Target: "site-b", PathCost: 1}},
			n:      101,
			want:   map[string]int{"conn": 51, "site-b": 50},
			approx: map[string]int{"conn": 101 + 1, "site-b": 101 - 1},
		},
		{
			name:   "backup at cost 9999 takes nothing",
			cands:  []Candidate{{Target: "backup", PathCost: 9999}, {Target: "primary", PathCost: 1}},
			n:      5000,
			want:   map[string]int{"primary": 5000, "backup": 0},
			approx: map[string]int{"primary": 10000, "backup": 0},
		},
		{
			name: "backup at cost 99999 behind a local and a primary takes nothing",
			cands: []Candidate{
				{Target: "backup", PathCost: 99999},
				{Target: "primary", PathCost: 1},
				{Target: "conn", Local: true},
			},
			n:      5000,
			want:   map[string]int{"conn": 2501, "primary": 2499, "backup": 0},
			approx: map[string]int{"conn": 5000 + 1, "primary": 5000 - 1, "backup": 0},
		},
		{
			name:   "two locals share evenly",
			cands:  []Candidate{{Target: "a", Local: true}, {Target: "b", Local: true}},
			n:      10,
			want:   map[string]int{"a": 5, "b": 5},
			approx: map[string]int{"a": 10, "b": 10},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hold(tt.cands, tt.n)
			for target, want := range tt.want {
				if got[target] != want {
					t.Errorf("%s holds %d, want %d (all: %v)", target, got[target], want, got)
				}
				if !within1(got[target], tt.approx[target]) {
					t.Errorf("%s holds %d, more than 1 from %d/2", target, got[target], tt.approx[target])
				}
			}
		})
	}
}
