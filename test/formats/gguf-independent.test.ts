// A GGUF written by llama.cpp's gguf-py, not by floe (scripts/make_independent_gguf.py): floe loads it, keeps the
// stored F32 / F16 / Q8_0 formats, and its logits equal a float64 numpy forward over the same stored weights.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import type { Backend } from '../../src/backend/backend.js';
import { referenceBackend } from '../../src/backend/reference.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { loadModel } from '../../src/formats/load.js';
import { tokenizerFromGguf } from '../../src/formats/gguf-tokenizer.js';
import { SpmTokenizer } from '../../src/formats/spm.js';
import { LlamaModel } from '../../src/model/llama.js';
import { KvCache } from '../../src/model/kv-cache.js';
import { defaultKvDtype } from '../../src/model/generate.js';
import { repoPath } from '../repo.js';

const DIR = repoPath('test/fixtures/gguf-independent/');
const SPM = repoPath('test/fixtures/spm/');
const ref = JSON.parse(fs.readFileSync(DIR + 'reference.json', 'utf8')) as {
  prompt_ids: number[]; logits: { file: string; shape: [number, number] }; tensor_types: Record<string, string>;
  config: { vocab: number; hidden: number; ffn: number; layers: number; heads: number; kv_heads: number; head_dim: number; rms_eps: number; rope_theta: number };
};
const buf = fs.readFileSync(DIR + ref.logits.file);
const want = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4); // (T, V)

/** Logits (T, V) of one prompt forward pass. */
function logits(model: LlamaModel, ids: number[], kvDtype: 'f32' | 'bf16' | 'fp8_e4m3'): Float32Array {
  const cfg = model.config;
  const T = ids.length;
  const kv = new KvCache(cfg.numLayers, Math.ceil(T / 16), 16, cfg.numKvHeads, cfg.headDim, kvDtype);
  const positions = Int32Array.from({ length: T }, (_, i) => i);
  return model.forward({
    tokens: Int32Array.from(ids), positions, slots: positions,
    attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(T), blockTables: Int32Array.from({ length: kv.numBlocks }, (_, i) => i), maxBlocks: kv.numBlocks },
    logitRows: positions,
  }, kv).slice();
}

test('independent GGUF: config and stored tensor formats as gguf-py wrote them', async () => {
  const m = await loadModel(DIR + 'tiny-llama.gguf');
  try {
    const c = ref.config;
    assert.deepEqual(
      [m.config.vocabSize, m.config.hiddenSize, m.config.intermediateSize, m.config.numLayers, m.config.numHeads, m.config.numKvHeads, m.config.headDim, m.config.tieWordEmbeddings],
      [c.vocab, c.hidden, c.ffn, c.layers, c.heads, c.kv_heads, c.head_dim, false]);
    assert.equal(m.config.ropeTheta, c.rope_theta);
    assert.equal(m.tensors.get('model.embed_tokens.weight')!.dtype, 'q8_0');
    assert.equal(m.tensors.get('lm_head.weight')!.dtype, 'f16');
    assert.equal(m.tensors.get('model.layers.1.self_attn.q_proj.weight')!.dtype, 'q8_0');
    assert.equal(m.tensors.get('model.layers.1.self_attn.k_proj.weight')!.dtype, 'f16');
    assert.equal(m.tensors.get('model.layers.0.self_attn.o_proj.weight')!.dtype, 'f32');
    assert.equal(ref.tensor_types['blk.0.attn_q.weight'], 'q8_0');
  } finally {
    m.dispose();
  }
});

const backends: [string, Backend, number][] = [['reference', referenceBackend, 1e-5]];
const native = loadNativeBackend();
// native q8_0 / f16 matmuls take int8 / bf16 activations (as llama.cpp does), and a bf16 KV cache
if (native) backends.push(['native', native, 0.25]);

for (const [name, backend, tol] of backends) {
  test(`independent GGUF on ${name}: logits equal numpy's float64 forward over the stored weights`, async () => {
    const m = await loadModel(DIR + 'tiny-llama.gguf');
    try {
      const model = LlamaModel.fromTensors(m.config, m.tensors, backend, m.ropeFreqFactors);
      const before = { ...nativeCounters() };
      const got = logits(model, ref.prompt_ids, name === 'reference' ? 'f32' : defaultKvDtype(model));
      const [T, V] = ref.logits.shape;
      assert.equal(got.length, T * V);
      let worst = 0, scale = 0;
      for (let i = 0; i < T * V; i++) {
        worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
        scale = Math.max(scale, Math.abs(want[i]!));
      }
      assert.ok(scale > 1, `logits are not trivially small (max |logit| ${scale})`);
      assert.ok(worst <= tol, `max |Δlogit| ${worst.toExponential(2)} > ${tol} (max |logit| ${scale.toFixed(2)})`);
      for (let t = 0; t < T; t++) {
        const row = (a: Float32Array) => { let b = 0; for (let v = 1; v < V; v++) if (a[t * V + v]! > a[t * V + b]!) b = v; return b; };
        if (name === 'reference') assert.equal(row(got), row(want), `argmax at position ${t}`);
      }
      if (name === 'native') {
        const after = nativeCounters();
        assert.ok(Object.keys(after).some((k) => k.startsWith('matmul.q8_0.') && (after[k] ?? 0) > (before[k] ?? 0)), 'native q8_0 matmul ran');
      }
    } finally {
      m.dispose();
    }
  });
}

test('independent GGUF: its SentencePiece vocabulary tokenizes as llama.cpp did on the floe-written file', async () => {
  const m = await loadModel(DIR + 'tiny-llama.gguf');
  const tok = tokenizerFromGguf(m.ggufMetadata!);
  m.dispose();
  assert.ok(tok instanceof SpmTokenizer);
  const lc = JSON.parse(fs.readFileSync(SPM + 'llama-cpp.json', 'utf8')) as { cases: { text: string; ids_special: number[] }[] };
  for (const c of lc.cases) assert.deepEqual(tok.encode(c.text, { addSpecialTokens: false }), c.ids_special, JSON.stringify(c.text));
});
