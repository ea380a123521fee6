package mux

// The measurement behind the choice of multiplexer (README, "Link connections and streams"):
// 32 workers each open a stream, send 64 bytes, read the 64-byte echo and close, over one
// loopback link connection, against a new TCP connection per operation and three published
// Go multiplexers. Both ends run in this process, so the CPU per operation is both ends'.
//
//	go test -run '^$' -bench ShortStreams -benchtime 3s ./pkg/mux/
//
// It reports operations per second, CPU microseconds per operation (getrusage) and read and
// write system calls per operation (/proc/self/io).

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	hyamux "github.com/hashicorp/yamux"
	lyamux "github.com/libp2p/go-yamux/v5"
	"github.com/xtaci/smux"
)

// opener opens one stream (or connection) for an operation.
type opener func(msg []byte) (io.ReadWriteCloser, error)

type candidate struct {
	name  string
	setup func(tb testing.TB) (opener, func())
}

var candidates = []candidate{
	{"tcp-per-operation", setupTCP},
	{"skfwd-mux", setupSkfwd},
	{"hashicorp-yamux", setupHashicorp},
	{"libp2p-yamux", setupLibp2p},
	{"xtaci-smux", setupSmux},
}

func BenchmarkShortStreams(b *testing.B) {
	for _, c := range candidates {
		b.Run(c.name, func(b *testing.B) {
			open, stop := c.setup(b)
			defer stop()
			msg := bytes.Repeat([]byte("m"), 64)
			b.SetParallelism(32 / max(1, runtimeProcs()))
			cpu0, io0 := cpuTime(), syscalls()
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 64)
				for pb.Next() {
					if err := operation(open, msg, buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			el := time.Since(start)
			cpu1, io1 := cpuTime(), syscalls()
			n := float64(b.N)
			b.ReportMetric(n/el.Seconds(), "ops/s")
			b.ReportMetric(float64(cpu1-cpu0)/float64(time.Microsecond)/n, "cpu-µs/op")
			b.ReportMetric(float64(io1[0]-io0[0])/n, "reads/op")
			b.ReportMetric(float64(io1[1]-io0[1])/n, "writes/op")
		})
	}
}

func operation(open opener, msg, buf []byte) error {
	st, err := open(msg)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := io.ReadFull(st, buf); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	return nil
}

// echoServer serves one stream or connection: echo until the client's end.
func echoServer(c io.ReadWriteCloser) {
	buf := make([]byte, 4<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	c.Close()
}

// acceptEchoes serves every stream accept returns, until it fails.
func acceptEchoes(accept func() (io.ReadWriteCloser, error)) {
	for {
		c, err := accept()
		if err != nil {
			return
		}
		go echoServer(c)
	}
}

func setupTCP(tb testing.TB) (opener, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go acceptEchoes(func() (io.ReadWriteCloser, error) { return ln.Accept() })
	addr := ln.Addr().String()
	return func(msg []byte) (io.ReadWriteCloser, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		_, err = c.Write(msg)
		return c, err
	}, func() { ln.Close() }
}

// skfwdStream closes the way the gateway does once both ends are done.
type skfwdStream struct{ *Stream }

func setupSkfwd(tb testing.TB) (opener, func()) {
	dc, ac := tcpPair(tb)
	ready := make(chan *Session, 1)
	go func() {
		a, err := New(ac, Options{OnOpen: func(st *Stream) {
			_ = st.Accept()
			echoServer(skfwdStream{st})
		}})
		if err != nil {
			tb.Error(err)
		}
		ready <- a
	}()
	d, err := New(dc, Options{Dialer: true})
	if err != nil {
		tb.Fatal(err)
	}
	a := <-ready
	r := req("bench")
	return func(msg []byte) (io.ReadWriteCloser, error) {
			st, err := d.Open(r, msg) // the first bytes travel in the open
			return skfwdStream{st}, err
		}, func() {
			d.Close(nil)
			a.Close(nil)
		}
}

func setupHashicorp(tb testing.TB) (opener, func()) {
	dc, ac := tcpPair(tb)
	cfg := hyamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cfg.AcceptBacklog = 1024
	cfg.StreamOpenTimeout = 0 // its default costs a goroutine and a timer per stream
	srv, err := hyamux.Server(ac, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	go acceptEchoes(func() (io.ReadWriteCloser, error) { return srv.Accept() })
	cli, err := hyamux.Client(dc, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return writeFirst(func() (io.ReadWriteCloser, error) { return cli.Open() }), func() { cli.Close(); srv.Close() }
}

func setupLibp2p(tb testing.TB) (opener, func()) {
	dc, ac := tcpPair(tb)
	cfg := lyamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	srv, err := lyamux.Server(ac, cfg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	go acceptEchoes(func() (io.ReadWriteCloser, error) { return srv.AcceptStream() })
	cli, err := lyamux.Client(dc, cfg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return writeFirst(func() (io.ReadWriteCloser, error) { return cli.OpenStream(tbContext(tb)) }), func() { cli.Close(); srv.Close() }
}

func setupSmux(tb testing.TB) (opener, func()) {
	dc, ac := tcpPair(tb)
	srv, err := smux.Server(ac, nil)
	if err != nil {
		tb.Fatal(err)
	}
	go acceptEchoes(func() (io.ReadWriteCloser, error) { return srv.AcceptStream() })
	cli, err := smux.Client(dc, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return writeFirst(func() (io.ReadWriteCloser, error) { return cli.OpenStream() }), func() { cli.Close(); srv.Close() }
}

func writeFirst(open func() (io.ReadWriteCloser, error)) opener {
	return func(msg []byte) (io.ReadWriteCloser, error) {
		st, err := open()
		if err != nil {
			return nil, err
		}
		_, err = st.Write(msg)
		return st, err
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// syscalls reads this process's read and write system call counts.
func syscalls() [2]int64 {
	var out [2]int64
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscr":
			out[0] = n
		case "syscw":
			out[1] = n
		}
	}
	return out
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

func tbContext(tb testing.TB) context.Context {
	if t, ok := tb.(interface{ Context() context.Context }); ok {
		return t.Context()
	}
	return context.Background()
}
