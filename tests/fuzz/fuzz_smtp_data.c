/*
 * fuzz_smtp_data.c - libFuzzer target for the DATA / BDAT content scanner (net/smtp_data.c).
 *
 * Input: byte 0 picks where the content is split in two, byte 1 picks the set-up (mode,
 * normalize, small or default limits, iov size), the rest is the content. The content is fed
 * in one piece, split in two, byte by byte and with a one-entry iov; every way must give the
 * same result, and the result must hold these invariants:
 *   - the bytes in the iovecs are r.bytes, and never more than bytes_max;
 *   - no error: no NUL, every CR is followed by LF and every LF preceded by CR, no stored line
 *     longer than the limit (+2 for the CRLF that normalizing or finish adds), a done DATA or
 *     a finished BDAT message ends in CRLF (or is empty);
 *   - DOT: done exactly when "\r\n.\r\n" occurs in "\r\n" + content, and then the bytes
 *     consumed end at its first occurrence; otherwise everything is consumed;
 *   - no error, not normalizing: the stored message is exactly the content (DOT, done: what
 *     was consumed without the terminator, one leading dot dropped from each line; BDAT: the
 *     content, plus CRLF if it did not end in one);
 *   - no error: feeding the re-stuffed stored message (refusing bare line ends) stores it again
 *     unchanged.
 */
#include "net/smtp_data.h"
#include "tests/unit/stuff_ref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IOV_BIG 32
#define IOV_GUARD 2

struct setup {
    enum smtp_data_mode mode;
    bool normalize;
    uint64_t bytes_max;
    uint32_t line_max;            /* as given to smtp_data_init() */
};

struct result {
    char *out;                    /* stored bytes */
    size_t out_len;
    size_t consumed;
    bool done;
    enum smtp_data_err err;
    uint64_t bytes;
};

/* fail - report a broken invariant and stop. */
static void fail(const char *what)
{
    fprintf(stderr, "fuzz_smtp_data: %s\n", what);
    abort();
}

/* collect - append n iovecs to res->out, checking the guards after iov_max. */
static void collect(struct result *res, const struct iovec *iov, unsigned n, unsigned iov_max)
{
    if (n > iov_max)
        fail("iov_count past iov_max");
    for (unsigned i = iov_max; i < iov_max + IOV_GUARD; i++)
        if (iov[i].iov_len != 99)
            fail("wrote past iov_max");
    for (unsigned i = 0; i < n; i++) {
        if (iov[i].iov_len == 0)
            fail("empty iovec");
        memcpy(res->out + res->out_len, iov[i].iov_base, iov[i].iov_len);
        res->out_len += iov[i].iov_len;
    }
}

/* feed_all - feed content in pieces ending at cuts[], iov_max entries per call; finish BDAT. */
static void feed_all(const struct setup *su, const char *in, size_t len, const size_t *cuts,
                     size_t ncut, unsigned iov_max, struct result *res)
{
    struct smtp_data_reader r;
    struct iovec iov[IOV_BIG + IOV_GUARD];
    size_t off = 0;

    *res = (struct result){ .out = malloc(3 * len + 16) };
    smtp_data_init(&r, su->mode, su->normalize, su->bytes_max, su->line_max);
    for (size_t c = 0; c < ncut && !res->done; c++) {
        do {
            unsigned n = 0;
            bool done = false;
            for (unsigned i = 0; i < iov_max + IOV_GUARD; i++)
                iov[i].iov_len = 99;
            size_t got = smtp_data_feed(&r, in + off, cuts[c] - off, iov, iov_max, &n, &done);
            if (got > cuts[c] - off)
                fail("consumed more than given");
            collect(res, iov, n, iov_max);
            off += got;
            res->done = done;
            if (!done && off < cuts[c] && n < iov_max)
                fail("stopped with room in iov");
            if (done && su->mode == SMTP_DATA_BDAT)
                fail("done in BDAT mode");
        } while (off < cuts[c] && !res->done);
    }
    res->consumed = off;
    res->err = (enum smtp_data_err)r.err;
    if (su->mode == SMTP_DATA_BDAT) {
        unsigned n = 0;
        for (unsigned i = 0; i < iov_max + IOV_GUARD; i++)
            iov[i].iov_len = 99;
        res->err = smtp_data_finish(&r, iov, iov_max, &n);
        collect(res, iov, n, iov_max);
    }
    res->bytes = r.bytes;
    if (res->bytes != res->out_len)
        fail("r.bytes differs from the bytes in the iovecs");
    if (su->bytes_max && res->bytes > su->bytes_max)
        fail("stored more than bytes_max");
}

/* same_result - whether two ways of feeding agreed. */
static void same_result(const struct result *a, const struct result *b, const char *how)
{
    if (a->out_len != b->out_len || memcmp(a->out, b->out, a->out_len) != 0 ||
        a->consumed != b->consumed || a->done != b->done || a->err != b->err) {
        fprintf(stderr, "fuzz_smtp_data: %s differs from one piece\n", how);
        abort();
    }
}

/* check_clean - a message stored without error is well-formed. */
static void check_clean(const struct setup *su, const struct result *res)
{
    uint32_t line_max = su->line_max ? su->line_max : UINT32_MAX;
    size_t line = 0;

    for (size_t i = 0; i < res->out_len; i++) {
        char c = res->out[i];
        if (c == '\0')
            fail("NUL stored without error");
        if (c == '\r' && (i + 1 == res->out_len || res->out[i + 1] != '\n'))
            fail("bare CR stored without error");
        if (c == '\n' && (i == 0 || res->out[i - 1] != '\r'))
            fail("bare LF stored without error");
        line++;
        if (c == '\n') {
            if (line > (uint64_t)line_max + 2)
                fail("stored line longer than the limit");
            line = 0;
        }
    }
    bool closed = su->mode == SMTP_DATA_BDAT || res->done;
    if (closed && res->out_len > 0 &&
        (res->out_len < 2 || memcmp(res->out + res->out_len - 2, "\r\n", 2) != 0))
        fail("closed message does not end in CRLF");
}

/* unstuff_ref - the stored form of CRLF-only content, the simple way; returns the length. */
static size_t unstuff_ref(const char *in, size_t len, char *dst)
{
    size_t n = 0;
    bool bol = true;
    for (size_t i = 0; i < len; i++) {
        if (!(bol && in[i] == '.'))
            dst[n++] = in[i];
        bol = in[i] == '\n';
    }
    return n;
}

/* terminator_end - where the first <CRLF>.<CRLF> ends in content (the leading CRLF may be
   the start), or 0 when there is none. */
static size_t terminator_end(const char *in, size_t len)
{
    if (len >= 3 && memcmp(in, ".\r\n", 3) == 0)
        return 3;
    const char *p = len >= 5 ? memmem(in, len, "\r\n.\r\n", 5) : NULL;
    return p ? (size_t)(p - in) + 5 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t split_byte = data[0], cfg = data[1];
    const char *in = (const char *)data + 2;
    size_t len = size - 2;

    struct setup su = {
        .mode = (cfg & 1) ? SMTP_DATA_BDAT : SMTP_DATA_DOT,
        .normalize = (cfg & 2) != 0,
        .bytes_max = (cfg & 4) ? (cfg >> 4) * 3 + 1 : 0,
        .line_max = (cfg & 8) ? (uint32_t)((cfg >> 4) % 8 + 3) : SMTP_TEXT_LINE_BYTES_MAX,
    };
    size_t split = len ? (size_t)split_byte * len / 255 : 0;

    struct result one, two, bytewise, small;
    size_t whole[1] = { len };
    size_t halves[2] = { split, len };
    feed_all(&su, in, len, whole, 1, IOV_BIG, &one);
    feed_all(&su, in, len, halves, 2, IOV_BIG, &two);
    feed_all(&su, in, len, whole, 1, 1, &small);
    same_result(&one, &two, "split in two");
    same_result(&one, &small, "iov_max 1");

    size_t *cuts = malloc((len + 1) * sizeof *cuts);
    cuts[0] = 0;
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    feed_all(&su, in, len, cuts, len ? len : 1, 2, &bytewise);
    same_result(&one, &bytewise, "byte by byte");
    free(cuts);

    if (su.mode == SMTP_DATA_DOT) {
        size_t end = terminator_end(in, len);
        if (one.done != (end != 0))
            fail("done differs from the presence of <CRLF>.<CRLF>");
        if (one.consumed != (end ? end : len))
            fail("consumed does not end at the first <CRLF>.<CRLF>");
    } else if (one.consumed != len) {
        fail("BDAT did not consume everything");
    }

    if (one.err == SMTP_DATA_OK) {
        check_clean(&su, &one);
        if (su.mode == SMTP_DATA_DOT && one.done) {
            char *again = malloc(2 * one.out_len + 3 + len);
            if (!su.normalize) {
                size_t want = unstuff_ref(in, one.consumed - 3, again);
                if (want != one.out_len || memcmp(again, one.out, want) != 0)
                    fail("stored message differs from the unstuffed input");
            }
            size_t again_len = ref_stuff(one.out, one.out_len, again);
            struct setup plain = { .mode = SMTP_DATA_DOT };
            struct result round;
            feed_all(&plain, again, again_len, &again_len, 1, IOV_BIG, &round);
            if (round.err != SMTP_DATA_OK || !round.done || round.consumed != again_len ||
                round.out_len != one.out_len || memcmp(round.out, one.out, one.out_len) != 0)
                fail("re-stuffed message does not read back the same");
            free(round.out);
            free(again);
        }
        if (su.mode == SMTP_DATA_BDAT && !su.normalize) {
            bool add = len > 0 && (len < 2 || memcmp(in + len - 2, "\r\n", 2) != 0);
            if (one.out_len != len + (add ? 2 : 0) || memcmp(one.out, in, len) != 0 ||
                (add && memcmp(one.out + len, "\r\n", 2) != 0))
                fail("BDAT stored message differs from the content");
        }
    }

    free(one.out);
    free(two.out);
    free(small.out);
    free(bytewise.out);
    return 0;
}
