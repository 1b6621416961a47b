/* Catalog routes (brands, homepage, payment_vias) served from the socache.
 *
 * Shared state, created in post_config's second pass and owned by pconf:
 *   - the socache instance (shmcb by default; memcache/redis for a farm);
 *   - a global mutex (type "cryptorefills-cache", so `Mutex` configures
 *     it) that makes the lease check-and-set atomic across children, and
 *     that guards every store and retrieve of a provider that is not
 *     MT-safe (shmcb);
 *   - counters in anonymous shared memory.
 * Children inherit the mappings at fork and re-open the mutex in
 * child_init.  On a graceful restart the parent drops its mappings and
 * makes new ones; old children keep theirs until they exit.
 *
 * The lock is only held for socache copies: never across an upstream call,
 * a JSON parse or compression.  One refresher per name at a time, chosen by
 * a lease record with an expiry, so a refresher that dies (killed child)
 * frees the name when its lease runs out. */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_mutex.h"
#include "ap_mpm.h"
#include "mod_status.h"
#include "apr_strings.h"
#include "apr_date.h"
#include "apr_optional_hooks.h"
#include "apr_hash.h"
#include "apr_thread_mutex.h"
#include <stdlib.h>

#include "mod_cryptorefills_int.h"
#include "cr_centry.h"
#include "cr_json.h"
#include "cr_validate.h"

/* Default shmcb size: every country's catalog and homepage at once (the US
 * catalog is the largest, a few hundred KB), plus idempotency records. */
#define CR_SHMCB_DEFAULT_SIZE   (64 * 1024 * 1024)
/* Hints that make shmcb choose 32 subcaches of 2 MiB (the largest object)
 * and some 4,000 index slots. */
#define CR_HINT_AVG_OBJ         (16 * 1024)
#define CR_HINT_AVG_ID          32
/* A lease outlives the slowest refresh by this much. */
#define CR_LEASE_SLACK          apr_time_from_sec(5)
/* After a failed refresh, the next attempt waits this long (stale is served). */
#define CR_REFRESH_BACKOFF      apr_time_from_sec(5)
#define CR_WAIT_STEP            apr_time_from_msec(20)

typedef struct cr_cache_t {
    const ap_socache_provider_t *provider;
    ap_socache_instance_t *inst;
    apr_global_mutex_t *mutex;
    int lock_all;               /* provider not MT-safe: lock every call */
    const char *desc;
} cr_cache_t;

static cr_cache_t cache;
cr_stats_t *cr_stats;

/* The cache's own shared state, in the counters' segment after cr_stats. */
typedef struct cr_cache_shared {
    /* Smallest record (id + data) the provider refused with APR_ENOSPC, 0
     * while none was.  shmcb refuses a record larger than one subcache every
     * time (and logs an error for each try), so larger ones aren't tried. */
    volatile apr_uint32_t too_big;
    /* Refresh leases of this server's requests when the provider is a
     * network one (see cr_cache_lease), by hash of the name; under the
     * global mutex. */
#define CR_LOCAL_LEASES 1024
    struct cr_local_lease {
        apr_uint64_t hash;
        apr_time_t until;
    } leases[CR_LOCAL_LEASES];
} cr_cache_shared;
typedef struct cr_local_lease cr_local_lease;
static cr_cache_shared *cshared;

/* ---- lifecycle ------------------------------------------------------------------ */

int cr_cache_pre_config(apr_pool_t *pconf)
{
    return ap_mutex_register(pconf, CR_MUTEX_TYPE, NULL, APR_LOCK_DEFAULT, 0);
}

static apr_status_t cache_destroy(void *data)
{
    cr_cache_t *cc = data;
    if (cc->inst) {
        cc->provider->destroy(cc->inst, NULL);
        cc->inst = NULL;
    }
    return APR_SUCCESS;
}

static int status_hook(request_rec *r, int flags);

/* The size shmcb will give its segment for args "path(bytes)" (its own
 * default, 512000, without a size). */
static apr_int64_t shmcb_size(const char *args)
{
    const char *lp = args ? strrchr(args, '(') : NULL;
    apr_int64_t n = lp ? apr_atoi64(lp + 1) : 0;
    return n > 0 ? n : 512000;
}

int cr_cache_post_config(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s)
{
    cr_srv_conf *sc = ap_get_module_config(s->module_config, &cryptorefills_module);
    struct ap_socache_hints hints;
    apr_shm_t *shm;
    const char *args, *err;
    apr_status_t rv;

    rv = apr_shm_create(&shm, APR_ALIGN_DEFAULT(sizeof(cr_stats_t)) + sizeof(cr_cache_shared), NULL,
                        pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, CRLOGNO(01201)
                     "cannot create shared memory for counters");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    cr_stats = apr_shm_baseaddr_get(shm);
    memset((void *)cr_stats, 0, APR_ALIGN_DEFAULT(sizeof(cr_stats_t)) + sizeof(cr_cache_shared));
    cshared = (cr_cache_shared *)(void *)((char *)cr_stats + APR_ALIGN_DEFAULT(sizeof(cr_stats_t)));
    if (sc->max_streams != CR_UNSET_INT) {
        cr_stats->max_streams = (apr_uint32_t)sc->max_streams;
    }
    else {
        /* Half the workers: the other half keeps serving catalogs and orders. */
        int daemons = 1, threads = 1;
        ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &daemons);
        ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
        ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons);
        cr_stats->max_streams = (apr_uint32_t)((daemons > 0 ? daemons : 1)
                                               * (threads > 0 ? threads : 1) / 2);
        if (cr_stats->max_streams < 1) {
            cr_stats->max_streams = 1;
        }
    }

    memset(&cache, 0, sizeof(cache));
    cache.provider = sc->cache_provider;
    args = sc->cache_args;
    if (!cache.provider) {
        cache.provider = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, "shmcb",
                                            AP_SOCACHE_PROVIDER_VERSION);
        if (!cache.provider) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, CRLOGNO(01202)
                         "the default cache needs mod_socache_shmcb: load it, or "
                         "set CryptorefillsCache to another provider");
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    if ((!args || !*args) && !strcmp(cache.provider->name, "shmcb")) {
        /* shmcb's own default (512 KB) can't hold one large catalog. */
        args = apr_psprintf(ptemp, "%s(%d)", ap_runtime_dir_relative(ptemp, "cryptorefills-cache"),
                            CR_SHMCB_DEFAULT_SIZE);
    }
    cache.desc = apr_pstrcat(pconf, cache.provider->name, args ? ":" : "", args ? args : "", NULL);
    err = cache.provider->create(&cache.inst, args, ptemp, pconf);
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, CRLOGNO(01203)
                     "CryptorefillsCache %s: %s", cache.desc, err);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    memset(&hints, 0, sizeof(hints));
    hints.avg_id_len = CR_HINT_AVG_ID;
    hints.avg_obj_size = CR_HINT_AVG_OBJ;
    if (!strcmp(cache.provider->name, "shmcb")) {
        /* shmcb divides by zero (SIGFPE in the parent, nothing logged) when
         * the hints leave fewer than 2 index slots: size / (avg_obj + avg_id).
         * For a small cache, lower avg_obj so that it keeps 16 slots. */
        apr_int64_t size = shmcb_size(args);
        if (size / (CR_HINT_AVG_OBJ + CR_HINT_AVG_ID) < 16) {
            hints.avg_obj_size = (apr_size_t)(size / 16 > 2 * CR_HINT_AVG_ID
                                              ? size / 16 - CR_HINT_AVG_ID : CR_HINT_AVG_ID);
        }
    }
    hints.expiry_interval = 30;
    rv = cache.provider->init(cache.inst, "cryptorefills", &hints, s, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, CRLOGNO(01204)
                     "cannot initialise the cache %s", cache.desc);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    apr_pool_cleanup_register(pconf, &cache, cache_destroy, apr_pool_cleanup_null);
    cache.lock_all = (cache.provider->flags & AP_SOCACHE_FLAG_NOTMPSAFE) != 0;

    rv = ap_global_mutex_create(&cache.mutex, NULL, CR_MUTEX_TYPE, NULL, s, pconf, 0);
    if (rv != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;   /* ap_global_mutex_create logged why */
    }
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, CRLOGNO(01205) "cache: %s", cache.desc);
    return OK;
}

void cr_cache_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_status_t rv;
    cr_cache_child_init_parsed(pchild);
    if (!cache.mutex) {
        return;
    }
    rv = apr_global_mutex_child_init(&cache.mutex, apr_global_mutex_lockfile(cache.mutex), pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, CRLOGNO(01206)
                     "cannot re-open the cache mutex in this child");
    }
}

void cr_cache_register_hooks(void)
{
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}

/* ---- socache access --------------------------------------------------------------- */

/* Non-zero when the mutex is held.  On failure nothing guarded may run
 * (shmcb is not thread-safe) and unlock must not be called. */
static int lock(request_rec *r)
{
    apr_status_t rv = apr_global_mutex_lock(cache.mutex);
    if (rv != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, CRLOGNO(01207) "cache mutex lock failed");
        return 0;
    }
    return 1;
}

static void unlock(request_rec *r)
{
    apr_status_t rv = apr_global_mutex_unlock(cache.mutex);
    if (rv != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, CRLOGNO(01208) "cache mutex unlock failed");
    }
}

/* Retrieve into buf (cap bytes); *len gets the size.  locked: the caller
 * holds the mutex already. */
static apr_status_t get_rec_rv(request_rec *r, const unsigned char *id, apr_size_t idlen,
                               unsigned char *buf, apr_size_t cap, apr_size_t *len, int locked)
{
    unsigned int n = (unsigned int)cap;
    apr_status_t rv;
    *len = 0;
    if (!cache.inst) {
        return APR_EINIT;
    }
    if (cache.lock_all && !locked && !lock(r)) {
        return APR_EGENERAL;
    }
    rv = cache.provider->retrieve(cache.inst, r->server, id, (unsigned int)idlen, buf, &n, r->pool);
    if (cache.lock_all && !locked) {
        unlock(r);
    }
    *len = n;
    return rv;
}

static int get_rec(request_rec *r, const unsigned char *id, apr_size_t idlen,
                   unsigned char *buf, apr_size_t cap, apr_size_t *len, int locked)
{
    return get_rec_rv(r, id, idlen, buf, cap, len, locked) == APR_SUCCESS;
}

static apr_status_t put_rec(request_rec *r, const unsigned char *id, apr_size_t idlen,
                            apr_time_t expiry, unsigned char *data, apr_size_t len, int locked)
{
    apr_status_t rv;
    apr_uint32_t big, size = (apr_uint32_t)(len + idlen);
    if (!cache.inst) {
        return APR_EINIT;
    }
    big = cshared ? apr_atomic_read32(&cshared->too_big) : 0;
    if (big && size >= big) {
        return APR_ENOSPC;      /* refused before, would be refused again */
    }
    if (cache.lock_all && !locked && !lock(r)) {
        return APR_EGENERAL;
    }
    rv = cache.provider->store(cache.inst, r->server, id, (unsigned int)idlen, expiry, data,
                               (unsigned int)len, r->pool);
    if (cache.lock_all && !locked) {
        unlock(r);
    }
    if (rv == APR_ENOSPC && cshared) {
        /* Too large for this cache whatever is evicted (shmcb: larger than a
         * subcache): remember the smallest such size. */
        do {
            big = apr_atomic_read32(&cshared->too_big);
        } while ((!big || size < big) && apr_atomic_cas32(&cshared->too_big, size, big) != big);
    }
    return rv;
}

static void del_rec(request_rec *r, const unsigned char *id, apr_size_t idlen, int locked)
{
    if (!cache.inst) {
        return;
    }
    if (cache.lock_all && !locked && !lock(r)) {
        return;
    }
    cache.provider->remove(cache.inst, r->server, id, (unsigned int)idlen, r->pool);
    if (cache.lock_all && !locked) {
        unlock(r);
    }
}

int cr_cache_get(request_rec *r, cr_cid_kind kind, const char *name, unsigned char *buf,
                 apr_size_t cap, apr_size_t *len)
{
    unsigned char id[CR_CENTRY_ID_MAX];
    apr_size_t idlen = cr_centry_id(id, kind, name);
    return get_rec(r, id, idlen, buf, cap, len, 0);
}

apr_status_t cr_cache_put(request_rec *r, cr_cid_kind kind, const char *name, apr_time_t expiry,
                          unsigned char *data, apr_size_t len)
{
    unsigned char id[CR_CENTRY_ID_MAX];
    apr_size_t idlen = cr_centry_id(id, kind, name);
    return put_rec(r, id, idlen, expiry, data, len, 0);
}

/* Take the lease on name for `hold`: 1 when this request is now the one
 * refresher.
 *
 * shmcb (in memory, not MT-safe): the check and the set happen under the
 * global mutex, so exactly one request in this server wins.
 *
 * A network provider (memcache, redis): no lock may be held across its
 * round trips, so this server's requests are serialised by a slot in
 * shared memory (taken under the mutex, memory only), and the farm by the
 * lease record in the shared store, checked then set without a lock (two
 * servers can both win within one round trip).
 *
 * Either way the record's own expiry frees the name if the winner never
 * comes back, and a cache that can't store the lease (down, full) makes
 * every request its own refresher: the shoppers get their answer from the
 * upstream rather than wait for a refresh nobody runs. */
static int local_lease(request_rec *r, const char *name, apr_time_t until, int take)
{
    apr_uint64_t h = cr_hash64(name, strlen(name));
    cr_local_lease *l;
    apr_time_t now = apr_time_now();
    int won = 1;

    if (!cshared) {
        return 1;
    }
    l = &cshared->leases[h % CR_LOCAL_LEASES];
    if (!lock(r)) {
        return take;        /* can't coordinate: don't block a refresh on it */
    }
    if (!take) {
        if (l->hash == h) {
            l->until = until;           /* release now, or keep for a back-off */
        }
    }
    else if (l->until > now) {
        /* Held: by a request for this name (wait for it), or for another
         * name in the same slot (rare: go on to the shared record). */
        won = l->hash != h;
    }
    else {
        l->hash = h;
        l->until = until;
    }
    unlock(r);
    return won;
}

int cr_cache_lease(request_rec *r, const char *name, apr_interval_time_t hold)
{
    unsigned char id[CR_CENTRY_ID_MAX], buf[16];
    apr_size_t idlen = cr_centry_id(id, CR_CID_LEASE, name), n;
    apr_time_t until = apr_time_now() + hold;
    int won;

    if (!cache.inst) {
        return 1;
    }
    if (cache.lock_all) {
        if (!lock(r)) {
            return 1;       /* no coordination possible: refresh rather than wait */
        }
        won = !get_rec(r, id, idlen, buf, sizeof(buf), &n, 1);
        if (won) {
            memcpy(buf, "lease", 5);
            put_rec(r, id, idlen, until, buf, 5, 1);
        }
        unlock(r);
        return won;
    }
    if (!local_lease(r, name, until, 1)) {
        return 0;                       /* another request of this server refreshes */
    }
    won = !get_rec(r, id, idlen, buf, sizeof(buf), &n, 0);
    if (won) {
        memcpy(buf, "lease", 5);
        put_rec(r, id, idlen, until, buf, 5, 0);
    }
    else {
        local_lease(r, name, 0, 0);     /* another server refreshes: not us */
    }
    return won;
}

/* Store data under (kind, name) unless a record is there already: 1 when
 * stored (this request claimed the name), 0 with the existing record copied
 * into buf (*len), -1 when the cache can't be used.  Atomic within this
 * server (the global mutex); across a farm sharing Redis or memcached, two
 * servers can still race in the window of one round trip. */
int cr_cache_claim(request_rec *r, cr_cid_kind kind, const char *name, apr_time_t expiry,
                   unsigned char *data, apr_size_t dlen, unsigned char *buf, apr_size_t cap,
                   apr_size_t *len)
{
    unsigned char id[CR_CENTRY_ID_MAX];
    apr_size_t idlen = cr_centry_id(id, kind, name);
    const char *slot = NULL;
    apr_status_t rv;
    int rc, tries;

    if (!cache.inst) {
        return -1;
    }
    if (cache.lock_all) {
        /* shmcb: the check and the set under the mutex, memory only. */
        if (!lock(r)) {
            return -1;
        }
        rv = get_rec_rv(r, id, idlen, buf, cap, len, 1);
        rc = rv == APR_SUCCESS ? 0 : APR_STATUS_IS_NOTFOUND(rv)
             ? (put_rec(r, id, idlen, expiry, data, dlen, 1) == APR_SUCCESS ? 1 : -1) : -1;
        unlock(r);
        return rc;
    }
    /* A network store: never hold the mutex across its round trips.  A
     * slot in shared memory makes this server's requests for one name take
     * turns (the mutex guards only that memory); the store's record settles
     * it between servers. */
    slot = apr_pstrcat(r->pool, name, "#claim", NULL);
    for (tries = 0; !local_lease(r, slot, apr_time_now() + apr_time_from_sec(5), 1); tries++) {
        if (tries >= 250) {
            return -1;
        }
        apr_sleep(apr_time_from_msec(20));
    }
    rv = get_rec_rv(r, id, idlen, buf, cap, len, 0);
    if (rv == APR_SUCCESS) {
        rc = 0;
    }
    else if (APR_STATUS_IS_NOTFOUND(rv)) {
        rc = put_rec(r, id, idlen, expiry, data, dlen, 0) == APR_SUCCESS ? 1 : -1;
    }
    else {
        /* A read that failed is not "absent": writing now could replace a
         * finished order's record and let it be created again. */
        rc = -1;
    }
    local_lease(r, slot, 0, 0);
    return rc;
}

/* Give the lease back now (after a successful refresh), or keep it for
 * `backoff` (after a failed one, so an outage costs one upstream try per
 * backoff, not one per request). */
void cr_cache_unlease(request_rec *r, const char *name, apr_interval_time_t backoff)
{
    unsigned char id[CR_CENTRY_ID_MAX], buf[5];
    apr_size_t idlen = cr_centry_id(id, CR_CID_LEASE, name);
    if (!cache.lock_all) {
        local_lease(r, name, backoff > 0 ? apr_time_now() + backoff : 0, 0);
    }
    if (backoff > 0) {
        memcpy(buf, "lease", 5);
        put_rec(r, id, idlen, apr_time_now() + backoff, buf, 5, 0);
    }
    else {
        del_rec(r, id, idlen, 0);
    }
}

/* ---- catalog entries --------------------------------------------------------------- */

static int get_meta(request_rec *r, const char *name, cr_centry_meta *m)
{
    unsigned char buf[CR_CENTRY_META_LEN];
    apr_size_t n;
    return cr_cache_get(r, CR_CID_META, name, buf, sizeof(buf), &n)
        && cr_centry_meta_decode(buf, n, m);
}

/* The variant's bytes (without header) for meta m, or NULL when evicted or
 * replaced by another generation meanwhile. */
/* Each process keeps the variants it served last, per name and version, so
 * a hit copies 64 bytes of meta out of the shared cache instead of the
 * whole catalog: the cross-process mutex is then held for a moment, not
 * for a 170 KB copy (which serialised all children under load).  Memory is
 * bounded per process; a copy in use by a request lives until that request
 * ends (reference count under the process mutex). */
#define CR_LOCAL_COPIES_MAX (32 * 1024 * 1024)

typedef struct local_copy_t {
    apr_uint64_t version;
    char *data;
    apr_size_t len;
    apr_uint32_t refs;      /* requests using it, +1 while in the table */
    char *key;              /* the table's key, handed on to a successor */
} local_copy_t;

static apr_hash_t *local_copies;
static apr_size_t local_copies_bytes;
static apr_thread_mutex_t *local_mutex;

static void local_unref_locked(local_copy_t *lc)
{
    if (--lc->refs == 0) {
        free(lc->data);
        free(lc->key);
        free(lc);
    }
}

static apr_status_t local_release(void *data)
{
    apr_thread_mutex_lock(local_mutex);
    local_unref_locked(data);
    apr_thread_mutex_unlock(local_mutex);
    return APR_SUCCESS;
}

static void local_copies_init(apr_pool_t *pchild)
{
    local_copies = apr_hash_make(pchild);
    apr_thread_mutex_create(&local_mutex, APR_THREAD_MUTEX_DEFAULT, pchild);
}

/* This process's copy of the variant for version m->version, or NULL. */
static const char *local_get(request_rec *r, const char *key, apr_uint64_t version,
                             apr_size_t *len)
{
    local_copy_t *lc;
    if (!local_mutex) {
        return NULL;
    }
    apr_thread_mutex_lock(local_mutex);
    lc = apr_hash_get(local_copies, key, APR_HASH_KEY_STRING);
    if (!lc || lc->version != version) {
        apr_thread_mutex_unlock(local_mutex);
        return NULL;
    }
    lc->refs++;
    apr_thread_mutex_unlock(local_mutex);
    /* Registered before the caller makes pool buckets of the data: those
     * buckets' own cleanups (copy to the heap if still in flight) run
     * first. */
    apr_pool_cleanup_register(r->pool, lc, local_release, apr_pool_cleanup_null);
    *len = lc->len;
    return lc->data;
}

static void local_put(const char *key, apr_uint64_t version, const char *data, apr_size_t len)
{
    local_copy_t *lc, *old;
    if (!local_mutex || len > CR_LOCAL_COPIES_MAX / 4) {
        return;
    }
    lc = calloc(1, sizeof(*lc));
    if (!lc || !(lc->data = malloc(len ? len : 1))) {
        free(lc);
        return;
    }
    memcpy(lc->data, data, len);
    lc->len = len;
    lc->version = version;
    lc->refs = 1;           /* the table's */
    apr_thread_mutex_lock(local_mutex);
    old = apr_hash_get(local_copies, key, APR_HASH_KEY_STRING);
    if (!old && local_copies_bytes + len > CR_LOCAL_COPIES_MAX) {
        apr_thread_mutex_unlock(local_mutex);
        free(lc->data);
        free(lc);
        return;             /* full: serve from the shared cache alone */
    }
    if (old) {
        lc->key = old->key;
        old->key = NULL;
        local_copies_bytes -= old->len;
        local_unref_locked(old);
    }
    else {
        lc->key = strdup(key);
    }
    if (lc->key) {
        apr_hash_set(local_copies, lc->key, APR_HASH_KEY_STRING, lc);
        local_copies_bytes += len;
    }
    else {
        local_unref_locked(lc);
    }
    apr_thread_mutex_unlock(local_mutex);
}

/* The variant's bytes (without header) for meta m, or NULL when evicted or
 * replaced by another generation meanwhile. */
static const char *get_variant(request_rec *r, const char *name, const cr_centry_meta *m,
                               int gz, apr_size_t *len)
{
    apr_size_t want = (gz ? m->gz_len : m->body_len) + CR_CENTRY_VHDR_LEN, n;
    const char *key = apr_pstrcat(r->pool, name, gz ? "#z" : "#b", NULL);
    const char *local = local_get(r, key, m->version, len);
    unsigned char *buf;

    if (local) {
        return local;
    }
    buf = apr_palloc(r->pool, want);
    if (!cr_cache_get(r, gz ? CR_CID_GZIP : CR_CID_BODY, name, buf, want, &n)
        || n != want || !cr_centry_vhdr_check(buf, n, m->version)) {
        return NULL;
    }
    *len = n - CR_CENTRY_VHDR_LEN;
    local_put(key, m->version, (const char *)buf + CR_CENTRY_VHDR_LEN, *len);
    return (const char *)buf + CR_CENTRY_VHDR_LEN;
}

/* Store a fresh answer: variants first, meta last, so a reader that finds
 * the new meta finds its variants too (or notices a mismatch). */
static int store_entry(request_rec *r, const char *name, const char *body, apr_size_t len,
                       apr_time_t fetched, apr_time_t expiry, cr_centry_meta *m)
{
    unsigned char *rec, *gz, meta[CR_CENTRY_META_LEN];
    apr_size_t gzlen = 0;
    apr_status_t rv;

    m->version = cr_hash64(body, len) ^ (apr_uint64_t)len;
    m->fetched = fetched;
    m->body_len = (apr_uint32_t)len;
    gz = cr_gzip(r->pool, body, len, &gzlen);
    m->gz_len = gz && gzlen < len ? (apr_uint32_t)gzlen : 0;

    rec = apr_palloc(r->pool, len + CR_CENTRY_VHDR_LEN);
    cr_centry_vhdr_encode(m->version, rec);
    memcpy(rec + CR_CENTRY_VHDR_LEN, body, len);
    rv = cr_cache_put(r, CR_CID_BODY, name, expiry, rec, len + CR_CENTRY_VHDR_LEN);
    if (rv == APR_SUCCESS && m->gz_len) {
        rec = apr_palloc(r->pool, m->gz_len + CR_CENTRY_VHDR_LEN);
        cr_centry_vhdr_encode(m->version, rec);
        memcpy(rec + CR_CENTRY_VHDR_LEN, gz, m->gz_len);
        rv = cr_cache_put(r, CR_CID_GZIP, name, expiry, rec, m->gz_len + CR_CENTRY_VHDR_LEN);
    }
    if (rv == APR_SUCCESS) {
        cr_centry_meta_encode(m, meta);
        rv = cr_cache_put(r, CR_CID_META, name, expiry, meta, sizeof(meta));
    }
    if (rv != APR_SUCCESS) {
        apr_uint32_t before = apr_atomic_inc32(&cr_stats->cache_store_failures);
        /* Logged once (per server generation) at warn; mod_status counts
         * every failure, and the debug level names each one. */
        ap_log_rerror(APLOG_MARK, before == 0 ? APLOG_WARNING : APLOG_DEBUG, rv, r,
                      CRLOGNO(01209) "cannot store %s (%" APR_SIZE_T_FMT " bytes) in the "
                      "cache %s: answering from the upstream copy%s", name, len, cache.desc,
                      before == 0 ? " (logged once: Cryptorefillscache_store_failures in "
                      "mod_status counts them)" : "");
        return 0;
    }
    return 1;
}

static int accepts_gzip(request_rec *r)
{
    const char *ae = apr_table_get(r->headers_in, "Accept-Encoding");
    while (ae && *ae) {
        const char *end = ae + strcspn(ae, ",");
        const char *semi = memchr(ae, ';', (apr_size_t)(end - ae));
        const char *tok_end = semi ? semi : end;
        while (*ae == ' ' || *ae == '\t') {
            ae++;
        }
        while (tok_end > ae && (tok_end[-1] == ' ' || tok_end[-1] == '\t')) {
            tok_end--;
        }
        if ((tok_end - ae == 4 && !strncasecmp(ae, "gzip", 4))
            || (tok_end - ae == 6 && !strncasecmp(ae, "x-gzip", 6))
            || (tok_end - ae == 1 && *ae == '*')) {
            const char *q = semi ? strstr(semi, "q=") : NULL;
            if (!q || q > end) {
                return 1;
            }
            q += 2;
            /* q=0, q=0.0, q=0.000 refuse; anything else accepts */
            while (*q == '0' || *q == '.') {
                q++;
            }
            return !(q >= end || *q == ' ' || *q == ',' || *q == ';' || *q == '\0');
        }
        ae = *end ? end + 1 : end;
    }
    return 0;
}

/* Answer from the cached entry.  Returns -1 when a variant is gone (the
 * caller then treats it as a miss). */
static int send_cached(request_rec *r, const char *name, const cr_centry_meta *m,
                       const char *how, apr_interval_time_t ttl)
{
    apr_time_t now = apr_time_now();
    apr_interval_time_t left = m->fetched + ttl - now;
    int gz = m->gz_len && accepts_gzip(r);
    const char *body = NULL;
    apr_size_t len = 0;

    int not_modified = cr_centry_etag_match(apr_table_get(r->headers_in, "If-None-Match"),
                                            m->version);

    /* The variant first: if it was evicted meanwhile, the caller answers
     * another way and must not inherit this version's validators. */
    if (!not_modified) {
        body = get_variant(r, name, m, gz, &len);
        if (!body) {
            return -1;
        }
    }
    apr_table_setn(r->headers_out, "Vary", "Accept-Encoding");
    apr_table_setn(r->headers_out, "X-Cryptorefills-Cache", how);
    apr_table_setn(r->headers_out, "ETag", cr_centry_etag(r->pool, m->version, gz));
    apr_table_setn(r->headers_out, "Cache-Control",
                   apr_psprintf(r->pool, "public, max-age=%" APR_TIME_T_FMT,
                                left > 0 ? apr_time_sec(left) : (apr_time_t)0));
    {
        char *lm = apr_palloc(r->pool, APR_RFC822_DATE_LEN);
        apr_rfc822_date(lm, m->fetched);
        apr_table_setn(r->headers_out, "Last-Modified", lm);
    }
    if (not_modified) {
        CR_COUNT(cache_not_modified);
        return HTTP_NOT_MODIFIED;
    }
    if (gz) {
        apr_table_setn(r->headers_out, "Content-Encoding", "gzip");
    }
    /* Already compressed, or deliberately not: mod_deflate stays out. */
    apr_table_setn(r->subprocess_env, "no-gzip", "1");
    return cr_send(r, HTTP_OK, "application/json", body, len);
}

/* Is this upstream answer one to keep? */
static int cacheable(request_rec *r, const cr_upstream_resp *resp)
{
    json_object *o;
    return resp->rc == CR_UP_OK && resp->status == 200 && resp->len > 0
        && !cr_json_parse(r->pool, resp->body, resp->len, CR_JSON_MAX_DEPTH, &o);
}

/* A failure worth hiding behind a stale copy: the upstream is down or sick,
 * not answering a definite "no" (4xx other than 429). */
static int serve_stale_after(const cr_upstream_resp *resp)
{
    return resp->rc != CR_UP_OK || resp->status >= 500 || resp->status == 429
        || resp->status == 200 /* 200 that isn't JSON */;
}

typedef enum {
    OBTAIN_ENTRY,           /* *m describes a cached entry (how: hit, stale, miss) */
    OBTAIN_UNSTORED,        /* resp holds a good answer the cache could not keep */
    OBTAIN_FAILED           /* resp holds the failed upstream exchange */
} obtain_rc;

static const char *entry_name(request_rec *r, const cr_dir_conf *c, const char *route,
                              const char *country)
{
    /* The upstream URL is part of the name, so two vhosts fronting two
     * upstreams (say sandbox and production) never share an entry. */
    return apr_psprintf(r->pool, "%s:%s:%s", route, country,
                        c->upstream ? c->upstream : CR_DEFAULT_UPSTREAM);
}

/* A failed exchange for name that ended at or after `since` (so after this
 * request began waiting): its outcome in resp.  *buf is allocated once per
 * request and reused across polls. */
static int shared_failure(request_rec *r, const char *name, apr_time_t since,
                          unsigned char **buf, cr_upstream_resp *resp)
{
    apr_size_t cap = CR_CENTRY_FAIL_HDR_LEN + CR_CENTRY_FAIL_BODY_MAX, n;
    cr_centry_fail f;

    if (!*buf) {
        *buf = apr_palloc(r->pool, cap);
    }
    if (!cr_cache_get(r, CR_CID_FAIL, name, *buf, cap, &n) || !cr_centry_fail_decode(*buf, n, &f)
        || f.ended < since) {
        return 0;
    }
    memset(resp, 0, sizeof(*resp));
    resp->rc = (cr_upstream_rc)f.rc;
    resp->status = f.status;
    resp->retry_after = f.retry_after;
    resp->body = apr_pstrmemdup(r->pool, f.body, f.len);
    resp->len = f.len;
    resp->error = "the exchange of a concurrent request for the same catalog failed";
    return 1;
}

/* Find or make the cached answer for name: fresh entries are used as they
 * are; otherwise one request server-wide (the lease holder) refreshes while
 * the others serve the stale copy or, with none, wait a bounded time. */
static obtain_rc obtain(request_rec *r, const cr_dir_conf *c, const cr_route_req *rr,
                        const char *country, const char *name, cr_centry_meta *m,
                        const char **how, cr_upstream_resp *resp)
{
    apr_interval_time_t ttl = CR_CONF_TIME(c, cache_ttl, CR_DEF_CACHE_TTL);
    apr_interval_time_t stale = CR_CONF_TIME(c, cache_stale, CR_DEF_CACHE_STALE);
    apr_interval_time_t timeout = CR_CONF_TIME(c, timeout, CR_DEF_TIMEOUT);
    apr_interval_time_t hold = CR_CONF_TIME(c, connect_timeout, CR_DEF_CONNECT_TIMEOUT)
                               + timeout + CR_LEASE_SLACK;
    apr_time_t started = apr_time_now();
    apr_time_t deadline = started + timeout + apr_time_from_sec(1);
    apr_time_t now;
    unsigned char *fbuf = NULL;
    int have;

    for (;;) {
        now = apr_time_now();
        have = get_meta(r, name, m);
        if (have && now < m->fetched + ttl) {
            *how = "hit";
            return OBTAIN_ENTRY;
        }
        if (!have && shared_failure(r, name, started, &fbuf, resp)) {
            /* The exchange this request waited for failed: its answer is
             * this request's too (single flight, failures included). */
            return OBTAIN_FAILED;
        }
        if (cr_cache_lease(r, name, hold)) {
            /* Look again: the refresher before us may have stored the entry
             * and let the lease go between our look and our lease. */
            if (get_meta(r, name, m) && apr_time_now() < m->fetched + ttl) {
                cr_cache_unlease(r, name, 0);
                *how = "hit";
                return OBTAIN_ENTRY;
            }
            break;          /* this request refreshes */
        }
        if (have) {
            *how = "stale"; /* someone else refreshes: serve what we have */
            return OBTAIN_ENTRY;
        }
        if (now >= deadline) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01210)
                          "gave up waiting for the refresh of %s:%s", rr->def->name, country);
            memset(resp, 0, sizeof(*resp));
            resp->rc = CR_UP_TIMEOUT;
            resp->error = "waiting for another request's refresh";
            return OBTAIN_FAILED;
        }
        CR_COUNT(cache_waits);
        apr_sleep(CR_WAIT_STEP);
    }

    cr_fetch(r, c, rr, country, NULL, 0, resp);
    CR_COUNT(cache_refreshes);
    if (cacheable(r, resp)) {
        int stored;
        now = apr_time_now();
        stored = store_entry(r, name, resp->body, resp->len, now, now + ttl + stale, m);
        cr_cache_unlease(r, name, 0);
        *how = "miss";
        return stored ? OBTAIN_ENTRY : OBTAIN_UNSTORED;
    }
    if (!have) {
        /* No copy to hide the failure behind: tell the requests waiting for
         * this exchange how it ended (they answer with it rather than queue
         * for exchanges of their own), and free the name at once, so the
         * next request tries the upstream instead of waiting out a back-off
         * with nothing to serve meanwhile. */
        cr_centry_fail f;
        unsigned char *rec;
        apr_size_t rlen;
        f.ended = apr_time_now();
        f.rc = (int)resp->rc;
        f.status = resp->status;
        f.retry_after = resp->retry_after;
        f.body = resp->body;
        f.len = resp->len;
        rec = cr_centry_fail_encode(r->pool, &f, &rlen);
        cr_cache_put(r, CR_CID_FAIL, name, f.ended + CR_REFRESH_BACKOFF, rec, rlen);
        cr_cache_unlease(r, name, 0);
        return OBTAIN_FAILED;
    }
    /* The refresh failed: keep the lease for a while (one try per backoff),
     * and hide the failure behind the stale copy while it may be served. */
    cr_cache_unlease(r, name, CR_REFRESH_BACKOFF);
    if (have && serve_stale_after(resp) && apr_time_now() < m->fetched + ttl + stale) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01211)
                      "refresh of %s:%s failed (%s, status %ld): serving the copy of %"
                      APR_TIME_T_FMT "s ago", rr->def->name, country,
                      cr_upstream_rc_name(resp->rc), resp->status,
                      apr_time_sec(apr_time_now() - m->fetched));
        *how = "stale";
        return OBTAIN_ENTRY;
    }
    return OBTAIN_FAILED;
}

int cr_cached_handler(request_rec *r, const cr_dir_conf *c, const cr_route_req *rr,
                      const char *country)
{
    apr_interval_time_t ttl = CR_CONF_TIME(c, cache_ttl, CR_DEF_CACHE_TTL);
    const char *name = entry_name(r, c, rr->def->name, country);
    cr_upstream_resp resp;
    cr_centry_meta m;
    const char *how = NULL;
    int attempt, st;

    /* Twice at most: a variant may be evicted between meta and body. */
    for (attempt = 0; attempt < 2; attempt++) {
        switch (obtain(r, c, rr, country, name, &m, &how, &resp)) {
        case OBTAIN_ENTRY:
            st = send_cached(r, name, &m, how, ttl);
            if (st == -1) {
                continue;
            }
            if (!strcmp(how, "hit")) CR_COUNT(cache_hits);
            else if (!strcmp(how, "stale")) CR_COUNT(cache_stale);
            else CR_COUNT(cache_misses);
            return st;
        case OBTAIN_UNSTORED:
            CR_COUNT(cache_misses);
            apr_table_setn(r->headers_out, "X-Cryptorefills-Cache", "miss");
            apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
            return cr_send(r, HTTP_OK, "application/json", resp.body, resp.len);
        case OBTAIN_FAILED:
            CR_COUNT(cache_misses);
            apr_table_setn(r->headers_out, "X-Cryptorefills-Cache", "miss");
            return cr_relay(r, rr, &resp);
        }
    }
    return cr_send_problem(r, HTTP_BAD_GATEWAY, "UPSTREAM_UNAVAILABLE", NULL,
                           "catalog evicted while being served");
}

/* ---- parsed catalogs for the validator ------------------------------------------------ */

/* Each process keeps the last parsed copy of each catalog it validated
 * against, keyed by name and version, so a checkout costs a lookup instead
 * of parsing a few hundred KB of JSON.  The validator only reads catalogs,
 * so threads share a copy; a reference count (under the table's mutex)
 * keeps a replaced copy alive until the last request using it ends. */
typedef struct parsed_t {
    apr_uint64_t version;
    json_object *obj;
    apr_uint32_t refs;      /* requests using it, +1 while in the table */
    char *key;              /* the table's key (malloc'd), handed on to a successor */
    apr_time_t checked;     /* when the shared cache last confirmed this version */
    int stale;              /* ... and whether it was past its freshness then */
} parsed_t;

/* A parsed copy confirmed against the shared cache this recently is used
 * without asking again: a checkout then takes no cross-process lock at all
 * for its catalog and payment methods.  Catalogs stay fresh for minutes. */
#define CR_PARSED_RECHECK apr_time_from_msec(1000)

static apr_thread_mutex_t *parsed_mutex;
static apr_hash_t *parsed_table;
static apr_pool_t *parsed_pool;

static void parsed_unref_locked(parsed_t *pt)
{
    if (--pt->refs == 0) {
        json_object_put(pt->obj);
        free(pt->key);
        free(pt);
    }
}

static apr_status_t parsed_release(void *data)
{
    apr_thread_mutex_lock(parsed_mutex);
    parsed_unref_locked(data);
    apr_thread_mutex_unlock(parsed_mutex);
    return APR_SUCCESS;
}

void cr_cache_child_init_parsed(apr_pool_t *pchild)
{
    local_copies_init(pchild);
    parsed_pool = pchild;
    parsed_table = apr_hash_make(pchild);
    apr_thread_mutex_create(&parsed_mutex, APR_THREAD_MUTEX_DEFAULT, pchild);
}

json_object *cr_cache_json(request_rec *r, const cr_dir_conf *c, cr_route_id route,
                           const char *country, int *stale)
{
    const cr_route_def *def = cr_route_def_get(route);
    const char *name = entry_name(r, c, def->name, country);
    cr_route_req rr;
    cr_upstream_resp resp;
    cr_centry_meta m;
    const char *how = NULL, *body;
    apr_size_t len = 0;
    json_object *obj;
    parsed_t *pt;

    memset(&rr, 0, sizeof(rr));
    rr.def = def;
    rr.query = apr_table_make(r->pool, 1);
    rr.country = country;
    *stale = 0;
    if (parsed_mutex) {
        apr_time_t now = apr_time_now();
        apr_thread_mutex_lock(parsed_mutex);
        pt = apr_hash_get(parsed_table, name, APR_HASH_KEY_STRING);
        if (pt && now - pt->checked < CR_PARSED_RECHECK) {
            pt->refs++;
            *stale = pt->stale;
            apr_thread_mutex_unlock(parsed_mutex);
            apr_pool_cleanup_register(r->pool, pt, parsed_release, apr_pool_cleanup_null);
            return pt->obj;
        }
        apr_thread_mutex_unlock(parsed_mutex);
    }
    switch (obtain(r, c, &rr, country, name, &m, &how, &resp)) {
    case OBTAIN_UNSTORED:
        return cr_json_parse(r->pool, resp.body, resp.len, CR_JSON_MAX_DEPTH, &obj) ? NULL : obj;
    case OBTAIN_FAILED:
        return NULL;
    case OBTAIN_ENTRY:
        break;
    }
    *stale = !strcmp(how, "stale");
    if (parsed_mutex) {
        apr_thread_mutex_lock(parsed_mutex);
        pt = apr_hash_get(parsed_table, name, APR_HASH_KEY_STRING);
        if (pt && pt->version == m.version) {
            pt->refs++;
            pt->checked = apr_time_now();
            pt->stale = *stale;
            apr_thread_mutex_unlock(parsed_mutex);
            apr_pool_cleanup_register(r->pool, pt, parsed_release, apr_pool_cleanup_null);
            return pt->obj;
        }
        apr_thread_mutex_unlock(parsed_mutex);
    }
    body = get_variant(r, name, &m, 0, &len);
    if (!body || cr_json_parse_unowned(body, len, CR_JSON_MAX_DEPTH, &obj)) {
        return NULL;
    }
    if (route == CR_ROUTE_BRANDS) {
        /* Before it is shared: readers only read. */
        cr_validate_index_catalog(obj);
    }
    if (!parsed_mutex || !(pt = calloc(1, sizeof(*pt)))) {
        return cr_json_own(r->pool, obj);
    }
    pt->version = m.version;
    pt->obj = obj;
    pt->refs = 2;           /* the table's and this request's */
    pt->checked = apr_time_now();
    pt->stale = *stale;
    apr_thread_mutex_lock(parsed_mutex);
    {
        parsed_t *old = apr_hash_get(parsed_table, name, APR_HASH_KEY_STRING);
        if (old) {
            /* The table keeps its first key pointer for a name: hand it on. */
            pt->key = old->key;
            old->key = NULL;
            parsed_unref_locked(old);
        }
        else {
            pt->key = strdup(name);
        }
        if (pt->key) {
            apr_hash_set(parsed_table, pt->key, APR_HASH_KEY_STRING, pt);
        }
        else {
            pt->refs--;     /* out of memory: not kept in the table */
        }
    }
    apr_thread_mutex_unlock(parsed_mutex);
    apr_pool_cleanup_register(r->pool, pt, parsed_release, apr_pool_cleanup_null);
    return obj;
}

/* ---- mod_status ------------------------------------------------------------------------ */

static int status_hook(request_rec *r, int flags)
{
    static const struct { const char *name; apr_size_t off; } rows[] = {
#define ROW(f) { #f, APR_OFFSETOF(cr_stats_t, f) }
        ROW(cache_hits), ROW(cache_misses), ROW(cache_stale), ROW(cache_refreshes),
        ROW(cache_waits), ROW(cache_store_failures), ROW(cache_not_modified),
        ROW(upstream_requests), ROW(upstream_connects), ROW(upstream_err_connect),
        ROW(upstream_err_timeout), ROW(upstream_err_5xx), ROW(upstream_err_4xx),
        ROW(upstream_err_invalid), ROW(local_rejections), ROW(idem_replays),
        ROW(idem_conflicts), ROW(streams_open), ROW(streams_total), ROW(streams_rejected),
        ROW(stream_events), ROW(stream_events_dropped), ROW(stream_heartbeats),
        { "streams_open_suspended", APR_OFFSETOF(cr_stats_t, async.streams_open) },
        { "streams_suspended_total", APR_OFFSETOF(cr_stats_t, async.streams_total) },
        { "browsers_dropped_slow", APR_OFFSETOF(cr_stats_t, async.browsers_dropped_slow) },
        { "browsers_gone_suspended", APR_OFFSETOF(cr_stats_t, async.browsers_gone) },
#undef ROW
    };
    apr_size_t i;

    if (!cr_stats) {
        return OK;
    }
    if (flags & AP_STATUS_SHORT) {
        for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
            ap_rprintf(r, "Cryptorefills%s: %u\n", rows[i].name,
                       apr_atomic_read32((volatile apr_uint32_t *)((char *)cr_stats + rows[i].off)));
        }
        return OK;
    }
    ap_rputs("<hr />\n<h2>mod_cryptorefills</h2>\n<table>\n", r);
    ap_rprintf(r, "<tr><th>cache</th><td>%s</td></tr>\n", ap_escape_html(r->pool, cache.desc));
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        ap_rprintf(r, "<tr><th>%s</th><td>%u</td></tr>\n", rows[i].name,
                   apr_atomic_read32((volatile apr_uint32_t *)((char *)cr_stats + rows[i].off)));
    }
    ap_rputs("</table>\n", r);
    if (cache.inst && !(flags & AP_STATUS_SHORT) && (!cache.lock_all || lock(r))) {
        cache.provider->status(cache.inst, r, flags);
        if (cache.lock_all) {
            unlock(r);
        }
    }
    return OK;
}
