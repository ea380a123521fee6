package main

import (
	"fmt"
	"slices"
	"strings"
)

// sample is one measurement of one repetition: the raw results are a list of these.
type sample struct {
	Rep    int     `json:"rep"`
	Fwd    string  `json:"forwarder"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
}

// metricDef is one row of the table.
type metricDef struct {
	id    string
	label string
	prec  int  // decimals shown
	ratio bool // whether ratios between columns mean anything
}

// metrics are the table's rows, in order. ↑: higher is better; ↓: lower is better.
var metrics = []metricDef{
	{"idle_gw1", "Memory per idle connection held, gw1's forwarder (KiB, Pss) ↓", 1, true},
	{"idle_gw2", "Memory per idle connection held, gw2's forwarder (KiB, Pss) ↓", 1, true},
	{"idle_fds", "  descriptors per idle connection, both gateways ↓", 2, true},
	{"idle_slab", "  kernel unreclaimable slab per idle connection, whole machine: client, gateways, backends (KiB) ↓", 1, true},
	{"idle_kept", "  memory still held 2 s after they closed, both gateways (MiB) ↓", 1, false},
	{"bulk1_gbps", "Bulk, 1 stream (Gbit/s) ↑", 2, true},
	{"bulk8_gbps", "Bulk, 8 streams (Gbit/s) ↑", 2, true},
	{"bulk1_cpu", "Whole-machine CPU per GB, 1 stream (s) ↓", 3, true},
	{"bulk8_cpu", "Whole-machine CPU per GB, 8 streams (s) ↓", 3, true},
	{"bulk1_fwdcpu", "Forwarder processes' CPU per GB, 1 stream (s) ↓", 3, true},
	{"bulk8_fwdcpu", "Forwarder processes' CPU per GB, 8 streams (s) ↓", 3, true},
	{"rate32_cps", "Connections/s, 32 workers ↑", 0, true},
	{"rate32_p50", "  p50 latency, 32 workers (ms) ↓", 2, true},
	{"rate32_p99", "  p99 latency, 32 workers (ms) ↓", 2, true},
	{"rate32_err", "  failed connections, 32 workers", 0, false},
	{"rate32_cpu", "  whole-machine CPU per connection, 32 workers (µs) ↓", 0, true},
	{"rate32_fwdcpu", "  forwarder CPU per connection, 32 workers (µs) ↓", 0, true},
	{"rate256_cps", "Connections/s, 256 workers ↑", 0, true},
	{"rate256_p50", "  p50 latency, 256 workers (ms) ↓", 2, true},
	{"rate256_p99", "  p99 latency, 256 workers (ms) ↓", 2, true},
	{"rate256_err", "  failed connections, 256 workers", 0, false},
	{"mix_cps", "Connections/s, 32 workers, while 4 bulk streams flow ↑", 0, true},
	{"mix_p50", "  p50 latency, while bulk flows (ms) ↓", 2, true},
	{"mix_p99", "  p99 latency, while bulk flows (ms) ↓", 2, true},
	{"mix_p99x", "  that p99 ÷ the p99 at 32 workers without bulk ↓", 2, false},
	{"mix_err", "  failed connections, while bulk flows", 0, false},
	{"mix_gbps", "  bulk, 4 streams, meanwhile (Gbit/s) ↑", 2, true},
	{"lat1_p50", "Latency, 1 worker, p50 (ms) ↓", 3, true},
	{"lat1_p99", "Latency, 1 worker, p99 (ms) ↓", 3, true},
	{"lat1_added", "  added to direct routing's p50 (ms) ↓", 3, false},
	{"ttfb_client", "Time to first byte, client speaks first, %s RTT (ms) ↓", 1, true},
	{"ttfb_server", "Time to first byte, server speaks first, %s RTT (ms) ↓", 1, true},
	{"sustain_cps", "Sustained connection rate, 32 workers, first repetition (connections/s) ↑", 0, true},
	{"sustain_low", "  its slowest tenth (connections/s) ↑", 0, true},
	{"sustain_err", "  failed connections", 0, false},
	{"sustain_flaps", "  links that went down", 0, false},
	{"kill_failed", "Backend killed under load: new connections that failed ↓", 0, false},
	{"kill_inflight", "  connections in flight to it that failed ↓", 0, false},
	{"kill_recovery", "  time until new connections flow normally (s) ↓", 3, false},
	{"cut_failed", "Backend site cut (interface down) under load: new connections that failed ↓", 0, false},
	{"cut_inflight", "  connections in flight to it that failed or hung ↓", 0, false},
	{"cut_recovery", "  time until new connections flow normally (s) ↓", 3, false},
}

// derive adds the metrics computed from others in the same repetition: the latency a
// forwarder adds to direct routing, and how much bulk beside them stretches the short
// connections' p99 (the mix's p99 over the same forwarder's at 32 workers alone).
func derive(samples []sample) []sample {
	type key struct {
		rep         int
		fwd, metric string
	}
	val := map[key]float64{}
	for _, s := range samples {
		val[key{s.Rep, s.Fwd, s.Metric}] = s.Value
	}
	var out []sample
	for _, s := range samples {
		switch s.Metric {
		case "lat1_p50":
			if d, ok := val[key{s.Rep, "direct", s.Metric}]; ok && s.Fwd != "direct" {
				out = append(out, sample{Rep: s.Rep, Fwd: s.Fwd, Metric: "lat1_added", Value: s.Value - d})
			}
		case "mix_p99":
			if alone := val[key{s.Rep, s.Fwd, "rate32_p99"}]; alone > 0 {
				out = append(out, sample{Rep: s.Rep, Fwd: s.Fwd, Metric: "mix_p99x", Value: s.Value / alone})
			}
		}
	}
	return append(slices.Clone(samples), out...)
}

// summary is the median and range of one forwarder's values for one metric.
type summary struct {
	n             int
	med, min, max float64
}

func summarize(values []float64) summary {
	if len(values) == 0 {
		return summary{}
	}
	v := slices.Clone(values)
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return summary{n: len(v), med: med, min: v[0], max: v[len(v)-1]}
}

func summaries(samples []sample) map[[2]string]summary {
	vals := map[[2]string][]float64{}
	for _, s := range samples {
		k := [2]string{s.Fwd, s.Metric}
		vals[k] = append(vals[k], s.Value)
	}
	out := map[[2]string]summary{}
	for k, v := range vals {
		out[k] = summarize(v)
	}
	return out
}

func num(v float64, prec int) string {
	return fmt.Sprintf("%.*f", prec, v)
}

func cell(s summary, prec int) string {
	if s.n == 0 {
		return "–"
	}
	if s.n == 1 || s.min == s.max {
		return num(s.med, prec)
	}
	return fmt.Sprintf("%s (%s–%s)", num(s.med, prec), num(s.min, prec), num(s.max, prec))
}

func ratio(a, b summary) string {
	if a.n == 0 || b.n == 0 || b.med == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a.med/b.med)
}

// table renders the Markdown table: one column per forwarder (median, min–max over the
// repetitions), then the ratios of medians to direct routing and to HAProxy.
func table(fwds []forwarder, samples []sample, rtt string) string {
	sum := summaries(derive(samples))
	has := func(id string) bool {
		for _, f := range fwds {
			if f.id == id && f.na == "" {
				return true
			}
		}
		return false
	}
	type ratioCol struct{ num, den forwarder }
	var rcols []ratioCol
	for _, f := range fwds {
		if f.na == "" && f.proxy && has("direct") {
			rcols = append(rcols, ratioCol{f, byID("direct")})
		}
	}
	for _, f := range fwds {
		if f.na != "" || !f.vsHAProxy {
			continue
		}
		for _, h := range fwds {
			if strings.HasPrefix(h.id, "haproxy") && h.na == "" {
				rcols = append(rcols, ratioCol{f, h})
			}
		}
	}
	var b strings.Builder
	b.WriteString("| workload |")
	for _, f := range fwds {
		b.WriteString(" " + f.name + " |")
	}
	for _, r := range rcols {
		fmt.Fprintf(&b, " %s ÷ %s |", shortName(r.num), shortName(r.den))
	}
	b.WriteString("\n|---|")
	for range len(fwds) + len(rcols) {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	first := true
	for _, m := range metrics {
		any := false
		for _, f := range fwds {
			any = any || sum[[2]string{f.id, m.id}].n > 0
		}
		if !any {
			continue
		}
		label := m.label
		if strings.Contains(label, "%s") {
			label = fmt.Sprintf(label, rtt)
		}
		b.WriteString("| " + strings.Replace(label, "  ", "&nbsp;&nbsp;", 1) + " |")
		for _, f := range fwds {
			if f.na != "" {
				if first {
					b.WriteString(" " + f.na + " |")
				} else {
					b.WriteString(" n/a |")
				}
				continue
			}
			b.WriteString(" " + cell(sum[[2]string{f.id, m.id}], m.prec) + " |")
		}
		for _, r := range rcols {
			if !m.ratio {
				b.WriteString(" – |")
				continue
			}
			b.WriteString(" " + ratio(sum[[2]string{r.num.id, m.id}], sum[[2]string{r.den.id, m.id}]) + " |")
		}
		b.WriteString("\n")
		first = false
	}
	return b.String()
}

// shortName is a forwarder's name in a ratio header: "HAProxy 2.6 chain" -> "HAProxy".
func shortName(f forwarder) string {
	switch f.id {
	case "direct":
		return "direct"
	case "haproxy":
		return "HAProxy"
	case "haproxy-splice":
		return "HAProxy splice"
	}
	return f.name
}

func byID(id string) forwarder {
	for _, f := range forwarders {
		if f.id == id {
			return f
		}
	}
	return forwarder{id: id, name: id}
}
