/* POST orders/validations and POST orders.
 *
 * Everything that can be decided here is, before the upstream is called:
 * media type, size, strict JSON (cr_jscan: duplicate keys, UTF-8, depth,
 * string sizes), then the validator against the cached catalogs and payment
 * methods.  A body that passes goes upstream byte for byte as received.
 *
 * POST orders is made idempotent: a record per Idempotency-Key (or, without
 * one, per visitor and canonical body for a short window, which catches a
 * double click) lives in the same socache as the catalogs, so a replay,
 * a second child or a second server of a farm answers from it instead of
 * creating a second order. */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"

#include "mod_cryptorefills_int.h"
#include "cr_centry.h"
#include "cr_countries.h"
#include "cr_jscan.h"
#include "cr_json.h"
#include "cr_problem.h"
#include "cr_validate.h"

/* Without an Idempotency-Key, identical orders from one visitor within this
 * window are taken for a double click or a retry. */
#define CR_AUTO_IDEM_WINDOW   apr_time_from_sec(10)
/* Largest upstream answer kept for replay (an order is a few KB). */
#define CR_IDEM_MAX_BODY      (64 * 1024)
#define CR_IDEM_WAIT_STEP     apr_time_from_msec(50)
/* An attempt whose request never left (connect refused or timed out) created
 * nothing; there is no socache delete here, so its claim is replaced by a
 * short-lived record with this marker status, which a retry waits out and
 * then claims afresh.  Two seconds, not one: the memcache and redis
 * providers store whole seconds until expiry and refuse 0. */
#define CR_IDEM_NOT_SENT      0xFFFF
#define CR_IDEM_NOT_SENT_HOLD apr_time_from_sec(2)

/* Read the whole request body, at most max bytes.  Returns 0 or the HTTP
 * status to answer (413 too large, 400 unreadable). */
static int read_body(request_rec *r, apr_off_t max, char **out, apr_size_t *outlen)
{
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_bucket_brigade *bb;
    apr_size_t len = 0, cap;
    char *buf;
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
        cap = (apr_size_t)n + 1;
    }
    else {
        cap = 4096;
    }
    buf = apr_palloc(r->pool, cap);
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
            if ((apr_off_t)(len + n) > max) {
                apr_brigade_destroy(bb);
                return HTTP_REQUEST_ENTITY_TOO_LARGE;
            }
            if (len + n + 1 > cap) {
                char *nb;
                while (len + n + 1 > cap) {
                    cap *= 2;
                }
                nb = apr_palloc(r->pool, cap);
                memcpy(nb, buf, len);
                buf = nb;
            }
            memcpy(buf + len, data, n);
            len += n;
        }
        apr_brigade_cleanup(bb);
    }
    apr_brigade_destroy(bb);
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
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

/* ---- validation context ------------------------------------------------------------- */

typedef struct vbaton_t {
    request_rec *r;
    const cr_dir_conf *c;
} vbaton_t;

static json_object *catalog_for(void *baton, const char *country)
{
    vbaton_t *vb = baton;
    int stale = 0;
    json_object *cat;
    if (!cr_country_valid(country, strlen(country))) {
        return NULL;    /* the validator reports the country itself */
    }
    cat = cr_cache_json(vb->r, vb->c, CR_ROUTE_BRANDS, country, &stale);
    /* A stale catalog may miss a brand added since: never refuse a sale on
     * its word. */
    return stale ? NULL : cat;
}

/* ---- idempotency ----------------------------------------------------------------------- */

static int replay(request_rec *r, const cr_idem_rec *rec)
{
    CR_COUNT(idem_replays);
    apr_table_setn(r->headers_out, "Idempotent-Replayed", "true");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    return cr_send(r, rec->status, "application/json",
                   apr_pstrmemdup(r->pool, rec->body, rec->len), rec->len);
}

static int idem_key_ok(const char *k)
{
    apr_size_t n = 0;
    for (; k[n]; n++) {
        if (k[n] < 0x21 || k[n] > 0x7e || n >= 255) {
            return 0;
        }
    }
    return n > 0;
}

/* Forward a valid order exactly once per key. */
static int create_order(request_rec *r, const cr_dir_conf *c, const cr_route_req *rr,
                        const char *country, const char *body, apr_size_t blen,
                        json_object *obj)
{
    const char *key = apr_table_get(r->headers_in, "Idempotency-Key");
    apr_size_t clen, n;
    const char *canon = cr_validate_canonical(r->pool, obj, &clen);
    apr_uint64_t bh = cr_hash64(canon, clen);
    apr_interval_time_t window, hold;
    apr_uint64_t shop;
    const char *name;
    cr_idem_rec rec, old;
    unsigned char *enc, *buf;
    apr_size_t elen;
    apr_time_t deadline;
    cr_upstream_resp resp;
    int claim, definite = 0;

    /* Keys are per shop: two partners (or sandbox and production) sharing
     * one cache never see each other's records.  Hashed, since a network
     * cache shows ids in its keys and the partner id is a secret. */
    {
        const char *who = apr_pstrcat(r->pool, c->partner_id, "\n",
                                      c->upstream ? c->upstream : CR_DEFAULT_UPSTREAM, NULL);
        shop = cr_hash64(who, strlen(who));
    }
    hold = CR_CONF_TIME(c, connect_timeout, CR_DEF_CONNECT_TIMEOUT)
           + CR_CONF_TIME(c, timeout, CR_DEF_TIMEOUT) + apr_time_from_sec(5);
    if (key) {
        if (!idem_key_ok(key)) {
            return cr_send_problem(r, HTTP_BAD_REQUEST, "INVALID_REQUEST", "Idempotency-Key",
                                   "1-255 visible ASCII characters");
        }
        window = CR_CONF_TIME(c, idem_window, CR_DEF_IDEM_WINDOW);
        name = apr_psprintf(r->pool, "idem:%016" APR_UINT64_T_HEX_FMT ":%s", shop, key);
    }
    else {
        window = CR_AUTO_IDEM_WINDOW;
        name = apr_psprintf(r->pool, "idem-auto:%016" APR_UINT64_T_HEX_FMT ":%s:%016"
                            APR_UINT64_T_HEX_FMT, shop, r->useragent_ip, bh);
    }

    memset(&rec, 0, sizeof(rec));
    rec.state = CR_IDEM_IN_FLIGHT;
    rec.body_hash = bh;
    rec.created = apr_time_now();
    enc = cr_idem_encode(r->pool, &rec, &elen);
    buf = apr_palloc(r->pool, CR_IDEM_HDR_LEN + CR_IDEM_MAX_BODY);
    deadline = apr_time_now() + hold;

    for (;;) {
        claim = cr_cache_claim(r, CR_CID_IDEM, name, apr_time_now() + hold, enc, elen,
                               buf, CR_IDEM_HDR_LEN + CR_IDEM_MAX_BODY, &n);
        if (claim == -1) {
            /* The order still goes: refusing every sale while the cache is
             * down would cost more than the duplicate it might let by. */
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01404)
                          "idempotency record unavailable (cache error): creating the "
                          "order without duplicate protection");
            break;
        }
        if (claim != 0) {
            break;      /* ours */
        }
        if (!cr_idem_decode(buf, n, &old)) {
            break;      /* unreadable record: don't let it block orders */
        }
        if (old.state == CR_IDEM_UNKNOWN && old.status == CR_IDEM_NOT_SENT) {
            /* The last attempt never reached the upstream: nothing is bound
             * to this key.  Wait for the marker to expire, then claim. */
            if (apr_time_now() >= deadline) {
                apr_table_setn(r->headers_out, "Retry-After", "2");
                return cr_send_problem(r, HTTP_SERVICE_UNAVAILABLE, "UPSTREAM_UNAVAILABLE", NULL,
                                       "the upstream could not be reached; nothing was created");
            }
            apr_sleep(CR_IDEM_WAIT_STEP);
            continue;
        }
        if (old.body_hash != bh) {
            CR_COUNT(idem_conflicts);
            return cr_send_problem(r, HTTP_UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED",
                                   "Idempotency-Key",
                                   "this key was used for a different order body");
        }
        if (old.state == CR_IDEM_DONE) {
            return replay(r, &old);
        }
        if (old.state == CR_IDEM_UNKNOWN) {
            json_object *more = json_object_new_object();
            json_object_object_add(more, "order_state", json_object_new_string("unknown"));
            json_object_object_add(more, "reason", json_object_new_string(
                "an earlier attempt with this key may have created the order: check "
                "before placing it again"));
            CR_COUNT(idem_conflicts);
            return cr_send_problem_ex(r, HTTP_CONFLICT, "ORDER_OUTCOME_UNKNOWN", more, NULL);
        }
        /* In flight: wait for its answer, bounded. */
        if (apr_time_now() >= deadline) {
            CR_COUNT(idem_conflicts);
            apr_table_setn(r->headers_out, "Retry-After", "1");
            return cr_send_problem(r, HTTP_CONFLICT, "IDEMPOTENCY_IN_FLIGHT", "Idempotency-Key",
                                   "an order with this key is being created");
        }
        apr_sleep(CR_IDEM_WAIT_STEP);
    }

    cr_fetch(r, c, rr, country, body, blen, &resp);

    /* Definite answers are kept for replay; anything else may or may not
     * have created the order (timeouts, resets, 429 and 5xx on create). */
    memset(&rec, 0, sizeof(rec));
    rec.body_hash = bh;
    rec.created = apr_time_now();
    if (resp.rc == CR_UP_OK && resp.status < 500 && resp.status != 429 && resp.len > 0) {
        json_object *o;
        if (!cr_json_parse(r->pool, resp.body, resp.len, CR_JSON_MAX_DEPTH, &o)) {
            definite = 1;
            if (resp.len <= CR_IDEM_MAX_BODY) {
                rec.state = CR_IDEM_DONE;
                rec.status = (int)resp.status;
                rec.body = resp.body;
                rec.len = resp.len;
            }
            else {
                /* A real answer (an order may exist) too large to keep for
                 * replay: the buyer gets it now; a retry is told the outcome
                 * is unknown rather than creating a second order. */
                ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01403)
                              "upstream answer to an order (status %ld, %" APR_SIZE_T_FMT
                              " bytes) is too large to keep for replay", resp.status, resp.len);
            }
        }
    }
    if (!rec.state) {
        /* Any failure before the request went out (connect refused, or a
         * connect timeout, which libcurl reports as a timeout) created
         * nothing: the key must not stay marked unknown for the window. */
        rec.state = (resp.rc != CR_UP_OK && !resp.request_sent) ? 0 : CR_IDEM_UNKNOWN;
    }
    if (claim == 1) {
        if (rec.state) {
            enc = cr_idem_encode(r->pool, &rec, &elen);
            if (cr_cache_put(r, CR_CID_IDEM, name, apr_time_now() + window, enc, elen)
                != APR_SUCCESS) {
                ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01401)
                              "cannot store the idempotency record of an order: a retry "
                              "could create it again");
            }
        }
        else {
            /* Never reached the upstream: nothing was created, a retry may go. */
            rec.state = CR_IDEM_UNKNOWN;
            rec.status = CR_IDEM_NOT_SENT;
            enc = cr_idem_encode(r->pool, &rec, &elen);
            cr_cache_put(r, CR_CID_IDEM, name, apr_time_now() + CR_IDEM_NOT_SENT_HOLD, enc, elen);
        }
    }
    if (rec.state == CR_IDEM_UNKNOWN && resp.rc == CR_UP_OK && !definite) {
        /* A 5xx/429 answer or a non-JSON one: say the outcome is unknown. */
        json_object *more = json_object_new_object();
        json_object_object_add(more, "order_state", json_object_new_string("unknown"));
        json_object_object_add(more, "upstream_status", json_object_new_int((int)resp.status));
        if (resp.retry_after >= 0) {
            apr_table_setn(r->headers_out, "Retry-After",
                           apr_psprintf(r->pool, "%ld", resp.retry_after));
        }
        return cr_send_problem_ex(r, resp.status == 429 ? 429 : HTTP_BAD_GATEWAY,
                                  resp.status == 429 ? "RATE_LIMITED" : "UPSTREAM_UNAVAILABLE",
                                  more, NULL);
    }
    return cr_relay(r, rr, &resp);
}

/* ---- the handler ------------------------------------------------------------------------- */

int cr_orders_handler(request_rec *r, const cr_dir_conf *c, const cr_route_req *rr,
                      const char *country)
{
    int is_create = rr->def->id == CR_ROUTE_ORDERS;
    apr_off_t max = c->max_body >= 0 ? c->max_body : (apr_off_t)CR_DEF_MAX_BODY;
    char *body = NULL;
    apr_size_t blen = 0, off = 0, rlen;
    const char *why, *answer;
    json_object *obj = NULL;
    cr_jscan_limits lim = { 32, 8192, 1000 };
    cr_validate_ctx vctx;
    cr_validate_result res;
    vbaton_t vb;
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
    why = cr_jscan_check(body, blen, &lim, &off);
    if (!why) {
        /* One valid JSON value (the scanner says so): unless it is an object
         * it is refused as such here, before json-c, which cannot tell a
         * bare top-level number or literal ("42", "null") from a truncated
         * one without a terminating NUL and would call it truncated. */
        apr_size_t i = 0;
        while (i < blen && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r'
                            || body[i] == '\n')) {
            i++;
        }
        if (i < blen && body[i] != '{') {
            CR_COUNT(local_rejections);
            return cr_send_problem(r, HTTP_BAD_REQUEST, "INVALID_REQUEST", NULL,
                                   "the body must be a JSON object");
        }
        why = cr_json_parse(r->pool, body, blen, lim.max_depth + 1, &obj);
    }
    if (why) {
        json_object *more = cr_problem_more(NULL, why);
        json_object_object_add(more, "offset", json_object_new_int64((int64_t)off));
        CR_COUNT(local_rejections);
        return cr_send_problem_ex(r, HTTP_BAD_REQUEST, "INVALID_REQUEST", more, NULL);
    }
    if (!json_object_is_type(obj, json_type_object)) {
        CR_COUNT(local_rejections);
        return cr_send_problem(r, HTTP_BAD_REQUEST, "INVALID_REQUEST", NULL,
                               "the body must be a JSON object");
    }

    vb.r = r;
    vb.c = c;
    memset(&vctx, 0, sizeof(vctx));
    vctx.max_products = CR_CONF_INT(c, max_products, CR_DEF_MAX_PRODUCTS);
    vctx.is_create = is_create;
    vctx.payment_vias = cr_cache_json(r, c, CR_ROUTE_PAYMENT_VIAS, country, &stale);
    if (stale) {
        vctx.payment_vias = NULL;
    }
    vctx.catalog = catalog_for;
    vctx.baton = &vb;
    cr_validate_order(r->pool, obj, &vctx, &res);
    if (res.rc != CR_VALID) {
        CR_COUNT(local_rejections);
        answer = cr_validate_response(r->pool, &res, is_create, &rlen);
        apr_table_setn(r->headers_out, "Cache-Control", "no-store");
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, CRLOGNO(01402)
                      "%s refused locally: %s", rr->def->name, res.detail ? res.detail : "?");
        return cr_send(r, res.status ? res.status : HTTP_OK, "application/json", answer, rlen);
    }
    if (is_create) {
        return create_order(r, c, rr, country, body, blen, obj);
    }
    {
        cr_upstream_resp resp;
        cr_fetch(r, c, rr, country, body, blen, &resp);
        return cr_relay(r, rr, &resp);
    }
}
