// SPDX-License-Identifier: Apache-2.0
// Unit tests of htdocs/cryptorefills.js in Node, with a scripted EventSource and fetch:
// the parts of watchOrder a live stream can't provoke on cue (timings, bad payloads).
// Needs neither the browser nor the servers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createClient, logoUrl, CryptorefillsError, isOrder, paymentRails, validationBody, orderBody,
  newIdempotencyKey, LOGO_VARIANTS,
} from '../../htdocs/cryptorefills.js';

const ORDER = (state, extra = {}) => ({ order_id: 'o1', order_state: state, wallet_address: 'addr', coin: 'USDC', coin_amount: '1', ...extra });

class FakeES {
  static all = [];
  constructor(url) { this.url = url; this.closed = false; this.listeners = {}; this.at = Date.now(); FakeES.all.push(this); }
  addEventListener(t, f) { (this.listeners[t] ||= []).push(f); }
  close() { this.closed = true; }
  open() { this.onopen && this.onopen({}); }
  msg(data) { this.onmessage && this.onmessage({ data: typeof data === 'string' ? data : JSON.stringify(data) }); }
  stop(data = {}) { for (const f of this.listeners.stop || []) f({ data: JSON.stringify(data) }); }
  fail() { this.onerror && this.onerror({}); }
}

function fakeFetch(routes) {
  const calls = [];
  const f = async (url, init = {}) => {
    calls.push({ url, init });
    for (const [re, handler] of routes) {
      if (re.test(url)) {
        const r = typeof handler === 'function' ? handler(url, init) : handler;
        return new Response(r.body === undefined ? '' : JSON.stringify(r.body), { status: r.status || 200, headers: r.headers || { 'Content-Type': 'application/json' } });
      }
    }
    return new Response('{"status":404,"detail":"NOT_FOUND"}', { status: 404 });
  };
  f.calls = calls;
  return f;
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
async function until(cond, ms = 3000) {
  const end = Date.now() + ms;
  while (!cond()) { if (Date.now() > end) throw new Error('timed out'); await tick(2); }
}

test('logoUrl gives every official variant and falls back to logo_url', () => {
  const b = { brand: 'eSIM', logo_url: 'https://cdn.cryptorefills.com/logos_v2/esim.webp', logo_base_url: 'https://cdn.cryptorefills.com/logos_v2/esim' };
  assert.equal(logoUrl(b, '_500x318.webp'), 'https://cdn.cryptorefills.com/logos_v2/esim_500x318.webp');
  assert.equal(logoUrl(b), 'https://cdn.cryptorefills.com/logos_v2/esim_300x190.webp');
  assert.equal(logoUrl(b.logo_base_url, '.jpg'), 'https://cdn.cryptorefills.com/logos_v2/esim.jpg');
  assert.deepEqual(LOGO_VARIANTS, ['.webp', '_500x318.webp', '_300x190.webp', '.jpg', '_500x318.jpg', '_300x190.jpg']);
  assert.equal(logoUrl({ logo_url: 'x.webp' }, '.jpg'), 'x.webp');
  assert.throws(() => logoUrl(b, '.png'), RangeError);
});

test('errors are typed with the contract\'s status, detail, problems', async () => {
  const fetch = fakeFetch([
    [/brands\?country_code=ZZ/, { status: 400, body: { status: 400, detail: 'UNSUPPORTED_COUNTRY', moreDetails: { country_code: 'ZZ' } } }],
    [/orders\/validations/, { body: { coin: 'USDC', problems: [{ problem: 'INVALID_BENEFICIARY_ACCOUNT', moreDetails: { field: 'deliveries[0].beneficiary_account' } }] } }],
    [/\/orders$/, { status: 422, body: { status: 422, detail: 'OUT_OF_STOCK', problems: [{ problem: 'OUT_OF_STOCK' }, { problem: 'NOT_ACTIVE' }] } }],
    [/subscribe/, { status: 502, body: { status: 502, detail: 'UPSTREAM_UNAVAILABLE', error: 'Failed to connect to upstream stream' } }],
    [/payment_vias/, { status: 504, body: { status: 504, detail: 'UPSTREAM_TIMEOUT' }, headers: { 'Retry-After': '7' } }],
  ]);
  const api = createClient({ base: '/api/', fetch, EventSource: null });
  await assert.rejects(api.brands('ZZ'), (e) => e instanceof CryptorefillsError && e.status === 400 && e.detail === 'UNSUPPORTED_COUNTRY' && e.moreDetails.country_code === 'ZZ' && !e.ambiguous);
  assert.equal(fetch.calls[0].url, '/api/brands?country_code=ZZ');
  await assert.rejects(api.validateOrder({}), (e) => e.status === 200 && e.detail === 'INVALID_BENEFICIARY_ACCOUNT' && e.problems.length === 1);
  await assert.rejects(api.createOrder({}, { idempotencyKey: 'k-1' }), (e) => e.status === 422 && e.problems.length === 2 && e.idempotencyKey === 'k-1');
  assert.equal(fetch.calls.at(-1).init.headers['Idempotency-Key'], 'k-1');
  await assert.rejects(api.paymentVias(), (e) => e.status === 504 && e.ambiguous && e.retryAfter === 7);
  const down = createClient({ fetch: async () => { throw new TypeError('Failed to fetch'); } });
  await assert.rejects(down.countries(), (e) => e.status === 0 && e.detail === 'NETWORK_ERROR' && e.ambiguous);
});

test('createOrder sends a fresh UUID key per call unless one is given', async () => {
  const fetch = fakeFetch([[/\/orders$/, { body: ORDER('WaitingForPayment') }]]);
  const api = createClient({ fetch });
  await api.createOrder({});
  await api.createOrder({});
  const [a, b] = fetch.calls.map((c) => c.init.headers['Idempotency-Key']);
  assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.notEqual(a, b);
  assert.match(newIdempotencyKey(), /^[0-9a-f-]{36}$/);
});

test('order payloads are checked: object, order_id, known order_state', () => {
  assert.ok(isOrder(ORDER('Done')));
  for (const bad of [null, [], 'x', {}, { order_id: 'o1' }, { order_id: 'o1', order_state: 'Bogus' }, { order_id: '', order_state: 'Done' }, { order_id: 5, order_state: 'Done' }]) {
    assert.equal(isOrder(bad), false, JSON.stringify(bad));
  }
});

test('watchOrder: bad messages skipped, duplicates dropped, stops on a terminal state', async () => {
  FakeES.all = [];
  const api = createClient({ fetch: fakeFetch([]), EventSource: FakeES });
  const seen = [];
  const statuses = [];
  api.watchOrder('o1', (o) => seen.push(o.order_state), { onStatus: (s) => statuses.push(s.transport) });
  const es = FakeES.all[0];
  assert.equal(es.url, '/api/orders/o1/subscribe');
  es.open();
  es.msg('not json');
  es.msg({ order_id: 'o1', order_state: 'Nope' });
  es.msg({ order_id: 'other', order_state: 'Done' });
  es.msg(ORDER('WaitingForPayment'));
  es.msg(ORDER('WaitingForPayment'));
  es.msg(ORDER('WaitingForDelivery'));
  es.msg(ORDER('Done'));
  assert.deepEqual(seen, ['WaitingForPayment', 'WaitingForDelivery', 'Done']);
  assert.ok(es.closed);
  assert.equal(statuses.at(-1), 'done');
});

test('watchOrder: `stop` ends it for good and fetches the final order once', async () => {
  FakeES.all = [];
  const fetch = fakeFetch([[/\/orders\/o1$/, { body: ORDER('Done') }]]);
  const api = createClient({ fetch, EventSource: FakeES });
  const seen = [];
  const statuses = [];
  api.watchOrder('o1', (o) => seen.push(o.order_state), { onStatus: (s) => statuses.push(s.transport), initialDelay: 5 });
  FakeES.all[0].open();
  FakeES.all[0].msg(ORDER('WaitingForDelivery'));
  FakeES.all[0].stop();
  await until(() => statuses.includes('done') || statuses.includes('stopped'));
  await tick(30);
  assert.equal(FakeES.all.length, 1, 'no reconnect after stop');
  assert.deepEqual(seen, ['WaitingForDelivery', 'Done']);
});

test('watchOrder: reconnects with exponential backoff plus jitter, reset after a good message', async () => {
  FakeES.all = [];
  const fetch = fakeFetch([[/subscribe/, { status: 502, body: { status: 502, detail: 'UPSTREAM_UNAVAILABLE' } }]]);
  const api = createClient({ fetch, EventSource: FakeES });
  const delays = [];
  const stop = api.watchOrder('o1', () => {}, {
    initialDelay: 10, maxDelay: 40, jitter: 0.2, maxStreamFailures: 100,
    onStatus: (s) => { if (s.delay !== undefined) delays.push(s.delay); },
  });
  for (let i = 0; i < 5; i++) {
    await until(() => FakeES.all.length === i + 1);
    FakeES.all[i].fail();                      // fails before opening: probed (502), retried
  }
  await until(() => delays.length === 5);
  const bases = [10, 20, 40, 40, 40];
  delays.forEach((d, i) => assert.ok(d >= bases[i] && d <= bases[i] * 1.2 + 1, `delay ${i}: ${d} for base ${bases[i]}`));
  // A good message resets the delay to the initial one.
  await until(() => FakeES.all.length === 6);
  const es = FakeES.all[5];
  es.open();
  es.msg(ORDER('WaitingForPayment'));
  es.fail();
  await until(() => delays.length === 6);
  assert.ok(delays[5] >= 10 && delays[5] <= 12.1, `after a good message: ${delays[5]}`);
  stop();
  await tick(60);
  assert.equal(FakeES.all.length, 6, 'unsubscribe stops reconnecting');
});

test('watchOrder: a 503 from the stream switches to polling until terminal', async () => {
  FakeES.all = [];
  let n = 0;
  const fetch = fakeFetch([
    [/subscribe/, { status: 503, body: { status: 503, detail: 'TOO_MANY_STREAMS' }, headers: { 'Content-Type': 'application/json', 'Retry-After': '5' } }],
    [/\/orders\/o1$/, () => ({ body: ORDER(['WaitingForPayment', 'WaitingForPayment', 'WaitingForDelivery', 'Done'][Math.min(n++, 3)]) })],
  ]);
  const api = createClient({ fetch, EventSource: FakeES });
  const seen = [];
  const statuses = [];
  api.watchOrder('o1', (o) => seen.push(o.order_state), { pollInterval: 5, onStatus: (s) => statuses.push(s.transport) });
  FakeES.all[0].fail();
  await until(() => statuses.at(-1) === 'done');
  assert.ok(statuses.includes('polling'));
  assert.equal(FakeES.all.length, 1, 'no stream after the 503');
  assert.deepEqual(seen, ['WaitingForPayment', 'WaitingForDelivery', 'Done']);
});

test('watchOrder: repeated failures, or no EventSource at all, fall back to polling', async () => {
  FakeES.all = [];
  const fetch = fakeFetch([
    [/subscribe/, { status: 502, body: { status: 502, detail: 'UPSTREAM_UNAVAILABLE' } }],
    [/\/orders\/o1$/, { body: ORDER('Done') }],
  ]);
  const api = createClient({ fetch, EventSource: FakeES });
  const statuses = [];
  api.watchOrder('o1', () => {}, { initialDelay: 1, maxStreamFailures: 3, pollInterval: 5, onStatus: (s) => statuses.push(s) });
  for (let i = 0; i < 3; i++) { await until(() => FakeES.all.length === i + 1); FakeES.all[i].fail(); }
  await until(() => statuses.at(-1).transport === 'done');
  assert.equal(statuses.find((s) => s.transport === 'polling').reason, 'stream-failing');

  const noES = createClient({ fetch, EventSource: null });
  const got = [];
  const st2 = [];
  noES.watchOrder('o1', (o) => got.push(o.order_state), { onStatus: (s) => st2.push(s) });
  await until(() => got.length === 1);
  assert.equal(st2[0].transport, 'polling');
  assert.equal(st2[0].reason, 'no-eventsource');
});

test('payment rails skip unavailable vias and suspended coins or networks', () => {
  const rails = paymentRails([
    { name: 'USER_WALLET', available: true, currencies: [
      { name: 'USDC', is_suspended: false, networks: [{ name: 'Solana', is_suspended: false }, { name: 'Base', is_suspended: true }] },
      { name: 'BTC', is_suspended: true, networks: [{ name: 'Lightning' }] }] },
    { name: 'OTHER', available: false, currencies: [{ name: 'ETH', networks: [{ name: 'Mainnet' }] }] },
  ]);
  assert.deepEqual(rails.map((r) => `${r.via}/${r.coin}/${r.network}`), ['USER_WALLET/USDC/Solana']);
});

test('order bodies follow partner-api.md for validations and create', () => {
  const brand = { brand: 'Airbnb', family: 'Airbnb', kind: 'giftcard' };
  const product = { denomination: '100 USD', localized_denomination: '$100', face_value: { currency_code: 'USD', amount: { type: 'fixed', price: '100' } } };
  const input = { brand, product, countryCode: 'US', beneficiary: 'a@example.com', email: 'a@example.com', coin: 'USDC', network: 'Solana' };
  assert.deepEqual(validationBody(input), {
    payment: { type: 'via', payment_via: 'USER_WALLET', coin: 'USDC', network: 'Solana' },
    deliveries: [{ beneficiary_account: 'a@example.com', brand_name: 'Airbnb', country_code: 'US', denomination: '100 USD', localized_denomination: '$100' }],
    lang: 'en',
  });
  assert.deepEqual(orderBody({ ...input, acquisition: { utm_source: 'x' } }), {
    deliveries: [{ kind: 'giftcard', quantity: 1, deliverable: { brand_name: 'Airbnb', country_code: 'US', denomination: '100 USD', beneficiary_account: 'a@example.com' } }],
    payment: { type: 'via', payment_via: 'USER_WALLET', coin: 'USDC', network: 'Solana' },
    user: { email: 'a@example.com', has_accepted_newsletter: false },
    lang: 'en', acquisition: { utm_source: 'x' },
  });
  const range = { is_dynamic: true, range: { min: 5, max: 500 }, face_value: { currency_code: 'USD', amount: { type: 'range', min: 5, max: 500 } } };
  const v = validationBody({ ...input, product: range, amount: '42', beneficiary: '+14155551234', email: 'b@example.com' });
  assert.equal(v.deliveries[0].denomination, 'range');
  assert.equal(v.deliveries[0].product_value, '42');
  assert.equal(v.email, 'b@example.com');
});
