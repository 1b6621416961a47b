/* SPDX-License-Identifier: Apache-2.0 */
#include "cr_problem.h"
#include "cr_json.h"

json_object *cr_problem_more(const char *field, const char *reason)
{
    json_object *o = json_object_new_object();
    if (field) {
        json_object_object_add(o, "field", json_object_new_string(field));
    }
    if (reason) {
        json_object_object_add(o, "reason", json_object_new_string(reason));
    }
    return o;
}

const char *cr_problem_body(apr_pool_t *p, int status, const char *detail,
                            json_object *more, const char *error, apr_size_t *len)
{
    json_object *o = cr_json_own(p, json_object_new_object());

    json_object_object_add(o, "status", json_object_new_int(status));
    json_object_object_add(o, "detail", json_object_new_string(detail));
    /* Always present, so storefront code can read moreDetails.x blindly. */
    json_object_object_add(o, "moreDetails", more ? more : json_object_new_object());
    if (error) {
        json_object_object_add(o, "error", json_object_new_string(error));
    }
    return cr_json_str(p, o, len);
}
