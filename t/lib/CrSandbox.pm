# SPDX-License-Identifier: Apache-2.0
package CrSandbox;

# Launcher and control client for the sandbox upstream (t/sandbox/cr-sandbox.pl).
#
#   my $sb = CrSandbox->start(auto_advance => 0);
#   ... CryptorefillsUpstream $sb->url ...
#   $sb->fault(match => '/v2/brands', mode => 'status', status => 503, times => 1);
#   my $reqs = $sb->requests(path => '/v2/brands');
#   $sb->stop;    # also on DESTROY
#
# The server is told to listen on 127.0.0.1 port 0 and reports the port the kernel
# picked on its first stdout line, so there is no probe-then-bind race. It also
# gets --parent-pid, so it exits on its own if this process dies without cleaning
# up (Apache::Test's SIGTERM-on-failed-start, a kill -9, ...).
#
# Core Perl + Mojo::UserAgent only.

use strict;
use warnings;
use Carp qw(croak);
use File::Spec;
use File::Basename qw(dirname);
use File::Temp qw(tempfile);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use Mojo::UserAgent;
use Mojo::JSON qw(decode_json encode_json);
use Mojo::Util qw(url_escape);

our $SCRIPT = File::Spec->rel2abs(File::Spec->catfile(dirname(__FILE__), '..', 'sandbox', 'cr-sandbox.pl'));

my %OPT_FLAG = (
    auto_advance => '--auto-advance', heartbeat => '--heartbeat', seed => '--seed',
    catalog_scale => '--catalog-scale', inactivity_timeout => '--inactivity-timeout',
    keep_alive_timeout => '--keep-alive-timeout', max_requests => '--max-requests',
    max_clients => '--max-clients', max_recorded => '--max-recorded', sse_retry => '--sse-retry',
    log_level => '--log-level', tls_cert => '--tls-cert', tls_key => '--tls-key',
);
my %OPT_BOOL = (numeric_amounts => '--numeric-amounts', numeric_timestamps => '--numeric-timestamps');

# CrSandbox->start(
#   port => N,               # default 0: let the kernel pick (reported back)
#   timeout => 15,           # seconds to wait for the server to answer
#   auto_advance => SECS, heartbeat => SECS, seed => STR, catalog_scale => F,
#   inactivity_timeout => 60, keep_alive_timeout => 60, numeric_amounts => 1, ...
#   tls_cert => PEM, tls_key => PEM,  # serve HTTPS (url() is then https://...)
#   args => [ ... ],         # extra raw command-line arguments
# )
sub start {
    my ($class, %o) = @_;
    my $timeout = $o{timeout} // 15;
    my @cmd = ($^X, $o{script} // $SCRIPT, '--listen', 'http://127.0.0.1:' . ($o{port} // 0), '--parent-pid', $$);
    for my $k (sort keys %OPT_FLAG) { push @cmd, $OPT_FLAG{$k}, $o{$k} if defined $o{$k} }
    for my $k (sort keys %OPT_BOOL) { push @cmd, $OPT_BOOL{$k} if $o{$k} }
    push @cmd, @{ $o{args} || [] };

    my ($ofh, $out) = tempfile('cr-sandbox-out-XXXXXX', TMPDIR => 1, UNLINK => 1);
    my ($efh, $err) = tempfile('cr-sandbox-err-XXXXXX', TMPDIR => 1, UNLINK => 1);
    my $pid = fork // croak "CrSandbox: fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>&', $ofh or POSIX::_exit(127);
        open STDERR, '>&', $efh or POSIX::_exit(127);
        exec @cmd or do { print STDERR "exec $cmd[0]: $!\n"; POSIX::_exit(127) };
    }
    my $self = bless { pid => $pid, owner => $$, out => $out, err => $err, cmd => \@cmd,
        ofh => $ofh, efh => $efh }, $class;

    my $deadline = time + $timeout;
    my $url;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            my $st = $?;
            delete $self->{pid};
            croak sprintf "CrSandbox: server exited (status %d) before it was ready:\n%s", $st >> 8, $self->stderr;
        }
        if (open my $fh, '<', $out) {
            local $/;
            my $txt = <$fh> // '';
            if ($txt =~ m{cr-sandbox listening on (https?://127\.0\.0\.1:(\d+))}) { $url = $1; $self->{port} = $2; last }
        }
        sleep 0.05;
    }
    unless ($url) {
        my $e = $self->stderr;
        $self->stop;
        croak "CrSandbox: server not ready after ${timeout}s:\n$e";
    }
    $self->{url} = $url;
    # one round trip to be sure it answers
    while (1) {
        my $tx = $self->ua->get("$url/_sandbox/health");
        last if ($tx->res->code // 0) == 200;
        if (time > $deadline) {
            my $e = $self->stderr;
            $self->stop;
            croak "CrSandbox: server does not answer on $url:\n$e";
        }
        sleep 0.05;
    }
    return $self;
}

sub port { $_[0]{port} }
sub url  { $_[0]{url} }
sub base { $_[0]{url} }
sub pid  { $_[0]{pid} }
sub cmd  { @{ $_[0]{cmd} } }

sub stderr {
    my ($self) = @_;
    open my $fh, '<', $self->{err} or return '';
    local $/;
    return <$fh> // '';
}

sub ua {
    my ($self) = @_;
    # The control channel does not check the test certificate (the module's
    # trust is what the tests are about, not this client's).
    return $self->{ua} //= Mojo::UserAgent->new(connect_timeout => 5, inactivity_timeout => 30,
        request_timeout => 30, insecure => 1);
}

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    return unless $self->{owner} == $$;    # a forked child never stops its parent's sandbox
    kill 'TERM', $pid;
    my $deadline = time + 3;
    while (time < $deadline) {
        return 1 if waitpid($pid, WNOHANG) == $pid;
        sleep 0.02;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    return 1;
}

sub DESTROY {
    my ($self) = @_;
    local ($., $@, $!, $^E, $?);
    $self->stop if $self->{pid};
}

# ---------------------------------------------------------------- control API
sub _call {
    my ($self, $method, $path, $body, %o) = @_;
    my @args = ("$self->{url}$path");
    if (defined $body) {
        push @args, ($o{raw} ? ({ 'Content-Type' => 'application/octet-stream' }, $body)
                             : ({ 'Content-Type' => 'application/json' }, encode_json($body)));
    }
    my $tx = $self->ua->build_tx($method => @args);
    $tx = $self->ua->start($tx);
    my $res = $tx->res;
    croak "CrSandbox: $method $path failed: " . ($tx->error->{message} // 'no answer') unless $res->code;
    my $j = eval { decode_json($res->body) };
    croak "CrSandbox: $method $path answered " . $res->code . ': ' . $res->body
        if $res->code >= 400 && !$o{allow_error};
    return wantarray ? ($j, $res->code) : $j;
}

sub _q {
    my (%q) = @_;
    my @p = map { url_escape($_) . '=' . url_escape($q{$_}) } grep { defined $q{$_} } sort keys %q;
    return @p ? '?' . join('&', @p) : '';
}

sub health { $_[0]->_call(GET => '/_sandbox/health') }

# requests(path => '/v2/brands', method => 'GET', since => $id) -> [ {id, time, method, path,
#   query, headers => {lc name => value}, raw_headers => [[Name, value]...], body, body_json?,
#   body_length, connection, remote, kept_alive}, ... ]
sub requests {
    my ($self, %f) = @_;
    return $self->_call(GET => '/_sandbox/requests' . _q(path => $f{path}, method => $f{method}, since => $f{since}));
}
sub last_request { my $r = shift->requests(@_); $r->[-1] }
sub request_count { scalar @{ shift->requests(@_) } }
sub clear_requests { $_[0]->_call(DELETE => '/_sandbox/requests')->{cleared} }

# Distinct upstream connections among the recorded requests (optionally by path prefix).
sub connections { $_[0]->_call(GET => '/_sandbox/connections' . _q(path => $_[1]))->{count} }
sub connection_list { $_[0]->_call(GET => '/_sandbox/connections' . _q(path => $_[1]))->{connections} }

# fault(match => '/v2/brands', method => 'GET', mode => 'status', status => 503, times => 1, ...) -> id
sub fault {
    my ($self, %spec) = @_;
    return $self->_call(POST => '/_sandbox/faults', \%spec)->{id};
}
sub faults { $_[0]->_call(GET => '/_sandbox/faults') }
sub remove_fault { $_[0]->_call(DELETE => "/_sandbox/faults/$_[1]", undef, allow_error => 1) }
sub clear_faults { $_[0]->_call(DELETE => '/_sandbox/faults')->{cleared} }

# Runtime switches: config(numeric_amounts => 1, empty_problems => '[]', ...) -> current config
sub config { my ($self, %kv) = @_; %kv ? $self->_call(POST => '/_sandbox/config', \%kv) : $self->_call(GET => '/_sandbox/config') }
sub reset { $_[0]->_call(POST => '/_sandbox/reset', {}) }

# Orders
# create_order(order_id => 'fixed-id', order_state => 'WaitingForPayment', brand_name => 'Airbnb',
#   country_code => 'US', denomination => '100 USD', email => ..., coin => 'USDC', network => 'Solana')
#   or create_order(request => { ...full POST /v5/orders body... }) -> order hashref
sub create_order { my ($self, %spec) = @_; $self->_call(POST => '/_sandbox/orders', \%spec) }
sub orders { $_[0]->_call(GET => '/_sandbox/orders') }
sub order { my ($j, $code) = $_[0]->_call(GET => "/_sandbox/orders/$_[1]", undef, allow_error => 1); $code == 200 ? $j->{order} : undef }
sub order_seq { $_[0]->_call(GET => "/_sandbox/orders/$_[1]")->{seq} }
sub delete_order { $_[0]->_call(DELETE => "/_sandbox/orders/$_[1]", undef, allow_error => 1) }

# advance($id) -> order after the step (WaitingForPayment -> WaitingForDelivery -> Done);
# subscribers get the new order, then `event: stop` when it is terminal.
sub advance { $_[0]->_call(POST => "/_sandbox/orders/$_[1]/advance", {})->{order} }

# set_order_state($id, 'Expired', payment_state => ..., delivery_state => ..., fields => {...}, notify => 0)
sub set_order_state {
    my ($self, $id, $state, %x) = @_;
    return $self->_call(POST => "/_sandbox/orders/$id/state", { order_state => $state, %x });
}

# push_event($id, $raw_bytes, close => 1) -> number of open streams written to.
# The bytes go verbatim to every open stream of the order (as one chunk).
sub push_event {
    my ($self, $id, $raw, %o) = @_;
    return $self->_call(POST => "/_sandbox/orders/$id/push" . _q(close => $o{close} ? 1 : undef), $raw, raw => 1)->{subscribers};
}

# close_streams($id, abrupt => 1): end the order's open streams (abrupt: socket closed mid-stream).
sub close_streams {
    my ($self, $id, %o) = @_;
    return $self->_call(POST => "/_sandbox/orders/$id/close" . _q(abrupt => $o{abrupt} ? 1 : undef), {})->{closed};
}

sub subscribers { $_[0]->_call(GET => "/_sandbox/orders/$_[1]/subscribers")->{count} }

# sent($id) -> [ { seq, state, time (epoch s, float), subscribers }, ... ]: when each
# status event of the order left the sandbox for its open streams.
sub sent { $_[0]->_call(GET => "/_sandbox/orders/$_[1]/sent")->{sent} }

# wait_subscribers($id, $n, $timeout = 10): true once at least $n streams of the order are open.
sub wait_subscribers {
    my ($self, $id, $n, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    while (1) {
        return 1 if $self->subscribers($id) >= $n;
        return 0 if time > $deadline;
        sleep 0.05;
    }
}

# wait_requests(path => ..., count => N, timeout => 10): the requests once N match.
sub wait_requests {
    my ($self, %f) = @_;
    my $n = delete $f{count} // 1;
    my $deadline = time + (delete $f{timeout} // 10);
    while (1) {
        my $r = $self->requests(%f);
        return $r if @$r >= $n;
        return undef if time > $deadline;
        sleep 0.05;
    }
}

1;
