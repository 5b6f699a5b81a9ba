/*
 * fuzz_config.c - libFuzzer target for core/config.c.
 *
 * Each input is used three ways: as a whole configuration file (config_load_stream over
 * fmemopen, so read_line(), inih and every setter run), as up to OVERRIDES_MAX "-o" overrides
 * (one per input line), and as one string for each exported value parser. Problems are
 * written to /dev/null: the formatting runs, the output is not kept.
 *
 *   clang -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined \
 *         tests/fuzz/fuzz_config.c core/config.c -linih -o fuzz_config
 *   ./fuzz_config -max_total_time=30
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

#define OVERRIDES_MAX 8   /* -o strings taken from one input */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *devnull;
    struct rr_config cfg;
    char *text, *ov[OVERRIDES_MAX];
    unsigned n = 0;

    if (!devnull && !(devnull = fopen("/dev/null", "w")))
        abort();

    /* the input as a file; fmemopen refuses a zero size */
    FILE *in = size ? fmemopen((void *)data, size, "r") : NULL;
    config_load_stream(&cfg, in, "fuzz.conf", NULL, 0, devnull);
    config_check_files(&cfg, devnull);
    if (in)
        fclose(in);
    config_free(&cfg);

    /* the input as a string: each line an override, then each value parser */
    text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    char *copy = strdup(text);      /* strtok_r cuts the copy; text stays whole */
    if (copy) {
        char *save = NULL;
        for (char *line = strtok_r(copy, "\n", &save); line && n < OVERRIDES_MAX;
             line = strtok_r(NULL, "\n", &save))
            ov[n++] = line;
        config_load_stream(&cfg, NULL, NULL, ov, n, devnull);
        config_free(&cfg);
        free(copy);
    }

    uint64_t u;
    int64_t t;
    struct config_addr a;
    struct config_net net;
    config_parse_duration_ms(text, &u);
    config_parse_size(text, &u);
    config_parse_addr(text, -1, &a);
    config_parse_addr(text, 53, &a);
    if (config_parse_addr(text, 0, &a) == 0 && config_parse_net(text, &net) == 0)
        config_net_match(&net, 1, (const struct sockaddr *)&a.sa);
    config_parse_date(text, &t);
    free(text);
    return 0;
}
