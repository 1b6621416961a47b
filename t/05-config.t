# SPDX-License-Identifier: Apache-2.0
# Configuration errors fail `apache2 -t` with a message naming the directive;
# a handler without a partner id fails it naming the file and line.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CrTest;

my $ok_loc = <<'C';
CryptorefillsUpstream https://api.cryptorefills.com
CryptorefillsPartnerId "abc"
CryptorefillsAppVersion "1.0.0"
<Location "/api">
    SetHandler cryptorefills
</Location>
C

my ($rc, $out) = CrTest->config_test(conf => $ok_loc);
is($rc, 0, 'a complete config passes apache2 -t') or diag $out;

my @bad = (
    [ 'CryptorefillsUpstream ftp://x.example', qr/CryptorefillsUpstream.*only http and https/ ],
    [ 'CryptorefillsUpstream not-a-url', qr/CryptorefillsUpstream.*not an absolute URL/ ],
    [ 'CryptorefillsUpstream https://h.example/?q=1', qr/CryptorefillsUpstream/ ],
    [ 'CryptorefillsUpstream https://user:pw@h.example', qr/CryptorefillsUpstream/ ],
    [ 'CryptorefillsUpstream https://h.example/a/../b', qr/CryptorefillsUpstream/ ],
    [ 'CryptorefillsConnectTimeout 0', qr/CryptorefillsConnectTimeout.*out of range/ ],
    [ 'CryptorefillsConnectTimeout abc', qr/CryptorefillsConnectTimeout.*not a number/ ],
    [ 'CryptorefillsTimeout 0', qr/CryptorefillsTimeout.*out of range/ ],
    [ 'CryptorefillsTimeout -1', qr/CryptorefillsTimeout/ ],
    [ 'CryptorefillsTimeout 1.', qr/CryptorefillsTimeout/ ],
    [ 'CryptorefillsDefaultCountry XX', qr/CryptorefillsDefaultCountry.*'XX'/ ],
    [ 'CryptorefillsDefaultCountry USA', qr/CryptorefillsDefaultCountry/ ],
    [ 'CryptorefillsMaxBodySize 0', qr/CryptorefillsMaxBodySize/ ],
    [ 'CryptorefillsMaxBodySize 10k', qr/CryptorefillsMaxBodySize.*whole number/ ],
    [ 'CryptorefillsPartnerId ""', qr/CryptorefillsPartnerId/ ],
    [ "CryptorefillsPartnerId \"a\\x01b\"", qr/CryptorefillsPartnerId.*control character/ ],
    [ 'CryptorefillsPartnerId "${CR_SURELY_UNDEFINED_VAR}"', qr/CryptorefillsPartnerId.*undefined variable/ ],
    [ 'CryptorefillsAppVersion ""', qr/CryptorefillsAppVersion/ ],
    [ 'CryptorefillsCountryEnv "A B"', qr/CryptorefillsCountryEnv/ ],
    [ "<Location /x>\nCryptorefillsCache shmcb\n</Location>", qr/CryptorefillsCache.*not allowed/ ],
    [ 'CryptorefillsCache nosuchprovider', qr/CryptorefillsCache.*unknown socache provider/ ],
);
for my $b (@bad) {
    my ($line, $want) = @$b;
    $line =~ s/\\x01/\x01/;
    my ($rc, $out) = CrTest->config_test(conf => "$ok_loc\n$line\n");
    isnt($rc, 0, "apache2 -t fails for: $line");
    like($out, $want, "... with a message naming the directive") or diag $out;
}

# The handler without a partner id, in a <Location>: fails, naming file:line.
($rc, $out) = CrTest->config_test(conf => <<'C');
CryptorefillsAppVersion "1.0.0"
<Location "/shop/api">
    SetHandler cryptorefills
</Location>
C
isnt($rc, 0, 'SetHandler cryptorefills without CryptorefillsPartnerId fails apache2 -t');
like($out, qr{CR01001: SetHandler cryptorefills at \S+httpd\.conf:\d+ \(<Location /shop/api>.*CryptorefillsPartnerId}, '... naming the section, file and line') or diag $out;

# ... nor without an app version, in a virtual host.
($rc, $out) = CrTest->config_test(conf => <<'C');
CryptorefillsPartnerId "abc"
<VirtualHost 127.0.0.1:*>
    ServerName shop.example
    <Location "/api">
        SetHandler "cryptorefills"
    </Location>
</VirtualHost>
C
isnt($rc, 0, 'without CryptorefillsAppVersion in a vhost fails');
like($out, qr/CryptorefillsAppVersion/, '... naming CryptorefillsAppVersion') or diag $out;

# Set at server level, inherited by the vhost's Location: fine.
($rc, $out) = CrTest->config_test(conf => <<'C');
CryptorefillsPartnerId "abc"
CryptorefillsAppVersion "2"
<VirtualHost 127.0.0.1:*>
    ServerName shop.example
    <Location "/api">
        SetHandler cryptorefills
    </Location>
</VirtualHost>
C
is($rc, 0, 'partner id inherited from the server config passes') or diag $out;

# Set in the Location itself: fine; other handlers are not our business.
($rc, $out) = CrTest->config_test(conf => <<'C');
<Location "/api">
    SetHandler cryptorefills
    CryptorefillsPartnerId "abc"
    CryptorefillsAppVersion "2"
</Location>
<Location "/status">
    SetHandler server-status
</Location>
C
is($rc, 0, 'partner id in the Location passes') or diag $out;

# The error message never echoes a partner id.
($rc, $out) = CrTest->config_test(conf => <<'C');
CryptorefillsPartnerId "secret-partner-xyz"
<Location "/api">
    SetHandler cryptorefills
</Location>
C
isnt($rc, 0, 'id without version fails');
unlike($out, qr/secret-partner-xyz/, '... and the output does not contain the partner id');

done_testing;
