/*
 * policy.h - the relay policy: who may relay, which sender addresses an authenticated login
 * may use, and the three maps behind it ([policy] hosted_domains, sender_logins,
 * host_registry).
 *
 * The maps are loaded on the main thread (core/resources.c, at start-up, at SIGHUP and for
 * -t) into one immutable, reference-counted struct policy_maps that hangs off the
 * configuration (rr_config.policy_maps). Lookups never allocate, never lock and never block:
 * they run on the worker threads at MAIL.
 *
 * The decisions (policy_sender, policy_may_relay) are pure functions of their arguments, so
 * a test can drive them from a table: login, sender, client address, mode, date -> reply.
 *
 * WIRING (net/smtp_commands.c), in this order:
 *   MAIL  check: after the 530 (auth = required) and the parse, before the spool-space check:
 *           policy_sender(cfg->policy_maps, cfg, c->authenticated ? c->login : NULL,
 *                         x->addr.text, time(NULL), &res);
 *         POLICY_REJECT -> reply res.reply, count MSG reason res.msg_reason, log res.reason;
 *         POLICY_ACCEPT -> keep res.notify in the transaction: once the message is accepted
 *         the session calls notify_relaying() (core/notify.h), which claims the sender's
 *         domain in its canonical form (policy_domain_key) for the interval.
 *         Then the hourly limits (core/ratelimit.h), last, so that nothing refused earlier
 *         costs a token.
 *   RCPT  check: in place of today's trusted_networks test:
 *           if (!policy_may_relay(cfg, c->authenticated, &c->peer.sa))
 *               reply policy_relay_denied_reply(x->addr.text, buf, sizeof(buf)) (554 5.7.1),
 *               count RCPT_RELAY_DENIED;
 *         the 530 of auth = required listeners is answered at MAIL already.
 *
 * A session that may outlive a reload keeps the configuration it started with (and so its
 * maps); one that wants the maps alone takes policy_maps_ref().
 */
#ifndef RR_POLICY_H
#define RR_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "core/config.h"
#include "core/metrics.h"

#define POLICY_LINE_BYTES_MAX        4096     /* one line of a map file, newline excluded */
#define POLICY_MAP_ENTRIES_MAX       1000000  /* entries of one map file */
#define POLICY_MAP_TEXT_BYTES_MAX    (256u << 20) /* text kept from one map file */
#define POLICY_LOGINS_PER_ENTRY_MAX  64       /* logins owning one sender_logins key */
#define POLICY_LOGIN_BYTES_MAX       255      /* one login (= SASL_USER_BYTES_MAX) */
#define POLICY_DOMAIN_BYTES_MAX      255      /* a domain (= SMTP_DOMAIN_BYTES_MAX) */
#define POLICY_ADDR_BYTES_MAX        256      /* a canonical address (= SMTP_PATH_BYTES_MAX) */
#define POLICY_REGISTRY_TEXT_BYTES_MAX 255    /* "owner description" of a host_registry line */
#define POLICY_REPLY_BYTES_MAX       510      /* an SMTP reply line without CRLF (RFC 5321
                                                 4.5.3.1.5: 512 with it) */
#define POLICY_WARNINGS_MAX          20       /* warnings printed per map file; the rest are
                                                 counted in one closing line */

/* The map files, in the order they are read. */
enum policy_map { POLICY_MAP_HOSTED, POLICY_MAP_LOGINS, POLICY_MAP_REGISTRY, POLICY_MAP_COUNT };

/* One map file to parse. name NULL: the map is not configured. in NULL with a name: it is
 * configured but could not be opened (the caller has reported that): it stays empty, and
 * the maps are refused anyway for the problem. */
struct policy_map_input {
    FILE *in;                     /* read to its end, not closed */
    const char *name;             /* FILE of "FILE:LINE: message" */
};

struct policy_maps;

/*
 * policy_maps_load - read the map files cfg names (hosted_domains, sender_logins,
 * host_registry). NULL when none is set. Every bad line is reported to errs (when not NULL)
 * as "FILE:LINE: message", skipped and counted in *problems, as is a file that cannot be
 * read; warnings ("FILE:LINE: warning: ...") are reported, not counted. The maps come back
 * with one reference (the caller's) even when there were problems: the caller decides.
 * Main thread only: it reads files.
 */
struct policy_maps *policy_maps_load(const struct rr_config *cfg, FILE *errs, int *problems);

/* policy_maps_parse - policy_maps_load() from open streams, indexed by enum policy_map
 * (tests, the fuzzer). Never NULL. Problems and warnings as for policy_maps_load(). */
struct policy_maps *policy_maps_parse(const struct policy_map_input in[POLICY_MAP_COUNT],
                                      FILE *errs, int *problems);

/* policy_maps_ref - one more reference; returns pm. Any thread. */
struct policy_maps *policy_maps_ref(struct policy_maps *pm);

/* policy_maps_unref - one reference less; the last frees. NULL is ignored. Any thread. */
void policy_maps_unref(struct policy_maps *pm);

/* policy_maps_count - entries of one map (0 when it is not configured). */
size_t policy_maps_count(const struct policy_maps *pm, enum policy_map which);

/* policy_maps_has - whether the map was configured (its file named, even if empty). */
bool policy_maps_has(const struct policy_maps *pm, enum policy_map which);

/*
 * policy_domain_key - the form every domain is compared in, into out: one trailing dot
 * dropped, a domain holding a byte >= 0x80 converted to IDNA A-labels (IDNA2008 with the
 * UTS #46 mapping, non-transitional: case folding and NFC included, RFC 5890/5891), then
 * ASCII lower case; pure ASCII (xn-- labels included) is only lower-cased. So
 * b\xc3\xbccher.example, B\xc3\x9cCHER.EXAMPLE (UTF-8) and XN--BCHER-KVA.example all give
 * xn--bcher-kva.example. false (out unspecified) for an empty or over-long domain and one
 * IDNA refuses: such a domain is none of ours. Any thread; a non-ASCII domain costs one
 * allocation inside libidn2.
 */
bool policy_domain_key(const char *domain, char out[POLICY_DOMAIN_BYTES_MAX + 1]);

/*
 * policy_domain_hosted - whether domain is in hosted_domains, both compared in the
 * policy_domain_key() form. false when pm is NULL, the map is not configured or the domain
 * has no key.
 */
bool policy_domain_hosted(const struct policy_maps *pm, const char *domain);

/* What sender_logins says about a login and a sender address. */
enum policy_owner {
    POLICY_OWNER_NONE,            /* no entry for the address nor for its @domain */
    POLICY_OWNER_OTHER,           /* an entry, and the login is not among its owners */
    POLICY_OWNER_LOGIN,           /* the login is an owner */
};

/*
 * policy_sender_owner - look addr (canonical, as net/smtp_parse.c writes it) up in
 * sender_logins, the address first, then "@domain" (Postfix smtpd_sender_login_maps): the
 * local part ASCII case folded, the domain in its policy_domain_key() form (NONE when it has
 * none); login is compared without ASCII case.
 */
enum policy_owner policy_sender_owner(const struct policy_maps *pm, const char *addr,
                                      const char *login);

/* policy_registry_owner - the "owner description" text of the longest host_registry prefix
 * holding sa (IPv4, IPv6, v4-mapped IPv6 as IPv4), or NULL. Points into pm. */
const char *policy_registry_owner(const struct policy_maps *pm, const struct sockaddr *sa);

enum policy_verdict {
    POLICY_ACCEPT,                /* go on (see notify) */
    POLICY_REJECT,                /* reply policy_result.reply; the message goes no further */
};

/* Why policy_sender decided as it did: the name is the log's reason= (and, for the two
 * refusals, the metrics reason of ringrelay_messages_rejected_total). */
#define POLICY_WHYS(X) \
    X(POLICY_WHY_NO_POLICY,       "no_policy")        /* accept: hosted_domains not set */ \
    X(POLICY_WHY_UNAUTHENTICATED, "unauthenticated")  /* accept: rules are for logins */ \
    X(POLICY_WHY_NULL_SENDER,     "null_sender")      /* accept: <> (bounces, vacation) */ \
    X(POLICY_WHY_OWNED,           "owned")            /* accept: hosted, login owns it */ \
    X(POLICY_WHY_HOSTED,          "hosted")           /* accept: hosted, sender_logins not set */ \
    X(POLICY_WHY_NOT_OWNED,       "not_owned")        /* reject 553 5.7.1 */ \
    X(POLICY_WHY_RELAYING,        "relaying")         /* accept: not hosted, relay_mode allow */ \
    X(POLICY_WHY_RELAYING_NOTIFY, "relaying_notify")  /* accept + notice: relay_mode notify */ \
    X(POLICY_WHY_RELAYING_REFUSED, "relaying_refused") /* reject 553 5.7.1 */

#define POLICY_WHY_ENUM(id, name) id,
enum policy_why { POLICY_WHYS(POLICY_WHY_ENUM) POLICY_WHY_COUNT };
#undef POLICY_WHY_ENUM

extern const char *const policy_why_name[POLICY_WHY_COUNT];

/* The outcome of policy_sender(). */
struct policy_result {
    enum policy_verdict verdict;  /* accept or reject */
    enum policy_why why;          /* the rule that decided */
    const char *reason;           /* policy_why_name[why] */
    enum metrics_msg_reason msg_reason; /* REJECT: MSG_NOT_OWNED or MSG_RELAYING_REFUSED */
    bool relaying;                /* the sender's domain is not hosted (authenticated only) */
    bool notify;                  /* send the relaying notice once the message is accepted */
    char domain[POLICY_DOMAIN_BYTES_MAX + 1]; /* the sender's domain as judged: after the last
                                     '@', in its policy_domain_key() form (A-labels, lower
                                     case, no trailing dot), or ASCII lower-cased as sent when
                                     IDNA refuses it (judged not hosted); "" for <> */
    char reply[POLICY_REPLY_BYTES_MAX + 1];   /* REJECT: the whole reply line, no CRLF;
                                                 "" on accept */
};

/*
 * policy_sender - the sender rules of MAIL FROM (issue 5), for pm and cfg (relay_mode,
 * relay_enforce_after, hostname, relay_help). login is the authenticated login, NULL when
 * the client has not authenticated; sender is the canonical address net/smtp_parse.c wrote
 * ("" for <>). now_s is the unix time (relay_enforce_after is compared with it).
 *   - not authenticated, <>, or hosted_domains not set: accept.
 *   - sender domain hosted: accept when sender_logins is not set (no ownership check, as
 *     Postfix without smtpd_sender_login_maps) or the login owns the address; otherwise
 *     "553 5.7.1 <addr>: Sender address rejected: not owned by user LOGIN", also when
 *     nobody owns it (Postfix reject_sender_login_mismatch).
 *   - not hosted (relaying): relay_mode allow -> accept; notify -> accept, notify set;
 *     reject -> 553 5.7.1 with why and where to get help. From relay_enforce_after on,
 *     notify behaves as reject.
 * The sender's domain is the text after its last '@' (a quoted local part, '%' or '!' in
 * it never count), compared in its policy_domain_key() form with the maps' (which were
 * converted the same way at load); one IDNA refuses is not hosted. Fills *out and returns
 * out->verdict.
 */
enum policy_verdict policy_sender(const struct policy_maps *pm, const struct rr_config *cfg,
                                  const char *login, const char *sender, int64_t now_s,
                                  struct policy_result *out);

/* policy_may_relay - whether a client may have any recipient: authenticated, or its address
 * is inside trusted_networks. peer NULL is outside. */
bool policy_may_relay(const struct rr_config *cfg, bool authenticated,
                      const struct sockaddr *peer);

/* policy_relay_denied_reply - "554 5.7.1 <rcpt>: Relay access denied" into buf (size bytes,
 * POLICY_REPLY_BYTES_MAX + 1 suffice); returns buf. */
const char *policy_relay_denied_reply(const char *rcpt, char *buf, size_t size);

#endif
