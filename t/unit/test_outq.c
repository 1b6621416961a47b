/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the two-thread byte queue (cr_outq), including a real
 * producer thread against a taker, as the async stream engine uses it. */
#include <string.h>
#include <stdlib.h>
#include <check.h>
#include "unit_run.h"
#include <apr_general.h>
#include <apr_thread_proc.h>
#include <apr_thread_mutex.h>

#include "cr_outq.h"

START_TEST(put_take_alternate)
{
    cr_outq q, w;
    char *first;

    cr_outq_init(&q, 0);
    cr_outq_init(&w, 0);
    ck_assert_int_eq(cr_outq_put(&q, "abc", 3), APR_SUCCESS);
    ck_assert_int_eq(cr_outq_put(&q, "de", 2), APR_SUCCESS);
    first = q.b;
    cr_outq_take(&q, &w);
    ck_assert_uint_eq(q.len, 0);
    ck_assert_uint_eq(w.len, 5);
    ck_assert_int_eq(memcmp(w.b, "abcde", 5), 0);
    ck_assert_ptr_eq(w.b, first);
    /* the taker empties its side and the buffers swap back */
    w.len = 0;
    ck_assert_int_eq(cr_outq_put(&q, "x", 1), APR_SUCCESS);
    cr_outq_take(&q, &w);
    ck_assert_uint_eq(w.len, 1);
    ck_assert_ptr_eq(q.b, first);
    cr_outq_free(&q);
    cr_outq_free(&w);
    ck_assert_ptr_null(q.b);
}
END_TEST

START_TEST(limit)
{
    cr_outq q;
    cr_outq_init(&q, 10);
    ck_assert_int_eq(cr_outq_put(&q, "0123456789", 10), APR_SUCCESS);
    ck_assert_int_eq(cr_outq_put(&q, "x", 1), APR_ENOSPC);
    ck_assert_uint_eq(q.len, 10);
    cr_outq_free(&q);
    cr_outq_init(&q, 10);
    ck_assert_int_eq(cr_outq_put(&q, "01234567890", 11), APR_ENOSPC);
    ck_assert_uint_eq(q.len, 0);
    ck_assert_int_eq(cr_outq_put(&q, "", 0), APR_SUCCESS);
    cr_outq_free(&q);
}
END_TEST

/* A producer appends numbered records under a mutex; the taker swaps and
 * checks them: nothing lost, duplicated or reordered. */
#define NREC 200000
typedef struct {
    apr_thread_mutex_t *mtx;
    cr_outq q;
    int full;
} shared_t;

static void *APR_THREAD_FUNC producer(apr_thread_t *t, void *data)
{
    shared_t *sh = data;
    unsigned i;
    for (i = 0; i < NREC; ) {
        apr_status_t rv;
        apr_thread_mutex_lock(sh->mtx);
        rv = cr_outq_put(&sh->q, (const char *)&i, sizeof(i));
        apr_thread_mutex_unlock(sh->mtx);
        if (rv == APR_SUCCESS) {
            i++;
        }
        else {
            sh->full++;       /* the taker is behind: try again */
        }
    }
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

START_TEST(two_threads)
{
    apr_pool_t *p;
    apr_thread_t *t;
    apr_status_t trv;
    shared_t sh;
    cr_outq w;
    unsigned next = 0;

    apr_pool_create(&p, NULL);
    memset(&sh, 0, sizeof(sh));
    apr_thread_mutex_create(&sh.mtx, APR_THREAD_MUTEX_DEFAULT, p);
    cr_outq_init(&sh.q, 4096);
    cr_outq_init(&w, 0);
    ck_assert_int_eq(apr_thread_create(&t, NULL, producer, &sh, p), APR_SUCCESS);
    while (next < NREC) {
        apr_size_t k;
        apr_thread_mutex_lock(sh.mtx);
        cr_outq_take(&sh.q, &w);
        apr_thread_mutex_unlock(sh.mtx);
        ck_assert_uint_le(w.len, 4096);
        ck_assert_uint_eq(w.len % sizeof(unsigned), 0);
        for (k = 0; k < w.len; k += sizeof(unsigned)) {
            unsigned v;
            memcpy(&v, w.b + k, sizeof(v));
            ck_assert_uint_eq(v, next);
            next++;
        }
        w.len = 0;
    }
    apr_thread_join(&trv, t);
    cr_outq_free(&sh.q);
    cr_outq_free(&w);
    apr_pool_destroy(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("outq");
    TCase *tc = tcase_create("outq");

    apr_initialize();
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, put_take_alternate);
    tcase_add_test(tc, limit);
    tcase_add_test(tc, two_threads);
    suite_add_tcase(s, tc);
    return cr_unit_run(s);
}
