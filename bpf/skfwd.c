//go:build ignore

// skfwd's kernel data path: an sk_skb stream verdict program that moves each byte a promoted
// socket receives straight to the egress of its peer socket, so userspace never touches the
// payload of a bulk connection. See shared/sockmap-notes.md for the measured facts and pitfalls
// behind every choice here.
//
// Headers come from Debian's linux-libc-dev (UAPI: struct __sk_buff and sockmap are stable
// UAPI, so no vmlinux.h/BTF of the build machine is needed) and libbpf-dev (helper
// declarations); nothing third-party is copied into the tree. The three kernel structures the
// verdict reads are declared below with only the fields it uses; CO-RE relocates them against
// the running kernel's BTF at load time.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// One direction of a promoted connection, keyed by the socket cookie of its source socket.
// Only the verdict writes it after insert (userspace replacing the element would lose the
// verdict's concurrent additions to the old one).
struct direction {
	__u64 peer;       // cookie of the socket whose egress gets this socket's bytes
	__u64 redirected; // bytes redirected to the peer since promotion
	__u64 trimmed;    // bytes of retransmissions already passed on, cut off (overlap())
	__u64 lost;       // bytes dropped because their overlap could not be cut off
};

// When userspace wants to hear about a direction, keyed like directions. Written by userspace
// (whole-element replacement), read by the verdict, which only ever sets signalled.
struct limit {
	__u64 check_at;  // redirected count at which userspace wants an event
	__u32 signalled; // an event for this check_at was sent
	__u32 _pad;
};

// Every promoted socket, as a redirect target. No program is attached to this map: sockets go
// in here first, so by the time the verdict runs for either side its peer is already present
// (notes, pitfall 1: otherwise the first bytes can be redirected to nowhere).
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} targets SEC(".maps");

// The same sockets once both are in targets; the verdict program is attached to this map.
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct direction);
} directions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct limit);
} limits SEC(".maps");

// Cookies of directions that reached their check_at. Bytes redirected to a peer wait, charged
// to no socket, until the peer can send them; nothing in the kernel bounds that queue (notes:
// "no backpressure"). Rather than poll every connection, userspace learns from these events
// when a direction has redirected another bound's worth, and then compares with what the peer
// has really sent: a healthy direction gets a new check_at, a backlogged one leaves the
// kernel path (pkg/datapath, backlog.go).
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

// Open connections per (routing key id, target id), kept by userspace at admission and
// teardown and read by the selector and metrics.
struct open_key {
	__u32 routing_key;
	__u32 target;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct open_key);
	__type(value, __u64);
} open_counts SEC(".maps");

// A retransmitted segment can start before the bytes TCP has already passed on (its first
// part arrived before, its last part did not) and TCP queues it whole; readers skip the old
// part by comparing its sequence number with copied_seq. The sockmap's reader
// (tcp_read_skb) does not: it hands the verdict the whole skb, so without the cut below the
// peer gets the old bytes a second time (TestKernelPathRetransmissionOverlappingReadBytes
// makes one; under load it was about one promotion in 400, ~100 KiB repeated). copied_seq is
// exact here because tcp_eat_skb advances it per skb, as each verdict is applied: the
// sockmap fix behind the 6.1.32 / 6.4 kernel floor (pkg/loader).
struct sk_buff {
	struct sock *sk;
	char cb[48];
} __attribute__((preserve_access_index));

struct tcp_skb_cb {
	__u32 seq;
} __attribute__((preserve_access_index));

struct tcp_sock {
	__u32 copied_seq;
} __attribute__((preserve_access_index));

// Since 6.2. Weak: on an older kernel the loader leaves them out, ksym_exists is false, and the
// verifier drops the code that calls them.
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

#define ksym_exists(sym) (!!(sym))

// bpf_skb_adjust_room cuts at most this much per call on an sk_skb.
#define MAX_CUT 0xfff
// 64 cuts: 256 KiB, four times the largest segment TCP builds without BIG TCP.
#define MAX_CUTS 64

// The cuts one segment may take, at most MAX_CUTS; tests lower it to reach the drop below.
volatile const __u32 max_cuts = MAX_CUTS;

// overlap is how many bytes at the front of skb TCP has already passed on.
static __u32 overlap(struct __sk_buff *ctx)
{
	if (!ksym_exists(bpf_cast_to_kern_ctx) || !ksym_exists(bpf_rdonly_cast))
		return 0;
	struct sk_buff *skb = bpf_cast_to_kern_ctx(ctx);
	// tcp_read_skb makes the socket the skb's owner; without it there is no copied_seq to
	// compare with (a read through a NULL pointer here yields 0, not a fault).
	if (!skb->sk)
		return 0;
	struct tcp_skb_cb *cb = bpf_rdonly_cast(skb->cb, bpf_core_type_id_kernel(struct tcp_skb_cb));
	struct tcp_sock *tp = bpf_rdonly_cast(skb->sk, bpf_core_type_id_kernel(struct tcp_sock));
	__s32 old = (__s32)(tp->copied_seq - cb->seq);
	return old > 0 ? old : 0;
}

// cut removes the first n bytes of skb; it returns 1 if it could, 0 if not.
static int cut(struct __sk_buff *skb, __u32 n)
{
	for (__u32 i = 0; i < MAX_CUTS && i < max_cuts && n > 0; i++) {
		__u32 step = n < MAX_CUT ? n : MAX_CUT;
		if (bpf_skb_adjust_room(skb, -(__s32)step, 0, 0))
			return 0;
		n -= step;
	}
	return n == 0;
}

SEC("sk_skb/stream_verdict")
int skfwd_verdict(struct __sk_buff *skb)
{
	// A zero-length skb carries a FIN. Redirecting it turns every half-close into a reset
	// on the peer (EPIPE); dropping it lets userspace see the end of stream and half-close the
	// peer itself once the redirected bytes are out (notes, pitfalls 4 and 5).
	if (skb->len == 0)
		return SK_DROP;

	__u64 cookie = bpf_get_socket_cookie(skb);
	struct direction *d = bpf_map_lookup_elem(&directions, &cookie);
	// Not ours (or being torn down): keep the bytes in the socket, where userspace can still
	// read them, rather than drop bytes TCP has already acknowledged.
	if (!d)
		return SK_PASS;
	__u32 old = overlap(skb);
	if (old) {
		if (old >= skb->len || !cut(skb, old)) {
			// Passing it on would repeat bytes; dropping it leaves a hole, which userspace
			// hears of now (lost, and an event) and answers with a reset.
			__sync_fetch_and_add(&d->lost, skb->len);
			bpf_ringbuf_output(&events, &cookie, sizeof(cookie), 0);
			return SK_DROP;
		}
		__sync_fetch_and_add(&d->trimmed, old);
	}
	__sync_fetch_and_add(&d->redirected, skb->len);
	// Looked up after the addition: userspace replaces the limit and then re-reads the count,
	// so every crossing is seen by one side or the other.
	struct limit *l = bpf_map_lookup_elem(&limits, &cookie);
	if (l && !l->signalled && d->redirected >= l->check_at) {
		// Marked only once the event is out: a full ring buffer just means the next skb tries
		// again.
		if (bpf_ringbuf_output(&events, &cookie, sizeof(cookie), 0) == 0)
			l->signalled = 1;
	}
	return bpf_sk_redirect_hash(skb, &targets, &d->peer, 0);
}

// Sockets to take out of the verdict map, keyed by cookie: userspace adds one with LEAVE_ASKED
// to demote a direction, and the sock_ops program below removes the socket at its next
// segment in or out (an ACK of what it receives, at the latest) and sets LEAVE_DONE.
//
// Why not remove it from userspace: while the kernel feeds a batch of a socket's receive queue
// to the verdict (tcp_read_skb), a removal on another CPU takes the program away mid-batch,
// and sk_psock_verdict_recv drops every skb left in it, bytes TCP has already acknowledged
// (seen once in about 550 demotions under load, README "Data path"). The batch
// runs under the socket's lock, and so do the sock_ops header callbacks, where the removal
// therefore cannot meet one.
#define LEAVE_ASKED 0
#define LEAVE_DONE 1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} leaving SEC(".maps");

SEC("sockops")
int skfwd_sockops(struct bpf_sock_ops *ops)
{
	switch (ops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		// The header callbacks run only for sockets that ask for them, and which connections
		// will be promoted is not known yet. A socket on the kernel path receives on TCP's
		// fast path, which skips the parse callback, but it sends ACKs for what it receives,
		// and each outgoing segment asks for its option length (one program run; nothing is
		// reserved, so nothing changes on the wire).
		bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags |
						       BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG |
						       BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
		break;
	case BPF_SOCK_OPS_PARSE_HDR_OPT_CB:
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB: {
		__u64 cookie = bpf_get_socket_cookie(ops);
		__u32 *state = bpf_map_lookup_elem(&leaving, &cookie);
		if (state && *state == LEAVE_ASKED) {
			bpf_map_delete_elem(&sockets, &cookie);
			*state = LEAVE_DONE;
		}
		break;
	}
	}
	return 1;
}
