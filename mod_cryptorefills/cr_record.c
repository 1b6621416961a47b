/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>
#include <stdio.h>
#include <zlib.h>
#include <apr_strings.h>

#include "cr_record.h"

#define META_MAGIC "CRM1"
#define VHDR_MAGIC "CRV1"

apr_uint64_t cr_hash64(const void *data, apr_size_t len)
{
    const unsigned char *p = data;
    apr_uint64_t h = APR_UINT64_C(14695981039346656037);
    apr_size_t i;
    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= APR_UINT64_C(1099511628211);
    }
    return h;
}

apr_size_t cr_record_id(unsigned char *out, cr_cid_kind kind, const char *name)
{
    apr_size_t n = strlen(name);
    apr_uint64_t h = cr_hash64(name, n);
    int i;
    /* Fold the hash so every bit of it moves the first byte. */
    out[0] = (unsigned char)(h ^ (h >> 8) ^ (h >> 16) ^ (h >> 24) ^ (h >> 32) ^ (h >> 40)
                             ^ (h >> 48) ^ (h >> 56));
    out[1] = (unsigned char)kind;
    out[2] = ':';
    if (n <= CR_RECORD_ID_MAX - 3) {
        memcpy(out + 3, name, n);
        return n + 3;
    }
    /* Too long: a prefix and the whole 64-bit hash, so two long names that
     * share a prefix (idempotency keys, upstream URLs) stay apart. */
    n = CR_RECORD_ID_MAX - 3 - 8;
    memcpy(out + 3, name, n);
    for (i = 0; i < 8; i++) {
        out[3 + n + i] = (unsigned char)(h >> (8 * i));
    }
    return CR_RECORD_ID_MAX;
}

static void put64(unsigned char *p, apr_uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static apr_uint64_t get64(const unsigned char *p)
{
    apr_uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

void cr_record_meta_encode(const cr_record_meta *m, unsigned char out[CR_RECORD_META_LEN])
{
    memset(out, 0, CR_RECORD_META_LEN);
    memcpy(out, META_MAGIC, 4);
    put64(out + 8, m->version);
    put64(out + 16, (apr_uint64_t)m->fetched);
    put64(out + 24, m->body_len);
    put64(out + 32, m->gz_len);
    put64(out + 56, cr_hash64(out, 56));
}

int cr_record_meta_decode(const unsigned char *in, apr_size_t len, cr_record_meta *m)
{
    if (len != CR_RECORD_META_LEN || memcmp(in, META_MAGIC, 4)
        || get64(in + 56) != cr_hash64(in, 56)) {
        return 0;
    }
    m->version = get64(in + 8);
    m->fetched = (apr_time_t)get64(in + 16);
    m->body_len = (apr_uint32_t)get64(in + 24);
    m->gz_len = (apr_uint32_t)get64(in + 32);
    return m->body_len > 0;
}

void cr_record_vhdr_encode(apr_uint64_t version, unsigned char out[CR_RECORD_VHDR_LEN])
{
    memset(out, 0, CR_RECORD_VHDR_LEN);
    memcpy(out, VHDR_MAGIC, 4);
    put64(out + 8, version);
}

int cr_record_vhdr_check(const unsigned char *in, apr_size_t len, apr_uint64_t version)
{
    return len >= CR_RECORD_VHDR_LEN && !memcmp(in, VHDR_MAGIC, 4) && get64(in + 8) == version;
}

unsigned char *cr_gzip(apr_pool_t *p, const char *in, apr_size_t len, apr_size_t *outlen)
{
    z_stream zs;
    uLong bound;
    unsigned char *out;
    int rc;

    memset(&zs, 0, sizeof(zs));
    /* windowBits 15 + 16: a gzip wrapper; level 9, since it is paid once per
     * refresh and saved on every request. */
    if (deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
        return NULL;
    }
    bound = deflateBound(&zs, (uLong)len);
    out = apr_palloc(p, bound);
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)bound;
    rc = deflate(&zs, Z_FINISH);
    *outlen = zs.total_out;
    deflateEnd(&zs);
    return rc == Z_STREAM_END ? out : NULL;
}

const char *cr_record_etag(apr_pool_t *p, apr_uint64_t version, int gz)
{
    return apr_psprintf(p, "\"%016" APR_UINT64_T_HEX_FMT "%s\"", version, gz ? "-gz" : "");
}

int cr_record_etag_match(const char *inm, apr_uint64_t version)
{
    char hex[17];
    const char *s;

    if (!inm) {
        return 0;
    }
    snprintf(hex, sizeof(hex), "%016" APR_UINT64_T_HEX_FMT, version);
    for (s = inm; *s; ) {
        const char *q;
        while (*s == ' ' || *s == '\t' || *s == ',') {
            s++;
        }
        if (*s == '*') {
            return 1;
        }
        if (s[0] == 'W' && s[1] == '/') {
            s += 2;     /* weak comparison, as If-None-Match asks */
        }
        if (*s != '"') {
            return 0;
        }
        q = strchr(s + 1, '"');
        if (!q) {
            return 0;
        }
        if ((q - s - 1 == 16 || (q - s - 1 == 19 && !strncmp(s + 17, "-gz", 3)))
            && !strncmp(s + 1, hex, 16)) {
            return 1;
        }
        s = q + 1;
    }
    return 0;
}

unsigned char *cr_record_fail_encode(apr_pool_t *p, const cr_record_fail *f, apr_size_t *len)
{
    apr_size_t blen = f->body && f->len <= CR_RECORD_FAIL_BODY_MAX ? f->len : 0;
    unsigned char *b = apr_pcalloc(p, CR_RECORD_FAIL_HDR_LEN + blen);
    memcpy(b, "CRF1", 4);
    b[4] = (unsigned char)f->rc;
    b[5] = (unsigned char)(f->status & 0xff);
    b[6] = (unsigned char)((f->status >> 8) & 0xff);
    put64(b + 8, (apr_uint64_t)f->ended);
    put64(b + 16, (apr_uint64_t)(apr_int64_t)f->retry_after);
    put64(b + 24, blen);
    if (blen) {
        memcpy(b + CR_RECORD_FAIL_HDR_LEN, f->body, blen);
    }
    *len = CR_RECORD_FAIL_HDR_LEN + blen;
    return b;
}

int cr_record_fail_decode(const unsigned char *buf, apr_size_t len, cr_record_fail *f)
{
    if (len < CR_RECORD_FAIL_HDR_LEN || memcmp(buf, "CRF1", 4)
        || get64(buf + 24) != len - CR_RECORD_FAIL_HDR_LEN) {
        return 0;
    }
    f->rc = buf[4];
    f->status = buf[5] | (buf[6] << 8);
    f->ended = (apr_time_t)get64(buf + 8);
    f->retry_after = (long)(apr_int64_t)get64(buf + 16);
    f->len = len - CR_RECORD_FAIL_HDR_LEN;
    f->body = (const char *)buf + CR_RECORD_FAIL_HDR_LEN;
    return 1;
}

unsigned char *cr_idem_encode(apr_pool_t *p, const cr_idem_rec *rec, apr_size_t *len)
{
    unsigned char *b = apr_pcalloc(p, CR_IDEM_HDR_LEN + rec->len);
    memcpy(b, "CRI1", 4);
    b[4] = (unsigned char)rec->state;
    b[5] = (unsigned char)(rec->status & 0xff);
    b[6] = (unsigned char)((rec->status >> 8) & 0xff);
    put64(b + 8, rec->body_hash);
    put64(b + 16, (apr_uint64_t)rec->created);
    put64(b + 24, rec->len);            /* < 4 GiB: the high half carries the token */
    b[28] = (unsigned char)rec->token;
    b[29] = (unsigned char)(rec->token >> 8);
    b[30] = (unsigned char)(rec->token >> 16);
    b[31] = (unsigned char)(rec->token >> 24);
    if (rec->len) {
        memcpy(b + CR_IDEM_HDR_LEN, rec->body, rec->len);
    }
    *len = CR_IDEM_HDR_LEN + rec->len;
    return b;
}

int cr_idem_decode(const unsigned char *buf, apr_size_t len, cr_idem_rec *rec)
{
    if (len < CR_IDEM_HDR_LEN || memcmp(buf, "CRI1", 4) || buf[4] < CR_IDEM_IN_FLIGHT
        || buf[4] > CR_IDEM_UNKNOWN
        || (get64(buf + 24) & 0xFFFFFFFFu) != (apr_uint64_t)(len - CR_IDEM_HDR_LEN)) {
        return 0;
    }
    rec->state = (cr_idem_state)buf[4];
    rec->status = buf[5] | (buf[6] << 8);
    rec->body_hash = get64(buf + 8);
    rec->created = (apr_time_t)get64(buf + 16);
    rec->len = len - CR_IDEM_HDR_LEN;
    rec->body = (const char *)buf + CR_IDEM_HDR_LEN;
    rec->token = (apr_uint32_t)(get64(buf + 24) >> 32);
    return 1;
}
