/*
 * fuzz_smtp_stuff.c - libFuzzer target for the outbound DATA encoder (net/smtp_stuff.c).
 *
 * Input: byte 0 picks where the content is split in two, byte 1 the small iov size (1..4),
 * the rest is the stored content. The content is encoded in one piece with a large iov, split
 * in two with the small iov, and byte by byte with a one-entry iov; every way must give the
 * same wire bytes, and they must hold these invariants:
 *   - a call consumes no more than it was given and stops early only with a full iov; no
 *     entry is empty, none is written past iov_max; st.bytes is the wire length;
 *   - the wire bytes are what a simple reference encoder gives (normalize, stuff, terminate);
 *   - no bare CR, no bare LF; they end in ".\r\n" (content empty) or "\r\n.\r\n";
 *   - no line "." before the terminator: "\r\n.\r\n" first occurs in "\r\n" + wire at its end;
 *   - the DATA reader of net/smtp_data.c (bare line ends refused) reads them to exactly their
 *     end and stores the normalized content (bare CR, bare LF made CRLF, the last line ended),
 *     or refuses them for a NUL, which the encoder passes and the reader never stores.
 */
#include "net/smtp_data.h"
#include "net/smtp_stuff.h"
#include "tests/unit/stuff_ref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IOV_BIG 32
#define IOV_GUARD 2

/* fail - report a broken invariant and stop. */
static void fail(const char *what)
{
    fprintf(stderr, "fuzz_smtp_stuff: %s\n", what);
    abort();
}

/* collect - append iov[0..n) to dst at *dst_len; check the guards after iov_max. */
static void collect(char *dst, size_t *dst_len, const struct iovec *iov, unsigned n,
                    unsigned iov_max)
{
    if (n > iov_max)
        fail("iov_count past iov_max");
    for (unsigned i = iov_max; i < iov_max + IOV_GUARD; i++)
        if (iov[i].iov_len != 99)
            fail("wrote past iov_max");
    for (unsigned i = 0; i < n; i++) {
        if (iov[i].iov_len == 0)
            fail("empty iovec");
        memcpy(dst + *dst_len, iov[i].iov_base, iov[i].iov_len);
        *dst_len += iov[i].iov_len;
    }
}

/* encode - feed content in pieces ending at cuts[], iov_max entries per call, then finish;
 * returns the wire length in dst. */
static size_t encode(const char *in, size_t len, const size_t *cuts, size_t ncut,
                     unsigned iov_max, char *dst)
{
    struct smtp_stuff st;
    struct iovec iov[IOV_BIG + IOV_GUARD];
    size_t off = 0, n_out = 0;

    smtp_stuff_init(&st);
    for (size_t c = 0; c < ncut; c++) {
        do {
            unsigned n = 0;
            for (unsigned i = 0; i < iov_max + IOV_GUARD; i++)
                iov[i].iov_len = 99;
            size_t piece = cuts[c] - off;
            size_t got = smtp_stuff_feed(&st, in + off, piece, iov, iov_max, &n);
            if (got > piece)
                fail("consumed more than given");
            if (got < piece && n < iov_max)
                fail("stopped with room in iov");
            if (got == 0 && n == 0 && piece > 0)
                fail("no progress");
            collect(dst, &n_out, iov, n, iov_max);
            off += got;
        } while (off < cuts[c]);
    }
    unsigned n = 0;
    for (unsigned i = 0; i < iov_max + IOV_GUARD; i++)
        iov[i].iov_len = 99;
    if (!smtp_stuff_finish(&st, iov, iov_max, &n) || n != 1)
        fail("finish did not add one entry");
    collect(dst, &n_out, iov, n, iov_max);
    if (st.bytes != n_out)
        fail("st.bytes differs from the wire length");
    return n_out;
}

/* check_wire - no bare line end, the right ending, no line "." before it. */
static void check_wire(const char *w, size_t n, size_t content_len)
{
    for (size_t i = 0; i < n; i++) {
        if (w[i] == '\r' && (i + 1 == n || w[i + 1] != '\n'))
            fail("bare CR on the wire");
        if (w[i] == '\n' && (i == 0 || w[i - 1] != '\r'))
            fail("bare LF on the wire");
    }
    if (content_len == 0) {
        if (n != 3 || memcmp(w, ".\r\n", 3) != 0)
            fail("empty content is not \".\\r\\n\" alone");
        return;
    }
    if (n < 5 || memcmp(w + n - 5, "\r\n.\r\n", 5) != 0)
        fail("wire does not end in \\r\\n.\\r\\n");
    if (n >= 3 && memcmp(w, ".\r\n", 3) == 0)
        fail("first line is \".\"");
    const char *t = memmem(w, n, "\r\n.\r\n", 5);
    if (t != w + n - 5)
        fail("a line \".\" before the terminator");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const char *in = (const char *)data + 2;
    size_t len = size - 2;
    size_t split = len ? (size_t)data[0] * len / 255 : 0;
    unsigned small = data[1] % 4 + 1;
    size_t cap = 3 * len + 8;
    char *one = malloc(cap), *two = malloc(cap), *bytewise = malloc(cap);
    char *norm = malloc(2 * len + 2), *ref = malloc(cap), *stored = malloc(cap);

    size_t whole[1] = { len };
    size_t halves[2] = { split, len };
    size_t *cuts = malloc((len + 1) * sizeof *cuts);
    cuts[0] = 0;
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;

    size_t n1 = encode(in, len, whole, 1, IOV_BIG, one);
    size_t n2 = encode(in, len, halves, 2, small, two);
    size_t n3 = encode(in, len, cuts, len ? len : 1, 1, bytewise);
    if (n2 != n1 || memcmp(two, one, n1) != 0)
        fail("split in two differs from one piece");
    if (n3 != n1 || memcmp(bytewise, one, n1) != 0)
        fail("byte by byte differs from one piece");

    size_t m = ref_normalize(in, len, norm);
    size_t nr = ref_stuff(norm, m, ref);
    if (nr != n1 || memcmp(ref, one, n1) != 0)
        fail("wire differs from the reference encoder");
    check_wire(one, n1, len);

    /* Round trip through the DATA reader, in one piece and byte by byte. */
    bool nul = len > 0 && memchr(in, '\0', len) != NULL;
    for (int bw = 0; bw < 2; bw++) {
        struct smtp_data_reader r;
        struct iovec iov[IOV_BIG];
        size_t off = 0, got = 0;
        bool done = false;
        smtp_data_init(&r, SMTP_DATA_DOT, false, 0, 0);
        while (off < n1 && !done) {
            unsigned n = 0;
            off += smtp_data_feed(&r, one + off, bw ? 1 : n1 - off, iov, IOV_BIG, &n, &done);
            for (unsigned i = 0; i < n; i++) {
                memcpy(stored + got, iov[i].iov_base, iov[i].iov_len);
                got += iov[i].iov_len;
            }
        }
        if (!done || off != n1)
            fail("the DATA reader does not end exactly at the terminator");
        if (nul ? r.err != SMTP_DATA_NUL
                : r.err != SMTP_DATA_OK || got != m || memcmp(stored, norm, m) != 0)
            fail("the DATA reader does not store the normalized content");
    }

    free(cuts);
    free(one);
    free(two);
    free(bytewise);
    free(norm);
    free(ref);
    free(stored);
    return 0;
}
