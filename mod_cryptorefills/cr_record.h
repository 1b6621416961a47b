/* SPDX-License-Identifier: Apache-2.0 */
/* The records the module keeps in its shared store (any socache backend):
 * catalog entries, refresh leases, failed-exchange records and idempotency
 * records, each under an id built by cr_record_id.
 *
 * One cached answer is three socache records under ids that share a name:
 *   meta  - fixed 64-byte record: version, time fetched, lengths, ETag hash;
 *   body  - 16-byte header (version) + the JSON as received;
 *   gzip  - 16-byte header (version) + the same JSON gzip-compressed once.
 * A reader retrieves meta first (so it knows how large a buffer the variant
 * needs, and can answer 304 without touching the body), then only the
 * variant it serves.  The version in each variant header guards against a
 * variant from another generation (farms share a cache without a lock). */
#ifndef CR_RECORD_H
#define CR_RECORD_H

#include <apr_pools.h>
#include <apr_time.h>

#define CR_RECORD_META_LEN   64
#define CR_RECORD_VHDR_LEN   16
#define CR_RECORD_ID_MAX     96

typedef enum { CR_CID_META = 'M', CR_CID_BODY = 'B', CR_CID_GZIP = 'Z', CR_CID_LEASE = 'L',
               CR_CID_IDEM = 'I', CR_CID_FAIL = 'F' } cr_cid_kind;

typedef struct cr_record_meta {
    apr_uint64_t version;       /* hash of the body: also the ETag */
    apr_time_t fetched;         /* when the upstream answered */
    apr_uint32_t body_len;
    apr_uint32_t gz_len;        /* 0: no gzip variant stored */
} cr_record_meta;

/* 64-bit FNV-1a. */
apr_uint64_t cr_hash64(const void *data, apr_size_t len);

/* Build the id of a record: first byte from a hash of name, so that
 * shmcb (which picks a subcache by the id's first byte) spreads names
 * over all subcaches; then the kind; then the name.  Returns the length. */
apr_size_t cr_record_id(unsigned char *out, cr_cid_kind kind, const char *name);

/* Serialise / parse the meta record (explicit little-endian layout, so a
 * cache shared by a farm of mixed machines reads the same). */
void cr_record_meta_encode(const cr_record_meta *m, unsigned char out[CR_RECORD_META_LEN]);
int cr_record_meta_decode(const unsigned char *in, apr_size_t len, cr_record_meta *m);

/* Variant header: magic + version. */
void cr_record_vhdr_encode(apr_uint64_t version, unsigned char out[CR_RECORD_VHDR_LEN]);
int cr_record_vhdr_check(const unsigned char *in, apr_size_t len, apr_uint64_t version);

/* gzip (RFC 1952) body into p; NULL on failure. */
unsigned char *cr_gzip(apr_pool_t *p, const char *in, apr_size_t len, apr_size_t *outlen);

/* The strong ETag for a version and coding: "\"<16 hex>\"" or "\"<16 hex>-gz\"". */
const char *cr_record_etag(apr_pool_t *p, apr_uint64_t version, int gz);

/* Does an If-None-Match header value match the entry (either coding)? */
int cr_record_etag_match(const char *if_none_match, apr_uint64_t version);

/* The outcome of a failed upstream exchange for a name that has no copy:
 * the requests that waited for that exchange answer with it at once instead
 * of queueing for exchanges of their own. */
typedef struct cr_record_fail {
    apr_time_t ended;           /* when the exchange ended */
    int rc;                     /* cr_upstream_rc */
    long status;                /* HTTP status, 0 if none */
    long retry_after;           /* -1 if none */
    const char *body;           /* the upstream's body (not NUL-terminated) */
    apr_size_t len;
} cr_record_fail;
#define CR_RECORD_FAIL_HDR_LEN   32
#define CR_RECORD_FAIL_BODY_MAX  16384   /* a longer body is not kept */
unsigned char *cr_record_fail_encode(apr_pool_t *p, const cr_record_fail *f, apr_size_t *len);
int cr_record_fail_decode(const unsigned char *buf, apr_size_t len, cr_record_fail *f);

/* Idempotency records of POST orders. */
typedef enum { CR_IDEM_IN_FLIGHT = 1, CR_IDEM_DONE = 2, CR_IDEM_UNKNOWN = 3 } cr_idem_state;
typedef struct cr_idem_rec {
    cr_idem_state state;
    apr_uint64_t body_hash;     /* of the canonical request body */
    int status;                 /* DONE: the upstream's status */
    apr_time_t created;
    const char *body;           /* DONE: the upstream's answer */
    apr_size_t len;
    apr_uint32_t token;         /* random per claim: a claim whose answer was lost
                                 * is removed only if the record is still this one */
} cr_idem_rec;
#define CR_IDEM_HDR_LEN 32
unsigned char *cr_idem_encode(apr_pool_t *p, const cr_idem_rec *rec, apr_size_t *len);
int cr_idem_decode(const unsigned char *buf, apr_size_t len, cr_idem_rec *rec);

#endif
