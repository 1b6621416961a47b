# SPDX-License-Identifier: Apache-2.0
# API routes map to no file: the module claims them in map_to_storage, so
# core's directory walk (stat of every path component, .htaccess lookups)
# never runs for them, as with mod_proxy.  Shown with an .htaccess that
# would make any request walking through it fail.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use HTTP::Tiny;
use CrTest;
use CrSandbox;

my $sb = CrSandbox->start();
my $ap = CrTest->start(
    sandbox => $sb,
    conf => <<'CONF',
<Directory "@DIR@/htdocs">
    AllowOverride All
</Directory>
CONF
    # the static request below walks into the broken .htaccess on purpose
    expect_errors => [qr/\.htaccess: Invalid command 'ThisIsNotADirective'/],
);
my $h = $ap->dir . '/htdocs';
for my $d ("$h/api", "$h/static") {
    mkdir $d;
    open my $fh, '>', "$d/.htaccess" or die $!;
    print $fh "ThisIsNotADirective on\n";
    close $fh;
    chmod 0755, $d;
    chmod 0644, "$d/.htaccess";
}
open my $fh, '>', "$h/static/x.txt" or die $!;
print $fh "x\n";
close $fh;

my $http = HTTP::Tiny->new(timeout => 10);
my $r = $http->get($ap->url('/static/x.txt'));
is($r->{status}, 500, 'a static file below the broken .htaccess: 500 (the walk reads it)');
for my $p ('/api/countries', '/api/brands', '/api/orders/abc') {
    $r = $http->get($ap->url($p));
    isnt($r->{status}, 500, "$p never reads the .htaccess below the DocumentRoot ($r->{status})");
    like($r->{headers}{'content-type'} // '', qr{^application/json}, "$p answers JSON");
}

$ap->stop;
$sb->stop;
done_testing;
