# Orders are never created twice across graceful restarts, full restarts,
# cache churn and a server farm (issue #10), against a real httpd:
#
#   1. a keyed order retried after `graceful`, and after a full stop/start,
#      is replayed (the default idempotency store survives both);
#   2. 5,000 catalog stores into a small shmcb between an order and its
#      retry do not evict its record;
#   3. two bodies that differ only in a number beyond int64, under one key:
#      the second is 422 IDEMPOTENCY_KEY_REUSED (identity from the exact
#      tokens, not from json-c's clamped integers);
#   4. two Apaches sharing a memcached, then a Redis: 50 trials each, one key
#      released to four clients (two per server) at the same instant:
#      exactly one upstream order per key, every other answer a replay or
#      409 IDEMPOTENCY_IN_FLIGHT; the store stopped mid-run: keyed submits
#      get 503 IDEMPOTENCY_UNAVAILABLE with Retry-After and no upstream
#      call; started again: they succeed; nothing is created twice;
#   4b. `kill -9` of the child sending a keyed order: its retry is told
#      409 ORDER_OUTCOME_UNKNOWN, never sent again;
#   5. `kill -9` of the children holding order streams: the stream slots
#      come back within seconds and a new stream gets 200.
#
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest qw(free_port);
use CrSandbox;
use CrStore;
use SseClient;
use HTTP::Tiny;
use JSON::PP;
use POSIX ();
use IO::Socket::INET;
use IO::Handle;
use Time::HiRes qw(time sleep);

my $J = JSON::PP->new->canonical->utf8;
my $RUN = sprintf '%x%x', $$, int(time * 1000) % 0xFFFFFF;


my $sb = CrSandbox->start;
my $ua = HTTP::Tiny->new(timeout => 30);

sub order_body {
    my ($tag, %x) = @_;
    return { deliveries => [ { kind => 'giftcard', quantity => 1, deliverable => {
                brand_name => 'Airbnb', country_code => 'US', denomination => '100 USD',
                beneficiary_account => "$tag\@example.com" } } ],
        payment => { type => 'via', payment_via => 'USER_WALLET', coin => 'USDC', network => 'Solana' },
        user => { email => "$tag\@example.com", has_accepted_newsletter => JSON::PP::true },
        lang => 'en' };
}

sub post {
    my ($httpd, $bytes, %h) = @_;
    my $r = $ua->request(POST => $httpd->url('/api/orders'), {
        content => ref $bytes ? $J->encode($bytes) : $bytes,
        headers => { 'Content-Type' => 'application/json', %h } });
    my $j = eval { decode_json($r->{content}) };
    return { status => $r->{status}, replayed => $r->{headers}{'idempotent-replayed'}, json => $j,
        body => $r->{content}, headers => $r->{headers} };
}

# Upstream POST /v5/orders whose body names this tag.
sub orders_for {
    my ($tag) = @_;
    return scalar grep { ($_->{body} // '') =~ /\Q$tag\E\@example\.com/ }
        @{ $sb->requests(path => '/v5/orders', method => 'POST') };
}
sub key { "$RUN-$_[0]" }

my $status_conf = <<'C';
<Location /server-status>
    SetHandler server-status
</Location>
C

# ---- 1-3. the default store on one server ----------------------------------------------------
{
    my $httpd = CrTest->start(sandbox => $sb,
        conf => qq{CryptorefillsCache "shmcb:\@DIR\@/small(262144)"\nCryptorefillsCacheTTL 1\n$status_conf},
        # The largest catalogs do not fit a 256 KB shmcb: shmcb says so at error.
        expect_errors => [qr/AH00844: inserting socache entry larger/, qr/AH00833: can't store an socache entry/]);
    END { $httpd->stop(quiet => 1) if $httpd && $httpd->{pid} }

    # graceful restart
    my $b = order_body("graceful-$RUN");
    my $r1 = post($httpd, $b, 'Idempotency-Key' => key('graceful'));
    is($r1->{status}, 200, 'order with a key: 200') or diag $r1->{body};
    ok($httpd->graceful, 'graceful restart');
    my $r2 = post($httpd, $b, 'Idempotency-Key' => key('graceful'));
    {
        is($r2->{replayed}, 'true', 'retry after graceful: replayed');
        ok($r2->{body} eq $r1->{body}, '... the stored answer, byte for byte');
        is(orders_for("graceful-$RUN"), 1, '... one upstream order');
    }

    # full stop / start
    $b = order_body("restart-$RUN");
    $r1 = post($httpd, $b, 'Idempotency-Key' => key('restart'));
    is($r1->{status}, 200, 'order with a key: 200') or diag $r1->{body};
    $httpd->stop(quiet => 1);
    $httpd->launch;
    $r2 = post($httpd, $b, 'Idempotency-Key' => key('restart'));
    {
        is($r2->{replayed}, 'true', 'retry after a full stop/start: replayed');
        ok($r2->{body} eq $r1->{body}, '... the stored answer, byte for byte');
        is(orders_for("restart-$RUN"), 1, '... one upstream order');
    }

    # catalog churn: >= 5,000 socache stores (meta + body + gzip per fetch)
    $b = order_body("churn-$RUN");
    $r1 = post($httpd, $b, 'Idempotency-Key' => key('churn'));
    is($r1->{status}, 200, 'order with a key: 200') or diag $r1->{body};
    my @cc = map { $_->{isoCode} } @{ decode_json($ua->get($httpd->url('/api/countries'))->{content})->{countries} };
    my $fetched = sub { scalar @{ $sb->requests(path => '/v2/brands') } + scalar @{ $sb->requests(path => '/v2/homepage') } };
    my $start = $fetched->();
    my $deadline = time + 120;
    while ($fetched->() - $start < 1700 && time < $deadline) {
        for my $c (@cc) {
            $ua->get($httpd->url("/api/brands?country_code=$c"));
            $ua->get($httpd->url("/api/homepage?country_code=$c"));
        }
        sleep 1.1;    # CryptorefillsCacheTTL 1: every catalog is fetched and stored again
    }
    cmp_ok($fetched->() - $start, '>=', 1700, 'at least 1,700 catalog fetches (>= 5,000 cache stores)');
    $r2 = post($httpd, $b, 'Idempotency-Key' => key('churn'));
    {
        is($r2->{replayed}, 'true', 'retry after the churn: replayed');
        is(orders_for("churn-$RUN"), 1, '... one upstream order');
    }

    # numbers beyond int64: two different bodies
    my $base = $J->encode(order_body("int64-$RUN"));
    (my $big1 = $base) =~ s/^\{/{"extra":100000000000000000000,/;
    (my $big2 = $base) =~ s/^\{/{"extra":100000000000000000001,/;
    $r1 = post($httpd, $big1, 'Idempotency-Key' => key('int64'));
    is($r1->{status}, 200, 'order with "extra":1e20: 200') or diag $r1->{body};
    $r2 = post($httpd, $big2, 'Idempotency-Key' => key('int64'));
    {
        is($r2->{status}, 422, 'same key, "extra":1e20+1: 422');
        is($r2->{json}{detail}, 'IDEMPOTENCY_KEY_REUSED', '... IDEMPOTENCY_KEY_REUSED');
        ok(!defined $r2->{replayed}, '... not a replay');
    }
    is(orders_for("int64-$RUN"), 1, '... one upstream order');
    # The same value written another way is the same body.
    (my $big3 = $base) =~ s/^\{/{"extra":1.00000000000000000000e20 ,/;
    my $r3 = post($httpd, $big3, 'Idempotency-Key' => key('int64'));
    {
        is($r3->{replayed}, 'true', '"extra":1.00000000000000000000e20 under that key: replayed (same value)');
    }

    $httpd->stop;
}

# ---- 4. a farm on one memcached, then one Redis ----------------------------------------------
# One raw request, sent the moment a byte arrives on $go; returns "status replayed detail".
sub racer {
    my ($port, $body, $key, $go, $ready) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 30)
        or return "000 - connect";
    my $req = "POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        . "Idempotency-Key: $key\r\nContent-Length: " . length($body) . "\r\nConnection: close\r\n\r\n$body";
    syswrite $ready, 'r';
    sysread $go, my $byte, 1;
    syswrite $s, $req;
    local $/;
    my $resp = <$s> // '';
    my ($st) = $resp =~ m{^HTTP/1\.\d (\d+)};
    my $rep = $resp =~ /^Idempotent-Replayed: true/mi ? 'replayed' : '-';
    my ($detail) = $resp =~ /"detail"\s*:\s*"([A-Z_]+)"/;
    return join ' ', $st // '000', $rep, $detail // '-';
}

for my $name (qw(memcache redis)) {
    SKIP: {
        skip(CrStore->binary($name) . " not installed", 1) unless CrStore->available($name);
        # (a Redis that evicts under memory pressure: a start-up warning too)
        my $store = CrStore->new($name, $name eq 'redis' ? ('--maxmemory', '64mb', '--maxmemory-policy', 'allkeys-lru') : ());
        my $spec = $store->spec;
        # CryptorefillsIdempotencyStore left unset: the cache's server is used.
        my @farm = map { CrTest->start(sandbox => $sb, modules => ["socache_$name"],
            conf => "CryptorefillsCache $spec\n",
            expect_errors => [
                # the socache provider reports each failed call while the store is down
                qr/\[socache_(?:redis|memcache):(?:error|crit)\]/,
                # the module: idempotency store unavailable (an order refused with 503)
                qr/\[cryptorefills:error\].*idempotency store/i,
            ]) } 1 .. 2;
        like($farm[0]->slurp('error.log'),
             qr/\[cryptorefills:warn\].*CR01410: CryptorefillsIdempotencyStore unset: order records share \Q$spec\E/,
             "$name: falling back to the cache's server is a start-up warning (CR01410)");
        like($farm[0]->slurp('error.log'),
             qr/CR01411: idempotency store \Q$spec\E may evict order records \(maxmemory 67108864 with maxmemory-policy allkeys-lru\)/,
             "$name: an evicting Redis is named at start-up (CR01411)") if $name eq 'redis';

        my (%answers, $bad);
        for my $trial (1 .. 50) {
            my $tag = "farm-$name-$trial-$RUN";
            my $body = $J->encode(order_body($tag));
            my $key = key("farm-$name-$trial");
            my (@kids, @go, @ready, @out);
            for my $i (0 .. 3) {
                pipe(my $gr, my $gw) or die; pipe(my $rr, my $rw) or die; pipe(my $or, my $ow) or die;
                my $kid = fork // die "fork: $!";
                if (!$kid) {
                    close $gw; close $rr; close $or;
                    my $res = racer($farm[$i % 2]->port, $body, $key, $gr, $rw);
                    syswrite $ow, $res;
                    POSIX::_exit(0);
                }
                close $gr; close $rw; close $ow;
                push @kids, $kid; push @go, $gw; push @ready, $rr; push @out, $or;
            }
            sysread $_, my $x, 1 for @ready;       # all four connected
            syswrite $_, 'g' for @go;              # released together
            my @res;
            for my $fh (@out) { local $/; push @res, scalar(<$fh>) // '000 - -' }
            waitpid $_, 0 for @kids;
            my $created = grep { /^200 - / } @res;
            my $others = grep { /^200 replayed / || /^409 - IDEMPOTENCY_IN_FLIGHT/ } @res;
            $answers{$_}++ for @res;
            my $up = orders_for($tag);
            $bad .= "trial $trial: upstream orders $up, answers [@res]\n"
                unless $up == 1 && $created == 1 && $others == 3;
        }
        {
            ok(!$bad, "$name farm: 50 trials x 4 simultaneous submits of one key: one upstream order each, "
                . "every other answer a replay or 409 IDEMPOTENCY_IN_FLIGHT")
                or diag $bad . join '', map { "  $answers{$_} x $_\n" } sort keys %answers;
        }

        # the store stops mid-run
        $store->stop('KILL');
        my @down;
        for my $i (1 .. 4) {
            my $tag = "down-$name-$i-$RUN";
            push @down, [ $tag, post($farm[$i % 2], order_body($tag), 'Idempotency-Key' => key("down-$name-$i")) ];
        }
        {
            is_deeply([ map { $_->[1]{status} } @down ], [ (503) x 4 ], "$name down: keyed submits get 503");
            is_deeply([ map { $_->[1]{json}{detail} // '' } @down ], [ ('IDEMPOTENCY_UNAVAILABLE') x 4 ],
                "$name down: ... IDEMPOTENCY_UNAVAILABLE");
            ok(!grep({ ($_->[1]{headers}{'retry-after'} // '') !~ /^\d+$/ } @down), "$name down: ... with Retry-After");
            is(0 + grep({ orders_for($_->[0]) } @down), 0, "$name down: ... and no upstream call");
        }
        # started again: the same submits succeed (memcache retries a dead server after 5 s)
        $store->start;
        my @up;
        for my $d (@down) {
            my ($tag) = $d->[0];
            my ($i) = $tag =~ /^down-\w+-(\d+)-/;
            # Each child finds the store back on its own (memcache retries a
            # dead server after 5 s): a shopper's client retries a 503.
            my $until_up = sub {
                my ($srv) = @_;
                my $r;
                my $deadline = time + 15;
                do { $r = post($srv, order_body($tag), 'Idempotency-Key' => key("down-$name-$i")); sleep 0.5 if $r->{status} == 503 }
                    while ($r->{status} == 503 && time < $deadline);
                return $r;
            };
            push @up, $until_up->($farm[$i % 2]);
            # and a retry of each, on the other server, replays
            push @up, $until_up->($farm[($i + 1) % 2]);
        }
        is_deeply([ map { $_->{status} } @up ], [ (200) x 8 ], "$name up again: keyed submits succeed");
        {
            is_deeply([ map { orders_for($_->[0]) } @down ], [ (1) x 4 ], "$name: nothing created twice");
        }
        $_->stop for @farm;
        $store->stop('KILL');
    }
}

# ---- 4b. a child killed while its order is at the upstream ------------------------------------
# The in-flight claim is kept for the window: once no exchange can still be
# running (connect timeout + timeout + 5 s), a retry is told the outcome is
# unknown; it is never sent again.
{
    my $httpd = CrTest->start(sandbox => $sb, conf => "CryptorefillsConnectTimeout 1\nCryptorefillsTimeout 3\n",
        expect_errors => [qr/exit signal Killed/]);
    my $tag = "killed-$RUN";
    my $fid = $sb->fault(match => '/v5/orders', method => 'POST', mode => 'latency', ms => 6000);
    my $kid = fork // die "fork: $!";
    if (!$kid) {
        post($httpd, order_body($tag), 'Idempotency-Key' => key('killed'));
        POSIX::_exit(0);
    }
    my $deadline = time + 10;
    sleep 0.1 while !orders_for($tag) && time < $deadline;
    is(orders_for($tag), 1, 'an order is at the (slow) upstream');
    my @children = grep { /^\d+$/ } split /\s+/, `pgrep -P $httpd->{pid}`;
    kill 'KILL', @children;
    waitpid $kid, 0;
    $sb->remove_fault($fid);
    my $r;
    $deadline = time + 30;
    do { $r = post($httpd, order_body($tag), 'Idempotency-Key' => key('killed')) }
        while ($r->{status} == 409 && ($r->{json}{detail} // '') eq 'IDEMPOTENCY_IN_FLIGHT' && time < $deadline);
    is($r->{status}, 409, 'its retry after the child was killed: 409') or diag $r->{body};
    is($r->{json}{detail}, 'ORDER_OUTCOME_UNKNOWN', '... ORDER_OUTCOME_UNKNOWN (the claim outlived its child)');
    is(orders_for($tag), 1, '... and the order was not sent again');
    $httpd->stop;
}

# ---- 5. stream slots after kill -9 -----------------------------------------------------------
{
    $sb->create_order(order_id => "kill-$_") for 1 .. 3;
    my $httpd = CrTest->start(sandbox => $sb, conf => "CryptorefillsMaxStreams 2\n$status_conf",
        mpm_conf => "StartServers 1\nServerLimit 2\nThreadsPerChild 8\nMaxRequestWorkers 16\nMinSpareThreads 1\nMaxSpareThreads 16\n",
        expect_errors => [qr/exit signal Killed/]);
    my $open = sub {
        my $c = SseClient->new(port => $httpd->port, path => "/api/orders/$_[0]/subscribe");
        $c->wait_for(sub { $_[0]->events >= 1 || $_[0]{done} }, 5);
        return $c;
    };
    my @c = map { $open->("kill-$_") } 1 .. 2;
    is_deeply([ map { $_->{status} } @c ], [ 200, 200 ], 'two streams open (the cap)');
    my $third = $open->('kill-3');
    is($third->{status}, 503, 'a third: 503 TOO_MANY_STREAMS');
    $third->close;
    my @children = grep { /^\d+$/ } split /\s+/, `pgrep -P $httpd->{pid}`;
    ok(@children, 'httpd has children: ' . join(',', @children));
    kill 'KILL', @children;
    $_->close for @c;
    my ($ok, $deadline) = (0, time + 10);
    while (time < $deadline) {
        my $c = $open->('kill-3');
        $ok = ($c->{status} // 0) == 200 && !$c->{done};
        $c->close;
        last if $ok;
        sleep 0.5;
    }
    {
        ok($ok, 'after kill -9 of the children holding them, a new stream gets 200 within 10 s');
    }
    $httpd->stop;
}

done_testing;
