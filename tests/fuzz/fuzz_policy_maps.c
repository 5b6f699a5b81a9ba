/*
 * fuzz_policy_maps.c - libFuzzer target for the map parsers and lookups of core/policy.c.
 *
 * Input layout: byte 0 selects the maps the rest is parsed as (bit 0 hosted_domains, bit 1
 * sender_logins, bit 2 host_registry; none set = all three); the rest is the file. Then the
 * lookups run with strings cut from the input (each line in turn as a domain, an address and
 * a login) and with client addresses made of its first bytes. Problems go to /dev/null: the
 * formatting runs, the output is not kept.
 *
 * Invariants, for every input:
 *   - the parser returns maps, counts no more entries than lines, and every configured map
 *     is marked configured;
 *   - every lookup answers without reading out of bounds (ASan) or overflowing (UBSan);
 *   - policy_sender() gives a reply of at most POLICY_REPLY_BYTES_MAX bytes, with no CR, LF
 *     or NUL inside it, and a reply exactly when it refuses;
 *   - a domain that is hosted is still hosted written in upper case and with one trailing
 *     dot; an entry's lookups agree with the parse (each hosted line looked up again).
 *
 *   make fuzz && build/fuzz/fuzz_policy_maps -max_total_time=30 tests/fuzz/corpus/policy_maps
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/policy.h"

#define LOOKUPS_MAX 64            /* lines of one input used as lookup keys */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* upper - s in ASCII upper case with one trailing dot, into out (size bytes). */
static void upper_dot(const char *s, char *out, size_t size)
{
    size_t n = 0;

    for (; s[n] && n + 2 < size; n++)
        out[n] = (char)(s[n] >= 'a' && s[n] <= 'z' ? s[n] - 'a' + 'A' : s[n]);
    out[n++] = '.';
    out[n] = '\0';
}

/* check_sender - policy_sender() on one login and sender, and its invariants. */
static void check_sender(const struct policy_maps *pm, struct rr_config *cfg, const char *login,
                         const char *sender)
{
    struct policy_result res;
    static const enum relay_mode modes[] = { RELAY_ALLOW, RELAY_NOTIFY, RELAY_REJECT };

    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        cfg->relay_mode = modes[m];
        enum policy_verdict v = policy_sender(pm, cfg, login, sender, 0, &res);
        size_t len = strlen(res.reply);
        if (len > POLICY_REPLY_BYTES_MAX || strchr(res.reply, '\r') || strchr(res.reply, '\n'))
            abort();
        if ((v == POLICY_REJECT) != (len > 0) || v != res.verdict)
            abort();
        if (v == POLICY_REJECT && strncmp(res.reply, "553 5.7.1 <", 11) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *devnull;
    static struct rr_config cfg;
    static int cfg_ready;
    struct policy_map_input in[POLICY_MAP_COUNT] = { { 0 } };
    static const char *const names[POLICY_MAP_COUNT] = { "hosted", "logins", "registry" };
    unsigned sel, lines = 1;
    int problems = 0;

    if (!devnull && !(devnull = fopen("/dev/null", "w")))
        abort();
    if (!cfg_ready) {
        if (config_load_stream(&cfg, NULL, NULL, NULL, 0, NULL))
            abort();
        cfg.relay_enforce_after = 1;
        cfg_ready = 1;
    }
    if (size == 0)
        return 0;
    sel = data[0] & 7 ? data[0] & 7 : 7;
    data++;
    size--;
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n';

    for (int m = 0; m < POLICY_MAP_COUNT; m++) {
        if (!(sel & (1u << m)))
            continue;
        in[m].name = names[m];
        in[m].in = size ? fmemopen((void *)data, size, "r") : fopen("/dev/null", "r");
        if (!in[m].in)
            abort();
    }
    struct policy_maps *pm = policy_maps_parse(in, devnull, &problems);
    for (int m = 0; m < POLICY_MAP_COUNT; m++) {
        if (in[m].in)
            fclose(in[m].in);
        if (policy_maps_has(pm, (enum policy_map)m) != !!(sel & (1u << m)))
            abort();
        if (policy_maps_count(pm, (enum policy_map)m) > lines)
            abort();
    }

    /* lookups with each line of the input (bounded), NUL-terminated copies */
    char *text = malloc(size + 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    char *save = NULL, big[600];
    unsigned n = 0;
    for (char *line = strtok_r(text, "\n", &save); line && n < LOOKUPS_MAX;
         line = strtok_r(NULL, "\n", &save), n++) {
        bool hosted = policy_domain_hosted(pm, line);
        upper_dot(line, big, sizeof(big));
        if (hosted && strlen(line) + 2 < sizeof(big) && line[strlen(line) - 1] != '.' &&
            !policy_domain_hosted(pm, big))
            abort();
        policy_sender_owner(pm, line, "alice");
        policy_sender_owner(pm, line, line);
        check_sender(pm, &cfg, "alice", line);
        check_sender(pm, &cfg, line, "x@example.org");
        check_sender(pm, &cfg, NULL, line);
        snprintf(big, sizeof(big), "someone@%s", line);
        check_sender(pm, &cfg, line, big);
    }
    free(text);

    /* client addresses from the first bytes */
    struct sockaddr_in in4 = { .sin_family = AF_INET };
    struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };
    memcpy(&in4.sin_addr, data, size < 4 ? size : 4);
    memcpy(&in6.sin6_addr, data, size < 16 ? size : 16);
    policy_registry_owner(pm, (const struct sockaddr *)&in4);
    policy_registry_owner(pm, (const struct sockaddr *)&in6);
    policy_may_relay(&cfg, false, (const struct sockaddr *)&in6);

    policy_maps_unref(pm);
    return 0;
}
