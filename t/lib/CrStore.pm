# SPDX-License-Identifier: Apache-2.0
package CrStore;
# A Redis or memcached for a test, on a free 127.0.0.1 port, without
# persistence: stop() and start() again on the same port give an empty
# store, as a restarted production Redis without RDB/AOF does.  Stopped at
# the end of the test, on a signal, and (by a watchdog process) if the test
# is killed outright.
#
#   my $s = CrStore->new('redis');  # or 'memcache'; started
#   $s->spec;                       # "redis:127.0.0.1:PORT" for CryptorefillsCache
#   $s->stop; $s->start;            # restarted empty, same port
#   CrStore->new('redis', '--maxmemory', '64mb');  # extra server arguments (this start only)
#   $s->stop('KILL');               # killed outright instead of TERM
use strict;
use warnings;
use CrTest qw(free_port);
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

my %BIN = (redis => '/usr/bin/redis-server', memcache => '/usr/bin/memcached');
my @LIVE;

sub available { -x $BIN{ $_[1] } }
sub binary { $BIN{ $_[1] } }

sub new {
    my ($class, $kind, @extra) = @_;
    my $self = bless { kind => $kind, port => free_port() }, $class;
    push @LIVE, $self;
    $self->start(@extra);
    return $self;
}

sub port { $_[0]{port} }
sub spec { "$_[0]{kind}:127.0.0.1:$_[0]{port}" }

sub _ping {
    my ($self) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Timeout => 1) or return 0;
    print $s $self->{kind} eq 'redis' ? "PING\r\n" : "version\r\n";
    my $l = <$s> // '';
    return $l =~ /^(?:\+PONG|VERSION)/;
}

sub start {
    my ($self, @extra) = @_;
    my $p = $self->{port};
    my @cmd = $self->{kind} eq 'redis'
        ? ($BIN{redis}, '--port', $p, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
           '--loglevel', 'warning')
        : ($BIN{memcache}, '-l', '127.0.0.1', '-p', $p, '-U', '0', '-m', '64', ($> == 0 ? ('-u', 'nobody') : ()));
    push @cmd, @extra;
    my $log = "/tmp/cr-$self->{kind}-$$-$p.log";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        exec @cmd or POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    $self->_watchdog;
    my $deadline = time + 10;
    while (time < $deadline) {
        die "$self->{kind} exited at start-up: " . `cat $log` if waitpid($pid, WNOHANG) == $pid;
        return $self if $self->_ping;
        sleep 0.05;
    }
    die "$self->{kind} did not answer on $p";
}

sub stop {
    my ($self, $sig) = @_;
    my $pid = delete $self->{pid} or return;
    kill $sig // 'TERM', $pid;
    my $deadline = time + 5;
    while (time < $deadline) { return if waitpid($pid, WNOHANG) == $pid; sleep 0.05 }
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

# Kills the store if the test exits without its END blocks (SIGKILL).
sub _watchdog {
    my ($self) = @_;
    my ($parent, $victim) = ($$, $self->{pid});
    my $w = fork // return;
    return if $w;
    $0 = 'cr-store-watchdog';
    open STDIN, '<', '/dev/null';
    open STDOUT, '>', '/dev/null';
    open STDERR, '>', '/dev/null';
    $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
    sleep 0.5 while getppid() == $parent && kill 0, $victim;
    kill 'TERM', $victim if getppid() != $parent;
    POSIX::_exit(0);
}

sub stop_all { local $?; $_->stop for @LIVE }
END { stop_all() }
for my $sig (qw(INT TERM HUP)) {
    my $prev = $SIG{$sig};
    $SIG{$sig} = sub { stop_all(); ref $prev ? $prev->(@_) : exit 1 };
}

1;
