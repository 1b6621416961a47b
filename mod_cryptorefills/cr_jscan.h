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
#include <apr_pools.h>

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

/* Longest number token accepted (sign, digits, point, exponent).  RFC 8259
 * sets no limit; JSONTestSuite's valid files go to 81 bytes
 * (-0.000...0001).  No amount or count in a checkout body comes near 512:
 * the cap bounds the text json-c keeps per number, not the scan (linear
 * anyway).  Long tokens are safe to let through: amounts are read from the
 * number's text by an exact decimal parser, and json-c clamps an integer
 * past 2^64 (never wraps it), so a long token is never read as a small,
 * valid value. */
#define CR_JSCAN_MAX_NUMBER       512

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
 * Cost: linear in len for every body shape.  Duplicate keys are found
 * through a hash index; when keys of one object are made to collide in it,
 * that object's keys are sorted when it closes instead (O(k log k) for its
 * k keys).  Memory: under 12 KB of stack, plus, only when more than 128
 * keys are open at once, a private pool of at most about 112 bytes per
 * open key (arrays that double, the old ones kept until the end; every key
 * takes 4 bytes of body or more), destroyed before returning.
 * Returns "out of memory" if that pool can't be had. */
const char *cr_jscan_check(const char *buf, apr_size_t len, const cr_jscan_limits *lim,
                           apr_size_t *err_offset);

/* cr_jscan_check(), also counting in *probes the candidate keys looked at
 * for duplicate detection (the work beyond one pass), for tests. */
const char *cr_jscan_check_counted(const char *buf, apr_size_t len, const cr_jscan_limits *lim,
                                   apr_size_t *err_offset, apr_size_t *probes);

/* ---- A read-only document of a checked body -------------------------------
 * cr_jscan_parse() checks exactly as cr_jscan_check() does and, in the same
 * pass, records every value as a token in one array allocated from a pool:
 * no tree of objects, no copy of the text.  A container's token is followed
 * by its contents in document order (an object's as key, value, key,
 * value...), and every token knows where its subtree ends, so a member
 * lookup skips whole values.  Strings are unescaped only when read. */
typedef enum {
    CR_JNULL = 0, CR_JFALSE, CR_JTRUE, CR_JNUMBER, CR_JSTRING, CR_JARRAY, CR_JOBJECT
} cr_jtype;

#define CR_JTOK_ESCAPED  1    /* a string with backslash escapes */
#define CR_JTOK_INTEGER  2    /* a number without fraction or exponent */

typedef struct cr_jtok {
    apr_uint32_t start;       /* offset of the value's first byte in the text */
    apr_uint32_t len;         /* string: unescaped bytes; number: bytes of its token;
                               * array: elements; object: members; literal: 0 */
    apr_uint32_t next;        /* index of the first token after this value's subtree */
    unsigned char type;       /* cr_jtype */
    unsigned char flags;      /* CR_JTOK_* */
} cr_jtok;

typedef struct cr_jdoc {
    const char *text;         /* the checked text (not copied: it must outlive the doc) */
    const cr_jtok *tok;       /* tok[0] is the top-level value */
    apr_uint32_t ntok;
} cr_jdoc;

/* cr_jscan_check() that also fills *doc (tokens allocated from p) when it
 * returns NULL: same reasons, same offsets.  A text over INT32_MAX bytes
 * that passes the check is refused as "body too large" (offset 0).  Memory:
 * 1 KB more stack, and 16 bytes of p per value and per key (an array sized
 * from len, doubled when short up to len/2 + 1 tokens, the most a text of
 * len bytes holds: at most 16 bytes of p per byte of text in all). */
const char *cr_jscan_parse(apr_pool_t *p, const char *buf, apr_size_t len,
                           const cr_jscan_limits *lim, apr_size_t *err_offset, cr_jdoc *doc);

/* The member key of object obj (compared after unescaping), or NULL when
 * obj is NULL or not an object or has no such member.  Keys are unique in
 * a checked document. */
const cr_jtok *cr_jdoc_get(const cr_jdoc *d, const cr_jtok *obj, const char *key);

/* The first element of an array, or the first key of an object; NULL when
 * it is empty or not a container.  The value after v (its next sibling,
 * when v is not the last one: count with the container's len) is
 * cr_jdoc_after(d, v); an object's member value is cr_jdoc_after(d, key). */
const cr_jtok *cr_jdoc_first(const cr_jdoc *d, const cr_jtok *c);
const cr_jtok *cr_jdoc_after(const cr_jdoc *d, const cr_jtok *v);

/* A string's unescaped bytes, NUL-terminated, in p (the length, in *len
 * when len is non-NULL, never counts a NUL inside: a checked string has
 * none).  NULL when s is not a string. */
const char *cr_jdoc_string(apr_pool_t *p, const cr_jdoc *d, const cr_jtok *s, apr_size_t *len);

/* A number's token as written (not NUL-terminated), length in *len; NULL
 * when n is not a number. */
const char *cr_jdoc_number(const cr_jdoc *d, const cr_jtok *n, apr_size_t *len);

/* Non-zero when buf[0..len) is one JSON value (syntax and UTF-8 only,
 * duplicate keys allowed, generous limits): the check an upstream answer
 * passes before it is relayed or cached, without building any object. */
int cr_jscan_is_json(const char *buf, apr_size_t len);

#endif
