/*
 * dovecot_auth.h - the client side of Dovecot's authentication protocol (v1.2): password
 * checks against a running Dovecot's auth-client socket, so that an ISP's POP and IMAP users
 * log in to the relay with the passwords Dovecot already checks.
 *
 * Two layers.
 *   Pure (no I/O, no global state; the table tests and the fuzz target drive it): a bounded
 *   line buffer, the server's handshake, the reply parser, the verdict of a reply, and the
 *   AUTH line.
 *   The connection (struct dovecot_client): blocking unix-socket I/O, every wait bounded by a
 *   timeout. Only the auth pool's Dovecot helper (core/auth_pool.c) uses it, never a worker.
 *
 * One connection carries many requests at once: Dovecot answers each by its id, and in its
 * own time (a failure is held back auth_failure_delay, 2 s by default, and a client address
 * with recent failures waits up to 15 s more before its check even starts). So the caller
 * sends, then polls dovecot_client_fd() and takes the replies as they come, in any order.
 *
 * The exchange, as Dovecot 2.3 runs it (S: server, C: us; every line ends in LF):
 *   C: VERSION 1 2                       C: CPID <our thread id>
 *   S: VERSION 1 2    S: MECH PLAIN plaintext ...    S: SPID ..   S: CUID ..   S: COOKIE ..
 *   S: DONE
 *   C: AUTH <id> PLAIN service=smtp secured nologin [rip=<ip>] resp=<base64 "\0user\0pass">
 *   S: OK <id> user=..   |   S: FAIL <id> [user=..] [code=temp_fail | temp] ...
 * (fields separated by TAB).
 */
#ifndef RR_DOVECOT_AUTH_H
#define RR_DOVECOT_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DOVECOT_LINE_BYTES_MAX        16384  /* one line from the server, LF excluded (the
                                                protocol says lines are expected to fit) */
#define DOVECOT_HANDSHAKE_LINES_MAX   64     /* server lines up to DONE (2.3 sends ~20) */
#define DOVECOT_SOCKET_PATH_BYTES_MAX 108    /* socket path and its NUL (sockaddr_un) */
#define DOVECOT_IP_BYTES_MAX          46     /* client address text and its NUL
                                                (INET6_ADDRSTRLEN) */
#define DOVECOT_USER_BYTES_MAX        255    /* user name sent */
#define DOVECOT_PASSWORD_BYTES_MAX    1024   /* password sent */
#define DOVECOT_REQUEST_BYTES_MAX     4096   /* one AUTH line we send, LF included */
#define DOVECOT_IO_TIMEOUT_MS         5000   /* connect + handshake, and each send */
#define DOVECOT_REPLY_TIMEOUT_MS      30000  /* one request's answer: covers Dovecot's 15 s
                                                penalty plus its 2 s failure delay */

/* ---- the pure layer ---- */

/* Bytes from the server, cut into lines. */
struct dovecot_linebuf {
    size_t start;                 /* first byte not yet returned in a line */
    size_t len;                   /* bytes held, from buf[0] */
    char buf[DOVECOT_LINE_BYTES_MAX + 1];   /* room for one longest line and its LF */
};

/* dovecot_linebuf_reset - empty lb. */
void dovecot_linebuf_reset(struct dovecot_linebuf *lb);

/* dovecot_linebuf_space - where the next bytes go, after moving what is held to the front;
 * *room is how many fit (0 only when a line is already too long: dovecot_linebuf_next()
 * says so). */
char *dovecot_linebuf_space(struct dovecot_linebuf *lb, size_t *room);

/* dovecot_linebuf_commit - n bytes were written at dovecot_linebuf_space(). */
void dovecot_linebuf_commit(struct dovecot_linebuf *lb, size_t n);

/* dovecot_linebuf_next - 1 and the next whole line in *line, *len (LF excluded; valid until
 * the next dovecot_linebuf_space() or reset), 0 when no whole line is held, -EMSGSIZE when
 * more than DOVECOT_LINE_BYTES_MAX bytes came without an LF. */
int dovecot_linebuf_next(struct dovecot_linebuf *lb, const char **line, size_t *len);

/* The server's side of the handshake, as far as it came. */
struct dovecot_handshake {
    unsigned lines;               /* lines seen */
    bool version;                 /* "VERSION 1 <minor>" came (it must come first) */
    bool plain;                   /* "MECH PLAIN" came */
};

/* dovecot_handshake_line - take one server line before DONE: 0 for more, 1 when it was DONE
 * and PLAIN was offered, -EPROTO otherwise (the first line not VERSION with major 1, a
 * malformed VERSION, MECH or DONE line, a NUL byte, DONE without PLAIN, more than
 * DOVECOT_HANDSHAKE_LINES_MAX lines). Lines of other commands (SPID, CUID, COOKIE, and any
 * a later Dovecot adds) are skipped. */
int dovecot_handshake_line(struct dovecot_handshake *h, const char *line, size_t len);

enum dovecot_reply_kind {
    DOVECOT_REPLY_OK,             /* the credentials were verified (see nologin, proxy) */
    DOVECOT_REPLY_FAIL,           /* they were not */
    DOVECOT_REPLY_CONT,           /* the mechanism wants more: never right for PLAIN with
                                     resp=, a protocol error to us */
};

/* One reply to an AUTH. */
struct dovecot_reply {
    enum dovecot_reply_kind kind;
    uint32_t id;                  /* of the AUTH it answers */
    bool temp;                    /* FAIL: "code=temp_fail" or "temp": Dovecot could not
                                     check (its database is down) */
    bool nologin;                 /* OK: "nologin": right password, but no access */
    bool proxy;                   /* OK: "proxy": the user is served elsewhere, and the
                                     password may not have been checked at all */
};

/* dovecot_reply_parse - read one server line (LF excluded) after the handshake into *r:
 * 0, or -EPROTO when it is not exactly "OK|FAIL TAB id [TAB param]..." or
 * "CONT TAB id TAB data" with id a canonical decimal number below 2^32 and no NUL byte. */
int dovecot_reply_parse(const char *line, size_t len, struct dovecot_reply *r);

enum dovecot_verdict {
    DOVECOT_GRANTED,              /* OK without nologin or proxy */
    DOVECOT_DENIED,               /* FAIL, or OK with nologin or proxy */
    DOVECOT_TEMPFAIL,             /* FAIL with temp: try again later */
    DOVECOT_PROTOCOL,             /* CONT: the connection is out of step */
};

/* dovecot_reply_verdict - what a parsed reply means for the login. */
enum dovecot_verdict dovecot_reply_verdict(const struct dovecot_reply *r);

/* dovecot_format_auth - the AUTH line (LF included, NUL terminated) for id, user, password
 * and rip (the client's address text, NULL or "" when unknown) into out[0..cap); its length,
 * or -EINVAL when user is empty, either holds a NUL or is beyond its limit, or rip is not
 * hex digits, dots and colons shorter than DOVECOT_IP_BYTES_MAX; -EMSGSIZE when cap is too
 * small. The scratch copy of the password is wiped; out holds it in base64: the caller
 * wipes out after sending. */
int dovecot_format_auth(char *out, size_t cap, uint32_t id, const char *user, size_t user_len,
                        const char *password, size_t password_len, const char *rip);

/* ---- the connection ---- */

struct dovecot_client {
    int fd;                       /* -1 when not connected */
    uint32_t next_id;             /* id of the next AUTH: 1, 2, ... (0 is skipped) */
    unsigned io_timeout_ms;       /* connect + handshake, and each send */
    char path[DOVECOT_SOCKET_PATH_BYTES_MAX]; /* connected to; "" when not */
    struct dovecot_linebuf in;    /* from the server */
};

/* dovecot_client_init - not connected yet; io_timeout_ms 0 means DOVECOT_IO_TIMEOUT_MS. */
void dovecot_client_init(struct dovecot_client *c, unsigned io_timeout_ms);

/* dovecot_client_connect - close any connection, connect to the socket at path and run the
 * handshake (CPID is the calling thread's id: keep a connection on one thread); 0, or -errno
 * (-ENAMETOOLONG, connect's errors, -ETIMEDOUT, -ECONNRESET when the server closed,
 * -EPROTO for a handshake that is not Dovecot's). Blocks at most io_timeout_ms. */
int dovecot_client_connect(struct dovecot_client *c, const char *path);

/* dovecot_client_send_auth - send one AUTH (see dovecot_format_auth()) and give its id;
 * 0, or -EINVAL for bad arguments (nothing sent, the connection still good), -ENOTCONN, or
 * the send's -errno (-ETIMEDOUT after io_timeout_ms; the connection is then unusable: close
 * it). */
int dovecot_client_send_auth(struct dovecot_client *c, const char *user, size_t user_len,
                             const char *password, size_t password_len, const char *rip,
                             uint32_t *id);

/* dovecot_client_fd - the socket to poll for replies, -1 when not connected. */
int dovecot_client_fd(const struct dovecot_client *c);

/* dovecot_client_read - read what the server sent, without waiting: the bytes read (> 0),
 * -EAGAIN when there was nothing, -ECONNRESET when the server closed, -EMSGSIZE when a line
 * is too long, or the read's -errno. Then take the replies with dovecot_client_reply(). */
int dovecot_client_read(struct dovecot_client *c);

/* dovecot_client_reply - 1 and the next reply read, 0 when no whole line is held, -EPROTO
 * for a malformed line, -EMSGSIZE for an overlong one (close the connection then). */
int dovecot_client_reply(struct dovecot_client *c, struct dovecot_reply *r);

/* dovecot_client_close - close the connection (requests on it are lost); idempotent. */
void dovecot_client_close(struct dovecot_client *c);

#endif
