#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# Issue #11: behind a balancer.  With mod_remoteip trusting the balancer's
# X-Forwarded-For, per-client stream caps count visitors, not the balancer:
# six visitors behind one address each get a stream with
# CryptorefillsMaxStreamsPerClient 2, a visitor past the cap gets 503, and the
# upstream sees the visitor's address in X-Forwarded-For.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use CrTest;
use CrSandbox;
use CrCurl;
use CrFixtures qw(%CREATE);
use SseClient;

my $sb = CrSandbox->start;
my $httpd = CrTest->start(sandbox => $sb, modules => ['remoteip'], conf => <<'C');
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1
CryptorefillsMaxStreamsPerClient 2
CryptorefillsStreamHeartbeat 60
C
my $port = $httpd->port;
my @visitors = map { "203.0.113.$_" } 11 .. 16;
$sb->create_order(order_id => 'rip-1');

my %streams;
for my $v (@visitors) {
    my $s = SseClient->new(port => $port, path => '/api/orders/rip-1/subscribe',
                           headers => [ 'X-Forwarded-For' => $v ]);
    ok($s->wait_headers(10), "$v: answer");
    is($s->{status}, 200, "$v: gets a stream behind the shared balancer address");
    push @{ $streams{$v} }, $s;
}
ok($sb->wait_subscribers('rip-1', 6, 10), 'six upstream streams are open');

my $first = $visitors[0];
my $second = SseClient->new(port => $port, path => '/api/orders/rip-1/subscribe',
                            headers => [ 'X-Forwarded-For' => $first ]);
ok($second->wait_headers(10), "$first: second stream answered");
is($second->{status}, 200, "$first: second stream allowed (cap 2)");
push @{ $streams{$first} }, $second;

my $r = CrCurl::request(url => $httpd->url('/api/orders/rip-1/subscribe'), proto => 'h1',
                        headers => [ "X-Forwarded-For: $first" ]);
is($r->{code}, 503, "$first: a third stream is refused");
is($r->{json} && $r->{json}{detail}, 'TOO_MANY_STREAMS', '... with TOO_MANY_STREAMS');
ok(defined $r->{headers}{'retry-after'}, '... and Retry-After');

# Another visitor behind the same balancer is unaffected.
my $other = SseClient->new(port => $port, path => '/api/orders/rip-1/subscribe',
                           headers => [ 'X-Forwarded-For' => $visitors[1] ]);
ok($other->wait_headers(10) && $other->{status} == 200, "$visitors[1]: second stream still allowed");

# What the upstream saw: each visitor's own address.
my $reqs = $sb->wait_requests(path => '/v5/orders/rip-1/subscribe', count => 8, timeout => 10) || [];
my %seen = map { ($_->{headers}{'x-forwarded-for'} // '') => 1 } @$reqs;
for my $v (@visitors) {
    ok($seen{$v}, "upstream stream request carried X-Forwarded-For: $v");
}
ok(!$seen{'127.0.0.1'}, 'the balancer address was never sent as the visitor');

# An order route too (fraud checks), with a chain: the client is the last untrusted hop.
my $res = CrCurl::request(url => $httpd->url('/api/orders'), proto => 'h1',
    body => JSON::PP->new->encode(\%CREATE),
    headers => [ 'X-Forwarded-For: 198.51.100.7, 203.0.113.99', "Idempotency-Key: rip-$$" ]);
ok($res->{code} == 200 || $res->{code} == 201, 'order created through the balancer');
my ($post) = @{ $sb->requests(path => '/v5/orders', method => 'POST') };
is($post && $post->{headers}{'x-forwarded-for'}, '203.0.113.99',
   'the upstream sees the address mod_remoteip resolved (r->useragent_ip)');

$_->close for map { @$_ } values %streams;
$other->close;
$httpd->stop;
$sb->stop;
done_testing;
