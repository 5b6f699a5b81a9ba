/*
 * listener.c - create listening sockets: SO_REUSEADDR, SO_REUSEPORT (one socket per worker
 * per address, the kernel spreads connections), IPV6_V6ONLY for IPv6 addresses so that
 * "0.0.0.0:25" and "[::]:25" can both be listed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/listener.h"

/* listener_open - socket, options, bind, listen. */
int listener_open(const struct config_addr *a, bool reuseport, int cpu)
{
    int fd, one = 1, err;

    fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        /* Accepted sockets inherit it: replies are already batched per pipelined group. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        (a->sa.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        (cpu >= 0 && setsockopt(fd, SOL_SOCKET, SO_INCOMING_CPU, &cpu, sizeof(cpu)) < 0) ||
        bind(fd, (const struct sockaddr *)&a->sa, a->len) < 0 ||
        listen(fd, LISTENER_BACKLOG) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* listener_format - printable address with port. */
void listener_format(const struct config_addr *a, char *buf, size_t cap)
{
    char host[INET6_ADDRSTRLEN];

    if (a->sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        snprintf(buf, cap, "[%s]:%u", host, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->sa;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        snprintf(buf, cap, "%s:%u", host, ntohs(s4->sin_port));
    }
}
