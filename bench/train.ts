// LoRA training benchmark: floe tokens/s and peak RSS per config vs PyTorch CPU, against the measured bf16 FLOP ceiling.
//
// usage: node --import tsx bench/train.ts [--shapes small,1b] [--bases bf16,fp8] [--ckpt off,on] [--threads 2]
//          [--seq 512] [--rank 16] [--steps N] [--torch-steps N] [--warmup 1] [--torch-dtypes f32,bf16] [--no-torch] [--no-torch-ckpt]
//          [--quick] [--out FILE]
// Every measurement runs in its own child process (bench/train-run.ts, scripts/torch_lora_bench.py), so each peak
// RSS is one config's alone; see bench/README.md ("train.ts").

import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureFp8Dir } from './fp8-gen.js';
import { ensureGguf } from './gguf-gen.js';
import { SHAPES, weightCounts } from './shapes.js';
import { ggufToHfName, readGguf } from '../src/formats/gguf.js';
import type { LlamaConfig } from '../src/model/config.js';
import { amxTilesOn, buildPeakProbe, machineInfo, machineLine } from './machine.js';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(BENCH);
const CACHE_DIR = path.join(BENCH, '.cache');
const CHILD_TIMEOUT_MS = 900_000;
/** The Python that runs the PyTorch peer: Debian's (apt install python3-torch), or FLOE_PYTHON. */
const PY = process.env.FLOE_PYTHON ?? '/usr/bin/python3';
type Base = 'bf16' | 'fp8';

interface Options {
  shapes: string[];
  bases: Base[];
  ckpt: boolean[];
  threads: number[];
  seq: number;
  rank: number;
  steps: number | null; // null: 5 for small, 3 for 1b
  torchSteps: number | null; // null: 3 for small, 2 for 1b (PyTorch 1B steps take tens of seconds)
  warmup: number;
  torchDtypes: string[];
  torch: boolean;
  torchCkpt: boolean;
  out: string | null;
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = {
    shapes: ['small', '1b'], bases: ['bf16', 'fp8'], ckpt: [false, true], threads: [2], seq: 512, rank: 16, steps: null,
    torchSteps: null, warmup: 1, torchDtypes: ['f32', 'bf16'], torch: true, torchCkpt: true, out: null,
  };
  const list = (v: string | undefined, flag: string): string[] => {
    if (!v) throw new Error(`${flag} needs a comma-separated value`);
    return v.split(',').map((s) => s.trim()).filter(Boolean);
  };
  const int = (v: string | undefined, flag: string, min = 1): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`${flag} needs an integer >= ${min}, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    switch (a) {
      case '--shapes': o.shapes = list(v, a); i++; break;
      case '--bases': o.bases = list(v, a) as Base[]; i++; break;
      case '--ckpt': o.ckpt = list(v, a).map((s) => {
        if (s !== 'on' && s !== 'off') throw new Error(`--ckpt takes on,off; got ${s}`);
        return s === 'on';
      }); i++; break;
      case '--threads': o.threads = list(v, a).map((t) => int(t, a)); i++; break;
      case '--seq': o.seq = int(v, a, 2); i++; break;
      case '--rank': o.rank = int(v, a); i++; break;
      case '--steps': o.steps = int(v, a); i++; break;
      case '--torch-steps': o.torchSteps = int(v, a); i++; break;
      case '--warmup': o.warmup = int(v, a, 0); i++; break;
      case '--torch-dtypes': o.torchDtypes = list(v, a); i++; break;
      case '--no-torch': o.torch = false; break;
      case '--no-torch-ckpt': o.torchCkpt = false; break;
      case '--quick': o.seq = 64; o.steps = 2; o.torchSteps = 1; break;
      case '--out': if (!v) throw new Error('--out needs a file'); o.out = v; i++; break;
      default: throw new Error(`unknown argument ${a}; see the usage line at the top of bench/train.ts`);
    }
  }
  for (const s of o.shapes) if (!SHAPES[s]) throw new Error(`unknown shape "${s}"; known: ${Object.keys(SHAPES).join(', ')}`);
  for (const b of o.bases) if (b !== 'bf16' && b !== 'fp8') throw new Error(`unknown base "${b}"; known: bf16, fp8`);
  for (const d of o.torchDtypes) if (d !== 'f32' && d !== 'bf16') throw new Error(`unknown torch dtype "${d}"; known: f32, bf16`);
  return o;
}

// ---------------------------------------------------------------- child processes

type Json = Record<string, unknown>;

/** Runs a command and returns the last JSON line it printed, or throws with its stderr tail. */
function runJson(cmd: string, args: readonly string[], what: string): Json {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', timeout: CHILD_TIMEOUT_MS, maxBuffer: 1 << 26 });
  if (r.error) throw new Error(`${what}: ${r.error.message}`);
  if (r.status !== 0) {
    const tail = (r.stderr || r.stdout || '').trim().split('\n').slice(-6).join('\n');
    throw new Error(`${what}: exit ${r.status ?? r.signal}: ${tail}`);
  }
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('{'));
  if (lines.length === 0) throw new Error(`${what}: printed no JSON result`);
  return JSON.parse(lines[lines.length - 1]!) as Json;
}

const START = performance.now();
const log = (s: string): void => { process.stderr.write(`[${((performance.now() - START) / 1000).toFixed(0).padStart(4)} s] ${s}\n`); };

// ---------------------------------------------------------------- inputs

/** Deterministic token ids in [0, V), n of them (xorshift32). */
function tokensFile(V: number, n: number): string {
  const file = path.join(CACHE_DIR, `train-tokens-${V}-${n}.txt`);
  if (!fs.existsSync(file)) {
    let x = 2463534242;
    const ids: number[] = [];
    while (ids.length < n) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      ids.push(x % V);
    }
    fs.writeFileSync(file, ids.join(' ') + '\n');
  }
  return file;
}

/** Offsets, shapes, ggml types and q/k permutation of each HF-named tensor of a GGUF, for the PyTorch child. */
async function torchManifest(file: string): Promise<string> {
  const out = file.replace(/\.gguf$/, '.torch-manifest.json');
  if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= fs.statSync(file).mtimeMs) return out;
  const g = await readGguf(file);
  const tensors: Json = {};
  for (const [name, info] of g.tensors) {
    const hf = ggufToHfName(name);
    if (!hf) continue;
    const permute = name.endsWith('.attn_q.weight') ? 'q' : name.endsWith('.attn_k.weight') ? 'k' : null;
    tensors[hf] = { offset: g.dataOffset + info.offset, shape: [...info.dims].reverse(), type: info.type, permute };
  }
  fs.writeFileSync(out, JSON.stringify({ file: path.resolve(file), tensors }) + '\n');
  return out;
}

/** Parameters in matmuls per token: layer matrices + the head (the tied embedding counted once) + norms. */
function paramCount(c: LlamaConfig): number {
  const w = weightCounts(c);
  return w.layerMatrices + w.head + w.norms;
}


const fmt = (x: number | undefined | null, d = 1): string => (x === undefined || x === null || !Number.isFinite(x) ? '—' : x.toFixed(d));
const gb = (b: unknown): string => (typeof b === 'number' ? (b / 1e9).toFixed(2) : '—');
const num = (x: unknown): number | undefined => (typeof x === 'number' && Number.isFinite(x) ? x : undefined);
const ratio = (a: unknown, b: unknown): number | undefined => {
  const p = num(a), q = num(b);
  return p !== undefined && q ? p / q : undefined;
};

// ---------------------------------------------------------------- main

interface FloeRow {
  shape: string;
  base: Base;
  base_detail: string;
  ckpt: boolean;
  threads: number;
  floe?: Json;
  torch_ref?: { dtype: string; ckpt: boolean; tokens_per_s?: number; peak_rss?: number };
  torch_f32?: { tokens_per_s?: number; peak_rss?: number }; // PyTorch f32 without checkpointing
  flops_per_token: number;
  ratios?: Record<string, number | undefined>;
  errors: string[];
}

async function main(): Promise<void> {
  log(`machine: ${machineLine()}`);
  const opts = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const notes: string[] = [];
  log(`floe train bench: shapes ${opts.shapes.join(',')}, bases ${opts.bases.join(',')}, ckpt ${opts.ckpt.map((c) => (c ? 'on' : 'off')).join(',')}, threads ${opts.threads.join(',')}, seq ${opts.seq}, rank ${opts.rank}`);

  // bf16 FLOP ceiling first, on a quiet machine: of the ISA floe's GEMMs run on (AMX tiles where the host has them
  // and FLOE_AMX does not turn them off, else vdpbf16ps)
  const amx = amxTilesOn();
  const peak: Record<number, Json> = {};
  try {
    const probe = buildPeakProbe();
    for (const n of opts.threads) {
      peak[n] = runJson(probe, ['--threads', String(n), '--ms', '300', '--reps', '5', ...(amx ? ['--amx'] : [])], `bf16 peak probe (${n} threads)`);
      log(`bf16 ceiling, ${n} thread(s): ${fmt(num(peak[n]!.gflops))} GFLOPS (${String(peak[n]!.isa)})`);
    }
  } catch (e) { notes.push((e as Error).message); log((e as Error).message); }

  const hasTorch = opts.torch && fs.existsSync(PY) && spawnSync(PY, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
  if (opts.torch && !hasTorch) notes.push(`PyTorch skipped: ${PY} cannot import torch (apt install python3-torch)`);

  const rows: FloeRow[] = [];
  const torchRuns: Json[] = [];
  for (const shapeName of opts.shapes) {
    const c = SHAPES[shapeName]!.config;
    const steps = opts.steps ?? (shapeName === '1b' ? 3 : 5);
    const tokens = tokensFile(c.vocabSize, opts.seq + 1);
    const gguf = ensureGguf(CACHE_DIR, shapeName, c, 'bf16', log);
    const fp8Dir = opts.bases.includes('fp8') ? ensureFp8Dir(CACHE_DIR, shapeName, c, log) : null;
    const N = paramCount(c);
    const torchSteps = opts.torchSteps ?? (shapeName === '1b' ? 2 : 3);
    const common = ['--seq', String(opts.seq), '--rank', String(opts.rank), '--warmup', String(opts.warmup)];

    for (const n of opts.threads) {
      // PyTorch: every precision without checkpointing, then the faster one with it
      const torchFor: Json[] = [];
      if (hasTorch) {
        const manifest = await torchManifest(gguf);
        const runTorch = (dtype: string, ckpt: boolean): void => {
          const what = `PyTorch ${shapeName} ${dtype}${ckpt ? ' ckpt' : ''} ${n}t`;
          try {
            const r = runJson(PY, [path.join(ROOT, 'scripts', 'torch_lora_bench.py'), '--config', JSON.stringify(c), '--manifest', manifest,
              '--tokens', tokens, '--dtype', dtype, '--threads', String(n), ...common, '--steps', String(torchSteps), ...(ckpt ? ['--ckpt'] : [])], what);
            r.shape = shapeName;
            torchFor.push(r);
            torchRuns.push(r);
            log(`  ${what}: ${fmt(num(r.tokens_per_s))} tok/s, peak RSS ${gb(r.peak_rss)} GB`);
          } catch (e) { notes.push((e as Error).message); log(`  ${(e as Error).message}`); }
        };
        for (const d of opts.torchDtypes) runTorch(d, false);
        const fastest = torchFor.reduce<Json | undefined>((b, r) => (!b || num(r.tokens_per_s)! > num(b.tokens_per_s)! ? r : b), undefined);
        if (fastest && opts.torchCkpt && opts.ckpt.includes(true)) runTorch(String(fastest.dtype), true);
      }
      const torchRef = (ckpt: boolean): FloeRow['torch_ref'] => {
        const plain = torchFor.filter((r) => !r.ckpt);
        const best = plain.reduce<Json | undefined>((b, r) => (!b || num(r.tokens_per_s)! > num(b.tokens_per_s)! ? r : b), undefined);
        if (!best) return undefined;
        const same = torchFor.find((r) => r.ckpt === ckpt && r.dtype === best.dtype) ?? best;
        return { dtype: String(same.dtype), ckpt: same.ckpt === true, tokens_per_s: num(same.tokens_per_s), peak_rss: num(same.peak_rss) };
      };

      for (const base of opts.bases) {
        for (const ckpt of opts.ckpt) {
          const row: FloeRow = {
            shape: shapeName, base, ckpt, threads: n, errors: [],
            base_detail: base === 'bf16' ? 'bf16 GGUF' : 'fp8 e4m3, one scale per row, every matrix (embedding/head too)',
            flops_per_token: (ckpt ? 6 : 4) * N,
          };
          rows.push(row);
          const what = `floe ${shapeName} ${base}${ckpt ? ' ckpt' : ''} ${n}t`;
          try {
            row.floe = runJson(process.execPath, ['--import', 'tsx', path.join(BENCH, 'train-run.ts'), base === 'bf16' ? gguf : fp8Dir!, tokens,
              '--threads', String(n), ...common, '--steps', String(steps), ...(ckpt ? ['--ckpt'] : [])], what);
            log(`  ${what}: ${fmt(num(row.floe.tokens_per_s))} tok/s, peak RSS ${gb(row.floe.peak_rss)} GB, weights ${gb(row.floe.weight_bytes)} GB`);
          } catch (e) { row.errors.push((e as Error).message); log(`  ${(e as Error).message}`); }
          row.torch_ref = torchRef(ckpt);
          const f32 = torchFor.find((t) => t.dtype === 'f32' && !t.ckpt);
          if (f32) row.torch_f32 = { tokens_per_s: num(f32.tokens_per_s), peak_rss: num(f32.peak_rss) };
        }
      }
    }
  }

  // ratios
  for (const r of rows) {
    const tps = num(r.floe?.tokens_per_s);
    const ceil = num(peak[r.threads]?.gflops);
    const bf16Row = rows.find((x) => x.shape === r.shape && x.base === 'bf16' && x.ckpt === r.ckpt && x.threads === r.threads);
    r.ratios = {
      floe_over_torch: ratio(tps, r.torch_ref?.tokens_per_s),
      achieved_gflops: tps !== undefined ? (tps * r.flops_per_token) / 1e9 : undefined,
      ceiling_fraction: tps !== undefined && ceil ? (tps * r.flops_per_token) / 1e9 / ceil : undefined,
      rss_floe_over_torch: ratio(r.floe?.peak_rss, r.torch_ref?.peak_rss),
      rss_floe_over_torch_f32: ratio(r.floe?.peak_rss, r.torch_f32?.peak_rss),
      fp8_speed_over_bf16: r.base === 'fp8' ? ratio(tps, bf16Row?.floe?.tokens_per_s) : undefined,
      fp8_weights_over_bf16: r.base === 'fp8' ? ratio(r.floe?.weight_bytes, bf16Row?.floe?.weight_bytes) : undefined,
      // FLOPs per CPU-second (floe's summed over threads, incl. pool spin) ÷ the probe's per thread: less sensitive to a busy machine
      ceiling_fraction_cpu_time: ratio(ratio(opts.seq * r.flops_per_token, num(r.floe?.cpu_ms_per_step)), (num(peak[r.threads]?.gflops_per_cpu_time)! / r.threads) * 1e6),
    };
  }
  // a busy machine: a child got well under its threads' share of wall time, or the probe's wall rate fell short
  const busy = (what: string, cpuMs: unknown, tps: unknown, threads: number): void => {
    const c = num(cpuMs), t = num(tps);
    if (c === undefined || !t) return;
    const util = c / (threads * ((opts.seq / t) * 1000));
    if (util < 0.8) notes.push(`${what}: used ${(100 * util).toFixed(0)}% of ${threads} thread(s)' wall time: the machine was busy, timings are low`);
  };
  for (const r of rows) busy(`floe ${r.shape} ${r.base}${r.ckpt ? ' ckpt' : ''} ${r.threads}t`, r.floe?.cpu_ms_per_step, r.floe?.mean_tokens_per_s, r.threads);
  for (const t of torchRuns) busy(`PyTorch ${String(t.shape)} ${String(t.dtype)}${t.ckpt ? ' ckpt' : ''} ${String(t.threads)}t`, t.cpu_ms_per_step, t.mean_tokens_per_s, num(t.threads)!);
  for (const n of opts.threads) {
    const w = num(peak[n]?.gflops), c = num(peak[n]?.gflops_per_cpu_time);
    if (w && c && w < 0.9 * c) notes.push(`bf16 probe ${n}t: ${fmt(w)} GFLOPS by wall clock but ${fmt(c)} per thread CPU-second: the machine was busy`);
  }

  // ---------------------------------------------------------------- report
  const ok = (x: number | undefined, good: (v: number) => boolean): string => (x === undefined ? '' : good(x) ? ' ✓' : ' ✗');
  const head = ['shape', 'base', 'ckpt', 'thr', 'floe tok/s', 'torch tok/s', '×torch', 'GFLOPS', 'of ceil', 'floe RSS', 'torch RSS', 'RSS ×torch', 'RSS ×f32', 'weights', 'fp8/bf16 speed', 'fp8/bf16 weights'];
  const table = [head];
  for (const r of rows) {
    const q = r.ratios!;
    const tr = r.torch_ref;
    table.push([
      r.shape, r.base, r.ckpt ? 'on' : 'off', String(r.threads),
      fmt(num(r.floe?.tokens_per_s)),
      tr ? `${fmt(tr.tokens_per_s)} (${tr.dtype}${tr.ckpt ? ' ckpt' : ''})` : '—',
      fmt(q.floe_over_torch, 2) + ok(q.floe_over_torch, (v) => v >= 1.2),
      fmt(q.achieved_gflops), (q.ceiling_fraction === undefined ? '—' : `${(100 * q.ceiling_fraction).toFixed(0)}%`) + ok(q.ceiling_fraction, (v) => v >= 0.65),
      gb(r.floe?.peak_rss), gb(tr?.peak_rss), fmt(q.rss_floe_over_torch, 2) + ok(q.rss_floe_over_torch, (v) => v <= 0.6), fmt(q.rss_floe_over_torch_f32, 2),
      gb(r.floe?.weight_bytes),
      r.base === 'fp8' ? fmt(q.fp8_speed_over_bf16, 2) + ok(q.fp8_speed_over_bf16, (v) => v >= 0.9) : '',
      r.base === 'fp8' ? fmt(q.fp8_weights_over_bf16, 2) : '',
    ]);
  }
  const widths = head.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  const lines = table.map((row) => row.map((cell, i) => (i < 3 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '));
  lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  console.log(`\nLoRA step (rank ${opts.rank}, q,k,v,o,gate,up,down, seq ${opts.seq}, batch 1, AdamW on LoRA params): median step tokens/s; RSS = peak of the config's own process (GB)`);
  console.log(`torch = PyTorch's faster precision without checkpointing, and that precision with checkpointing for ckpt rows; GFLOPS = tok/s × (4N, 6N with ckpt)`);
  console.log(`targets: ×torch ≥ 1.2, ≥ 65% of the bf16 ceiling, RSS ×torch ≤ 0.6, fp8 speed ≥ 0.9 × bf16 at ~0.5× weight bytes`);
  console.log(lines.join('\n'));
  if (torchRuns.length) {
    console.log(`\nPyTorch ${String(torchRuns[0]!.torch)} (${PY}):`);
    for (const r of torchRuns) console.log(`  ${String(r.shape)} ${String(r.dtype)}${r.ckpt ? ' ckpt' : ''} ${String(r.threads)}t: ${fmt(num(r.tokens_per_s))} tok/s, peak RSS ${gb(r.peak_rss)} GB (weights ${gb(r.weight_bytes)} GB; matmuls: ${String(r.matmul)})`);
  }
  console.log(`\nbf16 ceiling: ${opts.threads.map((n) => `${n}t ${fmt(num(peak[n]?.gflops))} GFLOPS (${fmt(num(peak[n]?.gflops_per_cpu_time))} per CPU time)`).join(', ')}, ${String(peak[opts.threads[0]!]?.isa ?? 'not measured')}`);
  console.log(`of ceiling by CPU time (floe FLOPs per CPU-second ÷ the probe's): ${rows.map((r) => `${r.shape} ${r.base}${r.ckpt ? ' ckpt' : ''} ${r.threads}t ${r.ratios?.ceiling_fraction_cpu_time === undefined ? '—' : `${(100 * r.ratios.ceiling_fraction_cpu_time).toFixed(0)}%`}`).join(', ')}`);
  console.log('\nfloe time per step by backend op (top 6; matmul* by weight dtype, f32 = LoRA factors):');
  for (const r of rows.filter((x) => x.floe?.profile)) {
    const prof = Object.entries(r.floe!.profile as Record<string, { share: number }>).sort((a, b) => b[1].share - a[1].share).slice(0, 6);
    console.log(`  ${r.shape} ${r.base}${r.ckpt ? ' ckpt' : ''} ${r.threads}t: ${prof.map(([k, v]) => `${k} ${(100 * v.share).toFixed(1)}%`).join(', ')}`);
  }
  // same-model check: first-step loss (LoRA B = 0, so the base model's loss) of floe bf16 vs PyTorch on the same GGUF
  for (const r of rows.filter((x) => x.base === 'bf16' && !x.ckpt && x.floe)) {
    const fl = num(r.floe!.first_loss);
    const cmp = torchRuns.filter((t) => t.shape === r.shape && t.threads === r.threads && !t.ckpt)
      .map((t) => `PyTorch ${String(t.dtype)} ${fmt(num(t.first_loss), 4)}`);
    if (fl !== undefined) console.log(`sanity ${r.shape} ${r.threads}t: first-step loss (LoRA B = 0, the base model's): floe bf16 ${fmt(fl, 4)}${cmp.length ? `, ${cmp.join(', ')}` : ''}`);
  }
  for (const r of rows) for (const e of r.errors) notes.push(`${r.shape} ${r.base}${r.ckpt ? ' ckpt' : ''} ${r.threads}t: ${e}`);
  const uniqueNotes = [...new Set(notes)];
  if (uniqueNotes.length) console.log(`\nnotes:\n${uniqueNotes.map((s) => `  - ${s}`).join('\n')}`);

  const wallS = (performance.now() - t0) / 1000;
  console.log(`\ntotal ${wallS.toFixed(0)} s`);
  const result = {
    bench: 'train',
    date: new Date().toISOString(),
    command: `node --import tsx bench/train.ts ${process.argv.slice(2).join(' ')}`.trim(),
    machine: machineInfo(),
    options: opts,
    bf16_ceiling: peak,
    rows,
    torch: torchRuns,
    notes: uniqueNotes,
    wall_s: wallS,
  };
  const out = opts.out ?? path.join(BENCH, 'results', `train-${result.date.slice(0, 19).replace(/[:T]/g, '-')}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
  console.log(`wrote ${path.relative(process.cwd(), out)}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/train: ${(e as Error).message}\n`);
  process.exit(1);
});
