/* SPDX-License-Identifier: Apache-2.0 */
/* TLS for the upstream client's own connections: OpenSSL over a connected,
 * non-blocking socket, every wait bounded by an absolute deadline.
 *
 * What is verified is what libcurl verified before (CURLOPT_SSL_VERIFYPEER
 * and VERIFYHOST 2): the chain up to a trusted CA, and the host name (or IP
 * address, for a literal) the URL names.  The trusted CAs are the system
 * store, or only the PEM file given (CryptorefillsCACertificateFile).
 * TLS 1.2 at least; ALPN offers http/1.1 only.
 *
 * A context is made once per process and CA setting and shared by every
 * thread (OpenSSL 3's SSL_CTX is thread-safe for this use); it keeps the
 * newest session ticket per upstream (host:port) so that a new connection
 * resumes instead of doing a full handshake.  A connection (cr_tls) is used
 * by one thread at a time; the caller owns and closes the socket.
 *
 * Deadlines are apr_time_now() values (microseconds); 0 means no limit.
 * OpenSSL writes to the socket with write(2): the process must ignore
 * SIGPIPE, as httpd's children do. */
#ifndef CR_TLS_H
#define CR_TLS_H

#include <sys/uio.h>
#include <apr_pools.h>
#include <apr_time.h>

typedef struct cr_tls_ctx cr_tls_ctx;
typedef struct cr_tls cr_tls;

typedef enum {
    CR_TLS_OK = 0,
    CR_TLS_TIMEOUT,      /* the deadline passed */
    CR_TLS_CLOSED,       /* the peer closed (close_notify or EOF) */
    CR_TLS_ERROR         /* handshake, verification, socket or protocol error */
} cr_tls_rc;

/* A context trusting ca_file only (NULL or "": the system store), freed
 * with p.  On failure returns NULL and a message (static or from p). */
cr_tls_ctx *cr_tls_ctx_create(apr_pool_t *p, const char *ca_file, const char **err);

/* Handshake on fd (connected, non-blocking) for host (a name, or an IPv4 /
 * IPv6 literal without brackets); session_key names the upstream for
 * resumption (e.g. "host:port").  On CR_TLS_OK *out is the connection
 * (heap; cr_tls_free it); otherwise err holds a message. */
cr_tls_rc cr_tls_connect(cr_tls_ctx *ctx, int fd, const char *host, const char *session_key,
                         apr_time_t deadline, cr_tls **out, char *err, apr_size_t errlen);

/* Write every byte of iov (coalesced into as few records as fit). */
cr_tls_rc cr_tls_writev(cr_tls *t, const struct iovec *iov, int iovcnt, apr_time_t deadline,
                        char *err, apr_size_t errlen);

/* Read up to len bytes: > 0 bytes read, 0 with *rc set otherwise
 * (CR_TLS_CLOSED at the peer's close). */
apr_size_t cr_tls_read(cr_tls *t, char *buf, apr_size_t len, apr_time_t deadline, cr_tls_rc *rc,
                       char *err, apr_size_t errlen);

/* For an idle pooled connection whose socket polled readable: consumes
 * what TLS 1.3 servers send after the handshake (session tickets) and
 * says whether the connection is still usable (1), or was closed or sent
 * application bytes nobody asked for (0). */
int cr_tls_idle_ok(cr_tls *t);

/* Whether the handshake resumed a session (for tests and logs). */
int cr_tls_resumed(const cr_tls *t);

/* Free the connection; with notify, a close_notify is attempted first
 * (never waits).  The socket stays the caller's. */
void cr_tls_free(cr_tls *t, int notify);

#endif
