/* SPDX-License-Identifier: Apache-2.0 */
/* The request handler: find the route, resolve the country, dispatch. */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"
#include "apr_lib.h"

#include "mod_cryptorefills_int.h"
#include "cr_countries.h"
#include "cr_route.h"

/* ---- request side ------------------------------------------------------------- */

/* The path below the handler's <Location>, without leading slashes: the
 * Location's own path when a directive of ours sits in it, else the longest
 * <Location> prefix that sets the handler (found when the config was
 * checked).  NULL when none applies (a <LocationMatch> or <Directory>). */
static const char *relative_path(request_rec *r, const cr_conf *c)
{
    const char *rel = NULL;
    if (c->base && c->base[0] == '/') {
        rel = cr_path_below(r->uri, c->base);
    }
    if (!rel) {
        cr_srv_conf *sc = cr_srv_conf_get(r->server);
        apr_size_t best = 0;
        int i;
        for (i = 0; sc->bases && i < sc->bases->nelts; i++) {
            const char *b = APR_ARRAY_IDX(sc->bases, i, const char *);
            const char *t = cr_path_below(r->uri, b);
            if (t && (apr_size_t)(t - r->uri) >= best) {
                best = (apr_size_t)(t - r->uri);
                rel = t;
            }
        }
    }
    if (!rel) {
        return NULL;
    }
    while (*rel == '/') {
        rel++;
    }
    return rel;
}

static const char *resolve_country(request_rec *r, const cr_conf *c, const char *named)
{
    if (named) {
        return named;
    }
    if (c->country_env) {
        const char *v = apr_table_get(r->subprocess_env, c->country_env);
        if (v && strlen(v) == 2) {
            char cc[3] = { (char)apr_toupper(v[0]), (char)apr_toupper(v[1]), '\0' };
            if (cr_country_valid(cc, 2)) {
                return apr_pstrdup(r->pool, cc);
            }
        }
    }
    return c->default_country;
}

/* ---- the handler ----------------------------------------------------------------- */

int cr_handler(request_rec *r)
{
    const cr_conf *c;
    const char *rel, *country, *missing;
    cr_route_req rr;
    cr_upstream_resp resp;

    if (!r->handler || strcmp(r->handler, CR_HANDLER)) {
        return DECLINED;
    }
    c = cr_conf_get(r);
    if ((missing = cr_config_missing(c->partner_id, c->app_version))) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, CRLOGNO(01104)
                      "handler " CR_HANDLER " reached without %s for %s: answering 500, "
                      "no upstream call", missing, r->uri);
        return cr_send_problem(r, HTTP_INTERNAL_SERVER_ERROR, "MISCONFIGURED", NULL, NULL);
    }
    if (!cr_upstream_ready()) {
        return cr_send_problem(r, HTTP_INTERNAL_SERVER_ERROR, "MISCONFIGURED", NULL,
                               "upstream client unavailable");
    }
    rel = relative_path(r, c);
    if (!rel) {
        return cr_send_problem(r, HTTP_NOT_FOUND, "NOT_FOUND", NULL, "no such route");
    }
    cr_route_parse(r->pool, rel, r->method, r->args, &rr);
    if (rr.status) {
        if (rr.status == HTTP_METHOD_NOT_ALLOWED) {
            int get = !strcmp(rr.def->method, "GET") && !(rr.def->flags & CR_RF_STREAM);
            json_object *more = json_object_new_object(), *allowed = json_object_new_array();
            json_object_array_add(allowed, json_object_new_string(rr.def->method));
            if (get) {
                json_object_array_add(allowed, json_object_new_string("HEAD"));
            }
            json_object_object_add(more, "allowed", allowed);
            apr_table_setn(r->headers_out, "Allow", get ? "GET, HEAD" : rr.def->method);
            return cr_send_problem_ex(r, rr.status, rr.detail, more, NULL);
        }
        return cr_send_problem(r, rr.status, rr.detail, rr.field, rr.reason);
    }
    country = resolve_country(r, c, rr.country);

    switch (rr.def->id) {
    case CR_ROUTE_COUNTRIES: {
        apr_size_t len;
        const char *body = cr_countries_json(&len);
        apr_table_setn(r->headers_out, "Cache-Control", "public, max-age=86400");
        return cr_send(r, HTTP_OK, "application/json", body, len);
    }
    case CR_ROUTE_VALIDATIONS:
    case CR_ROUTE_ORDERS:
        return cr_orders_handler(r, c, &rr, country);
    case CR_ROUTE_SUBSCRIBE:
        return cr_stream_handler(r, c, &rr, country);
    default:
        if (rr.def->flags & CR_RF_CACHEABLE) {
            return cr_catalog_handler(r, c, &rr, country);
        }
        cr_upstream_fetch(r, c, &rr, country, NULL, 0, &resp);
        return cr_relay(r, &rr, &resp);
    }
}
