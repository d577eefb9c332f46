// Pipeline-parallel inference: rank 0 embeds, runs its layers and sends the residual stream down the chain; each stage
// runs its layers and passes on; the last sends the rows that need logits back to rank 0 for norm, head and sampling.
//
// T tokens in the step, S sequences, R rows with logits (or hidden rows), D hidden, B KV blocks per table.
//
//   rank 0 ──STEP──▶ rank 1 ──STEP──▶ … ──STEP──▶ rank N-1
//     ▲                                              │
//     └──────────────────OUT (R, D)──────────────────┘

import type { KvDType } from '../backend/backend.js';
import { decodeBf16, encodeBf16 } from '../tensor/codecs.js';
import { copyKvBlocks, KvCache } from '../model/kv-cache.js';
import { gatherRows, type ForwardInput, type LlamaModel } from '../model/llama.js';
import type { Transport } from './transport.js';

export const TAG_STEP = 11; // rank r → r + 1: INIT, STEP, STOP
export const TAG_OUT = 12; // last rank → rank 0: the step's output rows

const enum Kind { Init = 1, Step = 2, Stop = 3, Out = 4 }
export type ActDType = 'f32' | 'bf16';
const ACT_CODE: Record<ActDType, number> = { f32: 0, bf16: 1 };
const KV_CODE: Record<KvDType, number> = { f32: 0, bf16: 1, fp8_e4m3: 2 };
const KV_OF = ['f32', 'bf16', 'fp8_e4m3'] as const;
const HEADER = 9; // int32s: kind, T, S, R, numLogits, maxBlocks, numCopies, act dtype, step number

/** Activations cross as f32 when the model runs in f32 (outputs then match one process bit for bit), else bf16. */
export function activationDtype(model: LlamaModel): ActDType {
  return model.weights.layers[0]!.wq.dtype === 'f32' ? 'f32' : 'bf16';
}

/** Steps, bytes each way, and the most steps in flight at once (micro-batches overlapping in the stages). */
export interface HopStats { steps: number; bytesDown: number; bytesBack: number; maxInFlight: number }

/**
 * Message layout (little-endian), STEP:
 *   int32 header (HEADER) | tokens (T) | positions (T) | slots (T) | qStart (S+1) | ctxLen (S) | blockTables (S, B)
 *   | logitRows (R) | copies (2·numCopies: src, dst) | activations (T, D) f32 or bf16
 * OUT: int32 header | rows (R, D) f32 or bf16.  INIT: header with T = numBlocks, S = blockSize, R = kv dtype.
 */
/** Bytes of a STEP message for T tokens of S sequences, R output rows, B blocks per table, hidden size D. */
export function stepMessageBytes(T: number, S: number, R: number, B: number, D: number, act: ActDType): number {
  return 4 * (HEADER + 3 * T + (S + 1) + S + S * B + R) + T * D * (act === 'f32' ? 4 : 2);
}

/** Bytes of the OUT message carrying R rows back to rank 0. */
export function outMessageBytes(R: number, D: number, act: ActDType): number {
  return 4 * HEADER + R * D * (act === 'f32' ? 4 : 2);
}

function encodeStep(inp: ForwardInput, copies: readonly { src: number; dst: number }[], x: Float32Array, act: ActDType, stepNo: number): Uint8Array {
  const T = inp.positions.length;
  const { numSeqs: S, maxBlocks: B } = inp.attn;
  const R = inp.logitRows.length;
  const ints = HEADER + 3 * T + (S + 1) + S + S * B + R + 2 * copies.length;
  const actBytes = x.length * (act === 'f32' ? 4 : 2);
  const buf = new Uint8Array(ints * 4 + actBytes);
  const h = new Int32Array(buf.buffer, 0, ints);
  h.set([Kind.Step, T, S, R, inp.numLogits ?? R, B, copies.length, ACT_CODE[act], stepNo]);
  let o = HEADER;
  for (const a of [inp.tokens, inp.positions, inp.slots, inp.attn.qStart, inp.attn.ctxLen, inp.attn.blockTables.subarray(0, S * B), inp.logitRows]) {
    h.set(a, o);
    o += a.length;
  }
  for (const c of copies) { h[o++] = c.src; h[o++] = c.dst; }
  writeAct(buf, ints * 4, x, act);
  return buf;
}

interface StepMsg { readonly inp: ForwardInput; readonly copies: { src: number; dst: number }[]; readonly actOffset: number; readonly act: ActDType; readonly stepNo: number }

function decodeStep(buf: Uint8Array): StepMsg {
  const h = new Int32Array(buf.buffer, buf.byteOffset, HEADER);
  const [, T, S, R, numLogits, B, C, actCode, stepNo] = h as unknown as number[];
  const ints = HEADER + 3 * T! + (S! + 1) + S! + S! * B! + R! + 2 * C!;
  const all = new Int32Array(buf.buffer, buf.byteOffset, ints);
  let o = HEADER;
  const take = (n: number) => all.subarray(o, (o += n));
  const tokens = take(T!), positions = take(T!), slots = take(T!), qStart = take(S! + 1), ctxLen = take(S!), blockTables = take(S! * B!), logitRows = take(R!);
  const cp = take(2 * C!);
  const copies = Array.from({ length: C! }, (_, i) => ({ src: cp[2 * i]!, dst: cp[2 * i + 1]! }));
  return {
    inp: { tokens, positions, slots, attn: { numSeqs: S!, qStart, ctxLen, blockTables, maxBlocks: B! }, logitRows, numLogits: numLogits! },
    copies, actOffset: ints * 4, act: actCode === 0 ? 'f32' : 'bf16', stepNo: stepNo!,
  };
}

function writeAct(buf: Uint8Array, offset: number, x: Float32Array, act: ActDType): void {
  if (act === 'f32') buf.set(new Uint8Array(x.buffer, x.byteOffset, x.byteLength), offset);
  else buf.set(encodeBf16(x), offset);
}

function readAct(buf: Uint8Array, offset: number, out: Float32Array, act: ActDType): void {
  const n = out.length * (act === 'f32' ? 4 : 2);
  if (buf.byteLength - offset !== n) throw new Error(`pipeline: message carries ${buf.byteLength - offset} activation bytes, expected ${n} (${out.length} values as ${act})`);
  if (act === 'f32') new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(buf.subarray(offset));
  else decodeBf16(buf.subarray(offset), out);
}

function header(kind: Kind, a = 0, b = 0, c = 0): Uint8Array {
  return new Uint8Array(Int32Array.of(kind, a, b, c, 0, 0, 0, 0, 0).buffer);
}

/** Rank 0's end of the pipeline: a forward step that runs stage 0 here and the rest on the other ranks. */
export class PipelineDriver {
  private kv: KvCache | null = null; // the cache the stages were set up for (INIT)
  private copies: { src: number; dst: number }[] = [];
  private stepNo = 0;
  readonly stats: HopStats = { steps: 0, bytesDown: 0, bytesBack: 0, maxInFlight: 0 };
  private inFlight = 0;
  readonly act: ActDType;

  constructor(readonly tr: Transport, readonly model: LlamaModel) {
    if (tr.rank !== 0) throw new Error(`PipelineDriver runs on rank 0, this is rank ${tr.rank}`);
    if (tr.size < 2) throw new Error(`a pipeline needs at least 2 ranks, the job has ${tr.size}`);
    if (model.range.start !== 0) throw new Error(`rank 0 holds the first stage, its model starts at layer ${model.range.start}`);
    this.act = activationDtype(model);
  }

  /** Copy-on-write block copies: done here now, on the other stages before the next step. */
  copyBlocks(copies: readonly { src: number; dst: number }[]): void {
    this.copies.push(...copies);
  }

  /** Logits (numLogits, V) of the step; hiddenOut (R, D) gets the final-normed rows. */
  async forward(inp: ForwardInput, kv: KvCache, hiddenOut?: Float32Array): Promise<Float32Array> {
    // every stage allocates its own layers' pool with rank 0's geometry (messages to a rank arrive in send order)
    const init = kv === this.kv ? null : this.tr.send(1, TAG_STEP, header(Kind.Init, kv.numBlocks, kv.blockSize, KV_CODE[kv.dtype]));
    if (init) { this.kv = kv; this.copies = []; }
    const m = this.model;
    const x = m.embedTokens(inp.tokens); // (T, D)
    m.forwardLayers(x, inp, kv);
    const stepNo = ++this.stepNo;
    const msg = encodeStep(inp, this.copies, x, this.act, stepNo);
    this.copies = [];
    const sent = this.tr.send(1, TAG_STEP, msg);
    this.stats.maxInFlight = Math.max(this.stats.maxInFlight, ++this.inFlight);
    const back = await this.tr.recv(this.tr.size - 1, TAG_OUT);
    this.inFlight--;
    await init;
    await sent;
    const h = new Int32Array(back.buffer, back.byteOffset, HEADER);
    const R = inp.logitRows.length;
    if (h[0] !== Kind.Out || h[3] !== R || h[8] !== stepNo) {
      throw new Error(`pipeline: rank ${this.tr.size - 1} answered kind ${h[0]} step ${h[8]} with ${h[3]} rows, expected step ${stepNo} with ${R} rows`);
    }
    const rows = m.residual(R); // (R, D)
    readAct(back, HEADER * 4, rows, h[7] === 0 ? 'f32' : 'bf16');
    this.stats.steps++;
    this.stats.bytesDown += msg.byteLength;
    this.stats.bytesBack += back.byteLength;
    return m.head(rows, identity(R), inp.numLogits ?? R, hiddenOut);
  }

  /** Tell every stage to stop (they finalize and exit). */
  async close(): Promise<void> {
    await this.tr.send(1, TAG_STEP, header(Kind.Stop));
  }
}

let identityRows = new Int32Array(0);
function identity(R: number): Int32Array {
  if (identityRows.length < R) identityRows = Int32Array.from({ length: Math.max(R, 2 * identityRows.length) }, (_, i) => i);
  return identityRows.subarray(0, R);
}

/** A stage on rank ≥ 1: receive, run its layers, pass on (or send the output rows back to rank 0), until STOP. */
export async function runStage(tr: Transport, model: LlamaModel): Promise<void> {
  const r = tr.rank;
  const last = r === tr.size - 1;
  const D = model.config.hiddenSize;
  const act = activationDtype(model);
  let kv: KvCache | null = null;
  let pending: Promise<void> = Promise.resolve(); // the previous send: its buffer stays untouched until done
  for (;;) {
    const buf = await tr.recv(r - 1, TAG_STEP);
    const kind = new Int32Array(buf.buffer, buf.byteOffset, 1)[0];
    if (kind === Kind.Init || kind === Kind.Stop) {
      if (kind === Kind.Init) {
        const h = new Int32Array(buf.buffer, buf.byteOffset, HEADER);
        const c = model.config;
        kv = new KvCache(model.weights.layers.length, h[1]!, h[2]!, c.numKvHeads, c.headDim, KV_OF[h[3]!]!);
      }
      await pending;
      if (!last) await tr.send(r + 1, TAG_STEP, buf);
      if (kind === Kind.Stop) return;
      continue;
    }
    if (kind !== Kind.Step) throw new Error(`pipeline stage ${r}: message kind ${kind} from rank ${r - 1} is not INIT, STEP or STOP`);
    if (!kv) throw new Error(`pipeline stage ${r}: a STEP came before INIT`);
    const m = decodeStep(buf);
    if (m.act !== act) throw new Error(`pipeline stage ${r}: activations arrive as ${m.act}, this stage runs ${act}`);
    if (m.copies.length > 0) copyKvBlocks(kv.layers, m.copies);
    const T = m.inp.positions.length;
    const x = model.residual(T); // (T, D)
    readAct(buf, m.actOffset, x, act);
    model.forwardLayers(x, m.inp, kv);
    await pending;
    if (last) {
      const R = m.inp.logitRows.length;
      const out = new Uint8Array(HEADER * 4 + R * D * (act === 'f32' ? 4 : 2));
      new Int32Array(out.buffer, 0, HEADER).set([Kind.Out, T, m.inp.attn.numSeqs, R, m.inp.numLogits ?? R, 0, 0, ACT_CODE[act], m.stepNo]);
      const rows = R === 0 ? new Float32Array(0) : gatherRows(x, m.inp.logitRows, D, new Float32Array(R * D));
      writeAct(out, HEADER * 4, rows, act);
      pending = tr.send(0, TAG_OUT, out);
    } else {
      writeAct(buf, m.actOffset, x, act); // the received message, activations replaced, goes on
      pending = tr.send(r + 1, TAG_STEP, buf);
    }
  }
}
