/*
 * spool.h - the durable spool: its on-disk format, and reading it back.
 *
 * The spool is a directory of append-only segment files, one being written per worker at a
 * time. Sessions of a worker append their messages to its segment as records; a message is
 * a run of DATA records (its content, exactly as received after dot-unstuffing) and one
 * COMMIT record (its envelope). One fdatasync of the segment makes every message committed
 * before it durable at once (group commit); only then do those messages get their 250.
 *
 * Segment file "SEGID.seg" (SEGID = 16 hex digits):
 *   offset 0: struct spool_seg_header (64 bytes), written and synced, and the directory
 *             synced, before the first record goes in.
 *   then records, each 8-byte aligned: struct spool_rec (32 bytes), payload, zero padding.
 *
 * Crash safety: a record counts only if its magic, length and CRC check out. The CRC is
 * CRC-32C seeded with the segment's random key over the record header (crc field zero) and
 * the payload, so a torn or never-written record is rejected and message content cannot
 * forge a record. Writes may land out of order, leaving holes: the reader re-synchronises at
 * the next 8-byte position whose record checks out. A message is complete only when its
 * COMMIT record is present, every DATA record 0..chunks-1 is present and the sizes add up.
 * A message that is not complete was never acknowledged and is ignored.
 *
 * Delivery outcomes are records too: a STATUS record names a message (qid) and says what
 * became of some of its recipients (delivered, failed for good) or of the whole message
 * (deleted, held, released). It is appended to the message's own segment (even one no longer
 * taking messages), so that a segment's file holds everything about its messages and can go
 * with them. Only when that segment cannot take appends (its writes failed) does the record go
 * to the segment being written; the queue manager (core/queue.c) then keeps that segment until
 * the message's is gone. Payload: struct spool_status_hdr, then the recipients' indexes
 * (uint16_t each, in envelope order from 0).
 *
 * SECURITY: segment files are ours, but their content includes peer bytes; the reader
 * bounds every length by the file size and never trusts a count it has not checked.
 */
#ifndef RR_SPOOL_H
#define RR_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPOOL_SEG_MAGIC       "RRSPOOL1"
#define SPOOL_SEG_VERSION     1
#define SPOOL_SEG_HEADER_BYTES 64
#define SPOOL_REC_MAGIC       0x31535252u  /* "RRS1" little-endian */
#define SPOOL_REC_BYTES       32           /* record header */
#define SPOOL_REC_ALIGN       8
#define SPOOL_ENVELOPE_BYTES_MAX (64 * 1024) /* serialized envelope */
#define SPOOL_SEG_SUFFIX      ".seg"

enum spool_rec_type {
    SPOOL_REC_DATA = 1,           /* a piece of message content; seq = chunk number */
    SPOOL_REC_COMMIT = 2,         /* the envelope; seq = number of DATA chunks */
    SPOOL_REC_STATUS = 3,         /* an outcome; qid = the message, seq = enum spool_outcome */
};

enum spool_outcome {
    SPOOL_OUT_DELIVERED = 1,      /* the listed recipients were delivered */
    SPOOL_OUT_FAILED = 2,         /* the listed recipients failed for good (bounced or dropped) */
    SPOOL_OUT_DELETED = 3,        /* the whole message was deleted by the operator */
    SPOOL_OUT_HOLD = 4,           /* the message is on hold */
    SPOOL_OUT_RELEASE = 5,        /* the message is off hold */
    SPOOL_OUT_COUNT
};

/* Start of a STATUS payload. */
struct spool_status_hdr {
    uint64_t time_ms;             /* wall clock when written: orders HOLD and RELEASE */
};

#define SPOOL_STATUS_RCPTS_MAX 1000  /* recipient indexes in one STATUS record */

struct spool_seg_header {
    char magic[8];                /* SPOOL_SEG_MAGIC */
    uint32_t version;             /* SPOOL_SEG_VERSION */
    uint32_t worker;              /* worker that wrote it */
    uint64_t seg_id;              /* same as the file name */
    uint64_t created_ms;          /* wall clock at creation */
    uint32_t key;                 /* CRC seed of every record */
    uint32_t crc;                 /* crc32c(0, header with crc = 0) */
    uint8_t pad[24];
};

struct spool_rec {
    uint32_t magic;               /* SPOOL_REC_MAGIC */
    uint32_t crc;                 /* crc32c(key, record with crc = 0, then payload) */
    uint8_t type;                 /* enum spool_rec_type */
    uint8_t flags;                /* 0 */
    uint16_t reserved;            /* 0 */
    uint32_t len;                 /* payload bytes */
    uint64_t qid;                 /* message id */
    uint32_t seq;                 /* see enum spool_rec_type */
    uint32_t reserved2;           /* 0 */
};

_Static_assert(sizeof(struct spool_seg_header) == SPOOL_SEG_HEADER_BYTES, "segment header");
_Static_assert(sizeof(struct spool_rec) == SPOOL_REC_BYTES, "record header");

/* spool_align - bytes a record of payload len takes, header and padding included. */
static inline uint64_t spool_rec_span(uint64_t len)
{
    return (SPOOL_REC_BYTES + len + SPOOL_REC_ALIGN - 1) & ~(uint64_t)(SPOOL_REC_ALIGN - 1);
}

/* One message content piece inside a segment. */
struct spool_chunk {
    uint64_t off;                 /* payload offset in the segment file */
    uint32_t len;                 /* payload bytes */
};

/* A complete message found in a segment. */
struct spool_msg {
    uint64_t qid;
    uint64_t seg_id;              /* segment holding it */
    uint64_t size;                /* content bytes */
    const struct spool_chunk *chunks; /* content, in order */
    uint32_t chunk_count;
    const char *envelope;         /* "key value\n" lines; see spool_env_* */
    uint32_t envelope_len;
};

struct spool_scan_stats {
    unsigned segments;            /* segment files read */
    unsigned messages;            /* complete messages */
    unsigned incomplete;          /* messages with records but no valid commit */
    uint64_t bad_bytes;           /* bytes skipped while re-synchronising */
};

/* spool_msg_cb - called once per complete message; seg_fd is open for reading. Non-zero stops. */
typedef int (*spool_msg_cb)(const struct spool_msg *msg, int seg_fd, void *arg);

/* One outcome record found in a segment. */
struct spool_status {
    uint64_t qid;                 /* the message it is about */
    uint64_t seg_id;              /* segment holding the record */
    enum spool_outcome outcome;
    uint64_t time_ms;             /* struct spool_status_hdr */
    const unsigned char *rcpts;   /* rcpt_count little-endian uint16_t indexes (unaligned) */
    uint32_t rcpt_count;
};

/* spool_status_cb - called once per valid STATUS record, in file order. Non-zero stops. */
typedef int (*spool_status_cb)(const struct spool_status *st, void *arg);

/* spool_seg_name - "SEGID.seg" for seg_id into buf (at least 24 bytes). */
void spool_seg_name(uint64_t seg_id, char *buf, size_t cap);

/* spool_qid_format - the 16 hex digits of a queue id into buf (at least 17 bytes). */
void spool_qid_format(uint64_t qid, char *buf);

/* spool_scan_segment - read one segment file, calling cb per complete message. 0 or -errno. */
int spool_scan_segment(int dir_fd, const char *name, spool_msg_cb cb, void *arg,
                       struct spool_scan_stats *st);

/* spool_scan_dir - spool_scan_segment for every segment in dir, in name order. 0 or -errno. */
int spool_scan_dir(const char *dir, spool_msg_cb cb, void *arg, struct spool_scan_stats *st);

/* What a scan learnt about the segment itself. */
struct spool_seg_info {
    uint64_t seg_id;              /* from its header; 0 when the header is unreadable */
    uint32_t key;                 /* record CRC seed */
    uint64_t end_off;             /* just past its last valid record: where appends may go */
};

/* spool_scan_dir_status - spool_scan_dir that also reports STATUS records (either callback
 * may be NULL). */
int spool_scan_dir_status(const char *dir, spool_msg_cb cb, spool_status_cb scb, void *arg,
                          struct spool_scan_stats *st);

/* spool_scan_segment_status - spool_scan_segment that also reports STATUS records (before
 * the segment's messages) and fills *info (may be NULL). */
int spool_scan_segment_status(int dir_fd, const char *name, spool_msg_cb cb,
                              spool_status_cb scb, void *arg, struct spool_scan_stats *st,
                              struct spool_seg_info *info);

/* spool_is_segment_name - 16 lower-case hex digits and ".seg". */
bool spool_is_segment_name(const char *name);

/* spool_read_body - copy the content of msg from seg_fd to out_fd. 0 or -errno. */
int spool_read_body(int seg_fd, const struct spool_msg *msg, int out_fd);

/* spool_env_get - the value of the first line "key value" of an envelope, its length in
 * *len; NULL when absent. The value is not NUL terminated. start lets a caller walk repeated
 * keys (rcpt): pass NULL first, then the previous result. */
const char *spool_env_get(const char *env, size_t env_len, const char *key, const char *after,
                          size_t *len);

/* spool_rec_seal - fill magic and crc of rec for the payload iov[0..n) under key. */
struct iovec;
void spool_rec_seal(struct spool_rec *rec, uint32_t key, const struct iovec *iov, unsigned n);

#endif
