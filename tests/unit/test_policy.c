/*
 * test_policy.c - core/policy.c and core/policy_maps.c, table-driven:
 *   - the sender rules of issue 5: each row is (login, MAIL FROM argument as sent, relay
 *     mode, date) -> the exact reply (or accept, and whether it is relaying / a notice),
 *     the MAIL argument going through the real parser (net/smtp_parse.c) first, so address
 *     tricks (quoted "@", '%' hack, bang paths, source routes, literals, case, trailing dots)
 *     are judged exactly as the session will judge them;
 *   - who may relay: (authenticated, client address, RCPT argument) -> 554 or not;
 *   - host_registry longest-prefix lookups, IPv4, IPv6, v4-mapped;
 *   - the map parsers: each row a file and the exact "FILE:LINE: message" output, problems
 *     counted and entries kept;
 *   - -t: resources_load() on a configuration naming bad maps reports FILE:LINE lines;
 *   - IDNA: a domain is one domain whichever way it is spelt (U-label, A-label, Unicode
 *     capitals), in the file or from the client; one IDNA refuses is a problem in a file and
 *     not hosted from a client.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/policy.h"
#include "core/resources.h"
#include "net/smtp_parse.h"
#include "tests/unit/check.h"
#include "tests/unit/config_test_util.h"

#define ENFORCE   1893456000      /* 2030-01-01T00:00:00Z */
#define BEFORE    1748736000      /* 2025-06-01 */
#define AFTER     1924992000      /* 2031-01-01 */

static const char hosted_text[] =
    "# domains we host\n"
    "hosted.example\n"
    "Example.ORG.          # a trailing dot and capitals\n"
    "b\xc3\xbc" "cher.example\n"  /* bücher.example as UTF-8 */
    "nobody.example\n"            /* hosted, no sender_logins entry at all */
    "XN--MLLER-KVA.example\n"     /* müller.example as an A-label */
    "\n";

static const char logins_text[] =
    "alice@hosted.example    alice\n"
    "@hosted.example         bob, Carol\n"
    "ceo@example.org         boss\n"
    "@example.org            alice,boss\n"
    "info@b\xc3\xbc" "cher.example dave\n"
    "@xn--mller-kva.example  erin\n"
    "boss@M\xc3\x9c" "LLER.example  frank\n";   /* MÜLLER: the exact entry of müller's boss */

static const char registry_text[] =
    "192.0.2.0/24      ACME  ACME Ltd,   Leeds office\n"
    "192.0.2.128/25    ACME-B  Branch\n"
    "2001:db8::/32     DOC   Documentation prefix\n"
    "2001:db8:1::/48   DOC1\n"
    "10.0.0.0/8        INTERNAL\n"
    "0.0.0.0/0         WORLD the rest\n";

static struct policy_maps *pm;     /* all three maps */
static struct policy_maps *pm_hosted_only; /* hosted_domains without sender_logins */
static struct rr_config cfg;

/* parse_maps - the maps of three texts (NULL: that map is not configured); messages into
 * *msgs (caller frees). */
static struct policy_maps *parse_maps(const char *hosted, const char *logins,
                                      const char *registry, int *problems, char **msgs)
{
    const char *text[POLICY_MAP_COUNT] = { hosted, logins, registry };
    static const char *const names[POLICY_MAP_COUNT] = { "hosted", "logins", "registry" };
    struct policy_map_input in[POLICY_MAP_COUNT] = { { 0 } };
    size_t len;
    FILE *errs = open_memstream(msgs, &len);
    struct policy_maps *m;

    for (int i = 0; i < POLICY_MAP_COUNT; i++)
        if (text[i]) {
            /* fmemopen refuses a zero size: an empty file is /dev/null */
            in[i].in = strlen(text[i]) ? fmemopen((void *)text[i], strlen(text[i]), "r")
                                       : fopen("/dev/null", "r");
            in[i].name = names[i];
        }
    *problems = 0;
    m = policy_maps_parse(in, errs, problems);
    for (int i = 0; i < POLICY_MAP_COUNT; i++)
        if (in[i].in)
            fclose(in[i].in);
    fclose(errs);
    return m;
}

/* ---- the sender rules ---- */

enum want { ACCEPT, REJECT, PARSE_ERROR };

static const struct sender_row {
    const char *login;            /* NULL: not authenticated */
    const char *mail;             /* the MAIL argument as the client sends it */
    enum relay_mode mode;
    int64_t now;                  /* unix time */
    enum want want;
    const char *reply;            /* REJECT: the exact reply line; ACCEPT: the reason name */
    bool relaying, notify;        /* ACCEPT: expected flags */
} sender_rows[] = {
    /* not authenticated: no sender rules (trusted networks, or 554 at RCPT) */
    { NULL, "FROM:<x@other.example>", RELAY_REJECT, AFTER, ACCEPT, "unauthenticated",
      false, false },
    { NULL, "FROM:<alice@hosted.example>", RELAY_REJECT, AFTER, ACCEPT, "unauthenticated",
      false, false },
    /* the null sender from a login */
    { "alice", "FROM:<>", RELAY_REJECT, AFTER, ACCEPT, "null_sender", false, false },
    { "mallory", "FROM:<>", RELAY_NOTIFY, BEFORE, ACCEPT, "null_sender", false, false },

    /* hosted and owned */
    { "alice", "FROM:<alice@hosted.example>", RELAY_REJECT, AFTER, ACCEPT, "owned", false, false },
    { "ALICE", "FROM:<alice@hosted.example>", RELAY_REJECT, AFTER, ACCEPT, "owned", false, false },
    { "alice", "FROM:<Alice@HOSTED.Example>", RELAY_REJECT, AFTER, ACCEPT, "owned", false, false },
    { "bob", "FROM:<sales@hosted.example>", RELAY_REJECT, AFTER, ACCEPT, "owned", false, false },
    { "carol", "FROM:<sales@hosted.example>", RELAY_REJECT, AFTER, ACCEPT, "owned", false, false },
    { "boss", "FROM:<ceo@example.org>", RELAY_REJECT, AFTER, ACCEPT, "owned", false, false },
    { "alice", "FROM:<news@example.org>", RELAY_REJECT, AFTER, ACCEPT, "owned", false, false },
    { "alice", "FROM:<\"news\"@example.org>", RELAY_REJECT, AFTER, ACCEPT, "owned", false, false },
    { "dave", "FROM:<info@b\xc3\xbc" "cher.example> SMTPUTF8", RELAY_REJECT, AFTER, ACCEPT,
      "owned", false, false },
    { "alice", "FROM:<@relay.example:alice@hosted.example>", RELAY_REJECT, AFTER, ACCEPT,
      "owned", false, false },

    /* hosted, owned by someone else: Postfix's text */
    { "bob", "FROM:<alice@hosted.example>", RELAY_ALLOW, BEFORE, REJECT,
      "553 5.7.1 <alice@hosted.example>: Sender address rejected: not owned by user bob",
      false, false },
    { "mallory", "FROM:<sales@hosted.example>", RELAY_ALLOW, BEFORE, REJECT,
      "553 5.7.1 <sales@hosted.example>: Sender address rejected: not owned by user mallory",
      false, false },
    { "alice", "FROM:<ceo@example.org>", RELAY_NOTIFY, BEFORE, REJECT,
      "553 5.7.1 <ceo@example.org>: Sender address rejected: not owned by user alice",
      false, false },
    { "dave", "FROM:<sales@b\xc3\xbc" "cher.example> SMTPUTF8", RELAY_ALLOW, BEFORE, REJECT,
      "553 5.7.1 <sales@b\xc3\xbc" "cher.example>: Sender address rejected: not owned by "
      "user dave", false, false },
    /* hosted, nobody owns it: refused for everyone (reject_sender_login_mismatch) */
    { "alice", "FROM:<x@nobody.example>", RELAY_ALLOW, BEFORE, REJECT,
      "553 5.7.1 <x@nobody.example>: Sender address rejected: not owned by user alice",
      false, false },
    /* a login holding CR LF cannot split the reply */
    { "bob\r\n250 ok", "FROM:<alice@hosted.example>", RELAY_ALLOW, BEFORE, REJECT,
      "553 5.7.1 <alice@hosted.example>: Sender address rejected: not owned by user "
      "bob??250 ok", false, false },

    /* not hosted: relaying, by mode and date */
    { "alice", "FROM:<alice@other.example>", RELAY_ALLOW, AFTER, ACCEPT, "relaying", true,
      false },
    { "alice", "FROM:<alice@other.example>", RELAY_NOTIFY, BEFORE, ACCEPT, "relaying_notify",
      true, true },
    { "alice", "FROM:<alice@other.example>", RELAY_NOTIFY, ENFORCE - 1, ACCEPT,
      "relaying_notify", true, true },
    { "alice", "FROM:<alice@other.example>", RELAY_NOTIFY, ENFORCE, REJECT,
      "553 5.7.1 <alice@other.example>: Sender address rejected: domain other.example is not "
      "hosted here, so this service may not send its mail; send it through the mail server "
      "of that domain's provider. Help: https://help.example.net/relay", false, false },
    { "alice", "FROM:<alice@other.example>", RELAY_NOTIFY, AFTER, REJECT,
      "553 5.7.1 <alice@other.example>: Sender address rejected: domain other.example is not "
      "hosted here, so this service may not send its mail; send it through the mail server "
      "of that domain's provider. Help: https://help.example.net/relay", false, false },
    { "alice", "FROM:<alice@other.example>", RELAY_REJECT, BEFORE, REJECT,
      "553 5.7.1 <alice@other.example>: Sender address rejected: domain other.example is not "
      "hosted here, so this service may not send its mail; send it through the mail server "
      "of that domain's provider. Help: https://help.example.net/relay", false, false },

    /* address tricks: every one judged by its real domain */
    { "alice", "FROM:<\"evil@hosted.example\"@other.example>", RELAY_NOTIFY, BEFORE, ACCEPT,
      "relaying_notify", true, true },
    { "alice", "FROM:<\"evil@hosted.example\"@other.example>", RELAY_REJECT, BEFORE, REJECT,
      "553 5.7.1 <\"evil@hosted.example\"@other.example>: Sender address rejected: domain "
      "other.example is not hosted here, so this service may not send its mail; send it "
      "through the mail server of that domain's provider. Help: https://help.example.net/relay",
      false, false },
    { "alice", "FROM:<alice%hosted.example@other.example>", RELAY_NOTIFY, BEFORE, ACCEPT,
      "relaying_notify", true, true },
    { "alice", "FROM:<hosted.example!alice@other.example>", RELAY_NOTIFY, BEFORE, ACCEPT,
      "relaying_notify", true, true },
    { "alice", "FROM:<@hosted.example:alice@other.example>", RELAY_NOTIFY, BEFORE, ACCEPT,
      "relaying_notify", true, true },
    { "alice", "FROM:<@hosted.example,@example.org:alice@other.example>", RELAY_NOTIFY,
      BEFORE, ACCEPT, "relaying_notify", true, true },
    { "alice", "FROM:<alice@[192.0.2.1]>", RELAY_NOTIFY, BEFORE, ACCEPT, "relaying_notify",
      true, true },
    { "alice", "FROM:<alice@[IPv6:2001:db8::1]>", RELAY_NOTIFY, BEFORE, ACCEPT,
      "relaying_notify", true, true },
    { "alice", "FROM:<alice@sub.hosted.example>", RELAY_NOTIFY, BEFORE, ACCEPT,
      "relaying_notify", true, true },
    { "alice", "FROM:<alice@hosted.example.other.example>", RELAY_NOTIFY, BEFORE, ACCEPT,
      "relaying_notify", true, true },
    { "alice", "FROM:<alice@xhosted.example>", RELAY_NOTIFY, BEFORE, ACCEPT,
      "relaying_notify", true, true },
    /* a trailing dot never gets this far: the parser refuses it */
    { "alice", "FROM:<alice@HOSTED.Example.>", RELAY_NOTIFY, BEFORE, PARSE_ERROR, NULL,
      false, false },
    { "alice", "FROM:<alice@hosted.example.other.example.>", RELAY_NOTIFY, BEFORE, PARSE_ERROR,
      NULL, false, false },
    /* nor a '@' smuggled through an escape outside quotes, nor two '@' */
    { "alice", "FROM:<alice\\@hosted.example@other.example>", RELAY_NOTIFY, BEFORE,
      PARSE_ERROR, NULL, false, false },
    { "alice", "FROM:<alice@hosted.example@other.example>", RELAY_NOTIFY, BEFORE, PARSE_ERROR,
      NULL, false, false },
    /* the quoted form of a hosted address is the address */
    { "alice", "FROM:<\"alice\"@hosted.example>", RELAY_REJECT, AFTER, ACCEPT, "owned",
      false, false },

    /* IDNA: U-label in the file (bücher), the client spells it as an A-label */
    { "dave", "FROM:<info@xn--bcher-kva.example>", RELAY_REJECT, AFTER, ACCEPT, "owned",
      false, false },
    { "dave", "FROM:<INFO@XN--BCHER-KVA.EXAMPLE>", RELAY_REJECT, AFTER, ACCEPT, "owned",
      false, false },
    { "mallory", "FROM:<info@xn--bcher-kva.example>", RELAY_ALLOW, BEFORE, REJECT,
      "553 5.7.1 <info@xn--bcher-kva.example>: Sender address rejected: not owned by user "
      "mallory", false, false },
    { "mallory", "FROM:<info@XN--BCHER-KVA.example>", RELAY_NOTIFY, BEFORE, REJECT,
      "553 5.7.1 <info@xn--bcher-kva.example>: Sender address rejected: not owned by user "
      "mallory", false, false },
    /* A-label in the file (müller), the client sends the U-label under SMTPUTF8 */
    { "erin", "FROM:<sales@m\xc3\xbc" "ller.example> SMTPUTF8", RELAY_REJECT, AFTER, ACCEPT,
      "owned", false, false },
    { "mallory", "FROM:<sales@m\xc3\xbc" "ller.example> SMTPUTF8", RELAY_NOTIFY, BEFORE,
      REJECT, "553 5.7.1 <sales@m\xc3\xbc" "ller.example>: Sender address rejected: not "
      "owned by user mallory", false, false },
    { "erin", "FROM:<boss@xn--mller-kva.example>", RELAY_ALLOW, BEFORE, REJECT,
      "553 5.7.1 <boss@xn--mller-kva.example>: Sender address rejected: not owned by user "
      "erin", false, false },   /* the exact entry, written MÜLLER, wins over @domain */
    { "frank", "FROM:<boss@m\xc3\xbc" "ller.example> SMTPUTF8", RELAY_REJECT, AFTER, ACCEPT,
      "owned", false, false },
    /* Unicode capitals (UTS #46 folds them; ASCII folding alone would not) */
    { "dave", "FROM:<info@B\xc3\x9c" "CHER.example> SMTPUTF8", RELAY_REJECT, AFTER, ACCEPT,
      "owned", false, false },
    { "mallory", "FROM:<info@B\xc3\x9c" "CHER.EXAMPLE> SMTPUTF8", RELAY_ALLOW, BEFORE, REJECT,
      "553 5.7.1 <info@b\xc3\x9c" "cher.example>: Sender address rejected: not owned by user "
      "mallory", false, false },
    { "mallory", "FROM:<x@M\xc3\x9c" "LLER.example> SMTPUTF8", RELAY_NOTIFY, BEFORE, REJECT,
      "553 5.7.1 <x@m\xc3\x9c" "ller.example>: Sender address rejected: not owned by user "
      "mallory", false, false },
    /* a domain IDNA refuses (a leading combining mark, an emoji) is none of ours */
    { "alice", "FROM:<x@\xcc\x81" "bc.example> SMTPUTF8", RELAY_NOTIFY, BEFORE, ACCEPT,
      "relaying_notify", true, true },
    { "alice", "FROM:<x@a\xe2\x9d\xa4.example> SMTPUTF8", RELAY_ALLOW, BEFORE, ACCEPT,
      "relaying", true, false },
    { "alice", "FROM:<x@a\xe2\x9d\xa4.example> SMTPUTF8", RELAY_REJECT, BEFORE, REJECT,
      "553 5.7.1 <x@a\xe2\x9d\xa4.example>: Sender address rejected: domain a\xe2\x9d\xa4.example "
      "is not hosted here, so this service may not send its mail; send it through the mail "
      "server of that domain's provider. Help: https://help.example.net/relay", false, false },
};

/* test_sender_rows - every row of the table through the parser and policy_sender(). */
static void test_sender_rows(void)
{
    for (size_t i = 0; i < sizeof(sender_rows) / sizeof(sender_rows[0]); i++) {
        const struct sender_row *r = &sender_rows[i];
        struct smtp_addr from;
        struct smtp_mail_params mp;
        struct policy_result res;
        enum smtp_parse_err e = smtp_parse_mail(r->mail, strlen(r->mail), 0, &from, &mp);

        if (r->want == PARSE_ERROR) {
            CHECK(e != SMTP_PARSE_OK, "row %zu %s: parsed as %s", i, r->mail, from.text);
            continue;
        }
        CHECK(e == SMTP_PARSE_OK, "row %zu %s: parse error %d", i, r->mail, (int)e);
        if (e != SMTP_PARSE_OK)
            continue;
        cfg.relay_mode = r->mode;
        enum policy_verdict v = policy_sender(pm, &cfg, r->login, from.text, r->now, &res);
        CHECK(v == res.verdict, "row %zu: returned verdict", i);
        if (r->want == REJECT) {
            CHECK(v == POLICY_REJECT && strcmp(res.reply, r->reply) == 0,
                  "row %zu %s login %s: got %s '%s', want '%s'", i, r->mail,
                  r->login ? r->login : "-", v == POLICY_REJECT ? "reject" : "accept",
                  res.reply, r->reply);
            CHECK(strlen(res.reply) <= POLICY_REPLY_BYTES_MAX, "row %zu: reply length", i);
            CHECK(!strchr(res.reply, '\r') && !strchr(res.reply, '\n'), "row %zu: CRLF", i);
            CHECK(res.msg_reason == (res.why == POLICY_WHY_NOT_OWNED ? MSG_NOT_OWNED
                                                                      : MSG_RELAYING_REFUSED),
                  "row %zu: metrics reason", i);
            CHECK(strcmp(metrics_msg_reason_name[res.msg_reason], res.reason) == 0,
                  "row %zu: reason %s vs metrics %s", i, res.reason,
                  metrics_msg_reason_name[res.msg_reason]);
            CHECK(!res.notify, "row %zu: a refusal never notifies", i);
        } else {
            CHECK(v == POLICY_ACCEPT && strcmp(res.reason, r->reply) == 0 &&
                  res.reply[0] == '\0',
                  "row %zu %s login %s: got %s (%s) '%s', want accept (%s)", i, r->mail,
                  r->login ? r->login : "-", v == POLICY_REJECT ? "reject" : "accept",
                  res.reason, res.reply, r->reply);
            CHECK(res.relaying == r->relaying && res.notify == r->notify,
                  "row %zu %s: relaying %d notify %d, want %d %d", i, r->mail, res.relaying,
                  res.notify, r->relaying, r->notify);
        }
    }
}

/* test_sender_edges - what the table cannot say: the domain handed to the notice, no maps,
 * hosted_domains without sender_logins, the default help text, a trailing dot given
 * directly, an over-long reply. */
static void test_sender_edges(void)
{
    struct policy_result res;
    char longaddr[300];

    cfg.relay_mode = RELAY_NOTIFY;
    policy_sender(pm, &cfg, "alice", "\"evil@hosted.example\"@Other.Example", BEFORE, &res);
    CHECK(strcmp(res.domain, "other.example") == 0, "notice domain %s", res.domain);

    /* the notice's domain is the A-label whichever way it was spelt: one claim for both */
    policy_sender(pm, &cfg, "alice", "x@Caf\xc3\xa9.example", BEFORE, &res);
    CHECK(res.notify && strcmp(res.domain, "xn--caf-dma.example") == 0, "U-label notice %s",
          res.domain);
    policy_sender(pm, &cfg, "alice", "x@XN--CAF-DMA.example", BEFORE, &res);
    CHECK(res.notify && strcmp(res.domain, "xn--caf-dma.example") == 0, "A-label notice %s",
          res.domain);
    policy_sender(pm, &cfg, "alice", "x@A\xe2\x9d\xa4.Example", BEFORE, &res);
    CHECK(res.notify && strcmp(res.domain, "a\xe2\x9d\xa4.example") == 0,
          "no A-label: the domain as sent, ASCII folded: %s", res.domain);

    /* a U-label domain whose A-label would pass 255 bytes: no key, not hosted, one line */
    {
        char addr[POLICY_ADDR_BYTES_MAX + 1];
        size_t n = (size_t)sprintf(addr, "x@");
        while (n + 21 < sizeof(addr))           /* "b\xc3\xbccher." grows 8 bytes each */
            n += (size_t)sprintf(addr + n, "b\xc3\xbc" "cher.");
        n += (size_t)sprintf(addr + n, "example");
        CHECK(n <= POLICY_ADDR_BYTES_MAX, "long U-label address %zu", n);
        policy_sender(pm, &cfg, "alice", addr, BEFORE, &res);
        CHECK(res.notify && res.relaying && !policy_domain_key(addr + 2, res.domain),
              "long U-label: %s", res.reason);
        cfg.relay_mode = RELAY_REJECT;
        policy_sender(pm, &cfg, "alice", addr, BEFORE, &res);
        CHECK(res.verdict == POLICY_REJECT && strlen(res.reply) <= POLICY_REPLY_BYTES_MAX &&
              strstr(res.reply, "Help: https://help.example.net/relay"), "long U-label: %s",
              res.reply);
        cfg.relay_mode = RELAY_NOTIFY;
    }

    /* trailing dot and capitals given directly (the parser never produces them) */
    policy_sender(pm, &cfg, "alice", "alice@HOSTED.Example.", AFTER, &res);
    CHECK(res.verdict == POLICY_ACCEPT && res.why == POLICY_WHY_OWNED, "trailing dot: %s",
          res.reason);
    CHECK(strcmp(res.domain, "hosted.example") == 0, "domain %s", res.domain);
    policy_sender(pm, &cfg, "bob", "alice@HOSTED.Example.", AFTER, &res);
    CHECK(res.verdict == POLICY_REJECT, "trailing dot, other login: %s", res.reason);

    /* no maps at all: the rules are off */
    cfg.relay_mode = RELAY_REJECT;
    policy_sender(NULL, &cfg, "alice", "alice@other.example", AFTER, &res);
    CHECK(res.verdict == POLICY_ACCEPT && res.why == POLICY_WHY_NO_POLICY && !res.relaying,
          "no maps: %s", res.reason);

    /* hosted_domains but no sender_logins: hosted is enough, relaying still judged */
    policy_sender(pm_hosted_only, &cfg, "mallory", "ceo@example.org", AFTER, &res);
    CHECK(res.verdict == POLICY_ACCEPT && res.why == POLICY_WHY_HOSTED, "hosted only: %s",
          res.reason);
    policy_sender(pm_hosted_only, &cfg, "mallory", "x@other.example", AFTER, &res);
    CHECK(res.verdict == POLICY_REJECT && res.why == POLICY_WHY_RELAYING_REFUSED,
          "hosted only, relaying: %s", res.reason);

    /* no relay_help: postmaster of the relay */
    char help[sizeof(cfg.relay_help)];
    memcpy(help, cfg.relay_help, sizeof(help));
    cfg.relay_help[0] = '\0';
    policy_sender(pm, &cfg, "alice", "a@other.example", AFTER, &res);
    CHECK(strstr(res.reply, "Help: postmaster@relay.example.net") &&
          res.reply[strlen(res.reply) - 1] == 't', "default help: %s", res.reply);
    memcpy(cfg.relay_help, help, sizeof(help));

    /* the longest address there is: still one reply line, cut at a character boundary */
    memset(longaddr, 0, sizeof(longaddr));
    memset(longaddr, 'a', 64);
    longaddr[64] = '@';
    for (int i = 65; i < 250; i++)
        longaddr[i] = (i % 10 == 4) ? '.' : 'b';
    memcpy(longaddr + 250, ".\xc3\xbc" "xy", 5);  /* a 2-byte character near the end */
    policy_sender(pm, &cfg, "alice", longaddr, AFTER, &res);
    CHECK(res.verdict == POLICY_REJECT && strlen(res.reply) <= POLICY_REPLY_BYTES_MAX,
          "long reply: %zu bytes", strlen(res.reply));
    CHECK(strncmp(res.reply, "553 5.7.1 ", 10) == 0, "long reply starts right");
    /* ... and the help is never what gets cut: the address is left out instead */
    size_t rl = strlen(res.reply), hl = strlen(cfg.relay_help);
    CHECK(rl > hl && strcmp(res.reply + rl - hl, cfg.relay_help) == 0 &&
          strstr(res.reply, "not hosted here"), "long address, help cut: %s", res.reply);
    /* the same with the longest relay_help, and with the longest host name as the help */
    memcpy(help, cfg.relay_help, sizeof(help));
    memset(cfg.relay_help, 'h', CONFIG_TEXT_BYTES_MAX);
    cfg.relay_help[CONFIG_TEXT_BYTES_MAX] = '\0';
    policy_sender(pm, &cfg, "alice", "a@other.example", AFTER, &res);
    CHECK(strncmp(res.reply, "553 5.7.1 <a@other.example>", 27) == 0 &&
          strlen(res.reply) <= POLICY_REPLY_BYTES_MAX &&
          strcmp(res.reply + strlen(res.reply) - CONFIG_TEXT_BYTES_MAX, cfg.relay_help) == 0,
          "short address, longest help: %s", res.reply);
    policy_sender(pm, &cfg, "alice", longaddr, AFTER, &res);
    CHECK(strlen(res.reply) <= POLICY_REPLY_BYTES_MAX &&
          strcmp(res.reply + strlen(res.reply) - CONFIG_TEXT_BYTES_MAX, cfg.relay_help) == 0,
          "long address, longest help: %s", res.reply);
    char host[sizeof(cfg.hostname)];
    memcpy(host, cfg.hostname, sizeof(host));
    memset(cfg.hostname, 'n', CONFIG_HOSTNAME_BYTES_MAX);
    cfg.hostname[CONFIG_HOSTNAME_BYTES_MAX] = '\0';
    cfg.relay_help[0] = '\0';
    policy_sender(pm, &cfg, "alice", longaddr, AFTER, &res);
    CHECK(strlen(res.reply) <= POLICY_REPLY_BYTES_MAX &&
          strcmp(res.reply + strlen(res.reply) - CONFIG_HOSTNAME_BYTES_MAX, cfg.hostname) == 0 &&
          strstr(res.reply, "Help: postmaster@nnn"), "long address, longest host: %s",
          res.reply);
    memcpy(cfg.hostname, host, sizeof(host));
    memcpy(cfg.relay_help, help, sizeof(help));

    /* every reason name is a metrics reason where it refuses */
    for (int w = 0; w < POLICY_WHY_COUNT; w++)
        CHECK(policy_why_name[w] && policy_why_name[w][0], "why %d has a name", w);
}

/* ---- who may relay ---- */

static const struct relay_row {
    bool authenticated;
    const char *peer;             /* numeric address; NULL = no address */
    const char *rcpt;             /* the RCPT argument */
    bool may;
} relay_rows[] = {
    { false, "127.0.0.1", "TO:<x@other.example>", true },
    { false, "127.1.2.3", "TO:<x@other.example>", true },
    { false, "::1", "TO:<x@other.example>", true },
    { false, "::ffff:127.0.0.1", "TO:<x@other.example>", true },
    { false, "192.0.2.1", "TO:<x@other.example>", false },
    { false, "::ffff:192.0.2.1", "TO:<x@other.example>", false },
    { false, "2001:db8::1", "TO:<x@other.example>", false },
    { false, "::", "TO:<x@other.example>", false },
    { false, NULL, "TO:<x@other.example>", false },
    /* address tricks in the recipient change nothing: nothing is delivered locally */
    { false, "192.0.2.1", "TO:<x@hosted.example>", false },
    { false, "192.0.2.1", "TO:<x%other.example@hosted.example>", false },
    { false, "192.0.2.1", "TO:<other.example!x@hosted.example>", false },
    { false, "192.0.2.1", "TO:<@hosted.example:x@other.example>", false },
    { false, "192.0.2.1", "TO:<\"x@other.example\"@hosted.example>", false },
    { false, "192.0.2.1", "TO:<x@[127.0.0.1]>", false },
    { false, "192.0.2.1", "TO:<x@LOCALHOST>", false },
    { false, "192.0.2.1", "TO:<postmaster>", false },
    { false, "192.0.2.1", "TO:<Postmaster@hosted.example>", false },
    /* authenticated: anywhere */
    { true, "192.0.2.1", "TO:<x@other.example>", true },
    { true, "2001:db8::1", "TO:<x@other.example>", true },
    { true, NULL, "TO:<x@other.example>", true },
};

/* sockaddr_of - a numeric address as a socket address (port 25). */
static void sockaddr_of(const char *text, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, text, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(25);
    } else if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(25);
    } else {
        fprintf(stderr, "bad test address %s\n", text);
        exit(2);
    }
}

/* test_relay_rows - policy_may_relay() and the 554 text. */
static void test_relay_rows(void)
{
    for (size_t i = 0; i < sizeof(relay_rows) / sizeof(relay_rows[0]); i++) {
        const struct relay_row *r = &relay_rows[i];
        struct sockaddr_storage ss;
        struct smtp_addr to;
        char buf[POLICY_REPLY_BYTES_MAX + 1], want[600];

        if (r->peer)
            sockaddr_of(r->peer, &ss);
        CHECK(smtp_parse_rcpt(r->rcpt, strlen(r->rcpt), false, &to) == SMTP_PARSE_OK,
              "relay row %zu: %s does not parse", i, r->rcpt);
        bool may = policy_may_relay(&cfg, r->authenticated,
                                    r->peer ? (const struct sockaddr *)&ss : NULL);
        CHECK(may == r->may, "relay row %zu (%s, %s, %s): may %d", i,
              r->authenticated ? "auth" : "no auth", r->peer ? r->peer : "-", r->rcpt, may);
        snprintf(want, sizeof(want), "554 5.7.1 <%s>: Relay access denied", to.text);
        policy_relay_denied_reply(to.text, buf, sizeof(buf));
        CHECK(strcmp(buf, want) == 0, "relay row %zu: '%s'", i, buf);
    }
    char small[8];
    policy_relay_denied_reply("x@y", small, sizeof(small));
    CHECK(strcmp(small, "554 5.7") == 0, "denied reply cut to its buffer: %s", small);
}

/* ---- host_registry ---- */

static const struct registry_row {
    const char *addr;
    const char *owner;            /* NULL: none */
} registry_rows[] = {
    { "192.0.2.5", "ACME ACME Ltd, Leeds office" },
    { "192.0.2.127", "ACME ACME Ltd, Leeds office" },
    { "192.0.2.128", "ACME-B Branch" },
    { "192.0.2.255", "ACME-B Branch" },
    { "::ffff:192.0.2.5", "ACME ACME Ltd, Leeds office" },
    { "10.255.0.1", "INTERNAL" },
    { "198.51.100.1", "WORLD the rest" },
    { "2001:db8:1::5", "DOC1" },
    { "2001:db8:1:ffff:ffff:ffff:ffff:ffff", "DOC1" },
    { "2001:db8:2::1", "DOC Documentation prefix" },
    { "2001:db9::1", NULL },
    { "::1", NULL },
};

/* test_registry_rows - longest prefix wins. */
static void test_registry_rows(void)
{
    for (size_t i = 0; i < sizeof(registry_rows) / sizeof(registry_rows[0]); i++) {
        const struct registry_row *r = &registry_rows[i];
        struct sockaddr_storage ss;

        sockaddr_of(r->addr, &ss);
        const char *got = policy_registry_owner(pm, (const struct sockaddr *)&ss);
        CHECK(r->owner ? got && strcmp(got, r->owner) == 0 : got == NULL,
              "registry %s: got '%s', want '%s'", r->addr, got ? got : "(null)",
              r->owner ? r->owner : "(null)");
    }
    struct sockaddr_storage ss;
    sockaddr_of("192.0.2.5", &ss);
    CHECK(policy_registry_owner(NULL, (const struct sockaddr *)&ss) == NULL, "no maps");
    CHECK(policy_registry_owner(pm_hosted_only, (const struct sockaddr *)&ss) == NULL,
          "no registry");
}

/* ---- the map parsers ---- */

static const struct map_row {
    enum policy_map map;
    const char *text;
    int problems;
    const char *msgs;             /* the exact report; the FILE is hosted/logins/registry */
    size_t entries;
} map_rows[] = {
    /* hosted_domains */
    { POLICY_MAP_HOSTED, "a.example\n# c\n\n   # indented comment\nB.Example.\n", 0, "", 2 },
    { POLICY_MAP_HOSTED, "a.example\r\nb.example\r\n", 0, "", 2 },
    { POLICY_MAP_HOSTED, "a.example", 0, "", 1 },
    { POLICY_MAP_HOSTED, "a.example # the first customer\n", 0, "", 1 },
    { POLICY_MAP_HOSTED,
      "xn--bcher-kva.example\nb\xc3\xbc" "cher.example\nB\xc3\x9c" "CHER.example\n", 0,
      "hosted:2: warning: duplicate domain xn--bcher-kva.example (line 1)\n"
      "hosted:3: warning: duplicate domain xn--bcher-kva.example (line 1)\n", 1 },
    { POLICY_MAP_HOSTED, "\xcc\x81" "bc.example\na\xe2\x9d\xa4.example\nxn--zz.b\xc3\xbc" "cher\n"
      "ok.example\n", 3,
      "hosted:1: '\xcc\x81" "bc.example' has no IDNA A-label form: string contains a "
      "forbidden leading combining character\n"
      "hosted:2: 'a\xe2\x9d\xa4.example' has no IDNA A-label form: string contains a "
      "disallowed character\n"
      "hosted:3: 'xn--zz.b\xc3\xbc" "cher' has no IDNA A-label form: string contains invalid "
      "punycode data\n", 1 },
    { POLICY_MAP_HOSTED, "a.example b.example\n", 1,
      "hosted:1: expected one domain per line\n", 0 },
    { POLICY_MAP_HOSTED, "[192.0.2.1]\n-bad.example\nbad-.example\na..example\n.\n", 5,
      "hosted:1: '[192.0.2.1]' is not a domain name an address can have\n"
      "hosted:2: '-bad.example' is not a domain name an address can have\n"
      "hosted:3: 'bad-.example' is not a domain name an address can have\n"
      "hosted:4: 'a..example' is not a domain name an address can have\n"
      "hosted:5: '.' is not a domain name an address can have\n", 0 },
    { POLICY_MAP_HOSTED, "a_b.example\nexample.com#x\nb\xc3.example\n", 3,
      "hosted:1: 'a_b.example' is not a domain name an address can have\n"
      "hosted:2: 'example.com#x' is not a domain name an address can have\n"
      "hosted:3: 'b\xc3.example' is not a domain name an address can have\n", 0 },
    { POLICY_MAP_HOSTED, " indented.example\nok.example\n", 1,
      "hosted:1: line starts with a blank (continuation lines are not supported: join it "
      "to the line above)\n", 1 },
    { POLICY_MAP_HOSTED, "a.example\nA.EXAMPLE.\n", 0,
      "hosted:2: warning: duplicate domain a.example (line 1)\n", 1 },
    { POLICY_MAP_HOSTED, "a\x01.example\nb.example\x7f\nc.example\n", 2,
      "hosted:1: control character 0x01 in the line\n"
      "hosted:2: control character 0x7f in the line\n", 1 },
    /* sender_logins */
    { POLICY_MAP_LOGINS, "alice@a.example alice\n@a.example bob,carol  dave , eve\n", 0, "", 2 },
    { POLICY_MAP_LOGINS, "\"alice\"@A.Example. alice\n", 0, "", 1 },
    { POLICY_MAP_LOGINS, "alice alice\n<alice@a.example> alice\n@ x\n@[192.0.2.1] x\n", 4,
      "logins:1: 'alice' is not an address or @domain\n"
      "logins:2: '<alice@a.example>' is not an address or @domain\n"
      "logins:3: '@' is not @ and a domain name\n"
      "logins:4: '@[192.0.2.1]' is not @ and a domain name\n", 0 },
    { POLICY_MAP_LOGINS, "alice@a.example\n@a.example , ,\n", 2,
      "logins:1: alice@a.example: no login after the address\n"
      "logins:2: @a.example: no login after the address\n", 0 },
    { POLICY_MAP_LOGINS, "a@a.example x\nA@A.EXAMPLE y\n", 0,
      "logins:2: warning: duplicate key a@a.example (line 1 wins)\n", 1 },
    { POLICY_MAP_LOGINS, "@a\xe2\x9d\xa4.example x\nx@a\xe2\x9d\xa4.example x\n"
      "@m\xc3\xbc" "ller.example x\nx@M\xc3\x9c" "LLER.example x\n@XN--MLLER-KVA.example y\n", 2,
      "logins:1: '@a\xe2\x9d\xa4.example' has no IDNA A-label form: string contains a "
      "disallowed character\n"
      "logins:2: 'x@a\xe2\x9d\xa4.example' has no IDNA A-label form: string contains a "
      "disallowed character\n"
      "logins:5: warning: duplicate key @xn--mller-kva.example (line 3 wins)\n", 2 },
    { POLICY_MAP_LOGINS, "@a.example\tx\n  bob\n", 1,
      "logins:2: line starts with a blank (continuation lines are not supported: join it "
      "to the line above)\n", 1 },
    /* host_registry */
    { POLICY_MAP_REGISTRY, "192.0.2.0/24 ACME\n2001:db8::/32 DOC docs\n192.0.2.7 HOST\n",
      0, "", 3 },
    { POLICY_MAP_REGISTRY, "192.0.2.0/33 X\nbanana X\n192.0.2.0/24\n", 3,
      "registry:1: '192.0.2.0/33' is not a network (address/prefix)\n"
      "registry:2: 'banana' is not a network (address/prefix)\n"
      "registry:3: 192.0.2.0/24: no owner after the network\n", 0 },
    { POLICY_MAP_REGISTRY, "192.0.2.0/24 A\n192.0.2.9/24 B\n::ffff:192.0.2.0/120 C\n", 0,
      "registry:2: warning: duplicate network 192.0.2.9/24 (line 1 wins)\n"
      "registry:3: warning: duplicate network ::ffff:192.0.2.0/120 (line 1 wins)\n", 1 },
};

/* test_map_rows - each file alone (its map the only one configured, so no cross-map
 * warnings), exact messages. */
static void test_map_rows(void)
{
    static const char *const cross[POLICY_MAP_COUNT] = {
        [POLICY_MAP_HOSTED] = "hosted: warning: no sender_logins: any login may send as any "
                              "address of a hosted domain\n",
        [POLICY_MAP_LOGINS] = "logins: warning: no hosted_domains: the sender rules are off, "
                              "this file is not used\n",
        [POLICY_MAP_REGISTRY] = "",
    };

    for (size_t i = 0; i < sizeof(map_rows) / sizeof(map_rows[0]); i++) {
        const struct map_row *r = &map_rows[i];
        const char *t[POLICY_MAP_COUNT] = { NULL, NULL, NULL };
        char *msgs = NULL, want[4096];
        int problems;

        t[r->map] = r->text;
        struct policy_maps *m = parse_maps(t[0], t[1], t[2], &problems, &msgs);
        snprintf(want, sizeof(want), "%s%s", r->msgs, cross[r->map]);
        CHECK(problems == r->problems, "map row %zu: %d problems, want %d\n%s", i, problems,
              r->problems, msgs);
        CHECK(strcmp(msgs, want) == 0, "map row %zu: messages\n%s---- want\n%s", i, msgs,
              want);
        CHECK(policy_maps_count(m, r->map) == r->entries, "map row %zu: %zu entries, want %zu",
              i, policy_maps_count(m, r->map), r->entries);
        CHECK(policy_maps_has(m, r->map), "map row %zu: has", i);
        policy_maps_unref(m);
        free(msgs);
    }
}

/* test_map_limits - a line too long, too many logins, a login too long, an owner text too
 * long, cross-map warnings and their cap. */
static void test_map_limits(void)
{
    size_t big = POLICY_LINE_BYTES_MAX + 100;
    char *text = malloc(big + 64 * 300 + 100), *msgs = NULL;
    int problems;
    size_t n = 0;

    /* a line over the bound, then a good one: the bad one is reported once, the good kept */
    memset(text, 'a', big);
    n = big;
    n += (size_t)sprintf(text + n, "\nok.example\n");
    text[n] = '\0';
    struct policy_maps *m = parse_maps(text, NULL, NULL, &problems, &msgs);
    CHECK(problems == 1 && strstr(msgs, "hosted:1: line longer than 4096 bytes\n"),
          "long line: %d %s", problems, msgs);
    CHECK(policy_maps_count(m, POLICY_MAP_HOSTED) == 1, "long line: good line kept");
    policy_maps_unref(m);
    free(msgs);

    /* exactly the bound is fine (a domain that long is not, but the line is read) */
    memset(text, 'a', POLICY_LINE_BYTES_MAX);
    text[POLICY_LINE_BYTES_MAX] = '\0';
    m = parse_maps(text, NULL, NULL, &problems, &msgs);
    CHECK(problems == 1 && strstr(msgs, "is not a domain name") && !strstr(msgs, "longer"),
          "line at the bound: %s", msgs);
    policy_maps_unref(m);
    free(msgs);

    /* 64 logins are fine, 65 are not */
    for (int count = 64; count <= 65; count++) {
        n = (size_t)sprintf(text, "@a.example");
        for (int i = 0; i < count; i++)
            n += (size_t)sprintf(text + n, " u%d", i);
        strcpy(text + n, "\n");
        m = parse_maps("a.example\n", text, NULL, &problems, &msgs);
        CHECK(problems == (count > 64), "%d logins: %d problems %s", count, problems, msgs);
        if (count == 64)
            CHECK(policy_sender_owner(m, "x@a.example", "U63") == POLICY_OWNER_LOGIN,
                  "the 64th login owns");
        policy_maps_unref(m);
        free(msgs);
    }

    /* a login of 256 bytes */
    n = (size_t)sprintf(text, "@a.example ");
    memset(text + n, 'l', 256);
    strcpy(text + n + 256, "\n");
    m = parse_maps("a.example\n", text, NULL, &problems, &msgs);
    CHECK(problems == 1 && strstr(msgs, "logins:1: login of 256 bytes, longer than 255"),
          "long login: %s", msgs);
    policy_maps_unref(m);
    free(msgs);

    /* owner text over the bound */
    n = (size_t)sprintf(text, "192.0.2.0/24 ");
    for (int i = 0; i < 30; i++)
        n += (size_t)sprintf(text + n, "word%05d ", i);
    strcpy(text + n, "\n");
    m = parse_maps(NULL, NULL, text, &problems, &msgs);
    CHECK(problems == 1 && strstr(msgs, "owner and description longer than 255 bytes"),
          "long owner: %s", msgs);
    policy_maps_unref(m);
    free(msgs);

    /* sender_logins entries for domains not hosted: warnings, capped */
    n = 0;
    for (int i = 0; i < POLICY_WARNINGS_MAX + 5; i++)
        n += (size_t)sprintf(text + n, "@d%d.example x\n", i);
    m = parse_maps("a.example\n", text, NULL, &problems, &msgs);
    CHECK(problems == 0, "cross warnings are not problems: %d", problems);
    CHECK(strstr(msgs, "logins:1: warning: d0.example is not in hosted_domains: the entry "
                       "has no effect (mail from it is relaying)\n") &&
          strstr(msgs, "logins: warning: 5 more warnings not shown\n") &&
          !strstr(msgs, "d24.example"), "cross warnings: %s", msgs);
    policy_maps_unref(m);
    free(msgs);
    free(text);
}

/* test_lookups - the lookups alone. */
static void test_lookups(void)
{
    CHECK(policy_domain_hosted(pm, "hosted.example"), "hosted");
    CHECK(policy_domain_hosted(pm, "HOSTED.EXAMPLE."), "hosted, folded");
    CHECK(policy_domain_hosted(pm, "example.org"), "Example.ORG. as written in the file");
    CHECK(policy_domain_hosted(pm, "B\xc3\xbc" "cher.example") &&
          policy_domain_hosted(pm, "b\xc3\x9c" "cher.example") &&
          policy_domain_hosted(pm, "B\xc3\x9c" "CHER.EXAMPLE."), "Unicode case folded (UTS #46)");
    CHECK(policy_domain_hosted(pm, "xn--bcher-kva.example") &&
          policy_domain_hosted(pm, "XN--BCHER-KVA.example."), "U-label in the file, A-label");
    CHECK(policy_domain_hosted(pm, "m\xc3\xbc" "ller.example") &&
          policy_domain_hosted(pm, "xn--mller-kva.example"), "A-label in the file, U-label");
    CHECK(policy_domain_hosted(pm, "hosted\xef\xbc\x8e" "example"),
          "a full-width full stop is a dot (UTS #46)");
    CHECK(!policy_domain_hosted(pm, "a\xe2\x9d\xa4.example") &&
          !policy_domain_hosted(pm, "\xcc\x81" "bc.example") &&
          !policy_domain_hosted(pm, "b\xc3.example"), "no A-label form: not hosted");
    char key[POLICY_DOMAIN_BYTES_MAX + 1];
    CHECK(policy_domain_key("B\xc3\x9c" "CHER.Example.", key) &&
          strcmp(key, "xn--bcher-kva.example") == 0, "key %s", key);
    CHECK(policy_domain_key("Hosted.Example", key) && strcmp(key, "hosted.example") == 0,
          "ASCII key %s", key);
    CHECK(!policy_domain_key("a\xe2\x9d\xa4.example", key) && !policy_domain_key("", key) &&
          !policy_domain_key(".", key), "no key");
    CHECK(!policy_domain_hosted(pm, ""), "empty");
    CHECK(!policy_domain_hosted(pm, "."), "dot");
    CHECK(!policy_domain_hosted(pm, "hosted.example.."), "two dots");
    CHECK(!policy_domain_hosted(NULL, "hosted.example"), "no maps");
    CHECK(policy_sender_owner(pm, "alice@hosted.example", "Alice") == POLICY_OWNER_LOGIN,
          "owner");
    CHECK(policy_sender_owner(pm, "alice@hosted.example", "bob") == POLICY_OWNER_OTHER,
          "exact entry wins over @domain");
    CHECK(policy_sender_owner(pm, "x@nobody.example", "alice") == POLICY_OWNER_NONE, "none");
    CHECK(policy_sender_owner(pm, "nodomain", "alice") == POLICY_OWNER_NONE, "no @");
    CHECK(policy_sender_owner(pm, "x@hosted.example", "bo") == POLICY_OWNER_OTHER &&
          policy_sender_owner(pm, "x@hosted.example", "bobb") == POLICY_OWNER_OTHER,
          "login prefixes do not match");
    CHECK(policy_sender_owner(pm, "info@xn--bcher-kva.example", "dave") == POLICY_OWNER_LOGIN &&
          policy_sender_owner(pm, "x@m\xc3\xbc" "ller.example", "erin") == POLICY_OWNER_LOGIN &&
          policy_sender_owner(pm, "x@a\xe2\x9d\xa4.example", "erin") == POLICY_OWNER_NONE,
          "owners across spellings");
    CHECK(policy_maps_count(pm, POLICY_MAP_HOSTED) == 5 &&
          policy_maps_count(pm, POLICY_MAP_LOGINS) == 7 &&
          policy_maps_count(pm, POLICY_MAP_REGISTRY) == 6, "counts");
    struct policy_maps *r = policy_maps_ref(pm);
    policy_maps_unref(r);
    CHECK(policy_domain_hosted(pm, "hosted.example"), "still there after ref/unref");
}

/* test_resources - -t: resources_load() reports bad map lines as FILE:LINE and counts them;
 * a good set loads; a missing file is a problem. */
static void test_resources(void)
{
    struct rr_config c;
    char text[4096], *errs = NULL, line[1024];
    size_t size;
    int problems;

    write_file(path_in("domains"), "hosted.example\nbad domain\n");
    write_file(path_in("logins"), "@hosted.example alice\nnot-an-address bob\n");
    write_file(path_in("hosts"), "192.0.2.0/24 ACME\n192.0.2.0/99 X\n");
    snprintf(text, sizeof(text), "[relay]\ntls = none\n[policy]\nhosted_domains = %s\n"
             "sender_logins = %s\nhost_registry = %s\n", path_in("domains"), path_in("logins"),
             path_in("hosts"));
    problems = load_text(&c, text, NULL, 0, &errs);
    CHECK(problems == 0, "config: %s", errs);
    free(errs);
    FILE *e = open_memstream(&errs, &size);
    problems = resources_load(&c, e);
    fclose(e);
    CHECK(problems == 3, "resources: %d problems\n%s", problems, errs);
    snprintf(line, sizeof(line), "%s:2: expected one domain per line", path_in("domains"));
    CHECK(has_line(errs, line), "%s in\n%s", line, errs);
    snprintf(line, sizeof(line), "%s:2: 'not-an-address' is not an address or @domain",
             path_in("logins"));
    CHECK(has_line(errs, line), "%s in\n%s", line, errs);
    snprintf(line, sizeof(line), "%s:2: '192.0.2.0/99' is not a network (address/prefix)",
             path_in("hosts"));
    CHECK(has_line(errs, line), "%s in\n%s", line, errs);
    CHECK(c.policy_maps && policy_maps_count(c.policy_maps, POLICY_MAP_HOSTED) == 1,
          "attached to the configuration");
    free(errs);
    config_free(&c);

    /* good files: no problems, no output */
    write_file(path_in("domains"), "hosted.example\n");
    write_file(path_in("logins"), "@hosted.example alice\n");
    write_file(path_in("hosts"), "192.0.2.0/24 ACME\n");
    problems = load_text(&c, text, NULL, 0, &errs);
    free(errs);
    e = open_memstream(&errs, &size);
    problems = resources_load(&c, e);
    fclose(e);
    CHECK(problems == 0 && errs[0] == '\0', "good maps: %d\n%s", problems, errs);
    free(errs);
    config_free(&c);

    /* a map that cannot be read */
    unlink(path_in("hosts"));
    problems = load_text(&c, text, NULL, 0, &errs);
    free(errs);
    e = open_memstream(&errs, &size);
    problems = resources_load(&c, e);
    fclose(e);
    snprintf(line, sizeof(line), "%s: cannot read: No such file or directory",
             path_in("hosts"));
    CHECK(problems == 1 && has_line(errs, line), "missing map: %d\n%s", problems, errs);
    free(errs);
    config_free(&c);

    /* no map configured: nothing attached */
    problems = load_text(&c, "[relay]\ntls = none\n", NULL, 0, &errs);
    free(errs);
    CHECK(resources_load(&c, NULL) == 0 && c.policy_maps == NULL, "no maps, nothing attached");
    config_free(&c);

    /* [policy] rate_window and relay_help */
    problems = load_text(&c, "[policy]\nrate_window = 2s\nrelay_help = see "
                         "https://help.example.net/#relay\n", NULL, 0, &errs);
    CHECK(problems == 0 && c.rate_window_s == 2 &&
          strcmp(c.relay_help, "see https://help.example.net/#relay") == 0,
          "rate_window, relay_help: %s", errs);
    free(errs);
    config_free(&c);
    problems = load_text(&c, "[policy]\nrate_window = 0\nrelay_help = caf\xc3\xa9\n", NULL, 0,
                         &errs);
    CHECK(problems == 2, "bad rate_window, relay_help: %s", errs);
    free(errs);
    config_free(&c);
    problems = load_text(&c, "", NULL, 0, &errs);
    CHECK(c.rate_window_s == 3600 && c.relay_help[0] == '\0', "defaults");
    free(errs);
    config_free(&c);
}

int main(void)
{
    char *msgs = NULL;
    int problems;

    if (!config_test_setup())
        return 2;
    if (config_load_stream(&cfg, NULL, NULL, NULL, 0, NULL)) {
        fprintf(stderr, "defaults do not load\n");
        return 2;
    }
    strcpy(cfg.hostname, "relay.example.net");
    strcpy(cfg.relay_help, "https://help.example.net/relay");
    cfg.relay_enforce_after = ENFORCE;

    pm = parse_maps(hosted_text, logins_text, registry_text, &problems, &msgs);
    CHECK(problems == 0 && msgs[0] == '\0', "test maps: %d\n%s", problems, msgs);
    free(msgs);
    pm_hosted_only = parse_maps(hosted_text, NULL, NULL, &problems, &msgs);
    CHECK(problems == 0, "hosted-only maps: %s", msgs);
    free(msgs);

    test_sender_rows();
    test_sender_edges();
    test_relay_rows();
    test_registry_rows();
    test_map_rows();
    test_map_limits();
    test_lookups();
    test_resources();

    policy_maps_unref(pm);
    policy_maps_unref(pm_hosted_only);
    config_free(&cfg);
    config_test_cleanup();
    return check_done("test_policy");
}
