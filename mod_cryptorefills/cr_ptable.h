/* SPDX-License-Identifier: Apache-2.0 */
/* A per-process table of shared, read-only values, by key and version,
 * with reference counts: threads of one process share a value, a request
 * holds a reference until its pool is cleared, and a value replaced in the
 * table lives until its last user lets go.
 *
 * The table has its own pool (with its own allocator) and its own thread
 * mutex, and touches that pool only under that mutex: two tables never
 * share an allocator that threads could use at once.  Values are the
 * caller's (malloc'd data, a json-c object ...) and are released with the
 * free function given at creation. */
#ifndef CR_PTABLE_H
#define CR_PTABLE_H

#include <apr_pools.h>
#include <apr_time.h>

typedef struct cr_ptable cr_ptable;
typedef void (*cr_ptable_free_fn)(void *value);

/* What the table knows of a value besides the value. */
typedef struct cr_ptable_info {
    apr_uint64_t version;
    apr_size_t size;        /* counted against the table's budget */
    apr_time_t stamp;       /* the caller's (e.g. when last confirmed) */
    int flag;               /* the caller's */
} cr_ptable_info;

/* max_bytes: the table holds at most this many bytes (info.size summed),
 * evicting the least recently used entries (got or put) to make room; a
 * value larger than max_bytes is not kept (0: no limit).  An evicted value
 * that a request still holds lives until that request lets go.  The table
 * is destroyed with parent. */
apr_status_t cr_ptable_create(cr_ptable **t, apr_pool_t *parent, apr_size_t max_bytes,
                              cr_ptable_free_fn free_value);

/* The value under key, with a reference released when user is cleared;
 * NULL when absent or (version non-NULL) of another version.  info, when
 * non-NULL, receives the entry's info. */
void *cr_ptable_get(cr_ptable *t, const char *key, const apr_uint64_t *version,
                    apr_pool_t *user, cr_ptable_info *info);

/* Set stamp and flag of key's entry if it still holds version. */
void cr_ptable_restamp(cr_ptable *t, const char *key, apr_uint64_t version, apr_time_t stamp,
                       int flag);

/* Put value under key (replacing any other), taking ownership of it.  With
 * user non-NULL the caller also keeps a reference until user is cleared.
 * Returns 1 when the table keeps it (having evicted what it had to); 0
 * when the value alone is over the budget (then it is released at once, or
 * when user is cleared). */
int cr_ptable_put(cr_ptable *t, const char *key, void *value, const cr_ptable_info *info,
                  apr_pool_t *user);

/* Number of keys and bytes held (for tests). */
apr_size_t cr_ptable_count(cr_ptable *t, apr_size_t *bytes);
/* Same, with the budget and the evictions so far (for mod_status); any
 * out-pointer may be NULL. */
apr_size_t cr_ptable_stats(cr_ptable *t, apr_size_t *bytes, apr_size_t *max_bytes,
                           apr_uint64_t *evictions);

#endif
