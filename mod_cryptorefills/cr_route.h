/* SPDX-License-Identifier: Apache-2.0 */
/* The route table: which browser-facing paths exist, what upstream call each
 * maps to, and which query parameters may pass.  Pure logic, no httpd. */
#ifndef CR_ROUTE_H
#define CR_ROUTE_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>

typedef enum {
    CR_ROUTE_NONE = 0,
    CR_ROUTE_COUNTRIES,
    CR_ROUTE_PAYMENT_VIAS,
    CR_ROUTE_BRANDS,
    CR_ROUTE_HOMEPAGE,
    CR_ROUTE_PRODUCTS,
    CR_ROUTE_PRICE,
    CR_ROUTE_VALIDATIONS,
    CR_ROUTE_ORDERS,
    CR_ROUTE_ORDER,
    CR_ROUTE_SUBSCRIBE,
    CR_ROUTE_MAX
} cr_route_id;

/* Route flags. */
#define CR_RF_LOCAL      0x01  /* answered without the upstream */
#define CR_RF_CACHEABLE  0x02  /* catalog-like: cached per country */
#define CR_RF_ORDER      0x04  /* order route: visitor address and UA go upstream */
#define CR_RF_BODY       0x08  /* POST with a JSON body */
#define CR_RF_COUNTRYQ   0x10  /* upstream query carries country_code (filled in) */
#define CR_RF_NO_STORE   0x20  /* answer with Cache-Control: no-store */
#define CR_RF_STREAM     0x40  /* Server-Sent Events relay */

typedef struct cr_route_def {
    cr_route_id id;
    const char *name;           /* for logs and counters */
    const char *method;         /* the one method served */
    const char *upstream;       /* upstream path; "%s" takes the path parameter */
    const char *const *params;  /* allowed query parameters, NULL-terminated */
    unsigned flags;
} cr_route_def;

/* Outcome of parsing a request: either a route with its parameters, or an
 * error to answer with (status, contract detail code, field, reason). */
typedef struct cr_route_req {
    const cr_route_def *def;
    const char *path_param;     /* CC or orderId, checked */
    apr_table_t *query;         /* decoded, allow-listed parameters */
    const char *country;        /* country named by the request, or NULL */
    int status;                 /* 0 when fine */
    const char *detail;
    const char *field;
    const char *reason;
} cr_route_req;

const cr_route_def *cr_route_def_get(cr_route_id id);

/* Match rel (the decoded path below the handler's base, without a leading
 * slash, e.g. "orders/abc/subscribe") and parse the raw query string args
 * (may be NULL).  method is the request method.  Fills rr; on any error
 * rr->status is set and nothing else is to be trusted beyond the error. */
void cr_route_parse(apr_pool_t *p, const char *rel, const char *method,
                    const char *args, cr_route_req *rr);

/* Order ids: [A-Za-z0-9_-]{1,64}. */
int cr_order_id_ok(const char *s);

/* The rest of uri below the <Location> prefix base ("/api" or "/api/"
 * both match "/api" and "/api/..." but not "/apix"), or NULL. */
const char *cr_path_below(const char *uri, const char *base);

/* Seconds as written in a directive: "3", "0.5", "1.25" (at most 9 digits,
 * 6 decimals, no sign, no floating point).  1 with *out in microseconds,
 * 0 when arg is not such a number. */
int cr_seconds_parse(const char *arg, apr_interval_time_t *out);
/* The shortest text for t in seconds: 1000000 -> "1", 1000 -> "0.001". */
const char *cr_seconds_fmt(apr_pool_t *p, apr_interval_time_t t);

/* Does s hold a control character (below 0x20, or DEL)?  allow_tab lets a
 * horizontal tab through (it is legal inside an HTTP header value). */
int cr_has_ctl(const char *s, int allow_tab);

/* Percent-encode per RFC 3986 (unreserved characters kept). */
char *cr_url_encode(apr_pool_t *p, const char *s);

/* Build the upstream path and query: base path of the route with the path
 * parameter, then the allowed parameters in the route's canonical order,
 * re-encoded, with country_code filled in from country where the route
 * carries one.  Returns e.g. "/v2/brands?country_code=US". */
const char *cr_route_upstream_path(apr_pool_t *p, const cr_route_req *rr,
                                   const char *country);

#endif
