/*
 * control.c - the daemon side of ringctl: a Unix stream socket at control_socket.
 *
 * Functions: control_open(), control_serve(), control_close().
 *
 * Runs on the main thread, which only waits for signals and this socket, so a slow client
 * delays nothing on the mail path. One request line per connection, one answer, then close:
 *   stats                  "key value" lines: the workers' metric shards summed (relaxed
 *                          reads, as /metrics does), then the per-IP limits: who enforces
 *                          them, refusals by limit, tracked addresses and the top talkers
 *                          ("top_talker IP current=N per_s=N admitted=N refused=N", at most
 *                          CONTROL_TOP_TALKERS_MAX; listing them may walk the kernel's maps,
 *                          which is why it happens here and not on /metrics)
 *   queue | flush          a job for every worker (control_job.c), whose answers are joined;
 *   delete|hold|release ID the answer formats are listed in control_job.c
 * Anything else gets "error unknown command ...", a delete, hold or release without a
 * valid id (16 hex digits, either case) "error: bad queue id".
 *
 * Time is bounded at every step, since signals wait while the main thread serves a client:
 * the request must arrive within CONTROL_TIMEOUT_MS, the workers get CONTROL_JOB_TIMEOUT_MS
 * to answer (then "error: timeout"; a late answer lands in a job that still exists), and
 * the answer must be taken within CONTROL_WRITE_TIMEOUT_MS or the rest is dropped.
 *
 * SECURITY: the socket is mode 0660 (root or the daemon's user and group); the request is
 * read into a fixed buffer and anything but a known command gets an error answer.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/control.h"
#include "core/control_job.h"
#include "core/engine.h"
#include "core/iplimit.h"
#include "core/log.h"
#include "core/metrics.h"

#define CONTROL_ANSWER_BYTES_MAX 8192  /* "stats" and the short error answers */
#define CONTROL_WRITE_TIMEOUT_MS 5000  /* a client must take its whole answer this fast */
#define CONTROL_TOP_TALKERS_MAX  10    /* "top_talker" lines of "stats" */

/* make_parent - create the directory that holds path (one level is enough for /run/x). */
static void make_parent(const char *path)
{
    char dir[CONFIG_PATH_BYTES_MAX];
    char *slash;

    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return;
    *slash = 0;
    if (mkdir(dir, 0750) < 0 && errno != EEXIST)
        log_event(LOG_WARN, "event=control_error dir=%s error=%s", log_q(dir),
                  log_q(strerror(errno)));
}

/* control_open - bind and listen; a stale socket file from a crash is replaced. */
int control_open(const struct rr_config *cfg)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd, err;

    if (!cfg->control_socket[0])
        return -ENOENT;
    if (strlen(cfg->control_socket) >= sizeof(sun.sun_path))
        return -ENAMETOOLONG;
    memcpy(sun.sun_path, cfg->control_socket, strlen(cfg->control_socket) + 1);
    make_parent(cfg->control_socket);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
        close(fd);
        return -EADDRINUSE;  /* another daemon answers there */
    }
    unlink(cfg->control_socket);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 16) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    chmod(cfg->control_socket, 0660);
    return fd;
}

/* answer_ip_limits - the per-IP limits' lines of "stats" at out (cap bytes); the length. */
static size_t answer_ip_limits(char *out, size_t cap)
{
    struct connlimit_talker top[CONTROL_TOP_TALKERS_MAX];
    struct iplimit *il = iplimit_shared();
    struct iplimit_stats st;
    size_t len = 0;
    int n;

    iplimit_stats(il, &st);
    len += (size_t)snprintf(out + len, cap - len, "ip_limits %s\n",
                            st.kernel ? "kernel" : "userspace");
    for (unsigned i = 0; i < IPL_LIMIT_COUNT && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "ip_refused.%s %" PRIu64 "\n",
                                iplimit_limit_name[i], st.refused[i] + st.kernel_refused[i]);
    if (len < cap)
        len += (size_t)snprintf(out + len, cap - len, "tracked_ips %" PRIu64 "\n",
                                st.tracked_ips);
    n = iplimit_top(il, top, CONTROL_TOP_TALKERS_MAX);
    if (n < 0 && len < cap)
        len += (size_t)snprintf(out + len, cap - len, "top_talkers_error %s\n",
                                strerror(-n));
    for (int i = 0; i < n && len < cap; i++) {
        char ip[IPLIMIT_IP_TEXT_BYTES];
        iplimit_ip_format(&top[i].ip, ip, sizeof(ip));
        len += (size_t)snprintf(out + len, cap - len,
                                "top_talker %s current=%u per_s=%u admitted=%" PRIu64
                                " refused=%" PRIu64 "\n", ip, (unsigned)top[i].current,
                                (unsigned)top[i].per_s, top[i].admitted, top[i].refused);
    }
    return len < cap ? len : cap - 1;
}

/* answer_stats - the summed counters as "key value" lines. */
static size_t answer_stats(char *out, size_t cap, uint64_t started_ms)
{
    struct metrics *shards[64];
    struct metrics m;
    unsigned n = engine.count < 64 ? engine.count : 64;
    uint64_t accepted_rejected = 0;
    size_t len;

    for (unsigned i = 0; i < n; i++)
        shards[i] = engine.workers[i].m;
    metrics_sum(&m, shards, n);
    for (unsigned i = 0; i < MSG_REASON_COUNT; i++)
        accepted_rejected += m.messages_rejected[i];
    len = (size_t)snprintf(out, cap,
                           "uptime_seconds %" PRIu64 "\nworkers %u\n"
                           "connections_active %" PRIu64 "\n"
                           "messages_accepted %" PRIu64 "\nbytes_accepted %" PRIu64 "\n"
                           "messages_rejected %" PRIu64 "\nqueue_messages %" PRIu64 "\n"
                           "spool_fsyncs %" PRIu64 "\n",
                           (engine_now_ms() - started_ms) / 1000, engine.count,
                           m.connections_active, m.messages_accepted, m.bytes_accepted,
                           accepted_rejected, m.queue_size,
                           m.spool_fsyncs);
    for (unsigned i = 0; i < MSG_REASON_COUNT && len < cap; i++)
        if (m.messages_rejected[i])
            len += (size_t)snprintf(out + len, cap - len, "messages_rejected.%s %" PRIu64 "\n",
                                    metrics_msg_reason_name[i], m.messages_rejected[i]);
    if (len < cap)
        len += answer_ip_limits(out + len, cap - len);
    return len < cap ? len : cap - 1;
}

/* read_request - one line from client c into req (NUL-terminated, line end cut), within
 * CONTROL_TIMEOUT_MS. true when a whole line came. */
static bool read_request(int c, char *req, size_t cap)
{
    uint64_t deadline = engine_now_ms() + CONTROL_TIMEOUT_MS;
    size_t got = 0;
    char *nl = NULL;

    req[0] = 0;
    while (!nl && got < cap - 1) {
        uint64_t now = engine_now_ms();
        struct pollfd p = { c, POLLIN, 0 };
        ssize_t r;
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0)
            break;
        r = read(c, req + got, cap - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        req[got] = 0;
        nl = strchr(req, '\n');
    }
    if (!nl)
        return false;
    *nl = 0;
    if (nl > req && nl[-1] == '\r')
        nl[-1] = 0;
    return true;
}

/* write_answer - all of out, or as much as the client takes within CONTROL_WRITE_TIMEOUT_MS.
 * The socket stays blocking for the request read; each send here is MSG_DONTWAIT after a
 * poll for room, so one deadline bounds the whole answer, however slowly the client reads. */
static void write_answer(int c, const char *out, size_t len)
{
    uint64_t deadline = engine_now_ms() + CONTROL_WRITE_TIMEOUT_MS;

    for (size_t off = 0; off < len;) {
        uint64_t now = engine_now_ms();
        struct pollfd p = { c, POLLOUT, 0 };
        ssize_t w;
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0) {
            log_event(LOG_WARN, "event=control_error error=answer_not_taken sent=%zu bytes=%zu",
                      off, len);
            return;
        }
        w = send(c, out + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (w <= 0)
            return;
        off += (size_t)w;
    }
}

/* answer_job - hand a queue request to every worker and join their answers into *out
 * (malloc'd). The workers are woken once, after every mailbox holds the job. */
static size_t answer_job(enum ctl_cmd cmd, uint64_t qid, char **out)
{
    struct ctl_job *j = ctl_job_new(cmd, qid, engine.count);
    uint64_t t0 = engine_now_ms();
    bool complete;
    size_t len, first;

    for (unsigned i = 0; i < engine.count; i++)
        ctl_job_post(j, &engine.workers[i]);
    engine_wake(&engine);
    complete = ctl_job_wait(j, CONTROL_JOB_TIMEOUT_MS);
    len = ctl_job_merge(j, out);
    ctl_job_put(j);  /* workers still owing an answer hold the job until they give it */
    if (cmd != CTL_QUEUE || !complete) {
        char id[CTL_QID_DIGITS + 5] = "";  /* " id=" and the id */
        first = strcspn(*out, "\n");
        if (cmd != CTL_QUEUE && cmd != CTL_FLUSH)
            snprintf(id, sizeof(id), " id=%016" PRIX64, qid);
        log_event(complete ? LOG_INFO : LOG_WARN,
                  "event=control command=%s%s ms=%" PRIu64 " answer=%s", ctl_cmd_name(cmd), id,
                  engine_now_ms() - t0, log_qn(*out, first));
    }
    return len;
}

/* control_serve - one client: read its line (bounded in bytes and time), answer, close. */
void control_serve(int fd, const struct rr_config *cfg, uint64_t started_ms)
{
    char req[CONTROL_REQUEST_BYTES_MAX], small[CONTROL_ANSWER_BYTES_MAX];
    char *out = small, *big = NULL;
    enum ctl_cmd cmd;
    uint64_t qid;
    size_t len;
    int c;

    (void)cfg;
    c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return;
    if (!read_request(c, req, sizeof(req))) {
        len = (size_t)snprintf(small, sizeof(small), "error request incomplete\n");
    } else if (!strcmp(req, "stats")) {
        len = answer_stats(small, sizeof(small), started_ms);
    } else {
        switch (ctl_parse_request(req, &cmd, &qid)) {
        case CTL_REQ_JOB:
            len = answer_job(cmd, qid, &big);
            out = big;
            break;
        case CTL_REQ_BAD_ID:
            len = (size_t)snprintf(small, sizeof(small), "error: bad queue id\n");
            break;
        default:
            len = (size_t)snprintf(small, sizeof(small), "error unknown command %s\n",
                                   log_q(req));
            break;
        }
    }
    write_answer(c, out, len);
    free(big);
    close(c);
}

/* control_close - stop listening; the socket file goes too. */
void control_close(int fd, const struct rr_config *cfg)
{
    if (fd < 0)
        return;
    close(fd);
    unlink(cfg->control_socket);
}
