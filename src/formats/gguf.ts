// GGUF (v2/v3) reader: header, typed metadata, tensor infos, zero-copy tensor views; llama metadata -> LlamaConfig.
//
// Layout: "GGUF" | u32 version | u64 tensor count | u64 kv count | kv* | tensor info* | pad to alignment | data.
// Strings are u64 length + UTF-8 bytes. Tensor dims are listed innermost first: ne0 = columns.

import type { LlamaConfig, RopeScaling } from './llama-config.js';
import type { DType } from '../tensor/tensor.js';
import { Tensor } from '../tensor/tensor.js';
import { mapFile, type FileBytes } from './mapfile.js';
import { showJson } from './json-show.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as u32 LE

/** GGUF metadata value types (numbering from the GGUF spec). */
export enum GgufType {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
}

/** ggml tensor types floe reads. */
export const GGML_F32 = 0;
export const GGML_F16 = 1;
export const GGML_Q8_0 = 8;
export const GGML_BF16 = 30;

/** ggml type -> [name, elements per block, bytes per block]; enough to validate sizes of files floe cannot use. */
const GGML_TYPES: Record<number, readonly [string, number, number]> = {
  0: ['F32', 1, 4], 1: ['F16', 1, 2], 2: ['Q4_0', 32, 18], 3: ['Q4_1', 32, 20], 6: ['Q5_0', 32, 22], 7: ['Q5_1', 32, 24],
  8: ['Q8_0', 32, 34], 9: ['Q8_1', 32, 36], 10: ['Q2_K', 256, 84], 11: ['Q3_K', 256, 110], 12: ['Q4_K', 256, 144],
  13: ['Q5_K', 256, 176], 14: ['Q6_K', 256, 210], 15: ['Q8_K', 256, 292], 24: ['I8', 1, 1], 25: ['I16', 1, 2],
  26: ['I32', 1, 4], 27: ['I64', 1, 8], 28: ['F64', 1, 8], 30: ['BF16', 1, 2],
};

export const GGML_TO_DTYPE: Readonly<Record<number, DType>> = { 0: 'f32', 1: 'f16', 8: 'q8_0', 30: 'bf16' };
export const DTYPE_TO_GGML = { f32: 0, f16: 1, q8_0: 8, bf16: 30, fp8_e4m3: null, i32: 26 } as const satisfies Record<DType, number | null>;

export function ggmlTypeName(t: number): string {
  return GGML_TYPES[t]?.[0] ?? `type ${t}`;
}

/** A metadata value with its GGUF type (arrays carry their element type). */
export type GgufValue =
  | { readonly type: Exclude<GgufType, GgufType.ARRAY>; readonly value: number | bigint | boolean | string }
  | { readonly type: GgufType.ARRAY; readonly itemType: GgufType; readonly value: readonly unknown[] };

export interface GgufTensorInfo {
  readonly name: string;
  readonly dims: readonly number[]; // ne, innermost first
  readonly type: number; // ggml type
  readonly offset: number; // relative to the data section
  readonly data: Uint8Array; // view into the mapped file
}

export interface GgufFile {
  readonly path: string;
  readonly version: number;
  readonly alignment: number;
  readonly metadata: Map<string, unknown>; // plain values: number (bigint past 2^53), boolean, string, arrays
  readonly typed: Map<string, GgufValue>;
  readonly tensors: Map<string, GgufTensorInfo>;
  readonly dataOffset: number;
}

const MAX_DIMS = 4;

/** A key or tensor name as it goes into an error: quoted, a corrupted (huge) one cut short. */
const q = (s: string) => showJson(s, 100);

// The file each parsed metadata map came from: tokenizerFromGguf(loaded.ggufMetadata) names it in its errors.
const metadataFile = new WeakMap<Map<string, unknown>, string>();

/** The GGUF file a metadata map (GgufFile.metadata, LoadedModel.ggufMetadata) was parsed from, or null. */
export function ggufMetadataFile(meta: Map<string, unknown>): string | null {
  return metadataFile.get(meta) ?? null;
}
const MAX_ARRAY_DEPTH = 4;
/**
 * Most items one metadata array may hold: real ones are tokenizer lists (~300k at most). A corrupted count in a
 * multi-GiB file passed the bound by the bytes left, and the items were read from tensor data into a JS array at
 * 8+ bytes each: 50M u8 took 7 s and 800 MB, 200M ended in 'RangeError: Invalid array length' naming no file.
 */
export const MAX_ARRAY_ITEMS = 2 ** 24;
/** V8's longest string (2^29 - 24 UTF-16 units): a longer value cannot be decoded. */
export const MAX_STRING_BYTES = 2 ** 29 - 24;

class Reader {
  pos = 0;
  readonly dv: DataView;
  readonly dec = new TextDecoder('utf-8', { fatal: true });
  constructor(readonly bytes: Uint8Array, readonly file: string) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  fail(msg: string): never {
    throw new Error(`${this.file}: ${msg} (at byte ${this.pos})`);
  }
  get left(): number { return this.bytes.byteLength - this.pos; }
  need(n: number, what: string): void {
    if (n > this.left) this.fail(`truncated: ${what} needs ${n} bytes, ${this.left} left`);
  }
  u8(): number { this.need(1, 'u8'); return this.dv.getUint8(this.pos++); }
  u32(what = 'u32'): number { this.need(4, what); const v = this.dv.getUint32(this.pos, true); this.pos += 4; return v; }
  u64big(what = 'u64'): bigint { this.need(8, what); const v = this.dv.getBigUint64(this.pos, true); this.pos += 8; return v; }
  /** u64 that must fit a JS number (sizes, counts, offsets). */
  u64(what: string): number {
    const v = this.u64big(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) { this.pos -= 8; this.fail(`${what} ${v} is too large`); }
    return Number(v);
  }
  str(what: string): string {
    const n = this.u64(`${what} length`);
    this.need(n, what);
    // past V8's longest string decode() threw as if the bytes were bad UTF-8 (after reading up to 2 GiB)
    if (n > MAX_STRING_BYTES) { this.pos -= 8; this.fail(`${what} is ${n} bytes, longer than a string floe can hold (${MAX_STRING_BYTES}); a corrupted length?`); }
    let s: string;
    try {
      s = this.dec.decode(this.bytes.subarray(this.pos, this.pos + n));
    } catch {
      this.fail(`${what} is not valid UTF-8`);
    }
    this.pos += n;
    return s;
  }
  scalar(t: GgufType, what: string): number | bigint | boolean | string {
    const p = this.pos;
    switch (t) {
      case GgufType.U8: this.need(1, what); this.pos += 1; return this.dv.getUint8(p);
      case GgufType.I8: this.need(1, what); this.pos += 1; return this.dv.getInt8(p);
      case GgufType.U16: this.need(2, what); this.pos += 2; return this.dv.getUint16(p, true);
      case GgufType.I16: this.need(2, what); this.pos += 2; return this.dv.getInt16(p, true);
      case GgufType.U32: this.need(4, what); this.pos += 4; return this.dv.getUint32(p, true);
      case GgufType.I32: this.need(4, what); this.pos += 4; return this.dv.getInt32(p, true);
      case GgufType.F32: this.need(4, what); this.pos += 4; return this.dv.getFloat32(p, true);
      case GgufType.F64: this.need(8, what); this.pos += 8; return this.dv.getFloat64(p, true);
      case GgufType.BOOL: {
        this.need(1, what);
        const b = this.dv.getUint8(p);
        if (b > 1) this.fail(`${what}: bool byte must be 0 or 1, got ${b}`);
        this.pos += 1;
        return b === 1;
      }
      case GgufType.U64: case GgufType.I64: {
        this.need(8, what);
        this.pos += 8;
        const v = t === GgufType.U64 ? this.dv.getBigUint64(p, true) : this.dv.getBigInt64(p, true);
        return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      case GgufType.STRING: return this.str(what);
      default: this.fail(`${what}: unknown value type ${t}`);
    }
  }
  value(t: number, what: string, depth = 0): GgufValue {
    if (t === GgufType.ARRAY) {
      if (depth >= MAX_ARRAY_DEPTH) this.fail(`${what}: arrays nested deeper than ${MAX_ARRAY_DEPTH}`);
      const itemType = this.u32(`${what} array type`);
      if (!(itemType in GgufType)) { this.pos -= 4; this.fail(`${what}: unknown array element type ${itemType}`); }
      const n = this.u64(`${what} array length`);
      if (n > MAX_ARRAY_ITEMS) { this.pos -= 8; this.fail(`${what}: array of ${n} ${GgufType[itemType]} items is longer than floe reads (${MAX_ARRAY_ITEMS}); a corrupted count?`); }
      // Smallest encoding of one element: bounds the count before anything is allocated.
      const minSize = itemType === GgufType.STRING || itemType === GgufType.U64 || itemType === GgufType.I64 || itemType === GgufType.F64 ? 8
        : itemType === GgufType.ARRAY ? 12 : itemType === GgufType.U32 || itemType === GgufType.I32 || itemType === GgufType.F32 ? 4
          : itemType === GgufType.U16 || itemType === GgufType.I16 ? 2 : 1;
      if (n * minSize > this.left) this.fail(`truncated: ${what} array of ${n} ${GgufType[itemType]} needs at least ${n * minSize} bytes, ${this.left} left`);
      const out = new Array<unknown>(n);
      for (let i = 0; i < n; i++) {
        out[i] = itemType === GgufType.ARRAY ? plain(this.value(itemType, `${what}[${i}]`, depth + 1)) : this.scalar(itemType, `${what}[${i}]`);
      }
      return { type: GgufType.ARRAY, itemType, value: out };
    }
    if (!(t in GgufType)) { this.pos -= 4; this.fail(`${what}: unknown value type ${t}`); }
    return { type: t as Exclude<GgufType, GgufType.ARRAY>, value: this.scalar(t, what) };
  }
}

function plain(v: GgufValue): unknown {
  return v.value;
}

/** How much of a GGUF file's start parseGguf reads its metadata and tensor infos from (a DataView's reach). */
const HEAD_BYTES = 2 ** 31 - 1;

/** Parses and validates a GGUF file held in `bytes` (a Uint8Array, or mapFile's ranges); every error names the file. */
export function parseGguf(bytes: FileBytes, file: string): GgufFile {
  // metadata and tensor infos are read from the file's first 2 GiB (a ranged file maps only that for them)
  const r: Reader = new Reader(bytes.subarray(0, Math.min(bytes.byteLength, HEAD_BYTES)), file);
  if (bytes.byteLength < 4 || r.u32('magic') !== GGUF_MAGIC) { r.pos = 0; r.fail('not a GGUF file (bad magic)'); }
  const version = r.u32('version');
  if (version !== 2 && version !== 3) {
    r.pos -= 4;
    r.fail(`unsupported GGUF version ${version} (supported: 2, 3${version > 0xffff ? '; big-endian files are not supported' : ''})`);
  }
  const nTensors = r.u64('tensor count');
  const nKv = r.u64('metadata count');
  if (nKv * 13 > r.left) r.fail(`truncated: ${nKv} metadata entries cannot fit in ${r.left} bytes`);
  if (nTensors * 24 > r.left) r.fail(`truncated: ${nTensors} tensor infos cannot fit in ${r.left} bytes`);

  const metadata = new Map<string, unknown>();
  const typed = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const key = r.str(`metadata key #${i}`);
    if (typed.has(key)) r.fail(`duplicate metadata key ${q(key)}`);
    const t = r.u32(`metadata ${q(key)} type`);
    const v = r.value(t, `metadata ${q(key)}`);
    typed.set(key, v);
    metadata.set(key, v.value);
  }

  let alignment = 32;
  const al = typed.get('general.alignment');
  if (al) {
    const av = al.value;
    if (al.type !== GgufType.U32 || typeof av !== 'number' || av === 0 || (av & (av - 1)) !== 0) {
      r.fail(`general.alignment must be a u32 power of two, got ${showJson(av, 40)}`);
    }
    alignment = av;
  }

  interface Info { name: string; dims: number[]; type: number; offset: number; size: number }
  const infos: Info[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const name = r.str(`tensor #${i} name`);
    if (names.has(name)) r.fail(`duplicate tensor name ${q(name)}`);
    names.add(name);
    const nd = r.u32(`tensor ${q(name)} n_dims`);
    if (nd > MAX_DIMS) { r.pos -= 4; r.fail(`tensor ${q(name)}: ${nd} dims, at most ${MAX_DIMS} allowed`); }
    const dims: number[] = [];
    let numel = 1;
    for (let d = 0; d < nd; d++) {
      const ne = r.u64(`tensor ${q(name)} dim ${d}`);
      dims.push(ne);
      numel *= ne;
      if (numel > bytes.byteLength * 8) r.fail(`tensor ${q(name)}: dims [${dims.join(', ')}...] are larger than the file could hold`);
    }
    const type = r.u32(`tensor ${q(name)} type`);
    const tt = GGML_TYPES[type];
    if (!tt) { r.pos -= 4; r.fail(`tensor ${q(name)}: unknown ggml type ${type}`); }
    const offset = r.u64(`tensor ${q(name)} offset`);
    if (offset % alignment !== 0) r.fail(`tensor ${q(name)}: offset ${offset} is not a multiple of the alignment ${alignment}`);
    const ne0 = dims[0] ?? 1;
    if (ne0 % tt[1] !== 0) r.fail(`tensor ${q(name)}: ${tt[0]} needs ne0 to be a multiple of ${tt[1]}, got ${ne0}`);
    infos.push({ name, dims, type, offset, size: (numel / tt[1]) * tt[2] });
  }
  const dataOffset = Math.ceil(r.pos / alignment) * alignment;
  const dataLen = bytes.byteLength - dataOffset;
  if (nTensors > 0 && dataLen < 0) r.fail(`truncated: data section would start at ${dataOffset}, past the end`);
  const tensors = new Map<string, GgufTensorInfo>();
  for (const t of infos) {
    if (t.offset + t.size > dataLen) {
      throw new Error(`${file}: tensor ${q(t.name)} ${ggmlTypeName(t.type)}[${t.dims.join(', ')}] at data offset ${t.offset} needs ${t.size} bytes, but the data section has ${Math.max(0, dataLen)} bytes; truncated file?`);
    }
    tensors.set(t.name, {
      name: t.name, dims: t.dims, type: t.type, offset: t.offset,
      data: bytes.subarray(dataOffset + t.offset, dataOffset + t.offset + t.size),
    });
  }
  const sorted = [...infos].filter((t) => t.size > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const p = sorted[i - 1]!, c = sorted[i]!;
    if (c.offset < p.offset + p.size) throw new Error(`${file}: tensor ${q(c.name)} at data offset ${c.offset} overlaps tensor ${q(p.name)} [${p.offset}, ${p.offset + p.size})`);
  }
  metadataFile.set(metadata, file);
  return { path: file, version, alignment, metadata, typed, tensors, dataOffset };
}

export async function readGguf(file: string): Promise<GgufFile> {
  return parseGguf(await mapFile(file), file);
}

/** A Tensor viewing a GGUF tensor; shape is reversed to row-major (ne1, ne0). */
export function ggufTensor(g: GgufFile, info: GgufTensorInfo): Tensor {
  const dtype = GGML_TO_DTYPE[info.type];
  if (!dtype) throw new Error(`${g.path}: tensor "${info.name}" has ggml type ${ggmlTypeName(info.type)}, which floe does not read (F32, F16, BF16, Q8_0)`);
  return new Tensor(dtype, [...info.dims].reverse(), info.data);
}

// ---------------------------------------------------------------- names

const LAYER_MAP: readonly (readonly [string, string])[] = [
  ['attn_q', 'self_attn.q_proj'], ['attn_k', 'self_attn.k_proj'], ['attn_v', 'self_attn.v_proj'],
  ['attn_output', 'self_attn.o_proj'], ['ffn_gate', 'mlp.gate_proj'], ['ffn_up', 'mlp.up_proj'],
  ['ffn_down', 'mlp.down_proj'], ['attn_norm', 'input_layernorm'], ['ffn_norm', 'post_attention_layernorm'],
];
const GLOBAL_MAP: readonly (readonly [string, string])[] = [
  ['token_embd.weight', 'model.embed_tokens.weight'], ['output_norm.weight', 'model.norm.weight'], ['output.weight', 'lm_head.weight'],
];

/** GGUF tensor name -> HF name, or null for names floe does not map (rope_freqs.weight is handled apart). */
export function ggufToHfName(name: string): string | null {
  for (const [g, h] of GLOBAL_MAP) if (name === g) return h;
  const m = /^blk\.(\d+)\.([a-z_]+)\.weight$/.exec(name);
  if (!m) return null;
  for (const [g, h] of LAYER_MAP) if (m[2] === g) return `model.layers.${m[1]}.${h}.weight`;
  return null;
}

/** HF tensor name -> GGUF name, or null. */
export function hfToGgufName(name: string): string | null {
  for (const [g, h] of GLOBAL_MAP) if (name === h) return g;
  const m = /^model\.layers\.(\d+)\.(.+)\.weight$/.exec(name);
  if (!m) return null;
  for (const [g, h] of LAYER_MAP) if (m[2] === h) return `blk.${m[1]}.${g}.weight`;
  return null;
}

// ---------------------------------------------------------------- Q/K row permutation

/**
 * llama.cpp's converter reorders each head's E rows of q_proj / k_proj from HF rotate-half order to interleaved
 * pairs: gguf row 2j + h  <-  hf row h * E/2 + j  (h in {0, 1}, j < E/2), i.e. reshape(n, 2, E/2).swapaxes(1, 2).
 * Whole rows move, so this works on any row format (f32, f16, bf16, q8_0). Returns a new buffer.
 */
export function permuteQkRows(data: Uint8Array, rows: number, nHead: number, toGguf: boolean): Uint8Array {
  if (data.byteLength % rows !== 0) throw new Error(`Q/K permutation: ${data.byteLength} bytes do not split into ${rows} rows`);
  const rb = data.byteLength / rows;
  const src = qkRowSources(rows, nHead, toGguf);
  const out = new Uint8Array(data.byteLength);
  for (let r = 0; r < rows; r++) out.set(data.subarray(src[r]! * rb, (src[r]! + 1) * rb), r * rb);
  return out;
}

/** For each output row of permuteQkRows, the input row it is copied from. */
export function qkRowSources(rows: number, nHead: number, toGguf: boolean): Int32Array {
  if (rows % nHead !== 0 || (rows / nHead) % 2 !== 0) throw new Error(`Q/K permutation: ${rows} rows do not split into ${nHead} heads of even size`);
  const E = rows / nHead;
  const half = E / 2;
  const src = new Int32Array(rows);
  for (let hd = 0; hd < nHead; hd++) {
    for (let h = 0; h < 2; h++) {
      for (let j = 0; j < half; j++) {
        const hfRow = hd * E + h * half + j; // (head, rotate-half index)
        const gRow = hd * E + 2 * j + h; // (head, interleaved pair index)
        if (toGguf) src[gRow] = hfRow;
        else src[hfRow] = gRow;
      }
    }
  }
  return src;
}

// ---------------------------------------------------------------- llama metadata -> LlamaConfig

function metaNum(g: GgufFile, key: string, dflt?: number): number {
  const v = g.metadata.get(key) ?? dflt;
  if (v === undefined) throw new Error(`${g.path}: missing metadata "${key}"`);
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${g.path}: metadata "${key}" must be a number, got ${showJson(v, 60)}`);
  return v;
}

/** A number that must be > 0 (as config.json's rms_norm_eps, rope_theta, rope factor): 0 or below made NaN or Inf activations. */
function metaPosNum(g: GgufFile, key: string, dflt?: number): number {
  const v = metaNum(g, key, dflt);
  if (!(v > 0)) throw new Error(`${g.path}: metadata "${key}" must be a positive number, got ${v}`);
  return v;
}

function metaPosInt(g: GgufFile, key: string, dflt?: number): number {
  const v = metaNum(g, key, dflt);
  if (!Number.isSafeInteger(v) || v <= 0) throw new Error(`${g.path}: metadata "${key}" must be a positive integer, got ${v}`);
  return v;
}

/** LlamaConfig from `llama.*` and `tokenizer.ggml.*` metadata (tied embeddings when output.weight is absent). */
export function ggufToLlamaConfig(g: GgufFile): LlamaConfig {
  const arch = g.metadata.get('general.architecture');
  if (arch !== 'llama') throw new Error(`${g.path}: general.architecture ${showJson(arch, 60)} is not supported (only "llama")`);
  const hiddenSize = metaPosInt(g, 'llama.embedding_length');
  const numHeads = metaPosInt(g, 'llama.attention.head_count');
  const numKvHeads = metaPosInt(g, 'llama.attention.head_count_kv', numHeads);
  if (numHeads % numKvHeads !== 0) throw new Error(`${g.path}: head_count (${numHeads}) must be a multiple of head_count_kv (${numKvHeads})`);
  const rot = g.metadata.get('llama.rope.dimension_count');
  const headDim = metaPosInt(g, 'llama.attention.key_length', typeof rot === 'number' ? rot : hiddenSize / numHeads);
  if (typeof rot === 'number' && rot !== headDim) throw new Error(`${g.path}: partial rotary (rope.dimension_count ${rot} != head dim ${headDim}) is not supported`);
  if (headDim % 2 !== 0) throw new Error(`${g.path}: head dim must be even for RoPE, got ${headDim}`);
  const tokens = g.metadata.get('tokenizer.ggml.tokens');
  const embd = g.tensors.get('token_embd.weight');
  const vocabDefault: number | undefined = Array.isArray(tokens) ? tokens.length : embd?.dims[1];
  let scaling: RopeScaling | null = null;
  const st = g.metadata.get('llama.rope.scaling.type');
  if (st === 'linear') scaling = { type: 'linear', factor: metaPosNum(g, 'llama.rope.scaling.factor') };
  else if (st !== undefined && st !== 'none') throw new Error(`${g.path}: llama.rope.scaling.type ${showJson(st, 60)} is not supported (linear, none; llama3 comes as rope_freqs.weight)`);
  const vocabSize = metaPosInt(g, 'llama.vocab_size', vocabDefault);
  const vocabFrom = g.metadata.has('llama.vocab_size') ? `llama.vocab_size ${vocabSize}`
    : Array.isArray(tokens) ? `${vocabSize} tokenizer.ggml.tokens` : `token_embd.weight's ${vocabSize} rows`;
  // A tokenizer larger than the vocabulary makes ids with no embedding row and no logit (llama.cpp refuses any mismatch
  // of tokens and token_embd rows; fewer tokens than rows, a padded embedding, stays accepted here).
  if (Array.isArray(tokens) && tokens.length > vocabSize) {
    throw new Error(`${g.path}: tokenizer.ggml.tokens holds ${tokens.length} tokens, more than the model's vocabulary (${vocabFrom}: ids 0..${vocabSize - 1}); ids ${vocabSize}..${tokens.length - 1} would have no embedding row and no logit`);
  }
  // The head's logits cover ids 0..vocabSize-1: an eos / eot / eom id past them never fires, a bos past them has no embedding row.
  const id = (k: string, why: string): number | null => {
    const v = g.metadata.get(k);
    if (v === undefined) return null;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Error(`${g.path}: metadata "${k}" must be a token id (an integer >= 0), got ${showJson(v, 60)}`);
    if (v >= vocabSize) throw new Error(`${g.path}: metadata "${k}" ${v} is past the model's vocabulary (${vocabFrom}: ids 0..${vocabSize - 1}); ${why}`);
    return v;
  };
  const eos: number[] = [];
  for (const k of ['tokenizer.ggml.eos_token_id', 'tokenizer.ggml.eot_token_id', 'tokenizer.ggml.eom_token_id']) {
    const v = id(k, 'generation could never stop on it');
    if (v !== null && !eos.includes(v)) eos.push(v);
  }
  return {
    vocabSize,
    hiddenSize,
    intermediateSize: metaPosInt(g, 'llama.feed_forward_length'),
    numLayers: metaPosInt(g, 'llama.block_count'),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: metaPosNum(g, 'llama.attention.layer_norm_rms_epsilon', 1e-5),
    ropeTheta: metaPosNum(g, 'llama.rope.freq_base', 10000),
    ropeScaling: scaling,
    maxPositionEmbeddings: metaPosInt(g, 'llama.context_length'),
    tieWordEmbeddings: !g.tensors.has('output.weight'),
    bosTokenId: id('tokenizer.ggml.bos_token_id', 'the embedding has no row for it'),
    eosTokenIds: eos,
  };
}
