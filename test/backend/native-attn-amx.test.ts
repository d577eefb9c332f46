// Prefill attention with QKᵀ and PV on the bf16 tiles (native/attn_amx.inc) against the float64 reference backend:
// bf16 and fp8 caches, head dims 16 to 256 (E off a multiple of 32: zero-padded tile columns), GQA 1 to 8 (row tiles
// of 1 to 4 column tiles, rows off a multiple of 16), block size 10, last chunks of 1 to 63 tokens, several query tiles
// per sequence, a cached prefix, and decode rows in the same call. On a host with AMX the real tiles run (the kernel
// is opt-in there: setAmxAttn('on')); elsewhere the same code with amx.inc's scalar tile operations
// (FLOE_AMX=emulate), which is the kernel's default under the emulation. Counters prove which kernel ran.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import type { KvDType } from '../../src/backend/backend.js';
import { referenceBackend } from '../../src/backend/reference.js';
import { fp8ToF32 } from '../../src/tensor/codecs.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { addonPath, loadAddon } from '../../src/backend/native-addon.js';
import { assertClose, attentionCase, makeBatch, makeKvLayer, withSeed, type AttentionCase } from './helpers.js';

const addon = loadAddon();
const skip = !addon || addon.supportedIsa() !== 'avx512' ? 'needs the AVX-512 native addon' : false;
const tiles = addon?.amx().supported ?? false;
const mode = tiles ? 'tiles' : 'emulate';
const counter = `attention512.${tiles ? 'tiles_amx' : 'tiles_amx_emu'}.avx512`;

// The tiles carry q and p as bf16 hi + lo (each to ~2⁻¹⁶ relative); keys and values are exact. The output is a
// convex combination of value rows, so the allowance is relative to max |v|.
const TOL = 2 ** -16;

const CASES: (AttentionCase & { label: string })[] = [
  { label: 'E 64, GQA 4: 16 queries a tile, prefix, 44-token last chunk, decode rows beside', H: 8, K: 2, E: 64, seqs: [{ ctxLen: 300, qLen: 100 }, { ctxLen: 37, qLen: 1 }, { ctxLen: 70, qLen: 70 }] },
  { label: 'E 128, MHA: 64-row tiles, 17 rows (2 column tiles)', H: 4, K: 4, E: 128, seqs: [{ ctxLen: 130, qLen: 130 }, { ctxLen: 17, qLen: 17 }] },
  { label: 'E 48 (E2 64), GQA 3: 63-row tiles, block size 10', H: 6, K: 2, E: 48, L: 10, seqs: [{ ctxLen: 150, qLen: 90 }, { ctxLen: 40, qLen: 1 }] },
  { label: 'E 80, GQA 8: 8 queries a tile', H: 8, K: 1, E: 80, seqs: [{ ctxLen: 99, qLen: 33 }] },
  { label: 'E 16 (one zero-padded half unit block)', H: 2, K: 2, E: 16, seqs: [{ ctxLen: 200, qLen: 40 }] },
  { label: 'E 256, GQA 2', H: 2, K: 1, E: 256, seqs: [{ ctxLen: 75, qLen: 20 }] },
  { label: 'E 32, MHA: a 1-token last chunk, 18 queries', H: 3, K: 3, E: 32, seqs: [{ ctxLen: 65, qLen: 65 }, { ctxLen: 96, qLen: 18 }] },
  { label: 'E 40 (EP 48, E2 64), GQA 2', H: 4, K: 2, E: 40, seqs: [{ ctxLen: 129, qLen: 50 }] },
];

/** Runs a case on the native backend against the reference; returns the native counters' growth. */
function runCase(kvDtype: KvDType, c: AttentionCase, label: string): Record<string, number> {
  return withSeed(label, (rng) => {
    const before = nativeCounters();
    const { got, want, vmax } = attentionCase(rng, loadNativeBackend()!, kvDtype, c);
    const after = nativeCounters();
    assertClose(label, got, want, { atol: TOL * vmax, rtol: 0 });
    const grew: Record<string, number> = {};
    for (const [k, v] of Object.entries(after)) if (v !== (before[k] ?? 0)) grew[k] = v - (before[k] ?? 0);
    return grew;
  });
}

/** f with the AVX-512 kernels, AMX in `m` and the attention setting `attn`, restored after. */
function withAmx<T>(m: 'tiles' | 'emulate' | 'off', attn: 'on' | 'off' | 'default', f: () => T): T {
  const a = addon!;
  const [isa0, mode0, attn0] = [a.isa(), a.amx().mode, a.amx().attnSetting];
  a.setIsa('avx512');
  a.setAmx(m);
  a.setAmxAttn(attn);
  try {
    return f();
  } finally {
    a.setAmxAttn(attn0);
    a.setAmx(mode0);
    a.setIsa(isa0);
  }
}

describe(`prefill attention on AMX tiles (${tiles ? 'real tiles' : 'emulated'})`, { skip }, () => {
  for (const kvDtype of ['bf16', 'fp8_e4m3'] as const) {
    for (const c of CASES) {
      it(`${kvDtype} ${c.label}`, () => {
        const grew = withAmx(mode, 'on', () => runCase(kvDtype, c, `attention amx ${kvDtype} ${c.label}`));
        assert.ok((grew[counter] ?? 0) >= 1, `the tile kernel ran (${counter}); counters that grew: ${JSON.stringify(grew)}`);
        assert.equal(grew['attention512.tiles.avx512'], undefined, 'no prefill tile took the vector kernel');
      });
    }
  }

  it('fp8: every code decodes exactly (all 254 codes, and a cache of only zero and subnormal codes), as the reference reads them', () => {
    for (const only of ['every code', 'zero and subnormals'] as const) {
      const grew = withAmx(mode, 'on', () => withSeed(`attention amx fp8 ${only}`, (rng) => {
        const [H, K, E, L] = [4, 2, 48, 16];
        const { batch } = makeBatch(rng, [{ ctxLen: 150, qLen: 70 }], 14, L);
        const layer = makeKvLayer(rng, 'fp8_e4m3', 14, L, K, E); // codes as drawn (no kvWrite): 0x00-0x7E, either sign
        if (only === 'zero and subnormals') for (const part of [layer.k, layer.v]) for (let i = 0; i < part.length; i++) part[i]! &= 0x87;
        // the output is a convex combination of v rows: the allowance is relative to the largest |v| the cache holds
        let vmax = 0;
        for (let i = 0; i < layer.v.length; i++) vmax = Math.max(vmax, Math.abs(fp8ToF32(layer.v[i]!)) * layer.vScale![Math.floor(i / E)]!);
        const q = rng.normals(70 * H * E, 2);
        const shape = { numHeads: H, numKvHeads: K, headDim: E, scale: 1 / Math.sqrt(E) };
        const want = new Float32Array(70 * H * E);
        referenceBackend.attention(want, q, layer, shape, batch);
        const got = new Float32Array(70 * H * E).fill(NaN);
        const before = nativeCounters();
        loadNativeBackend()!.attention(got, q, layer, shape, batch);
        const after = nativeCounters();
        assertClose(`attention amx fp8 ${only}`, got, want, { atol: TOL * vmax, rtol: 0 });
        return (after[counter] ?? 0) - (before[counter] ?? 0);
      }));
      assert.ok(grew >= 1, `${only}: the tile kernel ran (${counter})`);
    }
  });

  it('thread count does not change the result (bitwise)', () => {
    const a = addon!;
    const t0 = a.getThreads();
    withSeed('attention amx threads', (rng) => {
      const be = loadNativeBackend()!;
      const [H, K, E, L] = [4, 2, 64, 16];
      const { batch, slotsOf } = makeBatch(rng, [{ ctxLen: 200, qLen: 120 }], 20, L);
      const layer = makeKvLayer(rng, 'bf16', 20, L, K, E);
      const slots = Int32Array.from(slotsOf.flat());
      referenceBackend.kvWrite(layer, rng.normals(slots.length * K * E), rng.normals(slots.length * K * E), slots);
      const q = rng.normals(120 * H * E);
      const outs = [1, 2, 3].map((threads) => {
        a.setThreads(threads);
        const out = new Float32Array(120 * H * E);
        withAmx(mode, 'on', () => be.attention(out, q, layer, { numHeads: H, numKvHeads: K, headDim: E, scale: 1 / 8 }, batch));
        return out;
      });
      a.setThreads(t0);
      assert.deepEqual(outs[1], outs[0]);
      assert.deepEqual(outs[2], outs[0]);
    });
  });

  it('f32 caches, the attention setting off, and AMX off keep the vector kernel; the defaults', () => {
    const c = CASES[0]!;
    const vec = 'attention512.tiles.avx512';
    let grew = withAmx(mode, 'on', () => runCase('f32', c, 'attention amx f32 cache'));
    assert.ok(grew[vec]! >= 1 && grew[counter] === undefined, `f32: the vector kernel ran (${JSON.stringify(grew)})`);
    grew = withAmx(mode, 'off', () => runCase('bf16', c, 'attention amx setting off'));
    assert.ok(grew[vec]! >= 1 && grew[counter] === undefined, `setting off: the vector kernel ran (${JSON.stringify(grew)})`);
    grew = withAmx('off', 'on', () => runCase('bf16', c, 'attention amx mode off'));
    assert.ok(grew[vec]! >= 1 && grew[counter] === undefined, `AMX off: the vector kernel ran (${JSON.stringify(grew)})`);
    // the default: the tiles under the emulation, the vector kernel on real tiles until the kernel has run on them
    const a = addon!;
    withAmx('emulate', 'default', () => assert.equal(a.amx().attn, true));
    if (tiles) withAmx('tiles', 'default', () => assert.equal(a.amx().attn, false));
    assert.throws(() => a.setAmxAttn('yes' as 'on'), /'on', 'off' or 'default'/);
  });

  it('FLOE_AMX_ATTN at load: 1 on, 0 off, unset the default', () => {
    const read = (v: string | undefined): string => {
      const env: NodeJS.ProcessEnv = { ...process.env, FLOE_AMX: 'emulate' };
      if (v === undefined) delete env.FLOE_AMX_ATTN;
      else env.FLOE_AMX_ATTN = v;
      const code = `const a = require(${JSON.stringify(addonPath())}).amx(); console.log(a.attnSetting + ' ' + a.attn)`;
      return execFileSync(process.execPath, ['-e', code], { env, encoding: 'utf8' }).trim();
    };
    assert.equal(read('1'), 'on true');
    assert.equal(read('0'), 'off false');
    assert.equal(read(undefined), 'default true');
  });
});
