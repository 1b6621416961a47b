/* SPDX-License-Identifier: Apache-2.0 */
/* A single-pass, allocation-free strict JSON scanner, run over a request
 * body before json-c sees it.
 *
 * json-c is lenient where a validator in front of another parser must not
 * be: it keeps the last of two duplicate keys (the upstream may keep the
 * first, so the module would check one value and forward another), it
 * turns a lone surrogate escape into U+FFFD, clamps out-of-range integers
 * silently, and its string functions stop at an escaped NUL.  Anything the
 * two parsers could read differently is refused here, before any of it is
 * interpreted.  Plain C + APR: no httpd header. */
#ifndef CR_JSCAN_H
#define CR_JSCAN_H

#include <apr.h>

typedef struct cr_jscan_limits {
    int max_depth;            /* nesting of arrays/objects; the top-level container is depth 1 */
    apr_size_t max_string;    /* longest string (key or value), in bytes once unescaped (UTF-8) */
    apr_size_t max_members;   /* most members of one object / elements of one array */
    int allow_duplicates;     /* non-zero: syntax only, duplicate keys pass (for checking
                               * that an upstream answer is JSON, not for request bodies) */
} cr_jscan_limits;

/* Used for a NULL lim, and for any member left 0. */
#define CR_JSCAN_DEFAULT_DEPTH    64
#define CR_JSCAN_DEFAULT_STRING   65536
#define CR_JSCAN_DEFAULT_MEMBERS  10000

/* The scanner keeps its stack in automatic storage: max_depth is clamped to
 * this, whatever the caller asks for. */
#define CR_JSCAN_DEPTH_CAP        256

/* Longest number token accepted (sign, digits, point, exponent).  No amount
 * or count in a checkout body comes near it; json-c clamps integers past
 * 2^64 silently, so overlong tokens are refused rather than misread. */
#define CR_JSCAN_MAX_NUMBER       64

/* NULL when buf[0..len) is exactly one JSON value within limits: RFC 8259
 * syntax (white space around the value allowed, nothing else), valid UTF-8
 * (no overlongs, no encoded surrogates, nothing past U+10FFFF), no raw
 * control characters or NUL in strings, no escaped NUL (\u0000) either, no
 * lone surrogate escapes, no duplicate key within one object (keys compared
 * after unescaping: "a" and "\u0061" are the same key), strings <=
 * max_string bytes, number tokens <= CR_JSCAN_MAX_NUMBER bytes, containers
 * <= max_members entries, nesting <= max_depth.  A byte order mark is
 * refused (RFC 8259 8.1: senders must not add one).
 *
 * Otherwise returns a short static reason ("duplicate key", "invalid UTF-8",
 * ...) and, when err_offset is non-NULL, the offset of the offending byte
 * in *err_offset.
 *
 * Cost: linear in len, except duplicate detection in objects with more keys
 * open at once than an internal table holds (512), where each further key
 * costs a rescan of its object: max_members bounds that. */
const char *cr_jscan_check(const char *buf, apr_size_t len, const cr_jscan_limits *lim,
                           apr_size_t *err_offset);

/* Non-zero when buf[0..len) is one JSON value (syntax and UTF-8 only,
 * duplicate keys allowed, generous limits): the check an upstream answer
 * passes before it is relayed or cached, without building any object. */
int cr_jscan_is_json(const char *buf, apr_size_t len);

#endif
