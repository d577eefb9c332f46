// Native backend: every Backend and TrainKernels kernel run by the C++ addon (AVX-512 / AVX2 / scalar, chosen at run time).
//
// Dimension letters as in backend.ts: M rows, C input features, N output features, T tokens, H heads, K kv heads,
// E head dim, S sequences, L block size. Argument checks live in the addon (native/addon.cc).

import { DTYPE_CODE, Tensor } from '../tensor/tensor.js';
import { WEIGHT_DTYPES, type AttentionBatch, type AttentionShape, type KvDType, type KvLayer, type TrainBackend } from './backend.js';
import { isMapped, loadAddon, type NativeAddon } from './native-addon.js';

/** native/common.h DT_Q8_0R: q8_0 in the repacked decode layout (not a file dtype, so not in DTYPE_CODE). */
const Q8_0R16_CODE = 6;
/** native/common.h DT_BF16R, DT_F16R, DT_FP8R, DT_F32R: bf16 / f16 / fp8 / f32 in the repacked decode layout. */
const R16_CODE = { bf16r16: 7, f16r16: 8, fp8r16: 9, f32r16: 10 } as const;

/**
 * Whether inference weights in q8_0 are repacked at load (Backend.prepareWeights): on AVX-512 (VNNI) hosts, unless
 * FLOE_Q8_REPACK=0 (A/B measurements, or to keep the file's layout).
 */
export function q8RepackEnabled(a: NativeAddon): boolean {
  return a.isa() === 'avx512' && process.env.FLOE_Q8_REPACK !== '0';
}

/**
 * Whether inference weights in bf16 / f16 / fp8 / f32 are repacked at load into bf16r16 / f16r16 / fp8r16 / f32r16 (16 rows
 * interleaved, as q8_0r16): on AVX-512 hosts, unless FLOE_R16_REPACK=0 (A/B measurements, or to keep the file's layout).
 */
export function r16RepackEnabled(a: NativeAddon): boolean {
  return a.isa() === 'avx512' && process.env.FLOE_R16_REPACK !== '0';
}

const KV_CODE = { f32: 0, bf16: 2, fp8_e4m3: 3 } as const satisfies Record<KvDType, number>;

function weightArgs(op: string, w: Tensor): [Uint8Array, number, number, number, Float32Array | null, number, number] {
  if (!(WEIGHT_DTYPES as readonly string[]).includes(w.dtype)) throw new Error(`native.${op} has no ${w.dtype} kernel`);
  const [br, bc] = w.scaleBlock ?? [1, 1];
  const code = w.layout === 'q8_0r16' ? Q8_0R16_CODE : w.layout === 'rows' ? DTYPE_CODE[w.dtype] : R16_CODE[w.layout];
  return [w.data, code, w.rows, w.cols, w.dtype === 'fp8_e4m3' ? w.scale! : null, br, bc];
}

function kvCode(layer: KvLayer): number {
  const code = KV_CODE[layer.dtype];
  if (code === undefined) throw new Error(`native kv cache has no ${String(layer.dtype)} kernel`);
  return code;
}

/** Trailing scale arguments of fp8 caches (kScale, vScale), none otherwise. */
function kvScaleArgs(op: string, layer: KvLayer): [] | [Float32Array, Float32Array] {
  if (layer.dtype !== 'fp8_e4m3') return [];
  if (!layer.kScale || !layer.vScale) throw new Error(`native.${op}: fp8_e4m3 cache layer has no kScale / vScale arrays`);
  return [layer.kScale, layer.vScale];
}

/** The training kernels' addon functions (native/train_kernels.cc); weights travel as in NativeAddon.matmul. */
interface NativeTrainAddon {
  matmulBackwardInput(dx: Float32Array, dy: Float32Array, w: Uint8Array, dtype: number, N: number, C: number,
    scale: Float32Array | null, br: number, bc: number, M: number, accumulate: boolean): void;
  matmulBackwardWeight(dw: Float32Array, dy: Float32Array, x: Float32Array, M: number, N: number, C: number): void;
  rmsnormBackward(dx: Float32Array, dg: Float32Array | null, dy: Float32Array, x: Float32Array, g: Float32Array, M: number, eps: number): void;
  ropeBackward(dx: Float32Array, positions: Int32Array, nHeads: number, headDim: number, invFreq: Float32Array): void;
  swigluBackward(dgate: Float32Array, dup: Float32Array, dout: Float32Array, gate: Float32Array, up: Float32Array): void;
  attentionDense(out: Float32Array, lse: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, segStart: Int32Array,
    H: number, K: number, E: number, scale: number): void;
  attentionDenseBackward(dq: Float32Array, dk: Float32Array, dv: Float32Array, dout: Float32Array, q: Float32Array, k: Float32Array,
    v: Float32Array, out: Float32Array, lse: Float32Array, segStart: Int32Array, H: number, K: number, E: number, scale: number): void;
  embeddingBackward(dtable: Float32Array, dy: Float32Array, ids: Int32Array, D: number): void;
  crossEntropy(dlogits: Float32Array, logits: Float32Array, targets: Int32Array, M: number, scale: number): number;
  loraForward(y: Float32Array, u: Float32Array, x: Float32Array, a: Float32Array, b: Float32Array, s: number, M: number, N: number, C: number, r: number): void;
  loraBackward(dx: Float32Array, dA: Float32Array, dB: Float32Array, dy: Float32Array, x: Float32Array, u: Float32Array, a: Float32Array,
    b: Float32Array, s: number, M: number, N: number, C: number, r: number, accumulate: boolean): void;
  adamwUpdate(w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, b1: number, b2: number, eps: number, decay: number,
    stepSize: number, sbc2: number): void;
}

/** FLOE_TRAIN_FUSED=0: the trainer's LoRA factor products and AdamW take their composite / TypeScript paths (A/B). */
const TRAIN_FUSED = process.env.FLOE_TRAIN_FUSED !== '0';

/**
 * The fused calls of a layer's neighbouring ops, each off by its setting (A/B): FLOE_MATMUL_MANY=0 (q/k/v and
 * gate/up, one matmul per weight), FLOE_ADD_RMSNORM=0 (the residual add, then the norm), FLOE_ROPE_KV=0 (rope on q,
 * rope on k, then kvWrite).
 */
const MATMUL_MANY = process.env.FLOE_MATMUL_MANY !== '0', ADD_RMSNORM = process.env.FLOE_ADD_RMSNORM !== '0';
const ROPE_KV = process.env.FLOE_ROPE_KV !== '0';

function makeBackend(a: NativeAddon & NativeTrainAddon): TrainBackend {
  const { matmulMany, addRmsnorm, ropeKvWrite, ...plain } = makeFullBackend(a);
  const be: TrainBackend = {
    ...plain, ...(MATMUL_MANY ? { matmulMany } : {}), ...(ADD_RMSNORM ? { addRmsnorm } : {}), ...(ROPE_KV ? { ropeKvWrite } : {}),
  };
  if (TRAIN_FUSED) return be;
  const { loraForward: _f, loraBackward: _b, adamwUpdate: _u, ...rest } = be;
  return rest;
}

function makeFullBackend(a: NativeAddon & NativeTrainAddon): TrainBackend {
  return {
    name: 'native',

    matmul(y: Float32Array, x: Float32Array, w: Tensor, M: number): void {
      a.matmul(y, x, ...weightArgs('matmul', w), M);
    },

    matmulMany(ys: readonly Float32Array[], x: Float32Array, ws: readonly Tensor[], M: number): void {
      if (ys.length !== ws.length) throw new Error(`native.matmulMany: ${ys.length} outputs for ${ws.length} weights`);
      const args: unknown[] = [];
      for (let i = 0; i < ws.length; i++) args.push(ys[i], ...weightArgs('matmulMany', ws[i]!));
      a.matmulMany(x, M, ...args);
    },

    prepareWeights(tensors: Map<string, Tensor>): number {
      const q8 = q8RepackEnabled(a), r16 = r16RepackEnabled(a), f32Repack = process.env.FLOE_F32_REPACK !== '0';
      let n = 0;
      for (const [name, t] of tensors) {
        if (t.layout !== 'rows' || t.shape.length !== 2 || t.rows % 16 !== 0) continue;
        if (t.dtype === 'q8_0' && q8) {
          tensors.set(name, new Tensor('q8_0', t.shape, a.q8Repack(t.data, t.rows, t.cols, isMapped(t.data)), undefined, undefined, 'q8_0r16'));
        } else if ((t.dtype === 'bf16' || t.dtype === 'f16') && r16 && t.cols % 2 === 0) {
          const data = a.r16Repack(t.data, DTYPE_CODE[t.dtype], t.rows, t.cols, isMapped(t.data));
          tensors.set(name, new Tensor(t.dtype, t.shape, data, undefined, undefined, t.dtype === 'bf16' ? 'bf16r16' : 'f16r16'));
        } else if (t.dtype === 'f32' && r16 && f32Repack) {
          tensors.set(name, new Tensor('f32', t.shape, a.r16Repack(t.data, DTYPE_CODE.f32, t.rows, t.cols, isMapped(t.data)), undefined, undefined, 'f32r16'));
        } else if (t.dtype === 'fp8_e4m3' && r16 && t.cols % 4 === 0 && (t.scaleBlock![1] >= t.cols || t.scaleBlock![1] % 4 === 0)) {
          const data = a.r16Repack(t.data, DTYPE_CODE.fp8_e4m3, t.rows, t.cols, isMapped(t.data));
          tensors.set(name, new Tensor(t.dtype, t.shape, data, t.scale, t.scaleBlock, 'fp8r16'));
        } else continue;
        n++;
      }
      return n;
    },

    rmsnorm(y: Float32Array, x: Float32Array, g: Float32Array, M: number, eps: number): void {
      a.rmsnorm(y, x, g, M, eps);
    },

    rope(x: Float32Array, positions: Int32Array, nHeads: number, headDim: number, invFreq: Float32Array): void {
      a.rope(x, positions, nHeads, headDim, invFreq);
    },

    swiglu(out: Float32Array, gate: Float32Array, up: Float32Array): void {
      a.swiglu(out, gate, up);
    },

    embedding(out: Float32Array, table: Tensor, ids: Int32Array): void {
      a.embedding(out, ...weightArgs('embedding', table), ids);
    },

    addRmsnorm(x: Float32Array, d: Float32Array, y: Float32Array, g: Float32Array, M: number, eps: number): void {
      a.addRmsnorm(x, d, y, g, M, eps);
    },

    add(y: Float32Array, x: Float32Array): void {
      a.add(y, x);
    },

    loraSegmented(y, x, C, N, segStart, as, bts, scales): void {
      a.loraSegmented(y, x, C, N, segStart, as, bts, scales);
    },

    ropeKvWrite(q: Float32Array, k: Float32Array, v: Float32Array, positions: Int32Array, numHeads: number, invFreq: Float32Array,
      layer: KvLayer, slots: Int32Array): void {
      a.ropeKvWrite(q, k, v, positions, numHeads, invFreq, layer.k, layer.v, kvCode(layer), layer.numBlocks, layer.blockSize,
        layer.numKvHeads, layer.headDim, slots, ...kvScaleArgs('ropeKvWrite', layer));
    },

    kvWrite(layer: KvLayer, k: Float32Array, v: Float32Array, slots: Int32Array): void {
      a.kvWrite(layer.k, layer.v, kvCode(layer), layer.numBlocks, layer.blockSize, layer.numKvHeads, layer.headDim, k, v, slots,
        ...kvScaleArgs('kvWrite', layer));
    },

    attention(out: Float32Array, q: Float32Array, layer: KvLayer, shape: AttentionShape, batch: AttentionBatch): void {
      if (shape.numKvHeads !== layer.numKvHeads || shape.headDim !== layer.headDim) {
        throw new Error(`native.attention: shape (K=${shape.numKvHeads}, E=${shape.headDim}) does not match the cache layer (K=${layer.numKvHeads}, E=${layer.headDim})`);
      }
      a.attention(out, q, layer.k, layer.v, kvCode(layer), layer.numBlocks, layer.blockSize, layer.numKvHeads, layer.headDim,
        shape.numHeads, shape.scale, batch.numSeqs, batch.qStart, batch.ctxLen, batch.blockTables, batch.maxBlocks, ...kvScaleArgs('attention', layer));
    },

    logSoftmax(out: Float32Array, logits: Float32Array, M: number): void {
      a.logSoftmax(out, logits, M);
    },

    topk(x: Float32Array, k: number): { ids: Int32Array; values: Float32Array } {
      return a.topk(x, k);
    },

    sampleCandidates(z, temperature, topK, topP, minP, ids, weights, sum): number {
      return a.sampleCandidates(z, temperature, topK, topP, minP, ids, weights, sum);
    },

    argmax(x: Float32Array): number {
      return a.argmax(x);
    },

    // ----------------------------------------------------------------------------------- training kernels

    matmulBackwardInput(dx: Float32Array, dy: Float32Array, w: Tensor, M: number, accumulate: boolean): void {
      a.matmulBackwardInput(dx, dy, ...weightArgs('matmulBackwardInput', w), M, accumulate);
    },

    matmulBackwardWeight(dw: Float32Array, dy: Float32Array, x: Float32Array, M: number, N: number, C: number): void {
      a.matmulBackwardWeight(dw, dy, x, M, N, C);
    },

    rmsnormBackward(dx: Float32Array, dg: Float32Array | null, dy: Float32Array, x: Float32Array, g: Float32Array, M: number, eps: number): void {
      a.rmsnormBackward(dx, dg, dy, x, g, M, eps);
    },

    ropeBackward(dx: Float32Array, positions: Int32Array, nHeads: number, headDim: number, invFreq: Float32Array): void {
      a.ropeBackward(dx, positions, nHeads, headDim, invFreq);
    },

    swigluBackward(dgate: Float32Array, dup: Float32Array, dout: Float32Array, gate: Float32Array, up: Float32Array): void {
      a.swigluBackward(dgate, dup, dout, gate, up);
    },

    attentionDense(out: Float32Array, lse: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, segStart: Int32Array, shape: AttentionShape): void {
      a.attentionDense(out, lse, q, k, v, segStart, shape.numHeads, shape.numKvHeads, shape.headDim, shape.scale);
    },

    attentionDenseBackward(dq: Float32Array, dk: Float32Array, dv: Float32Array, dout: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array,
      out: Float32Array, lse: Float32Array, segStart: Int32Array, shape: AttentionShape): void {
      a.attentionDenseBackward(dq, dk, dv, dout, q, k, v, out, lse, segStart, shape.numHeads, shape.numKvHeads, shape.headDim, shape.scale);
    },

    embeddingBackward(dtable: Float32Array, dy: Float32Array, ids: Int32Array, D: number): void {
      a.embeddingBackward(dtable, dy, ids, D);
    },

    crossEntropy(dlogits: Float32Array, logits: Float32Array, targets: Int32Array, M: number, scale: number): number {
      return a.crossEntropy(dlogits, logits, targets, M, scale);
    },

    loraForward(y, u, x, la, lb, s, M, N, C, r): void {
      a.loraForward(y, u, x, la, lb, s, M, N, C, r);
    },

    loraBackward(dx, dA, dB, dy, x, u, la, lb, s, M, N, C, r, accumulate): void {
      a.loraBackward(dx, dA, dB, dy, x, u, la, lb, s, M, N, C, r, accumulate);
    },

    adamwUpdate(w, g, m, v, b1, b2, eps, decay, stepSize, sbc2): void {
      a.adamwUpdate(w, g, m, v, b1, b2, eps, decay, stepSize, sbc2);
    },
  };
}

let backend: TrainBackend | null | undefined;

/** The native backend, or null when the addon is not built. */
export function loadNativeBackend(): TrainBackend | null {
  if (backend !== undefined) return backend;
  const a = loadAddon();
  backend = a ? makeBackend(a as NativeAddon & NativeTrainAddon) : null;
  return backend;
}

/** Calls per kernel and path since load, keys like "matmul.bf16.avx512", "attention.f32kv.avx2"; {} if not built. */
export function nativeCounters(): Record<string, number> {
  return loadAddon()?.counters() ?? {};
}
