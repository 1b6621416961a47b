# SPDX-License-Identifier: Apache-2.0
package SseClient;
# A raw HTTP/1.1 client for one event stream, shared by the stream tests:
# it decodes the chunked framing itself and time-stamps every read, so a
# test sees exactly what a browser would get and when.
use strict;
use warnings;

use IO::Socket::INET;
use IO::Select;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(time);

# SseClient->new(port => P, path => '/api/...', headers => [Name => value, ...],
#                http10 => 1, local_addr => '127.0.0.2', keep_alive => 1)
sub new {
    my ($class, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $o{port}, Proto => 'tcp',
        Timeout => 5, ($o{local_addr} ? (LocalAddr => $o{local_addr}) : ()))
        or die "connect 127.0.0.1:$o{port}: $!";
    setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);
    binmode $s;
    my $self = bless { %o, sock => $s, sel => IO::Select->new($s) }, $class;
    $self->request($o{path}, @{ $o{headers} || [] }) if defined $o{path};
    return $self;
}

# Send a (further) request on the connection and reset the parse state.
sub request {
    my ($self, $path, @h) = @_;
    my $ver = $self->{http10} ? 'HTTP/1.0' : 'HTTP/1.1';
    my $req = "GET $path $ver\r\nHost: 127.0.0.1:$self->{port}\r\nAccept: text/event-stream\r\n";
    while (my ($k, $v) = splice @h, 0, 2) { $req .= "$k: $v\r\n" }
    $req .= "\r\n";
    @$self{qw(raw body status headers done eof framing_error state need)} =
        ('', '', undef, undef, 0, 0, undef, 'headers', 0);
    $self->{arrivals} = [];
    $self->{t_sent} = time;
    my $off = 0;
    while ($off < length $req) {
        my $n = syswrite($self->{sock}, $req, length($req) - $off, $off);
        die "write: $!" unless defined $n;
        $off += $n;
    }
}

# One select + read; returns the bytes read (0 at EOF, -1 on timeout).
sub pump {
    my ($self, $timeout) = @_;
    return 0 if $self->{eof};
    return -1 unless $self->{sel}->can_read($timeout);
    my $n = sysread($self->{sock}, my $buf, 65536);
    my $t = time;
    if (!$n) { $self->{eof} = 1; return 0 }
    $self->{raw} .= $buf;
    $self->{rawlog} .= $buf;
    $self->_parse($t);
    return $n;
}

sub _add_body {
    my ($self, $data, $t) = @_;
    return unless length $data;
    $self->{body} .= $data;
    push @{ $self->{arrivals} }, [ length $self->{body}, $t ];
}

sub _parse {
    my ($self, $t) = @_;
    while (1) {
        my $st = $self->{state};
        if ($st eq 'headers') {
            my $i = index($self->{raw}, "\r\n\r\n");
            return if $i < 0;
            my $head = substr($self->{raw}, 0, $i + 4, '');
            my ($line, @lines) = split /\r\n/, $head;
            ($self->{status}) = $line =~ m{^HTTP/1\.[01] (\d{3})};
            my %h;
            for (@lines) {
                my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
                $k = lc $k;
                $h{$k} = exists $h{$k} ? "$h{$k}, $v" : $v;
            }
            $self->{headers} = \%h;
            $self->{t_headers} = $t;
            if (($h{'transfer-encoding'} // '') =~ /chunked/i) { $self->{state} = 'size' }
            elsif (defined $h{'content-length'}) { $self->{state} = 'length'; $self->{need} = $h{'content-length'} }
            else { $self->{state} = 'eof' }
        }
        elsif ($st eq 'size') {
            my $i = index($self->{raw}, "\r\n");
            return if $i < 0;
            my $line = substr($self->{raw}, 0, $i + 2, '');
            if ($line !~ /^([0-9A-Fa-f]+)(?:;[^\r\n]*)?\r\n\z/) {
                $self->{framing_error} //= "bad chunk-size line: " . substr($line, 0, 40);
                $self->{state} = 'broken';
                return;
            }
            my $n = hex $1;
            $self->{chunks}++;
            if ($n == 0) { $self->{state} = 'trailer' }
            else { $self->{state} = 'data'; $self->{need} = $n }
        }
        elsif ($st eq 'data') {
            return unless length $self->{raw};
            my $take = substr($self->{raw}, 0, $self->{need}, '');
            $self->{need} -= length $take;
            $self->_add_body($take, $t);
            $self->{state} = 'crlf' if $self->{need} == 0;
        }
        elsif ($st eq 'crlf') {
            return if length $self->{raw} < 2;
            if (substr($self->{raw}, 0, 2, '') ne "\r\n") {
                $self->{framing_error} //= 'chunk data not followed by CRLF';
                $self->{state} = 'broken';
                return;
            }
            $self->{state} = 'size';
        }
        elsif ($st eq 'trailer') {
            my $i = index($self->{raw}, "\r\n");
            return if $i < 0;
            my $line = substr($self->{raw}, 0, $i + 2, '');
            if ($line eq "\r\n") { $self->{done} = 1; $self->{t_done} = $t; $self->{state} = 'end' }
        }
        elsif ($st eq 'length') {
            my $take = substr($self->{raw}, 0, $self->{need}, '');
            $self->{need} -= length $take;
            $self->_add_body($take, $t);
            if ($self->{need} == 0) { $self->{done} = 1; $self->{t_done} = $t; $self->{state} = 'end' }
            return;
        }
        elsif ($st eq 'eof') {
            $self->_add_body(substr($self->{raw}, 0, length $self->{raw}, ''), $t);
            return;
        }
        else {    # 'end' or 'broken': bytes after the response
            return;
        }
    }
}

# Pump until $cond->($self) is true; false on timeout or EOF first.
sub wait_for {
    my ($self, $cond, $timeout) = @_;
    my $deadline = time + $timeout;
    while (1) {
        return 1 if $cond->($self);
        return 0 if $self->{eof};
        my $left = $deadline - time;
        return 0 if $left <= 0;
        $self->pump($left > 0.25 ? 0.25 : $left);
    }
}
sub wait_body    { my ($s, $re, $t) = @_; $s->wait_for(sub { $_[0]{body} =~ $re }, $t) }
sub wait_headers { my ($s, $t) = @_; $s->wait_for(sub { defined $_[0]{headers} }, $t) }
sub wait_done    { my ($s, $t) = @_; $s->wait_for(sub { $_[0]{done} }, $t) }
sub wait_eof     { my ($s, $t) = @_; $s->wait_for(sub { $_[0]{eof} }, $t) }

# When the body byte at offset $off (0-based) arrived.
sub arrival_of {
    my ($self, $off) = @_;
    for (@{ $self->{arrivals} }) { return $_->[1] if $_->[0] > $off }
    return undef;
}

# The body as SSE blocks: [{id, event, data => [lines], comments => [..]}, ...]
sub blocks {
    my ($self) = @_;
    my @b;
    my $body = $self->{body};
    while ($body =~ /\G(.*?)\n\n/gs) {
        my %b = (data => [], comments => []);
        for my $l (split /\n/, $1) {
            if ($l =~ /^:\s?(.*)$/) { push @{ $b{comments} }, $1 }
            elsif ($l =~ /^data: ?(.*)$/s) { push @{ $b{data} }, $1 }
            elsif ($l =~ /^(id|event|retry): ?(.*)$/) { $b{$1} = $2 }
            else { push @{ $b{other} }, $l }
        }
        push @b, \%b;
    }
    return @b;
}
sub events { grep { @{ $_->{data} } } $_[0]->blocks }
sub comments { map { @{ $_->{comments} } } $_[0]->blocks }

sub close { my ($self) = @_; close $self->{sock} if $self->{sock}; delete $self->{sock} }

1;
