#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# GET orders/{orderId}/subscribe: caps and limits (issue #5).
# CryptorefillsMaxStreams (server-wide, counted across prefork processes),
# CryptorefillsMaxStreamsPerClient, slots released however a stream ends,
# CryptorefillsStreamMaxLifetime, and streams ended by a graceful restart
# or a stop instead of pinning the old child.
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
use File::Temp ();

use SseClient;   # t/lib/SseClient.pm: the raw SSE client

package main;

# ---------------------------------------------------------------------------
my $sb = CrSandbox->start();
$sb->create_order(order_id => "$_") for (map { "ord-$_" } 1 .. 6), (map { "pc-$_" } 1 .. 4), 'lt-6', 'gr-1', 'hb-1';

sub stream_on {
    my ($httpd, $oid, %o) = @_;
    return SseClient->new(port => $httpd->port, path => "/api/orders/$oid/subscribe",
        headers => [ 'Accept-Encoding' => 'gzip' ], %o);
}
# An open stream: 200, the current order relayed, and not ended.
sub opened {
    my ($c) = @_;
    return $c->wait_for(sub { $_[0]->events >= 1 || $_[0]{done} }, 5) && $c->{status} == 200 && !$c->{done};
}
sub is_rejected {
    my ($c, $why, $name) = @_;
    subtest $name => sub {
        ok($c->wait_done(5), 'answered') or return;
        is($c->{status}, 503, 'status 503');
        like($c->{headers}{'retry-after'} // '', qr/^\d+$/, 'Retry-After: ' . ($c->{headers}{'retry-after'} // 'none'));
        cmp_ok($c->{headers}{'retry-after'} // 0, '>=', 1, 'Retry-After at least 1 s');
        like($c->{headers}{'content-type'}, qr{^application/json}, 'JSON, not an event stream');
        my $j = eval { decode_json($c->{body}) } || {};
        is($j->{status}, 503, 'status member');
        is($j->{detail}, 'TOO_MANY_STREAMS', 'TOO_MANY_STREAMS');
        like(JSON::PP->new->canonical->encode($j->{moreDetails} // {}), $why, 'says which cap');
    };
    $c->close;
}
# The module's count of open streams (mod_status ?auto).
sub streams_open {
    my ($httpd) = @_;
    my $r = HTTP::Tiny->new(timeout => 5)->get($httpd->url('/server-status?auto'));
    return $r->{content} =~ /^Cryptorefillsstreams_open: (\d+)$/m ? $1 : undef;
}
sub wait_streams_open {
    my ($httpd, $n, $secs) = @_;
    my $deadline = time + $secs;
    while (1) {
        my $v = streams_open($httpd);
        return 1 if defined $v && $v == $n;
        return 0 if time > $deadline;
        sleep 0.1;
    }
}
# Retry until a stream opens (a slot is released a moment after the stream ends).
sub opens_within {
    my ($httpd, $oid, $secs, %o) = @_;
    my $deadline = time + $secs;
    while (1) {
        my $c = stream_on($httpd, $oid, %o);
        return $c if opened($c);
        $c->close;
        return undef if time > $deadline;
        sleep 0.2;
    }
}

# ---------------------------------------------------------------------------
# prefork's parent signals its whole process group when it stops (killpg);
# CrTest starts every httpd in a session of its own, so the test and the
# sandbox are not hit.
sub start_httpd {
    return CrTest->start(sandbox => $sb, @_);
}

subtest 'CryptorefillsMaxStreams 2 (prefork: counted across processes)' => sub {
    my $httpd = start_httpd(mpm => 'prefork', conf => <<'CONF');
CryptorefillsMaxStreams 2
CryptorefillsMaxStreamsPerClient 50
CryptorefillsStreamHeartbeat 1
<Location "/server-status">
    SetHandler server-status
</Location>
CONF
    my $a = stream_on($httpd, 'ord-1');
    my $b = stream_on($httpd, 'ord-2', local_addr => '127.0.0.2');
    ok(opened($a), 'first stream open');
    ok(opened($b), 'second stream open (another client)');
    $sb->clear_requests;
    is_rejected(stream_on($httpd, 'ord-3'), qr/server-wide/, 'third stream refused');
    is_rejected(stream_on($httpd, 'ord-3', local_addr => '127.0.0.3'), qr/server-wide/, 'from another address too');
    is(scalar @{ $sb->requests(path => '/v5/orders/ord-3') }, 0, 'no upstream call for a refused stream');
    # other routes still answer while the stream budget is used up
    my $r = HTTP::Tiny->new(timeout => 5)->get($httpd->url('/api/countries'));
    is($r->{status}, 200, 'other routes are served meanwhile');

    # a browser that leaves gives its slot back
    $a->close;
    my $c = opens_within($httpd, 'ord-3', 8);
    ok($c, 'a slot is free again after a browser left');
    # a stream that ends with stop gives its slot back
    $sb->set_order_state('ord-2', 'Expired');
    ok($b->wait_done(5), 'stream ended by the upstream stop');
    $b->close;
    my $d = opens_within($httpd, 'ord-4', 8);
    ok($d, 'slot free again after stop');
    is_rejected(stream_on($httpd, 'ord-5'), qr/server-wide/, 'full again');
    $c->close if $c;
    $d->close if $d;
    # the module notices the departures on its next tick (about a second)
    ok(wait_streams_open($httpd, 0, 8), 'no stream counted open once the browsers left');

    # failures before the stream opens give their slot back at once
    $sb->fault(match => '/v5/orders/ord-5/subscribe', mode => 'stream_status', status => 404, times => 5);
    for (1 .. 5) {
        my $e = stream_on($httpd, 'ord-5');
        $e->wait_done(5);
        is($e->{status}, 404, "upstream 404 #$_ (a refused slot would give 503)");
        $e->close;
    }
    is(streams_open($httpd), 0, 'none counted open after the failures');
    my @open = map { opens_within($httpd, "ord-$_", 8) } 5, 6;
    is(scalar(grep { defined } @open), 2, 'both slots usable after the failures');
    $_ && $_->close for @open;
    $httpd->stop;
};

subtest 'CryptorefillsMaxStreamsPerClient 1' => sub {
    my $httpd = start_httpd(conf => <<'CONF');
CryptorefillsMaxStreamsPerClient 1
CryptorefillsStreamHeartbeat 1
CryptorefillsTimeout 20
CONF
    my $a = stream_on($httpd, 'pc-1');
    ok(opened($a), 'first stream of 127.0.0.1 open');
    is_rejected(stream_on($httpd, 'pc-2'), qr/per-client/, 'second stream of 127.0.0.1 refused');
    my $b = stream_on($httpd, 'pc-2', local_addr => '127.0.0.2');
    ok(opened($b), 'another client address still gets its stream');
    is_rejected(stream_on($httpd, 'pc-3', local_addr => '127.0.0.2'), qr/per-client/, 'and only one');
    $a->close;
    my $c = opens_within($httpd, 'pc-3', 8);
    ok($c, '127.0.0.1 gets a stream again once its first is gone');
    $c->close if $c;
    $b->close;

    # A browser leaving while the upstream has not even answered its head:
    # the transfer ends and the slot comes back (CryptorefillsTimeout 20 is
    # far off, so only noticing the departure can free it).
    $sb->fault(match => '/v5/orders/pc-4/subscribe', mode => 'hang', times => 1);
    my $h = stream_on($httpd, 'pc-4', local_addr => '127.0.0.4');
    ok($sb->wait_requests(path => '/v5/orders/pc-4/subscribe', count => 1, timeout => 5), 'upstream asked');
    ok(!$h->wait_headers(1), 'no answer while the upstream hangs');
    $h->close;
    my $t = time;
    my $d = opens_within($httpd, 'pc-4', 8, local_addr => '127.0.0.4');
    ok($d, 'slot back after the browser left a hanging request');
    diag sprintf 'slot back %.1f s after the browser left', time - $t;
    $d->close if $d;
    $httpd->stop;
};

subtest 'CryptorefillsStreamMaxLifetime' => sub {
    my $httpd = start_httpd(conf => <<'CONF');
CryptorefillsStreamMaxLifetime 2
CryptorefillsStreamHeartbeat 1
CONF
    my $t = time;
    my $c = stream_on($httpd, 'lt-6');
    ok(opened($c), 'stream open') or return;
    # keep the upstream busy: the limit applies however lively the stream
    while (!$c->{done} && time - $t < 8) {
        $sb->push_event('lt-6', qq(data: {"order_id":"lt-6","order_state":"WaitingForPayment"}\n\n));
        $c->pump(0.3);
    }
    my $took = time - $t;
    ok($c->{done}, 'the stream is ended by the module');
    cmp_ok($took, '>=', 1.8, sprintf('not before its lifetime (%.1f s)', $took));
    cmp_ok($took, '<', 6, 'within a few seconds of it');
    ok(!$c->{framing_error}, 'clean end of the chunked response (the browser reconnects)');
    cmp_ok(scalar($c->events), '>=', 2, 'events were relayed until then');
    my $deadline = time + 5;
    sleep 0.1 while $sb->subscribers('lt-6') && time < $deadline;
    is($sb->subscribers('lt-6'), 0, 'upstream transfer closed');
    $c->close;
    $httpd->stop;
};

subtest 'a browser leaving is noticed without any write (heartbeat 60 s)' => sub {
    my $httpd = start_httpd(conf => <<'CONF');
CryptorefillsStreamHeartbeat 60
CryptorefillsMaxStreamsPerClient 1
CONF
    $sb->fault(match => '/v5/orders/hb-1/subscribe', mode => 'stream_silent', times => 1);
    my $c = stream_on($httpd, 'hb-1');
    ok($c->wait_headers(5) && $c->{status} == 200, 'silent stream open') or return;
    ok($sb->wait_subscribers('hb-1', 1, 5), 'upstream stream open');
    my $t = time;
    $c->close;
    my $deadline = time + 6;
    sleep 0.1 while $sb->subscribers('hb-1') && time < $deadline;
    is($sb->subscribers('hb-1'), 0, 'upstream transfer closed with nothing written to the browser');
    diag sprintf 'noticed %.1f s after the browser left', time - $t;
    ok(opens_within($httpd, 'hb-1', 5), 'and the per-client slot is back');
    $httpd->stop;
};

subtest 'graceful restart and stop end open streams' => sub {
    my $httpd = start_httpd(conf => "CryptorefillsStreamHeartbeat 1\n");
    my $c = stream_on($httpd, 'gr-1');
    ok(opened($c), 'stream open') or return;
    my $t = time;
    ok($httpd->graceful, 'graceful restart done');
    ok($c->wait_done(8), 'the stream ends cleanly') or diag "body: $c->{body}";
    diag sprintf 'stream ended %.1f s after the graceful restart', time - $t;
    ok(!$c->{framing_error}, 'valid framing');
    $c->close;
    my $d = opens_within($httpd, 'gr-1', 8);
    ok($d, 'the browser reconnects to the new generation');
    # stop with a stream open: the child exits at once, no SIGKILL
    $t = time;
    $httpd->stop;    # also checks the error log (no AH00046 "sending a SIGKILL")
    cmp_ok(time - $t, '<', 6, sprintf('stop with an open stream took %.1f s', time - $t));
    ok($d->wait_eof(5), 'the browser connection is closed');
    $d->close;
};

$sb->stop;
done_testing;
