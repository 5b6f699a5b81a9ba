/*
 * test_smtp_data.c - table-driven tests of the DATA / BDAT content scanner (net/smtp_data.c).
 *
 * Every row is run in one piece, split in two at every position, byte by byte, and with
 * iov_max 1 and 2 (so that a full iov and the resumption after it are exercised at every
 * kind of byte); all must give the same stored bytes, error, consumed length and done flag.
 * The iov array carries guard entries after iov_max that must stay untouched.
 */
#include "net/smtp_data.h"
#include "tests/unit/check.h"

#include <stdlib.h>
#include <string.h>

#define S(s) s, sizeof(s) - 1           /* a literal that may hold NUL bytes, and its length */
#define DOT SMTP_DATA_DOT
#define BDAT SMTP_DATA_BDAT
#define N true                          /* normalize */
#define R false                         /* refuse bare CR / LF */
#define IOV_BIG 64                      /* "enough" entries */
#define IOV_GUARD 4                     /* entries after iov_max that must not be written */

struct row {
    const char *name;
    const char *in;               /* wire bytes */
    size_t in_len;
    enum smtp_data_mode mode;
    bool normalize;
    uint64_t bytes_max;           /* 0 = no limit */
    uint32_t line_max;            /* 0 = SMTP_TEXT_LINE_BYTES_MAX */
    const char *out;              /* expected stored bytes */
    size_t out_len;
    enum smtp_data_err err;       /* expected error */
    const char *after;            /* expected unconsumed tail of in (DOT: after the terminator) */
    size_t after_len;
    bool done;                    /* terminator expected */
};

static const struct row rows[] = {
    /* Plain messages and the terminator. */
    { "empty", S(".\r\n"), DOT, R, 0, 0, S(""), SMTP_DATA_OK, S(""), true },
    { "empty+cmd", S(".\r\nQUIT\r\n"), DOT, R, 0, 0, S(""), SMTP_DATA_OK, S("QUIT\r\n"), true },
    { "one line", S("hello\r\n.\r\n"), DOT, R, 0, 0, S("hello\r\n"), SMTP_DATA_OK, S(""), true },
    { "two lines+cmd", S("a\r\nb\r\n.\r\nQUIT\r\n"), DOT, R, 0, 0, S("a\r\nb\r\n"),
      SMTP_DATA_OK, S("QUIT\r\n"), true },
    { "empty line", S("\r\n.\r\n"), DOT, R, 0, 0, S("\r\n"), SMTP_DATA_OK, S(""), true },
    { "two empty lines", S("\r\n\r\n.\r\n"), DOT, R, 0, 0, S("\r\n\r\n"), SMTP_DATA_OK, S(""),
      true },
    { "pipelined", S("x\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"), DOT, R, 0, 0,
      S("x\r\n"), SMTP_DATA_OK, S("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"), true },
    { "second terminator left", S("abc\r\n.\r\n.\r\n"), DOT, R, 0, 0, S("abc\r\n"),
      SMTP_DATA_OK, S(".\r\n"), true },
    { "tail after end", S("a\r\n.\r\nb"), DOT, R, 0, 0, S("a\r\n"), SMTP_DATA_OK, S("b"), true },
    { "long text", S("The quick brown fox jumps over the lazy dog, twice over.\r\n"
                     "..and a stuffed line that is longer than sixteen bytes\r\n"
                     "Subject: tabs\tand 8-bit \xc3\xa9t\xc3\xa9 bytes\r\n.\r\n"), DOT, R, 0, 0,
      S("The quick brown fox jumps over the lazy dog, twice over.\r\n"
        ".and a stuffed line that is longer than sixteen bytes\r\n"
        "Subject: tabs\tand 8-bit \xc3\xa9t\xc3\xa9 bytes\r\n"), SMTP_DATA_OK, S(""), true },
    { "no terminator", S("abc\r\n"), DOT, R, 0, 0, S("abc\r\n"), SMTP_DATA_OK, S(""), false },
    { "no terminator, open line", S("abc"), DOT, R, 0, 0, S("abc"), SMTP_DATA_OK, S(""), false },
    { "half terminator .", S("abc\r\n."), DOT, R, 0, 0, S("abc\r\n"), SMTP_DATA_OK, S(""), false },
    { "half terminator .CR", S("abc\r\n.\r"), DOT, R, 0, 0, S("abc\r\n"), SMTP_DATA_OK, S(""),
      false },
    { "nothing", S(""), DOT, R, 0, 0, S(""), SMTP_DATA_OK, S(""), false },

    /* Dot-stuffing (RFC 5321 4.5.2). */
    { "..x", S("..x\r\n.\r\n"), DOT, R, 0, 0, S(".x\r\n"), SMTP_DATA_OK, S(""), true },
    { "..", S("..\r\n.\r\n"), DOT, R, 0, 0, S(".\r\n"), SMTP_DATA_OK, S(""), true },
    { "...", S("...\r\n.\r\n"), DOT, R, 0, 0, S("..\r\n"), SMTP_DATA_OK, S(""), true },
    { "stuffed mix", S("a\r\n..b\r\n...\r\n.\r\n"), DOT, R, 0, 0, S("a\r\n.b\r\n..\r\n"),
      SMTP_DATA_OK, S(""), true },
    { ".x first line", S(".x\r\n.\r\n"), DOT, R, 0, 0, S("x\r\n"), SMTP_DATA_OK, S(""), true },
    { "dot inside lines", S("a.\r\n.b.\r\nc.d\r\n.\r\n"), DOT, R, 0, 0, S("a.\r\nb.\r\nc.d\r\n"),
      SMTP_DATA_OK, S(""), true },
    { "dot then NUL-free text", S("x\r\n.y\r\n..\r\n.\r\nQ"), DOT, R, 0, 0,
      S("x\r\ny\r\n.\r\n"), SMTP_DATA_OK, S("Q"), true },

    /* Smuggling: only <CRLF>.<CRLF> ends DATA. */
    { "\\n.\\n", S("a\n.\nb\r\n.\r\n"), DOT, R, 0, 0, S("a"), SMTP_DATA_BARE_LF, S(""), true },
    { "\\n.\\r\\n", S("a\n.\r\nb\r\n.\r\n"), DOT, R, 0, 0, S("a"), SMTP_DATA_BARE_LF, S(""), true },
    { "\\r\\n.\\n", S("a\r\n.\nb\r\n.\r\n"), DOT, R, 0, 0, S("a\r\n"), SMTP_DATA_BARE_LF, S(""),
      true },
    { "\\r.\\r\\n", S("a\r.\r\nb\r\n.\r\n"), DOT, R, 0, 0, S("a"), SMTP_DATA_BARE_CR, S(""), true },
    { "\\r\\n.\\r", S("a\r\n.\rb\r\n.\r\n"), DOT, R, 0, 0, S("a\r\n"), SMTP_DATA_BARE_CR, S(""),
      true },
    { "\\r\\n.\\r\\r\\n", S("a\r\n.\r\r\n.\r\n"), DOT, R, 0, 0, S("a\r\n"), SMTP_DATA_BARE_CR,
      S(""), true },
    { "\\r.\\r", S("a\r.\rQUIT\r\n"), DOT, R, 0, 0, S("a"), SMTP_DATA_BARE_CR, S(""), false },
    { "\\n.\\r\\n first", S("\n.\r\nQUIT\r\n"), DOT, R, 0, 0, S(""), SMTP_DATA_BARE_LF, S(""),
      false },
    { "\\n.\\n then cmd", S("x\n.\nRSET\r\n"), DOT, R, 0, 0, S("x"), SMTP_DATA_BARE_LF, S(""),
      false },
    { "\\r\\r\\n.", S("a\r\r\n.\r\n"), DOT, R, 0, 0, S("a"), SMTP_DATA_BARE_CR, S(""), true },
    { "NUL before dot", S("a\r\n\0.\r\n.\r\n"), DOT, R, 0, 0, S("a\r\n"), SMTP_DATA_NUL, S(""),
      true },
    { "NUL after dot", S("a\r\n.\0\r\n.\r\nZ"), DOT, R, 0, 0, S("a\r\n"), SMTP_DATA_NUL, S("Z"),
      true },
    { "NUL inside terminator", S("a\r\n.\r\0\n.\r\n"), DOT, R, 0, 0, S("a\r\n"),
      SMTP_DATA_BARE_CR, S(""), false },
    { "NUL after terminator", S("a\r\n.\r\n\0"), DOT, R, 0, 0, S("a\r\n"), SMTP_DATA_OK, S("\0"),
      true },
    { "NUL plain", S("a\0b\r\n.\r\n"), DOT, R, 0, 0, S("a"), SMTP_DATA_NUL, S(""), true },
    { "NUL first", S("\0\r\n.\r\n"), DOT, R, 0, 0, S(""), SMTP_DATA_NUL, S(""), true },

    /* Normalize: bare CR / LF stored as CRLF; still only <CRLF>.<CRLF> ends DATA. */
    { "N bare LF lines", S("a\nb\n.\r\n"), DOT, N, 0, 0, S("a\r\nb\r\n.\r\n"), SMTP_DATA_OK, S(""),
      false },
    { "N bare LF then end", S("a\nb\r\n.\r\n"), DOT, N, 0, 0, S("a\r\nb\r\n"), SMTP_DATA_OK, S(""),
      true },
    { "N \\n.\\n", S("a\n.\nb\r\n.\r\n"), DOT, N, 0, 0, S("a\r\n.\r\nb\r\n"), SMTP_DATA_OK, S(""),
      true },
    { "N \\r\\n.\\n", S("a\r\n.\nb\r\n.\r\n"), DOT, N, 0, 0, S("a\r\n.\r\nb\r\n"), SMTP_DATA_OK,
      S(""), true },
    { "N \\r.\\r\\n", S("a\r.\r\nb\r\n.\r\n"), DOT, N, 0, 0, S("a\r\n.\r\nb\r\n"),
      SMTP_DATA_OK, S(""), true },
    { "N \\r\\n.\\r", S("a\r\n.\rb\r\n.\r\n"), DOT, N, 0, 0, S("a\r\n.\r\nb\r\n"),
      SMTP_DATA_OK, S(""), true },
    { "N \\n.\\r\\n first", S("\n.\r\nQUIT\r\n"), DOT, N, 0, 0, S("\r\n.\r\nQUIT\r\n"),
      SMTP_DATA_OK, S(""), false },
    { "N \\r\\n.\\n at end", S("a\r\n.\n"), DOT, N, 0, 0, S("a\r\n.\r\n"), SMTP_DATA_OK, S(""),
      false },
    { "N unstuff after LF", S("a\n..b\r\n.\r\n"), DOT, N, 0, 0, S("a\r\n.b\r\n"), SMTP_DATA_OK,
      S(""), true },
    { "N unstuff after CR", S("a\r..b\r\n.\r\n"), DOT, N, 0, 0, S("a\r\n.b\r\n"), SMTP_DATA_OK,
      S(""), true },
    { "N bare CR", S("a\rb\r\n.\r\n"), DOT, N, 0, 0, S("a\r\nb\r\n"), SMTP_DATA_OK, S(""), true },
    { "N CR CR LF", S("a\r\r\n.\r\n"), DOT, N, 0, 0, S("a\r\n\r\n"), SMTP_DATA_OK, S(""), true },
    { "N LF LF", S("a\n\n.\r\n"), DOT, N, 0, 0, S("a\r\n\r\n.\r\n"), SMTP_DATA_OK, S(""), false },
    { "N .\\r then CRLF", S("x\r\n.\r\r\n.\r\n"), DOT, N, 0, 0, S("x\r\n.\r\n\r\n"),
      SMTP_DATA_OK, S(""), true },
    { "N \\r.\\r", S("\r.\rX"), DOT, N, 0, 0, S("\r\n.\r\nX"), SMTP_DATA_OK, S(""), false },
    { "N NUL still refused", S("a\n\0\r\n.\r\n"), DOT, N, 0, 0, S("a\r\n"), SMTP_DATA_NUL, S(""),
      true },
    { "N . LF first", S(".\nb\r\n.\r\n"), DOT, N, 0, 0, S(".\r\nb\r\n"), SMTP_DATA_OK, S(""),
      true },

    /* Line length: wire bytes, stuffed dot and line end included. */
    { "line 6 of 6", S("abcd\r\n.\r\n"), DOT, R, 0, 6, S("abcd\r\n"), SMTP_DATA_OK, S(""), true },
    { "line 7: LF too many", S("abcde\r\n.\r\n"), DOT, R, 0, 6, S("abcde"),
      SMTP_DATA_LINE_TOO_LONG, S(""), true },
    { "line 8: CR too many", S("abcdef\r\n.\r\n"), DOT, R, 0, 6, S("abcdef"),
      SMTP_DATA_LINE_TOO_LONG, S(""), true },
    { "line 9: text too many", S("abcdefg\r\n.\r\n"), DOT, R, 0, 6, S("abcdef"),
      SMTP_DATA_LINE_TOO_LONG, S(""), true },
    { "stuffed line 6 of 6", S("..bc\r\n.\r\n"), DOT, R, 0, 6, S(".bc\r\n"), SMTP_DATA_OK, S(""),
      true },
    { "stuffed line 7", S("..bcd\r\n.\r\n"), DOT, R, 0, 6, S(".bcd"), SMTP_DATA_LINE_TOO_LONG,
      S(""), true },
    { "N bare LF line 6", S("abcde\nx\r\n.\r\n"), DOT, N, 0, 6, S("abcde\r\nx\r\n"),
      SMTP_DATA_OK, S(""), true },
    { "N bare LF line 7", S("abcdef\nx\r\n.\r\n"), DOT, N, 0, 6, S("abcdef"),
      SMTP_DATA_LINE_TOO_LONG, S(""), true },
    { "long line, keep scanning", S("abcdefgh\r\nmore\r\n.\r\nQUIT\r\n"), DOT, R, 0, 6,
      S("abcdef"), SMTP_DATA_LINE_TOO_LONG, S("QUIT\r\n"), true },
    { "long line, smuggle after", S("abcdefgh\n.\nQUIT\r\n.\r\nNEXT"), DOT, R, 0, 6,
      S("abcdef"), SMTP_DATA_LINE_TOO_LONG, S("NEXT"), true },
    { "long line, next ok", S("ab\r\ncdef\r\ngh\r\n.\r\n"), DOT, R, 0, 6, S("ab\r\ncdef\r\ngh\r\n"),
      SMTP_DATA_OK, S(""), true },

    /* Stored size. */
    { "size exact", S("abc\r\n.\r\n"), DOT, R, 5, 0, S("abc\r\n"), SMTP_DATA_OK, S(""), true },
    { "size -1 inside CRLF", S("abc\r\n.\r\n"), DOT, R, 4, 0, S("abc\r"), SMTP_DATA_TOO_BIG, S(""),
      true },
    { "size -2", S("abc\r\n.\r\nX"), DOT, R, 3, 0, S("abc"), SMTP_DATA_TOO_BIG, S("X"), true },
    { "size counts unstuffed", S("abc\r\n..d\r\n.\r\n"), DOT, R, 9, 0, S("abc\r\n.d\r\n"),
      SMTP_DATA_OK, S(""), true },
    { "size cut after dot", S("abc\r\n..d\r\n.\r\n"), DOT, R, 6, 0, S("abc\r\n."),
      SMTP_DATA_TOO_BIG, S(""), true },
    { "N size cut in insert", S("\n.\r\n"), DOT, N, 1, 0, S("\r"), SMTP_DATA_TOO_BIG, S(""), false },
    { "size before NUL", S("abc\0\r\n.\r\n"), DOT, R, 2, 0, S("ab"), SMTP_DATA_TOO_BIG, S(""),
      true },
    { "NUL before size", S("a\0bcdefghijklmn\r\n.\r\n"), DOT, R, 10, 0, S("a"), SMTP_DATA_NUL,
      S(""), true },
    { "size then smuggle", S("abcdef\r\n.\nQUIT\r\n.\r\n"), DOT, R, 3, 0, S("abc"),
      SMTP_DATA_TOO_BIG, S(""), true },

    /* BDAT: no dots, no terminator; smtp_data_finish() closes the last line. */
    { "BDAT line", S("abc\r\n"), BDAT, R, 0, 0, S("abc\r\n"), SMTP_DATA_OK, S(""), false },
    { "BDAT no final CRLF", S("abc"), BDAT, R, 0, 0, S("abc\r\n"), SMTP_DATA_OK, S(""), false },
    { "BDAT empty", S(""), BDAT, R, 0, 0, S(""), SMTP_DATA_OK, S(""), false },
    { "BDAT dots", S(".\r\n..x\r\n"), BDAT, R, 0, 0, S(".\r\n..x\r\n"), SMTP_DATA_OK, S(""), false },
    { "BDAT terminator is data", S("a\r\n.\r\nb"), BDAT, R, 0, 0, S("a\r\n.\r\nb\r\n"),
      SMTP_DATA_OK, S(""), false },
    { "BDAT pending CR", S("abc\r"), BDAT, R, 0, 0, S("abc"), SMTP_DATA_BARE_CR, S(""), false },
    { "BDAT N pending CR", S("abc\r"), BDAT, N, 0, 0, S("abc\r\n"), SMTP_DATA_OK, S(""), false },
    { "BDAT bare LF", S("a\nb\r\n"), BDAT, R, 0, 0, S("a"), SMTP_DATA_BARE_LF, S(""), false },
    { "BDAT N bare LF", S("a\nb"), BDAT, N, 0, 0, S("a\r\nb\r\n"), SMTP_DATA_OK, S(""), false },
    { "BDAT N LF last", S("a\n"), BDAT, N, 0, 0, S("a\r\n"), SMTP_DATA_OK, S(""), false },
    { "BDAT N bare CRs", S("a\rb\r"), BDAT, N, 0, 0, S("a\r\nb\r\n"), SMTP_DATA_OK, S(""), false },
    { "BDAT NUL", S("a\0b"), BDAT, R, 0, 0, S("a"), SMTP_DATA_NUL, S(""), false },
    { "BDAT size with final CRLF", S("abc"), BDAT, R, 5, 0, S("abc\r\n"), SMTP_DATA_OK, S(""),
      false },
    { "BDAT size cut final CRLF", S("abc"), BDAT, R, 4, 0, S("abc\r"), SMTP_DATA_TOO_BIG, S(""),
      false },
    { "BDAT line 6 no CRLF", S("abcdef"), BDAT, R, 0, 6, S("abcdef\r\n"), SMTP_DATA_OK, S(""),
      false },
    { "BDAT line 7", S("abcdefg"), BDAT, R, 0, 6, S("abcdef"), SMTP_DATA_LINE_TOO_LONG, S(""),
      false },
    { "BDAT CRLF split", S("ab\r\ncd\r\n"), BDAT, R, 0, 0, S("ab\r\ncd\r\n"), SMTP_DATA_OK, S(""),
      false },
};

/* One run's outcome. */
struct result {
    char *out;                    /* stored bytes, concatenated from the iovecs */
    size_t out_len;
    size_t consumed;              /* input bytes consumed in all */
    bool done;
    enum smtp_data_err err;
    uint64_t bytes;               /* r.bytes at the end */
    const char *harness;          /* what went wrong in the driving, NULL if nothing */
};

/* collect - append the iovecs to res->out and check the guard entries. */
static void collect(struct result *res, const struct iovec *iov, unsigned n, unsigned iov_max)
{
    for (unsigned i = iov_max; i < iov_max + IOV_GUARD; i++)
        if (iov[i].iov_base != (void *)&collect || iov[i].iov_len != 7)
            res->harness = "wrote past iov_max";
    if (n > iov_max) {
        res->harness = "iov_count past iov_max";
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        if (iov[i].iov_len == 0)
            res->harness = "empty iovec";
        memcpy(res->out + res->out_len, iov[i].iov_base, iov[i].iov_len);
        res->out_len += iov[i].iov_len;
    }
}

/* fresh_iov - an iov with guard entries after iov_max. */
static void fresh_iov(struct iovec *iov, unsigned iov_max)
{
    for (unsigned i = 0; i < iov_max + IOV_GUARD; i++)
        iov[i] = (struct iovec){ .iov_base = (void *)&collect, .iov_len = 7 };
}

/*
 * run - feed w->in in pieces ending at cuts[0..ncut) (the last cut is in_len), each piece
 * possibly in several calls when the iov fills, then finish for BDAT.
 */
static void run(const struct row *w, const size_t *cuts, size_t ncut, unsigned iov_max,
                struct result *res)
{
    struct smtp_data_reader r;
    struct iovec iov[IOV_BIG + IOV_GUARD];
    uint32_t line_max = w->line_max ? w->line_max : SMTP_TEXT_LINE_BYTES_MAX;
    size_t off = 0;

    *res = (struct result){ .out = malloc(3 * w->in_len + 16) };
    smtp_data_init(&r, w->mode, w->normalize, w->bytes_max, line_max);
    for (size_t c = 0; c < ncut && !res->done && !res->harness; c++) {
        do {
            unsigned n = 0;
            bool done = false;
            fresh_iov(iov, iov_max);
            size_t got = smtp_data_feed(&r, w->in + off, cuts[c] - off, iov, iov_max, &n, &done);
            collect(res, iov, n, iov_max);
            if (got > cuts[c] - off) {
                res->harness = "consumed more than given";
                break;
            }
            off += got;
            res->done = done;
            if (!done && off < cuts[c] && n < iov_max)
                res->harness = "stopped early with room in iov";
            if (got == 0 && n == 0 && !done && off < cuts[c])
                res->harness = "no progress";
            if (w->mode == BDAT && done)
                res->harness = "done in BDAT mode";
        } while (off < cuts[c] && !res->done && !res->harness);
    }
    res->consumed = off;
    res->err = (enum smtp_data_err)r.err;
    if (w->mode == BDAT) {
        unsigned n = 0;
        fresh_iov(iov, iov_max);
        res->err = smtp_data_finish(&r, iov, iov_max, &n);
        collect(res, iov, n, iov_max);
        if (res->err != (enum smtp_data_err)r.err)
            res->harness = "finish result differs from r.err";
    }
    res->bytes = r.bytes;
}

/* same - whether a run gave the row's expected outcome; say how it did not. */
static bool same(const struct row *w, const struct result *res, const char *how, size_t at)
{
    size_t after_len = w->in_len - res->consumed;
    bool ok = true;
    if (res->harness) {
        fprintf(stderr, "  [%s] %s at %zu: %s\n", w->name, how, at, res->harness);
        ok = false;
    }
    if (res->out_len != w->out_len || memcmp(res->out, w->out, w->out_len) != 0) {
        fprintf(stderr, "  [%s] %s at %zu: stored %zu bytes, want %zu\n", w->name, how, at,
                res->out_len, w->out_len);
        ok = false;
    }
    if (res->bytes != res->out_len) {
        fprintf(stderr, "  [%s] %s at %zu: r.bytes %llu, stored %zu\n", w->name, how, at,
                (unsigned long long)res->bytes, res->out_len);
        ok = false;
    }
    if (res->err != w->err || res->done != w->done) {
        fprintf(stderr, "  [%s] %s at %zu: err %d done %d, want err %d done %d\n", w->name, how,
                at, res->err, res->done, w->err, w->done);
        ok = false;
    }
    if (after_len != w->after_len || memcmp(w->in + res->consumed, w->after, after_len) != 0) {
        fprintf(stderr, "  [%s] %s at %zu: %zu bytes left, want %zu\n", w->name, how, at,
                after_len, w->after_len);
        ok = false;
    }
    free(res->out);
    return ok;
}

/* check_row - run one row in every split and iov size. */
static void check_row(const struct row *w)
{
    struct result res;
    size_t len = w->in_len;
    size_t *cuts = malloc((len + 1) * sizeof *cuts);
    bool ok;

    size_t whole[1] = { len };
    run(w, whole, 1, IOV_BIG, &res);
    CHECK(same(w, &res, "one piece", 0), "%s: one piece", w->name);

    for (unsigned iov_max = 1; iov_max <= 2; iov_max++) {
        run(w, whole, 1, iov_max, &res);
        CHECK(same(w, &res, "one piece, small iov", iov_max), "%s: iov_max %u", w->name,
              iov_max);
    }

    ok = true;
    for (size_t at = 0; at <= len; at++) {
        size_t two[2] = { at, len };
        for (unsigned iov_max = 1; iov_max <= IOV_BIG; iov_max *= IOV_BIG) {
            run(w, two, 2, iov_max, &res);
            ok &= same(w, &res, iov_max == 1 ? "split, iov_max 1" : "split", at);
        }
    }
    CHECK(ok, "%s: split in two at every position", w->name);

    cuts[0] = 0;
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    ok = true;
    for (unsigned iov_max = 1; iov_max <= IOV_BIG; iov_max *= IOV_BIG) {
        run(w, cuts, len ? len : 1, iov_max, &res);   /* "nothing" still gets one empty feed */
        ok &= same(w, &res, "byte by byte", iov_max);
    }
    CHECK(ok, "%s: byte by byte", w->name);
    free(cuts);
}

/* line_rows - the 1000 / 1001 byte line rows, built at run time. */
static void line_rows(void)
{
    static char in[6][1100], out[6][1100];
    struct row gen[6];
    unsigned k = 0;

    /* text bytes before CRLF, leading stuffed dot, error expected */
    static const struct { size_t text; bool stuffed; enum smtp_data_err err; } shape[] = {
        { 998, false, SMTP_DATA_OK },            /* 1000 with CRLF */
        { 999, false, SMTP_DATA_LINE_TOO_LONG }, /* 1001: the LF is one too many */
        { 1000, false, SMTP_DATA_LINE_TOO_LONG },/* 1002: the CR is one too many */
        { 997, true, SMTP_DATA_OK },             /* "." + 997 + CRLF = 1000 */
        { 998, true, SMTP_DATA_LINE_TOO_LONG },  /* "." + 998 + CRLF = 1001 */
        { 1050, false, SMTP_DATA_LINE_TOO_LONG },
    };
    for (k = 0; k < 6; k++) {
        size_t s_dot = shape[k].stuffed ? 1 : 0;
        size_t n = 0;
        if (shape[k].stuffed)
            in[k][n++] = '.';
        for (size_t i = 0; i < shape[k].text; i++) {
            char c = (char)('a' + i % 26);
            if (shape[k].stuffed && i == 0)
                c = '.';              /* "..bcd": stored ".bcd" */
            in[k][n++] = c;
            out[k][i] = c;
        }
        /* Stored: the text up to the first byte past the limit on the wire (the CR goes with
           its LF), or all of it and the CRLF. */
        size_t m = shape[k].text;
        if (shape[k].err != SMTP_DATA_OK && m > SMTP_TEXT_LINE_BYTES_MAX - s_dot)
            m = SMTP_TEXT_LINE_BYTES_MAX - s_dot;
        memcpy(in[k] + n, "\r\n.\r\nX", 6);
        n += 6;
        if (shape[k].err == SMTP_DATA_OK) {
            memcpy(out[k] + m, "\r\n", 2);
            m += 2;
        }
        gen[k] = (struct row){ .name = "generated 1000-byte line", .in = in[k], .in_len = n,
                               .mode = DOT, .normalize = false, .line_max = 0, .out = out[k],
                               .out_len = m, .err = shape[k].err, .after = "X",
                               .after_len = 1, .done = true };
        check_row(&gen[k]);
    }
}

/* replies - the reply texts and their codes. */
static void replies(void)
{
    CHECK(strncmp(smtp_data_reply(SMTP_DATA_BARE_LF), "550 5.5.2 ", 10) == 0, "bare LF reply");
    CHECK(strncmp(smtp_data_reply(SMTP_DATA_BARE_CR), "550 5.5.2 ", 10) == 0, "bare CR reply");
    CHECK(strncmp(smtp_data_reply(SMTP_DATA_NUL), "550 5.6.0 ", 10) == 0, "NUL reply");
    CHECK(strncmp(smtp_data_reply(SMTP_DATA_LINE_TOO_LONG), "552 5.5.2 ", 10) == 0,
          "line reply");
    CHECK(strcmp(smtp_data_reply(SMTP_DATA_TOO_BIG),
                 "552 5.3.4 Message size exceeds fixed maximum message size") == 0, "size reply");
    CHECK(strncmp(smtp_data_reply(SMTP_DATA_OK), "451 ", 4) == 0, "OK is never 250");
    CHECK(strncmp(smtp_data_reply(SMTP_DATA_ERR_COUNT), "451 ", 4) == 0, "out of range");
    for (int e = 0; e < SMTP_DATA_ERR_COUNT; e++)
        CHECK(strchr(smtp_data_reply((enum smtp_data_err)e), '\r') == NULL, "no CR in %d", e);
}

/* after_done - feeding after the terminator consumes nothing and keeps done. */
static void after_done(void)
{
    struct smtp_data_reader r;
    struct iovec iov[4];
    unsigned n = 0;
    bool done = false;

    smtp_data_init(&r, DOT, false, 0, 0);
    size_t got = smtp_data_feed(&r, ".\r\nabc", 6, iov, 4, &n, &done);
    CHECK(got == 3 && done && n == 0, "got %zu done %d n %u", got, done, n);
    done = false;
    got = smtp_data_feed(&r, "abc", 3, iov, 4, &n, &done);
    CHECK(got == 0 && done && n == 0, "again: got %zu done %d n %u", got, done, n);
    /* A full iov on entry: nothing consumed, nothing written. */
    smtp_data_init(&r, DOT, false, 0, 0);
    n = 4;
    got = smtp_data_feed(&r, "abc\r\n", 5, iov, 4, &n, &done);
    CHECK(got == 0 && n == 4 && !done, "full on entry: got %zu n %u", got, n);
}

int main(void)
{
    size_t nrows = sizeof rows / sizeof rows[0];
    for (size_t i = 0; i < nrows; i++)
        check_row(&rows[i]);
    line_rows();
    replies();
    after_done();
    printf("test_smtp_data: %zu table rows + 6 generated rows\n", nrows);
    return check_done("test_smtp_data");
}
