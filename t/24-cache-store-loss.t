# SPDX-License-Identifier: Apache-2.0
# The shared catalog store lost (issue #13's soak finding): Redis restarted
# without persistence, or memcached restarted, or either unreachable, at the
# moment the upstream fails.  Each child keeps its last good copy of every
# catalog it served, and serves it stale (within CryptorefillsCacheTTL +
# CryptorefillsCacheStale of its fetch) instead of relaying the failure:
#   - store stopped, upstream 503            -> 200 stale, the warm catalog
#   - store restarted empty, upstream 503    -> 200 stale
#   - store down, upstream healthy           -> 200 miss (no store)
#   - local copy past its stale window       -> the failure is relayed
# One child per server, so the request meets the child that holds the copy
# (each child keeps its own; docs/OPERATIONS.md says what that promises).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use CrStore;
use HTTP::Tiny;
use JSON::PP;
use IO::Uncompress::Gunzip qw(gunzip);
use Time::HiRes qw(sleep);

for (qw(redis memcache)) {
    plan skip_all => CrStore->binary($_) . ' not installed (apt-get install redis-server memcached)'
        unless CrStore->available($_);
}

my $sb = CrSandbox->start();
my $http = HTTP::Tiny->new(timeout => 30);
sub get { my ($srv, $path, %h) = @_; $http->get($srv->url($path), { headers => \%h }) }
sub cache_h { $_[0]{headers}{'x-cryptorefills-cache'} // '' }
sub upstream_count {
    my ($cc) = @_;
    return scalar grep { ($_->{query} // '') =~ /(?:^|&)country_code=\Q$cc\E(?:&|$)/ } @{ $sb->requests(path => '/v2/brands') };
}
sub stale_count {
    my ($srv) = @_;
    my ($n) = (get($srv, '/server-status?auto')->{content} // '') =~ /^Cryptorefillscache_stale:\s*(\d+)/m;
    return $n // -1;
}
sub gunzip_str { my $in = shift; my $out; gunzip(\$in => \$out) ? $out : undef }

my $one_child = "StartServers 1\nServerLimit 1\nThreadsPerChild 8\nMaxRequestWorkers 8\n"
              . "MinSpareThreads 1\nMaxSpareThreads 8\n";
my $status_conf = "<Location /server-status>\n    SetHandler server-status\n</Location>\n";
# The providers report every call to a stopped store themselves.
my @expect = (qr/\[socache_(?:redis|memcache):(?:error|crit)\]/);

for my $case ([ redis => 'socache_redis', 'SE', 'FI' ], [ memcache => 'socache_memcache', 'NO', 'IS' ]) {
    my ($kind, $mod, $cc, $cold) = @$case;
    my $store = CrStore->new($kind);
    my $a = CrTest->start(sandbox => $sb, modules => [$mod], mpm_conf => $one_child,
        conf => qq{CryptorefillsCache "${\ $store->spec}"\nCryptorefillsCacheTTL 30\n$status_conf},
        expect_errors => [@expect]);
    my $p = "/api/brands?country_code=$cc";

    # warm: both variants in the child
    my $w = get($a, $p);
    is("$w->{status} " . cache_h($w), '200 miss', "$kind: warm-up: miss");
    my $wz = get($a, $p, 'Accept-Encoding' => 'gzip');
    is("$wz->{status} " . cache_h($wz), '200 hit', '... gzip: hit');
    my $stale0 = stale_count($a);

    # 1. the store goes away, the upstream fails
    $store->stop;
    my $fid = $sb->fault(match => '/v2/brands', query => "country_code=$cc", mode => 'status', status => 503, times => 1);
    my $before = upstream_count($cc);
    my $s = get($a, $p);
    is("$s->{status} " . cache_h($s), '200 stale', "$kind stopped, upstream 503: 200 stale");
    ok($s->{content} eq $w->{content}, '... the warm catalog');
    is($s->{headers}{etag}, $w->{headers}{etag}, '... its ETag');
    is($s->{headers}{vary}, 'Accept-Encoding', '... Vary');
    is($s->{headers}{'cache-control'}, 'public, max-age=0', '... Cache-Control: max-age=0, as any stale answer');
    is($s->{headers}{'last-modified'}, $w->{headers}{'last-modified'}, '... Last-Modified of the fetch');
    is(upstream_count($cc) - $before, 1, '... after one upstream try');
    like($a->slurp('error.log'), qr/CR01216: no shared entry for brands:\Q$cc\E in the cache \Q$kind\E:\S+ and the upstream failed \(ok, status 503\)/,
         '... logged (CR01216)');
    my $sz = get($a, $p, 'Accept-Encoding' => 'gzip');
    is("$sz->{status} " . cache_h($sz) . ' ' . ($sz->{headers}{'content-encoding'} // '-'), '200 stale gzip',
       '... gzip: 200 stale gzip');
    is(gunzip_str($sz->{content}), $w->{content}, '... decompressing to the catalog');
    is($sz->{headers}{etag}, $wz->{headers}{etag}, '... the gzip ETag');
    is(upstream_count($cc) - $before, 1, '... within the back-off: no second upstream try');
    my $nm = get($a, $p, 'If-None-Match' => $w->{headers}{etag});
    is($nm->{status}, 304, '... the ETag revalidates: 304');
    cmp_ok(stale_count($a) - $stale0, '>=', 2, '... counted in Cryptorefillscache_stale');

    # 2. the store back, empty; the upstream fails again (after the back-off)
    $store->start;
    sleep 5.2;
    $sb->remove_fault($fid);
    $fid = $sb->fault(match => '/v2/brands', query => "country_code=$cc", mode => 'status', status => 503, times => 1);
    $before = upstream_count($cc);
    my $e = get($a, $p);
    is("$e->{status} " . cache_h($e), '200 stale', "$kind restarted empty, upstream 503: 200 stale");
    ok($e->{content} eq $w->{content}, '... the warm catalog');
    is(upstream_count($cc) - $before, 1, '... after one upstream try');
    $sb->remove_fault($fid);
    sleep 5.2;
    my $m = get($a, $p);
    is("$m->{status} " . cache_h($m), '200 miss', '... upstream healthy again (after the back-off): 200 miss');
    my $h = get($a, $p);
    is("$h->{status} " . cache_h($h), '200 hit', '... stored again: hit');

    # 2b. a child that only ever served the gzip copy: an identity request
    # gets the failure relayed (not a half-made answer), a gzip one the copy
    if ($kind eq 'redis') {
        my $q = '/api/brands?country_code=BE';
        my $g = get($a, $q, 'Accept-Encoding' => 'gzip');
        is("$g->{status} " . cache_h($g) . ' ' . ($g->{headers}{'content-encoding'} // '-'), '200 miss gzip',
           'BE warmed through gzip only');
        $store->stop;
        $fid = $sb->fault(match => '/v2/brands', query => 'country_code=BE', mode => 'status', status => 503, times => 2);
        my $i = get($a, $q);
        is("$i->{status} " . cache_h($i), '503 miss', '... store stopped, upstream 503, identity asked: the 503 relayed');
        my $gs = get($a, $q, 'Accept-Encoding' => 'gzip');
        is("$gs->{status} " . cache_h($gs) . ' ' . ($gs->{headers}{'content-encoding'} // '-'), '200 stale gzip',
           '... gzip asked: 200 stale gzip');
        is(gunzip_str($gs->{content}), gunzip_str($g->{content}), '... the warm catalog');
        $sb->remove_fault($fid);
        $store->start;
    }

    # 3. the store down, the upstream healthy: a catalog never cached
    $store->stop;
    for my $i (1 .. 2) {
        my $r = get($a, "/api/brands?country_code=$cold");
        is("$r->{status} " . cache_h($r), '200 miss', "$kind down, upstream healthy: $cold request $i: 200 miss");
        ok(eval { decode_json($r->{content}) }, '... with the catalog');
    }
    $a->stop;
    $store->stop;
}

# 4. a local copy past TTL + stale is not served: the failure is relayed
{
    my $store = CrStore->new('redis');
    my $a = CrTest->start(sandbox => $sb, modules => ['socache_redis'], mpm_conf => $one_child,
        conf => qq{CryptorefillsCache "${\ $store->spec}"\nCryptorefillsCacheTTL 1\nCryptorefillsCacheStale 1\n},
        expect_errors => [@expect]);
    my $p = '/api/brands?country_code=DK';
    is(get($a, $p)->{status}, 200, 'short window: warm-up');
    $store->stop;
    sleep 2.5;
    my $fid = $sb->fault(match => '/v2/brands', query => 'country_code=DK', mode => 'status', status => 503, times => 1);
    my $r = get($a, $p);
    is("$r->{status} " . cache_h($r), '503 miss', '... store gone, copy older than TTL + stale: the 503 relayed');
    $sb->remove_fault($fid);
    $a->stop;
    $store->stop;
}

$sb->stop;
done_testing;
