/*
 * connlimit.bpf.c - per-source-IP connection limits in the kernel (two programs).
 *
 * Hooks, and why these:
 *   connlimit_admit   SEC("sk_reuseport"), attached to each reuseport group of our listening
 *                     sockets. It runs when the kernel picks a listening socket for a packet
 *                     that opens a connection (a SYN, or the ACK of a SYN cookie) and for
 *                     nothing else: established traffic never pays for it, other services on
 *                     the machine are never seen, and it needs no interface (every NIC, IPv4
 *                     and IPv6, loopback included). Returning SK_DROP makes the lookup fail,
 *                     so the kernel answers the SYN with a reset before any request socket
 *                     exists: a refused client costs one lookup, never an accept. The same
 *                     program also hands the SYN to the worker pinned to the CPU that
 *                     received it (bpf_sk_select_reuseport), so with RSS one flow stays on
 *                     one core. Alternatives: XDP/tc would have to be attached to every
 *                     interface and parse every packet; cgroup_skb runs for every packet of
 *                     every socket in the cgroup; sk_lookup is per network namespace and sees
 *                     every service's SYNs.
 *   connlimit_state   SEC("sockops"), attached (through a link, so it goes when we do) to our
 *                     cgroup. A connection accepted from one of our listening sockets carries
 *                     the listener's mark (socket storage created with BPF_F_CLONE), so the
 *                     program knows its own without a port table. At
 *                     BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB it counts the connection open and
 *                     asks for state callbacks on that socket only; the first move to
 *                     FIN_WAIT1, LAST_ACK or CLOSE (we closed, or a reset) counts it closed.
 *                     Open and close are therefore both counted once, exactly.
 *
 * Accounting per source address (IPv4 as ::ffff:a.b.c.d), done when a connection is
 * established, never at the SYN, so a forged source address costs its owner nothing:
 *   open_ips[ip]   connections established and not closed. The entry is made at the first
 *                  and removed when the last one closes, so the table holds live addresses
 *                  only. Its spin lock and its own key make that removal safe: a program
 *                  holding the entry from an earlier lookup sees it dead, or reused for
 *                  another address, and starts over.
 *   recent[ip]     LRU: the rate state (GCRA, one theoretical arrival time: a burst of the
 *                  per-second limit, then that rate), connections in the last second, and
 *                  the totals shown as top talkers.
 * Admission only reads: a SYN from an address with connections_max open, or whose rate
 * allows no connection now, is refused; nothing else changes. So handshakes in flight at
 * once (a burst, or a client that holds back its ACKs) can pass the SYN check together; the
 * engine counts the accepted connections again (core/iplimit.c) and answers those over
 * connections_max with 421, which keeps the limit exact. Exempt networks are counted but
 * never refused.
 *
 * SECURITY: every byte read from a packet goes through bpf_skb_load_bytes_relative with a
 * fixed length; every loop is bounded by a constant; tables have fixed sizes and a full open
 * table admits the connection uncounted (counted as CONNLIMIT_UNTRACKED) rather than refuse
 * everyone.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "bpf/connlimit.h"

#define ETH_P_IP_BE   bpf_htons(0x0800)
#define ETH_P_IPV6_BE bpf_htons(0x86DD)
#define TCP_FLAG_SYN  0x02
#define TCP_FLAG_ACK  0x10
#define NS_PER_S      1000000000ULL
#define AF_INET_      2

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Written by the loader; read here. The loader maps .data and .bss into its own memory. */
struct connlimit_limits limits = { 0, 0 };
__u32 cpu_worker[CONNLIMIT_CPUS_MAX] = { [0 ... CONNLIMIT_CPUS_MAX - 1] = CONNLIMIT_NO_WORKER };
struct connlimit_net exempt[2][CONNLIMIT_EXEMPT_MAX] = { 0 };
__u32 exempt_count[2] = { 0, 0 };
__u32 exempt_active = 0;          /* which of the two exempt lists is in force */

/* Counted here; summed by the loader. */
struct connlimit_cpu counters[CONNLIMIT_CPUS_MAX] = { 0 };

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, CONNLIMIT_IPS_MAX);
    __type(key, struct connlimit_ip);
    __type(value, struct connlimit_open);
} open_ips SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, CONNLIMIT_RECENT_MAX);
    __type(key, struct connlimit_ip);
    __type(value, struct connlimit_recent);
} recent SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_SK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
    __type(key, int);
    __type(value, struct connlimit_mark);
} marks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, CONNLIMIT_GROUPS_MAX);
    __type(key, struct connlimit_group_key);
    __type(value, __u32);
} groups SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
    __uint(max_entries, CONNLIMIT_GROUPS_MAX * CONNLIMIT_WORKERS_MAX);
    __type(key, __u32);
    __type(value, __u64);
} steer SEC(".maps");

/* count - one event on this CPU's slot. Atomic: a slot is shared by the softirq and the
 * process context of one CPU. */
static __always_inline void count(enum connlimit_counter c)
{
    __u32 cpu = bpf_get_smp_processor_id();

    if (cpu >= CONNLIMIT_CPUS_MAX)
        cpu = CONNLIMIT_CPUS_MAX - 1;
    if (c < CONNLIMIT_COUNTER_COUNT)
        __sync_fetch_and_add(&counters[cpu].n[c], 1);
}

/* is_mapped - an IPv4 address in its ::ffff:a.b.c.d form. */
static __always_inline bool is_mapped(const struct connlimit_ip *ip)
{
    __u64 a0;
    __u32 a2;

    __builtin_memcpy(&a0, ip->addr, 8);
    __builtin_memcpy(&a2, ip->addr + 8, 4);
    return a0 == 0 && a2 == bpf_htonl(0x0000ffff);
}

/* is_exempt - whether ip is inside one of the exempt networks in force. */
static __always_inline bool is_exempt(const struct connlimit_ip *ip)
{
    __u32 list = exempt_active & 1, n = exempt_count[list];
    __u64 a0, a1, v4 = is_mapped(ip);

    __builtin_memcpy(&a0, ip->addr, 8);
    __builtin_memcpy(&a1, ip->addr + 8, 8);
    for (__u32 i = 0; i < CONNLIMIT_EXEMPT_MAX; i++) {
        const struct connlimit_net *net = &exempt[list][i];
        if (i >= n)
            break;
        if (net->v4 == v4 && (a0 & net->mask[0]) == net->addr[0] &&
            (a1 & net->mask[1]) == net->addr[1])
            return true;
    }
    return false;
}

/* source_of - the source address of the packet being admitted; 0 or -1. */
static __always_inline int source_of(struct sk_reuseport_md *ctx, struct connlimit_ip *ip)
{
    __builtin_memset(ip, 0, sizeof(*ip));
    if (ctx->eth_protocol == ETH_P_IP_BE) {
        ip->addr[10] = 0xff;
        ip->addr[11] = 0xff;
        /* struct iphdr: saddr at byte 12 */
        return bpf_skb_load_bytes_relative(ctx, 12, ip->addr + 12, 4, BPF_HDR_START_NET);
    }
    if (ctx->eth_protocol == ETH_P_IPV6_BE)  /* struct ipv6hdr: saddr at byte 8 */
        return bpf_skb_load_bytes_relative(ctx, 8, ip->addr, 16, BPF_HDR_START_NET);
    return -1;
}

/* is_syn - a connection request (SYN without ACK); a SYN cookie's ACK is not one. At this
 * hook the packet's data starts at the TCP header. */
static __always_inline bool is_syn(struct sk_reuseport_md *ctx)
{
    __u8 *data = ctx->data, *end = ctx->data_end;

    if (data + 14 > end)
        return false;
    return (data[13] & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

/* rate_allows - whether the address's rate (GCRA) allows a connection at now. Reads only. */
static __always_inline bool rate_allows(const struct connlimit_recent *r, __u32 per_s,
                                        __u64 now)
{
    __u64 interval = NS_PER_S / per_s, tolerance = interval * (per_s - 1), tat = r->tat_ns;

    return tat <= now || tat - now <= tolerance;
}

/* rate_take - one established connection moves the address's arrival time on, whether or
 * not the rate allowed it (it exists already). Lock-free: a lost race retries. */
static __always_inline void rate_take(struct connlimit_recent *r, __u32 per_s, __u64 now)
{
    __u64 interval = NS_PER_S / (per_s ? per_s : 1);

    for (int tries = 0; tries < CONNLIMIT_RETRIES_MAX; tries++) {
        __u64 tat = r->tat_ns, base = tat > now ? tat : now;
        if (__sync_val_compare_and_swap(&r->tat_ns, tat, base + interval) == tat)
            return;
    }
}

/* per_second_count - the address's window of connections per second (approximate under
 * races: a statistic, not a limit). */
static __always_inline void per_second_count(struct connlimit_recent *r, __u64 now)
{
    __u64 start = r->second_start_ns;

    if (now - start >= NS_PER_S) {
        r->last_second = now - start < 2 * NS_PER_S ? r->this_second : 0;
        r->this_second = 0;
        r->second_start_ns = now;
    }
    __sync_fetch_and_add(&r->this_second, 1);
}

/* steer_to_cpu - hand the SYN to the worker of the receiving CPU, if one is pinned there.
 * When it cannot (no worker on this CPU, several), the kernel's own choice follows, which
 * honours each worker socket's SO_INCOMING_CPU the same way (Linux 6.2, 6.1.2). */
static __always_inline void steer_to_cpu(struct sk_reuseport_md *ctx)
{
    __u32 cpu = bpf_get_smp_processor_id(), worker, key, *group;
    struct connlimit_group_key gk;
    struct bpf_sock *sk = ctx->sk;

    if (cpu >= CONNLIMIT_CPUS_MAX || !sk)
        return;
    worker = cpu_worker[cpu];
    if (worker >= CONNLIMIT_WORKERS_MAX)
        return;
    /* Which listen address: socket storage is not open to this program type, so the
     * loader keyed the groups by the listening socket's own address. */
    __builtin_memset(&gk, 0, sizeof(gk));
    gk.family = sk->family;
    gk.port = sk->src_port;
    if (gk.family == AF_INET_) {
        __u32 a = sk->src_ip4;
        __builtin_memcpy(gk.addr, &a, 4);
    } else {
        __u32 a[4] = { sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3] };
        __builtin_memcpy(gk.addr, a, 16);
    }
    group = bpf_map_lookup_elem(&groups, &gk);
    if (!group || *group >= CONNLIMIT_GROUPS_MAX)
        return;
    key = *group * CONNLIMIT_WORKERS_MAX + worker;
    if (bpf_sk_select_reuseport(ctx, &steer, &key, 0) == 0)
        count(CONNLIMIT_STEERED);
    /* on failure the kernel picks by hash, as without the program */
}

SEC("sk_reuseport")
int connlimit_admit(struct sk_reuseport_md *ctx)
{
    __u32 conn_max = limits.connections_max, rate_max = limits.connects_per_s_max;
    struct connlimit_recent *r;
    struct connlimit_open *o;
    struct connlimit_ip ip;

    if (!is_syn(ctx))
        goto pass;  /* the ACK of a SYN cookie: judged at its SYN */
    if ((!conn_max && !rate_max) || source_of(ctx, &ip) < 0 || is_exempt(&ip))
        goto admit;
    o = bpf_map_lookup_elem(&open_ips, &ip);
    r = bpf_map_lookup_elem(&recent, &ip);
    if (conn_max && o && o->current >= conn_max) {
        if (r)
            __sync_fetch_and_add(&r->refused, 1);
        count(CONNLIMIT_REFUSED_CONNECTIONS);
        return SK_DROP;
    }
    if (rate_max && r && !rate_allows(r, rate_max, bpf_ktime_get_ns())) {
        __sync_fetch_and_add(&r->refused, 1);
        count(CONNLIMIT_REFUSED_RATE);
        return SK_DROP;
    }
admit:
    count(CONNLIMIT_ADMITTED);
pass:
    steer_to_cpu(ctx);
    return SK_PASS;
}

/* same_ip - a == b, without a call (allowed under a spin lock). */
static __always_inline bool same_ip(const struct connlimit_ip *a, const struct connlimit_ip *b)
{
    __u64 a0, a1, b0, b1;

    __builtin_memcpy(&a0, a->addr, 8);
    __builtin_memcpy(&a1, a->addr + 8, 8);
    __builtin_memcpy(&b0, b->addr, 8);
    __builtin_memcpy(&b1, b->addr + 8, 8);
    return a0 == b0 && a1 == b1;
}

/* open_inc - count one more connection for ip; false when it could not be counted. */
static __always_inline bool open_inc(const struct connlimit_ip *ip)
{
    struct connlimit_open fresh = { .current = 1 }, *o;

    fresh.ip = *ip;
    for (int tries = 0; tries < CONNLIMIT_RETRIES_MAX; tries++) {
        bool done = false;
        o = bpf_map_lookup_elem(&open_ips, ip);
        if (o) {
            bpf_spin_lock(&o->lock);
            if (!o->dead && same_ip(&o->ip, ip)) {
                o->current++;
                done = true;
            }
            bpf_spin_unlock(&o->lock);
            if (done)
                return true;
            continue;  /* closing as we came, or reused: look again */
        }
        if (bpf_map_update_elem(&open_ips, ip, &fresh, BPF_NOEXIST) == 0) {
            count(CONNLIMIT_IPS_ADDED);
            return true;
        }
        /* -EEXIST: another CPU made it first, or a dead one is on its way out; -E2BIG: full */
    }
    return false;
}

/* open_dec - one connection of ip closed; the entry goes with its last connection. */
static __always_inline void open_dec(const struct connlimit_ip *ip)
{
    struct connlimit_open *o = bpf_map_lookup_elem(&open_ips, ip);
    bool last = false;

    if (!o)
        return;
    bpf_spin_lock(&o->lock);
    if (!o->dead && same_ip(&o->ip, ip) && o->current) {
        o->current--;
        if (!o->current) {
            o->dead = 1;
            last = true;
        }
    }
    bpf_spin_unlock(&o->lock);
    if (last && bpf_map_delete_elem(&open_ips, ip) == 0)
        count(CONNLIMIT_IPS_REMOVED);
}

/* opened - a connection of ours is established: count it and take its rate token. */
static __always_inline void opened(struct bpf_sock_ops *skops, struct connlimit_mark *mark)
{
    struct connlimit_recent fresh = { 0 }, *r;
    __u64 now = bpf_ktime_get_ns();
    struct connlimit_ip ip;

    __builtin_memset(&ip, 0, sizeof(ip));
    if (skops->family == AF_INET_) {
        __u32 a = skops->remote_ip4;
        ip.addr[10] = 0xff;
        ip.addr[11] = 0xff;
        __builtin_memcpy(ip.addr + 12, &a, 4);
    } else {
        __u32 a[4] = { skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2],
                       skops->remote_ip6[3] };
        __builtin_memcpy(ip.addr, a, 16);
    }
    r = bpf_map_lookup_elem(&recent, &ip);
    if (!r) {
        bpf_map_update_elem(&recent, &ip, &fresh, BPF_NOEXIST);
        r = bpf_map_lookup_elem(&recent, &ip);
    }
    if (r) {
        rate_take(r, limits.connects_per_s_max, now);
        per_second_count(r, now);
        __sync_fetch_and_add(&r->admitted, 1);
    }
    if (!open_inc(&ip)) {
        count(CONNLIMIT_UNTRACKED);
        return;
    }
    mark->ip = ip;
    mark->counted = 1;
    count(CONNLIMIT_ESTABLISHED);
    bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* closed - a counted connection leaves ESTABLISHED/CLOSE_WAIT for good. */
static __always_inline void closed(struct connlimit_mark *mark)
{
    mark->counted = 0;
    count(CONNLIMIT_CLOSED);
    open_dec(&mark->ip);
}

SEC("sockops")
int connlimit_state(struct bpf_sock_ops *skops)
{
    struct connlimit_mark *mark;
    struct bpf_sock *sk;
    __u32 to;

    if (skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB && skops->op != BPF_SOCK_OPS_STATE_CB)
        return 1;
    sk = skops->sk;
    if (!sk)
        return 1;
    mark = bpf_sk_storage_get(&marks, sk, 0, 0);
    if (!mark)
        return 1;  /* not a connection of our listeners */
    if (skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
        if (!mark->counted)
            opened(skops, mark);
        return 1;
    }
    to = skops->args[1];
    if (mark->counted && (to == BPF_TCP_FIN_WAIT1 || to == BPF_TCP_LAST_ACK ||
                          to == BPF_TCP_CLOSE || to == BPF_TCP_CLOSING))
        closed(mark);
    return 1;
}
