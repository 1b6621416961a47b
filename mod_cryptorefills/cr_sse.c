/* SPDX-License-Identifier: Apache-2.0 */
/* SSE parser, canonical re-emitter and order-stream policy (see cr_sse.h).
 *
 * Memory: the parser's four growable buffers (carried partial line, data,
 * event type, last-event-id) are malloc'd and freed by a cleanup of the
 * parser's pool, not allocated from it: growing a pool buffer by doubling
 * would leave every old copy in the pool.  Each buffer's capacity is capped
 * at max_event + 8, and it only grows when a line needs it, so a stream of
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

/* What a line is, from its first bytes: a line's field name is at most
 * "retry" long, so six bytes (or the whole line) decide it. */
typedef enum {
    LK_UNDECIDED,   /* a partial line too short to tell */
    LK_IGNORE,      /* an unknown field */
    LK_COMMENT,
    LK_DATA,
    LK_EVENT,
    LK_ID,
    LK_RETRY
} line_kind_t;

#define LK_HEAD 7   /* field name (<= 5), colon, and the optional space */

struct cr_sse_parser {
    apr_pool_t *pool;            /* NULL: on the heap (cr_sse_relay_create_heap) */
    apr_allocator_t *alloc;      /* ... and the event pools come from this allocator */
    apr_pool_t *evpool;          /* made for each callback, destroyed after it */
    apr_size_t max_event;
    apr_status_t err;            /* sticky: once set, feeds return it */

    int bom;                     /* bytes of a leading BOM matched so far; -1 when past it */
    int skip_lf;                 /* last line ended with CR: an LF next is part of it */

    sse_buf line;                /* partial line carried to the next feed: no CR/LF in it */
    sse_buf data;                /* data buffer, each line followed by LF */
    sse_buf type;                /* event type buffer */
    sse_buf lastid;              /* last-event-id buffer: outlives blocks */

    int discard;                 /* the current (partial) line is dropped unbuffered */
    int block_seen;              /* the current block has had a line */
    int block_id;                /* this block set the id */
    long block_retry;            /* this block's retry, -1 if none */
    long retry;                  /* stream's reconnection time, -1 if none */

    apr_size_t comments;
    apr_size_t events;

    int skip_oversize;           /* discard oversized blocks instead of failing */
    int report_state;            /* call back for blocks that dispatch nothing */
    int block_oversize;          /* this block's data is being dropped (skip mode) */
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

/* Make room for need bytes plus a NUL.  The callers check the bounds
 * first: a value never exceeds max_event, a carried line never exceeds
 * max_event + LK_HEAD, so the cap is max_event + LK_HEAD + 1. */
static apr_status_t buf_reserve(cr_sse_parser *ps, sse_buf *sb, apr_size_t need)
{
    apr_size_t limit = ps->max_event + LK_HEAD + 1, ncap;
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

/* An empty buffer gives its memory back: a parser waits far longer between
 * events than it spends on one, and ten thousand idle ones add up. */
static void buf_release(sse_buf *sb)
{
    if (sb->len == 0 && sb->b) {
        free(sb->b);
        sb->b = NULL;
        sb->cap = 0;
    }
}

static apr_status_t buf_set(cr_sse_parser *ps, sse_buf *sb, const char *s, apr_size_t n)
{
    sb->len = 0;
    return buf_append(ps, sb, s, n);
}

static void parser_init(cr_sse_parser *ps, apr_size_t max_event)
{
    ps->max_event = max_event ? max_event : CR_SSE_DEFAULT_MAX_EVENT;
    /* Keep max_event + LK_HEAD + 1 and the doubling from overflowing. */
    if (ps->max_event > APR_SIZE_MAX / 4) {
        ps->max_event = APR_SIZE_MAX / 4;
    }
    ps->err = APR_SUCCESS;
    ps->bom = 0;
    ps->block_retry = -1;
    ps->retry = -1;
}

cr_sse_parser *cr_sse_parser_create(apr_pool_t *p, apr_size_t max_event)
{
    cr_sse_parser *ps = apr_pcalloc(p, sizeof(*ps));

    ps->pool = p;
    parser_init(ps, max_event);
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
    ps->block_seen = 0;
    ps->block_id = 0;
    ps->block_retry = -1;
    ps->block_oversize = 0;
}

/* Classify a line from its first n bytes (head holds min(n, LK_HEAD) of
 * them); complete: n is the whole line.  *nlen gets the field name's
 * length (the colon follows it, if any). */
static line_kind_t line_kind(const char *head, apr_size_t n, int complete, apr_size_t *nlen)
{
    apr_size_t k, lim = n < 6 ? n : 6;

    if (n == 0) {
        return LK_UNDECIDED;
    }
    if (head[0] == ':') {
        return LK_COMMENT;
    }
    for (k = 0; k < lim && head[k] != ':'; k++)
        ;
    if (k == lim) {
        if (n >= 6) {
            return LK_IGNORE;        /* a name longer than any field's */
        }
        if (!complete) {
            return LK_UNDECIDED;
        }
    }
    *nlen = k;
    if (k == 4 && memcmp(head, "data", 4) == 0) {
        return LK_DATA;
    }
    if (k == 5 && memcmp(head, "event", 5) == 0) {
        return LK_EVENT;
    }
    if (k == 2 && memcmp(head, "id", 2) == 0) {
        return LK_ID;
    }
    if (k == 5 && memcmp(head, "retry", 5) == 0) {
        return LK_RETRY;
    }
    return LK_IGNORE;
}

/* The current block went over max_event: APR_ENOSPC, or in skip mode drop
 * its data (now and up to its blank line) and go on.  in_line: the line
 * that crossed the bound has not ended yet; the rest of it is dropped. */
static apr_status_t oversize(cr_sse_parser *ps, int in_line)
{
    if (!ps->skip_oversize) {
        return APR_ENOSPC;
    }
    if (!ps->block_oversize) {
        ps->block_oversize = 1;
        ps->oversize++;
        ps->data.len = 0;
    }
    if (in_line) {
        ps->line.len = 0;
        ps->discard = 1;
    }
    return APR_SUCCESS;
}

/* A blank line: the "dispatch the event" steps. */
static apr_status_t dispatch(cr_sse_parser *ps, cr_sse_event_fn cb, void *baton)
{
    cr_sse_event ev;
    apr_status_t rv = APR_SUCCESS;
    int state_only = ps->block_oversize || ps->data.len == 0;

    if (state_only && !(ps->report_state
                        && (ps->block_oversize || ps->block_id || ps->block_retry >= 0))) {
        /* Nothing to dispatch; the id already went to the last-event-id
         * buffer when its line was read. */
        block_reset(ps);
        return APR_SUCCESS;
    }

    memset(&ev, 0, sizeof(ev));
    if (ps->type.len) {
        ev.type = ps->type.b;
        ev.type_len = ps->type.len;
    }
    else {
        ev.type = "message";
        ev.type_len = sizeof("message") - 1;
    }
    if (!state_only) {
        /* The data buffer always ends with the LF appended after its last line. */
        ps->data.len--;
        ps->data.b[ps->data.len] = '\0';
        ev.data = ps->data.b;
        ev.data_len = ps->data.len;
        ps->events++;
    }
    ev.id = ps->block_id ? (ps->lastid.b ? ps->lastid.b : "") : NULL;
    ev.retry = ps->block_retry;
    ev.oversize = ps->block_oversize;

    /* The event's pool lives only for the callback: an idle parser holds no
     * pool block (a thousand idle streams would otherwise keep a thousand
     * 8 KB blocks), and its block goes back to the allocator for the next
     * event of any parser sharing it. */
    if (cb) {
        if ((ps->pool ? apr_pool_create(&ps->evpool, ps->pool)
             : apr_pool_create_unmanaged_ex(&ps->evpool, NULL, ps->alloc)) != APR_SUCCESS) {
            ps->err = APR_ENOMEM;
            return APR_ENOMEM;
        }
        ev.pool = ps->evpool;
        rv = cb(baton, &ev);
        apr_pool_destroy(ps->evpool);
        ps->evpool = NULL;
    }
    block_reset(ps);
    return rv;
}

/* A value's bytes so far, from the raw bytes after the colon (one leading
 * space is not part of it). */
static apr_size_t value_len(const char *head, apr_size_t hn, apr_size_t n, apr_size_t nlen)
{
    apr_size_t raw = n > nlen ? n - nlen - 1 : 0;
    if (raw && nlen + 1 < hn && head[nlen + 1] == ' ') {
        raw--;
    }
    return raw;
}

/* Would a value of vlen bytes (at least) break the bound?  Only data
 * counts toward max_event (the joined data lines, one LF each); an id,
 * event or retry value is bounded by max_event on its own. */
static int over_bound(cr_sse_parser *ps, line_kind_t kind, apr_size_t vlen)
{
    apr_size_t used = kind == LK_DATA ? ps->data.len : 0;
    return used > ps->max_event || vlen + 1 > ps->max_event - used;
}

/* One complete line (no CR/LF in it), from the caller's buffer or the carry. */
static apr_status_t process_line(cr_sse_parser *ps, const char *l, apr_size_t n,
                                 cr_sse_event_fn cb, void *baton)
{
    apr_size_t nlen = 0, vlen;
    line_kind_t kind;
    const char *v;

    if (n == 0) {
        return dispatch(ps, cb, baton);
    }
    ps->block_seen = 1;
    kind = line_kind(l, n, 1, &nlen);
    if (kind == LK_COMMENT) {
        ps->comments++;
        return APR_SUCCESS;
    }
    if (kind == LK_IGNORE || (kind == LK_DATA && ps->block_oversize)) {
        return APR_SUCCESS;
    }
    vlen = value_len(l, n < LK_HEAD ? n : LK_HEAD, n, nlen);
    v = l + (n - vlen);
    if (over_bound(ps, kind, vlen)) {
        /* The line is dropped; in skip mode, so is the block's event. */
        return oversize(ps, 0);
    }

    switch (kind) {
    case LK_DATA: {
        apr_status_t rv = buf_append(ps, &ps->data, v, vlen);
        return rv == APR_SUCCESS ? buf_append(ps, &ps->data, "\n", 1) : rv;
    }
    case LK_EVENT:
        return buf_set(ps, &ps->type, v, vlen);
    case LK_ID: {
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
    case LK_RETRY: {
        long r;
        if (parse_retry(v, vlen, &r)) {
            ps->block_retry = r;
            ps->retry = r;
        }
        return APR_SUCCESS;
    }
    default:
        return APR_SUCCESS;
    }
}

/* Carry part of a line over to the next feed.  Comments and unknown fields
 * are never buffered (they are dropped as they stream by, whatever their
 * length), and the bound is enforced now (a known field's value can only
 * grow) so the carry never outgrows max_event + LK_HEAD. */
static apr_status_t carry(cr_sse_parser *ps, const char *s, apr_size_t n)
{
    char head[LK_HEAD];
    apr_size_t hn = ps->line.len < LK_HEAD ? ps->line.len : LK_HEAD, total, nlen = 0;
    line_kind_t kind;

    memcpy(head, ps->line.b ? ps->line.b : "", hn);
    if (hn < LK_HEAD) {
        apr_size_t more = n < LK_HEAD - hn ? n : LK_HEAD - hn;
        memcpy(head + hn, s, more);
        hn += more;
    }
    total = ps->line.len + n;
    kind = line_kind(head, total, 0, &nlen);
    if (total) {
        ps->block_seen = 1;
    }
    switch (kind) {
    case LK_COMMENT:
        ps->comments++;
        /* fall through */
    case LK_IGNORE:
        ps->line.len = 0;
        ps->discard = 1;
        return APR_SUCCESS;
    case LK_UNDECIDED:
        break;
    default:
        if (kind == LK_DATA && ps->block_oversize) {
            ps->line.len = 0;
            ps->discard = 1;
            return APR_SUCCESS;
        }
        if (over_bound(ps, kind, value_len(head, hn, total, nlen))) {
            return oversize(ps, 1);
        }
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
        if (ps->discard) {
            /* Dropping the rest of a line: only look for its end. */
            if (j == len) {
                return APR_SUCCESS;
            }
            ps->discard = 0;
        }
        else if (j == len) {
            return carry(ps, buf + i, len - i);
        }
        else if (ps->line.len) {
            if ((rv = carry(ps, buf + i, j - i)) != APR_SUCCESS) {
                return rv;
            }
            if (ps->discard) {
                ps->discard = 0;          /* the line turned out to be dropped */
            }
            else {
                rv = process_line(ps, ps->line.b, ps->line.len, cb, baton);
                ps->line.len = 0;
                if (rv != APR_SUCCESS) {
                    return rv;
                }
            }
        }
        else if ((rv = process_line(ps, buf + i, j - i, cb, baton)) != APR_SUCCESS) {
            return rv;
        }
        if (buf[j] == '\r') {
            ps->skip_lf = 1;
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
    /* Between blocks nothing but the last-event-id need be kept. */
    if (ps->data.len == 0 && ps->type.len == 0) {
        buf_release(&ps->data);
        buf_release(&ps->type);
    }
    buf_release(&ps->line);
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
    return ps->line.len != 0 || ps->block_seen || ps->discard || (ps->bom > 0);
}

void cr_sse_parser_skip_oversize(cr_sse_parser *ps, int on)
{
    ps->skip_oversize = on != 0;
}

void cr_sse_parser_report_state(cr_sse_parser *ps, int on)
{
    ps->report_state = on != 0;
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

/* ---------------------------------------------------------------------- */

struct cr_sse_relay {
    cr_sse_parser *ps;
    const char *order_id;
    cr_sse_relay_fn fn;
    void *baton;
};

cr_sse_relay *cr_sse_relay_create(apr_pool_t *p, apr_size_t max_event, const char *order_id)
{
    cr_sse_relay *rl = apr_pcalloc(p, sizeof(*rl));

    rl->ps = cr_sse_parser_create(p, max_event);
    if (!rl->ps) {
        return NULL;
    }
    cr_sse_parser_skip_oversize(rl->ps, 1);
    cr_sse_parser_report_state(rl->ps, 1);
    rl->order_id = order_id ? apr_pstrdup(p, order_id) : NULL;
    return rl;
}

cr_sse_relay *cr_sse_relay_create_heap(apr_allocator_t *a, apr_size_t max_event,
                                       const char *order_id)
{
    apr_size_t n = order_id ? strlen(order_id) + 1 : 0;
    /* One allocation: the relay, its parser, the order id. */
    cr_sse_relay *rl = calloc(1, sizeof(*rl) + sizeof(cr_sse_parser) + n);

    if (!rl) {
        return NULL;
    }
    rl->ps = (cr_sse_parser *)(rl + 1);
    rl->ps->alloc = a;
    parser_init(rl->ps, max_event);
    cr_sse_parser_skip_oversize(rl->ps, 1);
    cr_sse_parser_report_state(rl->ps, 1);
    if (order_id) {
        rl->order_id = memcpy(rl->ps + 1, order_id, n);
    }
    return rl;
}

void cr_sse_relay_destroy(cr_sse_relay *rl)
{
    if (rl) {
        parser_free(rl->ps);
        free(rl);
    }
}

cr_sse_parser *cr_sse_relay_parser(cr_sse_relay *rl)
{
    return rl->ps;
}

static apr_status_t relay_event(void *baton, const cr_sse_event *ev)
{
    cr_sse_relay *rl = baton;
    cr_sse_out_kind k;
    cr_sse_event st;
    const char *out = NULL;
    apr_size_t len = 0;

    if (ev->oversize) {
        k = CR_SSE_OUT_DROP_OVERSIZE;
    }
    else if (!ev->data) {
        k = CR_SSE_OUT_STATE;
    }
    else {
        switch (cr_sse_classify(ev->pool, ev, rl->order_id, NULL)) {
        case CR_SSE_RELAY_ORDER:    k = CR_SSE_OUT_ORDER; break;
        case CR_SSE_RELAY_STOP:     k = CR_SSE_OUT_STOP; break;
        case CR_SSE_DROP_UNKNOWN:   k = CR_SSE_OUT_DROP_UNKNOWN; break;
        default:                    k = CR_SSE_OUT_DROP_MALFORMED; break;
        }
    }
    if (k == CR_SSE_OUT_ORDER || k == CR_SSE_OUT_STOP) {
        out = cr_sse_format(ev->pool, ev, &len);
    }
    else if (ev->id || ev->retry >= 0) {
        /* Dropped (or never an event): its id and retry still reach the
         * browser, as they would have without the relay in between. */
        memset(&st, 0, sizeof(st));
        st.id = ev->id;
        st.retry = ev->retry;
        out = cr_sse_format(ev->pool, &st, &len);
    }
    return rl->fn(rl->baton, k, ev, out, len);
}

apr_status_t cr_sse_relay_feed(cr_sse_relay *rl, const char *buf, apr_size_t len,
                               cr_sse_relay_fn fn, void *baton)
{
    rl->fn = fn;
    rl->baton = baton;
    return cr_sse_feed(rl->ps, buf, len, relay_event, rl);
}
