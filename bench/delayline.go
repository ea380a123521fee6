package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// The delay line stands in for distance between sites: this kernel has neither netem nor fq,
// so a TUN device in each gateway namespace is joined by this program, which holds every
// packet for a fixed time before passing it on. A packet keeps its place in line (one FIFO
// per direction), so TCP sees delay, never reordering or loss.

func cmdDelayLine(args []string) int {
	fs := flag.NewFlagSet("delayline", flag.ContinueOnError)
	nsA := fs.String("ns-a", "", "namespace path of side A (/run/netns/NAME)")
	ifA := fs.String("if-a", "dl-a", "TUN device name at side A")
	nsB := fs.String("ns-b", "", "namespace path of side B")
	ifB := fs.String("if-b", "dl-b", "TUN device name at side B")
	delay := fs.Duration("delay", 10*time.Millisecond, "one-way delay")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	a, err := openTun(*nsA, *ifA)
	if err == nil {
		var b int
		if b, err = openTun(*nsB, *ifB); err == nil {
			go forward(a, b, *delay)
			go forward(b, a, *delay)
			fmt.Println("ready")
			select {}
		}
	}
	fmt.Fprintf(os.Stderr, "delayline: %v\n", err)
	return 1
}

// openTun creates TUN device name inside the namespace at nsPath and returns its fd. The
// device is not persistent: it disappears when this process exits.
func openTun(nsPath, name string) (int, error) {
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked on failure: the thread dies with the goroutine
		fd, err := func() (int, error) {
			orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return -1, err
			}
			defer unix.Close(orig)
			target, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return -1, fmt.Errorf("open %s: %w", nsPath, err)
			}
			defer unix.Close(target)
			if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
				return -1, fmt.Errorf("enter %s: %w", nsPath, err)
			}
			fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err == nil {
				var ifr *unix.Ifreq
				if ifr, err = unix.NewIfreq(name); err == nil {
					ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
					err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
				}
				if err != nil {
					unix.Close(fd)
					fd = -1
					err = fmt.Errorf("create TUN %s: %w", name, err)
				}
			}
			if serr := unix.Setns(orig, unix.CLONE_NEWNET); serr != nil {
				return -1, fmt.Errorf("leave %s: %w", nsPath, serr)
			}
			runtime.UnlockOSThread()
			return fd, err
		}()
		done <- result{fd, err}
	}()
	r := <-done
	return r.fd, r.err
}

type packet struct {
	due time.Time
	b   []byte
}

// forward moves packets from src to dst, each delay after it arrived. Reads and writes are
// blocking system calls on goroutines of their own; the writer sleeps with clock_nanosleep,
// which is finer than the Go timer for sub-millisecond remainders.
func forward(src, dst int, delay time.Duration) {
	q := make(chan packet, 1<<16)
	go func() {
		for p := range q {
			if d := time.Until(p.due); d > 0 {
				ts := unix.NsecToTimespec(d.Nanoseconds())
				for unix.Nanosleep(&ts, &ts) == unix.EINTR {
				}
			}
			if _, err := unix.Write(dst, p.b); err != nil {
				fmt.Fprintf(os.Stderr, "delayline: write: %v\n", err)
			}
		}
	}()
	buf := make([]byte, 65536)
	for {
		n, err := unix.Read(src, buf)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			fmt.Fprintf(os.Stderr, "delayline: read: %v\n", err)
			os.Exit(1)
		}
		q <- packet{due: time.Now().Add(delay), b: append([]byte(nil), buf[:n]...)}
	}
}
