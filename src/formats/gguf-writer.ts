// GGUF v3 writer (atomic, streamed per tensor) and the HF -> GGUF converter llama.cpp can load.
//
// Dimension letters: V vocab, D hidden, H heads, K kv heads, E head dim, N rows, C columns.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LlamaConfig, RopeScaling } from './llama-config.js';
import { dequantizeRow } from '../tensor/codecs.js';
import { quantizeTensor } from '../tensor/quantize.js';
import { rowsCols, Tensor, tensorBytes, type DType } from '../tensor/tensor.js';
import { DTYPE_TO_GGML, GGUF_MAGIC, GgufType, hfToGgufName, permuteQkRows, readGguf, type GgufValue } from './gguf.js';
import type { LoadedModel } from './load.js';
import { writeFileAtomic } from './safetensors.js';
import { checkTokenizerJson } from './tokenizer.js';
import { showJson } from './json-show.js';

/** Typed metadata constructors. */
export const gv = {
  u8: (value: number): GgufValue => ({ type: GgufType.U8, value }),
  i32: (value: number): GgufValue => ({ type: GgufType.I32, value }),
  u32: (value: number): GgufValue => ({ type: GgufType.U32, value }),
  u64: (value: number | bigint): GgufValue => ({ type: GgufType.U64, value }),
  f32: (value: number): GgufValue => ({ type: GgufType.F32, value }),
  f64: (value: number): GgufValue => ({ type: GgufType.F64, value }),
  bool: (value: boolean): GgufValue => ({ type: GgufType.BOOL, value }),
  str: (value: string): GgufValue => ({ type: GgufType.STRING, value }),
  arr: (itemType: GgufType, value: readonly unknown[]): GgufValue => ({ type: GgufType.ARRAY, itemType, value }),
};

export type GgufWriteDType = 'f32' | 'f16' | 'bf16' | 'q8_0';

export interface GgufWriteTensor {
  readonly name: string;
  readonly dtype: GgufWriteDType;
  readonly shape: readonly number[]; // row-major (N, C); written as dims (C, N)
  /** The tensor's bytes, or a function producing them when the writer reaches this tensor (streaming). */
  readonly data: Uint8Array | (() => Uint8Array);
}

const enc = new TextEncoder();

/** Growable little-endian byte sink for the header. */
class Sink {
  buf = new Uint8Array(1 << 16);
  dv = new DataView(this.buf.buffer);
  len = 0;
  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
    this.dv = new DataView(b.buffer);
  }
  u8(v: number): void { this.room(1); this.dv.setUint8(this.len, v); this.len += 1; }
  i8(v: number): void { this.room(1); this.dv.setInt8(this.len, v); this.len += 1; }
  u16(v: number): void { this.room(2); this.dv.setUint16(this.len, v, true); this.len += 2; }
  i16(v: number): void { this.room(2); this.dv.setInt16(this.len, v, true); this.len += 2; }
  u32(v: number): void { this.room(4); this.dv.setUint32(this.len, v, true); this.len += 4; }
  i32(v: number): void { this.room(4); this.dv.setInt32(this.len, v, true); this.len += 4; }
  f32(v: number): void { this.room(4); this.dv.setFloat32(this.len, v, true); this.len += 4; }
  f64(v: number): void { this.room(8); this.dv.setFloat64(this.len, v, true); this.len += 8; }
  u64(v: number | bigint): void {
    this.room(8);
    if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) { // no BigInt on the hot path (string lengths)
      this.dv.setUint32(this.len, v % 0x100000000, true);
      this.dv.setUint32(this.len + 4, Math.floor(v / 0x100000000), true);
    } else {
      this.dv.setBigUint64(this.len, BigInt(v), true);
    }
    this.len += 8;
  }
  i64(v: number | bigint): void { this.room(8); this.dv.setBigInt64(this.len, BigInt(v), true); this.len += 8; }
  str(s: string): void {
    this.room(8 + 3 * s.length); // UTF-8 needs at most 3 bytes per UTF-16 unit
    const { written } = enc.encodeInto(s, this.buf.subarray(this.len + 8));
    this.u64(written);
    this.len += written;
  }
  bytes(): Uint8Array { return this.buf.subarray(0, this.len); }
}

function writeScalar(s: Sink, t: GgufType, v: unknown, key: string): void {
  const num = (): number => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`GGUF metadata "${key}": ${GgufType[t]} needs a finite number, got ${String(v)}`);
    return v;
  };
  const int = (lo: number, hi: number): number => {
    const n = num();
    if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`GGUF metadata "${key}": ${n} does not fit ${GgufType[t]}`);
    return n;
  };
  switch (t) {
    case GgufType.U8: s.u8(int(0, 0xff)); return;
    case GgufType.I8: s.i8(int(-0x80, 0x7f)); return;
    case GgufType.U16: s.u16(int(0, 0xffff)); return;
    case GgufType.I16: s.i16(int(-0x8000, 0x7fff)); return;
    case GgufType.U32: s.u32(int(0, 0xffffffff)); return;
    case GgufType.I32: s.i32(int(-0x80000000, 0x7fffffff)); return;
    case GgufType.F32: s.f32(num()); return;
    case GgufType.F64: s.f64(num()); return;
    case GgufType.U64: s.u64(typeof v === 'bigint' ? v : int(0, Number.MAX_SAFE_INTEGER)); return;
    case GgufType.I64: s.i64(typeof v === 'bigint' ? v : int(Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)); return;
    case GgufType.BOOL:
      if (typeof v !== 'boolean') throw new Error(`GGUF metadata "${key}": BOOL needs a boolean, got ${String(v)}`);
      s.u8(v ? 1 : 0);
      return;
    case GgufType.STRING:
      if (typeof v !== 'string') throw new Error(`GGUF metadata "${key}": STRING needs a string, got ${typeof v}`);
      s.str(v);
      return;
    default:
      throw new Error(`GGUF metadata "${key}": unknown type ${t}`);
  }
}

function writeValue(s: Sink, v: GgufValue, key: string): void {
  s.u32(v.type);
  if (v.type === GgufType.ARRAY) {
    if (v.itemType === GgufType.ARRAY) throw new Error(`GGUF metadata "${key}": nested arrays are not written`);
    s.u32(v.itemType);
    s.u64(v.value.length);
    if (v.itemType === GgufType.STRING) {
      for (const x of v.value) {
        if (typeof x !== 'string') throw new Error(`GGUF metadata "${key}": STRING array holds a ${typeof x}`);
        s.str(x);
      }
    } else {
      for (const x of v.value) writeScalar(s, v.itemType, x, key);
    }
  } else {
    writeScalar(s, v.type, v.value, key);
  }
}

/**
 * Writes a GGUF v3 file atomically. Tensor data are aligned to `alignment` (32, the GGUF default; written as
 * general.alignment only when different). Tensors given as functions are produced one at a time.
 */
export function writeGguf(
  file: string,
  metadata: ReadonlyMap<string, GgufValue> | Readonly<Record<string, GgufValue>>,
  tensors: readonly GgufWriteTensor[],
  opts: { alignment?: number } = {},
): void {
  const align = opts.alignment ?? 32;
  if (!Number.isInteger(align) || align <= 0 || (align & (align - 1)) !== 0) throw new Error(`GGUF alignment must be a power of two, got ${align}`);
  const meta = new Map<string, GgufValue>(metadata instanceof Map ? metadata : Object.entries(metadata));
  if (align !== 32) meta.set('general.alignment', gv.u32(align));
  else meta.delete('general.alignment');
  const s = new Sink();
  s.u32(GGUF_MAGIC);
  s.u32(3);
  s.u64(tensors.length);
  s.u64(meta.size);
  for (const [k, v] of meta) {
    s.str(k);
    writeValue(s, v, k);
  }
  const names = new Set<string>();
  let off = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    if (names.has(t.name)) throw new Error(`${file}: duplicate tensor name "${t.name}"`);
    names.add(t.name);
    const ggml = DTYPE_TO_GGML[t.dtype];
    const size = tensorBytes(t.dtype, t.shape);
    s.str(t.name);
    s.u32(t.shape.length);
    for (let i = t.shape.length - 1; i >= 0; i--) s.u64(t.shape[i]!); // innermost first
    s.u32(ggml);
    s.u64(off);
    sizes.push(size);
    off += Math.ceil(size / align) * align;
  }
  const headerPad = (align - (s.len % align)) % align;
  const zeros = new Uint8Array(align);
  function* chunks(): Generator<Uint8Array> {
    yield s.bytes();
    yield zeros.subarray(0, headerPad);
    for (const [i, t] of tensors.entries()) {
      const data = typeof t.data === 'function' ? t.data() : t.data;
      if (data.byteLength !== sizes[i]) {
        throw new Error(`tensor "${t.name}": ${t.dtype}[${t.shape.join(',')}] needs ${sizes[i]} bytes, got ${data.byteLength}`);
      }
      yield data;
      yield zeros.subarray(0, (align - (data.byteLength % align)) % align);
    }
  }
  writeFileAtomic(file, chunks());
}

// ---------------------------------------------------------------- HF -> GGUF

/** llama.cpp LlamaFileType for general.file_type. */
const FILE_TYPE: Record<GgufWriteDType, number> = { f32: 0, f16: 1, q8_0: 7, bf16: 32 };

/**
 * llama.cpp's rope_freqs factors for `llama3` scaling (E/2): llama.cpp divides base inv_freq by them, so
 * factor = base_inv_freq / hf_inv_freq (1 at high frequencies, `factor` at low ones, smooth between).
 */
export function llama3RopeFactors(cfg: Pick<LlamaConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float32Array {
  const s = cfg.ropeScaling;
  if (s?.type !== 'llama3') throw new Error('llama3RopeFactors: config has no llama3 rope scaling');
  const E = cfg.headDim;
  const out = new Float32Array(E / 2);
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  for (let i = 0; i < E / 2; i++) {
    const f = Math.fround(1 / Math.pow(cfg.ropeTheta, (2 * i) / E));
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = s.factor;
    else {
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return out;
}

/**
 * The inverse of llama3RopeFactors: the `llama3` rope_scaling that gives `factors` (a GGUF's rope_freqs.weight, which
 * carries no parameters), for writing an HF config. Only ratios of the parameters show in the factors, so
 * original_max_position_embeddings is taken as the integer nearest original/low_freq_factor (Llama 3.1's 8192 / 1 comes
 * back as itself) and the rest fitted; the fit is checked by recomputing the factors.
 * Throws when the factors are not llama3's shape (then no HF config can state them).
 */
export function llama3ScalingFromFactors(cfg: Pick<LlamaConfig, 'headDim' | 'ropeTheta'>, factors: Float32Array, where: string): RopeScaling & { type: 'llama3' } {
  const E = cfg.headDim;
  if (factors.length !== E / 2) throw new Error(`${where}: rope_freqs.weight has ${factors.length} factors, head dim ${E} needs ${E / 2}`);
  const wavelen = (i: number) => (2 * Math.PI) / Math.fround(1 / Math.pow(cfg.ropeTheta, (2 * i) / E));
  const factor = Math.max(...factors);
  const tol = 1e-5;
  const high: number[] = [], low: number[] = [], mid: number[] = [];
  for (let i = 0; i < factors.length; i++) {
    const r = factors[i]!;
    if (Math.abs(r - 1) <= tol) high.push(i);
    else if (Math.abs(r - factor) <= tol * factor) low.push(i);
    else mid.push(i);
  }
  const bad = (why: string): never => {
    throw new Error(`${where}: rope_freqs.weight (${Array.from(factors, (f) => +f.toPrecision(6)).join(', ')}) is not llama3 rope scaling (${why}), so no HF config.json can state it`);
  };
  if (!(factor > 1)) bad('no factor above 1');
  // llama3: factor 1 at short wavelengths, `factor` at long ones, smooth between, in wavelength order
  const order = [...high, ...mid, ...low];
  if (order.some((v, k) => k > 0 && v < order[k - 1]!)) bad('the factors do not rise with the wavelength');
  let scaling: RopeScaling & { type: 'llama3' };
  if (mid.length >= 2) {
    // 1/r = (1 - s)/factor + s  =>  s = (1/r - 1/factor) / (1 - 1/factor);  s = (orig/wavelen - lowF) / (highF - lowF)
    // With lowF = 1: s = a·x + b for x = 1/wavelen, a = orig/(highF - 1), b = -1/(highF - 1). Least squares over mid.
    const xs = mid.map((i) => 1 / wavelen(i));
    const ss = mid.map((i) => (1 / factors[i]! - 1 / factor) / (1 - 1 / factor));
    const n = xs.length, mx = xs.reduce((a, b) => a + b) / n, ms = ss.reduce((a, b) => a + b) / n;
    let sxx = 0, sxs = 0;
    for (let k = 0; k < n; k++) { sxx += (xs[k]! - mx) ** 2; sxs += (xs[k]! - mx) * (ss[k]! - ms); }
    const a = sxs / sxx, b = ms - a * mx;
    if (!(b < 0) || !(a > 0)) bad('the smooth part does not fit');
    // an integer original_max_position_embeddings N (HF's type) near orig/lowF; then lowF = -b·N/a, highF - lowF = N/a
    const N = Math.max(1, Math.round(-a / b)), lowF = (-b * N) / a;
    scaling = { type: 'llama3', factor, lowFreqFactor: lowF, highFreqFactor: lowF + N / a, originalMaxPositionEmbeddings: N };
  } else {
    // fewer than two wavelengths in the smooth band: many bands [H, L] give these factors; pick one between the
    // groups (and through the one smooth factor), then N = round(L), lowF = N / L, highF = N / H
    const wl = wavelen(low[0]!), wh = high.length ? wavelen(high.at(-1)!) : 0;
    let L: number, H: number;
    if (mid.length === 1) {
      const wm = wavelen(mid[0]!), s1 = (1 / factors[mid[0]!]! - 1 / factor) / (1 - 1 / factor);
      // s1 = (1/wm - 1/L) / (1/H - 1/L): L just above wm keeps H between wh and wm
      L = wm * Math.pow(wl / wm, 0.5);
      for (let t = 0.5; t > 1e-4; t /= 2) {
        L = wm * Math.pow(wl / wm, t);
        H = 1 / (1 / L + (1 / wm - 1 / L) / s1);
        if (H > wh) break;
      }
      H = 1 / (1 / L + (1 / wm - 1 / L) / s1);
    } else {
      const g = wh > 0 ? Math.sqrt(wh * wl) : wl / 2;
      L = Math.sqrt(g * wl);
      H = wh > 0 ? Math.sqrt(g * wh) : g / 2;
    }
    const N = Math.max(1, Math.round(L));
    if (!(H < L) || !(H > wh)) bad('the smooth part does not fit');
    scaling = { type: 'llama3', factor, lowFreqFactor: N / L, highFreqFactor: N / H, originalMaxPositionEmbeddings: N };
  }
  // the fit to 6 digits where that gives the same factors (Llama 3.1's 1 / 4 / 8 come back as written)
  const r6 = (x: number) => +x.toPrecision(6);
  const round: typeof scaling = { ...scaling, factor: r6(factor), lowFreqFactor: r6(scaling.lowFreqFactor), highFreqFactor: r6(scaling.highFreqFactor) };
  const worst = (sc: typeof scaling): [number, number] => {
    const back = llama3RopeFactors({ headDim: E, ropeTheta: cfg.ropeTheta, ropeScaling: sc });
    let w: [number, number] = [-1, 0];
    back.forEach((v, i) => { const e = Math.abs(v - factors[i]!) / factors[i]!; if (e > w[1]) w = [i, e]; });
    return w;
  };
  if (worst(round)[1] <= 1e-6) return round;
  const [i, e] = worst(scaling);
  if (e > 1e-4) bad(`factor ${i} is ${factors[i]}, the fitted scaling gives one ${e.toPrecision(2)} off`);
  return scaling;
}

export interface HfToGgufOptions {
  /** tokenizer.json to embed as tokenizer.ggml.*; default: <model dir>/tokenizer.json if it exists, a GGUF model's own tokenizer.* keys; null: none. */
  readonly tokenizerJson?: string | null;
  /** Extra or overriding metadata keys. */
  readonly extraMetadata?: Readonly<Record<string, GgufValue>>;
  /** general.name; default: the model directory's name. */
  readonly name?: string;
}

/** Converts a loaded model to a GGUF file llama.cpp can load (Q/K permuted, llama.* keys, rope_freqs, tokenizer). */
export async function hfToGguf(model: LoadedModel, outPath: string, dtype: GgufWriteDType, opts: HfToGgufOptions = {}): Promise<void> {
  if (!(dtype in FILE_TYPE)) throw new Error(`hfToGguf: dtype must be one of f32, f16, bf16, q8_0; got ${String(dtype)}`);
  const cfg = model.config;
  const meta = new Map<string, GgufValue>();
  meta.set('general.architecture', gv.str('llama'));
  meta.set('general.name', gv.str(opts.name ?? path.basename(model.path).replace(/\.gguf$/i, '')));
  meta.set('general.file_type', gv.u32(FILE_TYPE[dtype]));
  meta.set('llama.vocab_size', gv.u32(cfg.vocabSize));
  meta.set('llama.context_length', gv.u32(cfg.maxPositionEmbeddings));
  meta.set('llama.embedding_length', gv.u32(cfg.hiddenSize));
  meta.set('llama.block_count', gv.u32(cfg.numLayers));
  meta.set('llama.feed_forward_length', gv.u32(cfg.intermediateSize));
  meta.set('llama.rope.dimension_count', gv.u32(cfg.headDim));
  meta.set('llama.attention.head_count', gv.u32(cfg.numHeads));
  meta.set('llama.attention.head_count_kv', gv.u32(cfg.numKvHeads));
  meta.set('llama.attention.key_length', gv.u32(cfg.headDim));
  meta.set('llama.attention.value_length', gv.u32(cfg.headDim));
  meta.set('llama.attention.layer_norm_rms_epsilon', gv.f32(cfg.rmsNormEps));
  meta.set('llama.rope.freq_base', gv.f32(cfg.ropeTheta));
  if (cfg.ropeScaling?.type === 'linear') {
    meta.set('llama.rope.scaling.type', gv.str('linear'));
    meta.set('llama.rope.scaling.factor', gv.f32(cfg.ropeScaling.factor));
  }

  let tokJson = opts.tokenizerJson;
  if (tokJson === undefined && model.format === 'hf') {
    const p = path.join(model.path, 'tokenizer.json');
    tokJson = fs.existsSync(p) ? p : null;
  }
  // a GGUF source keeps its tokenizer: its tokenizer.* keys (vocabulary, merges or scores, types, special ids and
  // flags, chat template) as they are, whatever its tokenizer model (gpt2, llama)
  const ggufTok = tokJson === undefined && model.format === 'gguf'
    ? [...(await readGguf(model.path)).typed].filter(([k]) => k.startsWith('tokenizer.')) : [];
  const tokens = tokJson ? addTokenizer(meta, tokJson, cfg) : null;
  addSpecialIds(meta, cfg, tokens);
  for (const [k, v] of ggufTok) meta.set(k, v);
  for (const [k, v] of Object.entries(opts.extraMetadata ?? {})) meta.set(k, v);

  const out: GgufWriteTensor[] = [];
  if (cfg.ropeScaling?.type === 'llama3') {
    const f = llama3RopeFactors(cfg);
    out.push({ name: 'rope_freqs.weight', dtype: 'f32', shape: [f.length], data: new Uint8Array(f.buffer) });
  } else if (model.ropeFreqFactors) {
    const f = model.ropeFreqFactors.slice();
    out.push({ name: 'rope_freqs.weight', dtype: 'f32', shape: [f.length], data: new Uint8Array(f.buffer) });
  }
  for (const [name, t] of model.tensors) {
    const gname = hfToGgufName(name);
    if (!gname) continue;
    if (name === 'lm_head.weight' && cfg.tieWordEmbeddings) continue;
    // 1-D tensors (norms) stay f32, as llama.cpp's converter keeps them; q8_0 needs C % 32 == 0, else f16.
    const [, C] = rowsCols(t.shape);
    const target: GgufWriteDType = t.shape.length === 1 ? 'f32' : dtype === 'q8_0' && C % 32 !== 0 ? 'f16' : dtype;
    const isQ = gname.endsWith('.attn_q.weight');
    const nHead = isQ ? cfg.numHeads : gname.endsWith('.attn_k.weight') ? cfg.numKvHeads : 0;
    out.push({ name: gname, dtype: target, shape: t.shape, data: () => convert(t, target, nHead) });
  }
  writeGguf(outPath, meta, out);
}

/** t in any dtype -> bytes of `target` (re-encoded via f32 unless already `target`), Q/K rows permuted if nHead. */
function convert(t: Tensor, target: DType, nHead: number): Uint8Array {
  let bytes: Uint8Array;
  if (t.dtype === target && t.layout === 'rows') {
    bytes = t.data;
  } else {
    const [N, C] = rowsCols(t.shape);
    const f = new Float32Array(N * C);
    for (let r = 0; r < N; r++) dequantizeRow(t, r, f.subarray(r * C, (r + 1) * C));
    bytes = quantizeTensor(f, t.shape, target).data;
  }
  return nHead > 0 ? permuteQkRows(bytes, rowsCols(t.shape)[0], nHead, true) : bytes;
}

// ---------------------------------------------------------------- tokenizer.json -> tokenizer.ggml.*

const TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4;

interface TokJson {
  model?: { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[] };
  added_tokens?: { id: number; content: string; special?: boolean }[];
  pre_tokenizer?: unknown;
  decoder?: unknown;
  post_processor?: unknown;
}

/** Adds tokenizer.ggml.* for a byte-level BPE tokenizer.json; returns the token strings (V). */
function addTokenizer(meta: Map<string, GgufValue>, file: string, cfg: LlamaConfig): string[] {
  let j: TokJson;
  try {
    j = JSON.parse(fs.readFileSync(file, 'utf8')) as TokJson;
  } catch (e) {
    throw new Error(`${file}: cannot read tokenizer: ${(e as Error).message}`);
  }
  // the checks loadTokenizer makes (null read as a TypeError here, a non-string content as a crash in the writer)
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new Error(`${file}: expected a JSON object with a "model" field, got ${showJson(j, 40)}`);
  try {
    checkTokenizerJson(j as Record<string, unknown>);
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message.replace(/^tokenizer\.json: /, '')}`);
  }
  const vocab = j.model?.vocab;
  if (j.model?.type !== 'BPE' || !vocab || !Array.isArray(j.model.merges)) {
    throw new Error(`${file}: only byte-level BPE tokenizers (model.type "BPE" with vocab and merges) can be written to GGUF; got ${JSON.stringify(j.model?.type)}`);
  }
  if (!JSON.stringify(j.pre_tokenizer ?? j.decoder ?? '').includes('ByteLevel')) {
    throw new Error(`${file}: BPE tokenizer is not byte-level (no ByteLevel pre-tokenizer/decoder); GGUF "gpt2" model needs it`);
  }
  const V = cfg.vocabSize;
  const tokens: (string | undefined)[] = new Array(V);
  const types = new Array<number>(V).fill(TOKEN_NORMAL);
  const put = (id: number, content: string, type: number): void => {
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`${file}: token ${JSON.stringify(content)} has id ${id}, outside the model's vocab_size ${V}`);
    tokens[id] = content;
    types[id] = type;
  };
  for (const [content, id] of Object.entries(vocab)) put(id, content, TOKEN_NORMAL);
  for (const a of j.added_tokens ?? []) put(a.id, a.content, a.special ? TOKEN_CONTROL : TOKEN_USER_DEFINED);
  const out: string[] = [];
  for (let i = 0; i < V; i++) {
    if (tokens[i] === undefined) { out.push(`[PAD${i}]`); types[i] = TOKEN_USER_DEFINED; } else out.push(tokens[i]!);
  }
  const merges = j.model.merges.map((m) => (Array.isArray(m) ? `${m[0]} ${m[1]}` : m));
  meta.set('tokenizer.ggml.model', gv.str('gpt2'));
  meta.set('tokenizer.ggml.pre', gv.str('llama-bpe'));
  meta.set('tokenizer.ggml.tokens', gv.arr(GgufType.STRING, out));
  meta.set('tokenizer.ggml.token_type', gv.arr(GgufType.I32, types));
  meta.set('tokenizer.ggml.merges', gv.arr(GgufType.STRING, merges));
  const bos = cfg.bosTokenId;
  const bosText = bos !== null ? out[bos] : undefined;
  meta.set('tokenizer.ggml.add_bos_token', gv.bool(bosText !== undefined && JSON.stringify(j.post_processor ?? '').includes(JSON.stringify(bosText))));
  meta.set('tokenizer.ggml.add_eos_token', gv.bool(false));
  const template = chatTemplate(path.dirname(file));
  if (template) meta.set('tokenizer.chat_template', gv.str(template));
  return out;
}

/** Chat template from chat_template.jinja or tokenizer_config.json beside tokenizer.json. */
function chatTemplate(dir: string): string | null {
  const jinja = path.join(dir, 'chat_template.jinja');
  if (fs.existsSync(jinja)) return fs.readFileSync(jinja, 'utf8');
  const tc = path.join(dir, 'tokenizer_config.json');
  if (!fs.existsSync(tc)) return null;
  try {
    const t = (JSON.parse(fs.readFileSync(tc, 'utf8')) as { chat_template?: unknown }).chat_template;
    return typeof t === 'string' ? t : null;
  } catch {
    return null;
  }
}

/** bos, and eos ids: the first as eos; <|eot_id|> / <|eom_id|> (by text, else by position) as eot / eom. */
function addSpecialIds(meta: Map<string, GgufValue>, cfg: LlamaConfig, tokens: string[] | null): void {
  if (cfg.bosTokenId !== null) meta.set('tokenizer.ggml.bos_token_id', gv.u32(cfg.bosTokenId));
  const eos = [...cfg.eosTokenIds];
  if (eos.length === 0) return;
  const take = (text: string): number | null => {
    const i = tokens ? eos.findIndex((id, k) => k > 0 && tokens[id] === text) : -1;
    return i > 0 ? eos.splice(i, 1)[0]! : null;
  };
  const eot = take('<|eot_id|>');
  const eom = take('<|eom_id|>');
  meta.set('tokenizer.ggml.eos_token_id', gv.u32(eos.shift()!));
  const rest = eos;
  const eotId = eot ?? rest.shift() ?? null;
  const eomId = eom ?? rest.shift() ?? null;
  if (eotId !== null) meta.set('tokenizer.ggml.eot_token_id', gv.u32(eotId));
  if (eomId !== null) meta.set('tokenizer.ggml.eom_token_id', gv.u32(eomId));
  if (rest.length > 0) throw new Error(`hfToGguf: ${cfg.eosTokenIds.length} eos ids [${cfg.eosTokenIds.join(', ')}]; GGUF holds at most 3 (eos, eot, eom)`);
}
