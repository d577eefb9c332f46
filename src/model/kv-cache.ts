// KvCache: paged K/V storage for every layer; block allocation policy lives with its user (generate, engine).

import type { KvDType, KvLayer } from '../backend/backend.js';

export const KV_BYTES: Record<KvDType, number> = { f32: 4, bf16: 2 };

export class KvCache {
  readonly layers: KvLayer[];

  constructor(
    readonly numLayers: number,
    readonly numBlocks: number,
    readonly blockSize: number, // L tokens per block
    readonly numKvHeads: number, // K
    readonly headDim: number, // E
    readonly dtype: KvDType,
  ) {
    const bytes = numBlocks * blockSize * numKvHeads * headDim * KV_BYTES[dtype];
    this.layers = [];
    for (let l = 0; l < numLayers; l++) {
      // (numBlocks, L, K, E) each for k and v
      this.layers.push({ dtype, k: new Uint8Array(bytes), v: new Uint8Array(bytes), numBlocks, blockSize, numKvHeads, headDim });
    }
  }

  /** Bytes for one token across all layers (k and v). */
  static bytesPerToken(numLayers: number, numKvHeads: number, headDim: number, dtype: KvDType): number {
    return 2 * numLayers * numKvHeads * headDim * KV_BYTES[dtype];
  }

  get totalBytes(): number {
    return this.numLayers * 2 * this.numBlocks * this.blockSize * this.numKvHeads * this.headDim * KV_BYTES[this.dtype];
  }
}
