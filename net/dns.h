/*
 * dns.h - next-hop lookups on a worker's ring: MX, then A/AAAA, through c-ares.
 *
 * Each worker has one c-ares channel. Its sockets are watched with io_uring poll requests and
 * its retransmit timeout is a ring timeout, so a lookup never blocks the worker: the worker
 * loop hands readiness to ares_process_fd(). Answers are cached per worker for their TTL.
 *
 * dns_resolve_mx() gives the delivery targets of a mail domain (RFC 5321 5.1): its MX hosts
 * in preference order, each with its addresses; a domain without MX records is its own single
 * target (implicit MX, preference 0); a null MX (RFC 7505: one MX "." of preference 0) is
 * DNS_NULLMX. dns_resolve_host() gives the addresses of one host name (a smarthost).
 * dns_resolve_ptr() gives the reverse DNS name of an address (the relaying notice); it is
 * not forward-confirmed here: a caller that relies on it resolves the name again.
 * Both take an IP address literal too ("192.0.2.1", "[192.0.2.1]", "[IPv6:2001:db8::1]"):
 * one host with that address, at once (but still through the callback). Names are absolute
 * (no search list) and resolved through DNS only (not /etc/hosts).
 *
 * The callback is never called from inside dns_resolve_*(): a cached answer is delivered at
 * the end of the loop pass (dns_worker_run_deferred). The result is valid during the
 * callback only.
 *
 * SECURITY: answers come from the network. c-ares parses the records; the TTL reader
 * (dns_answer_ttl) bounds every offset by the answer's length. Names and counts are capped
 * at the limits below.
 */
#ifndef RR_DNS_H
#define RR_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/engine.h"

#define DNS_HOSTS_MAX      10    /* MX hosts kept per domain, best preference first */
#define DNS_ADDRS_MAX      8     /* addresses kept per host */
#define DNS_NAME_BYTES_MAX 256   /* a host name, NUL included */
#define DNS_TTL_MIN_S      5     /* answers are cached at least this long */
#define DNS_TTL_MAX_S      86400 /* and at most this long */
#define DNS_NEG_TTL_S      60    /* NXDOMAIN and null MX are cached this long */

enum dns_status {
    DNS_OK = 0,        /* hosts[] has at least one host with at least one address */
    DNS_NXDOMAIN,      /* the domain does not exist, has neither MX nor address records, or
                          is not a valid name: permanent (bounce, 5.1.2) */
    DNS_NULLMX,        /* the domain accepts no mail (RFC 7505): permanent (bounce, 5.1.10) */
    DNS_NOADDR,        /* MX hosts exist but none has an address (dns_resolve_host: the host
                          has no A/AAAA): temporary (defer) */
    DNS_TEMPFAIL,      /* timeout, SERVFAIL, refused, no server: temporary (defer) */
};

struct dns_host {
    char name[DNS_NAME_BYTES_MAX]; /* MX exchange, or the domain itself (implicit MX) */
    uint16_t pref;                 /* MX preference; 0 for an implicit MX */
    unsigned addr_count;
    struct sockaddr_storage addrs[DNS_ADDRS_MAX]; /* port 0; IPv4 first, then IPv6 */
};

struct dns_result {
    enum dns_status status;
    char error[128];               /* why, for logs and bounces ("NXDOMAIN", "timeout") */
    unsigned host_count;
    struct dns_host hosts[DNS_HOSTS_MAX]; /* sorted by pref; equal prefs in random order */
};

typedef void (*dns_cb)(struct worker *w, void *arg, const struct dns_result *r);

/* dns_worker_init - create this worker's channel from cfg->dns_servers (empty:
 * /etc/resolv.conf, read now, at set-up). 0 or -errno. */
int dns_worker_init(struct worker *w);

/* dns_worker_fini - destroy the channel (after the loop ended). */
void dns_worker_fini(struct worker *w);

/* dns_worker_reload - a new configuration was published: apply its dns_servers. */
void dns_worker_reload(struct worker *w);

/* dns_resolve_mx - the delivery targets of a mail domain; cb(w, arg, result) later. */
void dns_resolve_mx(struct worker *w, const char *domain, dns_cb cb, void *arg);

/* dns_resolve_host - the addresses of one host (one entry in hosts[]); cb later. */
void dns_resolve_host(struct worker *w, const char *host, dns_cb cb, void *arg);

/* dns_resolve_ptr - the reverse DNS name of address sa (AF_INET, AF_INET6; a v4-mapped IPv6
 * address is asked as IPv4), cb later: DNS_OK with the name (a valid host name, lower case)
 * in hosts[0].name and no address; DNS_NXDOMAIN when there is none (NXDOMAIN, no PTR record,
 * or none that is a host name, or sa of another family); DNS_TEMPFAIL. Cached for the
 * record's TTL (DNS_NEG_TTL_S when there is none); bounded by the resolver's timeouts. */
void dns_resolve_ptr(struct worker *w, const struct sockaddr *sa, dns_cb cb, void *arg);

/* dns_ptr_name - the reverse lookup name of sa into out (cap >= DNS_NAME_BYTES_MAX):
 * "4.3.2.1.in-addr.arpa" (also for ::ffff:1.2.3.4), or 32 nibbles and "ip6.arpa"; false for
 * another family or a short out. */
bool dns_ptr_name(const struct sockaddr *sa, char *out, size_t cap);

/* dns_worker_run_deferred - deliver cached answers (end of each loop pass). */
void dns_worker_run_deferred(struct worker *w);

/* dns_worker_busy - lookups in flight or answers waiting. */
bool dns_worker_busy(struct worker *w);

/* dns_complete - completion of an OP_DNS_* operation. */
void dns_complete(struct worker *w, enum engine_op op, uint32_t slot, uint32_t gen, int res);

/* dns_answer_ttl - the smallest TTL of the answer-section records of type qtype (class IN) in
 * a raw DNS response (abuf, alen); -1 when the response is malformed (out of bounds, a bad
 * label, a compression pointer that does not point back) or holds no such record. */
int64_t dns_answer_ttl(const unsigned char *abuf, size_t alen, uint16_t qtype);

#endif
