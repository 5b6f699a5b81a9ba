/*
 * connlimit.h - per-source-IP connection accounting in the kernel: what the BPF programs
 * (connlimit.bpf.c) and their loader (connlimit.c) share, and the loader's interface.
 *
 * The kernel side counts, per source address (IPv4 as ::ffff:a.b.c.d), the connections open
 * to our listeners and the rate of new ones, and refuses a SYN over either limit before a
 * request socket exists: the client gets a reset, the engine never sees an accept. See
 * connlimit.bpf.c for the hooks and why they were chosen.
 *
 * Everything the engine reads on a hot path (limits, per-CPU counters) lives in the programs'
 * global data, which the loader maps into our memory: a SIGHUP writes the new limits there and
 * /metrics sums the counters there, with no system call. Only the top-talker listing walks
 * the maps with bpf(2), on the main thread.
 */
#ifndef RR_BPF_CONNLIMIT_H
#define RR_BPF_CONNLIMIT_H

#define CONNLIMIT_CPUS_MAX     512     /* per-CPU counter slots; CPUs beyond share the last */
#define CONNLIMIT_WORKERS_MAX  256     /* workers one listen address can steer to */
#define CONNLIMIT_GROUPS_MAX   256     /* listen addresses (reuseport groups) */
#define CONNLIMIT_IPS_MAX      65536   /* source addresses with open connections */
#define CONNLIMIT_RECENT_MAX   65536   /* source addresses seen recently (rate state, LRU) */
#define CONNLIMIT_PENDING_NS   2000000000ULL /* a handshake admitted but not established
                                                holds a place this long at most */
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
 * memory order (loaded from the 16 bytes as they are, on either side). */
struct connlimit_net {
    unsigned long long addr[2];        /* network address, host bits clear */
    unsigned long long mask[2];        /* prefix mask */
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
    CONNLIMIT_STEERED,                 /* SYNs handed to the worker of the receiving CPU */
    CONNLIMIT_COUNTER_COUNT
};

/* 128 bytes: two CPUs' slots never share a cache line (nor an adjacent-line prefetch pair
 * more than the array's start allows). Padded by hand: an aligned() global trips the BTF of
 * older clang/libbpf pairs. */
struct connlimit_cpu {
    unsigned long long n[CONNLIMIT_COUNTER_COUNT];
    unsigned long long pad[16 - CONNLIMIT_COUNTER_COUNT];
};

/* Open connections of one address (the "open_ips" map). */
struct connlimit_open {
    unsigned int current;              /* connections established and not yet closed */
    unsigned int pad;
};

/* Rate state and totals of one address (the "recent" LRU map). */
struct connlimit_recent {
    unsigned long long tat_ns;         /* GCRA: theoretical arrival time of the next SYN */
    unsigned long long pending_since_ns; /* when pending last rose from 0 */
    unsigned long long admitted;       /* SYNs admitted, total */
    unsigned long long refused;        /* SYNs refused, total (both limits) */
    int pending;                       /* admitted, not established yet (may dip below 0
                                          when a place expired first: read as 0) */
    unsigned int pad;
};

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
    uint64_t admitted;                 /* SYNs admitted (recent table: may have been evicted) */
    uint64_t refused;                  /* SYNs refused */
};

/* connlimit_load - load the programs and attach the connection-state program to our own
 * cgroup (v2). cpu_worker[c] is the worker pinned to CPU c, CONNLIMIT_NO_WORKER for none;
 * ncpu entries. On failure returns -errno with a reason in why; nothing stays loaded. */
int connlimit_load(struct connlimit **out, const struct connlimit_limits *lim,
                   const uint32_t *cpu_worker, unsigned ncpu, char *why, size_t why_cap);

/* connlimit_add_listener - put a listening socket (SO_REUSEPORT, listening) under the
 * programs: mark it, enter it in the steering table, attach the admission program to its
 * group. Returns 0 or -errno. */
int connlimit_add_listener(struct connlimit *cl, int fd, unsigned group, unsigned worker);

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
