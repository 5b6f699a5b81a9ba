/*
 * smtp_commands.c - the SMTP command table: one row per verb with the states it is allowed
 * in, a check that parses, validates and replies without side effects, and a proceed that
 * does the work; then the end of message content and the spool's answer.
 *
 * Functions: smtp_command(), smtp_end_of_content(), smtp_protocol_error().
 *
 * SECURITY: lines reach here bounded (512 octets; AUTH lines by RFC 4954's larger bound,
 * see net/smtp_auth.h) with CRLF removed; every argument goes through net/smtp_parse.c (or
 * net/sasl.c for AUTH) before use. The relay policy is core/policy.c: recipients only for
 * authenticated clients and clients inside trusted_networks, an authenticated client's
 * sender judged at MAIL (hosted, owned, relaying by relay_mode), the hourly limits of
 * core/ratelimit.c taken last at MAIL and RCPT so that nothing refused for another reason
 * costs a token, and the relaying notice (core/notify.c) once the message is on disk; a
 * listener with auth = required wants AUTH before MAIL from everyone. A client that pipelines where RFC
 * 2920 forbids it, or without having been offered PIPELINING, is refused and dropped, so no
 * command can be smuggled behind one whose outcome it did not wait for; AUTH and its
 * response lines end a group (what follows AUTH PLAIN with an initial response waits for
 * the verdict: RFC 4954 4), and what follows STARTTLS is thrown away unread.
 *
 * STANDARDS: RFC 5321, RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 2034 (ENHANCEDSTATUSCODES),
 * RFC 2920 (PIPELINING), RFC 3030 (CHUNKING), RFC 6531 (SMTPUTF8), RFC 3207 (STARTTLS),
 * RFC 4954 (AUTH; the exchange itself is net/smtp_auth.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/policy.h"
#include "core/queue.h"
#include "core/ratelimit.h"
#include "core/spool.h"
#include "net/smtp_auth.h"
#include "net/smtp_session.h"

#define S(st) (1u << (st))
#define ANY_SESSION (S(ST_INIT) | S(ST_READY) | S(ST_MAIL))

/* One command being handled: the split line and what check() parsed out of it. */
struct cmd_ctx {
    struct smtp_cmd cmd;          /* verb and argument (points into the input) */
    bool notify;                  /* MAIL: relaying in notify mode */
    struct smtp_addr addr;        /* MAIL / RCPT path */
    struct smtp_mail_params params; /* MAIL parameters */
    uint64_t chunk_bytes;         /* BDAT size */
    bool chunk_last;              /* BDAT LAST */
    enum sasl_mech mech;          /* AUTH mechanism */
    const char *initial;          /* AUTH initial response (points into the line), or NULL */
    size_t initial_len;           /* bytes of initial */
    bool pending;                 /* more input already followed the line (RFC 2920) */
};

struct cmd_def {
    enum smtp_verb verb;
    unsigned states;              /* S(state) bits where the verb is in sequence */
    bool last_in_group;           /* RFC 2920: nothing may follow it in the same write */
    bool (*check)(struct conn *c, struct cmd_ctx *x); /* replied (and returned false) if not */
    void (*proceed)(struct conn *c, struct cmd_ctx *x);
};

static void improper_pipelining(struct conn *c);

/* smtp_protocol_error - count a peer fault; too many and the session ends. */
void smtp_protocol_error(struct conn *c, enum metrics_proto_reason reason)
{
    metrics_add(&c->w->m->protocol_errors[reason], 1);
    if (++c->errors >= c->w->cfg->errors_max && !c->close_after_send) {
        conn_reply(c, "421 4.7.0 %s Error: too many errors", c->w->cfg->hostname);
        conn_rejected(c, "421 4.7.0", "too_many_errors");
        metrics_add(&c->w->m->protocol_errors[PROTO_TOO_MANY_ERRORS], 1);
        conn_close_after_reply(c);
    }
}

/* refuse - reply to a refused command; log it and count it as a protocol error. */
static void refuse(struct conn *c, const char *reply, enum metrics_proto_reason reason)
{
    conn_reply(c, "%s", reply);
    conn_rejected(c, reply, metrics_proto_reason_name[reason]);
    smtp_protocol_error(c, reason);
}

/* refuse_message - reply to a refused transaction step, counted by message reason. */
static void refuse_message(struct conn *c, const char *reply, enum metrics_msg_reason reason)
{
    conn_reply(c, "%s", reply);
    conn_rejected(c, reply, metrics_msg_reason_name[reason]);
    metrics_add(&c->w->m->messages_rejected[reason], 1);
}

static void spool_done(struct worker *w, struct spool_msg_w *sm, int err);

/* ---- HELO / EHLO ---- */

static bool check_helo(struct conn *c, struct cmd_ctx *x)
{
    if (!x->cmd.arg_len || x->cmd.arg_len > SMTP_DOMAIN_BYTES_MAX ||
        memchr(x->cmd.arg, ' ', x->cmd.arg_len)) {
        refuse(c, x->cmd.verb == SMTP_VERB_EHLO ? "501 5.5.4 Syntax: EHLO hostname"
                                                : "501 5.5.4 Syntax: HELO hostname",
               PROTO_SYNTAX);
        return false;
    }
    return true;
}

static void proceed_helo(struct conn *c, struct cmd_ctx *x)
{
    const struct rr_config *cfg = c->w->cfg;

    txn_end(c);  /* RFC 5321 4.1.4: HELO/EHLO reset the transaction */
    memcpy(c->helo, x->cmd.arg, x->cmd.arg_len);
    c->helo[x->cmd.arg_len] = 0;
    c->esmtp = x->cmd.verb == SMTP_VERB_EHLO;
    conn_set_state(c, ST_READY);
    if (!c->esmtp) {
        conn_reply(c, "250 %s", cfg->hostname);
        return;
    }
    conn_reply(c, "250-%s Hello [%s]", cfg->hostname, c->peer_text);
    conn_reply(c, "250-PIPELINING");
    conn_reply(c, "250-SIZE %" PRIu64, cfg->message_bytes_max);
    conn_reply(c, "250-8BITMIME");
    if (conn_tls_offered(c))
        conn_reply(c, "250-STARTTLS");
    if (smtp_auth_offered(c))
        conn_reply(c, "250-AUTH PLAIN LOGIN");
    conn_reply(c, "250-ENHANCEDSTATUSCODES");
    conn_reply(c, "250-CHUNKING");
    conn_reply(c, "250 SMTPUTF8");
}

/* ---- MAIL ---- */

static bool check_mail(struct conn *c, struct cmd_ctx *x)
{
    const struct rr_config *cfg = c->w->cfg;
    uint64_t free_bytes = atomic_load_explicit(&engine.spool_free_bytes, memory_order_relaxed);
    enum smtp_parse_err e;

    /* auth = required holds for trusted networks too: they may relay without AUTH only
     * where the listener leaves AUTH optional. */
    if (cfg->listeners[c->listener].auth == AUTH_REQUIRED && !c->authenticated) {
        refuse_message(c, "530 5.7.0 Authentication required", MSG_AUTH_REQUIRED);
        return false;
    }
    e = smtp_parse_mail(x->cmd.arg, x->cmd.arg_len, cfg->message_bytes_max, &x->addr,
                        &x->params);
    if (e == SMTP_PARSE_SIZE_TOO_BIG) {
        refuse_message(c, smtp_parse_reply(e, true), MSG_SIZE);
        return false;
    }
    if (e != SMTP_PARSE_OK) {
        refuse_message(c, smtp_parse_reply(e, true), MSG_BAD_SENDER);
        smtp_protocol_error(c, PROTO_SYNTAX);
        return false;
    }
    x->notify = false;
    if (c->authenticated) {       /* the sender rules (core/policy.c) */
        struct policy_result res;
        if (policy_sender(cfg->policy_maps, cfg, c->login, x->addr.text, time(NULL), &res) ==
            POLICY_REJECT) {
            refuse_message(c, res.reply, res.msg_reason);
            return false;
        }
        x->notify = res.notify;
    }
    /* Free space is sampled each second by the main thread; keep the floor plus this
     * message (its declared SIZE, else the largest allowed) out of reach. */
    if (free_bytes < cfg->spool_min_free_bytes +
                         (x->params.has_size ? x->params.size : cfg->message_bytes_max)) {
        refuse_message(c, "452 4.3.1 Insufficient system storage", MSG_SPOOL_FULL);
        return false;
    }
    /* Last: a MAIL refused for any other reason takes nothing from the hourly limits. */
    enum ratelimit_hit hit = ratelimit_mail(ratelimit_shared(), cfg,
                                            c->authenticated ? c->login : NULL, &c->peer.sa,
                                            c->w->now_ms);
    if (hit != RATELIMIT_OK) {
        char reply[RATELIMIT_REPLY_BYTES_MAX + 1];
        refuse_message(c, ratelimit_reply(hit, cfg, reply, sizeof(reply)), MSG_RATE_LIMITED);
        return false;
    }
    return true;
}

static void proceed_mail(struct conn *c, struct cmd_ctx *x)
{
    struct txn *t = txn_new(c);

    t->from = x->addr;
    t->params = x->params;
    t->notify = x->notify;
    conn_set_state(c, ST_MAIL);
    conn_reply(c, "250 2.1.0 Ok");
}

/* ---- RCPT ---- */

/* refuse_rcpt - a refused recipient: reply, log, count by reason. */
static void refuse_rcpt(struct conn *c, const char *reply, enum metrics_rcpt_reason reason)
{
    conn_reply(c, "%s", reply);
    conn_rejected(c, reply, metrics_rcpt_reason_name[reason]);
    metrics_add(&c->w->m->recipients_rejected[reason], 1);
}

static bool check_rcpt(struct conn *c, struct cmd_ctx *x)
{
    const struct rr_config *cfg = c->w->cfg;
    struct txn *t = c->txn;
    enum smtp_parse_err e;

    if (t->rcpt_count >= cfg->rcpt_count_max || t->rcpt_count >= t->rcpt_cap) {
        refuse_rcpt(c, "452 4.5.3 Too many recipients", RCPT_TOO_MANY);
        return false;
    }
    e = smtp_parse_rcpt(x->cmd.arg, x->cmd.arg_len, t->params.smtputf8, &x->addr);
    if (e != SMTP_PARSE_OK) {
        refuse_rcpt(c, smtp_parse_reply(e, false), RCPT_BAD_ADDRESS);
        smtp_protocol_error(c, PROTO_SYNTAX);
        return false;
    }
    if (!policy_may_relay(cfg, c->authenticated, &c->peer.sa)) {
        char reply[POLICY_REPLY_BYTES_MAX + 1];
        refuse_rcpt(c, policy_relay_denied_reply(x->addr.text, reply, sizeof(reply)),
                    RCPT_RELAY_DENIED);
        return false;
    }
    /* Last: a recipient refused above (452 beyond max_recipients too) takes no token. */
    enum ratelimit_hit hit = ratelimit_rcpt(ratelimit_shared(), cfg,
                                            c->authenticated ? c->login : NULL, c->w->now_ms);
    if (hit != RATELIMIT_OK) {
        char reply[RATELIMIT_REPLY_BYTES_MAX + 1];
        refuse_rcpt(c, ratelimit_reply(hit, cfg, reply, sizeof(reply)), RCPT_RATE_LIMITED);
        return false;
    }
    return true;
}

static void proceed_rcpt(struct conn *c, struct cmd_ctx *x)
{
    c->txn->rcpts[c->txn->rcpt_count++] = x->addr;
    conn_reply(c, "250 2.1.5 Ok");
}

/* ---- DATA and BDAT ---- */

/* begin_content - open the message in the spool and start the scanner; false when the
 * spool cannot take it (the caller replies). */
static bool begin_content(struct conn *c, bool bdat)
{
    const struct rr_config *cfg = c->w->cfg;
    struct txn *t = c->txn;

    t->sm.done = spool_done;
    if (spool_msg_begin(c->w, &t->sm))
        return false;
    t->spooling = true;
    t->bdat = bdat;
    smtp_data_init(&t->rd, bdat ? SMTP_DATA_BDAT : SMTP_DATA_DOT,
                   cfg->line_endings == LINE_ENDINGS_NORMALIZE, cfg->message_bytes_max,
                   SMTP_TEXT_LINE_BYTES_MAX);
    return true;
}

static bool check_data(struct conn *c, struct cmd_ctx *x)
{
    if (x->cmd.arg_len) {
        refuse(c, "501 5.5.4 Syntax: DATA", PROTO_SYNTAX);
        return false;
    }
    if (!c->txn->rcpt_count) {
        refuse_message(c, "554 5.5.1 Error: no valid recipients", MSG_NO_RECIPIENTS);
        return false;
    }
    if (c->txn->bdat) {
        refuse(c, "503 5.5.1 Error: DATA after BDAT", PROTO_SEQUENCE);
        return false;
    }
    return true;
}

static void proceed_data(struct conn *c, struct cmd_ctx *x)
{
    if (!begin_content(c, false)) {
        refuse_message(c, "451 4.3.0 Error: queue file write error", MSG_SPOOL_ERROR);
        return;
    }
    conn_set_state(c, ST_DATA);
    conn_data_deadline(c);
    conn_reply(c, "354 End data with <CR><LF>.<CR><LF>");
}

/* start_chunk - read a BDAT chunk, storing it or (discard) only counting it. */
static void start_chunk(struct conn *c, struct cmd_ctx *x, const char *refusal)
{
    c->bdat_left = x->chunk_bytes;
    c->bdat_size = x->chunk_bytes;
    c->bdat_last = x->chunk_last;
    c->bdat_discard = refusal != NULL;
    c->bdat_refusal = refusal;
    conn_set_state(c, ST_BDAT);
    conn_data_deadline(c);
    if (!c->bdat_left)
        smtp_end_of_content(c, ENGINE_BUF_NONE, NULL, 0);
}

static bool check_bdat(struct conn *c, struct cmd_ctx *x)
{
    if (!smtp_parse_bdat(x->cmd.arg, x->cmd.arg_len, &x->chunk_bytes, &x->chunk_last)) {
        /* The chunk length is unknown: the stream cannot be followed any more. */
        conn_reply(c, "501 5.5.4 Syntax: BDAT size [LAST]");
        conn_rejected(c, "501 5.5.4", "syntax");
        metrics_add(&c->w->m->protocol_errors[PROTO_SYNTAX], 1);
        conn_close_after_reply(c);
        return false;
    }
    if (c->state != ST_MAIL || !c->txn->rcpt_count) {
        /* Read the chunk anyway (it is not commands), then refuse it. */
        start_chunk(c, x, c->state == ST_INIT ? "503 5.5.1 Error: send HELO/EHLO first"
                          : c->state == ST_READY ? "503 5.5.1 Error: need MAIL command"
                                                 : "554 5.5.1 Error: no valid recipients");
        return false;
    }
    return true;
}

static void proceed_bdat(struct conn *c, struct cmd_ctx *x)
{
    if (!c->txn->spooling && !begin_content(c, true)) {
        metrics_add(&c->w->m->messages_rejected[MSG_SPOOL_ERROR], 1);
        txn_end(c);
        conn_set_state(c, ST_READY);
        start_chunk(c, x, "451 4.3.0 Error: queue file write error");
        return;
    }
    start_chunk(c, x, NULL);
}

/* ---- the rest ---- */

static void proceed_rset(struct conn *c, struct cmd_ctx *x)
{
    txn_end(c);
    if (c->state == ST_MAIL)
        conn_set_state(c, ST_READY);
    conn_reply(c, "250 2.0.0 Ok");
}

static void proceed_noop(struct conn *c, struct cmd_ctx *x)
{
    conn_reply(c, "250 2.0.0 Ok");
}

static void proceed_quit(struct conn *c, struct cmd_ctx *x)
{
    txn_end(c);
    conn_reply(c, "221 2.0.0 Bye");
    conn_close_after_reply(c);
}

static void proceed_vrfy(struct conn *c, struct cmd_ctx *x)
{
    conn_reply(c, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void proceed_help(struct conn *c, struct cmd_ctx *x)
{
    conn_reply(c, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP");
}

static bool check_not_offered(struct conn *c, struct cmd_ctx *x)
{
    char reply[80];

    snprintf(reply, sizeof(reply), "502 5.5.1 %s not available", smtp_verb_name(x->cmd.verb));
    refuse(c, reply, PROTO_UNKNOWN_COMMAND);
    return false;
}

/* ---- STARTTLS (RFC 3207; the transport is net/smtp_tls.c's) ---- */

static bool check_starttls(struct conn *c, struct cmd_ctx *x)
{
    if (conn_is_tls(c)) {
        refuse(c, "554 5.5.1 Error: TLS already active", PROTO_SEQUENCE);
        return false;
    }
    if (!conn_tls_offered(c))
        return check_not_offered(c, x);
    if (x->cmd.arg_len) {
        refuse(c, "501 5.5.4 Syntax: STARTTLS", PROTO_SYNTAX);
        return false;
    }
    return true;
}

static void proceed_starttls(struct conn *c, struct cmd_ctx *x)
{
    /* RFC 3207 4.2: discard all knowledge obtained from the client. */
    txn_end(c);
    c->helo[0] = '\0';
    c->esmtp = false;
    smtp_auth_forget(c);
    conn_set_state(c, ST_INIT);
    conn_starttls(c);
}

/* ---- AUTH (RFC 4954; the exchange is net/smtp_auth.c's) ---- */

static bool check_auth(struct conn *c, struct cmd_ctx *x)
{
    const struct rr_config *cfg = c->w->cfg;
    const char *a = x->cmd.arg, *end = a + x->cmd.arg_len, *sp, *p;

    if (!smtp_auth_available(c)) {
        smtp_auth_refused(c, "502 5.5.1 AUTH not available", "not_available", AUTHR_REFUSED,
                          PROTO_UNKNOWN_COMMAND);
        return false;
    }
    if (c->authenticated) {
        smtp_auth_refused(c, "503 5.5.1 Error: already authenticated", "already_authenticated",
                          AUTHR_REFUSED, PROTO_SEQUENCE);
        return false;
    }
    if (c->state == ST_MAIL) {
        smtp_auth_refused(c, "503 5.5.1 Error: MAIL transaction in progress", "in_transaction",
                          AUTHR_REFUSED, PROTO_SEQUENCE);
        return false;
    }
    if (!conn_is_tls(c) && !cfg->auth_plaintext) {
        smtp_auth_refused(c, "538 5.7.11 Encryption required for requested authentication "
                          "mechanism", "encryption_required", AUTHR_REFUSED, -1);
        return false;
    }
    sp = memchr(a, ' ', x->cmd.arg_len);
    if (!x->cmd.arg_len || sp == a) {
        smtp_auth_refused(c, "501 5.5.4 Syntax: AUTH mechanism [initial-response]", "syntax",
                          AUTHR_MALFORMED, PROTO_SYNTAX);
        return false;
    }
    x->mech = sasl_mech_parse(a, sp ? (size_t)(sp - a) : x->cmd.arg_len);
    if (x->mech == SASL_MECH_UNKNOWN) {
        smtp_auth_refused(c, sasl_status_reply(SASL_BAD_MECH), "unknown_mechanism",
                          AUTHR_MALFORMED, -1);
        return false;
    }
    x->initial = NULL;
    x->initial_len = 0;
    if (sp) {  /* the parser removed trailing spaces: an argument follows */
        for (p = sp; p < end && *p == ' '; p++)
            ;
        if (memchr(p, ' ', (size_t)(end - p))) {
            smtp_auth_refused(c, "501 5.5.4 Syntax: AUTH mechanism [initial-response]",
                              "syntax", AUTHR_MALFORMED, PROTO_SYNTAX);
            return false;
        }
        x->initial = p;
        x->initial_len = (size_t)(end - p);
    }
    /* RFC 4954 4: AUTH ends a pipelined group, unless it carries the initial response of a
     * mechanism that completes in one round trip (PLAIN): then what follows waits, in
     * order, for the verdict (ST_AUTH_WAIT), and auth = required judges MAIL by it. */
    if (x->pending && (x->mech != SASL_MECH_PLAIN || !x->initial)) {
        improper_pipelining(c);
        return false;
    }
    return true;
}

static void proceed_auth(struct conn *c, struct cmd_ctx *x)
{
    smtp_auth_start(c, x->mech, x->initial, x->initial_len);
}

static const struct cmd_def commands[SMTP_VERB_COUNT] = {
    [SMTP_VERB_HELO] = { SMTP_VERB_HELO, ANY_SESSION, true, check_helo, proceed_helo },
    [SMTP_VERB_EHLO] = { SMTP_VERB_EHLO, ANY_SESSION, true, check_helo, proceed_helo },
    [SMTP_VERB_MAIL] = { SMTP_VERB_MAIL, S(ST_READY), false, check_mail, proceed_mail },
    [SMTP_VERB_RCPT] = { SMTP_VERB_RCPT, S(ST_MAIL), false, check_rcpt, proceed_rcpt },
    [SMTP_VERB_DATA] = { SMTP_VERB_DATA, S(ST_MAIL), true, check_data, proceed_data },
    [SMTP_VERB_BDAT] = { SMTP_VERB_BDAT, ANY_SESSION, false, check_bdat, proceed_bdat },
    [SMTP_VERB_RSET] = { SMTP_VERB_RSET, ANY_SESSION, false, NULL, proceed_rset },
    [SMTP_VERB_NOOP] = { SMTP_VERB_NOOP, ANY_SESSION, false, NULL, proceed_noop },
    [SMTP_VERB_QUIT] = { SMTP_VERB_QUIT, ANY_SESSION, false, NULL, proceed_quit },
    [SMTP_VERB_VRFY] = { SMTP_VERB_VRFY, ANY_SESSION, false, NULL, proceed_vrfy },
    [SMTP_VERB_EXPN] = { SMTP_VERB_EXPN, ANY_SESSION, false, check_not_offered, NULL },
    [SMTP_VERB_HELP] = { SMTP_VERB_HELP, ANY_SESSION, false, NULL, proceed_help },
    [SMTP_VERB_STARTTLS] = { SMTP_VERB_STARTTLS, ANY_SESSION, true, check_starttls,
                             proceed_starttls },
    /* AUTH ends a pipelined group (RFC 4954 4), but for AUTH PLAIN with an initial
     * response: check_auth decides, as it parses the mechanism. */
    [SMTP_VERB_AUTH] = { SMTP_VERB_AUTH, S(ST_READY) | S(ST_MAIL), false, check_auth,
                         proceed_auth },
};

/* sequence_reply - the 503 for a verb out of sequence in the current state. */
static const char *sequence_reply(struct conn *c, enum smtp_verb verb)
{
    if (c->state == ST_INIT)
        return "503 5.5.1 Error: send HELO/EHLO first";
    if (verb == SMTP_VERB_MAIL)
        return "503 5.5.1 Error: nested MAIL command";
    return "503 5.5.1 Error: need MAIL command";
}

/* improper_pipelining - 554 and close: input came ahead of a reply it had to wait for. */
static void improper_pipelining(struct conn *c)
{
    conn_reply(c, "554 5.5.0 Error: improper use of SMTP command pipelining");
    conn_rejected(c, "554 5.5.0", "improper_pipelining");
    metrics_add(&c->w->m->protocol_errors[PROTO_PIPELINING], 1);
    conn_close_after_reply(c);
}

/* smtp_command - one command line: pipelining rules, sequence, check, proceed. */
void smtp_command(struct conn *c, const char *line, size_t len, bool pending)
{
    struct cmd_ctx x;
    const struct cmd_def *d;
    enum smtp_parse_err e;

    conn_idle_deadline(c);
    if (c->state == ST_AUTH) {
        /* A response to a 334, not a command (RFC 4954 4); like the AUTH command it must
         * wait for its reply before anything follows. */
        if (pending)
            improper_pipelining(c);
        else
            smtp_auth_response(c, line, len);
        return;
    }
    e = smtp_cmd_parse(line, len, &x.cmd);
    if (e == SMTP_PARSE_NUL) {
        refuse(c, smtp_parse_reply(e, false), PROTO_BAD_BYTES);
        return;
    }
    if (e != SMTP_PARSE_OK) {
        refuse(c, smtp_parse_reply(e, false), PROTO_UNKNOWN_COMMAND);
        return;
    }
    d = &commands[x.cmd.verb];
    x.pending = pending;
    /* RFC 2920: without PIPELINING offered nothing may be sent ahead; with it, commands
     * whose outcome changes what may follow must end their group. QUIT ends the session;
     * STARTTLS throws whatever follows it away unread (RFC 3207 4.2, net/smtp_tls.c), as
     * Postfix does, so neither needs the refusal. */
    if (pending && x.cmd.verb != SMTP_VERB_QUIT && x.cmd.verb != SMTP_VERB_STARTTLS &&
        (!c->esmtp || d->last_in_group)) {
        improper_pipelining(c);
        return;
    }
    if (!(d->states & S(c->state))) {
        refuse(c, sequence_reply(c, x.cmd.verb), PROTO_SEQUENCE);
        return;
    }
    if (d->check && !d->check(c, &x))
        return;
    if (d->proceed)
        d->proceed(c, &x);
}

/* ---- end of content ---- */

/* envelope_build - the COMMIT payload: "key value" lines (see core/spool.h). */
static void envelope_build(struct conn *c, struct txn *t, uint64_t bytes)
{
    const struct rr_config *cfg = c->w->cfg;
    size_t cap = 1024 + strlen(c->helo) + strlen(c->login) +
                 (t->rcpt_count + 1) * (SMTP_PATH_BYTES_MAX + 8);
    char qid[17];
    struct timespec now;
    int n;

    clock_gettime(CLOCK_REALTIME, &now);
    spool_qid_format(t->sm.qid, qid);
    t->envelope = rr_malloc(cap);
    n = snprintf(t->envelope, cap,
                 "qid %s\ntime %lld\nsize %" PRIu64 "\nip %s\nhelo %s\nlogin %s\nlistener %s\n"
                 "proto %s\nbody %s\nsmtputf8 %d\nfrom %s\n",
                 qid, (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000, bytes,
                 c->peer_text, c->helo, c->authenticated ? c->login : "",
                 cfg->listeners[c->listener].name,
                 c->esmtp ? "ESMTP" : "SMTP",
                 t->params.body == SMTP_BODY_8BITMIME ? "8BITMIME" : "7BIT",
                 t->params.smtputf8, t->from.text);
    for (unsigned i = 0; i < t->rcpt_count; i++)
        n += snprintf(t->envelope + n, cap - (size_t)n, "rcpt %s\n", t->rcpts[i].text);
    t->envelope_len = (uint32_t)n;
}

/* after_txn - the transaction is answered: back to READY, or leave when stopping. */
static void after_txn(struct conn *c)
{
    conn_set_state(c, ST_READY);
    conn_idle_deadline(c);
    if (c->stop_after_txn) {
        conn_reply(c, "421 4.3.2 %s Service shutting down", c->w->cfg->hostname);
        conn_close_after_reply(c);
    }
}

/* relaying_notice - a message relayed in notify mode is accepted: the customer is told
 * (core/notify.c; at most once per login and domain per notify_interval). The login and the
 * client address come from the envelope, since the session may be gone. */
static void relaying_notice(struct worker *w, const struct txn *t, const struct conn *c,
                            const char *login, size_t login_len, uint64_t qid)
{
    char user[POLICY_LOGIN_BYTES_MAX + 1], ip[CONN_PEER_BYTES];
    const char *v;
    size_t n = 0;

    if (login_len > POLICY_LOGIN_BYTES_MAX)
        return;
    memcpy(user, login, login_len);
    user[login_len] = 0;
    v = spool_env_get(t->envelope, t->envelope_len, "ip", NULL, &n);
    if (!v || n >= sizeof(ip))
        n = 0;
    memcpy(ip, v ? v : "", n);
    ip[n] = 0;
    notify_relaying(w, &(struct notify_req){
        .login = user, .from = t->from.text, .peer = c ? &c->peer.sa : NULL,
        .peer_text = ip, .qid = qid });
}

/* spool_done - the spool's verdict on a committed message (or its abort). */
static void spool_done(struct worker *w, struct spool_msg_w *sm, int err)
{
    struct txn *t = (struct txn *)sm;
    struct conn *c = t->conn;
    char qid[17];
    const char *login;
    size_t login_len = 0;

    spool_qid_format(sm->qid, qid);
    if (err == 0) {
        /* Durable: counted as accepted whether or not the client is still there. The login
         * comes from the envelope: the session may be gone. Unauthenticated: "login=" with
         * no value, so the key is always there for whoever splits the line. */
        login = spool_env_get(t->envelope, t->envelope_len, "login", NULL, &login_len);
        metrics_add(&w->m->messages_accepted, 1);
        metrics_add(&w->m->bytes_accepted, sm->bytes);
        metrics_add(&w->m->recipients_accepted, t->rcpt_count);
        metrics_observe(&w->m->accept_latency, w->now_ns > t->end_ns ? w->now_ns - t->end_ns : 0);
        log_event(LOG_INFO, "event=accepted id=%s from=<%s> nrcpt=%u size=%" PRIu64
                  " login=%s peer=%s", qid, t->from.len ? log_q(t->from.text) : "",
                  t->rcpt_count, sm->bytes, login && login_len ? log_qn(login, login_len) : "",
                  c ? c->peer_text : "gone");
        queue_add(w, sm->qid, sm->seg_id, t->envelope, t->envelope_len, spool_msg_chunks(sm),
                  sm->chunks, sm->bytes);
        if (t->notify && login && login_len)
            relaying_notice(w, t, c, login, login_len, sm->qid);
    }
    if (!c) {
        txn_free(t);
        return;
    }
    c->txn = NULL;
    t->conn = NULL;
    if (err == 0) {
        conn_reply(c, "250 2.0.0 Ok: queued as %s", qid);
    } else if (err != -ECANCELED) {
        bool full = err == -ENOSPC || err == -EDQUOT;
        refuse_message(c, full ? "452 4.3.1 Insufficient system storage"
                               : "451 4.3.0 Error: queue file write error",
                       full ? MSG_SPOOL_FULL : MSG_SPOOL_ERROR);
        log_event(LOG_WARN, "event=spool_failed id=%s error=%s", qid, log_q(strerror(-err)));
    }
    txn_free(t);
    after_txn(c);
    if (!c->closing && !c->close_after_send)
        smtp_server_resume(c);
    conn_reap(c);
}

/* smtp_end_of_content - the end of DATA or of a BDAT chunk. */
void smtp_end_of_content(struct conn *c, uint16_t bid, struct iovec *iov, unsigned n)
{
    struct txn *t = c->txn;
    struct iovec spare[1];
    static const enum metrics_msg_reason data_reason[SMTP_DATA_ERR_COUNT] = {
        [SMTP_DATA_BARE_LF] = MSG_BARE_EOL, [SMTP_DATA_BARE_CR] = MSG_BARE_EOL,
        [SMTP_DATA_NUL] = MSG_NUL, [SMTP_DATA_LINE_TOO_LONG] = MSG_LINE_TOO_LONG,
        [SMTP_DATA_TOO_BIG] = MSG_SIZE,
    };
    enum smtp_data_err err;
    uint64_t bytes;

    if (!iov) {  /* no content in hand (an empty chunk): room for a final CRLF all the same */
        iov = spare;
        n = 0;
    }
    if (c->state == ST_BDAT) {
        if (c->bdat_discard || !t) {
            conn_set_state(c, !t ? (c->helo[0] ? ST_READY : ST_INIT) : ST_MAIL);
            conn_idle_deadline(c);
            refuse(c, c->bdat_refusal ? c->bdat_refusal : "503 5.5.1 Error: need MAIL command",
                   PROTO_SEQUENCE);
            return;
        }
        if (!c->bdat_last) {
            if (n)
                spool_msg_write(c->w, &t->sm, bid, iov, n);
            conn_set_state(c, ST_MAIL);
            conn_idle_deadline(c);
            if (t->rd.err == SMTP_DATA_OK) {
                conn_reply(c, "250 2.0.0 %" PRIu64 " octets received", c->bdat_size);
                return;
            }
        } else if (t->rd.err == SMTP_DATA_OK) {
            unsigned before = n;
            smtp_data_finish(&t->rd, iov, n + 1, &n);
            if (n > before && bid != ENGINE_BUF_NONE && before == 0)
                bid = ENGINE_BUF_NONE;  /* only the static CRLF: no buffer to hold */
        }
    }
    err = (enum smtp_data_err)t->rd.err;
    t->end_ns = c->w->now_ns;
    if (err != SMTP_DATA_OK) {
        refuse_message(c, smtp_data_reply(err), data_reason[err]);
        txn_end(c);
        after_txn(c);
        return;
    }
    bytes = t->sm.bytes;
    for (unsigned i = 0; i < n; i++)
        bytes += iov[i].iov_len;
    envelope_build(c, t, bytes);
    t->sm.done = spool_done;
    conn_set_state(c, ST_COMMIT);
    engine_timer_set(c->w, &c->timer, 0);
    spool_msg_commit(c->w, &t->sm, bid, iov, n, t->envelope, t->envelope_len);
}
