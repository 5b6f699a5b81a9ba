/*
 * crc32c.h - CRC-32C (Castagnoli) with the SSE4.2 instruction, for spool record checks.
 */
#ifndef RR_CRC32C_H
#define RR_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* crc32c - continue crc over len bytes of p. Start with any seed (the spool uses a secret). */
uint32_t crc32c(uint32_t crc, const void *p, size_t len);

#endif
