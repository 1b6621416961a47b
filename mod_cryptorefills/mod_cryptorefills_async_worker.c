/* SPDX-License-Identifier: Apache-2.0 */
/* Order streams without a thread each: the worker's side of the suspended
 * relay (a timed callback writes a stream's pending bytes plus a FLUSH and,
 * once the loop let go, ends the request), the suspend hook, and the two
 * hand-offs between threads: a command to the loop, a callback to a worker.
 * The protocol is in mod_cryptorefills_async_int.h. */
#include <string.h>
#include <stdlib.h>
#include <errno.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_mpm.h"
#include "mpm_common.h"

#include "mod_cryptorefills_int.h"
#include "mod_cryptorefills_async_int.h"

/* ---- the command queue ------------------------------------------------------------- */

void cr_async_send_cmd(int type, astream *st, apr_uint32_t id, const char *reason, int gone,
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

/* ---- handing bytes to a worker ----------------------------------------------------------- */

static void stream_cb(void *baton);

void cr_async_schedule(astream *st)
{
    apr_status_t rv = ap_mpm_register_timed_callback(0, stream_cb, st);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, L.s, CRLOGNO(01504)
                     "order streams: the MPM refused a callback; the stream of order %s "
                     "cannot end", st->order_id);
    }
}

/* Wait until c->pool may go.  Our suspend hook runs inside the event
 * MPM's notify_suspend(), which afterwards still writes into the
 * connection's state (c->sbh = NULL, then cs->suspended = 1; cs lives in
 * c->pool): a worker that ended the stream in between freed memory that
 * thread was about to write (a crash of the child right after the hook
 * returned, caught in a core dump).  The MPM's thread is a few
 * instructions from done: wait for its first store, then long enough for
 * the second.  Bounded; in the usual case c->sbh was cleared long ago.
 * (A delayed timed callback would not do: the 2.4 event MPM's listener
 * sleeps past a timer that is not yet due when it is registered.) */
static void wait_mpm_through(astream *st)
{
    int i;
    if (st->mpm_through) {
        return;
    }
    for (i = 0; i < 1000 && apr_atomic_casptr((void *)&st->c->sbh, NULL, NULL); i++) {
        apr_sleep(100);
    }
    if (i > 0 || apr_time_now() - st->suspended_at < apr_time_from_sec(1)) {
        apr_sleep(1000);    /* suspended just now: the second store */
    }
    st->mpm_through = 1;
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

void cr_async_stream_free(astream *st)
{
    cr_outq_free(&st->out);
    cr_outq_free(&st->wbuf);
    cr_sse_relay_destroy(st->relay);
    cr_upstream_xfer_free(st->xf);
    if (st->h1) {
        st->h1ops->free(st);
    }
    free(st);                       /* the record and its strings */
}

/* The loop has let go and every byte is written: end the request. */
static void stream_finish(astream *st)
{
    request_rec *r = st->r;
    conn_rec *c = st->c;
    apr_socket_t *csd = ap_get_conn_socket(c);

    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, CRLOGNO(01508)
                  "stream of order %s ended after %" APR_TIME_T_FMT "s: %s (suspended relay, "
                  "upstream by %s)", st->order_id, apr_time_sec(apr_time_now() - st->started),
                  st->gone ? (st->slow ? "browser too slow, dropped" : "browser went away")
                  : st->end_reason, st->h1 ? "the loop's HTTP/1.1 client" : "libcurl");
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
    cr_async_stream_free(st);
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
        if (!st->suspended) {
            /* Not scheduled before the suspend hook (the loop waits for
             * it), but never write then: the handler's thread has released
             * invoke_mtx and is still on its way through the MPM, which
             * reads c->aborted there; a failed write now would make the MPM
             * close the connection and recycle its pool under the stream.
             * The hook schedules us again. */
            st->cb_pending = 0;
            apr_thread_mutex_unlock(st->mtx);
            break;
        }
        cr_outq_take(&st->out, &st->wbuf);
        done = st->loop_done;
        /* Ending destroys c->pool: not before the handler's thread is
         * through the MPM's suspend steps (wait_mpm_through). */
        end = done;
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
                    cr_async_send_cmd(CMD_ABORT, NULL, st->id,
                                      slow ? "browser too slow (write wait)"
                                      : "browser went away", 1, slow);
                }
            }
        }
        /* Written: free it, so an idle stream holds no queue memory (the
         * next take hands the loop an empty queue; it allocates on the
         * next event). */
        cr_outq_free(&st->wbuf);
        if (end) {
            wait_mpm_through(st);
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
void cr_async_suspend_hook(conn_rec *c, request_rec *r)
{
    astream *st = ap_get_module_config(c->conn_config, &cryptorefills_module);
    int cb;
    (void)r;

    if (!st) {
        return;
    }
    apr_thread_mutex_lock(st->mtx);
    st->suspended = 1;
    st->suspended_at = apr_time_now();
    cb = (st->loop_done || st->out.len > 0) && !st->cb_pending;
    if (cb) {
        st->cb_pending = 1;
    }
    apr_thread_mutex_unlock(st->mtx);
    if (cb) {
        cr_async_schedule(st);
    }
}
