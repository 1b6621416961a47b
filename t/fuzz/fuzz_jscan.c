/* The strict JSON scanner (cr_jscan) and the json-c parse wrapper
 * (cr_json), as a request body meets them: the scanner with the orders
 * route's limits, then, when it passes, cr_json_parse.  Differential
 * checks: a body the strict scanner accepts must parse with json-c (the
 * module relies on it), and cr_jscan_is_json must accept whatever the
 * strict check accepts. */
#include <string.h>

#include "fuzz_common.h"
#include "cr_jscan.h"
#include "cr_json.h"

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
        }
    }
    else {
        /* The wrapper alone must not crash on anything, either. */
        (void)cr_json_parse(p, buf, size, CR_JSON_MAX_DEPTH, &obj);
    }
    (void)cr_jscan_is_json(buf, size);
    apr_pool_clear(p);
    return 0;
}
