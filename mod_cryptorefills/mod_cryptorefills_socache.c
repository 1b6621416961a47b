/* SPDX-License-Identifier: Apache-2.0 */
/* The shared store (ap_socache) and its coordination.
 *
 * Shared state, created in post_config's second pass and owned by pconf:
 *   - the socache instance (shmcb by default; memcache/redis for a farm);
 *   - a global mutex (type "cryptorefills-cache", so `Mutex` configures
 *     it) that makes lease and claim check-and-set atomic across children,
 *     and that guards every store and retrieve of a provider that is not
 *     MT-safe (shmcb);
 *   - a small segment of shared memory: the smallest record size the
 *     provider refused, and this server's refresh leases.
 * Children inherit the mappings at fork and re-open the mutex in
 * child_init.  On a graceful restart the parent drops its mappings and
 * makes new ones; old children keep theirs until they exit.
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

int cr_socache_post_config(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s)
{
    cr_srv_conf *sc = cr_srv_conf_get(s);
    struct ap_socache_hints hints;
    apr_shm_t *shm;
    const char *args, *err;
    apr_status_t rv;

    rv = apr_shm_create(&shm, sizeof(cr_cache_shared), NULL, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, CRLOGNO(01212)
                     "cannot create shared memory for the cache");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    cshared = apr_shm_baseaddr_get(shm);
    memset((void *)cshared, 0, sizeof(*cshared));

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

void cr_socache_status(request_rec *r, int flags)
{
    if (cache.inst && (!cache.lock_all || lock(r))) {
        cache.provider->status(cache.inst, r, flags);
        if (cache.lock_all) {
            unlock(r);
        }
    }
}
