/*
 * test_config.c - unit tests of core/config.c: whole files written to a temporary directory
 * (defaults, every key, every kind of error with its exact "FILE:LINE: " prefix) and -o
 * overrides. The -t file checks (core/config_check.c) are tested in test_config_check.c, the
 * value parsers and network matching in test_config_value.c.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "tests/unit/check.h"
#include "tests/unit/config_cmp.h"
#include "tests/unit/config_test_util.h"

/* fline - "conf_path:LINE: msg" */
static const char *fline(unsigned line, const char *msg)
{
    static char buf[8192];
    snprintf(buf, sizeof(buf), "%s:%u: %s", conf_path, line, msg);
    return buf;
}

/* What a malformed [relay] source_addresses entry is told it should look like. */
#define SOURCE_EXPECTED "an address without a port, optionally with %INTERFACE (1.2.3.4, " \
    "2001:db8::1, 1.2.3.4%eth1 or [2001:db8::1]%eth1; fe80:: addresses need the interface)"

/* ---------------------------------------------------------------------------------------- */

static void test_defaults(void)
{
    struct rr_config cfg;
    char host[256] = "", where[512];
    size_t size;
    char *errs = NULL;
    FILE *e = open_memstream(&errs, &size);
    int problems = config_load(&cfg, NULL, NULL, 0, e);
    fclose(e);

    gethostname(host, sizeof(host));
    CHECK(problems == 0, "defaults: %d problems: %s", problems, errs);
    CHECK(cfg.path == NULL, "no path");
    CHECK(strcmp(cfg.hostname, host) == 0, "hostname '%s'", cfg.hostname);
    CHECK(cfg.workers == 0, "workers");
    CHECK(strcmp(cfg.spool_dir, "./spool") == 0, "spool_dir");
    CHECK(addr_is(&cfg.metrics_listen, AF_INET, "127.0.0.1", 9425), "metrics_listen");
    CHECK(strcmp(cfg.control_socket, "/run/ringrelay/control.sock") == 0, "control_socket");
    CHECK(cfg.user[0] == '\0', "user");
    CHECK(cfg.spool_min_free_bytes == 64ULL << 20, "spool_min_free");
    CHECK(cfg.segment_bytes_max == 64ULL << 20, "segment_size");
    CHECK(cfg.listener_count == 1, "one listener");
    CHECK(strcmp(cfg.listeners[0].name, "default") == 0, "default listener name");
    CHECK(cfg.listeners[0].addr_count == 1 &&
          addr_is(&cfg.listeners[0].addrs[0], AF_INET, "127.0.0.1", 2525), "default listen");
    CHECK(cfg.listeners[0].tls == TLS_NONE && cfg.listeners[0].auth == AUTH_NONE, "tls/auth");
    CHECK(!cfg.tls_cert[0] && !cfg.tls_key[0], "tls");
    CHECK(!cfg.passwd_file[0] && !cfg.dovecot_socket[0], "auth files");
    CHECK(!cfg.auth_plaintext && cfg.auth_failures_max == 3, "auth");
    CHECK(cfg.message_bytes_max == 35ULL << 20, "max_message_size");
    CHECK(cfg.rcpt_count_max == 50, "max_recipients");
    CHECK(cfg.idle_timeout_ms == 300000, "idle_timeout");
    CHECK(cfg.data_timeout_ms == 600000, "data_timeout");
    CHECK(cfg.min_data_rate == 1024, "min_data_rate");
    CHECK(cfg.greeting_delay_ms == 0, "greeting_delay");
    CHECK(cfg.line_endings == LINE_ENDINGS_REJECT, "bare_line_endings");
    CHECK(cfg.errors_max == 10, "max_errors");
    CHECK(cfg.connections_max == 10000, "max_connections");
    CHECK(!cfg.hosted_domains[0] && !cfg.sender_logins[0] && !cfg.notify_template[0] &&
          !cfg.host_registry[0], "policy files");
    CHECK(cfg.trusted_network_count == 2 &&
          net_is(&cfg.trusted_networks[0], AF_INET, "127.0.0.0", 8) &&
          net_is(&cfg.trusted_networks[1], AF_INET6, "::1", 128), "trusted_networks");
    CHECK(cfg.relay_mode == RELAY_NOTIFY, "relay_mode");
    CHECK(cfg.relay_enforce_after == 1388534400, "relay_enforce_after");
    CHECK(cfg.notify_interval_s == 86400, "notify_interval");
    CHECK(cfg.user_hourly_messages == 0 && cfg.user_hourly_recipients == 0 &&
          cfg.ip_hourly_messages == 0, "hourly");
    CHECK(cfg.smarthost[0] == '\0', "smarthost");
    CHECK(cfg.dns_server_count == 0 && cfg.source_address_count == 0, "relay lists");
    CHECK(cfg.relay_tls == RELAY_TLS_MAY, "relay tls");
    CHECK(cfg.relay_chunking, "chunking");
    CHECK(cfg.retry_min_s == 300 && cfg.retry_max_s == 14400, "retry");
    CHECK(cfg.queue_lifetime_s == 432000, "queue_lifetime");
    CHECK(cfg.bpf == BPF_AUTO && cfg.bpf_connections_per_ip_max == 50 &&
          cfg.bpf_connects_per_ip_per_s_max == 20, "bpf");
    CHECK(config_where(&cfg, "limits", "max_recipients", where, sizeof(where)) &&
          strcmp(where, "(default):0") == 0, "where default: %s", where);
    CHECK(config_where(&cfg, "listener.default", "listen", where, sizeof(where)) &&
          strcmp(where, "(default):0") == 0, "where default listener: %s", where);
    CHECK(config_where(&cfg, "limits", "nope", where, sizeof(where)) == NULL, "where unknown");
    CHECK(config_where(&cfg, "listener.none", "listen", where, sizeof(where)) == NULL,
          "where unknown listener");
    free(errs);
    config_free(&cfg);
    CHECK(cfg.path == NULL && cfg.listener_count == 0, "config_free clears");

    /* an empty file: the same defaults, the file named as FILE */
    CHECK(load_text(&cfg, "", NULL, 0, &errs) == 0, "empty file: %s", errs);
    CHECK(cfg.path && strcmp(cfg.path, conf_path) == 0, "path kept");
    CHECK(cfg.listener_count == 1 && strcmp(cfg.listeners[0].name, "default") == 0,
          "empty file: default listener");
    char expect[512];
    snprintf(expect, sizeof(expect), "%s:0", conf_path);
    CHECK(config_where(&cfg, "server", "workers", where, sizeof(where)) &&
          strcmp(where, expect) == 0, "where in file: %s", where);
    free(errs);
    config_free(&cfg);
}

static const char full_file[] =
    "\xEF\xBB\xBF# every key, in every section\r\n"
    "[server]\r\n"
    "hostname        = relay.example.net   # greeting and EHLO name\n"
    "workers         = 4\n"
    "spool_dir       = /var/spool/ring#relay ; '#' inside a value stays\n"
    "metrics_listen  = [::1]:9100\n"
    "control_socket  = /run/rr/ctl.sock\n"
    "user            = ringrelay\n"
    "  spool_min_free = 1G\n"                    /* indented: a key, not a continuation */
    "segment_size    = 128M\n"
    "\n"
    "; listeners\n"
    "[listener.smtp]\n"
    "listen = 0.0.0.0:25, [::]:25\n"
    "[listener.submission]\n"
    "listen = 0.0.0.0:587 [::]:587,,127.0.0.1:10587\n"
    "tls = starttls\n"
    "auth = required\n"
    "[listener.smtps]\n"
    "listen = 0.0.0.0:465\n"
    "tls = IMPLICIT\n"
    "auth = optional\n"
    "[tls]\n"
    "cert = /etc/ringrelay/cert.pem\n"
    "key = /etc/ringrelay/key.pem\n"
    "[auth]\n"
    "passwd_file = /etc/dovecot/users\n"
    "dovecot_socket =                     # instead of passwd_file\n"
    "plaintext = yes\n"
    "max_failures = 5\n"
    "[limits]\n"
    "max_message_size = 50M\n"
    "max_recipients = 100\n"
    "idle_timeout = 2m\n"
    "data_timeout = 1h\n"
    "min_data_rate = 512\n"
    "greeting_delay = 1500ms\n"
    "bare_line_endings = normalize\n"
    "max_errors = 20\n"
    "max_connections = 5000\n"
    "[policy]\n"
    "hosted_domains = /etc/ringrelay/domains\n"
    "sender_logins = /etc/ringrelay/logins\n"
    "trusted_networks = 10.0.0.0/8, 2001:db8::/32 192.168.1.7\n"
    "relay_mode = reject\n"
    "relay_enforce_after = 2020-02-29\n"
    "notify_template = /etc/ringrelay/notice.txt\n"
    "notify_interval = 12h\n"
    "host_registry = /etc/ringrelay/hosts\n"
    "user_hourly_messages = 100\n"
    "user_hourly_recipients = 1000\n"
    "ip_hourly_messages = 4294967295\n"
    "[relay]\n"
    "smarthost = mail.example.net\n"
    "dns_servers = 1.1.1.1, [2606:4700::1111]:5353\n"
    "source_addresses = 192.0.2.1 2001:db8::25%eth1\n"
    "tls = verify\n"
    "retry_min = 1m\n"
    "retry_max = 2h\n"
    "queue_lifetime = 3d\n"
    "chunking = no\n"
    "[bpf]\n"
    "enabled = no\n"
    "max_connections_per_ip = 10\n"
    "max_connects_per_ip_per_s = 5\n";

static void test_every_key(void)
{
    struct rr_config cfg;
    char *errs = NULL, where[512], expect[512];
    int problems = load_text(&cfg, full_file, NULL, 0, &errs);

    CHECK(problems == 0, "every key: %d problems:\n%s", problems, errs);
    CHECK(strcmp(cfg.hostname, "relay.example.net") == 0, "hostname '%s'", cfg.hostname);
    CHECK(cfg.workers == 4, "workers");
    CHECK(strcmp(cfg.spool_dir, "/var/spool/ring#relay") == 0, "spool_dir '%s'", cfg.spool_dir);
    CHECK(addr_is(&cfg.metrics_listen, AF_INET6, "::1", 9100), "metrics_listen");
    CHECK(strcmp(cfg.control_socket, "/run/rr/ctl.sock") == 0, "control_socket");
    CHECK(strcmp(cfg.user, "ringrelay") == 0, "user");
    CHECK(cfg.spool_min_free_bytes == 1ULL << 30, "spool_min_free");
    CHECK(cfg.segment_bytes_max == 128ULL << 20, "segment_size");

    CHECK(cfg.listener_count == 3, "listeners %u", cfg.listener_count);
    const struct config_listener *l = &cfg.listeners[0];
    CHECK(strcmp(l->name, "smtp") == 0 && l->addr_count == 2 &&
          addr_is(&l->addrs[0], AF_INET, "0.0.0.0", 25) &&
          addr_is(&l->addrs[1], AF_INET6, "::", 25) && l->tls == TLS_NONE &&
          l->auth == AUTH_NONE, "listener smtp");
    l = &cfg.listeners[1];
    CHECK(strcmp(l->name, "submission") == 0 && l->addr_count == 3 &&
          addr_is(&l->addrs[2], AF_INET, "127.0.0.1", 10587) && l->tls == TLS_STARTTLS &&
          l->auth == AUTH_REQUIRED, "listener submission");
    l = &cfg.listeners[2];
    CHECK(strcmp(l->name, "smtps") == 0 && l->addr_count == 1 && l->tls == TLS_IMPLICIT &&
          l->auth == AUTH_OPTIONAL, "listener smtps");

    CHECK(strcmp(cfg.tls_cert, "/etc/ringrelay/cert.pem") == 0, "cert");
    CHECK(strcmp(cfg.tls_key, "/etc/ringrelay/key.pem") == 0, "key");
    CHECK(strcmp(cfg.passwd_file, "/etc/dovecot/users") == 0, "passwd_file");
    CHECK(cfg.dovecot_socket[0] == '\0', "dovecot_socket empty");
    CHECK(cfg.auth_plaintext && cfg.auth_failures_max == 5, "auth");
    CHECK(cfg.message_bytes_max == 50ULL << 20, "max_message_size");
    CHECK(cfg.rcpt_count_max == 100, "max_recipients");
    CHECK(cfg.idle_timeout_ms == 120000, "idle_timeout");
    CHECK(cfg.data_timeout_ms == 3600000, "data_timeout");
    CHECK(cfg.min_data_rate == 512, "min_data_rate");
    CHECK(cfg.greeting_delay_ms == 1500, "greeting_delay");
    CHECK(cfg.line_endings == LINE_ENDINGS_NORMALIZE, "bare_line_endings");
    CHECK(cfg.errors_max == 20 && cfg.connections_max == 5000, "errors/connections");
    CHECK(strcmp(cfg.hosted_domains, "/etc/ringrelay/domains") == 0, "hosted_domains");
    CHECK(strcmp(cfg.sender_logins, "/etc/ringrelay/logins") == 0, "sender_logins");
    CHECK(cfg.trusted_network_count == 3 &&
          net_is(&cfg.trusted_networks[0], AF_INET, "10.0.0.0", 8) &&
          net_is(&cfg.trusted_networks[1], AF_INET6, "2001:db8::", 32) &&
          net_is(&cfg.trusted_networks[2], AF_INET, "192.168.1.7", 32), "trusted_networks");
    CHECK(cfg.relay_mode == RELAY_REJECT, "relay_mode");
    CHECK(cfg.relay_enforce_after == 1582934400, "relay_enforce_after %lld",
          (long long)cfg.relay_enforce_after);
    CHECK(strcmp(cfg.notify_template, "/etc/ringrelay/notice.txt") == 0, "notify_template");
    CHECK(cfg.notify_interval_s == 43200, "notify_interval");
    CHECK(strcmp(cfg.host_registry, "/etc/ringrelay/hosts") == 0, "host_registry");
    CHECK(cfg.user_hourly_messages == 100 && cfg.user_hourly_recipients == 1000 &&
          cfg.ip_hourly_messages == UINT32_MAX, "hourly");
    CHECK(strcmp(cfg.smarthost, "mail.example.net:25") == 0, "smarthost '%s'", cfg.smarthost);
    CHECK(cfg.dns_server_count == 2 &&
          addr_is(&cfg.dns_servers[0], AF_INET, "1.1.1.1", 53) &&
          addr_is(&cfg.dns_servers[1], AF_INET6, "2606:4700::1111", 5353), "dns_servers");
    CHECK(cfg.source_address_count == 2 &&
          addr_is(&cfg.source_addresses[0].addr, AF_INET, "192.0.2.1", 0) &&
          cfg.source_addresses[0].ifname[0] == '\0' &&
          addr_is(&cfg.source_addresses[1].addr, AF_INET6, "2001:db8::25", 0) &&
          strcmp(cfg.source_addresses[1].ifname, "eth1") == 0, "source_addresses");
    CHECK(cfg.relay_tls == RELAY_TLS_VERIFY, "relay tls");
    CHECK(cfg.retry_min_s == 60 && cfg.retry_max_s == 7200, "retry");
    CHECK(cfg.queue_lifetime_s == 259200, "queue_lifetime");
    CHECK(!cfg.relay_chunking, "chunking");
    CHECK(cfg.bpf == BPF_NO && cfg.bpf_connections_per_ip_max == 10 &&
          cfg.bpf_connects_per_ip_per_s_max == 5, "bpf");

    /* line numbers per key */
    static const struct { const char *section, *key; unsigned line; } lines[] = {
        { "server", "hostname", 3 }, { "server", "spool_min_free", 9 },
        { "listener.submission", "tls", 17 }, { "listener.smtps", "listen", 20 },
        { "listener.smtp", "tls", 0 }, { "tls", "key", 25 }, { "auth", "dovecot_socket", 28 },
        { "relay", "tls", 57 }, { "relay", "chunking", 61 },
        { "bpf", "max_connects_per_ip_per_s", 65 },
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        snprintf(expect, sizeof(expect), "%s:%u", conf_path, lines[i].line);
        const char *w = config_where(&cfg, lines[i].section, lines[i].key, where, sizeof(where));
        CHECK(w && strcmp(w, expect) == 0, "where %s.%s: %s, want %s", lines[i].section,
              lines[i].key, w ? w : "NULL", expect);
    }
    free(errs);
    config_free(&cfg);
}

/* One file, the problems it must produce: each expected line exactly, and no others. */
struct error_case {
    const char *text;
    unsigned count;
    const char *lines[4];       /* "LINE: message", prefixed with the path by the test */
};

static const struct error_case error_cases[] = {
    /* structure */
    { "[server]\nfoo = 1\n", 1, { "2: unknown key 'foo' in section [server]" } },
    { "[server]\nmax_recipients = 5\n", 1,
      { "2: unknown key 'max_recipients' in section [server]" } },
    { "[nope]\nx = 1\ny = 2\n", 1, { "1: unknown section [nope]" } },
    { "[listener]\nlisten = 1.2.3.4:25\n", 1, { "1: unknown section [listener]" } },
    { "[Server]\n", 1, { "1: unknown section [Server]" } },
    { "x = 1\n[server]\n", 1, { "1: key 'x' before any [section]" } },
    { "[server]\ngarbage line\n", 1, { "2: expected 'key = value', '[section]' or a comment" } },
    { "[server]\n= 5\n", 1, { "2: expected 'key = value', '[section]' or a comment" } },
    { "[server\n", 1, { "1: expected ']' at the end of the section header" } },
    { "[server] # ok\n[limits ; no]\n", 1, { "2: expected ']' at the end of the section header" } },
    { "[server]\nhost:name = x\n", 1, { "2: expected 'key = value': a key has no ':'" } },
    { "[server]\nworkers = 1\nworkers = 2\n", 1,
      { "3: workers: set twice in [server] (first at line 2)" } },
    { "[server]\nuser = a\x01" "b\n", 1, { "2: control character 0x01 in line" } },
    { "[server]\n\nbad\n  # comment\nworse\n", 2,
      { "3: expected 'key = value', '[section]' or a comment",
        "5: expected 'key = value', '[section]' or a comment" } },
    /* values, one per type */
    { "[server]\nworkers = many\n", 1, { "2: workers: 'many' is not a whole number" } },
    { "[server]\nworkers = -1\n", 1, { "2: workers: '-1' is not a whole number" } },
    { "[server]\nworkers = 65\n", 1, { "2: workers: 65 is out of range (0..64)" } },
    { "[limits]\nmax_recipients = 0\n", 1,
      { "2: max_recipients: 0 is out of range (1..1000)" } },
    { "[limits]\nidle_timeout = 5 minutes\n", 1,
      { "2: idle_timeout: '5 minutes' is not a duration (a number with s, m, h, d or ms; "
        "bare = seconds)" } },
    { "[limits]\nidle_timeout = 2d\n", 1, { "2: idle_timeout: 2d is out of range (100ms..1d)" } },
    { "[limits]\nmax_message_size = 35 MB\n", 1,
      { "2: max_message_size: '35 MB' is not a size (a number of bytes, optionally with K, M "
        "or G)" } },
    { "[limits]\nmax_message_size = 5G\n", 1,
      { "2: max_message_size: 5G is out of range (1K..4G)" } },
    { "[relay]\nretry_min = 1500ms\n", 1, { "2: retry_min: 1500ms is not a whole number of seconds" } },
    { "[auth]\nplaintext = maybe\n", 1,
      { "2: plaintext: 'maybe' is not yes, no, true, false, on, off, 1 or 0" } },
    { "[policy]\nrelay_mode = sometimes\n", 1,
      { "2: relay_mode: 'sometimes' is not one of allow | notify | reject" } },
    { "[relay]\ntls = always\n", 1, { "2: tls: 'always' is not one of may | none | encrypt | verify" } },
    { "[bpf]\nenabled = maybe\n", 1, { "2: enabled: 'maybe' is not one of auto | yes | no" } },
    { "[limits]\nbare_line_endings = fix\n", 1,
      { "2: bare_line_endings: 'fix' is not one of reject | normalize" } },
    { "[listener.a]\nlisten = 127.0.0.1:25\ntls = sometimes\n", 1,
      { "3: tls: 'sometimes' is not one of none | starttls | implicit" } },
    { "[listener.a]\nlisten = 127.0.0.1:25\nauth = always\n", 1,
      { "3: auth: 'always' is not one of none | optional | required" } },
    { "[listener.a]\nlisten = localhost:25\n", 2,
      { "2: listen: 'localhost:25' is not ADDRESS:PORT (1.2.3.4:25 or [::1]:25, numeric, no "
        "host names)", "1: [listener.a]: listen is required" } },
    { "[listener.a]\nlisten =\n", 2,
      { "2: listen: needs at least 1 address", "1: [listener.a]: listen is required" } },
    { "[listener.a]\nfoo = 1\nlisten = 127.0.0.1:25\n", 1,
      { "2: unknown key 'foo' in section [listener.a]" } },
    { "[server]\nmetrics_listen = 127.0.0.1\n", 1,
      { "2: metrics_listen: '127.0.0.1' is not ADDRESS:PORT (1.2.3.4:25 or [::1]:25, numeric, "
        "no host names)" } },
    { "[relay]\ndns_servers = 1.1.1.1, dns.google\n", 1,
      { "2: dns_servers: 'dns.google' is not ADDRESS[:PORT] (1.2.3.4, 1.2.3.4:53 or [::1]:53, "
        "numeric)" } },
    { "[relay]\nsource_addresses = 192.0.2.1:25\n", 1,
      { "2: source_addresses: '192.0.2.1:25' is not " SOURCE_EXPECTED } },
    { "[relay]\nsource_addresses = 1.0.0.1 1.0.0.2 1.0.0.3 1.0.0.4 1.0.0.5 1.0.0.6 1.0.0.7 "
      "1.0.0.8 1.0.0.9 1.0.0.10 1.0.0.11 1.0.0.12 1.0.0.13 1.0.0.14 1.0.0.15 1.0.0.16 1.0.0.17\n",
      1, { "2: source_addresses: too many entries (max 16)" } },
    { "[policy]\ntrusted_networks = 10.0.0.0/33\n", 1,
      { "2: trusted_networks: '10.0.0.0/33' is not a network (1.2.3.0/24, 2001:db8::/32 or an "
        "address)" } },
    { "[policy]\nrelay_enforce_after = 2014-02-30\n", 1,
      { "2: relay_enforce_after: '2014-02-30' is not a date YYYY-MM-DD (1970 or later)" } },
    { "[server]\nhostname = bad_name.example\n", 1,
      { "2: hostname: 'bad_name.example' is not a plausible domain name (labels of A-Z a-z 0-9 "
        "-, separated by dots)" } },
    { "[server]\nhostname = 10.0.0.1\n", 1,
      { "2: hostname: '10.0.0.1' is not a plausible domain name (labels of A-Z a-z 0-9 -, "
        "separated by dots)" } },
    { "[server]\nhostname =\n", 1, { "2: hostname: must not be empty" } },
    { "[server]\nspool_dir = # nothing\n", 1, { "2: spool_dir: must not be empty" } },
    { "[server]\nuser = root user\n", 1,
      { "2: user: 'root user' is not a user name (A-Z a-z 0-9 . _ -)" } },
    { "[server]\nuser = -rf\n", 1, { "2: user: '-rf' is not a user name (starts with '-')" } },
    { "[relay]\nsmarthost = 2001:db8::1:25\n", 1,
      { "2: smarthost: '2001:db8::1:25' is not host[:port] or [address][:port]" } },
    { "[relay]\nsmarthost = mail.example.net:0\n", 1,
      { "2: smarthost: 'mail.example.net:0' is not host[:port] or [address][:port]" } },
    /* listeners */
    { "[listener.a.b]\nlisten = 127.0.0.1:25\n", 1,
      { "1: [listener.a.b]: a listener name is 1..63 of A-Z a-z 0-9 _ -" } },
    { "[listener.]\n", 1, { "1: [listener.]: a listener name is 1..63 of A-Z a-z 0-9 _ -" } },
    { "[listener.x]\ntls = none\n", 1, { "1: [listener.x]: listen is required" } },
    /* cross-key */
    { "[relay]\nretry_max = 1m\n", 1, { "2: retry_min (5m) is above retry_max (1m)" } },
    { "[relay]\nretry_max = 1m\nretry_min = 2m\n", 1,
      { "3: retry_min (2m) is above retry_max (1m)" } },
    { "[listener.a]\nlisten = 127.0.0.1:25\ntls = starttls\n[tls]\ncert = /c.pem\n", 1,
      { "3: tls: starttls on [listener.a] needs [tls] cert and key" } },
    { "[listener.a]\nlisten = 127.0.0.1:25\nauth = required\n", 1,
      { "3: auth: required on [listener.a] needs [auth] passwd_file or dovecot_socket" } },
    { "[auth]\npasswd_file = /p\ndovecot_socket = /s\n", 1,
      { "3: set [auth] passwd_file or dovecot_socket, not both" } },
    { "[listener.a]\nlisten = 0.0.0.0:25\n[listener.b]\nlisten = 127.0.0.1:26, 0.0.0.0:25\n", 1,
      { "4: listen: 0.0.0.0:25 is already used by [listener.a]" } },
    { "[listener.a]\nlisten = [::]:25 [::0]:25\n", 1,
      { "2: listen: [::]:25 is already used by [listener.a]" } },
    { "[listener.a]\nlisten = 127.0.0.1:9425\n", 1,
      { "2: metrics_listen: 127.0.0.1:9425 is also a listen address of [listener.a]" } },
};

static void test_errors(void)
{
    char line[8192];

    for (size_t i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
        const struct error_case *c = &error_cases[i];
        struct rr_config cfg;
        char *errs = NULL;
        int problems = load_text(&cfg, c->text, NULL, 0, &errs);

        CHECK(problems == (int)c->count, "case %zu: %d problems, want %u:\n%s", i, problems,
              c->count, errs);
        for (unsigned j = 0; j < c->count; j++) {
            snprintf(line, sizeof(line), "%s:%s", conf_path, c->lines[j]);
            CHECK(has_line(errs, line), "case %zu: missing '%s' in:\n%s", i, line, errs);
        }
        free(errs);
        config_free(&cfg);
    }
}

static void test_file_edges(void)
{
    struct rr_config cfg;
    char *errs = NULL;
    char name63[64], name64[65], text[16384];

    /* a missing file */
    size_t size;
    FILE *e = open_memstream(&errs, &size);
    const char *missing = path_in("does-not-exist.conf");
    int problems = config_load(&cfg, missing, NULL, 0, e);
    fclose(e);
    char expect[1024];
    snprintf(expect, sizeof(expect), "%s:0: cannot open: No such file or directory", missing);
    CHECK(problems == 1 && has_line(errs, expect), "missing file: %s", errs);
    free(errs);
    config_free(&cfg);

    /* a directory as the file */
    e = open_memstream(&errs, &size);
    problems = config_load(&cfg, tmpdir, NULL, 0, e);
    fclose(e);
    CHECK(problems == 1 && strstr(errs, "read error: Is a directory"), "directory: %s", errs);
    free(errs);
    config_free(&cfg);

    /* listener names of 63 bytes (longer than inih's 49-byte sections) pass, 64 do not */
    memset(name63, 'n', 63);
    name63[63] = '\0';
    memset(name64, 'x', 64);
    name64[64] = '\0';
    snprintf(text, sizeof(text), "[listener.%s]\nlisten = 127.0.0.1:2600\n"
             "[listener.%s]\nlisten = 127.0.0.1:2601\n", name63, name64);
    problems = load_text(&cfg, text, NULL, 0, &errs);
    snprintf(expect, sizeof(expect), "%s:3: [listener.%s]: a listener name is 1..63 of "
             "A-Z a-z 0-9 _ -", conf_path, name64);
    CHECK(problems == 1 && has_line(errs, expect), "name64: %s", errs);
    CHECK(cfg.listener_count == 1 && strcmp(cfg.listeners[0].name, name63) == 0,
          "name63 listener");
    free(errs);
    config_free(&cfg);

    /* two listeners whose names share the first 49 bytes of the section stay apart */
    snprintf(text, sizeof(text), "[listener.%s]\nlisten = 127.0.0.1:2600\n"
             "[listener.%.62sm]\nlisten = 127.0.0.1:2601\n", name63, name63);
    problems = load_text(&cfg, text, NULL, 0, &errs);
    CHECK(problems == 0 && cfg.listener_count == 2, "long names: %d %s", problems, errs);
    free(errs);
    config_free(&cfg);

    /* too many listeners */
    size_t used = 0;
    for (int i = 0; i < CONFIG_LISTENERS_MAX + 1; i++)
        used += (size_t)snprintf(text + used, sizeof(text) - used,
                                 "[listener.l%d]\nlisten = 127.0.0.1:%d\n", i, 3000 + i);
    problems = load_text(&cfg, text, NULL, 0, &errs);
    CHECK(problems == 1 && has_line(errs, fline(33, "[listener.l16]: too many listeners (max 16)")),
          "too many listeners: %s", errs);
    CHECK(cfg.listener_count == CONFIG_LISTENERS_MAX, "listener count");
    free(errs);
    config_free(&cfg);

    /* a line over CONFIG_LINE_BYTES_MAX, then a good line whose number is still right */
    memcpy(text, "[server]\nuser = ", 16);
    memset(text + 16, 'u', 5000);
    snprintf(text + 5016, sizeof(text) - 5016, "\nworkers = x\n");
    problems = load_text(&cfg, text, NULL, 0, &errs);
    CHECK(problems == 2 && has_line(errs, fline(2, "line too long (max 4096 bytes)")) &&
          has_line(errs, fline(3, "workers: 'x' is not a whole number")), "long line: %s", errs);
    free(errs);
    config_free(&cfg);

    /* a path value of 1000 bytes fits (inih's default line is 200); 1024 does not */
    memcpy(text, "[tls]\ncert = /", 14);
    memset(text + 14, 'c', 999);
    snprintf(text + 1013, sizeof(text) - 1013, "\nkey = /");   /* 8 bytes */
    memset(text + 1021, 'k', 1023);
    snprintf(text + 2044, sizeof(text) - 2044, "\n");
    problems = load_text(&cfg, text, NULL, 0, &errs);
    CHECK(problems == 1 &&
          has_line(errs, fline(3, "key: value too long (1024 bytes, max 1023)")) &&
          strlen(cfg.tls_cert) == 1000, "long path: %d %s", problems, errs);
    free(errs);
    config_free(&cfg);

    /* a socket path longer than sun_path */
    snprintf(text, sizeof(text), "[server]\ncontrol_socket = /%0200d\n", 0);
    problems = load_text(&cfg, text, NULL, 0, &errs);
    CHECK(problems == 1 && has_line(errs, fline(2, "control_socket: value too long (201 bytes, "
          "max 107)")), "socket path: %s", errs);
    free(errs);
    config_free(&cfg);

    /* no newline at the end; CR LF; a NUL byte is a control character */
    problems = load_text(&cfg, "[server]\r\nworkers = 3", NULL, 0, &errs);
    CHECK(problems == 0 && cfg.workers == 3, "no final newline: %s", errs);
    free(errs);
    config_free(&cfg);
    FILE *f = fopen(conf_path, "w");
    fwrite("[server]\nuser = a\0b\nworkers = 2\n", 1, 32, f);
    fclose(f);
    e = open_memstream(&errs, &size);
    problems = config_load(&cfg, conf_path, NULL, 0, e);
    fclose(e);
    CHECK(problems == 1 && has_line(errs, fline(2, "control character 0x00 in line")) &&
          cfg.workers == 2, "NUL: %s", errs);
    free(errs);
    config_free(&cfg);

    /* an indented line is a key of its own (inih would take it as a continuation) */
    problems = load_text(&cfg, "[server]\nworkers = 2\n    user = mail\n", NULL, 0, &errs);
    CHECK(problems == 0 && cfg.workers == 2 && strcmp(cfg.user, "mail") == 0, "indent: %s", errs);
    free(errs);
    config_free(&cfg);

    /* inline comments with both characters, and ';' or '#' without a blank before kept */
    problems = load_text(&cfg, "[policy]\nhosted_domains = /a;b#c  ; comment\n"
                         "sender_logins = /x\t# tab comment\n", NULL, 0, &errs);
    CHECK(problems == 0 && strcmp(cfg.hosted_domains, "/a;b#c") == 0 &&
          strcmp(cfg.sender_logins, "/x") == 0, "inline comments: %s|%s|%s", errs,
          cfg.hosted_domains, cfg.sender_logins);
    free(errs);
    config_free(&cfg);

    /* empty values switch things off; lists can be emptied */
    problems = load_text(&cfg, "[server]\nmetrics_listen =\n[policy]\ntrusted_networks =\n"
                         "[relay]\nsmarthost = ; MX\ndns_servers = \n", NULL, 0, &errs);
    CHECK(problems == 0 && cfg.metrics_listen.len == 0 && cfg.trusted_network_count == 0 &&
          cfg.smarthost[0] == '\0' && cfg.dns_server_count == 0, "empty values: %s", errs);
    free(errs);
    config_free(&cfg);

    /* smarthost forms, booleans and enum aliases in any case */
    static const struct { const char *in, *out; } hosts[] = {
        { "mail.example.net:2525", "mail.example.net:2525" }, { "[10.0.0.1]", "[10.0.0.1]:25" },
        { "[2001:db8::1]:587", "[2001:db8::1]:587" }, { "10.0.0.1:26", "10.0.0.1:26" },
        { "localhost", "localhost:25" },
    };
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        snprintf(text, sizeof(text), "[relay]\nsmarthost = %s\n", hosts[i].in);
        problems = load_text(&cfg, text, NULL, 0, &errs);
        CHECK(problems == 0 && strcmp(cfg.smarthost, hosts[i].out) == 0, "smarthost %s: %s %s",
              hosts[i].in, cfg.smarthost, errs);
        free(errs);
        config_free(&cfg);
    }
    static const struct { const char *in; bool v; } bools[] = {
        { "yes", true }, { "No", false }, { "TRUE", true }, { "false", false }, { "on", true },
        { "off", false }, { "1", true }, { "0", false },
    };
    for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        snprintf(text, sizeof(text), "[auth]\nplaintext = %s\n[relay]\nchunking = %s\n"
                 "[bpf]\nenabled = %s\n", bools[i].in, bools[i].in, bools[i].in);
        problems = load_text(&cfg, text, NULL, 0, &errs);
        CHECK(problems == 0 && cfg.auth_plaintext == bools[i].v &&
              cfg.relay_chunking == bools[i].v &&
              cfg.bpf == (bools[i].v ? BPF_YES : BPF_NO), "bool %s: %s", bools[i].in, errs);
        free(errs);
        config_free(&cfg);
    }

    /* every problem of a file is reported, not just the first */
    problems = load_text(&cfg, "[server]\nworkers = x\nnope = 1\n[limits]\nmax_recipients = 0\n"
                         "junk\n[bogus]\n", NULL, 0, &errs);
    CHECK(problems == 5, "all problems: %d\n%s", problems, errs);
    free(errs);
    config_free(&cfg);
}

static void test_overrides(void)
{
    struct rr_config cfg;
    char *errs = NULL, where[512];
    int problems;

    /* values, listener creation (next to the default listener), dots in the value */
    char *ov1[] = {
        "server.hostname=o.example.net", " limits.max_recipients = 7 ",
        "listener.smtp.listen=0.0.0.0:25", "listener.smtp.auth=required",
        "auth.passwd_file=/etc/passwd", "relay.smarthost=[10.0.0.1]:2525",
        "listener.default.listen=127.0.0.1:2626", "policy.trusted_networks=10.0.0.0/8",
    };
    problems = load_text(&cfg, "", ov1, 8, &errs);
    CHECK(problems == 0, "overrides: %s", errs);
    CHECK(strcmp(cfg.hostname, "o.example.net") == 0, "hostname");
    CHECK(cfg.rcpt_count_max == 7, "max_recipients");
    CHECK(cfg.listener_count == 2 && strcmp(cfg.listeners[1].name, "smtp") == 0 &&
          cfg.listeners[1].auth == AUTH_REQUIRED &&
          addr_is(&cfg.listeners[1].addrs[0], AF_INET, "0.0.0.0", 25), "created listener");
    CHECK(addr_is(&cfg.listeners[0].addrs[0], AF_INET, "127.0.0.1", 2626), "default changed");
    CHECK(strcmp(cfg.smarthost, "[10.0.0.1]:2525") == 0, "smarthost");
    CHECK(cfg.trusted_network_count == 1, "trusted_networks replaced");
    CHECK(config_where(&cfg, "limits", "max_recipients", where, sizeof(where)) &&
          strcmp(where, "-o:2") == 0, "where -o: %s", where);
    CHECK(config_where(&cfg, "listener.smtp", "auth", where, sizeof(where)) &&
          strcmp(where, "-o:4") == 0, "where -o listener: %s", where);
    free(errs);
    config_free(&cfg);

    /* an override replaces a file value (no "set twice"), and edits a file listener */
    char *ov2[] = { "server.workers=8", "listener.a.tls=none", "listener.a.listen=[::1]:25" };
    problems = load_text(&cfg, "[server]\nworkers = 2\n[listener.a]\nlisten = 127.0.0.1:25\n"
                         "tls = starttls\n[tls]\ncert = /c\nkey = /k\n", ov2, 3, &errs);
    CHECK(problems == 0 && cfg.workers == 8 && cfg.listener_count == 1 &&
          cfg.listeners[0].tls == TLS_NONE && addr_is(&cfg.listeners[0].addrs[0], AF_INET6,
          "::1", 25), "override over file: %s", errs);
    free(errs);
    config_free(&cfg);

    /* errors, each "-o:N: " */
    char *ov3[] = {
        "noequals", "nodot=1", "server.nokey=1", "nosection.key=1", "limits.max_recipients=abc",
        "listener.x.bogus=1", "listener.a.b.tls=none", ".workers=1", "server.=1",
        "listener.new.tls=starttls", "relay.retry_min=5h", "server.user=a\x7f",
    };
    problems = load_text(&cfg, "", ov3, 12, &errs);
    static const char *const want[] = {
        "-o:1: expected section.key=value, got 'noequals'",
        "-o:2: expected section.key=value, got 'nodot=1'",
        "-o:3: unknown key 'nokey' in section [server]",
        "-o:4: unknown section [nosection]",
        "-o:5: max_recipients: 'abc' is not a whole number",
        "-o:6: unknown key 'bogus' in section [listener.x]",
        "-o:7: [listener.a.b]: a listener name is 1..63 of A-Z a-z 0-9 _ -",
        "-o:8: expected section.key=value, got '.workers=1'",
        "-o:9: expected section.key=value, got 'server.=1'",
        "-o:10: [listener.new]: listen is required",
        "-o:10: tls: starttls on [listener.new] needs [tls] cert and key",
        "-o:11: retry_min (5h) is above retry_max (4h)",
        "-o:12: control character 0x7f in override",
    };
    CHECK(problems == (int)(sizeof(want) / sizeof(want[0])), "override errors: %d\n%s",
          problems, errs);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        CHECK(has_line(errs, want[i]), "missing '%s' in:\n%s", want[i], errs);
    CHECK(cfg.listener_count == 2, "bogus key created no listener (%u)", cfg.listener_count);
    free(errs);
    config_free(&cfg);

    /* a file problem and an override problem, each with its own prefix */
    char *ov4[] = { "limits.idle_timeout=forever" };
    problems = load_text(&cfg, "[limits]\nidle_timeout = never\n", ov4, 1, &errs);
    CHECK(problems == 2 && has_line(errs, fline(2, "idle_timeout: 'never' is not a duration (a "
          "number with s, m, h, d or ms; bare = seconds)")) &&
          has_line(errs, "-o:1: idle_timeout: 'forever' is not a duration (a number with s, m, "
                   "h, d or ms; bare = seconds)"), "mixed: %s", errs);
    free(errs);
    config_free(&cfg);

    /* with no file at all */
    char *ov5[] = { "bpf.enabled=yes" };
    size_t size;
    FILE *e = open_memstream(&errs, &size);
    problems = config_load(&cfg, NULL, ov5, 1, e);
    fclose(e);
    CHECK(problems == 0 && cfg.bpf == BPF_YES, "no file + -o: %s", errs);
    free(errs);
    config_free(&cfg);
}

/* test_source_addresses - [relay] source_addresses entries, "ADDRESS[%INTERFACE]": the
 * interface after the address (after the bracket when bracketed), the RFC 4007 zone form
 * taken for every address; link-local needs one; nothing else of the entry is an interface. */
static void test_source_addresses(void)
{
    static const struct {
        const char *in;           /* the entry */
        int fam;                  /* 0: refused */
        const char *addr;         /* address text as inet_ntop writes it */
        const char *ifname;       /* "" = none */
    } cases[] = {
        { "192.0.2.10", AF_INET, "192.0.2.10", "" },
        { "192.0.2.10%eth1", AF_INET, "192.0.2.10", "eth1" },
        { "2001:db8::10", AF_INET6, "2001:db8::10", "" },
        { "[2001:db8::10]", AF_INET6, "2001:db8::10", "" },
        { "2001:db8::10%eth1", AF_INET6, "2001:db8::10", "eth1" },
        { "[2001:db8::10]%eth1", AF_INET6, "2001:db8::10", "eth1" },
        { "fe80::1%eth0", AF_INET6, "fe80::1", "eth0" },
        { "[fe80::1]%br-lan.100", AF_INET6, "fe80::1", "br-lan.100" },
        { "10.0.0.1%ifname_15_bytes", AF_INET, "10.0.0.1", "ifname_15_bytes" },
        { "::ffff:192.0.2.1%v", AF_INET, "192.0.2.1", "v" },  /* mapped: an IPv4 source */
        { "10.0.0.1%ifname_16_bytes_", 0, NULL, NULL },     /* longer than IFNAMSIZ - 1 */
        { "fe80::1", 0, NULL, NULL },                       /* link-local without its scope */
        { "[fe80::1]", 0, NULL, NULL },
        { "[fe80::1%eth0]", 0, NULL, NULL },                /* the zone goes after the bracket */
        { "[2001:db8::10%eth1]", 0, NULL, NULL },
        { "192.0.2.10%", 0, NULL, NULL },                   /* empty interface */
        { "%eth1", 0, NULL, NULL },
        { "192.0.2.10%eth1%eth2", 0, NULL, NULL },
        { "192.0.2.10%eth/1", 0, NULL, NULL },              /* not a device name */
        { "192.0.2.10%eth:1", 0, NULL, NULL },
        { "192.0.2.10%.", 0, NULL, NULL },
        { "192.0.2.10%..", 0, NULL, NULL },
        { "192.0.2.10:25%eth1", 0, NULL, NULL },            /* a port, as before */
        { "[2001:db8::10]:25%eth1", 0, NULL, NULL },
        { "[2001:db8::10]eth1", 0, NULL, NULL },
        { "host.example%eth1", 0, NULL, NULL },
    };
    char text[256], want[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rr_config cfg;
        char *errs = NULL;
        int problems;

        snprintf(text, sizeof(text), "[relay]\nsource_addresses = 203.0.113.1, %s\n",
                 cases[i].in);
        problems = load_text(&cfg, text, NULL, 0, &errs);
        if (cases[i].fam) {
            const struct config_source *s = &cfg.source_addresses[1];
            CHECK(problems == 0 && cfg.source_address_count == 2 &&
                  addr_is(&s->addr, cases[i].fam, cases[i].addr, 0) &&
                  strcmp(s->ifname, cases[i].ifname) == 0 &&
                  cfg.source_addresses[0].ifname[0] == '\0',
                  "'%s': %d problems, ifname '%s':\n%s", cases[i].in, problems, s->ifname, errs);
        } else {
            snprintf(want, sizeof(want), "%s:2: source_addresses: '%s' is not %s", conf_path,
                     cases[i].in, SOURCE_EXPECTED);
            CHECK(problems == 1 && has_line(errs, want) && cfg.source_address_count == 0,
                  "'%s' accepted or wrong message:\n%s", cases[i].in, errs);
        }
        free(errs);
        config_free(&cfg);
    }
}

/* ---------------------------------------------------------------------------------------- */

int main(void)
{
    if (!config_test_setup())
        return 2;

    test_defaults();
    test_every_key();
    test_errors();
    test_file_edges();
    test_overrides();
    test_source_addresses();

    config_test_cleanup();
    return check_done("test_config");
}
