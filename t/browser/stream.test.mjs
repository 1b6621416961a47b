// SPDX-License-Identifier: Apache-2.0
// Order streams that fail: the client reconnects on its own and loses no state; a stream that
// answers 503 (the stream cap) makes it poll orders/{id} instead.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { env, browserUnavailable, launch, openPage, saveScreenshot } from './lib/harness.mjs';
import * as sandbox from './lib/sandbox.mjs';
import { pickBrand, openDemo, openBrand, placeOrder, waitForState } from './lib/flow.mjs';

// Every state the sandbox emitted for the order was shown, once each, in order: the sandbox
// counts one event (`seq`) per state, starting at 1 for the state the order was created in.
async function assertNoLostState(page, states) {
  assert.equal(states.at(-1), 'Done');
  assert.equal(new Set(states).size, states.length, `no state twice: ${states.join(' → ')}`);
  const id = (await page.textContent('#order-id')).trim();
  const { order, seq } = await sandbox.order(id);
  assert.equal(order.order_state, 'Done');
  assert.equal(states.length, seq, `the page showed ${states.length} states of the sandbox's ${seq}: ${states.join(' → ')}`);
}

let browser;
let skip = null;
let brand;
before(async () => {
  env();
  skip = await browserUnavailable();
  if (!skip) browser = await launch();
  await sandbox.reset();
  ({ brand } = await pickBrand('US', 'email'));
});
beforeEach(async () => { await sandbox.reset(); });
after(async () => { if (browser) await browser.close(); await sandbox.reset().catch(() => {}); });

async function buy(page, query) {
  await openDemo(page, query);
  await openBrand(page, brand.brand);
  await placeOrder(page, { beneficiary: 'buyer@example.com' });
  await page.waitForSelector('#step-pay:not([hidden])');
}

test('stream cut mid-way: the client reconnects and still reaches Done', { timeout: 120000 }, async (t) => {
  if (skip) return t.skip(skip);
  // Slow enough that the order is still moving when the first stream is cut after one event.
  await sandbox.autoAdvance(2500);
  await sandbox.dropStreamAfter(1, 2);
  const { page, problems, apiCalls } = await openPage(browser.context, t);
  await buy(page, 'country=US');
  const states = await waitForState(page, 'Done', 90000);
  const subscribes = apiCalls.filter((c) => c.url.endsWith('/subscribe'));
  assert.ok(subscribes.length >= 2, `the stream was opened again after the cut (${subscribes.length} opens)`);
  const reconnects = Number(await page.getAttribute('#connection', 'data-reconnecting') || 0);
  assert.ok(reconnects >= 1, 'the page showed it was reconnecting');
  assert.equal(await page.getAttribute('#connection', 'data-polling'), null, 'a cut stream is reopened, not replaced by polling');
  await assertNoLostState(page, states);
  assert.deepEqual(states, ['WaitingForPayment', 'WaitingForDelivery', 'Done'], 'the sandbox\'s lifecycle, in order');
  await saveScreenshot(page, 'stream-reconnect-done.png');
  assert.deepEqual(problems, []);
});

test('stream answering 503: the client polls orders/{id} and reaches Done', { timeout: 120000 }, async (t) => {
  if (skip) return t.skip(skip);
  await sandbox.autoAdvance(1500);
  await sandbox.streamStatus(503);
  const { page, problems, apiCalls } = await openPage(browser.context, t);
  await buy(page, 'country=US&poll=500');
  await page.waitForSelector('#connection[data-transport="polling"]', { timeout: 30000 });
  const states = await waitForState(page, 'Done', 90000);
  const polls = apiCalls.filter((c) => c.method === 'GET' && /\/orders\/[A-Za-z0-9_-]+$/.test(c.url));
  assert.ok(polls.length >= 2, `orders/{id} was polled (${polls.length} times)`);
  assert.ok(apiCalls.some((c) => c.url.endsWith('/subscribe') && c.status === 503), 'the stream did answer 503');
  await assertNoLostState(page, states);
  assert.deepEqual(problems, []);
});
