/*
 * smtp_reply.c - the client side's SMTP reply parser: incremental, byte-resumable, bounded.
 *
 * Reads the replies of an SMTP server (or of the relay under load) as the receive buffers
 * come, in any split, one reply per completion so that pipelined replies (RFC 2920) are
 * matched to their commands one by one. For each reply it gives the code, the enhanced status
 * code of line 1 (RFC 2034 / RFC 3463), the text of all lines joined with "\n", and for a 250
 * reply the EHLO keywords of lines 2..n. No allocation, no I/O, no global state: everything
 * lives in the caller's struct smtp_reply_parser.
 *
 * FUNCTIONS
 *   smtp_reply_init()      start reading replies.
 *   smtp_reply_feed()      read up to the end of one reply; returns the bytes consumed.
 *   smtp_reply_busy()      whether a reply is half read.
 *   smtp_reply_err_name()  a short name for an error, for logs and counters.
 *
 * HOW IT READS
 *   One byte at a time through the states below (replies are short; the DATA content, which is
 *   long, never comes through here). The current line's text is kept in the parser until its
 *   CRLF; only then is it judged (enhanced code for line 1, EHLO keyword for lines 2..n) and
 *   appended to the joined text. So the EHLO keywords never depend on where the joined text
 *   was cut, and the result never depends on how the input was split.
 *
 * SECURITY
 *   Every byte is from the peer. Every line and the reply are bounded
 *   (SMTP_REPLY_LINE_BYTES_MAX, SMTP_REPLY_LINES_MAX), the text kept is cut at
 *   SMTP_REPLY_TEXT_BYTES_MAX, and bytes skipped after an error still count toward the line
 *   limit, so no input makes the parser hold or skip an unbounded amount. Lines end in CRLF
 *   only: a bare LF or bare CR is a protocol violation, not a line end, so a reply can never be
 *   read differently by this parser and by a CRLF-strict one (reply smuggling to the relay's
 *   own state machine). The text may hold any byte but NUL, CR and LF (8-bit included): it is
 *   the peer's, and whoever logs or quotes it escapes it.
 *
 * STANDARDS
 *   RFC 5321 4.2 (reply lines: code, "-" for more, SP or nothing for the last), 4.2.1 (the
 *   first digit), 4.5.3.1.5 (512 bytes per reply line), 2.3.8 (CRLF), 4.1.1.1 (ehlo-line
 *   syntax); RFC 2034 and RFC 3463 (enhanced status codes); RFC 2920 (pipelining); RFC 1870
 *   (SIZE), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8), RFC 3030 (CHUNKING), RFC 3207
 *   (STARTTLS), RFC 4954 (AUTH).
 *
 * DECISIONS
 *   - Bare LF is refused, not taken as a line end: a relay that trusts a reply framing other
 *     than CRLF can be made to desynchronize its pipelined commands.
 *   - "250" CRLF (the code alone, RFC 5321 4.2's Reply-code [ SP textstring ] CRLF) is a valid
 *     last line, and so is "250 " CRLF (an empty text; not in the grammar, but harmless).
 *     "250-" CRLF is a valid empty continuation line.
 *   - Only the first digit is checked against the grammar (2..5); the second and third may be
 *     any digit. Old servers send codes like 571; reading them by class (5: permanent) is what
 *     the server meant, dropping the connection would turn a refusal into a retry.
 *   - The enhanced code is taken from line 1 only, when its text starts with class.subject.detail
 *     (1 to 3 digits each) followed by SP or the end of the line, and the class is the code's
 *     first digit (so never for 3xx). The text keeps it as sent.
 *   - EHLO keywords are read only from a reply with code 250, lines 2..n, case-insensitively.
 *     Keywords other than SIZE and AUTH are taken whatever parameters follow. SIZE takes one
 *     optional decimal value that fits 64 bits; anything else makes the line bad (ignored).
 *     AUTH takes any number of mechanisms, PLAIN and LOGIN are recorded, others skipped; the
 *     legacy "AUTH=PLAIN" form is not ehlo-line syntax and is counted bad. A keyword seen twice
 *     adds its bits again; SIZE keeps the first valid value.
 *   - The text of the line with an error is not kept: it is the peer's garbage.
 */
#include "net/smtp_reply.h"

#include <assert.h>
#include <string.h>

/* Scanner states (struct smtp_reply_parser.state). */
enum {
    ST_CODE0 = 0,     /* at a line start: the code's first digit */
    ST_CODE1,         /* its second digit */
    ST_CODE2,         /* its third digit */
    ST_SEP,           /* after the code: SP, '-' or CR */
    ST_TEXT,          /* in the text */
    ST_CR,            /* a CR read: only LF may follow */
    ST_SKIP,          /* an error latched: discard to the LF (still bounded by the line limit) */
};

/* The EHLO keyword table: what each understood keyword sets and how its parameters read. */
enum ext_params { PARAMS_ANY = 0, PARAMS_SIZE, PARAMS_AUTH };

static const struct ext_keyword {
    const char *name;             /* upper case */
    uint32_t bit;                 /* enum smtp_ext */
    enum ext_params params;       /* how the parameters are read */
} ext_keywords[] = {
    { "PIPELINING",          SMTP_EXT_PIPELINING,          PARAMS_ANY },
    { "SIZE",                SMTP_EXT_SIZE,                PARAMS_SIZE },
    { "8BITMIME",            SMTP_EXT_8BITMIME,            PARAMS_ANY },
    { "SMTPUTF8",            SMTP_EXT_SMTPUTF8,            PARAMS_ANY },
    { "CHUNKING",            SMTP_EXT_CHUNKING,            PARAMS_ANY },
    { "STARTTLS",            SMTP_EXT_STARTTLS,            PARAMS_ANY },
    { "ENHANCEDSTATUSCODES", SMTP_EXT_ENHANCEDSTATUSCODES, PARAMS_ANY },
    { "AUTH",                SMTP_EXT_AUTH,                PARAMS_AUTH },
};

/* The SASL mechanisms recorded after AUTH. */
static const struct auth_mech {
    const char *name;             /* upper case */
    uint32_t bit;                 /* enum smtp_auth_mech */
} auth_mechs[] = {
    { "PLAIN", SMTP_AUTH_PLAIN },
    { "LOGIN", SMTP_AUTH_LOGIN },
};

static const char *const err_names[SMTP_REPLY_ERR_COUNT] = {
    [SMTP_REPLY_OK]             = "ok",
    [SMTP_REPLY_BAD_CODE]       = "bad_code",
    [SMTP_REPLY_BAD_CLASS]      = "bad_class",
    [SMTP_REPLY_BAD_SEPARATOR]  = "bad_separator",
    [SMTP_REPLY_CODE_CHANGED]   = "code_changed",
    [SMTP_REPLY_NUL]            = "nul",
    [SMTP_REPLY_BARE_CR]        = "bare_cr",
    [SMTP_REPLY_BARE_LF]        = "bare_lf",
    [SMTP_REPLY_LINE_TOO_LONG]  = "line_too_long",
    [SMTP_REPLY_TOO_MANY_LINES] = "too_many_lines",
};

#define SIZE_DIGITS_MAX 20        /* digits of UINT64_MAX */

/* is_digit - an ASCII decimal digit (locale independent). */
static inline bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* is_alnum - an ASCII letter or digit. */
static inline bool is_alnum(unsigned char c)
{
    return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* same_upper - whether n bytes of s equal the upper-case NUL-terminated name, ASCII case
 * folded. */
static bool same_upper(const char *s, size_t n, const char *name)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'a' && c <= 'z')
            c = (unsigned char)(c - 'a' + 'A');
        if (name[i] == '\0' || c != (unsigned char)name[i])
            return false;
    }
    return name[i] == '\0';
}

/* next_param - the next SP-separated parameter of an ehlo-line from *pos: its start and
 * length, or false at the end; a byte outside %d33-126 sets *bad. Runs of SP count as one. */
static bool next_param(const char *t, size_t n, size_t *pos, size_t *start, size_t *len,
                       bool *bad)
{
    size_t i = *pos;
    while (i < n && t[i] == ' ')
        i++;
    if (i == n) {
        *pos = i;
        return false;
    }
    *start = i;
    while (i < n && t[i] != ' ') {
        unsigned char c = (unsigned char)t[i];
        if (c < 33 || c > 126)
            *bad = true;
        i++;
    }
    *len = i - *start;
    *pos = i;
    return true;
}

/* parse_size - a decimal value of 1..20 digits that fits 64 bits. */
static bool parse_size(const char *s, size_t n, uint64_t *value)
{
    uint64_t v = 0;
    if (n == 0 || n > SIZE_DIGITS_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_digit(c))
            return false;
        unsigned d = c - '0';
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *value = v;
    return true;
}

/*
 * ehlo_line - read one line (2..n) of a 250 reply as ehlo-line = ehlo-keyword *(SP ehlo-param)
 * (RFC 5321 4.1.1.1) and record what it announces in e. Nothing is recorded from a bad line.
 */
static void ehlo_line(struct smtp_ehlo *e, const char *t, size_t n)
{
    size_t k = 0;
    while (k < n && t[k] != ' ') {
        unsigned char c = (unsigned char)t[k];
        if (!is_alnum(c) && !(c == '-' && k > 0)) {
            e->bad_lines++;
            return;
        }
        k++;
    }
    if (k == 0) {
        e->bad_lines++;
        return;
    }

    const struct ext_keyword *kw = NULL;
    for (size_t i = 0; i < sizeof ext_keywords / sizeof ext_keywords[0]; i++) {
        if (same_upper(t, k, ext_keywords[i].name)) {
            kw = &ext_keywords[i];
            break;
        }
    }

    /* Parameters: checked for every line, so that garbage is counted whatever the keyword. */
    size_t pos = k, start = 0, len = 0, count = 0;
    bool bad = false;
    uint64_t size = 0;
    bool size_ok = true;
    uint32_t auth = 0;
    while (next_param(t, n, &pos, &start, &len, &bad)) {
        count++;
        if (kw && kw->params == PARAMS_SIZE)
            size_ok = count == 1 && parse_size(t + start, len, &size);
        if (kw && kw->params == PARAMS_AUTH) {
            for (size_t i = 0; i < sizeof auth_mechs / sizeof auth_mechs[0]; i++)
                if (same_upper(t + start, len, auth_mechs[i].name))
                    auth |= auth_mechs[i].bit;
        }
        if (bad || !size_ok)
            break;
    }
    if (bad || !size_ok) {
        e->bad_lines++;
        return;
    }
    if (kw == NULL) {
        e->unknown_lines++;
        return;
    }
    if (kw->params == PARAMS_SIZE && !(e->ext & SMTP_EXT_SIZE))
        e->size_max = size;
    e->ext |= kw->bit;
    e->auth |= auth;
}

/*
 * enhanced_code - read class.subject.detail at the start of line 1's text (RFC 3463 2:
 * class "2"/"4"/"5", subject and detail 1*3digit), ended by SP or the end of the text; the
 * class must be the reply code's first digit.
 */
static void enhanced_code(struct smtp_reply *r, const char *t, size_t n)
{
    unsigned part[3] = { 0, 0, 0 };
    size_t i = 0;

    if (r->code / 100 == 3 || n == 0 || (unsigned char)t[0] != '0' + r->code / 100)
        return;                   /* 3xx has no enhanced code (RFC 3463 2: 2, 4 or 5) */
    part[0] = r->code / 100u;
    i = 1;
    for (unsigned k = 1; k < 3; k++) {
        if (i == n || t[i] != '.')
            return;
        i++;
        size_t digits = 0;
        while (i < n && is_digit((unsigned char)t[i]) && digits < 4) {
            part[k] = part[k] * 10 + (unsigned)(t[i] - '0');
            digits++;
            i++;
        }
        if (digits == 0 || digits > 3)
            return;
    }
    if (i < n && t[i] != ' ')
        return;
    r->has_enhanced = true;
    r->enh_class = (uint8_t)part[0];
    r->enh_subject = (uint16_t)part[1];
    r->enh_detail = (uint16_t)part[2];
}

/* text_add - append n bytes to the joined text, cut at SMTP_REPLY_TEXT_BYTES_MAX. */
static void text_add(struct smtp_reply *r, const char *s, size_t n)
{
    size_t room = SMTP_REPLY_TEXT_BYTES_MAX - r->text_len;
    if (n > room) {
        n = room;
        r->text_cut = true;
    }
    memcpy(r->text + r->text_len, s, n);
    r->text_len = (uint16_t)(r->text_len + n);
}

/* latch - record an error; the first one wins. */
static inline void latch(struct smtp_reply_parser *p, enum smtp_reply_err err)
{
    if (p->cur.err == SMTP_REPLY_OK)
        p->cur.err = (uint8_t)err;
}

/* reply_reset - forget the reply read; the parser waits for a new one. */
static void reply_reset(struct smtp_reply_parser *p)
{
    p->state = ST_CODE0;
    p->last = false;
    p->line_bytes = 0;
    p->line_len = 0;
    p->code = 0;
    memset(&p->cur, 0, offsetof(struct smtp_reply, text));
    p->cur.text[0] = '\0';
}

/*
 * line_end - a line's CRLF: judge its text and add it to the reply. Returns true when the
 * reply is complete (its last line, or TOO_MANY_LINES latched).
 */
static bool line_end(struct smtp_reply_parser *p)
{
    struct smtp_reply *r = &p->cur;

    if (r->lines == 1) {
        enhanced_code(r, p->line, p->line_len);
    } else {
        text_add(r, "\n", 1);
        if (r->code == 250)
            ehlo_line(&r->ehlo, p->line, p->line_len);
    }
    text_add(r, p->line, p->line_len);
    if (p->last)
        return true;
    if (r->lines == SMTP_REPLY_LINES_MAX) {
        latch(p, SMTP_REPLY_TOO_MANY_LINES);
        return true;
    }
    p->state = ST_CODE0;
    p->line_bytes = 0;
    p->line_len = 0;
    return false;
}

/* reply_out - hand the complete reply to the caller and get ready for the next one. */
static void reply_out(struct smtp_reply_parser *p, struct smtp_reply *out)
{
    struct smtp_reply *r = &p->cur;

    if (r->err != SMTP_REPLY_OK) {
        r->has_enhanced = false;
        r->enh_class = 0;
        r->enh_subject = r->enh_detail = 0;
        memset(&r->ehlo, 0, sizeof r->ehlo);
    }
    r->text[r->text_len] = '\0';
    /* Only the text bytes in use are copied: the load generator reads millions of replies. */
    memcpy(out, r, offsetof(struct smtp_reply, text));
    memcpy(out->text, r->text, (size_t)r->text_len + 1);
    reply_reset(p);
}

/* smtp_reply_init - start reading replies. */
void smtp_reply_init(struct smtp_reply_parser *p)
{
    reply_reset(p);
}

/* smtp_reply_feed - read up to the end of one reply; see smtp_reply.h. */
size_t smtp_reply_feed(struct smtp_reply_parser *p, const char *buf, size_t len,
                       struct smtp_reply *out, bool *complete)
{
    struct smtp_reply *r = &p->cur;
    size_t i = 0;

    *complete = false;
    while (i < len) {
        unsigned char c = (unsigned char)buf[i];

        if (p->state == ST_CR && c != '\n') {
            latch(p, SMTP_REPLY_BARE_CR);         /* c is read again as skipped text */
            p->state = ST_SKIP;
            continue;
        }
        i++;
        if (p->line_bytes == 0 && r->lines < SMTP_REPLY_LINES_MAX)
            r->lines++;
        if (++p->line_bytes > SMTP_REPLY_LINE_BYTES_MAX) {
            latch(p, SMTP_REPLY_LINE_TOO_LONG);
            goto done;
        }
        if (p->state == ST_SKIP) {
            if (c == '\n')
                goto done;
            continue;
        }
        if (c == '\0') {
            latch(p, SMTP_REPLY_NUL);
            p->state = ST_SKIP;
            continue;
        }
        if (c == '\n' && p->state != ST_CR) {
            latch(p, SMTP_REPLY_BARE_LF);
            goto done;
        }

        switch (p->state) {
        case ST_CODE0:
        case ST_CODE1:
        case ST_CODE2: {
            unsigned k = p->state - ST_CODE0;
            static const unsigned scale[3] = { 100, 10, 1 };
            if (!is_digit(c)) {
                latch(p, SMTP_REPLY_BAD_CODE);
                p->state = ST_SKIP;
                break;
            }
            unsigned d = c - '0';
            if (r->lines == 1) {
                if (k == 0 && (d < 2 || d > 5)) {
                    latch(p, SMTP_REPLY_BAD_CLASS);
                    p->state = ST_SKIP;
                    break;
                }
                /* r->code is set only once line 1 has all three digits (0 before) */
                p->code = (uint16_t)(p->code * 10 + d);
                if (k == 2)
                    r->code = p->code;
            } else if (d != r->code / scale[k] % 10) {
                latch(p, SMTP_REPLY_CODE_CHANGED);
                p->state = ST_SKIP;
                break;
            }
            p->state++;
            break;
        }

        case ST_SEP:
            if (c == ' ') {
                p->last = true;
                p->state = ST_TEXT;
            } else if (c == '-') {
                p->last = false;
                p->state = ST_TEXT;
            } else if (c == '\r') {
                p->last = true;           /* "250" CRLF: the code alone ends the reply */
                p->state = ST_CR;
            } else {
                latch(p, SMTP_REPLY_BAD_SEPARATOR);
                p->state = ST_SKIP;
            }
            break;

        case ST_TEXT:
            if (c == '\r') {
                p->state = ST_CR;
            } else {
                /* code + separator + CRLF leave at most SMTP_REPLY_LINE_BYTES_MAX - 6 */
                assert(p->line_len < sizeof p->line);
                p->line[p->line_len++] = (char)c;
            }
            break;

        case ST_CR:                       /* c is the LF: a bare CR was taken above */
            if (line_end(p))
                goto done;
            break;

        default:
            assert(!"smtp_reply: bad state");
            latch(p, SMTP_REPLY_BAD_CODE);
            goto done;
        }
    }
    return i;

done:
    reply_out(p, out);
    *complete = true;
    return i;
}

/* smtp_reply_busy - whether a reply has begun and not ended. */
bool smtp_reply_busy(const struct smtp_reply_parser *p)
{
    return p->cur.lines > 0;
}

/* smtp_reply_err_name - a short name for err. */
const char *smtp_reply_err_name(enum smtp_reply_err err)
{
    if ((unsigned)err >= SMTP_REPLY_ERR_COUNT)
        return "invalid";
    return err_names[err];
}
