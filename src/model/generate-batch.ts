// sampleBatch: several independent sequences decoded together, one forward per step over every live sequence (M rows
// per matmul instead of 1), each with its own sampler and seed; where the kernels are batch-invariant (the reference
// backend) every sequence gets exactly the tokens generate() gives it alone. Used by on-policy distillation.
//
// S sequences; each owns a contiguous run of KV blocks: sequence s, position p → slot (base_s + ⌊p/L⌋)·L + p mod L.

import type { KvDType } from '../backend/backend.js';
import { defaultKvDtype } from './generate.js';
import { KvCache } from './kv-cache.js';
import type { LlamaModel } from './llama.js';
import { DEFAULT_SAMPLING, Sampler, TokenCounts, type SamplingParams } from './sampler.js';

export interface BatchRequest {
  readonly promptIds: readonly number[];
  readonly maxTokens: number; // >= 1
  readonly sampling?: Partial<SamplingParams>; // give each its own seed for reproducible samples
}

export interface BatchOptions {
  readonly kvDtype?: KvDType;
  readonly stopTokenIds?: readonly number[]; // default: the model's EOS ids (kept in the output)
  readonly prefillTokens?: number; // prompt tokens per prefill forward (default 2048)
}

const BLOCK = 16;

/** The output ids of every request (ending at a stop token, kept, or at maxTokens). */
export function sampleBatch(model: LlamaModel, reqs: readonly BatchRequest[], opts: BatchOptions = {}): number[][] {
  const cfg = model.config, V = cfg.vocabSize, S = reqs.length;
  if (S === 0) return [];
  reqs.forEach((r, s) => {
    if (r.promptIds.length === 0) throw new Error(`sequence ${s}: prompt is empty: give at least one token`);
    for (const id of r.promptIds) if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`sequence ${s}: prompt token id ${id} outside the vocabulary [0, ${V})`);
    if (!(Number.isInteger(r.maxTokens) && r.maxTokens >= 1)) throw new RangeError(`sequence ${s}: max tokens must be an integer >= 1, got ${r.maxTokens}`);
    if (r.promptIds.length + r.maxTokens > cfg.maxPositionEmbeddings) {
      throw new RangeError(`sequence ${s}: prompt (${r.promptIds.length} tokens) + max tokens (${r.maxTokens}) exceeds the model's context of ${cfg.maxPositionEmbeddings}`);
    }
  });
  const blocks = reqs.map((r) => Math.ceil((r.promptIds.length + r.maxTokens) / BLOCK));
  const maxBlocks = Math.max(...blocks);
  const base: number[] = [];
  let nb = 0;
  for (const b of blocks) { base.push(nb); nb += b; }
  const kv = new KvCache(model.weights.layers.length, nb, BLOCK, cfg.numKvHeads, cfg.headDim, opts.kvDtype ?? defaultKvDtype(model));
  const table = new Int32Array(S * maxBlocks); // (S, maxBlocks)
  for (let s = 0; s < S; s++) for (let j = 0; j < blocks[s]!; j++) table[s * maxBlocks + j] = base[s]! + j;
  const samplers = reqs.map((r) => new Sampler({ ...DEFAULT_SAMPLING, ...r.sampling }, V, model.backend));
  const counts = reqs.map((r) => new TokenCounts(r.promptIds));
  const stop = new Set(opts.stopTokenIds ?? cfg.eosTokenIds);
  const out: number[][] = reqs.map(() => []);
  const len = reqs.map((r) => r.promptIds.length); // tokens in the cache after the step in flight

  /** One forward: `parts[i]` = new tokens of sequence seqs[i] at positions start_i ..; logits (seqs, V) of each last row. */
  const step = (seqs: readonly number[], parts: readonly (readonly number[])[], starts: readonly number[]): Float32Array => {
    const T = parts.reduce((a, p) => a + p.length, 0);
    const tokens = new Int32Array(T), positions = new Int32Array(T), slots = new Int32Array(T);
    const qStart = new Int32Array(seqs.length + 1), ctxLen = new Int32Array(seqs.length), tables = new Int32Array(seqs.length * maxBlocks);
    const logitRows = new Int32Array(seqs.length);
    let t = 0;
    seqs.forEach((s, i) => {
      qStart[i] = t;
      tables.set(table.subarray(s * maxBlocks, (s + 1) * maxBlocks), i * maxBlocks);
      parts[i]!.forEach((id, j) => {
        const p = starts[i]! + j;
        tokens[t] = id; positions[t] = p; slots[t] = table[s * maxBlocks + Math.floor(p / BLOCK)]! * BLOCK + (p % BLOCK);
        t++;
      });
      ctxLen[i] = starts[i]! + parts[i]!.length;
      logitRows[i] = t - 1;
    });
    qStart[seqs.length] = T;
    return model.forward({ tokens, positions, slots, attn: { numSeqs: seqs.length, qStart, ctxLen, blockTables: tables, maxBlocks }, logitRows }, kv);
  };
  const emit = (s: number, logits: Float32Array, row: number): boolean => {
    const id = samplers[s]!.sample(logits.subarray(row * V, (row + 1) * V), counts[s]!);
    out[s]!.push(id);
    counts[s]!.add(id);
    return stop.has(id) || out[s]!.length === reqs[s]!.maxTokens;
  };

  // prefill: whole prompts, packed up to prefillTokens per forward (a longer prompt alone)
  const live: number[] = [];
  const budget = opts.prefillTokens ?? 2048;
  for (let s = 0; s < S;) {
    const group: number[] = [];
    let n = 0;
    while (s < S && (group.length === 0 || n + reqs[s]!.promptIds.length <= budget)) { n += reqs[s]!.promptIds.length; group.push(s++); }
    const logits = step(group, group.map((g) => reqs[g]!.promptIds), group.map(() => 0));
    group.forEach((g, i) => { if (!emit(g, logits, i)) live.push(g); });
  }
  // decode: every live sequence's last token, one forward per step
  while (live.length > 0) {
    const logits = step(live, live.map((s) => [out[s]!.at(-1)!]), live.map((s) => len[s]! + out[s]!.length - 1));
    const next: number[] = [];
    live.forEach((s, i) => { if (!emit(s, logits, i)) next.push(s); });
    live.splice(0, live.length, ...next);
  }
  return out;
}
