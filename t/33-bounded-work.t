# Bounded work per request (issue #13): a checkout body shaped to be
# expensive for the strict JSON scanner costs about what a plain body of the
# same size costs.  The old scanner rescanned an object for every key past
# its 512th (duplicate detection): a 57 KB body of ~1000 keys in one object
# took 59 ms against 1.1 ms for its control.  Costs are compared within one
# run (a generous ratio, medians of interleaved requests), never against a
# clock.  Both bodies end in a duplicate key: a clear 400, decided locally,
# no upstream call.  The same many-key body without the duplicate is a valid
# order and goes upstream, as does a valid 81-byte number (JSONTestSuite's
# y_number_double_close_to_zero), which the scanner used to refuse.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use CrFixtures qw(%VALIDATE %CREATE);
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time);

my $J = JSON::PP->new->canonical->utf8;
my $sb = CrSandbox->start;
my $httpd = CrTest->start(sandbox => $sb);
my $ua = HTTP::Tiny->new(timeout => 30, keep_alive => 1);

# A validations or create body whose acquisition object holds $n members
# written by $member->($i); $tail is appended inside that object.
sub body_with {
    my ($shape, $inner, $tail) = @_;
    my $s = $J->encode({ %$shape, acquisition => { marker => 1 } });
    $s =~ s/"acquisition":\{"marker":1\}/"acquisition":{$inner$tail}/ or die 'no acquisition';
    return $s;
}
my $N = 990;
my $pad = 'x' x 47;
# Many keys in one object ...
my $many_inner = join ',', map { sprintf '"k%04d_%s":%d', $_, $pad, $_ % 10 } 0 .. $N - 1;
# ... and the same bytes as one-key objects in an array (a {} pair per key
# instead of nothing: pad the many-key body's keys to the same length).
my $ctl_inner = '"a":[' . join(',', map { sprintf '{"k%04d_%s":%d}', $_, substr($pad, 2), $_ % 10 } 0 .. $N - 1) . ']';

for my $route ([ 'orders/validations', \%VALIDATE ], [ 'orders', \%CREATE ]) {
    my ($rt, $shape) = @$route;
    my $many = body_with($shape, $many_inner, sprintf(',"k0000_%s":1', $pad));
    my $ctl  = body_with($shape, $ctl_inner, ',"a":1');
    cmp_ok(abs(length($many) - length($ctl)), '<', length($many) / 50, "$rt: bodies of the same size (" . length($many) . ' and ' . length($ctl) . ' bytes)');
    cmp_ok(length $many, '>', 50_000, "$rt: the many-key body is over 50 KB");

    my (@t_many, @t_ctl, %status, %reason);
    for my $round (1 .. 15) {
        for my $case ([ many => $many, \@t_many ], [ ctl => $ctl, \@t_ctl ]) {
            my ($name, $body, $times) = @$case;
            my $t0 = time;
            my $r = $ua->post($httpd->url("/api/$rt"), { headers => { 'Content-Type' => 'application/json' }, content => $body });
            push @$times, time - $t0;
            $status{$name}{ $r->{status} }++;
            my $j = eval { decode_json($r->{content}) } || {};
            $reason{$name}{ ($j->{moreDetails} || {})->{reason} // '(none)' }++;
        }
    }
    for my $name (qw(many ctl)) {
        is_deeply($status{$name}, { 400 => 15 }, "$rt: every $name body answered 400");
        is_deeply($reason{$name}, { 'duplicate key' => 15 }, "$rt: ... as a duplicate key");
    }
    my @sm = sort { $a <=> $b } @t_many;
    my @sc = sort { $a <=> $b } @t_ctl;
    my ($med_m, $med_c) = ($sm[7], $sc[7]);
    my $ratio = $med_m / ($med_c || 1e-6);
    cmp_ok($ratio, '<', 5, sprintf('%s: the many-key body costs about its control (median %.2f ms vs %.2f ms, %.2fx)',
                                   $rt, 1000 * $med_m, 1000 * $med_c, $ratio));
}
is($sb->request_count(path => '/v5/orders'), 0, 'none of the 60 refused bodies reached the upstream');

# Without the duplicate the many-key body is a valid order: it goes upstream as it is.
{
    my $body = body_with(\%VALIDATE, $many_inner, '');
    my $r = $ua->post($httpd->url('/api/orders/validations'), { headers => { 'Content-Type' => 'application/json' }, content => $body });
    is($r->{status}, 200, "a valid validations body with $N keys in one object is answered 200") or diag substr($r->{content}, 0, 300);
    my $req = $sb->last_request(path => '/v5/orders/validations');
    ok($req && $req->{body} eq $body, '... by the upstream, the body sent byte for byte');
}

# A long but valid number (81 bytes) is not refused; one past the cap (512 bytes) is.
{
    my $n81 = '-0.000000000000000000000000000000000000000000000000000000000000000000000000000001';
    is(length $n81, 81, 'the JSONTestSuite number is 81 bytes');
    my $body = body_with(\%VALIDATE, qq{"n":$n81}, '');
    my $r = $ua->post($httpd->url('/api/orders/validations'), { headers => { 'Content-Type' => 'application/json' }, content => $body });
    is($r->{status}, 200, 'a valid body with an 81-byte number is answered 200') or diag $r->{content};
    $body = body_with(\%VALIDATE, '"n":' . ('9' x 513), '');
    $r = $ua->post($httpd->url('/api/orders/validations'), { headers => { 'Content-Type' => 'application/json' }, content => $body });
    is($r->{status}, 400, 'a 513-byte number is refused with a 400');
    like($r->{content}, qr/number too long/, '... as too long');
    is($sb->request_count(path => '/v5/orders/validations'), 2, 'the two valid bodies, and only they, reached the upstream');
}

$httpd->stop;
$sb->stop;
done_testing;
