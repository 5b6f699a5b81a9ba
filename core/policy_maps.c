/*
 * policy_maps.c - the relay policy's maps (hosted_domains, sender_logins, host_registry):
 * reading them on the main thread, and the lookups the decisions (core/policy.c) make.
 *
 * FUNCTIONS
 *   policy_maps_load, policy_maps_parse     read the map files (main thread)
 *   policy_maps_ref, policy_maps_unref      share them with the workers
 *   policy_maps_count, policy_maps_has      what was loaded (tests, -t)
 *   policy_domain_key                       the form domains are compared in (IDNA)
 *   policy_domain_hosted, policy_sender_owner, policy_registry_owner
 *                                           lookups (any thread; allocation-free but for
 *                                           libidn2's result for a non-ASCII domain)
 *   policy_sender                           the sender rules of MAIL FROM (core/policy.c)
 *   policy_may_relay, policy_relay_denied_reply
 *                                           who may have recipients at all (core/policy.c)
 *
 * MAP FILES
 *   Text, one entry per line. Empty lines and lines whose first non-blank is '#' are
 *   skipped; " #" (a '#' after a blank) starts a comment anywhere. A trailing CR is dropped.
 *   A line longer than POLICY_LINE_BYTES_MAX, a control byte (NUL included), or a line that
 *   starts with a blank (Postfix's continuation lines are not supported: join the line to
 *   the one above) is a problem. So is a malformed entry; a duplicate key is a warning and
 *   the first line wins (as postmap does).
 *     hosted_domains  "example.org"                   one domain, a trailing dot ignored
 *     sender_logins   "alice@example.org  alice"      address or @domain, then the logins
 *                     "@example.org  bob,carol"       that own it, separated by ',' or blanks
 *     host_registry   "192.0.2.0/24  ACME  ACME Ltd, Leeds office"
 *                                                     CIDR (IPv4 or IPv6), owner, description
 *   Domains and addresses go through the SMTP address parser (net/smtp_parse.c) on the way
 *   in, so an entry is written in exactly the canonical form a sender is compared in:
 *   needless quotes dropped, and every domain (hosted_domains entries, the domain of a
 *   sender_logins key) in its IDNA A-label form, lower case (policy_domain_key: a domain
 *   with a byte >= 0x80 goes through libidn2, IDNA2008 with the UTS #46 mapping; pure ASCII,
 *   xn-- labels included, is only lower-cased). A sender's domain is converted the same way
 *   at MAIL, so b\xc3\xbccher.example (UTF-8) in the file and xn--bcher-kva.example from the
 *   client (or the reverse, or B\xc3\x9cCHER.example under SMTPUTF8) are one domain.
 *   Keys are then ASCII case folded whole (Postfix folds the keys of its hash: tables too),
 *   logins as well. An entry the parser would never produce (an address literal as a hosted
 *   domain, a domain too long to appear in an address) or that IDNA refuses ("has no IDNA
 *   A-label form: <libidn2's reason>") is a problem, not an entry that silently never
 *   matches.
 *
 * DESIGN
 *   Each map is a keyset: the keys (and their values) in one text arena, an open-addressing
 *   table of entry numbers sized at load (a power of two, at least twice the entries, so a
 *   probe always ends at an empty slot) and SipHash-2-4 under a key drawn for each load: the
 *   lookups take network input (a sender's domain, a client address), and the keyed hash
 *   keeps anyone from aiming it at one probe run. The whole struct policy_maps is built on
 *   the main thread, never changed afterwards and freed by its last reference, so lookups on
 *   the workers take no lock and allocate nothing (a stack buffer of at most one address),
 *   except the A-label libidn2 returns for a non-ASCII sender domain, freed at once: the
 *   library has no call that writes into a caller's buffer, and such senders are rare.
 *   host_registry keys are (family, prefix, network) and a lookup tries the prefix lengths
 *   present in the file, longest first: at most 33 (IPv4) or 129 (IPv6) probes, in practice
 *   a handful.
 *
 * DECISIONS
 *   A hosted address with no sender_logins entry at all (neither the address nor its
 *   @domain) is refused for every login, "not owned by user LOGIN": this is Postfix's
 *   reject_sender_login_mismatch (= reject_authenticated_sender_login_mismatch for an
 *   authenticated client), which refuses when "the MAIL FROM address is not listed in
 *   $smtpd_sender_login_maps, or the SASL login name is not an owner for that address"; only
 *   reject_known_sender_login_mismatch lets unlisted addresses through. A hosted domain is
 *   the customer's, and an address nobody was given is nobody's to use. Without a
 *   sender_logins file at all, ownership is not checked (Postfix does nothing when
 *   smtpd_sender_login_maps is empty); -t warns about that. The exact address entry wins
 *   over "@domain": its owners are the only owners (no fall-through), as in Postfix.
 *   Without hosted_domains the sender rules are off: every sender is accepted, as before
 *   issue 5 (relay_mode has nothing to judge).
 *
 * SECURITY
 *   Map files are operator input: every line is bounded before it is looked at, entries
 *   and kept text are bounded per file, nothing is trusted to be NUL-free or printable.
 *   Senders and logins are network input: a sender is looked up by the text after its LAST
 *   '@', which the parser guarantees is the real domain (source routes are dropped; '%',
 *   '!' and a quoted "@" stay in the local part, so "user%hosted@other", "hosted!user@other"
 *   and "\"x@hosted\"@other" are all judged by "other"). Logins may hold any byte but NUL
 *   (net/sasl.c): when one is quoted in a reply, control bytes become '?', and every reply
 *   is cut to one RFC 5321 line at a UTF-8 character boundary. Comparing domains byte for
 *   byte would let a login send as a hosted domain by spelling it the other IDNA way (U-label
 *   against A-label, Unicode capitals): judged "not hosted", it escaped the ownership check
 *   in allow and notify mode. Both sides are therefore compared as A-labels; a sender domain
 *   IDNA refuses cannot be one of ours (the maps hold none) and is judged not hosted. The
 *   conversion's input is bounded (POLICY_DOMAIN_BYTES_MAX, copied to the stack) and so is
 *   its output (longer is refused).
 *
 * STANDARDS
 *   RFC 5321 2.3.5 (domains are case-insensitive), 3.6.1 (source routes), 4.1.2 (Mailbox),
 *   4.2.2 and 4.5.3.1.5 (553 reply, 512-octet reply line); RFC 3463 (5.7.1); RFC 4632 (CIDR);
 *   RFC 5890, 5891 (IDNA2008: A-labels, U-labels, the lookup conversion); UTS #46 (the
 *   mapping before it, non-transitional); RFC 6531 (UTF-8 domains under SMTPUTF8);
 *   Postfix smtpd_sender_login_maps and reject_sender_login_mismatch (postconf(5)).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <idn2.h>

#include "core/alloc.h"
#include "core/policy.h"
#include "core/policy_int.h"
#include "core/siphash.h"
#include "net/smtp_parse.h"

_Static_assert(POLICY_DOMAIN_BYTES_MAX == SMTP_DOMAIN_BYTES_MAX, "domain bound");
_Static_assert(POLICY_ADDR_BYTES_MAX == SMTP_PATH_BYTES_MAX, "address bound");
_Static_assert(POLICY_REPLY_BYTES_MAX + 2 <= 512, "RFC 5321 4.5.3.1.5");

#define REG_KEY_BYTES   18        /* host_registry key: family, prefix, 16 address bytes */
#define MAIL_ARG_BYTES_MAX (POLICY_ADDR_BYTES_MAX + 32) /* "FROM:<...> SMTPUTF8" */
#define ADDR_KEY_BYTES_MAX (POLICY_ADDR_BYTES_MAX + POLICY_DOMAIN_BYTES_MAX) /* a sender_logins
                                     key: local part, '@', the domain grown into its A-label */
#define IDNA_FLAGS (IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) /* IDNA2008 with the UTS #46
                                     mapping (case folding, width, NFC), non-transitional */


/* One map: keys and values in one arena, entry arrays, the open-addressing table. */
struct keyset {
    char *text;                   /* arena: keys and values */
    size_t text_len, text_cap;    /* bytes used, allocated (<= POLICY_MAP_TEXT_BYTES_MAX) */
    size_t *key_off;              /* [count]: key of entry i at text + key_off[i] */
    uint16_t *key_len;            /* [count]: its bytes (NUL-terminated after them) */
    size_t *val_off;              /* [count]: value (logins, registry text) */
    uint16_t *val_n;              /* [count]: logins in the value (sender_logins) */
    uint64_t *hash;               /* [count]: SipHash of the key */
    uint32_t *line;               /* [count]: line of the file */
    size_t count, cap;            /* entries, allocated */
    uint32_t *slots;              /* entry index + 1; 0 = empty */
    size_t mask;                  /* slots - 1: a power of two, at least 2 * count */
};

struct policy_maps {
    _Atomic unsigned refs;        /* holders; the last policy_maps_unref() frees */
    uint64_t key[2];              /* SipHash key of this load */
    bool has[POLICY_MAP_COUNT];   /* the map was configured */
    struct keyset set[POLICY_MAP_COUNT];
    uint64_t v4_lens;             /* bit n: an IPv4 /n is in host_registry */
    uint64_t v6_lens[3];          /* bit n of the 129: an IPv6 /n is */
};

/* One map file being read. */
struct reader {
    FILE *in;                     /* the stream */
    const char *name;             /* FILE of the messages */
    FILE *errs;                   /* where problems go; NULL = count only */
    int *problems;                /* counted here */
    unsigned lineno;              /* the line in line[] */
    unsigned warnings;            /* reported so far (printed up to POLICY_WARNINGS_MAX) */
    char line[POLICY_LINE_BYTES_MAX + 1];
};

/* ---------------------------------------------------------------------------------------- */
/* Reports                                                                                  */

static void report(struct reader *r, unsigned line, bool warning, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* report - "FILE:LINE: message" (LINE left out when 0), counted as a problem unless it is a
 * warning; warnings beyond POLICY_WARNINGS_MAX are counted, not printed. */
static void report(struct reader *r, unsigned line, bool warning, const char *fmt, ...)
{
    va_list ap;

    if (warning) {
        if (r->warnings++ >= POLICY_WARNINGS_MAX)
            return;
    } else {
        (*r->problems)++;
    }
    if (!r->errs)
        return;
    if (line)
        fprintf(r->errs, "%s:%u: %s", r->name, line, warning ? "warning: " : "");
    else
        fprintf(r->errs, "%s: %s", r->name, warning ? "warning: " : "");
    va_start(ap, fmt);
    vfprintf(r->errs, fmt, ap);
    va_end(ap);
    fputc('\n', r->errs);
}

/* warnings_done - the closing line for warnings that were not printed. */
static void warnings_done(struct reader *r)
{
    if (r->errs && r->warnings > POLICY_WARNINGS_MAX)
        fprintf(r->errs, "%s: warning: %u more warnings not shown\n", r->name,
                r->warnings - POLICY_WARNINGS_MAX);
}

/* ---------------------------------------------------------------------------------------- */
/* Text helpers                                                                             */

/* lower - ASCII lower case, whatever the locale. */
static inline unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* is_blank - space or tab. */
static inline bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* fold_copy - n bytes of s, ASCII lower-cased, into out (n + 1 bytes), NUL-terminated. */
void policy_fold(char *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (char)lower((unsigned char)s[i]);
    out[n] = '\0';
}

/* domain_key - the lookup form of the n bytes at s, into out: one trailing dot dropped,
 * IDNA A-labels (a domain with a byte >= 0x80 through libidn2), ASCII lower case. The same
 * function makes the keys of the maps and the keys looked up, so b\xc3\xbccher.example,
 * B\xc3\x9cCHER.EXAMPLE (UTF-8) and xn--bcher-kva.example are one key. 0, or -1 (with *why
 * when why is not NULL: the conversion's reason, NULL for empty or too long as given) when
 * the domain has no lookup form; such a domain cannot be one of ours. Pure ASCII (xn-- labels
 * included) is only folded: libidn2 is not asked, so the common case allocates nothing;
 * libidn2 allocates its result, freed here (it has no call that writes into a buffer). */
int policy_domain_canon(const char *s, size_t n, char out[POLICY_DOMAIN_BYTES_MAX + 1],
                        const char **why)
{
    char in[POLICY_DOMAIN_BYTES_MAX + 1];
    char *alabel = NULL;
    bool ascii = true;
    int rc;

    if (why)
        *why = NULL;
    if (n && s[n - 1] == '.')
        n--;
    if (n == 0 || n > POLICY_DOMAIN_BYTES_MAX)
        return -1;
    for (size_t i = 0; i < n; i++)
        ascii &= (unsigned char)s[i] < 0x80;
    if (ascii) {
        policy_fold(out, s, n);
        return 0;
    }
    memcpy(in, s, n);
    in[n] = '\0';
    if ((rc = idn2_to_ascii_8z(in, &alabel, IDNA_FLAGS)) != IDN2_OK) {
        if (why)
            *why = idn2_strerror(rc);
        return -1;
    }
    n = strlen(alabel);
    if (n && alabel[n - 1] == '.')  /* U+3002 and kin map to a trailing dot */
        n--;
    if (n == 0 || n > POLICY_DOMAIN_BYTES_MAX) {
        if (why)
            *why = n ? "longer than 255 bytes as A-labels" : "an empty domain";
        idn2_free(alabel);
        return -1;
    }
    policy_fold(out, alabel, n);
    idn2_free(alabel);
    return 0;
}

/* next_token - the next run of bytes not in seps at *p, NUL-terminated in place; *p moves
 * past it. NULL when only separators are left. */
static char *next_token(char **p, const char *seps)
{
    char *s = *p, *t;

    while (*s && strchr(seps, *s))
        s++;
    if (!*s) {
        *p = s;
        return NULL;
    }
    t = s;
    while (*s && !strchr(seps, *s))
        s++;
    if (*s)
        *s++ = '\0';
    *p = s;
    return t;
}

/* canon_domain - the key of domain (one trailing dot ignored): its canonical form as the SMTP
 * parser writes the domain of an address, then policy_domain_canon(); into out. 0, or -1 when no
 * address could carry it (bad syntax, an address literal, too long) or it has no A-label
 * form (*why says why: libidn2's reason; NULL for the other cases). */
static int canon_domain(const char *domain, char out[POLICY_DOMAIN_BYTES_MAX + 1],
                        const char **why)
{
    char arg[MAIL_ARG_BYTES_MAX];
    size_t n = strlen(domain);
    struct smtp_addr a;
    struct smtp_mail_params mp;
    int k;

    *why = NULL;
    if (n && domain[n - 1] == '.')
        n--;
    if (n == 0 || n > POLICY_DOMAIN_BYTES_MAX)
        return -1;
    k = snprintf(arg, sizeof(arg), "FROM:<x@%.*s> SMTPUTF8", (int)n, domain);
    if (k < 0 || (size_t)k >= sizeof(arg) ||
        smtp_parse_mail(arg, (size_t)k, 0, &a, &mp) != SMTP_PARSE_OK || a.domain_literal)
        return -1;
    return policy_domain_canon(smtp_domain_of(&a), strlen(smtp_domain_of(&a)), out, why);
}

/* canon_address - the key of addr (local@domain, one trailing dot ignored): the canonical
 * form the SMTP parser writes for a MAIL FROM address, its domain through policy_domain_canon(); into
 * out. 0 or -1, *why as for canon_domain(). */
static int canon_address(const char *addr, char out[ADDR_KEY_BYTES_MAX + 1], const char **why)
{
    char arg[MAIL_ARG_BYTES_MAX];
    size_t n = strlen(addr);
    struct smtp_addr a;
    struct smtp_mail_params mp;
    const char *at;
    int k;

    *why = NULL;
    if (n && addr[n - 1] == '.')
        n--;
    if (n == 0 || n > POLICY_ADDR_BYTES_MAX)
        return -1;
    k = snprintf(arg, sizeof(arg), "FROM:<%.*s> SMTPUTF8", (int)n, addr);
    if (k < 0 || (size_t)k >= sizeof(arg) ||
        smtp_parse_mail(arg, (size_t)k, 0, &a, &mp) != SMTP_PARSE_OK || a.null_path ||
        !(at = strrchr(a.text, '@')))
        return -1;
    n = (size_t)(at + 1 - a.text);              /* the local part and its '@' */
    memcpy(out, a.text, n);
    return policy_domain_canon(at + 1, strlen(at + 1), out + n, why);
}

/* ---------------------------------------------------------------------------------------- */
/* Keysets                                                                                  */

/* ks_key - the key of entry i. */
static inline const char *ks_key(const struct keyset *ks, size_t i)
{
    return ks->text + ks->key_off[i];
}

/* ks_slot - the slot holding key (len bytes, hash h), or the empty slot where it would go. */
static size_t ks_slot(const struct keyset *ks, uint64_t h, const void *key, size_t len)
{
    size_t i = h & ks->mask;

    for (;;) {                    /* ends: at least half the slots are empty */
        uint32_t k = ks->slots[i];
        if (!k)
            return i;
        if (ks->hash[k - 1] == h && ks->key_len[k - 1] == len &&
            memcmp(ks_key(ks, k - 1), key, len) == 0)
            return i;
        i = (i + 1) & ks->mask;
    }
}

/* ks_find - entry index of key, or -1. Allocation-free; any thread once loaded. */
static long ks_find(const struct policy_maps *pm, const struct keyset *ks, const void *key,
                    size_t len)
{
    if (!ks->count)
        return -1;
    uint32_t k = ks->slots[ks_slot(ks, siphash24(pm->key, key, len), key, len)];
    return k ? (long)k - 1 : -1;
}

/* ks_put - append n bytes (and a NUL) to the arena; the offset, or -1 past the bound. */
static long ks_put(struct keyset *ks, const void *s, size_t n)
{
    size_t off = ks->text_len;

    if (n + 1 > POLICY_MAP_TEXT_BYTES_MAX - ks->text_len)
        return -1;
    if (ks->text_len + n + 1 > ks->text_cap) {
        size_t cap = ks->text_cap ? ks->text_cap : 4096;
        while (cap < ks->text_len + n + 1)
            cap *= 2;
        if (cap > POLICY_MAP_TEXT_BYTES_MAX)
            cap = POLICY_MAP_TEXT_BYTES_MAX;
        ks->text = rr_realloc(ks->text, cap);
        ks->text_cap = cap;
    }
    memcpy(ks->text + off, s, n);
    ks->text[off + n] = '\0';
    ks->text_len += n + 1;
    return (long)off;
}

/* ks_rehash - a table twice as large, every entry placed again. */
static void ks_rehash(struct keyset *ks)
{
    size_t n = ks->slots ? (ks->mask + 1) * 2 : 64;

    free(ks->slots);
    ks->slots = rr_calloc(n, sizeof(*ks->slots));
    ks->mask = n - 1;
    for (size_t i = 0; i < ks->count; i++) {
        size_t s = ks->hash[i] & ks->mask;
        while (ks->slots[s])
            s = (s + 1) & ks->mask;
        ks->slots[s] = (uint32_t)i + 1;
    }
}

/* ks_add - a new entry for key (len bytes) from line; its index. *dup_line is set (and
 * nothing added) when the key is there already; -1 when the map is full (reported). */
static long ks_add(struct policy_maps *pm, struct keyset *ks, struct reader *r,
                   const void *key, size_t len, unsigned *dup_line)
{
    uint64_t h = siphash24(pm->key, key, len);
    long off;

    *dup_line = 0;
    if (!ks->slots)
        ks_rehash(ks);
    size_t slot = ks_slot(ks, h, key, len);
    if (ks->slots[slot]) {
        *dup_line = ks->line[ks->slots[slot] - 1];
        return (long)ks->slots[slot] - 1;
    }
    if (ks->count == POLICY_MAP_ENTRIES_MAX) {
        report(r, r->lineno, false, "more than %d entries", POLICY_MAP_ENTRIES_MAX);
        return -1;
    }
    if ((off = ks_put(ks, key, len)) < 0) {
        report(r, r->lineno, false, "more than %u MiB of entries",
               POLICY_MAP_TEXT_BYTES_MAX >> 20);
        return -1;
    }
    if (ks->count == ks->cap) {
        ks->cap = ks->cap ? ks->cap * 2 : 64;
        ks->key_off = rr_realloc(ks->key_off, ks->cap * sizeof(*ks->key_off));
        ks->key_len = rr_realloc(ks->key_len, ks->cap * sizeof(*ks->key_len));
        ks->val_off = rr_realloc(ks->val_off, ks->cap * sizeof(*ks->val_off));
        ks->val_n = rr_realloc(ks->val_n, ks->cap * sizeof(*ks->val_n));
        ks->hash = rr_realloc(ks->hash, ks->cap * sizeof(*ks->hash));
        ks->line = rr_realloc(ks->line, ks->cap * sizeof(*ks->line));
    }
    size_t i = ks->count++;
    ks->key_off[i] = (size_t)off;
    ks->key_len[i] = (uint16_t)len;
    ks->val_off[i] = 0;
    ks->val_n[i] = 0;
    ks->hash[i] = h;
    ks->line[i] = r->lineno;
    ks->slots[slot] = (uint32_t)i + 1;
    if (ks->count * 2 > ks->mask + 1)
        ks_rehash(ks);
    return (long)i;
}

/* ks_free - everything a keyset holds. */
static void ks_free(struct keyset *ks)
{
    free(ks->text);
    free(ks->key_off);
    free(ks->key_len);
    free(ks->val_off);
    free(ks->val_n);
    free(ks->hash);
    free(ks->line);
    free(ks->slots);
    memset(ks, 0, sizeof(*ks));
}

/* ---------------------------------------------------------------------------------------- */
/* Reading map files                                                                        */

/* read_line - the next line into r->line: 1, or 0 at the end of the file. A line that is
 * too long or holds a control byte is reported and comes back empty. */
static int read_line(struct reader *r)
{
    size_t len = 0;
    bool too_long = false;
    int c;

    while ((c = getc(r->in)) != EOF && c != '\n') {
        if (len < POLICY_LINE_BYTES_MAX)
            r->line[len++] = (char)c;
        else
            too_long = true;
    }
    if (c == EOF && ferror(r->in)) {
        report(r, r->lineno + 1, false, "read error: %s", strerror(errno ? errno : EIO));
        return 0;
    }
    if (c == EOF && len == 0 && !too_long)
        return 0;
    r->lineno++;
    r->line[len] = '\0';
    if (too_long) {
        report(r, r->lineno, false, "line longer than %d bytes", POLICY_LINE_BYTES_MAX);
        r->line[0] = '\0';
        return 1;
    }
    if (len && r->line[len - 1] == '\r')
        r->line[--len] = '\0';
    for (size_t i = 0; i < len; i++) {
        unsigned char u = (unsigned char)r->line[i];
        if ((u < 0x20 && u != '\t') || u == 0x7f) {
            report(r, r->lineno, false, "control character 0x%02x in the line", u);
            r->line[0] = '\0';
            return 1;
        }
    }
    return 1;
}

/* entry_text - the entry part of r->line: the comment cut off; NULL for an empty or comment
 * line, and for a line starting with a blank (reported: not a continuation). */
static char *entry_text(struct reader *r)
{
    char *p = r->line;

    if (is_blank(*p)) {
        while (is_blank(*p))
            p++;
        if (*p && *p != '#')
            report(r, r->lineno, false, "line starts with a blank (continuation lines are "
                   "not supported: join it to the line above)");
        return NULL;
    }
    if (*p == '#' || !*p)
        return NULL;
    for (char *q = p + 1; *q; q++)
        if (*q == '#' && is_blank(q[-1])) {
            *q = '\0';
            break;
        }
    return p;
}

/* hosted_line - one hosted_domains entry. */
static void hosted_line(struct policy_maps *pm, struct reader *r, char *p)
{
    struct keyset *ks = &pm->set[POLICY_MAP_HOSTED];
    char dom[POLICY_DOMAIN_BYTES_MAX + 1];
    char *name = next_token(&p, " \t");
    const char *why;
    unsigned dup;

    if (next_token(&p, " \t")) {
        report(r, r->lineno, false, "expected one domain per line");
        return;
    }
    if (canon_domain(name, dom, &why)) {
        if (why)
            report(r, r->lineno, false, "'%.300s' has no IDNA A-label form: %s", name, why);
        else
            report(r, r->lineno, false, "'%.300s' is not a domain name an address can have",
                   name);
        return;
    }
    if (ks_add(pm, ks, r, dom, strlen(dom), &dup) >= 0 && dup)
        report(r, r->lineno, true, "duplicate domain %s (line %u)", dom, dup);
}

/* logins_line - one sender_logins entry: key, then logins separated by ',' or blanks. */
static void logins_line(struct policy_maps *pm, struct reader *r, char *p)
{
    struct keyset *ks = &pm->set[POLICY_MAP_LOGINS];
    char key[ADDR_KEY_BYTES_MAX + 1], canon[ADDR_KEY_BYTES_MAX + 1];
    char logins[POLICY_LINE_BYTES_MAX + 1];
    char *k = next_token(&p, " \t"), *login;
    const char *why = NULL;
    size_t key_len, vlen = 0;
    unsigned n = 0, dup;
    long i, off;

    if (k[0] == '@') {
        if (canon_domain(k + 1, canon + 1, &why)) {
            if (why)
                report(r, r->lineno, false, "'%.300s' has no IDNA A-label form: %s", k, why);
            else
                report(r, r->lineno, false, "'%.300s' is not @ and a domain name", k);
            return;
        }
        canon[0] = '@';
    } else if (!strchr(k, '@') || canon_address(k, canon, &why)) {
        if (why)
            report(r, r->lineno, false, "'%.300s' has no IDNA A-label form: %s", k, why);
        else
            report(r, r->lineno, false, "'%.300s' is not an address or @domain", k);
        return;
    }
    key_len = strlen(canon);
    policy_fold(key, canon, key_len);

    while ((login = next_token(&p, " \t,"))) {
        size_t len = strlen(login);
        if (len > POLICY_LOGIN_BYTES_MAX) {
            report(r, r->lineno, false, "login of %zu bytes, longer than %d", len,
                   POLICY_LOGIN_BYTES_MAX);
            return;
        }
        if (++n > POLICY_LOGINS_PER_ENTRY_MAX) {
            report(r, r->lineno, false, "more than %d logins", POLICY_LOGINS_PER_ENTRY_MAX);
            return;
        }
        policy_fold(logins + vlen, login, len);   /* NUL-separated; fits: from the same line */
        vlen += len + 1;
    }
    if (!n) {
        report(r, r->lineno, false, "%s: no login after the address", k);
        return;
    }
    if ((i = ks_add(pm, ks, r, key, key_len, &dup)) < 0)
        return;
    if (dup) {
        report(r, r->lineno, true, "duplicate key %s (line %u wins)", key, dup);
        return;
    }
    if ((off = ks_put(ks, logins, vlen - 1)) < 0) {   /* the last NUL comes from ks_put */
        report(r, r->lineno, false, "more than %u MiB of entries",
               POLICY_MAP_TEXT_BYTES_MAX >> 20);
        ks->val_n[i] = 0;             /* the key stays, owned by nobody: refuses, never grants */
        return;
    }
    ks->val_off[i] = (size_t)off;
    ks->val_n[i] = (uint16_t)n;
}

/* reg_key - the host_registry key of a network. */
static void reg_key(uint8_t key[REG_KEY_BYTES], int family, unsigned prefix,
                    const uint8_t addr[16])
{
    key[0] = family == AF_INET ? 4 : 6;
    key[1] = (uint8_t)prefix;
    memcpy(key + 2, addr, 16);
}

/* registry_line - one host_registry entry: CIDR, owner, optional description. */
static void registry_line(struct policy_maps *pm, struct reader *r, char *p)
{
    struct keyset *ks = &pm->set[POLICY_MAP_REGISTRY];
    char text[POLICY_REGISTRY_TEXT_BYTES_MAX + 1];
    char *cidr = next_token(&p, " \t"), *word;
    uint8_t key[REG_KEY_BYTES];
    struct config_net net;
    size_t tlen = 0;
    unsigned dup;
    long i, off;

    if (config_parse_net(cidr, &net)) {
        report(r, r->lineno, false, "'%.100s' is not a network (address/prefix)", cidr);
        return;
    }
    while ((word = next_token(&p, " \t"))) {
        size_t len = strlen(word);
        if (tlen + !!tlen + len > POLICY_REGISTRY_TEXT_BYTES_MAX) {
            report(r, r->lineno, false, "owner and description longer than %d bytes",
                   POLICY_REGISTRY_TEXT_BYTES_MAX);
            return;
        }
        if (tlen)
            text[tlen++] = ' ';
        memcpy(text + tlen, word, len);
        tlen += len;
    }
    if (!tlen) {
        report(r, r->lineno, false, "%s: no owner after the network", cidr);
        return;
    }
    reg_key(key, net.family, net.prefix, net.addr);
    if ((i = ks_add(pm, ks, r, key, sizeof(key), &dup)) < 0)
        return;
    if (dup) {
        report(r, r->lineno, true, "duplicate network %s (line %u wins)", cidr, dup);
        return;
    }
    if ((off = ks_put(ks, text, tlen)) < 0) {
        report(r, r->lineno, false, "more than %u MiB of entries",
               POLICY_MAP_TEXT_BYTES_MAX >> 20);
        off = (long)ks->key_off[i] + REG_KEY_BYTES;   /* its NUL: an empty owner */
    }
    ks->val_off[i] = (size_t)off;
    if (net.family == AF_INET)
        pm->v4_lens |= 1ull << net.prefix;
    else
        pm->v6_lens[net.prefix / 64] |= 1ull << (net.prefix % 64);
}

/* parse_map - every line of one map file. */
static void parse_map(struct policy_maps *pm, enum policy_map which, struct reader *r)
{
    static void (*const line_fn[POLICY_MAP_COUNT])(struct policy_maps *, struct reader *,
                                                   char *) = {
        [POLICY_MAP_HOSTED] = hosted_line,
        [POLICY_MAP_LOGINS] = logins_line,
        [POLICY_MAP_REGISTRY] = registry_line,
    };
    char *p;

    while (read_line(r))
        if ((p = entry_text(r)))
            line_fn[which](pm, r, p);
}

/* check_cross - warnings about how the maps fit together (not problems: each map is fine). */
static void check_cross(struct policy_maps *pm, struct reader *rd)
{
    const struct keyset *lg = &pm->set[POLICY_MAP_LOGINS];
    struct reader *hosted = &rd[POLICY_MAP_HOSTED], *logins = &rd[POLICY_MAP_LOGINS];

    if (pm->has[POLICY_MAP_HOSTED] && !pm->has[POLICY_MAP_LOGINS])
        report(hosted, 0, true, "no sender_logins: any login may send as any address of a "
               "hosted domain");
    if (pm->has[POLICY_MAP_LOGINS] && !pm->has[POLICY_MAP_HOSTED]) {
        report(logins, 0, true, "no hosted_domains: the sender rules are off, this file "
               "is not used");
        return;
    }
    if (!pm->has[POLICY_MAP_LOGINS])
        return;
    for (size_t i = 0; i < lg->count; i++) {
        const char *dom = strrchr(ks_key(lg, i), '@') + 1;
        if (!policy_domain_hosted(pm, dom))
            report(logins, lg->line[i], true, "%s is not in hosted_domains: the entry has "
                   "no effect (mail from it is relaying)", dom);
    }
}

/* policy_maps_parse - see policy.h. */
struct policy_maps *policy_maps_parse(const struct policy_map_input in[POLICY_MAP_COUNT],
                                      FILE *errs, int *problems)
{
    struct policy_maps *pm = rr_calloc(1, sizeof(*pm));
    struct reader *rd = rr_calloc(POLICY_MAP_COUNT, sizeof(*rd));  /* 3 lines: off-stack */
    int err;

    atomic_init(&pm->refs, 1);
    for (int m = 0; m < POLICY_MAP_COUNT; m++)
        rd[m] = (struct reader){ .in = in[m].in, .name = in[m].name ? in[m].name : "-",
                                 .errs = errs, .problems = problems };
    if ((err = siphash_key_random(pm->key)))
        report(&rd[0], 0, false, "no random key for the map tables: %s", strerror(-err));
    for (int m = 0; m < POLICY_MAP_COUNT; m++) {
        pm->has[m] = in[m].name != NULL;
        if (in[m].in)
            parse_map(pm, (enum policy_map)m, &rd[m]);
    }
    check_cross(pm, rd);
    for (int m = 0; m < POLICY_MAP_COUNT; m++)
        warnings_done(&rd[m]);
    free(rd);
    return pm;
}

/* open_map - path opened for reading: a regular file, never blocking on a FIFO named by
 * mistake. NULL (reported and counted) when it cannot be. */
static FILE *open_map(const char *path, FILE *errs, int *problems)
{
    const char *why = NULL;
    struct stat sb;
    FILE *f = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

    if (fd < 0 || fstat(fd, &sb))
        why = strerror(errno);
    else if (!S_ISREG(sb.st_mode))
        why = "not a regular file";
    else if (!(f = fdopen(fd, "r")))
        why = strerror(errno);
    if (f)
        return f;
    if (errs)
        fprintf(errs, "%s: cannot read: %s\n", path, why);
    (*problems)++;
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* policy_maps_load - see policy.h. */
struct policy_maps *policy_maps_load(const struct rr_config *cfg, FILE *errs, int *problems)
{
    const char *path[POLICY_MAP_COUNT] = {
        [POLICY_MAP_HOSTED] = cfg->hosted_domains,
        [POLICY_MAP_LOGINS] = cfg->sender_logins,
        [POLICY_MAP_REGISTRY] = cfg->host_registry,
    };
    struct policy_map_input in[POLICY_MAP_COUNT] = { { 0 } };
    struct policy_maps *pm;
    bool any = false;

    for (int m = 0; m < POLICY_MAP_COUNT; m++) {
        if (!path[m][0])
            continue;
        any = true;
        in[m].name = path[m];
        in[m].in = open_map(path[m], errs, problems);
    }
    if (!any)
        return NULL;
    pm = policy_maps_parse(in, errs, problems);
    for (int m = 0; m < POLICY_MAP_COUNT; m++)
        if (in[m].in)
            fclose(in[m].in);
    return pm;
}

/* policy_maps_ref - one more holder. */
struct policy_maps *policy_maps_ref(struct policy_maps *pm)
{
    atomic_fetch_add_explicit(&pm->refs, 1, memory_order_relaxed);
    return pm;
}

/* policy_maps_unref - one holder less; the last one frees. */
void policy_maps_unref(struct policy_maps *pm)
{
    if (!pm || atomic_fetch_sub_explicit(&pm->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (int m = 0; m < POLICY_MAP_COUNT; m++)
        ks_free(&pm->set[m]);
    explicit_bzero(pm->key, sizeof(pm->key));
    free(pm);
}

/* policy_maps_count - entries of one map. */
size_t policy_maps_count(const struct policy_maps *pm, enum policy_map which)
{
    return pm ? pm->set[which].count : 0;
}

/* policy_maps_has - whether the map was configured. */
bool policy_maps_has(const struct policy_maps *pm, enum policy_map which)
{
    return pm && pm->has[which];
}

/* ---------------------------------------------------------------------------------------- */
/* Lookups                                                                                  */

/* policy_domain_key - see policy.h. */
bool policy_domain_key(const char *domain, char out[POLICY_DOMAIN_BYTES_MAX + 1])
{
    return policy_domain_canon(domain, strnlen(domain, POLICY_DOMAIN_BYTES_MAX + 2), out, NULL) == 0;
}

/* hosted_key - whether key (policy_domain_canon() form) is in hosted_domains. */
bool policy_hosted_canon(const struct policy_maps *pm, const char *key)
{
    return pm && pm->has[POLICY_MAP_HOSTED] &&
           ks_find(pm, &pm->set[POLICY_MAP_HOSTED], key, strlen(key)) >= 0;
}

/* policy_domain_hosted - see policy.h. */
bool policy_domain_hosted(const struct policy_maps *pm, const char *domain)
{
    char key[POLICY_DOMAIN_BYTES_MAX + 1];

    return pm && pm->has[POLICY_MAP_HOSTED] && policy_domain_key(domain, key) &&
           policy_hosted_canon(pm, key);
}

/* login_eq - whether login equals the stored (lower-case) login s, ASCII case folded. */
static bool login_eq(const char *s, const char *login)
{
    for (; *s && *login; s++, login++)
        if ((unsigned char)*s != lower((unsigned char)*login))
            return false;
    return *s == *login;
}

/* owner_key - policy_sender_owner() for addr whose domain (after its last '@') has the key
 * dom (policy_domain_canon() form): the domain is not converted again. */
enum policy_owner policy_owner_canon(const struct policy_maps *pm, const char *addr,
                                     const char *dom, const char *login)
{
    const struct keyset *ks;
    char key[ADDR_KEY_BYTES_MAX + 1];
    const char *at = strrchr(addr, '@'), *s;
    size_t local, dn = strlen(dom), n;
    long i;

    if (!pm || !pm->has[POLICY_MAP_LOGINS] || !at)
        return POLICY_OWNER_NONE;
    local = (size_t)(at - addr);
    if (local >= POLICY_ADDR_BYTES_MAX || dn > POLICY_DOMAIN_BYTES_MAX)
        return POLICY_OWNER_NONE;
    ks = &pm->set[POLICY_MAP_LOGINS];
    policy_fold(key, addr, local);
    key[local] = '@';
    memcpy(key + local + 1, dom, dn + 1);
    n = local + 1 + dn;
    if ((i = ks_find(pm, ks, key, n)) < 0 &&
        (i = ks_find(pm, ks, key + local, n - local)) < 0)
        return POLICY_OWNER_NONE;
    s = ks->text + ks->val_off[i];
    for (unsigned k = 0; k < ks->val_n[i]; k++, s += strlen(s) + 1)
        if (login && login_eq(s, login))
            return POLICY_OWNER_LOGIN;
    return POLICY_OWNER_OTHER;
}

/* policy_sender_owner - see policy.h. */
enum policy_owner policy_sender_owner(const struct policy_maps *pm, const char *addr,
                                      const char *login)
{
    char dom[POLICY_DOMAIN_BYTES_MAX + 1];
    const char *at = strrchr(addr, '@');

    if (!at || !policy_domain_key(at + 1, dom))
        return POLICY_OWNER_NONE;
    return policy_owner_canon(pm, addr, dom, login);
}

/* client_bytes - the family and address bytes of sa, a v4-mapped IPv6 address as IPv4;
 * 0 or -1 for another family. */
static int client_bytes(const struct sockaddr *sa, int *family, uint8_t addr[16])
{
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

    memset(addr, 0, 16);
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in4;
        memcpy(&in4, sa, sizeof(in4));
        memcpy(addr, &in4.sin_addr, 4);
        *family = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof(in6));
        memcpy(addr, &in6.sin6_addr, 16);
        *family = AF_INET6;
        if (memcmp(addr, mapped, sizeof(mapped)) == 0) {
            memmove(addr, addr + 12, 4);
            memset(addr + 4, 0, 12);
            *family = AF_INET;
        }
    } else {
        return -1;
    }
    return 0;
}

/* policy_registry_owner - see policy.h. */
const char *policy_registry_owner(const struct policy_maps *pm, const struct sockaddr *sa)
{
    const struct keyset *ks;
    uint8_t addr[16], net[16], key[REG_KEY_BYTES];
    int family, bits;

    if (!pm || !sa || !pm->set[POLICY_MAP_REGISTRY].count || client_bytes(sa, &family, addr))
        return NULL;
    ks = &pm->set[POLICY_MAP_REGISTRY];
    bits = family == AF_INET ? 32 : 128;
    for (int len = bits; len >= 0; len--) {
        bool present = family == AF_INET ? (pm->v4_lens >> len) & 1
                                         : (pm->v6_lens[len / 64] >> (len % 64)) & 1;
        if (!present)
            continue;
        memset(net, 0, sizeof(net));
        memcpy(net, addr, (size_t)len / 8);
        if (len % 8)
            net[len / 8] = (uint8_t)(addr[len / 8] & (0xff00 >> (len % 8)));
        reg_key(key, family, (unsigned)len, net);
        long i = ks_find(pm, ks, key, sizeof(key));
        if (i >= 0)
            return ks->text + ks->val_off[i];
    }
    return NULL;
}
