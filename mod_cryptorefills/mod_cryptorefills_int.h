/* SPDX-License-Identifier: Apache-2.0 */
/* The glue's internal interfaces, file by file, from the top layer down
 * (see the layering in mod_cryptorefills.h: a file calls only the files
 * declared below its own section). */
#ifndef MOD_CRYPTOREFILLS_INT_H
#define MOD_CRYPTOREFILLS_INT_H

#include "httpd.h"
#include <json-c/json.h>

#include "mod_cryptorefills.h"
#include "mod_cryptorefills_config.h"
#include "mod_cryptorefills_shm.h"
#include "cr_route.h"
#include "cr_upstream.h"
#include "cr_record.h"

/* ---- mod_cryptorefills_metrics.c: the Prometheus metrics handler ---------------- */
int cr_metrics_handler(request_rec *r);

/* ---- mod_cryptorefills_handler.c: route and dispatch ----------------------------- */
int cr_handler(request_rec *r);

/* ---- mod_cryptorefills_orders.c: orders/validations and orders ------------------- */
int cr_orders_handler(request_rec *r, const cr_conf *c, const cr_route_req *rr,
                      const char *country);

/* ---- mod_cryptorefills_idem.c: idempotency of POST orders ------------------------ */
typedef struct cr_idem_claim cr_idem_claim;
/* post_config (second pass): open the idempotency store (the directive's,
 * else CryptorefillsCache's memcache/redis server, else a directory under
 * DefaultRuntimeDir).  child_init: its per-process part.  The mod_status
 * hook that prints the store's counts. */
int cr_idem_post_config(apr_pool_t *pconf, server_rec *s);
void cr_idem_child_init(apr_pool_t *pchild, server_rec *s);
void cr_idem_register_hooks(void);
/* The metrics handler: copy the store's record and byte counts into the
 * shm gauges (idem_entries_known set when the store knows them). */
void cr_idem_fill_gauges(void);
/* Claim the order's key (Idempotency-Key, or visitor + body identity for a
 * short window); body/blen: the order exactly as received.  Returns NULL
 * with *answered set to the status already sent (a replay, a conflict, a
 * bad key, the store unavailable), or the claim to pass to cr_idem_settle
 * once the upstream answered. */
cr_idem_claim *cr_idem_begin(request_rec *r, const cr_conf *c, const char *body,
                             apr_size_t blen, int *answered);
/* Record the outcome (kept for replay when definite) and answer. */
int cr_idem_settle(request_rec *r, cr_idem_claim *cl, const cr_route_req *rr,
                   const cr_upstream_resp *resp);

/* ---- mod_cryptorefills_stream.c: the order stream relay -------------------------- */
int cr_stream_handler(request_rec *r, const cr_conf *c, const cr_route_req *rr,
                      const char *country);

/* ---- mod_cryptorefills_catalog.c: catalog routes, the validator's catalogs ------- */
int cr_catalog_handler(request_rec *r, const cr_conf *c, const cr_route_req *rr,
                       const char *country);
/* A catalog-like route's answer for country, parsed, from the cache only
 * (never fetched: no upstream call); valid until r's pool is cleared; NULL
 * when no copy within its stale window is cached.  *stale is set when the
 * copy is past its freshness. */
json_object *cr_catalog_json(request_rec *r, const cr_conf *c, cr_route_id route,
                             const char *country, int *stale);

/* ---- mod_cryptorefills_copies.c: this process's copies of catalog entries --------- */
void cr_copies_child_init(apr_pool_t *pchild);
/* mod_status rows for this process's copies (parsed catalogs, variants). */
void cr_copies_register_hooks(void);
/* The variant's bytes (without header) for meta m, or NULL when evicted or
 * replaced by another generation meanwhile.  local_only: this process's
 * copies only, the shared store is not asked. */
const char *cr_copies_variant(request_rec *r, const char *name, const cr_record_meta *m,
                              int gz, int local_only, apr_size_t *len);
/* Keep a copy of a variant of entry m in this process (and remember m as
 * the last good entry of name). */
void cr_copies_keep(request_rec *r, const char *name, const cr_record_meta *m, int gz,
                    const char *bytes, apr_size_t len);
/* This process's last good entry for name (a copy in *m), and when a
 * refresh last failed while it was relied on (*failed_at); 0 if none, or
 * if the table no longer holds a variant this request can take (the
 * identity copy, or the gzip one when gz_ok: the request accepts gzip). */
int cr_copies_last_good(request_rec *r, const char *name, int gz_ok, cr_record_meta *m,
                        apr_time_t *failed_at);
/* Note that a refresh failed now while the last good entry m was relied on
 * (this process's back-off). */
void cr_copies_last_good_failed(request_rec *r, const char *name, const cr_record_meta *m);
/* The parsed catalog of name confirmed against the shared store within the
 * last second (*stale: as it was then), or NULL. */
json_object *cr_copies_parsed_recent(request_rec *r, const char *name, int *stale);
/* Whether the shared store had no usable entry for name within the last
 * second and no catalog was stored in this server since (no need to ask
 * it again); *gen: the catalog store counter now, read before the store is asked, to
 * give cr_copies_note_missing when it has no usable entry either (a store
 * in between then voids the note). */
int cr_copies_missing_recent(request_rec *r, const char *name, apr_uint64_t *gen);
void cr_copies_note_missing(request_rec *r, const char *name, apr_uint64_t gen);
/* The parsed catalog of entry m (parsed and kept on first use; a brands
 * catalog indexed for the validator), or NULL when its variant is gone or
 * not JSON.  Valid until r's pool is cleared. */
json_object *cr_copies_parsed(request_rec *r, const char *name, const cr_record_meta *m,
                              int stale, cr_route_id route);

/* ---- mod_cryptorefills_upstream.c: upstream calls -------------------------------- */
apr_status_t cr_upstream_post_config(apr_pool_t *pconf);
void cr_upstream_child_init(apr_pool_t *pchild, server_rec *s);
int cr_upstream_ready(void);
/* The User-Agent upstream requests carry unless they set one. */
const char *cr_upstream_user_agent(void);
/* The process's TLS context for connections the module makes itself,
 * trusting ca_file only (NULL: the system store); NULL with *err. */
struct cr_tls_ctx *cr_upstream_tls_ctx(const char *ca_file, const char **err);
/* Build the upstream request for a parsed route: URL, headers (partner,
 * country, Accept; on order routes the visitor's address and User-Agent),
 * timeouts and limits.  Streams (CR_RF_STREAM) ask for text/event-stream
 * with last_event_id, have no overall timeout and set no callbacks here.
 * The URL and header lines are allocated from p. */
void cr_upstream_build(request_rec *r, apr_pool_t *p, const cr_conf *c, const cr_route_req *rr,
                       const char *country, const char *body, apr_size_t blen,
                       const char *last_event_id, cr_upstream_req *req);
/* Run a built request (counts requests and connections, logs at debug). */
void cr_upstream_run(request_rec *r, const cr_upstream_req *req, cr_upstream_resp *resp);
/* The same run in steps, for a caller that drives the transfer itself (the
 * suspended relay's event loop, any thread): start takes a handle from this
 * process's pool and counts the request (NULL with resp set on failure;
 * the transfer lives in p); finish gives it back and counts connections. */
cr_upstream_xfer *cr_upstream_start(apr_pool_t *p, const cr_upstream_req *req,
                                    cr_upstream_resp *resp);
void cr_upstream_finish(cr_upstream_xfer *xf, int curl_result, cr_upstream_resp *resp);
/* Build, run, and count the outcome: one collected exchange. */
void cr_upstream_fetch(request_rec *r, const cr_conf *c, const cr_route_req *rr,
                       const char *country, const char *body, apr_size_t blen,
                       cr_upstream_resp *resp);

/* ---- mod_cryptorefills_respond.c: answers and errors ----------------------------- */
/* Answer with a body (copied by reference: body must live as long as r). */
int cr_send(request_rec *r, int status, const char *ctype, const char *body, apr_size_t len);
/* Answer with the contract's error shape; more is consumed. */
int cr_send_problem_ex(request_rec *r, int status, const char *detail, json_object *more,
                       const char *error);
int cr_send_problem(request_rec *r, int status, const char *detail,
                    const char *field, const char *reason);

/* What an upstream exchange came to, before looking at its body. */
typedef enum cr_outcome {
    CR_OUT_ANSWER,          /* 2xx */
    CR_OUT_OTHER_STATUS,    /* 1xx, 3xx */
    CR_OUT_REFUSED,         /* 4xx other than 429 */
    CR_OUT_RATE_LIMITED,    /* 429 */
    CR_OUT_BUSY,            /* 503 */
    CR_OUT_SERVER_ERROR,    /* other 5xx */
    CR_OUT_UNREACHABLE,     /* could not connect */
    CR_OUT_TIMEOUT,         /* connect, exchange or response-head timeout */
    CR_OUT_TOO_LARGE,       /* answer over the limit */
    CR_OUT_BROKEN,          /* connection broken, or aborted */
    CR_OUT_INTERNAL,        /* libcurl refused an option, out of memory */
    CR_OUT_COUNT
} cr_outcome;
cr_outcome cr_outcome_of(cr_upstream_rc rc, long status);
/* Count an outcome in its mod_status counter (if it has one), and an
 * upstream error in its route's counter too. */
void cr_outcome_count(cr_outcome o, cr_route_id route);

/* Relay a collected upstream answer: JSON passes with its status; anything
 * else becomes the contract's error for its outcome. */
int cr_relay(request_rec *r, const cr_route_req *rr, const cr_upstream_resp *resp);
/* An order whose creation may or may not have happened upstream (a 5xx,
 * 429 or non-JSON answer to POST orders). */
int cr_answer_order_unknown(request_rec *r, const cr_upstream_resp *resp);
/* An order stream that never opened: no head (status 0) or a non-2xx one. */
int cr_answer_stream_failure(request_rec *r, cr_outcome o, long status,
                             const cr_upstream_resp *resp);

/* ---- mod_cryptorefills_socache.c: the shared store -------------------------------- */
int cr_socache_pre_config(apr_pool_t *pconf);
int cr_socache_post_config(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s);
void cr_socache_child_init(apr_pool_t *pchild, server_rec *s);
const char *cr_socache_desc(void);
/* The shmcb segment's size in bytes, 0 for another provider. */
apr_int64_t cr_socache_shm_size(void);
void cr_socache_status(request_rec *r, int flags);
/* Plain records (see cr_record.h for ids). */
int cr_socache_get(request_rec *r, cr_cid_kind kind, const char *name, unsigned char *buf,
                   apr_size_t cap, apr_size_t *len);
apr_status_t cr_socache_put(request_rec *r, cr_cid_kind kind, const char *name,
                            apr_time_t expiry, unsigned char *data, apr_size_t len);
/* Take the refresh lease on name for `hold`: 1 when this request is now
 * the one refresher.  Unlease gives it back now (backoff 0) or keeps it
 * for backoff. */
int cr_socache_lease(request_rec *r, const char *name, apr_interval_time_t hold);
void cr_socache_unlease(request_rec *r, const char *name, apr_interval_time_t backoff);

#endif
