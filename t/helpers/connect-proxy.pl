#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# A small forward proxy on loopback for the egress-proxy tests: CONNECT
# tunnels (https upstreams) and absolute-form requests (http upstreams).
# Every connection it relays is appended to --log as one JSON line:
#   {"method":"CONNECT","target":"127.0.0.1:443","out_port":51234,"time":...}
# out_port is the local port of its own connection to the target, so a test
# can match what the upstream saw against what went through the proxy.
#
#   perl t/helpers/connect-proxy.pl --log FILE [--parent-pid PID]
# Prints "connect-proxy listening on http://127.0.0.1:PORT" once ready; exits
# when the parent process is gone.
use strict;
use warnings;
use Getopt::Long;
use Mojo::IOLoop;
use Mojo::JSON qw(encode_json);
use Time::HiRes ();

my %opt = ('parent-pid' => 0, log => '/dev/null');
GetOptions(\%opt, 'log=s', 'parent-pid=i', 'refuse')
    or die "usage: $0 --log FILE [--parent-pid PID] [--refuse]\n";
open my $LOG, '>>', $opt{log} or die "$opt{log}: $!\n";
$LOG->autoflush(1);

sub record { print $LOG encode_json({ @_, time => Time::HiRes::time() }), "\n" }

sub relay {
    # $pending: bytes to send to the target once connected (a reference,
    # as more may arrive while connecting).
    my ($client, $pending, $host, $port, $method, $target) = @_;
    Mojo::IOLoop->client({ address => $host, port => $port } => sub {
        my ($loop, $err, $up) = @_;
        if ($err) {
            record(method => $method, target => $target, error => "$err");
            $client->write("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                sub { $client->close });
            return;
        }
        record(method => $method, target => $target, out_port => $up->handle->sockport);
        $_->timeout(0) for $client, $up;
        $up->on(read => sub { $client->write($_[1]) });
        $client->unsubscribe('read');
        $client->on(read => sub { $up->write($_[1]) });
        $up->on(close => sub { $client->close_gracefully });
        $client->on(close => sub { $up->close_gracefully });
        $client->write("HTTP/1.1 200 Connection established\r\n\r\n") if $method eq 'CONNECT';
        $up->write($$pending) if length $$pending;
    });
}

my $server = Mojo::IOLoop->server({ address => '127.0.0.1', port => 0 } => sub {
    my ($loop, $client) = @_;
    my $buf = '';
    $client->on(read => sub {
        my ($s, $bytes) = @_;
        $buf .= $bytes;
        my $end = index($buf, "\r\n\r\n");
        return if $end < 0;
        $s->unsubscribe('read');
        $s->on(read => sub { $buf .= $_[1] });    # held until the far side is connected
        my ($line) = $buf =~ /^([^\r\n]*)/;
        if ($opt{refuse} && $line =~ m{^CONNECT (\S+)}) {
            # --refuse: every tunnel is forbidden (a proxy's policy)
            record(method => 'CONNECT', target => $1, error => 'refused');
            $s->write("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                sub { $s->close });
        }
        elsif ($line =~ m{^CONNECT ([^\s:]+):(\d+) HTTP/1\.[01]$}) {
            my ($h, $p) = ($1, $2);
            substr($buf, 0, $end + 4, '');
            relay($s, \$buf, $h, $p, 'CONNECT', "$h:$p");
        }
        elsif ($line =~ m{^([A-Z]+) http://([^/:\s]+)(?::(\d+))?(/\S*) (HTTP/1\.[01])$}) {
            my ($m, $h, $p, $path, $v) = ($1, $2, $3 // 80, $4, $5);
            # Origin-form to the target; later requests on this connection
            # are piped as they come (one upstream host per connection).
            substr($buf, 0, length $line, "$m $path $v");
            $buf =~ s{\r\nProxy-Connection:[^\r]*}{}i;
            relay($s, \$buf, $h, $p, $m, "http://$h:$p$path");
        }
        else {
            record(method => 'BAD', target => $line);
            $s->write("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                sub { $s->close });
        }
    });
});

if (my $ppid = $opt{'parent-pid'}) {
    Mojo::IOLoop->recurring(0.5 => sub { exit 0 unless kill 0, $ppid });
}
$SIG{PIPE} = 'IGNORE';
$| = 1;
print "connect-proxy listening on http://127.0.0.1:" . Mojo::IOLoop->acceptor($server)->port . "\n";
Mojo::IOLoop->start;
