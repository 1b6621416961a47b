/* SPDX-License-Identifier: Apache-2.0 */
/* mod_cryptorefills: sell gift cards, eSIMs and mobile top-ups for crypto
 * through the Cryptorefills partner API, from inside Apache httpd.
 *
 * Lifecycle:
 *   pre_config   - register the global mutex type (so `Mutex` works).
 *   check_config - refuse a config that routes requests to the handler
 *                  without a partner id (runs for `apachectl -t` too), then
 *                  note the <Location> prefixes the routes are below.
 *   post_config  - once per (re)start, second pass only: curl_global_init,
 *                  shared memory, socache and mutex, the idempotency
 *                  store, owned by pconf.
 *                  Notes proxy rules that cover the handler's <Location>s.
 *   child_init   - per process: re-open the mutex, the idempotency store's
 *                  locks and connections, create the pool of curl
 *                  handles (so nothing curl owns crosses a fork), start the
 *                  suspended relay's loop thread (event MPM).
 */
#define CR_MODULE_MAIN
#include <string.h>
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_mpm.h"
#include "apr_strings.h"

#include "mod_cryptorefills_int.h"
#include "mod_cryptorefills_async.h"
#include "mod_cryptorefills_sections.h"
#include "cr_countries.h"
#include "cr_route.h"

#include <curl/curl.h>

static int cr_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    (void)plog; (void)ptemp;
    return cr_socache_pre_config(pconf);
}

static int cr_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                           server_rec *s)
{
    int rv;
    (void)plog;
    rv = cr_config_check(ptemp, s);
    cr_config_collect_bases(pconf, ptemp, s);
    return rv;
}

static int cr_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                          server_rec *s)
{
    (void)plog;
    /* Single-threaded here: initialise what children only read. */
    if (cr_upstream_post_config(pconf) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, CRLOGNO(01002) "curl_global_init failed");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    cr_countries_json(NULL);
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;  /* first pass: the config is read again before children start */
    }
    {
        /* Which relay streams use; under the event MPM the default cap is
         * what the suspended relay can hold (MPM accept limit, descriptors,
         * memory), not half the workers. */
        cr_srv_conf *sc = cr_srv_conf_get(s);
        apr_uint32_t suspended_cap = cr_async_post_config(
            ptemp, s, sc->max_streams == CR_UNSET_INT ? 0 : (apr_uint32_t)sc->max_streams);
        if (cr_shm_post_config(pconf, s, suspended_cap) != OK
            || cr_socache_post_config(pconf, ptemp, s) != OK
            || cr_idem_post_config(pconf, s) != OK) {
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    cr_config_notice_shadowing(ptemp, s);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, CRLOGNO(01003)
                 "mod_cryptorefills/%s ready (%s)", CR_MODULE_VERSION, curl_version());
    return OK;
}

static void cr_child_init(apr_pool_t *pchild, server_rec *s)
{
    cr_socache_child_init(pchild, s);
    cr_idem_child_init(pchild, s);
    cr_copies_child_init(pchild);
    cr_upstream_child_init(pchild, s);
    cr_async_child_init(pchild, s, cr_stats ? &cr_stats->async : NULL);
}

/* Claiming the module's URIs.  A storefront often runs this Apache as the
 * reverse proxy of its application (`ProxyPass / http://app/` or a
 * `RewriteRule ... [P]`), and mod_proxy's proxy_handler serves any request
 * its translation marked as proxied, whatever SetHandler says.  So a URI
 * below a <Location> of the handler is claimed before mod_proxy and
 * mod_rewrite translate it:
 *
 *   pre_translate_name - runs on the still-encoded URI, before the
 *                        location walk: a URI below one of the handler's
 *                        <Location> prefixes gets `no-proxy` in its
 *                        environment, so mod_proxy's pre-translation
 *                        (ProxyPass with mapping=encoded) leaves it alone;
 *   translate_name     - after the location walk: when the request's
 *                        sections do set our handler, a filename of our own
 *                        and OK, so neither mod_proxy's nor mod_rewrite's
 *                        (nor mod_alias's) translation runs: server-level
 *                        RewriteRules no longer apply inside the module's
 *                        <Location>.  When they don't (a nested
 *                        `SetHandler none`), `no-proxy` is taken back and
 *                        the others translate as usual;
 *   map_to_storage     - for a request claimed above, no directory or file
 *                        walk: our routes map to no file, and core would
 *                        stat every component of the path below the
 *                        DocumentRoot and look for .htaccess files on every
 *                        request (a tenth of the CPU of a proxied request).
 *
 * <Location> sections still apply: the location walk runs again after
 * map_to_storage.  Requests that are themselves proxy requests (forward
 * proxying, r->proxyreq set while reading) are never claimed. */
#define CR_FILENAME_PREFIX "cryptorefills:"

static int cr_pre_translate(request_rec *r)
{
    if (!r->proxyreq && cr_config_claims(r->server, r->uri)
        && !apr_table_get(r->subprocess_env, "no-proxy")) {
        apr_table_setn(r->subprocess_env, "no-proxy", "1");
        apr_table_setn(r->notes, "cryptorefills-no-proxy", "1");
    }
    return DECLINED;
}

static int cr_translate(request_rec *r)
{
    if (r->proxyreq || !cr_config_claims(r->server, r->uri)) {
        return DECLINED;
    }
    if (!cr_config_handler_is_ours(r)) {
        if (apr_table_get(r->notes, "cryptorefills-no-proxy")) {
            apr_table_unset(r->subprocess_env, "no-proxy");   /* ours, not the operator's */
        }
        return DECLINED;
    }
    r->filename = apr_pstrcat(r->pool, CR_FILENAME_PREFIX, r->uri, NULL);
    return OK;
}

static int cr_map_to_storage(request_rec *r)
{
    if (r->proxyreq || !r->filename
        || strncmp(r->filename, CR_FILENAME_PREFIX, sizeof(CR_FILENAME_PREFIX) - 1)) {
        return DECLINED;
    }
    return OK;
}

static void cr_register_hooks(apr_pool_t *p)
{
    static const char *const before_proxy[] = { "mod_proxy.c", NULL };
    static const char *const before_rewrite_proxy[] = { "mod_rewrite.c", "mod_proxy.c", NULL };
    (void)p;
    ap_hook_pre_config(cr_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(cr_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(cr_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(cr_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_pre_translate_name(cr_pre_translate, NULL, before_proxy, APR_HOOK_FIRST);
    ap_hook_translate_name(cr_translate, NULL, before_rewrite_proxy, APR_HOOK_FIRST);
    ap_hook_map_to_storage(cr_map_to_storage, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_handler(cr_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(cr_metrics_handler, NULL, NULL, APR_HOOK_MIDDLE);
    cr_shm_register_hooks();
    cr_idem_register_hooks();
    cr_copies_register_hooks();
    cr_async_register_hooks();
}

AP_DECLARE_MODULE(cryptorefills) = {
    STANDARD20_MODULE_STUFF,
    cr_create_dir_conf,
    cr_merge_dir_conf,
    cr_create_srv_conf,
    cr_merge_srv_conf,
    cr_cmds,
    cr_register_hooks
};
