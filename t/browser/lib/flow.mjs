// SPDX-License-Identifier: Apache-2.0
// Steps of the demo's purchase flow, shared by the tests.
import assert from 'node:assert/strict';
import { apiJson, demoUrl, waitReady } from './harness.mjs';

/** A brand of `kind` ('email' or 'phone' beneficiary) in `country` that has fixed products. */
export async function pickBrand(country, want = 'email') {
  const cat = await apiJson(`brands?country_code=${country}`);
  assert.equal(cat.status, 200, `brands?country_code=${country} answered ${cat.status}`);
  const brands = cat.body.all_brands && cat.body.all_brands.length
    ? cat.body.all_brands
    : (cat.body.categories || []).flatMap((c) => c.brands || []);
  for (const b of brands) {
    if (b.is_out_of_stock) continue;
    const phone = b.kind === 'mobile_recharge' && b.category !== 'e-sim';
    if ((want === 'phone') !== phone) continue;
    if (want === 'email' && b.kind !== 'giftcard') continue;
    const p = await apiJson(`products/country/${country}?family_name=${encodeURIComponent(b.family || b.brand)}&coin=USDC&lang=en`);
    const fam = Array.isArray(p.body) ? p.body.find((f) => f.brand === b.brand) || p.body[0] : null;
    if (fam && (fam.products || []).length) return { brand: b, family: fam };
  }
  throw new Error(`no ${want} brand with products in the ${country} catalog of the sandbox`);
}

/** Open the demo and wait for its start-up. */
export async function openDemo(page, query = '') {
  await page.goto(demoUrl(query), { waitUntil: 'domcontentloaded' });
  await waitReady(page);
}

/** Choose a country in the header select and wait for its catalog. */
export async function chooseCountry(page, code) {
  const current = await page.inputValue('#country');
  if (current !== code) {
    const answered = page.waitForResponse((r) => r.url().includes(`brands?country_code=${code}`));
    await page.selectOption('#country', code);
    await answered;
  }
  await page.waitForSelector('#brands .brand');
}

/** Open a brand from the grid and wait for its amounts and first price. */
export async function openBrand(page, brandName) {
  await page.locator(`#brands button[data-brand="${brandName.replace(/"/g, '\\"')}"]`).click();
  await page.waitForSelector('#step-product:not([hidden])');
  await page.waitForSelector('#products input[type=radio]');
  await page.waitForFunction(() => /\d/.test(document.getElementById('price').textContent));
}

/** Fill the beneficiary and place the order; returns after the click. */
export async function placeOrder(page, { beneficiary, email } = {}) {
  await page.getByLabel(/Email address|Phone number/).fill(beneficiary);
  if (email) await page.getByLabel('Your email (for the receipt)').fill(email);
  await page.getByRole('button', { name: 'Place order' }).click();
}

/** Wait for the payment step and the terminal state; returns the states the page showed. */
export async function waitForState(page, state, timeout = 60000) {
  await page.waitForSelector(`#order-status[data-state="${state}"]`, { timeout });
  return page.$$eval('#timeline li', (lis) => lis.map((li) => li.dataset.state));
}

/** A brand of `country` with a range product (any amount between min and max). */
export async function pickRangeBrand(country) {
  const cat = await apiJson(`brands?country_code=${country}`);
  for (const b of cat.body.all_brands || []) {
    if (b.is_out_of_stock || b.kind !== 'giftcard' || ['prepaid-cards', 'e-money'].includes(b.category)) continue;
    const p = await apiJson(`products/country/${country}?family_name=${encodeURIComponent(b.family || b.brand)}&coin=USDC&lang=en`);
    const fam = Array.isArray(p.body) ? p.body.find((f) => f.brand === b.brand) : null;
    const range = fam && (fam.products || []).find((x) => x.is_dynamic || x.face_value?.amount?.type === 'range');
    if (range) return { brand: b, range };
  }
  throw new Error(`no brand with a range product in the ${country} catalog of the sandbox`);
}

/** The first in-stock brand of a category (`e-sim`, `prepaid-cards` …) in `country`. */
export async function pickCategoryBrand(country, category) {
  const cat = await apiJson(`brands?country_code=${country}`);
  const c = (cat.body.categories || []).find((x) => x.category === category);
  const b = c && (c.brands || []).find((x) => !x.is_out_of_stock);
  if (!b) throw new Error(`no ${category} brand in the ${country} catalog of the sandbox`);
  return b;
}

/** The order id the page shows (from its address). */
export async function orderIdOf(page) {
  return new URL(page.url()).searchParams.get('order');
}
