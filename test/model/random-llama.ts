// A random Llama (weights in any stored dtype) for tests that need many shapes without fixture files.
//
// D hidden, H heads, K kv heads, E head dim, F ffn hidden, V vocab.

import type { Backend } from '../../src/backend/backend.js';
import { LlamaModel, type LlamaWeights } from '../../src/model/llama.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import type { DType } from '../../src/tensor/tensor.js';

export interface Shape { H: number; K: number; E: number; D: number; F: number; V: number; layers: number }

/** A random Llama with weights stored as `dtype` (values ~ U(-1, 1) / sqrt(fan-in), norms near 1). */
export function randomModel(r: () => number, s: Shape, dtype: DType, be: Backend): LlamaModel {
  const mat = (rows: number, cols: number) => {
    const v = new Float32Array(rows * cols);
    const a = Math.sqrt(3 / cols);
    for (let i = 0; i < v.length; i++) v[i] = (2 * r() - 1) * a;
    // fp8 weights with (16, 32) scale blocks when the shape allows, per-row scales otherwise
    const opts = dtype === 'fp8_e4m3' && rows % 16 === 0 && cols % 32 === 0 && cols > 32 ? { fp8Block: [16, 32] as const } : {};
    return quantizeTensor(v, [rows, cols], dtype, opts);
  };
  const norm = () => Float32Array.from({ length: s.D }, () => 0.8 + 0.4 * r());
  const weights: LlamaWeights = {
    embed: quantizeTensor(Float32Array.from({ length: s.V * s.D }, () => 2 * r() - 1), [s.V, s.D], 'f32'),
    layers: Array.from({ length: s.layers }, () => ({
      inputNorm: norm(), wq: mat(s.H * s.E, s.D), wk: mat(s.K * s.E, s.D), wv: mat(s.K * s.E, s.D), wo: mat(s.D, s.H * s.E),
      postNorm: norm(), wGate: mat(s.F, s.D), wUp: mat(s.F, s.D), wDown: mat(s.D, s.F),
    })),
    norm: norm(),
    head: mat(s.V, s.D),
  };
  return new LlamaModel({
    vocabSize: s.V, hiddenSize: s.D, intermediateSize: s.F, numLayers: s.layers, numHeads: s.H, numKvHeads: s.K, headDim: s.E,
    rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null, maxPositionEmbeddings: 4096, tieWordEmbeddings: false,
    bosTokenId: null, eosTokenIds: [],
  }, weights, be);
}
