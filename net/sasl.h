/*
 * sasl.h - the server side's SASL decoder for SMTP AUTH (RFC 4954): strict base64, the PLAIN
 * (RFC 4616) and LOGIN mechanisms, and the small state machine of one exchange.
 *
 * Pure: no allocation, no I/O, no global state. The caller reads the AUTH command and each
 * response line (CRLF stripped), passes them in, sends "334 " + the challenge while the
 * exchange needs more, and on SASL_DONE checks the credentials (the password check is not
 * done here). Any other end status maps to one SMTP reply through sasl_status_reply().
 *
 * SECURITY: every byte is from the client, and the decoded bytes hold a password. Every
 * length is bounded by the limits below; credentials live only in fixed buffers that
 * sasl_creds_wipe() / sasl_exchange_wipe() clear with explicit_bzero(), and any scratch copy
 * made while decoding is wiped before returning.
 */
#ifndef RR_SASL_H
#define RR_SASL_H

#include <stddef.h>
#include <stdint.h>

#define SASL_USER_BYTES_MAX   255     /* authcid / LOGIN user name (Postfix, Dovecot alike) */
#define SASL_PASS_BYTES_MAX   255     /* password */
#define SASL_AUTHZID_BYTES_MAX 255    /* PLAIN authzid */
#define SASL_LINE_BYTES_MAX   12288   /* one client response, CRLF not included (RFC 4954 4) */
/* the largest PLAIN message: authzid NUL authcid NUL passwd */
#define SASL_PLAIN_BYTES_MAX  (SASL_AUTHZID_BYTES_MAX + 1 + SASL_USER_BYTES_MAX + 1 + \
                               SASL_PASS_BYTES_MAX)
/* bytes of base64 text for n bytes of data, without the terminating NUL */
#define SASL_B64_ENCODED_BYTES(n) (((size_t)(n) + 2) / 3 * 4)

/* Results of sasl_b64_decode() and sasl_b64_encode(). */
enum sasl_b64_err {
    SASL_B64_OK = 0,
    SASL_B64_BAD_LENGTH,          /* length not a multiple of 4 (truncated, or "=" alone) */
    SASL_B64_BAD_CHAR,            /* a byte outside A-Z a-z 0-9 + / (whitespace included) */
    SASL_B64_BAD_PADDING,         /* '=' other than one or two at the very end */
    SASL_B64_BAD_BITS,            /* non-canonical: the unused bits before '=' are not zero */
    SASL_B64_TOO_LONG,            /* the result does not fit cap */
};

/* SASL mechanisms offered (the name after AUTH). */
enum sasl_mech {
    SASL_MECH_UNKNOWN = 0,
    SASL_MECH_PLAIN,              /* RFC 4616 */
    SASL_MECH_LOGIN,              /* draft-murchison-sasl-login */
};

/* What an exchange step ends in; every status but NEED_MORE ends the exchange. */
enum sasl_status {
    SASL_DONE = 0,                /* credentials in ex->creds: check them */
    SASL_NEED_MORE,               /* send "334 " ex->challenge, pass the next line to step */
    SASL_CANCELLED,               /* the client sent "*"         501 5.0.0 */
    SASL_BAD_BASE64,              /* a response is not base64    501 5.5.2 */
    SASL_BAD_MESSAGE,             /* decoded, but not a valid message for the mechanism
                                                                  535 5.7.8 */
    SASL_AUTHZID_MISMATCH,        /* PLAIN authzid given and not the authcid: refused
                                                                  535 5.7.8 */
    SASL_TOO_LONG,                /* a line, message or field beyond its limit  500 5.5.6 */
    SASL_BAD_MECH,                /* sasl_start() with SASL_MECH_UNKNOWN        504 5.5.4 */
    SASL_STATUS_COUNT
};

/* Credentials of a finished exchange. Wipe with sasl_creds_wipe() once used. */
struct sasl_creds {
    uint16_t user_len;            /* bytes of user, 1..SASL_USER_BYTES_MAX */
    uint16_t pass_len;            /* bytes of pass, 1..SASL_PASS_BYTES_MAX */
    char user[SASL_USER_BYTES_MAX + 1];   /* authcid, no NUL inside, NUL terminated */
    char pass[SASL_PASS_BYTES_MAX + 1];   /* password, no NUL inside, NUL terminated */
};

/* One AUTH exchange. Sized here to live in a session; fields read-only to callers. */
struct sasl_exchange {
    uint8_t state;                /* internal: what the next response line is */
    uint8_t mech;                 /* enum sasl_mech being run */
    const char *challenge;        /* after NEED_MORE: the text to send after "334 " (static,
                                     already base64; "" for an empty challenge) */
    struct sasl_creds creds;      /* after DONE: the credentials; zero otherwise */
};

/*
 * sasl_b64_decode - strict RFC 4648 section 4 base64 of in[0..len) into out[0..cap); the
 * decoded length in *out_len. No whitespace, no line breaks, padding required, the unused
 * bits of the last quantum must be zero (so every byte string has exactly one encoding).
 * The empty input decodes to zero bytes. Returns SASL_B64_OK or the first error class found
 * (a bad character before a too-small cap); on error *out_len is 0 and out[0..cap) may hold
 * partial output, which the caller wipes if it matters.
 */
int sasl_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap,
                    size_t *out_len);

/*
 * sasl_b64_encode - base64 of in[0..len) with padding into out, NUL terminated; the text
 * length (SASL_B64_ENCODED_BYTES(len)) in *out_len. Returns SASL_B64_OK, or SASL_B64_TOO_LONG
 * (nothing written, *out_len 0) when cap is below that length + 1.
 */
int sasl_b64_encode(const unsigned char *in, size_t len, char *out, size_t cap,
                    size_t *out_len);

/* sasl_mech_parse - the mechanism named by name[0..len), ASCII case-insensitive. */
enum sasl_mech sasl_mech_parse(const char *name, size_t len);

/*
 * sasl_plain_parse - read an RFC 4616 message "[authzid] NUL authcid NUL passwd" into *out.
 * Returns SASL_DONE, SASL_BAD_MESSAGE (not two NULs, a NUL inside the password, empty authcid
 * or password), SASL_TOO_LONG (a field beyond its limit) or SASL_AUTHZID_MISMATCH (an
 * authzid other than the authcid, compared byte for byte), checked in that order. *out is
 * wiped on any error.
 */
enum sasl_status sasl_plain_parse(const unsigned char *msg, size_t len, struct sasl_creds *out);

/* sasl_creds_wipe - clear credentials so that no copy of the password stays in memory. */
void sasl_creds_wipe(struct sasl_creds *c);

/*
 * sasl_start - begin an exchange for mech (after "AUTH mech"), wiping whatever ex held.
 * initial is the initial response argument (RFC 4954 4) or NULL when none was given; "=" is
 * the empty initial response. Returns like sasl_step(). "*" is not a valid initial response
 * (it cancels only a 334 challenge) and reads as bad base64.
 */
enum sasl_status sasl_start(struct sasl_exchange *ex, enum sasl_mech mech, const char *initial,
                            size_t len);

/*
 * sasl_step - the client's response line[0..len) (CRLF stripped) to the last challenge.
 * Only valid after a NEED_MORE (an assert otherwise). A line beyond SASL_LINE_BYTES_MAX is
 * SASL_TOO_LONG; "*" is SASL_CANCELLED. On NEED_MORE ex->challenge is set; on DONE ex->creds
 * is filled; on any other status ex->creds is wiped.
 */
enum sasl_status sasl_step(struct sasl_exchange *ex, const char *line, size_t len);

/* sasl_exchange_wipe - end an exchange: wipe it (credentials included), ready for a start. */
void sasl_exchange_wipe(struct sasl_exchange *ex);

/*
 * sasl_status_reply - the SMTP reply line for an end status, without CRLF
 * ("501 5.5.2 Cannot decode response"); NULL for SASL_DONE (the verdict depends on the
 * password check: "235 2.7.0 Authentication successful" or
 * SASL_REPLY_CREDENTIALS_INVALID) and SASL_NEED_MORE (send "334 " challenge), and for a
 * value out of range.
 */
const char *sasl_status_reply(enum sasl_status st);

/* The reply for credentials that fail the password check (RFC 4954 6). */
#define SASL_REPLY_CREDENTIALS_INVALID "535 5.7.8 Authentication credentials invalid"
#define SASL_REPLY_SUCCESS             "235 2.7.0 Authentication successful"

/* sasl_status_name - a short key=value-friendly name ("bad_base64"); "invalid" out of range. */
const char *sasl_status_name(enum sasl_status st);

#endif
