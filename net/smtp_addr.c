/*
 * smtp_addr.c - SMTP envelope addresses: the path of MAIL FROM and RCPT TO, scanned, checked
 * and written out in canonical form.
 *
 * Functions
 *   smtp_addr_scan_path()  locate and check the parts of a path (internal, smtp_addr.h)
 *   smtp_addr_write()      the canonical text of a checked path (internal, smtp_addr.h)
 *   smtp_addr_skip_utf8()  step over one well-formed UTF-8 character (internal, smtp_addr.h;
 *                          smtp_parse.c uses it for esmtp-values too)
 *   smtp_domain_of()       the domain part of a canonical address (smtp_parse.h)
 *
 * Canonical form: the source route is dropped, the local part is kept byte for byte when it
 * is a dot-string and unquoted when its quoting was not needed, otherwise re-quoted with only
 * '"' and '\' escaped; the domain is lower-cased (ASCII only), an IPv6 literal keeps the tag
 * as "IPv6:". The canonical text is never longer than the path as sent, so a path that passed
 * the SMTP_PATH_BYTES_MAX check always fits struct smtp_addr.text.
 *
 * SECURITY
 *   Every byte is hostile. Input is a cursor over (pointer, length), never read past its end
 *   and never taken to be NUL terminated; no byte of it is written anywhere before the whole
 *   path has been checked against the limits of smtp_parse.h. NUL and other control bytes
 *   cannot reach the canonical text (none is valid in any part of a path), so text is a C
 *   string of len bytes. "%" and "!" are ordinary local-part text and are never interpreted;
 *   source routes are checked and dropped, never followed (no relaying through a route or a
 *   "%" hack). A local part that needs quoting keeps it, so "a@b"@c can never be read back as
 *   a@b. Non-ASCII must be well-formed UTF-8 (no overlongs, surrogates, values above
 *   U+10FFFF, or C1 controls, which would reach logs and headers); whether SMTPUTF8 allows it
 *   is the caller's decision (smtp_path.utf8). Address literals are checked by inet_pton() on
 *   a bounded, NUL-free copy. Case folding is ASCII only and independent of the locale.
 *
 * STANDARDS
 *   RFC 5321 3.6.1 (source routes: accept, ignore), 4.1.2 (Path, Mailbox, Dot-string,
 *   Quoted-string, Domain), 4.1.3 (address literals), 4.1.4 (Postmaster), 4.5.3.1.1-3 (size
 *   limits); RFC 1035 2.3.4 (63-byte labels); RFC 6531 3.3 (UTF-8 in atext, qtext and
 *   sub-domains); RFC 3629 4 (UTF-8 byte sequences).
 */
#include <arpa/inet.h>
#include <assert.h>
#include <string.h>

#include "net/smtp_addr.h"
#include "net/smtp_parse.h"

#define SMTP_LABEL_BYTES_MAX      63  /* one DNS label, RFC 1035 2.3.4 */
#define SMTP_LITERAL_BYTES_MAX    64  /* inside [..]: "IPv6:" + INET6_ADDRSTRLEN, rounded up */

/*
 * utf8_seq - bytes (2..4) of the well-formed UTF-8 character starting at p, 0 when it is not
 * one. RFC 3629 4 table: no overlongs (C0, C1, E0 80..9F, F0 80..8F), no surrogates
 * (ED A0..BF), nothing above U+10FFFF (F4 90.., F5..FF). C1 controls (C2 80..9F) are refused
 * too: they are valid UTF-8 but have no business in an address, a log line or a header.
 */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;

    if (p[0] == 0xc2) {
        n = 2;
        lo = 0xa0;
    } else if (p[0] > 0xc2 && p[0] <= 0xdf) {
        n = 2;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;
        if (p[0] == 0xe0)
            lo = 0xa0;
        else if (p[0] == 0xed)
            hi = 0x9f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;
        if (p[0] == 0xf0)
            lo = 0x90;
        else if (p[0] == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* smtp_addr_skip_utf8 - step over one well-formed UTF-8 character (see smtp_addr.h). */
bool smtp_addr_skip_utf8(struct smtp_cursor *c, bool *utf8)
{
    size_t n = utf8_seq(c->p, c->end);

    if (!n)
        return false;
    if (utf8)
        *utf8 = true;
    c->p += n;
    return true;
}

/* is_atext - RFC 5322 3.2.3 atext, the ASCII part (RFC 6531 adds UTF-8, handled by callers). */
static bool is_atext(int ch)
{
    if (smtp_is_alpha(ch) || smtp_is_digit(ch))
        return true;
    switch (ch) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '/': case '=': case '?': case '^': case '_': case '`': case '{':
    case '|': case '}': case '~':
        return true;
    default:
        return false;
    }
}

/*
 * scan_dot_string - step over Dot-string = Atom *("." Atom) (RFC 5321 4.1.2, atext widened to
 * UTF-8 by RFC 6531). Stops at the first byte that cannot continue it; false when what was
 * seen is empty, starts or ends with a dot, holds ".." or bad UTF-8.
 */
static bool scan_dot_string(struct smtp_cursor *c, bool *utf8)
{
    bool want_atom = true;        /* at the start or just after a dot */

    for (;;) {
        int ch = smtp_peek(c);

        if (ch == '.') {
            if (want_atom)
                return false;
            want_atom = true;
            c->p++;
        } else if (ch >= 0x80) {
            if (!smtp_addr_skip_utf8(c, utf8))
                return false;
            want_atom = false;
        } else if (ch >= 0 && is_atext(ch)) {
            want_atom = false;
            c->p++;
        } else {
            return !want_atom;
        }
    }
}

/*
 * scan_quoted - step over Quoted-string = DQUOTE *QcontentSMTP DQUOTE (RFC 5321 4.1.2):
 * qtextSMTP is %d32-33 / %d35-91 / %d93-126 or UTF-8 (RFC 6531), quoted-pairSMTP is "\" with
 * one byte %d32-126. The cursor is on the opening DQUOTE.
 */
static bool scan_quoted(struct smtp_cursor *c, bool *utf8)
{
    c->p++;
    for (;;) {
        int ch = smtp_peek(c);

        if (ch < 0) {
            return false;
        } else if (ch == '"') {
            c->p++;
            return true;
        } else if (ch == '\\') {
            c->p++;
            ch = smtp_peek(c);
            if (ch < 32 || ch > 126)
                return false;
            c->p++;
        } else if (ch >= 32 && ch <= 126) {
            c->p++;
        } else if (ch >= 0x80) {
            if (!smtp_addr_skip_utf8(c, utf8))
                return false;
        } else {
            return false;
        }
    }
}

/*
 * scan_domain - step over Domain = sub-domain *("." sub-domain) (RFC 5321 4.1.2): each label
 * 1..63 bytes of letters, digits and hyphens, neither starting nor ending with a hyphen;
 * UTF-8 bytes (U-labels, RFC 6531) count as letters. An empty label or a trailing dot is
 * refused. SMTP_PARSE_DOMAIN_TOO_LONG beyond SMTP_DOMAIN_BYTES_MAX.
 */
static enum smtp_parse_err scan_domain(struct smtp_cursor *c, bool *utf8,
                                       enum smtp_parse_err bad)
{
    const unsigned char *start = c->p;

    for (;;) {
        const unsigned char *label = c->p;
        int last = -1;            /* last byte of the label, for the hyphen rule */

        for (;;) {
            int ch = smtp_peek(c);

            if (smtp_is_alpha(ch) || smtp_is_digit(ch) || ch == '-') {
                last = ch;
                c->p++;
            } else if (ch >= 0x80) {
                if (!smtp_addr_skip_utf8(c, utf8))
                    return bad;
                last = ch;
            } else {
                break;
            }
            if (c->p - label > SMTP_LABEL_BYTES_MAX)
                return bad;
        }
        if (c->p == label || *label == '-' || last == '-')
            return bad;
        if (smtp_peek(c) != '.')
            break;
        c->p++;
    }
    if (c->p - start > SMTP_DOMAIN_BYTES_MAX)
        return SMTP_PARSE_DOMAIN_TOO_LONG;
    return SMTP_PARSE_OK;
}

/*
 * scan_literal - step over an address-literal (RFC 5321 4.1.3): "[" IPv4 "]" or
 * "[IPv6:" IPv6 "]", each checked by inet_pton(). General-address-literals (other tags) are
 * refused: nothing could deliver to them. The cursor is on the "[".
 */
static bool scan_literal(struct smtp_cursor *c, bool *v6)
{
    char buf[SMTP_LITERAL_BYTES_MAX + 1];
    size_t n = 0;

    c->p++;
    for (;;) {
        int ch = smtp_peek(c);

        if (ch == ']')
            break;
        /* dcontent is %d33-90 / %d94-126; checking it here also keeps NUL out of buf, so
         * inet_pton() cannot be shown "1.2.3.4" while the literal goes on after a NUL. */
        if (ch < 33 || ch > 126 || ch == '[' || ch == '\\' || n == SMTP_LITERAL_BYTES_MAX)
            return false;
        buf[n++] = (char)ch;
        c->p++;
    }
    c->p++;
    buf[n] = '\0';

    if (n > 5 && smtp_ascii_caseeq((const unsigned char *)buf, "IPv6:", 5)) {
        struct in6_addr a6;
        *v6 = true;
        return inet_pton(AF_INET6, buf + 5, &a6) == 1;
    }
    struct in_addr a4;
    *v6 = false;
    return inet_pton(AF_INET, buf, &a4) == 1;
}

/*
 * smtp_addr_scan_path - step over Path = "<" [ A-d-l ":" ] Mailbox ">" or the null path "<>"
 * (RFC 5321 4.1.2), locating its parts in path. With rcpt, "<Postmaster>" without a domain
 * is a path (RFC 5321 4.1.4). bad is the result for a malformed path. Limits are checked in
 * the order local part, domain, whole path, each when its end is found.
 */
enum smtp_parse_err smtp_addr_scan_path(struct smtp_cursor *c, bool rcpt,
                                        enum smtp_parse_err bad, struct smtp_path *path)
{
    const unsigned char *start = c->p;
    bool routed = false;
    enum smtp_parse_err err;

    memset(path, 0, sizeof(*path));
    if (smtp_peek(c) != '<')
        return bad;
    c->p++;
    if (smtp_peek(c) == '>') {
        c->p++;
        path->null_path = true;
        return SMTP_PARSE_OK;
    }

    /* A-d-l = At-domain *( "," At-domain ), checked and then dropped (RFC 5321 3.6.1).
     * Route domains are held to ASCII: they vanish, so nothing would justify the UTF-8. */
    if (smtp_peek(c) == '@') {
        routed = true;
        for (;;) {
            bool route_utf8 = false;

            c->p++;
            err = scan_domain(c, &route_utf8, bad);
            if (err != SMTP_PARSE_OK)
                return err;
            if (route_utf8)
                return bad;
            if (smtp_peek(c) == ':') {
                c->p++;
                break;
            }
            if (smtp_peek(c) != ',')
                return bad;
            c->p++;
            if (smtp_peek(c) != '@')
                return bad;
        }
    }

    path->local = c->p;
    if (smtp_peek(c) == '"') {
        if (!scan_quoted(c, &path->utf8))
            return bad;
        path->quoted = true;
    } else if (!scan_dot_string(c, &path->utf8)) {
        return bad;
    }
    path->local_bytes = (size_t)(c->p - path->local);
    if (path->local_bytes > SMTP_LOCAL_BYTES_MAX)
        return SMTP_PARSE_LOCAL_TOO_LONG;

    if (smtp_peek(c) == '@') {
        c->p++;
        path->domain = c->p;
        if (smtp_peek(c) == '[') {
            if (!scan_literal(c, &path->literal_v6))
                return bad;
            path->literal = true;
        } else {
            err = scan_domain(c, &path->utf8, bad);
            if (err != SMTP_PARSE_OK)
                return err;
        }
        path->domain_bytes = (size_t)(c->p - path->domain);
    } else if (rcpt && !routed && !path->quoted && path->local_bytes == 10 &&
               smtp_ascii_caseeq(path->local, "postmaster", 10)) {
        path->postmaster = true;
    } else {
        return bad;
    }

    if (smtp_peek(c) != '>')
        return bad;
    c->p++;
    if (c->p - start > SMTP_PATH_BYTES_MAX)
        return SMTP_PARSE_PATH_TOO_LONG;
    return SMTP_PARSE_OK;
}

/* is_dot_string - whether all n bytes of s form a Dot-string (then quoting is not needed). */
static bool is_dot_string(const unsigned char *s, size_t n)
{
    struct smtp_cursor c = { s, s + n };
    bool utf8 = false;

    return scan_dot_string(&c, &utf8) && c.p == c.end;
}

/*
 * smtp_addr_write - the canonical text of a checked path into addr (see the top of this file).
 * Each step writes no more than it read, so text holds at most SMTP_PATH_BYTES_MAX - 2 bytes.
 */
void smtp_addr_write(struct smtp_addr *addr, const struct smtp_path *path)
{
    char *out = addr->text;
    size_t n = 0;

    memset(addr, 0, sizeof(*addr));
    addr->utf8 = path->utf8;
    if (path->null_path) {
        addr->null_path = true;
        return;
    }
    if (path->postmaster) {
        memcpy(out, "postmaster", 10);
        addr->len = addr->local_len = 10;
        out[10] = '\0';
        return;
    }

    if (path->quoted) {
        unsigned char content[SMTP_LOCAL_BYTES_MAX]; /* the quoted-string, decoded */
        size_t k = 0;

        for (size_t i = 1; i + 1 < path->local_bytes; i++) {
            if (path->local[i] == '\\')
                i++;
            content[k++] = path->local[i];
        }
        if (is_dot_string(content, k)) {
            memcpy(out, content, k);
            n = k;
        } else {
            addr->quoted = true;
            out[n++] = '"';
            for (size_t i = 0; i < k; i++) {
                if (content[i] == '"' || content[i] == '\\')
                    out[n++] = '\\';
                out[n++] = (char)content[i];
            }
            out[n++] = '"';
        }
    } else {
        memcpy(out, path->local, path->local_bytes);
        n = path->local_bytes;
    }
    addr->local_len = (uint16_t)n;

    if (path->domain) {
        out[n++] = '@';
        for (size_t i = 0; i < path->domain_bytes; i++)
            out[n++] = (char)smtp_to_lower(path->domain[i]);
        if (path->literal_v6)
            memcpy(out + addr->local_len + 2, "IPv6:", 5);
        addr->domain_literal = path->literal;
    }
    assert(n <= SMTP_PATH_BYTES_MAX - 2);
    out[n] = '\0';
    addr->len = (uint16_t)n;
}

/* smtp_domain_of - the domain part of a canonical address ("" when none). */
const char *smtp_domain_of(const struct smtp_addr *addr)
{
    if (addr->local_len < addr->len && addr->text[addr->local_len] == '@')
        return addr->text + addr->local_len + 1;
    return "";
}
