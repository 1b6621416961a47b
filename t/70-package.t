# The Debian package (issue #15): `dpkg-buildpackage -us -uc -b` builds
# libapache2-mod-cryptorefills from a scratch copy of the tree; lintian finds
# no error; installing it enables nothing; the installed files, extracted into
# a scratch root and enabled with the real a2enmod against a scratch
# APACHE_CONFDIR laid out like Debian's /etc/apache2, make `apache2ctl -t`
# fail without a partner id (naming cryptorefills.conf and the line) and pass
# with one in envvars; the installed module then serves a catalog and a
# validation from the sandbox upstream.
#
# Nothing is installed on the system: the package is extracted with
# `dpkg-deb -x`, and the two absolute paths of the shipped configuration
# (the module in cryptorefills.load, /usr/share/mod_cryptorefills in
# cryptorefills.conf) are pointed into the scratch root.
#
# The test always uses the package's own module (not CR_MODULE), so the
# sanitizer pass of scripts/test (CR_SANITIZE=1) would only repeat the first
# pass: it is skipped there.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use File::Copy qw(copy);
use HTTP::Tiny;
use JSON::PP;
use CrTest qw(repo_root free_port);
use CrSandbox;
use CrFixtures qw(%VALIDATE);

plan skip_all => 'the first pass of scripts/test covers the package (it ships its own module build)'
    if $ENV{CR_SANITIZE};
for my $tool (qw(dpkg-buildpackage dpkg-deb dh dh_apache2 a2enmod apache2ctl)) {
    my $found = grep { -x "$_/$tool" } split(/:/, "$ENV{PATH}:/usr/sbin:/sbin");
    plan skip_all => "$tool not available (scripts/install-deps installs it)" unless $found;
}

my $ROOT = repo_root();
plan skip_all => 'not a git checkout: the scratch copy is made from git ls-files' unless -e "$ROOT/.git";
my $PKG = 'libapache2-mod-cryptorefills';
my $tmp = tempdir('cr-package-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CR_KEEP});
chmod 0755, $tmp;

sub slurp { my ($f) = @_; open my $fh, '<', $f or return ''; local $/; return scalar <$fh> }
sub spew  { my ($f, $t) = @_; open my $fh, '>', $f or die "$f: $!"; print $fh $t; close $fh or die $! }
sub run   { my ($cmd) = @_; my $out = `$cmd 2>&1`; return ($? >> 8, $out) }

# ---- build in a scratch copy of the tree --------------------------------------------

# What git knows about plus new files not yet committed, as scripts/test copies
# the tree for the sanitizer build; node_modules is only for the browser tests.
my $src = "$tmp/src";
make_path($src);
my @files = grep { $_ ne '' && !m{^node_modules(/|$)} && -f "$ROOT/$_" }
    split /\0/, `cd '$ROOT' && git ls-files -z --cached --others --exclude-standard`;
ok(scalar(grep { $_ eq 'debian/control' } @files), 'the tree has debian/control') or BAIL_OUT('no debian/');
{
    open my $tar, '|-', "cd '$ROOT' && tar --null -T - -cf - | tar -xf - -C '$src'" or die $!;
    print $tar join("\0", @files), "\0";
    close $tar or die "copying the tree failed\n";
}
my ($rc, $out) = run("cd '$src' && DEB_BUILD_OPTIONS=parallel=2 dpkg-buildpackage -us -uc -b");
is($rc, 0, 'dpkg-buildpackage -us -uc -b builds the package') or diag substr($out, -4000);
like($out, qr/^PASS: t\/unit\/test_core$/m, '... running the unit tests (dh_auto_test)') or diag substr($out, -2000);
my ($deb) = glob("$tmp/${PKG}_*_*.deb");
my ($changes) = glob("$tmp/${PKG}_*_*.changes");
ok($deb && -f $deb, "... giving ${PKG}_*.deb") or BAIL_OUT('no .deb');

# ---- lintian ------------------------------------------------------------------------

SKIP: {
    skip 'lintian not installed (scripts/install-deps installs it)', 1 unless -x '/usr/bin/lintian';
    my ($lrc, $lout) = run("lintian --allow-root '$changes'");
    my @errors = grep { /^E: / } split /\n/, $lout;
    ok(!@errors, 'lintian reports no error on the .deb and .changes') or diag join "\n", @errors;
    note "lintian: $_" for grep { /^[WI]: / } split /\n/, $lout;
}

# ---- what the package contains --------------------------------------------------------

my %in = map { m{ \./(\S+)$} ? ($1 => 1) : () } split /\n/, `dpkg-deb -c '$deb'`;
for my $f ('usr/lib/apache2/modules/mod_cryptorefills.so',
           'etc/apache2/mods-available/cryptorefills.load',
           'etc/apache2/mods-available/cryptorefills.conf',
           'usr/share/mod_cryptorefills/cryptorefills.js',
           'usr/share/mod_cryptorefills/demo/index.html',
           'usr/share/mod_cryptorefills/demo/app.js',
           "usr/share/doc/$PKG/copyright",
           "usr/share/doc/$PKG/README.Debian",
           "usr/share/doc/$PKG/OPERATIONS.md",
           "usr/share/doc/$PKG/DIRECTIVES.md") {
    ok($in{$f} || $in{"$f.gz"}, "the package ships /$f");
}
ok(!grep({ /\.la$/ } keys %in), '... and no libtool .la');
is_deeply([ grep { m{^etc/apache2/mods-enabled} } keys %in ], [], '... and nothing in mods-enabled');

my $ctl = "$tmp/control";
system('dpkg-deb', '-e', $deb, $ctl) == 0 or die "dpkg-deb -e failed\n";
my $conffiles = slurp("$ctl/conffiles");
like($conffiles, qr{^/etc/apache2/mods-available/cryptorefills\.conf$}m, 'cryptorefills.conf is a conffile');
like($conffiles, qr{^/etc/apache2/mods-available/cryptorefills\.load$}m, 'cryptorefills.load is a conffile');
my $postinst = slurp("$ctl/postinst");
unlike($postinst, qr/apache2_invoke\s+enmod|a2enmod/, 'postinst does not enable the module on install');
like(slurp("$ctl/prerm"), qr/for conf in cryptorefills\s*;.*?apache2_invoke\s+dismod\s+\$conf/s,
     'prerm disables it on removal');
like(`dpkg-deb -f '$deb' Depends`, qr/apache2-api-\d+/, 'Depends names the apache2 API (dh_apache2)');

# ---- extract into a scratch root -----------------------------------------------------------

my $root = "$tmp/root";
system('dpkg-deb', '-x', $deb, $root) == 0 or die "dpkg-deb -x failed\n";
system('chmod', 'a+rX', $tmp, $root);
my $avail = "$root/etc/apache2/mods-available";
# The scratch root stands for /: the two absolute paths point into it.
{
    my $load = slurp("$avail/cryptorefills.load");
    my $n = $load =~ s{^(LoadModule\s+cryptorefills_module\s+)(/usr/lib/apache2/modules/mod_cryptorefills\.so)\s*$}{$1$root$2}mg;
    is($n, 1, 'cryptorefills.load loads /usr/lib/apache2/modules/mod_cryptorefills.so');
    spew("$avail/cryptorefills.load", $load);
    my $conf = slurp("$avail/cryptorefills.conf");
    my $m = $conf =~ s{(?<![\w/])/usr/share/mod_cryptorefills\b}{$root/usr/share/mod_cryptorefills}g;
    ok($m >= 2, 'cryptorefills.conf aliases the browser client from /usr/share/mod_cryptorefills');
    spew("$avail/cryptorefills.conf", $conf);
}

# A scratch APACHE_CONFDIR laid out like Debian's /etc/apache2: the stock
# mods-available, the package's two files, and an apache2.conf that includes
# mods-enabled and conf-enabled as Debian's does.
my $confdir = "$tmp/etc-apache2";
make_path("$confdir/mods-available", "$confdir/mods-enabled", "$confdir/conf-enabled",
          "$tmp/state", "$tmp/run", "$tmp/lock", "$tmp/log");
for my $f (glob('/etc/apache2/mods-available/*'), "$avail/cryptorefills.load", "$avail/cryptorefills.conf") {
    (my $b = $f) =~ s{.*/}{};
    copy($f, "$confdir/mods-available/$b") or die "copy $f: $!";
}
my $port = free_port();
my $user = $> == 0 ? "User nobody\nGroup nogroup\n" : '';
spew("$confdir/apache2.conf", <<"C");
# Like Debian's /etc/apache2/apache2.conf, reduced to what a test server needs.
ServerRoot "$confdir"
DefaultRuntimeDir \${APACHE_RUN_DIR}
PidFile \${APACHE_PID_FILE}
Timeout 30
$user
ErrorLog \${APACHE_LOG_DIR}/error.log
LogLevel warn
IncludeOptional mods-enabled/*.load
IncludeOptional mods-enabled/*.conf
Include ports.conf
ServerName 127.0.0.1
<Directory />
    AllowOverride None
    Require all denied
</Directory>
IncludeOptional conf-enabled/*.conf
C
spew("$confdir/ports.conf", "Listen 127.0.0.1:\${CR_TEST_PORT}\n");

# envvars as Debian's, pointing at the scratch directories.
my $envvars = <<"E";
export APACHE_RUN_DIR='$tmp/run'
export APACHE_PID_FILE='$tmp/run/apache2.pid'
export APACHE_LOCK_DIR='$tmp/lock'
export APACHE_LOG_DIR='$tmp/log'
export APACHE_RUN_USER=nobody
export APACHE_RUN_GROUP=nogroup
export CR_TEST_PORT=$port
export CRYPTOREFILLS_APP_VERSION='1.0.0'
E
spew("$confdir/envvars", $envvars);

my %scratch_env = (APACHE_CONFDIR => $confdir, APACHE_ENVVARS => "$confdir/envvars",
                   APACHE_STATE_DIRECTORY => "$tmp/state");
delete local $ENV{CRYPTOREFILLS_PARTNER_ID};
delete local $ENV{CRYPTOREFILLS_APP_VERSION};
local @ENV{keys %scratch_env} = values %scratch_env;

# The modules a stock Debian apache2 enables (a subset), then ours, with the real a2enmod.
($rc, $out) = run('a2enmod -q mpm_event authz_core authz_host alias mime dir filter deflate headers status env setenvif');
is($rc, 0, 'a2enmod of the stock modules in the scratch APACHE_CONFDIR') or diag $out;
($rc, $out) = run('a2enmod cryptorefills');
is($rc, 0, 'a2enmod cryptorefills') or diag $out;
ok(-l "$confdir/mods-enabled/cryptorefills.load" && -l "$confdir/mods-enabled/cryptorefills.conf",
   '... links cryptorefills.load and cryptorefills.conf into mods-enabled');
ok(-l "$confdir/mods-enabled/socache_shmcb.load", '... and enables socache_shmcb, its Depends:');

# ---- apache2ctl -t ------------------------------------------------------------------------

($rc, $out) = run('apache2ctl -t');
isnt($rc, 0, 'apache2ctl -t fails with the module enabled and no partner id');
like($out, qr{line (\d+) of \Q$confdir\E/mods-enabled/cryptorefills\.conf}, '... naming cryptorefills.conf and the line')
    or diag $out;
my ($line) = $out =~ /line (\d+) of \S*cryptorefills\.conf/;
my @conf_lines = split /\n/, slurp("$confdir/mods-available/cryptorefills.conf");
like($conf_lines[($line // 1) - 1] // '', qr/^\s*CryptorefillsPartnerId\b/, '... the line of CryptorefillsPartnerId');
like($out, qr/CryptorefillsPartnerId: .*undefined variable/, '... saying it names an undefined variable') or diag $out;

my $partner = 'pkg-partner-' . int(rand(1e9));
spew("$confdir/envvars", $envvars . "export CRYPTOREFILLS_PARTNER_ID='$partner'\n");
($rc, $out) = run('apache2ctl -t');
is($rc, 0, 'with CRYPTOREFILLS_PARTNER_ID in envvars apache2ctl -t passes') or diag $out;
unlike($out, qr/\Q$partner\E/, '... and prints no partner id');

# ---- the installed module against the sandbox ------------------------------------------------

my $sb = CrSandbox->start;
# The admin's own setting, as a conf-enabled snippet: the sandbox as upstream.
spew("$confdir/conf-enabled/upstream.conf", "CryptorefillsUpstream " . $sb->url . "\n");

# CrTest runs httpd and checks its error log; the configuration is the scratch
# /etc/apache2, with envvars' values in the environment as apache2ctl would set them.
package CrPackageServer {
    our @ISA = ('CrTest');
    sub conf_text { qq{Include "$confdir/apache2.conf"\n} }
    sub launch {
        my ($self) = @_;
        $self->{env} = { APACHE_RUN_DIR => $self->{dir}, APACHE_PID_FILE => "$self->{dir}/httpd.pid",
                         APACHE_LOG_DIR => $self->{dir}, CR_TEST_PORT => $self->{port},
                         CRYPTOREFILLS_PARTNER_ID => $partner, CRYPTOREFILLS_APP_VERSION => '1.0.0' };
        return $self->SUPER::launch;
    }
}
my $srv = CrPackageServer->start(sandbox => $sb);
ok($srv, 'httpd starts from the scratch /etc/apache2 with the installed module');

my $http = HTTP::Tiny->new(timeout => 30);
my $r = $http->get($srv->url('/api/brands?country_code=US'));
is($r->{status}, 200, 'GET /api/brands?country_code=US through the installed module: 200') or diag $r->{content};
my $j = eval { decode_json($r->{content}) } || {};
ok(grep({ ($_->{brand} // '') eq 'Airbnb' } @{ $j->{all_brands} || [] }),
   '... the sandbox catalog, with Airbnb') or diag substr($r->{content} // '', 0, 300);
unlike($r->{content}, qr/\Q$partner\E/, '... and never the partner id');
my $reqs = $sb->requests(path => '/v2/brands');
ok(@$reqs >= 1, 'the catalog came from the sandbox');
is($reqs->[0]{headers}{'X-Cr-Application'} // $reqs->[0]{headers}{'x-cr-application'}, $partner,
   '... called with the partner id from envvars');

$r = $http->post($srv->url('/api/orders/validations'), {
    content => encode_json(\%VALIDATE), headers => { 'Content-Type' => 'application/json' } });
is($r->{status}, 200, 'POST /api/orders/validations of a valid order: 200') or diag $r->{content};
my $bad = { %VALIDATE, deliveries => [ { %{ $VALIDATE{deliveries}[0] }, brand_name => 'No Such Brand' } ] };
$r = $http->post($srv->url('/api/orders/validations'), {
    content => encode_json($bad), headers => { 'Content-Type' => 'application/json' } });
is($r->{status}, 200, 'a validation naming an unknown brand: 200 with problems') or diag $r->{content};
like($r->{content}, qr/deliveries\[0\]/, '... naming deliveries[0]') or diag $r->{content};

$r = $http->get($srv->url('/cryptorefills.js'));
is($r->{status}, 200, 'the shipped Alias serves /cryptorefills.js from the package');
ok($r->{content} eq slurp("$root/usr/share/mod_cryptorefills/cryptorefills.js"), '... the packaged file');

$r = $http->get($srv->url('/server-status?auto'));
is($r->{status}, 200, "Debian's status.conf serves /server-status?auto to localhost");
like($r->{content}, qr/^Cryptorefillscache_\w+: \d+$/m, "... with the module's counters");

$srv->stop;    # checks the error log
$sb->stop;

done_testing;
