/*
 * config.c - the ringrelay configuration: embedded defaults, the INI file, -o overrides and
 * the cross-key checks.
 *
 * FUNCTIONS
 *   config_load, config_load_stream   defaults, then the file, then -o overrides, then checks
 *   config_where                      "FILE:LINE" of a key, for other modules' messages
 *   config_free                       release what config_load allocated
 *
 *   The syntax of single values (durations, sizes, addresses, networks, dates) and
 *   config_net_match() are in config_value.c; the -t file checks (config_check_files) in
 *   config_check.c. core/config.h declares all of them.
 *
 * DESIGN
 *   One table, keys[], names every key of the flat sections: section, key, type, offset and
 *   size of the field in struct rr_config, bounds, and the default written as an operator
 *   would write it. Defaults go through the same setters as the file, so no default escapes
 *   validation. listener_keys[] does the same for struct config_listener. A setter parses
 *   with config_value.c and owns what the key adds: its bounds, its field, its message.
 *
 *   Line numbers: the row index of keys[] (enum key_id) is also the index of cfg->origin[],
 *   which records for every key where its value came from ({line, override}; line 0 = the
 *   embedded default); listeners keep theirs in key_origin[] (enum listener_key_id). Cross-key
 *   checks and config_where() (so -t too) report from there.
 *
 *   libinih splits lines into name and value. In front of it sits read_line(), the ini_reader
 *   we hand it, which:
 *     - counts lines: Debian's libinih is built without INI_HANDLER_LINENO, and read_line()
 *       hands inih exactly one line per file line, so the handler's line is st->lineno;
 *     - bounds a line to CONFIG_LINE_BYTES_MAX and refuses control characters;
 *     - strips leading blanks, so inih never takes an indented line as a multi-line
 *       continuation of the previous key, and inline comments " # ..." and " ; ..." (inih
 *       knows only ";");
 *     - reports a line that is neither "[section]", "key = value" nor a comment and gives inih
 *       an empty line instead, so every syntax error is reported, not just the first;
 *     - opens sections itself, because inih truncates section names to 49 bytes and
 *       "listener." + NAME may be 72.
 *   Debian's libinih reads its line buffer size from process-wide variables; parse_file()
 *   raises them for the parse and restores them afterwards.
 *
 * SECURITY
 *   The file and the -o values are operator input: trusted in intent, not in form. Every line
 *   is bounded, every string is copied with a length check and a clear error when too long,
 *   every number is checked for overflow (config_value.c) and against the bounds in the
 *   table, addresses are numeric only (no DNS at start-up), interface names in
 *   source_addresses are checked for form only (the kernel's rules; -t checks they exist).
 *
 * STANDARDS
 *   RFC 1035 2.3.1 and RFC 1123 2.1 (host name syntax, for hostname and smarthost, through
 *   config_value.c).
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include <ini.h>

#include "core/config.h"
#include "core/resources.h"
#include "core/config_value.h"

/* Enumerations and counts are stored through int and unsigned views of the fields. */
_Static_assert(sizeof(enum tls_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum auth_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum relay_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum relay_tls) == sizeof(int), "enum size");
_Static_assert(sizeof(enum bpf_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum line_endings) == sizeof(int), "enum size");
_Static_assert(sizeof(unsigned) == sizeof(uint32_t), "unsigned is 32 bits");

#define SUN_PATH_BYTES_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)
#define TOKEN_BYTES_MAX    64    /* one entry of an address or network list */
#define PORT_NONE          (-2)  /* key_def.port: the address takes no port */
#define SMTP_PORT          25    /* smarthost without a port */
#define DEFAULT_FILE       "(default)"  /* FILE of messages when there is no file */

/* Every key of the flat sections; the row of keys[] and the index of cfg->origin[]. */
enum key_id {
    K_HOSTNAME, K_WORKERS, K_SPOOL_DIR, K_METRICS_LISTEN, K_CONTROL_SOCKET, K_USER,
    K_SPOOL_MIN_FREE, K_SEGMENT_SIZE, K_COMMIT_DELAY,
    K_TLS_CERT, K_TLS_KEY,
    K_PASSWD_FILE, K_DOVECOT_SOCKET, K_PLAINTEXT, K_MAX_FAILURES,
    K_MAX_MESSAGE_SIZE, K_MAX_RECIPIENTS, K_IDLE_TIMEOUT, K_DATA_TIMEOUT, K_MIN_DATA_RATE,
    K_GREETING_DELAY, K_BARE_LINE_ENDINGS, K_MAX_ERRORS, K_MAX_CONNECTIONS,
    K_HOSTED_DOMAINS, K_SENDER_LOGINS, K_TRUSTED_NETWORKS, K_RELAY_MODE, K_RELAY_ENFORCE_AFTER,
    K_NOTIFY_TEMPLATE, K_NOTIFY_INTERVAL, K_HOST_REGISTRY, K_USER_HOURLY_MESSAGES,
    K_USER_HOURLY_RECIPIENTS, K_IP_HOURLY_MESSAGES, K_RATE_WINDOW, K_RELAY_HELP,
    K_SMARTHOST, K_DNS_SERVERS, K_SOURCE_ADDRESSES, K_RELAY_TLS, K_RETRY_MIN, K_RETRY_MAX,
    K_QUEUE_LIFETIME, K_RELAY_PORT, K_DEST_CONCURRENCY, K_MSGS_PER_CONN, K_CONNECT_TIMEOUT,
    K_COMMAND_TIMEOUT, K_RELAY_TLS_CA, K_RELAY_CHUNKING,
    K_BPF_ENABLED, K_BPF_CONNECTIONS_PER_IP, K_BPF_CONNECTS_PER_IP_PER_S, K_BPF_EXEMPT,
    K_COUNT
};
_Static_assert(K_COUNT <= CONFIG_KEYS_MAX, "raise CONFIG_KEYS_MAX");

/* Every key of a [listener.NAME]; the row of listener_keys[] and of key_origin[]. */
enum listener_key_id { LK_LISTEN, LK_TLS, LK_AUTH, LK_COUNT };
_Static_assert(LK_COUNT <= CONFIG_LISTENER_KEYS_MAX, "raise CONFIG_LISTENER_KEYS_MAX");

enum key_type {
    T_PATH,        /* a file or directory path; "" = unset unless min says otherwise */
    T_WORD,        /* one user-name-like token: A-Z a-z 0-9 . _ -, not starting with '-' */
    T_TEXT,        /* printable ASCII that goes into SMTP replies as it is */
    T_HOSTNAME,    /* a plausible domain name */
    T_HOSTPORT,    /* host[:port] or [address][:port], stored "host:port"; "" = unset */
    T_UINT,        /* a decimal count */
    T_SIZE,        /* bytes, with K M G suffixes */
    T_MS,          /* a duration stored in milliseconds */
    T_SEC,         /* a duration stored in whole seconds (bounds still in milliseconds) */
    T_US,          /* a short duration stored in microseconds ("500us", "2ms", bounds in us) */
    T_BOOL,        /* yes/no/true/false/on/off/1/0 */
    T_ENUM,        /* one of names[] */
    T_ADDR,        /* one socket address; "" = off */
    T_ADDRS,       /* a list of socket addresses */
    T_SOURCES,     /* a list of source addresses, each perhaps with %INTERFACE */
    T_NETS,        /* a list of CIDR networks */
    T_DATE,        /* YYYY-MM-DD, stored as int64_t unix time */
};

struct enum_name {
    const char *name;             /* as written in the file, matched without case */
    int value;                    /* stored into the int-sized enum field */
    bool alias;                   /* accepted but not listed in messages */
};

struct key_def {
    const char *section;          /* "server", ...; "listener" in listener_keys[] */
    const char *name;             /* the key */
    enum key_type type;           /* how the value is parsed and stored */
    size_t offset;                /* of the field in struct rr_config or config_listener */
    size_t size;                  /* bytes of the field */
    size_t count_offset;          /* T_ADDRS, T_SOURCES, T_NETS: offset of the entry count */
    uint64_t min, max;            /* numbers: bounds in the parsed unit (ms for durations);
                                     lists: entries (max 0 = capacity); strings: length in
                                     bytes (max 0 = field size - 1) */
    int port;                     /* T_ADDR, T_ADDRS, T_SOURCES: port default, -1 required,
                                     PORT_NONE */
    const struct enum_name *names; /* T_ENUM: the accepted names, NULL-terminated */
    const char *dflt;             /* the default as a file would write it; NULL = none */
};

static const struct enum_name tls_names[] = {
    { "none", TLS_NONE, false }, { "starttls", TLS_STARTTLS, false },
    { "implicit", TLS_IMPLICIT, false }, { NULL, 0, false },
};
static const struct enum_name auth_names[] = {
    { "none", AUTH_NONE, false }, { "optional", AUTH_OPTIONAL, false },
    { "required", AUTH_REQUIRED, false }, { NULL, 0, false },
};
static const struct enum_name relay_mode_names[] = {
    { "allow", RELAY_ALLOW, false }, { "notify", RELAY_NOTIFY, false },
    { "reject", RELAY_REJECT, false }, { NULL, 0, false },
};
static const struct enum_name relay_tls_names[] = {
    { "may", RELAY_TLS_MAY, false }, { "none", RELAY_TLS_NONE, false },
    { "encrypt", RELAY_TLS_ENCRYPT, false }, { "verify", RELAY_TLS_VERIFY, false },
    { NULL, 0, false },
};
/* yes/no as for every boolean, so "enabled = on" reads as it would anywhere else */
static const struct enum_name bpf_names[] = {
    { "auto", BPF_AUTO, false }, { "yes", BPF_YES, false }, { "no", BPF_NO, false },
    { "true", BPF_YES, true }, { "on", BPF_YES, true }, { "1", BPF_YES, true },
    { "false", BPF_NO, true }, { "off", BPF_NO, true }, { "0", BPF_NO, true },
    { NULL, 0, false },
};
static const struct enum_name line_ending_names[] = {
    { "reject", LINE_ENDINGS_REJECT, false }, { "normalize", LINE_ENDINGS_NORMALIZE, false },
    { NULL, 0, false },
};

#define CFG(f)   offsetof(struct rr_config, f), sizeof(((struct rr_config *)0)->f)
#define LST(f)   offsetof(struct config_listener, f), sizeof(((struct config_listener *)0)->f)
#define COUNT(f) .count_offset = offsetof(struct rr_config, f)

static const struct key_def keys[K_COUNT] = {
    /* [server]; hostname's default is gethostname(), see set_defaults() */
    [K_HOSTNAME] = { "server", "hostname", T_HOSTNAME, CFG(hostname),
                     .min = 1, .max = DOMAIN_BYTES_MAX },
    [K_WORKERS] = { "server", "workers", T_UINT, CFG(workers), .max = 64, .dflt = "0" },
    [K_SPOOL_DIR] = { "server", "spool_dir", T_PATH, CFG(spool_dir), .min = 1,
                      .dflt = "./spool" },
    [K_METRICS_LISTEN] = { "server", "metrics_listen", T_ADDR, CFG(metrics_listen),
                           .port = -1, .dflt = "127.0.0.1:9425" },
    [K_CONTROL_SOCKET] = { "server", "control_socket", T_PATH, CFG(control_socket),
                           .max = SUN_PATH_BYTES_MAX, .dflt = "/run/ringrelay/control.sock" },
    [K_USER] = { "server", "user", T_WORD, CFG(user), .dflt = "" },
    [K_SPOOL_MIN_FREE] = { "server", "spool_min_free", T_SIZE, CFG(spool_min_free_bytes),
                           .max = 1ULL << 50, .dflt = "64M" },
    [K_SEGMENT_SIZE] = { "server", "segment_size", T_SIZE, CFG(segment_bytes_max),
                         .min = 64 * KIB, .max = 64 * GIB, .dflt = "64M" },
    [K_COMMIT_DELAY] = { "server", "commit_delay", T_US, CFG(commit_delay_us),
                         .max = 100000, .dflt = "0" },

    /* [tls] */
    [K_TLS_CERT] = { "tls", "cert", T_PATH, CFG(tls_cert), .dflt = "" },
    [K_TLS_KEY] = { "tls", "key", T_PATH, CFG(tls_key), .dflt = "" },

    /* [auth] */
    [K_PASSWD_FILE] = { "auth", "passwd_file", T_PATH, CFG(passwd_file), .dflt = "" },
    [K_DOVECOT_SOCKET] = { "auth", "dovecot_socket", T_PATH, CFG(dovecot_socket),
                           .max = SUN_PATH_BYTES_MAX, .dflt = "" },
    [K_PLAINTEXT] = { "auth", "plaintext", T_BOOL, CFG(auth_plaintext), .dflt = "no" },
    [K_MAX_FAILURES] = { "auth", "max_failures", T_UINT, CFG(auth_failures_max),
                         .min = 1, .max = 100, .dflt = "3" },

    /* [limits] */
    [K_MAX_MESSAGE_SIZE] = { "limits", "max_message_size", T_SIZE, CFG(message_bytes_max),
                             .min = KIB, .max = 4 * GIB, .dflt = "35M" },
    [K_MAX_RECIPIENTS] = { "limits", "max_recipients", T_UINT, CFG(rcpt_count_max),
                           .min = 1, .max = 1000, .dflt = "50" },
    [K_IDLE_TIMEOUT] = { "limits", "idle_timeout", T_MS, CFG(idle_timeout_ms),
                         .min = 100, .max = MS_PER_D, .dflt = "300s" },
    [K_DATA_TIMEOUT] = { "limits", "data_timeout", T_MS, CFG(data_timeout_ms),
                         .min = 100, .max = MS_PER_D, .dflt = "600s" },
    [K_MIN_DATA_RATE] = { "limits", "min_data_rate", T_SIZE, CFG(min_data_rate),
                          .max = GIB, .dflt = "1K" },
    [K_GREETING_DELAY] = { "limits", "greeting_delay", T_MS, CFG(greeting_delay_ms),
                           .max = 5 * MS_PER_M, .dflt = "0" },
    [K_BARE_LINE_ENDINGS] = { "limits", "bare_line_endings", T_ENUM, CFG(line_endings),
                              .names = line_ending_names, .dflt = "reject" },
    [K_MAX_ERRORS] = { "limits", "max_errors", T_UINT, CFG(errors_max),
                       .min = 1, .max = 1000, .dflt = "10" },
    [K_MAX_CONNECTIONS] = { "limits", "max_connections", T_UINT, CFG(connections_max),
                            .min = 1, .max = 1000000, .dflt = "10000" },

    /* [policy] */
    [K_HOSTED_DOMAINS] = { "policy", "hosted_domains", T_PATH, CFG(hosted_domains), .dflt = "" },
    [K_SENDER_LOGINS] = { "policy", "sender_logins", T_PATH, CFG(sender_logins), .dflt = "" },
    [K_TRUSTED_NETWORKS] = { "policy", "trusted_networks", T_NETS, CFG(trusted_networks),
                             COUNT(trusted_network_count), .dflt = "127.0.0.0/8, ::1/128" },
    [K_RELAY_MODE] = { "policy", "relay_mode", T_ENUM, CFG(relay_mode),
                       .names = relay_mode_names, .dflt = "notify" },
    [K_RELAY_ENFORCE_AFTER] = { "policy", "relay_enforce_after", T_DATE,
                                CFG(relay_enforce_after), .dflt = "2014-01-01" },
    [K_NOTIFY_TEMPLATE] = { "policy", "notify_template", T_PATH, CFG(notify_template),
                            .dflt = "" },
    [K_NOTIFY_INTERVAL] = { "policy", "notify_interval", T_SEC, CFG(notify_interval_s),
                            .max = 366 * MS_PER_D, .dflt = "1d" },
    [K_HOST_REGISTRY] = { "policy", "host_registry", T_PATH, CFG(host_registry), .dflt = "" },
    [K_USER_HOURLY_MESSAGES] = { "policy", "user_hourly_messages", T_UINT,
                                 CFG(user_hourly_messages), .max = UINT32_MAX, .dflt = "0" },
    [K_USER_HOURLY_RECIPIENTS] = { "policy", "user_hourly_recipients", T_UINT,
                                   CFG(user_hourly_recipients), .max = UINT32_MAX,
                                   .dflt = "0" },
    [K_IP_HOURLY_MESSAGES] = { "policy", "ip_hourly_messages", T_UINT,
                               CFG(ip_hourly_messages), .max = UINT32_MAX, .dflt = "0" },
    [K_RATE_WINDOW] = { "policy", "rate_window", T_SEC, CFG(rate_window_s),
                        .min = MS_PER_S, .max = MS_PER_D, .dflt = "1h" },
    [K_RELAY_HELP] = { "policy", "relay_help", T_TEXT, CFG(relay_help), .dflt = "" },

    /* [relay] */
    [K_SMARTHOST] = { "relay", "smarthost", T_HOSTPORT, CFG(smarthost), .dflt = "" },
    [K_DNS_SERVERS] = { "relay", "dns_servers", T_ADDRS, CFG(dns_servers),
                        COUNT(dns_server_count), .port = 53, .dflt = "" },
    [K_SOURCE_ADDRESSES] = { "relay", "source_addresses", T_SOURCES, CFG(source_addresses),
                             COUNT(source_address_count), .port = PORT_NONE, .dflt = "" },
    [K_RELAY_TLS] = { "relay", "tls", T_ENUM, CFG(relay_tls), .names = relay_tls_names,
                      .dflt = "may" },
    [K_RELAY_TLS_CA] = { "relay", "tls_ca_file", T_PATH, CFG(relay_tls_ca_file),
                         .dflt = "/etc/ssl/certs/ca-certificates.crt" },
    [K_RETRY_MIN] = { "relay", "retry_min", T_SEC, CFG(retry_min_s),
                      .min = MS_PER_S, .max = 7 * MS_PER_D, .dflt = "5m" },
    [K_RETRY_MAX] = { "relay", "retry_max", T_SEC, CFG(retry_max_s),
                      .min = MS_PER_S, .max = 30 * MS_PER_D, .dflt = "4h" },
    [K_QUEUE_LIFETIME] = { "relay", "queue_lifetime", T_SEC, CFG(queue_lifetime_s),
                           .min = MS_PER_S, .max = 365 * MS_PER_D, .dflt = "5d" },
    [K_RELAY_PORT] = { "relay", "port", T_UINT, CFG(relay_port), .min = 1, .max = 65535,
                       .dflt = "25" },
    [K_DEST_CONCURRENCY] = { "relay", "destination_concurrency", T_UINT,
                             CFG(dest_concurrency), .min = 1, .max = 1000, .dflt = "20" },
    [K_MSGS_PER_CONN] = { "relay", "messages_per_connection", T_UINT, CFG(msgs_per_conn),
                          .min = 1, .max = 100000, .dflt = "100" },
    [K_CONNECT_TIMEOUT] = { "relay", "connect_timeout", T_MS, CFG(connect_timeout_ms),
                            .min = 100, .max = 10 * MS_PER_M, .dflt = "30s" },
    [K_COMMAND_TIMEOUT] = { "relay", "command_timeout", T_MS, CFG(command_timeout_ms),
                            .min = 100, .max = MS_PER_D, .dflt = "300s" },
    [K_RELAY_CHUNKING] = { "relay", "chunking", T_BOOL, CFG(relay_chunking), .dflt = "yes" },

    /* [bpf] */
    [K_BPF_ENABLED] = { "bpf", "enabled", T_ENUM, CFG(bpf), .names = bpf_names,
                        .dflt = "auto" },
    [K_BPF_CONNECTIONS_PER_IP] = { "bpf", "max_connections_per_ip", T_UINT,
                                   CFG(bpf_connections_per_ip_max),
                                   .min = 0, .max = 1000000, .dflt = "50" },
    [K_BPF_CONNECTS_PER_IP_PER_S] = { "bpf", "max_connects_per_ip_per_s", T_UINT,
                                      CFG(bpf_connects_per_ip_per_s_max),
                                      .min = 0, .max = 1000000, .dflt = "20" },
    /* Postfix's smtpd_client_event_limit_exceptions: local clients are not limited. */
    [K_BPF_EXEMPT] = { "bpf", "exempt_networks", T_NETS, CFG(ip_limit_exempt),
                       COUNT(ip_limit_exempt_count), .dflt = "127.0.0.0/8, ::1/128" },
};

static const struct key_def listener_keys[LK_COUNT] = {
    [LK_LISTEN] = { "listener", "listen", T_ADDRS, LST(addrs),
                    .count_offset = offsetof(struct config_listener, addr_count),
                    .min = 1, .port = -1 },
    [LK_TLS] = { "listener", "tls", T_ENUM, LST(tls), .names = tls_names, .dflt = "none" },
    [LK_AUTH] = { "listener", "auth", T_ENUM, LST(auth), .names = auth_names, .dflt = "none" },
};

#define LISTENER_PREFIX      "listener."
#define LISTENER_PREFIX_LEN  (sizeof(LISTENER_PREFIX) - 1)
#define DEFAULT_LISTENER     "default"
#define DEFAULT_LISTEN       "127.0.0.1:2525"

/* One load in progress: the reader's line state, the open section, the problem count. */
struct parse_state {
    struct rr_config *cfg;        /* being built */
    FILE *in;                     /* the file, read by read_line(); NULL = no file */
    FILE *errs;                   /* where problems are written; NULL = count only */
    const char *file;             /* FILE of the messages */
    int problems;                 /* reported so far */
    uint32_t lineno;              /* the line read_line() last handed to inih */
    int read_errno;               /* a read error on in, 0 = none */
    bool in_section;              /* a [section] header has been seen */
    bool section_bad;             /* the open section is unknown: its keys are skipped */
    struct config_listener *listener; /* the open [listener.NAME], NULL for a flat section */
    char section[CONFIG_LINE_BYTES_MAX + 1]; /* the open section's full name */
    char raw[CONFIG_LINE_BYTES_MAX + 1];     /* the line being read */
};

/* ---------------------------------------------------------------------------------------- */
/* Reports                                                                                  */

static void vreport(FILE *errs, const char *file, struct config_origin o, const char *fmt,
                    va_list ap) __attribute__((format(printf, 4, 0)));
static int problem(struct parse_state *st, struct config_origin o, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* vreport - one "FILE:LINE: message" line; an override's FILE is "-o". */
static void vreport(FILE *errs, const char *file, struct config_origin o, const char *fmt,
                    va_list ap)
{
    if (!errs)
        return;
    fprintf(errs, "%s:%u: ", o.override ? "-o" : file, (unsigned)o.line);
    vfprintf(errs, fmt, ap);
    fputc('\n', errs);
}

/* problem - report during a load and count it; returns -1 so callers can "return problem()". */
static int problem(struct parse_state *st, struct config_origin o, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport(st->errs, st->file, o, fmt, ap);
    va_end(ap);
    st->problems++;
    return -1;
}

/* file_name - FILE of the messages about cfg. */
static const char *file_name(const struct rr_config *cfg)
{
    return cfg->path ? cfg->path : DEFAULT_FILE;
}

/* later - of two origins, the one the operator wrote last: -o beats the file, a higher line a
 * lower one, anything beats a default. Cross-key problems are reported there. */
static struct config_origin later(struct config_origin a, struct config_origin b)
{
    if (a.override != b.override)
        return a.override ? a : b;
    return a.line >= b.line ? a : b;
}

/* ---------------------------------------------------------------------------------------- */
/* Formatting, for messages                                                                 */

/* fmt_number - v as the key's type writes it. */
static const char *fmt_number(const struct key_def *def, uint64_t v, char *buf, size_t size)
{
    if (def->type == T_MS || def->type == T_SEC)
        return config_format_duration(v, buf, size);
    if (def->type == T_SIZE)
        return config_format_size(v, buf, size);
    snprintf(buf, size, def->type == T_US ? "%lluus" : "%llu", (unsigned long long)v);
    return buf;
}

/* enum_name_of - the primary name of an enum value. */
static const char *enum_name_of(const struct enum_name *names, int value)
{
    for (; names->name; names++)
        if (names->value == value && !names->alias)
            return names->name;
    return "?";
}

/* ---------------------------------------------------------------------------------------- */
/* Setters: one per type, all storing through the table's offset and size                  */

/* field_of - the field def describes, inside base (cfg or a listener). */
static void *field_of(void *base, const struct key_def *def)
{
    return (char *)base + def->offset;
}

/* store_uint - v into a 4- or 8-byte unsigned field; the table's bounds keep v in range. */
static void store_uint(void *p, size_t size, uint64_t v)
{
    if (size == sizeof(uint64_t)) {
        memcpy(p, &v, sizeof(v));
    } else {
        assert(size == sizeof(uint32_t) && v <= UINT32_MAX);
        uint32_t w = (uint32_t)v;
        memcpy(p, &w, sizeof(w));
    }
}

/* set_string - T_PATH, T_WORD, T_TEXT, T_HOSTNAME: a bounded copy. */
static int set_string(struct parse_state *st, const struct key_def *def, void *base,
                      const char *value, struct config_origin o)
{
    size_t len = strlen(value), max = def->max ? def->max : def->size - 1;

    assert(max < def->size);
    if (len > max)
        return problem(st, o, "%s: value too long (%zu bytes, max %zu)", def->name, len, max);
    if (len < def->min)
        return problem(st, o, "%s: must not be empty", def->name);
    if (def->type == T_WORD && len > 0) {
        for (const char *p = value; *p; p++)
            if (!config_is_alpha(*p) && !config_is_digit(*p) && *p != '.' && *p != '_' &&
                *p != '-')
                return problem(st, o, "%s: '%s' is not a user name (A-Z a-z 0-9 . _ -)",
                               def->name, value);
        if (*value == '-')
            return problem(st, o, "%s: '%s' is not a user name (starts with '-')",
                           def->name, value);
    }
    if (def->type == T_TEXT)
        for (const char *p = value; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                return problem(st, o, "%s: only printable ASCII may go into an SMTP reply "
                               "(byte 0x%02x)", def->name, (unsigned char)*p);
    if (def->type == T_HOSTNAME && !config_hostname_plausible(value))
        return problem(st, o, "%s: '%s' is not a plausible domain name "
                       "(labels of A-Z a-z 0-9 -, separated by dots)", def->name, value);
    memcpy(field_of(base, def), value, len + 1);
    return 0;
}

/* set_hostport - T_HOSTPORT: host[:port] or [address][:port], stored "host:port". */
static int set_hostport(struct parse_state *st, const struct key_def *def, void *base,
                        const char *value, struct config_origin o)
{
    char out[HOSTPORT_BYTES_MAX];

    if (*value == '\0') {
        *(char *)field_of(base, def) = '\0';
        return 0;
    }
    if (config_parse_hostport(value, SMTP_PORT, out, sizeof(out)))
        return problem(st, o, "%s: '%s' is not host[:port] or [address][:port]", def->name,
                       value);
    if (strlen(out) >= def->size)
        return problem(st, o, "%s: value too long (max %zu bytes)", def->name, def->size - 1);
    memcpy(field_of(base, def), out, strlen(out) + 1);
    return 0;
}

/* set_number - T_UINT, T_SIZE, T_MS, T_SEC: parse, check the bounds, store. */
static int set_number(struct parse_state *st, const struct key_def *def, void *base,
                      const char *value, struct config_origin o)
{
    char lo[32], hi[32];
    uint64_t v;
    int rc;

    switch (def->type) {
    case T_UINT:
        rc = config_parse_uint(value, &v);
        if (rc)
            return problem(st, o, "%s: '%s' is not a whole number", def->name, value);
        break;
    case T_SIZE:
        rc = config_parse_size(value, &v);
        if (rc)
            return problem(st, o, "%s: '%s' is not a size (a number of bytes, optionally "
                           "with K, M or G)", def->name, value);
        break;
    case T_US: {
        size_t len = strlen(value);
        const char *end;
        if (len > 2 && !strcmp(value + len - 2, "us")) {
            rc = config_parse_digits(value, &v, &end) || end != value + len - 2;
        } else {
            rc = config_parse_duration_ms(value, &v);
            if (!rc && v > UINT64_MAX / 1000)
                rc = -1;
            v *= 1000;
        }
        if (rc)
            return problem(st, o, "%s: '%s' is not a duration (a number with us, ms or s)",
                           def->name, value);
        break;
    }
    default:
        rc = config_parse_duration_ms(value, &v);
        if (rc)
            return problem(st, o, "%s: '%s' is not a duration (a number with s, m, h, d or "
                           "ms; bare = seconds)", def->name, value);
        break;
    }
    if (v < def->min || v > def->max)
        return problem(st, o, "%s: %s is out of range (%s..%s)", def->name, value,
                       fmt_number(def, def->min, lo, sizeof(lo)),
                       fmt_number(def, def->max, hi, sizeof(hi)));
    if (def->type == T_SEC) {
        if (v % MS_PER_S)
            return problem(st, o, "%s: %s is not a whole number of seconds", def->name, value);
        v /= MS_PER_S;
    }
    store_uint(field_of(base, def), def->size, v);
    return 0;
}

/* set_enum - T_ENUM: one of the names, any case. */
static int set_enum(struct parse_state *st, const struct key_def *def, void *base,
                    const char *value, struct config_origin o)
{
    char expected[128] = "";
    size_t used = 0;

    for (const struct enum_name *n = def->names; n->name; n++) {
        if (strcasecmp(value, n->name) == 0) {
            memcpy(field_of(base, def), &n->value, sizeof(int));
            return 0;
        }
    }
    for (const struct enum_name *n = def->names; n->name; n++) {
        if (n->alias)
            continue;
        int w = snprintf(expected + used, sizeof(expected) - used, "%s%s",
                         used ? " | " : "", n->name);
        if (w < 0 || (size_t)w >= sizeof(expected) - used)
            break;
        used += (size_t)w;
    }
    return problem(st, o, "%s: '%s' is not one of %s", def->name, value, expected);
}

/* addr_expected - what an address of this key looks like, for messages. */
static const char *addr_expected(int port)
{
    if (port == PORT_NONE)
        return "an address without a port (1.2.3.4 or 2001:db8::1)";
    if (port < 0)
        return "ADDRESS:PORT (1.2.3.4:25 or [::1]:25, numeric, no host names)";
    return "ADDRESS[:PORT] (1.2.3.4, 1.2.3.4:53 or [::1]:53, numeric)";
}

/* parse_addr_entry - one address of a T_ADDR or T_ADDRS key. */
static int parse_addr_entry(const struct key_def *def, const char *s, struct config_addr *a)
{
    if (config_parse_addr(s, def->port == PORT_NONE ? 0 : def->port, a))
        return -1;
    if (def->port == PORT_NONE) {
        struct sockaddr_in in4;
        memcpy(&in4, &a->sa, sizeof(in4));   /* sin_port and sin6_port share the offset */
        if (in4.sin_port != 0)
            return -1;
    }
    return 0;
}

/* ifname_ok - a name the kernel would take for a network device (dev_valid_name): 1..15
 * printable bytes, no '/', ':' or blank, not "." or ".."; nor ',' or '%', which end or
 * split an entry here. */
static bool ifname_ok(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len >= CONFIG_IFNAME_BYTES_MAX || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0)
        return false;
    for (const char *p = name; *p; p++)
        if (*p <= ' ' || *p > '~' || strchr("/:,%", *p))
            return false;
    return true;
}

/* parse_source_entry - one entry of [relay] source_addresses: an address without a port as
 * parse_addr_entry takes it (1.2.3.4, 2001:db8::1, [2001:db8::1]), optionally followed by
 * %INTERFACE. The '%' is looked for outside brackets only: "[fe80::1%eth0]" is refused
 * rather than read two ways. A link-local IPv6 address needs its interface; an IPv4-mapped
 * one (::ffff:a.b.c.d) is the IPv4 address, which is what an IPv4 destination gets. */
static int parse_source_entry(const struct key_def *def, const char *s,
                              struct config_source *out)
{
    char addr[TOKEN_BYTES_MAX];
    const char *close = s[0] == '[' ? strchr(s, ']') : NULL;
    const char *pct = strchr(close ? close : s, '%');
    size_t len = pct ? (size_t)(pct - s) : strlen(s);
    struct config_source src;

    memset(&src, 0, sizeof(src));
    if (len >= sizeof(addr) || (s[0] == '[' && (!close || memchr(s, '%', (size_t)(close - s)))))
        return -1;
    memcpy(addr, s, len);
    addr[len] = '\0';
    if (parse_addr_entry(def, addr, &src.addr))
        return -1;
    if (pct) {
        if (!ifname_ok(pct + 1))
            return -1;
        memcpy(src.ifname, pct + 1, strlen(pct + 1) + 1);
    }
    if (src.addr.sa.ss_family == AF_INET6) {
        struct sockaddr_in6 in6;
        memcpy(&in6, &src.addr.sa, sizeof(in6));
        if (IN6_IS_ADDR_LINKLOCAL(&in6.sin6_addr) && !src.ifname[0])
            return -1;
        if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
            /* an IPv4 source, as config_parse_net stores a mapped network */
            struct sockaddr_in in4 = { .sin_family = AF_INET };
            memcpy(&in4.sin_addr, &in6.sin6_addr.s6_addr[12], 4);
            memset(&src.addr, 0, sizeof(src.addr));
            memcpy(&src.addr.sa, &in4, sizeof(in4));
            src.addr.len = sizeof(in4);
        }
    }
    *out = src;
    return 0;
}

/* list_expected - what one entry of a list key looks like, for messages. */
static const char *list_expected(const struct key_def *def)
{
    if (def->type == T_SOURCES)
        return "an address without a port, optionally with %INTERFACE (1.2.3.4, 2001:db8::1, "
               "1.2.3.4%eth1 or [2001:db8::1]%eth1; fe80:: addresses need the interface)";
    if (def->type == T_ADDRS)
        return addr_expected(def->port);
    return "a network (1.2.3.0/24, 2001:db8::/32 or an address)";
}

/* set_list - T_ADDRS, T_SOURCES, T_NETS: entries separated by commas and/or blanks; the
 * whole list replaces the old one, or nothing changes. */
static int set_list(struct parse_state *st, const struct key_def *def, void *base,
                    const char *value, struct config_origin o)
{
    union {
        struct config_addr addrs[CONFIG_ADDRS_MAX];
        struct config_source sources[CONFIG_ADDRS_MAX];
        struct config_net nets[CONFIG_NETS_MAX];
    } tmp;
    bool addrs = def->type == T_ADDRS, sources = def->type == T_SOURCES;
    size_t elem = addrs ? sizeof(struct config_addr)
                        : sources ? sizeof(struct config_source) : sizeof(struct config_net);
    size_t cap = def->size / elem, max = def->max ? def->max : cap;
    char token[TOKEN_BYTES_MAX];
    const char *p = value;
    unsigned n = 0;

    assert(cap * elem <= sizeof(tmp) && max <= cap);
    memset(&tmp, 0, sizeof(tmp));
    for (;;) {
        while (*p == ',' || config_is_blank(*p))
            p++;
        if (*p == '\0')
            break;
        size_t len = strcspn(p, ", \t");
        if (n == max)
            return problem(st, o, "%s: too many entries (max %zu)", def->name, max);
        if (len >= sizeof(token))
            return problem(st, o, "%s: '%.*s' is too long to be %s", def->name, (int)len, p,
                           list_expected(def));
        memcpy(token, p, len);
        token[len] = '\0';
        p += len;
        if (addrs ? parse_addr_entry(def, token, &tmp.addrs[n])
                  : sources ? parse_source_entry(def, token, &tmp.sources[n])
                            : config_parse_net(token, &tmp.nets[n]))
            return problem(st, o, "%s: '%s' is not %s", def->name, token, list_expected(def));
        n++;
    }
    if (n < def->min)
        return problem(st, o, "%s: needs at least %llu %s", def->name,
                       (unsigned long long)def->min, def->type == T_NETS ? "network" : "address");
    memcpy(field_of(base, def), &tmp, cap * elem);
    memcpy((char *)base + def->count_offset, &n, sizeof(n));
    return 0;
}

/* set_key - parse value as def says and store it into base (cfg or a listener). Reports and
 * returns -1 on a malformed value; the field then keeps what it had. */
static int set_key(struct parse_state *st, const struct key_def *def, void *base,
                   const char *value, struct config_origin o)
{
    switch (def->type) {
    case T_PATH:
    case T_WORD:
    case T_TEXT:
    case T_HOSTNAME:
        return set_string(st, def, base, value, o);
    case T_HOSTPORT:
        return set_hostport(st, def, base, value, o);
    case T_UINT:
    case T_SIZE:
    case T_MS:
    case T_SEC:
    case T_US:
        return set_number(st, def, base, value, o);
    case T_BOOL: {
        bool b;
        if (config_parse_bool(value, &b))
            return problem(st, o, "%s: '%s' is not yes, no, true, false, on, off, 1 or 0",
                           def->name, value);
        memcpy(field_of(base, def), &b, sizeof(b));
        return 0;
    }
    case T_ENUM:
        return set_enum(st, def, base, value, o);
    case T_ADDR: {
        struct config_addr a;
        if (*value == '\0')
            memset(&a, 0, sizeof(a));       /* len 0 = off */
        else if (parse_addr_entry(def, value, &a))
            return problem(st, o, "%s: '%s' is not %s", def->name, value,
                           addr_expected(def->port));
        memcpy(field_of(base, def), &a, sizeof(a));
        return 0;
    }
    case T_ADDRS:
    case T_SOURCES:
    case T_NETS:
        return set_list(st, def, base, value, o);
    case T_DATE: {
        int64_t t;
        if (config_parse_date(value, &t))
            return problem(st, o, "%s: '%s' is not a date YYYY-MM-DD (1970 or later)",
                           def->name, value);
        memcpy(field_of(base, def), &t, sizeof(t));
        return 0;
    }
    }
    assert(!"unknown key type");
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Sections and keys                                                                        */

/* find_key - the row of table for name, or -1. */
static int find_key(const struct key_def *table, int count, const char *section,
                    const char *name)
{
    for (int i = 0; i < count; i++)
        if (strcmp(table[i].section, section) == 0 && strcmp(table[i].name, name) == 0)
            return i;
    return -1;
}

/* listener_name_ok - 1..63 of A-Z a-z 0-9 _ -. */
static bool listener_name_ok(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len >= CONFIG_NAME_BYTES_MAX)
        return false;
    for (const char *p = name; *p; p++)
        if (!config_is_alpha(*p) && !config_is_digit(*p) && *p != '_' && *p != '-')
            return false;
    return true;
}

/* is_listener_section - "listener." + anything. */
static bool is_listener_section(const char *section)
{
    return strncmp(section, LISTENER_PREFIX, LISTENER_PREFIX_LEN) == 0;
}

/* listener_index - the index of the listener called name, or -1. */
static int listener_index(const struct rr_config *cfg, const char *name)
{
    for (unsigned i = 0; i < cfg->listener_count; i++)
        if (strcmp(cfg->listeners[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* listener_add - a new listener with the defaults of listener_keys[]; NULL when full. */
static struct config_listener *listener_add(struct parse_state *st, const char *name,
                                            struct config_origin o)
{
    struct rr_config *cfg = st->cfg;
    struct config_listener *l;
    int before = st->problems;

    if (cfg->listener_count == CONFIG_LISTENERS_MAX)
        return NULL;
    l = &cfg->listeners[cfg->listener_count++];
    memset(l, 0, sizeof(*l));
    memcpy(l->name, name, strlen(name) + 1);    /* checked by listener_name_ok() */
    l->origin = o;
    for (int i = 0; i < LK_COUNT; i++)
        if (listener_keys[i].dflt)
            set_key(st, &listener_keys[i], l, listener_keys[i].dflt, (struct config_origin){ 0 });
    assert(st->problems == before);             /* the defaults are valid */
    return l;
}

/* open_section - resolve a section name, creating a [listener.NAME] on first sight.
 * *lp is the listener or NULL for a flat section; -1 (reported) for an unknown section. */
static int open_section(struct parse_state *st, const char *section, struct config_origin o,
                        struct config_listener **lp)
{
    *lp = NULL;
    if (is_listener_section(section)) {
        const char *name = section + LISTENER_PREFIX_LEN;
        if (!listener_name_ok(name))
            return problem(st, o, "[%s]: a listener name is 1..%d of A-Z a-z 0-9 _ -",
                           section, CONFIG_NAME_BYTES_MAX - 1);
        int i = listener_index(st->cfg, name);
        *lp = i >= 0 ? &st->cfg->listeners[i] : listener_add(st, name, o);
        if (!*lp)
            return problem(st, o, "[%s]: too many listeners (max %d)", section,
                           CONFIG_LISTENERS_MAX);
        return 0;
    }
    for (int i = 0; i < K_COUNT; i++)
        if (strcmp(keys[i].section, section) == 0)
            return 0;
    return problem(st, o, "unknown section [%s]", section);
}

/* apply_key - one "key = value" of section (listener l, or a flat section when l is NULL). */
static int apply_key(struct parse_state *st, const char *section, struct config_listener *l,
                     const char *name, const char *value, struct config_origin o)
{
    const struct key_def *table = l ? listener_keys : keys;
    struct config_origin *origins = l ? l->key_origin : st->cfg->origin;
    void *base = l ? (void *)l : (void *)st->cfg;
    int i = find_key(table, l ? LK_COUNT : K_COUNT, l ? "listener" : section, name);

    if (i < 0)
        return problem(st, o, "unknown key '%s' in section [%s]", name, section);
    if (!o.override && origins[i].line && !origins[i].override)
        return problem(st, o, "%s: set twice in [%s] (first at line %u)", name, section,
                       (unsigned)origins[i].line);
    origins[i] = o;
    return set_key(st, &table[i], base, value, o);
}

/* ---------------------------------------------------------------------------------------- */
/* The file: read_line() in front of inih, on_key() behind it                               */

/* comment_start - an inline comment: '#' or ';' after a blank. */
static char *comment_start(char *s)
{
    for (char *p = s + 1; *p; p++)
        if ((*p == '#' || *p == ';') && config_is_blank(p[-1]))
            return p;
    return NULL;
}

/* rtrim - drop trailing blanks in place. */
static void rtrim(char *s)
{
    size_t len = strlen(s);
    while (len && config_is_blank(s[len - 1]))
        s[--len] = '\0';
}

/* skip_blanks - past leading blanks. */
static char *skip_blanks(char *s)
{
    while (config_is_blank(*s))
        s++;
    return s;
}

/* header_line - a "[section]" line (brackets already removed): open it for the keys below. */
static void header_line(struct parse_state *st, char *name, struct config_origin o)
{
    struct config_listener *l;

    st->in_section = true;
    st->section_bad = open_section(st, name, o, &l) != 0;
    st->listener = l;
    memcpy(st->section, name, strlen(name) + 1);  /* both are CONFIG_LINE_BYTES_MAX + 1 */
}

/* read_line - the ini_reader: one normalised file line per call, see DESIGN. */
static char *read_line(char *str, int num, void *stream)
{
    struct parse_state *st = stream;
    struct config_origin o;
    size_t len = 0, n;
    bool too_long = false;
    char *line, *eq, *hash;
    int c;

    while ((c = getc(st->in)) != EOF && c != '\n') {
        if (len < CONFIG_LINE_BYTES_MAX)
            st->raw[len++] = (char)c;
        else
            too_long = true;
    }
    if (c == EOF && ferror(st->in))
        st->read_errno = errno ? errno : EIO;
    if (c == EOF && len == 0 && !too_long)
        return NULL;
    st->raw[len] = '\0';
    o = (struct config_origin){ ++st->lineno, false };

    if (too_long) {
        problem(st, o, "line too long (max %d bytes)", CONFIG_LINE_BYTES_MAX);
        goto blank;
    }
    if (len && st->raw[len - 1] == '\r')
        st->raw[--len] = '\0';
    for (size_t i = 0; i < len; i++) {
        unsigned char u = (unsigned char)st->raw[i];
        if ((u < 0x20 && u != '\t') || u == 0x7f) {
            problem(st, o, "control character 0x%02x in line", u);
            goto blank;
        }
    }
    line = st->raw;
    if (st->lineno == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
        line += 3;                      /* a UTF-8 byte order mark */
    line = skip_blanks(line);
    if (*line == '#' || *line == ';')
        goto blank;
    if ((hash = comment_start(line)))
        *hash = '\0';
    rtrim(line);
    if (*line == '\0')
        goto blank;

    n = strlen(line);
    if (*line == '[') {
        if (line[n - 1] != ']') {
            problem(st, o, "expected ']' at the end of the section header");
            goto blank;
        }
        line[n - 1] = '\0';
        header_line(st, line + 1, o);
        line[n - 1] = ']';              /* inih still sees the header; its copy is unused */
    } else {
        eq = strchr(line, '=');
        if (!eq || eq == line) {
            problem(st, o, "expected 'key = value', '[section]' or a comment");
            goto blank;
        }
        if (memchr(line, ':', (size_t)(eq - line))) {
            /* inih would take ':' as the separator; keys never hold one */
            problem(st, o, "expected 'key = value': a key has no ':'");
            goto blank;
        }
    }
    if (n + 2 > (size_t)num) {
        problem(st, o, "line too long for the INI parser (max %d bytes)", num - 2);
        goto blank;
    }
    memcpy(str, line, n);
    str[n] = '\n';
    str[n + 1] = '\0';
    return str;
blank:
    /* keep inih's line count equal to ours: a rejected or comment line is an empty line */
    str[0] = '\n';
    str[1] = '\0';
    return str;
}

/* on_key - the inih handler: one "name = value" line. The section argument is inih's copy,
 * truncated to 49 bytes; st->section is the full name. Always 1: problems are counted here. */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct parse_state *st = user;
    struct config_origin o = { st->lineno, false };

    if (!st->in_section)
        problem(st, o, "key '%s' before any [section]", name);
    else if (!st->section_bad)
        apply_key(st, st->section, st->listener, name, value, o);
    return 1;
}

/* parse_file - run inih over st->in with a line buffer of CONFIG_LINE_BYTES_MAX. */
static void parse_file(struct parse_state *st)
{
    /* Debian's libinih takes these at run time; upstream's are compile-time constants. */
    bool use_stack = ini_use_stack, allow_realloc = ini_allow_realloc;
    int max_line = ini_max_line, initial_alloc = ini_initial_alloc, rc;

    ini_use_stack = false;
    ini_allow_realloc = false;
    ini_max_line = ini_initial_alloc = CONFIG_LINE_BYTES_MAX + 3;  /* + '\r' '\n' '\0' */
    rc = ini_parse_stream(read_line, st, on_key, st);
    ini_use_stack = use_stack;
    ini_allow_realloc = allow_realloc;
    ini_max_line = max_line;
    ini_initial_alloc = initial_alloc;

    if (rc == -2)
        problem(st, (struct config_origin){ st->lineno, false }, "out of memory");
    else if (rc > 0)    /* read_line() lets no line through that inih would refuse */
        problem(st, (struct config_origin){ (uint32_t)rc, false }, "syntax error");
    if (st->read_errno)
        problem(st, (struct config_origin){ st->lineno, false }, "read error: %s",
                strerror(st->read_errno));
}

/* ---------------------------------------------------------------------------------------- */
/* Overrides                                                                                */

/* trim - without leading and trailing blanks (in place). */
static char *trim(char *s)
{
    s = skip_blanks(s);
    rtrim(s);
    return s;
}

/* apply_override - the n-th "-o section.key=value"; the section is everything before the last
 * dot before '=', so "listener.smtp.auth=required" is [listener.smtp] auth. */
static void apply_override(struct parse_state *st, const char *text, unsigned n)
{
    struct config_origin o = { n, true };
    char buf[CONFIG_LINE_BYTES_MAX + 1];
    size_t len = strlen(text);
    char *eq, *lhs, *dot, *value;
    struct config_listener *l;

    if (len > CONFIG_LINE_BYTES_MAX) {
        problem(st, o, "override too long (max %d bytes)", CONFIG_LINE_BYTES_MAX);
        return;
    }
    for (const char *p = text; *p; p++) {
        unsigned char u = (unsigned char)*p;
        if ((u < 0x20 && u != '\t') || u == 0x7f) {
            problem(st, o, "control character 0x%02x in override", u);
            return;
        }
    }
    memcpy(buf, text, len + 1);
    eq = strchr(buf, '=');
    if (!eq) {
        problem(st, o, "expected section.key=value, got '%s'", text);
        return;
    }
    *eq = '\0';
    value = trim(eq + 1);
    lhs = trim(buf);
    dot = strrchr(lhs, '.');
    if (!dot || dot == lhs || dot[1] == '\0') {
        problem(st, o, "expected section.key=value, got '%s'", text);
        return;
    }
    *dot = '\0';
    /* an unknown key must not leave a new, empty listener behind */
    if (is_listener_section(lhs) && find_key(listener_keys, LK_COUNT, "listener", dot + 1) < 0) {
        problem(st, o, "unknown key '%s' in section [%s]", dot + 1, lhs);
        return;
    }
    if (open_section(st, lhs, o, &l))
        return;
    apply_key(st, lhs, l, dot + 1, value, o);
}

/* ---------------------------------------------------------------------------------------- */
/* Defaults and cross-key checks                                                            */

/* set_defaults - every key's default from the table; hostname from gethostname(). */
static void set_defaults(struct parse_state *st)
{
    struct rr_config *cfg = st->cfg;
    char host[HOST_NAME_MAX + 1];

    memset(cfg, 0, sizeof(*cfg));
    for (int i = 0; i < K_COUNT; i++)
        if (keys[i].dflt)
            set_key(st, &keys[i], cfg, keys[i].dflt, (struct config_origin){ 0 });
    assert(st->problems == 0);          /* the table's defaults are valid */
    if (gethostname(host, sizeof(host)) == 0) {
        host[sizeof(host) - 1] = '\0';
        if (strlen(host) < sizeof(cfg->hostname))
            memcpy(cfg->hostname, host, strlen(host) + 1);
    }
}

/* addr_equal - same family, address and port; an unset address equals nothing. */
static bool addr_equal(const struct config_addr *a, const struct config_addr *b)
{
    return a->len == b->len && a->len && memcmp(&a->sa, &b->sa, a->len) == 0;
}

/* check_listeners - each has listen; TLS needs a certificate; AUTH needs a user database;
 * no address is bound twice (nor by metrics_listen). */
static void check_listeners(struct parse_state *st)
{
    struct rr_config *cfg = st->cfg;
    char buf[INET6_ADDRSTRLEN + 16];

    for (unsigned i = 0; i < cfg->listener_count; i++) {
        struct config_listener *l = &cfg->listeners[i];

        if (l->addr_count == 0)
            problem(st, l->origin, "[listener.%s]: listen is required", l->name);
        if (l->tls != TLS_NONE && (!cfg->tls_cert[0] || !cfg->tls_key[0]))
            problem(st, l->key_origin[LK_TLS], "tls: %s on [listener.%s] needs [tls] cert "
                    "and key", enum_name_of(tls_names, (int)l->tls), l->name);
        if (l->auth != AUTH_NONE && !cfg->passwd_file[0] && !cfg->dovecot_socket[0])
            problem(st, l->key_origin[LK_AUTH], "auth: %s on [listener.%s] needs [auth] "
                    "passwd_file or dovecot_socket", enum_name_of(auth_names, (int)l->auth),
                    l->name);
        for (unsigned a = 0; a < l->addr_count; a++) {
            const struct config_listener *seen = NULL;
            for (unsigned j = 0; j <= i && !seen; j++) {
                const struct config_listener *m = &cfg->listeners[j];
                unsigned end = j == i ? a : m->addr_count;
                for (unsigned b = 0; b < end && !seen; b++)
                    if (addr_equal(&l->addrs[a], &m->addrs[b]))
                        seen = m;
            }
            if (seen)
                problem(st, l->key_origin[LK_LISTEN], "listen: %s is already used by "
                        "[listener.%s]", config_format_addr(&l->addrs[a], buf, sizeof(buf)),
                        seen->name);
            if (addr_equal(&l->addrs[a], &cfg->metrics_listen))
                problem(st, later(cfg->origin[K_METRICS_LISTEN], l->key_origin[LK_LISTEN]),
                        "metrics_listen: %s is also a listen address of [listener.%s]",
                        config_format_addr(&l->addrs[a], buf, sizeof(buf)), l->name);
        }
    }
}

/* check_cross - the rules that involve more than one key, after the overrides. */
static void check_cross(struct parse_state *st)
{
    struct rr_config *cfg = st->cfg;
    const struct config_origin *org = cfg->origin;
    char lo[32], hi[32];

    if (org[K_HOSTNAME].line == 0 && !config_hostname_plausible(cfg->hostname))
        problem(st, org[K_HOSTNAME], "hostname: '%s' from gethostname() is not a plausible "
                "domain name; set [server] hostname", cfg->hostname);
    if (cfg->retry_min_s > cfg->retry_max_s)
        problem(st, later(org[K_RETRY_MIN], org[K_RETRY_MAX]),
                "retry_min (%s) is above retry_max (%s)",
                config_format_duration(cfg->retry_min_s * MS_PER_S, lo, sizeof(lo)),
                config_format_duration(cfg->retry_max_s * MS_PER_S, hi, sizeof(hi)));
    if (cfg->passwd_file[0] && cfg->dovecot_socket[0])
        problem(st, later(org[K_PASSWD_FILE], org[K_DOVECOT_SOCKET]),
                "set [auth] passwd_file or dovecot_socket, not both");
    check_listeners(st);
}

/* ---------------------------------------------------------------------------------------- */
/* Loading                                                                                  */

/* load - defaults, the file (in, or the open error open_errno), the default listener when the
 * file has none, the overrides, the cross-key checks. */
static int load(struct rr_config *cfg, FILE *in, const char *name, int open_errno,
                char *const *overrides, unsigned override_count, FILE *errs)
{
    struct parse_state *st = calloc(1, sizeof(*st));   /* ~8K: kept off the caller's stack */
    int problems;

    if (!st) {
        memset(cfg, 0, sizeof(*cfg));
        if (errs)
            fprintf(errs, "%s:0: out of memory\n", name ? name : DEFAULT_FILE);
        return 1;
    }
    st->cfg = cfg;
    st->in = in;
    st->errs = errs;
    set_defaults(st);
    if (name && !(cfg->path = strdup(name)))
        problem(st, (struct config_origin){ 0 }, "out of memory");
    st->file = name ? name : DEFAULT_FILE;

    if (open_errno)
        problem(st, (struct config_origin){ 0 }, "cannot open: %s", strerror(open_errno));
    else if (in)
        parse_file(st);
    if (cfg->listener_count == 0) {
        struct config_listener *l = listener_add(st, DEFAULT_LISTENER, (struct config_origin){ 0 });
        set_key(st, &listener_keys[LK_LISTEN], l, DEFAULT_LISTEN, (struct config_origin){ 0 });
    }
    for (unsigned i = 0; i < override_count; i++)
        apply_override(st, overrides[i], i + 1);
    check_cross(st);
    problems = st->problems;
    free(st);
    return problems;
}

int config_load_stream(struct rr_config *cfg, FILE *in, const char *name,
                       char *const *overrides, unsigned override_count, FILE *errs)
{
    return load(cfg, in, name, 0, overrides, override_count, errs);
}

int config_load(struct rr_config *cfg, const char *path, char *const *overrides,
                unsigned override_count, FILE *errs)
{
    FILE *in = NULL;
    int open_errno = 0, problems;

    if (path && !(in = fopen(path, "r")))
        open_errno = errno ? errno : EIO;
    problems = load(cfg, in, path, open_errno, overrides, override_count, errs);
    if (in)
        fclose(in);
    return problems;
}

void config_free(struct rr_config *cfg)
{
    resources_release(cfg);
    free(cfg->path);
    memset(cfg, 0, sizeof(*cfg));
}

const char *config_where(const struct rr_config *cfg, const char *section, const char *key,
                         char *buf, size_t size)
{
    struct config_origin o;
    int i;

    if (is_listener_section(section)) {
        int l = listener_index(cfg, section + LISTENER_PREFIX_LEN);
        i = find_key(listener_keys, LK_COUNT, "listener", key);
        if (l < 0 || i < 0)
            return NULL;
        o = cfg->listeners[l].key_origin[i];
    } else {
        i = find_key(keys, K_COUNT, section, key);
        if (i < 0)
            return NULL;
        o = cfg->origin[i];
    }
    snprintf(buf, size, "%s:%u", o.override ? "-o" : file_name(cfg), (unsigned)o.line);
    return buf;
}
