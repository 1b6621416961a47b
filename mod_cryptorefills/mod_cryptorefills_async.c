/* SPDX-License-Identifier: Apache-2.0 */
/* Order streams without a thread each: the handler's side of the suspended
 * relay (cr_async_start hands a stream to the loop and waits for the
 * upstream's response head) and its lifecycle (the stream cap's sizing,
 * child_init, the hooks).  The threads, who owns what and the files of the
 * relay are described in mod_cryptorefills_async_int.h. */
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/resource.h>

#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "ap_mpm.h"
#include "mpm_common.h"
#include "apr_strings.h"
#include "apr_portable.h"

#include "mod_cryptorefills_int.h"
#include "mod_cryptorefills_async_int.h"

/* ---- the handler's side ------------------------------------------------------------------- */

int cr_async_available(request_rec *r)
{
    conn_rec *c = r->connection;
    return L.enabled && !apr_atomic_read32(&L.stopping) && !c->master && !r->main
           && !c->clogging_input_filters && c->cs != NULL && r->invoke_mtx != NULL
           && r->proto_num < HTTP_VERSION(2, 0) && ap_get_conn_socket(c) != NULL;
}

/* Copy n bytes plus a NUL to *at and move it on. */
static const char *heap_copy(char **at, const char *src)
{
    apr_size_t n = strlen(src) + 1;
    char *d = memcpy(*at, src, n);
    *at += n;
    return d;
}

apr_pool_t *cr_async_scratch_pool(void)
{
    apr_pool_t *p = NULL;
    if (!L.enabled || apr_pool_create_unmanaged_ex(&p, NULL, L.alloc) != APR_SUCCESS) {
        return NULL;
    }
    return p;
}

/* A stream is one heap block: the record, then the request's header
 * pointers and every string it keeps (order id, client address, URL, CA
 * file, proxy, header lines); its relay and libcurl transfer are on the
 * heap too, its mutex and condition shared (L.locks).  No pool of its own:
 * Debian's APR maps every 8 KB pool block separately, and ten thousand idle
 * streams would each keep one for a few hundred bytes. */
static astream *stream_create(request_rec *r, const cr_async_spec *spec)
{
    const cr_upstream_req *rq = spec->req;
    const char *ip = r->useragent_ip ? r->useragent_ip : "-";
    const char *const *hp;
    apr_size_t nh = 0, bytes = strlen(spec->order_id) + strlen(ip) + strlen(rq->url) + 3;
    const char **hdrs;
    char *at;
    astream *st;
    apr_os_sock_t fd = -1;

    for (hp = rq->headers; hp && *hp; hp++, nh++) {
        bytes += strlen(*hp) + 1;
    }
    bytes += (rq->ca_file ? strlen(rq->ca_file) + 1 : 0) + (rq->proxy ? strlen(rq->proxy) + 1 : 0);
    st = calloc(1, sizeof(*st) + (nh + 1) * sizeof(const char *) + bytes);
    if (!st) {
        return NULL;
    }
    hdrs = (const char **)(st + 1);
    at = (char *)(hdrs + nh + 1);

    st->id = apr_atomic_inc32(&L.next_id);
    st->mtx = L.locks[st->id % CR_ASYNC_LOCKS].mtx;
    st->cond = L.locks[st->id % CR_ASYNC_LOCKS].cond;
    st->r = r;
    st->c = r->connection;
    st->s = r->server;
    st->order_id = heap_copy(&at, spec->order_id);
    st->client_ip = heap_copy(&at, ip);
    st->head = HEAD_WAIT;
    st->fd = -1;
    st->heartbeat = spec->heartbeat;
    st->lifetime = spec->lifetime;
    st->stall = spec->stall;
    st->max_event = spec->max_event;
    st->started = st->last_queued = st->last_upstream_byte = apr_time_now();
    cr_outq_init(&st->out, CR_ASYNC_BUFFER_CAP);
    cr_outq_init(&st->wbuf, 0);

    /* The request, copied: the transfer outlives nothing of the caller's. */
    st->req = *rq;
    st->req.url = heap_copy(&at, rq->url);
    /* The CA file and proxy pick the idle handles it may use (and reuse). */
    st->req.ca_file = rq->ca_file ? heap_copy(&at, rq->ca_file) : NULL;
    st->req.proxy = rq->proxy ? heap_copy(&at, rq->proxy) : NULL;
    st->req.body = NULL;
    st->req.body_len = 0;
    for (hp = rq->headers, nh = 0; hp && *hp; hp++) {
        hdrs[nh++] = heap_copy(&at, *hp);
    }
    hdrs[nh] = NULL;
    st->req.headers = hdrs;
    st->req.timeout_ms = 0;
    st->req.on_tick = NULL;
    st->req.on_headers = cr_async_on_headers;
    st->req.on_data = cr_async_on_data;
    st->req.baton = st;

    st->relay = cr_sse_relay_create_heap(L.alloc, spec->max_event, st->order_id);
    if (!st->relay) {
        cr_async_stream_free(st);
        return NULL;
    }
    if (apr_os_sock_get(&fd, ap_get_conn_socket(r->connection)) == APR_SUCCESS) {
        st->fd = fd;
    }
    st->bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    return st;
}

void cr_async_start(request_rec *r, const cr_async_spec *spec, cr_async_result *res)
{
    astream *st;
    apr_time_t deadline;
    int head;

    memset(res, 0, sizeof(*res));
    res->resp.retry_after = -1;
    res->outcome = CR_ASYNC_UNAVAILABLE;
    if (!cr_async_available(r) || !cr_upstream_ready() || !(st = stream_create(r, spec))) {
        return;
    }
    if (spec->req_pool) {
        apr_pool_destroy(spec->req_pool);   /* copied */
    }
    /* An upstream without a proxy (http:// or https://): the loop's own
     * exchange; else a libcurl transfer. */
    switch (cr_async_h1_prepare(st)) {
    case 1:
        break;
    case 0:
        st->xf = cr_upstream_start(NULL, &st->req, &st->resp);
        if (st->xf) {
            st->easy = cr_upstream_xfer_easy(st->xf);
            curl_easy_setopt(st->easy, CURLOPT_PRIVATE, (char *)st);
            break;
        }
        /* fall through */
    default:
        res->outcome = CR_ASYNC_UPSTREAM_FAILED;
        res->resp.rc = st->resp.rc;
        res->resp.error = apr_pstrdup(r->pool, st->resp.error);
        cr_async_stream_free(st);
        return;
    }

    cr_async_send_cmd(CMD_ADD, st, st->id, NULL, 0, 0);

    /* Wait for the response head (bounded); the loop watches the browser
     * meanwhile and ends the stream if it leaves. */
    deadline = st->started + spec->head_timeout;
    apr_thread_mutex_lock(st->mtx);
    while (st->head == HEAD_WAIT) {
        apr_time_t now = apr_time_now();
        if (now >= deadline) {
            st->head = HEAD_ABANDONED;
            break;
        }
        apr_thread_cond_timedwait(st->cond, st->mtx, deadline - now);
    }
    head = st->head;
    apr_thread_mutex_unlock(st->mtx);

    if (head == HEAD_OK) {
        /* From here on the request ends on a worker, whatever happens. */
        STAT_INC(streams_open);
        STAT_INC(streams_total);
        /* The MPM never takes a suspended connection back: no keep-alive
         * after the stream.  "nokeepalive" keeps the chunked framing (the
         * stream's end is explicit) and says "Connection: close". */
        apr_table_setn(r->subprocess_env, "nokeepalive", "1");
        /* The connection's allocator (the MPM's, one per connection, gone
         * with c->pool when the stream ends) keeps every block freed into
         * it: the 8 KB buffer the response head is written from, later
         * ones a slow write set aside.  An idle stream needs none of them
         * again soon: give them back to the system as they are freed. */
        apr_allocator_max_free_set(apr_pool_allocator_get(r->connection->pool), 1);
        ap_set_module_config(r->connection->conn_config, &cryptorefills_module, st);
        if (spec->open(spec->open_baton) != 0 || r->connection->aborted) {
            int end;
            apr_thread_mutex_lock(st->mtx);
            st->gone = 1;
            end = st->loop_done;
            apr_thread_mutex_unlock(st->mtx);
            if (!end) {
                cr_async_send_cmd(CMD_ABORT, NULL, st->id, "browser went away", 1, 0);
            }
        }
        /* The event MPM turns a SUSPENDED request on an aborted connection
         * into a lingering close of its own -- it closes the socket and
         * recycles c->pool (r->pool with it) without running the suspend
         * hook, under a stream that still points there.  The stream owns
         * the connection's end: stream_finish marks it aborted again. */
        r->connection->aborted = 0;
        res->outcome = CR_ASYNC_SUSPENDED;
        return;
    }
    if (head == HEAD_ABANDONED) {
        cr_async_send_cmd(CMD_ABORT, NULL, st->id, "no response head in time", 0, 0);
    }
    apr_thread_mutex_lock(st->mtx);
    while (!st->loop_done) {
        apr_thread_cond_wait(st->cond, st->mtx);
    }
    apr_thread_mutex_unlock(st->mtx);

    res->outcome = head == HEAD_ABANDONED ? CR_ASYNC_HEAD_TIMEOUT
                   : st->gone ? CR_ASYNC_BROWSER_GONE : CR_ASYNC_UPSTREAM_FAILED;
    res->upstream_status = st->upstream_status;
    res->resp.rc = st->resp.rc;
    res->resp.status = st->resp.status;
    res->resp.retry_after = st->resp.retry_after;
    res->resp.error = st->resp.error ? apr_pstrdup(r->pool, st->resp.error) : NULL;
    res->resp.content_type = st->resp.content_type
                             ? apr_pstrdup(r->pool, st->resp.content_type) : NULL;
    cr_async_stream_free(st);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static int mpm_is_event(void)
{
    int async = 0;
    return ap_mpm_query(AP_MPMQ_IS_ASYNC, &async) == APR_SUCCESS && async
           && !strcmp(ap_show_mpm(), "event");
}

/* AsyncRequestWorkerFactor as configured (the MPM does not tell). */
static double worker_factor(void)
{
    ap_directive_t *d;
    double f = 2.0;

    for (d = ap_conftree; d; d = d->next) {
        if (!strcasecmp(d->directive, "AsyncRequestWorkerFactor") && d->args) {
            f = atof(d->args);
        }
    }
    return f > 0 ? f : 2.0;
}

apr_uint32_t cr_async_post_config(apr_pool_t *ptemp, server_rec *s, apr_uint32_t max_streams)
{
    int threads = 0, daemons = 0;
    struct rlimit rl;
    apr_uint64_t by_fd, by_mem, by_mpm, accepts, cap,
                 pages = (apr_uint64_t)sysconf(_SC_PHYS_PAGES),
                 page = (apr_uint64_t)sysconf(_SC_PAGESIZE);
    double factor;
    (void)ptemp;

    if (!mpm_is_event()) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, CRLOGNO(01509)
                     "order streams: blocking relay, one worker thread per open stream "
                     "(the %s MPM cannot suspend a request)", ap_show_mpm());
        return 0;
    }
    ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
    ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons);
    if (threads < 1) {
        threads = 1;
    }
    if (daemons < 1) {
        daemons = 1;
    }
    /* Two descriptors a stream (browser, upstream), some kept for the rest. */
    by_fd = 1000;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        by_fd = rl.rlim_cur > 256 ? (rl.rlim_cur - 256) / 2 : 1;
    }
    by_fd *= (apr_uint64_t)daemons;
    /* A quarter of the memory for streams. */
    by_mem = pages && page ? pages * page / 4 / CR_ASYNC_STREAM_BYTES : by_fd;
    /* The event MPM stops accepting connections on a child that holds more
     * than ThreadsPerChild + idle workers x AsyncRequestWorkerFactor of
     * them, and suspended streams count: with every worker idle a child
     * accepts ThreadsPerChild x (1 + factor).  Streams get the factor's
     * share; ThreadsPerChild connections a child stay for everything else
     * (catalogs, orders, keep-alive), so a full stream cap never makes
     * other requests wait in the listen queue instead of getting a 503. */
    factor = worker_factor();
    accepts = (apr_uint64_t)((double)threads * (1.0 + factor)) * (apr_uint64_t)daemons;
    by_mpm = (apr_uint64_t)((double)threads * factor) * (apr_uint64_t)daemons;
    cap = by_fd < by_mem ? by_fd : by_mem;
    if (by_mpm < cap) {
        cap = by_mpm;
    }
    if (cap < 1) {
        cap = 1;
    }
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, CRLOGNO(01510)
                 "order streams: suspended relay under the event MPM for HTTP/1.x (TLS "
                 "included), no worker held while a stream is idle; blocking relay for "
                 "HTTP/2 and connections with clogging input filters; up to %u streams "
                 "(%s; the MPM holds %" APR_UINT64_T_FMT ", descriptors %" APR_UINT64_T_FMT
                 ", memory %" APR_UINT64_T_FMT ")",
                 max_streams ? max_streams : (unsigned)cap,
                 max_streams ? "CryptorefillsMaxStreams" : "default", by_mpm, by_fd, by_mem);
    if (max_streams && max_streams > by_mpm) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, CRLOGNO(01511)
                     "order streams: CryptorefillsMaxStreams %u is more than the event MPM "
                     "holds beside other requests: it accepts about %" APR_UINT64_T_FMT
                     " connections (%d children x ThreadsPerChild %d x (1 + "
                     "AsyncRequestWorkerFactor %.1f)), of which %" APR_UINT64_T_FMT
                     " for streams; past that new connections wait unanswered instead of "
                     "getting 503: raise AsyncRequestWorkerFactor to %.0f or set "
                     "CryptorefillsMaxStreams lower", max_streams, accepts, daemons, threads,
                     factor, by_mpm,
                     (double)((max_streams + (apr_uint64_t)threads * daemons - 1)
                              / ((apr_uint64_t)threads * daemons)));
    }
    else if (max_streams && max_streams > (by_fd < by_mem ? by_fd : by_mem)) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, CRLOGNO(01514)
                     "order streams: CryptorefillsMaxStreams %u is more than the descriptors "
                     "(%" APR_UINT64_T_FMT ", two a stream) or memory (%" APR_UINT64_T_FMT
                     ") allow: raise the open-files limit (APACHE_ULIMIT_MAX_FILES) or set "
                     "CryptorefillsMaxStreams lower", max_streams, by_fd, by_mem);
    }
    return (apr_uint32_t)cap;
}

void cr_async_child_init(apr_pool_t *pchild, server_rec *s, cr_async_stats_t *stats)
{
    apr_interval_time_t t = s->timeout;

    memset(&L, 0, sizeof(L));
    L.epfd = L.evfd = -1;
    L.s = s;
    L.stats = stats;
    if (!mpm_is_event()) {
        return;
    }
    L.write_wait = t > 0 && t < CR_ASYNC_WRITE_WAIT ? t : CR_ASYNC_WRITE_WAIT;
    cr_async_loop_start(pchild);
}

static void child_stopping(apr_pool_t *pchild, int graceful)
{
    (void)pchild; (void)graceful;
    if (!L.enabled) {
        return;
    }
    /* New streams go to the blocking relay (which ends at once while the
     * MPM stops); open ones end now so the browsers reconnect to the new
     * generation and the old child can go. */
    apr_atomic_set32(&L.stopping, 1);
    cr_async_send_cmd(CMD_STOP_ALL, NULL, 0, NULL, 0, 0);
}

void cr_async_register_hooks(void)
{
    ap_hook_suspend_connection(cr_async_suspend_hook, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_stopping(child_stopping, NULL, NULL, APR_HOOK_MIDDLE);
}
