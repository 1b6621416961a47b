#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# The demo's servers; see scripts/demo.
use strict;
use warnings;
use File::Path qw(remove_tree);
use File::Spec;

# Keep this run's server directory (config, error log) after it stops, until
# the next run: the log whose path is printed must still be there to read.
BEGIN { $ENV{CR_KEEP} = 1 }
use CrTest;
use CrSandbox;

$| = 1;
my $last = File::Spec->catfile(File::Spec->tmpdir, 'mod_cryptorefills-demo.last');
if (open my $fh, '<', $last) {
    chomp(my $old = <$fh> // '');
    remove_tree($old) if $old =~ m{/cr-httpd-\w+$} && -d $old;
}
my ($sb, $upstream, $partner);
if ($ENV{CRYPTOREFILLS_UPSTREAM} || $ENV{CRYPTOREFILLS_PARTNER_ID}) {
    $upstream = $ENV{CRYPTOREFILLS_UPSTREAM} || 'https://api.cryptorefills.com';
    $partner = $ENV{CRYPTOREFILLS_PARTNER_ID}
        or die "CRYPTOREFILLS_PARTNER_ID must be set to front $upstream\n";
}
else {
    # Orders advance one state every few seconds, so the whole flow shows.
    $sb = CrSandbox->start(auto_advance => $ENV{CR_DEMO_ADVANCE} || 6);
    $upstream = $sb->url;
    $partner = 'demo-partner';
}
my $ap = CrTest->start(
    upstream => $upstream,
    partner  => $partner,
    version  => '1.0.0',
    port     => $ENV{CR_DEMO_PORT},
    loglevel => 'warn cryptorefills:info',
    no_log_check => 1,
    conf     => <<'CONF',
RedirectMatch "^/$" "/demo/"
<Location "/server-status">
    SetHandler server-status
    Require ip 127.0.0.1
</Location>
CONF
);
if (open my $fh, '>', $last) { print $fh $ap->dir, "\n" }
print "\nmod_cryptorefills demo\n";
print "  storefront:  ", $ap->url('/demo/'), "\n";
print "  module API:  ", $ap->url('/api/countries'), "  and ", $ap->url('/api/brands?country_code=US'),
    "  (routes: docs/ROUTES.md)\n";
print "  status:      ", $ap->url('/server-status?auto'), "\n";
print "  upstream:    ", ($sb ? "sandbox at $upstream (orders advance on their own)" : $upstream), "\n";
print "  logs:        ", $ap->error_log, "  (kept until the next scripts/demo)\n";
print "Press Ctrl-C to stop.\n";
$SIG{INT} = $SIG{TERM} = sub {
    print "\nStopping...\n";
    $ap->stop(quiet => 1);
    $sb->stop if $sb;
    print "Stopped Apache and ", ($sb ? 'the sandbox' : 'the connection to the upstream'), ". Logs: ", $ap->error_log, "\n";
    exit 0;
};
sleep 1 while 1;
