/*
 * smtp_parse.c - SMTP command line and ESMTP parameter parsing, and the reply line of each
 * parse result.
 *
 * Turns the bytes of one command line into a verb and an argument, and the argument of MAIL
 * or RCPT into an envelope address in canonical form plus its parameters. Pure functions: no
 * allocation, no I/O, no global state; only the caller's structs are written. The path itself
 * is scanned and canonicalised by smtp_addr.c (through the internal smtp_addr.h).
 *
 * Functions
 *   smtp_cmd_parse()   split a command line into verb and argument (verb table below)
 *   smtp_parse_mail()  "FROM:<path> [SIZE= BODY= SMTPUTF8 AUTH=]"
 *   smtp_parse_rcpt()  "TO:<path>"; no RCPT parameter is offered
 *   smtp_parse_bdat()  "n [LAST]", the size of a chunk
 *   smtp_parse_reply() the reply line for a result (reply table below)
 *   smtp_verb_name()   a verb's upper-case name
 *
 * SECURITY
 *   Every byte is hostile. Input is (pointer, length), never read past its end and never taken
 *   to be NUL terminated. A command line holding NUL or another control byte is refused
 *   whole. ESMTP values are checked byte by byte (UTF-8 must be well-formed, see smtp_addr.c)
 *   and only SIZE and BODY are kept; AUTH= is checked and dropped. A non-ASCII address is
 *   refused unless SMTPUTF8 was declared. Case folding is ASCII only and independent of the
 *   locale. Errors leave the output structs zeroed (empty address).
 *
 * STANDARDS
 *   RFC 5321 2.4 (verbs and keywords without regard to case), 4.1.1 (command syntax), 4.1.2
 *   (esmtp-param); RFC 1870 (SIZE); RFC 6152 (BODY=8BITMIME); RFC 3030 (BODY=BINARYMIME, not
 *   offered; 2, the BDAT argument); RFC 4954 5 (AUTH=, accepted and ignored); RFC 3461 4
 *   (xtext); RFC 6531 3.3 and 3.4 (SMTPUTF8); RFC 3463 (enhanced status codes in the reply
 *   table).
 */
#include <string.h>

#include "net/smtp_addr.h"
#include "net/smtp_parse.h"

#define SMTP_SIZE_DIGITS_MAX      20  /* digits of UINT64_MAX */

#define STR_(x) #x
#define STR(x)  STR_(x)

/* Bytes of the argument: an ESMTP keyword, or its value (len 0 when there was no '='). */
struct span {
    const unsigned char *p;       /* first byte, points into the argument */
    size_t len;                   /* bytes */
};

/* cursor_init - a cursor over len bytes of s (s may be NULL when len is 0). */
static void cursor_init(struct smtp_cursor *c, const char *s, size_t len)
{
    if (!s) {
        s = "";
        len = 0;
    }
    c->p = (const unsigned char *)s;
    c->end = c->p + len;
}

/* skip_spaces - step over any number of SP. */
static void skip_spaces(struct smtp_cursor *c)
{
    while (smtp_peek(c) == ' ')
        c->p++;
}

/* skip_word - step over w (matched without regard to case) if the input starts with it. */
static bool skip_word(struct smtp_cursor *c, const char *w)
{
    size_t n = strlen(w);

    if ((size_t)(c->end - c->p) < n || !smtp_ascii_caseeq(c->p, w, n))
        return false;
    c->p += n;
    return true;
}

/*
 * scan_param - step over esmtp-param = esmtp-keyword ["=" esmtp-value] (RFC 5321 4.1.2):
 * keyword (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"), value 1*(%d33-60 / %d62-126) or UTF-8
 * (RFC 6531). The parameter must end at SP or at the end. false when malformed.
 */
static bool scan_param(struct smtp_cursor *c, struct span *keyword, struct span *value)
{
    int ch = smtp_peek(c);

    keyword->p = c->p;
    if (!smtp_is_alpha(ch) && !smtp_is_digit(ch))
        return false;
    for (; smtp_is_alpha(ch) || smtp_is_digit(ch) || ch == '-'; ch = smtp_peek(c))
        c->p++;
    keyword->len = (size_t)(c->p - keyword->p);

    value->p = c->p;
    value->len = 0;
    if (ch == '=') {
        c->p++;
        value->p = c->p;
        for (;;) {
            ch = smtp_peek(c);
            if (ch >= 33 && ch <= 126 && ch != '=') {
                c->p++;
            } else if (ch >= 0x80) {
                if (!smtp_addr_skip_utf8(c, NULL))
                    return false;
            } else {
                break;
            }
        }
        value->len = (size_t)(c->p - value->p);
        if (value->len == 0)
            return false;
    }
    ch = smtp_peek(c);
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

        if (!smtp_is_digit(v->p[i]) || size > (UINT64_MAX - digit) / 10)
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
    if (v->len == 4 && smtp_ascii_caseeq(v->p, "7BIT", 4))
        mp->body = SMTP_BODY_7BIT;
    else if (v->len == 8 && smtp_ascii_caseeq(v->p, "8BITMIME", 8))
        mp->body = SMTP_BODY_8BITMIME;
    else if (v->len == 10 && smtp_ascii_caseeq(v->p, "BINARYMIME", 10))
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
                unsigned char h = smtp_to_lower(v->p[i + j]);
                if (!smtp_is_digit(h) && !(h >= 'a' && h <= 'f'))
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
static enum smtp_parse_err mail_params_parse(struct smtp_cursor *c, struct smtp_mail_params *mp)
{
    unsigned seen = 0;            /* bit i: mail_params[i] already given */

    for (;;) {
        struct span keyword, value;
        const struct mail_param *known = NULL;
        enum smtp_parse_err err;
        size_t i;

        skip_spaces(c);
        if (smtp_peek(c) < 0)
            return SMTP_PARSE_OK;
        if (!scan_param(c, &keyword, &value))
            return SMTP_PARSE_BAD_PARAM;
        for (i = 0; i < sizeof(mail_params) / sizeof(mail_params[0]); i++) {
            if (keyword.len == strlen(mail_params[i].keyword) &&
                smtp_ascii_caseeq(keyword.p, mail_params[i].keyword, keyword.len)) {
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
    struct smtp_cursor c;
    struct smtp_path path;
    enum smtp_parse_err err;

    memset(from, 0, sizeof(*from));
    memset(params, 0, sizeof(*params));
    cursor_init(&c, arg, len);
    if (!skip_word(&c, "FROM:"))
        return SMTP_PARSE_BAD_SYNTAX;
    skip_spaces(&c);          /* not in RFC 5321, but sent by old Outlook */
    err = smtp_addr_scan_path(&c, false, SMTP_PARSE_BAD_SENDER, &path);
    if (err != SMTP_PARSE_OK)
        return err;
    if (!path.null_path && !path.domain)
        return SMTP_PARSE_BAD_SENDER;
    if (smtp_peek(&c) >= 0 && smtp_peek(&c) != ' ')
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
    smtp_addr_write(from, &path);
    return SMTP_PARSE_OK;
}

/* smtp_parse_rcpt - parse the argument of RCPT (see smtp_parse.h). */
enum smtp_parse_err smtp_parse_rcpt(const char *arg, size_t len, bool smtputf8,
                                    struct smtp_addr *to)
{
    struct smtp_cursor c;
    struct smtp_path path;
    enum smtp_parse_err err;

    memset(to, 0, sizeof(*to));
    cursor_init(&c, arg, len);
    if (!skip_word(&c, "TO:"))
        return SMTP_PARSE_BAD_SYNTAX;
    skip_spaces(&c);
    err = smtp_addr_scan_path(&c, true, SMTP_PARSE_BAD_RECIPIENT, &path);
    if (err != SMTP_PARSE_OK)
        return err;
    if (path.null_path)
        return SMTP_PARSE_BAD_RECIPIENT;
    if (smtp_peek(&c) >= 0 && smtp_peek(&c) != ' ')
        return SMTP_PARSE_BAD_RECIPIENT;

    /* No RCPT parameter is offered (no DSN): a well-formed one is unsupported. */
    skip_spaces(&c);
    if (smtp_peek(&c) >= 0) {
        struct span keyword, value;
        return scan_param(&c, &keyword, &value) ? SMTP_PARSE_UNSUPPORTED_PARAM
                                                : SMTP_PARSE_BAD_PARAM;
    }
    if (path.utf8 && !smtputf8)
        return SMTP_PARSE_UTF8_NOT_DECLARED;
    smtp_addr_write(to, &path);
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
        if (strlen(verb_names[v]) == verb_end && smtp_ascii_caseeq(s, verb_names[v], verb_end)) {
            cmd->verb = (enum smtp_verb)v;
            return SMTP_PARSE_OK;
        }
    }
    return SMTP_PARSE_UNKNOWN_COMMAND;
}

/* smtp_parse_bdat - "n" or "n LAST" (see smtp_parse.h). */
bool smtp_parse_bdat(const char *arg, size_t len, uint64_t *size, bool *last)
{
    size_t i = 0;
    uint64_t v = 0;

    if (!arg)
        len = 0;
    while (i < len && arg[i] >= '0' && arg[i] <= '9' && i < SMTP_BDAT_DIGITS_MAX)
        v = v * 10 + (uint64_t)(arg[i++] - '0');
    if (!i || (i < len && arg[i] != ' '))
        return false;
    while (i < len && arg[i] == ' ')
        i++;
    *last = false;
    if (i < len) {
        if (len - i != 4 || !smtp_ascii_caseeq((const unsigned char *)arg + i, "LAST", 4))
            return false;
        *last = true;
    }
    *size = v;
    return true;
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
