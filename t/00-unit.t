# SPDX-License-Identifier: Apache-2.0
# The C unit tests of the pure core (Check), run inside the same harness.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;

my $dir = $ENV{CR_UNIT_DIR} || "$FindBin::Bin/unit";
my @bins = grep { -x $_ && !-d $_ } glob "$dir/test_*";
@bins = grep { !/\.(?:c|o|log|trs)$/ } @bins;
ok(@bins >= 2, "unit test programs are built in $dir") or BAIL_OUT("no unit test binaries: run make");

my %env = (CK_FORK => 'yes');
if ($ENV{CR_SANITIZE}) {
    $env{ASAN_OPTIONS} = 'detect_leaks=1:abort_on_error=1';
    $env{UBSAN_OPTIONS} = 'print_stacktrace=1:halt_on_error=1';
}
for my $bin (@bins) {
    local @ENV{keys %env} = values %env;
    my $out = `'$bin' 2>&1`;
    my $rc = $? >> 8;
    my ($pct, $checks, $fail, $err) = $out =~ /(\d+)%: Checks: (\d+), Failures: (\d+), Errors: (\d+)/;
    my $name = (split m{/}, $bin)[-1];
    ok($rc == 0 && defined $checks && $checks > 0 && $fail == 0 && $err == 0,
       "$name: " . ($checks // 0) . " checks, " . ($fail // '?') . " failures, " . ($err // '?') . " errors")
        or diag $out;
    unlike($out, qr/AddressSanitizer|runtime error:|LeakSanitizer/, "$name: no sanitizer report");
}
done_testing;
