// floe-brown (f32) opened with load dtype 'bf16' on the native backend: the bf16 kernels run (counters), the logits stay
// within the bf16 rounding bound of the f32 model's, and streamed layers convert to the same bits as resident ones.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadAddon } from '../../src/backend/native-addon.js';
import { generate } from '../../src/model/generate.js';
import { KvCache } from '../../src/model/kv-cache.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { openModel } from '../../src/model/open.js';
import { dequantizeRow } from '../../src/tensor/codecs.js';
import { rand } from '../engine/helpers.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown'); // f32, 6 layers, tied, V 4096, D 256
const native = loadAddon() !== null;
const skip = !native && 'native addon not built';

/** Logits (T, V) and final-normed hidden states (T, D) of one prefill of `prompt`, KV in f32 (only the weights differ). */
function prefill(model: LlamaModel, prompt: number[]): { logits: Float32Array; hidden: Float32Array } {
  const T = prompt.length, cfg = model.config;
  const kv = new KvCache(cfg.numLayers, Math.ceil(T / 16), 16, cfg.numKvHeads, cfg.headDim, 'f32');
  const hidden = new Float32Array(T * cfg.hiddenSize);
  const idx = Int32Array.from(prompt, (_, i) => i);
  const logits = model.forward({
    tokens: Int32Array.from(prompt), positions: idx, slots: idx, logitRows: idx,
    attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(T), blockTables: Int32Array.from({ length: Math.ceil(T / 16) }, (_, i) => i), maxBlocks: Math.ceil(T / 16) },
  }, kv, hidden).slice();
  return { logits, hidden };
}

const SEED = (Math.random() * 2 ** 32) >>> 0;

const sumOf = (c: Record<string, number>, prefix: string) => Object.entries(c).reduce((a, [k, v]) => a + (k.startsWith(prefix) ? v : 0), 0);

describe("load dtype 'bf16' on the native backend", { skip }, () => {
  it(`every weight matrix is bf16, the bf16 matmuls run, logits within the bf16 rounding bound of the f32 model and not equal to them (seed ${SEED})`, async () => {
    const seed = SEED;
    const r = rand(seed);
    const prompt = Array.from({ length: 6 + Math.floor(r() * 20) }, () => Math.floor(r() * 4096));
    const f32 = await openModel(BROWN, { backend: 'native', tokenizerOptional: true });
    const bf16 = await openModel(BROWN, { backend: 'native', tokenizerOptional: true, load: { dtype: 'bf16' } });
    const w = bf16.model.weights;
    const L = bf16.model.config.numLayers;
    for (const [i, l] of w.layers.entries()) {
      for (const [k, t] of Object.entries({ wq: l.wq, wk: l.wk, wv: l.wv, wo: l.wo, wGate: l.wGate, wUp: l.wUp, wDown: l.wDown })) assert.equal(t.dtype, 'bf16', `layer ${i} ${k}`);
    }
    assert.equal(w.embed.dtype, 'bf16');
    assert.equal(w.head.dtype, 'bf16');
    assert.equal(f32.model.weights.layers[0]!.wq.dtype, 'f32', 'the plain open keeps f32');

    const want = prefill(f32.model, prompt);
    const c0 = { ...loadAddon()!.counters() };
    const got = prefill(bf16.model, prompt).logits;
    const c1 = loadAddon()!.counters();
    // 7 linears per layer and the head, all bf16 (bf16r16 where repacked), none in f32
    assert.ok(sumOf(c1, 'matmul.bf16') - sumOf(c0, 'matmul.bf16') >= 7 * L + 1, `bf16 matmul calls: ${JSON.stringify(c1)}`);
    assert.equal(sumOf(c1, 'matmul.f32') - sumOf(c0, 'matmul.f32'), 0, 'no f32 matmul ran on the bf16 model');

    // Bound, first order in u = 2^-9 (bf16's unit roundoff): a bf16 GEMV rounds its weights (≤ u relative each) and,
    // with vdpbf16ps, its inputs (≤ u), so a stage's output moves by at most 2u·Σ|w||x|. Logit v at token t passes
    // through the head (2u) after 2L residual sub-blocks (attention, MLP: 2u each, carried to the head through the
    // residual stream and the final norm) and the bf16 embedding row (u): |Δ| ≤ (2 + 4L + 1)·u·S[t,v], with
    // S[t,v] = Σ_d |H[v,d]|·|h[t,d]| the head's magnitude on the f32 model's final hidden state h.
    const { hiddenSize: D, vocabSize: V } = f32.model.config;
    const head = new Float32Array(V * D); // (V, D)
    for (let v = 0; v < V; v++) dequantizeRow(f32.model.weights.head, v, head.subarray(v * D, (v + 1) * D));
    const u = 2 ** -9;
    let maxDiff = 0, worst = 0;
    for (let t = 0; t < prompt.length; t++) {
      for (let v = 0; v < V; v++) {
        let S = 0;
        for (let d = 0; d < D; d++) S += Math.abs(head[v * D + d]!) * Math.abs(want.hidden[t * D + d]!);
        const diff = Math.abs(got[t * V + v]! - want.logits[t * V + v]!);
        const tol = (2 + 4 * L + 1) * u * S;
        maxDiff = Math.max(maxDiff, diff);
        worst = Math.max(worst, diff / tol);
        if (!(diff <= tol)) assert.fail(`seed ${seed}: logit [${t}, ${v}] is ${got[t * V + v]}, f32 model ${want.logits[t * V + v]}: |Δ| ${diff} > bound ${tol}`);
      }
    }
    assert.ok(maxDiff > 0, 'the bf16 logits must differ from the f32 ones (else no conversion happened)');
    if (process.env.FLOE_TEST_VERBOSE) console.log({ seed, maxDiff, worstShareOfBound: worst });
  });

  it('streamed layers convert one tensor at a time to the same bits: generation equals the resident bf16 model bit for bit', async () => {
    const prompt = [5, 17, 300, 9, 44, 1200];
    const prev = process.env.FLOE_R16_REPACK;
    process.env.FLOE_R16_REPACK = '0'; // streamed layers keep the file layout; compare with the resident model in it
    let resident;
    try {
      resident = await openModel(BROWN, { backend: 'native', tokenizerOptional: true, load: { dtype: 'bf16' } });
    } finally {
      if (prev === undefined) delete process.env.FLOE_R16_REPACK;
      else process.env.FLOE_R16_REPACK = prev;
    }
    const streamed = await openModel(BROWN, { backend: 'native', tokenizerOptional: true, load: { dtype: 'bf16' }, offload: { offloadRatio: 0.5 } });
    const st = streamed.model.layerStream!;
    assert.equal(st.stats.streamedLayers, 3);
    assert.equal(st.stats.layerBytes, 2 * (256 * 256 * 2 + 128 * 256 * 2 + 3 * 256 * 704), 'slots sized for bf16, not f32');
    for (const l of [0, 1]) assert.equal(streamed.model.weights.layers[l]!.wq.dtype, 'bf16', `layer ${l} (one resident, one streamed)`);
    assert.equal(streamed.model.weights.embed.dtype, 'bf16', 'the resident embedding (and tied head) converted too');
    const gen = (m: LlamaModel) => {
      const g = generate(m, prompt, { maxTokens: 10, sampling: { temperature: 0 }, logprobs: 4, promptLogprobs: 4, prefillChunk: 4 });
      return { ids: g.outputIds, logprobs: g.logprobs, promptLogprobs: g.promptLogprobs };
    };
    assert.deepEqual(gen(streamed.model), gen(resident.model));
    assert.ok(st.stats.layerReads > 0, 'layers were read from the spill file');
    st.dispose();
  });
});
