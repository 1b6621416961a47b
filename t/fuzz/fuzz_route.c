/* Route and query parsing (cr_route), as the handler calls it: the input
 * is "METHOD\npath\nquery" (missing parts are NULL / empty).  A route that
 * parses must build an upstream path that is plain printable ASCII with
 * no space, and whose query has only allow-listed, re-encoded parameters;
 * order ids and URL encoding are checked against their definitions. */
#include <string.h>

#include "fuzz_common.h"
#include "cr_route.h"

static int url_safe(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7F || c == '#' || c == '"' || c == '<' || c == '>' || c == '\\') {
            return 0;
        }
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    char *all = apr_pstrmemdup(p, (const char *)data, size);
    char *method = all, *rel, *args = NULL, *nl;
    cr_route_req rr;
    const char *up, *enc;
    apr_size_t k;

    if ((nl = strchr(method, '\n'))) {
        *nl = '\0';
        rel = nl + 1;
        if ((nl = strchr(rel, '\n'))) {
            *nl = '\0';
            args = nl + 1;
        }
    }
    else {
        rel = method;
        method = "GET";
    }
    memset(&rr, 0, sizeof(rr));
    cr_route_parse(p, rel, method, args, &rr);
    if (rr.status == 0) {
        FUZZ_ASSERT(rr.def != NULL, "no route and no error");
        /* HEAD is served by a GET route, except a stream */
        FUZZ_ASSERT(strcmp(rr.def->method, method) == 0
                    || (strcmp(method, "HEAD") == 0 && strcmp(rr.def->method, "GET") == 0
                        && !(rr.def->flags & CR_RF_STREAM)),
                    "method %s served by %s", method, rr.def->method);
        if (rr.path_param && rr.def->id != CR_ROUTE_PRODUCTS && rr.def->id != CR_ROUTE_PRICE) {
            FUZZ_ASSERT(strlen(rr.path_param) <= 64, "long path parameter");
        }
        if (!(rr.def->flags & CR_RF_LOCAL)) {
            up = cr_route_upstream_path(p, &rr, rr.country ? rr.country : "US");
            FUZZ_ASSERT(up && up[0] == '/', "upstream path %s", up ? up : "(null)");
            FUZZ_ASSERT(url_safe(up), "unsafe upstream path: %s", up);
        }
    }
    else {
        FUZZ_ASSERT(rr.status >= 400 && rr.status < 500, "status %d", rr.status);
        FUZZ_ASSERT(rr.detail != NULL, "error without detail");
    }
    /* An order id is [A-Za-z0-9_-]{1,64}. */
    {
        int ok = size >= 1 && size <= 64 && strlen(all) == size;
        for (k = 0; ok && k < size; k++) {
            char c = all[k];
            ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                 || c == '_' || c == '-';
        }
        memcpy(all, data, size);   /* undo the splitting */
        FUZZ_ASSERT(cr_order_id_ok(all) == ok || strlen(all) != size, "cr_order_id_ok disagrees");
    }
    enc = cr_url_encode(p, all);
    FUZZ_ASSERT(enc && url_safe(enc) && !strchr(enc, '&') && !strchr(enc, '=') && !strchr(enc, '?'),
                "cr_url_encode left %s", enc ? enc : "(null)");
    apr_pool_clear(p);
    return 0;
}
