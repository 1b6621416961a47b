/* SPDX-License-Identifier: Apache-2.0 */
/* The shared counters segment, in anonymous shared memory created in
 * post_config's second pass and owned by pconf (children inherit the
 * mapping); the stream caps' slots; the mod_status hook. */
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>

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

/* One entry per open stream, after the counters in the same segment: the
 * process that holds it and its client slot.  A child killed by SIGKILL or
 * a crash runs no pool cleanup; its entries name a process that is gone,
 * and the next request that would be refused (or a status page) gives
 * their slots back.  As many entries as the server-wide cap, so a stream
 * admitted under the cap always finds one. */
typedef struct stream_entry {
    volatile apr_uint32_t pid;      /* 0: free */
    apr_uint32_t client;            /* index into client_streams */
} stream_entry;
static stream_entry *entries;
static apr_uint32_t n_entries;

/* Half the workers: the other half keeps serving catalogs and orders. */
static apr_uint32_t stream_cap_default(void)
{
    int daemons = 1, threads = 1;
    apr_uint32_t cap;
    ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
    ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons);
    cap = (apr_uint32_t)((daemons > 0 ? daemons : 1) * (threads > 0 ? threads : 1) / 2);
    return cap < 1 ? 1 : cap;
}

int cr_shm_post_config(apr_pool_t *pconf, server_rec *s, apr_uint32_t suspended_cap)
{
    cr_srv_conf *sc = cr_srv_conf_get(s);
    apr_shm_t *shm;
    apr_status_t rv;

    apr_size_t head = APR_ALIGN_DEFAULT(sizeof(cr_stats_t));
    /* Suspended streams hold no worker: under the event MPM the default cap
     * is what the suspended relay can hold (mod_cryptorefills_async.c: the
     * MPM's accept limit, descriptors, memory); else half the workers. */
    apr_uint32_t cap = sc->max_streams != CR_UNSET_INT ? (apr_uint32_t)sc->max_streams
                       : suspended_cap ? suspended_cap : stream_cap_default();

    rv = apr_shm_create(&shm, head + (apr_size_t)cap * sizeof(stream_entry), NULL, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, CRLOGNO(01201)
                     "cannot create shared memory for counters");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    cr_stats = apr_shm_baseaddr_get(shm);
    memset((void *)cr_stats, 0, head + (apr_size_t)cap * sizeof(stream_entry));
    cr_stats->max_streams = cap;
    entries = (stream_entry *)(void *)((char *)cr_stats + head);
    n_entries = cap;
    return OK;
}

/* ---- stream slots --------------------------------------------------------------- */

/* Free entry e and give its slots back (the entry first: entries in use
 * never outnumber streams_open, so an admitted stream finds a free one). */
static void entry_free(stream_entry *e, apr_uint32_t pid)
{
    apr_uint32_t client = e->client;
    if (apr_atomic_cas32(&e->pid, 0, pid) == pid) {
        apr_atomic_dec32(&cr_stats->client_streams[client]);
        apr_atomic_dec32(&cr_stats->streams_open);
    }
}

static apr_status_t release_slot(void *data)
{
    stream_entry *e = data;
    entry_free(e, (apr_uint32_t)getpid());
    return APR_SUCCESS;
}

/* Give back the slots of processes that are gone (killed, crashed): their
 * pool cleanups never ran.  kill(pid, 0) fails with ESRCH only for a pid
 * no process has; EPERM (another user's process took the pid) counts as
 * alive, which can only keep a slot, never free a live stream's.  Returns
 * how many slots came back. */
int cr_shm_heal_streams(void)
{
    struct { apr_uint32_t pid; int gone; } seen[32];    /* one kill() per process */
    apr_uint32_t i, pid;
    int n_seen = 0, j, gone, healed = 0;

    for (i = 0; entries && i < n_entries; i++) {
        pid = apr_atomic_read32(&entries[i].pid);
        if (!pid) {
            continue;
        }
        for (j = 0; j < n_seen && seen[j].pid != pid; j++) {
        }
        if (j < n_seen) {
            gone = seen[j].gone;
        }
        else {
            gone = kill((pid_t)pid, 0) != 0 && errno == ESRCH;
            if (n_seen < (int)(sizeof(seen) / sizeof(seen[0]))) {
                seen[n_seen].pid = pid;
                seen[n_seen++].gone = gone;
            }
        }
        if (gone) {
            entry_free(&entries[i], pid);
            healed++;
        }
    }
    return healed;
}

static int try_slot(volatile apr_uint32_t *slot, int per_client)
{
    apr_uint32_t max = apr_atomic_read32(&cr_stats->max_streams);
    if (apr_atomic_inc32(&cr_stats->streams_open) >= max) {
        apr_atomic_dec32(&cr_stats->streams_open);
        return 1;
    }
    if (apr_atomic_inc32(slot) >= (apr_uint32_t)per_client) {
        apr_atomic_dec32(slot);
        apr_atomic_dec32(&cr_stats->streams_open);
        return 2;
    }
    return 0;
}

int cr_shm_stream_slot(request_rec *r, int per_client)
{
    const char *ip = r->useragent_ip ? r->useragent_ip : "";
    apr_uint32_t client, pid = (apr_uint32_t)getpid(), i, tries;
    int rc;

    if (!cr_stats || !entries) {
        return 0;
    }
    client = (apr_uint32_t)(cr_hash64(ip, strlen(ip)) % CR_CLIENT_SLOTS);
    rc = try_slot(&cr_stats->client_streams[client], per_client);
    if (rc && cr_shm_heal_streams() > 0) {
        /* A refusal is never for slots of a process that is gone. */
        rc = try_slot(&cr_stats->client_streams[client], per_client);
    }
    if (rc) {
        return rc;
    }
    /* There is a free entry (entries in use < streams_open <= cap); the
     * bound only guards against a broken invariant. */
    for (i = 0, tries = 0; apr_atomic_read32(&entries[i].pid)
         || apr_atomic_cas32(&entries[i].pid, pid, 0); i = (i + 1) % n_entries) {
        if (++tries > 4 * n_entries) {
            apr_atomic_dec32(&cr_stats->client_streams[client]);
            apr_atomic_dec32(&cr_stats->streams_open);
            return 1;
        }
    }
    entries[i].client = client;
    apr_pool_cleanup_register(r->pool, &entries[i], release_slot, apr_pool_cleanup_null);
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
        ROW(idem_conflicts), ROW(idem_unavailable), ROW(idem_unprotected), ROW(streams_open), ROW(streams_total), ROW(streams_rejected),
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
    cr_shm_heal_streams();      /* streams_open counts live processes' streams */
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
