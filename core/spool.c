/*
 * spool.c - the spool format (see spool.h): record sealing and reading segments back.
 *
 * Functions: spool_rec_seal() for writers; spool_scan_segment(), spool_scan_dir(),
 * spool_read_body() and spool_env_get() for start-up recovery and ringctl.
 *
 * The reader maps the whole segment, walks it record by record, and re-synchronises at
 * 8-byte steps after anything that does not check out (a hole from a write that never
 * landed, a torn tail). It runs at start-up, before the workers, or in ringctl: blocking
 * file I/O is fine here.
 *
 * SECURITY: all offsets and lengths are checked against the mapped size before use; a
 * message's chunk list grows only up to the count its own commit record claims, and both
 * are bounded by the file size.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/crc32c.h"
#include "core/spool.h"

/* spool_seg_name - file name of a segment. */
void spool_seg_name(uint64_t seg_id, char *buf, size_t cap)
{
    snprintf(buf, cap, "%016" PRIx64 SPOOL_SEG_SUFFIX, seg_id);
}

/* spool_qid_format - queue id as 16 upper-case hex digits. */
void spool_qid_format(uint64_t qid, char *buf)
{
    snprintf(buf, 17, "%016" PRIX64, qid);
}

/* spool_rec_seal - stamp magic and keyed CRC over header and payload. */
void spool_rec_seal(struct spool_rec *rec, uint32_t key, const struct iovec *iov, unsigned n)
{
    uint32_t crc;

    rec->magic = SPOOL_REC_MAGIC;
    rec->crc = 0;
    crc = crc32c(key, rec, sizeof(*rec));
    for (unsigned i = 0; i < n; i++)
        crc = crc32c(crc, iov[i].iov_base, iov[i].iov_len);
    rec->crc = crc;
}

/* rec_valid - whether a record at p (avail bytes mapped from there) checks out under key. */
static bool rec_valid(const unsigned char *p, uint64_t avail, uint32_t key)
{
    struct spool_rec r;
    uint32_t want, crc;

    if (avail < SPOOL_REC_BYTES)
        return false;
    memcpy(&r, p, sizeof(r));
    if (r.magic != SPOOL_REC_MAGIC || r.len > avail - SPOOL_REC_BYTES)
        return false;
    if (r.type != SPOOL_REC_DATA && r.type != SPOOL_REC_COMMIT && r.type != SPOOL_REC_STATUS)
        return false;
    want = r.crc;
    r.crc = 0;
    crc = crc32c(key, &r, sizeof(r));
    crc = crc32c(crc, p + SPOOL_REC_BYTES, r.len);
    return crc == want;
}

/* A message being assembled while one segment is read. */
struct scan_msg {
    uint64_t qid;                 /* 0 = empty hash slot */
    struct spool_chunk *chunks;   /* DATA records seen, in file order */
    uint32_t chunk_count;
    uint32_t chunk_cap;
    uint32_t next_seq;            /* seq the next DATA record must carry */
    bool broken;                  /* a chunk was missing or out of order */
    uint64_t size;
    const char *env;              /* commit payload, inside the mapping */
    uint32_t env_len;
    uint32_t commit_chunks;       /* chunk count the commit claims */
    bool committed;
};

struct scan_table {
    struct scan_msg *slots;       /* open addressing, power-of-two size */
    size_t cap;
    size_t used;
};

/* table_find - the slot of qid, created when absent. */
static struct scan_msg *table_find(struct scan_table *t, uint64_t qid)
{
    size_t i;

    if ((t->used + 1) * 2 > t->cap) {
        struct scan_table n = { rr_calloc(t->cap * 2, sizeof(struct scan_msg)), t->cap * 2, 0 };
        for (size_t k = 0; k < t->cap; k++) {
            if (!t->slots[k].qid)
                continue;
            for (i = t->slots[k].qid * 0x9e3779b97f4a7c15ull & (n.cap - 1); n.slots[i].qid;
                 i = (i + 1) & (n.cap - 1))
                ;
            n.slots[i] = t->slots[k];
            n.used++;
        }
        free(t->slots);
        *t = n;
    }
    for (i = qid * 0x9e3779b97f4a7c15ull & (t->cap - 1); t->slots[i].qid; i = (i + 1) & (t->cap - 1))
        if (t->slots[i].qid == qid)
            return &t->slots[i];
    t->slots[i].qid = qid;
    t->used++;
    return &t->slots[i];
}

/* add_chunk - append a DATA record to its message, checking sequence. */
static void add_chunk(struct scan_msg *m, const struct spool_rec *r, uint64_t payload_off)
{
    if (m->broken)
        return;
    if (r->seq != m->next_seq) {
        m->broken = true;
        return;
    }
    if (m->chunk_count == m->chunk_cap) {
        m->chunk_cap = m->chunk_cap ? m->chunk_cap * 2 : 4;
        m->chunks = realloc(m->chunks, m->chunk_cap * sizeof(*m->chunks));
        if (!m->chunks)
            rr_oom(m->chunk_cap * sizeof(*m->chunks));
    }
    m->chunks[m->chunk_count++] = (struct spool_chunk){ payload_off, r->len };
    m->next_seq++;
    m->size += r->len;
}

/* report_status - hand one STATUS record to scb; a malformed payload is skipped. */
static int report_status(const struct spool_rec *r, const unsigned char *payload,
                         uint64_t seg_id, spool_status_cb scb, void *arg)
{
    struct spool_status s = { 0 };
    struct spool_status_hdr h;

    if (r->len < sizeof(h) || (r->len - sizeof(h)) % 2 ||
        (r->len - sizeof(h)) / 2 > SPOOL_STATUS_RCPTS_MAX || r->seq == 0 ||
        r->seq >= SPOOL_OUT_COUNT)
        return 0;
    memcpy(&h, payload, sizeof(h));
    s.qid = r->qid;
    s.seg_id = seg_id;
    s.outcome = (enum spool_outcome)r->seq;
    s.time_ms = h.time_ms;
    s.rcpts = payload + sizeof(h);
    s.rcpt_count = (uint32_t)((r->len - sizeof(h)) / 2);
    return scb(&s, arg);
}

/* spool_scan_segment - read one segment and report its complete messages. */
int spool_scan_segment(int dir_fd, const char *name, spool_msg_cb cb, void *arg,
                       struct spool_scan_stats *st)
{
    return spool_scan_segment_status(dir_fd, name, cb, NULL, arg, st, NULL);
}

/* spool_scan_segment_status - the segment's outcome records, then its complete messages. */
int spool_scan_segment_status(int dir_fd, const char *name, spool_msg_cb cb,
                              spool_status_cb scb, void *arg, struct spool_scan_stats *st,
                              struct spool_seg_info *info)
{
    struct scan_table t = { rr_calloc(64, sizeof(struct scan_msg)), 64, 0 };
    struct spool_seg_header h;
    const unsigned char *map = NULL;
    struct stat sb;
    uint64_t off, size;
    uint32_t crc;
    int fd, err = 0;

    if (info)
        *info = (struct spool_seg_info){ 0 };
    fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = -errno;
        goto out;
    }
    if (fstat(fd, &sb) < 0) {
        err = -errno;
        goto out;
    }
    size = (uint64_t)sb.st_size;
    st->segments++;
    if (size < SPOOL_SEG_HEADER_BYTES)
        goto out;  /* created, header never landed: nothing was ever acknowledged in it */
    map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        map = NULL;
        err = -errno;
        goto out;
    }
    memcpy(&h, map, sizeof(h));
    crc = h.crc;
    h.crc = 0;
    if (memcmp(h.magic, SPOOL_SEG_MAGIC, 8) || h.version != SPOOL_SEG_VERSION ||
        crc32c(0, &h, sizeof(h)) != crc) {
        st->bad_bytes += size;
        goto out;
    }
    if (info) {
        info->seg_id = h.seg_id;
        info->key = h.key;
        info->end_off = SPOOL_SEG_HEADER_BYTES;
    }

    for (off = SPOOL_SEG_HEADER_BYTES; off + SPOOL_REC_BYTES <= size;) {
        struct spool_rec r;
        struct scan_msg *m;

        if (!rec_valid(map + off, size - off, h.key)) {
            /* Preallocated, never written space is zeros: skip it a page at a time (and
             * look again right where the zeros end: a record may start there). */
            if (off + 4096 <= size && !map[off] && !memcmp(map + off, map + off + 1, 4095)) {
                off += 4096;
                continue;
            }
            if (memcmp(map + off, "\0\0\0\0\0\0\0\0", SPOOL_REC_ALIGN))
                st->bad_bytes += SPOOL_REC_ALIGN;  /* zeros are unwritten space, not damage */
            off += SPOOL_REC_ALIGN;
            continue;
        }
        memcpy(&r, map + off, sizeof(r));
        if (info)
            info->end_off = off + spool_rec_span(r.len);
        if (r.type == SPOOL_REC_STATUS) {
            if (scb && !err && report_status(&r, map + off + SPOOL_REC_BYTES, h.seg_id, scb, arg))
                err = 1;
            off += spool_rec_span(r.len);
            continue;
        }
        m = table_find(&t, r.qid);
        if (r.type == SPOOL_REC_DATA) {
            add_chunk(m, &r, off + SPOOL_REC_BYTES);
        } else if (!m->committed) {
            m->committed = true;
            m->env = (const char *)map + off + SPOOL_REC_BYTES;
            m->env_len = r.len;
            m->commit_chunks = r.seq;
        }
        off += spool_rec_span(r.len);
    }

    for (size_t i = 0; i < t.cap; i++) {
        struct scan_msg *m = &t.slots[i];
        struct spool_msg out;
        size_t vlen;
        const char *v;

        if (!m->qid)
            continue;
        v = m->committed ? spool_env_get(m->env, m->env_len, "size", NULL, &vlen) : NULL;
        if (!m->committed || m->broken || m->chunk_count != m->commit_chunks || !v ||
            strtoull(v, NULL, 10) != m->size) {
            st->incomplete++;
            continue;
        }
        st->messages++;
        out = (struct spool_msg){ m->qid, h.seg_id, m->size, m->chunks, m->chunk_count,
                                  m->env, m->env_len };
        if (!err && cb && cb(&out, fd, arg))
            err = 1;
    }
out:
    for (size_t i = 0; i < t.cap; i++)
        free(t.slots[i].chunks);
    free(t.slots);
    if (map)
        munmap((void *)map, size);
    if (fd >= 0)
        close(fd);
    return err;
}

/* spool_is_segment_name - 16 hex digits then ".seg". */
bool spool_is_segment_name(const char *n)
{
    size_t i;

    for (i = 0; i < 16; i++)
        if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'f')))
            return false;
    return strcmp(n + 16, SPOOL_SEG_SUFFIX) == 0;
}

/* name_cmp - qsort order of file names. */
static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* spool_scan_dir - every segment of dir, oldest first. */
int spool_scan_dir(const char *dir, spool_msg_cb cb, void *arg, struct spool_scan_stats *st)
{
    return spool_scan_dir_status(dir, cb, NULL, arg, st);
}

/* spool_scan_dir_status - every segment of dir, oldest first, outcome records included. */
int spool_scan_dir_status(const char *dir, spool_msg_cb cb, spool_status_cb scb, void *arg,
                          struct spool_scan_stats *st)
{
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    DIR *d;
    int err = 0;

    d = opendir(dir);
    if (!d)
        return -errno;
    while ((de = readdir(d))) {
        if (!spool_is_segment_name(de->d_name))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc(names, cap * sizeof(*names));
            if (!names)
                rr_oom(cap * sizeof(*names));
        }
        names[n++] = rr_strdup(de->d_name);
    }
    if (n)
        qsort(names, n, sizeof(*names), name_cmp);
    for (size_t i = 0; i < n; i++) {
        if (!err) {
            err = spool_scan_segment_status(dirfd(d), names[i], cb, scb, arg, st, NULL);
            if (err == -ENOENT)
                err = 0;  /* removed since the listing: its messages were all finished */
        }
        free(names[i]);
    }
    free(names);
    closedir(d);
    return err;
}

/* spool_read_body - copy the chunks of msg to out_fd. */
int spool_read_body(int seg_fd, const struct spool_msg *msg, int out_fd)
{
    char buf[65536];

    for (uint32_t i = 0; i < msg->chunk_count; i++) {
        uint64_t off = msg->chunks[i].off;
        uint64_t left = msg->chunks[i].len;
        while (left) {
            size_t want = left < sizeof(buf) ? left : sizeof(buf);
            ssize_t r = pread(seg_fd, buf, want, (off_t)off);
            if (r <= 0)
                return r < 0 ? -errno : -EIO;
            for (ssize_t w = 0, k; w < r; w += k) {
                k = write(out_fd, buf + w, (size_t)(r - w));
                if (k < 0)
                    return -errno;
            }
            off += (uint64_t)r;
            left -= (uint64_t)r;
        }
    }
    return 0;
}

/* spool_env_get - look up "key value" lines. */
const char *spool_env_get(const char *env, size_t env_len, const char *key, const char *after,
                          size_t *len)
{
    const char *p = after ? after : env, *end = env + env_len;
    size_t klen = strlen(key);

    if (after) {  /* skip to the line after the previous result */
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end;
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        if ((size_t)(eol - p) > klen && !memcmp(p, key, klen) && p[klen] == ' ') {
            *len = (size_t)(eol - p - klen - 1);
            return p + klen + 1;
        }
        p = nl ? nl + 1 : end;
    }
    return NULL;
}
