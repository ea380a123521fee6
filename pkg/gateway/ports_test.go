package gateway

import (
	"errors"
	"strings"
	"testing"

	"github.com/skfwd/skfwd/pkg/config"
)

func TestPortWarnings(t *testing.T) {
	conns := []config.Connector{
		{Name: "local", Host: "127.0.0.1", Port: 80},
		{Name: "named-local", Host: "localhost", Port: 80},
		{Name: "v6-local", Host: "::1", Port: 80},
		{Name: "remote", Host: "10.0.0.5", Port: 8080},
	}
	sysctls := func(reuse string) func(string) (string, error) {
		return func(p string) (string, error) {
			switch {
			case strings.HasSuffix(p, "tcp_tw_reuse"):
				return reuse + "\n", nil
			case strings.HasSuffix(p, "ip_local_port_range"):
				return "32768\t60999\n", nil
			}
			return "", errors.New("no such file")
		}
	}
	got := portWarnings(conns, sysctls("2"))
	if len(got) != 1 || !strings.Contains(got[0], `connector "remote" (10.0.0.5:8080)`) ||
		!strings.Contains(got[0], "about 470 new connections a second") || !strings.Contains(got[0], "net.ipv4.tcp_tw_reuse=1") {
		t.Fatalf("with tcp_tw_reuse=2: %q", got)
	}
	if got := portWarnings(conns, sysctls("1")); len(got) != 0 {
		t.Fatalf("with tcp_tw_reuse=1: %q", got)
	}
	if got := portWarnings(conns, func(string) (string, error) { return "", errors.New("no /proc") }); len(got) != 0 {
		t.Fatalf("without /proc: %q", got)
	}
}
