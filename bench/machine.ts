// The host a benchmark ran on: CPU model, family/model numbers, the ISA flags that pick floe's kernels, load.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAddon } from '../src/backend/native-addon.js';

const CACHE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '.cache');

/** Flags that decide which kernels run (floe's and its peers'); every result names the ones the host has. */
export const ISA_FLAGS = ['avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_vnni', 'avx512_bf16', 'avx512vbmi', 'amx_tile', 'amx_bf16', 'amx_int8'] as const;

export interface MachineInfo {
  readonly cpu: string;
  readonly cpu_family: number | null;
  readonly cpu_model: number | null;
  readonly logical_cpus: number;
  readonly mem_gib: number;
  readonly isa: string[];
  readonly node: string;
  readonly load_avg_at_start: number[];
  /** How floe's bf16 / fp8 decode GEMVs multiply here, and the per-core rates that chose it (null: no AVX-512). */
  readonly bf16_dot: { mode: 'fma' | 'dpbf16'; forced: boolean; fmaGmacs: number; dpbf16Gmacs: number } | null;
}

export function machineInfo(): MachineInfo {
  let cpu = os.cpus()[0]?.model ?? 'unknown';
  let flags: string[] = [];
  let family: number | null = null, model: number | null = null;
  try {
    const ci = fs.readFileSync('/proc/cpuinfo', 'utf8');
    cpu = /model name\s*:\s*(.*)/.exec(ci)?.[1] ?? cpu;
    flags = (/flags\s*:\s*(.*)/.exec(ci)?.[1] ?? '').split(' ');
    family = Number(/cpu family\s*:\s*(\d+)/.exec(ci)?.[1] ?? NaN);
    model = Number(/^model\s*:\s*(\d+)/m.exec(ci)?.[1] ?? NaN);
  } catch { /* not Linux */ }
  return {
    cpu, cpu_family: Number.isFinite(family) ? family : null, cpu_model: Number.isFinite(model) ? model : null,
    logical_cpus: os.cpus().length, mem_gib: +(os.totalmem() / 2 ** 30).toFixed(1),
    isa: ISA_FLAGS.filter((f) => flags.includes(f)), node: process.version, load_avg_at_start: os.loadavg(),
    bf16_dot: loadAddon()?.bf16Dot() ?? null,
  };
}

/** One line for a benchmark's log: `CPU (family F model M), N cpus, ISA a b c, load x y z`. */
export function machineLine(m: MachineInfo = machineInfo()): string {
  return `${m.cpu} (family ${m.cpu_family ?? '?'} model ${m.cpu_model ?? '?'}), ${m.logical_cpus} cpus, ${m.mem_gib} GiB, ` +
    `ISA ${m.isa.join(' ') || 'none'}, load ${m.load_avg_at_start.map((x) => x.toFixed(2)).join(' ')}` +
    (m.bf16_dot ? `, bf16 products ${m.bf16_dot.mode}${m.bf16_dot.forced ? ' (forced)' : ''} (a core: FMA ${m.bf16_dot.fmaGmacs.toFixed(0)}, ` +
      `vdpbf16ps ${m.bf16_dot.dpbf16Gmacs.toFixed(0)} G multiply-adds/s)` : '');
}

/** The bf16 FLOP probe (bench/train-peak.cpp), built into bench/.cache when missing or older than its source. */
export function buildPeakProbe(): string {
  const src = path.join(path.dirname(fileURLToPath(import.meta.url)), 'train-peak.cpp');
  const bin = path.join(CACHE_DIR, 'train-peak');
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  if (!fs.existsSync(bin) || fs.statSync(bin).mtimeMs < fs.statSync(src).mtimeMs) {
    try {
      execFileSync('g++', ['-O3', '-march=native', '-std=c++17', '-pthread', '-o', bin, src], { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      throw new Error(`g++ bench/train-peak.cpp failed:\n${(e as { stderr?: Buffer }).stderr?.toString() ?? String(e)}`);
    }
  }
  return bin;
}

/** Whether floe's bf16 / fp8 GEMMs run on AMX tiles here: the addon's own answer (CPUID, OS, Linux, FLOE_AMX). */
export function amxTilesOn(): boolean {
  return loadAddon()?.amx().mode === 'tiles';
}

function probePeak(threads: number, flags: readonly string[]): { gflops: number; isa: string } {
  const out = execFileSync(buildPeakProbe(), ['--threads', String(threads), '--ms', '200', '--reps', '3', ...flags], { encoding: 'utf8' });
  const j = JSON.parse(out) as { gflops: number; isa: string };
  return { gflops: j.gflops, isa: j.isa };
}

/** The measured int8 peak (GOP/s, wall clock) at `threads`: vpdpbusd, or the AMX int8 tiles (TDPBSSD) with amx. */
export function int8Peak(threads: number, amx: boolean): { gflops: number; isa: string } {
  return probePeak(threads, ['--int8', ...(amx ? ['--amx'] : [])]);
}

/** The measured bf16 peak (GFLOP/s, wall clock) at `threads`: vdpbf16ps, or the AMX tiles with amx. */
export function bf16Peak(threads: number, amx: boolean): { gflops: number; isa: string } {
  return probePeak(threads, amx ? ['--amx'] : []);
}
