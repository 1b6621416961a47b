/* SPDX-License-Identifier: Apache-2.0 */
/* Idempotency of POST orders.
 *
 * A record per Idempotency-Key (or, without one, per visitor and canonical
 * body for a short window, which catches a double click) lives in the same
 * shared store as the catalogs, so a replay, a second child or a second
 * server of a farm answers from it instead of creating a second order.
 *
 * The seam: cr_idem_begin claims the key (or answers: replay, conflict, in
 * flight), the caller calls the upstream, cr_idem_settle records the
 * outcome and answers.  Only this file knows how records are kept. */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "apr_strings.h"

#include "mod_cryptorefills_int.h"
#include "cr_json.h"
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

struct cr_idem_claim {
    const char *name;           /* the record's name */
    apr_uint64_t body_hash;     /* of the canonical order */
    apr_interval_time_t window; /* how long a definite answer is kept */
    int ours;                   /* 1: this request holds the record; 0: store unavailable */
};

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

cr_idem_claim *cr_idem_begin(request_rec *r, const cr_conf *c, json_object *order,
                             int *answered)
{
    const char *key = apr_table_get(r->headers_in, "Idempotency-Key");
    cr_idem_claim *cl = apr_pcalloc(r->pool, sizeof(*cl));
    apr_size_t clen, n, elen;
    const char *canon = cr_validate_canonical(r->pool, order, &clen);
    apr_uint64_t shop;
    cr_idem_rec rec, old;
    unsigned char *enc, *buf;
    apr_time_t deadline;
    int claim;

    cl->body_hash = cr_hash64(canon, clen);
    /* Keys are per shop: two partners (or sandbox and production) sharing
     * one cache never see each other's records.  Hashed, since a network
     * cache shows ids in its keys and the partner id is a secret. */
    {
        const char *who = apr_pstrcat(r->pool, c->partner_id, "\n", c->upstream, NULL);
        shop = cr_hash64(who, strlen(who));
    }
    if (key) {
        if (!idem_key_ok(key)) {
            *answered = cr_send_problem(r, HTTP_BAD_REQUEST, "INVALID_REQUEST",
                                        "Idempotency-Key", "1-255 visible ASCII characters");
            return NULL;
        }
        cl->window = c->idem_window;
        cl->name = apr_psprintf(r->pool, "idem:%016" APR_UINT64_T_HEX_FMT ":%s", shop, key);
    }
    else {
        cl->window = CR_AUTO_IDEM_WINDOW;
        cl->name = apr_psprintf(r->pool, "idem-auto:%016" APR_UINT64_T_HEX_FMT ":%s:%016"
                                APR_UINT64_T_HEX_FMT, shop, r->useragent_ip, cl->body_hash);
    }

    memset(&rec, 0, sizeof(rec));
    rec.state = CR_IDEM_IN_FLIGHT;
    rec.body_hash = cl->body_hash;
    rec.created = apr_time_now();
    enc = cr_idem_encode(r->pool, &rec, &elen);
    buf = apr_palloc(r->pool, CR_IDEM_HDR_LEN + CR_IDEM_MAX_BODY);
    deadline = apr_time_now() + c->exchange_hold;

    for (;;) {
        claim = cr_socache_claim(r, CR_CID_IDEM, cl->name, apr_time_now() + c->exchange_hold,
                                 enc, elen, buf, CR_IDEM_HDR_LEN + CR_IDEM_MAX_BODY, &n);
        if (claim == -1) {
            /* The order still goes: refusing every sale while the cache is
             * down would cost more than the duplicate it might let by. */
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01404)
                          "idempotency record unavailable (cache error): creating the "
                          "order without duplicate protection");
            return cl;
        }
        if (claim != 0) {
            cl->ours = 1;
            return cl;
        }
        if (!cr_idem_decode(buf, n, &old)) {
            return cl;      /* unreadable record: don't let it block orders */
        }
        if (old.state == CR_IDEM_UNKNOWN && old.status == CR_IDEM_NOT_SENT) {
            /* The last attempt never reached the upstream: nothing is bound
             * to this key.  Wait for the marker to expire, then claim. */
            if (apr_time_now() >= deadline) {
                apr_table_setn(r->headers_out, "Retry-After", "2");
                *answered = cr_send_problem(r, HTTP_SERVICE_UNAVAILABLE, "UPSTREAM_UNAVAILABLE",
                                            NULL, "the upstream could not be reached; nothing "
                                            "was created");
                return NULL;
            }
            apr_sleep(CR_IDEM_WAIT_STEP);
            continue;
        }
        if (old.body_hash != cl->body_hash) {
            CR_COUNT(idem_conflicts);
            *answered = cr_send_problem(r, HTTP_UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED",
                                        "Idempotency-Key",
                                        "this key was used for a different order body");
            return NULL;
        }
        if (old.state == CR_IDEM_DONE) {
            *answered = replay(r, &old);
            return NULL;
        }
        if (old.state == CR_IDEM_UNKNOWN) {
            json_object *more = json_object_new_object();
            json_object_object_add(more, "order_state", json_object_new_string("unknown"));
            json_object_object_add(more, "reason", json_object_new_string(
                "an earlier attempt with this key may have created the order: check "
                "before placing it again"));
            CR_COUNT(idem_conflicts);
            *answered = cr_send_problem_ex(r, HTTP_CONFLICT, "ORDER_OUTCOME_UNKNOWN", more, NULL);
            return NULL;
        }
        /* In flight: wait for its answer, bounded. */
        if (apr_time_now() >= deadline) {
            CR_COUNT(idem_conflicts);
            apr_table_setn(r->headers_out, "Retry-After", "1");
            *answered = cr_send_problem(r, HTTP_CONFLICT, "IDEMPOTENCY_IN_FLIGHT",
                                        "Idempotency-Key",
                                        "an order with this key is being created");
            return NULL;
        }
        apr_sleep(CR_IDEM_WAIT_STEP);
    }
}

int cr_idem_settle(request_rec *r, cr_idem_claim *cl, const cr_route_req *rr,
                   const cr_upstream_resp *resp)
{
    cr_idem_rec rec;
    unsigned char *enc;
    apr_size_t elen;
    int definite = 0;

    /* Definite answers are kept for replay; anything else may or may not
     * have created the order (timeouts, resets, 429 and 5xx on create). */
    memset(&rec, 0, sizeof(rec));
    rec.body_hash = cl->body_hash;
    rec.created = apr_time_now();
    if (resp->rc == CR_UP_OK && resp->status < 500 && resp->status != 429 && resp->len > 0) {
        json_object *o;
        if (!cr_json_parse(r->pool, resp->body, resp->len, CR_JSON_MAX_DEPTH, &o)) {
            definite = 1;
            if (resp->len <= CR_IDEM_MAX_BODY) {
                rec.state = CR_IDEM_DONE;
                rec.status = (int)resp->status;
                rec.body = resp->body;
                rec.len = resp->len;
            }
            else {
                /* A real answer (an order may exist) too large to keep for
                 * replay: the buyer gets it now; a retry is told the outcome
                 * is unknown rather than creating a second order. */
                ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01403)
                              "upstream answer to an order (status %ld, %" APR_SIZE_T_FMT
                              " bytes) is too large to keep for replay", resp->status, resp->len);
            }
        }
    }
    if (!rec.state) {
        /* Any failure before the request went out (connect refused, or a
         * connect timeout, which libcurl reports as a timeout) created
         * nothing: the key must not stay marked unknown for the window. */
        rec.state = (resp->rc != CR_UP_OK && !resp->request_sent) ? 0 : CR_IDEM_UNKNOWN;
    }
    if (cl->ours) {
        if (rec.state) {
            enc = cr_idem_encode(r->pool, &rec, &elen);
            if (cr_socache_put(r, CR_CID_IDEM, cl->name, apr_time_now() + cl->window, enc, elen)
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
            cr_socache_put(r, CR_CID_IDEM, cl->name, apr_time_now() + CR_IDEM_NOT_SENT_HOLD,
                           enc, elen);
        }
    }
    if (rec.state == CR_IDEM_UNKNOWN && resp->rc == CR_UP_OK && !definite) {
        /* A 5xx/429 answer or a non-JSON one: say the outcome is unknown. */
        return cr_answer_order_unknown(r, resp);
    }
    return cr_relay(r, rr, resp);
}
