/* SPDX-License-Identifier: Apache-2.0 */
/* Order streams without a thread each: what the suspended relay's files
 * share (see mod_cryptorefills_async.h and docs/design
 * streams-without-threads).  Included by the async files only:
 *
 *   mod_cryptorefills_async.c         the handler's side (cr_async_start) and
 *                                     the lifecycle (sizing, child_init, hooks)
 *     -> mod_cryptorefills_async_h1.c  the loop's own HTTP/1.1 exchange for
 *                                     an http:// or https:// upstream without
 *                                     a proxy (cr_h1: non-blocking connect,
 *                                     request head, response parser; cr_tls
 *                                     never waiting): async.c calls its
 *                                     prepare step on the handler's thread;
 *                                     the loop and the worker reach the rest
 *                                     through st->h1ops only
 *       -> mod_cryptorefills_async_loop.c   the loop thread: libcurl's sockets
 *                                     and timer, epoll, the commands, the tick;
 *                                     its setup and teardown
 *       -> mod_cryptorefills_async_worker.c  the worker's side (stream_cb
 *                                     writes, stream_finish ends the request),
 *                                     the suspend hook, and the senders of
 *                                     commands to the loop (cr_async_send_cmd)
 *                                     and of callbacks to a worker
 *                                     (cr_async_schedule)
 *
 * An arrow is "calls": async.c calls the exchange file (prepare), the loop
 * file (its setup, the transfer callbacks it hands to libcurl) and the
 * worker file (commands, freeing a stream that never opened, the suspend
 * hook it registers); the exchange file calls the loop file (its sockets'
 * epoll interest, the same head and data callbacks); the loop file
 * calls the worker file (cr_async_schedule, and CMD_QUIT at teardown); the
 * worker file calls neither.
 *
 * Threads and who owns what
 * -------------------------
 * - The handler's thread prepares a stream (one heap block with its
 *   strings, the SSE relay on the heap, a mutex and condition shared with
 *   other streams; for an upstream reached without a proxy a socket
 *   with its connect started and the request head formatted, else a
 *   libcurl transfer), sends it to the loop
 *   (CMD_ADD) and waits for the upstream's response head.  On a 2xx it
 *   writes the first bytes (spec->open) and returns SUSPENDED: the core
 *   then releases r->invoke_mtx and the event MPM forgets the connection.
 * - One loop thread per child owns, once a stream is added, its upstream
 *   exchange (its own socket in the epoll set, closed by the loop only,
 *   after EPOLL_CTL_DEL; or a libcurl transfer in one curl multi handle
 *   driven by curl_multi_socket_action, libcurl's sockets in the same
 *   set), its SSE relay and its browser socket's EPOLLRDHUP watch.
 *   Epoll events carry the fd, never a pointer (libcurl may close a socket
 *   mid-batch, and a closed number may be reused by then); commands arrive on a queue woken by an eventfd.  Relayed
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
#ifndef MOD_CRYPTOREFILLS_ASYNC_INT_H
#define MOD_CRYPTOREFILLS_ASYNC_INT_H

#include "httpd.h"
#include "apr_atomic.h"
#include "apr_hash.h"
#include "apr_thread_proc.h"
#include "apr_thread_mutex.h"
#include "apr_thread_cond.h"

#include <curl/curl.h>

#include "mod_cryptorefills_async.h"
#include "cr_sse.h"
#include "cr_outq.h"
#include "cr_h1.h"

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
/* Mutex and condition pairs the streams share (by id): a stream's own
 * would cost a pool block.  Never held two at a time; a broadcast may wake
 * a handler waiting for another stream's head, which checks and waits on. */
#define CR_ASYNC_LOCKS          64

enum { HEAD_WAIT, HEAD_OK, HEAD_FAILED, HEAD_ABANDONED };
enum { FD_NONE, FD_CURL, FD_BROWSER, FD_UPSTREAM };
enum { CMD_ADD, CMD_ABORT, CMD_STOP_ALL, CMD_QUIT };

typedef struct astream astream;
typedef struct cr_async_h1 cr_async_h1;
struct astream {
    apr_uint32_t id;
    request_rec *r;
    conn_rec *c;
    server_rec *s;
    apr_thread_mutex_t *mtx;    /* L.locks[id % CR_ASYNC_LOCKS], shared */
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
    int suspended;              /* the MPM ran our suspend hook (its last steps follow) */
    int mpm_through;            /* notify_suspend has returned: c->pool may go (worker only) */
    apr_time_t suspended_at;    /* when the suspend hook ran (under mtx) */
    long upstream_status;
    const char *end_reason;

    /* Loop thread only (the handler before CMD_ADD). */
    cr_upstream_req req;
    cr_upstream_xfer *xf;       /* libcurl's transfer (through a proxy), or */
    cr_async_h1 *h1;            /* the loop's own exchange (no proxy) */
    const struct cr_async_h1_ops *h1ops;   /* its operations, while h1 is set */
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

struct cr_async_state {
    int enabled;                /* this child runs a loop */
    volatile apr_uint32_t stopping;
    server_rec *s;
    cr_async_stats_t *stats;
    apr_interval_time_t write_wait;
    volatile apr_uint32_t next_id;
    /* The streams' short-lived pools (a relay's per-event pool, the
     * handler's scratch pool for the upstream request): one allocator per
     * child, with a mutex (the handler and loop threads create and destroy
     * them) and a bound on what it keeps free, so their blocks are reused
     * by every stream and an idle stream holds none.  Never destroyed: a
     * stream may end after pchild's cleanups. */
    apr_allocator_t *alloc;
    struct {
        apr_thread_mutex_t *mtx;
        apr_thread_cond_t *cond;
    } locks[CR_ASYNC_LOCKS];    /* in alloc's owner pool, never destroyed */

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
};

/* Defined in mod_cryptorefills_async_loop.c; L for short in the async files. */
extern struct cr_async_state cr_async_L;
#define L cr_async_L

#define STAT_INC(f) do { if (L.stats) apr_atomic_inc32(&L.stats->f); } while (0)
#define STAT_DEC(f) do { if (L.stats) apr_atomic_dec32(&L.stats->f); } while (0)

/* ---- the worker's file ---------------------------------------------------------------- */

/* Any thread but the loop's: queue a command for the loop and wake it. */
void cr_async_send_cmd(int type, astream *st, apr_uint32_t id, const char *reason, int gone,
                       int slow);
/* Have a worker run the stream's callback (the caller set cb_pending). */
void cr_async_schedule(astream *st);
void cr_async_stream_free(astream *st);
void cr_async_suspend_hook(conn_rec *c, request_rec *r);

/* ---- the loop's file ------------------------------------------------------------------ */

/* The transfer's callbacks (cr_upstream_req), run on the loop thread. */
int cr_async_on_headers(void *baton, long status, const char *ctype);
int cr_async_on_data(void *baton, long status, const char *buf, apr_size_t len);
/* Watch fd (kind FD_*, stream st) for events, or stop watching it (before
 * it is closed).  0 or -1 (errno). */
int cr_async_fd_watch(int fd, apr_uint32_t events, int kind, astream *st);
void cr_async_fd_forget(int fd);
/* child_init, event MPM: set up the loop and start its thread; L.enabled
 * once it runs.  L.s, L.stats and L.write_wait are set. */
void cr_async_loop_start(apr_pool_t *pchild);

/* ---- the loop's own HTTP/1.1 exchange (mod_cryptorefills_async_h1.c) ------------------ */

/* Handler's thread, before CMD_ADD: for an http:// or https:// URL
 * without a proxy, resolve, start a non-blocking connect and format the request:
 * 1.  0: not for this stream (libcurl's transfer).  -1: failed at once
 * (st->resp says how, as libcurl's would). */
int cr_async_h1_prepare(astream *st);
/* What the loop and the worker do with that exchange, through
 * st->h1ops (set by prepare when it returns 1, or -1 with st->h1 made):
 * the exchange's file sits above the loop's (it watches sockets and feeds
 * the stream through the loop's functions), so they reach it only through
 * this table, never by name. */
struct cr_async_h1_ops {
    /* Loop thread: start watching the socket (0, or -1). */
    int (*add)(astream *st);
    /* Loop thread: an epoll event for the upstream socket.  1 when the
     * exchange ended (st->resp says how): the caller ends the stream. */
    int (*event)(astream *st, apr_uint32_t events);
    /* Loop thread, from the tick: the connect took too long (st->resp set). */
    int (*connect_expired)(astream *st, apr_time_t now);
    /* Loop thread, ending the stream: forget and close the socket, set
     * st->resp.rc if nothing did (stopped from outside: aborted). */
    void (*close)(astream *st);
    /* Whoever frees the stream. */
    void (*free)(astream *st);
};

#endif
