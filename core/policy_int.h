/*
 * policy_int.h - what the policy's decisions (core/policy.c) use of its maps
 * (core/policy_maps.c) beyond core/policy.h: the lookup form of a domain, and lookups by a
 * key already in that form, so a sender's domain is converted once per MAIL. Private to the
 * two files.
 */
#ifndef RR_POLICY_INT_H
#define RR_POLICY_INT_H

#include <stddef.h>

#include "core/policy.h"

/* policy_fold - n bytes of s, ASCII lower-cased, into out (n + 1 bytes), NUL-terminated. */
void policy_fold(char *out, const char *s, size_t n);

/* policy_domain_canon - the lookup form of the n bytes at s into out (one trailing dot
 * dropped, IDNA A-labels, ASCII lower case); 0, or -1 with *why (when why is not NULL) when
 * the domain has none. See policy_maps.c. */
int policy_domain_canon(const char *s, size_t n, char out[POLICY_DOMAIN_BYTES_MAX + 1],
                        const char **why);

/* policy_hosted_canon - whether key (policy_domain_canon() form) is in hosted_domains. */
bool policy_hosted_canon(const struct policy_maps *pm, const char *key);

/* policy_owner_canon - policy_sender_owner() for addr whose domain has the key dom
 * (policy_domain_canon() form): the domain is not converted again. */
enum policy_owner policy_owner_canon(const struct policy_maps *pm, const char *addr,
                                     const char *dom, const char *login);

#endif
