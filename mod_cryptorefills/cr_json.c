/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>
#include <apr_strings.h>

#include "cr_json.h"

static apr_status_t json_release(void *data)
{
    json_object_put((json_object *)data);
    return APR_SUCCESS;
}

json_object *cr_json_own(apr_pool_t *p, json_object *obj)
{
    if (obj) {
        apr_pool_cleanup_register(p, obj, json_release, apr_pool_cleanup_null);
    }
    return obj;
}

static int only_space(const char *s, apr_size_t n)
{
    apr_size_t i;
    for (i = 0; i < n; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') {
            return 0;
        }
    }
    return 1;
}

const char *cr_json_parse(apr_pool_t *p, const char *buf, apr_size_t len,
                          int max_depth, json_object **out)
{
    const char *why = cr_json_parse_unowned(buf, len, max_depth, out);
    if (!why) {
        cr_json_own(p, *out);
    }
    return why;
}

const char *cr_json_parse_unowned(const char *buf, apr_size_t len, int max_depth,
                                  json_object **out)
{
    json_tokener *tok;
    json_object *obj;
    enum json_tokener_error jerr;
    const char *why = NULL;
    apr_size_t used;

    *out = NULL;
    if (len == 0 || only_space(buf, len)) {
        return "empty body";
    }
    if (len > (apr_size_t)INT32_MAX) {
        return "body too large";
    }
    /* json-c stops at a NUL inside the buffer without saying so: a NUL
     * outside a string is invalid JSON and inside one must be escaped. */
    if (memchr(buf, '\0', len)) {
        return "NUL byte in JSON";
    }
    tok = json_tokener_new_ex(max_depth > 0 ? max_depth : CR_JSON_MAX_DEPTH);
    if (!tok) {
        return "out of memory";
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    obj = json_tokener_parse_ex(tok, buf, (int)len);
    jerr = json_tokener_get_error(tok);
    if (!obj && jerr == json_tokener_continue) {
        /* A bare top-level number or literal ("42", "true") stays pending
         * until the tokener sees its end: feed it the terminating NUL. */
        obj = json_tokener_parse_ex(tok, "", 1);
        jerr = json_tokener_get_error(tok);
        if (obj) {
            used = len;
            goto parsed;
        }
    }
    used = json_tokener_get_parse_end(tok);
parsed:
    if (!obj) {
        if (jerr == json_tokener_success) {
            why = "JSON null";      /* json-c's value for null is NULL */
        }
        else if (jerr == json_tokener_error_depth) {
            why = "nesting too deep";
        }
        else if (jerr == json_tokener_continue) {
            why = "truncated JSON";
        }
        else if (jerr == json_tokener_error_parse_utf8_string) {
            why = "invalid UTF-8";
        }
        else {
            why = "invalid JSON";
        }
    }
    else if (used < len && !only_space(buf + used, len - used)) {
        json_object_put(obj);
        obj = NULL;
        why = "trailing data after JSON";
    }
    json_tokener_free(tok);
    *out = obj;
    return why;
}

const char *cr_json_str(apr_pool_t *p, json_object *obj, apr_size_t *len)
{
    size_t n = 0;
    const char *s = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    if (len) {
        *len = n;
    }
    /* The string belongs to obj; copy it so it may outlive obj. */
    return apr_pstrmemdup(p, s, n);
}

json_object *cr_json_get(json_object *obj, const char *key)
{
    json_object *v = NULL;
    if (obj && json_object_is_type(obj, json_type_object)
        && json_object_object_get_ex(obj, key, &v)) {
        return v;
    }
    return NULL;
}

const char *cr_json_get_string(json_object *obj, const char *key)
{
    json_object *v = cr_json_get(obj, key);
    return (v && json_object_is_type(v, json_type_string)) ? json_object_get_string(v) : NULL;
}

const char *cr_json_scalar_text(json_object *v)
{
    return json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
}
