#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# Deployment benchmarks for issue #11: HTTP/2 and TLS.  See bench/README.md.
#
#   bench/h2.pl catalog|stream|tls|all [--duration S] [--rounds N] [--conns 50]
#               [--streams 50] [--hold S] [--requests N] [--quick]
#
#   catalog  h2load over h2 (TLS): the module's warm catalog (`brands`) and an
#            uncached price quote (`products/price`, one upstream call each)
#            against the same Apache serving the same bytes as static files
#            (EnableSendfile On).  Median req/s, mean latency, httpd CPU µs per
#            request; ratios module/static.
#   stream   relay delay of order-stream events over h2 and over HTTP/1.1 on the
#            same TLS listener: N streams, the fast upstream sends one event a
#            second carrying its send time; p50/p99 of arrival - send.
#   tls      the upstream over TLS (the sandbox with a CA made for the run, the
#            module trusting it with CryptorefillsCACertificateFile) against the
#            same upstream over plain http: sequential uncached price quotes,
#            p50/p99 of the module's added latency over calling the upstream
#            directly, and the upstream's TLS connections (= full handshakes)
#            per 1000 requests, counted by the sandbox.
#
# Configurations alternate within each round; medians are reported.  Needs
# h2load (nghttp2-client) and curl; the module must have the issue #11
# directives for `tls`.  Results: a table on stdout and
# bench/results/h2-<time>.json.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use Cwd qw(abs_path);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use Getopt::Long;
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);
use IO::Select;
use Test::More ();
use CrTest;
use CrSandbox;
use CrPki;
use CrCurl;

my $BENCH = abs_path($FindBin::Bin);
my $DATA = "$BENCH/data";
my %opt = (duration => 10, rounds => 3, conns => 50, streams => 50, hold => 10, requests => 1000);
GetOptions(\%opt, 'duration=f', 'rounds=i', 'conns=i', 'streams=i', 'hold=f', 'requests=i', 'quick')
    or die "bad options\n";
@opt{qw(duration rounds streams hold requests)} = (2, 1, 10, 3, 200) if $opt{quick};
my @which = @ARGV ? @ARGV : ('all');
@which = qw(catalog stream tls) if grep { $_ eq 'all' } @which;
for (@which) { die "unknown benchmark $_\n" unless /^(catalog|stream|tls)$/ }
for my $tool (qw(h2load curl cc)) {
    die "$tool not found (scripts/install-deps --bench)\n" unless grep { -x "$_/$tool" } split /:/, $ENV{PATH};
}

$| = 1;
Test::More->builder->no_ending(1);   # CrTest reports its error-log checks as tests
my $WORK = tempdir('cr-bench-h2-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CR_KEEP});
chmod 0755, $WORK;
my $HZ = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;
my $PRICE_Q = 'brand_name=Airbnb&country_code=US&face_value=100&coin=USDC';
my $pki = CrPki->new;
my %results = (options => \%opt, started => time);

sub median {
    my @v = sort { $a <=> $b } grep { defined } @_;
    return undef unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}
sub pct {
    my ($p, @v) = @_;
    @v = sort { $a <=> $b } @v;
    return undef unless @v;
    return $v[ int($p / 100 * $#v + 0.5) ];
}
sub slurp { open my $fh, '<', $_[0] or die "$_[0]: $!"; local $/; scalar <$fh> }
sub spit { open my $fh, '>', $_[0] or die "$_[0]: $!"; print $fh $_[1]; close $fh }
sub check { my ($what, $ok, $got) = @_; die "CHECK FAILED: $what (got $got)\n" unless $ok; print "  ok: $what\n" }

# The fast fixed-answer upstream of the other benchmarks (bench/upstream.c).
my @UP;
END { local $?; for (@UP) { kill 'TERM', $_; waitpid($_, 0) } }
sub start_upstream {
    my ($interval_ms) = @_;
    system('cc', '-O2', '-Wall', '-o', "$WORK/upstream", "$BENCH/upstream.c") == 0 or die "cc upstream.c failed\n"
        unless -x "$WORK/upstream";
    my $log = "$WORK/upstream-" . scalar(@UP) . '.out';
    spit($log, '');
    my $parent = $$;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', $log; open STDERR, '>&', \*STDOUT;
        exec "$WORK/upstream", '-d', $DATA, '-P', $parent, '-i', $interval_ms or POSIX::_exit(127);
    }
    push @UP, $pid;
    for (1 .. 200) {
        return "http://127.0.0.1:$1" if slurp($log) =~ /listening on (\d+)/;
        sleep 0.025;
    }
    die "upstream did not start: " . slurp($log);
}

sub httpd_cpu {
    my ($httpd) = @_;
    my $t = 0;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $s = <$fh> // next;
        my ($pid) = $stat =~ m{/proc/(\d+)/};
        $s =~ s/^.*\) //;
        my @f = split ' ', $s;
        next unless $pid == $httpd->{pid} || $f[1] == $httpd->{pid};
        $t += $f[11] + $f[12];
    }
    return $t / $HZ;
}

sub h2load {
    my ($httpd, $url, $conns) = @_;
    my $c0 = httpd_cpu($httpd);
    my $out = `h2load -t 1 -c $conns -m 10 -D $opt{duration} --warm-up-time=1 '$url' 2>&1`;
    my $cpu = httpd_cpu($httpd) - $c0;
    my ($rps) = $out =~ /finished in [\d.]+\w*, ([\d.]+) req\/s/;
    my ($done, $ok) = $out =~ /requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded/;
    my ($mean) = $out =~ /time for request:\s+\S+\s+\S+\s+(\S+)/;
    my ($s2xx) = $out =~ /status codes: (\d+) 2xx/;
    die "h2load failed on $url:\n$out" unless defined $rps && $done;
    return { rps => $rps, done => $done, failed => $done - ($s2xx // 0), mean => $mean,
             cpu_us => $done ? $cpu / $done * 1e6 : undef };
}

# ---------------------------------------------------------------------------
sub bench_catalog {
    print "== catalog and price quote over h2 (TLS), h2load -c $opt{conns} -m 10\n";
    my $up = start_upstream(1000);
    my $httpd = CrTest->start(upstream => $up, tls => $pki, h2 => 1,
        conf => "EnableSendfile On\nCryptorefillsCacheTTL 3600\nH2MaxWorkers 64\n",
        mpm_conf => "StartServers 2\nServerLimit 4\nThreadsPerChild 32\nMaxRequestWorkers 128\n"
                  . "MinSpareThreads 32\nMaxSpareThreads 128\n");
    my %get = (proto => 'h2', ca => $pki->ca_file);
    my $brands = CrCurl::request(url => $httpd->url('/api/brands?country_code=US'), %get);
    check('module brands answers 200 over h2', $brands->{code} == 200 && $brands->{version} eq '2', $brands->{code});
    my $price = CrCurl::request(url => $httpd->url("/api/products/price?$PRICE_Q"), %get);
    check('module price answers 200', $price->{code} == 200, $price->{code});
    # The static twins: the very bytes the module answered.
    my $static = "$httpd->{dir}/htdocs/static";
    make_path($static);
    spit("$static/brands-US.json", $brands->{body});
    spit("$static/price.json", $price->{body});
    system('chmod', '-R', 'a+rX', $static);
    my $s = CrCurl::request(url => $httpd->url('/static/brands-US.json'), %get);
    check('static brands has the same bytes', $s->{body} eq $brands->{body}, length $s->{body});
    my %cfg = (
        'module brands'  => $httpd->url('/api/brands?country_code=US'),
        'static brands'  => $httpd->url('/static/brands-US.json'),
        'module price'   => $httpd->url("/api/products/price?$PRICE_Q"),
        'static price'   => $httpd->url('/static/price.json'),
    );
    my @order = ('module brands', 'static brands', 'module price', 'static price');
    my %runs;
    for my $round (1 .. $opt{rounds}) {
        for my $name (@order) {
            my $r = h2load($httpd, $cfg{$name}, $opt{conns});
            push @{ $runs{$name} }, $r;
            printf "  round %d %-14s %9.0f req/s  mean %-8s  %6.1f µs CPU/req  failed %d\n",
                $round, $name, $r->{rps}, $r->{mean} // '?', $r->{cpu_us} // 0, $r->{failed};
        }
    }
    my %sum;
    for my $name (@order) {
        $sum{$name} = { rps => median(map { $_->{rps} } @{ $runs{$name} }),
                        cpu_us => median(map { $_->{cpu_us} } @{ $runs{$name} }),
                        failed => 0 + eval { my $t = 0; $t += $_->{failed} for @{ $runs{$name} }; $t } };
    }
    for my $what (qw(brands price)) {
        my ($m, $st) = @sum{"module $what", "static $what"};
        printf "  %-6s module/static: %.2fx req/s, %.2fx CPU per request (median of %d)\n",
            $what, $m->{rps} / $st->{rps}, $m->{cpu_us} / ($st->{cpu_us} || 1), $opt{rounds};
    }
    $results{catalog} = { runs => \%runs, summary => \%sum };
    $httpd->stop;
}

# ---------------------------------------------------------------------------
sub bench_stream {
    print "== order-stream relay delay, $opt{streams} streams for $opt{hold} s, h2 vs HTTP/1.1 (TLS)\n";
    my $up = start_upstream(1000);
    my $httpd = CrTest->start(upstream => $up, tls => $pki, h2 => 1,
        conf => "CryptorefillsStreamHeartbeat 60\nCryptorefillsMaxStreams 1000\n"
              . "CryptorefillsMaxStreamsPerClient 1000\nH2MaxWorkers 256\n",
        mpm_conf => "StartServers 4\nServerLimit 8\nThreadsPerChild 64\nMaxRequestWorkers 512\n"
                  . "MinSpareThreads 64\nMaxSpareThreads 512\n");
    my %d;
    for my $round (1 .. $opt{rounds}) {
        for my $proto (qw(h2 h1)) {
            my @s = map { CrCurl::stream(url => $httpd->url("/api/orders/bench-$proto-$round-$_/subscribe"),
                                         proto => $proto, ca => $pki->ca_file, max_time => $opt{hold} + 30) }
                    1 .. $opt{streams};
            my $end = time + $opt{hold};
            my @delay;
            # One select over every stream, so reading one never delays another.
            my $sel = IO::Select->new(map { $_->{fh} } @s);
            my %by_fh = map { ($_->{fh} => $_) } @s;
            while (time < $end) {
                for my $fh ($sel->can_read(0.2)) {
                    my $st = $by_fh{$fh};
                    $sel->remove($fh) if $st->_pump(0) == 0;
                    while (my $e = shift @{ $st->{events} }) {
                        # the first event answers the connect: count the relay of later ones
                        next unless $st->{seen_first}++;
                        my ($ts) = ($e->{data} // '') =~ /"ts":(\d+)/;
                        push @delay, $e->{t} - $ts / 1e6 if $ts;
                    }
                }
            }
            my $ver = $s[0]->version // '?';
            $_->close for @s;
            push @{ $d{$proto} }, @delay;
            printf "  round %d %-3s (HTTP/%s) %5d events  p50 %.2f ms  p99 %.2f ms\n", $round, $proto, $ver,
                scalar @delay, (pct(50, @delay) // 0) * 1000, (pct(99, @delay) // 0) * 1000;
        }
    }
    my %sum = map { $_ => { events => scalar @{ $d{$_} }, p50_ms => (pct(50, @{ $d{$_} }) // 0) * 1000,
                            p99_ms => (pct(99, @{ $d{$_} }) // 0) * 1000 } } keys %d;
    printf "  h2 p50 %.2f ms vs HTTP/1.1 p50 %.2f ms\n", $sum{h2}{p50_ms}, $sum{h1}{p50_ms};
    $results{stream} = \%sum;
    $httpd->stop;
}

# ---------------------------------------------------------------------------
sub timed_gets {
    my ($ua, $url, $n) = @_;
    my @lat;
    for (1 .. $n) {
        my $t0 = time;
        my $r = $ua->get($url);
        die "GET $url: $r->{status} $r->{content}\n" unless $r->{success};
        push @lat, time - $t0;
    }
    return @lat;
}

sub bench_tls {
    print "== upstream over TLS vs plain http: $opt{requests} sequential price quotes per round\n";
    my ($cert, $key) = $pki->cert('server');
    my %sb = (tls => CrSandbox->start(tls_cert => $cert, tls_key => $key),
              plain => CrSandbox->start());
    my %ap = (
        tls => CrTest->start(sandbox => $sb{tls}, conf => 'CryptorefillsCACertificateFile "' . $pki->ca_file . "\"\n"),
        plain => CrTest->start(sandbox => $sb{plain}),
    );
    my $direct = HTTP::Tiny->new(keep_alive => 1, timeout => 10,
        SSL_options => { SSL_ca_file => $pki->ca_file }, verify_SSL => 1);
    my $via = HTTP::Tiny->new(keep_alive => 1, timeout => 10);
    my (%lat, %conns);
    for my $round (1 .. $opt{rounds}) {
        for my $k (qw(tls plain)) {
            my $c0 = $sb{$k}->connections;
            my @m = timed_gets($via, $ap{$k}->url("/api/products/price?$PRICE_Q"), $opt{requests});
            my $c1 = $sb{$k}->connections;
            my @d = timed_gets($direct, $sb{$k}->url . "/v4/products/price?$PRICE_Q", $opt{requests});
            push @{ $lat{$k}{module} }, @m;
            push @{ $lat{$k}{direct} }, @d;
            # Each TLS connection the upstream accepted is one full handshake.
            $conns{$k} += $c1 - $c0;
            printf "  round %d %-5s module p50 %.2f p99 %.2f ms | direct p50 %.2f p99 %.2f ms | %d upstream connections\n",
                $round, $k, map({ (pct($_, @m) // 0) * 1000 } 50, 99), map({ (pct($_, @d) // 0) * 1000 } 50, 99), $c1 - $c0;
        }
    }
    my %sum;
    for my $k (qw(tls plain)) {
        my ($m, $d) = @{ $lat{$k} }{qw(module direct)};
        $sum{$k} = { added_p50_ms => ((pct(50, @$m) // 0) - (pct(50, @$d) // 0)) * 1000,
                     added_p99_ms => ((pct(99, @$m) // 0) - (pct(99, @$d) // 0)) * 1000,
                     connections_per_1000 => $conns{$k} / ($opt{requests} * $opt{rounds}) * 1000 };
        printf "  %-5s added latency p50 %.2f ms, p99 %.2f ms; upstream connections per 1000 requests: %.1f\n",
            $k, @{ $sum{$k} }{qw(added_p50_ms added_p99_ms connections_per_1000)};
    }
    $results{tls} = \%sum;
    $_->stop for values %ap;
    $_->stop for values %sb;
}

my %run = (catalog => \&bench_catalog, stream => \&bench_stream, tls => \&bench_tls);
$run{$_}->() for @which;
make_path("$BENCH/results");
my $file = "$BENCH/results/h2-" . strftime('%Y%m%d-%H%M%S', localtime) . '.json';
spit($file, JSON::PP->new->canonical->pretty->encode(\%results));
spit("$BENCH/results/h2-latest.json", slurp($file));
print "results: $file\n";
