/* SPDX-License-Identifier: Apache-2.0 */
/* The shared counters segment, in anonymous shared memory created in
 * post_config's second pass and owned by pconf (children inherit the
 * mapping); the stream caps' slots; the mod_status hook. */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "ap_mpm.h"
#include "mod_status.h"
#include "apr_shm.h"
#include "apr_strings.h"
#include "apr_optional_hooks.h"

#include "mod_cryptorefills.h"
#include "mod_cryptorefills_config.h"
#include "mod_cryptorefills_shm.h"
#include "mod_cryptorefills_int.h"
#include "cr_record.h"

cr_stats_t *cr_stats;

int cr_shm_post_config(apr_pool_t *pconf, server_rec *s, apr_uint32_t suspended_cap)
{
    cr_srv_conf *sc = cr_srv_conf_get(s);
    apr_shm_t *shm;
    apr_status_t rv;

    rv = apr_shm_create(&shm, sizeof(cr_stats_t), NULL, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, CRLOGNO(01201)
                     "cannot create shared memory for counters");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    cr_stats = apr_shm_baseaddr_get(shm);
    memset((void *)cr_stats, 0, sizeof(cr_stats_t));
    if (sc->max_streams != CR_UNSET_INT) {
        cr_stats->max_streams = (apr_uint32_t)sc->max_streams;
    }
    else if (suspended_cap) {
        /* Suspended streams hold no worker: the MPM's accept limit and the
         * descriptors bound them (mod_cryptorefills_async.c). */
        cr_stats->max_streams = suspended_cap;
    }
    else {
        /* Half the workers: the other half keeps serving catalogs and orders. */
        int daemons = 1, threads = 1;
        ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &daemons);
        ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
        ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons);
        cr_stats->max_streams = (apr_uint32_t)((daemons > 0 ? daemons : 1)
                                               * (threads > 0 ? threads : 1) / 2);
        if (cr_stats->max_streams < 1) {
            cr_stats->max_streams = 1;
        }
    }
    return OK;
}

/* ---- stream slots --------------------------------------------------------------- */

typedef struct slot_t {
    volatile apr_uint32_t *client;
} slot_t;

static apr_status_t release_slot(void *data)
{
    slot_t *sl = data;
    apr_atomic_dec32(&cr_stats->streams_open);
    apr_atomic_dec32(sl->client);
    return APR_SUCCESS;
}

int cr_shm_stream_slot(request_rec *r, int per_client)
{
    apr_uint32_t max;
    const char *ip = r->useragent_ip ? r->useragent_ip : "";
    volatile apr_uint32_t *slot;
    slot_t *sl;

    if (!cr_stats) {
        return 0;
    }
    max = apr_atomic_read32(&cr_stats->max_streams);
    slot = &cr_stats->client_streams[cr_hash64(ip, strlen(ip)) % CR_CLIENT_SLOTS];
    if (apr_atomic_inc32(&cr_stats->streams_open) >= max) {
        apr_atomic_dec32(&cr_stats->streams_open);
        return 1;
    }
    if (apr_atomic_inc32(slot) >= (apr_uint32_t)per_client) {
        apr_atomic_dec32(slot);
        apr_atomic_dec32(&cr_stats->streams_open);
        return 2;
    }
    sl = apr_palloc(r->pool, sizeof(*sl));
    sl->client = slot;
    apr_pool_cleanup_register(r->pool, sl, release_slot, apr_pool_cleanup_null);
    return 0;
}

/* ---- mod_status ------------------------------------------------------------------------ */

static int status_hook(request_rec *r, int flags)
{
    static const struct { const char *name; apr_size_t off; } rows[] = {
#define ROW(f) { #f, APR_OFFSETOF(cr_stats_t, f) }
        ROW(cache_hits), ROW(cache_misses), ROW(cache_stale), ROW(cache_refreshes),
        ROW(cache_waits), ROW(cache_store_failures), ROW(cache_not_modified),
        ROW(upstream_requests), ROW(upstream_connects), ROW(upstream_err_connect),
        ROW(upstream_err_timeout), ROW(upstream_err_5xx), ROW(upstream_err_4xx),
        ROW(upstream_err_invalid), ROW(local_rejections), ROW(validations_catalog_skipped),
        ROW(idem_replays),
        ROW(idem_conflicts), ROW(streams_open), ROW(streams_total), ROW(streams_rejected),
        ROW(stream_events), ROW(stream_events_dropped), ROW(stream_heartbeats),
        { "streams_open_suspended", APR_OFFSETOF(cr_stats_t, async.streams_open) },
        { "streams_suspended_total", APR_OFFSETOF(cr_stats_t, async.streams_total) },
        { "browsers_dropped_slow", APR_OFFSETOF(cr_stats_t, async.browsers_dropped_slow) },
        { "browsers_gone_suspended", APR_OFFSETOF(cr_stats_t, async.browsers_gone) },
#undef ROW
    };
    apr_size_t i;

    if (!cr_stats) {
        return OK;
    }
    if (flags & AP_STATUS_SHORT) {
        for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
            ap_rprintf(r, "Cryptorefills%s: %u\n", rows[i].name,
                       apr_atomic_read32((volatile apr_uint32_t *)((char *)cr_stats + rows[i].off)));
        }
        return OK;
    }
    ap_rputs("<hr />\n<h2>mod_cryptorefills</h2>\n<table>\n", r);
    ap_rprintf(r, "<tr><th>cache</th><td>%s</td></tr>\n",
               ap_escape_html(r->pool, cr_socache_desc()));
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        ap_rprintf(r, "<tr><th>%s</th><td>%u</td></tr>\n", rows[i].name,
                   apr_atomic_read32((volatile apr_uint32_t *)((char *)cr_stats + rows[i].off)));
    }
    ap_rputs("</table>\n", r);
    cr_socache_status(r, flags);
    return OK;
}

void cr_shm_register_hooks(void)
{
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}
