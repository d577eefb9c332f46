// Random-weight Llama models for benchmarks: GGUF files (F16, BF16, Q8_0) written tensor by tensor.
//
// D hidden, F ffn hidden, H heads, K kv heads, E head dim, V vocab, N rows, C columns.
// Weights ~ N(0, 0.02²), drawn through a 64K-entry table of pre-encoded normals so that a 1B file takes seconds.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LlamaConfig } from '../src/model/config.js';
import { f32ToBf16, f32ToF16 } from '../src/tensor/codecs.js';

export type GgufFormat = 'f16' | 'bf16' | 'q8_0';

const GGML = { f32: 0, f16: 1, q8_0: 8, bf16: 30 } as const;
const FILE_TYPE: Record<GgufFormat, number> = { f16: 1, q8_0: 7, bf16: 32 }; // llama_ftype MOSTLY_*
export const STD = 0.02;
const ALIGN = 32;
export const TABLE = 1 << 16;

/** Seeded xorshift32; next() in [0, 2^32). */
export class Rng {
  private s: number;
  constructor(seed: number) { this.s = (seed >>> 0) || 0x9e3779b9; }
  next(): number {
    let x = this.s;
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    this.s = x;
    return x;
  }
}

/** TABLE standard normals (Box-Muller). */
function normalTable(seed: number): Float32Array {
  const r = new Rng(seed);
  const t = new Float32Array(TABLE);
  for (let i = 0; i < TABLE; i += 2) {
    const u1 = (r.next() + 1) / 4294967297;
    const u2 = r.next() / 4294967296;
    const m = Math.sqrt(-2 * Math.log(u1));
    t[i] = m * Math.cos(2 * Math.PI * u2);
    t[i + 1] = m * Math.sin(2 * Math.PI * u2);
  }
  return t;
}

export const NORMALS = normalTable(1234);

/** Fills `out` with random table indices (two 16-bit draws per rng step). */
export function fillIndices(rng: Rng, out: Uint16Array): void {
  const n = out.length;
  let i = 0;
  for (; i + 1 < n; i += 2) {
    const x = rng.next();
    out[i] = x & 0xffff;
    out[i + 1] = x >>> 16;
  }
  if (i < n) out[i] = rng.next() & 0xffff;
}

// ---------------------------------------------------------------- tensor plan

interface PlannedTensor {
  readonly name: string;
  readonly ne: readonly number[]; // ggml order: ne0 = columns
  readonly type: number;
  readonly fill: 'normal' | 'norm' | 'rope_freqs';
  readonly bytes: number;
  offset: number;
}

function typeBytes(type: number, ne: readonly number[]): number {
  const n = ne.reduce((a, b) => a * b, 1);
  if (type === GGML.f32) return n * 4;
  if (type === GGML.f16 || type === GGML.bf16) return n * 2;
  if (type === GGML.q8_0) {
    if (ne[0]! % 32 !== 0) throw new Error(`q8_0 needs ne0 % 32 == 0, got ${ne[0]}`);
    return (n / 32) * 34;
  }
  throw new Error(`gguf-gen: unsupported ggml type ${type}`);
}

function planTensors(c: LlamaConfig, fmt: GgufFormat): PlannedTensor[] {
  const { hiddenSize: D, intermediateSize: F, numHeads: H, numKvHeads: K, headDim: E, vocabSize: V } = c;
  const wt = GGML[fmt];
  const out: PlannedTensor[] = [];
  const add = (name: string, ne: number[], type: number, fill: PlannedTensor['fill']): void => {
    out.push({ name, ne, type, fill, bytes: typeBytes(type, ne), offset: 0 });
  };
  add('token_embd.weight', [D, V], wt, 'normal');
  if (c.ropeScaling?.type === 'llama3') add('rope_freqs.weight', [E / 2], GGML.f32, 'rope_freqs');
  for (let i = 0; i < c.numLayers; i++) {
    const b = `blk.${i}.`;
    add(b + 'attn_norm.weight', [D], GGML.f32, 'norm');
    add(b + 'attn_q.weight', [D, H * E], wt, 'normal');
    add(b + 'attn_k.weight', [D, K * E], wt, 'normal');
    add(b + 'attn_v.weight', [D, K * E], wt, 'normal');
    add(b + 'attn_output.weight', [H * E, D], wt, 'normal');
    add(b + 'ffn_norm.weight', [D], GGML.f32, 'norm');
    add(b + 'ffn_gate.weight', [D, F], wt, 'normal');
    add(b + 'ffn_up.weight', [D, F], wt, 'normal');
    add(b + 'ffn_down.weight', [F, D], wt, 'normal');
  }
  add('output_norm.weight', [D], GGML.f32, 'norm');
  if (!c.tieWordEmbeddings) add('output.weight', [D, V], wt, 'normal');
  let off = 0;
  for (const t of out) {
    t.offset = off;
    off += Math.ceil(t.bytes / ALIGN) * ALIGN;
  }
  return out;
}

/** llama.cpp's llama3 rope factors (convert_hf_to_gguf): inv_freq_scaled = inv_freq / factor. */
export function llama3RopeFactors(c: LlamaConfig): Float32Array {
  const s = c.ropeScaling;
  if (s?.type !== 'llama3') throw new Error('llama3RopeFactors: config has no llama3 rope scaling');
  const E = c.headDim;
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  const out = new Float32Array(E / 2);
  for (let i = 0; i < E / 2; i++) {
    const freq = 1 / Math.pow(c.ropeTheta, (2 * i) / E);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = s.factor;
    else {
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return out;
}

// ---------------------------------------------------------------- header

class HeaderWriter {
  private parts: Buffer[] = [];
  u32(v: number): void { const b = Buffer.alloc(4); b.writeUInt32LE(v); this.parts.push(b); }
  u64(v: number): void { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.parts.push(b); }
  f32(v: number): void { const b = Buffer.alloc(4); b.writeFloatLE(v); this.parts.push(b); }
  str(s: string): void { const b = Buffer.from(s, 'utf8'); this.u64(b.length); this.parts.push(b); }
  kvU32(k: string, v: number): void { this.str(k); this.u32(4); this.u32(v); }
  kvF32(k: string, v: number): void { this.str(k); this.u32(6); this.f32(v); }
  kvStr(k: string, v: string): void { this.str(k); this.u32(8); this.str(v); }
  kvBool(k: string, v: boolean): void { this.str(k); this.u32(7); this.parts.push(Buffer.of(v ? 1 : 0)); }
  kvStrs(k: string, v: readonly string[]): void { this.str(k); this.u32(9); this.u32(8); this.u64(v.length); for (const x of v) this.str(x); }
  kvI32s(k: string, v: readonly number[]): void {
    this.str(k); this.u32(9); this.u32(5); this.u64(v.length);
    const b = Buffer.alloc(4 * v.length);
    v.forEach((x, i) => b.writeInt32LE(x, i * 4));
    this.parts.push(b);
  }
  bytes(): Buffer { return Buffer.concat(this.parts); }
}

/** GPT-2 byte-level alphabet: byte b -> the printable code point that stands for it in BPE vocabularies. */
function byteToUnicode(): string[] {
  const keep: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const out: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + n++);
  return out;
}

const TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_UNUSED = 5; // llama_token_type

/** 256 byte tokens, then bos/eos control tokens, then unused padding up to V. */
export function benchVocab(V: number): { tokens: string[]; types: number[]; bos: number; eos: number } {
  if (V < 258) throw new Error(`bench vocabulary needs at least 258 tokens, got ${V}`);
  const tokens = byteToUnicode();
  const types: number[] = new Array(256).fill(TOKEN_NORMAL);
  tokens.push('<|begin_of_text|>', '<|end_of_text|>');
  types.push(TOKEN_CONTROL, TOKEN_CONTROL);
  for (let i = tokens.length; i < V; i++) { tokens.push(`[PAD${i}]`); types.push(TOKEN_UNUSED); }
  return { tokens, types, bos: 256, eos: 257 };
}

function header(c: LlamaConfig, fmt: GgufFormat, tensors: readonly PlannedTensor[]): Buffer {
  const w = new HeaderWriter();
  const vocab = benchVocab(c.vocabSize);
  const kv: Array<(w: HeaderWriter) => void> = [
    (w) => w.kvStr('general.architecture', 'llama'),
    (w) => w.kvStr('general.name', `floe-bench-random-${fmt}`),
    (w) => w.kvU32('general.alignment', ALIGN),
    (w) => w.kvU32('general.file_type', FILE_TYPE[fmt]),
    (w) => w.kvU32('llama.vocab_size', c.vocabSize),
    (w) => w.kvU32('llama.context_length', c.maxPositionEmbeddings),
    (w) => w.kvU32('llama.embedding_length', c.hiddenSize),
    (w) => w.kvU32('llama.block_count', c.numLayers),
    (w) => w.kvU32('llama.feed_forward_length', c.intermediateSize),
    (w) => w.kvU32('llama.attention.head_count', c.numHeads),
    (w) => w.kvU32('llama.attention.head_count_kv', c.numKvHeads),
    (w) => w.kvU32('llama.attention.key_length', c.headDim),
    (w) => w.kvU32('llama.attention.value_length', c.headDim),
    (w) => w.kvU32('llama.rope.dimension_count', c.headDim),
    (w) => w.kvF32('llama.rope.freq_base', c.ropeTheta),
    (w) => w.kvF32('llama.attention.layer_norm_rms_epsilon', c.rmsNormEps),
    // node-llama-cpp needs a real tokenizer (llama.cpp's "none" vocab aborts there): byte-level BPE, no merges
    (w) => w.kvStr('tokenizer.ggml.model', 'gpt2'),
    (w) => w.kvStr('tokenizer.ggml.pre', 'default'),
    (w) => w.kvStrs('tokenizer.ggml.tokens', vocab.tokens),
    (w) => w.kvI32s('tokenizer.ggml.token_type', vocab.types),
    (w) => w.kvStrs('tokenizer.ggml.merges', []),
    (w) => w.kvU32('tokenizer.ggml.bos_token_id', vocab.bos),
    (w) => w.kvU32('tokenizer.ggml.eos_token_id', vocab.eos),
    (w) => w.kvBool('tokenizer.ggml.add_bos_token', false),
  ];
  w.u32(0x46554747); // "GGUF"
  w.u32(3);
  w.u64(tensors.length);
  w.u64(kv.length);
  for (const f of kv) f(w);
  for (const t of tensors) {
    w.str(t.name);
    w.u32(t.ne.length);
    for (const d of t.ne) w.u64(d);
    w.u32(t.type);
    w.u64(t.offset);
  }
  const h = w.bytes();
  const padded = Buffer.alloc(Math.ceil(h.length / ALIGN) * ALIGN);
  h.copy(padded);
  return padded;
}

// ---------------------------------------------------------------- data

/** Encoded tables: value i of each = STD * NORMALS[i] in that format. */
const TABLES = (() => {
  const f16 = new Uint16Array(TABLE);
  const bf16 = new Uint16Array(TABLE);
  const f32 = new Float32Array(TABLE);
  const abs = new Float32Array(TABLE);
  for (let i = 0; i < TABLE; i++) {
    const v = Math.fround(STD * NORMALS[i]!);
    f32[i] = v;
    abs[i] = Math.abs(v);
    f16[i] = f32ToF16(v);
    bf16[i] = f32ToBf16(v);
  }
  return { f16, bf16, f32, abs };
})();

/** Writes `n` elements (n % 32 == 0 for q8_0) of random weights in `type` into `out` (bytes). */
function fillNormal(rng: Rng, type: number, n: number, idx: Uint16Array, out: Uint8Array): void {
  fillIndices(rng, idx.subarray(0, n));
  if (type === GGML.f16 || type === GGML.bf16) {
    const tab = type === GGML.f16 ? TABLES.f16 : TABLES.bf16;
    const o = new Uint16Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) o[i] = tab[idx[i]!]!;
    return;
  }
  if (type === GGML.q8_0) {
    // llama.cpp quantize_row_q8_0_ref on the drawn values
    const vals = TABLES.f32;
    const abs = TABLES.abs;
    for (let b = 0; b < n / 32; b++) {
      const i0 = b * 32;
      let amax = 0;
      for (let j = 0; j < 32; j++) {
        const a = abs[idx[i0 + j]!]!;
        if (a > amax) amax = a;
      }
      const d = Math.fround(amax / 127);
      const id = d !== 0 ? Math.fround(1 / d) : 0;
      const h = f32ToF16(d);
      const o = b * 34;
      out[o] = h & 0xff;
      out[o + 1] = h >>> 8;
      for (let j = 0; j < 32; j++) {
        const x = Math.fround(vals[idx[i0 + j]!]! * id);
        out[o + 2 + j] = ((x < 0 ? x - 0.5 : x + 0.5) | 0) & 0xff; // roundf: half away from zero, |x| <= 127
      }
    }
    return;
  }
  throw new Error(`gguf-gen: no random fill for ggml type ${type}`);
}

/**
 * Writes a random-weight GGUF for `c` in `fmt` to `file` (via a temporary name, then renamed), streaming:
 * memory stays at a few MiB whatever the model size.
 */
export function writeRandomGguf(c: LlamaConfig, fmt: GgufFormat, file: string, seed = 42): void {
  const tensors = planTensors(c, fmt);
  const tmp = `${file}.tmp-${process.pid}`;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fd = fs.openSync(tmp, 'w');
  try {
    const h = header(c, fmt, tensors);
    let pos = 0;
    const write = (b: Uint8Array): void => {
      let done = 0;
      while (done < b.length) done += fs.writeSync(fd, b, done, b.length - done, pos + done);
      pos += b.length;
    };
    write(h);
    const rng = new Rng(seed);
    const CHUNK = 1 << 20; // elements per write
    const idx = new Uint16Array(CHUNK);
    const buf = new Uint8Array(CHUNK * 4);
    for (const t of tensors) {
      const start = h.length + t.offset;
      if (pos < start) write(new Uint8Array(start - pos));
      if (t.fill === 'normal') {
        const total = t.ne.reduce((a, b) => a * b, 1);
        for (let e = 0; e < total; e += CHUNK) {
          const n = Math.min(CHUNK, total - e);
          const nb = typeBytes(t.type, [n]);
          fillNormal(rng, t.type, n, idx, buf);
          write(buf.subarray(0, nb));
        }
      } else {
        const n = t.ne[0]!;
        const v = new Float32Array(n);
        if (t.fill === 'rope_freqs') v.set(llama3RopeFactors(c));
        else for (let i = 0; i < n; i++) v[i] = 1 + 0.1 * NORMALS[(rng.next() & 0xffff)]!; // norm gains ~ 1
        write(new Uint8Array(v.buffer));
      }
    }
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}

/** The cached GGUF path for (shape, format), generating it when missing. */
export function ensureGguf(cacheDir: string, shapeName: string, c: LlamaConfig, fmt: GgufFormat, log: (s: string) => void = () => {}): string {
  const file = path.join(cacheDir, `${shapeName}-${fmt}-v2.gguf`);
  if (!fs.existsSync(file)) {
    const t0 = performance.now();
    writeRandomGguf(c, fmt, file);
    log(`wrote ${file} (${(fs.statSync(file).size / 2 ** 20).toFixed(0)} MiB) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  return file;
}

/** Bytes of the weight matrices of a GGUF-format model (what one decode step streams). */
export function ggufWeightBytes(c: LlamaConfig, fmt: GgufFormat): number {
  return planTensors(c, fmt).reduce((a, t) => a + t.bytes, 0);
}
