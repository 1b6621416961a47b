/* Functions shared by the handler, cache and stream parts of the module. */
#ifndef MOD_CRYPTOREFILLS_INT_H
#define MOD_CRYPTOREFILLS_INT_H

#include "httpd.h"
#include <json-c/json.h>

#include "mod_cryptorefills.h"
#include "cr_route.h"
#include "cr_upstream.h"

/* Answer with a body (copied by reference: body must live as long as r). */
int cr_send(request_rec *r, int status, const char *ctype, const char *body, apr_size_t len);
/* Answer with the contract's error shape; more is consumed. */
int cr_send_problem_ex(request_rec *r, int status, const char *detail, json_object *more,
                       const char *error);
int cr_send_problem(request_rec *r, int status, const char *detail,
                    const char *field, const char *reason);

const char *cr_resolve_country(request_rec *r, const cr_dir_conf *c, const char *named);

/* Upstream request headers: partner headers, country, Accept; on order
 * routes the visitor's address and User-Agent. */
const char *const *cr_upstream_headers(request_rec *r, const cr_dir_conf *c, const char *country,
                                       const char *accept, int order_route,
                                       const char *last_event_id);

/* One upstream exchange for a parsed route; the body is collected. */
void cr_fetch(request_rec *r, const cr_dir_conf *c, const cr_route_req *rr, const char *country,
              const char *body, apr_size_t blen, cr_upstream_resp *resp);

/* Relay a collected upstream answer (JSON passes with its status; anything
 * else becomes the contract's 502/504 bodies). */
int cr_relay(request_rec *r, const cr_route_req *rr, const cr_upstream_resp *resp);
int cr_answer_failure(request_rec *r, const cr_route_req *rr, const cr_upstream_resp *resp);

/* mod_cryptorefills_cache.c: catalog routes served from the socache. */
int cr_cached_handler(request_rec *r, const cr_dir_conf *c, const cr_route_req *rr,
                      const char *country);

/* A catalog-like route's answer for country, parsed, from the cache (or
 * fetched through it); valid until r's pool is cleared; NULL when it can't
 * be had.  *stale is set when the copy is past its freshness. */
json_object *cr_cache_json(request_rec *r, const cr_dir_conf *c, cr_route_id route,
                           const char *country, int *stale);
void cr_cache_child_init_parsed(apr_pool_t *pchild);

/* Plain socache records (see cr_centry.h for ids). */
#include "cr_centry.h"
int cr_cache_get(request_rec *r, cr_cid_kind kind, const char *name, unsigned char *buf,
                 apr_size_t cap, apr_size_t *len);
apr_status_t cr_cache_put(request_rec *r, cr_cid_kind kind, const char *name, apr_time_t expiry,
                          unsigned char *data, apr_size_t len);
int cr_cache_claim(request_rec *r, cr_cid_kind kind, const char *name, apr_time_t expiry,
                   unsigned char *data, apr_size_t dlen, unsigned char *buf, apr_size_t cap,
                   apr_size_t *len);

/* mod_cryptorefills_orders.c: orders/validations and orders. */
int cr_orders_handler(request_rec *r, const cr_dir_conf *c, const cr_route_req *rr,
                      const char *country);

/* mod_cryptorefills_stream.c: the order stream relay. */
int cr_stream_handler(request_rec *r, const cr_dir_conf *c, const cr_route_req *rr,
                      const char *country);

#endif
