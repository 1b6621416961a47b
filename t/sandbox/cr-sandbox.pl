#!/usr/bin/env perl
# SPDX-License-Identifier: Apache-2.0
# cr-sandbox: an emulator of the Cryptorefills partner API for tests, benchmarks
# and the demo. Loopback only. See t/sandbox/README.md for the control API.
#
#   perl t/sandbox/cr-sandbox.pl --listen http://127.0.0.1:8089 [--parent-pid PID]
#        [--auto-advance SECONDS] [--heartbeat SECONDS] [--inactivity-timeout 60]
#        [--keep-alive-timeout 60] [--seed STR] [--catalog-scale F] [--numeric-amounts]
#
# Design notes
# - One process, one Mojo::IOLoop: every stream, timer and fault is non-blocking
#   (never sleep here, or every open SSE stream stalls with it).
# - Catalog documents are generated once per country (CrSandbox::Data, seeded,
#   deterministic) and kept as encoded bytes, so a GET costs no JSON encoding.
# - Every request outside /_sandbox/ is recorded (method, path, raw query, headers,
#   body, connection id) before faults are applied, so tests see retries too.

use strict;
use warnings;
use utf8;
use FindBin;
use lib "$FindBin::Bin/../lib";

BEGIN { $ENV{MOJO_MODE} = 'production'; $ENV{MOJO_LOG_LEVEL} //= 'warn' }

use Getopt::Long qw(GetOptionsFromArray);
use Time::HiRes ();
use Digest::MD5 qw(md5_hex md5);
use Encode qw(decode encode_utf8);
use JSON::PP ();
use Mojolicious::Lite -signatures;
use Mojo::IOLoop;
use Mojo::Log;
use Mojo::Asset::Memory;
use Mojo::Util qw(url_escape);
use List::Util ();
use MIME::Base64 ();
use Socket qw(SOL_SOCKET SO_LINGER);
use CrSandbox::Data;

# ------------------------------------------------------------------ options
my %opt = (
    listen => 'http://127.0.0.1:8089', 'parent-pid' => 0, 'auto-advance' => 0, heartbeat => 0,
    'inactivity-timeout' => 60, 'keep-alive-timeout' => 60, 'max-requests' => 1_000_000,
    'max-clients' => 10_000, seed => 'cr-sandbox-1', 'catalog-scale' => 1, 'max-recorded' => 50_000,
    'numeric-amounts' => 0, 'numeric-timestamps' => 0, record => 1, 'sse-retry' => 0, 'log-level' => 'warn',
    'tls-cert' => '', 'tls-key' => '',
);
my @args = @ARGV;
GetOptionsFromArray(\@args, \%opt, 'listen|l=s', 'parent-pid=i', 'auto-advance=f', 'heartbeat=f',
    'inactivity-timeout=i', 'keep-alive-timeout=i', 'max-requests=i', 'max-clients=i', 'seed=s',
    'catalog-scale=f', 'max-recorded=i', 'numeric-amounts!', 'numeric-timestamps!', 'sse-retry=i',
    'log-level=s', 'record!', 'tls-cert=s', 'tls-key=s', 'help|h')
    or die "usage: $0 --listen http://127.0.0.1:PORT [options] (see t/sandbox/README.md)\n";
if ($opt{help}) { print "see t/sandbox/README.md\n"; exit 0 }
die "cr-sandbox: --listen must be http://127.0.0.1:PORT (loopback only), got '$opt{listen}'\n"
    unless $opt{listen} =~ m{^http://127\.0\.0\.1:(\d{1,5})/?$} && $1 < 65536;
my $LISTEN = $opt{listen} =~ s{/$}{}r;
# --tls-cert/--tls-key: serve HTTPS (IO::Socket::SSL) on the same address.
die "cr-sandbox: --tls-cert and --tls-key go together\n" if !$opt{'tls-cert'} != !$opt{'tls-key'};
my $TLS = $opt{'tls-cert'} ? 1 : 0;
$LISTEN =~ s{^http:}{https:} if $TLS;
my $DAEMON_LISTEN = $TLS
    ? "$LISTEN?cert=" . url_escape($opt{'tls-cert'}) . '&key=' . url_escape($opt{'tls-key'})
    : $LISTEN;

$CrSandbox::Data::SEED  = $opt{seed};
$CrSandbox::Data::SCALE = $opt{'catalog-scale'};

# Runtime-tunable behaviour (POST /_sandbox/config).
my %CFG_DEFAULT = (
    auto_advance        => $opt{'auto-advance'} + 0,
    heartbeat           => $opt{heartbeat} + 0,
    numeric_amounts     => $opt{'numeric-amounts'} ? 1 : 0,   # amounts as JSON numbers
    numeric_timestamps  => $opt{'numeric-timestamps'} ? 1 : 0,
    empty_problems      => 'null',                            # or "[]"
    delivery_done_state => 'Done',                            # or "Completed"
    sse_retry           => $opt{'sse-retry'} + 0,             # "retry:" on connect when > 0
    max_products        => 10,
    max_order_usd       => 5000,
    min_order_usd       => 1,
    record              => $opt{record} ? 1 : 0,              # record requests (off: a bit faster)
);
my %CFG = %CFG_DEFAULT;

my $JSON = eval { require Cpanel::JSON::XS; Cpanel::JSON::XS->new->utf8->canonical->allow_nonref }
    || JSON::PP->new->utf8->canonical->allow_nonref;
my $TRUE  = JSON::PP::true;
my $FALSE = JSON::PP::false;

app->log(Mojo::Log->new(level => $opt{'log-level'}));    # stderr
app->secrets(['cr-sandbox-not-secret']);
app->mode('production');
delete app->renderer->{paths};
app->renderer->paths([]);
app->static->paths([]);
app->types->type(json => 'application/json');

# ------------------------------------------------------------------ state
my @REQ;              # recorded requests
my $REQ_SEQ = 0;
my @FAULTS;           # active faults, first match wins
my $FAULT_SEQ = 0;
my %ORDERS;           # order_id => { order => {...}, seq => n, subs => { sid => sub }, timer }
my $ORDER_SEQ = 0;
my $SUB_SEQ   = 0;
my $VAL_SEQ   = 0;
my %DOC_CACHE;        # "brands:US" => bytes

my %TERMINAL = map { $_ => 1 } qw(Done Completed Expired Canceled Cancelled PaymentFailed PaymentSetupFailed Refunded);
my @FLOW = qw(WaitingForPayment WaitingForDelivery Done);

sub now_s { sprintf '%d', time }

sub jbytes { $JSON->encode($_[0]) }

sub send_json ($c, $status, $data) {
    $c->res->headers->content_type('application/json');
    $c->render(data => (ref $data ? jbytes($data) : $data), status => $status);
}
sub send_error ($c, $status, $detail, $more = undef) {
    send_json($c, $status, { status => $status + 0, detail => $detail, defined $more ? (moreDetails => $more) : () });
}

# Dynamic payloads pass through here: applies the number/string variants.
my %AMOUNT_KEYS = map { $_ => 1 } qw(coin_amount original_coin_amount sent_coin_amount original_price);
my %TIME_KEYS   = map { $_ => 1 } qw(created_at updated_at payment_requested_at);
sub variant {
    my ($d) = @_;
    return $d unless $CFG{numeric_amounts} || $CFG{numeric_timestamps};
    my $walk;
    $walk = sub {
        my $x = shift;
        if (ref $x eq 'HASH') {
            for my $k (keys %$x) {
                if (!ref $x->{$k} && defined $x->{$k} && $x->{$k} =~ /^-?\d+(?:\.\d+)?$/
                    && ($CFG{numeric_amounts} && $AMOUNT_KEYS{$k} || $CFG{numeric_timestamps} && $TIME_KEYS{$k})) {
                    $x->{$k} = 0 + $x->{$k};
                } else { $walk->($x->{$k}) }
            }
        } elsif (ref $x eq 'ARRAY') { $walk->($_) for @$x }
    };
    my $copy = $JSON->decode(jbytes($d));
    $walk->($copy);
    undef $walk;
    return $copy;
}

# ------------------------------------------------------------------ recording
sub body_text {
    my ($bytes) = @_;
    return '' unless defined $bytes && length $bytes;
    my $t = eval { decode('UTF-8', $bytes, Encode::FB_CROAK | Encode::LEAVE_SRC) };
    return defined $t ? $t : decode('ISO-8859-1', $bytes);
}

sub record ($c) {
    my $req = $c->req;
    my $h = $req->headers;
    my (%hdr, @raw);
    for my $n (@{ $h->names }) {
        my @v = @{ $h->every_header($n) };
        push @raw, [ $n, $_ ] for @v;
        $hdr{ lc $n } = join ', ', @v;
    }
    my $tx = $c->tx;
    my $body = $req->body;
    my $r = {
        id => ++$REQ_SEQ, time => Time::HiRes::time(), method => $req->method,
        path => $req->url->path->to_string, query => $req->url->query->to_string,
        headers => \%hdr, raw_headers => \@raw, body => body_text($body), body_length => length($body // ''),
        connection => $tx->connection, remote => ($tx->original_remote_address // '') . ':' . ($tx->remote_port // ''),
        kept_alive => $tx->kept_alive ? $TRUE : $FALSE,
    };
    if (length($body // '') && ($hdr{'content-type'} // '') =~ /json/i) {
        my $j = eval { $JSON->decode($body) };
        $r->{body_json} = $j if defined $j;
    }
    push @REQ, $r;
    splice @REQ, 0, @REQ - $opt{'max-recorded'} if @REQ > $opt{'max-recorded'};
    $c->stash('sandbox.record' => $r);
    return $r;
}

# ------------------------------------------------------------------ faults
my %FAULT_MODES = map { $_ => 1 } qw(latency status nonjson hang drop big empty partial raw
    stream_drop_after stream_silent stream_garbage stream_status);

sub add_fault {
    my ($f) = @_;
    die "fault must be an object\n" unless ref $f eq 'HASH';
    die "fault needs a known mode (" . join('|', sort keys %FAULT_MODES) . ")\n" unless $FAULT_MODES{ $f->{mode} // '' };
    die "fault needs match (path prefix) or regex\n" unless defined $f->{match} || defined $f->{regex};
    if (defined $f->{regex}) { my $re = eval { qr/$f->{regex}/ } or die "bad regex: $@"; }
    my %f = %$f;
    $f{id} = ++$FAULT_SEQ;
    $f{hits} = 0;
    $f{method} = uc $f{method} if defined $f{method};
    push @FAULTS, \%f;
    return \%f;
}

sub take_fault ($c) {
    my $path = $c->req->url->path->to_string;
    my $method = $c->req->method;
    my $query = $c->req->url->query->to_string;
    my $is_stream = $path =~ m{/subscribe$};
    for my $i (0 .. $#FAULTS) {
        my $f = $FAULTS[$i];
        next if defined $f->{method} && $f->{method} ne $method && $f->{method} ne 'ANY';
        next if defined $f->{match} && index($path, $f->{match}) != 0;
        next if defined $f->{regex} && $path !~ /$f->{regex}/;
        next if defined $f->{query} && index($query, $f->{query}) < 0;
        next if $f->{mode} =~ /^stream_/ && !$is_stream;
        $f->{hits}++;
        if (defined $f->{times}) {
            splice @FAULTS, $i, 1 if --$f->{times} <= 0;
        }
        return $f;
    }
    return undef;
}

sub big_json {
    my ($n) = @_;
    $n = 2 if $n < 2;
    my $head = '{"padding":"';
    my $tail = '"}';
    return '{}' . (' ' x ($n - 2)) if $n < length($head) + length($tail);
    return $head . ('x' x ($n - length($head) - length($tail))) . $tail;
}

sub close_conn ($c, $graceful = 0) {
    my $s = Mojo::IOLoop->stream($c->tx->connection) or return;
    $graceful ? $s->close_gracefully : $s->close;
}

# Gate in front of every upstream route: record, then apply the first matching fault.
# Returning undef stops the dispatch; $c->continue resumes it after a delay.
sub gate ($c) {
    record($c) if $CFG{record};
    my $f = take_fault($c) or return 1;
    $c->stash('sandbox.fault' => $f);
    my $m = $f->{mode};
    if ($f->{after} && $m =~ /^(drop|hang|status)$/) { $c->stash('sandbox.after' => $f); return 1 }
    my %h = %{ $f->{headers} || {} };
    $c->res->headers->header($_ => $h{$_}) for keys %h;
    if ($m =~ /^stream_/) { return 1 }
    if ($m eq 'latency') {
        $c->render_later;
        $c->inactivity_timeout(0);
        Mojo::IOLoop->timer(($f->{ms} // 1000) / 1000 => sub { $c->continue });
        return undef;
    }
    if ($m eq 'status') {
        my $st = $f->{status} // 500;
        if (defined $f->{body}) { $c->res->headers->content_type($f->{content_type} // 'application/json'); $c->render(data => encode_utf8($f->{body}), status => $st) }
        else { send_error($c, $st, $f->{detail} // ($st == 429 ? 'TOO_MANY_REQUESTS' : $st >= 500 ? 'INTERNAL_SERVER_ERROR' : 'SANDBOX_FAULT')) }
        return undef;
    }
    if ($m eq 'nonjson') {
        $c->res->headers->content_type('text/html; charset=utf-8');
        $c->render(data => "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>cloudflare</center></body></html>\n",
            status => $f->{status} // 200);
        return undef;
    }
    if ($m eq 'hang') { $c->render_later; $c->inactivity_timeout(0); return undef }
    if ($m eq 'drop') { $c->render_later; close_conn($c); return undef }
    if ($m eq 'big') {
        send_json($c, $f->{status} // 200, big_json($f->{bytes} // 1_048_576));
        return undef;
    }
    if ($m eq 'empty') {
        $c->res->headers->content_type('application/json');
        $c->render(data => '', status => $f->{status} // 200);
        return undef;
    }
    if ($m eq 'raw') {        # verbatim bytes (head and body), in pieces, then close/reset
        my $bytes = defined $f->{raw_b64} ? MIME::Base64::decode_base64($f->{raw_b64}) : encode_utf8($f->{raw} // '');
        my $step = $f->{step} || length($bytes) || 1;
        my $ms = $f->{ms} // 0;
        my $end = $f->{end} // 'close';
        my $id = $c->tx->connection;
        $c->render_later;
        $c->inactivity_timeout(0);
        my $off = 0;
        my $next;
        $next = sub {
            my $s = Mojo::IOLoop->stream($id) or return undef $next;
            if ($off >= length $bytes) {
                undef $next;
                if ($end eq 'reset') {    # RST instead of FIN
                    setsockopt($s->handle, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
                    $s->close;
                }
                elsif ($end eq 'close') { $s->close_gracefully }
                return;
            }
            my $piece = substr($bytes, $off, $step);
            $off += length $piece;
            $s->write($piece, sub { $ms ? Mojo::IOLoop->timer($ms / 1000 => sub { $next->() if $next }) : $next->() });
        };
        $next->();
        return undef;
    }
    if ($m eq 'partial') {    # announce N bytes, send a part, close
        my $n = $f->{bytes} // 1000;
        $c->res->headers->content_type('application/json');
        $c->res->headers->content_length($n);
        $c->inactivity_timeout(0);
        $c->write(substr(big_json($n), 0, int($n / 2)), sub { close_conn($c, 1) });
        return undef;
    }
    return 1;
}

# Faults with "after": true let the handler run first (the order IS created), then
# lose its answer: drop closes the socket, status replaces it, hang sends the
# headers and never the body. That is the ambiguous create of shapes.md.
app->hook(after_dispatch => sub ($c) {
    my $f = $c->stash('sandbox.after') or return;
    my $m = $f->{mode};
    if ($m eq 'drop') { close_conn($c); return }
    if ($m eq 'status') {
        my $st = $f->{status} // 504;
        $c->res->code($st);
        $c->res->headers->content_type('application/json');
        $c->res->body(jbytes({ status => $st + 0, detail => $f->{detail} // ($st == 429 ? 'TOO_MANY_REQUESTS' : 'GATEWAY_TIMEOUT') }));
        return;
    }
    if ($m eq 'hang') {
        my $len = $c->res->body_size || 1;
        $c->res->headers->content_length($len);
        $c->res->content->{asset} = Mojo::Asset::Memory->new;
        $c->res->content->write(undef);    # dynamic, nothing buffered: headers go out, the body never
        $c->inactivity_timeout(0);
    }
});

# Mojo's server never answers "Expect: 100-continue" itself, so a client that sends
# it (libcurl does for large POST bodies) would stall a second before sending the body.
app->hook(after_build_tx => sub ($tx, $app) {
    $tx->req->on(progress => sub ($req, @) {
        return if $req->{'sandbox.continued'} || !$req->content->is_parsing_body;
        $req->{'sandbox.continued'} = 1;
        return unless ($req->headers->expect // '') =~ /100-continue/i;
        my $s = Mojo::IOLoop->stream($tx->connection // return) or return;
        $s->write("HTTP/1.1 100 Continue\r\n\r\n");
    });
});

# ------------------------------------------------------------------ orders
sub b58 { my ($seed, $n) = @_; my @a = split //, '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'; _chars($seed, $n, \@a) }
sub b32 { my ($seed, $n) = @_; my @a = split //, 'qpzry9x8gf2tvdw0s3jn54khce6mua7l'; _chars($seed, $n, \@a) }
sub b64u { my ($seed, $n) = @_; my @a = ('A'..'Z', 'a'..'z', 0..9, '-', '_'); _chars($seed, $n, \@a) }
sub hexs { my ($seed, $n) = @_; _chars($seed, $n, [0..9, 'a'..'f']) }
sub _chars {
    my ($seed, $n, $a) = @_;
    my ($out, $i) = ('', 0);
    while (length $out < $n) { $out .= join '', map { $a->[ $_ % @$a ] } unpack 'C*', md5(encode_utf8("$seed:" . $i++)) }
    return substr $out, 0, $n;
}

sub wallet_for {
    my ($id, $coin, $net, $amount) = @_;
    my $vias = CrSandbox::Data::payment_vias();
    my ($cur) = grep { $_->{name} eq $coin } @{ $vias->[0]{currencies} };
    my ($n) = grep { $_->{name} eq $net } @{ $cur ? $cur->{networks} : [] };
    my $sc = $n ? $n->{smart_contract} : undef;
    my $dec = $sc ? $sc->{decimals} : $coin eq 'ETH' ? 18 : $coin eq 'GRAM' ? 9 : 8;
    my $units = sub { my $s = sprintf('%.' . $dec . 'f', $amount); $s =~ s/\.//; $s =~ s/^0+(?=\d)//; $s };
    if ($net eq 'Lightning') {
        my $sats = int($amount * 1e8 + 0.5);
        my $inv = 'lnbc' . ($sats * 10) . 'n1p' . b32("$id:ln", 220);
        return ($inv, "lightning:$inv");
    }
    if ($net eq 'Mainnet') {
        my $addr = ($coin eq 'LTC' ? 'ltc1q' : 'bc1q') . b32("$id:btc", 38);
        return ($addr, ($coin eq 'LTC' ? 'litecoin' : 'bitcoin') . ":$addr?amount=$amount");
    }
    if ($net eq 'Solana') {
        my $addr = b58("$id:sol", 44);
        return ($addr, "solana:$addr?amount=$amount" . ($sc ? "&spl-token=$sc->{address}" : ''));
    }
    if ($net eq 'Ton') {
        my $addr = 'UQ' . b64u("$id:ton", 46);
        return ($addr, "ton://transfer/$addr?amount=" . $units->() . ($sc ? "&jetton=$sc->{address}" : ''));
    }
    my $addr = '0x' . hexs("$id:evm", 40);
    my $chain = $n && $n->{chain_id} ? $n->{chain_id} : 1;
    return ($addr, $sc ? "ethereum:$sc->{address}\@$chain/transfer?address=$addr&uint256=" . $units->()
                       : "ethereum:$addr\@$chain?value=" . $units->());
}

sub order_json { variant($_[0]{order}) }

sub sse_event ($o) {
    my $data = jbytes(order_json($o));
    return "id: $o->{seq}\ndata: $data\n\n";
}

my @GARBAGE = (
    "data: {not json\n\n",
    "this line has no colon and is not an event\n\n",
    "data: {\"order_id\": 42, \"order_state\": []}\n\n",
    "event: \ndata: \n\n",
    ": just a comment\n\n",
    "retry: soon\n\n",
    "data: \"a string, not an order\"\n\n",
    "event: unknown-kind\ndata: {}\n\n",
);

sub sub_write ($sub, $bytes, $is_event = 0) {
    my $c = $sub->{c};
    my $f = $sub->{fault};
    return if $sub->{closed};
    if ($is_event && $f && $f->{mode} eq 'stream_garbage') {
        $c->write_chunk($GARBAGE[ $sub->{garbage}++ % @GARBAGE ]);
    }
    if ($is_event && $f && $f->{mode} eq 'stream_drop_after') {
        my $n = $f->{events} // 1;
        if ($sub->{sent} >= $n) { $sub->{closed} = 1; close_conn($c); return }
        $sub->{sent}++;
        if ($sub->{sent} >= $n) {
            $sub->{closed} = 1;
            $c->write_chunk($bytes, sub { close_conn($c, 1) });
            return;
        }
    } elsif ($is_event) { $sub->{sent}++ }
    $c->write_chunk($bytes);
}

sub sub_stop ($sub, $data = '{}') {
    return if $sub->{closed};
    $sub->{closed} = 1;
    $sub->{c}->write_chunk("event: stop\ndata: $data\n\n")->finish;
}

sub notify ($o) {
    $o->{seq}++;
    my $ev = sse_event($o);
    # When each event left for the subscribers (GET /_sandbox/orders/:oid/sent),
    # so a test can measure relay delay against the moment it was sent.
    push @{ $o->{sent} }, { seq => $o->{seq}, state => $o->{order}{order_state},
        time => Time::HiRes::time(), subscribers => scalar keys %{ $o->{subs} } };
    my $term = $TERMINAL{ $o->{order}{order_state} };
    for my $sid (sort { $a <=> $b } keys %{ $o->{subs} }) {
        my $sub = $o->{subs}{$sid};
        next if $sub->{fault} && $sub->{fault}{mode} eq 'stream_silent';
        sub_write($sub, $ev, 1);
        sub_stop($sub) if $term;
    }
    if ($term && $o->{timer}) { Mojo::IOLoop->remove(delete $o->{timer}) }
}

my %PAYMENT_STATE = (WaitingForPayment => 'WalletCreated', PaymentStarted => 'PaymentRequested',
    PartialPaymentStarted => 'PaymentRequested', WaitingForDelivery => 'PaymentReceived',
    PaymentReceived => 'PaymentReceived', Done => 'PaymentCompleted', Completed => 'PaymentCompleted',
    Expired => 'Expired');

sub pin_for {
    my ($o, $d, $i) = @_;
    my $seed = "$o->{order}{order_id}:$i";
    my $dv = $d->{deliverable};
    my $meta = $o->{dmeta}[$i] || {};
    if (($meta->{category} // '') eq 'e-sim') {
        return (pin_code => 'LPA:1$smdp.sandbox.cryptorefills.com$' . uc(hexs("$seed:lpa", 32)),
            redeem_instructions => 'Scan the QR code or enter the activation code in your phone settings under Mobile data > Add eSIM.');
    }
    if (($meta->{delivery} // '') eq 'by_phone') {
        return (pin_code => 'TOPUP-' . uc(hexs("$seed:tx", 12)),
            redeem_instructions => "The credit was sent to $dv->{beneficiary_account}.");
    }
    my $h = hex(substr(md5_hex($seed), 0, 6));
    my $code = join '-', map { uc(b64u("$seed:$_", 4)) =~ tr/-_/XY/r } 1 .. 4;
    return (
        pin_code => ($h % 5 == 0 ? 'https://redeem.sandbox.cryptorefills.com/r/' . hexs("$seed:url", 24) : $code),
        pin_serial => sprintf('%012d', $h * 7919 % 1_000_000_000_000),
        ($meta->{physical} ? (barcode_image_url => "https://cdn.cryptorefills.com/barcodes/" . hexs("$seed:bc", 16) . '.png') : ()),
        redeem_instructions => "Redeem at checkout on the $dv->{brand_name} website or app.",
    );
}

sub set_state ($o, $state, %x) {
    my $ord = $o->{order};
    $ord->{order_state} = $state;
    $ord->{payment_state} = $x{payment_state} // $PAYMENT_STATE{$state} // $ord->{payment_state};
    $ord->{updated_at} = now_s();
    if ($state eq 'WaitingForDelivery' || $state eq 'Done' || $state eq 'Completed' || $state eq 'PaymentReceived') {
        $ord->{sent_coin_amount} = $ord->{coin_amount};
    }
    my $i = 0;
    for my $d (@{ $ord->{deliveries} }) {
        if ($x{delivery_state}) { $d->{delivery_state} = $x{delivery_state} }
        elsif ($state eq 'Done' || $state eq 'Completed') {
            $d->{delivery_state} = $CFG{delivery_done_state};
            my %pin = pin_for($o, $d, $i);
            @{ $d->{deliverable} }{ keys %pin } = values %pin;
        }
        elsif ($TERMINAL{$state}) { $d->{delivery_state} = $state eq 'Refunded' ? 'Refunded' : 'Canceled' }
        $i++;
    }
    if (ref $x{fields} eq 'HASH') { @{$ord}{ keys %{ $x{fields} } } = values %{ $x{fields} } }
    notify($o) unless $x{silent};
    return $o;
}

sub advance ($o) {
    my $st = $o->{order}{order_state};
    my ($i) = grep { $FLOW[$_] eq $st } 0 .. $#FLOW;
    return 0 if !defined $i || $i == $#FLOW;
    set_state($o, $FLOW[ $i + 1 ]);
    return 1;
}

sub new_order {
    my ($chk, %x) = @_;
    my $n = ++$ORDER_SEQ;
    my $id = $x{order_id} // CrSandbox::Data::uuid('order', $n);
    my $now = now_s();
    my ($addr, $qr) = wallet_for($id, $chk->{coin}, $chk->{network}, $chk->{coin_amount});
    my $di = 0;
    my @dl = map {
        +{ id => CrSandbox::Data::uuid('delivery', $id, $di++), delivery_state => 'WaitingForPayment',
           kind => $_->{brand}{kind}, quantity => $_->{quantity}, deliverable => { %{ $_->{deliverable} } } }
    } @{ $chk->{items} };
    # what pin_for() needs to know about each delivery, kept out of the order JSON
    my @dmeta = map { +{ category => $_->{brand}{category}, delivery => $_->{meta}{delivery},
        physical => ($_->{brand}{product_type} eq 'physical' ? 1 : 0) } } @{ $chk->{items} };
    my $order = {
        order_id => $id, created_at => $now, updated_at => $now,
        wallet_address => $addr, payment_method => CrSandbox::Data::payment_method($chk->{coin}, $chk->{network}),
        network => $chk->{network}, coin => $chk->{coin}, coin_amount => $chk->{coin_amount},
        original_coin_amount => $chk->{original_coin_amount},
        original_price => sprintf('%.2f', $chk->{total_local}), currency_code => $chk->{currency},
        qr_url => 'https://sandbox.cryptorefills.com/qr/' . $id . '.png?data=' . url_escape($qr),
        qr_text => $qr, sent_coin_amount => '0', payment_state => 'WalletCreated',
        payment_via => $chk->{via}, payment_requested_at => $now,
        payment_method_protocol => CrSandbox::Data::protocol($chk->{network}),
        payment_id => CrSandbox::Data::uuid('payment', $id),
        payment_value => 0 + sprintf('%.4f', $chk->{total_usd}),
        deliveries => \@dl, order_state => 'WaitingForPayment',
        user => { email => $chk->{email} }, is_payment_processor_external => $FALSE,
        lang => $chk->{lang},
        (defined $chk->{coupon} ? (promo_code => $chk->{coupon}) : ()),
        (defined $chk->{refund} ? (refund_wallet_address => $chk->{refund}) : ()),
    };
    my $o = { order => $order, seq => 1, subs => {}, created => Time::HiRes::time(), dmeta => \@dmeta };
    $ORDERS{$id} = $o;
    if ($CFG{auto_advance} > 0) {
        $o->{timer} = Mojo::IOLoop->recurring($CFG{auto_advance} => sub { advance($o) });
    }
    if ($x{order_state} && $x{order_state} ne 'WaitingForPayment') { set_state($o, $x{order_state}, silent => 1) }
    return $o;
}


# ------------------------------------------------------------------ validation
my $EMAIL_RE = qr/^[^@\s"<>]+@[^@\s"<>]+\.[A-Za-z]{2,}$/;
my $E164_RE  = qr/^\+[1-9]\d{6,14}$/;

# Check an order body (both the validations and the create forms). Returns
# { http => N, error => {...} } for a top-level error, else a result with problems.
sub check_order ($c, $body, $create) {
    my $bad = sub { +{ http => 400, error => { status => 400, detail => 'INVALID_REQUEST', moreDetails => { reason => $_[0] } } } };
    return $bad->('body must be a JSON object') unless ref $body eq 'HASH';
    my $dl = $body->{deliveries};
    return $bad->('deliveries must be a non-empty array') unless ref $dl eq 'ARRAY' && @$dl;
    my $pay = $body->{payment};
    return $bad->('payment must be an object') unless ref $pay eq 'HASH';
    my $email = $create ? (ref $body->{user} eq 'HASH' ? $body->{user}{email} : undef) : ($body->{email} // (ref $body->{user} eq 'HASH' ? $body->{user}{email} : undef));
    return $bad->('user.email is required') if $create && !(defined $email && length $email);
    return $bad->('email is not an email address') if defined $email && !ref $email && length $email && $email !~ $EMAIL_RE;
    return $bad->('email must be a string') if ref $email;
    return $bad->('payment.coin is required') unless defined $pay->{coin} && !ref $pay->{coin} && length $pay->{coin};
    return $bad->('payment.type must be "via"') if defined $pay->{type} && $pay->{type} ne 'via';

    my @problems;
    my $problem = sub { push @problems, { problem => $_[0], defined $_[1] ? (moreDetails => $_[1]) : () } };

    # Magic addresses let tests trigger any business rejection or HTTP error:
    #   problem+daily_spending_limit_exceeded@example.com  -> that problem
    #   http422+kyc_missing@example.com                    -> HTTP 422 {"detail":"KYC_MISSING"}
    if (defined $email && $email =~ /^http(\d{3})\+([A-Za-z_]+)@/) {
        return { http => $1, error => { status => $1 + 0, detail => uc $2 } };
    }
    $problem->(uc $1) if defined $email && $email =~ /^problem\+([A-Za-z_]+)@/;
    $problem->('INVALID_EMAIL_DOMAIN', { domain => $1 }) if defined $email && $email =~ /@(mailinator\.com|example\.invalid)$/i;

    # payment
    my $vias = CrSandbox::Data::payment_vias();
    my $via_name = $pay->{payment_via} // 'USER_WALLET';
    my ($via) = grep { $_->{name} eq $via_name } @$vias;
    my $allowed = [ map { $_->{name} } grep { ${ $_->{available} } } @$vias ];
    my $coin = uc $pay->{coin};
    my ($network, $cur);
    if (!$via || !${ $via->{available} }) {
        $problem->('NOT_ALLOWED_PAYMENT_VIA', { allowed => $allowed });
        $via = $vias->[0];
    }
    ($cur) = grep { $_->{name} eq $coin } @{ $via->{currencies} };
    my $supported = sub { [ map { my $cc = $_; map { { coin => $cc->{name}, network => $_->{name} } } grep { !${ $_->{is_suspended} } } @{ $cc->{networks} } } grep { !${ $_->{is_suspended} } } @{ $via->{currencies} } ] };
    if (!$cur) {
        $problem->('UNSUPPORTED_PROTOCOL_COIN_COMBINATION', { coin => $coin, supported => $supported->() });
    } elsif (${ $cur->{is_suspended} }) {
        return { http => 422, error => { status => 422, detail => 'SUSPENDED_COIN', moreDetails => { coin => $coin } } };
    } else {
        my $want = $pay->{network};
        my ($net) = defined $want ? grep { lc $_->{name} eq lc $want } @{ $cur->{networks} }
                                  : (grep { $_->{name} eq ($CrSandbox::Data::DEFAULT_NETWORK{$coin} // '') && !${ $_->{is_suspended} } } @{ $cur->{networks} }),
                                    (grep { !${ $_->{is_suspended} } } @{ $cur->{networks} });
        if (!$net) {
            $problem->('UNSUPPORTED_PROTOCOL_COIN_COMBINATION', { coin => $coin, network => $want, supported => $supported->() });
        } elsif (${ $net->{is_suspended} }) {
            return { http => 422, error => { status => 422, detail => 'SUSPENDED_NETWORK', moreDetails => { coin => $coin, network => $net->{name} } } };
        } else { $network = $net }
    }

    # deliveries
    my $count = 0;
    my (@items, $total_usd, $total_local, $currency);
    my $hdr_cc = $c->req->headers->header('X-Country-ISO-Code');
    my $i = -1;
    for my $d (@$dl) {
        $i++;
        return $bad->("deliveries[$i] must be an object") unless ref $d eq 'HASH';
        my $dv = ref $d->{deliverable} eq 'HASH' ? $d->{deliverable} : $d;
        my $q = $d->{quantity} // 1;
        return $bad->("deliveries[$i].quantity must be a whole number >= 1") unless !ref $q && $q =~ /^\d+$/ && $q >= 1;
        $count += $q;
        my $bn = $dv->{brand_name};
        return $bad->("deliveries[$i].brand_name is required") unless defined $bn && !ref $bn && length $bn;
        my $cc = uc($dv->{country_code} // $hdr_cc // 'US');
        my $den = $dv->{denomination};
        my $pv = $dv->{product_value} // $d->{product_value};
        my ($b, $m) = CrSandbox::Data::find_brand($cc, $bn);
        if (!$b) { $problem->('NOT_AVAILABLE_PRODUCT', { index => $i, brand_name => $bn, country_code => $cc }); next }
        if ($m->{login}) { return { http => 422, error => { status => 422, detail => 'LOGIN_REQUIRED', moreDetails => { brand_name => $b->{brand} } } } }
        if (${ $b->{is_out_of_stock} }) { $problem->('OUT_OF_STOCK', { index => $i, brand_name => $b->{brand} }) }
        my ($value, $dname, $loc) = CrSandbox::Data::match_product($m, (defined $den ? "$den" : undef), $pv);
        if (!defined $value) {
            $problem->('NOT_AVAILABLE_PRODUCT', { index => $i, brand_name => $b->{brand}, denomination => $den,
                defined $pv ? (product_value => $pv) : () });
            next;
        }
        my $ben = $dv->{beneficiary_account};
        my $phone = $m->{delivery} eq 'by_phone';
        if (!defined $ben || ref $ben || ($phone ? $ben !~ $E164_RE : $ben !~ $EMAIL_RE)) {
            $problem->('INVALID_BENEFICIARY_ACCOUNT', { index => $i, brand_name => $b->{brand},
                expected => ($phone ? 'phone_number_e164' : 'email') });
        }
        my $usd = $value * ($CrSandbox::Data::CUR{ $m->{cur} }[3] // 1);
        $total_usd += $usd * $q;
        $total_local += $value * $q;
        $currency //= $m->{cur};
        push @items, { brand => $b, meta => $m, quantity => $q + 0, deliverable => {
            brand_name => $b->{brand}, country_code => $cc, denomination => $dname,
            localized_denomination => $loc, beneficiary_account => $ben,
            ($dname eq 'range' ? (product_value => num($value)) : ()),
            original_price => CrSandbox::Data::num_str($value), currency_code => $m->{cur},
        } };
    }
    $problem->('PRODUCT_COUNT_EXCEEDED', { max => $CFG{max_products} + 0, count => $count }) if $count > $CFG{max_products};

    # coupons
    my $coupon = $body->{promo_code} // $body->{coupon_code};
    my $discount = 0;
    if (defined $coupon && length $coupon) {
        my %coupons = (WELCOME5 => 0.05, SANDBOX10 => 0.10);
        my %bad = (EXPIRED => 'COUPON_EXPIRED', SPENT => 'COUPON_ALREADY_SPENT', MAXED => 'COUPON_MAX_USAGE_REACHED',
            INACTIVE => 'COUPON_NOT_ACTIVE', MEMBERS => 'COUPON_REQUIRES_LOGIN');
        if (exists $coupons{ uc $coupon }) { $discount = $coupons{ uc $coupon } }
        elsif ($bad{ uc $coupon }) { $problem->($bad{ uc $coupon }, { coupon_code => $coupon }) }
        else { $problem->('COUPON_NOT_FOUND', { coupon_code => $coupon }) }
    }

    # amounts
    $total_usd //= 0;
    my ($ca, $oca) = ('0', '0');
    if ($cur && @items) {
        $oca = CrSandbox::Data::coin_amount($total_usd, $coin);
        $ca = CrSandbox::Data::coin_amount($total_usd * (1 - $discount), $coin);
        if ($total_usd < $CFG{min_order_usd} || ($network && defined $network->{threshold} && $ca < $network->{threshold})) {
            $problem->('AMOUNT_LESS_THEN_MINIMUM_ALLOWED', { min_coin_amount => ($network ? $network->{threshold} : undef), coin => $coin });
        }
        $problem->('MAXIMUM_AMOUNT_PER_ORDER_EXCEEDED', { max_amount => "$CFG{max_order_usd} USD" }) if $total_usd > $CFG{max_order_usd};
    }
    return {
        problems => \@problems, items => \@items, coin => $coin, network => ($network ? $network->{name} : undef),
        coin_amount => $ca, original_coin_amount => $oca, via => $via->{name}, email => $email,
        total_usd => $total_usd, total_local => $total_local // 0, currency => $currency // 'USD',
        coupon => (defined $coupon && length $coupon ? $coupon : undef), lang => $body->{lang} // 'en',
        refund => $body->{refund_wallet_address},
    };
}
sub num { my $v = shift; $v == int($v) ? int($v) : $v + 0 }

sub json_body ($c) {
    my $raw = $c->req->body;
    my $j = eval { $JSON->decode($raw) };
    return (undef, "body is not valid JSON") unless defined $j || (defined $raw && $raw eq 'null');
    return ($j, undef);
}

# ------------------------------------------------------------------ control API
# Registered before the upstream routes; never recorded, never faulted.
sub ctl_json ($c) { my $j = eval { $JSON->decode($c->req->body || '{}') }; return $j }

get '/_sandbox/health' => sub ($c) {
    send_json($c, 200, { ok => $TRUE, pid => $$, listen => $LISTEN, orders => scalar(keys %ORDERS),
        subscribers => (List::Util::sum0(map { scalar keys %{ $_->{subs} } } values %ORDERS)),
        requests => scalar @REQ, faults => scalar @FAULTS });
};

get '/_sandbox/requests' => sub ($c) {
    my ($p, $m, $since) = ($c->param('path'), $c->param('method'), $c->param('since'));
    my @r = grep { (!defined $p || index($_->{path}, $p) == 0) && (!defined $m || $_->{method} eq uc $m)
        && (!defined $since || $_->{id} > $since) } @REQ;
    send_json($c, 200, \@r);
};
del '/_sandbox/requests' => sub ($c) { my $n = @REQ; @REQ = (); send_json($c, 200, { cleared => $n }) };

get '/_sandbox/connections' => sub ($c) {
    my $p = $c->param('path');
    my (%n, %remote, @order);
    for my $r (grep { !defined $p || index($_->{path}, $p) == 0 } @REQ) {
        push @order, $r->{connection} unless $n{ $r->{connection} }++;
        $remote{ $r->{connection} } = $r->{remote};
    }
    send_json($c, 200, { count => scalar(@order),
        connections => [ map { { id => $_, remote => $remote{$_}, requests => $n{$_} } } @order ] });
};

get '/_sandbox/faults' => sub ($c) { send_json($c, 200, \@FAULTS) };
post '/_sandbox/faults' => sub ($c) {
    my $j = ctl_json($c);
    my @in = ref $j eq 'ARRAY' ? @$j : ($j);
    my @out;
    for my $f (@in) {
        my $r = eval { add_fault($f) };
        return send_error($c, 400, 'BAD_FAULT', { reason => "$@" =~ s/\s+$//r }) unless $r;
        push @out, $r;
    }
    send_json($c, 201, ref $j eq 'ARRAY' ? \@out : $out[0]);
};
del '/_sandbox/faults' => sub ($c) { my $n = @FAULTS; @FAULTS = (); send_json($c, 200, { cleared => $n }) };
del '/_sandbox/faults/:fid' => sub ($c) {
    my $n = @FAULTS;
    @FAULTS = grep { $_->{id} != $c->param('fid') } @FAULTS;
    send_json($c, $n == @FAULTS ? 404 : 200, { cleared => $n - @FAULTS });
};

get '/_sandbox/config' => sub ($c) { send_json($c, 200, \%CFG) };
post '/_sandbox/config' => sub ($c) {
    my $j = ctl_json($c);
    return send_error($c, 400, 'BAD_CONFIG') unless ref $j eq 'HASH';
    for my $k (keys %$j) {
        return send_error($c, 400, 'BAD_CONFIG', { unknown => $k }) unless exists $CFG{$k};
        $CFG{$k} = ref $j->{$k} ? (${ $j->{$k} } ? 1 : 0) : $j->{$k};
    }
    restart_heartbeat();
    send_json($c, 200, \%CFG);
};

post '/_sandbox/reset' => sub ($c) {
    for my $o (values %ORDERS) {
        Mojo::IOLoop->remove($o->{timer}) if $o->{timer};
        for my $s (values %{ $o->{subs} }) { $s->{closed} = 1; close_conn($s->{c}) }
    }
    %ORDERS = (); @FAULTS = (); @REQ = (); %CFG = %CFG_DEFAULT;
    restart_heartbeat();
    send_json($c, 200, { ok => $TRUE });
};

get '/_sandbox/orders' => sub ($c) {
    send_json($c, 200, [ map { { order_id => $_->{order}{order_id}, order_state => $_->{order}{order_state},
        seq => $_->{seq}, subscribers => scalar keys %{ $_->{subs} } } }
        sort { $a->{created} <=> $b->{created} } values %ORDERS ]);
};

# Create an order without the validation rules of POST /v5/orders.
# Body (all optional): {order_id, order_state, request: <order body>, brand_name, country_code,
#   denomination, product_value, beneficiary_account, email, coin, network}
post '/_sandbox/orders' => sub ($c) {
    my $j = ctl_json($c) // {};
    return send_error($c, 400, 'BAD_ORDER') unless ref $j eq 'HASH';
    return send_error($c, 409, 'ORDER_EXISTS') if defined $j->{order_id} && $ORDERS{ $j->{order_id} };
    my $req = $j->{request} // {
        email => $j->{email} // 'buyer@example.com',
        user => { email => $j->{email} // 'buyer@example.com' },
        payment => { type => 'via', payment_via => 'USER_WALLET', coin => $j->{coin} // 'USDC', network => $j->{network} // 'Solana' },
        deliveries => [ { kind => 'giftcard', quantity => 1, deliverable => {
            brand_name => $j->{brand_name} // 'Airbnb', country_code => $j->{country_code} // 'US',
            denomination => $j->{denomination} // '100 USD',
            (defined $j->{product_value} ? (product_value => $j->{product_value}) : ()),
            beneficiary_account => $j->{beneficiary_account} // $j->{email} // 'buyer@example.com' } } ],
        lang => 'en',
    };
    my $chk = check_order($c, $req, 1);
    return send_json($c, 400, { status => 400, detail => 'BAD_ORDER', moreDetails => $chk->{error} // $chk->{problems} })
        if $chk->{http} || !@{ $chk->{items} } || !$chk->{network};
    my $o = new_order($chk, order_id => $j->{order_id}, order_state => $j->{order_state});
    send_json($c, 201, order_json($o));
};

sub with_order ($c, $cb) {
    my $o = $ORDERS{ $c->param('oid') };
    return send_error($c, 404, 'NOT_FOUND') unless $o;
    $cb->($o);
}
get '/_sandbox/orders/:oid' => sub ($c) {
    with_order($c, sub ($o) { send_json($c, 200, { order => order_json($o), seq => $o->{seq},
        subscribers => scalar keys %{ $o->{subs} } }) });
};
get '/_sandbox/orders/:oid/sent' => sub ($c) {
    with_order($c, sub ($o) { send_json($c, 200, { sent => $o->{sent} // [] }) });
};
get '/_sandbox/orders/:oid/subscribers' => sub ($c) {
    my $o = $ORDERS{ $c->param('oid') };
    send_json($c, 200, { count => $o ? scalar(keys %{ $o->{subs} }) : 0 });
};
post '/_sandbox/orders/:oid/advance' => sub ($c) {
    with_order($c, sub ($o) { my $ch = advance($o); send_json($c, 200, { changed => $ch ? $TRUE : $FALSE, order => order_json($o) }) });
};
post '/_sandbox/orders/:oid/state' => sub ($c) {
    with_order($c, sub ($o) {
        my $j = ctl_json($c);
        return send_error($c, 400, 'BAD_STATE') unless ref $j eq 'HASH' && defined $j->{order_state};
        set_state($o, $j->{order_state}, payment_state => $j->{payment_state}, delivery_state => $j->{delivery_state},
            fields => $j->{fields}, silent => ($j->{notify} // 1) ? 0 : 1);
        send_json($c, 200, order_json($o));
    });
};
# Raw bytes to every open stream of the order (verbatim); ?close=1 ends them after.
post '/_sandbox/orders/:oid/push' => sub ($c) {
    with_order($c, sub ($o) {
        my $raw = $c->req->body;
        my @subs = map { $o->{subs}{$_} } sort { $a <=> $b } keys %{ $o->{subs} };
        my $n = 0;
        for my $s (@subs) {
            next if $s->{closed};
            $n++;
            if (length $raw) { $s->{c}->write_chunk($raw) }
            if ($c->param('close')) { $s->{closed} = 1; $s->{c}->finish }
        }
        send_json($c, 200, { subscribers => $n });
    });
};
# End the order's open streams: gracefully (terminating chunk), or ?abrupt=1 (socket closed).
post '/_sandbox/orders/:oid/close' => sub ($c) {
    with_order($c, sub ($o) {
        my $n = 0;
        for my $s (values %{ $o->{subs} }) {
            next if $s->{closed};
            $s->{closed} = 1; $n++;
            $c->param('abrupt') ? close_conn($s->{c}) : $s->{c}->finish;
        }
        send_json($c, 200, { closed => $n });
    });
};
del '/_sandbox/orders/:oid' => sub ($c) {
    with_order($c, sub ($o) {
        Mojo::IOLoop->remove($o->{timer}) if $o->{timer};
        delete $ORDERS{ $o->{order}{order_id} };
        send_json($c, 200, { deleted => $TRUE });
    });
};
any '/_sandbox/*rest' => sub ($c) { send_error($c, 404, 'NO_SUCH_CONTROL') };

# ------------------------------------------------------------------ upstream API
sub cached_doc ($key, $make) { $DOC_CACHE{$key} //= jbytes($make->()) }
sub cc_ok { defined $_[0] && $_[0] =~ /^[A-Za-z]{2}$/ }

group {
under \&gate;

get '/v3/payment_vias' => sub ($c) {
    send_json($c, 200, cached_doc('vias', \&CrSandbox::Data::payment_vias));
};

get '/v2/brands' => sub ($c) {
    my $cc = $c->param('country_code');
    return send_error($c, 400, 'INVALID_REQUEST', { reason => 'country_code is required' }) unless cc_ok($cc);
    send_json($c, 200, cached_doc('brands:' . uc $cc, sub { CrSandbox::Data::brands_doc(uc $cc) }));
};

get '/v2/homepage' => sub ($c) {
    my $cc = $c->param('country_code');
    return send_error($c, 400, 'INVALID_REQUEST', { reason => 'country_code is required' }) unless cc_ok($cc);
    send_json($c, 200, cached_doc('home:' . uc $cc, sub { CrSandbox::Data::homepage_doc(uc $cc) }));
};

get '/v5/products/country/:cc' => sub ($c) {
    my $cc = $c->param('cc');
    return send_error($c, 400, 'INVALID_REQUEST', { reason => 'bad country code' }) unless cc_ok($cc);
    my ($fam, $brand) = ($c->param('family_name'), $c->param('brand_name'));
    return send_error($c, 400, 'INVALID_REQUEST', { reason => 'family_name or brand_name is required' })
        unless (defined $fam && length $fam) || (defined $brand && length $brand);
    my $coin = $c->param('coin');
    return send_error($c, 400, 'UNSUPPORTED_COIN', { coin => $coin }) if defined $coin && length $coin && !$CrSandbox::Data::COIN{ uc $coin };
    send_json($c, 200, variant(CrSandbox::Data::products_doc(uc $cc, family_name => $fam, brand_name => $brand,
        coin => $coin, lang => $c->param('lang'))));
};

get '/v4/products/price' => sub ($c) {
    my %q = map { $_ => $c->param($_) } qw(brand_name country_code face_value coin network);
    for (qw(brand_name country_code face_value coin)) {
        return send_error($c, 400, 'INVALID_REQUEST', { reason => "$_ is required" }) unless defined $q{$_} && length $q{$_};
    }
    return send_error($c, 400, 'INVALID_REQUEST', { reason => 'bad country code' }) unless cc_ok($q{country_code});
    my $coin = uc $q{coin};
    return send_error($c, 400, 'UNSUPPORTED_COIN', { coin => $coin }) unless $CrSandbox::Data::COIN{$coin};
    my ($cur) = grep { $_->{name} eq $coin } @{ CrSandbox::Data::payment_vias()->[0]{currencies} };
    return send_error($c, 422, 'SUSPENDED_COIN', { coin => $coin }) if $cur && ${ $cur->{is_suspended} };
    my ($b, $m) = CrSandbox::Data::find_brand($q{country_code}, $q{brand_name});
    return send_error($c, 404, 'NOT_FOUND') unless $b;
    my $fv = $q{face_value};
    return send_error($c, 400, 'INVALID_FACE_VALUE', { face_value => $fv }) unless $fv =~ /^\d+(?:\.\d+)?$/;
    my ($value, $den) = CrSandbox::Data::match_product($m, $m->{den}{range} ? 'range' : $fv, $fv);
    return send_error($c, 400, 'INVALID_FACE_VALUE', { face_value => $fv }) unless defined $value;
    my $usd = $value * ($CrSandbox::Data::CUR{ $m->{cur} }[3] // 1);
    my $ca = CrSandbox::Data::coin_amount($usd, $coin);
    my $r = $m->{den}{range};
    send_json($c, 200, variant({
        product_id => CrSandbox::Data::uuid('product', uc $q{country_code}, $b->{brand}, $r ? 'range' : $den),
        is_dynamic => $r ? $TRUE : $FALSE,
        ($r ? (range => { min => $r->[0] + 0.0, max => $r->[1] + 0.0, currency => $m->{cur}, step_size => 1.0, default => sprintf('%.1f', $r->[1]) }) : ()),
        coin_amount => $ca, coin => $coin, original_coin_amount => $ca,
        payment_method => CrSandbox::Data::payment_method($coin, $q{network}),
        delivery_type => $m->{delivery}, points => sprintf('%d', $usd * 0.4), product_type => $b->{product_type},
        face_value => { currency_code => $m->{cur}, amount => { type => 'fixed', price => CrSandbox::Data::num_str($value) } },
        quoted_at => now_s(),
    }));
};

post '/v5/orders/validations' => sub ($c) {
    my ($body, $err) = json_body($c);
    return send_error($c, 400, 'INVALID_REQUEST', { reason => $err }) if $err;
    my $chk = check_order($c, $body, 0);
    return send_json($c, $chk->{http}, $chk->{error}) if $chk->{http};
    my $i = 0;
    my $vid = ++$VAL_SEQ;
    send_json($c, 200, variant({
        coin => $chk->{coin}, coin_amount => $chk->{coin_amount}, original_coin_amount => $chk->{original_coin_amount},
        coupon_code => $chk->{coupon}, loyalty_summary => undef,
        deliveries => [ map { { id => CrSandbox::Data::uuid('validation', $vid, $i++), delivery_state => 'Created',
            kind => $_->{brand}{kind}, quantity => $_->{quantity}, deliverable => $_->{deliverable} } } @{ $chk->{items} } ],
        problems => (@{ $chk->{problems} } ? $chk->{problems} : $CFG{empty_problems} eq '[]' ? [] : undef),
    }));
};

post '/v5/orders' => sub ($c) {
    my ($body, $err) = json_body($c);
    return send_error($c, 400, 'INVALID_REQUEST', { reason => $err }) if $err;
    my $chk = check_order($c, $body, 1);
    return send_json($c, $chk->{http}, $chk->{error}) if $chk->{http};
    if (@{ $chk->{problems} }) {
        return send_json($c, 422, { status => 422, detail => $chk->{problems}[0]{problem},
            moreDetails => $chk->{problems}[0]{moreDetails}, problems => $chk->{problems} });
    }
    my $o = new_order($chk);
    send_json($c, 200, order_json($o));
};

get '/v5/orders/:oid' => sub ($c) {
    my $o = $ORDERS{ $c->param('oid') };
    return send_error($c, 404, 'NOT_FOUND') unless $o;
    send_json($c, 200, order_json($o));
};

get '/v5/orders/:oid/subscribe' => sub ($c) {
    my $f = $c->stash('sandbox.fault');
    if ($f && $f->{mode} eq 'stream_status') {
        my $st = $f->{status} // 503;
        return send_error($c, $st, $f->{detail} // 'STREAM_UNAVAILABLE');
    }
    my $id = $c->param('oid');
    my $h = $c->res->headers;
    $h->content_type('text/event-stream');
    $h->cache_control('no-cache');
    $c->inactivity_timeout(0);
    my $o = $ORDERS{$id};
    unless ($o) {
        $c->write_chunk("event: stop\ndata: {\"error\":\"not found\"}\n\n")->finish;
        return;
    }
    my $sid = ++$SUB_SEQ;
    my $sub = { c => $c, id => $sid, sent => 0, fault => $f, garbage => 0,
        last_event_id => $c->req->headers->header('Last-Event-ID') };
    $o->{subs}{$sid} = $sub;
    $c->on(finish => sub { delete $o->{subs}{$sid}; $sub->{closed} = 1; delete $sub->{c} });
    if ($f && $f->{mode} eq 'stream_silent') { $c->write_chunk(undef); return }    # headers only, then nothing
    $c->write_chunk("retry: $CFG{sse_retry}\n\n") if $CFG{sse_retry} > 0;
    sub_write($sub, sse_event($o), 1);
    sub_stop($sub) if $TERMINAL{ $o->{order}{order_state} } && !$sub->{closed};
};

get '/api/available-countries' => sub ($c) {
    send_json($c, 200, cached_doc('countries', sub { { countries => CrSandbox::Data::countries() } }));
};

any '/*rest' => { rest => '' } => sub ($c) { send_error($c, 404, 'NOT_FOUND') };
};

# ------------------------------------------------------------------ timers, start
my $HB;
sub restart_heartbeat {
    Mojo::IOLoop->remove($HB) if $HB;
    undef $HB;
    return unless $CFG{heartbeat} > 0;
    $HB = Mojo::IOLoop->recurring($CFG{heartbeat} => sub {
        for my $o (values %ORDERS) {
            for my $s (values %{ $o->{subs} }) { $s->{c}->write_chunk(": heartbeat\n\n") unless $s->{closed} }
        }
    });
}
restart_heartbeat();

if (my $ppid = $opt{'parent-pid'}) {
    Mojo::IOLoop->recurring(0.5 => sub {
        unless (kill 0, $ppid) { app->log->warn("cr-sandbox: parent $ppid is gone, exiting"); Mojo::IOLoop->stop; exit 0 }
    });
}

# The daemon's own banner would go to stdout: silence it, and print ours once the
# loop runs (the daemon listens before starting the loop, so the port is open).
my $SERVER;
app->hook(before_server_start => sub ($server, $app) { $SERVER = $server; $server->silent(1) });
Mojo::IOLoop->next_tick(sub {
    my $url = $LISTEN;
    if ($url =~ /:0$/ && $SERVER) {    # --listen ...:0 — report the port the kernel picked
        my ($port) = @{ $SERVER->ports };
        $url =~ s/:0$/:$port/ if $port;
    }
    $| = 1;
    print "cr-sandbox listening on $url\n";
});

$SIG{PIPE} = 'IGNORE';
app->start('daemon', '-l', $DAEMON_LISTEN, '-i', $opt{'inactivity-timeout'}, '-k', $opt{'keep-alive-timeout'},
    '-r', $opt{'max-requests'}, '-c', $opt{'max-clients'});
