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

        # The module tells the operator it claimed paths a proxy rule covers
        # (CR01005, naming the rule's file:line), but not where an earlier
        # `ProxyPass /api !` already leaves /api alone.
        my $log = $httpd->slurp('error.log');
        my @notices = $log =~ /^.*CR01005.*$/mg;
        if ($name =~ /^ProxyPass \/( in|$)/) {
            ok((grep { m{<Location /api>.* ProxyPass / \Q$APP\E/ at \S+:\d+} } @notices),
               'a start-up notice names the shadowing ProxyPass (file:line) and the Location')
                or diag explain \@notices;
        }
        elsif ($name =~ /RewriteRule/) {
            ok((grep { m{<Location /api>.* RewriteRule \^/\(\.\*\)\$ .*\[P\].* at \S+:\d+} } @notices),
               'a start-up notice names the shadowing RewriteRule [P] and the Location')
                or diag explain \@notices;
        }
        else {
            is(scalar @notices, 0, 'no notice: the earlier ProxyPass /api ! excludes the Location')
                or diag explain \@notices;
        }
        my %seen;
        my @msgs = map { /(CR01005: .*)$/ ? $1 : $_ } @notices;
        ok(!(grep { $seen{$_}++ } @msgs), 'no notice given twice (post_config runs twice)')
            or diag explain \@msgs;
        $httpd->stop;
    };
}

# mod_proxy's pre-translation (mapping=encoded) sees the URI still encoded:
# /%61pi/countries is /api/countries once decoded, under the module's
# <Location>, and must not go to the app.
subtest 'ProxyPass mapping=encoded: an encoded module URI stays the module\'s' => sub {
    my $httpd = CrTest->try_start(sandbox => $sb, modules => \@PROXY_MODS,
        conf => "ProxyPass / $APP/ mapping=encoded\nProxyPassReverse / $APP/\n") or return;
    for my $path ('/api/countries', '/%61pi/countries', '/api/%63ountries', '//api/countries') {
        my $r = CrCurl::request(url => $httpd->url($path), proto => 'h1');
        is($r->{code}, 200, "$path: 200");
        ok(!($r->{json} && ref $r->{json} eq 'HASH' && $r->{json}{app}), "$path: not the app's")
            or diag $r->{body};
    }
    my $r = CrCurl::request(url => $httpd->url('/%61piary'), proto => 'h1');
    is($r->{json} && $r->{json}{app}, 'backend', '/%61piary (not under /api): the app\'s');
    $httpd->stop;
};

subtest 'a <Location> inside the module\'s that sets no handler stays the proxy\'s' => sub {
    # Claimed by prefix before the location walk, given back after it: the
    # nested section's requests are translated by mod_proxy and mod_rewrite
    # as if the module were not there.
    my $httpd = CrTest->try_start(sandbox => $sb, modules => \@PROXY_MODS, tls => $pki, h2 => 1,
        conf => <<"C") or return;
ProxyPass /api/legacy/ $APP/old/
ProxyPass / $APP/
RewriteEngine on
RewriteRule ^/api/rw/(.*)\$ $APP/rewritten/\$1 [P]
<Location "/api/legacy">
    SetHandler none
</Location>
<Location "/api/rw">
    SetHandler none
</Location>
C
    my $get = sub { CrCurl::request(url => $httpd->url($_[0]), proto => 'h2', ca => $ca) };
    # (A ProxyPass with mapping=encoded there would not apply: mod_proxy maps
    # those before the location walk, where the prefix alone decides.)
    my $r = $get->('/api/legacy/x%20y');
    is($r->{json} && $r->{json}{app}, 'backend', 'ProxyPass below SetHandler none: the app');
    is($r->{json} && $r->{json}{path}, '/old/x%20y', '... at the mapped path') or diag explain $r->{json};
    $r = $get->('/api/rw/z');
    is($r->{json} && $r->{json}{path}, '/rewritten/z', 'RewriteRule [P] below SetHandler none: the app');
    $r = $get->('/api/countries');
    is($r->{code}, 200, 'the module still answers beside them');
    ok($r->{json} && !$r->{json}{app}, '... itself');
    $httpd->stop;
};

$sb->stop;
$app->stop;
done_testing;
