# SPDX-License-Identifier: Apache-2.0
package CrFixtures;
# Order bodies the route tests share: a valid orders/validations body and a
# valid orders body for the sandbox's US catalog (Airbnb $100, USDC on Solana).
use strict;
use warnings;
use JSON::PP ();
use Exporter 'import';
our @EXPORT_OK = qw(%VALIDATE %CREATE);

our %VALIDATE = (
    email => 'buyer@example.com',
    payment => { type => 'via', payment_via => 'USER_WALLET', coin => 'USDC' },
    deliveries => [ { beneficiary_account => 'buyer@example.com', brand_name => 'Airbnb', country_code => 'US',
                      denomination => '100 USD', localized_denomination => '$100' } ],
    lang => 'en',
);
our %CREATE = (
    deliveries => [ { kind => 'giftcard', quantity => 1, deliverable => { brand_name => 'Airbnb',
        country_code => 'US', denomination => '100', beneficiary_account => 'buyer@example.com' } } ],
    payment => { type => 'via', coin => 'USDC', network => 'Solana', payment_via => 'USER_WALLET' },
    user => { email => 'buyer@example.com', has_accepted_newsletter => JSON::PP::true },
    lang => 'en',
);

1;
