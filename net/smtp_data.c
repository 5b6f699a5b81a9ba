/*
 * smtp_data.c - the message-content scanner for DATA and BDAT: zero-copy, byte-resumable.
 *
 * The reader is fed receive buffers in any split and appends iovecs that form the stored
 * message: the content after dot-unstuffing, every line ending in CRLF (the last one too),
 * without the terminating ".\r\n". Entries point into the caller's buffer, or at the static
 * strings "\r\n" and ".\r\n" for line ends it writes itself. It never copies and never
 * allocates.
 *
 * FUNCTIONS
 *   smtp_data_init()    start a message (mode, normalize, limits).
 *   smtp_data_feed()    scan one buffer; returns the bytes consumed, *done at the terminator.
 *   smtp_data_finish()  BDAT LAST: judge a pending CR, add the final CRLF if it is missing.
 *   smtp_data_reply()   the reply line for an error.
 *
 * HOW IT READS
 *   Ordinary text and CRLF line ends go through scan_run(), which looks for the next CR, LF or
 *   NUL sixteen bytes at a time and keeps one iovec open across lines. Everything else (a dot
 *   at the start of a line, a CR at the end of a buffer, a bare CR) is one byte-at-a-time state
 *   in smtp_data_feed(). An iovec slot is checked for before a run or an insert starts, never in
 *   the middle, so a full iov stops the reader at a byte boundary with the state complete.
 *
 *   The results do not depend on how the input is split: the stored bytes are a fixed stream,
 *   and an error cuts that stream at a fixed place. A CR and its LF are stored together (when
 *   the LF makes the line too long, the CR is not stored either); TOO_BIG cuts at exactly
 *   bytes_max bytes, even inside a "\r\n".
 *
 * SECURITY
 *   Every byte is from the peer. Only <CRLF>.<CRLF> ends DATA (or ".\r\n" as the very first
 *   line): a bare LF or bare CR ends a line, in both modes, but a line that a bare line end
 *   started can never be the terminator, so "\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n" and the
 *   like are content (refused, or normalized), never the end (SMTP smuggling). Terminator
 *   recognition does not depend on the error state: after the first error the reader stores
 *   nothing but keeps looking for the real end, so the rest of a refused message is never read
 *   as commands. No limit is trusted to the peer: lines and the stored size are counted here.
 *
 * STANDARDS
 *   RFC 5321 2.3.8 (lines end in CRLF; bare CR and LF), 4.1.1.4 (DATA, the end of mail data
 *   indicator), 4.5.2 (transparency: dot-stuffing), 4.5.3.1.6 (text line length, 1000 bytes
 *   with the CRLF); RFC 3030 (BDAT: counted chunks, no stuffing).
 *
 * DECISIONS
 *   - In normalize mode a bare CR, like a bare LF, is stored as CRLF and ends the line, so a
 *     dot after it is unstuffed too.
 *   - A line of just "." that is not the terminator (started by a bare line end, or ended by
 *     one) is stored as ".\r\n", not unstuffed to an empty line.
 *   - Line length counts wire bytes; the CRLF that smtp_data_finish() adds is not counted.
 */
#include "net/smtp_data.h"

#include <assert.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Scanner states (struct smtp_data_reader.state). "Hard" = after CRLF or at the start. */
enum {
    ST_BOL = 0,       /* start of a line after CRLF, or of the message: "." may end DATA */
    ST_BOL_SOFT,      /* start of a line after a bare CR or LF: "." is unstuffed, never the end */
    ST_TEXT,          /* inside a line */
    ST_CR,            /* a CR read, its LF not yet seen (the CR is not stored yet) */
    ST_DOT,           /* "." at a hard line start, not stored */
    ST_DOT_SOFT,      /* "." at a soft line start, not stored */
    ST_DOT_CR,        /* ".\r" at a hard line start: an LF now ends DATA */
    ST_DOT_SOFT_CR,   /* ".\r" at a soft line start: an LF ends the line "." */
    ST_DONE,          /* terminator consumed, or smtp_data_finish() called */
};

static const char crlf[] = "\r\n";       /* a line end the reader writes itself */
static const char dot_crlf[] = ".\r\n";  /* the line "." that is not the terminator */

/* Where the output goes during one call. */
struct out {
    struct iovec *iov;            /* the caller's array */
    unsigned max;                 /* entries it holds */
    unsigned count;               /* entries used */
};

static const char *const replies[SMTP_DATA_ERR_COUNT] = {
    [SMTP_DATA_OK]            = "451 4.3.0 Internal error: no message content error to report",
    [SMTP_DATA_BARE_LF]       = "550 5.5.2 Message contains a bare LF; lines must end in CRLF",
    [SMTP_DATA_BARE_CR]       = "550 5.5.2 Message contains a bare CR; lines must end in CRLF",
    [SMTP_DATA_NUL]           = "550 5.6.0 Message contains a NUL byte",
    [SMTP_DATA_LINE_TOO_LONG] = "552 5.5.2 Message contains a line too long",
    [SMTP_DATA_TOO_BIG]       = "552 5.3.4 Message size exceeds fixed maximum message size",
};

/* latch - record an error; the first one wins. */
static inline void latch(struct smtp_data_reader *r, enum smtp_data_err err)
{
    if (r->err == SMTP_DATA_OK)
        r->err = (uint8_t)err;
}

/* room - whether the output can take one more entry (always "yes" once nothing is stored). */
static inline bool room(const struct smtp_data_reader *r, const struct out *o)
{
    return r->err != SMTP_DATA_OK || o->count < o->max;
}

/* emit - store n bytes at p as one entry, cut at bytes_max; nothing once an error is latched. */
static void emit(struct smtp_data_reader *r, struct out *o, const char *p, size_t n)
{
    if (n == 0 || r->err != SMTP_DATA_OK)
        return;
    uint64_t left = r->bytes_max - r->bytes;
    bool too_big = n > left;
    if (too_big)
        n = (size_t)left;
    if (n > 0) {
        assert(o->count < o->max);    /* the slot was checked for before the run started */
        o->iov[o->count].iov_base = (void *)p;  /* only ever read: writev() */
        o->iov[o->count].iov_len = n;
        o->count++;
        r->bytes += n;
    }
    if (too_big)
        latch(r, SMTP_DATA_TOO_BIG);
}

/* line_count - count one more byte of the current line; past line_bytes_max latch an error. */
static inline void line_count(struct smtp_data_reader *r)
{
    if (r->line_bytes < r->line_bytes_max)
        r->line_bytes++;
    else
        latch(r, SMTP_DATA_LINE_TOO_LONG);
}

/* line_end_bare - a line ended by a bare CR or LF: store s (its CRLF form) or latch err. */
static void line_end_bare(struct smtp_data_reader *r, struct out *o, enum smtp_data_err err,
                          const char *s, size_t n)
{
    if (r->normalize)
        emit(r, o, s, n);
    else
        latch(r, err);
    r->line_bytes = 0;
    r->state = ST_BOL_SOFT;
}

/* is_special - CR, LF or NUL: the bytes that end the fast path. */
static inline bool is_special(unsigned char c)
{
    return c <= '\r' && ((1u << c) & ((1u << '\r') | (1u << '\n') | 1u));
}

/*
 * find_special - the first CR, LF or NUL in [p, end), or end. With SSE2 (every x86-64) it
 * tests 16 bytes per step with unaligned loads that never pass end.
 */
static inline const char *find_special(const char *p, const char *end)
{
#if defined(__SSE2__)
    const __m128i cr = _mm_set1_epi8('\r');
    const __m128i lf = _mm_set1_epi8('\n');
    const __m128i nul = _mm_setzero_si128();
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)),
                                 _mm_cmpeq_epi8(v, nul));
        unsigned bits = (unsigned)_mm_movemask_epi8(m);
        if (bits != 0)
            return p + __builtin_ctz(bits);
        p += 16;
    }
#endif
    while (p < end && !is_special((unsigned char)*p))
        p++;
    return p;
}

/*
 * scan_run - the fast path from p: text and CRLF line ends, kept as one entry across lines.
 * Called with p < end, no error latched and a free slot. Stops at anything else with the state
 * set for smtp_data_feed(), and returns where to go on from.
 */
static const char *scan_run(struct smtp_data_reader *r, struct out *o, const char *p,
                            const char *end)
{
    const char *run = p;          /* first byte not yet stored */
    const char *ls = p;           /* first byte of the current line not yet counted */
    uint32_t line = r->line_bytes;                /* bytes of the line before ls */
    size_t avail = r->line_bytes_max - line;      /* bytes the line may still take */
    bool dot = r->mode == SMTP_DATA_DOT;

    for (;;) {
        const char *q = find_special(p, end);
        size_t n = (size_t)(q - ls);

        if (n > avail || (n == avail && q < end)) {   /* byte ls + avail is one too many */
            const char *x = ls + avail;
            emit(r, o, run, (size_t)(x - run));
            latch(r, SMTP_DATA_LINE_TOO_LONG);
            r->line_bytes = r->line_bytes_max;
            r->state = ST_TEXT;
            return x;
        }
        if (q == end) {
            emit(r, o, run, (size_t)(end - run));
            r->line_bytes = line + (uint32_t)n;
            r->state = ST_TEXT;
            return end;
        }
        if (*q == '\r') {
            if (q + 1 < end && q[1] == '\n') {
                if (n + 1 == avail) {     /* the LF is one too many: the CR goes unstored too */
                    emit(r, o, run, (size_t)(q - run));
                    latch(r, SMTP_DATA_LINE_TOO_LONG);
                    r->line_bytes = r->line_bytes_max;
                    r->state = ST_CR;
                    return q + 1;
                }
                p = ls = q + 2;
                line = 0;
                avail = r->line_bytes_max;
                if (p == end || (dot && *p == '.')) {
                    emit(r, o, run, (size_t)(p - run));
                    r->line_bytes = 0;
                    r->state = ST_BOL;
                    return p;
                }
                continue;
            }
            /* A CR at the end of the buffer, or a bare CR: ST_CR judges it by the next byte. */
            emit(r, o, run, (size_t)(q - run));
            r->line_bytes = line + (uint32_t)n + 1;
            r->state = ST_CR;
            return q + 1;
        }
        emit(r, o, run, (size_t)(q - run));
        r->line_bytes = line + (uint32_t)n;
        r->state = ST_TEXT;
        if (*q == '\0') {
            latch(r, SMTP_DATA_NUL);
            return q + 1;
        }
        /* A bare LF (a CRLF was taken above). It fits the line: n < avail. */
        if (!room(r, o))
            return q;                     /* resume at the LF with the next iov */
        line_end_bare(r, o, SMTP_DATA_BARE_LF, crlf, 2);
        return q + 1;
    }
}

/*
 * skip_text - after an error, only the terminator matters: it starts with a CR, so a line is
 * passed over with one memchr(). BDAT has no terminator.
 */
static const char *skip_text(struct smtp_data_reader *r, const char *p, const char *end)
{
    if (r->mode == SMTP_DATA_BDAT) {
        r->state = ST_TEXT;
        return end;
    }
    const char *q = memchr(p, '\r', (size_t)(end - p));
    if (q == NULL) {
        r->state = ST_TEXT;
        return end;
    }
    r->state = ST_CR;
    return q + 1;
}

/* smtp_data_init - start a message. */
void smtp_data_init(struct smtp_data_reader *r, enum smtp_data_mode mode, bool normalize,
                    uint64_t bytes_max, uint32_t line_bytes_max)
{
    *r = (struct smtp_data_reader){
        .state = ST_BOL,
        .mode = (uint8_t)mode,
        .normalize = normalize,
        .err = SMTP_DATA_OK,
        .line_bytes = 0,
        .line_bytes_max = line_bytes_max ? line_bytes_max : UINT32_MAX,
        .bytes = 0,
        .bytes_max = bytes_max ? bytes_max : UINT64_MAX,
    };
}

/* smtp_data_feed - scan one buffer; see smtp_data.h. */
size_t smtp_data_feed(struct smtp_data_reader *r, const char *buf, size_t len,
                      struct iovec *iov, unsigned iov_max, unsigned *iov_count, bool *done)
{
    struct out o = { .iov = iov, .max = iov_max, .count = *iov_count };
    const char *p = buf;
    const char *end = buf + len;

    while (p < end && r->state != ST_DONE) {
        switch (r->state) {
        case ST_BOL:
        case ST_BOL_SOFT:
            if (*p == '.' && r->mode == SMTP_DATA_DOT) {
                line_count(r);
                r->state = r->state == ST_BOL ? ST_DOT : ST_DOT_SOFT;
                p++;
                break;
            }
            /* an ordinary line */
            /* fall through */
        case ST_TEXT:
            if (r->err != SMTP_DATA_OK) {
                p = skip_text(r, p, end);
                break;
            }
            if (!room(r, &o))
                goto out;
            p = scan_run(r, &o, p, end);
            break;

        case ST_CR:
            if (!room(r, &o))
                goto out;
            if (*p == '\n') {
                line_count(r);
                emit(r, &o, crlf, 2);
                r->line_bytes = 0;
                r->state = ST_BOL;
                p++;
            } else {
                line_end_bare(r, &o, SMTP_DATA_BARE_CR, crlf, 2);   /* p is read again */
            }
            break;

        case ST_DOT:
        case ST_DOT_SOFT:
            if (*p == '\r') {
                line_count(r);
                r->state = r->state == ST_DOT ? ST_DOT_CR : ST_DOT_SOFT_CR;
                p++;
            } else if (*p == '\n') {
                if (!room(r, &o))
                    goto out;
                line_count(r);
                line_end_bare(r, &o, SMTP_DATA_BARE_LF, dot_crlf, 3);
                p++;
            } else {
                r->state = ST_TEXT;       /* the stuffed dot is dropped; p starts the text */
            }
            break;

        case ST_DOT_CR:
            if (*p == '\n') {             /* <CRLF>.<CRLF>: the end of the mail data */
                p++;
                r->state = ST_DONE;
                break;
            }
            if (!room(r, &o))
                goto out;
            line_end_bare(r, &o, SMTP_DATA_BARE_CR, dot_crlf, 3);   /* p is read again */
            break;

        case ST_DOT_SOFT_CR:
            if (!room(r, &o))
                goto out;
            if (*p == '\n') {             /* the line "." after a bare line end: content */
                line_count(r);
                emit(r, &o, dot_crlf, 3);
                r->line_bytes = 0;
                r->state = ST_BOL;
                p++;
            } else {
                line_end_bare(r, &o, SMTP_DATA_BARE_CR, dot_crlf, 3);
            }
            break;

        default:
            assert(!"smtp_data: bad state");
            p = end;
            break;
        }
    }
out:
    *iov_count = o.count;
    *done = r->mode == SMTP_DATA_DOT && r->state == ST_DONE;
    return (size_t)(p - buf);
}

/* smtp_data_finish - BDAT LAST: end the message; see smtp_data.h. */
enum smtp_data_err smtp_data_finish(struct smtp_data_reader *r, struct iovec *iov,
                                    unsigned iov_max, unsigned *iov_count)
{
    struct out o = { .iov = iov, .max = iov_max, .count = *iov_count };

    if (r->mode == SMTP_DATA_BDAT && r->state != ST_DONE && r->err == SMTP_DATA_OK) {
        if (r->state == ST_CR) {
            assert(room(r, &o));
            line_end_bare(r, &o, SMTP_DATA_BARE_CR, crlf, 2);
        } else if (r->state == ST_TEXT) {
            assert(room(r, &o));
            emit(r, &o, crlf, 2);         /* the last line had no line end */
        }
    }
    r->state = ST_DONE;
    *iov_count = o.count;
    return (enum smtp_data_err)r->err;
}

/* smtp_data_reply - the reply line for an error; see smtp_data.h. */
const char *smtp_data_reply(enum smtp_data_err err)
{
    if ((unsigned)err >= SMTP_DATA_ERR_COUNT)
        return replies[SMTP_DATA_OK];
    return replies[err];
}
