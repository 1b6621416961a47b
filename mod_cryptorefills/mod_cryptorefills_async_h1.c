/* SPDX-License-Identifier: Apache-2.0 */
/* Order streams without a thread each: the loop's own HTTP/1.1 exchange
 * for an http:// or https:// upstream reached without a proxy.  A libcurl easy
 * handle with its connection costs ~11.5 KB of heap per idle stream; this
 * one costs the socket and a few hundred bytes: the handler's thread
 * resolves the address, starts a non-blocking connect and formats the
 * request head (cr_h1); the loop thread finishes the connect, writes the
 * head, and reads the response on its epoll set into one buffer shared by
 * every stream, through cr_h1's incremental parser (head, then a chunked,
 * Content-Length or close-delimited body) into the same callbacks the
 * libcurl transfer calls (cr_async_on_headers, cr_async_on_data).
 * For https:// the loop runs the TLS handshake, writes and reads through
 * cr_tls without ever waiting (CR_TLS_NOWAIT: the epoll interest follows
 * what OpenSSL wants), verifying the upstream as libcurl did (the system
 * store or CryptorefillsCACertificateFile, host name or address), resuming
 * the process's last session with that upstream, and holding no TLS
 * buffers while a stream is idle.  Proxies keep libcurl, chosen per stream.
 *
 * Ownership of the socket: the handler creates it and hands it over with
 * the stream (CMD_ADD); from then on only the loop touches it, and closes
 * it exactly once (its close operation, from end_stream) after taking it out
 * of the epoll set.  Epoll events name the fd; a stale event for a number
 * already reused (a socket closed and another made in between) finds
 * either no slot or a socket in a phase that checks its own state (a
 * connect is confirmed by getpeername, reads and writes take EAGAIN). */
#include <string.h>
#include <stdlib.h>
#include <stdio.h>
#include <errno.h>
#include <unistd.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "httpd.h"
#include "http_log.h"
#include "apr_date.h"

#include "mod_cryptorefills_int.h"
#include "mod_cryptorefills_async_int.h"
#include "cr_tls.h"
#include "cr_h1client.h"

enum { H1_CONNECTING, H1_HANDSHAKE, H1_SENDING, H1_READING };
/* Addresses of the upstream's name tried at most. */
#define CR_H1_MAX_ADDRS 8

struct cr_async_h1 {
    int fd;
    int phase;                  /* H1_* */
    int rc_set;                 /* st->resp.rc says how it ended */
    char *out;                  /* the request head until it is sent (malloc) */
    apr_size_t out_len, out_off;
    apr_time_t connect_deadline;
    struct sockaddr_storage *addrs;     /* the addresses to try, until connected */
    socklen_t *addrlens;
    int naddrs, next_addr;
    cr_h1_parser ps;
    char *ctype;                /* the response's Content-Type (malloc) */
    cr_tls_ctx *tls_ctx;        /* https://: the process's context for the CA setting */
    cr_tls *tls;                /* https://: the connection, from the handshake on */
    char *tls_name;             /* https://: "name\0name:port" (host to verify, session key) */
    apr_uint32_t watching;      /* the epoll events asked for fd, 0 before the first */
    char err[160];
};

/* ---- the handler's side ----------------------------------------------------------------- */

/* Start a non-blocking connect to the next address not tried yet: 0 (the
 * connect is under way in h->fd), or the errno of the last one that
 * failed at once (h->fd -1). */
static int connect_next(cr_async_h1 *h)
{
    int err = ECONNREFUSED, one = 1;

    while (h->next_addr < h->naddrs) {
        int i = h->next_addr++;
        int fd = socket(h->addrs[i].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (struct sockaddr *)&h->addrs[i], h->addrlens[i]) == 0
            || errno == EINPROGRESS) {
            h->fd = fd;
            return 0;
        }
        err = errno;
        close(fd);
    }
    h->fd = -1;
    return err;
}

static void fail(astream *st, cr_upstream_rc rc, const char *fmt, const char *a, int err)
{
    st->resp.rc = rc;
    if (st->h1) {
        /* a may be h1->err itself (a cr_tls message): format apart. */
        char msg[sizeof(st->h1->err)];
        snprintf(msg, sizeof(msg), fmt, a, err ? strerror(err) : "");
        memcpy(st->h1->err, msg, sizeof(msg));
        st->resp.error = st->h1->err;
        st->h1->rc_set = 1;
    }
}

static const struct cr_async_h1_ops h1_ops;

int cr_async_h1_prepare(astream *st)
{
    const cr_upstream_req *rq = &st->req;
    char host[256], portstr[8];
    const char *target, *name;
    unsigned port;
    struct addrinfo hints, *ai = NULL, *a;
    cr_h1_url sp;
    cr_h1_request hr;
    cr_async_h1 *h;
    apr_size_t n;
    int rv, err, i, tls;

    /* A fragment or a target starting with '?' is left to libcurl (a
     * configured upstream has neither). */
    if ((rq->proxy && *rq->proxy) || cr_h1_url_split(rq->url, &sp) != 0
        || sp.host_len >= sizeof(host) || sp.target_slash || sp.target[sp.target_len] == '#') {
        return 0;
    }
    memcpy(host, sp.host, sp.host_len);
    host[sp.host_len] = '\0';
    port = sp.port;
    tls = sp.tls;
    target = sp.target_len ? sp.target : "/";
    memset(&hr, 0, sizeof(hr));
    hr.method = rq->method;
    hr.host = host;
    hr.port = port;
    hr.default_port = tls ? 443 : 80;
    hr.target = target;
    hr.headers = rq->headers;
    hr.user_agent = cr_upstream_user_agent();
    n = cr_h1_head_len(&hr);
    if (n == 0 || !(h = calloc(1, sizeof(*h)))) {
        return 0;
    }
    if (!(h->out = malloc(n))) {
        free(h);
        return 0;
    }
    h->out_len = cr_h1_head_write(&hr, h->out);
    h->fd = -1;
    st->h1 = h;
    st->h1ops = &h1_ops;
    CR_COUNT(upstream_requests);
    st->resp.retry_after = -1;

    /* Resolve here, on the handler's thread (it waits for the head anyway;
     * a literal address costs nothing).  Every address is tried in turn,
     * as libcurl would (one refusing, e.g. ::1 for "localhost", is not the
     * end). */
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%u", port);
    name = host;
    if (*host == '[') {
        host[strlen(host) - 1] = '\0';
        name = host + 1;
    }
    if (tls) {
        const char *why = NULL;
        apr_size_t nl = strlen(name);
        h->tls_ctx = cr_upstream_tls_ctx(rq->ca_file, &why);
        if (!h->tls_ctx || !(h->tls_name = malloc(2 * nl + 8))) {
            fail(st, CR_UP_CONNECT, "TLS: %.100s%s", why ? why : "out of memory", 0);
            return -1;
        }
        memcpy(h->tls_name, name, nl + 1);
        snprintf(h->tls_name + nl + 1, nl + 7, "%s:%u", name, port);
    }
    /* Within the connect timeout, as the collected client and libcurl. */
    rv = cr_h1c_resolve(name, portstr, &hints,
                        cr_tls_now() + apr_time_from_msec(rq->connect_timeout_ms > 0
                                                          ? rq->connect_timeout_ms : 3000), &ai);
    for (a = rv == 0 ? ai : NULL; a; a = a->ai_next) {
        h->naddrs++;
    }
    if (h->naddrs > CR_H1_MAX_ADDRS) {
        h->naddrs = CR_H1_MAX_ADDRS;
    }
    if (h->naddrs == 0
        || !(h->addrs = calloc((apr_size_t)h->naddrs, sizeof(*h->addrs) + sizeof(socklen_t)))) {
        fail(st, rv == EAI_AGAIN ? CR_UP_TIMEOUT : CR_UP_CONNECT,
             rv == EAI_AGAIN ? "resolving %.64s timed out%s" : "could not resolve %.64s%s", name, 0);
        if (rv == 0) {
            freeaddrinfo(ai);
        }
        return -1;
    }
    h->addrlens = (socklen_t *)(h->addrs + h->naddrs);
    for (a = ai, i = 0; i < h->naddrs; a = a->ai_next, i++) {
        memcpy(&h->addrs[i], a->ai_addr, a->ai_addrlen);
        h->addrlens[i] = a->ai_addrlen;
    }
    freeaddrinfo(ai);
    CR_COUNT(upstream_connects);
    if ((err = connect_next(h)) != 0) {
        fail(st, CR_UP_CONNECT, "Failed to connect to %.64s: %s", name, err);
        return -1;
    }
    h->phase = H1_CONNECTING;
    h->connect_deadline = apr_time_now()
        + apr_time_from_msec(rq->connect_timeout_ms > 0 ? rq->connect_timeout_ms : 3000);
    return 1;
}

/* ---- the loop's side ------------------------------------------------------------------------ */

static int on_head(void *baton, const cr_h1_head *hd)
{
    astream *st = baton;
    cr_async_h1 *h = st->h1;
    char *ct = NULL;

    st->resp.status = hd->status;
    if (hd->content_type) {
        ct = malloc(hd->content_type_len + 1);
        if (ct) {
            memcpy(ct, hd->content_type, hd->content_type_len);
            ct[hd->content_type_len] = '\0';
        }
        free(h->ctype);
        h->ctype = ct;
        st->resp.content_type = ct;
    }
    if (hd->retry_after && hd->retry_after_len && hd->retry_after_len < 64) {
        char v[64];
        memcpy(v, hd->retry_after, hd->retry_after_len);
        v[hd->retry_after_len] = '\0';
        if (v[0] >= '0' && v[0] <= '9') {
            st->resp.retry_after = strtol(v, NULL, 10);
        }
        else {
            apr_time_t t = apr_date_parse_http(v), now = apr_time_now();
            if (t != APR_DATE_BAD) {
                st->resp.retry_after = t > now ? (long)apr_time_sec(t - now) : 0;
            }
        }
    }
    if (cr_async_on_headers(st, hd->status, ct)) {
        /* Not a 2xx (or the handler gave up): the exchange ends here, its
         * status says what happened. */
        st->resp.rc = CR_UP_OK;
        h->rc_set = 1;
        return 1;
    }
    return 0;
}

static int on_body(void *baton, const char *data, size_t len)
{
    astream *st = baton;
    if (cr_async_on_data(st, st->resp.status, data, len)) {
        st->resp.rc = CR_UP_ABORTED;
        st->h1->rc_set = 1;
        return 1;
    }
    return 0;
}

static const cr_h1_callbacks h1_callbacks = { NULL, on_head, on_body };

/* Bytes read at once: one buffer for every stream (the loop is one thread). */
static char rbuf[16384];

static int h1_add(astream *st)
{
    cr_h1_parser_init(&st->h1->ps, &h1_callbacks, st, 0);
    st->h1->watching = EPOLLOUT;
    return cr_async_fd_watch(st->h1->fd, EPOLLOUT, FD_UPSTREAM, st);
}

static void h1_close(astream *st)
{
    cr_async_h1 *h = st->h1;

    if (!h) {
        return;
    }
    if (h->fd >= 0) {
        cr_async_fd_forget(h->fd);
        cr_tls_free(h->tls, 1);
        h->tls = NULL;
        close(h->fd);
        h->fd = -1;
        if (st->resp.status == 0 && h->phase >= H1_SENDING) {
            st->resp.request_sent = 1;
        }
    }
    if (!h->rc_set) {
        /* Stopped from outside (the browser left, a limit, a restart). */
        st->resp.rc = CR_UP_ABORTED;
        h->rc_set = 1;
    }
    cr_h1_parser_release(&h->ps);
    free(h->out);
    h->out = NULL;
    free(h->addrs);
    h->addrs = NULL;
    free(h->tls_name);
    h->tls_name = NULL;
}

static void h1_free(astream *st)
{
    if (st->h1) {
        cr_tls_free(st->h1->tls, 0);
        if (st->h1->fd >= 0) {
            close(st->h1->fd);      /* never handed to the loop */
        }
        free(st->h1->tls_name);
        cr_h1_parser_release(&st->h1->ps);
        free(st->h1->out);
        free(st->h1->addrs);
        free(st->h1->ctype);
        free(st->h1);
        st->h1 = NULL;
    }
}

static int h1_connect_expired(astream *st, apr_time_t now)
{
    cr_async_h1 *h = st->h1;
    /* The handshake counts as connecting, as libcurl's connect timeout. */
    if (h && h->fd >= 0 && h->phase <= H1_HANDSHAKE && now >= h->connect_deadline) {
        fail(st, CR_UP_TIMEOUT, "Connection to %.64s timed out%s", "the upstream", 0);
        return 1;
    }
    return 0;
}

/* Watch the upstream socket for ev (a system call only when that
 * changes): 0, or 1 when it failed (the exchange ends). */
static int watch(astream *st, apr_uint32_t ev)
{
    cr_async_h1 *h = st->h1;
    if (h->watching == ev) {
        return 0;
    }
    if (cr_async_fd_watch(h->fd, ev, FD_UPSTREAM, st) != 0) {
        fail(st, CR_UP_INTERNAL, "cannot watch the upstream socket%s: %s", "", errno);
        return 1;
    }
    h->watching = ev;
    return 0;
}

/* Watch the socket for what TLS wants next. */
static int tls_want(astream *st, cr_tls_rc rc)
{
    return watch(st, rc == CR_TLS_WANT_WRITE ? EPOLLOUT : EPOLLIN);
}

/* One read from the upstream: > 0 bytes, 0 at its end (*eof), or 0 with
 * nothing to read now (*again; for TLS, *want says what to watch). */
static apr_size_t read_some(astream *st, int *eof, int *again, cr_tls_rc *want)
{
    cr_async_h1 *h = st->h1;
    *eof = *again = 0;
    *want = CR_TLS_WANT_READ;
    if (h->tls) {
        cr_tls_rc rc;
        apr_size_t n = cr_tls_read(h->tls, rbuf, sizeof(rbuf), CR_TLS_NOWAIT, &rc, h->err, sizeof(h->err));
        if (n > 0) {
            return n;
        }
        if (rc == CR_TLS_WANT_READ || rc == CR_TLS_WANT_WRITE) {
            *again = 1;
            *want = rc;
        }
        else if (rc == CR_TLS_CLOSED) {
            *eof = 1;
        }
        else {
            fail(st, CR_UP_BROKEN, "%s%s", h->err, 0);
        }
        return 0;
    }
    else {
        ssize_t n = recv(h->fd, rbuf, sizeof(rbuf), 0);
        if (n > 0) {
            return (apr_size_t)n;
        }
        if (n == 0) {
            *eof = 1;
        }
        else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            *again = 1;
        }
        else {
            fail(st, CR_UP_BROKEN, "Recv failure%s: %s", "", errno);
        }
        return 0;
    }
}

/* The response's bytes, as many as there are (a few reads at most, so one
 * busy upstream does not starve the others; over TLS until OpenSSL holds
 * nothing more, since what it holds wakes no epoll).  1 when the exchange
 * ended. */
static int read_response(astream *st)
{
    cr_async_h1 *h = st->h1;
    int i, rc;

    for (i = 0; h->tls || i < 4; i++) {
        int eof, again;
        cr_tls_rc want;
        apr_size_t n = read_some(st, &eof, &again, &want);
        if (!n && again) {
            return h->tls ? tls_want(st, want) : 0;
        }
        if (!n && !eof) {
            return 1;       /* failed: st->resp says how */
        }
        rc = eof ? cr_h1_eof(&h->ps) : cr_h1_feed(&h->ps, rbuf, n, NULL);
        if (rc == CR_H1_DONE) {
            if (!h->rc_set) {
                st->resp.rc = CR_UP_OK;
                h->rc_set = 1;
            }
            return 1;
        }
        if (rc < 0) {
            if (!h->rc_set) {
                /* Nothing at all is "an empty reply" to libcurl: broken too. */
                fail(st, CR_UP_BROKEN, "upstream response: %s%s", cr_h1_strerror(rc), 0);
            }
            return 1;
        }
        if (h->tls && !cr_tls_has_pending(h->tls)) {
            /* Idle until the socket says otherwise: without the record
             * buffers (another read now would only find nothing). */
            cr_tls_shed(h->tls);
            return watch(st, EPOLLIN);
        }
        if (!h->tls && n < sizeof(rbuf)) {
            return 0;
        }
    }
    return 0;
}

/* The request head out: 1 when the exchange ended (failed), 0 otherwise
 * (all sent and the socket watched for the answer, or waiting to go on). */
static int send_request(astream *st)
{
    cr_async_h1 *h = st->h1;

    if (h->tls) {
        struct iovec iov;
        cr_tls_rc rc;
        iov.iov_base = h->out;
        iov.iov_len = h->out_len;
        rc = cr_tls_writev(h->tls, &iov, 1, CR_TLS_NOWAIT, h->err, sizeof(h->err));
        if (rc == CR_TLS_WANT_READ || rc == CR_TLS_WANT_WRITE) {
            return tls_want(st, rc);
        }
        if (rc != CR_TLS_OK) {
            fail(st, CR_UP_BROKEN, "%s%s", h->err, 0);
            return 1;
        }
        h->out_off = h->out_len;
    }
    while (h->out_off < h->out_len) {
        ssize_t n = send(h->fd, h->out + h->out_off, h->out_len - h->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                return 0;   /* EPOLLOUT again */
            }
            fail(st, CR_UP_BROKEN, "Send failure%s: %s", "", errno);
            return 1;
        }
        h->out_off += (apr_size_t)n;
    }
    free(h->out);
    h->out = NULL;
    h->phase = H1_READING;
    if (watch(st, EPOLLIN)) {
        return 1;
    }
    /* TLS may already hold the answer's first bytes (read with the
     * handshake's last flight). */
    return h->tls ? read_response(st) : 0;
}

/* The handshake, going on: 1 when the exchange ended (failed), 0
 * otherwise (done and the request on its way, or waiting). */
static int handshake(astream *st)
{
    cr_async_h1 *h = st->h1;
    cr_tls_rc rc;

    if (!h->tls) {
        const char *name = h->tls_name, *key = name + strlen(name) + 1;
        if (cr_tls_new(h->tls_ctx, h->fd, name, key, &h->tls, h->err, sizeof(h->err)) != CR_TLS_OK) {
            fail(st, CR_UP_CONNECT, "%s%s", h->err, 0);
            return 1;
        }
    }
    rc = cr_tls_handshake(h->tls, CR_TLS_NOWAIT, h->err, sizeof(h->err));
    if (rc == CR_TLS_WANT_READ || rc == CR_TLS_WANT_WRITE) {
        return tls_want(st, rc);
    }
    if (rc != CR_TLS_OK) {
        fail(st, CR_UP_CONNECT, "%s%s", h->err, 0);
        return 1;
    }
    h->phase = H1_SENDING;
    return send_request(st);
}

static int h1_event(astream *st, apr_uint32_t events)
{
    cr_async_h1 *h = st->h1;

    if (h->phase == H1_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof(err);
        struct sockaddr_storage peer;
        socklen_t pl = sizeof(peer);

        if (getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) {
            err = errno;
        }
        if (err) {
            /* This address refused: the next one, if any. */
            cr_async_fd_forget(h->fd);
            close(h->fd);
            h->watching = EPOLLOUT;
            if ((err = connect_next(h)) != 0
                || cr_async_fd_watch(h->fd, EPOLLOUT, FD_UPSTREAM, st) != 0) {
                fail(st, CR_UP_CONNECT, "Failed to connect to %.64s: %s", "the upstream",
                     err ? err : errno);
                return 1;
            }
            return 0;
        }
        if (getpeername(h->fd, (struct sockaddr *)&peer, &pl) != 0) {
            return 0;           /* not yet (a stale event) */
        }
        free(h->addrs);
        h->addrs = NULL;
        if (h->tls_ctx) {
            h->phase = H1_HANDSHAKE;
            return handshake(st);
        }
        h->phase = H1_SENDING;
        return send_request(st);
    }
    if (!(events & (EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        return 0;
    }
    switch (h->phase) {
    case H1_HANDSHAKE:
        return handshake(st);
    case H1_SENDING:
        return send_request(st);
    default:
        return read_response(st);
    }
}

static const struct cr_async_h1_ops h1_ops = {
    h1_add, h1_event, h1_connect_expired, h1_close, h1_free
};
