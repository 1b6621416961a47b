#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# Issue #11: TLS to the upstream and an egress proxy.
#
# The sandbox serves HTTPS with a certificate from a CA made for this run:
# not trusted by default (502 JSON), trusted with CryptorefillsCACertificateFile
# (every route and the stream work), a certificate for the wrong host name is
# refused (502) even with the right CA.  CryptorefillsUpstreamProxy sends all
# upstream traffic through a recording CONNECT proxy; without it nothing goes
# through a proxy even when httpd's real process environment names one.
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
my ($cert, $key) = $pki->cert('server');
my ($wcert, $wkey) = $pki->cert('wrong');
my $sb = CrSandbox->start(tls_cert => $cert, tls_key => $key);
my $sb_wrong = CrSandbox->start(tls_cert => $wcert, tls_key => $wkey);
like($sb->url, qr{^https://127\.0\.0\.1:\d+$}, 'sandbox serves https');

my $h1 = sub { my ($url, %o) = @_; CrCurl::request(url => $url, proto => 'h1', %o) };
my $UPSTREAM_FAIL = qr/CR\d+.*(?:upstream|certificate|SSL)/i;   # the module's own failure lines

sub expect_502 {
    my ($httpd, $label) = @_;
    my $r = $h1->($httpd->url('/api/brands?country_code=US'));
    is($r->{code}, 502, "$label: catalog is 502");
    like($r->{headers}{'content-type'} // '', qr{^application/json}, "$label: as JSON");
    is($r->{json} && $r->{json}{status}, 502, "$label: status 502 in the body");
    like($r->{json} && $r->{json}{detail} // '', qr/^UPSTREAM_/, "$label: detail names the upstream");
    $sb->create_order(order_id => "tls-fail-$httpd->{port}");
    $r = $h1->($httpd->url("/api/orders/tls-fail-$httpd->{port}/subscribe"));
    is($r->{code}, 502, "$label: stream is 502");
    is($r->{json} && $r->{json}{error}, 'Failed to connect to upstream stream', "$label: the stream's error message");
    unlike($r->{body}, qr/partner-secret/, "$label: no partner id in the answer");
}

subtest 'untrusted CA: 502 JSON' => sub {
    my $httpd = CrTest->try_start(sandbox => $sb, expect_errors => [$UPSTREAM_FAIL]) or return;
    expect_502($httpd, 'system store');
    $httpd->stop;
};

subtest 'CryptorefillsCACertificateFile: every route and the stream' => sub {
    my $httpd = CrTest->try_start(sandbox => $sb, tls => $pki, h2 => 1,
        conf => "CryptorefillsCACertificateFile \"$ca\"\nCryptorefillsStreamHeartbeat 60\nLogLevel cryptorefills:debug\n") or return;
    my $get = sub { my ($url, %o) = @_; CrCurl::request(url => $url, proto => 'h2', ca => $ca, %o) };
    CrRoutes::every_route(label => 'tls upstream', base => $httpd->url('/api'), get => $get, version => '2');
    # Collected calls to an https:// upstream go through the module's own
    # client (cr_h1client over cr_tls), not libcurl.
    my @calls = $httpd->slurp('error.log') =~ /CR01101: upstream \w+ https:\S+: \w+, status \d+, \d+ bytes, [\d.]+s, (\w+) client/g;
    ok(@calls >= 3, scalar(@calls) . ' collected https:// calls logged');
    is_deeply([ grep { $_ ne 'own' } @calls ], [], '... every one by the own client');
    # ... on kept-alive TLS connections: ten price quotes in a row, nearly
    # all on a connection an earlier one used (idle TLS connections are
    # checked before reuse and resumed when new).
    my $before = () = $httpd->slurp('error.log') =~ /CR01101: upstream GET https:\S+products\/price\S*: ok, .* own client, reused connection/g;
    for (1 .. 10) {
        my $r = $get->($httpd->url('/api/products/price?brand_name=Airbnb&country_code=US&face_value=100&coin=USDC'));
        is($r->{code}, 200, 'price over TLS: 200') or last;
    }
    my $reused = () = $httpd->slurp('error.log') =~ /CR01101: upstream GET https:\S+products\/price\S*: ok, .* own client, reused connection/g;
    cmp_ok($reused - $before, '>=', 8, 'ten price quotes: at least eight on a reused TLS connection');
    $sb->create_order(order_id => 'tls-stream-1');
    CrRoutes::order_stream(label => 'tls upstream', sb => $sb, oid => 'tls-stream-1', version => '2',
        open => sub { CrCurl::stream(url => $httpd->url('/api/orders/tls-stream-1/subscribe'), proto => 'h2', ca => $ca) });
    # Over HTTP/1.1 the suspended relay takes the stream: its upstream is
    # read by the loop's own client, through TLS, without a libcurl handle.
    $sb->create_order(order_id => 'tls-stream-2');
    CrRoutes::order_stream(label => 'tls upstream, suspended relay', sb => $sb, oid => 'tls-stream-2', version => '1.1',
        open => sub { CrCurl::stream(url => $httpd->url('/api/orders/tls-stream-2/subscribe'), proto => 'h1', ca => $ca) });
    my $ended = qr/CR01508: stream of order tls-stream-2 ended .*\(suspended relay, upstream by the loop's HTTP\/1\.1 client\)/;
    my $log = '';
    for (1 .. 50) { $log = $httpd->slurp('error.log'); last if $log =~ $ended; select undef, undef, undef, 0.1 }
    like($log, $ended, "... read by the loop's own client over TLS");
    $httpd->stop;
};

subtest 'wrong host name: 502 even with the right CA' => sub {
    my $httpd = CrTest->try_start(sandbox => $sb_wrong, conf => "CryptorefillsCACertificateFile \"$ca\"\n",
        expect_errors => [$UPSTREAM_FAIL]) or return;
    my $r = $h1->($httpd->url('/api/brands?country_code=US'));
    is($r->{code}, 502, 'catalog is 502');
    is($sb_wrong->request_count(path => '/v2/brands'), 0, 'no request reached the wrong-name upstream');
    $httpd->stop;
};

subtest 'CA file checked at start-up' => sub {
    for my $bad ('/nonexistent/ca.pem', "$FindBin::Bin/00-unit.t") {
        my ($rc, $out) = CrTest->config_test(sandbox => $sb, location => 1,
            conf => "CryptorefillsCACertificateFile \"$bad\"\n");
        isnt($rc, 0, "apache2 -t fails for CryptorefillsCACertificateFile $bad");
        like($out, qr/CryptorefillsCACertificateFile/, '... naming the directive') or diag $out;
        unlike($out, qr/Invalid command/, '... as a known directive');
    }
    for my $bad ('socks5://127.0.0.1:1080', 'proxy.example', 'http://proxy.example/path') {
        my ($rc, $out) = CrTest->config_test(sandbox => $sb, location => 1,
            conf => "CryptorefillsUpstreamProxy $bad\n");
        isnt($rc, 0, "apache2 -t fails for CryptorefillsUpstreamProxy $bad");
        like($out, qr/CryptorefillsUpstreamProxy/, '... naming the directive') or diag $out;
        unlike($out, qr/Invalid command/, '... as a known directive');
    }
    my ($rc, $out) = CrTest->config_test(sandbox => $sb, location => 1,
        conf => "CryptorefillsCACertificateFile \"$ca\"\nCryptorefillsUpstreamProxy none\n");
    is($rc, 0, 'a readable CA file and proxy none pass') or diag $out;
};

# Every request the sandbox recorded came over a connection the proxy opened.
sub all_through {
    my ($px, $label) = @_;
    my %ports = map { ($_->{out_port} // '') => 1 } @{ $px->relayed };
    my @reqs = @{ $sb->requests };
    ok(@reqs > 0, "$label: the upstream was called");
    my @direct = grep { my ($p) = ($_->{remote} // '') =~ /:(\d+)$/; !$p || !$ports{$p} } @reqs;
    is(scalar @direct, 0, "$label: every upstream request came through the proxy")
        or diag join "\n", map { "$_->{method} $_->{path} from $_->{remote}" } @direct[0 .. ($#direct > 5 ? 5 : $#direct)];
}

subtest 'CryptorefillsUpstreamProxy: all upstream traffic through it' => sub {
    my $px = CrAux->proxy;
    $sb->clear_requests;
    my $httpd = CrTest->try_start(sandbox => $sb, conf => "CryptorefillsCACertificateFile \"$ca\"\n"
        . "CryptorefillsUpstreamProxy " . $px->url . "\nCryptorefillsStreamHeartbeat 60\n") or return;
    CrRoutes::every_route(label => 'via proxy', base => $httpd->url('/api'), get => $h1);
    $sb->create_order(order_id => 'proxy-stream-1');
    CrRoutes::order_stream(label => 'via proxy', sb => $sb, oid => 'proxy-stream-1',
        open => sub { CrCurl::stream(url => $httpd->url('/api/orders/proxy-stream-1/subscribe'), proto => 'h1') });
    my @connects = grep { $_->{method} eq 'CONNECT' } @{ $px->relayed };
    ok(@connects >= 1, 'the proxy carried CONNECT tunnels');
    is_deeply([ grep { $_->{target} ne '127.0.0.1:' . $sb->port } @connects ], [], 'all to the upstream');
    all_through($px, 'via proxy');
    $httpd->stop;
    $px->stop;
};

# A failure before the order left (the proxy refuses the tunnel, or the
# upstream's certificate fails through it) is "unreachable", not "outcome
# unknown": libcurl's request size counts the CONNECT, which is no order.
subtest 'keyed order, tunnel refused or TLS failed: not "unknown", the key retries' => sub {
    my $order = '{"deliveries":[{"kind":"giftcard","quantity":1,"deliverable":{"brand_name":"Airbnb",'
        . '"country_code":"US","denomination":"100 USD","beneficiary_account":"px@example.com"}}],'
        . '"payment":{"type":"via","payment_via":"USER_WALLET","coin":"USDC","network":"Solana"},'
        . '"user":{"email":"px@example.com","has_accepted_newsletter":true},"lang":"en"}';
    for my $case ([ 'proxy answers 403 to CONNECT', 1, "CryptorefillsCACertificateFile \"$ca\"\n" ],
                  [ 'untrusted certificate through the proxy', 0, '' ]) {
        my ($label, $refuse, $tls) = @$case;
        my $px = CrAux->proxy(refuse => $refuse);
        $sb->clear_requests;
        my $httpd = CrTest->try_start(sandbox => $sb, conf => $tls
            . "CryptorefillsUpstreamProxy " . $px->url . "\n") or return;
        my $key = "px-$refuse-" . int(rand 1e9);
        for my $try (1, 2) {
            my $r = $h1->($httpd->url('/api/orders'), method => 'POST', body => $order,
                headers => [ 'Content-Type: application/json', "Idempotency-Key: $key" ]);
            is($r->{code}, 502, "$label, try $try: 502");
            my $more = ($r->{json} && $r->{json}{moreDetails}) || {};
            ok(!defined $more->{order_state}, "$label, try $try: no order_state unknown")
                or diag $r->{body};
            isnt($r->{json} && $r->{json}{detail}, 'ORDER_OUTCOME_UNKNOWN', "$label, try $try: not ORDER_OUTCOME_UNKNOWN");
        }
        is($sb->request_count(path => '/v5/orders'), 0, "$label: no order reached the upstream");
        ok((grep { $_->{method} eq 'CONNECT' } @{ $px->relayed }), "$label: the order went to the proxy");
        $httpd->stop;
        $px->stop;
    }
};

subtest 'two Locations, one through the proxy: connections never cross' => sub {
    # One process-wide handle pool serves both; handles are keyed by
    # (CA file, proxy), so a direct call never rides a tunnel and back.
    my $px = CrAux->proxy;
    $sb->clear_requests;
    my $url = $px->url;
    my $httpd = CrTest->try_start(sandbox => $sb, mpm_conf => "StartServers 1\nServerLimit 1\n"
        . "ThreadsPerChild 8\nMaxRequestWorkers 8\nMinSpareThreads 1\nMaxSpareThreads 8\n",
        conf => "CryptorefillsCACertificateFile \"$ca\"\n<Location \"/egress\">\n"
        . "    SetHandler cryptorefills\n    CryptorefillsUpstreamProxy $url\n</Location>\n") or return;
    my $q = 'products/price?brand_name=Airbnb&country_code=US&face_value=100&coin=USDC';
    for my $i (1 .. 5) {
        for my $loc (qw(/api /egress)) {
            my $r = $h1->($httpd->url("$loc/$q"));
            is($r->{code}, 200, "$loc price $i");
        }
    }
    my %ports = map { ($_->{out_port} // '') => 1 } @{ $px->relayed };
    my @price = @{ $sb->requests(path => '/v4/products/price') };
    is(scalar @price, 10, 'ten upstream price calls');
    my $via = grep { my ($p) = ($_->{remote} // '') =~ /:(\d+)$/; $p && $ports{$p} } @price;
    is($via, 5, 'exactly the five /egress calls came through the proxy');
    $httpd->stop;
    $px->stop;
};

my %ENV_PROXY;
subtest 'no directive: environment proxies ignored' => sub {
    my $px = CrAux->proxy;
    %ENV_PROXY = map { $_ => $px->url } qw(http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY);
    # a plain-http upstream: http_proxy would apply to it if honoured
    my $plain = CrSandbox->start;
    my $httpd = CrTest->try_start(sandbox => $plain, env => \%ENV_PROXY) or return;
    my $r = $h1->($httpd->url('/api/brands?country_code=US'));
    is($r->{code}, 200, 'http upstream works with http_proxy in the environment');
    is(scalar @{ $px->relayed }, 0, 'nothing went through the environment proxy');
    $httpd->stop;
    $plain->stop;
    for my $setting ('', "CryptorefillsUpstreamProxy none\n") {
        my $label = $setting ? 'proxy none' : 'unset';
        $sb->clear_requests;
        my $httpd = CrTest->try_start(sandbox => $sb, env => \%ENV_PROXY,
            conf => "CryptorefillsCACertificateFile \"$ca\"\n$setting") or return;
        my $r = $h1->($httpd->url('/api/brands?country_code=US'));
        is($r->{code}, 200, "$label: catalog works with https_proxy in httpd's environment");
        $sb->create_order(order_id => "env-$httpd->{port}", order_state => 'Done');
        $r = $h1->($httpd->url("/api/orders/env-$httpd->{port}/subscribe"));
        like($r->{body}, qr/^event: stop$/m, "$label: stream works too");
        is(scalar @{ $px->relayed }, 0, "$label: nothing went through the environment's proxy");
        $httpd->stop;
    }
    $px->stop;
};

subtest 'http upstream through the proxy (absolute-form)' => sub {
    my $px = CrAux->proxy;
    my $plain = CrSandbox->start;
    my $httpd = CrTest->try_start(sandbox => $plain, conf => 'CryptorefillsUpstreamProxy ' . $px->url . "\n") or return;
    my $r = $h1->($httpd->url('/api/brands?country_code=US'));
    is($r->{code}, 200, 'catalog works through the proxy');
    my @rel = @{ $px->relayed };
    ok((grep { $_->{method} eq 'GET' && $_->{target} =~ m{^http://127\.0\.0\.1:\d+/v2/brands} } @rel),
       'the proxy relayed the absolute-form request');
    $httpd->stop;
    $plain->stop;
    $px->stop;
};

$sb->stop;
$sb_wrong->stop;
done_testing;
