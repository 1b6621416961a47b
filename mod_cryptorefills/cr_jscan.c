/* SPDX-License-Identifier: Apache-2.0 */
/* Strict JSON pre-scanner: see cr_jscan.h for what it refuses and why.
 *
 * One forward pass with an explicit stack (no recursion, so a 10,000-deep
 * body costs nothing but the first max_depth levels).  Nothing is
 * allocated: the container stack and a table of the keys of the objects
 * currently open live in automatic storage, about 12 KB, which fits the
 * smallest ThreadStackSize httpd allows.
 *
 * Duplicate keys: each key's unescaped bytes are hashed (FNV-1a) while it
 * is scanned; a new key is compared with the keys already seen in its
 * object by hash and length first, then byte by byte through a decoding
 * iterator over both escaped forms.  Objects nest, so their keys form a
 * stack: a child's keys are dropped when it closes.  When the table is full
 * the object is marked and its earlier keys are found again by rescanning
 * it from its '{' (the part already scanned is known to be valid). */
#include <string.h>

#include "cr_jscan.h"

#define KEY_SLOTS 512

typedef struct {
    apr_size_t start;      /* offset of the key's opening quote */
    apr_size_t dlen;       /* unescaped length */
    apr_uint32_t hash;     /* FNV-1a of the unescaped bytes */
} key_slot;

typedef struct {
    apr_size_t start;      /* offset of '{' or '[' */
    apr_size_t members;
    unsigned slot_base;    /* first key slot of this object */
    char type;             /* '{' or '[' */
    char overflow;         /* some keys of this object are not in the table */
} level;

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

static const char *scan_string(const unsigned char *b, apr_size_t n, apr_size_t *pi,
                               apr_size_t max, apr_uint32_t *hash_out, apr_size_t *dlen_out)
{
    apr_size_t i = *pi + 1, dlen = 0;
    apr_uint32_t h = FNV_OFF;
    unsigned char enc[4];
    int k, m;

    for (;;) {
        unsigned char c;
        /* The common case first, in a tight loop: a run of printable ASCII
         * other than the quote and the backslash. */
        apr_size_t run = i;
        while (i < n && plain_char[b[i]]) {
            h = (h ^ b[i]) * FNV_PRIME;
            i++;
        }
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
            m = utf8_put((unsigned long)cp, enc);
            for (k = 0; k < m; k++) {
                h = (h ^ enc[k]) * FNV_PRIME;
            }
            dlen += (apr_size_t)m;
        }
        else if (c < 0x20) {
            *pi = i;
            return c == 0 ? "NUL byte in string" : "control character in string";
        }
        else if (c < 0x80) {
            h = (h ^ c) * FNV_PRIME;
            dlen++;
            i++;
        }
        else {
            m = utf8_seq(b + i, n - i);
            if (m <= 0) {
                *pi = m < 0 ? n : i;
                return m < 0 ? "truncated JSON" : "invalid UTF-8";
            }
            for (k = 0; k < m; k++) {
                h = (h ^ b[i + k]) * FNV_PRIME;
            }
            dlen += (apr_size_t)m;
            i += (apr_size_t)m;
        }
        if (dlen > max) {
            return "string too long";    /* *pi still names the string's start */
        }
    }
    *pi = i + 1;
    *hash_out = h;
    *dlen_out = dlen;
    return NULL;
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

/* Skipping over parts already validated (rescan of a large object). */
static apr_size_t skip_ws(const unsigned char *b, apr_size_t i)
{
    while (is_ws(b[i])) {
        i++;
    }
    return i;
}

static apr_size_t skip_str(const unsigned char *b, apr_size_t i)
{
    i++;
    while (b[i] != '"') {
        i += (b[i] == '\\') ? 2 : 1;
    }
    return i + 1;
}

static apr_size_t skip_value(const unsigned char *b, apr_size_t i)
{
    if (b[i] == '"') {
        return skip_str(b, i);
    }
    if (b[i] == '{' || b[i] == '[') {
        int d = 0;
        for (;;) {
            unsigned char c = b[i];
            if (c == '"') {
                i = skip_str(b, i);
                continue;
            }
            if (c == '{' || c == '[') d++;
            else if (c == '}' || c == ']') d--;
            i++;
            if (d == 0) {
                return i;
            }
        }
    }
    while (b[i] != ',' && b[i] != '}' && b[i] != ']' && !is_ws(b[i])) {
        i++;
    }
    return i;
}

/* Is the key at quote offset cur equal to an earlier key of the object
 * opened at obj?  Only called when that object overflowed the table. */
static int rescan_dup(const unsigned char *b, apr_size_t obj, apr_size_t cur)
{
    apr_size_t i = obj + 1;
    for (;;) {
        i = skip_ws(b, i);
        if (i >= cur) {
            return 0;
        }
        if (keys_equal(b, i, cur)) {
            return 1;
        }
        i = skip_str(b, i);
        i = skip_ws(b, i);
        i++;                         /* ':' */
        i = skip_ws(b, i);
        i = skip_value(b, i);
        i = skip_ws(b, i);
        i++;                         /* ',' */
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

const char *cr_jscan_check(const char *buf, apr_size_t len, const cr_jscan_limits *lim,
                           apr_size_t *err_offset)
{
    const unsigned char *b = (const unsigned char *)buf;
    apr_size_t n = len, i = 0, max_string, max_members;
    int check_dups;
    level st[CR_JSCAN_DEPTH_CAP];
    key_slot slots[KEY_SLOTS];
    unsigned nslots = 0;
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
        st[depth].slot_base = nslots;
        st[depth].type = (char)b[i];
        st[depth].overflow = 0;
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
        apr_uint32_t h;
        apr_size_t dl;
        if ((why = scan_string(b, n, &i, max_string, &h, &dl)) != NULL) {
            goto fail;
        }
        goto after;
    }
    case 't':
    case 'f':
    case 'n':
        if ((why = scan_literal(b, n, &i)) != NULL) {
            goto fail;
        }
        goto after;
    default:
        if (b[i] == '-' || (b[i] >= '0' && b[i] <= '9')) {
            if ((why = scan_number(b, n, &i)) != NULL) {
                goto fail;
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
            if (top->type == '{') {
                nslots = top->slot_base;
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
        apr_uint32_t h;
        unsigned s;
        if ((why = scan_string(b, n, &i, max_string, &h, &dl)) != NULL) {
            goto fail;
        }
        if (!check_dups) {
            /* syntax only */
        }
        else if (top->overflow) {
            if (rescan_dup(b, top->start, kstart)) {
                i = kstart;
                why = "duplicate key";
                goto fail;
            }
        }
        else {
            for (s = top->slot_base; s < nslots; s++) {
                if (slots[s].hash == h && slots[s].dlen == dl
                    && keys_equal(b, slots[s].start, kstart)) {
                    i = kstart;
                    why = "duplicate key";
                    goto fail;
                }
            }
            if (nslots < KEY_SLOTS) {
                slots[nslots].start = kstart;
                slots[nslots].dlen = dl;
                slots[nslots].hash = h;
                nslots++;
            }
            else {
                top->overflow = 1;
            }
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

int cr_jscan_is_json(const char *buf, apr_size_t len)
{
    /* Generous limits: this only tells an upstream's JSON answer from an
     * HTML error page or a cut-off body, before it is relayed. */
    cr_jscan_limits lim = { 128, 16 * 1024 * 1024, 16 * 1024 * 1024, 1 };
    return len > 0 && cr_jscan_check(buf, len, &lim, NULL) == NULL;
}
