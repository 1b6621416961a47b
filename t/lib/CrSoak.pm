# SPDX-License-Identifier: Apache-2.0
package CrSoak;
# The fault soak (issue #13), shared by bench/soak (long form) and
# t/90-soak.t (short form): N shoppers run the whole flow (catalog -> price
# -> validate -> order with an Idempotency-Key -> stream until Done) against
# two Apaches on one Redis, while faults are injected on a schedule:
# upstream resets after receiving an order, timeouts, 5xx bursts, a stalled
# stream, Redis restarted, graceful on each Apache, one child kill -9.
#
# A shopper behaves as the browser client does (docs/CLIENT.md): one key per
# checkout attempt, the same key again on a network error, 409, 429 or 5xx;
# the order then followed by its stream, reconnecting with Last-Event-ID,
# falling back to polling GET orders/{id}.  Each shopper is a process of its
# own, talking to either Apache at random (a load balancer's choice).
#
# CrSoak->run(shoppers => N, seconds => S, log => sub { ... }) returns the
# counts (see the end of run()).
use strict;
use warnings;
use CrTest qw(free_port);
use CrSandbox;
use SseClient;
use HTTP::Tiny;
use JSON::PP;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);

my $J = JSON::PP->new->canonical->utf8;
my $REDIS = '/usr/bin/redis-server';
my $PARTNER = 'partner-soak-secret-7731';

sub redis_available { -x $REDIS }

# ---- Redis, restartable on the same port -------------------------------------------------
sub _redis_start {
    my ($self) = @_;
    my $port = $self->{redis_port} //= free_port();
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$self->{dir}/redis.log";
        open STDERR, '>&', \*STDOUT;
        # Persistent, as docs/ROUTES.md asks of a Redis that keeps
        # Idempotency-Key records: every write in the append-only file, so
        # the restart below loses no record (nor catalog).
        exec $REDIS, '--port', $port, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes',
            '--appendfsync', 'always', '--dir', $self->{dir}, '--loglevel', 'warning';
        exit 127;
    }
    $self->{redis_pid} = $pid;
    my $deadline = time + 10;
    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 1);
        if ($s) { print $s "PING\r\n"; my $l = <$s>; return 1 if $l && $l =~ /PONG/ }
        sleep 0.05;
    }
    die "redis did not start on $port";
}
sub _redis_stop {
    my ($self) = @_;
    my $pid = delete $self->{redis_pid} or return;
    kill 'TERM', $pid;
    my $deadline = time + 5;
    while (time < $deadline) { return if waitpid($pid, WNOHANG) == $pid; sleep 0.05 }
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

# ---- one shopper ---------------------------------------------------------------------------
sub _uuid { sprintf '%08x-%04x-4%03x-a%03x-%012x', rand(2**32), rand(2**16), rand(2**12), rand(2**12), rand(2**48) }

sub _shopper {
    my ($self, $n, $until, $out) = @_;
    srand($$ ^ int(time * 1000));
    my $ua = HTTP::Tiny->new(timeout => 10, keep_alive => 1);
    my @srv = @{ $self->{servers} };
    my (@rec, $flow);
    my $pick = sub { $srv[int rand @srv] };
    my $req = sub {
        my ($route, $method, $path, %o) = @_;
        my $s = $pick->();
        my $r = $ua->request($method => $s->url("/api/$path"), \%o);
        my $leak = index(($r->{content} // '') . join(' ', %{ $r->{headers} || {} }), $PARTNER) >= 0;
        my ($detail) = $r->{status} >= 400 ? (($r->{content} // '') =~ /"detail"\s*:\s*"([^"]+)"/) : ();
        push @rec, { t => 'http', route => $route, status => $r->{status}, leak => $leak ? 1 : 0,
            server => $s->port, cache => $r->{headers}{'x-cryptorefills-cache'} // '',
            detail => $detail // ($r->{status} == 599 ? 'network' : '') };
        return $r;
    };
    while (time < $until) {
        $flow++;
        my $tag = "soak-$n-$flow";
        # catalog, price
        $req->('brands', GET => 'brands?country_code=US');
        $req->('price', GET => 'products/price?brand_name=Airbnb&country_code=US&face_value=25&coin=USDC');
        my $del = { beneficiary_account => "$tag\@example.com", brand_name => 'Airbnb', country_code => 'US',
            denomination => '25 USD' };
        my $pay = { type => 'via', payment_via => 'USER_WALLET', coin => 'USDC', network => 'Solana' };
        $req->('validations', POST => 'orders/validations',
            content => $J->encode({ email => "$tag\@example.com", payment => $pay, lang => 'en',
                deliveries => [ { %$del, localized_denomination => '25 USD' } ] }),
            headers => { 'Content-Type' => 'application/json' });
        # the order, with one key for this checkout attempt
        my $key = _uuid();
        my $body = $J->encode({ deliveries => [ { kind => 'giftcard', quantity => 1, deliverable => $del } ],
            payment => $pay, lang => 'en',
            user => { email => "$tag\@example.com", has_accepted_newsletter => JSON::PP::false } });
        my ($order, $last, $tries, @answers) = (undef, '', 0);
        my $give_up = time + 20;
        while (time < $give_up) {
            $tries++;
            my $r = $req->('orders', POST => 'orders', content => $body,
                headers => { 'Content-Type' => 'application/json', 'Idempotency-Key' => $key });
            my $j = eval { decode_json($r->{content}) } || {};
            $last = "$r->{status} " . ($j->{detail} // '');
            push @answers, $last;
            if ($r->{status} == 200 || $r->{status} == 201) { $order = $j->{order_id}; last }
            last if $r->{status} == 422 || $r->{status} == 400;     # definite refusal
            # The module says an earlier attempt may have created the order:
            # the storefront tells the shopper to check before ordering again
            # (docs/ROUTES.md); retrying the key only repeats the answer.
            last if $r->{status} == 409 && ($j->{detail} // '') eq 'ORDER_OUTCOME_UNKNOWN';
            # 409 (in flight), 429, 5xx, 599 (network): same key again
            sleep(0.3 + rand 0.7);
        }
        push @rec, { t => 'order', tag => $tag, key => $key, order_id => $order, tries => $tries, last => $last,
            answers => \@answers };
        next unless $order;
        # follow it to the end: stream, reconnect with Last-Event-ID, else poll
        my ($state, $last_id, %seen) = ('', undef);
        my $deadline = time + 25;
        while (time < $deadline && $state ne 'Done') {
            my $s = $pick->();
            my $c = eval { SseClient->new(port => $s->port, path => "/api/orders/$order/subscribe",
                headers => [ defined $last_id ? ('Last-Event-ID' => $last_id) : () ]) };
            if ($c) {
                $c->wait_for(sub {
                    for my $e ($_[0]->events) {
                        my $d = eval { decode_json(join "\n", @{ $e->{data} }) } or next;
                        next unless $d->{order_state};
                        $state = $d->{order_state};
                        $seen{$state} = 1;
                        $last_id = $e->{id} if defined $e->{id};
                    }
                    $state eq 'Done';
                }, 6);
                push @rec, { t => 'stream', status => $c->{status} // 0 };
                $c->close;
            }
            last if $state eq 'Done';
            my $r = $req->('order', GET => "orders/$order");
            my $j = eval { decode_json($r->{content}) } || {};
            if ($j->{order_state}) { $state = $j->{order_state}; $seen{$state} = 1 }
            sleep 0.5 unless $state eq 'Done';
        }
        push @rec, { t => 'states', tag => $tag, order_id => $order, final => $state, seen => [ sort keys %seen ] };
    }
    open my $fh, '>', $out or die $!;
    print $fh $J->encode(\@rec);
    close $fh;
}

# ---- the faults ----------------------------------------------------------------------------
sub _children_of { CrTest::children_of($_[0]) }

sub _faults {
    my ($self) = @_;
    my $sb = $self->{sb};
    my ($A, $B) = @{ $self->{servers} };
    return (
        [ 'upstream reset after receiving an order', sub {
            $sb->fault(match => '/v5/orders', regex => '^/v5/orders$', method => 'POST', mode => 'drop', after => JSON::PP::true, times => 2) } ],
        [ 'upstream slower than CryptorefillsTimeout on orders', sub {
            $sb->fault(regex => '^/v5/orders$', method => 'POST', mode => 'latency', ms => 3000, times => 2) } ],
        [ '5xx burst (brands, orders, price)', sub {
            $sb->fault(match => '/v2/brands', mode => 'status', status => 503, times => 5);
            $sb->fault(regex => '^/v5/orders$', method => 'POST', mode => 'status', status => 502, times => 3);
            $sb->fault(match => '/v4/products/price', mode => 'status', status => 500, times => 3) } ],
        [ 'stalled stream', sub { $sb->fault(match => '/v5/orders', mode => 'stream_silent', times => 2) } ],
        [ 'Redis restarted', sub { $self->_redis_stop; sleep 1; $self->_redis_start } ],
        [ 'graceful on Apache A', sub { $A->graceful } ],
        [ 'graceful on Apache B', sub { $B->graceful } ],
        [ 'kill -9 of one child of Apache A', sub {
            my @k = _children_of($A->{pid});
            my $victim = $k[-1] or return;
            $self->{killed}{$victim} = 1;
            kill 'KILL', $victim } ],
    );
}

# ---- the run -------------------------------------------------------------------------------
sub run {
    my ($class, %o) = @_;
    my $self = bless { shoppers => 6, seconds => 60, log => sub { }, %o }, $class;
    $self->{dir} = tempdir('cr-soak-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CR_KEEP});
    my $log = $self->{log};
    $self->_redis_start;
    my $sb = $self->{sb} = CrSandbox->start(auto_advance => 1);
    my $conf = <<"C";
CryptorefillsCache "redis:127.0.0.1:$self->{redis_port}"
CryptorefillsTimeout 2
CryptorefillsStreamStallTimeout 3
C
    # While Redis restarts: the socache's errors, the cache's (CR012xx), and
    # keyed orders refused by the idempotency store (CR01405, 503).
    my @allow = (qr/\[socache_redis:(?:error|crit)\]/, qr/CR012\d\d/, qr/CR01405: idempotency store/);
    for (1 .. 2) {
        push @{ $self->{servers} }, CrTest->start(sandbox => $sb, partner => $PARTNER,
            modules => ['socache_redis'], conf => $conf, expect_errors => [@allow]);
    }
    my $t0 = time;
    my $until = $t0 + $self->{seconds};
    my @pids;
    for my $n (1 .. $self->{shoppers}) {
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            my $ok = eval { $self->_shopper($n, $until, "$self->{dir}/shopper-$n.json"); 1 };
            POSIX::_exit($ok ? 0 : 1);
        }
        push @pids, $pid;
    }
    # the schedule: faults spread over the first 80% of the run
    my @faults = $self->_faults;
    my @injected;
    for my $i (0 .. $#faults) {
        my $at = $t0 + $self->{seconds} * 0.8 * ($i + 1) / (@faults + 1);
        sleep($at - time) if $at > time;
        $log->(sprintf '%5.1fs  %s', time - $t0, $faults[$i][0]);
        eval { $faults[$i][1]->(); 1 } or $log->("  failed: $@");
        push @injected, $faults[$i][0];
    }
    waitpid($_, 0) for @pids;
    my $elapsed = time - $t0;
    $sb->clear_faults;
    # A graceful restart logs the killed child's exit: allow only that pid.
    for my $srv (@{ $self->{servers} }) {
        push @{ $srv->{expect_errors} }, map { qr/child pid $_ exit signal Killed/ } keys %{ $self->{killed} || {} };
    }

    # ---- accounting ----
    my (@rec);
    for my $n (1 .. $self->{shoppers}) {
        my $f = "$self->{dir}/shopper-$n.json";
        open my $fh, '<', $f or do { push @rec, { t => 'shopper_died', n => $n }; next };
        local $/;
        push @rec, @{ decode_json(<$fh>) };
    }
    my %c = (seconds => sprintf('%.0f', $elapsed), shoppers => $self->{shoppers},
        faults => scalar @injected, faults_list => \@injected);
    $c{shoppers_died} = grep { $_->{t} eq 'shopper_died' } @rec;
    my @orders = grep { $_->{t} eq 'order' } @rec;
    $c{orders_intended} = @orders;
    $c{orders_learned} = grep { $_->{order_id} } @orders;
    $c{orders_given_up} = grep { !$_->{order_id} } @orders;
    $c{orders_gave_up_last} = { map { ($_->{last} => 1) } grep { !$_->{order_id} } @orders };
    # upstream orders by shopper tag (the beneficiary's address)
    my %up;
    for my $o (@{ $sb->orders }) {
        my $full = $sb->order($o->{order_id}) or next;
        my ($tag) = $J->encode($full) =~ /(soak-\d+-\d+)\@example\.com/;
        push @{ $up{$tag // '?'} }, $o->{order_id};
    }
    $c{orders_created_upstream} = 0;
    $c{orders_created_upstream} += @$_ for values %up;
    $c{duplicates} = 0;
    $c{lost} = 0;           # created upstream, the shopper never learned it nor was told to check
    $c{outcome_unknown_told} = 0;   # created upstream, the shopper told 409 ORDER_OUTCOME_UNKNOWN
    $c{not_created} = 0;    # the shopper gave up and nothing was created: visible to the shopper
    for my $o (@orders) {
        my $ids = $up{ $o->{tag} } || [];
        if (@$ids > 1) {
            $c{duplicates} += @$ids - 1;
            push @{ $c{duplicate_attempts} }, join ' / ', @{ $o->{answers} };
        }
        if (@$ids && !($o->{order_id} && grep { $_ eq $o->{order_id} } @$ids)) {
            if ($o->{last} eq '409 ORDER_OUTCOME_UNKNOWN') { $c{outcome_unknown_told}++ }
            else { $c{lost}++ }
        }
        $c{not_created}++ if !@$ids && !$o->{order_id};
    }
    my @states = grep { $_->{t} eq 'states' } @rec;
    $c{orders_followed} = @states;
    $c{orders_final_missed} = grep { $_->{final} ne 'Done' } @states;
    $c{order_state_missed} = 0;     # states an order went through that its shopper never saw
    for my $s (@states) {
        my %seen = map { $_ => 1 } @{ $s->{seen} };
        # WaitingForDelivery lasts 1 s: a stream that reconnects may miss it
        # legitimately; the terminal state must be seen.
        $c{order_state_missed}++ unless $seen{Done};
    }
    my @http = grep { $_->{t} eq 'http' } @rec;
    $c{requests} = @http;
    $c{catalog_answers} = grep { $_->{route} eq 'brands' } @http;
    $c{catalog_not_200} = grep { $_->{route} eq 'brands' && $_->{status} != 200 } @http;
    my %by;
    $by{ $_->{route} }{ "$_->{status} $_->{detail}" }++ for grep { $_->{status} >= 500 } @http;
    $c{status_5xx_by_route} = { map { my $r = $_; ($r => join ', ', map { "$_ x$by{$r}{$_}" } sort keys %{ $by{$r} }) } sort keys %by };
    $c{partner_in_responses} = grep { $_->{leak} } @http;
    $c{streams_opened} = grep { $_->{t} eq 'stream' } @rec;
    # the logs: crashes, partner id above debug
    $c{crashes} = 0;
    $c{partner_in_logs} = 0;
    for my $srv (@{ $self->{servers} }) {
        for my $l (split /\n/, $srv->slurp('error.log') . $srv->slurp('stderr.log')) {
            $c{partner_in_logs}++ if index($l, $PARTNER) >= 0 && $l !~ /:debug\]/;
            next unless $l =~ /Segmentation fault|exit signal|AddressSanitizer|double free/;
            next if grep { $l =~ /child pid $_ exit signal Killed/ } keys %{ $self->{killed} || {} };
            $c{crashes}++;
        }
        $c{partner_in_logs}++ if index($srv->slurp('access.log'), $PARTNER) >= 0;
    }
    $self->{counts} = \%c;
    return $self;
}

sub counts { $_[0]{counts} }
sub servers { @{ $_[0]{servers} } }
sub sandbox { $_[0]{sb} }

sub stop {
    my ($self) = @_;
    $_->stop for @{ $self->{servers} || [] };
    $self->{sb}->stop if $self->{sb};
    $self->_redis_stop;
}
sub DESTROY { local $?; $_[0]->_redis_stop }

1;
