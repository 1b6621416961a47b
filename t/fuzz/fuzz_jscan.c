/* The strict JSON scanner (cr_jscan) and the json-c parse wrapper
 * (cr_json): the scanner with the orders route's limits, then, when it
 * passes, cr_json_parse.  Differential checks: a body the strict scanner
 * accepts must parse with json-c, cr_jscan_is_json must accept whatever the
 * strict check accepts, and the document cr_jscan_parse builds (what the
 * validator reads) must hold what json-c's tree holds: the same types,
 * strings byte for byte once unescaped, numbers as written, the same
 * members found by key and elements in order. */
#include <string.h>
#include <stdlib.h>

#include "fuzz_common.h"
#include "cr_jscan.h"
#include "cr_json.h"

/* Token t of d against json-c's value o; returns the token after t's
 * subtree. */
static const cr_jtok *same(apr_pool_t *p, const cr_jdoc *d, const cr_jtok *t, json_object *o)
{
    apr_size_t n = 0;
    const char *s;

    switch (t->type) {
    case CR_JNULL:
        FUZZ_ASSERT(o == NULL, "null vs %s", json_type_to_name(json_object_get_type(o)));
        break;
    case CR_JTRUE:
    case CR_JFALSE:
        FUZZ_ASSERT(json_object_is_type(o, json_type_boolean)
                    && json_object_get_boolean(o) == (t->type == CR_JTRUE), "boolean");
        break;
    case CR_JNUMBER:
        s = cr_jdoc_number(d, t, &n);
        if (t->flags & CR_JTOK_INTEGER) {
            FUZZ_ASSERT(json_object_is_type(o, json_type_int), "integer token %.*s is %s", (int)n, s,
                        json_type_to_name(json_object_get_type(o)));
            if (n <= 18) {
                char tmp[24];
                memcpy(tmp, s, n);
                tmp[n] = '\0';
                FUZZ_ASSERT(json_object_get_int64(o) == strtoll(tmp, NULL, 10), "integer %s", tmp);
            }
        }
        else {
            const char *jt = cr_json_scalar_text(o);
            FUZZ_ASSERT(json_object_is_type(o, json_type_double) && strlen(jt) == n
                        && memcmp(jt, s, n) == 0, "number %.*s vs %s", (int)n, s, jt);
        }
        break;
    case CR_JSTRING:
        s = cr_jdoc_string(p, d, t, &n);
        FUZZ_ASSERT(json_object_is_type(o, json_type_string)
                    && (apr_size_t)json_object_get_string_len(o) == n
                    && memcmp(json_object_get_string(o), s, n) == 0, "string");
        break;
    case CR_JARRAY: {
        const cr_jtok *e = cr_jdoc_first(d, t);
        apr_uint32_t k;
        FUZZ_ASSERT(json_object_is_type(o, json_type_array)
                    && json_object_array_length(o) == t->len, "array of %u", t->len);
        for (k = 0; k < t->len; k++) {
            e = same(p, d, e, json_object_array_get_idx(o, k));
        }
        break;
    }
    case CR_JOBJECT: {
        const cr_jtok *k = cr_jdoc_first(d, t);
        apr_uint32_t m;
        FUZZ_ASSERT(json_object_is_type(o, json_type_object)
                    && (apr_uint32_t)json_object_object_length(o) == t->len, "object of %u", t->len);
        for (m = 0; m < t->len; m++) {
            const char *key = cr_jdoc_string(p, d, k, NULL);
            json_object *v = NULL;
            FUZZ_ASSERT(json_object_object_get_ex(o, key, &v), "key %s missing in json-c", key);
            FUZZ_ASSERT(cr_jdoc_get(d, t, key) == k + 1, "lookup of %s", key);
            k = same(p, d, k + 1, v);
        }
        break;
    }
    default:
        FUZZ_ASSERT(0, "token type %d", t->type);
    }
    return d->tok + t->next;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    const char *buf = (const char *)data;
    cr_jscan_limits order_lim = { 32, 8192, 1000, 0 };
    apr_size_t off = (apr_size_t)-1, probes = 0, i = 0;
    const char *why, *why_default;
    json_object *obj = NULL;

    why = cr_jscan_check_counted(buf, size, &order_lim, &off, &probes);
    FUZZ_ASSERT(why || off == (apr_size_t)-1, "offset set on success");
    FUZZ_ASSERT(!why || off <= size, "offset %zu past %zu", (size_t)off, size);
    /* Work beyond one pass stays linear: at most a budget per key, and a
     * key takes at least 3 bytes ("":0 after a comma). */
    FUZZ_ASSERT(probes <= 8 * size + 64, "%zu probes for %zu bytes", (size_t)probes, size);
    why_default = cr_jscan_check(buf, size, NULL, NULL);
    if (!why) {
        /* The default limits are all wider than the orders route's. */
        FUZZ_ASSERT(why_default == NULL, "default limits refuse: %s", why_default);
        FUZZ_ASSERT(cr_jscan_is_json(buf, size), "strict accepts, is_json refuses");
        while (i < size && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n')) {
            i++;
        }
        /* json-c needs a container at the top (the glue refuses others first) */
        if (i < size && (buf[i] == '{' || buf[i] == '[')) {
            const char *jwhy = cr_json_parse(p, buf, size, order_lim.max_depth + 1, &obj);
            FUZZ_ASSERT(jwhy == NULL, "scanner accepts, json-c refuses: %s", jwhy);
            FUZZ_ASSERT(obj != NULL, "no object");
            (void)cr_json_str(p, obj, NULL);
            {
                cr_jdoc d;
                apr_size_t off2 = 0;
                FUZZ_ASSERT(cr_jscan_parse(p, buf, size, &order_lim, &off2, &d) == NULL, "parse");
                FUZZ_ASSERT(same(p, &d, d.tok, obj) == d.tok + d.ntok, "tokens left over");
            }
        }
    }
    else {
        cr_jdoc d;
        apr_size_t off2 = (apr_size_t)-1;
        const char *pwhy = cr_jscan_parse(p, buf, size, &order_lim, &off2, &d);
        FUZZ_ASSERT(pwhy && strcmp(pwhy, why) == 0 && off2 == off, "parse: %s at %zu, check: %s at %zu",
                    pwhy ? pwhy : "ok", (size_t)off2, why, (size_t)off);
        /* The wrapper alone must not crash on anything, either. */
        (void)cr_json_parse(p, buf, size, CR_JSON_MAX_DEPTH, &obj);
    }
    (void)cr_jscan_is_json(buf, size);
    apr_pool_clear(p);
    return 0;
}
