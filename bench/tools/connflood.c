/*
 * connflood.c - a TCP connection flooder for the connection-limit benchmark (bench/flood.sh):
 * one source address opens connections to one SMTP server as fast as it can.
 *
 * USAGE
 *   connflood --source ADDR [--concurrency C] [--duration S] [--max N]
 *             [--connect-only | --hold-ms MS] [--timeout-ms MS] [--rate N]
 *             [--any-destination] [--json] HOST:PORT
 *   HOST:PORT is "127.0.0.1:2525" or "[::1]:2525"; ADDR is an address of this machine of
 *   the same family ("127.0.0.66": all of 127.0.0.0/8 is local on Linux).
 *
 * CONTRACT
 *   - Every connection is bound to ADDR before connect(), with IP_BIND_ADDRESS_NO_PORT: the
 *     port is chosen by connect(), knowing the destination, so ports in TIME_WAIT towards
 *     the same server can be reused (net.ipv4.tcp_tw_reuse, on for loopback by default).
 *   - At most C connections are in flight (connecting, waiting for the greeting, or held).
 *     With --rate N, attempts start at most N per second (evenly spaced); without it, as
 *     fast as C allows.
 *   - Always bounded: no attempt starts after S seconds (default 10) or after N attempts
 *     (default 10,000,000), whichever comes first. Connections still in flight then end
 *     within their own deadlines (--timeout-ms, default 3000, from connect() to the end of
 *     the greeting line; then --hold-ms), so a run lasts at most S s + timeout + hold.
 *     SIGINT or SIGTERM stops at once: what is in flight is closed and counted as aborted.
 *   - Nothing is ever sent. A connection is closed (FIN) as soon as it is established with
 *     --connect-only; otherwise once its first line has arrived, or --hold-ms MS after a 220
 *     greeting (to keep connections open and so exercise a server's open-connections limit;
 *     a 421 or any other reply is closed at once, as a server closes after it anyway).
 *   - Each attempt ends in exactly one outcome (the counters add up to attempts):
 *       refused          connect() failed with ECONNREFUSED or ECONNRESET: a reset answered
 *                        the SYN (a BPF refusal, or no listener)
 *       dropped          established, then end of stream or a reset before a full line
 *       closed           established and closed at once (--connect-only)
 *       greeting_220, greeting_421, greeting_other   the first line's reply code
 *       timeouts         not established, or no full line, within --timeout-ms
 *       errors           any other failure (socket, connect: EADDRNOTAVAIL when the local
 *                        ports run out, EMFILE...); the first one's errno name is printed.
 *                        After a local resource error no attempt starts for 1 ms.
 *       aborted          still before its outcome when a signal stopped the run
 *     "established" counts the handshakes that completed (closed, dropped, greeting_*, and
 *     those timed out or aborted while waiting for the greeting).
 *   - At the end prints one line on stdout, "connflood: key=value ...", or with --json one
 *     JSON object with the same keys, plus the process's own CPU time. Exit 0; 1 on a
 *     start-up error (the source cannot be bound, no epoll); 2 on a usage error.
 *
 * DESIGN
 *   Single thread, epoll, edge-triggered: each socket is registered once for in, out and
 *   peer-close and never modified. A slot table sized C holds the connections; epoll's
 *   user data is {generation, slot}, so an event queued for a connection closed earlier
 *   in the same batch is recognised and dropped. Deadlines need no heap: every connection
 *   gets the same timeout from its start and the same hold from its greeting, so two FIFO
 *   lists (waiting, held) are each in deadline order and expire from their heads.
 *
 * SECURITY
 *   It floods: the destination must be a loopback address unless --any-destination is
 *   given. It reads at most GREETING_BYTES_MAX bytes per connection from the server and
 *   looks only at the first three and at the line end.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define NS_PER_MS             1000000ULL
#define NS_PER_S              1000000000ULL
#define CONCURRENCY_MAX       65536u      /* connections in flight */
#define DURATION_S_MAX        3600u       /* --duration */
#define ATTEMPTS_MAX_DEFAULT  10000000ULL /* --max when not given */
#define TIMEOUT_MS_MAX        600000u     /* --timeout-ms */
#define HOLD_MS_MAX           3600000u    /* --hold-ms */
#define EVENTS_BATCH_MAX      256         /* epoll events taken per wait */
#define OPEN_BATCH_MAX        64          /* attempts started per loop pass, then completions */
#define WAIT_NS_MAX           (100 * NS_PER_MS) /* longest sleep in epoll: signals and the
                                                   clock are looked at least this often */
#define BACKOFF_NS            NS_PER_MS   /* pause after a local resource error */
#define GREETING_BYTES_MAX    4096        /* read before a line end, then "greeting_other" */
#define SLOT_NONE             UINT32_MAX
#define EVENT_SIGNAL          UINT64_MAX  /* epoll user data of the signalfd */

enum slot_state {
    SLOT_FREE,
    SLOT_CONNECTING,                      /* connect() under way */
    SLOT_GREETING,                        /* established, waiting for the first line */
    SLOT_HOLDING,                         /* greeted with 220, kept open until its deadline */
};

enum outcome {
    OUT_REFUSED, OUT_DROPPED, OUT_CLOSED, OUT_220, OUT_421, OUT_OTHER, OUT_TIMEOUT, OUT_ERROR,
    OUT_ABORTED, OUT_COUNT
};
static const char *const outcome_name[OUT_COUNT] = {
    "refused", "dropped", "closed", "greeting_220", "greeting_421", "greeting_other",
    "timeouts", "errors", "aborted",
};

enum stop_reason { STOP_NONE, STOP_DURATION, STOP_MAX, STOP_SIGNAL };
static const char *const stop_name[] = { "none", "duration", "max", "signal" };

struct slot {
    int fd;                               /* the socket; -1 when free */
    uint32_t gen;                         /* bumped at each close: stale events are dropped */
    uint8_t state;                        /* enum slot_state */
    uint8_t list;                         /* LIST_WAIT, LIST_HOLD or LIST_NONE */
    uint16_t greeting_bytes;              /* read so far, up to GREETING_BYTES_MAX */
    char code[3];                         /* first three bytes of the greeting */
    uint64_t deadline_ns;                 /* timeout (waiting) or end of hold (held) */
    uint32_t prev, next;                  /* neighbours in its list, SLOT_NONE at the ends */
};

enum { LIST_NONE, LIST_WAIT, LIST_HOLD, LIST_COUNT };

struct dlist {
    uint32_t head, tail;                  /* oldest (first to expire) and newest slot */
};

struct options {
    struct sockaddr_storage src;          /* --source, port 0 */
    struct sockaddr_storage dst;          /* HOST:PORT */
    socklen_t addr_len;                   /* of both (same family) */
    char src_text[INET6_ADDRSTRLEN];
    char dst_text[INET6_ADDRSTRLEN + 8];
    uint32_t concurrency;                 /* connections in flight, at most */
    uint32_t duration_s;                  /* no attempt starts after this */
    uint64_t attempts_max;                /* no attempt starts after this many */
    uint32_t timeout_ms;                  /* connect() to the end of the greeting line */
    uint32_t hold_ms;                     /* keep a 220-greeted connection this long */
    uint64_t rate_per_s;                  /* attempts per second, 0 = as fast as possible */
    bool connect_only;                    /* close as soon as established */
    bool any_destination;                 /* allow a non-loopback destination */
    bool json;                            /* summary as one JSON object */
};

struct flood {
    struct options o;
    int epfd;
    int sigfd;                            /* SIGINT, SIGTERM; in epoll like the sockets */
    bool got_signal;                      /* one of them came: stop and abort */
    struct slot *slots;                   /* o.concurrency of them */
    uint32_t *free_stack;                 /* indexes of free slots */
    uint32_t free_count;
    struct dlist lists[LIST_COUNT];
    uint64_t start_ns, end_ns, stop_ns;   /* flood start, duration's end, when attempts stopped */
    uint64_t backoff_until_ns;            /* no attempt before this (local resource error) */
    uint64_t attempts, established;
    uint64_t outcome[OUT_COUNT];
    int first_errno;                      /* of the first OUT_ERROR, 0 if none */
    enum stop_reason stop;
};

/* mono_ns - the monotonic clock in nanoseconds. */
static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* usage - the synopsis on stderr, exit 2. */
static void usage(const char *why)
{
    if (why)
        fprintf(stderr, "connflood: %s\n", why);
    fprintf(stderr,
            "usage: connflood --source ADDR [--concurrency C] [--duration S] [--max N]\n"
            "                 [--connect-only | --hold-ms MS] [--timeout-ms MS] [--rate N]\n"
            "                 [--any-destination] [--json] HOST:PORT\n");
    exit(2);
}

/* parse_u64 - a decimal number in [lo, hi], or usage() naming the option. */
static uint64_t parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi)
{
    char *end;
    unsigned long long v;
    char why[128];

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi) {
        snprintf(why, sizeof(why), "%s: want a number from %" PRIu64 " to %" PRIu64 ", got '%s'",
                 opt, lo, hi, s);
        usage(why);
    }
    return v;
}

/* parse_ip - a numeric address (brackets allowed around IPv6) and a port into *ss; returns
 * the address length, 0 when it is not an address. */
static socklen_t parse_ip(const char *text, size_t len, uint16_t port, struct sockaddr_storage *ss)
{
    char buf[INET6_ADDRSTRLEN + 2];

    if (len && text[0] == '[' && text[len - 1] == ']') {
        text++;
        len -= 2;
    }
    if (len == 0 || len >= sizeof(buf))
        return 0;
    memcpy(buf, text, len);
    buf[len] = 0;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, buf, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        return sizeof(*in);
    }
    if (inet_pton(AF_INET6, buf, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        return sizeof(*in6);
    }
    return 0;
}

/* is_loopback - 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104. */
static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

/* parse_args - the command line into *o; usage() on any error. */
static void parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longs[] = {
        { "source", required_argument, NULL, 's' },
        { "concurrency", required_argument, NULL, 'c' },
        { "duration", required_argument, NULL, 'd' },
        { "max", required_argument, NULL, 'n' },
        { "hold-ms", required_argument, NULL, 'H' },
        { "timeout-ms", required_argument, NULL, 'T' },
        { "rate", required_argument, NULL, 'r' },
        { "connect-only", no_argument, NULL, 'C' },
        { "any-destination", no_argument, NULL, 'A' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *source = NULL, *target, *colon;
    socklen_t src_len;
    uint64_t port;
    int c;

    *o = (struct options){ .concurrency = 100, .duration_s = 10,
                           .attempts_max = ATTEMPTS_MAX_DEFAULT, .timeout_ms = 3000 };
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 's': source = optarg; break;
        case 'c': o->concurrency = (uint32_t)parse_u64("--concurrency", optarg, 1, CONCURRENCY_MAX); break;
        case 'd': o->duration_s = (uint32_t)parse_u64("--duration", optarg, 1, DURATION_S_MAX); break;
        case 'n': o->attempts_max = parse_u64("--max", optarg, 1, UINT64_MAX / NS_PER_S); break;
        case 'H': o->hold_ms = (uint32_t)parse_u64("--hold-ms", optarg, 0, HOLD_MS_MAX); break;
        case 'T': o->timeout_ms = (uint32_t)parse_u64("--timeout-ms", optarg, 1, TIMEOUT_MS_MAX); break;
        case 'r': o->rate_per_s = parse_u64("--rate", optarg, 1, NS_PER_S); break;
        case 'C': o->connect_only = true; break;
        case 'A': o->any_destination = true; break;
        case 'j': o->json = true; break;
        default: usage(NULL);
        }
    }
    if (optind != argc - 1)
        usage("one HOST:PORT expected");
    if (!source)
        usage("--source is required");
    if (o->connect_only && o->hold_ms)
        usage("--connect-only and --hold-ms exclude each other");

    target = argv[optind];
    colon = strrchr(target, ':');
    if (!colon || colon == target)
        usage("HOST:PORT expected");
    port = parse_u64("port", colon + 1, 1, 65535);
    o->addr_len = parse_ip(target, (size_t)(colon - target), (uint16_t)port, &o->dst);
    if (!o->addr_len)
        usage("HOST must be a numeric address");
    src_len = parse_ip(source, strlen(source), 0, &o->src);
    if (!src_len)
        usage("--source must be a numeric address");
    if (src_len != o->addr_len || o->src.ss_family != o->dst.ss_family)
        usage("--source and HOST must be of the same family");
    if (!o->any_destination && !is_loopback(&o->dst))
        usage("HOST is not a loopback address (--any-destination to allow it)");

    snprintf(o->src_text, sizeof(o->src_text), "%.*s", (int)(sizeof(o->src_text) - 1), source);
    snprintf(o->dst_text, sizeof(o->dst_text), "%.*s", (int)(sizeof(o->dst_text) - 1), target);
}

/* list_append - put slot i at the tail of list l (the newest deadline). */
static void list_append(struct flood *f, unsigned l, uint32_t i)
{
    struct dlist *d = &f->lists[l];
    struct slot *s = &f->slots[i];

    s->list = (uint8_t)l;
    s->prev = d->tail;
    s->next = SLOT_NONE;
    if (d->tail != SLOT_NONE)
        f->slots[d->tail].next = i;
    else
        d->head = i;
    d->tail = i;
}

/* list_remove - take slot i out of whatever list holds it. */
static void list_remove(struct flood *f, uint32_t i)
{
    struct slot *s = &f->slots[i];
    struct dlist *d;

    if (s->list == LIST_NONE)
        return;
    d = &f->lists[s->list];
    if (s->prev != SLOT_NONE)
        f->slots[s->prev].next = s->next;
    else
        d->head = s->next;
    if (s->next != SLOT_NONE)
        f->slots[s->next].prev = s->prev;
    else
        d->tail = s->prev;
    s->list = LIST_NONE;
    s->prev = s->next = SLOT_NONE;
}

/* slot_release - close slot i's socket (which also takes it out of epoll), bump its
 * generation and give it back. The only place a slot is freed. */
static void slot_release(struct flood *f, uint32_t i)
{
    struct slot *s = &f->slots[i];

    if (s->state == SLOT_FREE) {
        fprintf(stderr, "connflood: internal error: slot %u released twice\n", i);
        abort();
    }
    list_remove(f, i);
    close(s->fd);
    s->fd = -1;
    s->state = SLOT_FREE;
    s->gen++;
    f->free_stack[f->free_count++] = i;
}

/* note_error - count an attempt as failed for a local or unexpected reason. */
static void note_error(struct flood *f, int err)
{
    f->outcome[OUT_ERROR]++;
    if (!f->first_errno)
        f->first_errno = err;
}

/* finish - slot i's attempt ends with outcome o. */
static void finish(struct flood *f, uint32_t i, enum outcome o, int err)
{
    if (o == OUT_ERROR)
        note_error(f, err);
    else
        f->outcome[o]++;
    slot_release(f, i);
}

/* is_local_resource_error - errors that say "this machine is out of something": worth a
 * pause before the next attempt rather than a tight loop of failures. */
static bool is_local_resource_error(int err)
{
    return err == EADDRNOTAVAIL || err == EMFILE || err == ENFILE || err == ENOBUFS ||
           err == ENOMEM || err == EAGAIN;
}

/* attempt_start - one new connection in a free slot. Returns 0, or -errno for a local
 * resource error (the caller pauses). Counts the attempt, and its outcome if it ended at
 * once. */
static int attempt_start(struct flood *f, uint64_t now)
{
    const struct options *o = &f->o;
    struct epoll_event ev;
    int fd, one = 1, err;
    uint32_t i;
    struct slot *s;

    f->attempts++;
    fd = socket(o->dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = errno;
        note_error(f, err);
        return is_local_resource_error(err) ? -err : 0;
    }
    /* Without it, bind() would pick a port knowing nothing of the destination and the
     * ports would run out at ~28,000 connections in TIME_WAIT. */
    (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&o->src, o->addr_len) < 0 ||
        (connect(fd, (const struct sockaddr *)&o->dst, o->addr_len) < 0 && errno != EINPROGRESS)) {
        err = errno;
        close(fd);
        if (err == ECONNREFUSED || err == ECONNRESET) {
            f->outcome[OUT_REFUSED]++;
            return 0;
        }
        note_error(f, err);
        return is_local_resource_error(err) ? -err : 0;
    }

    i = f->free_stack[--f->free_count];
    s = &f->slots[i];
    s->fd = fd;
    s->state = SLOT_CONNECTING;
    s->greeting_bytes = 0;
    s->deadline_ns = now + (uint64_t)o->timeout_ms * NS_PER_MS;
    list_append(f, LIST_WAIT, i);
    /* Edge-triggered, registered once: "writable" says connect() finished, "readable" that
     * the greeting (or the end) came. Connected already or not, the first event follows. */
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = (uint64_t)s->gen << 32 | i;
    if (epoll_ctl(f->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        err = errno;
        finish(f, i, OUT_ERROR, err);
        return is_local_resource_error(err) ? -err : 0;
    }
    return 0;
}

/* greeting_read - read what slot i's server sent, until its first line is complete (then
 * the outcome, or the hold) or nothing more is there. */
static void greeting_read(struct flood *f, uint32_t i, uint64_t now)
{
    struct slot *s = &f->slots[i];
    char buf[512];

    for (;;) {
        ssize_t n = recv(s->fd, buf, sizeof(buf), 0);
        if (n == 0) {
            finish(f, i, OUT_DROPPED, 0);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;  /* edge-triggered: the next arrival brings a new event */
            if (errno == ECONNRESET)
                finish(f, i, OUT_DROPPED, 0);
            else
                finish(f, i, OUT_ERROR, errno);
            return;
        }
        for (ssize_t k = 0; k < n; k++) {
            if (s->greeting_bytes < sizeof(s->code))
                s->code[s->greeting_bytes] = buf[k];
            s->greeting_bytes++;
            if (buf[k] == '\n' || s->greeting_bytes >= GREETING_BYTES_MAX) {
                bool line = buf[k] == '\n' && s->greeting_bytes > sizeof(s->code);
                enum outcome o = !line ? OUT_OTHER
                               : !memcmp(s->code, "220", 3) ? OUT_220
                               : !memcmp(s->code, "421", 3) ? OUT_421 : OUT_OTHER;
                if (o == OUT_220 && f->o.hold_ms) {
                    f->outcome[o]++;
                    list_remove(f, i);
                    s->state = SLOT_HOLDING;
                    s->deadline_ns = now + (uint64_t)f->o.hold_ms * NS_PER_MS;
                    list_append(f, LIST_HOLD, i);
                    return;  /* whatever else arrives is read and dropped while held */
                }
                finish(f, i, o, 0);
                return;
            }
        }
    }
}

/* hold_read - a held connection became readable: anything is discarded; the end of the
 * stream or an error closes it early (its outcome, 220, is counted already). */
static void hold_read(struct flood *f, uint32_t i)
{
    struct slot *s = &f->slots[i];
    char buf[512];

    for (;;) {
        ssize_t n = recv(s->fd, buf, sizeof(buf), 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        slot_release(f, i);
        return;
    }
}

/* on_event - dispatch one epoll event by the slot's state. */
static void on_event(struct flood *f, const struct epoll_event *ev, uint64_t now)
{
    uint32_t i = (uint32_t)ev->data.u64, gen = (uint32_t)(ev->data.u64 >> 32);
    struct slot *s;
    int err = 0;
    socklen_t len = sizeof(err);

    if (ev->data.u64 == EVENT_SIGNAL) {
        struct signalfd_siginfo si;
        while (read(f->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
            f->got_signal = true;
        return;
    }
    s = &f->slots[i];
    if (s->state == SLOT_FREE || s->gen != gen)
        return;  /* closed earlier in this batch */
    switch (s->state) {
    case SLOT_CONNECTING:
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == 0 && !(ev->events & (EPOLLOUT | EPOLLIN | EPOLLRDHUP | EPOLLHUP)))
            return;  /* EPOLLERR without an error: nothing to say yet */
        if (err == ECONNREFUSED || err == ECONNRESET) {
            finish(f, i, OUT_REFUSED, 0);
            return;
        }
        if (err) {
            finish(f, i, err == ETIMEDOUT ? OUT_TIMEOUT : OUT_ERROR, err);
            return;
        }
        f->established++;
        if (f->o.connect_only) {
            finish(f, i, OUT_CLOSED, 0);
            return;
        }
        s->state = SLOT_GREETING;
        greeting_read(f, i, now);  /* on loopback the greeting is often there already */
        return;
    case SLOT_GREETING:
        greeting_read(f, i, now);
        return;
    case SLOT_HOLDING:
        hold_read(f, i);
        return;
    default:
        return;
    }
}

/* expire - every deadline passed: a waiting connection times out, a held one is closed. */
static void expire(struct flood *f, uint64_t now)
{
    uint32_t i;

    while ((i = f->lists[LIST_WAIT].head) != SLOT_NONE && f->slots[i].deadline_ns <= now)
        finish(f, i, OUT_TIMEOUT, 0);
    while ((i = f->lists[LIST_HOLD].head) != SLOT_NONE && f->slots[i].deadline_ns <= now)
        slot_release(f, i);
}

/* abort_all - a signal: close everything in flight; those before their outcome count as
 * aborted. */
static void abort_all(struct flood *f)
{
    for (uint32_t i = 0; i < f->o.concurrency; i++) {
        struct slot *s = &f->slots[i];
        if (s->state == SLOT_FREE)
            continue;
        if (s->state == SLOT_HOLDING)
            slot_release(f, i);
        else
            finish(f, i, OUT_ABORTED, 0);
    }
}

/* next_attempt_ns - when the rate allows the next attempt (0 without --rate). */
static uint64_t next_attempt_ns(const struct flood *f)
{
    if (!f->o.rate_per_s)
        return 0;
    return f->start_ns + (uint64_t)((long double)f->attempts * NS_PER_S / f->o.rate_per_s);
}

/* attempts_start - start attempts while slots, the rate and the bounds allow, at most
 * OPEN_BATCH_MAX before completions are read again. */
static void attempts_start(struct flood *f, uint64_t now)
{
    for (unsigned k = 0; k < OPEN_BATCH_MAX; k++) {
        if (!f->free_count || f->attempts >= f->o.attempts_max || now < f->backoff_until_ns ||
            now < next_attempt_ns(f) || now >= f->end_ns)
            return;
        if (attempt_start(f, now) < 0) {
            f->backoff_until_ns = now + BACKOFF_NS;
            return;
        }
        now = mono_ns();
    }
}

/* wait_ns - how long epoll may sleep: until the next deadline, the next permitted attempt
 * or the end of the duration, at most WAIT_NS_MAX; 0 when an attempt could start now. */
static uint64_t wait_ns(const struct flood *f, uint64_t now)
{
    uint64_t until = now + WAIT_NS_MAX;

    for (unsigned l = LIST_WAIT; l < LIST_COUNT; l++)
        if (f->lists[l].head != SLOT_NONE && f->slots[f->lists[l].head].deadline_ns < until)
            until = f->slots[f->lists[l].head].deadline_ns;
    if (f->stop == STOP_NONE) {
        if (f->end_ns < until)
            until = f->end_ns;
        if (f->free_count) {
            uint64_t next = next_attempt_ns(f);
            if (f->backoff_until_ns > next)
                next = f->backoff_until_ns;
            if (next < until)
                until = next;
        }
    }
    return until > now ? until - now : 0;
}

/* print_summary - the counters, one line or one JSON object, on stdout. */
static void print_summary(const struct flood *f)
{
    uint64_t end = f->stop_ns ? f->stop_ns : mono_ns();
    double secs = (double)(end - f->start_ns) / NS_PER_S;
    double per_s = secs > 0 ? (double)f->attempts / secs : 0;
    struct rusage ru;
    double cpu_user, cpu_sys;
    const char *first = f->first_errno ? strerrorname_np(f->first_errno) : NULL;
    bool j = f->o.json;

    getrusage(RUSAGE_SELF, &ru);
    cpu_user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    cpu_sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    if (!first)
        first = f->first_errno ? "unknown" : "none";

    if (j)
        printf("{\"target\":\"%s\",\"source\":\"%s\",\"seconds\":%.3f,\"attempts\":%" PRIu64
               ",\"attempts_per_s\":%.1f,\"established\":%" PRIu64,
               f->o.dst_text, f->o.src_text, secs, f->attempts, per_s, f->established);
    else
        printf("connflood: target=%s source=%s seconds=%.3f attempts=%" PRIu64
               " attempts_per_s=%.1f established=%" PRIu64,
               f->o.dst_text, f->o.src_text, secs, f->attempts, per_s, f->established);
    for (unsigned o = 0; o < OUT_COUNT; o++)
        printf(j ? ",\"%s\":%" PRIu64 : " %s=%" PRIu64, outcome_name[o], f->outcome[o]);
    printf(j ? ",\"first_error\":\"%s\",\"stopped_by\":\"%s\",\"cpu_user_s\":%.3f,"
               "\"cpu_sys_s\":%.3f}\n"
             : " first_error=%s stopped_by=%s cpu_user_s=%.3f cpu_sys_s=%.3f\n",
           first, stop_name[f->stop], cpu_user, cpu_sys);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct flood f = { .epfd = -1, .sigfd = -1 };
    struct epoll_event events[EVENTS_BATCH_MAX], sigev = { .events = EPOLLIN,
                                                           .data.u64 = EVENT_SIGNAL };
    sigset_t block;
    uint64_t sum = 0;
    int probe;

    parse_args(argc, argv, &f.o);

    /* The source must be ours: one bind now says so clearly, instead of N errors later. */
    probe = socket(f.o.src.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0 || bind(probe, (const struct sockaddr *)&f.o.src, f.o.addr_len) < 0) {
        fprintf(stderr, "connflood: cannot bind to %s: %s\n", f.o.src_text, strerror(errno));
        return 1;
    }
    close(probe);

    f.slots = calloc(f.o.concurrency, sizeof(*f.slots));
    f.free_stack = calloc(f.o.concurrency, sizeof(*f.free_stack));
    /* Signals come through a descriptor in the same epoll set: a busy loop, whose waits all
     * return at once, still sees them (a handler would run only inside a wait that sleeps). */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, NULL);
    signal(SIGPIPE, SIG_IGN);
    f.sigfd = signalfd(-1, &block, SFD_NONBLOCK | SFD_CLOEXEC);
    f.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!f.slots || !f.free_stack || f.sigfd < 0 || f.epfd < 0 ||
        epoll_ctl(f.epfd, EPOLL_CTL_ADD, f.sigfd, &sigev) < 0) {
        fprintf(stderr, "connflood: start-up: %s\n", strerror(errno));
        return 1;
    }
    for (uint32_t i = 0; i < f.o.concurrency; i++) {
        f.slots[i] = (struct slot){ .fd = -1, .prev = SLOT_NONE, .next = SLOT_NONE };
        f.free_stack[f.free_count++] = f.o.concurrency - 1 - i;  /* slot 0 first */
    }
    for (unsigned l = 0; l < LIST_COUNT; l++)
        f.lists[l] = (struct dlist){ SLOT_NONE, SLOT_NONE };

    f.start_ns = mono_ns();
    f.end_ns = f.start_ns + (uint64_t)f.o.duration_s * NS_PER_S;
    for (;;) {
        uint64_t now = mono_ns(), w;
        struct timespec ts;
        int n;

        if (f.stop == STOP_NONE) {
            f.stop = f.got_signal ? STOP_SIGNAL : now >= f.end_ns ? STOP_DURATION
                   : f.attempts >= f.o.attempts_max ? STOP_MAX : STOP_NONE;
            if (f.stop != STOP_NONE)
                f.stop_ns = now;
        }
        if (f.got_signal)
            abort_all(&f);
        expire(&f, now);
        if (f.stop != STOP_NONE && f.free_count == f.o.concurrency)
            break;
        if (f.stop == STOP_NONE)
            attempts_start(&f, now);

        w = wait_ns(&f, mono_ns());
        ts.tv_sec = (time_t)(w / NS_PER_S);
        ts.tv_nsec = (long)(w % NS_PER_S);
        n = epoll_pwait2(f.epfd, events, EVENTS_BATCH_MAX, &ts, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "connflood: epoll_pwait2: %s\n", strerror(errno));
            return 1;
        }
        now = mono_ns();
        for (int k = 0; k < n; k++)
            on_event(&f, &events[k], now);
    }

    for (unsigned o = 0; o < OUT_COUNT; o++)
        sum += f.outcome[o];
    if (sum != f.attempts) {
        fprintf(stderr, "connflood: internal error: %" PRIu64 " outcomes for %" PRIu64
                " attempts\n", sum, f.attempts);
        abort();
    }
    print_summary(&f);
    close(f.epfd);
    close(f.sigfd);
    free(f.slots);
    free(f.free_stack);
    return 0;
}
