#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# The application a reverse-proxy Apache fronts in t/52-reverse-proxy.t: any
# path answers JSON naming itself, with what it was asked and by whom.
#   perl t/helpers/app-server.pl [--parent-pid PID]
# Prints "app-server listening on http://127.0.0.1:PORT" once ready.
use Mojolicious::Lite -signatures;
use Getopt::Long qw(GetOptionsFromArray);
use Mojo::IOLoop;

my %opt = ('parent-pid' => 0);
my @args = @ARGV;
GetOptionsFromArray(\@args, \%opt, 'parent-pid=i') or die "usage: $0 [--parent-pid PID]\n";
app->log(Mojo::Log->new(level => 'warn'));
app->mode('production');

any '/*rest' => { rest => '' } => sub ($c) {
    $c->render(json => { app => 'backend', method => $c->req->method, path => $c->req->url->path->to_string,
        query => $c->req->url->query->to_string,
        x_forwarded_for => $c->req->headers->header('X-Forwarded-For') });
};

if (my $ppid = $opt{'parent-pid'}) {
    Mojo::IOLoop->recurring(0.5 => sub { exit 0 unless kill 0, $ppid });
}
my $SERVER;
app->hook(before_server_start => sub ($server, $app) { $SERVER = $server; $server->silent(1) });
Mojo::IOLoop->next_tick(sub {
    $| = 1;
    print "app-server listening on http://127.0.0.1:" . $SERVER->ports->[0] . "\n";
});
$SIG{PIPE} = 'IGNORE';
app->start('daemon', '-l', 'http://127.0.0.1:0');
