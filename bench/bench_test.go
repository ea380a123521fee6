package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMachineBusy(t *testing.T) {
	tests := []struct {
		name, in string
		want     float64
		wantErr  bool
	}{
		{"idle and iowait left out", "cpu  100 5 50 9000 40 3 2 1 0 0\ncpu0 1 2 3\n", 1.61, false},
		{"no guest fields", "cpu  10 0 10 0 0 0 0 0\n", 0.2, false},
		{"per-cpu line is not the total", "cpu0 1 2 3 4 5 6 7 8\n", 0, true},
		{"short", "cpu 1 2 3\n", 0, true},
		{"garbage", "cpu a b c d e f g h\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := machineBusy(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestProcessCPU(t *testing.T) {
	tests := []struct {
		name, in string
		want     float64
		wantErr  bool
	}{
		{"plain", "1234 (skfwd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 9 0 100 0 0", 4, false},
		{"name with spaces and parens", "77 (a) b) c) R 1 77 77 0 -1 0 0 0 0 0 3 7 0 0 20 0 1 0 5 0 0", 0.1, false},
		{"no name", "77 R 1 2", 0, true},
		{"short", "77 (x) R 1 2 3", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := processCPU(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAnalyzeFailover(t *testing.T) {
	const at = 1_000_000_000
	ms := int64(time.Millisecond)
	tests := []struct {
		name   string
		events []event
		want   failStats
	}{
		{"nothing noticed", []event{{at - 5*ms, at - 4*ms, true}, {at + ms, at + 2*ms, true}},
			failStats{Total: 2}},
		{"in flight reset, not counted as new", []event{{at - 5*ms, at + ms, false}, {at + ms, at + 2*ms, true}},
			failStats{Total: 2, InFlight: 1}},
		{"new connections stalled then rerouted", []event{
			{at + ms, at + 2000*ms, true}, {at + 2*ms, at + 2003*ms, true}, {at + 10*ms, at + 11*ms, true}},
			failStats{Total: 3, Stalled: 2, Recovery: 2003 * time.Millisecond}},
		{"new connection failed", []event{{at + 100*ms, at + 101*ms, false}},
			failStats{Total: 1, Failed: 1, Recovery: 101 * time.Millisecond}},
		{"in flight hung to the client timeout", []event{{at - ms, at + 10000*ms, false}},
			failStats{Total: 1, InFlight: 1}},
		{"earlier failure before the failure is not in flight", []event{{at - 50*ms, at - 40*ms, false}},
			failStats{Total: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := analyzeFailover(tt.events, at, 100*time.Millisecond); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	v := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	tests := []struct {
		p    float64
		in   []int64
		want int64
	}{{50, v, 5}, {99, v, 10}, {1, v, 1}, {50, nil, 0}, {99, []int64{7}, 7}}
	for _, tt := range tests {
		if got := percentile(tt.in, tt.p); got != tt.want {
			t.Errorf("percentile(%v, %v) = %d, want %d", tt.in, tt.p, got, tt.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		in   []float64
		want summary
	}{
		{[]float64{3, 1, 2}, summary{3, 2, 1, 3}},
		{[]float64{4, 1, 2, 3}, summary{4, 2.5, 1, 4}},
		{[]float64{7}, summary{1, 7, 7, 7}},
		{nil, summary{}},
	}
	for _, tt := range tests {
		if got := summarize(tt.in); got != tt.want {
			t.Errorf("summarize(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestCellAndRatio(t *testing.T) {
	tests := []struct {
		s    summary
		prec int
		want string
	}{
		{summary{3, 2, 1, 3}, 2, "2.00 (1.00–3.00)"},
		{summary{1, 2.345, 2.345, 2.345}, 1, "2.3"},
		{summary{2, 5, 5, 5}, 0, "5"},
		{summary{}, 2, "–"},
	}
	for _, tt := range tests {
		if got := cell(tt.s, tt.prec); got != tt.want {
			t.Errorf("cell(%+v) = %q, want %q", tt.s, got, tt.want)
		}
	}
	if got := ratio(summary{n: 1, med: 3}, summary{n: 1, med: 4}); got != "0.75×" {
		t.Errorf("ratio = %q, want 0.75×", got)
	}
	if got := ratio(summary{n: 1, med: 3}, summary{n: 1, med: 0}); got != "–" {
		t.Errorf("ratio over zero = %q, want –", got)
	}
}

func TestDeriveAddedLatency(t *testing.T) {
	in := []sample{
		{1, "direct", "lat1_p50", 0.125}, {1, "skfwd", "lat1_p50", 0.375}, {1, "skfwd", "bulk1_gbps", 9},
		{2, "direct", "lat1_p50", 0.25}, {2, "skfwd", "lat1_p50", 0.5},
	}
	got := derive(in)
	var added []sample
	for _, s := range got {
		if s.Metric == "lat1_added" {
			added = append(added, s)
		}
	}
	want := []sample{{1, "skfwd", "lat1_added", 0.25}, {2, "skfwd", "lat1_added", 0.25}}
	if len(added) != len(want) || added[0] != want[0] || added[1] != want[1] {
		t.Errorf("added = %+v, want %+v", added, want)
	}
	if len(got) != len(in)+2 {
		t.Errorf("derive kept %d samples, want %d", len(got), len(in)+2)
	}
}

func TestTable(t *testing.T) {
	samples := []sample{
		{1, "direct", "bulk1_gbps", 10}, {1, "haproxy", "bulk1_gbps", 4}, {1, "skfwd", "bulk1_gbps", 6},
		{1, "haproxy-splice", "bulk1_gbps", 5},
		{1, "haproxy", "kill_failed", 3}, {1, "skfwd", "kill_failed", 0},
	}
	// The real columns, and one that cannot run (na), as a forwarder not yet built would be.
	fwds := append(forwarders[:4:4], forwarder{id: "later", name: "later", na: "n/a (not built yet)", proxy: true})
	got := table(fwds, samples, "20ms")
	want := []string{
		"| workload | direct routing | HAProxy 2.6 chain | HAProxy 2.6 chain, splice-auto | skfwd userspace | later | HAProxy ÷ direct | HAProxy splice ÷ direct | skfwd userspace ÷ direct | skfwd userspace ÷ HAProxy | skfwd userspace ÷ HAProxy splice |",
		"|---|---|---|---|---|---|---|---|---|---|---|",
		"| Bulk, 1 stream (Gbit/s) ↑ | 10.00 | 4.00 | 5.00 | 6.00 | n/a (not built yet) | 0.40× | 0.50× | 0.60× | 1.50× | 1.20× |",
		"| Backend killed under load: new connections that failed ↓ | – | 3 | – | 0 | n/a | – | – | – | – | – |",
	}
	if g := strings.Split(strings.TrimSpace(got), "\n"); strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Errorf("table:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

func TestBanner(t *testing.T) {
	b := banner("be2")
	if len(b) != msgSize || b[msgSize-1] != '\n' {
		t.Fatalf("banner %q: want %d bytes ending in a newline", b, msgSize)
	}
	if got := bannerName(b); got != "be2" {
		t.Errorf("bannerName = %q, want be2", got)
	}
}

func TestSubnet(t *testing.T) {
	if got := subnet("10.199.12.1"); got != "10.199.12.0/24" {
		t.Errorf("subnet = %q", got)
	}
}

func TestKibField(t *testing.T) {
	rollup := "55d0c0a00000-7ffc1e5ff000 ---p 00000000 00:00 0                          [rollup]\n" +
		"Rss:               20404 kB\nPss:               19333 kB\nPss_Anon:          12000 kB\n"
	status := "Name:\tskfwd\nVmPeak:\t 1300000 kB\nVmRSS:\t   20404 kB\nThreads:\t8\n"
	tests := []struct {
		name, text, key string
		want            int64
		wantErr         bool
	}{
		{"smaps_rollup Pss, not Pss_Anon", rollup, "Pss", 19333, false},
		{"smaps_rollup Rss", rollup, "Rss", 20404, false},
		{"status, tab separated", status, "VmRSS", 20404, false},
		{"meminfo", "Slab:             207252 kB\nSReclaimable:     120000 kB\nSUnreclaim:        87252 kB\n", "SUnreclaim", 87252, false},
		{"missing", status, "Pss", 0, true},
		{"no unit", "Threads:\t8\n", "Threads", 0, true},
		{"not a number", "Pss: many kB\n", "Pss", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := kibField(tt.text, tt.key)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestIdleMeasures(t *testing.T) {
	before := memSnap{Procs: []procMem{{20000, 30}, {19000, 28}}, Slab: 200000}
	hold := memSnap{Procs: []procMem{{30000, 1030}, {24000, 1028}}, Slab: 216000}
	after := memSnap{Procs: []procMem{{22048, 31}, {19000, 28}}, Slab: 201000}
	got := idleMeasures(before, hold, after, 1000)
	want := []measure{{"idle_slab", 16}, {"idle_gw1", 10}, {"idle_gw2", 5}, {"idle_fds", 2}, {"idle_kept", 2}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// Direct routing: no forwarder process, only the kernel's share.
	direct := idleMeasures(memSnap{Slab: 100}, memSnap{Slab: 1100}, memSnap{Slab: 200}, 100)
	if !slices.Equal(direct, []measure{{"idle_slab", 10}}) {
		t.Errorf("direct: got %v", direct)
	}
}

func TestSpread(t *testing.T) {
	tests := []struct {
		n, k int
		want []int
	}{
		{10, 5, []int{0, 2, 4, 6, 8}},
		{5000, 4, []int{0, 1250, 2500, 3750}},
		{3, 50, []int{0, 1, 2}},
		{0, 50, []int{}},
	}
	for _, tt := range tests {
		if got := spread(tt.n, tt.k); !slices.Equal(got, tt.want) {
			t.Errorf("spread(%d, %d) = %v, want %v", tt.n, tt.k, got, tt.want)
		}
	}
}

func TestDeriveMixP99(t *testing.T) {
	in := []sample{
		{1, "haproxy", "rate32_p99", 10}, {1, "haproxy", "mix_p99", 25},
		{1, "skfwd", "mix_p99", 30},                                   // no rate32 run: nothing derived
		{2, "haproxy", "rate32_p99", 0}, {2, "haproxy", "mix_p99", 5}, // zero: nothing derived
	}
	var got []sample
	for _, s := range derive(in) {
		if s.Metric == "mix_p99x" {
			got = append(got, s)
		}
	}
	if want := []sample{{1, "haproxy", "mix_p99x", 2.5}}; !slices.Equal(got, want) {
		t.Errorf("mix_p99x = %+v, want %+v", got, want)
	}
}

// TestIdleHold drives mode idle against an echo server on loopback: open, check, close.
func TestIdleHold(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serve(ln, nil)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- idleHold([]string{ln.Addr().String()}, 20, 5*time.Second, inR, outW); outW.Close() }()
	lines := bufio.NewScanner(outR)
	next := func() loadResult {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("no line from idleHold: %v", lines.Err())
		}
		var res loadResult
		if lines.Text() != "" {
			if err := json.Unmarshal(lines.Bytes(), &res); err != nil {
				t.Fatal(err)
			}
		}
		return res
	}
	if res := next(); res.Conns != 20 || res.Errors != 0 {
		t.Fatalf("setup: %+v", res)
	}
	fmt.Fprintln(inW, "check")
	if res := next(); res.Conns != 20 || res.Errors != 0 {
		t.Fatalf("check: %+v", res)
	}
	fmt.Fprintln(inW, "close")
	next()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
