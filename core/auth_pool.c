/*
 * auth_pool.c - password checks on helper threads, results posted back to the workers.
 *
 * Functions: auth_pool_default(), auth_pool_start(), auth_pool_stop(), auth_pool_free(),
 * auth_req_init(), auth_req_init_dovecot(), auth_pool_submit(), auth_pool_worker_fd(),
 * auth_pool_take_done(), auth_pool_pending(), auth_cache_check(), auth_cache_check_dovecot(),
 * auth_cache_flush().
 *
 * Why: a worker thread never blocks, and a SHA512-CRYPT check is a millisecond of CPU (bcrypt
 * and yescrypt more). The worker hands the request over through one bounded FIFO (mutex and
 * condition variable, intrusive links: nothing is allocated per request); a helper runs
 * passwd_verify() and appends the request to its worker's done list (mutex), then writes the
 * worker's eventfd when the list was empty before, so a burst of results costs one wake-up and
 * one drain. The write comes after the unlock, so a worker may find an empty list once: fine.
 *
 * The database travels with the request and the pool holds a reference while it runs, so a
 * reload may swap and unref the old one at any time.
 *
 * Dovecot: a request for a Dovecot socket carries a copy of the path and goes to its own FIFO
 * (same bound), served by the Dovecot helper. Its check is not CPU but waiting, and Dovecot
 * holds every failure back 2 s (more for a penalised client address), so a helper blocked on
 * one request would let a few wrong passwords stall every login. The Dovecot helper instead
 * keeps one connection (core/dovecot_auth.c) with up to AUTH_DOVECOT_INFLIGHT_MAX requests in
 * flight, each under its own deadline, and waits in poll() on the socket and an eventfd that
 * submit and stop write. The answers come in any order and are matched by id. A connection
 * serves one path: when the next request names another (a reload), the helper lets the
 * requests in flight finish, then reconnects. Anything out of step (a malformed line, an
 * unknown id, CONT, the server closing, a timeout) closes the connection and fails every
 * request in flight with AUTH_ERROR; the next request reconnects. A connection that was idle
 * and turns out dead at the first send is reopened once before anything fails. Dovecot going
 * down and coming back is logged once each (event=dovecot_down, event=dovecot_up).
 *
 * Success cache: a login that succeeded is remembered for cache_ttl_ms as a 64-bit tag,
 * SipHash-2-4 under a random per-process key of (database serial, user, NUL, password), in a
 * 4-way set-associative table of AUTH_CACHE_ENTRIES_MAX tags (bounded; the entry that expires
 * first is replaced). Only successes go in: a wrong password is hashed every time, so the
 * cache never speeds up guessing. A reload gives the database a new serial: every old tag
 * misses, a changed password stops working at once. Checks run on the workers, inserts on the
 * helpers; both hash outside the lock and hold it for a few compares.
 *
 * The cache keys a Dovecot login on a number made from the socket path (SipHash of the path
 * with the top bit set; database serials count from 1 and never get there), so the same
 * login through another backend misses.
 *
 * Threads: pool.lock guards both queues, pending and stopping; done[w].lock a done list;
 * pool.cache_lock the cache; pool.dv (connection, requests in flight) is the Dovecot
 * helper's alone. Start, stop and free are the main thread's.
 *
 * SECURITY: user and password come from the network. Both are bounded by auth_req_init();
 * the password is wiped with explicit_bzero() when the request comes back (every outcome:
 * checked, cached, cancelled, refused at submit), and so is the hashing buffer of the cache.
 * An unknown user costs a dummy hash (passwd_verify_dummy()), so timing does not tell which
 * users exist. A cache hit needs the 64-bit tag of the right password under a key the peer
 * never sees; a guess costs a full AUTH exchange. User names in logs go through log_q().
 * A Dovecot request's password is wiped as soon as it is sent (its cache tag is kept
 * instead). The client address is checked with inet_pton() before it is put in a line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/auth_pool.h"
#include "core/log.h"
#include "core/siphash.h"

_Static_assert((AUTH_CACHE_ENTRIES_MAX & (AUTH_CACHE_ENTRIES_MAX - 1)) == 0,
               "cache entries must be a power of two");
_Static_assert(AUTH_CACHE_ENTRIES_MAX % AUTH_CACHE_WAYS == 0, "whole buckets");

_Static_assert(PASSWD_USER_BYTES_MAX <= DOVECOT_USER_BYTES_MAX &&
               PASSWD_PASSWORD_BYTES_MAX <= DOVECOT_PASSWORD_BYTES_MAX,
               "every request the pool takes can be sent to Dovecot");

#define CACHE_BUCKETS (AUTH_CACHE_ENTRIES_MAX / AUTH_CACHE_WAYS)
#define DOVECOT_SERIAL_BIT (1ull << 63)   /* set in Dovecot's cache numbers only */
#define TAG_INPUT_BYTES_MAX (8 + PASSWD_USER_BYTES_MAX + 1 + PASSWD_PASSWORD_BYTES_MAX)

/* One worker's returned requests. */
struct done_list {
    pthread_mutex_t lock;         /* guards head and tail */
    struct auth_req *head, *tail; /* FIFO through next */
    int efd;                      /* eventfd written when head goes from NULL to a request */
};

/* One remembered success. */
struct cache_entry {
    uint64_t tag;                 /* SipHash of serial, user, password; 0 = empty */
    uint64_t expires_ms;          /* monotonic; stale from then on */
};

/* One request sent to Dovecot. */
struct dv_slot {
    struct auth_req *r;           /* its password already wiped */
    uint32_t id;                  /* AUTH id on the connection */
    uint64_t deadline_ms;         /* monotonic: no answer by then fails the connection */
    uint64_t tag;                 /* cache tag of the login, 0 when not cached */
};

/* The Dovecot helper's state (its thread only). */
struct dv_helper {
    struct dovecot_client conn;   /* one connection, to conn.path */
    struct dv_slot slots[AUTH_DOVECOT_INFLIGHT_MAX]; /* [0..count) in flight */
    unsigned count;               /* requests in flight, all on conn */
    bool down;                    /* the last connect failed (logged once until one works) */
};

static struct {
    bool started;                 /* between auth_pool_start() and auth_pool_free() */
    struct auth_pool_config cfg;  /* as started */
    pthread_mutex_t lock;         /* guards the queue, pending, stopping */
    pthread_cond_t cond;          /* a request came, or stopping */
    struct auth_req *head, *tail; /* waiting for a helper, FIFO through next */
    struct auth_req *dv_head, *dv_tail; /* waiting for the Dovecot helper, FIFO */
    unsigned pending;             /* requests in both queues, at most cfg.queue_max */
    bool stopping;                /* auth_pool_stop() began: refuse, helpers leave */
    pthread_t threads[AUTH_POOL_THREADS_MAX];
    unsigned thread_count;        /* helpers running */
    pthread_t dv_thread;          /* the Dovecot helper */
    bool dv_running;              /* dv_thread was started */
    int dv_efd;                   /* eventfd: a Dovecot request came, or stopping; -1 = none */
    struct dv_helper *dv;         /* the Dovecot helper's state, with dv_thread */
    struct done_list *done;       /* [cfg.workers] */
    uint64_t key[2];              /* SipHash key, from getrandom() at start */
    pthread_mutex_t cache_lock;   /* guards cache */
    struct cache_entry cache[AUTH_CACHE_ENTRIES_MAX];
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .cache_lock = PTHREAD_MUTEX_INITIALIZER,
    .dv_efd = -1,
};

/* ---- the success cache ---- */

/* now_ms - monotonic milliseconds. */
static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* cache_tag - the tag of (serial, user, password); 0 when they are too long to be cached.
 * Never 0 otherwise (0 marks an empty entry). */
static uint64_t cache_tag(uint64_t serial, const char *user, const char *password)
{
    unsigned char in[TAG_INPUT_BYTES_MAX];
    size_t ulen = strnlen(user, PASSWD_USER_BYTES_MAX + 1);
    size_t plen = strnlen(password, PASSWD_PASSWORD_BYTES_MAX + 1);
    uint64_t tag;

    if (ulen > PASSWD_USER_BYTES_MAX || plen > PASSWD_PASSWORD_BYTES_MAX)
        return 0;
    for (int i = 0; i < 8; i++)
        in[i] = (unsigned char)(serial >> (8 * i));
    memcpy(in + 8, user, ulen);
    in[8 + ulen] = '\0';          /* "ab"+"c" and "a"+"bc" differ */
    memcpy(in + 8 + ulen + 1, password, plen);
    tag = siphash24(pool.key, in, 8 + ulen + 1 + plen);
    explicit_bzero(in, sizeof(in));
    return tag ? tag : 1;
}

/* cache_bucket - the first entry of the bucket of tag. */
static struct cache_entry *cache_bucket(uint64_t tag)
{
    return &pool.cache[(tag >> 32) % CACHE_BUCKETS * AUTH_CACHE_WAYS];
}

/* cache_has - whether tag is cached and fresh. */
static bool cache_has(uint64_t tag)
{
    struct cache_entry *b = cache_bucket(tag);
    uint64_t now = now_ms();
    bool hit = false;

    pthread_mutex_lock(&pool.cache_lock);
    for (int i = 0; i < AUTH_CACHE_WAYS; i++)
        if (b[i].tag == tag && b[i].expires_ms > now)
            hit = true;
    pthread_mutex_unlock(&pool.cache_lock);
    return hit;
}

/* cache_put - remember tag, replacing itself or the entry of its bucket that expires first. */
static void cache_put(uint64_t tag)
{
    struct cache_entry *b = cache_bucket(tag), *victim = &b[0];

    pthread_mutex_lock(&pool.cache_lock);
    for (int i = 0; i < AUTH_CACHE_WAYS; i++) {
        if (b[i].tag == tag) {
            victim = &b[i];
            break;
        }
        if (b[i].expires_ms < victim->expires_ms)
            victim = &b[i];
    }
    victim->tag = tag;
    victim->expires_ms = now_ms() + pool.cfg.cache_ttl_ms;
    pthread_mutex_unlock(&pool.cache_lock);
}

/* auth_cache_check - a fresh success for db, user, password? */
bool auth_cache_check(const struct passwd_db *db, const char *user, const char *password)
{
    if (!pool.started || !pool.cfg.cache_ttl_ms)
        return false;
    uint64_t tag = cache_tag(passwd_db_serial(db), user, password);
    return tag && cache_has(tag);
}

/* dovecot_serial - the cache's number for the Dovecot socket at path (see the top). */
static uint64_t dovecot_serial(const char *path)
{
    size_t len = strnlen(path, DOVECOT_SOCKET_PATH_BYTES_MAX);

    return siphash24(pool.key, (const unsigned char *)path, len) | DOVECOT_SERIAL_BIT;
}

/* auth_cache_check_dovecot - a fresh success for the socket at path, user, password? */
bool auth_cache_check_dovecot(const char *socket_path, const char *user, const char *password)
{
    if (!pool.started || !pool.cfg.cache_ttl_ms || !socket_path[0])
        return false;
    uint64_t tag = cache_tag(dovecot_serial(socket_path), user, password);
    return tag && cache_has(tag);
}

/* auth_cache_flush - forget all. */
void auth_cache_flush(void)
{
    pthread_mutex_lock(&pool.cache_lock);
    memset(pool.cache, 0, sizeof(pool.cache));
    pthread_mutex_unlock(&pool.cache_lock);
}

/* ---- requests ---- */

/* finish - wipe r, drop the pool's database reference, give r back to its worker. */
static void finish(struct auth_req *r, enum auth_status status)
{
    struct done_list *d = &pool.done[r->worker];
    bool was_empty;

    explicit_bzero(r->password, sizeof(r->password));
    passwd_db_unref(r->db);
    r->db = NULL;
    r->status = status;
    r->next = NULL;

    pthread_mutex_lock(&d->lock);
    was_empty = !d->head;
    if (d->tail)
        d->tail->next = r;
    else
        d->head = r;
    d->tail = r;
    pthread_mutex_unlock(&d->lock);

    if (was_empty) {
        uint64_t one = 1;
        if (write(d->efd, &one, sizeof(one)) != sizeof(one))  /* only at a 2^64 - 1 count */
            log_event(LOG_ERROR, "event=auth_wake_failed worker=%u err=%s", r->worker,
                      strerror(errno));
    }
}

/* check - the verdict on r (a helper's work). */
static enum auth_status check(struct auth_req *r)
{
    uint64_t tag = 0;
    int v;

    if (pool.cfg.cache_ttl_ms) {
        tag = cache_tag(r->db_serial, r->user, r->password);
        if (tag && cache_has(tag)) {     /* the same login was in the queue twice */
            r->cached = true;
            return AUTH_OK;
        }
    }
    const struct passwd_entry *e = passwd_find(r->db, r->user);
    if (!e) {
        passwd_verify_dummy(r->password);
        return AUTH_REJECTED;
    }
    v = passwd_verify(e, r->password);
    if (v < 0) {
        log_event(LOG_ERROR, "event=auth_hash_failed user=%s scheme=%s line=%u err=%s",
                  log_q(r->user), passwd_scheme_name(e->scheme), e->line, strerror(-v));
        return AUTH_ERROR;
    }
    if (!v)
        return AUTH_REJECTED;
    if (tag)
        cache_put(tag);
    return AUTH_OK;
}

/* helper_main - take requests until stopping, check each, post it back. */
static void *helper_main(void *arg)
{
    for (;;) {
        struct auth_req *r;

        pthread_mutex_lock(&pool.lock);
        while (!pool.head && !pool.stopping)
            pthread_cond_wait(&pool.cond, &pool.lock);
        r = pool.head;
        if (!r) {
            pthread_mutex_unlock(&pool.lock);
            return NULL;
        }
        pool.head = r->next;
        if (!pool.head)
            pool.tail = NULL;
        pool.pending--;
        pthread_mutex_unlock(&pool.lock);

        finish(r, check(r));
    }
}

/* ---- the Dovecot helper ---- */

/* dv_wake - make the Dovecot helper look at its queue (or notice the stop). */
static void dv_wake(void)
{
    uint64_t one = 1;

    if (pool.dv_efd >= 0 && write(pool.dv_efd, &one, sizeof(one)) != sizeof(one))
        log_event(LOG_ERROR, "event=auth_wake_failed helper=dovecot err=%s", strerror(errno));
}

/* dv_drop - close the connection and give every request in flight back with status. why
 * (a reason word, with err when it is an errno) is logged unless it is NULL (a stop); an
 * idle connection that Dovecot closed (a restart) is only news. */
static void dv_drop(struct dv_helper *h, enum auth_status status, const char *why, int err)
{
    if (why)
        log_event(h->count || err != -ECONNRESET ? LOG_ERROR : LOG_INFO,
                  "event=dovecot_disconnected path=%s reason=%s err=%s inflight=%u",
                  log_q(h->conn.path), why, err ? strerror(-err) : "none", h->count);
    for (unsigned i = 0; i < h->count; i++)
        finish(h->slots[i].r, status);
    h->count = 0;
    dovecot_client_close(&h->conn);
}

/* dv_take - under pool.lock: unlink the queued requests the helper can send now, oldest
 * first: as many as there is room in flight for, and while requests are in flight only
 * those for the connection's path (a request for another path waits until they are done). */
static struct auth_req *dv_take(struct dv_helper *h)
{
    struct auth_req *batch = NULL, **tail = &batch;
    const char *path = h->count ? h->conn.path : NULL;
    unsigned room = AUTH_DOVECOT_INFLIGHT_MAX - h->count;

    while (room && pool.dv_head) {
        struct auth_req *r = pool.dv_head;
        if (path && strcmp(r->dovecot_socket, path) != 0)
            break;
        path = r->dovecot_socket;
        pool.dv_head = r->next;
        if (!pool.dv_head)
            pool.dv_tail = NULL;
        pool.pending--;
        r->next = NULL;
        *tail = r;
        tail = &r->next;
        room--;
    }
    return batch;
}

/* dv_connect - (re)connect to path; logs Dovecot going down and coming back once each. */
static int dv_connect(struct dv_helper *h, const char *path)
{
    int err = dovecot_client_connect(&h->conn, path);

    if (err && !h->down)
        log_event(LOG_ERROR, "event=dovecot_down path=%s err=%s", log_q(path), strerror(-err));
    else if (!err)
        log_event(LOG_INFO, "event=%s path=%s", h->down ? "dovecot_up" : "dovecot_connected",
                  log_q(path));
    h->down = err != 0;
    return err;
}

/* dv_send_one - send r on the connection to path, connecting first when needed; a
 * connection that was idle and fails at once is reopened and tried once more. 0 and the id,
 * or -errno (-EINVAL: r cannot be put in a line; the connection is still good). */
static int dv_send_one(struct dv_helper *h, struct auth_req *r, const char *path,
                       uint32_t *id)
{
    bool fresh = false;
    int err;

    if (dovecot_client_fd(&h->conn) < 0 || strcmp(h->conn.path, path) != 0) {
        err = dv_connect(h, path);
        if (err)
            return err;
        fresh = true;
    }
    err = dovecot_client_send_auth(&h->conn, r->user, strlen(r->user), r->password,
                                   strlen(r->password), r->client_ip, id);
    if (err && err != -EINVAL && !fresh && h->count == 0) {
        err = dv_connect(h, path);
        if (!err)
            err = dovecot_client_send_auth(&h->conn, r->user, strlen(r->user), r->password,
                                           strlen(r->password), r->client_ip, id);
    }
    return err;
}

/* dv_send - each request of batch (all for one path): answered from the cache, or sent and
 * put in flight, or given back AUTH_ERROR when Dovecot cannot be reached. */
static void dv_send(struct dv_helper *h, struct auth_req *batch)
{
    char path[DOVECOT_SOCKET_PATH_BYTES_MAX];
    int down = 0;                 /* the connect failed: fail the rest of the batch too */

    memcpy(path, batch->dovecot_socket, sizeof(path));   /* batch goes back to its owners */
    for (struct auth_req *r = batch, *next; r; r = next) {
        uint64_t tag = 0;
        uint32_t id = 0;
        int err;

        next = r->next;
        if (pool.cfg.cache_ttl_ms) {
            tag = cache_tag(r->db_serial, r->user, r->password);
            if (tag && cache_has(tag)) {   /* the same login was in the queue twice */
                r->cached = true;
                finish(r, AUTH_OK);
                continue;
            }
        }
        err = down ? down : dv_send_one(h, r, path, &id);
        explicit_bzero(r->password, sizeof(r->password));
        if (err == -EINVAL) {
            log_event(LOG_ERROR, "event=dovecot_bad_request user=%s", log_q(r->user));
            finish(r, AUTH_ERROR);
            continue;
        }
        if (err) {
            finish(r, AUTH_ERROR);
            if (!down && dovecot_client_fd(&h->conn) >= 0)
                dv_drop(h, AUTH_ERROR, "send_failed", err);
            down = err;
            continue;
        }
        h->slots[h->count++] = (struct dv_slot){
            .r = r, .id = id, .tag = tag,
            .deadline_ms = now_ms() + pool.cfg.dovecot_reply_timeout_ms,
        };
    }
}

/* dv_answer - give the request in flight at slot i back as reply says; false when the reply
 * puts the connection out of step (the caller drops it). */
static bool dv_answer(struct dv_helper *h, unsigned i, const struct dovecot_reply *rep)
{
    struct dv_slot s = h->slots[i];

    h->slots[i] = h->slots[--h->count];
    switch (dovecot_reply_verdict(rep)) {
    case DOVECOT_GRANTED:
        if (s.tag)
            cache_put(s.tag);
        finish(s.r, AUTH_OK);
        return true;
    case DOVECOT_DENIED:
        if (rep->nologin || rep->proxy)
            log_event(LOG_INFO, "event=auth_denied backend=dovecot user=%s reason=%s",
                      log_q(s.r->user), rep->nologin ? "nologin" : "proxy");
        finish(s.r, AUTH_REJECTED);
        return true;
    case DOVECOT_TEMPFAIL:
        log_event(LOG_WARN, "event=auth_backend_failed backend=dovecot user=%s reason=temp_fail",
                  log_q(s.r->user));
        finish(s.r, AUTH_ERROR);
        return true;
    case DOVECOT_PROTOCOL:
        break;
    }
    finish(s.r, AUTH_ERROR);
    return false;
}

/* dv_input - read what Dovecot sent and give each answered request back. */
static void dv_input(struct dv_helper *h)
{
    struct dovecot_reply rep;
    int got = dovecot_client_read(&h->conn);

    if (got == -EAGAIN)
        return;
    if (got < 0) {
        dv_drop(h, AUTH_ERROR, got == -ECONNRESET ? "closed" :
                got == -EMSGSIZE ? "line_too_long" : "read_failed", got);
        return;
    }
    while ((got = dovecot_client_reply(&h->conn, &rep)) == 1) {
        unsigned i = 0;
        while (i < h->count && h->slots[i].id != rep.id)
            i++;
        if (i == h->count) {
            dv_drop(h, AUTH_ERROR, "unknown_id", -EPROTO);
            return;
        }
        if (!dv_answer(h, i, &rep)) {   /* that request is back already */
            dv_drop(h, AUTH_ERROR, "unexpected_cont", -EPROTO);
            return;
        }
    }
    if (got < 0)
        dv_drop(h, AUTH_ERROR, got == -EMSGSIZE ? "line_too_long" : "malformed_reply", got);
}

/* dv_wait - sleep until the queue may have work, Dovecot sent something, or the oldest
 * request in flight is due; then handle what came and what expired. */
static void dv_wait(struct dv_helper *h)
{
    struct pollfd p[2] = {
        { .fd = pool.dv_efd, .events = POLLIN },
        { .fd = dovecot_client_fd(&h->conn), .events = POLLIN },
    };
    nfds_t n = p[1].fd >= 0 ? 2 : 1;   /* an idle connection too: see it close */
    int timeout = -1;
    uint64_t now = now_ms();

    for (unsigned i = 0; i < h->count; i++) {
        uint64_t left = h->slots[i].deadline_ms > now ? h->slots[i].deadline_ms - now : 0;
        if (left > INT_MAX)
            left = INT_MAX;
        if (timeout < 0 || left < (uint64_t)timeout)
            timeout = (int)left;
    }
    if (poll(p, n, timeout) > 0) {
        if (p[0].revents & POLLIN) {
            uint64_t v;
            if (read(pool.dv_efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                log_event(LOG_ERROR, "event=auth_wake_failed helper=dovecot err=%s",
                          strerror(errno));
        }
        if (n == 2 && p[1].revents)
            dv_input(h);
    }
    now = now_ms();
    for (unsigned i = 0; i < h->count; i++)
        if (h->slots[i].deadline_ms <= now) {
            dv_drop(h, AUTH_ERROR, "timeout", -ETIMEDOUT);
            break;
        }
}

/* dovecot_main - take what can be sent, send it, wait for answers; until stopping, when
 * what is in flight comes back AUTH_CANCELLED. */
static void *dovecot_main(void *arg)
{
    struct dv_helper *h = arg;

    for (;;) {
        struct auth_req *batch = NULL;
        bool stopping;

        pthread_mutex_lock(&pool.lock);
        stopping = pool.stopping;
        if (!stopping)
            batch = dv_take(h);
        pthread_mutex_unlock(&pool.lock);
        if (stopping) {
            dv_drop(h, AUTH_CANCELLED, NULL, 0);
            return NULL;
        }
        if (batch)
            dv_send(h, batch);
        dv_wait(h);
    }
}

/* auth_pool_default - the settings for a relay with this many workers. */
struct auth_pool_config auth_pool_default(unsigned workers)
{
    return (struct auth_pool_config){
        .threads = 2, .workers = workers, .queue_max = AUTH_QUEUE_PENDING_MAX,
        .cache_ttl_ms = AUTH_CACHE_TTL_MS, .dovecot_threads = 1,
        .dovecot_io_timeout_ms = DOVECOT_IO_TIMEOUT_MS,
        .dovecot_reply_timeout_ms = DOVECOT_REPLY_TIMEOUT_MS,
    };
}

/* auth_pool_start - lists, eventfds, key, helpers. */
int auth_pool_start(const struct auth_pool_config *cfg)
{
    int err;

    if (pool.started || cfg->threads > AUTH_POOL_THREADS_MAX || !cfg->workers ||
        cfg->workers > AUTH_POOL_WORKERS_MAX || !cfg->queue_max ||
        cfg->queue_max > AUTH_QUEUE_PENDING_MAX || cfg->dovecot_threads > AUTH_DOVECOT_THREADS_MAX)
        return -EINVAL;
    if (getrandom(pool.key, sizeof(pool.key), 0) != sizeof(pool.key))
        return errno ? -errno : -EIO;

    pool.cfg = *cfg;
    if (!pool.cfg.dovecot_io_timeout_ms)
        pool.cfg.dovecot_io_timeout_ms = DOVECOT_IO_TIMEOUT_MS;
    if (!pool.cfg.dovecot_reply_timeout_ms)
        pool.cfg.dovecot_reply_timeout_ms = DOVECOT_REPLY_TIMEOUT_MS;
    pool.head = pool.tail = NULL;
    pool.dv_head = pool.dv_tail = NULL;
    pool.dv_running = false;
    pool.dv_efd = -1;
    pool.pending = 0;
    pool.stopping = false;
    pool.thread_count = 0;
    auth_cache_flush();
    pool.done = rr_calloc(cfg->workers, sizeof(*pool.done));
    for (unsigned w = 0; w < cfg->workers; w++) {
        pthread_mutex_init(&pool.done[w].lock, NULL);
        pool.done[w].efd = -1;
    }
    pool.started = true;          /* from here auth_pool_free() undoes it all */
    for (unsigned w = 0; w < cfg->workers; w++) {
        pool.done[w].efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (pool.done[w].efd < 0) {
            err = -errno;
            goto err;
        }
    }
    for (unsigned i = 0; i < cfg->threads; i++) {
        err = -pthread_create(&pool.threads[i], NULL, helper_main, NULL);
        if (err)
            goto err;
        pool.thread_count++;
    }
    if (cfg->dovecot_threads) {
        pool.dv_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (pool.dv_efd < 0) {
            err = -errno;
            goto err;
        }
        pool.dv = rr_calloc(1, sizeof(*pool.dv));
        dovecot_client_init(&pool.dv->conn, pool.cfg.dovecot_io_timeout_ms);
        err = -pthread_create(&pool.dv_thread, NULL, dovecot_main, pool.dv);
        if (err)
            goto err;
        pool.dv_running = true;
    }
    return 0;

err:
    auth_pool_stop();
    auth_pool_free();
    return err;
}

/* auth_pool_stop - refuse, cancel the queue, join the helpers. */
void auth_pool_stop(void)
{
    struct auth_req *queued;

    if (!pool.started)
        return;
    pthread_mutex_lock(&pool.lock);
    pool.stopping = true;
    queued = pool.head;
    if (pool.tail)
        pool.tail->next = pool.dv_head;
    else
        queued = pool.dv_head;
    pool.head = pool.tail = pool.dv_head = pool.dv_tail = NULL;
    pool.pending = 0;
    pthread_cond_broadcast(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
    dv_wake();

    while (queued) {
        struct auth_req *next = queued->next;
        finish(queued, AUTH_CANCELLED);
        queued = next;
    }
    for (unsigned i = 0; i < pool.thread_count; i++)
        pthread_join(pool.threads[i], NULL);
    pool.thread_count = 0;
    if (pool.dv_running)
        pthread_join(pool.dv_thread, NULL);
    pool.dv_running = false;
}

/* auth_pool_free - eventfds and lists; the requests on them stay the callers'. */
void auth_pool_free(void)
{
    if (!pool.started)
        return;
    for (unsigned w = 0; w < pool.cfg.workers; w++) {
        if (pool.done[w].efd >= 0)
            close(pool.done[w].efd);
        pthread_mutex_destroy(&pool.done[w].lock);
    }
    free(pool.done);
    pool.done = NULL;
    if (pool.dv_efd >= 0)
        close(pool.dv_efd);
    pool.dv_efd = -1;
    free(pool.dv);
    pool.dv = NULL;
    auth_cache_flush();
    explicit_bzero(pool.key, sizeof(pool.key));
    pool.started = false;
}

/* auth_req_init - copy user and password into r. */
int auth_req_init(struct auth_req *r, struct passwd_db *db, unsigned worker, uint64_t cookie,
                  const char *user, size_t user_len, const char *password, size_t password_len)
{
    if (!user_len || user_len > PASSWD_USER_BYTES_MAX || memchr(user, '\0', user_len) ||
        password_len > PASSWD_PASSWORD_BYTES_MAX || memchr(password, '\0', password_len))
        return -EINVAL;
    memset(r, 0, offsetof(struct auth_req, user));
    r->db = db;
    r->worker = worker;
    r->cookie = cookie;
    r->status = AUTH_PENDING;
    memcpy(r->user, user, user_len);
    r->user[user_len] = '\0';
    memcpy(r->password, password, password_len);
    r->password[password_len] = '\0';
    return 0;
}

/* auth_req_init_dovecot - check the path and address, then as auth_req_init(). */
int auth_req_init_dovecot(struct auth_req *r, const char *socket_path, const char *client_ip,
                          unsigned worker, uint64_t cookie, const char *user, size_t user_len,
                          const char *password, size_t password_len)
{
    size_t plen = strnlen(socket_path, DOVECOT_SOCKET_PATH_BYTES_MAX);
    size_t ilen = client_ip ? strnlen(client_ip, DOVECOT_IP_BYTES_MAX) : 0;
    unsigned char addr[16];
    int err;

    if (!plen)
        return -EINVAL;
    if (plen >= DOVECOT_SOCKET_PATH_BYTES_MAX)
        return -ENAMETOOLONG;
    if (ilen >= DOVECOT_IP_BYTES_MAX ||
        (ilen && inet_pton(AF_INET, client_ip, addr) != 1 &&
         inet_pton(AF_INET6, client_ip, addr) != 1))
        return -EINVAL;
    err = auth_req_init(r, NULL, worker, cookie, user, user_len, password, password_len);
    if (err)
        return err;
    memcpy(r->dovecot_socket, socket_path, plen + 1);
    if (ilen)
        memcpy(r->client_ip, client_ip, ilen + 1);
    return 0;
}

/* auth_pool_submit - queue r on its backend's queue, bounded. */
int auth_pool_submit(struct auth_req *r)
{
    bool dovecot = r->dovecot_socket[0] != '\0';
    int err = 0;

    if (!pool.started || r->worker >= pool.cfg.workers || !r->db == !dovecot) {
        explicit_bzero(r->password, sizeof(r->password));
        return pool.started ? -EINVAL : -EAGAIN;
    }
    r->next = NULL;
    r->status = AUTH_PENDING;
    r->cached = false;
    r->db_serial = dovecot ? dovecot_serial(r->dovecot_socket) : passwd_db_serial(r->db);

    pthread_mutex_lock(&pool.lock);
    if (pool.stopping || pool.pending >= pool.cfg.queue_max) {
        err = -EAGAIN;
    } else if (dovecot) {
        if (pool.dv_tail)
            pool.dv_tail->next = r;
        else
            pool.dv_head = r;
        pool.dv_tail = r;
        pool.pending++;
    } else {
        passwd_db_ref(r->db);
        if (pool.tail)
            pool.tail->next = r;
        else
            pool.head = r;
        pool.tail = r;
        pool.pending++;
        pthread_cond_signal(&pool.cond);
    }
    pthread_mutex_unlock(&pool.lock);
    if (err)
        explicit_bzero(r->password, sizeof(r->password));
    else if (dovecot)
        dv_wake();
    return err;
}

/* auth_pool_worker_fd - worker's eventfd, -1 when out of range or not started. */
int auth_pool_worker_fd(unsigned worker)
{
    return pool.started && worker < pool.cfg.workers ? pool.done[worker].efd : -1;
}

/* auth_pool_take_done - the whole done list of worker. */
struct auth_req *auth_pool_take_done(unsigned worker)
{
    struct auth_req *list;

    if (!pool.started || worker >= pool.cfg.workers)
        return NULL;
    pthread_mutex_lock(&pool.done[worker].lock);
    list = pool.done[worker].head;
    pool.done[worker].head = pool.done[worker].tail = NULL;
    pthread_mutex_unlock(&pool.done[worker].lock);
    return list;
}

/* auth_pool_pending - queue length. */
unsigned auth_pool_pending(void)
{
    unsigned n;

    pthread_mutex_lock(&pool.lock);
    n = pool.pending;
    pthread_mutex_unlock(&pool.lock);
    return n;
}
