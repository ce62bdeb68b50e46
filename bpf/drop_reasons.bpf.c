// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
// Counts dropped packets per (network namespace, drop reason) in the kernel.
//
// Attached BTF-typed (tp_btf) to the skb:kfree_skb tracepoint, which the kernel fires
// for every packet freed as dropped, with its enum skb_drop_reason (5.17+). No tracefs,
// no RLIMIT_MEMLOCK (the maps are charged to the loader's memory cgroup on 5.11+).
//
// Built by scripts/build-bpf.sh with Debian's clang; the object is committed beside this
// file and tests/bpf_object.rs proves it is this source's. The kernel structures are
// declared here with only the fields read, and preserve_access_index makes every access
// a CO-RE relocation: the loader moves each offset to the running kernel's layout, read
// from its BTF. No vmlinux.h (3 MB, one kernel's) is needed.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
	__u64 net_cookie;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct sock_common {
	possible_net_t skc_net;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
} __attribute__((preserve_access_index));

// Key: the namespace's cookie, unique for the boot (the kernel gives a freed
// namespace's inode to the next one, so an inode alone would carry a dead pod's drops to
// a new pod), its inode (the `netns` label, and how user space tells a dead namespace
// whose inode was reused), and the reason. Cookie and inode 0: the packet had neither a
// device nor a socket.
struct drop_key {
	__u64 cookie;
	__u32 ino;
	__u32 reason;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct drop_key);
	__type(value, __u64);
} drops SEC(".maps");

// Drops that found the map full: counted, so that an overflow is never silent.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} overflow SEC(".maps");

// The namespace of a dropped packet: its device's on the way in or out; else the
// socket that owns it; else the socket that was receiving it (rx_sk, 6.11+: TCP drops a
// packet on a listener's or a child's behalf with neither skb->dev nor skb->sk set).
static __always_inline struct net *net_of(struct sk_buff *skb, struct sock *rx_sk)
{
	struct net_device *dev = skb->dev;
	struct sock *sk;

	if (dev)
		return dev->nd_net.net;
	sk = skb->sk;
	if (sk)
		return sk->__sk_common.skc_net.net;
	if (rx_sk)
		return rx_sk->__sk_common.skc_net.net;
	return 0;
}

static __always_inline int count(struct sk_buff *skb, unsigned int reason, struct sock *rx_sk)
{
	struct drop_key key = {};
	struct net *net;
	__u64 one = 1, *n;
	__u32 zero = 0;

	// SKB_NOT_DROPPED_YET and SKB_CONSUMED are not drops.
	if (reason <= 1)
		return 0;
	net = net_of(skb, rx_sk);
	if (net) {
		key.cookie = net->net_cookie;
		key.ino = net->ns.inum;
	}
	key.reason = reason;
	n = bpf_map_lookup_elem(&drops, &key);
	if (n) {
		*n += 1;
		return 0;
	}
	if (bpf_map_update_elem(&drops, &key, &one, BPF_NOEXIST) == 0)
		return 0;
	// Another CPU may have added the key since the lookup.
	n = bpf_map_lookup_elem(&drops, &key);
	if (n) {
		*n += 1;
		return 0;
	}
	n = bpf_map_lookup_elem(&overflow, &zero);
	if (n)
		*n += 1;
	return 0;
}

// 6.11 and later pass the receiving socket as a fourth argument. The verifier rejects
// a program that reads an argument the tracepoint does not have, so the loader tries
// this one first and count_drop_3 on older kernels.
SEC("tp_btf/kfree_skb")
int BPF_PROG(count_drop, struct sk_buff *skb, void *location, unsigned int reason, struct sock *rx_sk)
{
	return count(skb, reason, rx_sk);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(count_drop_3, struct sk_buff *skb, void *location, unsigned int reason)
{
	return count(skb, reason, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
