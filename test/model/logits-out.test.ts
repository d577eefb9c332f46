// forward(..., logitsOut): the logits written into a caller's buffer (the engine runner reuses one) equal a fresh
// array's bit for bit on fresh random models, on both backends; a buffer too small is refused with the sizes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { selectBackend } from '../../src/backend/select.js';
import { loadNativeBackend } from '../../src/backend/native.js';
import { KvCache } from '../../src/model/kv-cache.js';
import { rand } from '../engine/helpers.js';
import { randomModel } from './random-llama.js';

const BLOCK = 16;

test('forward writes the logits into logitsOut, equal to a fresh array bit for bit', () => {
  const seed = (Math.random() * 2 ** 32) >>> 0;
  const r = rand(seed);
  for (const name of loadNativeBackend() ? (['native', 'reference'] as const) : (['reference'] as const)) {
    const be = selectBackend(name, 2);
    const model = randomModel(r, { H: 4, K: 2, E: 16, D: 64, F: 96, V: 80, layers: 2 }, 'f32', be);
    const cfg = model.config;
    const T = 5;
    const inp = () => ({
      tokens: Int32Array.from({ length: T }, () => Math.floor(r() * cfg.vocabSize)), positions: Int32Array.from({ length: T }, (_, i) => i),
      slots: Int32Array.from({ length: T }, (_, i) => i), attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(T), blockTables: Int32Array.of(0), maxBlocks: 1 },
      logitRows: Int32Array.of(2, 4),
    });
    const a = inp();
    const kv1 = new KvCache(cfg.numLayers, 2, BLOCK, cfg.numKvHeads, cfg.headDim, 'f32');
    const kv2 = new KvCache(cfg.numLayers, 2, BLOCK, cfg.numKvHeads, cfg.headDim, 'f32');
    const fresh = model.forward(a, kv1);
    const buf = new Float32Array(3 * cfg.vocabSize).fill(NaN); // larger than needed, stale contents
    const got = model.forward(a, kv2, undefined, buf);
    assert.equal(got.buffer, buf.buffer, `${name}: a view of the caller's buffer`);
    assert.equal(got.length, 2 * cfg.vocabSize);
    assert.deepEqual(got, fresh, `${name} (seed ${seed})`);
    assert.throws(() => model.forward(a, kv2, undefined, new Float32Array(cfg.vocabSize)),
      new RegExp(`logitsOut holds ${cfg.vocabSize} values, 2 rows of logits need ${2 * cfg.vocabSize}`));
  }
});
