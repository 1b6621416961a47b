/* SPDX-License-Identifier: Apache-2.0 */
/* This process's side of the catalog cache (cr_ptable): its copies of the
 * variants it served, the last good entry of each name (served stale when
 * the shared store has lost it and the upstream fails), the parsed catalogs
 * the validator reads, and their mod_status lines.  The shared store is
 * mod_cryptorefills_socache.c; mod_cryptorefills_catalog.c decides what
 * to serve. */
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_protocol.h"
#include "apr_strings.h"
#include "mod_status.h"
#include "apr_optional_hooks.h"

#include "mod_cryptorefills_int.h"
#include "cr_json.h"
#include "cr_validate.h"
#include "cr_ptable.h"

/* Each process keeps the variants it served last, per name and version, so
 * a hit copies 64 bytes of meta out of the shared cache instead of the
 * whole catalog: the cross-process mutex is then held for a moment, not
 * for a 170 KB copy (which serialised all children under load).  Memory is
 * bounded per process; a copy in use by a request lives until that request
 * ends. */
#define CR_LOCAL_COPIES_MAX (32 * 1024 * 1024)
static cr_ptable *local_copies;

/* Each process also keeps the last parsed copy of each catalog it validated
 * against, keyed by name and version, so a checkout costs a lookup instead
 * of parsing a few hundred KB of JSON.  The validator only reads catalogs,
 * so threads share a copy.  A json-c tree takes several times its text's
 * size (objects, hash tables, strings, the brand index): it is counted as
 * CR_PARSED_COST times the text, and the table holds at most
 * CR_PARSED_CATALOGS_MAX of that per process, least recently used out
 * first (a copy in use by a request lives until that request ends). */
#define CR_PARSED_CATALOGS_MAX (32 * 1024 * 1024)
#define CR_PARSED_COST 8
static cr_ptable *parsed_catalogs;

/* Names the shared store had no usable catalog for, per process: checking
 * again costs the store's lock (shmcb: one mutex for every process), and
 * an order validated while no catalog is cached would take it twice per
 * request, every request (bench/proxy: 100 threads on one lock).  A miss
 * is believed for the same second a parsed copy is, and only while the
 * server's catalog store counter (catalog_stores, shared memory) has not
 * moved: a catalog stored by any child of this server is seen at once
 * (order records and leases do not move it).  Values are
 * empty markers; info.version is the counter at the miss. */
#define CR_MISSING_MAX (64 * 1024)
static cr_ptable *missing_catalogs;

static void free_json(void *obj)
{
    json_object_put(obj);
}

void cr_copies_child_init(apr_pool_t *pchild)
{
    /* Without them every request goes to the shared store: slower, correct. */
    if (cr_ptable_create(&local_copies, pchild, CR_LOCAL_COPIES_MAX, free) != APR_SUCCESS) {
        local_copies = NULL;
    }
    if (cr_ptable_create(&parsed_catalogs, pchild, CR_PARSED_CATALOGS_MAX, free_json)
        != APR_SUCCESS) {
        parsed_catalogs = NULL;
    }
    if (cr_ptable_create(&missing_catalogs, pchild, CR_MISSING_MAX, free) != APR_SUCCESS) {
        missing_catalogs = NULL;
    }
}

/* Each process also remembers, per name, the meta of the last entry it
 * served a variant of (key NAME#m in local_copies, so under the same byte
 * budget and LRU): when the shared store has lost the entry (a Redis
 * restarted without persistence, an evicting memcached) or cannot be
 * reached, and the upstream fails at that moment, the copies of that entry
 * this process still holds are served stale within the same window as a
 * shared stale copy.  The value is a read-only cr_record_meta; info.stamp
 * is when this process last saw a refresh fail while relying on it (its
 * own back-off: one upstream try per CR_REFRESH_BACKOFF). */
#define CR_LAST_GOOD_SUFFIX "#m"

static void remember_last_good(request_rec *r, const char *name, const cr_record_meta *m)
{
    const char *key = apr_pstrcat(r->pool, name, CR_LAST_GOOD_SUFFIX, NULL);
    const cr_record_meta *old;
    cr_record_meta *copy;
    cr_ptable_info info;

    old = cr_ptable_get(local_copies, key, NULL, r->pool, NULL);
    if (old && old->version == m->version && old->fetched >= m->fetched) {
        return;
    }
    if (!(copy = malloc(sizeof(*copy)))) {
        return;
    }
    *copy = *m;
    memset(&info, 0, sizeof(info));
    info.version = m->version;
    info.size = sizeof(*copy);
    cr_ptable_put(local_copies, key, copy, &info, NULL);
}

int cr_copies_last_good(request_rec *r, const char *name, int gz_ok, cr_record_meta *m,
                        apr_time_t *failed_at)
{
    cr_ptable_info info;
    const cr_record_meta *lg = local_copies
        ? cr_ptable_get(local_copies, apr_pstrcat(r->pool, name, CR_LAST_GOOD_SUFFIX, NULL),
                        NULL, r->pool, &info)
        : NULL;
    if (!lg
        || (!cr_ptable_get(local_copies, apr_pstrcat(r->pool, name, "#b", NULL), &lg->version,
                           r->pool, NULL)
            && !(lg->gz_len && gz_ok
                 && cr_ptable_get(local_copies, apr_pstrcat(r->pool, name, "#z", NULL),
                                  &lg->version, r->pool, NULL)))) {
        return 0;
    }
    *m = *lg;
    *failed_at = info.stamp;
    return 1;
}

void cr_copies_last_good_failed(request_rec *r, const char *name, const cr_record_meta *m)
{
    cr_ptable_restamp(local_copies, apr_pstrcat(r->pool, name, CR_LAST_GOOD_SUFFIX, NULL),
                      m->version, apr_time_now(), 0);
}

void cr_copies_keep(request_rec *r, const char *name, const cr_record_meta *m, int gz,
                    const char *bytes, apr_size_t len)
{
    cr_ptable_info info;
    char *copy;

    if (local_copies && len <= CR_LOCAL_COPIES_MAX / 4 && (copy = malloc(len ? len : 1))) {
        memset(&info, 0, sizeof(info));
        info.version = m->version;
        info.size = len;
        memcpy(copy, bytes, len);
        if (cr_ptable_put(local_copies, apr_pstrcat(r->pool, name, gz ? "#z" : "#b", NULL),
                          copy, &info, NULL)) {
            remember_last_good(r, name, m);
        }
    }
}

const char *cr_copies_variant(request_rec *r, const char *name, const cr_record_meta *m,
                              int gz, int local_only, apr_size_t *len)
{
    apr_size_t want = (gz ? m->gz_len : m->body_len) + CR_RECORD_VHDR_LEN, n;
    const char *key = apr_pstrcat(r->pool, name, gz ? "#z" : "#b", NULL);
    cr_ptable_info info;
    const char *local = local_copies ? cr_ptable_get(local_copies, key, &m->version, r->pool,
                                                     &info) : NULL;
    unsigned char *buf;

    if (local) {
        *len = info.size;
        if (!local_only) {
            remember_last_good(r, name, m);
        }
        return local;
    }
    if (local_only) {
        return NULL;
    }
    buf = apr_palloc(r->pool, want);
    if (!cr_socache_get(r, gz ? CR_CID_GZIP : CR_CID_BODY, name, buf, want, &n)
        || n != want || !cr_record_vhdr_check(buf, n, m->version)) {
        return NULL;
    }
    *len = n - CR_RECORD_VHDR_LEN;
    cr_copies_keep(r, name, m, gz, (const char *)buf + CR_RECORD_VHDR_LEN, *len);
    return (const char *)buf + CR_RECORD_VHDR_LEN;
}


/* ---- parsed catalogs for the validator ------------------------------------------------ */

/* A parsed copy confirmed against the shared cache this recently is used
 * without asking again: a checkout then takes no cross-process lock at all
 * for its catalog and payment methods.  Catalogs stay fresh for minutes. */
#define CR_PARSED_RECHECK apr_time_from_msec(1000)

json_object *cr_copies_parsed_recent(request_rec *r, const char *name, int *stale)
{
    cr_ptable_info info;
    json_object *obj;

    if (parsed_catalogs) {
        obj = cr_ptable_get(parsed_catalogs, name, NULL, r->pool, &info);
        if (obj && apr_time_now() - info.stamp < CR_PARSED_RECHECK) {
            *stale = info.flag;
            return obj;
        }
    }
    return NULL;
}

static apr_uint64_t stores_now(void)
{
    return cr_stats ? apr_atomic_read32(&cr_stats->catalog_stores) : 0;
}

int cr_copies_missing_recent(request_rec *r, const char *name, apr_uint64_t *gen)
{
    cr_ptable_info info;

    *gen = stores_now();
    return cr_stats && missing_catalogs
        && cr_ptable_get(missing_catalogs, name, gen, r->pool, &info)
        && apr_time_now() - info.stamp < CR_PARSED_RECHECK;
}

void cr_copies_note_missing(request_rec *r, const char *name, apr_uint64_t gen)
{
    cr_ptable_info info;
    char *marker;

    if (!cr_stats || !missing_catalogs || !(marker = malloc(1))) {
        return;
    }
    memset(&info, 0, sizeof(info));
    info.version = gen;
    info.stamp = apr_time_now();
    info.size = strlen(name) + 64;
    cr_ptable_put(missing_catalogs, name, marker, &info, r->pool);
}

json_object *cr_copies_parsed(request_rec *r, const char *name, const cr_record_meta *m,
                              int stale, cr_route_id route)
{
    cr_ptable_info info;
    const char *body;
    apr_size_t len = 0;
    json_object *obj;

    if (parsed_catalogs) {
        obj = cr_ptable_get(parsed_catalogs, name, &m->version, r->pool, NULL);
        if (obj) {
            cr_ptable_restamp(parsed_catalogs, name, m->version, apr_time_now(), stale);
            return obj;
        }
    }
    body = cr_copies_variant(r, name, m, 0, 0, &len);
    if (!body || cr_json_parse_unowned(body, len, CR_JSON_MAX_DEPTH, &obj)) {
        return NULL;
    }
    if (route == CR_ROUTE_BRANDS) {
        /* Before it is shared: readers only read. */
        cr_validate_index_catalog(obj);
    }
    if (!parsed_catalogs) {
        return cr_json_own(r->pool, obj);
    }
    memset(&info, 0, sizeof(info));
    info.version = m->version;
    info.size = len * CR_PARSED_COST;
    info.stamp = apr_time_now();
    info.flag = stale;
    cr_ptable_put(parsed_catalogs, name, obj, &info, r->pool);
    return obj;
}

/* ---- mod_status: this process's copies ------------------------------------------------ */

static void table_status(request_rec *r, int flags, const char *what, cr_ptable *t)
{
    apr_size_t n, bytes = 0, max = 0;
    apr_uint64_t ev = 0;
    if (!t) {
        return;
    }
    n = cr_ptable_stats(t, &bytes, &max, &ev);
    if (flags & AP_STATUS_SHORT) {
        ap_rprintf(r, "Cryptorefills%s_entries: %" APR_SIZE_T_FMT "\n"
                   "Cryptorefills%s_bytes: %" APR_SIZE_T_FMT "\n"
                   "Cryptorefills%s_max_bytes: %" APR_SIZE_T_FMT "\n"
                   "Cryptorefills%s_evictions: %" APR_UINT64_T_FMT "\n",
                   what, n, what, bytes, what, max, what, ev);
        return;
    }
    ap_rprintf(r, "<tr><th>%s (process %" APR_PID_T_FMT ")</th><td>%" APR_SIZE_T_FMT
               " entries, %" APR_SIZE_T_FMT " of %" APR_SIZE_T_FMT " bytes, %"
               APR_UINT64_T_FMT " evictions</td></tr>\n", what, getpid(), n, bytes, max, ev);
}

static int status_hook(request_rec *r, int flags)
{
    if (!(flags & AP_STATUS_SHORT)) {
        ap_rputs("<table>\n", r);
    }
    table_status(r, flags, "parsed_catalogs", parsed_catalogs);
    table_status(r, flags, "local_copies", local_copies);
    if (!(flags & AP_STATUS_SHORT)) {
        ap_rputs("</table>\n", r);
    }
    return OK;
}

void cr_copies_register_hooks(void)
{
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, NULL, NULL, APR_HOOK_LAST);
}
