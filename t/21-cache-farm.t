# SPDX-License-Identifier: Apache-2.0
# A farm of two Apache servers sharing one catalog cache in a real Redis and
# in a real memcached (issue #3): a catalog fetched through one server is a
# hit on the other (same body, ETag, gzip variant, 304), the single-flight
# lease is shared (a cold burst on both servers costs one upstream call), the
# records really live in the shared store, and when the store goes away the
# storefront keeps answering 200 from the upstream.
#
# redis-server and memcached are started here on free 127.0.0.1 ports and
# stopped at the end, on failure, and (by a watchdog) if this test is killed.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use POSIX ();
use CrSandbox;
use CrStore;
use HTTP::Tiny;
use JSON::PP;
use Mojo::UserAgent;
use Mojo::Promise;
use IO::Socket::INET;
use IO::Uncompress::Gunzip qw(gunzip);
use Time::HiRes qw(sleep time);

for (qw(redis memcache)) {
    plan skip_all => CrStore->binary($_) . ' not installed (apt-get install redis-server memcached)'
        unless CrStore->available($_);
}

sub talk {
    my ($port, $cmd) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 2)
        or return undef;
    print $s $cmd;
    my $out = '';
    $s->blocking(0);
    my $deadline = time + 2;
    while (time < $deadline) {
        my $n = sysread($s, my $buf, 65536);
        if (defined $n && $n > 0) { $out .= $buf; last if $out =~ /(?:\r\n(?:END|\+PONG|:\d+)\r\n|^[:+\-].*\r\n)$/s; next }
        last if defined $n;    # EOF
        sleep 0.02;
    }
    close $s;
    return $out;
}

my $sb = CrSandbox->start();
# started here on free ports, stopped at the end, on failure, and if this test is killed
my %store = (redis => CrStore->new('redis'), memcache => CrStore->new('memcache'));
my $redis_port = $store{redis}->port;
my $mc_port    = $store{memcache}->port;

my $http = HTTP::Tiny->new(timeout => 30);
sub get { my ($srv, $path, %h) = @_; $http->get($srv->url($path), { headers => \%h }) }
sub cache_h { $_[0]{headers}{'x-cryptorefills-cache'} // '' }
sub upstream_count {
    my ($path, $cc) = @_;
    return scalar grep { ($_->{query} // '') =~ /(?:^|&)country_code=\Q$cc\E(?:&|$)/ } @{ $sb->requests(path => $path) };
}
sub counters {
    my ($srv) = @_;
    my %c;
    for (split /\n/, get($srv, '/server-status?auto')->{content} // '') {
        next unless /^(Cryptorefills\w+):\s*(\d+)/;
        my ($n, $v) = ($1, $2);
        (my $k = lc $n) =~ s/_//g;
        $c{$k} = $v;
    }
    return \%c;
}
sub gunzip_str { my $in = shift; my $out; gunzip(\$in => \$out) ? $out : undef }

my $status_conf = <<'C';
<Location /server-status>
    SetHandler server-status
</Location>
C

for my $farm (
    # kind, provider module, CryptorefillsCache, countries used (each farm its own)
    [ redis    => 'socache_redis',    "redis:127.0.0.1:$redis_port", 'SE', 'FI', 'DK' ],
    [ memcache => 'socache_memcache', "memcache:127.0.0.1:$mc_port",  'NO', 'IS', 'BE' ],
) {
    my ($kind, $mod, $spec, $cc, $burst_cc, $down_cc) = @$farm;
    my @srv = map {
        CrTest->start(
            sandbox  => $sb,
            modules  => [$mod],    # loaded before mod_cryptorefills, which looks it up
            mpm_conf => "StartServers 2\nServerLimit 4\nThreadsPerChild 16\nMaxRequestWorkers 64\n"
                      . "MinSpareThreads 4\nMaxSpareThreads 64\n",
            conf     => qq{CryptorefillsCache "$spec"\n$status_conf},
            # When the store is stopped at the end, the provider itself reports
            # each failed call (mod_socache_redis at crit, AH03478 and friends).
            expect_errors => [qr/\[socache_(?:redis|memcache):(?:error|crit)\]/],
        )
    } 1 .. 2;
    my ($a, $b) = @srv;
    like($a->slurp('error.log'), qr/CR01205: cache: \Q$kind\E:127\.0\.0\.1:\d+/, "$kind: both servers use $spec");

    # fetched through A, a hit on B
    my $ma = get($a, "/api/brands?country_code=$cc");
    is("$ma->{status} " . cache_h($ma), '200 miss', "$kind: brands $cc through server A: miss");
    my $hb = get($b, "/api/brands?country_code=$cc");
    is("$hb->{status} " . cache_h($hb), '200 hit', "$kind: ... then through server B: HIT");
    ok($hb->{content} eq $ma->{content}, '... the same body');
    is($hb->{headers}{etag}, $ma->{headers}{etag}, '... the same ETag');
    is(upstream_count('/v2/brands', $cc), 1, '... one upstream request for the farm');

    # the other way round, with gzip and 304 across servers
    my $mb = get($b, "/api/homepage?country_code=$cc", 'Accept-Encoding' => 'gzip');
    is("$mb->{status} " . cache_h($mb), '200 miss', "$kind: homepage $cc through B (gzip): miss");
    my $ha = get($a, "/api/homepage?country_code=$cc", 'Accept-Encoding' => 'gzip');
    is("$ha->{status} " . cache_h($ha) . ' ' . ($ha->{headers}{'content-encoding'} // '-'), '200 hit gzip',
       '... through A: hit, gzip');
    my $ia = get($a, "/api/homepage?country_code=$cc");
    is(gunzip_str($ha->{content}), $ia->{content}, '... decompressing to the identity body');
    my $nm = get($b, "/api/homepage?country_code=$cc", 'If-None-Match' => $ia->{headers}{etag});
    is($nm->{status}, 304, "... A's ETag revalidates on B: 304");
    is(upstream_count('/v2/homepage', $cc), 1, '... one upstream request');

    # the lease is shared: one server refreshing, the other one's cold requests wait for it
    {
        my $fid = $sb->fault(match => '/v3/payment_vias', mode => 'latency', ms => 2000);
        my $before = scalar @{ $sb->requests(path => '/v3/payment_vias') };
        # A's refresh from a child process; once it is at the upstream,
        # 30 more cold requests, half on each server.
        my $out = $a->dir . '/first.txt';
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            my $r = HTTP::Tiny->new(timeout => 30)->get($a->url('/api/payment_vias'));
            open my $fh, '>', $out or POSIX::_exit(1);
            print $fh "$r->{status}\n$r->{content}";
            close $fh;
            POSIX::_exit(0);
        }
        my $t0 = time;
        sleep 0.05 while @{ $sb->requests(path => '/v3/payment_vias') } == $before && time - $t0 < 10;
        my $ua = Mojo::UserAgent->new(request_timeout => 30, inactivity_timeout => 30);
        my @res;
        Mojo::Promise->all(map {
            my $i = $_;
            $ua->get_p(($i % 2 ? $a : $b)->url('/api/payment_vias'))->then(sub { my $res = shift->res; $res[$i] = [ $res->code, $res->body ] },
                                                                     sub { $res[$i] = [ 0, "@_" ] });
        } 1 .. 30)->wait;
        waitpid($pid, 0);
        my ($st0, $body0) = split /\n/, $a->slurp('first.txt'), 2;
        $res[0] = [ $st0 // 0, $body0 // '' ];
        $sb->remove_fault($fid);
        is(scalar(grep { $_ && $_->[0] == 200 } @res), 31, "$kind: 31 concurrent cold payment_vias on both servers: all 200");
        is(scalar @{ $sb->requests(path => '/v3/payment_vias') } - $before, 1, '... ONE upstream request for the farm');
        my %bodies = map { $_->[1] => 1 } grep { $_ } @res;
        is(scalar keys %bodies, 1, '... one body');
    }

    # a cold burst on one server, no head start: its requests are serialised
    # without a lock held across the store's round trips (a slot in shared
    # memory), so still one upstream request
    {
        my $fid = $sb->fault(match => '/v2/brands', query => "country_code=$burst_cc", mode => 'latency', ms => 1500);
        my $ua = Mojo::UserAgent->new(request_timeout => 30, inactivity_timeout => 30);
        my @res;
        Mojo::Promise->all(map {
            my $i = $_;
            $ua->get_p($a->url("/api/brands?country_code=$burst_cc"))->then(sub { $res[$i] = shift->res->code },
                                                                  sub { $res[$i] = 0 });
        } 0 .. 29)->wait;
        $sb->remove_fault($fid);
        is(scalar(grep { ($_ // 0) == 200 } @res), 30, "$kind: 30 concurrent cold requests on one server: all 200");
        is(upstream_count('/v2/brands', $burst_cc), 1, '... ONE upstream request');
    }

    # the records are in the shared store
    if ($kind eq 'redis') {
        my $n = talk($redis_port, "DBSIZE\r\n") // '';
        like($n, qr/^:(\d+)/, 'redis answers DBSIZE');
        cmp_ok(($n =~ /^:(\d+)/)[0] // 0, '>=', 6, '... and holds the records (meta, body, gzip per catalog)');
    }
    else {
        my $st = talk($mc_port, "stats\r\n") // '';
        my ($items) = $st =~ /STAT curr_items (\d+)/;
        cmp_ok($items // 0, '>=', 6, 'memcached holds the records (meta, body, gzip per catalog)');
    }
    my $ca = counters($a);
    cmp_ok($ca->{cryptorefillscachehits}, '>=', 1, "$kind: server A's mod_status counts hits");
    is($ca->{cryptorefillscachestorefailures}, 0, '... and no store failure');

    # the shared store goes away: shoppers still get their catalog
    $store{$kind}->stop;
    my $before_fail = counters($b)->{cryptorefillscachestorefailures};
    for my $i (1 .. 3) {
        my $r = get($b, "/api/brands?country_code=$down_cc");
        is($r->{status}, 200, "$kind stopped: brands $down_cc through B, request $i: 200");
        ok(eval { decode_json($r->{content}) }, '... with the catalog');
        is(cache_h($r), 'miss', '... miss');
    }
    cmp_ok(counters($b)->{cryptorefillscachestorefailures} - $before_fail, '>=', 1, '... store failures counted');
    $_->stop for @srv;
    # restart the store for the next farm? no: each farm has its own.
}

$sb->stop;
$_->stop for values %store;
done_testing;
