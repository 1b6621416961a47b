/* The idempotency store: where POST orders' Idempotency-Key records live,
 * apart from the catalog cache, so nothing else can evict them.
 *
 * Three backends behind one API:
 *   file:DIR            the single-server default.  One file per record
 *                       under DIR (fanned out over 256 subdirectories).  A
 *                       claim writes a temporary file and link()s it to the
 *                       record's name: atomic across processes and threads,
 *                       no lock on the common path.  Completion writes a
 *                       temporary file and rename()s it over the record.
 *                       Records survive graceful and full restarts (they are
 *                       files); they are reclaimed once expired, never
 *                       evicted before; when the store is full (max entries
 *                       or bytes) a claim fails closed (CR_IDS_FULL).
 *                       Counters live in DIR/.stats (mmap'd, shared by all
 *                       processes); reclaim, replace, release and the
 *                       bounded sweep are serialised by DIR/.lock (fcntl
 *                       lock per process + a thread mutex).
 *   memcache:HOST:PORT  a farm: claims with memcached's atomic `add`
 *                       (APR-util's apr_memcache), replace with `set`.
 *   redis:HOST:PORT     a farm: claims with `SET key value NX PX ms`
 *                       (libhiredis), replace with `SET ... PX`, release
 *                       with DEL.  Pooled connections (apr_reslist), never
 *                       one context shared by two threads; connect and
 *                       command timeouts of CR_IDS_NET_TIMEOUT.
 * Record names are hashed (SHA-1) into the store's keys: a key may be 255
 * characters and hold anything visible, and the store never shows a name.
 *
 * Every call answers "claimed", "exists" (with the record), "absent", or
 * an error (unavailable / full): an error is never reported as absent, so
 * the caller can fail closed.  Plain C + APR/APR-util + hiredis: no httpd
 * header. */
#ifndef CR_IDSTORE_H
#define CR_IDSTORE_H

#include <apr_pools.h>
#include <apr_time.h>
#include <apr_network_io.h>

typedef enum {
    CR_IDS_CLAIMED = 1,         /* claim: the name was free; the caller owns it now */
    CR_IDS_EXISTS = 0,          /* a live record is there (copied out) */
    CR_IDS_ABSENT = 2,          /* get: no live record */
    CR_IDS_UNAVAILABLE = -1,    /* the store cannot answer: down, timeout, I/O error */
    CR_IDS_FULL = -2            /* claim: the store is full of unexpired records */
} cr_ids_rc;

typedef enum { CR_IDS_FILE = 1, CR_IDS_MEMCACHE, CR_IDS_REDIS } cr_ids_kind;

typedef struct cr_ids_conf {
    cr_ids_kind kind;
    const char *dir;            /* file */
    const char *host;           /* memcache, redis */
    apr_port_t port;
    apr_uint32_t max_entries;   /* file: 0 = CR_IDS_DEF_MAX_ENTRIES */
    apr_uint64_t max_bytes;     /* file: 0 = CR_IDS_DEF_MAX_BYTES; records cost whole
                                 * 4 KiB pages (a 600-byte record: 4 KiB) */
    apr_interval_time_t timeout;/* redis: connect and command; 0 = CR_IDS_NET_TIMEOUT */
    int max_conns;              /* memcache, redis: per process; 0 = 64 */
    int chown;                  /* file: give DIR, its subdirectories, .stats and .lock to
                                 * uid/gid (httpd's User/Group: the parent opens the store
                                 * as root, its children write records as User) */
    long uid, gid;
} cr_ids_conf;

#define CR_IDS_DEF_MAX_ENTRIES  200000
#define CR_IDS_DEF_MAX_BYTES    (256u * 1024 * 1024)
#define CR_IDS_NET_TIMEOUT      apr_time_from_msec(500)
#define CR_IDS_MAX_VALUE        (1024 * 1024)

typedef struct cr_ids_stats {
    apr_uint64_t entries, bytes;        /* file: live + not yet swept; bytes in whole
                                         * 4 KiB pages, as a filesystem allocates them */
    apr_uint64_t max_entries, max_bytes;
    apr_uint64_t claims;                /* claims won */
    apr_uint64_t exists;                /* claims that found a live record */
    apr_uint64_t reclaimed;             /* expired records removed or claimed over */
    apr_uint64_t full;                  /* claims refused: full */
    apr_uint64_t errors;                /* calls answered CR_IDS_UNAVAILABLE */
} cr_ids_stats;

typedef struct cr_idstore cr_idstore;

/* Parse "file:/dir", "memcache:host:port" or "redis:host:port" into c
 * (other members zeroed).  Returns NULL or a message for the operator. */
const char *cr_ids_parse(apr_pool_t *p, const char *spec, cr_ids_conf *c);

/* Open a store (the parent, post_config; p lives as long as the config).
 * file: creates DIR (0700) and its .stats/.lock files if missing.  Makes no
 * network connection.  Returns NULL or a message. */
const char *cr_ids_open(apr_pool_t *p, const cr_ids_conf *c, cr_idstore **out);

/* Per process, after fork (child_init; a unit test's forked child): per
 * process lock file and mutexes, connection pools.  pchild: the process's
 * pool.  Returns NULL or a message. */
const char *cr_ids_child_init(cr_idstore *s, apr_pool_t *pchild);

/* Claim name for ttl with value: CR_IDS_CLAIMED, CR_IDS_EXISTS (the live
 * record in *out / *outlen, allocated from p), CR_IDS_UNAVAILABLE or
 * CR_IDS_FULL.  Atomic: of any number of concurrent claims of one name, in
 * any process or server sharing the store, exactly one is CLAIMED. */
cr_ids_rc cr_ids_claim(cr_idstore *s, apr_pool_t *p, const char *name,
                       const void *value, apr_size_t vlen, apr_interval_time_t ttl,
                       const unsigned char **out, apr_size_t *outlen);

/* Read: CR_IDS_EXISTS (record in *out), CR_IDS_ABSENT or CR_IDS_UNAVAILABLE. */
cr_ids_rc cr_ids_get(cr_idstore *s, apr_pool_t *p, const char *name,
                     const unsigned char **out, apr_size_t *outlen);

/* Replace the record of a claimed name (completion: the stored answer, for
 * the whole window).  Written even if the claim expired meanwhile.
 * APR_SUCCESS or an error. */
apr_status_t cr_ids_replace(cr_idstore *s, apr_pool_t *p, const char *name,
                            const void *value, apr_size_t vlen, apr_interval_time_t ttl);

/* Remove the record (a claim whose upstream call certainly created
 * nothing).  APR_SUCCESS (also when absent) or an error. */
apr_status_t cr_ids_release(cr_idstore *s, apr_pool_t *p, const char *name);

/* Redis: a description of how it may evict records ("maxmemory 100mb with
 * maxmemory-policy allkeys-lru"), asked with one short connection; NULL
 * when it never evicts (noeviction, or no maxmemory), cannot tell, or the
 * store is not Redis.  For a start-up warning. */
const char *cr_ids_eviction_risk(cr_idstore *s, apr_pool_t *p);

/* Counters, for mod_status. */
void cr_ids_get_stats(cr_idstore *s, cr_ids_stats *st);

/* "file", "memcache" or "redis". */
const char *cr_ids_kind_name(const cr_idstore *s);

#endif
