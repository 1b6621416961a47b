/* SPDX-License-Identifier: Apache-2.0 */
/* Local validation of checkout bodies: see cr_validate.h for the policy.
 *
 * Two passes over the parsed body.  The structural pass walks the fields in
 * document order and stops at the first bad one (a 400 names one field, as
 * the upstream's own 400s do); it also records, per delivery, what the
 * second pass needs.  The second pass gathers every business problem
 * (product count, catalog, beneficiary, payment) up to a cap. */
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <apr_strings.h>
#include <apr_hash.h>
#include <apr_tables.h>

#include "cr_validate.h"
#include "cr_json.h"
#include "cr_countries.h"

/* ------------------------------------------------------------------------ */
/* Decimals                                                                  */
/* ------------------------------------------------------------------------ */

#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')

int cr_decimal_parse(const char *s, apr_size_t len, apr_int64_t *units)
{
    apr_size_t i = 0, ms, me, first, last, k;
    int neg = 0, ndig = 0, nfrac = 0, eneg = 0, m = 0;
    long exp = 0, shift, tz = 0;
    apr_uint64_t v = 0;

    if (units) {
        *units = 0;
    }
    if (!s || len == 0) {
        return CR_DEC_SYNTAX;
    }
    if (s[i] == '+' || s[i] == '-') {
        neg = (s[i] == '-');
        i++;
    }
    ms = i;
    while (i < len && IS_DIGIT(s[i])) {
        i++;
        ndig++;
    }
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && IS_DIGIT(s[i])) {
            i++;
            ndig++;
            nfrac++;
        }
    }
    me = i;
    if (ndig == 0) {
        return CR_DEC_SYNTAX;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-')) {
            eneg = (s[i] == '-');
            i++;
        }
        if (i >= len || !IS_DIGIT(s[i])) {
            return CR_DEC_SYNTAX;
        }
        while (i < len && IS_DIGIT(s[i])) {
            if (exp < 100000000L) {      /* saturate: decisive long before */
                exp = exp * 10 + (s[i] - '0');
            }
            i++;
        }
    }
    if (i != len) {
        return CR_DEC_SYNTAX;
    }

    /* Significant digits: from the first non-zero to the last non-zero. */
    for (first = ms; first < me && (s[first] == '0' || s[first] == '.'); first++)
        ;
    if (first == me) {
        return CR_DEC_OK;                /* zero, whatever the exponent */
    }
    for (last = me - 1; s[last] == '0' || s[last] == '.'; last--) {
        if (s[last] == '0') {
            tz++;
        }
    }
    for (k = first; k <= last; k++) {
        if (s[k] != '.') {
            m++;
        }
    }
    /* value = digits[first..last] * 10^shift, in units of 10^-SCALE; trailing
     * zeros were dropped from the digits and added to the shift. */
    shift = (eneg ? -exp : exp) - nfrac + CR_DECIMAL_SCALE + tz;
    if (shift < 0) {
        return CR_DEC_PRECISION;         /* the last digit kept is non-zero */
    }
    if ((long)m + shift > 19) {
        return CR_DEC_RANGE;             /* >= 10^19 units: past int64 */
    }
    for (k = first; k <= last; k++) {
        if (s[k] != '.') {
            v = v * 10 + (apr_uint64_t)(s[k] - '0');
        }
    }
    while (shift-- > 0) {
        v *= 10;                         /* m + shift <= 19: fits in uint64 */
    }
    if (v > (apr_uint64_t)APR_INT64_MAX) {
        return CR_DEC_RANGE;
    }
    if (units) {
        *units = neg ? -(apr_int64_t)v : (apr_int64_t)v;
    }
    return CR_DEC_OK;
}

int cr_decimal_from_jdoc(apr_pool_t *p, const cr_jdoc *d, const cr_jtok *v, apr_int64_t *units)
{
    const char *s = NULL;
    apr_size_t n = 0;
    if (units) {
        *units = 0;
    }
    if (v && v->type == CR_JSTRING) {
        /* An unescaped string is parsed where it lies. */
        if (v->flags & CR_JTOK_ESCAPED) {
            s = cr_jdoc_string(p, d, v, &n);
        }
        else {
            s = d->text + v->start + 1;
            n = v->len;
        }
    }
    else if (v && v->type == CR_JNUMBER) {
        /* The token as written: exact, whatever its size (an integer past
         * 2^63 is out of range here, as it was when json-c clamped it). */
        s = cr_jdoc_number(d, v, &n);
    }
    return s ? cr_decimal_parse(s, n, units) : CR_DEC_SYNTAX;
}

/* ------------------------------------------------------------------------ */
/* Emails, phone numbers, language tags                                      */
/* ------------------------------------------------------------------------ */

static int is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_alnum(unsigned char c)
{
    return is_alpha(c) || IS_DIGIT(c);
}

/* RFC 5322 atext. */
static int is_atext(unsigned char c)
{
    return is_alnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static int utf8_ok(const unsigned char *s, apr_size_t n)
{
    apr_size_t i = 0;
    while (i < n) {
        unsigned char c = s[i], lo = 0x80, hi = 0xBF;
        int need, k;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) { need = 2; lo = 0xA0; }
        else if (c >= 0xE1 && c <= 0xEC) need = 2;
        else if (c == 0xED) { need = 2; hi = 0x9F; }
        else if (c >= 0xEE && c <= 0xEF) need = 2;
        else if (c == 0xF0) { need = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else if (c == 0xF4) { need = 3; hi = 0x8F; }
        else return 0;
        if (i + (apr_size_t)need >= n) {
            return 0;
        }
        for (k = 1; k <= need; k++) {
            unsigned char d = s[i + (apr_size_t)k];
            if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) {
                return 0;
            }
        }
        i += (apr_size_t)need + 1;
    }
    return 1;
}

int cr_validate_email(const char *s, apr_size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    apr_size_t at = 0, i, nat = 0, lstart, labels = 0;
    int prev_dot = 1;

    if (!s || len < 3 || len > 254 || !utf8_ok(u, len)) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        if (u[i] == '@') {
            at = i;
            nat++;
        }
    }
    if (nat != 1 || at == 0 || at > 64 || at == len - 1) {
        return 0;
    }
    /* Local part: dot-atoms only (a quoted local part is refused). */
    for (i = 0; i < at; i++) {
        if (u[i] == '.') {
            if (prev_dot) {
                return 0;                /* leading or double dot */
            }
            prev_dot = 1;
        }
        else if (is_atext(u[i]) || u[i] >= 0x80) {
            prev_dot = 0;
        }
        else {
            return 0;
        }
    }
    if (prev_dot) {
        return 0;                        /* trailing dot */
    }
    /* Domain: LDH labels (U-labels allowed), a TLD that is not numeric. */
    lstart = at + 1;
    for (i = at + 1; i <= len; i++) {
        if (i == len || u[i] == '.') {
            apr_size_t l = i - lstart, k;
            if (l == 0 || l > 63 || u[lstart] == '-' || u[i - 1] == '-') {
                return 0;
            }
            for (k = lstart; k < i; k++) {
                if (!is_alnum(u[k]) && u[k] != '-' && u[k] < 0x80) {
                    return 0;
                }
            }
            labels++;
            if (i == len) {
                /* The TLD: letters (or UTF-8), 2+ bytes; or an A-label. */
                if (l >= 5 && (u[lstart] | 0x20) == 'x' && (u[lstart + 1] | 0x20) == 'n'
                    && u[lstart + 2] == '-' && u[lstart + 3] == '-') {
                    break;
                }
                if (l < 2) {
                    return 0;
                }
                for (k = lstart; k < i; k++) {
                    if (!is_alpha(u[k]) && u[k] < 0x80) {
                        return 0;
                    }
                }
            }
            lstart = i + 1;
        }
    }
    return labels >= 2 && len - at - 1 <= 253;
}

int cr_validate_e164(const char *s, apr_size_t len)
{
    apr_size_t i;
    if (!s || len < 8 || len > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9') {
        return 0;
    }
    for (i = 2; i < len; i++) {
        if (!IS_DIGIT(s[i])) {
            return 0;
        }
    }
    return 1;
}

/* A language tag's shape: 2-3 letters, then '-'/'_' subtags of 1-8
 * alphanumerics, 35 bytes at most.  The upstream falls back to English for
 * tags it does not know, so the known list (en es de fr pt tr) is not
 * enforced: refusing "it" would refuse an order the upstream takes. */
static int lang_ok(const char *s, apr_size_t len)
{
    apr_size_t i = 0, sub;
    if (len < 2 || len > 35) {
        return 0;
    }
    while (i < len && is_alpha((unsigned char)s[i])) {
        i++;
    }
    if (i < 2 || i > 3) {
        return 0;
    }
    while (i < len) {
        if (s[i] != '-' && s[i] != '_') {
            return 0;
        }
        i++;
        sub = i;
        while (i < len && is_alnum((unsigned char)s[i])) {
            i++;
        }
        if (i - sub < 1 || i - sub > 8) {
            return 0;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* The validator                                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
    int idx;
    const char *prefix;           /* "deliveries[1]" or "deliveries[1].deliverable" */
    const char *brand, *cc;
    const char *benef;
    apr_size_t benef_len;
} delivery;

typedef struct {
    apr_pool_t *p;
    const cr_jdoc *doc;                     /* the body */
    const cr_validate_ctx *ctx;
    const char *bad_field, *bad_reason;     /* first structural failure */
    json_object *problems;                  /* owned by p */
    int nproblems;
    const char *first_problem;
    const char *susp;                       /* SUSPENDED_COIN / SUSPENDED_NETWORK */
    json_object *susp_more;
    apr_array_header_t *deliveries;         /* of delivery */
    const char *via, *coin, *network;
    apr_hash_t *catalogs;
    int ncatalogs;                          /* countries whose catalog was asked for */
    int count_exceeded;                     /* PRODUCT_COUNT_EXCEEDED decided */
    int unchecked;                          /* distinct countries not asked for */
} vstate;

static int fail(vstate *vs, const char *field, const char *reason)
{
    if (!vs->bad_field) {
        vs->bad_field = field;
        vs->bad_reason = reason;
    }
    return -1;
}

static const char *path(vstate *vs, const char *prefix, const char *key)
{
    return prefix ? apr_pstrcat(vs->p, prefix, ".", key, NULL) : key;
}

/* A member that is absent or JSON null: NULL. */
static const cr_jtok *member(vstate *vs, const cr_jtok *obj, const char *key)
{
    const cr_jtok *v = cr_jdoc_get(vs->doc, obj, key);
    return v && v->type == CR_JNULL ? NULL : v;
}

/* 1: a string (in *out); 0: absent and optional; -1: failure recorded. */
static int get_string(vstate *vs, const cr_jtok *obj, const char *prefix, const char *key,
                      int required, const char **out, apr_size_t *outlen)
{
    const cr_jtok *v = member(vs, obj, key);
    const char *s;
    apr_size_t n;

    *out = NULL;
    if (outlen) {
        *outlen = 0;
    }
    if (!v) {
        return required ? fail(vs, path(vs, prefix, key), "required") : 0;
    }
    if (v->type != CR_JSTRING) {
        return fail(vs, path(vs, prefix, key), "must be a string");
    }
    s = cr_jdoc_string(vs->p, vs->doc, v, &n);
    if (memchr(s, '\0', n)) {
        return fail(vs, path(vs, prefix, key), "must not contain NUL");
    }
    if (required && n == 0) {
        return fail(vs, path(vs, prefix, key), "must not be empty");
    }
    *out = s;
    if (outlen) {
        *outlen = n;
    }
    return 1;
}

static int get_object(vstate *vs, const cr_jtok *obj, const char *prefix, const char *key,
                      int required, const cr_jtok **out)
{
    const cr_jtok *v = member(vs, obj, key);
    *out = NULL;
    if (!v) {
        return required ? fail(vs, path(vs, prefix, key), "required") : 0;
    }
    if (v->type != CR_JOBJECT) {
        return fail(vs, path(vs, prefix, key), "must be an object");
    }
    *out = v;
    return 1;
}

static int amount_fail(vstate *vs, const char *field, int rc, apr_int64_t units)
{
    if (rc == CR_DEC_SYNTAX) {
        return fail(vs, field, "not a decimal number");
    }
    if (rc == CR_DEC_RANGE) {
        return fail(vs, field, "amount out of range");
    }
    if (rc == CR_DEC_PRECISION) {
        return fail(vs, field, "too many decimal places");
    }
    if (units <= 0) {
        return fail(vs, field, "must be greater than zero");
    }
    return 0;
}

/* An amount: a JSON number or numeric string, a positive decimal. */
static int check_amount(vstate *vs, const cr_jtok *v, const char *field)
{
    apr_int64_t units;
    int rc;
    if (v->type != CR_JSTRING && v->type != CR_JNUMBER) {
        return fail(vs, field, "must be a number or a numeric string");
    }
    rc = cr_decimal_from_jdoc(vs->p, vs->doc, v, &units);
    return amount_fail(vs, field, rc, units);
}

static int numeric_char(char c)
{
    return IS_DIGIT(c) || c == '.' || c == '+' || c == '-' || c == 'e' || c == 'E';
}

/* The product fields shared by both shapes (validations' delivery object,
 * create's deliverable), in the partner doc's order. */
static int check_product(vstate *vs, const cr_jtok *o, const char *prefix, delivery *d,
                         int with_localized)
{
    const cr_jtok *den, *pv;
    const char *s;
    apr_size_t n;
    int is_range = 0;

    if (get_string(vs, o, prefix, "brand_name", 1, &d->brand, NULL) < 0) {
        return -1;
    }
    if (get_string(vs, o, prefix, "country_code", 1, &d->cc, &n) < 0) {
        return -1;
    }
    if (!cr_country_valid(d->cc, n)) {
        return fail(vs, path(vs, prefix, "country_code"), "not a supported country code");
    }
    den = member(vs, o, "denomination");
    if (!den) {
        return fail(vs, path(vs, prefix, "denomination"), "required");
    }
    if (den->type == CR_JSTRING) {
        s = cr_jdoc_string(vs->p, vs->doc, den, &n);
        if (n == 0) {
            return fail(vs, path(vs, prefix, "denomination"), "must not be empty");
        }
        if (memchr(s, '\0', n)) {
            return fail(vs, path(vs, prefix, "denomination"), "must not contain NUL");
        }
        if (strcmp(s, "range") == 0) {
            is_range = 1;
        }
        else if (IS_DIGIT(s[0]) || s[0] == '.' || s[0] == '+' || s[0] == '-') {
            /* "10 USD", "2.5 EUR", "1 GB 7 days": the leading number, when it
             * is made of number characters only, must be a positive amount. */
            apr_size_t t = 0;
            int plain = 1;
            while (t < n && s[t] != ' ') {
                plain &= numeric_char(s[t]);
                t++;
            }
            if (plain) {
                apr_int64_t units;
                int rc = cr_decimal_parse(s, t, &units);
                if (amount_fail(vs, path(vs, prefix, "denomination"), rc, units) < 0) {
                    return -1;
                }
            }
        }
    }
    else if (den->type == CR_JNUMBER) {
        if (check_amount(vs, den, path(vs, prefix, "denomination")) < 0) {
            return -1;
        }
    }
    else {
        return fail(vs, path(vs, prefix, "denomination"), "must be a string");
    }
    if (with_localized && get_string(vs, o, prefix, "localized_denomination", 0, &s, NULL) < 0) {
        return -1;
    }
    pv = member(vs, o, "product_value");
    if (pv) {
        if (check_amount(vs, pv, path(vs, prefix, "product_value")) < 0) {
            return -1;
        }
    }
    else if (is_range) {
        return fail(vs, path(vs, prefix, "product_value"), "required when denomination is \"range\"");
    }
    if (get_string(vs, o, prefix, "beneficiary_account", 1, &d->benef, &d->benef_len) < 0) {
        return -1;
    }
    return 0;
}

static int check_payment_shape(vstate *vs, const cr_jtok *body)
{
    const cr_jtok *pay;
    const char *type;
    if (get_object(vs, body, NULL, "payment", 1, &pay) < 0) {
        return -1;
    }
    if (get_string(vs, pay, "payment", "type", 1, &type, NULL) < 0
        || get_string(vs, pay, "payment", "payment_via", 1, &vs->via, NULL) < 0
        || get_string(vs, pay, "payment", "coin", 1, &vs->coin, NULL) < 0
        || get_string(vs, pay, "payment", "network", vs->ctx->is_create, &vs->network, NULL) < 0) {
        return -1;
    }
    if (vs->network && !*vs->network) {
        vs->network = NULL;              /* "" on validations: as if absent */
    }
    return 0;
}

static int check_email_field(vstate *vs, const cr_jtok *obj, const char *prefix, const char *key,
                             int required)
{
    const char *s;
    apr_size_t n;
    int r = get_string(vs, obj, prefix, key, required, &s, &n);
    if (r <= 0) {
        return r;
    }
    if (!cr_validate_email(s, n)) {
        return fail(vs, path(vs, prefix, key), "not a valid email address");
    }
    return 0;
}

/* An integer token (no fraction, no exponent, no leading zero: checked
 * JSON) compared exactly with 1..2^31-1: 0 in range, -1 below 1 (zero,
 * "-0", negative), 1 above (however many digits). */
static int quantity_range(const cr_jdoc *d, const cr_jtok *q)
{
    apr_size_t n, i;
    const char *s = cr_jdoc_number(d, q, &n);
    apr_uint64_t v = 0;

    if (s[0] == '-' || (n == 1 && s[0] == '0')) {
        return -1;
    }
    if (n > 10) {
        return 1;
    }
    for (i = 0; i < n; i++) {
        v = v * 10 + (apr_uint64_t)(s[i] - '0');
    }
    return v > 2147483647u ? 1 : 0;
}

/* "deliveries[i]", without a formatter. */
static const char *delivery_prefix(apr_pool_t *p, apr_uint32_t i)
{
    char buf[32], digits[10];
    apr_size_t n = sizeof("deliveries[") - 1;
    int k = 0;
    memcpy(buf, "deliveries[", n);
    do {
        digits[k++] = (char)('0' + i % 10);
        i /= 10;
    } while (i);
    while (k) {
        buf[n++] = digits[--k];
    }
    buf[n++] = ']';
    return apr_pstrmemdup(p, buf, n);
}

static int check_deliveries(vstate *vs, const cr_jtok *body)
{
    const cr_jtok *arr = member(vs, body, "deliveries"), *it;
    apr_uint32_t i, n;

    if (!arr) {
        return fail(vs, "deliveries", "required");
    }
    if (arr->type != CR_JARRAY) {
        return fail(vs, "deliveries", "must be an array");
    }
    n = arr->len;
    if (n == 0) {
        return fail(vs, "deliveries", "must hold at least one delivery");
    }
    for (i = 0, it = cr_jdoc_first(vs->doc, arr); i < n; i++, it = cr_jdoc_after(vs->doc, it)) {
        const char *pre = delivery_prefix(vs->p, i);
        delivery *d = apr_array_push(vs->deliveries);

        memset(d, 0, sizeof(*d));
        d->idx = (int)i;
        if (it->type != CR_JOBJECT) {
            return fail(vs, pre, "must be an object");
        }
        if (vs->ctx->is_create) {
            const char *kind;
            const cr_jtok *q, *dv;
            int qr;
            if (get_string(vs, it, pre, "kind", 1, &kind, NULL) < 0) {
                return -1;
            }
            q = member(vs, it, "quantity");
            if (!q) {
                return fail(vs, path(vs, pre, "quantity"), "required");
            }
            if (q->type != CR_JNUMBER || !(q->flags & CR_JTOK_INTEGER)) {
                return fail(vs, path(vs, pre, "quantity"), "must be a positive integer");
            }
            qr = quantity_range(vs->doc, q);
            if (qr < 0) {
                return fail(vs, path(vs, pre, "quantity"), "must be a positive integer");
            }
            if (qr > 0) {
                return fail(vs, path(vs, pre, "quantity"), "too large");
            }
            if (get_object(vs, it, pre, "deliverable", 1, &dv) < 0) {
                return -1;
            }
            d->prefix = path(vs, pre, "deliverable");
            if (check_product(vs, dv, d->prefix, d, 0) < 0) {
                return -1;
            }
        }
        else {
            d->prefix = pre;
            if (check_product(vs, it, pre, d, 1) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

static int check_lang(vstate *vs, const cr_jtok *body)
{
    const char *s;
    apr_size_t n;
    int r = get_string(vs, body, NULL, "lang", 0, &s, &n);
    if (r <= 0) {
        return r;
    }
    if (!lang_ok(s, n)) {
        return fail(vs, "lang", "not a language tag");
    }
    return 0;
}

static int structure(vstate *vs, const cr_jtok *body)
{
    if (!body || body->type != CR_JOBJECT) {
        return fail(vs, "body", "must be a JSON object");
    }
    if (!vs->ctx->is_create) {
        /* {email, payment, deliveries, lang} */
        if (check_email_field(vs, body, NULL, "email", 0) < 0
            || check_payment_shape(vs, body) < 0
            || check_deliveries(vs, body) < 0
            || check_lang(vs, body) < 0) {
            return -1;
        }
    }
    else {
        /* {deliveries, payment, user, lang, acquisition?, promo_code?, refund_wallet_address?} */
        const cr_jtok *user, *o;
        const char *s;
        if (check_deliveries(vs, body) < 0
            || check_payment_shape(vs, body) < 0
            || get_object(vs, body, NULL, "user", 1, &user) < 0
            || check_email_field(vs, user, "user", "email", 1) < 0) {
            return -1;
        }
        o = member(vs, user, "has_accepted_newsletter");
        if (o && o->type != CR_JTRUE && o->type != CR_JFALSE) {
            return fail(vs, "user.has_accepted_newsletter", "must be a boolean");
        }
        if (check_lang(vs, body) < 0
            || get_object(vs, body, NULL, "acquisition", 0, &o) < 0
            || get_string(vs, body, NULL, "promo_code", 0, &s, NULL) < 0
            || get_string(vs, body, NULL, "refund_wallet_address", 0, &s, NULL) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ---- problems ---- */

static json_object *jstr(const char *s)
{
    return json_object_new_string(s ? s : "");
}

/* Append {"problem": code, "moreDetails": more}; takes more. */
static void add_problem(vstate *vs, const char *code, json_object *more)
{
    json_object *pr;
    if (vs->nproblems >= CR_VALIDATE_MAX_PROBLEMS) {
        json_object_put(more);
        return;
    }
    if (!vs->problems) {
        /* Made on the first problem: a valid order builds no JSON at all. */
        vs->problems = cr_json_own(vs->p, json_object_new_array());
    }
    pr = json_object_new_object();
    json_object_object_add(pr, "problem", json_object_new_string(code));
    json_object_object_add(pr, "moreDetails", more);
    json_object_array_add(vs->problems, pr);
    if (!vs->nproblems++) {
        vs->first_problem = code;
    }
}

static json_object *more_field(const char *field)
{
    json_object *m = json_object_new_object();
    json_object_object_add(m, "field", jstr(field));
    return m;
}

static int ieq(const char *a, const char *b)
{
    return a && b && strcasecmp(a, b) == 0;
}

/* A boolean member equal to want (absent or another type: no). */
static int bool_is(json_object *o, const char *key, int want)
{
    json_object *v = cr_json_get(o, key);
    return json_object_is_type(v, json_type_boolean) && !!json_object_get_boolean(v) == want;
}

/* What the catalogs say about one brand, merged over every place it is
 * listed (all_brands, categories[].brands, categories[].popular_brands). */
typedef struct {
    int found;
    int in_stock;          /* some listing does not say is_out_of_stock: true */
    int email_ok, phone_ok;
    int unchecked;         /* a listing of a kind whose beneficiary rule is unknown */
} brand_info;

static void note_brand(json_object *b, json_object *section, brand_info *bi)
{
    const char *kind = cr_json_get_string(b, "kind");
    const char *cat = cr_json_get_string(b, "category");
    const char *scat = cr_json_get_string(section, "category");
    json_object *add = cr_json_get(b, "additional_categories");
    int hint = 0;
    size_t k, n;

    bi->found = 1;
    if (!bool_is(b, "is_out_of_stock", 1)) {
        bi->in_stock = 1;
    }
    if (!kind) {
        kind = cr_json_get_string(section, "kind");
    }
    if (!cat) {
        cat = scat;
    }
    if (json_object_is_type(add, json_type_array)) {
        n = json_object_array_length(add);
        for (k = 0; k < n; k++) {
            json_object *e = json_object_array_get_idx(add, k);
            if (json_object_is_type(e, json_type_string) && strcmp(json_object_get_string(e), "e-sim") == 0) {
                hint = 1;
            }
        }
    }
    if (scat && strcmp(scat, "e-sim") == 0) {
        hint = 1;
    }
    if (kind && strcmp(kind, "giftcard") == 0) {
        bi->email_ok = 1;
    }
    else if (kind && strcmp(kind, "mobile_recharge") == 0) {
        if (cat && strcmp(cat, "e-sim") == 0) {
            bi->email_ok = 1;
        }
        else if (hint) {
            bi->email_ok = bi->phone_ok = 1;
        }
        else {
            bi->phone_ok = 1;
        }
    }
    else {
        bi->unchecked = 1;
    }
}

static void scan_brands(json_object *arr, json_object *section, const char *brand, brand_info *bi)
{
    size_t k, n;
    if (!json_object_is_type(arr, json_type_array)) {
        return;
    }
    n = json_object_array_length(arr);
    for (k = 0; k < n; k++) {
        json_object *b = json_object_array_get_idx(arr, k);
        const char *name = cr_json_get_string(b, "brand");
        if (name && strcmp(name, brand) == 0) {
            note_brand(b, section, bi);
        }
    }
}

/* ---- brand index ------------------------------------------------------------
 * A catalog lists a few hundred brands, each up to three times (all_brands,
 * a category's brands and popular_brands).  An index built once per parsed
 * catalog turns each delivery's lookup into a hash probe; it hangs off the
 * catalog object as json-c userdata and goes with it. */
#define CR_INDEX_MAGIC 0x43524958u   /* "CRIX" */
typedef struct brand_ref {
    json_object *brand;
    json_object *section;
} brand_ref;
typedef struct cat_index {
    apr_uint32_t magic;
    apr_pool_t *pool;
    apr_hash_t *by_name;    /* brand name -> apr_array_header_t of brand_ref */
} cat_index;

static void index_free(json_object *jso, void *userdata)
{
    cat_index *ix = userdata;
    (void)jso;
    if (ix && ix->magic == CR_INDEX_MAGIC) {
        ix->magic = 0;
        apr_pool_destroy(ix->pool);
    }
}

static void index_add(cat_index *ix, json_object *arr, json_object *section)
{
    size_t k, n;
    if (!json_object_is_type(arr, json_type_array)) {
        return;
    }
    n = json_object_array_length(arr);
    for (k = 0; k < n; k++) {
        json_object *b = json_object_array_get_idx(arr, k);
        const char *name = cr_json_get_string(b, "brand");
        apr_array_header_t *refs;
        brand_ref *ref;
        if (!name) {
            continue;
        }
        refs = apr_hash_get(ix->by_name, name, APR_HASH_KEY_STRING);
        if (!refs) {
            refs = apr_array_make(ix->pool, 3, sizeof(brand_ref));
            apr_hash_set(ix->by_name, apr_pstrdup(ix->pool, name), APR_HASH_KEY_STRING, refs);
        }
        ref = apr_array_push(refs);
        ref->brand = b;
        ref->section = section;
    }
}

int cr_validate_index_catalog(json_object *cat)
{
    json_object *all = cr_json_get(cat, "all_brands"), *cats = cr_json_get(cat, "categories");
    apr_pool_t *p;
    cat_index *ix;
    size_t k, n;

    if (!json_object_is_type(cat, json_type_object) || json_object_get_userdata(cat)) {
        return 0;
    }
    if (apr_pool_create_unmanaged_ex(&p, NULL, NULL) != APR_SUCCESS) {
        return 0;
    }
    ix = apr_pcalloc(p, sizeof(*ix));
    ix->magic = CR_INDEX_MAGIC;
    ix->pool = p;
    ix->by_name = apr_hash_make(p);
    /* The order of a linear scan: all_brands, then each section's lists. */
    index_add(ix, all, NULL);
    if (json_object_is_type(cats, json_type_array)) {
        n = json_object_array_length(cats);
        for (k = 0; k < n; k++) {
            json_object *sec = json_object_array_get_idx(cats, k);
            index_add(ix, cr_json_get(sec, "brands"), sec);
            index_add(ix, cr_json_get(sec, "popular_brands"), sec);
        }
    }
    json_object_set_userdata(cat, ix, index_free);
    return 1;
}

/* 0 and bi filled in; -1 when the catalog is unusable (checks skipped). */
static int catalog_find(json_object *cat, const char *brand, brand_info *bi)
{
    json_object *all = cr_json_get(cat, "all_brands"), *cats = cr_json_get(cat, "categories");
    int have_all = json_object_is_type(all, json_type_array);
    int have_cats = json_object_is_type(cats, json_type_array);
    cat_index *ix = json_object_get_userdata(cat);
    size_t k, n;

    memset(bi, 0, sizeof(*bi));
    if (!have_all && !have_cats) {
        return -1;
    }
    if (ix && ix->magic == CR_INDEX_MAGIC) {
        apr_array_header_t *refs = apr_hash_get(ix->by_name, brand, APR_HASH_KEY_STRING);
        int i;
        for (i = 0; refs && i < refs->nelts; i++) {
            brand_ref *ref = &APR_ARRAY_IDX(refs, i, brand_ref);
            note_brand(ref->brand, ref->section, bi);
        }
        return 0;
    }
    scan_brands(all, NULL, brand, bi);
    if (have_cats) {
        n = json_object_array_length(cats);
        for (k = 0; k < n; k++) {
            json_object *sec = json_object_array_get_idx(cats, k);
            scan_brands(cr_json_get(sec, "brands"), sec, brand, bi);
            scan_brands(cr_json_get(sec, "popular_brands"), sec, brand, bi);
        }
    }
    return 0;
}

static json_object *catalog_for(vstate *vs, const char *cc)
{
    static const char none;
    void *v;
    json_object *cat;

    if (!vs->ctx->catalog) {
        return NULL;
    }
    v = apr_hash_get(vs->catalogs, cc, APR_HASH_KEY_STRING);
    if (v) {
        return v == &none ? NULL : v;
    }
    if (vs->count_exceeded
        || (vs->ctx->max_countries > 0 && vs->ncatalogs >= vs->ctx->max_countries)) {
        /* Decided already (refused: nobody checks), or past the request's
         * share of catalog work (this country's checks are the upstream's). */
        vs->unchecked += !vs->count_exceeded;
        apr_hash_set(vs->catalogs, cc, APR_HASH_KEY_STRING, &none);
        return NULL;
    }
    vs->ncatalogs++;
    cat = vs->ctx->catalog(vs->ctx->baton, cc);
    if (!json_object_is_type(cat, json_type_object)) {
        cat = NULL;
    }
    apr_hash_set(vs->catalogs, cc, APR_HASH_KEY_STRING, cat ? (void *)cat : (void *)&none);
    return cat;
}

static void check_delivery(vstate *vs, const delivery *d)
{
    json_object *cat = catalog_for(vs, d->cc), *m;
    brand_info bi;
    int ok;

    if (!cat || catalog_find(cat, d->brand, &bi) < 0) {
        return;
    }
    if (!bi.found) {
        m = more_field(path(vs, d->prefix, "brand_name"));
        json_object_object_add(m, "brand_name", jstr(d->brand));
        json_object_object_add(m, "country_code", jstr(d->cc));
        add_problem(vs, "NOT_AVAILABLE_PRODUCT", m);
        return;
    }
    if (!bi.in_stock) {
        m = more_field(path(vs, d->prefix, "brand_name"));
        json_object_object_add(m, "brand_name", jstr(d->brand));
        json_object_object_add(m, "country_code", jstr(d->cc));
        add_problem(vs, "OUT_OF_STOCK", m);
    }
    if (bi.unchecked || (!bi.email_ok && !bi.phone_ok)) {
        return;
    }
    ok = (bi.email_ok && cr_validate_email(d->benef, d->benef_len))
         || (bi.phone_ok && cr_validate_e164(d->benef, d->benef_len));
    if (!ok) {
        m = more_field(path(vs, d->prefix, "beneficiary_account"));
        json_object_object_add(m, "expected", jstr(bi.email_ok && bi.phone_ok ? "email_or_phone"
                                                   : bi.email_ok ? "email" : "phone"));
        json_object_object_add(m, "brand_name", jstr(d->brand));
        json_object_object_add(m, "country_code", jstr(d->cc));
        add_problem(vs, "INVALID_BENEFICIARY_ACCOUNT", m);
    }
}

/* Usable coin/network pairs of one payment via, for "supported". */
static void add_supported(json_object *via, json_object *out)
{
    json_object *curs = cr_json_get(via, "currencies");
    size_t i, n, j, m;
    if (!json_object_is_type(curs, json_type_array)) {
        return;
    }
    n = json_object_array_length(curs);
    for (i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(curs, i), *nets;
        const char *cname = cr_json_get_string(c, "name");
        if (!cname || bool_is(c, "is_suspended", 1)) {
            continue;
        }
        nets = cr_json_get(c, "networks");
        if (!json_object_is_type(nets, json_type_array)) {
            json_object *pair = json_object_new_object();
            json_object_object_add(pair, "coin", jstr(cname));
            json_object_array_add(out, pair);
            continue;
        }
        m = json_object_array_length(nets);
        for (j = 0; j < m; j++) {
            json_object *nw = json_object_array_get_idx(nets, j), *pair;
            const char *nname = cr_json_get_string(nw, "name");
            if (!nname || bool_is(nw, "is_suspended", 1)) {
                continue;
            }
            pair = json_object_new_object();
            json_object_object_add(pair, "coin", jstr(cname));
            json_object_object_add(pair, "network", jstr(nname));
            json_object_array_add(out, pair);
        }
    }
}

/* Outcomes of matching the payment against one via, best last. */
enum { PAY_NO_COIN = 1, PAY_NO_NETWORK, PAY_SUSP_COIN, PAY_SUSP_NETWORK, PAY_OK };

static int match_via(vstate *vs, json_object *via)
{
    json_object *curs = cr_json_get(via, "currencies");
    size_t i, n, j, m;
    int best = PAY_NO_COIN;

    if (!json_object_is_type(curs, json_type_array)) {
        return PAY_OK;                   /* nothing to check against */
    }
    n = json_object_array_length(curs);
    for (i = 0; i < n && best < PAY_OK; i++) {
        json_object *c = json_object_array_get_idx(curs, i), *nets;
        int r;
        if (!ieq(cr_json_get_string(c, "name"), vs->coin)) {
            continue;
        }
        if (bool_is(c, "is_suspended", 1)) {
            r = PAY_SUSP_COIN;
        }
        else if (!vs->network
                 || !json_object_is_type(nets = cr_json_get(c, "networks"), json_type_array)) {
            r = PAY_OK;
        }
        else {
            r = PAY_NO_NETWORK;
            m = json_object_array_length(nets);
            for (j = 0; j < m && r < PAY_OK; j++) {
                json_object *nw = json_object_array_get_idx(nets, j);
                if (ieq(cr_json_get_string(nw, "name"), vs->network)) {
                    r = bool_is(nw, "is_suspended", 1) ? PAY_SUSP_NETWORK : PAY_OK;
                }
            }
        }
        if (r > best) {
            best = r;
        }
    }
    return best;
}

static void check_payment(vstate *vs)
{
    json_object *vias = vs->ctx->payment_vias, *m, *list;
    size_t i, n;
    int best = 0;

    if (!json_object_is_type(vias, json_type_array)) {
        return;
    }
    n = json_object_array_length(vias);
    for (i = 0; i < n && best < PAY_OK; i++) {
        json_object *via = json_object_array_get_idx(vias, i);
        int r;
        if (!ieq(cr_json_get_string(via, "name"), vs->via) || bool_is(via, "available", 0)) {
            continue;
        }
        r = match_via(vs, via);
        if (r > best) {
            best = r;
        }
    }
    if (best == PAY_OK) {
        return;
    }
    if (best == 0) {
        apr_hash_t *seen = apr_hash_make(vs->p);
        m = more_field("payment.payment_via");
        json_object_object_add(m, "payment_via", jstr(vs->via));
        list = json_object_new_array();
        for (i = 0; i < n; i++) {
            json_object *via = json_object_array_get_idx(vias, i);
            const char *name = cr_json_get_string(via, "name");
            if (name && !bool_is(via, "available", 0) && !apr_hash_get(seen, name, APR_HASH_KEY_STRING)) {
                apr_hash_set(seen, name, APR_HASH_KEY_STRING, name);
                json_object_array_add(list, jstr(name));
            }
        }
        json_object_object_add(m, "allowed", list);
        add_problem(vs, "NOT_ALLOWED_PAYMENT_VIA", m);
        return;
    }
    if (best == PAY_SUSP_COIN || best == PAY_SUSP_NETWORK) {
        m = more_field(best == PAY_SUSP_COIN ? "payment.coin" : "payment.network");
        json_object_object_add(m, "coin", jstr(vs->coin));
        if (best == PAY_SUSP_NETWORK) {
            json_object_object_add(m, "network", jstr(vs->network));
        }
        vs->susp = best == PAY_SUSP_COIN ? "SUSPENDED_COIN" : "SUSPENDED_NETWORK";
        vs->susp_more = cr_json_own(vs->p, m);
        return;
    }
    m = more_field(best == PAY_NO_COIN ? "payment.coin" : "payment.network");
    json_object_object_add(m, "payment_via", jstr(vs->via));
    json_object_object_add(m, "coin", jstr(vs->coin));
    if (vs->network) {
        json_object_object_add(m, "network", jstr(vs->network));
    }
    list = json_object_new_array();
    for (i = 0; i < n; i++) {
        json_object *via = json_object_array_get_idx(vias, i);
        if (ieq(cr_json_get_string(via, "name"), vs->via) && !bool_is(via, "available", 0)) {
            add_supported(via, list);
        }
    }
    json_object_object_add(m, "supported", list);
    add_problem(vs, "UNSUPPORTED_PROTOCOL_COIN_COMBINATION", m);
}

void cr_validate_order(apr_pool_t *p, const cr_jdoc *body, const cr_validate_ctx *ctx,
                       cr_validate_result *out)
{
    vstate vs;
    int i;

    memset(out, 0, sizeof(*out));
    memset(&vs, 0, sizeof(vs));
    vs.p = p;
    vs.doc = body;
    vs.ctx = ctx;
    vs.deliveries = apr_array_make(p, 4, sizeof(delivery));

    if (structure(&vs, body && body->ntok ? body->tok : NULL) < 0) {
        out->rc = CR_INVALID_REQUEST;
        out->detail = "INVALID_REQUEST";
        out->more = cr_json_own(p, json_object_new_object());
        json_object_object_add(out->more, "field", jstr(vs.bad_field));
        json_object_object_add(out->more, "reason", jstr(vs.bad_reason));
        out->status = 400;
        return;
    }

    vs.catalogs = apr_hash_make(p);
    if (ctx->max_products > 0 && vs.deliveries->nelts > ctx->max_products) {
        json_object *m = more_field("deliveries");
        json_object_object_add(m, "max", json_object_new_int(ctx->max_products));
        json_object_object_add(m, "count", json_object_new_int(vs.deliveries->nelts));
        add_problem(&vs, "PRODUCT_COUNT_EXCEEDED", m);
        vs.count_exceeded = 1;
    }
    for (i = 0; i < vs.deliveries->nelts; i++) {
        check_delivery(&vs, &APR_ARRAY_IDX(vs.deliveries, i, delivery));
    }
    check_payment(&vs);
    out->countries_unchecked = vs.unchecked;

    if (vs.susp) {
        out->rc = CR_SUSPENDED;
        out->detail = vs.susp;
        out->more = vs.susp_more;
        out->status = 422;
    }
    else if (vs.nproblems) {
        out->rc = CR_PROBLEMS;
        out->problems = vs.problems;
        out->detail = vs.first_problem;
        out->status = ctx->is_create ? 422 : 200;
    }
    else {
        out->rc = CR_VALID;
    }
}

const char *cr_validate_response(apr_pool_t *p, const cr_validate_result *res, int is_create,
                                 apr_size_t *len)
{
    json_object *o;

    if (len) {
        *len = 0;
    }
    if (res->rc == CR_VALID) {
        return NULL;
    }
    o = cr_json_own(p, json_object_new_object());
    if (res->rc == CR_PROBLEMS) {
        if (is_create) {
            json_object_object_add(o, "status", json_object_new_int(422));
            json_object_object_add(o, "detail", jstr(res->detail));
        }
        json_object_object_add(o, "problems", json_object_get(res->problems));
    }
    else {
        json_object_object_add(o, "status", json_object_new_int(res->status));
        json_object_object_add(o, "detail", jstr(res->detail));
        if (res->more) {
            json_object_object_add(o, "moreDetails", json_object_get(res->more));
        }
    }
    return cr_json_str(p, o, len);
}
