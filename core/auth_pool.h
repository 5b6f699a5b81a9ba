/*
 * auth_pool.h - password checks off the rings: a few helper threads run passwd_verify() and
 * post each result back to the worker that asked, plus a short-lived cache of successes.
 * A request goes to one of two backends:
 *   - the passwd-file database ([auth] passwd_file): checked by the helpers;
 *   - a Dovecot auth socket ([auth] dovecot_socket): asked by the Dovecot helper, one
 *     connection with up to AUTH_DOVECOT_INFLIGHT_MAX requests in flight (core/dovecot_auth.h).
 *
 * A worker's side, in order:
 *   1. A recent success? Then the login is good, at once:
 *        cfg->dovecot_socket[0] set:  auth_cache_check_dovecot(cfg->dovecot_socket, user, pass)
 *        else:                        auth_cache_check(db, user, pass)
 *   2. Fill a request it owns (in its session), then auth_pool_submit() it; -EAGAIN means the
 *      queue is full: answer "454 4.7.0" and free nothing.
 *        cfg->dovecot_socket[0] set:  auth_req_init_dovecot(r, cfg->dovecot_socket, client_ip,
 *                                                            worker, cookie, user, ..., pass, ...)
 *        else:                        auth_req_init(r, db, worker, cookie, user, ..., pass, ...)
 *      The status that comes back means the same for both: AUTH_OK, AUTH_REJECTED ("535
 *      5.7.8", counts as a failure), AUTH_ERROR ("454 4.7.0", temporary: Dovecot is down or
 *      said temp_fail; not a failure of the client's), AUTH_CANCELLED (shutting down).
 *   3. keep an io_uring read of 8 bytes armed on auth_pool_worker_fd(id); when it completes,
 *      auth_pool_take_done(id) and walk the list; re-arm the read.
 * A session must not be freed while its request is in the pool: it waits for it (a zombie).
 *
 * Shutdown: auth_pool_stop() (after which every request is back on a done list, those never
 * started, and those Dovecot had not answered yet, with AUTH_CANCELLED), the workers drain,
 * then auth_pool_free().
 */
#ifndef RR_AUTH_POOL_H
#define RR_AUTH_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dovecot_auth.h"
#include "core/passwd.h"

#define AUTH_POOL_THREADS_MAX   16     /* helper threads */
#define AUTH_POOL_WORKERS_MAX   256    /* completion targets */
#define AUTH_QUEUE_PENDING_MAX  4096   /* requests waiting for a helper, default bound */
#define AUTH_CACHE_TTL_MS       60000  /* how long a success is remembered, default */
#define AUTH_CACHE_ENTRIES_MAX  4096   /* remembered successes (power of two) */
#define AUTH_CACHE_WAYS         4      /* entries of one cache bucket */
#define AUTH_DOVECOT_THREADS_MAX  1    /* one connection carries many requests, as each of
                                          Dovecot's own login processes has one */
#define AUTH_DOVECOT_INFLIGHT_MAX 128  /* requests sent to Dovecot and not answered yet */

enum auth_status {
    AUTH_PENDING = 0,             /* in the pool */
    AUTH_OK,                      /* the password matches */
    AUTH_REJECTED,                /* unknown user or wrong password (not told apart) */
    AUTH_CANCELLED,               /* the pool stopped before a helper took it (or before
                                     Dovecot answered) */
    AUTH_ERROR,                   /* the hash could not be computed, Dovecot could not be
                                     asked or said temp_fail (logged): try again later */
};

/* One password check. Owned by the worker that submits it, lent to the pool until it comes
 * back from auth_pool_take_done(); the pool allocates nothing per request. Exactly one of
 * db and dovecot_socket[0] is set. */
struct auth_req {
    struct auth_req *next;        /* pool's link (queue, then done list) */
    struct passwd_db *db;         /* in: the database; the pool holds its own reference
                                     while the request runs, and sets this to NULL when done */
    uint64_t db_serial;           /* out: passwd_db_serial() of db, or the number the cache
                                     keys the Dovecot socket path on */
    char dovecot_socket[DOVECOT_SOCKET_PATH_BYTES_MAX]; /* in: the Dovecot auth socket, a
                                     copy (a reload may change the configuration meanwhile);
                                     "" for db */
    char client_ip[DOVECOT_IP_BYTES_MAX]; /* in: the client's address as text, for Dovecot's
                                     rip= (its penalty and logs); "" when unknown */
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
    unsigned dovecot_threads;     /* Dovecot helpers, 0..AUTH_DOVECOT_THREADS_MAX (0: Dovecot
                                     requests wait in the queue until stopped) */
    unsigned dovecot_io_timeout_ms;    /* connect + handshake, each send;
                                          0 = DOVECOT_IO_TIMEOUT_MS */
    unsigned dovecot_reply_timeout_ms; /* one answer; 0 = DOVECOT_REPLY_TIMEOUT_MS */
};

/* auth_pool_default - 2 helpers, 1 Dovecot helper, AUTH_QUEUE_PENDING_MAX, AUTH_CACHE_TTL_MS,
 * the default Dovecot timeouts, for workers. */
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

/* auth_req_init_dovecot - fill r for a check by the Dovecot auth socket at socket_path
 * (cfg->dovecot_socket; copied), for the client at client_ip (its address as text, as
 * inet_ntop() writes it; NULL or "" when unknown; copied). 0, or -EINVAL as auth_req_init()
 * or when socket_path is empty or client_ip is not an IPv4 or IPv6 address, -ENAMETOOLONG
 * when socket_path does not fit a unix socket address (then the password is not kept). */
int auth_req_init_dovecot(struct auth_req *r, const char *socket_path, const char *client_ip,
                          unsigned worker, uint64_t cookie, const char *user, size_t user_len,
                          const char *password, size_t password_len);

/* auth_pool_submit - queue r; 0, or -EAGAIN when the queue is full or the pool stopped,
 * -EINVAL when r->worker is out of range or r has no backend or two. When it fails, r->password is wiped already and r
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

/* auth_cache_check_dovecot - the same for logins checked by the Dovecot socket at
 * socket_path. Successes are keyed on the path: a reload to another socket (or to a passwd
 * file) misses. A reload that keeps the path keeps them (Dovecot's passwords are not
 * ringrelay's to know); call auth_cache_flush() on reload to forget them at once. */
bool auth_cache_check_dovecot(const char *socket_path, const char *user, const char *password);

/* auth_cache_flush - forget every cached success (a password changed, tests). */
void auth_cache_flush(void);

#endif
