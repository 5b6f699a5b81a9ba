/*
 * ringctl.c - ringrelay's control tool.
 *
 * Daemon commands go through the control socket (-s SOCKET, or control_socket of -c FILE):
 *   ringctl [-s SOCKET | -c FILE] stats            counters of the running daemon
 *   ringctl [-s SOCKET | -c FILE] queue            the queue, one line per message, by id
 *   ringctl [-s SOCKET | -c FILE] flush            retry every deferred message now
 *   ringctl [-s SOCKET | -c FILE] delete|hold|release ID   one message (ID: 16 hex digits)
 * Each sends its request line ("stats", "queue", "flush", "delete ID"...) and reads the whole
 * answer (until the daemon closes, at most RINGCTL_ANSWER_TIMEOUT_MS) before printing it: an answer
 * starting with "error" goes to stderr and exits 1; anything else goes to stdout, exit 0. A
 * "queue" answer must end with its "-- N messages" line, else it was cut short (exit 1).
 * Exit 2: usage. Exit 1: the daemon cannot be reached, or did not answer in time.
 *
 * Offline spool commands read the spool directory named by the configuration directly,
 * read-only, so they are safe while the daemon runs (a message it is still writing is not
 * complete and is not shown):
 *   ringctl [-c FILE] [-o k=v]... spool           one line per complete message
 *   ringctl [-c FILE] [-o k=v]... export DIR      each message as DIR/QID.env and DIR/QID.eml
 *
 * SECURITY: export writes only inside DIR, with names made of hex queue ids.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/control.h"
#include "core/spool.h"

#define OVERRIDES_MAX 64
#define RINGCTL_ANSWER_TIMEOUT_MS  30000         /* the whole answer must arrive this fast */
#define RINGCTL_ANSWER_BYTES_MAX   (256u << 20)  /* and be no bigger */

/* What the outcome records say of one message (first pass of spool/export). */
struct outcome {
    uint64_t qid;                 /* 0 = empty slot */
    bool deleted;
    uint8_t done[(SPOOL_STATUS_RCPTS_MAX + 7) / 8]; /* recipients with an outcome */
};

struct export_ctx {
    int dir_fd;                   /* export target, -1 for listing only */
    unsigned count;               /* messages listed */
    unsigned finished;            /* complete messages skipped: every recipient has an outcome */
    struct outcome *tab;          /* open addressing by qid */
    size_t cap, used;
};

/* outcome_get - the slot of qid (created when absent and create is set), or NULL. */
static struct outcome *outcome_get(struct export_ctx *x, uint64_t qid, bool create)
{
    size_t i;

    if (create && (x->used + 1) * 2 > x->cap) {
        struct export_ctx n = { .cap = x->cap ? x->cap * 2 : 1024 };
        n.tab = rr_calloc(n.cap, sizeof(*n.tab));
        for (size_t k = 0; k < x->cap; k++)
            if (x->tab[k].qid) {
                for (i = x->tab[k].qid * 0x9e3779b97f4a7c15ull & (n.cap - 1); n.tab[i].qid;
                     i = (i + 1) & (n.cap - 1))
                    ;
                n.tab[i] = x->tab[k];
            }
        free(x->tab);
        x->tab = n.tab;
        x->cap = n.cap;
    }
    if (!x->cap)
        return NULL;
    for (i = qid * 0x9e3779b97f4a7c15ull & (x->cap - 1); x->tab[i].qid; i = (i + 1) & (x->cap - 1))
        if (x->tab[i].qid == qid)
            return &x->tab[i];
    if (!create)
        return NULL;
    x->tab[i].qid = qid;
    x->used++;
    return &x->tab[i];
}

/* note_outcome - first pass: remember what became of each message's recipients. */
static int note_outcome(const struct spool_status *s, void *arg)
{
    struct outcome *o;

    if (s->outcome != SPOOL_OUT_DELIVERED && s->outcome != SPOOL_OUT_FAILED &&
        s->outcome != SPOOL_OUT_DELETED)
        return 0;
    o = outcome_get(arg, s->qid, true);
    if (s->outcome == SPOOL_OUT_DELETED)
        o->deleted = true;
    for (uint32_t i = 0; i < s->rcpt_count; i++) {
        unsigned k = s->rcpts[2 * i] | (unsigned)s->rcpts[2 * i + 1] << 8;
        if (k < SPOOL_STATUS_RCPTS_MAX)
            o->done[k / 8] |= (uint8_t)(1u << (k % 8));
    }
    return 0;
}

/* usage - the synopsis, and exit. */
static void usage(int status)
{
    fprintf(status ? stderr : stdout,
            "usage: ringctl [-s SOCKET | -c FILE] [-o section.key=value]... COMMAND\n"
            "commands:\n"
            "  stats         counters of the running daemon (through the control socket)\n"
            "  queue         the daemon's queue, one line per message sorted by queue id:\n"
            "                id, age, sender, recipients, next attempt, last error; then\n"
            "                \"-- N messages\" (\"... truncated: S of N messages shown\"\n"
            "                before it when the listing was cut)\n"
            "  flush         retry every deferred message now (\"ok: flushed\")\n"
            "  delete ID     remove message ID (16 hex digits) from the queue\n"
            "  hold ID       keep message ID from delivery until released\n"
            "  release ID    let a held message ID be delivered again\n"
            "  spool         list the messages in the spool with recipients still to deliver,\n"
            "                rcpts= counting those (offline, read-only)\n"
            "  export DIR    write each of them to DIR/QID.env (envelope) and DIR/QID.eml\n"
            "exit status: 0 done; 1 the daemon answered \"error...\" or could not be reached;\n"
            "2 usage\n");
    exit(status);
}

/* env_value - an envelope value as a C string (cut at 300 bytes) into buf. */
static const char *env_value(const struct spool_msg *m, const char *key, char *buf, size_t cap)
{
    size_t len;
    const char *v = spool_env_get(m->envelope, m->envelope_len, key, NULL, &len);

    if (!v)
        len = 0;
    if (len >= cap)
        len = cap - 1;
    memcpy(buf, v ? v : "", len);
    buf[len] = 0;
    return buf;
}

/* visit - spool scan callback: print or export one message. */
static int visit(const struct spool_msg *m, int seg_fd, void *arg)
{
    struct export_ctx *x = arg;
    char qid[17], name[40], from[300], time_ms[32];
    unsigned rcpts = 0;
    size_t len;
    int fd, err;

    const struct outcome *o = outcome_get(x, m->qid, false);
    unsigned k = 0;

    spool_qid_format(m->qid, qid);
    for (const char *v = NULL; (v = spool_env_get(m->envelope, m->envelope_len, "rcpt", v, &len));
         k++)
        rcpts += !o || k >= SPOOL_STATUS_RCPTS_MAX || !(o->done[k / 8] & (1u << (k % 8)));
    if (o && (o->deleted || !rcpts)) {
        x->finished++;  /* delivered, bounced or deleted: waiting for its segment to go */
        return 0;
    }
    x->count++;
    if (x->dir_fd < 0) {
        printf("%s size=%" PRIu64 " time=%s from=<%s> rcpts=%u\n", qid, m->size,
               env_value(m, "time", time_ms, sizeof(time_ms)),
               env_value(m, "from", from, sizeof(from)), rcpts);
        return 0;
    }
    snprintf(name, sizeof(name), "%s.env", qid);
    fd = openat(x->dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0 || write(fd, m->envelope, m->envelope_len) != (ssize_t)m->envelope_len) {
        fprintf(stderr, "ringctl: %s: %s\n", name, strerror(errno));
        return -1;
    }
    close(fd);
    snprintf(name, sizeof(name), "%s.eml", qid);
    fd = openat(x->dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        fprintf(stderr, "ringctl: %s: %s\n", name, strerror(errno));
        return -1;
    }
    err = spool_read_body(seg_fd, m, fd);
    close(fd);
    if (err) {
        fprintf(stderr, "ringctl: %s: %s\n", name, strerror(-err));
        return -1;
    }
    return 0;
}

/* print_answer - answer (len bytes, NUL-terminated; freed here) as the exit status says:
 * "error..." to stderr without its prefix (1), anything else to stdout (0). */
static int print_answer(const char *path, const char *request, char *answer, size_t len)
{
    const char *last;
    int status = 0;

    if (!len) {
        fprintf(stderr, "ringctl: %s: empty answer\n", path);
        status = 1;
    } else if (!strncmp(answer, "error", 5) && (answer[5] == ' ' || answer[5] == ':')) {
        const char *msg = answer + 6;
        while (*msg == ' ')
            msg++;
        fprintf(stderr, "ringctl: %s%s", msg, answer[len - 1] == '\n' ? "" : "\n");
        status = 1;
    } else {
        if (fwrite(answer, 1, len, stdout) != len || fflush(stdout) != 0) {
            fprintf(stderr, "ringctl: stdout: %s\n", strerror(errno));
            status = 1;
        }
        /* A listing ends with its summary line; without it the daemon stopped sending. */
        last = answer + len - 1;
        while (last > answer && last[-1] != '\n')
            last--;
        if (!strcmp(request, "queue") && (answer[len - 1] != '\n' || strncmp(last, "-- ", 3))) {
            fprintf(stderr, "ringctl: %s: the answer was cut short\n", path);
            status = 1;
        }
    }
    free(answer);
    return status;
}

/* read_answer - the whole answer of socket fd (until EOF) into *out, NUL-terminated, within
 * RINGCTL_ANSWER_TIMEOUT_MS and RINGCTL_ANSWER_BYTES_MAX. Its length, or -errno (-ETIMEDOUT, -EFBIG). */
static ssize_t read_answer(int fd, char **out)
{
    struct timespec t0, now;
    size_t len = 0, cap = 65536;
    char *buf = rr_malloc(cap);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd p = { fd, POLLIN, 0 };
        long left_ms;
        ssize_t r;
        int ready;
        clock_gettime(CLOCK_MONOTONIC, &now);
        left_ms = RINGCTL_ANSWER_TIMEOUT_MS - ((now.tv_sec - t0.tv_sec) * 1000 +
                                           (now.tv_nsec - t0.tv_nsec) / 1000000);
        ready = left_ms > 0 ? poll(&p, 1, (int)left_ms) : 0;
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready == 0) {
            free(buf);
            return -ETIMEDOUT;
        }
        if (len + 1 == cap) {
            if (cap >= RINGCTL_ANSWER_BYTES_MAX) {
                free(buf);
                return -EFBIG;
            }
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf)
                rr_oom(cap);
        }
        r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            r = -errno;
            free(buf);
            return r;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    buf[len] = 0;
    *out = buf;
    return (ssize_t)len;
}

/* daemon_request - send one request line to the daemon, read its whole answer, and print it:
 * to stdout, or (an "error" answer) to stderr. Returns the exit status: 0, or 1 after saying
 * why on stderr. */
static int daemon_request(const char *path, const char *request)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct timeval send_timeout = { 5, 0 };
    char line[CONTROL_REQUEST_BYTES_MAX];
    size_t line_len = (size_t)snprintf(line, sizeof(line), "%s\n", request);
    char *answer = NULL;
    ssize_t len;
    int fd;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "ringctl: %s: socket path too long\n", path);
        return 1;
    }
    if (line_len >= sizeof(line)) {
        fprintf(stderr, "ringctl: request too long\n");
        return 1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "ringctl: socket: %s\n", strerror(errno));
        return 1;
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        if (errno == ENOENT || errno == ECONNREFUSED)
            fprintf(stderr, "ringctl: cannot connect to %s: daemon not running? (%s; is "
                    "ringrelay running?)\n", path, strerror(errno));
        else
            fprintf(stderr, "ringctl: cannot connect to %s: %s (is ringrelay running?)\n",
                    path, strerror(errno));
        close(fd);
        return 1;
    }
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
    if (write(fd, line, line_len) != (ssize_t)line_len) {
        fprintf(stderr, "ringctl: %s: %s\n", path, strerror(errno));
        close(fd);
        return 1;
    }
    len = read_answer(fd, &answer);
    close(fd);
    if (len < 0) {
        if (len == -ETIMEDOUT)
            fprintf(stderr, "ringctl: %s: no whole answer within %d s\n", path,
                    RINGCTL_ANSWER_TIMEOUT_MS / 1000);
        else
            fprintf(stderr, "ringctl: %s: %s\n", path, strerror((int)-len));
        return 1;
    }
    return print_answer(path, request, answer, (size_t)len);
}

/* daemon_command_args - how many arguments a daemon command takes; -1 for other words. */
static int daemon_command_args(const char *word)
{
    static const struct { const char *name; int args; } cmds[] = {
        { "stats", 0 }, { "queue", 0 }, { "flush", 0 },
        { "delete", 1 }, { "hold", 1 }, { "release", 1 },
    };

    for (size_t i = 0; i < RR_ARRAY_LEN(cmds); i++)
        if (!strcmp(word, cmds[i].name))
            return cmds[i].args;
    return -1;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL, *socket_path = NULL;
    char *overrides[OVERRIDES_MAX];
    unsigned override_count = 0;
    struct rr_config cfg;
    struct export_ctx x = { .dir_fd = -1 };
    struct spool_scan_stats st = { 0 };
    int ch, err, args;

    while ((ch = getopt(argc, argv, "c:o:s:h")) != -1) {
        if (ch == 'c')
            config_path = optarg;
        else if (ch == 's')
            socket_path = optarg;
        else if (ch == 'o' && override_count < OVERRIDES_MAX)
            overrides[override_count++] = optarg;
        else
            usage(ch == 'h' ? 0 : 2);
    }
    if (optind >= argc)
        usage(2);
    args = daemon_command_args(argv[optind]);
    if (args >= 0) {
        char request[CONTROL_REQUEST_BYTES_MAX];
        if (optind + 1 + args != argc)
            usage(2);
        /* The daemon validates the id: one parser, one place. */
        if (snprintf(request, sizeof(request), "%s%s%s", argv[optind], args ? " " : "",
                     args ? argv[optind + 1] : "") >= (int)sizeof(request) - 1)
            usage(2);
        if (!socket_path) {
            memset(&cfg, 0, sizeof(cfg));
            if (config_load(&cfg, config_path, overrides, override_count, stderr))
                return 2;
            err = daemon_request(cfg.control_socket, request);
            config_free(&cfg);
            return err;
        }
        return daemon_request(socket_path, request);
    }
    memset(&cfg, 0, sizeof(cfg));
    if (config_load(&cfg, config_path, overrides, override_count, stderr))
        return 2;
    if (!strcmp(argv[optind], "export") && optind + 2 == argc) {
        mkdir(argv[optind + 1], 0750);
        x.dir_fd = open(argv[optind + 1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (x.dir_fd < 0) {
            fprintf(stderr, "ringctl: %s: %s\n", argv[optind + 1], strerror(errno));
            return 1;
        }
    } else if (strcmp(argv[optind], "spool") || optind + 1 != argc) {
        usage(2);
    }
    /* Two passes: an outcome may sit in any segment, before or after its message. */
    err = spool_scan_dir_status(cfg.spool_dir, NULL, note_outcome, &x, &st);
    if (!err) {
        memset(&st, 0, sizeof(st));
        err = spool_scan_dir(cfg.spool_dir, visit, &x, &st);
    }
    free(x.tab);
    if (err < 0) {
        fprintf(stderr, "ringctl: %s: %s\n", cfg.spool_dir, strerror(-err));
        return 1;
    }
    if (err > 0)
        return 1;
    fprintf(stderr, "ringctl: %u messages, %u finished, %u segments, %u incomplete\n",
            x.count, x.finished, st.segments, st.incomplete);
    config_free(&cfg);
    return 0;
}
