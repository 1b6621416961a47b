/* The order validator (cr_validate) reading the document the strict
 * scanner builds (cr_jscan_parse), as POST orders/validations and POST
 * orders run it: a real catalog is loaded (fuzz_catalogs.h).
 * Each body is validated in both shapes, against indexed and plain copies
 * of the catalogs, which must give the same answer; the answer's body is
 * built and must be JSON. */
#include "fuzz_common.h"
#include "cr_jscan.h"
#include "cr_json.h"
#include "cr_validate.h"
#include "fuzz_catalogs.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return fuzz_catalogs_init();
}

static const char *answer(apr_pool_t *p, const cr_jdoc *body, int is_create, int indexed,
                          int with_vias, cr_validate_result *res)
{
    cr_validate_ctx ctx;
    const char *out;
    apr_size_t len = 0;

    memset(&ctx, 0, sizeof(ctx));
    ctx.max_products = 5;
    ctx.is_create = is_create;
    ctx.payment_vias = with_vias ? vias : NULL;
    ctx.catalog = indexed ? catalog_indexed : catalog_plain;
    cr_validate_order(p, body, &ctx, res);
    out = cr_validate_response(p, res, is_create, &len);
    FUZZ_ASSERT((res->rc == CR_VALID) == (out == NULL), "rc %d, answer %p", res->rc, (void *)out);
    if (out) {
        FUZZ_ASSERT(cr_jscan_check(out, len, NULL, NULL) == NULL, "answer is not strict JSON: %s", out);
    }
    return out ? out : "";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    cr_jscan_limits lim = { 32, 8192, 1000, 0 };
    cr_jdoc doc, *body = &doc;
    cr_validate_result a, b;
    int is_create;
    apr_size_t off = 0;
    const char *why = cr_jscan_parse(p, (const char *)data, size, &lim, &off, &doc);

    /* The document and the plain check agree on every text. */
    FUZZ_ASSERT(!why == !cr_jscan_check((const char *)data, size, &lim, NULL),
                "cr_jscan_parse says %s, cr_jscan_check does not", why ? why : "ok");
    if (why || doc.tok[0].type != CR_JOBJECT) {
        apr_pool_clear(p);
        return 0;
    }
    FUZZ_ASSERT(doc.ntok > 0 && doc.tok[0].next == doc.ntok, "root spans %u of %u tokens",
                doc.tok[0].next, doc.ntok);
    FUZZ_ASSERT(doc.ntok <= size / 2 + 1, "%u tokens in %zu bytes", doc.ntok, size);
    for (is_create = 0; is_create <= 1; is_create++) {
        const char *x = answer(p, body, is_create, 0, 1, &a);
        const char *y = answer(p, body, is_create, 1, 1, &b);
        FUZZ_ASSERT(a.rc == b.rc && strcmp(x, y) == 0,
                    "indexed catalog answers differently:\n%s\n%s", x, y);
        (void)answer(p, body, is_create, 1, 0, &a);
    }
    apr_pool_clear(p);
    return 0;
}
