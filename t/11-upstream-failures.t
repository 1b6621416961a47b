# SPDX-License-Identifier: Apache-2.0
# Upstream failures, route by route, against a real httpd and the sandbox's
# fault injection: unreachable, slow, hanging, 5xx JSON, non-JSON, oversized,
# dropped, truncated.  The browser always gets JSON with a status that says
# what happened; a POST orders whose answer was lost says the order's state is
# unknown and was sent exactly once.
#
# Catalog routes are cached per country: every case uses a country no earlier
# case touched, so the cache never hides a failure (serving stale copies on
# error is the cache suite's subject).
use strict;
use warnings;
use utf8;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest qw(free_port);
use CrSandbox;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time sleep);

my $PARTNER = 'partner-secret-id-0001';
my $TIMEOUT = 1;          # CryptorefillsTimeout
my $SLACK = 5;            # generous: 2 shared cores, other tests running
my $JSON = JSON::PP->new->utf8->canonical;

my $sb = CrSandbox->start;
my $closed = free_port();    # nothing listens there
my $httpd = CrTest->start(sandbox => $sb, partner => $PARTNER, loglevel => 'info', conf => <<"C");
CryptorefillsTimeout $TIMEOUT
CryptorefillsConnectTimeout 1
CryptorefillsCountryEnv GEO_CC
SetEnvIf X-Geo "^(.+)\$" GEO_CC=\$1
<Location "/dead">
    CryptorefillsUpstream http://127.0.0.1:$closed
    SetHandler cryptorefills
</Location>
C

my $http = HTTP::Tiny->new(timeout => 30);
my @responses;

# Countries nobody asked for yet: one per case.
my @fresh = grep { !/^(US|FR|GB|DE)$/ }
    map { $_->{isoCode} } @{ $JSON->decode($http->get($httpd->url('/api/countries'))->{content})->{countries} };
sub fresh_country { shift @fresh or die "out of countries" }

use CrFixtures qw(%VALIDATE %CREATE);   # t/lib/CrFixtures.pm

# route => [ method, sub(country) -> (path, headers), fault matcher ]
my %ROUTES = (
    payment_vias => [ GET => sub { ('/payment_vias', { 'X-Geo' => $_[0] }) }, { match => '/v3/payment_vias' } ],
    brands       => [ GET => sub { ("/brands?country_code=$_[0]", {}) }, { match => '/v2/brands' } ],
    homepage     => [ GET => sub { ("/homepage?country_code=$_[0]", {}) }, { match => '/v2/homepage' } ],
    products     => [ GET => sub { ("/products/country/$_[0]?family_name=Airbnb", {}) }, { match => '/v5/products/country/' } ],
    price        => [ GET => sub { ("/products/price?brand_name=Airbnb&country_code=$_[0]&face_value=100&coin=USDC", {}) },
                      { match => '/v4/products/price' } ],
    order        => [ GET => sub { ('/orders/failing-order-1', { 'X-Geo' => $_[0] }) }, { regex => '^/v5/orders/failing-order-1$' } ],
    validations  => [ POST => sub { ('/orders/validations', { 'Content-Type' => 'application/json' }) },
                      { match => '/v5/orders/validations' } ],
);
my @ROUTES = qw(payment_vias brands homepage products price order validations);

sub call {
    my ($base, $route, %o) = @_;
    my ($method, $mk) = @{ $ROUTES{$route} };
    my ($path, $h) = $mk->($o{country} // fresh_country());
    my $t0 = time;
    my $r = $http->request($method, $httpd->url("$base$path"), {
        headers => $h, $method eq 'POST' ? (content => $JSON->encode(\%VALIDATE)) : () });
    $r->{elapsed} = time - $t0;
    push @responses, $r;
    return $r;
}
sub body { my $j = eval { $JSON->decode($_[0]{content}) }; $j }

sub is_failure {
    my ($r, $status, $detail, $name) = @_;
    is($r->{status}, $status, "$name: $status") or diag substr($r->{content} // '', 0, 300);
    like($r->{headers}{'content-type'} // '', qr{^application/json}, "$name: JSON");
    my $j = body($r);
    is($j && $j->{status}, $status, "$name: status in the body");
    if (ref $detail) { like($j && $j->{detail}, $detail, "$name: detail") }
    else { is($j && $j->{detail}, $detail, "$name: detail $detail") }
    return $j;
}

# The validator reads the US catalog and payment methods: cache them first,
# so the faults below hit only the POST.
is($http->get($httpd->url('/api/brands?country_code=US'))->{status}, 200, 'US catalog cached');
is($http->get($httpd->url('/api/payment_vias'))->{status}, 200, 'payment methods cached');

# Apply a fault to the route, make one request, remove the fault.
sub with_fault {
    my ($route, $fault, %o) = @_;
    my $id = $sb->fault(%{ $ROUTES{$route}[2] }, method => $ROUTES{$route}[0], %$fault);
    my $r = call('/api', $route, %o);
    $sb->remove_fault($id);
    return $r;
}

for my $route (@ROUTES) {
    # unreachable: nothing listens on the upstream port
    my $r = call('/dead', $route);
    is_failure($r, 502, 'UPSTREAM_UNAVAILABLE', "$route, upstream unreachable");

    # slow: answers after the timeout
    $r = with_fault($route, { mode => 'latency', ms => ($TIMEOUT + 1.5) * 1000 });
    is_failure($r, 504, 'UPSTREAM_TIMEOUT', "$route, upstream slower than CryptorefillsTimeout");
    cmp_ok($r->{elapsed}, '<', $TIMEOUT + $SLACK, "$route, slow upstream: answered within timeout + slack");

    # hanging: never answers
    $r = with_fault($route, { mode => 'hang' });
    is_failure($r, 504, 'UPSTREAM_TIMEOUT', "$route, hanging upstream");
    cmp_ok($r->{elapsed}, '<', $TIMEOUT + $SLACK, "$route, hanging upstream: answered within timeout + slack");
    cmp_ok($r->{elapsed}, '>=', $TIMEOUT * 0.9, "$route, hanging upstream: after the timeout, not before");

    # 5xx with a JSON body: status and body pass through
    my $err = { status => 503, detail => 'MAINTENANCE', moreDetails => { until => 'soon', note => 'é' } };
    $r = with_fault($route, { mode => 'status', status => 503, body => JSON::PP->new->canonical->encode($err),    # characters: the sandbox encodes
        headers => { 'Retry-After' => '7' } });
    is($r->{status}, 503, "$route, upstream 503 JSON: 503 passes through");
    is_deeply(body($r), $err, "$route, upstream 503 JSON: body passes through");
    is($r->{headers}{'retry-after'}, '7', "$route, upstream 503: Retry-After passes through");
    $r = with_fault($route, { mode => 'status', status => 500 });
    is($r->{status}, 500, "$route, upstream 500 JSON: 500 passes through");
    is_deeply(body($r), { status => 500, detail => 'INTERNAL_SERVER_ERROR' }, "$route, upstream 500: body passes through");

    # non-JSON answers (an HTML error page from a CDN), with 200 and 502
    $r = with_fault($route, { mode => 'nonjson', status => 200 });
    is_failure($r, 502, qr/^UPSTREAM_/, "$route, upstream 200 HTML");
    $r = with_fault($route, { mode => 'nonjson', status => 502 });
    is_failure($r, 502, 'UPSTREAM_UNAVAILABLE', "$route, upstream 502 HTML");
    unlike($r->{content}, qr/cloudflare|<html/i, "$route, upstream HTML: not relayed");

    # empty 200
    $r = with_fault($route, { mode => 'empty' });
    is_failure($r, 502, qr/^UPSTREAM_/, "$route, upstream empty 200");

    # oversized: over the module's 8 MiB cap
    $r = with_fault($route, { mode => 'big', bytes => 9 * 1024 * 1024 });
    is_failure($r, 502, qr/^UPSTREAM_/, "$route, upstream answer over 8 MiB");

    # dropped connection, truncated answer
    $r = with_fault($route, { mode => 'drop' });
    is_failure($r, 502, 'UPSTREAM_UNAVAILABLE', "$route, connection dropped");
    $r = with_fault($route, { mode => 'partial', bytes => 4000 });
    is_failure($r, 502, qr/^UPSTREAM_/, "$route, answer truncated");

    # and the route still works afterwards
    $r = call('/api', $route);
    ok($r->{status} == 200 || ($route eq 'order' && $r->{status} == 404), "$route: fine again without a fault ($r->{status})");
}

# A big answer under the cap passes (the cap is not too tight).
{
    my $r = with_fault('products', { mode => 'big', bytes => 2 * 1024 * 1024 });
    is($r->{status}, 200, 'products: a 2 MiB JSON answer passes');
    is(length $r->{content}, 2 * 1024 * 1024, '... whole');
}

# ---------------------------------------------------------------- POST orders
# Any answer lost after the request left: 504/502 with order_state "unknown",
# and the request went out exactly once (no re-send on a dead connection).
sub create {
    my ($base, $fault) = @_;
    my $id = $fault ? $sb->fault(regex => '^/v5/orders$', method => 'POST', %$fault) : undef;
    $sb->clear_requests;
    my $t0 = time;
    my $r = $http->post($httpd->url("$base/orders"), { content => $JSON->encode(\%CREATE),
        headers => { 'Content-Type' => 'application/json', 'Idempotency-Key' => 'fail-' . rand() } });
    $r->{elapsed} = time - $t0;
    push @responses, $r;
    $sb->remove_fault($id) if $id;
    sleep 0.3;    # anything re-sent would be recorded by now
    my @posts = grep { $_->{method} eq 'POST' && $_->{path} eq '/v5/orders' } @{ $sb->requests };
    return ($r, scalar @posts);
}

{
    my ($r, $n) = create('/api', { mode => 'latency', ms => ($TIMEOUT + 1.5) * 1000 });
    my $j = is_failure($r, 504, 'UPSTREAM_TIMEOUT', 'POST orders, timeout after sending');
    is($j && $j->{moreDetails}{order_state}, 'unknown', '... order_state unknown');
    is($n, 1, '... exactly one upstream POST');
    cmp_ok($r->{elapsed}, '<', $TIMEOUT + $SLACK, '... within timeout + slack');

    ($r, $n) = create('/api', { mode => 'hang', after => JSON::PP::true });
    $j = is_failure($r, 504, 'UPSTREAM_TIMEOUT', 'POST orders, created then the answer hangs');
    is($j && $j->{moreDetails}{order_state}, 'unknown', '... order_state unknown');
    is($n, 1, '... exactly one upstream POST');

    ($r, $n) = create('/api', { mode => 'hang' });
    $j = is_failure($r, 504, 'UPSTREAM_TIMEOUT', 'POST orders, hanging upstream');
    is($j && $j->{moreDetails}{order_state}, 'unknown', '... order_state unknown');
    is($n, 1, '... exactly one upstream POST');

    ($r, $n) = create('/api', { mode => 'drop', after => JSON::PP::true });
    $j = is_failure($r, 502, 'UPSTREAM_UNAVAILABLE', 'POST orders, created then the connection drops');
    is($j && $j->{moreDetails}{order_state}, 'unknown', '... order_state unknown');
    is($n, 1, '... exactly one upstream POST (never re-sent)');

    ($r, $n) = create('/api', { mode => 'drop' });
    $j = is_failure($r, 502, 'UPSTREAM_UNAVAILABLE', 'POST orders, connection dropped');
    is($j && $j->{moreDetails}{order_state}, 'unknown', '... order_state unknown');
    is($n, 1, '... exactly one upstream POST (never re-sent)');

    # A 5xx on create is ambiguous too: not passed through as a definite
    # answer, but 502 with the upstream's status and order_state unknown.
    ($r, $n) = create('/api', { mode => 'status', status => 503, body => '{"status":503,"detail":"MAINTENANCE"}' });
    $j = is_failure($r, 502, 'UPSTREAM_UNAVAILABLE', 'POST orders, upstream 503');
    is($j && $j->{moreDetails}{order_state}, 'unknown', '... order_state unknown');
    is($j && $j->{moreDetails}{upstream_status}, 503, "... the upstream's status");
    is($n, 1, '... exactly one upstream POST');

    ($r, $n) = create('/api', { mode => 'status', status => 504, after => JSON::PP::true });
    $j = is_failure($r, 502, 'UPSTREAM_UNAVAILABLE', 'POST orders, created then a gateway 504');
    is($j && $j->{moreDetails}{order_state}, 'unknown', '... order_state unknown');
    is($n, 1, '... exactly one upstream POST');

    ($r, $n) = create('/api', { mode => 'nonjson', status => 200 });
    $j = is_failure($r, 502, qr/^UPSTREAM_/, 'POST orders, HTML answer');
    is($j && $j->{moreDetails}{order_state}, 'unknown', '... order_state unknown');
    is($n, 1, '... exactly one upstream POST');

    ($r, $n) = create('/api', { mode => 'big', bytes => 9 * 1024 * 1024 });
    $j = is_failure($r, 502, qr/^UPSTREAM_/, 'POST orders, answer over 8 MiB');
    is($n, 1, '... exactly one upstream POST');

    # Never sent: the outcome is known (no order), and nothing says otherwise.
    ($r, $n) = create('/dead');
    $j = is_failure($r, 502, 'UPSTREAM_UNAVAILABLE', 'POST orders, upstream unreachable');
    ok(!($j && $j->{moreDetails} && $j->{moreDetails}{order_state}), '... no order_state: nothing was sent');

    # A definite upstream 4xx on create passes through.
    ($r, $n) = create('/api', { mode => 'status', status => 422,
        body => '{"status":422,"detail":"SUSPENDED_COIN","moreDetails":{"coin":"USDC"}}' });
    is($r->{status}, 422, 'POST orders, upstream 422: passes through');
    is_deeply(body($r), { status => 422, detail => 'SUSPENDED_COIN', moreDetails => { coin => 'USDC' } }, '... body too');
    is($n, 1, '... one upstream POST');
}

# ---------------------------------------------------------------- no leak
{
    my @leaks = grep { index(($_->{content} // '') . join(' ', %{ $_->{headers} }), $PARTNER) >= 0 } @responses;
    is(scalar @leaks, 0, 'the partner id is in no failure response (' . scalar(@responses) . ' checked)');
}

$httpd->stop;
unlike($httpd->slurp('error.log'), qr/\Q$PARTNER\E/, 'the partner id is not in the error log (info level)');
like($httpd->slurp('error.log'), qr/CR01102: upstream GET for route brands failed \(timeout\)/,
    'failures are logged (warn) with the route and the reason');
$sb->stop;
done_testing;
