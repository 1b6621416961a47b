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
#include "ap_expr.h"
#include "util_cfgtree.h"

#include "mod_cryptorefills_config.h"
#include "cr_countries.h"
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
    MERGE_PTR(app_version);
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
    return NULL;
}

static const char *set_app_version(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = header_value(cmd, arg);
    if (err) {
        return err;
    }
    ((cr_dir_conf *)dc)->app_version = arg;
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
                  "socache provider for catalogs and idempotency records: PROVIDER[:ARGS]"),
    AP_INIT_TAKE1("CryptorefillsCacheTTL", set_cache_ttl, NULL, DIR_OR_SRV,
                  "Seconds a cached catalog is fresh (default 300)"),
    AP_INIT_TAKE1("CryptorefillsCacheStale", set_cache_stale, NULL, DIR_OR_SRV,
                  "Seconds past expiry a catalog may still be served (default 86400)"),
    AP_INIT_TAKE1("CryptorefillsMaxProducts", set_max_products, NULL, DIR_OR_SRV,
                  "Deliveries per order before PRODUCT_COUNT_EXCEEDED (default 10)"),
    AP_INIT_TAKE1("CryptorefillsStreamHeartbeat", set_heartbeat, NULL, DIR_OR_SRV,
                  "Seconds of silence before a comment line on an order stream (default 15)"),
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

/* ---- cross-directive check ------------------------------------------------ */

/* SetHandler stores an expression; find the directive it came from (by file
 * and line) in the config tree to read its literal argument. */
static const ap_directive_t *find_directive(const ap_directive_t *d, const char *file,
                                            unsigned int line)
{
    for (; d; d = d->next) {
        const ap_directive_t *hit;
        if (d->line_num == (int)line && d->filename && !strcmp(d->filename, file)
            && !strcasecmp(d->directive, "SetHandler")) {
            return d;
        }
        if (d->first_child && (hit = find_directive(d->first_child, file, line))) {
            return hit;
        }
    }
    return NULL;
}

static int sets_our_handler(apr_pool_t *p, const core_dir_config *core,
                            const char **file, int *line)
{
    const ap_directive_t *d;
    char *arg;
    apr_size_t n;

    if (core->handler && !strcasecmp(core->handler, CR_HANDLER)) {
        *file = "?";
        *line = 0;
        return 1;
    }
    if (!core->expr_handler || !core->expr_handler->filename) {
        return 0;
    }
    d = find_directive(ap_conftree, core->expr_handler->filename,
                       core->expr_handler->line_number);
    if (!d || !d->args) {
        return 0;
    }
    arg = apr_pstrdup(p, d->args);
    apr_collapse_spaces(arg, arg);
    n = strlen(arg);
    if (n >= 2 && (arg[0] == '"' || arg[0] == '\'') && arg[n - 1] == arg[0]) {
        arg[n - 1] = '\0';
        arg++;
    }
    *file = d->filename;
    *line = d->line_num;
    return !strcasecmp(arg, CR_HANDLER);
}

/* Calls fn for every section of every server that routes requests to the
 * handler (server defaults, <Location>, <Directory>), with the section's
 * own record merged over the server's as a request would see it. */
typedef int (*section_fn)(void *baton, server_rec *s, const core_dir_config *core,
                          const cr_dir_conf *eff, const char *kind, const char *file, int line);

static int walk_section(apr_pool_t *p, server_rec *s, ap_conf_vector_t *sec, const char *kind,
                        section_fn fn, void *baton)
{
    core_dir_config *core = ap_get_core_module_config(sec);
    cr_dir_conf *srv = ap_get_module_config(s->lookup_defaults, &cryptorefills_module);
    cr_dir_conf *own, *eff;
    const char *file = NULL;
    int line = 0;

    if (!core || !sets_our_handler(p, core, &file, &line)) {
        return OK;
    }
    own = ap_get_module_config(sec, &cryptorefills_module);
    eff = (own && srv && own != srv) ? cr_merge_dir_conf(p, srv, own) : (own ? own : srv);
    return fn(baton, s, core, eff, kind, file, line);
}

static int walk_sections(apr_pool_t *p, server_rec *s, section_fn fn, void *baton)
{
    int rv = OK;
    for (; s; s = s->next) {
        core_server_config *cs = ap_get_core_module_config(s->module_config);
        int i;
        if (walk_section(p, s, s->lookup_defaults, "", fn, baton) != OK) {
            rv = !OK;
        }
        for (i = 0; cs && cs->sec_url && i < cs->sec_url->nelts; i++) {
            if (walk_section(p, s, ((ap_conf_vector_t **)cs->sec_url->elts)[i], "<Location ",
                             fn, baton) != OK) {
                rv = !OK;
            }
        }
        for (i = 0; cs && cs->sec_dir && i < cs->sec_dir->nelts; i++) {
            if (walk_section(p, s, ((ap_conf_vector_t **)cs->sec_dir->elts)[i], "<Directory ",
                             fn, baton) != OK) {
                rv = !OK;
            }
        }
    }
    return rv;
}

/* The upstream accepts calls without a partner id and the partner then
 * silently earns nothing: a section that routes requests to the handler
 * without an id (or app version) must stop the server from starting.
 * Runs in check_config, which `apachectl -t` runs too. */
static int check_one(void *baton, server_rec *s, const core_dir_config *core,
                     const cr_dir_conf *eff, const char *kind, const char *file, int line)
{
    (void)baton;
    if (cr_config_missing(eff ? eff->partner_id : NULL, eff ? eff->app_version : NULL)) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, s, CRLOGNO(01001)
                     "SetHandler " CR_HANDLER " at %s:%d (%s%s%s, server %s) without %s: "
                     "the upstream would accept the calls and credit no partner",
                     file, line, kind, *kind ? (core->d ? core->d : "") : "server config",
                     *kind ? ">" : "",
                     s->server_hostname ? s->server_hostname : "main",
                     cr_config_missing(eff ? eff->partner_id : NULL, eff ? eff->app_version : NULL));
        return !OK;
    }
    return OK;
}

int cr_config_check(apr_pool_t *ptemp, server_rec *s)
{
    return walk_sections(ptemp, s, check_one, NULL);
}

/* The handler's routes are relative to a <Location>'s prefix even when no
 * directive of ours sits in that <Location>. */
static int collect_one(void *baton, server_rec *s, const core_dir_config *core,
                       const cr_dir_conf *eff, const char *kind, const char *file, int line)
{
    apr_pool_t *pconf = baton;
    cr_srv_conf *sc = cr_srv_conf_get(s);
    (void)eff; (void)file; (void)line;
    if (*kind == '<' && kind[1] == 'L' && core->d && !core->r) {
        if (!sc->bases) {
            sc->bases = apr_array_make(pconf, 2, sizeof(const char *));
        }
        APR_ARRAY_PUSH(sc->bases, const char *) = apr_pstrdup(pconf, core->d);
    }
    return OK;
}

void cr_config_collect_bases(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s)
{
    walk_sections(ptemp, s, collect_one, pconf);
}

int cr_config_claims(const server_rec *s, const char *uri)
{
    const cr_srv_conf *sc = ap_get_module_config(s->module_config, &cryptorefills_module);
    int i;

    if (!sc->bases || !uri || uri[0] != '/') {
        return 0;
    }
    for (i = 0; i < sc->bases->nelts; i++) {
        const char *rel = cr_path_below(uri, APR_ARRAY_IDX(sc->bases, i, const char *));
        if (rel && rel - uri > 1) {     /* never all of "/" */
            return 1;
        }
    }
    return 0;
}

int cr_config_handler_is_ours(request_rec *r)
{
    const core_dir_config *core = ap_get_core_module_config(r->per_dir_config);
    const char *h = core->handler;

    if (core->expr_handler) {
        const char *err = NULL;
        h = ap_expr_str_exec(r, core->expr_handler, &err);
        if (err) {
            return 0;
        }
    }
    return h && !strcasecmp(h, CR_HANDLER);
}

/* ---- proxy rules that cover the handler's <Location>s ------------------------- */

/* One server's view while walking the config tree in file order: the
 * exclusions (`ProxyPass PATH !`) seen so far, and the notices given. */
typedef struct shadow_walk {
    apr_pool_t *p;
    server_rec *main;
    apr_array_header_t *excluded;   /* const char * paths, in file order */
    apr_hash_t *told;               /* "base file:line" already noticed */
} shadow_walk;

/* mod_proxy's prefix rule: PATH covers every URI that starts with it; a
 * trailing slash of PATH also covers the bare prefix (/api/ covers the
 * routes below /api). */
static int path_covers(const char *path, const char *base)
{
    apr_size_t n = strlen(path);
    if (n > 0 && path[n - 1] == '/') {
        n--;
        return !strncmp(base, path, n) && (n == 0 || base[n] == '/' || base[n] == '\0');
    }
    return !strncmp(base, path, n);
}

static server_rec *server_of(server_rec *main, const ap_directive_t *vhost)
{
    server_rec *v;
    if (!vhost) {
        return main;
    }
    for (v = main->next; v; v = v->next) {
        if (v->defn_name && vhost->filename && !strcmp(v->defn_name, vhost->filename)
            && v->defn_line_number == (unsigned)vhost->line_num) {
            return v;
        }
    }
    return NULL;
}

/* A RewriteRule with the P flag, in server or vhost context: does its
 * pattern match a route below base? */
static int rewrite_covers(apr_pool_t *p, const char *args, const char *base, const char **subst)
{
    const char *pat = ap_getword_conf(p, &args);
    const char *flags;
    ap_regex_t *re;
    int hit, icase;

    *subst = ap_getword_conf(p, &args);
    flags = ap_getword_conf(p, &args);
    if (!*pat || pat[0] == '!' || !*flags || flags[0] != '[') {
        return 0;
    }
    {
        char *f = apr_pstrdup(p, flags + 1), *tok, *last;
        int proxy = 0;
        icase = 0;
        for (tok = apr_strtok(f, ",]", &last); tok; tok = apr_strtok(NULL, ",]", &last)) {
            if (!strcasecmp(tok, "P") || !strcasecmp(tok, "proxy")) {
                proxy = 1;
            }
            else if (!strcasecmp(tok, "NC") || !strcasecmp(tok, "nocase")) {
                icase = 1;
            }
        }
        if (!proxy) {
            return 0;
        }
    }
    re = ap_pregcomp(p, pat, AP_REG_EXTENDED | (icase ? AP_REG_ICASE : 0));
    if (!re) {
        return 0;
    }
    hit = !ap_regexec(re, base, 0, NULL, 0)
          || !ap_regexec(re, apr_pstrcat(p, base, "/", NULL), 0, NULL, 0);
    return hit;
}

static void shadow_check(shadow_walk *w, server_rec *v, const ap_directive_t *d,
                         const char *kind, const char *path, const char *target)
{
    const cr_srv_conf *sc = ap_get_module_config(v->module_config, &cryptorefills_module);
    int i, j;

    for (i = 0; sc->bases && i < sc->bases->nelts; i++) {
        const char *b = APR_ARRAY_IDX(sc->bases, i, const char *);
        const char *key;
        int excluded = 0;

        if (path ? !path_covers(path, b) : !rewrite_covers(w->p, d->args, b, &target)) {
            continue;
        }
        for (j = 0; j < w->excluded->nelts && !excluded; j++) {
            excluded = path_covers(APR_ARRAY_IDX(w->excluded, j, const char *), b);
        }
        key = apr_psprintf(w->p, "%s %s:%d", b, d->filename, d->line_num);
        if (excluded || apr_hash_get(w->told, key, APR_HASH_KEY_STRING)) {
            continue;
        }
        apr_hash_set(w->told, key, APR_HASH_KEY_STRING, "");
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, v, CRLOGNO(01005)
                     "<Location %s> (SetHandler " CR_HANDLER ") lies under %s %s %s at %s:%d: "
                     "the module answers below %s, the proxy rule only elsewhere", b, kind,
                     path ? path : d->args, path ? target : "", d->filename, d->line_num, b);
    }
}

static void shadow_walk_tree(shadow_walk *w, const ap_directive_t *d, const ap_directive_t *vhost)
{
    for (; d; d = d->next) {
        if (!strcasecmp(d->directive, "<VirtualHost")) {
            shadow_walk w2 = *w;
            /* A vhost inherits the exclusions of the main server's
             * ProxyPass list (mod_proxy puts them first), not its own. */
            w2.excluded = apr_array_copy(w->p, w->excluded);
            shadow_walk_tree(&w2, d->first_child, d);
            continue;
        }
        if (d->first_child) {
            continue;   /* <Location>, <Directory>, <IfModule> ...: see below */
        }
        if (d->args && !strcasecmp(d->directive, "ProxyPass")) {
            const char *args = d->args;
            const char *path = ap_getword_conf(w->p, &args);
            const char *url = ap_getword_conf(w->p, &args);
            server_rec *v = server_of(w->main, vhost);

            if (path[0] != '/' || !*url) {
                continue;
            }
            if (!strcmp(url, "!")) {
                APR_ARRAY_PUSH(w->excluded, const char *) = path;
                continue;
            }
            for (; v; v = vhost ? NULL : v->next) {
                shadow_check(w, v, d, "ProxyPass", path, url);
            }
        }
        else if (d->args && !strcasecmp(d->directive, "RewriteRule")) {
            server_rec *v = server_of(w->main, vhost);
            if (v) {
                shadow_check(w, v, d, "RewriteRule", NULL, NULL);
            }
        }
    }
}

/* <IfModule>/<IfDefine> bodies are already resolved into the tree's top
 * level by the time post_config runs; other sections (<Location>,
 * <Directory>, <Proxy>) hold per-directory rules that mod_proxy and
 * mod_rewrite apply after the module has claimed the request. */
void cr_config_notice_shadowing(apr_pool_t *ptemp, server_rec *s)
{
    shadow_walk w;
    w.p = ptemp;
    w.main = s;
    w.excluded = apr_array_make(ptemp, 4, sizeof(const char *));
    w.told = apr_hash_make(ptemp);
    shadow_walk_tree(&w, ap_conftree, NULL);
}

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
