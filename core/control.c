/*
 * control.c - the daemon side of ringctl: a Unix stream socket at control_socket.
 *
 * Functions: control_open(), control_serve(), control_close().
 *
 * Runs on the main thread, which only waits for signals and this socket, so a slow client
 * delays nothing on the mail path; each client gets CONTROL_TIMEOUT_MS to send its request.
 * "stats" sums the workers' metric shards (relaxed reads, as /metrics does) and answers
 * "key value" lines.
 *
 * SECURITY: the socket is mode 0660 (root or the daemon's user and group); the request is
 * read into a fixed buffer and anything but a known command gets "error ...".
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

#include "core/control.h"
#include "core/engine.h"
#include "core/log.h"
#include "core/metrics.h"

#define CONTROL_ANSWER_BYTES_MAX 8192

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
                           accepted_rejected, engine.queue_messages + m.queue_added,
                           m.spool_fsyncs);
    for (unsigned i = 0; i < MSG_REASON_COUNT && len < cap; i++)
        if (m.messages_rejected[i])
            len += (size_t)snprintf(out + len, cap - len, "messages_rejected.%s %" PRIu64 "\n",
                                    metrics_msg_reason_name[i], m.messages_rejected[i]);
    return len < cap ? len : cap - 1;
}

/* control_serve - one client: read its line (bounded in bytes and time), answer, close. */
void control_serve(int fd, const struct rr_config *cfg, uint64_t started_ms)
{
    char req[CONTROL_REQUEST_BYTES_MAX], out[CONTROL_ANSWER_BYTES_MAX];
    uint64_t deadline = engine_now_ms() + CONTROL_TIMEOUT_MS;
    size_t got = 0, len;
    char *nl = NULL;
    int c;

    (void)cfg;
    c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return;
    while (!nl && got < sizeof(req) - 1) {
        uint64_t now = engine_now_ms();
        struct pollfd p = { c, POLLIN, 0 };
        ssize_t r;
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0)
            break;
        r = read(c, req + got, sizeof(req) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        req[got] = 0;
        nl = strchr(req, '\n');
    }
    if (!nl) {
        len = (size_t)snprintf(out, sizeof(out), "error request incomplete\n");
    } else {
        *nl = 0;
        if (nl > req && nl[-1] == '\r')
            nl[-1] = 0;
        if (!strcmp(req, "stats"))
            len = answer_stats(out, sizeof(out), started_ms);
        else
            len = (size_t)snprintf(out, sizeof(out), "error unknown command %s\n", log_q(req));
    }
    for (size_t off = 0; off < len;) {  /* the socket is blocking: bounded by the answer size */
        ssize_t w = send(c, out + off, len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
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
