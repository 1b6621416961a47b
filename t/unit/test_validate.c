/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the checkout validator (cr_validate) and the strict JSON
 * pre-scanner (cr_jscan).  Tables run as Check loop tests, so a failing row
 * is reported by its index.  Bodies are written with ` for " to stay legible. */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <check.h>
#include "unit_run.h"
#include <apr_general.h>
#include <apr_strings.h>

#include "cr_validate.h"
#include "cr_jscan.h"
#include "cr_json.h"

static apr_pool_t *pool;

static void setup(void) { apr_pool_create(&pool, NULL); }
static void teardown(void) { apr_pool_destroy(pool); }

#define N_ELEMS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const cr_jscan_limits body_limits = { 32, 4096, 1000 };

/* Template (` for ") -> scanned and parsed JSON owned by pool. */
static json_object *J(const char *tmpl)
{
    char *s = apr_pstrdup(pool, tmpl), *c;
    json_object *o = NULL;
    apr_size_t off = 0;
    const char *why;
    for (c = s; *c; c++) {
        if (*c == '`') {
            *c = '"';
        }
    }
    why = cr_jscan_check(s, strlen(s), &body_limits, &off);
    ck_assert_msg(why == NULL, "jscan: %s at %lu in %s", why, (unsigned long)off, s);
    if (strcmp(s, "null") == 0) {
        return NULL;                     /* json-c's null; cr_json_parse refuses it */
    }
    /* cr_json_parse reports a bare top-level scalar ("42") as truncated:
     * json-c needs a delimiter after it, so give it one. */
    why = cr_json_parse(pool, apr_pstrcat(pool, s, "\n", NULL), strlen(s) + 1, 32, &o);
    ck_assert_msg(why == NULL, "json: %s in %s", why, s);
    return o;
}

/* Template (` for ") -> the document cr_jscan_parse reads (a request body). */
static cr_jdoc *D(const char *tmpl)
{
    char *s = apr_pstrdup(pool, tmpl), *c;
    cr_jdoc *d = apr_pcalloc(pool, sizeof(*d));
    apr_size_t off = 0;
    const char *why;
    for (c = s; *c; c++) {
        if (*c == '`') {
            *c = '"';
        }
    }
    why = cr_jscan_parse(pool, s, strlen(s), &body_limits, &off, d);
    ck_assert_msg(why == NULL, "jscan: %s at %lu in %s", why, (unsigned long)off, s);
    return d;
}

/* Element k of a document's top-level array, or member key of its
 * top-level object. */
static const cr_jtok *elem(const cr_jdoc *d, int k)
{
    const cr_jtok *t = cr_jdoc_first(d, d->tok);
    while (k-- > 0) {
        t = cr_jdoc_after(d, t);
    }
    return t;
}

static const cr_jtok *DG(const cr_jdoc *d, const char *key)
{
    return cr_jdoc_get(d, d->tok, key);
}

/* ------------------------------------------------------------------------ */
/* Fixtures: catalogs and payment methods                                    */
/* ------------------------------------------------------------------------ */

#define BRAND(name, kind, cat, oos) \
    "{`brand_id`:`x`,`brand`:`" name "`,`family`:`" name "`,`kind`:`" kind "`,`category`:`" cat \
    "`,`is_out_of_stock`:" oos ",`country_code`:`US`}"

static const char *US_CATALOG =
    "{`country_code`:`US`,`last_user_purchases`:[],`suggestions`:[],"
    "`categories`:["
    "{`kind`:`giftcard`,`category`:`e-commerce`,`brands`:[" BRAND("Airbnb", "giftcard", "travel", "false") ","
    BRAND("Amazon.com", "giftcard", "e-commerce", "true") "],`popular_brands`:[]},"
    "{`kind`:`mobile_recharge`,`category`:`e-sim`,`brands`:[" BRAND("Airalo", "mobile_recharge", "e-sim", "false") "]},"
    "{`kind`:`mobile_recharge`,`category`:`mobile-topup`,`brands`:[" BRAND("T-Mobile", "mobile_recharge", "mobile-topup", "false") "]}"
    "],"
    "`all_brands`:[" BRAND("Airbnb", "giftcard", "travel", "false") ","
    BRAND("Amazon.com", "giftcard", "e-commerce", "true") ","
    BRAND("Airalo", "mobile_recharge", "e-sim", "false") ","
    BRAND("T-Mobile", "mobile_recharge", "mobile-topup", "false") ","
    "{`brand`:`Du Data`,`family`:`Du`,`kind`:`mobile_recharge`,`category`:`data`,"
    "`additional_categories`:[`e-sim`],`is_out_of_stock`:false},"
    BRAND("Moon NFT", "nft_giftcard", "nft", "false") ","
    BRAND("Uber", "giftcard", "travel", "false")
    "]}";

static const char *DE_CATALOG =
    "{`country_code`:`DE`,`categories`:[],`all_brands`:[" BRAND("Zalando", "giftcard", "fashion", "false") "]}";

static const char *VIAS =
    "[{`name`:`USER_WALLET`,`available`:true,`currencies`:["
    "{`name`:`USDC`,`is_suspended`:false,`networks`:[{`name`:`Solana`,`is_suspended`:false},"
    "{`name`:`Polygon (Matic)`,`is_suspended`:true}]},"
    "{`name`:`BTC`,`is_suspended`:false,`networks`:[{`name`:`Lightning`,`is_suspended`:false},"
    "{`name`:`Mainnet`,`is_suspended`:false}]},"
    "{`name`:`DOGE`,`is_suspended`:true,`networks`:[{`name`:`Mainnet`,`is_suspended`:false}]}]},"
    "{`name`:`BINANCE_PAY`,`available`:false,`currencies`:[]},"
    "{`name`:`COINBASE`,`currencies`:[{`name`:`USDC`,`networks`:[{`name`:`Base`}]}]}]";

typedef struct {
    json_object *us, *de;
    int calls;
} catalogs;

static json_object *get_catalog(void *baton, const char *cc)
{
    catalogs *c = baton;
    c->calls++;
    if (strcmp(cc, "US") == 0) return c->us;
    if (strcmp(cc, "DE") == 0) return c->de;
    return NULL;   /* every other country: unavailable */
}

static catalogs cats;
/* The catalog tests run twice: scanning the catalog, and through the brand
 * index (cr_validate_index_catalog), which must give the same answers. */
static int use_index;
static void setup_indexed(void) { setup(); use_index = 1; }
static void teardown_indexed(void) { use_index = 0; teardown(); }

static cr_validate_ctx mkctx(int is_create)
{
    cr_validate_ctx c;
    memset(&c, 0, sizeof(c));
    cats.us = J(US_CATALOG);
    cats.de = J(DE_CATALOG);
    if (use_index) {
        ck_assert_int_eq(cr_validate_index_catalog(cats.us), 1);
        ck_assert_int_eq(cr_validate_index_catalog(cats.de), 1);
        ck_assert_int_eq(cr_validate_index_catalog(cats.us), 0);  /* once */
    }
    cats.calls = 0;
    c.max_products = 10;
    c.is_create = is_create;
    c.payment_vias = J(VIAS);
    c.catalog = get_catalog;
    c.baton = &cats;
    return c;
}

static cr_validate_result run(const char *tmpl, const cr_validate_ctx *ctx)
{
    cr_validate_result r;
    cr_validate_order(pool, D(tmpl), ctx, &r);
    return r;
}

/* The moreDetails of the n-th problem with this code (NULL if none). */
static json_object *problem(const cr_validate_result *r, const char *code, int nth)
{
    size_t i, n;
    if (r->rc != CR_PROBLEMS) {
        return NULL;
    }
    n = json_object_array_length(r->problems);
    for (i = 0; i < n; i++) {
        json_object *p = json_object_array_get_idx(r->problems, i);
        if (strcmp(cr_json_get_string(p, "problem"), code) == 0 && nth-- == 0) {
            json_object *m = cr_json_get(p, "moreDetails");
            ck_assert_ptr_nonnull(m);
            ck_assert_ptr_nonnull(cr_json_get_string(m, "field"));
            return m;
        }
    }
    return NULL;
}

static int nproblems(const cr_validate_result *r)
{
    return r->rc == CR_PROBLEMS ? (int)json_object_array_length(r->problems) : 0;
}

/* Body builders. */
#define PAY(via, coin, net) "{`type`:`via`,`payment_via`:`" via "`,`coin`:`" coin "`,`network`:`" net "`}"
#define PAY_OK PAY("USER_WALLET", "USDC", "Solana")
#define VDEL(benef, brand, cc, den) \
    "{`beneficiary_account`:`" benef "`,`brand_name`:`" brand "`,`country_code`:`" cc \
    "`,`denomination`:`" den "`,`localized_denomination`:`$` }"
#define VBODY_P(pay, dels) "{`email`:`buyer@example.com`,`payment`:" pay ",`deliveries`:[" dels "],`lang`:`en`}"
#define VBODY(dels) VBODY_P(PAY_OK, dels)
#define DV(brand, cc, den, benef) \
    "{`brand_name`:`" brand "`,`country_code`:`" cc "`,`denomination`:`" den "`,`beneficiary_account`:`" benef "`}"
#define CDEL(kind, qty, dv) "{`kind`:`" kind "`,`quantity`:" qty ",`deliverable`:" dv "}"
#define CBODY_P(pay, dels) \
    "{`deliveries`:[" dels "],`payment`:" pay ",`user`:{`email`:`buyer@example.com`,`has_accepted_newsletter`:true}," \
    "`lang`:`en`,`acquisition`:{`utm_source`:`your_platform`}}"
#define CBODY(dels) CBODY_P(PAY_OK, dels)

#define V_AIRBNB VDEL("buyer@example.com", "Airbnb", "US", "100 USD")
#define C_AIRBNB CDEL("giftcard", "1", DV("Airbnb", "US", "100", "buyer@example.com"))

/* ------------------------------------------------------------------------ */
/* Email                                                                     */
/* ------------------------------------------------------------------------ */

static const char *const emails_ok[] = {
    "user@example.com",
    "o'brien+tag@mail.example.museum",
    "first.last@example.co.uk",
    "a@b.co",
    "x@example.photography",
    "user+newsletter@example.international",
    "USER@EXAMPLE.COM",
    "user_name@example.org",
    "user-name@sub-domain.example.net",
    "1234567890@example.com",
    "!#$%&'*+-/=?^_`{|}~@example.com",
    "a.b.c.d.e@example.io",
    "user@xn--bcher-kva.de",
    "user@example.xn--p1ai",
    "user@123.example.com",
    "user@a-b.c-d.example",
    "u@sub.sub.sub.sub.example.com",
    "jos\xc3\xa9@example.com",                 /* RFC 6531 local part */
    "user@b\xc3\xbc" "cher.de",                /* U-label */
    "user@example.\xd1\x80\xd1\x84",           /* .рф */
    "tag+a+b+c@example.com",
    "x_y.z-w@example.travel",
    "d'angelo@example.it",
    "me@my-domain.community",
    "a@example.technology",
};

static const char *const emails_bad[] = {
    "",
    "plainaddress",
    "@example.com",
    "user@",
    "user@@example.com",
    "user@exa@mple.com",
    "user..name@example.com",
    ".user@example.com",
    "user.@example.com",
    "user name@example.com",
    "user@exam ple.com",
    " user@example.com",
    "user@example.com ",
    "\"quoted\"@example.com",
    "user@example",
    "user@example.",
    "user@.example.com",
    "user@example..com",
    "user@-example.com",
    "user@example-.com",
    "user@example.c",
    "user@example.123",
    "user@[192.168.0.1]",
    "user@example.com.",
    "user@exa_mple.com",
    "us(er)@example.com",
    "user@example.com\n",
    "user\\@example.com",
    "us\"er@example.com",
    "user<@example.com",
    "jos\xc3@example.com",                     /* truncated UTF-8 */
    "user@ex\xc0\xaf" "ample.com",             /* overlong */
};

START_TEST(email_accepts)
{
    const char *e = emails_ok[_i];
    ck_assert_msg(cr_validate_email(e, strlen(e)), "should accept %s", e);
}
END_TEST

START_TEST(email_rejects)
{
    const char *e = emails_bad[_i];
    ck_assert_msg(!cr_validate_email(e, strlen(e)), "should reject %s", e);
}
END_TEST

START_TEST(email_lengths)
{
    char buf[400], label[64];
    apr_size_t n;

    memset(label, 'a', 63);
    label[63] = '\0';
    /* 64-byte local part is fine, 65 is not. */
    memset(buf, 'l', 64);
    strcpy(buf + 64, "@example.com");
    ck_assert(cr_validate_email(buf, strlen(buf)));
    memset(buf, 'l', 65);
    strcpy(buf + 65, "@example.com");
    ck_assert(!cr_validate_email(buf, strlen(buf)));
    /* 63-byte labels fine, 64 not. */
    n = (apr_size_t)sprintf(buf, "u@%s.com", label);
    ck_assert(cr_validate_email(buf, n));
    n = (apr_size_t)sprintf(buf, "u@%sa.com", label);
    ck_assert(!cr_validate_email(buf, n));
    /* Total 254 accepted, 255 refused: 64 local + '@' + 189-byte domain
     * (63 + '.' + 63 + '.' + 57 + ".com"). */
    n = (apr_size_t)sprintf(buf, "%.64s@%s.%s.%.57s.com",
                            "llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll",
                            label, label, label);
    ck_assert_uint_eq(n, 254);
    ck_assert_msg(cr_validate_email(buf, n), "254: %s", buf);
    n = (apr_size_t)sprintf(buf, "%.64s@%s.%s.%.58s.com",
                            "llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll",
                            label, label, label);
    ck_assert_uint_eq(n, 255);
    ck_assert(!cr_validate_email(buf, n));
    /* Length is taken from len, not from a NUL. */
    ck_assert(!cr_validate_email("user@example.com\0x", 18));
    ck_assert(cr_validate_email("user@example.comXXX", 16));
    ck_assert(!cr_validate_email(NULL, 5));
}
END_TEST

/* ------------------------------------------------------------------------ */
/* E.164                                                                     */
/* ------------------------------------------------------------------------ */

static const char *const phones_ok[] = {
    "+14155551234", "+447911123456", "+4915112345678", "+33612345678", "+5511987654321",
    "+6834123",                 /* Niue: 7 digits */
    "+12345678", "+123456789012345", "+971501234567", "+8613812345678",
};

static const char *const phones_bad[] = {
    "", "+", "14155551234", "+0123456789", "+1 415 555 1234", "+1-415-555-1234",
    "+1(415)5551234", "+1234567890123456", "+123456", "++14155551234", "+1415555123a",
    "00441234567890", "+14155551234 ", " +14155551234", "user@example.com", "+٣٣٦١٢٣٤٥٦٧٨",
};

START_TEST(e164_accepts)
{
    ck_assert_msg(cr_validate_e164(phones_ok[_i], strlen(phones_ok[_i])), "%s", phones_ok[_i]);
}
END_TEST

START_TEST(e164_rejects)
{
    ck_assert_msg(!cr_validate_e164(phones_bad[_i], strlen(phones_bad[_i])), "%s", phones_bad[_i]);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Decimals                                                                  */
/* ------------------------------------------------------------------------ */

static const struct {
    const char *s;
    int rc;
    apr_int64_t units;
} decimals[] = {
    { "100", CR_DEC_OK, 10000000000LL },
    { "0.00032833", CR_DEC_OK, 32833 },
    { "2.5", CR_DEC_OK, 250000000 },
    { "-2.5", CR_DEC_OK, -250000000 },
    { "+7", CR_DEC_OK, 700000000 },
    { "0", CR_DEC_OK, 0 },
    { "-0", CR_DEC_OK, 0 },
    { "0.0", CR_DEC_OK, 0 },
    { "007", CR_DEC_OK, 700000000 },
    { ".5", CR_DEC_OK, 50000000 },
    { "5.", CR_DEC_OK, 500000000 },
    { "1e2", CR_DEC_OK, 10000000000LL },
    { "1.5E+2", CR_DEC_OK, 15000000000LL },
    { "1500e-1", CR_DEC_OK, 15000000000LL },
    { "1e-8", CR_DEC_OK, 1 },
    { "1.000000000000", CR_DEC_OK, 100000000 },
    { "0.12345678", CR_DEC_OK, 12345678 },
    { "92233720368.54775807", CR_DEC_OK, APR_INT64_MAX },
    { "-92233720368.54775807", CR_DEC_OK, -APR_INT64_MAX },
    { "0e999999999999999999", CR_DEC_OK, 0 },
    { "100000000000", CR_DEC_RANGE, 0 },
    { "92233720368.54775808", CR_DEC_RANGE, 0 },
    { "1e400", CR_DEC_RANGE, 0 },
    { "1E11", CR_DEC_RANGE, 0 },
    { "99999999999999999999999999999999999999", CR_DEC_RANGE, 0 },
    { "-1e400", CR_DEC_RANGE, 0 },
    { "1e99999999999999999999", CR_DEC_RANGE, 0 },
    { "1e-9", CR_DEC_PRECISION, 0 },
    { "0.123456789", CR_DEC_PRECISION, 0 },
    { "1e-400", CR_DEC_PRECISION, 0 },
    { "", CR_DEC_SYNTAX, 0 },
    { "-", CR_DEC_SYNTAX, 0 },
    { ".", CR_DEC_SYNTAX, 0 },
    { "e5", CR_DEC_SYNTAX, 0 },
    { "1e", CR_DEC_SYNTAX, 0 },
    { "1e+", CR_DEC_SYNTAX, 0 },
    { "1.2.3", CR_DEC_SYNTAX, 0 },
    { " 1", CR_DEC_SYNTAX, 0 },
    { "1 ", CR_DEC_SYNTAX, 0 },
    { "1,5", CR_DEC_SYNTAX, 0 },
    { "0x10", CR_DEC_SYNTAX, 0 },
    { "NaN", CR_DEC_SYNTAX, 0 },
    { "Infinity", CR_DEC_SYNTAX, 0 },
    { "--1", CR_DEC_SYNTAX, 0 },
    { "1_000", CR_DEC_SYNTAX, 0 },
    { "$10", CR_DEC_SYNTAX, 0 },
};

START_TEST(decimal_table)
{
    apr_int64_t u = 42;
    int rc = cr_decimal_parse(decimals[_i].s, strlen(decimals[_i].s), &u);
    ck_assert_msg(rc == decimals[_i].rc, "%s: rc %d, want %d", decimals[_i].s, rc, decimals[_i].rc);
    if (rc == CR_DEC_OK) {
        ck_assert_msg(u == decimals[_i].units, "%s: %lld", decimals[_i].s, (long long)u);
    }
}
END_TEST

START_TEST(decimal_json)
{
    apr_int64_t u;
    cr_jdoc *a = D("[1.25, 100, `7.5`, 1e400, 18446744073709551616, true, null, -3, `\\u0032.5`]");
    ck_assert_int_eq(cr_decimal_from_jdoc(pool, a, elem(a, 0), &u), CR_DEC_OK);
    ck_assert(u == 125000000);
    ck_assert_int_eq(cr_decimal_from_jdoc(pool, a, elem(a, 1), &u), CR_DEC_OK);
    ck_assert(u == 10000000000LL);
    ck_assert_int_eq(cr_decimal_from_jdoc(pool, a, elem(a, 2), &u), CR_DEC_OK);
    ck_assert(u == 750000000);
    ck_assert_int_eq(cr_decimal_from_jdoc(pool, a, elem(a, 3), &u), CR_DEC_RANGE);
    /* 2^64 read exactly from its token: out of range, never wrapped. */
    ck_assert_int_eq(cr_decimal_from_jdoc(pool, a, elem(a, 4), &u), CR_DEC_RANGE);
    ck_assert_int_eq(cr_decimal_from_jdoc(pool, a, elem(a, 5), &u), CR_DEC_SYNTAX);
    ck_assert_int_eq(cr_decimal_from_jdoc(pool, a, elem(a, 6), &u), CR_DEC_SYNTAX);
    ck_assert_int_eq(cr_decimal_from_jdoc(pool, a, elem(a, 7), &u), CR_DEC_OK);
    ck_assert(u == -300000000);
    /* a numeric string with an escape is read unescaped: "2.5" */
    ck_assert_int_eq(cr_decimal_from_jdoc(pool, a, elem(a, 8), &u), CR_DEC_OK);
    ck_assert(u == 250000000);
    ck_assert_int_eq(cr_decimal_from_jdoc(pool, a, NULL, &u), CR_DEC_SYNTAX);
    /* A partial view: len is honoured. */
    ck_assert_int_eq(cr_decimal_parse("12abc", 2, &u), CR_DEC_OK);
    ck_assert(u == 1200000000);
    ck_assert_int_eq(cr_decimal_parse("5", 1, NULL), CR_DEC_OK);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Valid bodies                                                              */
/* ------------------------------------------------------------------------ */

static const char *const valid_validations[] = {
    /* the partner doc's example (no network) */
    "{`email`:`buyer@example.com`,`payment`:{`type`:`via`,`payment_via`:`USER_WALLET`,`coin`:`USDC`},"
    "`deliveries`:[{`beneficiary_account`:`buyer@example.com`,`brand_name`:`Airbnb`,`country_code`:`US`,"
    "`denomination`:`100 USD`,`localized_denomination`:`$100`}],`lang`:`en`}",
    VBODY(V_AIRBNB),
    VBODY(VDEL("buyer@example.com", "Airalo", "US", "1 GB 7 days")),
    VBODY(VDEL("+14155551234", "T-Mobile", "US", "10 USD")),
    VBODY(VDEL("+14155551234", "Du Data", "US", "Unlimited 3 days")),
    VBODY(VDEL("someone@example.com", "Du Data", "US", "5 EUR - PIN")),
    VBODY(VDEL("0x1234abcd", "Moon NFT", "US", "10 USD")),            /* kind without a rule */
    VBODY(VDEL("anything goes", "Whatever", "FR", "10 EUR")),         /* no catalog for FR */
    VBODY(V_AIRBNB "," VDEL("b@example.com", "Zalando", "DE", "2.5 EUR")),
    /* range product, product_value as number and as string */
    VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Uber`,`country_code`:`US`,"
          "`denomination`:`range`,`product_value`:37.5}"),
    VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Uber`,`country_code`:`US`,"
          "`denomination`:`range`,`product_value`:`37.50`}"),
    /* optional members absent / null; unknown ones ignored; other langs */
    "{`payment`:{`type`:`via`,`payment_via`:`USER_WALLET`,`coin`:`BTC`,`network`:null},"
    "`deliveries`:[{`beneficiary_account`:`a@example.com`,`brand_name`:`Airbnb`,`country_code`:`US`,"
    "`denomination`:`100 USD`}],`lang`:`it`,`extra`:{`x`:[1,2]}}",
    "{`email`:null,`payment`:" PAY_OK ",`deliveries`:[" V_AIRBNB "],`lang`:`pt-BR`}",
    "{`payment`:" PAY_OK ",`deliveries`:[" V_AIRBNB "],`lang`:`zh_Hant`}",
    "{`payment`:" PAY_OK ",`deliveries`:[" V_AIRBNB "]}",
    /* payment names compared without regard to case, other vias */
    VBODY_P(PAY("user_wallet", "usdc", "solana"), V_AIRBNB),
    VBODY_P(PAY("COINBASE", "USDC", "Base"), V_AIRBNB),
    VBODY_P(PAY("USER_WALLET", "BTC", "Lightning"), V_AIRBNB),
    /* denominations as a JSON number */
    VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Airbnb`,`country_code`:`US`,`denomination`:100}"),
};

START_TEST(valid_validation_bodies)
{
    cr_validate_ctx ctx = mkctx(0);
    cr_validate_result r = run(valid_validations[_i], &ctx);
    ck_assert_msg(r.rc == CR_VALID, "rc %d (%s) field %s for %s", r.rc, r.detail ? r.detail : "",
                  r.more ? json_object_to_json_string(r.more) : "-", valid_validations[_i]);
    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_null(cr_validate_response(pool, &r, 0, NULL));
}
END_TEST

static const char *const valid_creates[] = {
    /* the partner doc's example */
    "{`deliveries`:[{`kind`:`giftcard`,`quantity`:1,`deliverable`:{`brand_name`:`Airbnb`,`country_code`:`US`,"
    "`denomination`:`100`,`beneficiary_account`:`buyer@example.com`}}],"
    "`payment`:{`type`:`via`,`coin`:`USDC`,`network`:`Solana`,`payment_via`:`USER_WALLET`},"
    "`user`:{`email`:`buyer@example.com`,`has_accepted_newsletter`:true},`lang`:`en`,"
    "`acquisition`:{`utm_source`:`your_platform`}}",
    CBODY(C_AIRBNB "," CDEL("mobile_recharge", "2", DV("T-Mobile", "US", "10 USD", "+14155551234"))),
    CBODY(CDEL("mobile_recharge", "1", DV("Airalo", "US", "1 GB 7 days", "esim.user+x@example.com"))),
    CBODY(CDEL("giftcard", "3", "{`brand_name`:`Uber`,`country_code`:`US`,`denomination`:`range`,"
               "`product_value`:`25`,`beneficiary_account`:`a@example.com`}")),
    "{`deliveries`:[" C_AIRBNB "],`payment`:" PAY_OK ",`user`:{`email`:`o'brien+tag@mail.example.museum`},"
    "`promo_code`:`WELCOME`,`refund_wallet_address`:`So1anaAddr`,`acquisition`:null,`lang`:`fr`}",
    "{`deliveries`:[" C_AIRBNB "],`payment`:" PAY_OK ",`user`:{`email`:`a@example.com`,`has_accepted_newsletter`:null}}",
    CBODY(CDEL("giftcard", "2147483647", DV("Airbnb", "US", "100", "buyer@example.com"))),
};

START_TEST(valid_create_bodies)
{
    cr_validate_ctx ctx = mkctx(1);
    cr_validate_result r = run(valid_creates[_i], &ctx);
    ck_assert_msg(r.rc == CR_VALID, "rc %d (%s) %s for %s", r.rc, r.detail ? r.detail : "",
                  r.more ? json_object_to_json_string(r.more)
                         : r.problems ? json_object_to_json_string(r.problems) : "-",
                  valid_creates[_i]);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Structural failures: 400 INVALID_REQUEST naming the first bad field       */
/* ------------------------------------------------------------------------ */

static const struct {
    int create;
    const char *body;
    const char *field;
} structural[] = {
    { 0, "[]", "body" },
    { 0, "`just a string`", "body" },
    { 0, "42", "body" },
    { 0, "null", "body" },
    { 0, "{}", "payment" },
    { 0, "{`email`:`not-an-email`,`payment`:" PAY_OK ",`deliveries`:[" V_AIRBNB "]}", "email" },
    { 0, "{`email`:42,`payment`:" PAY_OK ",`deliveries`:[" V_AIRBNB "]}", "email" },
    { 0, "{`payment`:`USDC`,`deliveries`:[" V_AIRBNB "]}", "payment" },
    { 0, "{`payment`:{`payment_via`:`USER_WALLET`,`coin`:`USDC`},`deliveries`:[" V_AIRBNB "]}", "payment.type" },
    { 0, "{`payment`:{`type`:`via`,`coin`:`USDC`},`deliveries`:[" V_AIRBNB "]}", "payment.payment_via" },
    { 0, "{`payment`:{`type`:`via`,`payment_via`:`USER_WALLET`},`deliveries`:[" V_AIRBNB "]}", "payment.coin" },
    { 0, "{`payment`:{`type`:`via`,`payment_via`:`USER_WALLET`,`coin`:``},`deliveries`:[" V_AIRBNB "]}", "payment.coin" },
    { 0, "{`payment`:{`type`:`via`,`payment_via`:`USER_WALLET`,`coin`:[`USDC`]},`deliveries`:[" V_AIRBNB "]}", "payment.coin" },
    { 0, "{`payment`:{`type`:`via`,`payment_via`:`USER_WALLET`,`coin`:`USDC`,`network`:7},`deliveries`:[" V_AIRBNB "]}", "payment.network" },
    { 0, "{`payment`:" PAY_OK "}", "deliveries" },
    { 0, "{`payment`:" PAY_OK ",`deliveries`:{}}", "deliveries" },
    { 0, "{`payment`:" PAY_OK ",`deliveries`:[]}", "deliveries" },
    { 0, "{`payment`:" PAY_OK ",`deliveries`:[" V_AIRBNB ",42]}", "deliveries[1]" },
    { 0, VBODY("{`brand_name`:`Airbnb`,`country_code`:`US`,`denomination`:`100 USD`}"), "deliveries[0].beneficiary_account" },
    { 0, VBODY("{`beneficiary_account`:5,`brand_name`:`Airbnb`,`country_code`:`US`,`denomination`:`100 USD`}"), "deliveries[0].beneficiary_account" },
    { 0, VBODY("{`beneficiary_account`:`a@example.com`,`country_code`:`US`,`denomination`:`100 USD`}"), "deliveries[0].brand_name" },
    { 0, VBODY(V_AIRBNB "," VDEL("a@example.com", "Airbnb", "us", "100 USD")), "deliveries[1].country_code" },
    { 0, VBODY(VDEL("a@example.com", "Airbnb", "XX", "100 USD")), "deliveries[0].country_code" },
    { 0, VBODY(VDEL("a@example.com", "Airbnb", "USA", "100 USD")), "deliveries[0].country_code" },
    { 0, VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Airbnb`,`country_code`:840,`denomination`:`1`}"), "deliveries[0].country_code" },
    { 0, VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Airbnb`,`country_code`:`US`}"), "deliveries[0].denomination" },
    { 0, VBODY(VDEL("a@example.com", "Airbnb", "US", "")), "deliveries[0].denomination" },
    { 0, VBODY(VDEL("a@example.com", "Airbnb", "US", "-10 USD")), "deliveries[0].denomination" },
    { 0, VBODY(VDEL("a@example.com", "Airbnb", "US", "0 USD")), "deliveries[0].denomination" },
    { 0, VBODY(VDEL("a@example.com", "Airbnb", "US", "1e400 USD")), "deliveries[0].denomination" },
    { 0, VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Airbnb`,`country_code`:`US`,`denomination`:true}"), "deliveries[0].denomination" },
    { 0, VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Airbnb`,`country_code`:`US`,`denomination`:-5}"), "deliveries[0].denomination" },
    { 0, VBODY(VDEL("a@example.com", "Uber", "US", "range")), "deliveries[0].product_value" },
    { 0, VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Uber`,`country_code`:`US`,`denomination`:`range`,`product_value`:1e400}"), "deliveries[0].product_value" },
    { 0, VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Uber`,`country_code`:`US`,`denomination`:`range`,`product_value`:-5}"), "deliveries[0].product_value" },
    { 0, VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Uber`,`country_code`:`US`,`denomination`:`range`,`product_value`:0}"), "deliveries[0].product_value" },
    { 0, VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Uber`,`country_code`:`US`,`denomination`:`range`,`product_value`:`ten`}"), "deliveries[0].product_value" },
    { 0, VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Uber`,`country_code`:`US`,`denomination`:`range`,`product_value`:`1.123456789`}"), "deliveries[0].product_value" },
    { 0, VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Uber`,`country_code`:`US`,`denomination`:`range`,`product_value`:[5]}"), "deliveries[0].product_value" },
    { 0, VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Uber`,`country_code`:`US`,`denomination`:`range`,`product_value`:99999999999999999999999}"), "deliveries[0].product_value" },
    { 0, VBODY("{`beneficiary_account`:`a@example.com`,`brand_name`:`Airbnb`,`country_code`:`US`,`denomination`:`1`,`localized_denomination`:1}"), "deliveries[0].localized_denomination" },
    { 0, "{`payment`:" PAY_OK ",`deliveries`:[" V_AIRBNB "],`lang`:5}", "lang" },
    { 0, "{`payment`:" PAY_OK ",`deliveries`:[" V_AIRBNB "],`lang`:``}", "lang" },
    { 0, "{`payment`:" PAY_OK ",`deliveries`:[" V_AIRBNB "],`lang`:`e`}", "lang" },
    { 0, "{`payment`:" PAY_OK ",`deliveries`:[" V_AIRBNB "],`lang`:`<script>`}", "lang" },
    { 0, "{`payment`:" PAY_OK ",`deliveries`:[" V_AIRBNB "],`lang`:`e n`}", "lang" },
    { 0, "{`payment`:" PAY_OK ",`deliveries`:[" V_AIRBNB "],`lang`:`english-language`}", "lang" },
    /* create shape */
    { 1, "{}", "deliveries" },
    { 1, CBODY(CDEL("giftcard", "0", DV("Airbnb", "US", "100", "a@example.com"))), "deliveries[0].quantity" },
    { 1, CBODY(CDEL("giftcard", "-1", DV("Airbnb", "US", "100", "a@example.com"))), "deliveries[0].quantity" },
    { 1, CBODY(CDEL("giftcard", "1.5", DV("Airbnb", "US", "100", "a@example.com"))), "deliveries[0].quantity" },
    { 1, CBODY(CDEL("giftcard", "1.0", DV("Airbnb", "US", "100", "a@example.com"))), "deliveries[0].quantity" },
    { 1, CBODY(CDEL("giftcard", "`1`", DV("Airbnb", "US", "100", "a@example.com"))), "deliveries[0].quantity" },
    { 1, CBODY(CDEL("giftcard", "1e2", DV("Airbnb", "US", "100", "a@example.com"))), "deliveries[0].quantity" },
    { 1, CBODY(CDEL("giftcard", "2147483648", DV("Airbnb", "US", "100", "a@example.com"))), "deliveries[0].quantity" },
    { 1, CBODY(CDEL("giftcard", "99999999999999999999", DV("Airbnb", "US", "100", "a@example.com"))), "deliveries[0].quantity" },
    { 1, CBODY(CDEL("giftcard", "null", DV("Airbnb", "US", "100", "a@example.com"))), "deliveries[0].quantity" },
    { 1, CBODY("{`quantity`:1,`deliverable`:" DV("Airbnb", "US", "100", "a@example.com") "}"), "deliveries[0].kind" },
    { 1, CBODY(C_AIRBNB ",{`kind`:`giftcard`,`quantity`:1}"), "deliveries[1].deliverable" },
    { 1, CBODY("{`kind`:`giftcard`,`quantity`:1,`deliverable`:[]}"), "deliveries[0].deliverable" },
    { 1, CBODY(CDEL("giftcard", "1", DV("Airbnb", "ZZ", "100", "a@example.com"))), "deliveries[0].deliverable.country_code" },
    { 1, CBODY(CDEL("giftcard", "1", "{`brand_name`:`Airbnb`,`country_code`:`US`,`denomination`:`100`}")), "deliveries[0].deliverable.beneficiary_account" },
    { 1, CBODY_P("{`type`:`via`,`payment_via`:`USER_WALLET`,`coin`:`USDC`}", C_AIRBNB), "payment.network" },
    { 1, "{`deliveries`:[" C_AIRBNB "],`payment`:" PAY_OK "}", "user" },
    { 1, "{`deliveries`:[" C_AIRBNB "],`payment`:" PAY_OK ",`user`:{}}", "user.email" },
    { 1, "{`deliveries`:[" C_AIRBNB "],`payment`:" PAY_OK ",`user`:{`email`:`a@b`}}", "user.email" },
    { 1, "{`deliveries`:[" C_AIRBNB "],`payment`:" PAY_OK ",`user`:{`email`:`a@example.com`,`has_accepted_newsletter`:`yes`}}", "user.has_accepted_newsletter" },
    { 1, "{`deliveries`:[" C_AIRBNB "],`payment`:" PAY_OK ",`user`:{`email`:`a@example.com`},`acquisition`:`x`}", "acquisition" },
    { 1, "{`deliveries`:[" C_AIRBNB "],`payment`:" PAY_OK ",`user`:{`email`:`a@example.com`},`promo_code`:5}", "promo_code" },
    { 1, "{`deliveries`:[" C_AIRBNB "],`payment`:" PAY_OK ",`user`:{`email`:`a@example.com`},`refund_wallet_address`:{}}", "refund_wallet_address" },
    { 1, "{`deliveries`:[" C_AIRBNB "],`payment`:" PAY_OK ",`user`:{`email`:`a@example.com`},`lang`:`1x`}", "lang" },
    /* the validations shape sent to orders is missing its create members */
    { 1, VBODY(V_AIRBNB), "deliveries[0].kind" },
};

START_TEST(structural_table)
{
    cr_validate_ctx ctx = mkctx(structural[_i].create);
    cr_validate_result r = run(structural[_i].body, &ctx);
    const char *field;
    ck_assert_msg(r.rc == CR_INVALID_REQUEST, "rc %d for %s", r.rc, structural[_i].body);
    ck_assert_int_eq(r.status, 400);
    ck_assert_str_eq(r.detail, "INVALID_REQUEST");
    field = cr_json_get_string(r.more, "field");
    ck_assert_ptr_nonnull(field);
    ck_assert_msg(strcmp(field, structural[_i].field) == 0, "field %s, want %s (%s) for %s", field,
                  structural[_i].field, cr_json_get_string(r.more, "reason"), structural[_i].body);
    ck_assert_ptr_nonnull(cr_json_get_string(r.more, "reason"));
    ck_assert_ptr_null(r.problems);
    /* No catalog is consulted for a structurally bad body. */
    ck_assert_int_eq(cats.calls, 0);
}
END_TEST

START_TEST(structural_response_shape)
{
    cr_validate_ctx ctx = mkctx(1);
    cr_validate_result r = run(CBODY(CDEL("giftcard", "0", DV("Airbnb", "US", "100", "a@example.com"))), &ctx);
    apr_size_t len;
    const char *body = cr_validate_response(pool, &r, 1, &len);
    json_object *o;
    ck_assert_ptr_null(cr_json_parse(pool, body, len, 8, &o));
    ck_assert_int_eq(json_object_get_int(cr_json_get(o, "status")), 400);
    ck_assert_str_eq(cr_json_get_string(o, "detail"), "INVALID_REQUEST");
    ck_assert_str_eq(cr_json_get_string(cr_json_get(o, "moreDetails"), "field"), "deliveries[0].quantity");
    ck_assert_str_eq(cr_json_get_string(cr_json_get(o, "moreDetails"), "reason"), "must be a positive integer");
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Problems                                                                  */
/* ------------------------------------------------------------------------ */

START_TEST(problem_not_available)
{
    cr_validate_ctx ctx = mkctx(0);
    cr_validate_result r = run(VBODY(VDEL("a@example.com", "Airbnb Premium", "US", "100 USD")), &ctx);
    json_object *m = problem(&r, "NOT_AVAILABLE_PRODUCT", 0);
    ck_assert_int_eq(r.rc, CR_PROBLEMS);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.detail, "NOT_AVAILABLE_PRODUCT");
    ck_assert_int_eq(nproblems(&r), 1);
    ck_assert_str_eq(cr_json_get_string(m, "field"), "deliveries[0].brand_name");
    ck_assert_str_eq(cr_json_get_string(m, "brand_name"), "Airbnb Premium");
    ck_assert_str_eq(cr_json_get_string(m, "country_code"), "US");
    /* exact name: case matters, and "Du" is a family, not a brand */
    r = run(VBODY(VDEL("a@example.com", "airbnb", "US", "100 USD")), &ctx);
    ck_assert_ptr_nonnull(problem(&r, "NOT_AVAILABLE_PRODUCT", 0));
    r = run(VBODY(VDEL("+14155551234", "Du", "US", "1 GB")), &ctx);
    ck_assert_ptr_nonnull(problem(&r, "NOT_AVAILABLE_PRODUCT", 0));
    /* a brand of another country */
    r = run(VBODY(VDEL("a@example.com", "Zalando", "US", "10 USD")), &ctx);
    ck_assert_ptr_nonnull(problem(&r, "NOT_AVAILABLE_PRODUCT", 0));
}
END_TEST

START_TEST(problem_out_of_stock)
{
    cr_validate_ctx ctx = mkctx(1);
    cr_validate_result r = run(CBODY(CDEL("giftcard", "1", DV("Amazon.com", "US", "50", "a@example.com"))), &ctx);
    json_object *m = problem(&r, "OUT_OF_STOCK", 0);
    ck_assert_int_eq(r.rc, CR_PROBLEMS);
    ck_assert_int_eq(r.status, 422);
    ck_assert_int_eq(nproblems(&r), 1);
    ck_assert_str_eq(cr_json_get_string(m, "field"), "deliveries[0].deliverable.brand_name");
    ck_assert_str_eq(cr_json_get_string(m, "brand_name"), "Amazon.com");
    ck_assert_str_eq(cr_json_get_string(m, "country_code"), "US");
}
END_TEST

START_TEST(problem_product_count)
{
    cr_validate_ctx ctx = mkctx(0);
    cr_validate_result r;
    json_object *m;
    ctx.max_products = 2;
    r = run(VBODY(V_AIRBNB "," V_AIRBNB "," V_AIRBNB), &ctx);
    m = problem(&r, "PRODUCT_COUNT_EXCEEDED", 0);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(nproblems(&r), 1);
    ck_assert_str_eq(cr_json_get_string(m, "field"), "deliveries");
    ck_assert_int_eq(json_object_get_int(cr_json_get(m, "max")), 2);
    ck_assert_int_eq(json_object_get_int(cr_json_get(m, "count")), 3);
    r = run(VBODY(V_AIRBNB "," V_AIRBNB), &ctx);
    ck_assert_int_eq(r.rc, CR_VALID);
    ctx.max_products = 0;   /* no limit */
    r = run(VBODY(V_AIRBNB "," V_AIRBNB "," V_AIRBNB), &ctx);
    ck_assert_int_eq(r.rc, CR_VALID);
}
END_TEST

/* Catalog work is bounded by the request: none once the count is over the
 * maximum, and at most max_countries distinct countries asked for. */
START_TEST(catalog_work_bounded)
{
    cr_validate_ctx ctx = mkctx(0);
    cr_validate_result r;
#define V_NOPE(cc) VDEL("buyer@example.com", "Nope", cc, "100 USD")
    ctx.max_products = 2;
    r = run(VBODY(V_NOPE("US") "," V_NOPE("DE") "," V_NOPE("FR")), &ctx);
    ck_assert_int_eq(cats.calls, 0);
    ck_assert_int_eq(nproblems(&r), 1);
    ck_assert_ptr_nonnull(problem(&r, "PRODUCT_COUNT_EXCEEDED", 0));
    ck_assert_int_eq(r.countries_unchecked, 0);

    ctx.max_products = 10;
    ctx.max_countries = 2;
    cats.calls = 0;
    r = run(VBODY(V_NOPE("US") "," V_NOPE("DE") "," V_NOPE("US") "," V_NOPE("FR") ","
                  V_NOPE("GB")), &ctx);
    ck_assert_int_eq(cats.calls, 2);
    ck_assert_int_eq(r.countries_unchecked, 2);
    /* the checked countries' deliveries are still judged, all of them */
    ck_assert_int_eq(nproblems(&r), 3);
    ck_assert_ptr_nonnull(problem(&r, "NOT_AVAILABLE_PRODUCT", 2));

    ctx.max_countries = 0;  /* no limit */
    cats.calls = 0;
    r = run(VBODY(V_NOPE("US") "," V_NOPE("DE") "," V_NOPE("FR")), &ctx);
    ck_assert_int_eq(cats.calls, 3);
    ck_assert_int_eq(r.countries_unchecked, 0);
#undef V_NOPE
}
END_TEST

START_TEST(problem_beneficiary_by_catalog)
{
    cr_validate_ctx ctx = mkctx(1);
    cr_validate_result r;
    json_object *m;

    /* The request says giftcard, the catalog says T-Mobile is a top-up: a phone is needed. */
    r = run(CBODY(CDEL("giftcard", "1", DV("T-Mobile", "US", "10 USD", "buyer@example.com"))), &ctx);
    m = problem(&r, "INVALID_BENEFICIARY_ACCOUNT", 0);
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(cr_json_get_string(m, "field"), "deliveries[0].deliverable.beneficiary_account");
    ck_assert_str_eq(cr_json_get_string(m, "expected"), "phone");
    ck_assert_str_eq(cr_json_get_string(m, "brand_name"), "T-Mobile");
    ck_assert_str_eq(cr_json_get_string(m, "country_code"), "US");
    /* An eSIM is mobile_recharge too, but delivered by email. */
    r = run(CBODY(CDEL("mobile_recharge", "1", DV("Airalo", "US", "1 GB", "+14155551234"))), &ctx);
    m = problem(&r, "INVALID_BENEFICIARY_ACCOUNT", 0);
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(cr_json_get_string(m, "expected"), "email");
    r = run(CBODY(CDEL("mobile_recharge", "1", DV("Airalo", "US", "1 GB", "buyer@example.com"))), &ctx);
    ck_assert_int_eq(r.rc, CR_VALID);
    /* A gift card with a phone. */
    r = run(CBODY(CDEL("giftcard", "1", DV("Airbnb", "US", "100", "+14155551234"))), &ctx);
    ck_assert_str_eq(cr_json_get_string(problem(&r, "INVALID_BENEFICIARY_ACCOUNT", 0), "expected"), "email");
    /* A brand hinting at eSIM in additional_categories takes either; neither fails. */
    r = run(CBODY(CDEL("mobile_recharge", "1", DV("Du Data", "US", "1 GB", "not a thing"))), &ctx);
    ck_assert_str_eq(cr_json_get_string(problem(&r, "INVALID_BENEFICIARY_ACCOUNT", 0), "expected"), "email_or_phone");
    /* validations shape: the field path has no "deliverable". */
    ctx.is_create = 0;
    r = run(VBODY(V_AIRBNB "," VDEL("4155551234", "T-Mobile", "US", "10 USD")), &ctx);
    m = problem(&r, "INVALID_BENEFICIARY_ACCOUNT", 0);
    ck_assert_str_eq(cr_json_get_string(m, "field"), "deliveries[1].beneficiary_account");
    ck_assert_int_eq(nproblems(&r), 1);
}
END_TEST

START_TEST(problem_payment_via)
{
    cr_validate_ctx ctx = mkctx(0);
    cr_validate_result r = run(VBODY_P(PAY("BINANCE_PAY", "USDC", "Solana"), V_AIRBNB), &ctx);
    json_object *m = problem(&r, "NOT_ALLOWED_PAYMENT_VIA", 0), *allowed;
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(cr_json_get_string(m, "field"), "payment.payment_via");
    ck_assert_str_eq(cr_json_get_string(m, "payment_via"), "BINANCE_PAY");
    allowed = cr_json_get(m, "allowed");
    ck_assert_int_eq((int)json_object_array_length(allowed), 2);
    ck_assert_str_eq(json_object_get_string(json_object_array_get_idx(allowed, 0)), "USER_WALLET");
    ck_assert_str_eq(json_object_get_string(json_object_array_get_idx(allowed, 1)), "COINBASE");
    r = run(VBODY_P(PAY("PAYPAL", "USDC", "Solana"), V_AIRBNB), &ctx);
    ck_assert_ptr_nonnull(problem(&r, "NOT_ALLOWED_PAYMENT_VIA", 0));
}
END_TEST

START_TEST(problem_coin_combination)
{
    cr_validate_ctx ctx = mkctx(1);
    cr_validate_result r = run(CBODY_P(PAY("USER_WALLET", "ETH", "Ethereum"), C_AIRBNB), &ctx);
    json_object *m = problem(&r, "UNSUPPORTED_PROTOCOL_COIN_COMBINATION", 0), *sup, *first;
    int i, n, saw_polygon = 0;
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(cr_json_get_string(m, "field"), "payment.coin");
    ck_assert_str_eq(cr_json_get_string(m, "coin"), "ETH");
    ck_assert_str_eq(cr_json_get_string(m, "network"), "Ethereum");
    ck_assert_str_eq(cr_json_get_string(m, "payment_via"), "USER_WALLET");
    sup = cr_json_get(m, "supported");
    n = (int)json_object_array_length(sup);
    ck_assert_int_eq(n, 3);   /* USDC/Solana, BTC/Lightning, BTC/Mainnet: suspended ones left out */
    first = json_object_array_get_idx(sup, 0);
    ck_assert_str_eq(cr_json_get_string(first, "coin"), "USDC");
    ck_assert_str_eq(cr_json_get_string(first, "network"), "Solana");
    for (i = 0; i < n; i++) {
        const char *nw = cr_json_get_string(json_object_array_get_idx(sup, i), "network");
        saw_polygon |= strcmp(nw, "Polygon (Matic)") == 0;
    }
    ck_assert(!saw_polygon);
    /* A known coin on a network it is not offered on. */
    r = run(CBODY_P(PAY("USER_WALLET", "BTC", "Solana"), C_AIRBNB), &ctx);
    m = problem(&r, "UNSUPPORTED_PROTOCOL_COIN_COMBINATION", 0);
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(cr_json_get_string(m, "field"), "payment.network");
    /* The coin exists on another via only. */
    r = run(CBODY_P(PAY("COINBASE", "BTC", "Lightning"), C_AIRBNB), &ctx);
    m = problem(&r, "UNSUPPORTED_PROTOCOL_COIN_COMBINATION", 0);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq((int)json_object_array_length(cr_json_get(m, "supported")), 1);
    /* validations without a network: the coin alone is checked */
    ctx.is_create = 0;
    r = run("{`payment`:{`type`:`via`,`payment_via`:`USER_WALLET`,`coin`:`BTC`},`deliveries`:[" V_AIRBNB "]}", &ctx);
    ck_assert_int_eq(r.rc, CR_VALID);
    r = run("{`payment`:{`type`:`via`,`payment_via`:`USER_WALLET`,`coin`:`XMR`},`deliveries`:[" V_AIRBNB "]}", &ctx);
    m = problem(&r, "UNSUPPORTED_PROTOCOL_COIN_COMBINATION", 0);
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_null(cr_json_get(m, "network"));
}
END_TEST

START_TEST(suspended_coin_and_network)
{
    cr_validate_ctx ctx = mkctx(1);
    cr_validate_result r = run(CBODY_P(PAY("USER_WALLET", "DOGE", "Mainnet"), C_AIRBNB), &ctx);
    apr_size_t len;
    const char *body;
    json_object *o;

    ck_assert_int_eq(r.rc, CR_SUSPENDED);
    ck_assert_int_eq(r.status, 422);
    ck_assert_str_eq(r.detail, "SUSPENDED_COIN");
    ck_assert_str_eq(cr_json_get_string(r.more, "field"), "payment.coin");
    ck_assert_str_eq(cr_json_get_string(r.more, "coin"), "DOGE");
    body = cr_validate_response(pool, &r, 1, &len);
    ck_assert_ptr_null(cr_json_parse(pool, body, len, 8, &o));
    ck_assert_int_eq(json_object_get_int(cr_json_get(o, "status")), 422);
    ck_assert_str_eq(cr_json_get_string(o, "detail"), "SUSPENDED_COIN");
    ck_assert_str_eq(cr_json_get_string(cr_json_get(o, "moreDetails"), "coin"), "DOGE");

    r = run(CBODY_P(PAY("USER_WALLET", "USDC", "Polygon (Matic)"), C_AIRBNB), &ctx);
    ck_assert_int_eq(r.rc, CR_SUSPENDED);
    ck_assert_str_eq(r.detail, "SUSPENDED_NETWORK");
    ck_assert_str_eq(cr_json_get_string(r.more, "field"), "payment.network");
    ck_assert_str_eq(cr_json_get_string(r.more, "network"), "Polygon (Matic)");
    ck_assert_str_eq(cr_json_get_string(r.more, "coin"), "USDC");

    /* a suspension outranks problems, as the upstream answers it at HTTP level */
    r = run(CBODY_P(PAY("USER_WALLET", "DOGE", "Mainnet"), CDEL("giftcard", "1", DV("Nope", "US", "1", "a@example.com"))), &ctx);
    ck_assert_int_eq(r.rc, CR_SUSPENDED);
    /* validations, suspended coin without a network */
    ctx.is_create = 0;
    r = run("{`payment`:{`type`:`via`,`payment_via`:`USER_WALLET`,`coin`:`DOGE`},`deliveries`:[" V_AIRBNB "]}", &ctx);
    ck_assert_int_eq(r.rc, CR_SUSPENDED);
    ck_assert_str_eq(r.detail, "SUSPENDED_COIN");
}
END_TEST

#define SEVERAL CBODY_P(PAY("USER_WALLET", "ETH", "Ethereum"), \
    CDEL("giftcard", "1", DV("Nope", "US", "1", "a@example.com")) "," \
    CDEL("giftcard", "1", DV("Amazon.com", "US", "50", "+14155551234")) "," \
    CDEL("giftcard", "1", DV("T-Mobile", "US", "10 USD", "a@example.com")) "," \
    CDEL("giftcard", "1", DV("Airbnb", "US", "100", "a@example.com")))
START_TEST(several_problems)
{
    cr_validate_ctx ctx = mkctx(1);
    cr_validate_result r;
    apr_size_t len;
    const char *body;
    json_object *o, *probs;

    /* Over the count: decided, no catalog asked for (the payment is still
     * judged: it costs no upstream call). */
    ctx.max_products = 3;
    r = run(SEVERAL, &ctx);
    ck_assert_int_eq(r.rc, CR_PROBLEMS);
    ck_assert_int_eq(nproblems(&r), 2);
    ck_assert_str_eq(r.detail, "PRODUCT_COUNT_EXCEEDED");
    ck_assert_ptr_nonnull(problem(&r, "UNSUPPORTED_PROTOCOL_COIN_COMBINATION", 0));
    ck_assert_int_eq(cats.calls, 0);

    ctx.max_products = 4;
    r = run(SEVERAL, &ctx);
    ck_assert_int_eq(r.rc, CR_PROBLEMS);
    ck_assert_int_eq(nproblems(&r), 5);
    ck_assert_str_eq(r.detail, "NOT_AVAILABLE_PRODUCT");
    ck_assert_str_eq(cr_json_get_string(problem(&r, "NOT_AVAILABLE_PRODUCT", 0), "field"),
                     "deliveries[0].deliverable.brand_name");
    ck_assert_str_eq(cr_json_get_string(problem(&r, "OUT_OF_STOCK", 0), "field"),
                     "deliveries[1].deliverable.brand_name");
    ck_assert_str_eq(cr_json_get_string(problem(&r, "INVALID_BENEFICIARY_ACCOUNT", 0), "field"),
                     "deliveries[1].deliverable.beneficiary_account");
    ck_assert_str_eq(cr_json_get_string(problem(&r, "INVALID_BENEFICIARY_ACCOUNT", 1), "field"),
                     "deliveries[2].deliverable.beneficiary_account");
    ck_assert_ptr_nonnull(problem(&r, "UNSUPPORTED_PROTOCOL_COIN_COMBINATION", 0));
    /* one catalog fetch for the one country */
    ck_assert_int_eq(cats.calls, 1);

    /* the orders answer: 422 with status, detail = first problem, problems */
    body = cr_validate_response(pool, &r, 1, &len);
    ck_assert_ptr_null(cr_json_parse(pool, body, len, 8, &o));
    ck_assert_int_eq(json_object_get_int(cr_json_get(o, "status")), 422);
    ck_assert_str_eq(cr_json_get_string(o, "detail"), "NOT_AVAILABLE_PRODUCT");
    probs = cr_json_get(o, "problems");
    ck_assert_int_eq((int)json_object_array_length(probs), 5);
    /* the validations answer: just the problems */
    body = cr_validate_response(pool, &r, 0, &len);
    ck_assert_ptr_null(cr_json_parse(pool, body, len, 8, &o));
    ck_assert_ptr_null(cr_json_get(o, "status"));
    ck_assert_ptr_null(cr_json_get(o, "detail"));
    ck_assert_int_eq((int)json_object_array_length(cr_json_get(o, "problems")), 5);
}
#undef SEVERAL
END_TEST

START_TEST(problems_capped)
{
    cr_validate_ctx ctx = mkctx(0);
    cr_validate_result r;
    char *dels = apr_pstrdup(pool, VDEL("a@example.com", "Nope", "US", "1"));
    int i;
    ctx.max_products = 1000;
    for (i = 1; i < 80; i++) {
        dels = apr_pstrcat(pool, dels, ",", VDEL("a@example.com", "Nope", "US", "1"), NULL);
    }
    r = run(apr_psprintf(pool, "{`payment`:%s,`deliveries`:[%s]}", PAY_OK, dels), &ctx);
    ck_assert_int_eq(r.rc, CR_PROBLEMS);
    ck_assert_int_eq(nproblems(&r), CR_VALIDATE_MAX_PROBLEMS);
    /* fields name the delivery by its index, however many digits */
    ck_assert_str_eq(cr_json_get_string(problem(&r, "NOT_AVAILABLE_PRODUCT", 10), "field"),
                     "deliveries[10].brand_name");
    ck_assert_str_eq(cr_json_get_string(problem(&r, "NOT_AVAILABLE_PRODUCT", 49), "field"),
                     "deliveries[49].brand_name");
    /* and so does a structural failure past the first ten */
    dels = apr_pstrcat(pool, dels, ",{}", NULL);
    r = run(apr_psprintf(pool, "{`payment`:%s,`deliveries`:[%s]}", PAY_OK, dels), &ctx);
    ck_assert_int_eq(r.rc, CR_INVALID_REQUEST);
    ck_assert_str_eq(cr_json_get_string(r.more, "field"), "deliveries[80].brand_name");
}
END_TEST

START_TEST(context_unavailable_skips)
{
    cr_validate_ctx ctx = mkctx(1);
    cr_validate_result r;
    const char *bad = CBODY_P(PAY("NOPE_VIA", "XMR", "Monero"),
                              CDEL("giftcard", "1", DV("Nope", "US", "1", "+14155551234")) ","
                              CDEL("giftcard", "1", DV("T-Mobile", "US", "10 USD", "a@example.com")));
    /* everything unavailable: only structure is checked */
    ctx.payment_vias = NULL;
    ctx.catalog = NULL;
    r = run(bad, &ctx);
    ck_assert_int_eq(r.rc, CR_VALID);
    /* catalogs present, payment methods unknown */
    ctx.catalog = get_catalog;
    r = run(bad, &ctx);
    ck_assert_int_eq(r.rc, CR_PROBLEMS);
    ck_assert_int_eq(nproblems(&r), 2);
    ck_assert_ptr_null(problem(&r, "NOT_ALLOWED_PAYMENT_VIA", 0));
    /* a country whose catalog is unavailable: its brands and beneficiaries are not judged */
    r = run(CBODY(CDEL("giftcard", "1", DV("Unknown Brand", "FR", "10", "+33612345678"))), &ctx);
    ck_assert_int_eq(r.rc, CR_VALID);
    /* a catalog without any brand list is treated as unavailable */
    cats.us = J("{`country_code`:`US`}");
    r = run(CBODY(CDEL("giftcard", "1", DV("Nope", "US", "1", "a@example.com"))), &ctx);
    ck_assert_int_eq(r.rc, CR_VALID);
    /* payment methods that are not an array are ignored */
    ctx.payment_vias = J("{`error`:`x`}");
    ctx.catalog = NULL;
    r = run(bad, &ctx);
    ck_assert_int_eq(r.rc, CR_VALID);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* The JSON pre-scanner                                                      */
/* ------------------------------------------------------------------------ */

/* Rows marked "json-c accepts" are taken by json-c 0.16 even with
 * JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8 (cr_json_parse's flags):
 * for those the scanner is the only guard. */
static const struct {
    const char *s;
    apr_size_t len;     /* 0: strlen */
    const char *why;    /* expected reason */
} jbad[] = {
    { "", 0, "empty body" },
    { "   \r\n\t", 0, "empty body" },
    { "{", 0, "truncated JSON" },
    { "[1,2", 0, "truncated JSON" },
    { "{\"a\":", 0, "truncated JSON" },
    { "{\"a\"", 0, "truncated JSON" },
    { "\"abc", 0, "truncated JSON" },
    { "tru", 0, "truncated JSON" },
    { "-", 0, "truncated JSON" },
    { "[\"\\u12", 0, "truncated JSON" },
    { "{\"a\":1}}", 0, "trailing data after JSON" },
    { "{} {}", 0, "trailing data after JSON" },
    { "1 2", 0, "trailing data after JSON" },
    { "{\"a\":1,}", 0, "expected a string key" },
    { "[1,]", 0, "unexpected character" },
    { "[,1]", 0, "unexpected character" },
    { "{a:1}", 0, "expected a string key" },
    { "{'a':1}", 0, "expected a string key" },   /* json-c accepts */
    { "{\"a\" 1}", 0, "expected ':'" },
    { "{\"a\":1 \"b\":2}", 0, "expected ',' or '}'" },
    { "[1 2]", 0, "expected ',' or ']'" },
    { "[01]", 0, "expected ',' or ']'" },
    { "[1.]", 0, "invalid number" },   /* json-c accepts */
    { "[.5]", 0, "unexpected character" },
    { "[+1]", 0, "unexpected character" },
    { "[1e]", 0, "invalid number" },
    { "[-a]", 0, "invalid number" },
    { "[NaN]", 0, "unexpected character" },   /* json-c accepts */
    { "[Infinity]", 0, "unexpected character" },   /* json-c accepts */
    { "[0x10]", 0, "expected ',' or ']'" },
    { "[truth]", 0, "invalid literal" },
    { "[nul]", 0, "invalid literal" },
    { "[True]", 0, "unexpected character" },
    { "[\"a\\x\"]", 0, "invalid escape in string" },
    { "[\"\\u12G4\"]", 0, "invalid \\u escape" },
    { "[\"a\tb\"]", 0, "control character in string" },   /* json-c accepts */
    { "[\"a\nb\"]", 0, "control character in string" },   /* json-c accepts */
    { "[\"a\0b\"]", 6, "NUL byte in string" },
    { "[1]\0", 4, "trailing data after JSON" },
    { "\0[1]", 4, "NUL byte" },
    { "[\"\\u0000\"]", 0, "escaped NUL in string" },   /* json-c accepts */
    { "[\"\\ud800\"]", 0, "lone surrogate escape" },   /* json-c accepts */
    { "[\"\\udc00\"]", 0, "lone surrogate escape" },   /* json-c accepts */
    { "[\"\\ud800\\u0041\"]", 0, "lone surrogate escape" },   /* json-c accepts */
    { "[\"\\ud800x\"]", 0, "lone surrogate escape" },   /* json-c accepts */
    { "[\"\\udbff\\udbff\"]", 0, "lone surrogate escape" },   /* json-c accepts */
    { "[\"\xc0\xaf\"]", 0, "invalid UTF-8" },                 /* overlong '/' - json-c accepts */
    { "[\"\xe0\x80\xaf\"]", 0, "invalid UTF-8" },             /* overlong - json-c accepts */
    { "[\"\xf0\x80\x80\xaf\"]", 0, "invalid UTF-8" },         /* overlong - json-c accepts */
    { "[\"\xed\xa0\x80\"]", 0, "invalid UTF-8" },             /* encoded surrogate - json-c accepts */
    { "[\"\xf4\x90\x80\x80\"]", 0, "invalid UTF-8" },         /* > U+10FFFF - json-c accepts */
    { "[\"\xff\"]", 0, "invalid UTF-8" },
    { "[\"\x80\"]", 0, "invalid UTF-8" },                     /* stray continuation */
    { "[\"\xc3(\"]", 0, "invalid UTF-8" },
    { "[\"\xe2\x82\"]", 0, "invalid UTF-8" },                 /* cut short by the quote */
    { "[\"\xe2\x82", 0, "truncated JSON" },
    { "\xef\xbb\xbf{}", 0, "byte order mark" },
    { "[\xc3\xa9]", 0, "unexpected character" },
    { "{\"a\":1,\"a\":2}", 0, "duplicate key" },   /* json-c accepts */
    { "{\"a\":1,\"\\u0061\":2}", 0, "duplicate key" },   /* json-c accepts */
    { "{\"\\u00e9\":1,\"\xc3\xa9\":2}", 0, "duplicate key" },   /* json-c accepts */
    { "{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}", 0, "duplicate key" },   /* json-c accepts */
    { "{\"a/b\":1,\"a\\/b\":2}", 0, "duplicate key" },   /* json-c accepts */
    { "{\"x\":{\"b\":1,\"c\":{},\"b\":2}}", 0, "duplicate key" },   /* json-c accepts */
    { "{\"payment\":{\"coin\":\"USDC\"},\"payment\":{\"coin\":\"BTC\"}}", 0, "duplicate key" },   /* json-c accepts */
    { "/* c */ {}", 0, "unexpected character" },
    { "{\"a\":1}//", 0, "trailing data after JSON" },
    { "[\x01]", 0, "control character" },
};

START_TEST(jscan_rejects)
{
    apr_size_t len = jbad[_i].len ? jbad[_i].len : strlen(jbad[_i].s), off = 12345;
    const char *why = cr_jscan_check(jbad[_i].s, len, &body_limits, &off);
    ck_assert_msg(why != NULL, "row %d accepted", _i);
    ck_assert_msg(strcmp(why, jbad[_i].why) == 0, "row %d: %s, want %s", _i, why, jbad[_i].why);
    ck_assert_msg(off <= len, "row %d: offset %lu", _i, (unsigned long)off);
    {
        /* The document builder refuses the same text for the same reason
         * at the same offset. */
        apr_size_t off2 = 54321;
        cr_jdoc d;
        const char *why2 = cr_jscan_parse(pool, jbad[_i].s, len, &body_limits, &off2, &d);
        ck_assert_msg(why2 && strcmp(why2, why) == 0 && off2 == off, "row %d: parse %s at %lu",
                      _i, why2 ? why2 : "ok", (unsigned long)off2);
    }
}
END_TEST

static const char *const jgood[] = {
    "{}", "[]", "0", "-0", "1.5e-10", "-12.25E+3", "\"\"", "true", "false", "null",
    " \t\r\n{ \"a\" : [ 1 , 2 ] } \n",
    "{\"a\":1,\"b\":2,\"A\":3}",
    "{\"a\":{\"a\":{\"a\":1}},\"b\":{\"a\":2}}",            /* same key in different objects */
    "[{\"a\":1},{\"a\":2}]",
    "{\"x\":{\"k\":1},\"k\":2}",                              /* child keys do not leak into the parent */
    "{\"a\":1,\"\\u0062\":2}",
    "[\"\\ud83d\\ude00 \xf0\x9f\x98\x80 \xe2\x82\xac \xc3\xa9 \\u20ac \\\" \\\\ \\/ \\b\\f\\n\\r\\t\"]",
    "[\"\xef\xbb\xbf\"]",                                     /* a BOM inside a string is just text */
    "[1e400]",                                                /* syntax is fine; the validator judges */
    "[18446744073709551616]",
    "{\"e\":\"\xf4\x8f\xbf\xbf\"}",                           /* U+10FFFF */
};

START_TEST(jscan_accepts)
{
    apr_size_t off = 0;
    const char *why = cr_jscan_check(jgood[_i], strlen(jgood[_i]), &body_limits, &off);
    cr_jdoc d;
    ck_assert_msg(why == NULL, "row %d: %s at %lu", _i, why, (unsigned long)off);
    ck_assert_ptr_null(cr_jscan_parse(pool, jgood[_i], strlen(jgood[_i]), &body_limits, &off, &d));
    ck_assert_msg(d.ntok >= 1 && d.tok[0].next == d.ntok, "row %d: root spans %u of %u", _i,
                  d.tok[0].next, d.ntok);
}
END_TEST

/* The document of a checked body: token types, lengths and subtrees;
 * lookups by unescaped key; strings unescaped; numbers as written. */
START_TEST(jdoc_reads)
{
    cr_jdoc *d = D("{`a`:[1,{`x`:[[],{}]},`s`],`\\u0062`:`\\u00e9\\ud83d\\ude00\\n`,"
                   "`n`:-12.5e3,`i`:-0,`t`:true,`f`:false,`z`:null,`e`:``,`o`:{}}");
    const cr_jtok *a, *t;
    apr_size_t len;
    const char *s;

    ck_assert_int_eq(d->tok[0].type, CR_JOBJECT);
    ck_assert_int_eq(d->tok[0].len, 9);
    ck_assert_int_eq(d->tok[0].next, d->ntok);
    a = DG(d, "a");
    ck_assert_int_eq(a->type, CR_JARRAY);
    ck_assert_int_eq(a->len, 3);
    /* elements in order; after() skips a whole subtree */
    t = cr_jdoc_first(d, a);
    ck_assert_int_eq(t->type, CR_JNUMBER);
    t = cr_jdoc_after(d, t);
    ck_assert_int_eq(t->type, CR_JOBJECT);
    ck_assert_int_eq(cr_jdoc_get(d, t, "x")->len, 2);
    t = cr_jdoc_after(d, t);
    ck_assert_str_eq(cr_jdoc_string(pool, d, t, NULL), "s");
    /* the escaped key "\u0062" is "b"; its value is unescaped on reading */
    ck_assert_ptr_null(DG(d, "\\u0062"));
    t = DG(d, "b");
    ck_assert_int_eq(t->type, CR_JSTRING);
    ck_assert(t->flags & CR_JTOK_ESCAPED);
    s = cr_jdoc_string(pool, d, t, &len);
    ck_assert_uint_eq(len, 7);
    ck_assert_str_eq(s, "\xc3\xa9\xf0\x9f\x98\x80\n");
    t = DG(d, "n");
    s = cr_jdoc_number(d, t, &len);
    ck_assert_uint_eq(len, 7);
    ck_assert(memcmp(s, "-12.5e3", 7) == 0);
    ck_assert(!(t->flags & CR_JTOK_INTEGER));
    ck_assert(DG(d, "i")->flags & CR_JTOK_INTEGER);
    ck_assert_int_eq(DG(d, "t")->type, CR_JTRUE);
    ck_assert_int_eq(DG(d, "f")->type, CR_JFALSE);
    ck_assert_int_eq(DG(d, "z")->type, CR_JNULL);
    ck_assert_str_eq(cr_jdoc_string(pool, d, DG(d, "e"), &len), "");
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_null(cr_jdoc_first(d, DG(d, "o")));
    ck_assert_ptr_null(cr_jdoc_after(d, DG(d, "o")));     /* the last token */
    /* wrong types and absent members */
    ck_assert_ptr_null(DG(d, "missing"));
    ck_assert_ptr_null(DG(d, "A"));
    ck_assert_ptr_null(cr_jdoc_get(d, a, "a"));
    ck_assert_ptr_null(cr_jdoc_get(d, NULL, "a"));
    ck_assert_ptr_null(cr_jdoc_string(pool, d, DG(d, "n"), NULL));
    ck_assert_ptr_null(cr_jdoc_number(d, DG(d, "b"), &len));
    ck_assert_ptr_null(cr_jdoc_first(d, DG(d, "t")));
    /* a key that is a prefix of another, and one with the same length */
    d = D("{`ab`:1,`a`:2,`b`:3}");
    ck_assert(memcmp(cr_jdoc_number(d, DG(d, "a"), &len), "2", 1) == 0);
    ck_assert(memcmp(cr_jdoc_number(d, DG(d, "b"), &len), "3", 1) == 0);
    /* a top-level scalar is one token */
    d = D("  `x`  ");
    ck_assert_int_eq(d->ntok, 1);
    ck_assert_str_eq(cr_jdoc_string(pool, d, d->tok, NULL), "x");
}
END_TEST

/* Strings are skipped a word at a time: a byte that is not plain is seen
 * wherever it falls in a word, and the rest of the string still scanned. */
START_TEST(jscan_string_words)
{
    static const struct {
        const char *bytes;
        const char *why;         /* NULL: accepted */
        apr_size_t dl;           /* its unescaped length */
    } cases[] = {
        { "\x01", "control character in string", 0 },
        { "\x1f", "control character in string", 0 },
        { "\x00", "NUL byte in string", 0 },
        { "\xff", "invalid UTF-8", 0 },
        { "\xc0\xaf", "invalid UTF-8", 0 },
        { "\x7f", NULL, 1 },
        { " ", NULL, 1 },
        { "\xc3\xa9", NULL, 2 },
        { "\xf0\x9f\x98\x80", NULL, 4 },
        { "\\n", NULL, 1 },
        { "\\u00e9", NULL, 2 },
        { "\\\"", NULL, 1 },
        { "\\x", "invalid escape in string", 0 },
    };
    int c, k;
    for (c = 0; c < N_ELEMS(cases); c++) {
        for (k = 0; k < 20; k++) {
            /* "[" + k plain bytes + the case + 19 - k plain bytes + "]" */
            apr_size_t bl = strlen(cases[c].bytes) + (cases[c].bytes[0] == 0);
            char *b = apr_palloc(pool, bl + 64);
            apr_size_t n = 0, off = 0;
            cr_jdoc d;
            const char *why;
            b[n++] = '[';
            b[n++] = '"';
            memset(b + n, 'a', (apr_size_t)k);
            n += (apr_size_t)k;
            memcpy(b + n, cases[c].bytes, bl);
            n += bl;
            memset(b + n, 'z', (apr_size_t)(19 - k));
            n += (apr_size_t)(19 - k);
            b[n++] = '"';
            b[n++] = ']';
            why = cr_jscan_parse(pool, b, n, NULL, &off, &d);
            if (cases[c].why) {
                ck_assert_msg(why && strcmp(why, cases[c].why) == 0, "case %d at %d: %s", c, k,
                              why ? why : "accepted");
                ck_assert_msg(off == 2 + (apr_size_t)k, "case %d at %d: offset %lu", c, k,
                              (unsigned long)off);
                ck_assert(!cr_jscan_is_json(b, n));
            }
            else {
                ck_assert_msg(why == NULL, "case %d at %d: %s at %lu", c, k, why, (unsigned long)off);
                ck_assert_uint_eq(d.tok[1].len, 19 + cases[c].dl);
                ck_assert(cr_jscan_is_json(b, n));
            }
        }
    }
}
END_TEST

/* Many tokens: the array grows past its first guess, every token kept. */
START_TEST(jdoc_grows)
{
    apr_size_t n = 5000, i, off = 0;
    char *b = apr_palloc(pool, 2 * n + 2);
    cr_jdoc d;
    const cr_jtok *t;
    b[0] = '[';
    for (i = 0; i < n; i++) {
        b[1 + 2 * i] = '7';
        b[2 + 2 * i] = i + 1 < n ? ',' : ']';
    }
    ck_assert_ptr_null(cr_jscan_parse(pool, b, 2 * n + 1, NULL, &off, &d));
    ck_assert_int_eq(d.ntok, n + 1);
    ck_assert_int_eq(d.tok[0].len, n);
    for (i = 0, t = cr_jdoc_first(&d, d.tok); i + 1 < n; i++) {
        t = cr_jdoc_after(&d, t);
    }
    ck_assert_int_eq(t->type, CR_JNUMBER);
    ck_assert_int_eq(t->start, 2 * n - 1);
    ck_assert_ptr_null(cr_jdoc_after(&d, t));
}
END_TEST

START_TEST(jscan_limits)
{
    apr_size_t n = 10000, off = 0, i;
    char *deep = apr_palloc(pool, 2 * n + 1), *big;
    cr_jscan_limits lim = { 4, 8, 3 };

    /* 10,000-deep nesting, arrays and objects */
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    ck_assert_str_eq(cr_jscan_check(deep, 2 * n, &body_limits, &off), "nesting too deep");
    ck_assert_uint_eq(off, 32);
    ck_assert_str_eq(cr_jscan_check(deep, 2 * n, NULL, &off), "nesting too deep");
    ck_assert_uint_eq(off, CR_JSCAN_DEFAULT_DEPTH);
    big = apr_palloc(pool, 5 * n + 16);
    for (i = 0; i < n; i++) {
        memcpy(big + 5 * i, "{\"a\":", 5);
    }
    strcpy(big + 5 * n, "1");
    ck_assert_str_eq(cr_jscan_check(big, strlen(big), &body_limits, NULL), "nesting too deep");
    /* a huge max_depth is clamped to what the stack holds */
    lim.max_depth = 1000000;
    lim.max_string = 100;
    lim.max_members = 100;
    ck_assert_str_eq(cr_jscan_check(deep, 2 * n, &lim, &off), "nesting too deep");
    ck_assert_uint_eq(off, CR_JSCAN_DEPTH_CAP);
    /* depth exactly at the limit is fine */
    lim.max_depth = 4;
    ck_assert_ptr_null(cr_jscan_check("[[[[1]]]]", 9, &lim, NULL));
    ck_assert_str_eq(cr_jscan_check("[[[[[1]]]]]", 11, &lim, NULL), "nesting too deep");

    /* a 1 MB string */
    big = apr_palloc(pool, (1 << 20) + 8);
    big[0] = '[';
    big[1] = '"';
    memset(big + 2, 'x', 1 << 20);
    memcpy(big + 2 + (1 << 20), "\"]", 2);
    ck_assert_str_eq(cr_jscan_check(big, (1 << 20) + 4, &body_limits, &off), "string too long");
    ck_assert_uint_eq(off, 1);
    ck_assert_ptr_null(cr_jscan_check(big, (1 << 20) + 4, &(cr_jscan_limits){ 4, 1 << 20, 10 }, NULL));
    /* the limit counts unescaped bytes: 4 escapes of 6 bytes are 4 bytes */
    lim.max_string = 4;
    ck_assert_ptr_null(cr_jscan_check("[\"\\u0061\\u0062\\u0063\\u0064\"]", 28, &lim, NULL));
    ck_assert_ptr_null(cr_jscan_check("[\"abcd\"]", 8, &lim, NULL));              /* exactly max */
    ck_assert_ptr_null(cr_jscan_check("{\"abcd\":\"efgh\"}", 15, &lim, NULL));
    ck_assert_str_eq(cr_jscan_check("[\"abcde\"]", 9, &lim, NULL), "string too long");
    ck_assert_str_eq(cr_jscan_check("{\"abcde\":1}", 11, &lim, NULL), "string too long");
    /* plain runs and escapes count together; the offset names the string */
    ck_assert_ptr_null(cr_jscan_check("[\"a\\nbc\"]", 9, &lim, NULL));
    ck_assert_str_eq(cr_jscan_check("[1,\"ab\\ncd\"]", 12, &lim, &off), "string too long");
    ck_assert_uint_eq(off, 3);
    ck_assert_str_eq(cr_jscan_check("[\"abc\x7f\x01\"]", 9, &lim, &off), "control character in string");
    ck_assert_uint_eq(off, 6);
    /* members */
    lim.max_string = 100;
    lim.max_members = 3;
    ck_assert_ptr_null(cr_jscan_check("[1,2,3]", 7, &lim, NULL));
    ck_assert_str_eq(cr_jscan_check("[1,2,3,4]", 9, &lim, NULL), "too many members");
    ck_assert_str_eq(cr_jscan_check("{\"a\":1,\"b\":2,\"c\":3,\"d\":4}", 25, &lim, NULL), "too many members");
    /* the offset names the byte */
    ck_assert_str_eq(cr_jscan_check("{\"a\":1,\"a\":2}", 13, NULL, &off), "duplicate key");
    ck_assert_uint_eq(off, 7);
    ck_assert_str_eq(cr_jscan_check("[\"ok\",\"\xff\"]", 10, NULL, &off), "invalid UTF-8");
    ck_assert_uint_eq(off, 7);
    ck_assert_str_eq(cr_jscan_check(NULL, 0, NULL, NULL), "empty body");
}
END_TEST

/* Objects with more keys than the scanner's automatic table (128): the
 * keys move to its pool and the hash index grows. */
static char *many_keys(int nk, const char *tail)
{
    char *s = apr_palloc(pool, (apr_size_t)nk * 32 + 64), *w = s;
    int i;
    w += sprintf(w, "{\"outer\":{\"k0\":0");
    for (i = 1; i < nk; i++) {
        w += sprintf(w, ",\"k%d\":{\"k%d\":[%d]}", i, i, i);
    }
    sprintf(w, "%s},\"k1\":1}", tail);
    return s;
}

START_TEST(jscan_many_keys)
{
    cr_jscan_limits lim = { 8, 100, 5000 };
    apr_size_t off;
    char *s;

    s = many_keys(2000, "");
    ck_assert_ptr_null(cr_jscan_check(s, strlen(s), &lim, NULL));
    /* duplicates of early and late keys, found after the table is full */
    s = many_keys(2000, ",\"\\u006b1\":1");
    ck_assert_str_eq(cr_jscan_check(s, strlen(s), &lim, &off), "duplicate key");
    ck_assert_ptr_nonnull(strstr(s + off, "\"\\u006b1\":1}"));
    s = many_keys(2000, ",\"k1999\":1");
    ck_assert_str_eq(cr_jscan_check(s, strlen(s), &lim, &off), "duplicate key");
    s = many_keys(2000, ",\"k0\":1");
    ck_assert_str_eq(cr_jscan_check(s, strlen(s), &lim, &off), "duplicate key");
    /* a near miss is not a duplicate */
    s = many_keys(2000, ",\"k2000\":1,\"K1\":2");
    ck_assert_ptr_null(cr_jscan_check(s, strlen(s), &lim, NULL));
    /* many keys across siblings, each object small: the table is reused */
    s = many_keys(600, "");
    ck_assert_ptr_null(cr_jscan_check(s, strlen(s), &lim, NULL));
}
END_TEST

/* n keys "kNNNNN" (all 6 bytes, so "many" and the control differ only in
 * shape) in one object, or the same bytes as n one-key objects in an
 * array: the scan must cost about the same. */
static char *flat_keys(int n, int one_object, const char *tail)
{
    char *s = apr_palloc(pool, (apr_size_t)n * 16 + 64), *w = s;
    int i;
    *w++ = one_object ? '{' : '[';
    for (i = 0; i < n; i++) {
        w += sprintf(w, one_object ? "%s\"k%05d\":%d" : "%s{\"k%05d\":%d}", i ? "," : "", i, i % 10);
    }
    sprintf(w, "%s%c", tail, one_object ? '}' : ']');
    return s;
}

START_TEST(jscan_linear_in_keys)
{
    cr_jscan_limits lim = { 8, 100, 20000 };
    apr_size_t probes_many, probes_ctl, off;
    char *many = flat_keys(10000, 1, ""), *ctl = flat_keys(10000, 0, "");
    int k;

    ck_assert_ptr_null(cr_jscan_check_counted(many, strlen(many), &lim, NULL, &probes_many));
    ck_assert_ptr_null(cr_jscan_check_counted(ctl, strlen(ctl), &lim, NULL, &probes_ctl));
    /* The old scanner compared each key past the 512th with every earlier
     * one: about 50,000,000 comparisons here.  Now about one per key. */
    ck_assert_msg(probes_many < 3 * 10000, "%lu probes for 10,000 keys", (unsigned long)probes_many);
    ck_assert_uint_lt(probes_ctl, 10000);
    /* Each size doubling costs each key about the same: no n^2 term. */
    for (k = 1000; k <= 16000; k *= 2) {
        char *a = flat_keys(k, 1, "");
        apr_size_t pa;
        ck_assert_ptr_null(cr_jscan_check_counted(a, strlen(a), &(cr_jscan_limits){ 8, 100, 20000 },
                                                  NULL, &pa));
        ck_assert_msg(pa < 3 * (apr_size_t)k, "%d keys: %lu probes", k, (unsigned long)pa);
    }
    /* duplicates past the automatic table are still found, at their byte */
    many = flat_keys(10000, 1, ",\"k00007\":1");
    ck_assert_str_eq(cr_jscan_check(many, strlen(many), &lim, &off), "duplicate key");
    ck_assert_str_eq(many + off, "\"k00007\":1}");
    many = flat_keys(10000, 1, ",\"k0999\\u0039\":1");
    ck_assert_str_eq(cr_jscan_check(many, strlen(many), &lim, &off), "duplicate key");
}
END_TEST

/* The scanner's bucket function (FNV-1a of the unescaped key, then
 * murmur3's finaliser), mirrored to build keys that all land in one bucket:
 * the hash is not secret, so a body can be made of such keys. */
static apr_uint32_t key_bucket(const char *k, apr_uint32_t mask)
{
    apr_uint32_t h = 2166136261u;
    for (; *k; k++) {
        h = (h ^ (unsigned char)*k) * 16777619u;
    }
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h & mask;
}

START_TEST(jscan_colliding_keys)
{
    enum { NK = 400 };
    char *s = apr_palloc(pool, 4 * NK * 24 + 64), *w = s, key[16], *whole;
    const char *keys[NK];
    apr_size_t probes, off, len;
    apr_uint32_t want = key_bucket("c0", 511);
    int n = 0, i;

    /* NK keys whose bucket is the same whatever the table size up to 4096 */
    for (i = 0; n < NK; i++) {
        sprintf(key, "c%d", i);
        if (key_bucket(key, 4095) == (key_bucket("c0", 4095)) && key_bucket(key, 511) == want) {
            keys[n++] = apr_pstrdup(pool, key);
        }
    }
    *w++ = '{';
    for (i = 0; i < NK; i++) {
        w += sprintf(w, "%s\"%s\":%d", i ? "," : "", keys[i], i % 10);
    }
    strcpy(w, "}");
    len = strlen(s);
    whole = apr_pstrdup(pool, s);
    ck_assert_ptr_null(cr_jscan_check_counted(s, len, NULL, NULL, &probes));
    /* a chain of NK would cost NK^2/2 = 80,000 probes: the object is sorted
     * at its '}' once its probe budget (8 per key + 64) is spent */
    ck_assert_msg(probes <= 8 * NK + 64 + 1, "%lu probes", (unsigned long)probes);
    /* duplicates among them are found by the sort, at the later key's byte */
    sprintf(w, ",\"%s\":1,\"%s\":2}", keys[NK - 1], keys[3]);
    ck_assert_str_eq(cr_jscan_check(s, strlen(s), NULL, &off), "duplicate key");
    ck_assert_uint_eq(off, len);
    /* ... also when spelt with an escape, and when nested */
    sprintf(w, ",\"\\u0063%s\":{\"%s\":1}}", keys[5] + 1, keys[7]);
    ck_assert_str_eq(cr_jscan_check(s, strlen(s), NULL, &off), "duplicate key");
    ck_assert_uint_eq(off, len);
    /* the same keys nested one level down, twice: children pop their keys */
    sprintf(w, ",\"x\":[%s,%s]}", whole, whole);
    ck_assert_ptr_null(cr_jscan_check(s, strlen(s), NULL, NULL));
}
END_TEST

START_TEST(jscan_long_numbers)
{
    apr_size_t off;
    char *s = apr_palloc(pool, 1024);
    /* JSONTestSuite y_number_double_close_to_zero: 81 bytes */
    const char *y = "[-0.000000000000000000000000000000000000000000000000000000000000000000000000000001]";
    ck_assert_ptr_null(cr_jscan_check(y, strlen(y), &body_limits, NULL));
    /* exactly CR_JSCAN_MAX_NUMBER bytes, then one more */
    s[0] = '[';
    memset(s + 1, '9', CR_JSCAN_MAX_NUMBER);
    strcpy(s + 1 + CR_JSCAN_MAX_NUMBER, "]");
    ck_assert_ptr_null(cr_jscan_check(s, strlen(s), &body_limits, NULL));
    memset(s + 1, '9', CR_JSCAN_MAX_NUMBER + 1);
    strcpy(s + 2 + CR_JSCAN_MAX_NUMBER, "]");
    ck_assert_str_eq(cr_jscan_check(s, strlen(s), &body_limits, &off), "number too long");
    ck_assert_uint_eq(off, 1);
}
END_TEST

/* Why long number tokens are safe to let through: none is read as a small,
 * valid value.  Quantities and amounts are read exactly from the number's
 * text. */
START_TEST(long_numbers_not_misread)
{
    char digits[301];
    cr_validate_ctx ctx;
    cr_validate_result r;
    apr_int64_t units;

    memset(digits, '0', 300);
    digits[0] = '1';
    digits[300] = '\0';
    memset(&ctx, 0, sizeof(ctx));       /* no catalog: structural checks only */
    ctx.is_create = 1;
    /* 2^64 + 1 and a 300-digit quantity: "too large", not 1 */
    r = run(CBODY(CDEL("giftcard", "18446744073709551617", DV("Airbnb", "US", "100", "buyer@example.com"))), &ctx);
    ck_assert_int_eq(r.rc, CR_INVALID_REQUEST);
    ck_assert_str_eq(cr_json_get_string(r.more, "reason"), "too large");
    r = run(apr_psprintf(pool, CBODY(CDEL("giftcard", "%s", DV("Airbnb", "US", "100", "buyer@example.com"))), digits), &ctx);
    ck_assert_int_eq(r.rc, CR_INVALID_REQUEST);
    ck_assert_str_eq(cr_json_get_string(r.more, "reason"), "too large");
    /* int64 edges: 2^31-1 is the largest quantity, 2^31 and -2^63-1 are not */
    r = run(CBODY(CDEL("giftcard", "2147483647", DV("Airbnb", "US", "100", "buyer@example.com"))), &ctx);
    ck_assert_int_eq(r.rc, CR_VALID);
    r = run(CBODY(CDEL("giftcard", "2147483648", DV("Airbnb", "US", "100", "buyer@example.com"))), &ctx);
    ck_assert_str_eq(cr_json_get_string(r.more, "reason"), "too large");
    r = run(CBODY(CDEL("giftcard", "-9223372036854775809", DV("Airbnb", "US", "100", "buyer@example.com"))), &ctx);
    ck_assert_str_eq(cr_json_get_string(r.more, "reason"), "must be a positive integer");
    r = run(CBODY(CDEL("giftcard", "-0", DV("Airbnb", "US", "100", "buyer@example.com"))), &ctx);
    ck_assert_str_eq(cr_json_get_string(r.more, "reason"), "must be a positive integer");
    r = run(apr_psprintf(pool, CBODY(CDEL("giftcard", "-%s", DV("Airbnb", "US", "100", "buyer@example.com"))), digits), &ctx);
    ck_assert_str_eq(cr_json_get_string(r.more, "reason"), "must be a positive integer");
    r = run(CBODY(CDEL("giftcard", "1.0", DV("Airbnb", "US", "100", "buyer@example.com"))), &ctx);
    ck_assert_str_eq(cr_json_get_string(r.more, "reason"), "must be a positive integer");
    /* amounts: a long number is out of range or too precise, never truncated */
    {
        cr_jdoc *d = D(apr_psprintf(pool, "{`v`:%s}", digits));
        ck_assert_int_eq(cr_decimal_from_jdoc(pool, d, DG(d, "v"), &units), CR_DEC_RANGE);
        d = D(apr_psprintf(pool, "{`v`:%s.5}", digits));
        ck_assert_int_eq(cr_decimal_from_jdoc(pool, d, DG(d, "v"), &units), CR_DEC_RANGE);
        d = D("{`v`:1.000000000000000000000000000000000000000000000000000000000000000000000000000001}");
        ck_assert_int_eq(cr_decimal_from_jdoc(pool, d, DG(d, "v"), &units), CR_DEC_PRECISION);
        d = D("{`v`:100.000000000000000000000000000000000000000000000000000000000000000000000000000000}");
        ck_assert_int_eq(cr_decimal_from_jdoc(pool, d, DG(d, "v"), &units), CR_DEC_OK);
        ck_assert_int_eq(units, 10000000000LL);
        /* 1e20 and 1e20+1 are different amounts (both out of range here),
         * and the exact text is what is read */
        d = D("[100000000000000000000, 100000000000000000001, 9.2e10, 92233720368.54775807]");
        ck_assert_int_eq(cr_decimal_from_jdoc(pool, d, elem(d, 0), &units), CR_DEC_RANGE);
        ck_assert_int_eq(cr_decimal_from_jdoc(pool, d, elem(d, 1), &units), CR_DEC_RANGE);
        ck_assert_int_eq(cr_decimal_from_jdoc(pool, d, elem(d, 2), &units), CR_DEC_OK);
        ck_assert(units == 9200000000000000000LL);
        ck_assert_int_eq(cr_decimal_from_jdoc(pool, d, elem(d, 3), &units), CR_DEC_OK);
        ck_assert(units == APR_INT64_MAX);
    }
}
END_TEST

static void add_validate_tests(TCase *tc)
{
    tcase_add_loop_test(tc, valid_validation_bodies, 0, N_ELEMS(valid_validations));
    tcase_add_loop_test(tc, valid_create_bodies, 0, N_ELEMS(valid_creates));
    tcase_add_loop_test(tc, structural_table, 0, N_ELEMS(structural));
    tcase_add_test(tc, structural_response_shape);
    tcase_add_test(tc, problem_not_available);
    tcase_add_test(tc, problem_out_of_stock);
    tcase_add_test(tc, problem_product_count);
    tcase_add_test(tc, catalog_work_bounded);
    tcase_add_test(tc, problem_beneficiary_by_catalog);
    tcase_add_test(tc, problem_payment_via);
    tcase_add_test(tc, problem_coin_combination);
    tcase_add_test(tc, suspended_coin_and_network);
    tcase_add_test(tc, several_problems);
    tcase_add_test(tc, problems_capped);
    tcase_add_test(tc, context_unavailable_skips);
}

int main(void)
{
    Suite *s = suite_create("validate");
    TCase *tc;

    apr_initialize();

    tc = tcase_create("helpers");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, email_accepts, 0, N_ELEMS(emails_ok));
    tcase_add_loop_test(tc, email_rejects, 0, N_ELEMS(emails_bad));
    tcase_add_test(tc, email_lengths);
    tcase_add_loop_test(tc, e164_accepts, 0, N_ELEMS(phones_ok));
    tcase_add_loop_test(tc, e164_rejects, 0, N_ELEMS(phones_bad));
    tcase_add_loop_test(tc, decimal_table, 0, N_ELEMS(decimals));
    tcase_add_test(tc, decimal_json);
    suite_add_tcase(s, tc);

    /* The catalog tests, once scanning catalogs and once through the
     * brand index: both must give the same answers. */
    tc = tcase_create("validate");
    tcase_add_checked_fixture(tc, setup, teardown);
    add_validate_tests(tc);
    suite_add_tcase(s, tc);
    tc = tcase_create("validate-indexed");
    tcase_add_checked_fixture(tc, setup_indexed, teardown_indexed);
    add_validate_tests(tc);
    suite_add_tcase(s, tc);

    tc = tcase_create("jscan");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, jscan_rejects, 0, N_ELEMS(jbad));
    tcase_add_loop_test(tc, jscan_accepts, 0, N_ELEMS(jgood));
    tcase_add_test(tc, jdoc_reads);
    tcase_add_test(tc, jdoc_grows);
    tcase_add_test(tc, jscan_string_words);
    tcase_add_test(tc, jscan_limits);
    tcase_add_test(tc, jscan_many_keys);
    tcase_add_test(tc, jscan_linear_in_keys);
    tcase_add_test(tc, jscan_colliding_keys);
    tcase_add_test(tc, jscan_long_numbers);
    tcase_add_test(tc, long_numbers_not_misread);
    suite_add_tcase(s, tc);

    return cr_unit_run(s);
}
