# SPDX-License-Identifier: Apache-2.0
# The catalog cache across `apachectl graceful` (SIGUSR1), twice, under load
# (issue #3): every request is answered 200 with the whole catalog, a slow
# refresh running in an old-generation child finishes normally after the
# restart, no error or crash line in the log, the catalogs stay warm (the
# shmcb instance and its mutex are kept: no miss across the restarts), the
# cache serves hits afterwards and mod_status keeps counting.
#
# What is acceptable during the restart: nothing but 200. httpd keeps its
# listening sockets across a graceful restart and old children finish the
# requests they hold; an old child closes an idle keep-alive connection, and
# a client that sent its next request on that connection just then sees it
# closed (the HTTP/1.1 keep-alive race, which browsers and HTTP::Tiny retry
# for a GET on a reused connection). So a GET answered with anything but
# 200 - a 5xx, a 599 on a fresh connection, a short body - is a failure.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;
use CrSandbox;
use HTTP::Tiny;
use JSON::PP;
use IO::Uncompress::Gunzip qw(gunzip);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

my $sb = CrSandbox->start();
my $a = CrTest->start(
    sandbox  => $sb,
    mpm      => 'event',
    mpm_conf => "StartServers 2\nServerLimit 8\nThreadsPerChild 8\nMaxRequestWorkers 64\n"
              . "MinSpareThreads 4\nMaxSpareThreads 64\n",
    conf     => <<'C');
Mutex file:@DIR@ cryptorefills-cache
CryptorefillsCacheTTL 300
<Location /server-status>
    SetHandler server-status
</Location>
C

my $http = HTTP::Tiny->new(timeout => 30);
sub get { my ($path, %h) = @_; $http->get($a->url($path), { headers => \%h }) }
sub cache_h { $_[0]{headers}{'x-cryptorefills-cache'} // '' }
sub counter {
    my ($name) = @_;
    my ($v) = (get('/server-status?auto')->{content} // '') =~ /^Cryptorefills\Q$name\E:\s*(\d+)/m;
    return $v;
}

my @paths = ('/api/brands?country_code=US', '/api/brands?country_code=GB', '/api/homepage?country_code=FR',
             '/api/payment_vias');
my %ref;
for my $p (@paths) {
    my $r = get($p);
    is($r->{status}, 200, "warm $p");
    $ref{$p} = $r->{content};
}
is(cache_h(get($paths[0])), 'hit', 'warm: hit');

# ---------------------------------------------------------------- load
my $dir = $a->dir;
my $stop = "$dir/stop-load";
my @kids;
for my $k (1 .. 4) {
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        my $ua = HTTP::Tiny->new(timeout => 30, keep_alive => 1);
        open my $log, '>', "$dir/load-$k.txt" or POSIX::_exit(1);
        my $i = 0;
        until (-e $stop) {
            my $p = $paths[$i++ % @paths];
            my $gz = $i % 3 == 0;
            my $r = $ua->get($a->url($p), { headers => { $gz ? ('Accept-Encoding' => 'gzip') : () } });
            my $body = $r->{content} // '';
            if (($r->{headers}{'content-encoding'} // '') eq 'gzip') {
                my $out;
                $body = gunzip(\$body => \$out) ? $out : '<bad gzip>';
            }
            my $ok = $r->{status} == 200 && $body eq $ref{$p} ? 'ok' : 'BAD';
            my $why = $r->{status} == 599 ? ($r->{content} =~ s/\s+/ /gr) : '';
            printf $log "%s %d %s %s %s\n", $ok, $r->{status}, $r->{headers}{'x-cryptorefills-cache'} // '-', $p, $why;
        }
        close $log;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
END { kill 'TERM', grep { $_ } @kids if @kids }

# A slow refresh in flight across the first restart: served by an old child.
my $slow_fid = $sb->fault(match => '/v2/brands', query => 'country_code=DE', mode => 'latency', ms => 2500);
my $slow_pid = fork // die "fork: $!";
if (!$slow_pid) {
    my $r = HTTP::Tiny->new(timeout => 30)->get($a->url('/api/brands?country_code=DE'));
    open my $fh, '>', "$dir/slow.txt" or POSIX::_exit(1);
    printf $fh "%d %s %d\n", $r->{status}, $r->{headers}{'x-cryptorefills-cache'} // '-', length($r->{content} // '');
    close $fh;
    POSIX::_exit(0);
}
$sb->wait_requests(path => '/v2/brands', count => 3, timeout => 10);    # US, GB, DE

sleep 1;
my $g1 = $a->graceful;
ok($g1, 'first graceful restart: the new generation is up');
sleep 1.5;
my $g2 = $a->graceful;
ok($g2, 'second graceful restart: the new generation is up');
sleep 1.5;

open my $fh, '>', $stop or die;
close $fh;
for my $pid (@kids) { waitpid($pid, 0) }
@kids = ();
waitpid($slow_pid, 0);
$sb->remove_fault($slow_fid);

my (%count, @bad, %how);
for my $k (1 .. 4) {
    for (split /\n/, $a->slurp("$dir/load-$k.txt")) {
        my ($ok, $st, $h) = split / /;
        $count{$ok}++;
        $how{$h}++;
        push @bad, $_ if $ok ne 'ok';
    }
}
cmp_ok($count{ok} // 0, '>', 100, 'load ran through both restarts (' . ($count{ok} // 0) . ' requests)');
is(scalar @bad, 0, 'every request of the load answered 200 with the whole catalog')
    or diag join "\n", @bad[0 .. ($#bad > 10 ? 10 : $#bad)];
is($how{miss} // 0, 0, 'no miss across the restarts: the shmcb instance is kept, the catalogs stay warm');
cmp_ok($how{hit} // 0, '>', 50, '... and mostly hits (' . ($how{hit} // 0) . ')');

my ($sst, $shw, $slen) = split ' ', $a->slurp('slow.txt');
is($sst, 200, 'the slow refresh that straddled the first restart: 200');
is($shw, 'miss', '... miss');
cmp_ok($slen, '>', 1000, '... with the catalog');

my $log = $a->slurp('error.log');
my $gens = () = $log =~ /resuming normal operations/g;
is($gens, 3, 'three generations started');
unlike($log, qr/exit signal|Segmentation|AH00052/, 'no child crashed');

# After the restarts: the cache serves hits again, and the counters move.
my $h0 = counter('cache_hits') // 0;
my $r1 = get('/api/brands?country_code=US');
my $r2 = get('/api/brands?country_code=US');
is($r2->{status}, 200, 'after the restarts: 200');
is(cache_h($r2), 'hit', '... hit');
ok($r2->{content} eq $ref{'/api/brands?country_code=US'}, '... the same catalog');
cmp_ok(counter('cache_hits') // 0, '>', $h0, 'mod_status counts in the new generation');

$a->stop;
$sb->stop;
done_testing;
