/*
 * test_hist.c - bench/hist.c, the bench tools' latency histogram (compiled in here: the
 * bench sources are not part of the library the other unit tests link):
 *   - values below 2^HIST_SUB_BITS are exact;
 *   - a quantile is never below the true value and within 1/128 above it (random data of
 *     several shapes against the sorted values), never above the exact maximum;
 *   - empty histograms, values beyond HIST_VALUE_MAX, min/max/mean, merging.
 * Every loop is bounded.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bench/hist.c"
#include "tests/unit/check.h"

#define SAMPLES_MAX 20000

/* cmp_u64 - qsort order of uint64_t. */
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* true_quantile - the ceil(q * n)-th smallest of sorted v (1-based), as hist.h defines. */
static uint64_t true_quantile(const uint64_t *v, size_t n, double q)
{
    size_t rank = (size_t)ceil(q * (double)n);

    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

/* test_exact_range - every value below 256 comes back as itself. */
static void test_exact_range(void)
{
    static struct hist h;

    for (uint64_t v = 0; v < 256; v++) {
        hist_init(&h);
        hist_record(&h, v);
        CHECK(hist_quantile(&h, 0.5) == v && hist_quantile(&h, 1.0) == v, "value %llu",
              (unsigned long long)v);
    }
}

/* test_against_sorted - quantiles of random data of several shapes against the truth. */
static void test_against_sorted(void)
{
    static const double qs[] = { 0.0, 0.5, 0.9, 0.99, 0.999, 1.0 };
    static uint64_t v[SAMPLES_MAX];
    static struct hist h;
    unsigned seed = 12345;

    for (int shape = 0; shape < 4; shape++) {
        size_t n = shape == 3 ? 7 : SAMPLES_MAX;
        hist_init(&h);
        for (size_t i = 0; i < n; i++) {
            uint64_t r = (uint64_t)rand_r(&seed) << 16 ^ (uint64_t)rand_r(&seed);
            switch (shape) {
            case 0: v[i] = 200 + r % 5000; break;                 /* narrow, typical us */
            case 1: v[i] = (uint64_t)1 << (r % 34) | r % 977; break; /* every octave */
            case 2: v[i] = r % 3 ? 120 + r % 40 : 90000 + r % 1000000; break; /* bimodal */
            default: v[i] = 1000 * (i + 1); break;                 /* few values */
            }
            hist_record(&h, v[i]);
        }
        qsort(v, n, sizeof(v[0]), cmp_u64);
        CHECK(h.count == n && h.min == v[0] && h.max == v[n - 1], "shape %d: count/min/max", shape);
        for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
            uint64_t want = true_quantile(v, n, qs[k]), got = hist_quantile(&h, qs[k]);
            CHECK(got >= want && (double)got <= (double)want * (1.0 + 1.0 / 128) + 1 &&
                  got <= h.max, "shape %d q %.3f: got %llu, true %llu", shape, qs[k],
                  (unsigned long long)got, (unsigned long long)want);
        }
    }
}

/* test_edges - empty, beyond the range, mean, merge. */
static void test_edges(void)
{
    static struct hist a, b;

    hist_init(&a);
    CHECK(hist_quantile(&a, 0.5) == 0 && hist_mean(&a) == 0 && a.count == 0, "empty");
    hist_record(&a, HIST_VALUE_MAX + 12345);
    CHECK(a.count == 1 && a.max == HIST_VALUE_MAX + 12345 &&
          hist_quantile(&a, 1.0) <= a.max, "beyond the range: counted, max exact");
    hist_init(&a);
    hist_init(&b);
    for (uint64_t i = 1; i <= 100; i++)
        hist_record(i % 2 ? &a : &b, i * 10);
    hist_merge(&a, &b);
    CHECK(a.count == 100 && a.min == 10 && a.max == 1000, "merged count/min/max");
    CHECK(fabs(hist_mean(&a) - 505.0) < 1e-9, "mean %f", hist_mean(&a));
    CHECK(hist_quantile(&a, 0.5) >= 500 && hist_quantile(&a, 0.5) <= 504, "merged p50 %llu",
          (unsigned long long)hist_quantile(&a, 0.5));
}

int main(void)
{
    test_exact_range();
    test_against_sorted();
    test_edges();
    return check_done("test_hist");
}
