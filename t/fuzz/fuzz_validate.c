/* The order validator (cr_validate) behind the strict scanner, as POST
 * orders/validations and POST orders run it: a real catalog is loaded (the
 * sandbox's brands for a few countries and its payment methods, written by
 * scripts/fuzz into $CR_FUZZ_DATA as brands-CC.json and payment_vias.json).
 * Each body is validated in both shapes, against indexed and plain copies
 * of the catalogs, which must give the same answer; the answer's body is
 * built and must be JSON. */
#include <string.h>
#include <dirent.h>

#include "fuzz_common.h"
#include "cr_jscan.h"
#include "cr_json.h"
#include "cr_validate.h"

#define MAX_CATS 16

typedef struct {
    char cc[3];
    json_object *plain, *indexed;
} cat_t;

static cat_t cats[MAX_CATS];
static int ncats;
static json_object *vias;

static json_object *load(const char *dir, const char *name)
{
    char path[4096];
    FILE *f;
    long n;
    char *buf;
    json_object *o = NULL;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (!(f = fopen(path, "rb")) || fseek(f, 0, SEEK_END) || (n = ftell(f)) <= 0
        || fseek(f, 0, SEEK_SET) || !(buf = malloc((size_t)n))) {
        fprintf(stderr, "fuzz_validate: cannot read %s\n", path);
        exit(2);
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n
        || cr_json_parse_unowned(buf, (apr_size_t)n, CR_JSON_MAX_DEPTH, &o)) {
        fprintf(stderr, "fuzz_validate: %s is not JSON\n", path);
        exit(2);
    }
    free(buf);
    fclose(f);
    return o;
}

/* The catalogs live for the whole run; release them at exit so that the
 * leak check sees only what a run leaked (the brand index's own pool is
 * not visible to it otherwise). */
static void drop_catalogs(void)
{
    int i;
    for (i = 0; i < ncats; i++) {
        json_object_put(cats[i].plain);
        json_object_put(cats[i].indexed);
    }
    json_object_put(vias);
    ncats = 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("CR_FUZZ_DATA");
    DIR *d;
    struct dirent *e;

    (void)argc;
    (void)argv;
    fuzz_pool();
    if (!dir || !(d = opendir(dir))) {
        fprintf(stderr, "fuzz_validate: set CR_FUZZ_DATA to the catalog directory (scripts/fuzz does)\n");
        exit(2);
    }
    while ((e = readdir(d)) && ncats < MAX_CATS) {
        if (strncmp(e->d_name, "brands-", 7) == 0 && strlen(e->d_name) == 14) {
            memcpy(cats[ncats].cc, e->d_name + 7, 2);
            cats[ncats].plain = load(dir, e->d_name);
            cats[ncats].indexed = load(dir, e->d_name);
            if (!cr_validate_index_catalog(cats[ncats].indexed)) {
                fprintf(stderr, "fuzz_validate: %s not indexed\n", e->d_name);
                exit(2);
            }
            ncats++;
        }
    }
    closedir(d);
    vias = load(dir, "payment_vias.json");
    atexit(drop_catalogs);
    if (!ncats) {
        fprintf(stderr, "fuzz_validate: no brands-CC.json in %s\n", dir);
        exit(2);
    }
    return 0;
}

static json_object *catalog(void *baton, const char *cc, int indexed)
{
    int i;
    (void)baton;
    for (i = 0; cc && i < ncats; i++) {
        if (strcmp(cats[i].cc, cc) == 0) {
            return indexed ? cats[i].indexed : cats[i].plain;
        }
    }
    return NULL;
}

static json_object *catalog_plain(void *baton, const char *cc)
{
    return catalog(baton, cc, 0);
}

static json_object *catalog_indexed(void *baton, const char *cc)
{
    return catalog(baton, cc, 1);
}

static const char *answer(apr_pool_t *p, json_object *body, int is_create, int indexed,
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
    json_object *body = NULL;
    cr_validate_result a, b;
    int is_create;

    if (cr_jscan_check((const char *)data, size, &lim, NULL)
        || cr_json_parse(p, (const char *)data, size, lim.max_depth + 1, &body)
        || !json_object_is_type(body, json_type_object)) {
        apr_pool_clear(p);
        return 0;
    }
    for (is_create = 0; is_create <= 1; is_create++) {
        const char *x = answer(p, body, is_create, 0, 1, &a);
        const char *y = answer(p, body, is_create, 1, 1, &b);
        FUZZ_ASSERT(a.rc == b.rc && strcmp(x, y) == 0,
                    "indexed catalog answers differently:\n%s\n%s", x, y);
        (void)answer(p, body, is_create, 1, 0, &a);
    }
    (void)cr_validate_canonical(p, body, NULL);
    apr_pool_clear(p);
    return 0;
}
