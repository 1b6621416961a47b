/* SPDX-License-Identifier: Apache-2.0 */
/* Idempotency of POST orders.
 *
 * A record per Idempotency-Key (or, without one, per visitor and body
 * identity for a short window, which catches a double click) lives in the
 * idempotency store (cr_idstore: a directory of this server by default,
 * memcached or Redis for a farm), apart from the catalog cache, so nothing
 * evicts it, restarts keep it, and a second child or a second server of a
 * farm answers from it instead of creating a second order.  Claims are
 * atomic in the store (link(), memcached add, Redis SET NX), per name:
 * two names never wait for each other.
 *
 * The seam: cr_idem_begin claims the key (or answers: replay, conflict, in
 * flight, store unavailable), the caller calls the upstream, cr_idem_settle
 * records the outcome and answers.  Only this file knows how records are
 * kept.  Calls down into respond, shm and config only. */
#include <string.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "ap_mpm.h"
#include "mod_status.h"
#include "unixd.h"
#include "apr_general.h"
#include "apr_strings.h"
#include "apr_optional_hooks.h"

#include "mod_cryptorefills_int.h"
#include "cr_canon.h"
#include "cr_idstore.h"
#include "cr_jscan.h"

/* Without an Idempotency-Key, identical orders from one visitor within this
 * window are taken for a double click or a retry. */
#define CR_AUTO_IDEM_WINDOW   apr_time_from_sec(10)
/* Largest upstream answer kept for replay (an order is a few KB). */
#define CR_IDEM_MAX_BODY      (64 * 1024)
#define CR_IDEM_WAIT_STEP     apr_time_from_msec(50)
/* Longest a request waits for another one with its key (enough for an
 * order's usual round trip; t/32 waits out a 1.5 s upstream). */
#define CR_IDEM_MAX_WAIT      apr_time_from_sec(5)

/* The store of this generation: opened by the parent in post_config (from
 * pconf), made per process in child_init; read-only after that. */
static cr_idstore *store;
static const char *store_spec;

struct cr_idem_claim {
    const char *name;           /* the record's name */
    apr_uint64_t body_hash;     /* the body's identity (cr_canon_digest) */
    apr_interval_time_t window; /* how long a definite answer is kept */
    int ours;                   /* 1: this request holds the record; 0: unprotected */
};

/* ---- the store's lifecycle ------------------------------------------------------ */

int cr_idem_post_config(apr_pool_t *pconf, server_rec *s)
{
    cr_srv_conf *sc = cr_srv_conf_get(s);
    const char *spec = sc->idem_spec, *err;
    cr_ids_conf ic;
    int threads = 1, shared = 0;

    store = NULL;
    if (!spec && sc->cache_spec && (!strncmp(sc->cache_spec, "memcache:", 9)
                                    || !strncmp(sc->cache_spec, "redis:", 6))) {
        spec = sc->cache_spec;      /* a farm's cache server: its records are shared */
        shared = 1;
    }
    if (!spec) {
        spec = apr_pstrcat(pconf, "file:",
                           ap_runtime_dir_relative(pconf, "cryptorefills-idempotency"), NULL);
    }
    err = cr_ids_parse(pconf, spec, &ic);
    if (!err) {
        if (geteuid() == 0) {
            /* The parent creates the directory as root; children write as User. */
            ic.chown = 1;
            ic.uid = (long)ap_unixd_config.user_id;
            ic.gid = (long)ap_unixd_config.group_id;
        }
        ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
        threads = threads > 0 ? threads : 1;
        if (ap_find_linked_module("mod_http2.c")) {
            /* HTTP/2 requests run in mod_http2's own workers, beside the
             * MPM's: H2MaxWorkers defaults to 3/2 x ThreadsPerChild (a
             * larger setting is not queryable; its extra threads wait for
             * a connection, at most the store's timeout). */
            threads += threads * 3 / 2;
        }
        ic.max_conns = threads;     /* one connection per request thread at most */
        err = cr_ids_open(pconf, &ic, &store);
    }
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, CRLOGNO(01406)
                     "cannot open the idempotency store %s: %s", spec, err);
        store = NULL;
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    store_spec = spec;
    if (shared) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, CRLOGNO(01410)
                     "CryptorefillsIdempotencyStore unset: order records share %s with the "
                     "catalog cache, whose entries can evict them when it is full; set "
                     "CryptorefillsIdempotencyStore to an instance of their own", spec);
    }
    if ((err = cr_ids_eviction_risk(store, pconf)) != NULL) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, CRLOGNO(01411)
                     "idempotency store %s may evict order records (%s): a retry after an "
                     "eviction can create the order again; use maxmemory-policy noeviction",
                     spec, err);
    }
    return OK;
}

void cr_idem_child_init(apr_pool_t *pchild, server_rec *s)
{
    const char *err = store ? cr_ids_child_init(store, pchild) : NULL;
    if (err) {
        /* Every claim of this child then answers "unavailable": keyed
         * orders get 503, none is created unprotected. */
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, CRLOGNO(01407)
                     "idempotency store %s unusable in this child: %s", store_spec, err);
    }
}

/* ---- counts: mod_status and the metrics gauges -------------------------------------- */

void cr_idem_fill_gauges(void)
{
    cr_ids_stats st;
    if (!store || !cr_stats || strcmp(cr_ids_kind_name(store), "file")) {
        return;         /* memcached and Redis keep their own counts */
    }
    cr_ids_get_stats(store, &st);
    apr_atomic_set32(&cr_stats->idem_entries, (apr_uint32_t)st.entries);
    apr_atomic_set32(&cr_stats->idem_bytes,
                     st.bytes > 0xFFFFFFFFu ? 0xFFFFFFFFu : (apr_uint32_t)st.bytes);
    apr_atomic_set32(&cr_stats->idem_entries_known, 1);
}

static int status_hook(request_rec *r, int flags)
{
    cr_ids_stats st;
    apr_size_t i;
    const struct { const char *name; apr_uint64_t v; } *row, rows[] = {
        { "idem_store_entries", 0 }, { "idem_store_bytes", 0 },
        { "idem_store_max_entries", 0 }, { "idem_store_max_bytes", 0 },
        { "idem_store_claims", 0 }, { "idem_store_exists", 0 },
        { "idem_store_reclaimed", 0 }, { "idem_store_full", 0 }, { "idem_store_errors", 0 },
    };
    apr_uint64_t v[sizeof(rows) / sizeof(rows[0])];

    if (!store) {
        return OK;
    }
    cr_ids_get_stats(store, &st);
    v[0] = st.entries; v[1] = st.bytes; v[2] = st.max_entries; v[3] = st.max_bytes;
    v[4] = st.claims; v[5] = st.exists; v[6] = st.reclaimed; v[7] = st.full; v[8] = st.errors;
    if (!(flags & AP_STATUS_SHORT)) {
        ap_rprintf(r, "<h3>mod_cryptorefills idempotency store: %s</h3>\n<table>\n",
                   cr_ids_kind_name(store));
    }
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        row = &rows[i];
        ap_rprintf(r, (flags & AP_STATUS_SHORT) ? "Cryptorefills%s: %" APR_UINT64_T_FMT "\n"
                   : "<tr><th>%s</th><td>%" APR_UINT64_T_FMT "</td></tr>\n", row->name, v[i]);
    }
    if (!(flags & AP_STATUS_SHORT)) {
        ap_rputs("</table>\n", r);
    }
    return OK;
}

void cr_idem_register_hooks(void)
{
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}

/* ---- claims --------------------------------------------------------------------------- */

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

/* The store could not answer (down, timed out, full).  With a key the
 * shopper asked for a guarantee the module cannot give now: 503, nothing
 * sent upstream.  Without one (the double-click key) the order goes, as a
 * refused sale costs more than the double click it might let by: counted. */
static cr_idem_claim *store_failed(request_rec *r, cr_idem_claim *cl, const char *key,
                                   cr_ids_rc irc, int *answered)
{
    if (!key) {
        CR_COUNT(idem_unprotected);
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01404)
                      "idempotency store %s: order without an Idempotency-Key created "
                      "without double-click protection",
                      irc == CR_IDS_FULL ? "full" : "unavailable");
        return cl;
    }
    CR_COUNT(idem_unavailable);
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, CRLOGNO(01405)
                  "idempotency store %s: order with an Idempotency-Key refused (503), "
                  "nothing sent upstream", irc == CR_IDS_FULL ? "full" : "unavailable");
    apr_table_setn(r->headers_out, "Retry-After", "2");
    *answered = cr_send_problem(r, HTTP_SERVICE_UNAVAILABLE, "IDEMPOTENCY_UNAVAILABLE",
                                "Idempotency-Key", "orders with a key cannot be protected "
                                "against duplicates now; nothing was created");
    return NULL;
}

cr_idem_claim *cr_idem_begin(request_rec *r, const cr_conf *c, const char *body,
                             apr_size_t blen, int *answered)
{
    const char *key = apr_table_get(r->headers_in, "Idempotency-Key");
    cr_idem_claim *cl = apr_pcalloc(r->pool, sizeof(*cl));
    apr_size_t n, elen;
    apr_uint64_t shop;
    cr_idem_rec rec, old;
    const unsigned char *got;
    unsigned char *enc;
    apr_time_t deadline;
    apr_interval_time_t claim_ttl;
    cr_ids_rc irc;

    /* The identity from the exact tokens received (cr_canon), not from
     * json-c's tree, which clamps integers beyond int64. */
    if (!cr_canon_digest(r->pool, body, blen, &cl->body_hash)) {
        cl->body_hash = cr_hash64(body, blen);      /* validated JSON: not reached */
    }
    /* Keys are per shop: two partners (or sandbox and production) sharing
     * one store never see each other's records.  Hashed, since a network
     * store shows names and the partner id is a secret (the store hashes
     * names again). */
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
    if (!store) {
        return store_failed(r, cl, key, CR_IDS_UNAVAILABLE, answered);
    }

    memset(&rec, 0, sizeof(rec));
    rec.state = CR_IDEM_IN_FLIGHT;
    rec.body_hash = cl->body_hash;
    rec.created = apr_time_now();
    /* Unique per attempt: a claim whose answer the store lost is removed
     * only while it is still this one (cr_idstore). */
    if (apr_generate_random_bytes((unsigned char *)&rec.token, sizeof(rec.token))
        != APR_SUCCESS) {
        rec.token = (apr_uint32_t)(rec.created ^ (apr_time_t)getpid());
    }
    enc = cr_idem_encode(r->pool, &rec, &elen);
    /* The in-flight claim is kept for the whole window, not just for one
     * exchange: if its request never settles (the child killed mid-order,
     * the store failing the completion), the key must not come free while
     * the order may exist upstream.  A claim older than one exchange can
     * take is answered as an unknown outcome instead. */
    claim_ttl = cl->window > c->exchange_hold ? cl->window : c->exchange_hold;
    /* A waiter holds a worker: it waits for the first answer at most
     * CR_IDEM_MAX_WAIT, then is told to come back (409 + Retry-After). */
    deadline = apr_time_now() + (c->exchange_hold < CR_IDEM_MAX_WAIT ? c->exchange_hold
                                                                      : CR_IDEM_MAX_WAIT);
    irc = cr_ids_claim(store, r->pool, cl->name, enc, elen, claim_ttl, &got, &n);

    for (;;) {
        if (irc == CR_IDS_CLAIMED) {
            cl->ours = 1;
            return cl;
        }
        if (irc == CR_IDS_ABSENT) {     /* released or expired while we waited */
            irc = cr_ids_claim(store, r->pool, cl->name, enc, elen, claim_ttl, &got, &n);
            continue;
        }
        if (irc != CR_IDS_EXISTS) {
            return store_failed(r, cl, key, irc, answered);
        }
        if (!cr_idem_decode(got, n, &old)) {
            /* Not a record this module wrote: it cannot tell what was sent. */
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, CRLOGNO(01408)
                          "idempotency store: unreadable record (%" APR_SIZE_T_FMT " bytes)", n);
            return store_failed(r, cl, key, CR_IDS_UNAVAILABLE, answered);
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
        if (old.state == CR_IDEM_UNKNOWN
            || apr_time_now() - old.created > c->exchange_hold) {
            /* An unknown outcome, or a claim abandoned mid-exchange. */
            json_object *more = json_object_new_object();
            json_object_object_add(more, "order_state", json_object_new_string("unknown"));
            json_object_object_add(more, "reason", json_object_new_string(
                old.state == CR_IDEM_UNKNOWN
                ? "an earlier attempt with this key may have created the order: check "
                  "before placing it again"
                : "an earlier attempt with this key was interrupted and may have created "
                  "the order: check before placing it again"));
            CR_COUNT(idem_conflicts);
            *answered = cr_send_problem_ex(r, HTTP_CONFLICT, "ORDER_OUTCOME_UNKNOWN", more, NULL);
            return NULL;
        }
        /* In flight elsewhere: wait for its answer, bounded. */
        if (apr_time_now() >= deadline) {
            CR_COUNT(idem_conflicts);
            apr_table_setn(r->headers_out, "Retry-After", "1");
            *answered = cr_send_problem(r, HTTP_CONFLICT, "IDEMPOTENCY_IN_FLIGHT",
                                        "Idempotency-Key",
                                        "an order with this key is being created");
            return NULL;
        }
        apr_sleep(CR_IDEM_WAIT_STEP);
        irc = cr_ids_get(store, r->pool, cl->name, &got, &n);
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
        /* The same test cr_relay applies before relaying a body (any depth:
         * a created order's answer json-c would refuse as too deep is still
         * relayed, so it is kept for replay too). */
        if (cr_jscan_is_json(resp->body, resp->len)) {
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
            if (cr_ids_replace(store, r->pool, cl->name, enc, elen, cl->window) != APR_SUCCESS) {
                ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01401)
                              "cannot store the idempotency record of an order: retries "
                              "with its key get 409 ORDER_OUTCOME_UNKNOWN");
            }
        }
        else if (cr_ids_release(store, r->pool, cl->name) != APR_SUCCESS) {
            /* Never reached the upstream: nothing was created, but the
             * claim stays: retries are told the outcome is unknown. */
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01409)
                          "cannot release the idempotency claim of an order that was never "
                          "sent: retries with its key get 409 ORDER_OUTCOME_UNKNOWN");
        }
    }
    if (rec.state == CR_IDEM_UNKNOWN && resp->rc == CR_UP_OK && !definite) {
        /* A 5xx/429 answer or a non-JSON one: say the outcome is unknown. */
        return cr_answer_order_unknown(r, resp);
    }
    return cr_relay(r, rr, resp);
}
