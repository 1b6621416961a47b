/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "cr_buf.h"

void cr_buf_init(cr_buf *b, apr_pool_t *p, apr_size_t initial)
{
    b->p = p;
    b->data = NULL;
    b->len = 0;
    b->cap = initial;
}

static void grow(cr_buf *b, apr_size_t need)
{
    apr_size_t cap = b->data ? b->cap * 2 : (b->cap ? b->cap : 256);
    char *nb;
    while (cap < need) {
        cap *= 2;
    }
    nb = apr_palloc(b->p, cap);
    if (b->len) {
        memcpy(nb, b->data, b->len);
    }
    b->data = nb;
    b->cap = cap;
}

void cr_buf_append(cr_buf *b, const void *data, apr_size_t n)
{
    if (!b->data || b->len + n + 1 > b->cap) {
        grow(b, b->len + n + 1);
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

char *cr_buf_str(cr_buf *b)
{
    if (!b->data) {
        grow(b, 1);
        b->data[0] = '\0';
    }
    return b->data;
}
