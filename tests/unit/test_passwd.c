/*
 * test_passwd.c - the passwd-file parser (core/passwd.c), table-driven: each row is a file,
 * the exact "FILE:LINE: message" output it must give, the problems counted and the users
 * kept; then passwd_verify() for every scheme with hashes made here by crypt_gensalt_rn() and
 * crypt_r(): the right password, wrong ones, and over-long ones.
 */
#include <crypt.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/passwd.h"
#include "tests/unit/check.h"

static char dir[] = "/tmp/rr-test-passwd-XXXXXX";
static char path[sizeof(dir) + 16];

/* write_file - the test file with content (len bytes). */
static void write_file(const char *content, size_t len)
{
    FILE *f = fopen(path, "w");

    if (!f || fwrite(content, 1, len, f) != len || fclose(f)) {
        perror(path);
        exit(2);
    }
}

/* load - passwd_load() of content; its messages go to *msgs (the caller frees). */
static struct passwd_db *load(const char *content, size_t len, int *problems, char **msgs)
{
    size_t msgs_len;
    FILE *errs = open_memstream(msgs, &msgs_len);
    struct passwd_db *db;

    write_file(content, len);
    *problems = 0;
    db = passwd_load(path, errs, problems);
    fclose(errs);
    return db;
}

/* expand - fmt with every "%s" replaced by the path (a format of our own: -Wformat=2). */
static void expand(char *out, size_t size, const char *fmt)
{
    size_t n = 0;

    for (const char *p = fmt; *p && n + 1 < size; p++) {
        if (p[0] == '%' && p[1] == 's') {
            n += (size_t)snprintf(out + n, size - n, "%s", path);
            p++;
        } else {
            out[n++] = *p;
        }
    }
    out[n < size ? n : size - 1] = '\0';
}

/* ---- parser rows ---- */

static const struct parse_row {
    const char *in;               /* the file */
    int problems;                 /* counted */
    const char *msgs;             /* exact output, "%s" is the path */
    size_t users;                 /* kept */
    const char *user;             /* one that must be found (or NULL) */
    const char *hash;             /* its hash */
} parse_rows[] = {
    { "alice:{PLAIN}secret\n", 0, "", 1, "alice", "secret" },
    { "alice:{PLAIN}secret", 0, "", 1, "alice", "secret" },   /* no final newline */
    { "# users\n\n#bob:{PLAIN}x\nalice:{PLAIN}s\n", 0, "", 1, "alice", "s" },
    { "alice:{plain}s:1000:1000::/home/alice:/bin/sh:userdb_quota_rule=*:storage=1G\n",
      0, "", 1, "alice", "s" },
    { "alice:{PLAIN}s\r\nbob:{PLAIN}t\r\n", 0, "", 2, "bob", "t" },
    { "alice:{PLAIN}a:b\n", 0, "", 1, "alice", "a" },          /* ':' ends the password */
    { "al ice@example.org:{PLAIN}s\n", 0, "", 1, "al ice@example.org", "s" },
    { "alice:{SHA512-CRYPT}$6$abcdefgh$x\n", 0, "", 1, "alice", "$6$abcdefgh$x" },
    { "alice:{sha256-crypt}$5$abcdefgh$x\n", 0, "", 1, "alice", "$5$abcdefgh$x" },
    { "alice:$6$abcdefgh$x\n", 0, "", 1, "alice", "$6$abcdefgh$x" },  /* CRYPT by default */
    { "alice:{CRYPT}$y$j9T$abc$def\n", 0, "", 1, "alice", "$y$j9T$abc$def" },
    { "alice:{BLF-CRYPT}$2y$04$abcdefghijklmnopqrstuu\n", 0, "", 1, "alice", NULL },

    { "alice\n", 1, "%s:1: no ':' after the user name\n", 0, NULL, NULL },
    { ":{PLAIN}x\n", 1, "%s:1: empty user name\n", 0, NULL, NULL },
    { "al\tice:{PLAIN}x\n", 1, "%s:1: control character in the user name\n", 0, NULL, NULL },
    { "alice:\n", 1, "%s:1: user alice: empty password field (users without a password are "
      "not supported)\n", 0, NULL, NULL },
    { "alice::1000\n", 1, "%s:1: user alice: empty password field (users without a password "
      "are not supported)\n", 0, NULL, NULL },
    { "alice:{PLAIN\n", 1, "%s:1: user alice: '{' without '}' in the password\n", 0, NULL, NULL },
    { "alice:{MD5-CRYPT}$1$abc$def\n", 1, "%s:1: user alice: unknown scheme {MD5-CRYPT}\n",
      0, NULL, NULL },
    { "alice:{}x\n", 1, "%s:1: user alice: unknown scheme {}\n", 0, NULL, NULL },
    { "alice:{PLAIN}\n", 1, "%s:1: user alice: empty hash after {PLAIN}\n", 0, NULL, NULL },
    { "alice:{SHA512-CRYPT}$5$abc$def\n", 1, "%s:1: user alice: {SHA512-CRYPT} hash does not "
      "start with the prefix of its scheme\n", 0, NULL, NULL },
    { "alice:{BLF-CRYPT}$6$abc$def\n", 1, "%s:1: user alice: {BLF-CRYPT} hash does not start "
      "with the prefix of its scheme\n", 0, NULL, NULL },
    { "alice:!locked\n", 1, "%s:1: user alice: {CRYPT} hash is not one crypt(3) can check\n",
      0, NULL, NULL },
    { "alice:{CRYPT}*\n", 1, "%s:1: user alice: {CRYPT} hash is not one crypt(3) can check\n",
      0, NULL, NULL },
    /* Legacy methods still load; under {CRYPT} with a warning. */
    { "alice:{CRYPT}$1$abc$def\n", 0, "%s:1: warning: user alice: weak hash method (libcrypt "
      "calls it legacy)\n", 1, "alice", "$1$abc$def" },
    { "alice:ab01234567890\n", 0, "%s:1: warning: user alice: weak hash method (libcrypt "
      "calls it legacy)\n", 1, "alice", "ab01234567890" },

    /* Line numbers count comments and empty lines; bad lines do not stop the load. */
    { "# header\n\nalice:{PLAIN}a\nbad line\nbob:{WHAT}x\ncarol:{PLAIN}c\n", 2,
      "%s:4: no ':' after the user name\n%s:5: user bob: unknown scheme {WHAT}\n",
      2, "carol", "c" },
    /* Duplicates: the first wins, the second is a warning, not a problem. */
    { "alice:{PLAIN}one\nbob:{PLAIN}b\nalice:{PLAIN}two\n", 0,
      "%s:3: warning: duplicate user alice: line 1 wins\n", 2, "alice", "one" },
    /* Case-sensitive: two users. */
    { "alice:{PLAIN}one\nAlice:{PLAIN}two\n", 0, "", 2, "Alice", "two" },
};

static void test_parse_rows(void)
{
    for (size_t i = 0; i < RR_ARRAY_LEN(parse_rows); i++) {
        const struct parse_row *r = &parse_rows[i];
        char want[1024], *msgs = NULL;
        int problems;
        struct passwd_db *db = load(r->in, strlen(r->in), &problems, &msgs);

        expand(want, sizeof(want), r->msgs);
        CHECK(db, "row %zu: loaded", i);
        CHECK(problems == r->problems, "row %zu: %d problems, want %d", i, problems,
              r->problems);
        CHECK(!strcmp(msgs, want), "row %zu: messages\n%s\nwant\n%s", i, msgs, want);
        if (db) {
            CHECK(passwd_db_count(db) == r->users, "row %zu: %zu users, want %zu", i,
                  passwd_db_count(db), r->users);
            if (r->user) {
                const struct passwd_entry *e = passwd_find(db, r->user);
                CHECK(e && !strcmp(e->user, r->user) && e->user_len == strlen(r->user),
                      "row %zu: find %s", i, r->user);
                if (e && r->hash)
                    CHECK(!strcmp(e->hash, r->hash) && e->hash_len == strlen(r->hash),
                          "row %zu: hash %s, want %s", i, e->hash, r->hash);
            }
        }
        passwd_free(db);
        free(msgs);
    }
}

/* test_parse_edges - bounds, NUL bytes, lookups, files that are not there. */
static void test_parse_edges(void)
{
    char *buf = rr_malloc(PASSWD_LINE_BYTES_MAX + 64), *msgs = NULL, want[512];
    struct passwd_db *db;
    int problems;

    /* A user name of exactly the bound, then one byte over. */
    memset(buf, 'u', PASSWD_USER_BYTES_MAX);
    strcpy(buf + PASSWD_USER_BYTES_MAX, ":{PLAIN}x\n");
    db = load(buf, strlen(buf), &problems, &msgs);
    CHECK(db && problems == 0 && passwd_db_count(db) == 1, "255-byte user: %d problems", problems);
    buf[PASSWD_USER_BYTES_MAX] = '\0';
    CHECK(db && passwd_find(db, buf), "255-byte user found");
    buf[PASSWD_USER_BYTES_MAX] = 'u';
    buf[PASSWD_USER_BYTES_MAX + 1] = '\0';
    CHECK(db && !passwd_find(db, buf), "256-byte name not found");
    passwd_free(db);
    free(msgs);

    memset(buf, 'u', PASSWD_USER_BYTES_MAX + 1);
    strcpy(buf + PASSWD_USER_BYTES_MAX + 1, ":{PLAIN}x\n");
    db = load(buf, strlen(buf), &problems, &msgs);
    snprintf(want, sizeof(want), "%s:1: user name of 256 bytes, longer than 255\n", path);
    CHECK(db && problems == 1 && !strcmp(msgs, want), "256-byte user: %s", msgs);
    passwd_free(db);
    free(msgs);

    /* A line over the bound. */
    memcpy(buf, "alice:{PLAIN}", 13);
    memset(buf + 13, 'p', PASSWD_LINE_BYTES_MAX);
    strcpy(buf + 13 + PASSWD_LINE_BYTES_MAX, "\nbob:{PLAIN}b\n");
    db = load(buf, strlen(buf), &problems, &msgs);
    snprintf(want, sizeof(want), "%s:1: line longer than 4096 bytes\n", path);
    CHECK(db && problems == 1 && !strcmp(msgs, want) && passwd_db_count(db) == 1,
          "long line: %s", msgs);
    passwd_free(db);
    free(msgs);

    /* A NUL byte inside a line. */
    static const char nul[] = "alice:{PLAIN}a\0b\nbob:{PLAIN}b\n";
    db = load(nul, sizeof(nul) - 1, &problems, &msgs);
    snprintf(want, sizeof(want), "%s:1: NUL byte in the line\n", path);
    CHECK(db && problems == 1 && !strcmp(msgs, want), "NUL: %s", msgs);
    passwd_free(db);
    free(msgs);

    /* Many users: the table grows and every one is still found. */
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 5000; i++)
        fprintf(f, "user%d:{PLAIN}pw%d\n", i, i);
    fclose(f);
    problems = 0;
    db = passwd_load(path, NULL, &problems);
    size_t found = 0;
    for (int i = 0; db && i < 5000; i++) {
        char u[32], p[32];
        snprintf(u, sizeof(u), "user%d", i);
        snprintf(p, sizeof(p), "pw%d", i);
        const struct passwd_entry *e = passwd_find(db, u);
        found += e && passwd_verify(e, p) == 1 && e->line == (unsigned)i + 1;
    }
    CHECK(db && problems == 0 && passwd_db_count(db) == 5000 && found == 5000,
          "5000 users: %zu found", found);
    CHECK(db && !passwd_find(db, "user5000") && !passwd_find(db, "") && !passwd_find(db, "User1"),
          "absent users");
    passwd_free(db);

    /* No file; a directory. */
    size_t len;
    FILE *errs = open_memstream(&msgs, &len);
    problems = 0;
    CHECK(!passwd_load("/nonexistent/passwd", errs, &problems) && problems == 1, "missing");
    CHECK(!passwd_load(dir, errs, &problems) && problems == 2, "directory");
    fclose(errs);
    snprintf(want, sizeof(want), "/nonexistent/passwd: cannot open: No such file or directory\n"
             "%s: not a regular file\n", dir);
    CHECK(!strcmp(msgs, want), "messages: %s", msgs);
    free(msgs);

    /* References: the last unref frees (ASan tells). */
    write_file("a:{PLAIN}b\n", 11);
    db = passwd_load(path, NULL, &problems);
    struct passwd_db *db2 = passwd_load(path, NULL, &problems);
    CHECK(db && db2 && passwd_db_serial(db) != passwd_db_serial(db2), "serials differ");
    passwd_db_ref(db);
    passwd_free(db);
    CHECK(passwd_find(db, "a"), "alive after one unref");
    passwd_db_unref(db);
    passwd_free(db2);
    passwd_db_unref(NULL);
    free(buf);
}

/* ---- verify ---- */

static const struct verify_row {
    const char *prefix;           /* for crypt_gensalt_rn() */
    unsigned long count;          /* its cost (low: a test) */
    const char *scheme;           /* written in the file, "" for none */
    enum passwd_scheme want;
} verify_rows[] = {
    { "$6$", 1000, "{SHA512-CRYPT}", PASSWD_SHA512_CRYPT },
    { "$5$", 1000, "{SHA256-CRYPT}", PASSWD_SHA256_CRYPT },
    { "$2b$", 4, "{BLF-CRYPT}", PASSWD_BLF_CRYPT },
    { "$y$", 1, "{CRYPT}", PASSWD_CRYPT },
    { "$6$", 1000, "{CRYPT}", PASSWD_CRYPT },
    { "$y$", 1, "", PASSWD_CRYPT },
    { "$2b$", 4, "", PASSWD_CRYPT },
};

static void test_verify(void)
{
    static const char pw[] = "correct horse battery staple";
    char *longpw = rr_malloc(PASSWD_PASSWORD_BYTES_MAX + 2);

    memset(longpw, 'x', PASSWD_PASSWORD_BYTES_MAX + 1);
    longpw[PASSWD_PASSWORD_BYTES_MAX + 1] = '\0';

    for (size_t i = 0; i < RR_ARRAY_LEN(verify_rows); i++) {
        const struct verify_row *r = &verify_rows[i];
        char salt[CRYPT_GENSALT_OUTPUT_SIZE], line[CRYPT_OUTPUT_SIZE + 64], *msgs = NULL;
        struct crypt_data cd;
        int problems;

        memset(&cd, 0, sizeof(cd));
        CHECK(crypt_gensalt_rn(r->prefix, r->count, NULL, 0, salt, sizeof(salt)),
              "row %zu: gensalt %s", i, r->prefix);
        const char *hash = crypt_r(pw, salt, &cd);
        CHECK(hash && hash[0] == '$', "row %zu: crypt_r %s", i, r->prefix);
        if (!hash || hash[0] != '$')
            continue;
        snprintf(line, sizeof(line), "user:%s%s:1000:1000::/home/user::\n", r->scheme, hash);
        struct passwd_db *db = load(line, strlen(line), &problems, &msgs);
        CHECK(db && problems == 0, "row %zu: %s", i, msgs);
        const struct passwd_entry *e = db ? passwd_find(db, "user") : NULL;
        CHECK(e && e->scheme == r->want, "row %zu: scheme", i);
        if (e) {
            CHECK(passwd_verify(e, pw) == 1, "row %zu: right password", i);
            CHECK(passwd_verify(e, "correct horse battery stapl") == 0, "row %zu: shorter", i);
            CHECK(passwd_verify(e, "correct horse battery staple!") == 0, "row %zu: longer", i);
            CHECK(passwd_verify(e, "Correct horse battery staple") == 0, "row %zu: case", i);
            CHECK(passwd_verify(e, "") == 0, "row %zu: empty", i);
            CHECK(passwd_verify(e, longpw) == 0, "row %zu: over the bound", i);
        }
        passwd_free(db);
        free(msgs);
    }

    /* PLAIN. */
    char *msgs = NULL;
    int problems;
    static const char plain[] = "p:{PLAIN}s3cret\ne:{PLAIN}x\n";
    struct passwd_db *db = load(plain, sizeof(plain) - 1, &problems, &msgs);
    const struct passwd_entry *e = db ? passwd_find(db, "p") : NULL;
    CHECK(e && e->scheme == PASSWD_PLAIN, "plain entry");
    if (e) {
        CHECK(passwd_verify(e, "s3cret") == 1, "plain right");
        CHECK(passwd_verify(e, "s3cre") == 0, "plain prefix");
        CHECK(passwd_verify(e, "s3cret ") == 0, "plain longer");
        CHECK(passwd_verify(e, "S3cret") == 0, "plain case");
        CHECK(passwd_verify(e, "") == 0, "plain empty");
        CHECK(passwd_verify(e, longpw) == 0, "plain over the bound");
    }
    passwd_free(db);
    free(msgs);

    passwd_verify_dummy(pw);      /* runs, matches nothing, leaks nothing */
    CHECK(!strcmp(passwd_scheme_name(PASSWD_BLF_CRYPT), "BLF-CRYPT"), "scheme name");
    free(longpw);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror(dir);
        return 2;
    }
    snprintf(path, sizeof(path), "%s/passwd", dir);
    test_parse_rows();
    test_parse_edges();
    test_verify();
    unlink(path);
    rmdir(dir);
    return check_done("test_passwd");
}
