/* SPDX-License-Identifier: Apache-2.0 */
/* The collected-exchange HTTP/1.1 client of cr_upstream (pure core: APR
 * and POSIX sockets, no httpd header, no libcurl).
 *
 * cr_upstream_perform() hands it every exchange it can do: an http:// or
 * https:// URL (TLS by cr_tls, verified as libcurl verified), no proxy,
 * and no streaming callback (on_data, on_tick, on_headers).  Proxies and
 * the blocking stream relay stay with libcurl.  It keeps
 * every promise of cr_upstream_resp (rc, status, content type, Retry-After,
 * a collected NUL-terminated body decoded from gzip/deflate and capped at
 * max_response after decoding, request_sent, reused, connects, error text,
 * total time) and libcurl's connection rules: a reused connection that
 * fails before the first byte of an answer is retried once on a new one,
 * except for fresh_connection requests, which always get a new connection,
 * are closed afterwards and are never sent twice.
 *
 * Connections: a per-process list of at most max_idle idle sockets (made
 * in child_init, so nothing crosses a fork; SOCK_CLOEXEC), keyed by
 * scheme, host:port and CA file, the most recently used first; a mutex
 * guards the list only, never held across I/O.  An idle socket that is
 * readable when taken (closed by the upstream, or sending garbage; over
 * TLS, anything but session tickets) is dropped; an idle TLS connection
 * keeps no record buffers.  Addresses are
 * resolved when connecting.  Every wait (connect, send, receive) is a
 * poll() bounded by connect_timeout_ms and timeout_ms. */
#ifndef CR_H1CLIENT_H
#define CR_H1CLIENT_H

#include "cr_upstream.h"

typedef struct cr_h1c cr_h1c;

/* At most max_idle idle connections, all closed when p is cleaned up;
 * https:// connections take their TLS context from tls. */
struct cr_tls_reg;
apr_status_t cr_h1c_create(apr_pool_t *p, int max_idle, const char *user_agent,
                           struct cr_tls_reg *tls, cr_h1c **out);

/* getaddrinfo bounded by deadline (CLOCK_MONOTONIC microseconds, as
 * cr_tls_now(); 0: none), what libcurl's threaded resolver gave: an
 * address literal directly, a name on glibc's resolver threads (a lookup
 * still running at the deadline finishes on its own and is freed then).
 * 0 with *res (freeaddrinfo it), EAI_AGAIN when the deadline passed, or
 * another EAI_* code.  Thread-safe. */
struct addrinfo;
int cr_h1c_resolve(const char *name, const char *port, const struct addrinfo *hints,
                   apr_int64_t deadline, struct addrinfo **res);

/* This client can do req (http:// or https://, no proxy, no streaming callback). */
int cr_h1c_applies(const cr_upstream_req *req);

/* One exchange, results in resp (from p) exactly as cr_upstream_perform
 * gives them.  Thread-safe. */
void cr_h1c_perform(cr_h1c *c, apr_pool_t *p, const cr_upstream_req *req, cr_upstream_resp *resp);

#endif
