// safetensors: reader (zero-copy views, single or sharded, strict validation) and atomic writer.
//
// File layout: u64 LE header length n | n bytes of JSON header | data. The header maps each tensor name to
// { dtype, shape, data_offsets: [begin, end) } relative to the start of data, plus optional "__metadata__".

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DType } from '../tensor/tensor.js';
import { Tensor } from '../tensor/tensor.js';
import { mapFile, mapFileSync, type FileBytes } from './mapfile.js';
import { showJson } from './json-show.js';

export type StDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'F8_E4M3' | 'F8_E5M2' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const ST_DTYPE_BYTES = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
} as const satisfies Record<StDType, number>;

/** Safetensors dtype for each floe DType that safetensors can hold (q8_0 cannot). */
export const ST_FROM_DTYPE = {
  f32: 'F32', f16: 'F16', bf16: 'BF16', fp8_e4m3: 'F8_E4M3', i32: 'I32', q8_0: null,
} as const satisfies Record<DType, StDType | null>;

const DTYPE_FROM_ST: Partial<Record<StDType, DType>> = { F32: 'f32', F16: 'f16', BF16: 'bf16', F8_E4M3: 'fp8_e4m3', I32: 'i32' };

/** Largest header accepted (same cap as the reference implementation). */
const MAX_HEADER_BYTES = 100_000_000;

export interface StTensor {
  readonly name: string;
  readonly dtype: StDType;
  readonly shape: readonly number[];
  readonly data: Uint8Array; // view into the mapped file
  readonly file: string;
}

export interface SafetensorsFile {
  readonly path: string;
  readonly metadata: Readonly<Record<string, string>> | null;
  readonly tensors: Map<string, StTensor>;
}

function fail(file: string, msg: string): never {
  throw new Error(`${file}: ${msg}`);
}

function isStDType(s: unknown): s is StDType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(ST_DTYPE_BYTES, s);
}

/** Keys of the top-level JSON object, in order, duplicates kept (JSON.parse silently drops them). */
function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const ch = json[i];
    if (ch === '"') {
      const start = i;
      for (i++; i < json.length && json[i] !== '"'; i++) if (json[i] === '\\') i++;
      if (depth === 1 && expectKey) {
        try { keys.push(JSON.parse(json.slice(start, i + 1)) as string); } catch { /* JSON.parse reports it */ }
        expectKey = false;
      }
    } else if (ch === '{' || ch === '[') {
      depth++;
      expectKey = depth === 1 && ch === '{';
    } else if (ch === '}' || ch === ']') {
      depth--;
    } else if (ch === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

/** Parses and validates a safetensors file held in `bytes` (a Uint8Array, or mapFile's ranges); tensor data are zero-copy views. */
export function parseSafetensors(bytes: FileBytes, file: string): SafetensorsFile {
  if (bytes.byteLength < 8) fail(file, `truncated: ${bytes.byteLength} bytes, need at least 8 for the header length`);
  const head = bytes.subarray(0, 8);
  const dv = new DataView(head.buffer, head.byteOffset, 8);
  const n64 = dv.getBigUint64(0, true);
  if (n64 > BigInt(bytes.byteLength - 8)) {
    fail(file, `header length ${n64} runs past the end of the file (${bytes.byteLength - 8} bytes after the length field); truncated or not safetensors`);
  }
  const n = Number(n64);
  if (n > MAX_HEADER_BYTES) fail(file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (n < 2) fail(file, `header length ${n} is too small for a JSON object`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    fail(file, 'header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    fail(file, `bad header JSON: ${(e as Error).message}`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail(file, 'header JSON is not an object');
  const seen = new Set<string>();
  for (const k of topLevelKeys(text)) {
    if (seen.has(k)) fail(file, `duplicate tensor name ${showJson(k, 100)} in header`);
    seen.add(k);
  }

  const dataStart = 8 + n;
  const dataLen = bytes.byteLength - dataStart;
  let metadata: Record<string, string> | null = null;
  const tensors = new Map<string, StTensor>();
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, '__metadata__ is not an object');
      metadata = {};
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v === 'string') { metadata[k] = v; continue; }
        try {
          metadata[k] = JSON.stringify(v); // the spec says strings; other values are kept as their JSON
        } catch {
          fail(file, `__metadata__ "${k}" is nested too deeply (the spec's metadata values are strings)`);
        }
      }
      continue;
    }
    const where = `tensor ${showJson(name, 100)}`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, `${where}: entry is not an object`);
    const { dtype, shape, data_offsets: offs } = raw as Record<string, unknown>;
    if (!isStDType(dtype)) fail(file, `${where}: unknown dtype ${showJson(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      fail(file, `${where}: shape must be a list of non-negative integers, got ${showJson(shape)}`);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) {
      fail(file, `${where}: data_offsets must be [begin, end] non-negative integers, got ${showJson(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end) fail(file, `${where}: data_offsets [${begin}, ${end}] has begin after end`);
    if (end > dataLen) fail(file, `${where}: data_offsets [${begin}, ${end}] run past the data section (${dataLen} bytes); truncated file?`);
    let numel = 1;
    for (const d of shape as number[]) {
      numel *= d;
      if (numel > dataLen) break; // already too large for the file; avoids overflow
    }
    const want = numel * ST_DTYPE_BYTES[dtype];
    if (end - begin !== want) {
      fail(file, `${where}: ${dtype}${showJson(shape, 80)} needs ${want} bytes, data_offsets [${begin}, ${end}] hold ${end - begin}`);
    }
    spans.push({ name, begin, end });
    tensors.set(name, {
      name, dtype, shape: shape as number[], file,
      data: bytes.subarray(dataStart + begin, dataStart + end),
    });
  }
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let last: { name: string; begin: number; end: number } | null = null; // non-empty span reaching furthest
  for (const c of spans) {
    if (c.end === c.begin) continue;
    if (last && c.begin < last.end) {
      fail(file, `tensor ${showJson(c.name, 100)} [${c.begin}, ${c.end}) overlaps tensor ${showJson(last.name, 100)} [${last.begin}, ${last.end})`);
    }
    if (!last || c.end > last.end) last = c;
  }
  return { path: file, metadata, tensors };
}

/** Reads one .safetensors file (mmap when the native addon is loaded). */
export function readSafetensorsSync(file: string): SafetensorsFile {
  return parseSafetensors(mapFileSync(file), file);
}

/** Reads one .safetensors file, memory-mapped when the native addon is available. */
export async function readSafetensors(file: string): Promise<SafetensorsFile> {
  return parseSafetensors(await mapFile(file), file);
}

export interface SafetensorsSet {
  readonly files: readonly string[];
  readonly metadata: Readonly<Record<string, string>> | null; // from the first file
  readonly tensors: Map<string, StTensor>;
}

/**
 * All tensors of an HF directory: `model.safetensors.index.json` (sharded) if present, else `model.safetensors`,
 * else the directory's only *.safetensors files. A tensor name may appear in only one file.
 */
export async function readSafetensorsDir(dir: string): Promise<SafetensorsSet> {
  const indexPath = path.join(dir, 'model.safetensors.index.json');
  let files: string[];
  let weightMap: Map<string, string> | null = null; // a Map: a "__proto__" key in a plain object set its prototype, and the entry vanished
  if (fs.existsSync(indexPath)) {
    let index: unknown;
    try {
      index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
    } catch (e) {
      fail(indexPath, `bad JSON: ${(e as Error).message}`);
    }
    const wm = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) {
      fail(indexPath, wm === undefined ? 'missing "weight_map"' : `"weight_map" must be an object of tensor name -> shard file name, got ${showJson(wm, 80)}`);
    }
    weightMap = new Map();
    for (const [name, f] of Object.entries(wm as Record<string, unknown>)) {
      // '' and '.' name the directory itself ("not a regular file", naming the directory only)
      if (typeof f !== 'string' || f === '' || f === '.' || f === '..' || f.includes('/') || f.includes('\\')) {
        fail(indexPath, `weight_map[${showJson(name, 100)}] must be a file name in the same directory, got ${showJson(f, 100)}`);
      }
      weightMap.set(name, f);
    }
    files = [...new Set(weightMap.values())].sort().map((f) => path.join(dir, f));
  } else if (fs.existsSync(path.join(dir, 'model.safetensors'))) {
    files = [path.join(dir, 'model.safetensors')];
  } else {
    let names: string[];
    try {
      names = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
    } catch (e) {
      fail(dir, `cannot list directory: ${(e as Error).message}`);
    }
    if (names.length === 0) fail(dir, 'no model.safetensors, model.safetensors.index.json or *.safetensors file');
    files = names.map((f) => path.join(dir, f));
  }
  const tensors = new Map<string, StTensor>();
  let metadata: Readonly<Record<string, string>> | null = null;
  for (const [i, f] of files.entries()) {
    if (!fs.existsSync(f)) fail(indexPath, `shard ${shownPath(f)} listed in weight_map does not exist`);
    let st: SafetensorsFile;
    try {
      st = await readSafetensors(f);
    } catch (e) {
      // the shard may be fine and the index wrong (weight_map naming config.json): say where its name came from
      if (!weightMap) throw e;
      throw new Error(`${(e as Error).message} (a shard listed in ${indexPath})`);
    }
    if (i === 0) metadata = st.metadata;
    for (const [name, t] of st.tensors) {
      const prev = tensors.get(name);
      if (prev) fail(f, `tensor ${showJson(name, 100)} also appears in ${prev.file}`);
      tensors.set(name, t);
    }
  }
  if (weightMap) {
    // the index or the shard it names is wrong: the message names both, in full
    for (const [name, f] of weightMap) {
      const t = tensors.get(name);
      if (!t) fail(shownPath(path.join(dir, f)), `tensor ${showJson(name, 100)} listed in ${indexPath} is missing from this shard`);
      if (path.basename(t.file) !== f) fail(indexPath, `tensor ${showJson(name, 100)} is mapped to ${shownPath(path.join(dir, f))} but found in ${t.file}`);
    }
  }
  return { files, metadata, tensors };
}

/** A path for a message: a file name read from an index (thousands of characters when corrupted) is cut short. */
function shownPath(f: string): string {
  const base = path.basename(f);
  return base.length > 200 ? path.join(path.dirname(f), `${base.slice(0, 100)}... (${base.length} chars)`) : f;
}

/** A Tensor viewing a safetensors entry stored as f32/f16/bf16/i32 (fp8 needs its scales: see load.ts). */
export function stToTensor(t: StTensor): Tensor {
  const dtype = DTYPE_FROM_ST[t.dtype];
  if (!dtype || dtype === 'fp8_e4m3') throw new Error(`${t.file}: tensor "${t.name}" has dtype ${t.dtype}, which floe cannot use here`);
  return new Tensor(dtype, t.shape, t.data);
}

// ---------------------------------------------------------------- writer

export interface StWriteTensor {
  readonly dtype: StDType | DType;
  readonly shape: readonly number[];
  readonly data: ArrayBufferView;
}

function toStDType(name: string, d: StDType | DType): StDType {
  if (isStDType(d)) return d;
  const st = (ST_FROM_DTYPE as Record<string, StDType | null>)[d];
  if (!st) throw new Error(`tensor "${name}": dtype ${d} cannot be stored in safetensors`);
  return st;
}

interface Planned { name: string; dtype: StDType; shape: readonly number[]; bytes: Uint8Array }

function plan(tensors: Record<string, StWriteTensor>): Planned[] {
  const out: Planned[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    if (name === '__metadata__') throw new Error('"__metadata__" is reserved and cannot name a tensor');
    const dtype = toStDType(name, t.dtype);
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const want = t.shape.reduce((a, b) => a * b, 1) * ST_DTYPE_BYTES[dtype];
    if (bytes.byteLength !== want) {
      throw new Error(`tensor "${name}": ${dtype}[${t.shape.join(',')}] needs ${want} bytes, got ${bytes.byteLength}`);
    }
    out.push({ name, dtype, shape: t.shape, bytes });
  }
  // Widest elements first, then by name: contiguous data stays aligned to each tensor's element size.
  out.sort((a, b) => ST_DTYPE_BYTES[b.dtype] - ST_DTYPE_BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return out;
}

/**
 * Writes `chunks` (produced lazily if a generator) to `file` atomically: temp file in the same directory, fsync,
 * rename, fsync directory. On failure the temp file is removed and `file` is untouched.
 */
export function writeFileAtomic(file: string, chunks: Iterable<Uint8Array>): void {
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const fd = fs.openSync(tmp, 'w');
  try {
    for (const c of chunks) {
      let off = 0;
      while (off < c.byteLength) off += fs.writeSync(fd, c, off, Math.min(c.byteLength - off, 1 << 30));
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
  } catch (e) {
    try { fs.closeSync(fd); } catch { /* already closed */ }
    try { fs.unlinkSync(tmp); } catch { /* never created */ }
    throw new Error(`${file}: write failed: ${(e as Error).message}`);
  }
  try {
    const dfd = fs.openSync(dir, 'r');
    try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
  } catch { /* some filesystems cannot fsync a directory */ }
}

function encode(planned: readonly Planned[], metadata?: Record<string, string>): Uint8Array[] {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let off = 0;
  for (const p of planned) {
    header[p.name] = { dtype: p.dtype, shape: p.shape, data_offsets: [off, off + p.bytes.byteLength] };
    off += p.bytes.byteLength;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so the data section starts 8-byte aligned (the spec allows trailing whitespace).
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const hb = new TextEncoder().encode(json);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(hb.byteLength), true);
  return [len, hb, ...planned.map((p) => p.bytes)];
}

/** Writes one safetensors file atomically. Data are laid out contiguously, widest dtype first. */
export function writeSafetensors(file: string, tensors: Record<string, StWriteTensor>, metadata?: Record<string, string>): void {
  writeFileAtomic(file, encode(plan(tensors), metadata));
}

export interface ShardOptions {
  readonly maxShardBytes: number;
  readonly metadata?: Record<string, string>;
  readonly baseName?: string; // default "model"
}

/**
 * Writes tensors into `dir` as `<base>-0000i-of-0000n.safetensors` shards of at most maxShardBytes of data each
 * (a larger single tensor gets its own shard) plus `<base>.safetensors.index.json`. Returns the shard paths.
 */
export function writeSafetensorsSharded(dir: string, tensors: Record<string, StWriteTensor>, opts: ShardOptions): string[] {
  const base = opts.baseName ?? 'model';
  fs.mkdirSync(dir, { recursive: true });
  const planned = plan(tensors);
  const groups: Planned[][] = [];
  let cur: Planned[] = [];
  let curBytes = 0;
  for (const p of planned) {
    if (cur.length > 0 && curBytes + p.bytes.byteLength > opts.maxShardBytes) {
      groups.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(p);
    curBytes += p.bytes.byteLength;
  }
  if (cur.length > 0 || groups.length === 0) groups.push(cur);
  const pad = (i: number) => String(i).padStart(5, '0');
  const weightMap: Record<string, string> = {};
  const paths: string[] = [];
  let total = 0;
  groups.forEach((g, i) => {
    const name = `${base}-${pad(i + 1)}-of-${pad(groups.length)}.safetensors`;
    const file = path.join(dir, name);
    writeFileAtomic(file, encode(g, opts.metadata));
    paths.push(file);
    for (const p of g) {
      weightMap[p.name] = name;
      total += p.bytes.byteLength;
    }
  });
  const index = { metadata: { total_size: total }, weight_map: weightMap };
  writeFileAtomic(path.join(dir, `${base}.safetensors.index.json`), [new TextEncoder().encode(JSON.stringify(index, null, 2) + '\n')]);
  return paths;
}
