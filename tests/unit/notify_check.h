/*
 * notify_check.h - what every relaying notice must be, checked the plain way; shared by
 * tests/unit/test_notify.c and tests/fuzz/fuzz_notify_template.c.
 *
 * notify_body_check(): every line ends in CRLF; no NUL, bare CR or bare LF; at most
 * NOTIFY_LINE_BYTES_MAX octets per line; valid UTF-8 (RFC 3629); no control character but
 * tab, no C1 control, no bidi embedding/override/isolate.
 * notify_message_check(): the header is exactly the nine fields in order, each on one line
 * of at most NOTIFY_LINE_BYTES_MAX octets without control bytes, then an empty line, then a
 * body that passes notify_body_check(); the charset and transfer encoding match the bytes.
 */
#ifndef RR_TEST_NOTIFY_CHECK_H
#define RR_TEST_NOTIFY_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/notify.h"

/* nc_utf8 - length of the well-formed UTF-8 character at p (n bytes), its code point; 0 if
 * none. Written apart from notify_text.c on purpose. */
static inline size_t nc_utf8(const unsigned char *p, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t c;

    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    if ((p[0] & 0xe0) == 0xc0) {
        len = 2;
        c = p[0] & 0x1f;
    } else if ((p[0] & 0xf0) == 0xe0) {
        len = 3;
        c = p[0] & 0x0f;
    } else if ((p[0] & 0xf8) == 0xf0) {
        len = 4;
        c = p[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (p[i] & 0x3f);
    }
    if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
        c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

/* notify_body_check - NULL when b[0..len) is a good body, else what is wrong. */
static inline const char *notify_body_check(const char *b, size_t len)
{
    const unsigned char *p = (const unsigned char *)b;
    size_t line = 0;

    if (len && (len < 2 || p[len - 2] != '\r' || p[len - 1] != '\n'))
        return "the body does not end in CRLF";
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k;
        if (p[i] == '\r') {
            if (i + 1 >= len || p[i + 1] != '\n')
                return "bare CR";
            i += 2;
            line = 0;
            continue;
        }
        if (p[i] == '\n')
            return "bare LF";
        k = nc_utf8(p + i, len - i, &cp);
        if (!k)
            return "invalid UTF-8";
        if ((cp < 0x20 && cp != '\t') || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f))
            return "control character";
        if ((cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069))
            return "bidi control";
        line += k;
        if (line > NOTIFY_LINE_BYTES_MAX)
            return "line too long";
        i += k;
    }
    return NULL;
}

/* notify_message_check - NULL when m[0..len) is a good notice, else what is wrong; *body
 * and *body_len locate its body. */
static inline const char *notify_message_check(const char *m, size_t len, bool eight_bit,
                                               const char **body, size_t *body_len)
{
    static const char *const fields[] = {
        "Date: ", "From: postmaster@", "To: ", "Subject: Notification of Relaying from ",
        "Message-ID: <", "Auto-Submitted: auto-generated\r\n", "MIME-Version: 1.0\r\n",
        "Content-Type: text/plain; charset=", "Content-Transfer-Encoding: ",
    };
    size_t off = 0;
    bool high = false;

    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        size_t fl = strlen(fields[f]), start = off;
        if (len - off < fl || memcmp(m + off, fields[f], fl) != 0)
            return "a header field is missing or out of order";
        while (off < len && m[off] != '\r' && m[off] != '\n') {
            unsigned char c = (unsigned char)m[off];
            if (c < 0x20 || c == 0x7f)
                return "control byte in a header field";
            high |= c >= 0x80;
            off++;
        }
        if (len - off < 2 || m[off] != '\r' || m[off + 1] != '\n')
            return "a header line does not end in CRLF";
        if (off - start > NOTIFY_LINE_BYTES_MAX)
            return "header line too long";
        off += 2;
    }
    if (len - off < 2 || m[off] != '\r' || m[off + 1] != '\n')
        return "no empty line after the header";
    off += 2;
    *body = m + off;
    *body_len = len - off;
    for (size_t i = off; i < len && !high; i++)
        high = (unsigned char)m[i] >= 0x80;
    if (high != eight_bit)
        return "eight_bit does not match the bytes";
    static const char ascii[] = "charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n";
    static const char utf8[] = "charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n";
    const char *want = high ? utf8 : ascii;
    if (!memmem(m, off, want, strlen(want)))
        return "charset or encoding does not match the bytes";
    return notify_body_check(*body, *body_len);
}

#endif
