/* SPDX-License-Identifier: Apache-2.0 */
/* Directives: each value is parsed and checked when the config is read, so
 * `apachectl -t` names the directive that can't be used. */
#include <string.h>
#include <stdlib.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "apr_strings.h"
#include "apr_uri.h"
#include "ap_provider.h"

#include "mod_cryptorefills_config.h"
#include "cr_countries.h"
#include "cr_idstore.h"
#include "cr_record.h"
#include "cr_route.h"
#include "cr_upstream.h"

/* Defaults (contract): applied in cr_conf_get alone. */
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
/* A lease or claim outlives the slowest exchange by this much. */
#define CR_HOLD_SLACK           apr_time_from_sec(5)

void *cr_create_dir_conf(apr_pool_t *p, char *dir)
{
    cr_dir_conf *c = apr_pcalloc(p, sizeof(*c));
    c->base = dir ? apr_pstrdup(p, dir) : NULL;
    c->connect_timeout = CR_UNSET_TIME;
    c->timeout = CR_UNSET_TIME;
    c->max_body = -1;
    c->cache_ttl = CR_UNSET_TIME;
    c->cache_stale = CR_UNSET_TIME;
    c->max_products = CR_UNSET_INT;
    c->heartbeat = CR_UNSET_TIME;
    c->idem_window = CR_UNSET_TIME;
    c->max_streams_per_client = CR_UNSET_INT;
    c->stream_lifetime = CR_UNSET_TIME;
    c->stream_stall = CR_UNSET_TIME;
    return c;
}

#define MERGE_PTR(m)  c->m = add->m ? add->m : base->m
#define MERGE_VAL(m, unset)  c->m = add->m != (unset) ? add->m : base->m

void *cr_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    cr_dir_conf *base = basev, *add = addv;
    cr_dir_conf *c = apr_pcalloc(p, sizeof(*c));

    MERGE_PTR(base);
    MERGE_PTR(upstream);
    MERGE_PTR(partner_id);
    c->partner_tag = add->partner_id ? add->partner_tag : base->partner_tag;
    c->partner_line = add->partner_id ? add->partner_line : base->partner_line;
    MERGE_PTR(app_version);
    c->version_line = add->app_version ? add->version_line : base->version_line;
    MERGE_PTR(default_country);
    MERGE_PTR(ca_file);
    MERGE_PTR(proxy);
    if (add->country_env_set) {
        c->country_env = add->country_env;
        c->country_env_set = 1;
    }
    else {
        c->country_env = base->country_env;
        c->country_env_set = base->country_env_set;
    }
    MERGE_VAL(connect_timeout, CR_UNSET_TIME);
    MERGE_VAL(timeout, CR_UNSET_TIME);
    MERGE_VAL(max_body, -1);
    MERGE_VAL(cache_ttl, CR_UNSET_TIME);
    MERGE_VAL(cache_stale, CR_UNSET_TIME);
    MERGE_VAL(max_products, CR_UNSET_INT);
    MERGE_VAL(heartbeat, CR_UNSET_TIME);
    MERGE_VAL(idem_window, CR_UNSET_TIME);
    MERGE_VAL(max_streams_per_client, CR_UNSET_INT);
    MERGE_VAL(stream_lifetime, CR_UNSET_TIME);
    MERGE_VAL(stream_stall, CR_UNSET_TIME);
    return c;
}

void *cr_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    cr_srv_conf *c = apr_pcalloc(p, sizeof(*c));
    (void)s;
    c->max_streams = CR_UNSET_INT;
    return c;
}

void *cr_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    cr_srv_conf *base = basev, *add = addv;
    cr_srv_conf *c = apr_pcalloc(p, sizeof(*c));
    /* The cache and the stream cap are server-wide: a vhost shares them. */
    *c = *base;
    c->bases = add->bases;
    return c;
}

/* ---- value parsers ------------------------------------------------------ */

/* "3", "0.5", "1.25": seconds with up to 6 decimals (cr_seconds_parse). */
static const char *parse_seconds(cmd_parms *cmd, const char *arg, apr_interval_time_t min,
                                 apr_interval_time_t max, apr_interval_time_t *out)
{
    if (!cr_seconds_parse(arg, out)) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a number of seconds", cmd->cmd->name,
                            arg);
    }
    if (*out < min || *out > max) {
        return apr_psprintf(cmd->pool, "%s: '%s' is out of range (%s to %s seconds)",
                            cmd->cmd->name, arg, cr_seconds_fmt(cmd->pool, min),
                            cr_seconds_fmt(cmd->pool, max));
    }
    return NULL;
}

static const char *parse_count(cmd_parms *cmd, const char *arg, apr_int64_t min,
                               apr_int64_t max, apr_int64_t *out)
{
    char *end;
    apr_int64_t v;
    if (!*arg || strspn(arg, "0123456789") != strlen(arg) || strlen(arg) > 15) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a whole number", cmd->cmd->name, arg);
    }
    v = apr_strtoi64(arg, &end, 10);
    if (v < min || v > max) {
        return apr_psprintf(cmd->pool, "%s: '%s' is out of range (%" APR_INT64_T_FMT
                            " to %" APR_INT64_T_FMT ")", cmd->cmd->name, arg, min, max);
    }
    *out = v;
    return NULL;
}

/* A header value: non-empty, no control characters, and not a ${VAR} that
 * httpd left unexpanded because the variable is undefined. */
static const char *header_value(cmd_parms *cmd, const char *arg)
{
    if (!*arg) {
        return apr_psprintf(cmd->pool, "%s: the value is empty", cmd->cmd->name);
    }
    if (cr_has_ctl(arg, 0)) {
        return apr_psprintf(cmd->pool, "%s: the value contains a control character (CR/LF?)",
                            cmd->cmd->name);
    }
    if (strstr(arg, "${")) {
        return apr_psprintf(cmd->pool, "%s: '%s' names an undefined variable (Define it or "
                            "export it in the environment, e.g. /etc/apache2/envvars)",
                            cmd->cmd->name, arg);
    }
    if (strlen(arg) > 256) {
        return apr_psprintf(cmd->pool, "%s: the value is longer than 256 characters",
                            cmd->cmd->name);
    }
    return NULL;
}

/* ---- setters --------------------------------------------------------------- */

static const char *set_upstream(cmd_parms *cmd, void *dc, const char *arg)
{
    cr_dir_conf *c = dc;
    apr_uri_t u;
    char *url;
    apr_size_t n;

    if (apr_uri_parse(cmd->pool, arg, &u) != APR_SUCCESS || !u.scheme || !u.hostname
        || !*u.hostname) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not an absolute URL", cmd->cmd->name, arg);
    }
    if (strcasecmp(u.scheme, "http") && strcasecmp(u.scheme, "https")) {
        return apr_psprintf(cmd->pool, "%s: '%s': only http and https are allowed",
                            cmd->cmd->name, arg);
    }
    if (u.user || u.password || u.query || u.fragment || cr_has_ctl(arg, 0) || strchr(arg, ' ')) {
        return apr_psprintf(cmd->pool, "%s: '%s': no credentials, query, fragment or spaces "
                            "(a trailing path is a prefix)", cmd->cmd->name, arg);
    }
    if (u.path && (strstr(u.path, "/../") || strstr(u.path, "/./") || strstr(u.path, "//")
                   || (strlen(u.path) >= 3 && !strcmp(u.path + strlen(u.path) - 3, "/.."))
                   || (strlen(u.path) >= 2 && !strcmp(u.path + strlen(u.path) - 2, "/.")))) {
        return apr_psprintf(cmd->pool, "%s: '%s': the path must be a plain prefix",
                            cmd->cmd->name, arg);
    }
    url = apr_pstrdup(cmd->pool, arg);
    n = strlen(url);
    while (n > 0 && url[n - 1] == '/') {
        url[--n] = '\0';
    }
    c->upstream = url;
    return NULL;
}

static const char *set_ca_file(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *path = ap_server_root_relative(cmd->pool, arg);
    const char *err;

    if (!path) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a valid path", cmd->cmd->name, arg);
    }
    /* Checked now, so `apachectl -t` names the directive rather than every
     * upstream call failing its handshake later. */
    err = cr_upstream_ca_check(cmd->temp_pool, path);
    if (err) {
        return apr_psprintf(cmd->pool, "%s: %s", cmd->cmd->name, err);
    }
    ((cr_dir_conf *)dc)->ca_file = path;
    return NULL;
}

static const char *set_proxy(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err;

    if (!strcasecmp(arg, "none")) {
        ((cr_dir_conf *)dc)->proxy = "";   /* set, and overrides an inherited proxy */
        return NULL;
    }
    err = cr_upstream_proxy_check(cmd->temp_pool, arg);
    if (err) {
        return apr_psprintf(cmd->pool, "%s: %s", cmd->cmd->name, err);
    }
    ((cr_dir_conf *)dc)->proxy = arg;
    return NULL;
}

static const char *set_partner_id(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = header_value(cmd, arg);
    if (err) {
        return err;
    }
    ((cr_dir_conf *)dc)->partner_id = arg;
    /* 8 hex digits of the id's hash, for cache entry names: two partners
     * never share an entry, and no name shows the id (a network cache's
     * names can be listed). */
    ((cr_dir_conf *)dc)->partner_tag = apr_psprintf(cmd->pool, "%08x",
        (unsigned)(cr_hash64(arg, strlen(arg)) & 0xFFFFFFFFu));
    ((cr_dir_conf *)dc)->partner_line = apr_pstrcat(cmd->pool, "X-Cr-Application: ", arg, NULL);
    return NULL;
}

static const char *set_app_version(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = header_value(cmd, arg);
    if (err) {
        return err;
    }
    ((cr_dir_conf *)dc)->app_version = arg;
    ((cr_dir_conf *)dc)->version_line = apr_pstrcat(cmd->pool, "X-Cr-Version: ", arg, NULL);
    return NULL;
}

static const char *set_default_country(cmd_parms *cmd, void *dc, const char *arg)
{
    char *cc = apr_pstrdup(cmd->pool, arg);
    ap_str_toupper(cc);
    if (!cr_country_valid(cc, strlen(cc))) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not one of the %d supported country codes",
                            cmd->cmd->name, arg, cr_country_count());
    }
    ((cr_dir_conf *)dc)->default_country = cc;
    return NULL;
}

static const char *set_country_env(cmd_parms *cmd, void *dc, const char *arg)
{
    cr_dir_conf *c = dc;
    if (!strcasecmp(arg, "none")) {
        c->country_env = NULL;
    }
    else if (!*arg || cr_has_ctl(arg, 0) || strpbrk(arg, " \t=")) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not an environment variable name",
                            cmd->cmd->name, arg);
    }
    else {
        c->country_env = arg;
    }
    c->country_env_set = 1;
    return NULL;
}

#define TIME_SETTER(fn, member, min, max)                                       \
static const char *fn(cmd_parms *cmd, void *dc, const char *arg)               \
{                                                                              \
    return parse_seconds(cmd, arg, (min), (max), &((cr_dir_conf *)dc)->member); \
}

TIME_SETTER(set_connect_timeout, connect_timeout, 1000, apr_time_from_sec(300))
TIME_SETTER(set_timeout, timeout, 1000, apr_time_from_sec(3600))
TIME_SETTER(set_cache_ttl, cache_ttl, apr_time_from_sec(1), apr_time_from_sec(86400 * 7))
TIME_SETTER(set_cache_stale, cache_stale, 0, apr_time_from_sec(86400 * 30))
TIME_SETTER(set_heartbeat, heartbeat, apr_time_from_sec(1), apr_time_from_sec(3600))
/* memcache and redis keep whole seconds and refuse expiries under 2 s. */
TIME_SETTER(set_idem_window, idem_window, apr_time_from_sec(2), apr_time_from_sec(86400 * 30))
TIME_SETTER(set_stream_lifetime, stream_lifetime, apr_time_from_sec(1), apr_time_from_sec(86400))
TIME_SETTER(set_stream_stall, stream_stall, apr_time_from_sec(1), apr_time_from_sec(86400))

static const char *set_max_body(cmd_parms *cmd, void *dc, const char *arg)
{
    apr_int64_t v;
    const char *err = parse_count(cmd, arg, 2, 16 * 1024 * 1024, &v);
    if (!err) {
        ((cr_dir_conf *)dc)->max_body = (apr_off_t)v;
    }
    return err;
}

static const char *set_max_products(cmd_parms *cmd, void *dc, const char *arg)
{
    apr_int64_t v;
    const char *err = parse_count(cmd, arg, 1, 1000, &v);
    if (!err) {
        ((cr_dir_conf *)dc)->max_products = (int)v;
    }
    return err;
}

static const char *set_streams_per_client(cmd_parms *cmd, void *dc, const char *arg)
{
    apr_int64_t v;
    const char *err = parse_count(cmd, arg, 1, 100000, &v);
    if (!err) {
        ((cr_dir_conf *)dc)->max_streams_per_client = (int)v;
    }
    return err;
}

static const char *set_max_streams(cmd_parms *cmd, void *dc, const char *arg)
{
    cr_srv_conf *sc = cr_srv_conf_get(cmd->server);
    apr_int64_t v;
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err) {
        return err;
    }
    err = parse_count(cmd, arg, 1, 1000000, &v);
    if (!err) {
        sc->max_streams = (int)v;
    }
    return err;
}

static const char *set_cache(cmd_parms *cmd, void *dc, const char *arg)
{
    cr_srv_conf *sc = cr_srv_conf_get(cmd->server);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    const char *sep, *name;
    (void)dc;
    if (err) {
        return err;
    }
    sep = strchr(arg, ':');
    name = sep ? apr_pstrmemdup(cmd->pool, arg, (apr_size_t)(sep - arg)) : arg;
    sc->cache_provider = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, name,
                                            AP_SOCACHE_PROVIDER_VERSION);
    if (!sc->cache_provider) {
        return apr_psprintf(cmd->pool, "%s: unknown socache provider '%s' (load "
                            "mod_socache_%s before this directive?)", cmd->cmd->name, name, name);
    }
    sc->cache_args = sep ? sep + 1 : NULL;
    sc->cache_spec = arg;
    return NULL;
}

/* One store for the whole server (every vhost's orders): checked here,
 * opened by mod_cryptorefills_idem.c in post_config. */
static const char *set_idem_store(cmd_parms *cmd, void *dc, const char *arg)
{
    cr_srv_conf *sc = cr_srv_conf_get(cmd->server);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    cr_ids_conf ic;
    (void)dc;
    if (err) {
        return err;
    }
    if ((err = cr_ids_parse(cmd->temp_pool, arg, &ic)) != NULL) {
        return apr_psprintf(cmd->pool, "%s: %s", cmd->cmd->name, err);
    }
    sc->idem_spec = arg;
    return NULL;
}

#define DIR_OR_SRV (RSRC_CONF | ACCESS_CONF)

const command_rec cr_cmds[] = {
    AP_INIT_TAKE1("CryptorefillsUpstream", set_upstream, NULL, DIR_OR_SRV,
                  "Upstream base URL (http or https); a trailing path is a prefix"),
    AP_INIT_TAKE1("CryptorefillsCACertificateFile", set_ca_file, NULL, DIR_OR_SRV,
                  "PEM file of the CAs trusted for an https upstream, instead of the system store"),
    AP_INIT_TAKE1("CryptorefillsUpstreamProxy", set_proxy, NULL, DIR_OR_SRV,
                  "HTTP(S) proxy for upstream calls (CONNECT for https), or none (default none)"),
    AP_INIT_TAKE1("CryptorefillsPartnerId", set_partner_id, NULL, DIR_OR_SRV,
                  "Partner id, sent upstream as X-Cr-Application (required)"),
    AP_INIT_TAKE1("CryptorefillsAppVersion", set_app_version, NULL, DIR_OR_SRV,
                  "Application version, sent upstream as X-Cr-Version (required)"),
    AP_INIT_TAKE1("CryptorefillsDefaultCountry", set_default_country, NULL, DIR_OR_SRV,
                  "Country used when a request names none (default US)"),
    AP_INIT_TAKE1("CryptorefillsCountryEnv", set_country_env, NULL, DIR_OR_SRV,
                  "Request environment variable holding the visitor's country, or 'none'"),
    AP_INIT_TAKE1("CryptorefillsConnectTimeout", set_connect_timeout, NULL, DIR_OR_SRV,
                  "Upstream connect timeout in seconds (default 3)"),
    AP_INIT_TAKE1("CryptorefillsTimeout", set_timeout, NULL, DIR_OR_SRV,
                  "Whole upstream exchange timeout in seconds (default 15)"),
    AP_INIT_TAKE1("CryptorefillsMaxBodySize", set_max_body, NULL, DIR_OR_SRV,
                  "Largest request body in bytes (default 65536)"),
    AP_INIT_TAKE1("CryptorefillsCache", set_cache, NULL, RSRC_CONF,
                  "socache provider for catalogs and refresh leases: PROVIDER[:ARGS]"),
    AP_INIT_TAKE1("CryptorefillsCacheTTL", set_cache_ttl, NULL, DIR_OR_SRV,
                  "Seconds a cached catalog is fresh (default 300)"),
    AP_INIT_TAKE1("CryptorefillsCacheStale", set_cache_stale, NULL, DIR_OR_SRV,
                  "Seconds past expiry a catalog may still be served (default 86400)"),
    AP_INIT_TAKE1("CryptorefillsMaxProducts", set_max_products, NULL, DIR_OR_SRV,
                  "Deliveries per order before PRODUCT_COUNT_EXCEEDED (default 10)"),
    AP_INIT_TAKE1("CryptorefillsStreamHeartbeat", set_heartbeat, NULL, DIR_OR_SRV,
                  "Seconds of silence before a comment line on an order stream (default 15)"),
    AP_INIT_TAKE1("CryptorefillsIdempotencyStore", set_idem_store, NULL, RSRC_CONF,
                  "where Idempotency-Key records live: file:DIR, memcache:HOST:PORT or "
                  "redis:HOST:PORT (default: CryptorefillsCache's memcache/redis server, "
                  "else a directory under DefaultRuntimeDir)"),
    AP_INIT_TAKE1("CryptorefillsIdempotencyWindow", set_idem_window, NULL, DIR_OR_SRV,
                  "Seconds an Idempotency-Key of POST orders is remembered (default 86400)"),
    AP_INIT_TAKE1("CryptorefillsMaxStreams", set_max_streams, NULL, RSRC_CONF,
                  "Open order streams server-wide (default: sized from the MPM)"),
    AP_INIT_TAKE1("CryptorefillsMaxStreamsPerClient", set_streams_per_client, NULL, DIR_OR_SRV,
                  "Open order streams per client address (default 8)"),
    AP_INIT_TAKE1("CryptorefillsStreamMaxLifetime", set_stream_lifetime, NULL, DIR_OR_SRV,
                  "Seconds after which an order stream is closed (default 1800)"),
    AP_INIT_TAKE1("CryptorefillsStreamStallTimeout", set_stream_stall, NULL, DIR_OR_SRV,
                  "Seconds without a byte from the upstream before an order stream is "
                  "ended so the browser reconnects (default 120)"),
    { NULL }
};

/* A directive's name, from the table (where each name is written once). */
static const char *directive_name(const void *setter)
{
    const command_rec *cmd;
    for (cmd = cr_cmds; cmd->name; cmd++) {
        if ((const void *)cmd->AP_TAKE1 == setter) {
            return cmd->name;
        }
    }
    return "?";
}

const char *cr_config_missing(const char *partner_id, const char *app_version)
{
    return !partner_id ? directive_name((const void *)set_partner_id)
         : !app_version ? directive_name((const void *)set_app_version) : NULL;
}

/* ---- effective values ------------------------------------------------------- */

#define PICK(m, unset, def) e->m = d->m != (unset) ? d->m : (def)

const cr_conf *cr_conf_get(request_rec *r)
{
    const cr_dir_conf *d = ap_get_module_config(r->per_dir_config, &cryptorefills_module);
    cr_conf *e = apr_palloc(r->pool, sizeof(*e));

    e->base = d->base;
    e->upstream = d->upstream ? d->upstream : CR_DEFAULT_UPSTREAM;
    e->partner_id = d->partner_id;
    e->partner_tag = d->partner_tag;
    e->partner_line = d->partner_line;
    e->version_line = d->version_line;
    e->app_version = d->app_version;
    e->default_country = d->default_country ? d->default_country : CR_DEF_COUNTRY;
    e->country_env = d->country_env;
    e->ca_file = d->ca_file;
    e->proxy = d->proxy && *d->proxy ? d->proxy : NULL;
    PICK(connect_timeout, CR_UNSET_TIME, CR_DEF_CONNECT_TIMEOUT);
    PICK(timeout, CR_UNSET_TIME, CR_DEF_TIMEOUT);
    PICK(max_body, -1, (apr_off_t)CR_DEF_MAX_BODY);
    PICK(cache_ttl, CR_UNSET_TIME, CR_DEF_CACHE_TTL);
    PICK(cache_stale, CR_UNSET_TIME, CR_DEF_CACHE_STALE);
    PICK(max_products, CR_UNSET_INT, CR_DEF_MAX_PRODUCTS);
    PICK(heartbeat, CR_UNSET_TIME, CR_DEF_HEARTBEAT);
    PICK(idem_window, CR_UNSET_TIME, CR_DEF_IDEM_WINDOW);
    PICK(max_streams_per_client, CR_UNSET_INT, CR_DEF_STREAMS_PER_CLIENT);
    PICK(stream_lifetime, CR_UNSET_TIME, CR_DEF_STREAM_LIFETIME);
    PICK(stream_stall, CR_UNSET_TIME, CR_DEF_STREAM_STALL);
    e->exchange_hold = e->connect_timeout + e->timeout + CR_HOLD_SLACK;
    return e;
}

cr_srv_conf *cr_srv_conf_get(server_rec *s)
{
    return ap_get_module_config(s->module_config, &cryptorefills_module);
}
