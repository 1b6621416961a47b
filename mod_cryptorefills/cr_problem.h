/* SPDX-License-Identifier: Apache-2.0 */
/* Error bodies in the upstream's own shapes, so storefront code needs one
 * error path whether an answer came from the module or from the upstream. */
#ifndef CR_PROBLEM_H
#define CR_PROBLEM_H

#include <apr_pools.h>
#include <json-c/json.h>

/* {"status": N, "detail": "CODE", "moreDetails": {...}}; more may be NULL
 * (then moreDetails is {}) and is consumed (its reference is taken).
 * error, when non-NULL, adds "error": "..." (the stream route's message). */
const char *cr_problem_body(apr_pool_t *p, int status, const char *detail,
                            json_object *more, const char *error, apr_size_t *len);

/* A moreDetails object {"field": f, "reason": r} (either may be NULL),
 * not owned: pass it to cr_problem_body, which takes it. */
json_object *cr_problem_more(const char *field, const char *reason);

#endif
