/*
 * dsn.h - delivery status notifications (bounces): RFC 3464 multipart/report messages.
 *
 * A bounce goes to the envelope sender of a message some of whose recipients failed for
 * good (a 5xx, a null MX, an unknown domain) or could not be delivered before the queue
 * lifetime ran out. It is a multipart/report; report-type=delivery-status message with three
 * parts: a human-readable explanation, the message/delivery-status fields (RFC 3464 2.2,
 * 2.3: one per-recipient group per failed recipient) and the original message's header
 * section as text/rfc822-headers (RFC 6522). The bounce itself is sent from the null sender
 * "<>" and is never bounced.
 *
 * dsn_build() is a pure function: no I/O, no global state; the caller spools the result.
 * The same input gives the same bytes. The result is 7-bit unless an address is non-ASCII or
 * the original headers hold 8-bit bytes; it then says Content-Transfer-Encoding: 8bit and is
 * to be sent with BODY=8BITMIME (and SMTPUTF8 when the sender address is non-ASCII).
 *
 * SECURITY: every string of struct dsn_in, the original headers, addresses and remote
 * replies above all, is hostile input. Every line written ends in CRLF and has at most 998
 * octets before it; CR, LF and other control bytes are dropped from addresses and host
 * names; an invalid status becomes 5.0.0 (4.4.7 when expired); remote reply text is folded,
 * its line ends becoming continuation lines; in the headers part NULs are dropped, bare CR
 * and LF become CRLF, long lines are folded, and it is cut at DSN_HEADERS_BYTES_MAX at the
 * start of a header field. The MIME boundary never occurs in the content. Details: dsn.c.
 */
#ifndef RR_DSN_H
#define RR_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DSN_HEADERS_BYTES_MAX (64 * 1024) /* original header section kept */

/* One recipient the report is about. */
struct dsn_rcpt {
    const char *addr;             /* original recipient, without <> */
    const char *status;           /* RFC 3463 code, "5.1.1" */
    const char *remote_mta;       /* next hop's host name, NULL when none was reached */
    const char *diag;             /* the remote reply ("550 5.1.1 no such user"), or our own
                                     reason ("no MX: domain has a null MX"); NULL = none */
    bool diag_is_smtp;            /* diag is an SMTP reply (Diagnostic-Code: smtp; ...) */
};

/* What the report is about. NULL strings are taken as "" (an empty reporting_mta as
 * "localhost"). Nothing is kept after dsn_build() returns. */
struct dsn_in {
    const char *reporting_mta;    /* our host name */
    const char *qid;              /* the original message's queue id */
    int64_t arrival;              /* unix time the original was accepted */
    int64_t now;                  /* unix time of the report */
    const char *sender;           /* the original envelope sender: the bounce's recipient
                                     (not empty: a bounce is not bounced; "" is written
                                     as To: undisclosed-recipients:;) */
    const struct dsn_rcpt *rcpts; /* the failed recipients, rcpt_count of them */
    unsigned rcpt_count;          /* >= 1 (asserted) */
    const char *headers;          /* the original header section (may be partial, may run on
                                     into the body: it is cut at its first empty line), or
                                     NULL */
    size_t headers_len;           /* bytes at headers */
    bool expired;                 /* the queue lifetime ran out (else a permanent failure) */
    uint32_t boundary_seed;       /* makes the MIME boundary unique (random per bounce) */
};

/* dsn_build - the whole bounce message (header and body, CRLF line ends, ending in CRLF) in a
 * malloc'd buffer of *len bytes, the caller's to free; NULL (and *len 0) when memory ran
 * out. */
char *dsn_build(const struct dsn_in *in, size_t *len);

/* dsn_header_end - bytes of buf (len bytes, the start of a message) that form its header
 * section, up to and including the empty line that ends it; len when no empty line was found
 * (the whole buffer is headers, or the headers were cut). A line ends at LF, with or without
 * a CR before it ("\r\n\r\n", "\n\n" and mixes end the section); a bare CR does not end a
 * line. A buffer that starts with an empty line has an empty header section: the result is
 * that line's 1 or 2 bytes. */
size_t dsn_header_end(const char *buf, size_t len);

#endif
