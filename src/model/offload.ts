// Targeted offload: keep a share of the layers resident and stream the others' linear weights from disk into a ring
// of staging buffers, read ahead of compute by a reader thread (native/stream.cc; SyncReader is its plain twin).
//
// L layers, R ring slots (one computing, R-1 read ahead). A slot holds one layer's seven linear weights, each at a
// 64-byte-aligned offset; norms and fp8 scales stay resident (small). Streamed bytes come from the model file itself
// when the tensor is a view of a mapped file (safetensors, GGUF), else from a spill file written once at open.
//
//   slot 0 [ wq | wk | wv | wo | wGate | wUp | wDown ]   ← layer being computed
//   slot 1 [ ... ]                                         ← next streamed layer, read in flight
//   slot 2 [ ... ]                                         ← the one after

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadAddon } from '../backend/native-addon.js';
import { fileBackingOf } from '../formats/mapfile.js';
import { convertForLoad, convertsToBf16, type LoadDType, type LoadedModel } from '../formats/load.js';
import { Tensor, type DType } from '../tensor/tensor.js';
import type { LlamaLayer } from './llama.js';

/** The seven streamed fields of a layer and their HF tensor names. */
const FIELDS = [
  ['wq', 'self_attn.q_proj'], ['wk', 'self_attn.k_proj'], ['wv', 'self_attn.v_proj'], ['wo', 'self_attn.o_proj'],
  ['wGate', 'mlp.gate_proj'], ['wUp', 'mlp.up_proj'], ['wDown', 'mlp.down_proj'],
] as const;
type Field = (typeof FIELDS)[number][0];

export interface OffloadOptions {
  /** Bytes for every weight held in memory: embedding, head, norms, resident layers and the staging ring. */
  readonly weightsMemory?: number;
  /** Share of the layers streamed (0..1); exclusive with weightsMemory. */
  readonly offloadRatio?: number;
  /** Staging buffers (default 3: the layer computed plus two read ahead); at least 2. */
  readonly ringSlots?: number;
  /** 'native': reader thread with page-cache drop (default when the addon is built); 'sync': readSync in the caller. */
  readonly reader?: 'native' | 'sync';
  /** Convert the weights as LoadOptions dtype does (the model loaded without it): resident layers (and, for bf16, the
   *  embedding and head) in place, streamed ones one tensor at a time on their way to the spill file, so no full
   *  converted copy is ever held. fp8Block: the fp8 scale block (default per row). */
  readonly convert?: { readonly dtype: LoadDType; readonly fp8Block?: readonly [number, number] };
  /** Bytes per pread (default: diskChunkBytes of the model file). */
  readonly chunkBytes?: number;
}

/** Reads byte ranges of files into buffers; wait(t) returns once ticket t and every earlier one is done. */
interface Reader {
  readonly kind: 'native' | 'sync';
  open(file: string): number;
  read(fd: number, dst: Uint8Array, offset: number): number;
  wait(ticket: number): void;
  close(fd: number): void;
}

class NativeReader implements Reader {
  readonly kind = 'native';
  private readonly a = loadAddon()!;
  constructor(private readonly chunk: number) {}
  open(file: string): number { return this.a.streamOpen(file); }
  read(fd: number, dst: Uint8Array, offset: number): number { return this.a.streamRead(fd, dst, offset, this.chunk); }
  wait(ticket: number): void { this.a.streamWait(ticket); }
  close(fd: number): void { this.a.streamClose(fd); }
}

/** The plain twin: the read happens at submit time, in this thread; no read-ahead overlap, no page-cache drop. */
class SyncReader implements Reader {
  readonly kind = 'sync';
  private ticket = 0;
  constructor(private readonly chunk: number) {}
  open(file: string): number { return fs.openSync(file, 'r'); }
  read(fd: number, dst: Uint8Array, offset: number): number {
    for (let at = 0; at < dst.length;) {
      const n = fs.readSync(fd, dst, at, Math.min(this.chunk, dst.length - at), offset + at);
      if (n <= 0) throw new Error(`weight stream: unexpected end of file reading ${dst.length - at} bytes at offset ${offset + at}`);
      at += n;
    }
    return ++this.ticket;
  }
  wait(): void {}
  close(fd: number): void { fs.closeSync(fd); }
}

interface Source { readonly fd: number; readonly offset: number; readonly bytes: number }

/** What a streamed tensor's staging view needs besides its bytes (no reference to the bytes themselves). */
interface Template { readonly dtype: DType; readonly shape: readonly number[]; readonly bytes: number; readonly scale?: Float32Array; readonly scaleBlock?: readonly [number, number] }

interface Slot {
  readonly buf: Uint8Array; // (slotBytes)
  layer: number; // -1 when empty
  ticket: number; // last read of its layer; 0 when none in flight
}

export interface StreamStats {
  readonly streamedLayers: number;
  readonly layerBytes: number; // largest streamed layer (a slot)
  readonly ringBytes: number;
  readonly residentBytes: number; // weights kept in memory besides the ring
  bytesRead: number;
  layerReads: number;
  waitMs: number; // time compute spent waiting for a read
}

/**
 * Bytes per pread for a file's disk: 4 × the larger of the block device's readahead window and its largest request
 * (sysfs queue/read_ahead_kb, max_sectors_kb), so every pread keeps several full-size requests in flight; clamped to
 * [1, 32] MiB; 4 MiB where sysfs does not say (not Linux, network filesystems).
 */
export function diskChunkBytes(file: string): number {
  try {
    const dev = fs.statSync(file).dev;
    const major = Math.floor(dev / 256) & 0xfff, minor = (dev & 0xff) | (Math.floor(dev / 2 ** 20) & ~0xff);
    const base = `/sys/dev/block/${major}:${minor}`;
    const q = fs.existsSync(`${base}/queue`) ? `${base}/queue` : `${base}/../queue`; // a partition: its disk's queue
    const kb = (name: string) => Number(fs.readFileSync(`${q}/${name}`, 'utf8').trim()) || 0;
    const window = Math.max(kb('read_ahead_kb'), kb('max_sectors_kb')) * 1024;
    if (window > 0) return Math.min(32 << 20, Math.max(1 << 20, 4 * window));
  } catch { /* no sysfs for this file */ }
  return 4 << 20;
}

/** Which layers to stream: n of L, spread evenly so resident layers' compute hides the streamed ones' reads. */
export function streamedLayerSet(L: number, n: number): boolean[] {
  const out: boolean[] = [];
  for (let l = 0; l < L; l++) out.push(Math.floor(((l + 1) * n) / L) > Math.floor((l * n) / L));
  return out;
}

const LINEAR = /^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$/;
const ALIGN = 64;
const align = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

export class LayerStream {
  readonly streamed: readonly boolean[]; // (L)
  readonly stats: StreamStats;
  private readonly slots: Slot[] = [];
  private readonly offsets: number[][] = []; // (L, 7) byte offset of each field in a slot
  private readonly sources: (Source[] | null)[] = []; // (L, 7) streamed layers only
  private readonly templates: Template[][] = []; // (L, 7) dtype, shape and scales of each streamed tensor
  private readonly views = new Map<number, LlamaLayer>(); // layer * R + slot -> layer viewing that slot
  private readonly fds: number[] = [];
  private base: readonly LlamaLayer[] = [];
  private seq: number[] = []; // streamed layers in the order a pass visits them (cyclic), consecutive repeats merged
  private seqKey = '';
  private pos = 0;
  private current = -1; // slot being computed
  private readonly dst: Uint8Array[][][] = []; // (R, L, 7) views of each slot where each tensor of a layer lands
  private readonly want: number[] = []; // the read-ahead window, reused (no allocation per layer)

  private constructor(private readonly reader: Reader, streamed: boolean[], stats: StreamStats) {
    this.streamed = streamed;
    this.stats = stats;
  }

  /**
   * Choose the streamed layers of a loaded model, point them at their bytes on disk (spilling tensors that live only
   * in memory), and replace them in `loaded.tensors` with views of the first staging slot, so the in-memory copies go.
   * Call before building the model; then model.attachStream(stream).
   */
  static open(loaded: LoadedModel, o: OffloadOptions): LayerStream {
    const cfg = loaded.config;
    const L = cfg.numLayers;
    const R = o.ringSlots ?? 3;
    if (!Number.isInteger(R) || R < 2) throw new RangeError(`weight stream: ring slots must be an integer >= 2, got ${R}`);
    if ((o.weightsMemory === undefined) === (o.offloadRatio === undefined)) throw new Error('weight stream: give one of weightsMemory or offloadRatio');
    const get = (name: string) => {
      const t = loaded.tensors.get(name);
      if (!t) throw new Error(`${loaded.path}: missing tensor "${name}"`);
      return t;
    };
    const layerTensors = (l: number) => FIELDS.map(([, hf]) => get(`model.layers.${l}.${hf}.weight`));
    const q = o.convert;
    const toFp8 = (t: Tensor) => q?.dtype === 'fp8' && t.dtype !== 'fp8_e4m3';
    const toBf16 = (t: Tensor) => q?.dtype === 'bf16' && convertsToBf16(t);
    const converted = (t: Tensor, name: string) => (q ? convertForLoad(name, t, q.dtype, q.fp8Block, loaded.path) : t);
    // bf16 converts the embedding and head too: they stay resident, so in place before the budget is counted
    for (const [name, t] of loaded.tensors) if (!LINEAR.test(name) && toBf16(t)) loaded.tensors.set(name, converted(t, name));
    // bytes and scale bytes of a linear weight as it will be held (after the conversion when asked)
    const dataBytes = (t: Tensor) => (toFp8(t) ? t.rows * t.cols : toBf16(t) ? t.rows * t.cols * 2 : t.data.byteLength);
    const scaleBytes = (t: Tensor) => {
      if (!toFp8(t)) return t.scale?.byteLength ?? 0;
      const [br, bc] = q!.fp8Block ?? [1, t.cols];
      return 4 * Math.ceil(t.rows / br) * Math.ceil(t.cols / bc);
    };
    const layerBytes: number[] = [];
    for (let l = 0; l < L; l++) layerBytes.push(layerTensors(l).reduce((a, t) => a + align(dataBytes(t)), 0));
    let other = 0; // everything that is not a streamable linear weight stays resident, and every fp8 scale
    for (const [name, t] of loaded.tensors) other += LINEAR.test(name) ? scaleBytes(t) : t.data.byteLength + (t.scale?.byteLength ?? 0);
    const slotBytes = Math.max(...layerBytes);
    let n: number;
    if (o.offloadRatio !== undefined) {
      if (!(o.offloadRatio >= 0 && o.offloadRatio <= 1)) throw new RangeError(`offload ratio must be in [0, 1], got ${o.offloadRatio}`);
      n = Math.round(L * o.offloadRatio);
    } else {
      const budget = o.weightsMemory!;
      const ring = R * slotBytes;
      const floor = other + ring;
      const whole = other + layerBytes.reduce((a, b) => a + b, 0);
      if (budget >= whole) n = 0; // every layer fits: no ring, even where the ring would outgrow the layers (L < R)
      else if (budget < floor) {
        const min = Math.min(floor, whole);
        throw new RangeError(`weights memory ${budget} bytes is below the minimum ${min} for ${loaded.path} (embedding, head and norms ${other} + ` +
          (min === whole ? `all ${L} layers × ${slotBytes}, fewer than the ${R} staging slots)` : `${R} staging slots × ${slotBytes})`));
      } else n = L - Math.min(L, Math.floor((budget - floor) / slotBytes));
    }
    const streamed = n > 0 ? streamedLayerSet(L, n) : new Array<boolean>(L).fill(false);
    const chunk = o.chunkBytes ?? diskChunkBytes(loaded.format === 'gguf' ? loaded.path : path.join(loaded.path, fs.readdirSync(loaded.path).find((f) => f.endsWith('.safetensors')) ?? '.'));
    const kind = o.reader ?? (loadAddon()?.streamRead ? 'native' : 'sync');
    if (kind === 'native' && !loadAddon()?.streamRead) throw new Error('weight stream: the native reader needs the addon (npx node-gyp rebuild)');
    const reader: Reader = kind === 'native' ? new NativeReader(chunk) : new SyncReader(chunk);
    const slotsUsed = n > 0 ? Math.min(R, n) : 0;
    let residentBytes = other;
    for (let l = 0; l < L; l++) if (!streamed[l]) residentBytes += layerBytes[l]!;
    const s = new LayerStream(reader, streamed, {
      streamedLayers: n, layerBytes: slotBytes, ringBytes: slotsUsed * slotBytes, residentBytes, bytesRead: 0, layerReads: 0, waitMs: 0,
    });
    // a resident layer's linear weights are converted in place (every layer when none is streamed)
    const convertResident = (l: number) => {
      if (!q) return;
      for (const [, hf] of FIELDS) {
        const name = `model.layers.${l}.${hf}.weight`;
        const t = get(name);
        if (toFp8(t) || toBf16(t)) loaded.tensors.set(name, converted(t, name));
      }
    };
    if (n === 0) {
      for (let l = 0; l < L; l++) convertResident(l);
      return s;
    }
    for (let i = 0; i < slotsUsed; i++) s.slots.push({ buf: new Uint8Array(slotBytes), layer: -1, ticket: 0 });
    const fdOf = new Map<string, number>();
    const fileFd = (file: string) => {
      let fd = fdOf.get(file);
      if (fd === undefined) { fd = reader.open(file); fdOf.set(file, fd); s.fds.push(fd); }
      return fd;
    };
    let spill: { file: string; fd: number; at: number } | null = null;
    for (let l = 0; l < L; l++) {
      const names = FIELDS.map(([, hf]) => `model.layers.${l}.${hf}.weight`);
      const offs: number[] = [];
      let at = 0;
      for (const t of layerTensors(l)) { offs.push(at); at += align(dataBytes(t)); }
      s.offsets.push(offs);
      if (!streamed[l]) {
        convertResident(l);
        s.sources.push(null); s.templates.push([]);
        continue;
      }
      const src: Source[] = [];
      const ts: Template[] = [];
      names.forEach((name, i) => {
        const t0 = get(name);
        // converted into the first staging slot, where its view reads it, and spilled from there: the ring is in the
        // budget, and one buffer reused leaves no copy per tensor for the collector (it kept ~2 tensors a streamed layer)
        const t = q ? convertForLoad(name, t0, q.dtype, q.fp8Block, loaded.path, s.slots[0]!.buf.subarray(offs[i]!, offs[i]! + dataBytes(t0))) : t0;
        ts.push({ dtype: t.dtype, shape: t.shape, bytes: t.data.byteLength, scale: t.scale, scaleBlock: t.scaleBlock });
        const back = fileBackingOf(t.data);
        if (back) { src.push({ fd: fileFd(back.file), offset: back.offset, bytes: t.data.byteLength }); return; }
        // bytes made in memory (GGUF Q/K reordered, converted while loading): written once to an unlinked spill file
        if (!spill) {
          const file = path.join(os.tmpdir(), `floe-offload-${process.pid}-${Date.now()}.bin`);
          spill = { file, fd: fs.openSync(file, 'w+'), at: 0 };
        }
        for (let done = 0; done < t.data.length;) done += fs.writeSync(spill.fd, t.data, done, t.data.length - done, spill.at + done);
        src.push({ fd: -1, offset: spill.at, bytes: t.data.byteLength });
        spill.at += align(t.data.byteLength);
      });
      s.sources.push(src);
      s.templates.push(ts);
      // the model is built from slot-0 views: the mapped or spilled originals are no longer referenced
      names.forEach((name, i) => loaded.tensors.set(name, s.view(ts[i]!, 0, offs[i]!)));
    }
    for (const slot of s.slots) s.dst.push(s.offsets.map((offs, l) => (s.sources[l] ?? []).map((src, i) => slot.buf.subarray(offs[i]!, offs[i]! + src.bytes))));
    if (spill) {
      const sp: { file: string; fd: number } = spill;
      fs.fsyncSync(sp.fd);
      fs.closeSync(sp.fd);
      const fd = reader.open(sp.file);
      fs.unlinkSync(sp.file); // the open descriptor keeps it; nothing is left behind on exit
      s.fds.push(fd);
      for (const src of s.sources) if (src) for (let i = 0; i < src.length; i++) if (src[i]!.fd === -1) src[i] = { ...src[i]!, fd };
    }
    return s;
  }

  get readerKind(): 'native' | 'sync' { return this.reader.kind; }

  /** The resident layers (norms, and the weights of layers not streamed), from the built model. */
  bind(layers: readonly LlamaLayer[]): void {
    if (layers.length !== this.streamed.length) throw new Error(`weight stream: model has ${layers.length} layers, stream was opened for ${this.streamed.length}`);
    this.base = layers;
  }

  /** The layer order of the coming passes (repeated cyclically until changed): read-ahead follows it. */
  begin(order: readonly number[]): void {
    const seq: number[] = [];
    for (const l of order) if (this.streamed[l] && seq[seq.length - 1] !== l) seq.push(l);
    if (seq.length > 1 && seq[0] === seq[seq.length - 1]) seq.pop();
    const key = seq.join(',');
    if (key === this.seqKey) return;
    this.seq = seq;
    this.seqKey = key;
    this.pos = 0;
  }

  /** Layer l with its weights in memory: resident, or its staging slot once the read has landed. */
  layer(l: number): LlamaLayer {
    if (!this.streamed[l]) return this.base[l]!;
    const seq = this.seq;
    if (seq[this.pos] !== l) {
      let i = 1;
      while (i <= seq.length && seq[(this.pos + i) % seq.length] !== l) i++;
      if (i > seq.length) throw new Error(`weight stream: layer ${l} is not in this pass's order (call begin with the layers to visit)`);
      this.pos = (this.pos + i) % seq.length;
    }
    let s = this.slotOf(l);
    if (s < 0) { this.want.length = 0; this.want.push(l); s = this.load(l, this.victim(this.want)); }
    this.current = s;
    this.prefetch();
    const slot = this.slots[s]!;
    if (slot.ticket) {
      const t0 = performance.now();
      this.reader.wait(slot.ticket);
      this.stats.waitMs += performance.now() - t0;
      slot.ticket = 0;
    }
    const key = l * this.slots.length + s;
    let v = this.views.get(key);
    if (!v) {
      const b = this.base[l]!;
      const ts = this.templates[l]!;
      const fields = {} as Record<Field, Tensor>;
      FIELDS.forEach(([f], i) => { fields[f] = this.view(ts[i]!, s, this.offsets[l]![i]!); });
      v = { inputNorm: b.inputNorm, postNorm: b.postNorm, ...fields };
      this.views.set(key, v);
    }
    return v;
  }

  /** Close the files; the model must not run again. */
  dispose(): void {
    for (const s of this.slots) if (s.ticket) { this.reader.wait(s.ticket); s.ticket = 0; }
    for (const fd of this.fds.splice(0)) this.reader.close(fd);
  }

  /** Start reads for the next R-1 streamed layers of the order that are not in a slot yet. */
  private prefetch(): void {
    const seq = this.seq;
    const n = Math.min(this.slots.length, seq.length);
    const want = this.want;
    want.length = 0;
    for (let i = 0; i < n; i++) want.push(seq[(this.pos + i) % seq.length]!);
    for (let i = 1; i < n; i++) if (this.slotOf(want[i]!) < 0) this.load(want[i]!, this.victim(want));
  }

  private slotOf(l: number): number {
    for (let i = 0; i < this.slots.length; i++) if (this.slots[i]!.layer === l) return i;
    return -1;
  }

  /** A slot not being computed and not holding a layer in `keep`. */
  private victim(keep: readonly number[]): number {
    for (let i = 0; i < this.slots.length; i++) {
      const x = this.slots[i]!;
      if (i !== this.current && (x.layer < 0 || !keep.includes(x.layer))) return i;
    }
    throw new Error('weight stream: no free staging slot (ring smaller than the read-ahead window)');
  }

  private load(l: number, s: number): number {
    const slot = this.slots[s]!;
    if (slot.ticket) this.reader.wait(slot.ticket); // never overwrite bytes a read is still writing
    const offs = this.offsets[l]!;
    const srcs = this.sources[l]!;
    const dst = this.dst[s]!;
    let t = 0;
    for (let i = 0; i < srcs.length; i++) {
      const src = srcs[i]!;
      t = this.reader.read(src.fd, dst[l]![i]!, src.offset);
      this.stats.bytesRead += src.bytes;
    }
    slot.layer = l;
    slot.ticket = t;
    this.stats.layerReads++;
    return s;
  }

  private view(t: Template, slot: number, offset: number): Tensor {
    const buf = this.slots[slot]!.buf;
    return new Tensor(t.dtype, t.shape, buf.subarray(offset, offset + t.bytes), t.scale, t.scaleBlock);
  }
}
