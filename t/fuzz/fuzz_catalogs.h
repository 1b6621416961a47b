/* The validator's context for the harnesses that run it (fuzz_validate,
 * fuzz_jdomdiff): the sandbox's brands for a few countries and its payment
 * methods, written by scripts/fuzz into $CR_FUZZ_DATA as brands-CC.json and
 * payment_vias.json, each loaded twice (plain, and with the brand index).
 * Include after fuzz_common.h, cr_json.h and cr_validate.h. */
#ifndef CR_FUZZ_CATALOGS_H
#define CR_FUZZ_CATALOGS_H

#include <string.h>
#include <dirent.h>

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
        fprintf(stderr, "fuzz: cannot read %s\n", path);
        exit(2);
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n
        || cr_json_parse_unowned(buf, (apr_size_t)n, CR_JSON_MAX_DEPTH, &o)) {
        fprintf(stderr, "fuzz: %s is not JSON\n", path);
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

static int fuzz_catalogs_init(void)
{
    const char *dir = getenv("CR_FUZZ_DATA");
    DIR *d;
    struct dirent *e;

    fuzz_pool();
    if (!dir || !(d = opendir(dir))) {
        fprintf(stderr, "fuzz: set CR_FUZZ_DATA to the catalog directory (scripts/fuzz does)\n");
        exit(2);
    }
    while ((e = readdir(d)) && ncats < MAX_CATS) {
        if (strncmp(e->d_name, "brands-", 7) == 0 && strlen(e->d_name) == 14) {
            memcpy(cats[ncats].cc, e->d_name + 7, 2);
            cats[ncats].plain = load(dir, e->d_name);
            cats[ncats].indexed = load(dir, e->d_name);
            if (!cr_validate_index_catalog(cats[ncats].indexed)) {
                fprintf(stderr, "fuzz: %s not indexed\n", e->d_name);
                exit(2);
            }
            ncats++;
        }
    }
    closedir(d);
    vias = load(dir, "payment_vias.json");
    atexit(drop_catalogs);
    if (!ncats) {
        fprintf(stderr, "fuzz: no brands-CC.json in %s\n", dir);
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

#endif
