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
 *                  shared memory, socache and mutex, owned by pconf.
 *   child_init   - per process: re-open the mutex, create the pool of curl
 *                  handles (so nothing curl owns crosses a fork).
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
    if (cr_shm_post_config(pconf, s) != OK || cr_socache_post_config(pconf, ptemp, s) != OK) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, CRLOGNO(01003)
                 "mod_cryptorefills/%s ready (%s)", CR_MODULE_VERSION, curl_version());
    return OK;
}

static void cr_child_init(apr_pool_t *pchild, server_rec *s)
{
    cr_socache_child_init(pchild, s);
    cr_catalog_child_init(pchild);
    cr_upstream_child_init(pchild, s);
}

/* Our routes map to no file.  Like mod_proxy, claim them before core's
 * directory and file walks, which would stat every component of the path
 * below the DocumentRoot and look for .htaccess files on every request (a
 * tenth of the CPU of a proxied request).  <Location> sections still
 * apply: the location walk runs after this hook. */
static int cr_map_to_storage(request_rec *r)
{
    cr_srv_conf *sc = cr_srv_conf_get(r->server);
    int i;

    if (!sc->bases || r->proxyreq || !r->uri || r->uri[0] != '/') {
        return DECLINED;
    }
    for (i = 0; i < sc->bases->nelts; i++) {
        const char *rel = cr_path_below(r->uri, APR_ARRAY_IDX(sc->bases, i, const char *));
        if (rel && rel - r->uri > 1) {     /* never all of "/" */
            if (!r->filename) {
                r->filename = apr_pstrcat(r->pool, "cryptorefills:", r->uri, NULL);
            }
            return OK;
        }
    }
    return DECLINED;
}

static void cr_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_pre_config(cr_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(cr_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(cr_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(cr_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_map_to_storage(cr_map_to_storage, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_handler(cr_handler, NULL, NULL, APR_HOOK_MIDDLE);
    cr_shm_register_hooks();
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
