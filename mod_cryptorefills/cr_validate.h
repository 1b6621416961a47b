/* SPDX-License-Identifier: Apache-2.0 */
/* Local validation of checkout bodies (POST orders/validations and POST
 * orders) before any upstream call.  Plain C + APR + json-c: no httpd
 * header, unit-tested on its own (t/unit/test_validate.c).
 *
 * Guiding rule: never refuse what the upstream would accept (a false
 * refusal is a lost sale).  Where the upstream's rule is unknown the check
 * is left to the upstream; where a piece of context (a country's catalog,
 * the payment methods) is unavailable, the checks that need it are skipped.
 *
 * The body is read from the document cr_jscan_parse() built while it
 * checked the text (duplicate keys, escaped NULs, lone surrogates, UTF-8,
 * limits: refused there).  Numbers are read from their tokens as written.
 * Catalogs and payment methods stay json-c trees: they are parsed once per
 * refresh and shared, not per request.
 *
 * Field policy (beyond the partner doc's examples):
 *  - required, both shapes: payment{type, payment_via, coin}, deliveries (1+);
 *    per delivery brand_name, country_code (one of the 233), denomination,
 *    beneficiary_account; create also deliveries[].kind, deliveries[].quantity
 *    (integer 1..2^31-1), deliveries[].deliverable, payment.network,
 *    user{email}.
 *  - optional, type-checked when present (null counts as absent): email
 *    (validations; shapes.md: only create needs an email), lang,
 *    localized_denomination (display text the upstream has no use for),
 *    product_value (required when denomination is "range"),
 *    user.has_accepted_newsletter (boolean), promo_code,
 *    refund_wallet_address (strings), acquisition (object).
 *  - unknown members are ignored: a request that passes goes upstream as
 *    received, byte for byte.
 *  - amounts (product_value, a numeric denomination) may be JSON numbers or
 *    numeric strings and must parse as positive decimals (cr_decimal_parse).
 *    A denomination that does not start like a number ("1 GB 7 days" does,
 *    "Unlimited 3 days" does not) is checked for its leading number only.
 *  - emails: cr_validate_email().  An invalid email/user.email is a 400
 *    INVALID_REQUEST; an invalid beneficiary is the INVALID_BENEFICIARY_ACCOUNT
 *    problem.
 *  - lang: the upstream knows en es de fr pt tr and falls back to English for
 *    anything else, so any well-formed language tag is accepted ("en",
 *    "pt-BR", "zh_Hant"): 2-3 ASCII letters, then optional '-'/'_' subtags of
 *    1-8 ASCII letters or digits, 35 bytes at most.  Only malformed values
 *    (empty, a number, "<script>", "e n") are refused.
 *  - coin, network and payment_via names compare without regard to ASCII
 *    case (the upstream's tickers are uppercase; a storefront sending "usdc"
 *    is left for the upstream to judge); brand names compare exactly.
 *
 * Beneficiary kinds, from the country's catalog (the request's own `kind`
 * does not decide it): kind giftcard -> email; kind mobile_recharge with
 * category "e-sim" -> email; other mobile_recharge -> E.164 phone, unless
 * the brand's additional_categories or its catalog section say "e-sim"
 * (then either is accepted); any other kind (nft_giftcard, ...) or a brand
 * missing from the catalog -> not checked.  No catalog -> not checked. */
#ifndef CR_VALIDATE_H
#define CR_VALIDATE_H

#include <apr_pools.h>
#include <json-c/json.h>

#include "cr_jscan.h"

/* Parsed /v2/brands?country_code=CC object, or NULL when unavailable (then
 * the catalog checks are skipped for that country).  Called at most once per
 * distinct country of a request, for at most ctx->max_countries countries,
 * and not at all once the delivery count is over ctx->max_products: the
 * work of one request is bounded by the request, not by the catalogs.  The validator takes no reference: the
 * object must outlive the cr_validate_order() call.
 *
 * Catalogs and payment_vias are only read (member lookups; no reference
 * counting, no serialisation, which would write json-c's print buffer), so
 * one parsed copy may be shared by threads. */
typedef json_object *(*cr_catalog_fn)(void *baton, const char *country_code);

typedef struct cr_validate_ctx {
    int max_products;            /* CryptorefillsMaxProducts; <= 0: no limit */
    int is_create;               /* 1: POST orders shape; 0: POST orders/validations shape */
    json_object *payment_vias;   /* parsed /v3/payment_vias array, or NULL: payment checks skipped */
    cr_catalog_fn catalog;       /* NULL: every catalog check skipped */
    void *baton;
    int max_countries;           /* catalogs asked for at most this many distinct countries
                                    (the first ones in document order); the deliveries of
                                    any further country skip their catalog checks (left to
                                    the upstream); <= 0: no limit */
} cr_validate_ctx;

typedef enum {
    CR_VALID = 0,          /* nothing found: forward the body as received */
    CR_INVALID_REQUEST,    /* structural: 400 {"status":400,"detail":"INVALID_REQUEST","moreDetails":more} */
    CR_PROBLEMS,           /* business problems: {"problems": problems} */
    CR_SUSPENDED           /* 422 {"status":422,"detail":"SUSPENDED_COIN"|"SUSPENDED_NETWORK","moreDetails":more} */
} cr_validate_rc;

typedef struct cr_validate_result {
    cr_validate_rc rc;
    json_object *problems;   /* CR_PROBLEMS: array of {"problem":CODE,"moreDetails":{...}}, owned by the pool */
    const char *detail;      /* CR_INVALID_REQUEST: "INVALID_REQUEST"; CR_SUSPENDED: "SUSPENDED_COIN"/"SUSPENDED_NETWORK";
                                CR_PROBLEMS: the first problem's code */
    json_object *more;       /* moreDetails for INVALID_REQUEST / SUSPENDED, e.g.
                                {"field":"deliveries[0].quantity","reason":"..."}, owned by the pool */
    int status;              /* 400 INVALID_REQUEST, 422 SUSPENDED; CR_PROBLEMS: 422 when
                                is_create, else 200 (the caller may override); CR_VALID: 0 */
    int countries_unchecked; /* distinct countries whose catalog was not asked for because
                                they were over ctx->max_countries (left to the upstream);
                                once PRODUCT_COUNT_EXCEEDED is decided no catalog is asked
                                for and none counts here (the body is refused anyway) */
} cr_validate_result;

/* Build a brand-name index for a parsed catalog, attached to it (json-c
 * userdata, freed with the object), so lookups don't walk the catalog.
 * Call before the catalog is shared between threads.  Returns 1 when an
 * index was attached.  Validation gives the same answers with or without. */
int cr_validate_index_catalog(json_object *cat);

/* Most problems listed for one request; further ones are dropped. */
#define CR_VALIDATE_MAX_PROBLEMS 50

/* Validate body (the request, as cr_jscan_parse() read it) against ctx.  Structural failures stop
 * at the first field (document order); otherwise every problem found is
 * listed.  A suspended coin or network (top-level in the upstream's answers)
 * takes precedence over problems.  All json objects in *out are owned by p. */
void cr_validate_order(apr_pool_t *p, const cr_jdoc *body, const cr_validate_ctx *ctx,
                       cr_validate_result *out);

/* The response body for a result other than CR_VALID, in the shapes of
 * CONTRACT.md: {"status","detail","moreDetails"} for INVALID_REQUEST and
 * SUSPENDED; {"problems":[...]} for problems on orders/validations, and
 * {"status":422,"detail":<first problem>,"problems":[...]} on orders.
 * Allocated in p; NULL for CR_VALID. */
const char *cr_validate_response(apr_pool_t *p, const cr_validate_result *res, int is_create,
                                 apr_size_t *len);

/* Non-zero when s[0..len) is an email address the module accepts:
 *  - at most 254 bytes, exactly one '@' (quoted local parts are refused);
 *  - local part 1..64 bytes of atext (A-Z a-z 0-9 ! # $ % & ' * + - / = ? ^ _ ` { | } ~)
 *    or UTF-8 (RFC 6531), dot-separated with no empty atom (no leading,
 *    trailing or double dot);
 *  - domain at most 253 bytes, two labels or more, each 1..63 bytes of
 *    letters, digits, '-' (not first or last) or UTF-8; the last label (TLD)
 *    letters/UTF-8 only, or an "xn--" A-label; no IP literals, no trailing dot.
 * The text must be valid UTF-8 (the JSON scanner guarantees it for bodies). */
int cr_validate_email(const char *s, apr_size_t len);

/* Non-zero when s[0..len) is an E.164 number: '+', a first digit 1-9, then
 * digits only, 7 to 15 digits in all.  (7, not 8: Niue and Tokelau, both
 * among the 233 countries, have 7-digit international numbers.) */
int cr_validate_e164(const char *s, apr_size_t len);

/* Decimal amounts as fixed point: value * 10^CR_DECIMAL_SCALE in an int64. */
#define CR_DECIMAL_SCALE 8
typedef enum {
    CR_DEC_OK = 0,
    CR_DEC_SYNTAX,      /* not [+-]digits[.digits][e[+-]digits] (".5" and "5." allowed) */
    CR_DEC_RANGE,       /* |value| >= 2^63 / 10^8 (about 9.2e10) */
    CR_DEC_PRECISION    /* a non-zero digit below 10^-8 */
} cr_decimal_rc;

/* Parse s[0..len) without floating point into *units (may be NULL);
 * returns a cr_decimal_rc.  No white space.  Exponents are applied exactly
 * ("1.5e2" -> 150, "1e400" -> CR_DEC_RANGE, "0e999999" -> 0, "1e-9" ->
 * CR_DEC_PRECISION); zeros below the scale are fine ("1.000000000"). */
int cr_decimal_parse(const char *s, apr_size_t len, apr_int64_t *units);

/* Same, for a JSON number (its token as written) or a numeric string of
 * document d (unescaped into p when it has escapes); CR_DEC_SYNTAX for any
 * other type or a NULL v. */
int cr_decimal_from_jdoc(apr_pool_t *p, const cr_jdoc *d, const cr_jtok *v, apr_int64_t *units);

#endif
