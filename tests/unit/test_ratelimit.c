/*
 * test_ratelimit.c - core/ratelimit.c (and the SipHash it keys with):
 *   - scripted rows: each a configuration (limits, window) and a list of steps (time, MAIL
 *     or RCPT, login, client address) with the limit each step must hit, so limits are hit,
 *     refill at the rate asked, recover after the window (the clock is injected), never
 *     cost a token of another kind, and count IPv6 by /64;
 *   - the 451 text;
 *   - the relaying notice's claim: once per (login, domain) per interval;
 *   - eviction in a full bucket, give-back never beyond full;
 *   - threads: many threads hammering one key never get more than the limit, and racing
 *     first claims on fresh keys (the insert path) grant exactly one each.
 * Every loop is bounded.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/ratelimit.h"
#include "core/siphash.h"
#include "tests/unit/check.h"
#include "tests/unit/test_addr.h"

#define H 3600000ull              /* an hour in ms */

/* ---- SipHash-2-4 reference vectors (the paper's key 00..0f, messages 00..len-1) ---- */

static void test_siphash(void)
{
    static const struct { size_t len; uint64_t want; } vec[] = {
        { 0, 0x726fdb47dd0e0e31ull }, { 1, 0x74f839c593dc67fdull },
        { 7, 0xab0200f58b01d137ull }, { 8, 0x93f5f5799a932462ull },
        { 15, 0xa129ca6149be45e5ull }, { 63, 0x958a324ceb064572ull },
    };
    unsigned char in[64], kb[16];
    uint64_t key[2];

    for (int i = 0; i < 64; i++)
        in[i] = (unsigned char)i;
    for (int i = 0; i < 16; i++)
        kb[i] = (unsigned char)i;
    memcpy(key, kb, 16);          /* little-endian, as the reference loads it */
    for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++)
        CHECK(siphash24(key, in, vec[i].len) == vec[i].want, "siphash len %zu: %016llx",
              vec[i].len, (unsigned long long)siphash24(key, in, vec[i].len));
    uint64_t k2[2] = { 0, 0 };
    CHECK(siphash_key_random(k2) == 0 && (k2[0] | k2[1]), "random key");
}

/* ---- scripted rows ---- */

enum step_op { MAIL, RCPT, END };

struct step {
    uint64_t at_ms;               /* the injected clock */
    enum step_op op;
    const char *login;            /* NULL: not authenticated */
    const char *ip;               /* NULL: no client address */
    enum ratelimit_hit want;
    unsigned repeat;              /* the step this many times (0 = once) */
};

static const struct script {
    const char *name;
    uint32_t user_msgs, user_rcpts, ip_msgs, window_s;
    struct step steps[16];
} scripts[] = {
    { "user messages: burst, refill, recover", 3, 0, 0, 3600, {
        { 0, MAIL, "alice", "192.0.2.1", RATELIMIT_OK, 3 },
        { 0, MAIL, "alice", "192.0.2.1", RATELIMIT_USER_MESSAGES, 5 },
        { 0, MAIL, "bob", "192.0.2.1", RATELIMIT_OK, 3 },         /* bob is another key */
        { 0, MAIL, "ALICE", "192.0.2.2", RATELIMIT_USER_MESSAGES, 0 }, /* case folded */
        { 1199999, MAIL, "alice", NULL, RATELIMIT_USER_MESSAGES, 0 },  /* T = 20 min */
        { 1200000, MAIL, "alice", NULL, RATELIMIT_OK, 0 },
        { 1200000, MAIL, "alice", NULL, RATELIMIT_USER_MESSAGES, 0 },
        { 1200000 + H, MAIL, "alice", NULL, RATELIMIT_OK, 3 },    /* a window later: all 3 */
        { 1200000 + H, MAIL, "alice", NULL, RATELIMIT_USER_MESSAGES, 0 },
        { 0, END, NULL, NULL, RATELIMIT_OK, 0 } } },
    { "short window (tests shorten it through config)", 2, 0, 0, 2, {
        { 0, MAIL, "alice", NULL, RATELIMIT_OK, 2 },
        { 500, MAIL, "alice", NULL, RATELIMIT_USER_MESSAGES, 0 },
        { 1000, MAIL, "alice", NULL, RATELIMIT_OK, 0 },
        { 1000, MAIL, "alice", NULL, RATELIMIT_USER_MESSAGES, 0 },
        { 3000, MAIL, "alice", NULL, RATELIMIT_OK, 2 },
        { 3000, MAIL, "alice", NULL, RATELIMIT_USER_MESSAGES, 0 },
        { 0, END, NULL, NULL, RATELIMIT_OK, 0 } } },
    { "ip messages, across logins and unauthenticated", 0, 0, 3, 3600, {
        { 0, MAIL, "alice", "192.0.2.1", RATELIMIT_OK, 0 },
        { 0, MAIL, "bob", "192.0.2.1", RATELIMIT_OK, 0 },
        { 0, MAIL, NULL, "192.0.2.1", RATELIMIT_OK, 0 },
        { 0, MAIL, "carol", "192.0.2.1", RATELIMIT_IP_MESSAGES, 0 },
        { 0, MAIL, NULL, "::ffff:192.0.2.1", RATELIMIT_IP_MESSAGES, 0 }, /* v4-mapped = v4 */
        { 0, MAIL, NULL, "192.0.2.2", RATELIMIT_OK, 0 },
        { 0, MAIL, "carol", NULL, RATELIMIT_OK, 0 },              /* no address: no limit */
        { 0, END, NULL, NULL, RATELIMIT_OK, 0 } } },
    { "IPv6 counts by /64", 0, 0, 2, 3600, {
        { 0, MAIL, NULL, "2001:db8::1", RATELIMIT_OK, 0 },
        { 0, MAIL, NULL, "2001:db8::ffff:2", RATELIMIT_OK, 0 },
        { 0, MAIL, NULL, "2001:db8::3", RATELIMIT_IP_MESSAGES, 0 },
        { 0, MAIL, NULL, "2001:db8:0:1::1", RATELIMIT_OK, 2 },
        { 0, END, NULL, NULL, RATELIMIT_OK, 0 } } },
    { "all or nothing: an IP refusal gives the user token back", 2, 0, 2, 3600, {
        { 0, MAIL, "alice", "192.0.2.1", RATELIMIT_OK, 2 },       /* IP 192.0.2.1 used up */
        { 0, MAIL, "bob", "192.0.2.1", RATELIMIT_IP_MESSAGES, 3 },
        { 0, MAIL, "bob", "192.0.2.9", RATELIMIT_OK, 2 },         /* bob still has both */
        { 0, MAIL, "bob", "192.0.2.10", RATELIMIT_USER_MESSAGES, 0 },
        { 0, MAIL, "bob", "192.0.2.1", RATELIMIT_USER_MESSAGES, 0 }, /* user checked first */
        { 0, END, NULL, NULL, RATELIMIT_OK, 0 } } },
    { "recipients, independent of messages", 2, 5, 0, 3600, {
        { 0, MAIL, "alice", NULL, RATELIMIT_OK, 0 },
        { 0, RCPT, "alice", NULL, RATELIMIT_OK, 5 },
        { 0, RCPT, "alice", NULL, RATELIMIT_USER_RECIPIENTS, 3 },
        { 0, MAIL, "alice", NULL, RATELIMIT_OK, 0 },              /* refused RCPTs cost no MAIL */
        { 0, MAIL, "alice", NULL, RATELIMIT_USER_MESSAGES, 0 },
        { 0, RCPT, NULL, "192.0.2.1", RATELIMIT_OK, 10 },         /* unauthenticated: none */
        { 720000, RCPT, "alice", NULL, RATELIMIT_OK, 0 },          /* T = 12 min */
        { 720000, RCPT, "alice", NULL, RATELIMIT_USER_RECIPIENTS, 0 },
        { 0, END, NULL, NULL, RATELIMIT_OK, 0 } } },
    { "0 = unlimited", 0, 0, 0, 3600, {
        { 0, MAIL, "alice", "192.0.2.1", RATELIMIT_OK, 10000 },
        { 0, RCPT, "alice", "192.0.2.1", RATELIMIT_OK, 10000 },
        { 0, END, NULL, NULL, RATELIMIT_OK, 0 } } },
    { "a limit that does not divide the window", 7, 0, 0, 3600, {
        /* T = ceil(3600e6 / 7) us = 514285715 us: exactly 7 at once, the 8th at 514.286 s */
        { 0, MAIL, "alice", NULL, RATELIMIT_OK, 7 },
        { 0, MAIL, "alice", NULL, RATELIMIT_USER_MESSAGES, 0 },
        { 514285, MAIL, "alice", NULL, RATELIMIT_USER_MESSAGES, 0 },
        { 514286, MAIL, "alice", NULL, RATELIMIT_OK, 0 },
        { 514286, MAIL, "alice", NULL, RATELIMIT_USER_MESSAGES, 0 },
        { 0, END, NULL, NULL, RATELIMIT_OK, 0 } } },
};

/* test_scripts - every step of every script against a fresh table. */
static void test_scripts(void)
{
    for (size_t s = 0; s < sizeof(scripts) / sizeof(scripts[0]); s++) {
        const struct script *sc = &scripts[s];
        struct ratelimit *rl = ratelimit_new(10);
        struct rr_config cfg;

        memset(&cfg, 0, sizeof(cfg));
        cfg.user_hourly_messages = sc->user_msgs;
        cfg.user_hourly_recipients = sc->user_rcpts;
        cfg.ip_hourly_messages = sc->ip_msgs;
        cfg.rate_window_s = sc->window_s;
        for (size_t i = 0; i < 16 && sc->steps[i].op != END; i++) {
            const struct step *st = &sc->steps[i];
            struct sockaddr_storage ss;
            unsigned n = st->repeat ? st->repeat : 1;

            if (st->ip)
                sockaddr_of(st->ip, &ss);
            for (unsigned k = 0; k < n; k++) {
                enum ratelimit_hit hit = st->op == MAIL
                    ? ratelimit_mail(rl, &cfg, st->login,
                                     st->ip ? (const struct sockaddr *)&ss : NULL, st->at_ms)
                    : ratelimit_rcpt(rl, &cfg, st->login, st->at_ms);
                CHECK(hit == st->want, "%s: step %zu (%s %s %s at %llu ms) #%u: %s, want %s",
                      sc->name, i, st->op == MAIL ? "MAIL" : "RCPT",
                      st->login ? st->login : "-", st->ip ? st->ip : "-",
                      (unsigned long long)st->at_ms, k, ratelimit_hit_name(hit),
                      ratelimit_hit_name(st->want));
            }
        }
        ratelimit_free(rl);
    }
}

/* test_reply - the 451 texts. */
static void test_reply(void)
{
    struct rr_config cfg;
    char buf[RATELIMIT_REPLY_BYTES_MAX + 1];

    memset(&cfg, 0, sizeof(cfg));
    cfg.user_hourly_messages = 100;
    cfg.user_hourly_recipients = 1000;
    cfg.ip_hourly_messages = 4294967295u;
    cfg.rate_window_s = 3600;
    CHECK(strcmp(ratelimit_reply(RATELIMIT_USER_MESSAGES, &cfg, buf, sizeof(buf)),
                 "451 4.7.1 Rate limit user_hourly_messages (100 per 1h) exceeded, try again "
                 "later") == 0, "%s", buf);
    CHECK(strcmp(ratelimit_reply(RATELIMIT_USER_RECIPIENTS, &cfg, buf, sizeof(buf)),
                 "451 4.7.1 Rate limit user_hourly_recipients (1000 per 1h) exceeded, try "
                 "again later") == 0, "%s", buf);
    cfg.rate_window_s = 90;
    CHECK(strcmp(ratelimit_reply(RATELIMIT_IP_MESSAGES, &cfg, buf, sizeof(buf)),
                 "451 4.7.1 Rate limit ip_hourly_messages (4294967295 per 90s) exceeded, try "
                 "again later") == 0, "%s", buf);
    cfg.rate_window_s = 86400;
    ratelimit_reply(RATELIMIT_USER_MESSAGES, &cfg, buf, sizeof(buf));
    CHECK(strstr(buf, "(100 per 1d)"), "%s", buf);
    cfg.rate_window_s = 120;
    ratelimit_reply(RATELIMIT_USER_MESSAGES, &cfg, buf, sizeof(buf));
    CHECK(strstr(buf, "(100 per 2m)"), "%s", buf);
    CHECK(strcmp(ratelimit_hit_name(RATELIMIT_OK), "none") == 0, "ok name");
}

/* test_claims - once per (login, domain) per interval. */
static void test_claims(void)
{
    struct ratelimit *rl = ratelimit_new(10);
    uint64_t day = 86400000;

    CHECK(ratelimit_claim_once(rl, "alice", "other.example", 1000, day), "first");
    CHECK(!ratelimit_claim_once(rl, "alice", "other.example", 1000, day), "second");
    CHECK(!ratelimit_claim_once(rl, "ALICE", "Other.Example", 5000, day), "folded");
    CHECK(ratelimit_claim_once(rl, "alice", "third.example", 5000, day), "another domain");
    CHECK(ratelimit_claim_once(rl, "bob", "other.example", 5000, day), "another login");
    CHECK(ratelimit_claim_once(rl, "alic", "eother.example", 5000, day) &&
          ratelimit_claim_once(rl, "aliceo", "ther.example", 5000, day), "no ambiguity");
    CHECK(!ratelimit_claim_once(rl, "alice", "other.example", 1000 + day - 1, day),
          "just before the interval ends");
    CHECK(ratelimit_claim_once(rl, "alice", "other.example", 1000 + day, day),
          "the interval over");
    CHECK(!ratelimit_claim_once(rl, "alice", "other.example", 1000 + day + 1, day),
          "a new interval");
    CHECK(ratelimit_claim_once(rl, "carol", "x.example", 0, 0) &&
          ratelimit_claim_once(rl, "carol", "x.example", 0, 0), "interval 0: every time");
    ratelimit_free(rl);

    /* the shared table is one table */
    CHECK(ratelimit_shared() == ratelimit_shared(), "shared");
    CHECK(ratelimit_claim_once(ratelimit_shared(), "t", "d", 1, 10) &&
          !ratelimit_claim_once(ratelimit_shared(), "t", "d", 2, 10), "shared claims");
}

/* test_buckets - eviction in a full bucket, give-back bounds. */
static void test_buckets(void)
{
    struct ratelimit *rl = ratelimit_new(3);   /* one bucket of 8 */
    struct ratelimit_stats st;
    char key[32];

    /* 8 live claims fill the bucket; a 9th evicts the one closest to expiry */
    for (int i = 0; i < RATELIMIT_WAYS; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        CHECK(ratelimit_claim(rl, RATELIMIT_KIND_NOTICE, key, strlen(key), 0,
                              1000 + (uint64_t)i), "claim %d", i);
    }
    ratelimit_stats(rl, &st);
    CHECK(st.inserts == 8 && st.evictions_live == 0, "8 inserts: %llu %llu",
          (unsigned long long)st.inserts, (unsigned long long)st.evictions_live);
    CHECK(ratelimit_claim(rl, RATELIMIT_KIND_NOTICE, "k8", 2, 0, 5000), "9th claim");
    ratelimit_stats(rl, &st);
    CHECK(st.evictions_live == 1, "a live eviction: %llu", (unsigned long long)st.evictions_live);
    CHECK(ratelimit_claim(rl, RATELIMIT_KIND_NOTICE, "k0", 2, 0, 1000),
          "k0 (the earliest) was the one evicted");
    for (int i = 2; i < RATELIMIT_WAYS; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        CHECK(!ratelimit_claim(rl, RATELIMIT_KIND_NOTICE, key, strlen(key), 0, 1000),
              "k%d kept", i);
    }
    /* once expired, entries are taken without a live eviction */
    ratelimit_stats(rl, &st);
    uint64_t live = st.evictions_live;
    CHECK(ratelimit_claim(rl, RATELIMIT_KIND_NOTICE, "k9", 2, 6000, 10), "k9 after expiry");
    ratelimit_stats(rl, &st);
    CHECK(st.evictions_live == live, "expired entries carry no information");
    ratelimit_free(rl);

    /* give back: never beyond full */
    rl = ratelimit_new(10);
    CHECK(ratelimit_take(rl, RATELIMIT_KIND_USER_MESSAGES, "a", 1, 3, H, 0), "take");
    ratelimit_give_back(rl, RATELIMIT_KIND_USER_MESSAGES, "a", 1, 3, H, 0);
    ratelimit_give_back(rl, RATELIMIT_KIND_USER_MESSAGES, "a", 1, 3, H, 0);
    ratelimit_give_back(rl, RATELIMIT_KIND_USER_MESSAGES, "b", 1, 3, H, 0);  /* unknown */
    int granted = 0;
    for (int i = 0; i < 10; i++)
        granted += ratelimit_take(rl, RATELIMIT_KIND_USER_MESSAGES, "a", 1, 3, H, 0);
    CHECK(granted == 3, "after giving back twice: %d granted, want 3", granted);
    CHECK(ratelimit_take(rl, RATELIMIT_KIND_USER_RECIPIENTS, "a", 1, 3, H, 0),
          "kinds are separate keys");
    CHECK(ratelimit_take(rl, RATELIMIT_KIND_USER_MESSAGES, "a", 1, 0, H, 0), "0 = unlimited");
    ratelimit_free(rl);
}

/* ---- threads ---- */

#define THREADS        8
#define TAKES_EACH     20000      /* per thread, one key */
#define LIMIT          5000
#define ROUNDS         2000       /* racing first claims */

struct hammer {
    struct ratelimit *rl;
    int granted;                  /* out: takes granted */
    int claims;                   /* out: claims won */
    pthread_barrier_t *barrier;
};

/* hammer_takes - TAKES_EACH takes of one key at one instant. */
static void *hammer_takes(void *arg)
{
    struct hammer *h = arg;

    pthread_barrier_wait(h->barrier);
    for (int i = 0; i < TAKES_EACH; i++)
        h->granted += ratelimit_take(h->rl, RATELIMIT_KIND_USER_MESSAGES, "hot", 3, LIMIT, H,
                                     42);
    return NULL;
}

/* hammer_claims - in each round, every thread claims the same fresh key at once. */
static void *hammer_claims(void *arg)
{
    struct hammer *h = arg;
    char key[32];

    for (int r = 0; r < ROUNDS; r++) {
        snprintf(key, sizeof(key), "round%d", r);
        pthread_barrier_wait(h->barrier);
        h->claims += ratelimit_claim(h->rl, RATELIMIT_KIND_NOTICE, key, strlen(key), 7, H);
    }
    return NULL;
}

/* test_threads - never over-granted, one claim per key. */
static void test_threads(void)
{
    pthread_t t[THREADS];
    struct hammer h[THREADS];
    pthread_barrier_t barrier;
    struct ratelimit_stats st;
    int total = 0;

    struct ratelimit *rl = ratelimit_new(12);
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){ rl, 0, 0, &barrier };
        pthread_create(&t[i], NULL, hammer_takes, &h[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        total += h[i].granted;
    }
    ratelimit_stats(rl, &st);
    CHECK(total == LIMIT, "%d threads x %d takes, limit %d: %d granted (%llu contended)",
          THREADS, TAKES_EACH, LIMIT, total, (unsigned long long)st.contended);
    ratelimit_free(rl);

    /* racing first sights (the insert path): every round's key is new. The table is small
     * (64 entries for 2000 live claims), so live evictions happen; each may cost at most
     * one extra win */
    rl = ratelimit_new(6);
    total = 0;
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){ rl, 0, 0, &barrier };
        pthread_create(&t[i], NULL, hammer_claims, &h[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        total += h[i].claims;
    }
    ratelimit_stats(rl, &st);
    CHECK(total == ROUNDS || (uint64_t)(total - ROUNDS) <= st.evictions_live,
          "%d rounds of %d racing claims: %d won (%llu live evictions)", ROUNDS, THREADS,
          total, (unsigned long long)st.evictions_live);
    CHECK(total >= ROUNDS - (int)st.contended, "every round has a winner: %d", total);
    ratelimit_free(rl);

    /* the same with a roomy table: exact */
    rl = ratelimit_new(16);
    total = 0;
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){ rl, 0, 0, &barrier };
        pthread_create(&t[i], NULL, hammer_claims, &h[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        total += h[i].claims;
    }
    CHECK(total == ROUNDS, "%d rounds of %d racing claims, roomy table: %d won", ROUNDS,
          THREADS, total);
    ratelimit_free(rl);
    pthread_barrier_destroy(&barrier);
}

int main(void)
{
    test_siphash();
    test_scripts();
    test_reply();
    test_claims();
    test_buckets();
    test_threads();
    return check_done("test_ratelimit");
}
