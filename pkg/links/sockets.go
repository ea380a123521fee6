package links

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// waitReadable blocks until c has data to read, without consuming any. It reports false when
// the peer closed or the socket failed instead. Idle tunnels wait here so the pool learns the
// moment one is put to use (and can replace it) without taking bytes from the request.
func waitReadable(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	readable := false
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			return false // not yet: let the netpoller wait for readability
		}
		readable = err == nil && n > 0
		return true
	})
	return err == nil && readable
}

// idleAlive reports whether an idle pooled connection is still open: no data waiting (an idle
// tunnel carries none) and no end of stream or error from the peer.
func idleAlive(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	alive := false
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		alive = errors.Is(err, unix.EAGAIN)
		return true
	})
	return err == nil && alive
}

func abort(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}
