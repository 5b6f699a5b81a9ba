/*
 * fuzz_dovecot_auth.c - libFuzzer target for the Dovecot auth client's parsers
 * (core/dovecot_auth.c): the line buffer, the handshake and the replies, and the AUTH line.
 *
 * Input: byte 0 is the size of the pieces the rest is fed in (1..64 bytes, as reads would
 * return them); the rest is what a server sends. Lines go to dovecot_handshake_line() until
 * it says done (then to dovecot_reply_parse()) or fails (then the stream ends, as the client
 * closes). Checked:
 *   - the line buffer gives lines of at most DOVECOT_LINE_BYTES_MAX bytes without LF, in the
 *     order and with the bytes they came in, and -EMSGSIZE exactly when more than that came
 *     without an LF; once it fails the stream ends;
 *   - the handshake answers 0, 1 or -EPROTO, and 1 only for a "DONE" line after "VERSION 1 n"
 *     came first and a "MECH PLAIN" line came;
 *   - a reply parses (0) or not (-EPROTO), never anything else; a parsed one starts with its
 *     kind's name, a TAB and its id written in decimal, ends there or goes on with a TAB, has
 *     no NUL; temp only on FAIL, nologin and proxy only on OK; and each flag agrees with a
 *     reference reading of the parameters below;
 *   - the verdict is GRANTED exactly for OK without nologin or proxy, TEMPFAIL for FAIL with
 *     temp, PROTOCOL for CONT;
 * and on the input (byte 0 included) cut at its NULs into user and password:
 *   - the AUTH line is refused exactly when they are out of bounds (user empty or over 255
 *     bytes, password over 1024), and otherwise is one line of seven or eight TAB-separated
 *     fields ending in LF, resp= last, decoding to "\0user\0password".
 */
#include "core/dovecot_auth.h"
#include "net/sasl.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* fail - report a broken invariant and stop. */
static void fail(const char *what)
{
    fprintf(stderr, "fuzz_dovecot_auth: %s\n", what);
    abort();
}

/* has_param - reference: whether a field after the id is key or "key=..." (found by a plain
 * scan over TAB-separated fields, independent of the parser's cursor). */
static bool has_param(const char *line, size_t len, const char *key, bool with_value)
{
    size_t klen = strlen(key), start = 0, field = 0;

    for (size_t i = 0; i <= len; i++) {
        if (i < len && line[i] != '\t')
            continue;
        size_t flen = i - start;
        if (field >= 2 && flen >= klen && memcmp(line + start, key, klen) == 0 &&
            (flen == klen || (with_value && line[start + klen] == '=')))
            return true;
        field++;
        start = i + 1;
    }
    return false;
}

/* check_reply - the invariants of one reply line. */
static void check_reply(const char *line, size_t len)
{
    static const char *const names[] = { "OK", "FAIL", "CONT" };
    struct dovecot_reply r;
    char head[32];
    int err = dovecot_reply_parse(line, len, &r);

    if (err != 0 && err != -EPROTO)
        fail("reply parse returned something else");
    if (err)
        return;
    if ((unsigned)r.kind > DOVECOT_REPLY_CONT)
        fail("kind out of range");
    if (memchr(line, '\0', len))
        fail("a NUL parsed");
    int n = snprintf(head, sizeof(head), "%s\t%u", names[r.kind], r.id);
    if ((size_t)n > len || memcmp(line, head, (size_t)n) != 0 ||
        ((size_t)n < len && line[n] != '\t'))
        fail("kind and id are not what the line starts with");
    if ((r.temp && r.kind != DOVECOT_REPLY_FAIL) ||
        ((r.nologin || r.proxy) && r.kind != DOVECOT_REPLY_OK))
        fail("flag on the wrong kind");
    if (r.kind == DOVECOT_REPLY_OK &&
        (r.nologin != has_param(line, len, "nologin", true) ||
         r.proxy != has_param(line, len, "proxy", true)))
        fail("nologin or proxy disagrees with the reference");
    if (r.kind == DOVECOT_REPLY_FAIL &&
        r.temp != (has_param(line, len, "temp", false) ||
                   has_param(line, len, "code=temp_fail", false)))
        fail("temp disagrees with the reference");

    enum dovecot_verdict v = dovecot_reply_verdict(&r);
    if ((v == DOVECOT_GRANTED) != (r.kind == DOVECOT_REPLY_OK && !r.nologin && !r.proxy) ||
        (v == DOVECOT_TEMPFAIL) != (r.kind == DOVECOT_REPLY_FAIL && r.temp) ||
        (v == DOVECOT_PROTOCOL) != (r.kind == DOVECOT_REPLY_CONT))
        fail("verdict");
}

/* check_stream - feed data[0..size) in pieces of piece bytes. */
static void check_stream(const char *data, size_t size, size_t piece)
{
    static struct dovecot_linebuf lb;
    struct dovecot_handshake h = { 0 };
    bool done = false, seen_version = false, seen_plain = false;
    size_t fed = 0, taken = 0;   /* bytes given to lb; bytes returned in lines, LFs included */

    dovecot_linebuf_reset(&lb);
    while (fed < size) {
        size_t room, n = size - fed < piece ? size - fed : piece;
        char *at = dovecot_linebuf_space(&lb, &room);
        if (room == 0)
            fail("no room while no error was reported");
        if (n > room)
            n = room;
        memcpy(at, data + fed, n);
        dovecot_linebuf_commit(&lb, n);
        fed += n;

        for (;;) {
            const char *line;
            size_t len;
            int got = dovecot_linebuf_next(&lb, &line, &len);
            if (got < 0) {
                const char *lf = memchr(data + taken, '\n', fed - taken);
                if (got != -EMSGSIZE || lf || fed - taken <= DOVECOT_LINE_BYTES_MAX)
                    fail("line buffer error without an overlong line");
                return;
            }
            if (!got) {
                if (fed - taken > DOVECOT_LINE_BYTES_MAX)
                    fail("overlong line not reported");
                break;
            }
            if (len > DOVECOT_LINE_BYTES_MAX || memchr(line, '\n', len) ||
                memcmp(line, data + taken, len) != 0 || data[taken + len] != '\n')
                fail("line is not the next bytes up to LF");
            taken += len + 1;

            if (done) {
                check_reply(line, len);
                continue;
            }
            bool was_first = h.lines == 0;
            int r = dovecot_handshake_line(&h, line, len);
            if (r != 0 && r != 1 && r != -EPROTO)
                fail("handshake returned something else");
            if (r < 0)
                return;
            if (was_first && (len < 8 || memcmp(line, "VERSION\t", 8) != 0))
                fail("first handshake line not VERSION");
            seen_version |= was_first;
            if (len >= 10 && memcmp(line, "MECH\tPLAIN", 10) == 0 &&
                (len == 10 || line[10] == '\t'))
                seen_plain = true;
            if (r == 1) {
                if (!seen_version || !seen_plain || len != 4 || memcmp(line, "DONE", 4) != 0)
                    fail("handshake done without VERSION, PLAIN and DONE");
                done = true;
            }
            if (h.lines > DOVECOT_HANDSHAKE_LINES_MAX)
                fail("handshake lines beyond the bound");
        }
    }
}

/* check_format - the AUTH line of the input's first two NUL-separated pieces. */
static void check_format(const char *data, size_t size)
{
    static char out[DOVECOT_REQUEST_BYTES_MAX];
    static unsigned char msg[2 * DOVECOT_REQUEST_BYTES_MAX];
    const char *nul = memchr(data, '\0', size);
    size_t ulen = nul ? (size_t)(nul - data) : size;
    const char *pw = nul ? nul + 1 : data + size;
    size_t plen = nul ? (size_t)(data + size - pw) : 0;
    const char *nul2 = memchr(pw, '\0', plen);
    if (nul2)
        plen = (size_t)(nul2 - pw);
    const char *rip = size && (data[0] & 1) ? "192.0.2.1" : NULL;

    int n = dovecot_format_auth(out, sizeof(out), (uint32_t)size, data, ulen, pw, plen, rip);
    bool bad = ulen == 0 || ulen > DOVECOT_USER_BYTES_MAX || plen > DOVECOT_PASSWORD_BYTES_MAX;
    if (bad != (n == -EINVAL) || (n < 0 && n != -EINVAL))
        fail("AUTH line refused when it should not be, or the other way");
    if (n < 0)
        return;
    if ((size_t)n != strlen(out) || out[n - 1] != '\n' || memchr(out, '\n', (size_t)n - 1))
        fail("not one line");
    size_t tabs = 0;
    for (int i = 0; i < n; i++)
        tabs += out[i] == '\t';
    if (tabs != (rip ? 7u : 6u))
        fail("wrong number of fields");
    const char *resp = strstr(out, "\tresp=");
    if (!resp || memchr(resp + 1, '\t', (size_t)(out + n - resp - 1)))
        fail("resp= is not last");
    size_t got = 0;
    if (sasl_b64_decode(resp + 6, (size_t)(out + n - 1 - resp - 6), msg, sizeof(msg), &got) !=
            SASL_B64_OK || got != 2 + ulen + plen || msg[0] != '\0' ||
        memcmp(msg + 1, data, ulen) != 0 || msg[1 + ulen] != '\0' ||
        memcmp(msg + 2 + ulen, pw, plen) != 0)
        fail("resp= does not decode to the credentials");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_format((const char *)data, size);
    if (size < 1)
        return 0;
    check_stream((const char *)data + 1, size - 1, (size_t)(data[0] % 64) + 1);
    return 0;
}
