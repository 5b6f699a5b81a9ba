/*
 * siphash.h - SipHash-2-4 (Aumasson and Bernstein), the keyed hash of the code base: tables
 * whose keys an attacker may choose (logins, client addresses, sender domains) hash with it
 * under a random per-process key, so nobody outside can aim collisions at a bucket.
 */
#ifndef RR_SIPHASH_H
#define RR_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* siphash24 - the 64-bit SipHash-2-4 of len bytes at in under the 128-bit key. Pure. */
uint64_t siphash24(const uint64_t key[2], const void *in, size_t len);

/* siphash_key_random - fill key from getrandom(); 0, or -errno when the kernel gave none. */
int siphash_key_random(uint64_t key[2]);

/* siphash_key_table - a key for an in-memory hash table: random, or from the clock and salt
 * when the kernel has no randomness to give. Never fails. */
void siphash_key_table(uint64_t key[2], const void *salt);

#endif
