/*
 * http_metrics.h - the Prometheus /metrics responder, on worker 0's ring.
 */
#ifndef RR_HTTP_METRICS_H
#define RR_HTTP_METRICS_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/engine.h"

/* http_metrics_init - give worker w the listening socket fd (before the worker starts). */
void http_metrics_init(struct worker *w, int fd);

/* http_metrics_arm - start accepting (on the worker). */
void http_metrics_arm(struct worker *w);

/* http_metrics_complete - OP_HTTP_* completions. */
void http_metrics_complete(struct worker *w, enum engine_op op, uint32_t slot, uint32_t gen,
                           const struct io_uring_cqe *cqe);

/* http_metrics_tick - once a second: re-arm an accept that an error stopped. */
void http_metrics_tick(struct worker *w);

/* http_metrics_stop - stop accepting; clients in flight finish. */
void http_metrics_stop(struct worker *w);

/* http_metrics_fini - release the responder (after the worker's loop). */
void http_metrics_fini(struct worker *w);

/* http_metrics_idle - no client in flight. */
bool http_metrics_idle(struct worker *w);

#endif
