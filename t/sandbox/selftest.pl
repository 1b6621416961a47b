#!/usr/bin/env perl
# SPDX-License-Identifier: Apache-2.0
# Self-check of the sandbox upstream and its launcher: perl t/sandbox/selftest.pl
# (a TAP script; about 5 s). Not part of the module's suite: it tests the test tool.
use strict;
use warnings;
use utf8;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::More;
use Time::HiRes qw(time sleep);
use Digest::MD5 qw(md5_hex);
use Mojo::UserAgent;
use Mojo::IOLoop;
use Mojo::JSON qw(decode_json encode_json);
use CrSandbox;

my $sb = CrSandbox->start;
like($sb->url, qr{^http://127\.0\.0\.1:\d+$}, 'url on loopback: ' . $sb->url);
ok(kill(0, $sb->pid), 'server process alive');
my $ua = Mojo::UserAgent->new(inactivity_timeout => 20);
my $U = $sb->url;
my $get = sub { my $tx = $ua->get("$U$_[0]"); ($tx->res->code, $tx->res->body, $tx) };
my $post = sub { my $tx = $ua->post("$U$_[0]" => { 'Content-Type' => 'application/json' } => encode_json($_[1])); ($tx->res->code, $tx->res->body, $tx) };

# ------------------------------------------------------------ catalog endpoints
my ($code, $body) = $get->('/v3/payment_vias');
is($code, 200, 'payment_vias 200');
my $vias = decode_json($body);
my ($uw) = grep { $_->{name} eq 'USER_WALLET' } @$vias;
ok($uw && $uw->{available}, 'USER_WALLET available');
ok((grep { !$_->{available} } @$vias), 'one via unavailable');
my %cur = map { $_->{name} => $_ } @{ $uw->{currencies} };
ok($cur{LTC}{is_suspended}, 'LTC suspended');
my ($usdt_eth) = grep { $_->{name} eq 'Ethereum' } @{ $cur{USDT}{networks} };
ok($usdt_eth->{is_suspended} && !$cur{USDT}{is_suspended}, 'USDT on Ethereum suspended, USDT active');
is_deeply([ map { $_->{name} } @{ $cur{USDC}{networks} } ], ['Solana', 'Polygon (Matic)', 'Base', 'Ethereum'], 'USDC networks');

($code, $body) = $get->('/v2/brands?country_code=US');
my $us = decode_json($body);
my %ub = map { $_->{brand} => $_ } @{ $us->{all_brands} };
cmp_ok(scalar(keys %ub), '>=', 150, 'US has ' . scalar(keys %ub) . ' brands, ' . length($body) . ' bytes');
ok($ub{'Amazon.com'} && $ub{Airbnb}, 'Amazon.com and Airbnb in US');
is($ub{Airbnb}{family}, 'Airbnb', 'Airbnb family');
like($ub{'Amazon.com'}{logo_url}, qr{^https://cdn\.cryptorefills\.com/logos_v2/amazon-com\.webp$}, 'logo_url');
ok((grep { $_->{is_out_of_stock} } values %ub), 'some out of stock');
ok((grep { $_->{category} eq 'e-sim' && $_->{kind} eq 'mobile_recharge' } values %ub), 'eSIMs');
ok((grep { $_->{category} eq 'phone-top-up' } values %ub), 'top-ups');
my $sb2 = CrSandbox->start;
my $b2 = $ua->get($sb2->url . '/v2/brands?country_code=US')->res->body;
is(md5_hex($b2), md5_hex($body), 'catalog is deterministic across instances');
$sb2->stop;
ok(!kill(0, $sb2->pid // 0) || !$sb2->pid, 'second instance stopped');

my $ae = decode_json(($get->('/v2/brands?country_code=AE'))[1]);
my ($du) = grep { $_->{brand} eq 'Du Data' } @{ $ae->{all_brands} };
is($du->{family}, 'Du', 'Du Data -> family Du');

my $all = decode_json(($get->('/api/available-countries'))[1])->{countries};
is(scalar @$all, 233, '233 countries');
is($all->[0]{name}, 'Åland Islands', 'first country');
my $empty = 0;
for my $c (@$all) {
    my $d = decode_json(($get->("/v2/brands?country_code=$c->{isoCode}"))[1]);
    $empty++ unless @{ $d->{all_brands} };
}
is($empty, 0, 'every country has a catalog');
ok(decode_json(($get->('/v2/homepage?country_code=US'))[1])->{rows}, 'homepage rows');

is(($get->('/v5/products/country/US?coin=USDC'))[0], 400, 'products without family 400');
is(($get->('/v5/products/country/US?family_name=nope&coin=USDC'))[1], '[]', 'unknown family []');
my $p = decode_json(($get->('/v5/products/country/US?family_name=airbnb&coin=USDC&lang=en'))[1]);
is($p->[0]{brand}, 'Airbnb', 'products of airbnb');
ok((grep { ($_->{denomination} // '') eq '100 USD' && $_->{localized_denomination} eq '$100' } @{ $p->[0]{products} }), '100 USD product');
my $az = decode_json(($get->('/v5/products/country/US?family_name=Amazon.com&coin=BTC'))[1]);
is($az->[0]{products}[0]{face_value}{amount}{type}, 'range', 'Amazon.com range product');
my $q = decode_json(($get->('/v4/products/price?brand_name=Airbnb&country_code=US&face_value=100&coin=BTC'))[1]);
like($q->{coin_amount}, qr/^0\.\d{8}$/, "BTC quote $q->{coin_amount}");
is(($get->('/v4/products/price?brand_name=Airbnb&country_code=US&face_value=100&coin=LTC'))[0], 422, 'suspended coin quote 422');

# ------------------------------------------------------------ validations, orders
my $vbody = { email => 'u@example.com', payment => { type => 'via', payment_via => 'USER_WALLET', coin => 'USDC' },
    deliveries => [ { beneficiary_account => 'u@example.com', brand_name => 'Airbnb', country_code => 'US',
        denomination => '100 USD', localized_denomination => '$100' } ], lang => 'en' };
($code, $body) = $post->('/v5/orders/validations', $vbody);
my $v = decode_json($body);
is($code, 200, 'validation 200');
is($v->{problems}, undef, 'valid: problems null');
is($v->{coin_amount}, '103.00', 'coin amount');
$vbody->{deliveries}[0]{brand_name} = 'AT&T';
$vbody->{deliveries}[0]{denomination} = '10 USD';
$v = decode_json(($post->('/v5/orders/validations', $vbody))[1]);
is($v->{problems}[0]{problem}, 'INVALID_BENEFICIARY_ACCOUNT', 'top-up needs a phone');
$vbody->{deliveries} = [ map { { beneficiary_account => 'u@example.com', brand_name => 'Airbnb', denomination => '25' } } 1 .. 11 ];
$v = decode_json(($post->('/v5/orders/validations', $vbody))[1]);
ok((grep { $_->{problem} eq 'PRODUCT_COUNT_EXCEEDED' } @{ $v->{problems} }), 'more than 10 deliveries');
$vbody->{deliveries} = [ { beneficiary_account => 'u@example.com', brand_name => 'Airbnb', denomination => '25' } ];
$vbody->{payment}{coin} = 'LTC';
($code, $body) = $post->('/v5/orders/validations', $vbody);
is($code, 422, 'suspended coin 422');
is(decode_json($body)->{detail}, 'SUSPENDED_COIN', 'SUSPENDED_COIN');
my $tx = $ua->post("$U/v5/orders/validations" => { 'Content-Type' => 'application/json' } => '{oops');
is($tx->res->code, 400, 'malformed 400');

my $cbody = { deliveries => [ { kind => 'giftcard', quantity => 1, deliverable => { brand_name => 'Airbnb',
    country_code => 'US', denomination => '100', beneficiary_account => 'u@example.com' } } ],
    payment => { type => 'via', coin => 'USDC', network => 'Solana', payment_via => 'USER_WALLET' },
    user => { email => 'u@example.com', has_accepted_newsletter => \1 }, lang => 'en', acquisition => { utm_source => 't' } };
($code, $body) = $post->('/v5/orders', $cbody);
my $o = decode_json($body);
is($code, 200, 'create 200');
like($o->{order_id}, qr/^[0-9a-f-]{36}$/, 'uuid order id');
is($o->{order_state}, 'WaitingForPayment', 'WaitingForPayment');
like($o->{qr_text}, qr/^solana:/, 'solana qr');
is(($get->("/v5/orders/$o->{order_id}"))[0], 200, 'poll 200');
($code, $body) = $get->('/v5/orders/nope');
is($code, 404, 'unknown order 404');
is_deeply(decode_json($body), { status => 404, detail => 'NOT_FOUND' }, '404 body');

# ------------------------------------------------------------ SSE, two subscribers
my $id = $o->{order_id};
my (%buf, %done);
for my $n (1, 2) {
    my $stx = $ua->build_tx(GET => "$U/v5/orders/$id/subscribe" => { Accept => 'text/event-stream', ($n == 1 ? ('Last-Event-ID' => '5') : ()) });
    $stx->res->content->unsubscribe('read')->on(read => sub { $buf{$n} .= $_[1] });
    $ua->start($stx => sub { $done{$n} = 1; Mojo::IOLoop->stop if keys %done == 2 });
}
my $step = 0;
my $tm = Mojo::IOLoop->recurring(0.1 => sub {
    if ($step == 0) { $step = 1 if $sb->subscribers($id) == 2; return }
    $sb->advance($id) if $step++ <= 2;
});
my $guard = Mojo::IOLoop->timer(10 => sub { Mojo::IOLoop->stop });
Mojo::IOLoop->start;
Mojo::IOLoop->remove($_) for $tm, $guard;
for my $n (1, 2) {
    my @data = $buf{$n} =~ /^data: (\{"coin.*)$/mg;
    is(scalar @data, 3, "subscriber $n: 3 order events");
    like($buf{$n}, qr/"order_state":"Done"/, "subscriber $n saw Done");
    like($buf{$n}, qr/event: stop\ndata: \{\}\n\n$/, "subscriber $n got stop");
    like($buf{$n}, qr/^id: 3$/m, "subscriber $n ids");
}
my ($sreq) = @{ $sb->requests(path => "/v5/orders/$id/subscribe") };
is($sreq->{headers}{'last-event-id'}, '5', 'Last-Event-ID recorded');
like($sb->order($id)->{deliveries}[0]{deliverable}{pin_code}, qr/\S/, 'pin code when Done');

my $unk = $ua->get("$U/v5/orders/zzz/subscribe")->res->body;
is($unk, qq{event: stop\ndata: {"error":"not found"}\n\n}, 'unknown order stream');

# ------------------------------------------------------------ keep-alive, recording
$sb->clear_requests;
my $ka = Mojo::UserAgent->new;
$ka->get("$U/v3/payment_vias");
$ka->get("$U/v2/brands?country_code=GB");
is($sb->connections, 1, 'two requests, one connection');
my $r = $sb->requests;
is(scalar @$r, 2, 'two recorded');
is($r->[1]{query}, 'country_code=GB', 'raw query');

# ------------------------------------------------------------ faults
$sb->fault(match => '/v2/brands', mode => 'status', status => 503, times => 1);
is(($get->('/v2/brands?country_code=US'))[0], 503, 'status fault');
is(($get->('/v2/brands?country_code=US'))[0], 200, 'times => 1 consumed');
$sb->fault(match => '/v2/homepage', mode => 'latency', ms => 400, times => 1);
my $t0 = time;
is(($get->('/v2/homepage?country_code=US'))[0], 200, 'latency then normal');
cmp_ok(time - $t0, '>=', 0.39, 'latency applied');
$sb->fault(match => '/v3/', mode => 'nonjson', times => 1);
like(($get->('/v3/payment_vias'))[1], qr/<html>/, 'nonjson');
$sb->fault(match => '/v3/', mode => 'big', bytes => 100_000, times => 1);
is(length(($get->('/v3/payment_vias'))[1]), 100_000, 'big');
$sb->fault(match => '/v3/', mode => 'drop', times => 1);
$tx = $ua->get("$U/v3/payment_vias");
ok(!$tx->res->code, 'drop: no answer');
my $fid = $sb->fault(match => '/v3/', mode => 'hang');
$tx = Mojo::UserAgent->new(inactivity_timeout => 1)->get("$U/v3/payment_vias");
ok(!$tx->res->code, 'hang: no answer');
$sb->clear_faults;
my $before = @{ $sb->orders };
$sb->fault(match => '/v5/orders', method => 'POST', mode => 'drop', after => 1, times => 1);
$tx = $ua->post("$U/v5/orders" => { 'Content-Type' => 'application/json' } => encode_json($cbody));
ok(!$tx->res->code, 'drop after: no answer');
is(scalar @{ $sb->orders }, $before + 1, 'drop after: the order exists');

# stream faults
my $so = $sb->create_order(order_id => 'fixed-stream-1');
is($so->{order_id}, 'fixed-stream-1', 'fixed id order');
$sb->fault(match => '/v5/orders/fixed-stream-1/subscribe', mode => 'stream_drop_after', events => 1, times => 1);
$tx = $ua->get("$U/v5/orders/fixed-stream-1/subscribe");
like($tx->res->body, qr/^id: 1\ndata: /, 'stream_drop_after: first event');
unlike($tx->res->body, qr/event: stop/, 'stream_drop_after: no stop');
$sb->fault(match => '/v5/orders/', mode => 'stream_status', status => 500, times => 1);
is($ua->get("$U/v5/orders/fixed-stream-1/subscribe")->res->code, 500, 'stream_status');

# push raw bytes, then stop
my $pbuf = '';
my $ptx = $ua->build_tx(GET => "$U/v5/orders/fixed-stream-1/subscribe");
$ptx->res->content->unsubscribe('read')->on(read => sub { $pbuf .= $_[1] });
$ua->start($ptx => sub { Mojo::IOLoop->stop });
my $pt = Mojo::IOLoop->recurring(0.05 => sub {
    return unless $sb->subscribers('fixed-stream-1');
    Mojo::IOLoop->remove($_[1] // 0);
    $sb->push_event('fixed-stream-1', "\xEF\xBB\xBFdata: a\r\rdata: b\r\n\r\n");
    $sb->set_order_state('fixed-stream-1', 'Expired');
});
$guard = Mojo::IOLoop->timer(5 => sub { Mojo::IOLoop->stop });
Mojo::IOLoop->start;
Mojo::IOLoop->remove($_) for $pt, $guard;
like($pbuf, qr/\xEF\xBB\xBFdata: a\r\rdata: b\r\n\r\n/, 'raw push verbatim');
like($pbuf, qr/"order_state":"Expired".*event: stop/s, 'state change then stop');

# ------------------------------------------------------------ auto-advance, heartbeat
my $sb3 = CrSandbox->start(auto_advance => 0.3, heartbeat => 0.1);
my $o3 = $sb3->create_order;
my $hb = $ua->get($sb3->url . "/v5/orders/$o3->{order_id}/subscribe")->res->body;
like($hb, qr/^: heartbeat$/m, 'heartbeat comments');
like($hb, qr/"order_state":"Done".*event: stop/s, 'auto-advance reaches Done');
$sb3->stop;

# ------------------------------------------------------------ parent death
pipe my $rd, my $wr or die;
my $kid = fork // die;
if (!$kid) {
    close $rd;
    my $s = CrSandbox->start;
    print $wr $s->pid, "\n";
    close $wr;
    sleep 30;
    exit 0;
}
close $wr;
chomp(my $spid = <$rd> // '');
ok($spid && kill(0, $spid), "sandbox of a child is up ($spid)");
kill 'KILL', $kid;
waitpid $kid, 0;
my $gone = 0;
for (1 .. 60) { if (!kill 0, $spid) { $gone = 1; last } sleep 0.05 }
ok($gone, 'sandbox exits when its parent dies');

my $pid = $sb->pid;
$sb->stop;
ok(!kill(0, $pid), 'stopped');
done_testing;
