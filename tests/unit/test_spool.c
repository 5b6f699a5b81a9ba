/*
 * test_spool.c - the spool format's reader against hand-built segments: complete messages
 * are found, and nothing partial, torn, out of order or forged by content is ever taken.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/spool.h"
#include "tests/unit/check.h"

#define KEY 0x5eed1234u

struct seg {
    unsigned char buf[1 << 16];   /* segment image */
    size_t len;                   /* bytes used */
};

/* seg_init - header with KEY. */
static void seg_init(struct seg *s, uint64_t id)
{
    struct spool_seg_header h;

    memset(s, 0, sizeof(*s));
    memset(&h, 0, sizeof(h));
    memcpy(h.magic, SPOOL_SEG_MAGIC, 8);
    h.version = SPOOL_SEG_VERSION;
    h.seg_id = id;
    h.key = KEY;
    h.crc = crc32c(0, &h, sizeof(h));
    memcpy(s->buf, &h, sizeof(h));
    s->len = sizeof(h);
}

/* put - append a record; returns its offset. */
static size_t put(struct seg *s, uint8_t type, uint64_t qid, uint32_t seq, const void *p,
                  size_t n, uint32_t key)
{
    struct spool_rec r = { .type = type, .len = (uint32_t)n, .qid = qid, .seq = seq };
    struct iovec iov = { (void *)p, n };
    size_t at = s->len;

    spool_rec_seal(&r, key, &iov, 1);
    memcpy(s->buf + at, &r, sizeof(r));
    memcpy(s->buf + at + sizeof(r), p, n);
    s->len += spool_rec_span(n);
    return at;
}

/* commit - append a COMMIT record for qid with size and chunk count. */
static void commit(struct seg *s, uint64_t qid, uint32_t chunks, size_t size)
{
    char env[128];
    int n = snprintf(env, sizeof(env), "qid x\nsize %zu\nfrom a@b.c\nrcpt d@e.f\n", size);
    put(s, SPOOL_REC_COMMIT, qid, chunks, env, (size_t)n, KEY);
}

struct found {
    unsigned count;
    uint64_t qids[16];
    char bodies[16][256];
};

static int collect(const struct spool_msg *m, int fd, void *arg)
{
    struct found *f = arg;
    size_t off = 0;

    if (f->count < 16) {
        for (uint32_t i = 0; i < m->chunk_count; i++) {
            ssize_t r = pread(fd, f->bodies[f->count] + off, m->chunks[i].len, (off_t)m->chunks[i].off);
            if (r > 0)
                off += (size_t)r;
        }
        f->bodies[f->count][off] = 0;
        f->qids[f->count] = m->qid;
    }
    f->count++;
    return 0;
}

/* scan - write the image to a temp dir and read it back. */
static struct found scan(const struct seg *s, struct spool_scan_stats *st)
{
    char dir[] = "/tmp/test_spool.XXXXXX", path[128];
    struct found f;
    int fd, dfd;

    memset(&f, 0, sizeof(f));
    memset(st, 0, sizeof(*st));
    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof(path), "%s/0000000000000001.seg", dir);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    if (fd < 0 || write(fd, s->buf, s->len) != (ssize_t)s->len)
        abort();
    close(fd);
    dfd = open(dir, O_RDONLY | O_DIRECTORY);
    spool_scan_segment(dfd, "0000000000000001.seg", collect, &f, st);
    close(dfd);
    unlink(path);
    rmdir(dir);
    return f;
}

int main(void)
{
    struct seg *s = calloc(1, sizeof(*s));
    struct spool_scan_stats st;
    struct found f;
    size_t at;

    /* two interleaved messages, both complete */
    seg_init(s, 1);
    put(s, SPOOL_REC_DATA, 10, 0, "Hello ", 6, KEY);
    put(s, SPOOL_REC_DATA, 11, 0, "other\r\n", 7, KEY);
    put(s, SPOOL_REC_DATA, 10, 1, "world\r\n", 7, KEY);
    commit(s, 11, 1, 7);
    commit(s, 10, 2, 13);
    f = scan(s, &st);
    CHECK(f.count == 2 && st.messages == 2, "count %u", f.count);
    CHECK(f.count == 2 && (!strcmp(f.bodies[0], "Hello world\r\n") || !strcmp(f.bodies[1], "Hello world\r\n")),
          "bodies %s|%s", f.bodies[0], f.bodies[1]);

    /* no commit: not a message */
    seg_init(s, 1);
    put(s, SPOOL_REC_DATA, 10, 0, "x\r\n", 3, KEY);
    f = scan(s, &st);
    CHECK(f.count == 0 && st.incomplete == 1, "uncommitted taken: %u", f.count);

    /* a hole (write that never landed) before a complete message: re-synchronise */
    seg_init(s, 1);
    put(s, SPOOL_REC_DATA, 20, 0, "lost\r\n", 6, KEY);
    memset(s->buf + SPOOL_SEG_HEADER_BYTES, 0, s->len - SPOOL_SEG_HEADER_BYTES);
    put(s, SPOOL_REC_DATA, 21, 0, "kept\r\n", 6, KEY);
    commit(s, 21, 1, 6);
    commit(s, 20, 1, 6);
    f = scan(s, &st);
    CHECK(f.count == 1 && f.qids[0] == 21 && !strcmp(f.bodies[0], "kept\r\n"),
          "hole: count %u", f.count);

    /* holes of whole pages (a lost write of 4096 or 8192 bytes) before a complete message */
    for (size_t hole = 4096; hole <= 8192; hole += 4096) {
        seg_init(s, 1);
        memset(s->buf + s->len, 0, hole);
        s->len += hole;
        put(s, SPOOL_REC_DATA, 22, 0, "after\r\n", 7, KEY);
        commit(s, 22, 1, 7);
        f = scan(s, &st);
        CHECK(f.count == 1 && f.qids[0] == 22, "page hole %zu: count %u", hole, f.count);
    }

    /* a torn record (payload changed after sealing) is rejected, message incomplete */
    seg_init(s, 1);
    at = put(s, SPOOL_REC_DATA, 30, 0, "abcdef\r\n", 8, KEY);
    commit(s, 30, 1, 8);
    s->buf[at + SPOOL_REC_BYTES + 2] ^= 1;
    f = scan(s, &st);
    CHECK(f.count == 0, "torn record taken");

    /* missing middle chunk: chunk count does not match */
    seg_init(s, 1);
    put(s, SPOOL_REC_DATA, 40, 0, "a", 1, KEY);
    put(s, SPOOL_REC_DATA, 40, 2, "c", 1, KEY);
    commit(s, 40, 3, 3);
    f = scan(s, &st);
    CHECK(f.count == 0, "message with a missing chunk taken");

    /* size in the envelope disagrees with the chunks */
    seg_init(s, 1);
    put(s, SPOOL_REC_DATA, 50, 0, "abc", 3, KEY);
    commit(s, 50, 1, 4);
    f = scan(s, &st);
    CHECK(f.count == 0, "size mismatch taken");

    /* content that carries a forged record (other key) is never taken for a record, even
     * when the scanner re-synchronises right into it */
    seg_init(s, 1);
    {
        struct seg *fake = calloc(1, sizeof(*fake));
        fake->len = 0;
        put(fake, SPOOL_REC_DATA, 66, 0, "evil\r\n", 6, 0xdeadbeef);
        char env[] = "qid y\nsize 6\nfrom evil@x\nrcpt victim@y\n";
        put(fake, SPOOL_REC_COMMIT, 66, 1, env, sizeof(env) - 1, 0xdeadbeef);
        /* a lost write in front makes the reader walk through the content byte-aligned */
        memset(s->buf + s->len, 0, 64);
        s->len += 64;
        memcpy(s->buf + s->len, fake->buf, fake->len);
        s->len += fake->len;
        free(fake);
    }
    f = scan(s, &st);
    CHECK(f.count == 0, "forged record taken");

    /* truncated file (tail never written) */
    seg_init(s, 1);
    put(s, SPOOL_REC_DATA, 70, 0, "complete\r\n", 10, KEY);
    commit(s, 70, 1, 10);
    put(s, SPOOL_REC_DATA, 71, 0, "partial", 7, KEY);
    s->len -= 4;
    f = scan(s, &st);
    CHECK(f.count == 1 && f.qids[0] == 70, "truncated tail: %u", f.count);

    /* bad segment header: nothing */
    seg_init(s, 1);
    put(s, SPOOL_REC_DATA, 80, 0, "x", 1, KEY);
    commit(s, 80, 1, 1);
    s->buf[3] ^= 1;
    f = scan(s, &st);
    CHECK(f.count == 0, "bad header accepted");

    /* preallocated zeros after the data are skipped quickly and harmlessly */
    seg_init(s, 1);
    put(s, SPOOL_REC_DATA, 90, 0, "z\r\n", 3, KEY);
    commit(s, 90, 1, 3);
    s->len = sizeof(s->buf);
    f = scan(s, &st);
    CHECK(f.count == 1 && st.bad_bytes < 64, "zeros: count %u bad %llu", f.count,
          (unsigned long long)st.bad_bytes);

    /* envelope lookups */
    {
        const char env[] = "qid x\nrcpt a@b\nrcpt c@d\nfrom e@f\n";
        size_t len;
        const char *v = spool_env_get(env, sizeof(env) - 1, "rcpt", NULL, &len);
        CHECK(v && len == 3 && !memcmp(v, "a@b", 3), "first rcpt");
        v = spool_env_get(env, sizeof(env) - 1, "rcpt", v, &len);
        CHECK(v && len == 3 && !memcmp(v, "c@d", 3), "second rcpt");
        v = spool_env_get(env, sizeof(env) - 1, "rcpt", v, &len);
        CHECK(!v, "third rcpt");
        CHECK(!spool_env_get(env, sizeof(env) - 1, "rc", NULL, &len), "prefix key");
    }
    free(s);
    return check_done("test_spool");
}
