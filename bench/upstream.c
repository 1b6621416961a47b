/* SPDX-License-Identifier: Apache-2.0 */
/* bench/upstream.c - a fast fixed-answer HTTP/1.1 upstream for the benchmarks.
 *
 * One thread, epoll, keep-alive, non-blocking.  Answers the partner API
 * routes the module calls with bytes read once at start-up (the sandbox's
 * own answers, saved in bench/data/), so that the upstream is never the
 * bottleneck of a benchmark:
 *
 *   GET  /v2/brands...            brands-US.json   (Cache-Control: max-age, for mod_cache)
 *   GET  /v3/payment_vias         payment_vias.json
 *   GET  /v4/products/price...    price.json
 *   POST /v5/orders/validations   validations.json
 *   GET  /v5/orders/ID/subscribe  text/event-stream, chunked: one event at once,
 *                                 then one every -i ms, data
 *                                 {"order_id":ID,"order_state":"WaitingForPayment","ts":<epoch us>}
 *   GET  /_stats                  {"accepts":..,"requests":..,"open":..,"streams":..}
 *   GET  /_stats/reset            zero accepts and requests
 *   anything else                 404 JSON
 *
 * Usage: upstream -d DATADIR [-p PORT] [-i INTERVAL_MS]
 * Prints "upstream listening on PORT" on stdout when ready.  Loopback only.
 * Exits on SIGTERM/SIGINT, or when the -P parent pid is gone. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define INBUF 65536

typedef struct conn {
    int fd;
    char in[INBUF];
    size_t inlen;
    const char *out;        /* pending static answer (not owned) */
    size_t outlen, outoff;
    char *dyn;              /* pending dynamic bytes (owned) */
    size_t dynlen, dynoff, dyncap;
    int sse;                /* stream index + 1, 0 if not a stream */
    char order_id[72];
    long seq;
    double next_due;
    int close_after;
} conn;

static conn **conns;        /* by fd */
static int nconns_cap;
static conn **streams;
static int nstreams, streams_cap;
static int ep;
static unsigned long n_accepts, n_requests;
static double interval = 1.0;
static volatile sig_atomic_t stop;

typedef struct answer { char *bytes; size_t len; } answer;
static answer a_brands, a_vias, a_price, a_valid, a_404, a_sse_head;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *slurp(const char *dir, const char *name, size_t *len)
{
    char path[4096];
    FILE *f;
    struct stat st;
    char *b;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (!f || fstat(fileno(f), &st)) { perror(path); exit(1); }
    b = malloc((size_t)st.st_size + 1);
    if (fread(b, 1, (size_t)st.st_size, f) != (size_t)st.st_size) { perror(path); exit(1); }
    fclose(f);
    *len = (size_t)st.st_size;
    return b;
}

static answer make_answer(int status, const char *reason, const char *ctype, const char *extra,
                          const char *body, size_t blen)
{
    answer a;
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
                      status, reason, ctype, blen, extra);
    a.len = (size_t)hl + blen;
    a.bytes = malloc(a.len);
    memcpy(a.bytes, head, (size_t)hl);
    memcpy(a.bytes + hl, body, blen);
    return a;
}

static answer file_answer(const char *dir, const char *name, const char *extra)
{
    size_t n;
    char *b = slurp(dir, name, &n);
    answer a = make_answer(200, "OK", "application/json", extra, b, n);
    free(b);
    return a;
}

static void conn_close(conn *c)
{
    if (c->sse) {
        int i = c->sse - 1;
        streams[i] = streams[--nstreams];
        streams[i]->sse = i + 1;
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    conns[c->fd] = NULL;
    free(c->dyn);
    free(c);
}

static void want_out(conn *c, int on)
{
    struct epoll_event ev;
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0);
    ev.data.ptr = c;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Write what is pending; returns -1 if the connection died. */
static int flush_out(conn *c)
{
    while (c->out && c->outoff < c->outlen) {
        ssize_t w = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
        if (w < 0) {
            if (errno == EAGAIN) { want_out(c, 1); return 0; }
            if (errno == EINTR) continue;
            return -1;
        }
        c->outoff += (size_t)w;
    }
    c->out = NULL;
    while (c->dynoff < c->dynlen) {
        ssize_t w = write(c->fd, c->dyn + c->dynoff, c->dynlen - c->dynoff);
        if (w < 0) {
            if (errno == EAGAIN) { want_out(c, 1); return 0; }
            if (errno == EINTR) continue;
            return -1;
        }
        c->dynoff += (size_t)w;
    }
    c->dynlen = c->dynoff = 0;
    return c->close_after ? -1 : 1;
}

static int pending(conn *c)
{
    return (c->out && c->outoff < c->outlen) || c->dynoff < c->dynlen;
}

static void dyn_append(conn *c, const char *b, size_t n)
{
    if (c->dynlen + n > c->dyncap) {
        size_t cap = c->dyncap ? c->dyncap * 2 : 4096;
        while (cap < c->dynlen + n) cap *= 2;
        c->dyn = realloc(c->dyn, cap);
        c->dyncap = cap;
    }
    memcpy(c->dyn + c->dynlen, b, n);
    c->dynlen += n;
}

static void sse_event(conn *c)
{
    char data[256], chunk[320];
    struct timeval tv;
    int dl, cl;
    gettimeofday(&tv, NULL);
    dl = snprintf(data, sizeof data,
                  "id: %ld\ndata: {\"order_id\":\"%s\",\"order_state\":\"WaitingForPayment\","
                  "\"ts\":%lld}\n\n", ++c->seq, c->order_id,
                  (long long)tv.tv_sec * 1000000LL + tv.tv_usec);
    cl = snprintf(chunk, sizeof chunk, "%x\r\n%s\r\n", dl, data);
    dyn_append(c, chunk, (size_t)cl);
}

static void start_stream(conn *c, const char *id, size_t idlen)
{
    if (idlen >= sizeof c->order_id) idlen = sizeof c->order_id - 1;
    memcpy(c->order_id, id, idlen);
    c->order_id[idlen] = '\0';
    if (nstreams == streams_cap) {
        streams_cap = streams_cap ? streams_cap * 2 : 1024;
        streams = realloc(streams, sizeof(conn *) * (size_t)streams_cap);
    }
    streams[nstreams++] = c;
    c->sse = nstreams;
    dyn_append(c, a_sse_head.bytes, a_sse_head.len);
    sse_event(c);
    c->next_due = now_s() + interval;
}

/* Handle complete requests in c->in.  Returns -1 to close. */
static int handle_input(conn *c)
{
    for (;;) {
        char *end, *p, *sp1, *sp2, *line_end;
        size_t hlen, clen = 0, total;
        const char *method, *path;
        size_t mlen, plen;
        int http10 = 0;

        if (c->sse) {
            c->inlen = 0;           /* ignore anything a stream client sends */
            return 0;
        }
        if (pending(c)) return 0;   /* answer in order: wait for the write side */
        c->in[c->inlen] = '\0';
        end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
        if (!end) {
            return c->inlen >= INBUF - 1 ? -1 : 0;
        }
        hlen = (size_t)(end - c->in) + 4;
        line_end = memchr(c->in, '\r', hlen);
        sp1 = memchr(c->in, ' ', (size_t)(line_end - c->in));
        if (!sp1) return -1;
        sp2 = memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1));
        if (!sp2) return -1;
        method = c->in; mlen = (size_t)(sp1 - c->in);
        path = sp1 + 1; plen = (size_t)(sp2 - path);
        http10 = !strncmp(sp2 + 1, "HTTP/1.0", 8);
        for (p = line_end + 2; p < end; ) {
            char *le = memchr(p, '\r', (size_t)(end + 2 - p));
            if (!le) break;
            if (!strncasecmp(p, "Content-Length:", 15)) clen = strtoul(p + 15, NULL, 10);
            else if (!strncasecmp(p, "Connection:", 11)) {
                char *v = p + 11;
                while (*v == ' ') v++;
                if (!strncasecmp(v, "close", 5)) c->close_after = 1;
            }
            p = le + 2;
        }
        if (http10) c->close_after = 1;
        total = hlen + clen;
        if (total > INBUF - 1) return -1;
        if (c->inlen < total) return 0;
        n_requests++;

        if (mlen == 3 && !memcmp(method, "GET", 3)) {
            if (plen >= 10 && !memcmp(path, "/v2/brands", 10)) c->out = a_brands.bytes, c->outlen = a_brands.len;
            else if (plen >= 15 && !memcmp(path, "/v3/payment_vias", 15)) c->out = a_vias.bytes, c->outlen = a_vias.len;
            else if (plen >= 18 && !memcmp(path, "/v4/products/price", 18)) c->out = a_price.bytes, c->outlen = a_price.len;
            else if (plen > 21 && !memcmp(path, "/v5/orders/", 11) && plen > 10
                     && !memcmp(path + plen - 10, "/subscribe", 10)) {
                start_stream(c, path + 11, plen - 21);
            }
            else if (plen >= 13 && !memcmp(path, "/_stats/reset", 13)) {
                char b[128];
                int n;
                n_accepts = 0; n_requests = 0;
                n = snprintf(b, sizeof b, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: 2\r\n\r\n{}");
                dyn_append(c, b, (size_t)n);
            }
            else if (plen >= 7 && !memcmp(path, "/_stats", 7)) {
                char body[256], b[512];
                int bl = snprintf(body, sizeof body,
                                  "{\"accepts\":%lu,\"requests\":%lu,\"open\":%d,\"streams\":%d}",
                                  n_accepts, n_requests, 0, nstreams);
                int n = snprintf(b, sizeof b, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 "Content-Length: %d\r\n\r\n%s", bl, body);
                dyn_append(c, b, (size_t)n);
            }
            else c->out = a_404.bytes, c->outlen = a_404.len;
        }
        else if (mlen == 4 && !memcmp(method, "POST", 4) && plen >= 21
                 && !memcmp(path, "/v5/orders/validations", 21)) {
            c->out = a_valid.bytes, c->outlen = a_valid.len;
        }
        else c->out = a_404.bytes, c->outlen = a_404.len;
        c->outoff = 0;
        memmove(c->in, c->in + total, c->inlen - total);
        c->inlen -= total;
        if (flush_out(c) < 0) return -1;
    }
}

static void on_accept(int lfd)
{
    for (;;) {
        int one = 1;
        struct epoll_event ev;
        conn *c;
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        n_accepts++;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (fd >= nconns_cap) {
            int cap = nconns_cap;
            while (fd >= cap) cap *= 2;
            conns = realloc(conns, sizeof(conn *) * (size_t)cap);
            memset(conns + nconns_cap, 0, sizeof(conn *) * (size_t)(cap - nconns_cap));
            nconns_cap = cap;
        }
        c = calloc(1, sizeof *c);
        c->fd = fd;
        conns[fd] = c;
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

static void on_signal(int s) { (void)s; stop = 1; }

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int port = 0, opt, lfd, one = 1;
    long parent = 0;
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    struct epoll_event ev, evs[256];
    struct rlimit rl;
    char extra[128];
    double next_parent_check = 0;

    while ((opt = getopt(argc, argv, "d:p:i:P:")) != -1) {
        switch (opt) {
        case 'd': dir = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'i': interval = atof(optarg) / 1000.0; break;
        case 'P': parent = atol(optarg); break;
        default:
            fprintf(stderr, "usage: %s -d DATADIR [-p PORT] [-i INTERVAL_MS] [-P PARENT_PID]\n", argv[0]);
            return 2;
        }
    }
    if (!dir) { fprintf(stderr, "-d DATADIR required\n"); return 2; }
    if (!getrlimit(RLIMIT_NOFILE, &rl)) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    snprintf(extra, sizeof extra, "Cache-Control: public, max-age=3600\r\n");
    a_brands = file_answer(dir, "brands-US.json", extra);
    a_vias = file_answer(dir, "payment_vias.json", extra);
    a_price = file_answer(dir, "price.json", "");
    a_valid = file_answer(dir, "validations.json", "");
    {
        static const char nf[] = "{\"status\":404,\"detail\":\"NOT_FOUND\"}";
        a_404 = make_answer(404, "Not Found", "application/json", "", nf, sizeof nf - 1);
    }
    {
        static const char h[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
        a_sse_head.bytes = (char *)h;
        a_sse_head.len = sizeof h - 1;
    }

    nconns_cap = 1024;
    conns = calloc((size_t)nconns_cap, sizeof(conn *));
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 4096)) { perror("bind/listen"); return 1; }
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    ep = epoll_create1(EPOLL_CLOEXEC);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("upstream listening on %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    while (!stop) {
        int n, i;
        int timeout = nstreams ? 5 : 500;
        double t;
        n = epoll_wait(ep, evs, 256, timeout);
        for (i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) { on_accept(lfd); continue; }
            if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                if (!(evs[i].events & EPOLLIN)) { conn_close(c); continue; }
            }
            if (evs[i].events & EPOLLOUT) {
                int r = flush_out(c);
                if (r < 0) { conn_close(c); continue; }
                if (r > 0) {
                    want_out(c, 0);
                    if (handle_input(c) < 0) { conn_close(c); continue; }
                }
            }
            if (evs[i].events & EPOLLIN) {
                ssize_t r = read(c->fd, c->in + c->inlen, INBUF - 1 - c->inlen);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) { conn_close(c); continue; }
                if (r > 0) {
                    c->inlen += (size_t)r;
                    if (handle_input(c) < 0) { conn_close(c); continue; }
                }
            }
        }
        t = now_s();
        if (nstreams) {
            for (i = 0; i < nstreams; i++) {
                conn *c = streams[i];
                if (t >= c->next_due) {
                    int was = pending(c);
                    c->next_due += interval;
                    if (c->next_due < t) c->next_due = t + interval;
                    sse_event(c);
                    if (!was && flush_out(c) < 0) { conn_close(c); i--; }
                }
            }
        }
        if (parent && t >= next_parent_check) {
            next_parent_check = t + 0.5;
            if (kill((pid_t)parent, 0) && errno == ESRCH) break;
        }
    }
    return 0;
}
