#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# Browsers that leave an order stream abruptly, at every moment of its
# start: a reset right after the request, while the upstream's head is on
# its way, just after the first bytes.  Under the event MPM the handler
# hands the stream to the loop and returns SUSPENDED; a browser gone by
# then must not make the MPM close the connection under the stream (it
# turns a SUSPENDED request on an aborted connection into a lingering
# close of its own), and an event queued before the MPM has suspended the
# connection must not be written early.  Both relay modes: no crash, no
# error line, every stream slot and descriptor given back, the server
# still relays a stream and serves a catalog afterwards.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use SseClient;
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_LINGER);
use HTTP::Tiny;
use Time::HiRes qw(time sleep);

my $ROUNDS = 12;       # x 12 browsers x 3 ways to leave, per relay mode

sub run_mode {
    my ($mpm) = @_;
    my $sb = CrSandbox->start();
    my $httpd = CrTest->start(sandbox => $sb, mpm => $mpm, loglevel => 'warn cryptorefills:debug', conf => <<'CONF');
CryptorefillsStreamHeartbeat 1
CryptorefillsMaxStreams 500
CryptorefillsMaxStreamsPerClient 500
ExtendedStatus On
<Location "/server-status">
    SetHandler server-status
</Location>
CONF
    my $port = $httpd->port;
    my $http = HTTP::Tiny->new(timeout => 10);
    my $status = sub {
        my $r = $http->get($httpd->url('/server-status?auto'));
        my %s = $r->{content} =~ /^(\S+): (\S+)$/mg;
        return \%s;
    };
    my $children = sub { $httpd->children };
    # The most descriptors any child holds (the MPM may start or stop
    # children meanwhile: a sum would count processes, not leaks).
    my $fds = sub {
        my $max = 0;
        for my $pid ($children->()) {
            opendir my $d, "/proc/$pid/fd" or next;
            my $n = grep { /^\d+$/ } readdir $d;
            $max = $n if $n > $max;
        }
        return $max;
    };

    $sb->create_order(order_id => "ab-$mpm");
    my $path = "/api/orders/ab-$mpm/subscribe";
    # Warm up (each child's loop, pools) before the baseline.
    for (1 .. 4) {
        my $c = SseClient->new(port => $port, path => $path);
        $c->wait_for(sub { scalar(my @e = $_[0]->events) >= 1 }, 5);
        $c->close;
    }
    sleep 1;
    my $base = $fds->();
    my $before = $status->();

    my %left = (at_once => 0, during_head => 0, after_bytes => 0);
    for my $round (1 .. $ROUNDS) {
        for my $how (sort keys %left) {
            my @s;
            for (1 .. 12) {
                my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
                    or next;
                print $s "GET $path HTTP/1.1\r\nHost: 127.0.0.1:$port\r\n"
                       . "Accept: text/event-stream\r\n\r\n";
                push @s, $s;
            }
            if ($how eq 'during_head') {
                sleep 0.001 + rand(0.004);
            }
            elsif ($how eq 'after_bytes') {
                for my $s (@s) {
                    my $rin = '';
                    vec($rin, fileno($s), 1) = 1;
                    sysread($s, my $b, 64) if select(my $r = $rin, undef, undef, 2);
                }
            }
            for my $s (@s) {
                setsockopt($s, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));   # a reset
                close $s;
                $left{$how}++;
            }
        }
    }
    is($left{$_}, 12 * $ROUNDS, "$mpm: $left{$_} browsers left $_") for sort keys %left;

    my $deadline = time + 15;
    my $s = $status->();
    while (time < $deadline && ($s->{Cryptorefillsstreams_open} // -1) != 0) {
        sleep 0.2;
        $s = $status->();
    }
    is($s->{Cryptorefillsstreams_open}, 0, "$mpm: every stream slot given back");
    my $opened = $s->{Cryptorefillsstreams_total} - $before->{Cryptorefillsstreams_total};
    cmp_ok($opened, '>=', 12 * $ROUNDS, "$mpm: $opened of them had their stream opened");
    if ($mpm eq 'event') {
        my $susp = $s->{Cryptorefillsstreams_suspended_total} - $before->{Cryptorefillsstreams_suspended_total};
        cmp_ok($susp, '>=', 12 * $ROUNDS, "$mpm: $susp handed to the suspended relay");
    }
    my $now = $fds->();
    $deadline = time + 10;
    while (time < $deadline && $now > $base + 4) {
        sleep 0.2;
        $now = $fds->();
    }
    cmp_ok($now, '<=', $base + 4, "$mpm: descriptors back to the baseline (at most $base in a child before, $now after)")
        or diag(join "\n", map { "child $_:\n" . `ls -l /proc/$_/fd | tail -n +2 | awk '{print \$NF}' | sort | uniq -c` } $children->());

    # Still relays a stream, still serves a catalog.
    my $c = SseClient->new(port => $port, path => $path);
    ok($c->wait_for(sub { scalar(my @e = $_[0]->events) >= 1 }, 5), "$mpm: a stream afterwards gets its event");
    $c->close;
    my $r = $http->get($httpd->url('/api/brands?country=US'));
    is($r->{status}, 200, "$mpm: a catalog afterwards");
    $httpd->stop;
    $sb->stop;
}

run_mode('event');
run_mode('worker');
done_testing;
