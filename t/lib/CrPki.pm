# SPDX-License-Identifier: Apache-2.0
package CrPki;
# A private CA and server certificates made with openssl at test time:
#
#   my $pki = CrPki->new;          # in a fresh temporary directory
#   $pki->ca_file                  # the CA (PEM) to trust
#   $pki->cert('server')           # (cert, key) for IP:127.0.0.1, DNS:localhost
#   $pki->cert('wrong')            # (cert, key) for DNS:wrong.example only
#
# Files are world-readable: httpd's workers (nobody) and libcurl in them read
# the CA file at request time.
use strict;
use warnings;
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use Carp qw(croak);

my %SAN = (
    server => 'IP:127.0.0.1,DNS:localhost',
    wrong  => 'DNS:wrong.example',
);

sub new {
    my ($class, %o) = @_;
    my $dir = $o{dir} // tempdir('cr-pki-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CR_KEEP});
    make_path($dir);
    chmod 0755, $dir;
    my $self = bless { dir => $dir }, $class;
    $self->_run(qw(openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -sha256),
        -subj => '/CN=cr-test-ca', -keyout => "$dir/ca.key", -out => "$dir/ca.pem",
        -addext => 'basicConstraints=critical,CA:TRUE', -addext => 'keyUsage=critical,keyCertSign,cRLSign');
    for my $name (sort keys %SAN) {
        $self->_run(qw(openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256), -subj => "/CN=cr-test-$name",
            -keyout => "$dir/$name.key", -out => "$dir/$name.csr");
        open my $ext, '>', "$dir/$name.ext" or croak $!;
        print $ext "subjectAltName=$SAN{$name}\nbasicConstraints=CA:FALSE\n"
            . "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n";
        close $ext;
        $self->_run(qw(openssl x509 -req -days 2 -sha256), -in => "$dir/$name.csr", -CA => "$dir/ca.pem",
            -CAkey => "$dir/ca.key", -CAcreateserial => -out => "$dir/$name.pem", -extfile => "$dir/$name.ext");
    }
    chmod 0644, glob "$dir/*";
    return $self;
}

sub _run {
    my ($self, @cmd) = @_;
    my $out = qx{@{[ join ' ', map { "'$_'" } @cmd ]} 2>&1};
    croak "CrPki: @cmd failed:\n$out" if $?;
}

sub dir     { $_[0]{dir} }
sub ca_file { "$_[0]{dir}/ca.pem" }
sub cert    { my ($s, $n) = @_; croak "no cert $n" unless $SAN{$n}; ("$s->{dir}/$n.pem", "$s->{dir}/$n.key") }

1;
