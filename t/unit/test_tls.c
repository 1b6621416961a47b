/* SPDX-License-Identifier: Apache-2.0 */
/* cr_tls against a real OpenSSL server on the other end of a socket pair,
 * with a CA and a server certificate (IP:127.0.0.1, DNS:localhost) made by
 * the openssl command for this run. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_time.h>

#include "cr_tls.h"
#include "unit_run.h"

static char dir[] = "/tmp/cr-tls-unit-XXXXXX";
static char ca_file[256], cert_file[256], key_file[256];

typedef enum { SRV_ECHO, SRV_SILENT, SRV_IDLE_THEN_CLOSE } srv_mode;

typedef struct {
    int fd;
    srv_mode mode;
    int release_fd;       /* SRV_SILENT / IDLE: a byte here ends the server */
    int resumed;          /* the server saw a resumed session */
} srv_arg;

static SSL_CTX *srv_ctx;

static void *server(void *data)
{
    srv_arg *a = data;
    SSL *ssl;
    char buf[512];
    int n, got = 0;

    if (a->mode == SRV_SILENT) {
        char c;
        (void)!read(a->release_fd, &c, 1);
        close(a->fd);
        return NULL;
    }
    ssl = SSL_new(srv_ctx);
    SSL_set_fd(ssl, a->fd);
    if (SSL_accept(ssl) != 1) {
        SSL_free(ssl);
        close(a->fd);
        return NULL;
    }
    a->resumed = SSL_session_reused(ssl);
    if (a->mode == SRV_ECHO) {
        /* Read until the blank line, answer, close cleanly. */
        while (got < (int)sizeof(buf) - 1 && (n = SSL_read(ssl, buf + got, (int)sizeof(buf) - 1 - got)) > 0) {
            got += n;
            buf[got] = '\0';
            if (strstr(buf, "\r\n\r\n")) {
                break;
            }
        }
        SSL_write(ssl, "pong:", 5);
        SSL_write(ssl, buf, got);
    }
    else {
        char c;
        (void)!read(a->release_fd, &c, 1);
    }
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(a->fd);
    return NULL;
}

typedef struct {
    pthread_t th;
    srv_arg arg;
    int client_fd;
    int release_w;
} pair;

static void pair_start(pair *p, srv_mode mode)
{
    int sv[2], rel[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(pipe(rel), 0);
    p->arg.fd = sv[1];
    p->arg.mode = mode;
    p->arg.release_fd = rel[0];
    p->arg.resumed = -1;
    p->release_w = rel[1];
    p->client_fd = sv[0];
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    ck_assert_int_eq(pthread_create(&p->th, NULL, server, &p->arg), 0);
}

static void pair_end(pair *p)
{
    (void)!write(p->release_w, "x", 1);
    pthread_join(p->th, NULL);
    close(p->client_fd);
    close(p->release_w);
    close(p->arg.release_fd);
}

static apr_time_t in_ms(int ms)
{
    return cr_tls_now() + apr_time_from_msec(ms);
}

/* One echo exchange; returns the server's resumed flag. */
static int echo_once(cr_tls_ctx *ctx, const char *host, const char *key, int *client_resumed)
{
    pair p;
    cr_tls *t;
    char err[256] = "", buf[256];
    struct iovec iov[2] = { { (void *)"GET / HTTP/1.1\r\n", 16 }, { (void *)"Host: x\r\n\r\n", 11 } };
    apr_size_t got = 0, n;
    cr_tls_rc rc;

    pair_start(&p, SRV_ECHO);
    rc = cr_tls_connect(ctx, p.client_fd, host, key, in_ms(5000), &t, err, sizeof(err));
    ck_assert_msg(rc == CR_TLS_OK, "handshake: %s", err);
    if (client_resumed) {
        *client_resumed = cr_tls_resumed(t);
    }
    ck_assert_int_eq(cr_tls_writev(t, iov, 2, in_ms(5000), err, sizeof(err)), CR_TLS_OK);
    while ((n = cr_tls_read(t, buf + got, sizeof(buf) - 1 - got, in_ms(5000), &rc, err, sizeof(err))) > 0) {
        got += n;
    }
    buf[got] = '\0';
    ck_assert_msg(rc == CR_TLS_CLOSED, "read ended with %d: %s", rc, err);
    ck_assert_str_eq(buf, "pong:GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_tls_free(t, 1);
    pair_end(&p);
    return p.arg.resumed;
}

static apr_pool_t *root;   /* main's */
static apr_pool_t *pool;   /* one test's: its contexts are freed with it (LeakSanitizer) */

static void pool_setup(void)
{
    apr_pool_create(&pool, root);
}

static void pool_teardown(void)
{
    apr_pool_destroy(pool);
    pool = NULL;
}

START_TEST(test_ip_and_name)
{
    const char *err = NULL;
    cr_tls_ctx *ctx = cr_tls_ctx_create(pool, ca_file, &err);
    ck_assert_msg(ctx != NULL, "%s", err);
    echo_once(ctx, "127.0.0.1", "127.0.0.1:443", NULL);
    echo_once(ctx, "localhost", "localhost:443", NULL);
}
END_TEST

START_TEST(test_resumption)
{
    const char *err = NULL;
    cr_tls_ctx *ctx = cr_tls_ctx_create(pool, ca_file, &err);
    int c1 = -1, c2 = -1, c3 = -1;
    ck_assert_msg(ctx != NULL, "%s", err);
    ck_assert_int_eq(echo_once(ctx, "127.0.0.1", "a:1", &c1), 0);
    ck_assert_int_eq(c1, 0);
    /* The ticket of the first connection resumes the second ... */
    ck_assert_int_eq(echo_once(ctx, "127.0.0.1", "a:1", &c2), 1);
    ck_assert_int_eq(c2, 1);
    /* ... but never a connection to another upstream. */
    ck_assert_int_eq(echo_once(ctx, "127.0.0.1", "b:1", &c3), 0);
    ck_assert_int_eq(c3, 0);
}
END_TEST

static void expect_refused(const char *ca, const char *host, const char *needle)
{
    const char *e = NULL;
    cr_tls_ctx *ctx = cr_tls_ctx_create(pool, ca, &e);
    pair p;
    cr_tls *t = (cr_tls *)1;
    char err[256] = "";

    ck_assert_msg(ctx != NULL, "%s", e);
    pair_start(&p, SRV_ECHO);
    ck_assert_int_eq(cr_tls_connect(ctx, p.client_fd, host, "k", in_ms(5000), &t, err, sizeof(err)),
                     CR_TLS_ERROR);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
    shutdown(p.client_fd, SHUT_RDWR);
    pair_end(&p);
}

START_TEST(test_wrong_host)
{
    expect_refused(ca_file, "wrong.example", "certificate");
    expect_refused(ca_file, "127.0.0.2", "certificate");
}
END_TEST

START_TEST(test_untrusted)
{
    /* The system store does not know this run's CA. */
    expect_refused(NULL, "127.0.0.1", "certificate");
}
END_TEST

START_TEST(test_bad_ca_file)
{
    const char *err = NULL;
    cr_tls_reg *reg;
    ck_assert_ptr_null(cr_tls_ctx_create(pool, "/nonexistent/ca.pem", &err));
    ck_assert_ptr_nonnull(strstr(err, "cannot load CA certificates"));
    /* The registry refuses it each time, and keeps a good one. */
    ck_assert_int_eq(cr_tls_reg_create(pool, &reg), APR_SUCCESS);
    ck_assert_ptr_null(cr_tls_reg_get(reg, "/nonexistent/ca.pem", &err));
    ck_assert_ptr_null(cr_tls_reg_get(reg, "/nonexistent/ca.pem", &err));
    ck_assert_ptr_nonnull(cr_tls_reg_get(reg, ca_file, &err));
    ck_assert_ptr_eq(cr_tls_reg_get(reg, ca_file, &err), cr_tls_reg_get(reg, ca_file, &err));
}
END_TEST

START_TEST(test_handshake_timeout)
{
    const char *e = NULL;
    cr_tls_ctx *ctx = cr_tls_ctx_create(pool, ca_file, &e);
    pair p;
    cr_tls *t;
    char err[256] = "";
    apr_time_t start = apr_time_now();

    pair_start(&p, SRV_SILENT);
    ck_assert_int_eq(cr_tls_connect(ctx, p.client_fd, "127.0.0.1", "k", in_ms(200), &t, err, sizeof(err)),
                     CR_TLS_TIMEOUT);
    ck_assert_msg(apr_time_now() - start < apr_time_from_sec(3), "the deadline bounded the wait");
    ck_assert_ptr_nonnull(strstr(err, "timed out"));
    pair_end(&p);
}
END_TEST

static int readable(int fd, int ms)
{
    struct pollfd pfd = { fd, POLLIN, 0 };
    return poll(&pfd, 1, ms) == 1;
}

START_TEST(test_idle_connection)
{
    const char *e = NULL;
    cr_tls_ctx *ctx = cr_tls_ctx_create(pool, ca_file, &e);
    pair p;
    cr_tls *t;
    char err[256] = "";

    pair_start(&p, SRV_IDLE_THEN_CLOSE);
    ck_assert_int_eq(cr_tls_connect(ctx, p.client_fd, "127.0.0.1", "idle", in_ms(5000), &t, err, sizeof(err)),
                     CR_TLS_OK);
    /* TLS 1.3 tickets arrive after the handshake: readable, yet alive. */
    if (readable(p.client_fd, 500)) {
        ck_assert_int_eq(cr_tls_idle_ok(t), 1);
    }
    ck_assert_int_eq(readable(p.client_fd, 50), 0);
    /* The server closes the idle connection: no longer usable. */
    (void)!write(p.release_w, "x", 1);
    ck_assert(readable(p.client_fd, 5000));
    ck_assert_int_eq(cr_tls_idle_ok(t), 0);
    cr_tls_free(t, 1);
    pair_end(&p);
}
END_TEST

/* The event-loop way: every call CR_TLS_NOWAIT, the caller polls for what
 * it was told the socket must become. */
static void wait_for(int fd, cr_tls_rc want)
{
    struct pollfd pfd = { fd, want == CR_TLS_WANT_WRITE ? POLLOUT : POLLIN, 0 };
    ck_assert_int_eq(poll(&pfd, 1, 5000), 1);
}

START_TEST(test_nowait)
{
    const char *e = NULL;
    cr_tls_ctx *ctx = cr_tls_ctx_create(pool, ca_file, &e);
    pair p;
    cr_tls *t;
    char err[256] = "", buf[256];
    const char *req = "GET /nb HTTP/1.1\r\n\r\n";
    struct iovec iov = { (void *)req, strlen(req) };
    apr_size_t got = 0, n;
    cr_tls_rc rc;
    int waits = 0;

    pair_start(&p, SRV_ECHO);
    ck_assert_int_eq(cr_tls_new(ctx, p.client_fd, "localhost", "nb", &t, err, sizeof(err)), CR_TLS_OK);
    while ((rc = cr_tls_handshake(t, CR_TLS_NOWAIT, err, sizeof(err))) == CR_TLS_WANT_READ
           || rc == CR_TLS_WANT_WRITE) {
        wait_for(p.client_fd, rc);
        waits++;
    }
    ck_assert_msg(rc == CR_TLS_OK, "handshake: %s", err);
    (void)waits;    /* usually > 0; 0 when the server was quicker than the first read */
    while ((rc = cr_tls_writev(t, &iov, 1, CR_TLS_NOWAIT, err, sizeof(err))) == CR_TLS_WANT_WRITE
           || rc == CR_TLS_WANT_READ) {
        wait_for(p.client_fd, rc);
    }
    ck_assert_int_eq(rc, CR_TLS_OK);
    for (;;) {
        n = cr_tls_read(t, buf + got, sizeof(buf) - 1 - got, CR_TLS_NOWAIT, &rc, err, sizeof(err));
        got += n;
        if (n == 0 && (rc == CR_TLS_WANT_READ || rc == CR_TLS_WANT_WRITE)) {
            wait_for(p.client_fd, rc);
            continue;
        }
        if (n == 0) {
            break;
        }
    }
    buf[got] = '\0';
    ck_assert_int_eq(rc, CR_TLS_CLOSED);
    ck_assert_str_eq(buf, "pong:GET /nb HTTP/1.1\r\n\r\n");
    cr_tls_free(t, 1);
    pair_end(&p);
}
END_TEST

static int sh(const char *cmd)
{
    char full[2048];
    snprintf(full, sizeof(full), "cd %s && %s >/dev/null 2>&1", dir, cmd);
    return system(full);
}

static void need(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "test_tls: cannot %s\n", what);
        exit(EXIT_FAILURE);
    }
}

static void make_pki(void)
{
    need(mkdtemp(dir) != NULL, "make a temporary directory");
    need(sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
            "-subj /CN=cr-unit-ca -keyout ca.key -out ca.pem "
            "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign") == 0,
         "make the CA with openssl");
    need(sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
            "-subj /CN=cr-unit-server -keyout server.key -out server.csr") == 0, "make a key with openssl");
    need(sh("printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext && "
            "openssl x509 -req -days 2 -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
            "-out server.pem -extfile server.ext") == 0, "sign the server certificate");
    snprintf(ca_file, sizeof(ca_file), "%s/ca.pem", dir);
    snprintf(cert_file, sizeof(cert_file), "%s/server.pem", dir);
    snprintf(key_file, sizeof(key_file), "%s/server.key", dir);
    srv_ctx = SSL_CTX_new(TLS_server_method());
    need(srv_ctx && SSL_CTX_use_certificate_file(srv_ctx, cert_file, SSL_FILETYPE_PEM) == 1
         && SSL_CTX_use_PrivateKey_file(srv_ctx, key_file, SSL_FILETYPE_PEM) == 1, "load the server certificate");
}

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("tls");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, test_ip_and_name);
    tcase_add_test(tc, test_resumption);
    tcase_add_test(tc, test_wrong_host);
    tcase_add_test(tc, test_untrusted);
    tcase_add_test(tc, test_bad_ca_file);
    tcase_add_test(tc, test_handshake_timeout);
    tcase_add_test(tc, test_idle_connection);
    tcase_add_test(tc, test_nowait);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    int rc;
    apr_initialize();
    apr_pool_create(&root, NULL);
    /* As in httpd's children: a write to a closed socket is an error, not
     * a signal. */
    signal(SIGPIPE, SIG_IGN);
    make_pki();
    rc = cr_unit_run(tls_suite());
    sh("rm -f ca.* server.*");
    rmdir(dir);
    return rc;
}
