// Backend: the kernel interface. Kernels know shapes and dtypes, never models.
//
// Dimension letters: M rows of activations (tokens), C input features, N output features, T tokens,
// H query heads, K kv heads, E head dim, V vocab, S sequences, L block size (tokens per KV block).
// All activations are f32, row-major, contiguous. Weights are Tensors in any stored format.

import type { DType, Tensor } from '../tensor/tensor.js';

/** Stored formats a KV cache can use. New values go at the end. */
export type KvDType = 'f32' | 'bf16';

/**
 * One layer's paged KV storage: raw bytes of shape (numBlocks, L, K, E) in `dtype`.
 * A token's slot is block * L + offsetInBlock.
 */
export interface KvLayer {
  readonly dtype: KvDType;
  readonly k: Uint8Array; // (numBlocks, L, K, E)
  readonly v: Uint8Array; // (numBlocks, L, K, E)
  readonly numBlocks: number;
  readonly blockSize: number; // L
  readonly numKvHeads: number; // K
  readonly headDim: number; // E
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

  /** Write k, v (T, K*E) into the layer's cache at slots (T), converting to the cache dtype. */
  kvWrite(layer: KvLayer, k: Float32Array, v: Float32Array, slots: Int32Array): void;

  /**
   * out (Tq, H*E) = causal softmax(q kᵀ * scale) v over each sequence's paged cache; q (Tq, H*E) with RoPE
   * already applied. Online softmax over KV blocks: memory does not grow with context length.
   */
  attention(out: Float32Array, q: Float32Array, layer: KvLayer, shape: AttentionShape, batch: AttentionBatch): void;

  /** out (M, V) = log_softmax(logits (M, V)) per row. out may alias logits. */
  logSoftmax(out: Float32Array, logits: Float32Array, M: number): void;

  /** The k largest entries of x (ties: lower index first), sorted descending. */
  topk(x: Float32Array, k: number): { ids: Int32Array; values: Float32Array };
}

/** Weight dtypes every backend's matmul and embedding must accept. */
export const WEIGHT_DTYPES = ['f32', 'f16', 'bf16', 'fp8_e4m3', 'q8_0'] as const satisfies readonly DType[];
