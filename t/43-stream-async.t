#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# Order streams without a thread each (issue #12): under the event MPM a
# stream is a suspended request relayed by the child's event loop.
#
# - 220 streams on 2 children x 25 threads all open (200, their events, the
#   end) while the busy workers stay few, and a catalog request answers;
# - the children's file descriptors and the MPM's connection count return to
#   their baseline after the streams end, three cycles running;
# - a browser that stops reading is dropped after the bounded write wait or
#   the per-stream buffer cap, and counted;
# - a graceful restart with open streams ends them cleanly.
# CR_ASYNC_STREAMS=1000 runs the cycles with more streams (raise ulimit -n);
# the PSS per stream is printed as a diagnostic.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use HTTP::Tiny;
use IO::Select;
use Time::HiRes qw(time sleep);

use SseClient;

my $N = $ENV{CR_ASYNC_STREAMS} || 220;
my $ORDERS = 10;

my $sb = CrSandbox->start();
my $httpd = CrTest->start(
    sandbox  => $sb,
    mpm      => 'event',
    loglevel => 'warn cryptorefills:info mpm_event:trace6',
    # 2 x 25 threads; suspended connections count against a child's accept
    # limit (ThreadsPerChild + idle workers x AsyncRequestWorkerFactor).
    mpm_conf => "StartServers 2\nServerLimit 2\nThreadsPerChild 25\nMaxRequestWorkers 50\n"
              . "MinSpareThreads 25\nMaxSpareThreads 50\nAsyncRequestWorkerFactor "
              . (int($N / 50) + 8) . "\n",
    conf     => <<'CONF',
CryptorefillsStreamHeartbeat 2
CryptorefillsMaxStreams 1000
CryptorefillsMaxStreamsPerClient 1000
ExtendedStatus On
<Location "/server-status">
    SetHandler server-status
</Location>
CONF
);
ok($httpd->streams_suspended, 'the module runs the suspended relay under the event MPM');

sub status { $httpd->status_auto }
sub wait_status {
    my ($cond, $secs) = @_;
    my $deadline = time + $secs;
    my $s;
    while (time < $deadline) {
        $s = status();
        return $s if $cond->($s);
        sleep 0.2;
    }
    return undef;
}
sub children { $httpd->children }
# Proportional set size of the children, in KB.
sub child_pss {
    my $kb = 0;
    for my $pid (children()) {
        open my $fh, '<', "/proc/$pid/smaps_rollup" or next;
        while (<$fh>) { $kb += $1 if /^Pss:\s+(\d+) kB/ }
    }
    return $kb;
}
sub child_fds {
    my $n = 0;
    for my $pid (children()) {
        opendir my $d, "/proc/$pid/fd" or next;
        $n += grep { /^\d+$/ } readdir $d;
    }
    return $n;
}
# Pump many clients at once until $cond holds for each (or the time is up).
sub pump_all {
    my ($clients, $cond, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        my @todo = grep { !$cond->($_) && !$_->{eof} } @$clients;
        return 1 unless @todo;
        my $sel = IO::Select->new(map { $_->{sock} } @todo);
        my %by = map { fileno($_->{sock}) => $_ } @todo;
        for my $fh ($sel->can_read(0.2)) {
            $by{ fileno($fh) }->pump(0);
        }
    }
    return !grep { !$cond->($_) } @$clients;
}
# Streams open in batches of 20, each batch answered before the next: a
# stream's handler holds a worker until the upstream's head arrives, and 220
# at once on 50 threads would only measure the MPM's accept burst (AH00484).
sub open_streams {
    my ($prefix, $n) = @_;
    my @oids = map { "$prefix-$_" } 1 .. $ORDERS;
    $sb->create_order(order_id => $_) for @oids;
    my @c;
    for my $i (0 .. $n - 1) {
        push @c, SseClient->new(port => $httpd->port, path => "/api/orders/$oids[$i % @oids]/subscribe");
        pump_all([ @c[-20 .. -1] ], sub { $_[0]->events >= 1 }, 10) if @c % 20 == 0;
    }
    return @c;
}

# Warm up (handles, pools, the loop threads) before taking the baseline.
{
    my @w = open_streams('warm', 4);
    pump_all(\@w, sub { $_[0]->events >= 1 }, 10);
    $sb->advance($_) for map { "warm-$_" } 1 .. $ORDERS;
    $sb->advance($_) for map { "warm-$_" } 1 .. $ORDERS;
    pump_all(\@w, sub { $_[0]{done} }, 10);
    $_->close for @w;
}
ok(wait_status(sub { $_[0]{Cryptorefillsstreams_open} == 0 }, 10), 'warm-up streams ended');
sleep 1;
my $base_fds = child_fds();
my $base_pss = child_pss();
my @kids = children();
is(scalar @kids, 2, 'two children');
diag "baseline: $base_fds descriptors in children @kids";

for my $cycle (1 .. 3) {
    subtest "cycle $cycle: $N streams at once" => sub {
        my $p = "c$cycle";
        my @c = open_streams($p, $N);
        ok(pump_all(\@c, sub { $_[0]->events >= 1 }, 30), "all $N streams open with their first event")
            or diag scalar(grep { $_->events >= 1 } @c) . " of $N opened";
        is(scalar(grep { ($_->{status} // 0) == 200 } @c), $N, 'all answered 200');

        my $s = wait_status(sub { $_[0]{Cryptorefillsstreams_open_suspended} == $N }, 10) || status();
        is($s->{Cryptorefillsstreams_open_suspended}, $N, "$N streams open, suspended");
        cmp_ok($s->{BusyWorkers}, '<=', 3, "busy workers stay few (BusyWorkers $s->{BusyWorkers} of 50)");
        diag sprintf('cycle %d: %d streams, %+.1f KB PSS per stream in the children, %d descriptors',
                     $cycle, $N, (child_pss() - $base_pss) / $N, child_fds()) if $cycle == 1;
        my $t0 = time;
        my $cat = HTTP::Tiny->new(timeout => 10)->get($httpd->url('/api/countries'));
        is($cat->{status}, 200, sprintf('a catalog request answers meanwhile (%.0f ms)', (time - $t0) * 1000));

        $sb->advance("$p-$_") for 1 .. $ORDERS;
        ok(pump_all(\@c, sub { $_[0]->events >= 2 }, 20), 'an update reaches every stream');
        $sb->advance("$p-$_") for 1 .. $ORDERS;   # Done: the order, then stop
        ok(pump_all(\@c, sub { $_[0]{done} }, 20), 'every stream ends with the terminating chunk');
        is(scalar(grep { ($_->events)[-1] && (($_->events)[-1]{event} // '') eq 'stop' } @c), $N,
           'every stream got its stop last');
        is(scalar(grep { $_->{framing_error} } @c), 0, 'chunked framing valid everywhere');
        $_->close for @c;

        ok(wait_status(sub { $_[0]{Cryptorefillsstreams_open_suspended} == 0
                             && $_[0]{Cryptorefillsstreams_open} == 0 }, 10), 'stream counters back to 0');
        my $conns = wait_status(sub { ($_[0]{ConnsTotal} // 0) <= 1 }, 15) || status();
        cmp_ok($conns->{ConnsTotal} // 0, '<=', 1, "the MPM's connection count is back to the status request's own ($conns->{ConnsTotal})");
        my $fds;
        my $deadline = time + 10;
        while (time < $deadline) { $fds = child_fds(); last if $fds <= $base_fds; sleep 0.2 }
        is($fds, $base_fds, "children's descriptors back to the baseline ($fds)");
        is_deeply([ children() ], \@kids, 'the same two children');
    };
}

subtest 'a browser that stops reading is dropped, not waited for' => sub {
    $sb->create_order(order_id => 'slow-1');
    my $before = status()->{Cryptorefillsbrowsers_dropped_slow} // 0;
    my $c = SseClient->new(port => $httpd->port, path => '/api/orders/slow-1/subscribe');
    ok($c->wait_for(sub { $_[0]->events >= 1 }, 5), 'stream open') or return;
    ok($sb->wait_subscribers('slow-1', 1, 5), 'upstream stream open');
    # The client reads nothing more; the upstream sends 16 MB of order events.
    my $pad = 'x' x 65000;
    my $t0 = time;
    for my $i (1 .. 256) {
        last unless $sb->push_event('slow-1',
            qq(data: {"order_id":"slow-1","order_state":"WaitingForPayment","n":$i,"pad":"$pad"}\n\n));
        last if (status()->{Cryptorefillsbrowsers_dropped_slow} // 0) > $before;
    }
    my $s = wait_status(sub { ($_[0]{Cryptorefillsbrowsers_dropped_slow} // 0) > $before }, 20);
    ok($s, sprintf('dropped as slow after %.1f s', time - $t0));
    ok(wait_status(sub { $_[0]{Cryptorefillsstreams_open} == 0 }, 10), 'its slot is released');
    cmp_ok(status()->{BusyWorkers}, '<=', 3, 'no worker left waiting on it');
    $c->close;
};

subtest 'graceful restart with open streams ends them cleanly' => sub {
    my @c = open_streams('gr', 50);
    ok(pump_all(\@c, sub { $_[0]->events >= 1 }, 20), '50 streams open') or return;
    my $t0 = time;
    ok($httpd->graceful, 'graceful restart');
    ok(pump_all(\@c, sub { $_[0]{done} }, 10), sprintf('all ended with the terminating chunk (%.1f s)', time - $t0));
    is(scalar(grep { $_->{framing_error} } @c), 0, 'valid framing');
    $_->close for @c;
    $sb->create_order(order_id => 'after-gr');
    my $n = SseClient->new(port => $httpd->port, path => '/api/orders/after-gr/subscribe');
    ok($n->wait_for(sub { $_[0]->events >= 1 }, 10), 'the new generation relays streams');
    $n->close;
    ok(wait_status(sub { $_[0]{Cryptorefillsstreams_open} == 0 }, 10), 'no stream left open');
};

$httpd->stop;
my $log = $httpd->slurp('error.log');
unlike($log, qr/CR0150[1-7]|CR0151[23]/, 'the loop reported no failure');
$sb->stop;
done_testing;
