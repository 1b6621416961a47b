# SPDX-License-Identifier: Apache-2.0
package CrTest;
# Test driver: starts a real Apache httpd with the freshly built module on a
# free 127.0.0.1 port, with a config made for the test, and stops it again,
# also when the test dies.  Every server's error log is checked for lines
# the test did not expect when it is stopped.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use File::Copy qw(copy);
use IO::Socket::INET;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);
use Test::More;
use Exporter 'import';

our @EXPORT_OK = qw(free_port repo_root apache_bin module_path);

my $ROOT = abs_path(dirname(__FILE__) . '/../..');
sub repo_root { $ROOT }

# The module under test: CR_MODULE overrides (the sanitizer build uses it).
sub module_path {
    my $m = $ENV{CR_MODULE} || "$ROOT/mod_cryptorefills.so";
    die "module not built: $m (run make)\n" unless -f $m;
    return abs_path($m);
}

sub apache_bin {
    return $ENV{CR_HTTPD} if $ENV{CR_HTTPD};
    for my $b (qw(/usr/sbin/apache2 /usr/sbin/httpd /usr/local/apache2/bin/httpd)) {
        return $b if -x $b;
    }
    die "no httpd binary found (apt-get install apache2)\n";
}

my $MODDIR = do {
    my $d = `apxs -q LIBEXECDIR 2>/dev/null`; chomp $d;
    $d && -d $d ? $d : '/usr/lib/apache2/modules';
};

my %used_ports;
sub free_port {
    for (1 .. 50) {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                      Proto => 'tcp', Listen => 1, ReuseAddr => 1) or next;
        my $p = $s->sockport;
        close $s;
        next if $used_ports{$p}++;
        return $p;
    }
    die "no free port\n";
}

my @LIVE;   # servers to stop at exit or on a signal

sub _stop_all { $_->stop(quiet => 1) for grep { $_ && $_->{pid} } @LIVE; }
END { local $?; _stop_all(); }
for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} = sub { _stop_all(); exit 1 };
}

# Modules every test server loads (before the module under test, so socache
# providers are there when CryptorefillsCache looks them up).
our @BASE_MODULES = qw(
    authz_core authz_host mime alias dir headers env setenvif filter deflate
    status socache_shmcb
);

# CrTest->start(
#   sandbox  => $sb,            # CrSandbox (for the upstream URL)
#   conf     => "...",          # extra config, inside the server context
#   modules  => [qw(...)],      # more stock modules to load
#   mpm      => 'event'|'worker'|'prefork',
#   mpm_conf => "...",          # MPM sizing
#   partner  => 'partner-secret-id', version => '1.0.0',
#   location => 1,              # add the standard <Location /api>
#   tls      => $pki,           # CrPki: the listener speaks TLS (mod_ssl) with its server cert
#   h2       => 1,              # mod_http2: Protocols h2 (TLS) or h2c (cleartext) + http/1.1
#   env      => { https_proxy => ... },  # httpd's real process environment
# )
sub start {
    my ($class, %o) = @_;
    my $self = bless { %o }, $class;
    $self->{dir} = tempdir("cr-httpd-XXXXXX", TMPDIR => 1, CLEANUP => !$ENV{CR_KEEP});
    chmod 0755, $self->{dir};
    $self->{port} = $o{port} || free_port();
    $self->{mpm} ||= $ENV{CR_MPM} || 'event';
    $self->{partner} //= 'partner-secret-id-0001';
    $self->{version} //= '1.0.0';
    $self->{location} //= 1;
    $self->write_conf;
    $self->launch;
    push @LIVE, $self;
    return $self;
}

# start() that records a failed test instead of dying (a subtest then
# returns and the file goes on): my $h = CrTest->try_start(...) or return;
sub try_start {
    my ($class, %o) = @_;
    my $self = eval { $class->start(%o) };
    return $self if $self;
    my $err = $@;
    fail('httpd starts with the test config');
    diag(length $err > 2000 ? substr($err, 0, 2000) : $err);
    return undef;
}

sub port { $_[0]{port} }
sub dir  { $_[0]{dir} }
sub base { ($_[0]{tls} ? 'https' : 'http') . "://127.0.0.1:$_[0]{port}" }
sub url  { my ($s, $p) = @_; $s->base . $p }
sub error_log { "$_[0]{dir}/error.log" }
# The server's child processes (sorted pids), read from /proc.
sub children {
    my ($self) = @_;
    return CrTest::children_of($self->{pid});
}
sub children_of {
    my ($parent) = @_;
    my @kids;
    for my $st (glob '/proc/[0-9]*/stat') {
        open my $f, '<', $st or next;
        my $l = <$f> // next;
        # pid (comm) state ppid
        push @kids, $1 if $l =~ /^(\d+) \(.*\) \S+ (\d+)/ && $2 == $parent;
    }
    return sort { $a <=> $b } @kids;
}

# mod_status ?auto as a hash (needs a <Location /server-status> in conf).
sub status_auto {
    my ($self) = @_;
    require HTTP::Tiny;
    my $r = HTTP::Tiny->new(timeout => 10)->get($self->url('/server-status?auto'));
    my %s = ($r->{content} // '') =~ /^([A-Za-z_.]+): (\S+)$/mg;
    return \%s;
}

# Order streams run suspended (event MPM, issue #12): the module logs which
# relay applies at start (CR01510 suspended, CR01509 blocking; at info), which
# may land just after the port accepts.
sub streams_suspended {
    my ($self) = @_;
    my $deadline = time + 5;
    while (1) {
        my $log = $self->slurp('error.log');
        return 1 if $log =~ /CR01510:/;
        return 0 if $log =~ /CR01509:/ || time > $deadline;
        sleep 0.05;
    }
}

sub _htdocs {
    my ($self) = @_;
    my $h = "$self->{dir}/htdocs";
    make_path($h);
    # Workers run as nobody: serve a copy from a traversable directory.
    system('cp', '-a', "$ROOT/htdocs/.", $h) if -d "$ROOT/htdocs";
    # The demo's QR library, from node_modules (npm ci), with its licence.
    system("$ROOT/scripts/vendor-js", $h) if -x "$ROOT/scripts/vendor-js";
    system('chmod', '-R', 'a+rX', $h);
    return $h;
}

sub conf_text {
    my ($self) = @_;
    my $d = $self->{dir};
    my $sb = $self->{sandbox};
    my $upstream = $self->{upstream} // ($sb ? $sb->url : 'http://127.0.0.1:9');
    my $mpm = $self->{mpm};
    my $user = $> == 0 ? "User nobody\nGroup nogroup\n" : '';
    my @extra_mods = @{ $self->{modules} || [] };
    push @extra_mods, 'ssl' if $self->{tls};
    push @extra_mods, 'http2' if $self->{h2};
    my %seen;
    my $mods = join '', map { "LoadModule ${_}_module $MODDIR/mod_$_.so\n" }
        grep { !$seen{$_}++ } (@BASE_MODULES, @extra_mods);
    my $proto = '';
    if ($self->{tls}) {
        my ($cert, $key) = $self->{tls}->cert('server');
        $proto .= "SSLEngine on\nSSLCertificateFile \"$cert\"\nSSLCertificateKeyFile \"$key\"\n"
            . "SSLSessionCache \"shmcb:$d/ssl_scache(512000)\"\n";
    }
    if ($self->{h2}) {
        $proto .= 'Protocols ' . ($self->{tls} ? 'h2' : 'h2c') . " http/1.1\n";
    }
    my $mpm_conf = $self->{mpm_conf} // ($mpm eq 'prefork'
        ? "StartServers 2\nMinSpareServers 2\nMaxSpareServers 4\nMaxRequestWorkers 20\n"
        : "StartServers 2\nServerLimit 4\nThreadsPerChild 16\nMaxRequestWorkers 64\n"
          . "MinSpareThreads 16\nMaxSpareThreads 64\n");
    my $module = module_path();
    my $htdocs = $self->{htdocs} // $self->_htdocs;
    my $loc = $self->{location} ? <<"LOC" : '';
CryptorefillsUpstream   $upstream
CryptorefillsPartnerId  "$self->{partner}"
CryptorefillsAppVersion "$self->{version}"
<Location "/api">
    SetHandler cryptorefills
</Location>
LOC
    my $extra = $self->{conf} // '';
    $extra =~ s/\@UPSTREAM\@/$upstream/g;
    $extra =~ s/\@DIR\@/$d/g;
    return <<"CONF";
# Generated by t/lib/CrTest.pm
ServerRoot "$d"
DefaultRuntimeDir "$d"
PidFile "$d/httpd.pid"
Listen 127.0.0.1:$self->{port}
ServerName ${\ ($self->{tls} ? "localhost" : "127.0.0.1")}:$self->{port}
LoadModule mpm_${mpm}_module $MODDIR/mod_mpm_${mpm}.so
$mods
LoadModule cryptorefills_module $module
$user
ErrorLog "$d/error.log"
LogLevel ${\ ($self->{loglevel} // 'warn cryptorefills:info')}
LogFormat "%h %t \\"%r\\" %>s %b %D" timing
CustomLog "$d/access.log" timing
TypesConfig /etc/mime.types
DocumentRoot "$htdocs"
<Directory "$htdocs">
    Require all granted
</Directory>
Timeout 30
KeepAlive On
MaxKeepAliveRequests 0
$mpm_conf
$proto
$loc
$extra
CONF
}

sub write_conf {
    my ($self) = @_;
    open my $fh, '>', "$self->{dir}/httpd.conf" or die $!;
    print $fh $self->conf_text;
    close $fh;
}

sub _env {
    my %env;
    if ($ENV{CR_SANITIZE}) {
        # The module was built with ASan/UBSan; httpd was not: preload the
        # runtimes and collect any report in files the test checks.
        my $asan = `gcc -print-file-name=libasan.so`; chomp $asan;
        my $ubsan = `gcc -print-file-name=libubsan.so`; chomp $ubsan;
        $env{LD_PRELOAD} = "$asan $ubsan";
    }
    return %env;
}

sub _san_env {
    my ($self) = @_;
    return () unless $ENV{CR_SANITIZE};
    # Children run as nobody: the reports go to a directory they may write
    # (the server's own directory is root's), else a child's report is lost.
    my $d = "$self->{dir}/san";
    mkdir $d;
    chmod 01777, $d;
    return (
        ASAN_OPTIONS => "detect_leaks=0:abort_on_error=0:allow_user_segv_handler=0:log_path=$d/sanitizer",
        UBSAN_OPTIONS => "print_stacktrace=1:log_path=$d/sanitizer",
    );
}

sub launch {
    my ($self) = @_;
    my @cmd = (apache_bin(), '-f', "$self->{dir}/httpd.conf", '-DFOREGROUND');
    my %env = (_env(), $self->_san_env, %{ $self->{env} || {} });
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $ENV{$_} = $env{$_} for keys %env;
        # A session of its own: prefork signals its whole process group on
        # stop and graceful restart, which would hit this test too.
        POSIX::setsid();
        open STDOUT, '>>', "$self->{dir}/stdout.log";
        open STDERR, '>>', "$self->{dir}/stderr.log";
        exec @cmd or POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    my $deadline = time + 20;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{pid};
            die "httpd exited at start-up:\n" . $self->slurp('stderr.log') . $self->slurp('error.log');
        }
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port},
                                      Proto => 'tcp', Timeout => 1);
        if ($s) { close $s; return $self; }
        sleep 0.05;
    }
    $self->stop(quiet => 1);
    die "httpd did not listen on $self->{port} in 20s:\n" . $self->slurp('error.log');
}

sub slurp {
    my ($self, $name) = @_;
    my $f = $name =~ m{^/} ? $name : "$self->{dir}/$name";
    open my $fh, '<', $f or return '';
    local $/;
    return scalar <$fh>;
}

# Graceful restart (SIGUSR1 to the parent), waiting for the new generation.
sub graceful { $_[0]->restart('USR1') }

# Restart by signal (HUP: restart, USR1: graceful), waiting for the new
# generation.  A restart stops the children ungracefully, as a stop does:
# give the server the same moment first (see stop).
sub restart {
    my ($self, $sig, %o) = @_;
    my $before = () = $self->slurp('error.log') =~ /resuming normal operations/g;
    sleep($o{settle} // 0.25) if $sig eq 'HUP';
    kill $sig, $self->{pid};
    my $deadline = time + 15;
    while (time < $deadline) {
        my $n = () = $self->slurp('error.log') =~ /resuming normal operations/g;
        return 1 if $n > $before;
        sleep 0.05;
    }
    return 0;
}

sub stop {
    my ($self, %o) = @_;
    my $pid = delete $self->{pid} or return;
    # Let the server finish what the test's last client started (its close,
    # the lingering close).  On SIGTERM (and on a SIGHUP restart) the event
    # MPM's main thread closes the sockets its workers are still pointing at
    # (close_worker_sockets) while a worker may just have closed that
    # connection and recycled its pool, and the exiting listener may be
    # freeing the recycled pools (ap_queue_info_free_idle_pools): in httpd
    # 2.4 that can log AH03093/AH00468 or crash the child being stopped --
    # httpd's, not the module's, and not what a stop of an idle server sees.
    sleep($o{settle} // 0.25);
    kill 'TERM', $pid;
    my $deadline = time + 10;
    while (time < $deadline) {
        last if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    if (kill 0, $pid) { kill 'KILL', $pid; waitpid($pid, 0); }
    @LIVE = grep { $_ != $self } @LIVE;
    $self->check_error_log unless $o{quiet} || $self->{no_log_check};
}

# Lines at [error] / [crit] / [alert] / [emerg], crashes, and sanitizer
# reports are failures unless a pattern in $self->{expect_errors} allows them.
sub unexpected_log_lines {
    my ($self) = @_;
    my @allow = @{ $self->{expect_errors} || [] };
    my @bad;
    for my $line (split /\n/, $self->slurp('error.log') . $self->slurp('stderr.log')) {
        next unless $line =~ /\[(?:[a-z_]+:)?(?:error|crit|alert|emerg)\]|Segmentation fault|exit signal|AddressSanitizer|runtime error:|LeakSanitizer|double free|stack smashing/;
        next if grep { $line =~ $_ } @allow;
        push @bad, $line;
    }
    for my $f (glob "$self->{dir}/san/sanitizer*") {
        push @bad, "sanitizer report $f:\n" . $self->slurp($f);
    }
    return @bad;
}

sub check_error_log {
    my ($self) = @_;
    my @bad = $self->unexpected_log_lines;
    ok(!@bad, "error log of httpd on port $self->{port} has no unexpected error, crash or sanitizer line")
        or diag(join "\n", @bad[0 .. ($#bad > 20 ? 20 : $#bad)]);
}

# The browser tests' prerequisites: skips the file (fails it under CI) when
# Chromium, node or playwright-core is missing.
sub need_browser {
    my @missing;
    push @missing, '/usr/bin/chromium' unless -x '/usr/bin/chromium';
    push @missing, 'node' unless grep { -x "$_/node" } split /:/, $ENV{PATH};
    push @missing, 'node_modules/playwright-core (npm ci)' unless -d "$ROOT/node_modules/playwright-core";
    return unless @missing;
    if ($ENV{CI}) {
        fail("browser tests need: @missing");
        done_testing;
        exit;
    }
    plan skip_all => "browser tests need: @missing";
}

# `apache2 -t` on a config: returns (exit status, output).
sub config_test {
    my ($class, %o) = @_;
    my $self = bless { %o }, $class;
    $self->{dir} = tempdir("cr-httpd-t-XXXXXX", TMPDIR => 1, CLEANUP => 1);
    $self->{port} = free_port();
    $self->{mpm} ||= 'event';
    $self->{partner} //= 'partner-secret-id-0001';
    $self->{version} //= '1.0.0';
    $self->{location} //= 0;
    $self->write_conf;
    my %env = (_env(), $self->_san_env);
    local @ENV{keys %env} = values %env;
    my $cmd = join ' ', map { "'$_'" } apache_bin(), '-t', '-f', "$self->{dir}/httpd.conf";
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

1;
