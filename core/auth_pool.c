/*
 * auth_pool.c - password checks on helper threads, results posted back to the workers.
 *
 * Functions: auth_pool_default(), auth_pool_start(), auth_pool_stop(), auth_pool_free(),
 * auth_req_init(), auth_pool_submit(), auth_pool_worker_fd(), auth_pool_take_done(),
 * auth_pool_pending(), auth_cache_check(), auth_cache_flush().
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
 * Success cache: a login that succeeded is remembered for cache_ttl_ms as a 64-bit tag,
 * SipHash-2-4 under a random per-process key of (database serial, user, NUL, password), in a
 * 4-way set-associative table of AUTH_CACHE_ENTRIES_MAX tags (bounded; the entry that expires
 * first is replaced). Only successes go in: a wrong password is hashed every time, so the
 * cache never speeds up guessing. A reload gives the database a new serial: every old tag
 * misses, a changed password stops working at once. Checks run on the workers, inserts on the
 * helpers; both hash outside the lock and hold it for a few compares.
 *
 * Threads: pool.lock guards the queue, pending and stopping; done[w].lock a done list;
 * pool.cache_lock the cache. Start, stop and free are the main thread's.
 *
 * SECURITY: user and password come from the network. Both are bounded by auth_req_init();
 * the password is wiped with explicit_bzero() when the request comes back (every outcome:
 * checked, cached, cancelled, refused at submit), and so is the hashing buffer of the cache.
 * An unknown user costs a dummy hash (passwd_verify_dummy()), so timing does not tell which
 * users exist. A cache hit needs the 64-bit tag of the right password under a key the peer
 * never sees; a guess costs a full AUTH exchange. User names in logs go through log_q().
 */
#include <errno.h>
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

_Static_assert((AUTH_CACHE_ENTRIES_MAX & (AUTH_CACHE_ENTRIES_MAX - 1)) == 0,
               "cache entries must be a power of two");
_Static_assert(AUTH_CACHE_ENTRIES_MAX % AUTH_CACHE_WAYS == 0, "whole buckets");

#define CACHE_BUCKETS (AUTH_CACHE_ENTRIES_MAX / AUTH_CACHE_WAYS)
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

static struct {
    bool started;                 /* between auth_pool_start() and auth_pool_free() */
    struct auth_pool_config cfg;  /* as started */
    pthread_mutex_t lock;         /* guards the queue, pending, stopping */
    pthread_cond_t cond;          /* a request came, or stopping */
    struct auth_req *head, *tail; /* waiting for a helper, FIFO through next */
    unsigned pending;             /* requests in the queue, at most cfg.queue_max */
    bool stopping;                /* auth_pool_stop() began: refuse, helpers leave */
    pthread_t threads[AUTH_POOL_THREADS_MAX];
    unsigned thread_count;        /* helpers running */
    struct done_list *done;       /* [cfg.workers] */
    uint64_t key[2];              /* SipHash key, from getrandom() at start */
    pthread_mutex_t cache_lock;   /* guards cache */
    struct cache_entry cache[AUTH_CACHE_ENTRIES_MAX];
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .cache_lock = PTHREAD_MUTEX_INITIALIZER,
};

/* ---- SipHash-2-4 (Aumasson and Bernstein), 64-bit output ---- */

#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do {                                                         \
        v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);         \
        v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                              \
        v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                              \
        v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);         \
    } while (0)

/* load_le64 - 8 bytes, little-endian. */
static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* siphash24 - the keyed hash of len bytes at in. */
static uint64_t siphash24(const uint64_t key[2], const unsigned char *in, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ull ^ key[0], v1 = 0x646f72616e646f6dull ^ key[1];
    uint64_t v2 = 0x6c7967656e657261ull ^ key[0], v3 = 0x7465646279746573ull ^ key[1];
    uint64_t b = (uint64_t)len << 56, m;
    size_t whole = len & ~(size_t)7;

    for (size_t i = 0; i < whole; i += 8) {
        m = load_le64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t)in[whole + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

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

/* auth_pool_default - the settings for a relay with this many workers. */
struct auth_pool_config auth_pool_default(unsigned workers)
{
    return (struct auth_pool_config){
        .threads = 2, .workers = workers, .queue_max = AUTH_QUEUE_PENDING_MAX,
        .cache_ttl_ms = AUTH_CACHE_TTL_MS,
    };
}

/* auth_pool_start - lists, eventfds, key, helpers. */
int auth_pool_start(const struct auth_pool_config *cfg)
{
    int err;

    if (pool.started || cfg->threads > AUTH_POOL_THREADS_MAX || !cfg->workers ||
        cfg->workers > AUTH_POOL_WORKERS_MAX || !cfg->queue_max ||
        cfg->queue_max > AUTH_QUEUE_PENDING_MAX)
        return -EINVAL;
    if (getrandom(pool.key, sizeof(pool.key), 0) != sizeof(pool.key))
        return errno ? -errno : -EIO;

    pool.cfg = *cfg;
    pool.head = pool.tail = NULL;
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
    pool.head = pool.tail = NULL;
    pool.pending = 0;
    pthread_cond_broadcast(&pool.cond);
    pthread_mutex_unlock(&pool.lock);

    while (queued) {
        struct auth_req *next = queued->next;
        finish(queued, AUTH_CANCELLED);
        queued = next;
    }
    for (unsigned i = 0; i < pool.thread_count; i++)
        pthread_join(pool.threads[i], NULL);
    pool.thread_count = 0;
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

/* auth_pool_submit - queue r, bounded. */
int auth_pool_submit(struct auth_req *r)
{
    int err = 0;

    if (!pool.started || r->worker >= pool.cfg.workers || !r->db) {
        explicit_bzero(r->password, sizeof(r->password));
        return pool.started ? -EINVAL : -EAGAIN;
    }
    r->next = NULL;
    r->status = AUTH_PENDING;
    r->cached = false;
    r->db_serial = passwd_db_serial(r->db);

    pthread_mutex_lock(&pool.lock);
    if (pool.stopping || pool.pending >= pool.cfg.queue_max) {
        err = -EAGAIN;
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
