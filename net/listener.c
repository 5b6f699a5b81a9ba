/*
 * listener.c - create listening sockets: SO_REUSEADDR, SO_REUSEPORT (one socket per worker
 * per address, the kernel spreads connections), IPV6_V6ONLY for IPv6 addresses so that
 * "0.0.0.0:25" and "[::]:25" can both be listed, and SO_INCOMING_CPU, which steers.
 *
 * Steering. Each worker's socket carries the CPU its worker is pinned to (SO_INCOMING_CPU).
 * For a SYN the kernel picks one socket of the address's reuseport group. Since Linux 6.2
 * (b261eda84ec1 "soreuseport: Fix socket selection for SO_INCOMING_CPU"; backported to the
 * stable 6.1.2 and 6.0.16) reuseport_select_sock_by_hash() starts at the socket the flow hash
 * names and takes the first one whose CPU is the CPU processing the SYN, or the hash's socket
 * when there is none. From 4.6 (the O(1) reuseport lookup) up to that fix the option is
 * accepted and ignored for reuseport listeners: connections are spread by the flow hash,
 * which is correct, only not local. Debian 12's kernels carry the fix (6.1.27 at the release;
 * their "uname -r" says 6.1.0-N, the ABI, and "uname -v" the version); 6.1.0 and 6.1.1 do
 * not. A reuseport BPF program (bpf/connlimit.bpf.c) decides first; when it selects no socket
 * the kernel falls back to the same walk, so SO_INCOMING_CPU still steers what it leaves.
 * The CPU processing a SYN is the one the NIC queue's interrupt runs on (RSS and IRQ affinity)
 * or the one RPS chose; over loopback and veth it is the sending process's CPU.
 * deploy/README.md pairs this with the NIC set-up (deploy/tune-nics.sh).
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
