/* SPDX-License-Identifier: Apache-2.0 */
/* Upstream calls: the one place an upstream request is built (URL, headers,
 * country, User-Agent, timeouts, limits) for collected and streamed calls
 * alike, and run through the process's upstream pool (created in
 * child_init, so no connection or curl handle crosses a fork): collected
 * calls without a proxy by the own HTTP/1.1 client, the rest by libcurl
 * (cr_upstream.h). */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "ap_mpm.h"
#include "apr_strings.h"

#include "mod_cryptorefills_int.h"
#include "cr_tls.h"

#include <curl/curl.h>

/* Largest upstream answer collected: a real US catalog is a few hundred KB;
 * anything near this is not a partner API answer. */
#define CR_MAX_UPSTREAM_BODY (8 * 1024 * 1024)
/* Longest browser User-Agent passed on to the upstream. */
#define CR_MAX_FORWARDED_UA  512

static cr_upstream_pool *upstream;  /* this process's, from child_init */
static const char *user_agent;      /* ours, from post_config */

apr_status_t cr_upstream_post_config(apr_pool_t *pconf)
{
    /* Single-threaded here: initialise what children only read. */
    apr_status_t rv = cr_upstream_global_init();
    if (rv == APR_SUCCESS) {
        /* "libcurl/X.Y.Z", not curl_version()'s list of every linked
         * library: libcurl formats the User-Agent byte by byte into each
         * request, so 200 bytes of library names cost ~30k instructions per
         * upstream call (bench/profile). */
        user_agent = apr_psprintf(pconf, "mod_cryptorefills/%s (libcurl/%s)", CR_MODULE_VERSION,
                                  curl_version_info(CURLVERSION_NOW)->version);
    }
    return rv;
}

void cr_upstream_child_init(apr_pool_t *pchild, server_rec *s)
{
    int threads = 1;
    apr_status_t rv;

    ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
    if (threads < 1) {
        threads = 1;
    }
    /* Idle handles to keep: one per worker thread covers the steady state
     * without letting a burst leave hundreds of idle sockets behind. */
    rv = cr_upstream_pool_create(pchild, threads, user_agent, &upstream);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, CRLOGNO(01004)
                     "cannot create the upstream connection pool");
    }
}

int cr_upstream_ready(void)
{
    return upstream != NULL;
}

const char *cr_upstream_user_agent(void)
{
    return user_agent;
}

struct cr_tls_ctx *cr_upstream_tls_ctx(const char *ca_file, const char **err)
{
    if (!upstream) {
        *err = "no upstream connection pool in this process";
        return NULL;
    }
    return cr_tls_reg_get(cr_upstream_pool_tls(upstream), ca_file, err);
}

static const char *const *build_headers(request_rec *r, apr_pool_t *p, const cr_conf *c,
                                        const char *country,
                                        const char *accept_line, int order_route,
                                        const char *last_event_id)
{
    apr_array_header_t *h = apr_array_make(p, 10, sizeof(const char *));
    const char *ua = apr_table_get(r->headers_in, "User-Agent");

    /* The configuration's lines were built by their directives (both are
     * required: the handler refuses a request before this without them). */
    APR_ARRAY_PUSH(h, const char *) = c->partner_line;
    APR_ARRAY_PUSH(h, const char *) = c->version_line;
    APR_ARRAY_PUSH(h, const char *) = apr_pstrcat(p, "X-Country-ISO-Code: ", country, NULL);
    APR_ARRAY_PUSH(h, const char *) = "Content-Type: application/json";
    APR_ARRAY_PUSH(h, const char *) = accept_line;
    if (order_route) {
        /* The upstream's fraud checks look at the buyer, not at us. */
        APR_ARRAY_PUSH(h, const char *) = apr_pstrcat(p, "X-Forwarded-For: ",
                                                      r->useragent_ip, NULL);
        /* A control character (CR, LF, NUL …) in a value copied into an
         * upstream header: httpd's parser refuses most, but another module
         * may set one. */
        if (ua && *ua && strlen(ua) <= CR_MAX_FORWARDED_UA && !cr_has_ctl(ua, 1)) {
            APR_ARRAY_PUSH(h, const char *) = apr_pstrcat(p, "User-Agent: ", ua, NULL);
        }
    }
    if (last_event_id) {
        APR_ARRAY_PUSH(h, const char *) = apr_pstrcat(p, "Last-Event-ID: ", last_event_id, NULL);
    }
    APR_ARRAY_PUSH(h, const char *) = NULL;
    return (const char *const *)h->elts;
}

void cr_upstream_build(request_rec *r, apr_pool_t *p, const cr_conf *c, const cr_route_req *rr,
                       const char *country, const char *body, apr_size_t blen,
                       const char *last_event_id, cr_upstream_req *req)
{
    const cr_route_def *def = rr->def;
    int stream = (def->flags & CR_RF_STREAM) != 0;

    memset(req, 0, sizeof(*req));
    req->method = def->method;
    req->url = apr_pstrcat(p, c->upstream, cr_route_upstream_path(p, rr, country), NULL);
    req->headers = build_headers(r, p, c, country,
                                 stream ? "Accept: text/event-stream" : "Accept: application/json",
                                 (def->flags & CR_RF_ORDER) != 0 || stream, last_event_id);
    req->body = body;
    req->body_len = blen;
    req->ca_file = c->ca_file;
    req->proxy = c->proxy;
    req->connect_timeout_ms = (long)apr_time_as_msec(c->connect_timeout);
    /* A stream has no overall limit: its handler bounds the head, the
     * silences and the lifetime itself. */
    req->timeout_ms = stream ? 0 : (long)apr_time_as_msec(c->timeout);
    req->max_response = stream ? 0 : CR_MAX_UPSTREAM_BODY;
    /* Creating an order is not idempotent: never on a connection that may
     * turn out dead and make libcurl send it again. */
    req->fresh_connection = def->id == CR_ROUTE_ORDERS;
}

/* Count a finished exchange's connections; any thread (atomics). */
static void count_connects(const cr_upstream_resp *resp)
{
    if (cr_stats && resp->connects > 0) {
        apr_atomic_add32(&cr_stats->upstream_connects, (apr_uint32_t)resp->connects);
    }
}

void cr_upstream_run(request_rec *r, const cr_upstream_req *req, cr_upstream_resp *resp)
{
    ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r, "upstream %s %s", req->method, req->url);
    cr_upstream_perform(upstream, r->pool, req, resp);
    CR_COUNT(upstream_requests);
    count_connects(resp);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, CRLOGNO(01101)
                  "upstream %s %s: %s, status %ld, %" APR_SIZE_T_FMT " bytes, %.3fs, %s client%s",
                  req->method, req->url, cr_upstream_rc_name(resp->rc), resp->status, resp->len,
                  resp->total_time, resp->client ? resp->client : "no",
                  resp->reused ? ", reused connection" : "");
}

cr_upstream_xfer *cr_upstream_start(apr_pool_t *p, const cr_upstream_req *req,
                                    cr_upstream_resp *resp)
{
    if (!upstream) {
        memset(resp, 0, sizeof(*resp));
        resp->rc = CR_UP_INTERNAL;
        resp->error = "no upstream connection pool in this process";
        return NULL;
    }
    CR_COUNT(upstream_requests);
    return cr_upstream_xfer_start(upstream, p, req, resp);
}

void cr_upstream_finish(cr_upstream_xfer *xf, int curl_result, cr_upstream_resp *resp)
{
    cr_upstream_xfer_finish(xf, curl_result, resp);
    count_connects(resp);
}

void cr_upstream_fetch(request_rec *r, const cr_conf *c, const cr_route_req *rr,
                       const char *country, const char *body, apr_size_t blen,
                       cr_upstream_resp *resp)
{
    cr_upstream_req req;
    cr_upstream_build(r, r->pool, c, rr, country, body, blen, NULL, &req);
    cr_upstream_run(r, &req, resp);
    cr_outcome_count(cr_outcome_of(resp->rc, resp->status), rr->def->id);
}
