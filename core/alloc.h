/*
 * alloc.h - the one allocation header. jemalloc is the allocator by being linked (Debian's
 * libjemalloc replaces malloc/free); the sanitizer builds keep the libc one. Running out of
 * memory is a broken invariant for a relay sized at start-up: these wrappers exit loudly.
 */
#ifndef RR_ALLOC_H
#define RR_ALLOC_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* rr_oom - report an allocation failure and exit; never returns. */
static inline void rr_oom(size_t bytes)
{
    fprintf(stderr, "level=fatal event=out_of_memory bytes=%zu\n", bytes);
    abort();
}

/* rr_malloc - malloc that never returns NULL. */
static inline void *rr_malloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        rr_oom(bytes);
    return p;
}

/* rr_calloc - zeroed allocation of n * size bytes that never returns NULL. */
static inline void *rr_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        rr_oom(n * size);
    return p;
}

/* rr_realloc - realloc that never returns NULL. */
static inline void *rr_realloc(void *p, size_t bytes)
{
    void *n = realloc(p, bytes);
    if (!n)
        rr_oom(bytes);
    return n;
}

/* rr_strdup - strdup that never returns NULL. */
static inline char *rr_strdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        rr_oom(strlen(s) + 1);
    return p;
}

#define RR_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define RR_CACHELINE 64

#endif
