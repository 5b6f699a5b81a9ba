/*
 * fuzz_dns_ttl.c - libFuzzer target for the TTL reader of DNS answers (net/dns.c,
 * dns_answer_ttl).
 *
 * Input: a raw DNS response (the seed corpus holds real ones: MX, A, AAAA, CNAME chains,
 * NXDOMAIN, NODATA, null MX). It is read for the types A, CNAME, MX, AAAA and the type of its
 * first question, and each reading must hold these invariants:
 *   - the result is -1 or a TTL of 0..2^31-1 (RFC 2181 8: larger ones count as 0);
 *   - it does not depend on bytes after the answer section: when the reading found a TTL, the
 *     same input with 64 bytes appended gives the same TTL;
 *   - with the answer count set to 0 there is nothing to find: -1;
 *   - reading the same bytes twice gives the same result.
 * Reads past the input's end are caught by ASan (libFuzzer's buffer is exactly its size).
 */
#include "net/dns.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_APPEND_BYTES 64      /* garbage appended after the message */

/* fail - report a broken invariant and stop. */
static void fail(const char *what, unsigned qtype)
{
    fprintf(stderr, "fuzz_dns_ttl: %s (qtype %u)\n", what, qtype);
    abort();
}

/* first_qtype - the type of the first question, or 0 when there is none to read. */
static uint16_t first_qtype(const uint8_t *p, size_t len)
{
    size_t off = 12;

    if (len < 12 || (p[4] == 0 && p[5] == 0))
        return 0;
    while (off < len && p[off] != 0 && (p[off] & 0xc0) == 0)
        off += 1u + p[off];
    if (off < len && (p[off] & 0xc0) == 0xc0)
        off += 2;
    else
        off += 1;
    if (off + 2 > len)
        return 0;
    return (uint16_t)(p[off] << 8 | p[off + 1]);
}

/* check_type - the invariants for one qtype. */
static void check_type(const uint8_t *data, size_t size, uint16_t qtype, uint8_t *scratch)
{
    int64_t r = dns_answer_ttl(data, size, qtype);

    if (r < -1 || r > 2147483647)
        fail("result out of range", qtype);
    if (dns_answer_ttl(data, size, qtype) != r)
        fail("two readings differ", qtype);
    memcpy(scratch, data, size);
    memset(scratch + size, 0xc0, FUZZ_APPEND_BYTES);
    if (r >= 0 && dns_answer_ttl(scratch, size + FUZZ_APPEND_BYTES, qtype) != r)
        fail("bytes after the answers changed the result", qtype);
    if (size >= 12) {
        scratch[6] = scratch[7] = 0;
        if (dns_answer_ttl(scratch, size, qtype) != -1)
            fail("a TTL with no answer records", qtype);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint16_t types[] = { 1, 5, 15, 28 };
    uint8_t *scratch = malloc(size + FUZZ_APPEND_BYTES);
    uint16_t q = first_qtype(data, size);

    if (!scratch)
        abort();
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        check_type(data, size, types[i], scratch);
    if (q)
        check_type(data, size, q, scratch);
    free(scratch);
    return 0;
}
