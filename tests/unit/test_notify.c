/*
 * test_notify.c - table-driven tests of the relaying notice's text (core/notify_text.c).
 *
 * Tables: placeholders (what starts one, which), template checks (every kind of problem and
 * its line, and what is fine), values (cleaning: control bytes, CR/LF, invalid and overlong
 * UTF-8, bidi overrides, cuts on character boundaries), filling (every placeholder, line
 * ends, unknown and malformed placeholders, injection attempts in every value, very long
 * values and lines), the message header (fields, order, charset, injection through the
 * recipient and the host name), dates. Every body and message made is also checked against
 * tests/unit/notify_check.h. The built-in template must equal deploy/relay-notice.txt (run
 * from the repository root, as tests/run.sh does) and pass its own check.
 */
#include "core/notify.h"
#include "tests/unit/check.h"
#include "tests/unit/notify_check.h"

#include <stdlib.h>
#include <string.h>

#define S(s) s, sizeof(s) - 1  /* text that may hold NUL, and its length */

/* ---- placeholders ---- */

struct ph_row {
    const char *in;
    size_t want_len;              /* 0: plain text */
    enum notify_field want_field;
};

static const struct ph_row ph_rows[] = {
    { "{ip}", 4, NOTIFY_IP },
    { "{from} and more", 6, NOTIFY_FROM },
    { "{login}", 7, NOTIFY_LOGIN },
    { "{registered_to}", 15, NOTIFY_REGISTERED_TO },
    { "{hostname}", 10, NOTIFY_HOSTNAME },
    { "{enforce_date}", 14, NOTIFY_ENFORCE_DATE },
    { "{date}", 6, NOTIFY_DATE },
    { "{foo}", 5, NOTIFY_FIELD_COUNT },
    { "{IP}", 4, NOTIFY_FIELD_COUNT },             /* case counts */
    { "{help}", 6, NOTIFY_HELP },
    { "{Help}", 6, NOTIFY_FIELD_COUNT },
    { "{a1_B}", 6, NOTIFY_FIELD_COUNT },
    { "{}", 0, 0 },
    { "{ ip}", 0, 0 },
    { "{ip }", 0, 0 },
    { "{ip", 0, 0 },
    { "{", 0, 0 },
    { "{{ip}}", 0, 0 },                            /* the first '{' is text */
    { "{ip-x}", 0, 0 },
    { "{abcdefghijabcdefghijabcdefghijab}", 34, NOTIFY_FIELD_COUNT }, /* 32: a name */
    { "{abcdefghijabcdefghijabcdefghijabc}", 0, 0 },                  /* 33: text */
};

static void test_placeholders(void)
{
    for (size_t i = 0; i < sizeof(ph_rows) / sizeof(ph_rows[0]); i++) {
        const struct ph_row *r = &ph_rows[i];
        enum notify_field f = (enum notify_field)99;
        size_t n = notify_placeholder(r->in, strlen(r->in), &f);
        CHECK(n == r->want_len, "%s: length %zu, want %zu", r->in, n, r->want_len);
        if (r->want_len)
            CHECK(f == r->want_field, "%s: field %d, want %d", r->in, f, r->want_field);
    }
    /* the length given is the limit: "{ip}" cut before its '}' is text */
    enum notify_field f;
    CHECK(notify_placeholder("{ip}", 3, &f) == 0, "cut placeholder");
}

/* ---- template checks ---- */

struct problems {
    unsigned count;
    unsigned line[8];
    char msg[8][160];
};

static void collect(void *arg, unsigned line, const char *msg)
{
    struct problems *p = arg;
    if (p->count < 8) {
        p->line[p->count] = line;
        snprintf(p->msg[p->count], sizeof(p->msg[0]), "%s", msg);
    }
    p->count++;
}

struct tc_row {
    const char *name;
    const char *text;
    size_t len;
    unsigned want;                /* problems */
    unsigned line;                /* line of the first */
    const char *says;             /* in the first message */
};

static const struct tc_row tc_rows[] = {
    { "plain", S("Hello {login}.\n"), 0, 0, NULL },
    { "every placeholder",
      S("{ip}{from}{login}{registered_to}{hostname}{enforce_date}{date}{help}\n"), 0, 0, NULL },
    { "CRLF lines", S("a {ip}\r\nb\r\n"), 0, 0, NULL },
    { "no final line end", S("a {ip}"), 0, 0, NULL },
    { "tab", S("a\t{ip}\n"), 0, 0, NULL },
    { "UTF-8", S("Gr\xc3\xbc\xc3\x9f" "e {login} \xe2\x82\xac \xf0\x9f\x93\xa7\n"), 0, 0, NULL },
    { "braces that are text", S("{ } {} {{ip}} {ip {-} }\n"), 0, 0, NULL },
    { "empty", S(""), 1, 1, "empty" },
    { "unknown", S("{foo}\n"), 1, 1, "unknown placeholder {foo}" },
    { "unknown on line 3", S("a\n{ip}\n{IP}\n"), 1, 3, "{IP}" },
    { "unknown after CRLF", S("a\r\nb {bogus}\r\n"), 1, 2, "{bogus}" },
    { "two unknown on a line", S("{a} {b}\n"), 2, 1, "{a}" },
    { "near misses", S("{helps} {hel}\n"), 2, 1, "{helps}" },
    { "NUL", S("a\0b\n"), 1, 1, "NUL" },
    { "bare CR", S("a\rb\n"), 1, 1, "CR" },
    { "control", S("x\n\x01\n"), 1, 2, "control" },
    { "DEL", S("\x7f\n"), 1, 1, "control" },
    { "escape", S("\x1b[31m\n"), 1, 1, "control" },
    { "invalid UTF-8", S("\xff\n"), 1, 1, "UTF-8" },
    { "overlong UTF-8", S("\xc0\xaf\n"), 1, 1, "UTF-8" },
    { "surrogate", S("\xed\xa0\x80\n"), 1, 1, "UTF-8" },
    { "cut UTF-8", S("\xe2\x82"), 1, 1, "UTF-8" },
    { "bidi override", S("a \xe2\x80\xae b\n"), 1, 1, "UTF-8" },
    { "C1 control", S("\xc2\x85\n"), 1, 1, "UTF-8" },
    { "one per kind per line", S("\x01\x02\xff\xfe\n"), 2, 1, "control" },
};

static void test_template_check(void)
{
    for (size_t i = 0; i < sizeof(tc_rows) / sizeof(tc_rows[0]); i++) {
        const struct tc_row *r = &tc_rows[i];
        struct problems p = { 0 };
        unsigned n = notify_template_check(r->text, r->len, collect, &p);
        CHECK(n == r->want && p.count == r->want, "%s: %u problems, want %u (first: %s)",
              r->name, n, r->want, p.count ? p.msg[0] : "-");
        if (r->want && p.count) {
            CHECK(p.line[0] == r->line, "%s: line %u, want %u", r->name, p.line[0], r->line);
            CHECK(strstr(p.msg[0], r->says) != NULL, "%s: message %s", r->name, p.msg[0]);
        }
        CHECK(notify_template_check(r->text, r->len, NULL, NULL) == r->want, "%s: no cb",
              r->name);
    }

    /* Sizes: a line of 998 bytes is fine, 999 is not; a template of the size limit is fine,
     * one byte more is not; too many placeholders for the body limit. */
    char *big = malloc(NOTIFY_TEMPLATE_BYTES_MAX + 2);
    struct problems p = { 0 };
    memset(big, 'x', NOTIFY_LINE_BYTES_MAX);
    big[NOTIFY_LINE_BYTES_MAX] = '\n';
    CHECK(notify_template_check(big, NOTIFY_LINE_BYTES_MAX + 1, NULL, NULL) == 0, "998 bytes");
    memset(big, 'x', NOTIFY_LINE_BYTES_MAX + 1);
    big[NOTIFY_LINE_BYTES_MAX + 1] = '\n';
    CHECK(notify_template_check(big, NOTIFY_LINE_BYTES_MAX + 2, collect, &p) == 1 &&
          strstr(p.msg[0], "line longer") != NULL, "999 bytes: %s", p.msg[0]);
    for (size_t i = 0; i < NOTIFY_TEMPLATE_BYTES_MAX + 1; i++)
        big[i] = i % 80 == 79 ? '\n' : 'x';
    CHECK(notify_template_check(big, NOTIFY_TEMPLATE_BYTES_MAX, NULL, NULL) == 0, "at the limit");
    memset(&p, 0, sizeof(p));
    CHECK(notify_template_check(big, NOTIFY_TEMPLATE_BYTES_MAX + 1, collect, &p) == 1 &&
          strstr(p.msg[0], "larger") != NULL, "over the limit: %s", p.msg[0]);
    size_t n = 0;
    for (unsigned i = 0; i < 1000; i++) {
        memcpy(big + n, i % 20 == 19 ? "{ip}\n" : "{ip}", i % 20 == 19 ? 5 : 4);
        n += i % 20 == 19 ? 5 : 4;
    }
    memset(&p, 0, sizeof(p));
    CHECK(notify_template_check(big, n, collect, &p) == 1 &&
          strstr(p.msg[0], "too many placeholders") != NULL, "1000 placeholders: %s", p.msg[0]);
    CHECK(notify_template_check(big, n / 2, NULL, NULL) == 0, "500 placeholders");
    free(big);

    /* The built-in template passes, and is deploy/relay-notice.txt byte for byte. */
    CHECK(notify_template_check(notify_default_template, notify_default_template_len, NULL,
                                NULL) == 0, "built-in template");
    FILE *f = fopen("deploy/relay-notice.txt", "rb");
    CHECK(f != NULL, "deploy/relay-notice.txt: run from the repository root");
    if (f) {
        char *file = malloc(NOTIFY_TEMPLATE_BYTES_MAX + 1);
        size_t got = fread(file, 1, NOTIFY_TEMPLATE_BYTES_MAX + 1, f);
        fclose(f);
        CHECK(got == notify_default_template_len &&
              memcmp(file, notify_default_template, got) == 0,
              "the built-in template differs from deploy/relay-notice.txt");
        free(file);
    }
    for (unsigned fld = 0; fld < NOTIFY_FIELD_COUNT; fld++) {
        char ph[48];
        snprintf(ph, sizeof(ph), "{%s}", notify_field_name[fld]);
        CHECK(strstr(notify_default_template, ph) != NULL, "built-in template lacks %s", ph);
    }
}

/* ---- values ---- */

struct clean_row {
    const char *name;
    const char *in;               /* NULL: "" */
    size_t cap;
    const char *want;
};

static const struct clean_row clean_rows[] = {
    { "plain", "user@example.com", 256, "user@example.com" },
    { "NULL", NULL, 256, "" },
    { "CRLF", "a\r\nBcc: x@example.net", 256, "a??Bcc: x@example.net" },
    { "LF", "a\nb", 256, "a?b" },
    { "tab", "a\tb", 256, "a?b" },
    { "escape", "\x1b[2J", 256, "?[2J" },
    { "DEL", "a\x7f", 256, "a?" },
    { "UTF-8 kept", "J\xc3\xb6rg", 256, "J\xc3\xb6rg" },
    { "invalid byte", "a\xff" "b", 256, "a?b" },
    { "overlong", "\xc0\xaf", 256, "??" },
    { "surrogate", "\xed\xa0\x80", 256, "???" },
    { "cut sequence", "a\xe2\x82", 256, "a??" },
    { "C1", "\xc2\x85x", 256, "?x" },
    { "RLO", "abc\xe2\x80\xaegpj.exe", 256, "abc?gpj.exe" },
    { "LRI", "\xe2\x81\xa6x", 256, "?x" },
    { "fits exactly", "abcdefg", 8, "abcdefg" },
    { "cut", "abcdefgh", 8, "abcd..." },
    { "cut before a 2-byte char", "abc\xc3\xb6xyz", 8, "abc..." },
    { "cut inside a 2-byte char", "abcd\xc3\xb6xyz", 8, "abcd..." },
    { "cut after a 2-byte char", "ab\xc3\xb6xyzw", 8, "ab\xc3\xb6..." },
    { "cut a 4-byte char", "a\xf0\x9f\x93\xa7\xf0\x9f\x93\xa7", 8, "a..." },
    { "4-byte char fits", "\xf0\x9f\x93\xa7\xf0\x9f\x93\xa7", 9,
      "\xf0\x9f\x93\xa7\xf0\x9f\x93\xa7" },
    { "smallest cap", "abcdef", 4, "..." },
};

static void test_clean(void)
{
    for (size_t i = 0; i < sizeof(clean_rows) / sizeof(clean_rows[0]); i++) {
        const struct clean_row *r = &clean_rows[i];
        char out[512];
        memset(out, 'Z', sizeof(out));
        size_t n = notify_clean(r->in, out, r->cap);
        CHECK(n == strlen(r->want) && strcmp(out, r->want) == 0, "%s: got \"%s\" want \"%s\"",
              r->name, out, r->want);
        CHECK(n < r->cap && out[r->cap] == 'Z', "%s: wrote past cap", r->name);
    }

    /* A very long value, of 2-byte characters: cut to fit, on a boundary, with "...". */
    size_t big = 10000;
    char *v = malloc(big * 2 + 1), out[NOTIFY_VALUE_BYTES_MAX];
    for (size_t i = 0; i < big; i++)
        memcpy(v + 2 * i, "\xc3\xa9", 2);
    v[big * 2] = '\0';
    size_t n = notify_clean(v, out, sizeof(out));
    CHECK(n < sizeof(out) && n >= sizeof(out) - 5, "long value: %zu bytes", n);
    CHECK(n >= 3 && memcmp(out + n - 3, "...", 3) == 0, "long value: no dots");
    for (size_t i = 0, k = 1; i < n && k; i += k) {
        uint32_t cp;
        k = nc_utf8((const unsigned char *)out + i, n - i, &cp);
        CHECK(k > 0, "long value: cut inside a character at %zu", i);
    }
    free(v);
}

/* ---- filling ---- */

/* The values of most rows. */
static const char *const base_values[NOTIFY_FIELD_COUNT] = {
    [NOTIFY_IP] = "192.0.2.7",
    [NOTIFY_FROM] = "someone@elsewhere.example",
    [NOTIFY_LOGIN] = "jdoe@customer.example",
    [NOTIFY_REGISTERED_TO] = "Example Cable Ltd",
    [NOTIFY_HOSTNAME] = "relay.isp.example",
    [NOTIFY_ENFORCE_DATE] = "2027-01-01",
    [NOTIFY_DATE] = "Tue, 02 Jun 2026 14:05:09 +0000",
    [NOTIFY_HELP] = "https://isp.example/help",
};

struct fill_row {
    const char *name;
    const char *tmpl;
    size_t len;
    int field;                    /* >= 0: this value replaced by value */
    const char *value;
    const char *want;             /* the whole body */
};

static const struct fill_row fill_rows[] = {
    { "every placeholder",
      S("{ip}|{from}|{login}|{registered_to}|{hostname}|{enforce_date}|{date}|{help}\n"), -1,
      NULL, "192.0.2.7|someone@elsewhere.example|jdoe@customer.example|Example Cable Ltd|"
      "relay.isp.example|2027-01-01|Tue, 02 Jun 2026 14:05:09 +0000|https://isp.example/help"
      "\r\n" },
    { "twice", S("{ip} {ip}\n"), -1, NULL, "192.0.2.7 192.0.2.7\r\n" },
    { "LF to CRLF", S("a\nb\n"), -1, NULL, "a\r\nb\r\n" },
    { "CRLF kept", S("a\r\nb\r\n"), -1, NULL, "a\r\nb\r\n" },
    { "empty lines", S("a\n\n\nb\n"), -1, NULL, "a\r\n\r\n\r\nb\r\n" },
    { "last line gets its CRLF", S("a\nb"), -1, NULL, "a\r\nb\r\n" },
    { "bare CR ends a line", S("a\rb\n"), -1, NULL, "a\r\nb\r\n" },
    { "unknown left as it is", S("{foo} {ip}\n"), -1, NULL, "{foo} 192.0.2.7\r\n" },
    { "braces that are text", S("{{ip}} { } {}\n"), -1, NULL, "{192.0.2.7} { } {}\r\n" },
    { "NUL in the template dropped", S("a\0b\n"), -1, NULL, "ab\r\n" },
    { "control in the template", S("a\x01" "b\n"), -1, NULL, "a?b\r\n" },
    { "tab in the template kept", S("a\tb\n"), -1, NULL, "a\tb\r\n" },
    { "invalid UTF-8 in the template", S("a\xff\n"), -1, NULL, "a?\r\n" },
    { "empty template", S(""), -1, NULL, "" },
    { "CRLF in the login", S("login: {login}\n"), NOTIFY_LOGIN,
      "x\r\n\r\nBcc: victim@example.net", "login: x????Bcc: victim@example.net\r\n" },
    { "LF in the sender", S("{from}\n"), NOTIFY_FROM, "a@b\nSubject: free money",
      "a@b?Subject: free money\r\n" },
    { "NUL ends a C string value", S("[{login}]\n"), NOTIFY_LOGIN, "ab\0cd", "[ab]\r\n" },
    { "CR in registered_to", S("{registered_to}\n"), NOTIFY_REGISTERED_TO, "Evil\rCorp",
      "Evil?Corp\r\n" },
    { "bidi in the sender", S("{from}\n"), NOTIFY_FROM, "\xe2\x80\xae" "moc.knab@a",
      "?moc.knab@a\r\n" },
    { "UTF-8 value kept", S("{login}\n"), NOTIFY_LOGIN, "j\xc3\xb6rg@example.de",
      "j\xc3\xb6rg@example.de\r\n" },
    { "invalid UTF-8 value", S("{login}\n"), NOTIFY_LOGIN, "a\xc3(", "a?(\r\n" },
    { "placeholder text in a value stays text", S("{login}\n"), NOTIFY_LOGIN, "{ip}",
      "{ip}\r\n" },
    { "empty value", S("[{registered_to}]\n"), NOTIFY_REGISTERED_TO, "", "[]\r\n" },
};

static void test_fill(void)
{
    for (size_t i = 0; i < sizeof(fill_rows) / sizeof(fill_rows[0]); i++) {
        const struct fill_row *r = &fill_rows[i];
        const char *values[NOTIFY_FIELD_COUNT];
        size_t len;
        memcpy(values, base_values, sizeof(values));
        if (r->field >= 0)
            values[r->field] = r->value;
        char *b = notify_fill(r->tmpl, r->len, values, &len);
        CHECK(len == strlen(r->want) && memcmp(b, r->want, len) == 0,
              "%s: got \"%.*s\"", r->name, (int)len, b);
        const char *why = notify_body_check(b, len);
        CHECK(why == NULL, "%s: %s", r->name, why);
        free(b);
    }

    /* NULL values read as "". */
    size_t len;
    char *b = notify_fill(S("[{ip}]\n"), NULL, &len);
    CHECK(len == 4 && memcmp(b, "[]\r\n", 4) == 0, "NULL values");
    free(b);

    /* Very long values: cut to NOTIFY_VALUE_BYTES_MAX - 1 with "...". */
    char *huge = malloc(100001);
    memset(huge, 'a', 100000);
    huge[100000] = '\0';
    const char *values[NOTIFY_FIELD_COUNT];
    for (unsigned f = 0; f < NOTIFY_FIELD_COUNT; f++)
        values[f] = huge;
    b = notify_fill(S("{login}\n"), values, &len);
    CHECK(len == NOTIFY_VALUE_BYTES_MAX - 1 + 2 && memcmp(b + len - 5, "...\r\n", 5) == 0,
          "long login: %zu bytes", len);
    free(b);

    /* A line of many long values is broken before NOTIFY_LINE_BYTES_MAX, and every value
     * arrives whole (only the breaks are added). */
    char tmpl[256] = "";
    for (unsigned f = 0; f < 10; f++)
        strcat(tmpl, "{from}");
    strcat(tmpl, "\n");
    b = notify_fill(tmpl, strlen(tmpl), values, &len);
    const char *why = notify_body_check(b, len);
    CHECK(why == NULL, "long line: %s", why);
    size_t solid = 0;
    for (size_t i = 0; i < len; i++)
        solid += b[i] != '\r' && b[i] != '\n';
    CHECK(solid == 10 * (NOTIFY_VALUE_BYTES_MAX - 1), "long line: %zu bytes of text", solid);
    CHECK(len <= notify_body_bound(strlen(tmpl), 10), "long line: over the bound");
    free(b);

    /* A break never splits a UTF-8 character. */
    for (size_t i = 0; i < 100000 / 3; i++)
        memcpy(huge + 3 * i, "\xe2\x82\xac", 3);
    huge[100000 / 3 * 3] = '\0';
    for (unsigned f = 0; f < NOTIFY_FIELD_COUNT; f++)
        values[f] = huge;
    for (unsigned pad = 0; pad < 3; pad++) {
        char t[300] = "";
        memset(t, 'p', pad);
        t[pad] = '\0';
        for (unsigned f = 0; f < 8; f++)
            strcat(t, "{login}");
        b = notify_fill(t, strlen(t), values, &len);
        why = notify_body_check(b, len);
        CHECK(why == NULL, "UTF-8 line break, pad %u: %s", pad, why);
        free(b);
    }
    free(huge);

    /* The built-in template, filled: every placeholder gone, a good body. */
    b = notify_fill(notify_default_template, notify_default_template_len, base_values, &len);
    why = notify_body_check(b, len);
    CHECK(why == NULL, "built-in template: %s", why);
    CHECK(memchr(b, '{', len) == NULL, "built-in template: a '{' is left");
    CHECK(memmem(b, len, "192.0.2.7", 9) && memmem(b, len, "jdoe@customer.example", 21) &&
          memmem(b, len, "Example Cable Ltd", 17) && memmem(b, len, "2027-01-01", 10),
          "built-in template: values missing");
    free(b);
}

/* ---- the message ---- */

struct msg_row {
    const char *name;
    struct notify_head h;
    const char *body;
    const char *want_head;        /* the whole header, empty line included */
    bool eight_bit;
};

#define HEAD_TAIL(cs, cte) "Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n" \
    "Content-Type: text/plain; charset=" cs "\r\nContent-Transfer-Encoding: " cte "\r\n\r\n"

static const struct msg_row msg_rows[] = {
    { "plain", { "relay.isp.example", "jdoe@customer.example", "192.0.2.7", 1780409109,
                 "0123456789ABCDEF.notice" }, "Hello.\r\n",
      "Date: Tue, 02 Jun 2026 14:05:09 +0000\r\n"
      "From: postmaster@relay.isp.example\r\n"
      "To: jdoe@customer.example\r\n"
      "Subject: Notification of Relaying from 192.0.2.7\r\n"
      "Message-ID: <0123456789ABCDEF.notice@relay.isp.example>\r\n"
      HEAD_TAIL("us-ascii", "7bit"), false },
    { "IPv6", { "r.example", "a@b.example", "2001:db8::1", 0, "X" }, "x\r\n",
      "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"
      "From: postmaster@r.example\r\n"
      "To: a@b.example\r\n"
      "Subject: Notification of Relaying from 2001:db8::1\r\n"
      "Message-ID: <X@r.example>\r\n"
      HEAD_TAIL("us-ascii", "7bit"), false },
    { "8-bit body", { "r.example", "a@b.example", "192.0.2.1", 0, "X" },
      "Gr\xc3\xbc\xc3\x9f" "e\r\n",
      "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"
      "From: postmaster@r.example\r\n"
      "To: a@b.example\r\n"
      "Subject: Notification of Relaying from 192.0.2.1\r\n"
      "Message-ID: <X@r.example>\r\n"
      HEAD_TAIL("utf-8", "8bit"), true },
    { "UTF-8 recipient", { "r.example", "j\xc3\xb6rg@b.example", "192.0.2.1", 0, "X" }, "x\r\n",
      "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"
      "From: postmaster@r.example\r\n"
      "To: j\xc3\xb6rg@b.example\r\n"
      "Subject: Notification of Relaying from 192.0.2.1\r\n"
      "Message-ID: <X@r.example>\r\n"
      HEAD_TAIL("utf-8", "8bit"), true },
    { "injection through the recipient",
      { "r.example", "a@b.example\r\nBcc: all@example.net", "192.0.2.1", 0, "X" }, "x\r\n",
      "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"
      "From: postmaster@r.example\r\n"
      "To: a@b.example??Bcc: all@example.net\r\n"
      "Subject: Notification of Relaying from 192.0.2.1\r\n"
      "Message-ID: <X@r.example>\r\n"
      HEAD_TAIL("us-ascii", "7bit"), false },
    { "injection through the host name and ip",
      { "r.example\r\nX-Evil: 1", "a@b.example", "1.2.3.4\r\nX-Evil: 2", 0, "X>\r\nY" }, "x\r\n",
      "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"
      "From: postmaster@r.exampleX-Evil1\r\n"
      "To: a@b.example\r\n"
      "Subject: Notification of Relaying from 1.2.3.4E:2\r\n"
      "Message-ID: <XY@r.exampleX-Evil1>\r\n"
      HEAD_TAIL("us-ascii", "7bit"), false },
    { "nothing given", { NULL, NULL, NULL, 0, NULL }, "",
      "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"
      "From: postmaster@localhost\r\n"
      "To: \r\n"
      "Subject: Notification of Relaying from unknown\r\n"
      "Message-ID: <localhost@localhost>\r\n"
      HEAD_TAIL("us-ascii", "7bit"), false },
};

static void test_message(void)
{
    for (size_t i = 0; i < sizeof(msg_rows) / sizeof(msg_rows[0]); i++) {
        const struct msg_row *r = &msg_rows[i];
        size_t len, hl = strlen(r->want_head), bl = strlen(r->body), body_len;
        bool eight = !r->eight_bit;
        const char *body;
        char *m = notify_message(&r->h, r->body, bl, &len, &eight);
        CHECK(len == hl + bl && memcmp(m, r->want_head, hl) == 0 &&
              memcmp(m + hl, r->body, bl) == 0, "%s: got\n%.*s", r->name, (int)len, m);
        CHECK(eight == r->eight_bit, "%s: eight_bit %d", r->name, eight);
        const char *why = notify_message_check(m, len, eight, &body, &body_len);
        CHECK(why == NULL || (!r->h.to && strstr(why, "header")), "%s: %s", r->name, why);
        free(m);
    }
}

/* ---- dates ---- */

struct date_row {
    int64_t t;
    const char *rfc5322;
    const char *ymd;
};

static const struct date_row date_rows[] = {
    { 0, "Thu, 01 Jan 1970 00:00:00 +0000", "1970-01-01" },
    { 1388534400, "Wed, 01 Jan 2014 00:00:00 +0000", "2014-01-01" },
    { 1700000000, "Tue, 14 Nov 2023 22:13:20 +0000", "2023-11-14" },
    { 1709208000, "Thu, 29 Feb 2024 12:00:00 +0000", "2024-02-29" },
    { 4102444799, "Thu, 31 Dec 2099 23:59:59 +0000", "2099-12-31" },
};

static void test_dates(void)
{
    for (size_t i = 0; i < sizeof(date_rows) / sizeof(date_rows[0]); i++) {
        char buf[64];
        notify_date(date_rows[i].t, buf, sizeof(buf));
        CHECK(strcmp(buf, date_rows[i].rfc5322) == 0, "%lld: %s", (long long)date_rows[i].t, buf);
        notify_ymd(date_rows[i].t, buf, sizeof(buf));
        CHECK(strcmp(buf, date_rows[i].ymd) == 0, "%lld: %s", (long long)date_rows[i].t, buf);
    }
}

int main(void)
{
    test_placeholders();
    test_template_check();
    test_clean();
    test_fill();
    test_message();
    test_dates();
    return check_done("test_notify");
}
