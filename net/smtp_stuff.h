/*
 * smtp_stuff.h - the outbound content encoder for DATA: dot-stuffing, CRLF line ends and the
 * terminator (RFC 5321 4.5.2, 2.3.8).
 *
 * The encoder is a byte-resumable state machine: it is fed the stored message content (the
 * spool's bytes, unstuffed) in any split, and says with iovecs what to put on the wire. It
 * never copies content: the entries point into the caller's buffer or at static strings
 * (".", "\r\n", "\r\n.\r\n", ".\r\n"), and stay valid as long as the caller's buffer does.
 *
 * SECURITY: the content is treated as hostile even though the relay stored it. Every bare CR
 * and bare LF goes out as CRLF, every line starting with "." gets one more, the last line is
 * always ended, so nothing in the content can end DATA early or reach the next hop as a bare
 * line end (SMTP smuggling); only smtp_stuff_finish() writes the terminator.
 */
#ifndef RR_SMTP_STUFF_H
#define RR_SMTP_STUFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct smtp_stuff {
    uint8_t state;                /* internal: at a line start, in a line, CR pending, done */
    uint64_t bytes;               /* bytes put in iovecs so far: the bytes on the wire */
    uint64_t bare_fixed;          /* bare CRs and LFs sent as CRLF (upstream went wrong) */
};

/* smtp_stuff_init - start a message. */
void smtp_stuff_init(struct smtp_stuff *st);

/*
 * smtp_stuff_feed - encode len bytes of buf. Appends to iov (at most iov_max entries,
 * *iov_count in: entries used, out: entries used after) what goes on the wire, in order; no
 * entry is empty. Returns the bytes consumed: less than len only when iov is full (send, then
 * call again with the rest). A CR at the end of buf is consumed and held until the next byte
 * says whether it is a line end or a bare CR. With a free entry every call makes progress (it
 * consumes a byte or fills an entry). After smtp_stuff_finish() it consumes nothing.
 */
size_t smtp_stuff_feed(struct smtp_stuff *st, const char *buf, size_t len,
                       struct iovec *iov, unsigned iov_max, unsigned *iov_count);

/*
 * smtp_stuff_finish - end the content: one entry holding the missing line end (if the content
 * did not end in a line end, or ended in a held CR) and the terminator ".\r\n". Returns false,
 * writing nothing, when iov has no free entry; true when the terminator is in iov, or was
 * already (a second call adds nothing). Empty content gives ".\r\n" alone.
 */
bool smtp_stuff_finish(struct smtp_stuff *st, struct iovec *iov, unsigned iov_max,
                       unsigned *iov_count);

#endif
