#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# GET orders/{orderId}/subscribe: the SSE relay, happy paths (issue #5).
#
# Every stream is read by a raw socket client (IO::Socket + select) that
# decodes the chunked framing itself and time-stamps every read, so the
# test sees exactly what a browser would get and when, with mod_deflate
# configured to compress text/event-stream and the request advertising gzip.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use JSON::PP;
use IO::Socket::INET;
use IO::Select;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(time sleep);

use SseClient;   # t/lib/SseClient.pm: the raw SSE client

package main;

# ---------------------------------------------------------------------------
my $sb = CrSandbox->start();
my $httpd = CrTest->start(
    sandbox => $sb,
    conf    => <<'CONF',
CryptorefillsStreamHeartbeat 1
# The worst case for a relay: every response of these types is compressed.
AddOutputFilterByType DEFLATE text/event-stream text/html application/json
CONF
);
my $port = $httpd->port;
my $ASYNC = $httpd->streams_suspended;
diag($ASYNC ? 'order streams: suspended relay' : 'order streams: blocking relay');
my $JSON = JSON::PP->new->canonical;

sub sub_path { "/api/orders/$_[0]/subscribe" }
sub open_stream {
    my ($oid, @h) = @_;
    return SseClient->new(port => $port, path => sub_path($oid), headers => [ 'Accept-Encoding' => 'gzip', @h ]);
}

# Write a push to the sandbox on a raw socket and return at once, so the
# test's clock starts when the bytes leave, and the SSE socket is read
# while the sandbox relays them.
sub push_nowait {
    my ($oid, $bytes) = @_;
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $sb->port, Proto => 'tcp', Timeout => 5)
        or die "sandbox connect: $!";
    setsockopt($c, IPPROTO_TCP, TCP_NODELAY, 1);
    binmode $c;
    my $req = "POST /_sandbox/orders/$oid/push HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        . "Content-Type: application/octet-stream\r\nContent-Length: " . length($bytes)
        . "\r\nConnection: close\r\n\r\n$bytes";
    my $t0 = time;
    syswrite($c, $req) == length $req or die "push write: $!";
    return ($c, $t0);
}
sub push_reply {
    my ($c) = @_;
    my $sel = IO::Select->new($c);
    my $all = '';
    while ($sel->can_read(5)) { my $n = sysread($c, my $b, 4096); last unless $n; $all .= $b }
    close $c;
    my ($body) = $all =~ /\r\n\r\n(.*)\z/s;
    return eval { decode_json($body // '') } || {};
}

# ---------------------------------------------------------------------------
subtest 'headers, first bytes before any upstream event, no compression' => sub {
    # stream_silent: the upstream sends its headers and then nothing, so
    # whatever arrives came from the module itself.
    $sb->create_order(order_id => 'silent-1');
    $sb->fault(match => '/v5/orders/silent-1/subscribe', mode => 'stream_silent', times => 1);
    my $c = open_stream('silent-1');
    ok($c->wait_headers(5), 'response headers arrive') or return;
    is($c->{status}, 200, 'status 200');
    my $h = $c->{headers};
    like($h->{'content-type'}, qr{^text/event-stream\b}, 'Content-Type: text/event-stream');
    is($h->{'cache-control'}, 'no-cache, no-transform', 'Cache-Control: no-cache, no-transform');
    is($h->{'x-accel-buffering'}, 'no', 'X-Accel-Buffering: no');
    ok(!exists $h->{'content-encoding'}, 'no Content-Encoding although the request accepts gzip and DEFLATE is configured')
        or diag "Content-Encoding: $h->{'content-encoding'}";
    ok(!exists $h->{'content-length'}, 'no Content-Length');
    like($h->{'transfer-encoding'} // '', qr/^chunked$/i, 'HTTP/1.1 chunked');
    ok($c->wait_body(qr/\A: ok\nretry: \d+\n\n/, 3), 'the first bytes (": ok" and "retry:") arrive although the upstream sent no event')
        or diag explain $c->{body};
    my ($retry) = $c->{body} =~ /retry: (\d+)/;
    cmp_ok($retry // 0, '>=', 1000, "retry: $retry ms, a sane reconnection time");
    # with the body, well before the 1 s heartbeat would have pushed out a buffer
    cmp_ok($c->arrival_of(0) - $c->{t_sent}, '<', 0.9, 'first bytes arrive before the first heartbeat is due');
    is(scalar($c->events), 0, 'no event invented');
    $c->close;
};

subtest 'events relayed in order, data intact, stop ends the response' => sub {
    my $o = $sb->create_order(order_id => 'relay-1');
    is($o->{order_state}, 'WaitingForPayment', 'sandbox order created');
    my $c = open_stream('relay-1');
    ok($c->wait_headers(5), 'headers') or return;
    is($c->{status}, 200, 'status 200');
    ok($sb->wait_subscribers('relay-1', 1, 5), 'the module holds one upstream stream');
    ok($c->wait_for(sub { $_[0]->events >= 1 }, 5), 'the current order arrives first') or return;
    like($c->{body}, qr/\A: ok\nretry: \d+\n\n/, 'the stream starts with ": ok" and "retry:" ahead of the first upstream event');

    $sb->advance('relay-1');
    ok($c->wait_for(sub { $_[0]->events >= 2 }, 5), 'the advance arrives');
    $sb->advance('relay-1');    # Done: the sandbox sends the order, then `stop`, then ends
    ok($c->wait_done(5), 'the response ends (terminating chunk) after stop');
    ok(!$c->{framing_error}, 'chunked framing is valid') or diag $c->{framing_error};

    my @ev = $c->events;
    is(scalar @ev, 4, 'three order events and the stop') or diag explain \@ev;
    my @states = map { my $j = eval { decode_json(join "\n", @{ $_->{data} }) }; $j && $j->{order_state} } @ev[0 .. 2];
    is_deeply(\@states, [qw(WaitingForPayment WaitingForDelivery Done)], 'order states in upstream order');
    is_deeply([ map { $_->{id} } @ev[0 .. 2] ], [ 1, 2, 3 ], 'upstream ids relayed');
    is($ev[3]{event}, 'stop', 'stop relayed last');
    is_deeply(decode_json($ev[3]{data}[0]), {}, 'stop data relayed');
    # Data intact: the relayed Done order equals the upstream's order byte for byte.
    my $up = $sb->order('relay-1');
    is_deeply(decode_json($ev[2]{data}[0]), $up, 'Done event equals the upstream order document');
    like($ev[2]{data}[0], qr/"pin_code"/, 'delivery codes included');
    unlike($c->{body}, qr/\r/, 'LF line ends only');
    like($c->{body}, qr/event: stop\ndata: \{\}\n\n\z/, 'nothing after the stop event');
    if ($ASYNC) {
        # The event MPM never takes a suspended connection back.
        like($c->{headers}{connection} // '', qr/\bclose\b/i, 'suspended relay: Connection: close');
        ok($c->wait_eof(5), 'suspended relay: the connection closes after the terminating chunk');
    }
    else {
        # The end of the response is the end of the stream, not of the connection.
        $c->request('/api/countries');
        ok($c->wait_done(5), 'the keep-alive connection serves the next request after the stream');
        is($c->{status}, 200, 'next request answered with status 200');
    }
    $c->close;
    is($sb->subscribers('relay-1'), 0, 'upstream stream closed');
};

subtest 'pushed events: payloads intact, per-event relay delay, no buffering by mod_deflate' => sub {
    $sb->create_order(order_id => 'push-1');
    my $c = open_stream('push-1');
    ok($c->wait_for(sub { $_[0]->events >= 1 }, 5), 'initial event') or return;
    is($c->{headers}{'content-encoding'}, undef, 'not compressed');
    my (@delay, @sent);
    my $N = $ENV{CR_RELAY_EVENTS} || 50;    # more for a better p99 in the notes
    my $ok = 1;
    for my $i (1 .. $N) {
        # Multi-byte UTF-8, escapes and a data field split over two lines.
        my $doc = { order_id => 'push-1', order_state => 'WaitingForPayment', seq => $i,
            note => "caf\x{e9} \x{20ac} \"q\" \\ <tag> & $i", pad => 'x' x ($i * 37) };
        my $json = JSON::PP->new->canonical->utf8->encode($doc);
        # split between two members: an LF there is JSON whitespace
        my $cut = index($json, ',"order_id"') + 1;
        my ($a, $b) = (substr($json, 0, $cut), substr($json, $cut));
        my $raw = "id: p$i\ndata: $a\ndata: $b\n\n";
        push @sent, "$a\n$b";
        my $before = length $c->{body};
        my ($pc, $t0) = push_nowait('push-1', $raw);
        my $want = "id: p$i\ndata: $a\ndata: $b\n\n";
        my $got = $c->wait_for(sub { index($_[0]{body}, $want, $before) >= 0 }, 5);
        my $r = push_reply($pc);
        unless ($got && ($r->{subscribers} // 0) == 1) { $ok = 0; diag "event $i: got=$got subscribers=" . ($r->{subscribers} // '?'); last }
        my $end = index($c->{body}, $want, $before) + length($want) - 1;
        push @delay, ($c->arrival_of($end) - $t0) * 1000;
    }
    ok($ok, "all $N pushed events relayed, each before the next was pushed");
    my @ev = grep { ($_->{id} // '') =~ /^p/ } $c->events;
    is(scalar @ev, $N, "$N events");
    is_deeply([ map { join "\n", @{ $_->{data} } } @ev ], \@sent, 'every payload relayed byte for byte, data lines kept');
    is_deeply([ map { $_->{id} } @ev ], [ map { "p$_" } 1 .. $N ], 'in order, ids kept');
    if (@delay) {
        my @s = sort { $a <=> $b } @delay;
        my $med = $s[ int(@s / 2) ];
        my $p99 = $s[ int(0.99 * $#s + 0.5) ];
        diag sprintf 'relay delay over %d events (push -> byte at the client, through DEFLATE config + gzip request): '
            . 'min %.2f ms, median %.2f ms, p99 %.2f ms, max %.2f ms', scalar @s, $s[0], $med, $p99, $s[-1];
        cmp_ok($med, '<', 50, 'median relay delay under 50 ms on loopback');
    }
    $c->close;
};

subtest 'heartbeats on a silent upstream' => sub {
    $sb->create_order(order_id => 'quiet-1');
    my $c = open_stream('quiet-1');
    ok($c->wait_for(sub { $_[0]->events >= 1 }, 5), 'initial event') or return;
    my $t = time;
    ok($c->wait_for(sub { grep { /keep-alive/ } $_[0]->comments } , 4), 'a comment line within a few seconds of silence (heartbeat 1 s)');
    ok($c->wait_for(sub { (grep { /keep-alive/ } $_[0]->comments) >= 3 }, 8), 'and they keep coming');
    my $elapsed = time - $t;
    my @hb = grep { /keep-alive/ } $c->comments;
    cmp_ok(scalar @hb, '<=', int($elapsed / 0.9) + 1, "not more than about one a second ($elapsed s, " . scalar(@hb) . ' comments)');
    like($c->{body}, qr/\n\n: keep-alive\n\n/, 'heartbeat is a comment block of its own');
    is(scalar($c->events), 1, 'heartbeats are not events');
    # An event still arrives between heartbeats.
    $sb->advance('quiet-1');
    ok($c->wait_for(sub { $_[0]->events >= 2 }, 5), 'an event after heartbeats is relayed');
    $c->close;
};

subtest 'browser disconnect ends the upstream transfer' => sub {
    $sb->create_order(order_id => 'gone-1');
    my $c = open_stream('gone-1');
    ok($c->wait_for(sub { $_[0]->events >= 1 }, 5), 'stream open') or return;
    ok($sb->wait_subscribers('gone-1', 1, 5), 'one upstream stream');
    my $t = time;
    $c->close;
    my $deadline = time + 8;
    sleep 0.1 while $sb->subscribers('gone-1') > 0 && time < $deadline;
    is($sb->subscribers('gone-1'), 0, 'upstream stream closed after the browser left');
    diag sprintf 'upstream closed %.2f s after the browser disconnected', time - $t;
    # The worker is free again: more streams open and the server answers.
    my $c2 = open_stream('gone-1');
    ok($c2->wait_for(sub { $_[0]->events >= 1 }, 5), 'a new stream to the same order opens');
    $c2->close;
};

subtest 'browser disconnect while the upstream keeps sending' => sub {
    $sb->create_order(order_id => 'gone-2');
    my $c = open_stream('gone-2');
    ok($c->wait_for(sub { $_[0]->events >= 1 }, 5), 'stream open') or return;
    $c->close;
    my $deadline = time + 8;
    while ($sb->subscribers('gone-2') > 0 && time < $deadline) {
        $sb->push_event('gone-2', qq(data: {"order_id":"gone-2","order_state":"WaitingForPayment"}\n\n));
        sleep 0.1;
    }
    is($sb->subscribers('gone-2'), 0, 'upstream stream closed');
};

subtest 'Last-Event-ID is passed upstream' => sub {
    $sb->create_order(order_id => 'lei-1');
    $sb->clear_requests;
    my $c = open_stream('lei-1', 'Last-Event-ID' => '17');
    ok($c->wait_for(sub { $_[0]->events >= 1 }, 5), 'stream open') or return;
    my $r = $sb->last_request(path => '/v5/orders/lei-1/subscribe');
    ok($r, 'upstream request recorded') or return;
    is($r->{headers}{'last-event-id'}, '17', 'Last-Event-ID forwarded');
    like($r->{headers}{accept} // '', qr{text/event-stream}, 'Accept: text/event-stream upstream');
    unlike($r->{headers}{'accept-encoding'} // '', qr/gzip|deflate|br/, 'no compression asked of the upstream stream');
    $c->close;

    $sb->clear_requests;
    my $c2 = open_stream('lei-1');
    ok($c2->wait_for(sub { $_[0]->events >= 1 }, 5), 'stream without Last-Event-ID') or return;
    $r = $sb->last_request(path => '/v5/orders/lei-1/subscribe');
    ok(!defined $r->{headers}{'last-event-id'}, 'no Last-Event-ID invented');
    $c2->close;

    $sb->clear_requests;
    my $c3 = open_stream('lei-1', 'Last-Event-ID' => 'x' x 300);
    ok($c3->wait_for(sub { $_[0]->events >= 1 }, 5), 'stream with an oversized Last-Event-ID still opens') or return;
    $r = $sb->last_request(path => '/v5/orders/lei-1/subscribe');
    ok(!defined $r->{headers}{'last-event-id'}, 'an oversized Last-Event-ID is not forwarded');
    $c3->close;
};

subtest 'raw upstream bytes: split lines, CR-only and CRLF line ends, BOM' => sub {
    # A silent upstream stream: the pushed bytes are the very first of its body,
    # so a leading BOM is at the stream start where the SSE rules strip it.
    $sb->create_order(order_id => 'raw-1');
    $sb->fault(match => '/v5/orders/raw-1/subscribe', mode => 'stream_silent', times => 1);
    my $c = open_stream('raw-1');
    ok($c->wait_body(qr/\A: ok\n/, 5), 'stream open') or return;
    ok($sb->wait_subscribers('raw-1', 1, 5), 'upstream stream open');
    my $d = sub { qq({"order_id":"raw-1","order_state":"$_[0]","n":$_[1]}) };
    $sb->push_event('raw-1', "\xEF\xBB\xBFid: 1\r\ndata: " . $d->('Created', 1) . "\r\n\r\n");
    ok($c->wait_for(sub { $_[0]->events >= 1 }, 5), 'BOM + CRLF event relayed');
    # one event split over three pushes, mid-field and between CR and LF
    $sb->push_event('raw-1', "id: 2\r\nda");
    $sb->push_event('raw-1', "ta: " . substr($d->('PaymentStarted', 2), 0, 15));
    sleep 0.3;
    is(scalar($c->events), 1, 'a partial event is not relayed early');
    $sb->push_event('raw-1', substr($d->('PaymentStarted', 2), 15) . "\r");
    $sb->push_event('raw-1', "\n\r\n");
    ok($c->wait_for(sub { $_[0]->events >= 2 }, 5), 'split event relayed once complete');
    # CR-only line ends, comments and an unknown field in between
    $sb->push_event('raw-1', "id: 3\r: a comment\rfoo: bar\rdata: " . $d->('WaitingForDelivery', 3) . "\r\r");
    ok($c->wait_for(sub { $_[0]->events >= 3 }, 5), 'CR-only event relayed');
    # a field without a space after the colon; data value starting with a space kept
    $sb->push_event('raw-1', "id:4\ndata:" . $d->('Done', 4) . "\n\n");
    ok($c->wait_for(sub { $_[0]->events >= 4 }, 5), 'no-space event relayed');
    my @ev = $c->events;
    is_deeply([ map { $_->{id} } @ev ], [ 1 .. 4 ], 'ids in order');
    is_deeply([ map { $_->{data}[0] } @ev ],
        [ $d->('Created', 1), $d->('PaymentStarted', 2), $d->('WaitingForDelivery', 3), $d->('Done', 4) ],
        'payloads intact (BOM stripped, line ends normalised)');
    unlike($c->{body}, qr/\r|\xEF\xBB\xBF|foo|a comment/, 'canonical LF output: no CR, no BOM, no unknown field or upstream comment');
    $sb->push_event('raw-1', "event: stop\ndata: {}\n\n", close => 1);
    ok($c->wait_done(5), 'stop ends it');
    $c->close;
};

subtest 'HTTP/1.0 client: the stream ends with the connection' => sub {
    $sb->create_order(order_id => 'h10-1');
    my $c = SseClient->new(port => $port, path => sub_path('h10-1'), http10 => 1,
        headers => [ 'Accept-Encoding' => 'gzip' ]);
    ok($c->wait_for(sub { $_[0]->events >= 1 }, 5), 'event over HTTP/1.0') or return;
    ok(!defined $c->{headers}{'transfer-encoding'}, 'no chunked framing for HTTP/1.0');
    $sb->set_order_state('h10-1', 'Expired');
    ok($c->wait_eof(5), 'connection closed after stop');
    my @ev = $c->events;
    is($ev[-1]{event}, 'stop', 'stop relayed');
    $c->close;
};

subtest 'several streams of one order at once' => sub {
    $sb->create_order(order_id => 'multi-1');
    my @c = map { open_stream('multi-1') } 1 .. 3;
    for my $c (@c) { ok($c->wait_for(sub { $_[0]->events >= 1 }, 5), 'stream open') }
    ok($sb->wait_subscribers('multi-1', 3, 5), 'three upstream streams');
    $sb->advance('multi-1');
    $sb->advance('multi-1');
    for my $c (@c) {
        ok($c->wait_done(5), 'each stream gets its events and stop');
        is_deeply([ map { $_->{event} // 'message' } $c->events ], [qw(message message message stop)], 'same sequence');
        $c->close;
    }
};

$httpd->stop;
$sb->stop;
done_testing;
