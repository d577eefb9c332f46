// Backend: the kernel interface. Kernels know shapes and dtypes, never models.
//
// Dimension letters: M rows of activations (tokens), C input features, N output features, T tokens,
// H query heads, K kv heads, E head dim, V vocab, S sequences, L block size (tokens per KV block).
// All activations are f32, row-major, contiguous. Weights are Tensors in any stored format.

import type { DType, Tensor } from '../tensor/tensor.js';

/** Stored formats a KV cache can use. New values go at the end. */
export type KvDType = 'f32' | 'bf16' | 'fp8_e4m3';
export const KV_DTYPES: readonly KvDType[] = ['f32', 'bf16', 'fp8_e4m3'];

/**
 * One layer's paged KV storage: raw bytes of shape (numBlocks, L, K, E) in `dtype`.
 * A token's slot is block * L + offsetInBlock.
 * fp8_e4m3: each (token, kv head) vector of E values has its own f32 scale = amax / 448 (1 when all zero);
 * stored code = E4M3(x / scale), rounded to nearest even and saturated to ±448; value = fp8(code) * scale.
 */
export interface KvLayer {
  readonly dtype: KvDType;
  readonly k: Uint8Array; // (numBlocks, L, K, E)
  readonly v: Uint8Array; // (numBlocks, L, K, E)
  readonly numBlocks: number;
  readonly blockSize: number; // L
  readonly numKvHeads: number; // K
  readonly headDim: number; // E
  readonly kScale?: Float32Array; // (numBlocks, L, K), fp8_e4m3 only
  readonly vScale?: Float32Array; // (numBlocks, L, K), fp8_e4m3 only
}

/**
 * A batch of S sequences whose new queries are packed row-wise in q.
 * Sequence s owns query rows qStart[s] .. qStart[s+1]-1 (qLen rows). After this step's kvWrite its cache
 * holds ctxLen[s] tokens, so its query j sits at position ctxLen[s] - qLen + j and attends cached tokens
 * 0 .. that position (causal). Cached token i of sequence s lives in block blockTables[s * maxBlocks + i / L].
 */
export interface AttentionBatch {
  readonly numSeqs: number; // S
  readonly qStart: Int32Array; // (S+1)
  readonly ctxLen: Int32Array; // (S)
  readonly blockTables: Int32Array; // (S, maxBlocks)
  readonly maxBlocks: number;
}

export interface AttentionShape {
  readonly numHeads: number; // H
  readonly numKvHeads: number; // K, H % K == 0 (GQA group H/K)
  readonly headDim: number; // E
  readonly scale: number; // usually 1/sqrt(E)
}

export interface Backend {
  readonly name: 'reference' | 'native';

  /** y (M, N) = x (M, C) · wᵀ, w (N, C) in any weight dtype, dequantized inside the kernel; f32 accumulation. */
  matmul(y: Float32Array, x: Float32Array, w: Tensor, M: number): void;

  /**
   * Optional (native): ys[i] (M, N_i) = x (M, C) · ws[i]ᵀ for every i, the weights of one C (q/k/v, gate/up) as one
   * call; each ys[i] gets exactly what matmul gives it. Absent → one matmul per weight.
   */
  matmulMany?(ys: readonly Float32Array[], x: Float32Array, ws: readonly Tensor[], M: number): void;

  /**
   * Optional, for inference only (openModel): replace weights in `tensors` by the same values in the layout this
   * backend decodes fastest (native, AVX-512: q8_0 → q8_0r16, bf16 → bf16r16, f16 → f16r16, fp8 → fp8r16).
   * Returns how many it replaced. Training never calls it.
   */
  prepareWeights?(tensors: Map<string, Tensor>): number;

  /** y (M, D) = x / sqrt(mean(x²) + eps) * g, g (D). y may alias x. */
  rmsnorm(y: Float32Array, x: Float32Array, g: Float32Array, M: number, eps: number): void;

  /**
   * In place, HF rotate-half layout: x (T, nHeads, E); for pair i < E/2 the angle is positions[t] * invFreq[i]
   * (angle computed in f32 as HF does), rotating (x[i], x[i + E/2]).
   */
  rope(x: Float32Array, positions: Int32Array, nHeads: number, headDim: number, invFreq: Float32Array): void;

  /** out (n) = silu(gate) * up. out may alias gate. */
  swiglu(out: Float32Array, gate: Float32Array, up: Float32Array): void;

  /** out (T, D) = rows ids (T) of table (V, D), dequantized to f32. Throws on an id outside [0, V). */
  embedding(out: Float32Array, table: Tensor, ids: Int32Array): void;

  /** y += x (elementwise, same length). */
  add(y: Float32Array, x: Float32Array): void;

  /**
   * Optional (native): x += d, then y (M, D) = rmsnorm(x) · g: a residual add and the norm after it as one call, with
   * exactly the results of add then rmsnorm. Absent → the two calls.
   */
  addRmsnorm?(x: Float32Array, d: Float32Array, y: Float32Array, g: Float32Array, M: number, eps: number): void;

  /**
   * Optional (native): the segmented LoRA delta of one matmul in one call. For each segment g, rows
   * [segStart[g], segStart[g+1]) of y (T, N) += scales[g] · (x (T, C) Aᵀ) Bᵀ with a[g] = A (r, C) and bt[g] = Bᵀ (r, N),
   * f32 accumulation; a null a[g] leaves the segment's rows alone. T = segStart[G]. Absent → matmuls per segment.
   */
  loraSegmented?(y: Float32Array, x: Float32Array, C: number, N: number, segStart: Int32Array,
    a: ReadonlyArray<Float32Array | null>, bt: ReadonlyArray<Float32Array | null>, scales: Float32Array): void;

  /** Write k, v (T, K*E) into the layer's cache at slots (T), converting to the cache dtype. */
  kvWrite(layer: KvLayer, k: Float32Array, v: Float32Array, slots: Int32Array): void;

  /**
   * Optional (native): rope(q, positions, numHeads), rope(k, positions, K), then kvWrite(layer, k, v, slots), as one
   * call with exactly their results (E and K from the layer). Absent → the three calls.
   */
  ropeKvWrite?(q: Float32Array, k: Float32Array, v: Float32Array, positions: Int32Array, numHeads: number, invFreq: Float32Array,
    layer: KvLayer, slots: Int32Array): void;

  /**
   * out (Tq, H*E) = causal softmax(q kᵀ * scale) v over each sequence's paged cache; q (Tq, H*E) with RoPE
   * already applied. Online softmax over KV blocks: memory does not grow with context length.
   */
  attention(out: Float32Array, q: Float32Array, layer: KvLayer, shape: AttentionShape, batch: AttentionBatch): void;

  /** out (M, V) = log_softmax(logits (M, V)) per row. out may alias logits. */
  logSoftmax(out: Float32Array, logits: Float32Array, M: number): void;

  /** The k largest entries of x (ties: lower index first), sorted descending. */
  topk(x: Float32Array, k: number): { ids: Int32Array; values: Float32Array };

  /**
   * Optional (native): the candidate set Sampler.distribution defines for adjusted logits z (V) at temperature > 0,
   * top-k (<= 0 or >= V: off), top-p (1: off), min-p (0: off): ids, weights [0, n) with weights exp((z - max) / T),
   * the k largest logits / the smallest top-p head (ties by lower id) / min-p as a filter; ids[0] is the argmax, the
   * rest sorted descending when top-k is on or n <= 1024. ids, weights hold >= k (top-k on) or V. Returns n; sum[0] = Σ
   * weights. Absent → the sampler's TypeScript path (the oracle).
   */
  sampleCandidates?(z: Float32Array, temperature: number, topK: number, topP: number, minP: number,
    ids: Int32Array, weights: Float64Array, sum: Float64Array): number;

  /** Optional (native): the first index of the largest value of x (V); absent → sampler.ts argmax. */
  argmax?(x: Float32Array): number;
}

/**
 * Training kernels: backward passes and the dense (unpaged) attention used for packed training batches.
 * Packed samples: rows segStart[i] .. segStart[i+1]-1 form sample i; attention stays inside a sample, causal,
 * with positions restarting at 0 in each sample. lse (T, H) keeps each query's log-sum-exp for the backward.
 */
export interface TrainKernels {
  /** dx (M, C) = dy (M, N) · w (N, C), or += when accumulate; w in any weight dtype (frozen base), f32 accumulation. */
  matmulBackwardInput(dx: Float32Array, dy: Float32Array, w: Tensor, M: number, accumulate: boolean): void;
  /** dw (N, C) += dyᵀ (N, M) · x (M, C); all f32. */
  matmulBackwardWeight(dw: Float32Array, dy: Float32Array, x: Float32Array, M: number, N: number, C: number): void;
  /** dx (M, D) = ∂/∂x of rmsnorm given dy (M, D); dg (D) += ∂/∂g when dg is not null. */
  rmsnormBackward(dx: Float32Array, dg: Float32Array | null, dy: Float32Array, x: Float32Array, g: Float32Array, M: number, eps: number): void;
  /** In place: the inverse rotation of rope (the gradient of rope w.r.t. its input). */
  ropeBackward(dx: Float32Array, positions: Int32Array, nHeads: number, headDim: number, invFreq: Float32Array): void;
  /** dgate, dup (n) from dout (n) for out = silu(gate) * up. dgate may alias gate; dup may alias up. */
  swigluBackward(dgate: Float32Array, dup: Float32Array, dout: Float32Array, gate: Float32Array, up: Float32Array): void;
  /** out (T, H*E), lse (T, H) = causal attention of q (T, H*E) over k, v (T, K*E) within each packed sample. */
  attentionDense(out: Float32Array, lse: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, segStart: Int32Array, shape: AttentionShape): void;
  /** dq (T, H*E), dk, dv (T, K*E) (overwritten) from dout, given the forward's inputs, out and lse. */
  attentionDenseBackward(dq: Float32Array, dk: Float32Array, dv: Float32Array, dout: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array,
    out: Float32Array, lse: Float32Array, segStart: Int32Array, shape: AttentionShape): void;
  /** dtable (V, D) += rows of dy (T, D) scattered to ids (T). */
  embeddingBackward(dtable: Float32Array, dy: Float32Array, ids: Int32Array, D: number): void;
  /**
   * Cross-entropy of logits (M, V) against targets (M) (-1 = ignored row): returns the summed loss (f64) and
   * writes dlogits (M, V) = (softmax - onehot) * scale for counted rows, 0 for ignored rows. dlogits may alias logits.
   */
  crossEntropy(dlogits: Float32Array, logits: Float32Array, targets: Int32Array, M: number, scale: number): number;
  /**
   * Optional (native): a trained LoRA linear's factor products in one call, a = A (r, C), b = B (N, r), all f32:
   * u (M, r) = s · x (M, C) Aᵀ, then y (M, N) += u Bᵀ. Absent → two matmuls, a scale loop and an add.
   */
  loraForward?(y: Float32Array, u: Float32Array, x: Float32Array, a: Float32Array, b: Float32Array, s: number,
    M: number, N: number, C: number, r: number): void;
  /**
   * Optional (native): its backward from dy (M, N), x and u as in the forward: dB (N, r) += dyᵀ u; with
   * du = s · dy B, dA (r, C) += duᵀ x and dx (M, C) = du A (+= when accumulate); dx may be x. Absent → the matmul kernels.
   */
  loraBackward?(dx: Float32Array, dA: Float32Array, dB: Float32Array, dy: Float32Array, x: Float32Array, u: Float32Array,
    a: Float32Array, b: Float32Array, s: number, M: number, N: number, C: number, r: number, accumulate: boolean): void;
  /**
   * Optional (native): AdamW on one f32 tensor, in place, with Optimizer.update's arithmetic to the bit: per element
   * m = b1·m + (1 - b1)·g, v = b2·v + (1 - b2)·g·g (each rounded to f32), w = w·decay - stepSize·m / (√v / sbc2 + eps),
   * in f64. Absent → the optimizer's TypeScript loop.
   */
  adamwUpdate?(w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, b1: number, b2: number, eps: number,
    decay: number, stepSize: number, sbc2: number): void;
}

/** A backend that can also train (both built-in backends implement it). */
export interface TrainBackend extends Backend, TrainKernels {}

/** Weight dtypes every backend's matmul and embedding must accept. */
export const WEIGHT_DTYPES = ['f32', 'f16', 'bf16', 'fp8_e4m3', 'q8_0'] as const satisfies readonly DType[];
