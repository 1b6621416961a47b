/* The order body's old path, for the differential harness fuzz_jdomdiff.c:
 * cr_jscan_check, then a json-c tree (cr_json_parse), then the validator as
 * it read that tree.  scripts/fuzz compiles this file and cr_validate.c as
 * of CR_FUZZ_OLD_REV (the last revision with the json-c reader) against
 * that revision's cr_validate.h, with the validator's symbols renamed old_*
 * so that both validators link into one binary.  Not part of the module. */
#include <string.h>

#include "cr_jscan.h"
#include "cr_json.h"
#include "cr_validate.h"
#include "jdomdiff.h"

const char *jdomdiff_old(apr_pool_t *p, const char *body, apr_size_t blen, int is_create,
                         json_object *vias, json_object *(*catalog)(void *, const char *))
{
    cr_jscan_limits lim = JDOMDIFF_LIMITS;
    json_object *obj = NULL;
    apr_size_t off = 0, rlen = 0;
    cr_validate_ctx ctx;
    cr_validate_result res;
    const char *why, *answer;

    /* As mod_cryptorefills_orders.c ran it. */
    why = cr_jscan_check(body, blen, &lim, &off);
    if (!why) {
        apr_size_t i = 0;
        while (i < blen && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r'
                            || body[i] == '\n')) {
            i++;
        }
        if (i < blen && body[i] != '{') {
            return JDOMDIFF_NOT_OBJECT;
        }
        why = cr_json_parse(p, body, blen, lim.max_depth + 1, &obj);
    }
    if (why) {
        return jdomdiff_refusal(p, why, off);
    }
    if (!json_object_is_type(obj, json_type_object)) {
        return JDOMDIFF_NOT_OBJECT;
    }
    JDOMDIFF_CTX(ctx, is_create, vias, catalog);
    cr_validate_order(p, obj, &ctx, &res);
    answer = cr_validate_response(p, &res, is_create, &rlen);
    return jdomdiff_verdict(p, res.rc, res.status, res.countries_unchecked, answer, rlen);
}
