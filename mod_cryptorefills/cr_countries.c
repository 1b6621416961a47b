/* SPDX-License-Identifier: Apache-2.0 */
/* The country table: a generated, sorted array searched by bisection. */
#include <string.h>
#include <stdlib.h>
#include <stdio.h>
#include <apr_strings.h>

#include "cr_countries.h"
#include "cr_countries_table.h"

#define CR_NCOUNTRIES ((int)(sizeof(cr_countries_upstream_order) / sizeof(cr_countries_upstream_order[0])))

int cr_country_count(void)
{
    return CR_NCOUNTRIES;
}

const cr_country_t *cr_country_at(int i)
{
    if (i < 0 || i >= CR_NCOUNTRIES) {
        return NULL;
    }
    return &cr_countries_upstream_order[i];
}

int cr_country_shape_ok(const char *s)
{
    return s && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' && s[2] == '\0';
}

int cr_country_valid(const char *cc, apr_size_t len)
{
    int lo = 0, hi = (int)(sizeof(cr_country_codes_sorted) / sizeof(cr_country_codes_sorted[0])) - 1;

    if (!cc || len != 2 || cc[0] < 'A' || cc[0] > 'Z' || cc[1] < 'A' || cc[1] > 'Z') {
        return 0;
    }
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int d = memcmp(cc, cr_country_codes_sorted[mid], 2);
        if (d == 0) {
            return 1;
        }
        if (d < 0) {
            hi = mid - 1;
        }
        else {
            lo = mid + 1;
        }
    }
    return 0;
}

/* Names in the table are already JSON-safe (the generator escapes quotes and
 * backslashes; the source has no control characters), so the body is a plain
 * concatenation.  It is built on first use, which the module makes happen in
 * post_config, before any child or thread exists; afterwards it is read-only. */
static char *countries_body;
static apr_size_t countries_len;

const char *cr_countries_json(apr_size_t *len)
{
    if (!countries_body) {
        apr_size_t need = sizeof("{\"countries\":[]}");
        char *b, *w;
        int i;
        for (i = 0; i < CR_NCOUNTRIES; i++) {
            need += strlen(cr_countries_upstream_order[i].name) + 32;
        }
        b = w = malloc(need);
        if (!b) {
            return NULL;
        }
        w += sprintf(w, "{\"countries\":[");
        for (i = 0; i < CR_NCOUNTRIES; i++) {
            w += sprintf(w, "%s{\"isoCode\":\"%s\",\"name\":\"%s\"}", i ? "," : "",
                         cr_countries_upstream_order[i].iso, cr_countries_upstream_order[i].name);
        }
        w += sprintf(w, "]}");
        countries_len = (apr_size_t)(w - b);
        countries_body = b;
    }
    if (len) {
        *len = countries_len;
    }
    return countries_body;
}
