/*
 * smtp_parse.c - SMTP command line, envelope address and ESMTP parameter parsing.
 *
 * Turns the bytes of one command line into a verb and an argument, and the argument of MAIL
 * or RCPT into an envelope address in canonical form plus its parameters. Pure functions: no
 * allocation, no I/O, no global state; only the caller's structs are written.
 *
 * Functions
 *   smtp_cmd_parse()   split a command line into verb and argument (verb table below)
 *   smtp_parse_mail()  "FROM:<path> [SIZE= BODY= SMTPUTF8 AUTH=]"
 *   smtp_parse_rcpt()  "TO:<path>"; no RCPT parameter is offered
 *   smtp_parse_reply() the reply line for a result (reply table below)
 *   smtp_verb_name()   a verb's upper-case name
 *   smtp_domain_of()   the domain part of a canonical address
 *
 * Canonical form: the source route is dropped, the local part is kept byte for byte when it
 * is a dot-string and unquoted when its quoting was not needed, otherwise re-quoted with only
 * '"' and '\' escaped; the domain is lower-cased (ASCII only), an IPv6 literal keeps the tag
 * as "IPv6:". The canonical text is never longer than the path as sent, so a path that passed
 * the SMTP_PATH_BYTES_MAX check always fits struct smtp_addr.text.
 *
 * SECURITY
 *   Every byte is hostile. Input is (pointer, length), never read past its end and never taken
 *   to be NUL terminated; no byte of it is written anywhere before the whole path has been
 *   checked against the limits of smtp_parse.h. NUL and other control bytes cannot reach the
 *   canonical text (none is valid in any part of a path), so text is a C string of len bytes.
 *   "%" and "!" are ordinary local-part text and are never interpreted; source routes are
 *   checked and dropped, never followed (no relaying through a route or a "%" hack). A local
 *   part that needs quoting keeps it, so "a@b"@c can never be read back as a@b. Non-ASCII must
 *   be well-formed UTF-8 (no overlongs, surrogates, values above U+10FFFF, or C1 controls, which
 *   would reach logs and headers) and is refused unless SMTPUTF8 was declared. Address literals
 *   are checked by inet_pton() on a bounded, NUL-free copy. Case folding is ASCII only and
 *   independent of the locale. Errors leave the output structs zeroed (empty address).
 *
 * STANDARDS
 *   RFC 5321 2.4 (verbs and keywords without regard to case), 3.6.1 (source routes: accept,
 *   ignore), 4.1.1 (command syntax), 4.1.2 (Path, Mailbox, Dot-string, Quoted-string, Domain,
 *   esmtp-param), 4.1.3 (address literals), 4.1.4 (Postmaster), 4.5.3.1.1-3 (size limits);
 *   RFC 1035 2.3.4 (63-byte labels); RFC 1870 (SIZE); RFC 6152 (BODY=8BITMIME);
 *   RFC 3030 (BODY=BINARYMIME, not offered); RFC 4954 5 (AUTH=, accepted and ignored);
 *   RFC 3461 4 (xtext); RFC 6531 3.3 (SMTPUTF8, UTF-8 in atext, qtext and sub-domains);
 *   RFC 3629 4 (UTF-8 byte sequences); RFC 3463 (enhanced status codes in the reply table).
 */
#include <arpa/inet.h>
#include <assert.h>
#include <string.h>

#include "net/smtp_parse.h"

#define SMTP_LABEL_BYTES_MAX      63  /* one DNS label, RFC 1035 2.3.4 */
#define SMTP_LITERAL_BYTES_MAX    64  /* inside [..]: "IPv6:" + INET6_ADDRSTRLEN, rounded up */
#define SMTP_SIZE_DIGITS_MAX      20  /* digits of UINT64_MAX */

#define STR_(x) #x
#define STR(x)  STR_(x)

/* Input being parsed: the bytes [p, end). */
struct cursor {
    const unsigned char *p;       /* next byte to look at */
    const unsigned char *end;     /* one past the last byte */
};

/* A path as it was sent, located but not yet copied. */
struct path {
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

/* Bytes of the argument: an ESMTP keyword, or its value (len 0 when there was no '='). */
struct span {
    const unsigned char *p;       /* first byte, points into the argument */
    size_t len;                   /* bytes */
};

/* cursor_init - a cursor over len bytes of s (s may be NULL when len is 0). */
static void cursor_init(struct cursor *c, const char *s, size_t len)
{
    if (!s) {
        s = "";
        len = 0;
    }
    c->p = (const unsigned char *)s;
    c->end = c->p + len;
}

/* peek - the next byte, or -1 at the end. */
static int peek(const struct cursor *c)
{
    return c->p < c->end ? *c->p : -1;
}

/* skip_spaces - step over any number of SP. */
static void skip_spaces(struct cursor *c)
{
    while (peek(c) == ' ')
        c->p++;
}

/* is_alpha, is_digit, to_lower - ASCII only, whatever the locale. */
static bool is_alpha(int ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
}

static bool is_digit(int ch)
{
    return ch >= '0' && ch <= '9';
}

static unsigned char to_lower(unsigned char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (unsigned char)(ch + ('a' - 'A')) : ch;
}

/* ascii_caseeq - whether n bytes of s equal n bytes of the upper- or lower-case word w. */
static bool ascii_caseeq(const unsigned char *s, const char *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (to_lower(s[i]) != to_lower((unsigned char)w[i]))
            return false;
    return true;
}

/* skip_word - step over w (matched without regard to case) if the input starts with it. */
static bool skip_word(struct cursor *c, const char *w)
{
    size_t n = strlen(w);

    if ((size_t)(c->end - c->p) < n || !ascii_caseeq(c->p, w, n))
        return false;
    c->p += n;
    return true;
}

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

/* is_atext - RFC 5322 3.2.3 atext, the ASCII part (RFC 6531 adds UTF-8, handled by callers). */
static bool is_atext(int ch)
{
    if (is_alpha(ch) || is_digit(ch))
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
static bool scan_dot_string(struct cursor *c, bool *utf8)
{
    bool want_atom = true;        /* at the start or just after a dot */

    for (;;) {
        int ch = peek(c);

        if (ch == '.') {
            if (want_atom)
                return false;
            want_atom = true;
            c->p++;
        } else if (ch >= 0x80) {
            size_t n = utf8_seq(c->p, c->end);
            if (!n)
                return false;
            *utf8 = true;
            want_atom = false;
            c->p += n;
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
static bool scan_quoted(struct cursor *c, bool *utf8)
{
    c->p++;
    for (;;) {
        int ch = peek(c);

        if (ch < 0) {
            return false;
        } else if (ch == '"') {
            c->p++;
            return true;
        } else if (ch == '\\') {
            c->p++;
            ch = peek(c);
            if (ch < 32 || ch > 126)
                return false;
            c->p++;
        } else if (ch >= 32 && ch <= 126) {
            c->p++;
        } else if (ch >= 0x80) {
            size_t n = utf8_seq(c->p, c->end);
            if (!n)
                return false;
            *utf8 = true;
            c->p += n;
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
static enum smtp_parse_err scan_domain(struct cursor *c, bool *utf8, enum smtp_parse_err bad)
{
    const unsigned char *start = c->p;

    for (;;) {
        const unsigned char *label = c->p;
        int last = -1;            /* last byte of the label, for the hyphen rule */

        for (;;) {
            int ch = peek(c);

            if (is_alpha(ch) || is_digit(ch) || ch == '-') {
                last = ch;
                c->p++;
            } else if (ch >= 0x80) {
                size_t n = utf8_seq(c->p, c->end);
                if (!n)
                    return bad;
                *utf8 = true;
                last = ch;
                c->p += n;
            } else {
                break;
            }
            if (c->p - label > SMTP_LABEL_BYTES_MAX)
                return bad;
        }
        if (c->p == label || *label == '-' || last == '-')
            return bad;
        if (peek(c) != '.')
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
static bool scan_literal(struct cursor *c, bool *v6)
{
    char buf[SMTP_LITERAL_BYTES_MAX + 1];
    size_t n = 0;

    c->p++;
    for (;;) {
        int ch = peek(c);

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

    if (n > 5 && ascii_caseeq((const unsigned char *)buf, "IPv6:", 5)) {
        struct in6_addr a6;
        *v6 = true;
        return inet_pton(AF_INET6, buf + 5, &a6) == 1;
    }
    struct in_addr a4;
    *v6 = false;
    return inet_pton(AF_INET, buf, &a4) == 1;
}

/*
 * scan_path - step over Path = "<" [ A-d-l ":" ] Mailbox ">" or the null path "<>"
 * (RFC 5321 4.1.2), locating its parts in path. With rcpt, "<Postmaster>" without a domain
 * is a path (RFC 5321 4.1.4). bad is the result for a malformed path. Limits are checked in
 * the order local part, domain, whole path, each when its end is found.
 */
static enum smtp_parse_err scan_path(struct cursor *c, bool rcpt, enum smtp_parse_err bad,
                                     struct path *path)
{
    const unsigned char *start = c->p;
    bool routed = false;
    enum smtp_parse_err err;

    memset(path, 0, sizeof(*path));
    if (peek(c) != '<')
        return bad;
    c->p++;
    if (peek(c) == '>') {
        c->p++;
        path->null_path = true;
        return SMTP_PARSE_OK;
    }

    /* A-d-l = At-domain *( "," At-domain ), checked and then dropped (RFC 5321 3.6.1).
     * Route domains are held to ASCII: they vanish, so nothing would justify the UTF-8. */
    if (peek(c) == '@') {
        routed = true;
        for (;;) {
            bool route_utf8 = false;

            c->p++;
            err = scan_domain(c, &route_utf8, bad);
            if (err != SMTP_PARSE_OK)
                return err;
            if (route_utf8)
                return bad;
            if (peek(c) == ':') {
                c->p++;
                break;
            }
            if (peek(c) != ',')
                return bad;
            c->p++;
            if (peek(c) != '@')
                return bad;
        }
    }

    path->local = c->p;
    if (peek(c) == '"') {
        if (!scan_quoted(c, &path->utf8))
            return bad;
        path->quoted = true;
    } else if (!scan_dot_string(c, &path->utf8)) {
        return bad;
    }
    path->local_bytes = (size_t)(c->p - path->local);
    if (path->local_bytes > SMTP_LOCAL_BYTES_MAX)
        return SMTP_PARSE_LOCAL_TOO_LONG;

    if (peek(c) == '@') {
        c->p++;
        path->domain = c->p;
        if (peek(c) == '[') {
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
               ascii_caseeq(path->local, "postmaster", 10)) {
        path->postmaster = true;
    } else {
        return bad;
    }

    if (peek(c) != '>')
        return bad;
    c->p++;
    if (c->p - start > SMTP_PATH_BYTES_MAX)
        return SMTP_PARSE_PATH_TOO_LONG;
    return SMTP_PARSE_OK;
}

/* is_dot_string - whether all n bytes of s form a Dot-string (then quoting is not needed). */
static bool is_dot_string(const unsigned char *s, size_t n)
{
    struct cursor c = { s, s + n };
    bool utf8 = false;

    return scan_dot_string(&c, &utf8) && c.p == c.end;
}

/*
 * addr_write - the canonical text of a checked path into addr (see the top of this file).
 * Each step writes no more than it read, so text holds at most SMTP_PATH_BYTES_MAX - 2 bytes.
 */
static void addr_write(struct smtp_addr *addr, const struct path *path)
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
            out[n++] = (char)to_lower(path->domain[i]);
        if (path->literal_v6)
            memcpy(out + addr->local_len + 2, "IPv6:", 5);
        addr->domain_literal = path->literal;
    }
    assert(n <= SMTP_PATH_BYTES_MAX - 2);
    out[n] = '\0';
    addr->len = (uint16_t)n;
}

/*
 * scan_param - step over esmtp-param = esmtp-keyword ["=" esmtp-value] (RFC 5321 4.1.2):
 * keyword (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"), value 1*(%d33-60 / %d62-126) or UTF-8
 * (RFC 6531). The parameter must end at SP or at the end. false when malformed.
 */
static bool scan_param(struct cursor *c, struct span *keyword, struct span *value)
{
    int ch = peek(c);

    keyword->p = c->p;
    if (!is_alpha(ch) && !is_digit(ch))
        return false;
    for (; is_alpha(ch) || is_digit(ch) || ch == '-'; ch = peek(c))
        c->p++;
    keyword->len = (size_t)(c->p - keyword->p);

    value->p = c->p;
    value->len = 0;
    if (ch == '=') {
        c->p++;
        value->p = c->p;
        for (;;) {
            ch = peek(c);
            if (ch >= 33 && ch <= 126 && ch != '=') {
                c->p++;
            } else if (ch >= 0x80) {
                size_t n = utf8_seq(c->p, c->end);
                if (!n)
                    return false;
                c->p += n;
            } else {
                break;
            }
        }
        value->len = (size_t)(c->p - value->p);
        if (value->len == 0)
            return false;
    }
    ch = peek(c);
    return ch < 0 || ch == ' ';
}

/* param_size - SIZE=1*20DIGIT (RFC 1870 3); the limit is checked once all are parsed. */
static enum smtp_parse_err param_size(const struct span *v, struct smtp_mail_params *mp)
{
    uint64_t size = 0;

    if (v->len == 0 || v->len > SMTP_SIZE_DIGITS_MAX)
        return SMTP_PARSE_BAD_PARAM;
    for (size_t i = 0; i < v->len; i++) {
        unsigned digit = (unsigned)(v->p[i] - '0');

        if (!is_digit(v->p[i]) || size > (UINT64_MAX - digit) / 10)
            return SMTP_PARSE_BAD_PARAM;
        size = size * 10 + digit;
    }
    mp->size = size;
    mp->has_size = true;
    return SMTP_PARSE_OK;
}

/* param_body - BODY=7BIT / 8BITMIME (RFC 6152); BINARYMIME (RFC 3030) is not offered. */
static enum smtp_parse_err param_body(const struct span *v, struct smtp_mail_params *mp)
{
    if (v->len == 4 && ascii_caseeq(v->p, "7BIT", 4))
        mp->body = SMTP_BODY_7BIT;
    else if (v->len == 8 && ascii_caseeq(v->p, "8BITMIME", 8))
        mp->body = SMTP_BODY_8BITMIME;
    else if (v->len == 10 && ascii_caseeq(v->p, "BINARYMIME", 10))
        return SMTP_PARSE_UNSUPPORTED_PARAM;
    else
        return SMTP_PARSE_BAD_PARAM;
    return SMTP_PARSE_OK;
}

/* param_smtputf8 - SMTPUTF8, which takes no value (RFC 6531 3.4). */
static enum smtp_parse_err param_smtputf8(const struct span *v, struct smtp_mail_params *mp)
{
    if (v->len != 0)
        return SMTP_PARSE_BAD_PARAM;
    mp->smtputf8 = true;
    return SMTP_PARSE_OK;
}

/*
 * param_auth - AUTH=xtext (RFC 4954 5), checked and ignored: we never pass it on. xtext is
 * %d33-42 / %d44-60 / %d62-126 / "+" 2HEXDIG (RFC 3461 4); lower-case hex digits are let
 * through, as nothing depends on the value.
 */
static enum smtp_parse_err param_auth(const struct span *v, struct smtp_mail_params *mp)
{
    (void)mp;
    if (v->len == 0)
        return SMTP_PARSE_BAD_PARAM;
    for (size_t i = 0; i < v->len; i++) {
        unsigned char ch = v->p[i];

        if (ch == '+') {
            if (v->len - i < 3)
                return SMTP_PARSE_BAD_PARAM;
            for (size_t j = 1; j <= 2; j++) {
                unsigned char h = to_lower(v->p[i + j]);
                if (!is_digit(h) && !(h >= 'a' && h <= 'f'))
                    return SMTP_PARSE_BAD_PARAM;
            }
            i += 2;
        } else if (ch < 33 || ch > 126) {
            return SMTP_PARSE_BAD_PARAM;
        }
    }
    return SMTP_PARSE_OK;
}

/* The MAIL parameters offered in the EHLO reply; any other keyword is unsupported. */
static const struct mail_param {
    const char *keyword;          /* upper case, matched without regard to case */
    enum smtp_parse_err (*apply)(const struct span *v, struct smtp_mail_params *mp);
} mail_params[] = {
    { "SIZE",     param_size },
    { "BODY",     param_body },
    { "SMTPUTF8", param_smtputf8 },
    { "AUTH",     param_auth },
};

/* mail_params_parse - the parameters after the path: each known once, in any order. */
static enum smtp_parse_err mail_params_parse(struct cursor *c, struct smtp_mail_params *mp)
{
    unsigned seen = 0;            /* bit i: mail_params[i] already given */

    for (;;) {
        struct span keyword, value;
        const struct mail_param *known = NULL;
        enum smtp_parse_err err;
        size_t i;

        skip_spaces(c);
        if (peek(c) < 0)
            return SMTP_PARSE_OK;
        if (!scan_param(c, &keyword, &value))
            return SMTP_PARSE_BAD_PARAM;
        for (i = 0; i < sizeof(mail_params) / sizeof(mail_params[0]); i++) {
            if (keyword.len == strlen(mail_params[i].keyword) &&
                ascii_caseeq(keyword.p, mail_params[i].keyword, keyword.len)) {
                known = &mail_params[i];
                break;
            }
        }
        if (!known)
            return SMTP_PARSE_UNSUPPORTED_PARAM;
        if (seen & (1u << i))
            return SMTP_PARSE_BAD_PARAM;
        seen |= 1u << i;
        err = known->apply(&value, mp);
        if (err != SMTP_PARSE_OK)
            return err;
    }
}

/* smtp_parse_mail - parse the argument of MAIL (see smtp_parse.h). */
enum smtp_parse_err smtp_parse_mail(const char *arg, size_t len, uint64_t message_bytes_max,
                                    struct smtp_addr *from, struct smtp_mail_params *params)
{
    struct cursor c;
    struct path path;
    enum smtp_parse_err err;

    memset(from, 0, sizeof(*from));
    memset(params, 0, sizeof(*params));
    cursor_init(&c, arg, len);
    if (!skip_word(&c, "FROM:"))
        return SMTP_PARSE_BAD_SYNTAX;
    skip_spaces(&c);          /* not in RFC 5321, but sent by old Outlook */
    err = scan_path(&c, false, SMTP_PARSE_BAD_SENDER, &path);
    if (err != SMTP_PARSE_OK)
        return err;
    if (!path.null_path && !path.domain)
        return SMTP_PARSE_BAD_SENDER;
    if (peek(&c) >= 0 && peek(&c) != ' ')
        return SMTP_PARSE_BAD_SENDER;     /* junk glued to the ">" */

    err = mail_params_parse(&c, params);
    if (err == SMTP_PARSE_OK && path.utf8 && !params->smtputf8)
        err = SMTP_PARSE_UTF8_NOT_DECLARED;
    if (err == SMTP_PARSE_OK && message_bytes_max && params->size > message_bytes_max)
        err = SMTP_PARSE_SIZE_TOO_BIG;
    if (err != SMTP_PARSE_OK) {
        memset(params, 0, sizeof(*params));
        return err;
    }
    addr_write(from, &path);
    return SMTP_PARSE_OK;
}

/* smtp_parse_rcpt - parse the argument of RCPT (see smtp_parse.h). */
enum smtp_parse_err smtp_parse_rcpt(const char *arg, size_t len, bool smtputf8,
                                    struct smtp_addr *to)
{
    struct cursor c;
    struct path path;
    enum smtp_parse_err err;

    memset(to, 0, sizeof(*to));
    cursor_init(&c, arg, len);
    if (!skip_word(&c, "TO:"))
        return SMTP_PARSE_BAD_SYNTAX;
    skip_spaces(&c);
    err = scan_path(&c, true, SMTP_PARSE_BAD_RECIPIENT, &path);
    if (err != SMTP_PARSE_OK)
        return err;
    if (path.null_path)
        return SMTP_PARSE_BAD_RECIPIENT;
    if (peek(&c) >= 0 && peek(&c) != ' ')
        return SMTP_PARSE_BAD_RECIPIENT;

    /* No RCPT parameter is offered (no DSN): a well-formed one is unsupported. */
    skip_spaces(&c);
    if (peek(&c) >= 0) {
        struct span keyword, value;
        return scan_param(&c, &keyword, &value) ? SMTP_PARSE_UNSUPPORTED_PARAM
                                                : SMTP_PARSE_BAD_PARAM;
    }
    if (path.utf8 && !smtputf8)
        return SMTP_PARSE_UTF8_NOT_DECLARED;
    addr_write(to, &path);
    return SMTP_PARSE_OK;
}

/* The verbs, indexed by enum smtp_verb; smtp_cmd_parse() matches against it. */
static const char *const verb_names[SMTP_VERB_COUNT] = {
    [SMTP_VERB_UNKNOWN]  = "UNKNOWN",
    [SMTP_VERB_HELO]     = "HELO",
    [SMTP_VERB_EHLO]     = "EHLO",
    [SMTP_VERB_MAIL]     = "MAIL",
    [SMTP_VERB_RCPT]     = "RCPT",
    [SMTP_VERB_DATA]     = "DATA",
    [SMTP_VERB_BDAT]     = "BDAT",
    [SMTP_VERB_RSET]     = "RSET",
    [SMTP_VERB_NOOP]     = "NOOP",
    [SMTP_VERB_QUIT]     = "QUIT",
    [SMTP_VERB_VRFY]     = "VRFY",
    [SMTP_VERB_EXPN]     = "EXPN",
    [SMTP_VERB_HELP]     = "HELP",
    [SMTP_VERB_STARTTLS] = "STARTTLS",
    [SMTP_VERB_AUTH]     = "AUTH",
};

/*
 * smtp_cmd_parse - split one command line into verb and argument (see smtp_parse.h). The verb
 * is the text up to the first SP or the end of the line; several SP before the argument are
 * tolerated, TAB is not a separator. The line's length limit is the reader's to enforce.
 */
enum smtp_parse_err smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd)
{
    const unsigned char *s;
    size_t verb_end = 0, arg_start, arg_end;

    if (!line) {
        line = "";
        len = 0;
    }
    s = (const unsigned char *)line;
    cmd->verb = SMTP_VERB_UNKNOWN;
    cmd->arg = line;
    cmd->arg_len = 0;

    for (size_t i = 0; i < len; i++)
        if ((s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
            return SMTP_PARSE_NUL;

    while (verb_end < len && s[verb_end] != ' ')
        verb_end++;
    arg_start = verb_end;
    while (arg_start < len && s[arg_start] == ' ')
        arg_start++;
    arg_end = len;
    while (arg_end > arg_start && s[arg_end - 1] == ' ')
        arg_end--;
    cmd->arg = line + arg_start;
    cmd->arg_len = arg_end - arg_start;

    for (int v = SMTP_VERB_UNKNOWN + 1; v < SMTP_VERB_COUNT; v++) {
        if (strlen(verb_names[v]) == verb_end && ascii_caseeq(s, verb_names[v], verb_end)) {
            cmd->verb = (enum smtp_verb)v;
            return SMTP_PARSE_OK;
        }
    }
    return SMTP_PARSE_UNKNOWN_COMMAND;
}

/* smtp_verb_name - upper-case name of a verb ("UNKNOWN" when out of range). */
const char *smtp_verb_name(enum smtp_verb verb)
{
    if ((unsigned)verb >= SMTP_VERB_COUNT)
        return verb_names[SMTP_VERB_UNKNOWN];
    return verb_names[verb];
}

/* The reply line of each result, for RCPT (and other commands) and for MAIL. */
#define BOTH(text)                 { text, text }
#define ADDR(what)                 { "501 5.1.3 " what, "501 5.1.7 " what }
static const struct parse_reply {
    const char *other;            /* RCPT and every command but MAIL */
    const char *mail;             /* MAIL: address errors say 5.1.7 (bad sender) */
} parse_replies[SMTP_PARSE_ERR_COUNT] = {
    [SMTP_PARSE_OK]                = BOTH("250 2.0.0 OK"),
    [SMTP_PARSE_UNKNOWN_COMMAND]   = BOTH("500 5.5.1 Command unrecognized"),
    [SMTP_PARSE_BAD_SYNTAX]        = BOTH("501 5.5.4 Syntax error in arguments"),
    [SMTP_PARSE_NUL]               = BOTH("500 5.5.2 Line contains invalid characters"),
    [SMTP_PARSE_BAD_SENDER]        = BOTH("501 5.1.7 Bad sender address syntax"),
    [SMTP_PARSE_BAD_RECIPIENT]     = BOTH("501 5.1.3 Bad recipient address syntax"),
    [SMTP_PARSE_LOCAL_TOO_LONG]    = ADDR("Local part too long ("
                                     STR(SMTP_LOCAL_BYTES_MAX) " bytes max)"),
    [SMTP_PARSE_DOMAIN_TOO_LONG]   = ADDR("Domain too long ("
                                     STR(SMTP_DOMAIN_BYTES_MAX) " bytes max)"),
    [SMTP_PARSE_PATH_TOO_LONG]     = ADDR("Path too long ("
                                     STR(SMTP_PATH_BYTES_MAX) " bytes max)"),
    [SMTP_PARSE_BAD_PARAM]         = BOTH("501 5.5.4 Syntax error in parameters"),
    [SMTP_PARSE_UNSUPPORTED_PARAM] = BOTH("555 5.5.4 Unsupported parameter"),
    [SMTP_PARSE_SIZE_TOO_BIG]      = BOTH("552 5.3.4 Message size exceeds fixed maximum "
                                          "message size"),
    [SMTP_PARSE_UTF8_NOT_DECLARED] = BOTH("553 5.6.7 Non-ASCII address requires SMTPUTF8"),
};

/* smtp_parse_reply - the reply line for err; for_mail picks 5.1.7 for address limits. */
const char *smtp_parse_reply(enum smtp_parse_err err, bool for_mail)
{
    if ((unsigned)err >= SMTP_PARSE_ERR_COUNT || !parse_replies[err].other)
        return "451 4.3.0 Internal error";
    return for_mail ? parse_replies[err].mail : parse_replies[err].other;
}

/* smtp_domain_of - the domain part of a canonical address ("" when none). */
const char *smtp_domain_of(const struct smtp_addr *addr)
{
    if (addr->local_len < addr->len && addr->text[addr->local_len] == '@')
        return addr->text + addr->local_len + 1;
    return "";
}
