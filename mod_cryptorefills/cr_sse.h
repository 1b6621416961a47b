/* SPDX-License-Identifier: Apache-2.0 */
/* Server-Sent Events: an incremental parser of the upstream's order stream,
 * a canonical re-emitter, and the order-stream relay policy.
 *
 * Pure C + APR + json-c: never includes an httpd header, so the unit tests
 * drive it directly.  The parser follows the WHATWG HTML "event stream
 * interpretation" rules (BOM stripped at stream start only; CR, LF and CRLF
 * line ends, a CRLF split across two reads being one line end; comments;
 * multi-line data joined with LF; id with NUL ignored; retry of ASCII digits
 * only; unknown fields ignored; an empty data buffer dispatches nothing; an
 * unterminated block at end of stream is discarded).
 *
 * Cost: O(n) in the bytes fed.  Complete lines are read in place from the
 * caller's buffer; only a line split across reads is carried over, and the
 * carried bytes are never scanned again.  Buffers grow by doubling and never
 * beyond max_event + 8, so one parser holds at most a small multiple of
 * max_event however long the stream runs. */
#ifndef CR_SSE_H
#define CR_SSE_H

#include <apr_pools.h>
#include <apr_errno.h>

/* Used when cr_sse_parser_create() is given max_event == 0. */
#define CR_SSE_DEFAULT_MAX_EVENT (256 * 1024)

/* Depth limit for the JSON of a message event. */
#define CR_SSE_JSON_DEPTH 32

typedef struct cr_sse_event {
    const char *type;      /* "message" when no event: field */
    const char *data;      /* joined data lines, NUL-terminated */
    apr_size_t data_len;
    const char *id;        /* NULL when this event set no id */
    long retry;            /* -1 when absent */
    /* Extensions. */
    apr_size_t type_len;   /* bytes of type (an event: value may hold a NUL);
                            * 0 in a hand-built event means strlen(type) */
    apr_pool_t *pool;      /* scratch pool for the callback (classify, format),
                            * cleared after it returns; NULL outside a callback */
    int oversize;          /* report_state mode: this block's data went over
                            * max_event and was dropped (data is NULL) */
} cr_sse_event;

typedef struct cr_sse_parser cr_sse_parser;

/* max_event caps the data of one event: the bytes of its data values plus
 * one per data line (the LFs that join them), as a browser's data buffer
 * holds them.  Comments and unknown fields never count and are never
 * buffered, however long (they are dropped as they stream by); an id, event
 * or retry value is bounded by max_event on its own.  A larger event is an
 * error and the stream is then broken: the caller ends it (but see skip
 * mode).  0 means CR_SSE_DEFAULT_MAX_EVENT.  The parser lives in p; its
 * buffers are freed by a cleanup of p. */
cr_sse_parser *cr_sse_parser_create(apr_pool_t *p, apr_size_t max_event);

/* Called for every dispatched event.  ev and everything it points to are
 * valid only until it returns (copy what must outlive it). */
typedef apr_status_t (*cr_sse_event_fn)(void *baton, const cr_sse_event *ev);

/* Feed a chunk; calls cb (may be NULL) for every complete event, in order.
 * Event memory lives in a sub-pool (ev->pool) cleared after cb returns, so
 * long streams don't grow.  Returns APR_SUCCESS, APR_ENOSPC (event over
 * max_event), APR_ENOMEM, or whatever non-success cb returned (which stops
 * feeding).  Errors are sticky: once a feed failed, every later feed returns
 * the same status without reading its bytes. */
apr_status_t cr_sse_feed(cr_sse_parser *ps, const char *buf, apr_size_t len,
                         cr_sse_event_fn cb, void *baton);

/* Oversized blocks.  By default a block over max_event is an error
 * (APR_ENOSPC, sticky) and the stream is broken.  With skip on, such a
 * block's event is discarded instead: its data and every data line up to
 * the blank line that ends it are dropped without being buffered (memory
 * stays bounded), nothing is dispatched for it, and parsing goes on, so one
 * oversized event does not end a long-lived stream (which a reconnecting
 * client would otherwise be sent again and again).  Its id and retry fields,
 * before or after the data, still take effect. */
void cr_sse_parser_skip_oversize(cr_sse_parser *ps, int on);

/* State blocks.  Off by default: cb sees dispatched events only (data
 * non-NULL).  With report on, cb is also called, with data NULL, for a
 * block that dispatches nothing but set the id or a retry (an id-only block
 * is legal SSE and a browser keeps its id as lastEventId), and for every
 * block discarded in skip mode (ev->oversize set; id and retry as read).
 * A relay needs these to keep a browser's reconnection state. */
void cr_sse_parser_report_state(cr_sse_parser *ps, int on);

/* Oversized blocks discarded so far (skip mode only). */
apr_size_t cr_sse_oversize_skipped(cr_sse_parser *ps);

/* The stream's last-event-id buffer ("" until an id: field set it).  It
 * also records ids from blocks that dispatched nothing (no data). */
const char *cr_sse_last_event_id(cr_sse_parser *ps);

/* Comment lines seen so far. */
apr_size_t cr_sse_comments_seen(cr_sse_parser *ps);

/* The stream's reconnection time from the last valid retry: field, in any
 * block (dispatched or not); -1 if none. */
long cr_sse_retry(cr_sse_parser *ps);

/* Events dispatched to cb so far. */
apr_size_t cr_sse_events_seen(cr_sse_parser *ps);

/* Non-zero while a partial line or an undispatched block is buffered (or an
 * oversized block is being skipped): at end of stream this is the
 * unterminated event that the rules discard. */
int cr_sse_in_event(cr_sse_parser *ps);

/* Bytes the parser's buffers hold (capacity), for tests and diagnostics. */
apr_size_t cr_sse_buffered_capacity(cr_sse_parser *ps);

/* Canonical output: "id: ..\n" (if any), "event: ..\n" (only if not message),
 * one "data: ..\n" per data line (none when data is NULL: such an event only
 * updates the browser's id and retry), "retry: ..\n" if retry >= 0, then
 * "\n".  LF line ends only.  Returns NULL (and *len = 0) if the event can't
 * be represented: a CR or LF in type or id, a NUL in id, or a CR in data.
 * Parsed events never hit that.  Allocated in p. */
char *cr_sse_format(apr_pool_t *p, const cr_sse_event *ev, apr_size_t *len);

/* A comment line ": text\n" then a blank line, as a heartbeat (":\n\n" for
 * NULL or empty text).  A CR or LF in text becomes a space.  Allocated in p. */
char *cr_sse_comment(apr_pool_t *p, const char *text, apr_size_t *len);

/* Order-stream policy: classify an event for relaying. */
typedef enum {
    CR_SSE_RELAY_ORDER,
    CR_SSE_RELAY_STOP,
    CR_SSE_DROP_MALFORMED,
    CR_SSE_DROP_UNKNOWN
} cr_sse_verdict;

/* message: data must be a JSON object (strict, depth CR_SSE_JSON_DEPTH,
 * parsed in p) with a non-empty string order_id and a string order_state.
 * A state not in shapes.md but shaped like one ([A-Za-z][A-Za-z0-9_]*, at
 * most 64 bytes) is RELAYED, as non-terminal: the upstream ends every stream
 * with `stop`, so the relay never needs to know a state to end it, and
 * browsers keep getting updates when the upstream adds a state.  Anything
 * else in order_state is malformed.  If expect_order_id is non-NULL, an
 * order with another order_id is malformed.  If terminal is non-NULL it is
 * set to 1 for a relayed order in a terminal state, else 0.
 * stop: relayed whatever its data (*terminal = 0: it carries no state).
 * Other event types: DROP_UNKNOWN.  An event without data (a state block,
 * see cr_sse_parser_report_state) is DROP_MALFORMED here: the relay below
 * sends its id and retry. */
cr_sse_verdict cr_sse_classify(apr_pool_t *p, const cr_sse_event *ev,
                               const char *expect_order_id, int *terminal);

/* The order-stream relay both relay modes share: a parser (skip and report
 * modes on) plus the policy above.  For every block, fn gets what became of
 * it, the event (ev->pool is scratch) and the bytes to send the browser:
 * - ORDER, STOP: the event in canonical form;
 * - STATE (a block without data) and every DROP_*: "id: ..\n" and/or
 *   "retry: ..\n" and a blank line when the block set an id or retry (so
 *   the browser's lastEventId and reconnection time stay what they would be
 *   without the relay), else out is NULL.  A data-less "stop" block is
 *   STATE: a browser dispatches nothing for it.
 * out is valid until fn returns.  fn's non-success return stops the feed
 * and is returned (sticky, as cr_sse_feed).  Allocated in p. */
typedef enum {
    CR_SSE_OUT_ORDER,
    CR_SSE_OUT_STOP,
    CR_SSE_OUT_STATE,
    CR_SSE_OUT_DROP_MALFORMED,
    CR_SSE_OUT_DROP_UNKNOWN,
    CR_SSE_OUT_DROP_OVERSIZE    /* data over max_event */
} cr_sse_out_kind;

typedef struct cr_sse_relay cr_sse_relay;
typedef apr_status_t (*cr_sse_relay_fn)(void *baton, cr_sse_out_kind k, const cr_sse_event *ev,
                                        const char *out, apr_size_t len);
cr_sse_relay *cr_sse_relay_create(apr_pool_t *p, apr_size_t max_event, const char *order_id);
apr_status_t cr_sse_relay_feed(cr_sse_relay *rl, const char *buf, apr_size_t len,
                               cr_sse_relay_fn fn, void *baton);
cr_sse_parser *cr_sse_relay_parser(cr_sse_relay *rl);
/* The same relay on the heap, for one that lives across threads without a
 * pool of its own (a suspended stream's, see mod_cryptorefills_async_int.h):
 * every callback's ev->pool is an unmanaged pool on allocator a, which the
 * callers share and which must therefore have a mutex
 * (apr_allocator_mutex_set).  NULL when out of memory.  Freed, buffers
 * included, by cr_sse_relay_destroy (which takes NULL). */
cr_sse_relay *cr_sse_relay_create_heap(apr_allocator_t *a, apr_size_t max_event,
                                       const char *order_id);
void cr_sse_relay_destroy(cr_sse_relay *rl);

/* Order states of shapes.md (case-sensitive; NULL is neither). */
int cr_order_state_known(const char *s);
int cr_order_state_terminal(const char *s);

#endif
