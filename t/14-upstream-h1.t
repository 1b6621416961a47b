# SPDX-License-Identifier: Apache-2.0
# The module's own HTTP/1.1 client (cr_h1client, issue #16), which carries
# every collected exchange with a plain http:// upstream: answers framed and
# encoded the ways an upstream may choose (chunked with extensions and
# trailers, gzip, gzip + chunked, a byte at a time), and its failure paths
# against real Apache and the sandbox (its "raw" fault writes verbatim bytes):
# a reset mid-answer, an answer over the cap (announced or after decoding),
# a malformed head, a dribbling upstream that runs into the timeout, an
# upstream that closes idle keep-alive connections, and a reused connection
# dropped before the answer (a GET retried once on a new connection, a POST
# order never sent twice).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use CrFixtures qw(%CREATE %VALIDATE);
use HTTP::Tiny;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use IO::Compress::Gzip qw(gzip $GzipError);
use Time::HiRes qw(time sleep);

my $TIMEOUT = 2;     # CryptorefillsTimeout
my $SLACK = 5;       # 2 shared cores, other tests running
my $JSON = JSON::PP->new->utf8->canonical;

my $sb = CrSandbox->start(keep_alive_timeout => 3);
my $httpd = CrTest->start(sandbox => $sb, conf => "CryptorefillsTimeout $TIMEOUT\n");
my $http = HTTP::Tiny->new(timeout => 30);

my $PRICE = '/v4/products/price';
my $PRICE_URL = '/api/products/price?brand_name=Airbnb&country_code=US&face_value=100&coin=USDC';
sub price {
    # The price route is never cached: every request goes upstream.
    my $t0 = time;
    my $r = $http->get($httpd->url($PRICE_URL));
    $r->{elapsed} = time - $t0;
    $r->{json} = eval { $JSON->decode($r->{content}) };
    return $r;
}

# One raw answer for the next price request.
sub raw_price {
    my (%f) = @_;
    my $bytes = delete $f{bytes};
    my $id = $sb->fault(match => $PRICE, method => 'GET', mode => 'raw', times => 1,
                        raw_b64 => encode_base64($bytes, ''), %f);
    my $r = price();
    $sb->remove_fault($id);
    return $r;
}

sub head { my ($status, @h) = @_; join('', "HTTP/1.1 $status\r\n", map { "$_\r\n" } @h) . "\r\n" }
sub chunked {
    my ($body, @sizes) = @_;
    my ($out, $off, $i) = ('', 0, 0);
    while ($off < length $body) {
        my $k = $sizes[$i++ % @sizes];
        my $piece = substr($body, $off, $k);
        $off += length $piece;
        $out .= sprintf("%x%s\r\n%s\r\n", length $piece, $i % 3 ? '' : ';ext=1;q="a b"', $piece);
    }
    return $out . "0\r\nX-Trailer: done\r\n\r\n";
}
sub gz { my ($in) = @_; my $out; gzip(\$in => \$out) or die $GzipError; $out }

# A sizeable JSON answer: a catalog-sized document compresses well.
my $doc = { price => { amount => '100.00', currency => 'USD' },
            items => [ map { { id => $_, name => "product $_", note => 'x' x 40 } } 1 .. 3000 ] };
my $body = $JSON->encode($doc);
cmp_ok(length $body, '>', 200_000, 'a ' . length($body) . '-byte answer');

# ------------------------------------------------------------ framings
{
    my $r = price();
    is($r->{status}, 200, 'price from the sandbox: 200') or diag $r->{content};

    $r = raw_price(bytes => head('200 OK', 'Content-Type: application/json', 'Transfer-Encoding: chunked')
                            . chunked($body, 1, 7, 4096, 65536, 3));
    is($r->{status}, 200, 'chunked answer (extensions, trailer): 200');
    is_deeply($r->{json}, $doc, '... the whole document');

    my $z = gz($body);
    cmp_ok(length $z, '<', length($body) / 5, 'gzip shrinks it to ' . length($z) . ' bytes');
    $r = raw_price(bytes => head('200 OK', 'Content-Type: application/json', 'Content-Encoding: gzip',
                                 'Content-Length: ' . length $z) . $z, step => 1000);
    is($r->{status}, 200, 'gzip answer (Content-Length), read in 1000-byte pieces: 200');
    is_deeply($r->{json}, $doc, '... decoded');

    $r = raw_price(bytes => head('200 OK', 'Content-Type: application/json', 'Content-Encoding: gzip',
                                 'Transfer-Encoding: chunked') . chunked($z, 100, 3, 8192));
    is($r->{status}, 200, 'gzip + chunked answer: 200');
    is_deeply($r->{json}, $doc, '... decoded');

    my $small = '{"price":{"amount":"1.00","currency":"USD"}}';
    $r = raw_price(bytes => head('200 OK', 'Content-Type: application/json', 'Transfer-Encoding: chunked')
                            . chunked($small, 5), step => 1, ms => 1);
    is($r->{status}, 200, 'chunked answer dribbled a byte at a time: 200');
    is($r->{content}, $small, '... whole');

    $r = raw_price(bytes => "HTTP/1.1 100 Continue\r\n\r\n"
                            . head('200 OK', 'Content-Type: application/json', 'Content-Length: ' . length $small) . $small);
    is($r->{status}, 200, 'an interim 100 before the answer: 200');
    is($r->{content}, $small, '... the final answer');

    $r = raw_price(bytes => "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n$small");
    is($r->{status}, 200, 'HTTP/1.0 answer ending with the connection: 200');
    is($r->{content}, $small, '... whole');

    $r = price();
    is($r->{status}, 200, 'a normal answer after all that: 200');
}

# ------------------------------------------------------------ failures
{
    my $r = raw_price(bytes => head('200 OK', 'Content-Type: application/json', 'Content-Length: 100000')
                               . substr($body, 0, 30000), end => 'reset');
    is($r->{status}, 502, 'connection reset mid-answer: 502');
    like($r->{json} && $r->{json}{detail} // '', qr/^UPSTREAM_/, '... UPSTREAM_ detail');

    $r = raw_price(bytes => head('200 OK', 'Content-Type: application/json', 'Content-Length: 9437184'), end => 'keep');
    is($r->{status}, 502, 'Content-Length over the 8 MiB cap: 502');
    cmp_ok($r->{elapsed}, '<', $TIMEOUT, '... at once, not after the timeout');

    my $bomb = gz('{"pad":"' . (' ' x (9 * 1024 * 1024)) . '"}');
    cmp_ok(length $bomb, '<', 100_000, 'a gzip answer of ' . length($bomb) . ' bytes decoding to 9 MiB');
    $r = raw_price(bytes => head('200 OK', 'Content-Type: application/json', 'Content-Encoding: gzip',
                                 'Content-Length: ' . length $bomb) . $bomb);
    is($r->{status}, 502, '... over the cap once decoded: 502');

    $r = raw_price(bytes => head('200 OK', 'Content-Type: application/json', 'Content-Encoding: gzip',
                                 'Content-Length: 20') . ('not gzip at all, no.'));
    is($r->{status}, 502, 'a broken gzip answer: 502');

    $r = raw_price(bytes => "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n folded: yes\r\nContent-Length: 2\r\n\r\n{}");
    is($r->{status}, 502, 'obs-fold in the answer head: 502');

    $r = raw_price(bytes => head('200 OK', 'Content-Length: 2', 'Content-Length: 3') . '{} ');
    is($r->{status}, 502, 'conflicting Content-Length: 502');

    $r = raw_price(bytes => head('200 OK', 'Transfer-Encoding: chunked') . "zz\r\n{}\r\n0\r\n\r\n");
    is($r->{status}, 502, 'invalid chunk size: 502');

    # Slow: each byte in time, the whole answer not: the timeout is for the
    # whole exchange, not per read.
    $r = raw_price(bytes => head('200 OK', 'Content-Type: application/json', 'Content-Length: 200') . ('{' x 200),
                   step => 1, ms => 50);
    is($r->{status}, 504, 'a dribbling answer slower than CryptorefillsTimeout: 504');
    is($r->{json} && $r->{json}{detail}, 'UPSTREAM_TIMEOUT', '... UPSTREAM_TIMEOUT');
    cmp_ok($r->{elapsed}, '>=', $TIMEOUT * 0.9, '... after the timeout');
    cmp_ok($r->{elapsed}, '<', $TIMEOUT + $SLACK, '... not much later');

    $r = price();
    is($r->{status}, 200, 'fine again afterwards');
}

# ------------------------------------------------------------ connection reuse
{
    # One keep-alive connection serves consecutive requests (one browser
    # connection, one child answering them).
    my $ka = HTTP::Tiny->new(timeout => 30, keep_alive => 1);
    my $url = sub { $httpd->url($PRICE_URL) };
    is($ka->get($url->())->{status}, 200, 'warm-up request');
    my $before = $sb->requests(path => $PRICE)->[-1]{connection};
    is($ka->get($url->())->{status}, 200, 'a second request');
    is($sb->requests(path => $PRICE)->[-1]{connection}, $before, '... on the same upstream connection');

    # The upstream closes idle connections after 3 s (its keep-alive
    # timeout): the next request notices and opens a new one.
    sleep 3.5;
    my $r = $ka->get($url->());
    is($r->{status}, 200, 'after the upstream closed the idle connection: 200');
    isnt($sb->requests(path => $PRICE)->[-1]{connection}, $before, '... on a new connection');

    # The upstream drops a reused connection when the request arrives (no
    # answer byte): the GET goes again, once, on a new connection.
    $before = $sb->requests(path => $PRICE)->[-1]{connection};
    my $count = scalar @{ $sb->requests(path => $PRICE) };
    my $id = $sb->fault(match => $PRICE, method => 'GET', mode => 'drop', times => 1);
    $r = $ka->get($url->());
    $sb->remove_fault($id);
    is($r->{status}, 200, 'reused connection dropped before the answer: the GET is retried, 200');
    my $reqs = $sb->requests(path => $PRICE);
    is(scalar @$reqs - $count, 2, '... sent twice: once dropped, once answered');
    is($reqs->[-2]{connection}, $before, '... first on the reused connection');
    isnt($reqs->[-1]{connection}, $before, '... then on a new one');

    # Dropped twice: the retry is not retried.
    $id = $sb->fault(match => $PRICE, method => 'GET', mode => 'drop', times => 2);
    $count = scalar @{ $sb->requests(path => $PRICE) };
    $r = $ka->get($url->());
    $sb->remove_fault($id);
    is($r->{status}, 502, 'dropped on the reused and on the new connection: 502');
    is(scalar @{ $sb->requests(path => $PRICE) } - $count, 2, '... sent twice, not more');

    # POST orders: never on a reused connection, never sent twice, even
    # when the connection is dropped before any answer.
    is($ka->get($url->())->{status}, 200, 'a warm connection again');
    $id = $sb->fault(regex => '^/v5/orders$', method => 'POST', mode => 'drop', times => 1);
    my $orders = scalar @{ $sb->requests(path => '/v5/orders', method => 'POST') };
    $r = $ka->post($httpd->url('/api/orders'), { content => $JSON->encode(\%CREATE),
        headers => { 'Content-Type' => 'application/json', 'Idempotency-Key' => "h1-drop-$$" } });
    $sb->remove_fault($id);
    is($r->{status}, 502, 'POST orders dropped without an answer: 502');
    sleep 0.3;
    my $posts = $sb->requests(path => '/v5/orders', method => 'POST');
    is(scalar @$posts - $orders, 1, '... sent exactly once');
    is($posts->[-1]{kept_alive} ? 1 : 0, 0, '... on a new connection');
    $r = $ka->post($httpd->url('/api/orders'), { content => $JSON->encode(\%CREATE),
        headers => { 'Content-Type' => 'application/json', 'Idempotency-Key' => "h1-ok-$$" } });
    is($r->{status}, 200, 'POST orders without a fault: 200') or diag $r->{content};
    $posts = $sb->requests(path => '/v5/orders', method => 'POST');
    is(scalar @$posts - $orders, 2, '... one more upstream POST');
    is($posts->[-1]{kept_alive} ? 1 : 0, 0, '... on a new connection too');

    # POST validations is no order: a reused connection dropped before the
    # answer is retried like a GET (what libcurl did).
    is($ka->get($url->())->{status}, 200, 'a warm connection again');
    $id = $sb->fault(match => '/v5/orders/validations', method => 'POST', mode => 'drop', times => 1);
    my $vals = scalar @{ $sb->requests(path => '/v5/orders/validations') };
    $r = $ka->post($httpd->url('/api/orders/validations'), { content => $JSON->encode(\%VALIDATE),
        headers => { 'Content-Type' => 'application/json' } });
    $sb->remove_fault($id);
    is($r->{status}, 200, 'POST validations dropped on a reused connection: retried, 200') or diag $r->{content};
    is(scalar @{ $sb->requests(path => '/v5/orders/validations') } - $vals, 2, '... sent twice');
}

# ------------------------------------------------------------ what goes upstream
{
    price();
    my $q = $sb->requests(path => $PRICE)->[-1];
    is($q->{headers}{'accept-encoding'}, 'gzip', 'Accept-Encoding: gzip upstream');
    like($q->{headers}{'user-agent'} // '', qr{^mod_cryptorefills/\S+ \(libcurl/}, 'the same User-Agent as before');
    like($q->{headers}{host} // '', qr/^127\.0\.0\.1:\d+$/, 'Host with the port');
    ok(defined $q->{headers}{'x-cr-version'}, 'X-Cr-Version sent');
    ok(!defined $q->{headers}{expect}, 'no Expect');
}

$httpd->stop;
done_testing;
