// Speculative-decoding benchmark: acceptance and tokens/s on real text (floe-brown + draft / ngram / suffix), the verify cost
// curve and the oracle / always-wrong bounds on the 1B shape.
//
// usage: node --import tsx bench/speculative.ts [--parts text,verify,bounds] [--quick] [--threads N] [--out FILE]
//          text:   [--target models/floe-brown] [--draft models/floe-brown-draft] [--modes draft,ngram,suffix]
//                  [--text-k 4] [--max-tokens 128] [--prompts 4] [--text-rounds 1] [--ab-costs]
//          verify, bounds: [--shape 1b] [--formats q8_0,fp8,bf16] (f16 too) [--k 1,2,...,8] [--context 256] [--reps 7] [--decode 64]
// See bench/README.md. T tokens, V vocab, C context tokens, k proposed tokens per step.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { nativeCounters } from '../src/backend/native.js';
import type { LoadedModel } from '../src/formats/load.js';
import { defaultKvDtype, generate, type GenerateResult } from '../src/model/generate.js';
import { KvCache } from '../src/model/kv-cache.js';
import { LlamaModel } from '../src/model/llama.js';
import { openModel } from '../src/model/open.js';
import { type Proposal, type Proposer, type ProposeRequest, type SpeculativeSpec, SuffixProposer } from '../src/model/speculation.js';
import { loadBrown, splitBrown } from '../src/train/corpus.js';
import { CACHE_DIR } from './harness/build.js';
import { ensureFp8Dir } from './fp8-gen.js';
import { ensureGguf } from './gguf-gen.js';
import { SHAPES } from './shapes.js';
import { machineInfo, machineLine } from './machine.js';
import { firstWords, passage } from './harness/text.js';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(BENCH);
const BLOCK = 16;
const START = performance.now();
const log = (s: string): void => { process.stderr.write(`[${((performance.now() - START) / 1000).toFixed(0).padStart(4)} s] ${s}\n`); };

type Part = 'text' | 'verify' | 'bounds';
type Format = 'q8_0' | 'fp8' | 'bf16' | 'f16';
type TextMode = 'draft' | 'ngram' | 'suffix';

interface Options {
  parts: Part[];
  quick: boolean;
  threads: number;
  out: string | null;
  target: string;
  draft: string;
  modes: TextMode[];
  textK: number;
  maxTokens: number;
  prompts: number;
  textRounds: number; // each prompt's runs (plain, then every mode) repeated in turn, times summed
  abCosts: boolean; // each mode also runs with k by the timing-free rule (speculativeCosts: false) as `MODE-h`, in the same rounds
  shape: string;
  formats: Format[];
  ks: number[];
  context: number;
  reps: number;
  decode: number;
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = {
    parts: ['text', 'verify', 'bounds'], quick: false, threads: os.availableParallelism(), out: null,
    target: path.join(ROOT, 'models', 'floe-brown'), draft: path.join(ROOT, 'models', 'floe-brown-draft'), modes: ['draft', 'ngram', 'suffix'],
    textK: 4, maxTokens: 128, prompts: 4, textRounds: 1, abCosts: false,
    shape: '1b', formats: ['q8_0', 'fp8', 'bf16'], ks: [1, 2, 3, 4, 5, 6, 7, 8], context: 256, reps: 7, decode: 64,
  };
  const set = new Set<string>();
  const list = (v: string | undefined, flag: string): string[] => {
    if (!v) throw new Error(`${flag} needs a comma-separated value`);
    return v.split(',').map((s) => s.trim()).filter(Boolean);
  };
  const posInt = (v: string | undefined, flag: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} needs a positive integer, got ${v}`);
    return n;
  };
  const oneOf = <T extends string>(vs: string[], allowed: readonly T[], flag: string): T[] => {
    for (const v of vs) if (!allowed.includes(v as T)) throw new Error(`${flag}: '${v}' is not one of ${allowed.join(', ')}`);
    return vs as T[];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    set.add(a);
    switch (a) {
      case '--parts': o.parts = oneOf(list(v, a), ['text', 'verify', 'bounds'] as const, a); i++; break;
      case '--quick': o.quick = true; break;
      case '--threads': o.threads = posInt(v, a); i++; break;
      case '--out': o.out = v ?? null; i++; break;
      case '--target': o.target = v!; i++; break;
      case '--draft': o.draft = v!; i++; break;
      case '--modes': o.modes = oneOf(list(v, a), ['draft', 'ngram', 'suffix'] as const, a); i++; break;
      case '--text-k': o.textK = posInt(v, a); i++; break;
      case '--max-tokens': o.maxTokens = posInt(v, a); i++; break;
      case '--prompts': o.prompts = posInt(v, a); i++; break;
      case '--text-rounds': o.textRounds = posInt(v, a); i++; break;
      case '--ab-costs': o.abCosts = true; break;
      case '--shape': o.shape = v!; i++; break;
      case '--formats': o.formats = oneOf(list(v, a), ['q8_0', 'fp8', 'bf16', 'f16'] as const, a); i++; break;
      case '--k': o.ks = list(v, a).map((s) => posInt(s, a)); i++; break;
      case '--context': o.context = posInt(v, a); i++; break;
      case '--reps': o.reps = posInt(v, a); i++; break;
      case '--decode': o.decode = posInt(v, a); i++; break;
      default: throw new Error(`unknown option ${a} (see the usage line at the top of bench/speculative.ts)`);
    }
  }
  if (!SHAPES[o.shape]) throw new Error(`--shape: '${o.shape}' is not one of ${Object.keys(SHAPES).join(', ')}`);
  // --quick: a pipeline check on the small shape with few repetitions; explicit flags still win
  if (o.quick) {
    if (!set.has('--shape')) o.shape = 'small';
    if (!set.has('--context')) o.context = 64;
    if (!set.has('--reps')) o.reps = 2;
    if (!set.has('--decode')) o.decode = 16;
    if (!set.has('--max-tokens')) o.maxTokens = 32;
    if (!set.has('--prompts')) o.prompts = 1;
  }
  return o;
}


const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function argmax(x: Float32Array, off = 0, n = x.length): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[off + i]! > x[off + best]!) best = i;
  return best;
}

/** Deterministic ids in [0, V) that skip the bench vocabulary's control tokens (256, 257). */
function randomIds(V: number, n: number, seed = 2463534242): number[] {
  const ids: number[] = [];
  let x = seed >>> 0;
  while (ids.length < n) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    const id = x % V;
    if (id !== 256 && id !== 257) ids.push(id);
  }
  return ids;
}

// ---------------------------------------------------------------- the 1B shape: files and loading

/** The cached random-weight model file of a format (GGUF for q8_0 / bf16 / f16, an HF fp8 directory), made when missing. */
function benchModelPath(shape: string, fmt: Format): string {
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const c = SHAPES[shape]!.config;
  return fmt === 'fp8' ? ensureFp8Dir(CACHE_DIR, shape, c, log) : ensureGguf(CACHE_DIR, shape, c, fmt, log);
}

interface Bench1 {
  loaded: LoadedModel;
  model: LlamaModel;
}

async function openBench(shape: string, fmt: Format, threads: number): Promise<Bench1> {
  // through openModel, as generate and serve load it: the decode layouts (q8_0r16, bf16r16, fp8r16, ...); sessions
  // 7-16 loaded the file without them and timed layouts no product path decodes
  const { loaded, model } = await openModel(benchModelPath(shape, fmt), { backend: 'native', threads, tokenizerOptional: true });
  return { loaded, model };
}

/** One sequence over an identity block table (slot == position), as generate() lays it out. */
class Seq {
  readonly numBlocks: number;
  readonly blockTable: Int32Array;
  readonly kv: KvCache;
  // one logits buffer for every step, as the engine's runner and generate() keep: a fresh (T, V) array per step costs
  // its page faults (0.5 MB a row on the 1B vocabulary), which grew this bench's verify cost with k (session 17)
  private logits = new Float32Array(0);
  constructor(readonly model: LlamaModel, capacity: number) {
    const c = model.config;
    this.numBlocks = Math.ceil(capacity / BLOCK);
    this.blockTable = Int32Array.from({ length: this.numBlocks }, (_, i) => i);
    this.kv = new KvCache(c.numLayers, this.numBlocks, BLOCK, c.numKvHeads, c.headDim, defaultKvDtype(model));
  }

  /** Forward `tokens` (T) at positions start.. ; logits (T, V) for every row when `all`, else (1, V) for the last. */
  step(tokens: readonly number[], start: number, all: boolean): Float32Array {
    const T = tokens.length;
    const positions = Int32Array.from({ length: T }, (_, i) => start + i);
    const need = (all ? T : 1) * this.model.config.vocabSize;
    if (this.logits.length < need) this.logits = new Float32Array(need);
    return this.model.forward({
      tokens: Int32Array.from(tokens), positions, slots: positions,
      attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(start + T), blockTables: this.blockTable, maxBlocks: this.numBlocks },
      logitRows: all ? Int32Array.from({ length: T }, (_, i) => i) : Int32Array.of(T - 1),
    }, this.kv, undefined, this.logits);
  }
}

// ---------------------------------------------------------------- part verify: the cost of one forward over k + 1 positions

interface VerifyRow {
  format: Format;
  k: number;
  positions: number;
  ms: number; // median wall time of one forward over k + 1 positions (every row's logits)
  ratio: number; // ms ÷ the one-token decode step's ms
  cpu_ratio: number; // the same in process CPU time (holds up better on a busy machine)
}

async function partVerify(o: Options, result: Record<string, unknown>): Promise<void> {
  const rows: VerifyRow[] = [];
  for (const fmt of o.formats) {
    const b = await openBench(o.shape, fmt, o.threads);
    const V = b.model.config.vocabSize;
    const kMax = Math.max(...o.ks);
    const seq = new Seq(b.model, o.context + kMax + 1);
    const ctx = randomIds(V, o.context);
    seq.step(ctx.slice(0, 16), 0, false); // page-in and thread start outside the timed region
    const last = seq.step(ctx, 0, false);
    const first = argmax(last);
    // the k + 1 tokens a verify step feeds: the last sampled token and k proposals (their values do not change the cost)
    const feed = [first, ...randomIds(V, kMax, 99)];
    const sizes = [1, ...o.ks.map((k) => k + 1)];
    const wall = new Map<number, number[]>(sizes.map((s) => [s, []]));
    const cpu = new Map<number, number[]>(sizes.map((s) => [s, []]));
    const counters0 = nativeCounters();
    for (const s of sizes) seq.step(feed.slice(0, s), o.context, true); // warm-up per size (workspace growth)
    // repetitions interleave the sizes, so that a change in machine load hits every size alike
    for (let r = 0; r < o.reps; r++) {
      for (const s of sizes) {
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        seq.step(feed.slice(0, s), o.context, true); // rewrites the same KV slots each time
        wall.get(s)!.push(performance.now() - t0);
        const c = process.cpuUsage(c0);
        cpu.get(s)!.push((c.user + c.system) / 1000);
      }
    }
    const nativeRan = Object.entries(nativeCounters()).some(([k, v]) => v !== (counters0[k] ?? 0));
    if (!nativeRan) throw new Error(`verify ${fmt}: no native kernel counter moved: the native backend did not run`);
    const w1 = median(wall.get(1)!), c1 = median(cpu.get(1)!);
    for (const k of o.ks) {
      const ms = median(wall.get(k + 1)!);
      rows.push({ format: fmt, k, positions: k + 1, ms, ratio: ms / w1, cpu_ratio: median(cpu.get(k + 1)!) / c1 });
    }
    log(`verify ${o.shape} ${fmt}: decode step ${w1.toFixed(1)} ms; k+1 forward / decode step: ${rows.filter((r) => r.format === fmt).map((r) => `k=${r.k} ${r.ratio.toFixed(2)}`).join(', ')}`);
    result.verify_decode_ms = { ...(result.verify_decode_ms as object | undefined), [fmt]: w1 };
    b.loaded.dispose();
  }
  result.verify = rows;
  console.log(`\nverify cost: one forward over k + 1 positions ÷ one decode step (${o.shape}, context ${o.context}, ${o.threads} threads, median of ${o.reps})`);
  console.log(['format', ...o.ks.map((k) => `k=${k}`)].map((s) => s.padStart(8)).join(''));
  for (const fmt of o.formats) {
    console.log([fmt, ...o.ks.map((k) => rows.find((r) => r.format === fmt && r.k === k)!.ratio.toFixed(2))].map((s) => s.padStart(8)).join(''));
  }
  // Past k ~ 5 a verify forward is compute-bound and keeps its milliseconds while the decode step moves with the host's
  // memory phase (session 37: 29-46 ms for the same 1B fp8 step), so the ratios of two runs compare only with these.
  console.log(`\nthe same forwards in ms (decode step first)`);
  console.log(['format', 'step', ...o.ks.map((k) => `k=${k}`)].map((s) => s.padStart(8)).join(''));
  const steps = result.verify_decode_ms as Record<string, number>;
  for (const fmt of o.formats) {
    console.log([fmt, steps[fmt]!.toFixed(1), ...o.ks.map((k) => rows.find((r) => r.format === fmt && r.k === k)!.ms.toFixed(1))].map((s) => s.padStart(8)).join(''));
  }
}

// ---------------------------------------------------------------- greedy generation, with and without a proposer

interface GenRun {
  ids: number[];
  prompt_ms: number;
  decode_ms: number;
  cpu_ms: number; // process CPU time of the whole call (prefill + decode; holds up better than wall time on a busy machine)
  generated: number;
  proposed: number;
  accepted: number;
}

/** Greedy generation of exactly `maxTokens` tokens (no stop tokens), speculating with `spec` when given. */
function greedy(model: LlamaModel, prompt: readonly number[], maxTokens: number, spec?: SpeculativeSpec, k?: number, costs?: boolean): GenRun {
  const c0 = process.cpuUsage();
  const r: GenerateResult = generate(model, prompt, {
    maxTokens, sampling: { temperature: 0 }, stopTokenIds: [],
    ...(spec === undefined ? {} : { speculative: spec, numSpeculativeTokens: k }),
    ...(costs === undefined ? {} : { speculativeCosts: costs }),
  });
  const c = process.cpuUsage(c0);
  const s = r.timings.speculative;
  if (spec !== undefined && s === undefined) throw new Error('generate() with a proposer reported no speculative timings: speculation did not run');
  return { ids: r.outputIds, prompt_ms: r.timings.promptMs, decode_ms: r.timings.decodeMs, cpu_ms: (c.user + c.system) / 1000, generated: r.outputIds.length, proposed: s?.proposed ?? 0, accepted: s?.accepted ?? 0 };
}

/** Index of the first differing position, or -1 when equal. */
function firstDiff(a: readonly number[], b: readonly number[]): number {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return -1;
}

// ---------------------------------------------------------------- part text: floe-brown with its draft, ngram and suffix

type Workload = 'edit' | 'document' | 'code' | 'free' | 'repeat';
const COPYING: readonly Workload[] = ['edit', 'document', 'code'];

/**
 * Prompts per workload, from Brown held-out records (never trained on). floe-brown follows no instructions, so each
 * copying prompt ends with the first words of what an instruction-following model would write (the copy's start).
 */
function textPrompts(n: number): Record<Workload, string[]> {
  const held = splitBrown(loadBrown()).heldOut;
  const pick = (offset: number): string[] => Array.from({ length: n }, (_, i) => held[(offset + i * 37) % held.length]!);
  const edit = pick(1).map((r) => { const p = passage(r, 450); return `Rewrite with one word changed: ${p}\n${firstWords(p, 6)}`; });
  const document = pick(2).map((r) => {
    const p = passage(r, 450);
    const second = passage(p.slice(passage(p, 1).length), 200);
    return `${p}\n\nQuestion: What does the passage above say? Answer in its own words.\nAnswer: "${firstWords(second || p, 5)}`;
  });
  const code = pick(3).map((r) => {
    const words = [...new Set((r.toLowerCase().match(/[a-z]{4,}/g) ?? []))].slice(0, 8);
    const fn = (w: string): string => `def show_${w}(x):\n    print("${w}", x)\n    return x\n\n`;
    return words.slice(0, -1).map(fn).join('') + `def show_${words.at(-1)!}(x):\n`;
  });
  const free = pick(4).map((r) => r);
  // a call whose output an earlier call produced (a retry, the same question again, an agent's recurring step): what
  // suffix's index over finished requests is for; its prompts are taught once, untimed, before the rounds
  const repeat = pick(5).map((r) => r);
  return { edit, document, code, free, repeat };
}

interface TextRow {
  workload: Workload;
  prompt: number;
  mode: 'none' | TextMode | `${TextMode}-h`; // -h: k by the timing-free rule (--ab-costs)
  k: number;
  prompt_tokens: number;
  generated: number;
  prompt_ms: number;
  decode_ms: number;
  e2e_tps: number; // generated ÷ (prompt + decode time)
  decode_tps: number;
  cpu_ms: number;
  proposed: number;
  accepted: number;
  identical: boolean; // greedy output ids equal the run without speculation
}

async function partText(o: Options, result: Record<string, unknown>): Promise<void> {
  const t = await openModel(o.target, { backend: 'native', threads: o.threads });
  const d = o.modes.includes('draft') ? await openModel(o.draft, { backend: 'native', threads: o.threads }) : null;
  const tok = t.tokenizer;
  if (!tok) throw new Error(`${o.target}: no tokenizer`);
  // suffix without its memory of finished calls, except on the repeat workload: each prompt is timed several times,
  // and the index would draft a round's output from the round before
  const suffixOnce: Proposer = (() => {
    const inner = new SuffixProposer();
    return { name: 'suffix', free: true, propose: (r: readonly ProposeRequest[]) => inner.propose(r), release: (id: string) => inner.release(id) };
  })();
  const specOf = (m: TextMode, w: Workload): SpeculativeSpec => (m === 'draft' ? d!.model : m === 'suffix' && w !== 'repeat' ? suffixOnce : m);
  const prompts = textPrompts(o.prompts);
  const rows: TextRow[] = [];
  const counters0 = nativeCounters();
  for (const w of Object.keys(prompts) as Workload[]) {
    prompts[w].forEach((text, i) => {
      let ids = tok.encode(text);
      if (w === 'free' || w === 'repeat') ids = ids.slice(0, 64);
      const row = (mode: TextRow['mode'], r: GenRun, base: GenRun | null): TextRow => ({
        workload: w, prompt: i, mode, k: mode === 'none' ? 0 : o.textK, prompt_tokens: ids.length, generated: r.generated,
        prompt_ms: r.prompt_ms, decode_ms: r.decode_ms, e2e_tps: r.generated / ((r.prompt_ms + r.decode_ms) / 1000), decode_tps: r.generated / (r.decode_ms / 1000), cpu_ms: r.cpu_ms,
        proposed: r.proposed, accepted: r.accepted, identical: base === null || firstDiff(r.ids, base.ids) < 0,
      });
      greedy(t.model, ids.slice(0, 8), 4); // warm-up
      if (w === 'repeat' && o.modes.includes('suffix')) greedy(t.model, ids, o.maxTokens, 'suffix', o.textK); // teaches the index
      // and each mode (twin) once, short, before the first timed round: the first speculative call of a process pays
      // for compiling the proposer, the adaptive k and the verifier (+35-50 ms on floe-brown, 3-5% of a workload's
      // decode time), which would fall on whichever twin runs first
      if (i === 0) for (const m of o.modes) for (const c of o.abCosts ? [true, false] : [undefined]) greedy(t.model, ids, 16, specOf(m, w), o.textK, c);
      // rounds in turn (plain, then every mode), so that a change in the host's speed hits all of them alike
      for (let round = 0; round < o.textRounds; round++) {
        const base = greedy(t.model, ids, o.maxTokens);
        rows.push(row('none', base, null));
        for (const m of o.modes) {
          // --ab-costs: the twins in turn, each first in every other round
          const twins: [TextRow['mode'], boolean | undefined][] = o.abCosts ? [[m, true], [`${m}-h`, false]] : [[m, undefined]];
          if (round % 2 === 1) twins.reverse();
          for (const [label, costs] of twins) {
            const r = greedy(t.model, ids, o.maxTokens, specOf(m, w), o.textK, costs);
            rows.push(row(label, r, base));
            if (firstDiff(r.ids, base.ids) >= 0) log(`text ${w} #${i} ${label}: greedy output differs from the run without speculation at token ${firstDiff(r.ids, base.ids)}`);
          }
        }
        if (i === 0 && round === 0) log(`text ${w} #0: ${JSON.stringify(tok.decode(base.ids).slice(0, 160))}`);
      }
    });
  }
  if (!Object.entries(nativeCounters()).some(([k, v]) => v !== (counters0[k] ?? 0))) throw new Error('text: no native kernel counter moved: the native backend did not run');
  // per workload × mode: acceptance and tokens/s summed over the prompts, speedup against the same prompts without speculation
  const sum = (rs: TextRow[], f: (r: TextRow) => number): number => rs.reduce((a, r) => a + f(r), 0);
  const summary: Record<string, unknown>[] = [];
  console.log(`\ntext: ${path.basename(o.target)}, greedy, ${o.maxTokens} tokens, k ${o.textK} (adaptive below), ${o.prompts} prompt(s) per workload, ${o.textRounds} round(s), ${o.threads} threads`);
  console.log(['workload', 'mode', 'accept', 'tok/step', 'e2e tok/s', 'base tok/s', 'speedup', 'decode x', 'cpu x', 'identical'].map((s) => s.padStart(11)).join(''));
  for (const w of Object.keys(prompts) as Workload[]) {
    const base = rows.filter((r) => r.workload === w && r.mode === 'none');
    const baseTps = sum(base, (r) => r.generated) / (sum(base, (r) => r.prompt_ms + r.decode_ms) / 1000);
    const baseDec = sum(base, (r) => r.generated) / (sum(base, (r) => r.decode_ms) / 1000);
    for (const m of o.modes.flatMap((x): TextRow['mode'][] => (o.abCosts ? [x, `${x}-h`] : [x]))) {
      const rs = rows.filter((r) => r.workload === w && r.mode === m);
      const proposed = sum(rs, (r) => r.proposed), accepted = sum(rs, (r) => r.accepted);
      const e2e = sum(rs, (r) => r.generated) / (sum(rs, (r) => r.prompt_ms + r.decode_ms) / 1000);
      const dec = sum(rs, (r) => r.generated) / (sum(rs, (r) => r.decode_ms) / 1000);
      const generated = sum(rs, (r) => r.generated);
      const s = {
        workload: w, copying: COPYING.includes(w), mode: m, acceptance: proposed > 0 ? accepted / proposed : 0, proposed, accepted,
        tokens_per_step: generated / (generated - accepted), // each target step emits its accepted drafts + 1
        e2e_tps: e2e, base_e2e_tps: baseTps, speedup: e2e / baseTps, decode_speedup: dec / baseDec,
        cpu_speedup: sum(base, (r) => r.cpu_ms) / sum(rs, (r) => r.cpu_ms), identical: rs.every((r) => r.identical), // cpu: the same tokens, CPU time without ÷ with
      };
      summary.push(s);
      console.log([w, m, s.acceptance.toFixed(2), s.tokens_per_step.toFixed(2), e2e.toFixed(1), baseTps.toFixed(1), `${s.speedup.toFixed(2)}x`, `${s.decode_speedup.toFixed(2)}x`, `${s.cpu_speedup.toFixed(2)}x`, String(s.identical)].map((x) => x.padStart(11)).join(''));
    }
  }
  const free = summary.filter((s) => s.workload === 'free');
  result.text = { rows, summary, free_loses_under_5pct: Object.fromEntries(free.map((s) => [s.mode as string, (s.speedup as number) >= 0.95])) };
  t.loaded.dispose();
  d?.loaded.dispose();
}

// ---------------------------------------------------------------- part bounds: oracle and always-wrong proposers on the bench shape

/** Proposes the target's own greedy continuation (precomputed), or, with `wrong`, a token that is never it. */
class ScriptedProposer implements Proposer {
  readonly name: string;
  constructor(private readonly continuation: readonly number[], private readonly wrong: boolean, private readonly V: number) {
    this.name = wrong ? 'always-wrong' : 'oracle';
  }
  propose(reqs: readonly ProposeRequest[]): Proposal[] {
    return reqs.map((r) => {
      const done = r.tokens.length - r.promptLen; // outputs so far
      // off the precomputed path (a verify row's argmax differed from the decode step's): nothing to propose
      for (let i = 0; i < done; i++) if (r.tokens[r.promptLen + i] !== this.continuation[i]) return { tokens: [] };
      const next = this.continuation.slice(done, done + r.k);
      return { tokens: this.wrong ? next.map((id) => (id + 1) % this.V) : next };
    });
  }
}

interface BoundRow {
  format: Format;
  proposer: 'oracle' | 'always-wrong';
  k: number;
  decode_ms: number;
  base_decode_ms: number;
  speedup: number; // decode time without ÷ with speculation (same prompt, same tokens)
  e2e_speedup: number; // the same with the prefill counted
  cpu_speedup: number; // process CPU time (prefill + decode) without ÷ with speculation
  proposed: number;
  accepted: number;
  steps_estimate: number; // verify steps: generated tokens - accepted drafts
  identical: boolean;
}

async function partBounds(o: Options, result: Record<string, unknown>): Promise<void> {
  const rows: BoundRow[] = [];
  for (const fmt of o.formats) {
    const b = await openBench(o.shape, fmt, o.threads);
    const V = b.model.config.vocabSize;
    const ctx = randomIds(V, o.context);
    greedy(b.model, ctx.slice(0, 16), 2); // page-in and thread start
    const script = greedy(b.model, ctx, o.decode); // the first run: its tokens are the oracle's script
    log(`bounds ${o.shape} ${fmt}: plain decode ${(o.decode / (script.decode_ms / 1000)).toFixed(2)} tok/s`);
    for (const k of o.ks) {
      // a run without speculation next to each pair, so that a drift in machine load between k values cancels
      const base = greedy(b.model, ctx, o.decode);
      if (firstDiff(base.ids, script.ids) >= 0) throw new Error(`bounds ${fmt}: two greedy runs without speculation differ at token ${firstDiff(base.ids, script.ids)}`);
      for (const wrong of [false, true]) {
        const r = greedy(b.model, ctx, o.decode, new ScriptedProposer(script.ids, wrong, V), k);
        const row: BoundRow = {
          format: fmt, proposer: wrong ? 'always-wrong' : 'oracle', k, decode_ms: r.decode_ms, base_decode_ms: base.decode_ms,
          speedup: base.decode_ms / r.decode_ms, e2e_speedup: (base.prompt_ms + base.decode_ms) / (r.prompt_ms + r.decode_ms), cpu_speedup: base.cpu_ms / r.cpu_ms,
          proposed: r.proposed, accepted: r.accepted, steps_estimate: r.generated - r.accepted, identical: firstDiff(r.ids, script.ids) < 0,
        };
        rows.push(row);
        if (!row.identical) log(`bounds ${fmt} ${row.proposer} k=${k}: output differs from plain greedy at token ${firstDiff(r.ids, script.ids)}`);
      }
      const [or, wr] = rows.slice(-2);
      log(`bounds ${fmt} k=${k}: oracle ${or!.speedup.toFixed(2)}x (cpu ${or!.cpu_speedup.toFixed(2)}x, accepted ${or!.accepted}/${or!.proposed}), ` +
        `always-wrong ${wr!.speedup.toFixed(2)}x (cpu ${wr!.cpu_speedup.toFixed(2)}x, ${wr!.proposed} proposed over ${wr!.steps_estimate} steps)`);
    }
    b.loaded.dispose();
  }
  result.bounds = rows;
  console.log(`\nbounds: decode speedup with speculation (${o.shape}, context ${o.context}, ${o.decode} tokens, ${o.threads} threads; always-wrong: adaptive k falls to 1)`);
  console.log(['format', 'proposer', ...o.ks.map((k) => `k=${k}`)].map((s) => s.padStart(13)).join(''));
  for (const fmt of o.formats) {
    for (const p of ['oracle', 'always-wrong'] as const) {
      console.log([fmt, p, ...o.ks.map((k) => `${rows.find((r) => r.format === fmt && r.proposer === p && r.k === k)!.speedup.toFixed(2)}x`)].map((s) => s.padStart(13)).join(''));
    }
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const machine = machineInfo();
  console.log(`machine: ${machineLine(machine)}`);
  const result: Record<string, unknown> = { bench: 'speculative', date: new Date().toISOString(), machine, options: o };
  if (o.parts.includes('text')) await partText(o, result);
  if (o.parts.includes('verify')) await partVerify(o, result);
  if (o.parts.includes('bounds')) await partBounds(o, result);
  result.load_avg_at_end = os.loadavg();
  const out = o.out ?? path.join(BENCH, 'results', `speculative-${new Date().toISOString().slice(0, 19).replace(/[T:]/g, '-')}${o.quick ? '-quick' : ''}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(result, null, 1) + '\n');
  log(`wrote ${out}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`speculative: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
