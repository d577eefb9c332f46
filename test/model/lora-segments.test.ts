// The segmented LoRA delta (addSegmentedLora) against a float64 per-row oracle, on the reference and native
// backends: rows grouped into segments, an adapter may own several segments, -1 rows and unadapted targets untouched.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend } from '../../src/backend/backend.js';
import { nativeCounters } from '../../src/backend/native.js';
import { selectBackend } from '../../src/backend/select.js';
import { addSegmentedLora, loraDims, LoraScratch, loraScale, type LoraAdapter, type LoraBatch, type LoraTarget } from '../../src/model/lora.js';
import { fixtureModel, rand } from '../engine/helpers.js';
import { randomAdapter } from './lora-helpers.js';

/** Native matmul calls so far, over every dtype / ISA / path counter. */
const matmuls = (): number => Object.entries(nativeCounters()).filter(([k]) => k.startsWith('matmul.')).reduce((a, [, v]) => a + v, 0);

function oracle(y0: Float32Array, x: Float32Array, C: number, N: number, rowAdapter: (LoraAdapter | null)[], l: number, t: LoraTarget): Float64Array {
  const out = Float64Array.from(y0);
  rowAdapter.forEach((a, row) => {
    const lin = a?.layers[l]?.[t];
    if (!a || !lin) return;
    const u = new Float64Array(lin.rank);
    for (let j = 0; j < lin.rank; j++) for (let c = 0; c < C; c++) u[j]! += lin.a[j * C + c]! * x[row * C + c]!;
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let j = 0; j < lin.rank; j++) acc += lin.b[n * lin.rank + j]! * u[j]!;
      out[row * N + n]! += loraScale(a.config) * acc;
    }
  });
  return out;
}

test('segmented LoRA delta equals the per-row oracle on both backends', async () => {
  const m = await fixtureModel('gqa_f32');
  const seed = Date.now() & 0xffff;
  const r = rand(seed);
  const ads = [randomAdapter(m, seed + 1, 3), randomAdapter(m, seed + 2, 5, ['q', 'up', 'down'], true), randomAdapter(m, seed + 3, 2, ['v'])];
  // segments: base, ad0, ad1, ad0 again, ad2 (has no 'up'), ad1
  const segStart = Int32Array.of(0, 2, 5, 6, 9, 10, 13);
  const segAdapter = Int32Array.of(-1, 0, 1, 0, 2, 1);
  const batch: LoraBatch = { adapters: ads, segStart, segAdapter };
  const T = segStart[segStart.length - 1]!;
  const rowAdapter = Array.from({ length: T }, (_, row) => {
    let g = 0;
    while (segStart[g + 1]! <= row) g++;
    return segAdapter[g]! < 0 ? null : ads[segAdapter[g]!]!;
  });
  const backends: Backend[] = [selectBackend('reference'), selectBackend('native')];
  for (const t of ['up', 'down', 'v'] as const) {
    const [N, C] = loraDims(m.config, t);
    const x = Float32Array.from({ length: T * C }, () => 2 * r() - 1);
    const y0 = Float32Array.from({ length: T * N }, () => 2 * r() - 1);
    const want = oracle(y0, x, C, N, rowAdapter, 1, t);
    for (const be of backends) {
      const before = be.name === 'native' ? matmuls() : null;
      const y = y0.slice();
      addSegmentedLora(be, y, x, C, N, batch, 1, t, new LoraScratch());
      for (let i = 0; i < y.length; i++) assert.ok(Math.abs(y[i]! - want[i]!) < 1e-4, `seed ${seed} ${be.name} ${t} [${i}]: ${y[i]} vs ${want[i]}`);
      for (let i = 0; i < 2 * N; i++) assert.equal(y[i], y0[i], `${be.name} ${t}: base rows untouched`);
      if (before !== null) assert.ok(matmuls() > before, 'the native matmul ran');
    }
  }
});
