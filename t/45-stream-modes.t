#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# Which relay an order stream gets (issue #12): under the event MPM an
# HTTP/1.1 stream is suspended, TLS included; an HTTP/2 stream (h2 over TLS,
# h2c) keeps the blocking relay (a secondary connection must not be
# suspended); the worker MPM keeps the blocking relay and says so at start.
# Streams are read with curl, as a browser on each protocol would.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use HTTP::Tiny;
use File::Temp qw(tempdir);
use POSIX ();
use Time::HiRes qw(time sleep);

my $tmp = tempdir("cr-tls-XXXXXX", TMPDIR => 1, CLEANUP => !$ENV{CR_KEEP});
system("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
       . "-addext subjectAltName=IP:127.0.0.1 -keyout $tmp/key.pem -out $tmp/cert.pem "
       . ">$tmp/openssl.log 2>&1") == 0 or die 'openssl failed: ' . `cat $tmp/openssl.log`;
system("chmod a+r $tmp/*.pem; chmod a+x $tmp");

my $sb = CrSandbox->start();
my $tls = CrTest::free_port();
my $httpd = CrTest->start(
    sandbox => $sb,
    mpm     => 'event',
    modules => [qw(ssl http2)],
    conf    => <<"CONF",
CryptorefillsStreamHeartbeat 1
Protocols h2c http/1.1
ExtendedStatus On
<Location "/server-status">
    SetHandler server-status
</Location>
Listen 127.0.0.1:$tls
<VirtualHost 127.0.0.1:$tls>
    SSLEngine on
    SSLCertificateFile $tmp/cert.pem
    SSLCertificateKeyFile $tmp/key.pem
    Protocols h2 http/1.1
</VirtualHost>
CONF
);

sub status { $httpd->status_auto }
sub wait_until {
    my ($cond, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) { return 1 if $cond->(); sleep 0.1 }
    return $cond->();
}
sub slurp { open my $fh, '<', $_[0] or return ''; local $/; <$fh> // '' }

# A stream read by curl in the background; returns (pid, output file).
sub curl_stream {
    my ($name, $url, @opt) = @_;
    my $out = "$tmp/$name.out";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', $out or POSIX::_exit(127);
        open STDERR, '>', "$out.err";
        { exec 'curl', '-sS', '-N', '-k', '--max-time', '20', '-w', '\n[curl exit: %{http_version}]\n',
              @opt, $url; }
        POSIX::_exit(127);
    }
    return ($pid, $out);
}

sub check_mode {
    my ($name, $url, $suspended, @opt) = @_;
    subtest $name => sub {
        my $oid = "mode-$name";
        $oid =~ s/[^A-Za-z0-9_-]/-/g;
        $sb->create_order(order_id => $oid);
        my $total = status()->{Cryptorefillsstreams_suspended_total};
        my ($pid, $out) = curl_stream($oid, "$url/api/orders/$oid/subscribe", @opt);
        # The blocking relay's browser-gone check misjudges HTTP/2 streams
        # (it peeks at the primary connection's socket) and ends them at
        # once; that is being fixed separately (the HTTP/2 stream branch).
        local $TODO = $suspended ? undef : 'HTTP/2 streams end at once: browser-gone detection on h2';
        ok(wait_until(sub { slurp($out) =~ /"order_state":"WaitingForPayment"/ }, 10), 'first event arrives')
            or diag slurp($out) . slurp("$out.err");
        my $s = status();
        is($s->{Cryptorefillsstreams_open}, 1, 'one stream open');
        {
            local $TODO;
            is($s->{Cryptorefillsstreams_suspended_total} - $total, $suspended ? 1 : 0,
               $suspended ? 'relayed suspended (no worker held)' : 'not suspended: the blocking relay');
            is($s->{Cryptorefillsstreams_open_suspended}, $suspended ? 1 : 0, 'open suspended streams');
        }
        $sb->advance($oid);
        $sb->advance($oid);    # Done, then stop
        ok(wait_until(sub { waitpid($pid, POSIX::WNOHANG()) == $pid }, 10), 'curl finishes: the stream ended');
        my $body = slurp($out);
        like($body, qr/event: stop\ndata: \{\}\n\n\n\[curl exit/, 'stop relayed last, the response ended cleanly');
        unlike(slurp("$out.err"), qr/\S/, 'curl saw no error (clean end of the response)');
        local $TODO;
        ok(wait_until(sub { status()->{Cryptorefillsstreams_open} == 0 }, 5), 'slot released');
    };
}

check_mode('http1-tls', "https://127.0.0.1:$tls", 1, '--http1.1');
check_mode('h2-tls', "https://127.0.0.1:$tls", 0, '--http2');
check_mode('h2c', $httpd->base, 0, '--http2-prior-knowledge');
check_mode('http1', $httpd->base, 1, '--http1.1');
ok($httpd->streams_suspended, 'event MPM: the suspended relay is announced');
$httpd->stop;

my $w = CrTest->start(sandbox => $sb, mpm => 'worker');
ok(!$w->streams_suspended, 'worker MPM: no suspended relay');
like($w->slurp('error.log'), qr/CR01509: order streams: blocking relay.*the worker MPM/,
     'worker MPM: the blocking relay is announced, with why');
$w->stop;
$sb->stop;
done_testing;
