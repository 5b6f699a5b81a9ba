/*
 * connlimit.h - per-source-IP connection accounting in the kernel: what the BPF programs
 * (connlimit.bpf.c) and their loader (connlimit.c) share, and the loader's interface.
 *
 * The kernel side counts, per source address (IPv4 as ::ffff:a.b.c.d), the connections open
 * to our listeners and the rate of new ones, both at the moment a connection is established
 * (a forged source never gets that far), and refuses a SYN from an address already at either
 * limit before a request socket exists: the client gets a reset, the engine never sees an
 * accept. See connlimit.bpf.c for the hooks and why they were chosen.
 *
 * Everything the engine reads on a hot path (limits, per-CPU counters) lives in the programs'
 * global data, which the loader maps into our memory: a SIGHUP writes the new limits there and
 * /metrics sums the counters there, with no system call. Only the top-talker listing walks
 * the maps with bpf(2), on the main thread.
 */
#ifndef RR_BPF_CONNLIMIT_H
#define RR_BPF_CONNLIMIT_H

#ifndef __bpf__
#include <linux/bpf.h>  /* struct bpf_spin_lock; the programs have it from vmlinux.h */
#endif

#define CONNLIMIT_CPUS_MAX     512     /* per-CPU counter slots; CPUs beyond share the last */
#define CONNLIMIT_WORKERS_MAX  256     /* workers one listen address can steer to */
#define CONNLIMIT_GROUPS_MAX   256     /* listen addresses (reuseport groups) */
#define CONNLIMIT_IPS_MAX      65536   /* source addresses with open connections */
#define CONNLIMIT_RECENT_MAX   65536   /* addresses with established connections lately
                                          (rate state and totals, LRU) */
#define CONNLIMIT_RETRIES_MAX  4       /* lost races on one address before giving up */
#define CONNLIMIT_NO_WORKER    0xffffffffu   /* cpu_worker[]: no worker pinned there */
#define CONNLIMIT_EXEMPT_MAX   64      /* exempt networks (the config's CONFIG_NETS_MAX) */

/* A source address: IPv6, or IPv4 mapped into ::ffff:0:0/96. */
struct connlimit_ip {
    unsigned char addr[16];
};

/* The limits, written by the loader (start-up, SIGHUP) and read by every SYN. 0 = none. */
struct connlimit_limits {
    unsigned int connections_max;      /* open connections per source address */
    unsigned int connects_per_s_max;   /* new connections per source address per second */
};

/* An exempt network, as two 64-bit halves of the mapped address and of its mask, both in
 * memory order (loaded from the 16 bytes as they are, on either side). An IPv4 network
 * matches only mapped addresses, an IPv6 one only the others (as the configuration does). */
struct connlimit_net {
    unsigned long long addr[2];        /* network address, host bits clear */
    unsigned long long mask[2];        /* prefix mask */
    unsigned long long v4;             /* 1: an IPv4 network */
};

/* Events counted by the programs, one slot per CPU, each on its own cache line. */
enum connlimit_counter {
    CONNLIMIT_ADMITTED,                /* SYNs let through to a listener */
    CONNLIMIT_REFUSED_CONNECTIONS,     /* SYNs refused: too many open connections */
    CONNLIMIT_REFUSED_RATE,            /* SYNs refused: too many new connections a second */
    CONNLIMIT_ESTABLISHED,             /* connections counted open */
    CONNLIMIT_CLOSED,                  /* connections counted closed */
    CONNLIMIT_UNTRACKED,               /* established but not counted: address table full */
    CONNLIMIT_IPS_ADDED,               /* addresses that got their first open connection */
    CONNLIMIT_IPS_REMOVED,             /* addresses whose last open connection closed */
    CONNLIMIT_STEERED,                 /* listener lookups handed to the receiving CPU's
                                          worker (SYNs, and the ACKs of SYN cookies) */
    CONNLIMIT_COUNTER_COUNT
};

/* 128 bytes: two CPUs' slots never share a cache line (nor an adjacent-line prefetch pair
 * more than the array's start allows). Padded by hand: an aligned() global trips the BTF of
 * older clang/libbpf pairs. */
struct connlimit_cpu {
    unsigned long long n[CONNLIMIT_COUNTER_COUNT];
    unsigned long long pad[16 - CONNLIMIT_COUNTER_COUNT];
};

/* Open connections of one address (the "open_ips" map). The entry goes when its last
 * connection closes; the lock and the key inside let a program that looked the entry up
 * before that see that it is gone (dead) or was reused for another address. */
struct connlimit_open {
    struct bpf_spin_lock lock;         /* guards current and dead */
    unsigned int current;              /* connections established and not yet closed */
    unsigned int dead;                 /* removed (its last connection closed) */
    unsigned int pad;
    struct connlimit_ip ip;            /* whose entry this is */
};

/* Rate state and totals of one address (the "recent" LRU map), made when it first
 * establishes a connection. */
struct connlimit_recent {
    unsigned long long tat_ns;         /* GCRA: theoretical arrival time of the next one */
    unsigned long long second_start_ns; /* start of the current one-second window */
    unsigned long long admitted;       /* connections established, total */
    unsigned long long refused;        /* SYNs refused, total (both limits) */
    unsigned int this_second;          /* connections established in the current window */
    unsigned int last_second;          /* ... in the window before (0 if not the one just
                                          before): the address's connections per second */
};

/* connlimit_per_second - what an address's one-second windows (start of the current one,
 * connections in it, in the one before if it was the one just before) say at now_ns: its
 * connections in the last full second. */
static inline unsigned int connlimit_per_second(unsigned long long start_ns,
                                                unsigned int this_s, unsigned int last_s,
                                                unsigned long long now_ns)
{
    if (now_ns - start_ns < 1000000000ULL)
        return last_s;
    return now_ns - start_ns < 2000000000ULL ? this_s : 0;
}

/* A listen address, as the admission program sees the listening socket the kernel found
 * (the "groups" map: key -> reuseport group index). */
struct connlimit_group_key {
    unsigned int family;               /* AF_INET or AF_INET6 */
    unsigned int port;                 /* local port, host order */
    unsigned char addr[16];            /* local address: 4 bytes for IPv4, rest zero */
};

/* What the loader stores on each of our listening sockets (socket storage, cloned onto
 * every connection they accept, which is how the connection-state program knows its own). */
struct connlimit_mark {
    unsigned int group;                /* reuseport group: index of the listen address */
    unsigned int worker;               /* worker owning this socket (informational) */
    unsigned int counted;              /* on a connection: it holds a place in "open_ips" */
    unsigned int pad;
    struct connlimit_ip ip;            /* on a connection: its source address */
};

#ifndef __bpf__  /* ---- the loader's interface, userspace only ---- */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct connlimit;

/* Sums of the per-CPU counters (memory reads only: safe on a ring thread). */
struct connlimit_stats {
    uint64_t n[CONNLIMIT_COUNTER_COUNT];
    uint64_t tracked_ips;              /* addresses with open connections now */
};

/* One row of the top-talker listing. */
struct connlimit_talker {
    struct connlimit_ip ip;
    uint32_t current;                  /* open connections now */
    uint32_t per_s;                    /* connections established in the last full second */
    uint64_t admitted;                 /* connections established (while it stays in the
                                          recent table) */
    uint64_t refused;                  /* SYNs refused */
};

/* connlimit_load - load the programs and attach the connection-state program to our own
 * cgroup (v2). cpu_worker[c] is the worker pinned to CPU c, CONNLIMIT_NO_WORKER for none;
 * ncpu entries. On failure returns -errno with a reason in why; nothing stays loaded. */
int connlimit_load(struct connlimit **out, const struct connlimit_limits *lim,
                   const struct connlimit_net *exempt, unsigned exempt_count,
                   const uint32_t *cpu_worker, unsigned ncpu, char *why, size_t why_cap);

/* connlimit_add_listener - put a listening socket (SO_REUSEPORT, listening) under the
 * programs: mark it, enter it in the steering table (workers beyond CONNLIMIT_WORKERS_MAX
 * are left to the kernel's choice), attach the admission program to its group. Returns 0
 * or -errno. */
int connlimit_add_listener(struct connlimit *cl, int fd, unsigned group, unsigned worker);

/* connlimit_remove_listener - detach the admission program from fd's group (the error path
 * of a start that put only some sockets under the programs). */
void connlimit_remove_listener(int fd);

/* connlimit_set_limits - new limits, effective at the next SYN (no reload of programs). */
void connlimit_set_limits(struct connlimit *cl, const struct connlimit_limits *lim);

/* connlimit_net_make - an exempt network from family (AF_INET/AF_INET6), its address bytes
 * (4 or 16) and prefix length. */
void connlimit_net_make(struct connlimit_net *n, int family, const uint8_t *addr,
                        unsigned prefix);

/* connlimit_set_exempt - the networks counted but never refused (at most
 * CONNLIMIT_EXEMPT_MAX; more are ignored). Main thread only: one writer at a time. */
void connlimit_set_exempt(struct connlimit *cl, const struct connlimit_net *nets,
                          unsigned count);

/* connlimit_read - sum the per-CPU counters. */
void connlimit_read(const struct connlimit *cl, struct connlimit_stats *out);

/* connlimit_top - up to max addresses, most open connections first, then most refused.
 * Walks the maps with bpf(2): main thread only. Returns the count or -errno. */
int connlimit_top(struct connlimit *cl, struct connlimit_talker *out, unsigned max);

/* connlimit_prog_ids - ids of the loaded programs (for logs and tests), up to max. */
unsigned connlimit_prog_ids(const struct connlimit *cl, uint32_t *ids, unsigned max);

/* connlimit_close - detach and free everything (sockets keep no reference). */
void connlimit_close(struct connlimit *cl);
#endif

#endif
