// loadModel: an HF directory (config.json + safetensors, incl. FP8 checkpoints) or a .gguf file -> HF-named Tensors.
//
// Dimension letters: V vocab, D hidden, F ffn hidden, H heads, K kv heads, E head dim, N rows, C columns.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LlamaConfig } from './llama-config.js';
import { decodeBf16, decodeF16, dequantizeRow, f16ToF32Bits, f32BitsToBf16 } from '../tensor/codecs.js';
import { quantizeTensor } from '../tensor/quantize.js';
import { asF32, DTYPE_CODE, rowsCols, Tensor } from '../tensor/tensor.js';
import { isMapped, loadAddon, type NativeAddon } from '../backend/native-addon.js';
import { ggufTensor, ggufToHfName, ggufToLlamaConfig, GGML_F32, permuteQkRows, qkRowSources, readGguf, type GgufFile, type GgufTensorInfo } from './gguf.js';
import { mapFileUsesMmap } from './mapfile.js';
import { readHfConfig, type Fp8Quantization, type GenerationDefaults } from './hf-config.js';
import { readSafetensorsDir, stToTensor, type SafetensorsSet, type StTensor } from './safetensors.js';
import { showJson } from './json-show.js';

export interface LoadedModel {
  readonly config: LlamaConfig;
  readonly tensors: Map<string, Tensor>; // HF names verbatim
  /** E/2 llama.cpp rope factors (GGUF rope_freqs.weight): inv_freq[i] = base_inv_freq[i] / factor[i]; else null. */
  readonly ropeFreqFactors: Float32Array | null;
  readonly format: 'hf' | 'gguf';
  readonly path: string;
  readonly ggufMetadata?: Map<string, unknown>;
  /** Sampling defaults from generation_config.json ({} for GGUF or without the file); explicit values override. */
  readonly generation: GenerationDefaults;
  dispose(): void;
}

export interface LoadOptions {
  /** Check that every expected tensor exists with the shape the config implies (default true). */
  readonly checkShapes?: boolean;
  /**
   * Convert weights while loading, one tensor at a time. 'fp8': the linear layers' weights (q,k,v,o,gate,up,down) to
   * E4M3. 'bf16': every f32 / f16 weight matrix (the linear weights, embedding and head) to bf16, round to nearest even;
   * 1-D tensors (norms) and weights already bf16, fp8 or q8_0 stay as stored.
   */
  readonly dtype?: LoadDType;
  /** fp8 scale block for dtype 'fp8' (default [1, C]: one scale per output row). */
  readonly fp8Block?: readonly [number, number];
  /** Keep only these tensors (a pipeline stage's); the others are dropped before any is read or quantized. */
  readonly keep?: (name: string, config: LlamaConfig) => boolean;
  /** With dtype: convert only the kept tensors this says yes to (a pipeline stage's own); the rest stay as stored. */
  readonly convertIf?: (name: string) => boolean;
}

export type LoadDType = 'fp8' | 'bf16';
export const LOAD_DTYPES = ['fp8', 'bf16'] as const satisfies readonly LoadDType[];

/** HF names of the seven linear weights of every layer. */
export const LINEAR_WEIGHT = /^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$/;

/**
 * A float weight (N, C) -> E4M3 with scales per `block` (default per row). Native (nativeConvert) for an f32 / f16 / bf16
 * / q8_0 weight in rows (q8_0 dequantized a block row at a time): the same bytes and scales as quantizeTensor's, no f32
 * copy. Otherwise quantizeTensor's, through one f32 copy of this tensor (a 1B q8_0 GGUF with --dtype fp8: ~25 s).
 * `out` (N·C bytes): where the codes go, e.g. a reused buffer, so that converting many tensors leaves no garbage.
 */
export function quantizeWeightFp8(t: Tensor, name: string, block?: readonly [number, number], out?: Uint8Array): Tensor {
  if (t.dtype === 'i32' || t.shape.length !== 2) throw new Error(`${name}: cannot quantize a ${t.dtype} [${t.shape.join(', ')}] tensor to fp8 (needs a 2-D float weight)`);
  const [br, bc] = block ?? [1, t.cols];
  checkOut(out, t.numel, name);
  const a = nativeConvert();
  if (a && t.layout === 'rows' && (t.dtype === 'f32' || t.dtype === 'f16' || t.dtype === 'bf16' || t.dtype === 'q8_0') && Number.isInteger(br) && Number.isInteger(bc) && br > 0 && bc > 0) {
    const N = t.rows, C = t.cols;
    const data = out ?? new Uint8Array(N * C); // (N, C) E4M3 codes
    const scale = new Float32Array(Math.ceil(N / br) * Math.ceil(C / bc)); // (ceil(N / br), ceil(C / bc))
    a.convertFp8(t.data, DTYPE_CODE[t.dtype], N, C, br, bc, data, scale, isMapped(t.data));
    return new Tensor('fp8_e4m3', t.shape, data, scale, [br, bc]);
  }
  const values = new Float32Array(t.numel); // (N, C)
  for (let r = 0; r < t.rows; r++) dequantizeRow(t, r, values.subarray(r * t.cols, (r + 1) * t.cols));
  const q = quantizeTensor(values, t.shape, 'fp8_e4m3', { fp8Block: [br, bc] });
  return out ? new Tensor(q.dtype, q.shape, copyInto(out, q.data), q.scale, q.scaleBlock) : q;
}

function checkOut(out: Uint8Array | undefined, bytes: number, name: string): void {
  if (out && out.byteLength !== bytes) throw new RangeError(`${name}: the output buffer has ${out.byteLength} bytes, the converted weight ${bytes}`);
}

function copyInto(out: Uint8Array, bytes: Uint8Array): Uint8Array {
  out.set(bytes);
  return out;
}

/**
 * The addon when it can convert weights at load (native/convert.cc: 11-13 -> ~0.3-0.6 ns a value to fp8, 3-4 -> ~0.2 to
 * bf16), else null: not built, a build from before the conversions (FLOE_ADDON), or FLOE_NATIVE_CONVERT=0 (the
 * TypeScript path, for A/B runs). Both paths give the same bytes; the addon's counters() count each native call
 * ("convertFp8.<src dtype>.<isa>", "convertBf16.<src dtype>.<isa>").
 */
export function nativeConvert(): NativeAddon | null {
  if (process.env.FLOE_NATIVE_CONVERT === '0') return null;
  const a = loadAddon();
  return a && typeof a.convertFp8 === 'function' && typeof a.convertBf16 === 'function' ? a : null;
}

/** Whether LoadOptions dtype 'bf16' converts this tensor: a 2-D f32 or f16 weight (norm vectors stay as stored). */
export function convertsToBf16(t: Pick<Tensor, 'dtype' | 'shape'>): boolean {
  return (t.dtype === 'f32' || t.dtype === 'f16') && t.shape.length === 2;
}

/**
 * An f32 / f16 weight (N, C) -> bf16 (RNE, NaN stays NaN): native (nativeConvert) for a weight in rows, else in
 * TypeScript, one row at a time at most; never an f32 copy of the tensor.
 */
export function convertWeightBf16(t: Tensor, name: string, out?: Uint8Array): Tensor {
  if (!convertsToBf16(t)) throw new Error(`${name}: cannot convert a ${t.dtype} [${t.shape.join(', ')}] tensor to bf16 (needs a 2-D f32 or f16 weight)`);
  const N = t.rows, C = t.cols;
  checkOut(out, 2 * N * C, name);
  const a = nativeConvert();
  if (a && t.layout === 'rows') {
    const bytes = out ?? new Uint8Array(N * C * 2); // (N, C) bf16, little-endian
    a.convertBf16(t.data, DTYPE_CODE[t.dtype], N, C, bytes, isMapped(t.data));
    return new Tensor('bf16', t.shape, bytes);
  }
  const direct = out !== undefined && out.byteOffset % 2 === 0;
  const bf = direct ? new Uint16Array(out.buffer, out.byteOffset, N * C) : new Uint16Array(N * C); // (N, C) bf16 bits
  if (t.dtype === 'f32' && t.layout === 'rows' && t.data.byteOffset % 4 === 0) {
    // the mapped bytes read in place, one pass (a row at a time through dequantizeRow cost ~15 ns a value)
    roundBf16(new Int32Array(t.data.buffer, t.data.byteOffset, N * C), bf, 0);
  } else if (t.dtype === 'f16' && t.layout === 'rows' && t.data.byteOffset % 2 === 0) {
    // every f16 code's bf16, from a table (one lookup a value; decoding row by row cost ~17 ns a value)
    const table = f16ToBf16Table();
    const src = new Uint16Array(t.data.buffer, t.data.byteOffset, N * C);
    for (let i = 0; i < N * C; i++) bf[i] = table[src[i]!]!;
  } else {
    const row = new Float32Array(C); // (C)
    const bits = new Int32Array(row.buffer);
    for (let r = 0; r < N; r++) {
      dequantizeRow(t, r, row);
      roundBf16(bits, bf, r * C);
    }
  }
  if (direct) return new Tensor('bf16', t.shape, out);
  const bytes = new Uint8Array(bf.buffer);
  return new Tensor('bf16', t.shape, out ? copyInto(out, bytes) : bytes);
}

let f16Bf16: Uint16Array | null = null;
/** The bf16 bits of each of the 65,536 f16 codes (exact f16 -> f32, then f32BitsToBf16). */
function f16ToBf16Table(): Uint16Array {
  if (!f16Bf16) {
    f16Bf16 = new Uint16Array(65536);
    for (let h = 0; h < 65536; h++) f16Bf16[h] = f32BitsToBf16(f16ToF32Bits(h));
  }
  return f16Bf16;
}

/**
 * What LoadOptions dtype `dtype` makes of tensor `name` while loading, one tensor's copy at a time (the tensor itself
 * when it stays as stored): 'fp8' quantizes a linear weight that is not fp8 yet, 'bf16' converts a 2-D f32 / f16
 * weight. Shared by loadModel and the streamed layers (LayerStream), so both convert the same tensors the same way.
 */
export function convertForLoad(name: string, t: Tensor, dtype: LoadDType, fp8Block: readonly [number, number] | undefined, where: string, out?: Uint8Array): Tensor {
  if (dtype === 'fp8') return convertsToFp8(name, t) ? quantizeWeightFp8(t, `${where}: ${name}`, fp8Block, out) : t;
  return convertsToBf16(t) ? convertWeightBf16(t, `${where}: ${name}`, out) : t;
}

/** Whether LoadOptions dtype 'fp8' converts tensor `name`: a linear layer's weight not in fp8 yet. */
export function convertsToFp8(name: string, t: Pick<Tensor, 'dtype'>): boolean {
  return LINEAR_WEIGHT.test(name) && t.dtype !== 'fp8_e4m3';
}

/** out[at + i] = the bf16 bits of f32 bits src[i] (f32BitsToBf16: round to nearest even, NaN stays NaN). */
function roundBf16(src: Int32Array, out: Uint16Array, at: number): void {
  for (let i = 0, n = src.length; i < n; i++) out[at + i] = f32BitsToBf16(src[i]!);
}

/** A model path's stat, or an error naming the path and what it was opened as ("PATH: cannot open guard model: ENOENT ..."). */
export function statModel(p: string, what = 'model'): fs.Stats {
  try {
    return fs.statSync(p);
  } catch (e) {
    throw new Error(`${p}: cannot open ${what}: ${(e as Error).message}`);
  }
}

export async function loadModel(p: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  const st = statModel(p);
  if (!st.isDirectory() && !isGgufPath(p)) throw new Error(`${p}: not an HF model directory or a GGUF file`);
  const m = st.isDirectory() ? await loadHf(p) : await loadGgufModel(p);
  const keep = opts.keep && ((name: string) => opts.keep!(name, m.config));
  if (keep) for (const name of [...m.tensors.keys()]) if (!keep(name)) m.tensors.delete(name);
  if (opts.checkShapes ?? true) checkTensors(m.config, m.tensors, p, keep);
  if (opts.dtype !== undefined) {
    if (!LOAD_DTYPES.includes(opts.dtype)) throw new Error(`${p}: load dtype ${showJson(opts.dtype)} is not supported (expected ${LOAD_DTYPES.map((d) => `'${d}'`).join(' or ')})`);
    // the source stays memory-mapped; each replaced tensor's view is dropped as its converted copy is made. bf16 casts
    // the whole model as vLLM's --dtype bfloat16 does; floe holds norm vectors in f32 either way (llama.ts vector())
    for (const [name, t] of m.tensors) {
      if (opts.convertIf && !opts.convertIf(name)) continue;
      const c = convertForLoad(name, t, opts.dtype, opts.fp8Block, p);
      if (c !== t) m.tensors.set(name, c);
    }
  }
  return m;
}

/** Tensor names and shapes a Llama model with this config must have (lm_head only when untied), lazily. */
export function* expectedShapes(cfg: LlamaConfig): Generator<[string, number[]]> {
  const { vocabSize: V, hiddenSize: D, intermediateSize: F, numHeads: H, numKvHeads: K, headDim: E } = cfg;
  yield ['model.embed_tokens.weight', [V, D]];
  yield ['model.norm.weight', [D]];
  if (!cfg.tieWordEmbeddings) yield ['lm_head.weight', [V, D]];
  for (let i = 0; i < cfg.numLayers; i++) {
    const l = `model.layers.${i}`;
    yield [`${l}.self_attn.q_proj.weight`, [H * E, D]];
    yield [`${l}.self_attn.k_proj.weight`, [K * E, D]];
    yield [`${l}.self_attn.v_proj.weight`, [K * E, D]];
    yield [`${l}.self_attn.o_proj.weight`, [D, H * E]];
    yield [`${l}.mlp.gate_proj.weight`, [F, D]];
    yield [`${l}.mlp.up_proj.weight`, [F, D]];
    yield [`${l}.mlp.down_proj.weight`, [D, F]];
    yield [`${l}.input_layernorm.weight`, [D]];
    yield [`${l}.post_attention_layernorm.weight`, [D]];
  }
}

/** A shape read from a file, for a message: a corrupted one of thousands of dims is cut short. */
function shapeText(s: readonly number[]): string {
  return s.length > 8 ? `[${s.slice(0, 8).join(', ')}, ... (${s.length} dims)]` : `[${s.join(', ')}]`;
}

/**
 * Throws naming the first missing or mis-shaped tensor (stops at the first, so a bogus layer count is cheap), or a
 * layer past the config's count: a config that says fewer layers than the checkpoint holds would otherwise run a
 * truncated model without a word (vLLM refuses such a weight too).
 */
export function checkTensors(cfg: LlamaConfig, tensors: ReadonlyMap<string, Pick<Tensor, 'dtype' | 'shape'>>, where: string, keep?: (name: string) => boolean): void {
  let past: string | null = null;
  let layers = cfg.numLayers;
  for (const name of tensors.keys()) {
    const m = /^model\.layers\.(\d+)\./.exec(name);
    if (!m || Number(m[1]) < cfg.numLayers) continue;
    past ??= name;
    layers = Math.max(layers, Number(m[1]) + 1);
  }
  if (past) throw new Error(`${where}: tensor ${showJson(past, 100)} is past the config's num_hidden_layers = ${cfg.numLayers} (the checkpoint has layers up to ${layers - 1}); fix config.json or the checkpoint`);
  for (const [name, shape] of expectedShapes(cfg)) {
    if (keep && !keep(name)) continue;
    const t = tensors.get(name);
    if (!t) {
      const hint = name === 'lm_head.weight' ? ' (config says tie_word_embeddings is false)' : '';
      throw new Error(`${where}: missing tensor "${name}"${hint}`);
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`${where}: tensor "${name}" has shape ${shapeText(t.shape)}, config implies [${shape.join(', ')}]`);
    }
    if (t.dtype === 'i32') throw new Error(`${where}: tensor "${name}" has dtype I32; a weight must be F32, F16, BF16 or F8_E4M3`);
  }
}

// ---------------------------------------------------------------- HF

// Scales consumed with their fp8 weight, or not used (activation and kv-cache scales).
const SCALE_SUFFIXES = ['.weight_scale_inv', '.weight_scale', '.input_scale', '.k_scale', '.v_scale'];

/** Scale tensor (any of F32 / BF16 / F16) -> f32 values (copied). */
function scaleValues(t: StTensor): Float32Array {
  switch (t.dtype) {
    case 'F32': return asF32(t.data).slice();
    case 'BF16': { const o = new Float32Array(t.data.byteLength / 2); decodeBf16(t.data, o); return o; }
    case 'F16': { const o = new Float32Array(t.data.byteLength / 2); decodeF16(t.data, o); return o; }
    default: throw new Error(`${t.file}: scale tensor "${t.name}" has dtype ${t.dtype}; expected F32, BF16 or F16`);
  }
}

/** fp8 weight (N, C) + its scale tensor -> Tensor('fp8_e4m3', ..., scale, scaleBlock). */
function fp8Tensor(w: StTensor, s: StTensor, quant: Fp8Quantization | null): Tensor {
  const [N, C] = rowsCols(w.shape);
  const scale = scaleValues(s);
  const cfgBlock = quant?.method === 'fp8' ? quant.weightBlockSize : quant?.blockSize ?? null;
  const ss = s.shape;
  let block: [number, number];
  if (scale.length === 1) block = [N, C]; // per tensor: [], [1] or [1, 1]
  else if ((ss.length === 1 && ss[0] === N) || (ss.length === 2 && ss[0] === N && ss[1] === 1)) block = [1, C]; // per output row
  else if (ss.length === 2 && cfgBlock && ss[0] === Math.ceil(N / cfgBlock[0]) && ss[1] === Math.ceil(C / cfgBlock[1])) block = [cfgBlock[0], cfgBlock[1]];
  else {
    const want = cfgBlock ? `[${Math.ceil(N / cfgBlock[0])}, ${Math.ceil(C / cfgBlock[1])}] for block [${cfgBlock.join(', ')}]` : `[] / [1] (per tensor) or [${N}, 1] (per row)`;
    throw new Error(`${s.file}: scale "${s.name}" for fp8 weight [${N}, ${C}] has shape ${shapeText(ss)}, expected ${want}`);
  }
  // a zero dim made a zero block: Tensor's grid check then failed as 'needs NaN values', naming no file or tensor
  if (block[0] === 0 || block[1] === 0) throw new Error(`${s.file}: scale "${s.name}" has ${scale.length} values for fp8 weight "${w.name}" of shape ${shapeText(w.shape)}, which has no elements`);
  checkScales(w, s, scale, block);
  return new Tensor('fp8_e4m3', w.shape, w.data, scale, block);
}

/**
 * Every scale finite and positive (a quantizer writes amax / 448): a NaN or Inf scale made its whole block NaN or Inf
 * and a negative one flipped its weights, all loaded without a word. Zero is taken only over a block of zero codes
 * (floe writes 1 there; others may write 0); over nonzero codes it would silence those weights.
 */
function checkScales(w: StTensor, s: StTensor, scale: Float32Array, block: readonly [number, number]): void {
  const [N, C] = rowsCols(w.shape);
  const gc = Math.ceil(C / block[1]);
  for (let k = 0; k < scale.length; k++) {
    const v = scale[k]!;
    if (v > 0 && v < Infinity) continue;
    const r0 = Math.floor(k / gc) * block[0], c0 = (k % gc) * block[1];
    const r1 = Math.min(N, r0 + block[0]), c1 = Math.min(C, c0 + block[1]);
    const rows = `rows ${r0}..${r1 - 1}, columns ${c0}..${c1 - 1}`;
    if (v === 0) {
      let nonzero = false;
      for (let r = r0; r < r1 && !nonzero; r++) for (let c = c0; c < c1; c++) if ((w.data[r * C + c]! & 0x7f) !== 0) { nonzero = true; break; }
      if (!nonzero) continue;
      throw new Error(`${s.file}: scale "${s.name}" value ${k} is 0, but the weights it scales (${rows} of "${w.name}") are not all zero; expected a positive scale (amax / 448)`);
    }
    throw new Error(`${s.file}: scale "${s.name}" value ${k} (for ${rows} of "${w.name}") is ${v}; expected a finite positive number (amax / 448)`);
  }
}

/**
 * A weight scale must scale an FP8 weight, and only one: a scale beside a float weight (or no weight) was ignored and
 * a weight with both names got one of them, each without a word. vLLM refuses both: a layer registers one scale
 * parameter (weight_scale_inv for fp8 blocks, weight_scale otherwise) and unquantized layers none, so the other name
 * has no parameter to load into.
 */
function checkWeightScale(name: string, s: StTensor, all: ReadonlyMap<string, StTensor>): void {
  const wName = name.replace(/_scale(_inv)?$/, ''); // X.weight
  const [sn, wn] = [showJson(name, 100), showJson(wName, 100)]; // names read from the file, cut short
  const w = all.get(wName);
  if (!w) throw new Error(`${s.file}: scale ${sn} has no weight ${wn} in the checkpoint`);
  if (w.dtype !== 'F8_E4M3') {
    const where = w.file === s.file ? '' : ` (in ${w.file})`;
    throw new Error(`${s.file}: scale ${sn} belongs to ${wn}${where}, which is ${w.dtype}, not F8_E4M3; only fp8 weights are scaled (the scale would be ignored)`);
  }
  const other = all.get(`${wName}_scale`);
  if (name.endsWith('_inv') && other) {
    const where = other.file === s.file ? '' : ` (in ${other.file})`;
    throw new Error(`${s.file}: fp8 weight ${wn} has two scales, ${sn} and ${showJson(other.name, 100)}${where}; a checkpoint stores one (weight_scale_inv: fp8, weight_scale: compressed-tensors)`);
  }
}

/** The names of a Llama checkpoint's own tensors (an unreadable dtype is refused there, ignored elsewhere). */
const isExpected = (name: string) => /^(model\.embed_tokens|model\.norm|lm_head|model\.layers\.\d+\.(self_attn|mlp|input_layernorm|post_attention_layernorm))/.test(name);

/** An fp8 weight's scale tensor (weight_scale_inv, else weight_scale); throws naming the file when it has none. */
function fp8ScaleOf(name: string, t: StTensor, all: ReadonlyMap<string, StTensor>): StTensor {
  const stem = name.replace(/\.weight$/, '');
  const s = all.get(`${stem}.weight_scale_inv`) ?? all.get(`${stem}.weight_scale`);
  if (!s) throw new Error(`${t.file}: fp8 tensor "${name}" has no "${stem}.weight_scale_inv" or "${stem}.weight_scale"`);
  return s;
}

const unreadableStDtype = (t: StTensor) => new Error(`${t.file}: tensor "${t.name}" has dtype ${t.dtype}; floe reads F32, F16, BF16 and F8_E4M3 weights`);

async function loadHf(dir: string): Promise<LoadedModel> {
  const { config, quantization, generation } = readHfConfig(dir);
  const set = await readSafetensorsDir(dir);
  const tensors = new Map<string, Tensor>();
  for (const [name, t] of set.tensors) {
    if (/\.weight_scale(_inv)?$/.test(name)) checkWeightScale(name, t, set.tensors);
    if (SCALE_SUFFIXES.some((s) => name.endsWith(s))) continue;
    if (t.dtype === 'F8_E4M3') {
      tensors.set(name, fp8Tensor(t, fp8ScaleOf(name, t, set.tensors), quantization));
    } else if (t.dtype === 'F32' || t.dtype === 'F16' || t.dtype === 'BF16' || t.dtype === 'I32') {
      tensors.set(name, stToTensor(t));
    } else if (isExpected(name)) {
      throw unreadableStDtype(t);
    }
  }
  return {
    config, tensors, ropeFreqFactors: null, format: 'hf', path: dir, generation,
    dispose() { tensors.clear(); },
  };
}

// ---------------------------------------------------------------- GGUF

async function loadGgufModel(file: string): Promise<LoadedModel> {
  const g = await readGguf(file);
  const config = ggufToLlamaConfig(g);
  const tensors = new Map<string, Tensor>();
  let ropeFreqFactors: Float32Array | null = null;
  for (const [gname, info] of g.tensors) {
    if (gname === 'rope_freqs.weight') {
      const n = config.headDim / 2;
      if (info.type !== GGML_F32 || info.dims.length !== 1 || info.dims[0] !== n) {
        throw new Error(`${file}: rope_freqs.weight must be F32 [${n}], got type ${info.type} [${info.dims.join(', ')}]`);
      }
      ropeFreqFactors = asF32(info.data).slice();
      // inv_freq[i] / factor[i]: a zero, negative or non-finite factor turns that rotary pair's angles into NaN / Inf
      const bad = ropeFreqFactors.findIndex((f) => !(f > 0 && f < Infinity));
      if (bad >= 0) throw new Error(`${file}: rope_freqs.weight value ${bad} is ${ropeFreqFactors[bad]}; expected a finite positive factor`);
      continue;
    }
    const name = ggufToHfName(gname);
    if (!name) continue;
    let t = ggufTensor(g, info);
    // Undo the converter's Q/K row permutation (interleaved pairs -> rotate-half).
    const isQ = gname.endsWith('.attn_q.weight');
    if (isQ || gname.endsWith('.attn_k.weight')) {
      const nHead = isQ ? config.numHeads : config.numKvHeads;
      if (t.rows === 0 || t.rows % nHead !== 0 || (t.rows / nHead) % 2 !== 0) { // 0 rows: a zero dim (permuting it divides by 0)
        throw new Error(`${file}: tensor "${gname}" has ${t.rows} rows, not ${nHead} heads of even size`);
      }
      t = new Tensor(t.dtype, t.shape, mapFileUsesMmap() ? readQkPermuted(file, g, info, t.rows, nHead) : permuteQkRows(t.data, t.rows, nHead, false));
    }
    tensors.set(name, t);
  }
  return {
    config, tensors, ropeFreqFactors, format: 'gguf', path: file, ggufMetadata: g.metadata, generation: {},
    dispose() { tensors.clear(); },
  };
}

/**
 * A memory-mapped GGUF's Q/K tensor, rows read into their HF order with pread instead of through the mapping: the
 * permuted copy replaces the mapped bytes, and touching them would keep those pages resident (counted in the
 * process's RSS: 160 MiB at 1B) for nothing.
 */
function readQkPermuted(file: string, g: GgufFile, info: GgufTensorInfo, rows: number, nHead: number): Uint8Array {
  const n = info.data.byteLength;
  if (n % rows !== 0) throw new Error(`${file}: tensor "${info.name}" has ${n} bytes, not ${rows} equal rows`);
  const rb = n / rows;
  const src = qkRowSources(rows, nHead, false);
  const out = new Uint8Array(n);
  const fd = fs.openSync(file, 'r');
  try {
    for (let r = 0; r < rows; r++) {
      const at = g.dataOffset + info.offset + src[r]! * rb;
      for (let done = 0; done < rb;) {
        const k = fs.readSync(fd, out, r * rb + done, rb - done, at + done);
        if (k <= 0) throw new Error(`${file}: tensor "${info.name}": unexpected end of file reading row ${src[r]} at byte ${at + done}`);
        done += k;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

/** True when `p` looks like a GGUF file (by extension or magic). */
export function isGgufPath(p: string): boolean {
  if (path.extname(p).toLowerCase() === '.gguf') return true;
  try {
    const fd = fs.openSync(p, 'r');
    try {
      const b = Buffer.alloc(4);
      return fs.readSync(fd, b, 0, 4, 0) === 4 && b.toString('latin1') === 'GGUF';
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return false;
  }
}

/** A weight as its checkpoint's header gives it: dtype, shape (row-major) and the bytes loadModel holds of it as stored. */
export interface WeightHeader {
  readonly dtype: Tensor['dtype'];
  readonly shape: readonly number[];
  readonly bytes: number; // data, and an fp8 weight's scales as f32 (how fp8Tensor holds them)
}

/**
 * What LoadOptions dtype `dtype` would make of tensor `name`, from its dtype and shape alone (nothing is read or
 * converted): convertForLoad's rule ('fp8': a linear weight not fp8 yet -> E4M3 with one f32 scale per `fp8Block`,
 * default [1, C]: one per row; 'bf16': a 2-D f32 / f16 weight -> bf16; the rest as stored). bytes: data and scales.
 */
export function heldAfterLoad(name: string, t: Tensor, dtype: LoadDType | undefined, fp8Block?: readonly [number, number]): { readonly dtype: Tensor['dtype']; readonly bytes: number } {
  return heldFromHeader(name, { dtype: t.dtype, shape: t.shape, bytes: t.data.byteLength + (t.scale?.byteLength ?? 0) }, dtype, fp8Block);
}

/** heldAfterLoad for a weight known only by its header (weightHeaders: floe plan, before anything is mapped in). */
export function heldFromHeader(name: string, w: WeightHeader, dtype: LoadDType | undefined, fp8Block?: readonly [number, number]): { readonly dtype: Tensor['dtype']; readonly bytes: number } {
  if (dtype === 'fp8' && convertsToFp8(name, w)) {
    const [N, C] = rowsCols(w.shape);
    const [br, bc] = fp8Block ?? [1, C];
    return { dtype: 'fp8_e4m3', bytes: N * C + 4 * Math.ceil(N / br) * Math.ceil(C / bc) }; // (N, C) codes + scale grid
  }
  if (dtype === 'bf16' && convertsToBf16(w)) return { dtype: 'bf16', bytes: 2 * w.shape.reduce((a, b) => a * b, 1) };
  return { dtype: w.dtype, bytes: w.bytes };
}

/**
 * The HF-named weights loadModel keeps from a parsed GGUF or safetensors set, from the headers alone (no tensor data
 * is touched): the same names, dtypes and refusals as loadGgufModel / loadHf (rope_freqs.weight, held apart, and
 * tensors floe does not map are left out; an fp8 weight counts its scale grid as f32).
 */
export function weightHeaders(src: GgufFile | SafetensorsSet): Map<string, WeightHeader> {
  const out = new Map<string, WeightHeader>();
  if ('dataOffset' in src) {
    for (const [gname, info] of src.tensors) {
      const name = ggufToHfName(gname);
      if (!name) continue;
      const t = ggufTensor(src, info); // a view: throws, as the loader does, on a ggml type floe does not read
      out.set(name, { dtype: t.dtype, shape: t.shape, bytes: t.data.byteLength });
    }
    return out;
  }
  for (const [name, t] of src.tensors) {
    if (SCALE_SUFFIXES.some((s) => name.endsWith(s))) continue;
    if (t.dtype === 'F8_E4M3') {
      const s = fp8ScaleOf(name, t, src.tensors);
      out.set(name, { dtype: 'fp8_e4m3', shape: t.shape, bytes: t.data.byteLength + 4 * s.shape.reduce((a, b) => a * b, 1) });
    } else if (t.dtype === 'F32' || t.dtype === 'F16' || t.dtype === 'BF16' || t.dtype === 'I32') {
      out.set(name, { dtype: ST_TO_DTYPE[t.dtype], shape: t.shape, bytes: t.data.byteLength });
    } else if (isExpected(name)) {
      throw unreadableStDtype(t);
    }
  }
  return out;
}

const ST_TO_DTYPE = { F32: 'f32', F16: 'f16', BF16: 'bf16', I32: 'i32' } as const;
