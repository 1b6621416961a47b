/* SPDX-License-Identifier: Apache-2.0 */
/* POST orders/validations and POST orders.
 *
 * Everything that can be decided here is, before the upstream is called:
 * media type, size, strict JSON (cr_jscan: duplicate keys, UTF-8, depth,
 * string sizes), then the validator against the cached catalogs and payment
 * methods.  A body that passes goes upstream byte for byte as received.
 *
 * POST orders is made idempotent by mod_cryptorefills_idem.c. */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"

#include "mod_cryptorefills_int.h"
#include "cr_countries.h"
#include "cr_buf.h"
#include "cr_jscan.h"
#include "cr_json.h"
#include "cr_problem.h"
#include "cr_validate.h"

/* Read the whole request body, at most max bytes.  Returns 0 or the HTTP
 * status to answer (413 too large, 400 unreadable). */
static int read_body(request_rec *r, apr_off_t max, char **out, apr_size_t *outlen)
{
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_bucket_brigade *bb;
    cr_buf buf;
    int seen_eos = 0;

    if (cl) {
        char *end;
        apr_off_t n;
        if (apr_strtoff(&n, cl, &end, 10) != APR_SUCCESS || *end || n < 0) {
            return HTTP_BAD_REQUEST;
        }
        if (n > max) {
            return HTTP_REQUEST_ENTITY_TOO_LARGE;
        }
        cr_buf_init(&buf, r->pool, (apr_size_t)n + 1);
    }
    else {
        cr_buf_init(&buf, r->pool, 4096);
    }
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    while (!seen_eos) {
        apr_bucket *e;
        apr_status_t rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES,
                                         APR_BLOCK_READ, HUGE_STRING_LEN);
        if (rv != APR_SUCCESS) {
            apr_brigade_destroy(bb);
            return rv == APR_ENOSPC || rv == APR_INCOMPLETE ? HTTP_REQUEST_ENTITY_TOO_LARGE
                                                            : HTTP_BAD_REQUEST;
        }
        for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb); e = APR_BUCKET_NEXT(e)) {
            const char *data;
            apr_size_t n;
            if (APR_BUCKET_IS_EOS(e)) {
                seen_eos = 1;
                break;
            }
            if (APR_BUCKET_IS_METADATA(e)) {
                continue;
            }
            if (apr_bucket_read(e, &data, &n, APR_BLOCK_READ) != APR_SUCCESS) {
                apr_brigade_destroy(bb);
                return HTTP_BAD_REQUEST;
            }
            if ((apr_off_t)(buf.len + n) > max) {
                apr_brigade_destroy(bb);
                return HTTP_REQUEST_ENTITY_TOO_LARGE;
            }
            cr_buf_append(&buf, data, n);
        }
        apr_brigade_cleanup(bb);
    }
    apr_brigade_destroy(bb);
    *out = cr_buf_str(&buf);
    *outlen = buf.len;
    return 0;
}

static int is_json_media_type(const char *ct)
{
    static const char want[] = "application/json";
    apr_size_t n = sizeof(want) - 1;
    if (!ct) {
        return 0;
    }
    while (*ct == ' ' || *ct == '\t') {
        ct++;
    }
    if (strncasecmp(ct, want, n)) {
        return 0;
    }
    ct += n;
    while (*ct == ' ' || *ct == '\t') {
        ct++;
    }
    return *ct == '\0' || *ct == ';';
}

/* Catalogs looked up for at most this many distinct countries of one body
 * (the first ones named); the deliveries of any further country are left
 * to the upstream's checks.  A cart rarely spans more than one country. */
#define CR_VALIDATE_MAX_COUNTRIES 3

/* ---- validation context ------------------------------------------------------------- */

typedef struct vbaton_t {
    request_rec *r;
    const cr_conf *c;
} vbaton_t;

/* The validator's catalog source: the brands catalog of a country. */
static json_object *validator_catalog(void *baton, const char *country)
{
    vbaton_t *vb = baton;
    int stale = 0;
    json_object *cat;
    if (!cr_country_valid(country, strlen(country))) {
        return NULL;    /* the validator reports the country itself */
    }
    cat = cr_catalog_json(vb->r, vb->c, CR_ROUTE_BRANDS, country, &stale);
    /* A stale catalog may miss a brand added since: never refuse a sale on
     * its word.  None cached: not fetched here either (one body could name
     * every country); the upstream decides. */
    if (!cat || stale) {
        CR_COUNT(validations_catalog_skipped);
        return NULL;
    }
    return cat;
}

/* ---- the handler ------------------------------------------------------------------------- */

int cr_orders_handler(request_rec *r, const cr_conf *c, const cr_route_req *rr,
                      const char *country)
{
    int is_create = rr->def->id == CR_ROUTE_ORDERS;
    apr_off_t max = c->max_body;
    char *body = NULL;
    apr_size_t blen = 0, off = 0, rlen;
    const char *why, *answer;
    cr_jdoc doc;
    cr_jscan_limits lim = { 32, 8192, 1000 };
    cr_validate_ctx vctx;
    cr_validate_result res;
    vbaton_t vb;
    cr_upstream_resp resp;
    int st, stale = 0;

    if (!is_json_media_type(apr_table_get(r->headers_in, "Content-Type"))) {
        CR_COUNT(local_rejections);
        return cr_send_problem(r, HTTP_UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE",
                               "Content-Type", "application/json required");
    }
    st = read_body(r, max, &body, &blen);
    if (st) {
        CR_COUNT(local_rejections);
        if (st == HTTP_REQUEST_ENTITY_TOO_LARGE) {
            r->connection->keepalive = AP_CONN_CLOSE;
            return cr_send_problem(r, st, "BODY_TOO_LARGE", NULL,
                                   apr_psprintf(r->pool, "at most %" APR_OFF_T_FMT " bytes", max));
        }
        return cr_send_problem(r, HTTP_BAD_REQUEST, "INVALID_REQUEST", NULL, "unreadable body");
    }
    /* One pass checks the text and records the document the validator
     * reads (no json-c tree for the body). */
    why = cr_jscan_parse(r->pool, body, blen, &lim, &off, &doc);
    if (why) {
        json_object *more = cr_problem_more(NULL, why);
        json_object_object_add(more, "offset", json_object_new_int64((int64_t)off));
        CR_COUNT(local_rejections);
        return cr_send_problem_ex(r, HTTP_BAD_REQUEST, "INVALID_REQUEST", more, NULL);
    }
    if (doc.tok[0].type != CR_JOBJECT) {
        CR_COUNT(local_rejections);
        return cr_send_problem(r, HTTP_BAD_REQUEST, "INVALID_REQUEST", NULL,
                               "the body must be a JSON object");
    }

    vb.r = r;
    vb.c = c;
    memset(&vctx, 0, sizeof(vctx));
    vctx.max_products = c->max_products;
    vctx.is_create = is_create;
    vctx.payment_vias = cr_catalog_json(r, c, CR_ROUTE_PAYMENT_VIAS, country, &stale);
    if (stale) {
        vctx.payment_vias = NULL;
    }
    vctx.catalog = validator_catalog;
    vctx.baton = &vb;
    vctx.max_countries = CR_VALIDATE_MAX_COUNTRIES;
    cr_validate_order(r->pool, &doc, &vctx, &res);
    if (res.countries_unchecked && cr_stats) {
        apr_atomic_add32(&cr_stats->validations_catalog_skipped,
                         (apr_uint32_t)res.countries_unchecked);
    }
    if (res.rc != CR_VALID) {
        CR_COUNT(local_rejections);
        answer = cr_validate_response(r->pool, &res, is_create, &rlen);
        apr_table_setn(r->headers_out, "Cache-Control", "no-store");
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, CRLOGNO(01402)
                      "%s refused locally: %s", rr->def->name, res.detail ? res.detail : "?");
        return cr_send(r, res.status ? res.status : HTTP_OK, "application/json", answer, rlen);
    }
    if (is_create) {
        /* Forward a valid order exactly once per key. */
        cr_idem_claim *claim = cr_idem_begin(r, c, body, blen, &st);
        if (!claim) {
            return st;
        }
        cr_upstream_fetch(r, c, rr, country, body, blen, &resp);
        return cr_idem_settle(r, claim, rr, &resp);
    }
    cr_upstream_fetch(r, c, rr, country, body, blen, &resp);
    return cr_relay(r, rr, &resp);
}
