/*
 * http_metrics.c - a minimal HTTP/1.0 responder for GET /metrics, run on worker 0's ring.
 *
 * Functions: http_metrics_init(), http_metrics_arm(), http_metrics_complete(),
 * http_metrics_stop(), http_metrics_idle().
 *
 * Each scrape sums the workers' metric shards (relaxed loads, no locks) and renders the text
 * format into a buffer that lives until the response is sent; then the connection closes.
 *
 * SECURITY: the request is read into a fixed 2 KiB buffer; anything that is not a GET of
 * /metrics (or /) within it gets 400/404; at most HTTP_CLIENTS_MAX clients at once, each
 * with a 10 s deadline, so a slow client cannot starve scrapes.
 *
 * STANDARDS: RFC 9112 (HTTP/1.1 message syntax, answered as HTTP/1.0 with Connection: close),
 * Prometheus text exposition format 0.0.4.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/http_metrics.h"

#define HTTP_CLIENTS_MAX      16
#define HTTP_REQUEST_BYTES    2048
#define HTTP_RESPONSE_BYTES   (256 * 1024)
#define HTTP_TIMEOUT_MS       10000

struct http_client {
    uint32_t gen;                 /* generation in user_data */
    int fd;                       /* -1 when the slot is free */
    uint32_t req_len;             /* bytes of req */
    uint32_t resp_len;            /* bytes of resp to send */
    uint32_t resp_sent;           /* bytes of resp sent */
    bool busy;                    /* a recv or send is in flight */
    char *resp;                   /* response, allocated per scrape */
    struct engine_timer timer;    /* request deadline */
    char req[HTTP_REQUEST_BYTES]; /* request head */
};

struct http_server {
    int listen_fd;                /* -1 when stopped */
    bool accept_armed;
    unsigned active;              /* clients with a slot */
    struct http_client clients[HTTP_CLIENTS_MAX];
};

/* http_metrics_init - the listening socket for worker w. */
void http_metrics_init(struct worker *w, int fd)
{
    struct http_server *h = rr_calloc(1, sizeof(*h));

    h->listen_fd = fd;
    for (unsigned i = 0; i < HTTP_CLIENTS_MAX; i++)
        h->clients[i].fd = -1;
    w->http = h;
}

/* arm_accept - multishot accept of scrape connections. */
static void arm_accept(struct worker *w)
{
    struct io_uring_sqe *sqe = engine_sqe(w);

    io_uring_prep_multishot_accept(sqe, w->http->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_HTTP_ACCEPT, 0, 0));
    w->http->accept_armed = true;
}

/* http_metrics_arm - start serving. */
void http_metrics_arm(struct worker *w)
{
    if (w->http->listen_fd >= 0)
        arm_accept(w);
}

/* client_close - end a scrape connection; the slot is free once nothing is in flight. */
static void client_close(struct worker *w, struct http_client *k)
{
    if (k->fd >= 0) {
        struct io_uring_sqe *sqe = engine_sqe(w);
        io_uring_prep_close(sqe, k->fd);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
        k->fd = -1;
        w->http->active--;
    }
    engine_timer_set(w, &k->timer, 0);
    free(k->resp);
    k->resp = NULL;
}

/* client_timeout - the request did not arrive in time. */
static void client_timeout(struct worker *w, struct engine_timer *t)
{
    struct http_client *k = (struct http_client *)((char *)t - offsetof(struct http_client, timer));

    if (k->busy) {  /* a recv is pending on the socket: shutting it down completes it */
        shutdown(k->fd, SHUT_RDWR);
        return;
    }
    client_close(w, k);
}

/* arm_recv - read more of the request. */
static void arm_recv(struct worker *w, struct http_client *k, uint32_t slot)
{
    struct io_uring_sqe *sqe = engine_sqe(w);

    io_uring_prep_recv(sqe, k->fd, k->req + k->req_len, HTTP_REQUEST_BYTES - 1 - k->req_len, 0);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_HTTP_RECV, slot, k->gen));
    k->busy = true;
}

/* arm_send - send the rest of the response. */
static void arm_send(struct worker *w, struct http_client *k, uint32_t slot)
{
    struct io_uring_sqe *sqe = engine_sqe(w);

    io_uring_prep_send(sqe, k->fd, k->resp + k->resp_sent, k->resp_len - k->resp_sent,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, engine_ud(OP_HTTP_SEND, slot, k->gen));
    k->busy = true;
}

/* respond - build the response for the request in k->req. */
static void respond(struct http_client *k)
{
    const char *status = "200 OK";
    char *body = NULL;
    size_t body_len = 0;
    int n;

    k->resp = rr_malloc(HTTP_RESPONSE_BYTES);
    if (strncmp(k->req, "GET ", 4) != 0) {
        status = "400 Bad Request";
    } else if (strncmp(k->req + 4, "/metrics ", 9) == 0 || strncmp(k->req + 4, "/metrics?", 9) == 0) {
        struct metrics *shards[256];
        struct metrics sum;
        unsigned count = engine.count < 256 ? engine.count : 256;

        for (unsigned i = 0; i < count; i++)
            shards[i] = engine.workers[i].m;
        metrics_sum(&sum, shards, count);
        body = k->resp + 512;  /* leave room for the head in front */
        body_len = metrics_render(body, HTTP_RESPONSE_BYTES - 512,
                                  &sum, atomic_load(&engine.cfg));
    } else if (strncmp(k->req + 4, "/ ", 2) == 0) {
        body = k->resp + 512;
        body_len = (size_t)snprintf(body, 256, "ringrelay: metrics at /metrics\n");
    } else {
        status = "404 Not Found";
    }
    n = snprintf(k->resp, 512, "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4; "
                 "charset=utf-8\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                 status, body_len);
    if (body_len)
        memmove(k->resp + n, body, body_len);
    k->resp_len = (uint32_t)((size_t)n + body_len);
    k->resp_sent = 0;
}

/* http_metrics_complete - accept, request bytes, response sent. */
void http_metrics_complete(struct worker *w, enum engine_op op, uint32_t slot, uint32_t gen,
                           const struct io_uring_cqe *cqe)
{
    struct http_server *h = w->http;
    struct http_client *k;

    if (op == OP_HTTP_ACCEPT) {
        if (!(cqe->flags & IORING_CQE_F_MORE))
            h->accept_armed = false;
        if (cqe->res >= 0) {
            unsigned i;
            for (i = 0; i < HTTP_CLIENTS_MAX && (h->clients[i].fd >= 0 || h->clients[i].busy); i++)
                ;
            if (i == HTTP_CLIENTS_MAX || w->stopping) {
                close(cqe->res);
            } else {
                k = &h->clients[i];
                k->gen++;
                k->fd = cqe->res;
                k->req_len = 0;
                k->timer.fire = client_timeout;
                h->active++;
                engine_timer_set(w, &k->timer, w->now_ms + HTTP_TIMEOUT_MS);
                arm_recv(w, k, i);
            }
        }
        /* On an error (out of descriptors) wait for the next tick instead of spinning. */
        if (!h->accept_armed && !w->stopping && h->listen_fd >= 0 && cqe->res >= 0)
            arm_accept(w);
        return;
    }
    if (slot >= HTTP_CLIENTS_MAX || h->clients[slot].gen != gen)
        return;
    k = &h->clients[slot];
    k->busy = false;
    if (k->fd < 0)
        return;
    if (op == OP_HTTP_RECV) {
        if (cqe->res <= 0) {
            client_close(w, k);
            return;
        }
        k->req_len += (uint32_t)cqe->res;
        k->req[k->req_len] = 0;
        if (!strstr(k->req, "\r\n\r\n") && !strstr(k->req, "\n\n")) {
            if (k->req_len >= HTTP_REQUEST_BYTES - 1) {
                static const char big[] = "HTTP/1.0 431 Request Header Fields Too Large\r\n"
                                          "Content-Length: 0\r\nConnection: close\r\n\r\n";
                k->resp = rr_malloc(sizeof(big));
                memcpy(k->resp, big, sizeof(big) - 1);
                k->resp_len = sizeof(big) - 1;
                k->resp_sent = 0;
                arm_send(w, k, slot);
            } else {
                arm_recv(w, k, slot);
            }
            return;
        }
        respond(k);
        arm_send(w, k, slot);
        return;
    }
    if (cqe->res <= 0) {
        client_close(w, k);
        return;
    }
    k->resp_sent += (uint32_t)cqe->res;
    if (k->resp_sent < k->resp_len)
        arm_send(w, k, slot);
    else
        client_close(w, k);
}

/* http_metrics_tick - once a second: accept again if an error stopped it. */
void http_metrics_tick(struct worker *w)
{
    if (!w->http->accept_armed && w->http->listen_fd >= 0)
        arm_accept(w);
}

/* http_metrics_stop - no more scrapes. */
void http_metrics_stop(struct worker *w)
{
    struct http_server *h = w->http;

    if (h->listen_fd >= 0) {
        struct io_uring_sqe *sqe = engine_sqe(w);
        io_uring_prep_cancel64(sqe, engine_ud(OP_HTTP_ACCEPT, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, engine_ud(OP_NONE, 0, 0));
        io_uring_submit(&w->ring);
        close(h->listen_fd);
        h->listen_fd = -1;
    }
    for (unsigned i = 0; i < HTTP_CLIENTS_MAX; i++)
        if (h->clients[i].fd >= 0 && h->clients[i].busy)
            shutdown(h->clients[i].fd, SHUT_RDWR);
}

/* http_metrics_fini - release the responder (after the worker's loop). */
void http_metrics_fini(struct worker *w)
{
    struct http_server *h = w->http;

    if (!h)
        return;
    for (unsigned i = 0; i < HTTP_CLIENTS_MAX; i++) {
        free(h->clients[i].resp);
        if (h->clients[i].fd >= 0)
            close(h->clients[i].fd);
    }
    if (h->listen_fd >= 0)
        close(h->listen_fd);
    free(h);
    w->http = NULL;
}

/* http_metrics_idle - nothing in flight, the accept included. */
bool http_metrics_idle(struct worker *w)
{
    if (w->http->accept_armed)
        return false;
    for (unsigned i = 0; i < HTTP_CLIENTS_MAX; i++)
        if (w->http->clients[i].busy)
            return false;
    return true;
}
