/*
 * iplimit.h - per-source-IP connection limits ([bpf] max_connections_per_ip,
 * max_connects_per_ip_per_s, exempt_networks) as the engine sees them, whoever enforces them.
 *
 * Two modes, one façade:
 *   kernel     the BPF programs (bpf/connlimit.*) refuse a SYN over a limit before any
 *              accept; iplimit_accept() does nothing and the figures are the programs'.
 *   userspace  [bpf] enabled = no, or auto where the programs could not load: the same limits
 *              are kept here, in one table shared by the workers, and a connection over one
 *              is answered 421 4.7.0 and closed right after accept (net/smtp_server.c).
 * The mode is chosen once, at start-up; a reload changes the limits, never the mode.
 *
 * WIRING
 *   core/main.c     right after ip_limits_start(), whatever it returned (NULL = userspace),
 *                   before engine_start():
 *                       iplimit_use_kernel(iplimit_shared(), ip_kernel);
 *                   and at exit, before connlimit_close(ip_kernel):
 *                       iplimit_use_kernel(iplimit_shared(), NULL);
 *                   Nothing at SIGHUP: the userspace side reads the limits and the exempt
 *                   networks from the configuration each worker is running (w->cfg), which
 *                   the engine already publishes and retires safely.
 *   net/smtp_server.c  after getpeername: v = iplimit_accept(il, w->cfg, peer, w->now_ns);
 *                   IPL_REFUSED_* -> 421 and close; IPL_COUNTED -> the session holds a count
 *                   and iplimit_release(il, peer) runs exactly once when it is freed.
 *   core/metrics.c, core/control.c  iplimit_stats(), iplimit_top() (main thread only).
 */
#ifndef RR_IPLIMIT_H
#define RR_IPLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bpf/connlimit.h"
#include "core/config.h"

#define IPLIMIT_IPS_MAX        65536   /* addresses the userspace table holds (a power of 2) */
#define IPLIMIT_WAYS           16      /* entries an address may live in (one bucket) */
#define IPLIMIT_LOCKS          256     /* striped locks over the buckets */
#define IPLIMIT_IP_TEXT_BYTES  46      /* iplimit_ip_format(): INET6_ADDRSTRLEN */

/* What iplimit_accept() decided. */
enum iplimit_verdict {
    IPL_COUNTED,                  /* admitted and counted: iplimit_release() at the close */
    IPL_ADMITTED,                 /* admitted, not counted here: the kernel enforces, the
                                     table has no room (counted as untracked), or there is
                                     no address (the client reset before the accept) */
    IPL_REFUSED_CONNECTIONS,      /* max_connections_per_ip open already */
    IPL_REFUSED_RATE,             /* over max_connects_per_ip_per_s */
};

/* The two limits, as metric labels and log reasons. */
enum iplimit_limit {
    IPL_LIMIT_CONNECTIONS,        /* "ip_connections" */
    IPL_LIMIT_RATE,               /* "ip_connect_rate" */
    IPL_LIMIT_COUNT
};

extern const char *const iplimit_limit_name[IPL_LIMIT_COUNT];

/* Figures of whichever side enforces. */
struct iplimit_stats {
    bool kernel;                  /* the BPF programs enforce (at the SYN) */
    uint64_t refused[IPL_LIMIT_COUNT]; /* refused at accept, by limit, since start (with the
                                     kernel: the handshakes that passed its check together) */
    uint64_t kernel_refused[IPL_LIMIT_COUNT]; /* SYNs refused by the kernel, by limit */
    uint64_t tracked_ips;         /* addresses with open connections now (the kernel's
                                     count when it enforces) */
    uint64_t untracked;           /* connections admitted uncounted: no room for their
                                     address */
    uint64_t steered;             /* kernel: SYNs handed to the receiving CPU's worker */
};

struct iplimit;
struct connlimit;

/* iplimit_shared - the process-wide accounting, made at the first call (thread-safe; the
 * workers call it at set-up). Never NULL (out of memory is fatal, core/alloc.h). */
struct iplimit *iplimit_shared(void);

/* iplimit_new - accounting with a table of ips_max addresses (rounded up to a power of 2,
 * at least IPLIMIT_WAYS), for tests; iplimit_free() releases it (no thread may use it). */
struct iplimit *iplimit_new(unsigned ips_max);
void iplimit_free(struct iplimit *il);

/* iplimit_use_kernel - the BPF programs in cl enforce from now on (NULL: userspace). Main
 * thread, at start-up before the workers accept, and at exit before cl is closed.
 * Connections counted before still release here. */
void iplimit_use_kernel(struct iplimit *il, struct connlimit *cl);

/*
 * iplimit_accept - a new connection from peer (AF_INET, or AF_INET6 with v4-mapped counted
 * as IPv4; NULL when unknown), at now_ns (monotonic). Limits and exempt networks from cfg
 * (0 = no limit). The open-connections limit is checked first, then the rate (GCRA: a burst
 * of max_connects_per_ip_per_s, refilled at that many a second); only an admitted connection
 * takes a rate token. Exempt addresses are counted, never refused. Any thread; never blocks
 * beyond a striped lock held for a bucket scan.
 */
enum iplimit_verdict iplimit_accept(struct iplimit *il, const struct rr_config *cfg,
                                    const struct sockaddr *peer, uint64_t now_ns);

/* iplimit_release - a connection that got IPL_COUNTED closed; exactly once per count. */
void iplimit_release(struct iplimit *il, const struct sockaddr *peer);

/* iplimit_stats - the figures. Memory reads only (kernel: connlimit_read()), so /metrics
 * may call it on a ring thread. */
void iplimit_stats(struct iplimit *il, struct iplimit_stats *out);

/* iplimit_top - up to max addresses, most open connections first, then most refused, then
 * most admitted. Kernel: connlimit_top(), which walks the maps with bpf(2): MAIN THREAD ONLY.
 * Userspace: a scan of the table, O(IPLIMIT_IPS_MAX * max): keep max small. Returns the
 * count or -errno. */
int iplimit_top(struct iplimit *il, struct connlimit_talker *out, unsigned max);

/* iplimit_ip_format - ip as text: a.b.c.d for a v4-mapped address, else IPv6 (cap at least
 * IPLIMIT_IP_TEXT_BYTES). */
void iplimit_ip_format(const struct connlimit_ip *ip, char *out, size_t cap);

#endif
