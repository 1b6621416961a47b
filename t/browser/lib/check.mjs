// What the storefront tests look at beyond the DOM: QR codes as pixels, accessibility by
// axe-core, the page's width.  jsqr, pngjs and axe-core are test-only npm packages.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import jsQR from 'jsqr';
import { PNG } from 'pngjs';

const require = createRequire(import.meta.url);

/** Decode the QR code drawn in `locator` from a screenshot of it, as a phone camera would. */
export async function decodeQr(locator) {
  const png = PNG.sync.read(await locator.screenshot());
  const code = jsQR(new Uint8ClampedArray(png.data.buffer, png.data.byteOffset, png.data.length), png.width, png.height);
  assert.ok(code, 'a QR code was found in the screenshot');
  return code.data;
}

/** Run axe-core on the page; fails on any serious or critical violation, naming the nodes. */
export async function assertAccessible(page, step) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) {
    await page.addScriptTag({ path: require.resolve('axe-core/axe.min.js') });
  }
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`), [],
    `axe-core: no serious or critical violation on the ${step} step`);
  return result.violations;
}

/** The page scrolls only vertically: nothing is wider than the viewport. */
export async function assertNoSideScroll(page, step) {
  const { scrollWidth, innerWidth, widest } = await page.evaluate(() => {
    const w = window.innerWidth;
    let widest = '';
    for (const e of document.querySelectorAll('body *')) {
      const r = e.getBoundingClientRect();
      if (r.width && r.right > w + 0.5 && !e.closest('[hidden]')) { widest = `${e.tagName.toLowerCase()}#${e.id}.${e.className} right=${Math.round(r.right)}`; break; }
    }
    return { scrollWidth: document.documentElement.scrollWidth, innerWidth: w, widest };
  });
  assert.ok(scrollWidth <= innerWidth, `${step}: page ${scrollWidth} px wide in a ${innerWidth} px viewport (${widest})`);
}
