// Teacher cache: a teacher's top-k log-probabilities (at the distillation temperature) for every target token of a data
// file, written once by a teacher pass, then read memory-mapped by any number of student runs without the teacher.
//
// R cached rows (one per target token, samples in file order, rows in token order), k tokens per row.
//
// File layout (little-endian; every section starts at a multiple of 8):
//   0   "FLOEKD01"                      magic
//   8   u32 H, u32 0                    JSON header length in bytes
//   16  JSON header (H bytes, space-padded to a multiple of 8): CacheHeader below
//   ids     i32 (R, k)                  teacher top-k token ids, most probable first
//   logp    f16 or f32 (R, k)           their log-probabilities log softmax(z/T)
//   rest    f32 (R)                     log of the mass of every other token (-inf when k = V)
// Bytes per target token: 4k + 2k (f16) + 4.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TrainBackend } from '../backend/backend.js';
import { loadModel } from '../formats/load.js';
import { mapFileSync } from '../formats/mapfile.js';
import { LlamaTrainModel, type LogitsLoss, type PackedBatch } from '../model/llama-train.js';
import { f16ToF32, f32ToF16 } from '../tensor/codecs.js';
import { countTargets, packSamples, type Sample } from './data.js';
import { KdRowLoss, TeacherTopK, type KdLossConfig } from './kd-loss.js';

const MAGIC = 'FLOEKD01';
export const CACHE_FORMAT = 'floe-teacher-cache-1';

export type CacheLogpDType = 'f16' | 'f32';

export interface CacheHeader {
  readonly format: typeof CACHE_FORMAT;
  readonly teacher: string; // path it was made from, as given
  readonly teacherId?: string; // teacherFingerprint() of it (absent in caches from before it was recorded)
  readonly vocabSize: number;
  readonly topK: number;
  readonly temperature: number;
  readonly logpDtype: CacheLogpDType;
  readonly rows: number;
  readonly data: string; // data file (informational); samples are matched by line, length and token hash
  readonly samples: readonly (readonly [line: number, tokens: number, hash: number, row0: number])[];
  readonly offsets: { readonly ids: number; readonly logp: number; readonly rest: number; readonly end: number };
  readonly seconds: number; // teacher pass wall time
}

/** FNV-1a over a sample's tokens and loss mask: a cached sample must be the same tokens with the same targets. */
export function sampleHash(s: Sample): number {
  let h = 0x811c9dc5;
  for (let j = 0; j < s.tokens.length; j++) {
    h = Math.imul(h ^ (s.tokens[j]! & 0xffff), 0x01000193);
    h = Math.imul(h ^ ((s.tokens[j]! >>> 16) | (s.mask[j]! << 15)), 0x01000193);
  }
  return h >>> 0;
}

/** A teacher's identity: its resolved path and each model file's name, size and mtime (cheap; a retrained or swapped teacher differs). */
export function teacherFingerprint(teacher: string): string {
  const abs = fs.realpathSync(teacher);
  const files = fs.statSync(abs).isDirectory()
    ? fs.readdirSync(abs).filter((f) => /^(config\.json|.*\.safetensors|.*\.gguf)$/.test(f)).sort().map((f) => path.join(abs, f))
    : [abs];
  return [abs, ...files.map((f) => { const st = fs.statSync(f); return `${path.basename(f)}:${st.size}:${Math.round(st.mtimeMs)}`; })].join('|');
}

type CachedSample = CacheHeader['samples'][number];

/** Sample s's cache entry (its line, with the same length and token hash), or a throw naming `where` and what differs. */
function cachedEntry(byLine: ReadonlyMap<number, CachedSample>, s: Sample, where: string, remedy: string): CachedSample {
  const c = byLine.get(s.line);
  if (!c || c[1] !== s.tokens.length || c[2] !== sampleHash(s)) {
    throw new Error(`${where} is not in the teacher cache as tokenized now ` +
      `(${c ? `cached ${c[1]} tokens, hash ${c[2]}` : 'no such line'}; now ${s.tokens.length} tokens, hash ${sampleHash(s)}): ` +
      `the data, tokenizer, --max-seq-len or --train-on-prompt changed; ${remedy}`);
  }
  return c;
}

/**
 * Throw unless the cache was made from this teacher and holds every sample as tokenized now (line, length, token hash):
 * checked before training, so a stale cache is refused at once, not at the first batch that reaches a changed line.
 */
export function checkCacheMatches(file: string, h: CacheHeader, teacher: string, samples: readonly Sample[], data: string): void {
  const same = h.teacherId !== undefined ? h.teacherId === teacherFingerprint(teacher) : path.resolve(h.teacher) === path.resolve(teacher);
  if (!same) {
    throw new Error(`${file}: the cache was made from teacher ${h.teacher}${h.teacherId !== undefined && path.resolve(h.teacher) === path.resolve(teacher) ? ' as it was then (its files changed since)' : ''}, ` +
      `this run's teacher is ${teacher}; delete the cache to rebuild it, or give another --teacher-cache`);
  }
  const byLine = new Map(h.samples.map((x) => [x[0], x]));
  for (const s of samples) cachedEntry(byLine, s, `${file}: ${data}:${s.line}`, 'delete the cache to rebuild it, or give another --teacher-cache');
}

export function bytesPerToken(k: number, dt: CacheLogpDType): number { return k * (4 + (dt === 'f16' ? 2 : 4)) + 4; }

const align8 = (n: number) => Math.ceil(n / 8) * 8;

function layout(R: number, k: number, dt: CacheLogpDType, headerLen: number): CacheHeader['offsets'] {
  const ids = 16 + align8(headerLen);
  const logp = ids + align8(R * k * 4);
  const rest = logp + align8(R * k * (dt === 'f16' ? 2 : 4));
  return { ids, logp, rest, end: rest + R * 4 };
}

export interface BuildCacheOptions {
  readonly teacher: string; // HF dir or .gguf
  readonly samples: readonly Sample[];
  readonly data: string;
  readonly out: string; // the cache file (written to OUT.tmp, then renamed)
  readonly topK: number;
  readonly temperature: number;
  readonly logpDtype?: CacheLogpDType; // default f16
  readonly backend: TrainBackend;
  readonly batchTokens?: number; // teacher micro-batch (default 4096)
  readonly log?: (s: string) => void;
}

/** `OUT.tmp-PID` files of teacher passes whose process is gone (killed mid-pass): removed, their names returned. A pass
 *  still running in another process keeps its file. */
export function removeStaleCacheTemps(out: string): string[] {
  const dir = path.dirname(path.resolve(out));
  const prefix = `${path.basename(out)}.tmp-`;
  if (!fs.existsSync(dir)) return [];
  const alive = (pid: number) => {
    try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
  };
  const stale = fs.readdirSync(dir).filter((n) => {
    if (!n.startsWith(prefix)) return false;
    const pid = n.slice(prefix.length);
    return /^\d+$/.test(pid) && Number(pid) !== process.pid && !alive(Number(pid));
  });
  for (const n of stale) fs.rmSync(path.join(dir, n), { force: true });
  return stale;
}

/** The teacher pass: loads the teacher, runs it over every sample, writes the cache. */
export async function buildTeacherCache(o: BuildCacheOptions): Promise<CacheHeader> {
  const t0 = performance.now();
  // a pass killed before its rename leaves its temp file, as large as the cache: gone before this pass writes another
  const stale = removeStaleCacheTemps(o.out);
  if (stale.length) o.log?.(`teacher pass: removed ${stale.join(', ')} (left by a killed pass)`);
  const loaded = await loadModel(o.teacher);
  const cfg = loaded.config;
  const V = cfg.vocabSize, k = o.topK, T = o.temperature, dt = o.logpDtype ?? 'f16';
  const top = new TeacherTopK(V, k, T);
  const model = LlamaTrainModel.fromTensors(cfg, loaded.tensors, o.backend, { adapter: null, full: false, checkpointActivations: false }, loaded.ropeFreqFactors);
  const samples: [number, number, number, number][] = [];
  let R = 0;
  for (const s of o.samples) {
    if (s.tokens.length > cfg.maxPositionEmbeddings) throw new Error(`${o.data}:${s.line}: ${s.tokens.length} tokens exceed the teacher's context ${cfg.maxPositionEmbeddings}`);
    samples.push([s.line, s.tokens.length, sampleHash(s), R]);
    R += countTargets(s);
  }
  const base = { format: CACHE_FORMAT, teacher: o.teacher, teacherId: teacherFingerprint(o.teacher), vocabSize: V, topK: k, temperature: T, logpDtype: dt, rows: R, data: o.data, samples } as const;
  // the header's length depends on the offsets and the seconds it holds: fix a width, then fill in
  const probe = JSON.stringify({ ...base, offsets: layout(R, k, dt, 0), seconds: 0 }).length + 64;
  const offsets = layout(R, k, dt, probe);
  const tmp = `${o.out}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    let row = 0;
    // one loss chunk's rows, grown to the largest chunk: ids (n, k), logp (n, k) f32 and f16, rest (n)
    let I = new Int32Array(0), L = new Float32Array(0), L16 = new Uint16Array(0), rest = new Float32Array(0);
    const hook: LogitsLoss = {
      ceWeight: 0,
      chunk(logits, _d, _rows, _i0, n) {
        if (rest.length < n) { I = new Int32Array(n * k); L = new Float32Array(n * k); L16 = new Uint16Array(n * k); rest = new Float32Array(n); }
        for (let i = 0; i < n; i++) rest[i] = top.row(logits, i * V, I, L, i * k);
        fs.writeSync(fd, new Uint8Array(I.buffer, 0, n * k * 4), 0, n * k * 4, offsets.ids + row * k * 4);
        if (dt === 'f16') for (let i = 0; i < n * k; i++) L16[i] = f32ToF16(L[i]!);
        const lpBytes = dt === 'f16' ? new Uint8Array(L16.buffer, 0, n * k * 2) : new Uint8Array(L.buffer, 0, n * k * 4);
        fs.writeSync(fd, lpBytes, 0, lpBytes.length, offsets.logp + row * k * (dt === 'f16' ? 2 : 4));
        fs.writeSync(fd, new Uint8Array(rest.buffer, 0, n * 4), 0, n * 4, offsets.rest + row * 4);
        row += n;
        return 0;
      },
    };
    const bt = o.batchTokens ?? 4096;
    let done = 0;
    for (let i = 0; i < o.samples.length;) {
      const group: Sample[] = [];
      let tok = 0;
      while (i < o.samples.length && (group.length === 0 || tok + o.samples[i]!.tokens.length <= bt)) { tok += o.samples[i]!.tokens.length; group.push(o.samples[i++]!); }
      model.evalLoss(packSamples(group), hook);
      done += tok;
      if (o.log && (i === o.samples.length || Math.floor(done / 200000) !== Math.floor((done - tok) / 200000))) o.log(`teacher pass: ${i}/${o.samples.length} samples`);
    }
    if (row !== R) throw new Error(`teacher pass wrote ${row} rows, expected ${R}`);
    const header = JSON.stringify({ ...base, offsets, seconds: (performance.now() - t0) / 1000 } satisfies CacheHeader);
    if (header.length > probe) throw new Error(`teacher cache header grew past its reserved ${probe} bytes`);
    const head = Buffer.alloc(offsets.ids, 0x20);
    head.write(MAGIC, 0, 'latin1');
    head.writeUInt32LE(probe, 8);
    head.writeUInt32LE(0, 12);
    head.write(header, 16, 'utf8');
    fs.writeSync(fd, head, 0, head.length, 0);
    fs.ftruncateSync(fd, offsets.end);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, o.out);
  loaded.dispose();
  return readCacheHeader(o.out);
}

export function readCacheHeader(file: string): CacheHeader {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(16);
    fs.readSync(fd, b, 0, 16, 0);
    if (b.toString('latin1', 0, 8) !== MAGIC) throw new Error(`${file}: not a floe teacher cache (magic ${JSON.stringify(b.toString('latin1', 0, 8))}, expected ${MAGIC})`);
    const H = b.readUInt32LE(8);
    const hb = Buffer.alloc(H);
    fs.readSync(fd, hb, 0, H, 16);
    const h = JSON.parse(hb.toString('utf8')) as CacheHeader;
    if (h.format !== CACHE_FORMAT) throw new Error(`${file}: teacher cache format ${h.format}, expected ${CACHE_FORMAT}`);
    const size = fs.fstatSync(fd).size;
    if (size !== h.offsets.end) throw new Error(`${file}: ${size} bytes, the header says ${h.offsets.end} (truncated?)`);
    return h;
  } finally {
    fs.closeSync(fd);
  }
}

/** An open cache: rows looked up by sample (line, length, hash), memory-mapped. */
export class TeacherCache {
  readonly header: CacheHeader;
  readonly ids: Int32Array; // (R, k)
  private readonly lp16: Uint16Array | null; // (R, k)
  private readonly lp32: Float32Array | null; // (R, k)
  readonly rest: Float32Array; // (R)
  private readonly byLine = new Map<number, CachedSample>();

  constructor(readonly file: string) {
    const h = (this.header = readCacheHeader(file));
    const bytes = mapFileSync(file);
    const R = h.rows, k = h.topK, o = h.offsets;
    // each section its own view (a cache over 4 GiB is mapped a range at a time)
    const section = (at: number, n: number) => { const b = bytes.subarray(at, at + n); return [b.buffer, b.byteOffset] as const; };
    this.ids = new Int32Array(...section(o.ids, 4 * R * k), R * k);
    this.lp16 = h.logpDtype === 'f16' ? new Uint16Array(...section(o.logp, 2 * R * k), R * k) : null;
    this.lp32 = h.logpDtype === 'f32' ? new Float32Array(...section(o.logp, 4 * R * k), R * k) : null;
    this.rest = new Float32Array(...section(o.rest, 4 * R), R);
    for (const s of h.samples) this.byLine.set(s[0], s);
  }

  /** Row index of each batch row of `samples` packed (-1 where no target); throws when a sample is not the cached one. */
  rowsOf(samples: readonly Sample[], b: PackedBatch, out: Int32Array): void {
    out.fill(-1);
    samples.forEach((s, i) => {
      let r = cachedEntry(this.byLine, s, `${this.file}: line ${s.line} of the data`, 'delete the cache to rebuild it')[3];
      const o = b.segStart[i]!;
      for (let j = 0; j + 1 < s.tokens.length; j++) if (s.mask[j + 1]) out[o + j] = r++;
    });
  }

  /** Log-probabilities of row r into out[0, k). */
  logpRow(r: number, out: Float32Array): void {
    const k = this.header.topK;
    if (this.lp32) out.set(this.lp32.subarray(r * k, (r + 1) * k));
    else for (let i = 0; i < k; i++) out[i] = f16ToF32(this.lp16![r * k + i]!);
  }
}

/** The distillation objective of one micro-batch: (1 - ratio) CE + ratio T² D(teacher ‖ student) on the cached top-k. */
export class CachedKdLoss implements LogitsLoss {
  readonly ceWeight: number;
  private readonly loss: KdRowLoss;
  private readonly lp: Float32Array; // (k)
  private rowOf = new Int32Array(0); // (T) cache row per batch row
  constructor(readonly cache: TeacherCache, readonly kdRatio: number, cfg: KdLossConfig) {
    const h = cache.header;
    if (cfg.temperature !== h.temperature) {
      throw new Error(`${cache.file}: the cache holds the teacher at temperature ${h.temperature}, this run asks ${cfg.temperature}; use that temperature or another cache file`);
    }
    if (!(kdRatio >= 0 && kdRatio <= 1)) throw new RangeError(`kd ratio must be in [0, 1], got ${kdRatio}`);
    this.ceWeight = 1 - kdRatio;
    this.loss = new KdRowLoss(h.vocabSize, h.topK, cfg);
    this.lp = new Float32Array(h.topK);
  }

  /** Point the loss at the next micro-batch. */
  setBatch(samples: readonly Sample[], b: PackedBatch): this {
    if (this.rowOf.length < b.tokens.length) this.rowOf = new Int32Array(b.tokens.length);
    this.cache.rowsOf(samples, b, this.rowOf.subarray(0, b.tokens.length));
    return this;
  }

  chunk(logits: Float32Array, dlogits: Float32Array | null, rows: readonly number[], i0: number, n: number, scale: number): number {
    const V = this.cache.header.vocabSize, k = this.cache.header.topK;
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const r = this.rowOf[rows[i0 + i]!]!;
      if (r < 0) throw new Error(`batch row ${rows[i0 + i]} has a target but no teacher cache row`);
      this.cache.logpRow(r, this.lp);
      sum += this.loss.row(logits, i * V, this.cache.ids, r * k, this.lp, 0, this.cache.rest[r]!, dlogits, scale * this.kdRatio);
    }
    return sum;
  }
}
