// Contrastive objective: InfoNCE with in-batch negatives on pooled, L2-normalised final hidden states, from JSONL
// {"query","positive"[,"negative"]} lines; a micro-batch of B pairs packs B queries, B positives and its negatives.
//
// B queries in a micro-batch, M documents (B positives then the hard negatives), D hidden, T packed tokens.

import { writeFileSync } from 'node:fs';
import { fileLines } from '../formats/lines.js';
import { join } from 'node:path';
import type { Tokenizer } from '../formats/tokenizer.js';
import { EMBEDDING_CONFIG_FILE, type Pooling } from '../model/embed.js';
import type { HiddenLoss, PackedBatch } from '../model/llama-train.js';
import type { Sample } from './data.js';

export interface ContrastiveOptions {
  readonly temperature: number; // τ: logits are cosine / τ (default 0.05)
  readonly pooling: Pooling; // default 'mean'
  readonly bosId?: number | null; // mean pooling leaves out a text's leading token when it is this id (BOS: the same state for every text)
  readonly symmetric?: boolean; // add positive→query InfoNCE over the B positives (the two directions averaged)
}

export const DEFAULT_CONTRASTIVE: ContrastiveOptions = { temperature: 0.05, pooling: 'mean' };

/** One pair; `tokens` (all its texts end to end) sizes it for batching by tokens, `mask` is all zero (no LM loss). */
export interface PairSample extends Sample {
  readonly query: Int32Array;
  readonly positive: Int32Array;
  readonly negative: Int32Array | null;
}

/** Read and tokenize {"query","positive"[,"negative"]} lines (each text cut to maxSeqLen); fails at the first bad line. */
export function loadPairs(file: string, tok: Pick<Tokenizer, 'encode'>, maxSeqLen: number): { samples: PairSample[]; truncated: number } {
  const samples: PairSample[] = [];
  let truncated = 0;
  const enc = (s: string) => {
    const ids = tok.encode(s);
    if (ids.length > maxSeqLen) truncated++;
    return Int32Array.from(ids.length > maxSeqLen ? ids.slice(0, maxSeqLen) : ids);
  };
  const pair = (raw: string, i: number): void => {
    if (raw.trim() === '') return;
    const at = `${file}:${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch (e) {
      throw new Error(`${at}: invalid JSON: ${(e as Error).message}`);
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${at}: expected a JSON object with "query" and "positive" (and optionally "negative")`);
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) if (k !== 'query' && k !== 'positive' && k !== 'negative') throw new Error(`${at}: unknown field "${k}"; a contrastive line has "query", "positive" and optionally "negative"`);
    const str = (k: string, optional = false): string | null => {
      if (o[k] === undefined && optional) return null;
      if (typeof o[k] !== 'string' || (o[k] as string).length === 0) throw new Error(`${at}: "${k}" must be a non-empty string, got ${o[k] === undefined ? 'nothing' : JSON.stringify(o[k])}`);
      return o[k] as string;
    };
    const query = enc(str('query')!), positive = enc(str('positive')!);
    const n = str('negative', true);
    const negative = n === null ? null : enc(n);
    const all = new Int32Array(query.length + positive.length + (negative?.length ?? 0));
    all.set(query); all.set(positive, query.length); if (negative) all.set(negative, query.length + positive.length);
    samples.push({ tokens: all, mask: new Uint8Array(all.length), line: i + 1, query, positive, negative });
  };
  try {
    for (const l of fileLines(file)) pair(l.text, l.number - 1); // line by line: a file past the longest string (~512 MiB) reads too
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== undefined) throw new Error(`${file}: cannot read data: ${(e as Error).message}`);
    throw e;
  }
  if (samples.length === 0) throw new Error(`${file}: no pairs (the file is empty)`);
  return { samples, truncated };
}

/** Pack the texts of B pairs: B queries, B positives, then the negatives present; attention stays inside each text. */
export function packPairs(pairs: readonly PairSample[]): { batch: PackedBatch; numQueries: number; numDocs: number } {
  const texts = [...pairs.map((p) => p.query), ...pairs.map((p) => p.positive), ...pairs.flatMap((p) => (p.negative ? [p.negative] : []))];
  const T = texts.reduce((a, t) => a + t.length, 0);
  const tokens = new Int32Array(T);
  const positions = new Int32Array(T);
  const segStart = new Int32Array(texts.length + 1);
  let o = 0;
  texts.forEach((t, i) => {
    segStart[i] = o;
    tokens.set(t, o);
    for (let j = 0; j < t.length; j++) positions[o + j] = j;
    o += t.length;
  });
  segStart[texts.length] = T;
  return { batch: { tokens, targets: new Int32Array(T).fill(-1), positions, segStart }, numQueries: pairs.length, numDocs: texts.length - pairs.length };
}

/**
 * InfoNCE over unit vectors: loss_i = −log softmax_j(q_i·d_j / τ)[i], query i's positive being document i.
 * Returns Σ_i loss_i; with dq (B, D) and dd (M, D) (zeroed), adds scale · ∂Σloss/∂q and ∂/∂d.
 */
export function infoNce(q: Float32Array, d: Float32Array, B: number, M: number, D: number, tau: number,
  dq: Float32Array | null, dd: Float32Array | null, scale: number): number {
  if (M < B) throw new RangeError(`infoNce: ${M} documents for ${B} queries; each query needs its positive`);
  const row = new Float64Array(M);
  let sum = 0;
  for (let i = 0; i < B; i++) {
    let mx = -Infinity;
    for (let j = 0; j < M; j++) {
      let s = 0;
      for (let k = 0; k < D; k++) s += q[i * D + k]! * d[j * D + k]!;
      row[j] = s / tau;
      if (row[j]! > mx) mx = row[j]!;
    }
    let z = 0;
    for (let j = 0; j < M; j++) z += Math.exp(row[j]! - mx);
    const lse = mx + Math.log(z);
    sum += lse - row[i]!;
    if (!dq || !dd) continue;
    for (let j = 0; j < M; j++) {
      const g = (Math.exp(row[j]! - lse) - (i === j ? 1 : 0)) * scale / tau; // ∂loss_i/∂s_ij · scale, s = q·d
      if (g === 0) continue;
      for (let k = 0; k < D; k++) {
        dq[i * D + k]! += g * d[j * D + k]!;
        dd[j * D + k]! += g * q[i * D + k]!;
      }
    }
  }
  return sum;
}

/** The contrastive loss over a packed micro-batch (packPairs): pooled, normalised texts → InfoNCE, backward to dh. */
export function contrastiveLoss(batch: PackedBatch, numQueries: number, opts: ContrastiveOptions, scale: number): HiddenLoss {
  const S = batch.segStart.length - 1;
  const B = numQueries, M = S - numQueries;
  return (h, dh) => {
    const D = h.length / batch.tokens.length;
    const e = new Float32Array(S * D); // (S, D) unit vectors: B queries then M documents
    const norms = new Float64Array(S);
    const skip = new Int32Array(S); // (S) leading rows left out of mean pooling (a BOS)
    for (let s = 0; s < S; s++) {
      const a0 = batch.segStart[s]!, n0 = batch.segStart[s + 1]! - a0;
      skip[s] = opts.pooling === 'mean' && opts.bosId != null && n0 > 1 && batch.tokens[a0] === opts.bosId ? 1 : 0;
      const a = a0 + skip[s]!, n = n0 - skip[s]!;
      const v = e.subarray(s * D, (s + 1) * D);
      if (opts.pooling === 'last') v.set(h.subarray((a + n - 1) * D, (a + n) * D));
      else {
        const acc = new Float64Array(D);
        for (let t = a; t < a + n; t++) for (let k = 0; k < D; k++) acc[k]! += h[t * D + k]!;
        for (let k = 0; k < D; k++) v[k] = acc[k]! / n;
      }
      let ss = 0;
      for (let k = 0; k < D; k++) ss += v[k]! * v[k]!;
      norms[s] = Math.sqrt(ss);
      for (let k = 0; k < D; k++) v[k] = v[k]! / norms[s]!;
    }
    const de = dh ? new Float32Array(S * D) : null; // (S, D)
    const eq = e.subarray(0, B * D), ed = e.subarray(B * D), dq = de?.subarray(0, B * D) ?? null, dd = de?.subarray(B * D) ?? null;
    const w = opts.symmetric ? 0.5 : 1;
    let sum = w * infoNce(eq, ed, B, M, D, opts.temperature, dq, dd, scale * w);
    // positive i retrieves query i among the B queries
    if (opts.symmetric) sum += w * infoNce(ed.subarray(0, B * D), eq, B, B, D, opts.temperature, dd?.subarray(0, B * D) ?? null, dq, scale * w);
    if (!dh || !de) return sum;
    for (let s = 0; s < S; s++) {
      // e = v/‖v‖ → dv = (de − e (e·de)) / ‖v‖; then the pooling spreads dv over its rows
      const ev = e.subarray(s * D, (s + 1) * D), g = de.subarray(s * D, (s + 1) * D);
      let dot = 0;
      for (let k = 0; k < D; k++) dot += ev[k]! * g[k]!;
      for (let k = 0; k < D; k++) g[k] = (g[k]! - ev[k]! * dot) / norms[s]!;
      const a = batch.segStart[s]! + skip[s]!, n = batch.segStart[s + 1]! - a;
      if (opts.pooling === 'last') for (let k = 0; k < D; k++) dh[(a + n - 1) * D + k]! += g[k]!;
      else for (let t = a; t < a + n; t++) for (let k = 0; k < D; k++) dh[t * D + k]! += g[k]! / n;
    }
    return sum;
  };
}

/** The trainer's contrastive objective (FinetuneOptions.objective): mean pooling skips BOS and the loss is symmetric unless told otherwise. */
export function contrastiveObjective(o: Partial<Omit<ContrastiveOptions, 'bosId'>> & { readonly skipBos?: boolean } = {}): PooledObjective {
  const { skipBos = true, ...rest } = o;
  let opts: ContrastiveOptions = { ...DEFAULT_CONTRASTIVE, symmetric: true, ...rest };
  if (!(opts.temperature > 0)) throw new RangeError(`temperature must be > 0, got ${opts.temperature}`);
  if (opts.pooling !== 'mean' && opts.pooling !== 'last') throw new RangeError(`pooling must be 'mean' or 'last', got ${String(opts.pooling)}`);
  return {
    kind: 'pooled',
    options: { kind: 'contrastive', temperature: opts.temperature, pooling: opts.pooling, skipBos: skipBos && opts.pooling === 'mean', symmetric: opts.symmetric },
    load: (file, tok, maxSeqLen) => {
      if (skipBos) opts = { ...opts, bosId: tok.bosId };
      return loadPairs(file, tok, maxSeqLen);
    },
    forBatch(samples, scale) {
      const p = packPairs(samples as PairSample[]);
      if (p.numQueries < 2 && p.numDocs < 2) throw new Error('a contrastive micro-batch needs at least 2 documents (pairs or negatives): raise --batch-size');
      return { batch: p.batch, loss: contrastiveLoss(p.batch, p.numQueries, opts, scale), counted: p.numQueries };
    },
    finish(dir, maxSeqLen) {
      writeFileSync(join(dir, EMBEDDING_CONFIG_FILE), JSON.stringify({ pooling: opts.pooling, pool_skip_bos: skipBos && opts.pooling === 'mean', max_tokens: maxSeqLen, objective: 'contrastive', temperature: opts.temperature, symmetric: opts.symmetric }, null, 1) + '\n');
    },
  };
}

/** An objective on pooled hidden states with its own data (see trainer.ts). */
export interface PooledObjective {
  readonly kind: 'pooled';
  readonly options: Readonly<Record<string, unknown>>; // recorded in checkpoints; a resume must match
  /** Read the data file into samples (each counted as one for --batch-size). */
  load(file: string, tok: Tokenizer, maxSeqLen: number): { samples: Sample[]; truncated: number };
  /** A micro-batch of samples → its packed texts, the loss on their hidden states (gradients × scale), and its count of scored rows. */
  forBatch(samples: readonly Sample[], scale: number): { batch: PackedBatch; loss: HiddenLoss; counted: number };
  /** Write what a user of the output needs beside the weights (embedding_config.json). */
  finish?(dir: string, maxSeqLen: number): void;
}
