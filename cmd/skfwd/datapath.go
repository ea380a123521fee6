package main

import (
	"log/slog"

	"github.com/skfwd/skfwd/pkg/config"
	"github.com/skfwd/skfwd/pkg/datapath"
	"github.com/skfwd/skfwd/pkg/metrics"
)

// selectDataPath picks the data path the data-path setting asks for and says in one log line
// which one is in use and, on a fallback, why.
func selectDataPath(log *slog.Logger, s config.Settings, m *metrics.Metrics) (path datapath.Path, note string, closePath func(), ok bool) {
	opts := datapath.KernelOptions{
		PromoteBytes: int64(s.PromoteBytes),
		PromoteAfter: s.PromoteAfter,
		MaxPromoted:  s.MaxPromoted,
		MaxBacklog:   int64(s.MaxBacklog),
		Log:          log,
	}
	if m != nil {
		opts.Observer = m
	}
	path, fallback, err := datapath.Select(s.DataPath, opts)
	if err != nil {
		log.Error("data path not available; use data-path auto or userspace to run without it", "err", err)
		return nil, "", nil, false
	}
	closePath = func() {}
	if k, ok := path.(*datapath.Kernel); ok {
		closePath = func() { _ = k.Close() }
		what := "data path: kernel (sockmap) for bulk connections, splice(2) until then"
		if path.Mode() == datapath.ModeSockmap {
			what = "data path: kernel (sockmap) for every connection"
		}
		log.Info(what, "mode", path.Mode(), "promote_bytes", s.PromoteBytes, "promote_after", s.PromoteAfter, "max_kernel_backlog", s.MaxBacklog)
	} else if fallback != "" {
		log.Warn("data path: userspace (splice); the kernel path is not available here", "reason", fallback)
	} else {
		log.Info("data path: userspace (splice)", "mode", path.Mode())
	}
	return path, fallback, closePath, true
}
