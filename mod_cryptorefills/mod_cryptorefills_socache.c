/* SPDX-License-Identifier: Apache-2.0 */
/* The shared store (ap_socache) and its coordination.
 *
 * Shared state, made in post_config's second pass:
 *   - the socache instance (shmcb by default; memcache/redis for a farm);
 *   - a global mutex (type "cryptorefills-cache", so `Mutex` configures
 *     it) that makes lease and claim check-and-set atomic across children,
 *     and that guards every store and retrieve of a provider that is not
 *     MT-safe (shmcb);
 *   - a small segment of shared memory: the smallest record size the
 *     provider refused, and this server's refresh leases.
 * With shmcb all three are kept across restarts in httpd's retained data
 * (see kept_post_config); with a network provider they are owned by pconf
 * and made again in each generation (the records live in the remote
 * store).  Children inherit the mappings at fork and re-open the mutex in
 * child_init.
 *
 * The lock is only held for socache copies: never across an upstream call,
 * a JSON parse or compression. */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "util_mutex.h"
#include "ap_socache.h"
#include "apr_global_mutex.h"
#include "apr_shm.h"
#include "apr_atomic.h"
#include "apr_strings.h"

#include "mod_cryptorefills.h"
#include "mod_cryptorefills_config.h"
#include "mod_cryptorefills_int.h"
#include "cr_record.h"

#define CR_MUTEX_TYPE "cryptorefills-cache"
/* Default shmcb size: every country's catalog and homepage at once (the US
 * catalog is the largest, a few hundred KB), plus idempotency records. */
#define CR_SHMCB_DEFAULT_SIZE   (64 * 1024 * 1024)
/* Hints that make shmcb choose 32 subcaches of 2 MiB (the largest object)
 * and some 4,000 index slots. */
#define CR_HINT_AVG_OBJ         (16 * 1024)
#define CR_HINT_AVG_ID          32

typedef struct cr_cache_t {
    const ap_socache_provider_t *provider;
    ap_socache_instance_t *inst;
    apr_global_mutex_t *mutex;
    int lock_all;               /* provider not MT-safe: lock every call */
    const char *desc;
    apr_int64_t shm_size;       /* shmcb: its segment's size */
} cr_cache_t;

static cr_cache_t cache;

/* The store's own shared state. */
typedef struct cr_cache_shared {
    /* Smallest record (id + data) the provider refused with APR_ENOSPC, 0
     * while none was.  shmcb refuses a record larger than one subcache every
     * time (and logs an error for each try), so larger ones aren't tried. */
    volatile apr_uint32_t too_big;
    /* Refresh leases of this server's requests when the provider is a
     * network one (see cr_socache_lease), by hash of the name; under the
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

int cr_socache_pre_config(apr_pool_t *pconf)
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

/* The size shmcb will give its segment for args "path(bytes)" (its own
 * default, 512000, without a size). */
static apr_int64_t shmcb_size(const char *args)
{
    const char *lp = args ? strrchr(args, '(') : NULL;
    apr_int64_t n = lp ? apr_atoi64(lp + 1) : 0;
    return n > 0 ? n : 512000;
}

/* shmcb keeps its data in anonymous shared memory: an instance made on a
 * pool that outlives the generation stays mapped in the parent, and every
 * later generation's children inherit it.  The instance is carried from one
 * generation to the next in httpd's retained data (a graceful restart, and
 * a plain `restart` too: the parent lives on; a stop ends it), together with
 * the global mutex that guards it (old and new children share the data, so
 * they must share the lock) and the store's own segment.
 *
 * Pools: shmcb registers a cleanup of its own code on the pool it is made
 * on, and modules are unloaded and loaded again at each restart, so the
 * instance lives on an unmanaged pool nothing destroys behind our back (the
 * mapping goes with the process).  The mutex and the segment have only
 * APR's cleanups and live on a subpool of the process pool, released at
 * stop (a SysV semaphore is removed then).  A changed provider or size
 * makes a new instance; the one it replaces is released when the
 * generation ends (its children may still be finishing requests). */
/* The key names the module version and the layouts kept: a module built
 * with other records or structures (an upgrade, then a restart) makes a
 * new cache rather than read one it does not know. */
#define CR_RETAINED_KEY_FMT "mod_cryptorefills-cache/" CR_MODULE_VERSION "/%" APR_SIZE_T_FMT \
                            "/%" APR_SIZE_T_FMT
#define CR_RETAINED_KEY(p) apr_psprintf(p, CR_RETAINED_KEY_FMT, sizeof(cr_kept), \
                                        sizeof(cr_cache_shared))

typedef struct cr_kept {
    const char *desc;                   /* provider:args it was made for */
    const ap_socache_provider_t *provider;  /* as loaded when it was made */
    const ap_socache_provider_t *now;   /* as loaded when it is released */
    apr_pool_t *ipool;                  /* unmanaged: the shmcb instance */
    apr_pool_t *mpool;                  /* process pool's child: mutex, segment */
    ap_socache_instance_t *inst;
    apr_global_mutex_t *mutex;
    cr_cache_shared *shared;
    unsigned generations;               /* generations it served */
} cr_kept;

/* Release a superseded retained instance (a cleanup of the generation's
 * pconf, which runs before our module and shmcb are unloaded). */
static apr_status_t kept_release(void *data)
{
    cr_kept *k = data;
    if (k->ipool && k->now == k->provider) {
        /* The provider's code is where it was when it registered its
         * cleanup on ipool: destroying both is safe.  Otherwise the few KB
         * of the unmanaged pool stay (the mapping goes at exit). */
        if (k->inst) {
            k->provider->destroy(k->inst, NULL);
        }
        apr_pool_destroy(k->ipool);
    }
    if (k->mpool) {
        apr_pool_destroy(k->mpool);
    }
    return APR_SUCCESS;
}

/* The kept instance k is replaced in this generation: release it when the
 * generation ends. */
static void kept_supersede(apr_pool_t *pconf, server_rec *s, const cr_kept *k)
{
    cr_kept *old;
    if (!k->inst) {
        return;
    }
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, CRLOGNO(01215)
                 "cache: %s replaces %s (its records are not carried over)",
                 cache.desc, k->desc);
    old = apr_pmemdup(pconf, k, sizeof(*k));
    old->now = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, "shmcb", AP_SOCACHE_PROVIDER_VERSION);
    apr_pool_cleanup_register(pconf, old, kept_release, apr_pool_cleanup_null);
}

/* Create and initialise an instance of prov on p (logs why not). */
static apr_status_t provider_create(const ap_socache_provider_t *prov, ap_socache_instance_t **inst,
                                    const char *args, apr_pool_t *ptemp, apr_pool_t *p,
                                    server_rec *s)
{
    struct ap_socache_hints hints;
    const char *err;
    apr_status_t rv;

    err = prov->create(inst, args, ptemp, p);
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, CRLOGNO(01203)
                     "CryptorefillsCache %s: %s", cache.desc, err);
        return APR_EINVAL;
    }
    memset(&hints, 0, sizeof(hints));
    hints.avg_id_len = CR_HINT_AVG_ID;
    hints.avg_obj_size = CR_HINT_AVG_OBJ;
    if (!strcmp(prov->name, "shmcb")) {
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
    rv = prov->init(*inst, "cryptorefills", &hints, s, p);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, CRLOGNO(01204)
                     "cannot initialise the cache %s", cache.desc);
    }
    return rv;
}

static apr_status_t shared_create(cr_cache_shared **out, apr_pool_t *p, server_rec *s)
{
    apr_shm_t *shm;
    apr_status_t rv = apr_shm_create(&shm, sizeof(cr_cache_shared), NULL, p);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, CRLOGNO(01212)
                     "cannot create shared memory for the cache");
        return rv;
    }
    *out = apr_shm_baseaddr_get(shm);
    memset((void *)*out, 0, sizeof(**out));
    return APR_SUCCESS;
}

/* A retained shmcb instance for desc: the one kept from the last
 * generation when it was made for the same provider and args, else a new
 * one (the old one released when this generation ends). */
static int kept_post_config(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s,
                            const char *args)
{
    cr_kept *k = ap_retained_data_get(CR_RETAINED_KEY(ptemp)), nk;
    apr_status_t rv;

    if (!k) {
        k = ap_retained_data_create(CR_RETAINED_KEY(ptemp), sizeof(*k));
    }
    if (k->inst && !strcmp(k->desc, cache.desc)) {
        k->generations++;
        cache.inst = k->inst;
        cache.mutex = k->mutex;
        cshared = k->shared;
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, CRLOGNO(01213)
                     "cache: %s kept from the previous generation (%u restarts)",
                     cache.desc, k->generations);
        return OK;
    }
    memset(&nk, 0, sizeof(nk));
    nk.provider = nk.now = cache.provider;
    if ((rv = apr_pool_create_unmanaged_ex(&nk.ipool, NULL, NULL)) != APR_SUCCESS
        || (rv = apr_pool_create(&nk.mpool, s->process->pool)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, CRLOGNO(01214) "cannot create the cache's pools");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    apr_pool_tag(nk.mpool, "cryptorefills-cache");
    nk.desc = apr_pstrdup(nk.mpool, cache.desc);
    if (provider_create(cache.provider, &nk.inst, args, ptemp, nk.ipool, s) != APR_SUCCESS
        || shared_create(&nk.shared, nk.mpool, s) != APR_SUCCESS
        || ap_global_mutex_create(&nk.mutex, NULL, CR_MUTEX_TYPE, NULL, s, nk.mpool, 0)
           != APR_SUCCESS) {           /* each logged why */
        kept_release(apr_pmemdup(ptemp, &nk, sizeof(nk)));
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    kept_supersede(pconf, s, k);
    *k = nk;
    cache.inst = k->inst;
    cache.mutex = k->mutex;
    cshared = k->shared;
    return OK;
}

/* A network store (memcache, redis) keeps its records itself: a new client
 * instance per generation, on pconf.  A shmcb instance kept from before is
 * released when this generation ends. */
static int generation_post_config(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s,
                                  const char *args)
{
    cr_kept *k = ap_retained_data_get(CR_RETAINED_KEY(ptemp));

    if (k) {
        kept_supersede(pconf, s, k);
        memset(k, 0, sizeof(*k));
    }
    if (shared_create(&cshared, pconf, s) != APR_SUCCESS
        || provider_create(cache.provider, &cache.inst, args, ptemp, pconf, s) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    apr_pool_cleanup_register(pconf, &cache, cache_destroy, apr_pool_cleanup_null);
    if (ap_global_mutex_create(&cache.mutex, NULL, CR_MUTEX_TYPE, NULL, s, pconf, 0) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;   /* ap_global_mutex_create logged why */
    }
    return OK;
}

int cr_socache_post_config(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s)
{
    cr_srv_conf *sc = cr_srv_conf_get(s);
    const char *args;
    int rc;

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
    cache.lock_all = (cache.provider->flags & AP_SOCACHE_FLAG_NOTMPSAFE) != 0;
    if (!strcmp(cache.provider->name, "shmcb")) {
        cache.shm_size = shmcb_size(args);
        rc = kept_post_config(pconf, ptemp, s, args);
    }
    else {
        rc = generation_post_config(pconf, ptemp, s, args);
    }
    if (rc == OK) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, CRLOGNO(01205) "cache: %s", cache.desc);
    }
    return rc;
}

void cr_socache_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_status_t rv;
    if (!cache.mutex) {
        return;
    }
    rv = apr_global_mutex_child_init(&cache.mutex, apr_global_mutex_lockfile(cache.mutex), pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, CRLOGNO(01206)
                     "cannot re-open the cache mutex in this child");
    }
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
    if (rv == APR_SUCCESS) {
        CR_COUNT(cache_stores);
        if (cr_stats) {
            apr_atomic_add32(&cr_stats->cache_stored_bytes, size);
        }
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

int cr_socache_get(request_rec *r, cr_cid_kind kind, const char *name, unsigned char *buf,
                 apr_size_t cap, apr_size_t *len)
{
    unsigned char id[CR_RECORD_ID_MAX];
    apr_size_t idlen = cr_record_id(id, kind, name);
    return get_rec(r, id, idlen, buf, cap, len, 0);
}

apr_status_t cr_socache_put(request_rec *r, cr_cid_kind kind, const char *name, apr_time_t expiry,
                          unsigned char *data, apr_size_t len)
{
    unsigned char id[CR_RECORD_ID_MAX];
    apr_size_t idlen = cr_record_id(id, kind, name);
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

int cr_socache_lease(request_rec *r, const char *name, apr_interval_time_t hold)
{
    unsigned char id[CR_RECORD_ID_MAX], buf[16];
    apr_size_t idlen = cr_record_id(id, CR_CID_LEASE, name), n;
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
int cr_socache_claim(request_rec *r, cr_cid_kind kind, const char *name, apr_time_t expiry,
                   unsigned char *data, apr_size_t dlen, unsigned char *buf, apr_size_t cap,
                   apr_size_t *len)
{
    unsigned char id[CR_RECORD_ID_MAX];
    apr_size_t idlen = cr_record_id(id, kind, name);
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
void cr_socache_unlease(request_rec *r, const char *name, apr_interval_time_t backoff)
{
    unsigned char id[CR_RECORD_ID_MAX], buf[5];
    apr_size_t idlen = cr_record_id(id, CR_CID_LEASE, name);
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


/* ---- for mod_status and logs ------------------------------------------------------ */

const char *cr_socache_desc(void)
{
    return cache.desc ? cache.desc : "none";
}

apr_int64_t cr_socache_shm_size(void)
{
    return cache.shm_size;
}

void cr_socache_status(request_rec *r, int flags)
{
    if (cache.inst && (!cache.lock_all || lock(r))) {
        cache.provider->status(cache.inst, r, flags);
        if (cache.lock_all) {
            unlock(r);
        }
    }
}
