/*
 * engine.c - the worker threads: ring set-up, the completion dispatcher, receive buffers,
 * the timer wheel, configuration hand-over and the orderly stop.
 *
 * Functions: engine_start(), engine_wake(), engine_join() for the main thread; engine_sqe(),
 * engine_buf_release(), engine_timer_set() for code running on a worker.
 *
 * A worker is a loop: submit what is queued and wait for one completion, then dispatch every
 * completion that is ready by its op (see engine.h), then hand the receive buffers freed in
 * that batch back to the kernel in one step. Set-up happens in the worker thread itself
 * (IORING_SETUP_SINGLE_ISSUER and DEFER_TASKRUN want the ring created by its only user);
 * two barriers hold the workers while the main thread drops privileges, so no session is
 * ever served with root rights.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/auth_pool.h"
#include "core/control.h"
#include "core/engine.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/queue.h"
#include "core/spool_writer.h"
#include "net/dns.h"
#include "net/http_metrics.h"
#include "net/smtp_auth.h"
#include "net/smtp_server.h"
#include "tls/tls.h"

#define ENGINE_STOP_GRACE_MS 30000   /* sessions still busy this long after SIGTERM are closed */

struct engine_shared engine;
static pthread_barrier_t start_barrier;

/* engine_now_ms - monotonic milliseconds. */
uint64_t engine_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* now_ns - monotonic nanoseconds. */
static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* engine_sqe - next free SQE; when the queue is full, hand it to the kernel first. */
struct io_uring_sqe *engine_sqe(struct worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

    while (!sqe) {
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe;
}

/* engine_buf_release - queue buffer bid for return to the provided-buffer ring. */
void engine_buf_release(struct worker *w, uint16_t bid)
{
    if (bid >= ENGINE_BUF_COUNT) {
        w->local_free[w->local_free_count++] = bid;
        w->local_returned++;
        w->bufs[bid].queued = false;
        w->bufs[bid].off = w->bufs[bid].len = 0;
        w->bufs_out--;
        return;
    }
    io_uring_buf_ring_add(w->br, engine_buf_ptr(w, bid), ENGINE_BUF_BYTES, bid,
                          io_uring_buf_ring_mask(ENGINE_BUF_COUNT), (int)w->bufs_returned++);
    w->bufs[bid].queued = false;
    w->bufs[bid].off = w->bufs[bid].len = 0;
    w->bufs_out--;
}

/* engine_local_buf - see engine.h. */
uint16_t engine_local_buf(struct worker *w)
{
    if (!w->local_free_count)
        return ENGINE_BUF_NONE;
    w->bufs_out++;
    return w->local_free[--w->local_free_count];
}

/* wheel_slot - the wheel slot a deadline belongs to: the first tick at or after it. */
static unsigned wheel_slot(uint64_t deadline_ms)
{
    return (unsigned)((deadline_ms + ENGINE_TICK_MS - 1) / ENGINE_TICK_MS % ENGINE_WHEEL_SLOTS);
}

/* engine_timer_set - move t to the slot of its new deadline (0 = disarm). */
void engine_timer_set(struct worker *w, struct engine_timer *t, uint64_t deadline_ms)
{
    if (t->next) {
        t->prev->next = t->next;
        t->next->prev = t->prev;
        t->next = t->prev = NULL;
    }
    t->deadline_ms = deadline_ms;
    if (deadline_ms) {
        struct engine_timer *head = &w->wheel[wheel_slot(deadline_ms)];
        t->next = head->next;
        t->prev = head;
        head->next->prev = t;
        head->next = t;
    }
}

/* arm_tick - the 1 s timeout that drives the wheel. */
static void arm_tick(struct worker *w)
{
    struct io_uring_sqe *sqe = engine_sqe(w);

    w->tick_ts = (struct __kernel_timespec){ .tv_sec = ENGINE_TICK_MS / 1000,
                                             .tv_nsec = (ENGINE_TICK_MS % 1000) * 1000000 };
    io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_TICK, 0, 0));
}

/* run_wheel - fire every timer whose deadline passed, visiting each slot since the last run.
 * The due timers of a slot are first moved to a local list: a fire() may disarm or re-arm
 * any other timer (a failed connection reschedules messages), and a timer it touches simply
 * leaves the local list, so the walk never follows a link that moved under it. */
static void run_wheel(struct worker *w, uint64_t *last_tick)
{
    uint64_t now_tick = w->now_ms / ENGINE_TICK_MS;
    uint64_t t = *last_tick + 1;
    struct engine_timer due;

    if (now_tick - *last_tick > ENGINE_WHEEL_SLOTS)
        t = now_tick - ENGINE_WHEEL_SLOTS + 1;
    for (; t <= now_tick; t++) {
        struct engine_timer *head = &w->wheel[t % ENGINE_WHEEL_SLOTS];
        struct engine_timer *e = head->next, *next;

        due.next = due.prev = &due;
        for (; e != head; e = next) {
            next = e->next;
            if (e->deadline_ms <= w->now_ms) {
                e->prev->next = e->next;  /* from the slot to the local list */
                e->next->prev = e->prev;
                e->next = &due;
                e->prev = due.prev;
                due.prev->next = e;
                due.prev = e;
            }
        }
        while (due.next != &due) {
            e = due.next;
            engine_timer_set(w, e, 0);
            e->fire(w, e);
        }
    }
    *last_tick = now_tick;
}

/* arm_wake - wait for the main thread's next poke. */
static void arm_wake(struct worker *w)
{
    struct io_uring_sqe *sqe = engine_sqe(w);

    io_uring_prep_read(sqe, w->wake_fd, &w->wake_value, sizeof(w->wake_value), 0);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_WAKE, 0, 0));
}

/* arm_auth - wait for password checks coming back from the auth pool: an 8-byte read of this
 * worker's eventfd (slot 0), or, when a read found it empty (-EAGAIN: the eventfd is
 * non-blocking, and the kernel may answer at once rather than wait), a poll for it (slot 1)
 * that is followed by the read. Nothing when the pool is not running. */
static void arm_auth(struct worker *w, bool poll)
{
    int fd = auth_pool_worker_fd(w->id);
    struct io_uring_sqe *sqe;

    if (fd < 0)
        return;
    sqe = engine_sqe(w);
    if (poll)
        io_uring_prep_poll_add(sqe, fd, POLLIN);
    else
        io_uring_prep_read(sqe, fd, &w->auth_value, sizeof(w->auth_value), 0);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_AUTH_DONE, poll ? 1 : 0, 0));
}

/* auth_done - the auth-pool eventfd read (slot 0) or poll (slot 1) completed. The read is
 * kept armed while the worker lives, stopping included: a session waiting for its check
 * keeps the worker from leaving until the check is back. */
static void auth_done(struct worker *w, uint32_t slot, int res)
{
    if (res < 0 && res != -EAGAIN && res != -EINTR) {
        /* Only a bug gets here (the eventfd is the pool's until after the workers end);
         * sessions would wait for their checks forever. */
        log_event(LOG_FATAL, "event=bug what=auth_eventfd worker=%u error=%s", w->id,
                  log_q(strerror(-res)));
        abort();
    }
    if (slot == 0)
        smtp_auth_worker_done(w);
    arm_auth(w, slot == 0 && res == -EAGAIN);
}

/* arm_accept - multishot accept on listening socket i. */
static void arm_accept(struct worker *w, unsigned i)
{
    struct io_uring_sqe *sqe = engine_sqe(w);

    io_uring_prep_multishot_accept(sqe, w->listen_fd[i], NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_ACCEPT, i, 0));
    w->accepts_armed++;
}

/* begin_stop - SIGTERM: no new sessions; sessions finish what they do and leave. */
static void begin_stop(struct worker *w)
{
    if (w->stopping)
        return;
    w->stopping = true;
    w->stop_deadline_ms = w->now_ms + ENGINE_STOP_GRACE_MS;
    log_event(LOG_DEBUG, "event=worker_stopping worker=%u sessions=%u", w->id, w->conn_count);
    for (unsigned i = 0; i < w->listen_count; i++) {
        if (w->listen_fd[i] < 0)
            continue;
        struct io_uring_sqe *sqe = engine_sqe(w);
        io_uring_prep_cancel64(sqe, engine_ud(OP_ACCEPT, i, 0), 0);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
        io_uring_submit(&w->ring);
        close(w->listen_fd[i]);
        w->listen_fd[i] = -1;
    }
    smtp_server_stop(w);
    queue_worker_stop(w);
    if (w->http)
        http_metrics_stop(w);
}

/* refresh_config - pick up a newly published configuration. */
static void refresh_config(struct worker *w)
{
    uint64_t gen = atomic_load_explicit(&engine.cfg_gen, memory_order_acquire);

    if (gen != w->cfg_gen) {
        w->cfg = atomic_load_explicit(&engine.cfg, memory_order_acquire);
        __atomic_store_n(&w->cfg_gen, gen, __ATOMIC_RELEASE);
        dns_worker_reload(w);  /* dns_servers may have changed */
    }
}

/* dispatch - one completion to its handler. */
static void dispatch(struct worker *w, struct io_uring_cqe *cqe, uint64_t *last_tick)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    enum engine_op op = ud_op(ud);
    uint32_t slot = ud_slot(ud);

    switch (op) {
    case OP_NONE:
        break;
    case OP_ACCEPT: {
        bool scarce = cqe->res == -EMFILE || cqe->res == -ENFILE || cqe->res == -ENOMEM ||
                      cqe->res == -ENOBUFS;
        if (cqe->res >= 0) {
            smtp_server_accept(w, w->listen_listener[slot], cqe->res);
        } else if (cqe->res != -ECANCELED && cqe->res != -EINVAL && cqe->res != -EBADF) {
            if (w->now_ms / 1000 != w->accept_error_second) {  /* one line a second */
                w->accept_error_second = w->now_ms / 1000;
                log_event(LOG_WARN, "event=accept_error worker=%u error=%s", w->id,
                          log_q(strerror(-cqe->res)));
            }
        }
        if (scarce && slot < w->listen_count && !w->listen_paused[slot]) {
            /* Out of descriptors or memory: stop accepting on this socket until the next
             * tick rather than spin on the error. */
            struct io_uring_sqe *sqe = engine_sqe(w);
            io_uring_prep_cancel64(sqe, engine_ud(OP_ACCEPT, slot, 0), 0);
            io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
            w->listen_paused[slot] = true;
        }
        if (!(cqe->flags & IORING_CQE_F_MORE)) {
            w->accepts_armed--;
            if (!w->stopping && slot < w->listen_count && w->listen_fd[slot] >= 0 &&
                !w->listen_paused[slot])
                arm_accept(w, slot);
        }
        break;
    }
    case OP_RECV:
    case OP_SEND:
    case OP_SHUTDOWN:
    case OP_GREET_TIMER:
        smtp_server_complete(w, op, slot, ud_gen(ud), cqe);
        break;
    case OP_TICK:
        for (unsigned i = 0; i < w->listen_count; i++)
            if (w->listen_paused[i] && !w->stopping && w->listen_fd[i] >= 0) {
                w->listen_paused[i] = false;
                arm_accept(w, i);
            }
        if (w->http && !w->stopping)
            http_metrics_tick(w);
        run_wheel(w, last_tick);
        spool_worker_tick(w);
        if (w->stopping && w->now_ms >= w->stop_deadline_ms) {
            smtp_server_stop_now(w);
            queue_worker_stop_now(w);
        }
        arm_tick(w);
        break;
    case OP_WAKE:
        refresh_config(w);
        control_worker_poll(w);  /* ringctl requests the main thread posted */
        if (atomic_load(&engine.stop))
            begin_stop(w);
        else
            arm_wake(w);
        break;
    case OP_AUTH_DONE:
        auth_done(w, slot, cqe->res);
        break;
    case OP_SPOOL_WRITE:
    case OP_SPOOL_BATCH:
    case OP_SPOOL_FSYNC:
    case OP_SPOOL_OPEN:
    case OP_SPOOL_HEADER:
    case OP_SPOOL_DIRSYNC:
    case OP_SPOOL_DELAY:
        spool_complete(w, op, slot, ud_gen(ud), cqe->res);
        break;
    case OP_HTTP_ACCEPT:
    case OP_HTTP_RECV:
    case OP_HTTP_SEND:
        http_metrics_complete(w, op, slot, ud_gen(ud), cqe);
        break;
    case OP_DNS_POLL:
    case OP_DNS_TIMER:
        dns_complete(w, op, slot, ud_gen(ud), cqe->res);
        break;
    case OP_OUT_CONNECT:
    case OP_OUT_RECV:
    case OP_OUT_SEND:
    case OP_OUT_READ:
    case OP_OUT_CLOSE:
    case OP_QUEUE_READ:
    case OP_QUEUE_UNLINK:
    case OP_QUEUE_DIRSYNC:
    case OP_QUEUE_APPEND:
        queue_complete(w, op, slot, ud_gen(ud), cqe->res);
        break;
    default:
        log_event(LOG_ERROR, "event=bug what=unknown_op op=%d", (int)op);
        break;
    }
}

/* setup_buffers - register the provided-buffer ring and fill it. */
static int setup_buffers(struct worker *w)
{
    struct io_uring_buf_reg reg = { 0 };
    void *ring_mem;
    int r;

    ring_mem = mmap(NULL, ENGINE_BUF_COUNT * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
                    MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (ring_mem == MAP_FAILED)
        return -errno;
    /* The local buffers follow the provided ones; pages are touched only when used. */
    w->buf_base = mmap(NULL, (size_t)(ENGINE_BUF_COUNT + ENGINE_LOCAL_BUF_COUNT) * ENGINE_BUF_BYTES,
                       PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (w->buf_base == MAP_FAILED)
        return -errno;
    reg.ring_addr = (unsigned long)ring_mem;
    reg.ring_entries = ENGINE_BUF_COUNT;
    reg.bgid = 0;
    r = io_uring_register_buf_ring(&w->ring, &reg, 0);
    if (r < 0)
        return r;
    w->br = ring_mem;
    io_uring_buf_ring_init(w->br);
    for (unsigned i = 0; i < ENGINE_BUF_COUNT; i++)
        io_uring_buf_ring_add(w->br, engine_buf_ptr(w, (uint16_t)i), ENGINE_BUF_BYTES,
                              (unsigned short)i, io_uring_buf_ring_mask(ENGINE_BUF_COUNT), (int)i);
    io_uring_buf_ring_advance(w->br, ENGINE_BUF_COUNT);
    for (unsigned i = 0; i < ENGINE_LOCAL_BUF_COUNT; i++)
        w->local_free[i] = (uint16_t)(ENGINE_BUF_COUNT + ENGINE_LOCAL_BUF_COUNT - 1 - i);
    w->local_free_count = ENGINE_LOCAL_BUF_COUNT;
    return 0;
}

/* worker_setup - everything a worker needs before its loop. 0 or -errno. */
static int worker_setup(struct worker *w)
{
    struct io_uring_params p = { 0 };
    int r;

    if (w->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(w->cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
              IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    p.cq_entries = ENGINE_CQ_ENTRIES;
    r = io_uring_queue_init_params(ENGINE_RING_ENTRIES, &w->ring, &p);
    if (r < 0) {
        /* Older kernels: retry without the 6.1 flags. */
        p.flags = IORING_SETUP_CQSIZE;
        r = io_uring_queue_init_params(ENGINE_RING_ENTRIES, &w->ring, &p);
    }
    if (r < 0)
        return r;
    w->ring_ok = true;
    r = setup_buffers(w);
    if (r < 0)
        return r;
    for (unsigned i = 0; i < ENGINE_WHEEL_SLOTS; i++)
        w->wheel[i].next = w->wheel[i].prev = &w->wheel[i];
    w->m = aligned_alloc(RR_CACHELINE, sizeof(struct metrics));
    if (!w->m)
        rr_oom(sizeof(struct metrics));
    memset(w->m, 0, sizeof(*w->m));
    r = control_worker_init(w);
    if (r < 0)
        return r;
    r = smtp_server_init(w);
    if (r < 0)
        return r;
    r = dns_worker_init(w);  /* reads resolv.conf: set-up is the time for that */
    if (r < 0)
        return r;
    r = queue_worker_init(w, engine.recovered);  /* before the spool announces a segment */
    if (r < 0)
        return r;
    return spool_worker_init(w);
}

/* worker_main - set up, wait for the go, run the loop until stopped and drained. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t last_tick;

    w->exit_error = worker_setup(w);
    pthread_barrier_wait(&start_barrier);  /* 1: set-up done, main drops privileges */
    pthread_barrier_wait(&start_barrier);  /* 2: go */
    if (w->exit_error || atomic_load(&engine.stop))
        goto out;

    w->now_ms = engine_now_ms();
    last_tick = w->now_ms / ENGINE_TICK_MS;
    for (unsigned i = 0; i < w->listen_count; i++)
        arm_accept(w, i);
    w->accepting = true;
    log_batch_begin();
    arm_tick(w);
    arm_wake(w);
    arm_auth(w, false);
    if (w->http)
        http_metrics_arm(w);

    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;

        refresh_config(w);
        /* Leave once nothing is in flight; accepts count too: a listening socket lives as
         * long as a request on it, and a restart wants its port back at once. */
        if (w->stopping && !w->conn_count && !spool_worker_busy(w) && !w->accepts_armed &&
            !queue_worker_busy(w) && !dns_worker_busy(w) &&
            (!w->http || http_metrics_idle(w))) {
            io_uring_submit(&w->ring);  /* the last socket and file closes */
            break;
        }
        spool_worker_flush(w);
        log_flush();
        io_uring_submit_and_wait(&w->ring, 1);
        w->now_ns = now_ns();
        w->now_ms = w->now_ns / 1000000;
        io_uring_for_each_cqe(&w->ring, head, cqe) {
            dispatch(w, cqe, &last_tick);
            n++;
        }
        io_uring_cq_advance(&w->ring, n);
        spool_worker_run_deferred(w);
        dns_worker_run_deferred(w);  /* answers of this pass, before the queue runs */
        queue_run_deferred(w);
        /* Sessions that waited for buffers or write slots resume when some came back;
         * sessions that closed while waiting are reaped in any case. */
        smtp_server_buffers_back(w, w->bufs_returned || w->spool_slots_freed ||
                                    w->local_returned);
        w->spool_slots_freed = 0;
        w->local_returned = 0;
        if (w->bufs_returned) {
            io_uring_buf_ring_advance(w->br, (int)w->bufs_returned);
            w->bufs_returned = 0;
        }
    }
    log_flush();
out:
    smtp_server_fini(w);
    queue_worker_fini(w);  /* its connection table is thread-local, like the sessions' */
    tls_thread_done();     /* wolfSSL's per-thread tables: no handshake follows */
    http_metrics_fini(w);
    dns_worker_fini(w);
    notify_worker_fini(w);  /* after the resolver: no lookup of theirs answers any more */
    __atomic_store_n(&w->done, true, __ATOMIC_RELEASE);
    return NULL;
}

/* engine_assign_cpus - worker i is pinned to the i-th CPU this process may run on (modulo
 * their count); -1 when the affinity cannot be read. */
void engine_assign_cpus(struct engine_shared *e)
{
    cpu_set_t allowed;
    int cpus[1024], ncpu = 0;

    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0)
        for (int c = 0; c < CPU_SETSIZE && ncpu < 1024; c++)
            if (CPU_ISSET(c, &allowed))
                cpus[ncpu++] = c;
    for (unsigned i = 0; i < e->count; i++)
        e->workers[i].cpu = ncpu ? cpus[i % (unsigned)ncpu] : -1;
}

/* engine_start - start the workers; listening sockets are already in e->workers, and their
 * CPUs were chosen by engine_assign_cpus. */
int engine_start(struct engine_shared *e, const struct rr_config *cfg, unsigned count)
{
    int err = 0;

    atomic_store(&e->cfg, cfg);
    atomic_store(&e->cfg_gen, 1);
    for (unsigned i = 0; i < count; i++) {  /* before any thread waits on the barrier */
        e->workers[i].wake_fd = eventfd(0, EFD_CLOEXEC);
        if (e->workers[i].wake_fd < 0)
            return -errno;
    }
    pthread_barrier_init(&start_barrier, NULL, count + 1);
    for (unsigned i = 0; i < count; i++) {
        struct worker *w = &e->workers[i];
        w->id = i;
        w->cfg = cfg;
        w->cfg_gen = 1;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            log_event(LOG_FATAL, "event=thread_create_failed worker=%u", i);
            abort();
        }
    }
    pthread_barrier_wait(&start_barrier);
    for (unsigned i = 0; i < count; i++)
        if (e->workers[i].exit_error && !err)
            err = e->workers[i].exit_error;
    return err;
}

/* engine_go - release the workers into their loops (after privileges are dropped). */
void engine_go(struct engine_shared *e)
{
    (void)e;
    pthread_barrier_wait(&start_barrier);
}

/* engine_wake - poke every worker's eventfd. */
void engine_wake(struct engine_shared *e)
{
    uint64_t one = 1;

    for (unsigned i = 0; i < e->count; i++)
        if (write(e->workers[i].wake_fd, &one, sizeof(one)) < 0)
            log_event(LOG_WARN, "event=wake_failed worker=%u error=%s", i, log_q(strerror(errno)));
}

/* engine_join - wait for the workers and tear their rings down. */
int engine_join(struct engine_shared *e)
{
    int err = 0;

    for (unsigned i = 0; i < e->count; i++) {
        struct worker *w = &e->workers[i];
        pthread_join(w->thread, NULL);
        if (w->exit_error && !err)
            err = w->exit_error;
        spool_worker_fini(w);
        control_worker_fini(w);  /* after the thread: nothing posts or polls any more */
        if (w->ring_ok)
            io_uring_queue_exit(&w->ring);
        close(w->wake_fd);
        for (unsigned k = 0; k < w->listen_count; k++)
            if (w->listen_fd[k] >= 0)
                close(w->listen_fd[k]);
    }
    /* Metric shards last: worker 0's responder reads them all until it stops. */
    for (unsigned i = 0; i < e->count; i++) {
        free(e->workers[i].m);
        e->workers[i].m = NULL;
    }
    return err;
}
