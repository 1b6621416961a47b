# SPDX-License-Identifier: Apache-2.0
# Local validation of checkout bodies (issue #4): every problem the module can
# decide from the cached catalogs and payment methods is reported in the
# upstream's own shape, without an upstream call; a body that passes goes
# upstream byte for byte as received.
#
# Catalog facts used (t/lib/CrSandbox/Data.pm, seed cr-sandbox-1):
#   US gift cards: Airbnb (25/50/100/200/500 USD), Amazon.com (range 5..500);
#   US eSIM: "USA eSIM" (mobile_recharge, category e-sim, by email);
#   US top-ups: AT&T, Verizon (mobile_recharge, phone-top-up, by phone), "AT&T Data"
#   (data-bundle, by phone); out of stock: GameStop (gift card), Tello (top-up);
#   GB top-up: EE (not sold in the US); Crypto Voucher is an nft_giftcard.
#   Payment: BINANCE_PAY is unavailable; LTC is a suspended coin; USDT on Ethereum
#   is a suspended network; USDC has no Lightning network; DOGE is unknown.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use HTTP::Tiny;
use JSON::PP;
use Encode qw(encode_utf8);

my $J = JSON::PP->new->canonical->utf8;

my $sb = CrSandbox->start;
my $httpd = CrTest->start(sandbox => $sb, conf => <<'C');
<Location "/api2">
    SetHandler cryptorefills
    CryptorefillsMaxProducts 3
</Location>
C
my $ua = HTTP::Tiny->new(timeout => 30);

# Validation never fetches a catalog (issue #13: one body could name every
# country): it judges against the copies the shop's browsing cached.  Browse
# first, as a shopper would.
for my $p ('/api2/payment_vias', map { "/api2/brands?country_code=$_" } qw(US GB)) {
    is($ua->get($httpd->url($p))->{status}, 200, "warm the cache: GET $p");
}

sub post_raw {
    my ($path, $bytes, %h) = @_;
    my $r = $ua->request(POST => $httpd->url($path), {
        content => $bytes,
        headers => { 'Content-Type' => 'application/json', %h } });
    my $j = eval { decode_json($r->{content}) };
    return ($r, $j);
}
sub post_json { my ($path, $data, %h) = @_; post_raw($path, $J->encode($data), %h) }

# Upstream POSTs to /v5/orders... recorded since the last call of this sub.
my $last_seen = 0;
sub upstream_posts {
    my $r = $sb->requests(path => '/v5/orders', method => 'POST', since => $last_seen);
    my $all = $sb->requests;
    $last_seen = $all->[-1]{id} if @$all;
    return $r;
}

# ---- body builders ---------------------------------------------------------------------
sub delivery_create {
    my ($brand, $den, $ben, %x) = @_;
    return { kind => $x{kind} // 'giftcard', quantity => $x{quantity} // 1,
        deliverable => { brand_name => $brand, country_code => $x{cc} // 'US',
            denomination => $den, beneficiary_account => $ben,
            (defined $x{product_value} ? (product_value => $x{product_value}) : ()) } };
}
sub delivery_val {
    my ($brand, $den, $ben, %x) = @_;
    return { beneficiary_account => $ben, brand_name => $brand, country_code => $x{cc} // 'US',
        denomination => $den, localized_denomination => $x{loc} // $den,
        (defined $x{product_value} ? (product_value => $x{product_value}) : ()) };
}
sub payment { my (%p) = @_; return { type => 'via', payment_via => 'USER_WALLET', coin => 'USDC', network => 'Solana', %p } }
sub create_body {
    my ($dl, %x) = @_;
    return { deliveries => $dl, payment => $x{payment} // payment(),
        user => { email => 'buyer@example.com', has_accepted_newsletter => JSON::PP::false },
        lang => 'en', acquisition => { utm_source => 'cr-tests' } };
}
sub val_body {
    my ($dl, %x) = @_;
    return { email => 'buyer@example.com', payment => $x{payment} // payment(), deliveries => $dl, lang => 'en' };
}

# Both shapes of one order: [create body, validations body].
sub both {
    my ($items, %x) = @_;    # items: [brand, den, ben, %opts]
    return (create_body([ map { delivery_create(@$_) } @$items ], %x),
            val_body([ map { delivery_val(@$_) } @$items ], %x));
}

# Post the same order to both routes and check the problems list.
#   $want: [ [CODE, {moreDetails subset}, field-suffix], ... ] in order.
sub expect_problems {
    my ($name, $items, $want, %x) = @_;
    my ($cb, $vb) = both($items, %x);
    my $base = $x{base} // '/api';
    upstream_posts();
    for my $route ([ 'orders', $cb, 422, 'deliveries[%d].deliverable' ], [ 'orders/validations', $vb, 200, 'deliveries[%d]' ]) {
        my ($rt, $body, $status, $pfx) = @$route;
        my ($r, $j) = post_json("$base/$rt", $body);
        is($r->{status}, $status, "$name: POST $rt answers $status") or diag $r->{content};
        like($r->{headers}{'content-type'} // '', qr{^application/json}, "$name: $rt JSON");
        my @p = @{ ($j && $j->{problems}) || [] };
        is_deeply([ map { $_->{problem} } @p ], [ map { $_->[0] } @$want ], "$name: $rt problem codes, every one listed")
            or diag $r->{content};
        if ($rt eq 'orders') {
            is($j->{status}, 422, "$name: orders body has status 422");
            is($j->{detail}, $want->[0][0], "$name: orders body detail is the first problem");
        } else {
            ok(!exists $j->{status} && !exists $j->{detail}, "$name: validations body is only the problems list")
                or diag $r->{content};
        }
        for my $i (0 .. $#$want) {
            my ($code, $more, $field) = @{ $want->[$i] };
            my $got = $p[$i] or next;
            ok(ref $got->{moreDetails} eq 'HASH', "$name: $rt $code has moreDetails") or next;
            for my $k (sort keys %$more) {
                is_deeply($got->{moreDetails}{$k}, $more->{$k}, "$name: $rt $code moreDetails.$k")
                    or diag $J->encode($got);
            }
            if (defined $field) {
                my $f = $field =~ /^D(\d+)\.(.*)/ ? sprintf($pfx, $1) . ".$2" : $field;
                is($got->{moreDetails}{field}, $f, "$name: $rt $code names field $f");
            }
        }
    }
    is(scalar @{ upstream_posts() }, 0, "$name: no upstream call on either route");
}

# ---- INVALID_BENEFICIARY_ACCOUNT: decided by the catalog, not the request's kind ----------
expect_problems('gift card with a phone number',
    [ [ 'Airbnb', '100 USD', '+14155551234' ] ],
    [ [ 'INVALID_BENEFICIARY_ACCOUNT', { expected => 'email', brand_name => 'Airbnb', country_code => 'US' }, 'D0.beneficiary_account' ] ]);

expect_problems('gift card with a phone number, request kind says mobile_recharge',
    [ [ 'Airbnb', '100 USD', '+14155551234', kind => 'mobile_recharge' ] ],
    [ [ 'INVALID_BENEFICIARY_ACCOUNT', { expected => 'email' }, 'D0.beneficiary_account' ] ]);

expect_problems('eSIM with a phone number (eSIMs go by email)',
    [ [ 'USA eSIM', '1 GB 7 days', '+14155551234', kind => 'mobile_recharge' ] ],
    [ [ 'INVALID_BENEFICIARY_ACCOUNT', { expected => 'email', brand_name => 'USA eSIM', country_code => 'US' }, 'D0.beneficiary_account' ] ]);

expect_problems('top-up with an email, request kind says giftcard',
    [ [ 'AT&T', '10 USD', 'buyer@example.com', kind => 'giftcard' ] ],
    [ [ 'INVALID_BENEFICIARY_ACCOUNT', { expected => 'phone', brand_name => 'AT&T', country_code => 'US' }, 'D0.beneficiary_account' ] ]);

expect_problems('top-up with a national number (no +)',
    [ [ 'Verizon', '10 USD', '14155551234', kind => 'mobile_recharge' ] ],
    [ [ 'INVALID_BENEFICIARY_ACCOUNT', { expected => 'phone' }, 'D0.beneficiary_account' ] ]);

expect_problems('data bundle with a formatted number',
    [ [ 'AT&T Data', '1 GB 7 days', '+1 415 555 1234', kind => 'mobile_recharge' ] ],
    [ [ 'INVALID_BENEFICIARY_ACCOUNT', { expected => 'phone', brand_name => 'AT&T Data' }, 'D0.beneficiary_account' ] ]);

expect_problems('GB top-up checked against the GB catalog',
    [ [ 'EE', '10 GBP', 'buyer@example.com', kind => 'mobile_recharge', cc => 'GB' ] ],
    [ [ 'INVALID_BENEFICIARY_ACCOUNT', { expected => 'phone', brand_name => 'EE', country_code => 'GB' }, 'D0.beneficiary_account' ] ]);

expect_problems('gift card with a malformed email',
    [ [ 'Airbnb', '100 USD', 'buyer@@example.com' ] ],
    [ [ 'INVALID_BENEFICIARY_ACCOUNT', { expected => 'email' }, 'D0.beneficiary_account' ] ]);

# ---- NOT_AVAILABLE_PRODUCT / OUT_OF_STOCK ------------------------------------------------
expect_problems('unknown brand',
    [ [ 'No Such Brand', '10 USD', 'buyer@example.com' ] ],
    [ [ 'NOT_AVAILABLE_PRODUCT', { brand_name => 'No Such Brand', country_code => 'US' }, 'D0.brand_name' ] ]);

expect_problems('brand of another country (EE is sold in GB, not the US)',
    [ [ 'EE', '10 USD', '+14155551234', kind => 'mobile_recharge' ] ],
    [ [ 'NOT_AVAILABLE_PRODUCT', { brand_name => 'EE', country_code => 'US' }, 'D0.brand_name' ] ]);

expect_problems('out-of-stock gift card',
    [ [ 'GameStop', '10 USD', 'buyer@example.com' ] ],
    [ [ 'OUT_OF_STOCK', { brand_name => 'GameStop', country_code => 'US' }, 'D0.brand_name' ] ]);

expect_problems('out-of-stock top-up with an email: two problems from one delivery',
    [ [ 'Tello', '10 USD', 'buyer@example.com', kind => 'mobile_recharge' ] ],
    [ [ 'OUT_OF_STOCK', { brand_name => 'Tello' }, 'D0.brand_name' ],
      [ 'INVALID_BENEFICIARY_ACCOUNT', { expected => 'phone', brand_name => 'Tello' }, 'D0.beneficiary_account' ] ]);

# ---- PRODUCT_COUNT_EXCEEDED (CryptorefillsMaxProducts) ---------------------------------------
expect_problems('11 deliveries with the default maximum of 10',
    [ map { [ 'Airbnb', '25 USD', "buyer$_\@example.com" ] } 1 .. 11 ],
    [ [ 'PRODUCT_COUNT_EXCEEDED', { max => 10, count => 11 }, 'deliveries' ] ]);

expect_problems('4 deliveries where CryptorefillsMaxProducts is 3',
    [ map { [ 'Airbnb', '25 USD', "buyer$_\@example.com" ] } 1 .. 4 ],
    [ [ 'PRODUCT_COUNT_EXCEEDED', { max => 3, count => 4 }, 'deliveries' ] ], base => '/api2');

# ---- payment: NOT_ALLOWED_PAYMENT_VIA, UNSUPPORTED_PROTOCOL_COIN_COMBINATION ----------------
expect_problems('unavailable payment via (BINANCE_PAY)',
    [ [ 'Airbnb', '100 USD', 'buyer@example.com' ] ],
    [ [ 'NOT_ALLOWED_PAYMENT_VIA', { payment_via => 'BINANCE_PAY', allowed => ['USER_WALLET'] }, 'payment.payment_via' ] ],
    payment => payment(payment_via => 'BINANCE_PAY', coin => 'USDT', network => 'Binance Pay'));

expect_problems('unknown payment via',
    [ [ 'Airbnb', '100 USD', 'buyer@example.com' ] ],
    [ [ 'NOT_ALLOWED_PAYMENT_VIA', { payment_via => 'CREDIT_CARD', allowed => ['USER_WALLET'] }, 'payment.payment_via' ] ],
    payment => payment(payment_via => 'CREDIT_CARD'));

# The supported pairs: usable coin/network pairs of USER_WALLET (no LTC, no USDT on Ethereum).
my @SUPPORTED = (
    (map { { coin => 'USDC', network => $_ } } 'Solana', 'Polygon (Matic)', 'Base', 'Ethereum'),
    (map { { coin => 'USDT', network => $_ } } 'Polygon (Matic)', 'Ton'),
    (map { { coin => 'BTC', network => $_ } } 'Mainnet', 'Lightning'),
    (map { { coin => 'ETH', network => $_ } } 'Ethereum', 'Base'),
    { coin => 'GRAM', network => 'Ton' },
);
expect_problems('unknown coin',
    [ [ 'Airbnb', '100 USD', 'buyer@example.com' ] ],
    [ [ 'UNSUPPORTED_PROTOCOL_COIN_COMBINATION', { coin => 'DOGE', payment_via => 'USER_WALLET', supported => \@SUPPORTED }, 'payment.coin' ] ],
    payment => payment(coin => 'DOGE', network => 'Dogecoin'));

expect_problems('coin on a network it does not use (USDC on Lightning)',
    [ [ 'Airbnb', '100 USD', 'buyer@example.com' ] ],
    [ [ 'UNSUPPORTED_PROTOCOL_COIN_COMBINATION', { coin => 'USDC', network => 'Lightning', supported => \@SUPPORTED }, 'payment.network' ] ],
    payment => payment(network => 'Lightning'));

# ---- several problems in one request ---------------------------------------------------------
expect_problems('five kinds of problem at once',
    [ [ 'GameStop', '10 USD', 'buyer@example.com' ],
      [ 'No Such Brand', '10 USD', 'buyer@example.com' ],
      [ 'AT&T', '10 USD', 'buyer@example.com', kind => 'mobile_recharge' ],
      [ 'USA eSIM', '1 GB 7 days', '+14155551234', kind => 'mobile_recharge' ],
      map { [ 'Airbnb', '25 USD', 'buyer@example.com' ] } 1 .. 6 ],
    [ [ 'OUT_OF_STOCK', { brand_name => 'GameStop' }, 'D0.brand_name' ],
      [ 'NOT_AVAILABLE_PRODUCT', { brand_name => 'No Such Brand' }, 'D1.brand_name' ],
      [ 'INVALID_BENEFICIARY_ACCOUNT', { expected => 'phone', brand_name => 'AT&T' }, 'D2.beneficiary_account' ],
      [ 'INVALID_BENEFICIARY_ACCOUNT', { expected => 'email', brand_name => 'USA eSIM' }, 'D3.beneficiary_account' ],
      [ 'NOT_ALLOWED_PAYMENT_VIA', { allowed => ['USER_WALLET'] }, 'payment.payment_via' ] ],
    payment => payment(payment_via => 'BINANCE_PAY'));

# Over the count the body is refused whatever its catalogs say: none is
# looked at (issue #13), the payment still is (it costs nothing).
expect_problems('over the count: decided without the catalogs',
    [ [ 'GameStop', '10 USD', 'buyer@example.com' ],
      [ 'No Such Brand', '10 USD', 'buyer@example.com' ],
      map { [ 'Airbnb', '25 USD', 'buyer@example.com' ] } 1 .. 9 ],
    [ [ 'PRODUCT_COUNT_EXCEEDED', { max => 10, count => 11 }, 'deliveries' ],
      [ 'NOT_ALLOWED_PAYMENT_VIA', { allowed => ['USER_WALLET'] }, 'payment.payment_via' ] ],
    payment => payment(payment_via => 'BINANCE_PAY'));

expect_problems('catalog problems in two countries and an unsupported coin',
    [ [ 'EE', '10 GBP', 'buyer@example.com', kind => 'mobile_recharge', cc => 'GB' ],
      [ 'Tello', '10 USD', '+14155551234', kind => 'mobile_recharge' ] ],
    [ [ 'INVALID_BENEFICIARY_ACCOUNT', { country_code => 'GB', expected => 'phone' }, 'D0.beneficiary_account' ],
      [ 'OUT_OF_STOCK', { brand_name => 'Tello', country_code => 'US' }, 'D1.brand_name' ],
      [ 'UNSUPPORTED_PROTOCOL_COIN_COMBINATION', { coin => 'DOGE' }, 'payment.coin' ] ],
    payment => payment(coin => 'DOGE'));

# ---- suspended coin / network: top-level 422 in the upstream's shape --------------------------
sub expect_suspended {
    my ($name, $items, $detail, $more, %x) = @_;
    my ($cb, $vb) = both($items, %x);
    upstream_posts();
    for my $rt ([ 'orders', $cb ], [ 'orders/validations', $vb ]) {
        my ($r, $j) = post_json("/api/$rt->[0]", $rt->[1]);
        is($r->{status}, 422, "$name: POST $rt->[0] answers 422") or diag $r->{content};
        is($j->{status}, 422, "$name: $rt->[0] body status 422");
        is($j->{detail}, $detail, "$name: $rt->[0] detail $detail");
        ok(!exists $j->{problems}, "$name: $rt->[0] no problems list (a top-level error)");
        is_deeply($j->{moreDetails}, $more, "$name: $rt->[0] moreDetails") or diag $r->{content};
    }
    is(scalar @{ upstream_posts() }, 0, "$name: no upstream call");
}
expect_suspended('suspended coin (LTC)', [ [ 'Airbnb', '100 USD', 'buyer@example.com' ] ],
    'SUSPENDED_COIN', { field => 'payment.coin', coin => 'LTC' }, payment => payment(coin => 'LTC', network => 'Mainnet'));
expect_suspended('suspended network (USDT on Ethereum)', [ [ 'Airbnb', '100 USD', 'buyer@example.com' ] ],
    'SUSPENDED_NETWORK', { field => 'payment.network', coin => 'USDT', network => 'Ethereum' },
    payment => payment(coin => 'USDT', network => 'Ethereum'));
expect_suspended('a suspension outranks the problems', [ [ 'GameStop', '10 USD', '+14155551234' ] ],
    'SUSPENDED_COIN', { field => 'payment.coin', coin => 'LTC' }, payment => payment(coin => 'LTC', network => 'Mainnet'));

# ---- structural failures: 400 INVALID_REQUEST naming the field (more in t/31-malformed.t) ------
{
    my @cases = (
        [ 'user.email missing', sub { delete $_[0]{user}{email} }, 'user.email' ],
        [ 'quantity zero', sub { $_[0]{deliveries}[0]{quantity} = 0 }, 'deliveries[0].quantity' ],
        [ 'second delivery without beneficiary', sub { push @{ $_[0]{deliveries} }, delivery_create('Airbnb', '25 USD', undef) },
          'deliveries[1].deliverable.beneficiary_account' ],
        [ 'network missing on create', sub { delete $_[0]{payment}{network} }, 'payment.network' ],
        [ 'country outside the 233', sub { $_[0]{deliveries}[0]{deliverable}{country_code} = 'XX' }, 'deliveries[0].deliverable.country_code' ],
    );
    for my $c (@cases) {
        my ($name, $mut, $field) = @$c;
        my ($cb) = both([ [ 'Airbnb', '100 USD', 'buyer@example.com' ] ]);
        $mut->($cb);
        upstream_posts();
        my ($r, $j) = post_json('/api/orders', $cb);
        is($r->{status}, 400, "$name: 400") or diag $r->{content};
        is($j->{detail}, 'INVALID_REQUEST', "$name: INVALID_REQUEST");
        is($j->{moreDetails}{field}, $field, "$name: names $field") or diag $r->{content};
        is(scalar @{ upstream_posts() }, 0, "$name: no upstream call");
    }
}

# ---- valid requests go upstream byte for byte ------------------------------------------------
sub forwarded_unchanged {
    my ($name, $path, $bytes, %o) = @_;
    upstream_posts();
    my ($r, $j) = post_raw("/api/$path", $bytes);
    is($r->{status}, 200, "$name: answered 200 by the upstream") or diag $r->{content};
    my $posts = upstream_posts();
    is(scalar @$posts, 1, "$name: exactly one upstream POST");
    my $rec = $posts->[0] or return;
    is($rec->{path}, "/v5/$path", "$name: to /v5/$path");
    is($rec->{body_length}, length $bytes, "$name: same length upstream");
    ok(encode_utf8($rec->{body}) eq $bytes, "$name: the upstream got the body byte for byte")
        or diag "sent: $bytes\ngot:  " . encode_utf8($rec->{body});
    like($rec->{headers}{'content-type'} // '', qr{^application/json}, "$name: upstream Content-Type JSON");
    if ($path eq 'orders') {
        ok($j && $j->{order_id} && $j->{wallet_address}, "$name: the order came back") or diag $r->{content};
    } else {
        ok($j && exists $j->{problems} && !$j->{problems}, "$name: upstream found no problem") or diag $r->{content};
    }
    return $j;
}

forwarded_unchanged('compact create body', 'orders',
    $J->encode(create_body([ delivery_create('Airbnb', '100 USD', 'buyer@example.com') ])));

forwarded_unchanged('create body with odd whitespace, unusual key order, escapes and extra members', 'orders',
    qq(\r\n\t{ "user" :{"has_accepted_newsletter":true ,\n "email":"buyer+\\u0074ag\@example.com"},\n)
  . qq(   "lang" : "pt-BR",  "x_storefront_note" : {"a":[1, 2.50, -0.0, 1e2, null, "\\u00e9\\"\\\\/"]},\n)
  . qq("payment":{"network":"Solana","coin":"USDC","payment_via":"USER_WALLET","type":"via"},)
  . qq(\t"deliveries":[ {"deliverable":{"beneficiary_account":"gift\@example.com","denomination":"50 USD",)
  . qq("country_code":"US","brand_name":"\\u0041irbnb"},"quantity":1,"kind":"giftcard"},)
  . qq({"quantity":2,"kind":"mobile_recharge","deliverable":{"brand_name":"AT&T","country_code":"US",)
  . qq("denomination":"10 USD","beneficiary_account":"+14155551234"}} ] ,)
  . qq("acquisition":{"utm_source":"caf\xc3\xa9 \xe2\x98\x95","utm_campaign":"\\ud83d\\ude00"}}  \n\n));

forwarded_unchanged('range product with a numeric product_value, catalog kinds over request kinds', 'orders',
    qq({"deliveries":[{"kind":"giftcard","quantity":1,"deliverable":{"brand_name":"Amazon.com","country_code":"US",)
  . qq("denomination":"range","product_value":150.00,"beneficiary_account":"a\@example.com"}},)
  . qq({"kind":"giftcard","quantity":1,"deliverable":{"brand_name":"USA eSIM","country_code":"US",)
  . qq("denomination":"1 GB 7 days","beneficiary_account":"esim\@example.com"}},)
  . qq({"kind":"giftcard","quantity":1,"deliverable":{"brand_name":"EE","country_code":"GB",)
  . qq("denomination":"10 GBP","beneficiary_account":"+447700900123"}}],)
  . qq("payment":{"type":"via","payment_via":"USER_WALLET","coin":"USDC","network":"Solana"},)
  . qq("user":{"email":"buyer\@example.com"},"lang":"en","promo_code":null,"refund_wallet_address":null}));

forwarded_unchanged('validations body with odd formatting', 'orders/validations',
    qq({\n  "lang":"en" , "deliveries" : [\n    { "localized_denomination" : "\$100", "denomination":"100 USD",\n)
  . qq(      "country_code":"US", "brand_name":"Airbnb", "beneficiary_account":"buyer\@example.com" },\n)
  . qq(    {"brand_name":"Verizon","country_code":"US","denomination":"25 USD","beneficiary_account":"+12025550123"}\n  ],\n)
  . qq(  "payment" : { "coin":"BTC", "payment_via":"USER_WALLET", "type":"via", "network":"Lightning" },\n)
  . qq(  "email":"buyer\@example.com"\n}\n));

forwarded_unchanged('validations body without network and email (optional there)', 'orders/validations',
    $J->encode({ payment => { type => 'via', payment_via => 'USER_WALLET', coin => 'ETH' },
        deliveries => [ delivery_val('Steam', '20 USD', 'gamer@example.com') ] }));

# The nft_giftcard kind has no known beneficiary rule: left to the upstream.
forwarded_unchanged('nft gift card: beneficiary not judged locally', 'orders/validations',
    $J->encode(val_body([ delivery_val('Crypto Voucher', '25 USD', 'buyer@example.com') ])));

# Exactly at CryptorefillsMaxProducts: passes.
{
    upstream_posts();
    my ($r, $j) = post_json('/api2/orders/validations', val_body([ map { delivery_val('Airbnb', '25 USD', "b$_\@example.com") } 1 .. 3 ]));
    is($r->{status}, 200, 'exactly CryptorefillsMaxProducts deliveries: 200') or diag $r->{content};
    ok(!$j->{problems}, '... no problem');
    is(scalar @{ upstream_posts() }, 1, '... and it went upstream');
}

# The upstream's own problems (those the module cannot know) are relayed as they come.
{
    upstream_posts();
    my ($r, $j) = post_json('/api/orders/validations',
        { %{ val_body([ delivery_val('Airbnb', '100 USD', 'buyer@example.com') ]) }, email => 'problem+daily_spending_limit_exceeded@example.com' });
    is($r->{status}, 200, 'upstream problem: relayed with its 200');
    is($j->{problems}[0]{problem}, 'DAILY_SPENDING_LIMIT_EXCEEDED', '... and its problems list') or diag $r->{content};
    is(scalar @{ upstream_posts() }, 1, '... after one upstream call');
}

# A server whose store has no catalog yet: the order goes upstream (nothing
# to judge it by), and each child then remembers the miss for a second
# rather than asking the shared store again under its lock -- until any
# child stores a catalog: the very next order is judged by it.
{
    my $fresh = CrTest->start(sandbox => $sb);
    my $bad = $J->encode(val_body([ delivery_val('Airbnb', '100 USD', 'not-an-email') ]));
    my $post = sub {
        my $r = $ua->request(POST => $fresh->url('/api/orders/validations'),
            { content => $bad, headers => { 'Content-Type' => 'application/json' } });
        return ($r, eval { decode_json($r->{content}) });
    };
    upstream_posts();
    $post->() for 1 .. 6;      # over both children, each noting the miss
    is(scalar @{ upstream_posts() }, 6, 'no catalog cached: the orders go upstream');
    is($ua->get($fresh->url('/api/brands?country_code=US'))->{status}, 200, 'a shopper browses: the catalog is stored');
    my $local = 0;
    for (1 .. 6) {
        my ($r, $j) = $post->();
        $local++ if ($j->{problems}[0]{problem} // '') eq 'INVALID_BENEFICIARY_ACCOUNT';
    }
    is($local, 6, '... every next order is judged by it at once, in every child');
    is(scalar @{ upstream_posts() }, 0, '... without an upstream call');
    $fresh->stop;
}

$httpd->stop;
$sb->stop;
done_testing;
