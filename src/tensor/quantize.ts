// Build Tensors in any stored dtype from f32 values: bf16/f16 by RNE, fp8 E4M3 with a block scale grid, q8_0 as llama.cpp.

import { encodeBf16, encodeF16, f32BitsToFp8, f32ToBits, f32ToF16, FP8_E4M3_MAX, Q8_0_BLOCK, Q8_0_BLOCK_BYTES } from './codecs.js';
import { rowsCols, Tensor, type DType } from './tensor.js';

export interface QuantizeOptions {
  /** fp8 scale block (rows, cols); default (1, C): one scale per output row. */
  readonly fp8Block?: readonly [number, number];
}

/** values (N, C) row-major -> Tensor of `dtype` with the given shape. */
export function quantizeTensor(values: Float32Array, shape: readonly number[], dtype: DType, opts: QuantizeOptions = {}): Tensor {
  const [N, C] = rowsCols(shape);
  if (values.length !== N * C) {
    throw new Error(`quantizeTensor: shape [${shape.join(',')}] needs ${N * C} values, got ${values.length}`);
  }
  switch (dtype) {
    case 'f32':
      return new Tensor('f32', shape, new Uint8Array(values.slice().buffer));
    case 'bf16':
      return new Tensor('bf16', shape, encodeBf16(values));
    case 'f16':
      return new Tensor('f16', shape, encodeF16(values));
    case 'fp8_e4m3':
      return quantizeFp8(values, shape, N, C, opts.fp8Block ?? [1, C]);
    case 'q8_0':
      return new Tensor('q8_0', shape, quantizeQ8_0(values));
    case 'i32':
      throw new Error('quantizeTensor: i32 is not a float dtype');
  }
}

/** scale per (br, bc) block = amax / 448 (1 when the block is all zero); stored code = fp8(x / scale). */
function quantizeFp8(values: Float32Array, shape: readonly number[], N: number, C: number, block: readonly [number, number]): Tensor {
  const [br, bc] = block;
  if (!(Number.isInteger(br) && Number.isInteger(bc) && br > 0 && bc > 0)) {
    throw new Error(`quantizeTensor: fp8 block must be two positive integers, got [${block.join(',')}]`);
  }
  const gr = Math.ceil(N / br);
  const gc = Math.ceil(C / bc);
  const scale = new Float32Array(gr * gc); // (gr, gc)
  const data = new Uint8Array(N * C);
  for (let bi = 0; bi < gr; bi++) {
    for (let bj = 0; bj < gc; bj++) {
      const r1 = Math.min(N, (bi + 1) * br);
      const c1 = Math.min(C, (bj + 1) * bc);
      let amax = 0;
      for (let r = bi * br; r < r1; r++) {
        for (let c = bj * bc; c < c1; c++) amax = Math.max(amax, Math.abs(values[r * C + c]!));
      }
      const s = amax === 0 ? 1 : Math.fround(amax / FP8_E4M3_MAX);
      scale[bi * gc + bj] = s;
      for (let r = bi * br; r < r1; r++) {
        for (let c = bj * bc; c < c1; c++) data[r * C + c] = f32BitsToFp8(f32ToBits(values[r * C + c]! / s));
      }
    }
  }
  return new Tensor('fp8_e4m3', shape, data, scale, [br, bc]);
}

/** llama.cpp quantize_row_q8_0_ref: d = amax/127 (f32), id = d ? 1/d : 0, q = roundf(x * id), d stored as f16. */
export function quantizeQ8_0(values: Float32Array): Uint8Array {
  if (values.length % Q8_0_BLOCK !== 0) throw new Error(`quantizeQ8_0: ${values.length} values is not a multiple of 32`);
  const nb = values.length / Q8_0_BLOCK;
  const out = new Uint8Array(nb * Q8_0_BLOCK_BYTES);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(values[b * Q8_0_BLOCK + j]!));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const h = f32ToF16(d);
    const o = b * Q8_0_BLOCK_BYTES;
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const x0 = Math.fround(values[b * Q8_0_BLOCK + j]! * id);
      // roundf: half away from zero
      const q = Math.sign(x0) * Math.floor(Math.abs(x0) + 0.5);
      out[o + 2 + j] = q & 0xff;
    }
  }
  return out;
}
