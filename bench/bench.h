/*
 * bench.h - what ringbench and ringsink share besides the loop: command-line value parsing
 * (sizes, durations, odds, HOST:PORT), CPU placement, a small random generator, counters
 * another thread may read, and JSON output of counts by key.
 */
#ifndef RB_BENCH_H
#define RB_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define BENCH_CPUS_MAX       1024   /* CPUs the tools place threads on */
#define BENCH_HOST_BYTES_MAX 256    /* a host name or address literal in HOST:PORT */
#define BENCH_ADDR_TEXT_BYTES 64    /* "[v6 address]:port" */
#define BENCH_CODES          600    /* reply codes are counted in [0, BENCH_CODES) */

extern const char *bench_prog;    /* program name for messages ("ringbench") */

/* Counters written by their owner thread only and read by another (progress lines, SIGUSR1
 * snapshots): relaxed atomic stores and loads, no read-modify-write on the hot path. */
#define BENCH_ADD(x, n) __atomic_store_n(&(x), (x) + (n), __ATOMIC_RELAXED)
#define BENCH_GET(x)    __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* bench_die - print "PROG: message" on stderr and exit 2 (a usage or set-up error). */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* bench_parse_u64 - a decimal number within [min, max]; false otherwise. */
bool bench_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* bench_parse_bytes - a byte count with an optional K, M or G suffix (powers of 1024). */
bool bench_parse_bytes(const char *s, uint64_t *out);

/* bench_parse_ms - a duration: a number (may have a fraction) of seconds, or with a suffix
 * ms, s, m or h; into milliseconds. */
bool bench_parse_ms(const char *s, uint64_t *out_ms);

/* bench_parse_odds - a probability: 0..1, or a percentage "25%". */
bool bench_parse_odds(const char *s, double *out);

/* bench_resolve - HOST:PORT ("[v6]:PORT" too; HOST may be a name, looked up once) into *ss;
 * the host text (brackets removed) into host. false with a message in err otherwise. */
bool bench_resolve(const char *hostport, struct sockaddr_storage *ss, socklen_t *len,
                   char *host, size_t host_cap, char *err, size_t err_cap);

/* bench_addr_text - "a.b.c.d:port" or "[v6]:port" of ss into buf. */
void bench_addr_text(const struct sockaddr_storage *ss, char *buf, size_t cap);

/* bench_cpus - the CPUs this process may run on, at most max, in order; their count (0 when
 * the affinity cannot be read). */
unsigned bench_cpus(int *cpus, unsigned max);

/* bench_raise_nofile - raise the open-file limit to its hard limit (one descriptor per
 * connection); returns the limit now in force. */
unsigned long bench_raise_nofile(void);

/* bench_pin - run the calling thread on cpu only (cpu < 0: leave it). */
void bench_pin(int cpu);

/* bench_rand - xorshift64*: a fast, good enough generator for sizes and fault odds. The state
 * must not be 0. */
static inline uint64_t bench_rand(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* bench_rand_unit - a double in [0, 1). */
static inline double bench_rand_unit(uint64_t *s)
{
    return (double)(bench_rand(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* bench_seed - a non-zero seed from the clock, the pid and n. */
uint64_t bench_seed(uint64_t n);

/* bench_json_codes - `"key":{"250":12,...}` for the non-zero counts of codes[0..BENCH_CODES). */
void bench_json_codes(FILE *f, const char *key, const uint64_t *codes);

/* bench_text_codes - "250=12 451=3" (the non-zero counts) on f; "none" when all are 0. */
void bench_text_codes(FILE *f, const uint64_t *codes);

#endif
