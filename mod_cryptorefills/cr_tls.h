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
 * Deadlines are cr_tls_now() values: microseconds of CLOCK_MONOTONIC, so a
 * step of the wall clock neither stretches nor cuts a wait; 0 means no
 * limit.
 * OpenSSL writes to the socket with write(2): the process must ignore
 * SIGPIPE, as httpd's children do. */
#ifndef CR_TLS_H
#define CR_TLS_H

#include <sys/uio.h>
#include <apr_pools.h>
#include <apr_time.h>

typedef struct cr_tls_ctx cr_tls_ctx;
typedef struct cr_tls cr_tls;

/* Now, on the clock deadlines are given in. */
apr_time_t cr_tls_now(void);

typedef enum {
    CR_TLS_OK = 0,
    CR_TLS_TIMEOUT,      /* the deadline passed */
    CR_TLS_CLOSED,       /* the peer closed (close_notify or EOF) */
    CR_TLS_ERROR,        /* handshake, verification, socket or protocol error */
    CR_TLS_WANT_READ,    /* CR_TLS_NOWAIT: call again once the socket is readable */
    CR_TLS_WANT_WRITE    /* CR_TLS_NOWAIT: call again once the socket is writable */
} cr_tls_rc;

/* As a deadline: never wait; say what the socket must become instead
 * (CR_TLS_WANT_*), for a caller with its own event loop.  A write that
 * wanted the socket is repeated with the same bytes. */
#define CR_TLS_NOWAIT ((apr_time_t)-1)

/* A context trusting ca_file only (NULL or "": the system store), freed
 * with p.  On failure returns NULL and a static message. */
cr_tls_ctx *cr_tls_ctx_create(apr_pool_t *p, const char *ca_file, const char **err);

/* Contexts by CA setting, made when first asked for and kept for the
 * life of p (a process's: create it in child_init).  Thread-safe. */
typedef struct cr_tls_reg cr_tls_reg;
apr_status_t cr_tls_reg_create(apr_pool_t *p, cr_tls_reg **out);
cr_tls_ctx *cr_tls_reg_get(cr_tls_reg *reg, const char *ca_file, const char **err);

/* A connection on fd (connected, non-blocking) for host, before its
 * handshake (see cr_tls_connect for the arguments); CR_TLS_OK or
 * CR_TLS_ERROR with err. */
cr_tls_rc cr_tls_new(cr_tls_ctx *ctx, int fd, const char *host, const char *session_key,
                     cr_tls **out, char *err, apr_size_t errlen);

/* Run (or go on with) the handshake: CR_TLS_OK once done. */
cr_tls_rc cr_tls_handshake(cr_tls *t, apr_time_t deadline, char *err, apr_size_t errlen);

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

/* Whether OpenSSL holds bytes of a record already read from the socket
 * (no epoll event will say so): read again before waiting. */
int cr_tls_has_pending(cr_tls *t);

/* A connection about to sit idle: when OpenSSL holds nothing unread, let
 * go of its record buffers (~17 KB read, the write one if any).
 * SSL_MODE_RELEASE_BUFFERS alone keeps the read buffer after TLS 1.3's
 * post-handshake messages (session tickets): measured 31 -> 15 KB of heap
 * per idle connection.  They come back on the next read or write. */
void cr_tls_shed(cr_tls *t);

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
