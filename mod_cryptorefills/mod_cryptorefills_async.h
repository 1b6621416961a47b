/* SPDX-License-Identifier: Apache-2.0 */
/* Order streams without a thread each (issue #12): under the event MPM a
 * stream's handler hands the browser connection and the upstream transfer
 * to a per-child event loop and returns SUSPENDED; workers run only to write
 * events, heartbeats and the end.  See docs/design (streams-without-threads)
 * for the httpd 2.4 facts this leans on, and mod_cryptorefills_async_int.h
 * for the protocol between the handler, the loop thread and the worker
 * callbacks, and for the relay's three files.
 *
 * The blocking relay stays for HTTP/2 (c->master), prefork and worker MPMs
 * and connections with clogging input filters: cr_async_available() says
 * per request which one applies. */
#ifndef MOD_CRYPTOREFILLS_ASYNC_H
#define MOD_CRYPTOREFILLS_ASYNC_H

#include "httpd.h"
#include "apr_atomic.h"

#include "cr_upstream.h"
#include "mod_cryptorefills_shm.h"
#include "cr_sse.h"

/* A stream to hand over.  Everything is copied: the caller's memory may go
 * once cr_async_start() returns. */
typedef struct cr_async_spec {
    const char *order_id;
    const cr_upstream_req *req;     /* url, headers, connect timeout (callbacks ignored) */
    /* The pool req's strings are in (cr_async_scratch_pool), or NULL: once
     * the stream has copied them cr_async_start destroys it, so a handler
     * waiting for the upstream's head holds no block (always, unless the
     * outcome is CR_ASYNC_UNAVAILABLE: then req is still the caller's). */
    apr_pool_t *req_pool;
    apr_interval_time_t heartbeat;  /* ": keep-alive" after this long without a write */
    apr_interval_time_t lifetime;   /* end the stream after this long */
    apr_interval_time_t stall;      /* end it after this long without an upstream byte */
    apr_interval_time_t head_timeout; /* the upstream's response head, at most */
    apr_size_t max_event;           /* the SSE data cap (cr_sse_relay) */
    /* Called on the handler's thread once the upstream answered 2xx, before
     * the request is suspended: set the response headers and write and
     * flush the first bytes.  Non-zero: the browser is gone. */
    int (*open)(void *baton);
    void *open_baton;
} cr_async_spec;

typedef enum {
    CR_ASYNC_SUSPENDED = 0,   /* handed over: the handler returns SUSPENDED */
    CR_ASYNC_UNAVAILABLE,     /* no loop in this child (use the blocking relay) */
    CR_ASYNC_UPSTREAM_FAILED, /* before the first byte: see upstream_status and resp */
    CR_ASYNC_HEAD_TIMEOUT,    /* no response head within head_timeout */
    CR_ASYNC_BROWSER_GONE     /* the browser left before the upstream answered */
} cr_async_outcome;

typedef struct cr_async_result {
    cr_async_outcome outcome;
    long upstream_status;     /* 0 when no response head arrived */
    cr_upstream_resp resp;    /* rc, error, retry_after (strings in r->pool) */
} cr_async_result;

/* post_config (second pass): log which relay mode applies and why, size
 * the default stream cap, and warn when the MPM's limits cannot hold
 * max_streams suspended connections.  Returns the suggested server-wide
 * cap for async mode (from file descriptors and memory), 0 when async mode
 * does not apply. */
apr_uint32_t cr_async_post_config(apr_pool_t *ptemp, server_rec *s, apr_uint32_t max_streams);

/* child_init: start the loop thread when the MPM is event (async). */
void cr_async_child_init(apr_pool_t *pchild, server_rec *s, cr_async_stats_t *stats);

/* register_hooks: child_stopping (ends every stream of the child cleanly on
 * a graceful restart or stop, so browsers reconnect to the new generation)
 * and suspend_connection (a stream ends only once its connection is fully
 * suspended).  Uses the connection's cryptorefills_module config slot. */
void cr_async_register_hooks(void);

/* Can this request be suspended?  Event MPM with a running loop, HTTP/1.x
 * (not a secondary HTTP/2 connection), no clogging input filters. */
int cr_async_available(request_rec *r);

/* A pool for building a stream's upstream request (URL, header lines)
 * before cr_async_start copies it, so the request does not take r->pool
 * further for the stream's whole life.  Unmanaged, on the relay's shared
 * allocator (its block is reused once destroyed); see spec->req_pool for
 * who destroys it.  NULL when the relay is not running. */
apr_pool_t *cr_async_scratch_pool(void);

/* Hand the stream over.  Waits (on the handler's thread) for the upstream's
 * response head, up to spec->head_timeout, watching the browser; then, on a
 * 2xx, calls spec->open and returns CR_ASYNC_SUSPENDED: the handler must
 * return SUSPENDED, and the request ends on a worker when the stream does
 * (r->pool's cleanups run then, on that worker).  Otherwise nothing was
 * written and the caller answers as the blocking relay would. */
void cr_async_start(request_rec *r, const cr_async_spec *spec, cr_async_result *res);

/* Both relay modes: count what became of an upstream block and log a drop
 * (r when on the request's own thread, else NULL and s).  APR_EOF for a
 * stop (the stream ends after it), else APR_SUCCESS. */
apr_status_t cr_relay_account(request_rec *r, server_rec *s, const char *order_id,
                              apr_size_t max_event, cr_sse_out_kind k, const cr_sse_event *ev);

#endif
