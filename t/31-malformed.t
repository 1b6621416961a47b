# SPDX-License-Identifier: Apache-2.0
# Malformed checkout bodies (issue #4): a table of broken requests, each answered
# locally with a JSON 400 / 413 / 415 in the contract's error shape, never with
# an upstream call, and without a crash or an unexpected error-log line.
#
# Requests are written on a raw socket so that the test controls every byte:
# no Content-Type, chunked bodies, NUL bytes, invalid UTF-8, a 1 MB string.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use IO::Socket::INET;
use JSON::PP;

$SIG{PIPE} = 'IGNORE';
my $J = JSON::PP->new->canonical->utf8;

my $sb = CrSandbox->start;
my $httpd = CrTest->start(sandbox => $sb);

# POST on a fresh connection; returns { status, headers => {lc => v}, body }.
sub raw_post {
    my ($path, $body, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $httpd->port, Proto => 'tcp', Timeout => 30)
        or die "connect: $!";
    my $head = "POST $path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nUser-Agent: cr-malformed-test\r\n";
    $head .= "Content-Type: $o{ct}\r\n" if defined $o{ct};
    $head .= "$_: $o{headers}{$_}\r\n" for sort keys %{ $o{headers} || {} };
    if ($o{chunked}) {
        $head .= "Transfer-Encoding: chunked\r\n\r\n";
        syswrite $s, $head;
        for (my $i = 0; $i < length $body; $i += 16384) {
            my $part = substr $body, $i, 16384;
            last unless defined syswrite $s, sprintf("%x\r\n", length $part) . $part . "\r\n";
        }
        syswrite $s, "0\r\n\r\n";
    } else {
        $head .= 'Content-Length: ' . length($body) . "\r\n\r\n";
        my $all = $head . $body;
        for (my $off = 0; $off < length $all;) {
            my $n = syswrite $s, $all, 65536, $off;
            last unless defined $n;    # the server may answer 413 and stop reading
            $off += $n;
        }
    }
    shutdown $s, 1 unless $o{keep_write_open};
    my $resp = '';
    while (1) {
        my $n = sysread $s, my $buf, 65536;
        last unless $n;
        $resp .= $buf;
    }
    close $s;
    my ($hdr, $b) = split /\r\n\r\n/, $resp, 2;
    my ($status) = ($hdr // '') =~ m{^HTTP/1\.\d (\d{3})};
    my %h;
    for (split /\r\n/, $hdr // '') { $h{ lc $1 } = $2 if /^([^:]+):\s*(.*)$/ }
    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        my $out = '';
        while ($b =~ s/^([0-9a-fA-F]+)\r\n//) { my $n = hex $1; last unless $n; $out .= substr($b, 0, $n, ''); $b =~ s/^\r\n// }
        $b = $out;
    }
    return { status => $status // 0, headers => \%h, body => $b // '' };
}

# ---- a valid body of each shape, and ways to break it --------------------------------------
sub create_data {
    return { deliveries => [ { kind => 'giftcard', quantity => 1, deliverable => {
                brand_name => 'Airbnb', country_code => 'US', denomination => '100 USD',
                beneficiary_account => 'buyer@example.com' } } ],
        payment => { type => 'via', payment_via => 'USER_WALLET', coin => 'USDC', network => 'Solana' },
        user => { email => 'buyer@example.com', has_accepted_newsletter => JSON::PP::true },
        lang => 'en', acquisition => { utm_source => 'cr-tests' } };
}
sub val_data {
    return { email => 'buyer@example.com',
        payment => { type => 'via', payment_via => 'USER_WALLET', coin => 'USDC', network => 'Solana' },
        deliveries => [ { beneficiary_account => 'buyer@example.com', brand_name => 'Airbnb', country_code => 'US',
            denomination => '100 USD', localized_denomination => '$100' } ],
        lang => 'en' };
}
my $VALID_C = $J->encode(create_data());
my $VALID_V = $J->encode(val_data());

# A create body changed by $mut; a value set to \'RAW' is written as that raw JSON text.
sub cmut {
    my ($mut, $base) = @_;
    my $d = $base ? $base->() : create_data();
    $mut->($d);
    my @raw;
    my $walk;
    $walk = sub {
        my $x = shift;
        if (ref $x eq 'HASH') { for (keys %$x) { if (ref $x->{$_} eq 'SCALAR') { push @raw, ${ $x->{$_} }; $x->{$_} = "\x{1}RAW$#raw\x{1}" } else { $walk->($x->{$_}) } } }
        elsif (ref $x eq 'ARRAY') { for (@$x) { if (ref $_ eq 'SCALAR') { push @raw, $$_; $_ = "\x{1}RAW$#raw\x{1}" } else { $walk->($_) } } }
    };
    $walk->($d);
    undef $walk;
    my $s = $J->encode($d);
    $s =~ s/"\\u0001RAW(\d+)\\u0001"/$raw[$1]/g;
    return $s;
}
sub vmut { cmut($_[0], \&val_data) }
sub dv { $_[0]{deliveries}[0]{deliverable} }

my $deep_arrays  = ('[' x 10_000) . (']' x 10_000);
my $deep_objects = ('{"a":' x 10_000) . '1' . ('}' x 10_000);
my $mb_string    = '{"lang":"en","acquisition":{"note":"' . ('x' x 1_048_576) . '"}}';
(my $with_nul_raw = $VALID_C) =~ s/"Airbnb"/"Air\x00bnb"/;
(my $nul_between = $VALID_C) =~ s/,"lang"/,\x00"lang"/;

# [ name, route (c: orders, v: orders/validations, b: both), body, expected status,
#   { reason => qr//, field => '...', ct => content type (default application/json), chunked => 1 } ]
my $APPJ = 'application/json';
my @T = (
    # --- syntax: never valid JSON ---
    [ 'empty body', 'b', '', 400, { reason => qr/empty/ } ],
    [ 'white space only', 'b', " \r\n\t ", 400, { reason => qr/empty|truncated/ } ],
    [ 'a lone {', 'b', '{', 400, { reason => qr/truncated/ } ],
    [ 'truncated inside deliveries', 'b', '{"deliveries":[', 400, { reason => qr/truncated/ } ],
    [ 'valid body cut in the middle of a string', 'c', substr($VALID_C, 0, index($VALID_C, 'Airbnb') + 3), 400, { reason => qr/truncated/ } ],
    [ 'valid body without its last brace', 'c', substr($VALID_C, 0, -1), 400, { reason => qr/truncated/ } ],
    [ 'truncated escape', 'b', '{"lang":"en\\', 400, { reason => qr/truncated/ } ],
    [ 'truncated \\u escape', 'b', '{"lang":"\\u00', 400, { reason => qr/truncated/ } ],
    [ 'null', 'b', 'null', 400, { reason => qr/JSON object/ } ],
    [ 'an array', 'b', '[]', 400, { reason => qr/JSON object/ } ],
    [ 'a string', 'b', '"order"', 400, { reason => qr/JSON object/ } ],
    [ 'a number', 'b', '42', 400, { reason => qr/JSON object/ } ],
    [ 'true', 'b', 'true', 400, { reason => qr/JSON object/ } ],
    [ 'trailing comma in an object', 'b', '{"lang":"en",}', 400, {} ],
    [ 'trailing comma in an array', 'b', '{"deliveries":[{},]}', 400, {} ],
    [ 'single quotes', 'b', "{'lang':'en'}", 400, {} ],
    [ 'unquoted key', 'b', '{lang:"en"}', 400, {} ],
    [ 'a comment', 'b', '{"lang":"en" /* hi */}', 400, {} ],
    [ 'two documents', 'b', '{} {}', 400, { reason => qr/trailing data/ } ],
    [ 'garbage after a valid body', 'c', "$VALID_C;", 400, { reason => qr/trailing data/ } ],
    [ 'NaN', 'b', '{"n":NaN}', 400, {} ],
    [ 'Infinity', 'b', '{"n":-Infinity}', 400, {} ],
    [ 'leading zero', 'b', '{"n":012}', 400, { reason => qr/number|expected/ } ],
    [ 'hex number', 'b', '{"n":0x1F}', 400, {} ],
    [ 'plus sign', 'b', '{"n":+1}', 400, {} ],
    [ 'bare fraction', 'b', '{"n":.5}', 400, {} ],
    [ 'dangling point', 'b', '{"n":1.}', 400, { reason => qr/number/ } ],
    [ 'dangling exponent', 'b', '{"n":1e}', 400, { reason => qr/number/ } ],
    [ 'misspelt literal', 'b', '{"n":tru}', 400, { reason => qr/literal/ } ],
    [ 'uppercase literal', 'b', '{"n":TRUE}', 400, {} ],
    [ 'missing colon', 'b', '{"lang" "en"}', 400, { reason => qr/':'/ } ],
    [ 'missing comma', 'b', '{"a":1 "b":2}', 400, {} ],
    [ 'byte order mark', 'c', "\xEF\xBB\xBF$VALID_C", 400, { reason => qr/byte order mark/ } ],
    [ 'raw NUL byte in a string', 'c', $with_nul_raw, 400, { reason => qr/NUL/ } ],
    [ 'raw NUL byte between members', 'c', $nul_between, 400, {} ],
    [ 'escaped NUL in brand_name', 'c', cmut(sub { dv($_[0])->{brand_name} = \'"Air\\u0000bnb"' }), 400, { reason => qr/NUL/ } ],
    [ 'invalid UTF-8 (0xFF)', 'c', cmut(sub { $_[0]{user}{email} = \qq("buy\xFFer\@example.com") }), 400, { reason => qr/UTF-8/ } ],
    [ 'overlong UTF-8 (C0 AF)', 'c', cmut(sub { dv($_[0])->{beneficiary_account} = \qq("a\xC0\xAF\@example.com") }), 400, { reason => qr/UTF-8/ } ],
    [ 'UTF-8 encoded surrogate (ED A0 80)', 'c', cmut(sub { $_[0]{acquisition}{utm_source} = \qq("\xED\xA0\x80") }), 400, { reason => qr/UTF-8/ } ],
    [ 'UTF-8 past U+10FFFF (F4 90 80 80)', 'v', vmut(sub { $_[0]{deliveries}[0]{localized_denomination} = \qq("\xF4\x90\x80\x80") }), 400, { reason => qr/UTF-8/ } ],
    [ 'UTF-8 sequence cut short', 'c', cmut(sub { dv($_[0])->{brand_name} = \qq("Airbnb\xE2\x82") }), 400, { reason => qr/UTF-8/ } ],
    [ 'Latin-1 body', 'c', cmut(sub { $_[0]{acquisition}{utm_source} = \qq("caf\xE9") }), 400, { reason => qr/UTF-8/ } ],
    [ 'lone high surrogate escape', 'c', cmut(sub { $_[0]{acquisition}{utm_source} = \'"\\ud800x"' }), 400, { reason => qr/surrogate/ } ],
    [ 'lone low surrogate escape', 'c', cmut(sub { $_[0]{acquisition}{utm_source} = \'"\\udc00"' }), 400, { reason => qr/surrogate/ } ],
    [ 'invalid escape', 'c', cmut(sub { $_[0]{lang} = \'"\\x65n"' }), 400, { reason => qr/escape/ } ],
    [ 'invalid \\u escape', 'c', cmut(sub { $_[0]{lang} = \'"\\u00G5"' }), 400, { reason => qr/escape/ } ],
    [ 'raw control character in a string', 'c', cmut(sub { $_[0]{lang} = \qq("e\x01n") }), 400, { reason => qr/control/ } ],
    [ 'raw newline in a string', 'c', cmut(sub { dv($_[0])->{brand_name} = \qq("Air\nbnb") }), 400, { reason => qr/control/ } ],
    [ 'raw tab in a string', 'c', cmut(sub { $_[0]{user}{email} = \qq("buyer\t\@example.com") }), 400, { reason => qr/control/ } ],
    [ 'duplicate top-level key', 'c', do { (my $s = $VALID_C) =~ s/^\{/{"payment":{"type":"via","payment_via":"USER_WALLET","coin":"LTC","network":"Mainnet"},/; $s }, 400, { reason => qr/duplicate key/ } ],
    [ 'duplicate key spelt with an escape', 'c', do { (my $s = $VALID_C) =~ s/^\{/{"\\u006cang":"de",/; $s }, 400, { reason => qr/duplicate key/ } ],
    [ 'duplicate beneficiary in a deliverable', 'c', do { (my $s = $VALID_C) =~ s/"beneficiary_account":"buyer\@example.com"/"beneficiary_account":"+14155551234","beneficiary_account":"buyer\@example.com"/; $s }, 400, { reason => qr/duplicate key/ } ],
    [ '10,000-deep arrays', 'b', $deep_arrays, 400, { reason => qr/nesting too deep/ } ],
    [ '10,000-deep objects', 'b', $deep_objects, 400, { reason => qr/nesting too deep/ } ],
    [ '40-deep object inside a valid body', 'c', cmut(sub { $_[0]{acquisition}{nest} = \(('{"x":' x 40) . '1' . ('}' x 40)) }), 400, { reason => qr/nesting too deep/ } ],
    [ '10 KB string in a body under the size limit', 'c', cmut(sub { $_[0]{acquisition}{note} = 'x' x 10_000 }), 400, { reason => qr/string too long/ } ],
    [ '10 KB key', 'c', cmut(sub { $_[0]{acquisition}{ 'k' x 10_000 } = 1 }), 400, { reason => qr/string too long/ } ],
    [ '600-digit number', 'c', cmut(sub { $_[0]{acquisition}{n} = \('9' x 600) }), 400, { reason => qr/number too long/ } ],
    [ '2,000-element array', 'c', cmut(sub { $_[0]{acquisition}{list} = [ (1) x 2000 ] }), 400, { reason => qr/too many members/ } ],
    [ '1 MB string (over CryptorefillsMaxBodySize)', 'b', $mb_string, 413, { detail => 'BODY_TOO_LARGE' } ],
    [ '1 MB string, chunked', 'b', $mb_string, 413, { detail => 'BODY_TOO_LARGE', chunked => 1 } ],
    [ 'valid body padded to 70 KB with white space', 'c', $VALID_C . (' ' x 70_000), 413, { detail => 'BODY_TOO_LARGE' } ],
    [ '64 KB + 1 byte, chunked', 'c', $VALID_C . (' ' x (65_537 - length $VALID_C)), 413, { detail => 'BODY_TOO_LARGE', chunked => 1 } ],

    # --- media types ---
    [ 'text/plain', 'b', $VALID_C, 415, { ct => 'text/plain', detail => 'UNSUPPORTED_MEDIA_TYPE' } ],
    [ 'no Content-Type', 'b', $VALID_C, 415, { ct => undef, detail => 'UNSUPPORTED_MEDIA_TYPE' } ],
    [ 'form encoding', 'b', 'deliveries=1', 415, { ct => 'application/x-www-form-urlencoded', detail => 'UNSUPPORTED_MEDIA_TYPE' } ],
    [ 'multipart', 'b', "--x\r\n\r\n{}\r\n--x--\r\n", 415, { ct => 'multipart/form-data; boundary=x', detail => 'UNSUPPORTED_MEDIA_TYPE' } ],
    [ 'application/jsonp', 'b', $VALID_C, 415, { ct => 'application/jsonp', detail => 'UNSUPPORTED_MEDIA_TYPE' } ],
    [ 'application/json-seq', 'b', $VALID_C, 415, { ct => 'application/json-seq', detail => 'UNSUPPORTED_MEDIA_TYPE' } ],

    # --- structure (valid JSON, wrong shape): 400 naming the field ---
    [ 'empty object', 'c', '{}', 400, { field => 'deliveries' } ],
    [ 'deliveries is an object', 'c', cmut(sub { $_[0]{deliveries} = {} }), 400, { field => 'deliveries' } ],
    [ 'deliveries is empty', 'c', cmut(sub { $_[0]{deliveries} = [] }), 400, { field => 'deliveries' } ],
    [ 'a delivery is a number', 'c', cmut(sub { $_[0]{deliveries} = [1] }), 400, { field => 'deliveries[0]' } ],
    [ 'deliverable missing', 'c', cmut(sub { delete $_[0]{deliveries}[0]{deliverable} }), 400, { field => 'deliveries[0].deliverable' } ],
    [ 'deliverable is an array', 'c', cmut(sub { $_[0]{deliveries}[0]{deliverable} = [] }), 400, { field => 'deliveries[0].deliverable' } ],
    [ 'kind missing', 'c', cmut(sub { delete $_[0]{deliveries}[0]{kind} }), 400, { field => 'deliveries[0].kind' } ],
    [ 'quantity as a string', 'c', cmut(sub { $_[0]{deliveries}[0]{quantity} = '1' }), 400, { field => 'deliveries[0].quantity' } ],
    [ 'quantity 1.5', 'c', cmut(sub { $_[0]{deliveries}[0]{quantity} = \'1.5' }), 400, { field => 'deliveries[0].quantity' } ],
    [ 'quantity 1e2', 'c', cmut(sub { $_[0]{deliveries}[0]{quantity} = \'1e2' }), 400, { field => 'deliveries[0].quantity' } ],
    [ 'quantity -1', 'c', cmut(sub { $_[0]{deliveries}[0]{quantity} = \'-1' }), 400, { field => 'deliveries[0].quantity' } ],
    [ 'quantity past 2^64', 'c', cmut(sub { $_[0]{deliveries}[0]{quantity} = \'99999999999999999999999' }), 400, { field => 'deliveries[0].quantity' } ],
    [ 'quantity 2^31', 'c', cmut(sub { $_[0]{deliveries}[0]{quantity} = \'2147483648' }), 400, { field => 'deliveries[0].quantity' } ],
    [ 'quantity -2^63', 'c', cmut(sub { $_[0]{deliveries}[0]{quantity} = \'-9223372036854775808' }), 400, { field => 'deliveries[0].quantity' } ],
    [ 'brand_name a number', 'c', cmut(sub { dv($_[0])->{brand_name} = \'5' }), 400, { field => 'deliveries[0].deliverable.brand_name' } ],
    [ 'brand_name empty', 'c', cmut(sub { dv($_[0])->{brand_name} = '' }), 400, { field => 'deliveries[0].deliverable.brand_name' } ],
    [ 'brand_name null', 'c', cmut(sub { dv($_[0])->{brand_name} = undef }), 400, { field => 'deliveries[0].deliverable.brand_name' } ],
    [ 'country_code XX', 'c', cmut(sub { dv($_[0])->{country_code} = 'XX' }), 400, { field => 'deliveries[0].deliverable.country_code' } ],
    [ 'country_code USA', 'c', cmut(sub { dv($_[0])->{country_code} = 'USA' }), 400, { field => 'deliveries[0].deliverable.country_code' } ],
    [ 'denomination true', 'c', cmut(sub { dv($_[0])->{denomination} = JSON::PP::true }), 400, { field => 'deliveries[0].deliverable.denomination' } ],
    [ 'denomination empty', 'c', cmut(sub { dv($_[0])->{denomination} = '' }), 400, { field => 'deliveries[0].deliverable.denomination' } ],
    [ 'denomination negative', 'c', cmut(sub { dv($_[0])->{denomination} = '-5 USD' }), 400, { field => 'deliveries[0].deliverable.denomination' } ],
    [ 'denomination zero', 'c', cmut(sub { dv($_[0])->{denomination} = \'0' }), 400, { field => 'deliveries[0].deliverable.denomination' } ],
    [ 'denomination 1e400', 'c', cmut(sub { dv($_[0])->{denomination} = \'1e400' }), 400, { field => 'deliveries[0].deliverable.denomination' } ],
    [ 'range without product_value', 'c', cmut(sub { dv($_[0])->{denomination} = 'range' }), 400, { field => 'deliveries[0].deliverable.product_value' } ],
    [ 'product_value not a number', 'c', cmut(sub { dv($_[0])->{denomination} = 'range'; dv($_[0])->{product_value} = 'abc' }), 400, { field => 'deliveries[0].deliverable.product_value' } ],
    [ 'product_value 1e-9', 'c', cmut(sub { dv($_[0])->{denomination} = 'range'; dv($_[0])->{product_value} = \'1e-9' }), 400, { field => 'deliveries[0].deliverable.product_value' } ],
    [ 'product_value 1e400', 'c', cmut(sub { dv($_[0])->{denomination} = 'range'; dv($_[0])->{product_value} = \'1e400' }), 400, { field => 'deliveries[0].deliverable.product_value' } ],
    [ 'product_value -10', 'c', cmut(sub { dv($_[0])->{denomination} = 'range'; dv($_[0])->{product_value} = \'-10' }), 400, { field => 'deliveries[0].deliverable.product_value' } ],
    [ 'product_value an object', 'c', cmut(sub { dv($_[0])->{denomination} = 'range'; dv($_[0])->{product_value} = {} }), 400, { field => 'deliveries[0].deliverable.product_value' } ],
    [ 'beneficiary_account missing', 'c', cmut(sub { delete dv($_[0])->{beneficiary_account} }), 400, { field => 'deliveries[0].deliverable.beneficiary_account' } ],
    [ 'beneficiary_account a number', 'c', cmut(sub { dv($_[0])->{beneficiary_account} = \'14155551234' }), 400, { field => 'deliveries[0].deliverable.beneficiary_account' } ],
    [ 'beneficiary_account empty', 'c', cmut(sub { dv($_[0])->{beneficiary_account} = '' }), 400, { field => 'deliveries[0].deliverable.beneficiary_account' } ],
    [ 'payment missing', 'c', cmut(sub { delete $_[0]{payment} }), 400, { field => 'payment' } ],
    [ 'payment a string', 'c', cmut(sub { $_[0]{payment} = 'via' }), 400, { field => 'payment' } ],
    [ 'payment.type missing', 'c', cmut(sub { delete $_[0]{payment}{type} }), 400, { field => 'payment.type' } ],
    [ 'payment.coin a number', 'c', cmut(sub { $_[0]{payment}{coin} = \'5' }), 400, { field => 'payment.coin' } ],
    [ 'payment.network missing', 'c', cmut(sub { delete $_[0]{payment}{network} }), 400, { field => 'payment.network' } ],
    [ 'payment.payment_via an array', 'c', cmut(sub { $_[0]{payment}{payment_via} = ['USER_WALLET'] }), 400, { field => 'payment.payment_via' } ],
    [ 'user missing', 'c', cmut(sub { delete $_[0]{user} }), 400, { field => 'user' } ],
    [ 'user a string', 'c', cmut(sub { $_[0]{user} = 'buyer@example.com' }), 400, { field => 'user' } ],
    [ 'user.email not an email', 'c', cmut(sub { $_[0]{user}{email} = 'not-an-email' }), 400, { field => 'user.email' } ],
    [ 'user.email without a TLD', 'c', cmut(sub { $_[0]{user}{email} = 'buyer@localhost' }), 400, { field => 'user.email' } ],
    [ 'user.email with a display name', 'c', cmut(sub { $_[0]{user}{email} = 'Bob <bob@example.com>' }), 400, { field => 'user.email' } ],
    [ 'user.email 300 bytes', 'c', cmut(sub { $_[0]{user}{email} = ('a' x 290) . '@example.com' }), 400, { field => 'user.email' } ],
    [ 'has_accepted_newsletter "yes"', 'c', cmut(sub { $_[0]{user}{has_accepted_newsletter} = 'yes' }), 400, { field => 'user.has_accepted_newsletter' } ],
    [ 'lang empty', 'c', cmut(sub { $_[0]{lang} = '' }), 400, { field => 'lang' } ],
    [ 'lang markup', 'c', cmut(sub { $_[0]{lang} = '<script>' }), 400, { field => 'lang' } ],
    [ 'lang a number', 'c', cmut(sub { $_[0]{lang} = \'5' }), 400, { field => 'lang' } ],
    [ 'acquisition a string', 'c', cmut(sub { $_[0]{acquisition} = 'ads' }), 400, { field => 'acquisition' } ],
    [ 'promo_code a number', 'c', cmut(sub { $_[0]{promo_code} = \'10' }), 400, { field => 'promo_code' } ],
    [ 'refund_wallet_address an array', 'c', cmut(sub { $_[0]{refund_wallet_address} = [] }), 400, { field => 'refund_wallet_address' } ],
    [ 'validations: email not an email', 'v', vmut(sub { $_[0]{email} = 'buyer at example.com' }), 400, { field => 'email' } ],
    [ 'validations: localized_denomination a number', 'v', vmut(sub { $_[0]{deliveries}[0]{localized_denomination} = \'100' }), 400, { field => 'deliveries[0].localized_denomination' } ],
    [ 'validations: denomination missing', 'v', vmut(sub { delete $_[0]{deliveries}[0]{denomination} }), 400, { field => 'deliveries[0].denomination' } ],
    [ 'validations: payment.coin missing', 'v', vmut(sub { delete $_[0]{payment}{coin} }), 400, { field => 'payment.coin' } ],

    # --- a valid body with a malformed Idempotency-Key ---
    [ 'Idempotency-Key with a space', 'c', $VALID_C, 400, { field => 'Idempotency-Key', headers => { 'Idempotency-Key' => 'a b' } } ],
    [ 'Idempotency-Key of 300 bytes', 'c', $VALID_C, 400, { field => 'Idempotency-Key', headers => { 'Idempotency-Key' => 'k' x 300 } } ],
    [ 'Idempotency-Key with UTF-8', 'c', $VALID_C, 400, { field => 'Idempotency-Key', headers => { 'Idempotency-Key' => "cl\xC3\xA9" } } ],
);

cmp_ok(scalar @T, '>=', 50, 'the table holds at least 50 malformed requests');

my $n_requests = 0;
for my $t (@T) {
    my ($name, $where, $body, $want, $o) = @$t;
    my @routes = $where eq 'b' ? ('orders', 'orders/validations') : $where eq 'c' ? ('orders') : ('orders/validations');
    for my $rt (@routes) {
        my $r = raw_post("/api/$rt", $body, ct => (exists $o->{ct} ? $o->{ct} : $APPJ),
            chunked => $o->{chunked}, headers => $o->{headers});
        $n_requests++;
        my $tag = "$name [$rt]";
        is($r->{status}, $want, "$tag: $want") or diag substr($r->{body}, 0, 300);
        like($r->{headers}{'content-type'} // '', qr{^application/json}, "$tag: JSON answer");
        my $j = eval { decode_json($r->{body}) };
        ok(ref $j eq 'HASH', "$tag: the body is a JSON object") or do { diag substr($r->{body}, 0, 300); next };
        is($j->{status}, $want, "$tag: body status $want");
        my $detail = $o->{detail} // 'INVALID_REQUEST';
        is($j->{detail}, $detail, "$tag: detail $detail");
        like($j->{moreDetails}{reason} // '', $o->{reason}, "$tag: reason") or diag $r->{body} if $o->{reason};
        is($j->{moreDetails}{field}, $o->{field}, "$tag: names field $o->{field}") or diag $r->{body} if $o->{field};
    }
}

# Nothing reached the upstream, nothing was created there.
my $posts = $sb->requests(path => '/v5/orders');
is(scalar @$posts, 0, "none of the $n_requests malformed requests reached the upstream")
    or diag join "\n", map { substr($_->{body}, 0, 200) } @$posts;
is(scalar @{ $sb->orders }, 0, 'no order exists upstream');

# The server is unharmed: both valid bodies still go through.
for my $v ([ 'orders', $VALID_C ], [ 'orders/validations', $VALID_V ]) {
    my $r = raw_post("/api/$v->[0]", $v->[1], ct => 'Application/JSON; charset=utf-8');
    is($r->{status}, 200, "after the table, a valid POST $v->[0] (mixed-case media type with charset) is answered 200")
        or diag $r->{body};
}
is(scalar @{ $sb->requests(path => '/v5/orders', method => 'POST') }, 2, '... each with one upstream call');

$httpd->stop;
$sb->stop;
done_testing;
