/* Unit tests of idempotency: the canonical body identity (cr_canon) and the
 * idempotency store (cr_idstore) against its file backend, and against a
 * real memcached and Redis started here on free loopback ports (skipped
 * with a message when the binaries are missing). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <check.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>

#include "cr_canon.h"
#include "cr_idstore.h"

static apr_pool_t *pool;
static char *tmpdir;

static void setup(void) { apr_pool_create(&pool, NULL); }
static void teardown(void) { apr_pool_destroy(pool); }

/* ---- canonical identity ---- */

static apr_uint64_t dig(const char *json)
{
    apr_uint64_t d = 0;
    ck_assert_msg(cr_canon_digest(pool, json, strlen(json), &d), "not JSON: %s", json);
    return d;
}

static const char *canon(const char *json)
{
    return cr_canon_json(pool, json, strlen(json), NULL);
}

START_TEST(canon_big_numbers_differ)
{
    const char *a = "{\"product_id\":1,\"extra\":100000000000000000000}";
    const char *b = "{\"product_id\":1,\"extra\":100000000000000000001}";
    ck_assert_uint_ne(dig(a), dig(b));
    ck_assert_uint_ne(dig("[18446744073709551616]"), dig("[18446744073709551617]"));
    ck_assert_uint_ne(dig("[0.30000000000000000001]"), dig("[0.3]"));
    ck_assert_uint_ne(dig("[-1]"), dig("[1]"));
}
END_TEST

START_TEST(canon_equal_forms)
{
    const char *a = "{\"b\":[1,2,{\"y\":true,\"x\":null}],\"a\":\"caf\\u00e9\"}";
    const char *b = " {\n \"a\" : \"café\" ,\t\"b\":[ 1 , 2 ,{ \"x\":null , \"y\" : true } ] }\r\n";
    ck_assert_uint_eq(dig(a), dig(b));
    ck_assert_str_eq(canon(a), "{\"a\":\"café\",\"b\":[1e0,2e0,{\"x\":null,\"y\":true}]}");
    /* Numbers by exact decimal value. */
    ck_assert_str_eq(canon("100"), "1e2");
    ck_assert_uint_eq(dig("[100]"), dig("[1e2]"));
    ck_assert_uint_eq(dig("[100]"), dig("[100.0]"));
    ck_assert_uint_eq(dig("[100]"), dig("[1.00E+2]"));
    ck_assert_uint_eq(dig("[0.5]"), dig("[5e-1]"));
    ck_assert_uint_eq(dig("[-0]"), dig("[0]"));
    ck_assert_uint_eq(dig("[0.0e10]"), dig("[0]"));
    ck_assert_str_eq(canon("-12.50"), "-125e-1");
    ck_assert_str_eq(canon("1e0000000000000000000000002"), "1e2");
    ck_assert_str_eq(canon("1.5e1000000000000000000"), "15e1000000000000000000-1");
    /* Escapes: one spelling of each string; keys likewise. */
    ck_assert_uint_eq(dig("[\"a\\/b\"]"), dig("[\"a/b\"]"));
    ck_assert_uint_eq(dig("{\"\\u0061\":1}"), dig("{\"a\":1}"));
    ck_assert_str_eq(canon("\"\\ud83d\\ude00\\n\\\"\""), "\"\xf0\x9f\x98\x80\\u000a\\\"\"");
    /* Arrays keep their order; types are distinct. */
    ck_assert_uint_ne(dig("[1,2]"), dig("[2,1]"));
    ck_assert_uint_ne(dig("[\"1\"]"), dig("[1]"));
    ck_assert_uint_ne(dig("{\"a\":{}}"), dig("{\"a\":[]}"));
}
END_TEST

START_TEST(canon_rejects_non_json)
{
    apr_uint64_t d;
    ck_assert_ptr_null(canon("{\"a\":1"));
    ck_assert_ptr_null(canon("{\"a\":1}x"));
    ck_assert_ptr_null(canon("[01.]"));
    ck_assert_ptr_null(canon("\"abc"));
    ck_assert_ptr_null(canon(""));
    ck_assert(!cr_canon_digest(pool, "nul", 3, &d));
}
END_TEST

/* ---- helpers for the stores ---- */

static const char *newdir(const char *tag)
{
    return apr_psprintf(pool, "%s/%s-%ld-%d", tmpdir, tag, (long)getpid(), rand());
}

static cr_idstore *open_store(cr_ids_conf *c)
{
    cr_idstore *s = NULL;
    const char *err = cr_ids_open(pool, c, &s);
    ck_assert_msg(!err, "open: %s", err ? err : "");
    err = cr_ids_child_init(s, pool);
    ck_assert_msg(!err, "child_init: %s", err ? err : "");
    return s;
}

static cr_idstore *file_store(apr_uint32_t max_entries)
{
    cr_ids_conf c;
    ck_assert_ptr_null(cr_ids_parse(pool, apr_pstrcat(pool, "file:", newdir("ids"), NULL), &c));
    c.max_entries = max_entries;
    return open_store(&c);
}

/* The basic life of one record, for any backend. */
static void lifecycle(cr_idstore *s)
{
    const unsigned char *out = NULL;
    apr_size_t n = 0;
    const char *name = apr_psprintf(pool, "idem:0123456789abcdef:key with / and spaces %d", rand());

    ck_assert_int_eq(cr_ids_get(s, pool, name, &out, &n), CR_IDS_ABSENT);
    ck_assert_int_eq(cr_ids_claim(s, pool, name, "first", 5, apr_time_from_sec(30), &out, &n),
                     CR_IDS_CLAIMED);
    ck_assert_int_eq(cr_ids_claim(s, pool, name, "second", 6, apr_time_from_sec(30), &out, &n),
                     CR_IDS_EXISTS);
    ck_assert_uint_eq(n, 5);
    ck_assert(!memcmp(out, "first", 5));
    ck_assert_int_eq(cr_ids_replace(s, pool, name, "done:answer", 11, apr_time_from_sec(30)),
                     APR_SUCCESS);
    ck_assert_int_eq(cr_ids_get(s, pool, name, &out, &n), CR_IDS_EXISTS);
    ck_assert_uint_eq(n, 11);
    ck_assert(!memcmp(out, "done:answer", 11));
    ck_assert_int_eq(cr_ids_release(s, pool, name), APR_SUCCESS);
    ck_assert_int_eq(cr_ids_get(s, pool, name, &out, &n), CR_IDS_ABSENT);
    ck_assert_int_eq(cr_ids_release(s, pool, name), APR_SUCCESS);
    ck_assert_int_eq(cr_ids_claim(s, pool, name, "third", 5, apr_time_from_sec(30), &out, &n),
                     CR_IDS_CLAIMED);
    /* Expiry: a record past its time is absent, and claimable again. */
    name = apr_pstrcat(pool, name, "-short", NULL);
    ck_assert_int_eq(cr_ids_claim(s, pool, name, "x", 1, apr_time_from_msec(1100), &out, &n),
                     CR_IDS_CLAIMED);
    ck_assert_int_eq(cr_ids_claim(s, pool, name, "y", 1, apr_time_from_sec(30), &out, &n),
                     CR_IDS_EXISTS);
    apr_sleep(apr_time_from_msec(2100));    /* memcached counts whole seconds */
    ck_assert_int_eq(cr_ids_get(s, pool, name, &out, &n), CR_IDS_ABSENT);
    ck_assert_int_eq(cr_ids_claim(s, pool, name, "z", 1, apr_time_from_sec(30), &out, &n),
                     CR_IDS_CLAIMED);
}

/* Many claims of the same names at once: exactly one wins each. */
#define RACE_NAMES 100
#define RACE_THREADS 8
#define RACE_PROCS 4

typedef struct race {
    cr_idstore *s;
    const char *prefix;
    volatile int *go;
    int won[RACE_NAMES];
    int errors;
} race;

static void *APR_THREAD_FUNC race_thread(apr_thread_t *t, void *data)
{
    race *r = data;
    apr_pool_t *p;
    int i;
    apr_pool_create(&p, NULL);
    while (!*r->go) {
        /* spin: every thread starts at the same instant */
    }
    for (i = 0; i < RACE_NAMES; i++) {
        const unsigned char *out;
        apr_size_t n;
        cr_ids_rc rc = cr_ids_claim(r->s, p, apr_psprintf(p, "%s%d", r->prefix, i), "v", 1,
                                    apr_time_from_sec(60), &out, &n);
        if (rc == CR_IDS_CLAIMED) {
            r->won[i]++;
        }
        else if (rc != CR_IDS_EXISTS) {
            r->errors++;
        }
        apr_pool_clear(p);
    }
    apr_pool_destroy(p);
    (void)t;        /* return, not apr_thread_exit: ASan (gcc 12) misreads pthread_exit */
    return NULL;
}

/* Threads of this process; returns wins per name in won[]. */
static void race_threads(cr_idstore *s, const char *prefix, int won[RACE_NAMES], int *errors)
{
    apr_thread_t *th[RACE_THREADS];
    race r[RACE_THREADS];
    volatile int go = 0;
    int i, j;
    memset(won, 0, sizeof(int) * RACE_NAMES);
    *errors = 0;
    for (i = 0; i < RACE_THREADS; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        r[i].s = s;
        r[i].prefix = prefix;
        r[i].go = &go;
        ck_assert_int_eq(apr_thread_create(&th[i], NULL, race_thread, &r[i], pool), APR_SUCCESS);
    }
    apr_sleep(apr_time_from_msec(50));
    go = 1;
    for (i = 0; i < RACE_THREADS; i++) {
        apr_status_t trv;
        apr_thread_join(&trv, th[i]);
        for (j = 0; j < RACE_NAMES; j++) {
            won[j] += r[i].won[j];
        }
        *errors += r[i].errors;
    }
}

static void assert_one_each(const int won[RACE_NAMES], int errors, const char *what)
{
    int j;
    ck_assert_msg(errors == 0, "%s: %d errors", what, errors);
    for (j = 0; j < RACE_NAMES; j++) {
        ck_assert_msg(won[j] == 1, "%s: name %d claimed %d times", what, j, won[j]);
    }
}

/* Forked processes, each with threads: wins per name summed over a pipe.
 * Each child runs cr_ids_child_init, as httpd's children do. */
static void race_procs(cr_idstore *s, const char *prefix)
{
    int fds[2], i, j, total[RACE_NAMES], errors = 0;
    pid_t pids[RACE_PROCS];
    apr_time_t start = apr_time_now() + apr_time_from_msec(300);
    ck_assert_int_eq(pipe(fds), 0);
    for (i = 0; i < RACE_PROCS; i++) {
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0) {
            int won[RACE_NAMES + 1];
            apr_pool_t *pchild;
            close(fds[0]);
            apr_pool_create(&pchild, NULL);
            if (cr_ids_child_init(s, pchild)) {
                _exit(2);
            }
            while (apr_time_now() < start) {
                /* the same instant in every process */
            }
            race_threads(s, prefix, won, &won[RACE_NAMES]);
            if (write(fds[1], won, sizeof(won)) != (ssize_t)sizeof(won)) {
                _exit(3);
            }
            _exit(0);
        }
    }
    close(fds[1]);
    memset(total, 0, sizeof(total));
    for (i = 0; i < RACE_PROCS; i++) {
        int won[RACE_NAMES + 1], st;
        ck_assert_int_eq(read(fds[0], won, sizeof(won)), (ssize_t)sizeof(won));
        for (j = 0; j < RACE_NAMES; j++) {
            total[j] += won[j];
        }
        errors += won[RACE_NAMES];
        (void)st;
    }
    for (i = 0; i < RACE_PROCS; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d failed", i);
    }
    close(fds[0]);
    assert_one_each(total, errors, "processes");
}

/* ---- file store ---- */

START_TEST(file_lifecycle)
{
    lifecycle(file_store(0));
}
END_TEST

START_TEST(file_race_threads)
{
    int won[RACE_NAMES], errors;
    race_threads(file_store(0), "race-", won, &errors);
    assert_one_each(won, errors, "threads");
}
END_TEST

START_TEST(file_race_processes)
{
    race_procs(file_store(0), "prace-");
}
END_TEST

START_TEST(file_survives_reopen)
{
    cr_ids_conf c;
    cr_idstore *s;
    apr_pool_t *p1;
    const unsigned char *out;
    apr_size_t n;
    cr_ids_stats st;
    const char *dir = newdir("reopen");
    ck_assert_ptr_null(cr_ids_parse(pool, apr_pstrcat(pool, "file:", dir, NULL), &c));
    /* A "server" whose pools all go away (a full restart)... */
    apr_pool_create(&p1, NULL);
    ck_assert_ptr_null(cr_ids_open(p1, &c, &s));
    ck_assert_ptr_null(cr_ids_child_init(s, p1));
    ck_assert_int_eq(cr_ids_claim(s, p1, "k1", "order-1", 7, apr_time_from_sec(60), &out, &n),
                     CR_IDS_CLAIMED);
    ck_assert_int_eq(cr_ids_claim(s, p1, "k2", "order-2", 7, apr_time_from_sec(60), &out, &n),
                     CR_IDS_CLAIMED);
    apr_pool_destroy(p1);
    /* ... and the next one finds the records and the counters. */
    s = open_store(&c);
    ck_assert_int_eq(cr_ids_claim(s, pool, "k1", "again", 5, apr_time_from_sec(60), &out, &n),
                     CR_IDS_EXISTS);
    ck_assert(n == 7 && !memcmp(out, "order-1", 7));
    cr_ids_get_stats(s, &st);
    ck_assert_uint_eq(st.entries, 2);
    ck_assert_uint_eq(st.bytes, 2 * 4096);     /* whole pages */
    ck_assert_uint_eq(st.claims, 2);
    ck_assert_uint_eq(st.exists, 1);
}
END_TEST

START_TEST(file_full_fails_closed)
{
    cr_idstore *s = file_store(3);
    const unsigned char *out;
    apr_size_t n;
    cr_ids_stats st;
    int i;
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(cr_ids_claim(s, pool, apr_psprintf(pool, "full-%d", i), "v", 1,
                                      apr_time_from_msec(500), &out, &n), CR_IDS_CLAIMED);
    }
    /* Nothing unexpired is evicted: a new name is refused, a known one still answers. */
    ck_assert_int_eq(cr_ids_claim(s, pool, "full-new", "v", 1, apr_time_from_sec(60), &out, &n),
                     CR_IDS_FULL);
    ck_assert_int_eq(cr_ids_claim(s, pool, "full-1", "v", 1, apr_time_from_sec(60), &out, &n),
                     CR_IDS_EXISTS);
    cr_ids_get_stats(s, &st);
    ck_assert_uint_eq(st.entries, 3);
    ck_assert_uint_eq(st.full, 1);
    /* Once they expire, they are swept and the new name goes in. */
    apr_sleep(apr_time_from_msec(2100));
    ck_assert_int_eq(cr_ids_claim(s, pool, "full-new", "v", 1, apr_time_from_sec(60), &out, &n),
                     CR_IDS_CLAIMED);
    cr_ids_get_stats(s, &st);
    ck_assert_uint_eq(st.entries, 1);
    ck_assert_uint_ge(st.reclaimed, 3);
}
END_TEST

START_TEST(file_byte_bound)
{
    cr_ids_conf c;
    cr_idstore *s;
    const unsigned char *out;
    apr_size_t n;
    char big[5000];
    memset(big, 'b', sizeof(big));
    ck_assert_ptr_null(cr_ids_parse(pool, apr_pstrcat(pool, "file:", newdir("bytes"), NULL), &c));
    c.max_bytes = 4 * 4096;
    s = open_store(&c);
    /* 5,000 bytes + header cost two pages; two records fill four. */
    ck_assert_int_eq(cr_ids_claim(s, pool, "b1", big, sizeof(big), apr_time_from_sec(60), &out, &n),
                     CR_IDS_CLAIMED);
    ck_assert_int_eq(cr_ids_claim(s, pool, "b2", big, sizeof(big), apr_time_from_sec(60), &out, &n),
                     CR_IDS_CLAIMED);
    ck_assert_int_eq(cr_ids_claim(s, pool, "b3", "v", 1, apr_time_from_sec(60), &out, &n),
                     CR_IDS_FULL);
    /* Released records give their pages back. */
    ck_assert_int_eq(cr_ids_release(s, pool, "b1"), APR_SUCCESS);
    ck_assert_int_eq(cr_ids_claim(s, pool, "b3", "v", 1, apr_time_from_sec(60), &out, &n),
                     CR_IDS_CLAIMED);
}
END_TEST

START_TEST(file_unusable_dir_is_an_error)
{
    cr_idstore *s = file_store(0);
    const unsigned char *out;
    apr_size_t n;
    cr_ids_conf c;
    /* The records' directories vanish (a wiped state dir): an error, never
     * "absent" and never "claimed". */
    ck_assert_ptr_null(cr_ids_parse(pool, apr_pstrcat(pool, "file:", newdir("gone"), NULL), &c));
    s = open_store(&c);
    ck_assert_int_eq(system(apr_psprintf(pool, "chmod 0 %s/*", c.dir)) == 0 ? 0 : 1, 0);
    if (geteuid() == 0) {
        /* root ignores permissions: remove the directories instead */
        ck_assert_int_eq(system(apr_psprintf(pool, "rm -rf %s/[0-9a-f]*", c.dir)), 0);
    }
    ck_assert_int_eq(cr_ids_claim(s, pool, "k", "v", 1, apr_time_from_sec(60), &out, &n),
                     CR_IDS_UNAVAILABLE);
    ck_assert_int_eq(system(apr_psprintf(pool, "chmod -R 0700 %s", c.dir)), 0);
}
END_TEST

/* httpd opens the store as root in the parent; its children write as
 * User.  (Only meaningful as root; otherwise nothing to hand over.) */
START_TEST(file_children_as_user)
{
    cr_ids_conf c;
    cr_idstore *s;
    struct stat st;
    pid_t pid;
    int status;
    if (geteuid() != 0) {
        printf("SKIP file_children_as_user: not root\n");
        return;
    }
    ck_assert_ptr_null(cr_ids_parse(pool, apr_pstrcat(pool, "file:", newdir("owner"), NULL), &c));
    c.chown = 1;
    c.uid = 65534;
    c.gid = 65534;
    ck_assert_ptr_null(cr_ids_open(pool, &c, &s));
    ck_assert_int_eq(stat(apr_pstrcat(pool, c.dir, "/ab", NULL), &st), 0);
    ck_assert_int_eq(st.st_uid, 65534);
    ck_assert_int_eq(stat(apr_pstrcat(pool, c.dir, "/.lock", NULL), &st), 0);
    ck_assert_int_eq(st.st_uid, 65534);
    pid = fork();
    if (pid == 0) {
        const unsigned char *out;
        apr_size_t n;
        apr_pool_t *pc;
        apr_pool_create(&pc, NULL);
        if (setgid(65534) < 0 || setuid(65534) < 0 || cr_ids_child_init(s, pc)) {
            _exit(2);
        }
        _exit(cr_ids_claim(s, pc, "as-user", "v", 1, apr_time_from_sec(60), &out, &n)
              == CR_IDS_CLAIMED
              && cr_ids_replace(s, pc, "as-user", "w", 1, apr_time_from_sec(60)) == APR_SUCCESS
              && cr_ids_release(s, pc, "as-user") == APR_SUCCESS ? 0 : 3);
    }
    waitpid(pid, &status, 0);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child as nobody: %d", status);
}
END_TEST

/* The parent (root) reopens a store whose directory User could change:
 * it follows no symbolic link planted there, touches nothing outside it,
 * and refuses a directory that is not the store's own. */
static int sh(const char *cmd)
{
    return system(cmd);
}

START_TEST(file_planted_links_not_followed)
{
    cr_ids_conf c;
    cr_idstore *s;
    struct stat st;
    const char *victim = newdir("victim"), *vfile, *err;
    const char *dir = newdir("planted");
    int as_root = geteuid() == 0;
    ck_assert_ptr_null(cr_ids_parse(pool, apr_pstrcat(pool, "file:", dir, NULL), &c));
    if (as_root) {
        c.chown = 1;
        c.uid = 65534;
        c.gid = 65534;
    }
    ck_assert_ptr_null(cr_ids_open(pool, &c, &s));
    /* A victim directory of root's with an "expired record" in it. */
    ck_assert_int_eq(mkdir(victim, 0755), 0);
    ck_assert_int_eq(chmod(victim, 0755), 0);
    vfile = apr_pstrcat(pool, victim, "/0123456789abcdef0123456789abcdef012345", NULL);
    ck_assert_int_eq(sh(apr_psprintf(pool, "echo secret > %s && touch -d 2000-01-01 %s",
                                     vfile, vfile)), 0);
    /* User replaces DIR/00 with a link to it and spoils .stats (a new
     * header: the old code swept every subdirectory as root). */
    ck_assert_int_eq(sh(apr_psprintf(pool, "rmdir %s/00 && ln -s %s %s/00 && "
                                     "dd if=/dev/zero of=%s/.stats bs=8 count=1 conv=notrunc "
                                     "2>/dev/null", dir, victim, dir, dir)), 0);
    ck_assert_ptr_null(cr_ids_open(pool, &c, &s));
    ck_assert_int_eq(stat(vfile, &st), 0);              /* not swept */
    ck_assert_int_eq(lstat(victim, &st), 0);
    ck_assert_int_eq(st.st_uid, geteuid());             /* not given to User */
    /* .lock, then .stats, as a link to a victim file: refused, untouched. */
    ck_assert_int_eq(sh(apr_psprintf(pool, "rm %s/.lock && ln -s %s %s/.lock", dir, vfile,
                                     dir)), 0);
    err = cr_ids_open(pool, &c, &s);
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strstr(err, ".lock"), "%s", err);
    ck_assert_int_eq(sh(apr_psprintf(pool, "rm %s/.lock && ln %s %s/.lock 2>/dev/null || "
                                     "cp -p %s %s/.lock", dir, vfile, dir, vfile, dir)), 0);
    ck_assert_ptr_nonnull(cr_ids_open(pool, &c, &s));   /* a hard link / root's file */
    ck_assert_int_eq(sh(apr_psprintf(pool, "rm %s/.lock %s/.stats && ln -s %s %s/.stats",
                                     dir, dir, vfile, dir)), 0);
    ck_assert_ptr_nonnull(cr_ids_open(pool, &c, &s));
    ck_assert_int_eq(stat(vfile, &st), 0);
    ck_assert_int_eq(st.st_size, 7);                    /* "secret\n": not truncated */
    ck_assert_int_eq(st.st_uid, geteuid());             /* nor given away */
    /* DIR itself a link, or a directory that is not the store's own. */
    ck_assert_int_eq(sh(apr_psprintf(pool, "rm -rf %s && ln -s %s %s", dir, victim, dir)), 0);
    err = cr_ids_open(pool, &c, &s);
    ck_assert_msg(err && strstr(err, "refusing"), "%s", err ? err : "opened");
    c.dir = victim;                                     /* mode 0755 (and root's) */
    err = cr_ids_open(pool, &c, &s);
    ck_assert_msg(err && strstr(err, "not the store's own"), "%s", err ? err : "opened");
    ck_assert_int_eq(stat(vfile, &st), 0);
}
END_TEST

START_TEST(parse_specs)
{
    cr_ids_conf c;
    ck_assert_ptr_null(cr_ids_parse(pool, "redis:127.0.0.1:6379", &c));
    ck_assert_int_eq(c.kind, CR_IDS_REDIS);
    ck_assert_str_eq(c.host, "127.0.0.1");
    ck_assert_int_eq(c.port, 6379);
    ck_assert_ptr_null(cr_ids_parse(pool, "memcache:cache.example:11211", &c));
    ck_assert_int_eq(c.kind, CR_IDS_MEMCACHE);
    ck_assert_ptr_null(cr_ids_parse(pool, "file:/var/lib/x", &c));
    ck_assert_str_eq(c.dir, "/var/lib/x");
    ck_assert_ptr_nonnull(cr_ids_parse(pool, "file:relative", &c));
    ck_assert_ptr_nonnull(cr_ids_parse(pool, "redis:host", &c));
    ck_assert_ptr_nonnull(cr_ids_parse(pool, "redis:host:0", &c));
    ck_assert_ptr_nonnull(cr_ids_parse(pool, "shmcb", &c));
    ck_assert_ptr_nonnull(cr_ids_parse(pool, "dbm:/x", &c));
}
END_TEST

/* CPU time (user + system) of this process so far, in microseconds: less
 * noisy than wall time on a shared machine. */
static double cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + ru.ru_utime.tv_usec
           + ru.ru_stime.tv_usec;
}

/* A small benchmark, printed (never asserted: timing is noisy here). */
START_TEST(file_claim_cost)
{
    cr_idstore *s = file_store(0);
    const unsigned char *out;
    apr_size_t n;
    char rec[600];
    apr_time_t t0;
    double c0;
    apr_pool_t *p;
    int i, N = 2000;
    memset(rec, 'r', sizeof(rec));
    apr_pool_create(&p, pool);
    t0 = apr_time_now();
    c0 = cpu_us();
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(cr_ids_claim(s, p, apr_psprintf(p, "bench-%d", i), rec, sizeof(rec),
                                      apr_time_from_sec(60), &out, &n), CR_IDS_CLAIMED);
        apr_pool_clear(p);
    }
    printf("file store: claim %.1f us (CPU %.1f us)", (double)(apr_time_now() - t0) / N,
           (cpu_us() - c0) / N);
    t0 = apr_time_now();
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(cr_ids_replace(s, p, apr_psprintf(p, "bench-%d", i), rec, sizeof(rec),
                                        apr_time_from_sec(60)), APR_SUCCESS);
        apr_pool_clear(p);
    }
    printf(", replace %.1f us", (double)(apr_time_now() - t0) / N);
    t0 = apr_time_now();
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(cr_ids_claim(s, p, apr_psprintf(p, "bench-%d", i), rec, sizeof(rec),
                                      apr_time_from_sec(60), &out, &n), CR_IDS_EXISTS);
        apr_pool_clear(p);
    }
    printf(", claim of an existing record %.1f us (%d records of %d bytes)\n",
           (double)(apr_time_now() - t0) / N, N, (int)sizeof(rec));
    fflush(stdout);
}
END_TEST

/* ---- memcached and Redis, started here ---- */

typedef struct server {
    const char *bin;
    pid_t pid;
    int port;
} server;

static server srv_mc = { "/usr/bin/memcached", 0, 0 };
static server srv_redis = { "/usr/bin/redis-server", 0, 0 };

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t l = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0
        || getsockname(fd, (struct sockaddr *)&a, &l) < 0) {
        close(fd);
        return 0;
    }
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int can_connect(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((unsigned short)port);
    ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* Start (or restart on its port) a server; 1 when it answers. */
static int start_server(server *sv)
{
    char port[16];
    int i;
    if (access(sv->bin, X_OK)) {
        return 0;
    }
    if (!sv->port) {
        sv->port = free_port();
    }
    snprintf(port, sizeof(port), "%d", sv->port);
    sv->pid = fork();
    if (sv->pid == 0) {
        int null = open("/dev/null", O_RDWR);
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* never outlive the tests */
        dup2(null, 1);
        dup2(null, 2);
        if (strstr(sv->bin, "redis")) {
            execl(sv->bin, sv->bin, "--port", port, "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--daemonize", "no", (char *)NULL);
        }
        else if (geteuid() == 0) {
            /* -u root, not nobody: changing user would clear the parent-death
             * signal, and a test that fails mid-way would leave it running. */
            execl(sv->bin, sv->bin, "-l", "127.0.0.1", "-p", port, "-U", "0", "-m", "16",
                  "-u", "root", (char *)NULL);
        }
        else {
            execl(sv->bin, sv->bin, "-l", "127.0.0.1", "-p", port, "-U", "0", "-m", "16",
                  (char *)NULL);
        }
        _exit(127);
    }
    for (i = 0; i < 100; i++) {
        if (can_connect(sv->port)) {
            return 1;
        }
        apr_sleep(apr_time_from_msec(50));
    }
    return 0;
}

static void stop_server(server *sv)
{
    int st, i;
    if (sv->pid > 0) {
        kill(sv->pid, SIGKILL);
        waitpid(sv->pid, &st, 0);
        sv->pid = 0;
        for (i = 0; i < 100 && can_connect(sv->port); i++) {
            apr_sleep(apr_time_from_msec(20));
        }
    }
}

/* A server of the test's own (tests run in forked children: one that
 * stops or restarts a server must not touch the shared ones). */
static server *private_server(const server *shared)
{
    server *sv = apr_pcalloc(pool, sizeof(*sv));
    sv->bin = shared->bin;
    ck_assert_msg(start_server(sv), "%s did not start", sv->bin);
    return sv;
}

static cr_idstore *net_store(server *sv)
{
    cr_ids_conf c;
    const char *spec = apr_psprintf(pool, "%s:127.0.0.1:%d",
                                    strstr(sv->bin, "redis") ? "redis" : "memcache", sv->port);
    ck_assert_ptr_null(cr_ids_parse(pool, spec, &c));
    return open_store(&c);
}

static void net_down_is_an_error(server *sv, int restart)
{
    cr_idstore *s = net_store(sv);
    const unsigned char *out;
    apr_size_t n;
    ck_assert_int_eq(cr_ids_claim(s, pool, "down-1", "v", 1, apr_time_from_sec(60), &out, &n),
                     CR_IDS_CLAIMED);
    stop_server(sv);
    ck_assert_int_eq(cr_ids_claim(s, pool, "down-1", "v", 1, apr_time_from_sec(60), &out, &n),
                     CR_IDS_UNAVAILABLE);
    ck_assert_int_eq(cr_ids_claim(s, pool, "down-2", "v", 1, apr_time_from_sec(60), &out, &n),
                     CR_IDS_UNAVAILABLE);
    ck_assert_int_eq(cr_ids_get(s, pool, "down-1", &out, &n), CR_IDS_UNAVAILABLE);
    ck_assert_int_ne(cr_ids_replace(s, pool, "down-1", "v", 1, apr_time_from_sec(60)),
                     APR_SUCCESS);
    ck_assert_int_ne(cr_ids_release(s, pool, "down-1"), APR_SUCCESS);
    if (restart) {
        apr_time_t deadline = apr_time_now() + apr_time_from_sec(10);
        cr_ids_rc rc;
        ck_assert(start_server(sv));
        /* The pool reconnects (apr_memcache retries a dead server after 5 s:
         * until then, still an error); the server lost its records. */
        while ((rc = cr_ids_claim(s, pool, "down-2", "v", 1, apr_time_from_sec(60), &out, &n))
               == CR_IDS_UNAVAILABLE && apr_time_now() < deadline) {
            apr_sleep(apr_time_from_msec(250));
        }
        ck_assert_int_eq(rc, CR_IDS_CLAIMED);
        ck_assert_int_eq(cr_ids_get(s, pool, "down-2", &out, &n), CR_IDS_EXISTS);
    }
    stop_server(sv);
}

/* A relay to a server that passes everything but drops the answer to the
 * first storing command (marker) and closes: the store applied the claim,
 * the client never learns it (a timeout or reset in production). */
static void relay_conn(int c, int port, const char *marker)
{
    struct sockaddr_in a;
    struct pollfd fds[2];
    char buf[65536];
    int u = socket(AF_INET, SOCK_STREAM, 0), drop = 0;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(u, (struct sockaddr *)&a, sizeof(a)) < 0) {
        _exit(1);
    }
    fds[0].fd = c;
    fds[1].fd = u;
    fds[0].events = fds[1].events = POLLIN;
    while (poll(fds, 2, -1) > 0) {
        ssize_t n;
        if (fds[0].revents) {
            if ((n = read(c, buf, sizeof(buf))) <= 0) {
                break;
            }
            drop = drop || memmem(buf, (size_t)n, marker, strlen(marker)) != NULL;
            if (write(u, buf, (size_t)n) != n) {
                break;
            }
        }
        if (fds[1].revents) {
            if ((n = read(u, buf, sizeof(buf))) <= 0 || drop) {
                break;                          /* the answer is lost */
            }
            if (write(c, buf, (size_t)n) != n) {
                break;
            }
        }
    }
    _exit(0);
}

static pid_t start_relay(int lport, int port, const char *marker)
{
    struct sockaddr_in a;
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    pid_t pid;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)lport);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(l, 16), 0);
    pid = fork();
    if (pid == 0) {
        int dropped = 0;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (;;) {
            int c = accept(l, NULL, NULL);
            if (c < 0) {
                continue;
            }
            if (fork() == 0) {
                close(l);
                relay_conn(c, port, dropped ? "\x01never\x01" : marker);
            }
            close(c);
            dropped = 1;        /* only the first connection loses an answer */
        }
    }
    close(l);
    return pid;
}

/* A claim whose answer is lost is taken back (the token makes it ours):
 * the key is free again, not held in flight for the window. */
static void net_lost_reply(server *sv)
{
    int lport = free_port();
    pid_t relay = start_relay(lport, sv->port, strstr(sv->bin, "redis") ? "SET\r\n" : "add ");
    cr_ids_conf c;
    cr_idstore *viar, *direct = net_store(sv);
    const unsigned char *out;
    apr_size_t n;
    const char *spec = apr_psprintf(pool, "%s:127.0.0.1:%d",
                                    strstr(sv->bin, "redis") ? "redis" : "memcache", lport);
    const char *name = apr_psprintf(pool, "lost-%d", rand());
    ck_assert_ptr_null(cr_ids_parse(pool, spec, &c));
    viar = open_store(&c);
    ck_assert_int_eq(cr_ids_claim(viar, pool, name, "token-1234", 10, apr_time_from_sec(60),
                                  &out, &n), CR_IDS_UNAVAILABLE);
    ck_assert_int_eq(cr_ids_get(direct, pool, name, &out, &n), CR_IDS_ABSENT);
    /* ... while a record with another token is never removed */
    ck_assert_int_eq(cr_ids_claim(direct, pool, name, "token-5678", 10, apr_time_from_sec(60),
                                  &out, &n), CR_IDS_CLAIMED);
    kill(relay, SIGKILL);
    waitpid(relay, NULL, 0);
}

#define NET_TESTS(tag, sv, restart)                                                  \
START_TEST(tag##_lifecycle)                                                          \
{                                                                                    \
    if (!sv.pid) { printf("SKIP " #tag ": %s not installed\n", sv.bin); return; }    \
    lifecycle(net_store(&sv));                                                       \
}                                                                                    \
END_TEST                                                                             \
START_TEST(tag##_race_threads)                                                       \
{                                                                                    \
    int won[RACE_NAMES], errors;                                                     \
    if (!sv.pid) { return; }                                                         \
    race_threads(net_store(&sv), "race-" #tag "-", won, &errors);                    \
    assert_one_each(won, errors, "threads");                                         \
}                                                                                    \
END_TEST                                                                             \
START_TEST(tag##_race_processes)                                                     \
{                                                                                    \
    if (!sv.pid) { return; }                                                         \
    race_procs(net_store(&sv), "prace-" #tag "-");                                   \
}                                                                                    \
END_TEST                                                                             \
START_TEST(tag##_restart_idle)                                                       \
{                                                                                    \
    int won[RACE_NAMES], errors;                                                     \
    cr_idstore *s;                                                                   \
    server *pv;                                                                      \
    if (!sv.pid) { return; }                                                         \
    pv = private_server(&sv);                                                        \
    s = net_store(pv);                                                               \
    race_threads(s, "idle-" #tag "-", won, &errors);  /* several pooled conns */     \
    assert_one_each(won, errors, "threads");                                         \
    stop_server(pv);                                                                 \
    ck_assert(start_server(pv));                                                     \
    apr_sleep(apr_time_from_msec(1100));                                             \
    race_threads(s, "idle2-" #tag "-", won, &errors);                                \
    assert_one_each(won, errors, "after a restart while idle");                      \
    stop_server(pv);                                                                 \
}                                                                                    \
END_TEST                                                                             \
START_TEST(tag##_lost_reply)                                                         \
{                                                                                    \
    if (!sv.pid) { return; }                                                         \
    net_lost_reply(&sv);                                                             \
}                                                                                    \
END_TEST                                                                             \
START_TEST(tag##_down)                                                               \
{                                                                                    \
    if (!sv.pid) { return; }                                                         \
    net_down_is_an_error(private_server(&sv), restart);                              \
}                                                                                    \
END_TEST

NET_TESTS(memcache, srv_mc, 1)
NET_TESTS(redis, srv_redis, 1)

int main(void)
{
    Suite *s = suite_create("idem");
    TCase *tc;
    SRunner *sr;
    int failed;
    const char *td = getenv("TMPDIR");
    char tmpl[256];

    apr_initialize();
    signal(SIGPIPE, SIG_IGN);   /* as httpd: a dead store's socket is an error, not a signal */
    srand((unsigned)getpid());
    snprintf(tmpl, sizeof(tmpl), "%s/cr-idem-XXXXXX", td && *td ? td : "/tmp");
    tmpdir = mkdtemp(tmpl);
    if (tmpdir) {
        chmod(tmpdir, 0755);     /* file_children_as_user: traversable by nobody */
    }
    if (!start_server(&srv_mc)) {
        printf("SKIP memcached tests: %s not installed or did not start\n", srv_mc.bin);
        srv_mc.pid = 0;
    }
    if (!start_server(&srv_redis)) {
        printf("SKIP Redis tests: %s not installed or did not start\n", srv_redis.bin);
        srv_redis.pid = 0;
    }

    tc = tcase_create("canon");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, canon_big_numbers_differ);
    tcase_add_test(tc, canon_equal_forms);
    tcase_add_test(tc, canon_rejects_non_json);
    suite_add_tcase(s, tc);

    tc = tcase_create("file");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, parse_specs);
    tcase_add_test(tc, file_lifecycle);
    tcase_add_test(tc, file_race_threads);
    tcase_add_test(tc, file_race_processes);
    tcase_add_test(tc, file_survives_reopen);
    tcase_add_test(tc, file_full_fails_closed);
    tcase_add_test(tc, file_byte_bound);
    tcase_add_test(tc, file_unusable_dir_is_an_error);
    tcase_add_test(tc, file_children_as_user);
    tcase_add_test(tc, file_planted_links_not_followed);
    tcase_add_test(tc, file_claim_cost);
    suite_add_tcase(s, tc);

    tc = tcase_create("network");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, memcache_lifecycle);
    tcase_add_test(tc, memcache_race_threads);
    tcase_add_test(tc, memcache_race_processes);
    tcase_add_test(tc, redis_lifecycle);
    tcase_add_test(tc, redis_race_threads);
    tcase_add_test(tc, redis_race_processes);
    /* These stop and restart servers of their own. */
    tcase_add_test(tc, memcache_restart_idle);
    tcase_add_test(tc, redis_restart_idle);
    tcase_add_test(tc, memcache_lost_reply);
    tcase_add_test(tc, redis_lost_reply);
    tcase_add_test(tc, memcache_down);
    tcase_add_test(tc, redis_down);
    suite_add_tcase(s, tc);

    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    stop_server(&srv_mc);
    stop_server(&srv_redis);
    {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
        if (system(cmd) != 0) {
            failed++;
        }
    }
    apr_terminate();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
