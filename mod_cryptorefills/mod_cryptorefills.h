/* mod_cryptorefills: the httpd layer's shared declarations. */
#ifndef MOD_CRYPTOREFILLS_H
#define MOD_CRYPTOREFILLS_H

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "ap_socache.h"
#include "apr_global_mutex.h"
#include "apr_shm.h"
#include "apr_atomic.h"

#include "cr_upstream.h"
#include "mod_cryptorefills_async.h"

#define CR_MODULE_VERSION "0.1.0"
#define CR_HANDLER "cryptorefills"
#define CR_DEFAULT_UPSTREAM "https://api.cryptorefills.com"

/* Log tags in the module's own namespace (AH numbers belong to httpd). */
#define CRLOGNO(n) "CR" #n ": "

#ifndef CR_MODULE_MAIN   /* AP_DECLARE_MODULE says it in mod_cryptorefills.c */
APLOG_USE_MODULE(cryptorefills);
#endif
extern module AP_MODULE_DECLARE_DATA cryptorefills_module;

/* Per-directory configuration.  The server-level settings live in the
 * server's lookup defaults, so one merge covers server, vhost and
 * <Location>/<Directory>.  Every member has an unset value. */
#define CR_UNSET_INT   (-1)
#define CR_UNSET_TIME  ((apr_interval_time_t)-1)

typedef struct cr_dir_conf {
    const char *base;               /* the <Location> path (routes are below it) */
    const char *upstream;           /* base URL, no trailing slash */
    const char *partner_id;
    const char *app_version;
    const char *default_country;
    const char *country_env;
    int country_env_set;            /* "none" unsets an inherited one */
    apr_interval_time_t connect_timeout;
    apr_interval_time_t timeout;
    apr_off_t max_body;
    apr_interval_time_t cache_ttl;
    apr_interval_time_t cache_stale;
    int max_products;
    apr_interval_time_t heartbeat;
    apr_interval_time_t idem_window;
    int max_streams_per_client;
    apr_interval_time_t stream_lifetime;
    apr_interval_time_t stream_stall;
} cr_dir_conf;

typedef struct cr_srv_conf {
    const char *cache_spec;         /* "PROVIDER[:ARGS]" as written, or NULL */
    const ap_socache_provider_t *cache_provider;
    const char *cache_args;
    int max_streams;                /* CR_UNSET_INT: sized from the MPM */
    apr_array_header_t *bases;      /* <Location> paths that set the handler */
} cr_srv_conf;

/* Defaults (contract). */
#define CR_DEF_COUNTRY          "US"
#define CR_DEF_CONNECT_TIMEOUT  apr_time_from_sec(3)
#define CR_DEF_TIMEOUT          apr_time_from_sec(15)
#define CR_DEF_MAX_BODY         65536
#define CR_DEF_CACHE_TTL        apr_time_from_sec(300)
#define CR_DEF_CACHE_STALE      apr_time_from_sec(86400)
#define CR_DEF_MAX_PRODUCTS     10
#define CR_DEF_HEARTBEAT        apr_time_from_sec(15)
#define CR_DEF_IDEM_WINDOW      apr_time_from_sec(86400)
#define CR_DEF_STREAMS_PER_CLIENT 8
#define CR_DEF_STREAM_LIFETIME  apr_time_from_sec(1800)
#define CR_DEF_STREAM_STALL     apr_time_from_sec(120)

/* Effective values with defaults applied. */
#define CR_CONF_TIME(c, m, d)   ((c)->m == CR_UNSET_TIME ? (d) : (c)->m)
#define CR_CONF_INT(c, m, d)    ((c)->m == CR_UNSET_INT ? (d) : (c)->m)

/* mod_cryptorefills_config.c */
extern const command_rec cr_cmds[];
void *cr_create_dir_conf(apr_pool_t *p, char *dir);
void *cr_merge_dir_conf(apr_pool_t *p, void *basev, void *addv);
void *cr_create_srv_conf(apr_pool_t *p, server_rec *s);
void *cr_merge_srv_conf(apr_pool_t *p, void *basev, void *addv);
int cr_check_handler_config(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s);

/* mod_cryptorefills.c: per-process state. */
typedef struct cr_process_t {
    cr_upstream_pool *upstream;     /* created in child_init */
    const char *user_agent;
} cr_process_t;
extern cr_process_t cr_proc;

/* mod_cryptorefills_handler.c */
int cr_handler(request_rec *r);

/* Server-wide counters in shared memory (atomics: no lock). */
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
    volatile apr_uint32_t idem_replays;
    volatile apr_uint32_t idem_conflicts;
    volatile apr_uint32_t streams_open;
    volatile apr_uint32_t streams_total;
    volatile apr_uint32_t streams_rejected;
    volatile apr_uint32_t stream_events;
    volatile apr_uint32_t stream_events_dropped;
    volatile apr_uint32_t stream_heartbeats;
    volatile apr_uint32_t max_streams;       /* effective server-wide cap */
    cr_async_stats_t async;                  /* the suspended relay's counters */
    /* Open streams per client address, by hash slot (a collision makes
     * two clients share a budget: conservative, never over the cap). */
#define CR_CLIENT_SLOTS 4096
    volatile apr_uint32_t client_streams[CR_CLIENT_SLOTS];
} cr_stats_t;

/* mod_cryptorefills_cache.c: shared state and its lifecycle. */
#define CR_MUTEX_TYPE "cryptorefills-cache"
extern cr_stats_t *cr_stats;
int cr_cache_pre_config(apr_pool_t *pconf);
int cr_cache_post_config(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s);
void cr_cache_child_init(apr_pool_t *pchild, server_rec *s);
void cr_cache_register_hooks(void);
#define CR_COUNT(field) do { if (cr_stats) apr_atomic_inc32(&cr_stats->field); } while (0)

#endif
