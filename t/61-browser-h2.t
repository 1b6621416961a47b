# SPDX-License-Identifier: Apache-2.0
# The demo's purchase flow in headless Chromium over HTTPS + HTTP/2 (issue #11):
# t/browser-h2/*.test.mjs against an httpd with mod_ssl and mod_http2
# (Protocols h2 http/1.1, certificate from a CA made for this run).  Skipped
# like t/60-browser.t when no browser is installed (a failure under CI).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use CrPki;

my $root = CrTest::repo_root();
CrTest::need_browser();

my $pki = CrPki->new;
my $sb = CrSandbox->start();
my $ap = CrTest->start(sandbox => $sb, tls => $pki, h2 => 1, conf => "CryptorefillsStreamHeartbeat 2\n");

my @files = sort glob "$root/t/browser-h2/*.test.mjs";
ok(@files >= 1, scalar(@files) . ' browser test file(s) over h2');
local $ENV{CR_BASE_URL} = $ap->base;
local $ENV{CR_SANDBOX_URL} = $sb->url;
local $ENV{NODE_EXTRA_CA_CERTS} = $pki->ca_file;   # Node's fetch in the helpers trusts the test CA
my $cmd = join ' ', 'node', '--test', '--test-reporter=tap', '--test-concurrency=1', map { "'$_'" } @files;
my $out = `cd '$root' && $cmd 2>&1`;
my $rc = $? >> 8;
my ($pass) = $out =~ /^# pass (\d+)/m;
my ($fail) = $out =~ /^# fail (\d+)/m;
note $out if $ENV{TEST_VERBOSE};
ok($rc == 0, 'node --test exits 0') or diag $out;
ok(($pass // 0) > 0, 'browser tests passed: ' . ($pass // 0));
is($fail // -1, 0, 'no browser test failed');

$ap->stop;
$sb->stop;
done_testing;
