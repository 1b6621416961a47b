/* The HTTP/1.1 response parser (cr_h1), as the upstream client runs it on
 * whatever a socket gives.  The input's first byte picks the read size
 * (1..64 bytes), whether the request was HEAD and whether the connection
 * closes after the input; the rest is the answer.  Checks:
 *  - feeding in pieces gives exactly the result of one whole feed: the same
 *    return code, bytes taken, status, head, body bytes and body digest;
 *  - body spans lie inside the fed buffer and add up to cr_h1_body_bytes;
 *  - the parser holds no buffer once the head is parsed, and never more
 *    than CR_H1_MAX_HEAD bytes;
 *  - after an error or DONE, feeding more changes nothing. */
#include <string.h>

#include "fuzz_common.h"
#include "cr_h1.h"

typedef struct {
    const char *lo, *hi;       /* the buffer being fed now */
    int heads;
    int status;
    int keep_alive;
    long long content_length;
    unsigned long long body;
    apr_uint32_t sum;
} seen_t;

static int on_head(void *b, const cr_h1_head *h)
{
    seen_t *s = b;
    s->heads++;
    s->status = h->status;
    s->keep_alive = h->keep_alive;
    s->content_length = h->content_length;
    FUZZ_ASSERT(h->status >= 100 && h->status <= 999 && h->status != 101, "status %d", h->status);
    FUZZ_ASSERT(!h->content_type || h->content_type_len < CR_H1_MAX_HEAD, "content type length");
    return 0;
}

static int on_body(void *b, const char *d, size_t n)
{
    seen_t *s = b;
    size_t k;
    FUZZ_ASSERT(n > 0 && d >= s->lo && d + n <= s->hi, "body span outside the fed buffer");
    for (k = 0; k < n; k++) s->sum = (s->sum ^ (unsigned char)d[k]) * 16777619u;
    s->body += n;
    return 0;
}

static const cr_h1_callbacks cbs = { NULL, on_head, on_body };

static int feed(cr_h1_parser *ps, seen_t *s, const char *buf, size_t n, size_t *used)
{
    s->lo = buf;
    s->hi = buf + n;
    return cr_h1_feed(ps, buf, n, used);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cr_h1_parser a, b;
    seen_t sa, sb;
    const char *buf;
    size_t n, step, off, used_a = 0, used_b = 0, u;
    int head_req, eof, ra, rb;

    if (size < 1) {
        return 0;
    }
    step = (size_t)(data[0] & 0x3F) + 1;
    head_req = (data[0] & 0x40) != 0;
    eof = (data[0] & 0x80) != 0;
    buf = (const char *)data + 1;
    n = size - 1;
    memset(&sa, 0, sizeof(sa));
    memset(&sb, 0, sizeof(sb));
    sa.sum = sb.sum = 2166136261u;

    cr_h1_parser_init(&a, &cbs, &sa, head_req);
    cr_h1_parser_init(&b, &cbs, &sb, head_req);
    ra = n ? feed(&a, &sa, buf, n, &used_a) : CR_H1_MORE;
    if (ra == CR_H1_MORE && eof) {
        ra = cr_h1_eof(&a);
    }
    rb = CR_H1_MORE;
    for (off = 0; off < n && rb == CR_H1_MORE; off += u) {
        size_t k = n - off < step ? n - off : step;
        u = 0;
        rb = feed(&b, &sb, buf + off, k, &u);
        FUZZ_ASSERT(u <= k, "took %zu of %zu", u, k);
        FUZZ_ASSERT(rb != CR_H1_MORE || u == k, "MORE but took %zu of %zu", u, k);
        FUZZ_ASSERT(cr_h1_buffered(&b) <= CR_H1_MAX_HEAD, "holds %zu", cr_h1_buffered(&b));
        if (cr_h1_head_done(&b)) {
            FUZZ_ASSERT(cr_h1_buffered(&b) == 0, "a buffer held after the head");
        }
        used_b += u;
        if (u == 0 && rb == CR_H1_MORE) {
            break;
        }
    }
    if (rb == CR_H1_MORE && eof) {
        rb = cr_h1_eof(&b);
    }
    FUZZ_ASSERT(ra == rb, "whole %d (%s), pieces %d (%s)", ra, cr_h1_strerror(ra), rb, cr_h1_strerror(rb));
    FUZZ_ASSERT(sa.heads == sb.heads && sa.heads <= 1, "heads %d / %d", sa.heads, sb.heads);
    FUZZ_ASSERT(sa.status == sb.status, "status %d / %d", sa.status, sb.status);
    FUZZ_ASSERT(sa.body == cr_h1_body_bytes(&a) && sb.body == cr_h1_body_bytes(&b), "body count");
    if (ra == CR_H1_DONE) {
        FUZZ_ASSERT(used_a == used_b, "took %zu whole, %zu in pieces", used_a, used_b);
        FUZZ_ASSERT(sa.body == sb.body && sa.sum == sb.sum, "bodies differ");
        FUZZ_ASSERT(sa.keep_alive == sb.keep_alive, "keep-alive differs");
        FUZZ_ASSERT(sa.content_length < 0 || head_req || sa.status == 204 || sa.status == 304
                    || sa.body == (unsigned long long)sa.content_length, "body %llu of length %lld",
                    sa.body, sa.content_length);
        FUZZ_ASSERT(feed(&a, &sa, buf, n, &u) == CR_H1_DONE && u == 0, "not done after done");
    }
    else if (ra < 0) {
        FUZZ_ASSERT(feed(&a, &sa, buf, n, &u) == ra, "an error went away");
        FUZZ_ASSERT(cr_h1_buffered(&a) == 0, "a buffer held after an error");
    }
    cr_h1_parser_release(&a);
    cr_h1_parser_release(&b);
    return 0;
}
