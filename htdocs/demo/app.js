// SPDX-License-Identifier: Apache-2.0
// Demo storefront for mod_cryptorefills: plain DOM, one ES module, no framework.
// The API base comes from <meta name="cryptorefills-base">, or ?api= for a quick try.
//
// Where the shopper is lives in the address: ?country=CC (brand list), &brand=NAME (amount and
// checkout), ?order=ID (payment and live status).  Every step is a history entry, so reload,
// back, forward and a shared link all land on the same step; the order in progress is also kept
// in sessionStorage so that browsing away never hides it.
import {
  createClient, logoUrl, paymentRails, beneficiaryKind, validationBody, orderBody,
  newIdempotencyKey, isTerminalState,
} from '../cryptorefills.js';
import { qrSvg } from './qr.js';

const params = new URLSearchParams(location.search);
const base = params.get('api') || document.querySelector('meta[name="cryptorefills-base"]')?.content || '/api';
const api = createClient({ base });
// Kept from the first address on every step (tests and quick tries): ?api=, ?poll=ms
const STICKY = ['api', 'poll'];
const watchTuning = {};
if (params.get('poll')) watchTuning.pollInterval = Number(params.get('poll'));

const PAYMENT_WINDOW_MS = 30 * 60 * 1000;
const ACTIVE_KEY = 'cryptorefills-demo:active-order';

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
// States in which the shopper still has to send coins: the payment QR and address show only then.
const AWAITING_PAYMENT = new Set(['Created', 'WaitingForPayment', 'PartialPaymentStarted']);

// What each code means to a shopper.  The codes themselves only appear under "Details".
const PROBLEM_TEXT = {
  INVALID_BENEFICIARY_ACCOUNT: 'This recipient is not accepted for this product. Check it for typos.',
  INVALID_EMAIL_DOMAIN: 'Email addresses at this domain are not accepted. Use another address.',
  AMOUNT_LESS_THEN_MINIMUM_ALLOWED: 'This amount is too small to pay with this coin. Choose a larger amount or another coin.',
  MAXIMUM_AMOUNT_PER_ORDER_EXCEEDED: 'This amount is above the limit for one order. Choose a smaller amount.',
  DAILY_SPENDING_LIMIT_EXCEEDED: 'You reached today\'s spending limit. Try again tomorrow.',
  MONTHLY_SPENDING_LIMIT_EXCEEDED: 'You reached this month\'s spending limit.',
  NOT_AVAILABLE_PRODUCT: 'This amount is not available for this card right now.',
  OUT_OF_STOCK: 'This card is out of stock right now.',
  NOT_ACTIVE: 'This card is paused for the moment.',
  NOT_ALLOWED_PAYMENT_VIA: 'This way of paying is not available for this order. Choose another coin.',
  UNSUPPORTED_PROTOCOL_COIN_COMBINATION: 'This coin cannot be paid on this network. Choose another network.',
  SUSPENDED_COIN: 'Payments in this coin are paused for the moment. Choose another coin.',
  SUSPENDED_NETWORK: 'Payments on this network are paused for the moment. Choose another network.',
  LOGIN_REQUIRED: 'This card can only be bought by a signed-in customer on cryptorefills.com.',
  PRODUCT_COUNT_EXCEEDED: 'Too many items in one order.',
  INVALID_FACE_VALUE: 'This amount is not available for this card.',
  UNSUPPORTED_COUNTRY: 'This country is not served.',
  RATE_LIMITED: 'Too many requests just now. Wait a moment and try again.',
  TOO_MANY_STREAMS: 'Live updates are busy; the page checks your order every few seconds instead.',
  UPSTREAM_TIMEOUT: 'The store took too long to answer. Try again in a moment.',
  UPSTREAM_UNAVAILABLE: 'The store is not reachable right now. Try again in a moment.',
  IDEMPOTENCY_IN_FLIGHT: 'Your order is still being placed. Wait a moment, then try again.',
  IDEMPOTENCY_UNAVAILABLE: 'Orders are paused for a moment so none is placed twice. Try again shortly.',
  IDEMPOTENCY_KEY_REUSED: 'This checkout changed after it was sent. Start the order again.',
  ORDER_OUTCOME_UNKNOWN: 'We could not confirm whether this order was placed. Do not pay for it twice: check your email for an order confirmation before ordering again.',
  NOT_FOUND: 'This was not found.',
  INVALID_ORDER_ID: 'This order number is not valid.',
};

const state = {
  country: '', names: new Map(), catalogs: new Map(), catalog: null, category: 'all',
  brand: null, family: null, product: null, productKey: null,
  rails: [], attempt: null, priceTimer: null, priceDebounce: null, priceSeq: 0,
  order: null, watch: null, countdown: null, loginOnly: new Set(),
  remembered: { email: '', phone: '', receipt: '' },
};

/* ---------- notices and error details ---------- */
function notice(msg) {
  const n = $('notice');
  n.textContent = msg || '';
  n.hidden = !msg;
}
function errText(e) {
  if (!e) return '';
  if (e.status === 0) return 'The store could not be reached. Check your connection and try again.';
  return PROBLEM_TEXT[e.detail] || 'Something went wrong on our side. Try again in a moment.';
}
/** A closed "Details" toggle holding the codes, for support and developers. */
function details(...codes) {
  const text = codes.filter(Boolean).join(', ');
  return text ? el('details', { class: 'codes' }, el('summary', { text: 'Details' }), el('code', { text })) : null;
}
function errCodes(e) {
  return [e.detail, e.status ? `HTTP ${e.status}` : null];
}

/* ---------- logos ---------- */
function initials(name) {
  return String(name || '?').replace(/['’.]/g, '').replace(/[^\p{L}\p{N} ]/gu, ' ').trim().split(/\s+/).slice(0, 2).map((w) => w[0]).join('').toUpperCase() || '?';
}
// WCAG relative luminance of #rrggbb; the text colour (black or white) with the higher contrast.
function luminance(hex) {
  const m = /^#?([0-9a-f]{6})$/i.exec(hex || '');
  if (!m) return null;
  const ch = [0, 2, 4].map((i) => parseInt(m[1].slice(i, i + 2), 16) / 255)
    .map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
  return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
}
function textOn(bg) {
  const l = luminance(bg);
  if (l === null) return '#fff';
  return (1.05 / (l + 0.05)) >= ((l + 0.05) / 0.05) ? '#fff' : '#000';
}
function logo(brand) {
  const slot = el('span', { class: 'logo' });
  const placeholder = () => {
    const ph = el('span', { class: 'logo-placeholder', 'aria-hidden': 'true', text: initials(brand.brand) });
    if (brand.bg_color && luminance(brand.bg_color) !== null && brand.bg_color.toUpperCase() !== '#FFFFFF') {
      ph.style.background = brand.bg_color;
      ph.style.color = textOn(brand.bg_color);
    }
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

/* ---------- the address: one history entry per step ---------- */
function here() {
  const q = new URLSearchParams(location.search);
  return { country: q.get('country') || '', brand: q.get('brand') || '', order: q.get('order') || '' };
}
function urlFor({ country, brand, order }) {
  const q = new URLSearchParams();
  for (const k of STICKY) if (params.get(k)) q.set(k, params.get(k));
  if (order) q.set('order', order);
  else {
    if (country) q.set('country', country);
    if (brand) q.set('brand', brand);
  }
  const s = q.toString();
  return `${location.pathname}${s ? `?${s}` : ''}`;
}
/** Go to a step: a new history entry (or replace the current one), then show it. */
async function go(where, { replace = false, focus = true } = {}) {
  const url = urlFor(where);
  if (url !== `${location.pathname}${location.search}`) {
    if (replace) history.replaceState(null, '', url); else history.pushState(null, '', url);
  }
  await route({ focus });
}

let routing = 0;
/** Show what the address names. */
async function route({ focus = true } = {}) {
  const seq = ++routing;
  const want = here();
  clearTimeout(state.priceTimer);
  clearTimeout(state.priceDebounce);
  if (want.order) {
    await showOrder(want.order, { focus });
    return;
  }
  stopCountdown();
  let catalog = null;
  try {
    catalog = await loadCatalog(want.country);
  } catch { /* shown in the brand list */ }
  if (seq !== routing) return;
  if (catalog && !want.country && catalog.country_code) {
    history.replaceState(null, '', urlFor({ country: catalog.country_code, brand: want.brand }));
  }
  const brand = catalog && want.brand ? findBrand(catalog, want.brand) : null;
  if (brand) {
    await openBrand(brand, { focus });
  } else {
    show('step-brands');
    if (want.brand && catalog) notice(`${want.brand} is not sold in ${countryName(state.country)}. Choose another card.`);
    if (focus) focusHeading('brands-title');
  }
}

function focusHeading(id) {
  const h = $(id);
  h.setAttribute('tabindex', '-1');
  h.focus();
}

/* ---------- the order in progress, kept across steps, countries and reloads ---------- */
function rememberOrder(order) {
  const kept = { id: order.order_id, state: order.order_state, what: summaryLine(order) };
  try { sessionStorage.setItem(ACTIVE_KEY, JSON.stringify(kept)); } catch { /* private mode */ }
  renderActiveBanner();
}
function keptOrder() {
  try { return JSON.parse(sessionStorage.getItem(ACTIVE_KEY) || 'null'); } catch { return null; }
}
function forgetOrder() {
  try { sessionStorage.removeItem(ACTIVE_KEY); } catch { /* nothing kept */ }
  renderActiveBanner();
}
// On every step but the order's own: a way back to an order that still waits for payment or delivery.
function renderActiveBanner() {
  const kept = keptOrder();
  const onIt = !$('step-pay').hidden && kept && state.order && state.order.order_id === kept.id;
  const show = kept && !onIt && !isTerminalState(kept.state);
  $('active-order').hidden = !show;
  if (show) $('active-order-text').textContent = `Your order${kept.what ? ` of ${kept.what}` : ''} is in progress: ${STATE_TEXT[kept.state] || kept.state}.`;
}

/* ---------- country + catalog ---------- */
function countryName(cc) { return state.names.get(cc) || cc; }

async function loadCountries(selected) {
  const sel = $('country');
  try {
    const { countries } = await api.countries();
    state.names = new Map(countries.map((c) => [c.isoCode, c.name]));
    sel.replaceChildren(...countries.map((c) => el('option', { value: c.isoCode, text: c.name })));
  } catch (e) {
    sel.replaceChildren(el('option', { value: selected, text: selected }));
    notice(`The list of countries could not be loaded. ${errText(e)}`);
  }
  sel.value = selected;
  sel.disabled = false;
  if (state.catalog) brandsStatus(brandsInView().length);
}

async function loadCatalog(country) {
  const cached = state.catalogs.get(country || '');
  if (cached && cached === state.catalog) return cached;
  if (!cached) {
    $('brands-status').textContent = 'Loading the catalog…';
    $('brands').replaceChildren();
    $('categories').replaceChildren();
  }
  try {
    const catalog = cached || await api.brands(country || undefined);
    state.catalogs.set(country || '', catalog);
    if (catalog.country_code) state.catalogs.set(catalog.country_code, catalog);
    state.catalog = catalog;
    state.country = catalog.country_code || country;
    if ($('country').value !== state.country && !$('country').disabled) $('country').value = state.country;
    state.category = 'all';
    renderCategories();
    renderBrands();
    return catalog;
  } catch (e) {
    $('brands-status').replaceChildren(`The catalog could not be loaded. ${errText(e)}`, details(...errCodes(e)) || '');
    throw e;
  }
}

function allBrands(cat) {
  if (Array.isArray(cat.all_brands) && cat.all_brands.length) return cat.all_brands;
  const seen = new Map();
  for (const c of cat.categories || []) for (const b of c.brands || []) if (!seen.has(b.brand)) seen.set(b.brand, b);
  return [...seen.values()];
}
function findBrand(cat, name) {
  return allBrands(cat).find((b) => b.brand === name)
    || (cat.categories || []).flatMap((c) => c.brands || []).find((b) => b.brand === name) || null;
}

function categoryKey(c) { return `${c.kind}:${c.category}`; }
const CATEGORY_LABEL = {
  'e-commerce': 'Online shopping', 'health-beauty': 'Health & beauty', 'e-sim': 'eSIM',
  'phone-top-up': 'Phone top-up', 'data-bundle': 'Data bundles', 'prepaid-cards': 'Prepaid cards',
  'e-money': 'E-money', apps: 'Apps', crypto: 'Crypto', nft_giftcard: 'Crypto',
};
function categoryLabel(c) {
  const key = String(c.category || c.kind);
  if (CATEGORY_LABEL[key]) return CATEGORY_LABEL[key];
  const name = key.replace(/[-_]/g, ' ');
  return name.charAt(0).toUpperCase() + name.slice(1);
}

function renderCategories() {
  const cats = (state.catalog.categories || []).filter((c) => (c.brands || []).length);
  const button = (key, label) => el('button', {
    type: 'button', 'aria-pressed': String(state.category === key), 'data-category': key, text: label,
    onclick: () => { state.category = key; renderCategories(); renderBrands(); $('categories').querySelector(`[data-category="${CSS.escape(key)}"]`)?.focus(); },
  });
  $('categories').replaceChildren(button('all', 'All'), ...cats.map((c) => button(categoryKey(c), categoryLabel(c))));
}

function brandsInView() {
  const cat = state.catalog;
  if (state.category === 'all') return allBrands(cat);
  const c = (cat.categories || []).find((x) => categoryKey(x) === state.category);
  return c ? c.brands || [] : [];
}

function brandsStatus(n) {
  $('brands-status').textContent = `${n} brand${n === 1 ? '' : 's'} in ${countryName(state.country)}`;
}

// Brands the upstream sells only to signed-in customers (LOGIN_REQUIRED at checkout): e-money and
// KYC brands.  The catalog has no flag for it, so go by category (prepaid cards, e-money), and add
// any brand whose checkout answered LOGIN_REQUIRED.
const LOGIN_CATEGORIES = ['prepaid-cards', 'e-money'];
function needsLogin(brand) {
  if (!brand) return false;
  if (state.loginOnly.has(brand.brand)) return true;
  return [brand.category, ...(brand.additional_categories || [])].some((c) => LOGIN_CATEGORIES.includes(c));
}

function renderBrands() {
  const list = brandsInView();
  brandsStatus(list.length);
  $('brands').replaceChildren(...list.map((b) => el('li', {},
    el('button', { type: 'button', class: 'brand', 'data-brand': b.brand, disabled: b.is_out_of_stock || undefined, onclick: () => go({ country: state.country, brand: b.brand }) },
      logo(b),
      el('span', { class: 'name', text: b.brand }),
      el('span', { class: b.is_out_of_stock ? 'oos' : 'range', text: b.is_out_of_stock ? 'Out of stock' : [b.min, b.max].filter(Boolean).join(' – ') }),
      needsLogin(b) ? el('span', { class: 'login', text: 'Account needed' }) : null))));
}

/* ---------- brand, products, amount, price ---------- */
function show(step) {
  for (const id of ['step-brands', 'step-product', 'step-pay']) $(id).hidden = id !== step;
  document.body.dataset.step = step.replace('step-', '');
  renderActiveBanner();
}

function kindLabel(brand) {
  if (brand.kind === 'mobile_recharge') return brand.category === 'e-sim' ? 'eSIM, delivered by email' : 'Mobile top-up, sent to a phone number';
  return 'Gift card, delivered by email';
}

async function openBrand(brand, { focus = true } = {}) {
  const same = state.brand && state.brand.brand === brand.brand && state.country === (brand.country_code || state.country) && state.family;
  notice('');
  show('step-product');
  if (focus) focusHeading('product-title');
  if (same && state.product) { refreshPrice(); return; }
  state.brand = brand; state.product = null; state.productKey = null; state.family = null; state.attempt = null;
  clearProblems();
  $('product-title').textContent = brand.brand;
  $('product-kind').textContent = kindLabel(brand);
  $('product-logo').replaceChildren(logo(brand));
  $('products').replaceChildren(el('p', { class: 'muted', text: 'Loading amounts…' }));
  $('range').hidden = true;
  $('amount').value = '';
  setPrice('—');
  setBeneficiaryField();
  const login = needsLogin(brand);
  $('login-note').hidden = !login;
  $('place-order').disabled = login;
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
    // The amount the shopper chose survives a reload of the products (another coin).
    const keep = products.findIndex((p) => productKey(p) === state.productKey);
    const chosen = keep >= 0 ? keep : 0;
    $('products').replaceChildren(...products.map((p, i) => {
      const id = `product-${i}`;
      const input = el('input', { type: 'radio', name: 'product', id, value: String(i), checked: i === chosen });
      input.addEventListener('change', () => selectProduct(p));
      return el('label', { for: id }, input, el('span', { text: productLabel(p) }));
    }));
    selectProduct(products[chosen]);
  } catch (e) {
    $('products').replaceChildren(el('div', { class: 'field-error' }, `The amounts could not be loaded. ${errText(e)}`, details(...errCodes(e)) || ''));
  }
}

function isRange(p) {
  return !!(p && (p.is_dynamic || p.face_value?.amount?.type === 'range'));
}
function productKey(p) { return isRange(p) ? 'range' : String(p.denomination ?? p.face_value?.amount?.price ?? ''); }
function rangeOf(p) {
  const r = p.range || p.face_value?.amount || {};
  const min = Number(r.min); const max = Number(r.max);
  const step = Number(p.range?.step_size) > 0 ? Number(p.range.step_size) : 0;
  const currency = p.range?.currency || p.face_value?.currency_code || '';
  return { min, max, step, currency };
}
function fmt(n) { return String(Number(n.toFixed(8))); }
function rangeText(r) {
  return `Enter ${fmt(r.min)}–${fmt(r.max)} ${r.currency}${r.step ? ` in steps of ${fmt(r.step)}` : ''}.`.replace(/ +\./, '.');
}
function productLabel(p) {
  if (isRange(p)) {
    const r = rangeOf(p);
    return `Any amount ${fmt(r.min)}–${fmt(r.max)} ${r.currency}`.trim();
  }
  return p.localized_denomination || p.denomination || `${p.face_value?.amount?.price} ${p.face_value?.currency_code || ''}`;
}
// A range product starts at the upstream's default when it lies below the maximum (the sandbox
// and, at times, the upstream name the maximum itself, which no shopper means), else the minimum.
function defaultAmount(p) {
  const r = rangeOf(p);
  const d = Number(p.range?.default);
  return fmt(Number.isFinite(d) && d >= r.min && d < r.max && !amountProblem(p, String(d)) ? d : r.min);
}
/** Why `value` is not an amount of range product `p`, in the shopper's words; null when it is. */
function amountProblem(p, value) {
  const r = rangeOf(p);
  const v = String(value ?? '').trim().replace(',', '.');
  if (!v) return `Enter an amount from ${fmt(r.min)} to ${fmt(r.max)} ${r.currency}.`;
  if (!/^\d+(\.\d+)?$/.test(v)) return `Enter a number, like ${fmt(r.min)}.`;
  const n = Number(v);
  if (n < r.min) return `The smallest amount is ${fmt(r.min)} ${r.currency}.`;
  if (n > r.max) return `The largest amount is ${fmt(r.max)} ${r.currency}.`;
  if (r.step) {
    const k = (n - r.min) / r.step;
    if (Math.abs(k - Math.round(k)) > 1e-9) {
      const lo = r.min + Math.floor(k) * r.step;
      return `Use steps of ${fmt(r.step)} ${r.currency}, for example ${fmt(lo)} or ${fmt(Math.min(r.max, lo + r.step))}.`;
    }
  }
  return null;
}
function amountValue() { return $('amount').value.trim().replace(',', '.'); }

function faceValue() {
  const p = state.product;
  if (!p) return undefined;
  if (isRange(p)) return amountProblem(p, amountValue()) ? undefined : amountValue();
  return p.face_value?.amount?.price ?? String(p.denomination || '').split(' ')[0];
}

function selectProduct(p) {
  const before = state.productKey;
  state.product = p;
  state.productKey = productKey(p);
  state.attempt = null;
  setBeneficiaryField({ keep: true });
  const range = isRange(p);
  $('range').hidden = !range;
  setFieldError('amount', null);
  if (range) {
    const r = rangeOf(p);
    const amount = $('amount');
    if (before !== 'range' || amountProblem(p, amount.value)) amount.value = defaultAmount(p);
    $('amount-currency').textContent = r.currency ? `(${r.currency})` : '';
    $('range-hint').textContent = rangeText(r);
  }
  refreshPrice();
}

function setPrice(text, { quote, codes = [] } = {}) {
  const out = $('price');
  out.replaceChildren(text);
  $('price-details').replaceChildren(details(...codes) || '');
  if (quote) out.dataset.coinAmount = quote; else delete out.dataset.coinAmount;
}

function onAmountInput() {
  const p = state.product;
  if (!p || !isRange(p)) return;
  state.attempt = null;
  const why = amountProblem(p, amountValue());
  setFieldError('amount', why);
  clearTimeout(state.priceDebounce);
  clearTimeout(state.priceTimer);
  state.priceSeq++;                       // any quote still on its way is for another amount
  if (why) { setPrice('— (enter a valid amount to see the price)'); $('price').removeAttribute('aria-busy'); return; }
  setPrice('…');
  state.priceDebounce = setTimeout(refreshPrice, 350);
}

async function refreshPrice() {
  clearTimeout(state.priceTimer);
  clearTimeout(state.priceDebounce);
  const p = state.product;
  const fv = faceValue();
  const coin = $('coin').value;
  if (!p || !coin || $('step-product').hidden) return;
  const seq = ++state.priceSeq;
  if (!fv) { setPrice('— (enter a valid amount to see the price)'); return; }
  const out = $('price');
  out.setAttribute('aria-busy', 'true');
  try {
    const q = await api.price({ brandName: state.brand.brand, countryCode: state.country, faceValue: fv, coin });
    if (seq !== state.priceSeq) return;
    setPrice(`${q.coin_amount} ${q.coin || coin}`, { quote: q.coin_amount });
  } catch (e) {
    if (seq !== state.priceSeq) return;
    if (p.coin_amount && p.coin === coin && !isRange(p)) setPrice(`${p.coin_amount} ${coin} (catalog price)`, { quote: p.coin_amount });
    else setPrice(`unavailable right now. ${errText(e)}`, { codes: errCodes(e) });
  } finally {
    if (seq === state.priceSeq) out.removeAttribute('aria-busy');
  }
  // Quotes move with the market: refresh while the buyer looks at them.
  if (seq === state.priceSeq) state.priceTimer = setTimeout(refreshPrice, 20000);
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

/* ---------- beneficiary ---------- */
function kind() { return beneficiaryKind(state.brand, state.product); }

// An example number in the shop's country, for the placeholder (international format).
const PHONE_EXAMPLE = {
  US: '+1 415 555 1234', CA: '+1 416 555 1234', GB: '+44 7400 123456', DE: '+49 1512 3456789',
  FR: '+33 6 12 34 56 78', IT: '+39 312 345 6789', ES: '+34 612 34 56 78', NL: '+31 6 12345678',
  PT: '+351 912 345 678', BR: '+55 11 91234 5678', MX: '+52 1 55 1234 5678', AR: '+54 9 11 1234 5678',
  IN: '+91 98765 43210', PH: '+63 917 123 4567', ID: '+62 812 3456 7890', NG: '+234 802 123 4567',
  TR: '+90 532 123 45 67', PL: '+48 512 345 678', AT: '+43 664 123456', CH: '+41 78 123 45 67',
};

function setBeneficiaryField({ keep = false } = {}) {
  const phone = state.brand && kind() === 'phone';
  const input = $('beneficiary');
  const wasPhone = input.type === 'tel';
  $('beneficiary-label').textContent = phone ? 'Phone number to top up' : 'Email address (your code is sent here)';
  input.type = phone ? 'tel' : 'email';
  input.autocomplete = phone ? 'tel' : 'email';
  const example = PHONE_EXAMPLE[state.country];
  input.placeholder = phone ? (example || '+ country code and number') : 'you@example.com';
  $('beneficiary-hint').textContent = phone
    ? `International format: + and the country code${example ? `, like ${example}` : ''}.` : '';
  $('email-field').hidden = !phone;
  // What the shopper typed for one kind of recipient never lands in the other kind's field.
  if (!keep || wasPhone !== !!phone) {
    input.value = phone ? state.remembered.phone : state.remembered.email;
    $('email').value = state.remembered.receipt || state.remembered.email;
  }
}

/* ---------- problems: all at once, next to their fields, in the shopper's words ---------- */
const FIELD_ERRORS = { beneficiary: 'beneficiary-error', email: 'email-error', coin: 'coin-error', network: 'network-error', amount: 'amount-error' };
const FIELD_NAME = { beneficiary: 'Recipient', email: 'Your email', coin: 'Coin', network: 'Network', amount: 'Amount' };

function setFieldError(field, message, codes = []) {
  const err = $(FIELD_ERRORS[field]);
  const input = field === 'amount' && $('range').hidden ? null : $(field);
  if (!message) {
    err.hidden = true; err.replaceChildren();
    input?.removeAttribute('aria-invalid');
    if (field === 'amount') $('amount-field').removeAttribute('aria-invalid');
    return;
  }
  const line = el('span', { 'data-problem': codes[0] || 'LOCAL' }, message);
  const d = details(...codes);
  if (!err.hidden && err.childNodes.length) err.append(el('br'));
  err.append(line);
  if (d) err.append(d);
  err.hidden = false;
  input?.setAttribute('aria-invalid', 'true');
  if (field === 'amount') $('amount-field').setAttribute('aria-invalid', 'true');
}

function clearProblems() {
  for (const f of Object.keys(FIELD_ERRORS)) setFieldError(f, null);
  $('form-error').hidden = true; $('form-error').replaceChildren();
  $('error-summary').hidden = true; $('error-summary-list').replaceChildren();
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
    case 'AMOUNT_LESS_THEN_MINIMUM_ALLOWED': case 'MAXIMUM_AMOUNT_PER_ORDER_EXCEEDED': case 'NOT_AVAILABLE_PRODUCT': case 'INVALID_FACE_VALUE': return 'amount';
    default: return null;
  }
}

function problemMessage(p, field) {
  if (PROBLEM_TEXT[p.problem]) return PROBLEM_TEXT[p.problem];
  if (field && p.problem === 'INVALID_REQUEST') return `Check the ${FIELD_NAME[field].toLowerCase()}.`;
  return 'This was not accepted. Check the order and try again.';
}
function problemCodes(p) {
  const md = p.moreDetails && typeof p.moreDetails === 'object' ? p.moreDetails : null;
  return [p.problem, md && (md.field || md.reason || md.message)].filter(Boolean);
}

/** Show problems [{field|null, message, codes}] together, with a linked summary at the top. */
function showProblems(list, { title = 'Please correct the following:' } = {}) {
  clearProblems();
  const general = [];
  for (const x of list) {
    if (x.field) setFieldError(x.field, x.message, x.codes);
    else general.push(x);
  }
  $('error-summary-title').textContent = title;
  $('error-summary-list').replaceChildren(...list.map((x) => el('li', { 'data-problem': x.codes?.[0] || 'LOCAL' },
    x.field ? el('a', { href: `#${x.field === 'amount' && $('range').hidden ? 'products' : x.field}`, onclick: (ev) => { ev.preventDefault(); focusField(x.field); } }, `${FIELD_NAME[x.field]}: ${x.message}`) : x.message,
    x.field ? null : details(...(x.codes || [])))));
  $('error-summary').hidden = false;
  $('error-summary').focus();
}
function focusField(field) {
  const target = field === 'amount' && $('range').hidden ? $('products').querySelector('input:checked') : $(field);
  target?.focus();
}
function showUpstreamProblems(problems) {
  showProblems(problems.map((p) => { const field = fieldOf(p); return { field, message: problemMessage(p, field), codes: problemCodes(p) }; }),
    { title: 'The order was not accepted:' });
}

function formError(msg, codes = []) {
  $('form-error').replaceChildren(el('p', { text: msg }), details(...codes) || '');
  $('form-error').hidden = false;
}

const EMAIL_RE = /^[^@\s"<>]+@[^@\s"<>]+\.[A-Za-z]{2,}$/;
const PHONE_RE = /^\+[1-9]\d{6,14}$/;
/** Everything the shopper can fix before asking the store, all at once. */
function localProblems() {
  const out = [];
  const phone = kind() === 'phone';
  const b = $('beneficiary').value.trim();
  const example = PHONE_EXAMPLE[state.country];
  if (!b) out.push({ field: 'beneficiary', message: phone ? 'Enter the phone number to top up.' : 'Enter the email address the code is sent to.' });
  else if (phone && !PHONE_RE.test(b.replace(/[\s().-]/g, ''))) out.push({ field: 'beneficiary', message: `Enter the number with + and the country code${example ? `, like ${example}` : ''}.` });
  else if (!phone && !EMAIL_RE.test(b)) out.push({ field: 'beneficiary', message: 'Enter an email address like name@example.com.' });
  if (phone) {
    const e = $('email').value.trim();
    if (!e) out.push({ field: 'email', message: 'Enter your email address for the receipt.' });
    else if (!EMAIL_RE.test(e)) out.push({ field: 'email', message: 'Enter an email address like name@example.com.' });
  }
  if (!state.product) out.push({ field: 'amount', message: 'Choose an amount.' });
  else if (isRange(state.product)) {
    const why = amountProblem(state.product, amountValue());
    if (why) out.push({ field: 'amount', message: why });
  }
  if (!$('coin').value) out.push({ field: 'coin', message: 'Choose a coin to pay with.' });
  if (!$('network').value) out.push({ field: 'network', message: 'Choose the network you pay on.' });
  return out;
}

/* ---------- checkout ---------- */
function orderInput() {
  const phone = kind() === 'phone';
  const beneficiary = phone ? $('beneficiary').value.trim().replace(/[\s().-]/g, '') : $('beneficiary').value.trim();
  return {
    brand: state.brand, product: state.product, countryCode: state.country,
    beneficiary, email: phone ? $('email').value.trim() : beneficiary,
    coin: $('coin').value, network: $('network').value,
    amount: isRange(state.product) ? amountValue() : undefined, lang: 'en',
    acquisition: { utm_source: 'mod_cryptorefills_demo' },
  };
}

async function placeOrder(ev) {
  ev.preventDefault();
  if (needsLogin(state.brand)) { $('login-note').hidden = false; return; }
  const local = localProblems();
  if (local.length) { showProblems(local); return; }
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
    state.order = order;
    rememberOrder(order);
    await go({ order: order.order_id });
  } catch (e) {
    if (e.detail === 'LOGIN_REQUIRED') {
      state.loginOnly.add(state.brand.brand);
      $('login-note').hidden = false;
      formError(PROBLEM_TEXT.LOGIN_REQUIRED, errCodes(e));
    } else if (e.problems && e.problems.length) showUpstreamProblems(e.problems);
    else if (e.moreDetails && typeof e.moreDetails === 'object' && e.moreDetails.field) showUpstreamProblems([{ problem: e.detail, moreDetails: e.moreDetails }]);
    else if (e.ambiguous && state.attempt) formError('We could not confirm the order. Press “Place order” again to retry safely — you will not be charged twice.', errCodes(e));
    else formError(errText(e), errCodes(e));
  } finally {
    btn.textContent = 'Place order';
    btn.disabled = needsLogin(state.brand);
  }
}

/* ---------- payment + live status ---------- */
async function renderQr(fig, text, title, caption) {
  const svg = text ? await qrSvg(text, { level: 'M', title }).catch(() => null) : null;
  if (!svg) {
    fig.replaceChildren(el('figcaption', { text: 'Copy the code below into your wallet.' }));
    delete fig.dataset.qrText;
    return false;
  }
  fig.innerHTML = svg;
  fig.dataset.qrText = text;
  fig.append(el('figcaption', { text: caption }));
  return true;
}

function summaryLine(order) {
  const d = (order.deliveries || [])[0];
  const x = (d && d.deliverable) || {};
  const what = x.localized_denomination || (x.product_value !== undefined ? `${x.product_value} ${order.currency_code || ''}`.trim() : x.denomination);
  return [x.brand_name, what].filter(Boolean).join(' ');
}

function renderSummary(order) {
  const rows = [];
  for (const d of order.deliveries || []) {
    const x = d.deliverable || {};
    rows.push(['Card', summaryLine({ ...order, deliveries: [d] }) || x.brand_name || '']);
    if (x.beneficiary_account) rows.push([/^\+/.test(x.beneficiary_account) ? 'Top up' : 'Sent to', x.beneficiary_account]);
  }
  if (order.original_price) rows.push(['Price', `${order.original_price} ${order.currency_code || ''}`.trim()]);
  rows.push(['You pay', `${order.coin_amount} ${order.coin}${order.network ? ` on ${order.network}` : ''}`]);
  if (order.user?.email) rows.push(['Receipt to', order.user.email]);
  $('summary').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
}

function createdAtMs(order) {
  const v = order.created_at ?? order.payment_requested_at;
  if (v === undefined || v === null || v === '') return null;
  if (/^\d+(\.\d+)?$/.test(String(v))) { const n = Number(v); return n < 1e12 ? n * 1000 : n; }
  const t = Date.parse(v);
  return Number.isFinite(t) ? t : null;
}
function stopCountdown() { clearInterval(state.countdown); state.countdown = null; }
function startCountdown(order) {
  stopCountdown();
  const created = createdAtMs(order);
  const c = $('countdown');
  if (!created || !AWAITING_PAYMENT.has(order.order_state)) { c.hidden = true; return; }
  const end = created + PAYMENT_WINDOW_MS;
  const tick = () => {
    const left = end - Date.now();
    c.hidden = false;
    if (left <= 0) {
      c.textContent = 'The payment window has closed. Do not send a payment now.';
      c.dataset.late = 'true';
      $('pay-box').hidden = true;
      stopCountdown();
      return;
    }
    const s = Math.ceil(left / 1000);
    c.dataset.late = String(s < 300);
    c.textContent = `Time left to pay: ${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
    c.dataset.secondsLeft = String(s);
  };
  tick();
  state.countdown = setInterval(tick, 1000);
}

async function showOrder(id, { focus = true } = {}) {
  const same = state.order && state.order.order_id === id && state.watch && state.watch.id === id;
  show('step-pay');
  if (focus) focusHeading('pay-title');
  if (same) { renderActiveBanner(); return; }
  if (state.watch) { state.watch.unwatch(); state.watch = null; }
  $('timeline').replaceChildren();
  $('delivered').hidden = true;
  $('expired').hidden = true;
  $('order-status').dataset.state = '';
  delete $('order-status').dataset.terminal;
  $('order-status').textContent = 'Loading your order…';
  $('order-id').textContent = id;
  $('summary').replaceChildren();
  $('pay-box').hidden = true;
  $('countdown').hidden = true;
  let order = state.order && state.order.order_id === id ? state.order : null;
  if (!order) {
    try {
      order = await api.getOrder(id);
    } catch (e) {
      if (here().order !== id) return;
      $('order-status').replaceChildren(e.status === 404 ? 'This order was not found. Check the link, or start a new order.' : `Your order could not be loaded. ${errText(e)}`, details(...errCodes(e)) || '');
      connection({ transport: 'failed' });
      return;
    }
    if (here().order !== id) return;
  }
  state.order = order;
  $('pay-amount').textContent = `${order.coin_amount} ${order.coin}`;
  $('pay-network').textContent = order.network || '';
  $('pay-address').textContent = order.wallet_address || '';
  $('pay-address-label').textContent = /^ln/i.test(order.wallet_address || '') ? 'Lightning invoice' : 'To the address';
  renderSummary(order);
  await renderQr($('qr'), order.qr_text || order.wallet_address, `QR code to pay ${order.coin_amount} ${order.coin}`, 'Scan with your wallet');
  updateOrder(order);
  if (!isTerminalState(order.order_state)) {
    const unwatch = api.watchOrder(order.order_id, updateOrder, { ...watchTuning, onStatus: connection, onError: (e) => console.warn('order watch:', e.detail, e) });
    state.watch = { id: order.order_id, unwatch };
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
  if (state.order && order.order_id !== state.order.order_id) return;
  state.order = order;
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
  const awaiting = AWAITING_PAYMENT.has(order.order_state);
  $('pay-box').hidden = !awaiting;
  $('pay-title').textContent = awaiting ? 'Pay for your order' : 'Your order';
  if (awaiting) startCountdown(order); else { stopCountdown(); $('countdown').hidden = true; }
  $('expired').hidden = order.order_state !== 'Expired';
  if (order.order_state === 'Done') showDelivered(order);
  if (keptOrder()?.id === order.order_id || !isTerminalState(order.order_state)) rememberOrder(order);
}

function showDelivered(order) {
  const items = (order.deliveries || []).map((d) => {
    const x = d.deliverable || {};
    const code = x.pin_code;
    const isUrl = typeof code === 'string' && /^https?:\/\//.test(code);
    const isLpa = typeof code === 'string' && /^LPA:/i.test(code);
    const fig = isLpa ? el('figure', { class: 'qr esim-qr', id: 'esim-qr' }) : null;
    if (fig) renderQr(fig, code, 'QR code of your eSIM', 'Scan with your phone: Settings › Mobile data › Add eSIM');
    return el('div', { class: 'delivery' },
      el('p', { text: `${x.brand_name || ''} ${x.localized_denomination || x.denomination || ''}`.trim() }),
      fig,
      code ? (isUrl ? el('p', {}, el('a', { href: code, rel: 'noopener', target: '_blank', text: 'Redeem your card' }))
        : el('p', {}, isLpa ? 'Activation code: ' : 'Code: ', el('span', { class: 'code', 'data-testid': 'pin-code', text: code }))) : el('p', { text: `Sent to ${x.beneficiary_account || 'the recipient'}.` }),
      x.pin_serial ? el('p', { text: `Serial: ${x.pin_serial}` }) : null,
      x.redeem_instructions ? el('p', { class: 'muted', text: x.redeem_instructions }) : null);
  });
  $('delivered-items').replaceChildren(...items);
  $('delivered').hidden = false;
}

/* ---------- wiring ---------- */
async function main() {
  $('order-form').addEventListener('submit', placeOrder);
  $('back').addEventListener('click', () => go({ country: state.country }));
  $('new-order').addEventListener('click', () => {
    if (state.order && isTerminalState(state.order.order_state)) forgetOrder();
    go({ country: state.country });
  });
  $('retry-order').addEventListener('click', () => {
    forgetOrder();
    const name = (state.order?.deliveries || [])[0]?.deliverable?.brand_name;
    go({ country: state.country, brand: name || '' });
  });
  $('active-order-return').addEventListener('click', () => { const kept = keptOrder(); if (kept) go({ order: kept.id }); });
  $('copy-address').addEventListener('click', async () => {
    try { await navigator.clipboard.writeText($('pay-address').textContent); $('copy-address').textContent = 'Copied'; } catch { $('copy-address').textContent = 'Select and copy'; }
  });
  $('country').addEventListener('change', () => go({ country: $('country').value }, { focus: false }));
  $('coin').addEventListener('change', () => { renderNetworks(); state.attempt = null; setFieldError('coin', null); if (state.brand) loadProducts(); });
  $('network').addEventListener('change', () => { state.attempt = null; setFieldError('network', null); });
  $('amount').addEventListener('input', onAmountInput);
  $('beneficiary').addEventListener('input', () => {
    setFieldError('beneficiary', null);
    state.remembered[$('beneficiary').type === 'tel' ? 'phone' : 'email'] = $('beneficiary').value;
  });
  $('email').addEventListener('input', () => { setFieldError('email', null); state.remembered.receipt = $('email').value; });
  window.addEventListener('popstate', () => route());

  const vias = api.paymentVias().then((v) => { state.rails = paymentRails(v); renderCoins(); })
    .catch((e) => notice(`Payment methods could not be loaded. ${errText(e)}`));
  // No country named: the module resolves the visitor's (GeoIP env, then its default) and the
  // catalog says which one it used.
  const want = here();
  let country = want.country;
  if (!want.order) {
    try { country = (await loadCatalog(country)).country_code || country; } catch { /* shown */ }
  }
  await Promise.all([loadCountries(country || state.country || 'US'), vias]);
  await route({ focus: !!(want.brand || want.order) });
  renderActiveBanner();
  document.body.dataset.ready = 'true';
}

main();
