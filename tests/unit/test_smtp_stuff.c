/*
 * test_smtp_stuff.c - table-driven tests of the outbound DATA encoder (net/smtp_stuff.c).
 *
 * Each row is stored content and the exact bytes it must put on the wire (terminator
 * included). Every row is run in one piece, split in two at every position and byte by byte,
 * each with iov_max 1, 2, 3 and "plenty"; all must give the same wire bytes, byte count and
 * bare line end count. The harness checks that no entry is empty, that nothing is written past
 * iov_max, that a call stops early only with a full iov, and that each entry points into the
 * input or holds one of the encoder's static strings (zero copy).
 *
 * Round trip: the wire bytes of every row, fed to the DATA reader of net/smtp_data.c (refusing
 * bare line ends), end exactly at the terminator and store the content with its line ends
 * made CRLF; for content that has only CRLF line ends, that is the content itself (plus a
 * CRLF if its last line had none). Content with a NUL (which the reader never stores, and the
 * encoder passes unchanged) must be refused by the reader, still at the terminator. Large and
 * random content is checked against a reference encoder written the simple way.
 */
#include "net/smtp_data.h"
#include "net/smtp_stuff.h"
#include "tests/unit/check.h"
#include "tests/unit/stuff_ref.h"

#include <stdlib.h>
#include <string.h>

#define S(s) s, sizeof(s) - 1           /* a literal that may hold NUL bytes, and its length */
#define IOV_BIG 64                      /* "plenty" */
#define IOV_GUARD 4                     /* entries after iov_max that must not be written */

struct row {
    const char *name;
    const char *in;               /* stored content */
    size_t in_len;
    const char *wire;             /* expected wire bytes, terminator included */
    size_t wire_len;
    unsigned fixed;               /* bare CRs and LFs made CRLF */
};

static const struct row rows[] = {
    /* Plain content and the final line end. */
    { "empty", S(""), S(".\r\n"), 0 },
    { "one line", S("a\r\n"), S("a\r\n.\r\n"), 0 },
    { "no final CRLF", S("a"), S("a\r\n.\r\n"), 0 },
    { "second line open", S("a\r\nb"), S("a\r\nb\r\n.\r\n"), 0 },
    { "empty line", S("\r\n"), S("\r\n.\r\n"), 0 },
    { "two empty lines", S("\r\n\r\n"), S("\r\n\r\n.\r\n"), 0 },
    { "headers and body", S("Subject: hi\r\nFrom: <a@b>\r\n\r\nbody\r\n"),
      S("Subject: hi\r\nFrom: <a@b>\r\n\r\nbody\r\n.\r\n"), 0 },
    { "long lines over 16 bytes",
      S("The quick brown fox jumps over the lazy dog\r\nand again, and again, and again\r\n"),
      S("The quick brown fox jumps over the lazy dog\r\nand again, and again, and again\r\n"
        ".\r\n"), 0 },
    { "8-bit passes", S("caf\xc3\xa9\tx\x7f\xff\r\n"), S("caf\xc3\xa9\tx\x7f\xff\r\n.\r\n"), 0 },
    { "NUL passes", S("a\0b\r\n\0"), S("a\0b\r\n\0\r\n.\r\n"), 0 },

    /* Dot-stuffing (RFC 5321 4.5.2). */
    { "line \".\"", S(".\r\n"), S("..\r\n.\r\n"), 0 },
    { "content \".\" alone", S("."), S("..\r\n.\r\n"), 0 },
    { "line \"..\"", S("..\r\n"), S("...\r\n.\r\n"), 0 },
    { ".x first line", S(".a\r\n"), S("..a\r\n.\r\n"), 0 },
    { "\". \"", S(". \r\n"), S(".. \r\n"".\r\n"), 0 },
    { "terminator inside", S("a\r\n.\r\nb\r\n"), S("a\r\n..\r\nb\r\n.\r\n"), 0 },
    { "terminator at the end", S("a\r\n.\r\n"), S("a\r\n..\r\n.\r\n"), 0 },
    { "CRLF dot CRLF alone", S("\r\n.\r\n"), S("\r\n..\r\n.\r\n"), 0 },
    { "last line a dot, open", S("x\r\n."), S("x\r\n..\r\n.\r\n"), 0 },
    { "dots inside lines", S("a.b\r\nc.\r\n"), S("a.b\r\nc.\r\n.\r\n"), 0 },
    { "stuffed mix", S("line1\r\n..line2\r\n...\r\n.\r\n"),
      S("line1\r\n...line2\r\n....\r\n..\r\n.\r\n"), 0 },
    { "dot after 16-byte run", S("0123456789abcd\r\n.xyz\r\n0123456789abcdef.\r\n"),
      S("0123456789abcd\r\n..xyz\r\n0123456789abcdef.\r\n.\r\n"), 0 },
    { "many dot lines", S(".\r\n.\r\n.\r\n.\r\n"), S("..\r\n..\r\n..\r\n..\r\n.\r\n"), 0 },

    /* Bare CR and bare LF become CRLF (RFC 5321 2.3.8), and start a line. */
    { "bare LF", S("a\nb\r\n"), S("a\r\nb\r\n.\r\n"), 1 },
    { "bare CR", S("a\rb\r\n"), S("a\r\nb\r\n.\r\n"), 1 },
    { "LF alone", S("\n"), S("\r\n.\r\n"), 1 },
    { "CR alone", S("\r"), S("\r\n.\r\n"), 1 },
    { "CR at the end", S("a\r"), S("a\r\n.\r\n"), 1 },
    { "CR CR LF", S("a\r\r\n"), S("a\r\n\r\n.\r\n"), 1 },
    { "LF CR", S("a\n\r"), S("a\r\n\r\n.\r\n"), 2 },
    { "LF LF", S("\n\n"), S("\r\n\r\n.\r\n"), 2 },
    { "CRLF LF", S("\r\n\n"), S("\r\n\r\n.\r\n"), 1 },
    { "CR CR CR", S("\r\r\r"), S("\r\n\r\n\r\n.\r\n"), 3 },
    { "smuggle LF dot LF", S("a\n.\nb"), S("a\r\n..\r\nb\r\n.\r\n"), 2 },
    { "smuggle CRLF dot LF", S("a\r\n.\n"), S("a\r\n..\r\n.\r\n"), 1 },
    { "smuggle CR dot CRLF", S("a\r.\r\n"), S("a\r\n..\r\n.\r\n"), 1 },
    { "smuggle LF dot CRLF", S("\n.\r\n"), S("\r\n..\r\n.\r\n"), 1 },
    { "dot CR at the end", S(".\r"), S("..\r\n.\r\n"), 1 },
    { "dot dot LF", S("..\n"), S("...\r\n.\r\n"), 1 },
    { "bare LF after 16-byte run", S("0123456789abcdefghij\nklmnopqrstuvwxyz0123\r"),
      S("0123456789abcdefghij\r\nklmnopqrstuvwxyz0123\r\n.\r\n"), 2 },
};

/* The static strings the encoder may point at, besides the input. */
static const char *const statics[] = { ".", "\r\n", "\r\n.\r\n", ".\r\n" };

/* One run's outcome. */
struct result {
    char *wire;                   /* bytes from the iovecs, concatenated */
    size_t wire_len;
    uint64_t bytes;               /* st.bytes at the end */
    uint64_t fixed;               /* st.bare_fixed */
    const char *harness;          /* what went wrong in the driving, NULL if nothing */
};

/* collect - append the iovecs to res->wire; check guards, emptiness and zero copy. */
static void collect(struct result *res, const struct iovec *iov, unsigned from, unsigned n,
                    unsigned iov_max, const char *in, size_t in_len)
{
    for (unsigned i = iov_max; i < iov_max + IOV_GUARD; i++)
        if (iov[i].iov_base != (void *)&collect || iov[i].iov_len != 7)
            res->harness = "wrote past iov_max";
    if (n > iov_max || from > n) {
        res->harness = "iov_count out of range";
        return;
    }
    for (unsigned i = from; i < n; i++) {
        const char *b = iov[i].iov_base;
        size_t l = iov[i].iov_len;
        if (l == 0)
            res->harness = "empty iovec";
        bool inside = in_len > 0 && b >= in && b + l <= in + in_len;
        bool known = false;
        for (size_t k = 0; k < sizeof statics / sizeof statics[0]; k++)
            known |= l == strlen(statics[k]) && memcmp(b, statics[k], l) == 0;
        if (!inside && !known)
            res->harness = "entry neither in the input nor a static string";
        memcpy(res->wire + res->wire_len, b, l);
        res->wire_len += l;
    }
}

/* fresh_iov - an iov with guard entries after iov_max. */
static void fresh_iov(struct iovec *iov, unsigned iov_max)
{
    for (unsigned i = 0; i < iov_max + IOV_GUARD; i++)
        iov[i] = (struct iovec){ .iov_base = (void *)&collect, .iov_len = 7 };
}

/*
 * run - encode in[0..len) in pieces ending at cuts[0..ncut) (the last cut is len), each piece
 * in as many calls as the iov needs, then finish. Each call gets a fresh iov, except that
 * every other call starts with one entry already used, so *iov_count going in is honoured.
 */
static void run(const char *in, size_t len, const size_t *cuts, size_t ncut, unsigned iov_max,
                struct result *res)
{
    struct smtp_stuff st;
    struct iovec iov[IOV_BIG + IOV_GUARD];
    size_t off = 0;
    unsigned calls = 0;

    *res = (struct result){ .wire = malloc(3 * len + 16) };
    smtp_stuff_init(&st);
    for (size_t c = 0; c < ncut && !res->harness; c++) {
        do {
            unsigned used = (iov_max > 1 && calls++ % 2) ? 1 : 0;
            unsigned n = used;
            fresh_iov(iov, iov_max);
            size_t piece = cuts[c] - off;
            size_t got = smtp_stuff_feed(&st, in + off, piece, iov, iov_max, &n);
            collect(res, iov, used, n, iov_max, in, len);
            if (got > piece) {
                res->harness = "consumed more than given";
                break;
            }
            if (got < piece && n < iov_max)
                res->harness = "stopped early with room in iov";
            if (got == 0 && n == used && piece > 0)
                res->harness = "no progress";
            off += got;
        } while (off < cuts[c] && !res->harness);
    }

    /* finish: refused with a full iov, then done with one entry, then a no-op */
    unsigned n = iov_max;
    fresh_iov(iov, iov_max);
    if (smtp_stuff_finish(&st, iov, iov_max, &n) || n != iov_max)
        res->harness = "finish with a full iov";
    n = 0;
    if (!smtp_stuff_finish(&st, iov, iov_max, &n) || n != 1)
        res->harness = "finish did not add one entry";
    collect(res, iov, 0, n, iov_max, in, len);
    n = 0;
    fresh_iov(iov, iov_max);
    if (!smtp_stuff_finish(&st, iov, iov_max, &n) || n != 0)
        res->harness = "second finish added something";
    n = 0;
    if (smtp_stuff_feed(&st, "x", 1, iov, iov_max, &n) != 0 || n != 0)
        res->harness = "feed after finish";
    res->bytes = st.bytes;
    res->fixed = st.bare_fixed;
}

/* same - whether a run gave the expected wire bytes; say how it did not. */
static bool same(const char *name, const char *wire, size_t wire_len, unsigned fixed,
                 const struct result *res, const char *how, size_t at, unsigned iov_max)
{
    bool ok = true;
    if (res->harness) {
        fprintf(stderr, "  [%s] %s at %zu, iov_max %u: %s\n", name, how, at, iov_max,
                res->harness);
        ok = false;
    }
    if (res->wire_len != wire_len || memcmp(res->wire, wire, wire_len) != 0) {
        fprintf(stderr, "  [%s] %s at %zu, iov_max %u: %zu wire bytes, want %zu\n", name, how,
                at, iov_max, res->wire_len, wire_len);
        ok = false;
    }
    if (res->bytes != res->wire_len || res->fixed != fixed) {
        fprintf(stderr, "  [%s] %s at %zu, iov_max %u: bytes %llu fixed %llu, want %zu %u\n",
                name, how, at, iov_max, (unsigned long long)res->bytes,
                (unsigned long long)res->fixed, res->wire_len, fixed);
        ok = false;
    }
    free(res->wire);
    return ok;
}

static const unsigned iov_sizes[] = { 1, 2, 3, IOV_BIG };
#define IOV_SIZES (sizeof iov_sizes / sizeof iov_sizes[0])

/* How one input fared in each way of feeding it. */
struct verdict {
    bool whole;                   /* one piece, every iov size */
    bool split;                   /* split in two at every position (or a sample of them) */
    bool bytewise;                /* byte by byte */
};

/* check_encoding - one input in one piece, split in two and byte by byte, every iov size;
 * every_split false takes about a hundred split positions (for large content). */
static struct verdict check_encoding(const char *name, const char *in, size_t len,
                                     const char *wire, size_t wire_len, unsigned fixed,
                                     bool every_split)
{
    struct verdict v = { true, true, true };
    struct result res;
    size_t *cuts = malloc((len + 1) * sizeof *cuts);

    size_t whole[1] = { len };
    for (unsigned k = 0; k < IOV_SIZES; k++) {
        run(in, len, whole, 1, iov_sizes[k], &res);
        v.whole &= same(name, wire, wire_len, fixed, &res, "one piece", 0, iov_sizes[k]);
    }

    size_t step = every_split ? 1 : len / 97 + 1;
    for (size_t at = 0; at <= len && v.split; at += step) {
        size_t two[2] = { at, len };
        for (unsigned k = 0; k < IOV_SIZES; k++) {
            run(in, len, two, 2, iov_sizes[k], &res);
            v.split &= same(name, wire, wire_len, fixed, &res, "split", at, iov_sizes[k]);
        }
    }

    cuts[0] = 0;
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    for (unsigned k = 0; k < IOV_SIZES; k++) {
        run(in, len, cuts, len ? len : 1, iov_sizes[k], &res);
        v.bytewise &= same(name, wire, wire_len, fixed, &res, "byte by byte", 0, iov_sizes[k]);
    }
    free(cuts);
    return v;
}

/* check_verdict - one CHECK per way of feeding. */
static void check_verdict(const char *name, struct verdict v)
{
    CHECK(v.whole, "%s: one piece", name);
    CHECK(v.split, "%s: split in two", name);
    CHECK(v.bytewise, "%s: byte by byte", name);
}


/* reference - the encoder written the simple way: normalize, stuff, terminate. Returns the
 * length (dst holds 3 * len + 8); *fixed counts bare line ends. */
static size_t reference(const char *in, size_t len, char *dst, unsigned *fixed)
{
    char *norm = malloc(2 * len + 2);
    size_t m = ref_normalize(in, len, norm), n;

    *fixed = 0;
    for (size_t i = 0; i < len; i++)
        if ((in[i] == '\r' && (i + 1 == len || in[i + 1] != '\n')) ||
            (in[i] == '\n' && (i == 0 || in[i - 1] != '\r')))
            (*fixed)++;
    n = ref_stuff(norm, m, dst);
    free(norm);
    return n;
}

/* crlf_clean - whether every CR is followed by LF and every LF preceded by CR. */
static bool crlf_clean(const char *in, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '\r' && (i + 1 == len || in[i + 1] != '\n'))
            return false;
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
            return false;
    }
    return true;
}

/*
 * round_trip - feed wire to the DATA reader (DOT, bare line ends refused) in one piece and
 * byte by byte: it must end at the terminator, with nothing left, and store exactly the
 * normalized content; for CRLF-clean content that is the content, plus CRLF if it was open.
 */
static bool round_trip(const char *name, const char *in, size_t len, const char *wire,
                       size_t wire_len)
{
    char *want = malloc(2 * len + 2), *got = malloc(wire_len + 8);
    size_t want_len = ref_normalize(in, len, want);
    bool ok = true;

    if (crlf_clean(in, len)) {
        bool open = len > 0 && in[len - 1] != '\n';
        ok &= want_len == len + (open ? 2 : 0) && memcmp(want, in, len) == 0;
    }
    for (int bytewise = 0; bytewise < 2 && ok; bytewise++) {
        struct smtp_data_reader r;
        struct iovec iov[IOV_BIG];
        size_t off = 0, got_len = 0;
        bool done = false;
        smtp_data_init(&r, SMTP_DATA_DOT, false, 0, 0);
        while (off < wire_len && !done) {
            unsigned n = 0;
            size_t piece = bytewise ? 1 : wire_len - off;
            off += smtp_data_feed(&r, wire + off, piece, iov, IOV_BIG, &n, &done);
            for (unsigned i = 0; i < n; i++) {
                memcpy(got + got_len, iov[i].iov_base, iov[i].iov_len);
                got_len += iov[i].iov_len;
            }
        }
        bool nul = len > 0 && memchr(in, '\0', len) != NULL;
        bool stored_ok = nul ? r.err == SMTP_DATA_NUL
                             : r.err == SMTP_DATA_OK && got_len == want_len &&
                               memcmp(got, want, want_len) == 0;
        if (!done || off != wire_len || !stored_ok) {
            fprintf(stderr, "  [%s] round trip%s: done %d at %zu of %zu, err %d, %zu bytes "
                    "stored, want %zu\n", name, bytewise ? " byte by byte" : "", done, off,
                    wire_len, r.err, got_len, want_len);
            ok = false;
        }
    }
    free(want);
    free(got);
    return ok;
}

/* check_row - a table row: its encoding, the reference agrees, and the round trip. */
static void check_row(const struct row *w)
{
    char *ref = malloc(3 * w->in_len + 8);
    unsigned fixed;
    size_t ref_len = reference(w->in, w->in_len, ref, &fixed);

    CHECK(ref_len == w->wire_len && memcmp(ref, w->wire, ref_len) == 0 && fixed == w->fixed,
          "%s: the table and the reference encoder agree", w->name);
    check_verdict(w->name, check_encoding(w->name, w->in, w->in_len, w->wire, w->wire_len,
                                          w->fixed, true));
    CHECK(round_trip(w->name, w->in, w->in_len, w->wire, w->wire_len), "%s: round trip",
          w->name);
    free(ref);
}

/* rng - xorshift64, fixed seed: the same "random" content on every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* large - about 256 KiB of mail-like content with dot lines, encoded against the reference;
 * once CRLF-clean, once with bare line ends sprinkled in. Returns the rows run. */
static unsigned large(void)
{
    size_t cap = 300 * 1024, len = 0;
    char *in = malloc(cap);
    while (len < 256 * 1024) {
        size_t line = rng() % 200;
        int kind = (int)(rng() % 8);
        if (kind == 0)
            in[len++] = '.';      /* a line that must be stuffed */
        if (kind == 1) {
            in[len++] = '.';
            in[len++] = '.';
        }
        for (size_t i = 0; i < line; i++)
            in[len++] = (char)(' ' + rng() % 95);
        in[len++] = '\r';
        in[len++] = '\n';
    }
    in[len++] = '.';              /* and an open last line that is a dot */

    unsigned count = 0;
    for (int dirty = 0; dirty < 2; dirty++) {
        if (dirty)
            for (int k = 0; k < 64; k++)
                in[rng() % len] = (rng() & 1) ? '\r' : '\n';
        char *wire = malloc(3 * len + 8);
        unsigned fixed;
        size_t wire_len = reference(in, len, wire, &fixed);
        const char *name = dirty ? "large, bare line ends" : "large";
        check_verdict(name, check_encoding(name, in, len, wire, wire_len, fixed, false));
        CHECK(round_trip(name, in, len, wire, wire_len), "%s: round trip", name);
        CHECK(dirty || fixed == 0, "large clean content has no bare line end");
        free(wire);
        count++;
    }
    free(in);
    return count;
}

/* random_small - many short inputs over { a . CR LF }, every split, against the reference. */
static unsigned random_small(void)
{
    static const char alphabet[] = "a.\r\n";
    char in[40], wire[3 * 40 + 8];
    unsigned count = 0;
    bool ok = true;

    for (unsigned k = 0; k < 1500; k++) {
        size_t len = rng() % sizeof in;
        for (size_t i = 0; i < len; i++)
            in[i] = alphabet[rng() % 4];
        unsigned fixed;
        size_t wire_len = reference(in, len, wire, &fixed);
        struct verdict v = check_encoding("random", in, len, wire, wire_len, fixed, true);
        ok &= v.whole && v.split && v.bytewise && round_trip("random", in, len, wire, wire_len);
        count++;
    }
    CHECK(ok, "random small content");
    return count;
}

/* split_cr - a CR that ends one buffer and the LF that starts the next: how it goes out. */
static void split_cr(void)
{
    struct smtp_stuff st;
    struct iovec iov[4];
    unsigned n = 0;

    smtp_stuff_init(&st);
    CHECK(smtp_stuff_feed(&st, "ab\r", 3, iov, 4, &n) == 3 && n == 1 && iov[0].iov_len == 2,
          "the CR is held: n %u", n);
    n = 0;
    CHECK(smtp_stuff_feed(&st, "\n.c", 3, iov, 4, &n) == 3 && n == 3, "n %u", n);
    CHECK(iov[0].iov_len == 2 && memcmp(iov[0].iov_base, "\r\n", 2) == 0 &&
          iov[1].iov_len == 1 && memcmp(iov[1].iov_base, ".", 1) == 0 &&
          iov[2].iov_len == 2 && memcmp(iov[2].iov_base, ".c", 2) == 0,
          "static CRLF, stuffed dot, then the line from its own dot");
    CHECK(st.bare_fixed == 0 && st.bytes == 7, "bytes %llu", (unsigned long long)st.bytes);

    /* A full iov on entry: nothing consumed, nothing written. */
    smtp_stuff_init(&st);
    n = 4;
    CHECK(smtp_stuff_feed(&st, "abc\r\n", 5, iov, 4, &n) == 0 && n == 4, "full on entry");
    /* A CRLF run is one entry, however many lines. */
    n = 0;
    CHECK(smtp_stuff_feed(&st, "a\r\nb\r\nc\r\n", 9, iov, 4, &n) == 9 && n == 1 &&
          iov[0].iov_len == 9, "one entry for plain lines: n %u", n);
}

int main(void)
{
    size_t nrows = sizeof rows / sizeof rows[0];
    for (size_t i = 0; i < nrows; i++)
        check_row(&rows[i]);
    unsigned nlarge = large();
    unsigned nrandom = random_small();
    split_cr();
    printf("test_smtp_stuff: %zu table rows + %u large + %u random inputs\n", nrows, nlarge,
           nrandom);
    return check_done("test_smtp_stuff");
}
