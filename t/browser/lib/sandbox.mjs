// SPDX-License-Identifier: Apache-2.0
// Control calls to the sandbox upstream (t/sandbox/cr-sandbox.pl, its `/_sandbox/` API; see
// t/sandbox/README.md). Every call the browser tests make to it lives here.
import { env } from './harness.mjs';

async function call(method, route, body) {
  const { sandbox } = env();
  const res = await fetch(`${sandbox}/_sandbox/${route}`, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`sandbox ${method} /_sandbox/${route} answered ${res.status}: ${text.slice(0, 300)}`);
  try { return JSON.parse(text); } catch { return text; }
}

const STREAM = '/subscribe$';

/** Back to a clean state: no orders, faults or recorded requests; default config. */
export const reset = () => call('POST', 'reset', {});

/** New orders advance on their own (WaitingForPayment → WaitingForDelivery → Done), one step every `ms`. */
export const autoAdvance = (ms) => call('POST', 'config', { auto_advance: ms / 1000 });

/** The next `times` order streams are cut after `events` events (the upstream closes the connection, no `stop`). */
export const dropStreamAfter = (events, times = 1) =>
  call('POST', 'faults', { mode: 'stream_drop_after', regex: STREAM, events, times });

/** Order streams answer `status` (e.g. 503) instead of streaming, `times` times (default: until reset). */
export const streamStatus = (status, times) =>
  call('POST', 'faults', { mode: 'stream_status', regex: STREAM, status, ...(times ? { times } : {}) });

/** The sandbox's view of an order: {order, seq (events emitted: one per state), subscribers}. */
export const order = (orderId) => call('GET', `orders/${encodeURIComponent(orderId)}`);

/** Move an order one state on (WaitingForPayment → WaitingForDelivery → Done), streams notified. */
export const advance = (orderId) => call('POST', `orders/${encodeURIComponent(orderId)}/advance`, {});

/** Put an order in `order_state` (a terminal one ends its streams), `fields` merged into it. */
export const setState = (orderId, orderState, fields) =>
  call('POST', `orders/${encodeURIComponent(orderId)}/state`, { order_state: orderState, notify: true, ...(fields ? { fields } : {}) });
