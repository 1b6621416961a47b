/* SPDX-License-Identifier: Apache-2.0 */
/* Directives, the per-directory and per-server records, and the effective
 * configuration of a request: every default applied in one place
 * (cr_conf_get), so the rest of the glue reads plain values. */
#ifndef MOD_CRYPTOREFILLS_CONFIG_H
#define MOD_CRYPTOREFILLS_CONFIG_H

#include "httpd.h"
#include "http_config.h"
#include "ap_socache.h"

#include "mod_cryptorefills.h"

#define CR_DEFAULT_UPSTREAM "https://api.cryptorefills.com"

/* Per-directory configuration as written.  The server-level settings live
 * in the server's lookup defaults, so one merge covers server, vhost and
 * <Location>/<Directory>.  Every member has an unset value. */
#define CR_UNSET_INT   (-1)
#define CR_UNSET_TIME  ((apr_interval_time_t)-1)

/* The members a directive sets, shared by the record as written and the
 * effective values. */
#define CR_CONF_MEMBERS                                                          \
    const char *base;               /* the <Location> path (routes are below it) */ \
    const char *upstream;           /* base URL, no trailing slash */          \
    const char *partner_id;                                                    \
    const char *partner_tag;        /* derived: 8 hex digits of its hash, for cache names */ \
    const char *partner_line;       /* derived: its upstream header line */     \
    const char *app_version;                                                   \
    const char *version_line;       /* derived: its upstream header line */     \
    const char *default_country;                                               \
    const char *country_env;                                                   \
    apr_interval_time_t connect_timeout;                                       \
    apr_interval_time_t timeout;                                               \
    apr_off_t max_body;                                                        \
    apr_interval_time_t cache_ttl;                                             \
    apr_interval_time_t cache_stale;                                           \
    int max_products;                                                          \
    apr_interval_time_t heartbeat;                                             \
    apr_interval_time_t idem_window;                                           \
    int max_streams_per_client;                                                \
    apr_interval_time_t stream_lifetime;                                       \
    apr_interval_time_t stream_stall;                                          \
    const char *ca_file;            /* PEM CAs for an https upstream; NULL: system store */ \
    const char *proxy;              /* as written: NULL unset, "" none; effective: NULL direct */

typedef struct cr_dir_conf {
    CR_CONF_MEMBERS
    int country_env_set;            /* "none" unsets an inherited one */
} cr_dir_conf;

/* The effective values for a request: nothing unset but partner_id,
 * app_version (required: checked at start-up and by the handler),
 * country_env (optional) and base. */
typedef struct cr_conf {
    CR_CONF_MEMBERS
    /* Derived: the longest one upstream exchange may take (connect + whole
     * exchange + slack), which bounds refresh leases and order claims. */
    apr_interval_time_t exchange_hold;
} cr_conf;

typedef struct cr_srv_conf {
    const char *cache_spec;         /* "PROVIDER[:ARGS]" as written, or NULL */
    const ap_socache_provider_t *cache_provider;
    const char *cache_args;
    int max_streams;                /* CR_UNSET_INT: sized from the MPM */
    const char *idem_spec;          /* CryptorefillsIdempotencyStore as written, or NULL */
    apr_array_header_t *bases;      /* <Location> paths that set the handler */
} cr_srv_conf;

extern const command_rec cr_cmds[];
void *cr_create_dir_conf(apr_pool_t *p, char *dir);
void *cr_merge_dir_conf(apr_pool_t *p, void *basev, void *addv);
void *cr_create_srv_conf(apr_pool_t *p, server_rec *s);
void *cr_merge_srv_conf(apr_pool_t *p, void *basev, void *addv);

/* The request's effective configuration, resolved once per request. */
const cr_conf *cr_conf_get(request_rec *r);
cr_srv_conf *cr_srv_conf_get(server_rec *s);

/* The name of the first required directive without a value (partner id,
 * app version), or NULL when both are set. */
const char *cr_config_missing(const char *partner_id, const char *app_version);

#endif
