// One sequence on an identity block table: the KV cache and the forward step that verify-ops.ts and step-ab.ts time
// (R new positions after a context, every row's logits, into one reused logits buffer).

import { defaultKvDtype } from '../src/model/generate.js';
import { KvCache } from '../src/model/kv-cache.js';
import type { LlamaModel } from '../src/model/llama.js';

const BLOCK = 16;

/** A cache for `positions` tokens of one sequence; forward(model, tokens, start) runs them at start.. through it. */
export function oneSequence(model: LlamaModel, positions: number, maxRows: number): {
  kv: KvCache; forward: (m: LlamaModel, tokens: Int32Array, start: number) => Float32Array;
} {
  const cfg = model.config;
  const numBlocks = Math.ceil(positions / BLOCK);
  const table = Int32Array.from({ length: numBlocks }, (_, i) => i);
  const kv = new KvCache(cfg.numLayers, numBlocks, BLOCK, cfg.numKvHeads, cfg.headDim, defaultKvDtype(model));
  const logits = new Float32Array(maxRows * cfg.vocabSize);
  const forward = (m: LlamaModel, tokens: Int32Array, start: number): Float32Array => {
    const T = tokens.length;
    const pos = Int32Array.from({ length: T }, (_, i) => start + i);
    return m.forward({
      tokens, positions: pos, slots: pos,
      attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(start + T), blockTables: table, maxBlocks: numBlocks },
      logitRows: Int32Array.from({ length: T }, (_, i) => i),
    }, kv, undefined, logits);
  };
  return { kv, forward };
}
