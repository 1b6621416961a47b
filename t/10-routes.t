# SPDX-License-Identifier: Apache-2.0
# Every partner API route of CONTRACT.md (the stream has its own suite), against
# a real httpd and the sandbox upstream: what the browser gets (status and body
# as the upstream answered them, or the module's own JSON errors) and what the
# upstream was actually asked (path, re-encoded allow-listed query, headers),
# including the requests that must never reach it.
use strict;
use warnings;
use utf8;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use HTTP::Tiny;
use JSON::PP;
use Encode qw(encode_utf8);

my $PARTNER = 'partner-secret-id-0001';
my $JSON = JSON::PP->new->utf8->canonical;

my $sb = CrSandbox->start;
my $up = $sb->url;

# /api: country from the query/path, then the GEO_CC variable (set from an
# X-Geo request header here, as a GeoIP module would), then FR.
# /api2: neither env nor default: US.
# /bad: reaches the handler through <If> without a partner id.
my $conf = <<"C";
CryptorefillsUpstream   $up
CryptorefillsAppVersion "1.0.0"
CryptorefillsMaxBodySize 1024
SetEnvIf X-Geo "^(.+)\$" GEO_CC=\$1
<Location "/api">
    CryptorefillsPartnerId "$PARTNER"
    CryptorefillsCountryEnv GEO_CC
    CryptorefillsDefaultCountry FR
    SetHandler cryptorefills
</Location>
<Location "/api2">
    CryptorefillsPartnerId "$PARTNER"
    SetHandler cryptorefills
</Location>
<Location "/bad">
    <If "true">
        SetHandler cryptorefills
    </If>
</Location>
C

my $httpd = CrTest->start(sandbox => $sb, location => 0, partner => $PARTNER,
    loglevel => 'info', conf => $conf,
    expect_errors => [qr/CR01104: handler cryptorefills reached without CryptorefillsPartnerId for \/bad\//]);

my $http = HTTP::Tiny->new(timeout => 30, agent => 'Mozilla/5.0 (routes-test)');
my @responses;    # every response, for the partner-id leak check

sub req {
    my ($method, $path, %o) = @_;
    my $r = $http->request($method, $httpd->url($path), {
        headers => $o{headers} || {}, defined $o{content} ? (content => $o{content}) : () });
    push @responses, $r;
    return $r;
}
sub get  { req(GET => @_) }
sub body { my $r = shift; my $j = eval { $JSON->decode($r->{content}) }; $j }

# The module's own error: status, JSON type, detail code.
sub is_problem {
    my ($r, $status, $detail, $name) = @_;
    my $j = body($r);
    is($r->{status}, $status, "$name: $status")
        or diag substr($r->{content} // '', 0, 300);
    like($r->{headers}{'content-type'} // '', qr{^application/json}, "$name: JSON");
    is($j && $j->{detail}, $detail, "$name: detail $detail");
    is($j && $j->{status}, $status, "$name: status in body");
    return $j;
}

sub upstream_direct {
    my ($path) = @_;    # what the sandbox answers itself, for comparison
    my $r = HTTP::Tiny->new->get("$up$path");
    return ($r->{status}, $JSON->decode($r->{content}));
}

# ---------------------------------------------------------------- countries (local)
$sb->clear_requests;
{
    my $r = get('/api/countries');
    is($r->{status}, 200, 'countries: 200');
    like($r->{headers}{'content-type'}, qr{^application/json}, 'countries: JSON');
    my $j = body($r);
    is(ref $j->{countries}, 'ARRAY', 'countries: a list');
    is(scalar @{ $j->{countries} }, 233, 'countries: 233');
    is_deeply($j->{countries}[0], { isoCode => 'AX', name => 'Åland Islands' }, 'countries: AX first, UTF-8 name');
    my %cc = map { $_->{isoCode} => 1 } @{ $j->{countries} };
    ok($cc{US} && $cc{FR} && $cc{JP} && !$cc{XX}, 'countries: US FR JP listed, XX not');
    is($sb->request_count, 0, 'countries: no upstream call');
    my $h = req(HEAD => '/api/countries');
    is($h->{status}, 200, 'HEAD countries: 200');
    is($h->{content} // '', '', 'HEAD countries: no body');
}

# ---------------------------------------------------------------- catalog routes
# status and body as the upstream answers them; path and query it was asked.
sub check_pass {
    my ($name, $path, %o) = @_;
    $sb->clear_requests;
    my $r = get($path, headers => $o{headers} || {});
    my $rec = $sb->requests;
    is(scalar @$rec, 1, "$name: one upstream request") or diag explain [ map { "$_->{method} $_->{path}?$_->{query}" } @$rec ];
    my $u = $rec->[0] || {};
    is("$u->{method} $u->{path}", "GET $o{up_path}", "$name: upstream path");
    is($u->{query}, $o{up_query}, "$name: upstream query") if exists $o{up_query};
    is($u->{headers}{'x-country-iso-code'}, $o{country}, "$name: X-Country-ISO-Code $o{country}") if $o{country};
    my ($st, $want) = upstream_direct($o{up_path} . (length($o{up_query} // '') ? "?$o{up_query}" : ''));
    is($r->{status}, $st, "$name: status as the upstream answers ($st)");
    # A price quote carries the second it was quoted: the direct call may
    # land in the next second.
    my $got = body($r);
    for my $b ($got, $want) {
        delete $b->{quoted_at} if ref $b eq 'HASH';
    }
    is_deeply($got, $want, "$name: body as the upstream answers");
    like($r->{headers}{'content-type'} // '', qr{^application/json}, "$name: JSON");
    return ($r, $u);
}

check_pass('payment_vias', '/api/payment_vias', up_path => '/v3/payment_vias', up_query => '', country => 'FR');
my ($r, $u) = check_pass('brands (default country filled in)', '/api/brands',
    up_path => '/v2/brands', up_query => 'country_code=FR', country => 'FR');
is($r->{headers}{'x-cryptorefills-cache'}, 'miss', 'brands: first is a miss');
$sb->clear_requests;
$r = get('/api/brands');
is($r->{status}, 200, 'brands again: 200');
is($r->{headers}{'x-cryptorefills-cache'}, 'hit', 'brands again: a hit');
is($sb->request_count, 0, 'brands again: no upstream call');
check_pass('brands?country_code=GB', '/api/brands?country_code=GB&utm_source=x&COUNTRY_CODE=DE',
    up_path => '/v2/brands', up_query => 'country_code=GB', country => 'GB');
check_pass('homepage (default)', '/api/homepage', up_path => '/v2/homepage', up_query => 'country_code=FR', country => 'FR');
check_pass('homepage?country_code=JP', '/api/homepage?country_code=JP', up_path => '/v2/homepage',
    up_query => 'country_code=JP', country => 'JP');

# products: allow-listed, re-encoded in the route's order, unknown dropped.
check_pass('products/country/US', '/api/products/country/US?lang=en&coin=USDC&family_name=Airbnb&x=1&country_code=DE',
    up_path => '/v5/products/country/US', up_query => 'family_name=Airbnb&coin=USDC&lang=en', country => 'US');
check_pass('products: family name with spaces, & and UTF-8',
    '/api/products/country/DE?family_name=' . 'Gift+Cards+%26+M%C3%A1s%3D%2B' . '&brand_name=A%20b%23c&evil=%0d',
    up_path => '/v5/products/country/DE',
    up_query => 'family_name=Gift%20Cards%20%26%20M%C3%A1s%3D%2B&brand_name=A%20b%23c', country => 'DE');
check_pass('products: brand_name only', '/api/products/country/GB?brand_name=Amazon',
    up_path => '/v5/products/country/GB', up_query => 'brand_name=Amazon', country => 'GB');
check_pass('products: unsupported coin, upstream 400 passes through',
    '/api/products/country/US?family_name=Airbnb&coin=NOPE', up_path => '/v5/products/country/US',
    up_query => 'family_name=Airbnb&coin=NOPE', country => 'US');

# price: never cached, country filled in.
check_pass('products/price (country filled in)', '/api/products/price?coin=USDC&face_value=100&brand_name=Airbnb&network=x',
    up_path => '/v4/products/price', up_query => 'brand_name=Airbnb&country_code=FR&face_value=100&coin=USDC', country => 'FR');
($r) = check_pass('products/price?country_code=US', '/api/products/price?brand_name=Airbnb&country_code=US&face_value=100&coin=USDC',
    up_path => '/v4/products/price', up_query => 'brand_name=Airbnb&country_code=US&face_value=100&coin=USDC', country => 'US');
is($r->{status}, 200, 'price US: 200');
is($r->{headers}{'cache-control'}, 'no-store', 'price: Cache-Control no-store');
$sb->clear_requests;
get('/api/products/price?brand_name=Airbnb&country_code=US&face_value=100&coin=USDC');
is($sb->request_count, 1, 'price again: goes upstream again (never cached)');
check_pass('price: unknown brand, upstream 404 passes through',
    '/api/products/price?brand_name=NoSuchBrand&country_code=US&face_value=100&coin=USDC',
    up_path => '/v4/products/price', up_query => 'brand_name=NoSuchBrand&country_code=US&face_value=100&coin=USDC');

# Local query checks: no upstream call.
for my $c (
    [ '/api/products/country/US', 'INVALID_REQUEST', 'products without family/brand' ],
    [ '/api/products/price?brand_name=Airbnb&coin=USDC', 'INVALID_REQUEST', 'price without face_value' ],
    [ '/api/products/country/US?family_name=a&family_name=b', 'INVALID_REQUEST', 'duplicate parameter' ],
    [ '/api/products/country/US?family_name=%ZZ', 'INVALID_REQUEST', 'bad escape' ],
    [ '/api/products/country/US?family_name=%C3%28', 'INVALID_REQUEST', 'invalid UTF-8' ],
    [ '/api/products/country/US?family_name=a%00b', 'INVALID_REQUEST', 'NUL in a value' ],
    [ '/api/products/country/US?family_name=Airbnb&lang=EN', 'INVALID_REQUEST', 'bad lang' ],
    [ '/api/products/price?brand_name=Airbnb&face_value=1e3&coin=USDC', 'INVALID_REQUEST', 'bad face_value' ],
    [ '/api/products/country/US?family_name=' . ('x' x 201), 'INVALID_REQUEST', 'value too long' ],
) {
    $sb->clear_requests;
    is_problem(get($c->[0]), 400, $c->[1], $c->[2]);
    is($sb->request_count, 0, "$c->[2]: no upstream call");
}

# ---------------------------------------------------------------- country resolution
sub price_country {
    my ($path, %h) = @_;
    $sb->clear_requests;
    my $r = get($path, headers => \%h);
    my $u = $sb->last_request(path => '/v4/products/price');
    return $u ? ($u->{headers}{'x-country-iso-code'}, $u->{query}) : ('none', '');
}
my $P = 'products/price?brand_name=Airbnb&face_value=100&coin=USDC';
is((price_country("/api/$P&country_code=GB", 'X-Geo' => 'DE'))[0], 'GB', 'query country beats the env variable');
my ($cc, $q) = price_country("/api/$P", 'X-Geo' => 'DE');
is($cc, 'DE', 'env variable beats the default');
like($q, qr/(?:^|&)country_code=DE(?:&|$)/, '... and is filled into the query');
is((price_country("/api/$P", 'X-Geo' => 'jp'))[0], 'JP', 'env variable in lowercase is taken, uppercased');
is((price_country("/api/$P", 'X-Geo' => 'XX'))[0], 'FR', 'unsupported env value: the default');
is((price_country("/api/$P", 'X-Geo' => 'FRA'))[0], 'FR', 'three letters in env: the default');
is((price_country("/api/$P"))[0], 'FR', 'no env: CryptorefillsDefaultCountry');
is((price_country("/api2/$P", 'X-Geo' => 'DE'))[0], 'US', 'no CountryEnv, no default: US');
{
    $sb->clear_requests;
    get('/api/products/country/JP?family_name=Airbnb', headers => { 'X-Geo' => 'DE' });
    is($sb->last_request->{headers}{'x-country-iso-code'}, 'JP', 'path country beats the env variable');
    $sb->clear_requests;
    get('/api/homepage', headers => { 'X-Geo' => 'IT' });
    my $u = $sb->last_request;
    is($u && $u->{query}, 'country_code=IT', 'homepage: env country filled into the query');
    is($u && $u->{headers}{'x-country-iso-code'}, 'IT', 'homepage: env country as X-Country-ISO-Code');
}

# Unsupported countries: 400, nothing upstream.
for my $c (
    [ '/api/brands?country_code=XX', 'brands XX' ],
    [ '/api/brands?country_code=', 'brands empty country' ],
    [ '/api/homepage?country_code=USA', 'homepage USA' ],
    [ '/api/products/country/XX?family_name=Airbnb', 'products XX' ],
    [ "/api/$P&country_code=XX", 'price XX' ],
) {
    $sb->clear_requests;
    is_problem(get($c->[0]), 400, 'UNSUPPORTED_COUNTRY', $c->[1]);
    is($sb->request_count, 0, "$c->[1]: no upstream request");
}

# A supported country in lower case: a malformed request that names the code to use.
for my $c (
    [ '/api/brands?country_code=us', 'brands lowercase us', 'US' ],
    [ '/api/products/country/us?family_name=Airbnb', 'products lowercase us', 'US' ],
    [ "/api/$P&country_code=de", 'price lowercase de', 'DE' ],
) {
    $sb->clear_requests;
    my $j = is_problem(get($c->[0]), 400, 'INVALID_REQUEST', $c->[1]);
    is($j && $j->{moreDetails}{field}, 'country_code', "$c->[1]: field");
    is($j && $j->{moreDetails}{reason}, "country codes are upper-case: $c->[2]", "$c->[1]: reason names the code");
    is($sb->request_count, 0, "$c->[1]: no upstream request");
}
is_problem(get('/api/brands?country_code=zz'), 400, 'UNSUPPORTED_COUNTRY', 'brands lowercase unknown zz');

# ---------------------------------------------------------------- orders/{id}
{
    my $o = $sb->create_order(order_id => 'routes-order_1', country_code => 'US');
    $sb->clear_requests;
    my $r = get('/api/orders/routes-order_1', headers => { 'X-Geo' => 'DE' });
    my $u = $sb->last_request;
    is($r->{status}, 200, 'orders/{id}: 200');
    is("$u->{method} $u->{path}", 'GET /v5/orders/routes-order_1', 'orders/{id}: upstream path');
    is($u->{query}, '', 'orders/{id}: no query upstream');
    is($r->{headers}{'cache-control'}, 'no-store', 'orders/{id}: Cache-Control no-store');
    my (undef, $want) = upstream_direct('/v5/orders/routes-order_1');
    is_deeply(body($r), $want, 'orders/{id}: body as the upstream answers');
    is(body($r)->{order_id}, 'routes-order_1', 'orders/{id}: the order');
    is($u->{headers}{'x-country-iso-code'}, 'DE', 'orders/{id}: X-Country-ISO-Code from env');

    $sb->clear_requests;
    $r = get('/api/orders/no-such-order');
    is($r->{status}, 404, 'unknown order: upstream 404 passes through');
    is_deeply(body($r), { status => 404, detail => 'NOT_FOUND' }, 'unknown order: upstream body');
    is($sb->request_count, 1, 'unknown order: one upstream call');

    $sb->clear_requests;
    $r = get('/api/orders/' . ('a' x 64));
    is($r->{status}, 404, '64-char order id: accepted, asked upstream');
    is($sb->request_count, 1, '64-char order id: one upstream call');

    my $h = req(HEAD => '/api/orders/routes-order_1');
    is($h->{status}, 200, 'HEAD orders/{id}: 200');
    is($h->{content} // '', '', 'HEAD orders/{id}: no body');
    $h = req(HEAD => '/api/brands');
    is($h->{status}, 200, 'HEAD brands: 200');
    is($h->{content} // '', '', 'HEAD brands: no body');
}

# Bad order ids: 400, nothing upstream.
for my $c (
    [ '/api/orders/a.b', 'a.b' ],
    [ '/api/orders/' . ('a' x 65), '65 characters' ],
    [ '/api/orders/x%2e%2e', 'x%2e%2e' ],
    [ '/api/orders/a%2e', 'a%2e' ],
    [ '/api/orders/%2e%2e%2e', '%2e%2e%2e' ],
    [ '/api/orders/%C3%A9t%C3%A9', 'unicode' ],
    [ '/api/orders/a%20b', 'space' ],
    [ '/api/orders/a%3Bb', 'semicolon' ],
    [ '/api/orders/a:b', 'colon' ],
    [ '/api/orders/a%0d%0aX-Injected:%201', 'CRLF' ],
) {
    $sb->clear_requests;
    is_problem(get($c->[0]), 400, 'INVALID_ORDER_ID', "order id $c->[1]");
    is($sb->request_count, 0, "order id $c->[1]: no upstream call");
}
# httpd decodes %2e and removes dot segments before any handler runs:
# orders/%2e%2e is /api/ by then, which is no route.
$sb->clear_requests;
is_problem(get('/api/orders/%2e%2e'), 404, 'NOT_FOUND', 'order id %2e%2e (httpd made it /api/)');
is($sb->request_count, 0, 'order id %2e%2e: no upstream call');
# An encoded NUL or slash is refused by httpd itself (its own 404 page,
# the handler never runs): never upstream either.
for my $p ('/api/orders/a%00b', '/api/orders/a%2Fb') {
    $sb->clear_requests;
    is(get($p)->{status}, 404, "$p: refused by httpd");
    is($sb->request_count, 0, "$p: no upstream call");
}

# ---------------------------------------------------------------- 404 / 405
for my $p ('/api/nope', '/api/', '/api', '/api/brands/extra', '/api/orders/abc/def', '/api/products',
           '/api/products/country', '/api/products/country/US/x', '/api/v2/brands',
           '/api/BRANDS', '/api/orders/abc/subscribe/x') {
    $sb->clear_requests;
    is_problem(get($p), 404, 'NOT_FOUND', "GET $p");
    is($sb->request_count, 0, "GET $p: no upstream call");
}
for my $c (
    [ POST => '/api/brands', 'GET, HEAD' ], [ PUT => '/api/countries', 'GET, HEAD' ],
    [ DELETE => '/api/orders/abc', 'GET, HEAD' ], [ POST => '/api/products/price', 'GET, HEAD' ],
    [ GET => '/api/orders', 'POST' ], [ GET => '/api/orders/validations', 'POST' ],
    [ PUT => '/api/orders', 'POST' ], [ HEAD => '/api/orders', 'POST' ],
    [ POST => '/api/payment_vias', 'GET, HEAD' ],
) {
    my ($m, $p, $allow) = @$c;
    $sb->clear_requests;
    my $r = req($m, $p, headers => { 'Content-Type' => 'application/json' }, $m =~ /POST|PUT/ ? (content => '{}') : ());
    is($r->{status}, 405, "$m $p: 405");
    is($r->{headers}{allow}, $allow, "$m $p: Allow: $allow");
    if ($m ne 'HEAD') {
        is(body($r) && body($r)->{detail}, 'METHOD_NOT_ALLOWED', "$m $p: METHOD_NOT_ALLOWED");
    }
    is($sb->request_count, 0, "$m $p: no upstream call");
}

# ---------------------------------------------------------------- POST bodies
use CrFixtures qw(%VALIDATE %CREATE);   # t/lib/CrFixtures.pm
my $big = $JSON->encode({ %VALIDATE, pad => 'x' x 1100 });
for my $route ('orders/validations', 'orders') {
    my $valid = $JSON->encode($route eq 'orders' ? \%CREATE : \%VALIDATE);
    for my $c (
        [ 415, 'UNSUPPORTED_MEDIA_TYPE', 'text/plain', $valid, 'text/plain' ],
        [ 415, 'UNSUPPORTED_MEDIA_TYPE', undef, $valid, 'no Content-Type' ],
        [ 415, 'UNSUPPORTED_MEDIA_TYPE', 'application/jsonp', $valid, 'application/jsonp' ],
        [ 415, 'UNSUPPORTED_MEDIA_TYPE', 'application/x-www-form-urlencoded', 'a=1', 'form' ],
        [ 413, 'BODY_TOO_LARGE', 'application/json', $big, 'body over CryptorefillsMaxBodySize' ],
        [ 400, 'INVALID_REQUEST', 'application/json', '{"deliveries": [', 'truncated JSON' ],
        [ 400, 'INVALID_REQUEST', 'application/json', '{deliveries: 1}', 'malformed JSON' ],
        [ 400, 'INVALID_REQUEST', 'application/json', '', 'empty body' ],
        [ 400, 'INVALID_REQUEST', 'application/json', '[1,2]', 'an array' ],
        [ 400, 'INVALID_REQUEST', 'application/json', '"order"', 'a string' ],
        [ 400, 'INVALID_REQUEST', 'application/json', '42', 'a number' ],
        [ 400, 'INVALID_REQUEST', 'application/json', '{"a":1,"a":2}', 'duplicate keys' ],
        [ 400, 'INVALID_REQUEST', 'application/json', "{\"a\":\"\xff\"}", 'invalid UTF-8' ],
    ) {
        my ($st, $detail, $ct, $content, $name) = @$c;
        $sb->clear_requests;
        my $r = req(POST => "/api/$route", headers => { defined $ct ? ('Content-Type' => $ct) : () },
            content => $content);
        is_problem($r, $st, $detail, "POST $route: $name");
        is($sb->request_count, 0, "POST $route: $name: no upstream call");
    }
    # The same too-large body, chunked (no Content-Length).
    $sb->clear_requests;
    my @chunks = (substr($big, 0, 600), substr($big, 600));
    my $r = req(POST => "/api/$route", headers => { 'Content-Type' => 'application/json' },
        content => sub { shift @chunks });
    is_problem($r, 413, 'BODY_TOO_LARGE', "POST $route: chunked body over the limit");
    is($sb->request_count, 0, "POST $route: chunked too large: no upstream call");
    # A body under the limit, chunked: read and forwarded.
    @chunks = (substr($valid, 0, 50), substr($valid, 50));
    $sb->clear_requests;
    $r = req(POST => "/api/$route", headers => { 'Content-Type' => 'application/json; charset=utf-8',
        'Idempotency-Key' => 'routes-chunked-1' }, content => sub { shift @chunks });
    is($r->{status}, 200, "POST $route: chunked valid body: 200") or diag $r->{content};
    my ($post) = grep { $_->{method} eq 'POST' } @{ $sb->requests };
    is($post && $post->{path}, "/v5/$route", "POST $route: upstream path");
    is($post && $post->{body}, $valid, "POST $route: body forwarded byte for byte");
}

# ---------------------------------------------------------------- POST pass-through
{
    my $valid = $JSON->encode(\%VALIDATE);
    $sb->clear_requests;
    my $r = req(POST => '/api/orders/validations', headers => { 'Content-Type' => 'application/json',
        'X-Geo' => 'DE', 'User-Agent' => 'Browser/1.0 (validations)', 'X-Forwarded-For' => '203.0.113.9' },
        content => $valid);
    is($r->{status}, 200, 'validations: 200');
    is($r->{headers}{'cache-control'}, 'no-store', 'validations: no-store');
    my ($post) = grep { $_->{method} eq 'POST' } @{ $sb->requests };
    ok($post, 'validations: went upstream');
    my $j = body($r);
    ok($j && ref $j->{deliveries} eq 'ARRAY', 'validations: the upstream answer (deliveries)');
    ok($j && exists $j->{problems}, 'validations: the upstream answer (problems)');
    is($post->{headers}{'x-forwarded-for'}, '127.0.0.1', 'validations: X-Forwarded-For is the client address, not the browser header');
    is($post->{headers}{'user-agent'}, 'Browser/1.0 (validations)', "validations: browser's User-Agent");
    is($post->{headers}{'x-country-iso-code'}, 'DE', 'validations: X-Country-ISO-Code from env');

    # upstream 4xx JSON on validations passes through: an unknown coin the
    # local validator lets through? Use a sandbox fault for a definite answer.
    my $fid = $sb->fault(match => '/v5/orders/validations', mode => 'status', status => 409,
        body => '{"status":409,"detail":"SOMETHING_UPSTREAM","moreDetails":{"x":"é"}}');
    $r = req(POST => '/api/orders/validations', headers => { 'Content-Type' => 'application/json' }, content => $valid);
    $sb->remove_fault($fid);
    is($r->{status}, 409, 'validations: upstream 409 passes through');
    is_deeply(body($r), { status => 409, detail => 'SOMETHING_UPSTREAM', moreDetails => { x => 'é' } },
        'validations: upstream error body passes through');

    my $create = $JSON->encode(\%CREATE);
    $sb->clear_requests;
    $r = req(POST => '/api/orders', headers => { 'Content-Type' => 'application/json', 'Idempotency-Key' => 'routes-create-1',
        'User-Agent' => 'Browser/2.0 (create)' }, content => $create);
    is($r->{status}, 200, 'orders: 200') or diag $r->{content};
    my @posts = grep { $_->{method} eq 'POST' && $_->{path} eq '/v5/orders' } @{ $sb->requests };
    is(scalar @posts, 1, 'orders: one upstream POST');
    is($posts[0]{body}, $create, 'orders: body forwarded byte for byte');
    is($posts[0]{headers}{'user-agent'}, 'Browser/2.0 (create)', "orders: browser's User-Agent");
    is($posts[0]{headers}{'x-forwarded-for'}, '127.0.0.1', 'orders: X-Forwarded-For');
    my $o = body($r);
    ok($o && $o->{order_id} && $o->{wallet_address}, 'orders: the created order (id, wallet)');
    ok($o && $sb->order($o->{order_id}), 'orders: the order exists upstream');
}

# ---------------------------------------------------------------- upstream request headers
{
    $sb->clear_requests;
    my %evil = ('X-Cr-Application' => 'browser-app', 'X-Cr-Version' => '666', 'X-Country-ISO-Code' => 'KP',
                'X-Cr-Anything' => 'injected', 'x-cr-debug' => '1', 'User-Agent' => 'EvilBrowser/1.0',
                'Accept' => 'text/html', 'X-Forwarded-For' => '198.51.100.7');
    get('/api/homepage?country_code=NL', headers => \%evil);
    get("/api/$P&country_code=NL", headers => \%evil);
    get('/api/orders/routes-order_1', headers => \%evil);
    my $vreq = $JSON->encode(\%VALIDATE);
    req(POST => '/api/orders/validations', headers => { %evil, 'Content-Type' => 'application/json' }, content => $vreq);
    my %by = map { ($_->{method} eq 'POST' ? 'validations' : $_->{path}) => $_ }
             grep { $_->{path} ne '/v3/payment_vias' && $_->{path} ne '/v2/brands' } @{ $sb->requests };
    for my $k ('/v2/homepage', '/v4/products/price', '/v5/orders/routes-order_1', 'validations') {
        my $u = $by{$k};
        ok($u, "$k: went upstream") or next;
        my @app = grep { lc $_->[0] eq 'x-cr-application' } @{ $u->{raw_headers} };
        is(scalar @app, 1, "$k: one X-Cr-Application");
        is($u->{headers}{'x-cr-application'}, $PARTNER, "$k: X-Cr-Application is the partner id");
        is($u->{headers}{'x-cr-version'}, '1.0.0', "$k: X-Cr-Version is CryptorefillsAppVersion");
        is($u->{headers}{'x-country-iso-code'}, 'NL', "$k: X-Country-ISO-Code from the request, not the browser header")
            unless $k =~ /orders|validations/;
        is($u->{headers}{'content-type'}, 'application/json', "$k: Content-Type application/json");
        is($u->{headers}{accept}, 'application/json', "$k: Accept application/json");
        my @other = grep { /^x-cr-/ && $_ ne 'x-cr-application' && $_ ne 'x-cr-version' } keys %{ $u->{headers} };
        is_deeply(\@other, [], "$k: no browser X-Cr-* header upstream");
        if ($k =~ /orders|validations/) {
            is($u->{headers}{'x-country-iso-code'}, 'FR', "$k: X-Country-ISO-Code resolved, not the browser's");
            is($u->{headers}{'user-agent'}, 'EvilBrowser/1.0', "$k: the browser's User-Agent");
            is($u->{headers}{'x-forwarded-for'}, '127.0.0.1', "$k: X-Forwarded-For is the client address only");
        }
        else {
            like($u->{headers}{'user-agent'}, qr{^mod_cryptorefills/\d}, "$k: User-Agent names mod_cryptorefills");
            ok(!exists $u->{headers}{'x-forwarded-for'}, "$k: no X-Forwarded-For on catalog routes");
        }
    }
    # A browser without a User-Agent on an order route: the module's own.
    $sb->clear_requests;
    my $t = HTTP::Tiny->new(agent => '');
    $t->get($httpd->url('/api/orders/routes-order_1'));
    like($sb->last_request->{headers}{'user-agent'} // '', qr{^mod_cryptorefills/},
        'order route without a browser User-Agent: the module names itself');
}

# ---------------------------------------------------------------- MISCONFIGURED
{
    $sb->clear_requests;
    for my $p ('/bad/brands', '/bad/countries', '/bad/orders/abc') {
        my $r = get($p);
        is($r->{status}, 500, "$p without a partner id: 500");
        is_deeply(body($r), { status => 500, detail => 'MISCONFIGURED', moreDetails => {} }, "$p: MISCONFIGURED body");
    }
    my $r = req(POST => '/bad/orders', headers => { 'Content-Type' => 'application/json' }, content => $JSON->encode(\%CREATE));
    is($r->{status}, 500, 'POST /bad/orders: 500');
    is($sb->request_count, 0, 'MISCONFIGURED: no upstream call');
    like($httpd->slurp('error.log'), qr/CR01104: handler cryptorefills reached without CryptorefillsPartnerId for \/bad\/brands/,
        'MISCONFIGURED: an error-log line naming the missing directive');
}

# ---------------------------------------------------------------- the partner id never leaks
{
    my @leaks;
    for my $r (@responses) {
        my $all = join "\n", $r->{content} // '', map { "$_: " . (ref $r->{headers}{$_} ? "@{$r->{headers}{$_}}" : $r->{headers}{$_}) } keys %{ $r->{headers} };
        push @leaks, "$r->{status} $r->{url}" if index($all, $PARTNER) >= 0 || index($all, 'partner-secret') >= 0;
    }
    ok(scalar(@responses) > 100, 'many responses checked (' . scalar(@responses) . ')');
    is_deeply(\@leaks, [], 'the partner id appears in no response, headers or body, errors included');
}

$httpd->stop;
my $log = $httpd->slurp('error.log');
like($httpd->slurp('httpd.conf'), qr/^LogLevel info$/m, 'the server ran at LogLevel info');
unlike($log, qr/\Q$PARTNER\E/, 'the partner id is not in the error log (info level)');
$sb->stop;
done_testing;
