// A NaN that reaches attention (a corrupted q_proj / k_proj / v_proj weight, an overflow upstream) comes out of it
// where the float64 reference puts it, on every native attention kernel: decode rows (one context split and several),
// prefill tiles, the AMX tile kernel (emulated where the host has no tiles), the AVX2 and scalar builds, and f32,
// bf16 and fp8 caches. Before, the AVX-512 exp clamped its argument with max(x, -87), which returns -87 for a NaN
// x: a NaN score became a weight of e^-87 and the output stayed finite and wrong, so the sampler's non-finite check
// (NonFiniteOutputError) never saw the corrupted checkpoint.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KvDType } from '../../src/backend/backend.js';
import { referenceBackend } from '../../src/backend/reference.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { loadAddon } from '../../src/backend/native-addon.js';
import { assertClose, ATTENTION_RTOL, makeBatch, makeKvLayer, withSeed, type SeqSpec } from './helpers.js';

const addon = loadAddon();
const ISAS = (['avx512', 'avx2', 'scalar'] as const).filter((isa) => addon && (addon.supportedIsa() === isa || isa !== 'avx512') && (addon.supportedIsa() !== 'scalar' || isa === 'scalar'));

/** The shapes: decode rows over a short and a long (split) context, and prefill tiles with a cached prefix. */
const BATCHES: { label: string; H: number; K: number; E: number; seqs: SeqSpec[] }[] = [
  { label: 'decode rows', H: 8, K: 2, E: 64, seqs: [{ ctxLen: 40, qLen: 1 }, { ctxLen: 3000, qLen: 1 }, { ctxLen: 300, qLen: 2 }] },
  { label: 'prefill tiles', H: 4, K: 2, E: 32, seqs: [{ ctxLen: 200, qLen: 130 }, { ctxLen: 70, qLen: 70 }] },
];

type Where = 'q' | 'k' | 'v';

/** Native and reference attention of one batch with one NaN placed in q, or in one cached k or v row. */
function nanCase(kvDtype: KvDType, b: (typeof BATCHES)[number], where: Where, label: string): { got: Float32Array; want: Float32Array; vmax: number } {
  return withSeed(label, (rng) => {
    const L = 16;
    const numBlocks = b.seqs.reduce((a, s) => a + Math.ceil(s.ctxLen / L), 0) + 2;
    const { batch, slotsOf } = makeBatch(rng, b.seqs, numBlocks, L);
    const layer = makeKvLayer(rng, kvDtype, numBlocks, L, b.K, b.E);
    const slots = Int32Array.from(slotsOf.flat());
    const kvN = slots.length * b.K * b.E;
    const k = rng.normals(kvN), v = rng.normals(kvN);
    // the poisoned cache row: a token of the longest sequence that its queries see (before the first query)
    const s = b.seqs.reduce((best, x, i) => (x.ctxLen > b.seqs[best]!.ctxLen ? i : best), 0);
    const before = slotsOf.slice(0, s).reduce((a, x) => a + x.length, 0);
    const tok = before + rng.int(0, b.seqs[s]!.ctxLen - b.seqs[s]!.qLen);
    const at = (tok * b.K + rng.int(0, b.K)) * b.E + rng.int(0, b.E);
    if (where === 'k') k[at] = NaN;
    if (where === 'v') v[at] = NaN;
    referenceBackend.kvWrite(layer, k, v, slots);
    const Tq = batch.qStart[batch.numSeqs]!;
    const q = rng.normals(Tq * b.H * b.E, 2);
    if (where === 'q') q[rng.int(0, q.length)] = NaN;
    const shape = { numHeads: b.H, numKvHeads: b.K, headDim: b.E, scale: 1 / Math.sqrt(b.E) };
    const want = new Float32Array(Tq * b.H * b.E);
    referenceBackend.attention(want, q, layer, shape, batch);
    const got = new Float32Array(Tq * b.H * b.E);
    loadNativeBackend()!.attention(got, q, layer, shape, batch);
    let vmax = 0;
    for (const x of v) if (!Number.isNaN(x)) vmax = Math.max(vmax, Math.abs(x));
    return { got, want, vmax };
  });
}

/** f with the given ISA and AMX mode, restored after. */
function withKernels<T>(isa: string, amx: 'off' | 'emulate' | 'tiles', f: () => T): T {
  const a = addon!;
  const [isa0, amx0, attn0] = [a.isa(), a.amx().mode, a.amx().attnSetting];
  a.setIsa(isa as 'avx512');
  a.setAmx(amx);
  a.setAmxAttn(amx === 'off' ? 'default' : 'on');
  try {
    return f();
  } finally {
    a.setAmxAttn(attn0);
    a.setAmx(amx0);
    a.setIsa(isa0);
  }
}

describe('attention: a NaN in q, k or v comes out where the reference puts it', { skip: addon ? false : 'needs the native addon' }, () => {
  const modes: [string, 'off' | 'emulate' | 'tiles'][] = ISAS.map((isa) => [isa, 'off']);
  if (ISAS.includes('avx512')) modes.push(['avx512', addon!.amx().supported ? 'tiles' : 'emulate']);
  for (const [isa, amx] of modes) {
    for (const kvDtype of ['f32', 'bf16', 'fp8_e4m3'] as const) {
      if (amx !== 'off' && kvDtype === 'f32') continue; // the tile kernel takes bf16 and fp8 caches
      for (const b of BATCHES) {
        if (amx !== 'off' && b.label === 'decode rows') continue; // the tiles are prefill's
        it(`${isa}${amx === 'off' ? '' : ` AMX ${amx}`}, ${kvDtype} cache, ${b.label}`, () => {
          for (const where of ['q', 'k', 'v'] as const) {
            const label = `attention NaN ${where} ${isa} ${amx} ${kvDtype} ${b.label}`;
            const c0 = nativeCounters();
            const { got, want, vmax } = withKernels(isa, amx, () => nanCase(kvDtype, b, where, label));
            const c1 = nativeCounters();
            const ran = Object.keys(c1).filter((key) => key.startsWith('attention') && c1[key] !== (c0[key] ?? 0));
            assert.ok(ran.length > 0 && ran.every((key) => key.endsWith(`.${isa}`)), `${label}: the ${isa} attention ran (${ran.join(', ')})`);
            if (amx !== 'off') assert.ok(ran.some((key) => key.includes('tiles_amx')), `${label}: the AMX tile kernel ran (${ran.join(', ')})`);
            let nans = 0;
            const gotMask = new Float32Array(got.length), wantMask = new Float32Array(want.length);
            for (let i = 0; i < want.length; i++) {
              if (Number.isNaN(want[i]!)) nans++;
              assert.equal(Number.isNaN(got[i]!), Number.isNaN(want[i]!), `${label}: element ${i} is ${got[i]} natively, ${want[i]} in the reference`);
              gotMask[i] = Number.isNaN(got[i]!) ? 0 : got[i]!;
              wantMask[i] = Number.isNaN(want[i]!) ? 0 : want[i]!;
            }
            assert.ok(nans > 0, `${label}: the reference output has NaN`);
            assertClose(label, gotMask, wantMask, { atol: ATTENTION_RTOL[kvDtype] * vmax, rtol: 0 });
          }
        });
      }
    }
  }
});
