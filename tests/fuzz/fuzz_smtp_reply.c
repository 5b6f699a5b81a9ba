/*
 * fuzz_smtp_reply.c - libFuzzer target for the SMTP reply parser (net/smtp_reply.c).
 *
 * Input: byte 0 picks where the stream is split in two, the rest is what a server sends. The
 * stream is read to its end (one reply per completion, going on after errors) in one piece,
 * split in two and byte by byte; every way must give the same replies ending at the same
 * offsets, and each reply must hold these invariants:
 *   - a call consumes no more than it was given, and stops early only at a reply's end;
 *   - the text is text_len bytes, NUL terminated, without NUL or CR, at most
 *     SMTP_REPLY_TEXT_BYTES_MAX, and text_cut only when it is full; lines is 1..64;
 *   - no error: code 200..599, the reply's bytes end in CRLF, and when the text was not cut,
 *     rebuilding the reply from code, lines and text gives exactly its bytes (the last line as
 *     "ccc" CRLF when it held no text and was sent that way);
 *   - an enhanced code has the code's class (2, 4 or 5) and parts of at most 999; EHLO fields
 *     only in a good 250 reply; no enhanced code and no EHLO fields with an error;
 *   - an error reply ends at an LF or at the 513th byte of a line; LINE_TOO_LONG always at
 *     the 513th byte.
 */
#include "net/smtp_reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPLIES_MAX 4096          /* more than any input of the fuzzer's size limit gives */

struct seen {
    size_t end;                   /* offset just after the reply */
    struct smtp_reply r;
};

/* fail - report a broken invariant and stop. */
static void fail(const char *what)
{
    fprintf(stderr, "fuzz_smtp_reply: %s\n", what);
    abort();
}

/* read_all - read in[0..len) in pieces ending at cuts[0..ncut); returns the replies. */
static size_t read_all(const char *in, size_t len, const size_t *cuts, size_t ncut,
                       struct seen *out, bool *busy)
{
    struct smtp_reply_parser p;
    size_t off = 0, n = 0;

    smtp_reply_init(&p);
    for (size_t c = 0; c < ncut; c++) {
        do {
            size_t piece = cuts[c] - off;
            bool complete = false;
            struct smtp_reply r;
            size_t got = smtp_reply_feed(&p, in + off, piece, &r, &complete);
            if (got > piece)
                fail("consumed more than given");
            if (!complete && got != piece)
                fail("stopped early without a reply");
            if (complete && got == 0)
                fail("a reply of no bytes");
            off += got;
            if (complete) {
                if (n == REPLIES_MAX)
                    fail("too many replies");
                out[n].end = off;
                out[n].r = r;
                n++;
            }
        } while (off < cuts[c]);
    }
    *busy = smtp_reply_busy(&p);
    return n;
}

/* same_replies - whether two readings agree, reply by reply. */
static void same_replies(const struct seen *a, size_t na, bool busy_a, const struct seen *b,
                         size_t nb, bool busy_b, const char *how)
{
    if (na != nb || busy_a != busy_b) {
        fprintf(stderr, "fuzz_smtp_reply: %s: %zu replies, one piece %zu\n", how, nb, na);
        abort();
    }
    for (size_t i = 0; i < na; i++) {
        const struct smtp_reply *x = &a[i].r, *y = &b[i].r;
        if (a[i].end != b[i].end ||
            memcmp(x, y, offsetof(struct smtp_reply, text)) != 0 ||
            memcmp(x->text, y->text, (size_t)x->text_len + 1) != 0) {
            fprintf(stderr, "fuzz_smtp_reply: %s: reply %zu differs from one piece\n", how, i);
            abort();
        }
    }
}

/* rebuild - the wire form of a good, uncut reply from its code, lines and text; returns the
 * length, or 0 when it does not fit dst. code_only says whether the last line has no SP. */
static size_t rebuild(const struct smtp_reply *r, bool code_only, char *dst, size_t cap)
{
    size_t n = 0, t = 0;
    for (unsigned line = 1; line <= r->lines; line++) {
        const char *nl = memchr(r->text + t, '\n', r->text_len - t);
        size_t seg = nl ? (size_t)(nl - (r->text + t)) : r->text_len - t;
        bool last = line == r->lines;
        if (n + 3 + 1 + seg + 2 > cap)
            return 0;
        n += (size_t)snprintf(dst + n, 4, "%03u", r->code);
        if (!last)
            dst[n++] = '-';
        else if (!code_only)
            dst[n++] = ' ';
        memcpy(dst + n, r->text + t, seg);
        n += seg;
        dst[n++] = '\r';
        dst[n++] = '\n';
        t += seg + (nl ? 1 : 0);
        if (last != (nl == NULL))
            return 0;             /* text's lines and the line count disagree */
    }
    return n;
}

/* check_reply - the invariants of one reply read from in[start..end). */
static void check_reply(const struct smtp_reply *r, const char *in, size_t start, size_t end)
{
    const char *raw = in + start;
    size_t raw_len = end - start;
    bool ehlo_zero = r->ehlo.ext == 0 && r->ehlo.auth == 0 && r->ehlo.size_max == 0 &&
                     r->ehlo.unknown_lines == 0 && r->ehlo.bad_lines == 0;

    if (r->text_len > SMTP_REPLY_TEXT_BYTES_MAX || r->text[r->text_len] != '\0' ||
        strlen(r->text) != r->text_len || memchr(r->text, '\r', r->text_len))
        fail("text not text_len bytes without NUL or CR");
    if (r->text_cut && r->text_len != SMTP_REPLY_TEXT_BYTES_MAX)
        fail("text cut before the limit");
    if (r->lines < 1 || r->lines > SMTP_REPLY_LINES_MAX)
        fail("lines out of range");
    if (r->err >= SMTP_REPLY_ERR_COUNT)
        fail("err out of range");
    if (r->code != 0 && (r->code < 200 || r->code > 599))
        fail("code out of range");
    if (r->has_enhanced && (r->enh_class != r->code / 100 || r->enh_class == 3 ||
                            r->enh_subject > 999 || r->enh_detail > 999))
        fail("bad enhanced code");
    if ((r->code != 250 || r->err != SMTP_REPLY_OK) && !ehlo_zero)
        fail("EHLO fields outside a good 250 reply");
    if (r->ehlo.auth && !(r->ehlo.ext & SMTP_EXT_AUTH))
        fail("AUTH mechanisms without AUTH");
    if (r->ehlo.size_max && !(r->ehlo.ext & SMTP_EXT_SIZE))
        fail("SIZE value without SIZE");

    if (r->err != SMTP_REPLY_OK) {
        if (r->has_enhanced)
            fail("enhanced code with an error");
        /* The reply ends at an LF, or at the byte that made its last line 513 bytes long
           (LINE_TOO_LONG, or the first error when skipping the rest of its line went past
           the limit). That line starts after the last LF before the final byte (which may
           itself be an LF: the 513th byte), or at the reply's start. */
        const char *lf = raw_len > 1 ? memrchr(raw, '\n', raw_len - 1) : NULL;
        size_t ls = lf ? (size_t)(lf - raw) + 1 : 0;
        bool at_limit = raw_len - ls == SMTP_REPLY_LINE_BYTES_MAX + 1;
        if (r->err == SMTP_REPLY_LINE_TOO_LONG && !at_limit)
            fail("LINE_TOO_LONG not at the 513th byte of a line");
        if (!at_limit && raw[raw_len - 1] != '\n')
            fail("error reply ends neither at an LF nor at the line limit");
        return;
    }

    if (r->code == 0)
        fail("good reply without a code");
    if (raw_len < 5 || memcmp(raw + raw_len - 2, "\r\n", 2) != 0)
        fail("good reply does not end in CRLF");
    if (r->text_cut)
        return;
    static char buf[SMTP_REPLY_LINES_MAX * SMTP_REPLY_LINE_BYTES_MAX];
    for (int code_only = 0; code_only < 2; code_only++) {
        size_t n = rebuild(r, code_only, buf, sizeof buf);
        if (n == raw_len && memcmp(buf, raw, n) == 0)
            return;
    }
    fail("the reply rebuilt from code, lines and text differs from its bytes");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct seen one[REPLIES_MAX], two[REPLIES_MAX], bytewise[REPLIES_MAX];
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    size_t split = len ? (size_t)data[0] * len / 255 : 0;
    bool busy1, busy2, busy3;

    size_t whole[1] = { len };
    size_t halves[2] = { split, len };
    size_t n1 = read_all(in, len, whole, 1, one, &busy1);
    size_t n2 = read_all(in, len, halves, 2, two, &busy2);
    same_replies(one, n1, busy1, two, n2, busy2, "split in two");

    size_t *cuts = malloc((len + 1) * sizeof *cuts);
    cuts[0] = 0;
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    size_t n3 = read_all(in, len, cuts, len ? len : 1, bytewise, &busy3);
    same_replies(one, n1, busy1, bytewise, n3, busy3, "byte by byte");
    free(cuts);

    size_t start = 0;
    for (size_t i = 0; i < n1; i++) {
        check_reply(&one[i].r, in, start, one[i].end);
        start = one[i].end;
    }
    if (busy1 != (start < len))
        fail("busy differs from bytes left after the last reply");
    return 0;
}
