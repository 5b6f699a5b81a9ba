/*
 * dns.c - next-hop lookups on a worker's ring: one c-ares channel per worker, driven by
 * io_uring polls and one ring timeout; an MX stage, an address stage, reverse (PTR) lookups,
 * a per-worker answer cache, and coalescing of identical lookups.
 *
 * Functions: dns_worker_init(), dns_worker_fini(), dns_worker_reload(), dns_resolve_mx(),
 * dns_resolve_host(), dns_resolve_ptr(), dns_ptr_name(), dns_worker_run_deferred(),
 * dns_worker_busy(), dns_complete(), dns_answer_ttl().
 *
 * The ring: c-ares says through its socket-state callback which of its sockets to watch for
 * reading or writing. Each watched socket has a slot with a one-shot IORING_OP_POLL_ADD in
 * flight (user_data {OP_DNS_POLL, slot, gen}); its completion goes to ares_process_fd() and
 * the poll is armed again while c-ares still wants the socket. One-shot rather than
 * multishot on purpose: a multishot poll reports wake-ups, not state, and c-ares 1.18 reads a
 * TCP answer in two calls (length word, then body); with the body already queued no new
 * wake-up comes and the answer would wait for a retransmit. A one-shot poll checks the state
 * when armed. When c-ares closes a socket its poll is removed and the slot's generation
 * bumped, so a late completion (or one for a reused fd number) is ignored. Retransmits and
 * timeouts: at the end of each loop pass ares_timeout() is read and one ring timeout
 * ({OP_DNS_TIMER, 0, gen}) is kept armed for the earliest deadline; it fires
 * ares_process_fd(BAD, BAD).
 *
 * Lookups: a lookup is keyed by (kind, normalised name) and sits in an in-flight table from
 * creation to delivery, so identical requests wait on one lookup. An address lookup (kind
 * HOST) sends an A and an AAAA query; a reverse lookup (kind PTR, for the relaying notice)
 * one PTR query for the in-addr.arpa or ip6.arpa name of the address. An MX lookup sends an
 * MX query, then resolves each MX host through a HOST lookup of its own (sharing their cache
 * and coalescing). Every answer, cached or not, reaches callers through the done list,
 * drained by dns_worker_run_deferred() at the end of the loop pass: callbacks never run
 * inside dns_resolve_*() nor inside c-ares. A lookup that finishes after the drain
 * (dns_resolve_* called late in a pass) gets a ring NOP ({OP_DNS_TIMER, 1, 0}) so that the
 * loop does not sleep on it.
 *
 * Cache: MX answers (the host list, or NXDOMAIN / null MX / no MX), address answers (the
 * addresses, or NXDOMAIN / no address) and PTR answers (the name, or none) per worker, for
 * the smallest TTL of the records used (an MX or PTR answer's TTL is read from the raw answer
 * by dns_answer_ttl(), which c-ares 1.18 does not give), clamped to [DNS_TTL_MIN_S,
 * DNS_TTL_MAX_S]; negative answers DNS_NEG_TTL_S; temporary failures are not kept.
 * DNS_CACHE_ENTRIES_MAX entries, oldest evicted first.
 *
 * Configuration: the channel reads /etc/resolv.conf once, at dns_worker_init (before the
 * loop), and keeps its servers as the "system" list; lookups are DNS only (no /etc/hosts, no
 * search list). A reload that changes dns_servers builds a new channel without reading any
 * file, moves the queries in flight to it (ares_cancel, then each is sent again) and destroys
 * the old one: c-ares 1.18 refuses to change the servers of a channel with queries.
 *
 * SECURITY: answers come from the network. c-ares parses the records (and checks that the
 * answer matches the query); dns_answer_ttl() bounds every offset by the answer's length and
 * follows no compression pointer. Names from answers (MX hosts, PTR targets) are accepted
 * only as host names (letters, digits, '-', '_', labels of 1..63 bytes, at most 253 bytes);
 * counts are capped at DNS_HOSTS_MAX and DNS_ADDRS_MAX; callers' lookups on the network at
 * DNS_LOOKUPS_MAX (more wait, up to DNS_BACKLOG_MAX). Hash table keys are seeded per worker
 * so that chosen names do not pile into one bucket. Sockets are not kept open while idle, so
 * that the UDP source port changes (see chan_new).
 *
 * STANDARDS: RFC 1035 4.1 (message format, name compression) and 3.5 (in-addr.arpa), RFC
 * 3596 2.5 (ip6.arpa), RFC 2317 (classless reverse delegation: c-ares follows the CNAME), RFC
 * 2181 8 (a TTL with its top bit set is 0), RFC 5321 5.1 (MX preference order, random among
 * equal preferences, implicit MX; IPv4 before IPv6 here), RFC 7505 (null MX), RFC 2308
 * (negative answers are cached; a fixed lifetime here instead of the SOA minimum).
 */
#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/time.h>

#include "core/alloc.h"
#include "core/log.h"
#include "net/dns.h"

#define DNS_TYPE_A              1
#define DNS_TYPE_CNAME          5
#define DNS_TYPE_PTR            12
#define DNS_TYPE_MX             15
#define DNS_TYPE_AAAA           28
#define DNS_CLASS_IN            1
#define DNS_HEADER_BYTES        12     /* id, flags, four counts */
#define DNS_QUESTION_FIXED_BYTES 4     /* type, class after the name */
#define DNS_RR_FIXED_BYTES      10     /* type, class, TTL, rdlength after the name */
#define DNS_LABEL_BYTES_MAX     63
#define DNS_WIRE_NAME_BYTES_MAX 255    /* encoded name, length bytes and root included */
#define DNS_TEXT_NAME_BYTES_MAX 253    /* the same name as text, without the final dot */

#define DNS_TIMEOUT_MS          2000   /* first try per server; c-ares doubles it per round */
#define DNS_TRIES               2      /* rounds over the servers */
#define DNS_EDNS_BYTES          1232   /* UDP payload size advertised (EDNS0) */
#define DNS_RCVBUF_BYTES        (1 << 20) /* socket receive buffer: a burst of answers fits
                                             (the kernel caps it at net.core.rmem_max) */
#define DNS_SOCKS_MAX           64     /* resolver sockets watched at once (two channels
                                          during a reload: UDP and TCP per server each) */
#define DNS_LOOKUPS_MAX         256    /* callers' lookups on the network at once; more wait
                                          in the backlog. An MX lookup's hosts (DNS_HOSTS_MAX
                                          at most) are not counted, so they cannot starve */
#define DNS_BACKLOG_MAX         65536  /* lookups waiting for one of those; more: TEMPFAIL */
#define DNS_LOOKUP_BUCKETS      1024   /* in-flight table (power of 2) */
#define DNS_CACHE_ENTRIES_MAX   4096   /* cached answers per worker */
#define DNS_CACHE_BUCKETS       8192   /* cache table (power of 2) */
#define DNS_DEFER_ROUNDS_MAX    64     /* done-list rounds per pass; the rest waits for a NOP */
#define DNS_SLOT_RETRANSMIT     0      /* OP_DNS_TIMER slot: the c-ares timeout */
#define DNS_SLOT_KICK           1      /* OP_DNS_TIMER slot: a NOP that ends the loop's wait */

_Static_assert((DNS_LOOKUP_BUCKETS & (DNS_LOOKUP_BUCKETS - 1)) == 0, "power of 2");
_Static_assert((DNS_CACHE_BUCKETS & (DNS_CACHE_BUCKETS - 1)) == 0, "power of 2");
_Static_assert(DNS_HOSTS_MAX <= 255 && DNS_ADDRS_MAX <= 255, "counts kept in a byte");

enum dns_kind { KIND_MX, KIND_HOST, KIND_PTR };

/* What the MX stage, or one family of an address lookup, found. */
enum dns_found {
    FOUND_NONE,                   /* no answer yet */
    FOUND_LIST,                   /* records: MX hosts, or addresses */
    FOUND_NODATA,                 /* the name exists without such records (MX: implicit MX) */
    FOUND_NXDOMAIN,               /* the name does not exist */
    FOUND_NULLMX,                 /* MX "." (RFC 7505) */
    FOUND_TEMP,                   /* timeout, SERVFAIL, refused, malformed */
};

/* An address in 17 bytes, as kept in lookups and cache entries. */
struct dns_addr {
    uint8_t family;               /* AF_INET or AF_INET6 */
    uint8_t bytes[16];            /* network order; 4 used for AF_INET */
};

struct dns_lookup;
struct dns_worker;

/* One c-ares query of a lookup; the query's callback argument. */
struct dns_query {
    struct dns_lookup *l;         /* lookup it belongs to */
    uint16_t type;                /* DNS_TYPE_MX, _A or _AAAA */
};

/* One MX host of an MX lookup, and what its address lookup found. */
struct dns_target {
    struct dns_lookup *owner;     /* the MX lookup */
    char name[DNS_NAME_BYTES_MAX];/* normalised exchange name (or the domain: implicit MX) */
    uint16_t pref;                /* MX preference */
    uint32_t rank;                /* random order among equal preferences */
    enum dns_status status;       /* of its address lookup */
    const char *reason;           /* short why of a failure ("timeout"), static */
    unsigned addr_count;
    struct dns_addr addrs[DNS_ADDRS_MAX]; /* IPv4 first */
};

/* Someone waiting for a lookup: a caller, or an MX lookup waiting for one host. */
struct dns_waiter {
    struct dns_waiter *next;      /* next waiter of the lookup, or of the free list */
    dns_cb cb;                    /* caller's callback; NULL for an MX host */
    void *arg;                    /* caller's argument */
    struct dns_target *target;    /* MX host to fill when cb is NULL */
};

/* The A or the AAAA half of an address lookup. */
struct dns_family {
    enum dns_found found;
    const char *reason;           /* why FOUND_TEMP, static */
    unsigned count;               /* addresses in addrs */
    struct dns_addr addrs[DNS_ADDRS_MAX];
    int64_t ttl_s;                /* smallest TTL of the records, -1 before any */
};

struct dns_lookup {
    struct dns_lookup *hnext;     /* in-flight table chain */
    struct dns_lookup *done_next; /* done list */
    struct dns_worker *d;
    uint32_t hash;                /* of (kind, name) */
    enum dns_kind kind;
    bool in_table;                /* in the in-flight table (not literals, invalid names) */
    bool net;                     /* counted in net_lookups (started by a caller) */
    struct dns_lookup *backlog_next; /* backlog list */
    char name[DNS_NAME_BYTES_MAX];/* normalised (lower case, no final dot) or a literal */
    struct dns_waiter *waiters;   /* oldest first */
    struct dns_waiter **waiters_tail;
    struct dns_query q[2];        /* MX: q[0]; HOST: A in q[0], AAAA in q[1] */
    enum dns_status status;       /* the answer, when done */
    const char *reason;           /* short why of a failure, static */
    char error[128];              /* the answer's error text */
    /* HOST lookups */
    struct dns_family fam[2];     /* A, AAAA */
    unsigned addr_count;
    struct dns_addr addrs[DNS_ADDRS_MAX]; /* the answer: IPv4 first */
    /* PTR lookups */
    char ptr[DNS_NAME_BYTES_MAX]; /* the answer: a host name, normalised */
    /* MX lookups */
    enum dns_found mx;            /* what the MX stage found */
    bool mx_cached;               /* ... taken from the cache (not logged again) */
    unsigned subs;                /* MX hosts whose address lookup is awaited */
    unsigned target_count;
    struct dns_target *targets;   /* DNS_HOSTS_MAX, by (pref, rank); MX lookups only */
};

/* One cached answer. MX: state, and the hosts (names in names[] after the key) with their
 * preferences. HOST: state, and the addresses. PTR: state, and the name (names[] after the
 * key, at name_off[0]). */
struct dns_entry {
    struct dns_entry *hnext;      /* cache table chain */
    struct dns_entry *older, *newer; /* age list: evicted from the oldest end */
    uint64_t expires_ms;          /* monotonic time it stops being used */
    uint32_t hash;                /* of (kind, name) */
    uint8_t kind;                 /* enum dns_kind */
    uint8_t found;                /* FOUND_LIST, _NODATA, _NXDOMAIN or _NULLMX */
    uint8_t count;                /* MX hosts, or addresses */
    uint16_t pref[DNS_HOSTS_MAX]; /* MX: preference of host i */
    uint16_t name_off[DNS_HOSTS_MAX]; /* MX: offset of host i's name in names[] */
    struct dns_addr addrs[DNS_ADDRS_MAX]; /* HOST: IPv4 first */
    char names[];                 /* the key name, NUL, then the MX host names, NUL each */
};

/* A c-ares channel; the socket-state callback's data. */
struct dns_chan {
    struct dns_worker *d;
    ares_channel ch;
};

/* A socket c-ares asked to watch. */
struct dns_sock {
    struct dns_chan *chan;        /* channel that owns it; NULL: slot free */
    int fd;
    uint32_t gen;                 /* bumped when a poll is removed or the slot changes hands */
    unsigned want;                /* POLLIN / POLLOUT that c-ares wants */
    unsigned armed;               /* mask of the poll in flight, 0 if none */
};

struct dns_worker {
    struct worker *w;
    struct dns_chan *chan;        /* current channel */
    bool closing;                 /* fini: no ring operations, no callbacks */
    bool reissue;                 /* reload: cancelled queries are sent again */
    bool in_deferred;             /* inside dns_worker_run_deferred */
    bool kick_armed;              /* a NOP is in flight */
    bool timer_dirty;             /* c-ares' next timeout may have moved */
    bool timer_armed;             /* the retransmit timeout is in flight */
    bool socks_full_logged;       /* "no free socket slot" said once */
    uint32_t timer_gen;           /* of the retransmit timeout in flight */
    uint64_t timer_deadline_ms;   /* when it fires */
    struct __kernel_timespec timer_ts[2]; /* alternate: a removed one may still be unsubmitted */
    struct dns_sock socks[DNS_SOCKS_MAX];
    struct ares_addr_port_node system[CONFIG_ADDRS_MAX]; /* resolv.conf's servers */
    unsigned system_count;
    struct ares_addr_port_node applied[CONFIG_ADDRS_MAX]; /* servers in use */
    unsigned applied_count;
    struct dns_lookup *table[DNS_LOOKUP_BUCKETS]; /* lookups by (kind, name) */
    unsigned lookup_count;        /* lookups alive: in flight or waiting for delivery */
    unsigned net_lookups;         /* callers' lookups on the network */
    struct dns_lookup *backlog_head; /* callers' lookups waiting for a DNS_LOOKUPS_MAX place */
    struct dns_lookup **backlog_tail;
    unsigned backlog_count;
    struct dns_lookup *done_head; /* answers to deliver, oldest first */
    struct dns_lookup **done_tail;
    struct dns_waiter *waiter_free; /* free list */
    struct dns_entry *cache[DNS_CACHE_BUCKETS];
    struct dns_entry *oldest, *newest; /* age list */
    unsigned cache_count;
    uint64_t hash_seed;           /* random per worker */
    uint64_t rng;                 /* xorshift state: MX tie-breaks */
    struct dns_result res;        /* the answer being delivered */
};

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;

static void lookup_done(struct dns_lookup *l);
static void net_send(struct dns_lookup *l);
static void resolve(struct dns_worker *d, enum dns_kind kind, const char *name, dns_cb cb,
                    void *arg, struct dns_target *target);

/* ares_global_init - c-ares' process-wide set-up, once (not thread-safe by itself). */
static void ares_global_init(void)
{
    int r = ares_library_init(ARES_LIB_INIT_ALL);

    if (r != ARES_SUCCESS)
        log_event(LOG_ERROR, "event=dns_init_failed error=%s", log_q(ares_strerror(r)));
}

/* rng_next - 32 random-enough bits (xorshift64*): tie-breaks, not secrets. */
static uint32_t rng_next(struct dns_worker *d)
{
    d->rng ^= d->rng >> 12;
    d->rng ^= d->rng << 25;
    d->rng ^= d->rng >> 27;
    return (uint32_t)((d->rng * 0x2545f4914f6cdd1dull) >> 32);
}

/* name_hash - seeded FNV-1a of (kind, name). */
static uint32_t name_hash(const struct dns_worker *d, enum dns_kind kind, const char *name)
{
    uint64_t h = d->hash_seed ^ (0xcbf29ce484222325ull + (uint64_t)kind);

    for (; *name; name++) {
        h ^= (unsigned char)*name;
        h *= 0x100000001b3ull;
    }
    return (uint32_t)(h ^ h >> 32);
}

/* ttl_clamp - a cache lifetime from a record TTL (-1: none known). */
static int64_t ttl_clamp(int64_t ttl_s)
{
    if (ttl_s < DNS_TTL_MIN_S)
        return DNS_TTL_MIN_S;
    return ttl_s > DNS_TTL_MAX_S ? DNS_TTL_MAX_S : ttl_s;
}

/* ttl_min - the smaller of two TTLs where -1 means "none". */
static int64_t ttl_min(int64_t a, int64_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

/* be16 - a 16-bit big-endian field. */
static unsigned be16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

/* skip_name - the offset just past the encoded name at off in abuf[0..alen), or 0 when it is
 * malformed: out of bounds, a label type other than length or pointer, longer than 255 bytes,
 * or a pointer that does not point before the name's start (which also rules out loops). The
 * pointer is not followed. */
static size_t skip_name(const unsigned char *abuf, size_t alen, size_t off)
{
    size_t start = off, wire = 1;     /* the root byte */

    for (;;) {
        unsigned c;
        if (off >= alen)
            return 0;
        c = abuf[off];
        if ((c & 0xc0) == 0xc0) {
            size_t target;
            if (alen - off < 2)
                return 0;
            target = (size_t)(c & 0x3f) << 8 | abuf[off + 1];
            if (target < DNS_HEADER_BYTES || target >= start)
                return 0;
            return off + 2;
        }
        if (c & 0xc0)
            return 0;                 /* 01 / 10: extended label types, not in use */
        if (c == 0)
            return off + 1;
        wire += c + 1;
        if (wire > DNS_WIRE_NAME_BYTES_MAX)
            return 0;
        off += 1 + c;
    }
}

/* dns_answer_ttl - the smallest TTL of the answer records of type qtype and class IN. */
int64_t dns_answer_ttl(const unsigned char *abuf, size_t alen, uint16_t qtype)
{
    unsigned qdcount, ancount;
    size_t off = DNS_HEADER_BYTES;
    int64_t best = -1;

    if (!abuf || alen < DNS_HEADER_BYTES)
        return -1;
    qdcount = be16(abuf + 4);
    ancount = be16(abuf + 6);
    /* Each step moves off forward by at least 5 bytes, so the loops end within alen. */
    for (unsigned i = 0; i < qdcount; i++) {
        off = skip_name(abuf, alen, off);
        if (!off || alen - off < DNS_QUESTION_FIXED_BYTES)
            return -1;
        off += DNS_QUESTION_FIXED_BYTES;
    }
    for (unsigned i = 0; i < ancount; i++) {
        unsigned type, klass, rdlength;
        uint32_t ttl;
        off = skip_name(abuf, alen, off);
        if (!off || alen - off < DNS_RR_FIXED_BYTES)
            return -1;
        type = be16(abuf + off);
        klass = be16(abuf + off + 2);
        ttl = (uint32_t)abuf[off + 4] << 24 | (uint32_t)abuf[off + 5] << 16 |
              (uint32_t)abuf[off + 6] << 8 | abuf[off + 7];
        rdlength = be16(abuf + off + 8);
        off += DNS_RR_FIXED_BYTES;
        if (alen - off < rdlength)
            return -1;
        off += rdlength;
        if (type != qtype || klass != DNS_CLASS_IN)
            continue;
        if (ttl > INT32_MAX)
            ttl = 0;                  /* RFC 2181 8 */
        best = ttl_min(best, (int64_t)ttl);
    }
    return best;
}

/* name_normal - s as a host name: lower case, without a final dot, into out. False when it is
 * not one: empty, over 253 bytes, an empty or over-long label, or a byte other than a letter,
 * digit, '-' or '_' (IDNs arrive here as A-labels or not at all). */
static bool name_normal(const char *s, char out[DNS_NAME_BYTES_MAX])
{
    size_t n = strnlen(s, DNS_NAME_BYTES_MAX), label = 0;

    if (n > 0 && n < DNS_NAME_BYTES_MAX && s[n - 1] == '.')
        n--;
    if (n == 0 || n > DNS_TEXT_NAME_BYTES_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (!label)
                return false;
            label = 0;
        } else {
            if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
                return false;
            if (++label > DNS_LABEL_BYTES_MAX)
                return false;
        }
        out[i] = c;
    }
    out[n] = '\0';
    return true;
}

/* literal_addr - s as an IP address: "192.0.2.1", "2001:db8::1", "[192.0.2.1]",
 * "[IPv6:2001:db8::1]" (RFC 5321 4.1.3) or "[2001:db8::1]". */
static bool literal_addr(const char *s, struct dns_addr *a)
{
    char buf[INET6_ADDRSTRLEN + 8];
    size_t n = strnlen(s, sizeof(buf));
    const char *p = buf;
    bool v6_only = false, bracket = false;

    if (n == 0 || n == sizeof(buf))
        return false;
    if (s[0] == '[') {
        if (n < 3 || s[n - 1] != ']')
            return false;
        memcpy(buf, s + 1, n - 2);
        buf[n - 2] = '\0';
        bracket = true;
        if (strncasecmp(buf, "IPv6:", 5) == 0) {
            p = buf + 5;
            v6_only = true;
        }
    } else {
        memcpy(buf, s, n + 1);
    }
    memset(a, 0, sizeof(*a));
    if (!v6_only && inet_pton(AF_INET, p, a->bytes) == 1) {
        a->family = AF_INET;
        return true;
    }
    if ((v6_only || bracket || strchr(p, ':')) && inet_pton(AF_INET6, p, a->bytes) == 1) {
        a->family = AF_INET6;
        return true;
    }
    return false;
}

/* addr_sockaddr - a as a sockaddr with port 0. */
static void addr_sockaddr(const struct dns_addr *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (a->family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, a->bytes, 4);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, a->bytes, 16);
    }
}

/* ares_reason - a short text for a c-ares status, for error[] and logs. */
static const char *ares_reason(int status)
{
    switch (status) {
    case ARES_ETIMEOUT:     return "timeout";
    case ARES_ESERVFAIL:    return "SERVFAIL";
    case ARES_EREFUSED:     return "REFUSED";
    case ARES_ENOTFOUND:    return "NXDOMAIN";
    case ARES_ENODATA:      return "no records";
    case ARES_EFORMERR:     return "FORMERR";
    case ARES_ENOTIMP:      return "NOTIMP";
    /* c-ares 1.18 tries the next server on SERVFAIL, REFUSED or NOTIMP and, when none is
     * left, reports ECONNREFUSED, as for an unreachable server. */
    case ARES_ECONNREFUSED: return "SERVFAIL, REFUSED or unreachable";
    case ARES_EBADRESP:     return "malformed answer";
    case ARES_EBADNAME:     return "bad name";
    case ARES_ENOMEM:       return "out of memory";
    default:                return ares_strerror(status);
    }
}

/* set_error - format l's error text (cut at 127 bytes). */
static void set_error(struct dns_lookup *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_error(struct dns_lookup *l, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(l->error, sizeof(l->error), fmt, ap);
    va_end(ap);
}

/* status_name - an enum dns_status for logs. */
static const char *status_name(enum dns_status s)
{
    switch (s) {
    case DNS_OK:       return "ok";
    case DNS_NXDOMAIN: return "nxdomain";
    case DNS_NULLMX:   return "nullmx";
    case DNS_NOADDR:   return "noaddr";
    case DNS_TEMPFAIL: return "tempfail";
    }
    return "?";
}

/* ---- the ring: sockets, the retransmit timeout, the kick ---- */

/* kick - make sure the loop passes once more without waiting (a NOP completes at once). */
static void kick(struct dns_worker *d)
{
    struct io_uring_sqe *sqe;

    if (d->kick_armed || d->closing)
        return;
    sqe = engine_sqe(d->w);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_DNS_TIMER, DNS_SLOT_KICK, 0));
    d->kick_armed = true;
}

/* sock_arm - a one-shot poll for what c-ares wants of socket s. */
static void sock_arm(struct dns_worker *d, struct dns_sock *s)
{
    struct io_uring_sqe *sqe = engine_sqe(d->w);
    uint32_t slot = (uint32_t)(s - d->socks);

    io_uring_prep_poll_add(sqe, s->fd, s->want);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_DNS_POLL, slot, s->gen));
    s->armed = s->want;
}

/* sock_disarm - remove s's poll in flight, if any; its completion becomes stale. */
static void sock_disarm(struct dns_worker *d, struct dns_sock *s)
{
    uint32_t slot = (uint32_t)(s - d->socks);

    if (s->armed && !d->closing) {
        struct io_uring_sqe *sqe = engine_sqe(d->w);
        io_uring_prep_poll_remove(sqe, engine_ud(OP_DNS_POLL, slot, s->gen));
        io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
    }
    s->armed = 0;
    s->gen++;
}

/* sock_state - c-ares' socket-state callback: watch fd for reading and/or writing, or no more
 * (it is about to be closed). */
static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns_chan *chan = data;
    struct dns_worker *d = chan->d;
    unsigned want = (readable ? POLLIN : 0) | (writable ? POLLOUT : 0);
    struct dns_sock *s = NULL, *free_slot = NULL;

    for (unsigned i = 0; i < DNS_SOCKS_MAX; i++) {
        if (d->socks[i].chan == chan && d->socks[i].fd == fd) {
            s = &d->socks[i];
            break;
        }
        if (!d->socks[i].chan && !free_slot)
            free_slot = &d->socks[i];
    }
    if (!want) {
        if (s) {
            sock_disarm(d, s);
            s->chan = NULL;
            s->want = 0;
        }
        return;
    }
    if (!s) {
        if (!free_slot) {
            /* Its queries time out; a broken invariant of the limits, not of safety. */
            if (!d->socks_full_logged)
                log_event(LOG_WARN, "event=dns_socket_slots_full worker=%u max=%u", d->w->id,
                          DNS_SOCKS_MAX);
            d->socks_full_logged = true;
            return;
        }
        s = free_slot;
        s->chan = chan;
        s->fd = fd;
        s->armed = 0;
        s->gen++;
    }
    s->want = want;
    if (d->closing || s->armed == want)
        return;
    if (s->armed)
        sock_disarm(d, s);
    sock_arm(d, s);
}

/* timer_refresh - keep one ring timeout armed for c-ares' next deadline. A timeout already
 * armed for an earlier or equal time is kept; c-ares is asked again when it fires. */
static void timer_refresh(struct dns_worker *d)
{
    struct timeval tv_buf, *tv;
    struct io_uring_sqe *sqe;
    struct __kernel_timespec *ts;
    uint64_t ms, deadline;

    if (d->closing)
        return;
    tv = ares_timeout(d->chan->ch, NULL, &tv_buf);
    if (!tv)
        return;                       /* no query waits: an armed timeout fires harmlessly */
    ms = (uint64_t)tv->tv_sec * 1000 + ((uint64_t)tv->tv_usec + 999) / 1000;
    if (ms == 0)
        ms = 1;
    deadline = engine_now_ms() + ms;
    if (d->timer_armed && d->timer_deadline_ms <= deadline)
        return;
    if (d->timer_armed) {
        sqe = engine_sqe(d->w);
        io_uring_prep_timeout_remove(sqe, engine_ud(OP_DNS_TIMER, DNS_SLOT_RETRANSMIT,
                                                    d->timer_gen), 0);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
    }
    d->timer_gen++;
    ts = &d->timer_ts[d->timer_gen & 1];
    ts->tv_sec = (long long)(ms / 1000);
    ts->tv_nsec = (long long)(ms % 1000) * 1000000;
    sqe = engine_sqe(d->w);
    io_uring_prep_timeout(sqe, ts, 0, 0);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_DNS_TIMER, DNS_SLOT_RETRANSMIT, d->timer_gen));
    d->timer_armed = true;
    d->timer_deadline_ms = deadline;
}

/* dns_complete - a resolver socket is ready, the retransmit timeout fired, or the kick came. */
void dns_complete(struct worker *w, enum engine_op op, uint32_t slot, uint32_t gen, int res)
{
    struct dns_worker *d = w->dns;

    if (!d || d->closing)
        return;
    if (op == OP_DNS_TIMER) {
        if (slot == DNS_SLOT_KICK) {
            d->kick_armed = false;
        } else if (d->timer_armed && gen == d->timer_gen) {
            d->timer_armed = false;
            ares_process_fd(d->chan->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
            d->timer_dirty = true;
        }
        return;
    }
    if (op != OP_DNS_POLL || slot >= DNS_SOCKS_MAX)
        return;
    struct dns_sock *s = &d->socks[slot];
    if (!s->chan || s->gen != gen || !s->armed)
        return;                       /* removed, or the slot belongs to another socket now */
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
    if (res < 0) {
        rfd = wfd = s->fd;            /* unexpected: let c-ares find the socket's error */
    } else {
        if (res & (POLLIN | POLLERR | POLLHUP))
            rfd = s->fd;
        if (res & (POLLOUT | POLLERR | POLLHUP))
            wfd = s->fd;
    }
    s->armed = 0;
    ares_process_fd(s->chan->ch, rfd, wfd);
    d->timer_dirty = true;
    /* c-ares may have closed the socket, or given the slot to another one (then it armed
     * itself); a socket still wanted and not armed gets its next poll. */
    if (s->chan && s->want && !s->armed)
        sock_arm(d, s);
}

/* ---- the cache ---- */

/* cache_drop - take e out of the table and the age list, and free it. */
static void cache_drop(struct dns_worker *d, struct dns_entry *e)
{
    struct dns_entry **pp = &d->cache[e->hash & (DNS_CACHE_BUCKETS - 1)];

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->older)
        e->older->newer = e->newer;
    else
        d->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        d->newest = e->older;
    d->cache_count--;
    free(e);
}

/* cache_get - the live entry for (kind, name), or NULL; an expired one is dropped. */
static struct dns_entry *cache_get(struct dns_worker *d, enum dns_kind kind, const char *name,
                                   uint32_t hash)
{
    struct dns_entry *e = d->cache[hash & (DNS_CACHE_BUCKETS - 1)];

    for (; e; e = e->hnext)
        if (e->hash == hash && e->kind == kind && strcmp(e->names, name) == 0)
            break;
    if (e && e->expires_ms <= engine_now_ms()) {
        cache_drop(d, e);
        e = NULL;
    }
    return e;
}

/* cache_put - remember l's answer (found) for ttl_s seconds, replacing an older one. MX:
 * l's targets; HOST: l's addresses. */
static void cache_put(struct dns_worker *d, struct dns_lookup *l, enum dns_found found,
                      int64_t ttl_s)
{
    size_t names_len = strlen(l->name) + 1;
    unsigned count = 0;
    struct dns_entry *e, *old;

    if (l->kind == KIND_MX && found == FOUND_LIST) {
        count = l->target_count;
        for (unsigned i = 0; i < count; i++)
            names_len += strlen(l->targets[i].name) + 1;
    } else if (l->kind == KIND_HOST && found == FOUND_LIST) {
        count = l->addr_count;
    } else if (l->kind == KIND_PTR && found == FOUND_LIST) {
        count = 1;
        names_len += strlen(l->ptr) + 1;
    }
    old = cache_get(d, l->kind, l->name, l->hash);
    if (old)
        cache_drop(d, old);
    if (d->cache_count >= DNS_CACHE_ENTRIES_MAX)
        cache_drop(d, d->oldest);
    e = rr_calloc(1, sizeof(*e) + names_len);
    e->hash = l->hash;
    e->kind = (uint8_t)l->kind;
    e->found = (uint8_t)found;
    e->count = (uint8_t)count;
    e->expires_ms = engine_now_ms() + (uint64_t)ttl_s * 1000;
    size_t off = strlen(l->name) + 1;
    memcpy(e->names, l->name, off);
    if (l->kind == KIND_MX) {
        for (unsigned i = 0; i < count; i++) {
            size_t n = strlen(l->targets[i].name) + 1;
            e->pref[i] = l->targets[i].pref;
            e->name_off[i] = (uint16_t)off;
            memcpy(e->names + off, l->targets[i].name, n);
            off += n;
        }
    } else if (l->kind == KIND_PTR) {
        if (count) {
            e->name_off[0] = (uint16_t)off;
            memcpy(e->names + off, l->ptr, strlen(l->ptr) + 1);
        }
    } else {
        memcpy(e->addrs, l->addrs, count * sizeof(l->addrs[0]));
    }
    e->hnext = d->cache[e->hash & (DNS_CACHE_BUCKETS - 1)];
    d->cache[e->hash & (DNS_CACHE_BUCKETS - 1)] = e;
    e->older = d->newest;
    if (d->newest)
        d->newest->newer = e;
    else
        d->oldest = e;
    d->newest = e;
    d->cache_count++;
}

/* ---- lookups ---- */

/* table_find - the lookup of (kind, name) in flight, or NULL. */
static struct dns_lookup *table_find(struct dns_worker *d, enum dns_kind kind, const char *name,
                                     uint32_t hash)
{
    struct dns_lookup *l = d->table[hash & (DNS_LOOKUP_BUCKETS - 1)];

    for (; l; l = l->hnext)
        if (l->hash == hash && l->kind == kind && strcmp(l->name, name) == 0)
            return l;
    return NULL;
}

/* table_remove - take l out of the in-flight table. */
static void table_remove(struct dns_worker *d, struct dns_lookup *l)
{
    struct dns_lookup **pp = &d->table[l->hash & (DNS_LOOKUP_BUCKETS - 1)];

    if (!l->in_table)
        return;
    while (*pp != l)
        pp = &(*pp)->hnext;
    *pp = l->hnext;
    l->in_table = false;
}

/* waiter_add - l gets one more waiter. */
static void waiter_add(struct dns_worker *d, struct dns_lookup *l, dns_cb cb, void *arg,
                       struct dns_target *target)
{
    struct dns_waiter *wt = d->waiter_free;

    if (wt)
        d->waiter_free = wt->next;
    else
        wt = rr_malloc(sizeof(*wt));
    wt->next = NULL;
    wt->cb = cb;
    wt->arg = arg;
    wt->target = target;
    *l->waiters_tail = wt;
    l->waiters_tail = &wt->next;
}

/* lookup_new - a lookup of (kind, name), in the in-flight table when in_table. */
static struct dns_lookup *lookup_new(struct dns_worker *d, enum dns_kind kind, const char *name,
                                     uint32_t hash, bool in_table)
{
    struct dns_lookup *l = rr_calloc(1, sizeof(*l));

    l->d = d;
    l->kind = kind;
    l->hash = hash;
    snprintf(l->name, sizeof(l->name), "%s", name);
    l->waiters_tail = &l->waiters;
    l->fam[0].ttl_s = l->fam[1].ttl_s = -1;
    if (in_table) {
        l->hnext = d->table[hash & (DNS_LOOKUP_BUCKETS - 1)];
        d->table[hash & (DNS_LOOKUP_BUCKETS - 1)] = l;
        l->in_table = true;
    }
    d->lookup_count++;
    return l;
}

/* lookup_free - release l and its waiters (to the free list). */
static void lookup_free(struct dns_worker *d, struct dns_lookup *l)
{
    struct dns_waiter *wt = l->waiters, *next;

    for (; wt; wt = next) {
        next = wt->next;
        wt->next = d->waiter_free;
        d->waiter_free = wt;
    }
    free(l->targets);
    free(l);
    d->lookup_count--;
}

/* lookup_done - l has its answer: deliver it at the end of the pass; its place on the
 * network goes to the oldest lookup of the backlog. */
static void lookup_done(struct dns_lookup *l)
{
    struct dns_worker *d = l->d;

    l->done_next = NULL;
    *d->done_tail = l;
    d->done_tail = &l->done_next;
    if (l->net) {
        l->net = false;
        d->net_lookups--;
        if (d->backlog_head && !d->closing) {
            struct dns_lookup *next = d->backlog_head;
            d->backlog_head = next->backlog_next;
            if (!d->backlog_head)
                d->backlog_tail = &d->backlog_head;
            d->backlog_count--;
            d->net_lookups++;         /* next->net was set when it joined the backlog */
            net_send(next);
        }
    }
}

/* lookup_fail - l ends with status and its error text. */
static void lookup_fail(struct dns_lookup *l, enum dns_status status, const char *reason)
{
    l->status = status;
    l->reason = reason;
    lookup_done(l);
}

static void query_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

/* query_send - hand q to c-ares (it may answer at once: the callback copes). */
static void query_send(struct dns_query *q)
{
    struct dns_worker *d = q->l->d;

    d->timer_dirty = true;
    ares_query(d->chan->ch, q->l->name, DNS_CLASS_IN, q->type, query_answer, q);
}

/* net_send - send l's queries. */
static void net_send(struct dns_lookup *l)
{
    if (l->kind == KIND_MX || l->kind == KIND_PTR) {
        l->q[0] = (struct dns_query){ .l = l,
                                      .type = l->kind == KIND_MX ? DNS_TYPE_MX : DNS_TYPE_PTR };
        query_send(&l->q[0]);
    } else {
        /* Both queries are set up before either is sent: the first may answer at once. */
        l->q[0] = (struct dns_query){ .l = l, .type = DNS_TYPE_A };
        l->q[1] = (struct dns_query){ .l = l, .type = DNS_TYPE_AAAA };
        query_send(&l->q[0]);
        query_send(&l->q[1]);
    }
}

/* net_start - l needs the network. A caller's lookup (counted) waits in the backlog while
 * DNS_LOOKUPS_MAX others are on the network, and is refused when the backlog is full. */
static void net_start(struct dns_lookup *l, bool counted)
{
    struct dns_worker *d = l->d;

    if (!counted) {
        net_send(l);
        return;
    }
    l->net = true;
    if (d->net_lookups < DNS_LOOKUPS_MAX) {
        d->net_lookups++;
        net_send(l);
    } else if (d->backlog_count < DNS_BACKLOG_MAX) {
        l->backlog_next = NULL;
        *d->backlog_tail = l;
        d->backlog_tail = &l->backlog_next;
        d->backlog_count++;
    } else {
        l->net = false;
        set_error(l, "%s: too many DNS lookups waiting", l->name);
        lookup_fail(l, DNS_TEMPFAIL, "resolver busy");
    }
}

/* host_finish - both families answered: merge, cache, done. */
static void host_finish(struct dns_lookup *l)
{
    struct dns_worker *d = l->d;
    const struct dns_family *f4 = &l->fam[0], *f6 = &l->fam[1];
    int64_t ttl = -1;
    const char *temp = f4->found == FOUND_TEMP ? f4->reason :
                       f6->found == FOUND_TEMP ? f6->reason : NULL;

    l->addr_count = 0;
    for (unsigned i = 0; i < 2; i++) {
        const struct dns_family *f = &l->fam[i];
        for (unsigned k = 0; k < f->count && l->addr_count < DNS_ADDRS_MAX; k++)
            l->addrs[l->addr_count++] = f->addrs[k];
        if (f->found == FOUND_LIST)
            ttl = ttl_min(ttl, f->ttl_s);
    }
    if (l->addr_count) {
        /* One family failing for now: keep the other's answer only briefly. */
        ttl = ttl_clamp(ttl);
        if (temp && ttl > DNS_NEG_TTL_S)
            ttl = DNS_NEG_TTL_S;
        cache_put(d, l, FOUND_LIST, ttl);
        l->status = DNS_OK;
        lookup_done(l);
    } else if (temp) {
        set_error(l, "address lookup for %s: %s", l->name, temp);
        lookup_fail(l, DNS_TEMPFAIL, temp);
    } else if (f4->found == FOUND_NXDOMAIN || f6->found == FOUND_NXDOMAIN) {
        cache_put(d, l, FOUND_NXDOMAIN, DNS_NEG_TTL_S);
        set_error(l, "address lookup for %s: NXDOMAIN", l->name);
        lookup_fail(l, DNS_NXDOMAIN, "NXDOMAIN");
    } else {
        cache_put(d, l, FOUND_NODATA, DNS_NEG_TTL_S);
        set_error(l, "address lookup for %s: no A or AAAA records", l->name);
        lookup_fail(l, DNS_NOADDR, "no A or AAAA records");
    }
    log_event(LOG_DEBUG, "event=dns_answer kind=host name=%s status=%s addrs=%u", log_q(l->name),
              status_name(l->status), l->addr_count);
}

/* family_answer - the A (i 0) or AAAA (i 1) answer of an address lookup. */
static void family_answer(struct dns_lookup *l, unsigned i, int status, const unsigned char *abuf,
                          int alen)
{
    struct dns_family *f = &l->fam[i];

    if (status == ARES_SUCCESS) {
        int n = DNS_ADDRS_MAX, r;
        if (i == 0) {
            struct ares_addrttl a[DNS_ADDRS_MAX];
            r = ares_parse_a_reply(abuf, alen, NULL, a, &n);
            for (int k = 0; r == ARES_SUCCESS && k < n; k++) {
                f->addrs[k].family = AF_INET;
                memcpy(f->addrs[k].bytes, &a[k].ipaddr, 4);
                f->ttl_s = ttl_min(f->ttl_s, a[k].ttl < 0 ? 0 : a[k].ttl);
            }
        } else {
            struct ares_addr6ttl a[DNS_ADDRS_MAX];
            r = ares_parse_aaaa_reply(abuf, alen, NULL, a, &n);
            for (int k = 0; r == ARES_SUCCESS && k < n; k++) {
                f->addrs[k].family = AF_INET6;
                memcpy(f->addrs[k].bytes, &a[k].ip6addr, 16);
                f->ttl_s = ttl_min(f->ttl_s, a[k].ttl < 0 ? 0 : a[k].ttl);
            }
        }
        if (r == ARES_SUCCESS && n > 0) {
            f->count = (unsigned)n;
            f->found = FOUND_LIST;
        } else if (r == ARES_SUCCESS || r == ARES_ENODATA) {
            f->found = FOUND_NODATA;  /* e.g. a CNAME to a name without this type */
        } else {
            f->found = FOUND_TEMP;
            f->reason = ares_reason(r);
        }
    } else if (status == ARES_ENODATA) {
        f->found = FOUND_NODATA;
    } else if (status == ARES_ENOTFOUND) {
        f->found = FOUND_NXDOMAIN;
    } else {
        f->found = FOUND_TEMP;
        f->reason = ares_reason(status);
    }
    if (l->fam[0].found != FOUND_NONE && l->fam[1].found != FOUND_NONE)
        host_finish(l);
}

/* target_cmp - the order of MX hosts: preference, then the random rank. */
static int target_cmp(const struct dns_target *a, const struct dns_target *b)
{
    if (a->pref != b->pref)
        return a->pref < b->pref ? -1 : 1;
    return a->rank < b->rank ? -1 : a->rank > b->rank;
}

/* target_insert - add MX host (name, pref) to l's targets, kept sorted and at most
 * DNS_HOSTS_MAX; a host named twice keeps its best preference. */
static void target_insert(struct dns_lookup *l, const char *name, uint16_t pref)
{
    struct dns_target t = { .owner = l, .pref = pref, .rank = rng_next(l->d) };
    unsigned pos;

    for (unsigned i = 0; i < l->target_count; i++) {
        if (strcmp(l->targets[i].name, name) != 0)
            continue;
        if (l->targets[i].pref <= pref)
            return;
        memmove(&l->targets[i], &l->targets[i + 1],
                (l->target_count - i - 1) * sizeof(l->targets[0]));
        l->target_count--;
        break;
    }
    snprintf(t.name, sizeof(t.name), "%s", name);
    pos = l->target_count;
    while (pos > 0 && target_cmp(&t, &l->targets[pos - 1]) < 0)
        pos--;
    if (pos >= DNS_HOSTS_MAX)
        return;
    if (l->target_count == DNS_HOSTS_MAX)
        l->target_count--;            /* the last one falls off */
    memmove(&l->targets[pos + 1], &l->targets[pos], (l->target_count - pos) * sizeof(t));
    l->targets[pos] = t;
    l->target_count++;
}

/* mx_finish - every MX host's address lookup answered: the delivery targets. */
static void mx_finish(struct dns_lookup *l)
{
    const struct dns_target *temp = NULL, *first = NULL;
    unsigned with_addr = 0;

    for (unsigned i = 0; i < l->target_count; i++) {
        const struct dns_target *t = &l->targets[i];
        if (t->addr_count)
            with_addr++;
        else if (t->status == DNS_TEMPFAIL && !temp)
            temp = t;
        else if (!first)
            first = t;
    }
    if (with_addr) {
        l->status = DNS_OK;
        lookup_done(l);
    } else if (l->mx == FOUND_NODATA) {
        if (temp) {
            set_error(l, "address lookup for %s: %s", l->name, temp->reason);
            lookup_fail(l, DNS_TEMPFAIL, temp->reason);
        } else {
            set_error(l, "no MX and no address records for %s", l->name);
            lookup_fail(l, DNS_NXDOMAIN, "no MX and no address records");
        }
    } else if (temp) {
        set_error(l, "no address for any MX host of %s (%s: %s)", l->name, temp->name,
                  temp->reason);
        lookup_fail(l, DNS_TEMPFAIL, temp->reason);
    } else if (first) {
        set_error(l, "no address for any MX host of %s (%s: %s)", l->name, first->name,
                  first->reason ? first->reason : "no address");
        lookup_fail(l, DNS_NOADDR, "no address for any MX host");
    } else {
        set_error(l, "no MX host of %s is a valid host name", l->name);
        lookup_fail(l, DNS_NOADDR, "no valid MX host");
    }
    if (!l->mx_cached)
        log_event(LOG_DEBUG, "event=dns_answer kind=mx name=%s status=%s hosts=%u with_addr=%u",
                  log_q(l->name), status_name(l->status), l->target_count, with_addr);
}

/* targets_start - the address stage of an MX lookup: literals at once, names through HOST
 * lookups (which answer through the done list, never from here). */
static void targets_start(struct dns_lookup *l)
{
    for (unsigned i = 0; i < l->target_count; i++) {
        struct dns_target *t = &l->targets[i];
        t->owner = l;
        if (literal_addr(t->name, &t->addrs[0])) {
            t->addr_count = 1;
            t->status = DNS_OK;
            continue;
        }
        l->subs++;
        resolve(l->d, KIND_HOST, t->name, NULL, NULL, t);
    }
    if (!l->subs)
        mx_finish(l);
}

/* target_answer - an MX host's address lookup sub answered. */
static void target_answer(struct dns_target *t, const struct dns_lookup *sub)
{
    struct dns_lookup *l = t->owner;

    t->status = sub->status;
    t->reason = sub->reason;
    t->addr_count = sub->status == DNS_OK ? sub->addr_count : 0;
    memcpy(t->addrs, sub->addrs, t->addr_count * sizeof(t->addrs[0]));
    if (--l->subs == 0)
        mx_finish(l);
}

/* mx_answer - the answer to an MX lookup's MX query. */
static void mx_answer(struct dns_lookup *l, int status, const unsigned char *abuf, int alen)
{
    struct dns_worker *d = l->d;
    struct ares_mx_reply *mx = NULL;
    unsigned invalid = 0;
    bool null_mx = false;

    if (status == ARES_SUCCESS) {
        int r = ares_parse_mx_reply(abuf, alen, &mx);
        if (r == ARES_ENODATA || (r == ARES_SUCCESS && !mx)) {
            status = ARES_ENODATA;    /* e.g. only a CNAME to a name without MX */
        } else if (r != ARES_SUCCESS) {
            status = r;
        }
    }
    if (status == ARES_ENOTFOUND) {
        l->mx = FOUND_NXDOMAIN;
        cache_put(d, l, FOUND_NXDOMAIN, DNS_NEG_TTL_S);
        set_error(l, "MX lookup for %s: NXDOMAIN", l->name);
        lookup_fail(l, DNS_NXDOMAIN, "NXDOMAIN");
        return;
    }
    if (status != ARES_SUCCESS && status != ARES_ENODATA) {
        l->mx = FOUND_TEMP;
        set_error(l, "MX lookup for %s: %s", l->name, ares_reason(status));
        lookup_fail(l, DNS_TEMPFAIL, ares_reason(status));
        log_event(LOG_DEBUG, "event=dns_answer kind=mx name=%s status=tempfail reason=%s",
                  log_q(l->name), log_q(ares_reason(status)));
        return;
    }
    l->targets = rr_calloc(DNS_HOSTS_MAX, sizeof(l->targets[0]));
    if (status == ARES_ENODATA) {
        l->mx = FOUND_NODATA;         /* implicit MX (RFC 5321 5.1) */
        cache_put(d, l, FOUND_NODATA, DNS_NEG_TTL_S);
        target_insert(l, l->name, 0);
        targets_start(l);
        return;
    }
    /* RFC 7505 3: a null MX is alone; if it is not, the domain still says it takes no mail. */
    for (struct ares_mx_reply *m = mx; m; m = m->next) {
        char name[DNS_NAME_BYTES_MAX];
        if (m->host[0] == '\0' || strcmp(m->host, ".") == 0) {
            null_mx = true;
            break;
        }
        if (name_normal(m->host, name))
            target_insert(l, name, m->priority);
        else
            invalid++;
    }
    ares_free_data(mx);
    if (null_mx) {
        l->mx = FOUND_NULLMX;
        l->target_count = 0;
        cache_put(d, l, FOUND_NULLMX, DNS_NEG_TTL_S);
        set_error(l, "%s accepts no mail (null MX)", l->name);
        lookup_fail(l, DNS_NULLMX, "null MX");
        log_event(LOG_DEBUG, "event=dns_answer kind=mx name=%s status=nullmx", log_q(l->name));
        return;
    }
    if (invalid)
        log_event(LOG_DEBUG, "event=dns_mx_invalid_hosts name=%s count=%u", log_q(l->name),
                  invalid);
    l->mx = FOUND_LIST;
    /* An answer through a CNAME lives as long as the CNAME too. */
    int64_t ttl = ttl_min(dns_answer_ttl(abuf, (size_t)alen, DNS_TYPE_MX),
                          dns_answer_ttl(abuf, (size_t)alen, DNS_TYPE_CNAME));
    if (l->target_count)
        cache_put(d, l, FOUND_LIST, ttl_clamp(ttl));
    targets_start(l);
}

/* ptr_answer - the answer to a PTR lookup: its first PTR record that names a valid host
 * (c-ares follows a CNAME, as in classless reverse delegation, RFC 2317). */
static void ptr_answer(struct dns_lookup *l, int status, const unsigned char *abuf, int alen)
{
    struct dns_worker *d = l->d;
    struct hostent *he = NULL;
    static const unsigned char any_addr[4];  /* c-ares copies it into the hostent; unused */

    if (status == ARES_SUCCESS) {
        int r = ares_parse_ptr_reply(abuf, alen, any_addr, sizeof(any_addr), AF_INET, &he);
        if (r == ARES_SUCCESS && he && he->h_name && name_normal(he->h_name, l->ptr))
            status = ARES_SUCCESS;
        else if (r == ARES_SUCCESS || r == ARES_ENODATA)
            status = ARES_ENODATA;    /* none, or only names that are no host names */
        else
            status = r;
        if (he)
            ares_free_hostent(he);
    }
    if (status == ARES_SUCCESS) {
        int64_t ttl = ttl_min(dns_answer_ttl(abuf, (size_t)alen, DNS_TYPE_PTR),
                              dns_answer_ttl(abuf, (size_t)alen, DNS_TYPE_CNAME));
        cache_put(d, l, FOUND_LIST, ttl_clamp(ttl));
        l->status = DNS_OK;
        lookup_done(l);
    } else if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
        l->ptr[0] = '\0';
        cache_put(d, l, status == ARES_ENOTFOUND ? FOUND_NXDOMAIN : FOUND_NODATA,
                  DNS_NEG_TTL_S);
        set_error(l, "PTR lookup for %s: %s", l->name, ares_reason(status));
        lookup_fail(l, DNS_NXDOMAIN, ares_reason(status));
    } else {
        set_error(l, "PTR lookup for %s: %s", l->name, ares_reason(status));
        lookup_fail(l, DNS_TEMPFAIL, ares_reason(status));
    }
    log_event(LOG_DEBUG, "event=dns_answer kind=ptr name=%s status=%s ptr=%s", log_q(l->name),
              status_name(l->status), log_q(l->ptr));
}

/* query_answer - c-ares' callback for one query: to the MX or the address stage; a query
 * cancelled by a reload is sent again on the new channel. */
static void query_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_query *q = arg;
    struct dns_lookup *l = q->l;
    struct dns_worker *d = l->d;

    if (status == ARES_EDESTRUCTION || d->closing)
        return;                       /* fini frees the lookup */
    if (status == ARES_ECANCELLED && d->reissue) {
        query_send(q);                /* moved to the new channel */
        return;
    }
    if (!abuf || alen < 0)
        alen = 0;
    if (q->type == DNS_TYPE_MX)
        mx_answer(l, status, abuf, alen);
    else if (q->type == DNS_TYPE_PTR)
        ptr_answer(l, status, abuf, alen);
    else
        family_answer(l, q == &l->q[0] ? 0 : 1, status, abuf, alen);
}

/* from_cache_host - fill address lookup l from entry e. */
static void from_cache_host(struct dns_lookup *l, const struct dns_entry *e)
{
    if (e->found == FOUND_LIST) {
        l->addr_count = e->count;
        memcpy(l->addrs, e->addrs, e->count * sizeof(l->addrs[0]));
        l->status = DNS_OK;
        lookup_done(l);
    } else if (e->found == FOUND_NXDOMAIN) {
        set_error(l, "address lookup for %s: NXDOMAIN", l->name);
        lookup_fail(l, DNS_NXDOMAIN, "NXDOMAIN");
    } else {
        set_error(l, "address lookup for %s: no A or AAAA records", l->name);
        lookup_fail(l, DNS_NOADDR, "no A or AAAA records");
    }
}

/* from_cache_mx - fill MX lookup l from entry e, then start its address stage. */
static void from_cache_mx(struct dns_lookup *l, const struct dns_entry *e)
{
    l->mx = (enum dns_found)e->found;
    l->mx_cached = true;
    if (e->found == FOUND_NXDOMAIN) {
        set_error(l, "MX lookup for %s: NXDOMAIN", l->name);
        lookup_fail(l, DNS_NXDOMAIN, "NXDOMAIN");
        return;
    }
    if (e->found == FOUND_NULLMX) {
        set_error(l, "%s accepts no mail (null MX)", l->name);
        lookup_fail(l, DNS_NULLMX, "null MX");
        return;
    }
    l->targets = rr_calloc(DNS_HOSTS_MAX, sizeof(l->targets[0]));
    if (e->found == FOUND_NODATA)
        target_insert(l, l->name, 0);
    for (unsigned i = 0; e->found == FOUND_LIST && i < e->count; i++)
        target_insert(l, e->names + e->name_off[i], e->pref[i]);  /* new random ranks */
    targets_start(l);
}

/* from_cache_ptr - fill PTR lookup l from entry e. */
static void from_cache_ptr(struct dns_lookup *l, const struct dns_entry *e)
{
    if (e->found == FOUND_LIST && e->count) {
        snprintf(l->ptr, sizeof(l->ptr), "%s", e->names + e->name_off[0]);
        l->status = DNS_OK;
        lookup_done(l);
        return;
    }
    set_error(l, "PTR lookup for %s: %s", l->name,
              e->found == FOUND_NXDOMAIN ? "NXDOMAIN" : "no records");
    lookup_fail(l, DNS_NXDOMAIN, e->found == FOUND_NXDOMAIN ? "NXDOMAIN" : "no records");
}

/* resolve - a lookup of (kind, name) for a caller (cb, arg) or an MX host (target). Joins a
 * lookup in flight, answers from a literal or the cache, or asks the network. */
static void resolve(struct dns_worker *d, enum dns_kind kind, const char *name, dns_cb cb,
                    void *arg, struct dns_target *target)
{
    char norm[DNS_NAME_BYTES_MAX];
    struct dns_addr lit;
    struct dns_lookup *l;
    struct dns_entry *e;
    uint32_t hash;

    if (kind != KIND_PTR && literal_addr(name, &lit)) {
        /* An address literal: one host with that address, not cached, not shared. */
        l = lookup_new(d, kind, name, 0, false);
        waiter_add(d, l, cb, arg, target);
        l->addr_count = 1;
        l->addrs[0] = lit;
        if (kind == KIND_MX) {
            l->targets = rr_calloc(DNS_HOSTS_MAX, sizeof(l->targets[0]));
            l->target_count = 1;
            snprintf(l->targets[0].name, sizeof(l->targets[0].name), "%s", name);
            l->targets[0].addr_count = 1;
            l->targets[0].addrs[0] = lit;
            l->mx = FOUND_LIST;
        }
        l->status = DNS_OK;
        lookup_done(l);
        return;
    }
    if (!name_normal(name, norm)) {
        l = lookup_new(d, kind, "", 0, false);
        waiter_add(d, l, cb, arg, target);
        set_error(l, "invalid %s name",
                  kind == KIND_MX ? "domain" : kind == KIND_PTR ? "reverse" : "host");
        lookup_fail(l, DNS_NXDOMAIN, "invalid name");
        return;
    }
    hash = name_hash(d, kind, norm);
    l = table_find(d, kind, norm, hash);
    if (l) {
        waiter_add(d, l, cb, arg, target);
        return;
    }
    l = lookup_new(d, kind, norm, hash, true);
    waiter_add(d, l, cb, arg, target);
    e = cache_get(d, kind, norm, hash);
    if (e && kind == KIND_HOST)
        from_cache_host(l, e);
    else if (e && kind == KIND_PTR)
        from_cache_ptr(l, e);
    else if (e)
        from_cache_mx(l, e);
    else
        net_start(l, target == NULL);
}

/* result_fill - d->res from done lookup l. */
static void result_fill(struct dns_worker *d, const struct dns_lookup *l)
{
    struct dns_result *r = &d->res;

    r->status = l->status;
    r->host_count = 0;
    if (l->status != DNS_OK) {
        if (l->error[0])
            snprintf(r->error, sizeof(r->error), "%s", l->error);
        else
            snprintf(r->error, sizeof(r->error), "%s", l->reason ? l->reason : "failed");
        return;
    }
    r->error[0] = '\0';
    if (l->kind == KIND_PTR) {
        snprintf(r->hosts[0].name, sizeof(r->hosts[0].name), "%s", l->ptr);
        r->hosts[0].pref = 0;
        r->hosts[0].addr_count = 0;
        r->host_count = 1;
        return;
    }
    if (l->kind == KIND_HOST) {
        struct dns_host *h = &r->hosts[0];
        snprintf(h->name, sizeof(h->name), "%s", l->name);
        h->pref = 0;
        h->addr_count = l->addr_count;
        for (unsigned k = 0; k < l->addr_count; k++)
            addr_sockaddr(&l->addrs[k], &h->addrs[k]);
        r->host_count = 1;
        return;
    }
    for (unsigned i = 0; i < l->target_count; i++) {
        const struct dns_target *t = &l->targets[i];
        struct dns_host *h;
        if (!t->addr_count)
            continue;                 /* lookup failed: dropped */
        h = &r->hosts[r->host_count++];
        snprintf(h->name, sizeof(h->name), "%s", t->name);
        h->pref = t->pref;
        h->addr_count = t->addr_count;
        for (unsigned k = 0; k < t->addr_count; k++)
            addr_sockaddr(&t->addrs[k], &h->addrs[k]);
    }
}

/* deliver - hand done lookup l to its waiters, then free it. */
static void deliver(struct dns_worker *d, struct dns_lookup *l)
{
    struct dns_waiter *wt;
    bool filled = false;

    table_remove(d, l);              /* a callback asking again starts afresh (or hits cache) */
    for (wt = l->waiters; wt; wt = wt->next) {
        if (!wt->cb) {
            target_answer(wt->target, l);
            continue;
        }
        if (!filled) {
            result_fill(d, l);
            filled = true;
        }
        wt->cb(d->w, wt->arg, &d->res);
    }
    lookup_free(d, l);
}

/* dns_worker_run_deferred - deliver the answers of this pass. */
void dns_worker_run_deferred(struct worker *w)
{
    struct dns_worker *d = w->dns;

    if (!d || d->closing)
        return;
    d->in_deferred = true;
    /* Answers can make more answers (an MX host's address completes its MX lookup, a
     * callback hits the cache): a few rounds, then the rest in the next pass. */
    for (unsigned round = 0; d->done_head && round < DNS_DEFER_ROUNDS_MAX; round++) {
        struct dns_lookup *l = d->done_head, *next;
        d->done_head = NULL;
        d->done_tail = &d->done_head;
        for (; l; l = next) {
            next = l->done_next;
            deliver(d, l);
        }
    }
    d->in_deferred = false;
    if (d->done_head)
        kick(d);
    if (d->timer_dirty) {
        d->timer_dirty = false;
        timer_refresh(d);
    }
}

/* after_resolve - a dns_resolve_* call outside the drain left work for its end: make sure
 * the loop comes round (it may be past this pass's drain already). */
static void after_resolve(struct dns_worker *d)
{
    if (!d->in_deferred && (d->done_head || d->timer_dirty))
        kick(d);
}

/* dns_resolve_mx - the delivery targets of a mail domain. */
void dns_resolve_mx(struct worker *w, const char *domain, dns_cb cb, void *arg)
{
    resolve(w->dns, KIND_MX, domain, cb, arg, NULL);
    after_resolve(w->dns);
}

/* dns_resolve_host - the addresses of one host. */
void dns_resolve_host(struct worker *w, const char *host, dns_cb cb, void *arg)
{
    resolve(w->dns, KIND_HOST, host, cb, arg, NULL);
    after_resolve(w->dns);
}

/* dns_ptr_name - the reverse lookup name of sa (RFC 1035 3.5, RFC 3596 2.5). */
bool dns_ptr_name(const struct sockaddr *sa, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *b;
    size_t o = 0;

    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        b = s6->sin6_addr.s6_addr;
        if (!IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            if (cap < 16 * 4 + sizeof("ip6.arpa"))
                return false;
            for (int i = 15; i >= 0; i--) {
                out[o++] = hex[b[i] & 0xf];
                out[o++] = '.';
                out[o++] = hex[b[i] >> 4];
                out[o++] = '.';
            }
            memcpy(out + o, "ip6.arpa", sizeof("ip6.arpa"));
            return true;
        }
        b += 12;                      /* ::ffff:a.b.c.d is a.b.c.d */
    } else if (sa->sa_family == AF_INET) {
        b = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else {
        return false;
    }
    return snprintf(out, cap, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]) <
           (int)cap;
}

/* dns_resolve_ptr - the reverse DNS name of an address. */
void dns_resolve_ptr(struct worker *w, const struct sockaddr *sa, dns_cb cb, void *arg)
{
    char name[DNS_NAME_BYTES_MAX];

    if (!dns_ptr_name(sa, name, sizeof(name)))
        name[0] = '\0';              /* an invalid name: answered NXDOMAIN */
    resolve(w->dns, KIND_PTR, name, cb, arg, NULL);
    after_resolve(w->dns);
}

/* dns_worker_busy - lookups in flight or answers waiting. */
bool dns_worker_busy(struct worker *w)
{
    return w->dns && w->dns->lookup_count > 0;
}

/* ---- channels and servers ---- */

/* chan_new - a channel with ringrelay's options. With read_conf it reads /etc/resolv.conf
 * for its servers (set-up only); without, it reads no file and has no server yet. */
static struct dns_chan *chan_new(struct dns_worker *d, bool read_conf, int *err)
{
    struct dns_chan *c = rr_calloc(1, sizeof(*c));
    struct ares_options o;
    char lookups[] = "b";             /* DNS only: never /etc/hosts */
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_NDOTS |
               ARES_OPT_DOMAINS | ARES_OPT_LOOKUPS | ARES_OPT_SOCK_STATE_CB |
               ARES_OPT_EDNSPSZ | ARES_OPT_SORTLIST | ARES_OPT_SOCK_RCVBUF;

    memset(&o, 0, sizeof(o));
    /* No STAYOPEN: c-ares 1.18 sends every query to a server from one UDP socket while it
     * is open (it has no udp_max_queries yet), so a socket kept for good would pin the
     * source port and leave the 16-bit id alone against forged answers. Without it the
     * sockets close (and the port changes) whenever the channel runs idle. */
    o.flags = ARES_FLAG_EDNS | ARES_FLAG_NOSEARCH;
    o.timeout = DNS_TIMEOUT_MS;
    o.tries = DNS_TRIES;
    o.ndots = 1;
    o.domains = NULL;                 /* no search list: names are absolute */
    o.ndomains = 0;
    o.lookups = lookups;
    o.sock_state_cb = sock_state;
    o.sock_state_cb_data = c;
    o.ednspsz = DNS_EDNS_BYTES;
    o.socket_receive_buffer_size = DNS_RCVBUF_BYTES;
    o.sortlist = NULL;
    o.nsort = 0;
    if (!read_conf) {
        /* Every setting given: c-ares reads neither resolv.conf nor anything else. */
        mask |= ARES_OPT_SERVERS;
        o.servers = NULL;
        o.nservers = 0;
    }
    c->d = d;
    *err = ares_init_options(&c->ch, &o, mask);
    if (*err != ARES_SUCCESS) {
        free(c);
        return NULL;
    }
    return c;
}

/* server_from_config - a config_addr as a c-ares server; false for another family. */
static bool server_from_config(const struct config_addr *a, struct ares_addr_port_node *s)
{
    memset(s, 0, sizeof(*s));
    if (a->sa.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->sa;
        s->family = AF_INET;
        s->addr.addr4 = sin->sin_addr;
        s->udp_port = s->tcp_port = ntohs(sin->sin_port);
        return true;
    }
    if (a->sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->sa;
        s->family = AF_INET6;
        memcpy(&s->addr.addr6, &sin6->sin6_addr, sizeof(s->addr.addr6));
        s->udp_port = s->tcp_port = ntohs(sin6->sin6_port);
        return true;
    }
    return false;
}

/* servers_equal - two server lists name the same servers in the same order. */
static bool servers_equal(const struct ares_addr_port_node *a, unsigned na,
                          const struct ares_addr_port_node *b, unsigned nb)
{
    if (na != nb)
        return false;
    for (unsigned i = 0; i < na; i++) {
        size_t len = a[i].family == AF_INET ? sizeof(a[i].addr.addr4) : sizeof(a[i].addr.addr6);
        if (a[i].family != b[i].family || a[i].udp_port != b[i].udp_port ||
            a[i].tcp_port != b[i].tcp_port || memcmp(&a[i].addr, &b[i].addr, len) != 0)
            return false;
    }
    return true;
}

/* servers_wanted - the servers cfg asks for (its dns_servers, or resolv.conf's). */
static unsigned servers_wanted(const struct dns_worker *d, const struct rr_config *cfg,
                               struct ares_addr_port_node *out)
{
    unsigned n = 0;

    if (!cfg || cfg->dns_server_count == 0) {
        memcpy(out, d->system, d->system_count * sizeof(out[0]));
        return d->system_count;
    }
    for (unsigned i = 0; i < cfg->dns_server_count && i < CONFIG_ADDRS_MAX; i++)
        if (server_from_config(&cfg->dns_servers[i], &out[n]))
            n++;
    return n;
}

/* servers_set - give channel c the servers s[0..n). A c-ares status. */
static int servers_set(struct dns_chan *c, struct ares_addr_port_node *s, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        s[i].next = i + 1 < n ? &s[i + 1] : NULL;
    return ares_set_servers_ports(c->ch, n ? &s[0] : NULL);
}

/* servers_text - "1.1.1.1:53,[::1]:5353" for logs. */
static const char *servers_text(const struct ares_addr_port_node *s, unsigned n, char *buf,
                                size_t cap)
{
    size_t off = 0;

    buf[0] = '\0';
    for (unsigned i = 0; i < n && off < cap; i++) {
        char ip[INET6_ADDRSTRLEN];
        inet_ntop(s[i].family, &s[i].addr, ip, sizeof(ip));
        int r = snprintf(buf + off, cap - off, s[i].family == AF_INET6 ? "%s[%s]:%d" : "%s%s:%d",
                         i ? "," : "", ip, s[i].udp_port ? s[i].udp_port : 53);
        if (r < 0)
            break;
        off += (size_t)r;
    }
    return buf;
}

/* dns_worker_init - this worker's channel, its system servers, cfg's servers. */
int dns_worker_init(struct worker *w)
{
    struct dns_worker *d = rr_calloc(1, sizeof(*d));
    struct ares_addr_port_node *list = NULL, want[CONFIG_ADDRS_MAX];
    unsigned n;
    int err;

    pthread_once(&ares_once, ares_global_init);
    d->w = w;
    d->done_tail = &d->done_head;
    d->backlog_tail = &d->backlog_head;
    if (getrandom(&d->hash_seed, sizeof(d->hash_seed), GRND_NONBLOCK) != sizeof(d->hash_seed))
        d->hash_seed = engine_now_ms() * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)d;
    d->rng = d->hash_seed ^ 0x5851f42d4c957f2dull;
    if (!d->rng)
        d->rng = 1;
    d->chan = chan_new(d, true, &err);
    if (!d->chan) {
        log_event(LOG_ERROR, "event=dns_init_failed worker=%u error=%s", w->id,
                  log_q(ares_strerror(err)));
        free(d);
        return err == ARES_ENOMEM ? -ENOMEM : -EINVAL;
    }
    if (ares_get_servers_ports(d->chan->ch, &list) == ARES_SUCCESS) {
        for (struct ares_addr_port_node *s = list; s && d->system_count < CONFIG_ADDRS_MAX;
             s = s->next) {
            d->system[d->system_count] = *s;
            d->system[d->system_count++].next = NULL;
        }
        ares_free_data(list);
    }
    memcpy(d->applied, d->system, sizeof(d->applied));
    d->applied_count = d->system_count;
    w->dns = d;
    n = servers_wanted(d, w->cfg, want);
    if (!servers_equal(want, n, d->applied, d->applied_count)) {
        err = servers_set(d->chan, want, n);
        if (err != ARES_SUCCESS) {
            log_event(LOG_ERROR, "event=dns_init_failed worker=%u error=%s", w->id,
                      log_q(ares_strerror(err)));
            dns_worker_fini(w);
            return -EINVAL;
        }
        memcpy(d->applied, want, n * sizeof(want[0]));
        d->applied_count = n;
    }
    if (w->id == 0) {
        char buf[512];
        log_event(LOG_DEBUG, "event=dns_servers servers=%s",
                  log_q(servers_text(d->applied, d->applied_count, buf, sizeof(buf))));
    }
    return 0;
}

/* dns_worker_reload - apply a newly published dns_servers. The queries in flight move to a
 * new channel: c-ares 1.18 will not change a busy channel's servers. */
void dns_worker_reload(struct worker *w)
{
    struct dns_worker *d = w->dns;
    struct ares_addr_port_node want[CONFIG_ADDRS_MAX];
    struct dns_chan *c, *old;
    unsigned n;
    int err;

    if (!d || d->closing)
        return;
    n = servers_wanted(d, w->cfg, want);
    if (servers_equal(want, n, d->applied, d->applied_count))
        return;
    c = chan_new(d, false, &err);
    if (c && (err = servers_set(c, want, n)) != ARES_SUCCESS) {
        ares_destroy(c->ch);          /* no query and no socket yet */
        free(c);
        c = NULL;
    }
    if (!c) {
        log_event(LOG_WARN, "event=dns_reload_failed worker=%u error=%s", w->id,
                  log_q(ares_strerror(err)));
        return;
    }
    old = d->chan;
    d->chan = c;
    d->reissue = true;
    ares_cancel(old->ch);             /* each query's callback sends it again on c */
    d->reissue = false;
    ares_destroy(old->ch);            /* closes its sockets: their polls are removed */
    free(old);
    memcpy(d->applied, want, n * sizeof(want[0]));
    d->applied_count = n;
    d->timer_dirty = true;
    kick(d);
    if (w->id == 0) {
        char buf[512];
        log_event(LOG_INFO, "event=dns_servers_changed servers=%s",
                  log_q(servers_text(d->applied, d->applied_count, buf, sizeof(buf))));
    }
}

/* dns_worker_fini - destroy the channel and everything left; no callback is called. */
void dns_worker_fini(struct worker *w)
{
    struct dns_worker *d = w->dns;
    struct dns_lookup *l, *next;
    struct dns_waiter *wt;

    if (!d)
        return;
    d->closing = true;
    if (d->chan) {
        ares_destroy(d->chan->ch);    /* EDESTRUCTION callbacks: ignored */
        free(d->chan);
    }
    for (l = d->done_head; l; l = next) {
        next = l->done_next;
        table_remove(d, l);
        lookup_free(d, l);
    }
    for (unsigned i = 0; i < DNS_LOOKUP_BUCKETS; i++)
        for (l = d->table[i]; l; l = next) {
            next = l->hnext;
            lookup_free(d, l);
        }
    while ((wt = d->waiter_free)) {
        d->waiter_free = wt->next;
        free(wt);
    }
    while (d->oldest)
        cache_drop(d, d->oldest);
    free(d);
    w->dns = NULL;
}
