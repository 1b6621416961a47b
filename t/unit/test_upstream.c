/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the upstream client's trust and proxy settings: environment
 * proxies ignored, an explicit proxy used, idle handles keyed by setting,
 * and the configuration checks.  Two tiny HTTP/1.1 servers on loopback (an
 * "origin" and a "proxy" that answers absolute-form requests itself) count
 * the connections and requests they see. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <check.h>
#include "unit_run.h"
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_network_io.h>
#include <apr_poll.h>
#include <apr_thread_proc.h>
#include <apr_file_io.h>

#include "cr_upstream.h"

static apr_pool_t *pool;

typedef struct conn_t {
    apr_socket_t *s;
    char buf[8192];
    apr_size_t len;
} conn_t;

typedef struct server_t {
    apr_pool_t *p;                 /* used by the server thread only */
    apr_socket_t *listener;
    apr_port_t port;
    apr_thread_t *thread;
    volatile int stop;
    apr_thread_mutex_t *mutex;
    int connections;
    int requests;
    char last_line[512];
} server_t;

static void serve_request(server_t *sv, conn_t *c, apr_size_t end)
{
    static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: 2\r\n\r\nok";
    apr_size_t n = sizeof(answer) - 1;
    char *eol = memchr(c->buf, '\r', end);
    apr_size_t ll = eol ? (apr_size_t)(eol - c->buf) : 0;

    apr_thread_mutex_lock(sv->mutex);
    sv->requests++;
    if (ll >= sizeof(sv->last_line)) {
        ll = sizeof(sv->last_line) - 1;
    }
    memcpy(sv->last_line, c->buf, ll);
    sv->last_line[ll] = '\0';
    apr_thread_mutex_unlock(sv->mutex);
    apr_socket_send(c->s, answer, &n);
    memmove(c->buf, c->buf + end, c->len - end);
    c->len -= end;
}

static void *APR_THREAD_FUNC server_main(apr_thread_t *t, void *data)
{
    server_t *sv = data;
    apr_pollset_t *ps;
    apr_pollfd_t pfd = { 0 };

    apr_pollset_create(&ps, 64, sv->p, 0);
    pfd.p = sv->p;
    pfd.desc_type = APR_POLL_SOCKET;
    pfd.reqevents = APR_POLLIN;
    pfd.desc.s = sv->listener;
    pfd.client_data = NULL;
    apr_pollset_add(ps, &pfd);
    while (!sv->stop) {
        const apr_pollfd_t *out;
        apr_int32_t n, i;
        if (apr_pollset_poll(ps, apr_time_from_msec(20), &n, &out) != APR_SUCCESS) {
            continue;
        }
        for (i = 0; i < n; i++) {
            conn_t *c = out[i].client_data;
            if (!c) {
                apr_socket_t *s;
                if (apr_socket_accept(&s, sv->listener, sv->p) != APR_SUCCESS) {
                    continue;
                }
                c = apr_pcalloc(sv->p, sizeof(*c));
                c->s = s;
                apr_thread_mutex_lock(sv->mutex);
                sv->connections++;
                apr_thread_mutex_unlock(sv->mutex);
                pfd.desc.s = s;
                pfd.client_data = c;
                apr_pollset_add(ps, &pfd);
            }
            else {
                apr_size_t len = sizeof(c->buf) - c->len - 1;
                char *end;
                if (apr_socket_recv(c->s, c->buf + c->len, &len) != APR_SUCCESS || len == 0) {
                    apr_pollfd_t rm = out[i];
                    apr_pollset_remove(ps, &rm);
                    apr_socket_close(c->s);
                    continue;
                }
                c->len += len;
                c->buf[c->len] = '\0';
                while ((end = strstr(c->buf, "\r\n\r\n")) != NULL) {
                    serve_request(sv, c, (apr_size_t)(end + 4 - c->buf));
                    c->buf[c->len] = '\0';
                }
            }
        }
    }
    /* Return rather than apr_thread_exit(): pthread_exit's unwinding trips
     * a false stack-buffer-overflow report in ASan's thread teardown. */
    (void)t;
    return NULL;
}

static server_t *server_start(void)
{
    server_t *sv = apr_pcalloc(pool, sizeof(*sv));
    apr_sockaddr_t *sa;
    apr_pool_create(&sv->p, pool);
    ck_assert_int_eq(apr_sockaddr_info_get(&sa, "127.0.0.1", APR_INET, 0, 0, pool), APR_SUCCESS);
    ck_assert_int_eq(apr_socket_create(&sv->listener, APR_INET, SOCK_STREAM, APR_PROTO_TCP, pool), APR_SUCCESS);
    apr_socket_opt_set(sv->listener, APR_SO_REUSEADDR, 1);
    ck_assert_int_eq(apr_socket_bind(sv->listener, sa), APR_SUCCESS);
    ck_assert_int_eq(apr_socket_listen(sv->listener, 16), APR_SUCCESS);
    apr_socket_addr_get(&sa, APR_LOCAL, sv->listener);
    sv->port = sa->port;
    apr_thread_mutex_create(&sv->mutex, APR_THREAD_MUTEX_DEFAULT, pool);
    ck_assert_int_eq(apr_thread_create(&sv->thread, NULL, server_main, sv, pool), APR_SUCCESS);
    return sv;
}

static void server_stop(server_t *sv)
{
    apr_status_t rv;
    sv->stop = 1;
    apr_thread_join(&rv, sv->thread);
}

static server_t *origin, *proxy;
static cr_upstream_pool *up;

static void setup(void)
{
    apr_pool_create(&pool, NULL);
    origin = server_start();
    proxy = server_start();
    ck_assert_int_eq(cr_upstream_pool_create(pool, 4, "cr-unit/1", &up), APR_SUCCESS);
}

static void teardown(void)
{
    server_stop(origin);
    server_stop(proxy);
    apr_pool_destroy(pool);
}

static const char *proxy_url(void)
{
    return apr_psprintf(pool, "http://127.0.0.1:%u", (unsigned)proxy->port);
}

/* A request with the tests' limits. */
static void req_init(cr_upstream_req *req, const char *method, const char *url)
{
    memset(req, 0, sizeof(*req));
    req->method = method;
    req->url = url;
    req->connect_timeout_ms = 2000;
    req->timeout_ms = 5000;
    req->max_response = 1024;
}

static cr_upstream_resp get(const char *path, const char *via, const char *ca_file)
{
    cr_upstream_req req;
    cr_upstream_resp resp;
    req_init(&req, "GET", apr_psprintf(pool, "http://127.0.0.1:%u%s", (unsigned)origin->port, path));
    req.proxy = via;
    req.ca_file = ca_file;
    cr_upstream_perform(up, pool, &req, &resp);
    return resp;
}

static void set_env_proxies(const char *url)
{
    static const char *const vars[] = { "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                                        "all_proxy", "ALL_PROXY", NULL };
    const char *const *v;
    for (v = vars; *v; v++) {
        setenv(*v, url, 1);
    }
}

START_TEST(env_proxies_ignored)
{
    cr_upstream_resp r;
    set_env_proxies(proxy_url());
    r = get("/direct", NULL, NULL);
    ck_assert_int_eq(r.rc, CR_UP_OK);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "ok");
    r = get("/direct-empty", "", NULL);
    ck_assert_int_eq(r.rc, CR_UP_OK);
    ck_assert_int_eq(origin->requests, 2);
    ck_assert_int_eq(proxy->requests, 0);
    ck_assert_int_eq(proxy->connections, 0);
    ck_assert_str_eq(origin->last_line, "GET /direct-empty HTTP/1.1");
}
END_TEST

START_TEST(explicit_proxy_used_despite_no_proxy)
{
    cr_upstream_resp r;
    /* NO_PROXY in the environment must not switch the configured proxy off
     * for loopback, nor must a different proxy in the environment win. */
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    set_env_proxies("http://127.0.0.1:9");
    r = get("/via", proxy_url(), NULL);
    ck_assert_int_eq(r.rc, CR_UP_OK);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(proxy->requests, 1);
    ck_assert_int_eq(origin->requests, 0);
    ck_assert_str_eq(proxy->last_line,
                     apr_psprintf(pool, "GET http://127.0.0.1:%u/via HTTP/1.1", (unsigned)origin->port));
}
END_TEST

START_TEST(idle_handles_keyed_by_setting)
{
    cr_upstream_resp r;
    r = get("/1", NULL, NULL);
    ck_assert_int_eq(r.rc, CR_UP_OK);
    ck_assert_int_eq(r.connects, 1);
    r = get("/2", proxy_url(), NULL);
    ck_assert_int_eq(r.rc, CR_UP_OK);
    ck_assert_int_eq(r.connects, 1);
    /* LIFO alone would hand out the proxied handle here; the key picks
     * the direct one, whose connection is still open. */
    r = get("/3", NULL, NULL);
    ck_assert_int_eq(r.rc, CR_UP_OK);
    ck_assert_int_eq(r.connects, 0);
    ck_assert(r.reused);
    r = get("/4", proxy_url(), NULL);
    ck_assert_int_eq(r.connects, 0);
    ck_assert_int_eq(origin->connections, 1);
    ck_assert_int_eq(proxy->connections, 1);
    ck_assert_int_eq(origin->requests, 2);
    ck_assert_int_eq(proxy->requests, 2);
    ck_assert_uint_eq(cr_upstream_connects(up), 2);
}
END_TEST

START_TEST(ca_setting_never_shares_a_connection)
{
    cr_upstream_resp r;
    const char *ca = apr_psprintf(pool, "%s/unit-ca-%d.pem", P_tmpdir, (int)getpid());
    r = get("/a", NULL, ca);
    ck_assert_int_eq(r.rc, CR_UP_OK);      /* plain http: the CA file is not read */
    r = get("/b", NULL, NULL);
    ck_assert_int_eq(r.rc, CR_UP_OK);
    ck_assert_int_eq(r.connects, 1);
    r = get("/c", NULL, ca);
    ck_assert_int_eq(r.connects, 0);
    ck_assert_int_eq(origin->connections, 2);
}
END_TEST

/* The plain-http exchanges go through the own client (cr_h1client): a
 * fresh_connection request gets a connection of its own that never joins
 * the idle list, while the others keep reusing theirs. */
START_TEST(fresh_connection_never_pooled)
{
    cr_upstream_req req;
    cr_upstream_resp r;
    r = get("/1", NULL, NULL);
    ck_assert_int_eq(r.rc, CR_UP_OK);
    ck_assert_int_eq(r.connects, 1);
    ck_assert(!r.reused);
    req_init(&req, "POST", apr_psprintf(pool, "http://127.0.0.1:%u/order", (unsigned)origin->port));
    req.body = "";
    req.fresh_connection = 1;
    cr_upstream_perform(up, pool, &req, &r);
    ck_assert_int_eq(r.rc, CR_UP_OK);
    ck_assert_str_eq(r.body, "ok");
    ck_assert_str_eq(r.content_type, "text/plain");
    ck_assert_int_eq(r.connects, 1);
    ck_assert(!r.reused);
    ck_assert(r.request_sent);
    ck_assert_str_eq(origin->last_line, "POST /order HTTP/1.1");
    r = get("/2", NULL, NULL);
    ck_assert_int_eq(r.connects, 0);
    ck_assert(r.reused);
    cr_upstream_perform(up, pool, &req, &r);
    ck_assert_int_eq(r.connects, 1);
    ck_assert_int_eq(origin->connections, 3);
    ck_assert_int_eq(origin->requests, 4);
    ck_assert_uint_eq(cr_upstream_connects(up), 3);
}
END_TEST

/* A host name (not an address literal) goes through the bounded resolver;
 * a name that does not resolve is a connect failure, nothing sent. */
START_TEST(host_name_resolved)
{
    cr_upstream_req req;
    cr_upstream_resp r;
    req_init(&req, "GET", apr_psprintf(pool, "http://localhost:%u/by-name", (unsigned)origin->port));
    cr_upstream_perform(up, pool, &req, &r);
    ck_assert_int_eq(r.rc, CR_UP_OK);
    ck_assert_str_eq(r.body, "ok");
    ck_assert_str_eq(origin->last_line, "GET /by-name HTTP/1.1");
    req.url = "http://no-such-host.invalid:9/";
    cr_upstream_perform(up, pool, &req, &r);
    /* CONNECT when the resolver says no in time, TIMEOUT when it is slower
     * than the connect timeout (a machine whose DNS server is unreachable). */
    ck_assert(r.rc == CR_UP_CONNECT || r.rc == CR_UP_TIMEOUT);
    ck_assert(!r.request_sent);
    ck_assert_ptr_nonnull(r.error);
}
END_TEST

START_TEST(https_with_missing_ca_is_a_connect_failure)
{
    cr_upstream_req req;
    cr_upstream_resp r;
    req_init(&req, "GET", apr_psprintf(pool, "https://127.0.0.1:%u/tls", (unsigned)origin->port));
    req.ca_file = "/nonexistent/ca.pem";
    cr_upstream_perform(up, pool, &req, &r);
    ck_assert_int_eq(r.rc, CR_UP_CONNECT);
    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_nonnull(r.error);
}
END_TEST

static const char *write_file(const char *name, const char *text)
{
    const char *path = apr_psprintf(pool, "%s/cr-unit-%d-%s", P_tmpdir, (int)getpid(), name);
    apr_file_t *f;
    apr_size_t n = strlen(text);
    ck_assert_int_eq(apr_file_open(&f, path, APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_TRUNCATE,
                                   APR_FPROT_OS_DEFAULT, pool), APR_SUCCESS);
    apr_file_write_full(f, text, n, NULL);
    apr_file_close(f);
    return path;
}

START_TEST(ca_check)
{
    const char *good = write_file("good.pem", "# test CA\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    const char *bad = write_file("bad.pem", "not a certificate\n");
    const char *msg;
    ck_assert_ptr_null(cr_upstream_ca_check(pool, good));
    msg = cr_upstream_ca_check(pool, bad);
    ck_assert_ptr_nonnull(msg);
    ck_assert_ptr_nonnull(strstr(msg, "no PEM certificate"));
    msg = cr_upstream_ca_check(pool, "/nonexistent/ca.pem");
    ck_assert_ptr_nonnull(msg);
    ck_assert_ptr_nonnull(strstr(msg, "cannot read /nonexistent/ca.pem"));
    msg = cr_upstream_ca_check(pool, P_tmpdir);
    ck_assert_ptr_nonnull(msg);
    ck_assert_ptr_nonnull(strstr(msg, "not a regular file"));
    apr_file_remove(good, pool);
    apr_file_remove(bad, pool);
}
END_TEST

START_TEST(proxy_check)
{
    ck_assert_ptr_null(cr_upstream_proxy_check(pool, "http://127.0.0.1:3128"));
    ck_assert_ptr_null(cr_upstream_proxy_check(pool, "https://proxy.example:443/"));
    ck_assert_ptr_null(cr_upstream_proxy_check(pool, "HTTP://user:pw@proxy.example:8080"));
    ck_assert_ptr_nonnull(strstr(cr_upstream_proxy_check(pool, "socks5://127.0.0.1:1080"), "only http"));
    ck_assert_ptr_nonnull(strstr(cr_upstream_proxy_check(pool, "proxy.example"), "not an absolute URL"));
    ck_assert_ptr_nonnull(strstr(cr_upstream_proxy_check(pool, "http://proxy.example/path"), "no path"));
    ck_assert_ptr_nonnull(strstr(cr_upstream_proxy_check(pool, "http://proxy.example:3128/?x=1"), "no path"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("upstream");
    TCase *tc = tcase_create("settings");

    apr_initialize();
    cr_upstream_global_init();
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, env_proxies_ignored);
    tcase_add_test(tc, explicit_proxy_used_despite_no_proxy);
    tcase_add_test(tc, idle_handles_keyed_by_setting);
    tcase_add_test(tc, ca_setting_never_shares_a_connection);
    tcase_add_test(tc, https_with_missing_ca_is_a_connect_failure);
    tcase_add_test(tc, fresh_connection_never_pooled);
    tcase_add_test(tc, host_name_resolved);
    tcase_add_test(tc, ca_check);
    tcase_add_test(tc, proxy_check);
    suite_add_tcase(s, tc);
    return cr_unit_run(s);
}
