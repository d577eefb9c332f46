// Embedder: batched, packed forwards on the native backend against one-text-at-a-time reference forwards with
// pooling written out here; tokenization, truncation and batching limits on the built-in model's tokenizer.
//
// D hidden, V vocab.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { referenceBackend } from '../../src/backend/reference.js';
import { Embedder, EMBEDDING_CONFIG_FILE, readEmbeddingConfig } from '../../src/model/embed.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { KvCache } from '../../src/model/kv-cache.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { rand, randomPrompt } from '../engine/helpers.js';
import { randomModel, type Shape } from './random-llama.js';

const native = loadNativeBackend();
const SEED = process.env.FLOE_SEED !== undefined ? Number(process.env.FLOE_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const SHAPE: Shape = { H: 4, K: 2, E: 16, D: 64, F: 96, V: 200, layers: 2 };

/** Oracle: one text alone, one block table, all rows normed; mean or last row in f64, then unit norm. */
function oracle(model: LlamaModel, ids: readonly number[], pooling: 'mean' | 'last', skip = 0): Float64Array {
  const { numLayers, numKvHeads, headDim, hiddenSize: D } = model.config;
  const T = ids.length;
  const nb = Math.ceil(T / 16);
  const kv = new KvCache(numLayers, nb, 16, numKvHeads, headDim, 'f32');
  const pos = Int32Array.from({ length: T }, (_, i) => i);
  const hidden = new Float32Array(T * D);
  model.forward({
    tokens: Int32Array.from(ids), positions: pos, slots: pos,
    attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(T), blockTables: Int32Array.from({ length: nb }, (_, i) => i), maxBlocks: nb },
    logitRows: pos, numLogits: 0,
  }, kv, hidden);
  const v = new Float64Array(D);
  const rows = pooling === 'mean' ? [...Array(T).keys()].slice(skip) : [T - 1];
  for (const r of rows) for (let d = 0; d < D; d++) v[d]! += hidden[r * D + d]! / rows.length;
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

function maxDiff(a: Float32Array, b: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

for (const pooling of ['mean', 'last'] as const) {
  test(`embedIds: packed native forwards match one-at-a-time reference (${pooling} pooling, seed ${SEED})`, { skip: !native && 'native addon not built' }, () => {
    const model = randomModel(rand(SEED), SHAPE, 'f32', native!);
    const ref = randomModel(rand(SEED), SHAPE, 'f32', referenceBackend);
    const r = rand(SEED ^ 0x9e3779b9);
    // lengths straddle block boundaries; batchTokens 40 forces several forwards and one text longer than a batch
    const seqs = [1, 5, 16, 17, 33, 3, 48, 2, 31].map((n) => randomPrompt(r, n, SHAPE.V));
    const emb = new Embedder(model, null as never, pooling, 64, 40);
    const before = nativeCounters();
    const got = emb.embedIds(seqs);
    const after = nativeCounters();
    const attn = (c: Record<string, number>) => Object.entries(c).filter(([k]) => k.startsWith('attention')).reduce((a, [, v]) => a + v, 0);
    assert.ok(attn(after) > attn(before), 'the native attention kernel ran');
    assert.equal(got.length, seqs.length);
    seqs.forEach((ids, i) => {
      const want = oracle(ref, ids, pooling);
      assert.equal(got[i]!.length, SHAPE.D);
      assert.ok(Math.abs(Math.hypot(...got[i]!) - 1) < 1e-5, `text ${i} has unit norm`);
      const d = maxDiff(got[i]!, want);
      assert.ok(d < 2e-4, `text ${i} (${ids.length} tokens): max |native batched − reference single| = ${d}`);
    });
    // a different packing (one forward for everything) gives the same vectors
    const one = new Embedder(model, null as never, pooling, 64, 4096).embedIds(seqs);
    seqs.forEach((_, i) => assert.ok(maxDiff(one[i]!, Float64Array.from(got[i]!)) < 1e-5, `text ${i} independent of its batch`));
  });
}

test(`embedIds with skipBos: mean pooling leaves out a leading BOS only (reference oracle, seed ${SEED})`, { skip: !native && 'native addon not built' }, () => {
  const model = randomModel(rand(SEED), SHAPE, 'f32', native!);
  const ref = randomModel(rand(SEED), SHAPE, 'f32', referenceBackend);
  const r = rand(SEED ^ 0x5b05);
  const BOS = 7;
  // BOS-led texts of several lengths, a lone BOS (kept: nothing else to pool), and texts without BOS (all rows pooled)
  const seqs = [[BOS, ...randomPrompt(r, 4, SHAPE.V)], [BOS, ...randomPrompt(r, 20, SHAPE.V)], [BOS], randomPrompt(r, 6, SHAPE.V).map((t) => (t === BOS ? 8 : t))];
  const got = new Embedder(model, { bosId: BOS } as never, 'mean', 64, 4096, true).embedIds(seqs);
  const plain = new Embedder(model, { bosId: BOS } as never, 'mean', 64, 4096, false).embedIds(seqs);
  seqs.forEach((ids, i) => {
    const skip = ids[0] === BOS && ids.length > 1 ? 1 : 0;
    const d = maxDiff(got[i]!, oracle(ref, ids, 'mean', skip));
    assert.ok(d < 2e-4, `text ${i} (${ids.length} tokens, skip ${skip}): max |native − reference| = ${d}`);
    if (skip) assert.ok(maxDiff(plain[i]!, Float64Array.from(got[i]!)) > 1e-3, `text ${i}: skipping BOS changes the vector`);
  });
});

test('embedIds: refuses empty, too long and out-of-vocabulary inputs, saying which', () => {
  const model = randomModel(rand(SEED), SHAPE, 'f32', referenceBackend);
  const emb = new Embedder(model, null as never, 'mean', 8);
  assert.throws(() => emb.embedIds([[1], []]), /input 1 has no tokens/);
  assert.throws(() => emb.embedIds([[1, 2, 3, 4, 5, 6, 7, 8, 9]]), /input 0 is 9 tokens; this embedder takes at most 8/);
  assert.throws(() => emb.embedIds([[SHAPE.V]]), /token id 200 outside the vocabulary \[0, 200\)/);
});

test('embed: texts go through the tokenizer (BOS added) and are cut to maxTokens', { skip: !native && 'native addon not built' }, async () => {
  const tok = (await loadTokenizer('models/floe-brown'))!;
  const model = randomModel(rand(SEED), { ...SHAPE, V: tok.vocabSize }, 'f32', native!);
  const emb = new Embedder(model, tok, 'mean', 12);
  const texts = ['The jury said the election was conducted well.', 'short', 'a much longer text '.repeat(10)];
  const ids = texts.map((t) => tok.encode(t));
  assert.equal(ids[0]![0], tok.bosId);
  assert.deepEqual(emb.encode(texts[2]!), ids[2]!.slice(0, 12));
  const got = emb.embed(texts);
  const want = emb.embedIds(ids.map((x) => x.slice(0, 12)));
  texts.forEach((_, i) => assert.deepEqual(got[i], want[i]));
  // different texts, different vectors
  assert.ok(maxDiff(got[0]!, Float64Array.from(got[1]!)) > 1e-3);
});

test('readEmbeddingConfig: bad JSON, a non-object and values nested too deeply fail naming the file, not as a raw error', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'floe-embcfg-'));
  const file = path.join(dir, EMBEDDING_CONFIG_FILE);
  const cases: [string, string][] = [
    ['{"pooling": "mean",', 'bad JSON: '], // was SyntaxError naming no file
    ['null', 'must be a JSON object, got null'], // was TypeError: Cannot read properties of null
    ['[1]', 'must be a JSON object, got [1]'], // was read as the defaults
    [`{"pooling": ${'['.repeat(20000)}${']'.repeat(20000)}}`, '"pooling" must be "mean" or "last", got [an array nested too deeply to show]'], // was "Maximum call stack size exceeded"
    [`{"max_tokens": "${'x'.repeat(5000)}"}`, '"max_tokens" must be an integer in [1, 512] (the model\'s context), got "xxxx'],
  ];
  for (const [text, want] of cases) {
    fs.writeFileSync(file, text);
    assert.throws(() => readEmbeddingConfig(dir, 512), (e: Error) => e.constructor === Error && e.message.startsWith(`${file}: ${want}`) && e.message.length < 400, text.slice(0, 30));
  }
  fs.writeFileSync(file, '{"pooling": "last", "max_tokens": 64, "pool_skip_bos": true}');
  assert.deepEqual(readEmbeddingConfig(dir, 512), { pooling: 'last', maxTokens: 64, skipBos: true });
  fs.rmSync(dir, { recursive: true, force: true });
});
