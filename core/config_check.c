/*
 * config_check.c - the -t checks beyond syntax: the files a loaded configuration names.
 *
 * FUNCTIONS
 *   config_check_files    every file named exists and is readable, the spool directory
 *                         exists or can be created, every interface named by [relay]
 *                         source_addresses (ADDRESS%INTERFACE) exists
 *
 * DESIGN
 *   Built on core/config.h alone: paths are read from struct rr_config, and every problem is
 *   reported at the line of the key that named the file through config_where(), as
 *   "FILE:LINE: message" ("-o:N: message" for an override, "FILE:0" for a default), the same
 *   form config_load() uses.
 *   [auth] dovecot_socket is not looked at: Dovecot may start after ringrelay (or be
 *   restarted meanwhile), and a login is refused with a temporary error until it is up;
 *   Postfix does not check smtpd_sasl_path either. config_load() has already refused a path
 *   too long for a socket address, and passwd_file together with dovecot_socket.
 *
 * SECURITY
 *   Paths come from the operator. Only regular files are opened, and only to test that they
 *   can be: a FIFO named by mistake would block -t forever. Nothing is created or changed;
 *   the answers hold for the moment of the check only (main.c opens and creates for real
 *   later, and reports its own errors).
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"

/* Where config_where() writes "FILE:LINE": a FILE that config_load() could open is shorter
 * than PATH_MAX, plus "-o" or ":" and the digits of a line. */
#define WHERE_BYTES_MAX (PATH_MAX + 16)

/* The keys that name a file to read, in the order of their messages. */
static const struct file_key {
    const char *section;          /* as config_where() takes it */
    const char *key;              /* as config_where() takes it, and as messages name it */
    size_t offset;                /* of the path in struct rr_config */
} file_keys[] = {
    { "tls", "cert", offsetof(struct rr_config, tls_cert) },
    { "tls", "key", offsetof(struct rr_config, tls_key) },
    { "auth", "passwd_file", offsetof(struct rr_config, passwd_file) },
    { "policy", "hosted_domains", offsetof(struct rr_config, hosted_domains) },
    { "policy", "sender_logins", offsetof(struct rr_config, sender_logins) },
    { "policy", "notify_template", offsetof(struct rr_config, notify_template) },
    { "policy", "host_registry", offsetof(struct rr_config, host_registry) },
};

static int report(FILE *errs, const struct rr_config *cfg, const char *section, const char *key,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* report - one "FILE:LINE: KEY: message" line, at the line of section/key; returns 1, the
 * count to add. */
static int report(FILE *errs, const struct rr_config *cfg, const char *section, const char *key,
                  const char *fmt, ...)
{
    char where[WHERE_BYTES_MAX];
    const char *at;
    va_list ap;

    if (!errs)
        return 1;
    at = config_where(cfg, section, key, where, sizeof(where));
    assert(at);                   /* every key of this file is in config.c's tables */
    fprintf(errs, "%s: %s: ", at, key);
    va_start(ap, fmt);
    vfprintf(errs, fmt, ap);
    va_end(ap);
    fputc('\n', errs);
    return 1;
}

/* unreadable - NULL when path is a regular file this process can open, else why not.
 * Only regular files: opening a FIFO named by mistake would block -t forever. */
static const char *unreadable(const char *path)
{
    struct stat sb;
    FILE *f;

    if (stat(path, &sb))
        return strerror(errno);
    if (S_ISDIR(sb.st_mode))
        return strerror(EISDIR);
    if (!S_ISREG(sb.st_mode))
        return "not a regular file";
    if (access(path, R_OK))
        return strerror(errno);
    if (!(f = fopen(path, "r")))
        return strerror(errno);
    fclose(f);
    return NULL;
}

/* parent_dir - cut the last component of path in place: "a/b/" -> "a", "b" -> ".", "/b" -> "/". */
static void parent_dir(char *path)
{
    size_t len = strlen(path);
    char *slash;

    while (len > 1 && path[len - 1] == '/')
        path[--len] = '\0';
    slash = strrchr(path, '/');
    if (!slash)
        strcpy(path, ".");
    else if (slash == path)
        path[1] = '\0';
    else
        *slash = '\0';
}

/* check_spool - spool_dir is a writable directory, or does not exist yet and its nearest
 * existing ancestor is a writable directory: main.c creates the rest as "mkdir -p" would. */
static int check_spool(const struct rr_config *cfg, FILE *errs)
{
    const char *dir = cfg->spool_dir;
    char parent[CONFIG_PATH_BYTES_MAX];
    struct stat sb;

    if (stat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode))
            return report(errs, cfg, "server", "spool_dir", "%s is not a directory", dir);
        if (access(dir, W_OK | X_OK))
            return report(errs, cfg, "server", "spool_dir", "%s is not writable: %s", dir,
                          strerror(errno));
        return 0;
    }
    if (errno != ENOENT && errno != ENOTDIR)  /* ENOTDIR: a file on the way, found below */
        return report(errs, cfg, "server", "spool_dir", "%s: %s", dir, strerror(errno));

    memcpy(parent, dir, strlen(dir) + 1);     /* both CONFIG_PATH_BYTES_MAX */
    for (;;) {
        parent_dir(parent);
        if (stat(parent, &sb) == 0)
            break;
        if ((errno != ENOENT && errno != ENOTDIR) || strcmp(parent, ".") == 0 ||
            strcmp(parent, "/") == 0)
            return report(errs, cfg, "server", "spool_dir", "%s cannot be created: %s: %s", dir,
                          parent, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode))
        return report(errs, cfg, "server", "spool_dir",
                      "%s cannot be created: %s is not a directory", dir, parent);
    if (access(parent, W_OK | X_OK))
        return report(errs, cfg, "server", "spool_dir",
                      "%s cannot be created: %s is not writable: %s", dir, parent,
                      strerror(errno));
    return 0;
}

/* check_interfaces - every interface a source address names exists now (if_nametoindex).
 * Only here, at -t and at a reload: a device created after the start (a VLAN, a tunnel) is
 * not a reason to refuse to start, and until it exists a connection from that source fails
 * with its reason. Whether the address is on that interface is not asked: an address on a
 * loopback or dummy device, sent out through a NIC, is a usual set-up. */
static int check_interfaces(const struct rr_config *cfg, FILE *errs)
{
    int problems = 0;

    for (unsigned i = 0; i < cfg->source_address_count; i++) {
        const char *name = cfg->source_addresses[i].ifname;
        bool seen = false;

        for (unsigned j = 0; j < i && !seen; j++)
            seen = strcmp(cfg->source_addresses[j].ifname, name) == 0;
        if (*name && !seen && if_nametoindex(name) == 0)
            problems += report(errs, cfg, "relay", "source_addresses", "unknown interface %s: %s",
                               name, strerror(errno));
    }
    return problems;
}

/* config_check_files - the -t checks (see core/config.h). */
int config_check_files(const struct rr_config *cfg, FILE *errs)
{
    const char *why;
    int problems = 0;

    for (size_t i = 0; i < sizeof(file_keys) / sizeof(file_keys[0]); i++) {
        const struct file_key *f = &file_keys[i];
        const char *path = (const char *)cfg + f->offset;
        if (*path && (why = unreadable(path)))
            problems += report(errs, cfg, f->section, f->key, "cannot read %s: %s", path, why);
    }
    if (cfg->relay_tls == RELAY_TLS_VERIFY && (why = unreadable(cfg->relay_tls_ca_file)))
        problems += report(errs, cfg, "relay", "tls_ca_file", "cannot read %s: %s",
                           cfg->relay_tls_ca_file, why);
    problems += check_spool(cfg, errs);
    problems += check_interfaces(cfg, errs);
    return problems;
}
