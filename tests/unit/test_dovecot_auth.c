/*
 * test_dovecot_auth.c - the Dovecot auth client (core/dovecot_auth.c) and the auth pool's
 * Dovecot backend (core/auth_pool.c).
 *
 * Tables for the pure layer: the line buffer (lines split across reads, an overlong line),
 * the server handshake (one row per dialogue), replies (OK, FAIL, temp, nologin, proxy, CONT,
 * malformed ids, NUL, unknown commands), the AUTH line.
 *
 * Then a fake Dovecot on a unix socket, on its own thread: it sends a handshake chosen by the
 * test, checks every line the client sends (VERSION, CPID, AUTH with increasing ids, the
 * parameters, resp= last and decoding to "\0user\0password") and answers by user name:
 * right and wrong passwords, temp_fail, nologin, proxy, CONT, a wrong id, garbage, an
 * overlong line, a NUL, closing, silence, and a reply held back until the next request's.
 * The connection primitives run against it, then the pool: reuse of one connection, many
 * requests in flight, reconnects after each kind of error, a dead socket, a path change, the
 * cache, a reply timeout, a stop with requests in flight.
 *
 * No assertion is about time. A timeout a test expects to expire is short and is the only
 * thing its pool or connection waits for; every other wait has the default timeouts, and
 * the waits for a result are safety nets of 10 s that report what came.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/auth_pool.h"
#include "core/dovecot_auth.h"
#include "net/sasl.h"
#include "tests/unit/check.h"

#define S(s) s, sizeof(s) - 1           /* a literal that may hold NUL bytes, and its length */
#define ALICE_PW "alice pw"

static char dir[] = "/tmp/rr-test-dove-XXXXXX";

/* ---- the line buffer ---- */

/* feed - copy n bytes into lb as a read would. */
static void feed(struct dovecot_linebuf *lb, const char *s, size_t n)
{
    size_t room;
    char *at = dovecot_linebuf_space(lb, &room);

    if (n > room)
        n = room;
    memcpy(at, s, n);
    dovecot_linebuf_commit(lb, n);
}

static void test_linebuf(void)
{
    static struct dovecot_linebuf lb;
    static char big[DOVECOT_LINE_BYTES_MAX + 2];
    const char *line;
    size_t len, room;

    dovecot_linebuf_reset(&lb);
    CHECK(dovecot_linebuf_next(&lb, &line, &len) == 0, "empty");
    feed(&lb, S("OK\t1\tuser=a\nFA"));
    CHECK(dovecot_linebuf_next(&lb, &line, &len) == 1 && len == 11 &&
          memcmp(line, "OK\t1\tuser=a", 11) == 0, "first line");
    CHECK(dovecot_linebuf_next(&lb, &line, &len) == 0, "half a line");
    feed(&lb, S("IL\t2\n\n"));
    CHECK(dovecot_linebuf_next(&lb, &line, &len) == 1 && len == 6 &&
          memcmp(line, "FAIL\t2", 6) == 0, "joined across reads");
    CHECK(dovecot_linebuf_next(&lb, &line, &len) == 1 && len == 0, "empty line");
    CHECK(dovecot_linebuf_next(&lb, &line, &len) == 0, "drained");

    /* The longest line fits with its LF; one byte more without an LF is an error. */
    memset(big, 'a', sizeof(big));
    big[DOVECOT_LINE_BYTES_MAX] = '\n';
    feed(&lb, big, DOVECOT_LINE_BYTES_MAX + 1);
    CHECK(dovecot_linebuf_next(&lb, &line, &len) == 1 && len == DOVECOT_LINE_BYTES_MAX,
          "longest line");
    memset(big, 'b', sizeof(big));
    feed(&lb, big, DOVECOT_LINE_BYTES_MAX);
    CHECK(dovecot_linebuf_next(&lb, &line, &len) == 0, "longest line without its LF yet");
    feed(&lb, "b", 1);
    CHECK(dovecot_linebuf_next(&lb, &line, &len) == -EMSGSIZE, "one byte over");
    dovecot_linebuf_space(&lb, &room);
    CHECK(room == 0, "no room past the bound");
}

/* ---- the handshake ---- */

struct hs_row {
    const char *name;
    const char *lines;            /* server lines, each ending in LF */
    size_t len;                   /* bytes of lines (a row may hold a NUL) */
    int want;                     /* 1 usable, -EPROTO, 0 still waiting after the last */
};

#define GOOD_TAIL "MECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t31048\nCUID\t1\n" \
                  "COOKIE\t9cda9fedcb116d709544719f5675ed70\nDONE\n"

static const struct hs_row hs_rows[] = {
    { "dovecot 2.3", S("VERSION\t1\t2\n" GOOD_TAIL), 1 },
    { "minor 3, new command", S("VERSION\t1\t3\nFEATURE\tx\n" GOOD_TAIL), 1 },
    { "PLAIN last", S("VERSION\t1\t2\nMECH\tLOGIN\nMECH\tPLAIN\nDONE\n"), 1 },
    { "not done yet", S("VERSION\t1\t2\nMECH\tPLAIN\n"), 0 },
    { "major 2", S("VERSION\t2\t0\n" GOOD_TAIL), -EPROTO },
    { "major 01", S("VERSION\t01\t2\n" GOOD_TAIL), -EPROTO },
    { "version not first", S("SPID\t1\nVERSION\t1\t2\n" GOOD_TAIL), -EPROTO },
    { "version twice", S("VERSION\t1\t2\nVERSION\t1\t2\n" GOOD_TAIL), -EPROTO },
    { "version extra field", S("VERSION\t1\t2\tx\n" GOOD_TAIL), -EPROTO },
    { "version no minor", S("VERSION\t1\n" GOOD_TAIL), -EPROTO },
    { "version minor sign", S("VERSION\t1\t+2\n" GOOD_TAIL), -EPROTO },
    { "no PLAIN", S("VERSION\t1\t2\nMECH\tLOGIN\nMECH\tplain\nDONE\n"), -EPROTO },
    { "empty MECH", S("VERSION\t1\t2\nMECH\t\nDONE\n"), -EPROTO },
    { "MECH alone", S("VERSION\t1\t2\nMECH\nDONE\n"), -EPROTO },
    { "DONE with a field", S("VERSION\t1\t2\nMECH\tPLAIN\nDONE\tx\n"), -EPROTO },
    { "lower-case command", S("VERSION\t1\t2\nspid\t1\n" GOOD_TAIL), -EPROTO },
    { "empty line", S("VERSION\t1\t2\n\n" GOOD_TAIL), -EPROTO },
    { "CR", S("VERSION\t1\t2\r\n" GOOD_TAIL), -EPROTO },
    { "NUL", S("VERSION\t1\t2\nSPID\t\0\n" GOOD_TAIL), -EPROTO },
    { "an OK instead", S("VERSION\t1\t2\nOK\t1\n" GOOD_TAIL), 1 },  /* skipped: unknown */
};

/* run_handshake - feed the row's lines; the first non-zero answer, else 0. */
static int run_handshake(const char *lines, size_t n)
{
    struct dovecot_handshake h = { 0 };
    const char *p = lines, *end = lines + n;

    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        int r = dovecot_handshake_line(&h, p, (size_t)(lf - p));
        if (r)
            return r;
        p = lf + 1;
    }
    return 0;
}

static void test_handshake(void)
{
    char many[16 * (DOVECOT_HANDSHAKE_LINES_MAX + 2)];
    size_t n = 0;

    for (size_t i = 0; i < sizeof(hs_rows) / sizeof(hs_rows[0]); i++) {
        const struct hs_row *row = &hs_rows[i];
        int got = run_handshake(row->lines, row->len);
        CHECK(got == row->want, "handshake '%s': %d, want %d", row->name, got, row->want);
    }
    n += (size_t)snprintf(many + n, sizeof(many) - n, "VERSION\t1\t2\nMECH\tPLAIN\n");
    for (unsigned i = 2; i < DOVECOT_HANDSHAKE_LINES_MAX; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "SPID\t%u\n", i);
    CHECK(run_handshake(many, n) == 0, "lines up to the bound");
    memcpy(many + n, "DONE\n", 5);
    CHECK(run_handshake(many, n + 5) == -EPROTO, "DONE past the bound");
}

/* ---- replies ---- */

struct reply_row {
    const char *name;
    const char *line;
    size_t len;
    int err;                      /* 0 or -EPROTO */
    enum dovecot_reply_kind kind;
    uint32_t id;
    enum dovecot_verdict verdict;
};

#define ROW_OK(name, line, kind, id, verdict) { name, S(line), 0, kind, id, verdict }
#define ROW_BAD(name, line) { name, S(line), -EPROTO, 0, 0, 0 }

static const struct reply_row reply_rows[] = {
    ROW_OK("ok", "OK\t1\tuser=alice", DOVECOT_REPLY_OK, 1, DOVECOT_GRANTED),
    ROW_OK("ok bare", "OK\t7", DOVECOT_REPLY_OK, 7, DOVECOT_GRANTED),
    ROW_OK("ok max id", "OK\t4294967295", DOVECOT_REPLY_OK, 4294967295u, DOVECOT_GRANTED),
    ROW_OK("ok id 0", "OK\t0", DOVECOT_REPLY_OK, 0, DOVECOT_GRANTED),
    ROW_OK("ok empty param", "OK\t3\t", DOVECOT_REPLY_OK, 3, DOVECOT_GRANTED),
    ROW_OK("ok unknown params", "OK\t3\tuser=a\tfoo\tbar=baz=q", DOVECOT_REPLY_OK, 3,
         DOVECOT_GRANTED),
    ROW_OK("nologin", "OK\t5\tuser=carol\tnologin\treason=gone", DOVECOT_REPLY_OK, 5,
         DOVECOT_DENIED),
    ROW_OK("nologin=Y", "OK\t5\tnologin=Y", DOVECOT_REPLY_OK, 5, DOVECOT_DENIED),
    ROW_OK("nologin=", "OK\t5\tnologin=", DOVECOT_REPLY_OK, 5, DOVECOT_DENIED),
    ROW_OK("proxy", "OK\t6\tuser=t\tproxy\thost=127.0.0.2", DOVECOT_REPLY_OK, 6, DOVECOT_DENIED),
    ROW_OK("nologinx is not nologin", "OK\t5\tnologinx\tproxyy=1", DOVECOT_REPLY_OK, 5,
         DOVECOT_GRANTED),
    ROW_OK("nologin in a value", "OK\t5\tuser=nologin\treason=proxy", DOVECOT_REPLY_OK, 5,
         DOVECOT_GRANTED),
    ROW_OK("escaped tab", "OK\t5\tuser=a\001tnologin", DOVECOT_REPLY_OK, 5, DOVECOT_GRANTED),
    ROW_OK("fail", "FAIL\t2\tuser=alice", DOVECOT_REPLY_FAIL, 2, DOVECOT_DENIED),
    ROW_OK("fail bare", "FAIL\t2", DOVECOT_REPLY_FAIL, 2, DOVECOT_DENIED),
    ROW_OK("fail temp_fail", "FAIL\t2\tuser=a\tcode=temp_fail", DOVECOT_REPLY_FAIL, 2,
         DOVECOT_TEMPFAIL),
    ROW_OK("fail temp (2.2)", "FAIL\t2\ttemp", DOVECOT_REPLY_FAIL, 2, DOVECOT_TEMPFAIL),
    ROW_OK("fail other code", "FAIL\t2\tcode=user_disabled", DOVECOT_REPLY_FAIL, 2,
         DOVECOT_DENIED),
    ROW_OK("fail temp= is not temp", "FAIL\t2\ttemp=1\tcode=temp_failx", DOVECOT_REPLY_FAIL, 2,
         DOVECOT_DENIED),
    ROW_OK("fail nologin is just a fail", "FAIL\t2\tnologin", DOVECOT_REPLY_FAIL, 2,
         DOVECOT_DENIED),
    ROW_OK("ok temp is just an ok", "OK\t2\ttemp", DOVECOT_REPLY_OK, 2, DOVECOT_GRANTED),
    ROW_OK("cont", "CONT\t9\t", DOVECOT_REPLY_CONT, 9, DOVECOT_PROTOCOL),
    ROW_OK("cont data", "CONT\t9\tVXNlcm5hbWU6", DOVECOT_REPLY_CONT, 9, DOVECOT_PROTOCOL),
    ROW_BAD("cont no data", "CONT\t9"),
    ROW_BAD("cont two fields", "CONT\t9\ta\tb"),
    ROW_BAD("empty", ""),
    ROW_BAD("ok no id", "OK"),
    ROW_BAD("ok empty id", "OK\t"),
    ROW_BAD("ok lower case", "ok\t1"),
    ROW_BAD("ok space", "OK 1"),
    ROW_BAD("ok leading zero", "OK\t01"),
    ROW_BAD("ok sign", "OK\t+1"),
    ROW_BAD("ok minus", "OK\t-1"),
    ROW_BAD("ok id 2^32", "OK\t4294967296"),
    ROW_BAD("ok id 11 digits", "OK\t10000000000"),
    ROW_BAD("ok id hex", "OK\t0x1"),
    ROW_BAD("ok id space", "OK\t1 "),
    ROW_BAD("ok CR", "OK\t1\r"),
    ROW_BAD("ok NUL in id", "OK\t1\0"),
    ROW_BAD("ok NUL in param", "OK\t1\tuser=a\0b"),
    ROW_BAD("unknown command", "HELLO\t1"),
    ROW_BAD("handshake line", "DONE"),
    ROW_BAD("leading tab", "\tOK\t1"),
};

static void test_replies(void)
{
    static char big[DOVECOT_LINE_BYTES_MAX + 1];
    struct dovecot_reply r;

    for (size_t i = 0; i < sizeof(reply_rows) / sizeof(reply_rows[0]); i++) {
        const struct reply_row *row = &reply_rows[i];
        int err = dovecot_reply_parse(row->line, row->len, &r);
        CHECK(err == row->err, "reply '%s': %d, want %d", row->name, err, row->err);
        if (err || row->err)
            continue;
        CHECK(r.kind == row->kind && r.id == row->id, "reply '%s': kind %d id %u", row->name,
              r.kind, r.id);
        CHECK(dovecot_reply_verdict(&r) == row->verdict, "reply '%s': verdict %d, want %d",
              row->name, dovecot_reply_verdict(&r), row->verdict);
    }
    memset(big, 'a', sizeof(big));
    memcpy(big, "OK\t1\tx=", 7);
    CHECK(dovecot_reply_parse(big, DOVECOT_LINE_BYTES_MAX, &r) == 0, "longest reply");
    CHECK(dovecot_reply_parse(big, DOVECOT_LINE_BYTES_MAX + 1, &r) == -EPROTO, "too long");
}

/* ---- the AUTH line ---- */

static void test_format(void)
{
    char out[DOVECOT_REQUEST_BYTES_MAX], pw[DOVECOT_PASSWORD_BYTES_MAX + 1];
    char user[DOVECOT_USER_BYTES_MAX + 1];
    int n;

    n = dovecot_format_auth(out, sizeof(out), 1, S("tim"), S("tanstaaftanstaaf"), NULL);
    CHECK(n > 0 && strcmp(out, "AUTH\t1\tPLAIN\tservice=smtp\tsecured\tnologin\t"
                          "resp=AHRpbQB0YW5zdGFhZnRhbnN0YWFm\n") == 0 && n == (int)strlen(out),
          "RFC 4616 example: %s", out);
    n = dovecot_format_auth(out, sizeof(out), 4294967295u, S("a"), S("b"), "192.0.2.1");
    CHECK(n > 0 && strcmp(out, "AUTH\t4294967295\tPLAIN\tservice=smtp\tsecured\tnologin\t"
                          "rip=192.0.2.1\tresp=AGEAYg==\n") == 0, "with rip: %s", out);
    n = dovecot_format_auth(out, sizeof(out), 2, S("a"), S("b"), "2001:db8::1");
    CHECK(n > 0 && strstr(out, "\trip=2001:db8::1\tresp="), "v6 rip: %s", out);
    n = dovecot_format_auth(out, sizeof(out), 2, S("a"), S("b"), "");
    CHECK(n > 0 && !strstr(out, "rip="), "empty rip left out: %s", out);
    n = dovecot_format_auth(out, sizeof(out), 2, S("a\tb"), S("p\tq"), NULL);
    CHECK(n > 0 && strcmp(out, "AUTH\t2\tPLAIN\tservice=smtp\tsecured\tnologin\t"
                          "resp=AGEJYgBwCXE=\n") == 0, "tabs stay inside base64: %s", out);

    /* The longest user and password fit; one byte more does not. */
    memset(user, 'u', sizeof(user));
    memset(pw, 'p', sizeof(pw));
    n = dovecot_format_auth(out, sizeof(out), 4294967295u, user, DOVECOT_USER_BYTES_MAX, pw,
                            DOVECOT_PASSWORD_BYTES_MAX, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    CHECK(n > 0 && out[n - 1] == '\n', "longest request: %d", n);
    CHECK(dovecot_format_auth(out, sizeof(out), 1, user, DOVECOT_USER_BYTES_MAX + 1, S("p"),
                              NULL) == -EINVAL, "user too long");
    CHECK(dovecot_format_auth(out, sizeof(out), 1, S("u"), pw, DOVECOT_PASSWORD_BYTES_MAX + 1,
                              NULL) == -EINVAL, "password too long");
    CHECK(dovecot_format_auth(out, sizeof(out), 1, "", 0, S("p"), NULL) == -EINVAL,
          "empty user");
    CHECK(dovecot_format_auth(out, sizeof(out), 1, S("u\0v"), S("p"), NULL) == -EINVAL,
          "NUL in user");
    CHECK(dovecot_format_auth(out, sizeof(out), 1, S("u"), S("p\0q"), NULL) == -EINVAL,
          "NUL in password");
    CHECK(dovecot_format_auth(out, sizeof(out), 1, S("u"), S("p"), "1.2.3.4\tsecured") ==
          -EINVAL, "tab in rip");
    CHECK(dovecot_format_auth(out, sizeof(out), 1, S("u"), S("p"), "host.example") == -EINVAL,
          "name as rip");
    CHECK(dovecot_format_auth(out, 40, 1, S("u"), S("p"), NULL) == -EMSGSIZE, "cap too small");
    CHECK(dovecot_format_auth(out, 60, 1, S("user"), S("password"), NULL) == -EMSGSIZE &&
          !strstr(out, "resp="), "cap too small for base64, out wiped");
}

/* ---- a fake Dovecot ---- */

enum hs_mode {
    HS_GOOD,                      /* Dovecot 2.3's handshake */
    HS_V2,                        /* VERSION 2 */
    HS_NOPLAIN,                   /* no MECH PLAIN */
    HS_SILENT,                    /* nothing at all */
    HS_LONG,                      /* a line beyond the bound */
    HS_CLOSE,                     /* close at once */
};

struct serve_bufs;

struct fake {
    char path[DOVECOT_SOCKET_PATH_BYTES_MAX];
    int lfd;                      /* listening */
    int stop_efd;                 /* written to stop the thread */
    pthread_t thread;
    pthread_mutex_t lock;         /* guards what follows */
    pthread_cond_t cond;          /* signalled when a counter changes */
    enum hs_mode hs;              /* set by the test */
    unsigned connections;         /* accepted */
    unsigned auths;               /* AUTH lines read */
    unsigned silent;              /* AUTH for "silent" read */
    unsigned bad;                 /* lines from the client that were wrong */
    char last_rip[64];            /* rip= of the last AUTH, "" without */
    char last_bad[256];           /* what was wrong last */
    struct serve_bufs *bufs;      /* the server thread's */
};

/* fake_bad - note a wrong client line. */
static void fake_bad(struct fake *f, const char *what, const char *line)
{
    pthread_mutex_lock(&f->lock);
    f->bad++;
    snprintf(f->last_bad, sizeof(f->last_bad), "%s: %.200s", what, line);
    pthread_mutex_unlock(&f->lock);
}

/* put - write all of s; false when the client is gone. */
static bool put(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        s += w;
        n -= (size_t)w;
    }
    return true;
}

/* putf - write one formatted reply. */
static bool putf(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool putf(int fd, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return put(fd, buf, (size_t)n);
}

/* Per connection: a line reader. */
struct reader {
    int fd, stop_efd;
    char buf[8192];
    size_t len;
};

/* get_line - the next line without its LF into line (NUL terminated); false at EOF, error
 * or stop. */
static bool get_line(struct reader *rd, char *line, size_t cap)
{
    for (;;) {
        char *lf = memchr(rd->buf, '\n', rd->len);
        if (lf) {
            size_t n = (size_t)(lf - rd->buf);
            if (n >= cap)
                return false;
            memcpy(line, rd->buf, n);
            line[n] = '\0';
            memmove(rd->buf, lf + 1, rd->len - n - 1);
            rd->len -= n + 1;
            return true;
        }
        if (rd->len == sizeof(rd->buf))
            return false;
        struct pollfd p[2] = { { .fd = rd->fd, .events = POLLIN },
                               { .fd = rd->stop_efd, .events = POLLIN } };
        if (poll(p, 2, -1) < 0 || p[1].revents)
            return false;
        ssize_t n = recv(rd->fd, rd->buf + rd->len, sizeof(rd->buf) - rd->len, 0);
        if (n <= 0)
            return false;
        rd->len += (size_t)n;
    }
}

/* fake_handshake - send the handshake of mode; false when the connection is to end. */
static bool fake_handshake(int fd, enum hs_mode mode)
{
    char big[DOVECOT_LINE_BYTES_MAX + 16];   /* on this server thread's stack */

    switch (mode) {
    case HS_GOOD:
        return put(fd, S("VERSION\t1\t2\n" GOOD_TAIL));
    case HS_V2:
        return put(fd, S("VERSION\t2\t0\n" GOOD_TAIL));
    case HS_NOPLAIN:
        return put(fd, S("VERSION\t1\t2\nMECH\tLOGIN\tplaintext\nDONE\n"));
    case HS_SILENT:
        return true;
    case HS_LONG:
        memset(big, 'x', sizeof(big));
        memcpy(big, "VERSION\t1\t2\nCOOKIE\t", 19);
        return put(fd, big, sizeof(big));
    case HS_CLOSE:
        break;
    }
    return false;
}

/* check_auth - the AUTH line's shape; fills id, user, password and rip; false when wrong. */
static bool check_auth(struct fake *f, char *line, uint32_t *id, char *user, char *pw,
                       char *rip)
{
    char *field[16], *save = NULL, *p;
    unsigned n = 0;
    unsigned char msg[2048];
    size_t mlen = 0;

    for (p = strtok_r(line, "\t", &save); p && n < 16; p = strtok_r(NULL, "\t", &save))
        field[n++] = p;
    if (n < 7 || strcmp(field[0], "AUTH") || strcmp(field[2], "PLAIN") ||
        strcmp(field[3], "service=smtp") || strcmp(field[4], "secured") ||
        strcmp(field[5], "nologin") || strncmp(field[n - 1], "resp=", 5))
        return false;
    *id = (uint32_t)strtoul(field[1], NULL, 10);
    rip[0] = '\0';
    if (n == 8 && strncmp(field[6], "rip=", 4) == 0)
        snprintf(rip, 64, "%.63s", field[6] + 4);
    else if (n != 7)
        return false;
    p = field[n - 1] + 5;
    if (sasl_b64_decode(p, strlen(p), msg, sizeof(msg) - 1, &mlen) != SASL_B64_OK || mlen < 2 ||
        msg[0] != '\0')
        return false;
    msg[mlen] = '\0';
    const unsigned char *nul = memchr(msg + 1, '\0', mlen - 1);
    if (!nul)
        return false;
    snprintf(user, 300, "%.299s", (const char *)msg + 1);
    snprintf(pw, 1100, "%.1099s", (const char *)nul + 1);
    (void)f;
    return true;
}

/* One connection's buffers (each fake has its own: two may serve at once). */
struct serve_bufs {
    struct reader rd;
    char line[8192], user[300], pw[1100], rip[64];
    char big[DOVECOT_LINE_BYTES_MAX + 64];
};

/* fake_serve - one connection: handshake, then answer AUTH lines until the client goes. */
static void fake_serve(struct fake *f, int fd)
{
    struct serve_bufs *b = f->bufs;
    struct reader *rd = &b->rd;
    char *line = b->line, *user = b->user, *pw = b->pw, *rip = b->rip, *big = b->big;
    uint32_t last_id = 0, later = 0;
    enum hs_mode mode;

    pthread_mutex_lock(&f->lock);
    mode = f->hs;
    f->connections++;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);

    rd->fd = fd;
    rd->stop_efd = f->stop_efd;
    rd->len = 0;
    if (!fake_handshake(fd, mode))
        return;
    if (!get_line(rd, line, sizeof(b->line)))
        return;
    if (strcmp(line, "VERSION\t1\t2"))
        fake_bad(f, "version", line);
    if (!get_line(rd, line, sizeof(b->line)))
        return;
    if (strncmp(line, "CPID\t", 5) || strtoul(line + 5, NULL, 10) == 0)
        fake_bad(f, "cpid", line);

    while (get_line(rd, line, sizeof(b->line))) {
        uint32_t id;
        if (!check_auth(f, line, &id, user, pw, rip)) {
            fake_bad(f, "auth", line);
            continue;
        }
        if (id != last_id + 1)
            fake_bad(f, "id not the next", user);
        last_id = id;
        pthread_mutex_lock(&f->lock);
        f->auths++;
        f->silent += strcmp(user, "silent") == 0;
        snprintf(f->last_rip, sizeof(f->last_rip), "%s", rip);
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);

        bool ok = true;
        if (strcmp(user, "alice") == 0)
            ok = strcmp(pw, ALICE_PW) == 0 ? putf(fd, "OK\t%u\tuser=alice\n", id)
                                           : putf(fd, "FAIL\t%u\tuser=alice\n", id);
        else if (strcmp(user, "temp") == 0)
            ok = putf(fd, "FAIL\t%u\tuser=temp\tcode=temp_fail\n", id);
        else if (strcmp(user, "temp22") == 0)
            ok = putf(fd, "FAIL\t%u\ttemp\n", id);
        else if (strcmp(user, "nologin") == 0)
            ok = putf(fd, "OK\t%u\tuser=nologin\tnologin\treason=gone\n", id);
        else if (strcmp(user, "proxy") == 0)
            ok = putf(fd, "OK\t%u\tuser=proxy\tproxy\thost=192.0.2.9\n", id);
        else if (strcmp(user, "cont") == 0)
            ok = putf(fd, "CONT\t%u\t\n", id);
        else if (strcmp(user, "wrongid") == 0)
            ok = putf(fd, "OK\t%u\n", id + 1000);
        else if (strcmp(user, "garbage") == 0)
            ok = putf(fd, "HELLO\t%u\n", id);
        else if (strcmp(user, "nul") == 0)
            ok = put(fd, "OK\t1\0\n", 6);
        else if (strcmp(user, "long") == 0) {
            memset(big, 'a', sizeof(b->big));
            int n = snprintf(big, 32, "OK\t%u\tx=", id);
            big[n] = 'a';
            big[sizeof(b->big) - 1] = '\n';
            ok = put(fd, big, sizeof(b->big));
        } else if (strcmp(user, "close") == 0)
            return;
        else if (strcmp(user, "silent") == 0)
            ok = true;
        else if (strcmp(user, "later") == 0)
            later = id;
        else
            ok = putf(fd, "FAIL\t%u\tuser=%s\n", id, user);
        if (ok && later && later != id) {   /* the held reply goes after the next one */
            ok = putf(fd, "OK\t%u\tuser=later\n", later);
            later = 0;
        }
        if (!ok)
            return;
    }
}

/* fake_main - accept and serve one connection at a time until stopped. */
static void *fake_main(void *arg)
{
    struct fake *f = arg;

    for (;;) {
        struct pollfd p[2] = { { .fd = f->lfd, .events = POLLIN },
                               { .fd = f->stop_efd, .events = POLLIN } };
        if (poll(p, 2, -1) < 0 || p[1].revents)
            return NULL;
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        fake_serve(f, fd);
        close(fd);
    }
}

/* fake_start - listen at dir/name and serve on a thread. */
static struct fake *fake_start(const char *name)
{
    struct fake *f = rr_calloc(1, sizeof(*f));
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    f->bufs = rr_calloc(1, sizeof(*f->bufs));
    snprintf(f->path, sizeof(f->path), "%s/%s", dir, name);
    memcpy(sun.sun_path, f->path, strlen(f->path) + 1);
    unlink(f->path);
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    f->stop_efd = eventfd(0, EFD_CLOEXEC);
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    if (f->lfd < 0 || f->stop_efd < 0 || bind(f->lfd, (struct sockaddr *)&sun, sizeof(sun)) ||
        listen(f->lfd, 16) || pthread_create(&f->thread, NULL, fake_main, f)) {
        perror("fake dovecot");
        exit(2);
    }
    return f;
}

/* fake_set - the handshake of the next connections. */
static void fake_set(struct fake *f, enum hs_mode mode)
{
    pthread_mutex_lock(&f->lock);
    f->hs = mode;
    pthread_mutex_unlock(&f->lock);
}

/* fake_get - a counter, read under the lock. */
static unsigned fake_get(struct fake *f, const unsigned *counter)
{
    pthread_mutex_lock(&f->lock);
    unsigned v = *counter;
    pthread_mutex_unlock(&f->lock);
    return v;
}

/* fake_wait - until *counter reaches want (10 s at most); its value. */
static unsigned fake_wait(struct fake *f, const unsigned *counter, unsigned want)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&f->lock);
    while (*counter < want && pthread_cond_timedwait(&f->cond, &f->lock, &until) == 0)
        ;
    unsigned v = *counter;
    pthread_mutex_unlock(&f->lock);
    return v;
}

/* fake_stop - stop the thread, close, remove the socket; reports client mistakes. */
static void fake_stop(struct fake *f)
{
    uint64_t one = 1;

    if (write(f->stop_efd, &one, sizeof(one)) != sizeof(one))
        exit(2);
    pthread_join(f->thread, NULL);
    CHECK(f->bad == 0, "%s: %u bad client lines, last: %s", f->path, f->bad, f->last_bad);
    close(f->lfd);
    close(f->stop_efd);
    unlink(f->path);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f->bufs);
    free(f);
}

/* ---- the connection, against the fake ---- */

/* wait_reply - poll c until one reply is parsed (10 s at most); 1, or the error. */
static int wait_reply(struct dovecot_client *c, struct dovecot_reply *r)
{
    for (int rounds = 0; rounds < 100; rounds++) {
        int got = dovecot_client_reply(c, r);
        if (got)
            return got;
        struct pollfd p = { .fd = dovecot_client_fd(c), .events = POLLIN };
        if (poll(&p, 1, 100) < 0)
            return -errno;
        if (p.revents) {
            int n = dovecot_client_read(c);
            if (n < 0 && n != -EAGAIN)
                return n;
        }
    }
    return -ETIMEDOUT;
}

static void test_client(void)
{
    struct fake *f = fake_start("conn");
    struct dovecot_client c;
    struct dovecot_reply r;
    uint32_t id = 0, id2 = 0;
    char longpath[DOVECOT_SOCKET_PATH_BYTES_MAX + 1];
    int err;

    dovecot_client_init(&c, 0);
    CHECK(c.io_timeout_ms == DOVECOT_IO_TIMEOUT_MS && dovecot_client_fd(&c) == -1, "init");
    CHECK(dovecot_client_send_auth(&c, S("alice"), S(ALICE_PW), NULL, &id) == -ENOTCONN,
          "send before connect");
    CHECK((err = dovecot_client_connect(&c, f->path)) == 0, "connect: %d", err);
    CHECK(strcmp(c.path, f->path) == 0 && dovecot_client_fd(&c) >= 0, "connected");

    CHECK(dovecot_client_send_auth(&c, S("alice"), S(ALICE_PW), "192.0.2.7", &id) == 0 &&
          id == 1, "first id 1: %u", id);
    CHECK(wait_reply(&c, &r) == 1 && r.id == 1 && dovecot_reply_verdict(&r) == DOVECOT_GRANTED,
          "alice granted");
    CHECK(fake_wait(f, &f->auths, 1) == 1 && strcmp(f->last_rip, "192.0.2.7") == 0,
          "rip sent: '%s'", f->last_rip);
    CHECK(dovecot_client_send_auth(&c, S("alice"), S("wrong"), NULL, &id) == 0 && id == 2,
          "second id 2");
    CHECK(wait_reply(&c, &r) == 1 && r.id == 2 && dovecot_reply_verdict(&r) == DOVECOT_DENIED,
          "wrong password denied");
    CHECK(fake_wait(f, &f->auths, 2) == 2 && f->last_rip[0] == '\0', "no rip: '%s'",
          f->last_rip);

    /* Two in flight, answered out of order. */
    CHECK(dovecot_client_send_auth(&c, S("later"), S("x"), NULL, &id) == 0 &&
          dovecot_client_send_auth(&c, S("alice"), S(ALICE_PW), NULL, &id2) == 0 &&
          id == 3 && id2 == 4, "two in flight");
    CHECK(wait_reply(&c, &r) == 1 && r.id == 4, "the second answered first: %u", r.id);
    CHECK(wait_reply(&c, &r) == 1 && r.id == 3, "then the first: %u", r.id);
    CHECK(dovecot_client_send_auth(&c, S(""), S("x"), NULL, &id) == -EINVAL &&
          dovecot_client_fd(&c) >= 0, "bad request: nothing sent, still connected");
    CHECK(dovecot_client_send_auth(&c, S("cont"), S("x"), NULL, &id) == 0 && id == 5,
          "ids go on after a refused request");
    CHECK(wait_reply(&c, &r) == 1 && dovecot_reply_verdict(&r) == DOVECOT_PROTOCOL, "CONT");
    CHECK(dovecot_client_send_auth(&c, S("garbage"), S("x"), NULL, &id) == 0 &&
          wait_reply(&c, &r) == -EPROTO, "garbage");
    dovecot_client_close(&c);
    dovecot_client_close(&c);
    CHECK(dovecot_client_fd(&c) == -1 && c.path[0] == '\0', "closed twice");

    /* A server that closes, after an overlong line. */
    CHECK(dovecot_client_connect(&c, f->path) == 0, "reconnect");
    CHECK(dovecot_client_send_auth(&c, S("long"), S("x"), NULL, &id) == 0 && id == 1,
          "ids restart on a new connection");
    CHECK(wait_reply(&c, &r) == -EMSGSIZE, "overlong reply");
    CHECK(dovecot_client_connect(&c, f->path) == 0 &&
          dovecot_client_send_auth(&c, S("close"), S("x"), NULL, &id) == 0 &&
          wait_reply(&c, &r) == -ECONNRESET, "server closed");

    /* Handshakes that are not Dovecot's. */
    static const struct { enum hs_mode mode; int err, or_err; } hs[] = {
        { HS_V2, -EPROTO, -EPROTO }, { HS_NOPLAIN, -EPROTO, -EPROTO },
        { HS_LONG, -EMSGSIZE, -EMSGSIZE },
        { HS_CLOSE, -ECONNRESET, -EPIPE },   /* closed before or after our VERSION went */
    };
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++) {
        fake_set(f, hs[i].mode);
        err = dovecot_client_connect(&c, f->path);
        CHECK((err == hs[i].err || err == hs[i].or_err) && dovecot_client_fd(&c) == -1,
              "handshake %d: %d, want %d", hs[i].mode, err, hs[i].err);
    }
    dovecot_client_init(&c, 200);          /* a timeout this test expects to expire */
    fake_set(f, HS_SILENT);
    CHECK(dovecot_client_connect(&c, f->path) == -ETIMEDOUT, "silent handshake");
    fake_set(f, HS_GOOD);

    /* Paths that cannot be connected to. */
    memset(longpath, 'p', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    CHECK(dovecot_client_connect(&c, longpath) == -ENAMETOOLONG, "path too long");
    CHECK(dovecot_client_connect(&c, "") == -EINVAL, "empty path");
    CHECK(dovecot_client_connect(&c, "/nonexistent/auth-client") == -ENOENT, "no socket");
    fake_stop(f);
}

/* ---- the pool's Dovecot backend ---- */

/* wiped - whether the password buffer is all zero. */
static bool wiped(const struct auth_req *r)
{
    for (size_t i = 0; i < sizeof(r->password); i++)
        if (r->password[i])
            return false;
    return true;
}

/* submit - init a Dovecot request and submit it; 0 or the first error. */
static int submit(struct auth_req *r, const char *path, const char *ip, uint64_t cookie,
                  const char *user, const char *pw)
{
    int err = auth_req_init_dovecot(r, path, ip, 0, cookie, user, strlen(user), pw,
                                    strlen(pw));
    return err ? err : auth_pool_submit(r);
}

/* drain - wait on worker 0's eventfd until want requests came back (10 s with nothing at
 * most), storing each status by cookie; returns how many came; counts badly returned ones. */
static unsigned drain(unsigned want, enum auth_status *status, unsigned nstatus, unsigned *bad)
{
    struct pollfd p = { .fd = auth_pool_worker_fd(0), .events = POLLIN };
    unsigned got = 0;

    while (got < want) {
        uint64_t v;
        if (poll(&p, 1, 10000) != 1)
            break;
        if (read(p.fd, &v, sizeof(v)) != sizeof(v))
            continue;
        for (struct auth_req *r = auth_pool_take_done(0), *next; r; r = next) {
            next = r->next;
            if (r->cookie < nstatus)
                status[r->cookie] = r->status;
            if (!wiped(r) || r->db || r->cookie >= nstatus)
                (*bad)++;
            got++;
        }
    }
    return got;
}

/* one - submit one request and wait for it; its status (AUTH_PENDING when it never came). */
static enum auth_status one(const char *path, const char *user, const char *pw)
{
    static struct auth_req r;
    enum auth_status st[1] = { AUTH_PENDING };
    unsigned bad = 0;

    if (submit(&r, path, NULL, 0, user, pw))
        return AUTH_PENDING;
    if (drain(1, st, 1, &bad) != 1 || bad)
        return AUTH_PENDING;
    return st[0];
}

static void test_pool(void)
{
    enum { MANY = 100 };
    struct auth_pool_config cfg = auth_pool_default(1);
    struct fake *f = fake_start("pool"), *g = fake_start("pool2");
    struct auth_req *reqs = rr_calloc(MANY, sizeof(*reqs));
    enum auth_status st[MANY];
    unsigned bad = 0, ok = 0, conns;
    char longpath[DOVECOT_SOCKET_PATH_BYTES_MAX + 1];
    struct auth_req r;

    cfg.threads = 0;                   /* no passwd helpers: only Dovecot here */
    CHECK(auth_pool_start(&cfg) == 0, "start");

    /* Refusals at init and submit. */
    memset(longpath, 'p', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    CHECK(submit(&r, longpath, NULL, 0, "alice", ALICE_PW) == -ENAMETOOLONG, "long path");
    CHECK(submit(&r, "", NULL, 0, "alice", ALICE_PW) == -EINVAL, "empty path");
    CHECK(submit(&r, f->path, "192.0.2", 0, "alice", ALICE_PW) == -EINVAL, "bad address");
    CHECK(submit(&r, f->path, "192.0.2.1\t", 0, "alice", ALICE_PW) == -EINVAL, "tab address");
    CHECK(submit(&r, f->path, "host.example", 0, "alice", ALICE_PW) == -EINVAL, "name");
    CHECK(submit(&r, f->path, NULL, 0, "", ALICE_PW) == -EINVAL, "empty user");
    CHECK(auth_req_init_dovecot(&r, f->path, NULL, 0, 0, "alice", 5, "x", 1) == 0, "init");
    r.db = (struct passwd_db *)&r;     /* both backends: refused before it is looked at */
    CHECK(auth_pool_submit(&r) == -EINVAL && wiped(&r), "db and socket both set");

    /* Right and wrong, one connection for all, the client address passed on. */
    CHECK(submit(&r, f->path, "2001:db8::7", 0, "alice", ALICE_PW) == 0 &&
          drain(1, st, 1, &bad) == 1 && st[0] == AUTH_OK && !r.cached, "alice ok");
    CHECK(strcmp(f->last_rip, "2001:db8::7") == 0, "rip: '%s'", f->last_rip);
    CHECK(one(f->path, "alice", "wrong") == AUTH_REJECTED, "alice wrong");
    CHECK(one(f->path, "nobody", ALICE_PW) == AUTH_REJECTED, "unknown user");
    CHECK(one(f->path, "temp", "x") == AUTH_ERROR, "temp_fail");
    CHECK(one(f->path, "temp22", "x") == AUTH_ERROR, "temp");
    CHECK(one(f->path, "nologin", "x") == AUTH_REJECTED, "nologin");
    CHECK(one(f->path, "proxy", "x") == AUTH_REJECTED, "proxy");
    CHECK(fake_get(f, &f->connections) == 1, "one connection: %u", f->connections);

    /* The cache: a success is remembered for that socket only. */
    CHECK(auth_cache_check_dovecot(f->path, "alice", ALICE_PW), "cached");
    CHECK(!auth_cache_check_dovecot(g->path, "alice", ALICE_PW), "not for another socket");
    CHECK(!auth_cache_check_dovecot(f->path, "alice", "wrong"), "wrong not cached");
    CHECK(!auth_cache_check_dovecot(f->path, "nologin", "x"), "nologin not cached");
    unsigned before = fake_get(f, &f->auths);
    CHECK(submit(&r, f->path, NULL, 0, "alice", ALICE_PW) == 0 &&
          drain(1, st, 1, &bad) == 1 && st[0] == AUTH_OK && r.cached, "second from cache");
    CHECK(fake_get(f, &f->auths) == before, "Dovecot not asked again");
    auth_cache_flush();

    /* Many at once: in flight together on the one connection, ids in order. */
    for (unsigned i = 0; i < MANY; i++) {
        st[i] = AUTH_PENDING;
        ok += submit(&reqs[i], f->path, "192.0.2.1", i, i % 3 ? "alice" : "nobody",
                     i % 2 ? ALICE_PW : "wrong") == 0;
    }
    CHECK(ok == MANY, "%u submitted", ok);
    CHECK(drain(MANY, st, MANY, &bad) == MANY, "all back");
    ok = 0;
    for (unsigned i = 0; i < MANY; i++)
        ok += st[i] == (i % 3 && i % 2 ? AUTH_OK : AUTH_REJECTED);
    CHECK(ok == MANY, "%u right", ok);
    CHECK(fake_get(f, &f->connections) == 1, "still one connection: %u", f->connections);
    auth_cache_flush();

    /* A reply held back: answered after the next one, both right. */
    CHECK(submit(&reqs[0], f->path, NULL, 0, "later", "x") == 0 &&
          submit(&reqs[1], f->path, NULL, 1, "alice", ALICE_PW) == 0 &&
          drain(2, st, 2, &bad) == 2 && st[0] == AUTH_OK && st[1] == AUTH_OK, "out of order");

    /* Each way out of step fails what is in flight, and the next request reconnects. */
    static const char *const broken[] = { "cont", "wrongid", "garbage", "nul", "long",
                                          "close" };
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
        auth_cache_flush();           /* alice must reach Dovecot */
        conns = fake_get(f, &f->connections);
        CHECK(one(f->path, broken[i], "x") == AUTH_ERROR, "%s: error", broken[i]);
        CHECK(one(f->path, "alice", ALICE_PW) == AUTH_OK, "%s: then ok", broken[i]);
        CHECK(fake_get(f, &f->connections) == conns + 1, "%s: reconnected: %u, was %u",
              broken[i], fake_get(f, &f->connections), conns);
    }
    auth_cache_flush();

    /* A request in flight when another goes wrong fails with it. */
    CHECK(submit(&reqs[0], f->path, NULL, 0, "silent", "x") == 0 &&
          submit(&reqs[1], f->path, NULL, 1, "garbage", "x") == 0 &&
          drain(2, st, 2, &bad) == 2 && st[0] == AUTH_ERROR && st[1] == AUTH_ERROR,
          "both failed");

    /* A reload to another socket: the connection moves, and back (the last one failed, so
     * the first request connects too). */
    conns = fake_get(f, &f->connections);
    CHECK(submit(&reqs[0], f->path, NULL, 0, "alice", ALICE_PW) == 0 &&
          submit(&reqs[1], g->path, NULL, 1, "alice", ALICE_PW) == 0 &&
          submit(&reqs[2], f->path, NULL, 2, "alice", "wrong") == 0 &&
          drain(3, st, 3, &bad) == 3 && st[0] == AUTH_OK && st[1] == AUTH_OK &&
          st[2] == AUTH_REJECTED, "three across two sockets");
    CHECK(fake_get(g, &g->connections) == 1 && fake_get(f, &f->connections) == conns + 2,
          "moved and back: %u %u", g->connections, f->connections);

    /* Dovecot not there, then not Dovecot, then back. */
    auth_cache_flush();
    CHECK(one("/nonexistent/auth-client", "alice", ALICE_PW) == AUTH_ERROR, "no socket");
    fake_set(f, HS_V2);
    CHECK(one(f->path, "alice", ALICE_PW) == AUTH_ERROR, "bad handshake");
    fake_set(f, HS_GOOD);
    CHECK(one(f->path, "alice", ALICE_PW) == AUTH_OK, "back");

    CHECK(bad == 0, "%u returned badly", bad);
    auth_pool_stop();
    CHECK(submit(&r, f->path, NULL, 0, "alice", ALICE_PW) == -EAGAIN && wiped(&r),
          "after stop");
    auth_pool_free();
    fake_stop(f);
    fake_stop(g);
    free(reqs);
}

/* test_timeout - a request Dovecot never answers fails after the reply timeout, and takes
 * the one in flight with it. The timeout is short because it is meant to expire; nothing
 * else runs on this pool, so a slow machine cannot make another request miss it. */
static void test_timeout(void)
{
    struct auth_pool_config cfg = auth_pool_default(1);
    struct fake *f = fake_start("timeout");
    struct auth_req reqs[2];
    enum auth_status st[2] = { AUTH_PENDING, AUTH_PENDING };
    unsigned bad = 0;

    cfg.threads = 0;
    cfg.dovecot_reply_timeout_ms = 200;
    CHECK(auth_pool_start(&cfg) == 0, "start");
    CHECK(submit(&reqs[0], f->path, NULL, 0, "silent", "x") == 0 &&
          submit(&reqs[1], f->path, NULL, 1, "silent", "y") == 0 &&
          drain(2, st, 2, &bad) == 2 && st[0] == AUTH_ERROR && st[1] == AUTH_ERROR && !bad,
          "timed out: %d %d", st[0], st[1]);
    auth_pool_stop();
    auth_pool_free();
    fake_stop(f);
}

/* test_stop - requests in flight and queued come back AUTH_CANCELLED at stop. */
static void test_stop(void)
{
    struct auth_pool_config cfg = auth_pool_default(1);
    struct fake *f = fake_start("stop");
    struct auth_req reqs[3];
    enum auth_status st[3] = { AUTH_PENDING, AUTH_PENDING, AUTH_PENDING };
    unsigned bad = 0;

    cfg.threads = 0;
    CHECK(auth_pool_start(&cfg) == 0, "start");
    CHECK(submit(&reqs[0], f->path, NULL, 0, "silent", "x") == 0 &&
          submit(&reqs[1], f->path, NULL, 1, "silent", "x") == 0, "two in flight");
    CHECK(fake_wait(f, &f->silent, 2) == 2, "both sent");
    auth_pool_stop();
    CHECK(drain(2, st, 3, &bad) == 2 && st[0] == AUTH_CANCELLED && st[1] == AUTH_CANCELLED &&
          !bad, "in flight cancelled");
    auth_pool_free();

    /* No Dovecot helper: requests wait in the queue until the stop. */
    cfg.dovecot_threads = 0;
    CHECK(auth_pool_start(&cfg) == 0, "start without the Dovecot helper");
    CHECK(submit(&reqs[2], f->path, NULL, 2, "alice", ALICE_PW) == 0 &&
          auth_pool_pending() == 1, "queued");
    auth_pool_stop();
    CHECK(auth_pool_pending() == 0 && drain(1, st, 3, &bad) == 1 &&
          st[2] == AUTH_CANCELLED && !bad, "queued cancelled");
    auth_pool_free();
    cfg.dovecot_threads = AUTH_DOVECOT_THREADS_MAX + 1;
    CHECK(auth_pool_start(&cfg) == -EINVAL, "too many Dovecot helpers");
    fake_stop(f);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror(dir);
        return 2;
    }
    test_linebuf();
    test_handshake();
    test_replies();
    test_format();
    test_client();
    test_pool();
    test_timeout();
    test_stop();
    rmdir(dir);
    return check_done("test_dovecot_auth");
}
