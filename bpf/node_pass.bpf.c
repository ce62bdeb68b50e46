// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
// The node pass: every network namespace's conntrack count and TIME_WAIT count, and
// every TCP listener's accept queue, its limit and its SYN queue, in one run of one
// program, without entering a namespace (KERNEL.md §11).
//
// How it runs: a task iterator (`iter/task`, 5.8+) whose program does the whole pass on
// its first task and writes one status word; user space reads that word from a new
// iterator descriptor once per --netns.sample-interval and stops there, so no other task
// is visited. The records go to two BPF_F_MMAPABLE arrays that user space maps once.
//
// What it walks, lockless under the RCU read section the iterator holds:
// - the kernel's list of namespaces, from the reader's own (`net->list`); the list's head
//   is not inside a `struct net`, and is recognised by its `ns.ops` differing from a real
//   namespace's; namespaces being torn down (reference count 0) are skipped;
// - the listening hash (`lhash2`), shared by every namespace and reached through the
//   reader's namespace's `tcp_death_row.hashinfo`; listeners are freed after an RCU
//   grace period, so the walk is safe; its chains end in a "nulls" marker (odd value).
//
// Needs bpf_loop (5.17+) for the loops the verifier could not otherwise bound, and
// reads kernel memory with bpf_probe_read_kernel (blocked by lockdown=confidentiality).
// On a kernel where this does not load or verify, user space keeps the per-namespace
// reads (src/node_pass.rs says which, and why).
//
// Built by scripts/build-bpf.sh like drop_reasons.bpf.c, with only the fields read
// declared and every access a CO-RE relocation.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

typedef struct {
	int counter;
} atomic_t;

typedef struct {
	atomic_t refs;
} refcount_t;

struct list_head {
	struct list_head *next;
} __attribute__((preserve_access_index));

struct proc_ns_operations;

struct ns_common {
	const struct proc_ns_operations *ops;
	unsigned int inum;
} __attribute__((preserve_access_index));

// The namespace's reference count: `__ns_ref` in 6.18, `count` before.
struct ns_common___new {
	refcount_t __ns_ref;
} __attribute__((preserve_access_index));

struct ns_common___old {
	refcount_t count;
} __attribute__((preserve_access_index));

struct hlist_nulls_node {
	struct hlist_nulls_node *next;
} __attribute__((preserve_access_index));

struct inet_listen_hashbucket {
	struct {
		struct hlist_nulls_node *first;
	} nulls_head;
} __attribute__((preserve_access_index));

struct inet_hashinfo {
	unsigned int lhash2_mask;
	struct inet_listen_hashbucket *lhash2;
} __attribute__((preserve_access_index));

// 6.1+: embedded, counted by a refcount that starts at 1.
struct inet_timewait_death_row {
	refcount_t tw_refcount;
	struct inet_hashinfo *hashinfo;
} __attribute__((preserve_access_index));

struct netns_ipv4 {
	struct inet_timewait_death_row tcp_death_row;
} __attribute__((preserve_access_index));

struct net_generic {
	struct {
		unsigned int len;
	} s;
	void *ptr[0];
} __attribute__((preserve_access_index));

struct net {
	struct list_head list;
	struct ns_common ns;
	struct netns_ipv4 ipv4;
	struct net_generic *gen;
	__u64 net_cookie;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct in6_addr {
	union {
		__u32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

struct sock_common {
	struct hlist_nulls_node skc_nulls_node;
	__u32 skc_rcv_saddr;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	__u32 sk_ack_backlog;
	__u32 sk_max_ack_backlog;
} __attribute__((preserve_access_index));

struct request_sock_queue {
	atomic_t qlen;
} __attribute__((preserve_access_index));

struct inet_connection_sock {
	struct request_sock_queue icsk_accept_queue;
} __attribute__((preserve_access_index));

struct ctl_table {
	const char *procname;
	void *data;
} __attribute__((preserve_access_index));

struct nsproxy {
	struct net *net_ns;
} __attribute__((preserve_access_index));

struct task_struct {
	struct nsproxy *nsproxy;
} __attribute__((preserve_access_index));

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
} __attribute__((preserve_access_index));

#define MAX_NAMESPACES 4096
#define MAX_LISTENERS 8192
// Buckets read at once (one probe read of 16 x 16 bytes).
#define GROUP 16
#define BUCKET_SIZE 16
// Sockets followed along one chain: a SO_REUSEPORT group shares one.
#define MAX_CHAIN 1024
// Slots of net_generic searched for conntrack's, and words of each searched.
#define MAX_GENERIC 128
#define SEARCH_WORDS 16

#define TCP_LISTEN 10
#define AF_INET 2
#define AF_INET6 10

// One namespace, as `NsRecord` in src/node_pass.rs.
struct ns_record {
	__u64 cookie;
	__u32 ino;
	// The conntrack table's entries; valid when meta.ct_found.
	__u32 ct_count;
	__u32 time_wait;
	__u32 pad;
};

// One listening socket, as `ListenerRecord` in src/node_pass.rs.
struct listener_record {
	__u64 cookie;
	__u32 ino;
	__u16 family;
	__u16 port;
	__u32 addr[4];
	__u32 queue;
	__u32 limit;
	__u32 syn_queue;
	__u32 pad;
};

// The pass's result, as `Meta` in src/node_pass.rs.
struct meta {
	__u64 passes;
	__u32 namespaces;
	__u32 listeners;
	// Namespaces and listeners that did not fit.
	__u32 namespaces_lost;
	__u32 listeners_lost;
	__u32 buckets;
	// 1 once conntrack's per-namespace data was found (it is looked for once).
	__u32 ct_found;
	__u32 ct_slot;
	__u32 ct_offset;
	// Bit 0: the walk of namespaces did not come back to its start within
	// MAX_NAMESPACES (a list changing under it); bit 1: a chain longer than MAX_CHAIN;
	// bit 2: the listening hash's buckets are not 16 bytes; bit 3: a read failed.
	__u32 trouble;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_NAMESPACES);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ns_record);
} namespaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_LISTENERS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct listener_record);
} listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct meta);
} result SEC(".maps");

// Scratch for a group of buckets (too large for the 512-byte stack with the rest).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64[GROUP * BUCKET_SIZE / 8]);
} scratch SEC(".maps");

struct ns_walk {
	struct meta *m;
	struct list_head *start;
	struct list_head *pos;
	const struct proc_ns_operations *ops;
	__u64 list_offset;
	int done;
};

struct chain_walk {
	struct meta *m;
	struct hlist_nulls_node *node;
};

struct bucket_walk {
	struct meta *m;
	struct inet_listen_hashbucket *lhash2;
	__u64 *buckets;
};

struct ct_search {
	struct meta *m;
	struct net_generic *gen;
	__u32 len;
};

static __always_inline __u32 ns_refs(struct net *net)
{
	if (bpf_core_field_exists(struct ns_common___new, __ns_ref))
		return BPF_CORE_READ((struct ns_common___new *)&net->ns, __ns_ref.refs.counter);
	return BPF_CORE_READ((struct ns_common___old *)&net->ns, count.refs.counter);
}

// One namespace's record: its identity, TIME_WAIT sockets and conntrack entries.
static __always_inline void fill_ns(struct meta *m, struct net *net, struct ns_record *r)
{
	r->cookie = BPF_CORE_READ(net, net_cookie);
	r->ino = BPF_CORE_READ(net, ns.inum);
	// The refcount starts at 1 (as /proc/net/sockstat reads it).
	r->time_wait = BPF_CORE_READ(net, ipv4.tcp_death_row.tw_refcount.refs.counter) - 1;
	r->ct_count = 0;
	r->pad = 0;
	if (!m->ct_found)
		return;
	struct net_generic *gen = BPF_CORE_READ(net, gen);
	__u32 slot = m->ct_slot;
	void *cnet = 0;
	if (!gen || slot >= MAX_GENERIC || slot >= BPF_CORE_READ(gen, s.len))
		return;
	if (bpf_probe_read_kernel(&cnet, sizeof(cnet), &gen->ptr[slot]) || !cnet)
		return;
	int count = 0;
	if (bpf_probe_read_kernel(&count, sizeof(count), cnet + (m->ct_offset & 0xff)) == 0)
		r->ct_count = count;
}

static long ns_step(__u32 i, struct ns_walk *w)
{
	struct list_head *pos = w->pos;
	struct list_head *next = BPF_CORE_READ(pos, next);
	if (!next) {
		w->m->trouble |= 8;
		return 1;
	}
	w->pos = next;
	if (next == w->start) {
		w->done = 1;
		return 1;
	}
	struct net *net = (void *)next - w->list_offset;
	// The list's head, which is no namespace.
	if (BPF_CORE_READ(net, ns.ops) != w->ops)
		return 0;
	if (ns_refs(net) == 0)
		return 0;
	__u32 n = w->m->namespaces;
	if (n >= MAX_NAMESPACES) {
		w->m->namespaces_lost++;
		return 0;
	}
	struct ns_record *r = bpf_map_lookup_elem(&namespaces, &n);
	if (!r)
		return 1;
	fill_ns(w->m, net, r);
	w->m->namespaces = n + 1;
	return 0;
}

static __always_inline int is_conntrack_max(const char *name)
{
	const char want[17] = "nf_conntrack_max";
	for (int k = 0; k < 17; k++)
		if (name[k] != want[k])
			return 0;
	return 1;
}

// Slot `i` of net_generic: is it conntrack's? Its sysctl table's header is one of its
// first words, and that table starts with nf_conntrack_max, whose next entry,
// nf_conntrack_count, points at the count itself.
static long ct_slot_step(__u32 i, struct ct_search *s)
{
	if (i >= s->len)
		return 1;
	if (i == 0)
		return 0;
	void *cnet = 0;
	struct net_generic *gen = s->gen;
	if (bpf_probe_read_kernel(&cnet, sizeof(cnet), &gen->ptr[i]) || !cnet)
		return 0;
	__u64 words[SEARCH_WORDS];
	if (bpf_probe_read_kernel(words, sizeof(words), cnet))
		return 0;
	for (int w = 1; w < SEARCH_WORDS; w++) {
		void *header = (void *)words[w];
		if (((__u64)header >> 48) != 0xffff)
			continue;
		struct ctl_table *table = 0;
		if (bpf_probe_read_kernel(&table, sizeof(table), header) || !table)
			continue;
		const char *procname = 0;
		if (bpf_probe_read_kernel(&procname, sizeof(procname), &table->procname) || !procname)
			continue;
		char name[17] = {};
		if (bpf_probe_read_kernel(name, sizeof(name), procname))
			continue;
		if (!is_conntrack_max(name))
			continue;
		void *data = 0;
		struct ctl_table *second = (void *)table + bpf_core_type_size(struct ctl_table);
		if (bpf_probe_read_kernel(&data, sizeof(data), &second->data))
			continue;
		__u64 offset = data - cnet;
		if (offset >= SEARCH_WORDS * 8)
			continue;
		s->m->ct_slot = i;
		s->m->ct_offset = offset;
		s->m->ct_found = 1;
		return 1;
	}
	return 0;
}

static long chain_step(__u32 i, struct chain_walk *c)
{
	struct hlist_nulls_node *node = c->node;
	if ((__u64)node & 1)
		return 1;
	struct sock *sk = (void *)node - bpf_core_field_offset(struct sock, __sk_common.skc_nulls_node);
	c->node = BPF_CORE_READ(node, next);
	if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_LISTEN)
		return 0;
	struct meta *m = c->m;
	__u32 n = m->listeners;
	if (n >= MAX_LISTENERS) {
		m->listeners_lost++;
		return 0;
	}
	struct listener_record *r = bpf_map_lookup_elem(&listeners, &n);
	if (!r)
		return 1;
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	r->cookie = BPF_CORE_READ(net, net_cookie);
	r->ino = BPF_CORE_READ(net, ns.inum);
	r->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	r->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (r->family == AF_INET6) {
		BPF_CORE_READ_INTO(&r->addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32);
	} else {
		r->addr[0] = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		r->addr[1] = r->addr[2] = r->addr[3] = 0;
	}
	r->queue = BPF_CORE_READ(sk, sk_ack_backlog);
	r->limit = BPF_CORE_READ(sk, sk_max_ack_backlog);
	r->syn_queue = BPF_CORE_READ((struct inet_connection_sock *)sk, icsk_accept_queue.qlen.counter);
	r->pad = 0;
	m->listeners = n + 1;
	return 0;
}

static long bucket_group_step(__u32 g, struct bucket_walk *b)
{
	__u64 *buf = b->buckets;
	if (bpf_probe_read_kernel(buf, GROUP * BUCKET_SIZE, (void *)b->lhash2 + (__u64)g * GROUP * BUCKET_SIZE)) {
		b->m->trouble |= 8;
		return 1;
	}
	for (int j = 0; j < GROUP; j++) {
		// The chain's first node: the second word of a 16-byte bucket (lock, head).
		__u64 first = buf[j * 2 + 1];
		if (first & 1)
			continue;
		struct chain_walk c = { .m = b->m, .node = (void *)first };
		bpf_loop(MAX_CHAIN, chain_step, &c, 0);
		if (!((__u64)c.node & 1))
			b->m->trouble |= 2;
	}
	return 0;
}

SEC("iter/task")
int node_pass(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	__u32 zero = 0;
	__u64 status = 0;
	if (ctx->meta->seq_num != 0 || !ctx->task)
		return 0;
	struct meta *m = bpf_map_lookup_elem(&result, &zero);
	__u64 *buckets = bpf_map_lookup_elem(&scratch, &zero);
	if (!m || !buckets) {
		status = 1;
		bpf_seq_write(seq, &status, sizeof(status));
		return 0;
	}
	m->passes++;
	m->namespaces = m->listeners = m->namespaces_lost = m->listeners_lost = 0;
	m->trouble = 0;

	struct task_struct *task = bpf_get_current_task_btf();
	struct net *own = BPF_CORE_READ(task, nsproxy, net_ns);
	if (!own) {
		status = 2;
		bpf_seq_write(seq, &status, sizeof(status));
		return 0;
	}
	if (!m->ct_found) {
		struct net_generic *gen = BPF_CORE_READ(own, gen);
		struct ct_search s = { .m = m, .gen = gen };
		if (gen) {
			s.len = BPF_CORE_READ(gen, s.len);
			bpf_loop(MAX_GENERIC, ct_slot_step, &s, 0);
		}
	}

	// Every namespace, the reader's own first.
	struct ns_walk w = {
		.m = m,
		.start = (void *)own + bpf_core_field_offset(struct net, list),
		.ops = BPF_CORE_READ(own, ns.ops),
		.list_offset = bpf_core_field_offset(struct net, list),
	};
	w.pos = w.start;
	// The walk starts after its start: the own namespace is taken here.
	__u32 first = 0;
	struct ns_record *r = bpf_map_lookup_elem(&namespaces, &first);
	if (r) {
		fill_ns(m, own, r);
		m->namespaces = 1;
	}
	bpf_loop(MAX_NAMESPACES + 1, ns_step, &w, 0);
	if (!w.done)
		m->trouble |= 1;

	// Every listener of the node.
	struct inet_hashinfo *h = BPF_CORE_READ(own, ipv4.tcp_death_row.hashinfo);
	if (bpf_core_type_size(struct inet_listen_hashbucket) != BUCKET_SIZE) {
		m->trouble |= 4;
	} else if (h) {
		struct bucket_walk b = { .m = m, .lhash2 = BPF_CORE_READ(h, lhash2), .buckets = buckets };
		__u32 nbuckets = BPF_CORE_READ(h, lhash2_mask) + 1;
		m->buckets = nbuckets;
		if (b.lhash2)
			bpf_loop(nbuckets / GROUP, bucket_group_step, &b, 0);
	}
	bpf_seq_write(seq, &status, sizeof(status));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
