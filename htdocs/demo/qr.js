// SPDX-License-Identifier: Apache-2.0
// QR codes for the demo, drawn by qrcode-generator (npm, MIT, Kazuhiko Arase), which
// scripts/vendor-js copies from node_modules into vendor/ of the served tree.  It encodes
// up to version 40, so a 232-character Lightning invoice or an eSIM LPA: code fits.
// Loaded on first use: a tree served without the library still shows every payload as text.

let lib = null;

/** The encoder, or null when vendor/qrcode-generator.mjs is not served. */
export function loadQr() {
  lib ||= import('./vendor/qrcode-generator.mjs').then((m) => m.default || m.qrcode, () => null);
  return lib;
}

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

/**
 * An accessible SVG of `text` (bytes as given: ASCII payloads), error correction `level`,
 * a 4-module quiet zone.  Resolves to null when the library is missing.
 */
export async function qrSvg(text, { level = 'M', title = 'QR code' } = {}) {
  const qrcode = await loadQr();
  if (!qrcode) return null;
  const qr = qrcode(0, level);
  qr.addData(String(text), 'Byte');
  qr.make();
  const n = qr.getModuleCount();
  const q = 4;
  let d = '';
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) if (qr.isDark(r, c)) d += `M${c + q} ${r + q}h1v1h-1z`;
  }
  const size = n + 2 * q;
  const version = (n - 17) / 4;
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${size} ${size}" role="img" aria-label="${esc(title)}" `
    + `data-qr-version="${version}" shape-rendering="crispEdges"><title>${esc(title)}</title>`
    + `<rect width="${size}" height="${size}" fill="#fff"/><path fill="#000" d="${d}"/></svg>`;
}
