/*
 * fuzz_notify_template.c - libFuzzer target for the relaying notice's text (core/notify_text.c):
 * the template checker, the filler, value cleaning and the message around the body.
 *
 * Input layout (missing bytes read as 0):
 *   byte 0      flags: 1 use fixed, well-behaved values instead of the input's; bits 1-7: the
 *               cap given to notify_clean() is 4 + this
 *   then        eight values in notify_field order, each one length byte and that many bytes
 *               (a NUL inside one ends it early, as in a C string)
 *   the rest    the template (may hold anything)
 *
 * Invariants, for every input:
 *   - notify_template_check() reports exactly as many problems as it returns, each on a line
 *     that exists;
 *   - notify_fill() gives a body that passes notify_body_check() (tests/unit/notify_check.h:
 *     CRLF line ends only, no NUL, no control but tab, valid UTF-8, no bidi control, lines
 *     of at most 998 octets), the same bytes twice, and no more than notify_body_bound();
 *   - for a template that passes the check: the body is, but for added line breaks, what a
 *     plain reference filler makes of it; with the fixed values no placeholder of ours is
 *     left in it;
 *   - notify_clean() of every value stays below its cap and passes the same character rules;
 *     a value that is short and clean comes back unchanged;
 *   - notify_message() with the input's values in the header passes notify_message_check():
 *     nine header fields in order, one line each, then the body.
 */
#include "core/notify.h"
#include "tests/unit/notify_check.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* fail - report a broken invariant and stop. */
static void fail(const char *what, const char *m, size_t len)
{
    fprintf(stderr, "fuzz_notify_template: %s\n", what);
    if (m)
        fprintf(stderr, "----\n%.*s\n----\n", (int)(len > 4000 ? 4000 : len), m);
    abort();
}

/* The input, read front to back. */
struct reader {
    const uint8_t *p;
    size_t left;
};

/* byte - the next byte, 0 at the end. */
static uint8_t byte(struct reader *r)
{
    if (!r->left)
        return 0;
    r->left--;
    return *r->p++;
}

/* take - n bytes (fewer at the end) as a fresh C string. */
static char *take(struct reader *r, size_t n)
{
    if (n > r->left)
        n = r->left;
    char *s = malloc(n + 1);
    memcpy(s, r->p, n);
    s[n] = '\0';
    r->p += n;
    r->left -= n;
    return s;
}

/* The problems a check reported. */
struct seen {
    unsigned count;
    unsigned max_line;
};

static void count_problem(void *arg, unsigned line, const char *msg)
{
    struct seen *s = arg;
    s->count++;
    if (line > s->max_line)
        s->max_line = line;
    if (!msg || !msg[0])
        fail("a problem without a message", NULL, 0);
}

/* ref_field - the plain way: is t[0..len) at '{' one of our placeholders? Its length and
 * field, or 0. */
static size_t ref_field(const char *t, size_t len, unsigned *field)
{
    for (unsigned f = 0; f < NOTIFY_FIELD_COUNT; f++) {
        char ph[48];
        size_t n = (size_t)snprintf(ph, sizeof(ph), "{%s}", notify_field_name[f]);
        if (n <= len && memcmp(t, ph, n) == 0) {
            *field = f;
            return n;
        }
    }
    return 0;
}

/* ref_fill - a checked template filled the plain way, without line breaks; its length. */
static size_t ref_fill(const char *t, size_t len, char clean[][NOTIFY_VALUE_BYTES_MAX], char *out)
{
    size_t o = 0, line = 0;

    for (size_t i = 0; i < len;) {
        unsigned f;
        size_t n;
        if (t[i] == '\r' && i + 1 < len && t[i + 1] == '\n') {
            i++;
            continue;
        }
        if (t[i] == '\n') {
            memcpy(out + o, "\r\n", 2);
            o += 2;
            line = 0;
            i++;
            continue;
        }
        if (t[i] == '{' && (n = ref_field(t + i, len - i, &f))) {
            size_t vl = strlen(clean[f]);
            memcpy(out + o, clean[f], vl);
            o += vl;
            line += vl;
            i += n;
            continue;
        }
        out[o++] = t[i++];
        line++;
    }
    if (line) {
        memcpy(out + o, "\r\n", 2);
        o += 2;
    }
    return o;
}

/* without_eol - b with CR and LF removed, into out; its length. */
static size_t without_eol(const char *b, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++)
        if (b[i] != '\r' && b[i] != '\n')
            out[o++] = b[i];
    return o;
}

/* known_count - our placeholders in t, as notify_fill() would see them. */
static size_t known_count(const char *t, size_t len)
{
    size_t count = 0;
    for (size_t i = 0; i < len;) {
        enum notify_field f;
        size_t n = t[i] == '{' ? notify_placeholder(t + i, len - i, &f) : 0;
        if (n && f != NOTIFY_FIELD_COUNT) {
            count++;
            i += n;
        } else {
            i++;
        }
    }
    return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const fixed[NOTIFY_FIELD_COUNT] = {
        "192.0.2.1", "a.b@c.example", "x y@z.example", "Example, Inc.", "relay.example",
        "2027-01-01", "Tue, 02 Jun 2026 14:05:09 +0000", "https://isp.example/help",
    };
    struct reader r = { data, size };
    uint8_t flags = byte(&r);
    char *owned[NOTIFY_FIELD_COUNT];
    const char *values[NOTIFY_FIELD_COUNT];
    size_t cap = 4 + (flags >> 1);

    for (unsigned f = 0; f < NOTIFY_FIELD_COUNT; f++) {
        owned[f] = take(&r, byte(&r));
        values[f] = flags & 1 ? fixed[f] : owned[f];
    }
    const char *tmpl = (const char *)r.p;
    size_t tmpl_len = r.left;

    /* notify_clean */
    for (unsigned f = 0; f < NOTIFY_FIELD_COUNT; f++) {
        char out[4 + 128 + 1];
        memset(out, 'Z', sizeof(out));
        size_t n = notify_clean(owned[f], out, cap);
        if (n >= cap || out[n] != '\0' || strlen(out) != n ||
            (cap < sizeof(out) && out[cap] != 'Z'))
            fail("notify_clean passed its cap", out, n);
        char line[4 + 128 + 3];
        memcpy(line, out, n);
        memcpy(line + n, "\r\n", 2);
        const char *why = notify_body_check(line, n + 2);
        if (why)
            fail(why, out, n);
        bool clean = strlen(owned[f]) < cap;
        for (size_t i = 0; owned[f][i] && clean; i++)
            clean = (unsigned char)owned[f][i] >= 0x20 && (unsigned char)owned[f][i] < 0x7f;
        if (clean && strcmp(out, owned[f]) != 0)
            fail("a clean value was changed", out, n);
    }

    /* notify_template_check */
    struct seen s = { 0 };
    unsigned problems = notify_template_check(tmpl, tmpl_len, count_problem, &s);
    size_t lines = 1;
    for (size_t i = 0; i < tmpl_len; i++)
        lines += tmpl[i] == '\n';
    if (problems != s.count)
        fail("problem count differs from the reports", NULL, 0);
    if (s.max_line > lines)
        fail("a problem on a line that does not exist", NULL, 0);

    /* notify_fill */
    size_t len, len2;
    char *b = notify_fill(tmpl, tmpl_len, values, &len);
    char *b2 = notify_fill(tmpl, tmpl_len, values, &len2);
    const char *why = notify_body_check(b, len);
    if (why)
        fail(why, b, len);
    if (len != len2 || memcmp(b, b2, len) != 0)
        fail("two fills of one input differ", b, len);
    free(b2);
    if (len > notify_body_bound(tmpl_len, known_count(tmpl, tmpl_len)))
        fail("the body is over its bound", b, len);

    if (problems == 0) {
        char clean[NOTIFY_FIELD_COUNT][NOTIFY_VALUE_BYTES_MAX];
        for (unsigned f = 0; f < NOTIFY_FIELD_COUNT; f++)
            notify_clean(values[f], clean[f], sizeof(clean[f]));
        char *ref = malloc(notify_body_bound(tmpl_len, known_count(tmpl, tmpl_len)) + 1);
        char *a = malloc(len + 1), *c;
        size_t rl = ref_fill(tmpl, tmpl_len, clean, ref);
        c = malloc(rl + 1);
        size_t al = without_eol(b, len, a), cl = without_eol(ref, rl, c);
        if (al != cl || memcmp(a, c, al) != 0)
            fail("the body is not the reference fill", b, len);
        if (!notify_body_check(ref, rl) && (len != rl || memcmp(b, ref, len) != 0))
            fail("a body without long lines differs from the reference", b, len);
        if (flags & 1)
            for (unsigned f = 0; f < NOTIFY_FIELD_COUNT; f++) {
                char ph[48];
                size_t n = (size_t)snprintf(ph, sizeof(ph), "{%s}", notify_field_name[f]);
                if (memmem(b, len, ph, n))
                    fail("a placeholder is left", b, len);
            }
        free(ref);
        free(a);
        free(c);
    }

    /* notify_message */
    struct notify_head h = {
        .hostname = values[NOTIFY_HOSTNAME], .to = values[NOTIFY_LOGIN], .ip = values[NOTIFY_IP],
        .date_s = (int64_t)(flags * 86400003ll), .msgid = values[NOTIFY_FROM],
    };
    size_t ml, body_len;
    bool eight_bit;
    const char *body;
    char *m = notify_message(&h, b, len, &ml, &eight_bit);
    why = notify_message_check(m, ml, eight_bit, &body, &body_len);
    if (why)
        fail(why, m, ml);
    if (body_len != len || memcmp(body, b, len) != 0)
        fail("the message's body is not the body", m, ml);
    free(m);
    free(b);
    for (unsigned f = 0; f < NOTIFY_FIELD_COUNT; f++)
        free(owned[f]);
    return 0;
}
