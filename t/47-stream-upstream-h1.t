#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# Order streams from a plain http:// upstream (issue #12): under the event
# MPM the suspended relay talks HTTP/1.1 to the upstream itself (no libcurl
# transfer per stream); under the worker MPM the blocking relay uses
# libcurl.  A scripted upstream sends what real servers may: the response
# head and the chunks a byte at a time, a close in the middle of a chunk,
# a close-delimited body, an error status with Retry-After split across
# writes, a non-HTTP answer.  Both relay modes must give the browser the
# same answers.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use SseClient;
use IO::Socket::INET;
use File::Temp qw(tempdir);
use Time::HiRes qw(sleep);
use POSIX ();

my $LOGDIR = tempdir('cr-h1-up-XXXXXX', TMPDIR => 1, CLEANUP => 1);

sub order_ev { my ($id, $st) = @_; qq(data: {"order_id":"$id","order_state":"$st"}\n\n) }

# What the upstream answers for an order id (by its prefix).
sub scenario {
    my ($id) = @_;
    my $sse = "text/event-stream";
    my $events = order_ev($id, 'Processing') . "id: 2\n" . order_ev($id, 'Done') . "event: stop\ndata: {}\n\n";
    my $chunked = join '', map { sprintf("%x\r\n%s\r\n", length $_, $_) } ($events =~ /(.*?\n\n)/gs);
    if ($id =~ /^bytes/) {      # everything a byte at a time
        return { bytes => "HTTP/1.1 200 OK\r\nContent-Type: $sse\r\nTransfer-Encoding: chunked\r\n\r\n"
                          . "${chunked}0\r\n\r\n", split => 1 };
    }
    if ($id =~ /^cut/) {        # one event, then the connection closes inside a chunk
        my $one = order_ev($id, 'Processing');
        my $partial = order_ev($id, 'Done');
        return { bytes => "HTTP/1.1 200 OK\r\nContent-Type: $sse\r\nTransfer-Encoding: chunked\r\n\r\n"
                          . sprintf("%x\r\n%s\r\n", length $one, $one)
                          . sprintf("%x\r\n", length $partial) . substr($partial, 0, 20) };
    }
    if ($id =~ /^close/) {      # no framing: the body ends with the connection
        return { bytes => "HTTP/1.1 200 OK\r\nContent-Type: $sse\r\nConnection: close\r\n\r\n$events",
                 split => 7 };
    }
    if ($id =~ /^busy/) {       # an error status, its head in pieces
        return { bytes => "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n"
                          . "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", split => 3 };
    }
    return { bytes => "this is not HTTP\r\n\r\n" };     # junk
}

# A scripted upstream: one process per connection; each request head is
# kept in $LOGDIR for the checks.
sub start_upstream {
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 64,
                                    ReuseAddr => 1, Proto => 'tcp') or die "listen: $!";
    my $parent = $$;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    return ($pid, $srv->sockport) if $pid;
    $SIG{CHLD} = 'IGNORE';
    my $n = 0;
    while (1) {
        my $rin = '';
        vec($rin, fileno($srv), 1) = 1;
        POSIX::_exit(0) if getppid() != $parent;
        next unless select(my $r = $rin, undef, undef, 0.5);
        my $c = $srv->accept or next;
        $n++;
        next if fork;       # the parent goes on accepting
        my $head = '';
        while ($head !~ /\r\n\r\n/) {
            my $got = sysread($c, my $b, 4096);
            last unless $got;
            $head .= $b;
        }
        my ($id) = $head =~ m{/orders/([^/ ]+)/subscribe};
        $id //= 'none';
        if (open my $fh, '>', "$LOGDIR/$id.head") { print $fh $head; close $fh }
        my $s = scenario($id);
        my $step = $s->{split} || length $s->{bytes};
        for (my $i = 0; $i < length $s->{bytes}; $i += $step) {
            syswrite($c, substr($s->{bytes}, $i, $step)) or last;
            sleep 0.002 if $s->{split};
        }
        # Hold the connection a moment, then close it (close-delimited
        # bodies and cuts end here).
        sleep 0.2;
        close $c;
        POSIX::_exit(0);
    }
}

my ($up_pid, $up_port) = start_upstream();
END { kill 'TERM', $up_pid if $up_pid }

sub run_checks {
    my ($mpm) = @_;
    my $sb = CrSandbox->start();
    my $httpd = CrTest->start(sandbox => $sb, mpm => $mpm, loglevel => 'warn cryptorefills:debug',
                              conf => <<"CONF");
CryptorefillsStreamHeartbeat 5
<Location "/raw">
    SetHandler cryptorefills
    CryptorefillsUpstream http://127.0.0.1:$up_port
</Location>
<Location "/byname">
    SetHandler cryptorefills
    CryptorefillsUpstream http://localhost:$up_port
</Location>
CONF
    my $port = $httpd->port;
    my $open = sub {
        my ($id, @h) = @_;
        return SseClient->new(port => $port, path => "/raw/orders/$id/subscribe", headers => [@h]);
    };

    # A byte at a time: head, chunk sizes, events.
    my $id = "bytes-$mpm";
    my $c = $open->($id, 'Last-Event-ID' => '41', 'User-Agent' => 'test-browser/1');
    ok($c->wait_done(15), "$mpm: byte-at-a-time stream ends") or return;
    is($c->{status}, 200, "$mpm: 200");
    my @ev = $c->events;
    is(scalar @ev, 3, "$mpm: three events relayed") or diag explain [$c->blocks];
    like($ev[0]{data}[0] // '', qr/"order_state":"Processing"/, "$mpm: first event");
    is($ev[1]{id}, '2', "$mpm: its id");
    is($ev[2]{event}, 'stop', "$mpm: stop");
    ok(!$c->{framing_error}, "$mpm: clean chunked end");
    $c->close;

    # What the upstream was asked.
    my $head = do { local $/; open my $fh, '<', "$LOGDIR/$id.head" or die; <$fh> };
    like($head, qr{\AGET /v\d+/orders/\Q$id\E/subscribe HTTP/1\.1\r\n}, "$mpm: request line");
    like($head, qr{\r\nHost: 127\.0\.0\.1:$up_port\r\n}, "$mpm: Host");
    like($head, qr{\r\nAccept: text/event-stream\r\n}, "$mpm: Accept");
    like($head, qr{\r\nLast-Event-ID: 41\r\n}, "$mpm: Last-Event-ID");
    like($head, qr{\r\nX-Cr-Application: \S+\r\n}, "$mpm: partner header");
    like($head, qr{\r\nUser-Agent: test-browser/1\r\n}, "$mpm: the browser's User-Agent");
    unlike($head, qr{\r\nAccept-Encoding:}i, "$mpm: no compression asked");
    is(scalar(() = $head =~ /\r\nUser-Agent:/g), 1, "$mpm: one User-Agent");

    # By name: "localhost" may give ::1 first, where nothing listens (the
    # upstream is on 127.0.0.1): the next address is tried.
    $c = SseClient->new(port => $port, path => "/byname/orders/bytes-name-$mpm/subscribe");
    ok($c->wait_done(15), "$mpm: upstream by name: the stream ends") or return;
    is($c->{status}, 200, "$mpm: upstream by name: 200");
    is(scalar(my @n = $c->events), 3, "$mpm: upstream by name: three events");
    $c->close;

    # A close inside a chunk: what came whole is relayed, then a clean end.
    $c = $open->("cut-$mpm");
    ok($c->wait_done(10), "$mpm: cut stream ends") or return;
    is($c->{status}, 200, "$mpm: 200");
    @ev = $c->events;
    is(scalar @ev, 1, "$mpm: the whole event only") or diag explain [$c->blocks];
    unlike($c->{body}, qr/Done/, "$mpm: nothing of the cut event");
    ok(!$c->{framing_error}, "$mpm: the browser's response still ends cleanly");
    $c->close;

    # A close-delimited body.
    $c = $open->("close-$mpm");
    ok($c->wait_done(10), "$mpm: close-delimited stream ends") or return;
    is(scalar(my @e = $c->events), 3, "$mpm: three events relayed");
    ok(!$c->{framing_error}, "$mpm: clean end");
    $c->close;

    # An error status with Retry-After, its head in 3-byte pieces.
    $c = $open->("busy-$mpm");
    ok($c->wait_done(10), "$mpm: answered") or return;
    is($c->{status}, 503, "$mpm: the upstream's 503");
    is($c->{headers}{'retry-after'}, '7', "$mpm: its Retry-After");
    like($c->{body}, qr/Upstream returned an error/, "$mpm: error message");
    $c->close;

    # Not HTTP at all: 502.
    $c = $open->("junk-$mpm");
    ok($c->wait_done(10), "$mpm: answered") or return;
    is($c->{status}, 502, "$mpm: 502");
    $c->close;

    if ($mpm eq 'event') {
        my $log = $httpd->slurp('error.log');
        like($log, qr/stream of order bytes-event ended after \d+s: stop event \(suspended relay, upstream by the loop's HTTP\/1\.1 client\)/,
             "$mpm: the suspended relay read the plain http:// upstream itself");
        like($log, qr/stream of order cut-event ended after \d+s: broken \(suspended relay/,
             "$mpm: a cut chunk is a broken upstream");
    }
    $httpd->stop;
    $sb->stop;
}

run_checks('event');
run_checks('worker');
done_testing;
