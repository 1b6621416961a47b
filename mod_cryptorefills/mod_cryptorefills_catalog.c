/* SPDX-License-Identifier: Apache-2.0 */
/* Catalog routes (brands, homepage, payment_vias) served from the shared
 * store, and the validator's parsed catalogs.
 *
 * One refresher per name at a time, chosen by a lease (see
 * cr_socache_lease) with an expiry, so a refresher that dies (killed child)
 * frees the name when its lease runs out; the others serve the stale copy
 * or, with none, wait a bounded time.  Each process keeps a copy of the
 * variants and parsed catalogs it used last (mod_cryptorefills_copies.c),
 * so a hit copies 64 bytes of meta out of the shared store rather than the
 * catalog. */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"
#include "apr_date.h"

#include "mod_cryptorefills_int.h"
#include "cr_json.h"

/* After a failed refresh, the next attempt waits this long (stale is served). */
#define CR_REFRESH_BACKOFF      apr_time_from_sec(5)
#define CR_WAIT_STEP            apr_time_from_msec(20)

/* ---- catalog entries --------------------------------------------------------------- */

static int get_meta(request_rec *r, const char *name, cr_record_meta *m)
{
    unsigned char buf[CR_RECORD_META_LEN];
    apr_size_t n;
    return cr_socache_get(r, CR_CID_META, name, buf, sizeof(buf), &n)
        && cr_record_meta_decode(buf, n, m);
}

/* Store a fresh answer: variants first, meta last, so a reader that finds
 * the new meta finds its variants too (or notices a mismatch). */
static int store_entry(request_rec *r, const char *name, const char *body, apr_size_t len,
                       apr_time_t fetched, apr_time_t expiry, cr_record_meta *m)
{
    unsigned char *rec, *gz, meta[CR_RECORD_META_LEN];
    apr_size_t gzlen = 0;
    apr_status_t rv;

    m->version = cr_hash64(body, len) ^ (apr_uint64_t)len;
    m->fetched = fetched;
    m->body_len = (apr_uint32_t)len;
    gz = cr_gzip(r->pool, body, len, &gzlen);
    m->gz_len = gz && gzlen < len ? (apr_uint32_t)gzlen : 0;

    rec = apr_palloc(r->pool, len + CR_RECORD_VHDR_LEN);
    cr_record_vhdr_encode(m->version, rec);
    memcpy(rec + CR_RECORD_VHDR_LEN, body, len);
    rv = cr_socache_put(r, CR_CID_BODY, name, expiry, rec, len + CR_RECORD_VHDR_LEN);
    if (rv == APR_SUCCESS && m->gz_len) {
        rec = apr_palloc(r->pool, m->gz_len + CR_RECORD_VHDR_LEN);
        cr_record_vhdr_encode(m->version, rec);
        memcpy(rec + CR_RECORD_VHDR_LEN, gz, m->gz_len);
        rv = cr_socache_put(r, CR_CID_GZIP, name, expiry, rec, m->gz_len + CR_RECORD_VHDR_LEN);
    }
    if (rv == APR_SUCCESS) {
        cr_record_meta_encode(m, meta);
        rv = cr_socache_put(r, CR_CID_META, name, expiry, meta, sizeof(meta));
    }
    if (rv != APR_SUCCESS) {
        apr_uint32_t before = apr_atomic_inc32(&cr_stats->cache_store_failures);
        /* Logged once (per server generation) at warn; mod_status counts
         * every failure, and the debug level names each one. */
        ap_log_rerror(APLOG_MARK, before == 0 ? APLOG_WARNING : APLOG_DEBUG, rv, r,
                      CRLOGNO(01209) "cannot store %s (%" APR_SIZE_T_FMT " bytes) in the "
                      "cache %s: answering from the upstream copy%s", name, len, cr_socache_desc(),
                      before == 0 ? " (logged once: Cryptorefillscache_store_failures in "
                      "mod_status counts them)" : "");
        return 0;
    }
    CR_COUNT(catalog_stores);
    return 1;
}

static int accepts_gzip(request_rec *r)
{
    const char *ae = apr_table_get(r->headers_in, "Accept-Encoding");
    while (ae && *ae) {
        const char *end = ae + strcspn(ae, ",");
        const char *semi = memchr(ae, ';', (apr_size_t)(end - ae));
        const char *tok_end = semi ? semi : end;
        while (*ae == ' ' || *ae == '\t') {
            ae++;
        }
        while (tok_end > ae && (tok_end[-1] == ' ' || tok_end[-1] == '\t')) {
            tok_end--;
        }
        if ((tok_end - ae == 4 && !strncasecmp(ae, "gzip", 4))
            || (tok_end - ae == 6 && !strncasecmp(ae, "x-gzip", 6))
            || (tok_end - ae == 1 && *ae == '*')) {
            const char *q = semi ? strstr(semi, "q=") : NULL;
            if (!q || q > end) {
                return 1;
            }
            q += 2;
            /* q=0, q=0.0, q=0.000 refuse; anything else accepts */
            while (*q == '0' || *q == '.') {
                q++;
            }
            return !(q >= end || *q == ' ' || *q == ',' || *q == ';' || *q == '\0');
        }
        ae = *end ? end + 1 : end;
    }
    return 0;
}

/* Answer from the cached entry.  Returns -1 when a variant is gone (the
 * caller then treats it as a miss). */
static int send_cached(request_rec *r, const char *name, const cr_record_meta *m,
                       const char *how, int local_only, apr_interval_time_t ttl)
{
    apr_time_t now = apr_time_now();
    /* A process's own copy is not confirmed by the shared store (another
     * server may hold a newer one): stale, max-age=0, like a shared one. */
    apr_interval_time_t left = local_only ? 0 : m->fetched + ttl - now;
    int gz = m->gz_len && accepts_gzip(r);
    const char *body = NULL;
    apr_size_t len = 0;

    int not_modified = cr_record_etag_match(apr_table_get(r->headers_in, "If-None-Match"),
                                            m->version);

    /* The variant first: if it was evicted meanwhile, the caller answers
     * another way and must not inherit this version's validators. */
    if (!not_modified) {
        body = cr_copies_variant(r, name, m, gz, local_only, &len);
        if (!body && gz && local_only) {
            /* This process served only the identity variant of it. */
            gz = 0;
            body = cr_copies_variant(r, name, m, 0, 1, &len);
        }
        if (!body) {
            return -1;
        }
    }
    apr_table_setn(r->headers_out, "Vary", "Accept-Encoding");
    apr_table_setn(r->headers_out, "X-Cryptorefills-Cache", how);
    apr_table_setn(r->headers_out, "ETag", cr_record_etag(r->pool, m->version, gz));
    apr_table_setn(r->headers_out, "Cache-Control",
                   apr_psprintf(r->pool, "public, max-age=%" APR_TIME_T_FMT,
                                left > 0 ? apr_time_sec(left) : (apr_time_t)0));
    {
        char *lm = apr_palloc(r->pool, APR_RFC822_DATE_LEN);
        apr_rfc822_date(lm, m->fetched);
        apr_table_setn(r->headers_out, "Last-Modified", lm);
    }
    if (not_modified) {
        CR_COUNT(cache_not_modified);
        return HTTP_NOT_MODIFIED;
    }
    if (gz) {
        apr_table_setn(r->headers_out, "Content-Encoding", "gzip");
    }
    /* Already compressed, or deliberately not: mod_deflate stays out. */
    apr_table_setn(r->subprocess_env, "no-gzip", "1");
    return cr_send(r, HTTP_OK, "application/json", body, len);
}

/* Is this upstream answer one to keep? */
static int cacheable(request_rec *r, const cr_upstream_resp *resp)
{
    json_object *o;
    return resp->rc == CR_UP_OK && resp->status == 200 && resp->len > 0
        && !cr_json_parse(r->pool, resp->body, resp->len, CR_JSON_MAX_DEPTH, &o);
}

/* A failure worth hiding behind a stale copy: the upstream is down or sick,
 * not answering a definite "no" (4xx other than 429). */
static int serve_stale_after(const cr_upstream_resp *resp)
{
    return resp->rc != CR_UP_OK || resp->status >= 500 || resp->status == 429
        || resp->status == 200 /* 200 that isn't JSON */;
}

typedef enum {
    OBTAIN_ENTRY,           /* *m describes a cached entry (how: hit, stale, miss) */
    OBTAIN_UNSTORED,        /* resp holds a good answer the cache could not keep */
    OBTAIN_FAILED           /* resp holds the failed upstream exchange */
} obtain_rc;

static const char *entry_name(request_rec *r, const cr_conf *c, const char *route,
                              const char *country)
{
    /* The upstream URL is part of the name, so two vhosts fronting two
     * upstreams (say sandbox and production) never share an entry; so is
     * a short hash of the partner id (never the id: a network cache shows
     * names), so two partners on one upstream never share catalogs or
     * failure answers.  The tag is the directive's (computed once); the
     * handler has refused a request without a partner id before this. */
    return apr_pstrcat(r->pool, route, ":", country, ":", c->upstream, ":", c->partner_tag, NULL);
}

/* A failed exchange for name that ended at or after `since` (so after this
 * request began waiting): its outcome in resp.  *buf is allocated once per
 * request and reused across polls. */
static int shared_failure(request_rec *r, const char *name, apr_time_t since,
                          unsigned char **buf, cr_upstream_resp *resp)
{
    apr_size_t cap = CR_RECORD_FAIL_HDR_LEN + CR_RECORD_FAIL_BODY_MAX, n;
    cr_record_fail f;

    if (!*buf) {
        *buf = apr_palloc(r->pool, cap);
    }
    if (!cr_socache_get(r, CR_CID_FAIL, name, *buf, cap, &n) || !cr_record_fail_decode(*buf, n, &f)
        || f.ended < since) {
        return 0;
    }
    memset(resp, 0, sizeof(*resp));
    resp->rc = (cr_upstream_rc)f.rc;
    resp->status = f.status;
    resp->retry_after = f.retry_after;
    resp->body = apr_pstrmemdup(r->pool, f.body, f.len);
    resp->len = f.len;
    resp->error = "the exchange of a concurrent request for the same catalog failed";
    return 1;
}

/* With no shared entry for name (lost or unreachable store) and resp a
 * failure worth hiding: this process's last good copy, if it has one still
 * within the stale window, goes into *m (and the failure is noted, so this
 * process waits out a back-off before trying the upstream again). */
static int local_stale(request_rec *r, const cr_conf *c, const cr_route_req *rr,
                       const char *country, const char *name, const cr_upstream_resp *resp,
                       cr_record_meta *m)
{
    apr_time_t failed_at;
    apr_time_t now = apr_time_now();

    if (!serve_stale_after(resp)
        || !cr_copies_last_good(r, name, accepts_gzip(r), m, &failed_at)
        || now >= m->fetched + c->cache_ttl + c->cache_stale) {
        return 0;
    }
    cr_copies_last_good_failed(r, name, m);
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01216)
                  "no shared entry for %s:%s in the cache %s and the upstream failed (%s, "
                  "status %ld): serving this process's copy of %" APR_TIME_T_FMT "s ago",
                  rr->def->name, country, cr_socache_desc(), cr_upstream_rc_name(resp->rc),
                  resp->status, apr_time_sec(now - m->fetched));
    return 1;
}

/* Find or make the cached answer for name: fresh entries are used as they
 * are; otherwise one request server-wide (the lease holder) refreshes while
 * the others serve the stale copy or, with none, wait a bounded time.
 * Without a shared entry, this process's last good copy (see
 * cr_copies_last_good) stands in for the stale one: *local is then set and
 * *m describes that copy. */
static obtain_rc obtain(request_rec *r, const cr_conf *c, const cr_route_req *rr,
                        const char *country, const char *name, cr_record_meta *m,
                        const char **how, int *local, cr_upstream_resp *resp)
{
    apr_interval_time_t ttl = c->cache_ttl, stale = c->cache_stale;
    apr_time_t started = apr_time_now();
    apr_time_t deadline = started + c->timeout + apr_time_from_sec(1);
    apr_time_t now, failed_at;
    unsigned char *fbuf = NULL;
    cr_record_meta lm;
    int have, have_local;

    *local = 0;
    for (;;) {
        now = apr_time_now();
        have = get_meta(r, name, m);
        if (have && now < m->fetched + ttl) {
            *how = "hit";
            return OBTAIN_ENTRY;
        }
        /* A local copy within the stale window, when the shared one is gone. */
        have_local = !have
            && cr_copies_last_good(r, name, accepts_gzip(r), &lm, &failed_at)
            && now < lm.fetched + ttl + stale;
        if (have_local && now < failed_at + CR_REFRESH_BACKOFF) {
            /* This process saw the upstream fail moments ago: no new try yet. */
            *m = lm;
            *local = 1;
            *how = "stale";
            return OBTAIN_ENTRY;
        }
        if (!have && shared_failure(r, name, started, &fbuf, resp)) {
            /* The exchange this request waited for failed: its answer is
             * this request's too (single flight, failures included). */
            break;
        }
        if (cr_socache_lease(r, name, c->exchange_hold)) {
            /* Look again: the refresher before us may have stored the entry
             * and let the lease go between our look and our lease. */
            if (get_meta(r, name, m) && apr_time_now() < m->fetched + ttl) {
                cr_socache_unlease(r, name, 0);
                *how = "hit";
                return OBTAIN_ENTRY;
            }
            goto refresh;   /* this request refreshes */
        }
        if (have || have_local) {
            /* someone else refreshes: serve what we have */
            if (!have) {
                *m = lm;
                *local = 1;
            }
            *how = "stale";
            return OBTAIN_ENTRY;
        }
        if (now >= deadline) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01210)
                          "gave up waiting for the refresh of %s:%s", rr->def->name, country);
            memset(resp, 0, sizeof(*resp));
            resp->rc = CR_UP_TIMEOUT;
            resp->error = "waiting for another request's refresh";
            return OBTAIN_FAILED;
        }
        CR_COUNT(cache_waits);
        apr_sleep(CR_WAIT_STEP);
    }
    /* Another request's exchange failed, with no shared copy. */
    goto failed;

refresh:
    cr_upstream_fetch(r, c, rr, country, NULL, 0, resp);
    CR_COUNT(cache_refreshes);
    if (cacheable(r, resp)) {
        int stored;
        now = apr_time_now();
        stored = store_entry(r, name, resp->body, resp->len, now, now + ttl + stale, m);
        cr_socache_unlease(r, name, 0);
        *how = "miss";
        if (!stored) {
            /* Unstored, it is still this process's last good copy. */
            cr_copies_keep(r, name, m, 0, resp->body, resp->len);
            return OBTAIN_UNSTORED;
        }
        return OBTAIN_ENTRY;
    }
    if (!have) {
        /* No shared copy to hide the failure behind: tell the requests
         * waiting for this exchange how it ended (they answer with it rather
         * than queue for exchanges of their own), and free the name at once,
         * so the next request tries the upstream instead of waiting out a
         * back-off with nothing to serve meanwhile. */
        cr_record_fail f;
        unsigned char *rec;
        apr_size_t rlen;
        f.ended = apr_time_now();
        f.rc = (int)resp->rc;
        f.status = resp->status;
        f.retry_after = resp->retry_after;
        f.body = resp->body;
        f.len = resp->len;
        rec = cr_record_fail_encode(r->pool, &f, &rlen);
        cr_socache_put(r, CR_CID_FAIL, name, f.ended + CR_REFRESH_BACKOFF, rec, rlen);
        cr_socache_unlease(r, name, 0);
        goto failed;
    }
    /* The refresh failed: keep the lease for a while (one try per backoff),
     * and hide the failure behind the stale copy while it may be served. */
    cr_socache_unlease(r, name, CR_REFRESH_BACKOFF);
    if (serve_stale_after(resp) && apr_time_now() < m->fetched + ttl + stale) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, CRLOGNO(01211)
                      "refresh of %s:%s failed (%s, status %ld): serving the copy of %"
                      APR_TIME_T_FMT "s ago", rr->def->name, country,
                      cr_upstream_rc_name(resp->rc), resp->status,
                      apr_time_sec(apr_time_now() - m->fetched));
        *how = "stale";
        return OBTAIN_ENTRY;
    }
    return OBTAIN_FAILED;

failed:
    /* No shared copy: this process's own, if it has one. */
    if (local_stale(r, c, rr, country, name, resp, m)) {
        *local = 1;
        *how = "stale";
        return OBTAIN_ENTRY;
    }
    return OBTAIN_FAILED;
}

int cr_catalog_handler(request_rec *r, const cr_conf *c, const cr_route_req *rr,
                       const char *country)
{
    apr_interval_time_t ttl = c->cache_ttl;
    const char *name = entry_name(r, c, rr->def->name, country);
    cr_upstream_resp resp;
    cr_record_meta m;
    const char *how = NULL;
    int attempt, st, local;

    /* Twice at most: a variant may be evicted between meta and body. */
    for (attempt = 0; attempt < 2; attempt++) {
        switch (obtain(r, c, rr, country, name, &m, &how, &local, &resp)) {
        case OBTAIN_ENTRY:
            st = send_cached(r, name, &m, how, local, ttl);
            if (st == -1) {
                continue;
            }
            if (!strcmp(how, "hit")) CR_COUNT(cache_hits);
            else if (!strcmp(how, "stale")) CR_COUNT(cache_stale);
            else CR_COUNT(cache_misses);
            return st;
        case OBTAIN_UNSTORED:
            CR_COUNT(cache_misses);
            apr_table_setn(r->headers_out, "X-Cryptorefills-Cache", "miss");
            apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
            return cr_send(r, HTTP_OK, "application/json", resp.body, resp.len);
        case OBTAIN_FAILED:
            CR_COUNT(cache_misses);
            apr_table_setn(r->headers_out, "X-Cryptorefills-Cache", "miss");
            return cr_relay(r, rr, &resp);
        }
    }
    return cr_send_problem(r, HTTP_BAD_GATEWAY, "UPSTREAM_UNAVAILABLE", NULL,
                           "catalog evicted while being served");
}

/* ---- parsed catalogs for the validator ------------------------------------------------ */

json_object *cr_catalog_json(request_rec *r, const cr_conf *c, cr_route_id route,
                             const char *country, int *stale)
{
    const cr_route_def *def = cr_route_def_get(route);
    const char *name = entry_name(r, c, def->name, country);
    cr_record_meta m;
    apr_time_t now;
    apr_uint64_t gen;
    json_object *obj;

    *stale = 0;
    if ((obj = cr_copies_parsed_recent(r, name, stale))) {
        return obj;
    }
    /* Never a refresh here: the request that validates waits for no
     * upstream exchange (a body naming many countries would make one per
     * country).  A copy past its stale window, or none, skips the checks
     * that need it; the upstream decides. */
    if (cr_copies_missing_recent(r, name, &gen)) {
        return NULL;
    }
    if (!get_meta(r, name, &m)) {
        cr_copies_note_missing(r, name, gen);
        return NULL;
    }
    now = apr_time_now();
    if (now >= m.fetched + c->cache_ttl + c->cache_stale) {
        cr_copies_note_missing(r, name, gen);
        return NULL;
    }
    *stale = now >= m.fetched + c->cache_ttl;
    return cr_copies_parsed(r, name, &m, *stale, route);
}
