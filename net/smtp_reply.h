/*
 * smtp_reply.h - the client side's incremental SMTP reply parser (RFC 5321 4.2, RFC 2034
 * enhanced status codes, RFC 2920 pipelined replies, EHLO keywords).
 *
 * The parser is a byte-resumable state machine: it is fed the receive buffers as they come,
 * in any split, and stops at the end of each complete reply so that pipelined replies are
 * handed out one by one. It holds the reply being read (its text is copied, bounded by the
 * limits below); no allocation, no I/O, no global state.
 *
 * SECURITY: every byte is from the peer. Lines end in CRLF only (a bare CR or LF, a NUL, a line
 * or a reply beyond its limit is a protocol violation); the joined text is cut at
 * SMTP_REPLY_TEXT_BYTES_MAX. A reply with err != SMTP_REPLY_OK is a protocol violation: the
 * caller drops the connection and must not act on its code.
 */
#ifndef RR_SMTP_REPLY_H
#define RR_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_REPLY_LINES_MAX       64   /* lines in one reply */
#define SMTP_REPLY_LINE_BYTES_MAX  512  /* RFC 5321 4.5.3.1.5, including CRLF */
#define SMTP_REPLY_TEXT_BYTES_MAX  1024 /* joined text kept, "\n" separators included */

enum smtp_reply_err {
    SMTP_REPLY_OK = 0,
    SMTP_REPLY_BAD_CODE,          /* a line does not start with three digits */
    SMTP_REPLY_BAD_CLASS,         /* the first digit of the code is not 2..5 */
    SMTP_REPLY_BAD_SEPARATOR,     /* the byte after the code is not SP, '-' or CR */
    SMTP_REPLY_CODE_CHANGED,      /* a later line's code differs from the first line's */
    SMTP_REPLY_NUL,               /* a NUL byte */
    SMTP_REPLY_BARE_CR,           /* a CR not followed by LF */
    SMTP_REPLY_BARE_LF,           /* an LF not preceded by CR */
    SMTP_REPLY_LINE_TOO_LONG,     /* a line beyond SMTP_REPLY_LINE_BYTES_MAX */
    SMTP_REPLY_TOO_MANY_LINES,    /* line SMTP_REPLY_LINES_MAX says more lines follow */
    SMTP_REPLY_ERR_COUNT
};

/* EHLO keywords understood (struct smtp_ehlo.ext). */
enum smtp_ext {
    SMTP_EXT_PIPELINING          = 1u << 0,  /* RFC 2920 */
    SMTP_EXT_SIZE                = 1u << 1,  /* RFC 1870, value in size_max */
    SMTP_EXT_8BITMIME            = 1u << 2,  /* RFC 6152 */
    SMTP_EXT_SMTPUTF8            = 1u << 3,  /* RFC 6531 */
    SMTP_EXT_CHUNKING            = 1u << 4,  /* RFC 3030 */
    SMTP_EXT_STARTTLS            = 1u << 5,  /* RFC 3207 */
    SMTP_EXT_ENHANCEDSTATUSCODES = 1u << 6,  /* RFC 2034 */
    SMTP_EXT_AUTH                = 1u << 7,  /* RFC 4954, mechanisms in auth */
};

/* SASL mechanisms understood after AUTH (struct smtp_ehlo.auth). */
enum smtp_auth_mech {
    SMTP_AUTH_PLAIN = 1u << 0,    /* RFC 4616 */
    SMTP_AUTH_LOGIN = 1u << 1,    /* draft-murchison-sasl-login */
};

/* The extensions a 250 reply announces in its lines 2..n (the reply to EHLO). */
struct smtp_ehlo {
    uint32_t ext;                 /* enum smtp_ext bits */
    uint32_t auth;                /* enum smtp_auth_mech bits, when SMTP_EXT_AUTH */
    uint64_t size_max;            /* SIZE value in bytes; 0 = none given (no fixed limit) */
    uint16_t unknown_lines;       /* well-formed keyword lines not understood (DSN, X-...) */
    uint16_t bad_lines;           /* lines that are not ehlo-line syntax; ignored */
};

/* One complete reply. */
struct smtp_reply {
    uint16_t code;                /* 200..599; 0 when an error came before line 1's code */
    uint8_t err;                  /* enum smtp_reply_err; not OK = drop the connection */
    bool has_enhanced;            /* line 1's text starts with class.subject.detail */
    uint8_t enh_class;            /* 2, 4 or 5: always code / 100 */
    uint16_t enh_subject;         /* 0..999 */
    uint16_t enh_detail;          /* 0..999 */
    uint16_t lines;               /* lines read, the one with an error included */
    bool text_cut;                /* text was cut at SMTP_REPLY_TEXT_BYTES_MAX */
    struct smtp_ehlo ehlo;        /* code 250 only, lines 2..n; zero otherwise and on error */
    uint16_t text_len;            /* bytes of text */
    char text[SMTP_REPLY_TEXT_BYTES_MAX + 1];   /* the lines' text after code and separator,
                                   joined with "\n", no CR, no NUL inside; NUL terminated */
};

/* The state of the reply being read. Opaque to callers; sized here to live in a session. */
struct smtp_reply_parser {
    uint8_t state;                /* internal scanner state */
    bool last;                    /* the current line is the reply's last (SP or no text) */
    uint16_t line_bytes;          /* bytes of the current line so far, code and CRLF included */
    uint16_t line_len;            /* bytes of the current line's text in line[] */
    uint16_t code;                /* line 1's code digits read so far, as a number */
    char line[SMTP_REPLY_LINE_BYTES_MAX];       /* the current line's text */
    struct smtp_reply cur;        /* the reply being read */
};

/* smtp_reply_init - start reading replies. */
void smtp_reply_init(struct smtp_reply_parser *p);

/*
 * smtp_reply_feed - read len bytes of buf up to the end of one reply. Returns the bytes
 * consumed; *complete is always written. When a reply ends (its last line's LF, or an error,
 * see below) *complete is set, *out is filled and the parser is ready for the next reply: the
 * bytes after the returned count are the next (pipelined) reply. Otherwise every byte was
 * consumed and *out is not written.
 *
 * An error completes the reply at once, *out holding the code (when line 1 had one), the lines
 * read and the text of the lines before the one with the error. A line-level error (BAD_CODE,
 * BAD_CLASS, BAD_SEPARATOR, CODE_CHANGED, NUL, BARE_CR) first consumes the rest of its line up
 * to its LF, so that the stream stays at a line boundary, but never more than the line limit:
 * when the LF does not come by then, the reply ends mid-line at the byte past the limit,
 * keeping its first error. BARE_LF completes at that LF; LINE_TOO_LONG at the byte past the
 * limit (which may be the line's LF), mid-line; TOO_MANY_LINES at the LF of line
 * SMTP_REPLY_LINES_MAX, mid-reply. Any error is a protocol violation: the caller drops the
 * connection. Feeding on after an error is allowed (a load generator may count and go on) but
 * the replies read are only a best guess.
 */
size_t smtp_reply_feed(struct smtp_reply_parser *p, const char *buf, size_t len,
                       struct smtp_reply *out, bool *complete);

/* smtp_reply_busy - whether a reply has begun and not ended (the peer closing now cut it). */
bool smtp_reply_busy(const struct smtp_reply_parser *p);

/* smtp_reply_err_name - a short key=value-friendly name for err ("bare_lf"); "invalid" when
 * out of range. */
const char *smtp_reply_err_name(enum smtp_reply_err err);

#endif
