#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# The server-wide stream cap's default and start-up warnings (issue #12).
# Under the event MPM suspended streams hold no worker but count against
# each child's accept limit, ThreadsPerChild x (1 + AsyncRequestWorkerFactor):
# the default cap is MaxRequestWorkers x AsyncRequestWorkerFactor (the
# factor's share; descriptors and memory allow far more here), and only an
# explicit CryptorefillsMaxStreams above it draws the CR01511 warning, which
# names the factor that would hold it.  Under worker the cap stays half the
# workers.  The cap in effect is read from the metrics handler.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use HTTP::Tiny;

my $sb = CrSandbox->start();
my $SIZING = "StartServers 2\nServerLimit 4\nThreadsPerChild 16\nMaxRequestWorkers 64\n";

sub run_case {
    my ($name, %o) = @_;
    my $httpd = CrTest->start(
        sandbox  => $sb,
        mpm      => $o{mpm} // 'event',
        mpm_conf => $SIZING . ($o{factor} ? "AsyncRequestWorkerFactor $o{factor}\n" : ''),
        conf     => ($o{max} ? "CryptorefillsMaxStreams $o{max}\n" : '') . <<'CONF',
<Location /metrics>
    SetHandler cryptorefills-metrics
</Location>
CONF
    );
    $httpd->streams_suspended;   # waits for the start-up line
    my $r = HTTP::Tiny->new(timeout => 10)->get($httpd->url('/metrics'));
    my ($cap) = ($r->{content} // '') =~ /^cryptorefills_max_streams (\d+)$/m;
    my $log = $httpd->slurp('error.log');
    $httpd->stop;
    return ($cap, $log);
}

subtest 'event, defaults: MaxRequestWorkers x factor 2' => sub {
    my ($cap, $log) = run_case('default');
    is($cap, 64 * 2, 'cap 128 = 64 workers x AsyncRequestWorkerFactor 2');
    like($log, qr/CR01510: .*up to 128 streams \(default; the MPM holds 128, descriptors \d+, memory \d+\)/,
         'the start-up line gives the cap and its bounds');
    unlike($log, qr/CR0151[14]/, 'no warning for a default');
};

subtest 'event, AsyncRequestWorkerFactor 5' => sub {
    my ($cap, $log) = run_case('factor', factor => 5);
    is($cap, 64 * 5, 'the default follows the factor: 320');
    unlike($log, qr/CR0151[14]/, 'no warning');
};

subtest 'event, CryptorefillsMaxStreams 1000 with the default factor' => sub {
    my ($cap, $log) = run_case('over', max => 1000);
    is($cap, 1000, 'an explicit cap is kept');
    like($log, qr/CR01511: order streams: CryptorefillsMaxStreams 1000 is more than the event MPM holds.*raise AsyncRequestWorkerFactor to 16 /,
         'CR01511 warns and names the factor that holds it (1000 / 64, rounded up)');
};

subtest 'event, CryptorefillsMaxStreams 1000 with AsyncRequestWorkerFactor 16' => sub {
    my ($cap, $log) = run_case('fits', max => 1000, factor => 16);
    is($cap, 1000, 'cap 1000');
    unlike($log, qr/CR0151[14]/, 'no warning: 64 x 16 = 1024 hold it');
};

subtest 'worker MPM: half the workers, blocking relay' => sub {
    my ($cap, $log) = run_case('worker', mpm => 'worker');
    is($cap, 32, 'cap 32 = 64 workers / 2');
    like($log, qr/CR01509: order streams: blocking relay/, 'CR01509 says streams hold a worker');
};

done_testing;
