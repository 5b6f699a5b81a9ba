/*
 * dovecot_auth.c - the client side of Dovecot's authentication protocol: line buffer,
 * handshake, replies, the AUTH line, and one blocking connection with timeouts.
 *
 * FUNCTIONS
 *   dovecot_linebuf_reset(), dovecot_linebuf_space(), dovecot_linebuf_commit(),
 *   dovecot_linebuf_next()      bounded bytes-to-lines
 *   dovecot_handshake_line()    the server's handshake, one line at a time
 *   dovecot_reply_parse()       an OK, FAIL or CONT line
 *   dovecot_reply_verdict()     what a reply means for the login
 *   dovecot_format_auth()       the AUTH line of one PLAIN check
 *   dovecot_client_init(), dovecot_client_connect(), dovecot_client_send_auth(),
 *   dovecot_client_fd(), dovecot_client_read(), dovecot_client_reply(),
 *   dovecot_client_close()      the connection
 *
 * DECISIONS
 *   - PLAIN with the whole response in the AUTH line (resp=, which Dovecot requires to be
 *     the last parameter): one line out, one line back. authzid is empty.
 *   - "secured" is always sent: whether a password may cross the network in clear is
 *     ringrelay's decision ([auth] plaintext, checked before AUTH is accepted), and Dovecot's
 *     disable_plaintext_auth would otherwise refuse every login from a client that used
 *     STARTTLS with ringrelay but not with Dovecot. "nologin" is sent as Postfix does (older
 *     Dovecots use it; 2.3 ignores it). "no-penalty" is not sent: Dovecot's penalty for a
 *     client address with recent failures (rip=) then covers SMTP as it covers POP and IMAP.
 *   - An OK with "nologin" or "proxy" is a refusal: nologin is how a Dovecot administrator
 *     disables a user while keeping the password, and a proxied user's password may never
 *     have been checked here (the backend checks it).
 *   - FAIL with "code=temp_fail" (2.3) or "temp" (2.2) is temporary: the login is neither
 *     granted nor counted as a wrong password.
 *   - Strict where a mistake would grant a login, tolerant where Dovecot may grow: unknown
 *     handshake commands and unknown reply parameters are skipped (the protocol says to), but
 *     the shape of every line, the ids, VERSION 1 and DONE are checked exactly. A reply that
 *     does not parse, is CONT, or names an id not in flight means the connection is out of
 *     step: the caller closes it, fails what was in flight, and reconnects next time.
 *
 * SECURITY
 *   Every byte from the socket is untrusted (the socket may be anyone's if the path is wrong):
 *   lines are bounded (DOVECOT_LINE_BYTES_MAX) before they are looked at, parsed without
 *   copying, and only exact keys are compared; values (user=, reason=) are never used. The
 *   password travels only in base64 inside the AUTH line; the scratch message and the line
 *   are wiped with explicit_bzero() once formatted and sent. Every wait is bounded: connect
 *   and each send by SO_SNDTIMEO, the handshake by a deadline, replies by the caller's poll.
 *   SIGPIPE is never raised (MSG_NOSIGNAL).
 *
 * STANDARDS
 *   Dovecot authentication protocol v1.2 (doc.dovecot.org, "Dovecot Authentication
 *   Protocol"): handshake, AUTH parameters (service, secured, rip, resp), OK/FAIL/CONT and
 *   their parameters (nologin, proxy, code=temp_fail, temp). RFC 4616 (PLAIN message),
 *   RFC 4648 4 (base64, through net/sasl.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/dovecot_auth.h"
#include "net/sasl.h"

_Static_assert(DOVECOT_SOCKET_PATH_BYTES_MAX == sizeof(((struct sockaddr_un *)0)->sun_path),
               "socket path bound is sun_path");
_Static_assert(DOVECOT_IP_BYTES_MAX >= INET6_ADDRSTRLEN, "an IPv6 address fits");

/* The parts of the AUTH line around the numbers and the base64 text. */
#define AUTH_HEAD "AUTH\t%u\tPLAIN\tservice=smtp\tsecured\tnologin"
#define PLAIN_MESSAGE_BYTES_MAX (1 + DOVECOT_USER_BYTES_MAX + 1 + DOVECOT_PASSWORD_BYTES_MAX)
_Static_assert(sizeof(AUTH_HEAD) + 10 + sizeof("\trip=") + DOVECOT_IP_BYTES_MAX +
               sizeof("\tresp=") + SASL_B64_ENCODED_BYTES(PLAIN_MESSAGE_BYTES_MAX) + 2
               <= DOVECOT_REQUEST_BYTES_MAX, "the longest AUTH line fits");

/* ---- lines ---- */

/* dovecot_linebuf_reset - nothing held. */
void dovecot_linebuf_reset(struct dovecot_linebuf *lb)
{
    lb->start = lb->len = 0;
}

/* dovecot_linebuf_space - compact, then the free tail. */
char *dovecot_linebuf_space(struct dovecot_linebuf *lb, size_t *room)
{
    if (lb->start) {
        memmove(lb->buf, lb->buf + lb->start, lb->len - lb->start);
        lb->len -= lb->start;
        lb->start = 0;
    }
    *room = sizeof(lb->buf) - lb->len;
    return lb->buf + lb->len;
}

/* dovecot_linebuf_commit - n more bytes held. */
void dovecot_linebuf_commit(struct dovecot_linebuf *lb, size_t n)
{
    lb->len += n;
}

/* dovecot_linebuf_next - the next line up to LF, bounded. */
int dovecot_linebuf_next(struct dovecot_linebuf *lb, const char **line, size_t *len)
{
    const char *p = lb->buf + lb->start;
    size_t held = lb->len - lb->start;
    const char *lf = memchr(p, '\n', held);

    if (!lf)
        return held > DOVECOT_LINE_BYTES_MAX ? -EMSGSIZE : 0;
    *line = p;
    *len = (size_t)(lf - p);
    if (*len > DOVECOT_LINE_BYTES_MAX)   /* cannot happen with this buffer; kept exact */
        return -EMSGSIZE;
    lb->start += *len + 1;
    return 1;
}

/* ---- fields ---- */

/* A cursor over the TAB-separated fields of one line. */
struct fields {
    const char *p, *end;          /* the rest of the line */
    bool done;                    /* the last field was taken */
};

/* next_field - the next field in *field, *flen; false when none is left. A line of n TABs
 * has n + 1 fields, empty ones included. */
static bool next_field(struct fields *f, const char **field, size_t *flen)
{
    const char *tab;

    if (f->done)
        return false;
    tab = memchr(f->p, '\t', (size_t)(f->end - f->p));
    *field = f->p;
    *flen = (size_t)((tab ? tab : f->end) - f->p);
    if (tab)
        f->p = tab + 1;
    else
        f->done = true;
    return true;
}

/* is - whether field[0..len) is exactly the string s. */
static bool is(const char *field, size_t len, const char *s)
{
    return strlen(s) == len && memcmp(field, s, len) == 0;
}

/* parse_u32 - a canonical decimal number (no sign, no leading zero, below 2^32). */
static bool parse_u32(const char *s, size_t len, uint32_t *out)
{
    uint64_t v = 0;

    if (len == 0 || len > 10 || (len > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* key_is - whether param[0..len) is key alone or "key=value". */
static bool key_is(const char *param, size_t len, const char *key)
{
    size_t k = strlen(key);

    return len >= k && memcmp(param, key, k) == 0 && (len == k || param[k] == '=');
}

/* command_ok - a handshake command name: 1..32 of A-Z 0-9 _ -. */
static bool command_ok(const char *s, size_t len)
{
    if (len == 0 || len > 32)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
              s[i] == '-'))
            return false;
    return true;
}

/* ---- the handshake ---- */

/* dovecot_handshake_line - one server line before DONE. */
int dovecot_handshake_line(struct dovecot_handshake *h, const char *line, size_t len)
{
    struct fields f = { line, line + len, false };
    const char *cmd, *a, *b;
    size_t cmd_len, a_len, b_len;
    uint32_t major, minor;

    if (h->lines >= DOVECOT_HANDSHAKE_LINES_MAX || len > DOVECOT_LINE_BYTES_MAX ||
        memchr(line, '\0', len))
        return -EPROTO;
    h->lines++;
    next_field(&f, &cmd, &cmd_len);
    if (!command_ok(cmd, cmd_len))
        return -EPROTO;

    if (!h->version || is(cmd, cmd_len, "VERSION")) {
        /* VERSION TAB 1 TAB minor, first and once */
        if (h->version || !is(cmd, cmd_len, "VERSION") || !next_field(&f, &a, &a_len) ||
            !next_field(&f, &b, &b_len) || next_field(&f, &cmd, &cmd_len) ||
            !parse_u32(a, a_len, &major) || major != 1 || !parse_u32(b, b_len, &minor))
            return -EPROTO;
        h->version = true;
        return 0;
    }
    if (is(cmd, cmd_len, "MECH")) {
        if (!next_field(&f, &a, &a_len) || a_len == 0)
            return -EPROTO;
        if (is(a, a_len, "PLAIN"))
            h->plain = true;
        return 0;
    }
    if (is(cmd, cmd_len, "DONE"))
        return len == 4 && h->plain ? 1 : -EPROTO;
    return 0;                     /* SPID, CUID, COOKIE, and what a later version adds */
}

/* ---- replies ---- */

/* dovecot_reply_parse - OK / FAIL / CONT with an id. */
int dovecot_reply_parse(const char *line, size_t len, struct dovecot_reply *r)
{
    struct fields f = { line, line + len, false };
    const char *field;
    size_t flen;

    memset(r, 0, sizeof(*r));
    if (len > DOVECOT_LINE_BYTES_MAX || memchr(line, '\0', len))
        return -EPROTO;
    next_field(&f, &field, &flen);
    if (is(field, flen, "OK"))
        r->kind = DOVECOT_REPLY_OK;
    else if (is(field, flen, "FAIL"))
        r->kind = DOVECOT_REPLY_FAIL;
    else if (is(field, flen, "CONT"))
        r->kind = DOVECOT_REPLY_CONT;
    else
        return -EPROTO;
    if (!next_field(&f, &field, &flen) || !parse_u32(field, flen, &r->id))
        return -EPROTO;

    if (r->kind == DOVECOT_REPLY_CONT)   /* exactly one data field, maybe empty */
        return next_field(&f, &field, &flen) && !next_field(&f, &field, &flen) ? 0 : -EPROTO;
    while (next_field(&f, &field, &flen)) {
        if (r->kind == DOVECOT_REPLY_OK) {
            r->nologin |= key_is(field, flen, "nologin");
            r->proxy |= key_is(field, flen, "proxy");
        } else {
            r->temp |= is(field, flen, "temp") || is(field, flen, "code=temp_fail");
        }
    }
    return 0;
}

/* dovecot_reply_verdict - granted only by a plain OK. */
enum dovecot_verdict dovecot_reply_verdict(const struct dovecot_reply *r)
{
    switch (r->kind) {
    case DOVECOT_REPLY_OK:
        return r->nologin || r->proxy ? DOVECOT_DENIED : DOVECOT_GRANTED;
    case DOVECOT_REPLY_FAIL:
        return r->temp ? DOVECOT_TEMPFAIL : DOVECOT_DENIED;
    case DOVECOT_REPLY_CONT:
        break;
    }
    return DOVECOT_PROTOCOL;
}

/* ---- the request ---- */

/* rip_ok - an address text: 1..DOVECOT_IP_BYTES_MAX-1 of hex digits, '.' and ':'. */
static bool rip_ok(const char *rip)
{
    size_t len = strnlen(rip, DOVECOT_IP_BYTES_MAX);

    if (len == 0 || len >= DOVECOT_IP_BYTES_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((rip[i] >= '0' && rip[i] <= '9') || (rip[i] >= 'a' && rip[i] <= 'f') ||
              (rip[i] >= 'A' && rip[i] <= 'F') || rip[i] == '.' || rip[i] == ':'))
            return false;
    return true;
}

/* dovecot_format_auth - "AUTH id PLAIN service=smtp secured nologin [rip=] resp=" LF. */
int dovecot_format_auth(char *out, size_t cap, uint32_t id, const char *user, size_t user_len,
                        const char *password, size_t password_len, const char *rip)
{
    unsigned char msg[PLAIN_MESSAGE_BYTES_MAX];
    size_t msg_len = 0, b64_len = 0;
    int head, err;

    if (!user_len || user_len > DOVECOT_USER_BYTES_MAX || memchr(user, '\0', user_len) ||
        password_len > DOVECOT_PASSWORD_BYTES_MAX || memchr(password, '\0', password_len) ||
        (rip && *rip && !rip_ok(rip)))
        return -EINVAL;
    head = snprintf(out, cap, AUTH_HEAD "%s%s\tresp=", id, rip && *rip ? "\trip=" : "",
                    rip && *rip ? rip : "");
    if (head < 0 || (size_t)head >= cap)
        return -EMSGSIZE;

    msg[msg_len++] = '\0';        /* empty authzid */
    memcpy(msg + msg_len, user, user_len);
    msg_len += user_len;
    msg[msg_len++] = '\0';
    memcpy(msg + msg_len, password, password_len);
    msg_len += password_len;
    /* base64 and its NUL go after the head; one byte more is kept for the LF */
    err = cap - (size_t)head < 2 ? SASL_B64_TOO_LONG :
          sasl_b64_encode(msg, msg_len, out + head, cap - (size_t)head - 1, &b64_len);
    explicit_bzero(msg, sizeof(msg));
    if (err != SASL_B64_OK) {
        explicit_bzero(out, cap);
        return -EMSGSIZE;
    }
    out[head + b64_len] = '\n';
    out[head + b64_len + 1] = '\0';
    return head + (int)b64_len + 1;
}

/* ---- the connection ---- */

/* now_ms - monotonic milliseconds. */
static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* send_all - all of buf, each send bounded by SO_SNDTIMEO; 0 or -errno. */
static int send_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* dovecot_client_init - closed, with its timeout. */
void dovecot_client_init(struct dovecot_client *c, unsigned io_timeout_ms)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->next_id = 1;
    c->io_timeout_ms = io_timeout_ms ? io_timeout_ms : DOVECOT_IO_TIMEOUT_MS;
}

/* dovecot_client_close - forget the connection. */
void dovecot_client_close(struct dovecot_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->path[0] = '\0';
    dovecot_linebuf_reset(&c->in);
}

/* dovecot_client_fd - the socket, or -1. */
int dovecot_client_fd(const struct dovecot_client *c)
{
    return c->fd;
}

/* dovecot_client_read - one non-blocking read into the line buffer. */
int dovecot_client_read(struct dovecot_client *c)
{
    size_t room;
    char *at;
    ssize_t n;

    if (c->fd < 0)
        return -ENOTCONN;
    at = dovecot_linebuf_space(&c->in, &room);
    if (!room)
        return -EMSGSIZE;
    n = recv(c->fd, at, room, MSG_DONTWAIT);
    if (n == 0)
        return -ECONNRESET;
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN : -errno;
    dovecot_linebuf_commit(&c->in, (size_t)n);
    return (int)n;
}

/* handshake - read the server's lines up to DONE before deadline; 0 or -errno. */
static int handshake(struct dovecot_client *c, uint64_t deadline)
{
    struct dovecot_handshake h = { 0 };
    const char *line;
    size_t len;

    for (;;) {
        int got = dovecot_linebuf_next(&c->in, &line, &len);
        if (got < 0)
            return got;
        if (got) {
            int r = dovecot_handshake_line(&h, line, len);
            if (r)
                return r < 0 ? r : 0;
            continue;
        }
        uint64_t now = now_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        uint64_t left = deadline - now;
        int n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n > 0) {
            int r = dovecot_client_read(c);
            if (r < 0 && r != -EAGAIN)
                return r;
        }
    }
}

/* dovecot_client_connect - connect, send VERSION and CPID, read up to DONE. */
int dovecot_client_connect(struct dovecot_client *c, const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    size_t plen = strnlen(path, sizeof(sun.sun_path));
    struct timeval tv = { .tv_sec = c->io_timeout_ms / 1000,
                          .tv_usec = (c->io_timeout_ms % 1000) * 1000 };
    uint64_t deadline = now_ms() + c->io_timeout_ms;
    char hello[64];
    int n, err;

    dovecot_client_close(c);
    if (plen == 0)
        return -EINVAL;
    if (plen >= sizeof(sun.sun_path))
        return -ENAMETOOLONG;
    memcpy(sun.sun_path, path, plen + 1);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    /* bounds connect (a full backlog) and every send */
    if (setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv))) {
        err = -errno;
        goto err;
    }
    if (connect(c->fd, (struct sockaddr *)&sun, sizeof(sun))) {
        err = errno == EAGAIN ? -ETIMEDOUT : -errno;
        goto err;
    }
    n = snprintf(hello, sizeof(hello), "VERSION\t1\t2\nCPID\t%u\n", (unsigned)gettid());
    err = send_all(c->fd, hello, (size_t)n);
    if (!err)
        err = handshake(c, deadline);
    if (err)
        goto err;
    memcpy(c->path, path, plen + 1);
    c->next_id = 1;
    return 0;

err:
    dovecot_client_close(c);
    return err;
}

/* dovecot_client_send_auth - format, send, wipe. */
int dovecot_client_send_auth(struct dovecot_client *c, const char *user, size_t user_len,
                             const char *password, size_t password_len, const char *rip,
                             uint32_t *id)
{
    char line[DOVECOT_REQUEST_BYTES_MAX];
    int n, err;

    if (c->fd < 0)
        return -ENOTCONN;
    n = dovecot_format_auth(line, sizeof(line), c->next_id, user, user_len, password,
                            password_len, rip);
    if (n < 0)
        return n;
    err = send_all(c->fd, line, (size_t)n);
    explicit_bzero(line, (size_t)n);
    if (err)
        return err;
    *id = c->next_id;
    c->next_id = c->next_id == UINT32_MAX ? 1 : c->next_id + 1;
    return 0;
}

/* dovecot_client_reply - the next reply held. */
int dovecot_client_reply(struct dovecot_client *c, struct dovecot_reply *r)
{
    const char *line;
    size_t len;
    int got = dovecot_linebuf_next(&c->in, &line, &len);

    if (got <= 0)
        return got;
    return dovecot_reply_parse(line, len, r) ? -EPROTO : 1;
}
