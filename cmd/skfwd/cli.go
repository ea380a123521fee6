package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/skfwd/skfwd/pkg/config"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // bad flags or configuration
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

const usage = `skfwd joins sites into one application network and forwards each new TCP
connection to the target of least cost (link costs plus open connections).

Usage:
  skfwd run -f PATH [flags]          run this site's gateway in the foreground
  skfwd check -f PATH                validate the configuration, report every problem
  skfwd link generate -f PATH --endpoint HOST:PORT [--cost N] [--name NAME]
                                     issue a link credential; prints the YAML the dialing site adds
  skfwd status [-o json]             show links, routes and services of a running gateway
  skfwd version

PATH is a YAML file or a directory of them (Skupper v2 resources). Run "skfwd COMMAND -h"
for a command's flags. Every flag can also be set as an environment variable SKFWD_<FLAG>,
e.g. SKFWD_STATE_DIR for --state-dir; a flag on the command line wins.
`

func run(e env, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(e, rest)
	case "check":
		return cmdCheck(e, rest)
	case "link":
		if len(rest) == 0 || rest[0] != "generate" {
			fmt.Fprintln(e.stderr, "skfwd link: the only subcommand is \"generate\": skfwd link generate -f PATH --endpoint HOST:PORT")
			return exitUsage
		}
		return cmdLinkGenerate(e, rest[1:])
	case "status":
		return cmdStatus(e, rest)
	case "version", "--version":
		fmt.Fprintf(e.stdout, "skfwd %s\n", version)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, usage)
		return exitOK
	}
	fmt.Fprintf(e.stderr, "skfwd: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

// paths collects repeated -f flags.
type paths []string

func (p *paths) String() string     { return strings.Join(*p, ",") }
func (p *paths) Set(v string) error { *p = append(*p, v); return nil }

func newFlags(e env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("skfwd "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// parseFlags parses args, then fills every flag not given on the command line from its
// SKFWD_* environment variable.
func parseFlags(e env, fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags go before it? see -h)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		name := envName(f.Name)
		if v := e.getenv(name); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("environment %s=%q: %w", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

func envName(flagName string) string {
	return "SKFWD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// settingFlags defines one flag per Site.spec.settings key so the command line and SKFWD_*
// variables can override the configuration with the same names.
type settingFlags map[string]*string

func addSettingFlags(fs *flag.FlagSet) settingFlags {
	sf := settingFlags{}
	for _, key := range config.SettingKeys() {
		sf[key] = fs.String(key, "", "override Site spec.settings "+key)
	}
	return sf
}

func (sf settingFlags) apply(s *config.Settings) error {
	var errs []error
	for _, key := range config.SettingKeys() {
		if v := *sf[key]; v != "" {
			if err := s.Set(key, v); err != nil {
				errs = append(errs, fmt.Errorf("--%s: %w", key, err))
			}
		}
	}
	if len(errs) == 0 {
		if err := s.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// loadConfig loads and validates the configuration, printing every problem.
func loadConfig(e env, files paths, sf settingFlags) (*config.Config, bool) {
	if len(files) == 0 {
		fmt.Fprintln(e.stderr, "skfwd: no configuration: pass -f PATH (a YAML file or a directory of them) or set SKFWD_F")
		return nil, false
	}
	cfg, err := config.Load(files...)
	if err != nil {
		printProblems(e.stderr, err)
		return nil, false
	}
	if sf != nil {
		if err := sf.apply(&cfg.Site.Settings); err != nil {
			printProblems(e.stderr, err)
			return nil, false
		}
	}
	return cfg, true
}

func printProblems(w io.Writer, err error) {
	var multi interface{ Unwrap() []error }
	if errors.As(err, &multi) {
		errs := multi.Unwrap()
		fmt.Fprintf(w, "skfwd: %d problem(s) in the configuration:\n", len(errs))
		for _, e := range errs {
			fmt.Fprintf(w, "  - %v\n", e)
		}
		return
	}
	fmt.Fprintf(w, "skfwd: %v\n", err)
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}
