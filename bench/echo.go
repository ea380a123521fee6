package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
)

// msgSize is the request and echo size of the connection workloads, and the banner size.
const msgSize = 64

// banner is what the banner port sends first: the backend's name, padded to msgSize bytes.
func banner(name string) []byte {
	b := bytes.Repeat([]byte{'.'}, msgSize)
	copy(b, name)
	b[msgSize-1] = '\n'
	return b
}

// bannerName recovers the backend name from a banner.
func bannerName(b []byte) string {
	return strings.TrimRight(string(bytes.TrimSuffix(b, []byte{'\n'})), ".")
}

// cmdEcho is the backend: an echo server (client speaks first) and a banner server (server
// speaks first, then echoes). A goroutine per connection, like most Go servers.
func cmdEcho(args []string) int {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	name := fs.String("name", "backend", "name sent in the banner")
	echoAddr := fs.String("echo", ":5001", "echo listen address")
	bannerAddr := fs.String("banner", ":5002", "banner listen address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var lns []net.Listener
	for _, a := range []string{*echoAddr, *bannerAddr} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			fmt.Fprintf(os.Stderr, "echo: %v\n", err)
			return 1
		}
		lns = append(lns, ln)
	}
	go serve(lns[0], nil)
	go serve(lns[1], banner(*name))
	fmt.Println("ready")
	select {}
}

func serve(ln net.Listener, first []byte) {
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintf(os.Stderr, "echo: accept: %v\n", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			if first != nil {
				if _, err := c.Write(first); err != nil {
					return
				}
			}
			buf := make([]byte, 16<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// waitBackends connects from site to addrs (in turn) until every backend in want has
// answered on the banner port, or timeout passes.
func waitBackends(ctx context.Context, site *netlab.Site, addrs, want []string, timeout time.Duration) error {
	seen := map[string]bool{}
	deadline := time.Now().Add(timeout)
	var lastErr error
	for i := 0; time.Now().Before(deadline); i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		name, err := bannerOnce(site, addrs[i%len(addrs)])
		if err != nil {
			lastErr = err
			time.Sleep(50 * time.Millisecond)
			continue
		}
		seen[name] = true
		all := true
		for _, w := range want {
			all = all && seen[w]
		}
		if all {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	var got []string
	for k := range seen {
		got = append(got, k)
	}
	slices.Sort(got)
	return fmt.Errorf("backends %v not all reached through %v within %v (saw %v, last error %v)", want, addrs, timeout, got, lastErr)
}

func bannerOnce(site *netlab.Site, addr string) (string, error) {
	c, err := site.Dial(addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, msgSize)
	if _, err := io.ReadFull(c, b); err != nil {
		return "", err
	}
	return bannerName(b), nil
}
