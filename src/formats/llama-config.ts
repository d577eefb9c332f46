// LlamaConfig: the structural properties of a Llama-family model as plain data, read from HF config.json or GGUF metadata.

export type RopeScaling =
  | { readonly type: 'llama3'; readonly factor: number; readonly lowFreqFactor: number; readonly highFreqFactor: number; readonly originalMaxPositionEmbeddings: number }
  | { readonly type: 'linear'; readonly factor: number };

export interface LlamaConfig {
  readonly vocabSize: number; // V
  readonly hiddenSize: number; // D
  readonly intermediateSize: number; // F
  readonly numLayers: number;
  readonly numHeads: number; // H
  readonly numKvHeads: number; // K
  readonly headDim: number; // E (may differ from D / H)
  readonly rmsNormEps: number;
  readonly ropeTheta: number;
  readonly ropeScaling: RopeScaling | null;
  readonly maxPositionEmbeddings: number;
  readonly tieWordEmbeddings: boolean;
  readonly bosTokenId: number | null;
  readonly eosTokenIds: readonly number[];
}
