// KvCache: paged K/V storage for every layer; block allocation policy lives with its user (generate, engine).

import type { KvDType, KvLayer } from '../backend/backend.js';

/** Bytes per stored K or V element. */
export const KV_BYTES: Record<KvDType, number> = { f32: 4, bf16: 2, fp8_e4m3: 1 };
/** Extra bytes per (token, kv head) of K or V: the f32 scale of fp8 caches. */
export const KV_SCALE_BYTES: Record<KvDType, number> = { f32: 0, bf16: 0, fp8_e4m3: 4 };

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
    const scales = KV_SCALE_BYTES[dtype] > 0 ? numBlocks * blockSize * numKvHeads : 0;
    this.layers = [];
    for (let l = 0; l < numLayers; l++) {
      // (numBlocks, L, K, E) each for k and v; fp8 scales (numBlocks, L, K)
      const layer: KvLayer = { dtype, k: new Uint8Array(bytes), v: new Uint8Array(bytes), numBlocks, blockSize, numKvHeads, headDim };
      this.layers.push(scales > 0 ? { ...layer, kScale: new Float32Array(scales), vScale: new Float32Array(scales) } : layer);
    }
  }

  /** Every K/V (and scale) buffer, e.g. for committing their pages ahead of use. */
  buffers(): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const l of this.layers) {
      out.push(l.k, l.v);
      if (l.kScale) out.push(new Uint8Array(l.kScale.buffer, l.kScale.byteOffset, l.kScale.byteLength));
      if (l.vScale) out.push(new Uint8Array(l.vScale.buffer, l.vScale.byteOffset, l.vScale.byteLength));
    }
    return out;
  }

  /** Bytes for one token across all layers (k and v, with their scales). */
  static bytesPerToken(numLayers: number, numKvHeads: number, headDim: number, dtype: KvDType): number {
    return 2 * numLayers * numKvHeads * (headDim * KV_BYTES[dtype] + KV_SCALE_BYTES[dtype]);
  }

  get totalBytes(): number {
    return this.numBlocks * this.blockSize * KvCache.bytesPerToken(this.numLayers, this.numKvHeads, this.headDim, this.dtype);
  }
}

/** Copy whole blocks src -> dst in every layer (k, v and fp8 scales). */
export function copyKvBlocks(layers: readonly KvLayer[], copies: readonly { readonly src: number; readonly dst: number }[]): void {
  for (const layer of layers) {
    const per = layer.blockSize * layer.numKvHeads; // (L, K) vectors per block
    const stride = per * layer.headDim * KV_BYTES[layer.dtype];
    for (const { src, dst } of copies) {
      layer.k.copyWithin(dst * stride, src * stride, (src + 1) * stride);
      layer.v.copyWithin(dst * stride, src * stride, (src + 1) * stride);
      layer.kScale?.copyWithin(dst * per, src * per, (src + 1) * per);
      layer.vScale?.copyWithin(dst * per, src * per, (src + 1) * per);
    }
  }
}
