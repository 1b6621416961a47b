/* SPDX-License-Identifier: Apache-2.0 */
/* The metrics handler (`SetHandler cryptorefills-metrics`): every counter
 * of the mod_status hook in the Prometheus text exposition format 0.0.4,
 * counters as cryptorefills_*_total, gauges without the suffix; upstream
 * errors by class and route (a fixed set); open streams by mode.  It shows
 * no partner id and no upstream URL.  GET and HEAD only. */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"

#include "mod_cryptorefills_int.h"
#include "cr_route.h"

#define CR_METRICS_HANDLER "cryptorefills-metrics"
#define CR_METRICS_CTYPE "text/plain; version=0.0.4; charset=utf-8"

#define AT(off) apr_atomic_read32((volatile apr_uint32_t *)(void *)((char *)cr_stats + (off)))

typedef struct metric_t {
    const char *name;       /* after "cryptorefills_" */
    apr_size_t off;         /* in cr_stats_t */
    int gauge;
    const char *help;
} metric_t;

#define C(n, f, h) { n, APR_OFFSETOF(cr_stats_t, f), 0, h }
#define G(n, f, h) { n, APR_OFFSETOF(cr_stats_t, f), 1, h }
static const metric_t metrics[] = {
    C("cache_hits", cache_hits, "Catalog answers served fresh from the cache."),
    C("cache_misses", cache_misses, "Catalog answers fetched from the upstream."),
    C("cache_stale", cache_stale, "Catalog answers served stale while a refresh ran or failed."),
    C("cache_refreshes", cache_refreshes, "Catalog refreshes run."),
    C("cache_waits", cache_waits, "Requests that waited for another request's refresh."),
    C("cache_store_failures", cache_store_failures, "Catalogs the cache refused to store."),
    C("cache_not_modified", cache_not_modified, "Catalog requests answered 304 Not Modified."),
    C("cache_stores", cache_stores, "Records the module stored in the cache (catalogs, leases, order records)."),
    C("cache_stored_bytes", cache_stored_bytes, "Bytes (id and data) of the records the module stored in the cache."),
    C("upstream_requests", upstream_requests, "Requests sent to the upstream."),
    C("upstream_connects", upstream_connects, "New connections opened to the upstream."),
    C("local_rejections", local_rejections, "Orders and validations refused locally, without an upstream call."),
    C("idem_replays", idem_replays, "Order creations answered from the idempotency store."),
    C("idem_conflicts", idem_conflicts, "Order creations refused as conflicting with a stored key."),
    C("idem_unavailable", idem_unavailable, "Orders with an Idempotency-Key refused 503: the idempotency store could not answer or was full."),
    C("idem_unprotected", idem_unprotected, "Orders without an Idempotency-Key sent without double-click protection: the idempotency store could not answer."),
    C("streams", streams_total, "Order streams opened."),
    C("streams_rejected", streams_rejected, "Order streams refused by the stream caps."),
    C("stream_events", stream_events, "Events relayed on order streams."),
    C("stream_events_dropped", stream_events_dropped, "Upstream events dropped (malformed or too large)."),
    C("stream_heartbeats", stream_heartbeats, "Heartbeat comments sent on order streams."),
    G("max_streams", max_streams, "Server-wide cap on open order streams."),
    C("streams_suspended", async.streams_total, "Order streams handed to the suspended relay."),
    C("browsers_dropped_slow", async.browsers_dropped_slow, "Browsers of suspended streams dropped for not taking their events in time."),
    C("browsers_gone_suspended", async.browsers_gone, "Browsers that left a suspended stream."),
};
#undef C
#undef G

/* The classes of the upstream_err_* counters, in their order. */
static const char *const err_classes[CR_ERR_CLASSES] = {
    "connect", "timeout", "5xx", "4xx", "invalid"
};

static void head(request_rec *r, const char *name, const char *type, const char *help)
{
    ap_rprintf(r, "# HELP cryptorefills_%s %s\n# TYPE cryptorefills_%s %s\n", name, help, name, type);
}

static void upstream_errors(request_rec *r)
{
    int route, cls;
    head(r, "upstream_errors_total", "counter",
         "Upstream exchanges that failed, by class (connect, timeout, 5xx, 4xx, invalid) and route.");
    for (route = CR_ROUTE_NONE + 1; route < CR_ROUTE_MAX; route++) {
        const cr_route_def *def = cr_route_def_get((cr_route_id)route);
        if (!def || (def->flags & CR_RF_LOCAL)) {
            continue;
        }
        for (cls = 0; cls < CR_ERR_CLASSES; cls++) {
            ap_rprintf(r, "cryptorefills_upstream_errors_total{class=\"%s\",route=\"%s\"} %u\n",
                       err_classes[cls], def->name,
                       apr_atomic_read32(&cr_stats->upstream_err_route[route][cls]));
        }
    }
}

int cr_metrics_handler(request_rec *r)
{
    apr_size_t i;
    apr_int64_t size;
    apr_uint32_t open_all, open_susp;

    if (!r->handler || strcmp(r->handler, CR_METRICS_HANDLER)) {
        return DECLINED;
    }
    if (r->method_number != M_GET) {        /* HEAD is M_GET with header_only */
        ap_allow_methods(r, REPLACE_ALLOW, "GET", NULL);   /* Allow: HEAD,GET,TRACE */
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if (!cr_stats) {
        return HTTP_SERVICE_UNAVAILABLE;
    }
    ap_set_content_type(r, CR_METRICS_CTYPE);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (r->header_only) {
        return OK;
    }
    for (i = 0; i < sizeof(metrics) / sizeof(metrics[0]); i++) {
        const metric_t *m = &metrics[i];
        const char *name = m->gauge ? m->name : apr_pstrcat(r->pool, m->name, "_total", NULL);
        head(r, name, m->gauge ? "gauge" : "counter", m->help);
        ap_rprintf(r, "cryptorefills_%s %u\n", name, AT(m->off));
    }
    upstream_errors(r);

    cr_shm_heal_streams();
    /* A suspended stream holds a stream slot too: streams_open counts both. */
    open_all = apr_atomic_read32(&cr_stats->streams_open);
    open_susp = apr_atomic_read32(&cr_stats->async.streams_open);
    head(r, "streams_open", "gauge", "Order streams open now, by mode (blocking: one worker "
         "per stream; suspended: no worker while idle, event MPM).");
    ap_rprintf(r, "cryptorefills_streams_open{mode=\"blocking\"} %u\n",
               open_all > open_susp ? open_all - open_susp : 0);
    ap_rprintf(r, "cryptorefills_streams_open{mode=\"suspended\"} %u\n", open_susp);

    size = cr_socache_shm_size();
    if (size > 0) {
        head(r, "cache_size_bytes", "gauge", "Size of the shmcb cache segment.");
        ap_rprintf(r, "cryptorefills_cache_size_bytes %" APR_INT64_T_FMT "\n", size);
    }
    cr_idem_fill_gauges();
    if (apr_atomic_read32(&cr_stats->idem_entries_known)) {
        head(r, "idem_entries", "gauge", "Records in the idempotency store.");
        ap_rprintf(r, "cryptorefills_idem_entries %u\n", apr_atomic_read32(&cr_stats->idem_entries));
        head(r, "idem_bytes", "gauge", "Bytes of the records in the idempotency store.");
        ap_rprintf(r, "cryptorefills_idem_bytes %u\n", apr_atomic_read32(&cr_stats->idem_bytes));
    }
    return OK;
}
