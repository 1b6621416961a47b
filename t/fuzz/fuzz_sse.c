/* The SSE parser and re-emitter (cr_sse), as the order-stream relay runs
 * them on an upstream stream.  The input's first byte picks the read size
 * (1..64 bytes) and the oversize mode; the rest is the stream.  Checks:
 *  - feeding in pieces dispatches exactly the events of one whole feed
 *    (CR LF split across reads, lines carried over);
 *  - every event the parser dispatches can be re-emitted, and re-parsing
 *    that canonical form gives the same event back (type, data, id, retry);
 *  - the parser's buffers stay within a small multiple of max_event;
 *  - classifying an event never crashes, with and without an expected id. */
#include <string.h>

#include "fuzz_common.h"
#include "cr_sse.h"

#define MAX_EVENT 1024
#define MAX_SEEN 4096

typedef struct {
    apr_pool_t *p;
    apr_size_t n;
    apr_uint32_t sums[MAX_SEEN];   /* a digest per event, to compare the two feeds */
} seen_t;

static apr_uint32_t digest(const cr_sse_event *ev)
{
    apr_uint32_t h = 2166136261u;
    apr_size_t k, tl = ev->type_len ? ev->type_len : strlen(ev->type);
    for (k = 0; k < tl; k++) h = (h ^ (unsigned char)ev->type[k]) * 16777619u;
    h = (h ^ 0x100) * 16777619u;
    for (k = 0; k < ev->data_len; k++) h = (h ^ (unsigned char)ev->data[k]) * 16777619u;
    h = (h ^ 0x200) * 16777619u;
    for (k = 0; ev->id && ev->id[k]; k++) h = (h ^ (unsigned char)ev->id[k]) * 16777619u;
    h = (h ^ (ev->id ? 0x300u : 0x400u)) * 16777619u;
    return (h ^ (apr_uint32_t)ev->retry) * 16777619u;
}

typedef struct {
    const cr_sse_event *want;
    int got;
} again_t;

static apr_status_t on_again(void *baton, const cr_sse_event *ev)
{
    again_t *a = baton;
    const cr_sse_event *w = a->want;
    apr_size_t wl = w->type_len ? w->type_len : strlen(w->type);
    apr_size_t gl = ev->type_len ? ev->type_len : strlen(ev->type);
    a->got++;
    FUZZ_ASSERT(a->got == 1, "re-emitted event parsed as %d events", a->got);
    FUZZ_ASSERT(wl == gl && memcmp(w->type, ev->type, wl) == 0, "type changed");
    FUZZ_ASSERT(w->data_len == ev->data_len && memcmp(w->data, ev->data, w->data_len) == 0,
                "data changed");
    FUZZ_ASSERT((!w->id && !ev->id) || (w->id && ev->id && strcmp(w->id, ev->id) == 0),
                "id changed: %s -> %s", w->id ? w->id : "(none)", ev->id ? ev->id : "(none)");
    FUZZ_ASSERT(w->retry == ev->retry, "retry changed: %ld -> %ld", w->retry, ev->retry);
    return APR_SUCCESS;
}

static apr_status_t on_event(void *baton, const cr_sse_event *ev)
{
    seen_t *s = baton;
    apr_size_t len = 0;
    char *out;
    int terminal = -1;

    FUZZ_ASSERT(ev->pool != NULL, "no scratch pool");
    FUZZ_ASSERT(ev->data && ev->data[ev->data_len] == '\0', "data not NUL-terminated");
    if (s->n < MAX_SEEN) {
        s->sums[s->n] = digest(ev);
    }
    s->n++;
    out = cr_sse_format(ev->pool, ev, &len);
    FUZZ_ASSERT(out != NULL, "a parsed event can't be re-emitted");
    {
        again_t a = { ev, 0 };
        cr_sse_parser *ps = cr_sse_parser_create(ev->pool, len + 16);
        FUZZ_ASSERT(cr_sse_feed(ps, out, len, on_again, &a) == APR_SUCCESS, "re-emitted form refused");
        FUZZ_ASSERT(a.got == 1, "re-emitted event parsed as %d events", a.got);
    }
    (void)cr_sse_classify(ev->pool, ev, NULL, &terminal);
    (void)cr_sse_classify(ev->pool, ev, "ord_1", NULL);
    return APR_SUCCESS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    const char *buf;
    apr_size_t n, step, off, len = 0;
    int skip;
    seen_t *whole, *parts;
    cr_sse_parser *a, *b;
    apr_status_t sa, sb;

    if (size < 1) {
        return 0;
    }
    step = (apr_size_t)(data[0] & 0x3F) + 1;
    skip = (data[0] & 0x40) != 0;
    buf = (const char *)data + 1;
    n = size - 1;

    whole = apr_pcalloc(p, sizeof(*whole));
    parts = apr_pcalloc(p, sizeof(*parts));
    a = cr_sse_parser_create(p, MAX_EVENT);
    b = cr_sse_parser_create(p, MAX_EVENT);
    cr_sse_parser_skip_oversize(a, skip);
    cr_sse_parser_skip_oversize(b, skip);
    sa = cr_sse_feed(a, buf, n, on_event, whole);
    sb = APR_SUCCESS;
    for (off = 0; off < n && sb == APR_SUCCESS; off += step) {
        sb = cr_sse_feed(b, buf + off, n - off < step ? n - off : step, on_event, parts);
        FUZZ_ASSERT(cr_sse_buffered_capacity(b) <= 8 * MAX_EVENT + 256,
                    "parser holds %zu bytes", (size_t)cr_sse_buffered_capacity(b));
    }
    FUZZ_ASSERT(sa == sb, "whole feed %d, pieces %d", sa, sb);
    if (sa == APR_SUCCESS) {
        FUZZ_ASSERT(whole->n == parts->n, "%zu events whole, %zu in pieces",
                    (size_t)whole->n, (size_t)parts->n);
        FUZZ_ASSERT(memcmp(whole->sums, parts->sums,
                           sizeof(apr_uint32_t) * (whole->n < MAX_SEEN ? whole->n : MAX_SEEN)) == 0,
                    "events differ between whole and pieces");
        FUZZ_ASSERT(strcmp(cr_sse_last_event_id(a), cr_sse_last_event_id(b)) == 0, "last id differs");
        FUZZ_ASSERT(cr_sse_retry(a) == cr_sse_retry(b), "retry differs");
        FUZZ_ASSERT(cr_sse_in_event(a) == cr_sse_in_event(b), "in_event differs");
        FUZZ_ASSERT(cr_sse_comments_seen(a) == cr_sse_comments_seen(b), "comments differ");
    }
    (void)cr_sse_comment(p, n ? apr_pstrmemdup(p, buf, n) : NULL, &len);
    apr_pool_clear(p);
    return 0;
}
