/* SPDX-License-Identifier: Apache-2.0 */
/* Order streams without a thread each: the per-child loop thread of the
 * suspended relay: libcurl's sockets and timer in an epoll set, the
 * commands from the other threads, the transfers' callbacks that queue
 * bytes for a worker, the 1 s tick (heartbeats, lifetime, stall), and the
 * loop's setup and teardown.  The protocol is in
 * mod_cryptorefills_async_int.h. */
#include <string.h>
#include <stdlib.h>
#include <errno.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "httpd.h"
#include "http_log.h"
#include "apr_strings.h"
#include "apr_hash.h"
#include "apr_thread_proc.h"
#include "apr_thread_mutex.h"
#include "apr_thread_cond.h"

#include <curl/curl.h>

#include "mod_cryptorefills_int.h"
#include "mod_cryptorefills_async_int.h"

struct cr_async_state cr_async_L;

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

void cr_async_fd_forget(int fd)
{
    fd_forget(fd);
}

int cr_async_fd_watch(int fd, apr_uint32_t events, int kind, astream *st)
{
    fdslot *sl = slot_of(fd);

    if (!sl || epoll_set(fd, events, sl->kind != FD_NONE) != 0) {
        return -1;
    }
    sl->kind = (char)kind;
    sl->st = st;
    return 0;
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

/* ---- bytes for a worker (loop thread) ------------------------------------------------------ */

static apr_status_t queue_out(astream *st, const char *b, apr_size_t n)
{
    apr_status_t rv;
    int cb = 0;

    apr_thread_mutex_lock(st->mtx);
    rv = cr_outq_put(&st->out, b, n);
    /* Before the MPM has suspended the connection the suspend hook
     * schedules the worker (a callback now would only wait for invoke_mtx,
     * holding a worker, and could not write). */
    if (rv == APR_SUCCESS && !st->cb_pending && st->suspended) {
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
        cr_async_schedule(st);
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

int cr_async_on_headers(void *baton, long status, const char *ctype)
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

int cr_async_on_data(void *baton, long status, const char *buf, apr_size_t len)
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
    if (st->h1) {
        st->h1ops->close(st);
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
    cb = st->suspended && !st->cb_pending;      /* else the suspend hook will */
    if (cb) {
        st->cb_pending = 1;
    }
    apr_thread_mutex_unlock(st->mtx);
    /* From here on the stream belongs to the handler or a worker. */
    if (cb) {
        cr_async_schedule(st);
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
    if (st->h1) {
        if (st->h1ops->add(st) != 0) {
            ap_log_error(APLOG_MARK, APLOG_ERR, errno, L.s, CRLOGNO(01516)
                         "order streams: cannot watch an upstream socket");
            end_stream(st, 0, CURLE_OK, "cannot watch the upstream socket", 0, 0);
        }
        return;
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
            /* The handler bounds the wait for the head; libcurl the
             * connect, or here for the loop's own exchange. */
            if (st->h1 && st->h1ops->connect_expired(st, now)) {
                end_stream(st, 0, CURLE_OK, NULL, 0, 0);
            }
            continue;
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
            else if (sl->kind == FD_UPSTREAM) {
                astream *st = sl->st;
                if (st->h1ops->event(st, e)) {
                    end_stream(st, 0, CURLE_OK, NULL, 0, 0);
                }
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

/* ---- setup and teardown ------------------------------------------------------------------ */

static apr_status_t loop_cleanup(void *data)
{
    apr_status_t trv;
    (void)data;

    if (L.thread) {
        cr_async_send_cmd(CMD_QUIT, NULL, 0, NULL, 0, 0);
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
        if (st->h1) {
            st->h1ops->close(st);
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
    int i;
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
    for (i = 0; i < CR_ASYNC_LOCKS; i++) {
        if ((rv = apr_thread_mutex_create(&L.locks[i].mtx, APR_THREAD_MUTEX_DEFAULT, owner))
            != APR_SUCCESS
            || (rv = apr_thread_cond_create(&L.locks[i].cond, owner)) != APR_SUCCESS) {
            return rv;      /* the loop is not started: nothing uses them */
        }
    }
    L.alloc = a;
    return APR_SUCCESS;
}

void cr_async_loop_start(apr_pool_t *pchild)
{
    apr_status_t rv;
    server_rec *s = L.s;

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
