/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of cr_h1: the request-head formatter and the incremental
 * response parser, every answer fed whole and in every split size down to
 * one byte at a time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <check.h>
#include "unit_run.h"

#include "cr_h1.h"

/* ------------------------------------------------------------ request head */

static char *head_of(const cr_h1_request *rq)
{
    size_t n = cr_h1_head_len(rq);
    char *out;
    ck_assert_uint_gt(n, 0);
    out = malloc(n + 1);
    ck_assert_uint_eq(cr_h1_head_write(rq, out), n);
    out[n] = '\0';
    return out;
}

START_TEST(head_get_with_port)
{
    const char *hdrs[] = { "X-Cr-Version: 2", "Accept: application/json", NULL };
    cr_h1_request rq = { "GET", "127.0.0.1", 8089, "/api/v5/products/price?a=1&b=2", hdrs,
                         "mod_cryptorefills/0.1.0", "*/*", "gzip", 0, 0 };
    char *h = head_of(&rq);
    ck_assert_str_eq(h, "GET /api/v5/products/price?a=1&b=2 HTTP/1.1\r\n"
                        "Host: 127.0.0.1:8089\r\n"
                        "User-Agent: mod_cryptorefills/0.1.0\r\n"
                        "Accept-Encoding: gzip\r\n"
                        "X-Cr-Version: 2\r\n"
                        "Accept: application/json\r\n"
                        "\r\n");
    free(h);
}
END_TEST

START_TEST(head_https_default_port)
{
    cr_h1_request rq = { "GET", "api.example", 443, "/v2/brands", NULL, NULL, NULL, NULL, 0, 0, 443 };
    char *h = head_of(&rq);
    ck_assert_str_eq(h, "GET /v2/brands HTTP/1.1\r\nHost: api.example\r\n\r\n");
    free(h);
    rq.port = 8443;
    h = head_of(&rq);
    ck_assert_str_eq(h, "GET /v2/brands HTTP/1.1\r\nHost: api.example:8443\r\n\r\n");
    free(h);
}
END_TEST

static void url_is(const char *url, int tls, const char *host, const char *name, unsigned port,
                   const char *target, int slash)
{
    cr_h1_url u;
    ck_assert_msg(cr_h1_url_split(url, &u) == 0, "%s refused", url);
    ck_assert_int_eq(u.tls, tls);
    ck_assert_msg(u.host_len == strlen(host) && !memcmp(u.host, host, u.host_len), "%s: host", url);
    ck_assert_msg(u.name_len == strlen(name) && !memcmp(u.name, name, u.name_len), "%s: name", url);
    ck_assert_uint_eq(u.port, port);
    ck_assert_msg(u.target_len == strlen(target) && !memcmp(u.target, target, u.target_len),
                  "%s: target '%.*s'", url, (int)u.target_len, u.target);
    ck_assert_int_eq(u.target_slash, slash);
}

START_TEST(url_split)
{
    static const char *const bad[] = {
        "ftp://x/", "http://", "http:///path", "http://user@host/", "http://[::1/", "http://[]/",
        "http://host:/", "http://host:0/", "http://host:65536/", "http://host:8x/", "http://:80/",
        "https//host/", NULL
    };
    int i;
    url_is("http://127.0.0.1:8089/api/v2?a=1", 0, "127.0.0.1", "127.0.0.1", 8089, "/api/v2?a=1", 0);
    url_is("HTTPS://api.cryptorefills.com/v5/orders", 1, "api.cryptorefills.com", "api.cryptorefills.com",
           443, "/v5/orders", 0);
    url_is("http://host", 0, "host", "host", 80, "", 0);
    url_is("https://[::1]:8443/p#frag", 1, "[::1]", "::1", 8443, "/p", 0);
    url_is("http://h?q=1", 0, "h", "h", 80, "?q=1", 1);
    url_is("http://h:65535#x", 0, "h", "h", 65535, "", 0);
    for (i = 0; bad[i]; i++) {
        cr_h1_url u;
        ck_assert_msg(cr_h1_url_split(bad[i], &u) == -1, "%s accepted", bad[i]);
    }
}
END_TEST

START_TEST(head_post_port80_overrides_ua)
{
    const char *hdrs[] = { "user-agent: Browser/1.0", NULL };
    cr_h1_request rq = { "POST", "api.example", 80, NULL, hdrs, "ours", NULL, NULL, 1, 1234567 };
    char *h = head_of(&rq);
    ck_assert_str_eq(h, "POST / HTTP/1.1\r\nHost: api.example\r\n"
                        "user-agent: Browser/1.0\r\nContent-Length: 1234567\r\n\r\n");
    free(h);
    rq.body_len = 0;
    h = head_of(&rq);
    ck_assert_ptr_nonnull(strstr(h, "Content-Length: 0\r\n\r\n"));
    free(h);
}
END_TEST

START_TEST(head_refuses_line_breaks)
{
    const char *bad[] = { "X-A: 1\r\nX-B: 2", NULL };
    const char *nocolon[] = { "X-A 1", NULL };
    cr_h1_request rq = { "GET", "h", 80, "/", bad, NULL, NULL, NULL, 0, 0 };
    ck_assert_uint_eq(cr_h1_head_len(&rq), 0);
    rq.headers = nocolon;
    ck_assert_uint_eq(cr_h1_head_len(&rq), 0);
    rq.headers = NULL;
    rq.target = "/a b";
    ck_assert_uint_eq(cr_h1_head_len(&rq), 0);
    rq.target = "/a";
    rq.host = "h\n";
    ck_assert_uint_eq(cr_h1_head_len(&rq), 0);
    rq.host = "h";
    rq.user_agent = "x\r";
    ck_assert_uint_eq(cr_h1_head_len(&rq), 0);
}
END_TEST

/* ------------------------------------------------------------ parser */

typedef struct seen_t {
    int heads;
    int status;
    int keep_alive;
    int chunked;
    long long content_length;
    int content_encoding;
    char ctype[128];
    char retry[64];
    char body[70000];
    size_t blen;
    int headers;
    int abort_on_body;
} seen_t;

static int on_header(void *b, const char *n, size_t nl, const char *v, size_t vl)
{
    seen_t *s = b;
    (void)n; (void)nl; (void)v; (void)vl;
    s->headers++;
    return 0;
}

static int on_head(void *b, const cr_h1_head *h)
{
    seen_t *s = b;
    s->heads++;
    s->status = h->status;
    s->keep_alive = h->keep_alive;
    s->chunked = h->chunked;
    s->content_length = h->content_length;
    s->content_encoding = h->content_encoding;
    if (h->content_type) {
        ck_assert_uint_lt(h->content_type_len, sizeof(s->ctype));
        memcpy(s->ctype, h->content_type, h->content_type_len);
        s->ctype[h->content_type_len] = '\0';
    }
    if (h->retry_after) {
        memcpy(s->retry, h->retry_after, h->retry_after_len);
        s->retry[h->retry_after_len] = '\0';
    }
    return 0;
}

static int on_body(void *b, const char *d, size_t n)
{
    seen_t *s = b;
    if (s->abort_on_body) {
        return 1;
    }
    ck_assert_uint_le(s->blen + n, sizeof(s->body) - 1);
    memcpy(s->body + s->blen, d, n);
    s->blen += n;
    s->body[s->blen] = '\0';
    return 0;
}

static const cr_h1_callbacks cbs = { on_header, on_head, on_body };

/* Feed msg in pieces of step bytes (0: whole); then EOF if eof.  Returns
 * the final result; *used_total how many bytes were taken. */
static int run(const char *msg, size_t len, size_t step, int eof, int head_request, seen_t *s,
               size_t *used_total)
{
    cr_h1_parser ps;
    size_t off = 0;
    int rc = CR_H1_MORE;

    memset(s, 0, sizeof(*s));
    cr_h1_parser_init(&ps, &cbs, s, head_request);
    while (off < len) {
        size_t n = step && len - off > step ? step : len - off, used = 0;
        rc = cr_h1_feed(&ps, msg + off, n, &used);
        ck_assert_uint_le(used, n);
        off += used;
        /* no buffer held except while the head is incomplete */
        if (cr_h1_head_done(&ps)) {
            ck_assert_uint_eq(cr_h1_buffered(&ps), 0);
        }
        ck_assert_uint_le(cr_h1_buffered(&ps), CR_H1_MAX_HEAD);
        if (rc != CR_H1_MORE) {
            break;
        }
    }
    if (rc == CR_H1_MORE && eof) {
        rc = cr_h1_eof(&ps);
    }
    if (used_total) {
        *used_total = off;
    }
    if (rc == CR_H1_DONE) {
        ck_assert_uint_eq(cr_h1_body_bytes(&ps), s->blen);
    }
    cr_h1_parser_release(&ps);
    return rc;
}

/* The same result for every split size. */
static int run_all(const char *msg, int eof, seen_t *s)
{
    size_t len = strlen(msg), step;
    int first = run(msg, len, 0, eof, 0, s, NULL);
    seen_t *t = malloc(sizeof(*t));
    for (step = 1; step <= len && step <= 64; step++) {
        ck_assert_int_eq(run(msg, len, step, eof, 0, t, NULL), first);
        if (first == CR_H1_DONE) {
            ck_assert_int_eq(t->status, s->status);
            ck_assert_uint_eq(t->blen, s->blen);
            ck_assert(memcmp(t->body, s->body, s->blen) == 0);
            ck_assert_str_eq(t->ctype, s->ctype);
            ck_assert_int_eq(t->heads, 1);
        }
    }
    free(t);
    return first;
}

START_TEST(content_length)
{
    seen_t *s = malloc(sizeof(*s));
    ck_assert_int_eq(run_all("HTTP/1.1 200 OK\r\nContent-Type:  application/json; charset=utf-8 \r\n"
                             "Content-Length: 11\r\nRetry-After: 30\r\n\r\n{\"a\":\"xyz\"}", 0, s),
                     CR_H1_DONE);
    ck_assert_int_eq(s->status, 200);
    ck_assert_str_eq(s->ctype, "application/json; charset=utf-8");
    ck_assert_str_eq(s->retry, "30");
    ck_assert_str_eq(s->body, "{\"a\":\"xyz\"}");
    ck_assert_int_eq(s->keep_alive, 1);
    ck_assert_int_eq(s->content_length, 11);
    ck_assert_int_eq(s->headers, 3);
    /* Repeated equal values and a list of equal values are one length. */
    ck_assert_int_eq(run_all("HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2, 2\r\n\r\nok", 0, s),
                     CR_H1_DONE);
    ck_assert_str_eq(s->body, "ok");
    /* Zero length: done at the head. */
    ck_assert_int_eq(run_all("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 0, s), CR_H1_DONE);
    ck_assert_int_eq(s->status, 404);
    ck_assert_uint_eq(s->blen, 0);
    free(s);
}
END_TEST

START_TEST(bare_lf_lines_and_no_reason)
{
    seen_t *s = malloc(sizeof(*s));
    ck_assert_int_eq(run_all("HTTP/1.1 503\nContent-Length: 3\n\nabc", 0, s), CR_H1_DONE);
    ck_assert_int_eq(s->status, 503);
    ck_assert_str_eq(s->body, "abc");
    free(s);
}
END_TEST

START_TEST(chunked)
{
    seen_t *s = malloc(sizeof(*s));
    ck_assert_int_eq(run_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
                             "5;name=value;x=\"q\"\r\nhello\r\n"
                             "1 \r\n,\r\n"
                             "0006\r\n world\r\n"
                             "0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n", 0, s),
                     CR_H1_DONE);
    ck_assert_str_eq(s->body, "hello, world");
    ck_assert_int_eq(s->chunked, 1);
    ck_assert_int_eq(s->keep_alive, 1);
    ck_assert_int_eq(s->content_length, -1);
    ck_assert_int_eq(run_all("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\nA\n0123456789\n0\n\n", 0, s),
                     CR_H1_DONE);
    ck_assert_str_eq(s->body, "0123456789");
    free(s);
}
END_TEST

START_TEST(close_delimited)
{
    seen_t *s = malloc(sizeof(*s));
    ck_assert_int_eq(run_all("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", 1, s),
                     CR_H1_DONE);
    ck_assert_str_eq(s->body, "until the end");
    ck_assert_int_eq(s->keep_alive, 0);
    /* Without the EOF it is not complete. */
    ck_assert_int_eq(run_all("HTTP/1.1 200 OK\r\n\r\nabc", 0, s), CR_H1_MORE);
    free(s);
}
END_TEST

START_TEST(http10_and_connection)
{
    seen_t *s = malloc(sizeof(*s));
    ck_assert_int_eq(run_all("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 0, s), CR_H1_DONE);
    ck_assert_int_eq(s->keep_alive, 0);
    ck_assert_int_eq(run_all("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx", 0, s),
                     CR_H1_DONE);
    ck_assert_int_eq(s->keep_alive, 1);
    ck_assert_int_eq(run_all("HTTP/1.1 200 OK\r\nConnection: foo, close\r\nContent-Length: 1\r\n\r\nx", 0, s),
                     CR_H1_DONE);
    ck_assert_int_eq(s->keep_alive, 0);
    free(s);
}
END_TEST

START_TEST(interim_answers)
{
    seen_t *s = malloc(sizeof(*s));
    ck_assert_int_eq(run_all("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                             "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", 0, s),
                     CR_H1_DONE);
    ck_assert_int_eq(s->status, 201);
    ck_assert_int_eq(s->heads, 1);
    ck_assert_int_eq(s->headers, 1);   /* only the final head's lines */
    ck_assert_str_eq(s->body, "ok");
    ck_assert_int_eq(run_all("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", 0, s),
                     CR_H1_EUPGRADE);
    free(s);
}
END_TEST

START_TEST(no_body_answers)
{
    seen_t *s = malloc(sizeof(*s));
    size_t used;
    const char *m = "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n";
    ck_assert_int_eq(run_all(m, 0, s), CR_H1_DONE);
    ck_assert_int_eq(s->keep_alive, 1);
    ck_assert_int_eq(run("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 39, 0, 0, 1, s, &used), CR_H1_DONE);
    ck_assert_uint_eq(s->blen, 0);
    ck_assert_int_eq(run_all("HTTP/1.1 304 Not Modified\r\n\r\n", 0, s), CR_H1_DONE);
    free(s);
}
END_TEST

START_TEST(done_leaves_the_rest)
{
    seen_t *s = malloc(sizeof(*s));
    size_t used;
    const char *m = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE";
    ck_assert_int_eq(run(m, strlen(m), 0, 0, 0, s, &used), CR_H1_DONE);
    ck_assert_uint_eq(used, strlen(m) - 7);
    ck_assert_str_eq(s->body, "ok");
    free(s);
}
END_TEST

START_TEST(reset_reads_the_next_answer)
{
    seen_t *s = calloc(1, sizeof(*s));
    cr_h1_parser ps;
    size_t used;
    const char *m = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 No\r\nContent-Length: 1\r\n\r\nb";
    cr_h1_parser_init(&ps, &cbs, s, 0);
    ck_assert_int_eq(cr_h1_feed(&ps, m, strlen(m), &used), CR_H1_DONE);
    ck_assert_int_eq(cr_h1_keep_alive(&ps), 1);
    ck_assert_int_eq(cr_h1_feed(&ps, m + used, 3, NULL), CR_H1_DONE);   /* stays done */
    cr_h1_parser_reset(&ps, 0);
    ck_assert_uint_eq(cr_h1_received(&ps), 0);
    ck_assert_int_eq(cr_h1_feed(&ps, m + used, strlen(m) - used, NULL), CR_H1_DONE);
    ck_assert_int_eq(cr_h1_status(&ps), 404);
    ck_assert_str_eq(s->body, "ab");
    cr_h1_parser_release(&ps);
    free(s);
}
END_TEST

START_TEST(errors)
{
    static const struct { const char *msg; int eof; int rc; } cases[] = {
        { "HTTP/1.1 200 OK\r\n X-Folded: 1\r\nContent-Length: 0\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "HTTP/1.1 200 OK\r\nX-A: 1\r\n\tfold\r\nContent-Length: 0\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "HTTP/1.1 200 OK\r\nX-A: a\001b\r\nContent-Length: 0\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "HTTP/1.1 200 OK\r\n: 1\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "HTTP/1.1 200 OK\r\n\r\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "HTTP/2.0 200 OK\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "HTTP/1.1 20 OK\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "HTTP/1.1 200OK\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "HTTP/1.1 099 OK\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "ICY 200 OK\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "\r\nHTTP/1.1 200 OK\r\n\r\n", 0, CR_H1_ESYNTAX },
        { "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", 0, CR_H1_ELENGTH },
        { "HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nabc", 0, CR_H1_ELENGTH },
        { "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, CR_H1_ELENGTH },
        { "HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n", 0, CR_H1_ELENGTH },
        { "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", 0, CR_H1_ELENGTH },
        { "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", 0, CR_H1_ELENGTH },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 0, CR_H1_ELENGTH },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0, CR_H1_ECODING },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 0, CR_H1_ECODING },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", 0, CR_H1_ECHUNK },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n;ext\r\n", 0, CR_H1_ECHUNK },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 0, CR_H1_ECHUNK },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", 0, CR_H1_ECHUNK },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n", 0, CR_H1_ECHUNK },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\rX", 0, CR_H1_ECHUNK },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a\001\r\n", 0, CR_H1_ECHUNK },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: \001\r\n\r\n", 0, CR_H1_ECHUNK },
        { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", 1, CR_H1_ETRUNCATED },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 1, CR_H1_ETRUNCATED },
        { "HTTP/1.1 200 OK\r\nContent-Le", 1, CR_H1_ETRUNCATED },
        { "", 1, CR_H1_ETRUNCATED },
    };
    seen_t *s = malloc(sizeof(*s));
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = run_all(cases[i].msg, cases[i].eof, s);
        if (rc != cases[i].rc) {
            ck_abort_msg("case %zu: %d (%s), expected %d", i, rc, cr_h1_strerror(rc), cases[i].rc);
        }
    }
    free(s);
}
END_TEST

START_TEST(bounds)
{
    seen_t *s = malloc(sizeof(*s));
    char *m = malloc(200000);
    size_t len, i, used;
    cr_h1_parser ps;

    /* 100 header lines pass, 101 do not. */
    len = (size_t)sprintf(m, "HTTP/1.1 200 OK\r\n");
    for (i = 0; i < 99; i++) len += (size_t)sprintf(m + len, "X-%zu: v\r\n", i);
    len += (size_t)sprintf(m + len, "Content-Length: 0\r\n\r\n");
    ck_assert_int_eq(run(m, len, 7, 0, 0, s, NULL), CR_H1_DONE);
    len = (size_t)sprintf(m, "HTTP/1.1 200 OK\r\n");
    for (i = 0; i < 101; i++) len += (size_t)sprintf(m + len, "X-%zu: v\r\n", i);
    len += (size_t)sprintf(m + len, "\r\n");
    ck_assert_int_eq(run(m, len, 7, 0, 0, s, NULL), CR_H1_EHEADTOOBIG);
    ck_assert_int_eq(run(m, len, 0, 0, 0, s, NULL), CR_H1_EHEADTOOBIG);

    /* A head just under 64 KB passes, one over does not, in any split. */
    len = (size_t)sprintf(m, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(m + len, 'a', CR_H1_MAX_HEAD - len - 4);
    len = CR_H1_MAX_HEAD - 4;
    memcpy(m + len, "\r\n\r\n", 4);
    len += 4;
    ck_assert_int_eq(run(m, len, 1000, 1, 0, s, NULL), CR_H1_DONE);
    ck_assert_int_eq(run(m, len, 0, 1, 0, s, NULL), CR_H1_DONE);
    memmove(m + 30, m + 29, len - 29);
    len++;
    ck_assert_int_eq(run(m, len, 1000, 1, 0, s, NULL), CR_H1_EHEADTOOBIG);
    ck_assert_int_eq(run(m, len, 0, 1, 0, s, NULL), CR_H1_EHEADTOOBIG);
    /* An endless head stops at the limit, whatever comes after. */
    memset(m, 'a', 200000);
    cr_h1_parser_init(&ps, &cbs, s, 0);
    ck_assert_int_eq(cr_h1_feed(&ps, m, 40000, &used), CR_H1_MORE);
    ck_assert_int_eq(cr_h1_feed(&ps, m, 40000, &used), CR_H1_EHEADTOOBIG);
    ck_assert_uint_eq(cr_h1_buffered(&ps), 0);
    ck_assert_int_eq(cr_h1_feed(&ps, m, 10, &used), CR_H1_EHEADTOOBIG);   /* stays failed */
    cr_h1_parser_release(&ps);

    /* Chunk extensions are bounded. */
    len = (size_t)sprintf(m, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;");
    memset(m + len, 'e', CR_H1_MAX_CHUNK_LINE + 10);
    len += CR_H1_MAX_CHUNK_LINE + 10;
    ck_assert_int_eq(run(m, len, 0, 0, 0, s, NULL), CR_H1_ECHUNK);
    free(m);
    free(s);
}
END_TEST

START_TEST(callbacks_abort)
{
    seen_t *s = malloc(sizeof(*s));
    const char *m = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    cr_h1_parser ps;
    memset(s, 0, sizeof(*s));
    s->abort_on_body = 1;
    cr_h1_parser_init(&ps, &cbs, s, 0);
    ck_assert_int_eq(cr_h1_feed(&ps, m, strlen(m), NULL), CR_H1_EABORTED);
    ck_assert_int_eq(s->heads, 1);
    cr_h1_parser_release(&ps);
    /* No callbacks at all is fine too. */
    cr_h1_parser_init(&ps, NULL, NULL, 0);
    ck_assert_int_eq(cr_h1_feed(&ps, m, strlen(m), NULL), CR_H1_DONE);
    ck_assert_uint_eq(cr_h1_body_bytes(&ps), 2);
    free(s);
}
END_TEST

START_TEST(content_encoding)
{
    seen_t *s = malloc(sizeof(*s));
    ck_assert_int_eq(run_all("HTTP/1.1 200 OK\r\nContent-Encoding: GZIP\r\nContent-Length: 0\r\n\r\n", 0, s), CR_H1_DONE);
    ck_assert_int_eq(s->content_encoding, CR_H1_CE_GZIP);
    ck_assert_int_eq(run_all("HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: 0\r\n\r\n", 0, s), CR_H1_DONE);
    ck_assert_int_eq(s->content_encoding, CR_H1_CE_DEFLATE);
    ck_assert_int_eq(run_all("HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 0\r\n\r\n", 0, s), CR_H1_DONE);
    ck_assert_int_eq(s->content_encoding, CR_H1_CE_OTHER);
    ck_assert_int_eq(run_all("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, s), CR_H1_DONE);
    ck_assert_int_eq(s->content_encoding, CR_H1_CE_NONE);
    free(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("h1");
    TCase *tc = tcase_create("h1");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, head_get_with_port);
    tcase_add_test(tc, head_https_default_port);
    tcase_add_test(tc, url_split);
    tcase_add_test(tc, head_post_port80_overrides_ua);
    tcase_add_test(tc, head_refuses_line_breaks);
    tcase_add_test(tc, content_length);
    tcase_add_test(tc, bare_lf_lines_and_no_reason);
    tcase_add_test(tc, chunked);
    tcase_add_test(tc, close_delimited);
    tcase_add_test(tc, http10_and_connection);
    tcase_add_test(tc, interim_answers);
    tcase_add_test(tc, no_body_answers);
    tcase_add_test(tc, done_leaves_the_rest);
    tcase_add_test(tc, reset_reads_the_next_answer);
    tcase_add_test(tc, errors);
    tcase_add_test(tc, bounds);
    tcase_add_test(tc, callbacks_abort);
    tcase_add_test(tc, content_encoding);
    suite_add_tcase(s, tc);
    return cr_unit_run(s);
}
