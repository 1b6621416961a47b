# SPDX-License-Identifier: Apache-2.0
# Bounded work for any request (issue #13).  Each finding is a test that
# fails on the code before:
#  - one POST orders/validations naming all 233 countries made 233 upstream
#    GET /v2/brands (one per country, synchronously, for the request that
#    won each refresh), 37 s with the upstream at 150 ms: now no catalog is
#    fetched by a validation, none is looked at once PRODUCT_COUNT_EXCEEDED
#    is decided, and at most 3 countries' catalogs are looked at otherwise;
#  - every child kept a parsed tree of every catalog it validated against,
#    without a cap (+107 MB RSS per child after four such bodies): now at
#    most 32 MiB of parsed catalogs per child, least recently used out.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time);

my $DELAY_MS = 150;
my $CAP = 32 * 1024 * 1024;     # CR_PARSED_CATALOGS_MAX

my $sb = CrSandbox->start;
my $httpd = CrTest->start(sandbox => $sb, conf => <<'C');
ExtendedStatus On
<Location /server-status>
    SetHandler server-status
</Location>
<Location "/wide">
    SetHandler cryptorefills
    CryptorefillsMaxProducts 1000
</Location>
C
my $ua = HTTP::Tiny->new(timeout => 120);
my $J = JSON::PP->new->canonical->utf8;

open my $fh, '<', "$FindBin::Bin/sandbox/data/countries.tsv" or die $!;
my @cc = grep { /^[A-Z][A-Z]$/ } map { (split /\t/)[0] } <$fh>;
close $fh;
is(scalar @cc, 233, '233 countries');

sub body {
    my ($first) = @_;   # rotate, so the first countries differ per body
    my @order = (@cc[$first .. $#cc], @cc[0 .. $first - 1]);
    return $J->encode({ email => 'buyer@example.com', lang => 'en',
        payment => { type => 'via', payment_via => 'USER_WALLET', coin => 'USDC', network => 'Solana' },
        deliveries => [ map { { beneficiary_account => 'buyer@example.com', brand_name => 'Airbnb',
            country_code => $_, denomination => '25 USD', localized_denomination => '25 USD' } } @order ] });
}
sub post {
    my ($loc, $bytes) = @_;
    my $t0 = time;
    my $r = $ua->request(POST => $httpd->url("/$loc/orders/validations"),
        { content => $bytes, headers => { 'Content-Type' => 'application/json' } });
    return ($r, time - $t0, eval { decode_json($r->{content}) });
}
sub status {
    my $s = $ua->get($httpd->url('/server-status?auto'))->{content};
    my %h = $s =~ /^Cryptorefills(\w+): (\d+)$/mg;
    return \%h;
}
sub upstream_since {
    my ($mark, $path) = @_;
    return scalar grep { $_->{id} > $mark } @{ $sb->requests($path ? (path => $path) : ()) };
}
sub mark { my $all = $sb->requests; @$all ? $all->[-1]{id} : 0 }

# ---- the upstream answers everything after 150 ms ------------------------------------------
$sb->fault(match => '/v', mode => 'latency', ms => $DELAY_MS);
my $bound = 10 * $DELAY_MS / 1000;
my $body = body(0);
cmp_ok(length $body, '>', 25_000, 'the body is the 26 KB one of the report');

my $m = mark();
my $skipped0 = status()->{validations_catalog_skipped};
my ($r, $dt, $j) = post('api', $body);
is($r->{status}, 200, '233 deliveries over the maximum of 10: answered 200') or diag $r->{content};
is_deeply([ map { $_->{problem} } @{ $j->{problems} || [] } ], ['PRODUCT_COUNT_EXCEEDED'],
    '... with PRODUCT_COUNT_EXCEEDED alone: no catalog consulted once it is decided');
is(upstream_since($m, '/v2/brands'), 0, '... no upstream GET /v2/brands');
is(upstream_since($m), 0, '... no upstream call at all');
cmp_ok($dt, '<', $bound, "... in less than 10 x the upstream's delay") or diag "took $dt s";

# Within the count (CryptorefillsMaxProducts 1000), cold cache: no catalog
# is fetched; the body goes upstream, which decides.
$m = mark();
($r, $dt, $j) = post('wide', $body);
is($r->{status}, 200, '233 deliveries within the maximum, cold cache: 200 (the upstream\'s answer)')
    or diag $r->{content};
is(upstream_since($m, '/v2/brands'), 0, '... no upstream GET /v2/brands');
is(upstream_since($m, '/v3/payment_vias'), 0, '... nor /v3/payment_vias');
is(upstream_since($m), 1, '... one upstream call: the validation itself');
cmp_ok($dt, '<', $bound, "... in less than 10 x the upstream's delay") or diag "took $dt s";
is(status()->{validations_catalog_skipped} - $skipped0, 233,
    'mod_status counts the 233 countries not checked locally');
$sb->clear_faults;

# ---- warm: every catalog cached, as browsing would have ------------------------------------
my $bad = 0;
for my $c (@cc) {
    $bad++ if $ua->get($httpd->url("/wide/brands?country_code=$c"))->{status} != 200;
}
is($bad, 0, 'all 233 brands catalogs cached');

# Warm cache: 3 countries' catalogs looked at, the other 230 left to the upstream.
$m = mark();
my $st0 = status();
($r, $dt, $j) = post('wide', body(0));
is($r->{status}, 200, 'warm cache, 233 countries: 200') or diag $r->{content};
is(upstream_since($m, '/v2/brands'), 0, '... no upstream GET /v2/brands');
is(upstream_since($m), 1, '... one upstream call: the validation');
is(status()->{validations_catalog_skipped} - $st0->{validations_catalog_skipped}, 230,
    '... 230 countries over the limit of 3 counted as skipped');

# ---- memory: parsed catalogs are capped per child -----------------------------------------
sub children { $httpd->children }
sub rss {
    my %r;
    for my $pid (children()) {
        open my $f, '<', "/proc/$pid/status" or next;
        local $/;
        my $s = <$f>;
        $r{$pid} = $1 * 1024 if $s =~ /^VmRSS:\s+(\d+) kB/m;
    }
    return \%r;
}
my $base = rss();
ok(scalar keys %$base, 'children found: ' . join(' ', map { "$_=" . int($base->{$_} / 1048576) . 'MB' } sort keys %$base));
$m = mark();
for my $i (1 .. 20) {
    my ($r) = post('wide', body(($i * 3) % 233));     # 3 new countries each time
    $bad++ if $r->{status} != 200;
}
is($bad, 0, '20 more 233-country bodies answered 200');
is(upstream_since($m, '/v2/brands'), 0, '... without one upstream GET /v2/brands');
my $after = rss();
# Under AddressSanitizer freed memory sits in its quarantine (256 MB by
# default), so a child's RSS says nothing about what the module keeps: the
# table's own byte count below is checked in both passes.
for my $pid ($ENV{CR_SANITIZE} ? () : sort keys %$base) {
    next unless $after->{$pid};
    my $grew = $after->{$pid} - $base->{$pid};
    cmp_ok($grew, '<', $CAP, "child $pid grew less than the 32 MiB cap")
        or diag sprintf('%d MB -> %d MB', $base->{$pid} / 1048576, $after->{$pid} / 1048576);
}
my $st = status();
ok(defined $st->{parsed_catalogs_entries} && defined $st->{parsed_catalogs_evictions},
    'mod_status shows the parsed catalogs table (entries, bytes, evictions)');
cmp_ok($st->{parsed_catalogs_bytes}, '<=', $CAP, '... within its budget');
is($st->{parsed_catalogs_max_bytes}, $CAP, '... of 32 MiB');
diag "parsed catalogs of the child that answered: $st->{parsed_catalogs_entries} entries, "
   . "$st->{parsed_catalogs_bytes} bytes, $st->{parsed_catalogs_evictions} evictions";

$httpd->stop;
$sb->stop;
done_testing;
