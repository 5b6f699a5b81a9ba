/*
 * notify.c - the relaying notice on a worker: claim, find who the client is, write, queue.
 *
 * FUNCTIONS
 *   notify_relaying()        the session's call after a relayed message got its 250.
 *   notify_worker_fini()     the notices left when the worker ends.
 *   notify_template_load()   main thread: the template file into the configuration.
 *   notify_template_free()   its release.
 *
 * A NOTICE, STEP BY STEP (all on the worker that accepted the message, never blocking)
 *   1. The recipient: the login when it is an address, else login@hostname (Postfix appends
 *      $myorigin, by default $myhostname, to a bare name in the same way); it must pass the
 *      SMTP path parser (smtp_parse_rcpt), or there is no notice (event=notify_skipped).
 *   2. The claim: ratelimit_claim_once() for (login, sender domain), without ASCII case, the
 *      domain as IDNA A-labels (policy_domain_key), for notify_interval. It is shared by
 *      every worker, so two messages on two workers make one notice. Already claimed:
 *      nothing more (a debug line).
 *   3. {registered_to}: the host_registry owner of the client address
 *      (policy_registry_owner); else its reverse DNS name through c-ares on the ring
 *      (dns_resolve_ptr), kept only when forward-confirmed (the name's A/AAAA records hold
 *      the address, as Postfix requires before it calls a client by name): whoever runs the
 *      reverse zone of an address can write any name there; else "unknown". Both lookups are
 *      cached by TTL and bounded by the resolver's timeouts (dns.c).
 *   4. The message: notify_fill() of the configuration's template, notify_message() around
 *      it (notify_text.c), spooled with spool_msg_begin/spool_msg_commit exactly as a bounce
 *      is (core/queue.c), and once durable handed to queue_add(); then event=notified and
 *      ringrelay_relay_notifications_total.
 *   The configuration used is the worker's current one when each step runs (a reload
 *   between steps changes nothing that matters).
 *
 * THE ENVELOPE: the null sender <>. A notice is an automatic message (RFC 3834) that must not
 * cause another: if it cannot be delivered it is dropped, not bounced to a postmaster of the
 * relay's own host name that may receive no mail (RFC 5321 4.5.5 allows <> for notifications
 * that must not loop; our queue never bounces a message from <>). With <> the receiver's SPF
 * check falls on the HELO name, which is the relay's own. The header says From:
 * postmaster@hostname and Auto-Submitted: auto-generated so that vacation responders stay
 * quiet (RFC 3834 2).
 *
 * LIMITS: NOTIFY_PENDING_MAX notices being made per worker (more are dropped with
 * event=notify_dropped); none while the spool is below spool_min_free (customer mail first).
 * A notice that cannot be written (no spool write slot, a write error) is dropped and logged
 * (event=notify_failed); its claim stands, so the customer hears again after the interval.
 *
 * SECURITY: the login and the sender address are the client's; they are copied bounded,
 * cleaned by notify_text.c before they go into the message, and quoted in logs (log_q).
 * The template file is read on the main thread only, at start-up and SIGHUP, with the
 * privileges the daemon has then, and checked (notify_template_check) before it is used.
 *
 * STANDARDS: RFC 5322 and RFC 3834 (through notify_text.c), RFC 5321 4.5.5 (null reverse
 * path).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/alloc.h"
#include "core/engine.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/policy.h"
#include "core/queue.h"
#include "core/ratelimit.h"
#include "core/spool_writer.h"
#include "net/dns.h"
#include "net/smtp_parse.h"

#define NOTIFY_LOGIN_BYTES_MAX 256   /* a login kept for the notice (SASL allows 255) */

/* A notice being made. */
struct notice {
    struct spool_msg_w mw;        /* first: the spool's done() gets this pointer */
    struct notice *prev, *next;   /* the worker's list of notices being made */
    struct sockaddr_storage peer; /* client address; IPv4 as AF_INET, v4-mapped unwrapped */
    char ip[INET6_ADDRSTRLEN];    /* its text */
    char login[NOTIFY_LOGIN_BYTES_MAX]; /* the login that sent the relayed message */
    char from[SMTP_PATH_BYTES_MAX + 1]; /* the relayed message's sender */
    const char *domain;           /* inside from: after its last '@' */
    struct smtp_addr to;          /* the notice's recipient, canonical */
    char ptr[DNS_NAME_BYTES_MAX]; /* reverse DNS name waiting for its forward check */
    char registered_to[NOTIFY_VALUE_BYTES_MAX]; /* the answer of step 3 */
    int64_t time_s;               /* when the relayed message was accepted */
    uint64_t msg_qid;             /* its queue id, for the log; 0 = none */
    char *text;                   /* the notice, being written */
    size_t text_len;              /* bytes of text */
    char *env;                    /* its envelope */
    uint32_t env_len;             /* bytes of env */
};

/* The notices of one worker. */
struct notify_worker {
    struct notice *head;          /* being made: waiting for DNS or the spool */
    unsigned count;               /* entries of head, <= NOTIFY_PENDING_MAX */
};

/* notice_free - unlink and free n (its spool message is done or never began). */
static void notice_free(struct worker *w, struct notice *n)
{
    struct notify_worker *nw = w->notify;

    if (n->prev)
        n->prev->next = n->next;
    else
        nw->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    nw->count--;
    spool_msg_release(&n->mw);
    free(n->text);
    free(n->env);
    free(n);
}

/* notice_spooled - the notice is durable (err 0): queue it, log, count; or it failed. */
static void notice_spooled(struct worker *w, struct spool_msg_w *mw, int err)
{
    struct notice *n = (struct notice *)mw;
    char qid[17], msg[17] = "";

    spool_qid_format(mw->qid, qid);
    if (n->msg_qid)
        spool_qid_format(n->msg_qid, msg);
    if (err) {
        log_event(LOG_WARN, "event=notify_failed login=%s domain=%s ip=%s error=%s",
                  log_q(n->login), log_q(n->domain), n->ip, log_q(strerror(-err)));
        notice_free(w, n);
        return;
    }
    queue_add(w, mw->qid, mw->seg_id, n->env, n->env_len, spool_msg_chunks(mw), mw->chunks,
              mw->bytes);
    metrics_add(&w->m->relay_notifications, 1);
    log_event(LOG_INFO, "event=notified login=%s domain=%s ip=%s id=%s msg=%s to=<%s> "
              "registered_to=%s", log_q(n->login), log_q(n->domain), n->ip, qid, msg,
              log_q(n->to.text), log_q(n->registered_to));
    notice_free(w, n);
}

/* notice_write - step 4: build the notice and spool it. */
static void notice_write(struct worker *w, struct notice *n)
{
    const struct rr_config *cfg = w->cfg;
    const char *values[NOTIFY_FIELD_COUNT];
    char date[64], enforce[16], qid[17], msgid[40];
    char help[CONFIG_TEXT_BYTES_MAX + CONFIG_HOSTNAME_BYTES_MAX + 16];
    struct timespec now;
    struct notify_head h;
    struct iovec iov;
    bool eight_bit;
    size_t body_len, cap;
    char *body;
    int res;

    if (!spool_writes_available(w, 1)) {
        res = -EAGAIN;
        goto err;
    }
    if ((res = spool_msg_begin(w, &n->mw)) < 0)
        goto err;
    notify_date(n->time_s, date, sizeof(date));
    notify_ymd(cfg->relay_enforce_after, enforce, sizeof(enforce));
    values[NOTIFY_IP] = n->ip;
    values[NOTIFY_FROM] = n->from;
    values[NOTIFY_LOGIN] = n->login;
    values[NOTIFY_REGISTERED_TO] = n->registered_to;
    values[NOTIFY_HOSTNAME] = cfg->hostname;
    values[NOTIFY_ENFORCE_DATE] = enforce;
    values[NOTIFY_DATE] = date;
    snprintf(help, sizeof(help), "%s%s", cfg->relay_help[0] ? "" : "postmaster@",
             cfg->relay_help[0] ? cfg->relay_help : cfg->hostname);
    values[NOTIFY_HELP] = help;
    if (cfg->notify_text)
        body = notify_fill(cfg->notify_text, cfg->notify_text_len, values, &body_len);
    else
        body = notify_fill(notify_default_template, notify_default_template_len, values,
                           &body_len);
    spool_qid_format(n->mw.qid, qid);
    snprintf(msgid, sizeof(msgid), "%s.notice", qid);
    clock_gettime(CLOCK_REALTIME, &now);
    h = (struct notify_head){ .hostname = cfg->hostname, .to = n->to.text, .ip = n->ip,
                              .date_s = (int64_t)now.tv_sec, .msgid = msgid };
    n->text = notify_message(&h, body, body_len, &n->text_len, &eight_bit);
    free(body);
    cap = 256 + strlen(cfg->hostname) + n->to.len;
    n->env = rr_malloc(cap);
    n->env_len = (uint32_t)snprintf(n->env, cap,
                                    "qid %s\ntime %lld\nsize %zu\nip 127.0.0.1\nhelo %s\n"
                                    "login \nlistener notify\nproto local\nbody %s\n"
                                    "smtputf8 %d\nfrom \nrcpt %s\n",
                                    qid, (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000,
                                    n->text_len,
                                    cfg->hostname, eight_bit ? "8BITMIME" : "7BIT",
                                    n->to.utf8, n->to.text);
    iov = (struct iovec){ n->text, n->text_len };
    n->mw.done = notice_spooled;
    spool_msg_commit(w, &n->mw, ENGINE_BUF_NONE, &iov, 1, n->env, n->env_len);
    return;
err:
    log_event(LOG_WARN, "event=notify_failed login=%s domain=%s ip=%s error=%s",
              log_q(n->login), log_q(n->domain), n->ip, log_q(strerror(-res)));
    notice_free(w, n);
}

/* same_addr - whether the address a (from a DNS answer) is the client's. */
static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *peer)
{
    if (a->ss_family != peer->ss_family)
        return false;
    if (a->ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)peer)->sin_addr, 4) == 0;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)peer)->sin6_addr, 16) == 0;
}

/* forward_done - the addresses of the reverse DNS name: keep the name if one is the client's. */
static void forward_done(struct worker *w, void *arg, const struct dns_result *r)
{
    struct notice *n = arg;
    bool confirmed = false;

    for (unsigned i = 0; r->status == DNS_OK && i < r->host_count && !confirmed; i++)
        for (unsigned k = 0; k < r->hosts[i].addr_count && !confirmed; k++)
            confirmed = same_addr(&r->hosts[i].addrs[k], &n->peer);
    if (confirmed)
        snprintf(n->registered_to, sizeof(n->registered_to), "%s", n->ptr);
    else
        log_event(LOG_DEBUG, "event=notify_ptr_unconfirmed ip=%s ptr=%s", n->ip, n->ptr);
    notice_write(w, n);
}

/* numeric_tld - whether the last label of name is all digits: not a host name (RFC 1123
 * 2.1), and one that the forward lookup would take for an address literal. */
static bool numeric_tld(const char *name)
{
    const char *last = strrchr(name, '.');

    last = last ? last + 1 : name;
    if (!*last)
        return true;
    for (; *last; last++)
        if (*last < '0' || *last > '9')
            return false;
    return true;
}

/* ptr_done - the reverse DNS name of the client, or none: check it forward, or write. */
static void ptr_done(struct worker *w, void *arg, const struct dns_result *r)
{
    struct notice *n = arg;

    if (r->status != DNS_OK || r->host_count < 1 || numeric_tld(r->hosts[0].name)) {
        notice_write(w, n);           /* registered_to stays "unknown" */
        return;
    }
    snprintf(n->ptr, sizeof(n->ptr), "%s", r->hosts[0].name);
    dns_resolve_host(w, n->ptr, forward_done, n);
}

/* peer_of - the client address of in, IPv4 as AF_INET, and its text. false when there is
 * none (no sockaddr and a peer_text that is no address). */
static bool peer_of(const struct notify_req *in, struct sockaddr_storage *ss, char *ip,
                    size_t cap)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (in->peer && in->peer->sa_family == AF_INET) {
        memcpy(s4, in->peer, sizeof(*s4));
    } else if (in->peer && in->peer->sa_family == AF_INET6) {
        memcpy(s6, in->peer, sizeof(*s6));
    } else if (!in->peer && in->peer_text) {
        char text[INET6_ADDRSTRLEN + 2];
        size_t len = strnlen(in->peer_text, sizeof(text));
        if (len >= sizeof(text))
            return false;
        if (in->peer_text[0] == '[' && len > 2 && in->peer_text[len - 1] == ']') {
            memcpy(text, in->peer_text + 1, len - 2);
            text[len - 2] = '\0';
        } else {
            memcpy(text, in->peer_text, len + 1);
        }
        if (inet_pton(AF_INET, text, &s4->sin_addr) == 1)
            s4->sin_family = AF_INET;
        else if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1)
            s6->sin6_family = AF_INET6;
        else
            return false;
    } else {
        return false;
    }
    if (ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        struct in_addr a;
        memcpy(&a, s6->sin6_addr.s6_addr + 12, 4);
        memset(ss, 0, sizeof(*ss));
        s4->sin_family = AF_INET;
        s4->sin_addr = a;
    }
    s4->sin_port = 0;                 /* sin_port and sin6_port share their place */
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &s4->sin_addr, ip, (socklen_t)cap);
    else
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, (socklen_t)cap);
    return true;
}

/* recipient_of - the notice's recipient for login: the login itself when it holds '@', else
 * login@hostname; false when that is not an address the SMTP parser takes. */
static bool recipient_of(const char *login, const char *hostname, struct smtp_addr *to)
{
    char arg[SMTP_PATH_BYTES_MAX + 8];
    int len;

    if (strchr(login, '@'))
        len = snprintf(arg, sizeof(arg), "TO:<%s>", login);
    else
        len = snprintf(arg, sizeof(arg), "TO:<%s@%s>", login, hostname);
    if (len < 0 || (size_t)len >= sizeof(arg))
        return false;
    if (smtp_parse_rcpt(arg, (size_t)len, true, to) != SMTP_PARSE_OK || to->null_path)
        return false;
    return to->local_len < to->len && to->text[to->local_len] == '@';  /* has a domain */
}

/* claim - step 2: whether this worker may send the notice for (login, domain) now (the
 * table compares both without ASCII case, and is shared by every worker). The domain is
 * claimed in the form the policy judged it (policy_domain_key: IDNA A-labels), so that its
 * U-label and A-label spellings share one notice; one IDNA refuses is claimed as sent. */
static bool claim(struct worker *w, const char *login, const char *domain)
{
    char key[POLICY_DOMAIN_BYTES_MAX + 1];

    return ratelimit_claim_once(ratelimit_shared(), login,
                                policy_domain_key(domain, key) ? key : domain, engine_now_ms(),
                                (uint64_t)w->cfg->notify_interval_s * 1000);
}

/* notify_relaying - see notify.h. */
void notify_relaying(struct worker *w, const struct notify_req *in)
{
    const struct rr_config *cfg = w->cfg;
    struct notify_worker *nw = w->notify;
    struct notice *n;
    const char *at, *owner, *why = NULL;
    int64_t now_s = in->time_s ? in->time_s : (int64_t)time(NULL);

    if (!in->login || !in->login[0] || !in->from || !(at = strrchr(in->from, '@')) || !at[1])
        return;                       /* no login or no sender domain: not relaying */
    if (!nw)
        nw = w->notify = rr_calloc(1, sizeof(*nw));
    if (nw->count >= NOTIFY_PENDING_MAX ||
        atomic_load_explicit(&engine.spool_free_bytes, memory_order_relaxed) <
            cfg->spool_min_free_bytes) {
        log_event(LOG_WARN, "event=notify_dropped login=%s domain=%s reason=%s",
                  log_q(in->login), log_q(at + 1),
                  nw->count >= NOTIFY_PENDING_MAX ? "busy" : "spool_full");
        return;
    }
    n = rr_calloc(1, sizeof(*n));
    if (!peer_of(in, &n->peer, n->ip, sizeof(n->ip)))
        why = "no client address";
    else if (strlen(in->login) >= sizeof(n->login) || strlen(in->from) >= sizeof(n->from))
        why = "too long";
    else if (!recipient_of(in->login, cfg->hostname, &n->to))
        why = "login is not an address";
    if (why) {
        log_event(LOG_WARN, "event=notify_skipped login=%s domain=%s reason=%s",
                  log_q(in->login), log_q(at + 1), log_q(why));
        free(n);
        return;
    }
    if (!claim(w, in->login, at + 1)) {
        log_event(LOG_DEBUG, "event=notify_claimed_before login=%s domain=%s",
                  log_q(in->login), log_q(at + 1));
        free(n);
        return;
    }
    memcpy(n->login, in->login, strlen(in->login) + 1);
    memcpy(n->from, in->from, strlen(in->from) + 1);
    n->domain = n->from + (at + 1 - in->from);
    n->time_s = now_s;
    n->msg_qid = in->qid;
    snprintf(n->registered_to, sizeof(n->registered_to), "unknown");
    n->next = nw->head;
    if (n->next)
        n->next->prev = n;
    nw->head = n;
    nw->count++;
    owner = policy_registry_owner(cfg->policy_maps, (const struct sockaddr *)&n->peer);
    if (owner && owner[0]) {
        snprintf(n->registered_to, sizeof(n->registered_to), "%s", owner);
        notice_write(w, n);
        return;
    }
    dns_resolve_ptr(w, (const struct sockaddr *)&n->peer, ptr_done, n);
}

/* notify_worker_fini - free the notices left: after dns_worker_fini (whose callbacks never
 * come). The loop ends only once the spool is idle, so none is in the spool's hands. */
void notify_worker_fini(struct worker *w)
{
    struct notify_worker *nw = w->notify;

    if (!nw)
        return;
    while (nw->head)
        notice_free(w, nw->head);
    free(nw);
    w->notify = NULL;
}

/* ---- the template, on the main thread ---- */

/* A problem of the template file, reported as "FILE:LINE: message". */
struct load_ctx {
    FILE *errs;                   /* where problems go, or NULL */
    const char *file;             /* the template's path: FILE of the reports */
};

/* load_problem - notify_template_check's report. */
static void load_problem(void *arg, unsigned line, const char *msg)
{
    struct load_ctx *x = arg;

    if (x->errs)
        fprintf(x->errs, "%s:%u: %s\n", x->file, line, msg);
}

/* key_problem - a problem of the key itself: "CONFIG:LINE: notify_template: message". */
static int key_problem(const struct rr_config *cfg, FILE *errs, const char *msg)
{
    char where[CONFIG_PATH_BYTES_MAX + 32];

    if (errs) {
        const char *at = config_where(cfg, "policy", "notify_template", where, sizeof(where));
        fprintf(errs, "%s: notify_template: %s\n", at ? at : "-", msg);
    }
    return 1;
}

/* notify_template_load - see notify.h. Blocking file I/O: main thread only. */
int notify_template_load(struct rr_config *cfg, FILE *errs)
{
    struct load_ctx x = { errs, cfg->notify_template };
    char msg[CONFIG_PATH_BYTES_MAX + 128];
    struct stat st;
    unsigned problems;
    size_t got;
    FILE *f;
    char *text;

    notify_template_free(cfg);
    if (!cfg->notify_template[0])
        return 0;                     /* notify_text NULL: the built-in template */
    f = fopen(cfg->notify_template, "rb");
    if (!f || fstat(fileno(f), &st) < 0) {
        snprintf(msg, sizeof(msg), "cannot read %s: %s", cfg->notify_template, strerror(errno));
        if (f)
            fclose(f);
        return key_problem(cfg, errs, msg);
    }
    if (!S_ISREG(st.st_mode) || st.st_size > NOTIFY_TEMPLATE_BYTES_MAX) {
        fclose(f);
        if (S_ISREG(st.st_mode))
            snprintf(msg, sizeof(msg), "%s: larger than %u bytes", cfg->notify_template,
                     NOTIFY_TEMPLATE_BYTES_MAX);
        else
            snprintf(msg, sizeof(msg), "%s: not a regular file", cfg->notify_template);
        return key_problem(cfg, errs, msg);
    }
    /* One byte more than allowed: a file that grew since fstat is still caught. */
    text = rr_malloc(NOTIFY_TEMPLATE_BYTES_MAX + 2);
    got = fread(text, 1, NOTIFY_TEMPLATE_BYTES_MAX + 1, f);
    if (ferror(f)) {
        snprintf(msg, sizeof(msg), "cannot read %s: %s", cfg->notify_template, strerror(errno));
        fclose(f);
        free(text);
        return key_problem(cfg, errs, msg);
    }
    fclose(f);
    text[got] = '\0';
    problems = notify_template_check(text, got, load_problem, &x);
    if (problems) {
        free(text);
        return (int)problems;
    }
    cfg->notify_text = text;
    cfg->notify_text_len = got;
    return 0;
}

/* notify_template_free - see notify.h. */
void notify_template_free(struct rr_config *cfg)
{
    free(cfg->notify_text);
    cfg->notify_text = NULL;
    cfg->notify_text_len = 0;
}
