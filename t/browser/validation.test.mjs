// SPDX-License-Identifier: Apache-2.0
// Problems are shown next to the field they name, all at once, and no order is placed: the ones the
// page can see itself before asking the module, and the ones the module and upstream find.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { env, browserUnavailable, launch, openPage } from './lib/harness.mjs';
import * as sandbox from './lib/sandbox.mjs';
import { pickBrand, openDemo, chooseCountry, openBrand, placeOrder } from './lib/flow.mjs';

let browser;
let skip = null;
before(async () => {
  env();
  skip = await browserUnavailable();
  if (!skip) browser = await launch();
  await sandbox.reset();
});
after(async () => { if (browser) await browser.close(); });

test('an invalid beneficiary is shown at the beneficiary field', { timeout: 60000 }, async (t) => {
  if (skip) return t.skip(skip);
  const { page, problems, apiCalls } = await openPage(browser.context, t);
  const { brand } = await pickBrand('US', 'email');
  await openDemo(page, 'country=US');
  await chooseCountry(page, 'US');
  await openBrand(page, brand.brand);

  await placeOrder(page, { beneficiary: 'not-an-email' });
  const error = page.locator('#beneficiary-error');
  await error.waitFor({ state: 'visible' });
  assert.match(await error.textContent(), /Enter an email address like name@example\.com/);
  assert.equal(await page.getAttribute('#beneficiary', 'aria-invalid'), 'true');
  assert.match(await page.getAttribute('#beneficiary', 'aria-describedby'), /beneficiary-error/, 'the message is tied to the input');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'error-summary', 'focus goes to the list of problems');
  await page.locator('#error-summary a').first().click();
  assert.equal(await page.evaluate(() => document.activeElement.id), 'beneficiary', 'whose link leads to the field');
  for (const other of ['email-error', 'coin-error', 'network-error', 'amount-error']) {
    assert.equal(await page.locator(`#${other}`).isVisible(), false, `#${other} stays hidden`);
  }
  assert.equal(await page.locator('#step-pay').isVisible(), false, 'no payment step');
  assert.ok(!apiCalls.some((c) => c.method === 'POST'), 'neither validated nor created: the page saw it itself');

  // Correcting the field clears the mark; the flow goes on.
  await page.getByLabel(/Email address/).fill('buyer@example.com');
  assert.equal(await page.getAttribute('#beneficiary', 'aria-invalid'), null);
  await page.getByRole('button', { name: 'Place order' }).click();
  await page.waitForSelector('#step-pay:not([hidden])');
  assert.deepEqual(problems, []);
});

test('a top-up asks for a phone number and shows a bad one at that field', { timeout: 60000 }, async (t) => {
  if (skip) return t.skip(skip);
  let picked;
  try { picked = await pickBrand('US', 'phone'); } catch (e) { return t.skip(String(e.message)); }
  const { page, problems } = await openPage(browser.context, t);
  await openDemo(page, 'country=US');
  await chooseCountry(page, 'US');
  await openBrand(page, picked.brand.brand);
  assert.equal(await page.getAttribute('#beneficiary', 'type'), 'tel');
  assert.equal(await page.locator('#email').isVisible(), true, 'the buyer\'s email is asked separately');
  await placeOrder(page, { beneficiary: '12345', email: 'buyer@example.com' });
  await page.locator('#beneficiary-error').waitFor({ state: 'visible' });
  assert.match(await page.textContent('#beneficiary-error'), /with \+ and the country code/);
  assert.equal(await page.locator('#email-error').isVisible(), false);

  // What only the upstream knows: its problem at the field, the code behind Details.
  await placeOrder(page, { beneficiary: '+14155551234', email: 'problem+invalid_beneficiary_account@example.com' });
  await page.waitForSelector('#beneficiary-error:not([hidden]) [data-problem="INVALID_BENEFICIARY_ACCOUNT"]');
  assert.match(await page.textContent('#beneficiary-error'), /not accepted for this product/);
  assert.equal(await page.locator('#step-pay').isVisible(), false, 'no payment step');
  assert.deepEqual(problems, []);
});
