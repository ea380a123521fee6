// Package metrics owns skfwd's Prometheus metrics: their names, help, labels and the private
// registry they live on, served on the admin address at /metrics.
//
// Two kinds of metric, two ways in:
//
//   - Events (a connection opened or closed, a failed attempt, a pool miss, a missed heartbeat)
//     are counted where they happen, through the methods of *Metrics. Every method is a no-op on
//     a nil *Metrics, so code that runs without metrics (unit tests of pkg/links) needs nothing.
//   - State that already lives somewhere (open-connection counts, link status, tunnel pools,
//     connector health, selector scores, BPF maps) is read at scrape time through Source and
//     KernelSource, never copied on a timer: a scrape sees what a `skfwd status` would see.
//
// Labels are bounded by the configuration and the network: site, peer site, link, routing key,
// connector, listener and a reason from a fixed list. Values that come from the wire (a
// request's routing key and source site, a refusal's reason) are mapped by SetBounds onto
// what the configuration and routing know, everything else onto "other", so a peer cannot
// create series. Nothing is labelled per connection or per
// client address. Every series carries the constant label site, so one Prometheus can scrape
// every site without relabelling.
//
// The metrics reference (docs/metrics.md) is generated from Definitions by
// `go run ./pkg/metrics/cmd/gendoc`, and a test fails when it is not current.
package metrics
