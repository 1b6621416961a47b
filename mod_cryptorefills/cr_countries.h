/* SPDX-License-Identifier: Apache-2.0 */
/* The 233 countries the upstream serves (its available-countries list). */
#ifndef CR_COUNTRIES_H
#define CR_COUNTRIES_H

#include <apr_pools.h>

typedef struct cr_country_t {
    const char *iso;   /* ISO 3166-1 alpha-2, uppercase */
    const char *name;  /* English name, UTF-8 */
} cr_country_t;

/* Number of supported countries (233). */
int cr_country_count(void);

/* The i-th country in the upstream's own order; NULL past the end. */
const cr_country_t *cr_country_at(int i);

/* Non-zero when cc is exactly two uppercase letters naming a supported
 * country.  cc need not be NUL-terminated after two bytes: len is given. */
int cr_country_valid(const char *cc, apr_size_t len);

/* Non-zero when s is exactly two ASCII uppercase letters (shape only). */
int cr_country_shape_ok(const char *s);

/* The countries route's body, {"countries":[{"isoCode":..,"name":..},..]},
 * built once: the returned buffer is static and immutable. */
const char *cr_countries_json(apr_size_t *len);

#endif
