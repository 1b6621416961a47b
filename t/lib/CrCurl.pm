# SPDX-License-Identifier: Apache-2.0
package CrCurl;
# curl as the browser for the HTTP/2 and TLS tests:
#
#   my $r = CrCurl::request(url => $u, proto => 'h2'|'h2c'|'h1', ca => $pki->ca_file,
#                           method => 'POST', body => $json, headers => ['Idempotency-Key: k']);
#   $r->{code}, $r->{version} ('2' for HTTP/2), $r->{headers}{lc name}, $r->{body}, $r->{json}
#
#   my $s = CrCurl::stream(url => $u, proto => 'h2', ca => ...);   # an SSE stream
#   $s->next_event(5)   # { event, id, data, t (arrival, epoch s) } or undef on timeout/EOF
#   $s->wait_eof(5); $s->version; $s->close;
#
# 'h2' negotiates HTTP/2 by ALPN over TLS; 'h2c' uses prior knowledge over
# cleartext.  Environment proxies never apply to this client.
use strict;
use warnings;
use File::Temp qw(tempfile);
use IO::Select;
use JSON::PP ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(time);

sub _args {
    my (%o) = @_;
    my @a = ('curl', '-sS', '--noproxy', '*', '--max-time', $o{max_time} // 20);
    my $p = $o{proto} // 'h2';
    push @a, '--http2' if $p eq 'h2';
    push @a, '--http2-prior-knowledge' if $p eq 'h2c';
    push @a, '--http1.1' if $p eq 'h1';
    push @a, '--cacert', $o{ca} if $o{ca};
    push @a, '-X', $o{method} if $o{method} && $o{method} ne 'GET' && !defined $o{body};
    if (defined $o{body}) {
        push @a, '-X', $o{method} // 'POST', '--data-binary', $o{body};
        push @a, '-H', 'Content-Type: application/json' unless grep { /^content-type:/i } @{ $o{headers} || [] };
    }
    push @a, map { ('-H', $_) } @{ $o{headers} || [] };
    return @a;
}

sub _headers {
    my ($file) = @_;
    open my $fh, '<', $file or return (undef, {});
    local $/;
    my $all = <$fh> // '';
    # the last header block (after any 1xx)
    my @blocks = grep { /^HTTP\// } split /\r?\n\r?\n/, $all;
    my $b = $blocks[-1] // '';
    my ($ver, $code) = $b =~ m{^HTTP/([\d.]+) (\d{3})};
    my %h;
    for (split /\r?\n/, $b) { $h{ lc $1 } = $2 if /^([^:\s]+):\s*(.*)$/ }
    return ($ver, \%h, $code);
}

sub request {
    my (%o) = @_;
    my (undef, $hf) = tempfile('cr-curl-h-XXXXXX', TMPDIR => 1, UNLINK => 1);
    my @cmd = (_args(%o), '-D', $hf, $o{url});
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) { open STDERR, '>&', \*STDOUT; exec @cmd or POSIX::_exit(127) }
    local $/;
    my $body = <$fh> // '';
    close $fh;
    my ($ver, $h, $code) = _headers($hf);
    my $json = eval { JSON::PP->new->utf8->decode($body) };
    return { code => $code // 0, version => $ver // '', headers => $h, body => $body, json => $json,
             curl_exit => $? >> 8 };
}

sub stream {
    my (%o) = @_;
    my (undef, $hf) = tempfile('cr-curl-h-XXXXXX', TMPDIR => 1, UNLINK => 1);
    my @cmd = (_args(%o, max_time => $o{max_time} // 120), '-N', '-H', 'Accept: text/event-stream',
               '-D', $hf, $o{url});
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) { exec @cmd or POSIX::_exit(127) }
    binmode $fh;
    return bless { pid => $pid, fh => $fh, sel => IO::Select->new($fh), buf => '', events => [],
                   hf => $hf, t_open => time }, 'CrCurl::Stream';
}

package CrCurl::Stream;
use Time::HiRes qw(time);

sub _pump {
    my ($self, $timeout) = @_;
    return 0 if $self->{eof};
    return -1 unless $self->{sel}->can_read($timeout);
    my $n = sysread($self->{fh}, my $b, 65536);
    my $t = time;
    if (!$n) { $self->{eof} = 1; return 0 }
    $self->{raw} .= $b;
    $self->{buf} .= $b;
    while ($self->{buf} =~ s/\A(.*?)\r?\n\r?\n//s) {
        my $block = $1;
        my %e = (t => $t, raw => $block);
        for (split /\r?\n/, $block) {
            next if /^:/;
            my ($k, $v) = /^([^:]*):?\s?(.*)$/;
            if ($k eq 'data') { $e{data} = defined $e{data} ? "$e{data}\n$v" : $v }
            else { $e{$k} = $v }
        }
        if (defined $e{data} || defined $e{event}) { push @{ $self->{events} }, \%e }
        else { $self->{comments}++ }
    }
    return $n;
}

# The next event (comments are counted, not returned), or undef.
sub next_event {
    my ($self, $timeout) = @_;
    my $deadline = time + ($timeout // 5);
    while (!@{ $self->{events} }) {
        my $left = $deadline - time;
        return undef if $left <= 0;
        last if $self->_pump($left) == 0 && $self->{eof};
    }
    return shift @{ $self->{events} };
}

sub wait_eof {
    my ($self, $timeout) = @_;
    my $deadline = time + ($timeout // 5);
    while (!$self->{eof}) {
        my $left = $deadline - time;
        return 0 if $left <= 0;
        $self->_pump($left);
    }
    return 1;
}

sub headers { my @r = CrCurl::_headers($_[0]{hf}); $r[1] }
sub version { (CrCurl::_headers($_[0]{hf}))[0] }
sub status  { (CrCurl::_headers($_[0]{hf}))[2] }
sub raw     { $_[0]{raw} // '' }

# curl's exit code once it ended (18/56 would mean the stream was cut, not closed).
sub exit_code {
    my ($self) = @_;
    return $self->{exit} if defined $self->{exit};
    return undef unless $self->{eof};
    close $self->{fh};
    $self->{exit} = $? >> 8;
    delete $self->{pid};
    return $self->{exit};
}

sub close {
    my ($self) = @_;
    if (my $pid = delete $self->{pid}) {
        kill 'TERM', $pid;
        close $self->{fh};
    }
}

sub DESTROY { $_[0]->close }

1;
