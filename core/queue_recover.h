/*
 * queue_recover.h - what start-up recovery (core/queue_recover.c) hands to the workers'
 * queues (core/queue.c, take_share). Private to those two.
 *
 * The main thread reads the whole spool once: every complete message, every outcome record,
 * and which segments depend on which (a segment holding an outcome for a message in another
 * one). Connected segments are given to one worker, components dealt out in turn.
 */
#ifndef RR_QUEUE_RECOVER_H
#define RR_QUEUE_RECOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/queue.h"
#include "core/spool.h"

struct rec_seg {
    uint64_t id;
    char name[32];
    struct spool_seg_info info;   /* key and end of valid records, for appends */
    uint32_t parent;              /* union-find over "holds outcomes for" */
    uint32_t live;                /* open messages with content here */
    unsigned worker;              /* who takes it */
};

struct rec_msg {
    uint64_t qid;
    uint32_t seg;                 /* index in segs */
    uint64_t size;
    char *env;
    uint32_t env_len;
    struct spool_chunk *chunks;
    uint32_t chunk_count;
    uint8_t *done;                /* per recipient: an outcome was found */
    uint32_t rcpt_count;
    bool deleted, held;
    uint64_t hold_ms;             /* time of the newest HOLD/RELEASE applied */
    struct rec_msg *hnext;
};

struct rec_status {
    uint64_t qid;
    uint32_t seg;                 /* where the record is */
    enum spool_outcome outcome;
    uint64_t time_ms;
    uint16_t *idx;
    uint32_t count;
};

struct queue_recovered {
    struct rec_seg *segs;
    uint32_t seg_count, seg_cap;
    struct rec_msg **mtab;        /* by qid */
    size_t mcap;
    struct rec_msg **msgs;        /* in scan order */
    size_t msg_count, msg_cap;
    struct rec_status *sts;
    size_t st_count, st_cap;
    uint32_t cur_seg;             /* index of the segment being scanned */
    unsigned workers;
    uint32_t *edges;              /* pairs (record segment, message segment) */
    size_t edge_count, edge_cap;
};

#endif
