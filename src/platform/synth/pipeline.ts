// runSynth: work units in a sliding window (many generations in flight), then judge / guard / dedup in unit order,
// appended to the output as whole lines (write + fsync per batch) with a progress log that makes a rerun resume.
//
//   OUT                  {"messages": [...], "provenance": {...}} per line (or {"prompt","completion","provenance"})
//   OUT.synth-progress   header line, then per committed batch {"bytes": OUT's size, "units": {id: "kept" | reason}}
//   OUT.synth-lock       the writing process's pid while a run holds OUT (a second run on the same OUT is refused)

import { closeSync, existsSync, fsyncSync, ftruncateSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import type { ChatMessage } from '../../formats/chat-template.js';
import { fileLines, LineError } from '../../formats/lines.js';
import { Rng } from '../../train/rng.js';
import { NO_GUARD, type GuardFilter, type TextLimits } from './filters.js';
import type { Judge } from './judge.js';
import { ContextLengthExceeded, type Gen, type GenOptions, type SynthLlm } from './llm.js';
import type { Candidate, UnitContext, UnitOutcome, WorkUnit } from './methods.js';
import { LshIndex } from './minhash.js';
import { mix32 } from '../../train/rng.js';
import type { PromptSet } from './prompts.js';

export interface SynthOptions {
  readonly method: string;
  readonly units: readonly WorkUnit[];
  readonly llm: SynthLlm;
  readonly prompts: PromptSet;
  readonly out: string;
  readonly format: 'messages' | 'prompt-completion';
  readonly gen: Omit<GenOptions, 'seed' | 'stop'>;
  readonly limits: TextLimits;
  readonly dedupThreshold: number; // 1 → exact duplicates only
  readonly window: number; // units in flight at once
  readonly batchUnits?: number; // units per fsync'd batch (default 8, or the window if smaller)
  readonly guard?: GuardFilter;
  readonly judge?: Judge | null;
  readonly minScore?: number | null;
  readonly params: Record<string, unknown>; // what defines the run (seed, method options): a rerun must match it
  /** Content hashes of the files the run reads (seed tasks, documents, prompt files), kept in the progress header only: a
   *  rerun after one was edited is refused (the file would mix units made from the old and the new text). */
  readonly inputs?: Readonly<Record<string, string>>;
  readonly onProgress?: (p: SynthProgress) => void;
}

export interface SynthProgress {
  readonly total: number;
  readonly done: number; // units finished (this run and before)
  readonly kept: number;
  readonly rejected: number;
  readonly duplicates: number;
  readonly tokens: number; // generated this run
  readonly seconds: number; // this run
}

export interface SynthSummary {
  readonly method: string;
  readonly out: string;
  readonly units: number;
  readonly resumed_units: number; // already done by an earlier run
  readonly kept: number;
  readonly rejected: Readonly<Record<string, number>>; // reason → units (duplicate, unsafe:<category>, low_score, ...)
  readonly duplicates_removed: number;
  readonly unsafe: Readonly<Record<string, number>>; // guard category → units
  readonly generated_tokens: number; // this run
  readonly prompt_tokens: number; // this run, the methods' generations (judge and guard not counted)
  readonly cached_prompt_tokens: number; // of those, served from the engine's prefix cache (as the server reports it)
  readonly seconds: number; // this run
  readonly samples_per_second: number; // kept samples of this run / seconds
  readonly tokens_per_second: number;
}

const PROGRESS = '.synth-progress';
const LOCK = '.synth-lock';

/** The locks this process holds (absolute paths): a lock with this pid that is not among them is a dead run's. */
const heldLocks = new Set<string>();

/**
 * Take OUT.synth-lock (linked into place whole, holding this pid); a lock whose process is gone (killed) is taken over,
 * as is one holding this process's own pid that this process does not hold (a restarted container runs floe as the
 * same pid, often 1, as the run it killed).
 *
 * The takeover is exclusive: runs that find the same dead pid P race to create OUT.synth-lock.takeover-P (O_EXCL, one
 * wins); the winner checks the lock still holds P and renames its own pid file over it (atomic), then removes the
 * marker. A run that read P earlier and wins the marker later finds the lock no longer holding P and backs off, so a
 * lock just taken over is never removed by a second run (it was rmSync'd, then linked: two runs could both hold it).
 */
export function lockOut(out: string): () => void {
  const lock = out + LOCK;
  const key = resolve(lock);
  const alive = (pid: number) => {
    try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
  };
  const readLock = (): string | null => {
    try { return readFileSync(lock, 'utf8'); } catch { return null; } // null: removed meanwhile
  };
  const pause = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  const mine = `${lock}.${process.pid}`;
  writeFileSync(mine, `${process.pid}\n`);
  const held = (): (() => void) => {
    heldLocks.add(key);
    return () => { heldLocks.delete(key); rmSync(lock, { force: true }); };
  };
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        try {
          linkSync(mine, lock); // atomic: the lock never exists without its pid
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw e;
          const fd = openSync(lock, 'wx'); // a file system without hard links: created exclusively, then the pid
          writeSync(fd, `${process.pid}\n`);
          closeSync(fd);
        }
        return held();
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const seen = readLock();
      if (seen === null && attempt < 8) continue; // released or taken over meanwhile: try again
      const pid = seen === null ? NaN : Number.parseInt(seen, 10);
      const busy = pid > 0 && (pid === process.pid ? heldLocks.has(key) : alive(pid));
      if (!busy && seen !== null && attempt < 8) {
        if (!(pid > 0) && attempt < 3) { pause(5); continue; } // no pid yet: a lock being written without hard links
        const marker = `${lock}.takeover-${pid > 0 ? pid : 'x'}`;
        let fd: number | null = null;
        try { fd = openSync(marker, 'wx'); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e; }
        if (fd === null) {
          // another run is taking this lock over (a marker older than 10 s is a run killed in these few syscalls)
          try { if (Date.now() - statSync(marker).mtimeMs > 10_000) rmSync(marker, { force: true }); } catch { /* gone */ }
          pause(5);
          continue;
        }
        closeSync(fd);
        try {
          if (readLock() !== seen) continue; // taken over (and perhaps released) since we read it
          renameSync(mine, lock); // replaces the dead run's lock whole
          return held();
        } finally {
          rmSync(marker, { force: true });
        }
      }
      throw new Error(`${out} is being written by another floe synth run (pid ${Number.isNaN(pid) ? '?' : pid}, ${lock}); ` +
        'wait for it to finish or give another --out (if no such run is going on, delete the lock file)');
    }
  } finally {
    rmSync(mine, { force: true });
  }
}

/** Units per committed batch by default (one write + fsync each). */
const COMMIT_UNITS = 8;

/**
 * Calls `each` with every whole (newline-terminated) non-empty line of a file, read line by line (an OUT past the
 * longest string, ~512 MiB, reads too); returns where a torn (unterminated) last line starts, in bytes, or null.
 */
function wholeLines(file: string, each: (line: string) => void): number | null {
  if (!existsSync(file)) return null;
  const size = statSync(file).size; // the file is ours (lockOut): nothing appends while it is read
  let end = 0; // byte offset after the last '\n'
  for (const l of fileLines(file, { unterminated: 'skip' })) { // a torn line may end inside a character: left undecoded
    end = l.offset + l.bytes + 1;
    if (l.text.length > 0) each(l.text);
  }
  return end < size ? end : null;
}

/** What differs between a progress log's header and this run: "seed 1 -> 2, rounds 3 -> 2". */
function headerDiff(line: string, o: Pick<SynthOptions, 'method' | 'params' | 'inputs'>): string {
  let was: { method?: unknown; params?: Record<string, unknown>; inputs?: Record<string, string> };
  try { was = JSON.parse(line) as typeof was; } catch { return `its header is not one floe synth wrote: ${line.slice(0, 120)}`; }
  const show = (v: unknown) => (v === undefined ? '(none)' : JSON.stringify(v));
  const diffs: string[] = [];
  if (was.method !== o.method) diffs.push(`method ${show(was.method)} -> ${show(o.method)}`);
  const old = was.params ?? {};
  for (const k of [...new Set([...Object.keys(old), ...Object.keys(o.params)])]) {
    if (k === 'method' && diffs.length) continue;
    if (JSON.stringify(old[k]) !== JSON.stringify(o.params[k])) diffs.push(`${k} ${show(old[k])} -> ${show(o.params[k])}`);
  }
  if (diffs.length) return `its parameters differ: ${diffs.join(', ')}`;
  const [a, b] = [was.inputs ?? {}, o.inputs ?? {}];
  const edited = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => a[k] !== b[k]);
  return edited.length ? `these inputs were edited since: ${edited.join(', ')}` : 'its header differs';
}

/** The progress header of a run; a header written before inputs were recorded matches one without them. */
function headerOf(o: Pick<SynthOptions, 'method' | 'params' | 'inputs'>, withInputs = true): string {
  const key = createHash('sha256').update(JSON.stringify(o.params)).digest('hex').slice(0, 16);
  const inputs = withInputs && o.inputs && Object.keys(o.inputs).length ? { inputs: o.inputs } : {};
  return JSON.stringify({ floe_synth: 1, method: o.method, key, params: o.params, ...inputs });
}

export async function runSynth(o: SynthOptions): Promise<SynthSummary> {
  // two runs appending to one OUT interleave their lines (torn JSON that a rerun then takes as committed): one at a time
  mkdirSync(dirname(resolve(o.out)), { recursive: true }); // as finetune, merge and batch create --out's parent
  const unlock = lockOut(o.out);
  try {
    return await runLocked(o);
  } finally {
    unlock();
  }
}

async function runLocked(o: SynthOptions): Promise<SynthSummary> {
  const t0 = performance.now();
  const header = headerOf(o);
  const progressFile = o.out + PROGRESS;
  const done = new Map<string, string>(); // unit id → 'kept' | reason
  const rejected: Record<string, number> = {};
  const unsafe: Record<string, number> = {};
  let kept = 0;
  let dups = 0;
  const dedup = new LshIndex(o.dedupThreshold);

  // resume: the progress log says how many bytes of OUT are committed; anything after (a torn line, an unlogged batch) goes
  let committed = 0;
  let logged = 0; // lines of the progress log: its header, then one per committed batch
  let other: string | null = null; // the header of another run's log: refused once it has a committed batch
  const tornAt = wholeLines(progressFile, (l) => {
    if (logged++ === 0) {
      if (l !== header && l !== headerOf(o, false)) other = l;
      return;
    }
    if (other !== null) {
      throw new Error(`${o.out} was made by another synth run: ${headerDiff(other, o)} (${progressFile}); ` +
        'use the same method, parameters and input files to resume, or another --out');
    }
    const b = JSON.parse(l) as { bytes: number; units: Record<string, string>; unsafe?: Record<string, number> };
    committed = b.bytes;
    for (const [id, r] of Object.entries(b.units)) done.set(id, r);
    for (const [c, n] of Object.entries(b.unsafe ?? {})) unsafe[c] = (unsafe[c] ?? 0) + n;
  });
  // a run that committed no unit (it failed on its first request: a misspelt --endpoint-model) left nothing to resume:
  // its log is started over, else the corrected command was refused as another run's
  if (other !== null) logged = 0;
  else if (logged === 0) {
    // refused before the progress log is made: a file that is not ours gets no OUT.synth-progress beside it
    let existing = 0;
    try { wholeLines(o.out, () => existing++); } catch (e) {
      if (!(e instanceof LineError)) throw e;
      throw new Error(`${o.out} holds text that is not UTF-8 (${e.message}) and has no ${progressFile}; it was not made by floe synth: choose another --out`);
    }
    if (existing > 0) throw new Error(`${o.out} already holds ${existing} lines but has no ${progressFile}; it was not made by floe synth: choose another --out`);
  }
  const outFd = openSync(o.out, 'a+');
  const progFd = openSync(progressFile, 'a+');
  try {
    if (tornAt !== null) ftruncateSync(progFd, tornAt);
    if (logged === 0) {
      ftruncateSync(progFd, 0);
      ftruncateSync(outFd, 0);
      writeSync(progFd, header + '\n');
      fsyncSync(progFd);
    } else {
      ftruncateSync(outFd, committed);
      // the dedup index sees every committed sample again, in order
      wholeLines(o.out, (l) => {
        const s = JSON.parse(l) as { provenance: { id: string }; messages?: ChatMessage[]; prompt?: string };
        dedup.add(s.provenance.id, s.prompt ?? String(s.messages!.find((m) => m.role === 'user')!.content));
      });
    }
    for (const r of done.values()) {
      if (r === 'kept') kept++;
      else { rejected[r] = (rejected[r] ?? 0) + 1; if (r === 'duplicate') dups++; }
    }
    fsyncSync(outFd);

    const todo = o.units.filter((u) => !done.has(u.id));
    const resumed = o.units.length - todo.length;
    const results: (UnitOutcome & UnitCounts | undefined)[] = new Array(todo.length);
    // small batches: a killed run loses at most the units in flight and one batch, and the progress moves as units finish
    // (a window-sized batch, 128 units in-process, made a default 100-unit run one batch: nothing to resume, a bar at 0 until the end)
    const batchUnits = o.batchUnits ?? Math.min(o.window, COMMIT_UNITS);
    let nextRun = 0;
    let nextCommit = 0;
    let tokens = 0;
    let promptTokens = 0;
    let cachedTokens = 0;
    let keptNow = 0;
    let failure: Error | null = null;
    const seconds = () => (performance.now() - t0) / 1000;
    const report = () => o.onProgress?.({ total: o.units.length, done: done.size, kept, rejected: done.size - kept, duplicates: dups, tokens, seconds: seconds() });

    /** Commit finished units in order, `batchUnits` at a time (or the rest at the end): lines, fsync, then the log line. */
    const commit = (final: boolean) => {
      let ready = 0;
      while (nextCommit + ready < todo.length && results[nextCommit + ready] !== undefined) ready++;
      while (ready >= batchUnits || (final && ready > 0)) {
        const n = Math.min(ready, batchUnits);
        const units: Record<string, string> = {};
        const batchUnsafe: Record<string, number> = {};
        let lines = '';
        for (let k = 0; k < n; k++) {
          const u = todo[nextCommit + k]!;
          const r = results[nextCommit + k]!;
          results[nextCommit + k] = undefined; // let the text go
          let reason: string;
          if (!r.ok) reason = r.reason;
          else if (dedup.add(u.id, r.candidate.instruction)) { reason = 'duplicate'; dups++; }
          else {
            reason = 'kept';
            kept++;
            keptNow++;
            lines += JSON.stringify(line(o, u, r.candidate, (r as { scores?: Record<string, unknown> }).scores ?? {})) + '\n';
          }
          if (reason.startsWith('unsafe:')) for (const c of reason.slice(7).split(',')) batchUnsafe[c] = (batchUnsafe[c] ?? 0) + 1;
          if (reason !== 'kept') rejected[reason] = (rejected[reason] ?? 0) + 1;
          units[u.id] = reason;
          done.set(u.id, reason);
        }
        for (const [c, k] of Object.entries(batchUnsafe)) unsafe[c] = (unsafe[c] ?? 0) + k;
        if (lines) { writeSync(outFd, lines); fsyncSync(outFd); }
        committed += Buffer.byteLength(lines);
        writeSync(progFd, JSON.stringify({ bytes: committed, units, ...(Object.keys(batchUnsafe).length ? { unsafe: batchUnsafe } : {}) }) + '\n');
        fsyncSync(progFd);
        nextCommit += n;
        ready -= n;
      }
      report();
    };

    const worker = async () => {
      while (nextRun < todo.length && failure === null) {
        const i = nextRun++;
        try {
          results[i] = await runUnit(o, todo[i]!);
          tokens += results[i]!.tokens;
          promptTokens += results[i]!.promptTokens;
          cachedTokens += results[i]!.cachedTokens;
          commit(false);
        } catch (e) {
          failure ??= e as Error;
        }
      }
    };
    report();
    await Promise.all(Array.from({ length: Math.max(1, Math.min(o.window, todo.length)) }, worker));
    if (failure) throw failure;
    commit(true);
    const s = seconds();
    return {
      method: o.method, out: o.out, units: o.units.length, resumed_units: resumed, kept, rejected, duplicates_removed: dups, unsafe,
      generated_tokens: tokens, prompt_tokens: promptTokens, cached_prompt_tokens: cachedTokens, seconds: s, samples_per_second: keptNow / s,
      tokens_per_second: tokens / s,
    };
  } finally {
    closeSync(outFd);
    closeSync(progFd);
  }
}

/** A unit's generated tokens, and its prompt tokens with those the prefix cache served. */
interface UnitCounts { readonly tokens: number; readonly promptTokens: number; readonly cachedTokens: number }

/** One unit: the method's steps, then the judge and the guard; every generation's seed derives from the unit's. */
async function runUnit(o: SynthOptions, u: WorkUnit): Promise<UnitOutcome & UnitCounts & { scores?: Record<string, unknown> }> {
  let calls = 0;
  let tokens = 0;
  let promptTokens = 0;
  let cachedTokens = 0;
  const count = (g: Gen) => { tokens += g.completionTokens; promptTokens += g.promptTokens; cachedTokens += g.cachedTokens ?? 0; return g; };
  const opts = (extra?: Partial<GenOptions>): GenOptions => ({ ...o.gen, seed: mix32(u.seed, calls++), ...extra });
  const ctx: UnitContext = {
    llm: o.llm, prompts: o.prompts, limits: o.limits, gen: o.gen, rng: new Rng(u.seed),
    chat: async (m, extra) => count(await o.llm.chat(m, opts(extra))),
    complete: async (p, extra) => count(await o.llm.complete(p, opts(extra))),
  };
  const counts = () => ({ tokens, promptTokens, cachedTokens });
  try {
    const r = await u.run(ctx);
    if (!r.ok) return { ...r, ...counts() };
    const scores: Record<string, unknown> = { ...r.candidate.scores };
    if (o.judge) {
      const j = await o.judge.score(r.candidate.instruction, r.candidate.response);
      tokens += j.tokens;
      scores.judge = j.score;
      scores.judge_model = o.judge.model;
      if (o.minScore != null) {
        if (j.score === null) return { ok: false, reason: 'judge_unparsed', ...counts() };
        if (j.score < o.minScore) return { ok: false, reason: 'low_score', ...counts() };
      }
    }
    const guard = o.guard ?? NO_GUARD;
    if (guard !== NO_GUARD) {
      const g = await guard.check(messagesOf(r.candidate));
      scores.guard = g.safe ? 'safe' : g.categories;
      if (!g.safe) return { ok: false, reason: `unsafe:${g.categories.join(',') || 'unknown'}`, ...counts() };
    }
    return { ...r, ...counts(), scores };
  } catch (e) {
    // a request the model's context cannot hold (a long passage; over an endpoint, prompt + max tokens) rejects this unit
    // only: the run goes on, and a rerun does not stop at the same unit again
    if (e instanceof ContextLengthExceeded) return { ok: false, reason: 'context_length_exceeded', ...counts() };
    throw e;
  }
}

function messagesOf(c: Candidate): ChatMessage[] {
  return [...(c.system ? [{ role: 'system', content: c.system }] : []), { role: 'user', content: c.instruction }, { role: 'assistant', content: c.response }];
}

function line(o: SynthOptions, u: WorkUnit, c: Candidate, scores: Record<string, unknown>): Record<string, unknown> {
  const provenance = { id: u.id, method: o.method, model: o.llm.name, seed: u.seed, params: o.params, source: c.source, scores };
  return o.format === 'messages' ? { messages: messagesOf(c), provenance } : { prompt: c.instruction, completion: c.response, provenance };
}
