# SPDX-License-Identifier: Apache-2.0
# Upstream connections and the MPMs.
#
# - Under each MPM (event, worker, prefork) the core routes answer, and N
#   sequential requests to an uncached route (products/price) reuse upstream
#   connections: the sandbox counts the distinct connections it saw.
# - POST orders always goes out on a fresh connection.  Why: when a request
#   is sent on a reused keep-alive connection that the upstream had closed
#   meanwhile (or that dies before any answer byte), libcurl silently sends
#   the same request again on a new connection.  For a GET or a validation
#   that is harmless; for an order it could create a second order.  A fresh
#   connection is never "reused", so curl never re-sends it.  The test shows
#   both sides: a validation on a warm connection that dies is recorded twice
#   upstream, an order under the same fault exactly once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(sleep);


my $PARTNER = 'partner-secret-id-0001';
my $N = 50;
my $JSON = JSON::PP->new->utf8->canonical;

use CrFixtures qw(%VALIDATE %CREATE);   # t/lib/CrFixtures.pm
my $PRICE = '/api/products/price?brand_name=Airbnb&country_code=US&face_value=100&coin=USDC';
my $STATUS_CONF = <<'C';
ExtendedStatus On
<Location "/server-status">
    SetHandler server-status
</Location>
C

my $sb = CrSandbox->start;
my @responses;
my %measured;

sub post_json {
    my ($http, $httpd, $path, $body, %h) = @_;
    my $r = $http->post($httpd->url($path), { content => $JSON->encode($body),
        headers => { 'Content-Type' => 'application/json', %h } });
    push @responses, $r;
    return $r;
}

sub module_connects {
    my ($httpd) = @_;
    my $s = HTTP::Tiny->new->get($httpd->url('/server-status?auto'))->{content} // '';
    return $s =~ /^Cryptorefillsupstream_connects: (\d+)/m ? $1 : undef;
}

# ---------------------------------------------------------------- per MPM
for my $mpm (qw(event worker prefork)) {
    my $httpd = CrTest->start(sandbox => $sb, mpm => $mpm, partner => $PARTNER, conf => $STATUS_CONF);
    my $http = HTTP::Tiny->new(timeout => 30);
    my %st;
    for my $p ('/api/countries', '/api/payment_vias', '/api/brands', '/api/brands?country_code=GB',
               '/api/homepage', '/api/products/country/US?family_name=Airbnb', $PRICE) {
        my $r = $http->get($httpd->url($p));
        push @responses, $r;
        is($r->{status}, 200, "$mpm: GET $p: 200");
        ok(eval { $JSON->decode($r->{content}); 1 }, "$mpm: GET $p: JSON");
    }
    my $v = post_json($http, $httpd, '/api/orders/validations', \%VALIDATE);
    is($v->{status}, 200, "$mpm: POST orders/validations: 200");
    my $o = post_json($http, $httpd, '/api/orders', \%CREATE, 'Idempotency-Key' => "mpm-$mpm");
    is($o->{status}, 200, "$mpm: POST orders: 200") or diag $o->{content};
    my $id = eval { $JSON->decode($o->{content})->{order_id} } // 'none';
    my $g = $http->get($httpd->url("/api/orders/$id"));
    push @responses, $g;
    is($g->{status}, 200, "$mpm: GET orders/{id}: 200");
    is(eval { $JSON->decode($g->{content})->{order_id} }, $id, "$mpm: GET orders/{id}: the order just made");
    is($http->get($httpd->url('/api/nope'))->{status}, 404, "$mpm: unknown route: 404");

    # N sequential uncached requests, over one browser connection, then
    # each over its own browser connection (which may land in any child).
    for my $ka (1, 0) {
        my $client = HTTP::Tiny->new(timeout => 30, keep_alive => $ka);
        my $before = module_connects($httpd);
        my $earlier = $sb->requests;
        my %seen = map { $_->{connection} => 1 } @$earlier;
        my $since = @$earlier ? $earlier->[-1]{id} : 0;
        my $ok = 0;
        for (1 .. $N) { $ok++ if $client->get($httpd->url($PRICE))->{status} == 200 }
        is($ok, $N, "$mpm: $N price requests answered");
        my $win = $sb->requests(since => $since);
        my %used = map { $_->{connection} => 1 } @$win;
        my $conns = keys %used;
        my $new = grep { !$seen{$_} } keys %used;
        my $mod = defined $before ? module_connects($httpd) - $before : undef;
        my $how = $ka ? 'one browser connection' : 'a browser connection each';
        is(scalar @$win, $N, "$mpm, $how: $N upstream requests (price is never cached)");
        cmp_ok($conns, '<=', $N / 5, "$mpm, $how: far fewer upstream connections than requests ($conns for $N)");
        is($mod, $new, "$mpm, $how: connections the module counts as opened (mod_status) = new ones the upstream saw ($new)")
            if defined $mod;
        $measured{"$mpm, $how"} = "$N requests used $conns upstream connections ($new newly opened)";
    }

    # Orders interleaved with GETs: each order on a new connection, and the
    # order is the first request that connection carried.
    $sb->clear_requests;
    for my $i (1 .. 5) {
        is($http->get($httpd->url($PRICE))->{status}, 200, "$mpm: price before order $i");
        my $r = post_json($http, $httpd, '/api/orders', \%CREATE, 'Idempotency-Key' => "fresh-$mpm-$i");
        is($r->{status}, 200, "$mpm: order $i: 200");
    }
    my $all = $sb->requests;
    my @posts = grep { $_->{method} eq 'POST' && $_->{path} eq '/v5/orders' } @$all;
    is(scalar @posts, 5, "$mpm: 5 upstream order POSTs");
    my %conn_of = map { $_->{connection} => 1 } @posts;
    is(scalar keys %conn_of, 5, "$mpm: each on its own connection");
    ok(!grep({ $_->{kept_alive} } @posts), "$mpm: none on a kept-alive connection");
    for my $p (@posts) {
        my ($first) = grep { $_->{connection} eq $p->{connection} } @$all;
        is($first->{id}, $p->{id}, "$mpm: order POST $p->{id} is the first request of its connection");
    }
    my $reused_gets = grep { $_->{method} eq 'GET' && $_->{kept_alive} } @$all;
    cmp_ok($reused_gets, '>=', 1, "$mpm: meanwhile the GETs do reuse connections ($reused_gets of 5)");

    $httpd->stop;
}

# ---------------------------------------------------------------- why orders get a fresh connection
# One child process, so every request draws from the same handle pool and
# the warm connection is the one reused.  Logged at debug: the partner id is
# not logged there either (the code never logs it).
{
    my $httpd = CrTest->start(sandbox => $sb, mpm => 'event', partner => $PARTNER, loglevel => 'debug',
        mpm_conf => "StartServers 1\nServerLimit 1\nThreadsPerChild 8\nMaxRequestWorkers 8\n"
                  . "MinSpareThreads 1\nMaxSpareThreads 8\n");
    my $http = HTTP::Tiny->new(timeout => 30);
    # cache the catalogs the validator reads, and warm one upstream connection
    is($http->get($httpd->url('/api/brands?country_code=US'))->{status}, 200, 'warm: catalog');
    is($http->get($httpd->url('/api/payment_vias'))->{status}, 200, 'warm: payment methods');
    is($http->get($httpd->url($PRICE))->{status}, 200, 'warm: price');
    my $warm = $sb->last_request(path => '/v4/products/price')->{connection};

    # The upstream drops the connection on receiving the request.
    $sb->clear_requests;
    my $fid = $sb->fault(match => '/v5/orders/validations', mode => 'drop');
    my $r = post_json($http, $httpd, '/api/orders/validations', \%VALIDATE);
    $sb->remove_fault($fid);
    is($r->{status}, 502, 'validation on a connection that dies: 502');
    my @v = @{ $sb->requests(path => '/v5/orders/validations') };
    is(scalar @v, 2, 'validation: libcurl sent it twice (reused connection died, re-sent on a new one)')
        or diag explain [ map { { connection => $_->{connection}, kept_alive => $_->{kept_alive} } } @v ];
    ok(@v && $v[0]{kept_alive}, 'validation: the first on the reused connection') if @v;
    ok(@v > 1 && !$v[1]{kept_alive}, 'validation: the second on a new connection') if @v > 1;

    is($http->get($httpd->url($PRICE))->{status}, 200, 'warm again: price');
    $sb->clear_requests;
    $fid = $sb->fault(regex => '^/v5/orders$', method => 'POST', mode => 'drop');
    $r = post_json($http, $httpd, '/api/orders', \%CREATE, 'Idempotency-Key' => 'why-fresh-1');
    $sb->remove_fault($fid);
    sleep 0.3;
    is($r->{status}, 502, 'order on a connection that dies: 502');
    is(eval { $JSON->decode($r->{content})->{moreDetails}{order_state} }, 'unknown', 'order: outcome unknown');
    my @o = grep { $_->{path} eq '/v5/orders' } @{ $sb->requests(path => '/v5/orders') };
    is(scalar @o, 1, 'order: sent exactly once (fresh connection, never re-sent)');
    ok(@o && !$o[0]{kept_alive}, 'order: on a new connection');

    $httpd->stop;
    unlike($httpd->slurp('error.log'), qr/\Q$PARTNER\E/, 'partner id not in the error log at LogLevel debug');
    like($httpd->slurp('error.log'), qr/CR01101: upstream GET http/, '(the debug log did log upstream calls)');
}

{
    my @leaks = grep { index(($_->{content} // '') . join(' ', %{ $_->{headers} }), $PARTNER) >= 0 } @responses;
    is(scalar @leaks, 0, 'the partner id is in no response (' . scalar(@responses) . ' checked)');
}
diag "measured: $_: $measured{$_}" for sort keys %measured;
$sb->stop;
done_testing;
