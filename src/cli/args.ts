// CLI argument helpers: numeric flags with ranges, conflicting flags, per-command help, the built-in model, stdin.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { builtinModel, packageRoot } from '../model/builtin.js';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { KvDType } from '../backend/backend.js';
import { MAX_THREADS } from '../backend/select.js';
import type { GenerationDefaults } from '../formats/hf-config.js';
import type { LoadOptions } from '../formats/load.js';

/** A mistake in the command line (exit code 2; `"type": "usage_error"` with --json). */
export class UsageError extends Error {}

export interface Range {
  readonly min?: number; // inclusive
  readonly above?: number; // exclusive lower bound
  readonly max?: number; // inclusive
  readonly below?: number; // exclusive upper bound
}

function describe(r: Range, integer: boolean): string {
  const kind = integer ? 'an integer' : 'a number';
  const lo = r.above !== undefined ? `> ${r.above}` : `>= ${r.min ?? 0}`;
  const hi = r.max !== undefined ? ` and <= ${r.max}` : r.below !== undefined ? ` and < ${r.below}` : '';
  return `${kind} ${lo}${hi}`;
}

/** "2GiB", "512MiB", "1.5GB", "4096" (bytes) → bytes; at least `min` (1: a zero size is refused unless min is 0). */
export function parseSize(s: string, min = 1): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?)b?|b)?\s*$/i.exec(s);
  if (!m) throw new Error(`expected a size such as 2GiB, 512MiB, 1.5GB or a number of bytes, got '${s}'`);
  const exp = m[2] ? 'kmgt'.indexOf(m[2].toLowerCase()) + 1 : 0;
  const bytes = Number(m[1]) * (m[3] ? 1024 : 1000) ** exp;
  if (!Number.isFinite(bytes) || bytes < min) throw new Error(`size '${s}' is out of range`);
  return Math.floor(bytes);
}

/** --swap-space of serve and plan: a size, 0 allowed (preemption recomputes); undefined when absent (serve's default). */
export function swapSpaceFlag(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  try { return parseSize(v, 0); } catch (e) { throw new UsageError(`--swap-space: ${(e as Error).message}`); }
}

/** What a number flag accepts: decimal notation only (Number() alone also takes '0x10', '0b1' and, for integers, '1e1'). */
export const DECIMAL_INT = /^[+-]?\d+$/;
export const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/**
 * A numeric flag's value, or `fallback` when absent. Every numeric flag is non-negative (range.min defaults to 0);
 * the message names the flag, the range and the value given.
 */
export function num(v: string | undefined, name: string, fallback: number, integer = false, range: Range = {}): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  const r: Range = range.above === undefined && range.min === undefined ? { ...range, min: 0 } : range;
  const ok = (integer ? DECIMAL_INT : DECIMAL).test(v.trim()) && Number.isFinite(n) && (!integer || Number.isSafeInteger(n)) &&
    (r.min === undefined || n >= r.min) && (r.above === undefined || n > r.above) &&
    (r.max === undefined || n <= r.max) && (r.below === undefined || n < r.below);
  if (!ok) throw new UsageError(`--${name} expects ${describe(r, integer)}, got '${v}'`);
  return n;
}

/** Like num, but undefined when the flag is absent. */
export function optNum(v: string | undefined, name: string, integer = false, range: Range = {}): number | undefined {
  return v === undefined ? undefined : num(v, name, 0, integer, range);
}

/** --threads (and serve's --jobs-threads): kernel threads, 1 to MAX_THREADS; undefined when absent (all cores). */
export function threadsFlag(v: string | undefined, name = 'threads'): number | undefined {
  return optNum(v, name, true, { min: 1, max: MAX_THREADS });
}

/** Refuse flags that cannot be given together; `values` is parseArgs' values object. */
export function conflicts(values: Record<string, unknown>, groups: readonly (readonly string[])[]): void {
  for (const g of groups) {
    const given = g.filter((k) => values[k] !== undefined && values[k] !== false);
    if (given.length > 1) throw new UsageError(`give one of ${g.map((k) => `--${k}`).join(' or ')}, not ${given.map((k) => `--${k}`).join(' and ')}`);
  }
}

export { builtinModel, packageRoot } from '../model/builtin.js';

export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

/** --model, or the built-in model with a note on stderr. */
export function modelOrBuiltin(model: string | undefined, cmd: string): string {
  if (model !== undefined) return model;
  const p = builtinModel();
  if (!existsSync(p)) throw new UsageError(`--model PATH is required (the built-in model ${p} is missing)`);
  process.stderr.write(`[floe] ${cmd}: no --model given, using the built-in model ${p}\n`);
  return p;
}

/** A text flag's value; '-' reads all of stdin (one trailing newline dropped, as `echo` adds it). */
export function textOrStdin(v: string): string {
  if (v !== '-') return v;
  return readFileSync(0, 'utf8').replace(/\r?\n$/, '');
}

/**
 * One command's help, cut from the full help text: its usage line(s) under "Usage:" and its "<cmd> options"
 * section, so flags added to the full text show up in both.
 */
export function commandHelp(help: string, cmd: string): string | null {
  const lines = help.split('\n');
  const usage: string[] = [];
  const start = lines.findIndex((l) => l.startsWith(`  floe ${cmd} `) || l === `  floe ${cmd}`);
  if (start < 0) return null;
  usage.push(lines[start]!.replace(/^ {2}/, ''));
  // continuation lines are indented deeper than "  floe"
  for (let i = start + 1; i < lines.length && /^ {4,}\S/.test(lines[i]!); i++) usage.push(lines[i]!.replace(/^ {2}/, ''));
  const out = [`Usage: ${usage[0]}`, ...usage.slice(1)];
  const sec = lines.findIndex((l) => l.startsWith(`${cmd} options`));
  if (sec >= 0) {
    out.push('', lines[sec]!);
    for (let i = sec + 1; i < lines.length && lines[i]!.trim() !== ''; i++) out.push(lines[i]!);
  }
  return out.join('\n') + '\n';
}

type Parsed<T extends ParseArgsConfig['options']> = ReturnType<typeof parseArgs<{ args: string[]; options: T; allowPositionals: boolean; strict: true }>>;

/** parseArgs, strict: an unknown flag or a missing value is a usage error. */
export function parse<T extends ParseArgsConfig['options']>(args: string[], options: T, allowPositionals = false): Parsed<T> {
  return parseArgs({ args, options, allowPositionals, strict: true });
}

/** The sampling flags of generate and chat, validated; undefined where not given. */
export interface SamplingFlags {
  readonly temperature?: number;
  readonly topK?: number;
  readonly topP?: number;
  readonly minP?: number;
  readonly repetitionPenalty?: number;
  readonly seed: number | null;
}

export function samplingFlags(v: { temperature?: string; 'top-k'?: string; 'top-p'?: string; 'min-p'?: string; 'repetition-penalty'?: string; seed?: string }): SamplingFlags {
  return {
    temperature: optNum(v.temperature, 'temperature'),
    topK: optNum(v['top-k'], 'top-k', true),
    topP: optNum(v['top-p'], 'top-p', false, { above: 0, max: 1 }),
    minP: optNum(v['min-p'], 'min-p', false, { max: 1 }),
    repetitionPenalty: optNum(v['repetition-penalty'], 'repetition-penalty', false, { above: 0 }),
    seed: optNum(v.seed, 'seed', true) ?? null,
  };
}

/** Flags over generation_config.json over floe's defaults (temperature 0.8, every filter off). */
export function withGenerationDefaults(f: SamplingFlags, g: GenerationDefaults) {
  return {
    temperature: f.temperature ?? g.temperature ?? 0.8,
    topK: f.topK ?? g.topK ?? 0,
    topP: f.topP ?? g.topP ?? 1,
    minP: f.minP ?? g.minP ?? 0,
    repetitionPenalty: f.repetitionPenalty ?? g.repetitionPenalty ?? 1,
    seed: f.seed,
  };
}

/** A default token budget clamped to the room the prompt leaves in the context. */
export function defaultMaxTokens(want: number, promptTokens: number, context: number): number {
  const room = context - promptTokens;
  if (room < 1) throw new Error(`prompt (${promptTokens} tokens) fills the model's context of ${context}: no room to generate`);
  return Math.min(want, room);
}

/** --kv-cache-dtype: auto (undefined) | f32 | bf16 | fp8 (= fp8_e4m3). */
export function kvCacheDtype(v: string | undefined): KvDType | undefined {
  const arg = v ?? 'auto';
  const map: Record<string, KvDType | undefined> = { auto: undefined, f32: 'f32', bf16: 'bf16', fp8: 'fp8_e4m3', fp8_e4m3: 'fp8_e4m3' };
  if (!(arg in map)) throw new UsageError(`--kv-cache-dtype expects auto, f32, bf16 or fp8, got '${arg}'`);
  return map[arg];
}

export { kvDtypeFlagName } from '../model/kv-cache.js';

/** --dtype of generate / chat / serve / batch / eval: fp8 quantizes the linear weights, bf16 converts f32 / f16 weight matrices, while loading. */
export function loadDtype(v: string | undefined): LoadOptions | undefined {
  if (v === undefined) return undefined;
  if (v !== 'fp8' && v !== 'bf16') throw new UsageError(`--dtype expects fp8 (linear weights quantized while loading) or bf16 (f32 / f16 weights converted while loading), got '${v}'`);
  return { dtype: v };
}
