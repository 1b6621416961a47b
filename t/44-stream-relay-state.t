#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# The order-stream relay keeps a browser's reconnection state (issue #12,
# part A; found by relaying the web-platform-tests EventSource suite): an
# id-only block, the id of a dropped event and a retry block reach the
# browser, and a long comment does not count toward the event size cap.
#
# The relayed body is read by a model of a browser's EventSource (the WHATWG
# "interpret an event stream" rules on the canonical output) and compared
# with what the same browser would have kept reading the upstream directly.
# The same checks run under the event MPM and under the worker MPM, so both
# relay modes are covered once the event MPM relays without a thread.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use SseClient;

# What a browser keeps from an event stream: for each dispatched event its
# type, data and lastEventId, and the last reconnection time.
sub browser_view {
    my ($body) = @_;
    my @ev;
    my ($data, $type, $last_id, $retry, $has_data) = ('', '', '', undef, 0);
    for my $line (split /\n/, $body, -1) {
        if ($line eq '') {
            push @ev, { type => $type eq '' ? 'message' : $type, data => substr($data, 0, -1),
                        last_id => $last_id } if $has_data;
            ($data, $type, $has_data) = ('', '', 0);
            next;
        }
        next if $line =~ /^:/;
        my ($f, $v) = $line =~ /^([^:]*)(?::\s?(.*))?$/s;
        $v //= '';
        if ($f eq 'data') { $data .= "$v\n"; $has_data = 1 }
        elsif ($f eq 'event') { $type = $v }
        elsif ($f eq 'id') { $last_id = $v unless $v =~ /\0/ }
        elsif ($f eq 'retry') { $retry = $v if $v =~ /^\d+$/ }
    }
    return { events => \@ev, last_id => $last_id, retry => $retry };
}

sub run_checks {
    my ($mpm) = @_;
    my $sb = CrSandbox->start();
    my $httpd = CrTest->start(sandbox => $sb, mpm => $mpm, conf => "CryptorefillsStreamHeartbeat 5\n");
    my $port = $httpd->port;
    my $oid = "state-$mpm";
    my $order = sub { qq({"order_id":"$oid","order_state":"$_[0]","n":$_[1]}) };

    $sb->create_order(order_id => $oid);
    $sb->fault(match => "/v5/orders/$oid/subscribe", mode => 'stream_silent', times => 1);
    my $c = SseClient->new(port => $port, path => "/api/orders/$oid/subscribe");
    ok($c->wait_body(qr/\A: ok\n/, 5), "$mpm: stream open") or return;
    ok($sb->wait_subscribers($oid, 1, 5), "$mpm: upstream stream open") or return;

    # The upstream's stream, as a browser reading it directly would see it.
    my @raw = (
        "id: 7\n\n",                                              # id-only block
        "data: " . $order->('WaitingForPayment', 1) . "\n\n",     # lastEventId 7
        "id: 5\nevent: ping\ndata: {}\n\n",                       # dropped, id kept
        "data: " . $order->('WaitingForPayment', 2) . "\n\n",     # lastEventId 5
        "retry: 500\n\n",                                         # a retry block
        ": " . ('c' x (300 * 1024)) . "\n"                        # a 300 KB comment
            . "data: " . $order->('WaitingForDelivery', 3) . "\n\n",
        "data: not an order\nid: 9\n\n",                          # malformed, id kept
    );
    $sb->push_event($oid, $_) for @raw;
    ok($c->wait_for(sub { browser_view($_[0]{body})->{last_id} eq '9' }, 10),
       "$mpm: the relayed stream reaches the last id") or diag substr($c->{body}, 0, 2000);

    my $direct = browser_view(join '', @raw);
    my $relayed = browser_view($c->{body});
    is_deeply([ map { [ $_->{data}, $_->{last_id} ] } @{ $relayed->{events} } ],
              [ map { [ $_->{data}, $_->{last_id} ] } grep { $_->{data} =~ /order_id/ } @{ $direct->{events} } ],
              "$mpm: every order event dispatched with the lastEventId a direct reader sees");
    is(scalar @{ $relayed->{events} }, 3, "$mpm: the event after the 300 KB comment is not dropped");
    is($relayed->{retry}, 500, "$mpm: the retry block reached the browser");
    is($relayed->{last_id}, '9', "$mpm: the dropped event's id reached the browser");
    unlike($c->{body}, qr/cccc|ping|not an order/, "$mpm: no comment, unknown or malformed event relayed");
    $c->close;

    # The reconnect sends the state the browser kept.
    $sb->clear_requests;
    my $c2 = SseClient->new(port => $port, path => "/api/orders/$oid/subscribe",
                            headers => [ 'Last-Event-ID' => $relayed->{last_id} ]);
    ok($c2->wait_for(sub { $_[0]->events >= 1 }, 5), "$mpm: reconnected");
    my $r = $sb->last_request(path => "/v5/orders/$oid/subscribe");
    is($r && $r->{headers}{'last-event-id'}, '9', "$mpm: the reconnect asks the upstream from id 9");
    $c2->close;

    $httpd->stop;
    $sb->stop;
}

subtest "relay state, $_ MPM" => sub { run_checks($_) } for qw(event worker);

done_testing;
