/*
 * bench.c - helpers shared by ringbench and ringsink (see bench.h).
 *
 * Functions: bench_die(), bench_parse_u64(), bench_parse_bytes(), bench_parse_ms(),
 * bench_parse_odds(), bench_resolve(), bench_addr_text(), bench_cpus(), bench_pin(),
 * bench_raise_nofile(),
 * bench_seed(), bench_json_codes(), bench_text_codes().
 *
 * SECURITY: the values parsed here come from the command line of the person running the
 * tool; each parser checks the whole string and its range, so a typo is an error, never a
 * silently different value.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"

const char *bench_prog = "bench";

/* bench_die - see bench.h. */
void bench_die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", bench_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* bench_parse_u64 - see bench.h. */
bool bench_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* bench_parse_bytes - see bench.h. */
bool bench_parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    unsigned shift = 0;

    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno)
        return false;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: return false;
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || v > (UINT64_MAX >> shift))
        return false;
    *out = (uint64_t)v << shift;
    return true;
}

/* bench_parse_ms - see bench.h. */
bool bench_parse_ms(const char *s, uint64_t *out_ms)
{
    char *end;
    double v, scale = 1000;

    if (!s || ((*s < '0' || *s > '9') && *s != '.'))
        return false;
    errno = 0;
    v = strtod(s, &end);
    if (errno || !isfinite(v) || v < 0)
        return false;
    if (!strcmp(end, "ms"))
        scale = 1;
    else if (!strcmp(end, "s") || !*end)
        scale = 1000;
    else if (!strcmp(end, "m"))
        scale = 60000;
    else if (!strcmp(end, "h"))
        scale = 3600000;
    else
        return false;
    v *= scale;
    if (v > 1e15)
        return false;
    *out_ms = (uint64_t)(v + 0.5);  /* no libm: ringsink links without -lm */
    return true;
}

/* bench_parse_odds - see bench.h. */
bool bench_parse_odds(const char *s, double *out)
{
    char *end;
    double v;

    if (!s || ((*s < '0' || *s > '9') && *s != '.'))
        return false;
    errno = 0;
    v = strtod(s, &end);
    if (errno || !isfinite(v))
        return false;
    if (*end == '%' && !end[1])
        v /= 100;
    else if (*end)
        return false;
    if (v < 0 || v > 1)
        return false;
    *out = v;
    return true;
}

/* bench_resolve - see bench.h. */
bool bench_resolve(const char *hostport, struct sockaddr_storage *ss, socklen_t *len,
                   char *host, size_t host_cap, char *err, size_t err_cap)
{
    struct addrinfo hints, *res = NULL;
    const char *colon, *port, *h = hostport;
    size_t hlen;
    uint64_t pnum;
    int r;

    if (hostport[0] == '[') {  /* [v6]:port */
        const char *close = strchr(hostport, ']');
        if (!close || close[1] != ':') {
            snprintf(err, err_cap, "%s: want [ADDRESS]:PORT", hostport);
            return false;
        }
        h = hostport + 1;
        hlen = (size_t)(close - h);
        port = close + 2;
    } else {
        colon = strrchr(hostport, ':');
        if (!colon || colon == hostport) {
            snprintf(err, err_cap, "%s: want HOST:PORT", hostport);
            return false;
        }
        hlen = (size_t)(colon - hostport);
        port = colon + 1;
    }
    if (!bench_parse_u64(port, 0, 65535, &pnum)) {
        snprintf(err, err_cap, "%s: bad port", hostport);
        return false;
    }
    if (hlen >= host_cap || hlen >= BENCH_HOST_BYTES_MAX) {
        snprintf(err, err_cap, "%s: host name too long", hostport);
        return false;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    r = getaddrinfo(host, port, &hints, &res);
    if (r != 0 || !res) {
        snprintf(err, err_cap, "%s: %s", hostport, r ? gai_strerror(r) : "no address");
        return false;
    }
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

/* bench_addr_text - see bench.h. */
void bench_addr_text(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
    char a[INET6_ADDRSTRLEN] = "?";

    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
        snprintf(buf, cap, "[%s]:%u", a, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
        snprintf(buf, cap, "%s:%u", a, ntohs(s4->sin_port));
    }
}

/* bench_cpus - see bench.h. */
unsigned bench_cpus(int *cpus, unsigned max)
{
    cpu_set_t set;
    unsigned n = 0;

    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return 0;
    for (int c = 0; c < CPU_SETSIZE && n < max; c++)
        if (CPU_ISSET(c, &set))
            cpus[n++] = c;
    return n;
}

/* bench_raise_nofile - see bench.h. */
unsigned long bench_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (unsigned long)rl.rlim_cur;
}

/* bench_pin - see bench.h. */
void bench_pin(int cpu)
{
    cpu_set_t set;

    if (cpu < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* bench_seed - see bench.h. */
uint64_t bench_seed(uint64_t n)
{
    struct timespec ts;
    uint64_t s;

    clock_gettime(CLOCK_REALTIME, &ts);
    s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40) ^
        (n * 0x9E3779B97F4A7C15ull);
    return s ? s : 0x853c49e6748fea9bull;
}

/* bench_json_codes - see bench.h. */
void bench_json_codes(FILE *f, const char *key, const uint64_t *codes)
{
    bool first = true;

    fprintf(f, "\"%s\":{", key);
    for (unsigned c = 0; c < BENCH_CODES; c++) {
        if (!codes[c])
            continue;
        fprintf(f, "%s\"%u\":%llu", first ? "" : ",", c, (unsigned long long)codes[c]);
        first = false;
    }
    fputc('}', f);
}

/* bench_text_codes - see bench.h. */
void bench_text_codes(FILE *f, const uint64_t *codes)
{
    bool any = false;

    for (unsigned c = 0; c < BENCH_CODES; c++) {
        if (!codes[c])
            continue;
        fprintf(f, "%s%u=%llu", any ? " " : "", c, (unsigned long long)codes[c]);
        any = true;
    }
    if (!any)
        fputs("none", f);
}
