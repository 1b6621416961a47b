# The metrics handler (issue #15): `SetHandler cryptorefills-metrics` serves
# the module's counters in the Prometheus text format 0.0.4, parsed here by
# prometheus_client's own parser (python3-prometheus-client).  Values move
# with traffic: catalog miss then hit, an upstream error by class and route
# after a sandbox fault, the open-stream gauge while a stream is open.  GET
# and HEAD only; no partner id or upstream URL in it; mod_status ?auto keeps
# its lines.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use HTTP::Tiny;
use JSON::PP;
use IO::Socket::INET;
use IPC::Open2;
use Time::HiRes qw(sleep time);

my $sb = CrSandbox->start();
my $a = CrTest->start(
    sandbox => $sb,
    conf    => <<'C');
CryptorefillsCacheTTL 300
<Location /metrics>
    SetHandler cryptorefills-metrics
    Require ip 127.0.0.1
</Location>
<Location /server-status>
    SetHandler server-status
</Location>
C

my $http = HTTP::Tiny->new(timeout => 30);

sub scrape {
    my $r = $http->get($a->url('/metrics'));
    my $pid = open2(my $out, my $in, '/usr/bin/python3',    # Debian's, with python3-prometheus-client
                    "$FindBin::Bin/tools/prom-parse.py");
    print $in $r->{content};
    close $in;
    my $json = do { local $/; <$out> };
    waitpid($pid, 0);
    return ($r, $? == 0 ? decode_json($json) : undef);
}

my ($r, $m) = scrape();
is($r->{status}, 200, 'GET /metrics: 200');
is($r->{headers}{'content-type'}, 'text/plain; version=0.0.4; charset=utf-8', 'Prometheus text format 0.0.4');
ok($m, 'prometheus_client parses it') or diag $r->{content};
is($m->{'#type cryptorefills_cache_hits'}, 'counter', 'cache hits: a counter');
is($m->{'#type cryptorefills_streams_open'}, 'gauge', 'open streams: a gauge');
like($r->{content}, qr/^# HELP cryptorefills_cache_hits_total /m, '# HELP lines');
like($r->{content}, qr/^# TYPE cryptorefills_upstream_errors_total counter$/m, '# TYPE lines');
my @names = $r->{content} =~ /^(cryptorefills_\w+)/mg;
ok(!grep({ /_total$/ } map { my $n = $_; grep { $_ eq $n } ($r->{content} =~ /^# TYPE (\S+) gauge/mg) } @names), 'no gauge ends in _total');
unlike($r->{content}, qr/partner-secret|127\.0\.0\.1:\d+|http:/, 'no partner id, no upstream URL');
is($m->{'cryptorefills_streams_open{mode=blocking}'}, 0, 'streams_open{mode="blocking"} 0');
is($m->{'cryptorefills_streams_open{mode=suspended}'}, 0, 'streams_open{mode="suspended"} 0');
is($m->{'#type cryptorefills_streams_suspended'}, 'counter', 'streams handed to the suspended relay: a counter');
is($m->{cryptorefills_browsers_dropped_slow_total}, 0, 'browsers_dropped_slow_total 0');
is($m->{cryptorefills_browsers_gone_suspended_total}, 0, 'browsers_gone_suspended_total 0');
cmp_ok($m->{cryptorefills_cache_size_bytes} // 0, '>', 0, 'cache size (shmcb) shown');

# Catalog miss then hit.
my $p = '/api/brands?country_code=US';
$http->get($a->url($p));
$http->get($a->url($p));
my (undef, $m2) = scrape();
is($m2->{cryptorefills_cache_misses_total} - $m->{cryptorefills_cache_misses_total}, 1, 'a miss counted');
is($m2->{cryptorefills_cache_hits_total} - $m->{cryptorefills_cache_hits_total}, 1, 'a hit counted');
cmp_ok($m2->{cryptorefills_cache_stores_total}, '>', $m->{cryptorefills_cache_stores_total}, 'a store counted');
cmp_ok($m2->{cryptorefills_cache_stored_bytes_total}, '>', 1000, '... with its bytes');
cmp_ok($m2->{cryptorefills_upstream_requests_total}, '>=', 1, 'upstream requests counted');

# An upstream error, by class and route.
my $fid = $sb->fault(match => '/v2/homepage', mode => 'status', status => 500);
my $e = $http->get($a->url('/api/homepage?country_code=DE'));
$sb->remove_fault($fid);
like($e->{status}, qr/^5/, 'the fault: a 5xx to the browser');
my (undef, $m3) = scrape();
is($m3->{'cryptorefills_upstream_errors_total{class=5xx,route=homepage}'}, 1, 'upstream_errors_total{class="5xx",route="homepage"} 1');
is($m3->{'cryptorefills_upstream_errors_total{class=5xx,route=brands}'}, 0, '... brands 0');
is($m3->{'cryptorefills_upstream_errors_total{class=connect,route=orders}'}, 0, '... every route and class shown');

# The open-stream gauge while a stream is open: under the event MPM an
# HTTP/1.1 stream is suspended, otherwise it holds a worker.
my $mode = $a->streams_suspended ? 'suspended' : 'blocking';
my $other = $mode eq 'suspended' ? 'blocking' : 'suspended';
# The order exists (an unknown one gets a stop event at once and its stream
# ends before a scrape sees it).
$sb->create_order(order_id => 'metrics-1');
$sb->fault(match => '/v5/orders/metrics-1/subscribe', mode => 'stream_silent', times => 1);
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $a->port, Timeout => 5) or die $!;
print $s "GET /api/orders/metrics-1/subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n";
my $m4;
for (1 .. 100) {
    (undef, $m4) = scrape();
    last if $m4->{"cryptorefills_streams_open{mode=$mode}"};
    sleep 0.05;
}
is($m4->{"cryptorefills_streams_open{mode=$mode}"}, 1, "streams_open{mode=\"$mode\"} 1 while it is open");
is($m4->{"cryptorefills_streams_open{mode=$other}"}, 0, "... and {mode=\"$other\"} 0");
is($m4->{cryptorefills_streams_suspended_total} - $m3->{cryptorefills_streams_suspended_total},
   $mode eq 'suspended' ? 1 : 0, 'streams_suspended_total counts suspended streams only');
is($m4->{cryptorefills_streams_total} - $m3->{cryptorefills_streams_total}, 1, 'streams_total counts it');
close $s;
my $open = 1;
for (1 .. 100) {
    my (undef, $mm) = scrape();
    $open = $mm->{"cryptorefills_streams_open{mode=$mode}"};
    last if !$open;
    sleep 0.1;
}
is($open, 0, 'streams_open back to 0 once the client left');
if ($mode eq 'suspended') {
    my (undef, $m5) = scrape();
    is($m5->{cryptorefills_browsers_gone_suspended_total}, 1, 'browsers_gone_suspended_total counts the browser that left');
}

# Methods.
my $h = $http->request('HEAD', $a->url('/metrics'));
is($h->{status}, 200, 'HEAD: 200');
is($h->{content} // '', '', '... without a body');
my $post = $http->request('POST', $a->url('/metrics'), { content => 'x' });
is($post->{status}, 405, 'POST: 405');
is(join(',', sort grep { $_ ne 'TRACE' } split /,\s*/, $post->{headers}{allow} // ''), 'GET,HEAD', '... Allow: GET, HEAD (and TRACE, httpd\'s own)');
unlike($post->{headers}{allow}, qr/POST/, '... not POST');

# mod_status ?auto keeps its lines.
my $auto = $http->get($a->url('/server-status?auto'))->{content};
like($auto, qr/^Cryptorefillscache_hits: \d+$/m, 'mod_status ?auto: cache_hits line as before');
like($auto, qr/^Cryptorefillsupstream_err_5xx: 1$/m, '... upstream_err_5xx as before');

$a->stop;
$sb->stop;
done_testing;
