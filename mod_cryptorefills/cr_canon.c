/* Canonical form of a JSON body from its exact tokens: see cr_canon.h. */
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>
#include <apr_sha1.h>

#include "cr_canon.h"

typedef struct cbuf {
    apr_pool_t *p;
    char *b;
    apr_size_t n, cap;
} cbuf;

typedef struct parser {
    apr_pool_t *p;
    const char *s, *end;
    int depth;
} parser;

static void put(cbuf *c, const char *s, apr_size_t n)
{
    if (c->n + n + 1 > c->cap) {
        apr_size_t cap = c->cap ? c->cap * 2 : 64;
        char *nb;
        while (c->n + n + 1 > cap) {
            cap *= 2;
        }
        nb = apr_palloc(c->p, cap);
        if (c->n) {
            memcpy(nb, c->b, c->n);
        }
        c->b = nb;
        c->cap = cap;
    }
    memcpy(c->b + c->n, s, n);
    c->n += n;
    c->b[c->n] = '\0';
}

static void ws(parser *ps)
{
    while (ps->s < ps->end && (*ps->s == ' ' || *ps->s == '\t' || *ps->s == '\n'
                               || *ps->s == '\r')) {
        ps->s++;
    }
}

static int hex4(const char *s, unsigned *v)
{
    int i;
    *v = 0;
    for (i = 0; i < 4; i++) {
        char ch = s[i];
        *v <<= 4;
        if (ch >= '0' && ch <= '9') *v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f') *v |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F') *v |= (unsigned)(ch - 'A' + 10);
        else return 0;
    }
    return 1;
}

static void put_utf8(cbuf *c, unsigned cp)
{
    char u[4];
    if (cp < 0x80) {
        u[0] = (char)cp;
        put(c, u, 1);
    }
    else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        put(c, u, 2);
    }
    else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        put(c, u, 3);
    }
    else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        put(c, u, 4);
    }
}

/* Unescape the string at ps->s (at its opening quote) into out (raw bytes,
 * no quotes). */
static int string_raw(parser *ps, cbuf *out)
{
    const char *s = ps->s + 1, *run;
    if (ps->s >= ps->end || *ps->s != '"') {
        return 0;
    }
    run = s;
    while (s < ps->end && *s != '"') {
        unsigned cp, lo;
        if ((unsigned char)*s < 0x20) {
            return 0;
        }
        if (*s != '\\') {
            s++;
            continue;
        }
        put(out, run, (apr_size_t)(s - run));
        if (s + 1 >= ps->end) {
            return 0;
        }
        switch (s[1]) {
        case '"': put(out, "\"", 1); s += 2; break;
        case '\\': put(out, "\\", 1); s += 2; break;
        case '/': put(out, "/", 1); s += 2; break;
        case 'b': put(out, "\b", 1); s += 2; break;
        case 'f': put(out, "\f", 1); s += 2; break;
        case 'n': put(out, "\n", 1); s += 2; break;
        case 'r': put(out, "\r", 1); s += 2; break;
        case 't': put(out, "\t", 1); s += 2; break;
        case 'u':
            if (ps->end - s < 6 || !hex4(s + 2, &cp)) {
                return 0;
            }
            s += 6;
            if (cp >= 0xd800 && cp < 0xdc00 && ps->end - s >= 6 && s[0] == '\\' && s[1] == 'u'
                && hex4(s + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                s += 6;
            }
            put_utf8(out, cp);
            break;
        default:
            return 0;
        }
        run = s;
    }
    if (s >= ps->end) {
        return 0;
    }
    put(out, run, (apr_size_t)(s - run));
    ps->s = s + 1;
    return 1;
}

/* Quote raw bytes one way: only '"', '\\' and control characters escaped. */
static void put_quoted(cbuf *c, const char *s, apr_size_t n)
{
    static const char hex[] = "0123456789abcdef";
    apr_size_t i, run = 0;
    put(c, "\"", 1);
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char e[6];
        if (ch >= 0x20 && ch != '"' && ch != '\\') {
            continue;
        }
        put(c, s + run, i - run);
        run = i + 1;
        if (ch == '"' || ch == '\\') {
            e[0] = '\\';
            e[1] = (char)ch;
            put(c, e, 2);
        }
        else {
            memcpy(e, "\\u00", 4);
            e[4] = hex[ch >> 4];
            e[5] = hex[ch & 15];
            put(c, e, 6);
        }
    }
    put(c, s + run, n - run);
    put(c, "\"", 1);
}

static int is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* A number token: exact decimal value as [-]DIGITSeEXP. */
static int number(parser *ps, cbuf *c)
{
    const char *s = ps->s, *end = ps->end, *ib, *ie, *fb = NULL, *fe = NULL, *eb = NULL, *ee;
    const char *d0, *d1;
    int neg = 0, eneg = 0;
    long long e = 0, adj;
    char *digits, *q, tmp[32];
    apr_size_t nd;

    if (s < end && *s == '-') {
        neg = 1;
        s++;
    }
    ib = s;
    while (s < end && is_digit(*s)) s++;
    ie = s;
    if (ie == ib) {
        return 0;
    }
    if (s < end && *s == '.') {
        fb = ++s;
        while (s < end && is_digit(*s)) s++;
        fe = s;
        if (fe == fb) {
            return 0;
        }
    }
    if (s < end && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < end && (*s == '+' || *s == '-')) {
            eneg = *s == '-';
            s++;
        }
        eb = s;
        while (s < end && is_digit(*s)) s++;
        if (s == eb) {
            return 0;
        }
    }
    ee = s;
    ps->s = s;

    /* All significant digits, integer part then fraction. */
    nd = (apr_size_t)(ie - ib) + (fb ? (apr_size_t)(fe - fb) : 0);
    digits = apr_palloc(ps->p, nd + 1);
    memcpy(digits, ib, (apr_size_t)(ie - ib));
    if (fb) {
        memcpy(digits + (ie - ib), fb, (apr_size_t)(fe - fb));
    }
    digits[nd] = '\0';
    adj = fb ? -(long long)(fe - fb) : 0;
    d0 = digits;
    d1 = digits + nd;
    while (d0 < d1 && *d0 == '0') d0++;
    if (d0 == d1) {
        put(c, "0", 1);         /* any zero, -0 included */
        return 1;
    }
    while (d1 > d0 && d1[-1] == '0') {
        d1--;
        adj++;
    }
    if (neg) {
        put(c, "-", 1);
    }
    put(c, d0, (apr_size_t)(d1 - d0));
    if (eb) {
        while (eb < ee - 1 && *eb == '0') eb++;
        if (ee - eb > 15) {
            /* Absurd exponent: keep it as written (still exact). */
            put(c, "e", 1);
            if (eneg) {
                put(c, "-", 1);
            }
            put(c, eb, (apr_size_t)(ee - eb));
            apr_snprintf(tmp, sizeof(tmp), "%s%" APR_INT64_T_FMT, adj < 0 ? "" : "+", (apr_int64_t)adj);
            put(c, tmp, strlen(tmp));
            return 1;
        }
        for (q = (char *)eb; q < ee; q++) {
            e = e * 10 + (*q - '0');
        }
        if (eneg) {
            e = -e;
        }
    }
    apr_snprintf(tmp, sizeof(tmp), "e%" APR_INT64_T_FMT, (apr_int64_t)(e + adj));
    put(c, tmp, strlen(tmp));
    return 1;
}

typedef struct member {
    const char *key;
    apr_size_t klen;
    const char *val;
    apr_size_t vlen;
} member;

static int member_cmp(const void *a, const void *b)
{
    const member *x = a, *y = b;
    apr_size_t n = x->klen < y->klen ? x->klen : y->klen;
    int d = memcmp(x->key, y->key, n);
    return d ? d : (x->klen < y->klen ? -1 : x->klen > y->klen);
}

static int value(parser *ps, cbuf *c);

static int object(parser *ps, cbuf *c)
{
    member *m = NULL;
    apr_size_t n = 0, cap = 0, i;
    ps->s++;
    ws(ps);
    if (ps->s < ps->end && *ps->s == '}') {
        ps->s++;
        put(c, "{}", 2);
        return 1;
    }
    for (;;) {
        cbuf k, v;
        memset(&k, 0, sizeof(k));
        memset(&v, 0, sizeof(v));
        k.p = v.p = ps->p;
        ws(ps);
        put(&k, "", 0);
        if (!string_raw(ps, &k)) {
            return 0;
        }
        ws(ps);
        if (ps->s >= ps->end || *ps->s != ':') {
            return 0;
        }
        ps->s++;
        ws(ps);
        if (!value(ps, &v)) {
            return 0;
        }
        if (n == cap) {
            member *nm;
            cap = cap ? cap * 2 : 8;
            nm = apr_palloc(ps->p, cap * sizeof(*nm));
            if (n) {
                memcpy(nm, m, n * sizeof(*nm));
            }
            m = nm;
        }
        m[n].key = k.b;
        m[n].klen = k.n;
        m[n].val = v.b;
        m[n].vlen = v.n;
        n++;
        ws(ps);
        if (ps->s < ps->end && *ps->s == ',') {
            ps->s++;
            continue;
        }
        if (ps->s < ps->end && *ps->s == '}') {
            ps->s++;
            break;
        }
        return 0;
    }
    qsort(m, n, sizeof(*m), member_cmp);
    put(c, "{", 1);
    for (i = 0; i < n; i++) {
        if (i) {
            put(c, ",", 1);
        }
        put_quoted(c, m[i].key, m[i].klen);
        put(c, ":", 1);
        put(c, m[i].val, m[i].vlen);
    }
    put(c, "}", 1);
    return 1;
}

static int array(parser *ps, cbuf *c)
{
    int first = 1;
    ps->s++;
    put(c, "[", 1);
    ws(ps);
    if (ps->s < ps->end && *ps->s == ']') {
        ps->s++;
        put(c, "]", 1);
        return 1;
    }
    for (;;) {
        if (!first) {
            put(c, ",", 1);
        }
        first = 0;
        ws(ps);
        if (!value(ps, c)) {
            return 0;
        }
        ws(ps);
        if (ps->s < ps->end && *ps->s == ',') {
            ps->s++;
            continue;
        }
        if (ps->s < ps->end && *ps->s == ']') {
            ps->s++;
            put(c, "]", 1);
            return 1;
        }
        return 0;
    }
}

static int literal(parser *ps, cbuf *c, const char *lit)
{
    apr_size_t n = strlen(lit);
    if ((apr_size_t)(ps->end - ps->s) < n || memcmp(ps->s, lit, n)) {
        return 0;
    }
    ps->s += n;
    put(c, lit, n);
    return 1;
}

static int value(parser *ps, cbuf *c)
{
    int ok;
    if (ps->s >= ps->end) {
        return 0;
    }
    switch (*ps->s) {
    case '{':
    case '[':
        if (++ps->depth > CR_CANON_MAX_DEPTH) {
            return 0;
        }
        ok = *ps->s == '{' ? object(ps, c) : array(ps, c);
        ps->depth--;
        return ok;
    case '"': {
        cbuf raw;
        memset(&raw, 0, sizeof(raw));
        raw.p = ps->p;
        put(&raw, "", 0);
        if (!string_raw(ps, &raw)) {
            return 0;
        }
        put_quoted(c, raw.b, raw.n);
        return 1;
    }
    case 't': return literal(ps, c, "true");
    case 'f': return literal(ps, c, "false");
    case 'n': return literal(ps, c, "null");
    default:  return number(ps, c);
    }
}

const char *cr_canon_json(apr_pool_t *p, const char *buf, apr_size_t len, apr_size_t *outlen)
{
    parser ps;
    cbuf c;
    memset(&c, 0, sizeof(c));
    c.p = p;
    ps.p = p;
    ps.s = buf;
    ps.end = buf + len;
    ps.depth = 0;
    ws(&ps);
    if (!value(&ps, &c)) {
        return NULL;
    }
    ws(&ps);
    if (ps.s != ps.end) {
        return NULL;
    }
    if (outlen) {
        *outlen = c.n;
    }
    return c.b;
}

int cr_canon_digest(apr_pool_t *p, const char *buf, apr_size_t len, apr_uint64_t *digest)
{
    apr_size_t n;
    const char *t = cr_canon_json(p, buf, len, &n);
    apr_sha1_ctx_t ctx;
    unsigned char d[APR_SHA1_DIGESTSIZE];
    int i;
    if (!t) {
        return 0;
    }
    apr_sha1_init(&ctx);
    apr_sha1_update_binary(&ctx, (const unsigned char *)t, (unsigned int)n);
    apr_sha1_final(d, &ctx);
    *digest = 0;
    for (i = 0; i < 8; i++) {
        *digest = (*digest << 8) | d[i];
    }
    return 1;
}
