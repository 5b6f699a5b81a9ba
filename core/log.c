/*
 * log.c - key=value event lines on stderr.
 *
 * log_event() formats into a stack buffer and writes the whole line with one write(2), so
 * lines from several threads never interleave. A worker thread batches: its lines of one
 * loop pass go out in one write(2) at the end of the pass (log_batch_begin/log_flush), so a
 * busy worker does not pay a system call per accepted message. log_q() makes any byte
 * string safe as a value.
 *
 * SECURITY: every value that a peer controls must pass through log_q()/log_qn(): control
 * bytes, spaces, quotes and '=' are escaped or quoted, and values are cut at 400 bytes.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

#define LOG_LINE_BYTES_MAX  2048  /* longer lines are cut and end in "..." */
#define LOG_Q_SLOTS         8     /* log_q results alive at once per thread */
#define LOG_Q_INPUT_MAX     400   /* input bytes considered before "..." */
#define LOG_Q_BYTES         (4 * LOG_Q_INPUT_MAX + 8) /* one result: every byte as \xNN,
                                                         quotes, "..." and the NUL */

bool log_verbose;

/* Per-thread batch: a worker collects the lines of one loop pass and writes them at once. */
#define LOG_BATCH_BYTES (64 * 1024)
static __thread char *batch;        /* NULL: write each line at once */
static __thread size_t batch_len;

/* write_all - write(2) until done; an error is dropped (there is nowhere to report it). */
static void write_all(const char *p, size_t n)
{
    for (size_t off = 0; off < n;) {
        ssize_t w = write(STDERR_FILENO, p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

/* log_batch_begin - from now on this thread's lines wait for log_flush(). */
void log_batch_begin(void)
{
    static __thread char space[LOG_BATCH_BYTES];

    batch = space;
    batch_len = 0;
}

/* log_flush - write the lines this thread collected. */
void log_flush(void)
{
    if (batch && batch_len) {
        write_all(batch, batch_len);
        batch_len = 0;
    }
}

static const char *const level_name[] = { "debug", "info", "warn", "error", "fatal" };

/* stamp_second - "ts=YYYY-MM-DDTHH:MM:SS" of sec into out (>= 32 bytes); the thread keeps
 * the last one, so a busy thread formats its date once a second, not once a line. */
static size_t stamp_second(time_t sec, char *out)
{
    static __thread time_t cached_sec = -1;
    static __thread char cached[32];
    static __thread size_t cached_len;
    struct tm tm;

    if (sec != cached_sec) {
        gmtime_r(&sec, &tm);
        cached_len = strftime(cached, sizeof(cached), "ts=%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = sec;
    }
    memcpy(out, cached, cached_len);
    return cached_len;
}

/* log_event - print one timestamped line to stderr with a single write. */
void log_event(enum log_level level, const char *fmt, ...)
{
    char line[LOG_LINE_BYTES_MAX];
    struct timespec ts;
    unsigned ms;
    size_t n;
    va_list ap;
    int r;

    if (level == LOG_DEBUG && !log_verbose)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    n = stamp_second(ts.tv_sec, line);
    ms = (unsigned)(ts.tv_nsec / 1000000);
    line[n++] = '.';
    line[n++] = (char)('0' + ms / 100);
    line[n++] = (char)('0' + ms / 10 % 10);
    line[n++] = (char)('0' + ms % 10);
    r = snprintf(line + n, sizeof(line) - n, "Z level=%s ", level_name[level]);
    n += (size_t)r;
    va_start(ap, fmt);
    r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (r < 0)
        r = 0;
    if ((size_t)r >= sizeof(line) - n - 1) {
        n = sizeof(line) - 5;
        memcpy(line + n, "...", 3);
        n += 3;
    } else {
        n += (size_t)r;
    }
    line[n++] = '\n';
    if (!batch || level >= LOG_ERROR) {
        log_flush();  /* keep the order of lines */
        write_all(line, n);
        return;
    }
    if (batch_len + n > LOG_BATCH_BYTES)
        log_flush();
    memcpy(batch + batch_len, line, n);
    batch_len += n;
}

/* plain - whether byte c may stand unquoted in a value. */
static int plain(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '=';
}

/* log_qn - quote and escape len bytes of s for use as a value. */
const char *log_qn(const char *s, size_t len)
{
    static __thread char slots[LOG_Q_SLOTS][LOG_Q_BYTES];
    static __thread unsigned next;
    char *out = slots[next++ % LOG_Q_SLOTS];
    size_t o = 0, i;
    int quote = len == 0;
    int cut = len > LOG_Q_INPUT_MAX;

    if (cut)
        len = LOG_Q_INPUT_MAX;
    for (i = 0; i < len && !quote; i++)
        quote = !plain((unsigned char)s[i]);
    if (!quote) {
        memcpy(out, s, len);
        out[len] = 0;
        return out;
    }
    out[o++] = '"';
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            o += (size_t)snprintf(out + o, 5, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    if (cut) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = 0;
    return out;
}

/* log_q - quote and escape a NUL-terminated string for use as a value. */
const char *log_q(const char *s)
{
    return log_qn(s ? s : "", s ? strlen(s) : 0);
}
