/*
 * smtp_addr.h - internal to net/smtp_parse.c and net/smtp_addr.c: the byte cursor both parse
 * with, the ASCII classes they share, and the envelope path scanner and canonicaliser that
 * smtp_parse_mail() and smtp_parse_rcpt() call. Users include net/smtp_parse.h.
 *
 * Like the rest of the parser: pure functions over (pointer, length), no allocation, no I/O,
 * no global state; a cursor is never read past its end and its bytes are never taken to be
 * NUL terminated.
 */
#ifndef RR_SMTP_ADDR_H
#define RR_SMTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#include "net/smtp_parse.h"

/* Input being parsed: the bytes [p, end). */
struct smtp_cursor {
    const unsigned char *p;       /* next byte to look at */
    const unsigned char *end;     /* one past the last byte */
};

/* A path as it was sent, located but not yet copied. */
struct smtp_path {
    const unsigned char *local;   /* local part as sent, quotes and escapes included */
    size_t local_bytes;           /* bytes of local */
    const unsigned char *domain;  /* domain or address literal ([..] included) as sent, or NULL */
    size_t domain_bytes;          /* bytes of domain */
    bool null_path;               /* <> */
    bool quoted;                  /* local part sent as a quoted-string */
    bool literal;                 /* domain is an address literal */
    bool literal_v6;              /* ... tagged "IPv6:" */
    bool postmaster;              /* <Postmaster> without a domain (RCPT only) */
    bool utf8;                    /* local part or domain holds non-ASCII */
};

/* smtp_peek - the next byte, or -1 at the end. */
static inline int smtp_peek(const struct smtp_cursor *c)
{
    return c->p < c->end ? *c->p : -1;
}

/* smtp_is_alpha, smtp_is_digit, smtp_to_lower - ASCII only, whatever the locale. */
static inline bool smtp_is_alpha(int ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
}

static inline bool smtp_is_digit(int ch)
{
    return ch >= '0' && ch <= '9';
}

static inline unsigned char smtp_to_lower(unsigned char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (unsigned char)(ch + ('a' - 'A')) : ch;
}

/* smtp_ascii_caseeq - whether n bytes of s equal n bytes of the upper- or lower-case word w. */
static inline bool smtp_ascii_caseeq(const unsigned char *s, const char *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (smtp_to_lower(s[i]) != smtp_to_lower((unsigned char)w[i]))
            return false;
    return true;
}

/*
 * smtp_addr_skip_utf8 - step over the well-formed UTF-8 character (RFC 3629 4, C1 controls
 * refused) at the cursor, which is on a byte >= 0x80, and set *utf8 (when not NULL). false,
 * and the cursor unmoved, when the bytes there are not one.
 */
bool smtp_addr_skip_utf8(struct smtp_cursor *c, bool *utf8);

/*
 * smtp_addr_scan_path - step over Path = "<" [ A-d-l ":" ] Mailbox ">" or the null path "<>"
 * (RFC 5321 4.1.2), locating its parts in *path without copying them. With rcpt,
 * "<Postmaster>" without a domain is a path (RFC 5321 4.1.4). bad is the result for a
 * malformed path; SMTP_PARSE_LOCAL_TOO_LONG, _DOMAIN_TOO_LONG and _PATH_TOO_LONG report the
 * limits of smtp_parse.h, checked in that order, each when its end is found.
 */
enum smtp_parse_err smtp_addr_scan_path(struct smtp_cursor *c, bool rcpt,
                                        enum smtp_parse_err bad, struct smtp_path *path);

/*
 * smtp_addr_write - the canonical text of a path that smtp_addr_scan_path() accepted, into
 * *addr (all of it is overwritten). The text is never longer than the path as sent.
 */
void smtp_addr_write(struct smtp_addr *addr, const struct smtp_path *path);

#endif
