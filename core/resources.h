/*
 * resources.h - the objects a configuration names and that take real work to load: the TLS
 * server and client contexts, the password database and the policy maps. Loaded on the main
 * thread after the configuration file (at start-up, at SIGHUP and for -t), attached to the
 * configuration, and released with it, so a worker always sees a configuration and its
 * resources as one.
 */
#ifndef RR_RESOURCES_H
#define RR_RESOURCES_H

#include <stdio.h>

#include "core/config.h"

/* resources_load - load what cfg names into cfg->tls_server_ctx, ->tls_client_ctx,
 * ->passwd_db and ->policy_maps. Problems are reported to errs as "FILE:LINE: key: message"
 * lines (map and passwd-file lines as "FILE:LINE: message"); returns their count (0:
 * everything loaded). What did load stays attached either way: the caller
 * frees cfg through config_free(). */
int resources_load(struct rr_config *cfg, FILE *errs);

/* resources_release - drop cfg's references (config_free calls it). */
void resources_release(struct rr_config *cfg);

#endif
