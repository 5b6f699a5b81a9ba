/*
 * listener.h - listening sockets for the workers and the metrics endpoint (net/listener.c
 * says how SO_INCOMING_CPU steers a connection to the worker of the CPU that received it).
 */
#ifndef RR_LISTENER_H
#define RR_LISTENER_H

#include "core/config.h"

#define LISTENER_BACKLOG 4096

/* listener_open - a bound, listening TCP socket for a; reuseport lets every worker have its
 * own socket on the same address. cpu >= 0: the socket prefers connections received on that
 * CPU (SO_INCOMING_CPU), so a worker pinned there takes the flows its CPU's NIC queue gets.
 * Returns the fd or -errno. */
int listener_open(const struct config_addr *a, bool reuseport, int cpu);

/* listener_format - "addr:port" / "[addr]:port" of a into buf. */
void listener_format(const struct config_addr *a, char *buf, size_t cap);

#endif
