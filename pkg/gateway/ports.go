package gateway

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/skfwd/skfwd/pkg/config"
)

// Port exhaustion toward a backend: a connection this site closes first toward a backend
// (every connection whose client closes first, since the FIN travels on) leaves a TIME_WAIT
// socket here for 60 s, holding its local port toward that backend's address. Linux reuses
// such a port for a new connection only with net.ipv4.tcp_tw_reuse=1; its default (2) allows
// it on loopback alone. Nothing a process sets on its own sockets changes that, so the site
// says so at start and in status, with the rate at which the ports run out.

// timeWaitSeconds is Linux's TIME_WAIT length (TCP_TIMEWAIT_LEN), fixed at build time.
const timeWaitSeconds = 60

// portWarnings returns a warning for each connector on a non-loopback address when the
// kernel will not reuse TIME_WAIT ports toward it. read reads a file under /proc/sys.
func portWarnings(connectors []config.Connector, read func(string) (string, error)) []string {
	reuse, err := read("/proc/sys/net/ipv4/tcp_tw_reuse")
	if err != nil || strings.TrimSpace(reuse) == "1" {
		return nil
	}
	var lo, hi int
	if r, err := read("/proc/sys/net/ipv4/ip_local_port_range"); err != nil {
		return nil
	} else if _, err := fmt.Sscan(r, &lo, &hi); err != nil || hi < lo {
		return nil
	}
	var out []string
	for _, c := range connectors {
		if isLoopback(c.Host) {
			continue
		}
		out = append(out, fmt.Sprintf("connector %q (%s): net.ipv4.tcp_tw_reuse is %s here, so every connection to it that its client ends first leaves a TIME_WAIT socket for %d s, and more than about %d new connections a second to it, sustained, run out of local ports (%d-%d); set net.ipv4.tcp_tw_reuse=1 (safe with TCP timestamps, on by default) or widen net.ipv4.ip_local_port_range",
			c.Name, c.Address(), strings.TrimSpace(reuse), timeWaitSeconds, (hi-lo+1)/timeWaitSeconds, lo, hi))
	}
	return out
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func readProc(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
