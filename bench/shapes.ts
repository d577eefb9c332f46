// Benchmark model shapes: Llama-3.2-1B and a small llama2.c-sized model, as floe LlamaConfigs.

import type { LlamaConfig } from '../src/model/config.js';

export interface BenchShape {
  readonly name: string;
  readonly config: LlamaConfig;
}

const llama32_1b: LlamaConfig = {
  vocabSize: 128256,
  hiddenSize: 2048,
  intermediateSize: 8192,
  numLayers: 16,
  numHeads: 32,
  numKvHeads: 8,
  headDim: 64,
  rmsNormEps: 1e-5,
  ropeTheta: 500000,
  ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
  maxPositionEmbeddings: 131072,
  tieWordEmbeddings: true,
  bosTokenId: null,
  eosTokenIds: [],
};

const small: LlamaConfig = {
  vocabSize: 32000,
  hiddenSize: 288,
  intermediateSize: 768,
  numLayers: 6,
  numHeads: 6,
  numKvHeads: 6,
  headDim: 48,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 2048,
  tieWordEmbeddings: true,
  bosTokenId: null,
  eosTokenIds: [],
};

export const SHAPES: Readonly<Record<string, BenchShape>> = {
  small: { name: 'small', config: small },
  '1b': { name: '1b', config: llama32_1b },
};

/** Parameters per matrix kind, for bytes-per-token accounting. */
export function weightCounts(c: LlamaConfig): { embed: number; layerMatrices: number; head: number; norms: number } {
  const { hiddenSize: D, intermediateSize: F, numHeads: H, numKvHeads: K, headDim: E, numLayers: L, vocabSize: V } = c;
  const perLayer = H * E * D + 2 * K * E * D + D * H * E + 3 * F * D;
  return { embed: V * D, layerMatrices: L * perLayer, head: V * D, norms: (2 * L + 1) * D };
}
