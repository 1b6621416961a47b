// The storefront as a shopper meets it: the order lives in the address (reload, back, forward,
// a shared link, another country), QR codes a wallet and a phone can read, the amount checked as
// it is typed, every step readable by axe-core and narrow enough for a phone.  Screenshots of
// every step, desktop and phone, go to t/artifacts/.
import { test, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { useBrowser, openPage, saveScreenshot, apiJson } from './lib/harness.mjs';
import * as sandbox from './lib/sandbox.mjs';
import { pickBrand, pickRangeBrand, pickCategoryBrand, openDemo, openBrand, placeOrder, waitForState, orderIdOf } from './lib/flow.mjs';
import { decodeQr, assertAccessible, assertNoSideScroll } from './lib/check.mjs';

const PHONES = [{ width: 390, height: 844 }, { width: 360, height: 740 }];
const DESKTOP = { width: 1200, height: 900 };

const ctx = await useBrowser();
// Orders move only when a test says so.
beforeEach(async () => { await sandbox.reset(); await sandbox.autoAdvance(0); });
after(async () => { await sandbox.reset().catch(() => {}); });

/** Desktop and phone screenshots of a step, axe-core on it, and no sideways scroll on phones. */
async function checkStep(page, name) {
  await assertAccessible(page, name);
  await saveScreenshot(page, `step-${name}.png`);
  for (const vp of PHONES) {
    await page.setViewportSize(vp);
    await assertNoSideScroll(page, `${name} at ${vp.width}×${vp.height}`);
    if (vp.width === 390) {
      await assertAccessible(page, `${name} (phone)`);
      await saveScreenshot(page, `step-${name}-phone.png`);
    }
  }
  await page.setViewportSize(DESKTOP);
}

const payStepShown = (page) => page.waitForSelector('#step-pay:not([hidden]) #summary dd');

/** A fresh page that ordered a US gift card and shows its payment step: {page, problems, brand, id}. */
async function orderGiftCard(t, { coin, network } = {}) {
  const { page, problems } = await openPage(ctx.browser.context, t);
  const { brand } = await pickBrand('US', 'email');
  await openDemo(page, 'country=US');
  await openBrand(page, brand.brand);
  if (coin) {
    await page.selectOption('#coin', coin);
    await page.selectOption('#network', network);
    await page.waitForFunction((c) => document.getElementById('price').textContent.includes(c), coin);
  }
  await placeOrder(page, { beneficiary: 'buyer@example.com' });
  await payStepShown(page);
  return { page, problems, brand, id: await orderIdOf(page) };
}

test('the order lives in the address: reload, back, forward, a shared link, another country', { timeout: 120000 }, async (t) => {
  if (ctx.skip) return t.skip(ctx.skip);
  const { page, problems } = await openPage(ctx.browser.context, t);
  const { brand, range } = await pickRangeBrand('US');

  await openDemo(page, 'country=US');
  await checkStep(page, 'brands');
  // Keyboard: the first Tab offers the skip link, which leads straight to the first brand.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('href')), '#brand-list', 'the first Tab stop skips to the brands');
  await page.keyboard.press('Enter');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.classList.contains('brand')), true, 'the next Tab is on a brand');

  await openBrand(page, brand.brand);
  assert.equal(new URL(page.url()).searchParams.get('brand'), brand.brand, 'the brand is in the address');
  await checkStep(page, 'product');

  await placeOrder(page, { beneficiary: 'buyer@example.com' });
  await payStepShown(page);
  const id = await orderIdOf(page);
  assert.match(id || '', /^[A-Za-z0-9_-]+$/, 'the order is in the address');
  assert.equal((await page.textContent('#order-id')).trim(), id);
  const summary = await page.textContent('#summary');
  assert.ok(summary.includes(brand.brand), `the summary names the card: ${summary}`);
  assert.ok(summary.includes('buyer@example.com'), 'and the recipient');
  assert.match(await page.textContent('#countdown'), /^Time left to pay: (30:00|29:\d\d)$/, 'the 30-minute countdown runs');
  await page.waitForSelector('#qr svg');
  await checkStep(page, 'pay');

  // Reload: the same order, its status followed live again.
  await page.reload();
  await payStepShown(page);
  assert.equal(await orderIdOf(page), id);
  assert.equal((await page.textContent('#order-id')).trim(), id, 'reload restores the order');
  await waitForState(page, 'WaitingForPayment');
  await page.waitForSelector('#connection[data-transport="open"]');
  await sandbox.advance(id);
  await waitForState(page, 'WaitingForDelivery');
  assert.equal(await page.locator('#pay-box').isVisible(), false, 'the payment QR and address go once paid');
  assert.equal(await page.locator('#countdown').isVisible(), false, 'and so does the countdown');

  // Back to the amount step, forward to the order.
  await page.goBack();
  await page.waitForSelector('#step-product:not([hidden])');
  assert.equal(await page.textContent('#product-title'), brand.brand, 'back: the brand step');
  await page.goBack();
  await page.waitForSelector('#step-brands:not([hidden])');
  await page.goForward();
  await page.waitForSelector('#step-product:not([hidden])');
  await page.goForward();
  await payStepShown(page);
  assert.equal((await page.textContent('#order-id')).trim(), id, 'forward: the order again');
  await waitForState(page, 'WaitingForDelivery');

  // Another country while the order runs: the brand list, with a way back to the order.
  const answered = page.waitForResponse((r) => r.url().includes('brands?country_code=DE'));
  await page.selectOption('#country', 'DE');
  await answered;
  await page.waitForSelector('#step-brands:not([hidden]) #brands .brand');
  await page.waitForSelector('#active-order:not([hidden])');
  assert.match(await page.textContent('#active-order'), /in progress/);
  await checkStep(page, 'brands-with-order');
  await page.getByRole('button', { name: 'Return to your order' }).click();
  await payStepShown(page);
  assert.equal(await orderIdOf(page), id, 'the banner leads back to the order');

  // A shared link, in a fresh tab: same order, same live status, through to Done.
  const other = await openPage(ctx.browser.context, t);
  await other.page.goto(page.url());
  await other.page.waitForSelector('#step-pay:not([hidden]) #summary dd');
  await waitForState(other.page, 'WaitingForDelivery');
  await other.page.waitForSelector('#connection[data-transport="open"]');
  await sandbox.advance(id);
  await waitForState(other.page, 'Done');
  await waitForState(page, 'Done');
  await page.waitForSelector('#delivered:not([hidden])');
  await checkStep(page, 'done');

  // A new order starts from the brand list, focus on its heading, no order banner.
  await page.getByRole('button', { name: 'Start a new order' }).click();
  await page.waitForSelector('#step-brands:not([hidden])');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'brands-title', 'focus lands on the brand list heading');
  assert.equal(await page.locator('#active-order').isVisible(), false, 'a finished order is not offered again');
  assert.ok(range, 'the brand has a range product');
  assert.deepEqual(problems, []);
  assert.deepEqual(other.problems, []);
});

test('Lightning: the invoice is a QR code a wallet can read', { timeout: 60000 }, async (t) => {
  if (ctx.skip) return t.skip(ctx.skip);
  const vias = await apiJson('payment_vias');
  if (!JSON.stringify(vias.body).includes('"Lightning"')) return t.skip('the sandbox offers no Lightning');
  const { page, problems, id } = await orderGiftCard(t, { coin: 'BTC', network: 'Lightning' });
  const { order } = await sandbox.order(id);
  assert.match(order.qr_text, /^lightning:lnbc/i);
  assert.ok(order.qr_text.length > 213, `a long payload (${order.qr_text.length} characters)`);
  const fig = page.locator('#qr');
  await fig.locator('svg').waitFor();
  assert.equal(await decodeQr(fig), order.qr_text, 'the QR decodes to the invoice');
  assert.equal((await page.textContent('#pay-address')).trim(), order.wallet_address);
  await saveScreenshot(page, 'step-pay-lightning.png');
  assert.deepEqual(problems, []);
});

test('Solana: the QR decodes to the solana: payment URI', { timeout: 60000 }, async (t) => {
  if (ctx.skip) return t.skip(ctx.skip);
  const { page, problems, id } = await orderGiftCard(t);
  const { order } = await sandbox.order(id);
  await page.locator('#qr svg').waitFor();
  assert.equal(await decodeQr(page.locator('#qr')), order.qr_text);
  assert.match(order.qr_text, /^solana:/);
  assert.deepEqual(problems, []);
});

test('eSIM: the activation code is its own QR code; the payment QR is gone', { timeout: 60000 }, async (t) => {
  if (ctx.skip) return t.skip(ctx.skip);
  const { page, problems } = await openPage(ctx.browser.context, t);
  const esim = await pickCategoryBrand('US', 'e-sim');
  await openDemo(page, 'country=US');
  await openBrand(page, esim.brand);
  assert.equal(await page.getAttribute('#beneficiary', 'type'), 'email', 'an eSIM goes to an email address');
  await placeOrder(page, { beneficiary: 'traveller@example.com' });
  await payStepShown(page);
  const id = await orderIdOf(page);
  await sandbox.setState(id, 'Done');
  await waitForState(page, 'Done');
  const code = (await page.textContent('[data-testid="pin-code"]')).trim();
  assert.match(code, /^LPA:1\$/, 'an LPA activation code');
  const fig = page.locator('#esim-qr');
  await fig.locator('svg').waitFor();
  assert.equal(await decodeQr(fig), code, 'the eSIM QR decodes to the activation code');
  assert.equal(await page.locator('#pay-box').isVisible(), false, 'no payment QR once paid');
  assert.equal(await page.locator('#qr svg').isVisible(), false);
  await checkStep(page, 'done-esim');
  assert.deepEqual(problems, []);
});

test('the amount is checked as it is typed, priced while typing, kept across coins', { timeout: 60000 }, async (t) => {
  if (ctx.skip) return t.skip(ctx.skip);
  const { page, problems, apiCalls } = await openPage(ctx.browser.context, t);
  const { brand, range } = await pickRangeBrand('US');
  const min = Number(range.range?.min ?? range.face_value.amount.min);
  const max = Number(range.range?.max ?? range.face_value.amount.max);
  await openDemo(page, 'country=US');
  await openBrand(page, brand.brand);
  await page.locator('#products input[value]').first().waitFor();
  const def = Number(await page.inputValue('#amount'));
  assert.ok(def >= min && def < max, `the default (${def}) is not the maximum (${max})`);
  assert.match(await page.textContent('#range-hint'), new RegExp(`^Enter ${min}–${max} \\w+ in steps of 1\\.$`));

  const orderPosts = () => apiCalls.filter((c) => c.method === 'POST').length;
  const cases = [
    [String(max + 1), /largest amount is/],
    [String(Math.max(0, min - 1)), /smallest amount is/],
    [`${min + 7}.5`, /steps of 1/],
    ['', /Enter an amount/],
    ['ten', /Enter a number/],
  ];
  for (const [value, message] of cases) {
    await page.fill('#amount', value);
    await page.waitForSelector('#amount-error:not([hidden])');
    assert.match(await page.textContent('#amount-error'), message, `"${value}" is refused at the field`);
    assert.equal(await page.getAttribute('#amount', 'aria-invalid'), 'true');
    assert.doesNotMatch(await page.textContent('#price'), /\d/, `no stale price for "${value}"`);
    await placeOrder(page, { beneficiary: 'buyer@example.com' });
    await page.waitForSelector('#error-summary:not([hidden])');
    assert.match(await page.textContent('#error-summary'), /Amount:/);
    assert.equal(orderPosts(), 0, `"${value}": no validation, no order`);
  }
  await checkStep(page, 'product-errors');

  // A good amount: its own price, fetched while typing (no blur), for that face value.
  const good = String(min + 2);
  await page.locator('#amount').fill(good);
  await page.waitForFunction(() => /\d/.test(document.getElementById('price').textContent));
  assert.equal(await page.locator('#amount-error').isVisible(), false);
  assert.ok(apiCalls.some((c) => c.url.includes('/products/price?') && c.url.includes(`face_value=${good}`)), 'priced while typing');

  // Another coin keeps the amount.
  await page.selectOption('#coin', 'BTC');
  await page.waitForFunction(() => /BTC/.test(document.getElementById('price').textContent));
  assert.equal(await page.inputValue('#amount'), good, 'the amount survives a change of coin');
  assert.deepEqual(problems, []);
});

test('every problem at once, in the shopper\'s words; login-only cards marked before checkout', { timeout: 60000 }, async (t) => {
  if (ctx.skip) return t.skip(ctx.skip);
  const { page, problems, apiCalls } = await openPage(ctx.browser.context, t);
  let phoneBrand;
  try { ({ brand: phoneBrand } = await pickBrand('DE', 'phone')); } catch (e) { return t.skip(String(e.message)); }
  await openDemo(page, 'country=DE');
  await openBrand(page, phoneBrand.brand);
  assert.match(await page.getAttribute('#beneficiary', 'placeholder'), /^\+49/, 'a German example number');
  await page.getByRole('button', { name: 'Place order' }).click();
  await page.waitForSelector('#error-summary:not([hidden])');
  for (const f of ['beneficiary', 'email']) {
    assert.equal(await page.locator(`#${f}-error`).isVisible(), true, `#${f} has its message`);
    assert.equal(await page.getAttribute(`#${f}`, 'aria-invalid'), 'true');
  }
  const text = await page.textContent('#step-product');
  assert.doesNotMatch(text, /must not be empty|INVALID_REQUEST|HTTP \d/, 'no developer wording');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'error-summary', 'focus on the list of problems');
  assert.ok(!apiCalls.some((c) => c.method === 'POST'), 'nothing sent');
  await checkStep(page, 'product-missing');

  // The store's own refusal: at its field, its code only under Details.
  await placeOrder(page, { beneficiary: '+4915123456789', email: 'buyer@mailinator.com' });
  await page.waitForSelector('#email-error:not([hidden])');
  assert.match(await page.textContent('#email-error'), /not accepted/);
  assert.equal(await page.locator('#email-error details').getAttribute('open'), null, 'the code is behind a closed Details');
  assert.match(await page.textContent('#email-error details'), /INVALID_EMAIL_DOMAIN/);

  // The phone number typed for the top-up never lands in an eSIM's email field.
  const esim = await pickCategoryBrand('DE', 'e-sim');
  await page.locator('#back').click();
  await page.locator(`#brands button[data-brand="${esim.brand}"]`).click();
  await page.waitForFunction((b) => document.getElementById('product-title').textContent === b, esim.brand);
  assert.equal(await page.getAttribute('#beneficiary', 'type'), 'email');
  assert.doesNotMatch(await page.inputValue('#beneficiary'), /\+49/, 'no phone number in the email field');

  // A login-only card says so on the brand list and on its page, and cannot be ordered.
  const login = await pickCategoryBrand('US', 'prepaid-cards');
  await openDemo(page, 'country=US');
  await page.waitForSelector(`#brands button[data-brand="${login.brand}"] .login`);
  await page.locator(`#brands button[data-brand="${login.brand}"]`).click();
  await page.waitForSelector('#login-note:not([hidden])');
  assert.equal(await page.locator('#place-order').isDisabled(), true);
  assert.deepEqual(problems, []);
});

test('past 30 minutes and once expired, the order says so and offers the same card again', { timeout: 60000 }, async (t) => {
  if (ctx.skip) return t.skip(ctx.skip);
  const { page, problems, brand, id } = await orderGiftCard(t);
  // The window runs out before the upstream says Expired: the page stops asking for coins.
  await sandbox.setState(id, 'WaitingForPayment', { created_at: String(Math.floor(Date.now() / 1000) - 31 * 60) });
  await page.waitForFunction(() => /window has closed/.test(document.getElementById('countdown').textContent));
  assert.equal(await page.locator('#pay-box').isVisible(), false, 'no QR or address after 30 minutes');
  await sandbox.setState(id, 'Expired');
  await waitForState(page, 'Expired');
  await page.waitForSelector('#expired:not([hidden])');
  assert.equal(await page.locator('#pay-box').isVisible(), false, 'no way to pay an expired order');
  await checkStep(page, 'expired');
  await page.getByRole('button', { name: 'Order the same card again' }).click();
  await page.waitForSelector('#step-product:not([hidden])');
  assert.equal(await page.textContent('#product-title'), brand.brand);
  assert.deepEqual(problems, []);
});
