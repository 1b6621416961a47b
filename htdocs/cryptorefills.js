// SPDX-License-Identifier: Apache-2.0
// cryptorefills.js — dependency-free browser client for mod_cryptorefills.
//
// Talks to the module's same-origin routes (default base `/api`, see CONTRACT.md),
// returns the upstream JSON, and turns every failure into one typed error,
// CryptorefillsError, carrying the contract's `status` / `detail` / `problems`.
// `watchOrder` follows an order over Server-Sent Events with its own reconnect
// and a polling fallback.  Documented in docs/CLIENT.md.  ES2020, no build step.

export const VERSION = '0.1.0';

/** Every order_state the upstream is known to send (shapes.md). */
export const ORDER_STATES = Object.freeze([
  'Created', 'WaitingForPayment', 'PaymentStarted', 'PartialPaymentStarted',
  'PaymentReceived', 'WaitingForDelivery', 'WaitingForManualAction', 'Done',
  'Expired', 'Canceled', 'Cancelled', 'PaymentFailed', 'PaymentSetupFailed', 'Refunded',
]);

/** States after which an order never changes again. */
export const TERMINAL_STATES = Object.freeze([
  'Done', 'Expired', 'Canceled', 'Cancelled', 'PaymentFailed', 'PaymentSetupFailed', 'Refunded',
]);

/** Suffixes the CDN serves for a brand's `logo_base_url` (partner-api.md "Logo variants"). */
export const LOGO_VARIANTS = Object.freeze([
  '.webp', '_500x318.webp', '_300x190.webp', '.jpg', '_500x318.jpg', '_300x190.jpg',
]);

export function isTerminalState(state) {
  return TERMINAL_STATES.includes(state);
}

/** True for a payload that looks like an order: an object with `order_id` and a known `order_state`. */
export function isOrder(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value) &&
    typeof value.order_id === 'string' && value.order_id.length > 0 &&
    ORDER_STATES.includes(value.order_state);
}

/**
 * The error every client call rejects with.
 *   status      HTTP status (0 when the request never got an answer)
 *   detail      the contract's code (`INVALID_REQUEST`, `UPSTREAM_TIMEOUT`, the first problem, …)
 *   problems    `[{problem, moreDetails}]` for order validation failures, else []
 *   moreDetails the `moreDetails` of a `{status, detail, moreDetails}` body
 *   body        the parsed body, when there was one
 *   ambiguous   true when a POST may have reached the upstream anyway (network error,
 *               timeout, 429, 5xx): retry the same attempt with the same Idempotency-Key
 */
export class CryptorefillsError extends Error {
  constructor({ status = 0, detail = 'ERROR', problems = [], moreDetails, body, message, retryAfter } = {}) {
    super(message || (problems.length ? `${detail}: ${problems.map((p) => p.problem).join(', ')}` : `${detail} (HTTP ${status})`));
    this.name = 'CryptorefillsError';
    this.status = status;
    this.detail = detail;
    this.problems = problems;
    this.moreDetails = moreDetails;
    this.body = body;
    this.retryAfter = retryAfter;
    this.ambiguous = status === 0 || status === 429 || status >= 500;
  }
}

/** A fresh RFC 4122 v4 UUID, for `Idempotency-Key`. */
export function newIdempotencyKey() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const b = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * URL of a logo variant of a brand (a catalog Brand, or a bare `logo_base_url` string).
 * Falls back to the brand's `logo_url` when it has no `logo_base_url`, and to '' when it has neither.
 */
export function logoUrl(brand, variant = '_300x190.webp') {
  if (!LOGO_VARIANTS.includes(variant)) throw new RangeError(`unknown logo variant ${variant}`);
  const base = typeof brand === 'string' ? brand : brand && brand.logo_base_url;
  if (base) return base + variant;
  return (brand && typeof brand === 'object' && brand.logo_url) || '';
}

/** Rails a buyer can pay with: [{via, coin, network, threshold, ...}] (shapes.md: usable rails). */
export function paymentRails(paymentVias) {
  const rails = [];
  for (const via of Array.isArray(paymentVias) ? paymentVias : []) {
    if (!via || via.available === false) continue;
    for (const cur of via.currencies || []) {
      if (!cur || cur.is_suspended === true) continue;
      for (const net of cur.networks || []) {
        if (!net || net.is_suspended === true) continue;
        rails.push({ via: via.name, coin: cur.name, network: net.name, threshold: net.threshold ?? cur.threshold, currency: cur, networkInfo: net });
      }
    }
  }
  return rails;
}

function problemsOf(body) {
  return body && Array.isArray(body.problems) ? body.problems.filter((p) => p && typeof p.problem === 'string') : [];
}

function retryAfterOf(res) {
  const v = res.headers.get('Retry-After');
  if (!v) return undefined;
  const s = Number(v);
  if (Number.isFinite(s)) return s;
  const t = Date.parse(v);
  return Number.isFinite(t) ? Math.max(0, Math.round((t - Date.now()) / 1000)) : undefined;
}

function errorFromResponse(res, body) {
  const problems = problemsOf(body);
  let detail = `HTTP_${res.status}`;
  if (body && typeof body === 'object') {
    if (typeof body.detail === 'string') detail = body.detail;
    else if (problems.length) detail = problems[0].problem;
    else if (typeof body.error === 'string') detail = body.error;
    else if (typeof body.message === 'string') detail = body.message;
  }
  return new CryptorefillsError({
    status: body && typeof body.status === 'number' ? body.status : res.status,
    detail, problems, moreDetails: body && body.moreDetails, body, retryAfter: retryAfterOf(res),
  });
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

const DEFAULT_WATCH = {
  initialDelay: 1000, maxDelay: 30000, jitter: 0.2, maxStreamFailures: 4,
  pollInterval: 5000, maxPollInterval: 30000,
};

/**
 * Create a client.
 *   base         the module's <Location>, default '/api' (relative or absolute URL)
 *   lang         default `lang` for products/orders (default 'en')
 *   fetch        fetch implementation (default globalThis.fetch)
 *   EventSource  EventSource implementation (default globalThis.EventSource; null forces polling)
 *   timeout      ms before a non-stream request is aborted (default 30000)
 */
export function createClient(options = {}) {
  const base = String(options.base ?? '/api').replace(/\/+$/, '');
  const lang = options.lang || 'en';
  const fetchImpl = options.fetch || globalThis.fetch.bind(globalThis);
  const ES = 'EventSource' in options ? options.EventSource : globalThis.EventSource;
  const timeout = options.timeout ?? 30000;

  const url = (path) => `${base}/${path}`;

  async function request(method, path, { body, headers = {}, signal } = {}) {
    const ctl = new AbortController();
    const timer = timeout > 0 ? setTimeout(() => ctl.abort(), timeout) : null;
    const onAbort = () => ctl.abort();
    if (signal) { if (signal.aborted) ctl.abort(); else signal.addEventListener('abort', onAbort, { once: true }); }
    const init = { method, headers: { Accept: 'application/json', ...headers }, signal: ctl.signal, credentials: 'same-origin' };
    if (body !== undefined) { init.body = JSON.stringify(body); init.headers['Content-Type'] = 'application/json'; }
    let res;
    try {
      res = await fetchImpl(url(path), init);
    } catch (e) {
      const aborted = signal && signal.aborted;
      throw new CryptorefillsError({ status: 0, detail: aborted ? 'ABORTED' : (ctl.signal.aborted ? 'CLIENT_TIMEOUT' : 'NETWORK_ERROR'), message: String(e && e.message || e) });
    } finally {
      if (timer) clearTimeout(timer);
      if (signal) signal.removeEventListener('abort', onAbort);
    }
    const text = await res.text().catch(() => '');
    let data;
    if (text) { try { data = JSON.parse(text); } catch { data = undefined; } }
    if (!res.ok) throw errorFromResponse(res, data);
    if (data === undefined && res.status !== 204) {
      throw new CryptorefillsError({ status: res.status, detail: 'INVALID_RESPONSE', message: 'response is not JSON' });
    }
    return data;
  }

  const client = {
    base, lang,
    /** GET countries → {countries:[{isoCode,name}]} */
    countries: (o = {}) => request('GET', 'countries', o),
    /** GET payment_vias → [PaymentVia] */
    paymentVias: (o = {}) => request('GET', 'payment_vias', o),
    /** GET brands → catalog; without a country the module picks the visitor's (catalog.country_code). */
    brands: (countryCode, o = {}) => request('GET', `brands${query({ country_code: countryCode })}`, o),
    /** GET homepage → opaque merchandising object */
    homepage: (countryCode, o = {}) => request('GET', `homepage${query({ country_code: countryCode })}`, o),
    /** GET products/country/CC → [family with products] */
    products: (countryCode, { familyName, brandName, coin, lang: l } = {}, o = {}) =>
      request('GET', `products/country/${encodeURIComponent(countryCode)}${query({ family_name: familyName, brand_name: brandName, coin, lang: l || lang })}`, o),
    /** GET products/price → quote {coin_amount, coin, …} */
    price: ({ brandName, countryCode, faceValue, coin } = {}, o = {}) =>
      request('GET', `products/price${query({ brand_name: brandName, country_code: countryCode, face_value: faceValue, coin })}`, o),
    /**
     * POST orders/validations.  Resolves with the validation (coin_amount, deliveries …) when there
     * are no problems; rejects with CryptorefillsError whose `problems` lists them (the module and
     * upstream answer those with HTTP 200, this turns them into the one error path).
     */
    async validateOrder(body, o = {}) {
      const data = await request('POST', 'orders/validations', { ...o, body });
      const problems = problemsOf(data);
      if (problems.length) {
        throw new CryptorefillsError({ status: 200, detail: problems[0].problem, problems, body: data });
      }
      return data;
    },
    /**
     * POST orders with an Idempotency-Key.  Pass the same `idempotencyKey` when retrying the same
     * checkout attempt (after an `ambiguous` error); a fresh one is made when none is given.
     */
    async createOrder(body, { idempotencyKey, ...o } = {}) {
      const key = idempotencyKey || newIdempotencyKey();
      try {
        return await request('POST', 'orders', { ...o, body, headers: { 'Idempotency-Key': key } });
      } catch (e) {
        e.idempotencyKey = key;
        throw e;
      }
    },
    /** GET orders/{id} → order */
    getOrder: (orderId, o = {}) => request('GET', `orders/${encodeURIComponent(orderId)}`, o),
    /** URL of the order's SSE stream. */
    subscribeUrl: (orderId) => url(`orders/${encodeURIComponent(orderId)}/subscribe`),
    logoUrl,
    watchOrder: (orderId, onUpdate, opts) => watchOrder(client, orderId, onUpdate, { EventSource: ES, fetch: fetchImpl, ...opts }),
  };
  return client;
}

/**
 * Follow an order until it is terminal.  Returns an unsubscribe function.
 *
 * onUpdate(order) is called once per distinct order payload.  Options:
 *   onStatus({transport, state, attempt, delay, reason})  transport changes, for UIs and tests:
 *       'connecting' | 'open' | 'reconnecting' | 'polling' | 'done' | 'stopped' | 'failed'
 *   onError(err)           non-fatal and fatal errors (fatal ones end the watch)
 *   initialDelay, maxDelay, jitter   backoff: initialDelay doubling to maxDelay, plus up to
 *                          jitter×delay at random (1000, 30000, 0.2)
 *   maxStreamFailures      consecutive failed stream attempts before polling (4)
 *   pollInterval           ms between polls (5000); poll errors back off up to maxPollInterval
 *   signal                 an AbortSignal that unsubscribes
 */
export function watchOrder(client, orderId, onUpdate, options = {}) {
  const opt = { ...DEFAULT_WATCH, ...options };
  const ES = 'EventSource' in options ? options.EventSource : globalThis.EventSource;
  const fetchImpl = options.fetch || globalThis.fetch.bind(globalThis);
  const status = (s) => { try { opt.onStatus && opt.onStatus(s); } catch (e) { setTimeout(() => { throw e; }); } };
  const report = (e) => { try { opt.onError && opt.onError(e); } catch (x) { setTimeout(() => { throw x; }); } };

  let ended = false;
  let es = null;
  let timer = null;
  let failures = 0;          // consecutive stream attempts without a good message
  let pollFailures = 0;
  let lastJson = '';
  let lastState = null;
  let mode = 'stream';
  let probe = null;

  const backoff = (n, min = opt.initialDelay, max = opt.maxDelay) => {
    const d = Math.min(max, min * 2 ** Math.max(0, n - 1));
    return Math.round(d + Math.random() * d * opt.jitter);
  };

  function finish(transport, extra = {}) {
    if (ended) return;
    ended = true;
    clearTimeout(timer);
    if (es) { es.close(); es = null; }
    if (probe) probe.abort();
    status({ transport, state: lastState, ...extra });
  }

  // Deliver a payload; true when it was a valid order.  Ends the watch on a terminal state.
  function deliver(order) {
    if (!isOrder(order) || order.order_id !== orderId) return false;
    const json = JSON.stringify(order);
    if (json !== lastJson) {
      lastJson = json;
      lastState = order.order_state;
      try { onUpdate(order); } catch (e) { setTimeout(() => { throw e; }); }
    }
    if (isTerminalState(order.order_state)) finish('done');
    return true;
  }

  function startPolling(reason) {
    if (ended) return;
    if (es) { es.close(); es = null; }
    mode = 'poll';
    status({ transport: 'polling', state: lastState, reason });
    poll();
  }

  async function poll() {
    if (ended) return;
    try {
      const order = await client.getOrder(orderId);
      if (ended) return;
      pollFailures = 0;
      if (!deliver(order)) report(new CryptorefillsError({ status: 200, detail: 'INVALID_ORDER', body: order }));
      if (!ended) timer = setTimeout(poll, opt.pollInterval);
    } catch (e) {
      if (ended) return;
      report(e);
      if (e.status === 400 || e.status === 404) { finish('failed', { reason: e.detail, error: e }); return; }
      pollFailures++;
      const wait = e.retryAfter ? e.retryAfter * 1000 : backoff(pollFailures, opt.pollInterval, opt.maxPollInterval);
      timer = setTimeout(poll, wait);
    }
  }

  // Find out why a stream failed: EventSource hides the status, so ask once with fetch and drop the body.
  async function probeStatus() {
    probe = new AbortController();
    try {
      const res = await fetchImpl(client.subscribeUrl(orderId), { headers: { Accept: 'text/event-stream' }, signal: probe.signal, cache: 'no-store' });
      const st = res.status;
      let body;
      if (!res.ok) { try { body = await res.json(); } catch { body = undefined; } }
      probe.abort();
      return { status: st, body, retryAfter: retryAfterOf(res) };
    } catch {
      return { status: 0 };
    } finally {
      probe = null;
    }
  }

  function connect() {
    if (ended) return;
    status({ transport: failures ? 'reconnecting' : 'connecting', state: lastState, attempt: failures + 1 });
    let opened = false;
    let good = false;
    const source = new ES(client.subscribeUrl(orderId));
    es = source;
    source.onopen = () => {
      if (es !== source) return;
      opened = true;
      status({ transport: 'open', state: lastState });
    };
    source.onmessage = (ev) => {
      if (es !== source) return;
      let data;
      try { data = JSON.parse(ev.data); } catch { return; }       // bad payload: skip
      if (deliver(data)) { good = true; failures = 0; }           // good message resets the backoff
    };
    source.addEventListener('stop', (ev) => {
      if (es !== source) return;
      source.close(); es = null;
      let data;
      try { data = JSON.parse(ev.data); } catch { data = undefined; }
      if (data && typeof data === 'object' && data.error) report(new CryptorefillsError({ status: 200, detail: String(data.error).toUpperCase().replace(/\W+/g, '_'), body: data }));
      if (ended) return;
      // The stream is over for good.  Make sure the last state was not lost between events.
      client.getOrder(orderId).then((o) => { if (!ended) deliver(o); }, report)
        .finally(() => finish('stopped', { reason: 'stop' }));
    });
    source.onerror = async () => {
      if (es !== source || ended) return;
      source.close(); es = null;          // no native retry: this client owns reconnection
      if (!good) failures++;
      if (!opened) {
        const p = await probeStatus();
        if (ended) return;
        if (p.status === 503) { startPolling('stream-unavailable'); return; }
        if (p.status === 400 || p.status === 404) {
          const e = new CryptorefillsError({ status: p.status, detail: (p.body && p.body.detail) || `HTTP_${p.status}`, body: p.body });
          report(e); finish('failed', { reason: e.detail, error: e }); return;
        }
        if (p.status && p.status !== 200) report(new CryptorefillsError({ status: p.status, detail: (p.body && p.body.detail) || `HTTP_${p.status}`, body: p.body, message: p.body && p.body.error }));
      }
      if (failures >= opt.maxStreamFailures) { startPolling('stream-failing'); return; }
      const delay = backoff(Math.max(1, failures));
      status({ transport: 'reconnecting', state: lastState, attempt: failures + 1, delay });
      timer = setTimeout(connect, delay);
    };
  }

  if (typeof ES !== 'function') startPolling('no-eventsource');
  else connect();
  if (opt.signal) {
    if (opt.signal.aborted) finish('stopped', { reason: 'aborted' });
    else opt.signal.addEventListener('abort', () => finish('stopped', { reason: 'aborted' }), { once: true });
  }
  return function unsubscribe() { finish('stopped', { reason: 'unsubscribed' }); };
}

/** Helpers to build order bodies from catalog objects (partner-api.md, shapes.md). */
export function beneficiaryKind(brand, product) {
  if (product && product.delivery_type === 'by_phone') return 'phone';
  if (product && product.delivery_type === 'by_email') return 'email';
  if (brand && brand.kind === 'mobile_recharge' && brand.category !== 'e-sim') return 'phone';
  return 'email';
}

function faceAmount(product) {
  const a = product && product.face_value && product.face_value.amount;
  return a && a.type === 'fixed' ? a.price : undefined;
}

/**
 * Body for POST orders/validations.
 *   {brand, product, countryCode, beneficiary, email, coin, network, amount (range products), lang}
 */
export function validationBody({ brand, product, countryCode, beneficiary, email, coin, network, amount, lang = 'en', paymentVia = 'USER_WALLET' }) {
  const range = product && (product.is_dynamic || (product.face_value && product.face_value.amount && product.face_value.amount.type === 'range'));
  const delivery = {
    beneficiary_account: beneficiary,
    brand_name: brand.brand || product.brand,
    country_code: countryCode,
    denomination: range ? 'range' : product.denomination || faceAmount(product),
  };
  if (range) delivery.product_value = amount;
  else if (product.localized_denomination) delivery.localized_denomination = product.localized_denomination;
  const payment = { type: 'via', payment_via: paymentVia, coin };
  if (network) payment.network = network;
  const body = { payment, deliveries: [delivery], lang };
  // The buyer's email only matters to create; when it is the beneficiary itself, leaving it out
  // lets a bad address come back as the field's INVALID_BENEFICIARY_ACCOUNT problem.
  if (email && email !== beneficiary) body.email = email;
  return body;
}

/** Body for POST orders. Same inputs as validationBody, plus `newsletter` and `acquisition`. */
export function orderBody(input) {
  const v = validationBody(input);
  const d = v.deliveries[0];
  const deliverable = { brand_name: d.brand_name, country_code: d.country_code, denomination: d.denomination, beneficiary_account: d.beneficiary_account };
  if (d.product_value !== undefined) deliverable.product_value = d.product_value;
  const body = {
    deliveries: [{ kind: (input.brand && input.brand.kind) || (input.product && input.product.kind) || 'giftcard', quantity: 1, deliverable }],
    payment: v.payment,
    user: { email: input.email, has_accepted_newsletter: !!input.newsletter },
    lang: v.lang,
  };
  if (input.acquisition) body.acquisition = input.acquisition;
  return body;
}

export default createClient;
