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
/** Native one-call segmented LoRA kernel calls so far (every ISA). */
const fused = (): number => Object.entries(nativeCounters()).filter(([k]) => k.startsWith('loraSegmented.')).reduce((a, [, v]) => a + v, 0);

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
  const native = selectBackend('native');
  assert.ok(native.loraSegmented, 'the native backend has the one-call segmented kernel');
  // the native matmuls without the one-call kernel: the TypeScript per-segment path
  const perSegment = Object.assign(Object.create(native) as Backend, { loraSegmented: undefined });
  const backends: Backend[] = [selectBackend('reference'), native, perSegment];
  for (const t of ['up', 'down', 'v'] as const) {
    const [N, C] = loraDims(m.config, t);
    const x = Float32Array.from({ length: T * C }, () => 2 * r() - 1);
    const y0 = Float32Array.from({ length: T * N }, () => 2 * r() - 1);
    const want = oracle(y0, x, C, N, rowAdapter, 1, t);
    for (const be of backends) {
      const name = be === perSegment ? 'native per-segment' : be.name;
      const before = { matmuls: matmuls(), fused: fused() };
      const y = y0.slice();
      addSegmentedLora(be, y, x, C, N, batch, 1, t, new LoraScratch());
      for (let i = 0; i < y.length; i++) assert.ok(Math.abs(y[i]! - want[i]!) < 1e-4, `seed ${seed} ${name} ${t} [${i}]: ${y[i]} vs ${want[i]}`);
      for (let i = 0; i < 2 * N; i++) assert.equal(y[i], y0[i], `${name} ${t}: base rows untouched`);
      if (be === native) assert.equal(fused(), before.fused + 1, 'one native loraSegmented call');
      if (be === perSegment) assert.ok(matmuls() > before.matmuls && fused() === before.fused, 'the per-segment path ran on native matmuls');
    }
  }
});

test('native loraSegmented on every ISA this CPU has equals the float64 oracle: odd sizes, 1-row and long segments, ranks 1..17; bad arguments are clear errors', async () => {
  const { loadAddon } = (await import('../../src/backend/native-addon.js')) as unknown as { loadAddon(): { supportedIsa(): string; isa(): string; setIsa(isa: string): void } | null };
  const addon = loadAddon()!;
  const native = selectBackend('native');
  const order = ['scalar', 'avx2', 'avx512'];
  const initial = addon.isa();
  const seed = Date.now() & 0xffff;
  const r = rand(seed);
  try {
    for (const isa of order.slice(0, order.indexOf(addon.supportedIsa()) + 1)) {
      addon.setIsa(isa);
      for (const [C, N] of [[37, 301], [64, 1024], [5, 17]] as const) {
        const segStart = Int32Array.of(0, 1, 2, 2, 9, 10, 30);
        const G = segStart.length - 1;
        const ranks = Array.from({ length: G }, (_, g) => (g === 1 ? 0 : 1 + Math.floor(r() * 17))); // segment 1: base rows
        const a = ranks.map((rk) => (rk === 0 ? null : Float32Array.from({ length: rk * C }, () => 2 * r() - 1)));
        const bt = ranks.map((rk) => (rk === 0 ? null : Float32Array.from({ length: rk * N }, () => 2 * r() - 1)));
        const scales = Float32Array.from({ length: G }, () => 0.5 + r());
        const T = segStart[G]!;
        const x = Float32Array.from({ length: T * C }, () => 2 * r() - 1);
        const y0 = Float32Array.from({ length: T * N }, () => 2 * r() - 1);
        const want = Float64Array.from(y0);
        for (let g = 0; g < G; g++) {
          if (!a[g]) continue;
          for (let row = segStart[g]!; row < segStart[g + 1]!; row++) {
            const u = Array.from({ length: ranks[g]! }, (_, j) => { let s = 0; for (let c = 0; c < C; c++) s += x[row * C + c]! * a[g]![j * C + c]!; return s * scales[g]!; });
            for (let n = 0; n < N; n++) for (let j = 0; j < ranks[g]!; j++) want[row * N + n]! += u[j]! * bt[g]![j * N + n]!;
          }
        }
        const before = nativeCounters()[`loraSegmented.${isa}`] ?? 0;
        const y = y0.slice();
        native.loraSegmented!(y, x, C, N, segStart, a, bt, scales);
        assert.equal(nativeCounters()[`loraSegmented.${isa}`], before + 1, `the ${isa} kernel ran`);
        const tol = 1e-4 * Math.sqrt(C) * 17;
        for (let i = 0; i < y.length; i++) assert.ok(Math.abs(y[i]! - want[i]!) < tol, `seed ${seed} ${isa} C=${C} N=${N} [${i}]: ${y[i]} vs ${want[i]}`);
        for (let i = N; i < 2 * N; i++) assert.equal(y[i], y0[i], 'the base segment is untouched');
      }
    }
  } finally {
    addon.setIsa(initial);
  }
  const y = new Float32Array(8);
  const x = new Float32Array(8);
  assert.throws(() => native.loraSegmented!(y, x, 4, 4, Int32Array.of(0, 2), [new Float32Array(5)], [new Float32Array(4)], Float32Array.of(1)), /a\[0\] has 5 elements, expected r × C \(C=4\)/);
  assert.throws(() => native.loraSegmented!(y, x, 4, 4, Int32Array.of(0, 2), [new Float32Array(4)], [new Float32Array(3)], Float32Array.of(1)), /bt\[0\] \(r=1, N=4\) has 3 elements, expected 4/);
  assert.throws(() => native.loraSegmented!(y, x, 4, 4, Int32Array.of(0, 3), [null], [null], Float32Array.of(1)), /x \(T=3, C=4\) has 8 elements, expected 12/);
  assert.throws(() => native.loraSegmented!(y, x, 4, 4, Int32Array.of(0, 2, 1), [null, null], [null, null], Float32Array.of(1, 1)), /segStart must not decrease/);
  assert.throws(() => native.loraSegmented!(y, x, 4, 4, Int32Array.of(0, 2), [null], [null], Float32Array.of(1, 1)), /scales \(G=1\) has 2 elements/);
});
