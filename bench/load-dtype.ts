// Start-up cost of `--dtype fp8|bf16`: loadModel(dir, { dtype }) on a random-weight HF checkpoint of the 1B shape
// stored in f32, bf16 or f16, with the conversion in native code (default) against the JavaScript one
// (FLOE_NATIVE_CONVERT=0), each in a fresh child process, alternating, after the file was read once into the page
// cache (so the figure is the conversion, not the disk). Prints ns a converted value and the wall time of the load, and
// the child's peak RSS and what stays resident after it (the mapped file, anonymous memory).
//
// usage: node --import tsx bench/load-dtype.ts [--shape 1b|small] [--src f32,bf16,f16] [--dtype fp8,bf16] [--reps 3]
//          [--modes native,js] [--out FILE.json] [--gen-only]
// --src q8_0: the shape's q8_0 GGUF (gguf-gen.ts), with --dtype fp8.
// The native conversion runs on the addon's thread pool at its default size (the host's cores).

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LlamaConfig } from '../src/model/config.js';
import { f32ToBf16, f32ToF16 } from '../src/tensor/codecs.js';
import { ensureGguf, fillIndices, NORMALS, Rng, STD, TABLE } from './gguf-gen.js';
import { machineInfo, machineLine } from './machine.js';
import { SHAPES } from './shapes.js';

type HfSrc = 'f32' | 'bf16' | 'f16';
type Src = HfSrc | 'q8_0'; // q8_0: a GGUF (bench/gguf-gen.ts), converted to fp8 only
const HERE = path.dirname(fileURLToPath(import.meta.url));
const CACHE = path.join(HERE, '.cache');

interface Planned { readonly name: string; readonly shape: readonly number[] }

function plan(c: LlamaConfig): Planned[] {
  const { hiddenSize: D, intermediateSize: F, numHeads: H, numKvHeads: K, headDim: E, vocabSize: V } = c;
  const out: Planned[] = [{ name: 'model.embed_tokens.weight', shape: [V, D] }];
  for (let i = 0; i < c.numLayers; i++) {
    const l = `model.layers.${i}.`;
    out.push({ name: l + 'input_layernorm.weight', shape: [D] });
    out.push({ name: l + 'self_attn.q_proj.weight', shape: [H * E, D] });
    out.push({ name: l + 'self_attn.k_proj.weight', shape: [K * E, D] });
    out.push({ name: l + 'self_attn.v_proj.weight', shape: [K * E, D] });
    out.push({ name: l + 'self_attn.o_proj.weight', shape: [D, H * E] });
    out.push({ name: l + 'post_attention_layernorm.weight', shape: [D] });
    out.push({ name: l + 'mlp.gate_proj.weight', shape: [F, D] });
    out.push({ name: l + 'mlp.up_proj.weight', shape: [F, D] });
    out.push({ name: l + 'mlp.down_proj.weight', shape: [D, F] });
  }
  out.push({ name: 'model.norm.weight', shape: [D] });
  if (!c.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [V, D] });
  return out;
}

function hfConfig(c: LlamaConfig, src: HfSrc): Record<string, unknown> {
  const s = c.ropeScaling;
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: c.vocabSize, hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize, num_hidden_layers: c.numLayers, num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads, head_dim: c.headDim, hidden_act: 'silu', rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: s === null ? null : s.type === 'llama3'
      ? { rope_type: 'llama3', factor: s.factor, low_freq_factor: s.lowFreqFactor, high_freq_factor: s.highFreqFactor, original_max_position_embeddings: s.originalMaxPositionEmbeddings }
      : { rope_type: 'linear', factor: s.factor },
    max_position_embeddings: c.maxPositionEmbeddings, tie_word_embeddings: c.tieWordEmbeddings,
    torch_dtype: src === 'f32' ? 'float32' : src === 'bf16' ? 'bfloat16' : 'float16',
  };
}

/** A random checkpoint of shape c in dtype src (weights ~ N(0, 0.02²) through a table of normals), streamed to disk. */
function ensureDir(shape: string, c: LlamaConfig, src: HfSrc): string {
  const dir = path.join(CACHE, `${shape}-hf-${src}-v1`);
  if (fs.existsSync(path.join(dir, 'config.json'))) return dir;
  const t0 = performance.now();
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const width = src === 'f32' ? 4 : 2;
  const tensors = plan(c);
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', producer: 'floe bench/load-dtype.ts' } };
  const ST = { f32: 'F32', bf16: 'BF16', f16: 'F16' } as const;
  let off = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const dt = t.shape.length === 1 ? 'F32' : ST[src];
    const bytes = n * (t.shape.length === 1 ? 4 : width);
    header[t.name] = { dtype: dt, shape: t.shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const enc16 = new Uint16Array(TABLE); // the table's normals × STD, encoded once
  const enc32 = new Float32Array(TABLE);
  for (let i = 0; i < TABLE; i++) {
    enc32[i] = NORMALS[i]! * STD;
    enc16[i] = src === 'bf16' ? f32ToBf16(enc32[i]!) : f32ToF16(enc32[i]!);
  }
  const rng = new Rng(11);
  const fd = fs.openSync(path.join(tmp, 'model.safetensors'), 'w');
  try {
    const write = (b: Uint8Array): void => { let done = 0; while (done < b.length) done += fs.writeSync(fd, b, done, b.length - done); };
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    write(len);
    write(Buffer.from(json, 'utf8'));
    const CHUNK = 1 << 20;
    const idx = new Uint16Array(CHUNK);
    const b32 = new Float32Array(CHUNK), b16 = new Uint16Array(CHUNK);
    for (const t of tensors) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (t.shape.length === 1) { write(new Uint8Array(new Float32Array(n).fill(1).buffer)); continue; }
      for (let e = 0; e < n; e += CHUNK) {
        const m = Math.min(CHUNK, n - e);
        fillIndices(rng, idx.subarray(0, m));
        if (width === 4) { for (let i = 0; i < m; i++) b32[i] = enc32[idx[i]!]!; write(new Uint8Array(b32.buffer, 0, m * 4)); }
        else { for (let i = 0; i < m; i++) b16[i] = enc16[idx[i]!]!; write(new Uint8Array(b16.buffer, 0, m * 2)); }
      }
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(hfConfig(c, src), null, 2) + '\n');
  fs.renameSync(tmp, dir);
  console.error(`wrote ${dir} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return dir;
}

const gb = (b: number) => (b / 2 ** 30).toFixed(2);

/** Child: one timed load, printed as a JSON line. */
async function child(dir: string, dtype: 'fp8' | 'bf16'): Promise<void> {
  const { loadModel } = await import('../src/formats/load.js');
  const probe = await loadModel(dir); // headers only: what the conversion will touch
  let converted = 0;
  const { convertsToBf16, LINEAR_WEIGHT } = await import('../src/formats/load.js');
  for (const [name, t] of probe.tensors) if (dtype === 'fp8' ? LINEAR_WEIGHT.test(name) : convertsToBf16(t)) converted += t.numel;
  const t0 = performance.now();
  const m = await loadModel(dir, { dtype });
  const ms = performance.now() - t0;
  let held = 0;
  for (const t of m.tensors.values()) held += t.data.byteLength;
  // memory after the load (kB in /proc/self/status): the peak, and how much of what stays resident is the mapped file
  const kb = (k: string) => Number(/\d+/.exec(fs.readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith(`${k}:`)) ?? '0')![0]) * 1024;
  process.stdout.write(JSON.stringify({ ms, converted, held_bytes: held, ns_per_value: (ms * 1e6) / converted, peak_rss: kb('VmHWM'), rss_file: kb('RssFile'), rss_anon: kb('RssAnon') }) + '\n');
}

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : def;
}

async function main(): Promise<void> {
  if (process.argv.includes('--child')) return child(arg('--dir', ''), arg('--dtype', 'fp8') as 'fp8' | 'bf16');
  const shape = arg('--shape', '1b');
  const c = SHAPES[shape]?.config;
  if (!c) throw new Error(`unknown --shape ${shape}; known: ${Object.keys(SHAPES).join(', ')}`);
  const srcs = arg('--src', 'f32,bf16,f16').split(',') as Src[];
  const dtypes = arg('--dtype', 'fp8,bf16').split(',') as ('fp8' | 'bf16')[];
  const modes = arg('--modes', 'native,js').split(',');
  const reps = Number(arg('--reps', '3'));
  const threads = (await import('node:os')).cpus().length;
  const out = arg('--out', '');
  const mi = machineInfo();
  console.log(machineLine(mi));
  console.log(`loadModel(dir, { dtype }) on a random ${shape} checkpoint, pool of ${threads} threads, page cache warm, ${reps} alternations (native = default, js = FLOE_NATIVE_CONVERT=0)`);
  const rows: Record<string, unknown>[] = [];
  console.log('src   dtype  mode     load s (each rep)            ns/value  held GB  peak RSS GB  then file / anon GB');
  for (const src of srcs) {
    const dir = src === 'q8_0' ? ensureGguf(CACHE, shape, c, 'q8_0') : ensureDir(shape, c, src);
    const file = src === 'q8_0' ? dir : path.join(dir, 'model.safetensors');
    if (process.argv.includes('--gen-only')) continue;
    for (const dtype of dtypes) {
      if (dtype === 'bf16' && (src === 'bf16' || src === 'q8_0')) continue; // nothing to convert (q8_0 stays q8_0)
      const res: Record<string, { ms: number; ns_per_value: number; held_bytes: number; peak_rss: number; rss_file: number; rss_anon: number }[]> = {};
      for (let r = 0; r < reps; r++) {
        for (const mode of modes) {
          // warm the page cache before every load: a native conversion hands its source pages back (MADV_PAGEOUT)
          spawnSync('cat', [file], { stdio: ['ignore', 'ignore', 'inherit'] });
          const env = { ...process.env, ...(mode === 'js' ? { FLOE_NATIVE_CONVERT: '0' } : {}) };
          const p = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', '--dir', dir, '--dtype', dtype], { env, encoding: 'utf8', maxBuffer: 1 << 20 });
          if (p.status !== 0) throw new Error(`child ${src} ${dtype} ${mode} failed: ${p.stderr}`);
          (res[mode] ??= []).push(JSON.parse(p.stdout.trim().split('\n').at(-1)!));
        }
      }
      for (const mode of modes) {
        const xs = res[mode]!;
        const best = xs.reduce((a, b) => (a.ms < b.ms ? a : b));
        console.log(`${src.padEnd(5)} ${dtype.padEnd(6)} ${mode.padEnd(8)} ${xs.map((x) => (x.ms / 1000).toFixed(2)).join(', ').padEnd(28)} ${best.ns_per_value.toFixed(2).padStart(8)}  ${(best.held_bytes / 2 ** 30).toFixed(2).padStart(7)}  ${gb(Math.max(...xs.map((x) => x.peak_rss))).padStart(11)}  ${gb(Math.max(...xs.map((x) => x.rss_file)))} / ${gb(Math.max(...xs.map((x) => x.rss_anon)))}`);
        rows.push({ src, dtype, mode, load_s: xs.map((x) => x.ms / 1000), best_ns_per_value: best.ns_per_value, held_bytes: best.held_bytes,
          peak_rss: xs.map((x) => x.peak_rss), rss_file: xs.map((x) => x.rss_file), rss_anon: xs.map((x) => x.rss_anon) });
      }
      if (res.native && res.js) {
        const b = (m: string) => Math.min(...res[m]!.map((x) => x.ms));
        console.log(`${''.padEnd(13)} js ÷ native (best): ${(b('js') / b('native')).toFixed(1)}×`);
      }
    }
  }
  if (out) fs.writeFileSync(out, JSON.stringify({ machine: mi, shape, pool_threads: threads, reps, rows }, null, 2) + '\n');
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
