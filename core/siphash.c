/*
 * siphash.c - SipHash-2-4 with 64-bit output, and a random key for it.
 *
 * Functions: siphash24(), siphash_key_random(), siphash_key_table().
 *
 * SECURITY: the key is the secret: callers keep it in process memory only and wipe it when
 * they are done. The hash itself reads len bytes and nothing else; no branch depends on the
 * data.
 *
 * STANDARDS: J.-P. Aumasson, D. J. Bernstein, "SipHash: a fast short-input PRF" (2012), the
 * reference implementation's test vector (tests/unit/test_ratelimit.c checks it).
 */
#include <errno.h>
#include <sys/random.h>
#include <time.h>

#include "core/siphash.h"

#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do {                                                         \
        v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);         \
        v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                              \
        v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                              \
        v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);         \
    } while (0)

/* load_le64 - 8 bytes, little-endian. */
static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* siphash24 - the keyed hash of len bytes at in. */
uint64_t siphash24(const uint64_t key[2], const void *data, size_t len)
{
    const unsigned char *in = data;
    uint64_t v0 = 0x736f6d6570736575ull ^ key[0], v1 = 0x646f72616e646f6dull ^ key[1];
    uint64_t v2 = 0x6c7967656e657261ull ^ key[0], v3 = 0x7465646279746573ull ^ key[1];
    uint64_t b = (uint64_t)len << 56, m;
    size_t whole = len & ~(size_t)7;

    for (size_t i = 0; i < whole; i += 8) {
        m = load_le64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t)in[whole + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* siphash_key_random - a fresh key from the kernel's generator. */
int siphash_key_random(uint64_t key[2])
{
    ssize_t n = getrandom(key, 2 * sizeof(key[0]), 0);

    if (n < 0)
        return -errno;
    return n == (ssize_t)(2 * sizeof(key[0])) ? 0 : -EIO;
}

/* siphash_key_table - siphash_key_random, or, when the kernel gives no randomness, a key
 * from the clock and salt (an address of the caller's): a table keeps working with a key
 * nobody outside can read either. */
void siphash_key_table(uint64_t key[2], const void *salt)
{
    struct timespec ts;

    if (siphash_key_random(key) == 0)
        return;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    key[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uintptr_t)salt;
    key[1] = (uint64_t)ts.tv_sec ^ ((uintptr_t)salt << 17);
}
