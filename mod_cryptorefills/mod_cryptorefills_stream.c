/* SPDX-License-Identifier: Apache-2.0 */
/* GET orders/{id}/subscribe: relay the upstream's Server-Sent Events.
 *
 * Under the event MPM over HTTP/1.x the stream is handed to the suspended
 * relay (mod_cryptorefills_async.c) and holds no worker while idle.
 * Otherwise (HTTP/2, worker, prefork) one libcurl transfer per subscription
 * runs on the request's thread (a worker pinned per open stream; the caps
 * below keep that safe).  Bytes
 * from the upstream go through the SSE parser; each complete event that
 * passes the order-stream policy is re-emitted in canonical form and
 * followed by a FLUSH bucket, so no filter (mod_deflate, mod_http2, a
 * buffer) holds it.  libcurl's progress callback, called at least once a
 * second, drives heartbeats, the lifetime limit, stall detection and the
 * client-gone check. */
#include <string.h>
#include <sys/socket.h>
#include <errno.h>

#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_mpm.h"
#include "apr_strings.h"
#include "apr_portable.h"

#include "mod_cryptorefills_int.h"
#include "mod_cryptorefills_async.h"
#include "cr_sse.h"
#include "cr_problem.h"

#define CR_STREAM_MAX_EVENT (256 * 1024)
#define CR_STREAM_RETRY_MS  3000

typedef struct stream_t {
    request_rec *r;
    const cr_conf *c;
    const char *order_id;
    apr_bucket_brigade *bb;
    cr_sse_relay *relay;
    apr_pool_t *scratch;
    int opened;             /* 200 and the first bytes sent */
    int done;               /* stop relayed, or lifetime over: end normally */
    int client_gone;
    long upstream_status;
    apr_time_t started, last_write, last_upstream_byte;
    apr_interval_time_t heartbeat, lifetime, stall, head_timeout;
    int head_timed_out;     /* no response head from the upstream in time */
    const char *end_reason;
} stream_t;

/* ---- writing to the browser ----------------------------------------------------- */

static int write_flush(stream_t *st, const char *data, apr_size_t len)
{
    request_rec *r = st->r;
    apr_status_t rv;

    if (st->client_gone || r->connection->aborted) {
        st->client_gone = 1;
        return -1;
    }
    if (len) {
        APR_BRIGADE_INSERT_TAIL(st->bb, apr_bucket_transient_create(data, len,
                                                                    st->bb->bucket_alloc));
    }
    APR_BRIGADE_INSERT_TAIL(st->bb, apr_bucket_flush_create(st->bb->bucket_alloc));
    rv = ap_pass_brigade(r->output_filters, st->bb);
    apr_brigade_cleanup(st->bb);
    if (rv != APR_SUCCESS || r->connection->aborted) {
        st->client_gone = 1;
        return -1;
    }
    st->last_write = apr_time_now();
    return 0;
}

/* Has the browser closed its side?  Over HTTP/1 a peek at the socket sees
 * an orderly close before any write would; anything readable (pipelined
 * bytes, TLS records) is left alone and heartbeats decide.  Under mod_http2
 * the request runs on a secondary connection (c->master set) whose socket
 * is mod_http2's one unconnected placeholder: a peek there fails with
 * ENOTCONN whatever the browser does.  A reset stream or a lost connection
 * shows instead as c->aborted (set by mod_http2 from the primary
 * connection) and as a failed write. */
static int client_closed(request_rec *r)
{
    apr_socket_t *sock;
    apr_os_sock_t fd;
    char b;
    ssize_t n;

    if (r->connection->aborted) {
        return 1;
    }
    if (r->connection->master) {
        return 0;
    }
    sock = ap_get_conn_socket(r->connection);
    if (!sock || apr_os_sock_get(&fd, sock) != APR_SUCCESS) {
        return 0;
    }
    n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* A graceful restart or a stop: this child is going away.  Ending the
 * stream lets the browser reconnect to the new generation now rather than
 * keep the old child alive until the stream's lifetime is over (or be
 * killed with it). */
static int mpm_stopping(void)
{
    int state = AP_MPMQ_RUNNING;
    return ap_mpm_query(AP_MPMQ_MPM_STATE, &state) == APR_SUCCESS
           && state == AP_MPMQ_STOPPING;
}

static int open_stream(stream_t *st)
{
    request_rec *r = st->r;
    char first[64];
    int n;

    r->status = HTTP_OK;
    ap_set_content_type(r, "text/event-stream");
    apr_table_setn(r->headers_out, "Cache-Control", "no-cache, no-transform");
    apr_table_setn(r->headers_out, "X-Accel-Buffering", "no");
    apr_table_setn(r->headers_out, "X-Content-Type-Options", "nosniff");
    /* Before the first byte: keep mod_deflate (and friends) out of it. */
    apr_table_setn(r->subprocess_env, "no-gzip", "1");
    apr_table_unset(r->headers_in, "Accept-Encoding");
    st->opened = 1;
    n = snprintf(first, sizeof(first), ": ok\nretry: %d\n\n", CR_STREAM_RETRY_MS);
    return write_flush(st, first, (apr_size_t)n);
}

/* ---- upstream callbacks ------------------------------------------------------------ */

static apr_status_t on_relay(void *baton, cr_sse_out_kind v, const cr_sse_event *ev,
                             const char *out, apr_size_t len)
{
    stream_t *st = baton;

    /* A dropped event's id and retry are still sent (out), so a browser's
     * reconnection state is what it would be without the relay. */
    if (out && write_flush(st, out, len) != 0) {
        return APR_ECONNABORTED;
    }
    if (cr_relay_account(st->r, st->r->server, st->order_id, CR_STREAM_MAX_EVENT, v, ev)
        == APR_EOF) {
        st->done = 1;
        st->end_reason = "stop event";
        return APR_EOF;
    }
    return APR_SUCCESS;
}

static int on_headers(void *baton, long status, const char *ctype)
{
    stream_t *st = baton;
    (void)ctype;
    st->upstream_status = status;
    if (status < 200 || status > 299) {
        return 1;   /* answered by the handler after the transfer */
    }
    st->last_upstream_byte = apr_time_now();
    return open_stream(st) != 0;
}

static int on_data(void *baton, long status, const char *buf, apr_size_t len)
{
    stream_t *st = baton;
    apr_status_t rv;
    (void)status;
    st->last_upstream_byte = apr_time_now();
    rv = cr_sse_relay_feed(st->relay, buf, len, on_relay, st);
    if (rv == APR_SUCCESS) {
        return 0;
    }
    if (rv == APR_ENOSPC) {
        st->end_reason = "upstream event over the size limit";
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, st->r, CRLOGNO(01302)
                      "upstream event for order %s exceeds %d bytes: ending the stream",
                      st->order_id, CR_STREAM_MAX_EVENT);
    }
    return 1;
}

static int on_tick(void *baton)
{
    stream_t *st = baton;
    apr_time_t now = apr_time_now();

    if (!st->opened) {
        /* Waiting for the upstream's response head: bounded, and given up
         * when the browser leaves. */
        if (client_closed(st->r)) {
            st->client_gone = 1;
            return 1;
        }
        if (now - st->started >= st->head_timeout) {
            st->head_timed_out = 1;
            return 1;
        }
        return 0;
    }
    if (client_closed(st->r)) {
        st->client_gone = 1;
        return 1;
    }
    if (mpm_stopping()) {
        st->done = 1;
        st->end_reason = "server restarting or stopping";
        return 1;
    }
    if (now - st->started >= st->lifetime) {
        st->done = 1;
        st->end_reason = "maximum lifetime";
        return 1;
    }
    if (now - st->last_upstream_byte >= st->stall) {
        st->done = 1;
        st->end_reason = "upstream stalled";
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, st->r, CRLOGNO(01303)
                      "no byte from the upstream for %" APR_TIME_T_FMT "s on the stream of "
                      "order %s: ending it so the browser reconnects",
                      apr_time_sec(now - st->last_upstream_byte), st->order_id);
        return 1;
    }
    if (now - st->last_write >= st->heartbeat) {
        if (write_flush(st, ": keep-alive\n\n", 14) != 0) {
            return 1;
        }
        CR_COUNT(stream_heartbeats);
    }
    return 0;
}

/* ---- the suspended relay (event MPM) ----------------------------------------------------- */

static int open_stream_cb(void *baton)
{
    return open_stream(baton);
}

/* Hand the stream to the child's event loop (mod_cryptorefills_async.c),
 * with the built request, the resolved limits and open_stream as the
 * callback that writes the first bytes.  SUSPENDED when it runs there;
 * DECLINED when this request can't be suspended after all (blocking
 * relay); OK when it ended before the first byte, with st and resp set as
 * the blocking relay would have left them, so the same answers follow. */
static int stream_async(stream_t *st, const cr_upstream_req *req, apr_pool_t *req_pool,
                        cr_upstream_resp *resp)
{
    cr_async_spec spec;
    cr_async_result res;

    memset(&spec, 0, sizeof(spec));
    spec.order_id = st->order_id;
    spec.req = req;
    spec.req_pool = req_pool;
    spec.heartbeat = st->heartbeat;
    spec.lifetime = st->lifetime;
    spec.stall = st->stall;
    spec.head_timeout = st->head_timeout;
    spec.max_event = CR_STREAM_MAX_EVENT;
    spec.open = open_stream_cb;
    spec.open_baton = st;
    cr_async_start(st->r, &spec, &res);
    if (res.outcome == CR_ASYNC_UNAVAILABLE) {
        return DECLINED;
    }
    if (res.outcome == CR_ASYNC_SUSPENDED) {
        return SUSPENDED;
    }
    *resp = res.resp;
    st->upstream_status = res.upstream_status;
    st->client_gone = res.outcome == CR_ASYNC_BROWSER_GONE;
    st->head_timed_out = res.outcome == CR_ASYNC_HEAD_TIMEOUT;
    return OK;
}

/* ---- the handler ----------------------------------------------------------------------- */

int cr_stream_handler(request_rec *r, const cr_conf *c, const cr_route_req *rr,
                      const char *country)
{
    stream_t *st = apr_pcalloc(r->pool, sizeof(*st));
    const char *last_id = apr_table_get(r->headers_in, "Last-Event-ID");
    cr_upstream_req req;
    cr_upstream_resp resp;
    apr_pool_t *scratch;
    cr_outcome o;
    int cap, relay;

    st->r = r;
    st->c = c;
    st->order_id = rr->path_param;
    st->heartbeat = c->heartbeat;
    st->lifetime = c->stream_lifetime;
    st->stall = c->stream_stall;
    /* The response head is an ordinary exchange: CryptorefillsTimeout, and
     * never longer than the stall timeout. */
    st->head_timeout = c->timeout;
    if (st->head_timeout > st->stall) {
        st->head_timeout = st->stall;
    }
    st->started = st->last_write = st->last_upstream_byte = apr_time_now();

    if (last_id && (strlen(last_id) > 256 || strpbrk(last_id, "\r\n"))) {
        last_id = NULL;
    }
    if (cr_stats) {
        cap = cr_shm_stream_slot(r, c->max_streams_per_client);
        if (cap) {
            CR_COUNT(streams_rejected);
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, CRLOGNO(01304)
                          "order stream refused: %s", cap == 1 ? "server-wide cap reached"
                          : "per-client cap reached");
            apr_table_setn(r->headers_out, "Retry-After", "5");
            return cr_send_problem_ex(r, HTTP_SERVICE_UNAVAILABLE, "TOO_MANY_STREAMS",
                                      cr_problem_more(NULL, cap == 1 ? "server-wide stream cap"
                                                      : "per-client stream cap"), NULL);
        }
        CR_COUNT(streams_total);
    }

    /* Both relays write the head through it (open_stream). */
    st->bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    /* A suspended stream copies its request: built in r->pool, it would
     * take r->pool into a second block for the stream's whole life. */
    scratch = cr_async_available(r) ? cr_async_scratch_pool() : NULL;
    cr_upstream_build(r, scratch ? scratch : r->pool, c, rr, country, NULL, 0, last_id, &req);
    req.on_headers = on_headers;
    req.on_data = on_data;
    req.on_tick = on_tick;
    req.baton = st;
    relay = scratch ? stream_async(st, &req, scratch, &resp) : DECLINED;
    if (relay != DECLINED) {
        scratch = NULL;     /* destroyed once the stream copied the request */
    }
    if (relay == SUSPENDED) {
        /* r->pool (and the stream slot's cleanup on it) ends on the worker
         * that finishes the stream. */
        return SUSPENDED;
    }
    if (relay == DECLINED) {
        /* The blocking relay's parser, made only for it: a suspended
         * stream's relay has its own, and the one here would take r->pool
         * past its first 8 KB block. */
        /* An oversized event is dropped like a malformed one; the stream goes on. */
        st->relay = cr_sse_relay_create(r->pool, CR_STREAM_MAX_EVENT, st->order_id);
        if (st->relay) {
            cr_upstream_run(r, &req, &resp);
        }
        if (scratch) {
            apr_pool_destroy(scratch);
        }
        if (!st->relay) {
            return cr_send_problem(r, HTTP_INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", NULL, NULL);
        }
    }

    if (!st->opened) {
        if (st->client_gone) {
            /* Nobody to answer: don't write, don't count an upstream failure. */
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, CRLOGNO(01308)
                          "browser left before the upstream stream of order %s answered",
                          st->order_id);
            r->connection->aborted = 1;
            return OK;
        }
        if (st->head_timed_out) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01309)
                          "the upstream stream for order %s sent no response head in %"
                          APR_TIME_T_FMT " ms", st->order_id, apr_time_as_msec(st->head_timeout));
            o = CR_OUT_TIMEOUT;
        }
        else if (st->upstream_status == 0) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01305)
                          "cannot reach the upstream stream for order %s (%s): %s",
                          st->order_id, cr_upstream_rc_name(resp.rc),
                          resp.error ? resp.error : "-");
            o = cr_outcome_of(resp.rc == CR_UP_OK ? CR_UP_BROKEN : resp.rc, 0);
        }
        else {
            /* A head arrived but not a 2xx one (the transfer was stopped
             * there): its status decides. */
            o = cr_outcome_of(CR_UP_OK, st->upstream_status);
        }
        cr_outcome_count(o, rr->def->id);
        return cr_answer_stream_failure(r, o, st->upstream_status, &resp);
    }
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, CRLOGNO(01306)
                  "stream of order %s ended after %" APR_TIME_T_FMT "s: %s", st->order_id,
                  apr_time_sec(apr_time_now() - st->started),
                  st->client_gone ? "browser went away" : st->end_reason ? st->end_reason
                  : resp.rc == CR_UP_OK ? "upstream ended it" : cr_upstream_rc_name(resp.rc));
    if (!st->client_gone) {
        /* End the chunked response properly. */
        APR_BRIGADE_INSERT_TAIL(st->bb, apr_bucket_eos_create(st->bb->bucket_alloc));
        ap_pass_brigade(r->output_filters, st->bb);
        apr_brigade_cleanup(st->bb);
    }
    return OK;
}
