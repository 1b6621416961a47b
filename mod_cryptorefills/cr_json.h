/* SPDX-License-Identifier: Apache-2.0 */
/* The one place JSON text is parsed or printed through json-c (its
 * tokenizer and its serialisers); the other core files only read and build
 * json-c objects, and the glue only builds them (problem details).
 *
 * Objects handed out are owned by a pool: a cleanup drops the reference, so
 * no early return in a caller leaks.  Parsing is strict (RFC 8259 syntax,
 * valid UTF-8) and depth-limited. */
#ifndef CR_JSON_H
#define CR_JSON_H

#include <apr_pools.h>
#include <json-c/json.h>

#define CR_JSON_MAX_DEPTH 64

/* Parse len bytes of buf as exactly one JSON value (surrounding white space
 * allowed).  On success *out is owned by p.  On failure returns a short
 * static reason ("invalid JSON", "nesting too deep", "trailing data", ...). */
const char *cr_json_parse(apr_pool_t *p, const char *buf, apr_size_t len,
                          int max_depth, json_object **out);

/* The same, but the caller owns the result (json_object_put it). */
const char *cr_json_parse_unowned(const char *buf, apr_size_t len, int max_depth,
                                  json_object **out);

/* Give p a reference to obj: it is released when p is cleared.  Returns obj. */
json_object *cr_json_own(apr_pool_t *p, json_object *obj);

/* Serialise compactly into p (no escaping of '/'). */
const char *cr_json_str(apr_pool_t *p, json_object *obj, apr_size_t *len);

/* json-c's own plain text for a scalar (number, boolean), e.g. to parse a
 * number as written or to put it in a canonical form; NULL on failure.
 * Valid while v lives. */
const char *cr_json_scalar_text(json_object *v);

/* Member lookups that return NULL for a missing member or a wrong type. */
json_object *cr_json_get(json_object *obj, const char *key);
const char *cr_json_get_string(json_object *obj, const char *key);

#endif
