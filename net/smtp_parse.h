/*
 * smtp_parse.h - SMTP command line, envelope address and ESMTP parameter parsing (RFC 5321).
 *
 * Pure functions over bytes already read from the network: no allocation, no I/O, no global
 * state. Every input is hostile; every output is bounded by the limits below.
 * Implemented by smtp_parse.c (commands, parameters, replies) and smtp_addr.c (paths).
 */
#ifndef RR_SMTP_PARSE_H
#define RR_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_COMMAND_LINE_BYTES_MAX 512 /* RFC 5321 4.5.3.1.4, including CRLF */
#define SMTP_LOCAL_BYTES_MAX   64       /* RFC 5321 4.5.3.1.1 */
#define SMTP_DOMAIN_BYTES_MAX  255      /* RFC 5321 4.5.3.1.2 */
#define SMTP_PATH_BYTES_MAX    256      /* RFC 5321 4.5.3.1.3, including the angle brackets */
#define SMTP_BDAT_DIGITS_MAX   19       /* BDAT chunk sizes below 10^19 fit in 64 bits */

enum smtp_verb {
    SMTP_VERB_UNKNOWN = 0,
    SMTP_VERB_HELO, SMTP_VERB_EHLO, SMTP_VERB_MAIL, SMTP_VERB_RCPT, SMTP_VERB_DATA,
    SMTP_VERB_BDAT, SMTP_VERB_RSET, SMTP_VERB_NOOP, SMTP_VERB_QUIT, SMTP_VERB_VRFY,
    SMTP_VERB_EXPN, SMTP_VERB_HELP, SMTP_VERB_STARTTLS, SMTP_VERB_AUTH,
    SMTP_VERB_COUNT
};

/* Parse results. Each non-zero value has one reply line in smtp_parse_reply(). */
enum smtp_parse_err {
    SMTP_PARSE_OK = 0,
    SMTP_PARSE_UNKNOWN_COMMAND,   /* 500 5.5.1 */
    SMTP_PARSE_BAD_SYNTAX,        /* 501 5.5.4 generic argument syntax */
    SMTP_PARSE_NUL,               /* 500 5.5.2 NUL or other control byte in a command line */
    SMTP_PARSE_BAD_SENDER,        /* 501 5.1.7 */
    SMTP_PARSE_BAD_RECIPIENT,     /* 501 5.1.3 */
    SMTP_PARSE_LOCAL_TOO_LONG,    /* 501 5.1.3 (or 5.1.7 for MAIL, see the for_mail argument of smtp_parse_reply) */
    SMTP_PARSE_DOMAIN_TOO_LONG,
    SMTP_PARSE_PATH_TOO_LONG,
    SMTP_PARSE_BAD_PARAM,         /* 501 5.5.4 malformed or repeated parameter */
    SMTP_PARSE_UNSUPPORTED_PARAM, /* 555 5.5.4 */
    SMTP_PARSE_SIZE_TOO_BIG,      /* 552 5.3.4 (caller decides the limit, see below) */
    SMTP_PARSE_UTF8_NOT_DECLARED, /* 553 5.6.7 non-ASCII address without SMTPUTF8 */
    SMTP_PARSE_ERR_COUNT
};

/* A command line split into verb and argument; points into the caller's line. */
struct smtp_cmd {
    enum smtp_verb verb;          /* SMTP_VERB_UNKNOWN when not recognised */
    const char *arg;              /* text after the verb and its separating space(s), not copied */
    size_t arg_len;               /* bytes of arg; trailing spaces removed */
};

/* An envelope address in canonical form. */
struct smtp_addr {
    char text[SMTP_PATH_BYTES_MAX + 1]; /* "local@domain", "" for the null path <>,
                                           "postmaster" for <Postmaster>; NUL terminated */
    uint16_t len;                 /* bytes of text */
    uint16_t local_len;           /* bytes of the local part at the start of text */
    bool null_path;               /* <> */
    bool quoted;                  /* local part kept as a quoted-string (needed quoting) */
    bool domain_literal;          /* domain is an address literal [..] */
    bool utf8;                    /* holds non-ASCII (valid UTF-8) bytes */
};

enum smtp_body { SMTP_BODY_DEFAULT = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };

struct smtp_mail_params {
    uint64_t size;                /* SIZE=, 0 when absent */
    bool has_size;
    enum smtp_body body;          /* BODY= */
    bool smtputf8;                /* SMTPUTF8 */
};

/*
 * smtp_cmd_parse - split one command line (without its CRLF) into verb and argument.
 * The verb is matched without regard to case. Returns SMTP_PARSE_OK, SMTP_PARSE_NUL for any
 * NUL/control byte (other than TAB) in the line, or SMTP_PARSE_UNKNOWN_COMMAND.
 */
enum smtp_parse_err smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd);

/*
 * smtp_parse_mail - parse the argument of MAIL: "FROM:<path> [params]". Source routes are
 * stripped (RFC 5321 3.6.1), "%" and "!" stay local-part text, the domain is lower-cased,
 * unnecessary quoting is removed, a trailing dot in the domain is refused. message_bytes_max
 * (0 = no limit) makes SIZE= beyond it SMTP_PARSE_SIZE_TOO_BIG.
 */
enum smtp_parse_err smtp_parse_mail(const char *arg, size_t len, uint64_t message_bytes_max,
                                    struct smtp_addr *from, struct smtp_mail_params *params);

/* smtp_parse_rcpt - parse the argument of RCPT: "TO:<path> [params]"; <> is refused,
 * <Postmaster> (no domain) is accepted. smtputf8 says whether the transaction declared it. */
enum smtp_parse_err smtp_parse_rcpt(const char *arg, size_t len, bool smtputf8,
                                    struct smtp_addr *to);

/* smtp_parse_bdat - parse the argument of BDAT: "n" or "n LAST" (RFC 3030 2: the chunk size
 * in decimal, at most SMTP_BDAT_DIGITS_MAX digits, so that it fits in 64 bits; LAST without
 * regard to case). false for anything else: the caller cannot know where the chunk ends. */
bool smtp_parse_bdat(const char *arg, size_t len, uint64_t *size, bool *last);

/* smtp_parse_reply - the full reply line (code, enhanced code, text, no CRLF) for err.
 * for_mail selects 5.1.7 (sender) instead of 5.1.3 (recipient) for address errors. */
const char *smtp_parse_reply(enum smtp_parse_err err, bool for_mail);

/* smtp_verb_name - upper-case name of a verb ("UNKNOWN" for SMTP_VERB_UNKNOWN). */
const char *smtp_verb_name(enum smtp_verb verb);

/* smtp_domain_of - the domain part of a canonical address ("" when none). */
const char *smtp_domain_of(const struct smtp_addr *addr);

#endif
