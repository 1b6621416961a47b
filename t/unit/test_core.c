/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the core: country table, routing and query handling, error
 * bodies, the JSON wrapper.  Links the same objects the module ships. */
#include <string.h>
#include <stdlib.h>
#include <check.h>
#include "unit_run.h"
#include <apr_general.h>
#include <apr_strings.h>

#include "cr_countries.h"
#include "cr_route.h"
#include "cr_problem.h"
#include "cr_json.h"
#include "cr_record.h"
#include "cr_jscan.h"
#include "cr_ptable.h"
#include "cr_buf.h"
#include <zlib.h>

static apr_pool_t *pool;

static void setup(void) { apr_pool_create(&pool, NULL); }
static void teardown(void) { apr_pool_destroy(pool); }

/* ---- countries ---- */
START_TEST(countries_table)
{
    int i, n = cr_country_count();
    ck_assert_int_eq(n, 233);
    ck_assert_str_eq(cr_country_at(0)->iso, "AX");
    ck_assert_ptr_null(cr_country_at(n));
    for (i = 0; i < n; i++) {
        ck_assert_msg(cr_country_valid(cr_country_at(i)->iso, 2), "%s", cr_country_at(i)->iso);
    }
    ck_assert(cr_country_valid("US", 2));
    ck_assert(cr_country_valid("GB", 2));
    ck_assert(!cr_country_valid("us", 2));
    ck_assert(!cr_country_valid("XX", 2));
    ck_assert(!cr_country_valid("USA", 3));
    ck_assert(!cr_country_valid("U", 1));
    ck_assert(!cr_country_valid(NULL, 2));
}
END_TEST

START_TEST(countries_json)
{
    apr_size_t len;
    const char *body = cr_countries_json(&len);
    json_object *o, *arr;
    ck_assert_ptr_nonnull(body);
    ck_assert_ptr_null(cr_json_parse(pool, body, len, 8, &o));
    arr = cr_json_get(o, "countries");
    ck_assert_int_eq((int)json_object_array_length(arr), 233);
    ck_assert_str_eq(cr_json_get_string(json_object_array_get_idx(arr, 0), "isoCode"), "AX");
    ck_assert_str_eq(cr_json_get_string(json_object_array_get_idx(arr, 0), "name"), "\xc3\x85land Islands");
}
END_TEST

/* ---- routes ---- */
static cr_route_req parse(const char *rel, const char *method, const char *args)
{
    cr_route_req rr;
    cr_route_parse(pool, rel, method, args, &rr);
    return rr;
}

START_TEST(route_table)
{
    static const struct { const char *rel, *method; cr_route_id id; const char *param; } ok[] = {
        { "countries", "GET", CR_ROUTE_COUNTRIES, NULL },
        { "payment_vias", "GET", CR_ROUTE_PAYMENT_VIAS, NULL },
        { "brands", "GET", CR_ROUTE_BRANDS, NULL },
        { "homepage", "HEAD", CR_ROUTE_HOMEPAGE, NULL },
        { "products/country/US", "GET", CR_ROUTE_PRODUCTS, "US" },
        { "products/price", "GET", CR_ROUTE_PRICE, NULL },
        { "orders/validations", "POST", CR_ROUTE_VALIDATIONS, NULL },
        { "orders", "POST", CR_ROUTE_ORDERS, NULL },
        { "orders/abc-DEF_123", "GET", CR_ROUTE_ORDER, "abc-DEF_123" },
        { "orders/abc/subscribe", "GET", CR_ROUTE_SUBSCRIBE, "abc" },
    };
    unsigned i;
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        const char *args = ok[i].id == CR_ROUTE_PRODUCTS ? "family_name=Airbnb"
                         : ok[i].id == CR_ROUTE_PRICE ? "brand_name=A&face_value=10&coin=USDC" : NULL;
        cr_route_req rr = parse(ok[i].rel, ok[i].method, args);
        ck_assert_msg(rr.status == 0, "%s: %d %s", ok[i].rel, rr.status, rr.reason);
        ck_assert_int_eq(rr.def->id, ok[i].id);
        if (ok[i].param) {
            ck_assert_str_eq(rr.path_param, ok[i].param);
        }
    }
}
END_TEST

START_TEST(route_errors)
{
    static const struct { const char *rel, *method, *args; int status; const char *detail; } bad[] = {
        { "", "GET", NULL, 404, "NOT_FOUND" },
        { "nope", "GET", NULL, 404, "NOT_FOUND" },
        { "brands/", "GET", NULL, 404, "NOT_FOUND" },
        { "orders//subscribe", "GET", NULL, 404, "NOT_FOUND" },
        { "orders/a/b/c/d", "GET", NULL, 404, "NOT_FOUND" },
        { "products/country/US/x", "GET", NULL, 404, "NOT_FOUND" },
        { "orders/../brands", "GET", NULL, 404, "NOT_FOUND" },
        { "brands", "POST", NULL, 405, "METHOD_NOT_ALLOWED" },
        { "orders", "GET", NULL, 405, "METHOD_NOT_ALLOWED" },
        { "orders/x/subscribe", "HEAD", NULL, 405, "METHOD_NOT_ALLOWED" },
        { "orders/validations", "PUT", NULL, 405, "METHOD_NOT_ALLOWED" },
        { "orders/has.dot", "GET", NULL, 400, "INVALID_ORDER_ID" },
        { "orders/has%20space", "GET", NULL, 400, "INVALID_ORDER_ID" },
        { "orders/0123456789012345678901234567890123456789012345678901234567890123456789", "GET", NULL, 400, "INVALID_ORDER_ID" },
        { "orders/x'y/subscribe", "GET", NULL, 400, "INVALID_ORDER_ID" },
        { "products/country/XX", "GET", "family_name=a", 400, "UNSUPPORTED_COUNTRY" },
        { "products/country/us", "GET", "family_name=a", 400, "INVALID_REQUEST" },
        { "products/country/zz", "GET", "family_name=a", 400, "UNSUPPORTED_COUNTRY" },
        { "products/country/USA", "GET", "family_name=a", 400, "UNSUPPORTED_COUNTRY" },
        { "products/country/US", "GET", NULL, 400, "INVALID_REQUEST" },
        { "products/country/US", "GET", "coin=USDC", 400, "INVALID_REQUEST" },
        { "brands", "GET", "country_code=ZZ", 400, "UNSUPPORTED_COUNTRY" },
        { "brands", "GET", "country_code=us", 400, "INVALID_REQUEST" },
        { "brands", "GET", "country_code=Fr", 400, "INVALID_REQUEST" },
        { "brands", "GET", "country_code=xx", 400, "UNSUPPORTED_COUNTRY" },
        { "brands", "GET", "country_code=US&country_code=GB", 400, "INVALID_REQUEST" },
        { "brands", "GET", "country_code=%ZZ", 400, "INVALID_REQUEST" },
        { "brands", "GET", "country_code=U%00", 400, "INVALID_REQUEST" },
        { "brands", "GET", "country_code=%", 400, "INVALID_REQUEST" },
        { "products/price", "GET", "brand_name=A&face_value=1e9&coin=USDC", 400, "INVALID_REQUEST" },
        { "products/price", "GET", "brand_name=A&face_value=10&coin=US%20DC", 400, "INVALID_REQUEST" },
        { "products/price", "GET", "face_value=10&coin=USDC", 400, "INVALID_REQUEST" },
        { "products/country/US", "GET", "family_name=%C3%28", 400, "INVALID_REQUEST" },
        { "products/country/US", "GET", "family_name=a&lang=EN", 400, "INVALID_REQUEST" },
    };
    unsigned i;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_route_req rr = parse(bad[i].rel, bad[i].method, bad[i].args);
        ck_assert_msg(rr.status == bad[i].status, "%s?%s: got %d", bad[i].rel,
                      bad[i].args ? bad[i].args : "", rr.status);
        ck_assert_str_eq(rr.detail, bad[i].detail);
    }
}
END_TEST

/* A supported country in the wrong case is a malformed request that names the
 * code to use; an unknown one, whatever its case, is unsupported. */
START_TEST(route_country_case)
{
    cr_route_req rr = parse("brands", "GET", "country_code=fr");
    ck_assert_int_eq(rr.status, 400);
    ck_assert_str_eq(rr.detail, "INVALID_REQUEST");
    ck_assert_str_eq(rr.field, "country_code");
    ck_assert_str_eq(rr.reason, "country codes are upper-case: FR");

    rr = parse("products/country/de", "GET", "family_name=a");
    ck_assert_str_eq(rr.detail, "INVALID_REQUEST");
    ck_assert_str_eq(rr.field, "country_code");
    ck_assert_str_eq(rr.reason, "country codes are upper-case: DE");

    rr = parse("products/price", "GET", "brand_name=A&face_value=10&coin=USDC&country_code=gB");
    ck_assert_str_eq(rr.reason, "country codes are upper-case: GB");

    rr = parse("brands", "GET", "country_code=zz");
    ck_assert_str_eq(rr.detail, "UNSUPPORTED_COUNTRY");
    ck_assert_str_eq(rr.reason, "not one of the supported countries");
    rr = parse("brands", "GET", "country_code=f1");
    ck_assert_str_eq(rr.detail, "UNSUPPORTED_COUNTRY");
}
END_TEST

START_TEST(route_upstream_paths)
{
    cr_route_req rr = parse("brands", "GET", "evil=1&x-cr-application=steal");
    ck_assert_int_eq(rr.status, 0);
    ck_assert_str_eq(cr_route_upstream_path(pool, &rr, "FR"), "/v2/brands?country_code=FR");

    rr = parse("brands", "GET", "country_code=GB");
    ck_assert_str_eq(rr.country, "GB");
    ck_assert_str_eq(cr_route_upstream_path(pool, &rr, "GB"), "/v2/brands?country_code=GB");

    rr = parse("products/country/US", "GET", "lang=en&coin=USDC&family_name=Du+Data%26more&junk=1");
    ck_assert_int_eq(rr.status, 0);
    ck_assert_str_eq(rr.country, "US");
    ck_assert_str_eq(cr_route_upstream_path(pool, &rr, "US"),
                     "/v5/products/country/US?family_name=Du%20Data%26more&coin=USDC&lang=en");

    rr = parse("products/price", "GET", "coin=BTC&face_value=100.50&brand_name=Amazon.com");
    ck_assert_int_eq(rr.status, 0);
    ck_assert_str_eq(cr_route_upstream_path(pool, &rr, "DE"),
                     "/v4/products/price?brand_name=Amazon.com&country_code=DE&face_value=100.50&coin=BTC");

    rr = parse("orders/abc/subscribe", "GET", "x=1");
    ck_assert_str_eq(cr_route_upstream_path(pool, &rr, "US"), "/v5/orders/abc/subscribe");
    rr = parse("payment_vias", "GET", "country_code=US");
    ck_assert_str_eq(cr_route_upstream_path(pool, &rr, "US"), "/v3/payment_vias");
}
END_TEST

START_TEST(order_ids)
{
    char id65[66];
    memset(id65, 'a', 65);
    id65[65] = '\0';
    ck_assert(cr_order_id_ok("a"));
    ck_assert(cr_order_id_ok("8f0c2a4e-1b6d-4c1e-9a57-3f8e2d7c6b5a"));
    ck_assert(!cr_order_id_ok(""));
    ck_assert(!cr_order_id_ok(NULL));
    ck_assert(!cr_order_id_ok(id65));
    id65[64] = '\0';
    ck_assert(cr_order_id_ok(id65));
    ck_assert(!cr_order_id_ok("a/b"));
    ck_assert(!cr_order_id_ok("a\nb"));
}
END_TEST

START_TEST(url_encode)
{
    ck_assert_str_eq(cr_url_encode(pool, "a b&c=d/e?f~g.h_i-j"), "a%20b%26c%3Dd%2Fe%3Ff~g.h_i-j");
    ck_assert_str_eq(cr_url_encode(pool, "\xc3\xa9"), "%C3%A9");
    ck_assert_str_eq(cr_url_encode(pool, ""), "");
}
END_TEST

/* ---- problem bodies and JSON ---- */
START_TEST(problem_body)
{
    apr_size_t len;
    const char *b = cr_problem_body(pool, 400, "INVALID_REQUEST", cr_problem_more("x", "why \"quoted\""),
                                    NULL, &len);
    ck_assert_str_eq(b, "{\"status\":400,\"detail\":\"INVALID_REQUEST\",\"moreDetails\":{\"field\":\"x\",\"reason\":\"why \\\"quoted\\\"\"}}");
    ck_assert_uint_eq(len, strlen(b));
    b = cr_problem_body(pool, 502, "UPSTREAM_UNAVAILABLE", NULL, "Failed to connect to upstream stream", &len);
    ck_assert_str_eq(b, "{\"status\":502,\"detail\":\"UPSTREAM_UNAVAILABLE\",\"moreDetails\":{},\"error\":\"Failed to connect to upstream stream\"}");
}
END_TEST

START_TEST(json_parse)
{
    json_object *o;
    char deep[4001];
    int i;
    ck_assert_ptr_null(cr_json_parse(pool, " {\"a\":[1,2,{\"b\":null}]} \n", 25, 64, &o));
    ck_assert(json_object_is_type(o, json_type_object));
    ck_assert_ptr_null(cr_json_parse(pool, "42", 2, 64, &o));
    ck_assert(json_object_is_type(o, json_type_int));
    ck_assert_ptr_null(cr_json_parse(pool, " true ", 6, 64, &o));
    ck_assert(json_object_is_type(o, json_type_boolean));
    ck_assert_str_eq(cr_json_parse(pool, "null", 4, 64, &o), "JSON null");
    ck_assert_ptr_nonnull(cr_json_parse(pool, "4 2", 3, 64, &o));
    ck_assert_ptr_nonnull(cr_json_parse(pool, "{\"a\":1", 6, 64, &o));
    ck_assert_ptr_null(o);
    ck_assert_ptr_nonnull(cr_json_parse(pool, "{\"a\":1} x", 9, 64, &o));
    ck_assert_ptr_nonnull(cr_json_parse(pool, "{\"a\":1}{}", 9, 64, &o));
    ck_assert_ptr_nonnull(cr_json_parse(pool, "", 0, 64, &o));
    ck_assert_ptr_nonnull(cr_json_parse(pool, "{\"a\":\"\0\"}", 8, 64, &o));
    ck_assert_ptr_nonnull(cr_json_parse(pool, "{\"a\":\"\xc3\x28\"}", 9, 64, &o));
    ck_assert_ptr_nonnull(cr_json_parse(pool, "<html>", 6, 64, &o));
    for (i = 0; i < 4000; i++) {
        deep[i] = '[';
    }
    deep[4000] = '\0';
    ck_assert_str_eq(cr_json_parse(pool, deep, 4000, 64, &o), "nesting too deep");
}
END_TEST

START_TEST(jscan_is_json)
{
    ck_assert(cr_jscan_is_json("{\"a\":1,\"a\":2}", 13));     /* duplicates pass here */
    ck_assert(cr_jscan_is_json("[1,2,{\"x\":null}]", 16));
    ck_assert(cr_jscan_is_json(" 42 ", 4));
    ck_assert(!cr_jscan_is_json("", 0));
    ck_assert(!cr_jscan_is_json("{\"a\":1", 6));                /* cut off */
    ck_assert(!cr_jscan_is_json("<html>oops</html>", 17));
    ck_assert(!cr_jscan_is_json("{\"a\":\"\xc3\x28\"}", 9));   /* bad UTF-8 */
    ck_assert(!cr_jscan_is_json("{'a':1}", 7));
}
END_TEST

/* ---- cache entries ---- */
START_TEST(centry_ids_spread)
{
    unsigned char id[CR_RECORD_ID_MAX];
    int seen[256] = { 0 }, distinct = 0, i;
    apr_size_t n;
    /* Every country's brands entry: the first byte (shmcb's subcache
     * selector) must spread over many values, not share a prefix. */
    for (i = 0; i < cr_country_count(); i++) {
        const char *name = apr_psprintf(pool, "brands:%s:https://api.cryptorefills.com",
                                        cr_country_at(i)->iso);
        n = cr_record_id(id, CR_CID_META, name);
        ck_assert_uint_eq(n, strlen(name) + 3);
        ck_assert_int_eq(id[1], 'M');
        if (!seen[id[0]]++) {
            distinct++;
        }
    }
    ck_assert_msg(distinct > 100, "only %d distinct first bytes", distinct);
    /* Long names that share a long prefix keep distinct ids. */
    {
        unsigned char a[CR_RECORD_ID_MAX], b[CR_RECORD_ID_MAX];
        char la[300], lb[300];
        apr_size_t na, nb;
        memset(la, 'k', sizeof(la) - 1);
        la[sizeof(la) - 1] = '\0';
        memcpy(lb, la, sizeof(la));
        lb[250] = 'z';
        na = cr_record_id(a, CR_CID_IDEM, la);
        nb = cr_record_id(b, CR_CID_IDEM, lb);
        ck_assert_uint_eq(na, CR_RECORD_ID_MAX);
        ck_assert_uint_eq(nb, CR_RECORD_ID_MAX);
        ck_assert(memcmp(a, b, na) != 0);
    }
    /* Same name, different kinds: same subcache, different ids. */
    {
        unsigned char a[CR_RECORD_ID_MAX], b[CR_RECORD_ID_MAX];
        cr_record_id(a, CR_CID_BODY, "x");
        cr_record_id(b, CR_CID_GZIP, "x");
        ck_assert_int_eq(a[0], b[0]);
        ck_assert_int_ne(a[1], b[1]);
    }
}
END_TEST

START_TEST(centry_meta_roundtrip)
{
    cr_record_meta m = { APR_UINT64_C(0x0123456789abcdef), APR_INT64_C(1795497427000000), 172548, 21572 }, d;
    unsigned char buf[CR_RECORD_META_LEN];
    cr_record_meta_encode(&m, buf);
    ck_assert(cr_record_meta_decode(buf, sizeof(buf), &d));
    ck_assert(d.version == m.version && d.fetched == m.fetched);
    ck_assert_uint_eq(d.body_len, m.body_len);
    ck_assert_uint_eq(d.gz_len, m.gz_len);
    ck_assert(!cr_record_meta_decode(buf, sizeof(buf) - 1, &d));
    buf[20] ^= 1;   /* a flipped bit fails the checksum */
    ck_assert(!cr_record_meta_decode(buf, sizeof(buf), &d));
}
END_TEST

START_TEST(centry_vhdr)
{
    unsigned char h[CR_RECORD_VHDR_LEN];
    cr_record_vhdr_encode(42, h);
    ck_assert(cr_record_vhdr_check(h, sizeof(h), 42));
    ck_assert(!cr_record_vhdr_check(h, sizeof(h), 43));
    ck_assert(!cr_record_vhdr_check(h, sizeof(h) - 1, 42));
}
END_TEST

START_TEST(centry_gzip_roundtrip)
{
    apr_size_t n = 200000, gzlen = 0, i;
    char *in = apr_palloc(pool, n);
    unsigned char *gz, *out = apr_palloc(pool, n);
    z_stream zs;
    for (i = 0; i < n; i++) {
        in[i] = "{\"brand\":\"Amazon.com\",\"min\":\"$5\"},"[i % 32];
    }
    gz = cr_gzip(pool, in, n, &gzlen);
    ck_assert_ptr_nonnull(gz);
    ck_assert(gzlen < n / 10);
    ck_assert_int_eq(gz[0], 0x1f);
    ck_assert_int_eq(gz[1], 0x8b);
    memset(&zs, 0, sizeof(zs));
    ck_assert_int_eq(inflateInit2(&zs, 15 + 16), Z_OK);
    zs.next_in = gz;
    zs.avail_in = (uInt)gzlen;
    zs.next_out = out;
    zs.avail_out = (uInt)n;
    ck_assert_int_eq(inflate(&zs, Z_FINISH), Z_STREAM_END);
    ck_assert_uint_eq(zs.total_out, n);
    inflateEnd(&zs);
    ck_assert(!memcmp(in, out, n));
}
END_TEST

START_TEST(centry_etags)
{
    apr_uint64_t v = APR_UINT64_C(0x00ab00cd00ef0012);
    const char *e = cr_record_etag(pool, v, 0), *g = cr_record_etag(pool, v, 1);
    ck_assert_str_eq(e, "\"00ab00cd00ef0012\"");
    ck_assert_str_eq(g, "\"00ab00cd00ef0012-gz\"");
    ck_assert(cr_record_etag_match(e, v));
    ck_assert(cr_record_etag_match(g, v));
    ck_assert(cr_record_etag_match("W/\"00ab00cd00ef0012\"", v));
    ck_assert(cr_record_etag_match("\"zzz\", \"00ab00cd00ef0012-gz\"", v));
    ck_assert(cr_record_etag_match("*", v));
    ck_assert(!cr_record_etag_match("\"00ab00cd00ef0013\"", v));
    ck_assert(!cr_record_etag_match("\"00ab00cd00ef0012-br\"", v));
    ck_assert(!cr_record_etag_match("00ab00cd00ef0012", v));
    ck_assert(!cr_record_etag_match("\"00ab00cd00ef0012", v));
    ck_assert(!cr_record_etag_match("", v));
    ck_assert(!cr_record_etag_match(NULL, v));
}
END_TEST

START_TEST(idem_records)
{
    cr_idem_rec r = { CR_IDEM_DONE, APR_UINT64_C(77), 201, 1234, "{\"order_id\":\"x\"}", 16 }, d;
    apr_size_t n;
    unsigned char *b = cr_idem_encode(pool, &r, &n);
    ck_assert_uint_eq(n, CR_IDEM_HDR_LEN + 16);
    ck_assert(cr_idem_decode(b, n, &d));
    ck_assert_int_eq(d.state, CR_IDEM_DONE);
    ck_assert_int_eq(d.status, 201);
    ck_assert(d.body_hash == 77);
    ck_assert_uint_eq(d.len, 16);
    ck_assert(!memcmp(d.body, r.body, 16));
    ck_assert(!cr_idem_decode(b, n - 1, &d));        /* truncated */
    r.state = CR_IDEM_IN_FLIGHT; r.len = 0; r.body = NULL; r.status = 0;
    r.token = 0xDEADBEEFu;
    b = cr_idem_encode(pool, &r, &n);
    ck_assert(cr_idem_decode(b, n, &d));
    ck_assert_int_eq(d.state, CR_IDEM_IN_FLIGHT);
    ck_assert_uint_eq(d.token, 0xDEADBEEFu);
    ck_assert_uint_eq(d.len, 0);
    b[4] = 9;
    ck_assert(!cr_idem_decode(b, n, &d));            /* unknown state */
}
END_TEST

START_TEST(path_below)
{
    ck_assert_str_eq(cr_path_below("/api/brands", "/api"), "/brands");
    ck_assert_str_eq(cr_path_below("/api/brands", "/api/"), "/brands");
    ck_assert_str_eq(cr_path_below("/api", "/api/"), "");
    ck_assert_ptr_null(cr_path_below("/apix/brands", "/api"));
    ck_assert_ptr_null(cr_path_below("/other", "/api"));
    ck_assert_str_eq(cr_path_below("/brands", "/"), "brands");
    ck_assert_ptr_null(cr_path_below("/brands", ""));
}
END_TEST

START_TEST(seconds)
{
    apr_interval_time_t t = 0;
    ck_assert(cr_seconds_parse("3", &t));
    ck_assert_int_eq(t, 3000000);
    ck_assert(cr_seconds_parse("0.5", &t));
    ck_assert_int_eq(t, 500000);
    ck_assert(cr_seconds_parse("1.000001", &t));
    ck_assert_int_eq(t, 1000001);
    ck_assert(cr_seconds_parse(".25", &t));
    ck_assert_int_eq(t, 250000);
    ck_assert(!cr_seconds_parse("", &t));
    ck_assert(!cr_seconds_parse(".", &t));
    ck_assert(!cr_seconds_parse("1.", &t));
    ck_assert(!cr_seconds_parse("-1", &t));
    ck_assert(!cr_seconds_parse("1e3", &t));
    ck_assert(!cr_seconds_parse("0.0000001", &t));
    ck_assert(!cr_seconds_parse("1234567890", &t));
    ck_assert_str_eq(cr_seconds_fmt(pool, 1000000), "1");
    ck_assert_str_eq(cr_seconds_fmt(pool, 1000), "0.001");
    ck_assert_str_eq(cr_seconds_fmt(pool, 0), "0");
    ck_assert_str_eq(cr_seconds_fmt(pool, 2500000), "2.5");
}
END_TEST

START_TEST(buf_grows)
{
    cr_buf b;
    int i;
    cr_buf_init(&b, pool, 4);
    ck_assert_str_eq(cr_buf_str(&b), "");
    ck_assert_uint_eq(b.len, 0);
    for (i = 0; i < 1000; i++) {
        cr_buf_append(&b, "abc", 3);
    }
    ck_assert_uint_eq(b.len, 3000);
    ck_assert_uint_eq(strlen(cr_buf_str(&b)), 3000);
    ck_assert(!strncmp(b.data + 2997, "abc", 3));
    ck_assert_uint_ge(b.cap, 3001);
    cr_buf_append(&b, "\0x", 2);        /* NULs are data */
    ck_assert_uint_eq(b.len, 3002);
    ck_assert_int_eq(b.data[3001], 'x');
    ck_assert_int_eq(b.data[3002], '\0');
}
END_TEST

static int freed;
static void count_free(void *v)
{
    freed++;
    free(v);
}

static char *dup_s(const char *s)
{
    char *d = malloc(strlen(s) + 1);
    strcpy(d, s);
    return d;
}

START_TEST(ptable_refs)
{
    cr_ptable *t;
    cr_ptable_info info, got;
    apr_pool_t *req1, *req2;
    apr_uint64_t v1 = 1, v2 = 2;
    apr_size_t bytes;
    char *a;

    freed = 0;
    ck_assert_int_eq(cr_ptable_create(&t, pool, 100, count_free), APR_SUCCESS);
    apr_pool_create(&req1, pool);
    apr_pool_create(&req2, pool);
    memset(&info, 0, sizeof(info));
    info.version = v1;
    info.size = 40;
    info.stamp = 7;
    ck_assert_int_eq(cr_ptable_put(t, "k", dup_s("one"), &info, NULL), 1);
    ck_assert_ptr_null(cr_ptable_get(t, "k", &v2, req1, NULL));    /* other version */
    ck_assert_ptr_null(cr_ptable_get(t, "nope", NULL, req1, NULL));
    a = cr_ptable_get(t, "k", &v1, req1, &got);                    /* req1 holds "one" */
    ck_assert_str_eq(a, "one");
    ck_assert_uint_eq(got.size, 40);
    ck_assert_int_eq(got.stamp, 7);
    cr_ptable_restamp(t, "k", v1, 9, 1);
    ck_assert_ptr_nonnull(cr_ptable_get(t, "k", NULL, req2, &got));
    ck_assert_int_eq(got.stamp, 9);
    ck_assert_int_eq(got.flag, 1);
    cr_ptable_restamp(t, "k", v2, 11, 0);                          /* not that version */
    ck_assert_ptr_nonnull(cr_ptable_get(t, "k", NULL, req2, &got));
    ck_assert_int_eq(got.stamp, 9);

    /* Replaced while req1 and req2 use it: freed after both let go. */
    info.version = v2;
    info.size = 50;
    ck_assert_int_eq(cr_ptable_put(t, "k", dup_s("two"), &info, NULL), 1);
    ck_assert_int_eq(freed, 0);
    ck_assert_str_eq(a, "one");
    apr_pool_clear(req1);
    ck_assert_int_eq(freed, 0);
    apr_pool_clear(req2);
    ck_assert_int_eq(freed, 1);
    ck_assert_str_eq(cr_ptable_get(t, "k", &v2, req1, NULL), "two");
    ck_assert_uint_eq(cr_ptable_count(t, &bytes), 1);
    ck_assert_uint_eq(bytes, 50);

    /* Alone over the budget: not kept; the caller's reference still holds
     * it until its pool is cleared; the table keeps what it had. */
    info.size = 101;
    ck_assert_int_eq(cr_ptable_put(t, "big", dup_s("big"), &info, req2), 0);
    ck_assert_ptr_null(cr_ptable_get(t, "big", NULL, req1, NULL));
    ck_assert_int_eq(freed, 1);
    apr_pool_clear(req2);
    ck_assert_int_eq(freed, 2);
    ck_assert_int_eq(cr_ptable_put(t, "big2", dup_s("x"), &info, NULL), 0);
    ck_assert_int_eq(freed, 3);                                     /* released at once */
    ck_assert_uint_eq(cr_ptable_count(t, &bytes), 1);

    /* Put with a user: table and user both hold it. */
    info.size = 10;
    ck_assert_int_eq(cr_ptable_put(t, "s", dup_s("s"), &info, req2), 1);
    ck_assert_uint_eq(cr_ptable_count(t, &bytes), 2);
    ck_assert_uint_eq(bytes, 60);
    apr_pool_clear(req2);
    ck_assert_int_eq(freed, 3);
    apr_pool_clear(req1);
    apr_pool_destroy(req1);
    apr_pool_destroy(req2);
}
END_TEST

/* The budget evicts the least recently used entries; an evicted value a
 * request holds lives until that request lets go; churn does not grow the
 * table's pool. */
START_TEST(ptable_lru)
{
    cr_ptable *t;
    cr_ptable_info info;
    apr_pool_t *req;
    apr_size_t bytes, max;
    apr_uint64_t ev;
    char *held;
    int i;

    freed = 0;
    ck_assert_int_eq(cr_ptable_create(&t, pool, 100, count_free), APR_SUCCESS);
    apr_pool_create(&req, pool);
    memset(&info, 0, sizeof(info));
    info.size = 30;
    ck_assert_int_eq(cr_ptable_put(t, "a", dup_s("a"), &info, NULL), 1);
    ck_assert_int_eq(cr_ptable_put(t, "b", dup_s("b"), &info, NULL), 1);
    ck_assert_int_eq(cr_ptable_put(t, "c", dup_s("c"), &info, NULL), 1);
    held = cr_ptable_get(t, "a", NULL, req, NULL);      /* a: most recent, held */
    ck_assert_str_eq(held, "a");
    ck_assert_int_eq(cr_ptable_put(t, "d", dup_s("d"), &info, NULL), 1);  /* evicts b */
    ck_assert_ptr_null(cr_ptable_get(t, "b", NULL, req, NULL));
    ck_assert_int_eq(freed, 1);
    ck_assert_uint_eq(cr_ptable_stats(t, &bytes, &max, &ev), 3);
    ck_assert_uint_eq(bytes, 90);
    ck_assert_uint_eq(max, 100);
    ck_assert_uint_eq(ev, 1);
    /* order now c (oldest), a, d: 70 bytes more evicts c and a */
    info.size = 70;
    ck_assert_int_eq(cr_ptable_put(t, "e", dup_s("e"), &info, NULL), 1);
    ck_assert_uint_eq(cr_ptable_stats(t, &bytes, NULL, &ev), 2);
    ck_assert_uint_eq(bytes, 100);
    ck_assert_uint_eq(ev, 3);
    ck_assert_int_eq(freed, 2);                 /* c freed; a still held */
    ck_assert_str_eq(held, "a");
    apr_pool_clear(req);
    ck_assert_int_eq(freed, 3);
    /* Churn over a few keys: bytes stay within the budget. */
    info.size = 40;
    for (i = 0; i < 1000; i++) {
        char key[8];
        key[0] = (char)('p' + i % 5);
        key[1] = '\0';
        ck_assert_int_eq(cr_ptable_put(t, key, dup_s(key), &info, NULL), 1);
        ck_assert_uint_le(cr_ptable_count(t, &bytes), 2);
        ck_assert_uint_le(bytes, 100);
    }
    apr_pool_destroy(req);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");

    apr_initialize();
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, countries_table);
    tcase_add_test(tc, countries_json);
    tcase_add_test(tc, route_table);
    tcase_add_test(tc, route_errors);
    tcase_add_test(tc, route_country_case);
    tcase_add_test(tc, route_upstream_paths);
    tcase_add_test(tc, order_ids);
    tcase_add_test(tc, url_encode);
    tcase_add_test(tc, problem_body);
    tcase_add_test(tc, json_parse);
    tcase_add_test(tc, jscan_is_json);
    tcase_add_test(tc, centry_ids_spread);
    tcase_add_test(tc, centry_meta_roundtrip);
    tcase_add_test(tc, centry_vhdr);
    tcase_add_test(tc, centry_gzip_roundtrip);
    tcase_add_test(tc, centry_etags);
    tcase_add_test(tc, idem_records);
    tcase_add_test(tc, path_below);
    tcase_add_test(tc, seconds);
    tcase_add_test(tc, buf_grows);
    tcase_add_test(tc, ptable_refs);
    tcase_add_test(tc, ptable_lru);
    suite_add_tcase(s, tc);
    return cr_unit_run(s);
}
