/*
 * iplimit.c - per-source-IP connection limits: the userspace accounting used when the BPF
 * programs do not run, and the façade that reports whichever side enforces.
 *
 * FUNCTIONS
 *   iplimit_shared, iplimit_new, iplimit_free   the accounting
 *   iplimit_use_kernel                          the kernel enforces (or not)
 *   iplimit_accept, iplimit_release             one connection opens, closes
 *   iplimit_stats, iplimit_top, iplimit_ip_format  what operators see
 *
 * DESIGN
 *   A connection lands on whichever worker SO_REUSEPORT picks, so per-worker counts could
 *   not enforce a per-address limit: the table is one for the process. It is set-associative
 *   like core/ratelimit.c: an address (16 bytes, IPv4 as ::ffff:a.b.c.d, the key of struct
 *   connlimit_ip) hashes with SipHash under a random key to one bucket of IPLIMIT_WAYS entries
 *   and lives in any of them. An entry holds more than a 16-byte word (open count, rate state,
 *   two totals), so instead of compare-and-swap the buckets are guarded by IPLIMIT_LOCKS
 *   striped mutexes: a check and its increment happen under one lock, which is what makes
 *   the connections limit exact across workers (two workers cannot both take the last
 *   place). A lock is held for one bucket scan and a few stores, never across a system call,
 *   an allocation or a log line; each stripe sits on its own pair of cache lines with the
 *   counters of its buckets, which are written only under it (the line is ours already).
 *   Nothing is allocated per connection.
 *
 *   The rate is the kernel program's GCRA, to the nanosecond: interval T = 1 s / L,
 *   tolerance (L - 1) * T; a connection is admitted when max(tat, now) - now <= tolerance
 *   and moves tat to max(tat, now) + T. From a recovered state (tat <= now) exactly L are
 *   admitted at once, then one every T.
 *
 * WHY IT IS EXACT
 *   - An entry with open connections is never evicted, so every release finds the entry its
 *     accept counted in (a release that finds none is a broken invariant, logged as a bug).
 *   - A new address takes, in its bucket: a free entry; else one with no open connection
 *     whose rate state has recovered (it carries only totals); else the one with no open
 *     connection whose rate recovers first (that address starts over with a full burst).
 *     When all IPLIMIT_WAYS entries have open connections the connection is admitted
 *     uncounted (untracked): refusing everyone new in a bucket would let one crowded bucket
 *     lock out strangers. With 65536 entries, a keyed hash and the engine's own connection
 *     ceiling, that needs far more live addresses than the relay has sessions.
 *   - The limits are read from the caller's configuration at each call: a reload applies to
 *     the counts and rate state as they stand.
 *
 * SECURITY
 *   Addresses are chosen by clients (an IPv6 client has 2^64 of them): they are hashed under
 *   a key nobody outside sees, so nobody can aim many addresses at one bucket; the table is
 *   fixed in size and a flood of new addresses can only recycle entries without open
 *   connections. Exempt networks are counted, never refused, as in the kernel.
 *
 * STANDARDS
 *   The Generic Cell Rate Algorithm (ITU-T I.371), virtual scheduling form.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/iplimit.h"
#include "core/log.h"
#include "core/siphash.h"

#define NS_PER_S 1000000000ull

_Static_assert((IPLIMIT_IPS_MAX & (IPLIMIT_IPS_MAX - 1)) == 0, "a power of two");
_Static_assert(IPLIMIT_IPS_MAX % IPLIMIT_WAYS == 0, "whole buckets");

const char *const iplimit_limit_name[IPL_LIMIT_COUNT] = { "ip_connections", "ip_connect_rate" };

/* One address. 48 bytes; changed only under its stripe's lock. */
struct ipl_entry {
    struct connlimit_ip ip;       /* the key */
    uint32_t current;             /* connections counted open and not released */
    uint32_t used;                /* 1: the entry holds an address */
    uint64_t tat_ns;              /* GCRA: theoretical arrival time of the next connection */
    uint64_t admitted;            /* connections admitted, total */
    uint64_t refused;             /* connections refused, total (both limits) */
    uint64_t second_start_ns;     /* start of the current one-second window */
    uint32_t this_second;         /* connections admitted in it */
    uint32_t last_second;         /* ... in the window before, if it was the one just before */
};

/* A lock and the counters of the buckets it guards. Written only under the lock; read by
 * iplimit_stats() without it (relaxed atomic loads of whole words). */
struct ipl_stripe {
    _Alignas(2 * RR_CACHELINE) pthread_mutex_t lock;
    uint64_t tracked;             /* entries of its buckets with current > 0 */
    uint64_t refused[IPL_LIMIT_COUNT]; /* refusals, by limit */
    uint64_t untracked;           /* admitted uncounted: the bucket was full of live entries */
};

struct iplimit {
    struct ipl_entry *entries;    /* [buckets * IPLIMIT_WAYS] */
    size_t bucket_mask;           /* buckets - 1 (a power of two) */
    uint64_t key[2];              /* SipHash key, random per table */
    struct ipl_stripe *stripes;   /* [IPLIMIT_LOCKS]; bucket b uses b % IPLIMIT_LOCKS */
    /* Read by every accept, written at start-up and exit: a line of its own. */
    _Alignas(RR_CACHELINE) struct connlimit *_Atomic kernel; /* the programs enforce */
    char pad[RR_CACHELINE - sizeof(void *)]; /* nothing else on kernel's line */
};

/* ---------------------------------------------------------------------------------------- */
/* The table                                                                                */

/* iplimit_new - a table of ips_max entries. */
struct iplimit *iplimit_new(unsigned ips_max)
{
    struct iplimit *il = aligned_alloc(RR_CACHELINE, sizeof(*il));
    size_t entries = IPLIMIT_WAYS;

    if (!il)
        rr_oom(sizeof(*il));
    memset(il, 0, sizeof(*il));
    while (entries < ips_max && entries < ((size_t)1 << 30))
        entries <<= 1;
    il->entries = rr_calloc(entries, sizeof(struct ipl_entry));
    il->bucket_mask = entries / IPLIMIT_WAYS - 1;
    il->stripes = aligned_alloc(_Alignof(struct ipl_stripe),
                                IPLIMIT_LOCKS * sizeof(struct ipl_stripe));
    if (!il->stripes)
        rr_oom(IPLIMIT_LOCKS * sizeof(struct ipl_stripe));
    memset(il->stripes, 0, IPLIMIT_LOCKS * sizeof(struct ipl_stripe));
    for (unsigned i = 0; i < IPLIMIT_LOCKS; i++)
        pthread_mutex_init(&il->stripes[i].lock, NULL);
    siphash_key_table(il->key, il);
    atomic_init(&il->kernel, NULL);
    return il;
}

/* iplimit_free - release a table. */
void iplimit_free(struct iplimit *il)
{
    if (!il)
        return;
    for (unsigned i = 0; i < IPLIMIT_LOCKS; i++)
        pthread_mutex_destroy(&il->stripes[i].lock);
    explicit_bzero(il->key, sizeof(il->key));
    free(il->stripes);
    free(il->entries);
    free(il);
}

static struct iplimit *shared;
static pthread_once_t shared_once = PTHREAD_ONCE_INIT;

/* shared_init - pthread_once body of iplimit_shared(). */
static void shared_init(void)
{
    shared = iplimit_new(IPLIMIT_IPS_MAX);
}

/* iplimit_shared - the process-wide accounting. */
struct iplimit *iplimit_shared(void)
{
    pthread_once(&shared_once, shared_init);
    return shared;
}

/* iplimit_use_kernel - switch the façade to the programs (or back). */
void iplimit_use_kernel(struct iplimit *il, struct connlimit *cl)
{
    atomic_store_explicit(&il->kernel, cl, memory_order_release);
}

/* bump - add d to a stripe counter; the caller holds the stripe's lock. */
static inline void bump(uint64_t *c, int64_t d)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + (uint64_t)d, __ATOMIC_RELAXED);
}

/* ip_of - the table key of a socket address; false for another family. */
static bool ip_of(const struct sockaddr *sa, struct connlimit_ip *ip)
{
    memset(ip, 0, sizeof(*ip));
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in4;
        memcpy(&in4, sa, sizeof(in4));
        ip->addr[10] = ip->addr[11] = 0xff;
        memcpy(ip->addr + 12, &in4.sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof(in6));
        memcpy(ip->addr, &in6.sin6_addr, 16);
        return true;
    }
    return false;
}

/* bucket_of - the first entry of ip's bucket, and the stripe that guards it. */
static struct ipl_entry *bucket_of(struct iplimit *il, const struct connlimit_ip *ip,
                                   struct ipl_stripe **stripe)
{
    size_t b = (size_t)siphash24(il->key, ip->addr, sizeof(ip->addr)) & il->bucket_mask;

    *stripe = &il->stripes[b % IPLIMIT_LOCKS];
    return &il->entries[b * IPLIMIT_WAYS];
}

/* find - ip's entry in bucket b, or NULL. Under the stripe's lock. */
static struct ipl_entry *find(struct ipl_entry *b, const struct connlimit_ip *ip)
{
    for (unsigned i = 0; i < IPLIMIT_WAYS; i++)
        if (b[i].used && memcmp(b[i].ip.addr, ip->addr, sizeof(ip->addr)) == 0)
            return &b[i];
    return NULL;
}

/* take_entry - an entry of bucket b for a new address: a free one, else the idle one (no
 * open connection) whose rate state recovers first, which has recovered already if any
 * has; NULL when every entry has open connections. The entry is reset to ip. Under the
 * stripe's lock. */
static struct ipl_entry *take_entry(struct ipl_entry *b, const struct connlimit_ip *ip)
{
    struct ipl_entry *v = NULL;

    for (unsigned i = 0; i < IPLIMIT_WAYS; i++) {
        struct ipl_entry *e = &b[i];
        if (!e->used) {
            v = e;
            break;
        }
        if (e->current)
            continue;             /* never: its close must find it */
        if (!v || e->tat_ns < v->tat_ns)
            v = e;
    }
    if (v) {
        memset(v, 0, sizeof(*v));
        v->ip = *ip;
        v->used = 1;
    }
    return v;
}

/* rate_take - one connection against the rate (GCRA, as connlimit.bpf.c); false: over it. */
static bool rate_take(uint64_t *tat, uint32_t per_s, uint64_t now)
{
    uint64_t interval = NS_PER_S / per_s, tolerance = interval * (per_s - 1);
    uint64_t base = *tat > now ? *tat : now;

    if (base - now > tolerance)
        return false;
    *tat = base + interval;
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* Connections                                                                              */

/* second_count - one connection in an address's one-second windows (read back with
 * connlimit_per_second, as the kernel's are). */
static void second_count(uint64_t *start_ns, uint32_t *this_s, uint32_t *last_s,
                          uint64_t now_ns)
{
    if (now_ns - *start_ns >= NS_PER_S) {
        *last_s = now_ns - *start_ns < 2 * NS_PER_S ? *this_s : 0;
        *this_s = 0;
        *start_ns = now_ns;
    }
    (*this_s)++;
}

/* iplimit_accept - admit, count or refuse one connection. */
enum iplimit_verdict iplimit_accept(struct iplimit *il, const struct rr_config *cfg,
                                    const struct sockaddr *peer, uint64_t now_ns)
{
    uint32_t conn_max = cfg->bpf_connections_per_ip_max;
    uint32_t rate_max = cfg->bpf_connects_per_ip_per_s_max;
    enum iplimit_verdict v = IPL_COUNTED;
    struct ipl_stripe *s;
    struct ipl_entry *b, *e;
    struct connlimit_ip ip;
    bool exempt;

    /* With the kernel programs, a SYN from an address at either limit never gets here;
     * what does is counted again, exactly, and the connections limit applied: handshakes
     * in flight at once all pass the kernel's check (they are counted at establishment).
     * The rate is the kernel's alone (its tokens go at establishment too). */
    if (atomic_load_explicit(&il->kernel, memory_order_acquire))
        rate_max = 0;
    if (!peer || !ip_of(peer, &ip))
        return IPL_ADMITTED;      /* the client is gone already (reset before the accept) */
    exempt = cfg->ip_limit_exempt_count &&
             config_net_match(cfg->ip_limit_exempt, cfg->ip_limit_exempt_count, peer);
    b = bucket_of(il, &ip, &s);
    pthread_mutex_lock(&s->lock);
    e = find(b, &ip);
    if (!e && !(e = take_entry(b, &ip))) {
        bump(&s->untracked, 1);
        v = IPL_ADMITTED;
    } else if (!exempt && conn_max && e->current >= conn_max) {
        v = IPL_REFUSED_CONNECTIONS;
    } else if (!exempt && rate_max && !rate_take(&e->tat_ns, rate_max, now_ns)) {
        v = IPL_REFUSED_RATE;
    }
    if (v == IPL_COUNTED) {
        if (e->current++ == 0)
            bump(&s->tracked, 1);
        e->admitted++;
        second_count(&e->second_start_ns, &e->this_second, &e->last_second, now_ns);
    } else if (v != IPL_ADMITTED) {
        e->refused++;
        bump(&s->refused[v == IPL_REFUSED_RATE ? IPL_LIMIT_RATE : IPL_LIMIT_CONNECTIONS], 1);
    }
    pthread_mutex_unlock(&s->lock);
    return v;
}

/* iplimit_release - one counted connection closed. */
void iplimit_release(struct iplimit *il, const struct sockaddr *peer)
{
    struct ipl_stripe *s;
    struct ipl_entry *b, *e;
    struct connlimit_ip ip;
    bool found;

    if (!ip_of(peer, &ip))
        return;                   /* never counted (IPL_ADMITTED) */
    b = bucket_of(il, &ip, &s);
    pthread_mutex_lock(&s->lock);
    e = find(b, &ip);
    found = e && e->current;
    if (found && --e->current == 0)
        bump(&s->tracked, -1);
    pthread_mutex_unlock(&s->lock);
    if (!found) {
        char text[IPLIMIT_IP_TEXT_BYTES];
        iplimit_ip_format(&ip, text, sizeof(text));
        log_event(LOG_ERROR, "event=bug what=iplimit_release_unmatched peer=%s", text);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* What operators see                                                                       */

/* iplimit_stats - the kernel's counters, or the stripes' summed. */
void iplimit_stats(struct iplimit *il, struct iplimit_stats *out)
{
    struct connlimit *cl = atomic_load_explicit(&il->kernel, memory_order_acquire);

    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < IPLIMIT_LOCKS; i++) {
        const struct ipl_stripe *s = &il->stripes[i];
        out->tracked_ips += __atomic_load_n(&s->tracked, __ATOMIC_RELAXED);
        out->untracked += __atomic_load_n(&s->untracked, __ATOMIC_RELAXED);
        for (unsigned k = 0; k < IPL_LIMIT_COUNT; k++)
            out->refused[k] += __atomic_load_n(&s->refused[k], __ATOMIC_RELAXED);
    }
    if (cl) {
        struct connlimit_stats ks;
        connlimit_read(cl, &ks);
        out->kernel = true;
        out->kernel_refused[IPL_LIMIT_CONNECTIONS] = ks.n[CONNLIMIT_REFUSED_CONNECTIONS];
        out->kernel_refused[IPL_LIMIT_RATE] = ks.n[CONNLIMIT_REFUSED_RATE];
        out->tracked_ips = ks.tracked_ips;
        out->untracked += ks.n[CONNLIMIT_UNTRACKED];
        out->steered = ks.n[CONNLIMIT_STEERED];
    }
}

/* talker_before - whether a lists before b: most open, most refused, most admitted, address. */
static bool talker_before(const struct connlimit_talker *a, const struct connlimit_talker *b)
{
    if (a->current != b->current)
        return a->current > b->current;
    if (a->refused != b->refused)
        return a->refused > b->refused;
    if (a->admitted != b->admitted)
        return a->admitted > b->admitted;
    return memcmp(a->ip.addr, b->ip.addr, sizeof(a->ip.addr)) < 0;
}

/* top_insert - t into the sorted list out[0..*n) of at most max rows. */
static void top_insert(struct connlimit_talker *out, unsigned *n, unsigned max,
                       const struct connlimit_talker *t)
{
    unsigned at = *n;

    while (at > 0 && talker_before(t, &out[at - 1]))
        at--;
    if (at >= max)
        return;
    if (*n == max)
        (*n)--;                   /* the last row falls off */
    memmove(&out[at + 1], &out[at], (*n - at) * sizeof(*out));
    out[at] = *t;
    (*n)++;
}

/* iplimit_top - the programs' listing, or a scan of the table, a bucket at a time. */
int iplimit_top(struct iplimit *il, struct connlimit_talker *out, unsigned max)
{
    struct connlimit *cl = atomic_load_explicit(&il->kernel, memory_order_acquire);
    struct ipl_entry copy[IPLIMIT_WAYS];
    struct timespec ts;
    uint64_t now_ns;
    unsigned n = 0;

    if (cl)
        return connlimit_top(cl, out, max);
    clock_gettime(CLOCK_MONOTONIC, &ts);  /* the workers' clock (engine.c) */
    now_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    if (!max)
        return 0;
    for (size_t b = 0; b <= il->bucket_mask; b++) {
        struct ipl_stripe *s = &il->stripes[b % IPLIMIT_LOCKS];
        pthread_mutex_lock(&s->lock);
        memcpy(copy, &il->entries[b * IPLIMIT_WAYS], sizeof(copy));
        pthread_mutex_unlock(&s->lock);
        for (unsigned i = 0; i < IPLIMIT_WAYS; i++) {
            struct connlimit_talker t;
            if (!copy[i].used)
                continue;
            memset(&t, 0, sizeof(t));
            t.ip = copy[i].ip;
            t.current = copy[i].current;
            t.admitted = copy[i].admitted;
            t.refused = copy[i].refused;
            t.per_s = connlimit_per_second(copy[i].second_start_ns, copy[i].this_second,
                                           copy[i].last_second, now_ns);
            top_insert(out, &n, max, &t);
        }
    }
    return (int)n;
}

/* iplimit_ip_format - a mapped IPv4 address as IPv4, else IPv6. */
void iplimit_ip_format(const struct connlimit_ip *ip, char *out, size_t cap)
{
    static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

    if (memcmp(ip->addr, mapped, sizeof(mapped)) == 0) {
        if (inet_ntop(AF_INET, ip->addr + 12, out, (socklen_t)cap))
            return;
    } else if (inet_ntop(AF_INET6, ip->addr, out, (socklen_t)cap)) {
        return;
    }
    if (cap)
        out[0] = 0;
}
