package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string // "" = valid
	}{
		{args: nil},
		{args: []string{"-prometheus", "127.0.0.1:9099"}},
		{args: []string{"-prometheus", "localhost:9099", "-hold"}},
		{args: []string{"-prometheus", "[::1]:9099"}},
		{args: []string{"-prometheus", "0.0.0.0:9099"}, wantErr: "want a loopback address"},
		{args: []string{"-prometheus", "192.0.2.1:9099"}, wantErr: "want a loopback address"},
		{args: []string{"-prometheus", "127.0.0.1"}, wantErr: "want host:port"},
		{args: []string{"-prometheus", "127.0.0.1:0"}, wantErr: "want a number from 1 to 65535"},
		{args: []string{"-prometheus", "127.0.0.1:http"}, wantErr: "want a number from 1 to 65535"},
		{args: []string{"-hold"}, wantErr: "-hold: needs -prometheus"},
		{args: []string{"-prometheus", "127.0.0.1:9099", "-duration", "10s", "-kill-after", "8s"}, wantErr: "at least 3s past -kill-after"},
		{args: []string{"-prometheus", "127.0.0.1:9099", "-duration", "10s", "-kill-after", "7s"}},
		// Without Prometheus the kill may come late: the demo checks the traffic itself.
		{args: []string{"-duration", "10s", "-kill-after", "9s"}},
		{args: []string{"-duration", "2s"}, wantErr: "-duration 2s: want at least 3s"},
		{args: []string{"extra"}, wantErr: "unexpected arguments"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := parseFlags(tc.args, io.Discard)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("parseFlags(%q): %v", tc.args, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("parseFlags(%q) = %v, want an error containing %q", tc.args, err, tc.wantErr)
			}
		})
	}
}

func TestParseFlagsKeepsValues(t *testing.T) {
	o, err := parseFlags([]string{"-prometheus", "127.0.0.1:9099", "-hold", "-duration", "30s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.prometheus != "127.0.0.1:9099" || !o.hold || o.killAfter != 10*time.Second {
		t.Fatalf("parseFlags = %+v, want prometheus 127.0.0.1:9099, hold, kill-after 10s", o)
	}
}

// TestPromConfig has the Prometheus of the Debian package check the configuration the demo writes,
// with the shipped alerting rules.
func TestPromConfig(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not installed (Debian package prometheus: make deps)")
	}
	rules, err := filepath.Abs(filepath.Join("..", "..", promRules))
	if err != nil {
		t.Fatal(err)
	}
	targets := []string{
		"      - targets: [\"127.0.0.1:4001\"]\n        labels: {instance: \"client\"}\n",
		"      - targets: [\"127.0.0.1:4002\"]\n        labels: {instance: \"near\"}\n",
	}
	for name, cfg := range map[string]string{"with rules": promConfig(targets, rules), "without rules": promConfig(targets, "")} {
		path := filepath.Join(t.TempDir(), "prometheus.yml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(promtool, "check", "config", path).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("%s: promtool check config: %v\n%s\nconfig:\n%s", name, err, out, cfg)
		}
	}
}
