/* Differential harness: the order routes' local checks through the new
 * reader (cr_jscan_parse's document, read by cr_validate) against the old
 * path (a json-c tree, jdomdiff_old.c), on the same bodies, catalogs and
 * payment methods (fuzz_catalogs.h), in both shapes, with and without the
 * payment methods and the brand index.  Every answer must be the same
 * text: refusal reason and offset, problems, fields, messages, order.
 * Built by scripts/fuzz only as `scripts/fuzz jdomdiff` (it needs the old
 * sources from git: CR_FUZZ_OLD_REV). */
#include "fuzz_common.h"
#include "cr_jscan.h"
#include "cr_json.h"
#include "cr_validate.h"
#include "fuzz_catalogs.h"
#include "jdomdiff.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return fuzz_catalogs_init();
}

static const char *jdomdiff_new(apr_pool_t *p, const char *body, apr_size_t blen, int is_create,
                                json_object *v, json_object *(*catalog)(void *, const char *))
{
    cr_jscan_limits lim = JDOMDIFF_LIMITS;
    cr_jdoc doc;
    apr_size_t off = 0, rlen = 0;
    cr_validate_ctx ctx;
    cr_validate_result res;
    const char *why, *answer;

    /* As mod_cryptorefills_orders.c runs it. */
    why = cr_jscan_parse(p, body, blen, &lim, &off, &doc);
    if (why) {
        return jdomdiff_refusal(p, why, off);
    }
    if (doc.tok[0].type != CR_JOBJECT) {
        return JDOMDIFF_NOT_OBJECT;
    }
    JDOMDIFF_CTX(ctx, is_create, v, catalog);
    cr_validate_order(p, &doc, &ctx, &res);
    answer = cr_validate_response(p, &res, is_create, &rlen);
    return jdomdiff_verdict(p, res.rc, res.status, res.countries_unchecked, answer, rlen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    const char *body = (const char *)data;
    int is_create, k;

    for (is_create = 0; is_create <= 1; is_create++) {
        for (k = 0; k < 3; k++) {
            json_object *v = k == 2 ? NULL : vias;
            json_object *(*cat)(void *, const char *) = k == 1 ? catalog_indexed : catalog_plain;
            const char *o = jdomdiff_old(p, body, size, is_create, v, cat);
            const char *n = jdomdiff_new(p, body, size, is_create, v, cat);
            FUZZ_ASSERT(strcmp(o, n) == 0, "answers differ (create %d, case %d):\nold %s\nnew %s",
                        is_create, k, o, n);
        }
    }
    apr_pool_clear(p);
    return 0;
}
