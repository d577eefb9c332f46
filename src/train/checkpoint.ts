// Checkpoints: OUT/checkpoint-NNNNNN/ with weights, optimizer moments and trainer_state.json, written into a
// temporary directory and renamed (atomic); the last K are kept; resume finds the newest complete one.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TrainParam } from '../model/llama-train.js';
import { readSafetensorsSync, writeFileAtomic, writeSafetensors, type StWriteTensor } from '../formats/safetensors.js';
import { asF32 } from '../tensor/tensor.js';
import type { DataPosition } from './data.js';
import type { Optimizer } from './optimizer.js';

export const STATE_FILE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
const PREFIX = 'checkpoint-';

/** Everything besides tensors that resume needs; the RNG streams are counter-based on (seed, step, epoch). */
export interface TrainerState {
  readonly format: 'floe-trainer-state-1';
  readonly step: number; // optimizer steps done
  readonly data: DataPosition;
  readonly seed: number;
  readonly tokens: number; // training tokens seen
  readonly elapsedS: number;
  readonly optimizerStep: number;
  readonly kind: 'lora' | 'full';
  readonly weightsFile: string; // adapter_model.safetensors | model.safetensors
  readonly options: Record<string, unknown>; // the run's settings, to check a resume
}

export function checkpointName(step: number): string {
  return PREFIX + String(step).padStart(6, '0');
}

/**
 * Write OUT/checkpoint-<step>: `writeWeights(dir)` writes the trainable weights, then the optimizer, then the
 * state; the directory is renamed into place only when complete. Returns its path.
 */
export function saveCheckpoint(out: string, state: TrainerState, opt: Optimizer, writeWeights: (dir: string) => void, keepLast: number): string {
  fs.mkdirSync(out, { recursive: true });
  const final = path.join(out, checkpointName(state.step));
  const tmp = path.join(out, `.${checkpointName(state.step)}.tmp-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  writeWeights(tmp);
  const t: Record<string, StWriteTensor> = {};
  opt.params.forEach((p, i) => {
    if (opt.m[i]!.length) t[`m.${p.name}`] = { dtype: 'F32', shape: p.shape, data: opt.m[i]! };
    if (opt.v[i]!.length) t[`v.${p.name}`] = { dtype: 'F32', shape: p.shape, data: opt.v[i]! };
  });
  writeSafetensors(path.join(tmp, OPTIMIZER_FILE), t);
  // tests: FLOE_TEST_SAVE_PAUSE=STEP:MS stalls the save of STEP here, a window to SIGKILL it mid-save
  const [pStep, pMs] = (process.env.FLOE_TEST_SAVE_PAUSE ?? '').split(':').map(Number);
  if (pStep === state.step && pMs! > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, pMs);
  writeFileAtomic(path.join(tmp, STATE_FILE), [new TextEncoder().encode(JSON.stringify(state, null, 1) + '\n')]);
  fs.rmSync(final, { recursive: true, force: true });
  fs.renameSync(tmp, final);
  fsyncDir(out);
  if (keepLast > 0) {
    const all = listCheckpoints(out);
    for (const c of all.slice(0, Math.max(0, all.length - keepLast))) fs.rmSync(c.dir, { recursive: true, force: true });
  }
  return final;
}

function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
  } catch { /* not every filesystem can */ }
}

/** Complete checkpoints in `out`, oldest first. */
export function listCheckpoints(out: string): { step: number; dir: string }[] {
  if (!fs.existsSync(out)) return [];
  return fs.readdirSync(out)
    .filter((n) => n.startsWith(PREFIX) && /^\d+$/.test(n.slice(PREFIX.length)) && fs.existsSync(path.join(out, n, STATE_FILE)))
    .map((n) => ({ step: Number(n.slice(PREFIX.length)), dir: path.join(out, n) }))
    .sort((a, b) => a.step - b.step);
}

/** What a finetune run writes into its output dir (checkpoints, their temps, metrics, summary, final, pipeline stages' checkpoints). */
const RUN_ENTRY = new RegExp(`^(metrics\\.jsonl|summary\\.json|final|stage-\\d+|${PREFIX}\\d+|\\.${PREFIX}\\d+\\.tmp-\\d+|\\.final\\.(tmp|old)-\\d+)$`); // stage-K: pipeline runs

/**
 * A run that does not fit what is on disk: a non-empty `out`, a resume without a checkpoint or with other settings than
 * the run's, settings the model cannot take (a sequence past its context, a LoRA rank past its hidden size). The call's
 * to change, not a failure of the run (the CLI's usage error, exit 2).
 */
export class RunSetupError extends Error {}

/**
 * Make `out` ready for a run: refuse a non-empty dir (an earlier run's checkpoints would mix with this one's)
 * unless `resume` continues it or `overwrite` clears it; overwrite clears only a dir holding a run's files.
 */
export function prepareOutDir(out: string, o: { resume?: string; overwrite?: boolean }): void {
  const entries = checkOutDir(out, o);
  if (entries === null) {
    try {
      fs.mkdirSync(out, { recursive: true });
    } catch (e) {
      throw new RunSetupError(`${out}: cannot make the output directory (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); choose another --out`);
    }
  }
  if (entries === null || entries.length === 0 || o.resume !== undefined) return;
  for (const n of entries) fs.rmSync(path.join(out, n), { recursive: true, force: true });
}

/**
 * prepareOutDir's checks, changing nothing (distill runs them before its teacher pass): a non-empty `out` needs
 * resume or overwrite, and overwrite clears only a run's own entries.
 * Returns `out`'s entries, or null when it does not exist.
 */
export function checkOutDir(out: string, o: { resume?: string; overwrite?: boolean }): string[] | null {
  if (o.resume !== undefined && o.overwrite) throw new RunSetupError('give either resume or overwrite, not both');
  // --out, or the nearest folder above it that exists (where the missing ones will be made), must be a writable directory
  let d = path.resolve(out);
  while (!fs.existsSync(d) && path.dirname(d) !== d) d = path.dirname(d);
  if (d !== path.resolve(out) && !fs.statSync(d).isDirectory()) throw new RunSetupError(`${out}: ${d} is a file, so the output directory cannot be made under it; choose another --out`);
  try {
    fs.accessSync(d, fs.constants.W_OK);
  } catch (e) {
    throw new RunSetupError(`${out}: ${d === path.resolve(out) ? 'the output directory' : d} is not writable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); choose another --out`);
  }
  if (!fs.existsSync(out)) return null;
  if (!fs.statSync(out).isDirectory()) throw new RunSetupError(`${out}: the output path exists and is not a directory`);
  const entries = fs.readdirSync(out);
  if (entries.length === 0 || o.resume !== undefined) return entries;
  if (!o.overwrite) {
    const held = `${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', …' : ''}`;
    // a run stopped before its first checkpoint (or before a finished final/) has nothing --resume could continue
    const runOnly = entries.every((n) => RUN_ENTRY.test(n));
    const finished = entries.includes('final') || entries.includes('summary.json');
    if (runOnly && !finished && !entries.some((n) => /^stage-\d+$/.test(n) || (n.startsWith(PREFIX) && /^\d+$/.test(n.slice(PREFIX.length))))) {
      throw new RunSetupError(`${out} holds a run that stopped before its first checkpoint (${held}): there is nothing to resume; ` +
        'pass --overwrite to start it again, or choose another --out');
    }
    throw new RunSetupError(`${out} is not empty (${held}): ` +
      'pass --resume DIR to continue that run or --overwrite to clear it, or choose another --out');
  }
  const foreign = entries.filter((n) => !RUN_ENTRY.test(n));
  if (foreign.length) throw new RunSetupError(`${out}: --overwrite clears only a finetune output dir, and this one also holds ${foreign.slice(0, 3).join(', ')}`);
  return entries;
}

/**
 * Start OUT/metrics.jsonl for a run: a resume keeps the lines up to its checkpoint's step (a torn last line, from a
 * kill or a full disk mid-append, is dropped), a fresh run starts it empty. Rewritten atomically, so a kill here
 * never loses the earlier lines.
 */
export function resetMetrics(file: string, resumeStep: number | null): void {
  const kept: string[] = [];
  if (resumeStep !== null && fs.existsSync(file)) {
    const text = fs.readFileSync(file, 'utf8');
    const lines = text.split('\n');
    lines.forEach((l, i) => {
      if (!l.trim()) return;
      let m: { step?: unknown };
      try {
        m = JSON.parse(l) as { step?: unknown };
      } catch (e) {
        if (i === lines.length - 1) return; // torn: the run was stopped mid-line
        throw new Error(`${file}:${i + 1}: not a JSON line (${(e as Error).message}); remove the line, or start over with --overwrite`);
      }
      if (typeof m.step === 'number' && m.step <= resumeStep) kept.push(l + '\n');
    });
  }
  writeFileAtomic(file, [new TextEncoder().encode(kept.join(''))]);
}

/**
 * Write OUT/final whole: `write(dir)` fills a temporary directory, which then takes final's place, so a run killed
 * while writing it never leaves a final/ with some files missing or cut short (a resume writes it again).
 */
export function writeFinal(out: string, write: (dir: string) => void): string {
  const final = path.join(out, 'final');
  const tmp = path.join(out, `.final.tmp-${process.pid}`);
  const old = path.join(out, `.final.old-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  try {
    write(tmp);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  fs.rmSync(old, { recursive: true, force: true });
  if (fs.existsSync(final)) fs.renameSync(final, old);
  fs.renameSync(tmp, final);
  fsyncDir(out);
  fs.rmSync(old, { recursive: true, force: true });
  return final;
}

/** Remove temporary directories left by a save that was killed. */
export function removeStaleTemps(out: string): string[] {
  if (!fs.existsSync(out)) return [];
  const stale = fs.readdirSync(out).filter((n) => (n.startsWith('.' + PREFIX) && n.includes('.tmp-')) || /^\.final\.(tmp|old)-\d+$/.test(n));
  for (const n of stale) fs.rmSync(path.join(out, n), { recursive: true, force: true });
  return stale;
}

/** A checkpoint directory itself, or the newest complete checkpoint inside an output directory. */
export function resolveCheckpoint(p: string): string {
  if (fs.existsSync(path.join(p, STATE_FILE))) return p;
  const all = listCheckpoints(p);
  if (all.length === 0) {
    // a pipeline run keeps its checkpoints per stage (stage-K/checkpoint-*): it resumes under mpirun
    const stages = fs.existsSync(p) ? fs.readdirSync(p).filter((n) => /^stage-\d+$/.test(n)).length : 0;
    if (stages > 0) {
      throw new RunSetupError(`${p} holds a pipeline run's per-stage checkpoints (${stages} stages, stage-K/${PREFIX}*): resume it with ` +
        `\`mpirun -np ${stages} floe finetune --pipeline-parallel-size ${stages} --resume ${p} ...\` and the flags it was started with`);
    }
    const started = fs.existsSync(path.join(p, 'metrics.jsonl')) || (fs.existsSync(p) && fs.readdirSync(p).some((n) => n.startsWith(`.${PREFIX}`)));
    throw new RunSetupError(`${p}: no complete checkpoint to resume from (looked for ${PREFIX}*/${STATE_FILE})` +
      (started ? '; the run stopped before its first checkpoint was saved: start it again with --overwrite instead of --resume' : ''));
  }
  return all[all.length - 1]!.dir;
}

export interface LoadedCheckpoint {
  readonly dir: string;
  readonly state: TrainerState;
  readonly weights: Map<string, Float32Array>;
  readonly m: Map<string, Float32Array>;
  readonly v: Map<string, Float32Array>;
}

export function loadCheckpoint(dir: string): LoadedCheckpoint {
  const statePath = path.join(dir, STATE_FILE);
  const state = JSON.parse(fs.readFileSync(statePath, 'utf8')) as TrainerState;
  if (state.format !== 'floe-trainer-state-1') throw new Error(`${statePath}: unknown format ${JSON.stringify(state.format)}`);
  const read = (file: string) => {
    const m = new Map<string, Float32Array>();
    for (const [n, t] of readSafetensorsSync(path.join(dir, file)).tensors) {
      if (t.dtype !== 'F32') throw new Error(`${path.join(dir, file)}: "${n}" is ${t.dtype}, checkpoints hold F32`);
      m.set(n, asF32(t.data).slice());
    }
    return m;
  };
  const weights = read(state.weightsFile);
  const mv = read(OPTIMIZER_FILE);
  const m = new Map<string, Float32Array>();
  const v = new Map<string, Float32Array>();
  for (const [n, a] of mv) (n.startsWith('m.') ? m : v).set(n.slice(2), a);
  return { dir, state, weights, m, v };
}

/** Copy saved values into params and optimizer moments; throws naming a missing or mis-sized tensor. */
export function restoreInto(ck: LoadedCheckpoint, params: readonly TrainParam[], opt: Optimizer): void {
  params.forEach((p, i) => {
    const w = ck.weights.get(p.name);
    if (!w) throw new Error(`${ck.dir}: checkpoint has no tensor "${p.name}"`);
    if (w.length !== p.value.length) throw new Error(`${ck.dir}: "${p.name}" has ${w.length} values, the model needs ${p.value.length}`);
    p.value.set(w);
    for (const [moments, mine] of [[ck.m, opt.m[i]!], [ck.v, opt.v[i]!]] as const) {
      if (mine.length === 0) continue;
      const s = moments.get(p.name);
      if (!s || s.length !== mine.length) throw new Error(`${ck.dir}: optimizer state for "${p.name}" is missing or mis-sized`);
      mine.set(s);
    }
  });
  opt.step = ck.state.optimizerStep;
}
