/*
 * smtp_stuff.c - the outbound DATA encoder: dot-stuffing and CRLF line ends, zero-copy,
 * byte-resumable.
 *
 * The relay client feeds it the stored message content in the pieces it reads them from the
 * spool; it appends iovecs that, written in order, put on the wire the content made
 * transparent (RFC 5321 4.5.2) and, from smtp_stuff_finish(), the end of the mail data. It is
 * the mirror of the DATA reader in smtp_data.c: what this encoder sends, that reader stores
 * back unchanged. No allocation, no I/O, no global state.
 *
 * FUNCTIONS
 *   smtp_stuff_init()    start a message.
 *   smtp_stuff_feed()    encode one buffer; returns the bytes consumed (less when iov fills).
 *   smtp_stuff_finish()  the missing line end, if any, and ".\r\n", as one entry.
 *
 * HOW IT ENCODES
 *   Text and CRLF line ends pass through as one entry pointing into the caller's buffer, found
 *   sixteen bytes at a time by find_line_end(); the entry is closed only where the wire must
 *   differ from the input: before a "." at a line start (the static "." goes first, then the
 *   line from its own dot, unchanged), at a bare CR or LF (the static "\r\n" replaces it), at
 *   a CR that ends the buffer (held, see below) and at the end of the buffer. A free entry is
 *   checked for before each entry is started, never in the middle of one, so a full iov stops
 *   the encoder at a byte boundary with its state complete.
 *
 *   A CR that ends a buffer is consumed but not sent: the next byte decides. An LF sends
 *   "\r\n" (static, since the caller's previous buffer may be gone); anything else, or the end
 *   of the content, sends "\r\n" for the bare CR. So the bytes on the wire do not depend on how
 *   the content was split, only the iovecs that carry them do.
 *
 * SECURITY
 *   The content comes from the spool but is treated as hostile: an upstream bug or a BDAT
 *   chunk must not be able to end DATA early or smuggle a bare line end to the next hop. Each
 *   bare CR and each bare LF becomes one CRLF and starts a new line (whose dot is stuffed), so
 *   a line "." can never appear before the terminator, which only smtp_stuff_finish() writes.
 *   All other bytes pass unchanged (8-bit, and NUL, which the DATA reader never stores).
 *
 * STANDARDS
 *   RFC 5321 4.5.2 (transparency), 2.3.8 (CRLF; no bare CR or LF), 4.1.1.4 (DATA, the end of
 *   mail data indicator <CRLF>.<CRLF>), 4.5.3.1.6 (line length: not enforced here, the
 *   encoder cannot refuse content in the middle of a transaction; the inbound reader bounds
 *   the stored lines).
 *
 * DECISIONS
 *   - A bare CR becomes CRLF (not dropped, not CRLF plus the CR): same as the DATA reader's
 *     normalize mode, so the line structure a receiver sees is the one the reader stored.
 *     "\r\r\n" is therefore two line ends.
 *   - Empty content sends the terminator alone: an empty message is valid (RFC 5321 4.1.1.4).
 */
#include "net/smtp_stuff.h"

#include <assert.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Encoder states (struct smtp_stuff.state). */
enum {
    ST_BOL = 0,       /* at the start of a line (or of the content) */
    ST_TEXT,          /* inside a line, or at a byte that must go out as it is */
    ST_CR,            /* a CR ended the last buffer: not sent yet, the next byte decides */
    ST_DONE,          /* the terminator is in iov */
};

static const char dot[] = ".";              /* the stuffed dot */
static const char crlf[] = "\r\n";          /* a line end for a bare CR, bare LF or held CR */
static const char end_open[] = "\r\n.\r\n"; /* the end when the last line had no line end */
static const char end_closed[] = ".\r\n";   /* the end after a line end, or of empty content */

/* Where the output goes during one call. */
struct out {
    struct iovec *iov;            /* the caller's array */
    unsigned max;                 /* entries it holds */
    unsigned count;               /* entries used */
};

/* room - whether the output can take one more entry. */
static inline bool room(const struct out *o)
{
    return o->count < o->max;
}

/* emit - send n bytes at p as one entry (nothing for n == 0); the slot was checked for. */
static void emit(struct smtp_stuff *st, struct out *o, const char *p, size_t n)
{
    if (n == 0)
        return;
    assert(room(o));
    o->iov[o->count].iov_base = (void *)p;  /* only ever read: writev() */
    o->iov[o->count].iov_len = n;
    o->count++;
    st->bytes += n;
}

/*
 * find_line_end - the first CR or LF in [p, end), or end. With SSE2 (every x86-64) it tests
 * 16 bytes per step with unaligned loads that never pass end.
 */
static inline const char *find_line_end(const char *p, const char *end)
{
#if defined(__SSE2__)
    const __m128i cr = _mm_set1_epi8('\r');
    const __m128i lf = _mm_set1_epi8('\n');
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i m = _mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf));
        unsigned bits = (unsigned)_mm_movemask_epi8(m);
        if (bits != 0)
            return p + __builtin_ctz(bits);
        p += 16;
    }
#endif
    while (p < end && *p != '\r' && *p != '\n')
        p++;
    return p;
}

/*
 * scan_run - from p (< end, a free entry) send text and CRLF line ends as one entry, up to
 * the first place where the wire differs from the input. Sets the state for
 * smtp_stuff_feed() and returns where to go on from.
 */
static const char *scan_run(struct smtp_stuff *st, struct out *o, const char *p,
                            const char *end)
{
    const char *run = p;          /* first byte not yet sent */

    for (;;) {
        const char *q = find_line_end(p, end);
        if (q == end) {
            emit(st, o, run, (size_t)(end - run));
            st->state = ST_TEXT;
            return end;
        }
        if (*q == '\r' && q + 1 < end && q[1] == '\n') {
            p = q + 2;                    /* a CRLF line end: the entry goes on */
            if (p == end || *p == '.') {
                emit(st, o, run, (size_t)(p - run));
                st->state = ST_BOL;
                return p;
            }
            continue;
        }
        emit(st, o, run, (size_t)(q - run));
        if (*q == '\r' && q + 1 == end) { /* held: the next buffer says what it is */
            st->state = ST_CR;
            return end;
        }
        /* A bare CR or bare LF: "\r\n" in its place, if there is an entry for it. */
        if (!room(o)) {
            st->state = ST_TEXT;          /* resume at the bare byte with the next iov */
            return q;
        }
        emit(st, o, crlf, 2);
        st->bare_fixed++;
        st->state = ST_BOL;
        return q + 1;
    }
}

/* smtp_stuff_init - start a message. */
void smtp_stuff_init(struct smtp_stuff *st)
{
    *st = (struct smtp_stuff){ .state = ST_BOL, .bytes = 0, .bare_fixed = 0 };
}

/* smtp_stuff_feed - encode one buffer; see smtp_stuff.h. */
size_t smtp_stuff_feed(struct smtp_stuff *st, const char *buf, size_t len,
                       struct iovec *iov, unsigned iov_max, unsigned *iov_count)
{
    struct out o = { .iov = iov, .max = iov_max, .count = *iov_count };
    const char *p = buf;
    const char *end = buf + len;

    while (p < end && st->state != ST_DONE && room(&o)) {
        switch (st->state) {
        case ST_BOL:
            st->state = ST_TEXT;
            if (*p == '.')
                emit(st, &o, dot, 1);     /* the line itself follows from its own dot */
            break;

        case ST_TEXT:
            p = scan_run(st, &o, p, end);
            break;

        case ST_CR:
            emit(st, &o, crlf, 2);
            if (*p == '\n')
                p++;                      /* the held CR's own LF */
            else
                st->bare_fixed++;         /* a bare CR; p starts the next line */
            st->state = ST_BOL;
            break;

        default:
            assert(!"smtp_stuff: bad state");
            p = end;
            break;
        }
    }
    *iov_count = o.count;
    return (size_t)(p - buf);
}

/* smtp_stuff_finish - the missing line end and the terminator; see smtp_stuff.h. */
bool smtp_stuff_finish(struct smtp_stuff *st, struct iovec *iov, unsigned iov_max,
                       unsigned *iov_count)
{
    struct out o = { .iov = iov, .max = iov_max, .count = *iov_count };

    if (st->state == ST_DONE)
        return true;
    if (!room(&o))
        return false;
    if (st->state == ST_BOL) {
        emit(st, &o, end_closed, 3);
    } else {
        if (st->state == ST_CR)
            st->bare_fixed++;             /* the content ended in a bare CR */
        emit(st, &o, end_open, 5);
    }
    st->state = ST_DONE;
    *iov_count = o.count;
    return true;
}
