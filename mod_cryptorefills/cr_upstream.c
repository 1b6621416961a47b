/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>
#include <apr_file_io.h>
#include <apr_uri.h>
#include <apr_cstr.h>
#include <apr_atomic.h>
#include <curl/curl.h>

#include "cr_upstream.h"
#include "cr_h1client.h"
#include "cr_buf.h"
#include "cr_tls.h"

/* An idle handle and the trust/proxy setting its connections were made
 * under.  The key is malloc'd: slots come and go for the life of the
 * process, under the mutex, and a pool allocation could never be freed. */
typedef struct idle_slot {
    CURL *h;
    char *key;
} idle_slot;

struct cr_upstream_pool {
    apr_thread_mutex_t *mutex;   /* guards idle[] and nidle only, never held across I/O */
    idle_slot *idle;
    int nidle;
    int max_idle;
    const char *user_agent;
    volatile apr_uint32_t connects;
    cr_tls_reg *tls;             /* TLS contexts of the own connections, by CA file */
    cr_h1c *h1;                  /* the collected exchanges of the own client */
};

apr_status_t cr_upstream_global_init(void)
{
    static int done;
    if (!done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            return APR_EGENERAL;
        }
        done = 1;
    }
    return APR_SUCCESS;
}

static apr_status_t pool_cleanup(void *data)
{
    cr_upstream_pool *up = data;
    while (up->nidle > 0) {
        idle_slot *sl = &up->idle[--up->nidle];
        curl_easy_cleanup(sl->h);
        free(sl->key);
    }
    return APR_SUCCESS;
}

apr_status_t cr_upstream_pool_create(apr_pool_t *p, int max_idle, const char *user_agent,
                                     cr_upstream_pool **out)
{
    cr_upstream_pool *up = apr_pcalloc(p, sizeof(*up));
    apr_status_t rv;

    up->max_idle = max_idle > 0 ? max_idle : 1;
    up->idle = apr_pcalloc(p, sizeof(idle_slot) * (apr_size_t)up->max_idle);
    up->user_agent = apr_pstrdup(p, user_agent);
    rv = apr_thread_mutex_create(&up->mutex, APR_THREAD_MUTEX_DEFAULT, p);
    if (rv == APR_SUCCESS) {
        rv = cr_tls_reg_create(p, &up->tls);
    }
    if (rv == APR_SUCCESS) {
        rv = cr_h1c_create(p, up->max_idle, up->user_agent, up->tls, &up->h1);
    }
    if (rv != APR_SUCCESS) {
        return rv;
    }
    apr_pool_cleanup_register(p, up, pool_cleanup, apr_pool_cleanup_null);
    *out = up;
    return APR_SUCCESS;
}

cr_tls_reg *cr_upstream_pool_tls(cr_upstream_pool *up)
{
    return up->tls;
}

apr_uint64_t cr_upstream_connects(cr_upstream_pool *up)
{
    return apr_atomic_read32(&up->connects);
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata);
static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata);
static int on_xferinfo(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow);

/* The setting a connection depends on besides its URL: what it trusts and
 * how it gets there. */
static char *handle_key(const cr_upstream_req *req)
{
    const char *ca = req->ca_file ? req->ca_file : "", *px = req->proxy ? req->proxy : "";
    apr_size_t a = strlen(ca), b = strlen(px);
    char *k = malloc(a + b + 2);

    if (k) {
        memcpy(k, ca, a);
        k[a] = '\n';
        memcpy(k + a + 1, px, b + 1);
    }
    return k;
}

/* Options that stay the same for every transfer a handle makes: set once
 * when the handle is created.  A handle is only ever reused under the same
 * key, so its CA file and proxy are constant too.  The options that change
 * per request are all set by set_request_options() and the ones pointing
 * into a request's memory are cleared by clear_request_options(); there is
 * no curl_easy_reset() per request, which would throw these away and make
 * libcurl re-derive them on every exchange. */
static int set_handle_options(CURL *h, const cr_upstream_pool *up, const cr_upstream_req *req)
{
#define HSETOPT(o, v) do { if (curl_easy_setopt(h, (o), (v)) != CURLE_OK) return -1; } while (0)
    HSETOPT(CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    HSETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    HSETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    HSETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    HSETOPT(CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    HSETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    /* TLS to the upstream always verifies the peer and its host name. */
    HSETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    HSETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
    if (req->ca_file && *req->ca_file) {
        /* Only these CAs: the built-in CA directory would otherwise still
         * be searched beside the file. */
        HSETOPT(CURLOPT_CAINFO, req->ca_file);
        HSETOPT(CURLOPT_CAPATH, (char *)NULL);
        /* The same CAs for an https:// proxy; a libcurl without HTTPS-proxy
         * support refuses these, which only matters if one is configured
         * (and then the CONNECT itself fails). */
        (void)curl_easy_setopt(h, CURLOPT_PROXY_CAINFO, req->ca_file);
        (void)curl_easy_setopt(h, CURLOPT_PROXY_CAPATH, (char *)NULL);
    }
    if (req->proxy && *req->proxy) {
        HSETOPT(CURLOPT_PROXY, req->proxy);
        /* An empty list, not NULL: NULL makes libcurl read NO_PROXY. */
        HSETOPT(CURLOPT_NOPROXY, "");
    }
    else {
        /* "" (not NULL) switches proxies off, environment variables included. */
        HSETOPT(CURLOPT_PROXY, "");
    }
    HSETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    HSETOPT(CURLOPT_TCP_NODELAY, 1L);
    HSETOPT(CURLOPT_USERAGENT, up->user_agent);
    HSETOPT(CURLOPT_WRITEFUNCTION, on_write);
    HSETOPT(CURLOPT_HEADERFUNCTION, on_header);
    HSETOPT(CURLOPT_XFERINFOFUNCTION, on_xferinfo);
#undef HSETOPT
    return 0;
}

/* Take the most recently returned handle made under the same key (its
 * connection is the warmest one this request may use), or make one. */
static CURL *handle_get(cr_upstream_pool *up, const char *key, const cr_upstream_req *req)
{
    CURL *h = NULL;
    char *old = NULL;
    int i;
    apr_thread_mutex_lock(up->mutex);
    for (i = up->nidle - 1; i >= 0; i--) {
        if (!strcmp(up->idle[i].key, key)) {
            h = up->idle[i].h;
            old = up->idle[i].key;
            memmove(&up->idle[i], &up->idle[i + 1], sizeof(idle_slot) * (apr_size_t)(up->nidle - i - 1));
            up->nidle--;
            break;
        }
    }
    apr_thread_mutex_unlock(up->mutex);
    free(old);
    if (h) {
        return h;
    }
    h = curl_easy_init();
    if (h && set_handle_options(h, up, req) != 0) {
        curl_easy_cleanup(h);
        h = NULL;
    }
    return h;
}

/* Return a handle; when the pool is full the oldest idle one goes. */
static void handle_put(cr_upstream_pool *up, CURL *h, const char *key)
{
    idle_slot evicted = { NULL, NULL };
    char *k = strdup(key);
    if (!k) {
        curl_easy_cleanup(h);
        return;
    }
    apr_thread_mutex_lock(up->mutex);
    if (up->nidle == up->max_idle) {
        evicted = up->idle[0];
        memmove(&up->idle[0], &up->idle[1], sizeof(idle_slot) * (apr_size_t)(up->nidle - 1));
        up->nidle--;
    }
    up->idle[up->nidle].h = h;
    up->idle[up->nidle].key = k;
    up->nidle++;
    apr_thread_mutex_unlock(up->mutex);
    if (evicted.h) {
        curl_easy_cleanup(evicted.h);
        free(evicted.key);
    }
}

typedef struct xfer_t {
    apr_pool_t *p;
    CURL *h;
    const cr_upstream_req *req;
    cr_buf body;            /* a collected body */
    int too_large;
    int aborted;
} xfer_t;

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    xfer_t *x = userdata;
    apr_size_t n = size * nmemb;

    if (x->req->on_data) {
        long status = 0;
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
        if (x->req->on_data(x->req->baton, status, ptr, n)) {
            x->aborted = 1;
            return 0;
        }
        return n;
    }
    if (x->body.len + n > x->req->max_response) {
        x->too_large = 1;
        return 0;
    }
    cr_buf_append(&x->body, ptr, n);
    return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    xfer_t *x = userdata;
    apr_size_t n = size * nitems;
    if (x->req->on_headers
        && ((n == 2 && buf[0] == '\r' && buf[1] == '\n') || (n == 1 && buf[0] == '\n'))) {
        long status = 0;
        char *ct = NULL;
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200) {
            curl_easy_getinfo(x->h, CURLINFO_CONTENT_TYPE, &ct);
            if (x->req->on_headers(x->req->baton, status, ct)) {
                x->aborted = 1;
                return 0;
            }
        }
    }
    return n;
}

static int on_xferinfo(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    xfer_t *x = clientp;
    (void)dltotal; (void)dlnow; (void)ultotal; (void)ulnow;
    if (x->req->on_tick && x->req->on_tick(x->req->baton)) {
        x->aborted = 1;
        return 1;
    }
    return 0;
}

const char *cr_upstream_rc_name(cr_upstream_rc rc)
{
    switch (rc) {
    case CR_UP_OK: return "ok";
    case CR_UP_CONNECT: return "connect";
    case CR_UP_TIMEOUT: return "timeout";
    case CR_UP_TOO_LARGE: return "too-large";
    case CR_UP_BROKEN: return "broken";
    case CR_UP_ABORTED: return "aborted";
    default: return "internal";
    }
}

/* The handle must not keep pointers into a finished request's memory (its
 * pool, its stack).  POSTFIELDS NULL selects POST, so HTTPGET comes after. */
static void clear_request_options(CURL *h)
{
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, NULL);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, NULL);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
}

#define SETOPT(h, o, v) do { if (curl_easy_setopt((h), (o), (v)) != CURLE_OK) goto setopt_failed; } while (0)

struct cr_upstream_xfer {
    xfer_t x;
    cr_upstream_pool *up;
    char *key;                   /* the idle-handle key (CA file, proxy); malloc'd */
    struct curl_slist *hl;
    char *ct;                    /* heap mode: the content type finish found */
    char errbuf[CURL_ERROR_SIZE];
};

void cr_upstream_xfer_free(cr_upstream_xfer *xf)
{
    if (xf && !xf->x.p) {
        if (xf->x.h) {
            /* Never finished: a transfer stopped half-way. */
            curl_slist_free_all(xf->hl);
            curl_easy_cleanup(xf->x.h);
            free(xf->key);
        }
        free(xf->ct);
        free(xf);
    }
}

cr_upstream_xfer *cr_upstream_xfer_start(cr_upstream_pool *up, apr_pool_t *p,
                                         const cr_upstream_req *req, cr_upstream_resp *resp)
{
    cr_upstream_xfer *xf = p ? apr_pcalloc(p, sizeof(*xf)) : calloc(1, sizeof(*xf));
    CURL *h;
    struct curl_slist *nl;
    const char *const *hp;

    memset(resp, 0, sizeof(*resp));
    resp->retry_after = -1;
    if (!xf) {
        resp->rc = CR_UP_INTERNAL;
        resp->error = "out of memory";
        return NULL;
    }
    xf->up = up;
    xf->x.p = p;
    xf->x.req = req;
    cr_buf_init(&xf->x.body, p, 16384);

    xf->key = handle_key(req);
    h = xf->key ? handle_get(up, xf->key, req) : NULL;
    if (!h) {
        free(xf->key);
        cr_upstream_xfer_free(xf);
        resp->rc = CR_UP_INTERNAL;
        resp->error = "curl_easy_init failed";
        return NULL;
    }
    xf->x.h = h;
    for (hp = req->headers; hp && *hp; hp++) {
        nl = curl_slist_append(xf->hl, *hp);
        if (!nl) {
            goto setopt_failed;
        }
        xf->hl = nl;
    }
    /* No "Expect: 100-continue" round trip on larger POSTs. */
    nl = curl_slist_append(xf->hl, "Expect:");
    if (!nl) {
        goto setopt_failed;
    }
    xf->hl = nl;

    SETOPT(h, CURLOPT_URL, req->url);
    SETOPT(h, CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms > 0 ? req->connect_timeout_ms : 3000L);
    SETOPT(h, CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 0L);
    SETOPT(h, CURLOPT_HTTPHEADER, xf->hl);
    SETOPT(h, CURLOPT_ERRORBUFFER, xf->errbuf);
    SETOPT(h, CURLOPT_WRITEDATA, &xf->x);
    /* Every option below is set on each request, to this request's value or
     * back to libcurl's default, so nothing of a previous use carries over. */
    /* A stream sits mostly idle for minutes: libcurl's smallest receive
     * buffer (an event is a few hundred bytes; larger ones arrive in pieces)
     * and, for TLS, a small send buffer (64 KB by default, held for the
     * transfer's life) keep ten thousand of them cheap. */
    SETOPT(h, CURLOPT_BUFFERSIZE, req->on_data ? 1024L : (long)CURL_MAX_WRITE_SIZE);
    SETOPT(h, CURLOPT_UPLOAD_BUFFERSIZE, req->on_data ? 16384L : 65536L);
    /* Collected bodies may come compressed; streams must not be held back
     * by a decompressor waiting for a block. */
    SETOPT(h, CURLOPT_ACCEPT_ENCODING, req->on_data ? NULL : "");
    SETOPT(h, CURLOPT_MAXFILESIZE_LARGE,
           (curl_off_t)(!req->on_data && req->max_response ? req->max_response : 0));
    SETOPT(h, CURLOPT_HEADERDATA, &xf->x);
    SETOPT(h, CURLOPT_XFERINFODATA, &xf->x);
    SETOPT(h, CURLOPT_NOPROGRESS, req->on_tick ? 0L : 1L);
    if (!strcmp(req->method, "POST")) {
        SETOPT(h, CURLOPT_POST, 1L);
        SETOPT(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        SETOPT(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
    }
    else {
        SETOPT(h, CURLOPT_HTTPGET, 1L);
    }
    /* libcurl re-sends a request once when a reused connection turns out
     * dead before any answer; a fresh connection is never "reused", so a
     * non-idempotent request goes out at most once. */
    SETOPT(h, CURLOPT_FRESH_CONNECT, req->fresh_connection ? 1L : 0L);

    return xf;

setopt_failed:
    curl_slist_free_all(xf->hl);
    curl_easy_cleanup(h);
    xf->hl = NULL;
    xf->x.h = NULL;
    free(xf->key);
    cr_upstream_xfer_free(xf);
    resp->rc = CR_UP_INTERNAL;
    resp->error = "libcurl refused an option";
    return NULL;
}

void *cr_upstream_xfer_easy(cr_upstream_xfer *xf)
{
    return xf->x.h;
}

void cr_upstream_xfer_finish(cr_upstream_xfer *xf, int result, cr_upstream_resp *resp)
{
    CURL *h = xf->x.h;
    CURLcode cc = (CURLcode)result;
    apr_pool_t *p = xf->x.p;
    long num_connects = 0, request_size = 0, connect_code = 0;
    curl_off_t retry_after = -1, pretransfer = 0;
    char *ct = NULL;

    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &num_connects);
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &request_size);
    curl_easy_getinfo(h, CURLINFO_HTTP_CONNECTCODE, &connect_code);
    curl_easy_getinfo(h, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
    curl_easy_getinfo(h, CURLINFO_TOTAL_TIME, &resp->total_time);
    resp->client = "libcurl";
    curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
#if LIBCURL_VERSION_NUM >= 0x074200
    curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &retry_after);
#endif
    if (ct) {
        resp->content_type = p ? apr_pstrdup(p, ct) : (xf->ct = strdup(ct));
    }
    resp->retry_after = (long)retry_after;
    resp->reused = num_connects == 0 && request_size > 0;
    resp->connects = num_connects;
    if (num_connects > 0) {
        apr_atomic_add32(&xf->up->connects, (apr_uint32_t)num_connects);
    }

    switch (cc) {
    case CURLE_OK:
        resp->rc = CR_UP_OK;
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
#if LIBCURL_VERSION_NUM >= 0x074900
    case CURLE_PROXY:
#endif
        resp->rc = CR_UP_CONNECT;
        break;
    case CURLE_OPERATION_TIMEDOUT:
        resp->rc = CR_UP_TIMEOUT;
        break;
    case CURLE_FILESIZE_EXCEEDED:
        resp->rc = CR_UP_TOO_LARGE;
        break;
    case CURLE_WRITE_ERROR:
        resp->rc = xf->x.too_large ? CR_UP_TOO_LARGE : xf->x.aborted ? CR_UP_ABORTED : CR_UP_BROKEN;
        break;
    case CURLE_ABORTED_BY_CALLBACK:
        resp->rc = CR_UP_ABORTED;
        break;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
        resp->rc = CR_UP_INTERNAL;
        break;
    default:
        resp->rc = CR_UP_BROKEN;
        break;
    }
    if (cc != CURLE_OK && connect_code && (connect_code < 200 || connect_code > 299)) {
        /* A proxy refused the tunnel (libcurl says "receive error"): the
         * upstream was never reached. */
        resp->rc = CR_UP_CONNECT;
    }
    /* REQUEST_SIZE counts a proxy's CONNECT too: the request itself left
     * only when the transfer got past the tunnel and the TLS handshake
     * (PRETRANSFER is 0 until then; on a reused connection there is
     * neither, and the size alone tells). */
    resp->request_sent = request_size > 0 && resp->rc != CR_UP_CONNECT
                         && (cc == CURLE_OK || num_connects == 0 || pretransfer > 0);
    if (cc != CURLE_OK) {
        resp->error = !xf->errbuf[0] ? curl_easy_strerror(cc)
                      : p ? apr_pstrdup(p, xf->errbuf) : xf->errbuf;
    }
    if (!xf->x.req->on_data) {
        resp->body = cr_buf_str(&xf->x.body);
        resp->len = xf->x.body.len;
    }
    clear_request_options(h);
    curl_slist_free_all(xf->hl);
    xf->hl = NULL;
    if (resp->rc == CR_UP_INTERNAL || resp->rc == CR_UP_ABORTED) {
        /* A transfer stopped half-way leaves a connection nobody wants. */
        curl_easy_cleanup(h);
    }
    else {
        handle_put(xf->up, h, xf->key);
    }
    xf->x.h = NULL;
    free(xf->key);
    xf->key = NULL;
}

void cr_upstream_perform(cr_upstream_pool *up, apr_pool_t *p,
                         const cr_upstream_req *req, cr_upstream_resp *resp)
{
    cr_upstream_xfer *xf;

    /* Collected exchanges without a proxy, http:// or https://: our own
     * HTTP/1.1 client (libcurl's per-transfer machinery costs more than the
     * whole exchange; docs/BENCHMARKS.md run 6).  Everything else: libcurl. */
    if (cr_h1c_applies(req)) {
        cr_h1c_perform(up->h1, p, req, resp);
        resp->client = "own";
        if (resp->connects > 0) {
            apr_atomic_add32(&up->connects, (apr_uint32_t)resp->connects);
        }
        return;
    }
    xf = cr_upstream_xfer_start(up, p, req, resp);
    if (xf) {
        cr_upstream_xfer_finish(xf, (int)curl_easy_perform(xf->x.h), resp);
    }
}

const char *cr_upstream_ca_check(apr_pool_t *p, const char *path)
{
    apr_file_t *f;
    apr_finfo_t fi;
    apr_status_t rv;
    char buf[8192];
    apr_size_t n = sizeof(buf) - 1;
    char errs[120];

    rv = apr_stat(&fi, path, APR_FINFO_TYPE, p);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(p, "cannot read %s: %s", path, apr_strerror(rv, errs, sizeof(errs)));
    }
    if (fi.filetype != APR_REG) {
        return apr_psprintf(p, "%s is not a regular file", path);
    }
    rv = apr_file_open(&f, path, APR_FOPEN_READ, APR_FPROT_OS_DEFAULT, p);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(p, "cannot read %s: %s", path, apr_strerror(rv, errs, sizeof(errs)));
    }
    /* The first certificate of a bundle starts within its first lines
     * (comments and a text dump may come before it). */
    rv = apr_file_read_full(f, buf, n, &n);
    apr_file_close(f);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_EOF(rv)) {
        return apr_psprintf(p, "cannot read %s: %s", path, apr_strerror(rv, errs, sizeof(errs)));
    }
    buf[n] = '\0';
    if (!strstr(buf, "-----BEGIN CERTIFICATE-----")) {
        return apr_psprintf(p, "%s holds no PEM certificate", path);
    }
    return NULL;
}

const char *cr_upstream_proxy_check(apr_pool_t *p, const char *url)
{
    apr_uri_t u;
    if (apr_uri_parse(p, url, &u) != APR_SUCCESS || !u.scheme || !u.hostname || !*u.hostname) {
        return apr_psprintf(p, "%s is not an absolute URL", url);
    }
    if (apr_cstr_casecmp(u.scheme, "http") && apr_cstr_casecmp(u.scheme, "https")) {
        return apr_psprintf(p, "%s: only http:// and https:// proxies are supported", url);
    }
    if ((u.path && *u.path && strcmp(u.path, "/")) || u.query || u.fragment) {
        return apr_psprintf(p, "%s: a proxy URL has no path, query or fragment", url);
    }
    return NULL;
}
