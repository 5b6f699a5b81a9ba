/*
 * log.h - key=value event lines on stderr, one write(2) per line.
 *
 * Lines look like `ts=2026-11-23T20:00:00.123Z level=info event=accepted id=... key=value`.
 * Values that come from the network go through log_q(), which quotes and escapes them so
 * a hostile peer can neither break a line nor forge a key.
 */
#ifndef RR_LOG_H
#define RR_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL };

extern bool log_verbose;  /* -v: debug lines too */

/* log_event - print one line: timestamp, level, then the formatted key=value text. */
void log_event(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* log_batch_begin - this thread keeps its lines until log_flush() (errors go out at once). */
void log_batch_begin(void);

/* log_flush - write what this thread has kept. */
void log_flush(void);

/* log_q - s as a log value: bare when it is plain, else double-quoted with \" \\ \xNN escapes.
 * The result lives in a per-thread ring of 8 buffers of 512 bytes: valid until 8 more calls. */
const char *log_q(const char *s);

/* log_qn - as log_q for len bytes of s (not NUL terminated). */
const char *log_qn(const char *s, size_t len);

#define LOG_INFO_EV(...)  log_event(LOG_INFO, __VA_ARGS__)

#endif
