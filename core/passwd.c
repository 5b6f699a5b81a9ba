/*
 * passwd.c - the user database: a Dovecot passwd-file, and password checks with libcrypt.
 *
 * Functions: passwd_load(), passwd_db_ref(), passwd_db_unref(), passwd_free(),
 * passwd_db_serial(), passwd_db_count(), passwd_find(), passwd_verify(),
 * passwd_verify_dummy(), passwd_scheme_name().
 *
 * File format (one user per line, fields separated by ':'):
 *     user:{SCHEME}hash[:uid:gid:gecos:home:shell:extra_fields]
 * Lines that are empty or start with '#' are skipped; a trailing "\r" is dropped. Only the
 * first two fields are used: the rest (the userdb part) is allowed and ignored. A password
 * without "{SCHEME}" is {CRYPT}, as in Dovecot. Scheme names are case-insensitive
 * ({sha512-crypt} = {SHA512-CRYPT}); user names are not: they are matched byte for byte.
 * When a user appears twice, the first line wins and the second is a warning.
 *
 * Schemes: {SHA512-CRYPT} ("$6$"), {SHA256-CRYPT} ("$5$"), {BLF-CRYPT} ("$2a$", "$2b$",
 * "$2y$"), {CRYPT} (any method libxcrypt's crypt_r() supports and crypt_checksalt()
 * checks, yescrypt "$y$" among them; a method crypt_checksalt() calls legacy, DES or MD5,
 * is a warning), {PLAIN} (clear text, meant for tests). Anything else is a problem line.
 *
 * The table is built once and never changes, so lookups take no lock. It hashes with FNV-1a,
 * not a keyed hash: its keys come from the file, which the operator wrote, and a lookup of a
 * name an attacker chose costs one probe sequence at worst, not a rebuild.
 *
 * SECURITY: the file holds password hashes: messages name the file, the line and the user,
 * never the hash. The password given to passwd_verify() came from the network: it is bounded
 * (PASSWD_PASSWORD_BYTES_MAX), compared in constant time, and libcrypt's work area is wiped.
 * Unknown users cost the same work as known ones (passwd_verify_dummy()).
 *
 * STANDARDS: Dovecot passwd-file format
 * (https://doc.dovecot.org/configuration_manual/authentication/passwd_file/); crypt(5).
 */
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/passwd.h"

struct passwd_db {
    _Atomic unsigned refs;        /* holders; the last passwd_db_unref() frees */
    uint64_t serial;              /* unique in this process */
    struct passwd_entry *entries; /* [0..count) */
    char **storage;               /* [0..count): the "user\0hash\0" block of each entry */
    size_t count;
    uint32_t *slots;              /* open addressing: entry index + 1, 0 = empty */
    size_t mask;                  /* slots - 1 (a power of two, at least 2 * count) */
};

static const struct scheme_row {
    const char *name;             /* between the braces */
    enum passwd_scheme scheme;
    const char *prefix[3];        /* the hash must start with one of these (none: any) */
} schemes[] = {
    { "CRYPT", PASSWD_CRYPT, { NULL } },
    { "SHA512-CRYPT", PASSWD_SHA512_CRYPT, { "$6$" } },
    { "SHA256-CRYPT", PASSWD_SHA256_CRYPT, { "$5$" } },
    { "BLF-CRYPT", PASSWD_BLF_CRYPT, { "$2a$", "$2b$", "$2y$" } },
    { "PLAIN", PASSWD_PLAIN, { NULL } },
};

/* Any one method crypt_r() computes at the cost of a login: for users who do not exist. */
#define DUMMY_SETTING "$6$rrdummysaltxyz$"

static _Atomic uint64_t serial_next = 1;

/* passwd_scheme_name - "SHA512-CRYPT" and so on. */
const char *passwd_scheme_name(enum passwd_scheme scheme)
{
    for (size_t i = 0; i < RR_ARRAY_LEN(schemes); i++)
        if (schemes[i].scheme == scheme)
            return schemes[i].name;
    return "?";
}

/* name_hash - FNV-1a of len bytes (see the contract for why not keyed). */
static uint64_t name_hash(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static int problem(FILE *errs, const char *path, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* problem - one "FILE:LINE: message" line (LINE left out when 0); returns 1, the count to add. */
static int problem(FILE *errs, const char *path, unsigned line, const char *fmt, ...)
{
    va_list ap;

    if (!errs)
        return 1;
    if (line)
        fprintf(errs, "%s:%u: ", path, line);
    else
        fprintf(errs, "%s: ", path);
    va_start(ap, fmt);
    vfprintf(errs, fmt, ap);
    va_end(ap);
    fputc('\n', errs);
    return 1;
}

/* lookup - the slot that holds user, or the empty slot where it would go. */
static size_t lookup(const struct passwd_db *db, const char *user, size_t len)
{
    size_t i = name_hash(user, len) & db->mask;

    for (;;) {
        uint32_t k = db->slots[i];
        if (!k)
            return i;
        const struct passwd_entry *e = &db->entries[k - 1];
        if (e->user_len == len && !memcmp(e->user, user, len))
            return i;
        i = (i + 1) & db->mask;   /* never full: at least twice as many slots as entries */
    }
}

/* check_hash - NULL when hash suits scheme, else what is wrong; *legacy is set for a method
 * libcrypt calls legacy (DES, MD5, SHA256-CRYPT...): it still works, worth a warning. */
static const char *check_hash(const struct scheme_row *s, const char *hash, bool *legacy)
{
    bool prefixed = !s->prefix[0];

    *legacy = false;
    if (s->scheme == PASSWD_PLAIN)
        return NULL;
    for (size_t i = 0; i < RR_ARRAY_LEN(s->prefix) && s->prefix[i]; i++)
        if (!strncmp(hash, s->prefix[i], strlen(s->prefix[i])))
            prefixed = true;
    if (!prefixed)
        return "hash does not start with the prefix of its scheme";
    switch (crypt_checksalt(hash)) {
    case CRYPT_SALT_OK:
        return NULL;
    case CRYPT_SALT_METHOD_LEGACY:
        *legacy = true;
        return NULL;
    default:
        return "hash is not one crypt(3) can check";
    }
}

/* parse_line - add the user of one line (len bytes, no newline) to db; returns problems. */
static int parse_line(struct passwd_db *db, size_t *cap, char *line, size_t len,
                      const char *path, unsigned lineno, FILE *errs)
{
    const struct scheme_row *s = &schemes[0];   /* no "{SCHEME}": CRYPT */
    const char *why;
    bool legacy;

    if (strlen(line) != len)
        return problem(errs, path, lineno, "NUL byte in the line");
    char *colon = strchr(line, ':');
    if (!colon)
        return problem(errs, path, lineno, "no ':' after the user name");
    size_t user_len = (size_t)(colon - line);
    if (!user_len)
        return problem(errs, path, lineno, "empty user name");
    if (user_len > PASSWD_USER_BYTES_MAX)
        return problem(errs, path, lineno, "user name of %zu bytes, longer than %d", user_len,
                       PASSWD_USER_BYTES_MAX);
    for (size_t i = 0; i < user_len; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            return problem(errs, path, lineno, "control character in the user name");
    *colon = '\0';

    char *pw = colon + 1;
    char *end = strchr(pw, ':');
    if (end)
        *end = '\0';              /* the userdb fields that follow are not ours */
    if (!*pw)
        return problem(errs, path, lineno, "user %s: empty password field (users without a "
                       "password are not supported)", line);
    if (*pw == '{') {
        char *close = strchr(pw, '}');
        if (!close)
            return problem(errs, path, lineno, "user %s: '{' without '}' in the password", line);
        *close = '\0';
        s = NULL;
        for (size_t i = 0; i < RR_ARRAY_LEN(schemes) && !s; i++)
            if (!strcasecmp(pw + 1, schemes[i].name))
                s = &schemes[i];
        if (!s)
            return problem(errs, path, lineno, "user %s: unknown scheme {%.32s}", line, pw + 1);
        pw = close + 1;
        if (!*pw)
            return problem(errs, path, lineno, "user %s: empty hash after {%s}", line, s->name);
    }
    if ((why = check_hash(s, pw, &legacy)))
        return problem(errs, path, lineno, "user %s: {%s} %s", line, s->name, why);
    /* Explicit schemes were chosen by the operator: only a {CRYPT} surprise is worth a word. */
    if (legacy && s->scheme == PASSWD_CRYPT)
        problem(errs, path, lineno, "warning: user %s: weak hash method (libcrypt calls it "
                "legacy)", line);

    size_t slot = lookup(db, line, user_len);
    if (db->slots[slot]) {
        problem(errs, path, lineno, "warning: duplicate user %s: line %u wins", line,
                db->entries[db->slots[slot] - 1].line);
        return 0;                 /* a warning, not a problem */
    }
    if (db->count == PASSWD_ENTRIES_MAX)
        return problem(errs, path, lineno, "more than %d users", PASSWD_ENTRIES_MAX);

    if (db->count == *cap) {
        *cap *= 2;
        db->entries = rr_realloc(db->entries, *cap * sizeof(*db->entries));
        db->storage = rr_realloc(db->storage, *cap * sizeof(*db->storage));
    }
    size_t hash_len = strlen(pw);
    char *block = rr_malloc(user_len + 1 + hash_len + 1);
    memcpy(block, line, user_len + 1);
    memcpy(block + user_len + 1, pw, hash_len + 1);
    db->storage[db->count] = block;
    db->entries[db->count] = (struct passwd_entry){
        .user = block, .user_len = user_len, .scheme = s->scheme,
        .hash = block + user_len + 1, .hash_len = hash_len, .line = lineno,
    };
    db->count++;
    db->slots[slot] = (uint32_t)db->count;

    /* Keep the load factor at or under one half. */
    if (db->count * 2 > db->mask + 1) {
        size_t n = (db->mask + 1) * 2;
        free(db->slots);
        db->slots = rr_calloc(n, sizeof(*db->slots));
        db->mask = n - 1;
        for (size_t i = 0; i < db->count; i++)
            db->slots[lookup(db, db->entries[i].user, db->entries[i].user_len)] = (uint32_t)i + 1;
    }
    return 0;
}

/* passwd_load - read the whole file into a new database. */
struct passwd_db *passwd_load(const char *path, FILE *errs, int *problems)
{
    struct passwd_db *db;
    struct stat sb;
    size_t cap = 16, alloc = 0;
    char *line = NULL;
    ssize_t n;
    unsigned lineno = 0;
    FILE *f;
    int fd;

    /* O_NONBLOCK: a FIFO named by mistake must not hang a reload. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *problems += problem(errs, path, 0, "cannot open: %s", strerror(errno));
        return NULL;
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        *problems += problem(errs, path, 0, "not a regular file");
        close(fd);
        return NULL;
    }
    f = fdopen(fd, "r");
    if (!f) {
        *problems += problem(errs, path, 0, "cannot open: %s", strerror(errno));
        close(fd);
        return NULL;
    }

    db = rr_calloc(1, sizeof(*db));
    atomic_init(&db->refs, 1);
    db->serial = atomic_fetch_add(&serial_next, 1);
    db->entries = rr_malloc(cap * sizeof(*db->entries));
    db->storage = rr_malloc(cap * sizeof(*db->storage));
    db->mask = 63;
    db->slots = rr_calloc(db->mask + 1, sizeof(*db->slots));

    while ((n = getline(&line, &alloc, f)) >= 0) {
        size_t len = (size_t)n;
        lineno++;
        if (len && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len && line[len - 1] == '\r')
            line[--len] = '\0';
        if (!len || line[0] == '#')
            continue;
        if (len > PASSWD_LINE_BYTES_MAX) {
            *problems += problem(errs, path, lineno, "line longer than %d bytes",
                                 PASSWD_LINE_BYTES_MAX);
            continue;
        }
        *problems += parse_line(db, &cap, line, len, path, lineno, errs);
    }
    if (ferror(f))
        *problems += problem(errs, path, 0, "read error: %s", strerror(errno));
    if (line)
        explicit_bzero(line, alloc);   /* it held hashes */
    free(line);
    fclose(f);
    return db;
}

/* passwd_db_ref - one more holder. */
struct passwd_db *passwd_db_ref(struct passwd_db *db)
{
    atomic_fetch_add_explicit(&db->refs, 1, memory_order_relaxed);
    return db;
}

/* passwd_db_unref - one holder less; the last one frees. */
void passwd_db_unref(struct passwd_db *db)
{
    if (!db || atomic_fetch_sub_explicit(&db->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < db->count; i++) {
        explicit_bzero(db->storage[i], db->entries[i].user_len + 1 + db->entries[i].hash_len);
        free(db->storage[i]);
    }
    free(db->storage);
    free(db->entries);
    free(db->slots);
    free(db);
}

/* passwd_free - the loader's reference. */
void passwd_free(struct passwd_db *db)
{
    passwd_db_unref(db);
}

/* passwd_db_serial - this database's number. */
uint64_t passwd_db_serial(const struct passwd_db *db)
{
    return db->serial;
}

/* passwd_db_count - users. */
size_t passwd_db_count(const struct passwd_db *db)
{
    return db->count;
}

/* passwd_find - exact byte match on the user name. */
const struct passwd_entry *passwd_find(const struct passwd_db *db, const char *user)
{
    size_t len = strnlen(user, PASSWD_USER_BYTES_MAX + 1);

    if (!len || len > PASSWD_USER_BYTES_MAX)
        return NULL;
    uint32_t k = db->slots[lookup(db, user, len)];
    return k ? &db->entries[k - 1] : NULL;
}

/* ct_equal - 1 when the strings are equal. Time depends on the lengths only: the length of a
 * crypt() output is fixed by its method, not secret. (For PLAIN the stored length may show:
 * PLAIN is for tests.) */
static int ct_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = alen != blen;

    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)a[i] ^ (unsigned char)(i < blen ? b[i] : 0);
    return diff == 0;
}

/* run_crypt - crypt_r() of password with setting into a heap work area (it is about 32 KiB,
 * too much for a small thread stack), compared with want when want is not NULL. */
static int run_crypt(const char *password, const char *setting, const char *want, size_t want_len)
{
    struct crypt_data *cd = rr_calloc(1, sizeof(*cd));
    const char *out = crypt_r(password, setting, cd);
    int r;

    if (!out || out[0] == '*')    /* libxcrypt's failure token starts with '*' */
        r = -EINVAL;
    else
        r = want ? ct_equal(out, strlen(out), want, want_len) : 0;
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
    return r;
}

/* passwd_verify - check password against e. */
int passwd_verify(const struct passwd_entry *e, const char *password)
{
    size_t plen = strnlen(password, PASSWD_PASSWORD_BYTES_MAX + 1);

    if (plen > PASSWD_PASSWORD_BYTES_MAX)
        return 0;
    if (e->scheme == PASSWD_PLAIN)
        return ct_equal(e->hash, e->hash_len, password, plen);
    return run_crypt(password, e->hash, e->hash, e->hash_len);
}

/* passwd_verify_dummy - the work of one SHA512-CRYPT verify, for a user who does not exist. */
void passwd_verify_dummy(const char *password)
{
    size_t plen = strnlen(password, PASSWD_PASSWORD_BYTES_MAX + 1);

    if (plen <= PASSWD_PASSWORD_BYTES_MAX)
        (void)run_crypt(password, DUMMY_SETTING, NULL, 0);
}
