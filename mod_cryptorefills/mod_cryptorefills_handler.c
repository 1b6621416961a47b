/* The request handler: route, check locally, call the upstream, answer. */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_filter.h"
#include "apr_strings.h"
#include "apr_lib.h"

#include "mod_cryptorefills.h"
#include "mod_cryptorefills_int.h"
#include "cr_countries.h"
#include "cr_json.h"
#include "cr_jscan.h"
#include "cr_problem.h"
#include "cr_route.h"

/* Largest upstream answer collected: a real US catalog is a few hundred KB;
 * anything near this is not a partner API answer. */
#define CR_MAX_UPSTREAM_BODY (8 * 1024 * 1024)

/* ---- answering ---------------------------------------------------------------- */

int cr_send(request_rec *r, int status, const char *ctype, const char *body, apr_size_t len)
{
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_status_t rv;

    r->status = status;
    ap_set_content_type(r, ctype);
    apr_table_setn(r->headers_out, "X-Content-Type-Options", "nosniff");
    ap_set_content_length(r, (apr_off_t)len);
    if (len) {
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_pool_create(body, len, r->pool,
                                                           bb->bucket_alloc));
    }
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(bb->bucket_alloc));
    rv = ap_pass_brigade(r->output_filters, bb);
    if (rv != APR_SUCCESS) {
        return r->connection->aborted ? OK : AP_FILTER_ERROR;
    }
    return OK;
}

int cr_send_problem_ex(request_rec *r, int status, const char *detail, json_object *more,
                       const char *error)
{
    apr_size_t len;
    const char *body = cr_problem_body(r->pool, status, detail, more, error, &len);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    return cr_send(r, status, "application/json", body, len);
}

int cr_send_problem(request_rec *r, int status, const char *detail,
                    const char *field, const char *reason)
{
    return cr_send_problem_ex(r, status, detail,
                              (field || reason) ? cr_problem_more(field, reason) : NULL, NULL);
}

/* ---- request side ------------------------------------------------------------- */

static const char *strip_base(const char *uri, const char *base)
{
    apr_size_t n = strlen(base);
    while (n > 1 && base[n - 1] == '/') {
        n--;
    }
    if (strncmp(uri, base, n) || (uri[n] != '/' && uri[n] != '\0' && base[n - 1] != '/')) {
        return NULL;
    }
    return uri + n;
}

/* The path below the handler's <Location>, without leading slashes: the
 * Location's own path when a directive of ours sits in it, else the longest
 * <Location> prefix that sets the handler (found when the config was
 * checked).  NULL when none applies (a <LocationMatch> or <Directory>). */
static const char *relative_path(request_rec *r, const cr_dir_conf *c)
{
    const char *rel = NULL;
    if (c->base && c->base[0] == '/') {
        rel = strip_base(r->uri, c->base);
    }
    if (!rel) {
        cr_srv_conf *sc = ap_get_module_config(r->server->module_config, &cryptorefills_module);
        apr_size_t best = 0;
        int i;
        for (i = 0; sc->bases && i < sc->bases->nelts; i++) {
            const char *b = APR_ARRAY_IDX(sc->bases, i, const char *);
            const char *t = strip_base(r->uri, b);
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

const char *cr_resolve_country(request_rec *r, const cr_dir_conf *c, const char *named)
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
    return c->default_country ? c->default_country : CR_DEF_COUNTRY;
}

/* ---- upstream side ------------------------------------------------------------- */

/* A control character (CR, LF, NUL …) in a value copied into an upstream
 * header: httpd's parser refuses most, but another module may set one. */
static int has_ctl(const char *s)
{
    for (; *s; s++) {
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f) {
            return 1;
        }
    }
    return 0;
}

const char *const *cr_upstream_headers(request_rec *r, const cr_dir_conf *c, const char *country,
                                       const char *accept, int order_route,
                                       const char *last_event_id)
{
    apr_array_header_t *h = apr_array_make(r->pool, 10, sizeof(const char *));
    const char *ua = apr_table_get(r->headers_in, "User-Agent");

    APR_ARRAY_PUSH(h, const char *) = apr_pstrcat(r->pool, "X-Cr-Application: ", c->partner_id, NULL);
    APR_ARRAY_PUSH(h, const char *) = apr_pstrcat(r->pool, "X-Cr-Version: ", c->app_version, NULL);
    APR_ARRAY_PUSH(h, const char *) = apr_pstrcat(r->pool, "X-Country-ISO-Code: ", country, NULL);
    APR_ARRAY_PUSH(h, const char *) = "Content-Type: application/json";
    APR_ARRAY_PUSH(h, const char *) = apr_pstrcat(r->pool, "Accept: ", accept, NULL);
    if (order_route) {
        /* The upstream's fraud checks look at the buyer, not at us. */
        APR_ARRAY_PUSH(h, const char *) = apr_pstrcat(r->pool, "X-Forwarded-For: ",
                                                      r->useragent_ip, NULL);
        if (ua && *ua && strlen(ua) <= 512 && !has_ctl(ua)) {
            APR_ARRAY_PUSH(h, const char *) = apr_pstrcat(r->pool, "User-Agent: ", ua, NULL);
        }
    }
    if (last_event_id) {
        APR_ARRAY_PUSH(h, const char *) = apr_pstrcat(r->pool, "Last-Event-ID: ", last_event_id, NULL);
    }
    APR_ARRAY_PUSH(h, const char *) = NULL;
    return (const char *const *)h->elts;
}

void cr_fetch(request_rec *r, const cr_dir_conf *c, const cr_route_req *rr, const char *country,
              const char *body, apr_size_t blen, cr_upstream_resp *resp)
{
    const cr_route_def *def = rr->def;
    cr_upstream_req req;

    memset(&req, 0, sizeof(req));
    req.method = def->method;
    req.url = apr_pstrcat(r->pool, c->upstream ? c->upstream : CR_DEFAULT_UPSTREAM,
                          cr_route_upstream_path(r->pool, rr, country), NULL);
    req.headers = cr_upstream_headers(r, c, country, "application/json",
                                      (def->flags & CR_RF_ORDER) != 0, NULL);
    req.body = body;
    req.body_len = blen;
    req.connect_timeout_ms = (long)apr_time_as_msec(CR_CONF_TIME(c, connect_timeout, CR_DEF_CONNECT_TIMEOUT));
    req.timeout_ms = (long)apr_time_as_msec(CR_CONF_TIME(c, timeout, CR_DEF_TIMEOUT));
    req.max_response = CR_MAX_UPSTREAM_BODY;
    /* Creating an order is not idempotent: never on a connection that may
     * turn out dead and make libcurl send it again. */
    req.fresh_connection = def->id == CR_ROUTE_ORDERS;

    ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r, "upstream %s %s", req.method, req.url);
    cr_upstream_perform(cr_proc.upstream, r->pool, &req, resp);
    CR_COUNT(upstream_requests);
    if (cr_stats && resp->connects > 0) {
        apr_atomic_add32(&cr_stats->upstream_connects, (apr_uint32_t)resp->connects);
    }
    switch (resp->rc) {
    case CR_UP_OK:
        if (resp->status >= 500) CR_COUNT(upstream_err_5xx);
        else if (resp->status >= 400) CR_COUNT(upstream_err_4xx);
        break;
    case CR_UP_CONNECT: CR_COUNT(upstream_err_connect); break;
    case CR_UP_TIMEOUT: CR_COUNT(upstream_err_timeout); break;
    default: CR_COUNT(upstream_err_invalid); break;
    }
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, CRLOGNO(01101)
                  "upstream %s %s: %s, status %ld, %" APR_SIZE_T_FMT " bytes, %.3fs%s",
                  req.method, req.url, cr_upstream_rc_name(resp->rc), resp->status, resp->len,
                  resp->total_time, resp->reused ? ", reused connection" : "");
}

/* A collected upstream answer is acceptable to relay when it is JSON. */
static int upstream_body_is_json(const cr_upstream_resp *resp)
{
    return cr_jscan_is_json(resp->body, resp->len);
}

int cr_answer_failure(request_rec *r, const cr_route_req *rr, const cr_upstream_resp *resp)
{
    int order_unknown = rr->def->id == CR_ROUTE_ORDERS && resp->request_sent;
    json_object *more = json_object_new_object();
    int status;
    const char *detail;

    switch (resp->rc) {
    case CR_UP_TIMEOUT:
        status = HTTP_GATEWAY_TIME_OUT;
        detail = "UPSTREAM_TIMEOUT";
        break;
    case CR_UP_TOO_LARGE:
        status = HTTP_BAD_GATEWAY;
        detail = "UPSTREAM_INVALID_RESPONSE";
        json_object_object_add(more, "reason", json_object_new_string("upstream answer too large"));
        break;
    case CR_UP_INTERNAL:
        status = HTTP_INTERNAL_SERVER_ERROR;
        detail = "INTERNAL_ERROR";
        break;
    default:
        status = HTTP_BAD_GATEWAY;
        detail = "UPSTREAM_UNAVAILABLE";
        break;
    }
    if (order_unknown) {
        /* The order may exist upstream: say so, so nobody retries blindly. */
        json_object_object_add(more, "order_state", json_object_new_string("unknown"));
    }
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01102)
                  "upstream %s for route %s failed (%s): %s", rr->def->method, rr->def->name,
                  cr_upstream_rc_name(resp->rc), resp->error ? resp->error : "-");
    if (!json_object_object_length(more)) {
        json_object_put(more);
        more = NULL;
    }
    return cr_send_problem_ex(r, status, detail, more, NULL);
}

/* Relay an upstream answer: JSON bodies pass with their status. */
int cr_relay(request_rec *r, const cr_route_req *rr, const cr_upstream_resp *resp)
{
    const cr_route_def *def = rr->def;

    if (resp->rc != CR_UP_OK) {
        return cr_answer_failure(r, rr, resp);
    }
    if (resp->retry_after >= 0 && (resp->status == 429 || resp->status == 503)) {
        apr_table_setn(r->headers_out, "Retry-After",
                       apr_psprintf(r->pool, "%ld", resp->retry_after));
    }
    if (!upstream_body_is_json(resp)) {
        json_object *more = json_object_new_object();
        int status = HTTP_BAD_GATEWAY;
        const char *detail = "UPSTREAM_INVALID_RESPONSE";
        json_object_object_add(more, "upstream_status", json_object_new_int((int)resp->status));
        if (resp->status == 429) {
            status = 429;
            detail = "RATE_LIMITED";
        }
        else if (resp->status >= 500) {
            detail = "UPSTREAM_UNAVAILABLE";
        }
        else if (resp->status >= 400) {
            status = (int)resp->status;
            detail = "UPSTREAM_ERROR";
        }
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01103)
                      "upstream answer for route %s is not JSON (status %ld, %" APR_SIZE_T_FMT
                      " bytes, %s)", def->name, resp->status, resp->len,
                      resp->content_type ? resp->content_type : "no content type");
        if (rr->def->id == CR_ROUTE_ORDERS && resp->status < 400) {
            json_object_object_add(more, "order_state", json_object_new_string("unknown"));
        }
        return cr_send_problem_ex(r, status, detail, more, NULL);
    }
    apr_table_setn(r->headers_out, "Cache-Control",
                   (def->flags & CR_RF_NO_STORE) ? "no-store" : "no-cache");
    return cr_send(r, (int)resp->status, "application/json", resp->body, resp->len);
}

/* ---- the handler ----------------------------------------------------------------- */

int cr_handler(request_rec *r)
{
    cr_dir_conf *c;
    const char *rel, *country;
    cr_route_req rr;
    cr_upstream_resp resp;

    if (!r->handler || strcmp(r->handler, CR_HANDLER)) {
        return DECLINED;
    }
    c = ap_get_module_config(r->per_dir_config, &cryptorefills_module);
    if (!c->partner_id || !c->app_version) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, CRLOGNO(01104)
                      "handler " CR_HANDLER " reached without %s for %s: answering 500, "
                      "no upstream call", !c->partner_id ? "CryptorefillsPartnerId"
                      : "CryptorefillsAppVersion", r->uri);
        return cr_send_problem(r, HTTP_INTERNAL_SERVER_ERROR, "MISCONFIGURED", NULL, NULL);
    }
    if (!cr_proc.upstream) {
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
    country = cr_resolve_country(r, c, rr.country);

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
            return cr_cached_handler(r, c, &rr, country);
        }
        cr_fetch(r, c, &rr, country, NULL, 0, &resp);
        return cr_relay(r, &rr, &resp);
    }
}
