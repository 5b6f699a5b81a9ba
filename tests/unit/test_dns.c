/*
 * test_dns.c - table-driven tests of the TTL reader of DNS answers (net/dns.c, dns_answer_ttl).
 *
 * Each row is a raw DNS response built by hand, the record type asked for, and the TTL it must
 * give (-1: malformed, or no such record). The rows cover compression pointers (good ones,
 * loops, forward, into the header, cut), questions (0, 1, 2, fewer than counted), answers of
 * several types and TTLs, TTLs with the top bit set, classes other than IN, cut buffers and
 * rdlengths past the end. Rows that need size (names of 255 and 256 bytes, 3400 answers in a
 * message just under 64 KiB) are built at run time. Every row is also read cut at every
 * length, which must give -1 or a TTL and never read past the cut (ASan build).
 *
 * Also the reverse lookup names of dns_ptr_name() (IPv4, IPv6, v4-mapped, other families).
 *
 * The resolver itself (c-ares on the ring) is tested against a real DNS server in the system
 * tests (PTR lookups: tests/system/test_notify.py).
 */
#include "net/dns.h"
#include "tests/unit/check.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#define S(s) (const unsigned char *)s, sizeof(s) - 1  /* bytes that may hold NUL, and length */

/* Pieces of a response. Hex escapes end at a literal's end, so each is its own literal. */
#define HDR(qd, an)  "\x12\x34\x81\x80" "\x00" qd "\x00" an "\x00\x00" "\x00\x00"
#define QNAME        "\x07" "example" "\x03" "com" "\x00"     /* at offset 12, 13 bytes */
#define Q_MX         QNAME "\x00\x0f" "\x00\x01"              /* answers start at 29 (0x1d) */
#define PTR_Q        "\xc0\x0c"                               /* -> example.com */
#define T_A          "\x00\x01"
#define T_CNAME      "\x00\x05"
#define T_MX         "\x00\x0f"
#define T_AAAA       "\x00\x1c"
#define C_IN         "\x00\x01"
#define C_CH         "\x00\x03"
#define TTL(a, b, c, d) a b c d
#define TTL_300      "\x00\x00\x01\x2c"
#define TTL_120      "\x00\x00\x00\x78"
#define TTL_50       "\x00\x00\x00\x32"
#define TTL_200      "\x00\x00\x00\xc8"
#define MX_DATA      "\x00\x07" "\x00\x0a" "\x02" "mx" PTR_Q  /* rdlength 7: 10 mx.example.com */
#define A_DATA       "\x00\x04" "\xc0\x00\x02\x01"            /* 192.0.2.1 */
#define RR_MX(ttl)   PTR_Q T_MX C_IN ttl MX_DATA
#define RR_A(ttl)    PTR_Q T_A C_IN ttl A_DATA

enum { MX = 15, A = 1, CNAME = 5, AAAA = 28 };

struct row {
    const char *name;
    const unsigned char *in;
    size_t len;
    uint16_t qtype;
    int64_t want;
};

static const struct row rows[] = {
    /* Good answers. */
    { "one MX", S(HDR("\x01", "\x01") Q_MX RR_MX(TTL_300)), MX, 300 },
    { "two MX, the second smaller",
      S(HDR("\x01", "\x02") Q_MX RR_MX(TTL_300) RR_MX(TTL_120)), MX, 120 },
    { "two MX, the first smaller",
      S(HDR("\x01", "\x02") Q_MX RR_MX(TTL_120) RR_MX(TTL_300)), MX, 120 },
    { "owner not compressed",
      S(HDR("\x01", "\x01") Q_MX QNAME T_MX C_IN TTL_300 MX_DATA), MX, 300 },
    { "owner is the root", S(HDR("\x01", "\x01") Q_MX "\x00" T_MX C_IN TTL_300 MX_DATA), MX, 300 },
    { "owner: label then pointer",
      S(HDR("\x01", "\x01") Q_MX "\x03" "www" PTR_Q T_MX C_IN TTL_300 MX_DATA), MX, 300 },
    { "pointer to a pointer earlier",
      S(HDR("\x01", "\x02") Q_MX RR_MX(TTL_300) "\xc0\x1d" T_MX C_IN TTL_200 MX_DATA), MX, 200 },
    { "zero TTL", S(HDR("\x01", "\x01") Q_MX RR_MX(TTL("\x00", "\x00", "\x00", "\x00"))), MX, 0 },
    { "TTL 2^31-1", S(HDR("\x01", "\x01") Q_MX RR_MX(TTL("\x7f", "\xff", "\xff", "\xff"))), MX,
      2147483647 },
    { "TTL top bit set counts as 0 (RFC 2181 8)",
      S(HDR("\x01", "\x02") Q_MX RR_MX(TTL_300) RR_MX(TTL("\x80", "\x00", "\x00", "\x01"))),
      MX, 0 },
    { "TTL 0xffffffff counts as 0",
      S(HDR("\x01", "\x01") Q_MX RR_MX(TTL("\xff", "\xff", "\xff", "\xff"))), MX, 0 },
    { "empty rdata", S(HDR("\x01", "\x01") Q_MX PTR_Q T_MX C_IN TTL_300 "\x00\x00"), MX, 300 },
    { "bytes after the answers (authority) are not read",
      S(HDR("\x01", "\x01") Q_MX RR_MX(TTL_300) "\xc0\xff\xff\xff"), MX, 300 },

    /* Types and classes. */
    { "asked A, only MX", S(HDR("\x01", "\x01") Q_MX RR_MX(TTL_300)), A, -1 },
    { "asked AAAA, only MX", S(HDR("\x01", "\x01") Q_MX RR_MX(TTL_300)), AAAA, -1 },
    { "CNAME then MX: MX",
      S(HDR("\x01", "\x02") Q_MX PTR_Q T_CNAME C_IN TTL_50 "\x00\x05" "\x02" "mx" PTR_Q
        "\xc0\x29" T_MX C_IN TTL_200 "\x00\x04" "\x00\x0a" "\xc0\x29"), MX, 200 },
    { "CNAME then MX: CNAME",
      S(HDR("\x01", "\x02") Q_MX PTR_Q T_CNAME C_IN TTL_50 "\x00\x05" "\x02" "mx" PTR_Q
        "\xc0\x29" T_MX C_IN TTL_200 "\x00\x04" "\x00\x0a" "\xc0\x29"), CNAME, 50 },
    { "A records, TTLs 300 120 200",
      S(HDR("\x01", "\x03") QNAME T_A C_IN RR_A(TTL_300) RR_A(TTL_120) RR_A(TTL_200)), A, 120 },
    { "A and MX mixed, asked MX",
      S(HDR("\x01", "\x03") Q_MX RR_A(TTL_50) RR_MX(TTL_300) RR_A(TTL_120)), MX, 300 },
    { "class CH is not IN", S(HDR("\x01", "\x01") Q_MX PTR_Q T_MX C_CH TTL_300 MX_DATA), MX, -1 },
    { "CH skipped, IN counted",
      S(HDR("\x01", "\x02") Q_MX PTR_Q T_MX C_CH TTL_50 MX_DATA RR_MX(TTL_300)), MX, 300 },

    /* Question counts. */
    { "qdcount 0", S(HDR("\x00", "\x01") QNAME T_MX C_IN TTL_300 MX_DATA), MX, 300 },
    { "qdcount 2",
      S(HDR("\x02", "\x01") Q_MX "\x03" "www" PTR_Q "\x00\x01" "\x00\x01" RR_MX(TTL_300)),
      MX, 300 },
    { "qdcount 2, one question there", S(HDR("\x02", "\x01") Q_MX RR_MX(TTL_300)), MX, -1 },
    { "qdcount 65535", S(HDR("\xff", "\x01") Q_MX RR_MX(TTL_300)), MX, -1 },
    { "question cut in its type", S(HDR("\x01", "\x00") QNAME "\x00\x0f" "\x00"), MX, -1 },
    { "question name without its end", S(HDR("\x01", "\x00") "\x07" "example"), MX, -1 },

    /* Answer counts and cut answers. */
    { "ancount 0", S(HDR("\x01", "\x00") Q_MX), MX, -1 },
    { "ancount 2, one answer there", S(HDR("\x01", "\x02") Q_MX RR_MX(TTL_300)), MX, -1 },
    { "ancount 65535, one answer", S(HDR("\x01", "\xff") Q_MX RR_MX(TTL_300)), MX, -1 },
    { "answer cut in its fixed part",
      S(HDR("\x01", "\x01") Q_MX PTR_Q T_MX C_IN "\x00\x00"), MX, -1 },
    { "answer cut in its rdata", S(HDR("\x01", "\x01") Q_MX PTR_Q T_MX C_IN TTL_300 "\x00\x07"
                                   "\x00\x0a"), MX, -1 },
    { "rdlength 65535", S(HDR("\x01", "\x01") Q_MX PTR_Q T_MX C_IN TTL_300 "\xff\xff" "\x00\x0a"),
      MX, -1 },
    { "rdlength one past the end",
      S(HDR("\x01", "\x01") Q_MX PTR_Q T_MX C_IN TTL_300 "\x00\x08" "\x00\x0a" "\x02" "mx" PTR_Q),
      MX, -1 },
    { "good record, then a cut one",
      S(HDR("\x01", "\x02") Q_MX RR_MX(TTL_300) PTR_Q T_MX), MX, -1 },
    { "good record, then a bad pointer",
      S(HDR("\x01", "\x02") Q_MX RR_MX(TTL_300) "\xc0\xff" T_MX C_IN TTL_50 MX_DATA), MX, -1 },

    /* Headers. */
    { "empty", S(""), MX, -1 },
    { "11 bytes", S("\x12\x34\x81\x80" "\x00\x01" "\x00\x01" "\x00\x00" "\x00"), MX, -1 },
    { "header only, no counts", S(HDR("\x00", "\x00")), MX, -1 },

    /* Names: pointers and labels. */
    { "pointer to itself",
      S(HDR("\x01", "\x01") Q_MX "\xc0\x1d" T_MX C_IN TTL_300 MX_DATA), MX, -1 },
    { "pointer loop inside one name",
      S(HDR("\x01", "\x01") Q_MX "\x02" "mx" "\xc0\x1d" T_MX C_IN TTL_300 MX_DATA), MX, -1 },
    { "pointer forward",
      S(HDR("\x01", "\x01") Q_MX "\xc0\x30" T_MX C_IN TTL_300 MX_DATA), MX, -1 },
    { "pointer into the header",
      S(HDR("\x01", "\x01") Q_MX "\xc0\x04" T_MX C_IN TTL_300 MX_DATA), MX, -1 },
    { "pointer past the end",
      S(HDR("\x01", "\x01") Q_MX "\xff\xff" T_MX C_IN TTL_300 MX_DATA), MX, -1 },
    { "question name is a pointer", S(HDR("\x01", "\x01") "\xc0\x0c" "\x00\x0f" "\x00\x01"
                                      RR_MX(TTL_300)), MX, -1 },
    { "pointer missing its second byte", S(HDR("\x01", "\x01") Q_MX "\xc0"), MX, -1 },
    { "label type 01",
      S(HDR("\x01", "\x01") Q_MX "\x41" "\x00" T_MX C_IN TTL_300 MX_DATA), MX, -1 },
    { "label type 10",
      S(HDR("\x01", "\x01") Q_MX "\x81" "\x00" T_MX C_IN TTL_300 MX_DATA), MX, -1 },
    { "label longer than the buffer", S(HDR("\x01", "\x01") Q_MX "\x3f" "abc"), MX, -1 },
};

/* One growable response for the rows built at run time. */
struct msg {
    unsigned char *b;
    size_t len, cap;
};

/* put - append n bytes. */
static void put(struct msg *m, const void *p, size_t n)
{
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->b = realloc(m->b, m->cap);
        if (!m->b)
            abort();
    }
    memcpy(m->b + m->len, p, n);
    m->len += n;
}

/* put_label_name - a name of count labels of label_len bytes each, then the root. */
static void put_label_name(struct msg *m, unsigned count, const unsigned *label_lens)
{
    for (unsigned i = 0; i < count; i++) {
        unsigned char len = (unsigned char)label_lens[i];
        char label[64];
        memset(label, 'a', sizeof(label));
        put(m, &len, 1);
        put(m, label, len);
    }
    put(m, "", 1);
}

/* run_row - one row in one piece, then cut at every length (must not read past the cut). */
static void run_row(const char *name, const unsigned char *in, size_t len, uint16_t qtype,
                    int64_t want)
{
    int64_t got = dns_answer_ttl(in, len, qtype);

    CHECK(got == want, "%s: got %lld, want %lld", name, (long long)got, (long long)want);
    for (size_t cut = 0; cut < len; cut++) {
        /* A copy of exactly cut bytes: ASan catches a read of the byte after. */
        unsigned char *copy = malloc(cut ? cut : 1);
        memcpy(copy, in, cut);
        got = dns_answer_ttl(copy, cut, qtype);
        free(copy);
        if (!(got == -1 || (got >= 0 && got <= 2147483647))) {
            CHECK(false, "%s cut at %zu: got %lld", name, cut, (long long)got);
            break;
        }
    }
}

/* long_names - owner names of exactly 255 bytes (good) and 256 bytes (too long). */
static void long_names(void)
{
    static const unsigned fits[] = { 63, 63, 63, 61 };   /* 4 + 250 + root = 255 */
    static const unsigned over[] = { 63, 63, 63, 62 };   /* 256 */
    const unsigned *sets[2] = { fits, over };

    for (int i = 0; i < 2; i++) {
        struct msg m = { 0 };
        put(&m, HDR("\x01", "\x01") Q_MX, sizeof(HDR("\x01", "\x01") Q_MX) - 1);
        put_label_name(&m, 4, sets[i]);
        put(&m, T_MX C_IN TTL_120 MX_DATA, sizeof(T_MX C_IN TTL_120 MX_DATA) - 1);
        run_row(i == 0 ? "owner name of 255 bytes" : "owner name of 256 bytes", m.b, m.len, MX,
                i == 0 ? 120 : -1);
        free(m.b);
    }
}

#define MANY_ANSWERS 3400               /* 19 bytes each: the message is just under 64 KiB */

/* many_answers - MANY_ANSWERS MX records in one message, TTLs MANY_ANSWERS down to 1. */
static void many_answers(void)
{
    struct msg m = { 0 };
    unsigned char hdr[12] = { 0x12, 0x34, 0x81, 0x80, 0, 1, MANY_ANSWERS >> 8,
                              MANY_ANSWERS & 0xff, 0, 0, 0, 0 };

    put(&m, hdr, sizeof(hdr));
    put(&m, Q_MX, sizeof(Q_MX) - 1);
    for (unsigned i = 0; i < MANY_ANSWERS; i++) {
        uint32_t ttl = MANY_ANSWERS - i;
        unsigned char t[4] = { (unsigned char)(ttl >> 24), (unsigned char)(ttl >> 16),
                               (unsigned char)(ttl >> 8), (unsigned char)ttl };
        put(&m, PTR_Q T_MX C_IN, 6);
        put(&m, t, 4);
        put(&m, MX_DATA, sizeof(MX_DATA) - 1);
    }
    CHECK(m.len > 60000 && m.len < 65536, "size %zu", m.len);
    CHECK(dns_answer_ttl(m.b, m.len, MX) == 1, "%u answers: %lld", MANY_ANSWERS,
          (long long)dns_answer_ttl(m.b, m.len, MX));
    CHECK(dns_answer_ttl(m.b, m.len - 1, MX) == -1, "many answers, last byte cut");
    CHECK(dns_answer_ttl(m.b, m.len, A) == -1, "many answers, asked A");
    free(m.b);
}

/* Reverse lookup names (dns_ptr_name): text address -> PTR query name ("" = refused). */
struct ptr_row {
    int family;
    const char *addr;
    const char *want;
};

static const struct ptr_row ptr_rows[] = {
    { AF_INET, "192.0.2.1", "1.2.0.192.in-addr.arpa" },
    { AF_INET, "127.0.0.1", "1.0.0.127.in-addr.arpa" },
    { AF_INET, "0.0.0.0", "0.0.0.0.in-addr.arpa" },
    { AF_INET, "255.255.255.255", "255.255.255.255.in-addr.arpa" },
    { AF_INET6, "2001:db8::567:89ab",
      "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa" },
    { AF_INET6, "::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa" },
    { AF_INET6, "::ffff:198.51.100.7", "7.100.51.198.in-addr.arpa" },  /* v4-mapped: IPv4 */
    { AF_UNIX, "", "" },
};

static void ptr_names(void)
{
    for (size_t i = 0; i < sizeof(ptr_rows) / sizeof(ptr_rows[0]); i++) {
        const struct ptr_row *r = &ptr_rows[i];
        struct sockaddr_storage ss;
        char out[DNS_NAME_BYTES_MAX];
        bool ok;
        memset(&ss, 0, sizeof(ss));
        ss.ss_family = (sa_family_t)r->family;
        if (r->family == AF_INET)
            inet_pton(AF_INET, r->addr, &((struct sockaddr_in *)&ss)->sin_addr);
        else if (r->family == AF_INET6)
            inet_pton(AF_INET6, r->addr, &((struct sockaddr_in6 *)&ss)->sin6_addr);
        ok = dns_ptr_name((struct sockaddr *)&ss, out, sizeof(out));
        CHECK(ok == (r->want[0] != '\0'), "%s: ok %d", r->addr, ok);
        if (ok && r->want[0])
            CHECK(strcmp(out, r->want) == 0, "%s: %s", r->addr, out);
        if (r->family == AF_INET6 && r->want[0])  /* too small a buffer is refused, not cut */
            CHECK(!dns_ptr_name((struct sockaddr *)&ss, out, strlen(r->want)), "%s: short",
                  r->addr);
    }
}

int main(void)
{
    ptr_names();
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        run_row(rows[i].name, rows[i].in, rows[i].len, rows[i].qtype, rows[i].want);
    CHECK(dns_answer_ttl(NULL, 0, MX) == -1, "NULL buffer");
    long_names();
    many_answers();
    return check_done("test_dns");
}
