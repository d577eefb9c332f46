// Streamed layers (--offload-ratio): tokens/s of decode (batch 1 and 16), prefill and a LoRA step against the ceiling
// disk bandwidth ÷ bytes streamed per step, and against the same run with every layer resident.
//
// usage: node --import tsx bench/offload.ts [--model PATH] [--cache DIR] [--ratio 0.5] [--threads N] [--steps 8]
//          [--prefill 512] [--seq 256] [--json FILE]
// Without --model: the random 1B bf16 GGUF of bench/gguf-gen.ts (made in the cache on first use).
// Disk bandwidth: the native reader (pread + DONTNEED) over the model file twice; the second pass is the figure
// (the first drops whatever the page cache held). Streamed bytes per step are counted by the stream, not assumed.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAddon } from '../src/backend/native-addon.js';
import type { TrainBackend } from '../src/backend/backend.js';
import { selectBackend } from '../src/backend/select.js';
import { loadModel } from '../src/formats/load.js';
import { KvCache } from '../src/model/kv-cache.js';
import { LlamaModel } from '../src/model/llama.js';
import { LlamaTrainModel } from '../src/model/llama-train.js';
import { initLora, LORA_TARGETS } from '../src/model/lora.js';
import { LayerStream } from '../src/model/offload.js';
import { ensureGguf } from './gguf-gen.js';
import { SHAPES } from './shapes.js';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const flag = (name: string, d: string) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1]! : d; };
const ratio = Number(flag('ratio', '0.5'));
const threads = Number(flag('threads', '0')) || undefined;
const steps = Number(flag('steps', '8'));
const prefillT = Number(flag('prefill', '512'));
const seq = Number(flag('seq', '256'));
const log = (s: string) => process.stderr.write(s + '\n');

const model = argv.includes('--model') ? flag('model', '') : ensureGguf(path.resolve(flag('cache', path.join(BENCH, '.cache'))), '1b', SHAPES['1b']!.config, 'bf16', log);
const addon = loadAddon();
if (!addon) throw new Error('bench/offload.ts needs the native addon (npm install)');
const be = selectBackend('native', threads);

/** Disk bandwidth of the native reader over the model's largest file (second of two passes), bytes/s. */
function diskBandwidth(): number {
  const file = fs.statSync(model).isDirectory()
    ? fs.readdirSync(model).filter((f) => f.endsWith('.safetensors')).map((f) => path.join(model, f)).sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0]!
    : model;
  const size = fs.statSync(file).size;
  const buf = new Uint8Array(64 << 20);
  const fd = addon!.streamOpen(file);
  let bw = 0;
  for (let pass = 0; pass < 2; pass++) {
    const t0 = performance.now();
    let t = 0;
    for (let at = 0; at < size; at += buf.length) t = addon!.streamRead(fd, buf.subarray(0, Math.min(buf.length, size - at)), at, 4 << 20), addon!.streamWait(t);
    bw = size / ((performance.now() - t0) / 1000);
  }
  addon!.streamClose(fd);
  return bw;
}

interface Row { case: string; resident_tok_s: number; streamed_tok_s: number; streamed_bytes_per_step: number; ceiling_tok_s: number; wait_ms_per_step: number }

async function inference(r: number): Promise<{ decode1: number; decode16: number; prefill: number; bytes: Record<string, number>; wait: Record<string, number> }> {
  const loaded = await loadModel(model);
  const stream = r > 0 ? LayerStream.open(loaded, { offloadRatio: r }) : null;
  const m = LlamaModel.fromTensors(loaded.config, loaded.tensors, be, loaded.ropeFreqFactors);
  if (stream) m.attachStream(stream);
  const c = loaded.config;
  const S = 16, L = 16;
  const ctx = prefillT + steps + 1;
  const perSeq = Math.ceil(ctx / L);
  const kv = new KvCache(c.numLayers, S * perSeq, L, c.numKvHeads, c.headDim, 'bf16');
  const out: { decode1: number; decode16: number; prefill: number; bytes: Record<string, number>; wait: Record<string, number> } = { decode1: 0, decode16: 0, prefill: 0, bytes: {}, wait: {} };
  const table = Int32Array.from({ length: S * perSeq }, (_, i) => i);
  const snap = () => ({ b: stream?.stats.bytesRead ?? 0, w: stream?.stats.waitMs ?? 0 });
  // prefill: prefillT tokens of sequence 0 in one step
  {
    const T = prefillT;
    const inp = {
      tokens: Int32Array.from({ length: T }, (_, i) => (i * 7919) % c.vocabSize), positions: Int32Array.from({ length: T }, (_, i) => i),
      slots: Int32Array.from({ length: T }, (_, i) => i), logitRows: Int32Array.from([T - 1]),
      attn: { numSeqs: 1, qStart: Int32Array.from([0, T]), ctxLen: Int32Array.from([T]), blockTables: table.subarray(0, perSeq), maxBlocks: perSeq },
    };
    m.forward(inp, kv); // warm
    const s0 = snap(), t0 = performance.now();
    m.forward(inp, kv);
    out.prefill = T / ((performance.now() - t0) / 1000);
    out.bytes.prefill = snap().b - s0.b; out.wait.prefill = snap().w - s0.w;
  }
  // decode: B sequences, one token each per step, at positions after a prefillT-token context
  for (const B of [1, 16]) {
    const qStart = Int32Array.from({ length: B + 1 }, (_, i) => i);
    const bt = table.subarray(0, B * perSeq);
    const step = (k: number) => {
      const pos = prefillT + k;
      m.forward({
        tokens: Int32Array.from({ length: B }, (_, i) => (i * 31 + k) % c.vocabSize), positions: new Int32Array(B).fill(pos),
        slots: Int32Array.from({ length: B }, (_, s) => s * perSeq * L + pos), logitRows: qStart.subarray(0, B),
        attn: { numSeqs: B, qStart, ctxLen: new Int32Array(B).fill(pos + 1), blockTables: bt, maxBlocks: perSeq },
      }, kv);
    };
    step(0);
    const s0 = snap(), t0 = performance.now();
    for (let k = 1; k <= steps; k++) step(k);
    const key = `decode${B}` as 'decode1' | 'decode16';
    out[key] = (B * steps) / ((performance.now() - t0) / 1000);
    out.bytes[key] = (snap().b - s0.b) / steps; out.wait[key] = (snap().w - s0.w) / steps;
  }
  stream?.dispose();
  return out;
}

async function loraStep(r: number): Promise<{ tok_s: number; bytes: number; wait: number }> {
  const loaded = await loadModel(model);
  const stream = r > 0 ? LayerStream.open(loaded, { offloadRatio: r }) : null;
  const c = loaded.config;
  let x = 99;
  const rnd = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const adapter = initLora(c, { rank: 16, alpha: 32, targets: LORA_TARGETS, rslora: false, dropout: 0 }, rnd);
  const m = LlamaTrainModel.fromTensors(c, loaded.tensors, be as TrainBackend, { adapter, full: false, checkpointActivations: true }, loaded.ropeFreqFactors);
  if (stream) m.attachStream(stream);
  const tokens = Int32Array.from({ length: seq }, () => Math.floor(rnd() * c.vocabSize));
  const b = { tokens, targets: Int32Array.from({ length: seq }, (_, i) => tokens[(i + 1) % seq]!), positions: Int32Array.from({ length: seq }, (_, i) => i), segStart: Int32Array.from([0, seq]) };
  m.forwardBackward(b, 1 / seq); // warm
  const b0 = stream?.stats.bytesRead ?? 0, w0 = stream?.stats.waitMs ?? 0;
  const n = Math.max(1, Math.floor(steps / 4));
  const t0 = performance.now();
  for (let i = 0; i < n; i++) { m.zeroGrad(); m.forwardBackward(b, 1 / seq); }
  const out = { tok_s: (seq * n) / ((performance.now() - t0) / 1000), bytes: ((stream?.stats.bytesRead ?? 0) - b0) / n, wait: ((stream?.stats.waitMs ?? 0) - w0) / n };
  stream?.dispose();
  return out;
}

const bw = diskBandwidth();
log(`disk bandwidth (native reader, second pass): ${(bw / 1e9).toFixed(2)} GB/s`);
const res = await inference(0);
const str = await inference(ratio);
const rows: Row[] = [];
for (const [k, name, per] of [['decode1', 'decode, batch 1', 1], ['decode16', 'decode, batch 16', 16], ['prefill', `prefill, ${prefillT} tokens`, prefillT]] as const) {
  const bytes = str.bytes[k]!;
  rows.push({ case: name, resident_tok_s: res[k], streamed_tok_s: str[k], streamed_bytes_per_step: bytes, ceiling_tok_s: bytes > 0 ? per * bw / bytes : Infinity, wait_ms_per_step: str.wait[k]! });
}
const lr = await loraStep(0), ls = await loraStep(ratio);
rows.push({ case: `LoRA step, ${seq} tokens, checkpointed`, resident_tok_s: lr.tok_s, streamed_tok_s: ls.tok_s, streamed_bytes_per_step: ls.bytes, ceiling_tok_s: ls.bytes > 0 ? seq * bw / ls.bytes : Infinity, wait_ms_per_step: ls.wait });

process.stdout.write(`floe streamed layers: ${model}, offload ratio ${ratio}, ${threads ?? 'all'} threads, disk ${(bw / 1e9).toFixed(2)} GB/s\n`);
process.stdout.write(`${'case'.padEnd(34)}${'resident tok/s'.padStart(16)}${'streamed tok/s'.padStart(16)}${'MB streamed/step'.padStart(18)}${'disk ceiling tok/s'.padStart(20)}${'of ceiling'.padStart(12)}${'wait ms/step'.padStart(14)}\n`);
for (const r of rows) {
  process.stdout.write(`${r.case.padEnd(34)}${r.resident_tok_s.toFixed(1).padStart(16)}${r.streamed_tok_s.toFixed(1).padStart(16)}${(r.streamed_bytes_per_step / 1e6).toFixed(1).padStart(18)}` +
    `${r.ceiling_tok_s.toFixed(1).padStart(20)}${(r.streamed_tok_s / r.ceiling_tok_s).toFixed(2).padStart(12)}${r.wait_ms_per_step.toFixed(1).padStart(14)}\n`);
}
const jsonOut = flag('json', '');
if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify({ model, ratio, threads: threads ?? null, disk_bytes_per_s: bw, rows }, null, 1) + '\n');
