/* SPDX-License-Identifier: Apache-2.0 */
/* cr_h1: a small HTTP/1.1 client codec, pure C (no httpd, no APR).
 *
 * Two halves, both free of I/O so that a blocking client and a
 * non-blocking event loop can drive them alike:
 *
 *  - a request-head formatter: cr_h1_head_len() tells how many bytes the
 *    head takes, cr_h1_head_write() writes it with a handful of memcpy()s
 *    (never a byte at a time); the caller sends head and body in one
 *    writev();
 *
 *  - an incremental response parser: cr_h1_feed() takes whatever bytes the
 *    socket gave, in any split (one byte at a time included), skips 1xx
 *    interim answers, hands the final head to on_head and the body, framed
 *    by Content-Length, chunked transfer coding (extensions and trailers
 *    tolerated and dropped) or the connection's close, to on_body as spans
 *    of the caller's buffer (no copy).  When the connection closes, call
 *    cr_h1_eof(): it completes a close-delimited body, anything else is
 *    truncation.
 *
 * The parser is strict and bounded: a head (status line, headers, the
 * empty line) over CR_H1_MAX_HEAD bytes or more than CR_H1_MAX_HEADERS
 * header lines, a malformed status line or header, obs-fold (a line
 * starting with white space), control bytes, a bare CR, conflicting
 * Content-Length values, a transfer coding other than chunked, both
 * Transfer-Encoding and Content-Length, an invalid chunk size or 101
 * Switching Protocols all end parsing with an error; sizes never overflow
 * and every byte is looked at a bounded number of times.
 *
 * State is small (a cr_h1_parser is a few dozen bytes, embeddable, no
 * allocation to create): no buffer is held between calls except while a
 * head is incomplete, when the part of it seen so far is kept in a buffer
 * (malloc, at most CR_H1_MAX_HEAD bytes) that is freed as soon as the head
 * is parsed, by cr_h1_parser_reset() and by cr_h1_parser_release().  A head
 * that arrives whole within one feed is parsed in place, never copied.
 *
 * Not thread-safe per parser (one per connection); no global state. */
#ifndef CR_H1_H
#define CR_H1_H

#include <stddef.h>

#define CR_H1_MAX_HEAD     65536   /* bytes of one head, empty line included */
#define CR_H1_MAX_HEADERS  100     /* header lines in one head (also trailer lines) */
#define CR_H1_MAX_CHUNK_LINE 4096  /* a chunk-size line with its extensions */

/* ------------------------------------------------------------------------
 * Upstream URL
 * --------------------------------------------------------------------- */

/* The parts of an http:// or https:// URL, as spans of it (nothing
 * copied, nothing allocated). */
typedef struct cr_h1_url {
    int tls;                       /* https:// */
    const char *host;              /* as written ("[::1]" with its brackets) */
    size_t host_len;
    const char *name;              /* for the resolver and TLS ("::1" without) */
    size_t name_len;
    unsigned port;                 /* as written, else 80 or 443 */
    const char *target;            /* path and query, the fragment left out */
    size_t target_len;             /* 0: the target is "/" */
    int target_slash;              /* the target starts with '?': "/" goes first */
} cr_h1_url;

/* 0 when url is http[s]://host[:port][/path][?query][#fragment] with a
 * host and a port in 1..65535; -1 otherwise (another scheme, user info,
 * an unclosed IPv6 bracket, an empty or bad port). */
int cr_h1_url_split(const char *url, cr_h1_url *u);

/* ------------------------------------------------------------------------
 * Request head
 * --------------------------------------------------------------------- */

typedef struct cr_h1_request {
    const char *method;            /* "GET", "POST", ... */
    const char *host;              /* as in the URL ("[::1]" with brackets for IPv6) */
    unsigned port;                 /* Host: carries ":port" unless it is default_port */
    const char *target;            /* origin form: "/path?query" (NULL or "": "/") */
    const char *const *headers;    /* "Name: value" lines, NULL-terminated, may be NULL */
    const char *user_agent;        /* User-Agent unless headers has one; NULL: none */
    const char *accept;            /* Accept unless headers has one; NULL: none */
    const char *accept_encoding;   /* Accept-Encoding unless headers has one; NULL: none */
    int has_body;                  /* send Content-Length: body_len (POST/PUT, also 0) */
    size_t body_len;
    unsigned default_port;         /* the scheme's (443 for https); 0: 80 */
} cr_h1_request;

/* Bytes cr_h1_head_write() will write for rq (no NUL).  0 when a header
 * line or the method/host/target holds CR, LF or NUL (refused: it would
 * split the request). */
size_t cr_h1_head_len(const cr_h1_request *rq);

/* Write the head (request line, Host, the default headers not overridden by
 * rq->headers, rq->headers in order, Content-Length, the empty line) into
 * out, which holds at least cr_h1_head_len(rq) bytes; returns the length. */
size_t cr_h1_head_write(const cr_h1_request *rq, char *out);

/* The decimal digits of v into buf (room for 20; no NUL); returns how
 * many (what the formatter uses for ports and lengths). */
size_t cr_h1_fmt_uint(char *buf, unsigned long long v);

/* ------------------------------------------------------------------------
 * Response parser
 * --------------------------------------------------------------------- */

/* Results of cr_h1_feed() / cr_h1_eof(): >= 0 fine, < 0 an error (final:
 * the parser keeps returning it until reset). */
enum {
    CR_H1_MORE = 0,          /* every byte taken, the message is not complete yet */
    CR_H1_DONE = 1,          /* the message is complete; *used tells how far */
    CR_H1_ESYNTAX = -1,      /* malformed status line, header, obs-fold, control byte */
    CR_H1_EHEADTOOBIG = -2,  /* head over CR_H1_MAX_HEAD bytes or CR_H1_MAX_HEADERS lines */
    CR_H1_ECHUNK = -3,       /* invalid chunk size line, chunk end or trailer */
    CR_H1_ELENGTH = -4,      /* invalid or conflicting Content-Length, or with Transfer-Encoding */
    CR_H1_ECODING = -5,      /* a transfer coding other than chunked */
    CR_H1_EUPGRADE = -6,     /* 101 Switching Protocols: not HTTP any more */
    CR_H1_ETRUNCATED = -7,   /* the connection closed before the message ended */
    CR_H1_ENOMEM = -8,       /* the head buffer could not be allocated */
    CR_H1_EABORTED = -9      /* a callback returned non-zero */
};

enum {
    CR_H1_CE_NONE = 0,       /* no Content-Encoding, or "identity" */
    CR_H1_CE_GZIP,           /* gzip or x-gzip */
    CR_H1_CE_DEFLATE,        /* deflate (zlib format) */
    CR_H1_CE_OTHER           /* anything else, or several codings */
};

/* The final (non-1xx) response head.  The string pointers point into the
 * parser's input or its head buffer: valid during on_head only (copy what
 * you keep).  Strings are not NUL-terminated; values are trimmed of
 * surrounding white space. */
typedef struct cr_h1_head {
    int status;                  /* 200..999 (first digit 2-9) */
    int minor;                   /* HTTP/1.<minor>: 0 or 1 */
    int keep_alive;              /* the connection may carry another request afterwards */
    int chunked;                 /* body framed by chunked transfer coding */
    long long content_length;    /* -1: none (chunked, close-delimited or no body) */
    int no_body;                 /* 204, 304, or the request was HEAD */
    int content_encoding;        /* CR_H1_CE_* */
    const char *content_type;    /* NULL if none */
    size_t content_type_len;
    const char *retry_after;     /* raw value (delta-seconds or HTTP-date), NULL if none */
    size_t retry_after_len;
} cr_h1_head;

/* Callbacks (each may be NULL).  Any non-zero return stops parsing with
 * CR_H1_EABORTED.  on_header sees every header line of the final head
 * (name and trimmed value, not NUL-terminated) before on_head. */
typedef struct cr_h1_callbacks {
    int (*on_header)(void *baton, const char *name, size_t nlen, const char *value, size_t vlen);
    int (*on_head)(void *baton, const cr_h1_head *head);
    int (*on_body)(void *baton, const char *data, size_t len);
} cr_h1_callbacks;

typedef struct cr_h1_parser {
    /* All private: read through the accessors below. */
    const cr_h1_callbacks *cb;
    void *baton;
    int state;
    int err;
    int head_request;            /* the request was HEAD: no body whatever the head says */
    int keep_alive;
    int chunked;
    int lines;                   /* trailer lines seen */
    int head_line_len;           /* bytes of the current head line so far (capped) */
    int head_line_cr;            /* the current head line started with CR */
    char *hbuf;                  /* the incomplete head so far (malloc) */
    size_t hlen;                 /* bytes in hbuf, or of the head scanned in place */
    size_t hcap;
    unsigned long long remaining;/* body bytes left (Content-Length) or of this chunk */
    unsigned long long received; /* bytes fed so far, this message */
    unsigned long long body_bytes; /* body bytes handed to on_body, this message */
    int status;
} cr_h1_parser;

/* Set up (or, for a parser in use, see cr_h1_parser_reset) to read one
 * response; head_request: the request was HEAD. */
void cr_h1_parser_init(cr_h1_parser *ps, const cr_h1_callbacks *cb, void *baton,
                       int head_request);

/* Read the next response on the same connection (keeps callbacks and baton,
 * frees the head buffer). */
void cr_h1_parser_reset(cr_h1_parser *ps, int head_request);

/* Free the head buffer, if any (the parser needs no other cleanup). */
void cr_h1_parser_release(cr_h1_parser *ps);

/* Feed len bytes.  Returns CR_H1_MORE (all taken, *used = len), CR_H1_DONE
 * (the response ended after *used bytes; what follows belongs to no
 * response: on a keep-alive connection that means garbage, do not reuse
 * it) or an error (*used is how far it got).  After DONE, further feeds
 * return DONE with *used = 0 until reset.  used may be NULL. */
int cr_h1_feed(cr_h1_parser *ps, const char *buf, size_t len, size_t *used);

/* The connection closed (EOF): CR_H1_DONE if that ends a close-delimited
 * body (or the message was already complete), else CR_H1_ETRUNCATED (or
 * the earlier error). */
int cr_h1_eof(cr_h1_parser *ps);

/* Bytes fed for this response so far (0: nothing arrived yet; a client
 * uses that to decide whether a request on a reused connection may be
 * retried). */
unsigned long long cr_h1_received(const cr_h1_parser *ps);

/* Body bytes handed to on_body so far for this response. */
unsigned long long cr_h1_body_bytes(const cr_h1_parser *ps);

/* The final head has been parsed (on_head was called). */
int cr_h1_head_done(const cr_h1_parser *ps);

/* The status of the final head, 0 before it. */
int cr_h1_status(const cr_h1_parser *ps);

/* After CR_H1_DONE: the connection may carry another request. */
int cr_h1_keep_alive(const cr_h1_parser *ps);

/* Bytes the head buffer holds now (0 unless a head is incomplete). */
size_t cr_h1_buffered(const cr_h1_parser *ps);

/* A short English description of a CR_H1_* result. */
const char *cr_h1_strerror(int rc);

#endif
