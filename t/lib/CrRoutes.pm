# SPDX-License-Identifier: Apache-2.0
package CrRoutes;
# Every module route, exercised through a given client and transport, for the
# deployment tests (HTTP/2, TLS upstream, reverse proxy):
#
#   my $oid = CrRoutes::every_route(
#       label => 'h2 over TLS', base => $httpd->url('/api'),
#       get => sub ($url, %o) { CrCurl::request(url => $url, %o, ...) },   # -> CrCurl-style result
#       version => '2',                         # expected HTTP version, optional
#   );
#
# Checks status, JSON body shape and the module's own headers on each route;
# returns the id of the order it created (for a stream test to follow).
use strict;
use warnings;
use Test::More;
use JSON::PP ();
use CrFixtures qw(%VALIDATE %CREATE);

my $J = JSON::PP->new->canonical;

my @GETS = (
    [ 'countries',        '/countries',                  sub { ref $_[0]{countries} eq 'ARRAY' && @{ $_[0]{countries} } == 233 } ],
    [ 'payment_vias',     '/payment_vias',               sub { ref $_[0] } ],
    [ 'brands',           '/brands?country_code=US',     sub { ref $_[0] eq 'HASH' && exists $_[0]{all_brands} } ],
    [ 'homepage',         '/homepage?country_code=US',   sub { ref $_[0] } ],
    [ 'products/country', '/products/country/US?brand_name=Airbnb', sub { ref $_[0] } ],
    [ 'products/price',   '/products/price?brand_name=Airbnb&country_code=US&face_value=100&coin=USDC', sub { ref $_[0] } ],
);

sub every_route {
    my (%o) = @_;
    my ($label, $base, $get) = @o{qw(label base get)};
    my $ver_ok = sub {
        my ($r, $what) = @_;
        is($r->{version}, $o{version}, "$label: $what answered over HTTP/$o{version}") if defined $o{version};
    };
    for my $g (@GETS) {
        my ($name, $path, $shape) = @$g;
        my $r = $get->("$base$path");
        is($r->{code}, 200, "$label: GET $name is 200") or diag substr($r->{body} // '', 0, 300);
        ok($r->{json} && $shape->($r->{json}), "$label: GET $name has the expected JSON");
        $ver_ok->($r, "GET $name");
    }
    my $r = $get->("$base/orders/validations", body => $J->encode(\%VALIDATE));
    is($r->{code}, 200, "$label: POST orders/validations is 200") or diag substr($r->{body} // '', 0, 300);
    ok($r->{json} && exists $r->{json}{problems}, "$label: validations answer lists problems");
    $ver_ok->($r, 'POST orders/validations');

    $r = $get->("$base/orders", body => $J->encode(\%CREATE),
                headers => [ 'Idempotency-Key: ' . join('-', 'deploy', $$, int(rand 1e9)) ]);
    ok($r->{code} == 200 || $r->{code} == 201, "$label: POST orders creates an order ($r->{code})")
        or diag substr($r->{body} // '', 0, 300);
    my $oid = $r->{json} && $r->{json}{order_id};
    ok($oid, "$label: the new order has an id");
    $ver_ok->($r, 'POST orders');

    $r = $get->("$base/orders/" . ($oid // 'none'));
    is($r->{code}, 200, "$label: GET orders/{id} is 200");
    like($r->{headers}{'cache-control'} // '', qr/no-store/, "$label: GET orders/{id} is no-store");
    $ver_ok->($r, 'GET orders/{id}');

    $r = $get->("$base/no-such-route");
    is($r->{code}, 404, "$label: unknown route is 404");
    is($r->{json} && $r->{json}{detail}, 'NOT_FOUND', "$label: 404 is the module's JSON");
    return $oid;
}

# The order stream end to end: the current state on connect, each state the
# sandbox sends (WaitingForDelivery, Done) while nothing else is sent (the
# server's heartbeat must be long, so only a flushed event can arrive), then
# `stop`, then the stream closed cleanly.  Returns the relay delays (seconds,
# arrival minus the sandbox's recorded send time) of the pushed events.
#   CrRoutes::order_stream(label => ..., sb => $sb, oid => $oid,
#                          open => sub { CrCurl::stream(url => ..., ...) }, version => '2')
sub order_stream {
    my (%o) = @_;
    my ($label, $sb, $oid) = @o{qw(label sb oid)};
    my $s = $o{open}->();
    my @delays;
    my $e = $s->next_event(10);
    ok($e && $e->{data} && $e->{data} =~ /"order_state":"WaitingForPayment"/,
       "$label: stream opens with the current state") or do { diag 'got: ' . $s->raw; return () };
    is($s->version, $o{version}, "$label: the stream is HTTP/$o{version}") if defined $o{version};
    ok($sb->wait_subscribers($oid, 1, 5), "$label: the upstream stream is open");
    for my $state (qw(WaitingForDelivery Done)) {
        $sb->advance($oid);
        my $ev = $s->next_event(10);
        ok($ev && ($ev->{data} // '') =~ /"order_state":"\Q$state\E"/, "$label: $state arrives while the stream is otherwise idle")
            or do { diag 'got: ' . $s->raw; return @delays };
        my ($sent) = grep { $_->{state} eq $state } @{ $sb->sent($oid) };
        push @delays, $ev->{t} - $sent->{time} if $sent;
    }
    my $stop = $s->next_event(10);
    is($stop && $stop->{event}, 'stop', "$label: the upstream's stop is relayed");
    ok($s->wait_eof(10), "$label: the stream ends after stop");
    is($s->exit_code, 0, "$label: ended cleanly (curl exit 0, no stream reset)");
    return @delays;
}

sub median {
    my @d = sort { $a <=> $b } @_;
    return undef unless @d;
    return @d % 2 ? $d[$#d / 2] : ($d[@d / 2 - 1] + $d[@d / 2]) / 2;
}

1;
