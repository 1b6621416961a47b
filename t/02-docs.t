# SPDX-License-Identifier: Apache-2.0
# The documentation and the drop-in config follow the code.
#
#  1. docs/DIRECTIVES.md has a section for every directive of cr_cmds[] (and
#     none for a directive the code lacks), with Syntax, Default, Context and
#     Description lines; Context matches the command's flags (and a
#     GLOBAL_ONLY check in its setter), Description is the command's help
#     text, Default carries the help text's "(default N)".
#  2. Each section's example passes `apache2 -t`, and each directive is
#     accepted or refused in <VirtualHost> and <Location> as its Context says.
#  3. conf/cryptorefills.conf mentions every directive; no doc or conf names
#     a Cryptorefills* directive the code lacks.
#  5. docs/LOGTAGS.md lists every CRLOGNO tag of the code once, and only
#     those; no tag is used by two log lines.
#  4. A real httpd runs with conf/cryptorefills.load + conf/cryptorefills.conf
#     (the required values from the environment, as an operator would set
#     them in /etc/apache2/envvars): /api/countries answers, the Alias serves
#     the browser client, mod_status prints exactly the documented keys, and
#     the error log stays clean.
#  5. The example order bodies of docs/ROUTES.md, posted as written to real
#     Apache in front of the sandbox upstream, are accepted: the validation
#     finds no problem, the order is created.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use File::Copy qw(copy);
use HTTP::Tiny;
use JSON::PP;
use CrTest qw(repo_root module_path free_port);

my $ROOT = repo_root();

sub slurp {
    my ($f) = @_;
    open my $fh, '<:encoding(UTF-8)', $f or die "$f: $!\n";
    local $/;
    return scalar <$fh>;
}

# ---- the directive table, from the C source ------------------------------------

my $csrc = slurp("$ROOT/mod_cryptorefills/mod_cryptorefills_config.c");
(my $nocomment = $csrc) =~ s{/\*.*?\*/}{}gs;

my %macro;   # #define DIR_OR_SRV (RSRC_CONF | ACCESS_CONF)
while ($nocomment =~ /^#define\s+(\w+)\s+\(?\s*([A-Z_]+(?:\s*\|\s*[A-Z_]+)*)\s*\)?\s*$/mg) {
    $macro{$1} = $2;
}
sub flags_of {
    my ($expr) = @_;
    my %f;
    for my $t (split /\s*\|\s*/, $expr =~ s/[()]//gr) {
        $t =~ s/^\s+|\s+$//g;
        if ($macro{$t}) { $f{$_} = 1 for keys %{ flags_of($macro{$t}) } }
        else { $f{$t} = 1 }
    }
    return \%f;
}

my ($table) = $nocomment =~ /command_rec\s+cr_cmds\[\]\s*=\s*\{(.*?)\n\};/s
    or BAIL_OUT('cr_cmds[] not found in mod_cryptorefills_config.c');
my @cmds;
while ($table =~ /AP_INIT_(\w+)\(\s*"(\w+)"\s*,\s*(\w+)\s*,\s*[^,]+?\s*,\s*([^,]+?)\s*,\s*((?:"(?:[^"\\]|\\.)*"\s*)+)\)/sg) {
    my ($take, $name, $setter, $flags, $help) = ($1, $2, $3, $4, $5);
    $help = join '', $help =~ /"((?:[^"\\]|\\.)*)"/g;
    my $f = flags_of($flags);
    # A setter that calls ap_check_cmd_context(cmd, GLOBAL_ONLY) is refused in
    # <VirtualHost> too, whatever RSRC_CONF allows.
    my ($body) = $nocomment =~ /\b\Q$setter\E\s*\(cmd_parms[^)]*\)\s*\{(.*?)\n\}/s;
    my $global = defined $body && $body =~ /ap_check_cmd_context\s*\(\s*cmd\s*,\s*GLOBAL_ONLY/;
    my @ctx;
    push @ctx, 'server config' if $f->{RSRC_CONF} || $f->{OR_ALL};
    push @ctx, 'virtual host' if ($f->{RSRC_CONF} || $f->{OR_ALL}) && !$global;
    push @ctx, 'directory' if $f->{ACCESS_CONF} || $f->{OR_ALL};
    push @ctx, '.htaccess' if grep { /^OR_/ } keys %$f;
    push @cmds, { name => $name, take => $take, help => $help, context => join(', ', @ctx) };
}
# Every AP_INIT_ in the table was understood.
my $n_init = () = $table =~ /AP_INIT_\w+\(/g;
is(scalar @cmds, $n_init, "parsed all $n_init entries of cr_cmds[]");
cmp_ok(scalar @cmds, '>=', 17, 'cr_cmds[] has the contract\'s directives');
my %known = map { $_->{name} => $_ } @cmds;

# ---- 1. docs/DIRECTIVES.md ---------------------------------------------------------

my $doc = slurp("$ROOT/docs/DIRECTIVES.md");
my %section;   # name => text under its "## Name" heading
{
    my @parts = split /^(##\s+.*)$/m, $doc;
    for (my $i = 1; $i < @parts; $i += 2) {
        my ($h) = $parts[$i] =~ /^##\s+(.*?)\s*$/;
        $section{$h} = $parts[$i + 1] if $h =~ /^Cryptorefills[A-Z]\w*$/;
    }
}

sub norm { my $s = shift // ''; $s =~ s/`//g; $s =~ s/\\(.)/$1/g; $s =~ s/\s+/ /g; $s =~ s/^ | $//g; $s }

my %example;    # name => example block
for my $c (@cmds) {
    my $n = $c->{name};
    my $s = $section{$n};
    ok(defined $s, "docs/DIRECTIVES.md has a '## $n' section") or next;
    my %line;
    my @order;
    while ($s =~ /^\*\*(Syntax|Default|Context|Description):\*\*\s*(.*?)\s*$/mg) {
        $line{$1} = $2;
        push @order, $1;
    }
    is("@order", 'Syntax Default Context Description',
       "$n: Syntax, Default, Context, Description lines in that order");
    like($line{Syntax} // '', qr/^`\Q$n\E(?:\s[^`]+)?`$/, "$n: Syntax line names the directive");
    is(norm($line{Context}), $c->{context}, "$n: Context matches the flags in cr_cmds[]");
    is(norm($line{Description}), norm($c->{help}), "$n: Description is the directive's help text");
    if ($c->{help} =~ /\(default:?\s*([\w.]+)\)/) {
        my $d = $1;
        like($line{Default} // '', qr/(?<![\w.])\Q$d\E(?![\w.])/, "$n: Default line says $d like the help text");
    }
    ok(length(norm((split /```/, $s)[0] =~ s/^\*\*.*$//mgr)) > 80, "$n: has prose after the header lines");
    my ($ex) = $s =~ /```apache\n(.*?)```/s;
    ok(defined $ex && $ex =~ /^\s*\Q$n\E\s+\S/m, "$n: has an apache example using it") and $example{$n} = $ex;
}
for my $h (sort keys %section) {
    ok($known{$h}, "docs/DIRECTIVES.md section $h is a directive of cr_cmds[]");
}

# The summary table agrees on contexts.
for my $c (@cmds) {
    my ($row) = $doc =~ /^\|\s*\[\Q$c->{name}\E\][^|]*\|[^|]*\|\s*([^|]*?)\s*\|\s*$/m;
    is(norm($row), $c->{context}, "summary table: $c->{name} with its context");
}

# ---- 3. names in the docs and the conf ------------------------------------------------

my $conf = slurp("$ROOT/conf/cryptorefills.conf");
my $load = slurp("$ROOT/conf/cryptorefills.load");
for my $c (@cmds) {
    like($conf, qr/^\s*#?\s*\Q$c->{name}\E\s+\S/m, "conf/cryptorefills.conf shows $c->{name}");
}
like($conf, qr/^\s*CryptorefillsPartnerId\s+"\$\{CRYPTOREFILLS_PARTNER_ID\}"/m,
     'conf: the partner id comes from ${CRYPTOREFILLS_PARTNER_ID}');
like($conf, qr/^\s*SetHandler\s+cryptorefills\s*$/m, 'conf: SetHandler cryptorefills');
like($load, qr/^# Depends:.*\bsocache_shmcb\b/m, 'load: Debian "# Depends: socache_shmcb"');
like($load, qr/^LoadModule\s+cryptorefills_module\s+\S+\/mod_cryptorefills\.so\s*$/m,
     'load: LoadModule cryptorefills_module');

# The files this test owns may not name any other Cryptorefills* word; other
# docs (which also name JavaScript classes such as CryptorefillsError) may not
# use one as a directive: at the start of a config line, or first in a table row.
my %strict = map { ("$ROOT/$_" => 1) } qw(docs/DIRECTIVES.md docs/ROUTES.md
    conf/cryptorefills.conf conf/cryptorefills.load);
my @files = (sort(keys %strict), grep { !$strict{$_} } glob("$ROOT/docs/*.md"),
             grep { -f } "$ROOT/README.md");
for my $f (@files) {
    my %seen;
    my $text = slurp($f);
    my @names = $strict{$f}
        ? $text =~ /(?<![\w\-\/.])(Cryptorefills[A-Z][A-Za-z]*)/g
        : ($text =~ /^\s*#?\s*(Cryptorefills[A-Z][A-Za-z]*)[ \t]+\S/mg,
           $text =~ /^\|\s*`?(Cryptorefills[A-Z][A-Za-z]*)(?:\s+[^|`]*)?`?\s*\|/mg);
    my @unknown = grep { !$known{$_} && !$seen{$_}++ } @names;
    (my $rel = $f) =~ s{^\Q$ROOT\E/}{};
    ok(!@unknown, "$rel names no directive the code lacks") or diag "unknown: @unknown";
}

# ---- 5. log tags ------------------------------------------------------------------------

{
    my %code;
    for my $f (glob("$ROOT/mod_cryptorefills/*.c")) {
        (my $src = slurp($f)) =~ s{/\*.*?\*/}{}gs;
        $code{"CR$1"}++ while $src =~ /\bCRLOGNO\((\d+)\)/g;
    }
    my @twice = grep { $code{$_} > 1 } sort keys %code;
    ok(!@twice, 'no log tag is used by two log lines') or diag "used twice: @twice";
    my %doc;
    my $tags = slurp("$ROOT/docs/LOGTAGS.md");
    $doc{$1}++ while $tags =~ /^\|\s*`(CR\d+)`\s*\|/mg;
    cmp_ok(scalar keys %code, '>=', 30, 'the code has its log tags');
    my @missing = grep { !$doc{$_} } sort keys %code;
    ok(!@missing, 'docs/LOGTAGS.md lists every log tag of the code') or diag "missing: @missing";
    my @stale = grep { !$code{$_} || $doc{$_} > 1 } sort keys %doc;
    ok(!@stale, 'docs/LOGTAGS.md lists no tag twice and none the code lacks')
        or diag "stale or twice: @stale";
}

# ---- 2. examples and contexts under apache2 -t ---------------------------------------

{
    local $ENV{CRYPTOREFILLS_PARTNER_ID} = 'docs-test-partner';
    local $ENV{CRYPTOREFILLS_APP_VERSION} = '9.9.9';
    for my $c (@cmds) {
        my $n = $c->{name};
        my $ex = $example{$n} // next;
        my ($rc, $out) = CrTest->config_test(conf => $ex);
        is($rc, 0, "$n: the documented example passes apache2 -t") or diag "$ex\n$out";

        my ($line) = $ex =~ /^\s*(\Q$n\E\s+\S.*?)\s*$/m;
        ($rc, $out) = CrTest->config_test(conf => "<VirtualHost 127.0.0.1:*>\n$line\n</VirtualHost>\n");
        if ($c->{context} =~ /virtual host/) { is($rc, 0, "$n: allowed in <VirtualHost>") or diag $out }
        else { isnt($rc, 0, "$n: refused in <VirtualHost>") }
        ($rc, $out) = CrTest->config_test(conf => "<Location \"/x\">\n$line\n</Location>\n");
        if ($c->{context} =~ /directory/) { is($rc, 0, "$n: allowed in <Location>") or diag $out }
        else { isnt($rc, 0, "$n: refused in <Location>") }
    }
}

# The drop-in as shipped: valid when the variables are set, refused when not.
{
    local $ENV{CRYPTOREFILLS_PARTNER_ID} = 'docs-test-partner';
    local $ENV{CRYPTOREFILLS_APP_VERSION} = '9.9.9';
    my ($rc, $out) = CrTest->config_test(conf => "Include \"$ROOT/conf/cryptorefills.conf\"\n");
    is($rc, 0, 'conf/cryptorefills.conf as shipped passes apache2 -t') or diag $out;
}
{
    local $ENV{CRYPTOREFILLS_APP_VERSION} = '9.9.9';
    delete local $ENV{CRYPTOREFILLS_PARTNER_ID};
    my ($rc, $out) = CrTest->config_test(conf => "Include \"$ROOT/conf/cryptorefills.conf\"\n");
    isnt($rc, 0, 'without CRYPTOREFILLS_PARTNER_ID the drop-in fails apache2 -t');
    like($out, qr/CryptorefillsPartnerId: .*undefined variable/, '... naming the directive and the cause')
        or diag $out;
}

# ---- 4. a real server with the drop-in -------------------------------------------------

# CrTest writes its own LoadModule for the module; here conf/cryptorefills.load
# loads it, as a2enmod would.
package CrDocsServer {
    our @ISA = ('CrTest');
    sub conf_text {
        my $t = $_[0]->SUPER::conf_text;
        $t =~ s/^LoadModule cryptorefills_module .*\n//m;
        return $t;
    }
}

my $tmp = tempdir('cr-docs-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $tmp;
copy("$ROOT/htdocs/cryptorefills.js", "$tmp/cryptorefills.js") or die "copy: $!";
chmod 0644, "$tmp/cryptorefills.js";
my $module = module_path();
(my $load_t = $load) =~ s{^(LoadModule\s+cryptorefills_module\s+)\S+}{$1$module}m;
(my $conf_t = $conf) =~ s{/usr/share/mod_cryptorefills}{$tmp}g;
{
    open my $fh, '>:encoding(UTF-8)', "$tmp/cryptorefills.load" or die $!;
    print $fh $load_t;
    open $fh, '>:encoding(UTF-8)', "$tmp/cryptorefills.conf" or die $!;
    print $fh $conf_t;
}
my $partner = 'docs-partner-' . int(rand(1e9));
my $dead = free_port();     # nothing listens there: no traffic leaves the host
my $srv = CrDocsServer->start(
    location => 0,
    env      => { CRYPTOREFILLS_PARTNER_ID => $partner, CRYPTOREFILLS_APP_VERSION => '9.9.9' },
    conf     => <<"C",
Include "$tmp/cryptorefills.load"
Include "$tmp/cryptorefills.conf"
CryptorefillsUpstream http://127.0.0.1:$dead
<Location "/server-status">
    SetHandler server-status
</Location>
C
);
ok($srv, 'httpd starts with conf/cryptorefills.load and conf/cryptorefills.conf');

my $http = HTTP::Tiny->new(timeout => 20);
my $r = $http->get($srv->url('/api/countries'));
is($r->{status}, 200, 'GET /api/countries: 200');
like($r->{headers}{'content-type'} // '', qr{^application/json}, '... JSON');
my $j = eval { decode_json($r->{content}) } || {};
is(scalar @{ $j->{countries} || [] }, 233, '... with the 233 countries');
is_deeply([ grep { !($_->{isoCode} && $_->{name}) } @{ $j->{countries} || [] } ], [],
          '... each with isoCode and name');
unlike($r->{content}, qr/\Q$partner\E/, '... and never the partner id');

$r = $http->get($srv->url('/api/no-such-route'));
is($r->{status}, 404, 'an unknown route: 404');
is((eval { decode_json($r->{content}) } || {})->{detail}, 'NOT_FOUND', '... NOT_FOUND');

# An upstream route goes out (to a closed loopback port): the config routes it.
$r = $http->get($srv->url('/api/brands?country_code=FR'));
is($r->{status}, 502, 'GET /api/brands with the upstream down: 502');
is((eval { decode_json($r->{content}) } || {})->{detail}, 'UPSTREAM_UNAVAILABLE', '... UPSTREAM_UNAVAILABLE');
unlike($r->{content}, qr/\Q$partner\E/, '... and never the partner id');

$r = $http->get($srv->url('/cryptorefills.js'));
is($r->{status}, 200, 'the Alias serves /cryptorefills.js');
my $js = do { open my $fh, '<:raw', "$ROOT/htdocs/cryptorefills.js" or die $!; local $/; <$fh> };
ok($r->{content} eq $js, '... the browser client, byte for byte');

$r = $http->get($srv->url('/server-status?auto'));
is($r->{status}, 200, 'server-status?auto answers');
my @live = sort $r->{content} =~ /^(Cryptorefills\w+): \d+$/mg;
my @documented = sort $doc =~ /^\|\s*`(Cryptorefills[a-z]\w*)`\s*\|/mg;
cmp_ok(scalar @live, '>', 10, "... with the module's counters");
is_deeply(\@documented, \@live, 'docs/DIRECTIVES.md lists exactly the ?auto keys the module prints');

$srv->stop;     # checks the error log

# ---- the example bodies of docs/ROUTES.md work ----------------------------------

{
    require CrSandbox;
    my $routes = slurp("$ROOT/docs/ROUTES.md");
    my %example = $routes =~ /<!-- example: POST (\S+) -->\s*```json\n(.*?)```/sg;
    is_deeply([ sort keys %example ], [ 'orders', 'orders/validations' ],
              'docs/ROUTES.md shows an example body for both order routes');
    my $sb = CrSandbox->start();
    my $ap = CrTest->start(sandbox => $sb);
    my $post = sub {
        my ($route, $body, %h) = @_;
        my $r = $http->post($ap->url("/api/$route"),
            { headers => { 'Content-Type' => 'application/json', %h }, content => $body });
        return ($r, eval { decode_json($r->{content}) } || {});
    };
    my ($r, $j) = $post->('orders/validations', $example{'orders/validations'} // '{}');
    is($r->{status}, 200, 'the orders/validations example: 200') or diag $r->{content};
    is_deeply($j->{problems} // [], [], '... with no problem');
    ok($j->{coin_amount}, "... priced ($j->{coin_amount} $j->{coin})");
    ($r, $j) = $post->('orders', $example{orders} // '{}', 'Idempotency-Key' => "docs-example-$$");
    is($r->{status}, 200, 'the orders example: 200') or diag $r->{content};
    is($j->{order_state}, 'WaitingForPayment', '... a new order waiting for payment');
    ok($j->{order_id} && $j->{wallet_address} && $j->{qr_text}, '... with its id, address and QR payload');
    # The two shapes differ: each route refuses the other's body.
    ($r, $j) = $post->('orders', $example{'orders/validations'} // '{}', 'Idempotency-Key' => "docs-swap-$$");
    is($r->{status}, 400, 'the validation body on orders: 400');
    ($r, $j) = $post->('orders/validations', $example{orders} // '{}');
    is($r->{status}, 400, 'the order body on orders/validations: 400');
    $ap->stop;
    $sb->stop;
}

done_testing;
