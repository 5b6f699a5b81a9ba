/*
 * ratelimit.c - hourly limits per login and per client address, and once-per-interval
 * claims, in one table shared by every worker thread.
 *
 * FUNCTIONS
 *   ratelimit_shared, ratelimit_new, ratelimit_free   the table
 *   ratelimit_mail, ratelimit_rcpt                    the MAIL and RCPT limits of [policy]
 *   ratelimit_hit_name, ratelimit_reply               what to say when one is hit
 *   ratelimit_claim_once                              the relaying notice's claim
 *   ratelimit_take, ratelimit_give_back, ratelimit_claim, ratelimit_stats
 *
 * DESIGN
 *   Why one shared table and not per-thread shards: a client's connections land on whichever
 *   worker SO_REUSEPORT picks, so every worker sees part of its traffic. Shards summed on
 *   read would have to read all of them at every MAIL and would still race (two workers
 *   each see one token left and both take it). Here a key lives in exactly one entry, and
 *   its cache line is contended only by that key's own traffic.
 *
 *   An entry is one 16-byte word, {key, until}, read and changed only whole, with one
 *   compare-and-swap (cmpxchg16b): key is the SipHash-2-4 of (kind, name) under a random
 *   per-process key (0 = empty entry), until a time in microseconds of the monotonic clock.
 *   Both uses of the table keep the same meaning of until: "this entry carries no
 *   information from that moment on".
 *     - A token bucket of limit L refilled at L per window W is kept as the time it is full
 *       again (the GCRA's "theoretical arrival time"): a take computes
 *       until' = max(until, now) + T and is granted when until' - now <= H, with
 *       T = ceil(W / L) microseconds and H = L * T. From a full bucket exactly L takes are
 *       granted at once, then one every T: L per L*T, which is W plus under L microseconds.
 *     - A claim holds until = the end of its interval; it is granted when until <= now.
 *   A key maps to one bucket of RATELIMIT_WAYS entries (128 bytes) and may live in any of
 *   them. Finding it and updating it takes no lock: scan the bucket, read the matching
 *   entry whole, compute, compare-and-swap; a failed swap means another thread changed the
 *   entry first, so start over (at most RATELIMIT_CAS_TRIES_MAX times, then refuse, counted).
 *   Putting a key into the bucket (the first time it is seen, or after it was evicted)
 *   takes the bucket's striped mutex, so two threads never insert the same key twice: under
 *   the lock the bucket is scanned again first. The mutex is held for a scan and one swap,
 *   never across anything that blocks, and only on that first sight.
 *
 * WHY IT IS EXACT ENOUGH
 *   - Never over-granted by concurrency: a token is granted only by the swap that moved
 *     until from the very value the grant was computed from; two threads cannot both
 *     take the last token (tests/unit/test_ratelimit.c hammers one key from many threads).
 *   - Rounding: T is rounded up to a microsecond, so the refill is at most L microseconds
 *     per window slower than asked (1 s per hour at a million per hour); never faster.
 *   - Eviction: when a key finds its bucket full, it takes an entry whose until has passed
 *     (its bucket is full again or its claim over: it carries no information, nothing is
 *     lost). Only when all RATELIMIT_WAYS keys of the bucket are live does it take the one
 *     closest to expiry; that key starts over with a full bucket (evictions_live counts it).
 *     With 2^17 entries and a keyed hash, that needs far more live keys than the table has
 *     and cannot be aimed at one bucket.
 *   - Claims: a claim is granted once per interval per key; an evicted live claim (as above)
 *     could be granted again early. A claim is not given back when the notice then fails.
 *   - Reloads: limits are read at each call, the state is time; a changed limit applies to
 *     the debt as it stands.
 *   - Times are microseconds of CLOCK_MONOTONIC (the callers pass engine_now_ms()): a step
 *     of the wall clock changes nothing; a restart forgets everything (memory only).
 *
 * SECURITY
 *   Names (logins, domains) come from the network: they are bounded
 *   (RATELIMIT_NAME_BYTES_MAX) and hashed under a key nobody outside sees, so nobody can
 *   pick names that share a bucket. An IPv6 client counts by its /64 (one customer line),
 *   so a client cannot step around ip_hourly_messages by changing its interface id.
 *
 * STANDARDS
 *   RFC 5321 4.2.3 and RFC 3463 4.7.1 (451 4.7.1: temporary, policy); the Generic Cell Rate
 *   Algorithm (ITU-T I.371), virtual scheduling form.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/ratelimit.h"
#include "core/siphash.h"

#if !defined(__x86_64__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ratelimit.c packs {key, until} for x86-64's cmpxchg16b"
#endif

#define US_PER_MS 1000ull
#define MS_PER_S  1000ull

typedef unsigned __int128 rl_word;   /* key in the low half, until in the high half */

/* One entry: 16 bytes, 16-aligned, changed only whole (cas16). */
struct rl_slot {
    _Alignas(16) rl_word v;
};

struct ratelimit {
    struct rl_slot *slots;        /* [buckets * RATELIMIT_WAYS], cache-line aligned */
    size_t bucket_mask;           /* buckets - 1 (a power of two) */
    uint64_t key[2];              /* SipHash key, random per table */
    pthread_mutex_t locks[RATELIMIT_LOCKS]; /* insert locks; bucket b uses b % LOCKS */
    _Atomic uint64_t inserts;     /* struct ratelimit_stats */
    _Atomic uint64_t evictions_live;
    _Atomic uint64_t contended;
};

/* What one operation does to an entry's until. */
enum rl_op_kind { OP_TAKE, OP_GIVE_BACK, OP_CLAIM };

struct rl_op {
    enum rl_op_kind kind;
    uint64_t t_us;                /* TAKE, GIVE_BACK: emission interval T; CLAIM: interval */
    uint64_t h_us;                /* TAKE: horizon H = L * T */
};

/* ---------------------------------------------------------------------------------------- */
/* The 16-byte word                                                                         */

/* cas16 - compare-and-swap of a whole entry. The build does not enable cx16 everywhere, so
 * the two functions that use it carry the target themselves, and stay out of line: clang
 * would otherwise inline them into callers without cx16 and call libatomic instead. */
__attribute__((target("cx16"), noinline))
static bool cas16(struct rl_slot *s, rl_word old, rl_word new)
{
    return __sync_bool_compare_and_swap(&s->v, old, new);
}

/* load16 - a whole entry, atomically (a swap of 0 for 0 when it is empty, else no change). */
__attribute__((target("cx16"), noinline))
static rl_word load16(struct rl_slot *s)
{
    return __sync_val_compare_and_swap(&s->v, (rl_word)0, (rl_word)0);
}

/* key_of, until_of, word - the halves of a word read whole, and a word made of them. */
static inline uint64_t key_of(rl_word w) { return (uint64_t)w; }
static inline uint64_t until_of(rl_word w) { return (uint64_t)(w >> 64); }
static inline rl_word word(uint64_t key, uint64_t until)
{
    return (rl_word)until << 64 | key;
}

/* peek_key, peek_until - one half, read alone: a hint for scanning, checked by load16. */
static inline uint64_t peek_key(const struct rl_slot *s)
{
    return __atomic_load_n((const uint64_t *)&s->v, __ATOMIC_RELAXED);
}
static inline uint64_t peek_until(const struct rl_slot *s)
{
    return __atomic_load_n((const uint64_t *)&s->v + 1, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------------------------- */
/* The table                                                                                */

/* ratelimit_new - a table of 2^entries_log2 entries. */
struct ratelimit *ratelimit_new(unsigned entries_log2)
{
    struct ratelimit *rl = rr_calloc(1, sizeof(*rl));
    size_t entries;

    if (entries_log2 < 3)
        entries_log2 = 3;         /* one bucket of RATELIMIT_WAYS */
    if (entries_log2 > 30)
        entries_log2 = 30;
    entries = (size_t)1 << entries_log2;
    rl->slots = aligned_alloc(RR_CACHELINE, entries * sizeof(struct rl_slot));
    if (!rl->slots)
        rr_oom(entries * sizeof(struct rl_slot));
    memset(rl->slots, 0, entries * sizeof(struct rl_slot));
    rl->bucket_mask = entries / RATELIMIT_WAYS - 1;
    siphash_key_table(rl->key, rl);
    for (int i = 0; i < RATELIMIT_LOCKS; i++)
        pthread_mutex_init(&rl->locks[i], NULL);
    return rl;
}

/* ratelimit_free - release the table. */
void ratelimit_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    for (int i = 0; i < RATELIMIT_LOCKS; i++)
        pthread_mutex_destroy(&rl->locks[i]);
    explicit_bzero(rl->key, sizeof(rl->key));
    free(rl->slots);
    free(rl);
}

static struct ratelimit *shared;
static pthread_once_t shared_once = PTHREAD_ONCE_INIT;

/* shared_init - pthread_once body of ratelimit_shared(). */
static void shared_init(void)
{
    shared = ratelimit_new(RATELIMIT_ENTRIES_LOG2);
}

/* ratelimit_shared - the process-wide table. */
struct ratelimit *ratelimit_shared(void)
{
    pthread_once(&shared_once, shared_init);
    return shared;
}

/* ratelimit_stats - the counters. */
void ratelimit_stats(const struct ratelimit *rl, struct ratelimit_stats *out)
{
    out->inserts = atomic_load_explicit(&rl->inserts, memory_order_relaxed);
    out->evictions_live = atomic_load_explicit(&rl->evictions_live, memory_order_relaxed);
    out->contended = atomic_load_explicit(&rl->contended, memory_order_relaxed);
}

/* ---------------------------------------------------------------------------------------- */
/* Operations                                                                               */

/* apply - op on an entry whose until is until, at now: false when refused, else *next is
 * the new until (equal to until: nothing to write). */
static bool apply(const struct rl_op *op, uint64_t until, uint64_t now, uint64_t *next)
{
    switch (op->kind) {
    case OP_TAKE: {
        uint64_t t = (until > now ? until : now) + op->t_us;
        if (t - now > op->h_us)
            return false;
        *next = t;
        return true;
    }
    case OP_GIVE_BACK:
        /* until <= now: the bucket is full already, there is nothing to give back */
        *next = until > now ? until - (until - now < op->t_us ? until - now : op->t_us)
                            : until;
        return true;
    case OP_CLAIM:
        if (until > now)
            return false;
        *next = now + op->t_us;
        return true;
    }
    return false;
}

/* find - the entry of key h in bucket b, read whole into *w; NULL when it is not there. */
static struct rl_slot *find(struct rl_slot *b, uint64_t h, rl_word *w)
{
    for (int i = 0; i < RATELIMIT_WAYS; i++) {
        if (peek_key(&b[i]) != h)
            continue;
        *w = load16(&b[i]);
        if (key_of(*w) == h)
            return &b[i];
    }
    return NULL;
}

/* victim - the entry of bucket b a new key takes: an empty one, else the one with the
 * earliest until (one that has passed carries no information). */
static struct rl_slot *victim(struct rl_slot *b)
{
    struct rl_slot *v = &b[0];

    for (int i = 0; i < RATELIMIT_WAYS; i++) {
        if (peek_key(&b[i]) == 0)
            return &b[i];
        if (peek_until(&b[i]) < peek_until(v))
            v = &b[i];
    }
    return v;
}

/* run - op on key h at now (microseconds); see the top for the protocol. */
static bool run(struct ratelimit *rl, uint64_t h, const struct rl_op *op, uint64_t now)
{
    size_t bi = (size_t)(h >> 32) & rl->bucket_mask;
    struct rl_slot *b = &rl->slots[bi * RATELIMIT_WAYS], *s;
    pthread_mutex_t *lock = &rl->locks[bi % RATELIMIT_LOCKS];
    uint64_t next;
    rl_word w;

    for (int tries = 0; tries < RATELIMIT_CAS_TRIES_MAX; tries++) {
        if ((s = find(b, h, &w))) {
            if (!apply(op, until_of(w), now, &next))
                return false;
            if (next == until_of(w) || cas16(s, w, word(h, next)))
                return true;
            continue;             /* another thread changed it first */
        }
        if (op->kind == OP_GIVE_BACK)
            return true;          /* gone (evicted): full again as far as we know */
        if (!apply(op, 0, now, &next))
            return false;         /* a limit no token can pass (cannot happen, L >= 1) */

        bool done = false, live = false;
        pthread_mutex_lock(lock);
        if (!find(b, h, &w)) {    /* else: inserted meanwhile, go round and update it */
            s = victim(b);
            w = load16(s);
            live = key_of(w) != 0 && until_of(w) > now;
            done = cas16(s, w, word(h, next));
        }
        pthread_mutex_unlock(lock);
        if (done) {
            atomic_fetch_add_explicit(&rl->inserts, 1, memory_order_relaxed);
            if (live)
                atomic_fetch_add_explicit(&rl->evictions_live, 1, memory_order_relaxed);
            return true;
        }
    }
    atomic_fetch_add_explicit(&rl->contended, 1, memory_order_relaxed);
    return op->kind == OP_GIVE_BACK;
}

/* key_hash - the table key of kind and len bytes of key (never 0: 0 marks an empty entry). */
static uint64_t key_hash(const struct ratelimit *rl, enum ratelimit_kind kind,
                         const void *key, size_t len)
{
    unsigned char buf[1 + 2 * (RATELIMIT_NAME_BYTES_MAX + 1)];
    uint64_t h;

    if (len > sizeof(buf) - 1)
        len = sizeof(buf) - 1;
    buf[0] = (unsigned char)kind;
    memcpy(buf + 1, key, len);
    h = siphash24(rl->key, buf, len + 1);
    return h ? h : 1;
}

/* bucket_op - the TAKE / GIVE_BACK parameters of a limit over window_ms. */
static struct rl_op bucket_op(enum rl_op_kind kind, uint32_t limit, uint64_t window_ms)
{
    uint64_t w = window_ms * US_PER_MS, t = (w + limit - 1) / limit;

    if (t == 0)
        t = 1;
    return (struct rl_op){ kind, t, t * limit };
}

/* ratelimit_take - one token. */
bool ratelimit_take(struct ratelimit *rl, enum ratelimit_kind kind, const void *key,
                    size_t len, uint32_t limit, uint64_t window_ms, uint64_t now_ms)
{
    struct rl_op op;

    if (limit == 0)
        return true;
    op = bucket_op(OP_TAKE, limit, window_ms);
    return run(rl, key_hash(rl, kind, key, len), &op, now_ms * US_PER_MS);
}

/* ratelimit_give_back - one token back. */
void ratelimit_give_back(struct ratelimit *rl, enum ratelimit_kind kind, const void *key,
                         size_t len, uint32_t limit, uint64_t window_ms, uint64_t now_ms)
{
    struct rl_op op;

    if (limit == 0)
        return;
    op = bucket_op(OP_GIVE_BACK, limit, window_ms);
    run(rl, key_hash(rl, kind, key, len), &op, now_ms * US_PER_MS);
}

/* ratelimit_claim - the first claim of key in interval_ms. */
bool ratelimit_claim(struct ratelimit *rl, enum ratelimit_kind kind, const void *key,
                     size_t len, uint64_t now_ms, uint64_t interval_ms)
{
    struct rl_op op = { OP_CLAIM, interval_ms * US_PER_MS, 0 };

    return run(rl, key_hash(rl, kind, key, len), &op, now_ms * US_PER_MS);
}

/* ---------------------------------------------------------------------------------------- */
/* The [policy] limits                                                                      */

/* fold_name - up to RATELIMIT_NAME_BYTES_MAX bytes of s, ASCII lower case, at out; the
 * bytes written. */
static size_t fold_name(unsigned char *out, const char *s)
{
    size_t n = 0;

    for (; s[n] && n < RATELIMIT_NAME_BYTES_MAX; n++) {
        unsigned char c = (unsigned char)s[n];
        out[n] = c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
    }
    return n;
}

/* ip_key - the key bytes of a client address: family, then 4 bytes (IPv4, v4-mapped IPv6)
 * or the /64 (IPv6). 0 for another family. */
static size_t ip_key(const struct sockaddr *sa, unsigned char out[9])
{
    static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in4;
        memcpy(&in4, sa, sizeof(in4));
        out[0] = 4;
        memcpy(out + 1, &in4.sin_addr, 4);
        return 5;
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof(in6));
        if (memcmp(&in6.sin6_addr, mapped, sizeof(mapped)) == 0) {
            out[0] = 4;
            memcpy(out + 1, (const unsigned char *)&in6.sin6_addr + 12, 4);
            return 5;
        }
        out[0] = 6;
        memcpy(out + 1, &in6.sin6_addr, 8);
        return 9;
    }
    return 0;
}

/* ratelimit_mail - see ratelimit.h. */
enum ratelimit_hit ratelimit_mail(struct ratelimit *rl, const struct rr_config *cfg,
                                  const char *login, const struct sockaddr *peer,
                                  uint64_t now_ms)
{
    uint64_t window_ms = (uint64_t)cfg->rate_window_s * MS_PER_S;
    unsigned char user[RATELIMIT_NAME_BYTES_MAX], ip[9];
    size_t user_len = 0, ip_len = 0;
    bool user_taken = false;

    if (login && cfg->user_hourly_messages) {
        user_len = fold_name(user, login);
        if (!ratelimit_take(rl, RATELIMIT_KIND_USER_MESSAGES, user, user_len,
                            cfg->user_hourly_messages, window_ms, now_ms))
            return RATELIMIT_USER_MESSAGES;
        user_taken = true;
    }
    if (peer && cfg->ip_hourly_messages && (ip_len = ip_key(peer, ip)) &&
        !ratelimit_take(rl, RATELIMIT_KIND_IP_MESSAGES, ip, ip_len, cfg->ip_hourly_messages,
                        window_ms, now_ms)) {
        if (user_taken)           /* all or nothing */
            ratelimit_give_back(rl, RATELIMIT_KIND_USER_MESSAGES, user, user_len,
                                cfg->user_hourly_messages, window_ms, now_ms);
        return RATELIMIT_IP_MESSAGES;
    }
    return RATELIMIT_OK;
}

/* ratelimit_rcpt - see ratelimit.h. */
enum ratelimit_hit ratelimit_rcpt(struct ratelimit *rl, const struct rr_config *cfg,
                                  const char *login, uint64_t now_ms)
{
    unsigned char user[RATELIMIT_NAME_BYTES_MAX];
    size_t n;

    if (!login || !cfg->user_hourly_recipients)
        return RATELIMIT_OK;
    n = fold_name(user, login);
    return ratelimit_take(rl, RATELIMIT_KIND_USER_RECIPIENTS, user, n,
                          cfg->user_hourly_recipients, (uint64_t)cfg->rate_window_s * MS_PER_S,
                          now_ms) ? RATELIMIT_OK : RATELIMIT_USER_RECIPIENTS;
}

/* ratelimit_hit_name - the configuration key of a limit. */
const char *ratelimit_hit_name(enum ratelimit_hit hit)
{
    switch (hit) {
    case RATELIMIT_USER_MESSAGES:
        return "user_hourly_messages";
    case RATELIMIT_USER_RECIPIENTS:
        return "user_hourly_recipients";
    case RATELIMIT_IP_MESSAGES:
        return "ip_hourly_messages";
    case RATELIMIT_OK:
        break;
    }
    return "none";
}

/* format_window - seconds as an operator writes them: "1h", "90m", "2d", "45s". */
static const char *format_window(uint32_t s, char *buf, size_t size)
{
    static const struct { uint32_t secs; char unit; } units[] = {
        { 86400, 'd' }, { 3600, 'h' }, { 60, 'm' },
    };

    for (size_t i = 0; i < RR_ARRAY_LEN(units); i++)
        if (s && s % units[i].secs == 0) {
            snprintf(buf, size, "%u%c", (unsigned)(s / units[i].secs), units[i].unit);
            return buf;
        }
    snprintf(buf, size, "%us", (unsigned)s);
    return buf;
}

/* ratelimit_reply - the 451 of a limit. */
const char *ratelimit_reply(enum ratelimit_hit hit, const struct rr_config *cfg, char *buf,
                            size_t size)
{
    char window[16];
    uint32_t limit = hit == RATELIMIT_USER_MESSAGES ? cfg->user_hourly_messages
                   : hit == RATELIMIT_USER_RECIPIENTS ? cfg->user_hourly_recipients
                   : cfg->ip_hourly_messages;

    snprintf(buf, size, "451 4.7.1 Rate limit %s (%u per %s) exceeded, try again later",
             ratelimit_hit_name(hit), (unsigned)limit,
             format_window(cfg->rate_window_s, window, sizeof(window)));
    return buf;
}

/* ratelimit_claim_once - the notice's claim on (login, domain). */
bool ratelimit_claim_once(struct ratelimit *rl, const char *login, const char *domain,
                          uint64_t now_ms, uint64_t interval_ms)
{
    unsigned char key[2 * (RATELIMIT_NAME_BYTES_MAX + 1)];
    size_t n = fold_name(key, login);

    key[n++] = '\0';              /* "ab"+"c" and "a"+"bc" differ */
    n += fold_name(key + n, domain);
    return ratelimit_claim(rl, RATELIMIT_KIND_NOTICE, key, n, now_ms, interval_ms);
}
