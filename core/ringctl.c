/*
 * ringctl.c - ringrelay's control tool.
 *
 * Daemon commands go through the control socket (-s SOCKET, or control_socket of -c FILE):
 *   ringctl [-s SOCKET | -c FILE] stats            counters of the running daemon
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/spool.h"

#define OVERRIDES_MAX 64

struct export_ctx {
    int dir_fd;                   /* export target, -1 for listing only */
    unsigned count;               /* messages seen */
};

/* usage - the synopsis, and exit. */
static void usage(int status)
{
    fprintf(status ? stderr : stdout,
            "usage: ringctl [-s SOCKET | -c FILE] [-o section.key=value]... COMMAND\n"
            "commands:\n"
            "  stats         counters of the running daemon (through the control socket)\n"
            "  spool         list the complete messages in the spool (offline, read-only)\n"
            "  export DIR    write each message to DIR/QID.env (envelope) and DIR/QID.eml\n");
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

    spool_qid_format(m->qid, qid);
    for (const char *v = NULL; (v = spool_env_get(m->envelope, m->envelope_len, "rcpt", v, &len));)
        rcpts++;
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

/* daemon_request - send one request line to the daemon and copy its answer to stdout.
 * Returns 0, or 1 after saying why on stderr. */
static int daemon_request(const char *path, const char *request)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    char buf[4096];
    ssize_t r;
    int fd, status = 0;
    bool first = true;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "ringctl: %s: socket path too long\n", path);
        return 1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        fprintf(stderr, "ringctl: cannot reach the daemon at %s: %s (is ringrelay running?)\n",
                path, strerror(errno));
        return 1;
    }
    if (write(fd, request, strlen(request)) != (ssize_t)strlen(request) || write(fd, "\n", 1) != 1) {
        fprintf(stderr, "ringctl: %s: %s\n", path, strerror(errno));
        close(fd);
        return 1;
    }
    while ((r = read(fd, buf, sizeof(buf))) > 0) {
        if (first && r >= 6 && !memcmp(buf, "error ", 6)) {
            fprintf(stderr, "ringctl: %.*s", (int)r - 6, buf + 6);
            status = 1;
        } else if (fwrite(buf, 1, (size_t)r, stdout) != (size_t)r) {
            status = 1;
        }
        first = false;
    }
    close(fd);
    return status;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL, *socket_path = NULL;
    char *overrides[OVERRIDES_MAX];
    unsigned override_count = 0;
    struct rr_config cfg;
    struct export_ctx x = { -1, 0 };
    struct spool_scan_stats st = { 0 };
    int ch, err;

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
    if (!strcmp(argv[optind], "stats")) {
        if (optind + 1 != argc)
            usage(2);
        if (!socket_path) {
            memset(&cfg, 0, sizeof(cfg));
            if (config_load(&cfg, config_path, overrides, override_count, stderr))
                return 2;
            err = daemon_request(cfg.control_socket, "stats");
            config_free(&cfg);
            return err;
        }
        return daemon_request(socket_path, "stats");
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
    err = spool_scan_dir(cfg.spool_dir, visit, &x, &st);
    if (err < 0) {
        fprintf(stderr, "ringctl: %s: %s\n", cfg.spool_dir, strerror(-err));
        return 1;
    }
    if (err > 0)
        return 1;
    fprintf(stderr, "ringctl: %u messages, %u segments, %u incomplete\n", st.messages,
            st.segments, st.incomplete);
    config_free(&cfg);
    return 0;
}
