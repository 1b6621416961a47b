/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>
#include <apr_strings.h>
#include <apr_lib.h>

#include "cr_route.h"
#include "cr_countries.h"
#include "cr_buf.h"

/* Longest query value passed upstream; brand and family names are far shorter. */
#define CR_MAX_PARAM_LEN 200
/* More query parameters than this is not a storefront's request. */
#define CR_MAX_PARAMS 32

static const char *const params_none[] = { NULL };
static const char *const params_country[] = { "country_code", NULL };
static const char *const params_products[] = { "family_name", "brand_name", "coin", "lang", NULL };
static const char *const params_price[] = { "brand_name", "country_code", "face_value", "coin", NULL };

static const cr_route_def routes[CR_ROUTE_MAX] = {
    [CR_ROUTE_COUNTRIES]    = { CR_ROUTE_COUNTRIES, "countries", "GET", NULL, params_none, CR_RF_LOCAL },
    [CR_ROUTE_PAYMENT_VIAS] = { CR_ROUTE_PAYMENT_VIAS, "payment_vias", "GET", "/v3/payment_vias", params_none, CR_RF_CACHEABLE },
    [CR_ROUTE_BRANDS]       = { CR_ROUTE_BRANDS, "brands", "GET", "/v2/brands", params_country, CR_RF_CACHEABLE | CR_RF_COUNTRYQ },
    [CR_ROUTE_HOMEPAGE]     = { CR_ROUTE_HOMEPAGE, "homepage", "GET", "/v2/homepage", params_country, CR_RF_CACHEABLE | CR_RF_COUNTRYQ },
    [CR_ROUTE_PRODUCTS]     = { CR_ROUTE_PRODUCTS, "products", "GET", "/v5/products/country/%s", params_products, 0 },
    [CR_ROUTE_PRICE]        = { CR_ROUTE_PRICE, "price", "GET", "/v4/products/price", params_price, CR_RF_COUNTRYQ | CR_RF_NO_STORE },
    [CR_ROUTE_VALIDATIONS]  = { CR_ROUTE_VALIDATIONS, "validations", "POST", "/v5/orders/validations", params_none, CR_RF_ORDER | CR_RF_BODY | CR_RF_NO_STORE },
    [CR_ROUTE_ORDERS]       = { CR_ROUTE_ORDERS, "orders", "POST", "/v5/orders", params_none, CR_RF_ORDER | CR_RF_BODY | CR_RF_NO_STORE },
    [CR_ROUTE_ORDER]        = { CR_ROUTE_ORDER, "order", "GET", "/v5/orders/%s", params_none, CR_RF_ORDER | CR_RF_NO_STORE },
    [CR_ROUTE_SUBSCRIBE]    = { CR_ROUTE_SUBSCRIBE, "subscribe", "GET", "/v5/orders/%s/subscribe", params_none, CR_RF_ORDER | CR_RF_STREAM | CR_RF_NO_STORE },
};

const cr_route_def *cr_route_def_get(cr_route_id id)
{
    return (id > CR_ROUTE_NONE && id < CR_ROUTE_MAX) ? &routes[id] : NULL;
}

const char *cr_path_below(const char *uri, const char *base)
{
    apr_size_t n = strlen(base);
    while (n > 1 && base[n - 1] == '/') {
        n--;
    }
    if (!n || strncmp(uri, base, n)
        || (uri[n] != '/' && uri[n] != '\0' && base[n - 1] != '/')) {
        return NULL;
    }
    return uri + n;
}

int cr_seconds_parse(const char *arg, apr_interval_time_t *out)
{
    apr_int64_t whole = 0, frac = 0, scale = 1000000;
    const char *s = arg;
    int digits = 0;

    while (*s >= '0' && *s <= '9') {
        whole = whole * 10 + (*s++ - '0');
        if (++digits > 9) {
            return 0;
        }
    }
    if (*s == '.') {
        int fd = 0;
        s++;
        while (*s >= '0' && *s <= '9') {
            if (++fd > 6) {
                return 0;
            }
            frac = frac * 10 + (*s++ - '0');
            scale /= 10;
        }
        if (!fd) {
            return 0;
        }
        frac *= scale;
    }
    if (*s || (!digits && s == arg)) {
        return 0;
    }
    *out = (apr_interval_time_t)(whole * APR_USEC_PER_SEC + frac);
    return 1;
}

const char *cr_seconds_fmt(apr_pool_t *p, apr_interval_time_t t)
{
    char *s = apr_psprintf(p, "%" APR_INT64_T_FMT ".%06" APR_INT64_T_FMT,
                           (apr_int64_t)(t / APR_USEC_PER_SEC), (apr_int64_t)(t % APR_USEC_PER_SEC));
    apr_size_t n = strlen(s);
    while (s[n - 1] == '0') {
        s[--n] = '\0';
    }
    if (s[n - 1] == '.') {
        s[n - 1] = '\0';
    }
    return s;
}

int cr_has_ctl(const char *s, int allow_tab)
{
    for (; *s; s++) {
        if (((unsigned char)*s < 0x20 && !(allow_tab && *s == '\t')) || *s == 0x7f) {
            return 1;
        }
    }
    return 0;
}

int cr_order_id_ok(const char *s)
{
    apr_size_t n = 0;
    if (!s) {
        return 0;
    }
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= 64 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                         || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
            return 0;
        }
    }
    return n > 0;
}

static void fail(cr_route_req *rr, int status, const char *detail,
                 const char *field, const char *reason)
{
    rr->status = status;
    rr->detail = detail;
    rr->field = field;
    rr->reason = reason;
}

/* Split rel into at most 4 segments; returns the count, or -1 for more, an
 * empty segment (double or trailing slash) or a dot segment. */
static int split_path(apr_pool_t *p, const char *rel, char *seg[4])
{
    char *copy = apr_pstrdup(p, rel), *s = copy, *slash;
    int n = 0;

    if (*s == '\0') {
        return 0;
    }
    for (;;) {
        if (n == 4) {
            return -1;
        }
        slash = strchr(s, '/');
        if (slash) {
            *slash = '\0';
        }
        if (*s == '\0' || !strcmp(s, ".") || !strcmp(s, "..")) {
            return -1;
        }
        seg[n++] = s;
        if (!slash) {
            return n;
        }
        s = slash + 1;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* application/x-www-form-urlencoded decoding; NULL on a bad escape or an
 * escaped control character (a NUL would truncate the value silently). */
static char *form_decode(apr_pool_t *p, const char *s, apr_size_t n)
{
    char *out = apr_palloc(p, n + 1), *w = out;
    apr_size_t i;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        }
        else if (c == '%') {
            int hi, lo;
            if (i + 2 >= n) {
                return NULL;
            }
            hi = hexval(s[i + 1]);
            lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0) {
                return NULL;
            }
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if ((unsigned char)c < 0x20 || c == 0x7f) {
            return NULL;
        }
        *w++ = c;
    }
    *w = '\0';
    return out;
}

/* Valid UTF-8, no overlongs or surrogates. */
static int utf8_ok(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s, need, cp, min;
        if (c < 0x80) { s++; continue; }
        if ((c & 0xE0) == 0xC0) { need = 1; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { need = 2; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { need = 3; cp = c & 0x07; min = 0x10000; }
        else return 0;
        s++;
        while (need--) {
            if ((*s & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (*s++ & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    }
    return 1;
}

static int all_of(const char *s, const char *set, apr_size_t min, apr_size_t max)
{
    apr_size_t n = strlen(s);
    return n >= min && n <= max && strspn(s, set) == n;
}

#define UPPER "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#define LOWER "abcdefghijklmnopqrstuvwxyz"
#define DIGIT "0123456789"

/* A country code the request names: NULL when supported, else why not.  A
 * supported code in the wrong case (`fr`) is a malformed request, reported as
 * such with the code to use; anything else is an unsupported country. */
static const char *country_problem(apr_pool_t *p, const char *v, int *unsupported)
{
    apr_size_t n = strlen(v);

    *unsupported = 0;
    if (cr_country_valid(v, n)) {
        return NULL;
    }
    if (n == 2 && all_of(v, UPPER LOWER, 2, 2)) {
        char up[3] = { (char)apr_toupper(v[0]), (char)apr_toupper(v[1]), 0 };
        if (cr_country_valid(up, 2)) {
            return apr_psprintf(p, "country codes are upper-case: %s", up);
        }
    }
    *unsupported = 1;
    return "not one of the supported countries";
}

/* Per-parameter value rules, beyond "printable UTF-8 of sane length". */
static const char *check_param(apr_pool_t *p, const char *name, const char *v, int *unsupported)
{
    *unsupported = 0;
    if (!strcmp(name, "country_code")) {
        return country_problem(p, v, unsupported);
    }
    else if (!strcmp(name, "coin")) {
        if (!all_of(v, UPPER LOWER DIGIT, 1, 16)) {
            return "a coin ticker is 1-16 letters or digits";
        }
    }
    else if (!strcmp(name, "lang")) {
        if (!all_of(v, LOWER, 2, 3)) {
            return "a language is a 2-3 letter lowercase code";
        }
    }
    else if (!strcmp(name, "face_value")) {
        const char *dot = strchr(v, '.');
        if (!all_of(v, DIGIT ".", 1, 20) || (dot && (dot == v || strchr(dot + 1, '.') || !dot[1]))) {
            return "a face value is a decimal number";
        }
    }
    else if (!*v) {
        return "empty value";
    }
    return NULL;
}

static int param_allowed(const cr_route_def *def, const char *name)
{
    const char *const *a;
    for (a = def->params; *a; a++) {
        if (!strcmp(*a, name)) {
            return 1;
        }
    }
    return 0;
}

static void parse_query(apr_pool_t *p, const char *args, cr_route_req *rr)
{
    const cr_route_def *def = rr->def;
    const char *s = args;
    int count = 0;

    rr->query = apr_table_make(p, 4);
    if (!s) {
        return;
    }
    while (*s) {
        const char *amp = strchr(s, '&'), *eq;
        apr_size_t n = amp ? (apr_size_t)(amp - s) : strlen(s);
        char *name, *value;
        const char *why;
        int unsupported;

        if (n > 0) {
            if (++count > CR_MAX_PARAMS) {
                fail(rr, 400, "INVALID_REQUEST", NULL, "too many query parameters");
                return;
            }
            eq = memchr(s, '=', n);
            name = form_decode(p, s, eq ? (apr_size_t)(eq - s) : n);
            /* Parameters not on the route's list never go upstream. */
            if (name && param_allowed(def, name)) {
                value = eq ? form_decode(p, eq + 1, n - (apr_size_t)(eq + 1 - s)) : apr_pstrdup(p, "");
                if (!value || !utf8_ok((const unsigned char *)value)) {
                    fail(rr, 400, "INVALID_REQUEST", name, "badly encoded value");
                    return;
                }
                if (strlen(value) > CR_MAX_PARAM_LEN) {
                    fail(rr, 400, "INVALID_REQUEST", name, "value too long");
                    return;
                }
                if (apr_table_get(rr->query, name)) {
                    fail(rr, 400, "INVALID_REQUEST", name, "parameter given more than once");
                    return;
                }
                why = check_param(p, name, value, &unsupported);
                if (why) {
                    fail(rr, 400, unsupported ? "UNSUPPORTED_COUNTRY" : "INVALID_REQUEST", name, why);
                    return;
                }
                apr_table_setn(rr->query, name, value);
            }
        }
        if (!amp) {
            break;
        }
        s = amp + 1;
    }
}

void cr_route_parse(apr_pool_t *p, const char *rel, const char *method,
                    const char *args, cr_route_req *rr)
{
    char *seg[4];
    int n = split_path(p, rel ? rel : "", seg);
    cr_route_id id = CR_ROUTE_NONE;
    const char *param = NULL;

    memset(rr, 0, sizeof(*rr));
    if (n == 1) {
        if (!strcmp(seg[0], "countries")) id = CR_ROUTE_COUNTRIES;
        else if (!strcmp(seg[0], "payment_vias")) id = CR_ROUTE_PAYMENT_VIAS;
        else if (!strcmp(seg[0], "brands")) id = CR_ROUTE_BRANDS;
        else if (!strcmp(seg[0], "homepage")) id = CR_ROUTE_HOMEPAGE;
        else if (!strcmp(seg[0], "orders")) id = CR_ROUTE_ORDERS;
    }
    else if (n == 2) {
        if (!strcmp(seg[0], "products") && !strcmp(seg[1], "price")) id = CR_ROUTE_PRICE;
        else if (!strcmp(seg[0], "orders") && !strcmp(seg[1], "validations")) id = CR_ROUTE_VALIDATIONS;
        else if (!strcmp(seg[0], "orders")) { id = CR_ROUTE_ORDER; param = seg[1]; }
    }
    else if (n == 3) {
        if (!strcmp(seg[0], "products") && !strcmp(seg[1], "country")) { id = CR_ROUTE_PRODUCTS; param = seg[2]; }
        else if (!strcmp(seg[0], "orders") && !strcmp(seg[2], "subscribe")) { id = CR_ROUTE_SUBSCRIBE; param = seg[1]; }
    }
    if (id == CR_ROUTE_NONE) {
        fail(rr, 404, "NOT_FOUND", NULL, "no such route");
        return;
    }
    rr->def = &routes[id];
    if (strcmp(method, rr->def->method) && !(!strcmp(method, "HEAD") && !strcmp(rr->def->method, "GET")
                                            && !(rr->def->flags & CR_RF_STREAM))) {
        fail(rr, 405, "METHOD_NOT_ALLOWED", NULL, rr->def->method);
        return;
    }
    if (id == CR_ROUTE_PRODUCTS) {
        int unsupported;
        const char *why = country_problem(p, param, &unsupported);
        if (why) {
            fail(rr, 400, unsupported ? "UNSUPPORTED_COUNTRY" : "INVALID_REQUEST", "country_code", why);
            return;
        }
        rr->country = param;
    }
    else if (param && !cr_order_id_ok(param)) {
        fail(rr, 400, "INVALID_ORDER_ID", "orderId", "an order id is 1-64 of A-Z a-z 0-9 _ -");
        return;
    }
    rr->path_param = param;
    parse_query(p, args, rr);
    if (rr->status) {
        return;
    }
    if (!rr->country) {
        rr->country = apr_table_get(rr->query, "country_code");
    }
    if (id == CR_ROUTE_PRODUCTS && !apr_table_get(rr->query, "family_name")
        && !apr_table_get(rr->query, "brand_name")) {
        fail(rr, 400, "INVALID_REQUEST", "family_name", "family_name or brand_name is required");
        return;
    }
    if (id == CR_ROUTE_PRICE) {
        static const char *const need[] = { "brand_name", "face_value", "coin", NULL };
        const char *const *f;
        for (f = need; *f; f++) {
            if (!apr_table_get(rr->query, *f)) {
                fail(rr, 400, "INVALID_REQUEST", *f, "required");
                return;
            }
        }
    }
}

char *cr_url_encode(apr_pool_t *p, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = apr_palloc(p, strlen(s) * 3 + 1), *w = out;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (apr_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            *w++ = (char)c;
        }
        else {
            *w++ = '%';
            *w++ = hex[c >> 4];
            *w++ = hex[c & 15];
        }
    }
    *w = '\0';
    return out;
}

const char *cr_route_upstream_path(apr_pool_t *p, const cr_route_req *rr,
                                   const char *country)
{
    const cr_route_def *def = rr->def;
    const char *path = rr->path_param ? apr_psprintf(p, def->upstream, rr->path_param)
                                      : def->upstream;
    const char *const *a;
    char sep = '?';
    cr_buf b;

    /* One buffer for the whole path: the query is on every price and
     * catalog call, and re-printing the path per parameter copied it each
     * time. */
    cr_buf_init(&b, p, 256);
    cr_buf_append(&b, path, strlen(path));
    for (a = def->params; *a; a++) {
        const char *v = apr_table_get(rr->query, *a);
        if (!v && !strcmp(*a, "country_code") && (def->flags & CR_RF_COUNTRYQ)) {
            v = country;
        }
        if (v) {
            const char *e = cr_url_encode(p, v);
            cr_buf_append(&b, &sep, 1);
            cr_buf_append(&b, *a, strlen(*a));
            cr_buf_append(&b, "=", 1);
            cr_buf_append(&b, e, strlen(e));
            sep = '&';
        }
    }
    return cr_buf_str(&b);
}
