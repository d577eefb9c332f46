// Long context: a 32K-token prompt and positions next to 131071 against float64 PyTorch references
// (scripts/make_long_fixture.py), RoPE precision at the window's end, and the window limit in generate and the engine.
//
// T tokens, V vocab, E head dim.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend, KvDType } from '../../src/backend/backend.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { referenceBackend } from '../../src/backend/reference.js';
import { Engine } from '../../src/engine/engine.js';
import { EngineRequestError } from '../../src/engine/protocol.js';
import { loadModel } from '../../src/formats/load.js';
import { ropeInvFreq } from '../../src/model/config.js';
import { generate } from '../../src/model/generate.js';
import { KvCache } from '../../src/model/kv-cache.js';
import { LlamaModel } from '../../src/model/llama.js';
import { genReq } from '../engine/helpers.js';
import { repoPath } from '../repo.js';

const DIR = repoPath('test/fixtures/long/');

interface PromptSpec { generator: 'xorshift32'; seed: number; length: number; vocab: number; sum: number; first?: number[]; last?: number[] }
interface Reference {
  long: { prompt: PromptSpec; logprob_positions: number[]; logprobs: number[][]; logprobs_bf16_kv: number[][]; bf16_kv_effect: number };
  high: {
    prompt: PromptSpec; first_position: number; logprob_positions: number[]; logprobs: number[][]; logprobs_bf16_kv: number[][];
    logprobs_f64_angles: number[][]; f64_angle_deviation: number; unscaled_effect: number; max_angle_error_rad: number;
  };
}

const ref = JSON.parse(await import('node:fs').then((fs) => fs.readFileSync(DIR + 'reference.json', 'utf8'))) as Reference;
const loaded = await loadModel(DIR);
const native = loadNativeBackend();
const BLOCK = 16;
const CHUNK = 512; // prefill tokens per step, as generate() and the engine's default budget
const DECODE = 4; // the last DECODE prompt tokens go through single-token decode steps

/** The fixture's prompt: xorshift32 ids (the generator in make_long_fixture.py), checked against its checksums. */
function promptIds(p: PromptSpec): number[] {
  let x = p.seed >>> 0;
  const ids = new Array<number>(p.length);
  for (let i = 0; i < p.length; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    ids[i] = x % p.vocab;
  }
  assert.equal(ids.reduce((a, b) => a + b, 0), p.sum, 'prompt checksum: the xorshift32 generator differs from the fixture script');
  if (p.first) assert.deepEqual(ids.slice(0, 4), p.first);
  if (p.last) assert.deepEqual(ids.slice(-4), p.last);
  return ids;
}

/**
 * Log-softmax rows (R, V) at the prompt's last R positions: chunked prefill of all but the last DECODE tokens
 * (logits for the rows before them from the last chunk), then DECODE single-token steps. Positions start at `start`;
 * KV slots are the token indices.
 */
function lastLogprobs(model: LlamaModel, ids: readonly number[], start: number, R: number, kvDtype: KvDType): Float32Array[] {
  const V = model.config.vocabSize;
  const T = ids.length;
  const cfg = model.config;
  const kv = new KvCache(cfg.numLayers, Math.ceil(T / BLOCK), BLOCK, cfg.numKvHeads, cfg.headDim, kvDtype);
  const blockTables = Int32Array.from({ length: kv.numBlocks }, (_, i) => i);
  const out: Float32Array[] = [];
  const step = (s: number, n: number, rows: number): void => {
    const slots = Int32Array.from({ length: n }, (_, i) => s + i);
    const logits = model.forward({
      tokens: Int32Array.from(ids.slice(s, s + n)),
      positions: Int32Array.from(slots, (i) => start + i),
      slots,
      attn: { numSeqs: 1, qStart: Int32Array.of(0, n), ctxLen: Int32Array.of(s + n), blockTables, maxBlocks: kv.numBlocks },
      logitRows: Int32Array.from({ length: rows }, (_, i) => n - rows + i),
    }, kv);
    if (rows > 0) model.backend.logSoftmax(logits, logits, rows);
    for (let r = 0; r < rows; r++) out.push(logits.slice(r * V, (r + 1) * V));
  };
  const prefill = T - DECODE;
  for (let s = 0; s < prefill; s += CHUNK) {
    const n = Math.min(CHUNK, prefill - s);
    step(s, n, s + n === prefill ? R - DECODE : 0);
  }
  for (let s = prefill; s < T; s++) step(s, 1, 1);
  return out;
}

function maxDiff(got: readonly Float32Array[], want: readonly number[][]): number {
  assert.equal(got.length, want.length, 'rows');
  let worst = 0;
  got.forEach((row, i) => {
    assert.equal(row.length, want[i]!.length, 'vocab');
    for (let v = 0; v < row.length; v++) worst = Math.max(worst, Math.abs(row[v]! - want[i]![v]!));
  });
  return worst;
}

function counterDelta(before: Record<string, number>, prefix: string): number {
  const after = nativeCounters();
  return Object.entries(after).filter(([k]) => k.startsWith(prefix)).reduce((a, [k, v]) => a + v - (before[k] ?? 0), 0);
}

test('the fixture is a 131072-token llama3-scaled model whose original window the prompt exceeds', () => {
  const c = loaded.config;
  assert.equal(c.maxPositionEmbeddings, 131072);
  assert.equal(c.ropeScaling?.type, 'llama3');
  assert.ok(c.ropeScaling?.type === 'llama3' && ref.long.prompt.length >= 32768 && ref.long.prompt.length > 4 * c.ropeScaling.originalMaxPositionEmbeddings);
});

// f32 KV: native f32 end to end vs float64; bf16 KV: vs the reference with K (after RoPE) and V rounded to bf16.
const LONG_TOL: Record<'f32' | 'bf16', number> = { f32: 5e-4, bf16: 1e-3 };
for (const kvDtype of ['f32', 'bf16'] as const) {
  test(`native, ${kvDtype} KV: logprobs at the last positions of a ${ref.long.prompt.length}-token prompt match PyTorch float64`, { skip: !native && 'native addon not built' }, (t) => {
    const model = LlamaModel.fromTensors(loaded.config, loaded.tensors, native!, loaded.ropeFreqFactors);
    const ids = promptIds(ref.long.prompt);
    const t0 = performance.now();
    const before = nativeCounters();
    const got = lastLogprobs(model, ids, 0, ref.long.logprob_positions.length, kvDtype);
    assert.ok(counterDelta(before, `attention.${kvDtype}kv.`) > 0, `the native ${kvDtype} KV attention ran`);
    const want = kvDtype === 'f32' ? ref.long.logprobs : ref.long.logprobs_bf16_kv;
    const d = maxDiff(got, want);
    t.diagnostic(`max |Δlogprob| ${d.toExponential(2)} (bf16 KV effect ${ref.long.bf16_kv_effect.toExponential(2)}), ${(performance.now() - t0).toFixed(0)} ms`);
    const tol = LONG_TOL[kvDtype];
    assert.ok(tol < ref.long.bf16_kv_effect, 'the tolerance separates an f32 cache from a bf16 one');
    assert.ok(d <= tol, `${kvDtype} KV: max |Δlogprob| ${d.toExponential(2)} > ${tol} over the last ${got.length} positions`);
  });
}

// Positions 131024..131071: the angles are at their largest; HF rounds pos * inv_freq to f32 and so do we.
const HIGH_TOL = 2e-4;
const highCases: [string, Backend | null, KvDType][] = [['reference', referenceBackend, 'f32'], ['native', native, 'f32'], ['native', native, 'bf16']];
for (const [bname, backend, kvDtype] of highCases) {
  test(`${bname}, ${kvDtype} KV: positions ${ref.high.first_position}..131071 match PyTorch with transformers' f32 angles`, { skip: !backend && 'native addon not built' }, (t) => {
    const model = LlamaModel.fromTensors(loaded.config, loaded.tensors, backend!, loaded.ropeFreqFactors);
    const ids = promptIds(ref.high.prompt);
    const got = lastLogprobs(model, ids, ref.high.first_position, ref.high.logprob_positions.length, kvDtype);
    const d = maxDiff(got, kvDtype === 'f32' ? ref.high.logprobs : ref.high.logprobs_bf16_kv);
    t.diagnostic(`max |Δlogprob| ${d.toExponential(2)}; float64 angles would move them by ${ref.high.f64_angle_deviation.toExponential(2)}, no llama3 scaling by ${ref.high.unscaled_effect.toExponential(2)}`);
    assert.ok(d <= HIGH_TOL, `max |Δlogprob| ${d.toExponential(2)} > ${HIGH_TOL}`);
    // the tolerance tells HF's f32 angles from float64 angles, and a scaled rope from an unscaled one
    assert.ok(HIGH_TOL < ref.high.f64_angle_deviation / 4 && HIGH_TOL < ref.high.unscaled_effect / 100);
    if (kvDtype === 'bf16') {
      const effect = maxDiff(ref.high.logprobs.map((r) => Float32Array.from(r)), ref.high.logprobs_bf16_kv);
      assert.ok(HIGH_TOL < effect, `bf16 rounding of K/V moves logprobs by ${effect}: the tolerance tells the caches apart`);
    } else {
      const d64 = maxDiff(got, ref.high.logprobs_f64_angles);
      assert.ok(Math.abs(d64 - ref.high.f64_angle_deviation) < 4 * HIGH_TOL, `vs float64 angles: ${d64} (fixture: ${ref.high.f64_angle_deviation})`);
    }
  });
}

test('RoPE at positions near 131071: native equals the HF-f32 reference kernel; vs float64 angles within half an f32 ulp of the angle', { skip: !native && 'native addon not built' }, (t) => {
  const E = 128;
  const nHeads = 2;
  const invFreq = ropeInvFreq({ headDim: E, ropeTheta: 500000, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } });
  const positions = Int32Array.from({ length: 64 }, (_, i) => 131072 - 64 + i);
  let seed = 12345;
  const rnd = (): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed / 2 ** 32 - 0.5; };
  const x = Float32Array.from({ length: positions.length * nHeads * E }, rnd);
  const a = x.slice();
  const b = x.slice();
  native!.rope(a, positions, nHeads, E, invFreq);
  referenceBackend.rope(b, positions, nHeads, E, invFreq);
  let dRef = 0;
  let dF64 = 0;
  let worstBound = 0;
  for (let t = 0; t < positions.length; t++) {
    for (let i = 0; i < E / 2; i++) {
      const exact = positions[t]! * invFreq[i]!; // float64 product of the same f32 inv_freq
      const f32 = Math.fround(Math.fround(positions[t]!) * invFreq[i]!);
      // f32 rounding of the angle: at most half an ulp; ulp(131071 rad) = 2^-7
      const halfUlp = 2 ** (Math.floor(Math.log2(Math.abs(exact) || 1)) - 24);
      assert.ok(Math.abs(f32 - exact) <= halfUlp, `angle ${exact} rounds by more than half an ulp`);
      for (let h = 0; h < nHeads; h++) {
        const o = (t * nHeads + h) * E;
        const [x0, x1] = [x[o + i]!, x[o + i + E / 2]!];
        const [c, s] = [Math.cos(exact), Math.sin(exact)];
        const want = [x0 * c - x1 * s, x1 * c + x0 * s];
        const got = [a[o + i]!, a[o + i + E / 2]!];
        const norm = Math.hypot(x0, x1);
        worstBound = Math.max(worstBound, norm * (halfUlp + 2 ** -22));
        for (let j = 0; j < 2; j++) {
          dF64 = Math.max(dF64, Math.abs(got[j]! - want[j]!) / (norm * (halfUlp + 2 ** -22)));
          dRef = Math.max(dRef, Math.abs(got[j]! - [b[o + i]!, b[o + i + E / 2]!][j]!));
        }
      }
    }
  }
  t.diagnostic(`native vs HF-f32 reference: ${dRef.toExponential(2)}; vs float64 angles: up to ${dF64.toFixed(2)} of the bound |x|·(half ulp + 2^-22), bound up to ${worstBound.toExponential(2)}`);
  assert.ok(dRef <= 1e-6, `native vs reference rope: ${dRef}`);
  assert.ok(dF64 <= 1, `native rope vs float64 angles exceeds |x|·(half ulp of the angle + 2^-22) by ×${dF64}`);
  assert.ok(worstBound > 1e-4, 'the bound is the angle rounding at this position, not f32 noise');
});

test('the window is the limit: generate and the engine refuse prompt + max_tokens > 131072 (400 from the engine)', () => {
  const model = LlamaModel.fromTensors(loaded.config, loaded.tensors, referenceBackend, loaded.ropeFreqFactors);
  const ids = new Array<number>(131000).fill(5);
  assert.throws(() => generate(model, ids, { maxTokens: 73 }), /131073 exceeds the model's context of 131072/);
  // f32 KV for 131072 tokens of this model is 32 MiB: the engine can hold the whole window
  const engine = new Engine(model, null, { kvDtype: 'f32', kvCacheMemory: 131072 * KvCache.bytesPerToken(2, 1, 16, 'f32'), maxNumSeqs: 1 });
  assert.equal(engine.info.maxModelLen, 131072);
  assert.equal(engine.info.kvTokens, 131072);
  assert.equal(engine.info.maxRequestTokens, 131072);
  const refused = (f: () => void, re: RegExp): void => assert.throws(f, (e: unknown) => e instanceof EngineRequestError && e.status === 400 && re.test(e.message));
  refused(() => engine.add(genReq('over', ids, { maxTokens: 73 })), /= 131073 exceeds the model's context window of 131072 tokens/);
  // a smaller KV budget caps the longest request below the window, with its own message
  const small = new Engine(model, null, { kvDtype: 'f32', kvCacheMemory: 4096 * KvCache.bytesPerToken(2, 1, 16, 'f32'), maxNumSeqs: 1 });
  assert.equal(small.info.maxRequestTokens, 4096);
  refused(() => small.add(genReq('kv', ids.slice(0, 4000), { maxTokens: 97 })), /4097 exceeds the KV cache capacity of 4096 tokens/);
  assert.equal(small.numRequests, 0);
});
