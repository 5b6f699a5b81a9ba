/*
 * loop.c - ring and provided-buffer set-up for the bench tools (see loop.h).
 *
 * Functions: loop_init(), loop_fini(), loop_sqe(), loop_buf_release(), loop_buf_flush(),
 * loop_clock_ns(), loop_recv(), loop_cancel_fd(), loop_cancel(), loop_close(),
 * loop_timeout(), loop_wait().
 *
 * The ring is made by the thread that uses it (IORING_SETUP_SINGLE_ISSUER and DEFER_TASKRUN
 * want its only user to create it), with the relay engine's flags and the same fallback for
 * kernels before 6.1. Receive buffers are one anonymous mapping, touched only when the kernel
 * fills them.
 *
 * SECURITY: nothing here reads network bytes; the buffers it hands out are filled by the
 * kernel and bounded by buf_bytes.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "bench/loop.h"

/* loop_clock_ns - see loop.h. */
uint64_t loop_clock_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* loop_init - see loop.h. */
int loop_init(struct loop *l, unsigned buf_count, unsigned buf_bytes)
{
    struct io_uring_params p;
    struct io_uring_buf_reg reg;
    void *ring_mem;
    int r;

    memset(l, 0, sizeof(*l));
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
              IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    p.cq_entries = LOOP_CQ_ENTRIES;
    r = io_uring_queue_init_params(LOOP_SQ_ENTRIES, &l->ring, &p);
    if (r < 0) {  /* kernels before 6.1: without the newer flags */
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = LOOP_CQ_ENTRIES;
        r = io_uring_queue_init_params(LOOP_SQ_ENTRIES, &l->ring, &p);
    }
    if (r < 0)
        return r;
    l->ring_ok = true;
    l->buf_count = buf_count;
    l->buf_bytes = buf_bytes;
    ring_mem = mmap(NULL, buf_count * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
                    MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (ring_mem == MAP_FAILED)
        return -errno;
    l->br = ring_mem;
    l->buf_base = mmap(NULL, (size_t)buf_count * buf_bytes, PROT_READ | PROT_WRITE,
                       MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (l->buf_base == MAP_FAILED) {
        l->buf_base = NULL;
        return -errno;
    }
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)ring_mem;
    reg.ring_entries = buf_count;
    reg.bgid = LOOP_BUF_GROUP;
    r = io_uring_register_buf_ring(&l->ring, &reg, 0);
    if (r < 0)
        return r;
    io_uring_buf_ring_init(l->br);
    for (unsigned i = 0; i < buf_count; i++)
        io_uring_buf_ring_add(l->br, loop_buf(l, i), buf_bytes, (unsigned short)i,
                              io_uring_buf_ring_mask(buf_count), (int)i);
    io_uring_buf_ring_advance(l->br, (int)buf_count);
    l->now_ns = loop_clock_ns();
    return 0;
}

/* loop_fini - see loop.h. */
void loop_fini(struct loop *l)
{
    if (l->ring_ok)
        io_uring_queue_exit(&l->ring);
    l->ring_ok = false;
    if (l->br)
        munmap(l->br, l->buf_count * sizeof(struct io_uring_buf));
    if (l->buf_base)
        munmap(l->buf_base, (size_t)l->buf_count * l->buf_bytes);
    l->br = NULL;
    l->buf_base = NULL;
}

/* loop_sqe - see loop.h. */
struct io_uring_sqe *loop_sqe(struct loop *l)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);

    while (!sqe) {
        io_uring_submit(&l->ring);
        sqe = io_uring_get_sqe(&l->ring);
    }
    return sqe;
}

/* loop_buf_release - see loop.h. */
void loop_buf_release(struct loop *l, unsigned bid)
{
    io_uring_buf_ring_add(l->br, loop_buf(l, bid), l->buf_bytes, (unsigned short)bid,
                          io_uring_buf_ring_mask(l->buf_count), (int)l->returned++);
}

/* loop_buf_flush - see loop.h. */
bool loop_buf_flush(struct loop *l)
{
    if (!l->returned)
        return false;
    io_uring_buf_ring_advance(l->br, (int)l->returned);
    l->returned = 0;
    return true;
}

/* loop_recv - see loop.h. */
void loop_recv(struct loop *l, int fd, bool multishot, uint64_t ud)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    if (multishot)
        io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    else
        io_uring_prep_recv(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = LOOP_BUF_GROUP;
    io_uring_sqe_set_data64(sqe, ud);
}

/* loop_cancel_fd - see loop.h. */
void loop_cancel_fd(struct loop *l, int fd)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, LOOP_UD_NONE);
}

/* loop_cancel - see loop.h. */
void loop_cancel(struct loop *l, uint64_t ud)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    io_uring_prep_cancel64(sqe, ud, 0);
    io_uring_sqe_set_data64(sqe, LOOP_UD_NONE);
}

/* loop_close - see loop.h. */
void loop_close(struct loop *l, int fd, uint64_t ud)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_data64(sqe, ud);
}

/* loop_timeout - see loop.h. */
void loop_timeout(struct loop *l, struct __kernel_timespec *ts, uint64_t ms, uint64_t ud)
{
    struct io_uring_sqe *sqe = loop_sqe(l);

    ts->tv_sec = (long long)(ms / 1000);
    ts->tv_nsec = (long long)(ms % 1000) * 1000000;
    io_uring_prep_timeout(sqe, ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud);
}

/* loop_wait - see loop.h. */
void loop_wait(struct loop *l)
{
    io_uring_submit_and_wait(&l->ring, 1);
    l->now_ns = loop_clock_ns();
}
