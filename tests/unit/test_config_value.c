/*
 * test_config_value.c - unit tests of core/config_value.c: the value parsers (table-driven,
 * good and bad: durations, sizes, addresses, networks, dates) and network matching.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "core/config.h"
#include "tests/unit/check.h"
#include "tests/unit/config_cmp.h"

static void test_durations(void)
{
    static const struct { const char *in; int ok; uint64_t ms; } cases[] = {
        { "0", 1, 0 }, { "300", 1, 300000 }, { "300s", 1, 300000 }, { "5m", 1, 300000 },
        { "1h", 1, 3600000 }, { "1d", 1, 86400000 }, { "250ms", 1, 250 }, { "0ms", 1, 0 },
        { "18446744073709551615ms", 1, UINT64_MAX },
        { "18446744073709551616ms", 0, 0 }, { "18446744073709552s", 0, 0 },
        { "213503982335d", 0, 0 },
        { "", 0, 0 }, { "s", 0, 0 }, { "ms", 0, 0 }, { "-1", 0, 0 }, { "+1", 0, 0 },
        { "1.5s", 0, 0 }, { "5 m", 0, 0 }, { " 5m", 0, 0 }, { "5M", 0, 0 }, { "1w", 0, 0 },
        { "1hs", 0, 0 }, { "1S", 0, 0 }, { "1mss", 0, 0 }, { "0x10", 0, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ms = 12345;
        int rc = config_parse_duration_ms(cases[i].in, &ms);
        CHECK((rc == 0) == cases[i].ok, "duration '%s' rc %d", cases[i].in, rc);
        if (cases[i].ok)
            CHECK(ms == cases[i].ms, "duration '%s' = %llu", cases[i].in, (unsigned long long)ms);
        else
            CHECK(ms == 12345, "duration '%s' wrote output on failure", cases[i].in);
    }
}

static void test_sizes(void)
{
    static const struct { const char *in; int ok; uint64_t bytes; } cases[] = {
        { "0", 1, 0 }, { "1024", 1, 1024 }, { "1K", 1, 1024 }, { "1k", 1, 1024 },
        { "35M", 1, 35ULL << 20 }, { "2G", 1, 2ULL << 30 }, { "1KB", 1, 1024 },
        { "64mb", 1, 64ULL << 20 }, { "10B", 1, 10 }, { "17179869183G", 1, 17179869183ULL << 30 },
        { "17179869184G", 0, 0 }, { "18446744073709551616", 0, 0 },
        { "", 0, 0 }, { "K", 0, 0 }, { "1T", 0, 0 }, { "1.5M", 0, 0 }, { "-1", 0, 0 },
        { "1 K", 0, 0 }, { "1KK", 0, 0 }, { "1BB", 0, 0 }, { "1KiB", 0, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t b = 777;
        int rc = config_parse_size(cases[i].in, &b);
        CHECK((rc == 0) == cases[i].ok, "size '%s' rc %d", cases[i].in, rc);
        if (cases[i].ok)
            CHECK(b == cases[i].bytes, "size '%s' = %llu", cases[i].in, (unsigned long long)b);
    }
}

static void test_addrs(void)
{
    static const struct {
        const char *in; int port_default; int ok; int fam; const char *addr; unsigned port;
    } cases[] = {
        { "127.0.0.1:25", -1, 1, AF_INET, "127.0.0.1", 25 },
        { "0.0.0.0:587", -1, 1, AF_INET, "0.0.0.0", 587 },
        { "[::1]:587", -1, 1, AF_INET6, "::1", 587 },
        { "[::]:65535", -1, 1, AF_INET6, "::", 65535 },
        { "[1.2.3.4]:25", -1, 1, AF_INET, "1.2.3.4", 25 },
        { "[2001:db8::1]:25", -1, 1, AF_INET6, "2001:db8::1", 25 },
        { "1.1.1.1", 53, 1, AF_INET, "1.1.1.1", 53 },
        { "1.1.1.1:5353", 53, 1, AF_INET, "1.1.1.1", 5353 },
        { "[::1]", 53, 1, AF_INET6, "::1", 53 },
        { "2001:db8::1", 53, 1, AF_INET6, "2001:db8::1", 53 },
        { "::ffff:1.2.3.4", 0, 1, AF_INET6, "::ffff:1.2.3.4", 0 },
        { "10.0.0.1", 0, 1, AF_INET, "10.0.0.1", 0 },
        /* bad */
        { "127.0.0.1", -1, 0, 0, NULL, 0 }, { "::1", -1, 0, 0, NULL, 0 },
        { "[::1]", -1, 0, 0, NULL, 0 }, { "localhost:25", -1, 0, 0, NULL, 0 },
        { "localhost", 53, 0, 0, NULL, 0 }, { "mail.example.net:25", -1, 0, 0, NULL, 0 },
        { "1.2.3.4:0", -1, 0, 0, NULL, 0 }, { "1.2.3.4:0", 53, 0, 0, NULL, 0 },
        { "1.2.3.4:65536", -1, 0, 0, NULL, 0 }, { "1.2.3.4:", -1, 0, 0, NULL, 0 },
        { "1.2.3.4:+25", -1, 0, 0, NULL, 0 }, { "1.2.3.4:25a", -1, 0, 0, NULL, 0 },
        { "1.2.3.4:000025", -1, 0, 0, NULL, 0 }, { "[::1]x", -1, 0, 0, NULL, 0 },
        { "[::1", -1, 0, 0, NULL, 0 }, { "[::1]:", -1, 0, 0, NULL, 0 },
        { "1.2.3:25", -1, 0, 0, NULL, 0 }, { "127.1:25", -1, 0, 0, NULL, 0 },
        { "", -1, 0, 0, NULL, 0 }, { "", 53, 0, 0, NULL, 0 }, { ":25", -1, 0, 0, NULL, 0 },
        { "[]:25", -1, 0, 0, NULL, 0 }, { "[fe80::1%eth0]:25", -1, 0, 0, NULL, 0 },
        { "1.2.3.4 :25", -1, 0, 0, NULL, 0 }, { "256.1.1.1:25", -1, 0, 0, NULL, 0 },
        { "[aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa]:25", -1, 0, 0, NULL, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct config_addr a;
        memset(&a, 0xaa, sizeof(a));
        int rc = config_parse_addr(cases[i].in, cases[i].port_default, &a);
        CHECK((rc == 0) == cases[i].ok, "addr '%s' (default %d) rc %d", cases[i].in,
              cases[i].port_default, rc);
        if (cases[i].ok && rc == 0)
            CHECK(addr_is(&a, cases[i].fam, cases[i].addr, cases[i].port), "addr '%s'",
                  cases[i].in);
    }
}

static void test_nets(void)
{
    static const struct { const char *in; int ok; int fam; const char *addr; unsigned prefix; }
    cases[] = {
        { "127.0.0.0/8", 1, AF_INET, "127.0.0.0", 8 },
        { "10.1.2.3/8", 1, AF_INET, "10.0.0.0", 8 },          /* host bits cleared */
        { "192.168.1.200/25", 1, AF_INET, "192.168.1.128", 25 },
        { "1.2.3.4", 1, AF_INET, "1.2.3.4", 32 },
        { "0.0.0.0/0", 1, AF_INET, "0.0.0.0", 0 },
        { "::1/128", 1, AF_INET6, "::1", 128 },
        { "::1", 1, AF_INET6, "::1", 128 },
        { "2001:db8::ff/32", 1, AF_INET6, "2001:db8::", 32 },
        { "2001:db8:ffff::/33", 1, AF_INET6, "2001:db8:8000::", 33 },
        { "::/0", 1, AF_INET6, "::", 0 },
        { "::ffff:10.1.0.0/104", 1, AF_INET, "10.0.0.0", 8 },  /* v4-mapped stored as v4 */
        { "::ffff:1.2.3.4", 1, AF_INET, "1.2.3.4", 32 },
        { "::ffff:0.0.0.0/96", 1, AF_INET, "0.0.0.0", 0 },
        { "::ffff:0.0.0.0/80", 1, AF_INET6, "::", 80 },        /* wider: stays v6 */
        { "1.2.3.4/33", 0, 0, NULL, 0 }, { "::/129", 0, 0, NULL, 0 },
        { "1.2.3.4/", 0, 0, NULL, 0 }, { "/8", 0, 0, NULL, 0 }, { "1.2.3.4/-1", 0, 0, NULL, 0 },
        { "1.2.3.4/8x", 0, 0, NULL, 0 }, { "1.2.3.4/0008", 0, 0, NULL, 0 },
        { "host/8", 0, 0, NULL, 0 }, { "", 0, 0, NULL, 0 }, { "1.2.3/24", 0, 0, NULL, 0 },
        { "1.2.3.4/8/8", 0, 0, NULL, 0 }, { "[::1]/128", 0, 0, NULL, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct config_net n;
        int rc = config_parse_net(cases[i].in, &n);
        CHECK((rc == 0) == cases[i].ok, "net '%s' rc %d", cases[i].in, rc);
        if (cases[i].ok && rc == 0)
            CHECK(net_is(&n, cases[i].fam, cases[i].addr, cases[i].prefix), "net '%s'",
                  cases[i].in);
    }
}

static void test_dates(void)
{
    static const struct { const char *in; int ok; int64_t t; } cases[] = {
        { "2014-01-01", 1, 1388534400 }, { "1970-01-01", 1, 0 }, { "2024-02-29", 1, 1709164800 },
        { "2000-02-29", 1, 951782400 }, { "2014-12-31", 1, 1419984000 },
        { "2023-02-29", 0, 0 }, { "2100-02-29", 0, 0 }, { "2014-13-01", 0, 0 },
        { "2014-00-10", 0, 0 }, { "2014-01-32", 0, 0 }, { "2014-04-31", 0, 0 },
        { "2014-01-00", 0, 0 }, { "2014-1-01", 0, 0 }, { "14-01-01", 0, 0 },
        { "2014/01/01", 0, 0 }, { "2014-01-01x", 0, 0 }, { "1969-12-31", 0, 0 }, { "", 0, 0 },
        { "2014-01-0a", 0, 0 }, { " 2014-01-1", 0, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t t = -7;
        int rc = config_parse_date(cases[i].in, &t);
        CHECK((rc == 0) == cases[i].ok, "date '%s' rc %d", cases[i].in, rc);
        if (cases[i].ok)
            CHECK(t == cases[i].t, "date '%s' = %lld", cases[i].in, (long long)t);
    }
}

static struct sockaddr_storage sa_of(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &in4->sin_addr) == 1)
        in4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1)
        in6->sin6_family = AF_INET6;
    return ss;
}

static void test_net_match(void)
{
    static const char *const list[] = {
        "127.0.0.0/8", "::1/128", "::ffff:10.0.0.0/104", "2001:db8::/32", "192.168.1.0/25",
    };
    struct config_net nets[8];
    for (size_t i = 0; i < 5; i++)
        CHECK(config_parse_net(list[i], &nets[i]) == 0, "net %s", list[i]);

    static const struct { const char *addr; bool in; } cases[] = {
        { "127.1.2.3", true }, { "128.0.0.1", false }, { "::1", true }, { "::2", false },
        { "::ffff:127.0.0.1", true }, { "::ffff:10.9.9.9", true }, { "10.9.9.9", true },
        { "::ffff:11.0.0.1", false }, { "192.168.1.127", true }, { "192.168.1.128", false },
        { "::ffff:192.168.1.1", true }, { "2001:db8:1::5", true }, { "2001:db9::1", false },
        { "::ffff:7f00:1", true },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sockaddr_storage ss = sa_of(cases[i].addr);
        CHECK(config_net_match(nets, 5, (struct sockaddr *)&ss) == cases[i].in, "match %s",
              cases[i].addr);
    }

    /* SECURITY: "::/0" is every IPv6 client, never an IPv4 one however it arrives */
    struct config_net any6, any4;
    CHECK(config_parse_net("::/0", &any6) == 0 && config_parse_net("0.0.0.0/0", &any4) == 0,
          "any nets");
    struct sockaddr_storage m = sa_of("::ffff:1.2.3.4"), v4 = sa_of("1.2.3.4"),
                            v6 = sa_of("2001::1");
    CHECK(!config_net_match(&any6, 1, (struct sockaddr *)&m), "::/0 vs mapped");
    CHECK(!config_net_match(&any6, 1, (struct sockaddr *)&v4), "::/0 vs v4");
    CHECK(config_net_match(&any6, 1, (struct sockaddr *)&v6), "::/0 vs v6");
    CHECK(config_net_match(&any4, 1, (struct sockaddr *)&m), "0/0 vs mapped");
    CHECK(!config_net_match(&any4, 1, (struct sockaddr *)&v6), "0/0 vs v6");
    CHECK(!config_net_match(nets, 0, (struct sockaddr *)&v4), "empty list");
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    CHECK(!config_net_match(nets, 5, (struct sockaddr *)&un), "AF_UNIX");
}

/* ---------------------------------------------------------------------------------------- */

int main(void)
{
    test_durations();
    test_sizes();
    test_addrs();
    test_nets();
    test_dates();
    test_net_match();

    return check_done("test_config_value");
}
