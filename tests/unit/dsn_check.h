/*
 * dsn_check.h - the structure check of a bounce built by dsn_build() (core/dsn.c), shared by
 * the unit tests (tests/unit/test_dsn.c) and the fuzz target (tests/fuzz/fuzz_dsn.c).
 *
 * dsn_check() parses the message the way a receiver would, written independently of dsn.c,
 * and says what is wrong, or NULL. It checks:
 *   - lines: every line ends in CRLF; no NUL, bare CR or bare LF; at most 998 octets before
 *     the CRLF (RFC 5322 2.1.1);
 *   - header sections (the message's, each part's, the groups of part 2, part 3's content):
 *     no empty or white-space-only line inside, no continuation line first, every other line
 *     "Name:" with a name of printable ASCII;
 *   - the message header: From, To, Subject, Date, Message-ID, MIME-Version, Auto-Submitted
 *     and Content-Type once each; Content-Type multipart/report; report-type=delivery-status
 *     with a boundary of 1-70 bchars (RFC 2046 5.1.1); Content-Transfer-Encoding: 8bit when
 *     the body holds 8-bit bytes;
 *   - the body: the boundary occurs only in delimiter lines: exactly three "--B" and then one
 *     "--B--" that is the last line; every part's content ends in CRLF;
 *   - part 1 text/plain; charset=us-ascii (7-bit content) or utf-8 (valid UTF-8, labelled
 *     8bit); part 2 message/delivery-status, 7-bit, one per-message group with Reporting-MTA
 *     then one group per recipient with Final-Recipient (rfc822 or utf-8), Action: failed and
 *     a valid Status; part 3 text/rfc822-headers, content at most DSN_HEADERS_BYTES_MAX.
 */
#ifndef RR_DSN_CHECK_H
#define RR_DSN_CHECK_H

#include "core/dsn.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define DSN_CHECK_BOUNDARY_BYTES_MAX 70     /* RFC 2046 5.1.1 */
#define DSN_CHECK_FIELD_BYTES_MAX    8192   /* an unfolded field value kept by dsn_field() */

/* A parsed bounce: pointers into the message. */
struct dsn_view {
    char boundary[DSN_CHECK_BOUNDARY_BYTES_MAX + 1]; /* from the Content-Type parameter */
    const char *hdr;              /* the message header section, without the empty line */
    size_t hdr_len;               /* its bytes */
    const char *part[3];          /* each part: its header section, empty line, content */
    size_t part_len[3];           /* their bytes, up to the CRLF before the next delimiter */
    const char *body[3];          /* each part's content (ends in CRLF) */
    size_t body_len[3];           /* their bytes */
};

/* dsn_line_len - bytes of the line at s (n bytes left) before its CRLF; n when none. */
static inline size_t dsn_line_len(const char *s, size_t n)
{
    const char *lf = memchr(s, '\n', n);
    return lf ? (size_t)(lf - s) - 1 : n;
}

/* dsn_wsp_only - whether the len bytes at s are all spaces and tabs. */
static inline bool dsn_wsp_only(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return false;
    return true;
}

/*
 * dsn_field - the unfolded value (CRLFs removed, leading white space after the colon kept
 * out) of the first field called name in the header section s (n bytes, CRLF lines) into
 * out (DSN_CHECK_FIELD_BYTES_MAX), "" when none. Returns how many such fields there are.
 */
static inline unsigned dsn_field(const char *s, size_t n, const char *name, char *out)
{
    size_t nl = strlen(name), o = 0;
    unsigned count = 0;

    out[0] = '\0';
    for (size_t i = 0; i < n;) {
        size_t ll = dsn_line_len(s + i, n - i);
        if (ll > nl && s[i + nl] == ':' && strncasecmp(s + i, name, nl) == 0) {
            if (count++ == 0) {
                size_t j = i + nl + 1;
                while (j < i + ll && (s[j] == ' ' || s[j] == '\t'))
                    j++;
                for (;;) {
                    for (; j < i + ll && o + 1 < DSN_CHECK_FIELD_BYTES_MAX; j++)
                        out[o++] = s[j];
                    i += ll + 2;
                    if (i >= n || (s[i] != ' ' && s[i] != '\t'))
                        break;
                    ll = dsn_line_len(s + i, n - i);
                    j = i;
                }
                out[o] = '\0';
                continue;
            }
        }
        i += ll + 2;
    }
    return count;
}

/* dsn_check_lines - CRLF only, no NUL, no line over 998 octets, ends in CRLF. */
static inline const char *dsn_check_lines(const char *m, size_t len)
{
    size_t line = 0;

    if (len < 2 || m[len - 2] != '\r' || m[len - 1] != '\n')
        return "does not end in CRLF";
    for (size_t i = 0; i < len; i++) {
        if (m[i] == '\0')
            return "NUL";
        if (m[i] == '\r' && (i + 1 == len || m[i + 1] != '\n'))
            return "bare CR";
        if (m[i] == '\n' && (i == 0 || m[i - 1] != '\r'))
            return "bare LF";
        if (m[i] == '\r') {
            if (line > 998)
                return "line over 998 octets";
            line = 0;
            i++;
        } else {
            line++;
        }
    }
    return NULL;
}

/* dsn_check_fields - a block of header fields (CRLF lines, n bytes, ending in CRLF): none
 * empty or white space only, no continuation first, "Name:" with printable ASCII names. */
static inline const char *dsn_check_fields(const char *s, size_t n)
{
    if (n == 0)
        return "empty field block";
    if (s[0] == ' ' || s[0] == '\t')
        return "field block starts with a continuation line";
    for (size_t i = 0; i < n;) {
        size_t ll = dsn_line_len(s + i, n - i);
        if (ll == n - i)
            return "field block does not end in CRLF";
        if (dsn_wsp_only(s + i, ll))
            return "empty or white-space-only line in a header section";
        if (s[i] != ' ' && s[i] != '\t') {
            size_t k = 0;  /* name: printable ASCII but ':', white space, ':' (RFC 5322) */
            while (k < ll && (unsigned char)s[i + k] > 32 && (unsigned char)s[i + k] < 127 &&
                   s[i + k] != ':')
                k++;
            size_t j = k;
            while (j < ll && (s[i + j] == ' ' || s[i + j] == '\t'))
                j++;
            if (k == 0 || j == ll || s[i + j] != ':')
                return "line is neither a field nor a continuation";
        }
        i += ll + 2;
    }
    return NULL;
}

/* dsn_split_header - the header section of s (n bytes) up to its empty line: *hdr_len bytes,
 * then the empty line; the rest at *rest. NULL, or what is wrong. */
static inline const char *dsn_split_header(const char *s, size_t n, size_t *hdr_len,
                                           const char **rest, size_t *rest_len)
{
    const char *e = n >= 2 && s[0] == '\r' && s[1] == '\n' ? s : memmem(s, n, "\r\n\r\n", 4);
    if (!e)
        return "no empty line after a header section";
    size_t hl = e == s ? 0 : (size_t)(e - s) + 2;
    const char *why = dsn_check_fields(s, hl);
    if (why)
        return why;
    *hdr_len = hl;
    *rest = s + hl + 2;
    *rest_len = n - hl - 2;
    return NULL;
}

/* dsn_utf8_valid - whether len bytes at s are valid UTF-8 (no overlongs, no surrogates). */
static inline bool dsn_utf8_valid(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t k;
        unsigned v, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            k = 2, v = c & 0x1f, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            k = 3, v = c & 0x0f, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 4, v = c & 0x07, min = 0x10000;
        else
            return false;
        if (i + k > len)
            return false;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            v = v << 6 | (s[i + j] & 0x3f);
        }
        if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
            return false;
        i += k;
    }
    return true;
}

/* dsn_status_valid - whether s is "4|5.d{1,3}.d{1,3}". */
static inline bool dsn_status_valid(const char *s)
{
    size_t a = 0, c = 0;
    if ((s[0] != '4' && s[0] != '5') || s[1] != '.')
        return false;
    while (s[2 + a] >= '0' && s[2 + a] <= '9')
        a++;
    if (a < 1 || a > 3 || s[2 + a] != '.')
        return false;
    while (s[3 + a + c] >= '0' && s[3 + a + c] <= '9')
        c++;
    return c >= 1 && c <= 3 && s[3 + a + c] == '\0';
}

/* dsn_check_status_part - part 2's content: groups of fields separated by empty lines. */
static inline const char *dsn_check_status_part(const char *s, size_t n, unsigned rcpt_count)
{
    static char v[DSN_CHECK_FIELD_BYTES_MAX];
    unsigned groups = 0;

    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return "8-bit byte in message/delivery-status";
    for (size_t i = 0; i < n;) {
        const char *e = memmem(s + i, n - i, "\r\n\r\n", 4);
        size_t gl = e ? (size_t)(e - (s + i)) + 2 : n - i;
        const char *why = dsn_check_fields(s + i, gl);
        if (why)
            return why;
        if (groups == 0) {
            if (dsn_field(s + i, gl, "Reporting-MTA", v) != 1 || strncmp(v, "dns; ", 5) != 0)
                return "per-message group without one Reporting-MTA: dns;";
            if (dsn_field(s + i, gl, "Final-Recipient", v) != 0)
                return "Final-Recipient in the per-message group";
        } else {
            if (dsn_field(s + i, gl, "Final-Recipient", v) != 1 ||
                (strncmp(v, "rfc822; ", 8) != 0 && strncmp(v, "utf-8; ", 7) != 0))
                return "recipient group without one Final-Recipient: rfc822|utf-8;";
            if (dsn_field(s + i, gl, "Action", v) != 1 || strcmp(v, "failed") != 0)
                return "recipient group without Action: failed";
            if (dsn_field(s + i, gl, "Status", v) != 1 || !dsn_status_valid(v))
                return "recipient group without a valid Status";
        }
        groups++;
        i += gl + (e ? 2 : 0);
    }
    if (groups != 1 + rcpt_count)
        return "wrong number of groups in message/delivery-status";
    return NULL;
}

/* dsn_check - see the top of this file. v may be NULL. */
static inline const char *dsn_check(const char *m, size_t len, unsigned rcpt_count,
                                    struct dsn_view *v)
{
    static char val[DSN_CHECK_FIELD_BYTES_MAX];
    static const char *const types[3] = { "text/plain; charset=", "message/delivery-status",
                                          "text/rfc822-headers" };
    static const char *const req[] = { "From", "To", "Subject", "Date", "Message-ID",
                                       "MIME-Version", "Auto-Submitted", "Content-Type" };
    struct dsn_view local;
    const char *why, *body;
    size_t body_len;

    if (!v)
        v = &local;
    memset(v, 0, sizeof *v);
    if ((why = dsn_check_lines(m, len)))
        return why;
    if ((why = dsn_split_header(m, len, &v->hdr_len, &body, &body_len)))
        return why;
    v->hdr = m;
    if (v->hdr_len == 0)
        return "no message header";
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        if (dsn_field(m, v->hdr_len, req[i], val) != 1)
            return "a required header field is missing or repeated";
    const char *bp = strstr(val, "boundary=\"");
    if (strncmp(val, "multipart/report; report-type=delivery-status;", 46) != 0 || !bp)
        return "Content-Type is not multipart/report with a boundary";
    bp += 10;
    const char *bq = strchr(bp, '"');
    if (!bq || bq == bp || bq - bp > DSN_CHECK_BOUNDARY_BYTES_MAX || bq[1] != '\0')
        return "bad boundary parameter";
    size_t bl = (size_t)(bq - bp);
    for (size_t i = 0; i < bl; i++)
        if (!strchr("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?",
                    bp[i]))
            return "boundary holds a character outside bchars";
    memcpy(v->boundary, bp, bl);
    v->boundary[bl] = '\0';

    bool eightbit = false;
    for (size_t i = 0; i < body_len; i++)
        eightbit |= (unsigned char)body[i] >= 0x80;
    unsigned cte = dsn_field(m, v->hdr_len, "Content-Transfer-Encoding", val);
    if (eightbit && (cte != 1 || strcmp(val, "8bit") != 0))
        return "8-bit body without Content-Transfer-Encoding: 8bit";

    /* Delimiters: every occurrence of the boundary must be one, at a line start. */
    const char *part_at[4] = { 0 };
    unsigned delims = 0;
    bool closed = false;
    for (const char *p = body, *end = body + body_len;
         (p = memmem(p, (size_t)(end - p), v->boundary, bl)); p++) {
        if (closed)
            return "boundary after the close delimiter";
        if (p - body < 2 || p[-1] != '-' || p[-2] != '-' || (p - body > 2 && p[-3] != '\n'))
            return "boundary inside content";
        size_t rest = (size_t)(end - p) - bl;
        if (rest >= 2 && p[bl] == '\r') {
            if (delims == 3)
                return "a fourth part";
            if (p - 2 == body)
                return "no preamble line";  /* ours always has one */
            part_at[delims++] = p + bl + 2;
        } else if (rest == 4 && memcmp(p + bl, "--\r\n", 4) == 0) {
            closed = true;
            part_at[3] = p - 2;
        } else {
            return "boundary inside content";
        }
    }
    if (delims != 3 || !closed)
        return "not three parts and a close delimiter at the end";
    for (unsigned k = 0; k < 3; k++) {
        const char *next_delim = k < 2 ? part_at[k + 1] - bl - 4 : part_at[3];
        /* content runs to the CRLF before the next "--B" */
        if (next_delim - part_at[k] < 2 || next_delim[-2] != '\r' || next_delim[-1] != '\n')
            return "part not followed by CRLF before the delimiter";
        v->part[k] = part_at[k];
        v->part_len[k] = (size_t)(next_delim - 2 - part_at[k]);
        size_t hl;
        if ((why = dsn_split_header(v->part[k], v->part_len[k], &hl, &v->body[k],
                                    &v->body_len[k])))
            return why;
        if (dsn_field(v->part[k], hl, "Content-Type", val) != 1 ||
            strncmp(val, types[k], strlen(types[k])) != 0)
            return "part has the wrong Content-Type";
        if (k == 0) {
            bool utf8 = strcmp(val, "text/plain; charset=utf-8") == 0;
            if (!utf8 && strcmp(val, "text/plain; charset=us-ascii") != 0)
                return "part 1 charset is neither us-ascii nor utf-8";
            if (!dsn_utf8_valid((const unsigned char *)v->body[0], v->body_len[0]))
                return "part 1 is not valid UTF-8";
            for (size_t i = 0; !utf8 && i < v->body_len[0]; i++)
                if ((unsigned char)v->body[0][i] >= 0x80)
                    return "8-bit byte in us-ascii part 1";
        }
        bool part8 = false;
        for (size_t i = 0; i < v->body_len[k]; i++)
            part8 |= (unsigned char)v->body[k][i] >= 0x80;
        if (part8 && (dsn_field(v->part[k], hl, "Content-Transfer-Encoding", val) != 1 ||
                      strcmp(val, "8bit") != 0))
            return "8-bit part without Content-Transfer-Encoding: 8bit";
        if (v->body_len[k] < 2 || v->body[k][v->body_len[k] - 2] != '\r')
            return "part content does not end in CRLF";
    }
    if ((why = dsn_check_status_part(v->body[1], v->body_len[1], rcpt_count)))
        return why;
    if ((why = dsn_check_fields(v->body[2], v->body_len[2])))
        return why;
    if (v->body_len[2] > DSN_HEADERS_BYTES_MAX)
        return "part 3 over DSN_HEADERS_BYTES_MAX";
    return NULL;
}

#endif
