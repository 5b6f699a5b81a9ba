/*
 * notify_text.c - the text of a relaying notice: template checks, filling, the message.
 *
 * FUNCTIONS
 *   notify_template_check()  what is wrong with a template (for -t and reloads).
 *   notify_placeholder()     whether a '{' starts a placeholder, and which.
 *   notify_clean()           a value made safe to put in a message.
 *   notify_fill()            the body: template plus values.
 *   notify_message()         header and body.
 *   notify_date(), notify_ymd()  dates, UTC.
 * Pure: no I/O, no global state, the same input gives the same bytes. Used by notify.c on a
 * worker, and by tests/unit/test_notify.c and tests/fuzz/fuzz_notify_template.c.
 *
 * TEMPLATE SYNTAX
 *   Plain text, UTF-8, LF or CRLF line ends. A placeholder is '{' NAME '}' where NAME is 1 to
 *   NOTIFY_NAME_BYTES_MAX letters, digits or '_' (case counts: {IP} is not {ip}); any other
 *   '{' or '}' is text, so "{ }" or "{{ip}}" need no escape ("{{ip}}" gives "{192.0.2.1}").
 *   Where to get help is {help}: [policy] relay_help, the text the 553 of reject mode quotes
 *   too, so that the notice and the later refusal point to the same place.
 *
 * SECURITY
 *   The login and the sender address come from the client, the registry owner from an
 *   operator's file, the reverse DNS name from the network (forward-confirmed, but its
 *   owner chose it); all of them only go into the
 *   body, after notify_clean(): C0 controls (CR, LF, NUL and TAB included), DEL, C1 controls,
 *   invalid or overlong UTF-8 and the bidi embedding/override/isolate characters (U+202A-E,
 *   U+2066-9, which could make text read in another order) become '?', and the value is cut
 *   to NOTIFY_VALUE_BYTES_MAX on a character boundary. A value thus never adds a line, let
 *   alone a header field; the body is a single text/plain part, so there is no boundary to
 *   forge either. notify_fill() applies the same rules to the template's own bytes (it is
 *   checked at load, but fill does not rely on that): every output line ends in CRLF, holds
 *   no NUL or bare CR/LF and at most NOTIFY_LINE_BYTES_MAX octets.
 *   Header fields are built from our own data only: the host name (kept to host name
 *   characters), the client IP (printed by inet_ntop), the recipient (an address the caller
 *   checked with the SMTP path parser; cleaned again here), the date and the Message-ID.
 *
 * STANDARDS: RFC 5322 3.3 (date-time), 3.6 (header fields), 2.1.1 (line length); RFC 3834 5
 *   (Auto-Submitted: auto-generated: not a reply to the message, a notice about it); RFC 2045
 *   (MIME-Version, Content-Type, Content-Transfer-Encoding); RFC 6532 (UTF-8 in the header
 *   when the recipient address is not ASCII); RFC 3629 (UTF-8).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/notify.h"

const char *const notify_field_name[NOTIFY_FIELD_COUNT] = {
    [NOTIFY_IP] = "ip",
    [NOTIFY_FROM] = "from",
    [NOTIFY_LOGIN] = "login",
    [NOTIFY_REGISTERED_TO] = "registered_to",
    [NOTIFY_HOSTNAME] = "hostname",
    [NOTIFY_ENFORCE_DATE] = "enforce_date",
    [NOTIFY_DATE] = "date",
    [NOTIFY_HELP] = "help",
};

/* The built-in template. Keep it byte for byte equal to deploy/relay-notice.txt: the unit
 * test compares them. */
const char notify_default_template[] =
    "Hello,\n"
    "\n"
    "This is an automatic notice from the outgoing mail service {hostname}.\n"
    "\n"
    "What happened\n"
    "\n"
    "A message with the sender address {from}\n"
    "was sent through our outgoing mail service on {date},\n"
    "logged in as {login}, from the internet address {ip}\n"
    "(registered to: {registered_to}).\n"
    "\n"
    "We do not host the domain of that sender address for you. We delivered\n"
    "the message this time: you do not need to send it again.\n"
    "\n"
    "Why this is a problem\n"
    "\n"
    "Every mail domain publishes in the DNS (its SPF and DMARC records) which\n"
    "servers may send mail with its addresses. Our servers are not among them\n"
    "for that domain, so the receiving servers may refuse such mail or file it\n"
    "as spam. Mail like this also makes our servers look like a source of\n"
    "forged mail; when they get blocked, the mail of all our customers is held\n"
    "up, yours included.\n"
    "\n"
    "What to do\n"
    "\n"
    "- Send with an address at a domain that you host with us.\n"
    "- For an address at a domain hosted elsewhere, send through the outgoing\n"
    "  mail server of the provider that hosts that domain. The owner of the\n"
    "  domain can tell you the server's name and give you a login for it.\n"
    "- If you did not send this message, someone else knows your password.\n"
    "  Change it now, and check your computers and phones for malware.\n"
    "\n"
    "From {enforce_date} on, our servers will refuse such mail with the\n"
    "error \"553 5.7.1\".\n"
    "\n"
    "Questions? Contact {help} and quote this notice.\n";
const size_t notify_default_template_len = sizeof(notify_default_template) - 1;

/* The limits that rely on each other. */
_Static_assert(NOTIFY_VALUE_BYTES_MAX >= 64, "dates and addresses fit a value");
_Static_assert(NOTIFY_TEMPLATE_BYTES_MAX < NOTIFY_BODY_BYTES_MAX, "a template fits a body");

/* utf8_char - the length of the well-formed UTF-8 character at p (n bytes available) and
 * its code point in *cp; 0 when the bytes there are not one (RFC 3629 4: no overlong form,
 * no surrogate, nothing above U+10FFFF). p[0] >= 0x80. */
static size_t utf8_char(const unsigned char *p, size_t n, uint32_t *cp)
{
    uint32_t c = p[0], min;
    size_t len;

    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        c &= 0x1f;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        c &= 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        c &= 0x07;
        min = 0x10000;
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
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

/* unsafe_cp - a character that never goes into a notice as it is: C1 controls, and the bidi
 * embeddings, overrides and isolates that change the order text is shown in. */
static bool unsafe_cp(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0x9f) || (cp >= 0x202a && cp <= 0x202e) ||
           (cp >= 0x2066 && cp <= 0x2069);
}

/* safe_char - the character at p (n >= 1 bytes): its length in *len, and whether it may be
 * copied as it is (else it stands as one '?'). Tabs are allowed only when tab_ok. */
static bool safe_char(const unsigned char *p, size_t n, bool tab_ok, size_t *len)
{
    uint32_t cp;

    *len = 1;
    if (p[0] < 0x80)
        return (p[0] >= 0x20 && p[0] != 0x7f) || (tab_ok && p[0] == '\t');
    *len = utf8_char(p, n, &cp);
    if (*len == 0) {
        *len = 1;                     /* one '?' per byte of a broken sequence */
        return false;
    }
    return !unsafe_cp(cp);
}

/* notify_placeholder - see notify.h. */
size_t notify_placeholder(const char *text, size_t len, enum notify_field *field)
{
    size_t n = 1;

    while (n < len && n <= NOTIFY_NAME_BYTES_MAX + 1 &&
           ((text[n] >= 'a' && text[n] <= 'z') || (text[n] >= 'A' && text[n] <= 'Z') ||
            (text[n] >= '0' && text[n] <= '9') || text[n] == '_'))
        n++;
    if (n == 1 || n - 1 > NOTIFY_NAME_BYTES_MAX || n >= len || text[n] != '}')
        return 0;                     /* no name, too long a name, or no '}' after it */
    *field = NOTIFY_FIELD_COUNT;
    for (unsigned f = 0; f < NOTIFY_FIELD_COUNT; f++)
        if (strlen(notify_field_name[f]) == n - 1 &&
            memcmp(notify_field_name[f], text + 1, n - 1) == 0)
            *field = (enum notify_field)f;
    return n + 1;
}

/* report - one problem, formatted. */
static unsigned report(notify_problem_fn problem, void *arg, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static unsigned report(notify_problem_fn problem, void *arg, unsigned line, const char *fmt, ...)
{
    char msg[160];
    va_list ap;

    if (problem) {
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        problem(arg, line, msg);
    }
    return 1;
}

/* notify_body_bound - see notify.h. */
size_t notify_body_bound(size_t tmpl_len, size_t placeholders)
{
    size_t raw = 2 * tmpl_len + placeholders * NOTIFY_VALUE_BYTES_MAX;

    return raw + 2 * (raw / NOTIFY_LINE_BYTES_MAX) + 2;
}

/* notify_template_check - see notify.h. One report per kind of byte problem per line; every
 * unknown placeholder is reported. */
unsigned notify_template_check(const char *text, size_t len, notify_problem_fn problem,
                               void *arg)
{
    const unsigned char *p = (const unsigned char *)text;
    unsigned problems = 0, line = 1;
    size_t i = 0, line_start = 0, placeholders = 0;
    bool bad_byte = false, bad_utf8 = false;

    if (len == 0)
        return report(problem, arg, 1, "the notice template is empty");
    if (len > NOTIFY_TEMPLATE_BYTES_MAX)
        return report(problem, arg, 1, "the notice template is larger than %u bytes",
                      NOTIFY_TEMPLATE_BYTES_MAX);
    while (i <= len) {
        size_t k;
        enum notify_field f;
        if (i == len || p[i] == '\n') {
            size_t end = i;
            if (end > line_start && p[end - 1] == '\r')
                end--;
            if (end - line_start > NOTIFY_LINE_BYTES_MAX)
                problems += report(problem, arg, line, "line longer than %u bytes",
                                   NOTIFY_LINE_BYTES_MAX);
            if (i == len)
                break;
            i++;
            line++;
            line_start = i;
            bad_byte = bad_utf8 = false;
            continue;
        }
        if (p[i] == '\r' && i + 1 < len && p[i + 1] == '\n') {
            i++;
            continue;
        }
        if (p[i] == '{' && (k = notify_placeholder(text + i, len - i, &f))) {
            if (f == NOTIFY_FIELD_COUNT)
                problems += report(problem, arg, line, "unknown placeholder %.*s", (int)k,
                                   text + i);
            else
                placeholders++;
            i += k;
            continue;
        }
        if (!safe_char(p + i, len - i, true, &k)) {
            if (p[i] >= 0x80 && !bad_utf8) {
                bad_utf8 = true;
                problems += report(problem, arg, line, "invalid UTF-8 or a control character");
            } else if (p[i] < 0x80 && !bad_byte) {
                bad_byte = true;
                problems += report(problem, arg, line, "%s",
                                   p[i] == 0 ? "NUL byte" :
                                   p[i] == '\r' ? "CR without LF" : "control character");
            }
        }
        i += k;
    }
    if (notify_body_bound(len, placeholders) > NOTIFY_BODY_BYTES_MAX)
        problems += report(problem, arg, 1, "too many placeholders: the notice could pass %u "
                           "bytes", NOTIFY_BODY_BYTES_MAX);
    return problems;
}

/* notify_clean - see notify.h. */
size_t notify_clean(const char *v, char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)(v ? v : "");
    size_t n = strlen((const char *)p), i = 0, o = 0;

    while (i < n) {
        size_t k;
        bool ok = safe_char(p + i, n - i, false, &k);
        size_t need = ok ? k : 1;
        if (o + need > cap - 1) {
            /* Cut: back to a character boundary that leaves room for "...". Everything
             * written is whole characters, '?' standing in for the unsafe ones. */
            while (o > cap - 4) {
                o--;
                while (o > 0 && ((unsigned char)out[o] & 0xc0) == 0x80)
                    o--;
            }
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (ok)
            memcpy(out + o, p + i, k);
        else
            out[o] = '?';
        o += need;
        i += k;
    }
    out[o] = '\0';
    return o;
}

/* A growing output buffer and the length of its current line. */
struct obuf {
    char *p;
    size_t len, cap;
    size_t line;                  /* bytes since the last CRLF */
};

/* ob_put - append n bytes (no line end among them). */
static void ob_put(struct obuf *b, const void *s, size_t n)
{
    if (b->len + n + 3 > b->cap) {
        b->cap = (b->len + n + 3) * 2;
        b->p = rr_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->line += n;
}

/* ob_eol - end the line. */
static void ob_eol(struct obuf *b)
{
    ob_put(b, "\r\n", 2);
    b->line = 0;
}

/* ob_char - append one character of n bytes, breaking the line first when it would pass
 * NOTIFY_LINE_BYTES_MAX. */
static void ob_char(struct obuf *b, const void *s, size_t n)
{
    if (b->line + n > NOTIFY_LINE_BYTES_MAX)
        ob_eol(b);
    ob_put(b, s, n);
}

/* ob_text - append text whose characters are safe (a cleaned value), a character at a time. */
static void ob_text(struct obuf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0, k; i < n; i += k) {
        if (!safe_char(p + i, n - i, true, &k)) {
            ob_char(b, "?", 1);
            continue;
        }
        ob_char(b, p + i, k);
    }
}

/* notify_fill - see notify.h. */
char *notify_fill(const char *tmpl, size_t tmpl_len,
                  const char *const values[NOTIFY_FIELD_COUNT], size_t *len)
{
    const unsigned char *p = (const unsigned char *)tmpl;
    struct obuf b = { 0 };
    char clean[NOTIFY_FIELD_COUNT][NOTIFY_VALUE_BYTES_MAX];
    size_t clean_len[NOTIFY_FIELD_COUNT];
    size_t i = 0;

    for (unsigned f = 0; f < NOTIFY_FIELD_COUNT; f++)
        clean_len[f] = notify_clean(values ? values[f] : NULL, clean[f], sizeof(clean[f]));
    b.cap = tmpl_len + 256;
    b.p = rr_malloc(b.cap);
    while (i < tmpl_len) {
        size_t k;
        enum notify_field f;
        if (p[i] == '\n' || p[i] == '\r') {
            i += p[i] == '\r' && i + 1 < tmpl_len && p[i + 1] == '\n' ? 2 : 1;
            ob_eol(&b);
            continue;
        }
        if (p[i] == '{' && (k = notify_placeholder(tmpl + i, tmpl_len - i, &f)) &&
            f != NOTIFY_FIELD_COUNT) {
            ob_text(&b, clean[f], clean_len[f]);
            i += k;
            continue;
        }
        if (p[i] == '\0') {
            i++;                      /* dropped: a '?' for each would say nothing */
            continue;
        }
        if (safe_char(p + i, tmpl_len - i, true, &k))
            ob_char(&b, p + i, k);
        else
            ob_char(&b, "?", 1);
        i += k;
    }
    if (b.line)
        ob_eol(&b);
    b.p[b.len] = '\0';
    *len = b.len;
    return b.p;
}

static const char wday_name[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
static const char month_name[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* utc - t broken down in UTC; a time gmtime cannot take becomes the epoch. */
static void utc(int64_t t, struct tm *tm)
{
    time_t tt = (time_t)t;

    if (!gmtime_r(&tt, tm)) {
        tt = 0;
        gmtime_r(&tt, tm);
    }
}

/* notify_date - see notify.h. Names are written here, not by strftime: no locale. */
void notify_date(int64_t t, char *buf, size_t cap)
{
    struct tm tm;

    utc(t, &tm);
    snprintf(buf, cap, "%s, %02d %s %04d %02d:%02d:%02d +0000", wday_name[tm.tm_wday % 7],
             tm.tm_mday, month_name[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
}

/* notify_ymd - see notify.h. */
void notify_ymd(int64_t t, char *buf, size_t cap)
{
    struct tm tm;

    utc(t, &tm);
    snprintf(buf, cap, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

/* host_chars - s with only host name characters kept (letters, digits, '.', '-', '_'), at
 * most cap - 1 of them; "localhost" when none is left. */
static void host_chars(const char *s, char *out, size_t cap)
{
    size_t o = 0;

    for (; s && *s && o + 1 < cap; s++)
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
            *s == '.' || *s == '-' || *s == '_')
            out[o++] = *s;
    out[o] = '\0';
    if (!o)
        snprintf(out, cap, "localhost");
}

/* ip_chars - s with only the characters of a printed IPv4 or IPv6 address kept; "unknown"
 * when none is left. */
static void ip_chars(const char *s, char *out, size_t cap)
{
    size_t o = 0;

    for (; s && *s && o + 1 < cap; s++)
        if ((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') || (*s >= 'A' && *s <= 'F') ||
            *s == ':' || *s == '.')
            out[o++] = *s;
    out[o] = '\0';
    if (!o)
        snprintf(out, cap, "unknown");
}

/* notify_message - see notify.h. */
char *notify_message(const struct notify_head *h, const char *body, size_t body_len,
                     size_t *len, bool *eight_bit)
{
    char host[256], to[NOTIFY_VALUE_BYTES_MAX * 2], ip[64], id[128], date[64];
    bool high = false;
    size_t cap;
    char *m;
    int n;

    host_chars(h->hostname, host, sizeof(host));
    notify_clean(h->to, to, sizeof(to));
    ip_chars(h->ip, ip, sizeof(ip));
    host_chars(h->msgid, id, sizeof(id));
    notify_date(h->date_s, date, sizeof(date));
    for (size_t i = 0; to[i] && !high; i++)
        high = (unsigned char)to[i] & 0x80;
    for (size_t i = 0; i < body_len && !high; i++)
        high = (unsigned char)body[i] & 0x80;
    cap = 1024 + strlen(host) * 2 + strlen(to) + strlen(ip) + strlen(id) + body_len;
    m = rr_malloc(cap);
    n = snprintf(m, cap,
                 "Date: %s\r\n"
                 "From: postmaster@%s\r\n"
                 "To: %s\r\n"
                 "Subject: Notification of Relaying from %s\r\n"
                 "Message-ID: <%s@%s>\r\n"
                 "Auto-Submitted: auto-generated\r\n"
                 "MIME-Version: 1.0\r\n"
                 "Content-Type: text/plain; charset=%s\r\n"
                 "Content-Transfer-Encoding: %s\r\n"
                 "\r\n",
                 date, host, to, ip, id, host, high ? "utf-8" : "us-ascii",
                 high ? "8bit" : "7bit");
    memcpy(m + n, body, body_len);
    *len = (size_t)n + body_len;
    *eight_bit = high;
    return m;
}
