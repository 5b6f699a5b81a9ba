/*
 * smtp_auth.c - SMTP AUTH (RFC 4954) in the inbound session: the SASL exchange, the password
 * check lent to the auth pool, the verdict, and the brakes on password guessing.
 *
 * Functions: smtp_auth_available(), smtp_auth_offered(), smtp_auth_start(),
 * smtp_auth_response(), smtp_auth_refused(), smtp_auth_line_long(), smtp_auth_refuse_line(),
 * smtp_auth_forget(), smtp_auth_release() for the session (smtp_commands.c, smtp_server.c);
 * smtp_auth_worker_done() for the engine's OP_AUTH_DONE.
 *
 * One exchange: AUTH mech [initial] -> (334 challenge, response line)* -> credentials ->
 * verdict -> 235, 535 or 454. The session is in ST_AUTH while a response line is due (the
 * input loop reads it under the AUTH line bound and hands it here through smtp_command), and
 * in ST_AUTH_WAIT while the verdict is out or its reply is held back; no input is taken then,
 * so whatever the client sent meanwhile is answered afterwards, in order, as after a commit.
 * The exchange lives in a struct smtp_auth allocated at AUTH and freed when its last reply is
 * queued (or by conn_reap): one allocation per exchange, which is per session, next to a
 * password hash that costs a thousand times more.
 *
 * The check: a success cached by the auth pool (core/auth_pool.h, passwd-file only) answers
 * at once on the worker; otherwise the request goes to the pool's helper threads and comes
 * back through the worker's eventfd (smtp_auth_worker_done). This file does not know which
 * backend runs it (passwd-file, or the Dovecot socket): it only reads AUTH_OK, AUTH_REJECTED,
 * AUTH_ERROR and AUTH_CANCELLED. A session that closes while its request is in the pool stays
 * a zombie (conn->auth_pending keeps conn_reap from freeing it) until the request is back.
 *
 * Brakes on guessing:
 *   - per connection: [auth] max_failures failed exchanges, then 421 4.7.0 and close;
 *   - per client address (an IPv6 client by its /64, which one host usually holds whole) and
 *     per login: recent failures counted in a small table per worker, forgetting one per
 *     AUTH_BRAKE_DECAY_MS; past AUTH_BRAKE_FREE_FAILURES, the reply to each further check for
 *     that address or login is held back 1 s, 2 s, 4 s ... up to AUTH_BRAKE_DELAY_MS_MAX,
 *     by an engine timer (a worker never sleeps). The reply is held whatever the verdict, so a
 *     guesser cannot hang up early to learn from a fast answer that it failed; a success
 *     clears that login's count (not the address's: one good account must not launder
 *     guesses at others). ringrelay_auth_delays_total counts the held replies.
 *   The table is per worker, without locks, bounded (AUTH_BRAKE_BUCKETS x AUTH_BRAKE_WAYS
 *   entries, the one with the fewest failures replaced) and keyed by a hash under a
 *   per-worker random seed. Counts are per worker: a client whose connections the kernel
 *   spreads over several workers gets the free failures once per worker before the first
 *   delay. That is acceptable: the delays only slow guessing down, which the per-connection
 *   limit, the per-address connection limits and the cost of each hash bound as well; exact
 *   counts would put a shared table and a lock on every AUTH.
 *
 * SECURITY: every line here is from the client. Lines are bounded by the input loop
 * (SMTP_AUTH_LINE_BYTES_MAX, SMTP_AUTH_LINE_BYTES when split), and the SASL decoder
 * (net/sasl.c) bounds every field. The password lives in the exchange until it is copied
 * into the request, is wiped there (sasl_creds_wipe) at once, and the pool wipes the
 * request's copy when it comes back; every exit wipes the whole exchange. It is never
 * logged. A login with a control byte is refused (it could not be one envelope line or a
 * log value; passwd-file user names cannot hold one either). Logins are logged through
 * log_q(). Until TLS is up, AUTH is refused with 538 unless [auth] plaintext = yes.
 *
 * STANDARDS: RFC 4954 4 (AUTH, initial response, "*", 334), 6 (235 2.7.0, 535 5.7.8,
 * 454 4.7.0, 538 5.7.11, 500 5.5.6, 501 5.5.2, 501 5.0.0, 504 5.5.4, 503 5.5.1);
 * RFC 4616 (PLAIN); draft-murchison-sasl-login (LOGIN); RFC 3207 4.2 (STARTTLS forgets the
 * login); RFC 5321 3.8 (421 at any time).
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "core/alloc.h"
#include "core/auth_pool.h"
#include "core/log.h"
#include "net/smtp_auth.h"
#include "net/smtp_session.h"

#define REPLY_TEMPFAIL  "454 4.7.0 Temporary authentication failure"
#define BRAKE_SCORE_MAX 1000    /* failures remembered for one key, at most */

/* One AUTH exchange of a session. */
struct smtp_auth {
    struct conn *conn;            /* the session; outlives this (freed first, or by reap) */
    enum sasl_mech mech;          /* mechanism, for the logs */
    struct sasl_exchange ex;      /* SASL state; the credentials once DONE, until copied */
    struct auth_req req;          /* the check: user, password (wiped when it comes back);
                                     lent to the pool while conn->auth_pending */
    struct engine_timer hold;     /* holds the verdict's reply back (the brakes) */
    enum auth_status status;      /* the verdict */
    bool cached;                  /* AUTH_OK from the success cache */
    bool busy;                    /* AUTH_ERROR because the pool refused the request */
    uint32_t hold_ms;             /* how long the reply is held back (0: not) */
    uint64_t release_ms;          /* monotonic: the reply goes out no earlier */
};

/* One entry of the brakes' failure table. */
struct brake_entry {
    uint64_t key;                 /* keyed hash of (kind, address or login); 0 = empty */
    uint64_t updated_ms;          /* last failure counted; decay runs from here */
    uint32_t score;               /* failures then (less one per AUTH_BRAKE_DECAY_MS since) */
};

/* The worker's failure table: touched only by its own thread, hence no lock. */
static __thread struct {
    uint64_t seed;                /* hash key, from getrandom() at first use */
    bool seeded;
    struct brake_entry e[AUTH_BRAKE_BUCKETS * AUTH_BRAKE_WAYS];
} brake;

_Static_assert((AUTH_BRAKE_BUCKETS & (AUTH_BRAKE_BUCKETS - 1)) == 0, "buckets: power of 2");

/* ---- the brakes ---- */

/* brake_hash - 64-bit keyed hash of kind and n bytes at p (FNV-1a from the seed, then a
 * finaliser); never 0. Not a MAC: a collision only merges two counts. */
static uint64_t brake_hash(unsigned kind, const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h;

    if (!brake.seeded) {
        if (getrandom(&brake.seed, sizeof(brake.seed), GRND_NONBLOCK) != sizeof(brake.seed))
            brake.seed = (uint64_t)(uintptr_t)&brake ^ engine_now_ms() * 0x9e3779b97f4a7c15ull;
        brake.seeded = true;
    }
    h = (brake.seed ^ 0xcbf29ce484222325ull) + kind;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h ? h : 1;
}

/* brake_score - e's failures now, after the decay since its last one. */
static uint32_t brake_score(const struct brake_entry *e, uint64_t now_ms)
{
    uint64_t forgotten = now_ms > e->updated_ms ? (now_ms - e->updated_ms) / AUTH_BRAKE_DECAY_MS
                                                : 0;

    return forgotten >= e->score ? 0 : e->score - (uint32_t)forgotten;
}

/* brake_find - the entry of key; when absent, NULL, or (add) a fresh one in place of the
 * entry of its set with the fewest failures. */
static struct brake_entry *brake_find(uint64_t key, bool add, uint64_t now_ms)
{
    struct brake_entry *set = &brake.e[(key >> 40) % AUTH_BRAKE_BUCKETS * AUTH_BRAKE_WAYS];
    struct brake_entry *victim = &set[0];

    for (unsigned i = 0; i < AUTH_BRAKE_WAYS; i++) {
        if (set[i].key == key)
            return &set[i];
        if (brake_score(&set[i], now_ms) < brake_score(victim, now_ms))
            victim = &set[i];
    }
    if (!add)
        return NULL;
    *victim = (struct brake_entry){ .key = key, .updated_ms = now_ms };
    return victim;
}

/* address_key - the client's address (an IPv6 client by its /64). */
static uint64_t address_key(const struct conn *c)
{
    if (c->peer.sa.sa_family == AF_INET)
        return brake_hash(1, &c->peer.in.sin_addr, sizeof(c->peer.in.sin_addr));
    if (c->peer.sa.sa_family == AF_INET6)
        return brake_hash(2, &c->peer.in6.sin6_addr, 8);
    return brake_hash(3, NULL, 0);
}

/* login_key - a login as the client typed it. */
static uint64_t login_key(const char *user)
{
    return brake_hash(4, user, strlen(user));
}

/* brake_delay_of - the hold for a key with score recent failures. */
static uint32_t brake_delay_of(uint32_t score)
{
    uint32_t shift, ms;

    if (score <= AUTH_BRAKE_FREE_FAILURES)
        return 0;
    shift = score - AUTH_BRAKE_FREE_FAILURES - 1;
    ms = shift >= 5 ? AUTH_BRAKE_DELAY_MS_MAX : AUTH_BRAKE_DELAY_MS_MIN << shift;
    return ms < AUTH_BRAKE_DELAY_MS_MAX ? ms : AUTH_BRAKE_DELAY_MS_MAX;
}

/* brake_delay - how long the reply to a check of user from c's address is held back. */
static uint32_t brake_delay(const struct conn *c, const char *user)
{
    uint64_t now = c->w->now_ms;
    const struct brake_entry *a = brake_find(address_key(c), false, now);
    const struct brake_entry *l = brake_find(login_key(user), false, now);
    uint32_t sa = a ? brake_score(a, now) : 0, sl = l ? brake_score(l, now) : 0;

    return brake_delay_of(sa > sl ? sa : sl);
}

/* brake_bump - one more failure for key. */
static void brake_bump(uint64_t key, uint64_t now_ms)
{
    struct brake_entry *e = brake_find(key, true, now_ms);
    uint32_t s = brake_score(e, now_ms);

    e->score = s < BRAKE_SCORE_MAX ? s + 1 : s;
    e->updated_ms = now_ms;
}

/* brake_fail - a failed login from c's address, for user (NULL when the exchange ended
 * before a user name was known). */
static void brake_fail(const struct conn *c, const char *user)
{
    brake_bump(address_key(c), c->w->now_ms);
    if (user && *user)
        brake_bump(login_key(user), c->w->now_ms);
}

/* brake_forgive - user logged in: forget its failures. */
static void brake_forgive(const struct conn *c, const char *user)
{
    struct brake_entry *e = brake_find(login_key(user), false, c->w->now_ms);

    if (e)
        e->score = 0;
}

/* ---- the exchange ---- */

/* mech_name - for the logs. */
static const char *mech_name(enum sasl_mech mech)
{
    return mech == SASL_MECH_PLAIN ? "PLAIN" : mech == SASL_MECH_LOGIN ? "LOGIN" : "";
}

/* cookie - the session's name in its requests (slot and generation). */
static uint64_t cookie(const struct conn *c)
{
    return (uint64_t)c->slot << 32 | c->gen;
}

/* login_ok - no control byte in the user name (see SECURITY). */
static bool login_ok(const char *user, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)user[i] < 0x20 || user[i] == 0x7f)
            return false;
    return true;
}

/* outcome - count an AUTH outcome and log it (never the password); failures= is the
 * connection's failed exchanges, this one included when failed. */
static void outcome(struct conn *c, enum metrics_auth_result r, enum sasl_mech mech,
                    const char *login, const char *reason, uint32_t hold_ms, bool failed)
{
    metrics_add(&c->w->m->auth[r], 1);
    log_event(LOG_INFO, "event=auth result=%s login=%s peer=%s mech=%s reason=%s failures=%u "
              "delay_ms=%u", metrics_auth_result_name[r], login && *login ? log_q(login) : "",
              c->peer_text, mech_name(mech), reason, c->auth_failures + (failed ? 1u : 0u),
              hold_ms);
}

/* drop - free the exchange, wiped. */
static void drop(struct conn *c)
{
    struct smtp_auth *a = c->auth;

    if (!a)
        return;
    assert(!c->auth_pending);
    engine_timer_set(c->w, &a->hold, 0);
    sasl_exchange_wipe(&a->ex);
    explicit_bzero(&a->req, sizeof(a->req));
    free(a);
    c->auth = NULL;
}

/* end - the exchange is over: drop it; back to READY with a fresh idle deadline. */
static void end(struct conn *c)
{
    drop(c);
    if (c->state == ST_AUTH || c->state == ST_AUTH_WAIT)
        conn_set_state(c, ST_READY);
    if (!c->closing && !c->close_after_send)
        conn_idle_deadline(c);
}

/* count_failure - one more failed exchange on this connection; at max_failures, 421 and
 * close (after the reply already queued). */
static void count_failure(struct conn *c)
{
    const struct rr_config *cfg = c->w->cfg;

    if (c->auth_failures < UINT8_MAX)
        c->auth_failures++;
    if (c->auth_failures >= cfg->auth_failures_max && !c->closing && !c->close_after_send) {
        conn_reply(c, "421 4.7.0 %s Error: too many authentication failures", cfg->hostname);
        conn_rejected(c, "421 4.7.0", "auth_failures");
        conn_close_after_reply(c);
    }
}

/* exchange_failed - the exchange ended without a password check (status st, not DONE or
 * NEED_MORE): reply, log, count. Runs inside the command, never after a wait. */
static void exchange_failed(struct conn *c, enum sasl_status st)
{
    enum sasl_mech mech = c->auth->mech;
    const char *reply = sasl_status_reply(st), *why = sasl_status_name(st);
    enum metrics_auth_result r = AUTHR_MALFORMED;
    bool failure = false;
    int proto = -1;
    char reason[40];

    switch (st) {
    case SASL_CANCELLED:          /* the client's choice: no protocol error */
        r = AUTHR_CANCELLED;
        break;
    case SASL_AUTHZID_MISMATCH:   /* a login attempt the policy refuses: it counts */
        r = AUTHR_REFUSED;
        failure = true;
        break;
    case SASL_BAD_MESSAGE:        /* decoded, not credentials: a failed login (net/sasl.c) */
        failure = true;
        break;
    case SASL_TOO_LONG:
        proto = PROTO_LINE_TOO_LONG;
        break;
    default:                      /* SASL_BAD_BASE64; SASL_BAD_MECH is refused before */
        proto = PROTO_SYNTAX;
        break;
    }
    if (!reply)
        reply = SASL_REPLY_CREDENTIALS_INVALID;  /* not reached: st ends the exchange */
    end(c);
    conn_reply(c, "%s", reply);
    snprintf(reason, sizeof(reason), "auth_%s", why);
    conn_rejected(c, reply, reason);
    outcome(c, r, mech, "", why, 0, failure);
    if (failure) {
        brake_fail(c, NULL);
        count_failure(c);
    }
    if (proto >= 0)
        smtp_protocol_error(c, (enum metrics_proto_reason)proto);
}

/* answer - the verdict's reply; async when the session waited (then resume its input). */
static void answer(struct conn *c, bool async)
{
    struct smtp_auth *a = c->auth;
    enum auth_status st = a->status;

    if (st == AUTH_OK) {
        c->authenticated = true;
        snprintf(c->login, sizeof(c->login), "%s", a->req.user);
        end(c);
        conn_reply(c, "%s", SASL_REPLY_SUCCESS);
    } else if (st == AUTH_REJECTED) {
        end(c);
        conn_reply(c, "%s", SASL_REPLY_CREDENTIALS_INVALID);
        conn_rejected(c, SASL_REPLY_CREDENTIALS_INVALID, "auth_failed");
        count_failure(c);
    } else {
        end(c);
        conn_reply(c, "%s", REPLY_TEMPFAIL);
        conn_rejected(c, REPLY_TEMPFAIL, "auth_unavailable");
    }
    if (async && !c->closing && !c->close_after_send)
        smtp_server_resume(c);  /* input that waited, then the flush */
}

/* verdict - the check is decided (a->status): count and log it, then answer now or when
 * the brakes let go. A session that closed meanwhile gets nothing. */
static void verdict(struct conn *c, bool async)
{
    struct smtp_auth *a = c->auth;
    const char *user = a->req.user, *why;
    enum metrics_auth_result r;

    switch (a->status) {
    case AUTH_OK:
        r = AUTHR_SUCCESS;
        why = a->cached ? "cached" : "password";
        brake_forgive(c, user);
        break;
    case AUTH_REJECTED:
        r = AUTHR_FAILURE;
        why = "credentials";
        brake_fail(c, user);
        break;
    case AUTH_CANCELLED:
        r = AUTHR_ERROR;
        why = "stopping";
        break;
    default:
        r = AUTHR_ERROR;
        why = a->busy ? "busy" : "backend";
        break;
    }
    outcome(c, r, a->mech, user, why, a->hold_ms, r == AUTHR_FAILURE);
    if (c->closing || c->close_after_send)
        return;                   /* conn_reap frees the exchange */
    if (a->release_ms > c->w->now_ms) {
        metrics_add(&c->w->m->auth_delays, 1);
        engine_timer_set(c->w, &a->hold, a->release_ms);
        return;
    }
    answer(c, async);
}

/* hold_over - the brakes let go of a held reply. */
static void hold_over(struct worker *w, struct engine_timer *t)
{
    struct smtp_auth *a = (struct smtp_auth *)((char *)t - offsetof(struct smtp_auth, hold));
    struct conn *c = a->conn;

    (void)w;
    if (!c->closing && !c->close_after_send && c->state == ST_AUTH_WAIT)
        answer(c, true);
    conn_reap(c);
}

/* request_init - fill a->req for the configured backend: the Dovecot socket, or the
 * passwd-file database. The only place that knows there are two. The database pointer is
 * used within the caller's call only, under w->cfg, which the main thread keeps alive until
 * every worker has moved on; the pool takes its own reference for the time the request
 * runs (auth_pool_submit), so the session holds none. */
static int request_init(struct conn *c, const struct sasl_creds *cr)
{
    const struct rr_config *cfg = c->w->cfg;
    bool ip = c->peer.sa.sa_family == AF_INET || c->peer.sa.sa_family == AF_INET6;

    if (cfg->dovecot_socket[0])
        return auth_req_init_dovecot(&c->auth->req, cfg->dovecot_socket,
                                     ip ? c->peer_text : NULL, c->w->id, cookie(c), cr->user,
                                     cr->user_len, cr->pass, cr->pass_len);
    return auth_req_init(&c->auth->req, cfg->passwd_db, c->w->id, cookie(c), cr->user,
                         cr->user_len, cr->pass, cr->pass_len);
}

/* cache_hit - whether the backend's success cache knows this user and password. */
static bool cache_hit(const struct conn *c, const struct auth_req *r)
{
    const struct rr_config *cfg = c->w->cfg;

    if (cfg->dovecot_socket[0])
        return auth_cache_check_dovecot(cfg->dovecot_socket, r->user, r->password);
    return cfg->passwd_db && auth_cache_check(cfg->passwd_db, r->user, r->password);
}

/* check_credentials - the exchange gave credentials: the cache, else the pool. */
static void check_credentials(struct conn *c)
{
    struct smtp_auth *a = c->auth;
    struct worker *w = c->w;
    struct sasl_creds *cr = &a->ex.creds;
    int err;

    if (!login_ok(cr->user, cr->user_len)) {
        sasl_creds_wipe(cr);
        exchange_failed(c, SASL_BAD_MESSAGE);
        return;
    }
    a->hold_ms = brake_delay(c, cr->user);
    a->release_ms = a->hold_ms ? w->now_ms + a->hold_ms : 0;
    err = request_init(c, cr);
    sasl_creds_wipe(cr);
    conn_set_state(c, ST_AUTH_WAIT);
    engine_timer_set(w, &c->timer, 0);  /* the next reply is ours: no idle deadline */
    if (err < 0) {
        /* The SASL limits are within the pool's: only a backend set-up problem gets here. */
        log_event(LOG_ERROR, "event=auth_request_failed peer=%s error=%s", c->peer_text,
                  log_q(strerror(-err)));
        a->status = AUTH_ERROR;
        verdict(c, false);
        return;
    }
    if (cache_hit(c, &a->req)) {
        explicit_bzero(a->req.password, sizeof(a->req.password));
        a->status = AUTH_OK;
        a->cached = true;
        verdict(c, false);
        return;
    }
    if (auth_pool_submit(&a->req) < 0) {  /* full or stopping; the password is wiped */
        a->status = AUTH_ERROR;
        a->busy = true;
        verdict(c, false);
        return;
    }
    c->auth_pending = true;
}

/* step - act on what the SASL decoder said. */
static void step(struct conn *c, enum sasl_status st)
{
    if (st == SASL_NEED_MORE) {
        conn_set_state(c, ST_AUTH);
        conn_reply(c, "334 %s", c->auth->ex.challenge);
    } else if (st == SASL_DONE) {
        check_credentials(c);
    } else {
        exchange_failed(c, st);
    }
}

/* ---- the session's interface ---- */

/* smtp_auth_available - listener and backend. */
bool smtp_auth_available(const struct conn *c)
{
    const struct rr_config *cfg = c->w->cfg;

    return cfg->listeners[c->listener].auth != AUTH_NONE &&
           (cfg->passwd_db || cfg->dovecot_socket[0]);
}

/* smtp_auth_offered - and encryption, unless plaintext AUTH is allowed. */
bool smtp_auth_offered(const struct conn *c)
{
    return smtp_auth_available(c) && (conn_is_tls(c) || c->w->cfg->auth_plaintext);
}

/* smtp_auth_start - AUTH mech [initial]. */
void smtp_auth_start(struct conn *c, enum sasl_mech mech, const char *initial, size_t len)
{
    struct smtp_auth *a;

    assert(!c->auth && !c->auth_pending);
    a = rr_calloc(1, sizeof(*a));
    a->conn = c;
    a->mech = mech;
    a->hold.fire = hold_over;
    c->auth = a;
    step(c, sasl_start(&a->ex, mech, initial, len));
}

/* smtp_auth_response - a response line in ST_AUTH. */
void smtp_auth_response(struct conn *c, const char *line, size_t len)
{
    assert(c->auth && c->state == ST_AUTH);
    step(c, sasl_step(&c->auth->ex, line, len));
}

/* smtp_auth_refused - an AUTH command refused before the exchange. */
void smtp_auth_refused(struct conn *c, const char *reply, const char *reason,
                       enum metrics_auth_result result, int proto)
{
    conn_reply(c, "%s", reply);
    conn_rejected(c, reply, reason);
    outcome(c, result, SASL_MECH_UNKNOWN, "", reason, 0, false);
    if (proto >= 0)
        smtp_protocol_error(c, (enum metrics_proto_reason)proto);
}

/* smtp_auth_line_long - an AUTH line (RFC 4954 bounds, not 512 octets)? */
bool smtp_auth_line_long(const struct conn *c, const char *held, size_t held_len,
                         const char *data, size_t len)
{
    char head[5];
    size_t n = 0;

    if (c->state == ST_AUTH)
        return true;
    if (c->state != ST_READY || !smtp_auth_available(c))
        return false;
    for (size_t i = 0; i < held_len && n < sizeof(head); i++)
        head[n++] = held[i];
    for (size_t i = 0; i < len && n < sizeof(head); i++)
        head[n++] = data[i];
    return n == sizeof(head) && !strncasecmp(head, "AUTH ", sizeof(head));
}

/* smtp_auth_refuse_line - the input loop refused an AUTH line. */
void smtp_auth_refuse_line(struct conn *c, const char *reply, enum metrics_proto_reason proto)
{
    enum sasl_mech mech = c->auth ? c->auth->mech : SASL_MECH_UNKNOWN;
    const char *why = metrics_proto_reason_name[proto];

    end(c);
    conn_reply(c, "%s", reply);
    conn_rejected(c, reply, why);
    outcome(c, AUTHR_MALFORMED, mech, "", why, 0, false);
    smtp_protocol_error(c, proto);
}

/* smtp_auth_forget - STARTTLS. */
void smtp_auth_forget(struct conn *c)
{
    assert(!c->auth);
    c->authenticated = false;
    c->login[0] = '\0';
}

/* smtp_auth_release - conn_reap. An exchange the client left in the middle (the session
 * closed after a 334) is an outcome too: cancelled. */
void smtp_auth_release(struct conn *c)
{
    if (c->auth && c->auth->status == AUTH_PENDING)
        outcome(c, AUTHR_CANCELLED, c->auth->mech, NULL, "connection_closed", 0, false);
    drop(c);
    free(c->auth_line);
    c->auth_line = NULL;
}

/* smtp_auth_worker_done - checks back from the pool, oldest first. */
void smtp_auth_worker_done(struct worker *w)
{
    struct auth_req *r, *next;

    for (r = auth_pool_take_done(w->id); r; r = next) {
        struct smtp_auth *a = (struct smtp_auth *)((char *)r - offsetof(struct smtp_auth, req));
        struct conn *c = a->conn;

        next = r->next;
        /* The session cannot be gone: auth_pending kept conn_reap from freeing it. */
        assert(c->auth == a && c->auth_pending && r->cookie == cookie(c));
        c->auth_pending = false;
        a->status = r->status;
        a->cached = r->cached;
        verdict(c, true);
        conn_reap(c);
    }
}
