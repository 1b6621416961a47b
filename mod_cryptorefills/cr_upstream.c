#include <string.h>
#include <apr_strings.h>
#include <apr_atomic.h>
#include <curl/curl.h>

#include "cr_upstream.h"

struct cr_upstream_pool {
    apr_thread_mutex_t *mutex;   /* guards idle[] and nidle only, never held across I/O */
    CURL **idle;
    int nidle;
    int max_idle;
    const char *user_agent;
    volatile apr_uint32_t connects;
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
        curl_easy_cleanup(up->idle[--up->nidle]);
    }
    return APR_SUCCESS;
}

apr_status_t cr_upstream_pool_create(apr_pool_t *p, int max_idle, const char *user_agent,
                                     cr_upstream_pool **out)
{
    cr_upstream_pool *up = apr_pcalloc(p, sizeof(*up));
    apr_status_t rv;

    up->max_idle = max_idle > 0 ? max_idle : 1;
    up->idle = apr_pcalloc(p, sizeof(CURL *) * (apr_size_t)up->max_idle);
    up->user_agent = apr_pstrdup(p, user_agent);
    rv = apr_thread_mutex_create(&up->mutex, APR_THREAD_MUTEX_DEFAULT, p);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    apr_pool_cleanup_register(p, up, pool_cleanup, apr_pool_cleanup_null);
    *out = up;
    return APR_SUCCESS;
}

apr_uint64_t cr_upstream_connects(cr_upstream_pool *up)
{
    return apr_atomic_read32(&up->connects);
}

/* Take the most recently returned handle: its connection is the warmest. */
static CURL *handle_get(cr_upstream_pool *up)
{
    CURL *h = NULL;
    apr_thread_mutex_lock(up->mutex);
    if (up->nidle > 0) {
        h = up->idle[--up->nidle];
    }
    apr_thread_mutex_unlock(up->mutex);
    if (h) {
        /* Drop every option of the previous use (header lists, callbacks,
         * batons that pointed into a freed pool); connections stay. */
        curl_easy_reset(h);
        return h;
    }
    return curl_easy_init();
}

static void handle_put(cr_upstream_pool *up, CURL *h)
{
    apr_thread_mutex_lock(up->mutex);
    if (up->nidle < up->max_idle) {
        up->idle[up->nidle++] = h;
        h = NULL;
    }
    apr_thread_mutex_unlock(up->mutex);
    if (h) {
        curl_easy_cleanup(h);
    }
}

typedef struct xfer_t {
    apr_pool_t *p;
    CURL *h;
    const cr_upstream_req *req;
    char *buf;
    apr_size_t len, cap;
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
    if (x->len + n > x->req->max_response) {
        x->too_large = 1;
        return 0;
    }
    if (x->len + n + 1 > x->cap) {
        /* Doubling keeps the total copy work linear in the body size. */
        apr_size_t cap = x->cap ? x->cap * 2 : 16384;
        char *nb;
        while (cap < x->len + n + 1) {
            cap *= 2;
        }
        nb = apr_palloc(x->p, cap);
        if (x->len) {
            memcpy(nb, x->buf, x->len);
        }
        x->buf = nb;
        x->cap = cap;
    }
    memcpy(x->buf + x->len, ptr, n);
    x->len += n;
    return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    xfer_t *x = userdata;
    apr_size_t n = size * nitems;
    if ((n == 2 && buf[0] == '\r' && buf[1] == '\n') || (n == 1 && buf[0] == '\n')) {
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

#define SETOPT(h, o, v) do { if (curl_easy_setopt((h), (o), (v)) != CURLE_OK) goto setopt_failed; } while (0)

struct cr_upstream_xfer {
    xfer_t x;
    cr_upstream_pool *up;
    struct curl_slist *hl;
    char errbuf[CURL_ERROR_SIZE];
};

cr_upstream_xfer *cr_upstream_xfer_start(cr_upstream_pool *up, apr_pool_t *p,
                                         const cr_upstream_req *req, cr_upstream_resp *resp)
{
    cr_upstream_xfer *xf = apr_pcalloc(p, sizeof(*xf));
    CURL *h;
    struct curl_slist *nl;
    const char *const *hp;

    memset(resp, 0, sizeof(*resp));
    resp->retry_after = -1;
    xf->up = up;
    xf->x.p = p;
    xf->x.req = req;

    h = handle_get(up);
    if (!h) {
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
    SETOPT(h, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(h, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    SETOPT(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    SETOPT(h, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(h, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(h, CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms > 0 ? req->connect_timeout_ms : 3000L);
    SETOPT(h, CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 0L);
    SETOPT(h, CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(h, CURLOPT_TCP_NODELAY, 1L);
    SETOPT(h, CURLOPT_HTTPHEADER, xf->hl);
    SETOPT(h, CURLOPT_USERAGENT, up->user_agent);
    SETOPT(h, CURLOPT_ERRORBUFFER, xf->errbuf);
    SETOPT(h, CURLOPT_WRITEFUNCTION, on_write);
    SETOPT(h, CURLOPT_WRITEDATA, &xf->x);
    if (req->on_data) {
        /* A stream sits mostly idle for minutes: a small receive buffer
         * (events are a few KB) keeps a thousand of them cheap. */
        SETOPT(h, CURLOPT_BUFFERSIZE, 4096L);
    }
    if (!req->on_data) {
        /* Collected bodies may come compressed; streams must not be held
         * back by a decompressor waiting for a block. */
        SETOPT(h, CURLOPT_ACCEPT_ENCODING, "");
        if (req->max_response) {
            SETOPT(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_response);
        }
    }
    if (req->on_headers) {
        SETOPT(h, CURLOPT_HEADERFUNCTION, on_header);
        SETOPT(h, CURLOPT_HEADERDATA, &xf->x);
    }
    if (req->on_tick) {
        SETOPT(h, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
        SETOPT(h, CURLOPT_XFERINFODATA, &xf->x);
        SETOPT(h, CURLOPT_NOPROGRESS, 0L);
    }
    if (!strcmp(req->method, "POST")) {
        SETOPT(h, CURLOPT_POST, 1L);
        SETOPT(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        SETOPT(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
    }
    if (req->fresh_connection) {
        /* libcurl re-sends a request once when a reused connection turns
         * out dead before any answer; a fresh connection is never "reused",
         * so a non-idempotent request goes out at most once. */
        SETOPT(h, CURLOPT_FRESH_CONNECT, 1L);
    }
    return xf;

setopt_failed:
    curl_slist_free_all(xf->hl);
    curl_easy_cleanup(h);
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
    long num_connects = 0, request_size = 0;
    curl_off_t retry_after = -1;
    char *ct = NULL;

    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &num_connects);
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &request_size);
    curl_easy_getinfo(h, CURLINFO_TOTAL_TIME, &resp->total_time);
    curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
#if LIBCURL_VERSION_NUM >= 0x074200
    curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &retry_after);
#endif
    if (ct) {
        resp->content_type = apr_pstrdup(p, ct);
    }
    resp->retry_after = (long)retry_after;
    resp->request_sent = request_size > 0;
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
    if (cc != CURLE_OK) {
        resp->error = apr_pstrdup(p, xf->errbuf[0] ? xf->errbuf : curl_easy_strerror(cc));
    }
    if (!xf->x.req->on_data) {
        if (!xf->x.buf) {
            xf->x.buf = apr_palloc(p, 1);
        }
        xf->x.buf[xf->x.len] = '\0';
        resp->body = xf->x.buf;
        resp->len = xf->x.len;
    }
    /* The handle must not keep pointers into this request's memory. */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(xf->hl);
    xf->hl = NULL;
    if (resp->rc == CR_UP_INTERNAL || resp->rc == CR_UP_ABORTED) {
        /* A transfer stopped half-way leaves a connection nobody wants. */
        curl_easy_cleanup(h);
    }
    else {
        handle_put(xf->up, h);
    }
    xf->x.h = NULL;
}

void cr_upstream_perform(cr_upstream_pool *up, apr_pool_t *p,
                         const cr_upstream_req *req, cr_upstream_resp *resp)
{
    cr_upstream_xfer *xf = cr_upstream_xfer_start(up, p, req, resp);

    if (xf) {
        cr_upstream_xfer_finish(xf, (int)curl_easy_perform(xf->x.h), resp);
    }
}
