# SPDX-License-Identifier: Apache-2.0
# The catalog cache (issue #3) against a real httpd (mpm_event, several
# children) and the sandbox upstream: miss/hit, headers, 304, gzip next to
# mod_deflate, one upstream call for a burst of 60 concurrent cold requests
# spread over several children, expiry, stale-while-refresh, stale-if-error
# (5xx, timeout, non-JSON), recovery, the end of the stale window, only
# well-formed 200 JSON cached, a 1 MB catalog, the `Mutex` directive, the
# mod_status counters, and a cache too small to store anything still
# answering 200 with the whole body.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use HTTP::Tiny;
use JSON::PP;
use Mojo::UserAgent;
use Mojo::Promise;
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use Time::HiRes qw(sleep time);
use POSIX qw(WNOHANG);

my $sb   = CrSandbox->start();
my $sbig = CrSandbox->start(catalog_scale => 8);    # > 1 MB brands catalog for US

my $status_conf = <<'C';
ExtendedStatus On
<Location /server-status>
    SetHandler server-status
</Location>
C

my $big_url = $sbig->url;
my $a = CrTest->start(
    sandbox  => $sb,
    mpm      => 'event',
    # 4 children x 16 threads, all started up front: a burst of 60 lands
    # on several children (a child stops accepting when its threads are busy).
    mpm_conf => "StartServers 4\nServerLimit 6\nThreadsPerChild 16\nMaxRequestWorkers 96\n"
              . "MinSpareThreads 8\nMaxSpareThreads 96\n",
    conf     => <<"C");
Mutex file:\@DIR\@ cryptorefills-cache
AddOutputFilterByType DEFLATE application/json
LogFormat "%P %>s %{X-Cryptorefills-Cache}o %U%q" crpid
CustomLog "\@DIR\@/pid.log" crpid
$status_conf
<Location /short>
    SetHandler cryptorefills
    CryptorefillsCacheTTL 2
    CryptorefillsCacheStale 120
    CryptorefillsTimeout 2
</Location>
<Location /swr>
    SetHandler cryptorefills
    CryptorefillsCacheTTL 2
    CryptorefillsCacheStale 120
    CryptorefillsTimeout 10
</Location>
<Location /brief>
    SetHandler cryptorefills
    CryptorefillsCacheTTL 1
    CryptorefillsCacheStale 1
</Location>
<Location /big>
    SetHandler cryptorefills
    CryptorefillsUpstream $big_url
</Location>
<Location /partner2>
    SetHandler cryptorefills
    CryptorefillsPartnerId other-partner-id
</Location>
C

my $http = HTTP::Tiny->new(timeout => 30);
sub get {
    my ($srv, $path, %h) = @_;
    return $http->get($srv->url($path), { headers => \%h });
}
sub upstream_count {
    my ($s, $path, $cc) = @_;
    my $r = $s->requests(path => $path);
    return scalar grep { !defined $cc || ($_->{query} // '') =~ /(?:^|&)country_code=\Q$cc\E(?:&|$)/ } @$r;
}
# mod_status ?auto counters, names normalised (lower case, no underscores).
sub counters {
    my ($srv) = @_;
    my $r = get($srv, '/server-status?auto');
    my %c;
    for (split /\n/, $r->{content} // '') {
        next unless /^(Cryptorefills\w+):\s*(\d+)/;
        my ($name, $v) = ($1, $2);
        (my $k = lc $name) =~ s/_//g;
        $c{$k} = $v;
    }
    return \%c;
}
sub gunzip_str {
    my ($in) = @_;
    my $out;
    gunzip(\$in => \$out) or return undef;
    return $out;
}
sub max_age { ($_[0]{headers}{'cache-control'} // '') =~ /max-age=(\d+)/ ? $1 : undef }
sub cache_h { $_[0]{headers}{'x-cryptorefills-cache'} // '' }

# ---------------------------------------------------------------- Mutex directive
like($a->slurp('httpd.conf'), qr/^Mutex file:\S+ cryptorefills-cache$/m, 'the config sets `Mutex file:DIR cryptorefills-cache`');
unlike($a->slurp('error.log'), qr/AH0001[0-9].*cryptorefills-cache|mutex/i, 'no mutex complaint at start-up');

my $c0 = counters($a);
ok(exists $c0->{cryptorefillscachehits} && exists $c0->{cryptorefillscachemisses},
   'mod_status ?auto lists the cache counters') or diag explain $c0;

# ---------------------------------------------------------------- miss, then hit
my $r1 = get($a, '/api/brands?country_code=US');
is($r1->{status}, 200, 'brands US: 200');
is(cache_h($r1), 'miss', '... X-Cryptorefills-Cache: miss the first time');
ok(eval { decode_json($r1->{content}) }, '... the body is JSON');
like($r1->{headers}{etag} // '', qr/^"[0-9a-f]{16}"$/, '... a strong ETag');
like($r1->{headers}{'cache-control'} // '', qr/^public, max-age=\d+$/, '... Cache-Control: public, max-age');
ok(max_age($r1) > 290 && max_age($r1) <= 300, '... max-age is what is left of the 300 s TTL');
like($r1->{headers}{vary} // '', qr/Accept-Encoding/i, '... Vary: Accept-Encoding');
is($r1->{headers}{'content-type'}, 'application/json', '... application/json');
ok(!$r1->{headers}{'content-encoding'}, '... identity without Accept-Encoding, even with mod_deflate on application/json');

my $r2 = get($a, '/api/brands?country_code=US');
is($r2->{status}, 200, 'brands US again: 200');
is(cache_h($r2), 'hit', '... hit');
is($r2->{content}, $r1->{content}, '... the same body');
is($r2->{headers}{etag}, $r1->{headers}{etag}, '... the same ETag');
is(upstream_count($sb, '/v2/brands', 'US'), 1, '... one upstream request for the two');

for my $p (['/api/payment_vias', '/v3/payment_vias', undef], ['/api/homepage?country_code=GB', '/v2/homepage', 'GB']) {
    my ($path, $up, $cc) = @$p;
    my $m = get($a, $path);
    my $h = get($a, $path);
    is("$m->{status} " . cache_h($m) . " $h->{status} " . cache_h($h), '200 miss 200 hit', "$path: miss then hit");
    is($h->{content}, $m->{content}, '... same body');
    is(upstream_count($sb, $up, $cc), 1, "... one upstream request");
}
# Another partner on the same upstream is another entry (the name holds a
# hash of the partner id, never the id).
{
    my $o1 = get($a, '/partner2/brands?country_code=US');
    my $o2 = get($a, '/partner2/brands?country_code=US');
    is("$o1->{status} " . cache_h($o1) . " $o2->{status} " . cache_h($o2), '200 miss 200 hit',
       'another partner id, same upstream: its own entry (miss, then hit)');
    is(upstream_count($sb, '/v2/brands', 'US'), 2, '... one more upstream request');
    unlike($a->slurp('error.log'), qr/other-partner-id/, '... the partner id is never logged');
}
# Another country is another entry.
my $gb = get($a, '/api/brands?country_code=GB');
is(cache_h($gb), 'miss', 'brands GB is its own entry (miss)');
isnt($gb->{content}, $r1->{content}, '... with its own body');

my $c1 = counters($a);
cmp_ok($c1->{cryptorefillscachehits} - ($c0->{cryptorefillscachehits} // 0), '>=', 3, 'mod_status: hits counted');
cmp_ok($c1->{cryptorefillscachemisses} - ($c0->{cryptorefillscachemisses} // 0), '>=', 4, 'mod_status: misses counted');

# ---------------------------------------------------------------- 304
my $etag = $r1->{headers}{etag};
(my $etag_gz = $etag) =~ s/"$/-gz"/;
for my $inm ($etag, $etag_gz, "W/$etag", qq{"0000000000000000", $etag}, '*') {
    my $r = get($a, '/api/brands?country_code=US', 'If-None-Match' => $inm);
    is($r->{status}, 304, "If-None-Match: $inm -> 304");
    is(length($r->{content} // ''), 0, '... no body');
    is($r->{headers}{etag}, $etag, '... with the ETag');
}
my $r304no = get($a, '/api/brands?country_code=US', 'If-None-Match' => '"0123456789abcdef"');
is($r304no->{status}, 200, 'another ETag -> 200');
is($r304no->{content}, $r1->{content}, '... with the body');
my $c2 = counters($a);
cmp_ok($c2->{cryptorefillscachenotmodified} - $c1->{cryptorefillscachenotmodified}, '>=', 5, 'mod_status: 304s counted');

# ---------------------------------------------------------------- gzip
my $z = get($a, '/api/brands?country_code=US', 'Accept-Encoding' => 'gzip, deflate');
is($z->{status}, 200, 'Accept-Encoding: gzip -> 200');
is($z->{headers}{'content-encoding'}, 'gzip', '... Content-Encoding: gzip (once)');
like($z->{headers}{vary} // '', qr/Accept-Encoding/i, '... Vary: Accept-Encoding');
unlike($z->{headers}{vary} // '', qr/Accept-Encoding.*Accept-Encoding/i, '... named once');
is(cache_h($z), 'hit', '... from the cache');
my $unz = gunzip_str($z->{content});
ok(defined $unz && $unz eq $r1->{content}, '... decompresses (once) to the identity body')
    or diag "gunzip: $GunzipError; first bytes: " . substr($unz // '', 0, 20);
ok(length($z->{content}) < length($r1->{content}) / 3, '... and is compressed');
isnt($z->{headers}{etag}, $etag, '... the ETag differs from the identity one');
is($z->{headers}{etag}, $etag_gz, '... it is the -gz ETag (mod_deflate did not touch it)');
my $z304 = get($a, '/api/brands?country_code=US', 'Accept-Encoding' => 'gzip', 'If-None-Match' => $etag_gz);
is($z304->{status}, 304, 'gzip ETag revalidates: 304');
is($z304->{headers}{etag}, $etag_gz, '... with the gzip ETag');
for my $ae ('gzip;q=0', 'br', 'identity') {
    my $r = get($a, '/api/brands?country_code=US', 'Accept-Encoding' => $ae);
    ok(!$r->{headers}{'content-encoding'} && $r->{content} eq $r1->{content}, "Accept-Encoding: $ae -> identity");
}
# A miss answered in gzip too.
my $zm = get($a, '/api/homepage?country_code=FR', 'Accept-Encoding' => 'gzip');
is(cache_h($zm) . ' ' . ($zm->{headers}{'content-encoding'} // '-'), 'miss gzip', 'a miss is served gzip as well');
my $zi = get($a, '/api/homepage?country_code=FR');
is(gunzip_str($zm->{content}), $zi->{content}, '... decompressing to the identity body');

# ---------------------------------------------------------------- burst of cold requests
{
    my $fid = $sb->fault(match => '/v2/brands', query => 'country_code=DE', mode => 'latency', ms => 3000);
    my $ua = Mojo::UserAgent->new(connect_timeout => 10, request_timeout => 40, inactivity_timeout => 40);
    my $N = 60;
    my @res;
    my @p = map {
        my $i = $_;
        $ua->get_p($a->url('/api/brands?country_code=DE'))->then(sub {
            my $tx = shift;
            $res[$i] = [ $tx->res->code // 0, $tx->res->headers->header('X-Cryptorefills-Cache') // '', $tx->res->body ];
        }, sub { $res[$i] = [ 0, '', "@_" ] });
    } 0 .. $N - 1;
    Mojo::Promise->all(@p)->wait;
    $sb->remove_fault($fid);
    my @ok = grep { $_ && $_->[0] == 200 } @res;
    is(scalar @ok, $N, "$N concurrent cold requests: all 200")
        or diag join ', ', map { $_ ? "$_->[0] $_->[1]" : 'none' } @res;
    my %bodies = map { $_->[2] => 1 } @ok;
    is(scalar keys %bodies, 1, '... all with the same body');
    ok(eval { decode_json((keys %bodies)[0]) }, '... JSON');
    is(upstream_count($sb, '/v2/brands', 'DE'), 1, '... ONE upstream request for all of them');
    my %how;
    $how{ $_->[1] }++ for @ok;
    is($how{miss} // 0, 1, '... one of them is the miss') or diag explain \%how;
    is($how{hit} // 0, $N - 1, '... the others hits (they waited for it)');
    my %pids;
    for (split /\n/, $a->slurp('pid.log')) {
        $pids{$1}++ if m{^(\d+) 200 \S+ /api/brands\?country_code=DE$};
    }
    cmp_ok(scalar keys %pids, '>=', 2, '... served by several child processes (' . scalar(keys %pids) . ')')
        or diag explain \%pids;
    my $c = counters($a);
    cmp_ok($c->{cryptorefillscachewaits}, '>', $c2->{cryptorefillscachewaits}, 'mod_status: waits counted');
}

# ---------------------------------------------------------------- expiry (TTL 2 s)
# Several countries warmed at once, so one sleep serves every scenario below.
my %warm;
for my $cc (qw(FR IT ES NL SE)) {
    my $r = get($a, "/short/brands?country_code=$cc");
    is("$r->{status} " . cache_h($r), '200 miss', "/short brands $cc: miss");
    cmp_ok(max_age($r), '<=', 2, '... max-age within the 2 s TTL');
    $warm{$cc} = $r;
}
is(cache_h(get($a, '/short/brands?country_code=FR')), 'hit', '/short brands FR: hit while fresh');
sleep 2.3;

my $fr = get($a, '/short/brands?country_code=FR');
is("$fr->{status} " . cache_h($fr), '200 miss', 'after the TTL: refreshed from the upstream (miss)');
is(upstream_count($sb, '/v2/brands', 'FR'), 2, '... a second upstream request');
is($fr->{content}, $warm{FR}{content}, '... same catalog');
is($fr->{headers}{etag}, $warm{FR}{headers}{etag}, '... same ETag (same content)');
is(cache_h(get($a, '/short/brands?country_code=FR')), 'hit', '... then hit again');

# ---------------------------------------------------------------- stale-if-error
# IT: upstream 503; ES: 200 that is not JSON; NL: no answer within the 2 s timeout.
my %fid = (
    IT => $sb->fault(match => '/v2/brands', query => 'country_code=IT', mode => 'status', status => 503),
    ES => $sb->fault(match => '/v2/brands', query => 'country_code=ES', mode => 'nonjson'),
    NL => $sb->fault(match => '/v2/brands', query => 'country_code=NL', mode => 'hang'),
);
for my $cc (qw(IT ES NL)) {
    my $r = get($a, "/short/brands?country_code=$cc");
    is($r->{status}, 200, "$cc upstream failing after expiry: still 200");
    is(cache_h($r), 'stale', '... X-Cryptorefills-Cache: stale');
    is($r->{content}, $warm{$cc}{content}, '... the last good copy');
    is(max_age($r), 0, '... max-age=0');
    is(upstream_count($sb, '/v2/brands', $cc), 2, '... after one refresh attempt');
}
my $failed_at = time;    # the last failed refresh (NL's 2 s timeout) ended here
for my $cc (qw(IT ES NL)) {
    my $r = get($a, "/short/brands?country_code=$cc");
    is("$r->{status} " . cache_h($r), '200 stale', "$cc again during the outage: stale");
}
is(upstream_count($sb, '/v2/brands', 'IT'), 2, '... without another upstream attempt right away (back-off)');
like($a->slurp('error.log'), qr/refresh of brands:IT failed.*serving the copy/, 'the stale answer is logged (warn)');
$sb->remove_fault($_) for values %fid;

# ---------------------------------------------------------------- stale-while-refresh (SE, expired)
# /swr: same 2 s TTL (same entry), but a 10 s timeout so the slow refresh succeeds.
{
    my $fid = $sb->fault(match => '/v2/brands', query => 'country_code=SE', mode => 'latency', ms => 3000);
    # The refreshing request runs in a child process, so this one can ask meanwhile.
    my $out = $a->dir . '/slow.txt';
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        my $r = HTTP::Tiny->new(timeout => 30)->get($a->url('/swr/brands?country_code=SE'));
        open my $fh, '>', $out or POSIX::_exit(1);
        print $fh "$r->{status} " . ($r->{headers}{'x-cryptorefills-cache'} // '') . "\n";
        close $fh;
        POSIX::_exit(0);
    }
    my $t0 = time;
    sleep 0.05 while upstream_count($sb, '/v2/brands', 'SE') < 2 && time - $t0 < 10;
    my $during = get($a, '/swr/brands?country_code=SE');
    my $refresh_done = waitpid($pid, WNOHANG) == $pid;
    waitpid($pid, 0) unless $refresh_done;
    $sb->remove_fault($fid);
    my ($slow_status, $slow_how) = split ' ', $a->slurp('slow.txt');
    is("$during->{status} " . cache_h($during), '200 stale', 'while one request refreshes SE, another gets the stale copy');
    ok(!$refresh_done, '... before the refresh finished');
    is($during->{content}, $warm{SE}{content}, '... the old copy');
    is($slow_status, 200, 'the refreshing request: 200');
    is($slow_how, 'miss', '... miss');
    is(upstream_count($sb, '/v2/brands', 'SE'), 2, '... one refresh upstream, not two');
}

# ---------------------------------------------------------------- past the stale window
my $pt = get($a, '/brief/brands?country_code=PT');
is(cache_h($pt), 'miss', '/brief (TTL 1, stale 1): PT miss');
sleep 2.3;
{
    my $fid = $sb->fault(match => '/v2/brands', query => 'country_code=PT', mode => 'status', status => 503);
    my $r = get($a, '/brief/brands?country_code=PT');
    $sb->remove_fault($fid);
    isnt($r->{status}, 200, 'past TTL + stale with the upstream failing: the failure shows');
    cmp_ok($r->{status}, '>=', 500, "... as a 5xx ($r->{status})");
    is(eval { decode_json($r->{content})->{status} }, $r->{status}, '... in the error shape');
}

# ---------------------------------------------------------------- recovery
my $wait = $failed_at + 5.5 - time;    # the module's back-off after a failed refresh is 5 s
sleep $wait if $wait > 0;
for my $cc (qw(IT ES NL)) {
    my $r = get($a, "/short/brands?country_code=$cc");
    is("$r->{status} " . cache_h($r), '200 miss', "$cc after the upstream came back: refreshed (miss)");
    is(upstream_count($sb, '/v2/brands', $cc), 3, '... one more upstream request');
    is(cache_h(get($a, "/short/brands?country_code=$cc")), 'hit', '... and hit after it');
}

# ---------------------------------------------------------------- only well-formed 200 JSON is cached
for my $case ([BE => { mode => 'nonjson' }], [AT => { mode => 'status', status => 404 }],
              [CH => { mode => 'empty' }], [DK => { mode => 'partial', bytes => 4000 }]) {
    my ($cc, $f) = @$case;
    my $fid = $sb->fault(match => '/v2/brands', query => "country_code=$cc", times => 1, %$f);
    my $bad = get($a, "/api/brands?country_code=$cc");
    isnt($bad->{status}, 200, "cold $cc, upstream $f->{mode}: not 200 ($bad->{status})");
    ok(eval { decode_json($bad->{content}) }, '... a JSON error body');
    my $good = get($a, "/api/brands?country_code=$cc");
    is("$good->{status} " . cache_h($good), '200 miss', '... the next request goes upstream (nothing was cached)');
    is(upstream_count($sb, '/v2/brands', $cc), 2, '... two upstream requests');
    $sb->remove_fault($fid);
}

# ---------------------------------------------------------------- a cold burst while the upstream fails
# 20 concurrent cold requests, the upstream never answers (/short: 2 s timeout):
# one upstream exchange, and its failure is every waiter's answer (no queue of
# waiters timing out one after another); the next request tries again at once.
{
    my $fid = $sb->fault(match => '/v2/brands', query => 'country_code=NO', mode => 'hang');
    my $ua = Mojo::UserAgent->new(connect_timeout => 10, request_timeout => 30, inactivity_timeout => 30);
    my @res;
    Mojo::Promise->all(map {
        my $i = $_;
        $ua->get_p($a->url('/short/brands?country_code=NO'))->then(sub {
            my $res = shift->res;
            $res[$i] = [ $res->code // 0, eval { decode_json($res->body)->{detail} } // '' ];
        }, sub { $res[$i] = [ 0, "@_" ] });
    } 0 .. 19)->wait;
    $sb->remove_fault($fid);
    is(scalar(grep { $_ && $_->[0] == 504 && $_->[1] eq 'UPSTREAM_TIMEOUT' } @res), 20,
       'cold burst, upstream hanging: all 20 get 504 UPSTREAM_TIMEOUT')
        or diag join ', ', map { $_ ? "@$_" : 'none' } @res;
    is(upstream_count($sb, '/v2/brands', 'NO'), 1, '... from ONE upstream exchange');
    unlike($a->slurp('error.log'), qr/gave up waiting for the refresh of brands:NO/,
           '... the waiters shared its outcome (none gave up waiting)');
    my $r = get($a, '/short/brands?country_code=NO');
    is("$r->{status} " . cache_h($r), '200 miss', 'the next request, upstream back: tries at once (no back-off without a copy)');
    is(upstream_count($sb, '/v2/brands', 'NO'), 2, '... a second upstream exchange');
}

# ---------------------------------------------------------------- a 1 MB catalog
{
    my $m = get($a, '/big/brands?country_code=US');
    cmp_ok(length($m->{content}), '>', 1_000_000, 'catalog_scale 8: US brands is over 1 MB (' . length($m->{content}) . ')');
    is("$m->{status} " . cache_h($m), '200 miss', '... miss');
    my $h = get($a, '/big/brands?country_code=US');
    is("$h->{status} " . cache_h($h), '200 hit', '... then hit: the default cache holds it');
    ok($h->{content} eq $m->{content}, '... the whole body');
    my $z = get($a, '/big/brands?country_code=US', 'Accept-Encoding' => 'gzip');
    is(cache_h($z) . ' ' . ($z->{headers}{'content-encoding'} // '-'), 'hit gzip', '... gzip variant cached too');
    ok((gunzip_str($z->{content}) // '') eq $m->{content}, '... decompressing to it');
    is(upstream_count($sbig, '/v2/brands', 'US'), 1, '... one upstream request');

    my $fid = $sb->fault(match => '/v2/homepage', query => 'country_code=JP', mode => 'big', bytes => 1_048_576, times => 1);
    my $b1 = get($a, '/api/homepage?country_code=JP');
    my $b2 = get($a, '/api/homepage?country_code=JP');
    $sb->remove_fault($fid);
    is(length($b1->{content}), 1_048_576, '1 MiB homepage (sandbox big fault): the whole body');
    is(cache_h($b1) . ' ' . cache_h($b2), 'miss hit', '... miss, then hit');
    ok($b2->{content} eq $b1->{content}, '... the same 1 MiB from the cache');
}

my $cend = counters($a);
cmp_ok($cend->{cryptorefillscachestale}, '>=', 7, 'mod_status: stale answers counted');
is($cend->{cryptorefillscachestorefailures}, 0, 'mod_status: no store failure with the default cache');
my $st = get($a, '/server-status');
like($st->{content}, qr/mod_cryptorefills.*cache_hits/s, 'plain /server-status shows the module table');
$a->stop;

# ---------------------------------------------------------------- a cache far too small
{
    my $t = CrTest->start(
        sandbox => $sb,
        conf => qq{CryptorefillsCache "shmcb:\@DIR\@/tiny(16384)"\n$status_conf},
        # mod_socache_shmcb's own error line for an object larger than a subcache
        expect_errors => [qr/\[socache_shmcb:error\].*(?:AH0083\d|AH0084\d)/],
    );
    my $before = counters($t);
    for my $i (1 .. 3) {
        my $r = get($t, '/api/brands?country_code=US', ($i == 3 ? ('Accept-Encoding' => 'gzip') : ()));
        is($r->{status}, 200, "tiny cache, request $i: 200");
        my $body = $r->{headers}{'content-encoding'} ? gunzip_str($r->{content}) : $r->{content};
        ok(($body // '') eq $r1->{content}, '... with the whole body');
        is(cache_h($r), 'miss', '... miss');
        unlike($r->{headers}{'cache-control'} // '', qr/max-age=[1-9]/, '... not announced as cacheable');
    }
    my $after = counters($t);
    cmp_ok($after->{cryptorefillscachestorefailures} - $before->{cryptorefillscachestorefailures}, '>=', 1,
           'mod_status: store failures counted');
    my @warn = $t->slurp('error.log') =~ /(cannot store brands:US)/g;
    is(scalar @warn, 1, 'the failed store is logged once (warn)');
    $t->stop;
}

$sb->stop;
$sbig->stop;
done_testing;
