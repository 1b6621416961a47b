# SPDX-License-Identifier: Apache-2.0
# The browser side in a real browser: headless Chromium (Debian) driven by
# playwright-core runs t/browser/*.test.mjs against this httpd (serving
# htdocs/ with the module at /api) and the sandbox upstream.  Under CI a
# missing browser fails; elsewhere the file is skipped with the reason.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;

my $root = CrTest::repo_root();
CrTest::need_browser();

my $sb = CrSandbox->start();
my $ap = CrTest->start(
    sandbox => $sb,
    conf => <<'CONF',
CryptorefillsStreamHeartbeat 2
CryptorefillsCacheTTL 60
CONF
    # The tests cut streams and make the upstream fail on purpose.
    expect_errors => [],
);

my @files = sort glob "$root/t/browser/*.test.mjs";
ok(@files >= 3, scalar(@files) . ' browser test files');
local $ENV{CR_BASE_URL} = $ap->base;
local $ENV{CR_SANDBOX_URL} = $sb->url;
my $cmd = join ' ', 'node', '--test', '--test-reporter=tap', '--test-concurrency=1', map { "'$_'" } @files;
my $out = `cd '$root' && $cmd 2>&1`;
my $rc = $? >> 8;
my ($pass) = $out =~ /^# pass (\d+)/m;
my ($fail) = $out =~ /^# fail (\d+)/m;
my ($skip) = $out =~ /^# skipped (\d+)/m;
note $out if $ENV{TEST_VERBOSE};
ok($rc == 0, "node --test exits 0") or diag $out;
ok(($pass // 0) > 0, "browser tests passed: " . ($pass // 0));
is($fail // -1, 0, 'no browser test failed');
is($skip // 0, 0, 'no browser test skipped') if $ENV{CI};
ok(-s "$root/t/artifacts/purchase-done.png" || glob("$root/t/artifacts/*.png"), 'a screenshot of the finished flow was saved');

$ap->stop;
$sb->stop;
done_testing;
