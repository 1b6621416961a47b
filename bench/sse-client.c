/* SPDX-License-Identifier: Apache-2.0 */
/* bench/sse-client.c - N concurrent Server-Sent-Events subscribers plus a
 * latency probe, in one epoll loop (so the client is not the bottleneck).
 *
 * Each stream i GETs PREFIX + "bench-<i>/subscribe" over HTTP/1.1 and reads
 * events whose data carries "ts":<epoch microseconds> (bench/upstream.c
 * writes it); the relay delay of an event is arrival time - ts.
 * The probe GETs PROBE_PATH on one keep-alive connection every -r ms and
 * records the response time (Content-Length bodies only).
 *
 * Phases: open the N streams (in batches), wait until every stream has
 * had its first event (or -w seconds), print "ready <seconds>" on stdout,
 * measure for -d seconds, print one JSON line of results, exit.
 *
 * Usage: sse-client -p PORT -u PREFIX -n N -d HOLD [-q PROBE_PATH -r MS] [-w WAIT] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef struct st {
    int fd;
    int idx;
    int connected, got_first, closed, probe;
    char line[1024];
    size_t llen;
    /* probe */
    char buf[8192];
    size_t blen;
    long want;              /* body bytes still expected, -1: reading headers */
    double sent_at;
} st;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, long n, double p)
{
    long i;
    if (n <= 0) return -1;
    i = (long)(p * (double)(n - 1) + 0.5);
    return v[i];
}

typedef struct vec { double *v; long n, cap; } vec;
static void push(vec *x, double d)
{
    if (x->n == x->cap) { x->cap = x->cap ? x->cap * 2 : 65536; x->v = realloc(x->v, sizeof(double) * (size_t)x->cap); }
    x->v[x->n++] = d;
}

static int port, ep;
static struct sockaddr_in sa;
static const char *prefix, *probe_path;
static int measuring;
static vec delays, probes;
static long events_total, errors, closed_early, ready_count, probe_errors;

static int open_conn(st *s)
{
    int one = 1;
    struct epoll_event ev;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) return -1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(s->fd, (struct sockaddr *)&sa, sizeof sa) && errno != EINPROGRESS) {
        close(s->fd);
        s->fd = -1;
        return -1;
    }
    ev.events = EPOLLOUT | EPOLLIN;
    ev.data.ptr = s;
    epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
    return 0;
}

static void send_req(st *s)
{
    char req[512];
    int n;
    struct epoll_event ev;
    if (s->probe) {
        n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "User-Agent: cr-bench-probe\r\n\r\n", probe_path, port);
        s->want = -1;
        s->blen = 0;
        s->sent_at = now_s();
    }
    else {
        n = snprintf(req, sizeof req, "GET %sbench-%06d/subscribe HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Accept: text/event-stream\r\nUser-Agent: cr-bench-sse\r\n\r\n",
                     prefix, s->idx, port);
    }
    if (write(s->fd, req, (size_t)n) != n) {
        errors++;
    }
    ev.events = EPOLLIN;
    ev.data.ptr = s;
    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
}

static void on_line(st *s, const char *l, size_t n, double t)
{
    const char *p = memmem(l, n, "\"ts\":", 5);
    if (!p) return;
    {
        double ts = strtod(p + 5, NULL) / 1e6;
        events_total++;
        if (!s->got_first) { s->got_first = 1; ready_count++; }
        if (measuring) push(&delays, (t - ts) * 1000.0);
    }
}

static void on_stream_data(st *s, const char *b, size_t n, double t)
{
    size_t i;
    for (i = 0; i < n; i++) {
        char ch = b[i];
        if (ch == '\n') {
            on_line(s, s->line, s->llen, t);
            s->llen = 0;
        }
        else if (s->llen < sizeof s->line) {
            s->line[s->llen++] = ch;
        }
    }
}

/* Returns 1 when a whole probe answer is in. */
static int on_probe_data(st *s, const char *b, size_t n)
{
    if (s->want < 0) {
        size_t old = s->blen, room = sizeof s->buf - 1 - s->blen, take = n < room ? n : room;
        char *e, *cl;
        memcpy(s->buf + s->blen, b, take);
        s->blen += take;
        s->buf[s->blen] = '\0';
        e = memmem(s->buf, s->blen, "\r\n\r\n", 4);
        if (!e) {
            if (s->blen >= sizeof s->buf - 1) { probe_errors++; s->want = 0; return 1; }
            return 0;
        }
        *e = '\0';
        cl = strcasestr(s->buf, "\r\nContent-Length:");
        if (!cl || strncmp(s->buf + 9, "200", 3)) { probe_errors++; s->want = 0; return 1; }
        s->want = strtol(cl + 17, NULL, 10);
        s->want -= (long)((old + n) - (size_t)(e + 4 - s->buf));
        s->blen = 0;
        return s->want <= 0;
    }
    s->want -= (long)n;
    return s->want <= 0;
}

int main(int argc, char **argv)
{
    int n = 100, opt, i;
    double hold = 10, wait_first = 30, probe_ms = 20;
    st *ss, probe;
    struct epoll_event evs[512];
    struct rlimit rl;
    double t0, ready_at = 0, end_at = 0, next_probe = 0;
    int opened = 0, probe_busy = 0;
    char rbuf[65536];

    while ((opt = getopt(argc, argv, "p:u:n:d:q:r:w:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'u': prefix = optarg; break;
        case 'n': n = atoi(optarg); break;
        case 'd': hold = atof(optarg); break;
        case 'q': probe_path = optarg; break;
        case 'r': probe_ms = atof(optarg); break;
        case 'w': wait_first = atof(optarg); break;
        default:
            fprintf(stderr, "usage: %s -p PORT -u PREFIX -n N -d HOLD [-q PROBE_PATH -r MS] [-w WAIT]\n", argv[0]);
            return 2;
        }
    }
    if (!port || !prefix) { fprintf(stderr, "-p and -u required\n"); return 2; }
    if (!getrlimit(RLIMIT_NOFILE, &rl)) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ep = epoll_create1(EPOLL_CLOEXEC);
    ss = calloc((size_t)n, sizeof *ss);
    memset(&probe, 0, sizeof probe);
    probe.probe = 1;
    probe.fd = -1;

    t0 = now_s();
    for (;;) {
        double t = now_s();
        int k, timeout = 5;
        /* open streams in batches of 50 every 5 ms */
        for (k = 0; k < 50 && opened < n; k++, opened++) {
            ss[opened].idx = opened;
            if (open_conn(&ss[opened])) errors++;
        }
        if (!ready_at && opened == n && (ready_count >= n || t - t0 > wait_first)) {
            ready_at = t;
            end_at = t + hold;
            measuring = 1;
            printf("ready %.3f %ld\n", t - t0, ready_count);
            fflush(stdout);
            if (probe_path) {
                if (open_conn(&probe)) { probe_errors++; }
                else { probe_busy = 1; }
                next_probe = t;
            }
        }
        if (ready_at && t >= end_at) break;
        if (probe_path && ready_at && !probe_busy && probe.fd >= 0 && t >= next_probe) {
            send_req(&probe);
            probe_busy = 1;
            next_probe = t + probe_ms / 1000.0;
        }
        k = epoll_wait(ep, evs, 512, timeout);
        t = now_s();
        for (i = 0; i < k; i++) {
            st *s = evs[i].data.ptr;
            if (!s->connected && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    errors++;
                    epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
                    close(s->fd);
                    s->fd = -1;
                    s->closed = 1;
                    if (s->probe) probe_errors++;
                    continue;
                }
                s->connected = 1;
                if (s->probe) { probe_busy = 0; }
                else send_req(s);
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = read(s->fd, rbuf, sizeof rbuf);
                if (r <= 0) {
                    if (r < 0 && errno == EAGAIN) continue;
                    epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
                    close(s->fd);
                    s->fd = -1;
                    s->closed = 1;
                    if (s->probe) { probe_errors++; }
                    else closed_early++;
                    continue;
                }
                if (s->probe) {
                    if (on_probe_data(s, rbuf, (size_t)r)) {
                        push(&probes, (t - s->sent_at) * 1000.0);
                        probe_busy = 0;
                    }
                }
                else on_stream_data(s, rbuf, (size_t)r, t);
            }
        }
    }
    qsort(delays.v, (size_t)delays.n, sizeof(double), cmpd);
    qsort(probes.v, (size_t)probes.n, sizeof(double), cmpd);
    printf("{\"n\":%d,\"ready_s\":%.3f,\"streams_with_event\":%ld,\"events\":%ld,\"delay_samples\":%ld,"
           "\"delay_p50_ms\":%.3f,\"delay_p99_ms\":%.3f,\"delay_max_ms\":%.3f,"
           "\"probe_n\":%ld,\"probe_p50_ms\":%.3f,\"probe_p99_ms\":%.3f,\"probe_max_ms\":%.3f,"
           "\"errors\":%ld,\"closed_early\":%ld,\"probe_errors\":%ld}\n",
           n, ready_at - t0, ready_count, events_total, delays.n,
           pct(delays.v, delays.n, 0.5), pct(delays.v, delays.n, 0.99),
           delays.n ? delays.v[delays.n - 1] : -1,
           probes.n, pct(probes.v, probes.n, 0.5), pct(probes.v, probes.n, 0.99),
           probes.n ? probes.v[probes.n - 1] : -1,
           errors, closed_early, probe_errors);
    return 0;
}
