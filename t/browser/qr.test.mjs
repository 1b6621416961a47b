// SPDX-License-Identifier: Apache-2.0
// Unit tests of the demo's QR encoder (htdocs/demo/qr.js), without a browser or a decoder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { qrMatrix, qrSvg, capacityBytes } from '../../htdocs/demo/qr.js';

// Version 2-M, mask 1, of 'HTTPS://CRYPTOREFILLS.COM' in byte mode, as this encoder drew it
// when it was checked by decoding it with zbarimg (ZBar): a regression vector.
const VECTOR = [
  '#######.#...#.##..#######',
  '#.....#...........#.....#',
  '#.###.#.##.#.#....#.###.#',
  '#.###.#..####.#...#.###.#',
  '#.###.#..#....##..#.###.#',
  '#.....#.##.#..#.#.#.....#',
  '#######.#.#.#.#.#.#######',
  '.........#.#....#........',
  '#.#...##.#.###.##..#..#.#',
  '#.#..#.#.#..##..##.#.#.#.',
  '.....###.##..#.####..##.#',
  '##.#....#####..#..#..#...',
  '##..#.#.....##.#..###.#.#',
  '..##....#.#.#.#.##.#...#.',
  '###.###...#.#.##.#...##.#',
  '...###.###.##.####.###...',
  '###...#.###.#.#.#####.##.',
  '........#.#..#..#...#....',
  '#######.####...##.#.#...#',
  '#.....#.....#..##...#..#.',
  '#.###.#...#.##.######..#.',
  '#.###.#...#.#....#..#.##.',
  '#.###.#.#.##..#.#.####.##',
  '#.....#....##.##...##....',
  '#######.#...##..###..#..#'
];

const bits = (m, cells) => cells.reduce((v, [r, c]) => (v << 1) | (m[r][c] ? 1 : 0), 0);
// BCH remainder, as the spec computes format (0x537) and version (0x1f25) information.
function bchRem(value, poly) {
  const deg = 31 - Math.clz32(poly);
  let v = value;
  while (v && 31 - Math.clz32(v) >= deg) v ^= poly << (31 - Math.clz32(v) - deg);
  return v;
}

test('known vector: HTTPS://CRYPTOREFILLS.COM at 2-M', () => {
  const q = qrMatrix('HTTPS://CRYPTOREFILLS.COM', { level: 'M' });
  assert.equal(q.version, 2);
  assert.equal(q.size, 25);
  assert.deepEqual(q.modules.map((r) => r.map((v) => (v ? '#' : '.')).join('')), VECTOR);
});

test('versions 1-10: finders, timing, dark module, format and version information', () => {
  for (let v = 1; v <= 10; v++) {
    for (const level of ['L', 'M']) {
      const text = 'x'.repeat(capacityBytes(v, level));
      const q = qrMatrix(text, { level });
      assert.equal(q.version, v, `${text.length} bytes at ${level} fill version ${v}`);
      const m = q.modules;
      const n = q.size;
      assert.equal(n, 17 + 4 * v);
      for (const [r0, c0] of [[0, 0], [0, n - 7], [n - 7, 0]]) {
        for (let r = 0; r < 7; r++) for (let c = 0; c < 7; c++) {
          const ring = Math.max(Math.abs(r - 3), Math.abs(c - 3));
          assert.equal(m[r0 + r][c0 + c], ring !== 2, `finder at ${r0},${c0}`);
        }
      }
      for (let i = 8; i < n - 8; i++) {
        assert.equal(m[6][i], i % 2 === 0, 'horizontal timing');
        assert.equal(m[i][6], i % 2 === 0, 'vertical timing');
      }
      assert.equal(m[n - 8][8], true, 'dark module');
      // Format information: both copies equal, a valid BCH codeword naming the level and mask.
      const a = bits(m, [[8, 0], [8, 1], [8, 2], [8, 3], [8, 4], [8, 5], [8, 7], [8, 8], [7, 8], [5, 8], [4, 8], [3, 8], [2, 8], [1, 8], [0, 8]]);
      const b = bits(m, [[n - 1, 8], [n - 2, 8], [n - 3, 8], [n - 4, 8], [n - 5, 8], [n - 6, 8], [n - 7, 8], [8, n - 8], [8, n - 7], [8, n - 6], [8, n - 5], [8, n - 4], [8, n - 3], [8, n - 2], [8, n - 1]]);
      assert.equal(a, b, 'format copies agree');
      const fmt = a ^ 0x5412;
      assert.equal(bchRem(fmt, 0x537), 0, 'format BCH');
      assert.equal(fmt >> 13, level === 'L' ? 1 : 0, 'level bits');
      assert.equal((fmt >> 10) & 7, q.mask, 'mask bits');
      if (v >= 7) {
        const cells1 = []; const cells2 = [];
        for (let i = 17; i >= 0; i--) { cells1.push([Math.floor(i / 3), n - 11 + (i % 3)]); cells2.push([n - 11 + (i % 3), Math.floor(i / 3)]); }
        const v1 = bits(m, cells1);
        assert.equal(v1, bits(m, cells2), 'version copies agree');
        assert.equal(v1 >> 12, v, 'version number');
        assert.equal(bchRem(v1, 0x1f25), 0, 'version BCH');
      }
    }
  }
});

test('too long for version 10 is refused; SVG is accessible', () => {
  assert.throws(() => qrMatrix('x'.repeat(capacityBytes(10, 'M') + 1), { level: 'M' }), RangeError);
  assert.equal(capacityBytes(10, 'M'), 213);
  assert.equal(capacityBytes(1, 'L'), 17);
  const svg = qrSvg('bc1qexample', { title: 'Pay <here>' });
  assert.match(svg, /^<svg [^>]*role="img" aria-label="Pay &lt;here&gt;"/);
  assert.match(svg, /<title>Pay &lt;here&gt;<\/title>/);
});
