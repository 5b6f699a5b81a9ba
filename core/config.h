/*
 * config.h - the ringrelay configuration: INI file, embedded defaults, -o overrides, -t checks.
 *
 * A struct rr_config is built once (start-up or SIGHUP), never changed afterwards, and shared
 * read-only by every thread until the next reload replaces it. Strings and arrays it holds are
 * owned by it and released by config_free().
 *
 * The one header users include. It is implemented by config.c (loading, config_where,
 * config_free), config_value.c (config_parse_*, config_net_match) and config_check.c
 * (config_check_files).
 */
#ifndef RR_CONFIG_H
#define RR_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <netinet/in.h>

struct tls_ctx;
struct passwd_db;
struct policy_maps;

#define CONFIG_LISTENERS_MAX     16   /* [listener.NAME] sections */
#define CONFIG_ADDRS_MAX         16   /* addresses in one list value */
#define CONFIG_NETS_MAX          64   /* CIDRs in one network list */
#define CONFIG_NAME_BYTES_MAX    64   /* a listener NAME */
#define CONFIG_PATH_BYTES_MAX    1024 /* any file or directory path */
#define CONFIG_HOSTNAME_BYTES_MAX 255
#define CONFIG_LINE_BYTES_MAX    4096 /* one line of the file, or one -o override */
#define CONFIG_KEYS_MAX          64   /* rows of config.c's key table (static_assert there) */
#define CONFIG_LISTENER_KEYS_MAX 4    /* rows of config.c's listener key table */
#define CONFIG_TEXT_BYTES_MAX    200  /* a text that goes into SMTP replies ([policy] relay_help) */
#define CONFIG_IFNAME_BYTES_MAX  16   /* an interface name and its NUL (the kernel's IFNAMSIZ) */

enum tls_mode  { TLS_NONE, TLS_STARTTLS, TLS_IMPLICIT };
enum auth_mode { AUTH_NONE, AUTH_OPTIONAL, AUTH_REQUIRED };
enum relay_mode { RELAY_ALLOW, RELAY_NOTIFY, RELAY_REJECT };
enum relay_tls { RELAY_TLS_MAY, RELAY_TLS_NONE, RELAY_TLS_ENCRYPT, RELAY_TLS_VERIFY };
enum bpf_mode  { BPF_AUTO, BPF_YES, BPF_NO };
enum line_endings { LINE_ENDINGS_REJECT, LINE_ENDINGS_NORMALIZE };

/* A socket address as written in the file ("127.0.0.1:25", "[::1]:587", "0.0.0.0:25"). */
struct config_addr {
    struct sockaddr_storage sa;   /* AF_INET or AF_INET6, port in network order */
    socklen_t len;                /* bytes of sa in use */
};

/* An egress source address ([relay] source_addresses): "ADDRESS" or "ADDRESS%INTERFACE"
 * (192.0.2.10%eth1, 2001:db8::10%eth1, [2001:db8::10]%eth1). The interface is the
 * RFC 4007 zone written after the address (after the bracket when bracketed); for every
 * address it means "leave through this device" (SO_BINDTODEVICE), and for a link-local
 * IPv6 address, which needs it, it is also the scope. */
struct config_source {
    struct config_addr addr;      /* AF_INET or AF_INET6, port 0 */
    char ifname[CONFIG_IFNAME_BYTES_MAX]; /* "" = any device; -t and reloads check it exists */
};

/* One CIDR network: address bytes in network order, IPv4 stored as AF_INET. */
struct config_net {
    int family;                   /* AF_INET or AF_INET6 */
    uint8_t addr[16];             /* network address, host bits cleared */
    uint8_t prefix;               /* prefix length in bits */
};

/* Where a value came from, for "FILE:LINE: message" reports. */
struct config_origin {
    uint32_t line;                /* line in the file, or N of the N-th -o; 0 = embedded default */
    bool override;                /* set by -o: reported as "-o:N" instead of "FILE:N" */
};

struct config_listener {
    char name[CONFIG_NAME_BYTES_MAX];       /* the NAME of [listener.NAME] */
    struct config_addr addrs[CONFIG_ADDRS_MAX]; /* from "listen" */
    unsigned addr_count;                    /* entries of addrs in use, >= 1 */
    enum tls_mode tls;                      /* "tls" */
    enum auth_mode auth;                    /* "auth" */
    struct config_origin origin;            /* where the section was opened (or created by -o) */
    struct config_origin key_origin[CONFIG_LISTENER_KEYS_MAX]; /* per key: listen, tls, auth */
};

struct rr_config {
    char *path;                   /* file read, NULL for embedded defaults only */

    /* [server] */
    char hostname[CONFIG_HOSTNAME_BYTES_MAX + 1]; /* default: gethostname() */
    unsigned workers;             /* 0 = one per online CPU */
    char spool_dir[CONFIG_PATH_BYTES_MAX];        /* default "./spool" */
    struct config_addr metrics_listen;            /* len 0 = off; default 127.0.0.1:9425 */
    char control_socket[CONFIG_PATH_BYTES_MAX];   /* default "/run/ringrelay/control.sock" */
    char user[64];                /* drop privileges to this user; "" = stay */
    uint64_t spool_min_free_bytes;   /* "spool_min_free", default 64M: below -> 452 4.3.1 */
    uint64_t segment_bytes_max;      /* "segment_size", default 64M: spool segment rotation */
    uint32_t commit_delay_us;        /* "commit_delay", default 0: hold a group fsync back this
                                        long so more messages share it ("500us", "2ms"); 0
                                        starts it at the end of the loop pass */

    /* [listener.NAME]; with no section at all, one listener "default" on 127.0.0.1:2525 */
    struct config_listener listeners[CONFIG_LISTENERS_MAX];
    unsigned listener_count;

    /* [tls] */
    char tls_cert[CONFIG_PATH_BYTES_MAX];
    char tls_key[CONFIG_PATH_BYTES_MAX];

    /* [auth] */
    char passwd_file[CONFIG_PATH_BYTES_MAX];
    char dovecot_socket[CONFIG_PATH_BYTES_MAX];
    bool auth_plaintext;          /* "plaintext", default no */
    unsigned auth_failures_max;   /* "max_failures", default 3 */

    /* [limits] */
    uint64_t message_bytes_max;   /* "max_message_size", default 35M */
    unsigned rcpt_count_max;      /* "max_recipients", default 50 */
    uint32_t idle_timeout_ms;     /* "idle_timeout", default 300s: wait for a whole command */
    uint32_t data_timeout_ms;     /* "data_timeout", default 600s: whole DATA/BDAT phase ceiling */
    uint32_t min_data_rate;       /* "min_data_rate" bytes/s during DATA, default 1K; 0 = off */
    uint32_t greeting_delay_ms;   /* "greeting_delay", default 0: talk before greeting -> 554 */
    enum line_endings line_endings; /* "bare_line_endings" = reject | normalize, default reject */
    unsigned errors_max;          /* "max_errors", default 10: protocol errors, then 421 close */
    unsigned connections_max;     /* "max_connections" per worker, default 10000 */

    /* [policy] */
    char hosted_domains[CONFIG_PATH_BYTES_MAX];
    char sender_logins[CONFIG_PATH_BYTES_MAX];
    struct config_net trusted_networks[CONFIG_NETS_MAX]; /* default 127.0.0.0/8 and ::1/128 */
    unsigned trusted_network_count;
    enum relay_mode relay_mode;   /* default notify */
    int64_t relay_enforce_after;  /* unix time of 00:00 UTC of the date; default 2014-01-01 */
    char notify_template[CONFIG_PATH_BYTES_MAX];
    uint32_t notify_interval_s;   /* default 1d */
    char host_registry[CONFIG_PATH_BYTES_MAX];
    uint32_t user_hourly_messages;   /* 0 = unlimited; "hourly" = per rate_window */
    uint32_t user_hourly_recipients;
    uint32_t ip_hourly_messages;
    uint32_t rate_window_s;       /* "rate_window", default 1h: the window of the three above */
    char relay_help[CONFIG_TEXT_BYTES_MAX + 1]; /* where a refused relaying sender gets help,
                                     quoted in the 553; "" = "postmaster@" hostname */

    /* [relay] */
    char smarthost[CONFIG_HOSTNAME_BYTES_MAX + 8]; /* "host:port" or "[ip]:port"; "" = MX */
    struct config_addr dns_servers[CONFIG_ADDRS_MAX]; /* port defaults to 53 */
    unsigned dns_server_count;
    struct config_source source_addresses[CONFIG_ADDRS_MAX]; /* used in turn per family */
    unsigned source_address_count;
    enum relay_tls relay_tls;     /* default may */
    char relay_tls_ca_file[CONFIG_PATH_BYTES_MAX]; /* "tls_ca_file": CAs for tls = verify */
    uint32_t retry_min_s;         /* default 5m */
    uint32_t retry_max_s;         /* default 4h */
    uint32_t queue_lifetime_s;    /* default 5d */
    uint32_t relay_port;          /* "port": MX and address deliveries, default 25 */
    uint32_t dest_concurrency;    /* "destination_concurrency": connections per next hop and
                                     worker, default 20 */
    uint32_t msgs_per_conn;       /* "messages_per_connection", default 100 */
    uint32_t connect_timeout_ms;  /* "connect_timeout": TCP connect and greeting, default 30s */
    uint32_t command_timeout_ms;  /* "command_timeout": each reply, default 300s */
    bool relay_chunking;          /* "chunking", default yes: BDAT (RFC 3030) to a next hop
                                     that offers CHUNKING; no = always DATA */

    /* Loaded from the files named above by resources_load() (core/resources.c) on the main
     * thread, and released with the configuration (config_free). Workers read them through
     * the configuration they use; a session that outlives a reload takes its own reference. */
    struct tls_ctx *tls_server_ctx;   /* [tls] cert/key; NULL when no listener uses TLS */
    struct tls_ctx *tls_client_ctx;   /* outbound STARTTLS; NULL when [relay] tls = none */
    struct passwd_db *passwd_db;      /* [auth] passwd_file; NULL when unset */
    struct policy_maps *policy_maps;  /* [policy] hosted_domains, sender_logins,
                                         host_registry (core/policy.h); NULL when none set */
    char *notify_text;                /* [policy] notify_template's text; NULL: the built-in
                                         one (core/notify.c: notify_template_load) */
    size_t notify_text_len;           /* bytes of notify_text */

    /* [bpf] */
    enum bpf_mode bpf;            /* "enabled", default auto */
    uint32_t bpf_connections_per_ip_max;  /* "max_connections_per_ip", default 50 */
    uint32_t bpf_connects_per_ip_per_s_max; /* "max_connects_per_ip_per_s", default 20 */
    /* Both limits: 0 = none. Sources in exempt_networks are counted, never refused. */
    struct config_net ip_limit_exempt[CONFIG_NETS_MAX]; /* default 127.0.0.0/8 and ::1/128 */
    unsigned ip_limit_exempt_count;

    struct config_origin origin[CONFIG_KEYS_MAX]; /* per key, indexed by config.c's key table;
                                                     read it through config_where() */
};

/*
 * config_load - build a configuration: embedded defaults, then FILE (if not NULL), then each
 * override "section.key=value" in order (the section may itself hold dots: listener.smtp.tls=...).
 * Every problem is reported on errs as one "FILE:LINE: message" line (overrides report as
 * "-o:N: message", N counting from 1); an unknown section or key, a malformed value or a
 * missing file is a problem. Returns the number of problems; on 0 *cfg is ready, otherwise it
 * holds whatever was parsed and must still be passed to config_free().
 * cfg need not be initialised. An override naming a [listener.NAME] that does not exist creates
 * it; the "default" listener exists only when the file (or no file) defines no listener, and
 * -o listener.default.KEY=... then changes it. Not thread-safe: it sets and restores libinih's
 * process-wide line-buffer settings while it parses.
 */
int config_load(struct rr_config *cfg, const char *path, char *const *overrides,
                unsigned override_count, FILE *errs);

/*
 * config_load_stream - config_load() from an open stream; name is the FILE of the messages and
 * becomes cfg->path (NULL: "(default)" in messages, cfg->path stays NULL). The stream is read
 * to its end and not closed. Used by the fuzzer and the tests.
 */
int config_load_stream(struct rr_config *cfg, FILE *in, const char *name,
                       char *const *overrides, unsigned override_count, FILE *errs);

/*
 * config_where - "FILE:LINE" of where section/key got its value ("-o:N" for an override,
 * "FILE:0" for a default), written into buf and returned; for a listener key the section is
 * "listener.NAME". NULL when the section or key is unknown.
 */
const char *config_where(const struct rr_config *cfg, const char *section, const char *key,
                         char *buf, size_t size);

/*
 * config_check_files - the -t checks beyond syntax: every file the configuration names exists
 * and is readable, the spool directory exists or can be created and is writable, every
 * interface named by [relay] source_addresses exists.
 * Reports "FILE:LINE: message" per problem (LINE of the key that named it, 0 for defaults);
 * returns the number of problems.
 */
int config_check_files(const struct rr_config *cfg, FILE *errs);

/* config_free - release what config_load allocated; cfg may be reused afterwards. */
void config_free(struct rr_config *cfg);

/* config_net_match - whether sa (AF_INET, AF_INET6 or v4-mapped v6) is inside any of nets. */
bool config_net_match(const struct config_net *nets, unsigned count,
                      const struct sockaddr *sa);

/*
 * Value parsers, exported for tests. Each returns 0 or -1 on a malformed value (or one that
 * overflows); *out is written only on success.
 * config_parse_addr takes numeric addresses only (no host names): "1.2.3.4:25", "[::1]:25";
 * port_default < 0 means the port is required; otherwise "1.2.3.4", "[::1]" and a bare
 * "2001:db8::1" take port_default. An explicit port is 1..65535.
 * config_parse_net stores an IPv4-mapped IPv6 network (::ffff:a.b.c.d/96+n) as the IPv4 a.b.c.d/n.
 */
int config_parse_duration_ms(const char *s, uint64_t *ms);   /* "300", "5m", "1d", "250ms" */
int config_parse_size(const char *s, uint64_t *bytes);       /* "35M", "1024", "2G", "1K", "1KB" */
int config_parse_addr(const char *s, int port_default, struct config_addr *out);
int config_parse_net(const char *s, struct config_net *out);
int config_parse_date(const char *s, int64_t *unix_time);   /* "2014-01-01" -> 00:00 UTC */

#endif
