/*
 * test_iplimit.c - core/iplimit.c, the userspace per-source-IP connection limits:
 *   - scripted rows: each a configuration (both limits, exempt networks) and a list of
 *     steps (injected clock, open or close, source address) with the verdict each open must
 *     get: the open-connections limit, v4 and v4-mapped as one address, IPv6 per address,
 *     exempt networks (v4, v6, v4-mapped) counted but never refused, the rate's burst and
 *     refill with a fake clock, refused connections taking no rate token, 0 = no limit;
 *     after each row the counters agree with what the steps saw;
 *   - a full table (one bucket): admitted uncounted, an idle entry is reused, an entry with
 *     open connections is never dropped, a recovered idle entry goes before a recovering one;
 *   - the kernel switch, a connection without an address, top talkers and address text;
 *   - threads: many workers opening and closing on a few addresses never have more than the
 *     limit open at once, and every count is back at zero at the end.
 * Every loop is bounded.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/iplimit.h"
#include "tests/unit/check.h"
#include "tests/unit/test_addr.h"

#define MS 1000000ull             /* a millisecond in ns */
#define S  1000000000ull          /* a second in ns */
#define T0 (1000 * S)             /* the fake clock's start: a monotonic clock is never 0 */

/* config_of - limits and a comma-separated exempt list into cfg. */
static void config_of(struct rr_config *cfg, uint32_t conn_max, uint32_t rate_max,
                      const char *exempt)
{
    char list[256], *save = NULL;

    memset(cfg, 0, sizeof(*cfg));
    cfg->bpf_connections_per_ip_max = conn_max;
    cfg->bpf_connects_per_ip_per_s_max = rate_max;
    snprintf(list, sizeof(list), "%s", exempt ? exempt : "");
    for (char *t = strtok_r(list, ", ", &save); t && cfg->ip_limit_exempt_count < CONFIG_NETS_MAX;
         t = strtok_r(NULL, ", ", &save))
        if (config_parse_net(t, &cfg->ip_limit_exempt[cfg->ip_limit_exempt_count++]) != 0) {
            fprintf(stderr, "bad test network %s\n", t);
            exit(2);
        }
}

static const char *verdict_name(enum iplimit_verdict v)
{
    static const char *const names[] = { "counted", "admitted", "refused_connections",
                                         "refused_rate" };
    return (unsigned)v < 4 ? names[v] : "?";
}

/* ---- scripted rows ---- */

enum step_op { OPEN, CLOSE, END };

#define C   IPL_COUNTED
#define RC  IPL_REFUSED_CONNECTIONS
#define RR  IPL_REFUSED_RATE

struct step {
    uint64_t at_ns;               /* the fake clock, after T0 */
    enum step_op op;
    const char *ip;
    enum iplimit_verdict want;    /* OPEN: the verdict */
    unsigned repeat;              /* the step this many times (0 = once) */
};

struct row {
    const char *name;
    uint32_t conn_max;            /* max_connections_per_ip */
    uint32_t rate_max;            /* max_connects_per_ip_per_s */
    const char *exempt;           /* exempt_networks */
    unsigned tracked_end;         /* addresses still open after the steps */
    struct step steps[16];
};

static const struct row rows[] = {
    { "connections limit", 2, 0, NULL, 2, {
        { 0, OPEN, "192.0.2.1", C, 2 },
        { 0, OPEN, "192.0.2.1", RC, 3 },
        { 0, OPEN, "192.0.2.2", C, 2 },          /* another address is not affected */
        { 0, CLOSE, "192.0.2.1", 0, 0 },
        { 0, OPEN, "192.0.2.1", C, 0 },          /* the place that closed */
        { 0, OPEN, "192.0.2.1", RC, 0 },
        { 0, END, NULL, 0, 0 } } },
    { "v4 and v4-mapped are one address", 1, 0, NULL, 1, {
        { 0, OPEN, "192.0.2.9", C, 0 },
        { 0, OPEN, "::ffff:192.0.2.9", RC, 0 },
        { 0, CLOSE, "::ffff:192.0.2.9", 0, 0 },  /* released by its other spelling */
        { 0, OPEN, "::ffff:192.0.2.9", C, 0 },
        { 0, OPEN, "192.0.2.9", RC, 0 },
        { 0, END, NULL, 0, 0 } } },
    { "IPv6 counts per address", 1, 0, NULL, 2, {
        { 0, OPEN, "2001:db8::1", C, 0 },
        { 0, OPEN, "2001:db8::2", C, 0 },        /* same /64, its own count */
        { 0, OPEN, "2001:db8::1", RC, 2 },
        { 0, END, NULL, 0, 0 } } },
    { "exempt v4: counted, never refused", 1, 1, "10.0.0.0/8", 2, {
        { 0, OPEN, "10.1.2.3", C, 5 },           /* over both limits */
        { 0, OPEN, "11.0.0.1", C, 0 },
        { 0, OPEN, "11.0.0.1", RC, 0 },          /* outside: the limits hold */
        { 0, END, NULL, 0, 0 } } },
    { "exempt v6 and v4-mapped", 1, 0, "2001:db8::/32, 192.0.2.0/24", 4, {
        { 0, OPEN, "::ffff:192.0.2.7", C, 3 },
        { 0, OPEN, "192.0.2.8", C, 3 },
        { 0, OPEN, "2001:db8:1::1", C, 3 },
        { 0, OPEN, "2001:db9::1", C, 0 },
        { 0, OPEN, "2001:db9::1", RC, 0 },
        { 0, END, NULL, 0, 0 } } },
    { "rate: burst, refill, recovery", 0, 3, NULL, 0, {
        { 0, OPEN, "198.51.100.1", C, 3 },        /* the burst */
        { 0, CLOSE, "198.51.100.1", 0, 3 },       /* not the connections limit */
        { 0, OPEN, "198.51.100.1", RR, 2 },
        { 0, OPEN, "198.51.100.2", C, 0 },        /* another address has its own */
        { 333333333, OPEN, "198.51.100.1", C, 0 },/* one interval later: one token */
        { 333333333, OPEN, "198.51.100.1", RR, 0 },
        { 666666665, OPEN, "198.51.100.1", RR, 0 },/* a nanosecond short of the next */
        { 666666666, OPEN, "198.51.100.1", C, 0 },
        { 2 * S, OPEN, "198.51.100.1", C, 3 },    /* recovered: the whole burst again */
        { 2 * S, OPEN, "198.51.100.1", RR, 0 },
        { 2 * S, CLOSE, "198.51.100.1", 0, 5 },
        { 2 * S, CLOSE, "198.51.100.2", 0, 0 },
        { 0, END, NULL, 0, 0 } } },
    { "a refused connection takes no rate token", 1, 2, NULL, 0, {
        { 0, OPEN, "203.0.113.5", C, 0 },         /* token 1 of 2 */
        { 0, OPEN, "203.0.113.5", RC, 5 },
        { 0, CLOSE, "203.0.113.5", 0, 0 },
        { 0, OPEN, "203.0.113.5", C, 0 },         /* token 2 of 2 */
        { 0, CLOSE, "203.0.113.5", 0, 0 },
        { 0, OPEN, "203.0.113.5", RR, 0 },
        { 500 * MS, OPEN, "203.0.113.5", C, 0 },
        { 500 * MS, CLOSE, "203.0.113.5", 0, 0 },
        { 0, END, NULL, 0, 0 } } },
    { "0 = no limit", 0, 0, NULL, 1, {
        { 0, OPEN, "192.0.2.77", C, 200 },
        { 0, CLOSE, "192.0.2.77", 0, 199 },
        { 0, END, NULL, 0, 0 } } },
};

/* test_rows - every step of every row against a fresh table. */
static void test_rows(void)
{
    for (size_t r = 0; r < RR_ARRAY_LEN(rows); r++) {
        const struct row *row = &rows[r];
        struct iplimit *il = iplimit_new(1024);
        uint64_t refused[IPL_LIMIT_COUNT] = { 0, 0 };
        struct iplimit_stats st;
        struct rr_config cfg;

        config_of(&cfg, row->conn_max, row->rate_max, row->exempt);
        for (size_t i = 0; i < RR_ARRAY_LEN(row->steps) && row->steps[i].op != END; i++) {
            const struct step *s = &row->steps[i];
            unsigned n = s->repeat ? s->repeat : 1;
            struct sockaddr_storage ss;
            const struct sockaddr *sa = sockaddr_of(s->ip, &ss);

            for (unsigned k = 0; k < n; k++) {
                if (s->op == CLOSE) {
                    iplimit_release(il, sa);
                    continue;
                }
                enum iplimit_verdict v = iplimit_accept(il, &cfg, sa, T0 + s->at_ns);
                CHECK(v == s->want, "%s: step %zu (open %s at +%llu ns) #%u: %s, want %s",
                      row->name, i, s->ip, (unsigned long long)s->at_ns, k, verdict_name(v),
                      verdict_name(s->want));
                if (v == RC)
                    refused[IPL_LIMIT_CONNECTIONS]++;
                if (v == RR)
                    refused[IPL_LIMIT_RATE]++;
            }
        }
        iplimit_stats(il, &st);
        CHECK(!st.kernel && st.untracked == 0, "%s: userspace, all tracked", row->name);
        CHECK(st.refused[IPL_LIMIT_CONNECTIONS] == refused[IPL_LIMIT_CONNECTIONS] &&
              st.refused[IPL_LIMIT_RATE] == refused[IPL_LIMIT_RATE],
              "%s: refused %llu/%llu, saw %llu/%llu", row->name,
              (unsigned long long)st.refused[0], (unsigned long long)st.refused[1],
              (unsigned long long)refused[0], (unsigned long long)refused[1]);
        CHECK(st.tracked_ips == row->tracked_end, "%s: %llu addresses open, want %u", row->name,
              (unsigned long long)st.tracked_ips, row->tracked_end);
        iplimit_free(il);
    }
}

/* test_reload - a lower limit refuses at once against the open count; a higher one admits. */
static void test_reload(void)
{
    struct iplimit *il = iplimit_new(1024);
    struct sockaddr_storage ss;
    const struct sockaddr *sa = sockaddr_of("192.0.2.60", &ss);
    struct rr_config cfg;

    config_of(&cfg, 5, 0, NULL);
    for (int i = 0; i < 4; i++)
        CHECK(iplimit_accept(il, &cfg, sa, T0) == C, "open %d of 5", i);
    config_of(&cfg, 3, 0, NULL);
    CHECK(iplimit_accept(il, &cfg, sa, T0) == RC, "4 open, limit lowered to 3");
    config_of(&cfg, 6, 0, NULL);
    CHECK(iplimit_accept(il, &cfg, sa, T0) == C, "limit raised to 6: the 5th");
    CHECK(iplimit_accept(il, &cfg, sa, T0) == C, "the 6th");
    CHECK(iplimit_accept(il, &cfg, sa, T0) == RC, "the 7th");
    for (int i = 0; i < 6; i++)
        iplimit_release(il, sa);
    config_of(&cfg, 1, 0, NULL);
    CHECK(iplimit_accept(il, &cfg, sa, T0) == C, "all closed: limit 1 admits one");
    iplimit_release(il, sa);
    iplimit_free(il);
}

/* ---- a full table: one bucket of IPLIMIT_WAYS entries ---- */

/* addr_n - the n-th test address of a family of them. */
static const struct sockaddr *addr_n(char prefix, unsigned n, struct sockaddr_storage *ss)
{
    char text[64];

    snprintf(text, sizeof(text), "2001:db8:%x::%x", (unsigned)prefix, n + 1);
    return sockaddr_of(text, ss);
}

/* test_full_table - uncounted when every entry is live; live entries are never dropped. */
static void test_full_table(void)
{
    struct iplimit *il = iplimit_new(IPLIMIT_WAYS);   /* exactly one bucket */
    struct sockaddr_storage ss;
    struct iplimit_stats st;
    struct rr_config cfg;

    config_of(&cfg, 1, 0, NULL);
    for (unsigned i = 0; i < IPLIMIT_WAYS; i++)
        CHECK(iplimit_accept(il, &cfg, addr_n('a', i, &ss), T0) == C, "live %u", i);
    /* full of live entries: a stranger is admitted, uncounted */
    CHECK(iplimit_accept(il, &cfg, addr_n('b', 0, &ss), T0) == IPL_ADMITTED, "table full");
    CHECK(iplimit_accept(il, &cfg, addr_n('b', 0, &ss), T0) == IPL_ADMITTED, "still full");
    iplimit_stats(il, &st);
    CHECK(st.untracked == 2 && st.tracked_ips == IPLIMIT_WAYS, "untracked %llu tracked %llu",
          (unsigned long long)st.untracked, (unsigned long long)st.tracked_ips);
    /* every live entry is still there and still enforces */
    for (unsigned i = 0; i < IPLIMIT_WAYS; i++)
        CHECK(iplimit_accept(il, &cfg, addr_n('a', i, &ss), T0) == RC, "live %u kept", i);
    /* one closes: its idle entry goes to the next stranger, no live one does */
    iplimit_release(il, addr_n('a', 3, &ss));
    CHECK(iplimit_accept(il, &cfg, addr_n('b', 1, &ss), T0) == C, "idle entry reused");
    for (unsigned i = 0; i < IPLIMIT_WAYS; i++)
        if (i != 3)
            CHECK(iplimit_accept(il, &cfg, addr_n('a', i, &ss), T0) == RC,
                  "live %u kept after the reuse", i);
    CHECK(iplimit_accept(il, &cfg, addr_n('a', 3, &ss), T0) == IPL_ADMITTED,
          "the closed one lost its entry and finds the table full");
    /* everything closes: every release finds its entry */
    for (unsigned i = 0; i < IPLIMIT_WAYS; i++)
        if (i != 3)
            iplimit_release(il, addr_n('a', i, &ss));
    iplimit_release(il, addr_n('b', 1, &ss));
    iplimit_stats(il, &st);
    CHECK(st.tracked_ips == 0, "all closed: %llu tracked", (unsigned long long)st.tracked_ips);
    iplimit_free(il);
}

/* test_eviction_order - a recovered idle entry goes before one whose rate still recovers. */
static void test_eviction_order(void)
{
    struct iplimit *il = iplimit_new(IPLIMIT_WAYS);
    struct sockaddr_storage ss;
    struct rr_config cfg;

    config_of(&cfg, 0, 1, NULL);                   /* one connection a second */
    /* P: idle, recovered by +2 s; Q: idle, its next token at +2.5 s; the rest live */
    CHECK(iplimit_accept(il, &cfg, addr_n('p', 0, &ss), T0) == C, "P");
    iplimit_release(il, addr_n('p', 0, &ss));
    CHECK(iplimit_accept(il, &cfg, addr_n('q', 0, &ss), T0 + 1500 * MS) == C, "Q");
    iplimit_release(il, addr_n('q', 0, &ss));
    for (unsigned i = 0; i < IPLIMIT_WAYS - 2; i++)
        CHECK(iplimit_accept(il, &cfg, addr_n('a', i, &ss), T0) == C, "live %u", i);
    /* a stranger at +2 s takes P's entry: Q still remembers its rate */
    CHECK(iplimit_accept(il, &cfg, addr_n('n', 0, &ss), T0 + 2 * S) == C, "stranger");
    CHECK(iplimit_accept(il, &cfg, addr_n('q', 0, &ss), T0 + 2 * S) == RR,
          "Q's rate state kept");
    /* with no recovered idle entry left, the one recovering first goes (Q): no live one */
    CHECK(iplimit_accept(il, &cfg, addr_n('p', 0, &ss), T0 + 2 * S) == C, "P again");
    CHECK(iplimit_accept(il, &cfg, addr_n('n', 1, &ss), T0 + 2 * S) == IPL_ADMITTED,
          "only live entries left");
    for (unsigned i = 0; i < IPLIMIT_WAYS - 2; i++)
        iplimit_release(il, addr_n('a', i, &ss));
    iplimit_release(il, addr_n('n', 0, &ss));
    iplimit_release(il, addr_n('p', 0, &ss));
    {
        struct iplimit_stats st;
        iplimit_stats(il, &st);
        CHECK(st.tracked_ips == 0, "all closed: %llu", (unsigned long long)st.tracked_ips);
    }
    iplimit_free(il);
}

/* test_per_second - an address's connections in the last full second, from its windows. */
static void test_per_second(void)
{
    static const struct {
        uint64_t start, now;
        uint32_t this_s, last_s, want;
        const char *what;
    } cases[] = {
        { T0, T0, 7, 3, 3, "inside the first second: the one before" },
        { T0, T0 + S - 1, 7, 3, 3, "still inside" },
        { T0, T0 + S, 7, 3, 7, "the window just closed: its count" },
        { T0, T0 + 2 * S - 1, 7, 3, 7, "until a second more passed" },
        { T0, T0 + 2 * S, 7, 3, 0, "then nothing came for a second" },
        { T0, T0 + 3600 * S, 7, 3, 0, "long quiet" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK(connlimit_per_second(cases[i].start, cases[i].this_s, cases[i].last_s,
                                   cases[i].now) == cases[i].want, "%s", cases[i].what);
}

/* ---- the façade ---- */

/* test_kernel_switch - with the kernel enforcing, the connections limit is still applied
 * at accept (the handshakes that passed the kernel's check together) and the rate is the
 * kernel's alone. Stats are not read in kernel mode: the pointer is a dummy. */
static void test_kernel_switch(void)
{
    struct iplimit *il = iplimit_new(1024);
    struct sockaddr_storage ss;
    const struct sockaddr *sa = sockaddr_of("192.0.2.200", &ss);
    struct iplimit_stats st;
    struct rr_config cfg;
    static char dummy;

    config_of(&cfg, 2, 1, NULL);
    CHECK(iplimit_accept(il, &cfg, sa, T0) == C, "userspace counts");
    CHECK(iplimit_accept(il, &cfg, sa, T0) == IPL_REFUSED_RATE, "userspace: the rate");
    iplimit_use_kernel(il, (struct connlimit *)&dummy);
    CHECK(iplimit_accept(il, &cfg, sa, T0) == C, "kernel: no rate here, counted");
    CHECK(iplimit_accept(il, &cfg, sa, T0) == IPL_REFUSED_CONNECTIONS,
          "kernel: the connections limit still holds at accept");
    iplimit_release(il, sa);
    iplimit_release(il, sa);
    iplimit_use_kernel(il, NULL);
    iplimit_stats(il, &st);
    CHECK(!st.kernel && st.tracked_ips == 0 && st.refused[IPL_LIMIT_CONNECTIONS] == 1 &&
          st.refused[IPL_LIMIT_RATE] == 1, "back in userspace, every count released");
    CHECK(iplimit_accept(il, &cfg, NULL, T0) == IPL_ADMITTED, "no address: admitted");
    iplimit_stats(il, &st);
    CHECK(st.untracked == 0 && st.tracked_ips == 0, "no address: nothing to count, %llu",
          (unsigned long long)st.untracked);
    iplimit_free(il);
}

/* test_top - ordering and address text. */
static void test_top(void)
{
    struct iplimit *il = iplimit_new(1024);
    struct connlimit_talker top[3];
    struct sockaddr_storage ss;
    struct rr_config cfg;
    char text[IPLIMIT_IP_TEXT_BYTES];
    int n;

    config_of(&cfg, 2, 0, NULL);
    for (int i = 0; i < 7; i++)                    /* 2 open, 5 refused */
        iplimit_accept(il, &cfg, sockaddr_of("192.0.2.1", &ss), T0);
    iplimit_accept(il, &cfg, sockaddr_of("2001:db8::5", &ss), T0);   /* 1 open */
    for (int i = 0; i < 3; i++) {                  /* 0 open, 3 admitted */
        iplimit_accept(il, &cfg, sockaddr_of("192.0.2.3", &ss), T0);
        iplimit_release(il, sockaddr_of("192.0.2.3", &ss));
    }
    iplimit_accept(il, &cfg, sockaddr_of("192.0.2.4", &ss), T0);     /* 0 open, 1 admitted */
    iplimit_release(il, sockaddr_of("192.0.2.4", &ss));

    n = iplimit_top(il, top, 3);
    CHECK(n == 3, "top 3 of 4: %d", n);
    iplimit_ip_format(&top[0].ip, text, sizeof(text));
    CHECK(n > 0 && !strcmp(text, "192.0.2.1") && top[0].current == 2 && top[0].admitted == 2 &&
          top[0].refused == 5, "first: %s current=%u refused=%llu", text, top[0].current,
          (unsigned long long)top[0].refused);
    iplimit_ip_format(&top[1].ip, text, sizeof(text));
    CHECK(n > 1 && !strcmp(text, "2001:db8::5") && top[1].current == 1, "second: %s", text);
    iplimit_ip_format(&top[2].ip, text, sizeof(text));
    CHECK(n > 2 && !strcmp(text, "192.0.2.3") && top[2].current == 0 && top[2].admitted == 3,
          "third: %s", text);
    CHECK(iplimit_top(il, top, 0) == 0, "max 0");
    iplimit_free(il);
}

/* ---- threads ---- */

#define THREADS      8
#define ROUNDS       20000        /* opens tried by each thread */
#define HOT_IPS      2            /* addresses every thread opens from */
#define HOT_MAX      3            /* max_connections_per_ip */
#define HELD_MAX     4            /* connections a thread keeps open at once */

struct worker_arg {
    struct iplimit *il;
    const struct rr_config *cfg;
    pthread_barrier_t *barrier;
    unsigned seed;
    uint64_t counted;             /* out: IPL_COUNTED */
    uint64_t refused;             /* out: refusals */
};

static _Atomic int open_now[HOT_IPS];   /* what the threads hold, per address */
static _Atomic int open_peak[HOT_IPS];  /* the most seen at once */

/* hammer - open from random hot addresses, keep a few, close them in random order. */
static void *hammer(void *p)
{
    struct worker_arg *a = p;
    struct sockaddr_storage ss[HOT_IPS];
    int held[HELD_MAX], nheld = 0;

    for (int i = 0; i < HOT_IPS; i++) {
        char text[32];
        snprintf(text, sizeof(text), "198.51.100.%d", 10 + i);
        sockaddr_of(text, &ss[i]);
    }
    pthread_barrier_wait(a->barrier);
    for (int r = 0; r < ROUNDS; r++) {
        int ip = (int)(rand_r(&a->seed) % HOT_IPS);
        if (nheld == HELD_MAX || (nheld && rand_r(&a->seed) % 4 == 0)) {
            int k = (int)(rand_r(&a->seed) % (unsigned)nheld), close_ip = held[k];
            held[k] = held[--nheld];
            atomic_fetch_sub(&open_now[close_ip], 1);   /* before the release: never late */
            iplimit_release(a->il, (const struct sockaddr *)&ss[close_ip]);
            continue;
        }
        enum iplimit_verdict v = iplimit_accept(a->il, a->cfg,
                                                (const struct sockaddr *)&ss[ip], T0);
        if (v == IPL_COUNTED) {
            int now = atomic_fetch_add(&open_now[ip], 1) + 1, peak = atomic_load(&open_peak[ip]);
            while (now > peak && !atomic_compare_exchange_weak(&open_peak[ip], &peak, now))
                ;                 /* bounded: peak only grows, to at most THREADS * HELD_MAX */
            held[nheld++] = ip;
            a->counted++;
        } else {
            a->refused++;
        }
    }
    while (nheld) {
        int close_ip = held[--nheld];
        atomic_fetch_sub(&open_now[close_ip], 1);
        iplimit_release(a->il, (const struct sockaddr *)&ss[close_ip]);
    }
    return NULL;
}

/* test_threads - never over the limit, all back at zero, the totals add up. */
static void test_threads(void)
{
    struct iplimit *il = iplimit_new(IPLIMIT_IPS_MAX);
    struct worker_arg args[THREADS];
    pthread_t t[THREADS];
    pthread_barrier_t barrier;
    struct connlimit_talker top[HOT_IPS + 1];
    struct iplimit_stats st;
    struct rr_config cfg;
    uint64_t counted = 0, refused = 0, admitted = 0, top_refused = 0;
    int n;

    config_of(&cfg, HOT_MAX, 0, NULL);
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct worker_arg){ il, &cfg, &barrier, 1234u + (unsigned)i, 0, 0 };
        pthread_create(&t[i], NULL, hammer, &args[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        counted += args[i].counted;
        refused += args[i].refused;
    }
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < HOT_IPS; i++)
        CHECK(atomic_load(&open_peak[i]) <= HOT_MAX && atomic_load(&open_now[i]) == 0,
              "address %d: peak %d open (limit %d), %d left", i, atomic_load(&open_peak[i]),
              HOT_MAX, atomic_load(&open_now[i]));
    CHECK(refused > 0, "%d threads holding up to %d each were refused sometimes", THREADS,
          HELD_MAX);
    iplimit_stats(il, &st);
    CHECK(st.tracked_ips == 0 && st.untracked == 0, "all closed: %llu tracked",
          (unsigned long long)st.tracked_ips);
    CHECK(st.refused[IPL_LIMIT_CONNECTIONS] == refused && st.refused[IPL_LIMIT_RATE] == 0,
          "refused %llu, threads saw %llu", (unsigned long long)st.refused[0],
          (unsigned long long)refused);
    n = iplimit_top(il, top, HOT_IPS + 1);
    CHECK(n == HOT_IPS, "%d addresses listed", n);
    for (int i = 0; i < n; i++) {
        CHECK(top[i].current == 0, "talker %d still has %u open", i, top[i].current);
        admitted += top[i].admitted;
        top_refused += top[i].refused;
    }
    CHECK(admitted == counted && top_refused == refused,
          "per-address totals %llu/%llu, threads %llu/%llu", (unsigned long long)admitted,
          (unsigned long long)top_refused, (unsigned long long)counted,
          (unsigned long long)refused);
    iplimit_free(il);
}

int main(void)
{
    test_rows();
    test_reload();
    test_full_table();
    test_eviction_order();
    test_per_second();
    test_kernel_switch();
    test_top();
    test_threads();
    return check_done("test_iplimit");
}
