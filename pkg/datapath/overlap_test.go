package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Queue selectors of TCP_REPAIR_QUEUE (include/uapi/linux/tcp.h).
const (
	tcpRecvQueue = 1
	tcpSendQueue = 2
)

// sequenceNumbers reads c's next sequence number to send and next to receive, which TCP
// exposes only in repair mode; c leaves repair mode again before this returns.
func sequenceNumbers(c *net.TCPConn) (snd, rcv uint32, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	cerr := rc.Control(func(f uintptr) {
		fd := int(f)
		if err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1); err != nil {
			return
		}
		defer unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 0)
		read := func(queue int) (uint32, error) {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
				return 0, err
			}
			v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
			return uint32(v), err
		}
		if snd, err = read(tcpSendQueue); err == nil {
			rcv, err = read(tcpRecvQueue)
		}
	})
	if cerr != nil {
		return 0, 0, cerr
	}
	return snd, rcv, err
}

// injectSegment sends, as if from c, one TCP segment with seq and payload to c's peer, through
// a raw socket: a retransmission of c's own making.
func injectSegment(c *net.TCPConn, seq, ack uint32, payload []byte) error {
	src, dst := c.LocalAddr().(*net.TCPAddr), c.RemoteAddr().(*net.TCPAddr)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	tcp := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], uint16(src.Port))
	binary.BigEndian.PutUint16(tcp[2:], uint16(dst.Port))
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = 0x18 // PSH|ACK
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	copy(tcp[20:], payload)
	pseudo := make([]byte, 12, 12+len(tcp))
	copy(pseudo[0:], src.IP.To4())
	copy(pseudo[4:], dst.IP.To4())
	pseudo[9] = unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:], checksum(append(pseudo, tcp...)))
	ip := make([]byte, 20, 20+len(tcp))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
	ip[8] = 64
	ip[9] = unix.IPPROTO_TCP
	copy(ip[12:], src.IP.To4())
	copy(ip[16:], dst.IP.To4())
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	to := &unix.SockaddrInet4{}
	copy(to.Addr[:], dst.IP.To4())
	return unix.Sendto(fd, append(ip, tcp...), 0, to)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// trimCounter is a KernelObserver that only counts trimmed bytes.
type trimCounter struct{ bytes atomic.Uint64 }

func (*trimCounter) Promoted()          {}
func (*trimCounter) Demoted(string)     {}
func (*trimCounter) FellBack(string)    {}
func (o *trimCounter) Trimmed(n uint64) { o.bytes.Add(n) }

// TestKernelPathRetransmissionOverlappingReadBytes: a retransmitted segment whose front the
// receiver had already delivered (made here by hand: a raw segment from the client's address
// that starts some bytes before the receiver's next expected byte). TCP queues it whole, and
// the kernel's sockmap reader hands the verdict all of it; the peer must still get each byte
// once, and the connection must end cleanly. 10 000 bytes take the verdict three cuts.
func TestKernelPathRetransmissionOverlappingReadBytes(t *testing.T) {
	for _, old := range []int{10, 10_000} {
		t.Run(fmt.Sprintf("%d bytes old", old), func(t *testing.T) {
			trims := &trimCounter{}
			k := newKernelWith(t, KernelOptions{PromoteBytes: 1, PromoteAfter: time.Hour, Always: true, MaxPromoted: 16, Observer: trims})
			o := retransmitOverlapping(t, k, old)
			// clientA's own stack has not sent next yet: sending it now makes its segment a
			// plain duplicate for the receiver, and both ends agree on the stream again.
			if _, err := o.clientA.Write(o.next); err != nil {
				t.Fatal(err)
			}
			if err := o.clientA.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			_ = o.clientB.SetReadDeadline(time.Now().Add(5 * time.Second))
			rest, err := io.ReadAll(o.clientB)
			if err != nil || !bytes.Equal(rest, o.next) {
				t.Fatalf("after the overlapping segment the reader got %q and %v; want %q and a clean end of stream", rest, err, o.next)
			}
			if err := o.clientB.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			r := o.wait(t)
			if want := int64(len(o.first) + len(o.next)); r.Err != nil || r.AToB != want || r.BToA != 0 {
				t.Fatalf("result %+v; want no error, %d bytes A to B", r, want)
			}
			if n := trims.bytes.Load(); n != uint64(old) {
				t.Fatalf("%d bytes counted as trimmed, want %d", n, old)
			}
		})
	}
}

// TestKernelPathUncuttableRetransmissionResets: a segment with a longer old front than the
// verdict may cut is dropped, and the connection is reset at once: the peer gets nothing of
// it, neither the old bytes again nor the new ones after a hole.
func TestKernelPathUncuttableRetransmissionResets(t *testing.T) {
	k := newKernelWith(t, KernelOptions{PromoteBytes: 1, PromoteAfter: time.Hour, Always: true, MaxPromoted: 16, maxCuts: 1})
	o := retransmitOverlapping(t, k, 10_000)
	_ = o.clientB.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := readUntilError(o.clientB)
	if got != 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the reader got %d more bytes and then %v; want none and a reset", got, err)
	}
	if r := o.wait(t); r.Err == nil || !strings.Contains(r.Err.Error(), "could not cut") {
		t.Fatalf("splice ended with %v; want the verdict's drop named", r.Err)
	}
}

// overlapped is a promoted connection that has just received, from clientA's address, a
// segment carrying the last old bytes clientA sent and then next, which clientA has not sent.
type overlapped struct {
	spliced
	first, next []byte
}

// retransmitOverlapping promotes a connection on k, passes some bytes from clientA to clientB,
// and injects a segment whose first old bytes clientB has already read.
func retransmitOverlapping(t *testing.T, k *Kernel, old int) overlapped {
	t.Helper()
	if !k.objs.TrimsRetransmissions() {
		t.Skip("this kernel lacks bpf_cast_to_kern_ctx and bpf_rdonly_cast (Linux 6.2): the verdict cannot cut the old front, and the accounting resets such a connection instead")
	}
	s := splice(t, k, nil)
	if !k.waitActive(1, 3*time.Second) {
		t.Fatalf("not promoted: %v", fallbacks(k))
	}
	o := overlapped{spliced: s, first: bytes.Repeat([]byte("0123456789"), 1100), next: []byte("the twenty new bytes")}
	if _, err := s.clientA.Write(o.first); err != nil {
		t.Fatal(err)
	}
	_ = s.clientB.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(s.clientB, make([]byte, len(o.first))); err != nil {
		t.Fatal(err)
	}
	// Once the receiver has acknowledged everything, clientA's next sequence number is the
	// receiver's next expected one.
	if !waitUntil(3*time.Second, func() bool { n, err := outq(s.clientA); return err == nil && n == 0 }) {
		t.Fatal("the first bytes were not acknowledged")
	}
	snd, rcv, err := sequenceNumbers(s.clientA)
	if err != nil {
		t.Fatalf("sequence numbers: %v", err)
	}
	segment := append(bytes.Clone(o.first[len(o.first)-old:]), o.next...)
	if err := injectSegment(s.clientA, snd-uint32(old), rcv, segment); err != nil {
		t.Fatal(err)
	}
	return o
}

// outq is how many bytes c has sent and not yet had acknowledged, plus any not yet sent.
func outq(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	if cerr := rc.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); cerr != nil {
		return 0, cerr
	}
	return n, err
}
