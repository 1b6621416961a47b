/* SPDX-License-Identifier: Apache-2.0 */
/* Writing answers and errors, and the one table that says what each
 * upstream outcome becomes: its mod_status counter, the answer of a
 * collected route without a JSON body, the answer to an order whose
 * creation is in doubt, and the answer of an order stream that never
 * opened. */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_filter.h"
#include "apr_strings.h"

#include "mod_cryptorefills_int.h"
#include "cr_jscan.h"
#include "cr_problem.h"

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

/* ---- the outcome table ------------------------------------------------------------ */

#define CR_AS_UPSTREAM 0    /* status: the upstream's own */
#define NO_COUNTER ((apr_size_t)-1)
#define CTR(f) APR_OFFSETOF(cr_stats_t, f)

typedef struct answer_t {
    int status;
    const char *detail;
} answer_t;

static const struct outcome_row {
    const char *name;
    apr_size_t counter;         /* offset in cr_stats_t, or NO_COUNTER */
    int retry_after;            /* pass the upstream's Retry-After on */
    answer_t collected;         /* a collected route whose answer is not JSON */
    answer_t order_unknown;     /* POST orders whose outcome is in doubt */
    answer_t stream;            /* an order stream that never opened */
    const char *stream_error;   /* ... its "error" message */
} outcomes[CR_OUT_COUNT] = {
#define UNAVAILABLE { HTTP_BAD_GATEWAY, "UPSTREAM_UNAVAILABLE" }
#define NO_STREAM "Failed to connect to upstream stream"
#define STREAM_ERR "Upstream returned an error"
    [CR_OUT_ANSWER] = { "answer", NO_COUNTER, 0,
        { HTTP_BAD_GATEWAY, "UPSTREAM_INVALID_RESPONSE" }, UNAVAILABLE,
        { HTTP_BAD_GATEWAY, "UPSTREAM_ERROR" }, STREAM_ERR },
    [CR_OUT_OTHER_STATUS] = { "other status", NO_COUNTER, 0,
        { HTTP_BAD_GATEWAY, "UPSTREAM_INVALID_RESPONSE" }, UNAVAILABLE,
        /* a redirect or an interim status can't be relayed as an error
         * answer (no Location, no body allowed): 502 */
        { HTTP_BAD_GATEWAY, "UPSTREAM_ERROR" }, STREAM_ERR },
    [CR_OUT_REFUSED] = { "4xx", CTR(upstream_err_4xx), 0,
        { CR_AS_UPSTREAM, "UPSTREAM_ERROR" }, UNAVAILABLE,
        { CR_AS_UPSTREAM, "UPSTREAM_ERROR" }, STREAM_ERR },
    [CR_OUT_RATE_LIMITED] = { "429", CTR(upstream_err_4xx), 1,
        { 429, "RATE_LIMITED" }, { 429, "RATE_LIMITED" },
        { CR_AS_UPSTREAM, "UPSTREAM_ERROR" }, STREAM_ERR },
    [CR_OUT_BUSY] = { "503", CTR(upstream_err_5xx), 1,
        UNAVAILABLE, UNAVAILABLE,
        { CR_AS_UPSTREAM, "UPSTREAM_ERROR" }, STREAM_ERR },
    [CR_OUT_SERVER_ERROR] = { "5xx", CTR(upstream_err_5xx), 0,
        UNAVAILABLE, UNAVAILABLE,
        { CR_AS_UPSTREAM, "UPSTREAM_ERROR" }, STREAM_ERR },
    [CR_OUT_UNREACHABLE] = { "unreachable", CTR(upstream_err_connect), 0,
        UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, NO_STREAM },
    [CR_OUT_TIMEOUT] = { "timeout", CTR(upstream_err_timeout), 0,
        { HTTP_GATEWAY_TIME_OUT, "UPSTREAM_TIMEOUT" }, { HTTP_GATEWAY_TIME_OUT, "UPSTREAM_TIMEOUT" },
        UNAVAILABLE, NO_STREAM },
    [CR_OUT_TOO_LARGE] = { "too large", CTR(upstream_err_invalid), 0,
        { HTTP_BAD_GATEWAY, "UPSTREAM_INVALID_RESPONSE" },
        { HTTP_BAD_GATEWAY, "UPSTREAM_INVALID_RESPONSE" }, UNAVAILABLE, NO_STREAM },
    [CR_OUT_BROKEN] = { "broken", CTR(upstream_err_invalid), 0,
        UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, NO_STREAM },
    [CR_OUT_INTERNAL] = { "internal", CTR(upstream_err_invalid), 0,
        { HTTP_INTERNAL_SERVER_ERROR, "INTERNAL_ERROR" },
        { HTTP_INTERNAL_SERVER_ERROR, "INTERNAL_ERROR" }, UNAVAILABLE, NO_STREAM },
#undef UNAVAILABLE
#undef NO_STREAM
#undef STREAM_ERR
};

cr_outcome cr_outcome_of(cr_upstream_rc rc, long status)
{
    switch (rc) {
    case CR_UP_OK:
        return status == 429 ? CR_OUT_RATE_LIMITED
             : status == 503 ? CR_OUT_BUSY
             : status >= 500 ? CR_OUT_SERVER_ERROR
             : status >= 400 ? CR_OUT_REFUSED
             : status >= 200 && status <= 299 ? CR_OUT_ANSWER : CR_OUT_OTHER_STATUS;
    case CR_UP_CONNECT:   return CR_OUT_UNREACHABLE;
    case CR_UP_TIMEOUT:   return CR_OUT_TIMEOUT;
    case CR_UP_TOO_LARGE: return CR_OUT_TOO_LARGE;
    case CR_UP_INTERNAL:  return CR_OUT_INTERNAL;
    default:              return CR_OUT_BROKEN;
    }
}

void cr_outcome_count(cr_outcome o, cr_route_id route)
{
    apr_size_t off = outcomes[o].counter, cls;
    if (off == NO_COUNTER) {
        return;
    }
    CR_COUNT_AT(off);
    cls = (off - APR_OFFSETOF(cr_stats_t, upstream_err_connect)) / sizeof(apr_uint32_t);
    if (off >= APR_OFFSETOF(cr_stats_t, upstream_err_connect) && cls < CR_ERR_CLASSES
        && route > CR_ROUTE_NONE && route < CR_ROUTE_MAX) {
        CR_COUNT(upstream_err_route[route][cls]);
    }
}

static int status_of(const answer_t *a, long upstream_status)
{
    return a->status == CR_AS_UPSTREAM ? (int)upstream_status : a->status;
}

static void pass_retry_after(request_rec *r, cr_outcome o, const cr_upstream_resp *resp)
{
    if (outcomes[o].retry_after && resp->retry_after >= 0) {
        apr_table_setn(r->headers_out, "Retry-After",
                       apr_psprintf(r->pool, "%ld", resp->retry_after));
    }
}

static void add_string(json_object *more, const char *key, const char *value)
{
    json_object_object_add(more, key, json_object_new_string(value));
}

/* ---- collected answers ------------------------------------------------------------- */

/* An exchange that brought no HTTP answer. */
static int answer_failure(request_rec *r, const cr_route_req *rr, cr_outcome o,
                          const cr_upstream_resp *resp)
{
    const answer_t *a = &outcomes[o].collected;
    json_object *more = json_object_new_object();

    if (o == CR_OUT_TOO_LARGE) {
        add_string(more, "reason", "upstream answer too large");
    }
    if (rr->def->id == CR_ROUTE_ORDERS && resp->request_sent) {
        /* The order may exist upstream: say so, so nobody retries blindly. */
        add_string(more, "order_state", "unknown");
    }
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01102)
                  "upstream %s for route %s failed (%s): %s", rr->def->method, rr->def->name,
                  cr_upstream_rc_name(resp->rc), resp->error ? resp->error : "-");
    if (!json_object_object_length(more)) {
        json_object_put(more);
        more = NULL;
    }
    return cr_send_problem_ex(r, a->status, a->detail, more, NULL);
}

int cr_relay(request_rec *r, const cr_route_req *rr, const cr_upstream_resp *resp)
{
    const cr_route_def *def = rr->def;
    cr_outcome o = cr_outcome_of(resp->rc, resp->status);
    const answer_t *a = &outcomes[o].collected;
    json_object *more;

    if (resp->rc != CR_UP_OK) {
        return answer_failure(r, rr, o, resp);
    }
    pass_retry_after(r, o, resp);
    if (cr_jscan_is_json(resp->body, resp->len)) {
        apr_table_setn(r->headers_out, "Cache-Control",
                       (def->flags & CR_RF_NO_STORE) ? "no-store" : "no-cache");
        return cr_send(r, (int)resp->status, "application/json", resp->body, resp->len);
    }
    more = json_object_new_object();
    json_object_object_add(more, "upstream_status", json_object_new_int((int)resp->status));
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01103)
                  "upstream answer for route %s is not JSON (status %ld, %" APR_SIZE_T_FMT
                  " bytes, %s)", def->name, resp->status, resp->len,
                  resp->content_type ? resp->content_type : "no content type");
    if (def->id == CR_ROUTE_ORDERS && resp->status < 400) {
        add_string(more, "order_state", "unknown");
    }
    return cr_send_problem_ex(r, status_of(a, resp->status), a->detail, more, NULL);
}

int cr_answer_order_unknown(request_rec *r, const cr_upstream_resp *resp)
{
    cr_outcome o = cr_outcome_of(resp->rc, resp->status);
    const answer_t *a = &outcomes[o].order_unknown;
    json_object *more = json_object_new_object();

    add_string(more, "order_state", "unknown");
    json_object_object_add(more, "upstream_status", json_object_new_int((int)resp->status));
    if (resp->retry_after >= 0) {
        apr_table_setn(r->headers_out, "Retry-After",
                       apr_psprintf(r->pool, "%ld", resp->retry_after));
    }
    return cr_send_problem_ex(r, status_of(a, resp->status), a->detail, more, NULL);
}

/* ---- streams ---------------------------------------------------------------------------- */

int cr_answer_stream_failure(request_rec *r, cr_outcome o, long status,
                             const cr_upstream_resp *resp)
{
    const answer_t *a = &outcomes[o].stream;
    pass_retry_after(r, o, resp);
    return cr_send_problem_ex(r, status_of(a, status), a->detail, NULL, outcomes[o].stream_error);
}
