/*
 * notify.h - the relaying notice: a message the relay writes to a customer whose login sent
 * mail with a sender domain we do not host, while [policy] relay_mode = notify.
 *
 * The session calls notify_relaying() on its worker once such a message is accepted (its 250
 * went out). At most one notice per (login, sender domain) per notify_interval is written,
 * across every worker (ratelimit_claim_once). The notice names who the client address is
 * registered to: the host_registry owner, else the forward-confirmed reverse DNS name of the
 * address (looked up on the ring), else "unknown". Its body is the operator's template
 * ([policy] notify_template, read on the main thread by notify_template_load()) or the
 * built-in one (the text of deploy/relay-notice.txt), with the placeholders filled in. It is
 * spooled and queued like a bounce: from the null sender, to the login's address.
 *
 * Placeholders: {ip} {from} {login} {registered_to} {hostname} {enforce_date} {date} (those
 * of INTERFACE.md) and {help} ([policy] relay_help, the same text the 553 of reject mode
 * quotes; "postmaster@" hostname when unset). A placeholder is '{', a name of letters,
 * digits and '_', '}'; every other '{' is plain text. An unknown name is a configuration
 * error (-t: FILE:LINE).
 *
 * Implemented by notify.c (the worker side and the loader) and notify_text.c (pure
 * functions: template checks, filling, the message; used by the tests and the fuzzer).
 *
 * SECURITY: the login, the sender address, the registry owner and the reverse DNS name end up
 * in a message; each is cleaned (no control bytes, no invalid UTF-8, no bidi overrides) and
 * cut to NOTIFY_VALUE_BYTES_MAX, so no value can add a line or a header. Details: notify_text.c.
 *
 * STANDARDS: RFC 5322 (the message, lines of at most 998 octets), RFC 3834 (Auto-Submitted),
 * RFC 2045 (MIME headers), RFC 6532 (UTF-8 in a message).
 */
#ifndef RR_NOTIFY_H
#define RR_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "core/config.h"

struct worker;

#define NOTIFY_TEMPLATE_BYTES_MAX (32 * 1024) /* a template file */
#define NOTIFY_VALUE_BYTES_MAX    256         /* one value put in for a placeholder, cleaned */
#define NOTIFY_LINE_BYTES_MAX     998         /* a line of the message, CRLF not counted
                                                 (RFC 5322 2.1.1) */
#define NOTIFY_BODY_BYTES_MAX     (256 * 1024) /* a filled body: notify_body_bound() of a
                                                  template must stay below (checked at load) */
#define NOTIFY_NAME_BYTES_MAX     32          /* a placeholder name */
#define NOTIFY_PENDING_MAX        1024        /* notices being made at once per worker (waiting
                                                 for DNS or the spool); more are dropped */

/* The placeholders, in the order of notify_field_name[]. */
enum notify_field {
    NOTIFY_IP,                    /* client address, "192.0.2.1" or "2001:db8::1" */
    NOTIFY_FROM,                  /* the envelope sender of the relayed message */
    NOTIFY_LOGIN,                 /* the SMTP AUTH login that sent it */
    NOTIFY_REGISTERED_TO,         /* host_registry owner, reverse DNS name, or "unknown" */
    NOTIFY_HOSTNAME,              /* [server] hostname */
    NOTIFY_ENFORCE_DATE,          /* relay_enforce_after, YYYY-MM-DD */
    NOTIFY_DATE,                  /* when the message was sent, RFC 5322 date (UTC) */
    NOTIFY_HELP,                  /* [policy] relay_help, or postmaster@hostname */
    NOTIFY_FIELD_COUNT
};

extern const char *const notify_field_name[NOTIFY_FIELD_COUNT]; /* "ip", "from", ... */

/* What the session hands over. Everything is copied: nothing is kept after the call. */
struct notify_req {
    const char *login;            /* the authenticated login */
    const char *from;             /* envelope sender, "local@domain" (no <>) */
    const struct sockaddr *peer;  /* client address: a whole sockaddr_in or sockaddr_in6
                                     (v4-mapped is taken as IPv4); NULL: peer_text is parsed */
    const char *peer_text;        /* printable client address ("192.0.2.1", "[::1]" or "::1");
                                     used when peer is NULL */
    int64_t time_s;               /* unix time the message was accepted; 0 = now */
    uint64_t qid;                 /* the relayed message's queue id, logged as msg= (0: none) */
};

/* ---- the worker side and the loader (notify.c) ---- */

/* notify_relaying - a relayed message of in->login from in->from was accepted on w: claim
 * the (login, domain) slot of this interval and, if it was free, make and queue the notice
 * (later: after the reverse DNS lookup and the spool write). Never blocks. */
void notify_relaying(struct worker *w, const struct notify_req *in);

/* notify_worker_fini - free the notices still being made (after the loop ended). */
void notify_worker_fini(struct worker *w);

/* notify_template_load - main thread (resources_load): read cfg->notify_template into
 * cfg->notify_text and check it (the key empty: notify_text stays NULL, which stands for the
 * built-in template). Problems go to errs as "FILE:LINE: message" (FILE the template, LINE
 * its line; a file that cannot be read is reported at the configuration's line of the key);
 * returns their count, and notify_text is NULL then. */
int notify_template_load(struct rr_config *cfg, FILE *errs);

/* notify_template_free - release cfg->notify_text (resources_release). */
void notify_template_free(struct rr_config *cfg);

/* ---- pure functions (notify_text.c) ---- */

/* The built-in template: the bytes of deploy/relay-notice.txt. */
extern const char notify_default_template[];
extern const size_t notify_default_template_len;

/* One problem of a template: line (from 1) and what is wrong. */
typedef void (*notify_problem_fn)(void *arg, unsigned line, const char *msg);

/* notify_template_check - check a template: not empty, at most NOTIFY_TEMPLATE_BYTES_MAX, no
 * NUL or bare CR or other control byte but tab, valid UTF-8, lines of at most
 * NOTIFY_LINE_BYTES_MAX octets, known placeholders only, and a filled body that fits
 * NOTIFY_BODY_BYTES_MAX. Calls problem() per problem (may be NULL); returns their count. */
unsigned notify_template_check(const char *text, size_t len, notify_problem_fn problem,
                               void *arg);

/* notify_body_bound - the most bytes notify_fill() can make of a template of tmpl_len bytes
 * holding that many known placeholders: each byte at most twice (LF -> CRLF), each value
 * NOTIFY_VALUE_BYTES_MAX, a CRLF per NOTIFY_LINE_BYTES_MAX of that for broken lines, and
 * the final CRLF. */
size_t notify_body_bound(size_t tmpl_len, size_t placeholders);

/* notify_placeholder - at text[0] == '{': the bytes of a placeholder "{name}" there and
 * *field (NOTIFY_FIELD_COUNT for a name that is not one of ours); 0 when this '{' is plain
 * text. len: bytes available at text. */
size_t notify_placeholder(const char *text, size_t len, enum notify_field *field);

/* notify_clean - value v (a C string, NULL as "") as it goes into a notice: control bytes,
 * invalid UTF-8, C1 controls and bidi controls become '?', cut on a character boundary so
 * that it fits out[cap] with "..." at the end when cut. cap >= 4. Returns the length. */
size_t notify_clean(const char *v, char *out, size_t cap);

/* notify_fill - the body: the template with each placeholder replaced by its cleaned value
 * (values[field], NULL as ""), unknown placeholders left as they are, CRLF line ends, lines
 * over NOTIFY_LINE_BYTES_MAX broken on a character boundary, ending in CRLF. malloc'd, the
 * caller's to free; *len its bytes. */
char *notify_fill(const char *tmpl, size_t tmpl_len,
                  const char *const values[NOTIFY_FIELD_COUNT], size_t *len);

/* The header of a notice. */
struct notify_head {
    const char *hostname;         /* From: postmaster@hostname; Message-ID's right side */
    const char *to;               /* the recipient's address, checked by the caller */
    const char *ip;               /* Subject: Notification of Relaying from IP */
    int64_t date_s;               /* Date: */
    const char *msgid;            /* Message-ID's left side, unique ("QID.RANDOM") */
};

/* notify_message - the whole notice: header, empty line, body (CRLF lines, as notify_fill
 * gives). *eight_bit says whether it holds non-ASCII bytes (then Content-Transfer-Encoding
 * is 8bit and it goes with BODY=8BITMIME). malloc'd; *len its bytes. */
char *notify_message(const struct notify_head *h, const char *body, size_t body_len,
                     size_t *len, bool *eight_bit);

/* notify_date - t as an RFC 5322 date-time in UTC ("Tue, 02 Jun 2026 14:05:09 +0000") into
 * buf (at least 40 bytes). */
void notify_date(int64_t t, char *buf, size_t cap);

/* notify_ymd - t as YYYY-MM-DD (UTC) into buf (at least 16 bytes). */
void notify_ymd(int64_t t, char *buf, size_t cap);

#endif
