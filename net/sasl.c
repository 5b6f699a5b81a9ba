/*
 * sasl.c - the server side's SASL decoder for SMTP AUTH: strict base64, PLAIN, LOGIN, and the
 * state machine of one exchange. Pure: no allocation, no I/O, no global state.
 *
 * FUNCTIONS
 *   sasl_b64_decode()     strict RFC 4648 base64 into a bounded buffer.
 *   sasl_b64_encode()     base64 with padding (the 334 challenges, tests).
 *   sasl_mech_parse()     the mechanism named after AUTH.
 *   sasl_plain_parse()    an RFC 4616 message into credentials.
 *   sasl_creds_wipe()     clear credentials.
 *   sasl_start()          begin an exchange, with or without an initial response.
 *   sasl_step()           the client's response to a 334 challenge.
 *   sasl_exchange_wipe()  end an exchange.
 *   sasl_status_reply()   the SMTP reply for an end status.
 *   sasl_status_name()    a short name for logs and counters.
 *
 * THE EXCHANGE
 *   PLAIN with an initial response:    AUTH PLAIN <b64>        -> DONE
 *   PLAIN without:                     AUTH PLAIN  -> 334 ""   <b64>  -> DONE
 *   LOGIN:                             AUTH LOGIN  -> 334 VXNlcm5hbWU6  <b64 user>
 *                                                  -> 334 UGFzc3dvcmQ6  <b64 pass> -> DONE
 *   LOGIN with an initial response (the user name, as Outlook and others send it, and as
 *   Postfix and Dovecot accept):      AUTH LOGIN <b64 user>   -> 334 UGFzc3dvcmQ6 ...
 *   Any status other than NEED_MORE ends the exchange; only DONE leaves credentials.
 *
 * SECURITY
 *   Every byte is from the client and the decoded bytes hold a password. A response line is
 *   bounded (SASL_LINE_BYTES_MAX) before it is looked at; decoding is bounded by the buffer of
 *   the field it goes to, so an oversized message is refused without being held. The PLAIN
 *   message is decoded into a stack buffer that is wiped with explicit_bzero() before
 *   returning; LOGIN fields are decoded straight into the credentials. Credentials are wiped
 *   on every end but DONE, and by sasl_creds_wipe() / sasl_exchange_wipe() after use.
 *   The base64 alphabet is decoded with masks rather than a table or branches (as libsodium
 *   does), so the time taken does not depend on the password's characters; the error paths
 *   and the encoder (used for public strings) are not constant-time.
 *   Fields may hold any byte but NUL (RFC 4616 says UTF-8; it is not checked here: the user
 *   database compares bytes, and whoever logs a user name escapes it).
 *
 * STANDARDS
 *   RFC 4954 4 (AUTH, initial response, "=" for an empty one, "*" to cancel, 334
 *   challenges), 6 (status codes: 501 5.5.2, 501 5.0.0, 500 5.5.6, 535 5.7.8, 504 5.5.4);
 *   RFC 4648 4 (base64; 3.3 and 3.5 allow rejecting non-alphabet characters and
 *   non-canonical encodings); RFC 4616 2 (PLAIN message); draft-murchison-sasl-login (LOGIN).
 *
 * DECISIONS
 *   - Base64 is strict: no whitespace, padding required, unused bits zero. Every byte string
 *     then has exactly one encoding, so decode(encode(x)) == x and encode(decode(s)) == s.
 *     Clients in the field (Thunderbird, Outlook, swaks, Python smtplib) all send canonical
 *     base64 without line breaks.
 *   - An empty response line after a 334 is the empty response; "=" is the empty response
 *     only as the initial response (RFC 4954 4's grammar), and an empty initial response
 *     argument (given but zero bytes) is bad base64: the client must send "=".
 *   - A PLAIN message that is decoded but malformed (missing NUL, empty authcid or password,
 *     NUL in the password) is answered 535 5.7.8 like wrong credentials, not 501: to the user
 *     it is a failed login, it counts toward the same failure limits, and it tells a prober
 *     nothing about which field was wrong.
 *   - The authzid must be empty or the authcid itself (no proxy authorization, as Postfix
 *     without a SASL proxy policy): anything else is refused before the password is checked.
 *   - A line, message or field beyond its limit is 500 5.5.6 (RFC 4954 6: a response longer
 *     than the buffer available for the mechanism). PLAIN's message limit is the sum of its
 *     field limits, so a message rejected as too long by sasl_step() may hold other faults
 *     that sasl_plain_parse() alone would have named first.
 */
#include "net/sasl.h"

#include <assert.h>
#include <stdbool.h>
#include <string.h>

/* Exchange states (struct sasl_exchange.state): what the next response line is. */
enum {
    ST_IDLE = 0,      /* no exchange under way: sasl_step() is not allowed */
    ST_PLAIN,         /* the PLAIN message, after an empty 334 */
    ST_LOGIN_USER,    /* the LOGIN user name, after 334 "Username:" */
    ST_LOGIN_PASS,    /* the LOGIN password, after 334 "Password:" */
};

/* The 334 challenges: the base64 text sent after "334 ". */
#define CHALLENGE_EMPTY    ""
#define CHALLENGE_USERNAME "VXNlcm5hbWU6"     /* "Username:" */
#define CHALLENGE_PASSWORD "UGFzc3dvcmQ6"     /* "Password:" */

static const struct mech_name {
    const char *name;             /* upper case */
    enum sasl_mech mech;
} mech_names[] = {
    { "PLAIN", SASL_MECH_PLAIN },
    { "LOGIN", SASL_MECH_LOGIN },
};

static const char *const status_replies[SASL_STATUS_COUNT] = {
    [SASL_CANCELLED]        = "501 5.0.0 Authentication aborted",
    [SASL_BAD_BASE64]       = "501 5.5.2 Cannot decode response",
    [SASL_BAD_MESSAGE]      = SASL_REPLY_CREDENTIALS_INVALID,
    [SASL_AUTHZID_MISMATCH] = "535 5.7.8 Authorization identity not permitted",
    [SASL_TOO_LONG]         = "500 5.5.6 Authentication exchange line is too long",
    [SASL_BAD_MECH]         = "504 5.5.4 Unrecognized authentication type",
};

static const char *const status_names[SASL_STATUS_COUNT] = {
    [SASL_DONE]             = "done",
    [SASL_NEED_MORE]        = "need_more",
    [SASL_CANCELLED]        = "cancelled",
    [SASL_BAD_BASE64]       = "bad_base64",
    [SASL_BAD_MESSAGE]      = "bad_message",
    [SASL_AUTHZID_MISMATCH] = "authzid_mismatch",
    [SASL_TOO_LONG]         = "too_long",
    [SASL_BAD_MECH]         = "bad_mech",
};

static const char b64_alphabet[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* lt_mask - 0xff when x < y, 0 otherwise, for x and y in 0..255, without a branch. */
static inline unsigned lt_mask(unsigned x, unsigned y)
{
    return ((x - y) >> 8) & 0xffu;
}

/* in_mask - 0xff when lo <= c <= hi, 0 otherwise. */
static inline unsigned in_mask(unsigned c, unsigned lo, unsigned hi)
{
    return ~(lt_mask(c, lo) | lt_mask(hi, c)) & 0xffu;
}

/* b64_value - the 6-bit value of a base64 character, or 0xff for any other byte. Masks, not
 * branches or a table: see SECURITY. */
static unsigned b64_value(unsigned char ch)
{
    unsigned c = ch;
    unsigned up = in_mask(c, 'A', 'Z'), low = in_mask(c, 'a', 'z'), dig = in_mask(c, '0', '9');
    unsigned plus = in_mask(c, '+', '+'), slash = in_mask(c, '/', '/');
    unsigned v = (up & (c - 'A')) | (low & (c - 'a' + 26)) | (dig & (c - '0' + 52)) |
                 (plus & 62u) | (slash & 63u);
    return v | (~(up | low | dig | plus | slash) & 0xffu);
}

/* put_byte - store b at out[*o] when it fits cap; count it either way. */
static inline void put_byte(unsigned char *out, size_t cap, size_t *o, unsigned b)
{
    if (*o < cap)
        out[*o] = (unsigned char)b;
    (*o)++;
}

/* sasl_b64_decode - strict base64 into a bounded buffer. */
int sasl_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap,
                    size_t *out_len)
{
    int err = SASL_B64_OK;
    size_t pad = 0, body, o = 0;
    uint32_t acc = 0;

    *out_len = 0;
    if (len % 4 != 0)
        return SASL_B64_BAD_LENGTH;
    if (len > 0 && in[len - 1] == '=')
        pad = in[len - 2] == '=' ? 2 : 1;
    body = len - pad;
    for (size_t i = 0; i < body; i++) {
        unsigned v = b64_value((unsigned char)in[i]);
        if (v > 63) {             /* never taken for valid input */
            if (err == SASL_B64_OK)
                err = in[i] == '=' ? SASL_B64_BAD_PADDING : SASL_B64_BAD_CHAR;
            v = 0;
        }
        acc = (acc << 6) | v;
        if (i % 4 == 3) {
            put_byte(out, cap, &o, (acc >> 16) & 0xffu);
            put_byte(out, cap, &o, (acc >> 8) & 0xffu);
            put_byte(out, cap, &o, acc & 0xffu);
            acc = 0;
        }
    }
    /* The last quantum: "xx==" holds 12 bits (one byte and 4 unused), "xxx=" 18 bits (two
       bytes and 2 unused). The unused bits must be zero (RFC 4648 3.5). */
    if (pad == 2) {
        put_byte(out, cap, &o, (acc >> 4) & 0xffu);
        if ((acc & 0xfu) != 0 && err == SASL_B64_OK)
            err = SASL_B64_BAD_BITS;
    } else if (pad == 1) {
        put_byte(out, cap, &o, (acc >> 10) & 0xffu);
        put_byte(out, cap, &o, (acc >> 2) & 0xffu);
        if ((acc & 0x3u) != 0 && err == SASL_B64_OK)
            err = SASL_B64_BAD_BITS;
    }
    acc = 0;
    if (err == SASL_B64_OK && o > cap)
        err = SASL_B64_TOO_LONG;
    if (err == SASL_B64_OK)
        *out_len = o;
    return err;
}

/* sasl_b64_encode - base64 with padding, NUL terminated. */
int sasl_b64_encode(const unsigned char *in, size_t len, char *out, size_t cap,
                    size_t *out_len)
{
    size_t need = SASL_B64_ENCODED_BYTES(len), o = 0, i = 0;

    *out_len = 0;
    if (len > (SIZE_MAX - 1) / 4 * 3 - 2 || cap < need + 1)
        return SASL_B64_TOO_LONG;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = '=';
    }
    assert(o == need);
    out[o] = '\0';
    *out_len = o;
    return SASL_B64_OK;
}

/* sasl_mech_parse - the mechanism named after AUTH, ASCII case-insensitive. */
enum sasl_mech sasl_mech_parse(const char *name, size_t len)
{
    for (size_t m = 0; m < sizeof mech_names / sizeof mech_names[0]; m++) {
        const char *want = mech_names[m].name;
        size_t i;
        if (strlen(want) != len)
            continue;
        for (i = 0; i < len; i++) {
            unsigned char c = (unsigned char)name[i];
            if (c >= 'a' && c <= 'z')
                c = (unsigned char)(c - 'a' + 'A');
            if (c != (unsigned char)want[i])
                break;
        }
        if (i == len)
            return mech_names[m].mech;
    }
    return SASL_MECH_UNKNOWN;
}

/* sasl_creds_wipe - clear credentials (explicit_bzero: not optimised away). */
void sasl_creds_wipe(struct sasl_creds *c)
{
    explicit_bzero(c, sizeof *c);
}

/* sasl_plain_parse - "[authzid] NUL authcid NUL passwd" into *out. */
enum sasl_status sasl_plain_parse(const unsigned char *msg, size_t len, struct sasl_creds *out)
{
    const unsigned char *nul1, *nul2, *cid, *pw;
    size_t zlen, clen, plen, rest;
    enum sasl_status st;

    sasl_creds_wipe(out);
    if (len == 0 || (nul1 = memchr(msg, '\0', len)) == NULL)
        return SASL_BAD_MESSAGE;
    zlen = (size_t)(nul1 - msg);
    cid = nul1 + 1;
    rest = len - zlen - 1;
    if (rest == 0 || (nul2 = memchr(cid, '\0', rest)) == NULL)
        return SASL_BAD_MESSAGE;
    clen = (size_t)(nul2 - cid);
    pw = nul2 + 1;
    plen = rest - clen - 1;

    if (clen == 0 || plen == 0 || memchr(pw, '\0', plen) != NULL)
        st = SASL_BAD_MESSAGE;
    else if (zlen > SASL_AUTHZID_BYTES_MAX || clen > SASL_USER_BYTES_MAX ||
             plen > SASL_PASS_BYTES_MAX)
        st = SASL_TOO_LONG;
    else if (zlen != 0 && (zlen != clen || memcmp(msg, cid, clen) != 0))
        st = SASL_AUTHZID_MISMATCH;
    else
        st = SASL_DONE;
    if (st != SASL_DONE)
        return st;

    memcpy(out->user, cid, clen);
    out->user[clen] = '\0';
    out->user_len = (uint16_t)clen;
    memcpy(out->pass, pw, plen);
    out->pass[plen] = '\0';
    out->pass_len = (uint16_t)plen;
    return SASL_DONE;
}

/* finish - leave the exchange after st: keep waiting on NEED_MORE, end it otherwise, wiping
 * the credentials unless st is DONE. The one place where an exchange ends. */
static enum sasl_status finish(struct sasl_exchange *ex, enum sasl_status st)
{
    if (st == SASL_NEED_MORE) {
        assert(ex->state != ST_IDLE && ex->challenge != NULL);
        return st;
    }
    ex->state = ST_IDLE;
    ex->challenge = NULL;
    if (st != SASL_DONE)
        sasl_creds_wipe(&ex->creds);
    return st;
}

/* need - wait for the next response in state, after sending challenge. */
static enum sasl_status need(struct sasl_exchange *ex, uint8_t state, const char *challenge)
{
    ex->state = state;
    ex->challenge = challenge;
    return finish(ex, SASL_NEED_MORE);
}

/* decode - a response's base64 into out[0..cap): the status of a failure, or NEED_MORE as
 * "decoded, go on" (never returned to the caller as such). */
static enum sasl_status decode(const char *b64, size_t len, unsigned char *out, size_t cap,
                               size_t *out_len)
{
    int err = sasl_b64_decode(b64, len, out, cap, out_len);
    if (err == SASL_B64_OK)
        return SASL_NEED_MORE;
    explicit_bzero(out, cap);     /* partial output may hold part of a password */
    return err == SASL_B64_TOO_LONG ? SASL_TOO_LONG : SASL_BAD_BASE64;
}

/* login_field - decode a LOGIN response into the user name (pass false) or the password of
 * c: non-empty, without NUL, within its limit. */
static enum sasl_status login_field(const char *b64, size_t len, struct sasl_creds *c, bool pass)
{
    char *field = pass ? c->pass : c->user;
    size_t max = pass ? SASL_PASS_BYTES_MAX : SASL_USER_BYTES_MAX, n = 0;
    enum sasl_status st = decode(b64, len, (unsigned char *)field, max, &n);
    if (st != SASL_NEED_MORE)
        return st;
    if (n == 0 || memchr(field, '\0', n) != NULL)
        return SASL_BAD_MESSAGE;  /* finish() wipes the field with the credentials */
    field[n] = '\0';
    if (pass)
        c->pass_len = (uint16_t)n;
    else
        c->user_len = (uint16_t)n;
    return SASL_NEED_MORE;
}

/* respond - one response (initial or after a 334), already known to be within the line
 * limit and not "*": run the current state on it. */
static enum sasl_status respond(struct sasl_exchange *ex, const char *b64, size_t len)
{
    unsigned char msg[SASL_PLAIN_BYTES_MAX];
    size_t n = 0;
    enum sasl_status st;

    switch (ex->state) {
    case ST_PLAIN:
        st = decode(b64, len, msg, sizeof msg, &n);
        if (st == SASL_NEED_MORE)
            st = sasl_plain_parse(msg, n, &ex->creds);
        explicit_bzero(msg, sizeof msg);
        return finish(ex, st);
    case ST_LOGIN_USER:
        st = login_field(b64, len, &ex->creds, false);
        if (st != SASL_NEED_MORE)
            return finish(ex, st);
        return need(ex, ST_LOGIN_PASS, CHALLENGE_PASSWORD);
    case ST_LOGIN_PASS:
        st = login_field(b64, len, &ex->creds, true);
        return finish(ex, st == SASL_NEED_MORE ? SASL_DONE : st);
    default:
        assert(!"sasl: a response with no exchange under way");
        return finish(ex, SASL_BAD_MESSAGE);
    }
}

/* sasl_start - begin an exchange for mech, with the initial response when given. */
enum sasl_status sasl_start(struct sasl_exchange *ex, enum sasl_mech mech, const char *initial,
                            size_t len)
{
    sasl_exchange_wipe(ex);
    ex->mech = (uint8_t)mech;
    switch (mech) {
    case SASL_MECH_PLAIN:
        ex->state = ST_PLAIN;
        if (initial == NULL)
            return need(ex, ST_PLAIN, CHALLENGE_EMPTY);
        break;
    case SASL_MECH_LOGIN:
        ex->state = ST_LOGIN_USER;
        if (initial == NULL)
            return need(ex, ST_LOGIN_USER, CHALLENGE_USERNAME);
        break;
    default:
        return finish(ex, SASL_BAD_MECH);
    }
    if (len > SASL_LINE_BYTES_MAX)
        return finish(ex, SASL_TOO_LONG);
    if (len == 0)
        return finish(ex, SASL_BAD_BASE64);   /* an empty response is sent as "=" */
    if (len == 1 && initial[0] == '=')
        return respond(ex, "", 0);
    return respond(ex, initial, len);
}

/* sasl_step - the client's response line to the last challenge. */
enum sasl_status sasl_step(struct sasl_exchange *ex, const char *line, size_t len)
{
    assert(ex->state != ST_IDLE);
    if (len > SASL_LINE_BYTES_MAX)
        return finish(ex, SASL_TOO_LONG);
    if (len == 1 && line[0] == '*')
        return finish(ex, SASL_CANCELLED);
    return respond(ex, line, len);
}

/* sasl_exchange_wipe - end an exchange and wipe it. */
void sasl_exchange_wipe(struct sasl_exchange *ex)
{
    explicit_bzero(ex, sizeof *ex);
    ex->state = ST_IDLE;
    ex->mech = SASL_MECH_UNKNOWN;
    ex->challenge = NULL;
}

/* sasl_status_reply - the SMTP reply for an end status; NULL for DONE and NEED_MORE. */
const char *sasl_status_reply(enum sasl_status st)
{
    if ((unsigned)st >= SASL_STATUS_COUNT)
        return NULL;
    return status_replies[st];
}

/* sasl_status_name - a short name for a status; "invalid" when out of range. */
const char *sasl_status_name(enum sasl_status st)
{
    if ((unsigned)st >= SASL_STATUS_COUNT)
        return "invalid";
    return status_names[st];
}
