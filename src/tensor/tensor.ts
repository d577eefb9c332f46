// Tensor: a shape, a dtype and raw little-endian storage; weights in any stored format, activations as f32.
//
// Dimension letters used across floe: B batch, T tokens, D hidden, H heads, K kv heads, E head dim,
// F ffn hidden, V vocab, N output rows of a weight, C input columns of a weight.

/** Element formats. New values go at the end; the numeric code crosses into native code and never changes. */
export type DType = 'f32' | 'f16' | 'bf16' | 'fp8_e4m3' | 'q8_0' | 'i32';

export const DTYPE_CODE = {
  f32: 0,
  f16: 1,
  bf16: 2,
  fp8_e4m3: 3,
  q8_0: 4,
  i32: 5,
} as const satisfies Record<DType, number>;

/**
 * How a weight's bytes are ordered. 'rows': the file's row-major order. 'q8_0r16': q8_0 repacked by the native
 * backend for decode (native/common.h, q8r_*): the same blocks, 16 rows interleaved, quants stored + 128; only
 * dequantizeRow and the native kernels read it (training and writers refuse it). 'bf16r16', 'f16r16', 'fp8r16':
 * bf16 / f16 / fp8 repacked the same way (native/common.h, r16_*, fp8r_*; fp8's scale grid unchanged), read by the
 * same two; 'f32r16': f32 the same way (a 64-byte line per column of the 16 rows).
 */
export type TensorLayout = 'rows' | 'q8_0r16' | 'bf16r16' | 'f16r16' | 'fp8r16' | 'f32r16';

/** The dtype each repacked layout holds ('bf16r16', 'f16r16': the same 2-byte values, 16 rows interleaved). */
const LAYOUT_DTYPE = { q8_0r16: 'q8_0', bf16r16: 'bf16', f16r16: 'f16', fp8r16: 'fp8_e4m3', f32r16: 'f32' } as const satisfies Record<Exclude<TensorLayout, 'rows'>, DType>;

/** Bytes used by one row of `cols` elements. q8_0 stores blocks of 32: f16 scale + 32 int8 (34 bytes). */
export function rowBytes(dtype: DType, cols: number): number {
  switch (dtype) {
    case 'f32': case 'i32': return cols * 4;
    case 'f16': case 'bf16': return cols * 2;
    case 'fp8_e4m3': return cols;
    case 'q8_0':
      if (cols % 32 !== 0) throw new Error(`q8_0 rows must be a multiple of 32 elements, got ${cols}`);
      return (cols / 32) * 34;
  }
}

/**
 * A 2-D (or 1-D, or 3-D with contiguous rows) tensor in a stored format.
 *
 * For `fp8_e4m3`, `scale` holds f32 factors: value = fp8 * scale[r / scaleBlock[0], c / scaleBlock[1]],
 * laid out row-major over a (ceil(N / br), ceil(C / bc)) grid. Per-tensor: block (N, C); per output row:
 * block (1, C); DeepSeek-style 128×128 blocks: block (128, 128); per block of a row: (1, 32) etc.
 */
export class Tensor {
  constructor(
    readonly dtype: DType,
    readonly shape: readonly number[],
    readonly data: Uint8Array, // raw bytes, little-endian, row-major
    readonly scale?: Float32Array,
    readonly scaleBlock?: readonly [number, number],
    readonly layout: TensorLayout = 'rows',
  ) {
    const expected = tensorBytes(dtype, shape);
    const colMult = layout === 'bf16r16' ? 2 : layout === 'fp8r16' ? 4 : 1;
    if (layout !== 'rows' && (dtype !== LAYOUT_DTYPE[layout] || rowsCols(shape)[0] % 16 !== 0 || rowsCols(shape)[1] % colMult !== 0)) {
      throw new Error(`layout ${layout} needs a ${LAYOUT_DTYPE[layout]} tensor with rows a multiple of 16${colMult > 1 ? ` and columns a multiple of ${colMult}` : ''}, got ${dtype}[${shape.join(',')}]`);
    }
    if (data.byteLength !== expected) {
      throw new Error(`tensor ${dtype}[${shape.join(',')}] needs ${expected} bytes, got ${data.byteLength}`);
    }
    if (dtype === 'fp8_e4m3') {
      if (!scale || !scaleBlock) throw new Error('fp8_e4m3 tensor needs scale and scaleBlock');
      const [n, c] = rowsCols(shape);
      const want = Math.ceil(n / scaleBlock[0]) * Math.ceil(c / scaleBlock[1]);
      if (scale.length !== want) {
        throw new Error(`fp8 scale grid for [${n},${c}] with block [${scaleBlock}] needs ${want} values, got ${scale.length}`);
      }
    }
  }

  get rows(): number { return rowsCols(this.shape)[0]; }
  get cols(): number { return rowsCols(this.shape)[1]; }
  get numel(): number { return this.shape.reduce((a, b) => a * b, 1); }

  /** f32 view of an f32 tensor in the row layout (copied if the storage is not 4-byte aligned). */
  f32(): Float32Array {
    if (this.dtype !== 'f32') throw new Error(`f32() on a ${this.dtype} tensor`);
    if (this.layout !== 'rows') throw new Error(`f32() on a tensor in the ${this.layout} layout (read its rows with dequantizeRow)`);
    return asF32(this.data);
  }
}

/** Leading dims flattened into rows; last dim is columns. */
export function rowsCols(shape: readonly number[]): [number, number] {
  if (shape.length === 0) return [1, 1];
  const c = shape[shape.length - 1]!;
  let n = 1;
  for (let i = 0; i < shape.length - 1; i++) n *= shape[i]!;
  return [n, c];
}

export function tensorBytes(dtype: DType, shape: readonly number[]): number {
  const [n, c] = rowsCols(shape);
  return n * rowBytes(dtype, c);
}

/** Float32Array over bytes, zero-copy when aligned. */
export function asF32(bytes: Uint8Array): Float32Array {
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  return new Float32Array(bytes.slice().buffer);
}

export function f32Tensor(shape: readonly number[], values: Float32Array): Tensor {
  return new Tensor('f32', shape, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
}
