/*
 * auth_pool.h - password checks off the rings: a few helper threads run passwd_verify() and
 * post each result back to the worker that asked, plus a short-lived cache of successes.
 *
 * A worker's side, in order:
 *   1. auth_cache_check(db, user, pass): a recent success? Then the login is good, at once.
 *   2. auth_req_init() a request it owns (in its session), auth_pool_submit() it; -EAGAIN
 *      means the queue is full: answer "454 4.7.0" and free nothing.
 *   3. keep an io_uring read of 8 bytes armed on auth_pool_worker_fd(id); when it completes,
 *      auth_pool_take_done(id) and walk the list; re-arm the read.
 * A session must not be freed while its request is in the pool: it waits for it (a zombie).
 *
 * Shutdown: auth_pool_stop() (after which every request is back on a done list, those never
 * started with AUTH_CANCELLED), the workers drain, then auth_pool_free().
 */
#ifndef RR_AUTH_POOL_H
#define RR_AUTH_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/passwd.h"

#define AUTH_POOL_THREADS_MAX   16     /* helper threads */
#define AUTH_POOL_WORKERS_MAX   256    /* completion targets */
#define AUTH_QUEUE_PENDING_MAX  4096   /* requests waiting for a helper, default bound */
#define AUTH_CACHE_TTL_MS       60000  /* how long a success is remembered, default */
#define AUTH_CACHE_ENTRIES_MAX  4096   /* remembered successes (power of two) */
#define AUTH_CACHE_WAYS         4      /* entries of one cache bucket */

enum auth_status {
    AUTH_PENDING = 0,             /* in the pool */
    AUTH_OK,                      /* the password matches */
    AUTH_REJECTED,                /* unknown user or wrong password (not told apart) */
    AUTH_CANCELLED,               /* the pool stopped before a helper took it */
    AUTH_ERROR,                   /* the hash could not be computed (logged) */
};

/* One password check. Owned by the worker that submits it, lent to the pool until it comes
 * back from auth_pool_take_done(); the pool allocates nothing per request. */
struct auth_req {
    struct auth_req *next;        /* pool's link (queue, then done list) */
    struct passwd_db *db;         /* in: the database; the pool holds its own reference
                                     while the request runs, and sets this to NULL when done */
    uint64_t db_serial;           /* out: passwd_db_serial() of db */
    unsigned worker;              /* in: whose done list gets it back */
    uint64_t cookie;              /* in: the caller's (session slot and generation) */
    enum auth_status status;      /* out */
    bool cached;                  /* out: AUTH_OK came from the cache, no hash was run */
    char user[PASSWD_USER_BYTES_MAX + 1];         /* in */
    char password[PASSWD_PASSWORD_BYTES_MAX + 1]; /* in: wiped (explicit_bzero) when the
                                     request comes back or is refused */
};

/* Pool settings. */
struct auth_pool_config {
    unsigned threads;             /* helpers, 0..AUTH_POOL_THREADS_MAX (0: requests wait in
                                     the queue until stopped; for tests) */
    unsigned workers;             /* completion targets, 1..AUTH_POOL_WORKERS_MAX */
    unsigned queue_max;           /* pending requests, 1..AUTH_QUEUE_PENDING_MAX */
    unsigned cache_ttl_ms;        /* life of a cached success; 0 turns the cache off */
};

/* auth_pool_default - 2 helpers, AUTH_QUEUE_PENDING_MAX, AUTH_CACHE_TTL_MS, for workers. */
struct auth_pool_config auth_pool_default(unsigned workers);

/* auth_pool_start - create the done lists, eventfds, cache key and helpers; 0 or -errno.
 * Main thread, once (again only after auth_pool_free()). */
int auth_pool_start(const struct auth_pool_config *cfg);

/* auth_pool_stop - refuse new requests, give the queued ones back as AUTH_CANCELLED, wait
 * for the helpers to finish the one in hand (a hash is not interrupted) and join them. */
void auth_pool_stop(void);

/* auth_pool_free - close the eventfds and forget the done lists (requests left on them are
 * the callers': nothing is freed). After auth_pool_stop(), once the workers are gone. */
void auth_pool_free(void);

/* auth_req_init - fill r for user and password (len bytes each; neither may hold a NUL);
 * 0, or -EINVAL when one is empty, too long or holds a NUL (then the password is not kept).
 * Nothing is taken: db gets its reference at submit. */
int auth_req_init(struct auth_req *r, struct passwd_db *db, unsigned worker, uint64_t cookie,
                  const char *user, size_t user_len, const char *password, size_t password_len);

/* auth_pool_submit - queue r; 0, or -EAGAIN when the queue is full or the pool stopped,
 * -EINVAL when r->worker is out of range. When it fails, r->password is wiped already and r
 * is the caller's again. Any thread; takes a mutex for a few instructions. */
int auth_pool_submit(struct auth_req *r);

/* auth_pool_worker_fd - the eventfd (non-blocking) that becomes readable when requests came
 * back to worker; read 8 bytes from it, then auth_pool_take_done(). */
int auth_pool_worker_fd(unsigned worker);

/* auth_pool_take_done - every request back for worker, oldest first, linked through next;
 * NULL when there is none. */
struct auth_req *auth_pool_take_done(unsigned worker);

/* auth_pool_pending - requests queued, not yet taken by a helper (metrics, tests). */
unsigned auth_pool_pending(void);

/* auth_cache_check - whether user logged in with password against db less than the TTL ago.
 * Cheap (one keyed hash, a mutex for a few compares): may run on a worker. Only successes
 * are cached, so a miss says nothing: submit then. A new database (reload) misses. */
bool auth_cache_check(const struct passwd_db *db, const char *user, const char *password);

/* auth_cache_flush - forget every cached success (a password changed, tests). */
void auth_cache_flush(void);

#endif
