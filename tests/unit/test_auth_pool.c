/*
 * test_auth_pool.c - the password-check pool (core/auth_pool.c) with two fake workers: each
 * thread submits requests and drains its results through its eventfd, as a worker does with
 * an io_uring read; then the success cache, a database swapped while requests run, the queue
 * bound, and stops with requests queued or in hand. Run under ASan: a database freed too
 * early or never, or a request posted twice, is a failure.
 */
#include <crypt.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/auth_pool.h"
#include "tests/unit/check.h"

#define WORKERS 2
#define PER_WORKER 40
#define ALICE_PW "alice pw"
#define BOB_PW "bob pw"

static char dir[] = "/tmp/rr-test-auth-XXXXXX";
static char path[sizeof(dir) + 16];

/* make_db - alice with SHA512-CRYPT (cheap rounds), bob with PLAIN. */
static struct passwd_db *make_db(void)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data cd;
    int problems = 0;
    FILE *f;

    memset(&cd, 0, sizeof(cd));
    if (!crypt_gensalt_rn("$6$", 1000, NULL, 0, salt, sizeof(salt)))
        exit(2);
    f = fopen(path, "w");
    fprintf(f, "alice:{SHA512-CRYPT}%s\nbob:{PLAIN}%s\n", crypt_r(ALICE_PW, salt, &cd), BOB_PW);
    fclose(f);
    struct passwd_db *db = passwd_load(path, stderr, &problems);
    if (!db || problems)
        exit(2);
    return db;
}

/* wiped - whether the password buffer is all zero. */
static bool wiped(const struct auth_req *r)
{
    for (size_t i = 0; i < sizeof(r->password); i++)
        if (r->password[i])
            return false;
    return true;
}

/* submit - init and submit one request; returns auth_pool_submit()'s answer. */
static int submit(struct auth_req *r, struct passwd_db *db, unsigned worker, uint64_t cookie,
                  const char *user, const char *pw)
{
    if (auth_req_init(r, db, worker, cookie, user, strlen(user), pw, strlen(pw)))
        return -EINVAL;
    return auth_pool_submit(r);
}

/* drain - wait on worker's eventfd until want requests came back; calls back for each;
 * returns how many came. */
static unsigned drain(unsigned worker, unsigned want, void (*each)(struct auth_req *, void *),
                      void *arg)
{
    struct pollfd p = { .fd = auth_pool_worker_fd(worker), .events = POLLIN };
    unsigned got = 0;

    while (got < want) {
        uint64_t v;
        if (poll(&p, 1, 10000) != 1)
            break;                /* 10 s with nothing: report what came */
        if (read(p.fd, &v, sizeof(v)) != sizeof(v))
            continue;             /* woken for a list already drained: fine */
        for (struct auth_req *r = auth_pool_take_done(worker), *next; r; r = next) {
            next = r->next;
            each(r, arg);
            got++;
        }
    }
    return got;
}

/* ---- two workers ---- */

struct fake_worker {
    unsigned id;
    struct passwd_db *db;
    struct auth_req reqs[PER_WORKER];
    unsigned submitted, bad;      /* bad: results that were wrong */
};

/* expected - the verdict for request i: alice right, alice wrong, bob right, nobody. */
static enum auth_status expected(unsigned i)
{
    return i % 4 == 0 || i % 4 == 2 ? AUTH_OK : AUTH_REJECTED;
}

static void check_result(struct auth_req *r, void *arg)
{
    struct fake_worker *fw = arg;
    unsigned i = (unsigned)(r->cookie & 0xffff);

    if (r->cookie >> 16 != fw->id || r->worker != fw->id || i >= PER_WORKER ||
        r != &fw->reqs[i] || r->status != expected(i) || !wiped(r) || r->db)
        fw->bad++;
}

static void *worker_main(void *arg)
{
    struct fake_worker *fw = arg;
    static const char *const users[4] = { "alice", "alice", "bob", "nobody" };
    static const char *const pws[4] = { ALICE_PW, "wrong", BOB_PW, ALICE_PW };

    for (unsigned i = 0; i < PER_WORKER; i++)
        fw->submitted += submit(&fw->reqs[i], fw->db, fw->id, (uint64_t)fw->id << 16 | i,
                                users[i % 4], pws[i % 4]) == 0;
    unsigned got = drain(fw->id, fw->submitted, check_result, fw);
    fw->bad += got != fw->submitted;
    return NULL;
}

static void count_status(struct auth_req *r, void *arg)
{
    unsigned *counts = arg;

    counts[r->status]++;
    if (!wiped(r) || r->db)
        counts[AUTH_PENDING]++;   /* "pending" counts the badly returned */
}

static void test_workers(void)
{
    struct auth_pool_config cfg = auth_pool_default(WORKERS);
    struct fake_worker *fw = rr_calloc(WORKERS, sizeof(*fw));
    pthread_t t[WORKERS];
    struct passwd_db *db = make_db();
    struct auth_req r;
    unsigned counts[AUTH_ERROR + 1] = { 0 };

    CHECK(auth_pool_start(&cfg) == 0, "start");
    CHECK(auth_pool_start(&cfg) == -EINVAL, "started twice");
    CHECK(auth_pool_worker_fd(0) >= 0 && auth_pool_worker_fd(WORKERS) == -1, "fds");
    CHECK(!auth_cache_check(db, "alice", ALICE_PW), "cache empty at start");

    for (unsigned w = 0; w < WORKERS; w++) {
        fw[w].id = w;
        fw[w].db = db;
        pthread_create(&t[w], NULL, worker_main, &fw[w]);
    }
    for (unsigned w = 0; w < WORKERS; w++) {
        pthread_join(t[w], NULL);
        CHECK(fw[w].submitted == PER_WORKER && fw[w].bad == 0, "worker %u: %u submitted, %u bad",
              w, fw[w].submitted, fw[w].bad);
    }
    CHECK(auth_pool_pending() == 0, "queue empty");

    /* Successes are cached, failures are not; keyed by user and password. */
    CHECK(auth_cache_check(db, "alice", ALICE_PW), "alice cached");
    CHECK(auth_cache_check(db, "bob", BOB_PW), "bob cached");
    CHECK(!auth_cache_check(db, "alice", "wrong"), "wrong not cached");
    CHECK(!auth_cache_check(db, "nobody", ALICE_PW), "unknown not cached");
    CHECK(!auth_cache_check(db, "bob", ALICE_PW), "alice's password is not bob's");
    CHECK(!auth_cache_check(db, "alic", "e" ALICE_PW), "user/password boundary");

    /* The second attempt is answered from the cache, by a helper too. */
    CHECK(submit(&r, db, 1, 7, "alice", ALICE_PW) == 0, "submit again");
    memset(counts, 0, sizeof(counts));
    CHECK(drain(1, 1, count_status, counts) == 1 && counts[AUTH_OK] == 1 && r.cached &&
          !counts[AUTH_PENDING], "second attempt cached");
    CHECK(submit(&r, db, 0, 8, "alice", "wrong") == 0, "submit wrong");
    CHECK(drain(0, 1, count_status, counts) == 1 && counts[AUTH_REJECTED] == 1 && !r.cached,
          "wrong still hashed");
    auth_cache_flush();
    CHECK(!auth_cache_check(db, "alice", ALICE_PW), "flushed");

    /* A reload: the new database misses the cache, and the old one may be dropped while its
     * requests run (the pool holds a reference; ASan catches a use after free). */
    struct passwd_db *db2 = make_db();
    CHECK(submit(&r, db, 0, 9, "alice", ALICE_PW) == 0, "submit on the old db");
    passwd_free(db);              /* the main thread swaps */
    db = NULL;
    memset(counts, 0, sizeof(counts));
    CHECK(drain(0, 1, count_status, counts) == 1 && counts[AUTH_OK] == 1 && !counts[AUTH_PENDING],
          "old db request done");
    CHECK(!auth_cache_check(db2, "alice", ALICE_PW), "new db misses the cache");

    /* Refusals: bad input, a worker out of range. */
    char longuser[PASSWD_USER_BYTES_MAX + 2];
    memset(longuser, 'u', sizeof(longuser) - 1);
    longuser[sizeof(longuser) - 1] = '\0';
    CHECK(auth_req_init(&r, db2, 0, 0, longuser, strlen(longuser), "x", 1) == -EINVAL, "long user");
    CHECK(auth_req_init(&r, db2, 0, 0, "", 0, "x", 1) == -EINVAL, "empty user");
    CHECK(auth_req_init(&r, db2, 0, 0, "a", 1, "x\0y", 3) == -EINVAL, "NUL in password");
    CHECK(auth_req_init(&r, db2, 0, 0, "a\0b", 3, "x", 1) == -EINVAL, "NUL in user");
    CHECK(submit(&r, db2, WORKERS, 0, "alice", ALICE_PW) == -EINVAL && wiped(&r), "bad worker");
    CHECK(!auth_pool_take_done(0) && !auth_pool_take_done(WORKERS), "nothing left");

    auth_pool_stop();
    CHECK(submit(&r, db2, 0, 0, "alice", ALICE_PW) == -EAGAIN && wiped(&r), "after stop");
    auth_pool_free();
    passwd_free(db2);
    free(fw);
}

/* test_bound - no helpers: the queue fills, the next submit is refused, a stop cancels. */
static void test_bound(void)
{
    struct auth_pool_config cfg = { .threads = 0, .workers = 1, .queue_max = 8,
                                    .cache_ttl_ms = 1000 };
    struct auth_req reqs[9];
    struct passwd_db *db = make_db();
    unsigned counts[AUTH_ERROR + 1] = { 0 }, ok = 0;

    CHECK(auth_pool_start(&cfg) == 0, "start without helpers");
    for (unsigned i = 0; i < 8; i++)
        ok += submit(&reqs[i], db, 0, i, "alice", ALICE_PW) == 0;
    CHECK(ok == 8 && auth_pool_pending() == 8, "8 queued, %u pending", auth_pool_pending());
    CHECK(submit(&reqs[8], db, 0, 8, "alice", ALICE_PW) == -EAGAIN, "the 9th is refused");
    CHECK(wiped(&reqs[8]), "refused password wiped");
    for (unsigned i = 0; i < 8; i++)
        CHECK(!wiped(&reqs[i]) && reqs[i].status == AUTH_PENDING, "req %u still queued", i);
    passwd_free(db);              /* the queued requests keep it alive */

    auth_pool_stop();
    CHECK(auth_pool_pending() == 0, "queue emptied");
    CHECK(drain(0, 8, count_status, counts) == 8 && counts[AUTH_CANCELLED] == 8 &&
          !counts[AUTH_PENDING], "8 cancelled, wiped, unreferenced");
    auth_pool_free();
    CHECK(auth_pool_worker_fd(0) == -1, "freed");
}

/* test_stop_busy - stop while one helper hashes and the rest wait: every request comes back
 * once, checked or cancelled. */
static void test_stop_busy(void)
{
    enum { N = 32 };
    struct auth_pool_config cfg = { .threads = 1, .workers = 1, .queue_max = 64,
                                    .cache_ttl_ms = 0 };   /* no cache: each one hashes */
    struct auth_req *reqs = rr_calloc(N, sizeof(*reqs));
    struct passwd_db *db = make_db();
    unsigned counts[AUTH_ERROR + 1] = { 0 }, ok = 0;

    CHECK(auth_pool_start(&cfg) == 0, "start one helper");
    for (unsigned i = 0; i < N; i++)
        ok += submit(&reqs[i], db, 0, i, "alice", ALICE_PW) == 0;
    CHECK(ok == N, "all queued");
    auth_pool_stop();
    CHECK(drain(0, N, count_status, counts) == N, "all back");
    CHECK(counts[AUTH_OK] + counts[AUTH_CANCELLED] == N && !counts[AUTH_PENDING],
          "%u ok, %u cancelled", counts[AUTH_OK], counts[AUTH_CANCELLED]);
    CHECK(!auth_cache_check(db, "alice", ALICE_PW), "cache off");
    CHECK(!auth_pool_take_done(0), "each once");
    auth_pool_free();
    passwd_free(db);
    free(reqs);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror(dir);
        return 2;
    }
    snprintf(path, sizeof(path), "%s/passwd", dir);
    test_workers();
    test_bound();
    test_stop_busy();
    unlink(path);
    rmdir(dir);
    return check_done("test_auth_pool");
}
