// Decode profile: per-op time per token of single-stream decode, bytes and GB/s per matmul, against the measured
// read bandwidth (bench/harness/bandwidth.cpp) and the bandwidth ceiling (bandwidth ÷ weight bytes per token).
//
//   node --import tsx bench/decode-profile.ts [--shape 1b|small] [--dtype q8_0|bf16|f16|fp8] [--threads 2]
//                                             [--prompt 64] [--steps 16] [--fp8-block 128]
// The model is built in memory from random weights of the stored format (finite values; timing does not depend on
// them), no files. Each backend call is timed (wall and process CPU time; the CPU reading cost ~7 us a call on this
// VM, ~640 us of floe-brown's ~95-call step, and that lands in "js/other") through a wrapper (off
// everywhere else); "js/other" is the rest of the step (model glue). On a loaded machine wall times include
// preemption: compare the CPU columns (at 1 thread; at 2, CPU time includes the second thread's spin). FLOE_GEMV=0 runs the old M = 1 path (tiles) for before/after.
// Writes bench/results/decode-profile-<shape>-<dtype>-<threads>t-<gemv|tiles>.json.

import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { selectBackend } from '../src/backend/select.js';
import { defaultKvDtype } from '../src/model/generate.js';
import { KvCache } from '../src/model/kv-cache.js';
import { LlamaModel } from '../src/model/llama.js';
import { Tensor, type DType } from '../src/tensor/tensor.js';
import { SHAPES } from './shapes.js';
import { machineInfo, machineLine } from './machine.js';
import { matmulWeights, timedBackend } from './timed-backend.js';

process.stderr.write(`machine: ${machineLine()}\n`);

const HERE = path.dirname(new URL(import.meta.url).pathname);
function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1]! : def;
}
const shape = SHAPES[arg('shape', '1b')];
if (!shape) throw new Error(`--shape: one of ${Object.keys(SHAPES).join(', ')}`);
const DT: Record<string, DType> = { q8_0: 'q8_0', bf16: 'bf16', f16: 'f16', fp8: 'fp8_e4m3' };
const dtypeName = arg('dtype', 'q8_0');
const dtype = DT[dtypeName];
if (!dtype) throw new Error(`--dtype: one of ${Object.keys(DT).join(', ')}, got ${dtypeName}`);
const threads = Number(arg('threads', '2'));
const promptLen = Number(arg('prompt', '64'));
const steps = Number(arg('steps', shape.name === '1b' ? '16' : '64'));
const fp8Block = Number(arg('fp8-block', '128'));
const gemv = process.env.FLOE_GEMV !== '0';

// -------------------------------------------------------------------------------------------- random model

/** A random (N, C) weight in `dtype`: random bytes, with exponents / scales kept small and finite. */
function randomWeight(N: number, C: number): Tensor {
  switch (dtype) {
    case 'q8_0': {
      const b = randomFillSync(new Uint8Array(N * (C / 32) * 34));
      for (let i = 0; i < b.length; i += 34) { b[i] = 0; b[i + 1] = 0x14; } // f16 scale 2^-10
      return new Tensor(dtype, [N, C], b);
    }
    case 'bf16': case 'f16': {
      const h = new Uint16Array(randomFillSync(new Uint8Array(N * C * 2)).buffer);
      const base = dtype === 'bf16' ? 0x3c00 : 0x2000;  // |w| ~ 2^-7
      for (let i = 0; i < h.length; i++) h[i] = base | (h[i]! & 0x83ff);
      return new Tensor(dtype, [N, C], new Uint8Array(h.buffer));
    }
    case 'fp8_e4m3': {
      const b = randomFillSync(new Uint8Array(N * C));
      for (let i = 0; i < b.length; i++) b[i] = b[i]! & 0xbf;  // exponent <= 7: finite, no NaN
      const br = fp8Block || N, bc = fp8Block || C;
      const scale = new Float32Array(Math.ceil(N / br) * Math.ceil(C / bc)).fill(0.01);
      return new Tensor(dtype, [N, C], b, scale, [br, bc]);
    }
    default: throw new Error(`no random ${dtype}`);
  }
}

const cfg = shape.config;
const { hiddenSize: D, intermediateSize: F, numHeads: H, numKvHeads: K, headDim: E } = cfg;
const tensors = new Map<string, Tensor>();
const role = new Map<Tensor, string>();  // weight -> projection name
const ones = (n: number): Tensor => new Tensor('f32', [n], new Uint8Array(new Float32Array(n).fill(1).buffer));
const add = (name: string, r: string, t: Tensor): void => { tensors.set(name, t); role.set(t, r); };
const t0 = performance.now();
add('model.embed_tokens.weight', 'lm_head', randomWeight(cfg.vocabSize, D));
tensors.set('model.norm.weight', ones(D));
for (let i = 0; i < cfg.numLayers; i++) {
  const p = `model.layers.${i}.`;
  tensors.set(p + 'input_layernorm.weight', ones(D));
  tensors.set(p + 'post_attention_layernorm.weight', ones(D));
  add(p + 'self_attn.q_proj.weight', 'q_proj', randomWeight(H * E, D));
  add(p + 'self_attn.k_proj.weight', 'k_proj', randomWeight(K * E, D));
  add(p + 'self_attn.v_proj.weight', 'v_proj', randomWeight(K * E, D));
  add(p + 'self_attn.o_proj.weight', 'o_proj', randomWeight(D, H * E));
  add(p + 'mlp.gate_proj.weight', 'gate_proj', randomWeight(F, D));
  add(p + 'mlp.up_proj.weight', 'up_proj', randomWeight(F, D));
  add(p + 'mlp.down_proj.weight', 'down_proj', randomWeight(D, F));
}
const buildMs = performance.now() - t0;

// ------------------------------------------------------------------------------------------ per-op timing

interface OpStat { calls: number; ns: bigint; cpuUs: number; bytes: number }
const stats = new Map<string, OpStat>();
let timing = false;
const inner = selectBackend('native', threads);
const bytesOf = (w: Tensor): number => w.data.byteLength + (w.scale?.byteLength ?? 0);
/** The backend with every method call timed into `stats` while `timing` is set. */
const timed = timedBackend(inner, () => timing, (method, a, ns, cpuUs) => {
  // a fused q/k/v call is keyed by its weights' roles joined
  const ws = matmulWeights(method, a);
  const key = ws ? `matmul ${ws.map((w) => role.get(w) ?? `${w.rows}x${w.cols}`).join('+')}` : method;
  const st = stats.get(key) ?? { calls: 0, ns: 0n, cpuUs: 0, bytes: 0 };
  st.calls++;
  st.ns += ns;
  st.cpuUs += cpuUs;
  st.bytes += ws ? ws.reduce((b, w) => b + bytesOf(w), 0) : 0;
  stats.set(key, st);
});

// --------------------------------------------------------------------------------------------- bandwidth

function probeBandwidth(): number {
  const exe = path.join(HERE, '.cache', 'bandwidth');
  const src = path.join(HERE, 'harness', 'bandwidth.cpp');
  if (!fs.existsSync(exe) || fs.statSync(exe).mtimeMs < fs.statSync(src).mtimeMs) {
    fs.mkdirSync(path.dirname(exe), { recursive: true });
    const c = spawnSync('g++', ['-O3', '-march=native', '-std=c++17', '-pthread', '-o', exe, src], { encoding: 'utf8' });
    if (c.status !== 0) throw new Error(`g++ bandwidth.cpp failed: ${c.stderr}`);
  }
  const r = spawnSync(exe, ['--mib', '1024', '--threads', String(threads), '--reps', '5'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bandwidth probe failed: ${r.stderr}`);
  return (JSON.parse(r.stdout.trim()) as { gbps: number }).gbps;
}

// ------------------------------------------------------------------------------------------------ decode

// as openModel does (q8_0 → q8_0r16 on AVX-512 unless FLOE_Q8_REPACK=0; bf16 / f16 / fp8 → *r16 unless
// FLOE_R16_REPACK=0); the repacked tensors keep their roles
const before = new Map(tensors);
inner.prepareWeights?.(tensors);
for (const [name, t] of tensors) if (t !== before.get(name)) role.set(t, role.get(before.get(name)!)!);
const model = LlamaModel.fromTensors(cfg, tensors, timed);
const BLOCK = 16;
const total = promptLen + steps + 1;
const numBlocks = Math.ceil(total / BLOCK);
const blockTable = Int32Array.from({ length: numBlocks }, (_, i) => i);
const kv = new KvCache(cfg.numLayers, numBlocks, BLOCK, K, E, defaultKvDtype(model));
const step = (tokens: Int32Array, start: number): Float32Array => {
  const T = tokens.length;
  const positions = Int32Array.from({ length: T }, (_, i) => start + i);
  return model.forward({
    tokens, positions, slots: positions,
    attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(start + T), blockTables: blockTable, maxBlocks: numBlocks },
    logitRows: Int32Array.of(T - 1),
  }, kv);
};
function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

const gbps = probeBandwidth();
const prompt = Int32Array.from({ length: promptLen }, (_, i) => (i * 7919) % cfg.vocabSize);
let next = argmax(step(prompt, 0));  // prefill; also pages in every weight
const one = new Int32Array(1);
timing = true;
let argmaxNs = 0n;
const d0 = process.hrtime.bigint();
const cpu0 = process.cpuUsage();
for (let i = 0; i < steps; i++) {
  one[0] = next;
  const logits = step(one, promptLen + i);
  const a0 = process.hrtime.bigint();
  next = argmax(logits);
  argmaxNs += process.hrtime.bigint() - a0;
}
const wallNs = process.hrtime.bigint() - d0;
const cpu = process.cpuUsage(cpu0);
timing = false;

const perTokMs = (ns: bigint): number => Number(ns) / 1e6 / steps;
const weightBytes = [...role.keys()].reduce((s, w) => s + bytesOf(w), 0);
interface OpRow {
  op: string; ms_per_token: number; cpu_ms_per_token: number | null; calls_per_token: number; mb_per_token: number;
  gbps: number | null; gbps_per_cpu_s: number | null;
}
const ops: OpRow[] = [...stats.entries()].sort((a, b) => Number(b[1].ns - a[1].ns)).map(([op, st]) => ({
  op,
  ms_per_token: perTokMs(st.ns),
  cpu_ms_per_token: st.cpuUs / 1e3 / steps,
  calls_per_token: st.calls / steps,
  mb_per_token: st.bytes / steps / 1e6,
  gbps: st.bytes > 0 ? st.bytes / Number(st.ns) : null,
  gbps_per_cpu_s: st.bytes > 0 && st.cpuUs > 0 ? st.bytes / st.cpuUs / 1e3 : null,
}));
const inOps = [...stats.values()].reduce((s, st) => s + st.ns, 0n);
ops.push({ op: 'argmax (sampling)', ms_per_token: perTokMs(argmaxNs), cpu_ms_per_token: null, calls_per_token: 1, mb_per_token: 0, gbps: null, gbps_per_cpu_s: null });
ops.push({ op: 'js/other', ms_per_token: perTokMs(wallNs - inOps - argmaxNs), cpu_ms_per_token: null, calls_per_token: 0, mb_per_token: 0, gbps: null, gbps_per_cpu_s: null });
const tokMs = perTokMs(wallNs);
const matmulBytes = [...stats.entries()].filter(([k]) => k.startsWith('matmul')).reduce((s, [, st]) => s + st.bytes, 0) / steps;
const out = {
  shape: shape.name, dtype: dtypeName, threads, gemv, prompt: promptLen, steps,
  host: { ...machineInfo(), loadavg_at_end: os.loadavg() },
  build_ms: buildMs, weight_bytes: weightBytes,
  bandwidth_gbps: gbps,
  matmul_bytes_per_token: matmulBytes,
  ceiling_tps: gbps * 1e9 / matmulBytes,
  decode_tps: 1000 / tokMs,
  of_ceiling: (1000 / tokMs) / (gbps * 1e9 / matmulBytes),
  ms_per_token: tokMs,
  cpu_ms_per_token: (cpu.user + cpu.system) / 1e3 / steps,
  ops,
};
const file = path.join(HERE, 'results', `decode-profile-${shape.name}-${dtypeName}-${threads}t-${gemv ? 'gemv' : 'tiles'}.json`);
fs.writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
console.log(`${shape.name} ${dtypeName} ${threads}t ${gemv ? 'gemv' : 'tiles'}: ${out.decode_tps.toFixed(2)} tok/s = ${out.of_ceiling.toFixed(2)} of ceiling ` +
  `(${gbps.toFixed(1)} GB/s ÷ ${(matmulBytes / 1e6).toFixed(1)} MB/token), ${tokMs.toFixed(2)} ms/token, load ${os.loadavg()[0]!.toFixed(1)}`);
for (const o of ops) {
  console.log(`  ${o.op.padEnd(20)} ${o.ms_per_token.toFixed(3).padStart(8)} ms ${(100 * o.ms_per_token / tokMs).toFixed(1).padStart(5)}%` +
    (o.cpu_ms_per_token !== null ? `  cpu ${o.cpu_ms_per_token.toFixed(3).padStart(7)} ms` : '') +
    (o.gbps !== null ? `  ${o.mb_per_token.toFixed(1).padStart(7)} MB  ${o.gbps.toFixed(1).padStart(5)} GB/s  ${o.gbps_per_cpu_s?.toFixed(1).padStart(5)} GB/cpu-s` : ''));
}
console.log(`-> ${path.relative(process.cwd(), file)}`);
