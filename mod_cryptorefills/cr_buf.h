/* SPDX-License-Identifier: Apache-2.0 */
/* A growable byte buffer in a pool, always NUL-terminated (so a collected
 * body can be handed to a parser that wants a C string).  Capacity doubles,
 * which keeps the total copy work linear in the final size. */
#ifndef CR_BUF_H
#define CR_BUF_H

#include <apr_pools.h>

typedef struct cr_buf {
    apr_pool_t *p;
    char *data;             /* NULL until the first append (or a reserve) */
    apr_size_t len, cap;
} cr_buf;

/* Start empty; the first allocation holds at least `initial` bytes. */
void cr_buf_init(cr_buf *b, apr_pool_t *p, apr_size_t initial);
void cr_buf_append(cr_buf *b, const void *data, apr_size_t n);
/* The bytes, NUL-terminated ("" when nothing was appended). */
char *cr_buf_str(cr_buf *b);

#endif
