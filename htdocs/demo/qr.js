// SPDX-License-Identifier: Apache-2.0
// qr.js — a small QR Code encoder (ISO/IEC 18004), written for this demo.
// Byte mode only, error correction L or M, versions 1–10 (up to 271 bytes at L, 213 at M):
// plenty for a wallet address or a payment URI.  qrMatrix() gives the module grid,
// qrSvg() an SVG string with a 4-module quiet zone.

// Per version: [total codewords, [ec per block, blocks, data per block, blocks, data per block] for L, for M]
const VERSIONS = [
  null,
  [26, [7, 1, 19, 0, 0], [10, 1, 16, 0, 0]],
  [44, [10, 1, 34, 0, 0], [16, 1, 28, 0, 0]],
  [70, [15, 1, 55, 0, 0], [26, 1, 44, 0, 0]],
  [100, [20, 1, 80, 0, 0], [18, 2, 32, 0, 0]],
  [134, [26, 1, 108, 0, 0], [24, 2, 43, 0, 0]],
  [172, [18, 2, 68, 0, 0], [16, 4, 27, 0, 0]],
  [196, [20, 2, 78, 0, 0], [18, 4, 31, 0, 0]],
  [242, [24, 2, 97, 0, 0], [22, 2, 38, 2, 39]],
  [292, [30, 2, 116, 0, 0], [22, 3, 36, 2, 37]],
  [346, [18, 2, 68, 2, 69], [26, 4, 43, 1, 44]],
];
const ALIGN = [null, [], [6, 18], [6, 22], [6, 26], [6, 30], [6, 34], [6, 22, 38], [6, 24, 42], [6, 26, 46], [6, 28, 50]];
const LEVEL = { L: { idx: 1, bits: 1 }, M: { idx: 2, bits: 0 } };

// GF(256) with the QR polynomial x^8 + x^4 + x^3 + x^2 + 1.
const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
(() => {
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x; LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= 0x11d;
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255];
})();
const gmul = (a, b) => (a && b ? EXP[LOG[a] + LOG[b]] : 0);

// Generator polynomial of degree n, coefficients highest first, leading 1 dropped.
function generator(n) {
  let g = [1];
  for (let i = 0; i < n; i++) {
    const next = new Array(g.length + 1).fill(0);
    for (let j = 0; j < g.length; j++) {
      next[j] ^= g[j];
      next[j + 1] ^= gmul(g[j], EXP[i]);
    }
    g = next;
  }
  return g.slice(1);
}

function ecCodewords(data, n) {
  const gen = generator(n);
  const rem = new Array(n).fill(0);
  for (const byte of data) {
    const f = byte ^ rem[0];
    rem.shift(); rem.push(0);
    for (let i = 0; i < n; i++) rem[i] ^= gmul(gen[i], f);
  }
  return rem;
}

function utf8(text) {
  return Array.from(new TextEncoder().encode(text));
}

function capacityBytes(version, level) {
  const [ecc, b1, d1, b2, d2] = VERSIONS[version][LEVEL[level].idx];
  void ecc;
  const dataBits = (b1 * d1 + b2 * d2) * 8;
  const countBits = version < 10 ? 8 : 16;
  return Math.floor((dataBits - 4 - countBits) / 8);
}

// Data + error correction codewords, interleaved as the symbol stores them.
function codewords(bytes, version, level) {
  const [ecc, b1, d1, b2, d2] = VERSIONS[version][LEVEL[level].idx];
  const dataLen = b1 * d1 + b2 * d2;
  const bits = [];
  const put = (v, n) => { for (let i = n - 1; i >= 0; i--) bits.push((v >>> i) & 1); };
  put(0b0100, 4);                                    // byte mode
  put(bytes.length, version < 10 ? 8 : 16);
  for (const b of bytes) put(b, 8);
  put(0, Math.min(4, dataLen * 8 - bits.length));   // terminator
  while (bits.length % 8) bits.push(0);
  const data = [];
  for (let i = 0; i < bits.length; i += 8) data.push(bits.slice(i, i + 8).reduce((a, b) => (a << 1) | b, 0));
  for (let pad = 0xec; data.length < dataLen; pad ^= 0xec ^ 0x11) data.push(pad);

  const blocks = [];
  let off = 0;
  for (let i = 0; i < b1 + b2; i++) {
    const len = i < b1 ? d1 : d2;
    const d = data.slice(off, off + len);
    off += len;
    blocks.push({ d, e: ecCodewords(d, ecc) });
  }
  const out = [];
  const maxD = Math.max(d1, d2);
  for (let i = 0; i < maxD; i++) for (const b of blocks) if (i < b.d.length) out.push(b.d[i]);
  for (let i = 0; i < ecc; i++) for (const b of blocks) out.push(b.e[i]);
  return out;
}

// BCH remainder of value (already shifted) by poly.
function bch(value, poly) {
  const deg = Math.floor(Math.log2(poly));
  let v = value;
  while (v && Math.floor(Math.log2(v)) >= deg) v ^= poly << (Math.floor(Math.log2(v)) - deg);
  return v;
}

const MASKS = [
  (r, c) => (r + c) % 2 === 0,
  (r) => r % 2 === 0,
  (r, c) => c % 3 === 0,
  (r, c) => (r + c) % 3 === 0,
  (r, c) => (Math.floor(r / 2) + Math.floor(c / 3)) % 2 === 0,
  (r, c) => ((r * c) % 2) + ((r * c) % 3) === 0,
  (r, c) => (((r * c) % 2) + ((r * c) % 3)) % 2 === 0,
  (r, c) => (((r + c) % 2) + ((r * c) % 3)) % 2 === 0,
];

function build(version, level, cw, mask) {
  const n = version * 4 + 17;
  const m = Array.from({ length: n }, () => new Array(n).fill(false));
  const fn = Array.from({ length: n }, () => new Array(n).fill(false));
  const set = (r, c, dark) => { m[r][c] = dark; fn[r][c] = true; };

  // Finder patterns with separators.
  for (const [fr, fc] of [[0, 0], [0, n - 7], [n - 7, 0]]) {
    for (let r = -1; r <= 7; r++) for (let c = -1; c <= 7; c++) {
      const rr = fr + r; const cc = fc + c;
      if (rr < 0 || cc < 0 || rr >= n || cc >= n) continue;
      const ring = Math.max(Math.abs(r - 3), Math.abs(c - 3));
      set(rr, cc, ring !== 2 && ring !== 4);
    }
  }
  // Timing patterns.
  for (let i = 8; i < n - 8; i++) { set(6, i, i % 2 === 0); set(i, 6, i % 2 === 0); }
  // Alignment patterns, except where they would overlap a finder.
  const al = ALIGN[version];
  for (const ar of al) for (const ac of al) {
    if ((ar === 6 && ac === 6) || (ar === 6 && ac === al[al.length - 1]) || (ar === al[al.length - 1] && ac === 6)) continue;
    for (let r = -2; r <= 2; r++) for (let c = -2; c <= 2; c++) set(ar + r, ac + c, Math.max(Math.abs(r), Math.abs(c)) !== 1);
  }
  // Format information (both copies) and the dark module.
  const fmtData = (LEVEL[level].bits << 3) | mask;
  const fmt = (((fmtData << 10) | bch(fmtData << 10, 0x537)) ^ 0x5412);
  const fbit = (i) => ((fmt >>> i) & 1) === 1;
  for (let i = 0; i <= 5; i++) set(i, 8, fbit(i));
  set(7, 8, fbit(6));
  set(8, 8, fbit(7));
  set(8, 7, fbit(8));
  for (let i = 9; i < 15; i++) set(8, 14 - i, fbit(i));
  for (let i = 0; i < 8; i++) set(8, n - 1 - i, fbit(i));
  for (let i = 8; i < 15; i++) set(n - 15 + i, 8, fbit(i));
  set(n - 8, 8, true);
  // Version information (7 and up).
  if (version >= 7) {
    const ver = (version << 12) | bch(version << 12, 0x1f25);
    for (let i = 0; i < 18; i++) {
      const dark = ((ver >>> i) & 1) === 1;
      const a = n - 11 + (i % 3); const b = Math.floor(i / 3);
      set(b, a, dark); set(a, b, dark);
    }
  }
  // Data, in two-column strips from the bottom right, skipping the vertical timing column.
  const mk = MASKS[mask];
  let bit = 0;
  const total = cw.length * 8;
  let upward = true;
  for (let right = n - 1; right >= 1; right -= 2) {
    if (right === 6) right = 5;
    for (let k = 0; k < n; k++) {
      const r = upward ? n - 1 - k : k;
      for (let j = 0; j < 2; j++) {
        const c = right - j;
        if (fn[r][c]) continue;
        let dark = false;
        if (bit < total) dark = ((cw[bit >>> 3] >>> (7 - (bit & 7))) & 1) === 1;
        bit++;
        m[r][c] = dark !== mk(r, c);
      }
    }
    upward = !upward;
  }
  return m;
}

function penalty(m) {
  const n = m.length;
  let score = 0;
  // Runs of five or more in rows and columns.
  for (let dir = 0; dir < 2; dir++) {
    for (let i = 0; i < n; i++) {
      let run = 1;
      for (let j = 1; j < n; j++) {
        const a = dir ? m[j][i] : m[i][j];
        const b = dir ? m[j - 1][i] : m[i][j - 1];
        if (a === b) run++;
        else { if (run >= 5) score += run - 2; run = 1; }
      }
      if (run >= 5) score += run - 2;
    }
  }
  // 2x2 blocks.
  for (let r = 0; r < n - 1; r++) for (let c = 0; c < n - 1; c++) {
    const v = m[r][c];
    if (v === m[r][c + 1] && v === m[r + 1][c] && v === m[r + 1][c + 1]) score += 3;
  }
  // Finder-like 1:1:3:1:1 with four light modules on either side.
  const pat = [true, false, true, true, true, false, true];
  const light = (get, k) => k < 0 || k >= n || !get(k);
  for (let dir = 0; dir < 2; dir++) {
    for (let i = 0; i < n; i++) {
      const get = dir ? (k) => m[k][i] : (k) => m[i][k];
      for (let j = 0; j + 7 <= n; j++) {
        let ok = true;
        for (let k = 0; k < 7 && ok; k++) if (get(j + k) !== pat[k]) ok = false;
        if (!ok) continue;
        const before = [1, 2, 3, 4].every((d) => light(get, j - d));
        const after = [0, 1, 2, 3].every((d) => light(get, j + 7 + d));
        if (before || after) score += 40;
      }
    }
  }
  // Balance of dark modules.
  let dark = 0;
  for (const row of m) for (const v of row) if (v) dark++;
  const pct = (dark * 100) / (n * n);
  score += Math.floor(Math.abs(pct - 50) / 5) * 10;
  return score;
}

/**
 * Encode text (UTF-8, byte mode).  Options: level 'M' (default) or 'L', minVersion, mask (0–7 to force).
 * Returns {version, level, mask, size, modules} where modules[row][col] is true for dark.
 * Throws RangeError when the text does not fit version 10.
 */
export function qrMatrix(text, { level = 'M', minVersion = 1, mask } = {}) {
  if (!LEVEL[level]) throw new RangeError(`level must be L or M, not ${level}`);
  const bytes = typeof text === 'string' ? utf8(text) : Array.from(text);
  let version = Math.max(1, minVersion);
  while (version <= 10 && capacityBytes(version, level) < bytes.length) version++;
  if (version > 10) throw new RangeError(`${bytes.length} bytes do not fit a version 10-${level} QR code`);
  const cw = codewords(bytes, version, level);
  let best = null;
  for (let k = 0; k < 8; k++) {
    if (mask !== undefined && k !== mask) continue;
    const modules = build(version, level, cw, k);
    const p = penalty(modules);
    if (!best || p < best.p) best = { p, mask: k, modules };
  }
  return { version, level, mask: best.mask, size: best.modules.length, modules: best.modules };
}

/** An SVG string of the QR code for text; `title` becomes its accessible name. */
export function qrSvg(text, { level = 'M', scale = 6, quiet = 4, title = 'QR code', dark = '#000', light = '#fff' } = {}) {
  const q = qrMatrix(text, { level });
  const dim = q.size + quiet * 2;
  let path = '';
  for (let r = 0; r < q.size; r++) for (let c = 0; c < q.size; c++) {
    if (q.modules[r][c]) path += `M${c + quiet} ${r + quiet}h1v1h-1z`;
  }
  const esc = (s) => String(s).replace(/[&<>"]/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[ch]));
  return `<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="${esc(title)}" viewBox="0 0 ${dim} ${dim}" width="${dim * scale}" height="${dim * scale}" shape-rendering="crispEdges" data-qr-version="${q.version}" data-qr-level="${q.level}"><title>${esc(title)}</title><rect width="100%" height="100%" fill="${light}"/><path fill="${dark}" d="${path}"/></svg>`;
}

export { capacityBytes };
