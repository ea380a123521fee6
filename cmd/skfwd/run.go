package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/skfwd/skfwd/pkg/datapath"
	"github.com/skfwd/skfwd/pkg/gateway"
	"github.com/skfwd/skfwd/pkg/gcfloor"
	"github.com/skfwd/skfwd/pkg/metrics"
)

func cmdRun(e env, args []string) int {
	fs := newFlags(e, "run")
	var files paths
	fs.Var(&files, "f", "configuration file or directory (repeatable)")
	readyFile := fs.String("ready-file", "", "write this file once the site serves; removed on exit")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	sf := addSettingFlags(fs)
	if err := parseFlags(e, fs, args); err != nil {
		fmt.Fprintf(e.stderr, "skfwd run: %v\n", err)
		return exitUsage
	}
	log, err := newLogger(e.stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintf(e.stderr, "skfwd run: %v\n", err)
		return exitUsage
	}
	cfg, ok := loadConfig(e, files, sf)
	if !ok {
		return exitUsage
	}
	for _, w := range cfg.Warnings {
		log.Warn("configuration field ignored", "detail", w)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Each client connection holds a descriptor at each gateway it crosses: a distribution's
	// default soft limit (1024) would cap a site far below what it can carry.
	if before, after, err := gateway.RaiseFileLimit(); err != nil {
		log.Warn("file descriptor limit not raised", "limit", before, "err", err)
	} else if after != before {
		log.Info("file descriptor limit raised to the hard limit", "from", before, "to", after)
	}
	opts := gateway.Options{Log: log}
	if cfg.Site.Settings.AdminAddress != "" {
		opts.Metrics = metrics.New(cfg.Site.Name, version)
	}
	path, note, closePath, ok := selectDataPath(log, cfg.Site.Settings, opts.Metrics)
	if !ok {
		return exitFailure
	}
	defer closePath()
	opts.Path, opts.PathNote = path, note
	if k, isKernel := path.(*datapath.Kernel); isKernel {
		opts.Counts = k.Counts()
	}
	g, err := gateway.Start(ctx, cfg, opts)
	if err != nil {
		log.Error("site not started", "err", err)
		return exitFailure
	}
	go gcfloor.Run(ctx, gcfloor.DefaultFloor, time.Second) // ends with ctx, at return
	if *readyFile != "" {
		if err := os.WriteFile(*readyFile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
			log.Error("write ready file", "err", err)
			g.Stop()
			return exitFailure
		}
		defer os.Remove(*readyFile)
	}
	sig := make(chan os.Signal, 1)
	e.signals(sig)
	s := <-sig
	log.Info("stopping", "signal", s.String())
	g.Stop()
	log.Info("stopped")
	return exitOK
}

func cmdCheck(e env, args []string) int {
	fs := newFlags(e, "check")
	var files paths
	fs.Var(&files, "f", "configuration file or directory (repeatable)")
	sf := addSettingFlags(fs)
	if err := parseFlags(e, fs, args); err != nil {
		fmt.Fprintf(e.stderr, "skfwd check: %v\n", err)
		return exitUsage
	}
	cfg, ok := loadConfig(e, files, sf)
	if !ok {
		return exitUsage
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(e.stderr, "warning: %s\n", w)
	}
	fmt.Fprintf(e.stdout, "configuration of site %q is valid: %d listener(s), %d connector(s), %d link(s), %d router access(es)\n",
		cfg.Site.Name, len(cfg.Listeners), len(cfg.Connectors), len(cfg.Links), len(cfg.RouterAccess))
	return exitOK
}
