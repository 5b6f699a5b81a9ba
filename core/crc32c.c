/*
 * crc32c.c - CRC-32C over a byte range, eight bytes per instruction (SSE4.2 crc32q).
 *
 * The spool seeds it with a per-segment secret, so content a client sends cannot carry a
 * record that passes the check when recovery re-synchronises after a torn write.
 */
#include <nmmintrin.h>
#include <string.h>

#include "core/crc32c.h"

/* crc32c - continue crc over len bytes of p. */
uint32_t crc32c(uint32_t crc, const void *p, size_t len)
{
    const unsigned char *b = p;
    uint64_t c = crc;

    while (len >= 8) {
        uint64_t v;
        memcpy(&v, b, 8);
        c = _mm_crc32_u64(c, v);
        b += 8;
        len -= 8;
    }
    while (len--)
        c = _mm_crc32_u8((uint32_t)c, *b++);
    return (uint32_t)c;
}
