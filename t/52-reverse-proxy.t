#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# Issue #11: the module inside a reverse-proxy Apache.  An app server sits
# behind `ProxyPass / http://app/` (and, separately, behind a
# `RewriteRule ^/(.*)$ http://app/$1 [P]`); <Location "/api"> SetHandler
# cryptorefills must still own every module route (the stream included),
# while every other path reaches the app.  `ProxyPass /api !` keeps working.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use CrPki;
use CrAux;
use CrCurl;
use CrRoutes;

my $pki = CrPki->new;
my $ca = $pki->ca_file;
my $sb = CrSandbox->start;
my $app = CrAux->app;
my $APP = $app->url;
my @PROXY_MODS = qw(proxy proxy_http rewrite);

my %LAYOUT = (
    'ProxyPass /' => "ProxyPass / $APP/\nProxyPassReverse / $APP/\n",
    'ProxyPass /api ! then /' => "ProxyPass /api !\nProxyPass / $APP/\nProxyPassReverse / $APP/\n",
    'RewriteRule [P]' => "RewriteEngine on\nRewriteRule ^/(.*)\$ $APP/\$1 [P]\n",
    'ProxyPass / in a VirtualHost' => undef,    # the vhost form, written below
);

for my $name (sort keys %LAYOUT) {
    subtest $name => sub {
        my $conf = $LAYOUT{$name};
        my %o = (sandbox => $sb, modules => \@PROXY_MODS, tls => $pki, h2 => 1,
                 conf => "CryptorefillsStreamHeartbeat 60\n" . ($conf // ''));
        if (!defined $conf) {
            # Everything inside one vhost, as shared hosting writes it.
            $o{location} = 0;
            my ($cert, $key) = $pki->cert('server');
            $o{conf} = <<"C";
CryptorefillsStreamHeartbeat 60
<VirtualHost *:*>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile "$cert"
    SSLCertificateKeyFile "$key"
    Protocols h2 http/1.1
    CryptorefillsUpstream \@UPSTREAM\@
    CryptorefillsPartnerId "partner-secret-id-0001"
    CryptorefillsAppVersion "1.0.0"
    ProxyPass / $APP/
    <Location "/api">
        SetHandler cryptorefills
    </Location>
</VirtualHost>
C
        }
        my $httpd = CrTest->try_start(%o) or return;
        my $get = sub { my ($url, %x) = @_; CrCurl::request(url => $url, proto => 'h2', ca => $ca, %x) };

        my $r = $get->($httpd->url('/shop/cart?x=1'));
        is($r->{code}, 200, 'another path is proxied');
        is($r->{json} && $r->{json}{app}, 'backend', '... to the app');
        is($r->{json} && $r->{json}{path}, '/shop/cart', '... with its path');
        $r = $get->($httpd->url('/apiary'));
        is($r->{json} && $r->{json}{app}, 'backend', '/apiary is not under <Location /api>: the app\'s');

        CrRoutes::every_route(label => $name, base => $httpd->url('/api'), get => $get, version => '2');
        $r = $get->($httpd->url('/api/countries'));
        ok(!($r->{json} && $r->{json}{app}), 'the app never answered a module route');
        my $oid = 'rp-' . join('', map { sprintf '%02x', ord } split //, $name =~ s/\W//gr);
        $oid = substr($oid, 0, 60);
        $sb->create_order(order_id => $oid);
        CrRoutes::order_stream(label => $name, sb => $sb, oid => $oid, version => '2',
            open => sub { CrCurl::stream(url => $httpd->url("/api/orders/$oid/subscribe"), proto => 'h2', ca => $ca) });

        if ($name =~ /^ProxyPass \/( in|$)/) {
            # The module tells the operator it claimed paths a proxy rule covers.
            like($httpd->slurp('error.log'), qr/CR\d+.*ProxyPass.*\/api|CR\d+.*\/api.*ProxyPass/,
                 'a start-up notice names the shadowing ProxyPass and the Location');
        }
        $httpd->stop;
    };
}

$sb->stop;
$app->stop;
done_testing;
