/*
 * config_test_util.h - shared by the config unit tests that work on whole files (test_config.c,
 * test_config_check.c): a temporary directory, the config file written in it, writing and
 * loading text, and looking for a line in an error report.
 */
#ifndef RR_TEST_CONFIG_TEST_UTIL_H
#define RR_TEST_CONFIG_TEST_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

static char tmpdir[] = "/tmp/test_config.XXXXXX";
static char conf_path[256];     /* the file load_text() writes */

/* path_in - tmpdir/name, in one of a few rotating static buffers. */
static inline const char *path_in(const char *name)
{
    static char bufs[8][512];
    static unsigned next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof(bufs[0]), "%s/%s", tmpdir, name);
    return b;
}

static inline void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

/* load_text - write text as the config file, load it with overrides; *errs gets the report
 * (free it). Returns the problem count. */
static inline int load_text(struct rr_config *cfg, const char *text, char *const *ov, unsigned n,
                            char **errs)
{
    size_t size;
    FILE *e = open_memstream(errs, &size);
    int problems;

    write_file(conf_path, text);
    problems = config_load(cfg, conf_path, ov, n, e);
    fclose(e);
    return problems;
}

/* has_line - errs holds exactly this line. */
static inline bool has_line(const char *errs, const char *line)
{
    size_t len = strlen(line);
    for (const char *p = errs; p && *p; ) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        if (l == len && memcmp(p, line, len) == 0)
            return true;
        p = nl ? nl + 1 : NULL;
    }
    return false;
}

/* config_test_setup - create tmpdir and set conf_path; false (reported) on failure. */
static inline bool config_test_setup(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return false;
    }
    snprintf(conf_path, sizeof(conf_path), "%s/relay.conf", tmpdir);
    return true;
}

/* config_test_cleanup - remove tmpdir and all in it. */
static inline void config_test_cleanup(void)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", tmpdir);
}

#endif
