/*
 * smtp_data.h - the message-content reader for DATA (dot-terminated) and BDAT (counted) input.
 *
 * The reader is a byte-resumable state machine: it is fed the receive buffers as they come,
 * in any split, and says which byte ranges of them form the stored message (the content after
 * dot-unstuffing, every line ending in CRLF). It never copies message bytes: its output is an
 * iovec array pointing into the caller's buffer (or at the static strings "\r\n" and ".\r\n"
 * when it normalizes or a CR and its LF arrive in different buffers), which the caller hands
 * straight to a spool write. The entries stay valid as long as the caller's buffer does.
 *
 * SECURITY: only <CRLF>.<CRLF> ends DATA. A bare CR or bare LF, a NUL, a line longer than
 * line_bytes_max or content beyond bytes_max latches an error; the reader then emits nothing
 * more but keeps scanning for the real end, so the rest of a refused message can never be
 * taken as commands (SMTP smuggling).
 */
#ifndef RR_SMTP_DATA_H
#define RR_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define SMTP_TEXT_LINE_BYTES_MAX 1000   /* RFC 5321 4.5.3.1.6, including CRLF */

enum smtp_data_mode { SMTP_DATA_DOT = 0, SMTP_DATA_BDAT = 1 };

enum smtp_data_err {
    SMTP_DATA_OK = 0,
    SMTP_DATA_BARE_LF,            /* 550 5.5.2 */
    SMTP_DATA_BARE_CR,            /* 550 5.5.2 */
    SMTP_DATA_NUL,                /* 550 5.6.0 */
    SMTP_DATA_LINE_TOO_LONG,      /* 552 5.5.2 */
    SMTP_DATA_TOO_BIG,            /* 552 5.3.4 */
    SMTP_DATA_ERR_COUNT
};

struct smtp_data_reader {
    uint8_t state;                /* internal scanner state */
    uint8_t mode;                 /* enum smtp_data_mode */
    bool normalize;               /* bare CR / LF become CRLF instead of an error */
    uint8_t err;                  /* first error latched, enum smtp_data_err */
    uint32_t line_bytes;          /* bytes of the current line so far */
    uint32_t line_bytes_max;      /* longest line, including CRLF */
    uint64_t bytes;               /* bytes emitted so far (the stored message size) */
    uint64_t bytes_max;           /* most bytes to emit; beyond -> SMTP_DATA_TOO_BIG */
};

/*
 * smtp_data_init - start a message. bytes_max 0 = no limit; line_bytes_max 0 = no limit (lines
 * are then counted up to 4 GiB). Lines are measured in bytes as they arrive on the wire,
 * stuffed dot and line end included; bytes_max limits the stored (emitted) bytes.
 */
void smtp_data_init(struct smtp_data_reader *r, enum smtp_data_mode mode, bool normalize,
                    uint64_t bytes_max, uint32_t line_bytes_max);

/*
 * smtp_data_feed - scan len bytes of buf. Appends to iov (at most iov_max entries, *iov_count
 * in: entries used, out: entries used after) the ranges to store, in order. Returns the number
 * of bytes consumed: less than len when the terminator was found (*done set true, the bytes
 * after it are the next command) or when iov is full (call again with the rest after writing).
 * *done is always written. With a fresh iov of at least one entry every call makes progress.
 * After an error the content emitted so far is a prefix of the message, cut at the byte that
 * caused the error (for TOO_BIG: exactly bytes_max bytes), the same for any split of the input.
 * In BDAT mode the caller passes exactly the chunk's bytes and *done is never set.
 */
size_t smtp_data_feed(struct smtp_data_reader *r, const char *buf, size_t len,
                      struct iovec *iov, unsigned iov_max, unsigned *iov_count, bool *done);

/*
 * smtp_data_finish - BDAT LAST: end the message. A pending CR is judged (bare CR), and when
 * the content did not end in CRLF, "\r\n" is appended to iov (iov must have room for one
 * entry). An empty message stays empty. Returns the error latched, SMTP_DATA_OK for a good
 * message. In DOT mode it only returns the error latched (the terminator ended the message).
 */
enum smtp_data_err smtp_data_finish(struct smtp_data_reader *r, struct iovec *iov,
                                    unsigned iov_max, unsigned *iov_count);

/*
 * smtp_data_reply - the full reply line for a latched error (no CRLF). SMTP_DATA_OK or a value
 * out of range is a caller bug; it gets a 451 so that nothing is ever accepted by mistake.
 */
const char *smtp_data_reply(enum smtp_data_err err);

#endif
