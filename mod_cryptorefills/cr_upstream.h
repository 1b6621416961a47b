/* SPDX-License-Identifier: Apache-2.0 */
/* The upstream client behind APR types.
 *
 * cr_upstream_perform() gives a collected exchange with an http:// or
 * https:// URL, no proxy and no streaming callback to the module's own
 * HTTP/1.1 client (cr_h1client.h: same results, far cheaper per exchange);
 * everything else (proxies, on_data/on_tick/on_headers, and the xfer API
 * below) goes through libcurl, as described here.
 *
 * A per-process pool of easy handles keeps connections to the upstream
 * alive across requests (each handle owns a connection cache; handles are
 * taken LIFO so the warmest one is reused).  The pool is created in
 * child_init, so no handle or socket is ever inherited across fork.
 *
 * Every transfer verifies the upstream's certificate and host name.  Which
 * CAs are trusted and which proxy carries the traffic come with each
 * request (ca_file, proxy); an idle handle is only handed to a request with
 * the same pair, so connections made under one trust/proxy setting are never
 * reused under another.  Proxy variables in the process environment
 * (http_proxy, https_proxy, ALL_PROXY, NO_PROXY, ...) are never consulted. */
#ifndef CR_UPSTREAM_H
#define CR_UPSTREAM_H

#include <apr_pools.h>
#include <apr_thread_mutex.h>

typedef struct cr_upstream_pool cr_upstream_pool;

typedef enum {
    CR_UP_OK = 0,         /* an HTTP answer arrived (any status) */
    CR_UP_CONNECT,        /* could not connect (refused, DNS, TLS handshake) */
    CR_UP_TIMEOUT,        /* connect or whole-exchange timeout */
    CR_UP_TOO_LARGE,      /* answer over max_response */
    CR_UP_BROKEN,         /* connection failed after the request was sent */
    CR_UP_ABORTED,        /* the caller's callback asked to stop */
    CR_UP_INTERNAL        /* libcurl refused an option or ran out of memory */
} cr_upstream_rc;

/* Streaming callbacks (all optional).  on_data gets body bytes as they come
 * (then nothing is collected); returning non-zero aborts the transfer.
 * on_tick is called at least once a second while the transfer runs, data or
 * not (for heartbeats and client-gone checks); non-zero aborts. */
typedef int (*cr_upstream_data_fn)(void *baton, long status, const char *buf, apr_size_t len);
typedef int (*cr_upstream_tick_fn)(void *baton);
/* Called once the final response header block has arrived (status known,
 * no body byte yet); non-zero aborts. */
typedef int (*cr_upstream_headers_fn)(void *baton, long status, const char *content_type);

typedef struct cr_upstream_req {
    const char *method;            /* "GET" or "POST" */
    const char *url;               /* full URL */
    const char *const *headers;    /* "Name: value" lines, NULL-terminated */
    const char *body;              /* POST body, may contain NULs */
    apr_size_t body_len;
    long connect_timeout_ms;
    long timeout_ms;               /* 0: no overall limit (streams) */
    apr_size_t max_response;       /* cap on a collected body */
    int fresh_connection;          /* never send on a reused connection */
    const char *ca_file;           /* PEM CAs trusted instead of the system store; NULL: system */
    const char *proxy;             /* "http://host:port" or "https://..." (CONNECT for https
                                    * URLs); NULL or "": direct, whatever the environment says */
    cr_upstream_data_fn on_data;
    cr_upstream_tick_fn on_tick;
    cr_upstream_headers_fn on_headers;
    void *baton;
} cr_upstream_req;

typedef struct cr_upstream_resp {
    cr_upstream_rc rc;
    long status;                   /* HTTP status, 0 if none */
    const char *content_type;      /* NULL if none */
    long retry_after;              /* seconds, -1 if none */
    char *body;                    /* collected body (NUL-terminated), NULL when streamed */
    apr_size_t len;
    int request_sent;              /* the request left this host: outcome unknown on failure */
    int reused;                    /* sent on a connection that had carried requests before */
    long connects;                 /* new connections this exchange opened */
    const char *error;             /* libcurl's message on failure */
    double total_time;             /* seconds */
    const char *client;            /* which client carried it: "own" or "libcurl" (logs, tests) */
} cr_upstream_resp;

/* Once per process, before any thread: curl_global_init. */
apr_status_t cr_upstream_global_init(void);

/* A pool of at most max_idle idle handles, owned by p (cleaned up with it). */
apr_status_t cr_upstream_pool_create(apr_pool_t *p, int max_idle, const char *user_agent,
                                     cr_upstream_pool **out);

/* Perform one exchange; results in resp (allocated from p).  Thread-safe. */
void cr_upstream_perform(cr_upstream_pool *up, apr_pool_t *p,
                         const cr_upstream_req *req, cr_upstream_resp *resp);

/* The same exchange in three steps, for a caller that drives the transfer
 * itself (a curl multi handle in an event loop): start prepares a handle
 * from the pool with every option perform would set (NULL and resp->rc
 * set on failure); easy gives the CURL * to add to a multi handle
 * (CURLOPT_PRIVATE is left to the caller); finish takes libcurl's CURLcode for it
 * (after the caller removed it from its multi handle), fills resp like
 * perform, and gives the handle back to the pool.  The xfer lives in p;
 * callbacks run on whichever thread drives the transfer, one at a time.
 * With p NULL (streamed transfers only: on_data set) the xfer is on the
 * heap, resp's strings point into it, and cr_upstream_xfer_free frees it
 * (after finish, or instead of it: then the handle is dropped); for an xfer
 * in a pool cr_upstream_xfer_free does nothing. */
typedef struct cr_upstream_xfer cr_upstream_xfer;
cr_upstream_xfer *cr_upstream_xfer_start(cr_upstream_pool *up, apr_pool_t *p,
                                         const cr_upstream_req *req, cr_upstream_resp *resp);
void *cr_upstream_xfer_easy(cr_upstream_xfer *xf);
void cr_upstream_xfer_finish(cr_upstream_xfer *xf, int curl_result, cr_upstream_resp *resp);
void cr_upstream_xfer_free(cr_upstream_xfer *xf);

/* The TLS contexts (by CA file) of the connections the module makes
 * itself rather than through libcurl. */
struct cr_tls_reg *cr_upstream_pool_tls(cr_upstream_pool *up);

/* Connections opened by this pool's handles so far (for tests and status). */
apr_uint64_t cr_upstream_connects(cr_upstream_pool *up);

const char *cr_upstream_rc_name(cr_upstream_rc rc);

/* Configuration checks for the glue (messages allocated from p, NULL if fine).
 * A CA file must be a readable regular file holding at least one PEM
 * certificate; a proxy URL must be http:// or https:// with a host, and
 * carry no path, query or fragment. */
const char *cr_upstream_ca_check(apr_pool_t *p, const char *path);
const char *cr_upstream_proxy_check(apr_pool_t *p, const char *url);

#endif
