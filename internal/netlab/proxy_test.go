package netlab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestForward relays from the host into a site's namespace: both directions, the half-close,
// a target that refuses, and Close ending a relayed connection still open.
func TestForward(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a network namespace")
	}
	lab := New("skfwd-not-needed", t.TempDir(), nil)
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	})
	s, err := lab.Site("fwd")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The server answers once its client has half-closed: the answer proves the half-close
	// crossed the forward, and the name proves the namespace's server answered.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				got, _ := io.ReadAll(c)
				fmt.Fprintf(c, "in %s: %s", s.Netns(), got)
			}()
		}
	}()

	f, err := s.Forward("127.0.0.1:0", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := dialHost(t, f.Addr())
	if _, err := io.WriteString(c, "hello"); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	got, err := io.ReadAll(c)
	c.Close()
	if want := "in " + s.Netns() + ": hello"; string(got) != want || err != nil {
		t.Fatalf("through the forward: %q, %v; want %q", got, err, want)
	}

	// A connection the server holds open (it waits for our half-close) ends with Close.
	open := dialHost(t, f.Addr())
	defer open.Close()
	if _, err := io.WriteString(open, "x"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the relay reach the server
	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5s with a relayed connection open")
	}
	_ = open.SetReadDeadline(time.Now().Add(2 * time.Second))
	if b, err := bufio.NewReader(open).ReadString('\n'); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("relayed connection after Close: read %q, %v; want it ended", b, err)
	}
	if c, err := net.DialTimeout("tcp", f.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts after Close", f.Addr())
	}

	// A target that refuses: the client's connection is closed, not left hanging.
	ln2, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := ln2.Addr().String()
	ln2.Close()
	f2, err := s.Forward("127.0.0.1:0", refusing)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	c2 := dialHost(t, f2.Addr())
	defer c2.Close()
	_ = c2.SetReadDeadline(time.Now().Add(3 * time.Second))
	if b, err := io.ReadAll(c2); err != nil || len(b) != 0 {
		t.Fatalf("forward to a refusing target: read %q, %v; want end of stream", b, err)
	}
}

func dialHost(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}
