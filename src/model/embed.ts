// Embedder: text → one L2-normalised vector per text, by pooling a Llama model's final-normed hidden states.
//
// S texts in a forward, T tokens packed, D hidden.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { BackendName } from '../backend/select.js';
import type { LoadOptions } from '../formats/load.js';
import type { Tokenizer } from '../formats/tokenizer.js';
import { applyAdapter } from './adapter.js';
import { KvCache } from './kv-cache.js';
import type { LlamaModel } from './llama.js';
import { openModel } from './open.js';
import { NonFiniteOutputError } from './sampler.js';
import { checkOptions, describe, type OptionKeys } from '../tensor/options.js';
import { showJson } from '../formats/json-show.js';

export type Pooling = 'mean' | 'last';

/** `embedding_config.json` beside config.json; every key optional. */
export interface EmbeddingConfig {
  readonly pooling: Pooling; // default 'mean'
  readonly maxTokens: number; // texts are cut to this many tokens (BOS included); default min(context, 512)
  readonly skipBos: boolean; // "pool_skip_bos": mean pooling leaves out a leading BOS; default false (models trained with it pooled)
}

export const EMBEDDING_CONFIG_FILE = 'embedding_config.json';

export interface EmbedderOptions {
  readonly backend?: BackendName;
  readonly threads?: number;
  readonly load?: LoadOptions;
  readonly pooling?: Pooling; // overrides embedding_config.json
  readonly maxTokens?: number; // overrides embedding_config.json
  readonly skipBos?: boolean; // overrides embedding_config.json's pool_skip_bos
  readonly batchTokens?: number; // tokens per forward (default 4096); a longer single text still runs alone
  readonly adapter?: string; // a PEFT LoRA adapter dir (e.g. a contrastive `floe finetune` output); its embedding_config.json wins
}

const BLOCK = 16;
const DEFAULT_MAX_TOKENS = 512;
const EMBEDDER_OPTIONS = {
  backend: true, threads: true, load: true, pooling: true, maxTokens: true, skipBos: true, batchTokens: true, adapter: true,
} as const satisfies OptionKeys<EmbedderOptions>;

/** Read `embedding_config.json` of an HF directory (absent → defaults). */
export function readEmbeddingConfig(dir: string, contextLen: number): EmbeddingConfig {
  const p = join(dir, EMBEDDING_CONFIG_FILE);
  const def: EmbeddingConfig = { pooling: 'mean', maxTokens: Math.min(contextLen, DEFAULT_MAX_TOKENS), skipBos: false };
  if (!statSync(dir).isDirectory() || !existsSync(p)) return def;
  // a JSON error names no file, null read as a TypeError, a list as the defaults; JSON.stringify of a value nested
  // thousands deep overflowed the stack (showJson cuts it short)
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(p, 'utf8'));
  } catch (e) {
    throw new Error(`${p}: bad JSON: ${(e as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error(`${p}: must be a JSON object, got ${showJson(parsed, 40)}`);
  const j = parsed as Record<string, unknown>;
  const pooling = j.pooling ?? def.pooling;
  if (pooling !== 'mean' && pooling !== 'last') throw new Error(`${p}: "pooling" must be "mean" or "last", got ${showJson(pooling, 40)}`);
  const maxTokens = j.max_tokens ?? def.maxTokens;
  if (typeof maxTokens !== 'number' || !Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > contextLen) {
    throw new Error(`${p}: "max_tokens" must be an integer in [1, ${contextLen}] (the model's context), got ${showJson(maxTokens, 40)}`);
  }
  const skipBos = j.pool_skip_bos ?? def.skipBos;
  if (typeof skipBos !== 'boolean') throw new Error(`${p}: "pool_skip_bos" must be true or false, got ${showJson(skipBos, 40)}`);
  return { pooling, maxTokens, skipBos };
}

/**
 * out (D) = pool of rows (n, D): the mean of rows [skip, n), or the last row; then scaled to unit L2 norm (a zero vector
 * stays zero). Rows holding NaN or Inf throw.
 */
export function poolRows(out: Float32Array, rows: Float32Array, n: number, D: number, pooling: Pooling, skip = 0): void {
  if (pooling === 'last') out.set(rows.subarray((n - 1) * D, n * D));
  else {
    if (skip >= n) throw new RangeError(`poolRows: skipping ${skip} of ${n} rows leaves none to pool`);
    const acc = new Float64Array(D);
    for (let i = skip; i < n; i++) for (let d = 0; d < D; d++) acc[d]! += rows[i * D + d]!;
    for (let d = 0; d < D; d++) out[d] = acc[d]! / (n - skip);
  }
  const norm = l2Normalize(out);
  // NaN weights or an overflow: an embedding of NaN (JSON nulls) would poison every search it joins
  if (!Number.isFinite(norm)) throw new NonFiniteOutputError(`the model's hidden states are not finite (pooled norm ${norm}): its weights hold NaN or Inf, or its activations overflowed (check the checkpoint)`);
}

/** v /= ‖v‖₂ in place; returns the norm before scaling. */
export function l2Normalize(v: Float32Array): number {
  let ss = 0;
  for (let i = 0; i < v.length; i++) ss += v[i]! * v[i]!;
  const norm = Math.sqrt(ss);
  const inv = norm > 0 ? 1 / norm : 0;
  for (let i = 0; i < v.length; i++) v[i] = v[i]! * inv;
  return norm;
}

export class Embedder {
  readonly dim: number; // D
  private kv: KvCache | null = null;
  private hidden = new Float32Array(0); // (T, D) scratch, grown

  constructor(
    readonly model: LlamaModel,
    readonly tokenizer: Tokenizer,
    readonly pooling: Pooling,
    readonly maxTokens: number,
    readonly batchTokens = 4096,
    readonly skipBos = false, // mean pooling leaves out a leading BOS (tokenizer.bosId) of a text of 2+ tokens
  ) {
    this.dim = model.config.hiddenSize;
    if (maxTokens > model.config.maxPositionEmbeddings) throw new RangeError(`maxTokens ${maxTokens} exceeds the model's context of ${model.config.maxPositionEmbeddings}`);
  }

  /** Open an HF model directory as an embedder (pooling and length from embedding_config.json unless given). */
  static async open(path: string, opts: EmbedderOptions = {}): Promise<Embedder> {
    checkOptions('Embedder.open', opts, EMBEDDER_OPTIONS);
    if (opts.pooling !== undefined && opts.pooling !== 'mean' && opts.pooling !== 'last') throw new TypeError(`pooling must be 'mean' or 'last', got ${describe(opts.pooling)}`);
    for (const k of ['maxTokens', 'batchTokens'] as const) {
      const v = opts[k];
      if (v !== undefined && !(Number.isInteger(v) && v >= 1)) throw new RangeError(`${k} must be an integer >= 1, got ${describe(v)}`);
    }
    const m = await openModel(path, { backend: opts.backend, threads: opts.threads, load: opts.load });
    if (!m.tokenizer) throw new Error(`${path}: no tokenizer; an embedder needs tokenizer.json`);
    const ctx = m.model.config.maxPositionEmbeddings;
    const withConfig = opts.adapter !== undefined && existsSync(join(opts.adapter, EMBEDDING_CONFIG_FILE)) ? opts.adapter : path;
    const ec = readEmbeddingConfig(withConfig, ctx);
    const model = opts.adapter === undefined ? m.model : applyAdapter(m.model, opts.adapter);
    return new Embedder(model, m.tokenizer, opts.pooling ?? ec.pooling, opts.maxTokens ?? ec.maxTokens, opts.batchTokens, opts.skipBos ?? ec.skipBos);
  }

  /** Token ids the embedder feeds for a text: the tokenizer's (BOS included), cut to maxTokens. */
  encode(text: string): number[] {
    const ids = this.tokenizer.encode(text);
    return ids.length > this.maxTokens ? ids.slice(0, this.maxTokens) : ids;
  }

  /** One unit vector (D) per text, in order; texts are packed into forwards of up to batchTokens tokens. */
  embed(texts: readonly string[]): Float32Array[] {
    if (!Array.isArray(texts)) throw new TypeError(`embed takes an array of texts, got ${describe(texts)}`);
    texts.forEach((t, i) => { if (typeof t !== 'string') throw new TypeError(`input ${i} must be a string, got ${describe(t)}`); });
    return this.embedIds(texts.map((t) => this.encode(t)));
  }

  /** One unit vector (D) per token sequence (each non-empty, at most maxTokens, ids in the vocabulary). */
  embedIds(seqs: readonly (readonly number[])[]): Float32Array[] {
    const V = this.model.config.vocabSize;
    seqs.forEach((ids, i) => {
      if (ids.length === 0) throw new RangeError(`input ${i} has no tokens; give at least one`);
      if (ids.length > this.maxTokens) throw new RangeError(`input ${i} is ${ids.length} tokens; this embedder takes at most ${this.maxTokens}`);
      for (const id of ids) if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`input ${i}: token id ${id} outside the vocabulary [0, ${V})`);
    });
    const out: Float32Array[] = new Array(seqs.length);
    let i = 0;
    while (i < seqs.length) {
      let j = i, T = 0;
      while (j < seqs.length && (j === i || T + seqs[j]!.length <= this.batchTokens)) T += seqs[j++]!.length;
      this.forward(seqs, i, j, T, out);
      i = j;
    }
    return out;
  }

  /** One forward over seqs[i0, i1) packed (T tokens), each in its own run of KV blocks. */
  private forward(seqs: readonly (readonly number[])[], i0: number, i1: number, T: number, out: Float32Array[]): void {
    const cfg = this.model.config;
    const D = this.dim;
    const S = i1 - i0;
    const maxBlocks = Math.ceil(Math.max(...seqs.slice(i0, i1).map((s) => s.length)) / BLOCK);
    const blocksNeeded = S * maxBlocks;
    if (!this.kv || this.kv.numBlocks < blocksNeeded) {
      this.kv = new KvCache(cfg.numLayers, Math.max(blocksNeeded, Math.ceil(this.batchTokens / BLOCK) * 2), BLOCK, cfg.numKvHeads, cfg.headDim, 'f32');
    }
    const tokens = new Int32Array(T), positions = new Int32Array(T), slots = new Int32Array(T);
    const qStart = new Int32Array(S + 1), ctxLen = new Int32Array(S);
    const blockTables = new Int32Array(S * maxBlocks); // (S, maxBlocks): sequence s owns blocks s*maxBlocks ..
    let t = 0;
    for (let s = 0; s < S; s++) {
      const ids = seqs[i0 + s]!;
      qStart[s] = t;
      ctxLen[s] = ids.length;
      for (let b = 0; b < maxBlocks; b++) blockTables[s * maxBlocks + b] = s * maxBlocks + b;
      for (let p = 0; p < ids.length; p++, t++) {
        tokens[t] = ids[p]!;
        positions[t] = p;
        slots[t] = (s * maxBlocks) * BLOCK + p;
      }
    }
    qStart[S] = T;
    if (this.hidden.length < T * D) this.hidden = new Float32Array(T * D);
    const hidden = this.hidden.subarray(0, T * D); // (T, D) final-normed
    const allRows = Int32Array.from({ length: T }, (_, r) => r);
    this.model.forward({ tokens, positions, slots, attn: { numSeqs: S, qStart, ctxLen, blockTables, maxBlocks }, logitRows: allRows, numLogits: 0 }, this.kv, hidden);
    for (let s = 0; s < S; s++) {
      const e = new Float32Array(D);
      const a = qStart[s]!, n = ctxLen[s]!;
      const skip = this.skipBos && n > 1 && this.tokenizer.bosId !== null && tokens[a] === this.tokenizer.bosId ? 1 : 0;
      poolRows(e, hidden.subarray(a * D, (a + n) * D), n, D, this.pooling, skip);
      out[i0 + s] = e;
    }
  }
}
