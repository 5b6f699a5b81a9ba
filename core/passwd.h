/*
 * passwd.h - the user database: a Dovecot passwd-file loaded into an immutable hash table,
 * and password verification with libcrypt.
 *
 * A loaded database never changes; a reload loads a new one and swaps the pointer. It is
 * reference counted so that requests still running on the auth pool (core/auth_pool.c) keep
 * the old one alive: passwd_load() returns it with one reference, the caller's.
 *
 * passwd_verify() is slow on purpose (SHA512-CRYPT is about a millisecond, bcrypt and
 * yescrypt more): it never runs on a worker thread, only on the auth pool's helpers.
 */
#ifndef RR_PASSWD_H
#define RR_PASSWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define PASSWD_USER_BYTES_MAX     255     /* longest user name */
#define PASSWD_LINE_BYTES_MAX     4096    /* longest line of the file, newline excluded */
#define PASSWD_ENTRIES_MAX        1000000 /* users in one file */
#define PASSWD_PASSWORD_BYTES_MAX 1024    /* longest password passwd_verify() will hash */

enum passwd_scheme {
    PASSWD_CRYPT,                 /* {CRYPT} or no prefix: any method crypt_r() knows */
    PASSWD_SHA512_CRYPT,          /* {SHA512-CRYPT}: "$6$" */
    PASSWD_SHA256_CRYPT,          /* {SHA256-CRYPT}: "$5$" */
    PASSWD_BLF_CRYPT,             /* {BLF-CRYPT}: "$2a$", "$2b$", "$2y$" */
    PASSWD_PLAIN,                 /* {PLAIN}: clear text, for tests */
};

/* One user. Points into the database: valid as long as the caller holds a reference. */
struct passwd_entry {
    const char *user;             /* NUL terminated, 1..PASSWD_USER_BYTES_MAX bytes */
    size_t user_len;              /* bytes of user */
    enum passwd_scheme scheme;    /* how hash is checked */
    const char *hash;             /* the password field after "{SCHEME}" */
    size_t hash_len;              /* bytes of hash */
    unsigned line;                /* line of the file it came from */
};

struct passwd_db;

/* passwd_load - read path; returns the database (one reference) or NULL when the file cannot
 * be read. Every bad line is reported to errs (when not NULL) as "FILE:LINE: message", skipped,
 * and counted in *problems; warnings ("FILE:LINE: warning: ...", a duplicate user) are
 * reported but not counted. The caller decides whether a database with problems is used. */
struct passwd_db *passwd_load(const char *path, FILE *errs, int *problems);

/* passwd_db_ref - take one more reference; returns db. Any thread. */
struct passwd_db *passwd_db_ref(struct passwd_db *db);

/* passwd_db_unref - drop one reference; the last frees the database. NULL is ignored. */
void passwd_db_unref(struct passwd_db *db);

/* passwd_free - drop the reference passwd_load() returned (= passwd_db_unref()). */
void passwd_free(struct passwd_db *db);

/* passwd_db_serial - a number no other database of this process has (the auth cache keys on
 * it, so a reload forgets every cached success). */
uint64_t passwd_db_serial(const struct passwd_db *db);

/* passwd_db_count - users in the database. */
size_t passwd_db_count(const struct passwd_db *db);

/* passwd_find - the entry of user, or NULL. Exact, case-sensitive byte match: "Alice" and
 * "alice" are two users (Dovecot's passwd-file does not fold case either). Cheap: may run on
 * a worker. */
const struct passwd_entry *passwd_find(const struct passwd_db *db, const char *user);

/* passwd_verify - 1 when password matches e, 0 when it does not, -errno when the hash could
 * not be computed (an error to log; the login fails the same). Constant time in the compared
 * bytes. SLOW: never call it on a worker thread. */
int passwd_verify(const struct passwd_entry *e, const char *password);

/* passwd_verify_dummy - spend about the time of a verify and match nothing: run for unknown
 * users so that the answer time does not tell which user names exist. */
void passwd_verify_dummy(const char *password);

/* passwd_scheme_name - "SHA512-CRYPT" and so on. */
const char *passwd_scheme_name(enum passwd_scheme scheme);

#endif
