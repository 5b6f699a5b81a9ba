/*
 * test_smtp_parse.c - table-driven tests of net/smtp_parse.c: command lines, MAIL and RCPT
 * arguments (addresses, limits, UTF-8, parameters), BDAT arguments, reply lines and verb
 * names.
 *
 * Each address row is {command, input, SIZE limit, expected result, expected canonical text,
 * flags}. For every accepted address the test also checks the invariants the rest of the relay
 * relies on (text is a C string of len bytes, local_len and smtp_domain_of() agree with the
 * text) and that the canonical text parses back to itself.
 */
#include <stdint.h>
#include <string.h>

#include "net/smtp_parse.h"
#include "tests/unit/check.h"

/* S(lit) - a string literal and its length, so rows can hold NUL bytes. */
#define S(lit) lit, sizeof(lit) - 1

/* Long names, built from literals: label and local-part lengths in bytes. */
#define X10  "xxxxxxxxxx"
#define X60  X10 X10 X10 X10 X10 X10
#define X62  X60 "xx"
#define X63  X60 "xxx"
#define X64  X60 "xxxx"
#define X65  X60 "xxxxx"
#define D252 X63 "." X63 "." X63 "." X60            /* 63*3 + 60 + 3 dots = 252 bytes */
#define D253 X63 "." X63 "." X63 "." X60 "x"        /* 253 */
#define D255 X63 "." X63 "." X63 "." X63            /* 255 */
#define D256 X63 "." X63 "." X63 "." X60 "x.xx"     /* 256 */

enum kind { MAIL, RCPT };

enum {
    F_NULL     = 1 << 0,          /* from->null_path */
    F_QUOTED   = 1 << 1,          /* addr->quoted */
    F_LITERAL  = 1 << 2,          /* addr->domain_literal */
    F_UTF8     = 1 << 3,          /* addr->utf8 */
    F_SMTPUTF8 = 1 << 4,          /* params->smtputf8 */
    F_SIZE     = 1 << 5,          /* params->has_size */
    I_SMTPUTF8 = 1 << 8,          /* input: RCPT in a transaction that declared SMTPUTF8 */
};

#define F_OUT_MASK (F_NULL | F_QUOTED | F_LITERAL | F_UTF8 | F_SMTPUTF8 | F_SIZE)

struct addr_row {
    enum kind kind;               /* which parser */
    const char *in;               /* argument after the verb */
    size_t in_len;                /* bytes of in */
    uint64_t size_max;            /* message_bytes_max for MAIL, 0 = no limit */
    enum smtp_parse_err err;      /* expected result */
    const char *text;             /* expected canonical text when err is OK */
    unsigned flags;               /* F_* expected, I_* input */
    uint64_t size;                /* expected params->size */
    enum smtp_body body;          /* expected params->body */
};

#define OK      SMTP_PARSE_OK
#define SYNTAX  SMTP_PARSE_BAD_SYNTAX
#define SENDER  SMTP_PARSE_BAD_SENDER
#define RCPTBAD SMTP_PARSE_BAD_RECIPIENT
#define LOCAL   SMTP_PARSE_LOCAL_TOO_LONG
#define DOMAIN  SMTP_PARSE_DOMAIN_TOO_LONG
#define PATH    SMTP_PARSE_PATH_TOO_LONG
#define PARAM   SMTP_PARSE_BAD_PARAM
#define UNSUPP  SMTP_PARSE_UNSUPPORTED_PARAM
#define TOOBIG  SMTP_PARSE_SIZE_TOO_BIG
#define NOUTF8  SMTP_PARSE_UTF8_NOT_DECLARED

static const struct addr_row addr_rows[] = {
    /* plain, case, spaces */
    { MAIL, S("FROM:<user@example.com>"), 0, OK, "user@example.com", 0, 0, 0 },
    { MAIL, S("from:<User@Example.COM>"), 0, OK, "User@example.com", 0, 0, 0 },
    { MAIL, S("FrOm:<a@B.c>"), 0, OK, "a@b.c", 0, 0, 0 },
    { MAIL, S("FROM: <a@b.c>"), 0, OK, "a@b.c", 0, 0, 0 },
    { MAIL, S("FROM:    <a@b.c>"), 0, OK, "a@b.c", 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c>   "), 0, OK, "a@b.c", 0, 0, 0 },
    { MAIL, S("FROM :<a@b.c>"), 0, SYNTAX, NULL, 0, 0, 0 },
    { MAIL, S(" FROM:<a@b.c>"), 0, SYNTAX, NULL, 0, 0, 0 },
    { MAIL, S("FROM<a@b.c>"), 0, SYNTAX, NULL, 0, 0, 0 },
    { MAIL, S("TO:<a@b.c>"), 0, SYNTAX, NULL, 0, 0, 0 },
    { MAIL, S(""), 0, SYNTAX, NULL, 0, 0, 0 },
    { MAIL, S("FROM:\t<a@b.c>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:< a@b.c>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c >"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a @b.c>"), 0, SENDER, NULL, 0, 0, 0 },
    /* null path */
    { MAIL, S("FROM:<>"), 0, OK, "", F_NULL, 0, 0 },
    { MAIL, S("FROM: <> SIZE=10"), 0, OK, "", F_NULL | F_SIZE, 10, 0 },
    { MAIL, S("FROM:<>x"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:< >"), 0, SENDER, NULL, 0, 0, 0 },
    /* brackets and junk */
    { MAIL, S("FROM:"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:a@b.c"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:a@b.c>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<<a@b.c>>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c>x"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c>>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c>SIZE=1"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:Name <a@b.c>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c\0>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a\0@b.c>"), 0, SENDER, NULL, 0, 0, 0 },
    /* local part: dot-atom, %, !, bang paths */
    { MAIL, S("FROM:<first.last@x.example>"), 0, OK, "first.last@x.example", 0, 0, 0 },
    { MAIL, S("FROM:<!#$%&'*+-/=?^_`{|}~@x.example>"), 0, OK,
      "!#$%&'*+-/=?^_`{|}~@x.example", 0, 0, 0 },
    { MAIL, S("FROM:<user%other.example@relay.example>"), 0, OK,
      "user%other.example@relay.example", 0, 0, 0 },
    { MAIL, S("FROM:<host!user@relay.example>"), 0, OK, "host!user@relay.example", 0, 0, 0 },
    { MAIL, S("FROM:<a!b!user@relay.example>"), 0, OK, "a!b!user@relay.example", 0, 0, 0 },
    { MAIL, S("FROM:<host!user>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<user%other.example>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<user>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<Postmaster>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<.a@b.c>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a.@b.c>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a..b@b.c>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b@c.d>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a(b)@c.d>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<@b.c>"), 0, SENDER, NULL, 0, 0, 0 },
    /* quoted local parts */
    { MAIL, S("FROM:<\"john\"@x.example>"), 0, OK, "john@x.example", 0, 0, 0 },
    { MAIL, S("FROM:<\"j\\ohn\"@x.example>"), 0, OK, "john@x.example", 0, 0, 0 },
    { MAIL, S("FROM:<\"john.doe\"@x.example>"), 0, OK, "john.doe@x.example", 0, 0, 0 },
    { MAIL, S("FROM:<\"john doe\"@x.example>"), 0, OK, "\"john doe\"@x.example", F_QUOTED, 0, 0 },
    { MAIL, S("FROM:<\"a@b\"@x.example>"), 0, OK, "\"a@b\"@x.example", F_QUOTED, 0, 0 },
    { MAIL, S("FROM:<\"a\\\"b\"@x.example>"), 0, OK, "\"a\\\"b\"@x.example", F_QUOTED, 0, 0 },
    { MAIL, S("FROM:<\"a\\\\b\"@x.example>"), 0, OK, "\"a\\\\b\"@x.example", F_QUOTED, 0, 0 },
    { MAIL, S("FROM:<\"a\\ b\"@x.example>"), 0, OK, "\"a b\"@x.example", F_QUOTED, 0, 0 },
    { MAIL, S("FROM:<\"a..b\"@x.example>"), 0, OK, "\"a..b\"@x.example", F_QUOTED, 0, 0 },
    { MAIL, S("FROM:<\".a\"@x.example>"), 0, OK, "\".a\"@x.example", F_QUOTED, 0, 0 },
    { MAIL, S("FROM:<\"\"@x.example>"), 0, OK, "\"\"@x.example", F_QUOTED, 0, 0 },
    { MAIL, S("FROM:<\"a>b\"@x.example>"), 0, OK, "\"a>b\"@x.example", F_QUOTED, 0, 0 },
    { MAIL, S("FROM:<\"john@x.example>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<\"a\tb\"@x.example>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<\"a\\\tb\"@x.example>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<\"a\"b@x.example>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a.\"b\"@x.example>"), 0, SENDER, NULL, 0, 0, 0 },
    /* source routes (RFC 5321 3.6.1): checked, then dropped */
    { MAIL, S("FROM:<@a.example,@b.example:user@c.example>"), 0, OK, "user@c.example", 0, 0, 0 },
    { MAIL, S("FROM:<@a.example:User@C.Example>"), 0, OK, "User@c.example", 0, 0, 0 },
    { MAIL, S("FROM:<@a.example,b.example:user@c.example>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<@a.example user@c.example>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<@a.example:>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<@:user@c.example>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<@a..example:user@c.example>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<@[192.0.2.1]:user@c.example>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<@a.example,:user@c.example>"), 0, SENDER, NULL, 0, 0, 0 },
    /* domains */
    { MAIL, S("FROM:<a@localhost>"), 0, OK, "a@localhost", 0, 0, 0 },
    { MAIL, S("FROM:<a@b-c.D-E.example>"), 0, OK, "a@b-c.d-e.example", 0, 0, 0 },
    { MAIL, S("FROM:<a@123.example>"), 0, OK, "a@123.example", 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c.>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b..c>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@.b.c>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@-b.c>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b-.c>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b_c.d>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c:25>"), 0, SENDER, NULL, 0, 0, 0 },
    /* address literals */
    { MAIL, S("FROM:<a@[192.0.2.1]>"), 0, OK, "a@[192.0.2.1]", F_LITERAL, 0, 0 },
    { MAIL, S("FROM:<a@[IPv6:2001:DB8::1]>"), 0, OK, "a@[IPv6:2001:db8::1]", F_LITERAL, 0, 0 },
    { MAIL, S("FROM:<a@[ipv6:2001:db8::1]>"), 0, OK, "a@[IPv6:2001:db8::1]", F_LITERAL, 0, 0 },
    { MAIL, S("FROM:<a@[IPv6:::ffff:192.0.2.1]>"), 0, OK, "a@[IPv6:::ffff:192.0.2.1]",
      F_LITERAL, 0, 0 },
    { MAIL, S("FROM:<a@[192.0.2.256]>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[192.0.2]>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[01.2.3.4]>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[ 192.0.2.1]>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[2001:db8::1]>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[IPv6:2001:db8::g]>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[IPv6:192.0.2.1]>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[IPv6:fe80::1%eth0]>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[IPv6:]>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[x-tag:anything]>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[]>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[192.0.2.1>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[192.0.2.1]x>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[192.0.2.1\0junk]>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@[IPv6:" X60 X10 "]>"), 0, SENDER, NULL, 0, 0, 0 },
    /* limits: label 63/64, local 64/65, domain 255/256, path 256/257 */
    { MAIL, S("FROM:<a@" X63 ".example>"), 0, OK, "a@" X63 ".example", 0, 0, 0 },
    { MAIL, S("FROM:<a@" X64 ".example>"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<" X64 "@x.example>"), 0, OK, X64 "@x.example", 0, 0, 0 },
    { MAIL, S("FROM:<" X65 "@x.example>"), 0, LOCAL, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<\"" X62 "\"@x.example>"), 0, OK, X62 "@x.example", 0, 0, 0 },
    { MAIL, S("FROM:<\"" X63 "\"@x.example>"), 0, LOCAL, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@" D252 ">"), 0, OK, "a@" D252, 0, 0, 0 },
    { MAIL, S("FROM:<a@" D253 ">"), 0, PATH, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@" D255 ">"), 0, PATH, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@" D256 ">"), 0, DOMAIN, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<@" X63 "." X63 "." X63 ",@" X63 ":a@b.c>"), 0, PATH, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<@" D256 ":a@b.c>"), 0, DOMAIN, NULL, 0, 0, 0 },
    /* UTF-8 */
    { MAIL, S("FROM:<j\xc3\xb6rg@example.com> SMTPUTF8"), 0, OK, "j\xc3\xb6rg@example.com",
      F_UTF8 | F_SMTPUTF8, 0, 0 },
    { MAIL, S("FROM:<j\xc3\xb6rg@example.com> BODY=8BITMIME SMTPUTF8"), 0, OK,
      "j\xc3\xb6rg@example.com", F_UTF8 | F_SMTPUTF8, 0, SMTP_BODY_8BITMIME },
    { MAIL, S("FROM:<\xf0\x9f\x98\x80@example.com> SMTPUTF8"), 0, OK,
      "\xf0\x9f\x98\x80@example.com", F_UTF8 | F_SMTPUTF8, 0, 0 },
    { MAIL, S("FROM:<a@B\xc3\xbc" "CHER.example> SMTPUTF8"), 0, OK,
      "a@b\xc3\xbc" "cher.example", F_UTF8 | F_SMTPUTF8, 0, 0 },
    { MAIL, S("FROM:<\"j\xc3\xb6rg\"@example.com> SMTPUTF8"), 0, OK, "j\xc3\xb6rg@example.com",
      F_UTF8 | F_SMTPUTF8, 0, 0 },
    { MAIL, S("FROM:<\"j\xc3\xb6 rg\"@example.com> SMTPUTF8"), 0, OK,
      "\"j\xc3\xb6 rg\"@example.com", F_UTF8 | F_SMTPUTF8 | F_QUOTED, 0, 0 },
    { MAIL, S("FROM:<j\xc3\xb6rg@example.com>"), 0, NOUTF8, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b\xc3\xbc" "cher.example> SIZE=1"), 0, NOUTF8, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<\xc0\xaf@example.com> SMTPUTF8"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<\xe0\x80\xaf@example.com> SMTPUTF8"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<\xf0\x80\x80\xaf@example.com> SMTPUTF8"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<\xed\xa0\x80@example.com> SMTPUTF8"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<\xf4\x90\x80\x80@example.com> SMTPUTF8"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<\xf5\x80\x80\x80@example.com> SMTPUTF8"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<\x80@example.com> SMTPUTF8"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a\xc3@example.com> SMTPUTF8"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a\xe2\x82@example.com> SMTPUTF8"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a\xc2\x85@example.com> SMTPUTF8"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a\xff@example.com> SMTPUTF8"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b\xc0\x80.example> SMTPUTF8"), 0, SENDER, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<@r\xc3\xa9.example:a@b.c> SMTPUTF8"), 0, SENDER, NULL, 0, 0, 0 },
    /* SIZE */
    { MAIL, S("FROM:<a@b.c> SIZE=1000"), 0, OK, "a@b.c", F_SIZE, 1000, 0 },
    { MAIL, S("FROM:<a@b.c> size=0"), 0, OK, "a@b.c", F_SIZE, 0, 0 },
    { MAIL, S("FROM:<a@b.c>   SIZE=007  "), 0, OK, "a@b.c", F_SIZE, 7, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=1000"), 1000, OK, "a@b.c", F_SIZE, 1000, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=1001"), 1000, TOOBIG, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=18446744073709551615"), 0, OK, "a@b.c", F_SIZE,
      UINT64_MAX, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=18446744073709551615"), 1000, TOOBIG, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=18446744073709551616"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=99999999999999999999"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=000000000000000000001"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE="), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=abc"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=-1"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=+1"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=1 SIZE=1"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=1=2"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=10\tBODY=7BIT"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=2000 RET=FULL"), 1000, UNSUPP, NULL, 0, 0, 0 },
    /* BODY */
    { MAIL, S("FROM:<a@b.c> BODY=8BITMIME"), 0, OK, "a@b.c", 0, 0, SMTP_BODY_8BITMIME },
    { MAIL, S("FROM:<a@b.c> body=7bit"), 0, OK, "a@b.c", 0, 0, SMTP_BODY_7BIT },
    { MAIL, S("FROM:<a@b.c> BODY=BINARYMIME"), 0, UNSUPP, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> BODY=8BIT"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> BODY"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> BODY=7BIT BODY=7BIT"), 0, PARAM, NULL, 0, 0, 0 },
    /* SMTPUTF8 */
    { MAIL, S("FROM:<a@b.c> SMTPUTF8"), 0, OK, "a@b.c", F_SMTPUTF8, 0, 0 },
    { MAIL, S("FROM:<a@b.c> smtputf8"), 0, OK, "a@b.c", F_SMTPUTF8, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SMTPUTF8=yes"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SMTPUTF8 SMTPUTF8"), 0, PARAM, NULL, 0, 0, 0 },
    /* AUTH (accepted, ignored) */
    { MAIL, S("FROM:<a@b.c> AUTH=<>"), 0, OK, "a@b.c", 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> AUTH=e+3Dmc2@example.com"), 0, OK, "a@b.c", 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> AUTH=a+4"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> AUTH=a+zz"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> AUTH="), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> AUTH=\xc3\xa9 SMTPUTF8"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> AUTH=<> AUTH=<>"), 0, PARAM, NULL, 0, 0, 0 },
    /* all together, any order */
    { MAIL, S("FROM:<a@b.c> smtputf8 AUTH=<> body=8bitmime SIZE=42"), 100, OK, "a@b.c",
      F_SMTPUTF8 | F_SIZE, 42, SMTP_BODY_8BITMIME },
    /* unknown and malformed keywords */
    { MAIL, S("FROM:<a@b.c> RET=HDRS"), 0, UNSUPP, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> ENVID=QQ314159"), 0, UNSUPP, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> NOTIFY=NEVER"), 0, UNSUPP, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> X-FOO"), 0, UNSUPP, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> -SIZE=1"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> =1"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SI_ZE=1"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> S\xc3\xa9=1"), 0, PARAM, NULL, 0, 0, 0 },
    { MAIL, S("FROM:<a@b.c> SIZE=1\0"), 0, PARAM, NULL, 0, 0, 0 },

    /* RCPT */
    { RCPT, S("TO:<user@example.com>"), 0, OK, "user@example.com", 0, 0, 0 },
    { RCPT, S("to: <User@EXAMPLE.com>  "), 0, OK, "User@example.com", 0, 0, 0 },
    { RCPT, S("TO:<@a.example,@b.example:user@c.example>"), 0, OK, "user@c.example", 0, 0, 0 },
    { RCPT, S("TO:<\"a b\"@[IPv6:2001:db8::1]>"), 0, OK, "\"a b\"@[IPv6:2001:db8::1]",
      F_QUOTED | F_LITERAL, 0, 0 },
    { RCPT, S("TO:<Postmaster>"), 0, OK, "postmaster", 0, 0, 0 },
    { RCPT, S("TO:<POSTMASTER>"), 0, OK, "postmaster", 0, 0, 0 },
    { RCPT, S("TO:<postmaster@Example.ORG>"), 0, OK, "postmaster@example.org", 0, 0, 0 },
    { RCPT, S("TO:<\"Postmaster\">"), 0, RCPTBAD, NULL, 0, 0, 0 },
    { RCPT, S("TO:<@a.example:Postmaster>"), 0, RCPTBAD, NULL, 0, 0, 0 },
    { RCPT, S("TO:<postmasters>"), 0, RCPTBAD, NULL, 0, 0, 0 },
    { RCPT, S("TO:<user>"), 0, RCPTBAD, NULL, 0, 0, 0 },
    { RCPT, S("TO:<host!user>"), 0, RCPTBAD, NULL, 0, 0, 0 },
    { RCPT, S("TO:<>"), 0, RCPTBAD, NULL, 0, 0, 0 },
    { RCPT, S("TO:a@b.c"), 0, RCPTBAD, NULL, 0, 0, 0 },
    { RCPT, S("TO:<a@b.c>x"), 0, RCPTBAD, NULL, 0, 0, 0 },
    { RCPT, S("TO:<a@b.c.>"), 0, RCPTBAD, NULL, 0, 0, 0 },
    { RCPT, S("FROM:<a@b.c>"), 0, SYNTAX, NULL, 0, 0, 0 },
    { RCPT, S("TO <a@b.c>"), 0, SYNTAX, NULL, 0, 0, 0 },
    { RCPT, S("TO:<" X65 "@x.example>"), 0, LOCAL, NULL, 0, 0, 0 },
    { RCPT, S("TO:<a@" D256 ">"), 0, DOMAIN, NULL, 0, 0, 0 },
    { RCPT, S("TO:<a@" D253 ">"), 0, PATH, NULL, 0, 0, 0 },
    { RCPT, S("TO:<a@b.c> NOTIFY=NEVER"), 0, UNSUPP, NULL, 0, 0, 0 },
    { RCPT, S("TO:<a@b.c> ORCPT=rfc822;a@b.c"), 0, UNSUPP, NULL, 0, 0, 0 },
    { RCPT, S("TO:<a@b.c> SIZE=1"), 0, UNSUPP, NULL, 0, 0, 0 },
    { RCPT, S("TO:<a@b.c> =x"), 0, PARAM, NULL, 0, 0, 0 },
    { RCPT, S("TO:<j\xc3\xb6rg@example.com>"), 0, NOUTF8, NULL, 0, 0, 0 },
    { RCPT, S("TO:<j\xc3\xb6rg@example.com>"), 0, OK, "j\xc3\xb6rg@example.com",
      F_UTF8 | I_SMTPUTF8, 0, 0 },
    { RCPT, S("TO:<j\xc0\xb6rg@example.com>"), 0, RCPTBAD, NULL, I_SMTPUTF8, 0, 0 },
};

/* Command lines: {line, expected result, expected verb, expected argument}. */
struct cmd_row {
    const char *line;             /* without CRLF */
    size_t len;                   /* bytes of line */
    enum smtp_parse_err err;      /* expected result */
    enum smtp_verb verb;          /* expected verb */
    const char *arg;              /* expected argument (checked when err is OK) */
};

static const struct cmd_row cmd_rows[] = {
    { S("HELO client.example"), OK, SMTP_VERB_HELO, "client.example" },
    { S("EHLO client.example"), OK, SMTP_VERB_EHLO, "client.example" },
    { S("MAIL FROM:<a@b.c>"), OK, SMTP_VERB_MAIL, "FROM:<a@b.c>" },
    { S("RCPT TO:<a@b.c>"), OK, SMTP_VERB_RCPT, "TO:<a@b.c>" },
    { S("DATA"), OK, SMTP_VERB_DATA, "" },
    { S("BDAT 100 LAST"), OK, SMTP_VERB_BDAT, "100 LAST" },
    { S("RSET"), OK, SMTP_VERB_RSET, "" },
    { S("NOOP"), OK, SMTP_VERB_NOOP, "" },
    { S("QUIT"), OK, SMTP_VERB_QUIT, "" },
    { S("VRFY user"), OK, SMTP_VERB_VRFY, "user" },
    { S("EXPN list"), OK, SMTP_VERB_EXPN, "list" },
    { S("HELP"), OK, SMTP_VERB_HELP, "" },
    { S("STARTTLS"), OK, SMTP_VERB_STARTTLS, "" },
    { S("AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q="), OK, SMTP_VERB_AUTH, "PLAIN dGVzdAB0ZXN0AHRlc3Q=" },
    { S("quit"), OK, SMTP_VERB_QUIT, "" },
    { S("sTaRtTlS"), OK, SMTP_VERB_STARTTLS, "" },
    { S("mail from:<a@b.c>"), OK, SMTP_VERB_MAIL, "from:<a@b.c>" },
    { S("MAIL   FROM:<a@b.c>"), OK, SMTP_VERB_MAIL, "FROM:<a@b.c>" },
    { S("MAIL FROM:<a@b.c> SIZE=1   "), OK, SMTP_VERB_MAIL, "FROM:<a@b.c> SIZE=1" },
    { S("NOOP   "), OK, SMTP_VERB_NOOP, "" },
    { S("NOOP \t"), OK, SMTP_VERB_NOOP, "\t" },
    { S("HELO a  b "), OK, SMTP_VERB_HELO, "a  b" },
    { S("MAIL FROM:<j\xc3\xb6rg@x.example>"), OK, SMTP_VERB_MAIL, "FROM:<j\xc3\xb6rg@x.example>" },
    { S(""), SMTP_PARSE_UNKNOWN_COMMAND, SMTP_VERB_UNKNOWN, NULL },
    { S(" QUIT"), SMTP_PARSE_UNKNOWN_COMMAND, SMTP_VERB_UNKNOWN, NULL },
    { S("QUITX"), SMTP_PARSE_UNKNOWN_COMMAND, SMTP_VERB_UNKNOWN, NULL },
    { S("QUI"), SMTP_PARSE_UNKNOWN_COMMAND, SMTP_VERB_UNKNOWN, NULL },
    { S("STARTTL"), SMTP_PARSE_UNKNOWN_COMMAND, SMTP_VERB_UNKNOWN, NULL },
    { S("MAILFROM:<a@b.c>"), SMTP_PARSE_UNKNOWN_COMMAND, SMTP_VERB_UNKNOWN, NULL },
    { S("MAIL\tFROM:<a@b.c>"), SMTP_PARSE_UNKNOWN_COMMAND, SMTP_VERB_UNKNOWN, NULL },
    { S("XYZZY"), SMTP_PARSE_UNKNOWN_COMMAND, SMTP_VERB_UNKNOWN, NULL },
    { S("UNKNOWN"), SMTP_PARSE_UNKNOWN_COMMAND, SMTP_VERB_UNKNOWN, NULL },
    { S("GET / HTTP/1.1"), SMTP_PARSE_UNKNOWN_COMMAND, SMTP_VERB_UNKNOWN, NULL },
    { S("Q\xc3\x9cIT"), SMTP_PARSE_UNKNOWN_COMMAND, SMTP_VERB_UNKNOWN, NULL },
    { S("QUIT\0"), SMTP_PARSE_NUL, SMTP_VERB_UNKNOWN, NULL },
    { S("\0QUIT"), SMTP_PARSE_NUL, SMTP_VERB_UNKNOWN, NULL },
    { S("MAIL FROM:<a\0@b.c>"), SMTP_PARSE_NUL, SMTP_VERB_UNKNOWN, NULL },
    { S("NOOP \r"), SMTP_PARSE_NUL, SMTP_VERB_UNKNOWN, NULL },
    { S("NOOP \n"), SMTP_PARSE_NUL, SMTP_VERB_UNKNOWN, NULL },
    { S("NOOP \x7f"), SMTP_PARSE_NUL, SMTP_VERB_UNKNOWN, NULL },
    { S("NOOP \x1b[31m"), SMTP_PARSE_NUL, SMTP_VERB_UNKNOWN, NULL },
    { S("NOOP \x01"), SMTP_PARSE_NUL, SMTP_VERB_UNKNOWN, NULL },
    { S("XYZZY\x1f"), SMTP_PARSE_NUL, SMTP_VERB_UNKNOWN, NULL },
};

/* Reply lines: {result, for_mail, expected line}. */
struct reply_row {
    enum smtp_parse_err err;      /* result */
    bool for_mail;                /* the MAIL column */
    const char *reply;            /* expected reply line */
};

static const struct reply_row reply_rows[] = {
    { SMTP_PARSE_UNKNOWN_COMMAND, false, "500 5.5.1 Command unrecognized" },
    { SMTP_PARSE_BAD_SYNTAX, false, "501 5.5.4 Syntax error in arguments" },
    { SMTP_PARSE_NUL, false, "500 5.5.2 Line contains invalid characters" },
    { SMTP_PARSE_BAD_SENDER, true, "501 5.1.7 Bad sender address syntax" },
    { SMTP_PARSE_BAD_RECIPIENT, false, "501 5.1.3 Bad recipient address syntax" },
    { SMTP_PARSE_LOCAL_TOO_LONG, false, "501 5.1.3 Local part too long (64 bytes max)" },
    { SMTP_PARSE_LOCAL_TOO_LONG, true, "501 5.1.7 Local part too long (64 bytes max)" },
    { SMTP_PARSE_DOMAIN_TOO_LONG, false, "501 5.1.3 Domain too long (255 bytes max)" },
    { SMTP_PARSE_DOMAIN_TOO_LONG, true, "501 5.1.7 Domain too long (255 bytes max)" },
    { SMTP_PARSE_PATH_TOO_LONG, false, "501 5.1.3 Path too long (256 bytes max)" },
    { SMTP_PARSE_PATH_TOO_LONG, true, "501 5.1.7 Path too long (256 bytes max)" },
    { SMTP_PARSE_BAD_PARAM, true, "501 5.5.4 Syntax error in parameters" },
    { SMTP_PARSE_UNSUPPORTED_PARAM, true, "555 5.5.4 Unsupported parameter" },
    { SMTP_PARSE_SIZE_TOO_BIG, true, "552 5.3.4 Message size exceeds fixed maximum message size" },
    { SMTP_PARSE_UTF8_NOT_DECLARED, false, "553 5.6.7 Non-ASCII address requires SMTPUTF8" },
    { SMTP_PARSE_UTF8_NOT_DECLARED, true, "553 5.6.7 Non-ASCII address requires SMTPUTF8" },
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* check_addr_invariants - what every caller may assume of a struct smtp_addr. */
static void check_addr_invariants(const struct smtp_addr *a, const char *in)
{
    const char *at = strrchr(a->text, '@');
    size_t local_len = at ? (size_t)(at - a->text) : a->len;

    CHECK(a->len <= SMTP_PATH_BYTES_MAX && a->text[a->len] == '\0' && strlen(a->text) == a->len,
          "%s: text is not a C string of len bytes", in);
    CHECK(a->local_len == local_len, "%s: local_len %u, want %zu", in, a->local_len, local_len);
    CHECK(strcmp(smtp_domain_of(a), at ? at + 1 : "") == 0, "%s: domain_of '%s'", in,
          smtp_domain_of(a));
    CHECK(!a->null_path || a->len == 0, "%s: null path with text", in);
}

/* run_addr_row - one address row, and the round trip of its canonical text. */
static void run_addr_row(const struct addr_row *r)
{
    struct smtp_addr a;
    struct smtp_mail_params mp = { 0 };
    enum smtp_parse_err err;
    unsigned got;

    memset(&a, 0x5a, sizeof(a));
    if (r->kind == MAIL)
        err = smtp_parse_mail(r->in, r->in_len, r->size_max, &a, &mp);
    else
        err = smtp_parse_rcpt(r->in, r->in_len, r->flags & I_SMTPUTF8, &a);
    CHECK(err == r->err, "%s: result %d, want %d", r->in, err, r->err);
    check_addr_invariants(&a, r->in);
    if (err != SMTP_PARSE_OK) {
        CHECK(a.len == 0 && !a.null_path, "%s: output left after an error", r->in);
        return;
    }
    CHECK(strcmp(a.text, r->text) == 0, "%s: text '%s', want '%s'", r->in, a.text, r->text);
    got = (a.null_path ? F_NULL : 0) | (a.quoted ? F_QUOTED : 0) |
          (a.domain_literal ? F_LITERAL : 0) | (a.utf8 ? F_UTF8 : 0) |
          (mp.smtputf8 ? F_SMTPUTF8 : 0) | (mp.has_size ? F_SIZE : 0);
    CHECK(got == (r->flags & F_OUT_MASK), "%s: flags %#x, want %#x", r->in, got,
          r->flags & F_OUT_MASK);
    CHECK(mp.size == r->size, "%s: size %llu", r->in, (unsigned long long)mp.size);
    CHECK(mp.body == r->body, "%s: body %d", r->in, mp.body);

    /* The canonical text parses back to itself. */
    if (!a.null_path) {
        char again[SMTP_PATH_BYTES_MAX + 32];
        struct smtp_addr b;
        int n = snprintf(again, sizeof(again), "%s<%s> SMTPUTF8", r->kind == MAIL ? "FROM:" : "TO:",
                         a.text);

        if (r->kind == MAIL)
            err = smtp_parse_mail(again, (size_t)n, 0, &b, &mp);
        else
            err = smtp_parse_rcpt(again, (size_t)n - 9, true, &b);
        CHECK(err == SMTP_PARSE_OK && strcmp(a.text, b.text) == 0 && a.local_len == b.local_len,
              "%s: canonical text '%s' does not parse back (%d, '%s')", r->in, a.text, err,
              b.text);
    }
}

/* run_cmd_row - one command-line row. */
static void run_cmd_row(const struct cmd_row *r)
{
    struct smtp_cmd cmd;
    enum smtp_parse_err err = smtp_cmd_parse(r->line, r->len, &cmd);

    CHECK(err == r->err, "'%s': result %d, want %d", r->line, err, r->err);
    CHECK(cmd.verb == r->verb, "'%s': verb %s, want %s", r->line, smtp_verb_name(cmd.verb),
          smtp_verb_name(r->verb));
    CHECK(cmd.arg >= r->line && cmd.arg + cmd.arg_len <= r->line + r->len,
          "'%s': arg outside the line", r->line);
    if (err == SMTP_PARSE_OK)
        CHECK(cmd.arg_len == strlen(r->arg) && memcmp(cmd.arg, r->arg, cmd.arg_len) == 0,
              "'%s': arg '%.*s', want '%s'", r->line, (int)cmd.arg_len, cmd.arg, r->arg);
}

/* BDAT arguments: {argument, accepted, size, LAST}. */
static const struct bdat_row {
    const char *arg;
    size_t len;
    bool ok;
    uint64_t size;
    bool last;
} bdat_rows[] = {
    { S("0"), true, 0, false },
    { S("1000"), true, 1000, false },
    { S("1000 LAST"), true, 1000, true },
    { S("0 last"), true, 0, true },
    { S("7   LaSt"), true, 7, true },
    { S("12 "), true, 12, false },                       /* the splitter trims; harmless */
    { S("0000000000000000042 LAST"), true, 42, true },   /* 19 digits */
    { S("9999999999999999999"), true, 9999999999999999999ull, false },
    { S("10000000000000000000"), false, 0, false },      /* 20 digits: not 64-bit safe */
    { S("18446744073709551616 LAST"), false, 0, false }, /* 2^64 */
    { S(""), false, 0, false },
    { S("LAST"), false, 0, false },
    { S("-1"), false, 0, false },
    { S("+1"), false, 0, false },
    { S("1x"), false, 0, false },
    { S("1 LASTX"), false, 0, false },
    { S("1 LAS"), false, 0, false },
    { S("1 LAST now"), false, 0, false },
    { S("1\tLAST"), false, 0, false },
    { S("0x10"), false, 0, false },
};

static void run_bdat_row(const struct bdat_row *r)
{
    uint64_t size = 12345;
    bool last = false;
    bool ok = smtp_parse_bdat(r->arg, r->len, &size, &last);

    CHECK(ok == r->ok, "BDAT '%s': %s, want %s", r->arg, ok ? "ok" : "refused",
          r->ok ? "ok" : "refused");
    if (ok && r->ok)
        CHECK(size == r->size && last == r->last, "BDAT '%s': %llu%s", r->arg,
              (unsigned long long)size, last ? " LAST" : "");
}

int main(void)
{
    unsigned rows = 0;

    for (size_t i = 0; i < COUNT(bdat_rows); i++)
        run_bdat_row(&bdat_rows[i]);

    for (size_t i = 0; i < COUNT(addr_rows); i++)
        run_addr_row(&addr_rows[i]);
    for (size_t i = 0; i < COUNT(cmd_rows); i++)
        run_cmd_row(&cmd_rows[i]);
    for (size_t i = 0; i < COUNT(reply_rows); i++) {
        const char *got = smtp_parse_reply(reply_rows[i].err, reply_rows[i].for_mail);
        CHECK(strcmp(got, reply_rows[i].reply) == 0, "reply %d: '%s'", reply_rows[i].err, got);
    }
    rows = COUNT(addr_rows) + COUNT(cmd_rows) + COUNT(reply_rows) + COUNT(bdat_rows);

    /* Every result has a reply line whose first three bytes are a code and a space. */
    for (int e = 0; e <= SMTP_PARSE_ERR_COUNT; e++) {
        for (int m = 0; m <= 1; m++) {
            const char *r = smtp_parse_reply((enum smtp_parse_err)e, m);
            CHECK(r && strlen(r) > 10 && r[0] >= '2' && r[0] <= '5' && r[3] == ' ',
                  "reply %d/%d: '%s'", e, m, r ? r : "(null)");
        }
    }

    /* Every verb's name parses back to the verb; out of range is UNKNOWN. */
    for (int v = SMTP_VERB_UNKNOWN + 1; v < SMTP_VERB_COUNT; v++) {
        struct smtp_cmd cmd;
        const char *name = smtp_verb_name((enum smtp_verb)v);
        CHECK(smtp_cmd_parse(name, strlen(name), &cmd) == SMTP_PARSE_OK && (int)cmd.verb == v,
              "verb %d '%s' does not parse back", v, name);
    }
    CHECK(strcmp(smtp_verb_name(SMTP_VERB_UNKNOWN), "UNKNOWN") == 0, "UNKNOWN name");
    CHECK(strcmp(smtp_verb_name(SMTP_VERB_COUNT), "UNKNOWN") == 0, "out-of-range name");

    /* NULL with length 0 is an empty input, not a crash. */
    {
        struct smtp_cmd cmd;
        struct smtp_addr a;
        struct smtp_mail_params mp;
        CHECK(smtp_cmd_parse(NULL, 0, &cmd) == SMTP_PARSE_UNKNOWN_COMMAND, "NULL line");
        CHECK(smtp_parse_mail(NULL, 0, 0, &a, &mp) == SMTP_PARSE_BAD_SYNTAX, "NULL MAIL");
        CHECK(smtp_parse_rcpt(NULL, 0, false, &a) == SMTP_PARSE_BAD_SYNTAX, "NULL RCPT");
        uint64_t size;
        bool last;
        CHECK(!smtp_parse_bdat(NULL, 0, &size, &last), "NULL BDAT");
    }

    printf("test_smtp_parse: %u table rows\n", rows);
    return check_done("test_smtp_parse");
}
