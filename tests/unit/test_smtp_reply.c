/*
 * test_smtp_reply.c - table-driven tests of the SMTP reply parser (net/smtp_reply.c).
 *
 * Each row is an input and the replies it must give, in order (an error reply and what comes
 * after it included). Every row is run in one piece, split in two at every position and byte by
 * byte; all must give the same replies and the same "half a reply left" state. The harness
 * also checks that a call consumes no more than it was given, stops only at a reply's end, and
 * writes *out only when it says the reply is complete. The limits (512-byte line, 64 lines,
 * 1024 bytes of text) are rows built at run time.
 */
#include "net/smtp_reply.h"
#include "tests/unit/check.h"

#include <stdlib.h>
#include <string.h>

#define S(s) s, sizeof(s) - 1           /* a literal that may hold NUL bytes, and its length */
#define WANT_MAX 6                      /* replies one row may give */

#define OK       SMTP_REPLY_OK
#define BAD_CODE SMTP_REPLY_BAD_CODE
#define BAD_CLASS SMTP_REPLY_BAD_CLASS
#define BAD_SEP  SMTP_REPLY_BAD_SEPARATOR
#define CHANGED  SMTP_REPLY_CODE_CHANGED
#define NUL      SMTP_REPLY_NUL
#define BARE_CR  SMTP_REPLY_BARE_CR
#define BARE_LF  SMTP_REPLY_BARE_LF
#define TOO_LONG SMTP_REPLY_LINE_TOO_LONG
#define TOO_MANY SMTP_REPLY_TOO_MANY_LINES

#define ALL_EXT (SMTP_EXT_PIPELINING | SMTP_EXT_SIZE | SMTP_EXT_8BITMIME | SMTP_EXT_SMTPUTF8 | \
                 SMTP_EXT_CHUNKING | SMTP_EXT_STARTTLS | SMTP_EXT_ENHANCEDSTATUSCODES | \
                 SMTP_EXT_AUTH)
#define PLAIN SMTP_AUTH_PLAIN
#define LOGIN SMTP_AUTH_LOGIN

/* R - an expected reply without EHLO keywords or cut text; E - a 250 EHLO reply. */
#define R(code, err, lines, enh, text) \
    { code, err, lines, enh, text, false, false, 0, 0, 0, 0, 0 }
#define E(lines, text, ext, auth, size, unknown, bad) \
    { 250, OK, lines, NULL, text, false, true, ext, auth, size, unknown, bad }

/* One reply a row expects. A zero lines count ends the row's list. */
struct want {
    uint16_t code;
    enum smtp_reply_err err;
    unsigned lines;
    const char *enh;              /* "2.1.0", or NULL for none */
    const char *text;             /* joined text */
    bool cut;                     /* text_cut */
    bool ehlo;                    /* check the EHLO fields below (R: only that a reply other
                                     than a good 250 has none; a 250's lines may count) */
    uint32_t ext;
    uint32_t auth;
    uint64_t size;
    unsigned unknown;
    unsigned bad;
};

struct row {
    const char *name;
    const char *in;
    size_t in_len;
    bool busy;                    /* a reply is left half read at the end */
    struct want want[WANT_MAX];
};

static const struct row rows[] = {
    /* Single-line replies. */
    { "one line", S("250 ok\r\n"), false, { R(250, OK, 1, NULL, "ok") } },
    { "code alone", S("250\r\n"), false, { R(250, OK, 1, NULL, "") } },
    { "code and SP", S("250 \r\n"), false, { R(250, OK, 1, NULL, "") } },
    { "greeting", S("220 mx.example.com ESMTP ready\r\n"), false,
      { R(220, OK, 1, NULL, "mx.example.com ESMTP ready") } },
    { "354", S("354 End data with <CR><LF>.<CR><LF>\r\n"), false,
      { R(354, OK, 1, NULL, "End data with <CR><LF>.<CR><LF>") } },
    { "old code 571", S("571 Delivery not authorized\r\n"), false,
      { R(571, OK, 1, NULL, "Delivery not authorized") } },
    { "599 and 8-bit text", S("599 caf\xc3\xa9\ttab\r\n"), false,
      { R(599, OK, 1, NULL, "caf\xc3\xa9\ttab") } },

    /* Enhanced status codes (RFC 2034, RFC 3463). */
    { "enh 2.1.0", S("250 2.1.0 Ok\r\n"), false, { R(250, OK, 1, "2.1.0", "2.1.0 Ok") } },
    { "enh 4.3.2", S("421 4.3.2 Service shutting down\r\n"), false,
      { R(421, OK, 1, "4.3.2", "4.3.2 Service shutting down") } },
    { "enh 5.1.1", S("550 5.1.1 <x@y>: Recipient address rejected\r\n"), false,
      { R(550, OK, 1, "5.1.1", "5.1.1 <x@y>: Recipient address rejected") } },
    { "enh at end of text", S("250 2.0.0\r\n"), false, { R(250, OK, 1, "2.0.0", "2.0.0") } },
    { "enh 3 digits", S("250 2.999.999 x\r\n"), false,
      { R(250, OK, 1, "2.999.999", "2.999.999 x") } },
    { "enh leading zeros", S("250 2.01.00 x\r\n"), false,
      { R(250, OK, 1, "2.1.0", "2.01.00 x") } },
    { "enh class mismatch 2/5", S("250 5.1.0 x\r\n"), false,
      { R(250, OK, 1, NULL, "5.1.0 x") } },
    { "enh class mismatch 5/2", S("550 2.1.0 x\r\n"), false,
      { R(550, OK, 1, NULL, "2.1.0 x") } },
    { "enh class 3 never", S("354 3.0.0 go\r\n"), false, { R(354, OK, 1, NULL, "3.0.0 go") } },
    { "enh two parts", S("250 2.1 Ok\r\n"), false, { R(250, OK, 1, NULL, "2.1 Ok") } },
    { "enh glued text", S("250 2.1.0Ok\r\n"), false, { R(250, OK, 1, NULL, "2.1.0Ok") } },
    { "enh 4 digits", S("250 2.1000.0 x\r\n"), false, { R(250, OK, 1, NULL, "2.1000.0 x") } },
    { "enh empty part", S("250 2..0 x\r\n"), false, { R(250, OK, 1, NULL, "2..0 x") } },
    { "enh trailing dot", S("250 2.1.0. x\r\n"), false, { R(250, OK, 1, NULL, "2.1.0. x") } },
    { "enh not first", S("250 Ok 2.1.0\r\n"), false, { R(250, OK, 1, NULL, "Ok 2.1.0") } },
    { "enh line 1 only", S("250-2.1.0 first\r\n250 2.1.5 second\r\n"), false,
      { R(250, OK, 2, "2.1.0", "2.1.0 first\n2.1.5 second") } },
    { "enh on line 2 only", S("250-first\r\n250 2.1.5 second\r\n"), false,
      { R(250, OK, 2, NULL, "first\n2.1.5 second") } },

    /* Multi-line replies. */
    { "three lines", S("250-a\r\n250-b\r\n250 c\r\n"), false, { R(250, OK, 3, NULL, "a\nb\nc") } },
    { "empty lines", S("250-\r\n250\r\n"), false, { R(250, OK, 2, NULL, "\n") } },
    { "554 two lines", S("554-5.7.1 no\r\n554 5.7.1 really\r\n"), false,
      { R(554, OK, 2, "5.7.1", "5.7.1 no\n5.7.1 really") } },

    /* Pipelined replies back to back (RFC 2920). */
    { "pipelined MAIL RCPT DATA", S("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"), false,
      { R(250, OK, 1, "2.1.0", "2.1.0 Ok"), R(250, OK, 1, "2.1.5", "2.1.5 Ok"),
        R(354, OK, 1, NULL, "go") } },
    { "pipelined mixed", S("250 ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n250\r\n"
                           "554 5.5.1 no valid recipients\r\n"), false,
      { R(250, OK, 1, NULL, "ok"), R(550, OK, 2, "5.1.1", "5.1.1 no\n5.1.1 such user"),
        R(250, OK, 1, NULL, ""), R(554, OK, 1, "5.5.1", "5.5.1 no valid recipients") } },
    { "pipelined, half a reply left", S("250 ok\r\n250 par"), true,
      { R(250, OK, 1, NULL, "ok") } },
    { "half a multi-line reply", S("250-a\r\n"), true, { { 0 } } },
    { "half a line end", S("250 a\r"), true, { { 0 } } },
    { "nothing", S(""), false, { { 0 } } },

    /* EHLO replies. */
    { "EHLO all extensions",
      S("250-mx.example.com Hello\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n"
        "250-SMTPUTF8\r\n250-CHUNKING\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n"
        "250-AUTH PLAIN LOGIN CRAM-MD5\r\n250 DSN\r\n"), false,
      { E(10, "mx.example.com Hello\nPIPELINING\nSIZE 35882577\n8BITMIME\nSMTPUTF8\nCHUNKING\n"
          "STARTTLS\nENHANCEDSTATUSCODES\nAUTH PLAIN LOGIN CRAM-MD5\nDSN",
          ALL_EXT, PLAIN | LOGIN, 35882577, 1, 0) } },
    { "EHLO lower case", S("250-h\r\n250-pipelining\r\n250-size\r\n250 auth login\r\n"), false,
      { E(4, "h\npipelining\nsize\nauth login",
          SMTP_EXT_PIPELINING | SMTP_EXT_SIZE | SMTP_EXT_AUTH, LOGIN, 0, 0, 0) } },
    { "EHLO SIZE without value", S("250-h\r\n250 SIZE\r\n"), false,
      { E(2, "h\nSIZE", SMTP_EXT_SIZE, 0, 0, 0, 0) } },
    { "EHLO SIZE 0", S("250-h\r\n250 SIZE 0\r\n"), false,
      { E(2, "h\nSIZE 0", SMTP_EXT_SIZE, 0, 0, 0, 0) } },
    { "EHLO SIZE max", S("250-h\r\n250 SIZE 18446744073709551615\r\n"), false,
      { E(2, "h\nSIZE 18446744073709551615", SMTP_EXT_SIZE, 0, UINT64_MAX, 0, 0) } },
    { "EHLO SIZE bad values",
      S("250-h\r\n250-SIZE abc\r\n250-SIZE 10 20\r\n250-SIZE 18446744073709551616\r\n"
        "250 SIZE -1\r\n"), false,
      { E(5, "h\nSIZE abc\nSIZE 10 20\nSIZE 18446744073709551616\nSIZE -1", 0, 0, 0, 0, 4) } },
    { "EHLO SIZE twice", S("250-h\r\n250-SIZE 100\r\n250 SIZE 200\r\n"), false,
      { E(3, "h\nSIZE 100\nSIZE 200", SMTP_EXT_SIZE, 0, 100, 0, 0) } },
    { "EHLO garbage",
      S("250-h\r\n250- PIPELINING\r\n250--X\r\n250-AUTH=PLAIN LOGIN\r\n250-STARTTLS\tx\r\n"
        "250-\r\n250-8BIT_MIME\r\n250-SIZE\x7f\r\n250 X-FOO bar\r\n"), false,
      { E(9, "h\n PIPELINING\n-X\nAUTH=PLAIN LOGIN\nSTARTTLS\tx\n\n8BIT_MIME\nSIZE\x7f\n"
          "X-FOO bar", 0, 0, 0, 1, 7) } },
    { "EHLO params after keywords", S("250-h\r\n250-PIPELINING now\r\n250 STARTTLS  \r\n"), false,
      { E(3, "h\nPIPELINING now\nSTARTTLS  ", SMTP_EXT_PIPELINING | SMTP_EXT_STARTTLS, 0, 0,
          0, 0) } },
    { "EHLO 8-bit param", S("250-h\r\n250-AUTH PLAIN \xc3\xa9\r\n250 CHUNKING\r\n"), false,
      { E(3, "h\nAUTH PLAIN \xc3\xa9\nCHUNKING", SMTP_EXT_CHUNKING, 0, 0, 0, 1) } },
    { "EHLO AUTH alone", S("250-h\r\n250 AUTH\r\n"), false,
      { E(2, "h\nAUTH", SMTP_EXT_AUTH, 0, 0, 0, 0) } },
    { "EHLO AUTH spaces and near names", S("250-h\r\n250-AUTH  PLAINX   LOGI \r\n"
                                           "250 AUTH plain\r\n"), false,
      { E(3, "h\nAUTH  PLAINX   LOGI \nAUTH plain", SMTP_EXT_AUTH, PLAIN, 0, 0, 0) } },
    { "EHLO keywords in a 550", S("550-h\r\n550-PIPELINING\r\n550 STARTTLS\r\n"), false,
      { R(550, OK, 3, NULL, "h\nPIPELINING\nSTARTTLS") } },
    { "EHLO keyword on line 1", S("250 STARTTLS\r\n"), false,
      { R(250, OK, 1, NULL, "STARTTLS") } },
    { "EHLO then pipelined", S("250-h\r\n250 PIPELINING\r\n250 2.1.0 ok\r\n"), false,
      { E(2, "h\nPIPELINING", SMTP_EXT_PIPELINING, 0, 0, 0, 0),
        R(250, OK, 1, "2.1.0", "2.1.0 ok") } },

    /* Errors: each completes its reply at the documented place; what follows reads on. */
    { "two digits", S("25 ok\r\n250 ok\r\n"), false,
      { R(0, BAD_CODE, 1, NULL, ""), R(250, OK, 1, NULL, "ok") } },
    { "letter in code", S("2x0 ok\r\n250 ok\r\n"), false,
      { R(0, BAD_CODE, 1, NULL, ""), R(250, OK, 1, NULL, "ok") } },
    { "no code", S("ok\r\n"), false, { R(0, BAD_CODE, 1, NULL, "") } },
    { "empty line", S("\r\n250 ok\r\n"), false,
      { R(0, BAD_CODE, 1, NULL, ""), R(250, OK, 1, NULL, "ok") } },
    { "class 1", S("150 go\r\n"), false, { R(0, BAD_CLASS, 1, NULL, "") } },
    { "class 6", S("650 x\r\n"), false, { R(0, BAD_CLASS, 1, NULL, "") } },
    { "class 0", S("050 x\r\n"), false, { R(0, BAD_CLASS, 1, NULL, "") } },
    { "bad separator", S("250_ok\r\n"), false, { R(250, BAD_SEP, 1, NULL, "") } },
    { "bad separator TAB", S("250\tok\r\n"), false, { R(250, BAD_SEP, 1, NULL, "") } },
    { "four digits", S("2500 ok\r\n"), false, { R(250, BAD_SEP, 1, NULL, "") } },
    { "code changed last digit", S("250-a\r\n251 b\r\n250 ok\r\n"), false,
      { R(250, CHANGED, 2, NULL, "a"), R(250, OK, 1, NULL, "ok") } },
    { "code changed first digit", S("250-a\r\n350 b\r\n"), false,
      { R(250, CHANGED, 2, NULL, "a") } },
    { "code changed to class 1", S("250-a\r\n150 b\r\n"), false,
      { R(250, CHANGED, 2, NULL, "a") } },
    { "continuation without code", S("250-a\r\nxyz\r\n"), false,
      { R(250, BAD_CODE, 2, NULL, "a") } },
    { "NUL in text", S("250 a\0b\r\n250 ok\r\n"), false,
      { R(250, NUL, 1, NULL, ""), R(250, OK, 1, NULL, "ok") } },
    { "NUL in code", S("2\0\r\n"), false, { R(0, NUL, 1, NULL, "") } },
    { "NUL as separator", S("250\0\r\n"), false, { R(250, NUL, 1, NULL, "") } },
    { "NUL after error", S("25x\0\r\n"), false, { R(0, BAD_CODE, 1, NULL, "") } },
    { "bare LF ends text", S("250 ok\n250 ok\r\n"), false,
      { R(250, BARE_LF, 1, NULL, ""), R(250, OK, 1, NULL, "ok") } },
    { "bare LF after code", S("250\n"), false, { R(250, BARE_LF, 1, NULL, "") } },
    { "bare LF alone", S("\n"), false, { R(0, BARE_LF, 1, NULL, "") } },
    { "bare LF on line 2", S("250-a\r\n250 b\n"), false, { R(250, BARE_LF, 2, NULL, "a") } },
    { "bare LF multi-line", S("250-a\n250 b\r\n"), false,
      { R(250, BARE_LF, 1, NULL, ""), R(250, OK, 1, NULL, "b") } },
    { "bare CR in text", S("250 a\rb\r\n250 ok\r\n"), false,
      { R(250, BARE_CR, 1, NULL, ""), R(250, OK, 1, NULL, "ok") } },
    { "CR CR LF", S("250 a\r\r\n"), false, { R(250, BARE_CR, 1, NULL, "") } },
    { "bare CR after code", S("250\rx\r\n"), false, { R(250, BARE_CR, 1, NULL, "") } },
    { "bare CR then NUL", S("250 a\r\0\r\n"), false, { R(250, BARE_CR, 1, NULL, "") } },
};

/* One run's outcome. */
struct result {
    struct smtp_reply r[WANT_MAX + 1];  /* replies in order */
    unsigned n;
    bool busy;
    const char *harness;          /* what went wrong in the driving, NULL if nothing */
};

/*
 * run - feed in[0..len) in pieces ending at cuts[0..ncut) (the last cut is len), each piece in
 * as many calls as it has reply ends.
 */
static void run(const char *in, size_t len, const size_t *cuts, size_t ncut, struct result *res)
{
    static struct smtp_reply canary, out;
    struct smtp_reply_parser p;
    size_t off = 0;

    memset(&canary, 0xa5, sizeof canary);
    res->n = 0;
    res->harness = NULL;
    smtp_reply_init(&p);
    for (size_t c = 0; c < ncut && !res->harness; c++) {
        do {
            size_t piece = cuts[c] - off;
            bool complete = true;
            memcpy(&out, &canary, sizeof out);
            size_t got = smtp_reply_feed(&p, in + off, piece, &out, &complete);
            if (got > piece) {
                res->harness = "consumed more than given";
                break;
            }
            off += got;
            if (complete) {
                if (got == 0) {
                    res->harness = "complete without consuming";
                    break;
                }
                if (res->n == WANT_MAX + 1) {
                    res->harness = "too many replies";
                    break;
                }
                res->r[res->n++] = out;
            } else {
                if (got != piece)
                    res->harness = "stopped before the end without a reply";
                if (memcmp(&out, &canary, sizeof out) != 0)
                    res->harness = "wrote *out without a complete reply";
            }
        } while (off < cuts[c] && !res->harness);
    }
    res->busy = smtp_reply_busy(&p);
}

/* enh_text - "c.s.d" of a reply, or "" when it has none. */
static const char *enh_text(const struct smtp_reply *r, char *buf, size_t size)
{
    if (!r->has_enhanced)
        return "";
    snprintf(buf, size, "%u.%u.%u", r->enh_class, r->enh_subject, r->enh_detail);
    return buf;
}

/* same - whether a run gave the row's replies; say how it did not. */
static bool same(const struct row *w, const struct result *res, const char *how, size_t at)
{
    unsigned nwant = 0;
    bool ok = true;

    while (nwant < WANT_MAX && w->want[nwant].lines != 0)
        nwant++;
    if (res->harness) {
        fprintf(stderr, "  [%s] %s at %zu: %s\n", w->name, how, at, res->harness);
        return false;
    }
    if (res->n != nwant || res->busy != w->busy) {
        fprintf(stderr, "  [%s] %s at %zu: %u replies busy %d, want %u busy %d\n", w->name, how,
                at, res->n, res->busy, nwant, w->busy);
        return false;
    }
    for (unsigned i = 0; i < nwant; i++) {
        const struct want *e = &w->want[i];
        const struct smtp_reply *r = &res->r[i];
        char buf[32];
        const char *enh = enh_text(r, buf, sizeof buf);
        bool text_ok = r->text_len == strlen(r->text) && strcmp(r->text, e->text) == 0;
        if (r->code != e->code || r->err != e->err || r->lines != e->lines ||
            strcmp(enh, e->enh ? e->enh : "") != 0 || !text_ok || r->text_cut != e->cut) {
            fprintf(stderr, "  [%s] %s at %zu: reply %u: %u %s lines %u enh '%s' cut %d "
                    "text '%s'; want %u %s lines %u enh '%s' cut %d text '%s'\n", w->name, how,
                    at, i, r->code, smtp_reply_err_name(r->err), r->lines, enh, r->text_cut,
                    r->text, e->code, smtp_reply_err_name(e->err), e->lines,
                    e->enh ? e->enh : "", e->cut, e->text);
            ok = false;
        }
        if (r->has_enhanced && r->enh_class != r->code / 100) {
            fprintf(stderr, "  [%s] reply %u: enhanced class differs from the code\n", w->name, i);
            ok = false;
        }
        bool ehlo_zero = r->ehlo.ext == 0 && r->ehlo.auth == 0 && r->ehlo.size_max == 0 &&
                         r->ehlo.unknown_lines == 0 && r->ehlo.bad_lines == 0;
        if (!e->ehlo && (r->code != 250 || r->err != OK) && !ehlo_zero) {
            fprintf(stderr, "  [%s] %s at %zu: reply %u: EHLO fields set\n", w->name, how, at, i);
            ok = false;
        }
        if (e->ehlo && (r->ehlo.ext != e->ext || r->ehlo.auth != e->auth ||
                        r->ehlo.size_max != e->size || r->ehlo.unknown_lines != e->unknown ||
                        r->ehlo.bad_lines != e->bad)) {
            fprintf(stderr, "  [%s] %s at %zu: reply %u: ehlo ext %#x auth %#x size %llu "
                    "unknown %u bad %u; want %#x %#x %llu %u %u\n", w->name, how, at, i,
                    r->ehlo.ext, r->ehlo.auth, (unsigned long long)r->ehlo.size_max,
                    r->ehlo.unknown_lines, r->ehlo.bad_lines, e->ext, e->auth,
                    (unsigned long long)e->size, e->unknown, e->bad);
            ok = false;
        }
    }
    return ok;
}

/* check_row - run one row in one piece, split in two at every position, and byte by byte. */
static void check_row(const struct row *w)
{
    static struct result res;
    size_t len = w->in_len;
    size_t *cuts = malloc((len + 1) * sizeof *cuts);
    bool ok;

    size_t whole[1] = { len };
    run(w->in, len, whole, 1, &res);
    CHECK(same(w, &res, "one piece", 0), "%s: one piece", w->name);

    ok = true;
    for (size_t at = 0; at <= len; at++) {
        size_t two[2] = { at, len };
        run(w->in, len, two, 2, &res);
        if (!same(w, &res, "split", at)) {
            ok = false;
            break;                /* one position is enough to read */
        }
    }
    CHECK(ok, "%s: split in two at every position", w->name);

    cuts[0] = 0;
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    run(w->in, len, cuts, len ? len : 1, &res);
    CHECK(same(w, &res, "byte by byte", 0), "%s: byte by byte", w->name);
    free(cuts);
}

/* fill - append n copies of c to buf at *len. */
static void fill(char *buf, size_t *len, char c, size_t n)
{
    memset(buf + *len, c, n);
    *len += n;
}

/* put - append a NUL-terminated string to buf at *len. */
static void put(char *buf, size_t *len, const char *s)
{
    size_t n = strlen(s);
    memcpy(buf + *len, s, n);
    *len += n;
}

/* limit_rows - rows at and just over each limit, built at run time; returns how many. */
static unsigned limit_rows(void)
{
    static char in[4096], text[2][2048];
    struct row w;
    size_t n, t;
    unsigned count = 0;
    char x[SMTP_REPLY_LINE_BYTES_MAX + 1];

    /* A line of exactly 512 bytes: "250 " + 506 + CRLF. */
    n = 0;
    put(in, &n, "250 ");
    fill(in, &n, 'x', SMTP_REPLY_LINE_BYTES_MAX - 6);
    put(in, &n, "\r\n");
    memset(x, 'x', SMTP_REPLY_LINE_BYTES_MAX - 6);
    x[SMTP_REPLY_LINE_BYTES_MAX - 6] = '\0';
    w = (struct row){ "line of 512 bytes", in, n, false, { R(250, OK, 1, NULL, x) } };
    check_row(&w);
    count++;

    /* 513 bytes: the LF is one too many; the reply ends there, the next one reads. */
    n = 0;
    put(in, &n, "250 ");
    fill(in, &n, 'x', SMTP_REPLY_LINE_BYTES_MAX - 5);
    put(in, &n, "\r\n250 ok\r\n");
    w = (struct row){ "line of 513 bytes", in, n, false,
                      { R(250, TOO_LONG, 1, NULL, ""), R(250, OK, 1, NULL, "ok") } };
    check_row(&w);
    count++;

    /* 514 bytes: the CR is one too many; its LF is then read as a bare LF. */
    n = 0;
    put(in, &n, "250 ");
    fill(in, &n, 'x', SMTP_REPLY_LINE_BYTES_MAX - 4);
    put(in, &n, "\r\n250 ok\r\n");
    w = (struct row){ "line of 514 bytes", in, n, false,
                      { R(250, TOO_LONG, 1, NULL, ""), R(0, BARE_LF, 1, NULL, ""),
                        R(250, OK, 1, NULL, "ok") } };
    check_row(&w);
    count++;

    /* 512 bytes on line 2 of 2. */
    n = 0;
    put(in, &n, "250-a\r\n250 ");
    fill(in, &n, 'x', SMTP_REPLY_LINE_BYTES_MAX - 6);
    put(in, &n, "\r\n");
    t = 0;
    put(text[0], &t, "a\n");
    put(text[0], &t, x);
    text[0][t] = '\0';
    w = (struct row){ "line 2 of 512 bytes", in, n, false, { R(250, OK, 2, NULL, text[0]) } };
    check_row(&w);
    count++;

    /* An error line skipped past the limit: the first error stays, the rest reads on. */
    n = 0;
    put(in, &n, "25x");
    fill(in, &n, 'y', 600);
    put(in, &n, "\r\n");
    w = (struct row){ "skipped line too long", in, n, false,
                      { R(0, BAD_CODE, 1, NULL, ""), R(0, BAD_CODE, 1, NULL, "") } };
    check_row(&w);
    count++;

    /* 64 lines: valid. */
    n = 0;
    t = 0;
    for (unsigned i = 1; i < SMTP_REPLY_LINES_MAX; i++) {
        put(in, &n, "250-l\r\n");
        put(text[0], &t, "l\n");
    }
    put(in, &n, "250 end\r\n");
    put(text[0], &t, "end");
    text[0][t] = '\0';
    w = (struct row){ "64 lines", in, n, false,
                      { R(250, OK, SMTP_REPLY_LINES_MAX, NULL, text[0]) } };
    check_row(&w);
    count++;

    /* 65 lines: the error at the end of line 64; line 65 reads as a reply of its own. */
    n = 0;
    t = 0;
    for (unsigned i = 1; i <= SMTP_REPLY_LINES_MAX; i++) {
        put(in, &n, "250-l\r\n");
        put(text[0], &t, i == 1 ? "l" : "\nl");
    }
    put(in, &n, "250 end\r\n");
    text[0][t] = '\0';
    w = (struct row){ "65 lines", in, n, false,
                      { R(250, TOO_MANY, SMTP_REPLY_LINES_MAX, NULL, text[0]),
                        R(250, OK, 1, NULL, "end") } };
    check_row(&w);
    count++;

    /* Text of exactly 1024 bytes: 506 + "\n" + 506 + "\n" + 10, then 11 (cut at 1024). */
    for (unsigned k = 0; k < 2; k++) {
        n = 0;
        t = 0;
        put(in, &n, "250-");
        fill(in, &n, 'a', 506);
        put(in, &n, "\r\n250-");
        fill(in, &n, 'b', 506);
        put(in, &n, "\r\n250 ");
        fill(in, &n, 'c', 10 + k);
        put(in, &n, "\r\n");
        fill(text[k], &t, 'a', 506);
        put(text[k], &t, "\n");
        fill(text[k], &t, 'b', 506);
        put(text[k], &t, "\n");
        fill(text[k], &t, 'c', 10);
        text[k][t] = '\0';
        w = (struct row){ k ? "text of 1025 bytes, cut" : "text of 1024 bytes", in, n, false,
                          { R(250, OK, 3, NULL, text[k]) } };
        w.want[0].cut = k == 1;
        check_row(&w);
        count++;
    }

    /* EHLO keywords past the text cut still count. */
    n = 0;
    t = 0;
    put(in, &n, "250-");
    fill(in, &n, 'h', 500);
    put(in, &n, "\r\n250-X-PAD ");
    fill(in, &n, 'p', 490);
    put(in, &n, "\r\n250-STARTTLS\r\n250-AUTH LOGIN\r\n250 SIZE 1000\r\n");
    fill(text[0], &t, 'h', 500);
    put(text[0], &t, "\nX-PAD ");
    fill(text[0], &t, 'p', 490);
    put(text[0], &t, "\nSTARTTLS\nAUTH LOGIN\nSIZE 1000");
    text[0][SMTP_REPLY_TEXT_BYTES_MAX] = '\0';
    w = (struct row){ "EHLO keywords after the cut", in, n, false,
                      { E(5, text[0], SMTP_EXT_STARTTLS | SMTP_EXT_AUTH | SMTP_EXT_SIZE,
                          LOGIN, 1000, 1, 0) } };
    w.want[0].cut = true;
    check_row(&w);
    count++;

    /* An empty continuation line when the text is exactly full: the "\n" is cut. */
    n = 0;
    t = 0;
    put(in, &n, "250-");
    fill(in, &n, 'a', 506);
    put(in, &n, "\r\n250-");
    fill(in, &n, 'b', 506);
    put(in, &n, "\r\n250-");
    fill(in, &n, 'c', 10);
    put(in, &n, "\r\n250\r\n");
    /* the text is the 1024-byte one of the k = 0 row above; the last "\n" does not fit */
    t = 0;
    fill(text[1], &t, 'a', 506);
    put(text[1], &t, "\n");
    fill(text[1], &t, 'b', 506);
    put(text[1], &t, "\n");
    fill(text[1], &t, 'c', 10);
    text[1][t] = '\0';
    w = (struct row){ "text full, then an empty line", in, n, false,
                      { R(250, OK, 4, NULL, text[1]) } };
    w.want[0].cut = true;
    check_row(&w);
    count++;
    return count;
}

/* api - the small functions and the edges the table does not reach. */
static void api(void)
{
    struct smtp_reply_parser p;
    struct smtp_reply out;
    bool complete = true;

    smtp_reply_init(&p);
    CHECK(!smtp_reply_busy(&p), "fresh parser busy");
    CHECK(smtp_reply_feed(&p, NULL, 0, &out, &complete) == 0 && !complete, "empty feed");
    CHECK(smtp_reply_feed(&p, "2", 1, &out, &complete) == 1 && !complete, "one byte");
    CHECK(smtp_reply_busy(&p), "busy after one byte");
    CHECK(smtp_reply_feed(&p, "50 ok\r\n250", 10, &out, &complete) == 7 && complete,
          "stops at the reply end");
    CHECK(out.code == 250 && out.err == OK && strcmp(out.text, "ok") == 0, "the reply");
    CHECK(!smtp_reply_busy(&p), "not busy at a reply end");

    /* After an error the parser is ready for a new reply. */
    smtp_reply_init(&p);
    CHECK(smtp_reply_feed(&p, "xx\r\n", 4, &out, &complete) == 4 && complete &&
          out.err == BAD_CODE, "error reply");
    CHECK(!smtp_reply_busy(&p), "not busy after an error reply");

    CHECK(strcmp(smtp_reply_err_name(OK), "ok") == 0, "name ok");
    CHECK(strcmp(smtp_reply_err_name(BARE_LF), "bare_lf") == 0, "name bare_lf");
    CHECK(strcmp(smtp_reply_err_name(SMTP_REPLY_ERR_COUNT), "invalid") == 0, "name invalid");
    for (int e = 0; e < SMTP_REPLY_ERR_COUNT; e++) {
        const char *s = smtp_reply_err_name((enum smtp_reply_err)e);
        CHECK(s && *s && strcmp(s, "invalid") != 0 && strchr(s, ' ') == NULL, "name %d", e);
    }
    CHECK(sizeof p.line >= SMTP_REPLY_LINE_BYTES_MAX - 6, "line buffer holds a line's text");
}

int main(void)
{
    size_t nrows = sizeof rows / sizeof rows[0];
    for (size_t i = 0; i < nrows; i++)
        check_row(&rows[i]);
    unsigned ngen = limit_rows();
    api();
    printf("test_smtp_reply: %zu table rows + %u generated rows\n", nrows, ngen);
    return check_done("test_smtp_reply");
}
