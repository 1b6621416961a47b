// SPDX-License-Identifier: Apache-2.0
// Demo storefront for mod_cryptorefills: plain DOM, one ES module, no framework.
// The API base comes from <meta name="cryptorefills-base">, or ?api= for a quick try.
import {
  createClient, logoUrl, paymentRails, beneficiaryKind, validationBody, orderBody,
  newIdempotencyKey, isTerminalState,
} from '../cryptorefills.js';
import { qrSvg } from './qr.js';

const params = new URLSearchParams(location.search);
const base = params.get('api') || document.querySelector('meta[name="cryptorefills-base"]')?.content || '/api';
const api = createClient({ base });
// Watch tuning, mostly for tests: ?poll=ms
const watchTuning = {};
if (params.get('poll')) watchTuning.pollInterval = Number(params.get('poll'));

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') n.className = v;
    else if (k === 'text') n.textContent = v;
    else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids) if (k !== null && k !== undefined) n.append(k);
  return n;
};

const STATE_TEXT = {
  Created: 'Order created',
  WaitingForPayment: 'Waiting for your payment',
  PaymentStarted: 'Payment seen, waiting for confirmations',
  PartialPaymentStarted: 'Partial payment received — send the rest',
  PaymentReceived: 'Payment received',
  WaitingForDelivery: 'Paid — preparing your code',
  WaitingForManualAction: 'Under review by support',
  Done: 'Delivered — your code is ready',
  Expired: 'Expired — the payment window closed',
  Canceled: 'Canceled', Cancelled: 'Canceled',
  PaymentFailed: 'Payment failed', PaymentSetupFailed: 'Payment could not be set up',
  Refunded: 'Refunded',
};

const PROBLEM_TEXT = {
  INVALID_BENEFICIARY_ACCOUNT: 'This is not a valid recipient for this product.',
  INVALID_EMAIL_DOMAIN: 'This email domain is not accepted.',
  AMOUNT_LESS_THEN_MINIMUM_ALLOWED: 'The amount is below the minimum for this coin.',
  MAXIMUM_AMOUNT_PER_ORDER_EXCEEDED: 'The amount is above the per-order maximum.',
  DAILY_SPENDING_LIMIT_EXCEEDED: 'Daily spending limit reached.',
  MONTHLY_SPENDING_LIMIT_EXCEEDED: 'Monthly spending limit reached.',
  NOT_AVAILABLE_PRODUCT: 'This product is no longer available.',
  OUT_OF_STOCK: 'This product is out of stock.',
  NOT_ACTIVE: 'This product is paused.',
  NOT_ALLOWED_PAYMENT_VIA: 'This payment method is not allowed for this order.',
  UNSUPPORTED_PROTOCOL_COIN_COMBINATION: 'This coin cannot be paid on this network.',
  SUSPENDED_COIN: 'This coin is temporarily suspended.',
  SUSPENDED_NETWORK: 'This network is temporarily suspended.',
  LOGIN_REQUIRED: 'This product needs a signed-in account on cryptorefills.com.',
  PRODUCT_COUNT_EXCEEDED: 'Too many products in one order.',
  INVALID_REQUEST: 'Please check this field.',
};

const state = {
  country: '', names: new Map(), catalog: null, category: 'all',
  brand: null, family: null, product: null,
  rails: [], attempt: null, priceTimer: null, priceSeq: 0, unwatch: null,
};

/* ---------- notices ---------- */
function notice(msg) {
  const n = $('notice');
  n.textContent = msg || '';
  n.hidden = !msg;
}
function errText(e) {
  if (!e) return '';
  if (e.status === 0) return 'The store could not be reached. Check your connection and try again.';
  return `${PROBLEM_TEXT[e.detail] || 'Something went wrong.'} (${e.detail}${e.status ? `, HTTP ${e.status}` : ''})`;
}

/* ---------- logos ---------- */
function initials(name) {
  return String(name || '?').replace(/['’.]/g, '').replace(/[^\p{L}\p{N} ]/gu, ' ').trim().split(/\s+/).slice(0, 2).map((w) => w[0]).join('').toUpperCase() || '?';
}
function logo(brand) {
  const slot = el('span', { class: 'logo' });
  const placeholder = () => {
    const ph = el('span', { class: 'logo-placeholder', 'aria-hidden': 'true', text: initials(brand.brand) });
    if (brand.bg_color && brand.bg_color.toUpperCase() !== '#FFFFFF') ph.style.background = brand.bg_color;
    slot.replaceChildren(ph);
    slot.dataset.logo = 'placeholder';
  };
  const src = logoUrl(brand, '_300x190.webp');
  if (!src) { placeholder(); return slot; }
  // Decorative: the brand name is written next to it.  On error (CDN unreachable) show initials.
  const img = el('img', { src, alt: '', width: 300, height: 190, loading: 'lazy', decoding: 'async' });
  img.addEventListener('error', placeholder, { once: true });
  slot.dataset.logo = 'image';
  slot.append(img);
  return slot;
}

/* ---------- country + catalog ---------- */
async function loadCountries(selected) {
  const sel = $('country');
  try {
    const { countries } = await api.countries();
    state.names = new Map(countries.map((c) => [c.isoCode, c.name]));
    sel.replaceChildren(...countries.map((c) => el('option', { value: c.isoCode, text: c.name, selected: c.isoCode === selected })));
  } catch (e) {
    sel.replaceChildren(el('option', { value: selected, text: selected }));
    notice(`Countries could not be loaded: ${errText(e)}`);
  }
  sel.value = selected;
  sel.disabled = false;
  if (state.catalog) brandsStatus(brandsInView().length);
}

async function loadCatalog(country) {
  $('brands-status').textContent = 'Loading the catalog…';
  $('brands').replaceChildren();
  $('categories').replaceChildren();
  try {
    const catalog = await api.brands(country || undefined);
    state.catalog = catalog;
    state.country = catalog.country_code || country;
    state.category = 'all';
    renderCategories();
    renderBrands();
    return catalog;
  } catch (e) {
    $('brands-status').textContent = `The catalog could not be loaded. ${errText(e)}`;
    throw e;
  }
}

function categoryKey(c) { return `${c.kind}:${c.category}`; }
function categoryLabel(c) {
  const name = String(c.category || c.kind).replace(/[-_]/g, ' ');
  return name.charAt(0).toUpperCase() + name.slice(1);
}

function renderCategories() {
  const cats = (state.catalog.categories || []).filter((c) => (c.brands || []).length);
  const button = (key, label) => el('button', {
    type: 'button', 'aria-pressed': String(state.category === key), 'data-category': key, text: label,
    onclick: () => { state.category = key; renderCategories(); renderBrands(); },
  });
  $('categories').replaceChildren(button('all', 'All'), ...cats.map((c) => button(categoryKey(c), categoryLabel(c))));
}

function brandsInView() {
  const cat = state.catalog;
  if (state.category === 'all') {
    if (Array.isArray(cat.all_brands) && cat.all_brands.length) return cat.all_brands;
    const seen = new Map();
    for (const c of cat.categories || []) for (const b of c.brands || []) seen.set(b.brand, b);
    return [...seen.values()];
  }
  const c = (cat.categories || []).find((x) => categoryKey(x) === state.category);
  return c ? c.brands || [] : [];
}

function brandsStatus(n) {
  $('brands-status').textContent = `${n} brand${n === 1 ? '' : 's'} in ${state.names.get(state.country) || state.country}`;
}

function renderBrands() {
  const list = brandsInView();
  brandsStatus(list.length);
  $('brands').replaceChildren(...list.map((b) => el('li', {},
    el('button', { type: 'button', class: 'brand', 'data-brand': b.brand, disabled: b.is_out_of_stock || undefined, onclick: () => openBrand(b) },
      logo(b),
      el('span', { class: 'name', text: b.brand }),
      el('span', { class: b.is_out_of_stock ? 'oos' : 'range', text: b.is_out_of_stock ? 'Out of stock' : [b.min, b.max].filter(Boolean).join(' – ') })))));
}

/* ---------- brand, products, price ---------- */
function show(step) {
  for (const id of ['step-brands', 'step-product', 'step-pay']) $(id).hidden = id !== step;
}

function kindLabel(brand) {
  if (brand.kind === 'mobile_recharge') return brand.category === 'e-sim' ? 'eSIM, delivered by email' : 'Mobile top-up, sent to a phone number';
  return 'Gift card, delivered by email';
}

async function openBrand(brand) {
  state.brand = brand; state.product = null; state.family = null; state.attempt = null;
  clearProblems();
  $('product-title').textContent = brand.brand;
  $('product-kind').textContent = kindLabel(brand);
  $('product-logo').replaceChildren(logo(brand));
  $('products').replaceChildren(el('p', { class: 'muted', text: 'Loading amounts…' }));
  $('range').hidden = true;
  $('price').textContent = '—';
  show('step-product');
  $('product-title').setAttribute('tabindex', '-1');
  $('product-title').focus();
  setBeneficiaryField();
  await loadProducts();
}

async function loadProducts() {
  const brand = state.brand;
  try {
    const families = await api.products(state.country, { familyName: brand.family || brand.brand, coin: $('coin').value || 'USDC' });
    if (brand !== state.brand) return;
    const family = (families || []).find((f) => f.brand === brand.brand) || (families || [])[0];
    state.family = family || null;
    const products = (family && family.products) || [];
    if (!products.length) {
      $('products').replaceChildren(el('p', { class: 'muted', text: 'No amounts available right now.' }));
      return;
    }
    $('products').replaceChildren(...products.map((p, i) => {
      const id = `product-${i}`;
      const input = el('input', { type: 'radio', name: 'product', id, value: String(i), checked: i === 0 });
      input.addEventListener('change', () => selectProduct(p));
      return el('label', { for: id }, input, el('span', { text: productLabel(p) }));
    }));
    selectProduct(products[0]);
  } catch (e) {
    $('products').replaceChildren(el('p', { class: 'field-error', text: `Amounts could not be loaded. ${errText(e)}` }));
  }
}

function isRange(p) {
  return !!(p && (p.is_dynamic || p.face_value?.amount?.type === 'range'));
}
function productLabel(p) {
  if (isRange(p)) {
    const r = p.range || p.face_value.amount;
    return `Any amount ${r.min}–${r.max} ${p.range?.currency || p.face_value?.currency_code || ''}`.trim();
  }
  return p.localized_denomination || p.denomination || `${p.face_value?.amount?.price} ${p.face_value?.currency_code || ''}`;
}
function faceValue() {
  const p = state.product;
  if (!p) return undefined;
  if (isRange(p)) return $('amount').value;
  return p.face_value?.amount?.price ?? String(p.denomination || '').split(' ')[0];
}

function selectProduct(p) {
  state.product = p;
  state.attempt = null;
  setBeneficiaryField();
  const range = isRange(p);
  $('range').hidden = !range;
  if (range) {
    const r = p.range || p.face_value.amount;
    const amount = $('amount');
    amount.min = r.min; amount.max = r.max; amount.step = p.range?.step_size || 'any';
    amount.value = amount.value || p.range?.default || r.min;
    $('range-hint').textContent = `(${r.min}–${r.max} ${p.range?.currency || p.face_value?.currency_code || ''})`;
  }
  refreshPrice();
}

async function refreshPrice() {
  clearTimeout(state.priceTimer);
  const p = state.product;
  const fv = faceValue();
  const coin = $('coin').value;
  if (!p || !fv || !coin || $('step-product').hidden) return;
  const seq = ++state.priceSeq;
  const out = $('price');
  out.setAttribute('aria-busy', 'true');
  try {
    const q = await api.price({ brandName: state.brand.brand, countryCode: state.country, faceValue: fv, coin });
    if (seq !== state.priceSeq) return;
    out.textContent = `${q.coin_amount} ${q.coin || coin}`;
    out.dataset.coinAmount = q.coin_amount;
  } catch (e) {
    if (seq !== state.priceSeq) return;
    out.textContent = p.coin_amount && p.coin === coin ? `${p.coin_amount} ${coin} (catalog price)` : `unavailable (${e.detail})`;
  } finally {
    if (seq === state.priceSeq) out.removeAttribute('aria-busy');
  }
  // Quotes move with the market: refresh while the buyer looks at them.
  state.priceTimer = setTimeout(refreshPrice, 20000);
}

/* ---------- payment rails ---------- */
function renderCoins(preferCoin = 'USDC', preferNetwork = 'Solana') {
  const coins = [...new Set(state.rails.map((r) => r.coin))];
  $('coin').replaceChildren(...coins.map((c) => el('option', { value: c, text: c })));
  $('coin').value = coins.includes(preferCoin) ? preferCoin : coins[0] || '';
  renderNetworks(preferNetwork);
}
function renderNetworks(prefer = 'Solana') {
  const coin = $('coin').value;
  const nets = state.rails.filter((r) => r.coin === coin).map((r) => r.network);
  $('network').replaceChildren(...nets.map((n) => el('option', { value: n, text: n })));
  $('network').value = nets.includes(prefer) ? prefer : nets[0] || '';
}

/* ---------- beneficiary and problems ---------- */
function kind() { return beneficiaryKind(state.brand, state.product); }

function setBeneficiaryField() {
  const phone = state.brand && kind() === 'phone';
  const input = $('beneficiary');
  $('beneficiary-label').textContent = phone ? 'Phone number to top up' : 'Email address (your code is sent here)';
  input.type = phone ? 'tel' : 'email';
  input.autocomplete = phone ? 'tel' : 'email';
  input.placeholder = phone ? '+14155551234' : 'you@example.com';
  $('beneficiary-hint').textContent = phone ? 'International format: + and country code.' : '';
  $('email-field').hidden = !phone;
}

const FIELD_ERRORS = { beneficiary: 'beneficiary-error', email: 'email-error', coin: 'coin-error', network: 'network-error', amount: 'amount-error' };

function clearProblems() {
  for (const [input, err] of Object.entries(FIELD_ERRORS)) {
    $(err).hidden = true; $(err).textContent = '';
    $(input).removeAttribute('aria-invalid');
  }
  $('amount-field').removeAttribute('aria-invalid');
  $('form-error').hidden = true; $('form-error').replaceChildren();
}

// Which input a problem belongs to: by moreDetails.field (`deliveries[0].beneficiary_account`,
// `email`, `payment.coin` …), else by its code.
function fieldOf(problem) {
  const md = problem.moreDetails;
  const f = String((md && typeof md === 'object' && (md.field || md.path)) || '').toLowerCase();
  const phone = kind() === 'phone';
  if (f) {
    if (f.includes('beneficiary')) return 'beneficiary';
    if (/(^|\.)email$/.test(f) || f.startsWith('user')) return phone ? 'email' : 'beneficiary';
    if (f.includes('network') || f.includes('protocol')) return 'network';
    if (f.includes('coin') || f.includes('payment')) return 'coin';
    if (/denomination|product_value|face_value|amount|quantity/.test(f)) return 'amount';
  }
  switch (problem.problem) {
    case 'INVALID_BENEFICIARY_ACCOUNT': return 'beneficiary';
    case 'INVALID_EMAIL_DOMAIN': return phone ? 'email' : 'beneficiary';
    case 'UNSUPPORTED_PROTOCOL_COIN_COMBINATION': case 'SUSPENDED_NETWORK': return 'network';
    case 'SUSPENDED_COIN': case 'NOT_ALLOWED_PAYMENT_VIA': return 'coin';
    case 'AMOUNT_LESS_THEN_MINIMUM_ALLOWED': case 'MAXIMUM_AMOUNT_PER_ORDER_EXCEEDED': return 'amount';
    default: return null;
  }
}

function problemMessage(p) {
  const text = PROBLEM_TEXT[p.problem] || 'This was not accepted.';
  const md = p.moreDetails && typeof p.moreDetails === 'object' ? p.moreDetails : null;
  const extra = md && (md.message || md.reason);
  return `${text}${extra ? ` ${extra}` : ''}`;
}

function showProblems(problems) {
  clearProblems();
  const general = [];
  let first = null;
  for (const p of problems) {
    const field = fieldOf(p);
    if (!field) { general.push(p); continue; }
    const err = $(FIELD_ERRORS[field]);
    const line = el('span', { 'data-problem': p.problem }, problemMessage(p), ' ', el('code', { text: p.problem }));
    if (!err.hidden) err.append(el('br'));
    err.append(line);
    err.hidden = false;
    $(field).setAttribute('aria-invalid', 'true');
    if (field === 'amount') $('amount-field').setAttribute('aria-invalid', 'true');
    first = first || field;
  }
  if (general.length) {
    $('form-error').replaceChildren(el('p', { text: 'The order was not accepted:' }),
      el('ul', {}, ...general.map((p) => el('li', { 'data-problem': p.problem }, problemMessage(p), ' ', el('code', { text: p.problem })))));
    $('form-error').hidden = false;
  }
  const target = first && !(first === 'amount' && $('range').hidden) ? $(first) : (first === 'amount' ? $('products').querySelector('input:checked') : null);
  (target || $('form-error')).focus?.();
}

function formError(msg) {
  $('form-error').replaceChildren(el('p', { text: msg }));
  $('form-error').hidden = false;
}

/* ---------- checkout ---------- */
function orderInput() {
  const phone = kind() === 'phone';
  const beneficiary = $('beneficiary').value.trim();
  return {
    brand: state.brand, product: state.product, countryCode: state.country,
    beneficiary, email: phone ? $('email').value.trim() : beneficiary,
    coin: $('coin').value, network: $('network').value,
    amount: isRange(state.product) ? $('amount').value : undefined, lang: 'en',
    acquisition: { utm_source: 'mod_cryptorefills_demo' },
  };
}

async function placeOrder(ev) {
  ev.preventDefault();
  if (!state.product) { formError('Choose an amount first.'); return; }
  const btn = $('place-order');
  clearProblems();
  btn.disabled = true;
  btn.textContent = 'Checking…';
  try {
    const input = orderInput();
    await api.validateOrder(validationBody(input));
    const body = orderBody(input);
    // One Idempotency-Key per checkout attempt: a retry of the very same order reuses it,
    // so an ambiguous failure (timeout, 5xx) can never buy twice.
    const json = JSON.stringify(body);
    if (!state.attempt || state.attempt.json !== json) state.attempt = { json, key: newIdempotencyKey() };
    btn.textContent = 'Placing the order…';
    const order = await api.createOrder(body, { idempotencyKey: state.attempt.key });
    state.attempt = null;
    startPayment(order);
  } catch (e) {
    if (e.problems && e.problems.length) showProblems(e.problems);
    else if (e.moreDetails && typeof e.moreDetails === 'object' && e.moreDetails.field) showProblems([{ problem: e.detail, moreDetails: e.moreDetails }]);
    else if (e.ambiguous && state.attempt) formError(`We could not confirm the order (${e.detail}). Press “Place order” again to retry safely — you will not be charged twice.`);
    else formError(errText(e));
  } finally {
    btn.disabled = false;
    btn.textContent = 'Place order';
  }
}

/* ---------- payment + live status ---------- */
function renderQr(order) {
  const fig = $('qr');
  const candidates = [order.qr_text, order.wallet_address].filter(Boolean);
  for (const text of candidates) {
    try {
      fig.innerHTML = qrSvg(text, { level: 'M', title: `QR code of the payment address for ${order.coin_amount} ${order.coin}` });
      fig.dataset.qrText = text;
      fig.append(el('figcaption', { text: 'Scan with your wallet' }));
      return;
    } catch { /* too long for this encoder: try the bare address */ }
  }
  fig.replaceChildren(el('figcaption', { text: 'Copy the address below into your wallet.' }));
}

function startPayment(order) {
  clearTimeout(state.priceTimer);
  show('step-pay');
  $('pay-amount').textContent = `${order.coin_amount} ${order.coin}`;
  $('pay-network').textContent = order.network || $('network').value;
  $('pay-address').textContent = order.wallet_address || '';
  $('order-id').textContent = order.order_id;
  renderQr(order);
  $('timeline').replaceChildren();
  $('delivered').hidden = true;
  $('order-status').dataset.state = '';
  updateOrder(order);
  $('pay-title').setAttribute('tabindex', '-1');
  $('pay-title').focus();
  if (state.unwatch) state.unwatch();
  if (!isTerminalState(order.order_state)) {
    state.unwatch = api.watchOrder(order.order_id, updateOrder, { ...watchTuning, onStatus: connection, onError: (e) => console.warn('order watch:', e.detail, e) });
  } else {
    connection({ transport: 'done' });
  }
}

const TRANSPORT_TEXT = {
  connecting: 'Connecting to live updates…', open: 'Live updates on', reconnecting: 'Connection lost — reconnecting…',
  polling: 'Live updates unavailable — checking every few seconds', done: 'Order finished', stopped: 'Updates stopped', failed: 'Updates failed',
};
function connection(s) {
  const c = $('connection');
  c.dataset.transport = s.transport;
  const n = Number(c.dataset[s.transport] || 0) + 1;
  c.dataset[s.transport] = String(n);
  c.textContent = TRANSPORT_TEXT[s.transport] || s.transport;
}

function updateOrder(order) {
  const st = $('order-status');
  const prev = st.dataset.state;
  if (order.order_state !== prev) {
    st.dataset.state = order.order_state;
    st.textContent = STATE_TEXT[order.order_state] || order.order_state;
    if (isTerminalState(order.order_state) && order.order_state !== 'Done') st.dataset.terminal = 'bad';
    $('timeline').append(el('li', { 'data-state': order.order_state },
      STATE_TEXT[order.order_state] || order.order_state,
      el('time', { datetime: new Date().toISOString(), text: new Date().toLocaleTimeString() })));
  }
  if (order.order_state === 'Done') showDelivered(order);
}

function showDelivered(order) {
  const items = (order.deliveries || []).map((d) => {
    const x = d.deliverable || {};
    const code = x.pin_code;
    const isUrl = typeof code === 'string' && /^https?:\/\//.test(code);
    return el('div', { class: 'delivery' },
      el('p', { text: `${x.brand_name || state.brand?.brand || ''} ${x.localized_denomination || x.denomination || ''}`.trim() }),
      code ? (isUrl ? el('p', {}, el('a', { href: code, rel: 'noopener', target: '_blank', text: 'Redeem your card' }))
        : el('p', {}, 'Code: ', el('span', { class: 'code', 'data-testid': 'pin-code', text: code }))) : el('p', { text: `Sent to ${x.beneficiary_account || 'the recipient'}.` }),
      x.pin_serial ? el('p', { text: `Serial: ${x.pin_serial}` }) : null,
      x.redeem_instructions ? el('p', { class: 'muted', text: x.redeem_instructions }) : null);
  });
  $('delivered-items').replaceChildren(...items);
  $('delivered').hidden = false;
}

/* ---------- wiring ---------- */
async function main() {
  $('order-form').addEventListener('submit', placeOrder);
  $('back').addEventListener('click', () => { clearTimeout(state.priceTimer); show('step-brands'); document.querySelector(`[data-brand="${CSS.escape(state.brand?.brand || '')}"]`)?.focus(); });
  $('new-order').addEventListener('click', () => { if (state.unwatch) state.unwatch(); state.unwatch = null; show('step-brands'); });
  $('copy-address').addEventListener('click', async () => {
    try { await navigator.clipboard.writeText($('pay-address').textContent); $('copy-address').textContent = 'Copied'; } catch { $('copy-address').textContent = 'Select and copy'; }
  });
  $('country').addEventListener('change', async () => { show('step-brands'); try { await loadCatalog($('country').value); } catch { /* shown */ } });
  $('coin').addEventListener('change', () => { renderNetworks(); state.attempt = null; if (state.brand) loadProducts(); });
  $('network').addEventListener('change', () => { state.attempt = null; });
  $('amount').addEventListener('change', refreshPrice);
  for (const id of ['beneficiary', 'email', 'amount']) $(id).addEventListener('input', () => { $(id).removeAttribute('aria-invalid'); });

  const vias = api.paymentVias().then((v) => { state.rails = paymentRails(v); renderCoins(); })
    .catch((e) => notice(`Payment methods could not be loaded: ${errText(e)}`));
  // No country named: the module resolves the visitor's (GeoIP env, then its default) and the
  // catalog says which one it used.
  let country = params.get('country') || '';
  try {
    const catalog = await loadCatalog(country);
    country = catalog.country_code || country;
  } catch { /* shown in the brand list */ }
  await loadCountries(country);
  await vias;
  document.body.dataset.ready = 'true';
}

main();
