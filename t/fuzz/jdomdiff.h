/* What the differential harness fuzz_jdomdiff.c compares: the whole answer
 * of the order routes' local checks to one body, as text, from the old
 * path (jdomdiff_old.c) and the new one. */
#ifndef CR_JDOMDIFF_H
#define CR_JDOMDIFF_H

#include <apr_pools.h>
#include <apr_strings.h>
#include <json-c/json.h>

/* mod_cryptorefills_orders.c's limits and validator settings. */
#define JDOMDIFF_LIMITS          { 32, 8192, 1000, 0 }
#define JDOMDIFF_MAX_PRODUCTS    5
#define JDOMDIFF_MAX_COUNTRIES   3
/* The validator's context, the same fields in the old and new headers. */
#define JDOMDIFF_CTX(ctx, create, vias, cat) do {           \
        memset(&(ctx), 0, sizeof(ctx));                     \
        (ctx).max_products = JDOMDIFF_MAX_PRODUCTS;         \
        (ctx).is_create = (create);                         \
        (ctx).payment_vias = (vias);                        \
        (ctx).catalog = (cat);                              \
        (ctx).max_countries = JDOMDIFF_MAX_COUNTRIES;       \
    } while (0)
#define JDOMDIFF_NOT_OBJECT      "400 INVALID_REQUEST the body must be a JSON object"

static inline const char *jdomdiff_refusal(apr_pool_t *p, const char *why, apr_size_t off)
{
    return apr_psprintf(p, "400 INVALID_REQUEST %s at %lu", why, (unsigned long)off);
}

static inline const char *jdomdiff_verdict(apr_pool_t *p, int rc, int status, int unchecked,
                                           const char *answer, apr_size_t len)
{
    return apr_psprintf(p, "rc %d status %d unchecked %d: %.*s", rc, status, unchecked,
                        (int)len, answer ? answer : "");
}

const char *jdomdiff_old(apr_pool_t *p, const char *body, apr_size_t blen, int is_create,
                         json_object *vias, json_object *(*catalog)(void *, const char *));

#endif
