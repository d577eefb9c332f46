// LoRA: low-rank adapters on the Llama linears (y = W x + s · B A x), their init, merge, and an inference wrapper.
//
// N output features, C input features, r rank, M rows. A (r, C), B (N, r), s = alpha / r (rsLoRA: alpha / sqrt(r)).

import type { Backend } from '../backend/backend.js';
import { dequantizeRow } from '../tensor/codecs.js';
import { f32Tensor, type Tensor } from '../tensor/tensor.js';
import { LORA_TARGETS, loraDims, type LoraConfig, type LoraTarget } from '../formats/peft.js';
import type { LlamaConfig } from './config.js';
import type { LlamaLayer } from './llama.js';

// The plain PEFT naming and config types live in formats/; model code imports them from here.
export { LORA_MODULE, LORA_TARGETS, loraDims, type LoraConfig, type LoraTarget } from '../formats/peft.js';

/** The LlamaLayer field holding each target's base weight. */
export const LORA_FIELD = {
  q: 'wq', k: 'wk', v: 'wv', o: 'wo', gate: 'wGate', up: 'wUp', down: 'wDown',
} as const satisfies Record<LoraTarget, keyof LlamaLayer>;

/** alpha when none is given: 2 × rank (scale 2), whatever the rank; the CLI, the library and fine-tuning jobs share it. */
export function defaultLoraAlpha(rank: number): number {
  return 2 * rank;
}

export const DEFAULT_LORA: LoraConfig = { rank: 8, alpha: defaultLoraAlpha(8), targets: LORA_TARGETS, rslora: false, dropout: 0 };

export function loraScale(c: Pick<LoraConfig, 'rank' | 'alpha' | 'rslora'>): number {
  return c.rslora ? c.alpha / Math.sqrt(c.rank) : c.alpha / c.rank;
}

/** Parse "q,k,v" (or "all") into targets; throws naming the bad entry. */
export function parseLoraTargets(s: string): LoraTarget[] {
  if (s.trim() === 'all') return [...LORA_TARGETS];
  const out: LoraTarget[] = [];
  for (const raw of s.split(',')) {
    const t = raw.trim().replace(/_proj$/, '') as LoraTarget;
    if (!LORA_TARGETS.includes(t)) throw new Error(`LoRA target '${raw}' is not one of ${LORA_TARGETS.join(',')}`);
    if (!out.includes(t)) out.push(t);
  }
  if (out.length === 0) throw new Error('LoRA targets are empty');
  return out;
}

export function checkLoraConfig(c: LoraConfig): void {
  if (!Number.isInteger(c.rank) || c.rank < 1) throw new RangeError(`LoRA rank must be an integer >= 1, got ${c.rank}`);
  if (!Number.isFinite(c.alpha) || c.alpha <= 0) throw new RangeError(`LoRA alpha must be > 0, got ${c.alpha}`);
  if (!(c.dropout >= 0 && c.dropout < 1)) throw new RangeError(`LoRA dropout must be in [0, 1), got ${c.dropout}`);
}

/** One adapted linear: f32 factors and their gradients; the Tensors view the same storage. */
export class LoraLinear {
  readonly a: Float32Array; // (r, C)
  readonly b: Float32Array; // (N, r)
  readonly aT: Tensor; // view of a as an f32 weight (r, C)
  readonly bT: Tensor; // view of b as an f32 weight (N, r)
  dA: Float32Array | null = null; // (r, C), allocated by the trainer
  dB: Float32Array | null = null; // (N, r)

  constructor(readonly N: number, readonly C: number, readonly rank: number, a?: Float32Array, b?: Float32Array) {
    this.a = a ?? new Float32Array(rank * C);
    this.b = b ?? new Float32Array(N * rank);
    if (this.a.length !== rank * C) throw new Error(`lora_A must be (${rank}, ${C}), got ${this.a.length} values`);
    if (this.b.length !== N * rank) throw new Error(`lora_B must be (${N}, ${rank}), got ${this.b.length} values`);
    this.aT = f32Tensor([rank, C], this.a);
    this.bT = f32Tensor([N, rank], this.b);
  }
}

/** An adapter for a whole model: layers[i][target] when that target is adapted. */
export interface LoraAdapter {
  readonly config: LoraConfig;
  readonly layers: ReadonlyArray<Partial<Record<LoraTarget, LoraLinear>>>;
}

/**
 * A fresh adapter as PEFT initialises one: A ~ kaiming_uniform(a=√5) = U(-1/√C, 1/√C), B = 0 (step 0 = base).
 * `random` returns uniforms in [0, 1).
 */
export function initLora(cfg: LlamaConfig, lc: LoraConfig, random: () => number): LoraAdapter {
  checkLoraConfig(lc);
  const layers: Partial<Record<LoraTarget, LoraLinear>>[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const layer: Partial<Record<LoraTarget, LoraLinear>> = {};
    for (const t of LORA_TARGETS) {
      if (!lc.targets.includes(t)) continue;
      const [N, C] = loraDims(cfg, t);
      const lin = new LoraLinear(N, C, lc.rank);
      const bound = 1 / Math.sqrt(C);
      for (let i = 0; i < lin.a.length; i++) lin.a[i] = (2 * random() - 1) * bound;
      layer[t] = lin;
    }
    layers.push(layer);
  }
  return { config: lc, layers };
}

/** W' (N, C) f32 = dequant(W) + s · B A, without touching W. */
export function mergeLinear(w: Tensor, lin: LoraLinear, scale: number): Float32Array {
  const { N, C, rank: r } = lin;
  if (w.rows !== N || w.cols !== C) throw new Error(`LoRA (${N}, ${C}) does not fit weight [${w.shape.join(', ')}]`);
  const out = new Float32Array(N * C);
  const row = new Float32Array(C);
  for (let n = 0; n < N; n++) {
    dequantizeRow(w, n, row);
    for (let c = 0; c < C; c++) {
      let acc = 0;
      for (let j = 0; j < r; j++) acc += lin.b[n * r + j]! * lin.a[j * C + c]!;
      out[n * C + c] = row[c]! + scale * acc;
    }
  }
  return out;
}

/**
 * A backend whose matmul adds the adapter of any adapted base weight: y = W x + s · B (A x).
 * Used at inference (`floe generate --adapter`): the base stays in its stored format, nothing is merged.
 */
export function withLoraBackend<B extends Backend>(backend: B, layers: readonly LlamaLayer[], adapter: LoraAdapter): B {
  const table = new Map<Tensor, LoraLinear>();
  adapter.layers.forEach((lay, l) => {
    const base = layers[l];
    if (!base) throw new Error(`adapter has layer ${l}, the model has ${layers.length} layers`);
    for (const t of LORA_TARGETS) {
      const lin = lay[t];
      if (!lin) continue;
      const w = base[LORA_FIELD[t]];
      if (w.rows !== lin.N || w.cols !== lin.C) throw new Error(`adapter layer ${l} ${t}: (${lin.N}, ${lin.C}) does not fit weight [${w.shape.join(', ')}]`);
      table.set(w, lin);
    }
  });
  const s = loraScale(adapter.config);
  let u = new Float32Array(0);
  let y2 = new Float32Array(0);
  const wrapped = Object.create(backend) as B;
  // y += s · (x Aᵀ) Bᵀ where w has an adapter
  const delta = (y: Float32Array, x: Float32Array, w: Tensor, M: number): void => {
    const lin = table.get(w);
    if (!lin) return;
    if (u.length < M * lin.rank) u = new Float32Array(M * lin.rank);
    if (y2.length < M * lin.N) y2 = new Float32Array(M * lin.N);
    const uu = u.subarray(0, M * lin.rank);
    const yy = y2.subarray(0, M * lin.N);
    backend.matmul(uu, x, lin.aT, M); // (M, r)
    backend.matmul(yy, uu, lin.bT, M); // (M, N)
    for (let i = 0; i < yy.length; i++) y[i] += s * yy[i]!;
  };
  wrapped.matmul = (y: Float32Array, x: Float32Array, w: Tensor, M: number): void => {
    backend.matmul(y, x, w, M);
    delta(y, x, w, M);
  };
  // every matmul entry point the model may take: the fused q/k/v and gate/up call too (inherited, it would skip the
  // adapter)
  if (backend.matmulMany) {
    const many = backend.matmulMany.bind(backend);
    wrapped.matmulMany = (ys: readonly Float32Array[], x: Float32Array, ws: readonly Tensor[], M: number): void => {
      many(ys, x, ws, M);
      for (let i = 0; i < ws.length; i++) delta(ys[i]!, x, ws[i]!, M);
    };
  }
  return wrapped;
}

/**
 * The adapters of one packed forward step: rows [segStart[g], segStart[g+1]) use adapters[segAdapter[g]]
 * (-1: the base alone). The base matmul covers every row; each segment adds s · (x Aᵀ) Bᵀ for its rows.
 */
export interface LoraBatch {
  readonly adapters: readonly LoraAdapter[]; // (A) adapters present in this step
  readonly segStart: Int32Array; // (G + 1) row offsets
  readonly segAdapter: Int32Array; // (G) index into adapters, or -1
}

/** Scratch for the segmented delta; grown, never shrunk. */
export class LoraScratch {
  u = new Float32Array(0); // (M, r)
  d = new Float32Array(0); // (M, N)
  readonly a: Array<Float32Array | null> = []; // (G) per segment, for Backend.loraSegmented
  readonly bt: Array<Float32Array | null> = []; // (G)
  scales = new Float32Array(0); // (G)
  take(mr: number, mn: number): { u: Float32Array; d: Float32Array } {
    if (this.u.length < mr) this.u = new Float32Array(Math.max(mr, 2 * this.u.length));
    if (this.d.length < mn) this.d = new Float32Array(Math.max(mn, 2 * this.d.length));
    return { u: this.u.subarray(0, mr), d: this.d.subarray(0, mn) };
  }
}

const transposed = new WeakMap<LoraLinear, Float32Array>();

/** Bᵀ (r, N) of a served adapter's linear, made once (serving never changes B; training does not come here). */
export function loraBt(lin: LoraLinear): Float32Array {
  let bt = transposed.get(lin);
  if (bt) return bt;
  const { N, rank: r } = lin;
  bt = new Float32Array(r * N);
  for (let n = 0; n < N; n++) for (let j = 0; j < r; j++) bt[j * N + n] = lin.b[n * r + j]!;
  transposed.set(lin, bt);
  return bt;
}

/** y (T, N) += per segment s · (x Aᵀ) Bᵀ with x (T, C): layer `l`'s `target` of each segment's adapter. */
export function addSegmentedLora(
  be: Backend, y: Float32Array, x: Float32Array, C: number, N: number, batch: LoraBatch, l: number, target: LoraTarget, ws: LoraScratch,
): void {
  const G = batch.segAdapter.length;
  if (be.loraSegmented) {
    // one call for every segment (native): A and Bᵀ per segment, null for base rows and unadapted targets
    if (ws.scales.length < G) ws.scales = new Float32Array(Math.max(G, 2 * ws.scales.length));
    ws.a.length = G;
    ws.bt.length = G;
    for (let g = 0; g < G; g++) {
      const ai = batch.segAdapter[g]!;
      const lin = ai < 0 ? undefined : batch.adapters[ai]!.layers[l]?.[target];
      if (lin && (lin.N !== N || lin.C !== C)) throw new Error(`LoRA layer ${l} ${target}: adapter is (${lin.N}, ${lin.C}), the matmul is (${N}, ${C})`);
      ws.a[g] = lin ? lin.a : null;
      ws.bt[g] = lin ? loraBt(lin) : null;
      ws.scales[g] = lin ? loraScale(batch.adapters[ai]!.config) : 0;
    }
    const T = batch.segStart[G]!;
    be.loraSegmented(y.subarray(0, T * N), x.subarray(0, T * C), C, N, batch.segStart, ws.a, ws.bt, ws.scales.subarray(0, G));
    return;
  }
  for (let g = 0; g < G; g++) {
    const ai = batch.segAdapter[g]!;
    if (ai < 0) continue;
    const adapter = batch.adapters[ai]!;
    const lin = adapter.layers[l]?.[target];
    if (!lin) continue;
    const r0 = batch.segStart[g]!;
    const M = batch.segStart[g + 1]! - r0;
    if (M <= 0) continue;
    if (lin.N !== N || lin.C !== C) throw new Error(`LoRA layer ${l} ${target}: adapter is (${lin.N}, ${lin.C}), the matmul is (${N}, ${C})`);
    const { u, d } = ws.take(M * lin.rank, M * N);
    be.matmul(u, x.subarray(r0 * C, (r0 + M) * C), lin.aT, M); // (M, r)
    const s = loraScale(adapter.config);
    for (let i = 0; i < u.length; i++) u[i] = s * u[i]!; // scale the small (M, r) side
    be.matmul(d, u, lin.bT, M); // (M, N)
    be.add(y.subarray(r0 * N, (r0 + M) * N), d);
  }
}
