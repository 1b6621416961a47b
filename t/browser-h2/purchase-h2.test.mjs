// SPDX-License-Identifier: Apache-2.0
// The demo's whole purchase over HTTPS + HTTP/2 in Chromium, asserted on the network rather
// than on the page: the document and the order stream were fetched over h2, the page's
// EventSource received the order's states up to Done, and the stream (not polling) carried
// them.  UI steps come from lib/flow.mjs (kept in step with the demo); the checks here only
// use the page's EventSource and Resource Timing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { env, browserUnavailable, launch, openPage, API_PATH } from '../browser/lib/harness.mjs';
import * as sandbox from '../browser/lib/sandbox.mjs';
import { pickBrand, openDemo, chooseCountry, openBrand, placeOrder } from '../browser/lib/flow.mjs';

let browser;
let skip = null;
before(async () => {
  const { base } = env();
  assert.match(base, /^https:/, 'CR_BASE_URL is the TLS listener');
  skip = await browserUnavailable();
  if (!skip) browser = await launch({ ignoreHTTPSErrors: true });
  await sandbox.reset();
  await sandbox.autoAdvance(1500);
});
after(async () => { if (browser) await browser.close(); await sandbox.reset().catch(() => {}); });

// Recorded in the page before any of its scripts run: every EventSource it opens and
// every message event (data parsed when it is JSON) that reached it.
function recordEventSources() {
  const Native = window.EventSource;
  window.__crStreams = [];
  window.EventSource = function EventSource(url, init) {
    const es = new Native(url, init);
    const rec = { url: String(url), opened: 0, messages: [], events: [] };
    window.__crStreams.push(rec);
    es.addEventListener('open', () => { rec.opened += 1; });
    es.addEventListener('message', (m) => {
      let state = null;
      try { state = JSON.parse(m.data).order_state || null; } catch { /* not JSON */ }
      rec.messages.push({ state, t: performance.now() });
    });
    es.addEventListener('stop', () => rec.events.push('stop'));
    return es;
  };
  window.EventSource.prototype = Native.prototype;
  Object.assign(window.EventSource, { CONNECTING: 0, OPEN: 1, CLOSED: 2 });
}

test('purchase to Done over HTTPS + HTTP/2, followed through the live stream', { timeout: 120000 }, async (t) => {
  if (skip) return t.skip(skip);
  await browser.context.addInitScript(recordEventSources);
  const { page, problems, apiCalls } = await openPage(browser.context, t);
  await openDemo(page);
  const nav = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  assert.equal(nav, 'h2', 'the demo page came over HTTP/2');

  const { brand } = await pickBrand('US', 'email');
  await chooseCountry(page, 'US');
  await openBrand(page, brand.brand);
  await placeOrder(page, { beneficiary: 'buyer@example.com' });

  // The page's own EventSource sees Done (the sandbox advances every 1.5 s).
  await page.waitForFunction(
    () => (window.__crStreams || []).some((s) => s.messages.some((m) => m.state === 'Done')),
    null, { timeout: 90000 });
  const streams = await page.evaluate(() => window.__crStreams);
  const sub = streams.find((s) => s.url.includes(`${API_PATH}/orders/`) && s.url.endsWith('/subscribe'));
  assert.ok(sub, 'the page opened an EventSource on orders/{id}/subscribe');
  assert.ok(sub.opened >= 1, 'the stream opened');
  const states = sub.messages.map((m) => m.state).filter(Boolean);
  assert.ok(states.length >= 2, `several states arrived on the stream: ${states.join(' → ')}`);
  assert.equal(states.at(-1), 'Done');
  assert.ok(states.indexOf('Done') > 0, 'an earlier state came first: the order was followed live');

  // The stream request itself was HTTP/2 (its Resource Timing entry appears once it ended,
  // which the upstream's stop makes happen right after Done).
  await page.waitForFunction(() => performance.getEntriesByType('resource')
    .some((e) => e.name.endsWith('/subscribe')), null, { timeout: 15000 });
  const protos = await page.evaluate(() => performance.getEntriesByType('resource')
    .filter((e) => e.name.endsWith('/subscribe')).map((e) => e.nextHopProtocol));
  assert.ok(protos.length >= 1 && protos.every((p) => p === 'h2'), `subscribe over h2 (${protos.join(',')})`);

  // Not polling: after the order was created, the order itself was read at most once.
  const polls = apiCalls.filter((c) => c.method === 'GET' && /\/orders\/[^/]+$/.test(new URL(c.url).pathname));
  assert.ok(polls.length <= 1, `GET orders/{id} was not polled (${polls.length} calls)`);
  assert.deepEqual(problems, [], 'no script errors on the page');
});
