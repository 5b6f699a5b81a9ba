/*
 * main.c - ringrelay: read the configuration, recover the spool, open the listeners, drop
 * privileges, run the workers, and serve signals (SIGHUP reload, SIGTERM stop) until done.
 *
 * The main thread never touches a session. After start-up it waits for signals with a one
 * second timeout; on each timeout it samples the spool's free space for the workers' MAIL
 * checks (statvfs would be a blocking call on a worker).
 *
 * Usage: ringrelay [-c FILE] [-o section.key=value]... [-t] [-v]
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <poll.h>
#include <sys/signalfd.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bpf/connlimit.h"
#include "core/alloc.h"
#include "core/auth_pool.h"
#include "core/config.h"
#include "core/control.h"
#include "core/engine.h"
#include "core/iplimit.h"
#include "core/log.h"
#include "core/resources.h"
#include "core/queue.h"
#include "core/spool.h"
#include "net/http_metrics.h"
#include "net/listener.h"
#include "tls/tls.h"

#define OVERRIDES_MAX 64
#define RELOAD_WAIT_MS 5000   /* longest wait for every worker to let go of an old config */

struct options {
    const char *config_path;      /* -c */
    char *overrides[OVERRIDES_MAX]; /* -o */
    unsigned override_count;
    bool check_only;              /* -t */
};

/* usage - the synopsis, and exit. */
static void usage(int status)
{
    fprintf(status ? stderr : stdout,
            "usage: ringrelay [-c FILE] [-o section.key=value]... [-t] [-v]\n"
            "  -c FILE  configuration file (default: embedded defaults)\n"
            "  -o K=V   override one key after the file, e.g. -o limits.max_recipients=100\n"
            "  -t       check the configuration and the files it names, then exit\n"
            "  -v       verbose: debug log lines\n");
    exit(status);
}

/* parse_args - command line into opts. */
static void parse_args(int argc, char **argv, struct options *opts)
{
    int ch;

    while ((ch = getopt(argc, argv, "c:o:tvh")) != -1) {
        switch (ch) {
        case 'c':
            opts->config_path = optarg;
            break;
        case 'o':
            if (opts->override_count == OVERRIDES_MAX) {
                fprintf(stderr, "ringrelay: at most %d -o options\n", OVERRIDES_MAX);
                exit(2);
            }
            opts->overrides[opts->override_count++] = optarg;
            break;
        case 't':
            opts->check_only = true;
            break;
        case 'v':
            log_verbose = true;
            break;
        case 'h':
            usage(0);
            break;
        default:
            usage(2);
        }
    }
    if (optind != argc)
        usage(2);
}

/* load_config - a fresh configuration, or NULL after printing its problems. */
static struct rr_config *load_config(const struct options *o, bool check_files)
{
    struct rr_config *cfg = rr_calloc(1, sizeof(*cfg));
    int problems = config_load(cfg, o->config_path, o->overrides, o->override_count, stderr);

    if (!problems && check_files)
        problems = config_check_files(cfg, stderr);
    if (!problems)
        problems = resources_load(cfg, stderr);  /* certificates, keys, passwords */
    if (problems) {
        config_free(cfg);
        free(cfg);
        return NULL;
    }
    return cfg;
}

/* mkdir_p - create dir and its parents. */
static int mkdir_p(const char *dir)
{
    char path[CONFIG_PATH_BYTES_MAX];
    size_t len = strlen(dir);

    if (len >= sizeof(path))
        return -ENAMETOOLONG;
    memcpy(path, dir, len + 1);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(path, 0750) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* sample_free_space - free bytes under the spool for the workers' MAIL checks. */
static void sample_free_space(const char *dir)
{
    struct statvfs sv;

    if (statvfs(dir, &sv) == 0)
        atomic_store_explicit(&engine.spool_free_bytes, (uint64_t)sv.f_bavail * sv.f_frsize,
                              memory_order_relaxed);
}

/* drop_privileges - become cfg->user, giving it the spool first. 0 or -1. */
static int drop_privileges(const struct rr_config *cfg)
{
    struct passwd *pw;

    if (!cfg->user[0])
        return 0;
    if (geteuid() != 0) {
        log_event(LOG_WARN, "event=privileges user=%s note=not_root_staying", log_q(cfg->user));
        return 0;
    }
    pw = getpwnam(cfg->user);
    if (!pw) {
        log_event(LOG_FATAL, "event=privileges error=unknown_user user=%s", log_q(cfg->user));
        return -1;
    }
    if (chown(cfg->spool_dir, pw->pw_uid, pw->pw_gid) < 0 ||
        initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
        setuid(pw->pw_uid) < 0 || setuid(0) == 0) {
        log_event(LOG_FATAL, "event=privileges error=%s user=%s", log_q(strerror(errno)),
                  log_q(cfg->user));
        return -1;
    }
    log_event(LOG_INFO, "event=privileges user=%s uid=%u", log_q(cfg->user), pw->pw_uid);
    return 0;
}

/* open_listeners - every worker's sockets, and the metrics socket on worker 0. */
static int open_listeners(const struct rr_config *cfg)
{
    for (unsigned wi = 0; wi < engine.count; wi++) {
        struct worker *w = &engine.workers[wi];
        for (unsigned li = 0; li < cfg->listener_count; li++) {
            const struct config_listener *l = &cfg->listeners[li];
            for (unsigned ai = 0; ai < l->addr_count; ai++) {
                char text[80];
                int fd = listener_open(&l->addrs[ai], true, w->cpu);
                if (fd < 0) {
                    listener_format(&l->addrs[ai], text, sizeof(text));
                    log_event(LOG_FATAL, "event=listen_failed listener=%s address=%s error=%s",
                              l->name, text, log_q(strerror(-fd)));
                    return -1;
                }
                w->listen_fd[w->listen_count] = fd;
                w->listen_listener[w->listen_count++] = (uint8_t)li;
            }
        }
    }
    if (cfg->metrics_listen.len) {
        int fd = listener_open(&cfg->metrics_listen, false, -1);
        if (fd < 0) {
            log_event(LOG_FATAL, "event=listen_failed listener=metrics error=%s",
                      log_q(strerror(-fd)));
            return -1;
        }
        http_metrics_init(&engine.workers[0], fd);
    }
    return 0;
}

/* The kernel's per-IP accounting while it is in force (NULL: userspace). */
static struct connlimit *ip_kernel;

/* ip_limits_exempt - the configuration's exempt networks in the programs' form; count. */
static unsigned ip_limits_exempt(const struct rr_config *cfg,
                                 struct connlimit_net nets[CONNLIMIT_EXEMPT_MAX])
{
    unsigned n = 0;

    for (unsigned i = 0; i < cfg->ip_limit_exempt_count && n < CONNLIMIT_EXEMPT_MAX; i++)
        connlimit_net_make(&nets[n++], cfg->ip_limit_exempt[i].family,
                           cfg->ip_limit_exempt[i].addr, cfg->ip_limit_exempt[i].prefix);
    return n;
}

/* ip_limits_apply - the configuration's per-IP limits and exempt networks into the kernel
 * programs' global data (a reload). */
static void ip_limits_apply(struct connlimit *cl, const struct rr_config *cfg)
{
    struct connlimit_limits lim = { cfg->bpf_connections_per_ip_max,
                                    cfg->bpf_connects_per_ip_per_s_max };
    struct connlimit_net nets[CONNLIMIT_EXEMPT_MAX];

    connlimit_set_exempt(cl, nets, ip_limits_exempt(cfg, nets));
    connlimit_set_limits(cl, &lim);
}

/* ip_limits_start - load the per-IP accounting into the kernel and put every listening
 * socket under it ([bpf] enabled = auto | yes). NULL: the limits stay in userspace (auto
 * could not load, or enabled = no); *fatal when enabled = yes could not load. One log line
 * says which is in force. */
static struct connlimit *ip_limits_start(const struct rr_config *cfg, bool *fatal)
{
    uint32_t cpu_worker[CONNLIMIT_CPUS_MAX];
    struct connlimit_limits lim = { cfg->bpf_connections_per_ip_max,
                                    cfg->bpf_connects_per_ip_per_s_max };
    struct connlimit *cl = NULL;
    char why[512] = "", ids[64] = "";
    uint32_t id[2];
    unsigned nid;
    int err = 0;

    *fatal = false;
    if (cfg->bpf == BPF_NO) {
        log_event(LOG_INFO, "event=ip_limits enforced=userspace reason=disabled "
                  "connections_max=%u connects_per_s_max=%u", lim.connections_max,
                  lim.connects_per_s_max);
        return NULL;
    }
    /* Steering: a CPU with exactly one worker sends its SYNs there; a CPU with several
     * (more workers than CPUs) leaves the choice to the kernel's hash. */
    for (unsigned c = 0; c < CONNLIMIT_CPUS_MAX; c++)
        cpu_worker[c] = CONNLIMIT_NO_WORKER;
    for (unsigned i = 0; i < engine.count && i < CONNLIMIT_WORKERS_MAX; i++) {
        int c = engine.workers[i].cpu;
        if (c >= 0 && c < CONNLIMIT_CPUS_MAX)
            cpu_worker[c] = i;
    }
    for (unsigned i = 0; i < engine.count; i++) {  /* a shared CPU: the kernel's choice */
        int c = engine.workers[i].cpu;
        if (c >= 0 && c < CONNLIMIT_CPUS_MAX && cpu_worker[c] != i)
            cpu_worker[c] = CONNLIMIT_NO_WORKER;
    }
    {
        struct connlimit_net nets[CONNLIMIT_EXEMPT_MAX];
        err = connlimit_load(&cl, &lim, nets, ip_limits_exempt(cfg, nets), cpu_worker,
                             CONNLIMIT_CPUS_MAX, why, sizeof(why));
    }
    for (unsigned i = 0; !err && i < engine.count; i++)
        for (unsigned k = 0; !err && k < engine.workers[i].listen_count; k++) {
            err = connlimit_add_listener(cl, engine.workers[i].listen_fd[k], k, i);
            if (err)
                snprintf(why, sizeof(why), "attaching to a listening socket: %s",
                         strerror(-err));
        }
    if (err) {
        /* Some groups may carry the admission program already: take it off them all. */
        for (unsigned i = 0; cl && i < engine.count; i++)
            for (unsigned k = 0; k < engine.workers[i].listen_count; k++)
                connlimit_remove_listener(engine.workers[i].listen_fd[k]);
        connlimit_close(cl);
        *fatal = cfg->bpf == BPF_YES;
        log_event(*fatal ? LOG_FATAL : LOG_WARN, "event=ip_limits enforced=%s reason=%s "
                  "connections_max=%u connects_per_s_max=%u",
                  *fatal ? "none" : "userspace", log_q(why), lim.connections_max,
                  lim.connects_per_s_max);
        return NULL;
    }
    nid = connlimit_prog_ids(cl, id, 2);
    for (unsigned i = 0; i < nid; i++)
        snprintf(ids + strlen(ids), sizeof(ids) - strlen(ids), "%s%u", i ? "," : "", id[i]);
    log_event(LOG_INFO, "event=ip_limits enforced=kernel programs=%s connections_max=%u "
              "connects_per_s_max=%u", ids, lim.connections_max, lim.connects_per_s_max);
    return cl;
}

/* sd_notify_ready - tell systemd we are up, when it asked (NOTIFY_SOCKET). */
static void sd_notify_ready(void)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    size_t len;
    int fd;

    if (!path || !*path || strlen(path) >= sizeof(sun.sun_path))
        return;
    len = strlen(path);
    memcpy(sun.sun_path, path, len);
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = 0;  /* abstract namespace */
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, "READY=1", 7, MSG_NOSIGNAL, (struct sockaddr *)&sun,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        log_event(LOG_WARN, "event=sd_notify_failed error=%s", log_q(strerror(errno)));
    close(fd);
}

/* log_ready - event=ready with where we listen. */
static void log_ready(const struct rr_config *cfg)
{
    char list[1024] = "", text[80], metrics[120] = "off";
    size_t n = 0;

    for (unsigned li = 0; li < cfg->listener_count; li++)
        for (unsigned ai = 0; ai < cfg->listeners[li].addr_count; ai++) {
            listener_format(&cfg->listeners[li].addrs[ai], text, sizeof(text));
            n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s=%s", n ? "," : "",
                                  cfg->listeners[li].name, text);
            if (n >= sizeof(list))
                n = sizeof(list) - 1;
        }
    if (cfg->metrics_listen.len) {
        listener_format(&cfg->metrics_listen, text, sizeof(text));
        snprintf(metrics, sizeof(metrics), "http://%s/metrics", text);
    }
    log_event(LOG_INFO, "event=ready version=%s workers=%u listen=%s metrics=%s spool=%s pid=%d",
              RR_VERSION, engine.count, list, metrics, log_q(cfg->spool_dir), (int)getpid());
}

/* same_listeners - whether a reload keeps every listener as it was. */
static bool same_listeners(const struct rr_config *a, const struct rr_config *b)
{
    if (a->listener_count != b->listener_count)
        return false;
    for (unsigned i = 0; i < a->listener_count; i++) {
        const struct config_listener *x = &a->listeners[i], *y = &b->listeners[i];
        if (strcmp(x->name, y->name) || x->addr_count != y->addr_count)
            return false;
        for (unsigned k = 0; k < x->addr_count; k++)
            if (x->addrs[k].len != y->addrs[k].len ||
                memcmp(&x->addrs[k].sa, &y->addrs[k].sa, x->addrs[k].len))
                return false;
    }
    return true;
}

/* reload - SIGHUP: read the configuration again and hand it to the workers. */
static struct rr_config *reload(const struct options *o, struct rr_config *old)
{
    struct rr_config *cfg = load_config(o, true);
    uint64_t gen, deadline;

    if (!cfg) {
        log_event(LOG_ERROR, "event=reload_failed note=keeping_previous_configuration");
        return old;
    }
    if (!same_listeners(old, cfg)) {
        log_event(LOG_WARN, "event=reload note=listener_changes_need_a_restart");
        memcpy(cfg->listeners, old->listeners, sizeof(cfg->listeners));
        cfg->listener_count = old->listener_count;
    }
    if (strcmp(old->spool_dir, cfg->spool_dir)) {
        log_event(LOG_WARN, "event=reload note=spool_dir_change_needs_a_restart");
        memcpy(cfg->spool_dir, old->spool_dir, sizeof(cfg->spool_dir));
    }
    if (cfg->bpf != old->bpf) {
        log_event(LOG_WARN, "event=reload note=bpf_enabled_change_needs_a_restart");
        cfg->bpf = old->bpf;
    }
    if (ip_kernel)
        ip_limits_apply(ip_kernel, cfg);  /* the programs stay; their data changes */
    cfg->workers = old->workers;
    cfg->connections_max = old->connections_max;
    auth_cache_flush();  /* passwords may have changed with the files or the backend */
    atomic_store_explicit(&engine.cfg, cfg, memory_order_release);
    gen = atomic_fetch_add_explicit(&engine.cfg_gen, 1, memory_order_acq_rel) + 1;
    engine_wake(&engine);
    /* The old configuration may be freed once every worker has switched. */
    deadline = engine_now_ms() + RELOAD_WAIT_MS;
    for (;;) {
        unsigned behind = 0;
        for (unsigned i = 0; i < engine.count; i++)
            if (!engine.workers[i].done &&
                __atomic_load_n(&engine.workers[i].cfg_gen, __ATOMIC_ACQUIRE) < gen)
                behind++;
        if (!behind) {
            config_free(old);
            free(old);
            break;
        }
        if (engine_now_ms() > deadline) {
            log_event(LOG_WARN, "event=reload note=old_configuration_kept workers_behind=%u",
                      behind);
            break;
        }
        struct timespec ts = { 0, 10 * 1000000 };
        nanosleep(&ts, NULL);
    }
    log_event(LOG_INFO, "event=reloaded");
    return cfg;
}

int main(int argc, char **argv)
{
    struct options opts = { 0 };
    struct rr_config *cfg;
    uint64_t recovered = 0;
    sigset_t sigs;
    long ncpu;
    int err, status = 0, sig_fd, control_fd;
    uint64_t started_ms = engine_now_ms();

    parse_args(argc, argv, &opts);
    if (tls_init() < 0) {
        log_event(LOG_FATAL, "event=tls_init_failed");
        return 1;
    }
    cfg = load_config(&opts, opts.check_only);
    if (!cfg)
        return 1;
    if (opts.check_only) {
        printf("configuration ok\n");
        config_free(cfg);
        free(cfg);
        return 0;
    }

    /* Signals are taken by this thread alone, synchronously. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    err = mkdir_p(cfg->spool_dir);
    engine.spool_dir_fd = err ? -1 : open(cfg->spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (engine.spool_dir_fd < 0) {
        log_event(LOG_FATAL, "event=spool_error dir=%s error=%s", log_q(cfg->spool_dir),
                  log_q(strerror(err ? -err : errno)));
        return 1;
    }
    {
        /* A spool directory made just now must itself be durable before any 250. */
        char parent[CONFIG_PATH_BYTES_MAX + 4];
        int pfd;
        snprintf(parent, sizeof(parent), "%s/..", cfg->spool_dir);
        pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fsync(engine.spool_dir_fd) < 0 || pfd < 0 || fsync(pfd) < 0)
            log_event(LOG_WARN, "event=spool_dir_sync_failed error=%s", log_q(strerror(errno)));
        if (pfd >= 0)
            close(pfd);
    }
    sample_free_space(cfg->spool_dir);

    ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    engine.count = cfg->workers ? cfg->workers : (unsigned)(ncpu > 0 ? ncpu : 1);
    /* Every message in the spool is delivered: read it all now, share it out to the workers. */
    engine.recovered = queue_recover(engine.spool_dir_fd, engine.count, &recovered, &err);
    if (!engine.recovered) {
        log_event(LOG_FATAL, "event=spool_error dir=%s error=%s", log_q(cfg->spool_dir),
                  log_q(strerror(-err)));
        return 1;
    }
    engine.workers = rr_calloc(engine.count, sizeof(struct worker));
    for (unsigned i = 0; i < engine.count; i++)
        for (unsigned k = 0; k < ENGINE_LISTEN_MAX; k++)
            engine.workers[i].listen_fd[k] = -1;
    engine_assign_cpus(&engine);
    if (open_listeners(cfg) < 0)
        return 1;
    {
        bool fatal;
        ip_kernel = ip_limits_start(cfg, &fatal);
        if (fatal)
            return 1;
        iplimit_use_kernel(iplimit_shared(), ip_kernel);  /* NULL: userspace at accept */
    }
    control_fd = control_open(cfg);
    if (control_fd < 0)
        log_event(LOG_WARN, "event=control_unavailable socket=%s error=%s",
                  log_q(cfg->control_socket), log_q(strerror(-control_fd)));
    if (drop_privileges(cfg) < 0)
        return 1;

    /* The password-check helpers run whether or not AUTH is configured now: a reload may
     * turn it on. Started after the privilege drop, before the workers arm its eventfds. */
    {
        struct auth_pool_config apc = auth_pool_default(engine.count);
        err = auth_pool_start(&apc);
        if (err) {
            log_event(LOG_FATAL, "event=start_failed what=auth_pool error=%s",
                      log_q(strerror(-err)));
            return 1;
        }
    }
    err = engine_start(&engine, cfg, engine.count);
    if (err) {
        log_event(LOG_FATAL, "event=start_failed error=%s", log_q(strerror(-err)));
        atomic_store(&engine.stop, true);
        engine_go(&engine);
        engine_join(&engine);
        auth_pool_stop();
        auth_pool_free();
        return 1;
    }
    engine_go(&engine);
    log_ready(cfg);
    /* The workers took their shares during set-up (before the second barrier). */
    queue_recovered_free(engine.recovered);
    engine.recovered = NULL;
    sd_notify_ready();

    /* Signals and the control socket, with a one-second tick for the free-space sample. */
    sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sig_fd < 0) {
        log_event(LOG_FATAL, "event=start_failed error=%s", log_q(strerror(errno)));
        abort();
    }
    for (;;) {
        struct pollfd p[2] = { { sig_fd, POLLIN, 0 }, { control_fd, POLLIN, 0 } };
        struct signalfd_siginfo si;
        int n = poll(p, control_fd >= 0 ? 2 : 1, 1000);

        if (n > 0 && (p[0].revents & POLLIN) &&
            read(sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
            if (si.ssi_signo == SIGHUP) {
                cfg = reload(&opts, cfg);
            } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
                log_event(LOG_INFO, "event=stopping signal=%s",
                          si.ssi_signo == SIGTERM ? "TERM" : "INT");
                atomic_store(&engine.stop, true);
                engine_wake(&engine);
                break;
            }
        }
        if (n > 0 && control_fd >= 0 && (p[1].revents & POLLIN))
            control_serve(control_fd, cfg, started_ms);
        sample_free_space(cfg->spool_dir);
    }
    control_close(control_fd, cfg);
    err = engine_join(&engine);
    if (err)
        status = 1;
    /* Every check came back before its worker left (a waiting session keeps it): nothing
     * is in the pool any more. */
    auth_pool_stop();
    auth_pool_free();
    iplimit_use_kernel(iplimit_shared(), NULL);
    connlimit_close(ip_kernel);  /* the listening sockets are closed: nothing is attached */
    log_event(LOG_INFO, "event=stopped");
    config_free(cfg);
    free(cfg);
    free(engine.workers);
    return status;
}
