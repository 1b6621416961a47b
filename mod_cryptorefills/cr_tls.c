/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <stdlib.h>
#include <arpa/inet.h>

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_hash.h>

#include "cr_tls.h"

/* The newest session of one upstream, for resumption.  Malloc'd: entries
 * are replaced for the life of the process, under the context's mutex. */
typedef struct tls_sess {
    struct tls_sess *next;
    SSL_SESSION *sess;
    char key[];
} tls_sess;

struct cr_tls_ctx {
    SSL_CTX *ssl_ctx;
    apr_thread_mutex_t *mutex;   /* guards sessions only, never held across I/O */
    tls_sess *sessions;
    int nsessions;
};

struct cr_tls {
    SSL *ssl;
    cr_tls_ctx *ctx;
    int fd;
    char key[];
};

/* Upstreams remembered for resumption: a module talks to one or two. */
#define CR_TLS_MAX_SESSIONS 16

static int conn_index = -1;   /* SSL ex_data slot: our cr_tls */
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void make_index(void)
{
    conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static apr_status_t ctx_cleanup(void *data)
{
    cr_tls_ctx *c = data;
    while (c->sessions) {
        tls_sess *s = c->sessions;
        c->sessions = s->next;
        SSL_SESSION_free(s->sess);
        free(s);
    }
    SSL_CTX_free(c->ssl_ctx);
    return APR_SUCCESS;
}

/* OpenSSL hands over each new session (TLS 1.3: tickets after the
 * handshake, perhaps several): keep the newest per upstream. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    cr_tls *t = SSL_get_ex_data(ssl, conn_index);
    cr_tls_ctx *c;
    tls_sess **pp, *s;
    apr_size_t klen;

    if (!t || !SSL_SESSION_is_resumable(sess)) {
        return 0;
    }
    c = t->ctx;
    klen = strlen(t->key);
    s = malloc(sizeof(*s) + klen + 1);
    if (!s) {
        return 0;
    }
    s->sess = sess;            /* returning 1 keeps OpenSSL's reference */
    memcpy(s->key, t->key, klen + 1);
    apr_thread_mutex_lock(c->mutex);
    for (pp = &c->sessions; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->key, s->key)) {
            tls_sess *old = *pp;
            s->next = old->next;
            *pp = s;
            SSL_SESSION_free(old->sess);
            free(old);
            s = NULL;
            break;
        }
    }
    if (s) {
        if (c->nsessions >= CR_TLS_MAX_SESSIONS) {
            /* Forget the oldest (the list's tail). */
            for (pp = &c->sessions; (*pp)->next; pp = &(*pp)->next) {
            }
            SSL_SESSION_free((*pp)->sess);
            free(*pp);
            *pp = NULL;
            c->nsessions--;
        }
        s->next = c->sessions;
        c->sessions = s;
        c->nsessions++;
    }
    apr_thread_mutex_unlock(c->mutex);
    return 1;
}

/* Everything of a context lives in its own subpool of p, so a context that
 * could not be made (an unreadable CA file, asked for again on every
 * request) leaves nothing behind. */
static cr_tls_ctx *ctx_failed(apr_pool_t *cp, SSL_CTX *sc, const char **err, const char *why)
{
    *err = why;
    ERR_clear_error();
    SSL_CTX_free(sc);
    apr_pool_destroy(cp);
    return NULL;
}

cr_tls_ctx *cr_tls_ctx_create(apr_pool_t *p, const char *ca_file, const char **err)
{
    static const unsigned char alpn[] = { 8, 'h', 't', 't', 'p', '/', '1', '.', '1' };
    apr_pool_t *cp;
    cr_tls_ctx *c;
    SSL_CTX *sc;

    pthread_once(&index_once, make_index);
    if (apr_pool_create(&cp, p) != APR_SUCCESS) {
        *err = "out of memory";
        return NULL;
    }
    c = apr_pcalloc(cp, sizeof(*c));
    if (apr_thread_mutex_create(&c->mutex, APR_THREAD_MUTEX_DEFAULT, cp) != APR_SUCCESS) {
        return ctx_failed(cp, NULL, err, "cannot create a mutex");
    }
    if (!(sc = SSL_CTX_new(TLS_client_method()))) {
        return ctx_failed(cp, NULL, err, "SSL_CTX_new failed");
    }
    c->ssl_ctx = sc;
    SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
    /* An EOF without close_notify ends a read like a close: the HTTP
     * framing (Content-Length, chunked) tells a truncated answer. */
    SSL_CTX_set_options(c->ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    /* Idle pooled connections keep no read/write buffers. */
    SSL_CTX_set_mode(c->ssl_ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(c->ssl_ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c->ssl_ctx, on_new_session);
    if (SSL_CTX_set_alpn_protos(c->ssl_ctx, alpn, sizeof(alpn)) != 0) {
        return ctx_failed(cp, sc, err, "cannot set ALPN");
    }
    if (ca_file && *ca_file) {
        if (SSL_CTX_load_verify_locations(c->ssl_ctx, ca_file, NULL) != 1) {
            return ctx_failed(cp, sc, err, "cannot load CA certificates from the CA file");
        }
    }
    else if (SSL_CTX_set_default_verify_paths(c->ssl_ctx) != 1) {
        return ctx_failed(cp, sc, err, "cannot load the system's CA certificates");
    }
    apr_pool_cleanup_register(cp, c, ctx_cleanup, apr_pool_cleanup_null);
    return c;
}

struct cr_tls_reg {
    apr_pool_t *pool;            /* the contexts', used under the mutex only */
    apr_thread_mutex_t *mutex;
    apr_hash_t *by_ca;           /* CA file ("" for the system store) -> cr_tls_ctx */
};

apr_status_t cr_tls_reg_create(apr_pool_t *p, cr_tls_reg **out)
{
    cr_tls_reg *reg = apr_pcalloc(p, sizeof(*reg));
    apr_allocator_t *al = NULL;
    /* Its own allocator: the registry's pool is used by any thread (under
     * the registry's mutex), p's allocator is not thread-safe. */
    apr_status_t rv = apr_allocator_create(&al);

    if (rv == APR_SUCCESS) {
        rv = apr_pool_create_ex(&reg->pool, p, NULL, al);
        if (rv == APR_SUCCESS) {
            apr_allocator_owner_set(al, reg->pool);
        }
        else {
            apr_allocator_destroy(al);
        }
    }

    if (rv == APR_SUCCESS) {
        rv = apr_thread_mutex_create(&reg->mutex, APR_THREAD_MUTEX_DEFAULT, p);
    }
    if (rv == APR_SUCCESS) {
        reg->by_ca = apr_hash_make(reg->pool);
        *out = reg;
    }
    return rv;
}

cr_tls_ctx *cr_tls_reg_get(cr_tls_reg *reg, const char *ca_file, const char **err)
{
    const char *k = ca_file ? ca_file : "";
    cr_tls_ctx *c;

    apr_thread_mutex_lock(reg->mutex);
    c = apr_hash_get(reg->by_ca, k, APR_HASH_KEY_STRING);
    if (!c) {
        /* A CA file that cannot be read is refused each time (it was
         * checked at start-up; it may be fixed in place). */
        c = cr_tls_ctx_create(reg->pool, k, err);
        if (c) {
            apr_hash_set(reg->by_ca, apr_pstrdup(reg->pool, k), APR_HASH_KEY_STRING, c);
        }
    }
    apr_thread_mutex_unlock(reg->mutex);
    return c;
}

apr_time_t cr_tls_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (apr_time_t)ts.tv_sec * APR_USEC_PER_SEC + ts.tv_nsec / 1000;
}

/* Wait for fd to become readable (want_write 0) or writable until the
 * deadline. */
static cr_tls_rc wait_fd(int fd, int want_write, apr_time_t deadline)
{
    struct pollfd pfd;
    int rc;

    pfd.fd = fd;
    pfd.events = want_write ? POLLOUT : POLLIN;
    do {
        int ms = -1;
        if (deadline) {
            apr_time_t left = deadline - cr_tls_now();
            if (left <= 0) {
                return CR_TLS_TIMEOUT;
            }
            ms = (int)((left + 999) / 1000);
        }
        pfd.revents = 0;
        rc = poll(&pfd, 1, ms);
    } while (rc < 0 && errno == EINTR);
    if (rc == 0) {
        return CR_TLS_TIMEOUT;
    }
    return rc < 0 ? CR_TLS_ERROR : CR_TLS_OK;
}

/* OpenSSL's and the system's reason for a failed call, into err. */
static void describe(SSL *ssl, int sslerr, const char *what, char *err, apr_size_t errlen)
{
    unsigned long e = ERR_peek_last_error();
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;

    if (!err || !errlen) {
        ERR_clear_error();
        return;
    }
    if (vr != X509_V_OK) {
        apr_snprintf(err, errlen, "%s: SSL certificate problem: %s", what,
                     X509_verify_cert_error_string(vr));
    }
    else if (e) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof(buf));
        apr_snprintf(err, errlen, "%s: %s", what, buf);
    }
    else if (sslerr == SSL_ERROR_SYSCALL && errno) {
        apr_snprintf(err, errlen, "%s: %s", what, strerror(errno));
    }
    else {
        apr_snprintf(err, errlen, "%s: TLS error %d", what, sslerr);
    }
    ERR_clear_error();
}

/* After an SSL call returned r <= 0: wait when OpenSSL needs the socket,
 * else classify.  CR_TLS_OK means "call again". */
static cr_tls_rc after_call(cr_tls *t, int r, apr_time_t deadline, const char *what,
                            char *err, apr_size_t errlen)
{
    int e = SSL_get_error(t->ssl, r);
    cr_tls_rc rc;

    switch (e) {
    case SSL_ERROR_WANT_READ:
        if (deadline == CR_TLS_NOWAIT) {
            return CR_TLS_WANT_READ;
        }
        rc = wait_fd(t->fd, 0, deadline);
        break;
    case SSL_ERROR_WANT_WRITE:
        if (deadline == CR_TLS_NOWAIT) {
            return CR_TLS_WANT_WRITE;
        }
        rc = wait_fd(t->fd, 1, deadline);
        break;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        return CR_TLS_CLOSED;
    default:
        describe(t->ssl, e, what, err, errlen);
        return CR_TLS_ERROR;
    }
    if (rc == CR_TLS_TIMEOUT && err && errlen) {
        apr_snprintf(err, errlen, "%s: timed out", what);
    }
    else if (rc == CR_TLS_ERROR && err && errlen) {
        apr_snprintf(err, errlen, "%s: poll: %s", what, strerror(errno));
    }
    return rc;
}

static int is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

cr_tls_rc cr_tls_new(cr_tls_ctx *ctx, int fd, const char *host, const char *session_key,
                     cr_tls **out, char *err, apr_size_t errlen)
{
    apr_size_t klen = strlen(session_key);
    cr_tls *t = calloc(1, sizeof(*t) + klen + 1);
    tls_sess *s;
    int ok;

    *out = NULL;
    if (!t || !(t->ssl = SSL_new(ctx->ssl_ctx))) {
        free(t);
        apr_snprintf(err, errlen, "TLS: out of memory");
        return CR_TLS_ERROR;
    }
    t->ctx = ctx;
    t->fd = fd;
    memcpy(t->key, session_key, klen + 1);
    SSL_set_ex_data(t->ssl, conn_index, t);
    if (is_ip_literal(host)) {
        /* No SNI for an address (RFC 6066); the certificate must name it. */
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host);
    }
    else {
        ok = SSL_set_tlsext_host_name(t->ssl, host) && SSL_set1_host(t->ssl, host);
    }
    if (!ok || !SSL_set_fd(t->ssl, fd)) {
        describe(t->ssl, 0, "TLS setup", err, errlen);
        cr_tls_free(t, 0);
        return CR_TLS_ERROR;
    }
    apr_thread_mutex_lock(ctx->mutex);
    for (s = ctx->sessions; s; s = s->next) {
        if (!strcmp(s->key, session_key)) {
            SSL_set_session(t->ssl, s->sess);
            break;
        }
    }
    apr_thread_mutex_unlock(ctx->mutex);
    *out = t;
    return CR_TLS_OK;
}

cr_tls_rc cr_tls_handshake(cr_tls *t, apr_time_t deadline, char *err, apr_size_t errlen)
{
    for (;;) {
        int r;
        cr_tls_rc rc;
        /* OpenSSL's error queue is the thread's, shared with mod_ssl and
         * libcurl: what another left there would make SSL_get_error call
         * a mere "want read" a failure. */
        ERR_clear_error();
        r = SSL_connect(t->ssl);
        if (r == 1) {
            return CR_TLS_OK;
        }
        rc = after_call(t, r, deadline, "TLS handshake", err, errlen);
        if (rc == CR_TLS_CLOSED) {
            apr_snprintf(err, errlen, "TLS handshake: connection closed by the upstream");
            return CR_TLS_ERROR;
        }
        if (rc != CR_TLS_OK) {
            return rc;
        }
    }
}

cr_tls_rc cr_tls_connect(cr_tls_ctx *ctx, int fd, const char *host, const char *session_key,
                         apr_time_t deadline, cr_tls **out, char *err, apr_size_t errlen)
{
    cr_tls *t;
    cr_tls_rc rc = cr_tls_new(ctx, fd, host, session_key, &t, err, errlen);

    *out = NULL;
    if (rc == CR_TLS_OK) {
        rc = cr_tls_handshake(t, deadline, err, errlen);
        if (rc == CR_TLS_OK) {
            *out = t;
        }
        else {
            cr_tls_free(t, 0);
        }
    }
    return rc;
}

cr_tls_rc cr_tls_writev(cr_tls *t, const struct iovec *iov, int iovcnt, apr_time_t deadline,
                        char *err, apr_size_t errlen)
{
    char stack[16384];
    apr_size_t total = 0, off = 0;
    const char *buf;
    char *heap = NULL;
    cr_tls_rc rc = CR_TLS_OK;
    int i;

    for (i = 0; i < iovcnt; i++) {
        total += iov[i].iov_len;
    }
    if (iovcnt == 1) {
        buf = iov[0].iov_base;
    }
    else {
        /* One buffer, so the head and a small body share a record. */
        char *dst = total <= sizeof(stack) ? stack : (heap = malloc(total));
        if (!dst) {
            apr_snprintf(err, errlen, "TLS write: out of memory");
            return CR_TLS_ERROR;
        }
        for (i = 0; i < iovcnt; i++) {
            memcpy(dst + off, iov[i].iov_base, iov[i].iov_len);
            off += iov[i].iov_len;
        }
        buf = dst;
        off = 0;
    }
    while (off < total) {
        size_t n = 0;
        int r;
        ERR_clear_error();
        r = SSL_write_ex(t->ssl, buf + off, total - off, &n);
        if (r == 1) {
            off += n;
            continue;
        }
        rc = after_call(t, 0, deadline, "TLS write", err, errlen);
        if (rc != CR_TLS_OK) {
            break;
        }
    }
    free(heap);
    return rc;
}

apr_size_t cr_tls_read(cr_tls *t, char *buf, apr_size_t len, apr_time_t deadline, cr_tls_rc *rc,
                       char *err, apr_size_t errlen)
{
    for (;;) {
        size_t n = 0;
        ERR_clear_error();
        if (SSL_read_ex(t->ssl, buf, len, &n) == 1) {
            *rc = CR_TLS_OK;
            return n;
        }
        *rc = after_call(t, 0, deadline, "TLS read", err, errlen);
        if (*rc != CR_TLS_OK) {
            return 0;
        }
    }
}

int cr_tls_has_pending(cr_tls *t)
{
    return SSL_has_pending(t->ssl);
}

void cr_tls_shed(cr_tls *t)
{
    if (!SSL_has_pending(t->ssl)) {
        (void)SSL_free_buffers(t->ssl);
    }
}

int cr_tls_idle_ok(cr_tls *t)
{
    char c;
    size_t n = 0;
    int e;

    ERR_clear_error();
    if (SSL_read_ex(t->ssl, &c, 1, &n) == 1) {
        return 0;      /* an answer nobody asked for: the stream is off */
    }
    e = SSL_get_error(t->ssl, 0);
    ERR_clear_error();
    /* WANT_READ: what was there was TLS housekeeping (tickets), nothing
     * more is: the connection is fine. */
    return e == SSL_ERROR_WANT_READ;
}

int cr_tls_resumed(const cr_tls *t)
{
    return SSL_session_reused((SSL *)t->ssl);
}

void cr_tls_free(cr_tls *t, int notify)
{
    if (!t) {
        return;
    }
    if (t->ssl) {
        if (notify) {
            /* Non-blocking: one attempt, never a wait for the peer's. */
            ERR_clear_error();
            (void)SSL_shutdown(t->ssl);
        }
        SSL_free(t->ssl);
    }
    ERR_clear_error();
    free(t);
}
