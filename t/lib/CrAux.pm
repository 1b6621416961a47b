# SPDX-License-Identifier: Apache-2.0
package CrAux;
# Helper servers for the deployment tests, each on a free loopback port,
# stopped with the test (also when it dies; they also exit on their own
# when the test process is gone):
#
#   my $px  = CrAux->proxy;        # t/helpers/connect-proxy.pl (refuse => 1: 403s)
#   $px->url; $px->relayed;        # [ {method, target, out_port, time}, ... ]
#   my $app = CrAux->app;          # t/helpers/app-server.pl
use strict;
use warnings;
use Carp qw(croak);
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempfile);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use Mojo::JSON qw(decode_json);

my $HELPERS = File::Spec->rel2abs(File::Spec->catfile(dirname(__FILE__), '..', 'helpers'));
my @LIVE;
END { local $?; $_->stop for grep { $_->{pid} } @LIVE }

sub _start {
    my ($class, $script, @args) = @_;
    my ($ofh, $out) = tempfile('cr-aux-out-XXXXXX', TMPDIR => 1, UNLINK => 1);
    my ($efh, $err) = tempfile('cr-aux-err-XXXXXX', TMPDIR => 1, UNLINK => 1);
    my $pid = fork // croak "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>&', $ofh or POSIX::_exit(127);
        open STDERR, '>&', $efh or POSIX::_exit(127);
        exec $^X, "$HELPERS/$script", '--parent-pid', getppid(), @args or POSIX::_exit(127);
    }
    my $self = bless { pid => $pid, owner => $$, out => $out, err => $err, ofh => $ofh, efh => $efh,
        script => $script }, $class;
    my $deadline = time + 15;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{pid};
            croak "$script exited before it was ready:\n" . _slurp($err);
        }
        if (_slurp($out) =~ m{listening on (http://127\.0\.0\.1:(\d+))}) {
            @$self{qw(url port)} = ($1, $2);
            push @LIVE, $self;
            return $self;
        }
        sleep 0.05;
    }
    $self->stop;
    croak "$script not ready in 15s:\n" . _slurp($err);
}

sub _slurp { open my $fh, '<', $_[0] or return ''; local $/; <$fh> // '' }

sub proxy {
    my ($class, %o) = @_;    # refuse => 1: a proxy answering 403 to every CONNECT
    my (undef, $log) = tempfile('cr-proxy-log-XXXXXX', TMPDIR => 1, UNLINK => 1);
    my $self = $class->_start('connect-proxy.pl', '--log', $log, $o{refuse} ? '--refuse' : ());
    $self->{log} = $log;
    return $self;
}

sub app { $_[0]->_start('app-server.pl') }

sub url  { $_[0]{url} }
sub port { $_[0]{port} }

# What the proxy relayed so far, oldest first.
sub relayed {
    my ($self) = @_;
    return [ map { decode_json($_) } grep { /\S/ } split /\n/, _slurp($self->{log}) ];
}

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    return unless $self->{owner} == $$;
    kill 'TERM', $pid;
    my $deadline = time + 3;
    while (time < $deadline) {
        return if waitpid($pid, WNOHANG) == $pid;
        sleep 0.02;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

sub DESTROY { $_[0]->stop }

1;
