/* SPDX-License-Identifier: Apache-2.0 */
/* The collected-exchange HTTP/1.1 client (see cr_h1client.h). */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <zlib.h>

#include <apr_strings.h>
#include <apr_date.h>
#include <apr_thread_mutex.h>
#include <apr_atomic.h>

#include "cr_h1client.h"
#include "cr_h1.h"
#include "cr_buf.h"
#include "cr_tls.h"

#define CR_H1C_KEY_MAX 512     /* "host:port CA-file" of a pooled connection */
#define CR_H1C_READ 16384      /* bytes read from the socket at a time */

/* A connection: its socket, and for https:// its TLS state. */
typedef struct conn_t {
    int fd;
    cr_tls *tls;
} conn_t;

typedef struct idle_conn {
    conn_t conn;
    char key[CR_H1C_KEY_MAX];
} idle_conn;

struct cr_h1c {
    apr_thread_mutex_t *mutex;   /* guards idle[] and nidle only, never held across I/O */
    idle_conn *idle;             /* oldest first */
    int nidle;
    int max_idle;
    const char *user_agent;
    cr_tls_reg *tls;             /* the process's TLS contexts, by CA file */
};

/* Close a connection (a TLS one says close_notify first, never waiting). */
static void conn_close(conn_t *cn)
{
    if (cn->fd >= 0) {
        cr_tls_free(cn->tls, 1);
        close(cn->fd);
    }
    cn->fd = -1;
    cn->tls = NULL;
}

static apr_status_t h1c_cleanup(void *data)
{
    cr_h1c *c = data;
    while (c->nidle > 0) {
        conn_close(&c->idle[--c->nidle].conn);
    }
    return APR_SUCCESS;
}

apr_status_t cr_h1c_create(apr_pool_t *p, int max_idle, const char *user_agent, cr_tls_reg *tls,
                           cr_h1c **out)
{
    cr_h1c *c = apr_pcalloc(p, sizeof(*c));
    apr_status_t rv;

    c->max_idle = max_idle > 0 ? max_idle : 1;
    c->idle = apr_pcalloc(p, sizeof(idle_conn) * (apr_size_t)c->max_idle);
    c->user_agent = user_agent;
    c->tls = tls;
    rv = apr_thread_mutex_create(&c->mutex, APR_THREAD_MUTEX_DEFAULT, p);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    apr_pool_cleanup_register(p, c, h1c_cleanup, apr_pool_cleanup_null);
    *out = c;
    return APR_SUCCESS;
}

/* ------------------------------------------------------------------ URL */

typedef struct url_t {
    const char *host;        /* as in the URL (brackets kept for IPv6), NUL-terminated */
    const char *name;        /* for the resolver: without brackets */
    unsigned port;
    const char *target;      /* "/path?query" */
    int tls;                 /* https:// */
    char key[CR_H1C_KEY_MAX];  /* the idle-list key, "" when too long to pool */
} url_t;

/* The URL's parts, copied from p; 0 when fine (cr_h1_url_split). */
static int parse_url(apr_pool_t *p, const char *url, url_t *u)
{
    cr_h1_url sp;

    if (cr_h1_url_split(url, &sp) != 0) {
        return -1;
    }
    u->tls = sp.tls;
    u->host = apr_pstrmemdup(p, sp.host, sp.host_len);
    u->name = sp.name == sp.host ? u->host : apr_pstrmemdup(p, sp.name, sp.name_len);
    u->port = sp.port;
    u->target = !sp.target_len ? "/"
              : apr_pstrcat(p, sp.target_slash ? "/" : "", apr_pstrmemdup(p, sp.target, sp.target_len), NULL);
    return 0;
}

int cr_h1c_applies(const cr_upstream_req *req)
{
    return !req->on_data && !req->on_tick && !req->on_headers
           && (!req->proxy || !*req->proxy)
           && req->url && (!strncasecmp(req->url, "http://", 7) || !strncasecmp(req->url, "https://", 8));
}

/* ------------------------------------------------------------------ time */

/* CLOCK_MONOTONIC microseconds: cr_tls_now()'s clock, so deadlines pass
 * to cr_tls as they are. */
static apr_int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (apr_int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Milliseconds to wait for a deadline (0: none): -1 forever, 0 passed. */
static int wait_ms(apr_int64_t deadline)
{
    apr_int64_t left;
    if (!deadline) {
        return -1;
    }
    left = deadline - now_us();
    if (left <= 0) {
        return 0;
    }
    left = (left + 999) / 1000;      /* milliseconds */
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* Wait for events on fd until deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, apr_int64_t deadline)
{
    for (;;) {
        struct pollfd pf = { fd, events, 0 };
        int ms = wait_ms(deadline), n;
        if (ms == 0 && deadline) {
            /* one last look without waiting */
            n = poll(&pf, 1, 0);
            return n > 0 ? 1 : n == 0 ? 0 : -1;
        }
        n = poll(&pf, 1, ms);
        if (n > 0) {
            return 1;
        }
        if (n == 0) {
            if (deadline && now_us() >= deadline) {
                return 0;
            }
            continue;
        }
        if (errno != EINTR) {
            return -1;
        }
    }
}

/* ------------------------------------------------------------------ idle list */

/* The most recently returned idle connection to key that looks alive
 * (fd -1: none). */
static conn_t idle_take(cr_h1c *c, const char *key)
{
    for (;;) {
        conn_t cn = { -1, NULL };
        int i;
        struct pollfd pf;
        apr_thread_mutex_lock(c->mutex);
        for (i = c->nidle - 1; i >= 0; i--) {
            if (!strcmp(c->idle[i].key, key)) {
                cn = c->idle[i].conn;
                memmove(&c->idle[i], &c->idle[i + 1], sizeof(idle_conn) * (apr_size_t)(c->nidle - i - 1));
                c->nidle--;
                break;
            }
        }
        apr_thread_mutex_unlock(c->mutex);
        if (cn.fd < 0) {
            return cn;
        }
        /* An idle HTTP connection has nothing to say: readable means the
         * upstream closed it (or sent garbage) -- or, over TLS 1.3, sent
         * session tickets after the handshake, which cr_tls_idle_ok takes. */
        pf.fd = cn.fd;
        pf.events = POLLIN;
        pf.revents = 0;
        if (poll(&pf, 1, 0) == 0 || (cn.tls && cr_tls_idle_ok(cn.tls))) {
            return cn;
        }
        conn_close(&cn);
    }
}

/* Keep a connection for the next request; the oldest goes when full. */
static void idle_put(cr_h1c *c, conn_t cn, const char *key)
{
    conn_t evicted = { -1, NULL };
    if (cn.tls) {
        cr_tls_shed(cn.tls);    /* idle without its record buffers */
    }
    apr_thread_mutex_lock(c->mutex);
    if (c->nidle == c->max_idle) {
        evicted = c->idle[0].conn;
        memmove(&c->idle[0], &c->idle[1], sizeof(idle_conn) * (apr_size_t)(c->nidle - 1));
        c->nidle--;
    }
    c->idle[c->nidle].conn = cn;
    memcpy(c->idle[c->nidle].key, key, strlen(key) + 1);   /* fits: from a url_t key */
    c->nidle++;
    apr_thread_mutex_unlock(c->mutex);
    conn_close(&evicted);
}

/* ------------------------------------------------------------------ connect */

/* A name lookup that may outlive its caller: glibc's getaddrinfo_a runs
 * it on a helper thread and, when it cannot be cancelled in time, still
 * writes into the request afterwards.  Two references (the caller, the
 * completion notification); the last one frees the job and any result. */
typedef struct resolve_job {
    struct gaicb cb;
    struct addrinfo hints;
    struct sigevent sev;
    apr_uint32_t refs;
    char port[8];
    char name[];
} resolve_job;

static void job_unref(resolve_job *job, int keep_result)
{
    if (apr_atomic_dec32(&job->refs) == 0) {
        if (!keep_result && job->cb.ar_result) {
            freeaddrinfo(job->cb.ar_result);
        }
        free(job);
    }
}

static void job_done(union sigval sv)
{
    job_unref(sv.sival_ptr, 0);
}

/* Give up on a lookup: a request still queued is cancelled and never
 * notified (both references are ours); a running or finished one is
 * notified, which drops the other reference. */
static void job_abandon(resolve_job *job)
{
    if (gai_cancel(&job->cb) == EAI_CANCELED) {
        job_unref(job, 0);
    }
    job_unref(job, 0);
}

int cr_h1c_resolve(const char *name, const char *port, const struct addrinfo *hints,
                   apr_int64_t deadline, struct addrinfo **res)
{
    struct addrinfo h = *hints;
    resolve_job *job;
    struct gaicb *list[1];
    size_t nl = strlen(name);
    int rc;

    h.ai_flags |= AI_NUMERICHOST;
    rc = getaddrinfo(name, port, &h, res);
    if (rc != EAI_NONAME) {
        return rc;
    }
    job = calloc(1, sizeof(*job) + nl + 1);
    if (!job) {
        return EAI_MEMORY;
    }
    memcpy(job->name, name, nl + 1);
    apr_cpystrn(job->port, port, sizeof(job->port));
    job->hints = *hints;
    job->cb.ar_name = job->name;
    job->cb.ar_service = job->port;
    job->cb.ar_request = &job->hints;
    job->sev.sigev_notify = SIGEV_THREAD;
    job->sev.sigev_notify_function = job_done;
    job->sev.sigev_value.sival_ptr = job;
    apr_atomic_set32(&job->refs, 2);
    list[0] = &job->cb;
    rc = getaddrinfo_a(GAI_NOWAIT, list, 1, &job->sev);
    if (rc != 0) {
        free(job);
        return rc;
    }
    for (;;) {
        int ms = wait_ms(deadline);
        struct timespec ts;
        ts.tv_sec = ms / 1000;
        ts.tv_nsec = (long)(ms % 1000) * 1000000L;
        rc = gai_suspend((const struct gaicb *const *)list, 1, ms < 0 ? NULL : &ts);
        if (rc == 0 || rc == EAI_ALLDONE) {
            break;
        }
        if (rc == EAI_AGAIN && ms >= 0) {
            job_abandon(job);   /* the deadline passed */
            return EAI_AGAIN;
        }
        if (rc != EAI_INTR && rc != EAI_AGAIN) {
            break;
        }
    }
    rc = gai_error(&job->cb);
    if (rc == EAI_INPROGRESS) {
        job_abandon(job);
        return EAI_AGAIN;
    }
    *res = rc == 0 ? job->cb.ar_result : NULL;
    job->cb.ar_result = NULL;   /* the caller's now */
    job_unref(job, 1);
    return rc;
}

/* A new connection to u within deadline.  Returns the socket, or -1 with
 * *timed_out and err set. */
static int connect_to(apr_pool_t *p, const url_t *u, apr_int64_t deadline, int *timed_out,
                      const char **err, apr_int64_t start)
{
    struct addrinfo hints, *res = NULL, *ai;
    char port[8];
    int rc, fd = -1, last_errno = 0;

    *timed_out = 0;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    apr_snprintf(port, sizeof(port), "%u", u->port);
    rc = cr_h1c_resolve(u->name, port, &hints, deadline, &res);
    if (rc != 0) {
        if (rc == EAI_AGAIN && deadline && now_us() >= deadline) {
            *timed_out = 1;
            *err = apr_psprintf(p, "Resolving timed out after %ld milliseconds",
                                (long)((now_us() - start) / 1000));
        }
        else {
            *err = apr_psprintf(p, "Could not resolve host: %s (%s)", u->name, gai_strerror(rc));
        }
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        int one = 1, soerr = 0, w;
        socklen_t sl = sizeof(soerr);
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            break;
        }
        if (errno != EINPROGRESS) {
            last_errno = errno;
            close(fd);
            fd = -1;
            continue;
        }
        w = wait_fd(fd, POLLOUT, deadline);
        if (w == 0) {
            close(fd);
            fd = -1;
            *timed_out = 1;
            break;
        }
        if (w < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
            last_errno = w < 0 ? errno : soerr ? soerr : errno;
            close(fd);
            fd = -1;
            continue;
        }
        break;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        long ms = (long)((now_us() - start) / 1000);
        char eb[120];
        *err = *timed_out
            ? apr_psprintf(p, "Connection timed out after %ld milliseconds", ms)
            : apr_psprintf(p, "Failed to connect to %s port %u after %ld ms: %s", u->name, u->port,
                           ms, apr_strerror(APR_FROM_OS_ERROR(last_errno), eb, sizeof(eb)));
    }
    return fd;
}

/* TLS on a new connection to an https:// upstream, verified as libcurl
 * verified (the system store or only the CA file; host name or address),
 * within the connect deadline.  0, or -1 with the connection closed and
 * resp's rc and error set (a refused certificate is "could not connect"). */
static int handshake(cr_h1c *c, apr_pool_t *p, const url_t *u, const cr_upstream_req *req,
                     conn_t *cn, apr_int64_t cdeadline, cr_upstream_resp *resp)
{
    const char *why = NULL;
    cr_tls_ctx *ctx = c->tls ? cr_tls_reg_get(c->tls, req->ca_file, &why) : NULL;
    char err[200], key[300];
    cr_tls_rc rc;

    if (!ctx) {
        conn_close(cn);
        resp->rc = CR_UP_CONNECT;
        resp->error = apr_pstrcat(p, "TLS: ", why ? why : "no TLS context", NULL);
        return -1;
    }
    apr_snprintf(key, sizeof(key), "%s:%u", u->name, u->port);
    rc = cr_tls_connect(ctx, cn->fd, u->name, key, (apr_time_t)cdeadline, &cn->tls, err, sizeof(err));
    if (rc != CR_TLS_OK) {
        conn_close(cn);
        resp->rc = rc == CR_TLS_TIMEOUT ? CR_UP_TIMEOUT : CR_UP_CONNECT;
        resp->error = apr_pstrdup(p, err);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ answer */

typedef struct answer_t {
    apr_pool_t *p;
    const cr_upstream_req *req;
    cr_upstream_resp *resp;
    cr_buf body;
    int coding;                  /* CR_H1_CE_* of the answer */
    z_stream z;
    int z_on;
    int z_done;                  /* the compressed stream ended */
    int too_large;
    int bad_coding;
} answer_t;

static int on_head(void *baton, const cr_h1_head *h)
{
    answer_t *a = baton;
    a->resp->status = h->status;
    if (h->content_type) {
        a->resp->content_type = apr_pstrmemdup(a->p, h->content_type, h->content_type_len);
    }
    if (h->retry_after) {
        const char *v = apr_pstrmemdup(a->p, h->retry_after, h->retry_after_len);
        if (*v >= '0' && *v <= '9') {
            char *end;
            long s = strtol(v, &end, 10);
            a->resp->retry_after = *end ? -1 : s;
        }
        else {
            /* An HTTP-date: seconds from now, 0 when past (libcurl's way). */
            apr_time_t t = apr_date_parse_http(v);
            if (t != APR_DATE_BAD) {
                apr_time_t d = t - apr_time_now();
                a->resp->retry_after = d > 0 ? (long)apr_time_sec(d) : 0;
            }
        }
    }
    /* A body announced over the cap is refused before it comes (libcurl's
     * CURLOPT_MAXFILESIZE). */
    if (a->req->max_response && h->content_length >= 0
        && (unsigned long long)h->content_length > a->req->max_response) {
        a->too_large = 1;
        return 1;
    }
    a->coding = h->content_encoding;
    if (!h->no_body && (a->coding == CR_H1_CE_GZIP || a->coding == CR_H1_CE_DEFLATE)) {
        memset(&a->z, 0, sizeof(a->z));
        /* 32 + MAX_WBITS: gzip or zlib header, whichever comes. */
        if (inflateInit2(&a->z, 32 + MAX_WBITS) != Z_OK) {
            a->bad_coding = 1;
            return 1;
        }
        a->z_on = 1;
    }
    return 0;
}

static int keep(answer_t *a, const char *d, size_t n)
{
    if (a->body.len + n > a->req->max_response) {
        a->too_large = 1;
        return 1;
    }
    cr_buf_append(&a->body, d, n);
    return 0;
}

static int on_body(void *baton, const char *d, size_t n)
{
    answer_t *a = baton;
    char out[CR_H1C_READ];

    if (!a->z_on) {
        return keep(a, d, n);
    }
    if (a->z_done) {
        return 0;   /* anything after the compressed stream is ignored */
    }
    a->z.next_in = (Bytef *)d;
    a->z.avail_in = (uInt)n;
    do {
        int zr;
        a->z.next_out = (Bytef *)out;
        a->z.avail_out = sizeof(out);
        zr = inflate(&a->z, Z_NO_FLUSH);
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
            a->bad_coding = 1;
            return 1;
        }
        if (keep(a, out, sizeof(out) - a->z.avail_out)) {
            return 1;
        }
        if (zr == Z_STREAM_END) {
            a->z_done = 1;
            break;
        }
        if (zr == Z_BUF_ERROR) {
            break;   /* needs more input */
        }
    } while (a->z.avail_in > 0 || a->z.avail_out == 0);
    return 0;
}

static const cr_h1_callbacks callbacks = { NULL, on_head, on_body };

/* ------------------------------------------------------------------ exchange */

enum { XCH_DONE, XCH_RETRY, XCH_FAIL };

/* Send the request: head and body in one sendmsg (more only if the socket
 * takes less; over TLS one write of both).  Returns 0, or an errno
 * (ETIMEDOUT for the deadline; EPIPE for a TLS failure, with *sent set:
 * what left is not known). */
static int send_all(const conn_t *cn, const char *head, size_t hlen, const char *body, size_t blen,
                    apr_int64_t deadline, size_t *sent)
{
    struct iovec iov[2];
    int i = 0, cnt = blen ? 2 : 1, fd = cn->fd;

    iov[0].iov_base = (void *)head;
    iov[0].iov_len = hlen;
    iov[1].iov_base = (void *)body;
    iov[1].iov_len = blen;
    *sent = 0;
    if (cn->tls) {
        cr_tls_rc rc = cr_tls_writev(cn->tls, iov, cnt, (apr_time_t)deadline, NULL, 0);
        *sent = hlen + blen;
        return rc == CR_TLS_OK ? 0 : rc == CR_TLS_TIMEOUT ? ETIMEDOUT : EPIPE;
    }
    while (i < cnt) {
        struct msghdr mh;
        ssize_t n;
        memset(&mh, 0, sizeof(mh));
        mh.msg_iov = iov + i;
        mh.msg_iovlen = (size_t)(cnt - i);
        n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            int w;
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
            w = wait_fd(fd, POLLOUT, deadline);
            if (w == 0) return ETIMEDOUT;
            if (w < 0) return errno;
            continue;
        }
        *sent += (size_t)n;
        while (i < cnt && (size_t)n >= iov[i].iov_len) {
            n -= (ssize_t)iov[i].iov_len;
            i++;
        }
        if (i < cnt) {
            iov[i].iov_base = (char *)iov[i].iov_base + n;
            iov[i].iov_len -= (size_t)n;
        }
    }
    return 0;
}

void cr_h1c_perform(cr_h1c *c, apr_pool_t *p, const cr_upstream_req *req, cr_upstream_resp *resp)
{
    apr_int64_t start = now_us(), deadline, cdeadline;
    long cto = req->connect_timeout_ms > 0 ? req->connect_timeout_ms : 3000L;
    url_t u;
    cr_h1_request hr;
    char *head;
    size_t hlen;
    int attempt, is_post = !strcmp(req->method, "POST");
    answer_t a;

    memset(resp, 0, sizeof(*resp));
    resp->retry_after = -1;
    deadline = req->timeout_ms > 0 ? start + (apr_int64_t)req->timeout_ms * 1000 : 0;
    cdeadline = start + (apr_int64_t)cto * 1000;
    if (deadline && deadline < cdeadline) {
        cdeadline = deadline;
    }
    if (parse_url(p, req->url, &u) != 0) {
        resp->rc = CR_UP_BROKEN;   /* what libcurl's URL_MALFORMAT maps to */
        resp->error = apr_psprintf(p, "URL not understood: %s", req->url);
        return;
    }
    /* Connections are keyed by the CA setting too, as libcurl's handles are
     * (plain http reads no CA, but a configuration change still never
     * shares a connection). */
    {
        size_t hl = strlen(u.host), cl = req->ca_file ? strlen(req->ca_file) : 0;
        if (hl + cl + 10 < sizeof(u.key)) {
            char *k = u.key;
            if (u.tls) {
                memcpy(k, "s:", 2);   /* never a plain connection for https, nor the reverse */
                k += 2;
            }
            memcpy(k, u.host, hl);
            k += hl;
            *k++ = ':';
            k += cr_h1_fmt_uint(k, u.port);
            *k++ = ' ';
            memcpy(k, req->ca_file ? req->ca_file : "", cl);
            k[cl] = '\0';
        }
        else {
            u.key[0] = '\0';
        }
    }
    memset(&hr, 0, sizeof(hr));
    hr.method = req->method;
    hr.host = u.host;
    hr.port = u.port;
    hr.default_port = u.tls ? 443 : 80;
    hr.target = u.target;
    hr.headers = req->headers;
    hr.user_agent = c->user_agent;
    hr.accept = "*/*";
    hr.accept_encoding = "gzip";
    hr.has_body = is_post || req->body_len;
    hr.body_len = req->body_len;
    hlen = cr_h1_head_len(&hr);
    if (!hlen) {
        resp->rc = CR_UP_INTERNAL;
        resp->error = "a request header holds a line break";
        return;
    }
    head = apr_palloc(p, hlen);
    cr_h1_head_write(&hr, head);

    memset(&a, 0, sizeof(a));
    a.p = p;
    a.req = req;
    a.resp = resp;
    cr_buf_init(&a.body, p, 16384);

    for (attempt = 0; attempt < 2; attempt++) {
        int reused = 0, rc = CR_H1_MORE, outcome = XCH_FAIL, keepable = 0;
        conn_t cn = { -1, NULL };
        size_t sent = 0;
        cr_h1_parser ps;
        char buf[CR_H1C_READ];

        /* A retry always goes out on a new connection. */
        if (!req->fresh_connection && attempt == 0 && u.key[0]) {
            cn = idle_take(c, u.key);
            reused = cn.fd >= 0;
        }
        resp->reused = 0;
        if (cn.fd < 0) {
            int timed_out;
            cn.fd = connect_to(p, &u, cdeadline, &timed_out, &resp->error, start);
            resp->connects++;
            if (cn.fd < 0) {
                resp->rc = timed_out ? CR_UP_TIMEOUT : CR_UP_CONNECT;
                break;
            }
            if (u.tls && handshake(c, p, &u, req, &cn, cdeadline, resp) != 0) {
                break;
            }
        }
        resp->reused = reused;
        {
            int se = send_all(&cn, head, hlen, req->body, req->body_len, deadline, &sent);
            if (sent) {
                resp->request_sent = 1;
            }
            if (se) {
                if (reused && se != ETIMEDOUT && !req->fresh_connection && attempt == 0) {
                    conn_close(&cn);
                    continue;   /* request_sent stays: a request that left may have arrived */
                }
                conn_close(&cn);
                if (se == ETIMEDOUT) {
                    resp->rc = CR_UP_TIMEOUT;
                    resp->error = apr_psprintf(p, "Operation timed out after %ld milliseconds with 0 bytes received",
                                               (long)((now_us() - start) / 1000));
                }
                else {
                    char eb[120];
                    resp->rc = CR_UP_BROKEN;
                    resp->error = apr_psprintf(p, "Send failure: %s",
                                               apr_strerror(APR_FROM_OS_ERROR(se), eb, sizeof(eb)));
                }
                break;
            }
        }
        cr_h1_parser_init(&ps, &callbacks, &a, !strcmp(req->method, "HEAD"));
        for (;;) {
            ssize_t n;
            int w;
            if (cn.tls) {
                /* cr_tls waits itself, and knows what it holds decrypted. */
                cr_tls_rc trc;
                char te[160];
                n = (ssize_t)cr_tls_read(cn.tls, buf, sizeof(buf), (apr_time_t)deadline, &trc, te, sizeof(te));
                w = n > 0 || trc != CR_TLS_TIMEOUT;
                if (n == 0 && trc == CR_TLS_ERROR) {
                    n = -1;
                    errno = EPROTO;
                }
            }
            else {
                w = wait_fd(cn.fd, POLLIN, deadline);
                n = w <= 0 ? -1 : recv(cn.fd, buf, sizeof(buf), 0);
            }
            if (w == 0) {
                resp->rc = CR_UP_TIMEOUT;
                resp->error = apr_psprintf(p, "Operation timed out after %ld milliseconds with %llu bytes received",
                                           (long)((now_us() - start) / 1000), cr_h1_body_bytes(&ps));
                break;
            }
            if (n > 0) {
                size_t used = 0;
                rc = cr_h1_feed(&ps, buf, (size_t)n, &used);
                if (rc == CR_H1_MORE) {
                    continue;
                }
                if (rc == CR_H1_DONE) {
                    outcome = XCH_DONE;
                    keepable = cr_h1_keep_alive(&ps) && used == (size_t)n;
                }
                break;
            }
            if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
                continue;
            }
            /* The connection ended (EOF, reset). */
            if (cr_h1_received(&ps) == 0 && reused && !req->fresh_connection && attempt == 0) {
                outcome = XCH_RETRY;
                break;
            }
            if (n == 0) {
                rc = cr_h1_eof(&ps);
                if (rc == CR_H1_DONE) {
                    outcome = XCH_DONE;
                    break;
                }
                resp->rc = CR_UP_BROKEN;
                resp->error = cr_h1_received(&ps) == 0
                    ? "Empty reply from server"
                    : apr_psprintf(p, "transfer closed with outstanding read data remaining (%s)",
                                   cr_h1_strerror(rc));
            }
            else {
                char eb[120];
                resp->rc = CR_UP_BROKEN;
                resp->error = apr_psprintf(p, "Recv failure: %s",
                                           apr_strerror(APR_FROM_OS_ERROR(errno), eb, sizeof(eb)));
            }
            rc = CR_H1_ETRUNCATED;
            break;
        }
        cr_h1_parser_release(&ps);
        if (outcome == XCH_RETRY) {
            conn_close(&cn);
            continue;   /* request_sent stays: a request that left may have arrived */
        }
        if (outcome == XCH_DONE && a.z_on && !a.z_done && a.z.total_in > 0) {
            /* The answer ended inside its compressed stream (an empty body
             * announced as gzip is just empty). */
            outcome = XCH_FAIL;
            keepable = 0;
            resp->rc = CR_UP_BROKEN;
            resp->error = "Error while processing content unencoding: truncated stream";
        }
        else if (outcome == XCH_DONE) {
            resp->rc = CR_UP_OK;
        }
        else if (rc < 0 && rc != CR_H1_ETRUNCATED) {
            if (a.too_large) {
                resp->rc = CR_UP_TOO_LARGE;
                resp->error = "Maximum file size exceeded";
            }
            else if (a.bad_coding) {
                resp->rc = CR_UP_BROKEN;
                resp->error = "Error while processing content unencoding";
            }
            else {
                resp->rc = CR_UP_BROKEN;
                resp->error = apr_psprintf(p, "Weird server reply: %s", cr_h1_strerror(rc));
            }
        }
        if (keepable && !req->fresh_connection && resp->rc == CR_UP_OK && u.key[0]) {
            idle_put(c, cn, u.key);
        }
        else {
            conn_close(&cn);
        }
        break;
    }
    if (a.z_on) {
        inflateEnd(&a.z);
    }
    resp->body = cr_buf_str(&a.body);
    resp->len = a.body.len;
    resp->total_time = (double)(now_us() - start) / 1e6;
}
