/* SPDX-License-Identifier: Apache-2.0 */
/* Strict JSON pre-scanner: see cr_jscan.h for what it refuses and why.
 *
 * One forward pass with an explicit stack (no recursion, so a 10,000-deep
 * body costs nothing but the first max_depth levels).  For an ordinary body
 * nothing is allocated: the container stack (8 KB) and a table of the keys
 * of the objects currently open with its index (3.5 KB) live in automatic
 * storage, under 12 KB in all (a thread's stack is 8 MB by default).
 *
 * Strings are scanned eight bytes at a time while they hold nothing but
 * printable ASCII (skip_plain), escapes and UTF-8 byte by byte.
 *
 * Duplicate keys: each key's unescaped bytes are hashed (FNV-1a) once it
 * is scanned (values are never hashed) and the key is pushed on a stack of
 * key slots (objects nest, so their keys form a stack: a child's keys are
 * popped when it closes).  A hash index over that stack finds a new key's
 * candidates: bucket chains link slots newest first, so a chain walk meets
 * the current object's keys before any ancestor's and stops at the first
 * slot below the object's base.  Keys are popped in the reverse order of their pushing, so a popped
 * key is always the head of its chain: popping is O(1).  Candidates with
 * the same hash and length are compared byte by byte through a decoding
 * iterator over both escaped forms.
 *
 * When more keys are open than the automatic table holds, the stack and the
 * index move to a private unmanaged pool (own allocator, nothing shared
 * between threads), destroyed before returning; both double as needed and
 * the index is rebuilt at each doubling, keeping its load at most 1.  Open
 * keys are at most one per 4 bytes of body, so memory stays linear in len
 * and the whole check linear in len whatever the body's shape. */
#include <string.h>

#include <apr_pools.h>

#include "cr_jscan.h"

#define KEY_SLOTS 128            /* in automatic storage; a power of two */
#define NO_SLOT   0xFFFFFFFFu

typedef struct {
    apr_size_t start;      /* offset of the key's opening quote */
    apr_size_t dlen;       /* unescaped length */
    apr_uint32_t hash;     /* FNV-1a of the unescaped bytes */
    apr_uint32_t next;     /* older slot in the same bucket, or NO_SLOT */
} key_slot;

/* The key stack and its hash index. */
typedef struct {
    key_slot *slots;
    apr_uint32_t *buckets;
    apr_uint32_t n, cap;   /* slots in use / allocated; cap is also the bucket count */
    apr_pool_t *pool;      /* NULL while the automatic arrays serve */
    apr_size_t probes;     /* candidate keys looked at (work counter) */
} key_table;

typedef struct {
    apr_size_t start;      /* offset of '{' or '[' */
    apr_size_t members;
    apr_size_t probes;     /* candidate keys looked at for this object's keys */
    apr_uint32_t slot_base; /* first key slot of this object */
    char type;             /* '{' or '[' */
    char deferred;         /* probe budget spent: duplicates found by sorting at '}' */
} level;                   /* 32 bytes */

/* The token array of a document being built (cr_jscan_parse), and the
 * token of each open container (1 KB more stack, only when building). */
typedef struct {
    apr_pool_t *p;
    cr_jtok *tok;
    apr_uint32_t n, cap;
    apr_uint32_t most;     /* no text of len bytes holds more than len/2 + 1 tokens */
    apr_uint32_t open[CR_JSCAN_DEPTH_CAP];
} jbuild;

/* Doubling, up to the most tokens the text can hold: the old arrays stay
 * in the pool, together at most as much again as the last one. */
static void tok_grow(jbuild *jb)
{
    apr_uint32_t cap = jb->cap * 2 < jb->most ? jb->cap * 2 : jb->most;
    cr_jtok *nt;
    if (cap <= jb->cap) {
        cap = jb->cap + 1;               /* not reached: n <= most */
    }
    nt = apr_palloc(jb->p, sizeof(*nt) * (apr_size_t)cap);
    memcpy(nt, jb->tok, sizeof(*nt) * jb->n);
    jb->tok = nt;
    jb->cap = cap;
}

static APR_INLINE cr_jtok *tok_push(jbuild *jb, apr_size_t start, int type)
{
    cr_jtok *t;
    if (jb->n == jb->cap) {
        tok_grow(jb);
    }
    t = &jb->tok[jb->n++];
    t->start = (apr_uint32_t)start;
    t->len = 0;
    t->next = jb->n;
    t->type = (unsigned char)type;
    t->flags = 0;
    return t;
}

/* A string token from its opening quote at start to just past its closing
 * quote at end, dl bytes once unescaped: every escape is longer than what
 * it stands for, so the string has escapes exactly when dl < end-start-2. */
static void tok_string(jbuild *jb, apr_size_t start, apr_size_t end, apr_size_t dl)
{
    cr_jtok *t = tok_push(jb, start, CR_JSTRING);
    t->len = (apr_uint32_t)dl;
    if (dl != end - start - 2) {
        t->flags = CR_JTOK_ESCAPED;
    }
}

#define FNV_OFF   2166136261u
#define FNV_PRIME 16777619u

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int hex4(const unsigned char *p)
{
    int a = hexval(p[0]), b = hexval(p[1]), c = hexval(p[2]), d = hexval(p[3]);
    if (a < 0 || b < 0 || c < 0 || d < 0) {
        return -1;
    }
    return (a << 12) | (b << 8) | (c << 4) | d;
}

/* UTF-8 encoding of a scalar value; returns the byte count. */
static int utf8_put(unsigned long cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence starting with lead byte p[0], given
 * avail bytes; 0 when invalid, -1 when cut short by the end of input. */
static int utf8_seq(const unsigned char *p, apr_size_t avail)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    int need, k;

    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) { need = 2; lo = 0xA0; }           /* no overlongs */
    else if (c >= 0xE1 && c <= 0xEC) need = 2;
    else if (c == 0xED) { need = 2; hi = 0x9F; }           /* no surrogates */
    else if (c >= 0xEE && c <= 0xEF) need = 2;
    else if (c == 0xF0) { need = 3; lo = 0x90; }           /* no overlongs */
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) { need = 3; hi = 0x8F; }           /* <= U+10FFFF */
    else return 0;                                          /* C0, C1, F5+, continuation */

    for (k = 1; k <= need; k++) {
        if ((apr_size_t)k >= avail) {
            return -1;
        }
        if (p[k] < (k == 1 ? lo : 0x80) || p[k] > (k == 1 ? hi : 0xBF)) {
            return 0;
        }
    }
    return need + 1;
}

/* Scan the string whose opening quote is at *pi; on success *pi is just
 * past the closing quote.  On failure returns a reason with *pi at the
 * offending byte. */
/* Bytes that stand for themselves inside a string: printable ASCII but the
 * quote and the backslash. */
#define PL16(c) 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
static const unsigned char plain_char[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,     /* 0x22 '"' */
    PL16(3), PL16(4),
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,     /* 0x5C '\\' */
    PL16(6), PL16(7)
    /* 0x80-0xFF: 0, checked as UTF-8 */
};
#undef PL16

/* The first byte at or after i that is not plain (or n).  Eight bytes at a
 * time where the word can be tested at once: a byte is flagged when it is
 * '"', '\\', below 0x20 or above 0x7F.  The zero-byte trick can flag a
 * byte wrongly only above a truly flagged one, so the lowest flag is
 * exact.  The tail, and big-endian machines, go through the table. */
#define ONES64 0x0101010101010101ULL
#define HIGH64 0x8080808080808080ULL
#if defined(__GNUC__)
#define CR_HOT_INLINE static inline __attribute__((always_inline))
#else
#define CR_HOT_INLINE static APR_INLINE
#endif
CR_HOT_INLINE apr_size_t skip_plain(const unsigned char *b, apr_size_t i, apr_size_t n)
{
#if !APR_IS_BIGENDIAN && defined(__GNUC__)
    while (n - i >= 8) {
        apr_uint64_t x, q, e, t;
        memcpy(&x, b + i, 8);
        q = x ^ (ONES64 * '"');
        e = x ^ (ONES64 * '\\');
        t = (((q - ONES64) & ~q) | ((e - ONES64) & ~e) | ((x - ONES64 * 0x20) & ~x) | x) & HIGH64;
        if (t) {
            return i + ((apr_size_t)__builtin_ctzll(t) >> 3);
        }
        i += 8;
    }
#endif
    while (i < n && plain_char[b[i]]) {
        i++;
    }
    return i;
}

static const char *scan_string(const unsigned char *b, apr_size_t n, apr_size_t *pi,
                               apr_size_t max, apr_size_t *dlen_out)
{
    apr_size_t i = *pi + 1, dlen = 0;
    int m;

    for (;;) {
        unsigned char c;
        /* The common case first: a run of printable ASCII other than the
         * quote and the backslash, skipped a word at a time. */
        apr_size_t run = i;
        i = skip_plain(b, i, n);
        dlen += i - run;
        if (dlen > max) {
            return "string too long";    /* *pi still names the string's start */
        }
        if (i >= n) {
            *pi = n;
            return "truncated JSON";
        }
        c = b[i];
        if (c == '"') {
            break;
        }
        if (c == '\\') {
            long cp;
            if (i + 1 >= n) {
                *pi = n;
                return "truncated JSON";
            }
            switch (b[i + 1]) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u':
                if (i + 6 > n) {
                    *pi = n;
                    return "truncated JSON";
                }
                cp = hex4(b + i + 2);
                if (cp < 0) {
                    *pi = i;
                    return "invalid \\u escape";
                }
                if (cp == 0) {
                    *pi = i;
                    return "escaped NUL in string";
                }
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    *pi = i;
                    return "lone surrogate escape";
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    long lo;
                    if (i + 12 > n || b[i + 6] != '\\' || b[i + 7] != 'u'
                        || (lo = hex4(b + i + 8)) < 0xDC00 || lo > 0xDFFF) {
                        *pi = i;
                        return "lone surrogate escape";
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
                i += 4;
                break;
            default:
                *pi = i;
                return "invalid escape in string";
            }
            i += 2;
            dlen += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;   /* its UTF-8 */
        }
        else if (c < 0x20) {
            *pi = i;
            return c == 0 ? "NUL byte in string" : "control character in string";
        }
        else if (c < 0x80) {
            dlen++;
            i++;
        }
        else {
            m = utf8_seq(b + i, n - i);
            if (m <= 0) {
                *pi = m < 0 ? n : i;
                return m < 0 ? "truncated JSON" : "invalid UTF-8";
            }
            dlen += (apr_size_t)m;
            i += (apr_size_t)m;
        }
        if (dlen > max) {
            return "string too long";    /* *pi still names the string's start */
        }
    }
    *pi = i + 1;
    *dlen_out = dlen;
    return NULL;
}

/* A string at *pi: the common one (printable ASCII only, within max) in
 * line, any other through scan_string (which starts it again: at most
 * twice the bytes of that one string). */
CR_HOT_INLINE const char *string_at(const unsigned char *b, apr_size_t n, apr_size_t *pi,
                                    apr_size_t max, apr_size_t *dlen_out)
{
    apr_size_t j = skip_plain(b, *pi + 1, n);
    if (j < n && b[j] == '"' && j - *pi - 1 <= max) {
        *dlen_out = j - *pi - 1;
        *pi = j + 1;
        return NULL;
    }
    return scan_string(b, n, pi, max, dlen_out);
}

/* Decoding iterator over an already validated string, for key comparison. */
typedef struct {
    const unsigned char *b;
    apr_size_t i;
    unsigned char pend[4];
    int np, ip;
} kit;

static void kit_init(kit *k, const unsigned char *b, apr_size_t quote)
{
    k->b = b;
    k->i = quote + 1;
    k->np = k->ip = 0;
}

static int kit_next(kit *k)
{
    const unsigned char *b = k->b;
    long cp;

    if (k->ip < k->np) {
        return k->pend[k->ip++];
    }
    if (b[k->i] == '"') {
        return -1;
    }
    if (b[k->i] != '\\') {
        return b[k->i++];
    }
    switch (b[k->i + 1]) {
    case 'b': cp = '\b'; break;
    case 'f': cp = '\f'; break;
    case 'n': cp = '\n'; break;
    case 'r': cp = '\r'; break;
    case 't': cp = '\t'; break;
    case 'u':
        cp = hex4(b + k->i + 2);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (hex4(b + k->i + 8) - 0xDC00);
            k->i += 6;
        }
        k->i += 4;
        break;
    default: cp = b[k->i + 1]; break;   /* " \ / */
    }
    k->i += 2;
    k->np = utf8_put((unsigned long)cp, k->pend);
    k->ip = 1;
    return k->pend[0];
}

static int keys_equal(const unsigned char *b, apr_size_t q1, apr_size_t q2)
{
    kit a, c;
    int x, y;
    kit_init(&a, b, q1);
    kit_init(&c, b, q2);
    do {
        x = kit_next(&a);
        y = kit_next(&c);
        if (x != y) {
            return 0;
        }
    } while (x >= 0);
    return 1;
}

/* Bucket of a key hash: murmur3's finaliser spreads every bit of the
 * FNV-1a hash into the low bits the mask keeps. */
static apr_uint32_t bucket_of(apr_uint32_t h, apr_uint32_t cap)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h & (cap - 1);
}

/* Make room for one more key; 0 when memory ran out. */
static int keys_grow(key_table *kt)
{
    apr_uint32_t cap = kt->cap * 2, s;
    key_slot *ns;
    apr_uint32_t *nb;

    if (cap < kt->cap) {
        return 0;
    }
    if (!kt->pool && apr_pool_create_unmanaged_ex(&kt->pool, NULL, NULL) != APR_SUCCESS) {
        kt->pool = NULL;
        return 0;
    }
    /* The old arrays stay in the pool until it is destroyed: at most as
     * much again as the final ones. */
    ns = apr_palloc(kt->pool, sizeof(*ns) * cap);
    nb = apr_palloc(kt->pool, sizeof(*nb) * cap);
    if (!ns || !nb) {
        return 0;
    }
    memcpy(ns, kt->slots, sizeof(*ns) * kt->n);
    memset(nb, 0xFF, sizeof(*nb) * cap);
    for (s = 0; s < kt->n; s++) {        /* oldest first: chains end up newest first */
        apr_uint32_t b = bucket_of(ns[s].hash, cap);
        ns[s].next = nb[b];
        nb[b] = s;
    }
    kt->slots = ns;
    kt->buckets = nb;
    kt->cap = cap;
    return 1;
}

/* FNV-1a of the key at quote q (raw length rl bytes between the quotes,
 * dl once unescaped): over the bytes themselves when it has no escape,
 * else over its unescaped bytes.  Keys only: values are never hashed. */
static apr_uint32_t key_hash(const unsigned char *b, apr_size_t q, apr_size_t rl, apr_size_t dl)
{
    apr_uint32_t h = FNV_OFF;
    apr_size_t k;
    if (rl == dl) {
        for (k = q + 1; k <= q + rl; k++) {
            h = (h ^ b[k]) * FNV_PRIME;
        }
    }
    else {
        kit it;
        int c;
        kit_init(&it, b, q);
        while ((c = kit_next(&it)) >= 0) {
            h = (h ^ (unsigned char)c) * FNV_PRIME;
        }
    }
    return h;
}

/* Most candidates looked at for the keys of one object before it is
 * deferred: ordinary keys spread over the buckets cost about one probe
 * each; only keys made to collide (the hash is not secret) spend this. */
#define PROBE_BUDGET(keys) (8 * (apr_size_t)(keys) + 64)

/* Is the key at kstart (hash h, unescaped length dl) already a key of the
 * object lv, whose keys start at slot lv->slot_base?  Either way it is
 * pushed.  A deferred object's keys are pushed unchecked. */
static const char *keys_add(key_table *kt, level *lv, const unsigned char *b,
                            apr_size_t kstart, apr_uint32_t h, apr_size_t dl)
{
    apr_uint32_t s, bk, base = lv->slot_base;

    if (!lv->deferred) {
        apr_size_t budget = PROBE_BUDGET(kt->n - base + 1);
        for (s = kt->buckets[bucket_of(h, kt->cap)]; s != NO_SLOT && s >= base;
             s = kt->slots[s].next) {
            kt->probes++;
            if (++lv->probes > budget) {
                lv->deferred = 1;
                break;
            }
            if (kt->slots[s].hash == h && kt->slots[s].dlen == dl
                && keys_equal(b, kt->slots[s].start, kstart)) {
                return "duplicate key";
            }
        }
    }
    if (kt->n == kt->cap && !keys_grow(kt)) {
        return "out of memory";
    }
    s = kt->n++;
    bk = bucket_of(h, kt->cap);
    kt->slots[s].start = kstart;
    kt->slots[s].dlen = dl;
    kt->slots[s].hash = h;
    kt->slots[s].next = kt->buckets[bk];
    kt->buckets[bk] = s;
    return NULL;
}

/* Order of two keys: hash, length, then the unescaped bytes. */
static int key_cmp(const unsigned char *b, const key_slot *x, const key_slot *y)
{
    kit a, c;
    int p, q;
    if (x->hash != y->hash) {
        return x->hash < y->hash ? -1 : 1;
    }
    if (x->dlen != y->dlen) {
        return x->dlen < y->dlen ? -1 : 1;
    }
    kit_init(&a, b, x->start);
    kit_init(&c, b, y->start);
    do {
        p = kit_next(&a);
        q = kit_next(&c);
    } while (p == q && p >= 0);
    return p < q ? -1 : p > q;
}

static void sift(const unsigned char *b, key_slot *k, apr_size_t root, apr_size_t n)
{
    for (;;) {
        apr_size_t c = 2 * root + 1;
        key_slot t;
        if (c >= n) {
            return;
        }
        if (c + 1 < n && key_cmp(b, &k[c], &k[c + 1]) < 0) {
            c++;
        }
        if (key_cmp(b, &k[root], &k[c]) >= 0) {
            return;
        }
        t = k[root];
        k[root] = k[c];
        k[c] = t;
        root = c;
    }
}

/* The keys of a deferred object, k[0..n): heapsort them (in place, no
 * recursion, O(n log n) comparisons whatever the keys) and return the
 * offset of the earliest key that repeats an earlier one, or (apr_size_t)-1. */
static apr_size_t sorted_dup(const unsigned char *b, key_slot *k, apr_size_t n)
{
    apr_size_t i, first = 0, lo, second, found = (apr_size_t)-1;
    key_slot t;

    for (i = n / 2; i-- > 0; ) {
        sift(b, k, i, n);
    }
    for (i = n; i-- > 1; ) {
        t = k[0];
        k[0] = k[i];
        k[i] = t;
        sift(b, k, 0, i);
    }
    /* In each run of equal keys the second-earliest is the duplicate. */
    while (first < n) {
        lo = k[first].start;
        second = (apr_size_t)-1;
        for (i = first + 1; i < n && key_cmp(b, &k[first], &k[i]) == 0; i++) {
            if (k[i].start < lo) {
                second = lo;
                lo = k[i].start;
            }
            else if (k[i].start < second) {
                second = k[i].start;
            }
        }
        if (second < found) {
            found = second;
        }
        first = i;
    }
    return found;
}

/* Pop the keys of a closing object (slots base and up), newest first. */
static void keys_pop(key_table *kt, apr_uint32_t base)
{
    while (kt->n > base) {
        key_slot *k = &kt->slots[--kt->n];
        kt->buckets[bucket_of(k->hash, kt->cap)] = k->next;
    }
}

static const char *scan_number(const unsigned char *b, apr_size_t n, apr_size_t *pi)
{
    apr_size_t i = *pi, start = *pi;

#define DIGIT(x) ((x) >= '0' && (x) <= '9')
    if (b[i] == '-') {
        i++;
    }
    if (i >= n) {
        *pi = n;
        return "truncated JSON";
    }
    if (b[i] == '0') {
        i++;
    }
    else if (b[i] >= '1' && b[i] <= '9') {
        while (i < n && DIGIT(b[i])) i++;
    }
    else {
        *pi = i;
        return "invalid number";
    }
    if (i < n && b[i] == '.') {
        i++;
        if (i >= n || !DIGIT(b[i])) {
            *pi = i;
            return i >= n ? "truncated JSON" : "invalid number";
        }
        while (i < n && DIGIT(b[i])) i++;
    }
    if (i < n && (b[i] == 'e' || b[i] == 'E')) {
        i++;
        if (i < n && (b[i] == '+' || b[i] == '-')) {
            i++;
        }
        if (i >= n || !DIGIT(b[i])) {
            *pi = i;
            return i >= n ? "truncated JSON" : "invalid number";
        }
        while (i < n && DIGIT(b[i])) i++;
    }
#undef DIGIT
    if (i - start > CR_JSCAN_MAX_NUMBER) {
        *pi = start;
        return "number too long";
    }
    *pi = i;
    return NULL;
}

static const char *scan_literal(const unsigned char *b, apr_size_t n, apr_size_t *pi)
{
    static const char *const lits[] = { "true", "false", "null" };
    apr_size_t i = *pi;
    int k;
    for (k = 0; k < 3; k++) {
        apr_size_t l = strlen(lits[k]);
        if (b[i] != (unsigned char)lits[k][0]) {
            continue;
        }
        if (n - i < l) {
            if (memcmp(b + i, lits[k], n - i) == 0) {
                *pi = n;
                return "truncated JSON";
            }
            break;
        }
        if (memcmp(b + i, lits[k], l) == 0) {
            *pi = i + l;
            return NULL;
        }
        break;
    }
    return "invalid literal";
}

static const char *jscan(const char *buf, apr_size_t len, const cr_jscan_limits *lim,
                         apr_size_t *err_offset, key_table *kt, jbuild *jb)
{
    const unsigned char *b = (const unsigned char *)buf;
    apr_size_t n = len, i = 0, max_string, max_members;
    int check_dups;
    level st[CR_JSCAN_DEPTH_CAP];
    int depth = 0, max_depth;
    const char *why = NULL;

    max_depth = (lim && lim->max_depth > 0) ? lim->max_depth : CR_JSCAN_DEFAULT_DEPTH;
    if (max_depth > CR_JSCAN_DEPTH_CAP) {
        max_depth = CR_JSCAN_DEPTH_CAP;
    }
    max_string = (lim && lim->max_string) ? lim->max_string : CR_JSCAN_DEFAULT_STRING;
    max_members = (lim && lim->max_members) ? lim->max_members : CR_JSCAN_DEFAULT_MEMBERS;
    check_dups = !(lim && lim->allow_duplicates);

    if (!b) {
        n = 0;
    }
    if (n >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF) {
        why = "byte order mark";
        goto fail;
    }
    while (i < n && is_ws(b[i])) i++;
    if (i >= n) {
        why = "empty body";
        goto fail;
    }

value:
    while (i < n && is_ws(b[i])) i++;
    if (i >= n) {
        why = "truncated JSON";
        goto fail;
    }
    switch (b[i]) {
    case '{':
    case '[':
        if (depth >= max_depth) {
            why = "nesting too deep";
            goto fail;
        }
        st[depth].start = i;
        st[depth].members = 0;
        st[depth].slot_base = kt->n;
        st[depth].probes = 0;
        st[depth].type = (char)b[i];
        st[depth].deferred = 0;
        if (jb) {
            jb->open[depth] = jb->n;
            tok_push(jb, i, b[i] == '{' ? CR_JOBJECT : CR_JARRAY);
        }
        depth++;
        i++;
        while (i < n && is_ws(b[i])) i++;
        if (i < n && b[i] == (st[depth - 1].type == '{' ? '}' : ']')) {
            i++;
            depth--;
            goto after;
        }
        st[depth - 1].members = 1;
        if (st[depth - 1].type == '{') {
            goto key;
        }
        goto value;
    case '"': {
        apr_size_t dl, s0 = i;
        if ((why = string_at(b, n, &i, max_string, &dl)) != NULL) {
            goto fail;
        }
        if (jb) {
            tok_string(jb, s0, i, dl);
        }
        goto after;
    }
    case 't':
    case 'f':
    case 'n': {
        apr_size_t s0 = i;
        if ((why = scan_literal(b, n, &i)) != NULL) {
            goto fail;
        }
        if (jb) {
            tok_push(jb, s0, b[s0] == 't' ? CR_JTRUE : b[s0] == 'f' ? CR_JFALSE : CR_JNULL);
        }
        goto after;
    }
    default:
        if (b[i] == '-' || (b[i] >= '0' && b[i] <= '9')) {
            apr_size_t s0 = i, k;
            if ((why = scan_number(b, n, &i)) != NULL) {
                goto fail;
            }
            if (jb) {
                cr_jtok *t = tok_push(jb, s0, CR_JNUMBER);
                t->len = (apr_uint32_t)(i - s0);
                t->flags = CR_JTOK_INTEGER;
                for (k = s0; k < i; k++) {
                    if (b[k] == '.' || b[k] == 'e' || b[k] == 'E') {
                        t->flags = 0;
                        break;
                    }
                }
            }
            goto after;
        }
        why = (b[i] < 0x20) ? (b[i] ? "control character" : "NUL byte")
                            : "unexpected character";
        goto fail;
    }

after:
    while (i < n && is_ws(b[i])) i++;
    if (depth == 0) {
        if (i < n) {
            why = "trailing data after JSON";
            goto fail;
        }
        return NULL;
    }
    if (i >= n) {
        why = "truncated JSON";
        goto fail;
    }
    {
        level *top = &st[depth - 1];
        if (b[i] == ',') {
            i++;
            if (++top->members > max_members) {
                why = "too many members";
                goto fail;
            }
            if (top->type == '{') {
                goto key;
            }
            goto value;
        }
        if (b[i] == (top->type == '{' ? '}' : ']')) {
            i++;
            if (jb) {
                cr_jtok *t = &jb->tok[jb->open[depth - 1]];
                t->len = (apr_uint32_t)top->members;
                t->next = jb->n;
            }
            if (top->type == '{') {
                apr_uint32_t end = kt->n;
                keys_pop(kt, top->slot_base);
                if (top->deferred) {
                    /* The popped slots are still there to sort. */
                    apr_size_t dup = sorted_dup(b, kt->slots + top->slot_base,
                                                end - top->slot_base);
                    if (dup != (apr_size_t)-1) {
                        i = dup;
                        why = "duplicate key";
                        goto fail;
                    }
                }
            }
            depth--;
            goto after;
        }
        why = top->type == '{' ? "expected ',' or '}'" : "expected ',' or ']'";
        goto fail;
    }

key:
    while (i < n && is_ws(b[i])) i++;
    if (i >= n) {
        why = "truncated JSON";
        goto fail;
    }
    if (b[i] != '"') {
        why = "expected a string key";
        goto fail;
    }
    {
        level *top = &st[depth - 1];
        apr_size_t kstart = i, dl;
        if ((why = string_at(b, n, &i, max_string, &dl)) != NULL) {
            goto fail;
        }
        if (check_dups
            && (why = keys_add(kt, top, b, kstart, key_hash(b, kstart, i - kstart - 2, dl),
                               dl)) != NULL) {
            i = kstart;
            goto fail;
        }
        if (jb) {
            tok_string(jb, kstart, i, dl);
        }
        while (i < n && is_ws(b[i])) i++;
        if (i >= n) {
            why = "truncated JSON";
            goto fail;
        }
        if (b[i] != ':') {
            why = "expected ':'";
            goto fail;
        }
        i++;
        goto value;
    }

fail:
    if (err_offset) {
        *err_offset = i > n ? n : i;
    }
    return why;
}

static const char *run(const char *buf, apr_size_t len, const cr_jscan_limits *lim,
                       apr_size_t *err_offset, apr_size_t *probes, jbuild *jb)
{
    key_slot slots[KEY_SLOTS];
    apr_uint32_t buckets[KEY_SLOTS];
    key_table kt;
    const char *why;

    if (!(lim && lim->allow_duplicates)) {
        /* The key index is only used when duplicates are looked for
         * (nothing is pushed, popped or probed otherwise). */
        memset(buckets, 0xFF, sizeof(buckets));
    }
    kt.slots = slots;
    kt.buckets = buckets;
    kt.n = 0;
    kt.cap = KEY_SLOTS;
    kt.pool = NULL;
    kt.probes = 0;
    why = jscan(buf, len, lim, err_offset, &kt, jb);
    if (kt.pool) {
        apr_pool_destroy(kt.pool);
    }
    if (probes) {
        *probes = kt.probes;
    }
    return why;
}

const char *cr_jscan_check_counted(const char *buf, apr_size_t len, const cr_jscan_limits *lim,
                                   apr_size_t *err_offset, apr_size_t *probes)
{
    return run(buf, len, lim, err_offset, probes, NULL);
}

const char *cr_jscan_check(const char *buf, apr_size_t len, const cr_jscan_limits *lim,
                           apr_size_t *err_offset)
{
    return run(buf, len, lim, err_offset, NULL, NULL);
}

const char *cr_jscan_parse(apr_pool_t *p, const char *buf, apr_size_t len,
                           const cr_jscan_limits *lim, apr_size_t *err_offset, cr_jdoc *doc)
{
    jbuild jb;
    const char *why;

    if (len > (apr_size_t)INT32_MAX) {
        /* Token offsets are 32 bits.  The text is still checked first, so
         * that a bad one gets the same answer as a smaller bad one. */
        why = run(buf, len, lim, err_offset, NULL, NULL);
        if (!why && err_offset) {
            *err_offset = 0;
        }
        return why ? why : "body too large";
    }
    /* An order body is mostly short keys and strings: about one token per
     * 10 bytes.  The array doubles when that is not enough. */
    jb.p = p;
    jb.n = 0;
    jb.cap = (apr_uint32_t)(len / 8) + 16;
    jb.most = (apr_uint32_t)(len / 2) + 1;
    jb.tok = apr_palloc(p, sizeof(*jb.tok) * jb.cap);
    why = run(buf, len, lim, err_offset, NULL, &jb);
    if (!why) {
        doc->text = buf;
        doc->tok = jb.tok;
        doc->ntok = jb.n;
    }
    return why;
}

/* ---- reading a document ------------------------------------------------ */

static int key_is(const cr_jdoc *d, const cr_jtok *k, const char *key, apr_size_t klen)
{
    kit it;
    apr_size_t i;

    if (k->len != klen) {
        return 0;
    }
    if (!(k->flags & CR_JTOK_ESCAPED)) {
        return memcmp(d->text + k->start + 1, key, klen) == 0;
    }
    kit_init(&it, (const unsigned char *)d->text, k->start);
    for (i = 0; i < klen; i++) {
        if (kit_next(&it) != (unsigned char)key[i]) {
            return 0;
        }
    }
    return 1;
}

const cr_jtok *cr_jdoc_get(const cr_jdoc *d, const cr_jtok *obj, const char *key)
{
    const cr_jtok *k;
    apr_uint32_t m;
    apr_size_t klen;

    if (!obj || obj->type != CR_JOBJECT) {
        return NULL;
    }
    klen = strlen(key);
    k = obj + 1;
    for (m = 0; m < obj->len; m++) {
        if (key_is(d, k, key, klen)) {
            return k + 1;
        }
        k = d->tok + k[1].next;
    }
    return NULL;
}

const cr_jtok *cr_jdoc_first(const cr_jdoc *d, const cr_jtok *c)
{
    (void)d;
    if (!c || (c->type != CR_JARRAY && c->type != CR_JOBJECT) || c->len == 0) {
        return NULL;
    }
    return c + 1;
}

const cr_jtok *cr_jdoc_after(const cr_jdoc *d, const cr_jtok *v)
{
    return v && v->next < d->ntok ? d->tok + v->next : NULL;
}

const char *cr_jdoc_string(apr_pool_t *p, const cr_jdoc *d, const cr_jtok *s, apr_size_t *len)
{
    char *out;
    apr_size_t i;
    kit it;

    if (!s || s->type != CR_JSTRING) {
        return NULL;
    }
    out = apr_palloc(p, (apr_size_t)s->len + 1);
    if (!(s->flags & CR_JTOK_ESCAPED)) {
        memcpy(out, d->text + s->start + 1, s->len);
    }
    else {
        kit_init(&it, (const unsigned char *)d->text, s->start);
        for (i = 0; i < s->len; i++) {
            out[i] = (char)kit_next(&it);
        }
    }
    out[s->len] = '\0';
    if (len) {
        *len = s->len;
    }
    return out;
}

const char *cr_jdoc_number(const cr_jdoc *d, const cr_jtok *n, apr_size_t *len)
{
    if (!n || n->type != CR_JNUMBER) {
        return NULL;
    }
    *len = n->len;
    return d->text + n->start;
}

int cr_jscan_is_json(const char *buf, apr_size_t len)
{
    /* Generous limits: this only tells an upstream's JSON answer from an
     * HTML error page or a cut-off body, before it is relayed. */
    cr_jscan_limits lim = { 128, 16 * 1024 * 1024, 16 * 1024 * 1024, 1 };
    return len > 0 && cr_jscan_check(buf, len, &lim, NULL) == NULL;
}
