/*
 * test_addr.h - unit-test helper: a numeric test address as a socket address.
 */
#ifndef RR_TEST_ADDR_H
#define RR_TEST_ADDR_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* sockaddr_of - text (IPv4 or IPv6) into *ss; a bad address ends the test (exit 2). */
static inline const struct sockaddr *sockaddr_of(const char *text, struct sockaddr_storage *ss)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, text, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
    } else {
        fprintf(stderr, "bad test address %s\n", text);
        exit(2);
    }
    return (const struct sockaddr *)ss;
}

#endif
