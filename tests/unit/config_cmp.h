/*
 * config_cmp.h - shared by the config unit tests (test_config.c, test_config_value.c):
 * compare a parsed socket address or network with the text it should hold.
 */
#ifndef RR_TEST_CONFIG_CMP_H
#define RR_TEST_CONFIG_CMP_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <string.h>

#include "core/config.h"

static inline unsigned addr_port(const struct config_addr *a)
{
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)&a->sa;
    return ntohs(in4->sin_port);
}

/* addr_is - a is family fam, address text, port. */
static inline bool addr_is(const struct config_addr *a, int fam, const char *text, unsigned port)
{
    char buf[INET6_ADDRSTRLEN];
    if (a->sa.ss_family != fam)
        return false;
    if (fam == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)&a->sa;
        inet_ntop(AF_INET, &in4->sin_addr, buf, sizeof(buf));
        if (a->len != sizeof(*in4))
            return false;
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof(buf));
        if (a->len != sizeof(*in6))
            return false;
    }
    return strcmp(buf, text) == 0 && addr_port(a) == port;
}

static inline bool net_is(const struct config_net *n, int fam, const char *text, unsigned prefix)
{
    char buf[INET6_ADDRSTRLEN];
    if (n->family != fam || n->prefix != prefix)
        return false;
    inet_ntop(fam, n->addr, buf, sizeof(buf));
    return strcmp(buf, text) == 0;
}

#endif
