/* SPDX-License-Identifier: Apache-2.0 */
/* Order streams without a thread each: the event-loop relay (see
 * mod_cryptorefills_async.h and docs/design streams-without-threads).
 *
 * Threads and who owns what
 * -------------------------
 * - The handler's thread prepares a stream (its own pool with its own
 *   allocator, the libcurl transfer, the SSE relay), sends it to the loop
 *   (CMD_ADD) and waits for the upstream's response head.  On a 2xx it
 *   writes the first bytes (spec->open) and returns SUSPENDED: the core
 *   then releases r->invoke_mtx and the event MPM forgets the connection.
 * - One loop thread per child owns, once a stream is added, its transfer
 *   (one curl multi handle driven by curl_multi_socket_action, sockets in
 *   an epoll set), its SSE relay and its browser socket's EPOLLRDHUP watch.
 *   Epoll events carry the fd, never a pointer (libcurl may close a socket
 *   mid-batch); commands arrive on a queue woken by an eventfd.  Relayed
 *   bytes go to the stream's pending queue (heap memory under the stream's
 *   mutex; never r->pool, whose allocator has no mutex).  A 1 s tick runs
 *   heartbeats and the lifetime and stall limits.
 * - A worker runs stream_cb (ap_mpm_register_timed_callback with delay 0,
 *   registered only when none is pending): it takes r->invoke_mtx, writes
 *   the pending bytes plus a FLUSH down r->output_filters with a bounded
 *   socket wait, and once the loop has let go of the stream (loop_done)
 *   ends the request: ap_finalize_request_protocol (or c->aborted),
 *   ap_process_request_after_handler (logs it, frees r->pool), state back
 *   to CONN_STATE_SUSPENDED, ap_start_lingering_close, and c->pool (the
 *   MPM's per-connection pool, whose cleanups fix the MPM's counters)
 *   destroyed.  That leans on the event MPM of httpd 2.4 (checked in
 *   event.c): the path is enabled only when ap_show_mpm() is "event".
 *
 * Lifetime of a stream: freed by whoever ends it last: the handler when the
 * stream never opened (it waits for loop_done first), else the worker that
 * finishes the request; loop_done is set only by the loop thread, after
 * which it never touches the stream again.  Commands other than CMD_ADD name
 * a stream by id, looked up in the loop's table, so a late command for a
 * stream already gone is ignored. */
#include <string.h>
#include <stdlib.h>
#include <errno.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>

#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_mpm.h"
#include "mpm_common.h"
#include "apr_strings.h"
#include "apr_hash.h"
#include "apr_portable.h"
#include "apr_thread_proc.h"
#include "apr_thread_mutex.h"
#include "apr_thread_cond.h"

#include <curl/curl.h>

#include "mod_cryptorefills_int.h"
#include "mod_cryptorefills_async.h"
#include "cr_sse.h"
#include "cr_outq.h"

/* How long a worker waits for a browser to take bytes before dropping it
 * (it reconnects with Last-Event-ID).  Bounded by the server's Timeout. */
#define CR_ASYNC_WRITE_WAIT     apr_time_from_sec(5)
/* Bytes a stream may have pending for its browser: a few large events. */
#define CR_ASYNC_BUFFER_CAP     (1024 * 1024)
/* What the streams' allocator keeps free for reuse (bytes). */
#define CR_ASYNC_MAX_FREE       (1024 * 1024)
#define CR_ASYNC_TICK           apr_time_from_sec(1)
/* Per-stream memory measured with TLS (+44 KB) plus parser buffers, for
 * sizing the default stream cap from memory. */
#define CR_ASYNC_STREAM_BYTES   (96 * 1024)

enum { HEAD_WAIT, HEAD_OK, HEAD_FAILED, HEAD_ABANDONED };
enum { FD_NONE, FD_CURL, FD_BROWSER };
enum { CMD_ADD, CMD_ABORT, CMD_STOP_ALL, CMD_QUIT };

typedef struct astream astream;
struct astream {
    apr_uint32_t id;
    request_rec *r;
    conn_rec *c;
    server_rec *s;
    apr_pool_t *pool;           /* L.alloc: handler, then loop, then finisher */
    apr_thread_mutex_t *mtx;
    apr_thread_cond_t *cond;
    const char *order_id;
    const char *client_ip;

    /* Under mtx. */
    cr_outq out;                /* relayed bytes waiting for a worker */
    int cb_pending;             /* a worker callback is registered or running */
    int loop_done;              /* the loop let go: no more bytes; the request may end */
    int head;                   /* HEAD_* */
    int gone;                   /* the browser left (or was dropped) */
    int slow;                   /* ... because it did not keep up */
    int suspended;              /* the MPM finished suspending the connection */
    long upstream_status;
    const char *end_reason;

    /* Loop thread only (the handler before CMD_ADD). */
    cr_upstream_req req;
    cr_upstream_xfer *xf;
    CURL *easy;
    cr_upstream_resp resp;
    cr_sse_relay *relay;
    int fd;                     /* the browser's socket, -1 when not watched */
    int in_multi;
    int opened;                 /* loop's copy of head == HEAD_OK */
    apr_time_t started, last_queued, last_upstream_byte;
    apr_interval_time_t heartbeat, lifetime, stall;
    apr_size_t max_event;
    const char *pending_reason; /* why a curl callback stopped the transfer */
    int pending_gone, pending_slow;
    astream *prev, *next;

    /* The worker holding r->invoke_mtx only. */
    cr_outq wbuf;
    apr_bucket_brigade *bb;
};

typedef struct cmd_t {
    int type;
    apr_uint32_t id;
    astream *st;                /* CMD_ADD only */
    const char *reason;
    int gone, slow;
    struct cmd_t *next;
} cmd_t;

typedef struct {
    char kind;
    astream *st;
} fdslot;

static struct {
    int enabled;                /* this child runs a loop */
    volatile apr_uint32_t stopping;
    server_rec *s;
    cr_async_stats_t *stats;
    apr_interval_time_t write_wait;
    volatile apr_uint32_t next_id;
    /* The streams' pools: one allocator per child, with a mutex (the
     * handler, the loop and the finisher threads create, grow and destroy
     * them) and a bound on what it keeps free.  An allocator per stream
     * would keep every block a stream ever used, a parser's per-event pool
     * included; shared, an idle stream holds one block.  Never destroyed: a
     * stream may end after pchild's cleanups. */
    apr_allocator_t *alloc;

    apr_thread_t *thread;
    apr_thread_mutex_t *qmtx;   /* guards the command queue only */
    cmd_t *qhead, *qtail;
    int evfd;

    /* Loop thread only. */
    int epfd;
    CURLM *multi;
    apr_pool_t *lpool;          /* own allocator */
    apr_hash_t *streams;        /* id -> astream */
    astream *list;
    apr_uint32_t nstreams;
    apr_time_t curl_deadline;   /* 0: none */
    fdslot *fds;
    int nfds;
    int quit;
} L;

#define STAT_INC(f) do { if (L.stats) apr_atomic_inc32(&L.stats->f); } while (0)
#define STAT_DEC(f) do { if (L.stats) apr_atomic_dec32(&L.stats->f); } while (0)

/* ---- the command queue ------------------------------------------------------------- */

static void send_cmd(int type, astream *st, apr_uint32_t id, const char *reason, int gone,
                     int slow)
{
    cmd_t *cmd = calloc(1, sizeof(*cmd));
    apr_uint64_t one = 1;

    if (!cmd) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, APR_ENOMEM, L.s, CRLOGNO(01501)
                     "order streams: out of memory queueing a command for the loop");
        return;
    }
    cmd->type = type;
    cmd->st = st;
    cmd->id = id;
    cmd->reason = reason;
    cmd->gone = gone;
    cmd->slow = slow;
    apr_thread_mutex_lock(L.qmtx);
    if (L.qtail) {
        L.qtail->next = cmd;
    }
    else {
        L.qhead = cmd;
    }
    L.qtail = cmd;
    apr_thread_mutex_unlock(L.qmtx);
    if (write(L.evfd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, L.s, CRLOGNO(01502)
                     "order streams: cannot wake the loop thread");
    }
}

/* ---- the loop's file descriptor table ------------------------------------------------- */

static fdslot *slot_of(int fd)
{
    if (fd < 0) {
        return NULL;
    }
    if (fd >= L.nfds) {
        int n = L.nfds ? L.nfds : 1024;
        fdslot *nf;
        while (n <= fd) {
            n *= 2;
        }
        nf = realloc(L.fds, sizeof(*nf) * (apr_size_t)n);
        if (!nf) {
            return NULL;
        }
        memset(nf + L.nfds, 0, sizeof(*nf) * (apr_size_t)(n - L.nfds));
        L.fds = nf;
        L.nfds = n;
    }
    return &L.fds[fd];
}

static int epoll_set(int fd, apr_uint32_t events, int known)
{
    struct epoll_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.fd = fd;
    if (epoll_ctl(L.epfd, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) == 0) {
        return 0;
    }
    /* Our table and the kernel's set disagree (a socket closed and its
     * number reused): try the other operation. */
    return epoll_ctl(L.epfd, known ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
}

static void fd_forget(int fd)
{
    fdslot *sl = slot_of(fd);
    if (sl && sl->kind != FD_NONE) {
        epoll_ctl(L.epfd, EPOLL_CTL_DEL, fd, NULL);
        sl->kind = FD_NONE;
        sl->st = NULL;
    }
}

/* ---- libcurl's side ------------------------------------------------------------------ */

static int sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    fdslot *sl = slot_of((int)s);
    apr_uint32_t events = 0;
    (void)e; (void)userp; (void)socketp;

    if (!sl) {
        return -1;
    }
    if (what == CURL_POLL_REMOVE) {
        if (sl->kind == FD_CURL) {
            fd_forget((int)s);
        }
        return 0;
    }
    if (what & CURL_POLL_IN) {
        events |= EPOLLIN;
    }
    if (what & CURL_POLL_OUT) {
        events |= EPOLLOUT;
    }
    if (epoll_set((int)s, events, sl->kind == FD_CURL) != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, L.s, CRLOGNO(01503)
                     "order streams: cannot watch an upstream socket");
        return -1;
    }
    sl->kind = FD_CURL;
    sl->st = NULL;
    return 0;
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    (void)m; (void)userp;
    L.curl_deadline = timeout_ms < 0 ? 0 : apr_time_now() + apr_time_from_msec(timeout_ms);
    return 0;
}

/* ---- handing bytes to a worker ----------------------------------------------------------- */

static void stream_cb(void *baton);

static void schedule(astream *st)
{
    apr_status_t rv = ap_mpm_register_timed_callback(0, stream_cb, st);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, L.s, CRLOGNO(01504)
                     "order streams: the MPM refused a callback; the stream of order %s "
                     "cannot end", st->order_id);
    }
}

/* Loop thread: queue bytes for the browser; a worker is called if none is. */
static apr_status_t queue_out(astream *st, const char *b, apr_size_t n)
{
    apr_status_t rv;
    int cb = 0;

    apr_thread_mutex_lock(st->mtx);
    rv = cr_outq_put(&st->out, b, n);
    if (rv == APR_SUCCESS && !st->cb_pending && st->head == HEAD_OK) {
        st->cb_pending = cb = 1;
    }
    apr_thread_mutex_unlock(st->mtx);
    if (rv != APR_SUCCESS) {
        st->pending_reason = "browser too slow (buffer full)";
        st->pending_gone = st->pending_slow = 1;
        return rv;
    }
    st->last_queued = apr_time_now();
    if (cb) {
        schedule(st);
    }
    return APR_SUCCESS;
}

apr_status_t cr_relay_account(request_rec *r, server_rec *s, const char *order_id,
                              apr_size_t max_event, cr_sse_out_kind k, const cr_sse_event *ev)
{
    const char *what;

    switch (k) {
    case CR_SSE_OUT_ORDER:
        CR_COUNT(stream_events);
        return APR_SUCCESS;
    case CR_SSE_OUT_STOP:
        CR_COUNT(stream_events);
        return APR_EOF;
    case CR_SSE_OUT_STATE:
        return APR_SUCCESS;
    case CR_SSE_OUT_DROP_OVERSIZE:
        CR_COUNT(stream_events_dropped);
        what = apr_psprintf(ev->pool, CRLOGNO(01307) "dropped an upstream event over %"
                            APR_SIZE_T_FMT " bytes on the stream of order %s", max_event,
                            order_id);
        break;
    default:
        CR_COUNT(stream_events_dropped);
        what = apr_psprintf(ev->pool, CRLOGNO(01301) "dropped a %s upstream event (type %.32s, %"
                            APR_SIZE_T_FMT " bytes) on the stream of order %s",
                            k == CR_SSE_OUT_DROP_MALFORMED ? "malformed" : "unknown",
                            ev->type ? ev->type : "?", ev->data_len, order_id);
        break;
    }
    if (r) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "%s", what);
    }
    else {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "%s", what);
    }
    return APR_SUCCESS;
}

static apr_status_t on_relay(void *baton, cr_sse_out_kind k, const cr_sse_event *ev,
                             const char *out, apr_size_t len)
{
    astream *st = baton;
    apr_status_t rv;

    if (out && (rv = queue_out(st, out, len)) != APR_SUCCESS) {
        return rv;
    }
    /* On the loop thread: log without r (a worker may be using it). */
    rv = cr_relay_account(NULL, st->s, st->order_id, st->max_event, k, ev);
    if (rv == APR_EOF) {
        st->pending_reason = "stop event";
    }
    return rv;
}

static int on_headers(void *baton, long status, const char *ctype)
{
    astream *st = baton;
    int ok;
    (void)ctype;

    apr_thread_mutex_lock(st->mtx);
    if (st->head != HEAD_WAIT) {
        /* The handler gave up waiting. */
        apr_thread_mutex_unlock(st->mtx);
        return 1;
    }
    st->upstream_status = status;
    ok = status >= 200 && status <= 299;
    if (ok) {
        st->head = HEAD_OK;
    }
    apr_thread_cond_broadcast(st->cond);
    apr_thread_mutex_unlock(st->mtx);
    st->opened = ok;
    st->last_upstream_byte = apr_time_now();
    return !ok;     /* an error answer is made by the handler */
}

static int on_data(void *baton, long status, const char *buf, apr_size_t len)
{
    astream *st = baton;
    apr_status_t rv;
    (void)status;

    st->last_upstream_byte = apr_time_now();
    rv = cr_sse_relay_feed(st->relay, buf, len, on_relay, st);
    if (rv == APR_SUCCESS) {
        return 0;
    }
    if (!st->pending_reason) {
        st->pending_reason = "the upstream's events could not be parsed";
    }
    return 1;
}

/* ---- ending a stream (loop thread) ---------------------------------------------------------- */

static void end_stream(astream *st, int have_result, CURLcode res, const char *reason,
                       int gone, int slow)
{
    int cb;

    if (st->in_multi) {
        curl_multi_remove_handle(L.multi, st->easy);
        st->in_multi = 0;
        cr_upstream_finish(st->xf, have_result ? (int)res : (int)CURLE_ABORTED_BY_CALLBACK,
                                &st->resp);
    }
    if (st->fd >= 0) {
        fd_forget(st->fd);
        st->fd = -1;
    }
    if (st->prev) {
        st->prev->next = st->next;
    }
    else if (L.list == st) {
        L.list = st->next;
    }
    if (st->next) {
        st->next->prev = st->prev;
    }
    st->prev = st->next = NULL;
    apr_hash_set(L.streams, &st->id, sizeof(st->id), NULL);
    L.nstreams--;

    if (st->pending_reason) {
        reason = st->pending_reason;
        gone |= st->pending_gone;
        slow |= st->pending_slow;
    }
    if (!reason) {
        reason = st->resp.rc == CR_UP_OK ? "upstream ended it" : cr_upstream_rc_name(st->resp.rc);
    }

    apr_thread_mutex_lock(st->mtx);
    st->end_reason = reason;
    st->gone |= gone;
    st->slow |= slow;
    if (st->head == HEAD_WAIT) {
        st->head = HEAD_FAILED;
    }
    st->loop_done = 1;
    apr_thread_cond_broadcast(st->cond);
    cb = st->head == HEAD_OK && !st->cb_pending;
    if (cb) {
        st->cb_pending = 1;
    }
    apr_thread_mutex_unlock(st->mtx);
    /* From here on the stream belongs to the handler or a worker. */
    if (cb) {
        schedule(st);
    }
}

static void loop_add(astream *st)
{
    fdslot *sl;
    CURLMcode mc;

    st->next = L.list;
    if (L.list) {
        L.list->prev = st;
    }
    L.list = st;
    apr_hash_set(L.streams, &st->id, sizeof(st->id), st);
    L.nstreams++;

    /* Watch the browser for an orderly close or a reset: "gone" within the
     * loop's reaction time, not at the next heartbeat. */
    sl = slot_of(st->fd);
    if (sl && epoll_set(st->fd, EPOLLRDHUP, 0) == 0) {
        sl->kind = FD_BROWSER;
        sl->st = st;
    }
    else {
        st->fd = -1;
    }
    mc = curl_multi_add_handle(L.multi, st->easy);
    if (mc != CURLM_OK) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, L.s, CRLOGNO(01505)
                     "order streams: curl_multi_add_handle: %s", curl_multi_strerror(mc));
        cr_upstream_finish(st->xf, (int)CURLE_FAILED_INIT, &st->resp);
        end_stream(st, 0, CURLE_OK, "libcurl refused the transfer", 0, 0);
        return;
    }
    st->in_multi = 1;
}

static void end_all(const char *reason)
{
    while (L.list) {
        end_stream(L.list, 0, CURLE_OK, reason, 0, 0);
    }
}

static void run_commands(void)
{
    cmd_t *cmd, *next;
    apr_uint64_t n;

    if (read(L.evfd, &n, sizeof(n)) < 0 && errno != EAGAIN) {
        ap_log_error(APLOG_MARK, APLOG_DEBUG, errno, L.s, CRLOGNO(01506)
                     "order streams: reading the loop's eventfd");
    }
    apr_thread_mutex_lock(L.qmtx);
    cmd = L.qhead;
    L.qhead = L.qtail = NULL;
    apr_thread_mutex_unlock(L.qmtx);
    for (; cmd; cmd = next) {
        astream *st;
        next = cmd->next;
        switch (cmd->type) {
        case CMD_ADD:
            loop_add(cmd->st);
            break;
        case CMD_ABORT:
            st = apr_hash_get(L.streams, &cmd->id, sizeof(cmd->id));
            if (st) {
                end_stream(st, 0, CURLE_OK, cmd->reason, cmd->gone, cmd->slow);
            }
            break;
        case CMD_STOP_ALL:
            end_all("server restarting or stopping");
            break;
        case CMD_QUIT:
            L.quit = 1;
            break;
        }
        free(cmd);
    }
}

static void read_multi_info(void)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(L.multi, &left))) {
        if (msg->msg == CURLMSG_DONE) {
            CURL *e = msg->easy_handle;
            CURLcode res = msg->data.result;
            astream *st = NULL;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&st);
            if (st) {
                end_stream(st, 1, res, NULL, 0, 0);
            }
        }
    }
}

static void tick(apr_time_t now)
{
    astream *st, *next;
    int stopping = apr_atomic_read32(&L.stopping) != 0;

    for (st = L.list; st; st = next) {
        next = st->next;
        if (!st->opened) {
            continue;       /* the handler bounds the wait for the head */
        }
        if (stopping) {
            end_stream(st, 0, CURLE_OK, "server restarting or stopping", 0, 0);
        }
        else if (now - st->started >= st->lifetime) {
            end_stream(st, 0, CURLE_OK, "maximum lifetime", 0, 0);
        }
        else if (now - st->last_upstream_byte >= st->stall) {
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, st->s, CRLOGNO(01515)
                         "no byte from the upstream for %" APR_TIME_T_FMT "s on the stream of "
                         "order %s: ending it so the browser reconnects",
                         apr_time_sec(now - st->last_upstream_byte), st->order_id);
            end_stream(st, 0, CURLE_OK, "upstream stalled", 0, 0);
        }
        else if (now - st->last_queued >= st->heartbeat) {
            if (queue_out(st, ": keep-alive\n\n", 14) != APR_SUCCESS) {
                end_stream(st, 0, CURLE_OK, NULL, 1, 1);
            }
            else {
                CR_COUNT(stream_heartbeats);
            }
        }
    }
}

static void *APR_THREAD_FUNC loop_main(apr_thread_t *thd, void *data)
{
    struct epoll_event evs[256];
    apr_time_t next_tick = apr_time_now() + CR_ASYNC_TICK;
    int running = 0;
    (void)data;

    while (!L.quit) {
        apr_time_t now = apr_time_now(), until = next_tick;
        int n, i, wait_ms;

        if (L.curl_deadline && L.curl_deadline < until) {
            until = L.curl_deadline;
        }
        wait_ms = until > now ? (int)((until - now + 999) / 1000) : 0;
        n = epoll_wait(L.epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), wait_ms);
        if (n < 0 && errno != EINTR) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, errno, L.s, CRLOGNO(01507)
                         "order streams: epoll_wait failed; the loop stops");
            break;
        }
        for (i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            apr_uint32_t e = evs[i].events;
            fdslot *sl;

            if (fd == L.evfd) {
                run_commands();
                continue;
            }
            sl = fd < L.nfds ? &L.fds[fd] : NULL;
            if (!sl || sl->kind == FD_NONE) {
                continue;   /* forgotten earlier in this batch */
            }
            if (sl->kind == FD_CURL) {
                int flags = 0;
                if (e & EPOLLIN) {
                    flags |= CURL_CSELECT_IN;
                }
                if (e & EPOLLOUT) {
                    flags |= CURL_CSELECT_OUT;
                }
                if (e & (EPOLLERR | EPOLLHUP)) {
                    flags |= CURL_CSELECT_ERR;
                }
                curl_multi_socket_action(L.multi, fd, flags, &running);
            }
            else {
                end_stream(sl->st, 0, CURLE_OK, "browser went away", 1, 0);
            }
        }
        now = apr_time_now();
        if (L.curl_deadline && now >= L.curl_deadline) {
            L.curl_deadline = 0;
            curl_multi_socket_action(L.multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        read_multi_info();
        if (now >= next_tick) {
            tick(now);
            next_tick = now + CR_ASYNC_TICK;
        }
    }
    /* Return rather than apr_thread_exit(): pthread_exit's unwinding trips
     * ASan's thread teardown (a false stack-buffer-overflow, then a crash of
     * the child in the sanitizer pass).  The thread's pool is a subpool of
     * lpool, destroyed with it after the join (loop_cleanup). */
    (void)thd;
    return NULL;
}

/* ---- the worker's side ---------------------------------------------------------------------- */

/* Write bytes plus a FLUSH, waiting at most L.write_wait for the browser.
 * Returns APR_SUCCESS, APR_TIMEUP (too slow) or another error (gone). */
static apr_status_t write_browser(astream *st, const char *b, apr_size_t n)
{
    conn_rec *c = st->c;
    apr_socket_t *csd = ap_get_conn_socket(c);
    apr_interval_time_t old = 0;
    apr_status_t rv;

    if (c->aborted) {
        return APR_ECONNABORTED;
    }
    APR_BRIGADE_INSERT_TAIL(st->bb, apr_bucket_transient_create(b, n, c->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(st->bb, apr_bucket_flush_create(c->bucket_alloc));
    if (csd) {
        apr_socket_timeout_get(csd, &old);
        apr_socket_timeout_set(csd, L.write_wait);
    }
    rv = ap_pass_brigade(st->r->output_filters, st->bb);
    if (csd) {
        apr_socket_timeout_set(csd, old);
    }
    apr_brigade_cleanup(st->bb);
    if (rv == APR_SUCCESS && c->aborted) {
        rv = APR_ECONNABORTED;
    }
    return rv;
}

static void stream_free(astream *st)
{
    cr_outq_free(&st->out);
    cr_outq_free(&st->wbuf);
    apr_pool_destroy(st->pool);     /* the mutex, the relay, the xfer */
    free(st);
}

/* The loop has let go and every byte is written: end the request. */
static void stream_finish(astream *st)
{
    request_rec *r = st->r;
    conn_rec *c = st->c;
    apr_socket_t *csd = ap_get_conn_socket(c);

    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, CRLOGNO(01508)
                  "stream of order %s ended after %" APR_TIME_T_FMT "s: %s (suspended relay)",
                  st->order_id, apr_time_sec(apr_time_now() - st->started),
                  st->gone ? (st->slow ? "browser too slow, dropped" : "browser went away")
                  : st->end_reason);
    if (st->slow) {
        STAT_INC(browsers_dropped_slow);
    }
    else if (st->gone) {
        STAT_INC(browsers_gone);
    }
    STAT_DEC(streams_open);
    c->keepalive = AP_CONN_CLOSE;
    if (csd) {
        apr_socket_timeout_set(csd, L.write_wait);
    }
    /* As mod_dialup: nobody else takes invoke_mtx any more (loop_done, and
     * this is the last callback), and it lives in r->pool. */
    apr_thread_mutex_unlock(r->invoke_mtx);
    if (st->gone) {
        c->aborted = 1;
    }
    else {
        ap_finalize_request_protocol(r);        /* the last chunk */
    }
    ap_process_request_after_handler(r);        /* logs it; r->pool is gone */
    /* The MPM's accounting (its cleanup of c->pool) goes by this state. */
    if (c->cs) {
        c->cs->state = CONN_STATE_SUSPENDED;
    }
    ap_start_lingering_close(c);                /* flush, TLS close_notify, FIN */
    stream_free(st);
    apr_pool_destroy(c->pool);                  /* the socket, the MPM's counters */
}

static void stream_cb(void *baton)
{
    astream *st = baton;
    request_rec *r = st->r;

    apr_thread_mutex_lock(r->invoke_mtx);
    for (;;) {
        int done, end, gone;
        apr_status_t rv;

        apr_thread_mutex_lock(st->mtx);
        cr_outq_take(&st->out, &st->wbuf);
        done = st->loop_done;
        /* Ending destroys c->pool: not before the handler's thread is
         * through the MPM's suspend steps (suspend_hook says when). */
        end = done && st->suspended;
        gone = st->gone;
        if (st->wbuf.len == 0 && !end) {
            st->cb_pending = 0;
            apr_thread_mutex_unlock(st->mtx);
            break;
        }
        apr_thread_mutex_unlock(st->mtx);

        if (st->wbuf.len && !gone) {
            rv = write_browser(st, st->wbuf.b, st->wbuf.len);
            if (rv != APR_SUCCESS) {
                int slow = APR_STATUS_IS_TIMEUP(rv);
                apr_thread_mutex_lock(st->mtx);
                st->gone = 1;
                st->slow |= slow;
                done = st->loop_done;
                apr_thread_mutex_unlock(st->mtx);
                if (!done) {
                    send_cmd(CMD_ABORT, NULL, st->id, slow ? "browser too slow (write wait)"
                             : "browser went away", 1, slow);
                }
            }
        }
        /* Written: free it, so an idle stream holds no queue memory (the
         * next take hands the loop an empty queue; it allocates on the
         * next event). */
        cr_outq_free(&st->wbuf);
        if (end) {
            /* loop_done: nothing more can be queued, and out was emptied. */
            stream_finish(st);
            return;
        }
    }
    apr_thread_mutex_unlock(r->invoke_mtx);
}

/* The MPM's last step of suspending a connection (notify_suspend in
 * event.c, on the handler's thread after it released invoke_mtx).  Until
 * then that thread still uses the connection's state, which lives in
 * c->pool: the stream may write but not end. */
static void suspend_hook(conn_rec *c, request_rec *r)
{
    astream *st = ap_get_module_config(c->conn_config, &cryptorefills_module);
    int cb;
    (void)r;

    if (!st) {
        return;
    }
    apr_thread_mutex_lock(st->mtx);
    st->suspended = 1;
    cb = st->loop_done && !st->cb_pending;
    if (cb) {
        st->cb_pending = 1;
    }
    apr_thread_mutex_unlock(st->mtx);
    if (cb) {
        schedule(st);
    }
}

/* ---- the handler's side ------------------------------------------------------------------- */

int cr_async_available(request_rec *r)
{
    conn_rec *c = r->connection;
    return L.enabled && !apr_atomic_read32(&L.stopping) && !c->master && !r->main
           && !c->clogging_input_filters && c->cs != NULL && r->invoke_mtx != NULL
           && r->proto_num < HTTP_VERSION(2, 0) && ap_get_conn_socket(c) != NULL;
}

static astream *stream_create(request_rec *r, const cr_async_spec *spec)
{
    astream *st = calloc(1, sizeof(*st));
    const char *const *hp;
    apr_array_header_t *hdrs;
    apr_os_sock_t fd = -1;

    if (!st) {
        return NULL;
    }
    if (apr_pool_create_unmanaged_ex(&st->pool, NULL, L.alloc) != APR_SUCCESS) {
        free(st);
        return NULL;
    }
    if (apr_thread_mutex_create(&st->mtx, APR_THREAD_MUTEX_DEFAULT, st->pool) != APR_SUCCESS
        || apr_thread_cond_create(&st->cond, st->pool) != APR_SUCCESS) {
        stream_free(st);
        return NULL;
    }
    st->id = apr_atomic_inc32(&L.next_id);
    st->r = r;
    st->c = r->connection;
    st->s = r->server;
    st->order_id = apr_pstrdup(st->pool, spec->order_id);
    st->client_ip = apr_pstrdup(st->pool, r->useragent_ip ? r->useragent_ip : "-");
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
    st->req = *spec->req;
    st->req.url = apr_pstrdup(st->pool, spec->req->url);
    /* The CA file and proxy pick the idle handles it may use (and reuse). */
    st->req.ca_file = spec->req->ca_file ? apr_pstrdup(st->pool, spec->req->ca_file) : NULL;
    st->req.proxy = spec->req->proxy ? apr_pstrdup(st->pool, spec->req->proxy) : NULL;
    st->req.body = NULL;
    st->req.body_len = 0;
    hdrs = apr_array_make(st->pool, 8, sizeof(const char *));
    for (hp = spec->req->headers; hp && *hp; hp++) {
        APR_ARRAY_PUSH(hdrs, const char *) = apr_pstrdup(st->pool, *hp);
    }
    APR_ARRAY_PUSH(hdrs, const char *) = NULL;
    st->req.headers = (const char *const *)hdrs->elts;
    st->req.timeout_ms = 0;
    st->req.on_tick = NULL;
    st->req.on_headers = on_headers;
    st->req.on_data = on_data;
    st->req.baton = st;

    st->relay = cr_sse_relay_create(st->pool, spec->max_event, st->order_id);
    if (!st->relay) {
        stream_free(st);
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
    st->xf = cr_upstream_start(st->pool, &st->req, &st->resp);
    if (!st->xf) {
        res->outcome = CR_ASYNC_UPSTREAM_FAILED;
        res->resp.rc = st->resp.rc;
        res->resp.error = apr_pstrdup(r->pool, st->resp.error);
        stream_free(st);
        return;
    }
    st->easy = cr_upstream_xfer_easy(st->xf);
    curl_easy_setopt(st->easy, CURLOPT_PRIVATE, (char *)st);

    send_cmd(CMD_ADD, st, st->id, NULL, 0, 0);

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
        ap_set_module_config(r->connection->conn_config, &cryptorefills_module, st);
        if (spec->open(spec->open_baton) != 0) {
            int end;
            apr_thread_mutex_lock(st->mtx);
            st->gone = 1;
            end = st->loop_done;
            apr_thread_mutex_unlock(st->mtx);
            if (!end) {
                send_cmd(CMD_ABORT, NULL, st->id, "browser went away", 1, 0);
            }
        }
        res->outcome = CR_ASYNC_SUSPENDED;
        return;
    }
    if (head == HEAD_ABANDONED) {
        send_cmd(CMD_ABORT, NULL, st->id, "no response head in time", 0, 0);
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
    stream_free(st);
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

static apr_status_t loop_cleanup(void *data)
{
    apr_status_t trv;
    (void)data;

    if (L.thread) {
        send_cmd(CMD_QUIT, NULL, 0, NULL, 0, 0);
        apr_thread_join(&trv, L.thread);
        L.thread = NULL;
    }
    /* Streams still open here belong to a child being killed. */
    while (L.list) {
        astream *st = L.list;
        L.list = st->next;
        if (st->in_multi) {
            curl_multi_remove_handle(L.multi, st->easy);
        }
    }
    if (L.multi) {
        curl_multi_cleanup(L.multi);
        L.multi = NULL;
    }
    if (L.epfd >= 0) {
        close(L.epfd);
    }
    if (L.evfd >= 0) {
        close(L.evfd);
    }
    L.epfd = L.evfd = -1;
    free(L.fds);
    L.fds = NULL;
    L.nfds = 0;
    if (L.lpool) {
        apr_pool_destroy(L.lpool);
        L.lpool = NULL;
    }
    L.enabled = 0;
    return APR_SUCCESS;
}

static apr_status_t stream_allocator_create(void)
{
    apr_allocator_t *a;
    apr_pool_t *owner;
    apr_thread_mutex_t *m;
    apr_status_t rv = apr_allocator_create(&a);

    if (rv != APR_SUCCESS) {
        return rv;
    }
    /* The mutex lives in a pool of the allocator itself, like the
     * allocator, for the life of the process. */
    if ((rv = apr_pool_create_unmanaged_ex(&owner, NULL, a)) != APR_SUCCESS) {
        apr_allocator_destroy(a);
        return rv;
    }
    apr_allocator_owner_set(a, owner);
    if ((rv = apr_thread_mutex_create(&m, APR_THREAD_MUTEX_DEFAULT, owner)) != APR_SUCCESS) {
        apr_pool_destroy(owner);
        return rv;
    }
    apr_allocator_mutex_set(a, m);
    apr_allocator_max_free_set(a, CR_ASYNC_MAX_FREE);
    L.alloc = a;
    return APR_SUCCESS;
}

void cr_async_child_init(apr_pool_t *pchild, server_rec *s, cr_async_stats_t *stats)
{
    apr_status_t rv;
    apr_interval_time_t t = s->timeout;

    memset(&L, 0, sizeof(L));
    L.epfd = L.evfd = -1;
    L.s = s;
    L.stats = stats;
    if (!mpm_is_event()) {
        return;
    }
    L.write_wait = t > 0 && t < CR_ASYNC_WRITE_WAIT ? t : CR_ASYNC_WRITE_WAIT;
    /* A pre-cleanup: it must stop the thread before pchild destroys its
     * subpools and other modules' state (APR destroys subpools before it
     * runs ordinary cleanups). */
    apr_pool_pre_cleanup_register(pchild, NULL, loop_cleanup);
    L.epfd = epoll_create1(EPOLL_CLOEXEC);
    L.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    L.multi = curl_multi_init();
    if (L.epfd < 0 || L.evfd < 0 || !L.multi
        || stream_allocator_create() != APR_SUCCESS
        || apr_pool_create_unmanaged_ex(&L.lpool, NULL, NULL) != APR_SUCCESS
        || apr_thread_mutex_create(&L.qmtx, APR_THREAD_MUTEX_DEFAULT, pchild) != APR_SUCCESS
        || epoll_set(L.evfd, EPOLLIN, 0) != 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, CRLOGNO(01512)
                     "order streams: cannot set up the event loop; streams use the blocking "
                     "relay in this process");
        return;
    }
    L.streams = apr_hash_make(L.lpool);
    curl_multi_setopt(L.multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(L.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    /* The thread's pool under our own, so nothing frees it under the
     * thread: lpool goes after the join, and the thread's pool with it. */
    rv = apr_thread_create(&L.thread, NULL, loop_main, NULL, L.lpool);
    if (rv != APR_SUCCESS) {
        L.thread = NULL;
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, CRLOGNO(01513)
                     "order streams: cannot start the loop thread; streams use the "
                     "blocking relay in this process");
        return;
    }
    L.enabled = 1;
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
    send_cmd(CMD_STOP_ALL, NULL, 0, NULL, 0, 0);
}

void cr_async_register_hooks(void)
{
    ap_hook_suspend_connection(suspend_hook, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_stopping(child_stopping, NULL, NULL, APR_HOOK_MIDDLE);
}
