/*
 * dsn.c - delivery status notifications (bounces): the whole RFC 3464 multipart/report message
 * for a set of failed recipients, in one malloc'd buffer.
 *
 * FUNCTIONS
 *   dsn_build()        the bounce: header, explanation, delivery-status, original headers.
 *   dsn_header_end()   where the header section of a message ends (its first empty line).
 *
 * WHAT IT WRITES
 *   Header: From (MAILER-DAEMON at the reporting MTA), To (the original sender), Subject,
 *   Date (now, UTC), Message-ID <now.qid.seed@reporting_mta>, Auto-Submitted: auto-replied,
 *   MIME-Version and Content-Type: multipart/report; report-type=delivery-status. Then a
 *   preamble line and three parts, each preceded by a delimiter line, and the close delimiter:
 *     1. text/plain: the explanation in Postfix bounce(8) wording, one paragraph per failed
 *        recipient ("<addr>: host mx.example said: 550 5.1.1 ...").
 *     2. message/delivery-status: the per-message group (Reporting-MTA, X-Ringrelay-Queue-ID,
 *        X-Ringrelay-Sender, Arrival-Date), then one group per recipient (Final-Recipient,
 *        Action: failed, Status, Remote-MTA, Diagnostic-Code), groups separated by empty lines.
 *     3. text/rfc822-headers: the original header section.
 *   Every part's content ends in CRLF, so an empty line always precedes the next delimiter.
 *
 * HOW IT BUILDS
 *   One buffer, grown with realloc; an allocation failure is remembered, later writes are
 *   dropped, and dsn_build() frees the buffer and returns NULL. The boundary is
 *   "{qid}.{seed}.{counter}" with an 8-hex-digit counter; the message is written with counter
 *   0 and the offset of every copy of the boundary is recorded. Then one scan of the body finds
 *   every occurrence of "{qid}.{seed}." outside the delimiter lines; when one is followed by a
 *   hex counter, the counter is changed to one that occurs nowhere (one past the largest seen)
 *   and the copies are patched in place: the counter has a fixed width, so nothing moves. The
 *   boundary thus never occurs in the content, even in content written to collide with it, in
 *   time linear in the size of the message (but when ffffffff itself was planted: then a
 *   scan per counter tried, which takes content written knowing the random seed).
 *
 * SECURITY
 *   Everything in struct dsn_in that came from the network is hostile: the addresses, the
 *   remote MTA's name and reply, the status code, the original header section; the reporting
 *   MTA and queue id are ours but are cleaned the same way.
 *   - Addresses: control bytes (CR, LF, NUL, ...) and '<' '>' are dropped, so an address can
 *     neither start a header line nor leave its angle brackets; invalid UTF-8 becomes '?'; cut
 *     at DSN_ADDR_BYTES_MAX on a character boundary. In part 2 a non-ASCII address is written
 *     as a utf-8-addr-xtext (RFC 6533), which is ASCII and cut at DSN_ADDR_FIELD_BYTES_MAX.
 *   - Host names keep only [A-Za-z0-9.-_:[]]; queue ids only [A-Za-z0-9].
 *   - A status that is not "4|5.d{1,3}.d{1,3}" becomes 5.0.0 (4.4.7 for an expired message).
 *   - A reply keeps printable ASCII only (other 8-bit text becomes '?'); its line ends (CRLF,
 *     bare CR, bare LF) separate reply lines, which become continuation lines of one folded
 *     Diagnostic-Code field. Cut at DSN_DIAG_BYTES_MAX.
 *   - Header section: only up to its first empty line (dsn_header_end()), and only up to the
 *     first line that is neither a header field ("name:", the colon within
 *     DSN_FIELD_NAME_BYTES_MAX) nor a continuation line, so the
 *     part holds header fields and nothing else; NULs dropped; bare CR and bare LF become
 *     CRLF; empty lines (made by that, or by dropped NULs) and white-space-only lines are
 *     dropped, and white space at the start of a line is cut at DSN_WSP_RUN_BYTES_MAX; a line
 *     over DSN_LINE_BYTES_MAX is folded before its last space or tab that follows text, or
 *     split with CRLF SP where there is none (never inside a UTF-8 character); cut at
 *     DSN_HEADERS_BYTES_MAX at the start of the header field (or, for a field longer than
 *     that, of the line) that would pass it.
 *   So every line of the output ends in CRLF, holds no NUL, bare CR or bare LF, and has at
 *   most DSN_LINE_BYTES_MAX octets before its CRLF; no line of a header section is empty or
 *   white space only (RFC 5322 3.2.2).
 *
 * STANDARDS
 *   RFC 3464 (message/delivery-status: 2.2 per-message and 2.3 per-recipient fields, 2.3.6
 *   Diagnostic-Code), RFC 6522 (multipart/report, text/rfc822-headers), RFC 3463 (status
 *   codes), RFC 5322 (2.1.1 line length, 2.2.3 folding, 3.3 date-time, 3.6.4 Message-ID),
 *   RFC 2046 5.1.1 (boundary: at most 70 characters, must not occur in the encapsulated
 *   content), RFC 3834 (Auto-Submitted), RFC 6533 3 (utf-8 address type, xtext form in
 *   message/delivery-status, which must stay 7bit), RFC 6532 (UTF-8 in header fields).
 *
 * DECISIONS
 *   - Non-ASCII addresses make part 1 text/plain; charset=utf-8 and mark it, and the message,
 *     Content-Transfer-Encoding: 8bit; 8-bit bytes in the original headers mark part 3 and the
 *     message 8bit likewise. The caller then sends the bounce with BODY=8BITMIME (and
 *     SMTPUTF8 when the sender address is non-ASCII). Part 2 is always ASCII. The label of
 *     part 3 is decided from the header section before it is cleaned and cut, so it may say
 *     8bit of content that lost its 8-bit bytes: allowed (RFC 2045 6.2), and one pass less.
 *   - Only the header section of the original is returned (RFC 6522 text/rfc822-headers, what
 *     Postfix sends for a message over its bounce_size_limit): the content may be large, and
 *     returning it would make a bounce to a forged sender a better carrier of spam.
 *   - An empty or NULL header section still gives a text/rfc822-headers part, holding one
 *     X-Ringrelay-Notice field that says why, so the report always has its three parts.
 *   - Part 1 wording is Postfix's, so that people and ticket systems recognise it.
 *   - A remote reply is cleaned to ASCII everywhere (not only in part 2): its rare UTF-8 text
 *     (RFC 6531 3.7.4.2) is shown as '?', which keeps one sanitizer and 7bit replies.
 *   - Multiple spaces in a reply or address collapse to one where folding needs the word
 *     boundaries (part 1 text, Diagnostic-Code): the words and their order stay.
 */
#include "core/dsn.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DSN_LINE_BYTES_MAX       998   /* RFC 5322 2.1.1: octets in a line before its CRLF */
#define DSN_FOLD_BYTES           78    /* RFC 5322 2.1.1 "SHOULD": where text is folded */
#define DSN_ADDR_BYTES_MAX       512   /* an address kept (RFC 5321 paths are <= 256) */
#define DSN_ADDR_FIELD_BYTES_MAX 960   /* an xtext address in part 2: fits a 998-octet line */
#define DSN_HOST_BYTES_MAX       255   /* a host name kept (RFC 1035: 253 as text) */
#define DSN_QID_BYTES_MAX        32    /* a queue id kept (ours are 16 hex digits) */
#define DSN_STATUS_BYTES_MAX     12    /* "5.123.123" and its NUL */
#define DSN_DIAG_BYTES_MAX       4096  /* a reply or reason kept */
#define DSN_TEXT_BYTES_MAX       (DSN_ADDR_BYTES_MAX + DSN_HOST_BYTES_MAX + DSN_DIAG_BYTES_MAX \
                                  + 128) /* one recipient's paragraph in part 1 */
#define DSN_TIME_MAX             INT64_C(253402300799) /* 9999-12-31T23:59:59Z: 4-digit years */
#define DSN_COUNTER_BYTES        8     /* hex digits of the boundary's counter */
#define DSN_BOUNDARY_COPIES      5     /* Content-Type parameter, 3 delimiters, close */
#define DSN_BUF_BYTES_MIN        4096  /* first allocation, beside the headers' size */
#define DSN_WSP_RUN_BYTES_MAX    64    /* white space kept at the start of a part 3 line */
#define DSN_FIELD_NAME_BYTES_MAX 256   /* a part 3 field's name and white space before ':' */

/* The output: one growing buffer. */
struct buf {
    char *p;                      /* malloc'd bytes, NULL before the first write */
    size_t len;                   /* bytes written */
    size_t cap;                   /* bytes allocated */
    bool oom;                     /* an allocation failed: later writes are dropped */
};

/* The boundary: written with counter 0, patched once the content is known. */
struct boundary {
    char prefix[DSN_QID_BYTES_MAX + 16]; /* "{qid}.{seed}.", NUL-terminated */
    size_t prefix_len;            /* bytes of prefix */
    size_t at[DSN_BOUNDARY_COPIES]; /* offsets of each copy's counter digits in the output */
    unsigned copies;              /* entries of at[] used */
};

/* grow - room for more bytes after b->len; false (and b->oom) when memory ran out. */
static bool grow(struct buf *b, size_t more)
{
    if (b->oom)
        return false;
    if (more <= b->cap - b->len)
        return true;
    size_t cap = b->cap ? b->cap : DSN_BUF_BYTES_MIN;
    while (cap - b->len < more) {
        if (cap > SIZE_MAX / 2) {
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

/* put - append n bytes. */
static void put(struct buf *b, const void *s, size_t n)
{
    if (n && grow(b, n)) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    }
}

/* puts_ - append a string. */
static void puts_(struct buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* putc_ - append one byte. */
static void putc_(struct buf *b, char c)
{
    put(b, &c, 1);
}

/* putf - append printf output (short, trusted formats only). */
__attribute__((format(printf, 2, 3)))
static void putf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !grow(b, (size_t)n + 1))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* utf8_seq - bytes of the valid UTF-8 character at s (a NUL-terminated or longer string),
 * its code point in *cp; 0 when s does not start a valid character (overlong forms,
 * surrogates and values past U+10FFFF are invalid). Never reads past a NUL. */
static size_t utf8_seq(const unsigned char *s, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t v, min;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, v = c & 0x1fu, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, v = c & 0x0fu, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, v = c & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)  /* a NUL stops here */
            return 0;
        v = v << 6 | (s[i] & 0x3fu);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

/* clean_addr - s (NULL = "") as out (DSN_ADDR_BYTES_MAX + 1 bytes): control bytes, '<' and
 * '>' dropped, invalid UTF-8 as '?', spaces at either end trimmed, cut on a character
 * boundary. Returns the length; *high |= whether a non-ASCII character was kept. */
static size_t clean_addr(const char *s, char *out, bool *high)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = 0;

    while (*p) {
        uint32_t cp;
        size_t k = utf8_seq(p, &cp);
        const unsigned char *from = p;
        if (k == 0) {
            from = (const unsigned char *)"?";
            k = 1;
            p++;
        } else {
            p += k;
            if (k == 1 && (cp < 0x20 || cp == 0x7f || cp == '<' || cp == '>' ||
                           (cp == ' ' && n == 0)))
                continue;
        }
        if (n + k > DSN_ADDR_BYTES_MAX)
            break;
        if (k > 1)
            *high = true;
        memcpy(out + n, from, k);
        n += k;
    }
    while (n > 0 && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
    return n;
}

/* host_char - whether c may stand in a host name we write (letters, digits, "-._" and the
 * "[]:" of address literals). */
static bool host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '[' || c == ']' || c == ':';
}

/* clean_host - s (NULL = "") as out (DSN_HOST_BYTES_MAX + 1 bytes): host_char() bytes only,
 * no dot at either end or next to another. Returns the length. */
static size_t clean_host(const char *s, char *out)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = 0;

    for (; *p && n < DSN_HOST_BYTES_MAX; p++) {
        if (!host_char(*p) || (*p == '.' && (n == 0 || out[n - 1] == '.')))
            continue;
        out[n++] = (char)*p;
    }
    while (n > 0 && out[n - 1] == '.')
        n--;
    out[n] = '\0';
    return n;
}

/* clean_qid - s (NULL = "") as out (DSN_QID_BYTES_MAX + 1 bytes): letters and digits only.
 * Returns the length. */
static size_t clean_qid(const char *s, char *out)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = 0;

    for (; *p && n < DSN_QID_BYTES_MAX; p++)
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))
            out[n++] = (char)*p;
    out[n] = '\0';
    return n;
}

/* digits - how many (at most max + 1) ASCII digits start s. */
static size_t digits(const char *s, size_t max)
{
    size_t n = 0;
    while (n <= max && s[n] >= '0' && s[n] <= '9')
        n++;
    return n;
}

/* clean_status - s if it is an RFC 3463 failure code ("4" or "5", then two 1-3 digit
 * fields), else the default for the kind of report; into out (DSN_STATUS_BYTES_MAX). */
static void clean_status(const char *s, bool expired, char *out)
{
    const char *dflt = expired ? "4.4.7" : "5.0.0";
    size_t a, c;

    if (!s || (s[0] != '4' && s[0] != '5') || s[1] != '.')
        goto bad;
    a = digits(s + 2, 3);
    if (a < 1 || a > 3 || s[2 + a] != '.')
        goto bad;
    c = digits(s + 3 + a, 3);
    if (c < 1 || c > 3 || s[3 + a + c] != '\0')
        goto bad;
    memcpy(out, s, 3 + a + c + 1);
    return;
bad:
    strcpy(out, dflt);
}

/* clean_diag - s (NULL = "") as out (DSN_DIAG_BYTES_MAX + 1 bytes): printable ASCII, each
 * line end (CRLF, bare CR, bare LF) as one '\n', a tab as a space, other control bytes
 * dropped, each non-ASCII character (or invalid byte) as '?'. Returns the length. */
static size_t clean_diag(const char *s, char *out)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = 0;

    while (*p && n < DSN_DIAG_BYTES_MAX) {
        unsigned char c = *p;
        uint32_t cp;
        if (c == '\r' || c == '\n') {
            p += (c == '\r' && p[1] == '\n') ? 2 : 1;
            out[n++] = '\n';
            continue;
        }
        if (c >= 0x80) {
            size_t k = utf8_seq(p, &cp);
            p += k ? k : 1;
            out[n++] = '?';
            continue;
        }
        p++;
        if (c == '\t')
            out[n++] = ' ';
        else if (c >= 0x20 && c != 0x7f)
            out[n++] = (char)c;
    }
    out[n] = '\0';
    return n;
}

/* has_word - whether cleaned text holds anything but spaces and line ends. */
static bool has_word(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\n')
            return true;
    return false;
}

/*
 * put_folded - write cleaned text (n bytes: no control byte but '\n', which separates reply
 * lines) as words, the first right at the current position, column col. Words on one reply
 * line are joined by one space; a reply line break, or a word that would take the line past
 * DSN_FOLD_BYTES, starts a new line "\r\n" + cont (cont = " " in a header field: RFC 5322
 * folding). A word that alone would pass DSN_LINE_BYTES_MAX is split (not inside a UTF-8
 * character) the same way. No line end after the last word; nothing at all for no words.
 */
static void put_folded(struct buf *b, const char *s, size_t n, size_t col, const char *cont)
{
    size_t cont_len = strlen(cont);
    bool started = false, brk = false;
    size_t i = 0;

    assert(col <= DSN_LINE_BYTES_MAX && cont_len > 0 && cont_len < DSN_FOLD_BYTES);
    while (i < n) {
        if (s[i] == ' ' || s[i] == '\n') {
            brk |= s[i] == '\n';
            i++;
            continue;
        }
        const char *w = s + i;
        size_t wl = 0;
        while (i < n && s[i] != ' ' && s[i] != '\n')
            i++, wl++;
        if (started) {
            if (brk || col + 1 + wl > DSN_FOLD_BYTES) {
                puts_(b, "\r\n");
                puts_(b, cont);
                col = cont_len;
            } else {
                putc_(b, ' ');
                col++;
            }
        }
        started = true;
        brk = false;
        while (col + wl > DSN_LINE_BYTES_MAX) {
            size_t k = DSN_LINE_BYTES_MAX - col;
            while (k > 0 && ((unsigned char)w[k] & 0xc0) == 0x80)
                k--;
            put(b, w, k);
            puts_(b, "\r\n");
            puts_(b, cont);
            col = cont_len;
            w += k;
            wl -= k;
        }
        put(b, w, wl);
        col += wl;
    }
}

/* put_date - t as an RFC 5322 date-time in UTC, clamped to years 1970-9999. */
static void put_date(struct buf *b, int64_t t)
{
    static const char wday[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char mon[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    struct tm tm;
    time_t tt = (time_t)(t < 0 ? 0 : t > DSN_TIME_MAX ? DSN_TIME_MAX : t);

    if (!gmtime_r(&tt, &tm))
        memset(&tm, 0, sizeof tm);
    putf(b, "%s, %d %s %04d %02d:%02d:%02d +0000", wday[tm.tm_wday % 7], tm.tm_mday,
         mon[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* put_xtext_addr - a cleaned non-ASCII address as an RFC 6533 utf-8-addr-xtext: QCHARs as
 * they are, space, '+', '=', '\' and every non-ASCII character as "\x{HEX}"; cut before the
 * character that would pass DSN_ADDR_FIELD_BYTES_MAX. */
static void put_xtext_addr(struct buf *b, const char *addr)
{
    const unsigned char *p = (const unsigned char *)addr;
    size_t n = 0;

    while (*p) {
        char unit[16];
        uint32_t cp;
        size_t k = utf8_seq(p, &cp);  /* clean_addr() left only valid characters */
        int ul;
        assert(k > 0);
        p += k;
        if (cp > 0x20 && cp < 0x7f && cp != '+' && cp != '=' && cp != '\\')
            ul = snprintf(unit, sizeof unit, "%c", (char)cp);
        else
            ul = snprintf(unit, sizeof unit, "\\x{%" PRIX32 "}", cp);
        if (n + (size_t)ul > DSN_ADDR_FIELD_BYTES_MAX)
            break;
        put(b, unit, (size_t)ul);
        n += (size_t)ul;
    }
}

/* put_addr_field - "Name: rfc822; addr" for an ASCII address, "Name: utf-8; xtext" for
 * another (RFC 6533 3), then CRLF. */
static void put_addr_field(struct buf *b, const char *name, const char *addr, bool high)
{
    puts_(b, name);
    if (!high) {
        puts_(b, ": rfc822; ");
        puts_(b, addr);
    } else {
        puts_(b, ": utf-8; ");
        put_xtext_addr(b, addr);
    }
    puts_(b, "\r\n");
}

/* put_boundary - the boundary with counter 0; remembers where its counter is. */
static void put_boundary(struct buf *b, struct boundary *bd)
{
    put(b, bd->prefix, bd->prefix_len);
    assert(bd->copies < DSN_BOUNDARY_COPIES);
    bd->at[bd->copies++] = b->len;
    put(b, "00000000", DSN_COUNTER_BYTES);
}

/* put_delimiter - the line that starts a part ("--B") or closes the report ("--B--"), with
 * the CRLF before it (RFC 2046 5.1.1: it belongs to the delimiter) and after it. */
static void put_delimiter(struct buf *b, struct boundary *bd, bool close)
{
    puts_(b, "\r\n--");
    put_boundary(b, bd);
    puts_(b, close ? "--\r\n" : "\r\n");
}

/* hex_counter - the value of the DSN_COUNTER_BYTES hex digits at s, or -1 if they are not. */
static int64_t hex_counter(const char *s)
{
    uint32_t v = 0;
    for (size_t i = 0; i < DSN_COUNTER_BYTES; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/* What follows the boundary's prefix in the body, outside the copies we wrote. */
struct counters {
    bool any;                     /* some occurrence is followed by a hex counter */
    bool want_seen;               /* one is followed by the counter asked about */
    uint32_t max;                 /* the largest such counter */
};

/* scan_counters - find every occurrence of the prefix in the body (from body_start) that is
 * not one of our delimiters, and read the counter after it (hex digits in either case). */
static struct counters scan_counters(const struct buf *b, const struct boundary *bd,
                                     size_t body_start, int64_t want)
{
    const char *p = b->p + body_start, *end = b->p + b->len;
    size_t need = bd->prefix_len + DSN_COUNTER_BYTES;
    struct counters c = { .any = false };

    while ((size_t)(end - p) >= need &&
           (p = memmem(p, (size_t)(end - p), bd->prefix, bd->prefix_len))) {
        size_t off = (size_t)(p - b->p) + bd->prefix_len;
        bool ours = false;
        for (unsigned i = 1; i < bd->copies; i++)  /* at[0] is in the message header */
            ours |= bd->at[i] == off;
        int64_t v = !ours && off + DSN_COUNTER_BYTES <= b->len ? hex_counter(b->p + off) : -1;
        if (v >= 0) {
            c.any = true;
            c.want_seen |= v == want;
            if ((uint32_t)v > c.max)
                c.max = (uint32_t)v;
        }
        p++;
    }
    return c;
}

/*
 * fix_boundary - make the boundary occur nowhere in the body but in the delimiters: if the
 * content holds the prefix followed by counters, take one past the largest (when that is
 * ffffffff, the first free one) and patch every copy in place.
 */
static void fix_boundary(struct buf *b, struct boundary *bd, size_t body_start)
{
    struct counters c = scan_counters(b, bd, body_start, -1);
    uint32_t counter;

    if (!c.any)
        return;
    if (c.max < UINT32_MAX) {
        counter = c.max + 1;
    } else {
        /* ffffffff was planted, by someone who knew the seed: walk up from 1, a scan per
           step. The body cannot hold 2^32 counters, so this ends. */
        for (counter = 1; scan_counters(b, bd, body_start, counter).want_seen; counter++)
            ;
    }
    for (unsigned i = 0; i < bd->copies; i++) {
        char digits8[DSN_COUNTER_BYTES + 1];
        snprintf(digits8, sizeof digits8, "%08" PRIx32, counter);
        memcpy(b->p + bd->at[i], digits8, DSN_COUNTER_BYTES);
    }
}

/* dsn_header_end - see dsn.h. A line ends at LF (a CR before it belongs to the line
 * end); the first line that is empty, or holds only that CR, ends the header section. */
size_t dsn_header_end(const char *buf, size_t len)
{
    size_t i = 0;

    while (i < len) {
        if (buf[i] == '\n')
            return i + 1;
        if (buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n')
            return i + 2;
        const char *lf = memchr(buf + i, '\n', len - i);
        if (!lf)
            return len;
        i = (size_t)(lf - buf) + 1;
    }
    return len;
}

/* wsp - whether c is a space or a tab. */
static bool wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* Writing the header section of part 3, line by line. */
struct hdr_out {
    struct buf *b;                /* the output */
    size_t part_start;            /* offset of the part's content */
    size_t field_start;           /* offset of the line that started the current field */
    size_t line_start;            /* offset of the current input line's first output line */
    size_t phys_start;            /* offset of the current physical (output) line */
    size_t last_wsp;              /* offset of its last fold point (a space or tab after
                                     other text), 0 when none */
    bool has_text;                /* the physical line holds a byte that is not white space */
    bool in_line;                 /* an input line has bytes in the output */
    bool full;                    /* DSN_HEADERS_BYTES_MAX reached: nothing more is written */
};

/* hdr_rescan - has_text and last_wsp of the physical line from phys_start. */
static void hdr_rescan(struct hdr_out *h)
{
    h->has_text = false;
    h->last_wsp = 0;
    for (size_t i = h->phys_start; i < h->b->len; i++) {
        if (!wsp(h->b->p[i]))
            h->has_text = true;
        else if (h->has_text)
            h->last_wsp = i;
    }
}

/* hdr_fold - the physical line is full and byte c comes next: end the line before its last
 * fold point, or where there is none (or the rest is still full) split it here, not inside a
 * UTF-8 character, with CRLF SP. */
static void hdr_fold(struct hdr_out *h, char c)
{
    struct buf *b = h->b;

    if (h->last_wsp) {
        size_t tail = b->len - h->last_wsp;
        if (!grow(b, 2))
            return;
        memmove(b->p + h->last_wsp + 2, b->p + h->last_wsp, tail);
        memcpy(b->p + h->last_wsp, "\r\n", 2);
        b->len += 2;
        h->phys_start = h->last_wsp + 2;
        hdr_rescan(h);
        if (b->len - h->phys_start < DSN_LINE_BYTES_MAX)
            return;
    }
    size_t k = 0;  /* bytes of an unfinished UTF-8 character at the end, moved along */
    if (((unsigned char)c & 0xc0) == 0x80) {
        while (k < 3 && b->len - k > h->phys_start + 1 &&
               ((unsigned char)b->p[b->len - k - 1] & 0xc0) == 0x80)
            k++;
        if (b->len - k > h->phys_start + 1 && (unsigned char)b->p[b->len - k - 1] >= 0xc0)
            k++;
        else
            k = 0;
    }
    if (!grow(b, 3))
        return;
    memmove(b->p + b->len - k + 3, b->p + b->len - k, k);
    memcpy(b->p + b->len - k, "\r\n ", 3);
    b->len += 3;
    h->phys_start = b->len - k - 1;
    hdr_rescan(h);
}

/* hdr_cut - DSN_HEADERS_BYTES_MAX is reached: keep what came before the current field (or,
 * when that is nothing, before the current line) and stop. */
static void hdr_cut(struct hdr_out *h)
{
    h->b->len = h->field_start > h->part_start ? h->field_start : h->line_start;
    h->full = true;
}

/* hdr_end_line - the input line is complete: close it with CRLF. A white-space-only line is
 * dropped, and so is a white-space-only last physical line our folding made. */
static void hdr_end_line(struct hdr_out *h)
{
    struct buf *b = h->b;

    if (!h->in_line)
        return;  /* an empty line (or only NULs): dropped */
    h->in_line = false;
    if (!h->has_text) {
        if (h->phys_start == h->line_start) {
            b->len = h->line_start;
            return;
        }
        b->len = h->phys_start - 2;  /* our CRLF before it */
    }
    puts_(b, "\r\n");
    if (b->len - h->part_start > DSN_HEADERS_BYTES_MAX)
        hdr_cut(h);
}

/* hdr_byte - one byte of an input line (not CR, LF or NUL). */
static void hdr_byte(struct hdr_out *h, char c)
{
    struct buf *b = h->b;

    if (!h->in_line) {
        h->in_line = true;
        h->line_start = h->phys_start = b->len;
        h->last_wsp = 0;
        h->has_text = false;
        if (!wsp(c))
            h->field_start = b->len;
    }
    if (wsp(c) && !h->has_text && b->len - h->phys_start >= DSN_WSP_RUN_BYTES_MAX)
        return;  /* so that a full physical line always has text to keep it from being blank */
    if (b->len - h->phys_start >= DSN_LINE_BYTES_MAX)
        hdr_fold(h, c);
    if (!wsp(c))
        h->has_text = true;
    else if (h->has_text)
        h->last_wsp = b->len;
    putc_(b, c);
    if (b->len - h->part_start > DSN_HEADERS_BYTES_MAX + DSN_LINE_BYTES_MAX)
        hdr_cut(h);  /* far past the limit inside one line: no need to read the rest of it */
}

/* field_line - whether the line at hdr[i] (its first byte neither NUL nor a line end) starts
 * a header field: a name of printable ASCII but ':', white space, then ':' (RFC 5322 3.6.8,
 * with the obsolete white space before the colon), the colon within DSN_FIELD_NAME_BYTES_MAX
 * so that folding never moves it off the first line. NULs, which are dropped, are skipped. */
static bool field_line(const char *hdr, size_t i, size_t end)
{
    size_t name = 0, before_colon = 0;

    for (; i < end; i++) {
        unsigned char c = (unsigned char)hdr[i];
        if (c == '\0')
            continue;
        if (c <= 32 || c >= 127 || c == ':')
            break;
        name++;
    }
    for (; i < end && (hdr[i] == '\0' || wsp(hdr[i])); i++)
        before_colon += hdr[i] != '\0';
    return name > 0 && name + before_colon <= DSN_FIELD_NAME_BYTES_MAX && i < end &&
           hdr[i] == ':';
}

/* put_headers - part 3's content: the original header section, cleaned (see SECURITY). It
 * ends at the first line that is neither a header field nor the continuation of one, as
 * Postfix's cleanup(8) ends headers: what follows is body, not ours to return, and could not
 * stand in a text/rfc822-headers part. NULL when something was written, else the
 * X-Ringrelay-Notice line to write instead. */
static const char *put_headers(struct buf *b, const char *hdr, size_t len)
{
    struct hdr_out h = { .b = b, .part_start = b->len, .field_start = b->len };
    size_t end = hdr ? dsn_header_end(hdr, len) : 0;
    bool field_seen = false;

    for (size_t i = 0; i < end && !h.full && !b->oom; i++) {
        char c = hdr[i];
        if (c == '\r') {
            if (i + 1 < end && hdr[i + 1] == '\n')
                i++;
            hdr_end_line(&h);
        } else if (c == '\n') {
            hdr_end_line(&h);
        } else if (c != '\0') {
            if (!h.in_line) {
                if (wsp(c) ? !field_seen : !field_line(hdr, i, end))
                    break;
                field_seen = true;
            }
            hdr_byte(&h, c);
        }
    }
    if (!h.full)
        hdr_end_line(&h);  /* a last line without its line end (a cut header section) */
    if (b->len > h.part_start)
        return NULL;
    return h.full ? "X-Ringrelay-Notice: the original header section is too long to return\r\n"
                  : "X-Ringrelay-Notice: the original header section is not available\r\n";
}

/* headers_8bit - whether the header section holds 8-bit bytes. */
static bool headers_8bit(const char *hdr, size_t len)
{
    size_t end = hdr ? dsn_header_end(hdr, len) : 0;
    for (size_t i = 0; i < end; i++)
        if ((unsigned char)hdr[i] >= 0x80)
            return true;
    return false;
}

/* put_explanation - part 1's content: the Postfix-style notice, then one paragraph per
 * recipient. */
static void put_explanation(struct buf *b, const struct dsn_in *in, const char *host)
{
    char addr[DSN_ADDR_BYTES_MAX + 1], remote[DSN_HOST_BYTES_MAX + 1];
    char diag[DSN_DIAG_BYTES_MAX + 1], status[DSN_STATUS_BYTES_MAX];
    char text[DSN_TEXT_BYTES_MAX];

    putf(b, "This is the mail system at host %s.\r\n\r\n", host);
    if (in->expired)
        puts_(b, "I'm sorry to have to inform you that your message could not\r\n"
                 "be delivered to one or more recipients, and the mail system\r\n"
                 "has given up: the message could not be delivered within the\r\n"
                 "queue lifetime. The headers of your message are attached below.\r\n");
    else
        puts_(b, "I'm sorry to have to inform you that your message could not\r\n"
                 "be delivered to one or more recipients. The headers of your\r\n"
                 "message are attached below.\r\n");
    puts_(b, "\r\n"
             "For further assistance, please send mail to postmaster.\r\n"
             "\r\n"
             "If you do so, please include this problem report.\r\n"
             "\r\n"
             "                   The mail system\r\n");

    for (unsigned r = 0; r < in->rcpt_count; r++) {
        const struct dsn_rcpt *rc = &in->rcpts[r];
        bool high = false;
        clean_addr(rc->addr, addr, &high);
        size_t rl = clean_host(rc->remote_mta, remote);
        size_t dl = clean_diag(rc->diag, diag);
        int n;

        clean_status(rc->status, in->expired, status);
        if (has_word(diag, dl) && rl && rc->diag_is_smtp)
            n = snprintf(text, sizeof text, "<%s>: host %s said: %s", addr, remote, diag);
        else if (has_word(diag, dl))
            n = snprintf(text, sizeof text, "<%s>: %s", addr, diag);
        else if (rl)
            n = snprintf(text, sizeof text, "<%s>: delivery to host %s failed (status %s)",
                         addr, remote, status);
        else
            n = snprintf(text, sizeof text, "<%s>: %s (status %s)", addr,
                         in->expired ? "delivery time expired" : "delivery failed", status);
        assert(n >= 0 && (size_t)n < sizeof text);
        puts_(b, "\r\n");
        put_folded(b, text, (size_t)n, 0, "    ");
        puts_(b, "\r\n");
    }
}

/* put_status - part 2's content: the per-message group, then one group per recipient. */
static void put_status(struct buf *b, const struct dsn_in *in, const char *host,
                       const char *qid)
{
    char addr[DSN_ADDR_BYTES_MAX + 1], remote[DSN_HOST_BYTES_MAX + 1];
    char diag[DSN_DIAG_BYTES_MAX + 1], status[DSN_STATUS_BYTES_MAX];
    bool high = false;

    putf(b, "Reporting-MTA: dns; %s\r\n", host);
    if (qid[0])
        putf(b, "X-Ringrelay-Queue-ID: %s\r\n", qid);
    if (clean_addr(in->sender, addr, &high))
        put_addr_field(b, "X-Ringrelay-Sender", addr, high);
    puts_(b, "Arrival-Date: ");
    put_date(b, in->arrival);
    puts_(b, "\r\n");

    for (unsigned r = 0; r < in->rcpt_count; r++) {
        const struct dsn_rcpt *rc = &in->rcpts[r];
        size_t dl = clean_diag(rc->diag, diag);

        high = false;
        clean_addr(rc->addr, addr, &high);
        clean_status(rc->status, in->expired, status);
        puts_(b, "\r\n");
        put_addr_field(b, "Final-Recipient", addr, high);
        puts_(b, "Action: failed\r\n");
        putf(b, "Status: %s\r\n", status);
        if (clean_host(rc->remote_mta, remote))
            putf(b, "Remote-MTA: dns; %s\r\n", remote);
        if (has_word(diag, dl)) {
            const char *name = rc->diag_is_smtp ? "Diagnostic-Code: smtp; "
                                                : "Diagnostic-Code: X-Ringrelay; ";
            puts_(b, name);
            put_folded(b, diag, dl, strlen(name), " ");
            puts_(b, "\r\n");
        }
    }
}

/* dsn_build - see dsn.h. */
char *dsn_build(const struct dsn_in *in, size_t *len)
{
    char host[DSN_HOST_BYTES_MAX + 1], qid[DSN_QID_BYTES_MAX + 1];
    char addr[DSN_ADDR_BYTES_MAX + 1];
    struct buf b = { 0 };
    struct boundary bd = { .copies = 0 };
    bool text_8bit = false, hdr_8bit, sender_high = false;
    size_t body_start;

    assert(in && in->rcpt_count >= 1 && in->rcpts && len);
    if (!clean_host(in->reporting_mta, host))
        strcpy(host, "localhost");
    clean_qid(in->qid, qid);
    for (unsigned r = 0; r < in->rcpt_count; r++)
        clean_addr(in->rcpts[r].addr, addr, &text_8bit);
    size_t sender_len = clean_addr(in->sender, addr, &sender_high);  /* To: (RFC 6532) */
    hdr_8bit = headers_8bit(in->headers, in->headers_len);
    snprintf(bd.prefix, sizeof bd.prefix, "%s.%08" PRIx32 ".", qid[0] ? qid : "dsn",
             in->boundary_seed);
    bd.prefix_len = strlen(bd.prefix);

    size_t hdr_guess = in->headers ? in->headers_len : 0;
    if (hdr_guess > DSN_HEADERS_BYTES_MAX)
        hdr_guess = DSN_HEADERS_BYTES_MAX;
    if (!grow(&b, DSN_BUF_BYTES_MIN + hdr_guess + (size_t)in->rcpt_count * 512))
        goto err;

    /* The message header (RFC 5322 3.6, RFC 3834, RFC 6522). */
    putf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host);
    if (sender_len)
        putf(&b, "To: <%s>\r\n", addr);
    else
        puts_(&b, "To: undisclosed-recipients:;\r\n");  /* never bounced to <>: a caller bug */
    puts_(&b, in->expired ? "Subject: Delivery failure: message expired\r\n"
                          : "Subject: Undelivered Mail Returned to Sender\r\n");
    puts_(&b, "Date: ");
    put_date(&b, in->now);
    puts_(&b, "\r\n");
    putf(&b, "Message-ID: <%" PRId64 ".%s.%08" PRIx32 "@%s>\r\n", in->now,
         qid[0] ? qid : "dsn", in->boundary_seed, host);
    puts_(&b, "Auto-Submitted: auto-replied\r\n"
              "MIME-Version: 1.0\r\n"
              "Content-Type: multipart/report; report-type=delivery-status;\r\n"
              "\tboundary=\"");
    put_boundary(&b, &bd);
    puts_(&b, "\"\r\n");
    if (text_8bit || hdr_8bit)
        puts_(&b, "Content-Transfer-Encoding: 8bit\r\n");
    puts_(&b, "\r\n");
    body_start = b.len;
    puts_(&b, "This is a MIME-encapsulated message.\r\n");

    put_delimiter(&b, &bd, false);
    puts_(&b, "Content-Description: Notification\r\n");
    if (text_8bit)
        puts_(&b, "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: 8bit\r\n");
    else
        puts_(&b, "Content-Type: text/plain; charset=us-ascii\r\n");
    puts_(&b, "\r\n");
    put_explanation(&b, in, host);

    put_delimiter(&b, &bd, false);
    puts_(&b, "Content-Description: Delivery report\r\n"
              "Content-Type: message/delivery-status\r\n"
              "\r\n");
    put_status(&b, in, host, qid);

    put_delimiter(&b, &bd, false);
    puts_(&b, "Content-Description: Undelivered Message Headers\r\n"
              "Content-Type: text/rfc822-headers\r\n");
    if (hdr_8bit)
        puts_(&b, "Content-Transfer-Encoding: 8bit\r\n");
    puts_(&b, "\r\n");
    const char *notice = put_headers(&b, in->headers, in->headers ? in->headers_len : 0);
    if (notice)
        puts_(&b, notice);

    put_delimiter(&b, &bd, true);
    if (b.oom)
        goto err;
    assert(bd.copies == DSN_BOUNDARY_COPIES);
    fix_boundary(&b, &bd, body_start);
    *len = b.len;
    return b.p;
err:
    free(b.p);
    *len = 0;
    return NULL;
}
