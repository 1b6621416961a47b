/* The identity of a request body for idempotency: a digest over a
 * canonical form of the exact JSON tokens as they were received.
 *
 * json-c is not used here: it clamps integers beyond int64 and rounds long
 * fractions, so two different orders could look the same.  The canonical
 * form is computed from the bytes:
 *   - white space between tokens is dropped;
 *   - object members are sorted by key (bytes of the unescaped UTF-8 key),
 *     so a client that rebuilds its object in another order still replays;
 *   - strings are unescaped and re-escaped one way ("\u00e9" == "é",
 *     "\/" == "/");
 *   - numbers are compared by exact decimal value, written as
 *     [-]DIGITSeEXP with no leading or trailing zeros in DIGITS (so 100,
 *     1e2, 100.0 and 1.00E+2 are equal; 100000000000000000000 and
 *     100000000000000000001 are not; -0 is 0).  An exponent of more than
 *     15 digits is kept as written (no real order has one).
 * Plain C + APR (+ APR-util's SHA-1): no httpd header. */
#ifndef CR_CANON_H
#define CR_CANON_H

#include <apr_pools.h>

#define CR_CANON_MAX_DEPTH 256

/* Canonical text of buf[0..len) (one JSON value, white space around it
 * allowed), allocated from p, NUL-terminated, length in *outlen.  NULL when
 * buf is not one JSON value (or nests deeper than CR_CANON_MAX_DEPTH). The
 * caller is expected to have run cr_jscan_check already (duplicate keys,
 * UTF-8 and limits are its business). */
const char *cr_canon_json(apr_pool_t *p, const char *buf, apr_size_t len, apr_size_t *outlen);

/* The body's identity: the first 8 bytes of SHA-1 over its canonical text
 * (big-endian).  Returns 0 when buf is not JSON, 1 otherwise. */
int cr_canon_digest(apr_pool_t *p, const char *buf, apr_size_t len, apr_uint64_t *digest);

#endif
