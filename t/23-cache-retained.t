# The shmcb catalog cache is carried across restarts (issue #15): after a
# graceful restart (SIGUSR1) and after a plain restart (SIGHUP) the first
# catalog request is a hit; a changed CryptorefillsCache size across a
# graceful restart makes a new, empty instance (a miss, then hits), without
# an error or a crash; a stop ends it.  Under event and prefork.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use HTTP::Tiny;

my $sb = CrSandbox->start();
# No keep-alive: a connection held by an old-generation child would be
# answered from the generation before.
my $http = HTTP::Tiny->new(timeout => 30, keep_alive => 0);

for my $mpm (qw(event prefork)) {
    my $a = CrTest->start(sandbox => $sb, mpm => $mpm, conf => "CryptorefillsCacheTTL 300\n");
    my $get = sub { my $r = $http->get($a->url($_[0])); [$r->{status}, $r->{headers}{'x-cryptorefills-cache'} // '-', $r->{content}] };
    my $p = '/api/brands?country_code=US';

    my $r0 = $get->($p);
    is("$r0->[0] $r0->[1]", '200 miss', "$mpm: first request, a miss");
    is($get->($p)->[1], 'hit', "$mpm: then a hit");
    my $upstream = $sb->request_count(path => '/v2/brands');

    ok($a->graceful, "$mpm: graceful restart");
    my $r1 = $get->($p);
    is("$r1->[0] $r1->[1]", '200 hit', "$mpm: after graceful, the first request is a hit");
    ok($r1->[2] eq $r0->[2], "$mpm: ... with the same catalog");

    ok($a->restart('HUP'), "$mpm: restart (SIGHUP)");
    my $r2 = $get->($p);
    is("$r2->[0] $r2->[1]", '200 hit', "$mpm: after restart, the first request is a hit");
    is($sb->request_count(path => '/v2/brands'), $upstream, "$mpm: no upstream call since the warm-up");
    like($a->slurp('error.log'), qr/CR01213: cache: shmcb:\S+ kept from the previous generation \(2 restarts\)/,
         "$mpm: the log says the cache was kept");

    # A changed size: a new instance, empty.
    $a->{conf} = "CryptorefillsCacheTTL 300\nCryptorefillsCache shmcb:\@DIR\@/cr-cache(4194304)\n";
    $a->write_conf;
    ok($a->graceful, "$mpm: graceful restart with a new cache size");
    my $r3 = $get->($p);
    is("$r3->[0] $r3->[1]", '200 miss', "$mpm: the new instance starts empty (miss)");
    is($get->($p)->[1], 'hit', "$mpm: ... then hits");
    like($a->slurp('error.log'), qr/CR01215: cache: shmcb:\S+\(4194304\) replaces shmcb:/,
         "$mpm: the log says the cache was replaced");
    ok($a->graceful, "$mpm: another graceful restart (the replaced instance is released)");
    is($get->($p)->[1], 'hit', "$mpm: the new size is kept in turn");
    unlike($a->slurp('error.log'), qr/exit signal|Segmentation|AH00052/, "$mpm: no child crashed");
    $a->stop;

    # A stop ends it: a new server starts empty.
    my $b = CrTest->start(sandbox => $sb, mpm => $mpm);
    my $r4 = $http->get($b->url($p));
    is($r4->{headers}{'x-cryptorefills-cache'}, 'miss', "$mpm: a new server starts empty");
    $b->stop;
}

$sb->stop;
done_testing;
