/*
 * resources.c - load the TLS contexts, the password database, the policy maps and the
 * relaying notice's template a configuration names.
 *
 * Functions: resources_load(), resources_release().
 *
 * Everything here reads files and may take milliseconds (a CA bundle, a large passwd-file),
 * so it runs on the main thread only; workers get the result with the configuration.
 *
 * SECURITY: the key file and the password file hold secrets; they are read once here, before
 * privileges are dropped at start-up (a reload reads them as the unprivileged user, so they
 * must stay readable to it, as with Postfix's smtpd_tls_key_file after a reload).
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "core/notify.h"
#include "core/passwd.h"
#include "core/policy.h"
#include "core/resources.h"
#include "tls/tls.h"

/* problem - one "FILE:LINE: section key: message" line about a key of cfg. */
static int problem(FILE *errs, const struct rr_config *cfg, const char *section,
                   const char *key, const char *msg)
{
    char where[CONFIG_PATH_BYTES_MAX + 32];

    if (errs) {
        const char *at = config_where(cfg, section, key, where, sizeof(where));
        fprintf(errs, "%s: %s: %s\n", at ? at : "-", key, msg);
    }
    return 1;
}

/* uses_tls - whether any listener needs the server context. */
static bool uses_tls(const struct rr_config *cfg)
{
    for (unsigned i = 0; i < cfg->listener_count; i++)
        if (cfg->listeners[i].tls != TLS_NONE)
            return true;
    return false;
}

/* resources_load - see resources.h. */
int resources_load(struct rr_config *cfg, FILE *errs)
{
    char err[TLS_ERROR_BYTES + CONFIG_PATH_BYTES_MAX];
    int problems = 0;

    /* A certificate that is configured is loaded even with no TLS listener, so -t checks it
     * and a later listener change finds it good. */
    if (cfg->tls_cert[0] && cfg->tls_key[0]) {
        cfg->tls_server_ctx = tls_server_ctx(cfg->tls_cert, cfg->tls_key, err, sizeof(err));
        if (!cfg->tls_server_ctx)
            problems += problem(errs, cfg, "tls", "cert", err);
    } else if (uses_tls(cfg)) {
        problems += problem(errs, cfg, "tls", "cert", "a TLS listener needs [tls] cert and key");
    }
    if (cfg->relay_tls != RELAY_TLS_NONE) {
        const char *ca = cfg->relay_tls == RELAY_TLS_VERIFY ? cfg->relay_tls_ca_file : NULL;
        cfg->tls_client_ctx = tls_client_ctx(ca, err, sizeof(err));
        if (!cfg->tls_client_ctx)
            problems += problem(errs, cfg, "relay", ca ? "tls_ca_file" : "tls", err);
    }
    if (cfg->passwd_file[0]) {
        int bad = 0;
        cfg->passwd_db = passwd_load(cfg->passwd_file, errs, &bad);
        if (!cfg->passwd_db) {
            snprintf(err, sizeof(err), "cannot read %s: %s", cfg->passwd_file, strerror(errno));
            problems += problem(errs, cfg, "auth", "passwd_file", err);
        }
        problems += bad;
    }
    /* hosted_domains, sender_logins, host_registry: bad lines are reported as FILE:LINE and
     * refuse the configuration like a bad passwd-file line does. */
    cfg->policy_maps = policy_maps_load(cfg, errs, &problems);
    problems += notify_template_load(cfg, errs);  /* the relaying notice's text */
    return problems;
}

/* resources_release - see resources.h. */
void resources_release(struct rr_config *cfg)
{
    if (cfg->tls_server_ctx)
        tls_ctx_unref(cfg->tls_server_ctx);
    if (cfg->tls_client_ctx)
        tls_ctx_unref(cfg->tls_client_ctx);
    passwd_db_unref(cfg->passwd_db);
    policy_maps_unref(cfg->policy_maps);
    notify_template_free(cfg);
    cfg->tls_server_ctx = cfg->tls_client_ctx = NULL;
    cfg->passwd_db = NULL;
    cfg->policy_maps = NULL;
}
