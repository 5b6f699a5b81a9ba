/*
 * config_value.c - the syntax of configuration values: durations, sizes, booleans, host
 * names, host[:port], socket addresses, CIDR networks and dates, parsed from the text an
 * operator writes and formatted back into it for messages; and the match of a client address
 * against a network list.
 *
 * FUNCTIONS
 *   config_parse_duration_ms, config_parse_size, config_parse_addr, config_parse_net,
 *   config_parse_date                  the public parsers (core/config.h), shared with the tests
 *   config_net_match                   a client address inside a network list (core/config.h)
 *   config_parse_digits, config_parse_uint, config_parse_bool, config_hostname_plausible,
 *   config_parse_hostport              for config.c's setters (core/config_value.h)
 *   config_format_duration, config_format_size, config_format_addr
 *                                      a value as an operator would write it, for messages
 *
 * DESIGN
 *   Every function here is pure: no I/O, no allocation, no global state, and *out is written
 *   only on success. What a value means for a key (its bounds, its field, its message) is
 *   config.c's; this file knows only what well-formed text looks like.
 *
 * SECURITY
 *   The values are operator input: trusted in intent, not in form. Every number is checked
 *   for overflow, every copy is bounded by the buffer it goes into, addresses are numeric
 *   only (no DNS at start-up). config_net_match() matches a v4-mapped client address as IPv4
 *   only, so "::/0" in trusted_networks never trusts every IPv4 client of a dual-stack
 *   listener; a network written as ::ffff:a.b.c.d/n is stored as IPv4 for the same reason.
 *
 * STANDARDS
 *   RFC 1035 2.3.1 and RFC 1123 2.1 (host name syntax, for hostname and smarthost),
 *   RFC 4291 2.5.5.2 (IPv4-mapped IPv6 addresses), RFC 4632 (CIDR notation).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/config.h"
#include "core/config_value.h"

#define LABEL_BYTES_MAX    63    /* RFC 1035 2.3.4 */

/* ---------------------------------------------------------------------------------------- */
/* Numbers, durations, sizes, booleans                                                      */

/* config_parse_digits - a run of decimal digits at s, no sign; *end after it. -1 on none or
 * overflow. */
int config_parse_digits(const char *s, uint64_t *out, const char **end)
{
    uint64_t n = 0;
    const char *p = s;

    if (!config_is_digit(*p))
        return -1;
    for (; config_is_digit(*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    *out = n;
    *end = p;
    return 0;
}

/* config_parse_uint - the whole of s is a decimal number. */
int config_parse_uint(const char *s, uint64_t *out)
{
    const char *end;
    uint64_t n;

    if (config_parse_digits(s, &n, &end) || *end)
        return -1;
    *out = n;
    return 0;
}

/* parse_port - 1..65535, digits only. */
static int parse_port(const char *s, unsigned *port)
{
    uint64_t n;

    if (strlen(s) > 5 || config_parse_uint(s, &n) || n < 1 || n > 65535)
        return -1;
    *port = (unsigned)n;
    return 0;
}

/* config_parse_duration_ms - a duration (see core/config.h). */
int config_parse_duration_ms(const char *s, uint64_t *ms)
{
    static const struct { const char *suffix; uint64_t ms; } units[] = {
        { "", MS_PER_S }, { "s", MS_PER_S }, { "ms", 1 }, { "m", MS_PER_M },
        { "h", MS_PER_H }, { "d", MS_PER_D },
    };
    const char *end;
    uint64_t n;

    if (config_parse_digits(s, &n, &end))
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (n > UINT64_MAX / units[i].ms)
                return -1;
            *ms = n * units[i].ms;
            return 0;
        }
    }
    return -1;
}

/* config_parse_size - a size in bytes (see core/config.h). */
int config_parse_size(const char *s, uint64_t *bytes)
{
    const char *end;
    uint64_t n, unit = 1;

    if (config_parse_digits(s, &n, &end))
        return -1;
    switch (*end) {
    case 'k': case 'K': unit = KIB; end++; break;
    case 'm': case 'M': unit = MIB; end++; break;
    case 'g': case 'G': unit = GIB; end++; break;
    default: break;
    }
    if (*end == 'b' || *end == 'B')     /* "35MB", "1024B" */
        end++;
    if (*end || n > UINT64_MAX / unit)
        return -1;
    *bytes = n * unit;
    return 0;
}

/* config_parse_bool - yes/no/true/false/on/off/1/0, any case. */
int config_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "yes", "true", "on", "1" };
    static const char *const no[] = { "no", "false", "off", "0" };

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) { *out = true; return 0; }
        if (strcasecmp(s, no[i]) == 0) { *out = false; return 0; }
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Host names and addresses                                                                 */

/* config_hostname_plausible - LDH labels of 1..63 bytes, no leading or trailing '-', at most 253
 * bytes, no empty label (so no trailing dot), and a last label that is not all digits (that
 * would be an IPv4 address). A single label ("localhost", a container's name) is accepted. */
bool config_hostname_plausible(const char *s)
{
    size_t len = strlen(s), label = 0;
    bool all_digits = true;
    char prev = '.';

    if (len == 0 || len > DOMAIN_BYTES_MAX)
        return false;
    for (const char *p = s; *p; prev = *p++) {
        if (*p == '.') {
            if (label == 0 || prev == '-')
                return false;
            label = 0;
            all_digits = true;
        } else if (config_is_alpha(*p) || config_is_digit(*p) || *p == '-') {
            if (label == 0 && *p == '-')
                return false;
            if (++label > LABEL_BYTES_MAX)
                return false;
            if (!config_is_digit(*p))
                all_digits = false;
        } else {
            return false;
        }
    }
    return label > 0 && prev != '-' && !all_digits;
}

/* config_parse_hostport - host[:port] or [address][:port] into out as "host:port": the host
 * a plausible host name or an IPv4 address, or an IPv6 or IPv4 address in brackets (which are
 * kept); the port 1..65535, port_default when absent. -1 when s is malformed (so is "": what
 * an empty value means is the caller's) or out's size bytes are too few; HOSTPORT_BYTES_MAX
 * always suffice. */
int config_parse_hostport(const char *s, unsigned port_default, char *out, size_t size)
{
    char host[DOMAIN_BYTES_MAX + 3];
    const char *port_s = NULL, *end;
    unsigned port = port_default;
    size_t host_len;
    uint8_t bin[16];
    int w;

    if (*s == '[') {
        end = strchr(s, ']');
        if (!end || (end[1] != '\0' && end[1] != ':'))
            return -1;
        host_len = (size_t)(end - s) + 1;       /* keeps the brackets */
        if (end[1] == ':')
            port_s = end + 2;
    } else {
        end = strchr(s, ':');
        host_len = end ? (size_t)(end - s) : strlen(s);
        if (end)
            port_s = end + 1;
    }
    if (host_len >= sizeof(host))
        return -1;
    memcpy(host, s, host_len);
    host[host_len] = '\0';
    if (host[0] == '[') {
        char inner[INET6_ADDRSTRLEN + 1];
        if (host_len - 2 >= sizeof(inner) || host_len < 3)
            return -1;
        memcpy(inner, host + 1, host_len - 2);
        inner[host_len - 2] = '\0';
        if (inet_pton(AF_INET6, inner, bin) != 1 && inet_pton(AF_INET, inner, bin) != 1)
            return -1;
    } else if (inet_pton(AF_INET, host, bin) != 1 && !config_hostname_plausible(host)) {
        return -1;
    }
    if (port_s && parse_port(port_s, &port))
        return -1;
    w = snprintf(out, size, "%s:%u", host, port);
    return w < 0 || (size_t)w >= size ? -1 : 0;
}

/* config_parse_addr - a numeric socket address (see core/config.h). */
int config_parse_addr(const char *s, int port_default, struct config_addr *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *start = s, *port_s = NULL, *colon;
    size_t host_len;
    unsigned port;
    struct config_addr a;

    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close)
            return -1;
        start = s + 1;
        host_len = (size_t)(close - start);
        if (close[1] == ':')
            port_s = close + 2;
        else if (close[1] != '\0')
            return -1;
    } else if ((colon = strchr(s, ':')) && strchr(colon + 1, ':')) {
        /* a bare IPv6 address: its port can only be the default */
        if (port_default < 0)
            return -1;
        host_len = strlen(s);
    } else if (colon) {
        host_len = (size_t)(colon - s);
        port_s = colon + 1;
    } else {
        host_len = strlen(s);
    }
    if (host_len == 0 || host_len >= sizeof(host))
        return -1;
    memcpy(host, start, host_len);
    host[host_len] = '\0';

    if (port_s) {
        if (parse_port(port_s, &port))
            return -1;
    } else {
        if (port_default < 0 || port_default > 65535)
            return -1;
        port = (unsigned)port_default;
    }

    memset(&a, 0, sizeof(a));
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
    memset(&in4, 0, sizeof(in4));
    memset(&in6, 0, sizeof(in6));
    if (inet_pton(AF_INET, host, &in4.sin_addr) == 1) {
        in4.sin_family = AF_INET;
        in4.sin_port = htons((uint16_t)port);
        memcpy(&a.sa, &in4, sizeof(in4));
        a.len = sizeof(in4);
    } else if (inet_pton(AF_INET6, host, &in6.sin6_addr) == 1) {
        in6.sin6_family = AF_INET6;
        in6.sin6_port = htons((uint16_t)port);
        memcpy(&a.sa, &in6, sizeof(in6));
        a.len = sizeof(in6);
    } else {
        return -1;                      /* host names are refused: no DNS at start-up */
    }
    *out = a;
    return 0;
}

/* is_v4_mapped - ::ffff:a.b.c.d (RFC 4291 2.5.5.2). */
static bool is_v4_mapped(const uint8_t *a16)
{
    static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    return memcmp(a16, prefix, sizeof(prefix)) == 0;
}

/* clear_host_bits - zero every bit of addr past prefix. */
static void clear_host_bits(uint8_t *addr, unsigned bytes, unsigned prefix)
{
    for (unsigned i = 0; i < bytes; i++) {
        unsigned keep = prefix > i * 8 ? prefix - i * 8 : 0;
        if (keep < 8)
            addr[i] &= (uint8_t)(0xff00 >> keep);
    }
}

/* config_parse_net - a CIDR network (see core/config.h). */
int config_parse_net(const char *s, struct config_net *out)
{
    char buf[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t addr_len = slash ? (size_t)(slash - s) : strlen(s);
    struct config_net n;
    uint64_t prefix = 0;
    unsigned bits;

    if (addr_len == 0 || addr_len >= sizeof(buf))
        return -1;
    memcpy(buf, s, addr_len);
    buf[addr_len] = '\0';
    memset(&n, 0, sizeof(n));
    if (inet_pton(AF_INET, buf, n.addr) == 1) {
        n.family = AF_INET;
        bits = 32;
    } else if (inet_pton(AF_INET6, buf, n.addr) == 1) {
        n.family = AF_INET6;
        bits = 128;
    } else {
        return -1;
    }
    if (slash) {
        if (strlen(slash + 1) > 3 || config_parse_uint(slash + 1, &prefix) || prefix > bits)
            return -1;
    } else {
        prefix = bits;
    }
    n.prefix = (uint8_t)prefix;
    clear_host_bits(n.addr, bits / 8, n.prefix);

    /* ::ffff:a.b.c.d/96+n is the IPv4 network a.b.c.d/n: store it so, see SECURITY */
    if (n.family == AF_INET6 && n.prefix >= 96 && is_v4_mapped(n.addr)) {
        memmove(n.addr, n.addr + 12, 4);
        memset(n.addr + 4, 0, 12);
        n.family = AF_INET;
        n.prefix = (uint8_t)(n.prefix - 96);
    }
    *out = n;
    return 0;
}
/* ---------------------------------------------------------------------------------------- */
/* Dates                                                                                    */

/* config_parse_date - YYYY-MM-DD to the unix time of its 00:00 UTC (see core/config.h). */
int config_parse_date(const char *s, int64_t *unix_time)
{
    static const int mdays[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int y, m, d, days;
    struct tm tm;

    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return -1;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && !config_is_digit(s[i]))
            return -1;
    y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    m = (s[5] - '0') * 10 + (s[6] - '0');
    d = (s[8] - '0') * 10 + (s[9] - '0');
    if (y < 1970 || m < 1 || m > 12)
        return -1;
    days = mdays[m - 1];
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        days = 29;
    if (d < 1 || d > days)
        return -1;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    *unix_time = (int64_t)timegm(&tm);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Formatting, for messages                                                                 */

/* config_format_duration - ms in the largest unit that divides it: "5m", "1500ms". */
const char *config_format_duration(uint64_t ms, char *buf, size_t size)
{
    static const struct { uint64_t ms; const char *suffix; } units[] = {
        { MS_PER_D, "d" }, { MS_PER_H, "h" }, { MS_PER_M, "m" }, { MS_PER_S, "s" },
    };

    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(buf, size, "%llu%s", (unsigned long long)(ms / units[i].ms),
                     units[i].suffix);
            return buf;
        }
    }
    snprintf(buf, size, ms ? "%llums" : "%llu", (unsigned long long)ms);
    return buf;
}

/* config_format_size - bytes in the largest of G, M, K that divides it. */
const char *config_format_size(uint64_t bytes, char *buf, size_t size)
{
    static const struct { uint64_t unit; const char *suffix; } units[] = {
        { GIB, "G" }, { MIB, "M" }, { KIB, "K" },
    };

    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (bytes != 0 && bytes % units[i].unit == 0) {
            snprintf(buf, size, "%llu%s", (unsigned long long)(bytes / units[i].unit),
                     units[i].suffix);
            return buf;
        }
    }
    snprintf(buf, size, "%llu", (unsigned long long)bytes);
    return buf;
}

/* config_format_addr - "1.2.3.4:25" or "[::1]:25". */
const char *config_format_addr(const struct config_addr *a, char *buf, size_t size)
{
    char host[INET6_ADDRSTRLEN];
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;

    if (a->sa.ss_family == AF_INET) {
        memcpy(&in4, &a->sa, sizeof(in4));
        inet_ntop(AF_INET, &in4.sin_addr, host, sizeof(host));
        snprintf(buf, size, "%s:%u", host, ntohs(in4.sin_port));
    } else {
        memcpy(&in6, &a->sa, sizeof(in6));
        inet_ntop(AF_INET6, &in6.sin6_addr, host, sizeof(host));
        snprintf(buf, size, "[%s]:%u", host, ntohs(in6.sin6_port));
    }
    return buf;
}

/* ---------------------------------------------------------------------------------------- */
/* Network matching                                                                         */

/* prefix_match - the first prefix bits of a and net are equal. */
static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;

    if (memcmp(a, net, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff00 >> rest);
    return (a[whole] & mask) == (net[whole] & mask);
}

/* config_net_match - whether sa is inside any of nets (see core/config.h). */
bool config_net_match(const struct config_net *nets, unsigned count, const struct sockaddr *sa)
{
    uint8_t addr[16];
    int family;

    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in4;
        memcpy(&in4, sa, sizeof(in4));
        memcpy(addr, &in4.sin_addr, 4);
        family = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof(in6));
        memcpy(addr, &in6.sin6_addr, 16);
        family = AF_INET6;
        if (is_v4_mapped(addr)) {       /* an IPv4 client of a dual-stack socket: IPv4 only */
            memmove(addr, addr + 12, 4);
            family = AF_INET;
        }
    } else {
        return false;
    }
    for (unsigned i = 0; i < count; i++)
        if (nets[i].family == family && prefix_match(addr, nets[i].addr, nets[i].prefix))
            return true;
    return false;
}
