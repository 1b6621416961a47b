/* SPDX-License-Identifier: Apache-2.0 */
/* A two-thread byte queue (see cr_outq.h). */
#include <stdlib.h>
#include <string.h>

#include "cr_outq.h"

void cr_outq_init(cr_outq *q, apr_size_t limit)
{
    memset(q, 0, sizeof(*q));
    q->limit = limit;
}

apr_status_t cr_outq_put(cr_outq *q, const char *s, apr_size_t n)
{
    if (q->limit && (n > q->limit || q->len > q->limit - n)) {
        return APR_ENOSPC;
    }
    if (q->len + n > q->cap) {
        /* Doubling: linear copy work however the bytes arrive. */
        apr_size_t cap = q->cap ? q->cap : 1024;
        char *nb;
        while (cap < q->len + n) {
            cap *= 2;
        }
        nb = realloc(q->b, cap);
        if (!nb) {
            return APR_ENOMEM;
        }
        q->b = nb;
        q->cap = cap;
    }
    if (n) {
        memcpy(q->b + q->len, s, n);
    }
    q->len += n;
    return APR_SUCCESS;
}

void cr_outq_take(cr_outq *q, cr_outq *taken)
{
    char *b = taken->b;
    apr_size_t cap = taken->cap;

    taken->b = q->b;
    taken->cap = q->cap;
    taken->len = q->len;
    q->b = b;
    q->cap = cap;
    q->len = 0;
}

void cr_outq_free(cr_outq *q)
{
    free(q->b);
    q->b = NULL;
    q->len = q->cap = 0;
}
