/*
 * fuzz_dsn.c - libFuzzer target for the bounce builder (core/dsn.c).
 *
 * Input layout (missing bytes read as 0, missing strings as ""):
 *   byte 0      flags: 1 expired, 2 headers NULL, 4 plant the boundary and build again,
 *               8 plant it in a reply (else in the headers), 16 repeat the headers to pass
 *               DSN_HEADERS_BYTES_MAX; bits 5-6 recipients - 1 (1..4)
 *   byte 1      per recipient r: bit r diag_is_smtp, bit 4 + r remote_mta NULL
 *   bytes 2-21  boundary_seed (4, little-endian), now (8), arrival (8)
 *   then        reporting_mta, qid, sender: each one length byte and that many bytes;
 *               per recipient addr, status, remote_mta (one length byte each) and diag (two
 *               length bytes, little-endian); the rest is the header section (may hold NULs).
 *   Strings are made C strings by copying; a NUL inside one ends it early.
 *
 * Invariants, for every input:
 *   - dsn_build() returns a message, and the same bytes again for the same input (pure);
 *   - dsn_check() (tests/unit/dsn_check.h) finds nothing wrong: every line ends in CRLF, no
 *     NUL, bare CR or LF, no line over 998 octets, three parts of the right types, the
 *     boundary only in delimiter lines, part 2 with 1 + rcpt_count well-formed groups,
 *     8-bit content labelled, part 3 within DSN_HEADERS_BYTES_MAX;
 *   - part 3 keeps the original header section: its bytes other than white space and line
 *     ends are those of the input's header section (up to dsn_header_end(), NULs dropped), all
 *     of them when the section is small, else a prefix; or part 3 is the notice alone;
 *   - dsn_header_end() agrees with a reference written the plain way;
 *   - with the first bounce's boundary planted in the headers (as "X-Planted: --B", a field
 *     that part 3 keeps) or as the first line "--B" of a reply, the second bounce still passes
 *     dsn_check() and uses another boundary.
 */
#include "core/dsn.h"
#include "tests/unit/dsn_check.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_RCPT_MAX     4
#define FUZZ_SMALL_BYTES  30000   /* a header section this small is never cut */
#define FUZZ_REPEAT_BYTES (DSN_HEADERS_BYTES_MAX + 8000) /* headers repeated to pass the cut */

/* fail - report a broken invariant and stop. */
static void fail(const char *what, const char *m, size_t len)
{
    fprintf(stderr, "fuzz_dsn: %s\n", what);
    if (m)
        fprintf(stderr, "----\n%.*s\n----\n", (int)(len > 20000 ? 20000 : len), m);
    abort();
}

/* The input, read front to back. */
struct reader {
    const uint8_t *p;             /* next byte */
    size_t left;                  /* bytes after it */
};

/* take - n bytes (fewer at the end of the input) into a fresh C string. */
static char *take(struct reader *r, size_t n)
{
    if (n > r->left)
        n = r->left;
    char *s = malloc(n + 1);
    memcpy(s, r->p, n);
    s[n] = '\0';
    r->p += n;
    r->left -= n;
    return s;
}

/* byte - the next byte, 0 at the end. */
static uint8_t byte(struct reader *r)
{
    if (!r->left)
        return 0;
    r->left--;
    return *r->p++;
}

/* le - n bytes little-endian. */
static uint64_t le(struct reader *r, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)byte(r) << (8 * i);
    return v;
}

/* ref_header_end - dsn_header_end() the plain way: a line ends at LF; the first line that is
 * empty or "\r" ends the section. */
static size_t ref_header_end(const char *b, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (b[i] != '\n')
            continue;
        size_t ll = i - start;
        if (ll == 0 || (ll == 1 && b[start] == '\r'))
            return i + 1;
        start = i + 1;
    }
    return len;
}

/* solid - the bytes of s other than white space, line ends and NUL, into out; the count. */
static size_t solid(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n' && s[i] != '\0')
            out[o++] = s[i];
    return o;
}

/* ref_kept - the solid() bytes of the header section that part 3 is to keep, the plain way:
 * lines end at CRLF, CR or LF; NULs are dropped; empty lines are skipped; the section ends
 * at the first line that is not "name:" (name: printable ASCII but ':', then white space;
 * at most 256 octets before the colon) and does not continue a field (start with white space
 * after one). */
static size_t ref_kept(const char *h, size_t end, char *out)
{
    size_t o = 0, i = 0;
    bool field_seen = false;

    while (i < end) {
        size_t j = i;
        char *line = malloc(end - i + 1);
        size_t ll = 0;
        while (j < end && h[j] != '\r' && h[j] != '\n')
            if (h[j++] != '\0')
                line[ll++] = h[j - 1];
        j += j < end && h[j] == '\r' && j + 1 < end && h[j + 1] == '\n' ? 2 : 1;
        i = j;
        bool stop = false;
        if (ll > 0) {
            if (line[0] == ' ' || line[0] == '\t') {
                stop = !field_seen;
            } else {
                size_t k = 0;
                while (k < ll && (unsigned char)line[k] > 32 && (unsigned char)line[k] < 127 &&
                       line[k] != ':')
                    k++;
                size_t c = k;
                while (c < ll && (line[c] == ' ' || line[c] == '\t'))
                    c++;
                stop = k == 0 || c == ll || line[c] != ':' || c > 256;
                field_seen = true;
            }
            if (!stop)
                o += solid(line, ll, out + o);
        }
        free(line);
        if (stop)
            break;
    }
    return o;
}

/* check_part3 - part 3 keeps the header section (see the top). */
static void check_part3(const struct dsn_in *in, const struct dsn_view *v, const char *m,
                        size_t len)
{
    static const char *const notices[] = {
        "X-Ringrelay-Notice: the original header section is not available\r\n",
        "X-Ringrelay-Notice: the original header section is too long to return\r\n",
    };
    size_t end = in->headers ? dsn_header_end(in->headers, in->headers_len) : 0;
    char *want = malloc(end + 1), *got = malloc(v->body_len[2] + 1);
    size_t wl = ref_kept(in->headers ? in->headers : "", end, want);
    size_t gl = solid(v->body[2], v->body_len[2], got);
    bool notice = false;

    for (size_t i = 0; i < 2; i++)
        notice |= v->body_len[2] == strlen(notices[i]) &&
                  memcmp(v->body[2], notices[i], v->body_len[2]) == 0;
    /* our notice stands for nothing to keep, or for a first field that alone is too long */
    if (!(notice && (wl == 0 || end > FUZZ_SMALL_BYTES))) {
        if (gl > wl || memcmp(got, want, gl) != 0)
            fail("part 3 is not the start of the header section", m, len);
        if (end <= FUZZ_SMALL_BYTES && gl != wl)
            fail("part 3 lost part of a small header section", m, len);
    }
    free(want);
    free(got);
}

/* build_checked - dsn_build() and every check on its output; the message (caller frees). */
static char *build_checked(const struct dsn_in *in, size_t *len, struct dsn_view *v)
{
    char *m = dsn_build(in, len);
    if (!m)
        fail("dsn_build returned NULL", NULL, 0);
    const char *why = dsn_check(m, *len, in->rcpt_count, v);
    if (why)
        fail(why, m, *len);
    check_part3(in, v, m, *len);
    return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reader r = { data, size };
    struct dsn_rcpt rc[FUZZ_RCPT_MAX];
    char *owned[4 * FUZZ_RCPT_MAX + 3];
    unsigned nowned = 0;
    uint8_t flags = byte(&r), rflags = byte(&r);
    struct dsn_in in = {
        .expired = flags & 1,
        .rcpts = rc,
        .rcpt_count = ((flags >> 5) & 3) + 1,
    };

    in.boundary_seed = (uint32_t)le(&r, 4);
    in.now = (int64_t)le(&r, 8);
    in.arrival = (int64_t)le(&r, 8);
    in.reporting_mta = owned[nowned++] = take(&r, byte(&r));
    in.qid = owned[nowned++] = take(&r, byte(&r));
    in.sender = owned[nowned++] = take(&r, byte(&r));
    for (unsigned i = 0; i < in.rcpt_count; i++) {
        rc[i].addr = owned[nowned++] = take(&r, byte(&r));
        rc[i].status = owned[nowned++] = take(&r, byte(&r));
        rc[i].remote_mta = owned[nowned++] = take(&r, byte(&r));
        if (rflags & (16u << i))
            rc[i].remote_mta = NULL;
        rc[i].diag = owned[nowned++] = take(&r, (size_t)le(&r, 2));
        rc[i].diag_is_smtp = rflags & (1u << i);
    }

    /* The header section: the rest, as it is, repeated, or none. */
    char *hdr = NULL;
    size_t hdr_len = r.left;
    if (flags & 16 && r.left) {
        size_t copies = FUZZ_REPEAT_BYTES / r.left + 1;
        hdr_len = copies * r.left;
        hdr = malloc(hdr_len);
        for (size_t i = 0; i < copies; i++)
            memcpy(hdr + i * r.left, r.p, r.left);
    } else {
        hdr = malloc(r.left ? r.left : 1);
        memcpy(hdr, r.p, r.left);
    }
    in.headers = flags & 2 ? NULL : hdr;
    in.headers_len = flags & 2 ? 0 : hdr_len;

    if (dsn_header_end(hdr, hdr_len) != ref_header_end(hdr, hdr_len))
        fail("dsn_header_end differs from the reference", NULL, 0);

    struct dsn_view v;
    size_t len, len2;
    char *m = build_checked(&in, &len, &v);
    char *m2 = dsn_build(&in, &len2);
    if (!m2 || len2 != len || memcmp(m, m2, len) != 0)
        fail("two builds of one input differ", m, len);
    free(m2);

    if (flags & 4) {
        /* Plant this bounce's boundary as a delimiter line and build again. */
        char boundary[sizeof v.boundary];
        strcpy(boundary, v.boundary);
        size_t bl = strlen(boundary);
        struct dsn_rcpt saved = rc[0];
        char *planted_diag = NULL, *planted_hdr = NULL;
        if (flags & 8) {
            size_t dl = strlen(rc[0].diag);
            planted_diag = malloc(dl + bl + 4);
            sprintf(planted_diag, "--%s\n%s", boundary, rc[0].diag);  /* first: not cut */
            rc[0].diag = planted_diag;
        } else {
            size_t keep = in.headers ? dsn_header_end(in.headers, in.headers_len) : 0;
            static const char field[] = "X-Planted: --";  /* a field: part 3 keeps it */
            size_t fl = sizeof field - 1;
            planted_hdr = malloc(fl + bl + 2 + keep + 1);
            memcpy(planted_hdr, field, fl);
            memcpy(planted_hdr + fl, boundary, bl);
            memcpy(planted_hdr + fl + bl, "\r\n", 2);
            if (keep)
                memcpy(planted_hdr + fl + bl + 2, in.headers, keep);
            in.headers = planted_hdr;
            in.headers_len = fl + bl + 2 + keep;
        }
        struct dsn_view v2;
        char *p = build_checked(&in, &len2, &v2);
        if (strcmp(v2.boundary, boundary) == 0)
            fail("planted boundary used again", p, len2);
        free(p);
        free(planted_diag);
        free(planted_hdr);
        rc[0] = saved;
    }

    free(m);
    free(hdr);
    for (unsigned i = 0; i < nowned; i++)
        free(owned[i]);
    return 0;
}
