/* SPDX-License-Identifier: Apache-2.0 */
/* A byte queue between two threads: one appends, the other takes
 * everything at once by swapping buffers, so neither copies twice and the
 * taker writes without holding the producer's lock.
 *
 * Plain C + APR, no lock of its own (the caller's mutex guards the pending
 * side; the taken side belongs to the taker).  Heap memory (malloc), never a
 * pool: the two sides live on different threads and an APR pool's allocator
 * has no mutex.  A limit bounds the pending bytes: a consumer that does not
 * keep up is detected (APR_ENOSPC) instead of growing memory without end. */
#ifndef CR_OUTQ_H
#define CR_OUTQ_H

#include <apr.h>
#include <apr_errno.h>

typedef struct cr_outq {
    char *b;
    apr_size_t len;        /* bytes pending */
    apr_size_t cap;        /* bytes allocated */
    apr_size_t limit;      /* most bytes pending at once */
} cr_outq;

/* An empty queue holding at most limit bytes (0: no limit). */
void cr_outq_init(cr_outq *q, apr_size_t limit);

/* Append n bytes.  APR_ENOSPC (nothing appended) when the pending bytes
 * would exceed the limit, APR_ENOMEM when memory runs out. */
apr_status_t cr_outq_put(cr_outq *q, const char *s, apr_size_t n);

/* Take everything pending: *taken (which the taker emptied, len 0) gets
 * the pending bytes and q gets taken's old buffer back, so the two
 * buffers alternate and stop growing once they are large enough.  The
 * limits stay with their queues. */
void cr_outq_take(cr_outq *q, cr_outq *taken);

/* Free the buffer (the queue is empty and usable again afterwards). */
void cr_outq_free(cr_outq *q);

#endif
