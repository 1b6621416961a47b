/* The idempotency store: see cr_idstore.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <apr_atomic.h>
#include <apr_file_io.h>
#include <apr_memcache.h>
#include <apr_portable.h>
#include <apr_reslist.h>
#include <apr_sha1.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>

#include <hiredis/hiredis.h>

#include "cr_idstore.h"

/* ---- the file store's shared header (DIR/.stats, mmap'd) ------------------------------- */

#define FANOUT 256
#define HDR_MAGIC "CRIDS02"

typedef struct ids_hdr {
    char magic[8];
    volatile apr_uint32_t entries[FANOUT];
    volatile apr_uint32_t bytes[FANOUT];        /* per subdirectory, < 4 GiB each */
    volatile apr_uint32_t claims, exists, reclaimed, full, errors;
    volatile apr_uint32_t next_sweep;           /* seconds since the epoch */
    volatile apr_uint32_t cursor;               /* next subdirectory to sweep */
    volatile apr_uint32_t forced_sweep;         /* last sweep forced by a full store */
    volatile apr_uint32_t unswept;              /* 1: counters not yet set by a sweep */
} ids_hdr;

/* File layout of a record: "CRS1", expiry (8 bytes, LE, apr_time_t), value. */
#define REC_HDR 12
/* Bytes a record costs its filesystem: whole pages (tmpfs allocates a 4 KiB
 * page for a 600-byte file).  The byte bound counts these, so it bounds the
 * memory a tmpfs store takes. */
#define ALLOC(n) ((apr_uint32_t)(((apr_size_t)(n) + 4095) & ~(apr_size_t)4095))
/* A swept subdirectory every this many seconds: all of them in ~4 minutes. */
#define SWEEP_EVERY 1
/* Temporary files older than this are a dead process's leftovers. */
#define TMP_STALE apr_time_from_sec(60)

typedef struct redis_conn {
    redisContext *c;
} redis_conn;

struct cr_idstore {
    cr_ids_conf conf;
    apr_pool_t *pool;
    /* file */
    ids_hdr *hdr;
    int lockfd;                         /* per process (fcntl locks are per process) */
    apr_thread_mutex_t *tlock;          /* ... and threads of one process take turns */
    apr_uint32_t tmpseq;
    /* memcache */
    apr_memcache_t *mc;
    apr_memcache_server_t *ms;
    /* redis */
    apr_reslist_t *rl;
    /* counters of the network stores (per process) */
    volatile apr_uint32_t n_claims, n_exists, n_errors;
};

static void put64(unsigned char *b, apr_uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++) {
        b[i] = (unsigned char)(v >> (8 * i));
    }
}

static apr_uint64_t get64(const unsigned char *b)
{
    apr_uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) {
        v = (v << 8) | b[i];
    }
    return v;
}

/* "crids:" + 40 hex of SHA-1(name). */
static void key_of(const char *name, char out[47])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char d[APR_SHA1_DIGESTSIZE];
    apr_sha1_ctx_t ctx;
    int i;
    apr_sha1_init(&ctx);
    apr_sha1_update_binary(&ctx, (const unsigned char *)name, (unsigned int)strlen(name));
    apr_sha1_final(d, &ctx);
    memcpy(out, "crids:", 6);
    for (i = 0; i < APR_SHA1_DIGESTSIZE; i++) {
        out[6 + 2 * i] = hex[d[i] >> 4];
        out[7 + 2 * i] = hex[d[i] & 15];
    }
    out[46] = '\0';
}

const char *cr_ids_kind_name(const cr_idstore *s)
{
    return s->conf.kind == CR_IDS_FILE ? "file" : s->conf.kind == CR_IDS_MEMCACHE ? "memcache"
                                                                                : "redis";
}

const char *cr_ids_parse(apr_pool_t *p, const char *spec, cr_ids_conf *c)
{
    const char *arg, *colon;
    char *end;
    long port;
    memset(c, 0, sizeof(*c));
    if (!spec || !(arg = strchr(spec, ':'))) {
        return "expected file:DIR, memcache:HOST:PORT or redis:HOST:PORT";
    }
    if (!strncmp(spec, "file:", 5)) {
        if (arg[1] != '/') {
            return "file: needs an absolute directory";
        }
        c->kind = CR_IDS_FILE;
        c->dir = apr_pstrdup(p, arg + 1);
        return NULL;
    }
    if (!strncmp(spec, "memcache:", 9)) {
        c->kind = CR_IDS_MEMCACHE;
    }
    else if (!strncmp(spec, "redis:", 6)) {
        c->kind = CR_IDS_REDIS;
    }
    else {
        return "unknown store: expected file:DIR, memcache:HOST:PORT or redis:HOST:PORT";
    }
    colon = strrchr(arg + 1, ':');
    if (!colon || colon == arg + 1) {
        return "expected HOST:PORT";
    }
    port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535) {
        return "invalid port";
    }
    c->host = apr_pstrmemdup(p, arg + 1, (apr_size_t)(colon - arg - 1));
    c->port = (apr_port_t)port;
    return NULL;
}

/* ---- file store ---------------------------------------------------------------------- */

static int hexval(char ch)
{
    return ch <= '9' ? ch - '0' : ch - 'a' + 10;
}

/* Subdirectory index and path of a record. */
static unsigned file_path(cr_idstore *s, apr_pool_t *p, const char *name, char **path)
{
    char key[47];
    unsigned sub;
    key_of(name, key);
    sub = (unsigned)(hexval(key[6]) << 4 | hexval(key[7]));
    *path = apr_psprintf(p, "%s/%c%c/%s", s->conf.dir, key[6], key[7], key + 8);
    return sub;
}

static int lock_store(cr_idstore *s)
{
    struct flock fl;
    if (s->tlock && apr_thread_mutex_lock(s->tlock) != APR_SUCCESS) {
        return 0;
    }
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    while (fcntl(s->lockfd, F_SETLKW, &fl) < 0) {
        if (errno != EINTR) {
            if (s->tlock) {
                apr_thread_mutex_unlock(s->tlock);
            }
            return 0;
        }
    }
    return 1;
}

static void unlock_store(cr_idstore *s)
{
    struct flock fl;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fcntl(s->lockfd, F_SETLK, &fl);
    if (s->tlock) {
        apr_thread_mutex_unlock(s->tlock);
    }
}

/* Read a record file: 1 (live: *out), 0 (absent or expired: *expired set
 * when a file is there), -1 error. */
static int file_read(apr_pool_t *p, const char *path, apr_time_t now,
                     const unsigned char **out, apr_size_t *outlen, int *expired,
                     apr_size_t *fsize)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    unsigned char *b;
    apr_size_t got = 0;
    *expired = 0;
    if (fd < 0) {
        return errno == ENOENT ? 0 : -1;
    }
    if (fstat(fd, &st) < 0 || st.st_size < REC_HDR || st.st_size > CR_IDS_MAX_VALUE + REC_HDR) {
        close(fd);
        return -1;
    }
    b = apr_palloc(p, (apr_size_t)st.st_size);
    while (got < (apr_size_t)st.st_size) {
        ssize_t n = read(fd, b + got, (apr_size_t)st.st_size - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            close(fd);
            return -1;
        }
        got += (apr_size_t)n;
    }
    close(fd);
    if (memcmp(b, "CRS1", 4)) {
        return -1;
    }
    if (fsize) {
        *fsize = got;
    }
    if ((apr_time_t)get64(b + 4) <= now) {
        *expired = 1;
        return 0;
    }
    *out = b + REC_HDR;
    *outlen = got - REC_HDR;
    return 1;
}

/* Write a temporary record file beside path; its mtime is the expiry (the
 * sweep reads only that).  Returns the temporary path or NULL. */
static char *file_write_tmp(cr_idstore *s, apr_pool_t *p, const char *path,
                            const void *value, apr_size_t vlen, apr_time_t expiry)
{
    const char *slash = strrchr(path, '/');
    char *tmp = apr_psprintf(p, "%.*s/.tmp.%ld.%lx.%u", (int)(slash - path), path,
                             (long)getpid(), (unsigned long)apr_os_thread_current(),
                             apr_atomic_inc32(&s->tmpseq));
    unsigned char h[REC_HDR];
    struct iovec v[2];
    struct timespec ts[2];
    ssize_t n;
    int ok, fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        return NULL;
    }
    memcpy(h, "CRS1", 4);
    put64(h + 4, (apr_uint64_t)expiry);
    v[0].iov_base = h;
    v[0].iov_len = REC_HDR;
    v[1].iov_base = (void *)value;
    v[1].iov_len = vlen;
    n = writev(fd, v, 2);
    ts[0].tv_sec = ts[1].tv_sec = (time_t)apr_time_sec(expiry);
    ts[0].tv_nsec = ts[1].tv_nsec = 0;
    ok = n == (ssize_t)(REC_HDR + vlen) && futimens(fd, ts) == 0;
    if (close(fd) < 0) {
        ok = 0;
    }
    if (!ok) {
        unlink(tmp);
        return NULL;
    }
    return tmp;
}

/* Subtract from a counter, never below zero: the counters are set by
 * sweeps that run beside claims, so they can drift low by a record or two
 * until the next sweep, and must never wrap to "full". */
static void sub_clamped(volatile apr_uint32_t *c, apr_uint32_t v)
{
    apr_uint32_t old, now;
    do {
        old = apr_atomic_read32(c);
        now = old > v ? old - v : 0;
    } while (apr_atomic_cas32(c, now, old) != old);
}

/* A record's file is expired (its mtime is its expiry). */
static int file_expired(const struct stat *st, apr_time_t now)
{
    return apr_time_from_sec(st->st_mtime) <= now - apr_time_from_sec(1);
}

/* Sweep one subdirectory: remove expired records and stale temporaries,
 * and set its counters to what is there.  The directory is read without
 * the lock; an expired record is checked again under it right before it
 * is removed (a reclaim may have renamed a new record over it). */
static void file_sweep_one(cr_idstore *s, apr_pool_t *p, unsigned sub, apr_time_t now)
{
    char *dir = apr_psprintf(p, "%s/%02x", s->conf.dir, sub);
    DIR *d = opendir(dir);
    struct dirent *e;
    apr_uint32_t entries = 0, bytes = 0, removed = 0;
    if (!d) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        char *path;
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) {
            continue;
        }
        path = apr_pstrcat(p, dir, "/", e->d_name, NULL);
        if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        if (e->d_name[0] == '.') {
            /* A temporary file: its mtime is an expiry too, but one left by
             * a process that died is removed after TMP_STALE of age. */
            if (apr_time_from_sec(st.st_ctime) + TMP_STALE < now) {
                unlink(path);
            }
            continue;
        }
        if (file_expired(&st, now)) {
            int gone = 0;
            if (lock_store(s)) {
                gone = lstat(path, &st) < 0 || (file_expired(&st, now) && unlink(path) == 0);
                unlock_store(s);
            }
            if (gone) {
                removed++;
                continue;
            }
        }
        entries++;
        bytes += ALLOC(st.st_size);
    }
    closedir(d);
    apr_atomic_set32(&s->hdr->entries[sub], entries);
    apr_atomic_set32(&s->hdr->bytes[sub], bytes);
    apr_atomic_add32(&s->hdr->reclaimed, removed);
}

/* Sweep n subdirectories from the shared cursor on. */
static void file_sweep(cr_idstore *s, apr_pool_t *p, int n, apr_time_t now)
{
    apr_pool_t *sp;
    if (apr_pool_create(&sp, p) != APR_SUCCESS) {
        return;
    }
    while (n-- > 0) {
        file_sweep_one(s, sp, apr_atomic_inc32(&s->hdr->cursor) % FANOUT, now);
        apr_pool_clear(sp);
    }
    apr_pool_destroy(sp);
}

/* The periodic sweep: one subdirectory per SWEEP_EVERY seconds, by
 * whichever caller comes first (a compare-and-swap on the shared time). */
static void file_maybe_sweep(cr_idstore *s, apr_pool_t *p, apr_time_t now, int force)
{
    apr_uint32_t sec = (apr_uint32_t)apr_time_sec(now), next = s->hdr->next_sweep;
    if (force) {
        /* A full store sweeps every subdirectory (a cost bounded by the
         * store's size), but at most once a second. */
        apr_uint32_t last = s->hdr->forced_sweep;
        if (last == sec || apr_atomic_cas32(&s->hdr->forced_sweep, sec, last) != last) {
            return;
        }
    }
    else if (sec < next || apr_atomic_cas32(&s->hdr->next_sweep, sec + SWEEP_EVERY, next) != next) {
        return;
    }
    file_sweep(s, p, force ? FANOUT : 1, now);
}

static void file_totals(cr_idstore *s, apr_uint64_t *entries, apr_uint64_t *bytes)
{
    int i;
    *entries = *bytes = 0;
    for (i = 0; i < FANOUT; i++) {
        *entries += s->hdr->entries[i];
        *bytes += s->hdr->bytes[i];
    }
}

static int file_is_full(cr_idstore *s, apr_size_t more)
{
    apr_uint64_t e, b;
    file_totals(s, &e, &b);
    return e + 1 > s->conf.max_entries || b + ALLOC(more) > s->conf.max_bytes;
}

static cr_ids_rc file_claim(cr_idstore *s, apr_pool_t *p, const char *name, const void *value,
                            apr_size_t vlen, apr_interval_time_t ttl,
                            const unsigned char **out, apr_size_t *outlen)
{
    apr_time_t now = apr_time_now();
    char *path, *tmp;
    unsigned sub = file_path(s, p, name, &path);
    int tries, expired, rc;
    apr_size_t fsize = 0;

    file_maybe_sweep(s, p, now, 0);
    /* A retry finds its record without writing anything (also when full). */
    rc = file_read(p, path, now, out, outlen, &expired, NULL);
    if (rc == 1) {
        apr_atomic_inc32(&s->hdr->exists);
        return CR_IDS_EXISTS;
    }
    if (rc < 0) {
        apr_atomic_inc32(&s->hdr->errors);
        return CR_IDS_UNAVAILABLE;
    }
    if (file_is_full(s, vlen + REC_HDR)) {
        file_maybe_sweep(s, p, now, 1);
        if (file_is_full(s, vlen + REC_HDR)) {
            apr_atomic_inc32(&s->hdr->full);
            return CR_IDS_FULL;       /* nothing unexpired is ever evicted */
        }
    }
    tmp = file_write_tmp(s, p, path, value, vlen, now + ttl);
    if (!tmp) {
        apr_atomic_inc32(&s->hdr->errors);
        return CR_IDS_UNAVAILABLE;
    }
    for (tries = 0; tries < 4; tries++) {
        if (link(tmp, path) == 0) {
            unlink(tmp);
            apr_atomic_inc32(&s->hdr->entries[sub]);
            apr_atomic_add32(&s->hdr->bytes[sub], ALLOC(vlen + REC_HDR));
            apr_atomic_inc32(&s->hdr->claims);
            return CR_IDS_CLAIMED;
        }
        if (errno != EEXIST) {
            break;
        }
        rc = file_read(p, path, now, out, outlen, &expired, &fsize);
        if (rc == 0 && expired) {
            /* Expired: claim over it under the lock, after reading it again
             * (another reclaimer may have won meanwhile). */
            if (!lock_store(s)) {
                break;
            }
            rc = file_read(p, path, now, out, outlen, &expired, &fsize);
            if (rc == 0 && expired && rename(tmp, path) == 0) {
                unlock_store(s);
                apr_atomic_add32(&s->hdr->bytes[sub], ALLOC(vlen + REC_HDR));
                sub_clamped(&s->hdr->bytes[sub], ALLOC(fsize));
                apr_atomic_inc32(&s->hdr->reclaimed);
                apr_atomic_inc32(&s->hdr->claims);
                return CR_IDS_CLAIMED;
            }
            unlock_store(s);
        }
        if (rc == 1) {
            unlink(tmp);
            apr_atomic_inc32(&s->hdr->exists);
            return CR_IDS_EXISTS;
        }
        if (rc < 0) {
            break;
        }
        /* Gone meanwhile (released, swept): link again. */
    }
    unlink(tmp);
    apr_atomic_inc32(&s->hdr->errors);
    return CR_IDS_UNAVAILABLE;
}

static cr_ids_rc file_get(cr_idstore *s, apr_pool_t *p, const char *name,
                          const unsigned char **out, apr_size_t *outlen)
{
    char *path;
    int expired, rc;
    file_path(s, p, name, &path);
    rc = file_read(p, path, apr_time_now(), out, outlen, &expired, NULL);
    if (rc < 0) {
        apr_atomic_inc32(&s->hdr->errors);
        return CR_IDS_UNAVAILABLE;
    }
    return rc ? CR_IDS_EXISTS : CR_IDS_ABSENT;
}

static apr_status_t file_replace(cr_idstore *s, apr_pool_t *p, const char *name,
                                 const void *value, apr_size_t vlen, apr_interval_time_t ttl)
{
    char *path, *tmp;
    unsigned sub = file_path(s, p, name, &path);
    struct stat st;
    int had;
    apr_status_t rv = APR_SUCCESS;

    tmp = file_write_tmp(s, p, path, value, vlen, apr_time_now() + ttl);
    if (!tmp) {
        rv = APR_FROM_OS_ERROR(errno);
        apr_atomic_inc32(&s->hdr->errors);
        return rv ? rv : APR_EGENERAL;
    }
    if (!lock_store(s)) {
        unlink(tmp);
        apr_atomic_inc32(&s->hdr->errors);
        return APR_EGENERAL;
    }
    had = stat(path, &st) == 0;
    if (rename(tmp, path) < 0) {
        rv = APR_FROM_OS_ERROR(errno);
        unlink(tmp);
    }
    unlock_store(s);
    if (rv != APR_SUCCESS) {
        apr_atomic_inc32(&s->hdr->errors);
        return rv;
    }
    if (had) {
        sub_clamped(&s->hdr->bytes[sub], ALLOC(st.st_size));
    }
    else {
        apr_atomic_inc32(&s->hdr->entries[sub]);
    }
    apr_atomic_add32(&s->hdr->bytes[sub], ALLOC(vlen + REC_HDR));
    return APR_SUCCESS;
}

static apr_status_t file_release(cr_idstore *s, apr_pool_t *p, const char *name)
{
    char *path;
    unsigned sub = file_path(s, p, name, &path);
    struct stat st;
    apr_status_t rv = APR_SUCCESS;
    if (!lock_store(s)) {
        apr_atomic_inc32(&s->hdr->errors);
        return APR_EGENERAL;
    }
    if (stat(path, &st) == 0) {
        if (unlink(path) == 0) {
            sub_clamped(&s->hdr->entries[sub], 1);
            sub_clamped(&s->hdr->bytes[sub], ALLOC(st.st_size));
        }
        else {
            rv = APR_FROM_OS_ERROR(errno);
        }
    }
    else if (errno != ENOENT) {
        rv = APR_FROM_OS_ERROR(errno);
    }
    unlock_store(s);
    if (rv != APR_SUCCESS) {
        apr_atomic_inc32(&s->hdr->errors);
    }
    return rv;
}

/* The parent opens the store as root (conf.chown) in a directory its
 * children, running as User, own and can change between two starts.  So
 * it never follows a name there: DIR itself is checked with lstat and
 * opened O_NOFOLLOW, everything in it is reached through that descriptor
 * with O_NOFOLLOW, only what the parent has just created is given to
 * User, and an existing entry is used only when it is a regular file of
 * the store's owner with one link (the owner's own data).  It sweeps
 * nothing: the first child does (as User). */

/* The owner DIR and its files must have: User when the parent is root. */
static uid_t store_owner(const cr_idstore *s)
{
    return s->conf.chown ? (uid_t)s->conf.uid : geteuid();
}

/* Give what fd refers to to User, if this process has just created it. */
static int give_to_user(const cr_idstore *s, int fd)
{
    struct stat st;
    if (!s->conf.chown) {
        return 0;
    }
    if (fstat(fd, &st) < 0) {
        return -1;
    }
    return st.st_uid == geteuid() ? fchown(fd, (uid_t)s->conf.uid, (gid_t)s->conf.gid) : 0;
}

/* DIR, created (mode 0700, then given to User) or an existing real
 * directory of the store's owner with mode 0700: a descriptor on it. */
static const char *open_store_dir(apr_pool_t *p, const cr_idstore *s, int *dfd)
{
    const char *dir = s->conf.dir;
    struct stat st;
    int created = 0, fd;
    *dfd = -1;
    if (lstat(dir, &st) < 0) {
        if (errno != ENOENT || (mkdir(dir, 0700) < 0 && errno != EEXIST)) {
            return apr_psprintf(p, "cannot create %s: %s", dir, strerror(errno));
        }
        created = 1;
    }
    else if (!S_ISDIR(st.st_mode)) {
        return apr_psprintf(p, "refusing %s: not a directory (a symbolic link?)", dir);
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        return apr_psprintf(p, "refusing %s: %s", dir, strerror(errno));
    }
    if ((created && give_to_user(s, fd) < 0) || fstat(fd, &st) < 0) {
        close(fd);
        return apr_psprintf(p, "cannot hand %s to the User: %s", dir, strerror(errno));
    }
    if (st.st_uid != store_owner(s) || (st.st_mode & 07777) != 0700) {
        close(fd);
        return apr_psprintf(p, "refusing %s: not the store's own directory (owner %ld, mode "
                            "%04o; expected owner %ld, mode 0700 -- name a directory of its "
                            "own, or let the server create it)", dir, (long)st.st_uid,
                            (unsigned)(st.st_mode & 07777), (long)store_owner(s));
    }
    *dfd = fd;
    return NULL;
}

/* A subdirectory of DIR: created and given to User, or left as it is (the
 * parent never enters it). */
static const char *make_subdir(apr_pool_t *p, const cr_idstore *s, int dfd, const char *name)
{
    int fd;
    if (mkdirat(dfd, name, 0700) < 0) {
        if (errno == EEXIST) {
            return NULL;
        }
        return apr_psprintf(p, "cannot create %s/%s: %s", s->conf.dir, name, strerror(errno));
    }
    if (!s->conf.chown) {
        return NULL;
    }
    fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || give_to_user(s, fd) < 0) {
        const char *err = apr_psprintf(p, "cannot hand %s/%s to the User: %s", s->conf.dir,
                                       name, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return err;
    }
    close(fd);
    return NULL;
}

/* A file of DIR opened read-write: created (and given to User) or an
 * existing regular file of the store's owner with one link. */
static const char *open_store_file(apr_pool_t *p, const cr_idstore *s, int dfd,
                                   const char *name, int *out)
{
    struct stat st;
    int fd = openat(dfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int created = fd >= 0;
    if (fd < 0 && errno == EEXIST) {
        fd = openat(dfd, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    }
    if (fd < 0) {
        return apr_psprintf(p, "cannot open %s/%s: %s", s->conf.dir, name,
                            errno == ELOOP ? "a symbolic link: refusing it" : strerror(errno));
    }
    if ((created && give_to_user(s, fd) < 0) || fstat(fd, &st) < 0) {
        close(fd);
        return apr_psprintf(p, "cannot hand %s/%s to the User: %s", s->conf.dir, name,
                            strerror(errno));
    }
    if (!S_ISREG(st.st_mode) || st.st_uid != store_owner(s) || st.st_nlink != 1) {
        close(fd);
        return apr_psprintf(p, "refusing %s/%s: not a regular file of the store's owner with "
                            "one link", s->conf.dir, name);
    }
    *out = fd;
    return NULL;
}

static const char *file_open(apr_pool_t *p, cr_idstore *s)
{
    const char *err;
    int dfd, fd, i;
    struct stat st;
    void *m;

    if ((err = open_store_dir(p, s, &dfd)) != NULL) {
        return err;
    }
    for (i = 0; i < FANOUT && !err; i++) {
        err = make_subdir(p, s, dfd, apr_psprintf(p, "%02x", i));
    }
    /* The lock file exists before any child opens it, owned by User. */
    if (!err && (err = open_store_file(p, s, dfd, ".lock", &fd)) == NULL) {
        close(fd);
        err = open_store_file(p, s, dfd, ".stats", &fd);
    }
    close(dfd);
    if (err) {
        return err;
    }
    if (fstat(fd, &st) < 0
        || (st.st_size < (off_t)sizeof(ids_hdr) && ftruncate(fd, sizeof(ids_hdr)) < 0)) {
        err = apr_psprintf(p, "cannot size %s/.stats: %s", s->conf.dir, strerror(errno));
        close(fd);
        return err;
    }
    m = mmap(NULL, sizeof(ids_hdr), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        return apr_psprintf(p, "cannot map %s/.stats: %s", s->conf.dir, strerror(errno));
    }
    s->hdr = m;
    s->lockfd = -1;
    if (memcmp(s->hdr->magic, HDR_MAGIC, sizeof(HDR_MAGIC))) {
        /* New (or foreign): counters from zero; the first child sweeps
         * every subdirectory, setting its entries and bytes from what is
         * there. */
        memset(m, 0, sizeof(ids_hdr));
        memcpy(s->hdr->magic, HDR_MAGIC, sizeof(HDR_MAGIC));
        s->hdr->unswept = 1;
    }
    return NULL;
}

static apr_status_t unmap_hdr(void *data)
{
    cr_idstore *s = data;
    if (s->hdr) {
        munmap((void *)s->hdr, sizeof(ids_hdr));
        s->hdr = NULL;
    }
    return APR_SUCCESS;
}

static apr_status_t close_lockfd(void *data)
{
    cr_idstore *s = data;
    if (s->lockfd >= 0) {
        close(s->lockfd);
        s->lockfd = -1;
    }
    return APR_SUCCESS;
}

static const char *file_child_init(cr_idstore *s, apr_pool_t *pchild)
{
    char *path = apr_pstrcat(pchild, s->conf.dir, "/.lock", NULL);
    s->lockfd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (s->lockfd < 0) {
        return apr_psprintf(pchild, "cannot open %s: %s", path, strerror(errno));
    }
    apr_pool_cleanup_register(pchild, s, close_lockfd, apr_pool_cleanup_null);
    if (apr_thread_mutex_create(&s->tlock, APR_THREAD_MUTEX_DEFAULT, pchild) != APR_SUCCESS) {
        return "cannot create a thread mutex";
    }
    /* A new header: the first child sets the counters from what is there
     * (the parent, root, never enters the subdirectories). */
    if (s->hdr->unswept && apr_atomic_cas32(&s->hdr->unswept, 0, 1) == 1) {
        file_sweep(s, pchild, FANOUT, apr_time_now());
    }
    return NULL;
}

/* ---- memcached ------------------------------------------------------------------------- */

/* memcached reads an expiry over 30 days as a Unix time. */
static apr_uint32_t mc_exptime(apr_interval_time_t ttl)
{
    apr_int64_t sec = (apr_int64_t)((ttl + APR_USEC_PER_SEC - 1) / APR_USEC_PER_SEC);
    if (sec < 1) {
        sec = 1;
    }
    if (sec > 30 * 86400) {
        sec += apr_time_sec(apr_time_now());
    }
    return (apr_uint32_t)sec;
}

/* apr_memcache answers APR_NOTFOUND both for a miss and when it has marked
 * the server dead: only the server's status tells them apart. */
static int mc_down(cr_idstore *s)
{
    return s->ms->status != APR_MC_SERVER_LIVE;
}

/* A claim whose answer was lost (timeout, reset) may still have been
 * stored: remove it if the record there is still this very value (the
 * caller's token makes it unique; only a claim's holder changes its
 * record, so a get and a delete do not race another claimant).  Best
 * effort: a server that stays unreachable keeps the record. */
static void mc_undo(cr_idstore *s, apr_pool_t *p, const char *key, const void *value,
                    apr_size_t vlen)
{
    char *data;
    apr_size_t len;
    apr_uint16_t flags;
    /* apr_memcache disables a server on any error: try it once more now
     * (a lost answer rarely means a dead server; if it is, this fails). */
    apr_memcache_enable_server(s->mc, s->ms);
    if (apr_memcache_getp(s->mc, p, key, &data, &len, &flags) == APR_SUCCESS && len == vlen
        && !memcmp(data, value, vlen)) {
        apr_memcache_delete(s->mc, key, 0);
    }
}

static cr_ids_rc mc_claim(cr_idstore *s, apr_pool_t *p, const char *key, const void *value,
                          apr_size_t vlen, apr_interval_time_t ttl,
                          const unsigned char **out, apr_size_t *outlen)
{
    int tries;
    for (tries = 0; tries < 4; tries++) {
        char *data;
        apr_size_t len;
        apr_uint16_t flags;
        apr_status_t rv = apr_memcache_add(s->mc, key, (char *)value, vlen, mc_exptime(ttl), 0);
        if (rv == APR_SUCCESS) {
            apr_atomic_inc32(&s->n_claims);
            return CR_IDS_CLAIMED;
        }
        if (rv != APR_EEXIST) {
            mc_undo(s, p, key, value, vlen);
            break;
        }
        rv = apr_memcache_getp(s->mc, p, key, &data, &len, &flags);
        if (rv == APR_SUCCESS) {
            *out = (const unsigned char *)data;
            *outlen = len;
            apr_atomic_inc32(&s->n_exists);
            return CR_IDS_EXISTS;
        }
        if (!APR_STATUS_IS_NOTFOUND(rv) || mc_down(s)) {
            break;
        }
        /* Expired or released between the two: add again. */
    }
    apr_atomic_inc32(&s->n_errors);
    return CR_IDS_UNAVAILABLE;
}

static cr_ids_rc mc_get(cr_idstore *s, apr_pool_t *p, const char *key,
                        const unsigned char **out, apr_size_t *outlen)
{
    char *data;
    apr_size_t len;
    apr_uint16_t flags;
    apr_status_t rv;
    if (!apr_memcache_find_server_hash(s->mc, apr_memcache_hash(s->mc, key, strlen(key)))) {
        apr_atomic_inc32(&s->n_errors);
        return CR_IDS_UNAVAILABLE;
    }
    rv = apr_memcache_getp(s->mc, p, key, &data, &len, &flags);
    if (rv == APR_SUCCESS) {
        *out = (const unsigned char *)data;
        *outlen = len;
        return CR_IDS_EXISTS;
    }
    if (APR_STATUS_IS_NOTFOUND(rv) && !mc_down(s)) {
        return CR_IDS_ABSENT;
    }
    apr_atomic_inc32(&s->n_errors);
    return CR_IDS_UNAVAILABLE;
}

static const char *mc_child_init(cr_idstore *s, apr_pool_t *pchild)
{
    int max = s->conf.max_conns ? s->conf.max_conns : 64;
    if (apr_memcache_create(pchild, 1, 0, &s->mc) != APR_SUCCESS
        /* Idle connections live 1 s: apr_memcache cannot tell one the
         * server closed (a restart) until a command fails on it, and each
         * such failure marks the server dead for 5 s. */
        || apr_memcache_server_create(pchild, s->conf.host, s->conf.port, 0, (apr_uint32_t)max,
                                      (apr_uint32_t)max, 1000 * 1000, &s->ms) != APR_SUCCESS
        || apr_memcache_add_server(s->mc, s->ms) != APR_SUCCESS) {
        return "cannot set up the memcached client";
    }
    return NULL;
}

/* ---- Redis ----------------------------------------------------------------------------- */

static apr_status_t redis_construct(void **res, void *params, apr_pool_t *pool)
{
    cr_idstore *s = params;
    apr_interval_time_t t = s->conf.timeout ? s->conf.timeout : CR_IDS_NET_TIMEOUT;
    struct timeval tv;
    redis_conn *rc;
    redisContext *c;
    (void)pool;
    tv.tv_sec = (time_t)(t / APR_USEC_PER_SEC);
    tv.tv_usec = (suseconds_t)(t % APR_USEC_PER_SEC);
    c = redisConnectWithTimeout(s->conf.host, s->conf.port, tv);
    if (!c || c->err || redisSetTimeout(c, tv) != REDIS_OK) {
        if (c) {
            redisFree(c);
        }
        return APR_ECONNREFUSED;
    }
    rc = malloc(sizeof(*rc));
    if (!rc) {
        redisFree(c);
        return APR_ENOMEM;
    }
    rc->c = c;
    *res = rc;
    return APR_SUCCESS;
}

static apr_status_t redis_destruct(void *res, void *params, apr_pool_t *pool)
{
    redis_conn *rc = res;
    (void)params;
    (void)pool;
    redisFree(rc->c);
    free(rc);
    return APR_SUCCESS;
}

/* One command on a pooled connection.  NULL on any error (the connection
 * is then dropped, and the next call connects afresh). */
/* A pooled connection the server closed while it sat idle (a restart, an
 * idle timeout) reads as EOF at once: never send a command on it, where a
 * failure would leave the command's outcome unknown. */
static int redis_stale(redisContext *c)
{
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

static redisReply *redis_cmd(cr_idstore *s, int argc, const char **argv, const size_t *lens)
{
    redis_conn *rc;
    redisReply *r;
    int tries = 0;
    for (;;) {
        if (apr_reslist_acquire(s->rl, (void **)&rc) != APR_SUCCESS) {
            return NULL;
        }
        if (!redis_stale(rc->c)) {
            break;
        }
        apr_reslist_invalidate(s->rl, rc);
        if (++tries > 256) {
            return NULL;
        }
    }
    r = redisCommandArgv(rc->c, argc, argv, lens);
    if (!r || rc->c->err) {
        if (r) {
            freeReplyObject(r);
        }
        apr_reslist_invalidate(s->rl, rc);
        return NULL;
    }
    apr_reslist_release(s->rl, rc);
    if (r->type == REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static redisReply *redis_set(cr_idstore *s, const char *key, const void *value, apr_size_t vlen,
                             apr_interval_time_t ttl, int nx)
{
    char ms[32];
    const char *argv[6];
    size_t lens[6];
    apr_int64_t msec = (apr_int64_t)((ttl + 999) / 1000);
    apr_snprintf(ms, sizeof(ms), "%" APR_INT64_T_FMT, msec < 1 ? (apr_int64_t)1 : msec);
    argv[0] = "SET"; lens[0] = 3;
    argv[1] = key; lens[1] = strlen(key);
    argv[2] = value; lens[2] = vlen;
    argv[3] = "PX"; lens[3] = 2;
    argv[4] = ms; lens[4] = strlen(ms);
    argv[5] = "NX"; lens[5] = 2;
    return redis_cmd(s, nx ? 6 : 5, argv, lens);
}

/* GET: 1 found (*out from p), 0 absent, -1 error. */
static int redis_get(cr_idstore *s, apr_pool_t *p, const char *key,
                     const unsigned char **out, apr_size_t *outlen)
{
    const char *argv[2] = { "GET", key };
    size_t lens[2] = { 3, strlen(key) };
    redisReply *r = redis_cmd(s, 2, argv, lens);
    int rc;
    if (!r) {
        return -1;
    }
    if (r->type == REDIS_REPLY_STRING) {
        *out = apr_pmemdup(p, r->str, r->len);
        *outlen = r->len;
        rc = 1;
    }
    else {
        rc = r->type == REDIS_REPLY_NIL ? 0 : -1;
    }
    freeReplyObject(r);
    return rc;
}

/* mc_undo for Redis, in one atomic step. */
static void redis_undo(cr_idstore *s, const char *key, const void *value, apr_size_t vlen)
{
    static const char script[] =
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
        "return 0";
    const char *argv[5] = { "EVAL", script, "1", key, value };
    size_t lens[5] = { 4, sizeof(script) - 1, 1, strlen(key), vlen };
    redisReply *r = redis_cmd(s, 5, argv, lens);
    if (r) {
        freeReplyObject(r);
    }
}

static cr_ids_rc redis_claim(cr_idstore *s, apr_pool_t *p, const char *key, const void *value,
                             apr_size_t vlen, apr_interval_time_t ttl,
                             const unsigned char **out, apr_size_t *outlen)
{
    int tries;
    for (tries = 0; tries < 4; tries++) {
        redisReply *r = redis_set(s, key, value, vlen, ttl, 1);
        int won, got;
        if (!r) {
            redis_undo(s, key, value, vlen);
            break;
        }
        won = r->type == REDIS_REPLY_STATUS;
        got = r->type == REDIS_REPLY_NIL;
        freeReplyObject(r);
        if (won) {
            apr_atomic_inc32(&s->n_claims);
            return CR_IDS_CLAIMED;
        }
        if (!got) {
            break;
        }
        got = redis_get(s, p, key, out, outlen);
        if (got == 1) {
            apr_atomic_inc32(&s->n_exists);
            return CR_IDS_EXISTS;
        }
        if (got < 0) {
            break;
        }
    }
    apr_atomic_inc32(&s->n_errors);
    return CR_IDS_UNAVAILABLE;
}

static const char *redis_child_init(cr_idstore *s, apr_pool_t *pchild)
{
    int max = s->conf.max_conns ? s->conf.max_conns : 64;
    if (apr_reslist_create(&s->rl, 0, max, max, apr_time_from_sec(60), redis_construct,
                           redis_destruct, s, pchild) != APR_SUCCESS) {
        return "cannot create the Redis connection pool";
    }
    /* Never wait forever for a free connection. */
    apr_reslist_timeout_set(s->rl, s->conf.timeout ? s->conf.timeout : CR_IDS_NET_TIMEOUT);
    return NULL;
}

/* CONFIG GET name: its value, or NULL (no answer, CONFIG renamed away). */
static const char *redis_config(apr_pool_t *p, redisContext *c, const char *name)
{
    redisReply *r = redisCommand(c, "CONFIG GET %s", name);
    const char *v = NULL;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2
        && r->element[1]->type == REDIS_REPLY_STRING) {
        v = apr_pstrmemdup(p, r->element[1]->str, r->element[1]->len);
    }
    if (r) {
        freeReplyObject(r);
    }
    return v;
}

const char *cr_ids_eviction_risk(cr_idstore *s, apr_pool_t *p)
{
    void *res;
    redis_conn *rc;
    const char *policy, *maxmem;
    if (s->conf.kind != CR_IDS_REDIS || redis_construct(&res, s, p) != APR_SUCCESS) {
        return NULL;
    }
    rc = res;
    policy = redis_config(p, rc->c, "maxmemory-policy");
    maxmem = redis_config(p, rc->c, "maxmemory");
    redis_destruct(rc, s, p);
    if (!policy || !maxmem || !strcmp(policy, "noeviction") || !strcmp(maxmem, "0")) {
        return NULL;
    }
    return apr_psprintf(p, "maxmemory %s with maxmemory-policy %s", maxmem, policy);
}

/* ---- the API --------------------------------------------------------------------------- */

const char *cr_ids_open(apr_pool_t *p, const cr_ids_conf *c, cr_idstore **out)
{
    cr_idstore *s = apr_pcalloc(p, sizeof(*s));
    const char *err = NULL;
    s->conf = *c;
    s->pool = p;
    s->lockfd = -1;
    if (!s->conf.max_entries) {
        s->conf.max_entries = CR_IDS_DEF_MAX_ENTRIES;
    }
    if (!s->conf.max_bytes) {
        s->conf.max_bytes = CR_IDS_DEF_MAX_BYTES;
    }
    if (c->kind == CR_IDS_FILE) {
        err = file_open(p, s);
        if (!err) {
            apr_pool_cleanup_register(p, s, unmap_hdr, apr_pool_cleanup_null);
        }
    }
    else if (c->kind != CR_IDS_MEMCACHE && c->kind != CR_IDS_REDIS) {
        err = "unknown store";
    }
    if (!err) {
        *out = s;
    }
    return err;
}

const char *cr_ids_child_init(cr_idstore *s, apr_pool_t *pchild)
{
    switch (s->conf.kind) {
    case CR_IDS_FILE: return file_child_init(s, pchild);
    case CR_IDS_MEMCACHE: return mc_child_init(s, pchild);
    default: return redis_child_init(s, pchild);
    }
}

cr_ids_rc cr_ids_claim(cr_idstore *s, apr_pool_t *p, const char *name,
                       const void *value, apr_size_t vlen, apr_interval_time_t ttl,
                       const unsigned char **out, apr_size_t *outlen)
{
    char key[47];
    if (vlen > CR_IDS_MAX_VALUE) {
        return CR_IDS_FULL;
    }
    if (s->conf.kind == CR_IDS_FILE) {
        if (s->lockfd < 0) {
            return CR_IDS_UNAVAILABLE;      /* cr_ids_child_init not run */
        }
        return file_claim(s, p, name, value, vlen, ttl, out, outlen);
    }
    key_of(name, key);
    if (s->conf.kind == CR_IDS_MEMCACHE) {
        return s->mc ? mc_claim(s, p, key, value, vlen, ttl, out, outlen) : CR_IDS_UNAVAILABLE;
    }
    return s->rl ? redis_claim(s, p, key, value, vlen, ttl, out, outlen) : CR_IDS_UNAVAILABLE;
}

cr_ids_rc cr_ids_get(cr_idstore *s, apr_pool_t *p, const char *name,
                     const unsigned char **out, apr_size_t *outlen)
{
    char key[47];
    int rc;
    if (s->conf.kind == CR_IDS_FILE) {
        return file_get(s, p, name, out, outlen);
    }
    key_of(name, key);
    if (s->conf.kind == CR_IDS_MEMCACHE) {
        return s->mc ? mc_get(s, p, key, out, outlen) : CR_IDS_UNAVAILABLE;
    }
    if (!s->rl) {
        return CR_IDS_UNAVAILABLE;
    }
    rc = redis_get(s, p, key, out, outlen);
    if (rc < 0) {
        apr_atomic_inc32(&s->n_errors);
    }
    return rc < 0 ? CR_IDS_UNAVAILABLE : rc ? CR_IDS_EXISTS : CR_IDS_ABSENT;
}

apr_status_t cr_ids_replace(cr_idstore *s, apr_pool_t *p, const char *name,
                            const void *value, apr_size_t vlen, apr_interval_time_t ttl)
{
    char key[47];
    redisReply *r;
    apr_status_t rv;
    if (vlen > CR_IDS_MAX_VALUE) {
        return APR_ENOSPC;
    }
    if (s->conf.kind == CR_IDS_FILE) {
        return s->lockfd < 0 ? APR_EINIT : file_replace(s, p, name, value, vlen, ttl);
    }
    key_of(name, key);
    if (s->conf.kind == CR_IDS_MEMCACHE) {
        rv = s->mc ? apr_memcache_set(s->mc, key, (char *)value, vlen, mc_exptime(ttl), 0)
                   : APR_EINIT;
    }
    else {
        r = s->rl ? redis_set(s, key, value, vlen, ttl, 0) : NULL;
        rv = r && r->type == REDIS_REPLY_STATUS ? APR_SUCCESS : APR_EGENERAL;
        if (r) {
            freeReplyObject(r);
        }
    }
    if (rv != APR_SUCCESS) {
        apr_atomic_inc32(&s->n_errors);
    }
    return rv;
}

apr_status_t cr_ids_release(cr_idstore *s, apr_pool_t *p, const char *name)
{
    char key[47];
    apr_status_t rv;
    if (s->conf.kind == CR_IDS_FILE) {
        return s->lockfd < 0 ? APR_EINIT : file_release(s, p, name);
    }
    key_of(name, key);
    if (s->conf.kind == CR_IDS_MEMCACHE) {
        rv = s->mc ? apr_memcache_delete(s->mc, key, 0) : APR_EINIT;
        if (APR_STATUS_IS_NOTFOUND(rv) && !mc_down(s)) {
            rv = APR_SUCCESS;
        }
    }
    else {
        const char *argv[2] = { "DEL", key };
        size_t lens[2] = { 3, strlen(key) };
        redisReply *r = s->rl ? redis_cmd(s, 2, argv, lens) : NULL;
        rv = r ? APR_SUCCESS : APR_EGENERAL;
        if (r) {
            freeReplyObject(r);
        }
    }
    if (rv != APR_SUCCESS) {
        apr_atomic_inc32(&s->n_errors);
    }
    return rv;
}

void cr_ids_get_stats(cr_idstore *s, cr_ids_stats *st)
{
    memset(st, 0, sizeof(*st));
    if (s->conf.kind == CR_IDS_FILE) {
        file_totals(s, &st->entries, &st->bytes);
        st->max_entries = s->conf.max_entries;
        st->max_bytes = s->conf.max_bytes;
        st->claims = s->hdr->claims;
        st->exists = s->hdr->exists;
        st->reclaimed = s->hdr->reclaimed;
        st->full = s->hdr->full;
        st->errors = s->hdr->errors;
        return;
    }
    st->claims = s->n_claims;
    st->exists = s->n_exists;
    st->errors = s->n_errors;
}
