/*
 * metrics.c - per-worker counter shards, their sum, and the Prometheus text format.
 *
 * Functions: metrics_observe() (on the owning worker), metrics_sum() and metrics_render()
 * (on whichever thread answers a scrape).
 *
 * STANDARDS: Prometheus text exposition format 0.0.4.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/iplimit.h"
#include "core/metrics.h"
#include "core/ratelimit.h"

#define METRICS_NAME(id, name) name,
const char *const metrics_msg_reason_name[MSG_REASON_COUNT] = { METRICS_MSG_REASONS(METRICS_NAME) };
const char *const metrics_rcpt_reason_name[RCPT_REASON_COUNT] = { METRICS_RCPT_REASONS(METRICS_NAME) };
const char *const metrics_proto_reason_name[PROTO_REASON_COUNT] = { METRICS_PROTO_REASONS(METRICS_NAME) };
const char *const metrics_auth_result_name[AUTHR_COUNT] = { METRICS_AUTH_RESULTS(METRICS_NAME) };
const char *const metrics_tls_result_name[TLSR_COUNT] = { METRICS_TLS_RESULTS(METRICS_NAME) };
#undef METRICS_NAME

const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5,
};

const double metrics_delivery_bounds[METRICS_LATENCY_BUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 300, 1800, 14400,
};

/* observe - count ns into its bucket of bounds, the count and the sum. */
static void observe(struct metrics_hist *h, uint64_t ns, const double *bounds)
{
    double s = (double)ns / 1e9;
    unsigned i = 0;

    while (i < METRICS_LATENCY_BUCKETS && s > bounds[i])
        i++;
    metrics_add(&h->bucket[i], 1);
    metrics_add(&h->count, 1);
    metrics_add(&h->sum_ns, ns);
}

/* metrics_observe - an accept latency. */
void metrics_observe(struct metrics_hist *h, uint64_t ns)
{
    observe(h, ns, metrics_latency_bounds);
}

/* metrics_observe_delivery - a delivery latency. */
void metrics_observe_delivery(struct metrics_hist *h, uint64_t ns)
{
    observe(h, ns, metrics_delivery_bounds);
}

/* load - relaxed read of a counter another thread writes. */
static uint64_t load(const uint64_t *c)
{
    return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* metrics_sum - add the shards up, field by field (the struct is all uint64_t, up to its
 * last field, delivery_latency; what follows is alignment padding). */
void metrics_sum(struct metrics *out, struct metrics *const *shards, unsigned count)
{
    const size_t words = (offsetof(struct metrics, delivery_latency) +
                          sizeof(struct metrics_hist)) / sizeof(uint64_t);
    uint64_t *o = (uint64_t *)out;

    memset(out, 0, sizeof(*out));
    for (unsigned s = 0; s < count; s++) {
        const uint64_t *in = (const uint64_t *)shards[s];
        for (size_t i = 0; i < words; i++)
            o[i] += load(&in[i]);
    }
}

struct out {
    char *buf;                    /* destination */
    size_t cap;                   /* its size */
    size_t len;                   /* bytes written so far (never above cap - 1) */
};

/* put - append formatted text, cutting at the capacity. */
__attribute__((format(printf, 2, 3)))
static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int r;

    if (o->len + 1 >= o->cap)
        return;
    va_start(ap, fmt);
    r = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (r > 0)
        o->len += (size_t)r < o->cap - o->len ? (size_t)r : o->cap - o->len - 1;
}

/* counter_family - HELP/TYPE lines and one sample per label value. */
static void counter_family(struct out *o, const char *name, const char *help, const char *label,
                           const char *const *values, const uint64_t *counts, unsigned n)
{
    put(o, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (unsigned i = 0; i < n; i++)
        put(o, "%s{%s=\"%s\"} %" PRIu64 "\n", name, label, values[i], counts[i]);
}

/* single - HELP/TYPE and one unlabelled sample. */
static void single(struct out *o, const char *name, const char *type, const char *help,
                   uint64_t v)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name, type, name, v);
}

/* histogram - one histogram family. */
static void histogram(struct out *o, const char *name, const char *help,
                      const struct metrics_hist *h, const double *bounds)
{
    uint64_t cum = 0;

    put(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (unsigned i = 0; i < METRICS_LATENCY_BUCKETS; i++) {
        cum += h->bucket[i];
        put(o, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, bounds[i], cum);
    }
    cum += h->bucket[METRICS_LATENCY_BUCKETS];
    put(o, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
    put(o, "%s_sum %.9f\n", name, (double)h->sum_ns / 1e9);
    put(o, "%s_count %" PRIu64 "\n", name, h->count);
}

/* ip_limits - the per-IP connection limits, from whichever side enforces them (memory
 * reads only: this runs on a worker's ring). */
static void ip_limits(struct out *o)
{
    static const char *const where[2] = { "kernel", "userspace" };
    struct iplimit_stats st;

    iplimit_stats(iplimit_shared(), &st);
    single(o, "ringrelay_bpf_connections_refused_total", "counter",
           "Connections refused by the per-IP limits in the kernel (BPF).",
           st.kernel_refused[IPL_LIMIT_CONNECTIONS] + st.kernel_refused[IPL_LIMIT_RATE]);
    put(o, "# HELP ringrelay_connections_refused_total Connections refused by a per-IP limit, "
           "by limit and where it was enforced.\n"
           "# TYPE ringrelay_connections_refused_total counter\n");
    for (unsigned l = 0; l < IPL_LIMIT_COUNT; l++)
        for (unsigned k = 0; k < 2; k++)
            put(o, "ringrelay_connections_refused_total{limit=\"%s\",where=\"%s\"} %" PRIu64
                   "\n", iplimit_limit_name[l], where[k],
                k == 0 ? st.kernel_refused[l] : st.refused[l]);
    single(o, "ringrelay_ip_limits_kernel", "gauge",
           "1 when the per-IP limits are enforced by the kernel (BPF), 0 in userspace.",
           st.kernel ? 1 : 0);
    single(o, "ringrelay_tracked_ips", "gauge", "Source addresses with open connections.",
           st.tracked_ips);
    single(o, "ringrelay_ip_limits_untracked_total", "counter",
           "Connections admitted without per-IP accounting (no room for their address).",
           st.untracked);
    single(o, "ringrelay_bpf_steered_total", "counter",
           "Connections the kernel program handed to the worker of the receiving CPU.",
           st.steered);
}

/* metrics_render - the whole exposition. */
size_t metrics_render(char *buf, size_t cap, const struct metrics *m,
                      const struct rr_config *cfg)
{
    struct out o = { buf, cap, 0 };
    const char *names[CONFIG_LISTENERS_MAX];

    if (cap)
        buf[0] = 0;
    for (unsigned i = 0; i < cfg->listener_count; i++)
        names[i] = cfg->listeners[i].name;
    counter_family(&o, "ringrelay_connections_total", "SMTP connections accepted.", "listener",
                   names, m->connections_total, cfg->listener_count);
    single(&o, "ringrelay_connections_active", "gauge", "SMTP sessions open.",
           m->connections_active);
    single(&o, "ringrelay_messages_accepted_total", "counter",
           "Messages acknowledged with 250 after they were on stable storage.",
           m->messages_accepted);
    single(&o, "ringrelay_bytes_accepted_total", "counter", "Bytes of accepted messages.",
           m->bytes_accepted);
    counter_family(&o, "ringrelay_messages_rejected_total", "Messages refused, by reason.",
                   "reason", metrics_msg_reason_name, m->messages_rejected, MSG_REASON_COUNT);
    counter_family(&o, "ringrelay_recipients_rejected_total", "Recipients refused, by reason.",
                   "reason", metrics_rcpt_reason_name, m->recipients_rejected,
                   RCPT_REASON_COUNT);
    counter_family(&o, "ringrelay_protocol_errors_total", "SMTP protocol faults, by reason.",
                   "reason", metrics_proto_reason_name, m->protocol_errors, PROTO_REASON_COUNT);
    single(&o, "ringrelay_queue_messages", "gauge", "Messages in the queue, not yet finished.",
           m->queue_size);
    single(&o, "ringrelay_spool_fsyncs_total", "counter",
           "fdatasync calls on spool segments (group commits).", m->spool_fsyncs);
    single(&o, "ringrelay_spool_writes_total", "counter", "Spool write operations.",
           m->spool_writes);

    {
        static const char *const delivery_results[] = { "delivered", "deferred", "bounced" };
        counter_family(&o, "ringrelay_auth_total", "SMTP AUTH exchanges, by result.", "result",
                       metrics_auth_result_name, m->auth, AUTHR_COUNT);
        single(&o, "ringrelay_auth_delays_total", "counter",
               "AUTH replies held back because of earlier failures.", m->auth_delays);
        counter_family(&o, "ringrelay_tls_handshakes_total", "Inbound TLS handshakes, by result.",
                       "result", metrics_tls_result_name, m->tls_handshakes, TLSR_COUNT);
        counter_family(&o, "ringrelay_relay_tls_total",
                       "Outbound STARTTLS handshakes, by result.", "result",
                       metrics_tls_result_name, m->relay_tls, TLSR_COUNT);
        counter_family(&o, "ringrelay_deliveries_total", "Delivery attempts, by result.",
                       "result", delivery_results, m->deliveries, 3);
        single(&o, "ringrelay_relay_notifications_total", "counter",
               "Relaying notices sent to customers.", m->relay_notifications);
    }
    ip_limits(&o);
    {
        /* The hourly limits' table is one for the process (core/ratelimit.c), not a shard. */
        struct ratelimit_stats rs;
        ratelimit_stats(ratelimit_shared(), &rs);
        single(&o, "ringrelay_ratelimit_keys_total", "counter",
               "Logins, addresses and notice claims that took an entry of the limits' table.",
               rs.inserts);
        single(&o, "ringrelay_ratelimit_evictions_total", "counter",
               "Entries of the limits' table taken over while their state was still live "
               "(the table is too small for the traffic).", rs.evictions_live);
        single(&o, "ringrelay_ratelimit_contended_total", "counter",
               "Limit checks refused because their entry stayed contended.", rs.contended);
    }
    histogram(&o, "ringrelay_accept_latency_seconds", "End of DATA to the 250 reply.",
              &m->accept_latency, metrics_latency_bounds);
    histogram(&o, "ringrelay_delivery_latency_seconds",
              "Accepted to the next hop's 250 for a recipient.", &m->delivery_latency,
              metrics_delivery_bounds);
    put(&o, "# HELP ringrelay_build_info Build version.\n# TYPE ringrelay_build_info gauge\n"
            "ringrelay_build_info{version=\"%s\"} 1\n", RR_VERSION);
    return o.len;
}
