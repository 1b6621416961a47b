/* SPDX-License-Identifier: Apache-2.0 */
/* Per-process table of reference-counted values (see cr_ptable.h). */
#include <string.h>
#include <apr_allocator.h>
#include <apr_hash.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>

#include "cr_ptable.h"

typedef struct entry_t entry_t;
struct entry_t {
    cr_ptable *t;
    const char *key;        /* the table's copy, kept for the key's life */
    void *value;
    cr_ptable_info info;
    apr_uint32_t refs;      /* users, +1 while in the table */
    entry_t *next_free;
    entry_t *newer, *older; /* recency list, while in the table */
};

struct cr_ptable {
    apr_pool_t *pool;       /* own allocator; used only under mutex */
    apr_thread_mutex_t *mutex;
    apr_hash_t *entries;
    apr_size_t bytes, max_bytes;
    cr_ptable_free_fn free_value;
    entry_t *free_entries;  /* recycled entry records */
    entry_t *newest, *oldest;
    apr_uint64_t evictions;
    apr_hash_t *keys;       /* every key seen, copied once into pool */
};

/* The table's copy of key, made once per distinct key (a key evicted and
 * put again reuses it, so churn does not grow the pool). */
static const char *key_copy_locked(cr_ptable *t, const char *key)
{
    const char *k = apr_hash_get(t->keys, key, APR_HASH_KEY_STRING);
    if (!k) {
        k = apr_pstrdup(t->pool, key);
        apr_hash_set(t->keys, k, APR_HASH_KEY_STRING, k);
    }
    return k;
}

/* Recency list, under the mutex. */
static void unlink_locked(cr_ptable *t, entry_t *e)
{
    if (e->newer) e->newer->older = e->older; else t->newest = e->older;
    if (e->older) e->older->newer = e->newer; else t->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void link_newest_locked(cr_ptable *t, entry_t *e)
{
    e->newer = NULL;
    e->older = t->newest;
    if (t->newest) t->newest->newer = e; else t->oldest = e;
    t->newest = e;
}

/* Under the mutex. */
static void unref_locked(entry_t *e)
{
    cr_ptable *t = e->t;
    if (--e->refs == 0) {
        t->free_value(e->value);
        e->value = NULL;
        e->next_free = t->free_entries;
        t->free_entries = e;
    }
}

/* Drop the least recently used entries until `need` more bytes fit; the
 * table's reference goes, a request still holding one keeps the value. */
static void evict_locked(cr_ptable *t, apr_size_t need)
{
    while (t->oldest && t->bytes + need > t->max_bytes) {
        entry_t *e = t->oldest;
        unlink_locked(t, e);
        apr_hash_set(t->entries, e->key, APR_HASH_KEY_STRING, NULL);
        t->bytes -= e->info.size;
        t->evictions++;
        unref_locked(e);
    }
}

static apr_status_t release(void *data)
{
    entry_t *e = data;
    cr_ptable *t = e->t;
    apr_thread_mutex_lock(t->mutex);
    unref_locked(e);
    apr_thread_mutex_unlock(t->mutex);
    return APR_SUCCESS;
}

/* When the table goes (its parent pool is cleared: the process ends), the
 * values it holds go with it; a value still used by a request can't be
 * (requests end before their process's pool is cleared). */
static apr_status_t destroy(void *data)
{
    cr_ptable *t = data;
    apr_hash_index_t *hi;
    for (hi = apr_hash_first(NULL, t->entries); hi; hi = apr_hash_next(hi)) {
        entry_t *e = apr_hash_this_val(hi);
        unref_locked(e);
    }
    apr_hash_clear(t->entries);
    return APR_SUCCESS;
}

apr_status_t cr_ptable_create(cr_ptable **out, apr_pool_t *parent, apr_size_t max_bytes,
                              cr_ptable_free_fn free_value)
{
    apr_allocator_t *alloc;
    apr_pool_t *pool;
    cr_ptable *t;
    apr_status_t rv;

    *out = NULL;
    if ((rv = apr_allocator_create(&alloc)) != APR_SUCCESS) {
        return rv;
    }
    if ((rv = apr_pool_create_ex(&pool, parent, NULL, alloc)) != APR_SUCCESS) {
        apr_allocator_destroy(alloc);
        return rv;
    }
    apr_allocator_owner_set(alloc, pool);
    t = apr_pcalloc(pool, sizeof(*t));
    t->pool = pool;
    t->max_bytes = max_bytes;
    t->free_value = free_value;
    t->entries = apr_hash_make(pool);
    t->keys = apr_hash_make(pool);
    if ((rv = apr_thread_mutex_create(&t->mutex, APR_THREAD_MUTEX_DEFAULT, pool))
        != APR_SUCCESS) {
        apr_pool_destroy(pool);
        return rv;
    }
    apr_pool_cleanup_register(pool, t, destroy, apr_pool_cleanup_null);
    *out = t;
    return APR_SUCCESS;
}

void *cr_ptable_get(cr_ptable *t, const char *key, const apr_uint64_t *version,
                    apr_pool_t *user, cr_ptable_info *info)
{
    entry_t *e;
    apr_thread_mutex_lock(t->mutex);
    e = apr_hash_get(t->entries, key, APR_HASH_KEY_STRING);
    if (!e || (version && e->info.version != *version)) {
        apr_thread_mutex_unlock(t->mutex);
        return NULL;
    }
    e->refs++;
    unlink_locked(t, e);
    link_newest_locked(t, e);
    if (info) {
        *info = e->info;
    }
    apr_thread_mutex_unlock(t->mutex);
    /* Registered before the caller makes pool buckets of the value: those
     * buckets' own cleanups (copy to the heap if still in flight) run
     * first. */
    apr_pool_cleanup_register(user, e, release, apr_pool_cleanup_null);
    return e->value;
}

void cr_ptable_restamp(cr_ptable *t, const char *key, apr_uint64_t version, apr_time_t stamp,
                       int flag)
{
    entry_t *e;
    apr_thread_mutex_lock(t->mutex);
    e = apr_hash_get(t->entries, key, APR_HASH_KEY_STRING);
    if (e && e->info.version == version) {
        e->info.stamp = stamp;
        e->info.flag = flag;
    }
    apr_thread_mutex_unlock(t->mutex);
}

int cr_ptable_put(cr_ptable *t, const char *key, void *value, const cr_ptable_info *info,
                  apr_pool_t *user)
{
    entry_t *e, *old;
    int kept = 1;

    apr_thread_mutex_lock(t->mutex);
    old = apr_hash_get(t->entries, key, APR_HASH_KEY_STRING);
    if (t->max_bytes && info->size > t->max_bytes) {
        kept = 0;           /* would never fit: keep the others */
    }
    if (t->free_entries) {
        e = t->free_entries;
        t->free_entries = e->next_free;
    }
    else {
        e = apr_palloc(t->pool, sizeof(*e));
    }
    memset(e, 0, sizeof(*e));
    e->t = t;
    e->value = value;
    e->info = *info;
    e->refs = (kept ? 1 : 0) + (user ? 1 : 0);
    if (kept) {
        if (old) {
            e->key = old->key;
            unlink_locked(t, old);
            t->bytes -= old->info.size;
            unref_locked(old);
        }
        if (t->max_bytes) {
            evict_locked(t, info->size);
        }
        if (!old) {
            e->key = key_copy_locked(t, key);
        }
        apr_hash_set(t->entries, e->key, APR_HASH_KEY_STRING, e);
        link_newest_locked(t, e);
        t->bytes += info->size;
    }
    else if (!user) {
        e->refs = 1;
        unref_locked(e);
        e = NULL;
    }
    apr_thread_mutex_unlock(t->mutex);
    if (e && user) {
        apr_pool_cleanup_register(user, e, release, apr_pool_cleanup_null);
    }
    return kept;
}

apr_size_t cr_ptable_count(cr_ptable *t, apr_size_t *bytes)
{
    return cr_ptable_stats(t, bytes, NULL, NULL);
}

apr_size_t cr_ptable_stats(cr_ptable *t, apr_size_t *bytes, apr_size_t *max_bytes,
                           apr_uint64_t *evictions)
{
    apr_size_t n;
    apr_thread_mutex_lock(t->mutex);
    n = apr_hash_count(t->entries);
    if (bytes) {
        *bytes = t->bytes;
    }
    if (max_bytes) {
        *max_bytes = t->max_bytes;
    }
    if (evictions) {
        *evictions = t->evictions;
    }
    apr_thread_mutex_unlock(t->mutex);
    return n;
}
