/*
 * test_sasl.c - table-driven tests of the SASL decoder for SMTP AUTH (net/sasl.c).
 *
 * Four tables: base64 decoding (RFC 4648 10 vectors, bad characters, bad padding, non-canonical
 * bits, truncation, a cap too small) and encoding; mechanism names; PLAIN messages (RFC 4616
 * examples, authzid, missing NUL, empty fields, embedded NUL); whole exchanges, one row per
 * dialogue (PLAIN with and without initial response, "=" as the empty one, LOGIN in two
 * steps, "*" at each step). The limits (255-byte fields, 767-byte PLAIN message, 12288-byte
 * line) are rows built at run time. Every end of an exchange is checked for wiped credentials
 * and for a reply line of the form "ddd d.d.d text".
 */
#include "net/sasl.h"
#include "tests/unit/check.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define S(s) s, sizeof(s) - 1           /* a literal that may hold NUL bytes, and its length */
#define NONE NULL, 0                    /* no initial response */
#define STEPS_MAX 4                     /* response lines one exchange row may send */
#define BIG 1024                        /* cap used when the cap is not what is tested */

/* ---- base64 ---- */

struct b64_row {
    const char *name;
    const char *in;
    size_t in_len;
    size_t cap;                   /* 0 = BIG */
    int err;                      /* enum sasl_b64_err */
    const char *out;              /* decoded bytes when err is OK */
    size_t out_len;
};

#define B64_OK(name, in, out)      { name, S(in), 0, SASL_B64_OK, S(out) }
#define B64_BAD(name, in, err)     { name, S(in), 0, err, "", 0 }
#define B64_CAP(name, in, cap, err, out) { name, S(in), cap, err, S(out) }

static const struct b64_row b64_rows[] = {
    /* RFC 4648 10. */
    B64_OK("rfc empty", "", ""),
    B64_OK("rfc f", "Zg==", "f"),
    B64_OK("rfc fo", "Zm8=", "fo"),
    B64_OK("rfc foo", "Zm9v", "foo"),
    B64_OK("rfc foob", "Zm9vYg==", "foob"),
    B64_OK("rfc fooba", "Zm9vYmE=", "fooba"),
    B64_OK("rfc foobar", "Zm9vYmFy", "foobar"),
    B64_OK("prompt user", "VXNlcm5hbWU6", "Username:"),
    B64_OK("prompt pass", "UGFzc3dvcmQ6", "Password:"),
    B64_OK("plain message", "AHRpbQB0YW5zdGFhZnRhbnN0YWFm", "\0tim\0tanstaaftanstaaf"),
    B64_OK("all 62 and 63", "+/+/", "\xfb\xff\xbf"),
    B64_OK("high bytes", "////", "\xff\xff\xff"),
    B64_OK("zero bytes", "AAAA", "\0\0\0"),

    /* Length: truncated, or padding missing. */
    B64_BAD("one char", "Z", SASL_B64_BAD_LENGTH),
    B64_BAD("two chars", "Zg", SASL_B64_BAD_LENGTH),
    B64_BAD("three chars", "Zm8", SASL_B64_BAD_LENGTH),
    B64_BAD("one pad short", "Zg=", SASL_B64_BAD_LENGTH),
    B64_BAD("truncated quantum", "Zm9vY", SASL_B64_BAD_LENGTH),
    B64_BAD("= alone", "=", SASL_B64_BAD_LENGTH),
    B64_BAD("trailing CRLF", "Zm9v\r\n", SASL_B64_BAD_LENGTH),
    B64_BAD("extra padding", "Zg===", SASL_B64_BAD_LENGTH),

    /* Characters outside the alphabet. */
    B64_BAD("space", "Zm9 ", SASL_B64_BAD_CHAR),
    B64_BAD("inner space", "Zm 9vYmE=", SASL_B64_BAD_LENGTH),
    B64_BAD("inner space 8", "Zm9 YmE=", SASL_B64_BAD_CHAR),
    B64_BAD("CRLF inside", "Zm\r\nYg==", SASL_B64_BAD_CHAR),
    B64_BAD("tab", "\tZm9", SASL_B64_BAD_CHAR),
    B64_BAD("url-safe -", "Zm-v", SASL_B64_BAD_CHAR),
    B64_BAD("url-safe _", "Zm_v", SASL_B64_BAD_CHAR),
    B64_BAD("NUL", "Zm\0v", SASL_B64_BAD_CHAR),
    B64_BAD("8-bit", "Zm9\x80", SASL_B64_BAD_CHAR),
    B64_BAD("*", "****", SASL_B64_BAD_CHAR),
    B64_BAD("bad char before pad", "Z.==", SASL_B64_BAD_CHAR),
    B64_BAD("first error wins", "Z.=A", SASL_B64_BAD_CHAR),

    /* Padding in the wrong place. */
    B64_BAD("all pad", "====", SASL_B64_BAD_PADDING),
    B64_BAD("three pad", "Z===", SASL_B64_BAD_PADDING),
    B64_BAD("pad first", "=Zm9", SASL_B64_BAD_PADDING),
    B64_BAD("pad then char", "Zg=a", SASL_B64_BAD_PADDING),
    B64_BAD("pad inside", "Zg==Zg==", SASL_B64_BAD_PADDING),
    B64_BAD("pad in quantum 1", "Zm9=Zm9v", SASL_B64_BAD_PADDING),

    /* Non-canonical: unused bits before the padding not zero (RFC 4648 3.5). */
    B64_BAD("bits xx==", "Zh==", SASL_B64_BAD_BITS),
    B64_BAD("bits xx== low", "Zm==", SASL_B64_BAD_BITS),
    B64_BAD("bits xxx=", "Zm9=", SASL_B64_BAD_BITS),
    B64_BAD("bits xxx= low", "Zm/=", SASL_B64_BAD_BITS),
    B64_BAD("bits, longer", "Zm9vYh==", SASL_B64_BAD_BITS),

    /* The cap. */
    B64_CAP("cap exact 6", "Zm9vYmFy", 6, SASL_B64_OK, "foobar"),
    B64_CAP("cap 5 for 6", "Zm9vYmFy", 5, SASL_B64_TOO_LONG, ""),
    B64_CAP("cap exact 4", "Zm9vYg==", 4, SASL_B64_OK, "foob"),
    B64_CAP("cap 3 for 4", "Zm9vYg==", 3, SASL_B64_TOO_LONG, ""),
    B64_CAP("cap 4 for 5", "Zm9vYmE=", 4, SASL_B64_TOO_LONG, ""),
    B64_CAP("cap 1 for 2", "Zm8=", 1, SASL_B64_TOO_LONG, ""),
    B64_CAP("bad char over cap", "Zm9vYm.y", 1, SASL_B64_BAD_CHAR, ""),
    B64_CAP("bad bits over cap", "Zm9vYh==", 1, SASL_B64_BAD_BITS, ""),
};

/* b64_ref - the value of a base64 character by the plain definition, -1 for other bytes. */
static int b64_ref(unsigned c)
{
    if (c >= 'A' && c <= 'Z')
        return (int)(c - 'A');
    if (c >= 'a' && c <= 'z')
        return (int)(c - 'a' + 26);
    if (c >= '0' && c <= '9')
        return (int)(c - '0' + 52);
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

static void b64_tests(void)
{
    unsigned char out[BIG + 8];
    char text[BIG * 2];
    size_t n;

    for (size_t i = 0; i < sizeof b64_rows / sizeof b64_rows[0]; i++) {
        const struct b64_row *r = &b64_rows[i];
        size_t cap = r->cap ? r->cap : BIG;
        n = 12345;
        int err = sasl_b64_decode(r->in, r->in_len, out, cap, &n);
        CHECK(err == r->err, "%s: err %d, want %d", r->name, err, r->err);
        if (r->err == SASL_B64_OK) {
            CHECK(n == r->out_len && memcmp(out, r->out, n) == 0, "%s: output (%zu bytes)",
                  r->name, n);
            /* Canonical: encoding the output gives the input back. */
            CHECK(sasl_b64_encode(out, n, text, sizeof text, &n) == SASL_B64_OK &&
                  n == r->in_len && memcmp(text, r->in, n) == 0 && text[n] == '\0',
                  "%s: re-encode", r->name);
        } else {
            CHECK(n == 0, "%s: out_len %zu on error", r->name, n);
        }
    }

    /* Every byte value as the first character: the masks agree with the definition. */
    for (unsigned c = 0; c < 256; c++) {
        char in[4] = { (char)c, 'A', 'A', 'A' };
        int want = b64_ref(c);
        int err = sasl_b64_decode(in, 4, out, 3, &n);
        if (want < 0)
            CHECK(err == (c == '=' ? SASL_B64_BAD_PADDING : SASL_B64_BAD_CHAR),
                  "byte %u: err %d", c, err);
        else
            CHECK(err == SASL_B64_OK && n == 3 && out[0] == (unsigned char)(want << 2),
                  "byte %u: value", c);
    }

    /* Encoding: the prompts, the cap. */
    CHECK(sasl_b64_encode((const unsigned char *)"Username:", 9, text, sizeof text, &n) == 0 &&
          strcmp(text, "VXNlcm5hbWU6") == 0 && n == 12, "encode Username:");
    CHECK(sasl_b64_encode((const unsigned char *)"Password:", 9, text, sizeof text, &n) == 0 &&
          strcmp(text, "UGFzc3dvcmQ6") == 0, "encode Password:");
    CHECK(sasl_b64_encode((const unsigned char *)"", 0, text, 1, &n) == 0 && n == 0 &&
          text[0] == '\0', "encode empty");
    CHECK(sasl_b64_encode((const unsigned char *)"", 0, text, 0, &n) == SASL_B64_TOO_LONG,
          "encode empty, no room for NUL");
    CHECK(sasl_b64_encode((const unsigned char *)"fo", 2, text, 5, &n) == 0 &&
          strcmp(text, "Zm8=") == 0, "encode cap exact");
    memset(text, 'x', 8);
    CHECK(sasl_b64_encode((const unsigned char *)"fo", 2, text, 4, &n) == SASL_B64_TOO_LONG &&
          n == 0 && text[0] == 'x', "encode cap short writes nothing");
    CHECK(SASL_B64_ENCODED_BYTES(0) == 0 && SASL_B64_ENCODED_BYTES(1) == 4 &&
          SASL_B64_ENCODED_BYTES(3) == 4 && SASL_B64_ENCODED_BYTES(4) == 8, "encoded bytes");

    /* Round trip, every length 0..300, bytes from a fixed pseudo-random sequence. */
    unsigned seed = 12345;
    for (size_t len = 0; len <= 300; len++) {
        unsigned char in[300];
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            in[i] = (unsigned char)(seed >> 16);
        }
        size_t tn = 0;
        CHECK(sasl_b64_encode(in, len, text, sizeof text, &tn) == 0 &&
              tn == SASL_B64_ENCODED_BYTES(len), "round trip %zu: encode", len);
        CHECK(sasl_b64_decode(text, tn, out, len, &n) == 0 && n == len &&
              memcmp(out, in, len) == 0, "round trip %zu: decode", len);
        if (len > 0)
            CHECK(sasl_b64_decode(text, tn, out, len - 1, &n) == SASL_B64_TOO_LONG,
                  "round trip %zu: cap one short", len);
    }
}

/* ---- mechanism names ---- */

static const struct mech_row {
    const char *name;
    size_t len;
    enum sasl_mech want;
} mech_rows[] = {
    { S("PLAIN"), SASL_MECH_PLAIN },
    { S("plain"), SASL_MECH_PLAIN },
    { S("pLaIn"), SASL_MECH_PLAIN },
    { S("LOGIN"), SASL_MECH_LOGIN },
    { S("login"), SASL_MECH_LOGIN },
    { S(""), SASL_MECH_UNKNOWN },
    { S("PLAI"), SASL_MECH_UNKNOWN },
    { S("PLAINX"), SASL_MECH_UNKNOWN },
    { S("PLAIN\0"), SASL_MECH_UNKNOWN },
    { S("PLAIN "), SASL_MECH_UNKNOWN },
    { S("CRAM-MD5"), SASL_MECH_UNKNOWN },
    { S("XOAUTH2"), SASL_MECH_UNKNOWN },
    { S("SCRAM-SHA-256"), SASL_MECH_UNKNOWN },
    { S("PLA\xc4\xb0N"), SASL_MECH_UNKNOWN },   /* no Unicode case folding */
};

static void mech_tests(void)
{
    for (size_t i = 0; i < sizeof mech_rows / sizeof mech_rows[0]; i++) {
        const struct mech_row *r = &mech_rows[i];
        CHECK(sasl_mech_parse(r->name, r->len) == r->want, "mech row %zu", i);
    }
}

/* ---- PLAIN messages ---- */

struct plain_row {
    const char *name;
    const char *msg;
    size_t len;
    enum sasl_status want;
    const char *user;             /* when DONE */
    const char *pass;
};

#define P_OK(name, msg, user, pass) { name, S(msg), SASL_DONE, user, pass }
#define P_BAD(name, msg, st)        { name, S(msg), st, NULL, NULL }

static const struct plain_row plain_rows[] = {
    /* RFC 4616 4. */
    P_OK("rfc tim", "\0tim\0tanstaaftanstaaf", "tim", "tanstaaftanstaaf"),
    P_BAD("rfc Ursel as Kurt", "Ursel\0Kurt\0xipj3plmq", SASL_AUTHZID_MISMATCH),

    P_OK("authzid = authcid", "tim\0tim\0pw", "tim", "pw"),
    P_OK("8-bit fields", "\0caf\xc3\xa9\0p\xc3\xa4ss", "caf\xc3\xa9", "p\xc3\xa4ss"),
    P_OK("spaces kept", "\0 tim \0 p w ", " tim ", " p w "),
    P_OK("one byte each", "\0a\0b", "a", "b"),
    P_BAD("authzid case differs", "Tim\0tim\0pw", SASL_AUTHZID_MISMATCH),
    P_BAD("authzid longer", "tim \0tim\0pw", SASL_AUTHZID_MISMATCH),
    P_BAD("authzid prefix", "ti\0tim\0pw", SASL_AUTHZID_MISMATCH),

    P_BAD("empty", "", SASL_BAD_MESSAGE),
    P_BAD("no NUL", "timpw", SASL_BAD_MESSAGE),
    P_BAD("one NUL", "tim\0pw", SASL_BAD_MESSAGE),
    P_BAD("NUL alone", "\0", SASL_BAD_MESSAGE),
    P_BAD("one NUL first", "\0tim", SASL_BAD_MESSAGE),
    P_BAD("two NULs alone", "\0\0", SASL_BAD_MESSAGE),
    P_BAD("empty password", "\0tim\0", SASL_BAD_MESSAGE),
    P_BAD("empty authcid", "\0\0pw", SASL_BAD_MESSAGE),
    P_BAD("empty authcid, authzid", "tim\0\0pw", SASL_BAD_MESSAGE),
    P_BAD("NUL ends password", "\0tim\0pw\0", SASL_BAD_MESSAGE),
    P_BAD("NUL inside password", "\0tim\0p\0w", SASL_BAD_MESSAGE),
    P_BAD("three NULs", "\0\0\0", SASL_BAD_MESSAGE),
    P_BAD("bad before mismatch", "x\0tim\0", SASL_BAD_MESSAGE),
};

/* creds_zero - whether credentials hold nothing (wiped). */
static bool creds_zero(const struct sasl_creds *c)
{
    static const struct sasl_creds zero;
    return memcmp(c, &zero, sizeof zero) == 0;
}

/* creds_are - whether credentials are user and pass, lengths and terminators included. */
static bool creds_are(const struct sasl_creds *c, const char *user, const char *pass)
{
    return c->user_len == strlen(user) && strcmp(c->user, user) == 0 &&
           c->pass_len == strlen(pass) && strcmp(c->pass, pass) == 0;
}

static void check_plain(const char *name, const unsigned char *msg, size_t len,
                        enum sasl_status want, const char *user, const char *pass)
{
    struct sasl_creds c;
    memset(&c, 'z', sizeof c);                  /* wiped on error, whatever it held */
    enum sasl_status st = sasl_plain_parse(msg, len, &c);
    CHECK(st == want, "%s: %s, want %s", name, sasl_status_name(st), sasl_status_name(want));
    if (want == SASL_DONE && st == SASL_DONE)
        CHECK(creds_are(&c, user, pass), "%s: creds", name);
    if (st != SASL_DONE)
        CHECK(creds_zero(&c), "%s: creds not wiped", name);
    sasl_creds_wipe(&c);
    CHECK(creds_zero(&c), "%s: sasl_creds_wipe", name);
}

/* fill - n bytes of c at dst + *n, advancing *n. */
static void fill(unsigned char *dst, size_t *n, int c, size_t count)
{
    memset(dst + *n, c, count);
    *n += count;
}

static unsigned plain_limit_rows(void)
{
    static unsigned char msg[SASL_PLAIN_BYTES_MAX + 16];
    static char user[SASL_USER_BYTES_MAX + 2], pass[SASL_PASS_BYTES_MAX + 2];
    unsigned count = 0;
    size_t n;

    /* Field lengths at the limit and one past it. */
    for (size_t extra = 0; extra < 2; extra++) {
        enum sasl_status want = extra ? SASL_TOO_LONG : SASL_DONE;

        n = 0;
        msg[n++] = '\0';
        fill(msg, &n, 'u', SASL_USER_BYTES_MAX + extra);
        msg[n++] = '\0';
        fill(msg, &n, 'p', 3);
        memset(user, 'u', SASL_USER_BYTES_MAX + extra);
        user[SASL_USER_BYTES_MAX + extra] = '\0';
        check_plain(extra ? "user 256" : "user 255", msg, n, want, user, "ppp");

        n = 0;
        msg[n++] = '\0';
        fill(msg, &n, 'u', 3);
        msg[n++] = '\0';
        fill(msg, &n, 'p', SASL_PASS_BYTES_MAX + extra);
        memset(pass, 'p', SASL_PASS_BYTES_MAX + extra);
        pass[SASL_PASS_BYTES_MAX + extra] = '\0';
        check_plain(extra ? "pass 256" : "pass 255", msg, n, want, "uuu", pass);
        count += 2;
    }

    /* The largest message: authzid = authcid of 255, password of 255 (767 bytes). */
    n = 0;
    fill(msg, &n, 'u', SASL_USER_BYTES_MAX);
    msg[n++] = '\0';
    fill(msg, &n, 'u', SASL_USER_BYTES_MAX);
    msg[n++] = '\0';
    fill(msg, &n, 'p', SASL_PASS_BYTES_MAX);
    memset(user, 'u', SASL_USER_BYTES_MAX);
    user[SASL_USER_BYTES_MAX] = '\0';
    memset(pass, 'p', SASL_PASS_BYTES_MAX);
    pass[SASL_PASS_BYTES_MAX] = '\0';
    CHECK(n == SASL_PLAIN_BYTES_MAX, "largest message is %zu bytes", n);
    check_plain("largest message", msg, n, SASL_DONE, user, pass);

    /* An authzid too long is TOO_LONG before it is a mismatch. */
    n = 0;
    fill(msg, &n, 'z', SASL_AUTHZID_BYTES_MAX + 1);
    msg[n++] = '\0';
    fill(msg, &n, 'u', 3);
    msg[n++] = '\0';
    fill(msg, &n, 'p', 3);
    check_plain("authzid 256", msg, n, SASL_TOO_LONG, NULL, NULL);

    /* A NUL in a long password is BAD_MESSAGE before it is TOO_LONG. */
    n = 0;
    msg[n++] = '\0';
    fill(msg, &n, 'u', 3);
    msg[n++] = '\0';
    fill(msg, &n, 'p', SASL_PASS_BYTES_MAX + 5);
    msg[n++] = '\0';
    check_plain("NUL in a long password", msg, n, SASL_BAD_MESSAGE, NULL, NULL);
    return count + 3;
}

/* ---- exchanges ---- */

struct step {
    const char *line;             /* NULL ends the row's steps */
    size_t len;
    enum sasl_status want;
    const char *challenge;        /* when NEED_MORE */
};

struct xrow {
    const char *name;
    enum sasl_mech mech;
    const char *initial;          /* NULL: AUTH without an initial response */
    size_t initial_len;
    enum sasl_status want;        /* what sasl_start() gives */
    const char *challenge;        /* when NEED_MORE */
    struct step steps[STEPS_MAX];
    const char *user;             /* when the exchange ends DONE */
    const char *pass;
};

#define PLAIN SASL_MECH_PLAIN
#define LOGIN SASL_MECH_LOGIN
#define MORE  SASL_NEED_MORE
#define DONE  SASL_DONE
#define USER_PROMPT "VXNlcm5hbWU6"
#define PASS_PROMPT "UGFzc3dvcmQ6"
#define STEP(line, want, challenge) { S(line), want, challenge }
#define NO_STEPS { { NULL, 0, SASL_DONE, NULL } }  /* the exchange ends at sasl_start() */

static const struct xrow xrows[] = {
    /* PLAIN with an initial response. */
    { "plain ir", PLAIN, S("AHRpbQB0YW5zdGFhZnRhbnN0YWFm"), DONE, NULL, NO_STEPS,
      "tim", "tanstaaftanstaaf" },
    { "plain ir authzid", PLAIN, S("dGltAHRpbQBwdw=="), DONE, NULL, NO_STEPS, "tim", "pw" },
    { "plain ir mismatch", PLAIN, S("VXJzZWwAS3VydAB4aXBqM3BsbXE="), SASL_AUTHZID_MISMATCH, NULL,
      NO_STEPS, NULL, NULL },
    { "plain ir =", PLAIN, S("="), SASL_BAD_MESSAGE, NULL, NO_STEPS, NULL, NULL },
    { "plain ir empty arg", PLAIN, S(""), SASL_BAD_BASE64, NULL, NO_STEPS, NULL, NULL },
    { "plain ir *", PLAIN, S("*"), SASL_BAD_BASE64, NULL, NO_STEPS, NULL, NULL },
    { "plain ir ==", PLAIN, S("=="), SASL_BAD_BASE64, NULL, NO_STEPS, NULL, NULL },
    { "plain ir truncated", PLAIN, S("AHRpbQBwdw="), SASL_BAD_BASE64, NULL, NO_STEPS,
      NULL, NULL },
    { "plain ir with CRLF", PLAIN, S("AHRpbQBwdw==\r\n"), SASL_BAD_BASE64, NULL, NO_STEPS,
      NULL, NULL },
    { "plain ir empty pass", PLAIN, S("AHRpbQA="), SASL_BAD_MESSAGE, NULL, NO_STEPS,
      NULL, NULL },
    { "plain ir one NUL", PLAIN, S("dGltAHB3"), SASL_BAD_MESSAGE, NULL, NO_STEPS, NULL, NULL },
    { "plain ir NUL in pass", PLAIN, S("AHRpbQBwdwB4"), SASL_BAD_MESSAGE, NULL, NO_STEPS,
      NULL, NULL },

    /* PLAIN without: an empty 334, then the message. */
    { "plain 334", PLAIN, NONE, MORE, "",
      { STEP("AHRpbQBwdw==", DONE, NULL) }, "tim", "pw" },
    { "plain 334 *", PLAIN, NONE, MORE, "", { STEP("*", SASL_CANCELLED, NULL) }, NULL, NULL },
    { "plain 334 empty line", PLAIN, NONE, MORE, "",
      { STEP("", SASL_BAD_MESSAGE, NULL) }, NULL, NULL },
    { "plain 334 =", PLAIN, NONE, MORE, "", { STEP("=", SASL_BAD_BASE64, NULL) }, NULL, NULL },
    { "plain 334 **", PLAIN, NONE, MORE, "", { STEP("**", SASL_BAD_BASE64, NULL) }, NULL, NULL },
    { "plain 334 * SP", PLAIN, NONE, MORE, "", { STEP("* ", SASL_BAD_BASE64, NULL) },
      NULL, NULL },
    { "plain 334 bad bits", PLAIN, NONE, MORE, "",
      { STEP("AHRpbQBwdx==", SASL_BAD_BASE64, NULL) }, NULL, NULL },
    { "plain 334 mismatch", PLAIN, NONE, MORE, "",
      { STEP("VXJzZWwAS3VydAB4aXBqM3BsbXE=", SASL_AUTHZID_MISMATCH, NULL) }, NULL, NULL },

    /* LOGIN in two steps. */
    { "login", LOGIN, NONE, MORE, USER_PROMPT,
      { STEP("dGlt", MORE, PASS_PROMPT), STEP("cHc=", DONE, NULL) }, "tim", "pw" },
    { "login * at user", LOGIN, NONE, MORE, USER_PROMPT,
      { STEP("*", SASL_CANCELLED, NULL) }, NULL, NULL },
    { "login * at pass", LOGIN, NONE, MORE, USER_PROMPT,
      { STEP("dGlt", MORE, PASS_PROMPT), STEP("*", SASL_CANCELLED, NULL) }, NULL, NULL },
    { "login empty user", LOGIN, NONE, MORE, USER_PROMPT,
      { STEP("", SASL_BAD_MESSAGE, NULL) }, NULL, NULL },
    { "login empty pass", LOGIN, NONE, MORE, USER_PROMPT,
      { STEP("dGlt", MORE, PASS_PROMPT), STEP("", SASL_BAD_MESSAGE, NULL) }, NULL, NULL },
    { "login NUL in user", LOGIN, NONE, MORE, USER_PROMPT,
      { STEP("dAB0", SASL_BAD_MESSAGE, NULL) }, NULL, NULL },
    { "login NUL in pass", LOGIN, NONE, MORE, USER_PROMPT,
      { STEP("dGlt", MORE, PASS_PROMPT), STEP("dAB0", SASL_BAD_MESSAGE, NULL) }, NULL, NULL },
    { "login bad user", LOGIN, NONE, MORE, USER_PROMPT,
      { STEP("dGl", SASL_BAD_BASE64, NULL) }, NULL, NULL },
    { "login bad pass", LOGIN, NONE, MORE, USER_PROMPT,
      { STEP("dGlt", MORE, PASS_PROMPT), STEP("cHc", SASL_BAD_BASE64, NULL) }, NULL, NULL },
    { "login = at pass", LOGIN, NONE, MORE, USER_PROMPT,
      { STEP("dGlt", MORE, PASS_PROMPT), STEP("=", SASL_BAD_BASE64, NULL) }, NULL, NULL },
    { "login plain message as user", LOGIN, NONE, MORE, USER_PROMPT,
      { STEP("AHRpbQBwdw==", SASL_BAD_MESSAGE, NULL) }, NULL, NULL },

    /* LOGIN with the user name as initial response. */
    { "login ir", LOGIN, S("dGlt"), MORE, PASS_PROMPT, { STEP("cHc=", DONE, NULL) },
      "tim", "pw" },
    { "login ir * at pass", LOGIN, S("dGlt"), MORE, PASS_PROMPT,
      { STEP("*", SASL_CANCELLED, NULL) }, NULL, NULL },
    { "login ir =", LOGIN, S("="), SASL_BAD_MESSAGE, NULL, NO_STEPS, NULL, NULL },
    { "login ir *", LOGIN, S("*"), SASL_BAD_BASE64, NULL, NO_STEPS, NULL, NULL },

    /* Unknown mechanisms. */
    { "unknown", SASL_MECH_UNKNOWN, NONE, SASL_BAD_MECH, NULL, NO_STEPS, NULL, NULL },
    { "unknown ir", SASL_MECH_UNKNOWN, S("AHRpbQBwdw=="), SASL_BAD_MECH, NULL, NO_STEPS,
      NULL, NULL },
};

/* check_end - the invariants of an exchange that ended in st. */
static void check_end(const char *name, const struct sasl_exchange *ex, enum sasl_status st)
{
    CHECK(ex->challenge == NULL, "%s: challenge left after the end", name);
    if (st != SASL_DONE) {
        CHECK(creds_zero(&ex->creds), "%s: creds not wiped after %s", name,
              sasl_status_name(st));
        const char *reply = sasl_status_reply(st);
        CHECK(reply && strlen(reply) > 10 && reply[0] >= '4' && reply[0] <= '5' &&
              reply[3] == ' ' && reply[4] == reply[0] && reply[5] == '.',
              "%s: reply for %s", name, sasl_status_name(st));
    }
}

/* run_xrow - run one dialogue row. */
static void run_xrow(const struct xrow *r)
{
    struct sasl_exchange ex;
    memset(&ex, 'z', sizeof ex);                /* sasl_start() wipes whatever was there */
    enum sasl_status st = sasl_start(&ex, r->mech, r->initial, r->initial_len);
    CHECK(st == r->want, "%s: start %s, want %s", r->name, sasl_status_name(st),
          sasl_status_name(r->want));
    if (st == SASL_NEED_MORE && r->want == SASL_NEED_MORE)
        CHECK(ex.challenge && strcmp(ex.challenge, r->challenge) == 0, "%s: challenge",
              r->name);
    for (size_t i = 0; st == SASL_NEED_MORE && i < STEPS_MAX && r->steps[i].line; i++) {
        const struct step *s = &r->steps[i];
        st = sasl_step(&ex, s->line, s->len);
        CHECK(st == s->want, "%s: step %zu %s, want %s", r->name, i + 1, sasl_status_name(st),
              sasl_status_name(s->want));
        if (st == SASL_NEED_MORE && s->want == SASL_NEED_MORE)
            CHECK(ex.challenge && strcmp(ex.challenge, s->challenge) == 0,
                  "%s: step %zu challenge", r->name, i + 1);
    }
    CHECK(st != SASL_NEED_MORE, "%s: exchange did not end", r->name);
    check_end(r->name, &ex, st);
    if (r->user) {
        CHECK(st == SASL_DONE && creds_are(&ex.creds, r->user, r->pass), "%s: creds", r->name);
    }
    sasl_exchange_wipe(&ex);
    struct sasl_exchange zero;
    memset(&zero, 0, sizeof zero);
    CHECK(memcmp(&ex, &zero, sizeof ex) == 0, "%s: sasl_exchange_wipe", r->name);
}

/* b64_of - the base64 of count bytes of c, into a static buffer; its length in *len. */
static const char *b64_of(int c, size_t count, size_t *len)
{
    static unsigned char raw[SASL_LINE_BYTES_MAX];
    static char text[SASL_B64_ENCODED_BYTES(SASL_LINE_BYTES_MAX) + 1];
    memset(raw, c, count);
    CHECK(sasl_b64_encode(raw, count, text, sizeof text, len) == 0, "b64_of %zu", count);
    return text;
}

static unsigned exchange_limit_rows(void)
{
    static char line[SASL_LINE_BYTES_MAX + 2];
    static unsigned char msg[SASL_PLAIN_BYTES_MAX + 1];
    static char text[SASL_B64_ENCODED_BYTES(SASL_PLAIN_BYTES_MAX + 1) + 1];
    struct sasl_exchange ex;
    enum sasl_status st;
    size_t n;

    /* A line of 12288 bytes is read (and is too long for PLAIN once decoded); 12289 is not. */
    memset(line, 'A', sizeof line);
    sasl_start(&ex, SASL_MECH_PLAIN, NULL, 0);
    st = sasl_step(&ex, line, SASL_LINE_BYTES_MAX);
    CHECK(st == SASL_TOO_LONG, "12288-byte line: %s", sasl_status_name(st));
    check_end("12288-byte line", &ex, st);
    sasl_start(&ex, SASL_MECH_PLAIN, NULL, 0);
    line[SASL_LINE_BYTES_MAX - 1] = '.';
    st = sasl_step(&ex, line, SASL_LINE_BYTES_MAX);
    CHECK(st == SASL_BAD_BASE64, "12288-byte bad line: %s", sasl_status_name(st));
    sasl_start(&ex, SASL_MECH_PLAIN, NULL, 0);
    st = sasl_step(&ex, line, SASL_LINE_BYTES_MAX + 1);
    CHECK(st == SASL_TOO_LONG, "12289-byte line: %s", sasl_status_name(st));
    st = sasl_start(&ex, SASL_MECH_LOGIN, line, SASL_LINE_BYTES_MAX + 1);
    CHECK(st == SASL_TOO_LONG, "12289-byte initial response: %s", sasl_status_name(st));
    check_end("12289-byte initial response", &ex, st);
    sasl_start(&ex, SASL_MECH_LOGIN, NULL, 0);
    st = sasl_step(&ex, line, SASL_LINE_BYTES_MAX + 1);
    CHECK(st == SASL_TOO_LONG, "12289-byte user line: %s", sasl_status_name(st));

    /* PLAIN message of 767 bytes through the exchange, then 768. */
    for (size_t extra = 0; extra < 2; extra++) {
        n = 0;
        fill(msg, &n, 'u', SASL_USER_BYTES_MAX);
        msg[n++] = '\0';
        fill(msg, &n, 'u', SASL_USER_BYTES_MAX);
        msg[n++] = '\0';
        fill(msg, &n, 'p', SASL_PASS_BYTES_MAX + extra);
        size_t tn;
        CHECK(sasl_b64_encode(msg, n, text, sizeof text, &tn) == 0, "encode %zu", n);
        st = sasl_start(&ex, SASL_MECH_PLAIN, text, tn);
        CHECK(st == (extra ? SASL_TOO_LONG : SASL_DONE), "PLAIN of %zu bytes: %s", n,
              sasl_status_name(st));
        if (!extra)
            CHECK(ex.creds.user_len == SASL_USER_BYTES_MAX &&
                  ex.creds.pass_len == SASL_PASS_BYTES_MAX, "PLAIN of 767 bytes: lengths");
        check_end("PLAIN limit", &ex, st);
    }

    /* LOGIN fields of 255 bytes, then 256. */
    for (size_t extra = 0; extra < 2; extra++) {
        enum sasl_status want = extra ? SASL_TOO_LONG : SASL_NEED_MORE;
        const char *b = b64_of('u', SASL_USER_BYTES_MAX + extra, &n);
        st = sasl_start(&ex, SASL_MECH_LOGIN, NULL, 0);
        st = sasl_step(&ex, b, n);
        CHECK(st == want, "LOGIN user of %zu: %s", SASL_USER_BYTES_MAX + extra,
              sasl_status_name(st));
        if (st != SASL_NEED_MORE) {
            check_end("LOGIN user limit", &ex, st);
            continue;
        }
        b = b64_of('p', SASL_PASS_BYTES_MAX, &n);
        st = sasl_step(&ex, b, n);
        CHECK(st == SASL_DONE && ex.creds.user_len == SASL_USER_BYTES_MAX &&
              ex.creds.pass_len == SASL_PASS_BYTES_MAX && ex.creds.pass[0] == 'p' &&
              ex.creds.user[SASL_USER_BYTES_MAX] == '\0' &&
              ex.creds.pass[SASL_PASS_BYTES_MAX] == '\0', "LOGIN 255/255");
        sasl_start(&ex, SASL_MECH_LOGIN, NULL, 0);
        sasl_step(&ex, "dGlt", 4);
        b = b64_of('p', SASL_PASS_BYTES_MAX + 1, &n);
        st = sasl_step(&ex, b, n);
        CHECK(st == SASL_TOO_LONG, "LOGIN pass of 256: %s", sasl_status_name(st));
        check_end("LOGIN pass limit", &ex, st);
    }

    /* An exchange can start again after any end, and a new start forgets the old one. */
    sasl_start(&ex, SASL_MECH_LOGIN, NULL, 0);
    sasl_step(&ex, "dGlt", 4);
    st = sasl_start(&ex, SASL_MECH_PLAIN, NULL, 0);
    CHECK(st == SASL_NEED_MORE && ex.creds.user_len == 0 && ex.creds.user[0] == '\0',
          "restart mid-exchange wipes");
    st = sasl_step(&ex, "AHRpbQBwdw==", 12);
    CHECK(st == SASL_DONE && creds_are(&ex.creds, "tim", "pw"), "restart then PLAIN");
    sasl_exchange_wipe(&ex);
    return 9;
}

/* ---- replies and names ---- */

static void reply_tests(void)
{
    CHECK(strcmp(sasl_status_reply(SASL_CANCELLED), "501 5.0.0 Authentication aborted") == 0,
          "reply cancelled");
    CHECK(strcmp(sasl_status_reply(SASL_BAD_BASE64), "501 5.5.2 Cannot decode response") == 0,
          "reply bad base64");
    CHECK(strcmp(sasl_status_reply(SASL_BAD_MESSAGE),
                 "535 5.7.8 Authentication credentials invalid") == 0, "reply bad message");
    CHECK(strncmp(sasl_status_reply(SASL_AUTHZID_MISMATCH), "535 5.7.8 ", 10) == 0,
          "reply authzid");
    CHECK(strncmp(sasl_status_reply(SASL_TOO_LONG), "500 5.5.6 ", 10) == 0, "reply too long");
    CHECK(strncmp(sasl_status_reply(SASL_BAD_MECH), "504 5.5.4 ", 10) == 0, "reply bad mech");
    CHECK(sasl_status_reply(SASL_DONE) == NULL && sasl_status_reply(SASL_NEED_MORE) == NULL &&
          sasl_status_reply(SASL_STATUS_COUNT) == NULL, "no reply for DONE, NEED_MORE");
    CHECK(strcmp(sasl_status_name(SASL_BAD_BASE64), "bad_base64") == 0, "name bad_base64");
    CHECK(strcmp(sasl_status_name(SASL_STATUS_COUNT), "invalid") == 0, "name invalid");
    for (int s = 0; s < SASL_STATUS_COUNT; s++) {
        const char *name = sasl_status_name((enum sasl_status)s);
        CHECK(name && *name && strcmp(name, "invalid") != 0 && !strchr(name, ' '), "name %d", s);
    }
}

int main(void)
{
    size_t nb = sizeof b64_rows / sizeof b64_rows[0];
    size_t nm = sizeof mech_rows / sizeof mech_rows[0];
    size_t np = sizeof plain_rows / sizeof plain_rows[0];
    size_t nx = sizeof xrows / sizeof xrows[0];

    b64_tests();
    mech_tests();
    for (size_t i = 0; i < np; i++) {
        const struct plain_row *r = &plain_rows[i];
        check_plain(r->name, (const unsigned char *)r->msg, r->len, r->want, r->user, r->pass);
    }
    unsigned ngen = plain_limit_rows();
    for (size_t i = 0; i < nx; i++)
        run_xrow(&xrows[i]);
    ngen += exchange_limit_rows();
    reply_tests();
    printf("test_sasl: %zu base64 + %zu mech + %zu PLAIN + %zu exchange rows, %u generated\n",
           nb, nm, np, nx, ngen);
    return check_done("test_sasl");
}
