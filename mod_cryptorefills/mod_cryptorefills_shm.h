/* SPDX-License-Identifier: Apache-2.0 */
/* The shared counters segment: server-wide counters (atomics, no lock), the
 * stream caps' slots, and the mod_status hook that prints them. */
#ifndef MOD_CRYPTOREFILLS_SHM_H
#define MOD_CRYPTOREFILLS_SHM_H

#include "httpd.h"
#include "apr_atomic.h"

#include "cr_route.h"

/* The suspended relay's counters (mod_cryptorefills_async.c).  Atomics, no lock. */
typedef struct cr_async_stats_t {
    volatile apr_uint32_t streams_open;          /* suspended streams now */
    volatile apr_uint32_t streams_total;         /* streams handed to a loop */
    volatile apr_uint32_t browsers_dropped_slow; /* over the buffer cap or the write wait */
    volatile apr_uint32_t browsers_gone;         /* seen by the loop (EPOLLRDHUP) or a write */
} cr_async_stats_t;

typedef struct cr_stats_t {
    volatile apr_uint32_t cache_hits;
    volatile apr_uint32_t cache_misses;
    volatile apr_uint32_t cache_stale;
    volatile apr_uint32_t cache_refreshes;
    volatile apr_uint32_t cache_waits;
    volatile apr_uint32_t cache_store_failures;
    volatile apr_uint32_t cache_not_modified;
    volatile apr_uint32_t upstream_requests;
    volatile apr_uint32_t upstream_connects;
    volatile apr_uint32_t upstream_err_connect;
    volatile apr_uint32_t upstream_err_timeout;
    volatile apr_uint32_t upstream_err_5xx;
    volatile apr_uint32_t upstream_err_4xx;
    volatile apr_uint32_t upstream_err_invalid;
    volatile apr_uint32_t local_rejections;
    volatile apr_uint32_t validations_catalog_skipped;  /* countries not checked locally */
    volatile apr_uint32_t idem_replays;
    volatile apr_uint32_t idem_conflicts;
    volatile apr_uint32_t idem_unavailable;  /* keyed orders refused: store down or full */
    volatile apr_uint32_t idem_unprotected;  /* unkeyed orders sent while it was */
    volatile apr_uint32_t streams_open;
    volatile apr_uint32_t streams_total;
    volatile apr_uint32_t streams_rejected;
    volatile apr_uint32_t stream_events;
    volatile apr_uint32_t stream_events_dropped;
    volatile apr_uint32_t stream_heartbeats;
    volatile apr_uint32_t max_streams;       /* effective server-wide cap */
    cr_async_stats_t async;                  /* the suspended relay's counters */
    /* Upstream errors by route and class (the classes of the five
     * upstream_err_* counters above, in their order). */
#define CR_ERR_CLASSES 5
    volatile apr_uint32_t upstream_err_route[CR_ROUTE_MAX][CR_ERR_CLASSES];
    /* Records the module stored in the cache, and their bytes (id + data):
     * what the module itself knows of the store's use. */
    volatile apr_uint32_t cache_stores;
    volatile apr_uint32_t cache_stored_bytes;
    /* Catalog entries stored, counted once their meta record is in (a
     * reader that sees the count move finds the entry): what voids the
     * children's "no catalog cached" notes (copies.c). */
    volatile apr_uint32_t catalog_stores;
    /* Filled by the idempotency store when it keeps its own count of the
     * records it holds (idem_entries_known set to 1); the metrics handler
     * shows the gauges only then. */
    volatile apr_uint32_t idem_entries_known;
    volatile apr_uint32_t idem_entries;
    volatile apr_uint32_t idem_bytes;
    /* Open streams per client address, by hash slot (a collision makes
     * two clients share a budget: conservative, never over the cap). */
#define CR_CLIENT_SLOTS 4096
    volatile apr_uint32_t client_streams[CR_CLIENT_SLOTS];
} cr_stats_t;

/* NULL until post_config's second pass made the segment. */
extern cr_stats_t *cr_stats;
#define CR_COUNT(field) do { if (cr_stats) apr_atomic_inc32(&cr_stats->field); } while (0)
/* Counter by offset into cr_stats_t (for tables of counters). */
#define CR_COUNT_AT(off) do { if (cr_stats) apr_atomic_inc32(                 \
        (volatile apr_uint32_t *)(void *)((char *)cr_stats + (off))); } while (0)

/* post_config (second pass): the segment, owned by pconf, and the
 * server-wide stream cap: CryptorefillsMaxStreams, else suspended_cap (the
 * suspended relay's default, 0 when streams pin a worker), else half the
 * workers. */
int cr_shm_post_config(apr_pool_t *pconf, server_rec *s, apr_uint32_t suspended_cap);
void cr_shm_register_hooks(void);

/* Take a stream slot (server-wide and per client address) until r ends:
 * 0 taken, 1 server-wide cap reached, 2 per-client cap reached. */
int cr_shm_stream_slot(request_rec *r, int per_client);
/* Give back the stream slots of processes that are gone (a child killed
 * by SIGKILL or a crash runs no cleanup); done before any refusal and by
 * the status page and metrics.  Returns how many came back. */
int cr_shm_heal_streams(void);

#endif
