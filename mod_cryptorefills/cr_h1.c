/* SPDX-License-Identifier: Apache-2.0 */
/* cr_h1: HTTP/1.1 request-head formatter and incremental response parser
 * (see cr_h1.h). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cr_h1.h"

/* ------------------------------------------------------------------------
 * Request head
 * --------------------------------------------------------------------- */

static int has_crlf(const char *s)
{
    return s[strcspn(s, "\r\n")] != '\0';
}

/* Which of the default fields the caller's headers give themselves: one
 * pass, a case-insensitive compare only for names starting with 'a'/'u'. */
enum { OWN_UA = 1, OWN_ACCEPT = 2, OWN_AE = 4 };

static int own_fields(const char *const *headers)
{
    int own = 0;
    for (; headers && *headers; headers++) {
        const char *h = *headers;
        if ((h[0] | 0x20) == 'u') {
            if (!strncasecmp(h, "User-Agent:", 11)) own |= OWN_UA;
        }
        else if ((h[0] | 0x20) == 'a' && !strncasecmp(h, "Accept", 6)) {
            if (h[6] == ':') own |= OWN_ACCEPT;
            else if (!strncasecmp(h + 6, "-Encoding:", 10)) own |= OWN_AE;
        }
    }
    return own;
}

int cr_h1_url_split(const char *url, cr_h1_url *u)
{
    const char *a, *e, *he, *f;
    unsigned long port = 0;

    memset(u, 0, sizeof(*u));
    if (!strncasecmp(url, "http://", 7)) {
        a = url + 7;
    }
    else if (!strncasecmp(url, "https://", 8)) {
        u->tls = 1;
        a = url + 8;
    }
    else {
        return -1;
    }
    e = a + strcspn(a, "/?#");
    if (e == a || memchr(a, '@', (size_t)(e - a))) {
        return -1;
    }
    if (*a == '[') {
        he = memchr(a, ']', (size_t)(e - a));
        if (!he || he == a + 1) {
            return -1;
        }
        u->name = a + 1;
        u->name_len = (size_t)(he - a - 1);
        he++;
    }
    else {
        he = memchr(a, ':', (size_t)(e - a));
        if (!he) {
            he = e;
        }
        u->name = a;
        u->name_len = (size_t)(he - a);
    }
    u->host = a;
    u->host_len = (size_t)(he - a);
    if (!u->name_len) {
        return -1;
    }
    if (he < e) {
        const char *p;
        if (*he != ':' || he + 1 == e) {
            return -1;
        }
        for (p = he + 1; p < e; p++) {
            if (*p < '0' || *p > '9' || (port = port * 10 + (unsigned long)(*p - '0')) > 65535) {
                return -1;
            }
        }
        if (!port) {
            return -1;
        }
    }
    u->port = port ? (unsigned)port : u->tls ? 443 : 80;
    f = strchr(e, '#');
    u->target = e;
    u->target_len = f ? (size_t)(f - e) : strlen(e);
    u->target_slash = *e == '?';
    return 0;
}

size_t cr_h1_fmt_uint(char *buf, unsigned long long v)
{
    char tmp[24];
    size_t n = 0, i;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (i = 0; i < n; i++) {
        buf[i] = tmp[n - 1 - i];
    }
    return n;
}

/* One pass does both: with out NULL it only counts. */
static size_t head_emit(const cr_h1_request *rq, char *out)
{
    size_t len = 0;
    const char *const *hp;
    const char *target = rq->target && *rq->target ? rq->target : "/";
    char num[24];
    size_t nl;
    int own = own_fields(rq->headers);

#define PUTN(s, n) do { if (out) memcpy(out + len, (s), (n)); len += (n); } while (0)
#define PUTS(s) do { const char *s_ = (s); size_t n_ = strlen(s_); PUTN(s_, n_); } while (0)
#define PUTL(lit) PUTN(lit, sizeof(lit) - 1)
    PUTS(rq->method);
    PUTL(" ");
    PUTS(target);
    PUTL(" HTTP/1.1\r\nHost: ");
    PUTS(rq->host);
    if (rq->port != (rq->default_port ? rq->default_port : 80)) {
        PUTL(":");
        nl = cr_h1_fmt_uint(num, rq->port);
        PUTN(num, nl);
    }
    PUTL("\r\n");
    if (rq->user_agent && !(own & OWN_UA)) {
        PUTL("User-Agent: ");
        PUTS(rq->user_agent);
        PUTL("\r\n");
    }
    if (rq->accept && !(own & OWN_ACCEPT)) {
        PUTL("Accept: ");
        PUTS(rq->accept);
        PUTL("\r\n");
    }
    if (rq->accept_encoding && !(own & OWN_AE)) {
        PUTL("Accept-Encoding: ");
        PUTS(rq->accept_encoding);
        PUTL("\r\n");
    }
    for (hp = rq->headers; hp && *hp; hp++) {
        PUTS(*hp);
        PUTL("\r\n");
    }
    if (rq->has_body) {
        PUTL("Content-Length: ");
        nl = cr_h1_fmt_uint(num, rq->body_len);
        PUTN(num, nl);
        PUTL("\r\n");
    }
    PUTL("\r\n");
#undef PUTL
#undef PUTS
#undef PUTN
    return len;
}

size_t cr_h1_head_len(const cr_h1_request *rq)
{
    const char *const *hp;
    if (!rq->method || !*rq->method || !rq->host || !*rq->host
        || strpbrk(rq->method, " \r\n") || has_crlf(rq->host)
        || (rq->target && (strpbrk(rq->target, " \r\n")))
        || (rq->user_agent && has_crlf(rq->user_agent))
        || (rq->accept && has_crlf(rq->accept))
        || (rq->accept_encoding && has_crlf(rq->accept_encoding))) {
        return 0;
    }
    for (hp = rq->headers; hp && *hp; hp++) {
        if (has_crlf(*hp) || !strchr(*hp, ':')) {
            return 0;
        }
    }
    return head_emit(rq, NULL);
}

size_t cr_h1_head_write(const cr_h1_request *rq, char *out)
{
    return head_emit(rq, out);
}

/* ------------------------------------------------------------------------
 * Response parser
 * --------------------------------------------------------------------- */

enum {
    S_HEAD = 0,       /* reading a head (status line, headers) */
    S_BODY_LENGTH,    /* Content-Length bytes left in remaining */
    S_BODY_CLOSE,     /* everything until the connection closes */
    S_CHUNK_SIZE,     /* hex digits of a chunk size */
    S_CHUNK_EXT,      /* after the size: white space, extensions, up to LF */
    S_CHUNK_SIZE_LF,  /* CR seen at the end of a size line */
    S_CHUNK_DATA,     /* remaining bytes of this chunk */
    S_CHUNK_DATA_CR,  /* the CRLF after a chunk's data */
    S_CHUNK_DATA_LF,
    S_TRAILER,        /* trailer lines after the last chunk, up to an empty one */
    S_DONE,
    S_ERROR
};

/* tchar of RFC 9110 (header names). */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1
};

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A byte not allowed in a field value or reason phrase: CTLs but HTAB, DEL. */
static int ctl(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static int lower_eq(const char *s, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    return n == k && !strncasecmp(s, lit, n);
}

void cr_h1_parser_init(cr_h1_parser *ps, const cr_h1_callbacks *cb, void *baton, int head_request)
{
    memset(ps, 0, sizeof(*ps));
    ps->cb = cb;
    ps->baton = baton;
    ps->head_request = head_request;
    ps->state = S_HEAD;
}

void cr_h1_parser_release(cr_h1_parser *ps)
{
    free(ps->hbuf);
    ps->hbuf = NULL;
    ps->hcap = 0;
    ps->hlen = 0;
}

void cr_h1_parser_reset(cr_h1_parser *ps, int head_request)
{
    const cr_h1_callbacks *cb = ps->cb;
    void *baton = ps->baton;
    cr_h1_parser_release(ps);
    cr_h1_parser_init(ps, cb, baton, head_request);
}

static int fail(cr_h1_parser *ps, int err)
{
    ps->state = S_ERROR;
    ps->err = err;
    cr_h1_parser_release(ps);
    return err;
}

/* Content-Length: a comma-separated list of equal decimal numbers (RFC
 * 9110 8.6); the value merges with one seen before. */
static int parse_length(const char *v, size_t n, long long *cl)
{
    size_t i = 0;
    while (i < n) {
        unsigned long long x = 0;
        size_t digits = 0;
        while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
        while (i < n && v[i] >= '0' && v[i] <= '9') {
            if (x > (1ULL << 60)) {
                return -1;   /* no answer is that long; also keeps x from overflowing */
            }
            x = x * 10 + (unsigned)(v[i] - '0');
            i++;
            digits++;
        }
        while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
        if (!digits || (i < n && v[i] != ',')) {
            return -1;
        }
        i++;   /* the comma */
        if (*cl >= 0 && (unsigned long long)*cl != x) {
            return -1;
        }
        *cl = (long long)x;
    }
    return *cl >= 0 ? 0 : -1;
}

/* Transfer-Encoding: only "chunked" (case-insensitive, once) is known. */
static int parse_te(const char *v, size_t n)
{
    return lower_eq(v, n, "chunked") ? 0 : -1;
}

static int parse_ce(const char *v, size_t n)
{
    if (lower_eq(v, n, "identity")) return CR_H1_CE_NONE;
    if (lower_eq(v, n, "gzip") || lower_eq(v, n, "x-gzip")) return CR_H1_CE_GZIP;
    if (lower_eq(v, n, "deflate")) return CR_H1_CE_DEFLATE;
    return CR_H1_CE_OTHER;
}

/* Connection: a list of tokens; close / keep-alive change the default. */
static void parse_connection(const char *v, size_t n, int *close_, int *keep)
{
    size_t i = 0;
    while (i < n) {
        size_t s, e;
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        s = i;
        while (i < n && v[i] != ',') i++;
        e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
        if (lower_eq(v + s, e - s, "close")) *close_ = 1;
        else if (lower_eq(v + s, e - s, "keep-alive")) *keep = 1;
    }
}

/* Parse a complete head h[0..n) (ends with its empty line).  Returns 0 for
 * a final head (framing set up, callbacks called), 1 for a 1xx to skip, or
 * an error. */
static int parse_head(cr_h1_parser *ps, const char *h, size_t n)
{
    const char *end = h + n, *line = h, *eol;
    cr_h1_head hd;
    int status, minor, lines = 0, close_ = 0, keep = 0, te = 0, ce_seen = 0;
    size_t i;

    memset(&hd, 0, sizeof(hd));
    hd.content_length = -1;

    /* Status line: HTTP/1.x SP 3DIGIT SP reason (the reason may be empty,
     * and the SP before it missing). */
    eol = memchr(line, '\n', (size_t)(end - line));
    if (!eol) {
        return CR_H1_ESYNTAX;
    }
    {
        size_t ll = (size_t)(eol - line);
        if (ll && line[ll - 1] == '\r') ll--;
        if (ll < 12 || memcmp(line, "HTTP/1.", 7) || (line[7] != '0' && line[7] != '1')
            || line[8] != ' ' || line[9] < '1' || line[9] > '9'
            || line[10] < '0' || line[10] > '9' || line[11] < '0' || line[11] > '9'
            || (ll > 12 && line[12] != ' ')) {
            return CR_H1_ESYNTAX;
        }
        for (i = 12; i < ll; i++) {
            if (ctl((unsigned char)line[i])) return CR_H1_ESYNTAX;
        }
        minor = line[7] - '0';
        status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    }
    if (status == 101) {
        return CR_H1_EUPGRADE;
    }
    line = eol + 1;

    /* Header lines up to the empty one. */
    for (;;) {
        const char *colon, *v, *ve;
        size_t ll, nlen;
        eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) {
            return CR_H1_ESYNTAX;
        }
        ll = (size_t)(eol - line);
        if (ll && line[ll - 1] == '\r') ll--;
        if (ll == 0) {
            break;
        }
        if (++lines > CR_H1_MAX_HEADERS) {
            return CR_H1_EHEADTOOBIG;
        }
        if (line[0] == ' ' || line[0] == '\t') {
            return CR_H1_ESYNTAX;   /* obs-fold */
        }
        for (nlen = 0; nlen < ll && tchar[(unsigned char)line[nlen]]; nlen++)
            ;
        if (nlen == 0 || nlen == ll || line[nlen] != ':') {
            return CR_H1_ESYNTAX;   /* no name, no colon, or white space before it */
        }
        colon = line + nlen;
        v = colon + 1;
        ve = line + ll;
        for (i = 0; v + i < ve; i++) {
            if (ctl((unsigned char)v[i])) return CR_H1_ESYNTAX;
        }
        while (v < ve && (*v == ' ' || *v == '\t')) v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        line = eol + 1;
        if (status < 200) {
            continue;   /* an interim answer's fields mean nothing for the final one */
        }
        switch (nlen) {
        case 10:
            if (lower_eq(colon - nlen, nlen, "connection")) {
                parse_connection(v, (size_t)(ve - v), &close_, &keep);
            }
            break;
        case 11:
            if (lower_eq(colon - nlen, nlen, "retry-after")) {
                hd.retry_after = v;
                hd.retry_after_len = (size_t)(ve - v);
            }
            break;
        case 12:
            if (lower_eq(colon - nlen, nlen, "content-type")) {
                hd.content_type = v;
                hd.content_type_len = (size_t)(ve - v);
            }
            break;
        case 14:
            if (lower_eq(colon - nlen, nlen, "content-length")) {
                if (parse_length(v, (size_t)(ve - v), &hd.content_length) != 0) {
                    return CR_H1_ELENGTH;
                }
            }
            break;
        case 16:
            if (lower_eq(colon - nlen, nlen, "content-encoding")) {
                /* Several Content-Encoding lines are several codings. */
                hd.content_encoding = ce_seen++ ? CR_H1_CE_OTHER : parse_ce(v, (size_t)(ve - v));
            }
            break;
        case 17:
            if (lower_eq(colon - nlen, nlen, "transfer-encoding")) {
                if (te++ || parse_te(v, (size_t)(ve - v)) != 0) {
                    return CR_H1_ECODING;
                }
            }
            break;
        default:
            break;
        }
        if (ps->cb && ps->cb->on_header
            && ps->cb->on_header(ps->baton, colon - nlen, nlen, v, (size_t)(ve - v))) {
            return CR_H1_EABORTED;
        }
    }
    if (status < 200) {
        return 1;
    }
    if (te && hd.content_length >= 0) {
        return CR_H1_ELENGTH;
    }
    hd.status = status;
    hd.minor = minor;
    hd.keep_alive = minor == 1 ? !close_ : (keep && !close_);
    hd.no_body = ps->head_request || status == 204 || status == 304;
    if (!hd.no_body) {
        if (te) {
            hd.chunked = 1;
        }
        else if (hd.content_length < 0) {
            hd.keep_alive = 0;   /* the body ends with the connection */
        }
    }
    ps->status = status;
    ps->keep_alive = hd.keep_alive;
    ps->chunked = hd.chunked;
    if (hd.no_body) {
        ps->state = S_DONE;
    }
    else if (hd.chunked) {
        ps->state = S_CHUNK_SIZE;
        ps->remaining = 0;
        ps->head_line_len = 0;
    }
    else if (hd.content_length >= 0) {
        ps->remaining = (unsigned long long)hd.content_length;
        ps->state = ps->remaining ? S_BODY_LENGTH : S_DONE;
    }
    else {
        ps->state = S_BODY_CLOSE;
    }
    if (ps->cb && ps->cb->on_head && ps->cb->on_head(ps->baton, &hd)) {
        return CR_H1_EABORTED;
    }
    return 0;
}

static int grow_head(cr_h1_parser *ps, const char *buf, size_t n)
{
    if (ps->hlen + n > ps->hcap) {
        size_t cap = ps->hcap ? ps->hcap : 1024;
        char *nb;
        while (cap < ps->hlen + n) cap *= 2;
        if (cap > CR_H1_MAX_HEAD) cap = CR_H1_MAX_HEAD;
        nb = realloc(ps->hbuf, cap);
        if (!nb) {
            return CR_H1_ENOMEM;
        }
        ps->hbuf = nb;
        ps->hcap = cap;
    }
    memcpy(ps->hbuf + ps->hlen, buf, n);
    ps->hlen += n;
    return 0;
}

/* Look for the end of the head in buf[0..len): the LF ending an empty
 * line.  Returns the offset just past it, or 0 when the head goes on
 * beyond buf (ps->hlen counts the head bytes seen). */
static size_t find_head_end(cr_h1_parser *ps, const char *buf, size_t len)
{
    size_t i = 0;
    while (i < len) {
        const char *lf = memchr(buf + i, '\n', len - i);
        size_t seg = lf ? (size_t)(lf - (buf + i)) : len - i;
        if (seg && ps->head_line_len == 0) {
            ps->head_line_cr = buf[i] == '\r';
        }
        if (ps->head_line_len < 2) {
            ps->head_line_len += seg > 2 ? 2 : (int)seg;
        }
        if (!lf) {
            return 0;
        }
        i += seg + 1;
        if (ps->head_line_len == 0 || (ps->head_line_len == 1 && ps->head_line_cr)) {
            ps->head_line_len = 0;
            return i;
        }
        ps->head_line_len = 0;
    }
    return 0;
}

static int deliver(cr_h1_parser *ps, const char *p, size_t n)
{
    if (!n) {
        return 0;
    }
    ps->body_bytes += n;
    if (ps->cb && ps->cb->on_body && ps->cb->on_body(ps->baton, p, n)) {
        return CR_H1_EABORTED;
    }
    return 0;
}

int cr_h1_feed(cr_h1_parser *ps, const char *buf, size_t len, size_t *used)
{
    size_t i = 0;
    int rc;

    while (i < len) {
        switch (ps->state) {
        case S_HEAD: {
            size_t seen_before = ps->hbuf ? ps->hlen : 0;
            size_t e = find_head_end(ps, buf + i, len - i);
            if (!e) {
                /* The head goes on: keep what came, within the limit. */
                if (seen_before + (len - i) > CR_H1_MAX_HEAD) {
                    if (used) *used = i;
                    return fail(ps, CR_H1_EHEADTOOBIG);
                }
                if ((rc = grow_head(ps, buf + i, len - i)) != 0) {
                    if (used) *used = i;
                    return fail(ps, rc);
                }
                ps->received += len - i;
                i = len;
                break;
            }
            if (seen_before + e > CR_H1_MAX_HEAD) {
                if (used) *used = i;
                return fail(ps, CR_H1_EHEADTOOBIG);
            }
            ps->received += e;
            if (ps->hbuf) {
                if ((rc = grow_head(ps, buf + i, e)) != 0) {
                    if (used) *used = i;
                    return fail(ps, rc);
                }
                rc = parse_head(ps, ps->hbuf, ps->hlen);
                cr_h1_parser_release(ps);
            }
            else {
                rc = parse_head(ps, buf + i, e);
            }
            i += e;
            if (rc < 0) {
                if (used) *used = i;
                return fail(ps, rc);
            }
            /* rc 1: a 1xx, the next head follows (state stays S_HEAD) */
            break;
        }
        case S_BODY_LENGTH:
        case S_CHUNK_DATA: {
            /* Counted bytes: the rest of the body or of this chunk. */
            size_t n = len - i;
            if (n > ps->remaining) n = (size_t)ps->remaining;
            ps->received += n;
            ps->remaining -= n;
            if ((rc = deliver(ps, buf + i, n)) != 0) {
                if (used) *used = i + n;
                return fail(ps, rc);
            }
            i += n;
            if (!ps->remaining) {
                ps->state = ps->state == S_BODY_LENGTH ? S_DONE : S_CHUNK_DATA_CR;
            }
            break;
        }
        case S_BODY_CLOSE: {
            size_t n = len - i;
            ps->received += n;
            if ((rc = deliver(ps, buf + i, n)) != 0) {
                if (used) *used = len;
                return fail(ps, rc);
            }
            i = len;
            break;
        }
        case S_DONE:
            if (used) *used = i;
            return CR_H1_DONE;
        case S_ERROR:
            if (used) *used = i;
            return ps->err;
        default: {
            /* The chunk framing, a byte at a time (a few bytes per chunk). */
            unsigned char c = (unsigned char)buf[i++];
            int hv;
            ps->received++;
            switch (ps->state) {
            case S_CHUNK_SIZE:
                hv = hexval(c);
                if (hv >= 0) {
                    if (ps->remaining >> 56) {
                        if (used) *used = i;
                        return fail(ps, CR_H1_ECHUNK);   /* over 2^60 bytes */
                    }
                    ps->remaining = (ps->remaining << 4) | (unsigned)hv;
                    if (++ps->head_line_len > CR_H1_MAX_CHUNK_LINE) {
                        if (used) *used = i;
                        return fail(ps, CR_H1_ECHUNK);   /* endless leading zeros */
                    }
                }
                else if (ps->head_line_len == 0) {
                    if (used) *used = i;
                    return fail(ps, CR_H1_ECHUNK);       /* no digit */
                }
                else if (c == '\r') {
                    ps->state = S_CHUNK_SIZE_LF;
                }
                else if (c == '\n') {
                    goto size_line_done;
                }
                else if (c == ';' || c == ' ' || c == '\t') {
                    ps->state = S_CHUNK_EXT;
                }
                else {
                    if (used) *used = i;
                    return fail(ps, CR_H1_ECHUNK);
                }
                break;
            case S_CHUNK_EXT:
                if (++ps->head_line_len > CR_H1_MAX_CHUNK_LINE) {
                    if (used) *used = i;
                    return fail(ps, CR_H1_ECHUNK);
                }
                if (c == '\r') {
                    ps->state = S_CHUNK_SIZE_LF;
                }
                else if (c == '\n') {
                    goto size_line_done;
                }
                else if (ctl(c)) {
                    if (used) *used = i;
                    return fail(ps, CR_H1_ECHUNK);
                }
                break;
            case S_CHUNK_SIZE_LF:
                if (c != '\n') {
                    if (used) *used = i;
                    return fail(ps, CR_H1_ECHUNK);
                }
            size_line_done:
                ps->head_line_len = 0;
                if (ps->remaining) {
                    ps->state = S_CHUNK_DATA;
                }
                else {
                    ps->state = S_TRAILER;
                    ps->lines = 0;
                    ps->head_line_cr = 0;
                }
                break;
            case S_CHUNK_DATA_CR:
                if (c == '\n') {
                    ps->state = S_CHUNK_SIZE;
                    ps->head_line_len = 0;
                    break;
                }
                if (c != '\r') {
                    if (used) *used = i;
                    return fail(ps, CR_H1_ECHUNK);
                }
                ps->state = S_CHUNK_DATA_LF;
                break;
            case S_CHUNK_DATA_LF:
                if (c != '\n') {
                    if (used) *used = i;
                    return fail(ps, CR_H1_ECHUNK);
                }
                ps->state = S_CHUNK_SIZE;
                ps->head_line_len = 0;
                break;
            case S_TRAILER:
                /* Lines up to an empty one; their content is dropped.
                 * head_line_len counts this line, head_line_cr: it began
                 * with CR. */
                if (c == '\n') {
                    if (ps->head_line_len == 0 || (ps->head_line_len == 1 && ps->head_line_cr)) {
                        ps->state = S_DONE;
                        break;
                    }
                    if (++ps->lines > CR_H1_MAX_HEADERS) {
                        if (used) *used = i;
                        return fail(ps, CR_H1_ECHUNK);
                    }
                    ps->head_line_len = 0;
                    ps->head_line_cr = 0;
                    break;
                }
                if (ps->head_line_len == 0) {
                    ps->head_line_cr = c == '\r';
                }
                else if (ps->head_line_cr && ps->head_line_len == 1) {
                    if (used) *used = i;
                    return fail(ps, CR_H1_ECHUNK);   /* CR not followed by LF */
                }
                if (++ps->head_line_len > CR_H1_MAX_CHUNK_LINE || (ctl(c) && c != '\r')) {
                    if (used) *used = i;
                    return fail(ps, CR_H1_ECHUNK);
                }
                break;
            default:
                break;
            }
            break;
        }
        }
    }
    if (used) *used = len;
    if (ps->state == S_ERROR) {
        return ps->err;
    }
    return ps->state == S_DONE ? CR_H1_DONE : CR_H1_MORE;
}

int cr_h1_eof(cr_h1_parser *ps)
{
    switch (ps->state) {
    case S_DONE:
        return CR_H1_DONE;
    case S_ERROR:
        return ps->err;
    case S_BODY_CLOSE:
        ps->state = S_DONE;
        return CR_H1_DONE;
    default:
        return fail(ps, CR_H1_ETRUNCATED);
    }
}

unsigned long long cr_h1_received(const cr_h1_parser *ps)
{
    return ps->received;
}

unsigned long long cr_h1_body_bytes(const cr_h1_parser *ps)
{
    return ps->body_bytes;
}

int cr_h1_head_done(const cr_h1_parser *ps)
{
    return ps->status != 0;
}

int cr_h1_status(const cr_h1_parser *ps)
{
    return ps->status;
}

int cr_h1_keep_alive(const cr_h1_parser *ps)
{
    return ps->state == S_DONE && ps->keep_alive;
}

size_t cr_h1_buffered(const cr_h1_parser *ps)
{
    return ps->hbuf ? ps->hcap : 0;
}

const char *cr_h1_strerror(int rc)
{
    switch (rc) {
    case CR_H1_MORE: return "incomplete";
    case CR_H1_DONE: return "complete";
    case CR_H1_ESYNTAX: return "malformed response head";
    case CR_H1_EHEADTOOBIG: return "response head too large";
    case CR_H1_ECHUNK: return "invalid chunked encoding";
    case CR_H1_ELENGTH: return "invalid or conflicting Content-Length";
    case CR_H1_ECODING: return "unsupported transfer coding";
    case CR_H1_EUPGRADE: return "unexpected 101 Switching Protocols";
    case CR_H1_ETRUNCATED: return "connection closed before the end of the response";
    case CR_H1_ENOMEM: return "out of memory";
    case CR_H1_EABORTED: return "aborted by a callback";
    default: return "unknown error";
    }
}
