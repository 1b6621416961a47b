#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# Benchmarks of mod_cryptorefills against stock Apache references measured in
# the same run.  See bench/README.md.
#
#   bench/bench.pl proxy|catalog|validation|streams|idempotency|all [--duration S] [--rounds N]
#                  [--conns 1,50] [--streams 100,500,1000] [--hold S] [--quick]
#                  [--baseline-module PATH.so] [--baseline-rev REV]
#
# Everything runs on 127.0.0.1 free ports: a fast fixed-answer upstream
# (bench/upstream.c, built here with cc), Apache with the module (t/lib/CrTest.pm,
# CR_MODULE picks the build), a stock Apache (mod_proxy_http, mod_cache), wrk -t1.
# Configurations are alternated (a, b, c, a, b, c, ...) and medians reported.
# Results: a table on stdout and bench/results/<bench>-<time>.json.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use Cwd qw(abs_path);
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use Getopt::Long;
use HTTP::Tiny;
use IO::Socket::INET;
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use JSON::PP;
use POSIX qw(strftime WNOHANG);
use Time::HiRes qw(sleep time);
use CrTest;
sub track;

my $BENCH = abs_path($FindBin::Bin);
my $ROOT = abs_path("$BENCH/..");
my $DATA = "$BENCH/data";
my %opt = (duration => 10, rounds => 3, warmup => 2);
GetOptions(\%opt, 'duration=f', 'rounds=i', 'conns=s', 'streams=s', 'hold=f', 'quick',
           'warmup=f', 'no-wait', 'baseline-module=s', 'baseline-rev=s',
           'small-mpm', 'baseline=s', 'stock-mpm=s', 'relays=s', 'mem-detail') or die "bad options\n";
if ($opt{quick}) { $opt{duration} = 2; $opt{rounds} = 1; $opt{warmup} = 1; $opt{hold} //= 3;
                   $opt{streams} //= '100'; }
$opt{hold} //= 10;
my @benches = @ARGV ? @ARGV : ('all');
@benches = qw(proxy catalog validation streams idempotency) if grep { $_ eq 'all' } @benches;
for (@benches) { die "unknown benchmark $_\n" unless /^(proxy|catalog|validation|streams|idempotency)$/ }

$| = 1;
my $WORK = tempdir('cr-bench-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CR_KEEP});
chmod 0755, $WORK;
my $HZ = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;
my $http = HTTP::Tiny->new(timeout => 30, keep_alive => 0);
my $MODDIR = do { my $d = `apxs -q LIBEXECDIR 2>/dev/null`; chomp $d; $d || '/usr/lib/apache2/modules' };
my $ORDER = slurp("$DATA/order.json");
my $PARTNER = 'partner-secret-id-0001';

# ---------------------------------------------------------------- helpers
sub slurp { my ($f) = @_; open my $fh, '<:raw', $f or die "$f: $!"; local $/; my $c = <$fh>; $c }
sub spit { my ($f, $c) = @_; open my $fh, '>:raw', $f or die "$f: $!"; print $fh $c; close $fh }
sub median {
    my @v = sort { $a <=> $b } grep { defined } @_;
    return undef unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub build {
    for my $p (qw(upstream sse-client)) {
        my $out = "$WORK/$p";
        system('cc', '-O2', '-Wall', '-o', $out, "$BENCH/$p.c") == 0 or die "cc $p.c failed\n";
    }
}

my @UPSTREAMS;
sub start_upstream {
    my (%o) = @_;
    my $log = "$WORK/upstream-" . scalar(@UPSTREAMS) . ".out";
    spit($log, '');
    my $parent = $$;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', $log; open STDERR, '>&', \*STDOUT;
        { exec "$WORK/upstream", '-d', $DATA, '-P', $parent, '-i', $o{interval_ms} // 1000; }
        POSIX::_exit(127);
    }
    my $port;
    for (1 .. 200) {
        if (slurp($log) =~ /listening on (\d+)/) { $port = $1; last }
        sleep 0.025;
    }
    die "upstream did not start: " . slurp($log) unless $port;
    my $u = { pid => $pid, port => $port, url => "http://127.0.0.1:$port",
              ua => HTTP::Tiny->new(keep_alive => 1, timeout => 10) };
    push @UPSTREAMS, $u;
    return $u;
}
sub stop_upstream {
    my ($u) = @_;
    return unless $u->{pid};
    kill 'TERM', $u->{pid};
    waitpid($u->{pid}, 0);
    delete $u->{pid};
}
END { local $?; stop_upstream($_) for @UPSTREAMS; }
sub up_stats { my ($u, $reset) = @_;
    my $r = $u->{ua}->get("$u->{url}/_stats" . ($reset ? '/reset' : ''));
    return $r->{success} ? decode_json($r->{content}) : {} }

sub children_of {
    my ($ppid) = @_;
    my @k;
    for my $d (glob '/proc/[0-9]*') {
        open my $fh, '<', "$d/stat" or next;
        my $s = <$fh> // next;
        $s =~ s/^.*\) //;
        my @f = split ' ', $s;
        push @k, ($d =~ m{(\d+)$})[0] if $f[1] == $ppid;
    }
    return @k;
}
sub tree { my ($pid) = @_; return ($pid, children_of($pid)) }
sub cpu_ticks {
    my $t = 0;
    for my $p (@_) {
        open my $fh, '<', "/proc/$p/stat" or next;
        my $s = <$fh>; $s =~ s/^.*\) //;
        my @f = split ' ', $s;
        $t += $f[11] + $f[12];
    }
    return $t;
}
sub threads_of {   # threads summed over the processes
    my $t = 0;
    for my $p (@_) { $t += $1 if (eval { slurp("/proc/$p/status") } // '') =~ /^Threads:\s+(\d+)/m }
    return $t;
}
# --mem-detail: PSS by kind of mapping (heap, anonymous, thread stacks and
# other private maps, files), summed over the processes: where a stream's
# memory goes.
sub mem_detail {
    my %k;
    for my $p (@_) {
        open my $fh, '<', "/proc/$p/smaps" or next;
        my $kind = 'other';
        while (<$fh>) {
            if (/^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/) {
                my $n = $1;
                $kind = $n eq '[heap]' ? 'heap' : $n eq '' ? 'anon' : $n =~ /^\[/ ? 'other' : 'file';
            }
            $k{$kind} += $1 if /^Pss:\s+(\d+)/;
        }
    }
    return \%k;
}
sub mem_kb {   # (rss, pss) summed over the processes
    my ($rss, $pss) = (0, 0);
    for my $p (@_) {
        open my $fh, '<', "/proc/$p/smaps_rollup" or next;
        while (<$fh>) { $rss += $1 if /^Rss:\s+(\d+)/; $pss += $1 if /^Pss:\s+(\d+)/ }
    }
    return ($rss, $pss);
}

sub machine {
    my %m;
    ($m{cpu}) = `lscpu` =~ /Model name:\s*(.+)/;
    $m{cores} = `nproc` + 0;
    ($m{mem_kb}) = slurp('/proc/meminfo') =~ /MemTotal:\s+(\d+)/;
    $m{kernel} = `uname -r`; chomp $m{kernel};
    ($m{apache}) = `${\ CrTest::apache_bin()} -v` =~ m{Server version:\s*(\S+)};
    ($m{curl}) = `curl --version` =~ /^(curl \S+)/;
    ($m{wrk}) = `wrk -v 2>&1` =~ /^(wrk \S+)/;
    $m{module} = CrTest::module_path();
    ($m{commit}) = `git -C '$ROOT' rev-parse --short HEAD 2>/dev/null` =~ /(\S+)/;
    return \%m;
}
sub loadavg { (split ' ', slurp('/proc/loadavg'))[0] }

# ---------------------------------------------------------------- servers
my $MPM_SMALL = "StartServers 4\nServerLimit 4\nThreadsPerChild 25\nMaxRequestWorkers 100\n"
              . "MinSpareThreads 25\nMaxSpareThreads 100\n";
my $MPM_BIG = "StartServers 24\nServerLimit 24\nThreadLimit 64\nThreadsPerChild 64\n"
            . "MaxRequestWorkers 1536\nMinSpareThreads 64\nMaxSpareThreads 1536\n"
            . "ListenBacklog 4096\n";

# Static files: the catalog bytes (and a precompressed twin), the module's
# local-rejection answer.
sub htdocs {
    my $h = "$WORK/htdocs";
    return $h if -d $h;
    make_path($h);
    spit("$h/brands.json", slurp("$DATA/brands-US.json"));
    system("gzip -6 -n -c '$h/brands.json' > '$h/brands.json.gz'") == 0 or die "gzip\n";
    system('chmod', '-R', 'a+rX', $WORK);
    return $h;
}

# Apache with the module, plus the static references.
sub start_module_server {
    my ($up, %o) = @_;
    my $h = htdocs();
    return track(scalar CrTest->start(
        upstream => $up->{url}, htdocs => $h, mpm_conf => $o{mpm} // $MPM_SMALL,
        modules => ['rewrite', @{ $o{modules} || [] }], no_log_check => 1,
        conf => <<"CONF" . ($o{conf} // '')));
EnableSendfile On
# as Debian's apache2.conf: no .htaccess lookups
<Directory />
    AllowOverride None
</Directory>
CryptorefillsDefaultCountry US
RewriteEngine On
RewriteCond %{HTTP:Accept-Encoding} gzip
RewriteRule ^/brands\\.json\$ /brands.json.gz [L]
<Files "brands.json.gz">
    ForceType application/json
    Header set Content-Encoding gzip
</Files>
<FilesMatch "^brands\\.json">
    Header append Vary Accept-Encoding
</FilesMatch>
CONF
}

# Stock Apache: mod_proxy_http (/stock/), the same with flushpackets for
# streams (/sse/), and mod_proxy_http + mod_cache + mod_cache_socache (/cache/).
sub start_stock_server {
    my ($up, %o) = @_;
    my $u = $up->{url};
    return track(scalar CrTest->start(
        location => 0, htdocs => htdocs(), mpm_conf => $o{mpm} // $MPM_SMALL,
        modules => [qw(proxy proxy_http cache cache_socache)], no_log_check => 1,
        conf => <<"CONF"));
EnableSendfile On
<Directory />
    AllowOverride None
</Directory>
ProxyPass /stock/ $u/
ProxyPass /sse/ $u/v5/orders/ flushpackets=on
ProxyPass /cache/ $u/v2/
RequestHeader set X-Cr-Application "$PARTNER"
RequestHeader set X-Cr-Version "1.0.0"
RequestHeader set X-Country-ISO-Code "US"
CacheEnable socache /cache/
CacheSocache shmcb:\@DIR\@/modcache(67108864)
CacheSocacheMaxSize 1048576
CacheHeader On
<Location "/cache/">
    AddOutputFilterByType DEFLATE application/json
</Location>
CONF
}

my @SERVERS;
END { local $?; for my $s (@SERVERS) { $s->stop(quiet => 1) if $s->{pid} } }
sub track { push @SERVERS, $_[0]; $_[0] }
sub stop_server {
    my ($s) = @_;
    my @bad = $s->unexpected_log_lines;
    $s->stop(quiet => 1);
    warn "  note: error log of httpd on port $s->{port}: $_\n" for @bad[0 .. ($#bad > 5 ? 5 : $#bad)];
    return scalar @bad;
}

# ---------------------------------------------------------------- checks
sub get { my ($url, %h) = @_; $http->get($url, { headers => \%h }) }
sub post { my ($url, $body) = @_;
    $http->post($url, { content => $body, headers => { 'Content-Type' => 'application/json' } }) }
sub gunz { my ($z) = @_; my $o; gunzip(\$z => \$o) or die "gunzip: $GunzipError\n"; $o }
sub check {
    my ($what, $ok, $detail) = @_;
    die "CHECK FAILED: $what" . ($detail ? " ($detail)" : '') . "\n" unless $ok;
    print "  ok: $what\n";
}

# ---------------------------------------------------------------- wrk
sub wrk {
    my (%c) = @_;
    my @cmd = ('wrk', '-t1', "-c$c{conns}", "-d$c{duration}s", '--timeout', '10s',
               '-s', "$BENCH/lib/" . ($c{script} // 'report.lua'));
    push @cmd, '-H', $_ for @{ $c{headers} || [] };
    push @cmd, $c{url};
    local $ENV{WRK_METHOD} = $c{method} if $c{method};
    local $ENV{WRK_BODY_FILE} = $c{body_file} if $c{body_file};
    local $ENV{WRK_LIB} = "$BENCH/lib";
    local @ENV{keys %{ $c{env} || {} }} = values %{ $c{env} || {} };
    my @pids = $c{server} ? tree($c{server}{pid}) : ();
    my @upids = $c{upstream} ? ($c{upstream}{pid}) : ();
    up_stats($c{upstream}, 1) if $c{upstream};
    my ($t0, $u0) = (cpu_ticks(@pids), cpu_ticks(@upids));
    my $out = `@{[ map { "'$_'" } @cmd ]} 2>&1`;
    my ($t1, $u1) = (cpu_ticks(@pids), cpu_ticks(@upids));
    my $us = $c{upstream} ? up_stats($c{upstream}) : {};
    my ($j) = $out =~ /^WRKJSON (\{.*\})$/m or die "wrk failed: $out\n";
    my $w = decode_json($j);
    my $secs = $w->{duration_us} / 1e6;
    my $r = {
        rps => $w->{requests} / $secs, requests => $w->{requests},
        p50_ms => $w->{p50_us} / 1000, p90_ms => $w->{p90_us} / 1000, p99_ms => $w->{p99_us} / 1000,
        max_ms => $w->{max_us} / 1000, mbytes_s => $w->{bytes} / $secs / 1e6,
        errors => $w->{err_connect} + $w->{err_read} + $w->{err_write} + $w->{err_timeout},
        non2xx => $w->{err_status},
        wrk_errors => { map { $_ => $w->{"err_$_"} } qw(connect read write timeout status) },
        httpd_cpu_us_per_req => @pids && $w->{requests} ? ($t1 - $t0) / $HZ * 1e6 / $w->{requests} : undef,
        httpd_cpu_util => @pids ? ($t1 - $t0) / $HZ / $secs : undef,
        upstream_cpu_util => @upids ? ($u1 - $u0) / $HZ / $secs : undef,
        upstream_accepts => $us->{accepts}, upstream_requests => $us->{requests},
        load1 => loadavg(),
    };
    return $r;
}

# Run every config (a, b, c, ...) rounds times, alternating; medians.
sub measure {
    my ($configs, %o) = @_;
    print "  warm-up\n";
    wrk(%$_, duration => $opt{warmup}) for @$configs;
    for my $round (1 .. $opt{rounds}) {
        for my $c (@$configs) {
            my $r = wrk(%$c, duration => $opt{duration});
            push @{ $c->{runs} }, $r;
            printf "  round %d %-28s c=%-3d %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  httpd %6.1f us/req%s%s\n",
                $round, $c->{name}, $c->{conns}, $r->{rps}, $r->{p50_ms}, $r->{p99_ms},
                $r->{httpd_cpu_us_per_req} // 0,
                defined $r->{upstream_accepts} ? "  upstream conns $r->{upstream_accepts}" : '',
                ($r->{errors} || $r->{non2xx}) ? "  ERRORS $r->{errors} non2xx $r->{non2xx}" : '';
        }
    }
    for my $c (@$configs) {
        my %m;
        for my $k (qw(rps p50_ms p99_ms max_ms httpd_cpu_us_per_req httpd_cpu_util upstream_accepts
                      upstream_cpu_util mbytes_s)) {
            $m{$k} = median(map { $_->{$k} } @{ $c->{runs} });
        }
        $m{errors} = 0; $m{errors} += $_->{errors} + $_->{non2xx} for @{ $c->{runs} };
        $c->{median} = \%m;
    }
}

sub table {
    my ($configs) = @_;
    my $fmt = "| %-28s | %5s | %9s | %8s | %8s | %10s | %9s | %6s |\n";
    printf $fmt, 'configuration', 'conns', 'req/s', 'p50 ms', 'p99 ms', 'httpd us/req', 'upstr conns', 'errors';
    printf $fmt, map { '-' x $_ } 28, 5, 9, 8, 8, 10, 9, 6;
    for my $c (@$configs) {
        my $m = $c->{median};
        printf $fmt, $c->{name}, $c->{conns}, sprintf('%.0f', $m->{rps}), sprintf('%.2f', $m->{p50_ms}),
            sprintf('%.2f', $m->{p99_ms}),
            defined $m->{httpd_cpu_us_per_req} ? sprintf('%.1f', $m->{httpd_cpu_us_per_req}) : '-',
            defined $m->{upstream_accepts} ? sprintf('%.0f', $m->{upstream_accepts}) : '-', $m->{errors};
    }
}

sub ratio {
    my ($configs, $label, $num, $den, $target) = @_;
    my %by = map { ($_->{name} . '@' . $_->{conns}) => $_ } @$configs;
    my ($n, $d) = ($by{$num}, $by{$den});
    return unless $n && $d;
    my $rps = $n->{median}{rps} / $d->{median}{rps};
    my $cpu = ($n->{median}{httpd_cpu_us_per_req} && $d->{median}{httpd_cpu_us_per_req})
        ? $d->{median}{httpd_cpu_us_per_req} / $n->{median}{httpd_cpu_us_per_req} : undef;
    # per-round ratios too (the configurations ran back to back)
    my @per = map { $n->{runs}[$_]{rps} / $d->{runs}[$_]{rps} } 0 .. $#{ $n->{runs} };
    my $r = { label => $label, num => $num, den => $den, rps_ratio => $rps,
              rps_ratio_per_round_median => median(@per), cpu_ratio => $cpu, target => $target,
              meets => defined $target ? ($rps >= $target ? JSON::PP::true : JSON::PP::false) : undef };
    printf "  %-44s %5.2fx (per-round median %.2fx; httpd CPU/req ratio %s)%s\n", $label, $rps,
        $r->{rps_ratio_per_round_median}, defined $cpu ? sprintf('%.2fx', $cpu) : '-',
        defined $target ? sprintf('  target >= %.2f: %s', $target, $rps >= $target ? 'MET' : 'NOT MET') : '';
    return $r;
}

sub save {
    my ($name, $data) = @_;
    make_path("$BENCH/results");
    my $f = "$BENCH/results/$name-" . strftime('%Y%m%d-%H%M%S', localtime) . '.json';
    my $js = JSON::PP->new->pretty->canonical;
    for my $c (@{ $data->{configs} || [] }) { delete @$c{qw(server upstream)} }
    spit($f, $js->encode($data));
    spit("$BENCH/results/$name-latest.json", $js->encode($data));
    print "  results: $f\n";
}

sub header {
    my ($name) = @_;
    print "\n== $name (duration $opt{duration}s x $opt{rounds} rounds, load $_[1])\n";
}

# ---------------------------------------------------------------- 1. proxy
sub bench_proxy {
    header('proxy', loadavg());
    my $up = start_upstream();
    my $A = start_module_server($up);
    my $S = start_stock_server($up);
    # --baseline PATH: a second build of the module (before/after in one run)
    my $B = $opt{baseline} ? do { local $ENV{CR_MODULE} = $opt{baseline}; start_module_server($up) } : undef;
    my $price_q = 'brand_name=Airbnb&country_code=US&face_value=100&coin=USDC';
    my $valid = slurp("$DATA/validations.json");
    my $price = slurp("$DATA/price.json");
    my $r = post($A->url('/api/orders/validations'), $ORDER);
    check('module POST orders/validations relays the upstream answer', $r->{status} == 200 && $r->{content} eq $valid, "$r->{status} " . substr($r->{content}, 0, 200));
    $r = post($S->url('/stock/v5/orders/validations'), $ORDER);
    check('stock POST relays the upstream answer', $r->{status} == 200 && $r->{content} eq $valid, $r->{status});
    $r = get($A->url("/api/products/price?$price_q"));
    check('module GET products/price relays the upstream answer', $r->{status} == 200 && $r->{content} eq $price, $r->{status});
    $r = get($S->url("/stock/v4/products/price?$price_q"));
    check('stock GET relays the upstream answer', $r->{status} == 200 && $r->{content} eq $price, $r->{status});

    my @conns = split /,/, ($opt{conns} // '50');
    my @configs;
    my $body = "$DATA/order.json";
    for my $c (@conns) {
        push @configs,
          { name => 'direct POST validations', conns => $c, url => "$up->{url}/v5/orders/validations",
            method => 'POST', body_file => $body, upstream => $up },
          { name => 'module POST validations', conns => $c, url => $A->url('/api/orders/validations'),
            method => 'POST', body_file => $body, server => $A, upstream => $up },
          { name => 'mod_proxy_http POST', conns => $c, url => $S->url('/stock/v5/orders/validations'),
            method => 'POST', body_file => $body, server => $S, upstream => $up },
          ($B ? { name => 'baseline POST validations', conns => $c, url => $B->url('/api/orders/validations'),
                  method => 'POST', body_file => $body, server => $B, upstream => $up } : ()),
          { name => 'direct GET price', conns => $c, url => "$up->{url}/v4/products/price?$price_q", upstream => $up },
          { name => 'module GET price', conns => $c, url => $A->url("/api/products/price?$price_q"),
            server => $A, upstream => $up },
          ($B ? { name => 'baseline GET price', conns => $c, url => $B->url("/api/products/price?$price_q"),
                  server => $B, upstream => $up } : ()),
          { name => 'mod_proxy_http GET price', conns => $c, url => $S->url("/stock/v4/products/price?$price_q"),
            server => $S, upstream => $up };
    }
    measure(\@configs);
    my $errs = stop_server($A) + stop_server($S) + ($B ? stop_server($B) : 0);
    stop_upstream($up);
    print "\n";
    table(\@configs);
    my @ratios;
    for my $c (@conns) {
        push @ratios, grep { $_ }
          ratio(\@configs, "POST c=$c module / mod_proxy_http", "module POST validations\@$c", "mod_proxy_http POST\@$c", 1.0),
          ratio(\@configs, "POST c=$c module / direct", "module POST validations\@$c", "direct POST validations\@$c"),
          ratio(\@configs, "GET c=$c module / mod_proxy_http", "module GET price\@$c", "mod_proxy_http GET price\@$c", 1.0),
          ratio(\@configs, "GET c=$c module / direct", "module GET price\@$c", "direct GET price\@$c"),
          ratio(\@configs, "POST c=$c module / baseline build", "module POST validations\@$c", "baseline POST validations\@$c"),
          ratio(\@configs, "GET c=$c module / baseline build", "module GET price\@$c", "baseline GET price\@$c"),
          ratio(\@configs, "POST c=$c baseline build / mod_proxy_http", "baseline POST validations\@$c", "mod_proxy_http POST\@$c"),
          ratio(\@configs, "GET c=$c baseline build / mod_proxy_http", "baseline GET price\@$c", "mod_proxy_http GET price\@$c");
    }
    save('proxy', { bench => 'proxy', configs => \@configs, ratios => \@ratios, opt => \%opt,
                    error_log_lines => $errs, load_end => loadavg() });
}

# ---------------------------------------------------------------- 2. catalog
sub bench_catalog {
    header('catalog', loadavg());
    my $up = start_upstream();
    my $A = start_module_server($up);
    my $S = start_stock_server($up);
    my $cat = slurp("$DATA/brands-US.json");
    my %gz = ('Accept-Encoding' => 'gzip');
    for my $i (1 .. 3) { get($A->url('/api/brands?country_code=US'), %gz); get($A->url('/api/brands?country_code=US'));
                         get($S->url('/cache/brands?country_code=US'), %gz); get($S->url('/cache/brands?country_code=US')); }
    my $r = get($A->url('/brands.json'));
    check('static plain = catalog bytes', $r->{status} == 200 && $r->{content} eq $cat && !$r->{headers}{'content-encoding'});
    $r = get($A->url('/brands.json'), %gz);
    check('static gzip twin decodes to the catalog', $r->{status} == 200 && ($r->{headers}{'content-encoding'} // '') eq 'gzip'
          && gunz($r->{content}) eq $cat, ($r->{headers}{'content-type'} // '') . ' ' . length $r->{content});
    my $static_gz = length $r->{content};
    $r = get($A->url('/api/brands?country_code=US'));
    check('module brands warm hit = catalog bytes', $r->{status} == 200 && $r->{content} eq $cat
          && ($r->{headers}{'x-cryptorefills-cache'} // '') eq 'hit', $r->{headers}{'x-cryptorefills-cache'});
    $r = get($A->url('/api/brands?country_code=US'), %gz);
    check('module brands gzip hit decodes to the catalog', $r->{status} == 200 && ($r->{headers}{'content-encoding'} // '') eq 'gzip'
          && gunz($r->{content}) eq $cat && ($r->{headers}{'x-cryptorefills-cache'} // '') eq 'hit');
    my $module_gz = length $r->{content};
    $r = get($S->url('/cache/brands?country_code=US'));
    check('mod_cache plain HIT = catalog bytes', $r->{status} == 200 && $r->{content} eq $cat
          && ($r->{headers}{'x-cache'} // '') =~ /^HIT/, $r->{headers}{'x-cache'});
    $r = get($S->url('/cache/brands?country_code=US'), %gz);
    check('mod_cache gzip HIT decodes to the catalog', $r->{status} == 200 && ($r->{headers}{'content-encoding'} // '') eq 'gzip'
          && gunz($r->{content}) eq $cat && ($r->{headers}{'x-cache'} // '') =~ /^HIT/, $r->{headers}{'x-cache'});
    my $cache_gz = length $r->{content};
    printf "  catalog %d B; gzip: static twin %d B, module %d B, mod_deflate via mod_cache %d B\n",
        length $cat, $static_gz, $module_gz, $cache_gz;

    my @conns = split /,/, ($opt{conns} // '1,50');
    my @configs;
    for my $enc ('plain', 'gzip') {
        my @h = $enc eq 'gzip' ? ('Accept-Encoding: gzip') : ();
        for my $c (@conns) {
            push @configs,
              { name => "static $enc", conns => $c, url => $A->url('/brands.json'), headers => \@h, server => $A },
              { name => "module $enc", conns => $c, url => $A->url('/api/brands?country_code=US'), headers => \@h,
                server => $A, upstream => $up },
              { name => "mod_cache $enc", conns => $c, url => $S->url('/cache/brands?country_code=US'), headers => \@h,
                server => $S, upstream => $up };
        }
    }
    measure(\@configs);
    my $errs = stop_server($A) + stop_server($S);
    stop_upstream($up);
    print "\n";
    table(\@configs);
    my @ratios;
    for my $enc ('plain', 'gzip') {
        for my $c (@conns) {
            push @ratios, grep { $_ }
              ratio(\@configs, "$enc c=$c module / static (b/a)", "module $enc\@$c", "static $enc\@$c", $enc eq 'gzip' ? 0.9 : 0.95),
              ratio(\@configs, "$enc c=$c module / mod_cache (b/c)", "module $enc\@$c", "mod_cache $enc\@$c");
        }
    }
    save('catalog', { bench => 'catalog', configs => \@configs, ratios => \@ratios, opt => \%opt,
                      sizes => { catalog => length $cat, static_gz => $static_gz, module_gz => $module_gz,
                                 mod_deflate_gz => $cache_gz },
                      error_log_lines => $errs, load_end => loadavg() });
}

# ---------------------------------------------------------------- 3. validation
sub bench_validation {
    header('validation', loadavg());
    my $up = start_upstream();
    my $A = start_module_server($up);
    my $bad = $ORDER; $bad =~ s/"beneficiary_account":"buyer\@example\.com"/"beneficiary_account":"not-an-email"/ or die;
    my $malformed = substr($ORDER, 0, -3);
    spit("$WORK/bad-email.json", $bad);
    spit("$WORK/malformed.json", $malformed);
    my $r = post($A->url('/api/orders/validations'), $ORDER);       # warms the catalogs
    my $st0 = up_stats($up);
    $r = post($A->url('/api/orders/validations'), $bad);
    my $st1 = up_stats($up);
    check('bad beneficiary email rejected locally (200 + problems, no upstream call)', $r->{status} == 200
          && $r->{content} =~ /"problems"/ && $r->{content} =~ /INVALID_BENEFICIARY_ACCOUNT|INVALID_REQUEST/
          && $st1->{requests} == $st0->{requests} + 1, "$r->{status} $r->{content}");
    # the static reference answers the same bytes
    spit("$WORK/htdocs/rejection.json", $r->{content});
    chmod 0644, "$WORK/htdocs/rejection.json";
    my $rej = $r->{content};
    $r = get($A->url('/rejection.json'));
    check('static file = the rejection bytes', $r->{status} == 200 && $r->{content} eq $rej);
    $r = post($A->url('/api/orders/validations'), $malformed);
    check('malformed JSON rejected locally (400)', $r->{status} == 400, $r->{status});
    $r = post($A->url('/api/orders/validations'), $ORDER);
    check('valid order goes upstream', $r->{status} == 200 && $r->{content} eq slurp("$DATA/validations.json"));

    my @conns = split /,/, ($opt{conns} // '50');
    my @configs;
    for my $c (@conns) {
        push @configs,
          { name => 'static file (same bytes)', conns => $c, url => $A->url('/rejection.json'), server => $A },
          { name => 'module reject bad email', conns => $c, url => $A->url('/api/orders/validations'),
            method => 'POST', body_file => "$WORK/bad-email.json", server => $A, upstream => $up },
          { name => 'module reject malformed', conns => $c, url => $A->url('/api/orders/validations'),
            method => 'POST', body_file => "$WORK/malformed.json", server => $A, upstream => $up },
          { name => 'module valid -> upstream', conns => $c, url => $A->url('/api/orders/validations'),
            method => 'POST', body_file => "$DATA/order.json", server => $A, upstream => $up };
    }
    measure(\@configs);
    my $errs = stop_server($A);
    stop_upstream($up);
    # a 400 is the expected answer of the malformed case, not an error
    print "\n";
    table(\@configs);
    print "  (errors of 'module reject malformed' are its expected 400 answers)\n";
    my @ratios;
    for my $c (@conns) {
        push @ratios, grep { $_ }
          ratio(\@configs, "c=$c bad-email rejection / static", "module reject bad email\@$c", "static file (same bytes)\@$c", 0.5),
          ratio(\@configs, "c=$c malformed rejection / static", "module reject malformed\@$c", "static file (same bytes)\@$c"),
          ratio(\@configs, "c=$c valid (with upstream) / static", "module valid -> upstream\@$c", "static file (same bytes)\@$c");
    }
    save('validation', { bench => 'validation', configs => \@configs, ratios => \@ratios, opt => \%opt,
                         error_log_lines => $errs, load_end => loadavg() });
}

# ---------------------------------------------------------------- 5. idempotency
# The module of a previous commit (today's socache records) for comparison:
# --baseline-module PATH.so, or built here from --baseline-rev (default main).
sub baseline_module {
    my $m = $opt{'baseline-module'} // $ENV{CR_MODULE_BASELINE};
    return abs_path($m) if $m;
    my $rev = $opt{'baseline-rev'} // 'main';
    my $dir = "$WORK/baseline";
    make_path($dir);
    print "  building the baseline module from $rev in $dir\n";
    system("cd '$ROOT' && git archive '$rev' | tar -x -C '$dir'") == 0 or die "git archive $rev failed\n";
    system("cd '$dir' && autoreconf -fi >/dev/null 2>&1 && ./configure >/dev/null && make -j2 >/dev/null")
        == 0 or die "baseline build failed in $dir\n";
    return "$dir/mod_cryptorefills.so";
}

my @REDIS;
END { local $?; for my $p (@REDIS) { kill 'TERM', $p; waitpid $p, 0 } }
sub start_redis {
    my $bin = '/usr/bin/redis-server';
    return undef unless -x $bin;
    my $port = CrTest::free_port();
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', '/dev/null'; open STDERR, '>&', \*STDOUT;
        { exec $bin, "--bind", "127.0.0.1", "--port", $port, "--save", "", "--appendonly", "no"; }
        POSIX::_exit(127);
    }
    push @REDIS, $pid;
    for (1 .. 200) {
        last if IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp');
        sleep 0.025;
    }
    return { pid => $pid, port => $port };
}

sub bench_idempotency {
    header('idempotency', loadavg());
    my $base = baseline_module();
    my $new = CrTest::module_path();
    my $up = start_upstream();
    my $redis = start_redis();
    print "  redis-server not installed: single server only\n" unless $redis;
    my $body = "$DATA/order-create.json";
    my $created = slurp("$DATA/order-created.json");
    my @servers = ([ 'new store', $new, '' ], [ 'before (socache)', $base, '' ]);
    push @servers, [ 'new store, redis', $new, "CryptorefillsCache redis:127.0.0.1:$redis->{port}\n" ],
                   [ 'before, redis', $base, "CryptorefillsCache redis:127.0.0.1:$redis->{port}\n" ] if $redis;
    my (%srv, @order);
    for my $s (@servers) {
        my ($name, $so, $conf) = @$s;
        local $ENV{CR_MODULE} = $so;
        my $h = start_module_server($up, conf => $conf, mpm => $MPM_SMALL,
                                    $conf ? (modules => ['socache_redis']) : ());
        $srv{$name} = $h;
        push @order, $name;
        my $key = "check-$$-" . int(time * 1000);
        my %h = ('Content-Type' => 'application/json', 'Idempotency-Key' => $key);
        my $r1 = $http->post($h->url('/api/orders'), { content => slurp($body), headers => \%h });
        my $r2 = $http->post($h->url('/api/orders'), { content => slurp($body), headers => \%h });
        check("$name: keyed POST orders creates the order", $r1->{status} == 200 && $r1->{content} eq $created,
              "$r1->{status} " . substr($r1->{content}, 0, 200));
        check("$name: its retry is a replay", $r2->{status} == 200
              && ($r2->{headers}{'idempotent-replayed'} // '') eq 'true', $r2->{status});
    }
    my @conns = split /,/, ($opt{conns} // '50');
    my @configs;
    my $run = 0;
    for my $c (@conns) {
        for my $name (@order) {
            for my $mode (qw(new replay)) {
                # new: a fresh key per request (claim, upstream call, completion); replay: one key
                push @configs, { name => "$name, $mode", conns => $c, url => $srv{$name}->url('/api/orders'),
                    method => 'POST', body_file => $body, script => 'idem.lua', server => $srv{$name},
                    upstream => $up, env => { WRK_IDEM => $mode, WRK_IDEM_PREFIX => "b$$-" . $run++ } };
            }
        }
    }
    measure(\@configs);
    my $errs = 0;
    $errs += stop_server($srv{$_}) for @order;
    stop_upstream($up);
    if ($redis) {
        kill 'TERM', $redis->{pid};
        waitpid $redis->{pid}, 0;
        @REDIS = grep { $_ != $redis->{pid} } @REDIS;
    }
    print "\n";
    table(\@configs);
    my @ratios;
    for my $c (@conns) {
        for my $mode (qw(new replay)) {
            push @ratios, grep { $_ }
              ratio(\@configs, "c=$c $mode: new store / before", "new store, $mode\@$c", "before (socache), $mode\@$c"),
              ratio(\@configs, "c=$c $mode: redis, new / before", "new store, redis, $mode\@$c", "before, redis, $mode\@$c");
        }
    }
    save('idempotency', { bench => 'idempotency', configs => \@configs, ratios => \@ratios, opt => \%opt,
                          baseline => $base, error_log_lines => $errs, load_end => loadavg() });
}

# ---------------------------------------------------------------- 4. streams
sub stream_run {
    my ($kind, $n) = @_;
    my $up = start_upstream(interval_ms => 1000);
    # --small-mpm: 4 x 25 threads for both, AsyncRequestWorkerFactor sized so
    # the event MPM accepts N suspended streams (issue #12): what a stream
    # costs when it does not hold a worker, against a relay that needs one.
    # (--stock-mpm big: mod_proxy_http keeps 24 x 64 while the module runs
    # on 4 x 25: each relay on the MPM it needs.)  The factor leaves room for
    # children that accept more than their share.
    my ($mpm, $children) = ($MPM_BIG, 24);
    if ($opt{'small-mpm'} && !($kind eq 'stock' && ($opt{'stock-mpm'} // '') eq 'big')) {
        ($mpm, $children) = ($MPM_SMALL . "AsyncRequestWorkerFactor " . (int($n / 50) + 2)
                             . "\nListenBacklog 4096\n", 4);
    }
    my $srv = $kind eq 'module'
        ? start_module_server($up, mpm => $mpm,
              conf => "CryptorefillsMaxStreams " . ($n > 1500 ? $n : 1500)
                    . "\nCryptorefillsMaxStreamsPerClient 100000\n")
        : start_stock_server($up, mpm => $mpm);
    my ($prefix, $probe) = $kind eq 'module'
        ? ('/api/orders/', '/api/brands?country_code=US')
        : ('/sse/', '/cache/brands?country_code=US');
    # all children up, catalog warm
    for (1 .. 100) { last if children_of($srv->{pid}) >= $children; sleep 0.1 }
    get($srv->url($probe)) for 1 .. 3;
    my $pr = get($srv->url($probe));
    die "probe $probe: $pr->{status}\n" unless $pr->{status} == 200;
    sleep 0.5;
    my ($rss0, $pss0) = mem_kb(tree($srv->{pid}));
    my $md0 = $opt{'mem-detail'} ? mem_detail(tree($srv->{pid})) : undef;
    my $threads0 = threads_of(tree($srv->{pid}));
    my $cpu0 = cpu_ticks(tree($srv->{pid}));
    my $t0 = time;
    open my $cl, '-|', "$WORK/sse-client", '-p', $srv->port, '-u', $prefix, '-n', $n, '-d', $opt{hold},
        '-q', $probe, '-r', 20, '-w', 30 or die "sse-client: $!";
    my ($ready, $json, $rss1, $pss1, $ups, $threads1, $md1);
    while (my $l = <$cl>) {
        if ($l =~ /^ready (\S+) (\d+)/) {
            $ready = { secs => $1, with_event => $2 };
            sleep 1;
            ($rss1, $pss1) = mem_kb(tree($srv->{pid}));
            $md1 = mem_detail(tree($srv->{pid})) if $md0;
            $threads1 = threads_of(tree($srv->{pid}));
            $ups = up_stats($up);
        }
        $json = decode_json($l) if $l =~ /^\{/;
    }
    close $cl;
    my $cpu1 = cpu_ticks(tree($srv->{pid}));
    my $wall = time - $t0;
    stop_server($srv);
    stop_upstream($up);
    die "sse-client gave no result\n" unless $json;
    $json->{kind} = $kind;
    $json->{rss_kb} = $rss1; $json->{pss_kb} = $pss1;
    $json->{rss_base_kb} = $rss0; $json->{pss_base_kb} = $pss0;
    $json->{rss_per_stream_kb} = ($rss1 - $rss0) / $n;
    $json->{pss_per_stream_kb} = ($pss1 - $pss0) / $n;
    $json->{upstream_streams} = $ups->{streams};
    $json->{httpd_threads} = $threads1; $json->{httpd_threads_base} = $threads0;
    if ($md0) {
        $json->{pss_detail_per_stream_kb} = { map { $_ => (($md1->{$_} // 0) - ($md0->{$_} // 0)) / $n } keys %$md1 };
        printf "  PSS by mapping, KB/stream: %s\n",
            join(' ', map { sprintf '%s %+.1f', $_, $json->{pss_detail_per_stream_kb}{$_} } sort keys %{ $json->{pss_detail_per_stream_kb} });
    }
    $json->{httpd_cpu_util} = ($cpu1 - $cpu0) / $HZ / $wall;
    $json->{load1} = loadavg();
    printf "  %-7s n=%-5d ready %5.2fs  upstream streams %5d  delay p50 %6.2f p99 %7.2f max %7.2f ms  "
         . "catalog p50 %6.2f p99 %7.2f ms (%d)  mem %+.0f KB/stream (PSS %+.0f)  errors %d/%d/%d  "
         . "threads %d  httpd CPU %.2f cores  load %.1f\n",
        $kind, $n, $json->{ready_s}, $json->{upstream_streams} // -1, $json->{delay_p50_ms}, $json->{delay_p99_ms},
        $json->{delay_max_ms}, $json->{probe_p50_ms}, $json->{probe_p99_ms}, $json->{probe_n},
        $json->{rss_per_stream_kb}, $json->{pss_per_stream_kb}, $json->{errors}, $json->{closed_early},
        $json->{probe_errors}, $threads1 // -1, $json->{httpd_cpu_util}, $json->{load1};
    return $json;
}

sub cmpword { my ($x, $y) = @_; sprintf('%.2f', $x) eq sprintf('%.2f', $y) ? 'equal, NOT below' : $x < $y ? 'below' : 'NOT below' }

sub bench_streams {
    print "\n== streams (hold $opt{hold}s x $opt{rounds} rounds, load ${\ loadavg()})\n";
    my @ns = split /,/, ($opt{streams} // '100,500,1000,1400');
    my @relays = split /,/, ($opt{relays} // 'module,stock');
    my %runs;
    for my $round (1 .. $opt{rounds}) {
        for my $n (@ns) {
            for my $kind (@relays) {
                push @{ $runs{$n}{$kind} }, stream_run($kind, $n);
            }
        }
    }
    my @rows;
    my $fmt = "| %6s | %-22s | %8s | %8s | %8s | %9s | %9s | %11s | %11s | %6s |\n";
    print "\n";
    printf $fmt, 'N', 'relay', 'ready s', 'delay p50', 'delay p99', 'catalog p50', 'catalog p99', 'RSS KB/strm', 'PSS KB/strm', 'errors';
    printf $fmt, map { '-' x $_ } 6, 22, 8, 8, 8, 9, 9, 11, 11, 6;
    for my $n (@ns) {
        for my $kind (@relays) {
            my $rs = $runs{$n}{$kind};
            my %m = (n => $n, kind => $kind, runs => $rs);
            for my $k (qw(ready_s delay_p50_ms delay_p99_ms delay_max_ms probe_p50_ms probe_p99_ms
                          rss_per_stream_kb pss_per_stream_kb rss_kb httpd_cpu_util httpd_threads)) {
                $m{$k} = median(map { $_->{$k} } @$rs);
            }
            $m{errors} = 0; $m{errors} += $_->{errors} + $_->{closed_early} + $_->{probe_errors} for @$rs;
            push @rows, \%m;
            printf $fmt, $n, $kind eq 'module' ? 'module' : 'mod_proxy_http flush', map({ sprintf '%.2f', $m{$_} }
                qw(ready_s delay_p50_ms delay_p99_ms probe_p50_ms probe_p99_ms rss_per_stream_kb pss_per_stream_kb)),
                $m{errors};
        }
        my ($mo, $st) = map { my $k = $_; grep { $_->{n} == $n && $_->{kind} eq $k } @rows } qw(module stock);
        next unless $mo && $st;
        printf "  n=%d: module delay p99 %.2f vs %.2f ms (%s), memory/stream %.0f vs %.0f KB RSS (%s), catalog p99 %.2f ms (%s)\n",
            $n, $mo->{delay_p99_ms}, $st->{delay_p99_ms}, cmpword($mo->{delay_p99_ms}, $st->{delay_p99_ms}),
            $mo->{rss_per_stream_kb}, $st->{rss_per_stream_kb},
            cmpword($mo->{rss_per_stream_kb}, $st->{rss_per_stream_kb}),
            $mo->{probe_p99_ms}, $mo->{probe_p99_ms} < 20 ? 'under 20 ms' : 'NOT under 20 ms';
    }
    save('streams', { bench => 'streams', rows => \@rows, opt => \%opt, load_end => loadavg() });
}

# ---------------------------------------------------------------- main
build();
my $m = machine();
print "machine: $m->{cpu}, $m->{cores} cores, ", int($m->{mem_kb} / 1024), " MB, kernel $m->{kernel}, ",
      "$m->{apache}, $m->{curl}, $m->{wrk}; module $m->{module} (commit $m->{commit})\n";
spit("$WORK/machine.json", encode_json($m));
make_path("$BENCH/results");
spit("$BENCH/results/machine-latest.json", JSON::PP->new->pretty->canonical->encode($m));
my %run = (proxy => \&bench_proxy, catalog => \&bench_catalog, validation => \&bench_validation,
           streams => \&bench_streams, idempotency => \&bench_idempotency);
$run{$_}->() for @benches;
