/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the SSE parser, re-emitter and order-stream policy. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <check.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "cr_sse.h"

static apr_pool_t *pool;

static void setup(void)
{
    ck_assert_int_eq(apr_pool_create(&pool, NULL), APR_SUCCESS);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
    pool = NULL;
}

/* ---------------------------------------------------------------------- */
/* A log of events as text: one "type|id|retry|data" line per event, with
 * CR, LF, NUL and '\' escaped and a NULL id shown as "~". */

typedef struct {
    char *b;
    size_t len, cap;
    int stop_after;       /* return APR_EOF after this many events (0: never) */
    int n;
} rec_t;

static void rec_put(rec_t *r, const char *s, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t ncap = r->cap ? r->cap : 256;
        while (ncap < r->len + n + 1) {
            ncap *= 2;
        }
        r->b = realloc(r->b, ncap);
        ck_assert_ptr_nonnull(r->b);
        r->cap = ncap;
    }
    memcpy(r->b + r->len, s, n);
    r->len += n;
    r->b[r->len] = '\0';
}

static void rec_esc(rec_t *r, const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        switch (s[i]) {
        case '\n': rec_put(r, "\\n", 2); break;
        case '\r': rec_put(r, "\\r", 2); break;
        case '\0': rec_put(r, "\\0", 2); break;
        case '\\': rec_put(r, "\\\\", 2); break;
        default: rec_put(r, s + i, 1);
        }
    }
}

static apr_status_t rec_cb(void *baton, const cr_sse_event *ev)
{
    rec_t *r = baton;
    char num[32];

    ck_assert_ptr_nonnull(ev->type);
    ck_assert_ptr_nonnull(ev->data);
    ck_assert_ptr_nonnull(ev->pool);
    ck_assert_int_eq(ev->data[ev->data_len], '\0');
    rec_esc(r, ev->type, ev->type_len);
    rec_put(r, "|", 1);
    if (ev->id) {
        rec_esc(r, ev->id, strlen(ev->id));
    }
    else {
        rec_put(r, "~", 1);
    }
    snprintf(num, sizeof(num), "|%ld|", ev->retry);
    rec_put(r, num, strlen(num));
    rec_esc(r, ev->data, ev->data_len);
    rec_put(r, "\n", 1);
    r->n++;
    if (r->stop_after && r->n >= r->stop_after) {
        return APR_EOF;
    }
    return APR_SUCCESS;
}

static void rec_free(rec_t *r)
{
    free(r->b);
    memset(r, 0, sizeof(*r));
}

static const char *rec_str(rec_t *r)
{
    return r->b ? r->b : "";
}

/* Feed s (n bytes) cut at the sorted positions cuts[0..ncuts); returns the
 * first non-success status, or APR_SUCCESS. */
static apr_status_t feed_split(cr_sse_parser *ps, const char *s, size_t n,
                               const size_t *cuts, int ncuts, rec_t *r)
{
    size_t at = 0;
    int k;
    apr_status_t rv;

    for (k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : n;
        rv = cr_sse_feed(ps, s + at, end - at, rec_cb, r);
        if (rv != APR_SUCCESS) {
            return rv;
        }
        at = end;
    }
    return APR_SUCCESS;
}

/* Parse a whole stream in one feed; the log goes to r. */
static apr_status_t parse_n(const char *s, size_t n, size_t max_event, rec_t *r,
                            cr_sse_parser **out)
{
    cr_sse_parser *ps = cr_sse_parser_create(pool, max_event);
    apr_status_t rv;
    ck_assert_ptr_nonnull(ps);
    rv = cr_sse_feed(ps, s, n, rec_cb, r);
    if (out) {
        *out = ps;
    }
    return rv;
}

/* Parse s (a C string) and check the log. */
#define CHECK_PARSE(s, expect) do {                                        \
        rec_t r_ = { 0 };                                                  \
        ck_assert_int_eq(parse_n((s), strlen(s), 0, &r_, NULL), APR_SUCCESS); \
        ck_assert_str_eq(rec_str(&r_), (expect));                          \
        rec_free(&r_);                                                     \
    } while (0)

/* ---------------------------------------------------------------------- */
/* Field rules */

START_TEST(basic_message)
{
    rec_t r = { 0 };
    cr_sse_parser *ps;
    ck_assert_int_eq(parse_n("data: hello\n\n", 13, 0, &r, &ps), APR_SUCCESS);
    ck_assert_str_eq(rec_str(&r), "message|~|-1|hello\n");
    ck_assert_str_eq(cr_sse_last_event_id(ps), "");
    ck_assert_int_eq(cr_sse_retry(ps), -1);
    ck_assert_int_eq(cr_sse_events_seen(ps), 1);
    ck_assert_int_eq(cr_sse_in_event(ps), 0);
    rec_free(&r);
}
END_TEST

START_TEST(field_value_space)
{
    /* one optional leading space removed, no more; no colon: empty value */
    CHECK_PARSE("data:x\n\n", "message|~|-1|x\n");
    CHECK_PARSE("data: x\n\n", "message|~|-1|x\n");
    CHECK_PARSE("data:  x \n\n", "message|~|-1| x \n");
    CHECK_PARSE("data:\n\n", "message|~|-1|\n");
    CHECK_PARSE("data: \n\n", "message|~|-1|\n");
    CHECK_PARSE("data\n\n", "message|~|-1|\n");
    CHECK_PARSE("data:a:b: c\n\n", "message|~|-1|a:b: c\n");
    CHECK_PARSE("data:\tx\n\n", "message|~|-1|\tx\n");
}
END_TEST

START_TEST(multiline_data)
{
    CHECK_PARSE("data: a\ndata: b\ndata: c\n\n", "message|~|-1|a\\nb\\nc\n");
    /* trailing LF removed once: an empty last line survives as a final LF */
    CHECK_PARSE("data: a\ndata\n\n", "message|~|-1|a\\n\n");
    CHECK_PARSE("data\ndata\n\n", "message|~|-1|\\n\n");
    CHECK_PARSE("data\ndata: a\n\n", "message|~|-1|\\na\n");
    /* interleaved other fields and comments don't split data */
    CHECK_PARSE("data: a\n: hb\nid: 1\ndata: b\n\n", "message|1|-1|a\\nb\n");
    /* a NUL inside data is data */
    {
        rec_t r = { 0 };
        ck_assert_int_eq(parse_n("data: a\0b\n\n", 11, 0, &r, NULL), APR_SUCCESS);
        ck_assert_str_eq(rec_str(&r), "message|~|-1|a\\0b\n");
        rec_free(&r);
    }
}
END_TEST

START_TEST(event_type)
{
    CHECK_PARSE("event: stop\ndata: {}\n\n", "stop|~|-1|{}\n");
    /* type defaults to message, and resets after each event */
    CHECK_PARSE("event: a\ndata: 1\n\ndata: 2\n\n", "a|~|-1|1\nmessage|~|-1|2\n");
    /* empty event value: message */
    CHECK_PARSE("event:\ndata: 1\n\n", "message|~|-1|1\n");
    CHECK_PARSE("event\ndata: 1\n\n", "message|~|-1|1\n");
    /* last event: wins */
    CHECK_PARSE("event: a\nevent: b\ndata: 1\n\n", "b|~|-1|1\n");
    /* a block without data is not dispatched and its type doesn't leak */
    CHECK_PARSE("event: stop\n\ndata: 1\n\n", "message|~|-1|1\n");
    {
        rec_t r = { 0 };
        ck_assert_int_eq(parse_n("event: st\0p\ndata: 1\n\n", 21, 0, &r, NULL), APR_SUCCESS);
        ck_assert_str_eq(rec_str(&r), "st\\0p|~|-1|1\n");
        rec_free(&r);
    }
}
END_TEST

START_TEST(unknown_fields)
{
    CHECK_PARSE("foo: bar\ndata: 1\nDATA: 2\nData: 3\n data: 4\nretryx: 5\nbar\n\n",
                "message|~|-1|1\n");
    /* a block of unknown fields dispatches nothing */
    CHECK_PARSE("foo: bar\n\n", "");
}
END_TEST

START_TEST(id_rules)
{
    rec_t r = { 0 };
    cr_sse_parser *ps;
    static const char s[] =
        "id: 1\ndata: a\n\n"          /* sets 1 */
        "data: b\n\n"                  /* no id: field: ev->id NULL, buffer keeps 1 */
        "id: 2\n\n"                    /* no data: not dispatched, buffer 2 */
        "data: c\n\n"
        "id: x\0y\ndata: d\n\n"        /* NUL: ignored */
        "id\ndata: e\n\n"              /* empty id resets to "" */
        "id:  sp\ndata: f\n\n"         /* one space removed */
        "id: 3\nid: 4\ndata: g\n\n";   /* last wins */

    ck_assert_int_eq(parse_n(s, sizeof(s) - 1, 0, &r, &ps), APR_SUCCESS);
    ck_assert_str_eq(rec_str(&r),
                     "message|1|-1|a\n"
                     "message|~|-1|b\n"
                     "message|~|-1|c\n"
                     "message|~|-1|d\n"
                     "message||-1|e\n"
                     "message| sp|-1|f\n"
                     "message|4|-1|g\n");
    ck_assert_str_eq(cr_sse_last_event_id(ps), "4");
    rec_free(&r);

    /* the id buffer updates even when nothing is dispatched */
    ck_assert_int_eq(parse_n("id: 7\n\n", 7, 0, &r, &ps), APR_SUCCESS);
    ck_assert_int_eq(r.n, 0);
    ck_assert_str_eq(cr_sse_last_event_id(ps), "7");
    ck_assert_int_eq(parse_n("id: 7\n\nid: 8\0\n\n", 15, 0, &r, &ps), APR_SUCCESS);
    ck_assert_str_eq(cr_sse_last_event_id(ps), "7");
    rec_free(&r);
}
END_TEST

START_TEST(retry_rules)
{
    rec_t r = { 0 };
    cr_sse_parser *ps;

    CHECK_PARSE("retry: 1500\ndata: a\n\n", "message|~|1500|a\n");
    CHECK_PARSE("retry:0\ndata: a\n\n", "message|~|0|a\n");
    CHECK_PARSE("retry: 007\ndata: a\n\n", "message|~|7|a\n");
    CHECK_PARSE("retry: 12a\ndata: a\n\n", "message|~|-1|a\n");
    CHECK_PARSE("retry: -5\ndata: a\n\n", "message|~|-1|a\n");
    CHECK_PARSE("retry: +5\ndata: a\n\n", "message|~|-1|a\n");
    CHECK_PARSE("retry: 1.5\ndata: a\n\n", "message|~|-1|a\n");
    CHECK_PARSE("retry:  5\ndata: a\n\n", "message|~|-1|a\n");
    CHECK_PARSE("retry: 5 \ndata: a\n\n", "message|~|-1|a\n");
    CHECK_PARSE("retry:\ndata: a\n\n", "message|~|-1|a\n");
    CHECK_PARSE("retry\ndata: a\n\n", "message|~|-1|a\n");
    CHECK_PARSE("retry: 99999999999999999999999999\ndata: a\n\n", "message|~|-1|a\n");
    /* per block: a retry doesn't carry into the next event */
    CHECK_PARSE("retry: 5\ndata: a\n\ndata: b\n\n", "message|~|5|a\nmessage|~|-1|b\n");
    /* an invalid retry doesn't undo a valid one */
    CHECK_PARSE("retry: 5\nretry: x\ndata: a\n\n", "message|~|5|a\n");

    /* the stream's reconnection time updates even without a dispatch */
    ck_assert_int_eq(parse_n("retry: 42\n\n", 11, 0, &r, &ps), APR_SUCCESS);
    ck_assert_int_eq(r.n, 0);
    ck_assert_int_eq(cr_sse_retry(ps), 42);
    rec_free(&r);
}
END_TEST

START_TEST(comments)
{
    rec_t r = { 0 };
    cr_sse_parser *ps;
    static const char s[] = ": hello\n:\n::x\ndata: a\n: mid\n\n: after\n\n";

    ck_assert_int_eq(parse_n(s, sizeof(s) - 1, 0, &r, &ps), APR_SUCCESS);
    ck_assert_str_eq(rec_str(&r), "message|~|-1|a\n");
    ck_assert_int_eq(cr_sse_comments_seen(ps), 5);
    rec_free(&r);

    /* a comment-only block (heartbeat) dispatches nothing */
    ck_assert_int_eq(parse_n(":\n\n: ping\n\n", 11, 0, &r, &ps), APR_SUCCESS);
    ck_assert_int_eq(r.n, 0);
    ck_assert_int_eq(cr_sse_comments_seen(ps), 2);
    rec_free(&r);
}
END_TEST

START_TEST(empty_data_not_dispatched)
{
    CHECK_PARSE("\n\n\n", "");
    CHECK_PARSE("id: 1\nevent: x\nretry: 3\n\n", "");
    CHECK_PARSE("\n\ndata: a\n\n\n\n", "message|~|-1|a\n");
}
END_TEST

START_TEST(unterminated_discarded)
{
    rec_t r = { 0 };
    cr_sse_parser *ps;

    ck_assert_int_eq(parse_n("data: a\n\ndata: b\n", 17, 0, &r, &ps), APR_SUCCESS);
    ck_assert_str_eq(rec_str(&r), "message|~|-1|a\n");
    ck_assert_int_ne(cr_sse_in_event(ps), 0);
    rec_free(&r);

    ck_assert_int_eq(parse_n("data: a\n\ndata: b", 16, 0, &r, &ps), APR_SUCCESS);
    ck_assert_str_eq(rec_str(&r), "message|~|-1|a\n");
    ck_assert_int_ne(cr_sse_in_event(ps), 0);
    rec_free(&r);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Line ends, BOM, splits */

START_TEST(line_ends)
{
    CHECK_PARSE("data: a\ndata: b\n\n", "message|~|-1|a\\nb\n");
    CHECK_PARSE("data: a\rdata: b\r\r", "message|~|-1|a\\nb\n");
    CHECK_PARSE("data: a\r\ndata: b\r\n\r\n", "message|~|-1|a\\nb\n");
    /* mixed */
    CHECK_PARSE("data: a\rdata: b\r\ndata: c\n\r\n", "message|~|-1|a\\nb\\nc\n");
    CHECK_PARSE("data: a\n\r", "message|~|-1|a\n");
    /* LF CR is two line ends; CR LF is one */
    CHECK_PARSE("data: a\n\rdata: b\r\n\n", "message|~|-1|a\nmessage|~|-1|b\n");
    CHECK_PARSE("data: a\r\n\r\ndata: b\r\r", "message|~|-1|a\nmessage|~|-1|b\n");
    /* CR CR LF: a line end, then a blank line */
    CHECK_PARSE("data: a\r\r\n", "message|~|-1|a\n");
}
END_TEST

START_TEST(crlf_split_across_reads)
{
    rec_t r = { 0 };
    cr_sse_parser *ps = cr_sse_parser_create(pool, 0);

    /* CR at chunk end, LF at next chunk start: one line end */
    ck_assert_int_eq(cr_sse_feed(ps, "data: a\r", 8, rec_cb, &r), APR_SUCCESS);
    ck_assert_int_eq(cr_sse_feed(ps, "\ndata: b\r", 9, rec_cb, &r), APR_SUCCESS);
    ck_assert_int_eq(r.n, 0);
    ck_assert_int_eq(cr_sse_feed(ps, "\n", 1, rec_cb, &r), APR_SUCCESS);
    ck_assert_int_eq(r.n, 0);
    ck_assert_int_eq(cr_sse_feed(ps, "\r", 1, rec_cb, &r), APR_SUCCESS);
    ck_assert_str_eq(rec_str(&r), "message|~|-1|a\\nb\n");
    /* the pending LF-skip survives an empty feed */
    ck_assert_int_eq(cr_sse_feed(ps, "data: c\r", 8, rec_cb, &r), APR_SUCCESS);
    ck_assert_int_eq(cr_sse_feed(ps, "", 0, rec_cb, &r), APR_SUCCESS);
    ck_assert_int_eq(cr_sse_feed(ps, "\n\r\n", 3, rec_cb, &r), APR_SUCCESS);
    ck_assert_str_eq(rec_str(&r), "message|~|-1|a\\nb\nmessage|~|-1|c\n");
    rec_free(&r);
}
END_TEST

START_TEST(bom)
{
    rec_t r = { 0 };
    cr_sse_parser *ps;

    CHECK_PARSE("\xEF\xBB\xBF" "data: a\n\n", "message|~|-1|a\n");
    /* only one BOM is stripped: the second makes an unknown field */
    CHECK_PARSE("\xEF\xBB\xBF\xEF\xBB\xBF" "data: a\n\ndata: b\n\n", "message|~|-1|b\n");
    /* not stripped mid-stream */
    CHECK_PARSE("data: a\n\n\xEF\xBB\xBF" "data: b\n\ndata: c\n\n",
                "message|~|-1|a\nmessage|~|-1|c\n");
    CHECK_PARSE("data: \xEF\xBB\xBF" "a\n\n", "message|~|-1|\xEF\xBB\xBF" "a\n");
    /* a partial BOM is content */
    CHECK_PARSE("\xEF\xBB" "data: a\n\ndata: b\n\n", "message|~|-1|b\n");
    CHECK_PARSE("\xEF" "\n" "data: b\n\n", "message|~|-1|b\n");

    /* a BOM split over reads */
    ps = cr_sse_parser_create(pool, 0);
    ck_assert_int_eq(cr_sse_feed(ps, "\xEF", 1, rec_cb, &r), APR_SUCCESS);
    ck_assert_int_eq(cr_sse_feed(ps, "\xBB", 1, rec_cb, &r), APR_SUCCESS);
    ck_assert_int_eq(cr_sse_feed(ps, "\xBF" "data", 5, rec_cb, &r), APR_SUCCESS);
    ck_assert_int_eq(cr_sse_feed(ps, ": a\n\n", 5, rec_cb, &r), APR_SUCCESS);
    ck_assert_str_eq(rec_str(&r), "message|~|-1|a\n");
    rec_free(&r);

    /* a partial BOM split over reads, then a mismatch, is content */
    ps = cr_sse_parser_create(pool, 0);
    ck_assert_int_eq(cr_sse_feed(ps, "\xEF", 1, rec_cb, &r), APR_SUCCESS);
    ck_assert_int_eq(cr_sse_feed(ps, "\xBB", 1, rec_cb, &r), APR_SUCCESS);
    ck_assert_int_eq(cr_sse_feed(ps, "data: a\n\ndata: b\n\n", 18, rec_cb, &r), APR_SUCCESS);
    ck_assert_str_eq(rec_str(&r), "message|~|-1|b\n");
    rec_free(&r);
}
END_TEST

/* A stream exercising every rule, with CR, LF and CRLF, a BOM, comments,
 * ids with and without NUL, a non-dispatched block and a final unterminated
 * event. */
static const char rich[] =
    "\xEF\xBB\xBF"
    "data: a\r\n"
    "data:b\r"
    "\r"
    ": c\n"
    "id: 7\n"
    "event: stop\n"
    "data\n"
    "\n"
    "retry: 300\r"
    "data:  x\r\n"
    "\r\n"
    "id: 8\r\n\r\n"
    "id: z\0z\n"
    "id\n"
    "data: y\n"
    "\n"
    "foo\rbar: 1\r\n"
    "id: 9\ndata: z\rdata: w\n\r"
    "data: \xEF\xBB\xBFq\r\n\r"
    "\n\n"
    "data:tail\n";

static const char rich_expect[] =
    "message|~|-1|a\\nb\n"
    "stop|7|-1|\n"
    "message|~|300| x\n"
    "message||-1|y\n"
    "message|9|-1|z\\nw\n"
    "message|~|-1|\xEF\xBB\xBFq\n";

static void check_rich(cr_sse_parser *ps, rec_t *r, apr_status_t rv)
{
    ck_assert_int_eq(rv, APR_SUCCESS);
    ck_assert_str_eq(rec_str(r), rich_expect);
    ck_assert_int_eq(cr_sse_comments_seen(ps), 1);
    ck_assert_str_eq(cr_sse_last_event_id(ps), "9");
    ck_assert_int_eq(cr_sse_retry(ps), 300);
    ck_assert_int_ne(cr_sse_in_event(ps), 0);
}

START_TEST(split_whole)
{
    rec_t r = { 0 };
    cr_sse_parser *ps = cr_sse_parser_create(pool, 0);
    check_rich(ps, &r, feed_split(ps, rich, sizeof(rich) - 1, NULL, 0, &r));
    rec_free(&r);
}
END_TEST

START_TEST(split_byte_by_byte)
{
    size_t n = sizeof(rich) - 1, i;
    size_t *cuts = malloc(n * sizeof(*cuts));
    rec_t r = { 0 };
    cr_sse_parser *ps = cr_sse_parser_create(pool, 0);

    for (i = 0; i < n - 1; i++) {
        cuts[i] = i + 1;
    }
    check_rich(ps, &r, feed_split(ps, rich, n, cuts, (int)(n - 1), &r));
    rec_free(&r);
    free(cuts);
}
END_TEST

START_TEST(split_two_way)
{
    size_t n = sizeof(rich) - 1, a;
    for (a = 0; a <= n; a++) {
        apr_pool_t *sp;
        rec_t r = { 0 };
        cr_sse_parser *ps;
        apr_pool_create(&sp, pool);
        ps = cr_sse_parser_create(sp, 0);
        check_rich(ps, &r, feed_split(ps, rich, n, &a, 1, &r));
        rec_free(&r);
        apr_pool_destroy(sp);
    }
}
END_TEST

START_TEST(split_three_way)
{
    size_t n = sizeof(rich) - 1, cuts[2];
    for (cuts[0] = 0; cuts[0] <= n; cuts[0]++) {
        for (cuts[1] = cuts[0]; cuts[1] <= n; cuts[1]++) {
            apr_pool_t *sp;
            rec_t r = { 0 };
            cr_sse_parser *ps;
            apr_pool_create(&sp, pool);
            ps = cr_sse_parser_create(sp, 0);
            check_rich(ps, &r, feed_split(ps, rich, n, cuts, 2, &r));
            rec_free(&r);
            apr_pool_destroy(sp);
        }
    }
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Bounds and errors */

START_TEST(oversize)
{
    rec_t r = { 0 };
    cr_sse_parser *ps;
    /* only data counts: "12345678" and its LF are 9 bytes */
    ck_assert_int_eq(parse_n("data: 12345678\n\n", 16, 9, &r, NULL), APR_SUCCESS);
    ck_assert_int_eq(r.n, 1);
    rec_free(&r);
    ck_assert_int_eq(parse_n("data: 123456789\n\n", 17, 9, &r, NULL), APR_ENOSPC);
    ck_assert_int_eq(r.n, 0);
    rec_free(&r);
    /* every data line counts with its LF; comments and unknown fields never */
    ck_assert_int_eq(parse_n("data: 1\ndata: 234\n\n", 19, 6, &r, NULL), APR_SUCCESS);
    ck_assert_int_eq(parse_n("data: 1\ndata: 2345\n\n", 20, 6, &r, NULL), APR_ENOSPC);
    ck_assert_int_eq(parse_n("data: 1\n:23456789\nx: 3456789\n\n", 30, 2, &r, NULL),
                     APR_SUCCESS);
    rec_free(&r);
    /* an id or event value is bounded on its own */
    ck_assert_int_eq(parse_n("id: 1234\ndata: 1234\n\n", 21, 5, &r, NULL), APR_SUCCESS);
    ck_assert_int_eq(parse_n("id: 12345\ndata: 1\n\n", 19, 5, &r, NULL), APR_ENOSPC);
    rec_free(&r);
    /* the count restarts at each blank line: many small events are fine */
    ck_assert_int_eq(parse_n("data: 1234\n\ndata: 1234\n\ndata: 1234\n\n", 36, 5, &r, NULL),
                     APR_SUCCESS);
    ck_assert_int_eq(r.n, 3);
    rec_free(&r);
    /* CRLF is not data */
    ck_assert_int_eq(parse_n("data: 12345678\r\n\r\n", 18, 9, &r, NULL), APR_SUCCESS);
    ck_assert_int_eq(r.n, 1);
    rec_free(&r);

    /* an endless line fails before it is buffered past the bound, and the
     * error is sticky */
    ps = cr_sse_parser_create(pool, 100);
    ck_assert_int_eq(cr_sse_feed(ps, "data: a\n\ndata: ", 15, rec_cb, &r), APR_SUCCESS);
    {
        char big[60];
        int k;
        memset(big, 'x', sizeof(big));
        ck_assert_int_eq(cr_sse_feed(ps, big, sizeof(big), rec_cb, &r), APR_SUCCESS);
        for (k = 0; k < 10 && cr_sse_feed(ps, big, sizeof(big), rec_cb, &r) == APR_SUCCESS; k++)
            ;
        ck_assert_int_eq(k, 0);
    }
    ck_assert_uint_le(cr_sse_buffered_capacity(ps), 4 * (100 + 8));
    ck_assert_int_eq(cr_sse_feed(ps, "\n\ndata: b\n\n", 11, rec_cb, &r), APR_ENOSPC);
    ck_assert_int_eq(r.n, 1);
    rec_free(&r);
}
END_TEST

START_TEST(oversize_split_invariant)
{
    static const char s[] = "data: a\r\n\r\n: hb\r\nid: 1\ndata: 0123456789012345678901234567890\n\n";
    size_t n = sizeof(s) - 1, a, i;
    size_t cuts[sizeof(s)];

    for (a = 0; a <= n; a++) {
        rec_t r = { 0 };
        cr_sse_parser *ps = cr_sse_parser_create(pool, 30);
        ck_assert_int_eq(feed_split(ps, s, n, &a, 1, &r), APR_ENOSPC);
        ck_assert_str_eq(rec_str(&r), "message|~|-1|a\n");
        rec_free(&r);
    }
    for (i = 0; i + 1 < n; i++) {
        cuts[i] = i + 1;
    }
    {
        rec_t r = { 0 };
        cr_sse_parser *ps = cr_sse_parser_create(pool, 30);
        ck_assert_int_eq(feed_split(ps, s, n, cuts, (int)(n - 1), &r), APR_ENOSPC);
        ck_assert_str_eq(rec_str(&r), "message|~|-1|a\n");
        rec_free(&r);
    }
}
END_TEST

START_TEST(callback_error_stops)
{
    rec_t r = { 0 };
    cr_sse_parser *ps = cr_sse_parser_create(pool, 0);
    r.stop_after = 1;
    ck_assert_int_eq(cr_sse_feed(ps, "data: a\n\ndata: b\n\n", 18, rec_cb, &r), APR_EOF);
    ck_assert_str_eq(rec_str(&r), "message|~|-1|a\n");
    ck_assert_int_eq(cr_sse_feed(ps, "data: c\n\n", 9, rec_cb, &r), APR_EOF);
    ck_assert_int_eq(r.n, 1);
    rec_free(&r);
}
END_TEST

/* A line far longer than any chunk, fed a byte at a time: linear work. */
START_TEST(long_line_linear)
{
    apr_size_t n = 1024 * 1024, i;
    rec_t r = { 0 };
    cr_sse_parser *ps = cr_sse_parser_create(pool, n + 16);
    char *s = malloc(n + 10);

    memcpy(s, "data: ", 6);
    memset(s + 6, 'y', n - 6);
    memcpy(s + n, "\n\n", 2);
    for (i = 0; i < n + 2; i++) {
        ck_assert_int_eq(cr_sse_feed(ps, s + i, 1, rec_cb, &r), APR_SUCCESS);
    }
    ck_assert_int_eq(r.n, 1);
    ck_assert_uint_le(cr_sse_buffered_capacity(ps), 4 * (n + 16 + 8));
    rec_free(&r);
    free(s);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Policy */

static cr_sse_verdict classify_s(const char *type, const char *data, const char *expect,
                                 int *terminal)
{
    cr_sse_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = type;
    ev.data = data;
    ev.data_len = data ? strlen(data) : 0;
    ev.retry = -1;
    return cr_sse_classify(pool, &ev, expect, terminal);
}

START_TEST(classify_orders)
{
    int term = -1;
    ck_assert_int_eq(classify_s("message",
                                "{\"order_id\":\"abc-1\",\"order_state\":\"WaitingForPayment\","
                                "\"deliveries\":[{\"id\":1}]}", NULL, &term),
                     CR_SSE_RELAY_ORDER);
    ck_assert_int_eq(term, 0);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"abc-1\",\"order_state\":\"Done\"}",
                                "abc-1", &term), CR_SSE_RELAY_ORDER);
    ck_assert_int_eq(term, 1);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"a\",\"order_state\":\"Cancelled\"}",
                                NULL, &term), CR_SSE_RELAY_ORDER);
    ck_assert_int_eq(term, 1);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"a\",\"order_state\":\"Refunded\"}",
                                NULL, NULL), CR_SSE_RELAY_ORDER);
    /* unknown but well-formed state: relayed, not terminal */
    term = -1;
    ck_assert_int_eq(classify_s("message",
                                "{\"order_id\":\"a\",\"order_state\":\"PaymentUnderReview\"}",
                                NULL, &term), CR_SSE_RELAY_ORDER);
    ck_assert_int_eq(term, 0);
    /* a type that is NULL or "message" via type_len */
    ck_assert_int_eq(classify_s(NULL, "{\"order_id\":\"a\",\"order_state\":\"Done\"}", NULL, NULL),
                     CR_SSE_RELAY_ORDER);
}
END_TEST

START_TEST(classify_malformed)
{
    int term = -1;
    /* missing or wrong-typed members */
    ck_assert_int_eq(classify_s("message", "{\"order_state\":\"Done\"}", NULL, &term),
                     CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(term, 0);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"a\"}", NULL, NULL),
                     CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":7,\"order_state\":\"Done\"}", NULL, NULL),
                     CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"\",\"order_state\":\"Done\"}", NULL, NULL),
                     CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"a\",\"order_state\":null}", NULL, NULL),
                     CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"a\\u0000b\",\"order_state\":\"Done\"}",
                                NULL, NULL), CR_SSE_DROP_MALFORMED);
    /* badly shaped state */
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"a\",\"order_state\":\"\"}", NULL, NULL),
                     CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"a\",\"order_state\":\"<b>x</b>\"}",
                                NULL, NULL), CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"a\",\"order_state\":\"Done now\"}",
                                NULL, NULL), CR_SSE_DROP_MALFORMED);
    /* not an object */
    ck_assert_int_eq(classify_s("message", "[{\"order_id\":\"a\",\"order_state\":\"Done\"}]",
                                NULL, NULL), CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "\"Done\"", NULL, NULL), CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "42", NULL, NULL), CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "null", NULL, NULL), CR_SSE_DROP_MALFORMED);
    /* another order */
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"b\",\"order_state\":\"Done\"}", "a", NULL),
                     CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"ab\",\"order_state\":\"Done\"}", "a", NULL),
                     CR_SSE_DROP_MALFORMED);
    /* invalid JSON */
    ck_assert_int_eq(classify_s("message", "{\"order_id\":", NULL, NULL), CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "not json", NULL, NULL), CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "", NULL, NULL), CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", NULL, NULL, NULL), CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"a\",\"order_state\":\"Done\"} {}",
                                NULL, NULL), CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "{'order_id':'a','order_state':'Done'}", NULL, NULL),
                     CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"a\",\"order_state\":\"Done\",}",
                                NULL, NULL), CR_SSE_DROP_MALFORMED);
    ck_assert_int_eq(classify_s("message", "{\"order_id\":\"\xff\",\"order_state\":\"Done\"}",
                                NULL, NULL), CR_SSE_DROP_MALFORMED);
    /* too deep */
    {
        char deep[200];
        int k, o = 0;
        o += sprintf(deep + o, "{\"order_id\":\"a\",\"order_state\":\"Done\",\"x\":");
        for (k = 0; k < 40; k++) deep[o++] = '[';
        for (k = 0; k < 40; k++) deep[o++] = ']';
        deep[o++] = '}';
        deep[o] = '\0';
        ck_assert_int_eq(classify_s("message", deep, NULL, NULL), CR_SSE_DROP_MALFORMED);
    }
    /* a NUL inside the data */
    {
        cr_sse_event ev = { "message", "{\"order_id\":\"a\",\"order_state\":\"Done\"}\0", 38, NULL,
                            -1, 0, NULL };
        ck_assert_int_eq(cr_sse_classify(pool, &ev, NULL, NULL), CR_SSE_DROP_MALFORMED);
    }
}
END_TEST

START_TEST(classify_stop_and_unknown)
{
    int term = -1;
    ck_assert_int_eq(classify_s("stop", "{}", "a", &term), CR_SSE_RELAY_STOP);
    ck_assert_int_eq(term, 0);
    ck_assert_int_eq(classify_s("stop", "{\"error\":\"not found\"}", "a", NULL), CR_SSE_RELAY_STOP);
    ck_assert_int_eq(classify_s("stop", "garbage", NULL, NULL), CR_SSE_RELAY_STOP);
    ck_assert_int_eq(classify_s("stop", "", NULL, NULL), CR_SSE_RELAY_STOP);
    ck_assert_int_eq(classify_s("ping", "{\"order_id\":\"a\",\"order_state\":\"Done\"}", NULL, NULL),
                     CR_SSE_DROP_UNKNOWN);
    ck_assert_int_eq(classify_s("Message", "{}", NULL, NULL), CR_SSE_DROP_UNKNOWN);
    ck_assert_int_eq(classify_s("STOP", "{}", NULL, NULL), CR_SSE_DROP_UNKNOWN);
    ck_assert_int_eq(classify_s("stopx", "{}", NULL, NULL), CR_SSE_DROP_UNKNOWN);
    {
        cr_sse_event ev = { "stop\0x", "{}", 2, NULL, -1, 6, NULL };
        ck_assert_int_eq(cr_sse_classify(pool, &ev, NULL, NULL), CR_SSE_DROP_UNKNOWN);
    }
}
END_TEST

START_TEST(order_states)
{
    static const char *const known[] = {
        "WaitingForPayment", "WaitingForDelivery", "Done", "Created", "PaymentStarted",
        "PartialPaymentStarted", "PaymentReceived", "Expired", "Canceled", "Cancelled",
        "WaitingForManualAction", "PaymentFailed", "PaymentSetupFailed", "Refunded",
    };
    static const char *const terminal[] = {
        "Done", "Expired", "Canceled", "Cancelled", "PaymentFailed", "PaymentSetupFailed",
        "Refunded",
    };
    size_t i;
    for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        ck_assert_int_eq(cr_order_state_known(known[i]), 1);
    }
    for (i = 0; i < sizeof(terminal) / sizeof(terminal[0]); i++) {
        ck_assert_int_eq(cr_order_state_terminal(terminal[i]), 1);
    }
    ck_assert_int_eq(cr_order_state_terminal("WaitingForPayment"), 0);
    ck_assert_int_eq(cr_order_state_terminal("PaymentReceived"), 0);
    ck_assert_int_eq(cr_order_state_terminal("WaitingForManualAction"), 0);
    ck_assert_int_eq(cr_order_state_known("done"), 0);
    ck_assert_int_eq(cr_order_state_known("Completed"), 0);
    ck_assert_int_eq(cr_order_state_known(""), 0);
    ck_assert_int_eq(cr_order_state_known(NULL), 0);
    ck_assert_int_eq(cr_order_state_terminal(NULL), 0);
}
END_TEST

/* Classify inside the callback, with the event's own pool. */
typedef struct {
    const char *expect;
    int relay, stop, malformed, unknown, terminal;
} policy_t;

static apr_status_t policy_cb(void *baton, const cr_sse_event *ev)
{
    policy_t *pt = baton;
    int term = 0;
    switch (cr_sse_classify(ev->pool, ev, pt->expect, &term)) {
    case CR_SSE_RELAY_ORDER: pt->relay++; break;
    case CR_SSE_RELAY_STOP: pt->stop++; return APR_EOF;
    case CR_SSE_DROP_MALFORMED: pt->malformed++; break;
    case CR_SSE_DROP_UNKNOWN: pt->unknown++; break;
    }
    pt->terminal += term;
    return APR_SUCCESS;
}

START_TEST(classify_stream)
{
    static const char s[] =
        ": welcome\n\n"
        "data: {\"order_id\":\"o1\",\"order_state\":\"WaitingForPayment\"}\n\n"
        "data: {\"order_id\":\"o2\",\"order_state\":\"Done\"}\n\n"
        "data: {\"order_id\":\"o1\",\n"
        "data:  \"order_state\":\"Done\"}\n\n"
        "data: {oops\n\n"
        "event: progress\ndata: {}\n\n"
        "event: stop\ndata: {}\n\n"
        "data: {\"order_id\":\"o1\",\"order_state\":\"Done\"}\n\n";
    policy_t pt = { "o1", 0, 0, 0, 0, 0 };
    cr_sse_parser *ps = cr_sse_parser_create(pool, 0);
    ck_assert_int_eq(cr_sse_feed(ps, s, sizeof(s) - 1, policy_cb, &pt), APR_EOF);
    ck_assert_int_eq(pt.relay, 2);
    ck_assert_int_eq(pt.terminal, 1);
    ck_assert_int_eq(pt.malformed, 2);
    ck_assert_int_eq(pt.unknown, 1);
    ck_assert_int_eq(pt.stop, 1);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Re-emitting */

static void check_format(const cr_sse_event *ev, const char *expect)
{
    apr_size_t len = 99;
    char *out = cr_sse_format(pool, ev, &len);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(len, strlen(expect));
    ck_assert_str_eq(out, expect);
}

START_TEST(format_canonical)
{
    cr_sse_event ev = { "message", "a\nb", 3, "1", 500, 0, NULL };
    apr_size_t len = 99;

    check_format(&ev, "id: 1\ndata: a\ndata: b\nretry: 500\n\n");
    ev = (cr_sse_event){ "stop", "{}", 2, NULL, -1, 4, NULL };
    check_format(&ev, "event: stop\ndata: {}\n\n");
    ev = (cr_sse_event){ "message", "", 0, NULL, -1, 0, NULL };
    check_format(&ev, "data: \n\n");
    ev = (cr_sse_event){ "message", "x\n", 2, "", 0, 0, NULL };
    check_format(&ev, "id: \ndata: x\ndata: \nretry: 0\n\n");
    ev = (cr_sse_event){ NULL, " lead", 5, " sp", -1, 0, NULL };
    check_format(&ev, "id:  sp\ndata:  lead\n\n");
    /* data NULL: only id and retry */
    ev = (cr_sse_event){ "message", NULL, 0, "5", 10, 0, NULL };
    check_format(&ev, "id: 5\nretry: 10\n\n");
    /* unrepresentable: CR/LF in id or type, CR in data */
    ev = (cr_sse_event){ "message", "a", 1, "1\n2", -1, 0, NULL };
    ck_assert_ptr_null(cr_sse_format(pool, &ev, &len));
    ck_assert_uint_eq(len, 0);
    ev = (cr_sse_event){ "stop\rx", "a", 1, NULL, -1, 0, NULL };
    ck_assert_ptr_null(cr_sse_format(pool, &ev, &len));
    ev = (cr_sse_event){ "message", "a\rb", 3, NULL, -1, 0, NULL };
    ck_assert_ptr_null(cr_sse_format(pool, &ev, &len));
}
END_TEST

START_TEST(format_comment)
{
    apr_size_t len = 0;
    ck_assert_str_eq(cr_sse_comment(pool, "hb", &len), ": hb\n\n");
    ck_assert_uint_eq(len, 6);
    ck_assert_str_eq(cr_sse_comment(pool, NULL, &len), ":\n\n");
    ck_assert_uint_eq(len, 3);
    ck_assert_str_eq(cr_sse_comment(pool, "", &len), ":\n\n");
    ck_assert_str_eq(cr_sse_comment(pool, "a\r\nb", &len), ": a  b\n\n");
    {
        rec_t r = { 0 };
        cr_sse_parser *ps;
        const char *c = cr_sse_comment(pool, "x\ndata: injected", &len);
        ck_assert_int_eq(parse_n(c, len, 0, &r, &ps), APR_SUCCESS);
        ck_assert_int_eq(r.n, 0);
        ck_assert_int_eq(cr_sse_comments_seen(ps), 1);
        ck_assert_int_eq(cr_sse_in_event(ps), 0);
        rec_free(&r);
    }
}
END_TEST

/* Re-emit every event of a stream, parse the re-emitted stream: same events. */
typedef struct {
    rec_t rec;
    rec_t out;
} rt_t;

static apr_status_t rt_cb(void *baton, const cr_sse_event *ev)
{
    rt_t *rt = baton;
    apr_size_t len;
    char *s = cr_sse_format(ev->pool, ev, &len);
    ck_assert_ptr_nonnull(s);
    rec_put(&rt->out, s, len);
    return rec_cb(&rt->rec, ev);
}

START_TEST(format_round_trip)
{
    static const char s[] =
        "data: plain\n\n"
        "id: 1\nevent: stop\ndata: {}\nretry: 7\n\n"
        "data\ndata\n\n"
        "data:  two spaces\ndata:\ndata: end\n\n"
        "id:  spaced id\ndata: x\n\n"
        "id\ndata: empty id\n\n"
        "event: with\0nul\ndata: a\0b\n\n"
        "event: message\ndata: explicit\n\n"
        "event: \xEF\xBB\xBFtype\ndata: \xEF\xBB\xBF\n\n"
        "data: a\rdata: b\r\n\r\n";
    rt_t rt;
    rec_t again = { 0 };

    memset(&rt, 0, sizeof(rt));
    ck_assert_int_eq(parse_n(s, sizeof(s) - 1, 0, &rt.rec, NULL), APR_SUCCESS);
    rec_free(&rt.rec);
    {
        cr_sse_parser *ps = cr_sse_parser_create(pool, 0);
        ck_assert_int_eq(cr_sse_feed(ps, s, sizeof(s) - 1, rt_cb, &rt), APR_SUCCESS);
    }
    ck_assert_int_eq(rt.rec.n, 10);
    /* canonical: LF only */
    ck_assert_ptr_null(memchr(rt.out.b, '\r', rt.out.len));
    ck_assert_int_eq(parse_n(rt.out.b, rt.out.len, 0, &again, NULL), APR_SUCCESS);
    ck_assert_str_eq(rec_str(&again), rec_str(&rt.rec));
    /* and formatting is idempotent */
    {
        rt_t rt2;
        cr_sse_parser *ps = cr_sse_parser_create(pool, 0);
        memset(&rt2, 0, sizeof(rt2));
        ck_assert_int_eq(cr_sse_feed(ps, rt.out.b, rt.out.len, rt_cb, &rt2), APR_SUCCESS);
        ck_assert_uint_eq(rt2.out.len, rt.out.len);
        ck_assert_int_eq(memcmp(rt2.out.b, rt.out.b, rt.out.len), 0);
        rec_free(&rt2.rec);
        rec_free(&rt2.out);
    }
    rec_free(&again);
    rec_free(&rt.rec);
    rec_free(&rt.out);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Memory over a long stream */

typedef struct {
    apr_size_t events, cleared, relayed, bytes;
    apr_size_t cap_at_1000;
    cr_sse_parser *ps;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    size_t heap_at_1000;
#endif
} mem_t;

static apr_status_t count_clear(void *data)
{
    ((mem_t *)data)->cleared++;
    return APR_SUCCESS;
}

static apr_status_t mem_cb(void *baton, const cr_sse_event *ev)
{
    mem_t *m = baton;
    apr_size_t len;
    int term;

    /* Everything the relay does per event, in the event's pool. */
    if (cr_sse_classify(ev->pool, ev, "o-1", &term) == CR_SSE_RELAY_ORDER) {
        m->relayed++;
    }
    ck_assert_ptr_nonnull(cr_sse_format(ev->pool, ev, &len));
    m->bytes += len;
    apr_pool_cleanup_register(ev->pool, m, count_clear, apr_pool_cleanup_null);
    m->events++;
    if (m->events == 1000) {
        m->cap_at_1000 = cr_sse_buffered_capacity(m->ps);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
        m->heap_at_1000 = mallinfo2().uordblks;
#endif
    }
    return APR_SUCCESS;
}

START_TEST(memory_bounded)
{
    mem_t m;
    apr_pool_t *sp;
    char chunk[4096];
    apr_size_t fill = 0, i;
    const apr_size_t N = 100000;

    memset(&m, 0, sizeof(m));
    apr_pool_create(&sp, pool);
    m.ps = cr_sse_parser_create(sp, 4096);
    for (i = 0; i < N; i++) {
        char ev[256];
        int n = snprintf(ev, sizeof(ev),
                         "id: %lu\r\n: hb\r\ndata: {\"order_id\":\"o-1\",\r\n"
                         "data: \"order_state\":\"%s\",\"n\":%lu}\r\n\r\n",
                         (unsigned long)i, (i % 3) ? "WaitingForPayment" : "PaymentReceived",
                         (unsigned long)i);
        /* fed in odd-sized chunks so lines straddle reads */
        if (fill + (apr_size_t)n > 1000 + (i % 7)) {
            ck_assert_int_eq(cr_sse_feed(m.ps, chunk, fill, mem_cb, &m), APR_SUCCESS);
            fill = 0;
        }
        memcpy(chunk + fill, ev, (size_t)n);
        fill += (apr_size_t)n;
    }
    ck_assert_int_eq(cr_sse_feed(m.ps, chunk, fill, mem_cb, &m), APR_SUCCESS);

    ck_assert_uint_eq(m.events, N);
    ck_assert_uint_eq(m.relayed, N);
    /* the event pool was cleared after every callback */
    ck_assert_uint_eq(m.cleared, N);
    /* the parser's buffers never grew past their early size and stay within
     * the bound; the input ends between blocks, where only the last-event-id
     * buffer (256 bytes for a short id) is kept: an idle stream holds no
     * line or data buffer */
    ck_assert_uint_le(cr_sse_buffered_capacity(m.ps), m.cap_at_1000);
    ck_assert_uint_eq(cr_sse_buffered_capacity(m.ps), 256);
    ck_assert_uint_le(cr_sse_buffered_capacity(m.ps), 4 * (4096 + 8));
    ck_assert_uint_eq(cr_sse_comments_seen(m.ps), N);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33)) \
    && !defined(__SANITIZE_ADDRESS__)
    /* nothing accumulates on the heap either (json objects, pool blocks) */
    ck_assert_uint_le(mallinfo2().uordblks, m.heap_at_1000 + 64 * 1024);
#endif
    apr_pool_destroy(sp);
}
END_TEST

/* ---------------------------------------------------------------------- */


/* Skip mode: an oversized block is dropped, the stream goes on; the result
 * is the same whatever the read boundaries. */
START_TEST(oversize_skip)
{
    static const char head[] = "data: {\"a\":1}\n\n: c\ndata: ";
    static const char tail[] = "\n\nid: 7\ndata: {\"b\":2}\n\n";
    size_t big = 300, n = sizeof(head) - 1 + big + sizeof(tail) - 1, cut;
    char *s = apr_palloc(pool, n);
    const char *want = NULL;

    memcpy(s, head, sizeof(head) - 1);
    memset(s + sizeof(head) - 1, 'x', big);
    memcpy(s + sizeof(head) - 1 + big, tail, sizeof(tail) - 1);
    for (cut = 0; cut <= n; cut += (cut < 40 || cut > n - 40) ? 1 : 17) {
        rec_t r = { 0 };
        cr_sse_parser *ps = cr_sse_parser_create(pool, 100);
        size_t cuts[1];
        cuts[0] = cut;
        cr_sse_parser_skip_oversize(ps, 1);
        ck_assert_int_eq(feed_split(ps, s, n, cuts, 1, &r), APR_SUCCESS);
        ck_assert_uint_eq(cr_sse_oversize_skipped(ps), 1);
        ck_assert_str_eq(cr_sse_last_event_id(ps), "7");
        if (!want) {
            want = apr_pstrdup(pool, rec_str(&r));
            /* the events before and after the big one, not the big one */
            ck_assert_ptr_nonnull(strstr(want, "{\"a\":1}"));
            ck_assert_ptr_nonnull(strstr(want, "{\"b\":2}"));
            ck_assert_ptr_null(strstr(want, "xxxx"));
        }
        else {
            ck_assert_str_eq(rec_str(&r), want);
        }
        rec_free(&r);
    }
    /* Without skip mode the same stream is an error, as before. */
    {
        rec_t r = { 0 };
        ck_assert_int_eq(parse_n(s, n, 100, &r, NULL), APR_ENOSPC);
        rec_free(&r);
    }
}
END_TEST

/* ---------------------------------------------------------------------- */
/* The relay: what a browser behind it sees, block by block. */

typedef struct {
    rec_t out;            /* the bytes sent to the browser */
    rec_t verdicts;       /* one letter per block */
} relay_rec_t;

static apr_status_t relay_cb(void *baton, cr_sse_out_kind v, const cr_sse_event *ev,
                             const char *out, apr_size_t len)
{
    relay_rec_t *rr = baton;
    static const char letters[] = "OSTMUZ";   /* order stop state malformed unknown oversize */
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_lt((int)v, (int)sizeof(letters) - 1);
    rec_put(&rr->verdicts, letters + v, 1);
    if (out) {
        rec_put(&rr->out, out, len);
    }
    return v == CR_SSE_OUT_STOP ? APR_EOF : APR_SUCCESS;
}

/* Relay s fed byte by byte and in one piece, by a relay in a pool and by
 * one on the heap (its event pools on an allocator of its own): the same
 * output every way. */
static void check_relay(const char *s, size_t n, size_t max_event, const char *want_out,
                        const char *want_verdicts)
{
    int pass;
    for (pass = 0; pass < 4; pass++) {
        relay_rec_t rr;
        apr_allocator_t *a = NULL;
        cr_sse_relay *rl;
        size_t i;
        apr_status_t rv = APR_SUCCESS;
        memset(&rr, 0, sizeof(rr));
        if (pass < 2) {
            rl = cr_sse_relay_create(pool, max_event, "o-1");
        }
        else {
            ck_assert_int_eq(apr_allocator_create(&a), APR_SUCCESS);
            rl = cr_sse_relay_create_heap(a, max_event, "o-1");
        }
        ck_assert_ptr_nonnull(rl);
        if (pass % 2 == 0) {
            rv = cr_sse_relay_feed(rl, s, n, relay_cb, &rr);
        }
        else {
            for (i = 0; i < n && rv == APR_SUCCESS; i++) {
                rv = cr_sse_relay_feed(rl, s + i, 1, relay_cb, &rr);
            }
        }
        ck_assert(rv == APR_SUCCESS || rv == APR_EOF);
        ck_assert_str_eq(rec_str(&rr.out), want_out);
        ck_assert_str_eq(rec_str(&rr.verdicts), want_verdicts);
        ck_assert_uint_le(cr_sse_buffered_capacity(cr_sse_relay_parser(rl)),
                          4 * ((max_event ? max_event : CR_SSE_DEFAULT_MAX_EVENT) + 8));
        if (a) {
            cr_sse_relay_destroy(rl);
            apr_allocator_destroy(a);
        }
        rec_free(&rr.out);
        rec_free(&rr.verdicts);
    }
}

#define ORDER_J "{\"order_id\":\"o-1\",\"order_state\":\"Done\"}"

/* An id in a block without data: a browser keeps it as lastEventId. */
START_TEST(relay_id_only_block)
{
    static const char s[] = "id: 7\n\ndata: " ORDER_J "\n\n";
    check_relay(s, sizeof(s) - 1, 0, "id: 7\n\ndata: " ORDER_J "\n\n", "TO");
    /* an empty id resets it, and that is relayed too */
    check_relay("id\n\n", 4, 0, "id: \n\n", "T");
    /* a block with only a comment or an event type sends nothing */
    check_relay(": hb\n\nevent: x\n\n", 16, 0, "", "");
}
END_TEST

/* The id of an event the relay drops is not lost with it. */
START_TEST(relay_dropped_event_keeps_id)
{
    static const char s[] = "id: 5\nevent: ping\ndata: {}\n\n"
                            "id: 6\ndata: not json\nretry: 900\n\n"
                            "data: " ORDER_J "\n\n";
    check_relay(s, sizeof(s) - 1, 0,
                "id: 5\n\nid: 6\nretry: 900\n\ndata: " ORDER_J "\n\n", "UMO");
    /* a dropped event without id or retry sends nothing */
    check_relay("event: ping\ndata: {}\n\n", 22, 0, "", "U");
    /* a data-less stop block is no stop: a browser dispatches nothing */
    check_relay("event: stop\nid: 3\n\n", 19, 0, "id: 3\n\n", "T");
}
END_TEST

/* retry in a block of its own. */
START_TEST(relay_retry_block)
{
    static const char s[] = "retry: 500\n\ndata: " ORDER_J "\n\n";
    check_relay(s, sizeof(s) - 1, 0, "retry: 500\n\ndata: " ORDER_J "\n\n", "TO");
    /* an invalid retry is nothing */
    check_relay("retry: 5x\n\n", 11, 0, "", "");
}
END_TEST

/* A long comment (or unknown field) does not count toward the cap and is
 * never buffered: the order event after it is relayed. */
START_TEST(relay_long_comment)
{
    size_t big = 300 * 1024, n;
    static const char tail[] = "\nid: 8\ndata: " ORDER_J "\n\n";
    char *s = malloc(big + 64 + sizeof(tail));
    const char *kinds[] = { ": ", "x-unknown: ", "dataX" };
    int k;

    for (k = 0; k < 3; k++) {
        size_t h = strlen(kinds[k]);
        memcpy(s, kinds[k], h);
        memset(s + h, 'c', big);
        memcpy(s + h + big, tail, sizeof(tail) - 1);
        n = h + big + sizeof(tail) - 1;
        check_relay(s, n, 0, "id: 8\ndata: " ORDER_J "\n\n", "O");
    }
    free(s);
}
END_TEST

/* An oversized event is dropped but its id (before or after the data) and
 * retry are relayed; the stream goes on. */
START_TEST(relay_oversize_keeps_state)
{
    static const char head[] = "id: 9\ndata: ";
    static const char tail[] = "\nretry: 700\n\nid: 10\ndata: " ORDER_J "\n\n";
    size_t big = 200, n = sizeof(head) - 1 + big + sizeof(tail) - 1;
    char *s = apr_palloc(pool, n);

    memcpy(s, head, sizeof(head) - 1);
    memset(s + sizeof(head) - 1, 'x', big);
    memcpy(s + sizeof(head) - 1 + big, tail, sizeof(tail) - 1);
    check_relay(s, n, 100, "id: 9\nretry: 700\n\nid: 10\ndata: " ORDER_J "\n\n", "ZO");
    /* an id after the oversized data still counts */
    check_relay("data: 0123456789\nid: 4\n\n", 24, 5, "id: 4\n\n", "Z");
    /* and without id or retry the oversized block is reported, sending nothing */
    check_relay("data: 0123456789\n\n", 18, 5, "", "Z");
}
END_TEST

/* report_state is off by default: plain parser callers see data events only. */
START_TEST(report_state_default_off)
{
    CHECK_PARSE("id: 1\n\nretry: 5\n\ndata: a\n\n", "message|~|-1|a\n");
}
END_TEST

static Suite *sse_suite(void)
{
    Suite *s = suite_create("sse");
    TCase *tc;

    tc = tcase_create("fields");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, basic_message);
    tcase_add_test(tc, oversize_skip);
    tcase_add_test(tc, field_value_space);
    tcase_add_test(tc, multiline_data);
    tcase_add_test(tc, event_type);
    tcase_add_test(tc, unknown_fields);
    tcase_add_test(tc, id_rules);
    tcase_add_test(tc, retry_rules);
    tcase_add_test(tc, comments);
    tcase_add_test(tc, empty_data_not_dispatched);
    tcase_add_test(tc, unterminated_discarded);
    suite_add_tcase(s, tc);

    tc = tcase_create("lines");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, line_ends);
    tcase_add_test(tc, crlf_split_across_reads);
    tcase_add_test(tc, bom);
    tcase_add_test(tc, split_whole);
    tcase_add_test(tc, split_byte_by_byte);
    tcase_add_test(tc, split_two_way);
    tcase_add_test(tc, split_three_way);
    suite_add_tcase(s, tc);

    tc = tcase_create("bounds");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, oversize);
    tcase_add_test(tc, oversize_split_invariant);
    tcase_add_test(tc, callback_error_stops);
    tcase_add_test(tc, long_line_linear);
    tcase_add_test(tc, memory_bounded);
    suite_add_tcase(s, tc);

    tc = tcase_create("policy");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, classify_orders);
    tcase_add_test(tc, classify_malformed);
    tcase_add_test(tc, classify_stop_and_unknown);
    tcase_add_test(tc, order_states);
    tcase_add_test(tc, classify_stream);
    suite_add_tcase(s, tc);

    tc = tcase_create("format");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, format_canonical);
    tcase_add_test(tc, format_comment);
    tcase_add_test(tc, format_round_trip);
    suite_add_tcase(s, tc);

    tc = tcase_create("relay");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, relay_id_only_block);
    tcase_add_test(tc, relay_dropped_event_keeps_id);
    tcase_add_test(tc, relay_retry_block);
    tcase_add_test(tc, relay_long_comment);
    tcase_add_test(tc, relay_oversize_keeps_state);
    tcase_add_test(tc, report_state_default_off);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    apr_initialize();
    sr = srunner_create(sse_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    apr_terminate();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
