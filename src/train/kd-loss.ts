// Distillation loss of one row of logits against a teacher's cached top-k: D(teacher_T ‖ student_T) · T² over k + 1 buckets
// (the teacher's top-k tokens, and one "rest" bucket holding every other token's mass, on both sides), in f64.
//
// V vocab, k cached tokens per row, T the distillation temperature (separate from any sampling temperature).
//
//   forward-kl  KL(p ‖ q)                                      (β = 0)
//   reverse-kl  KL(q ‖ p)                                      (β = 1)
//   jsd         [β KL(p ‖ m) + (1-β) KL(q ‖ m)] / (β (1-β)),  m = β p + (1-β) q,  0 < β < 1
// p teacher buckets, q student buckets (q_i = softmax(z/T)[id_i], q_rest = Σ over the other tokens). The JSD is
// divided by β(1-β) so that it tends to forward KL as β → 0 and to reverse KL as β → 1 (GKD's form, normalised).
//
// Gradient: with g_j = ∂D/∂q_j and h_j = q_j g_j, ∂D/∂z_v = (1/T)(h_b(v) · s_v / q_b(v) − s_v Σ_j h_j), s = softmax(z/T).

export type KdLossKind = 'forward-kl' | 'reverse-kl' | 'jsd';
export const KD_LOSS_KINDS: readonly KdLossKind[] = ['forward-kl', 'reverse-kl', 'jsd'];

export interface KdLossConfig {
  readonly kind: KdLossKind;
  readonly beta: number; // jsd only; 0 → forward-kl, 1 → reverse-kl
  readonly temperature: number;
}

export function checkKdConfig(c: KdLossConfig): void {
  if (!KD_LOSS_KINDS.includes(c.kind)) throw new Error(`distillation loss must be ${KD_LOSS_KINDS.join(', ')}, got '${c.kind}'`);
  if (!(c.temperature > 0 && Number.isFinite(c.temperature))) throw new RangeError(`distillation temperature must be > 0, got ${c.temperature}`);
  if (!(c.beta >= 0 && c.beta <= 1)) throw new RangeError(`jsd beta must be in [0, 1], got ${c.beta}`);
}

/** The loss of one row at a time, with preallocated scratch (no allocation per row). */
export class KdRowLoss {
  private readonly inTop: Uint8Array; // (V)
  private readonly e: Float64Array; // (V) exp((z - max z) / T), one exp per token per row
  private readonly lq: Float64Array; // (k+1) log q
  private readonly lp: Float64Array; // (k+1) log p
  private readonly h: Float64Array; // (k+1) q_j ∂D/∂q_j
  private readonly kind: 'fwd' | 'rev' | 'jsd';
  private readonly beta: number;
  readonly T: number;

  constructor(readonly V: number, readonly k: number, cfg: KdLossConfig) {
    checkKdConfig(cfg);
    if (!(Number.isInteger(k) && k >= 1 && k <= V)) throw new RangeError(`top-k must be an integer in [1, ${V}], got ${k}`);
    this.inTop = new Uint8Array(V);
    this.e = new Float64Array(V);
    this.lq = new Float64Array(k + 1); this.lp = new Float64Array(k + 1); this.h = new Float64Array(k + 1);
    this.T = cfg.temperature;
    const b = cfg.kind === 'jsd' ? cfg.beta : cfg.kind === 'forward-kl' ? 0 : 1;
    this.kind = b === 0 ? 'fwd' : b === 1 ? 'rev' : 'jsd';
    this.beta = b;
  }

  /**
   * T² · D for one row. z = logits[zo, zo+V); the teacher's top-k: ids[io, io+k), logp[lo, lo+k) (log-probabilities at temperature T),
   * logRest = log of the teacher's remaining mass (-Infinity when k = V). With dz, adds scale · ∂(T² D)/∂z into dz[zo, zo+V).
   */
  row(logits: Float32Array, zo: number, ids: Int32Array, io: number, logp: Float32Array, lo: number, logRest: number, dz: Float32Array | null, scale: number): number {
    const { V, k, T, lq, lp, h, inTop, e: ex } = this;
    let mx = -Infinity;
    for (let v = 0; v < V; v++) mx = Math.max(mx, logits[zo + v]!);
    for (let i = 0; i < k; i++) {
      const id = ids[io + i]!;
      if (!(id >= 0 && id < V)) throw new RangeError(`teacher token ${id} (top-k entry ${i}) is outside the vocabulary [0, ${V})`);
      inTop[id] = 1;
    }
    // log-sum-exp of z/T over all tokens and over the rest bucket
    let sAll = 0, sRest = 0;
    for (let v = 0; v < V; v++) {
      const e = Math.exp((logits[zo + v]! - mx) / T);
      ex[v] = e;
      sAll += e;
      if (!inTop[v]) sRest += e;
    }
    const lse = mx / T + Math.log(sAll);
    const lseRest = sRest > 0 ? mx / T + Math.log(sRest) : -Infinity;
    for (let i = 0; i < k; i++) { lq[i] = logits[zo + ids[io + i]!]! / T - lse; lp[i] = logp[lo + i]!; }
    lq[k] = lseRest - lse; lp[k] = logRest;
    // D and h_j = q_j ∂D/∂q_j; 0 · log 0 = 0
    let D = 0, c = 0;
    const beta = this.beta, lb = Math.log(beta), l1b = Math.log(1 - beta);
    for (let j = 0; j <= k; j++) {
      const p = Math.exp(lp[j]!), q = Math.exp(lq[j]!);
      let hj: number;
      if (this.kind === 'fwd') {
        if (p > 0) D += p * (lp[j]! - lq[j]!);
        hj = -p;
      } else if (this.kind === 'rev') {
        const t = q > 0 ? q * (lq[j]! - lp[j]!) : 0;
        D += t;
        hj = t + q;
      } else {
        const a = lb + lp[j]!, b = l1b + lq[j]!;
        const m = Math.max(a, b);
        const lm = m === -Infinity ? -Infinity : m + Math.log(Math.exp(a - m) + Math.exp(b - m));
        const tq = q > 0 ? q * (lq[j]! - lm) : 0;
        D += ((p > 0 ? beta * p * (lp[j]! - lm) : 0) + (1 - beta) * tq) / (beta * (1 - beta));
        hj = tq / beta;
      }
      h[j] = hj;
      c += hj;
    }
    if (dz) {
      const f = scale * T; // ∂(T² D)/∂z = T · (...)
      const a = sRest > 0 ? (f * h[k]!) / sRest : 0, b = (f * c) / sAll; // s_v / q_rest = e_v / sRest, s_v = e_v / sAll
      for (let v = 0; v < V; v++) if (!inTop[v]) dz[zo + v] += (a - b) * ex[v]!;
      for (let i = 0; i < k; i++) {
        const id = ids[io + i]!;
        dz[zo + id] += f * (h[i]! - Math.exp(lq[i]!) * c);
      }
    }
    for (let i = 0; i < k; i++) inTop[ids[io + i]!] = 0;
    return T * T * D;
  }
}

/** The teacher side of a cache row: top-k ids of z (V) by logit, their log-softmax(z/T) and the log of the rest's mass. */
export class TeacherTopK {
  private readonly inTop: Uint8Array; // (V)
  constructor(readonly V: number, readonly k: number, readonly T: number) {
    if (!(Number.isInteger(k) && k >= 1 && k <= V)) throw new RangeError(`top-k must be an integer in [1, ${V}], got ${k}`);
    if (!(T > 0)) throw new RangeError(`distillation temperature must be > 0, got ${T}`);
    this.inTop = new Uint8Array(V);
  }

  /** Writes ids / logp [o, o+k) in descending probability (ties: lower id first); returns log rest mass (-Infinity when k = V). */
  row(logits: Float32Array, zo: number, ids: Int32Array, logp: Float32Array, o: number): number {
    const { V, k, T, inTop } = this;
    // insertion into a sorted list of k: most tokens fail the first comparison
    let n = 0;
    for (let v = 0; v < V; v++) {
      const x = logits[zo + v]!;
      if (n === k && !(x > logits[zo + ids[o + k - 1]!]!)) continue;
      let j = n < k ? n++ : k - 1;
      while (j > 0 && logits[zo + ids[o + j - 1]!]! < x) { ids[o + j] = ids[o + j - 1]!; j--; }
      ids[o + j] = v;
    }
    let mx = -Infinity;
    for (let v = 0; v < V; v++) mx = Math.max(mx, logits[zo + v]!);
    for (let i = 0; i < k; i++) inTop[ids[o + i]!] = 1;
    let sAll = 0, sRest = 0; // the rest summed on its own, not as 1 - Σ top (which cancels to noise)
    for (let v = 0; v < V; v++) {
      const e = Math.exp((logits[zo + v]! - mx) / T);
      sAll += e;
      if (!inTop[v]) sRest += e;
    }
    const lse = mx / T + Math.log(sAll);
    for (let i = 0; i < k; i++) { logp[o + i] = logits[zo + ids[o + i]!]! / T - lse; inTop[ids[o + i]!] = 0; }
    return sRest > 0 ? mx / T + Math.log(sRest) - lse : -Infinity;
  }
}
