// KvCache: paged K/V storage for every layer; block allocation policy lives with its user (generate, engine).

import type { KvDType, KvLayer } from '../backend/backend.js';

/** Bytes per stored K or V element. */
export const KV_BYTES: Record<KvDType, number> = { f32: 4, bf16: 2, fp8_e4m3: 1 };
/** Extra bytes per (token, kv head) of K or V: the f32 scale of fp8 caches. */
export const KV_SCALE_BYTES: Record<KvDType, number> = { f32: 0, bf16: 0, fp8_e4m3: 4 };

/** A KV dtype by the name --kv-cache-dtype gives it (fp8_e4m3 is `fp8`, as in vLLM), for what floe prints to a user. */
export function kvDtypeFlagName(d: KvDType | string): string {
  return d === 'fp8_e4m3' ? 'fp8' : d;
}

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

/**
 * Swap space: preempted sequences' KV copied out of the pool as raw bytes (every layer's K, V and fp8 scales, in the
 * cache's own dtype) and copied back into fresh blocks when they resume, so their KV is bit-identical and nothing is
 * recomputed (vLLM's --swap-space). Bounded: a sequence that does not fit is refused and recomputed instead. Bytes are
 * allocated per swapped sequence, so memory is taken only under KV pressure.
 */
export class KvSwapSpace {
  private readonly held = new Map<string, Uint8Array>(); // id → (blocks, layers, k | v | kScale | vScale) bytes
  private usedBytes = 0;
  readonly bytesPerBlock: number;

  constructor(readonly cache: KvCache, readonly capacity: number) {
    if (!(Number.isSafeInteger(capacity) && capacity >= 0)) throw new RangeError(`swap space must be a whole number of bytes >= 0, got ${capacity}`);
    this.bytesPerBlock = cache.blockSize * KvCache.bytesPerToken(cache.numLayers, cache.numKvHeads, cache.headDim, cache.dtype);
  }

  get used(): number { return this.usedBytes; }
  get numSwapped(): number { return this.held.size; }

  /** Copy these blocks of `id` out (in table order); false, copying nothing, when the space lacks room. */
  swapOut(id: string, blocks: readonly number[]): boolean {
    if (this.held.has(id)) throw new Error(`KvSwapSpace.swapOut: ${id} is already swapped out`);
    const bytes = blocks.length * this.bytesPerBlock;
    if (this.usedBytes + bytes > this.capacity) return false;
    const buf = new Uint8Array(bytes);
    let o = 0;
    for (const b of blocks) for (const v of this.blockViews(b)) { buf.set(v, o); o += v.length; }
    this.held.set(id, buf);
    this.usedBytes += bytes;
    return true;
  }

  /** Copy `id`'s bytes into these blocks (as many as were swapped out, in table order) and forget them. */
  swapIn(id: string, blocks: readonly number[]): void {
    const buf = this.held.get(id);
    if (!buf) throw new Error(`KvSwapSpace.swapIn: ${id} is not swapped out`);
    if (buf.length !== blocks.length * this.bytesPerBlock) throw new Error(`KvSwapSpace.swapIn: ${id} holds ${buf.length / this.bytesPerBlock} blocks, given ${blocks.length}`);
    let o = 0;
    for (const b of blocks) for (const v of this.blockViews(b)) { v.set(buf.subarray(o, o + v.length)); o += v.length; }
    this.drop(id);
  }

  /** Forget a swapped sequence (it finished or was aborted while waiting). */
  drop(id: string): void {
    const buf = this.held.get(id);
    if (!buf) return;
    this.held.delete(id);
    this.usedBytes -= buf.length;
  }

  /** Byte views of block b in every layer: k, v and, for fp8, the f32 scales. */
  private blockViews(b: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const l of this.cache.layers) {
      const per = l.blockSize * l.numKvHeads; // (L, K) vectors per block
      const stride = per * l.headDim * KV_BYTES[l.dtype];
      out.push(l.k.subarray(b * stride, (b + 1) * stride), l.v.subarray(b * stride, (b + 1) * stride));
      for (const s of [l.kScale, l.vScale]) if (s) out.push(new Uint8Array(s.buffer, s.byteOffset + b * per * 4, per * 4));
    }
    return out;
  }
}
