/*
 * test_dsn.c - table-driven tests of the bounce builder (core/dsn.c).
 *
 * Every bounce built here passes dsn_check() (tests/unit/dsn_check.h: line ends, line length,
 * the three parts, the boundary only in delimiters, part 2's groups). On top of that:
 *   - dsn_header_end(): a table of buffers and where their header section ends;
 *   - a typical bounce, compared exactly: the message header, the whole of part 2, part 3,
 *     and the recipient paragraphs of part 1;
 *   - a table of rows, each one change to the typical input (hostile addresses, statuses,
 *     host names, replies and headers; expired; UTF-8), with strings that must and must not
 *     appear in the message header or in one part;
 *   - the header section cut at DSN_HEADERS_BYTES_MAX on a field boundary, overlong header
 *     lines folded so that they unfold to the original, leading white space cut;
 *   - boundary collisions planted in the headers and in a reply: the boundary changes and
 *     stays out of the content, including a planted counter ffffffff;
 *   - dates clamped to 1970-9999.
 */
#include "core/dsn.h"
#include "tests/unit/check.h"
#include "tests/unit/dsn_check.h"

#include <stdlib.h>
#include <string.h>

#define S(s) s, sizeof(s) - 1           /* a literal that may hold NUL bytes, and its length */
#define EXPECT_MAX 6                    /* expectations per row */

/* ---- dsn_header_end ---------------------------------------------------------------- */

/* One row: a buffer and where its header section ends. */
struct end_row {
    const char *name;             /* what the row shows */
    const char *buf;              /* the start of a message */
    size_t len;                   /* its bytes */
    size_t want;                  /* dsn_header_end() */
};

static const struct end_row end_rows[] = {
    { "empty buffer", S(""), 0 },
    { "CRLF CRLF", S("A: b\r\nC: d\r\n\r\nbody\r\n"), 14 },
    { "LF LF", S("A: b\nC: d\n\nbody\n"), 11 },
    { "starts with CRLF", S("\r\nbody"), 2 },
    { "starts with LF", S("\nbody"), 1 },
    { "only CRLF", S("\r\n"), 2 },
    { "no empty line", S("A: b\r\nC: d\r\n"), 12 },
    { "no line end at all", S("A: b"), 4 },
    { "CR at the end", S("A: b\r\n\r"), 7 },
    { "LF then CRLF", S("A: b\n\r\nbody"), 7 },
    { "CRLF then LF", S("A: b\r\n\nbody"), 7 },
    { "bare CRs are no line end", S("A: b\r\rC: d\r\n\r\nx"), 14 },
    { "continuation is not empty", S("A: b\r\n \r\nC: d\r\n\r\n"), 17 },
    { "NUL is not empty", S("A: b\r\n\0\r\n\r\n"), 11 },
    { "first empty line wins", S("A: b\n\nC: d\n\n"), 6 },
};

/* test_header_end - the end_rows table. */
static void test_header_end(void)
{
    for (size_t i = 0; i < sizeof end_rows / sizeof end_rows[0]; i++) {
        const struct end_row *r = &end_rows[i];
        size_t got = dsn_header_end(r->buf, r->len);
        CHECK(got == r->want, "dsn_header_end %s: got %zu, want %zu", r->name, got, r->want);
    }
}

/* ---- the typical bounce ------------------------------------------------------------ */

static const char typical_headers[] =
    "Received: from client.example.org (client.example.org [192.0.2.1])\r\n"
    "\tby relay.example.com with ESMTP id 0123456789ABCDEF\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: bob@example.net, carol@example.net\r\n"
    "Subject: lunch\r\n"
    "\r\n"
    "Shall we?\r\n";

static const struct dsn_rcpt typical_rcpts[] = {
    { "bob@example.net", "5.1.1", "mx.example.net",
      "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in local "
      "recipient table", true },
    { "carol@example.net", "5.1.10", NULL, "no MX: domain has a null MX", false },
};

/* typical - the input every row starts from. */
static struct dsn_in typical(void)
{
    return (struct dsn_in){
        .reporting_mta = "relay.example.com",
        .qid = "0123456789ABCDEF",
        .arrival = 1715680000,
        .now = 1715683600,
        .sender = "alice@example.org",
        .rcpts = typical_rcpts,
        .rcpt_count = 2,
        .headers = typical_headers,
        .headers_len = sizeof typical_headers - 1,
        .expired = false,
        .boundary_seed = 0x1234abcd,
    };
}

/* build - dsn_build() plus dsn_check(); NULL (and a failed check) when either failed. */
static char *build(const char *name, const struct dsn_in *in, size_t *len, struct dsn_view *v)
{
    char *m = dsn_build(in, len);
    CHECK(m != NULL, "%s: dsn_build returned NULL", name);
    if (!m)
        return NULL;
    const char *why = dsn_check(m, *len, in->rcpt_count, v);
    CHECK(why == NULL, "%s: %s\n----\n%.*s\n----", name, why, (int)*len, m);
    if (why) {
        free(m);
        return NULL;
    }
    return m;
}

/* same - whether n bytes at s are exactly want. */
static bool same(const char *s, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(s, want, n) == 0;
}

/* test_typical - the typical bounce, compared exactly where it is fixed. */
static void test_typical(void)
{
    struct dsn_in in = typical();
    struct dsn_view v;
    size_t len;
    char *m = build("typical", &in, &len, &v);
    if (!m)
        return;

    const char *want_hdr =
        "From: Mail Delivery System <MAILER-DAEMON@relay.example.com>\r\n"
        "To: <alice@example.org>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Date: Tue, 14 May 2024 10:46:40 +0000\r\n"
        "Message-ID: <1715683600.0123456789ABCDEF.1234abcd@relay.example.com>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        "\tboundary=\"0123456789ABCDEF.1234abcd.00000000\"\r\n";
    CHECK(same(v.hdr, v.hdr_len, want_hdr), "typical: header\n%.*s", (int)v.hdr_len, v.hdr);

    const char *want_status =
        "Content-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; relay.example.com\r\n"
        "X-Ringrelay-Queue-ID: 0123456789ABCDEF\r\n"
        "X-Ringrelay-Sender: rfc822; alice@example.org\r\n"
        "Arrival-Date: Tue, 14 May 2024 09:46:40 +0000\r\n"
        "\r\n"
        "Final-Recipient: rfc822; bob@example.net\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        "Remote-MTA: dns; mx.example.net\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address\r\n"
        " rejected: User unknown in local recipient table\r\n"
        "\r\n"
        "Final-Recipient: rfc822; carol@example.net\r\n"
        "Action: failed\r\n"
        "Status: 5.1.10\r\n"
        "Diagnostic-Code: X-Ringrelay; no MX: domain has a null MX\r\n";
    CHECK(same(v.part[1], v.part_len[1], want_status), "typical: part 2\n%.*s",
          (int)v.part_len[1], v.part[1]);

    const char *want_part3 =
        "Content-Description: Undelivered Message Headers\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        "Received: from client.example.org (client.example.org [192.0.2.1])\r\n"
        "\tby relay.example.com with ESMTP id 0123456789ABCDEF\r\n"
        "From: Alice <alice@example.org>\r\n"
        "To: bob@example.net, carol@example.net\r\n"
        "Subject: lunch\r\n";
    CHECK(same(v.part[2], v.part_len[2], want_part3), "typical: part 3\n%.*s",
          (int)v.part_len[2], v.part[2]);

    const char *want_p1_head =
        "Content-Description: Notification\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "This is the mail system at host relay.example.com.\r\n"
        "\r\n"
        "I'm sorry to have to inform you that your message could not\r\n";
    CHECK(v.part_len[0] > strlen(want_p1_head) &&
          memcmp(v.part[0], want_p1_head, strlen(want_p1_head)) == 0,
          "typical: part 1 start\n%.*s", (int)v.part_len[0], v.part[0]);
    const char *want_p1_tail =
        "                   The mail system\r\n"
        "\r\n"
        "<bob@example.net>: host mx.example.net said: 550 5.1.1 <bob@example.net>:\r\n"
        "    Recipient address rejected: User unknown in local recipient table\r\n"
        "\r\n"
        "<carol@example.net>: no MX: domain has a null MX\r\n";
    size_t tl = strlen(want_p1_tail);
    CHECK(v.part_len[0] > tl && memcmp(v.part[0] + v.part_len[0] - tl, want_p1_tail, tl) == 0,
          "typical: part 1 end\n%.*s", (int)v.part_len[0], v.part[0]);
    CHECK(memmem(v.part[0], v.part_len[0], "within the queue lifetime", 25) == NULL,
          "typical: expired wording in a permanent failure");

    /* The preamble, and the message ends with the close delimiter. */
    const char *tail = "\r\n--0123456789ABCDEF.1234abcd.00000000--\r\n";
    CHECK(len > strlen(tail) && memcmp(m + len - strlen(tail), tail, strlen(tail)) == 0,
          "typical: close");
    const char *pre = "\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n--";
    CHECK(memmem(m, len, pre, strlen(pre)) != NULL, "typical: preamble");

    /* Pure: the same input gives the same bytes. */
    size_t len2;
    char *m2 = dsn_build(&in, &len2);
    CHECK(m2 && len2 == len && memcmp(m, m2, len) == 0, "typical: not deterministic");
    free(m2);
    free(m);
}

/* ---- rows: one change each --------------------------------------------------------- */

/* Where a row looks for a string. */
enum where { IN_HDR, IN_P1, IN_P2, IN_P3, IN_ALL };

/* One string a row looks for. */
struct expect {
    enum where where;             /* the message header, a part (with the CRLF before it and
                                     the "\r\n--" after it), or everything */
    const char *text;             /* NULL ends the list */
    bool absent;                  /* must not appear (else must) */
};

/* One change to the typical input, and what it must give. */
struct row {
    const char *name;             /* what the row shows */
    struct dsn_rcpt rcpt;         /* the only recipient; addr NULL = keep both typical ones */
    const char *sender;           /* NULL = typical */
    const char *reporting_mta;    /* NULL = typical */
    const char *headers;          /* NULL = typical, unless no_headers */
    size_t headers_len;           /* bytes at headers */
    bool no_headers;              /* headers = NULL */
    bool expired;                 /* dsn_in.expired */
    struct expect expect[EXPECT_MAX]; /* what must and must not appear */
};

#define MUST(w, t)    { w, t, false }
#define MUSTNT(w, t)  { w, t, true }

static const struct row rows[] = {
    { "multi-line SMTP reply folded",
      .rcpt = { "bob@example.net", "5.1.1", "mx.example.net",
                "550-5.1.1 first line\r\n550-5.1.1 second line\n550 5.1.1 third\r\n", true },
      .expect = {
          MUST(IN_P2, "\r\nDiagnostic-Code: smtp; 550-5.1.1 first line\r\n"
                      " 550-5.1.1 second line\r\n 550 5.1.1 third\r\n"),
          MUST(IN_P1, "\r\n<bob@example.net>: host mx.example.net said: 550-5.1.1 first line"
                      "\r\n    550-5.1.1 second line\r\n    550 5.1.1 third\r\n"),
      } },
    { "reply with bare CR, empty lines, tabs and controls",
      .rcpt = { "bob@example.net", "5.7.1", "mx.example.net",
                "550 5.7.1 a\r\r\n\n   \r\n550\tb\x01\x7f c\r", true },
      .expect = {
          MUST(IN_P2, "\r\nDiagnostic-Code: smtp; 550 5.7.1 a\r\n 550 b c\r\n\r\n--"),
      } },
    { "reply with 8-bit text",
      .rcpt = { "bob@example.net", "5.1.1", "mx.example.net",
                "550 Benutzer unbekannt: J\xc3\xb6rg \xff!", true },
      .expect = {
          MUST(IN_P2, "Diagnostic-Code: smtp; 550 Benutzer unbekannt: J?rg ?!\r\n"),
          MUST(IN_P1, "charset=us-ascii\r\n"),
      } },
    { "reply that is only white space",
      .rcpt = { "bob@example.net", "5.1.1", "mx.example.net", " \r\n\t \n", true },
      .expect = {
          MUSTNT(IN_P2, "Diagnostic-Code"),
          MUST(IN_P1, "<bob@example.net>: delivery to host mx.example.net failed (status "
                      "5.1.1)\r\n"),
      } },
    { "no reply, no remote MTA",
      .rcpt = { "bob@example.net", "5.4.4", NULL, NULL, false },
      .expect = {
          MUSTNT(IN_P2, "Diagnostic-Code"),
          MUSTNT(IN_P2, "Remote-MTA"),
          MUST(IN_P1, "\r\n<bob@example.net>: delivery failed (status 5.4.4)\r\n"),
      } },
    { "CR and LF in the recipient",
      .rcpt = { "bob@exa\r\nBcc: evil@example.org\rmple.net", "5.1.1", NULL, "x", true },
      .expect = {
          MUST(IN_P2, "\r\nFinal-Recipient: rfc822; bob@exaBcc: evil@example.orgmple.net\r\n"),
          MUSTNT(IN_ALL, "\r\nBcc:"),
      } },
    { "angle brackets, controls and spaces in the recipient",
      .rcpt = { "  <bob>@ex\tample\x1b.net>  ", "5.1.1", NULL, NULL, false },
      .expect = {
          MUST(IN_P2, "\r\nFinal-Recipient: rfc822; bob@example.net\r\n"),
          MUST(IN_P1, "\r\n<bob@example.net>: delivery failed"),
      } },
    { "header injection through the sender",
      .rcpt = { "bob@example.net", "5.1.1", NULL, NULL, false },
      .sender = "alice@example.org>\r\nBcc: <victim@example.com",
      .expect = {
          MUST(IN_HDR, "\r\nTo: <alice@example.orgBcc: victim@example.com>\r\n"),
          MUSTNT(IN_ALL, "\r\nBcc:"),
      } },
    { "empty sender",
      .rcpt = { "bob@example.net", "5.1.1", NULL, NULL, false },
      .sender = "",
      .expect = {
          MUST(IN_HDR, "\r\nTo: undisclosed-recipients:;\r\n"),
          MUSTNT(IN_P2, "X-Ringrelay-Sender"),
      } },
    { "hostile remote MTA",
      .rcpt = { "bob@example.net", "5.1.1", "..mx.example.net.\r\nX-Evil: 1 ", "550 no", true },
      .expect = {
          MUST(IN_P2, "\r\nRemote-MTA: dns; mx.example.net.X-Evil:1\r\n"),
          MUST(IN_P1, "host mx.example.net.X-Evil:1 said: 550 no\r\n"),
      } },
    { "remote MTA of nothing valid",
      .rcpt = { "bob@example.net", "5.1.1", " \r\n", "550 no", true },
      .expect = {
          MUSTNT(IN_P2, "Remote-MTA"),
          MUST(IN_P1, "\r\n<bob@example.net>: 550 no\r\n"),
      } },
    { "hostile reporting MTA",
      .rcpt = { "bob@example.net", "5.1.1", NULL, NULL, false },
      .reporting_mta = "relay.example.com\r\nBcc: x",
      .expect = {
          MUST(IN_HDR, "From: Mail Delivery System <MAILER-DAEMON@relay.example.comBcc:x>\r\n"),
          MUST(IN_P2, "Reporting-MTA: dns; relay.example.comBcc:x\r\n"),
      } },
    { "empty reporting MTA",
      .rcpt = { "bob@example.net", "5.1.1", NULL, NULL, false },
      .reporting_mta = "",
      .expect = {
          MUST(IN_HDR, "<MAILER-DAEMON@localhost>\r\n"),
          MUST(IN_P2, "Reporting-MTA: dns; localhost\r\n"),
      } },
    { "status with a line end", .rcpt = { "bob@example.net", "5.1.1\r\nX: y", NULL, NULL, 0 },
      .expect = { MUST(IN_P2, "\r\nStatus: 5.0.0\r\n"), MUSTNT(IN_ALL, "X: y") } },
    { "status of class 2", .rcpt = { "bob@example.net", "2.0.0", NULL, NULL, false },
      .expect = { MUST(IN_P2, "\r\nStatus: 5.0.0\r\n") } },
    { "status with 4 digits", .rcpt = { "bob@example.net", "5.1234.1", NULL, NULL, false },
      .expect = { MUST(IN_P2, "\r\nStatus: 5.0.0\r\n") } },
    { "status with a trailing space", .rcpt = { "bob@example.net", "5.1.1 ", NULL, NULL, 0 },
      .expect = { MUST(IN_P2, "\r\nStatus: 5.0.0\r\n") } },
    { "status empty", .rcpt = { "bob@example.net", "", NULL, NULL, false },
      .expect = { MUST(IN_P2, "\r\nStatus: 5.0.0\r\n") } },
    { "status NULL", .rcpt = { "bob@example.net", NULL, NULL, NULL, false },
      .expect = { MUST(IN_P2, "\r\nStatus: 5.0.0\r\n") } },
    { "status 4.x.x kept", .rcpt = { "bob@example.net", "4.4.1", NULL, NULL, false },
      .expect = { MUST(IN_P2, "\r\nStatus: 4.4.1\r\n") } },
    { "status 3 digits", .rcpt = { "bob@example.net", "5.999.999", NULL, NULL, false },
      .expect = { MUST(IN_P2, "\r\nStatus: 5.999.999\r\n") } },
    { "expired",
      .rcpt = { "bob@example.net", "4.4.1", "mx.example.net",
                "connect to mx.example.net: Connection refused", false },
      .expired = true,
      .expect = {
          MUST(IN_HDR, "\r\nSubject: Delivery failure: message expired\r\n"),
          MUST(IN_P1, "the message could not be delivered within the\r\nqueue lifetime."),
          MUST(IN_P2, "\r\nStatus: 4.4.1\r\n"),
          MUST(IN_P2, "\r\nDiagnostic-Code: X-Ringrelay; connect to mx.example.net: "
                      "Connection refused\r\n"),
          MUSTNT(IN_HDR, "Undelivered Mail"),
      } },
    { "expired, bad status",
      .rcpt = { "bob@example.net", "x", NULL, NULL, false },
      .expired = true,
      .expect = {
          MUST(IN_P2, "\r\nStatus: 4.4.7\r\n"),
          MUST(IN_P1, "\r\n<bob@example.net>: delivery time expired (status 4.4.7)\r\n"),
      } },
    { "UTF-8 recipient",
      .rcpt = { "j\xc3\xb6rg+x=y@ex\xc3\xa4mple.de", "5.1.1", NULL, NULL, false },
      .expect = {
          MUST(IN_P1, "Content-Type: text/plain; charset=utf-8\r\n"
                      "Content-Transfer-Encoding: 8bit\r\n"),
          MUST(IN_P1, "\r\n<j\xc3\xb6rg+x=y@ex\xc3\xa4mple.de>: delivery failed"),
          MUST(IN_P2, "\r\nFinal-Recipient: utf-8; j\\x{F6}rg\\x{2B}x\\x{3D}y@ex\\x{E4}mple.de\r\n"),
          MUST(IN_HDR, "\r\nContent-Transfer-Encoding: 8bit\r\n"),
      } },
    { "UTF-8 sender",
      .rcpt = { "bob@example.net", "5.1.1", NULL, NULL, false },
      .sender = "\xe7\x94\xb0\xe4\xb8\xad@example.jp",
      .expect = {
          MUST(IN_HDR, "\r\nTo: <\xe7\x94\xb0\xe4\xb8\xad@example.jp>\r\n"),
          MUST(IN_P2, "X-Ringrelay-Sender: utf-8; \\x{7530}\\x{4E2D}@example.jp\r\n"),
          MUST(IN_P1, "charset=us-ascii\r\n"),
          MUSTNT(IN_HDR, "Content-Transfer-Encoding"),
      } },
    { "invalid UTF-8 in the recipient",
      .rcpt = { "a\xff\xc3(b\xed\xa0\x80@example.net", "5.1.1", NULL, NULL, false },
      .expect = {
          MUST(IN_P2, "\r\nFinal-Recipient: rfc822; a?" "?(b???@example.net\r\n"),
          MUST(IN_P1, "charset=us-ascii\r\n"),
      } },
    { "space in a quoted local part",
      .rcpt = { "\"john  doe\"@example.net", "5.1.1", NULL, NULL, false },
      .expect = { MUST(IN_P2, "\r\nFinal-Recipient: rfc822; \"john  doe\"@example.net\r\n") } },
    { "bare LF in the headers",
      .headers = S("From: a@example.org\nSubject: hi\n\nbody\n"),
      .expect = { MUST(IN_P3, "\r\n\r\nFrom: a@example.org\r\nSubject: hi\r\n") } },
    { "bare CR in the headers",
      .headers = S("From: a@example.org\rSubject: hi\r\r\nTo: b\r\n\r\n"),
      .expect = { MUST(IN_P3, "\r\n\r\nFrom: a@example.org\r\nSubject: hi\r\nTo: b\r\n") } },
    { "NUL in the headers",
      .headers = S("Subject: a\0b\r\n\0\r\nTo: c\r\n\r\nbody"),
      .expect = { MUST(IN_P3, "\r\n\r\nSubject: ab\r\nTo: c\r\n") } },
    { "white-space-only line in the headers",
      .headers = S("Subject: a\r\n \t \r\nTo: c\r\n"),
      .expect = { MUST(IN_P3, "\r\n\r\nSubject: a\r\nTo: c\r\n") } },
    { "headers without a final line end",
      .headers = S("Subject: a\r\nTo: c"),
      .expect = { MUST(IN_P3, "\r\n\r\nSubject: a\r\nTo: c\r\n") } },
    { "headers with 8-bit bytes",
      .headers = S("Subject: gr\xc3\xbc\xc3\x9f dich\r\n\r\n"),
      .expect = {
          MUST(IN_P3, "Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 8bit\r\n"
                      "\r\nSubject: gr\xc3\xbc\xc3\x9f dich\r\n"),
          MUST(IN_HDR, "\r\nContent-Transfer-Encoding: 8bit\r\n"),
          MUST(IN_P1, "charset=us-ascii\r\n"),
      } },
    { "no headers", .no_headers = true,
      .expect = { MUST(IN_P3, "\r\n\r\nX-Ringrelay-Notice: the original header section is "
                              "not available\r\n") } },
    { "empty headers", .headers = S(""),
      .expect = { MUST(IN_P3, "\r\n\r\nX-Ringrelay-Notice: the original header section is "
                              "not available\r\n") } },
    { "headers that start with an empty line", .headers = S("\r\nSubject: body\r\n"),
      .expect = { MUST(IN_P3, "X-Ringrelay-Notice: the original header section is not "
                              "available\r\n"),
                  MUSTNT(IN_P3, "Subject") } },
    { "a line that is not a field ends the section",
      .headers = S("Subject: a\r\njunk line\r\nTo: b\r\n\r\n"),
      .expect = { MUST(IN_P3, "\r\n\r\nSubject: a\r\n\r\n--"), MUSTNT(IN_ALL, "junk"),
                  MUSTNT(IN_P3, "To: b") } },
    { "a delimiter line in the headers ends the section",
      .headers = S("Subject: a\r\n--0123456789ABCDEF.1234abcd.00000000\r\nTo: b\r\n"),
      .expect = { MUST(IN_P3, "\r\n\r\nSubject: a\r\n\r\n--"), MUSTNT(IN_P3, "To: b"),
                  MUST(IN_HDR, "boundary=\"0123456789ABCDEF.1234abcd.00000000\"") } },
    { "a continuation line first",
      .headers = S(" folded\r\nSubject: a\r\n\r\n"),
      .expect = { MUST(IN_P3, "X-Ringrelay-Notice: the original header section is not "
                              "available\r\n"),
                  MUSTNT(IN_P3, "Subject") } },
    { "white space before the colon (obsolete syntax) is a field",
      .headers = S("Subject\t : a\r\n  b\r\n\r\n"),
      .expect = { MUST(IN_P3, "\r\n\r\nSubject\t : a\r\n  b\r\n") } },
    { "8-bit field name ends the section",
      .headers = S("To: b\r\nS\xc3\xbc" "bject: a\r\n\r\n"),
      .expect = { MUST(IN_P3, "\r\n\r\nTo: b\r\n\r\n--"), MUSTNT(IN_P3, "bject") } },
    { "NUL inside a field name",
      .headers = S("Sub\0ject: a\r\n\r\n"),
      .expect = { MUST(IN_P3, "\r\n\r\nSubject: a\r\n") } },
    { "body after the headers is not returned",
      .headers = S("Subject: a\r\n\r\n--x\r\nContent-Type: text/html\r\n"),
      .expect = { MUST(IN_P3, "\r\n\r\nSubject: a\r\n"), MUSTNT(IN_ALL, "text/html") } },
};

/* find - whether text occurs in the place a row names. */
static bool find(const struct dsn_view *v, const char *m, size_t len, enum where w,
                 const char *text)
{
    const char *s = m;
    size_t n = len;
    if (w == IN_HDR)
        s = v->hdr, n = v->hdr_len;
    else if (w != IN_ALL)
        s = v->part[w - IN_P1] - 2, n = v->part_len[w - IN_P1] + 6; /* and "\r\n--" */
    return memmem(s, n, text, strlen(text)) != NULL;
}

/* test_rows - each row: build, check the structure, look for its strings. */
static void test_rows(void)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const struct row *r = &rows[i];
        struct dsn_in in = typical();
        struct dsn_view v;
        size_t len;

        if (r->rcpt.addr) {
            in.rcpts = &r->rcpt;
            in.rcpt_count = 1;
        }
        if (r->sender)
            in.sender = r->sender;
        if (r->reporting_mta)
            in.reporting_mta = r->reporting_mta;
        if (r->headers || r->no_headers) {
            in.headers = r->headers;
            in.headers_len = r->headers_len;
        }
        in.expired = r->expired;
        char *m = build(r->name, &in, &len, &v);
        if (!m)
            continue;
        for (size_t k = 0; k < EXPECT_MAX && r->expect[k].text; k++) {
            const struct expect *e = &r->expect[k];
            bool found = find(&v, m, len, e->where, e->text);
            CHECK(found != e->absent, "%s: %s \"%s\"\n----\n%.*s\n----", r->name,
                  e->absent ? "unexpected" : "missing", e->text, (int)len, m);
        }
        free(m);
    }
}

/* ---- long input -------------------------------------------------------------------- */

/* unfold - s (n bytes) with every CRLF that is followed by a space or tab removed (RFC 5322
 * unfolding), and with drop_space that space too (undoing a split that inserted one); into a
 * malloc'd string. */
static char *unfold(const char *s, size_t n, bool drop_space)
{
    char *out = malloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (i + 2 < n && s[i] == '\r' && s[i + 1] == '\n' && (s[i + 2] == ' ' || s[i + 2] == '\t')) {
            i += drop_space && s[i + 2] == ' ' ? 3 : 2;
            continue;
        }
        out[o++] = s[i++];
    }
    out[o] = '\0';
    return out;
}

/* test_long_reply - a reply with a 3000-octet word and many short ones: split and folded. */
static void test_long_reply(void)
{
    /* One word of 3000 bytes, then words: split at 998 octets, then folded at 78. */
    char *diag = malloc(3000 + 200 + 1);
    memset(diag, 'x', 3000);
    strcpy(diag + 3000, " tail words that go on and on and on and on and on and on and on "
                        "and on and on and on and on and on and on and on and on");
    struct dsn_rcpt rc = { "bob@example.net", "5.1.1", "mx.example.net", diag, true };
    struct dsn_in in = typical();
    struct dsn_view v;
    size_t len;
    in.rcpts = &rc;
    in.rcpt_count = 1;
    char *m = build("long reply", &in, &len, &v);
    if (m) {
        const char *d = memmem(v.body[1], v.body_len[1], "Diagnostic-Code: smtp; ", 23);
        CHECK(d != NULL, "long reply: no Diagnostic-Code");
        if (d) {
            size_t dl = (size_t)(v.body[1] + v.body_len[1] - d);
            char *u = unfold(d, dl - 2, true);
            CHECK(strncmp(u + 23, diag, 3000) == 0, "long reply: the long word is not kept");
            free(u);
            u = unfold(d, dl - 2, false);
            CHECK(strstr(u, diag + 3000) != NULL, "long reply: words lost\n%s", u);
            free(u);
            /* after the long word every line stays within 78 octets */
            const char *t = memmem(d, dl, " tail", 5);
            for (const char *p = t; p && p < v.body[1] + v.body_len[1];) {
                size_t ll = dsn_line_len(p, (size_t)(v.body[1] + v.body_len[1] - p));
                CHECK(ll <= 78, "long reply: line of %zu octets after folding", ll);
                p += ll + 2;
            }
        }
        free(m);
    }
    free(diag);
}

/* same_but_spaces - whether a and b, up to the first stop in each, are the same but for
 * spaces. */
static bool same_but_spaces(const char *a, const char *b, const char *stop)
{
    if (!a || !b)
        return false;
    const char *ae = strstr(a, stop), *be = strstr(b, stop);
    if (!ae || !be)
        return false;
    for (;;) {
        while (a < ae && *a == ' ')
            a++;
        while (b < be && *b == ' ')
            b++;
        if (a == ae || b == be)
            return a == ae && b == be;
        if (*a++ != *b++)
            return false;
    }
}

/* test_long_header_lines - overlong header lines fold and unfold to the original. */
static void test_long_header_lines(void)
{
    /* A field of many words, a field with no white space at all, a field of white space with
       a word at the end, and 8-bit text on the split points. */
    size_t cap = 20000, n = 0;
    char *h = malloc(cap);
    n += (size_t)sprintf(h + n, "X-Words:");
    for (int i = 0; i < 400; i++)
        n += (size_t)sprintf(h + n, " word%03d", i);
    n += (size_t)sprintf(h + n, "\r\nX-Solid: ");
    for (int i = 0; i < 2500; i++)
        h[n++] = (char)('a' + i % 26);
    n += (size_t)sprintf(h + n, "\r\nX-Utf8: ");
    for (int i = 0; i < 1200; i++)
        n += (size_t)sprintf(h + n, "\xc3\xa9");
    n += (size_t)sprintf(h + n, "\r\nX-Spaces:");
    for (int i = 0; i < 1500; i++)
        h[n++] = ' ';
    n += (size_t)sprintf(h + n, "end\r\nX-Trailing: a");
    for (int i = 0; i < 1500; i++)
        h[n++] = ' ';
    n += (size_t)sprintf(h + n, "\r\n\r\n");

    struct dsn_in in = typical();
    struct dsn_view v;
    size_t len;
    in.headers = h;
    in.headers_len = n;
    char *m = build("long header lines", &in, &len, &v);
    if (m) {
        char *u = unfold(v.body[2], v.body_len[2], false);
        const char *words = strstr(u, "X-Words:");
        CHECK(words && strncmp(words, h, (size_t)(strstr(h, "\r\nX-Solid") - h)) == 0,
              "long header lines: X-Words does not unfold to the original");
        CHECK(same_but_spaces(strstr(u, "X-Solid:"), strstr(h, "X-Solid:"), "X-Utf8:"),
              "long header lines: X-Solid does not unfold to the original");
        CHECK(same_but_spaces(strstr(u, "X-Utf8:"), strstr(h, "X-Utf8:"), "X-Spaces:"),
              "long header lines: X-Utf8 does not unfold to the original");
        CHECK(strstr(u, "end\r\nX-Trailing: a"), "long header lines: X-Spaces / X-Trailing");
        free(u);
        CHECK(dsn_utf8_valid((const unsigned char *)v.body[2], v.body_len[2]),
              "long header lines: a split inside a UTF-8 character");
        free(m);
    }
    free(h);
}

/* test_leading_space - white space starting a header line is cut; blank lines dropped. */
static void test_leading_space(void)
{
    /* White space at the start of a line is cut at 64 octets, so that no line made by
       folding is white space only; a line of white space alone is dropped. */
    char h[600];
    int n = sprintf(h, "X-A: a\r\n%200s\r\n%300s\r\nX-B: c\r\n\r\n", "b", "");
    struct dsn_in in = typical();
    struct dsn_view v;
    size_t len;
    in.headers = h;
    in.headers_len = (size_t)n;
    char *m = build("leading space", &in, &len, &v);
    if (m) {
        char want[200];
        sprintf(want, "X-A: a\r\n%65s\r\nX-B: c\r\n", "b");
        CHECK(same(v.body[2], v.body_len[2], want), "leading space: part 3 is\n%.*s",
              (int)v.body_len[2], v.body[2]);
        free(m);
    }
}

/* test_long_names - field names at and past DSN_FIELD_NAME_BYTES_MAX (256, in dsn.c). */
static void test_long_names(void)
{
    /* A field name (with the white space before its colon) of up to 256 octets is a field;
       a longer one ends the section, since folding could move its colon off the line. */
    static const struct { size_t name, space; bool kept; } cases[] = {
        { 256, 0, true }, { 257, 0, false }, { 2000, 0, false },
        { 200, 56, true }, { 200, 57, false }, { 7, 2000, false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = 0;
        char *h = malloc(cases[i].name + cases[i].space + 64);
        n += (size_t)sprintf(h, "To: b\r\n");
        memset(h + n, 'N', cases[i].name);
        n += cases[i].name;
        memset(h + n, ' ', cases[i].space);
        n += cases[i].space;
        n += (size_t)sprintf(h + n, ": value\r\n\r\n");
        struct dsn_in in = typical();
        struct dsn_view v;
        size_t len;
        in.headers = h;
        in.headers_len = n;
        char *m = build("long field names", &in, &len, &v);
        if (m) {
            bool kept = memmem(v.body[2], v.body_len[2], ": value\r\n", 9) != NULL;
            CHECK(kept == cases[i].kept && memcmp(v.body[2], "To: b\r\n", 7) == 0,
                  "long field name %zu + %zu: kept %d", cases[i].name, cases[i].space, kept);
            free(m);
        }
        free(h);
    }
}

/* test_headers_cut - the header section cut at DSN_HEADERS_BYTES_MAX on a field or line. */
static void test_headers_cut(void)
{
    /* Fields of 100 octets (a first line and a continuation line each) past the limit: the
       part ends on a field boundary, and is exactly the start of the original. */
    size_t fields = DSN_HEADERS_BYTES_MAX / 100 + 50, n = 0;
    char *h = malloc(fields * 100 + 3);
    for (size_t i = 0; i < fields; i++) {
        int w = sprintf(h + n, "X-F%05zu: %-38s\r\n", i, "first line");
        w += sprintf(h + n + w, "\t%-47s\r\n", "continuation");
        n += (size_t)w;
    }
    CHECK(n == fields * 100, "cut: test fields are not 100 octets");
    memcpy(h + n, "\r\n", 3);
    n += 2;

    struct dsn_in in = typical();
    struct dsn_view v;
    size_t len;
    in.headers = h;
    in.headers_len = n;
    char *m = build("headers cut", &in, &len, &v);
    if (m) {
        size_t want = DSN_HEADERS_BYTES_MAX / 100 * 100;
        CHECK(v.body_len[2] == want, "cut: kept %zu octets, want %zu", v.body_len[2], want);
        CHECK(memcmp(v.body[2], h, v.body_len[2]) == 0, "cut: kept text is not the original");
        free(m);
    }

    /* One field longer than the whole limit, after a short one: the short one stays. */
    size_t big = DSN_HEADERS_BYTES_MAX + 5000;
    char *g = malloc(big + 64);
    n = (size_t)sprintf(g, "Subject: short\r\nX-Big:");
    while (n < big)
        n += (size_t)sprintf(g + n, " %s", "filler");
    n += (size_t)sprintf(g + n, "\r\n\r\n");
    in.headers = g;
    in.headers_len = n;
    m = build("one big field", &in, &len, &v);
    if (m) {
        CHECK(same(v.body[2], v.body_len[2], "Subject: short\r\n"), "big field: part 3 is\n%.*s",
              (int)(v.body_len[2] > 200 ? 200 : v.body_len[2]), v.body[2]);
        free(m);
    }

    /* The big field alone: the notice. */
    in.headers = g + 16;
    in.headers_len = n - 16;
    m = build("only a big field", &in, &len, &v);
    if (m) {
        CHECK(same(v.body[2], v.body_len[2], "X-Ringrelay-Notice: the original header section "
                                             "is too long to return\r\n"),
              "only a big field: part 3 is\n%.*s", (int)v.body_len[2], v.body[2]);
        free(m);
    }

    /* A field that starts the section and continues past the limit: cut at a line. */
    n = (size_t)sprintf(g, "X-Long: a\r\n");
    while (n < big)
        n += (size_t)sprintf(g + n, "\tcontinued line\r\n");
    n += (size_t)sprintf(g + n, "\r\n");
    in.headers = g;
    in.headers_len = n;
    m = build("long continued field", &in, &len, &v);
    if (m) {
        CHECK(v.body_len[2] <= DSN_HEADERS_BYTES_MAX && v.body_len[2] > DSN_HEADERS_BYTES_MAX - 20
              && memcmp(v.body[2], g, v.body_len[2]) == 0,
              "long continued field: kept %zu octets", v.body_len[2]);
        free(m);
    }
    free(g);
    free(h);
}

/* ---- boundary collisions ----------------------------------------------------------- */

/* plant_build - headers holding "--" + each planted boundary on its own line; returns the
 * boundary of the bounce built with them (checked), "" on failure. */
static void plant_build(const char *name, const char *const *planted, size_t count,
                        bool in_diag, char *boundary_out)
{
    char hdr[2048], diag[512];
    size_t n = (size_t)sprintf(hdr, "Subject: collide\r\n");
    size_t dn = (size_t)sprintf(diag, "550 see");
    for (size_t i = 0; i < count; i++) {
        if (in_diag)
            dn += (size_t)sprintf(diag + dn, "\n--%s", planted[i]);
        else
            n += (size_t)sprintf(hdr + n, "X-Plant: %s\r\n", planted[i]);
    }
    sprintf(hdr + n, "\r\n");
    struct dsn_rcpt rc = { "bob@example.net", "5.1.1", "mx.example.net", diag, true };
    struct dsn_in in = typical();
    struct dsn_view v;
    size_t len;
    in.headers = hdr;
    in.headers_len = strlen(hdr);
    in.rcpts = &rc;
    in.rcpt_count = 1;
    boundary_out[0] = '\0';
    char *m = build(name, &in, &len, &v);
    if (m) {
        strcpy(boundary_out, v.boundary);
        for (size_t i = 0; i < count; i++)
            CHECK(in_diag || memmem(v.body[2], v.body_len[2], planted[i], strlen(planted[i])),
                  "%s: planted boundary not in part 3", name);
        free(m);
    }
}

/* test_boundary - boundaries planted in the content make the counter move past them. */
static void test_boundary(void)
{
    char b[DSN_CHECK_BOUNDARY_BYTES_MAX + 1];
    static const char *const b0[] = { "0123456789ABCDEF.1234abcd.00000000" };
    static const char *const b0_7[] = { "0123456789ABCDEF.1234abcd.00000000",
                                        "0123456789ABCDEF.1234abcd.00000007" };
    static const char *const bmax[] = { "0123456789ABCDEF.1234abcd.ffffffff" };
    static const char *const bmax01[] = { "0123456789ABCDEF.1234abcd.FFFFFFFF",
                                          "0123456789ABCDEF.1234abcd.00000001",
                                          "0123456789ABCDEF.1234abcd.00000002",
                                          "0123456789ABCDEF.1234abcd.00000000" };
    static const char *const near[] = { "0123456789ABCDEF.1234abcd.0000000",
                                        "0123456789ABCDEF.1234abcd.0000000g",
                                        "0123456789ABCDEF.1234abce.00000000" };

    plant_build("no collision", NULL, 0, false, b);
    CHECK(strcmp(b, "0123456789ABCDEF.1234abcd.00000000") == 0, "boundary: %s", b);
    plant_build("collision in headers", b0, 1, false, b);
    CHECK(strcmp(b, "0123456789ABCDEF.1234abcd.00000001") == 0, "boundary: %s", b);
    plant_build("collision in the reply", b0, 1, true, b);
    CHECK(strcmp(b, "0123456789ABCDEF.1234abcd.00000001") == 0, "boundary: %s", b);
    plant_build("two collisions", b0_7, 2, false, b);
    CHECK(strcmp(b, "0123456789ABCDEF.1234abcd.00000008") == 0, "boundary: %s", b);
    plant_build("collision at ffffffff", bmax, 1, false, b);
    CHECK(strcmp(b, "0123456789ABCDEF.1234abcd.00000001") == 0, "boundary: %s", b);
    plant_build("collisions at FFFFFFFF, 0, 1, 2", bmax01, 4, false, b);
    CHECK(strcmp(b, "0123456789ABCDEF.1234abcd.00000003") == 0, "boundary: %s", b);
    plant_build("near misses", near, 3, false, b);
    CHECK(strcmp(b, "0123456789ABCDEF.1234abcd.00000000") == 0, "boundary: %s", b);
}

/* ---- dates and odd input ----------------------------------------------------------- */

/* test_dates - RFC 5322 dates, clamped to 1970-9999. */
static void test_dates(void)
{
    static const struct { int64_t t; const char *want; } dates[] = {
        { 0, "Date: Thu, 1 Jan 1970 00:00:00 +0000\r\n" },
        { -5, "Date: Thu, 1 Jan 1970 00:00:00 +0000\r\n" },
        { INT64_MIN, "Date: Thu, 1 Jan 1970 00:00:00 +0000\r\n" },
        { 253402300799, "Date: Fri, 31 Dec 9999 23:59:59 +0000\r\n" },
        { INT64_MAX, "Date: Fri, 31 Dec 9999 23:59:59 +0000\r\n" },
        { 951782400, "Date: Tue, 29 Feb 2000 00:00:00 +0000\r\n" },
    };
    for (size_t i = 0; i < sizeof dates / sizeof dates[0]; i++) {
        struct dsn_in in = typical();
        struct dsn_view v;
        size_t len;
        in.now = in.arrival = dates[i].t;
        char *m = build("dates", &in, &len, &v);
        if (!m)
            continue;
        CHECK(memmem(v.hdr, v.hdr_len, dates[i].want, strlen(dates[i].want)) != NULL,
              "date %lld: want %s\n%.*s", (long long)dates[i].t, dates[i].want,
              (int)v.hdr_len, v.hdr);
        free(m);
    }
}

/* test_odd - NULL strings, a hostile queue id, an empty one, 40 recipients. */
static void test_odd(void)
{
    /* NULL strings everywhere, a hostile qid, many recipients. */
    struct dsn_rcpt rc[40];
    for (size_t i = 0; i < 40; i++)
        rc[i] = (struct dsn_rcpt){ NULL, NULL, NULL, NULL, i % 2 };
    struct dsn_in in = {
        .reporting_mta = NULL, .qid = "ab\r\n<>cd.ef@x", .sender = NULL,
        .rcpts = rc, .rcpt_count = 40, .headers = NULL, .boundary_seed = 7,
    };
    struct dsn_view v;
    size_t len;
    char *m = build("NULL strings", &in, &len, &v);
    if (m) {
        CHECK(strcmp(v.boundary, "abcdefx.00000007.00000000") == 0, "odd: boundary %s",
              v.boundary);
        CHECK(memmem(v.hdr, v.hdr_len, "Message-ID: <0.abcdefx.00000007@localhost>\r\n", 44),
              "odd: Message-ID\n%.*s", (int)v.hdr_len, v.hdr);
        CHECK(memmem(v.body[1], v.body_len[1], "X-Ringrelay-Queue-ID: abcdefx\r\n", 31),
              "odd: queue id");
        free(m);
    }
    in.qid = "";
    m = build("empty qid", &in, &len, &v);
    if (m) {
        CHECK(strcmp(v.boundary, "dsn.00000007.00000000") == 0, "empty qid: %s", v.boundary);
        CHECK(!memmem(v.body[1], v.body_len[1], "X-Ringrelay-Queue-ID", 20), "empty qid");
        free(m);
    }
}

int main(void)
{
    test_header_end();
    test_typical();
    test_rows();
    test_long_reply();
    test_long_header_lines();
    test_leading_space();
    test_long_names();
    test_headers_cut();
    test_boundary();
    test_dates();
    test_odd();
    return check_done("test_dsn");
}
