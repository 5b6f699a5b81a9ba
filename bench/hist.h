/*
 * hist.h - a log-linear latency histogram in the manner of HdrHistogram: fixed memory,
 * constant-time recording, quantiles within HIST_PRECISION of the true value.
 *
 * Values are unsigned integers (the bench tools record microseconds). Values below
 * 2^HIST_SUB_BITS each have a bucket of their own; above, every power of two is cut into
 * 2^(HIST_SUB_BITS-1) equal buckets, so a bucket is never wider than 1/128 of its values
 * (0.8%). Values beyond HIST_VALUE_MAX are counted in the last bucket; the exact maximum and
 * minimum are kept beside the buckets. Histograms of several threads merge by adding counts.
 */
#ifndef RB_HIST_H
#define RB_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS    8                     /* exact below 256; 128 buckets per octave */
#define HIST_OCTAVES     28                    /* octaves above the exact range */
#define HIST_VALUE_MAX   ((1ull << (HIST_SUB_BITS + HIST_OCTAVES)) - 1) /* 2^36-1: ~19 h in us */
#define HIST_BUCKETS     ((1u << HIST_SUB_BITS) + HIST_OCTAVES * (1u << (HIST_SUB_BITS - 1)))

struct hist {
    uint64_t count;               /* values recorded */
    uint64_t min, max;            /* exact extremes (min is UINT64_MAX when empty) */
    uint64_t sum;                 /* for the mean; saturates rather than wraps */
    uint64_t buckets[HIST_BUCKETS]; /* counts by bucket (see hist_bucket in hist.c) */
};

/* hist_init - an empty histogram. */
void hist_init(struct hist *h);

/* hist_record - count one value. */
void hist_record(struct hist *h, uint64_t v);

/* hist_merge - add src's counts to dst. */
void hist_merge(struct hist *dst, const struct hist *src);

/* hist_quantile - the value at quantile q (0..1): the highest value of the bucket that holds
 * the ceil(q * count)-th smallest value, never above the exact maximum; 0 when empty. */
uint64_t hist_quantile(const struct hist *h, double q);

/* hist_mean - the mean of the values recorded, 0 when empty. */
double hist_mean(const struct hist *h);

#endif
