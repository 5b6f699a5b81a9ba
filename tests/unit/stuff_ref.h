/*
 * stuff_ref.h - the outbound encoding written the simple way, as the reference the unit
 * tests and fuzz targets compare net/smtp_stuff.c (and round trips through net/smtp_data.c)
 * against. Not for production: whole buffers, no limits.
 */
#ifndef RR_STUFF_REF_H
#define RR_STUFF_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* ref_normalize - each bare CR or bare LF made CRLF and the last line ended; returns the
 * length (dst holds 2 * len + 2). */
static inline size_t ref_normalize(const char *in, size_t len, char *dst)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        if (in[i] == '\r' || in[i] == '\n') {
            if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
                i++;
            dst[n++] = '\r';
            dst[n++] = '\n';
        } else {
            dst[n++] = in[i];
        }
    }
    if (n > 0 && dst[n - 1] != '\n') {
        dst[n++] = '\r';
        dst[n++] = '\n';
    }
    return n;
}

/* ref_stuff - dot-stuff CRLF-lined content and add ".\r\n"; returns the length (dst holds
 * 2 * len + 3). */
static inline size_t ref_stuff(const char *m, size_t len, char *dst)
{
    size_t n = 0;
    bool bol = true;

    for (size_t i = 0; i < len; i++) {
        if (bol && m[i] == '.')
            dst[n++] = '.';
        dst[n++] = m[i];
        bol = m[i] == '\n';
    }
    memcpy(dst + n, ".\r\n", 3);
    return n + 3;
}

#endif
