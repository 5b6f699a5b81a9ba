/*
 * fuzz_sasl.c - libFuzzer target for the SASL decoder (net/sasl.c).
 *
 * Input: byte 0 picks the mechanism (bits 0-1: unknown, PLAIN, LOGIN, PLAIN) and whether
 * the AUTH command carries an initial response (bit 2); the rest is split at LF into lines.
 * With an initial response the first line is it. Lines go to sasl_step() while the exchange
 * needs more; when it ends and lines are left, a new exchange starts the same way. Checked:
 *   - every status is in range; NEED_MORE gives the challenge of the mechanism's state ("",
 *     "Username:", "Password:" in base64); any end clears the challenge; any end but DONE
 *     leaves the credentials all zero and has a reply line;
 *   - DONE gives NUL-terminated credentials of 1..255 bytes without NUL, and they are exactly
 *     what was sent: encoding "\0user\0pass" or "user\0user\0pass" gives the PLAIN line, the
 *     user and password encode to the two LOGIN lines (base64 is canonical, so equal text);
 *   - a PLAIN response that decodes within the message limit ends as sasl_plain_parse() of
 *     its bytes says;
 * and on the whole input (byte 0 included) as base64 text and as data:
 *   - decode(encode(x)) == x, and encode(decode(s)) == s whenever s decodes;
 *   - a cap one byte short gives TOO_LONG, never a write past the cap (ASan).
 */
#include "net/sasl.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USER_PROMPT "VXNlcm5hbWU6"
#define PASS_PROMPT "UGFzc3dvcmQ6"

/* fail - report a broken invariant and stop. */
static void fail(const char *what)
{
    fprintf(stderr, "fuzz_sasl: %s\n", what);
    abort();
}

/* same_b64 - whether base64 of raw[0..n) is exactly text[0..len). */
static bool same_b64(const unsigned char *raw, size_t n, const char *text, size_t len)
{
    static char enc[SASL_B64_ENCODED_BYTES(2 * SASL_PLAIN_BYTES_MAX) + 1];
    size_t got = 0;
    if (sasl_b64_encode(raw, n, enc, sizeof enc, &got) != SASL_B64_OK)
        fail("encode of credentials failed");
    return got == len && memcmp(enc, text, len) == 0;
}

/* check_done - DONE credentials are those sent (see the contract above). */
static void check_done(const struct sasl_exchange *ex, const char *user_line, size_t user_len,
                       const char *last, size_t last_len)
{
    static unsigned char msg[2 * SASL_PLAIN_BYTES_MAX];
    const struct sasl_creds *c = &ex->creds;
    size_t n;

    if (c->user_len < 1 || c->user_len > SASL_USER_BYTES_MAX || c->pass_len < 1 ||
        c->pass_len > SASL_PASS_BYTES_MAX)
        fail("credential length out of range");
    if (strlen(c->user) != c->user_len || strlen(c->pass) != c->pass_len)
        fail("credentials not NUL terminated at their length, or NUL inside");
    if (ex->mech == SASL_MECH_PLAIN) {
        n = 0;
        msg[n++] = '\0';
        memcpy(msg + n, c->user, c->user_len);
        n += c->user_len;
        msg[n++] = '\0';
        memcpy(msg + n, c->pass, c->pass_len);
        n += c->pass_len;
        if (same_b64(msg, n, last, last_len))
            return;
        memmove(msg + c->user_len, msg, n);
        memcpy(msg, c->user, c->user_len);
        if (!same_b64(msg, n + c->user_len, last, last_len))
            fail("PLAIN credentials differ from the message sent");
    } else {
        if (!user_line || !same_b64((const unsigned char *)c->user, c->user_len, user_line,
                                    user_len) ||
            !same_b64((const unsigned char *)c->pass, c->pass_len, last, last_len))
            fail("LOGIN credentials differ from the lines sent");
    }
}

/* check_plain_agrees - a PLAIN response decoding within the limit ends as
 * sasl_plain_parse() says. */
static void check_plain_agrees(const char *line, size_t len, bool initial, enum sasl_status st)
{
    static unsigned char msg[SASL_PLAIN_BYTES_MAX];
    struct sasl_creds c;
    size_t n = 0;

    if (initial && len == 1 && line[0] == '=')
        len = 0;
    else if (initial && len == 0)
        return;                   /* bad base64 by rule, not by decoding */
    if (!initial && len == 1 && line[0] == '*')
        return;
    if (len > SASL_LINE_BYTES_MAX ||
        sasl_b64_decode(line, len, msg, sizeof msg, &n) != SASL_B64_OK)
        return;
    if (sasl_plain_parse(msg, n, &c) != st)
        fail("PLAIN exchange and sasl_plain_parse() disagree");
    sasl_creds_wipe(&c);
}

/* check_status - the invariants of one status of an exchange of mech. */
static void check_status(const struct sasl_exchange *ex, enum sasl_status st, bool login_user)
{
    static const struct sasl_creds zero;

    if ((unsigned)st >= SASL_STATUS_COUNT)
        fail("status out of range");
    if (st == SASL_NEED_MORE) {
        const char *want = ex->mech == SASL_MECH_PLAIN ? "" :
                           login_user ? USER_PROMPT : PASS_PROMPT;
        if (!ex->challenge || strcmp(ex->challenge, want) != 0)
            fail("wrong challenge");
        return;
    }
    if (ex->challenge)
        fail("challenge left after the end");
    if (st != SASL_DONE) {
        const char *reply = sasl_status_reply(st);
        if (memcmp(&ex->creds, &zero, sizeof zero) != 0)
            fail("credentials not wiped");
        if (!reply || strlen(reply) < 10 || reply[3] != ' ')
            fail("no reply line for an end status");
    }
    if (ex->mech == SASL_MECH_UNKNOWN && st != SASL_BAD_MECH)
        fail("unknown mechanism ran");
}

/* round_trip - the base64 invariants on data[0..size). */
static void round_trip(const uint8_t *data, size_t size)
{
    static char text[SASL_B64_ENCODED_BYTES(1 << 16) + 1];
    static unsigned char raw[1 << 16];
    size_t tn = 0, n = 0;

    if (size > sizeof raw)
        return;
    if (sasl_b64_encode(data, size, text, sizeof text, &tn) != SASL_B64_OK ||
        tn != SASL_B64_ENCODED_BYTES(size))
        fail("encode failed");
    if (sasl_b64_decode(text, tn, raw, size, &n) != SASL_B64_OK || n != size ||
        memcmp(raw, data, size) != 0)
        fail("decode(encode(x)) != x");
    if (size > 0 && sasl_b64_decode(text, tn, raw, size - 1, &n) != SASL_B64_TOO_LONG)
        fail("cap one short not TOO_LONG");

    /* The input as base64 text: exactly its length's bytes when it decodes, and canonical.
       The decode goes into a heap buffer of exactly the cap, so ASan sees any overrun. */
    size_t cap = size / 4 * 3;
    unsigned char *out = malloc(cap ? cap : 1);
    int err = sasl_b64_decode((const char *)data, size, out, cap, &n);
    if (err == SASL_B64_OK) {
        if (sasl_b64_encode(out, n, text, sizeof text, &tn) != SASL_B64_OK || tn != size ||
            memcmp(text, data, size) != 0)
            fail("encode(decode(s)) != s");
        if (n > 0) {
            free(out);
            out = malloc(n - 1 ? n - 1 : 1);
            if (sasl_b64_decode((const char *)data, size, out, n - 1, &n) != SASL_B64_TOO_LONG)
                fail("decode into a cap one short not TOO_LONG");
        }
    } else if (n != 0) {
        fail("out_len not 0 on error");
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum sasl_mech mechs[4] = {
        SASL_MECH_UNKNOWN, SASL_MECH_PLAIN, SASL_MECH_LOGIN, SASL_MECH_PLAIN,
    };
    struct sasl_exchange ex;

    round_trip(data, size);
    if (size < 1)
        return 0;
    enum sasl_mech mech = mechs[data[0] & 3];
    bool with_initial = data[0] & 4;
    const char *p = (const char *)data + 1, *end = (const char *)data + size;

    /* Exchanges back to back until the lines run out. */
    do {
        const char *user_line = NULL;
        size_t user_len = 0;
        const char *line = NULL;
        size_t len = 0;
        bool initial = with_initial;
        enum sasl_status st;

        if (initial) {
            const char *lf = memchr(p, '\n', (size_t)(end - p));
            line = p;
            len = (size_t)((lf ? lf : end) - p);
            p = lf ? lf + 1 : end;
            st = sasl_start(&ex, mech, line, len);
        } else {
            st = sasl_start(&ex, mech, NULL, 0);
        }
        bool login_user = mech == SASL_MECH_LOGIN && !initial;
        if (mech == SASL_MECH_LOGIN && initial && st == SASL_NEED_MORE) {
            user_line = line;
            user_len = len;
        }
        if (mech == SASL_MECH_PLAIN && initial)
            check_plain_agrees(line, len, true, st);
        check_status(&ex, st, login_user);

        while (st == SASL_NEED_MORE && p < end) {
            const char *lf = memchr(p, '\n', (size_t)(end - p));
            line = p;
            len = (size_t)((lf ? lf : end) - p);
            p = lf ? lf + 1 : end;
            st = sasl_step(&ex, line, len);
            if (mech == SASL_MECH_PLAIN)
                check_plain_agrees(line, len, false, st);
            if (login_user && st == SASL_NEED_MORE) {
                user_line = line;
                user_len = len;
                login_user = false;
            }
            check_status(&ex, st, login_user);
        }
        if (st == SASL_DONE)
            check_done(&ex, user_line, user_len, line, len);
        sasl_exchange_wipe(&ex);
    } while (p < end && mech != SASL_MECH_UNKNOWN);   /* BAD_MECH consumes no line */
    return 0;
}
