/*
 * policy.c - the relay policy's decisions at MAIL and RCPT, made from the maps of
 * core/policy_maps.c: the sender rules of an authenticated client (hosted, owned, relaying by
 * relay_mode and relay_enforce_after), who may have recipients at all, and the reply texts.
 * The contract of the whole module, maps included, is core/policy.h and the comment at the
 * top of core/policy_maps.c.
 *
 * Functions: policy_sender(), policy_may_relay(), policy_relay_denied_reply().
 *
 * SECURITY: the sender and the login come from the client. Every reply is built within
 * POLICY_REPLY_BYTES_MAX (one SMTP line), cut at a UTF-8 boundary, and no client byte below
 * 0x20 reaches it.
 *
 * STANDARDS: RFC 5321 4.5.3.1.5 (reply length), RFC 3463 (5.7.1), RFC 5890/5891 and UTS #46
 * (domains compared as A-labels).
 */
#include <string.h>

#include "core/policy.h"
#include "core/policy_int.h"

#define POLICY_WHY_NAME(id, name) name,
const char *const policy_why_name[POLICY_WHY_COUNT] = { POLICY_WHYS(POLICY_WHY_NAME) };
#undef POLICY_WHY_NAME

/* ---------------------------------------------------------------------------------------- */
/* Decisions                                                                                */

/* A reply being written: never more than POLICY_REPLY_BYTES_MAX bytes. */
struct reply {
    char *buf;                    /* POLICY_REPLY_BYTES_MAX + 1 bytes */
    size_t len;                   /* bytes written */
    bool full;                    /* something was cut */
};

/* utf8_len - bytes of the UTF-8 sequence a lead byte starts (1 for anything else). */
static size_t utf8_len(unsigned char c)
{
    return c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

/* put - s into the reply, control bytes as '?'; stops before a character that does not fit
 * whole. */
static void put(struct reply *r, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p && !r->full) {
        size_t n = utf8_len(*p);
        if (r->len + n > POLICY_REPLY_BYTES_MAX) {
            r->full = true;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char c = p[i];
            if (!c) {                 /* a truncated sequence: stop there */
                r->buf[r->len] = '\0';
                return;
            }
            r->buf[r->len++] = (char)(c < 0x20 || c == 0x7f ? '?' : c);
        }
        p += n;
    }
    r->buf[r->len] = '\0';
}

/* sender_domain - the text after the last '@' of sender in its lookup form (policy_domain_canon():
 * A-labels, ASCII lower case, no trailing dot) into out: true. false when it has none: out
 * is then the text ASCII lower-cased without one trailing dot (a domain that fails IDNA,
 * for the notice and the reply), or "" (no '@', too long: cannot come from the parser). */
static bool sender_domain(const char *sender, char out[POLICY_DOMAIN_BYTES_MAX + 1])
{
    const char *at = strrchr(sender, '@');
    size_t n;

    out[0] = '\0';
    if (!at)
        return false;
    n = strnlen(at + 1, POLICY_DOMAIN_BYTES_MAX + 2);
    if (policy_domain_canon(at + 1, n, out, NULL) == 0)
        return true;
    if (n && at[1 + n - 1] == '.')
        n--;
    if (n <= POLICY_DOMAIN_BYTES_MAX)
        policy_fold(out, at + 1, n);
    return false;
}

/* relaying_reply - the 553 of reject mode into r, from its start: the address (when quote),
 * why, and where to get help. Without quote the address and its domain are left out, so that
 * relay_help (CONFIG_TEXT_BYTES_MAX) or postmaster@hostname always fits the line whole. */
static void relaying_reply(struct reply *r, const struct rr_config *cfg, const char *sender,
                           const char *domain, bool quote)
{
    _Static_assert(180 + sizeof("postmaster@") - 1 + CONFIG_HOSTNAME_BYTES_MAX <=
                       POLICY_REPLY_BYTES_MAX && 180 + CONFIG_TEXT_BYTES_MAX <=
                       POLICY_REPLY_BYTES_MAX, "the short form (170 bytes) and help fit");
    r->len = 0;
    r->full = false;
    if (quote) {
        put(r, "553 5.7.1 <");
        put(r, sender);
        put(r, ">: Sender address rejected: domain ");
        put(r, domain[0] ? domain : "(none)");
        put(r, " is not hosted here");
    } else {
        put(r, "553 5.7.1 Sender address rejected: its domain is not hosted here");
    }
    put(r, ", so this service may not send its mail; send it through the mail server of that "
        "domain's provider. Help: ");
    if (cfg->relay_help[0]) {
        put(r, cfg->relay_help);
    } else {
        put(r, "postmaster@");
        put(r, cfg->hostname);
    }
}

/* decide - fill the verdict fields of out. */
static enum policy_verdict decide(struct policy_result *out, enum policy_verdict v,
                                  enum policy_why why)
{
    out->verdict = v;
    out->why = why;
    out->reason = policy_why_name[why];
    if (v == POLICY_REJECT)
        out->msg_reason = why == POLICY_WHY_NOT_OWNED ? MSG_NOT_OWNED : MSG_RELAYING_REFUSED;
    else
        out->reply[0] = '\0';
    return v;
}

/* policy_sender - see policy.h. */
enum policy_verdict policy_sender(const struct policy_maps *pm, const struct rr_config *cfg,
                                  const char *login, const char *sender, int64_t now_s,
                                  struct policy_result *out)
{
    struct reply r = { out->reply, 0, false };
    enum relay_mode mode = cfg->relay_mode;
    bool has_key;

    memset(out, 0, sizeof(*out));
    out->msg_reason = MSG_REASON_COUNT;
    has_key = sender_domain(sender, out->domain);
    if (!login)
        return decide(out, POLICY_ACCEPT, POLICY_WHY_UNAUTHENTICATED);
    if (!sender[0])
        return decide(out, POLICY_ACCEPT, POLICY_WHY_NULL_SENDER);
    if (!policy_maps_has(pm, POLICY_MAP_HOSTED))
        return decide(out, POLICY_ACCEPT, POLICY_WHY_NO_POLICY);

    /* A domain without an A-label form is not a domain we host. */
    if (has_key && policy_hosted_canon(pm, out->domain)) {
        if (!policy_maps_has(pm, POLICY_MAP_LOGINS))
            return decide(out, POLICY_ACCEPT, POLICY_WHY_HOSTED);
        if (policy_owner_canon(pm, sender, out->domain, login) == POLICY_OWNER_LOGIN)
            return decide(out, POLICY_ACCEPT, POLICY_WHY_OWNED);
        put(&r, "553 5.7.1 <");
        put(&r, sender);
        put(&r, ">: Sender address rejected: not owned by user ");
        put(&r, login);
        return decide(out, POLICY_REJECT, POLICY_WHY_NOT_OWNED);
    }

    out->relaying = true;
    if (mode == RELAY_NOTIFY && now_s >= cfg->relay_enforce_after)
        mode = RELAY_REJECT;      /* the dated switch-over */
    switch (mode) {
    case RELAY_ALLOW:
        return decide(out, POLICY_ACCEPT, POLICY_WHY_RELAYING);
    case RELAY_NOTIFY:
        out->notify = true;
        return decide(out, POLICY_ACCEPT, POLICY_WHY_RELAYING_NOTIFY);
    case RELAY_REJECT:
        break;
    }
    relaying_reply(&r, cfg, sender, out->domain, true);
    if (r.full)                   /* a long address would cut the help: leave it out */
        relaying_reply(&r, cfg, sender, out->domain, false);
    return decide(out, POLICY_REJECT, POLICY_WHY_RELAYING_REFUSED);
}

/* policy_may_relay - see policy.h. */
bool policy_may_relay(const struct rr_config *cfg, bool authenticated,
                      const struct sockaddr *peer)
{
    if (authenticated)
        return true;
    return peer && config_net_match(cfg->trusted_networks, cfg->trusted_network_count, peer);
}

/* policy_relay_denied_reply - see policy.h. */
const char *policy_relay_denied_reply(const char *rcpt, char *buf, size_t size)
{
    char line[POLICY_REPLY_BYTES_MAX + 1];
    struct reply r = { line, 0, false };

    put(&r, "554 5.7.1 <");
    put(&r, rcpt);
    put(&r, ">: Relay access denied");
    if (size) {
        size_t n = r.len < size - 1 ? r.len : size - 1;
        memcpy(buf, line, n);
        buf[n] = '\0';
    }
    return buf;
}
