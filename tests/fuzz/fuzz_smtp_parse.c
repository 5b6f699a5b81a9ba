/*
 * fuzz_smtp_parse.c - libFuzzer target for net/smtp_parse.c.
 *
 * The input is taken as a command line (smtp_cmd_parse) and, whole and as the command's
 * argument, as the argument of MAIL, of RCPT and of BDAT (an accepted size, written back,
 * parses to itself). Invariants asserted on every output:
 * text is a C string of len bytes, len <= SMTP_PATH_BYTES_MAX, local_len <= len,
 * smtp_domain_of() points inside text, an error leaves an empty address, the argument of a
 * command lies inside the line, and an accepted address's canonical text parses back to
 * itself. The input is copied to a buffer of its exact size so ASan sees any read past it.
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/smtp_parse.h"

/* check_addr - the invariants of one parser output. */
static void check_addr(const struct smtp_addr *a, enum smtp_parse_err err)
{
    const char *domain = smtp_domain_of(a);

    assert((unsigned)err < SMTP_PARSE_ERR_COUNT);
    assert(a->len <= SMTP_PATH_BYTES_MAX);
    assert(a->text[a->len] == '\0');
    assert(strlen(a->text) == a->len);
    assert(a->local_len <= a->len);
    assert(a->local_len <= SMTP_LOCAL_BYTES_MAX);
    assert(*domain == '\0' || (domain > a->text && domain <= a->text + a->len));
    assert(strlen(domain) <= SMTP_DOMAIN_BYTES_MAX);
    assert(!a->null_path || a->len == 0);
    assert(smtp_parse_reply(err, true) && smtp_parse_reply(err, false));
    if (err != SMTP_PARSE_OK)
        assert(a->len == 0 && !a->null_path && !a->utf8);
}

/* check_round_trip - an accepted address, written back in brackets, parses to itself. */
static void check_round_trip(const struct smtp_addr *a, bool mail)
{
    char line[SMTP_PATH_BYTES_MAX + 32];
    struct smtp_addr b;
    struct smtp_mail_params mp;
    enum smtp_parse_err err;
    int n;

    if (a->null_path)
        return;
    n = snprintf(line, sizeof(line), "%s<%s>", mail ? "FROM:" : "TO:", a->text);
    assert(n > 0 && (size_t)n < sizeof(line));
    if (mail) {
        /* SMTPUTF8 after the path, in case the address holds UTF-8 */
        memcpy(line + n, " SMTPUTF8", 10);
        err = smtp_parse_mail(line, (size_t)n + 9, 0, &b, &mp);
    } else {
        err = smtp_parse_rcpt(line, (size_t)n, true, &b);
    }
    if (err != SMTP_PARSE_OK || strcmp(a->text, b.text) != 0 || a->local_len != b.local_len ||
        a->quoted != b.quoted || a->domain_literal != b.domain_literal || a->utf8 != b.utf8) {
        fprintf(stderr, "round trip: '%s' -> %d '%s'\n", a->text, err, b.text);
        abort();
    }
}

/* parse_arg - the argument as MAIL and as RCPT. */
static void parse_arg(const char *arg, size_t len, uint64_t size_max)
{
    struct smtp_addr a;
    struct smtp_mail_params mp;
    enum smtp_parse_err err;

    memset(&a, 0xa5, sizeof(a));
    err = smtp_parse_mail(arg, len, size_max, &a, &mp);
    check_addr(&a, err);
    if (err == SMTP_PARSE_OK) {
        assert(!a.utf8 || mp.smtputf8);
        assert(!size_max || mp.size <= size_max);
        assert(mp.has_size || mp.size == 0);
        assert(a.null_path || smtp_domain_of(&a)[0] != '\0');
        check_round_trip(&a, true);
    }

    for (int utf8 = 0; utf8 <= 1; utf8++) {
        memset(&a, 0xa5, sizeof(a));
        err = smtp_parse_rcpt(arg, len, utf8, &a);
        check_addr(&a, err);
        if (err == SMTP_PARSE_OK) {
            assert(!a.null_path);
            assert(!a.utf8 || utf8);
            check_round_trip(&a, false);
        }
    }
}

/* check_bdat - the argument as BDAT's: an accepted one, written back, parses to itself. */
static void check_bdat(const char *arg, size_t len)
{
    char line[48];
    uint64_t size, again;
    bool last, last_again;
    int n;

    if (!smtp_parse_bdat(arg, len, &size, &last))
        return;
    assert(len > 0 && arg[0] >= '0' && arg[0] <= '9');
    n = snprintf(line, sizeof(line), "%llu%s", (unsigned long long)size, last ? " LAST" : "");
    assert(n > 0 && (size_t)n < sizeof(line));
    assert(smtp_parse_bdat(line, (size_t)n, &again, &last_again));
    assert(again == size && last_again == last);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    struct smtp_cmd cmd;
    enum smtp_parse_err err;

    if (!buf)
        return 0;
    memcpy(buf, data, size);

    err = smtp_cmd_parse(buf, size, &cmd);
    assert(err == SMTP_PARSE_OK || err == SMTP_PARSE_NUL || err == SMTP_PARSE_UNKNOWN_COMMAND);
    assert((err == SMTP_PARSE_OK) == (cmd.verb != SMTP_VERB_UNKNOWN));
    assert(cmd.arg >= buf && cmd.arg + cmd.arg_len <= buf + size);
    assert(cmd.arg_len == 0 || (cmd.arg[0] != ' ' && cmd.arg[cmd.arg_len - 1] != ' '));
    assert(smtp_verb_name(cmd.verb) != NULL);
    if (err == SMTP_PARSE_OK) {
        parse_arg(cmd.arg, cmd.arg_len, 1000);
        check_bdat(cmd.arg, cmd.arg_len);
    }

    /* The whole input as an argument too: the parsers must not rely on smtp_cmd_parse()
     * having refused control bytes first. */
    parse_arg(buf, size, 0);
    check_bdat(buf, size);

    free(buf);
    return 0;
}
