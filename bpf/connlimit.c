/*
 * connlimit.c - loader of the per-IP connection-limit programs (connlimit.bpf.c), through
 * the skeleton bpftool generates from them.
 *
 * Functions: connlimit_load(), connlimit_add_listener(), connlimit_set_limits(),
 * connlimit_set_exempt(), connlimit_net_make(), connlimit_read(), connlimit_top(),
 * connlimit_prog_ids(), connlimit_close().
 *
 * Nothing is pinned. The admission program hangs on our reuseport groups and goes with the
 * last of their sockets; the connection-state program is attached to our cgroup through a
 * BPF link whose only reference is our descriptor. So when the process exits, however it
 * exits (kill -9 included), the kernel detaches and frees everything, and the next start
 * finds nothing in its way.
 *
 * The limits, the exempt networks and the counters are the programs' global data, mapped
 * into our memory by libbpf: connlimit_set_limits and connlimit_read are plain stores and
 * loads, safe on any thread and needing no privilege after set-up. connlimit_top walks the
 * two address tables with bpf(2) on descriptors we hold, which an unprivileged process may
 * do since Linux 5.19 (before, kernel.unprivileged_bpf_disabled refused every bpf(2) call;
 * the listing then reports the error).
 *
 * SECURITY: loads programs into the kernel, so it runs before the privilege drop; the only
 * input is our own configuration.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/types.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf/connlimit.h"
#include "connlimit.skel.h"
#include "core/log.h"

#define CGROUP_PATH_BYTES_MAX 4096

struct connlimit {
    struct connlimit_bpf *skel;        /* programs, maps, mapped global data */
    struct bpf_link *state_link;       /* connlimit_state on our cgroup */
};

/* The last libbpf warning of a load, kept for the one log line that says why BPF is off.
 * libbpf prints from the loading thread only (start-up), so one buffer does. */
static char last_warning[256];

/* libbpf_print - libbpf's messages: warnings kept, the rest dropped (they go to debug). */
static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    char line[256];
    size_t n;

    if (level != LIBBPF_WARN)
        return 0;
    vsnprintf(line, sizeof(line), fmt, ap);
    n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == ' '))
        line[--n] = 0;
    if (n)
        snprintf(last_warning, sizeof(last_warning), "%s", line);
    log_event(LOG_DEBUG, "event=libbpf message=%s", log_q(line));
    return 0;
}

/* own_cgroup - open our cgroup v2 directory (the "0::" line of /proc/self/cgroup, under the
 * cgroup2 mount); -errno when there is none. */
static int own_cgroup(char *path, size_t cap)
{
    char line[CGROUP_PATH_BYTES_MAX], rel[CGROUP_PATH_BYTES_MAX] = "", mnt[CGROUP_PATH_BYTES_MAX] = "";
    FILE *f = fopen("/proc/self/cgroup", "re");
    int fd;

    if (!f)
        return -errno;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, "0::", 3)) {
            snprintf(rel, sizeof(rel), "%s", line + 3);
            rel[strcspn(rel, "\n")] = 0;
        }
    fclose(f);
    if (!rel[0])
        return -ENOENT;
    f = fopen("/proc/self/mounts", "re");
    if (!f)
        return -errno;
    while (fgets(line, sizeof(line), f)) {
        char dev[256], dir[CGROUP_PATH_BYTES_MAX], type[64];
        if (sscanf(line, "%255s %4095s %63s", dev, dir, type) == 3 && !strcmp(type, "cgroup2")) {
            snprintf(mnt, sizeof(mnt), "%s", dir);
            break;
        }
    }
    fclose(f);
    if (!mnt[0])
        return -ENOENT;
    if ((size_t)snprintf(path, cap, "%s%s", mnt, strcmp(rel, "/") ? rel : "") >= cap)
        return -ENAMETOOLONG;
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* fail - the reason for a failed load into why, and -err back. */
static int fail(char *why, size_t cap, int err, const char *what)
{
    if (last_warning[0])
        snprintf(why, cap, "%s: %s (%s)", what, strerror(err), last_warning);
    else
        snprintf(why, cap, "%s: %s", what, strerror(err));
    return -err;
}

/* connlimit_load - open, size and load the programs, attach the state program. */
int connlimit_load(struct connlimit **out, const struct connlimit_limits *lim,
                   const struct connlimit_net *exempt, unsigned exempt_count,
                   const uint32_t *cpu_worker, unsigned ncpu, char *why, size_t why_cap)
{
    char cgpath[CGROUP_PATH_BYTES_MAX];
    struct connlimit *cl;
    int err, cg;

    *out = NULL;
    last_warning[0] = 0;
    libbpf_set_print(libbpf_print);
    cl = calloc(1, sizeof(*cl));
    if (!cl)
        return fail(why, why_cap, ENOMEM, "allocation");
    cl->skel = connlimit_bpf__open();
    if (!cl->skel) {
        err = errno ? errno : EINVAL;
        free(cl);
        return fail(why, why_cap, err, "opening the programs");
    }
    for (unsigned c = 0; c < CONNLIMIT_CPUS_MAX; c++)
        cl->skel->data->cpu_worker[c] = c < ncpu ? cpu_worker[c] : CONNLIMIT_NO_WORKER;
    /* In force from the first SYN: the global data is loaded with these values. */
    cl->skel->bss->limits = *lim;
    connlimit_set_exempt(cl, exempt, exempt_count);
    err = connlimit_bpf__load(cl->skel);
    if (err) {
        err = -err;
        connlimit_bpf__destroy(cl->skel);
        free(cl);
        return fail(why, why_cap, err, "loading the programs");
    }
    cg = own_cgroup(cgpath, sizeof(cgpath));
    if (cg < 0) {
        connlimit_bpf__destroy(cl->skel);
        free(cl);
        return fail(why, why_cap, -cg, "finding our cgroup v2");
    }
    cl->state_link = bpf_program__attach_cgroup(cl->skel->progs.connlimit_state, cg);
    err = cl->state_link ? 0 : errno;
    close(cg);  /* the link holds the cgroup */
    if (err) {
        connlimit_bpf__destroy(cl->skel);
        free(cl);
        return fail(why, why_cap, err, "attaching to the cgroup");
    }
    log_event(LOG_DEBUG, "event=bpf_attached cgroup=%s", log_q(cgpath));
    *out = cl;
    return 0;
}

/* connlimit_add_listener - mark the socket, enter it for steering, attach admission. */
int connlimit_add_listener(struct connlimit *cl, int fd, unsigned group, unsigned worker)
{
    struct connlimit_mark mark = { .group = group, .worker = worker };
    int prog = bpf_program__fd(cl->skel->progs.connlimit_admit);
    __u32 key = group * CONNLIMIT_WORKERS_MAX + (worker % CONNLIMIT_WORKERS_MAX);
    __u64 value = (__u64)fd;

    struct connlimit_group_key gk = { 0 };
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (group >= CONNLIMIT_GROUPS_MAX)
        return -E2BIG;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    gk.family = ss.ss_family;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
        gk.port = ntohs(s4->sin_port);
        memcpy(gk.addr, &s4->sin_addr, 4);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
        gk.port = ntohs(s6->sin6_port);
        memcpy(gk.addr, &s6->sin6_addr, 16);
    } else {
        return -EAFNOSUPPORT;
    }
    if (bpf_map_update_elem(bpf_map__fd(cl->skel->maps.groups), &gk, &group, BPF_ANY) < 0 ||
        bpf_map_update_elem(bpf_map__fd(cl->skel->maps.marks), &fd, &mark, BPF_ANY) < 0)
        return -errno;
    /* A worker beyond the steering table is left to the kernel's choice (SO_INCOMING_CPU). */
    if (worker < CONNLIMIT_WORKERS_MAX &&
        bpf_map_update_elem(bpf_map__fd(cl->skel->maps.steer), &key, &value, BPF_ANY) < 0)
        return -errno;
    /* Attaches to the whole group; every socket of it says the same, which is harmless. */
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog, sizeof(prog)) < 0)
        return -errno;
    return 0;
}

/* connlimit_remove_listener - the group's program off (a no-op where there is none). */
void connlimit_remove_listener(int fd)
{
    int zero = 0;

    if (setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &zero, sizeof(zero)) < 0 &&
        errno != ENOENT)
        log_event(LOG_WARN, "event=bpf_detach_failed error=%s", log_q(strerror(errno)));
}

/* connlimit_set_limits - single aligned 32-bit stores, read by the next SYN. */
void connlimit_set_limits(struct connlimit *cl, const struct connlimit_limits *lim)
{
    __atomic_store_n(&cl->skel->bss->limits.connections_max, lim->connections_max,
                     __ATOMIC_RELEASE);
    __atomic_store_n(&cl->skel->bss->limits.connects_per_s_max, lim->connects_per_s_max,
                     __ATOMIC_RELEASE);
}

/* connlimit_net_make - mapped address and mask, split into the halves the program compares. */
void connlimit_net_make(struct connlimit_net *n, int family, const uint8_t *addr,
                        unsigned prefix)
{
    uint8_t a[16] = { 0 }, m[16] = { 0 };

    if (family == AF_INET) {
        a[10] = a[11] = 0xff;
        memcpy(a + 12, addr, 4);
        prefix = (prefix > 32 ? 32 : prefix) + 96;
    } else {
        memcpy(a, addr, 16);
        prefix = prefix > 128 ? 128 : prefix;
    }
    for (unsigned i = 0; i < 16; i++) {
        unsigned bits = prefix > i * 8 ? prefix - i * 8 : 0;
        m[i] = bits >= 8 ? 0xff : (uint8_t)(0xff << (8 - bits));
        a[i] &= m[i];
    }
    memcpy(n->addr, a, 16);
    memcpy(n->mask, m, 16);
    n->v4 = family == AF_INET;
}

/* connlimit_set_exempt - fill the list not in force, then switch to it. A SYN that read
 * the old index while the switch happens uses the old list, which stays intact until the
 * next call; calls come from the main thread one at a time, seconds apart. */
void connlimit_set_exempt(struct connlimit *cl, const struct connlimit_net *nets,
                          unsigned count)
{
    struct connlimit_bpf__bss *bss = cl->skel->bss;
    unsigned next = (__atomic_load_n(&bss->exempt_active, __ATOMIC_ACQUIRE) + 1) & 1;

    if (!nets)
        count = 0;

    if (count > CONNLIMIT_EXEMPT_MAX)
        count = CONNLIMIT_EXEMPT_MAX;
    if (count)
        memcpy(bss->exempt[next], nets, count * sizeof(*nets));
    __atomic_store_n(&bss->exempt_count[next], count, __ATOMIC_RELEASE);
    __atomic_store_n(&bss->exempt_active, next, __ATOMIC_RELEASE);
}

/* connlimit_read - sum the CPUs' slots; the table of open addresses is added minus removed. */
void connlimit_read(const struct connlimit *cl, struct connlimit_stats *out)
{
    const struct connlimit_cpu *cpus = cl->skel->bss->counters;

    memset(out, 0, sizeof(*out));
    for (unsigned c = 0; c < CONNLIMIT_CPUS_MAX; c++)
        for (unsigned k = 0; k < CONNLIMIT_COUNTER_COUNT; k++)
            out->n[k] += __atomic_load_n(&cpus[c].n[k], __ATOMIC_RELAXED);
    out->tracked_ips = out->n[CONNLIMIT_IPS_ADDED] > out->n[CONNLIMIT_IPS_REMOVED]
                           ? out->n[CONNLIMIT_IPS_ADDED] - out->n[CONNLIMIT_IPS_REMOVED] : 0;
}

/* talker_order - qsort: most open connections first, then most refused, then admitted. */
static int talker_order(const void *pa, const void *pb)
{
    const struct connlimit_talker *a = pa, *b = pb;

    if (a->current != b->current)
        return a->current < b->current ? 1 : -1;
    if (a->refused != b->refused)
        return a->refused < b->refused ? 1 : -1;
    if (a->admitted != b->admitted)
        return a->admitted < b->admitted ? 1 : -1;
    return memcmp(a->ip.addr, b->ip.addr, 16);
}

/* talker_by_ip - qsort: address order. */
static int talker_by_ip(const void *pa, const void *pb)
{
    const struct connlimit_talker *a = pa, *b = pb;

    return memcmp(a->ip.addr, b->ip.addr, 16);
}

/* connlimit_top - every recent address with its totals, open counts joined from open_ips;
 * addresses only in open_ips (their recent entry evicted) are listed too. */
int connlimit_top(struct connlimit *cl, struct connlimit_talker *out, unsigned max)
{
    int recent_fd = bpf_map__fd(cl->skel->maps.recent);
    int open_fd = bpf_map__fd(cl->skel->maps.open_ips);
    unsigned cap = CONNLIMIT_RECENT_MAX + CONNLIMIT_IPS_MAX, n = 0;
    struct connlimit_talker *all = calloc(cap, sizeof(*all));
    struct connlimit_ip key, next;
    void *prev = NULL;
    int err = 0, rc;
    struct timespec ts;
    uint64_t now_ns;

    if (!all)
        return -ENOMEM;
    clock_gettime(CLOCK_MONOTONIC, &ts);  /* bpf_ktime_get_ns's clock */
    now_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    /* Bounded by the table size even if entries are evicted and the walk restarts. */
    while (n < CONNLIMIT_RECENT_MAX && (rc = bpf_map_get_next_key(recent_fd, prev, &next)) == 0) {
        struct connlimit_recent r;
        struct connlimit_open o;
        key = next;
        prev = &key;
        if (bpf_map_lookup_elem(recent_fd, &key, &r) < 0)
            continue;  /* evicted meanwhile */
        all[n].ip = key;
        all[n].admitted = r.admitted;
        all[n].refused = r.refused;
        all[n].per_s = connlimit_per_second(r.second_start_ns, r.this_second,
                                            r.last_second, now_ns);
        all[n].current = bpf_map_lookup_elem(open_fd, &key, &o) == 0 ? o.current : 0;
        n++;
    }
    if (rc < 0 && (errno == EPERM || errno == EACCES))
        err = -errno;
    prev = NULL;
    while (!err && n < cap && bpf_map_get_next_key(open_fd, prev, &next) == 0) {
        struct connlimit_recent r;
        struct connlimit_open o;
        key = next;
        prev = &key;
        if (bpf_map_lookup_elem(recent_fd, &key, &r) == 0 ||
            bpf_map_lookup_elem(open_fd, &key, &o) < 0)
            continue;  /* listed already, or closed meanwhile */
        all[n].ip = key;
        all[n].current = o.current;
        n++;
    }
    if (err) {
        free(all);
        return err;
    }
    /* A walk restarts when its previous key was evicted meanwhile: drop the repeats. */
    qsort(all, n, sizeof(*all), talker_by_ip);
    if (n) {
        unsigned k = 1;
        for (unsigned i = 1; i < n; i++)
            if (memcmp(all[i].ip.addr, all[k - 1].ip.addr, 16))
                all[k++] = all[i];
        n = k;
    }
    qsort(all, n, sizeof(*all), talker_order);
    if (n > max)
        n = max;
    memcpy(out, all, n * sizeof(*all));
    free(all);
    return (int)n;
}

/* connlimit_prog_ids - the kernel's ids of our two programs. */
unsigned connlimit_prog_ids(const struct connlimit *cl, uint32_t *ids, unsigned max)
{
    struct bpf_program *progs[2] = { cl->skel->progs.connlimit_admit,
                                     cl->skel->progs.connlimit_state };
    unsigned n = 0;

    for (unsigned i = 0; i < 2 && n < max; i++) {
        struct bpf_prog_info info = { 0 };
        __u32 len = sizeof(info);
        if (bpf_obj_get_info_by_fd(bpf_program__fd(progs[i]), &info, &len) == 0)
            ids[n++] = info.id;
    }
    return n;
}

/* connlimit_close - the link first (no new state callbacks), then programs and maps. */
void connlimit_close(struct connlimit *cl)
{
    if (!cl)
        return;
    bpf_link__destroy(cl->state_link);
    connlimit_bpf__destroy(cl->skel);
    free(cl);
}
