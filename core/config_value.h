/*
 * config_value.h - internal to core/config.c and core/config_value.c: the value syntax that
 * config.c's setters share with config_value.c. Users include core/config.h, which declares
 * the public parsers (config_parse_*, config_net_match).
 *
 * Each parser returns 0, or -1 on a malformed value (or one that overflows); *out is written
 * only on success. Nothing here allocates or keeps a pointer to its input.
 */
#ifndef RR_CONFIG_VALUE_H
#define RR_CONFIG_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

#define MS_PER_S  1000ULL
#define MS_PER_M  (60 * MS_PER_S)
#define MS_PER_H  (60 * MS_PER_M)
#define MS_PER_D  (24 * MS_PER_H)
#define KIB       1024ULL
#define MIB       (1024 * KIB)
#define GIB       (1024 * MIB)

#define DOMAIN_BYTES_MAX   253   /* RFC 1035 2.3.4, without the trailing dot */
#define HOSTPORT_BYTES_MAX (DOMAIN_BYTES_MAX + 10) /* "host:port", "[address]:port", with NUL */

/* config_is_digit, config_is_alpha, config_is_blank - ASCII classes, independent of the
 * locale. */
static inline bool config_is_digit(char c) { return c >= '0' && c <= '9'; }
static inline bool config_is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static inline bool config_is_blank(char c) { return c == ' ' || c == '\t'; }

/* config_parse_digits - a run of decimal digits at s, no sign; *end after it. */
int config_parse_digits(const char *s, uint64_t *out, const char **end);

/* config_parse_uint - the whole of s is a decimal number. */
int config_parse_uint(const char *s, uint64_t *out);

/* config_parse_bool - yes/no/true/false/on/off/1/0, any case. */
int config_parse_bool(const char *s, bool *out);

/* config_hostname_plausible - LDH labels, at most DOMAIN_BYTES_MAX bytes, not an IPv4
 * address; a single label is accepted. */
bool config_hostname_plausible(const char *s);

/* config_parse_hostport - host[:port] or [address][:port] into out (size bytes;
 * HOSTPORT_BYTES_MAX suffice) as "host:port", port_default when s has none. "" is malformed. */
int config_parse_hostport(const char *s, unsigned port_default, char *out, size_t size);

/* config_format_duration, config_format_size, config_format_addr - a value as an operator
 * would write it ("5m", "64M", "[::1]:25"), into buf; returns buf. */
const char *config_format_duration(uint64_t ms, char *buf, size_t size);
const char *config_format_size(uint64_t bytes, char *buf, size_t size);
const char *config_format_addr(const struct config_addr *a, char *buf, size_t size);

#endif
