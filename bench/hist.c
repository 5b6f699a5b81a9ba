/*
 * hist.c - the log-linear histogram (see hist.h).
 *
 * Functions: hist_init(), hist_record(), hist_merge(), hist_quantile(), hist_mean().
 *
 * Layout: bucket i < 2^S (S = HIST_SUB_BITS) holds the value i. A value v >= 2^S whose
 * highest set bit is m (S <= m) falls in octave o = m - S, sub-bucket v >> (o + 1) - 2^(S-1)
 * of it: 2^(S-1) buckets of width 2^(o+1) each. Recording is a count-leading-zeros, a shift
 * and an add; no allocation, no floating point.
 *
 * SECURITY: no input from the network; values are clamped to HIST_VALUE_MAX, so no value
 * indexes outside the table.
 */
#include <string.h>

#include "bench/hist.h"

#define SUB_HALF (1u << (HIST_SUB_BITS - 1))   /* buckets per octave */

/* hist_bucket - the bucket of value v (v <= HIST_VALUE_MAX). */
static unsigned hist_bucket(uint64_t v)
{
    unsigned m, o;

    if (v < (1u << HIST_SUB_BITS))
        return (unsigned)v;
    m = 63u - (unsigned)__builtin_clzll(v);
    o = m - HIST_SUB_BITS;
    return (1u << HIST_SUB_BITS) + o * SUB_HALF + (unsigned)(v >> (o + 1)) - SUB_HALF;
}

/* bucket_high - the highest value that falls in bucket i. */
static uint64_t bucket_high(unsigned i)
{
    unsigned o, sub;

    if (i < (1u << HIST_SUB_BITS))
        return i;
    o = (i - (1u << HIST_SUB_BITS)) / SUB_HALF;
    sub = SUB_HALF + (i - (1u << HIST_SUB_BITS)) % SUB_HALF;
    return (((uint64_t)sub + 1) << (o + 1)) - 1;
}

/* hist_init - see hist.h. */
void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

/* hist_record - see hist.h. */
void hist_record(struct hist *h, uint64_t v)
{
    h->buckets[hist_bucket(v > HIST_VALUE_MAX ? HIST_VALUE_MAX : v)]++; /* last bucket */
    h->count++;
    h->sum = h->sum + v < h->sum ? UINT64_MAX : h->sum + v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

/* hist_merge - see hist.h. */
void hist_merge(struct hist *dst, const struct hist *src)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum = dst->sum + src->sum < dst->sum ? UINT64_MAX : dst->sum + src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

/* hist_quantile - see hist.h. */
uint64_t hist_quantile(const struct hist *h, double q)
{
    uint64_t rank, seen = 0;

    if (!h->count)
        return 0;
    if (q <= 0)
        return h->min;
    if (q >= 1)
        return h->max;
    rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count)
        rank++;  /* ceil */
    if (rank < 1)
        rank = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = bucket_high(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}

/* hist_mean - see hist.h. */
double hist_mean(const struct hist *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0;
}
