#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# GET orders/{orderId}/subscribe: failures (issue #5).  An unreachable,
# failing, hanging, stalling, closing or misbehaving upstream; odd order ids;
# malformed upstream events dropped (and counted) while the good ones around
# them are relayed.  Streams are read by a raw chunked socket client.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use JSON::PP;
use HTTP::Tiny;
use Time::HiRes qw(time sleep);

use SseClient;   # t/lib/SseClient.pm: the raw SSE client

package main;

# ---------------------------------------------------------------------------
my $sb = CrSandbox->start();
my $dead = CrTest::free_port();    # nothing listens there
my $httpd = CrTest->start(
    sandbox => $sb,
    conf    => <<"CONF",
CryptorefillsStreamHeartbeat 1
CryptorefillsStreamStallTimeout 3
CryptorefillsConnectTimeout 1
CryptorefillsTimeout 2
AddOutputFilterByType DEFLATE text/event-stream text/html application/json
<Location "/dead">
    SetHandler cryptorefills
    CryptorefillsUpstream http://127.0.0.1:$dead
</Location>
<Location "/server-status">
    SetHandler server-status
</Location>
CONF
    expect_errors => [],
);
my $port = $httpd->port;
my $http = HTTP::Tiny->new(timeout => 15);

sub open_stream {
    my ($path, @h) = @_;
    $path = "/api/orders/$path/subscribe" unless $path =~ m{^/};
    return SseClient->new(port => $port, path => $path, headers => [ 'Accept-Encoding' => 'gzip', @h ]);
}
sub counter {
    my ($name) = @_;
    my $r = $http->get($httpd->url('/server-status?auto'));
    return $r->{content} =~ /^Cryptorefills\Q$name\E: (\d+)$/m ? $1 : undef;
}
sub json_body { my ($c) = @_; my $j = eval { decode_json($c->{body}) }; return $j }

# ---------------------------------------------------------------------------
subtest 'unreachable upstream: 502 with the reference message' => sub {
    my $t = time;
    my $c = open_stream('/dead/orders/abc-1/subscribe');
    ok($c->wait_done(10), 'answered') or return;
    is($c->{status}, 502, 'status 502');
    like($c->{headers}{'content-type'}, qr{^application/json}, 'JSON');
    my $j = json_body($c);
    is($j->{error}, 'Failed to connect to upstream stream', 'error message');
    is($j->{status}, 502, 'status member');
    is($j->{detail}, 'UPSTREAM_UNAVAILABLE', 'detail');
    unlike($c->{body}, qr/\Q$dead\E|127\.0\.0\.1/, 'upstream address not shown');
    cmp_ok(time - $t, '<', 5, 'fails fast (connect refused)');
    $c->close;
};

subtest 'unknown order: the upstream answers `stop` at once' => sub {
    my $c = open_stream('no-such-order');
    ok($c->wait_done(5), 'the response ends') or return;
    is($c->{status}, 200, 'status 200 (the upstream opened the stream)');
    like($c->{headers}{'content-type'}, qr{^text/event-stream}, 'event stream');
    my @ev = $c->events;
    is(scalar @ev, 1, 'one event') or diag explain \@ev;
    is($ev[0]{event}, 'stop', 'stop relayed');
    is_deeply(decode_json($ev[0]{data}[0]), { error => 'not found' }, 'with the upstream data');
    ok(!$c->{framing_error}, 'valid chunked framing');
    $c->close;
};

subtest 'upstream answers non-2xx: its status with "Upstream returned an error"' => sub {
    $sb->create_order(order_id => 'st-1');
    for my $st (404, 403, 500, 503) {
        $sb->fault(match => '/v5/orders/st-1/subscribe', mode => 'stream_status', status => $st, times => 1);
        my $c = open_stream('st-1');
        ok($c->wait_done(5), "$st answered") or next;
        is($c->{status}, $st, "status $st relayed");
        like($c->{headers}{'content-type'}, qr{^application/json}, 'JSON');
        my $j = json_body($c);
        is($j->{error}, 'Upstream returned an error', 'error message');
        is($j->{status}, $st, 'status member');
        unlike($c->{body}, qr/STREAM_UNAVAILABLE|SANDBOX/, 'the upstream body is not passed through');
        $c->close;
    }
    is($sb->subscribers('st-1'), 0, 'nothing left open upstream');
};

subtest 'odd order ids: rejected without an upstream call' => sub {
    $sb->clear_requests;
    for my $id ('a.b', 'a%20b', 'x' x 65, 'caf%C3%A9', 'a%3Bb', 'a%27b', '%2E%2E', 'a+b', 'a%0Ab', 'a%22b') {
        my $r = $http->get($httpd->url("/api/orders/$id/subscribe"), { headers => { Accept => 'text/event-stream' } });
        ok($r->{status} == 400 || $r->{status} == 404, "'$id': $r->{status}");
        if ($r->{status} == 400) {
            my $j = eval { decode_json($r->{content}) } || {};
            is($j->{detail}, 'INVALID_ORDER_ID', "'$id': INVALID_ORDER_ID");
        }
        unlike($r->{headers}{'content-type'} // '', qr/event-stream/, "'$id': not a stream");
    }
    my $r = $http->get($httpd->url('/api/orders/' . ('y' x 64) . '/subscribe'));
    is($r->{status}, 200, 'a 64-character id is fine (answered by the upstream)');
    is(scalar @{ $sb->requests(path => '/v5/orders') }, 1, 'only the valid id reached the upstream');
};

subtest 'upstream that never answers its headers' => sub {
    $sb->create_order(order_id => 'hang-1');
    $sb->fault(match => '/v5/orders/hang-1/subscribe', mode => 'hang', times => 1);
    my $t = time;
    my $c = open_stream('hang-1');
    ok($c->wait_done(12), 'the browser gets an answer') or do { $c->close; return };
    my $took = time - $t;
    is($c->{status}, 502, 'status 502');
    is(json_body($c)->{error}, 'Failed to connect to upstream stream', 'error message');
    # CryptorefillsTimeout 2 bounds the wait for the response head
    cmp_ok($took, '>=', 1.5, sprintf('after the configured timeout (%.1f s)', $took));
    cmp_ok($took, '<', 8, 'not much later');
    $c->close;
};

subtest 'stalled upstream ends the stream; heartbeats meanwhile' => sub {
    $sb->create_order(order_id => 'stall-1');
    $sb->fault(match => '/v5/orders/stall-1/subscribe', mode => 'stream_silent', times => 1);
    my $t = time;
    my $c = open_stream('stall-1');
    ok($c->wait_headers(5), 'stream opened') or return;
    is($c->{status}, 200, 'status 200');
    ok($sb->wait_subscribers('stall-1', 1, 5), 'upstream stream open');
    ok($c->wait_done(10), 'the module ends the stream') or do { $c->close; return };
    my $took = time - $t;
    cmp_ok($took, '>=', 2.5, sprintf('not before the stall timeout (%.1f s)', $took));
    cmp_ok($took, '<', 7, 'within a few seconds of it');
    cmp_ok(scalar(grep { /keep-alive/ } $c->comments), '>=', 1, 'heartbeats were sent while waiting');
    ok(!$c->{framing_error}, 'clean end of the chunked response');
    my $deadline = time + 5;
    sleep 0.1 while $sb->subscribers('stall-1') && time < $deadline;
    is($sb->subscribers('stall-1'), 0, 'upstream transfer closed');
    $c->close;
};

subtest 'upstream comments keep a quiet stream alive' => sub {
    $sb->create_order(order_id => 'alive-1');
    $sb->fault(match => '/v5/orders/alive-1/subscribe', mode => 'stream_silent', times => 1);
    my $c = open_stream('alive-1');
    ok($c->wait_headers(5), 'stream opened') or return;
    ok($sb->wait_subscribers('alive-1', 1, 5), 'upstream stream open');
    my $t = time;
    while (time - $t < 5) {
        $sb->push_event('alive-1', ": upstream ping\n\n");
        $c->pump(0.5);
    }
    ok(!$c->{done} && !$c->{eof}, 'still open after 5 s > stall timeout, thanks to upstream comments');
    unlike($c->{body}, qr/upstream ping/, 'upstream comments are not relayed');
    $sb->push_event('alive-1', qq(data: {"order_id":"alive-1","order_state":"Done"}\n\nevent: stop\ndata: {}\n\n));
    ok($c->wait_done(5), 'ends on stop');
    is(scalar($c->events), 2, 'order and stop relayed');
    $c->close;
};

subtest 'upstream closes the stream: the response ends cleanly' => sub {
    for my $abrupt (0, 1) {
        my $oid = "close-$abrupt";
        $sb->create_order(order_id => $oid);
        my $c = open_stream($oid);
        ok($c->wait_for(sub { $_[0]->events >= 1 }, 5), 'stream open') or next;
        ok($sb->wait_subscribers($oid, 1, 5), 'upstream stream open');
        # an incomplete event in flight when the upstream goes
        $sb->push_event($oid, qq(data: {"order_id":"$oid","order_state":"Done"}\n));
        is($sb->close_streams($oid, abrupt => $abrupt), 1, $abrupt ? 'upstream socket closed' : 'upstream stream ended');
        ok($c->wait_done(5), 'terminating chunk sent to the browser') or next;
        ok(!$c->{framing_error}, 'valid framing');
        is(scalar($c->events), 1, 'the unterminated event is discarded');
        if ($httpd->streams_suspended) {
            # The event MPM never takes a suspended connection back.
            ok($c->wait_eof(5), 'suspended relay: the connection closes after the stream');
        }
        else {
            $c->request('/api/countries');
            ok($c->wait_done(5) && $c->{status} == 200, 'the connection is still usable');
        }
        $c->close;
    }
};

subtest 'malformed upstream events are dropped, the good ones around them relayed' => sub {
    my $oid = 'mal-1';
    $sb->create_order(order_id => $oid);
    my $before = counter('stream_events_dropped');
    ok(defined $before, 'dropped-event counter readable in server-status');
    my $c = open_stream($oid);
    ok($c->wait_for(sub { $_[0]->events >= 1 }, 5), 'stream open') or return;
    my $good = sub { qq(id: g$_[0]\ndata: {"order_id":"$oid","order_state":"WaitingForPayment","good":$_[0]}\n\n) };
    my @bad = (
        "data: {not json\n\n",
        "this line has no colon and is not an event\n\n",
        qq(data: {"order_state":"WaitingForPayment"}\n\n),                    # no order_id
        qq(data: {"order_id":"","order_state":"WaitingForPayment"}\n\n),      # empty order_id
        qq(data: {"order_id":"$oid"}\n\n),                                     # no order_state
        qq(data: {"order_id":42,"order_state":"Done"}\n\n),
        qq(data: {"order_id":"$oid","order_state":[]}\n\n),
        qq(data: {"order_id":"$oid","order_state":"Done; rm -rf"}\n\n),
        qq(data: {"order_id":"someone-else","order_state":"Done"}\n\n),      # another order
        qq(data: "a string, not an order"\n\n),
        qq(data: [1,2,3]\n\n),
        qq(data: {"order_id":"$oid","order_state":"Done"} trailing\n\n),
        "data: \xff\xfe\x00binary\n\n",
        "event: unknown-kind\ndata: {}\n\n",
        "event: \ndata: \n\n",
        "retry: soon\n\n",
        qq(data: {"order_id":"$oid","order_state":"Done","x":) . ('[' x 200) . (']' x 200) . "}\n\n",   # too deep
    );
    my $big = qq(data: {"order_id":"$oid","order_state":"Done","pad":") . ('p' x (300 * 1024)) . "\"}\n\n";
    my $i = 0;
    my $raw = $good->(++$i);
    $raw .= $_ . $good->(++$i) for @bad;
    $sb->push_event($oid, $raw);
    ok($c->wait_for(sub { grep { ($_->{id} // '') eq "g$i" } $_[0]->events }, 5), 'last good event arrives')
        or diag explain [ $c->events ];
    # an event over the size limit, then more good ones
    $sb->push_event($oid, $big . $good->(++$i));
    $sb->push_event($oid, $good->(++$i));
    ok($c->wait_for(sub { grep { ($_->{id} // '') eq "g$i" } $_[0]->events }, 8), 'good events after an oversized one are relayed')
        or diag 'done=' . ($c->{done} // 0) . ' last ids: ' . join ' ', map { $_->{id} // '-' } $c->events;
    my @got = grep { ($_->{id} // '') =~ /^g/ } $c->events;
    is_deeply([ map { $_->{id} } @got ], [ map { "g$_" } 1 .. $i ], 'exactly the good events, in order');
    my @other = grep { ($_->{id} // '') !~ /^g/ } $c->events;
    is(scalar @other, 1, 'nothing else but the initial order') or diag explain \@other;
    unlike($c->{body}, qr/not json|no colon|someone-else|unknown-kind|a string|rm -rf|trailing|binary|ppppp/, 'no malformed payload leaked');
    my $after = counter('stream_events_dropped');
    # every bad block that dispatches an event (all but the colon-less line and
    # the lone retry), plus the oversized one
    is(($after // 0) - ($before // 0), scalar(@bad) - 2 + 1, 'drops counted in server-status');
    like($httpd->slurp('error.log'), qr/CR01307: dropped an upstream event over \d+ bytes on the stream of order mal-1/,
        'the oversized event is logged');
    $sb->push_event($oid, "event: stop\ndata: {}\n\n", close => 1);
    ok($c->wait_done(5), 'stop still ends the stream');
    $c->close;
};

subtest 'sandbox stream_garbage fault: garbage before every event' => sub {
    my $oid = 'garb-1';
    $sb->create_order(order_id => $oid);
    $sb->fault(match => "/v5/orders/$oid/subscribe", mode => 'stream_garbage', times => 1);
    my $c = open_stream($oid);
    ok($c->wait_for(sub { $_[0]->events >= 1 }, 5), 'first order event') or return;
    $sb->advance($oid);
    $sb->advance($oid);
    ok($c->wait_done(5), 'stream ends with stop');
    is_deeply([ map { $_->{event} // 'message' } $c->events ], [qw(message message message stop)], 'only the orders and stop');
    $c->close;
};

$httpd->stop;
$sb->stop;
done_testing;
