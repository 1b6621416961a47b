/* SPDX-License-Identifier: Apache-2.0 */
/* SSE parser, canonical re-emitter and order-stream policy (see cr_sse.h).
 *
 * Memory: the parser's four growable buffers (carried partial line, data,
 * event type, last-event-id) are malloc'd and freed by a cleanup of the
 * parser's pool, not allocated from it: growing a pool buffer by doubling
 * would leave every old copy in the pool.  Each buffer's capacity is capped
 * at max_event + 2, and it only grows when a line needs it, so a stream of
 * small events never allocates after the first few.  Per-event allocations
 * (by the callback) go to ev->pool, cleared after every callback. */
#include <assert.h>
#include <string.h>
#include <stdlib.h>
#include <limits.h>
#include <apr_strings.h>

#include "cr_sse.h"
#include "cr_json.h"

typedef struct {
    char *b;
    apr_size_t len;
    apr_size_t cap;
} sse_buf;

struct cr_sse_parser {
    apr_pool_t *pool;
    apr_pool_t *evpool;          /* cleared after each callback */
    apr_size_t max_event;
    apr_status_t err;            /* sticky: once set, feeds return it */

    int bom;                     /* bytes of a leading BOM matched so far; -1 when past it */
    int skip_lf;                 /* last line ended with CR: an LF next is part of it */

    sse_buf line;                /* partial line carried to the next feed: no CR/LF in it */
    sse_buf data;                /* data buffer, each line followed by LF */
    sse_buf type;                /* event type buffer */
    sse_buf lastid;              /* last-event-id buffer: outlives blocks */

    apr_size_t block_bytes;      /* bytes of the current block's complete lines */
    int block_id;                /* this block set the id */
    long block_retry;            /* this block's retry, -1 if none */
    long retry;                  /* stream's reconnection time, -1 if none */

    apr_size_t comments;
    apr_size_t events;

    int skip_oversize;           /* discard oversized blocks instead of failing */
    int skipping;                /* inside a discarded block: up to its blank line */
    int skip_partial;            /* skipping, and the current line is not empty */
    apr_size_t oversize;         /* blocks discarded */
};

static const unsigned char bom_bytes[3] = { 0xEF, 0xBB, 0xBF };

static apr_status_t parser_free(void *data)
{
    cr_sse_parser *ps = data;
    free(ps->line.b);
    free(ps->data.b);
    free(ps->type.b);
    free(ps->lastid.b);
    ps->line.b = ps->data.b = ps->type.b = ps->lastid.b = NULL;
    return APR_SUCCESS;
}

/* Make room for need bytes plus a NUL.  need never exceeds max_event + 1
 * (the caller checked the block bound first), so the cap is max_event + 2. */
static apr_status_t buf_reserve(cr_sse_parser *ps, sse_buf *sb, apr_size_t need)
{
    apr_size_t limit = ps->max_event + 2, ncap;
    char *nb;

    if (need + 1 <= sb->cap) {
        return APR_SUCCESS;
    }
    if (need + 1 > limit) {
        return APR_ENOSPC;
    }
    ncap = sb->cap ? sb->cap : 256;
    while (ncap < need + 1) {
        ncap = (ncap > limit / 2) ? limit : ncap * 2;
    }
    if (ncap > limit) {
        ncap = limit;
    }
    nb = realloc(sb->b, ncap);
    if (!nb) {
        return APR_ENOMEM;
    }
    sb->b = nb;
    sb->cap = ncap;
    return APR_SUCCESS;
}

static apr_status_t buf_append(cr_sse_parser *ps, sse_buf *sb, const char *s, apr_size_t n)
{
    apr_status_t rv = buf_reserve(ps, sb, sb->len + n);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    if (n) {
        memcpy(sb->b + sb->len, s, n);
    }
    sb->len += n;
    sb->b[sb->len] = '\0';
    return APR_SUCCESS;
}

static apr_status_t buf_set(cr_sse_parser *ps, sse_buf *sb, const char *s, apr_size_t n)
{
    sb->len = 0;
    return buf_append(ps, sb, s, n);
}

cr_sse_parser *cr_sse_parser_create(apr_pool_t *p, apr_size_t max_event)
{
    cr_sse_parser *ps = apr_pcalloc(p, sizeof(*ps));

    ps->pool = p;
    ps->max_event = max_event ? max_event : CR_SSE_DEFAULT_MAX_EVENT;
    /* Keep max_event + 2 and the doubling from overflowing. */
    if (ps->max_event > APR_SIZE_MAX / 4) {
        ps->max_event = APR_SIZE_MAX / 4;
    }
    ps->err = APR_SUCCESS;
    ps->bom = 0;
    ps->block_retry = -1;
    ps->retry = -1;
    if (apr_pool_create(&ps->evpool, p) != APR_SUCCESS) {
        return NULL;
    }
    apr_pool_cleanup_register(p, ps, parser_free, apr_pool_cleanup_null);
    return ps;
}

/* retry: the value must be one or more ASCII digits; a value that doesn't
 * fit a long can't be a reconnection time, so it is ignored too. */
static int parse_retry(const char *v, apr_size_t n, long *out)
{
    long r = 0;
    apr_size_t i;

    if (n == 0) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        int d;
        if (v[i] < '0' || v[i] > '9') {
            return 0;
        }
        d = v[i] - '0';
        if (r > (LONG_MAX - d) / 10) {
            return 0;
        }
        r = r * 10 + d;
    }
    *out = r;
    return 1;
}

static void block_reset(cr_sse_parser *ps)
{
    ps->data.len = 0;
    ps->type.len = 0;
    ps->block_bytes = 0;
    ps->block_id = 0;
    ps->block_retry = -1;
}

/* The current block went over max_event: APR_ENOSPC, or in skip mode drop
 * what it buffered and skip to its end.  in_line: the bytes that crossed the
 * bound are part of a line that has not ended yet. */
static apr_status_t oversize(cr_sse_parser *ps, int in_line)
{
    if (!ps->skip_oversize) {
        return APR_ENOSPC;
    }
    block_reset(ps);
    ps->line.len = 0;
    ps->skipping = 1;
    ps->skip_partial = in_line;
    ps->oversize++;
    return APR_SUCCESS;
}

/* A blank line: the "dispatch the event" steps. */
static apr_status_t dispatch(cr_sse_parser *ps, cr_sse_event_fn cb, void *baton)
{
    cr_sse_event ev;
    apr_status_t rv = APR_SUCCESS;

    if (ps->data.len == 0) {
        /* Nothing to dispatch; the id already went to the last-event-id
         * buffer when its line was read. */
        block_reset(ps);
        return APR_SUCCESS;
    }
    /* The data buffer always ends with the LF appended after its last line. */
    ps->data.len--;
    ps->data.b[ps->data.len] = '\0';

    memset(&ev, 0, sizeof(ev));
    if (ps->type.len) {
        ev.type = ps->type.b;
        ev.type_len = ps->type.len;
    }
    else {
        ev.type = "message";
        ev.type_len = sizeof("message") - 1;
    }
    ev.data = ps->data.b;
    ev.data_len = ps->data.len;
    ev.id = ps->block_id ? (ps->lastid.b ? ps->lastid.b : "") : NULL;
    ev.retry = ps->block_retry;
    ev.pool = ps->evpool;

    ps->events++;
    if (cb) {
        rv = cb(baton, &ev);
    }
    apr_pool_clear(ps->evpool);
    block_reset(ps);
    return rv;
}

/* One complete line (no CR/LF in it), from the caller's buffer or the carry. */
static apr_status_t process_line(cr_sse_parser *ps, const char *l, apr_size_t n,
                                 cr_sse_event_fn cb, void *baton)
{
    const char *colon, *v;
    apr_size_t nlen, vlen;

    if (n == 0) {
        return dispatch(ps, cb, baton);
    }
    /* The bound counts the line and its line end. */
    if (ps->block_bytes > ps->max_event || n + 1 > ps->max_event - ps->block_bytes) {
        return oversize(ps, 0);
    }
    ps->block_bytes += n + 1;

    if (l[0] == ':') {
        ps->comments++;
        return APR_SUCCESS;
    }
    colon = memchr(l, ':', n);
    if (colon) {
        nlen = (apr_size_t)(colon - l);
        v = colon + 1;
        vlen = n - nlen - 1;
        if (vlen && v[0] == ' ') {
            v++;
            vlen--;
        }
    }
    else {
        nlen = n;
        v = "";
        vlen = 0;
    }

    if (nlen == 4 && memcmp(l, "data", 4) == 0) {
        apr_status_t rv = buf_append(ps, &ps->data, v, vlen);
        return rv == APR_SUCCESS ? buf_append(ps, &ps->data, "\n", 1) : rv;
    }
    if (nlen == 5 && memcmp(l, "event", 5) == 0) {
        return buf_set(ps, &ps->type, v, vlen);
    }
    if (nlen == 2 && memcmp(l, "id", 2) == 0) {
        apr_status_t rv;
        if (memchr(v, '\0', vlen)) {
            return APR_SUCCESS;
        }
        rv = buf_set(ps, &ps->lastid, v, vlen);
        if (rv == APR_SUCCESS) {
            ps->block_id = 1;
        }
        return rv;
    }
    if (nlen == 5 && memcmp(l, "retry", 5) == 0) {
        long r;
        if (parse_retry(v, vlen, &r)) {
            ps->block_retry = r;
            ps->retry = r;
        }
        return APR_SUCCESS;
    }
    /* Any other field is ignored. */
    return APR_SUCCESS;
}

/* Carry part of a line over to the next feed, enforcing the block bound
 * now (the line will cost its bytes plus a line end) so the carry never
 * outgrows max_event. */
static apr_status_t carry(cr_sse_parser *ps, const char *s, apr_size_t n)
{
    if (ps->block_bytes > ps->max_event
        || ps->line.len + n + 1 > ps->max_event - ps->block_bytes) {
        return oversize(ps, 1);
    }
    return buf_append(ps, &ps->line, s, n);
}

static apr_status_t feed(cr_sse_parser *ps, const char *buf, apr_size_t len,
                         cr_sse_event_fn cb, void *baton)
{
    apr_size_t i = 0;
    apr_status_t rv;

    /* The decoder strips one BOM at the very start of the stream; it may
     * arrive split over several reads.  A partial match that fails is
     * ordinary line content. */
    while (ps->bom >= 0 && i < len) {
        if ((unsigned char)buf[i] == bom_bytes[ps->bom]) {
            i++;
            if (++ps->bom == 3) {
                ps->bom = -1;
            }
        }
        else {
            int matched = ps->bom;
            ps->bom = -1;
            if (matched && (rv = carry(ps, (const char *)bom_bytes, (apr_size_t)matched)) != APR_SUCCESS) {
                return rv;
            }
        }
    }

    while (i < len) {
        apr_size_t j;

        if (ps->skip_lf) {
            ps->skip_lf = 0;
            if (buf[i] == '\n') {
                if (++i == len) {
                    break;
                }
            }
        }
        /* Only the new bytes are scanned: the carry holds no line end. */
        for (j = i; j < len && buf[j] != '\n' && buf[j] != '\r'; j++)
            ;
        if (ps->skipping) {
            /* Discarding an oversized block: only look for its blank line. */
            if (j == len) {
                ps->skip_partial |= j > i;
                return APR_SUCCESS;
            }
            if (buf[j] == '\r') {
                ps->skip_lf = 1;
            }
            if (!ps->skip_partial && j == i) {
                ps->skipping = 0;
                block_reset(ps);
            }
            ps->skip_partial = 0;
            i = j + 1;
            continue;
        }
        if (j == len) {
            return carry(ps, buf + i, len - i);
        }
        if (buf[j] == '\r') {
            ps->skip_lf = 1;
        }
        if (ps->line.len) {
            if ((rv = carry(ps, buf + i, j - i)) != APR_SUCCESS) {
                return rv;
            }
            if (ps->skipping) {
                /* This line made the block too large: it ends here. */
                ps->skip_partial = 0;
                i = j + 1;
                continue;
            }
            rv = process_line(ps, ps->line.b, ps->line.len, cb, baton);
            ps->line.len = 0;
        }
        else {
            rv = process_line(ps, buf + i, j - i, cb, baton);
        }
        if (rv != APR_SUCCESS) {
            return rv;
        }
        i = j + 1;
    }
    return APR_SUCCESS;
}

apr_status_t cr_sse_feed(cr_sse_parser *ps, const char *buf, apr_size_t len,
                         cr_sse_event_fn cb, void *baton)
{
    if (ps->err != APR_SUCCESS) {
        return ps->err;
    }
    if (len == 0) {
        return APR_SUCCESS;
    }
    ps->err = feed(ps, buf, len, cb, baton);
    return ps->err;
}

const char *cr_sse_last_event_id(cr_sse_parser *ps)
{
    return ps->lastid.b ? ps->lastid.b : "";
}

apr_size_t cr_sse_comments_seen(cr_sse_parser *ps)
{
    return ps->comments;
}

long cr_sse_retry(cr_sse_parser *ps)
{
    return ps->retry;
}

apr_size_t cr_sse_events_seen(cr_sse_parser *ps)
{
    return ps->events;
}

int cr_sse_in_event(cr_sse_parser *ps)
{
    return ps->line.len != 0 || ps->block_bytes != 0 || (ps->bom > 0) || ps->skipping;
}

void cr_sse_parser_skip_oversize(cr_sse_parser *ps, int on)
{
    ps->skip_oversize = on != 0;
}

apr_size_t cr_sse_oversize_skipped(cr_sse_parser *ps)
{
    return ps->oversize;
}

apr_size_t cr_sse_buffered_capacity(cr_sse_parser *ps)
{
    return ps->line.cap + ps->data.cap + ps->type.cap + ps->lastid.cap;
}

/* ---------------------------------------------------------------------- */

static apr_size_t ev_type_len(const cr_sse_event *ev)
{
    if (!ev->type) {
        return 0;
    }
    return ev->type_len ? ev->type_len : strlen(ev->type);
}

static int has_crlf(const char *s, apr_size_t n)
{
    return memchr(s, '\r', n) || memchr(s, '\n', n);
}

char *cr_sse_format(apr_pool_t *p, const cr_sse_event *ev, apr_size_t *len)
{
    apr_size_t tlen = ev_type_len(ev), idlen = ev->id ? strlen(ev->id) : 0;
    int is_message = tlen == 0 || (tlen == 7 && memcmp(ev->type, "message", 7) == 0);
    apr_size_t nlines = 0, total, k;
    char retry[32];
    apr_size_t rlen = 0;
    char *out, *o;

    *len = 0;
    if ((ev->type && has_crlf(ev->type, tlen)) || (ev->id && has_crlf(ev->id, idlen))
        || (ev->data && memchr(ev->data, '\r', ev->data_len))) {
        return NULL;
    }
    total = 1;                                   /* the blank line */
    if (ev->id) {
        total += 4 + idlen + 1;                  /* "id: " .. "\n" */
    }
    if (!is_message) {
        total += 7 + tlen + 1;                   /* "event: " .. "\n" */
    }
    if (ev->data) {
        nlines = 1;
        for (k = 0; k < ev->data_len; k++) {
            nlines += ev->data[k] == '\n';
        }
        /* "data: " and "\n" per line; the LFs between lines are reused. */
        total += nlines * 6 + ev->data_len + 1;
    }
    if (ev->retry >= 0) {
        rlen = (apr_size_t)apr_snprintf(retry, sizeof(retry), "retry: %ld\n", ev->retry);
        total += rlen;
    }

    o = out = apr_palloc(p, total + 1);
    if (ev->id) {
        memcpy(o, "id: ", 4); o += 4;
        memcpy(o, ev->id, idlen); o += idlen;
        *o++ = '\n';
    }
    if (!is_message) {
        memcpy(o, "event: ", 7); o += 7;
        memcpy(o, ev->type, tlen); o += tlen;
        *o++ = '\n';
    }
    if (ev->data) {
        const char *s = ev->data, *end = ev->data + ev->data_len;
        for (;;) {
            const char *nl = memchr(s, '\n', (apr_size_t)(end - s));
            apr_size_t n = nl ? (apr_size_t)(nl - s) : (apr_size_t)(end - s);
            memcpy(o, "data: ", 6); o += 6;
            memcpy(o, s, n); o += n;
            *o++ = '\n';
            if (!nl) {
                break;
            }
            s = nl + 1;
        }
    }
    if (rlen) {
        memcpy(o, retry, rlen); o += rlen;
    }
    *o++ = '\n';
    *o = '\0';
    *len = (apr_size_t)(o - out);
    assert(*len == total);
    return out;
}

char *cr_sse_comment(apr_pool_t *p, const char *text, apr_size_t *len)
{
    apr_size_t n = text ? strlen(text) : 0, k;
    char *out;

    if (n == 0) {
        *len = 3;
        return apr_pstrmemdup(p, ":\n\n", 3);
    }
    out = apr_palloc(p, n + 5);
    out[0] = ':';
    out[1] = ' ';
    for (k = 0; k < n; k++) {
        out[2 + k] = (text[k] == '\r' || text[k] == '\n') ? ' ' : text[k];
    }
    out[n + 2] = '\n';
    out[n + 3] = '\n';
    out[n + 4] = '\0';
    *len = n + 4;
    return out;
}

/* ---------------------------------------------------------------------- */

static const char *const known_states[] = {
    "WaitingForPayment", "WaitingForDelivery", "Done", "Created", "PaymentStarted",
    "PartialPaymentStarted", "PaymentReceived", "Expired", "Canceled", "Cancelled",
    "WaitingForManualAction", "PaymentFailed", "PaymentSetupFailed", "Refunded",
};

static const char *const terminal_states[] = {
    "Done", "Expired", "Canceled", "Cancelled", "PaymentFailed", "PaymentSetupFailed",
    "Refunded",
};

static int in_list(const char *s, const char *const *list, apr_size_t n)
{
    apr_size_t i;
    if (!s) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (strcmp(s, list[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

int cr_order_state_known(const char *s)
{
    return in_list(s, known_states, sizeof(known_states) / sizeof(known_states[0]));
}

int cr_order_state_terminal(const char *s)
{
    return in_list(s, terminal_states, sizeof(terminal_states) / sizeof(terminal_states[0]));
}

/* An unknown state is relayed only if it looks like one: an identifier. */
static int state_shaped(const char *s, apr_size_t n)
{
    apr_size_t i;
    if (n == 0 || n > 64 || !((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z'))) {
        return 0;
    }
    for (i = 1; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
              || c == '_')) {
            return 0;
        }
    }
    return 1;
}

/* A string member without an embedded NUL (json-c keeps "\u0000" inside). */
static const char *get_cstring(json_object *obj, const char *key, apr_size_t *n)
{
    json_object *v = cr_json_get(obj, key);
    const char *s;
    int len;

    if (!v || !json_object_is_type(v, json_type_string)) {
        return NULL;
    }
    s = json_object_get_string(v);
    len = json_object_get_string_len(v);
    if (!s || len < 0 || strlen(s) != (size_t)len) {
        return NULL;
    }
    *n = (apr_size_t)len;
    return s;
}

cr_sse_verdict cr_sse_classify(apr_pool_t *p, const cr_sse_event *ev,
                               const char *expect_order_id, int *terminal)
{
    apr_size_t tlen = ev_type_len(ev);
    json_object *obj = NULL;
    const char *oid, *state;
    apr_size_t oid_len = 0, state_len = 0;

    if (terminal) {
        *terminal = 0;
    }
    if (!ev->type || (tlen == 7 && memcmp(ev->type, "message", 7) == 0)) {
        if (!ev->data
            || cr_json_parse(p, ev->data, ev->data_len, CR_SSE_JSON_DEPTH, &obj) != NULL
            || !json_object_is_type(obj, json_type_object)) {
            return CR_SSE_DROP_MALFORMED;
        }
        oid = get_cstring(obj, "order_id", &oid_len);
        state = get_cstring(obj, "order_state", &state_len);
        if (!oid || oid_len == 0 || !state) {
            return CR_SSE_DROP_MALFORMED;
        }
        if (expect_order_id && strcmp(oid, expect_order_id) != 0) {
            return CR_SSE_DROP_MALFORMED;
        }
        if (!cr_order_state_known(state) && !state_shaped(state, state_len)) {
            return CR_SSE_DROP_MALFORMED;
        }
        if (terminal) {
            *terminal = cr_order_state_terminal(state);
        }
        return CR_SSE_RELAY_ORDER;
    }
    if (tlen == 4 && memcmp(ev->type, "stop", 4) == 0) {
        return CR_SSE_RELAY_STOP;
    }
    return CR_SSE_DROP_UNKNOWN;
}
