# SPDX-License-Identifier: Apache-2.0
package CrSandbox::Data;

# Deterministic catalog data for the sandbox upstream (t/sandbox/cr-sandbox.pl).
#
# Everything is derived from the compact tables below plus MD5 of stable keys
# (brand ids, colours, stock, product ids): the same seed gives byte-identical
# catalogs on every run and every machine. No rand(), no clock.
#
# Core Perl only (Digest::MD5, List::Util); the server adds Mojo on top.

use strict;
use warnings;
use utf8;
use Digest::MD5 qw(md5_hex);
use Encode qw(encode_utf8);
use File::Basename qw(dirname);
use File::Spec;
use List::Util ();

our $SEED = 'cr-sandbox-1';

sub _h { hex substr(md5_hex(encode_utf8(join "\0", $SEED, @_)), 0, 8) }    # 32-bit hash

sub uuid {
    my $h = md5_hex(encode_utf8(join "\0", $SEED, @_));
    substr($h, 12, 1) = '4';
    substr($h, 16, 1) = (qw(8 9 a b))[hex(substr $h, 16, 1) % 4];
    return join '-', substr($h, 0, 8), substr($h, 8, 4), substr($h, 12, 4),
        substr($h, 16, 4), substr($h, 20, 12);
}

sub slug {
    my $s = lc shift;
    $s =~ tr/àáâãäåçèéêëìíîïñòóôõöùúûüýÿşğı/aaaaaaceeeeiiiinooooouuuuyysgi/;
    $s =~ s/&/and/g;
    $s =~ s/\+/-plus/g;
    $s =~ s/[^a-z0-9]+/-/g;
    $s =~ s/^-|-$//g;
    return $s;
}

# ---------------------------------------------------------------- countries
our $COUNTRIES_FILE = File::Spec->catfile(dirname(__FILE__), '..', '..', 'sandbox', 'data', 'countries.tsv');
my (@COUNTRIES, %COUNTRY);

sub countries {
    return \@COUNTRIES if @COUNTRIES;
    open my $fh, '<:encoding(UTF-8)', $COUNTRIES_FILE or die "cannot read $COUNTRIES_FILE: $!";
    <$fh>;    # header
    while (my $l = <$fh>) {
        chomp $l;
        $l =~ s/\r$//;
        next unless length $l;
        my ($code, $name) = split /\t/, $l, 2;
        push @COUNTRIES, { isoCode => $code, name => $name };
        $COUNTRY{$code} = $name;
    }
    return \@COUNTRIES;
}
sub country_name { countries(); $COUNTRY{ uc($_[0] // '') } }

# ---------------------------------------------------------------- money
# currency => [symbol, symbol-after?, decimal comma?, USD per unit, denomination multiplier]
our %CUR = (
    USD => ['$',   0, 0, 1.00,    1],
    GBP => ['£',   0, 0, 1.27,    1],
    EUR => ['€',   0, 1, 1.08,    1],
    CAD => ['C$',  0, 0, 0.73,    1],
    BRL => ['R$',  0, 1, 0.19,    5],
    MXN => ['MX$', 0, 0, 0.055,  20],
    TRY => ['₺',   0, 1, 0.030,  30],
    AED => ['AED ', 0, 0, 0.2723, 4],
    INR => ['₹',   0, 0, 0.012, 100],
);

sub localize {
    my ($amount, $cur) = @_;
    my $c = $CUR{$cur} || ['', 0, 0];
    my $n = $amount == int($amount) ? sprintf('%d', $amount) : sprintf('%.2f', $amount);
    if ($n =~ /^(\d+)(\.\d+)?$/ && length $1 > 3) {
        my ($i, $f) = ($1, $2 // '');
        1 while $i =~ s/^(\d+)(\d{3})/$1,$2/;
        $i =~ tr/,/./ if $c->[2];
        $n = $i . $f;
    }
    $n =~ s/\.(\d\d)$/,$1/ if $c->[2];
    return $c->[0] . $n;
}
sub num_str { my $v = shift; $v == int($v) ? sprintf('%d', $v) : do { my $s = sprintf('%.2f', $v); $s =~ s/0$//; $s } }

# coin => [USD price, decimals]
our %COIN = (
    USDC => [1.0,      2],
    USDT => [0.9998,   2],
    BTC  => [67250.00, 8],
    ETH  => [3180.50,  8],
    GRAM => [5.42,     4],
    LTC  => [72.10,    8],
);
our $MARKUP = 1.03;

sub coin_amount {
    my ($usd, $coin) = @_;
    my $c = $COIN{$coin} or return undef;
    return sprintf("%.$c->[1]f", $usd * $MARKUP / $c->[0]);
}

# ---------------------------------------------------------------- payment vias
my %EVM = (engine => 'EVM');
sub payment_vias {
    my $usdc = sub {
        my ($addr, $sym) = @_;
        return { engine => $_[2] // 'EVM', address => $addr, decimals => 6, symbol => $sym // 'USDC' };
    };
    my $logo = sub { "https://cdn.cryptorefills.com/coins/" . lc(shift) . ".svg" };
    return [
        {   name => 'USER_WALLET', available => \1, logo_url => $logo->('wallet'),
            currencies => [
                {   name => 'USDC', is_suspended => \0, threshold => '1', logo_url => $logo->('usdc'),
                    networks => [
                        { name => 'Solana', is_suspended => \0, threshold => '0.56', base_token => 'SOL',
                          smart_contract_engine => 'SVM', logo_url => $logo->('sol'),
                          smart_contract => $usdc->('EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v', 'USDC', 'SVM') },
                        { name => 'Polygon (Matic)', is_suspended => \0, threshold => '0.5', chain_id => 137,
                          base_token => 'POL', smart_contract_engine => 'EVM', logo_url => $logo->('matic'),
                          smart_contract => $usdc->('0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359') },
                        { name => 'Base', is_suspended => \0, threshold => '0.5', chain_id => 8453,
                          base_token => 'ETH', smart_contract_engine => 'EVM', logo_url => $logo->('base'),
                          smart_contract => $usdc->('0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913') },
                        { name => 'Ethereum', is_suspended => \0, threshold => '15', chain_id => 1,
                          base_token => 'ETH', smart_contract_engine => 'EVM', logo_url => $logo->('eth'),
                          smart_contract => $usdc->('0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48') },
                    ] },
                {   name => 'USDT', is_suspended => \0, threshold => '1', logo_url => $logo->('usdt'),
                    networks => [
                        # the one suspended network of an otherwise active coin
                        { name => 'Ethereum', is_suspended => \1, threshold => '15', chain_id => 1,
                          base_token => 'ETH', smart_contract_engine => 'EVM', logo_url => $logo->('eth'),
                          smart_contract => $usdc->('0xdAC17F958D2ee523a2206206994597C13D831ec7', 'USDT') },
                        { name => 'Polygon (Matic)', is_suspended => \0, threshold => '0.5', chain_id => 137,
                          base_token => 'POL', smart_contract_engine => 'EVM', logo_url => $logo->('matic'),
                          smart_contract => $usdc->('0xc2132D05D31c914a87C6611C10748AEb04B58e8F', 'USDT') },
                        { name => 'Ton', is_suspended => \0, threshold => '0.5', base_token => 'TON',
                          logo_url => $logo->('ton'),
                          smart_contract => { engine => 'TVM', address => 'EQCxE6mUtQJKFnGfaROTKOt1lZbDiiX1kCixRv7Nw2Id_sDs', decimals => 6, symbol => 'USDT' } },
                    ] },
                {   name => 'BTC', is_suspended => \0, threshold => '0.00001', logo_url => $logo->('btc'),
                    networks => [
                        { name => 'Mainnet', is_suspended => \0, threshold => '0.0001', base_token => 'BTC', logo_url => $logo->('btc') },
                        { name => 'Lightning', is_suspended => \0, threshold => '0.00000001', base_token => 'BTC', logo_url => $logo->('lightning') },
                    ] },
                {   name => 'ETH', is_suspended => \0, threshold => '0.0005', logo_url => $logo->('eth'),
                    networks => [
                        { name => 'Ethereum', is_suspended => \0, threshold => '0.005', chain_id => 1, base_token => 'ETH',
                          smart_contract_engine => 'EVM', logo_url => $logo->('eth') },
                        { name => 'Base', is_suspended => \0, threshold => '0.0002', chain_id => 8453, base_token => 'ETH',
                          smart_contract_engine => 'EVM', logo_url => $logo->('base') },
                    ] },
                {   name => 'GRAM', is_suspended => \0, threshold => '0.1', logo_url => $logo->('ton'),
                    networks => [
                        { name => 'Ton', is_suspended => \0, threshold => '0.1', base_token => 'TON', logo_url => $logo->('ton') },
                    ] },
                # the suspended coin
                {   name => 'LTC', is_suspended => \1, threshold => '0.01', logo_url => $logo->('ltc'),
                    networks => [
                        { name => 'Mainnet', is_suspended => \0, threshold => '0.01', base_token => 'LTC', logo_url => $logo->('ltc') },
                    ] },
            ] },
        {   name => 'BINANCE_PAY', available => \0, logo_url => $logo->('binance'),
            currencies => [
                { name => 'USDT', is_suspended => \0, networks => [ { name => 'Binance Pay', is_suspended => \0 } ] },
                { name => 'BTC',  is_suspended => \0, networks => [ { name => 'Binance Pay', is_suspended => \0 } ] },
            ] },
    ];
}

# Default network of a coin when a request names none (product/price quotes).
our %DEFAULT_NETWORK = (USDC => 'Polygon (Matic)', USDT => 'Polygon (Matic)', BTC => 'Mainnet',
    ETH => 'Ethereum', GRAM => 'Ton', LTC => 'Mainnet');

sub payment_method {
    my ($coin, $net) = @_;
    $net //= $DEFAULT_NETWORK{$coin} // 'Mainnet';
    return 'BTC-LIGHTNING' if $net eq 'Lightning';
    return $coin if $net eq 'Mainnet' || ($coin eq 'ETH' && $net eq 'Ethereum') || ($coin eq 'GRAM' && $net eq 'Ton');
    my %suf = ('Solana' => 'SOLANA', 'Polygon (Matic)' => 'MATIC', 'Base' => 'BASE',
        'Ethereum' => 'ERC20', 'Ton' => 'TON');
    return "$coin-" . ($suf{$net} // uc $net);
}

sub protocol {
    my ($net) = @_;
    return { Lightning => 'LIGHTNING_LIKE', Mainnet => 'BITCOIN_LIKE', Solana => 'SOLANA_LIKE',
        Ton => 'TON_LIKE' }->{$net} // 'EVM_LIKE';
}

# ---------------------------------------------------------------- catalogs
# Category templates: kind, delivery, denominations (in USD-like units; scaled
# per currency), share of range products, additional categories, product type.
our %CAT = (
    'e-commerce'    => { kind => 'giftcard', den => [10, 25, 50, 100, 200], range => 40, add => ['electronics', 'home'] },
    'gaming'        => { kind => 'giftcard', den => [5, 10, 20, 50, 100], range => 10, add => ['entertainment'] },
    'food'          => { kind => 'giftcard', den => [10, 15, 25, 50], range => 20, add => ['restaurants'] },
    'groceries'     => { kind => 'giftcard', den => [25, 50, 100], range => 30, add => ['food'] },
    'travel'        => { kind => 'giftcard', den => [25, 50, 100, 200, 500], range => 25, add => ['hotels'] },
    'entertainment' => { kind => 'giftcard', den => [10, 15, 25, 50], range => 10, add => ['streaming'] },
    'fashion'       => { kind => 'giftcard', den => [25, 50, 100, 150], range => 30, add => ['shoes'] },
    'health-beauty' => { kind => 'giftcard', den => [10, 25, 50, 100], range => 25, add => ['pharmacy'] },
    'home'          => { kind => 'giftcard', den => [25, 50, 100, 250], range => 35, add => ['garden'] },
    'electronics'   => { kind => 'giftcard', den => [25, 50, 100, 200], range => 30, add => ['e-commerce'] },
    'apps'          => { kind => 'giftcard', den => [10, 15, 25, 50, 100], range => 10, add => ['software'] },
    'sports'        => { kind => 'giftcard', den => [25, 50, 100], range => 30, add => ['outdoors'] },
    'prepaid-cards' => { kind => 'giftcard', den => [25, 50, 100, 250], range => 0, add => ['e-money'], login => 1 },
    'crypto'        => { kind => 'nft_giftcard', den => [10, 25, 50, 100], range => 0, add => [] },
    'e-sim'         => { kind => 'mobile_recharge', esim => 1, add => ['travel'] },
    'phone-top-up'  => { kind => 'mobile_recharge', phone => 1, den => [5, 10, 15, 20, 25, 50], range => 35, add => [] },
    'data-bundle'   => { kind => 'mobile_recharge', phone => 1, bundle => 1, add => ['phone-top-up'] },
);
our @CAT_ORDER = qw(e-commerce gaming food groceries travel entertainment fashion health-beauty
    home electronics apps sports prepaid-cards crypto e-sim phone-top-up data-bundle);

our @ESIM_PLANS = (['1 GB 7 days', 4.5], ['3 GB 30 days', 11], ['5 GB 30 days', 16],
    ['10 GB 30 days', 26], ['20 GB 30 days', 39], ['Unlimited 3 days', 15], ['Unlimited 7 days', 29]);
our @BUNDLES = (['1 GB 7 days', 5], ['5 GB 30 days', 15], ['Unlimited 1 day', 3], ['Unlimited 7 days', 12]);

# Brands present (in local currency) in every country with its own catalog.
my @GLOBAL = (
    gaming => ['Steam', 'PlayStation Store|PlayStation', 'PlayStation Plus|PlayStation', 'Xbox', 'Xbox Game Pass|Xbox',
        'Nintendo eShop', 'Roblox', 'Fortnite V-Bucks', 'Razer Gold', 'Valorant', 'League of Legends',
        'PUBG Mobile UC', 'Free Fire Diamonds', 'EA Play', 'Minecraft', 'Candy Crush', 'Genshin Impact'],
    apps => ['Google Play', 'App Store & iTunes', 'NordVPN', 'Microsoft 365'],
    entertainment => ['Netflix', 'Spotify', 'Twitch', 'Crunchyroll', 'Deezer'],
    travel => ['Airbnb', 'Uber', 'Hotels.com'],
    food => ['Uber Eats'],
    crypto => ['Crypto Voucher'],
    'e-sim' => ['Global eSIM', 'Europe eSIM'],
);

# country => [currency, dial code, target brand count, brands by category]
# "Brand|Family" when the family differs from the brand. "!" suffix: out of stock.
our %MARKET = (
    US => ['USD', '1', 155, [
        'e-commerce' => ['Amazon.com', 'eBay', 'Walmart', 'Target', 'Etsy', 'Wayfair', 'Overstock', 'Newegg',
            "Kohl's", "Macy's", 'Nordstrom', "Sam's Club", 'QVC', 'HSN', 'Chewy', 'Petco', 'PetSmart', 'JCPenney',
            'Saks Fifth Avenue', "Bloomingdale's", 'Dollar General', 'Big Lots!', 'Kmart', 'Temu'],
        gaming => ['GameStop!', 'Call of Duty Points', 'Apex Legends Coins', 'Blizzard Battle.net', 'Ubisoft Connect',
            'Rockstar Games', 'Garena Shells', 'Overwatch Coins', 'RuneScape Membership', 'World of Warcraft'],
        food => ['DoorDash', 'Grubhub', 'Starbucks', "Domino's", 'Pizza Hut', "Papa John's", 'Chipotle', "Dunkin'",
            "McDonald's", 'Burger King', "Wendy's", 'Subway', 'Panera Bread', 'Olive Garden', "Applebee's", "Chili's",
            'The Cheesecake Factory', 'Outback Steakhouse', 'Buffalo Wild Wings', 'Taco Bell', 'Krispy Kreme',
            'Texas Roadhouse', 'Red Robin', 'Cold Stone Creamery!', 'Jamba', 'Shake Shack', 'Five Guys', 'IHOP',
            "Denny's", 'Cracker Barrel', 'P.F. Chang\'s', 'Sonic Drive-In'],
        groceries => ['Instacart', 'Whole Foods Market', 'Kroger', 'Safeway', "Trader Joe's", 'Publix', 'H-E-B',
            'Albertsons', 'Wegmans', 'Food Lion'],
        travel => ['Expedia', 'Lyft', 'Southwest Airlines', 'Delta Air Lines', 'American Airlines', 'JetBlue',
            'Carnival Cruise Line', 'Royal Caribbean', 'Marriott', 'Hilton', 'Vrbo', 'Travelocity', 'Priceline',
            'Greyhound', 'Amtrak', 'Spirit Airlines!', 'Hyatt', 'IHG Hotels'],
        entertainment => ['Hulu', 'Disney+', 'YouTube Premium', 'Paramount+', 'Peacock', 'Max', 'AMC Theatres',
            'Fandango', 'Regal Cinemas', 'Audible', 'SiriusXM', 'Pandora', 'Tidal', 'DAZN', 'Sling TV', 'fuboTV',
            'Apple Music', 'Kindle', 'Barnes & Noble', 'Live Nation', 'StubHub', 'Dave & Buster\'s'],
        fashion => ['Nike', 'Adidas', 'H&M', 'Gap', 'Old Navy', 'Banana Republic', 'Under Armour', 'Lululemon',
            'American Eagle', 'Abercrombie & Fitch', 'Foot Locker', 'Zara', 'Uniqlo', "Levi's", 'Urban Outfitters',
            'Anthropologie', "Victoria's Secret", 'Nordstrom Rack', 'TJ Maxx', 'Marshalls', 'Express', 'Skechers',
            'Converse', 'Ray-Ban', 'Fossil', 'Pandora Jewelry', 'Coach', 'Michael Kors', 'Shein'],
        'health-beauty' => ['Sephora', 'Ulta Beauty', 'Bath & Body Works', 'CVS Pharmacy', 'Walgreens',
            'The Body Shop', 'MAC Cosmetics', 'Glossier', 'Sally Beauty', 'GNC', 'Vitamin Shoppe', 'Massage Envy'],
        home => ['Home Depot', "Lowe's", 'IKEA', 'Crate & Barrel', 'Pottery Barn', 'Williams Sonoma', 'West Elm',
            'Ace Hardware', 'Bed Bath & Beyond', 'HomeGoods', 'At Home', "Michaels", 'Hobby Lobby', 'JOANN',
            'The Container Store'],
        electronics => ['Best Buy', 'Apple', 'Microsoft Store', 'Samsung', 'Dell', 'HP', 'Lenovo', 'Bose', 'B&H Photo'],
        apps => ['Adobe', 'ExpressVPN', 'Surfshark', 'Tinder', 'Bumble', 'Duolingo', 'Discord Nitro', 'Skype'],
        sports => ["Dick's Sporting Goods", 'REI', 'Bass Pro Shops', "Cabela's", 'Academy Sports', 'Golf Galaxy',
            'Peloton', 'Fanatics', 'NBA Store', 'MLB Shop'],
        'prepaid-cards' => ['Visa Prepaid Card', 'Mastercard Prepaid'],
        'e-sim' => ['USA eSIM', 'North America eSIM', 'Americas eSIM', 'USA Unlimited eSIM|USA eSIM'],
        'phone-top-up' => ['AT&T', 'T-Mobile', 'Verizon', 'Cricket Wireless', 'Boost Mobile', 'Metro by T-Mobile',
            'Lycamobile US', 'Simple Mobile', 'H2O Wireless', 'Tracfone', 'Straight Talk', 'Ultra Mobile', 'Page Plus',
            'Total Wireless', 'Mint Mobile', 'Red Pocket', 'Tello!', 'Good2Go'],
        'data-bundle' => ['AT&T Data|AT&T', 'T-Mobile Data|T-Mobile'],
    ]],
    GB => ['GBP', '44', 120, [
        'e-commerce' => ['Amazon.co.uk', 'Argos', 'eBay UK', 'Very', 'ASOS', 'Selfridges', 'Harrods', 'John Lewis', 'Debenhams!'],
        groceries => ['Tesco', "Sainsbury's", 'ASDA', 'Marks & Spencer', 'Morrisons', 'Waitrose', 'Ocado', 'Iceland'],
        food => ['Deliveroo', 'Just Eat', "Nando's", 'Costa Coffee', 'Greggs', 'Pizza Express', 'Wagamama', 'Pret A Manger'],
        fashion => ['Next', 'Primark', 'JD Sports', 'River Island', 'New Look', 'TK Maxx', 'Schuh', 'H&M UK'],
        electronics => ['Currys', 'Apple UK'],
        'health-beauty' => ['Boots', 'Superdrug', 'Lush', 'The Body Shop UK'],
        home => ['B&Q', 'IKEA UK', 'Dunelm', 'Wickes', 'Homebase'],
        entertainment => ['Odeon', 'Cineworld', 'Vue', 'Waterstones', 'Now TV', 'Disney+ UK', 'WHSmith'],
        travel => ['Trainline', 'easyJet', 'British Airways', 'Premier Inn', 'National Express'],
        sports => ['Sports Direct', 'Decathlon UK', 'Halfords'],
        'e-sim' => ['UK eSIM'],
        'phone-top-up' => ['EE', 'Vodafone UK', 'O2 UK', 'Three UK', 'Lebara UK', 'Lycamobile UK', 'giffgaff', 'Tesco Mobile'],
    ]],
    DE => ['EUR', '49', 100, [
        'e-commerce' => ['Amazon.de', 'Otto', 'Zalando', 'eBay DE', 'Galeria', 'Tchibo', 'Kaufland'],
        electronics => ['MediaMarkt', 'Saturn', 'Cyberport'],
        groceries => ['Lidl', 'Aldi Süd', 'Rewe', 'Edeka', 'Netto', 'Penny'],
        'health-beauty' => ['dm', 'Rossmann', 'Douglas', 'Müller', 'Flaconi'],
        home => ['IKEA DE', 'Obi', 'Bauhaus', 'Hornbach', 'Home24'],
        food => ['Lieferando', 'Wolt DE', 'Vapiano', "Burger King DE"],
        fashion => ['H&M DE', 'About You', 'C&A', 'Peek & Cloppenburg', 'Deichmann', 'Esprit'],
        travel => ['Deutsche Bahn', 'Lufthansa', 'FlixBus', 'Eurowings'],
        entertainment => ['Cinemaxx', 'Thalia', 'DAZN DE', 'Sky DE', 'RTL+'],
        'prepaid-cards' => ['paysafecard'],
        'e-sim' => ['Germany eSIM'],
        'phone-top-up' => ['Telekom', 'Vodafone DE', 'O2 DE', 'Congstar', 'Aldi Talk', 'Lebara DE', 'Lycamobile DE', 'Blau', 'Ortel Mobile'],
    ]],
    FR => ['EUR', '33', 90, [
        'e-commerce' => ['Amazon.fr', 'Fnac', 'Cdiscount', 'Darty', 'La Redoute', 'Galeries Lafayette', 'Printemps'],
        groceries => ['Carrefour', 'Auchan', 'E.Leclerc', 'Intermarché', 'Monoprix', 'Picard'],
        food => ['Deliveroo FR', 'Uber Eats FR', 'Just Eat FR', 'Paul', 'Flunch'],
        fashion => ['Zalando FR', 'Kiabi', 'Celio', 'Jules', 'Sézane', 'Undiz', 'Etam'],
        'health-beauty' => ['Sephora FR', 'Yves Rocher', 'Nocibé', 'Marionnaud'],
        sports => ['Decathlon', 'Go Sport', 'Intersport'],
        home => ['IKEA FR', 'Leroy Merlin', 'Castorama', 'Maisons du Monde', 'Boulanger'],
        travel => ['SNCF Connect', 'Air France', 'Accor', 'BlaBlaCar', 'Center Parcs'],
        entertainment => ['Pathé', 'UGC', 'Canal+', 'Cultura', 'Molotov'],
        'e-sim' => ['France eSIM'],
        'phone-top-up' => ['Orange', 'SFR', 'Bouygues Telecom', 'Free Mobile', 'Lebara FR', 'Lycamobile FR', 'Syma Mobile'],
    ]],
    CA => ['CAD', '1', 80, [
        'e-commerce' => ['Amazon.ca', 'Walmart Canada', 'Canadian Tire', "Hudson's Bay", 'Indigo', 'Simons'],
        food => ['Tim Hortons', 'SkipTheDishes', 'Uber Eats CA', 'DoorDash CA', "Swiss Chalet", "Harvey's", 'A&W Canada', 'Boston Pizza'],
        groceries => ['Loblaws', 'Sobeys', 'Metro', 'Costco Canada', 'Save-On-Foods'],
        electronics => ['Best Buy Canada', 'The Source'],
        'health-beauty' => ['Shoppers Drug Mart', 'Sephora Canada'],
        fashion => ['Roots', 'Aritzia', 'Lululemon Canada', 'Winners', 'Sport Chek', 'Mark\'s'],
        travel => ['Air Canada', 'WestJet', 'VIA Rail', 'Porter Airlines'],
        entertainment => ['Cineplex', 'Crave', 'Ticketmaster Canada'],
        home => ['Home Depot Canada', 'RONA', 'Home Hardware', 'Structube'],
        'e-sim' => ['Canada eSIM'],
        'phone-top-up' => ['Rogers', 'Bell', 'Telus', 'Fido', 'Koodo', 'Virgin Plus', 'Freedom Mobile', 'Chatr', 'Public Mobile', 'Lucky Mobile'],
    ]],
    BR => ['BRL', '55', 70, [
        'e-commerce' => ['Amazon.com.br', 'Mercado Livre', 'Magazine Luiza', 'Americanas', 'Submarino', 'Shopee BR', 'Casas Bahia'],
        food => ['iFood', 'Rappi', 'Outback Brasil', "Habib's", 'Madero'],
        fashion => ['Renner', 'C&A Brasil', 'Riachuelo', 'Centauro', 'Netshoes', 'Havaianas'],
        travel => ['99', 'Decolar', 'LATAM', 'Azul', 'Gol'],
        entertainment => ['Globoplay', 'Cinemark Brasil', 'Ingresso.com', 'Deezer BR', 'Livraria Cultura'],
        'health-beauty' => ['O Boticário', 'Natura', 'Drogasil', 'Sephora Brasil'],
        'e-sim' => ['Brazil eSIM'],
        'phone-top-up' => ['Vivo', 'Claro', 'TIM', 'Oi', 'Algar Telecom', 'Nextel BR!'],
    ]],
    MX => ['MXN', '52', 60, [
        'e-commerce' => ['Amazon.com.mx', 'Mercado Libre MX', 'Liverpool', 'Walmart México', 'Coppel', 'Palacio de Hierro', 'Sears México'],
        food => ['Starbucks México', 'Rappi MX', 'Uber Eats MX', 'DiDi Food', 'Sanborns', 'Vips'],
        entertainment => ['Cinépolis', 'Cinemex', 'Blim', 'Claro Video', 'Ticketmaster MX'],
        travel => ['Aeroméxico', 'Volaris', 'Viva Aerobus', 'ADO'],
        groceries => ['Soriana', 'Chedraui', 'La Comer', 'Oxxo'],
        'e-sim' => ['Mexico eSIM'],
        'phone-top-up' => ['Telcel', 'Movistar MX', 'AT&T México', 'Bait', 'Unefon', 'Virgin Mobile MX', 'Weex'],
    ]],
    ES => ['EUR', '34', 60, [
        'e-commerce' => ['Amazon.es', 'El Corte Inglés', 'PcComponentes', 'Fnac ES', 'AliExpress ES'],
        fashion => ['Zara ES', 'Mango', 'Pull&Bear', 'Bershka', 'Massimo Dutti', 'Primark ES', 'Desigual'],
        groceries => ['Carrefour ES', 'Mercadona', 'Dia', 'Eroski'],
        food => ['Glovo', 'Just Eat ES', 'Telepizza', '100 Montaditos', 'Foster\'s Hollywood'],
        sports => ['Decathlon ES'],
        electronics => ['MediaMarkt ES'],
        travel => ['Renfe', 'Iberia', 'Vueling', 'Meliá', 'Alsa'],
        entertainment => ['Cines Yelmo', 'Movistar Plus+', 'Filmin', 'Casa del Libro'],
        'e-sim' => ['Spain eSIM'],
        'phone-top-up' => ['Movistar', 'Vodafone ES', 'Orange ES', 'Yoigo', 'MásMóvil', 'Lebara ES', 'Lycamobile ES', 'Digi'],
    ]],
    TR => ['TRY', '90', 45, [
        'e-commerce' => ['Trendyol', 'Hepsiburada', 'n11', 'Amazon.com.tr', 'Çiçek Sepeti'],
        food => ['Yemeksepeti', 'Getir', 'Simit Sarayı', 'Kahve Dünyası'],
        groceries => ['Migros', 'CarrefourSA', 'A101', 'Şok Market'],
        fashion => ['LC Waikiki', 'Boyner', 'DeFacto', 'Koton', 'Mavi', 'FLO'],
        entertainment => ['D&R', 'BluTV', 'Exxen', 'Cinemaximum', 'Biletix'],
        travel => ['Turkish Airlines', 'Pegasus', 'Obilet'],
        'e-sim' => ['Turkey eSIM'],
        'phone-top-up' => ['Turkcell', 'Vodafone TR', 'Türk Telekom', 'Pttcell'],
    ]],
    AE => ['AED', '971', 40, [
        'e-commerce' => ['Amazon.ae', 'Noon', 'Namshi', 'Sharaf DG', 'Centrepoint', 'Virgin Megastore UAE', 'Lulu Hypermarket'],
        food => ['Talabat', 'Deliveroo UAE', 'Careem Food', 'Tim Hortons UAE', 'Zomato UAE'],
        groceries => ['Carrefour UAE', 'Spinneys', 'Waitrose UAE'],
        travel => ['Emirates', 'Etihad Airways', 'Careem', 'flydubai', 'Jumeirah'],
        entertainment => ['VOX Cinemas', 'Reel Cinemas', 'OSN+', 'Shahid VIP', 'Anghami'],
        fashion => ['Splash', 'Max Fashion', 'Ounass'],
        'e-sim' => ['UAE eSIM', 'Middle East eSIM'],
        'phone-top-up' => ['Etisalat', 'Du', 'Virgin Mobile UAE'],
        'data-bundle' => ['Du Data|Du', 'Etisalat Data|Etisalat'],
    ]],
    IN => ['INR', '91', 55, [
        'e-commerce' => ['Amazon.in', 'Flipkart', 'Myntra', 'Ajio', 'Tata CLiQ', 'Meesho', 'Nykaa Fashion'],
        food => ['Swiggy', 'Zomato', "Domino's India", 'Cafe Coffee Day', 'Barbeque Nation', 'KFC India'],
        groceries => ['BigBasket', 'Blinkit', 'Zepto', 'DMart'],
        travel => ['MakeMyTrip', 'Yatra', 'Cleartrip', 'IndiGo', 'Ola', 'Rapido', 'OYO'],
        entertainment => ['BookMyShow', 'PVR INOX', 'Disney+ Hotstar', 'JioCinema', 'SonyLIV', 'ZEE5', 'Gaana'],
        'health-beauty' => ['Nykaa', 'Tira', 'Apollo Pharmacy', 'Lakmé Salon'],
        fashion => ['Tanishq', 'Lifestyle', 'Pantaloons', 'Westside', 'Bata India', 'Shoppers Stop'],
        electronics => ['Croma', 'Reliance Digital', 'Vijay Sales'],
        'e-sim' => ['India eSIM', 'Asia eSIM'],
        'phone-top-up' => ['Jio', 'Airtel', 'Vi', 'BSNL', 'MTNL!'],
        'data-bundle' => ['Jio Data|Jio', 'Airtel Data|Airtel'],
    ]],
);

# Filler names so each catalog reaches its target size deterministically.
my @FILL_A = qw(North Blue Golden Urban Silver Red Green Prime Bright Coastal Harbor Summit Maple Cedar
    Pioneer Liberty Evergreen Sunset Lakeside Canyon Metro Royal Velvet Copper Crystal Ember Falcon Willow);
my %FILL_B = (
    'e-commerce' => ['Market', 'Bazaar', 'Outlet', 'Depot', 'Emporium', 'Mercantile'],
    gaming => ['Games', 'Arcade', 'Play', 'Quest Coins', 'Legends Gems', 'Realms'],
    food => ['Kitchen', 'Grill', 'Bakery', 'Burgers', 'Pizzeria', 'Taqueria', 'Diner', 'Coffee'],
    groceries => ['Grocers', 'Fresh', 'Farms', 'Foods'],
    travel => ['Air', 'Hotels', 'Cruises', 'Rail', 'Getaways', 'Resorts'],
    entertainment => ['Cinemas', 'Stream', 'Books', 'Music', 'Tickets', 'Theatres'],
    fashion => ['Outfitters', 'Apparel', 'Boutique', 'Shoes', 'Denim', 'Jewelers'],
    'health-beauty' => ['Beauty', 'Spa', 'Pharmacy', 'Wellness'],
    home => ['Home', 'Hardware', 'Garden', 'Furniture', 'Living'],
    electronics => ['Electronics', 'Tech', 'Audio', 'Computers'],
    sports => ['Sports', 'Outdoors', 'Fitness', 'Golf'],
    apps => ['VPN', 'Cloud', 'Learning', 'Dating'],
);
my @FILL_CATS = qw(food fashion e-commerce entertainment home gaming travel health-beauty sports electronics groceries apps);

our $SCALE = 1;    # --catalog-scale: multiplies the target brand counts
my %CATALOG;       # cc => { brands => [...], by_name => {lc brand => b}, by_family => {lc family => [b...]} }

sub _parse_name {
    my ($spec) = @_;
    my $oos = $spec =~ s/!$//;
    my ($brand, $family) = split /\|/, $spec, 2;
    return ($brand, $family // $brand, $oos);
}

sub _denoms {
    my ($cat, $cur, $key) = @_;
    my $t = $CAT{$cat};
    my $m = $CUR{$cur}[4] // 1;
    my $h = _h('den', $key);
    if ($t->{esim} || $t->{bundle}) {
        my @plans = $t->{esim} ? @ESIM_PLANS : @BUNDLES;
        my $n = $t->{esim} ? 4 + $h % 4 : 3 + $h % 2;
        # priced in the local currency (rounded to the unit) except USD-like ones
        return { fixed => [ map {
            my $p = $_->[1] / ($CUR{$cur}[3] // 1);
            $p = $p >= 20 ? int($p + 0.5) : sprintf('%.2f', $p) + 0;
            [ $_->[0], $p, $_->[0] ]
        } @plans[0 .. $n - 1] ] };
    }
    if ($t->{range} && $h % 100 < $t->{range}) {
        my @d = @{ $t->{den} };
        return { range => [ $d[0] * $m, ($d[-1] >= 200 ? 500 : $d[-1] * 2) * $m ] };
    }
    my @d = @{ $t->{den} };
    my $drop = $h % 3 == 0 && @d > 3 ? 1 : 0;    # some brands lack the top value
    @d = @d[0 .. $#d - $drop];
    return { fixed => [ map { my $v = $_ * $m; [ num_str($v) . " $cur", $v, localize($v, $cur) ] } @d ] };
}

sub _brand {
    my ($cc, $cur, $cat, $spec, $i) = @_;
    my ($name, $family, $oos) = _parse_name($spec);
    my $t = $CAT{$cat};
    my $slug = slug($name);
    my $key = "$cc:$name";
    my $h = _h('brand', $key);
    my $den = _denoms($cat, $cur, $key);
    # a few deterministic special cases
    if ($name eq 'Amazon.com') { $den = { range => [5, 500] } }
    if ($name eq 'Airbnb' && $cc eq 'US') { $den = { fixed => [ map { ["$_ USD", $_, "\$$_"] } 25, 50, 100, 200, 500 ] } }
    if ($name eq 'Lebara DE') { $den = { fixed => [ map { [num_str($_) . ' EUR', $_, localize($_, 'EUR')] } 2.5, 5, 10, 15, 25 ] } }
    if ($name eq 'paysafecard') { $den = { fixed => [ map { ["$_ EUR - PIN", $_, localize($_, 'EUR') . ' - PIN'] } 10, 25, 50, 100 ] } }
    if ($name eq 'Aldi Talk') { $den = { fixed => [ map { ["$_ EUR - PIN", $_, localize($_, 'EUR') . ' - PIN'] } 5, 15, 30 ] } }
    my ($min, $max) = $den->{range} ? @{ $den->{range} }
        : (List::Util::min(map { $_->[1] } @{ $den->{fixed} }), List::Util::max(map { $_->[1] } @{ $den->{fixed} }));
    my @add = @{ $t->{add} || [] };
    @add = () if $h % 3 == 0;
    my $b = {
        brand_id      => uuid('brand', $key),
        brand         => $name,
        family        => $family,
        logo_url      => "https://cdn.cryptorefills.com/logos_v2/$slug.webp",
        logo_base_url => "https://cdn.cryptorefills.com/logos_v2/$slug",
        bg_color      => sprintf('#%06X', $h & 0xFFFFFF),
        min           => localize($min, $cur),
        max           => localize($max, $cur),
        category      => $cat,
        additional_categories => [ @add[0 .. ($h % 2 ? $#add : List::Util::min(0, $#add))] ],
        is_out_of_stock => ($oos ? \1 : \0),
        country_code  => $cc,
        kind          => $t->{kind},
        product_type  => (($h >> 8) % 5 == 0 && $t->{kind} eq 'giftcard' ? 'physical' : 'digital'),
        brand_tags    => [ ($h >> 4) % 7 == 0 ? ('popular') : (), $t->{esim} ? ('esim') : () ],
    };
    my $meta = {
        cur => $cur, den => $den, delivery => ($t->{phone} ? 'by_phone' : 'by_email'),
        login => $t->{login} ? 1 : 0, rank => $i, h => $h,
    };
    return ($b, $meta);
}

sub _generic_market {
    my ($cc) = @_;
    my $name = country_name($cc) // $cc;
    my $short = $name =~ s/\s*\(.*//r;
    $short =~ s/,.*//;
    return ['USD', undef, 0, [
        gaming => ['Steam', 'PlayStation Store|PlayStation', 'Xbox', 'Roblox', 'Razer Gold', 'PUBG Mobile UC', 'Free Fire Diamonds'],
        apps => ['Google Play', 'App Store & iTunes', 'NordVPN'],
        entertainment => ['Netflix', 'Spotify'],
        travel => ['Airbnb', 'Uber'],
        crypto => ['Crypto Voucher'],
        'e-sim' => ["$short eSIM", 'Global eSIM'],
        'phone-top-up' => ["$short Mobile", "$short Telecom", 'Lycamobile ' . $cc],
    ], 'generic'];
}

# The catalog of a country: brands in a stable order (category order, then table order).
sub catalog {
    my ($cc) = @_;
    $cc = uc($cc // '');
    return $CATALOG{$cc} if $CATALOG{$cc};
    return undef unless country_name($cc);
    my $mk = $MARKET{$cc} || _generic_market($cc);
    my ($cur, undef, $target, $tables) = @$mk;
    my %by_cat;
    my @tab = @$tables;
    while (my ($cat, $list) = splice @tab, 0, 2) { push @{ $by_cat{$cat} }, @$list }
    unless ($mk->[4]) {    # countries with their own market also get the global brands
        my @g = @GLOBAL;
        while (my ($cat, $list) = splice @g, 0, 2) { push @{ $by_cat{$cat} }, @$list }
    }
    my %seen;
    for my $cat (keys %by_cat) {
        $by_cat{$cat} = [ grep { my ($n) = _parse_name($_); !$seen{ lc $n }++ } @{ $by_cat{$cat} } ];
    }
    # The target size is a cap as well as a floor: trim long tables (each list is
    # ordered most-famous first; out-of-stock and special brands are always kept).
    my $want = int(($target || 0) * $SCALE + 0.5);
    my $have = keys %seen;
    if ($want && $have > $want) {
        my $ratio = $want / $have;
        %seen = ();
        for my $cat (sort keys %by_cat) {
            my @l = @{ $by_cat{$cat} };
            my $keep = int(@l * $ratio + 0.999);
            $keep = 2 if $keep < 2;
            my $j = 0;
            $by_cat{$cat} = [ grep { $j++ < $keep || /!$|\||^(Airbnb|Amazon\.com|Uber|Steam)$/ } @l ];
            $seen{ lc((_parse_name($_))[0]) }++ for @{ $by_cat{$cat} };
        }
        $have = keys %seen;
    }
    # top up to the target size with filler brands
    my $k = 0;
    while ($have < $want) {
        my $cat = $FILL_CATS[ $k % @FILL_CATS ];
        my $a = $FILL_A[ _h('fa', $cc, $k) % @FILL_A ];
        my $b = $FILL_B{$cat}[ _h('fb', $cc, $k) % @{ $FILL_B{$cat} } ];
        my $n = "$a $b";
        $k++;
        next if $seen{ lc $n }++;
        push @{ $by_cat{$cat} }, ($k % 53 == 0 ? "$n!" : $n);
        $have++;
        last if $k > 100000;
    }
    my (@brands, %by_name, %by_family, %meta);
    my $i = 0;
    for my $cat (grep { $by_cat{$_} } @CAT_ORDER) {
        for my $spec (@{ $by_cat{$cat} }) {
            my ($b, $m) = _brand($cc, $cur, $cat, $spec, $i++);
            push @brands, $b;
            $by_name{ lc $b->{brand} } = $b;
            push @{ $by_family{ lc $b->{family} } }, $b;
            $meta{ $b->{brand} } = $m;
        }
    }
    return $CATALOG{$cc} = { cc => $cc, currency => $cur, brands => \@brands, by_name => \%by_name,
        by_family => \%by_family, meta => \%meta, generic => $mk->[4] ? 1 : 0 };
}

sub find_brand {
    my ($cc, $name) = @_;
    my $cat = catalog($cc) or return;
    my $b = $cat->{by_name}{ lc($name // '') } or return;
    return ($b, $cat->{meta}{ $b->{brand} });
}

# GET /v2/brands
sub brands_doc {
    my ($cc) = @_;
    my $cat = catalog($cc);
    my @brands = $cat ? @{ $cat->{brands} } : ();
    my (@cats, %idx);
    for my $b (@brands) {
        my $key = "$b->{kind}\0$b->{category}";
        unless (defined $idx{$key}) {
            $idx{$key} = @cats;
            push @cats, { kind => $b->{kind}, category => $b->{category}, brands => [], popular_brands => [] };
        }
        push @{ $cats[ $idx{$key} ]{brands} }, $b;
    }
    for my $c (@cats) {
        my @in = grep { !${ $_->{is_out_of_stock} } } @{ $c->{brands} };
        $c->{popular_brands} = [ @in[0 .. List::Util::min(2, $#in)] ];
    }
    return { country_code => uc $cc, last_user_purchases => [], suggestions => [ map { $_->{brand} } @brands[0 .. List::Util::min(4, $#brands)] ],
        categories => \@cats, all_brands => \@brands };
}

# GET /v2/homepage
sub homepage_doc {
    my ($cc) = @_;
    my $cat = catalog($cc);
    my @brands = $cat ? grep { !${ $_->{is_out_of_stock} } } @{ $cat->{brands} } : ();
    my $pick = sub {
        my ($filter, $n, $salt) = @_;
        my @l = grep { $filter->($_) } @brands;
        @l = sort { _h($salt, $a->{brand}) <=> _h($salt, $b->{brand}) } @l;
        return [ map { { brand_id => $_->{brand_id}, brand => $_->{brand}, family => $_->{family},
            logo_url => $_->{logo_url}, logo_base_url => $_->{logo_base_url}, bg_color => $_->{bg_color},
            min => $_->{min}, max => $_->{max}, kind => $_->{kind}, category => $_->{category} } } @l[0 .. List::Util::min($n - 1, $#l)] ];
    };
    my @rows = (
        { id => 'trending', type => 'brand_row', title => 'Trending now', brands => $pick->(sub { 1 }, 12, 'trend') },
        { id => 'gaming', type => 'brand_row', title => 'Level up', brands => $pick->(sub { $_[0]{category} eq 'gaming' }, 10, 'g') },
        { id => 'esim', type => 'brand_row', title => 'Travel with an eSIM', brands => $pick->(sub { $_[0]{category} eq 'e-sim' }, 6, 'e') },
        { id => 'topup', type => 'brand_row', title => 'Top up a phone', brands => $pick->(sub { $_[0]{kind} eq 'mobile_recharge' && $_[0]{category} ne 'e-sim' }, 8, 't') },
        { id => 'food', type => 'brand_row', title => 'Food & delivery', brands => $pick->(sub { $_[0]{category} =~ /^(food|groceries)$/ }, 10, 'f') },
        { id => 'shopping', type => 'brand_row', title => 'Shop online', brands => $pick->(sub { $_[0]{category} =~ /^(e-commerce|fashion|electronics)$/ }, 10, 's') },
    );
    @rows = grep { @{ $_->{brands} } } @rows;
    return {
        country_code => uc $cc,
        hero => { title => 'Live on crypto', subtitle => 'Gift cards, eSIMs and top-ups paid with USDC, BTC and more',
            image_url => 'https://cdn.cryptorefills.com/banners/hero_1200x400.webp',
            cta => { label => 'Browse brands', href => '/brands' } },
        banners => [ map { { id => "banner-$_", image_url => "https://cdn.cryptorefills.com/banners/banner-$_.webp",
            brand => ($rows[0]{brands}[$_] // {})->{brand} } } 0 .. 2 ],
        rows => \@rows,
        generated_for => uc $cc,
    };
}

# Products of one brand, priced in $coin. Each entry of the products array.
sub products_of {
    my ($cc, $b, $m, $coin) = @_;
    my $cur = $m->{cur};
    my $usd = $CUR{$cur}[3] // 1;
    my $pm = payment_method($coin);
    my $points = sub { sprintf '%d', $_[0] * $usd * 0.4 };
    my @p;
    if (my $r = $m->{den}{range}) {
        push @p, { product_id => uuid('product', $cc, $b->{brand}, 'range'), is_dynamic => \1,
            range => { min => $r->[0] + 0.0, max => $r->[1] + 0.0, currency => $cur, step_size => 1.0,
                default => sprintf('%.1f', $r->[1]) },
            coin => $coin, payment_method => $pm, delivery_type => $m->{delivery}, points => $points->($r->[0]),
            product_type => $b->{product_type},
            face_value => { currency_code => $cur, amount => { type => 'range', min => num_str($r->[0]), max => num_str($r->[1]) } } };
    }
    for my $f (@{ $m->{den}{fixed} || [] }) {
        my ($den, $v, $loc) = @$f;
        my $ca = coin_amount($v * $usd, $coin);
        push @p, { product_id => uuid('product', $cc, $b->{brand}, $den), is_dynamic => \0,
            coin => $coin, coin_amount => $ca, original_coin_amount => $ca, payment_method => $pm,
            delivery_type => $m->{delivery}, points => $points->($v), product_type => $b->{product_type},
            denomination => $den, localized_denomination => $loc,
            face_value => { currency_code => $cur, amount => { type => 'fixed', price => num_str($v) } } };
    }
    return \@p;
}

my %TC = (
    en => 'Redeemable online only. No cash value. Not refundable once delivered.',
    es => 'Canjeable solo en línea. Sin valor en efectivo. No reembolsable una vez entregado.',
    de => 'Nur online einlösbar. Kein Barwert. Nach Lieferung nicht erstattungsfähig.',
    fr => 'Utilisable en ligne uniquement. Sans valeur monétaire. Non remboursable après livraison.',
    pt => 'Resgatável apenas online. Sem valor em dinheiro. Não reembolsável após a entrega.',
    tr => 'Yalnızca çevrimiçi kullanılabilir. Nakit değeri yoktur. Teslimattan sonra iade edilmez.',
);

# GET /v5/products/country/CC
sub products_doc {
    my ($cc, %q) = @_;
    my $cat = catalog($cc) or return [];
    my @b;
    if (defined $q{family_name} && length $q{family_name}) {
        @b = @{ $cat->{by_family}{ lc $q{family_name} } || [] };
        @b = grep { lc $_->{brand} eq lc $q{brand_name} } @b if defined $q{brand_name} && length $q{brand_name};
    } else {
        my $x = $cat->{by_name}{ lc $q{brand_name} };
        @b = $x ? ($x) : ();
    }
    my $lang = $TC{ $q{lang} // 'en' } ? $q{lang} // 'en' : 'en';
    my $coin = uc($q{coin} || 'USDC');
    $coin = 'USDC' unless $COIN{$coin};
    return [ map {
        my $m = $cat->{meta}{ $_->{brand} };
        my $prods = products_of($cc, $_, $m, $coin);
        my $first = $prods->[0];
        +{ country_code => $_->{country_code}, category => $_->{category},
           additional_categories => $_->{additional_categories}, kind => $_->{kind},
           default_denomination => ($first->{denomination} // $first->{range}{default}),
           family => $_->{family}, brand_id => $_->{brand_id}, brand => $_->{brand},
           is_out_of_stock => $_->{is_out_of_stock}, logo_url => $_->{logo_url},
           product_tc => $TC{$lang},
           rich_description => ($m->{h} % 4 == 0 ? undef : { markup => 'html', lang => $lang,
               content => "<p><strong>" . _esc($_->{brand}) . "</strong> " . ($m->{delivery} eq 'by_phone'
                   ? 'top-up, credited to the phone number you enter.' : 'code, delivered by email.') . "</p>" }),
           products => $prods }
    } @b ];
}
sub _esc { my $s = shift; $s =~ s/&/&amp;/g; $s =~ s/</&lt;/g; $s =~ s/>/&gt;/g; $s }

# Locate the product a delivery asks for. Returns ($face_value_in_local_currency, $denomination, $localized) or ().
sub match_product {
    my ($m, $den, $value) = @_;
    if (my $r = $m->{den}{range}) {
        if (defined $den && lc $den eq 'range' || !defined $den && defined $value) {
            return () unless defined $value && $value =~ /^\s*\d+(?:\.\d+)?\s*$/;
            $value += 0;
            return () if $value < $r->[0] || $value > $r->[1];
            return ($value, 'range', localize($value, $m->{cur}));
        }
        # "25 USD" / "25" on a range product: accepted as a value within the range
        if (defined $den && $den =~ /^\s*(\d+(?:\.\d+)?)(?:\s+\Q$m->{cur}\E)?\s*$/) {
            my $v = $1 + 0;
            return $v >= $r->[0] && $v <= $r->[1] ? ($v, num_str($v) . " $m->{cur}", localize($v, $m->{cur})) : ();
        }
        return ();
    }
    return () unless defined $den;
    for my $f (@{ $m->{den}{fixed} || [] }) {
        my ($d, $v, $loc) = @$f;
        return ($v, $d, $loc) if $den eq $d || $den eq $loc || ($den =~ /^\s*\d+(?:\.\d+)?\s*$/ && $den + 0 == $v);
    }
    return ();
}

1;
