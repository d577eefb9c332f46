// floe synth throughput: samples/s and generated tokens/s of a synth run vs the same engine's steady 16-stream decode rate
// (target: synth tokens/s ≥ 70 % of it on the 1B shape). One engine in-process, measured back to back.
//
// usage: node --import tsx bench/synth.ts [--shape 1b|small | --model PATH] [--threads N] [--units N] [--max-tokens N]
//          [--method self-instruct|magpie] [--streams 16] [--quick] [--out FILE]
// --quick: floe-brown and a few short units: a pipeline check, not a measurement.
// The bench shapes are random-weight GGUFs without a chat template: floe-brown's Llama 3 template is used for them.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CACHE_DIR } from './harness/build.js';
import { ensureGguf } from './gguf-gen.js';
import { SHAPES } from './shapes.js';
import { burstPrompts } from './serve-trace.js';
import { machineInfo, machineLine } from './machine.js';
import { startEngine } from '../src/engine/client.js';
import type { EngineClient } from '../src/engine/protocol.js';
import { loadChatTemplate } from '../src/formats/chat-template.js';
import { DEFAULT_SAMPLING } from '../src/model/sampler.js';
import { loadTextTools } from '../src/serve/server.js';
import { DEFAULT_LIMITS } from '../src/platform/synth/filters.js';
import { EngineLlm } from '../src/platform/synth/llm.js';
import { magpieUnits, parseSeeds, selfInstructUnits } from '../src/platform/synth/methods.js';
import { LshIndex } from '../src/platform/synth/minhash.js';
import { runSynth } from '../src/platform/synth/pipeline.js';
import { PromptSet } from '../src/platform/synth/prompts.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const BROWN = path.join(ROOT, 'models', 'floe-brown');

interface Options { shape: string; model: string | null; threads: number; units: number; maxTokens: number; method: string; streams: number; quick: boolean; out: string | null }

function parseOptions(argv: string[]): Options {
  const o: Options = { shape: '1b', model: null, threads: os.cpus().length, units: 128, maxTokens: 128, method: 'self-instruct', streams: 16, quick: false, out: null };
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
      case '--quick': o.quick = true; break;
      case '--out': o.out = v(); break;
      default: throw new Error(`unknown option ${a}`);
    }
  }
  if (!(o.shape in SHAPES)) throw new Error(`--shape expects one of ${Object.keys(SHAPES).join(', ')}, got ${o.shape}`);
  if (o.method !== 'self-instruct' && o.method !== 'magpie') throw new Error(`--method expects self-instruct or magpie, got ${o.method}`);
  if (o.quick) Object.assign(o, { model: o.model ?? BROWN, units: 24, maxTokens: 48 });
  return o;
}

/** `streams` requests of `maxTokens` tokens at once (EOS ignored): tokens/s while all of them decode (first token of the last to start → first to finish). */
async function decodeRate(engine: EngineClient, streams: number, maxTokens: number, vocab: number, sampling: { temperature: number; topP: number } = { temperature: 0, topP: 1 }): Promise<number> {
  const prompts = burstPrompts(streams, 64, vocab, 11);
  const stamps: number[][] = prompts.map(() => []);
  await Promise.all(prompts.map(async (p, i) => {
    for await (const out of engine.generate({
      id: `decode-${i}-${Math.random()}`, promptIds: p, sampling: { ...DEFAULT_SAMPLING, ...sampling, logitBias: null }, maxTokens, n: 1, stop: [], stopTokenIds: [],
      ignoreEos: true, logprobs: null, promptLogprobs: null, skipSpecialTokens: true,
    })) for (let k = 0; k < out.tokenIds.length; k++) stamps[i]!.push(performance.now());
  }));
  const start = Math.max(...stamps.map((s) => s[0]!));
  const end = Math.min(...stamps.map((s) => s[s.length - 1]!));
  let tokens = 0;
  for (const s of stamps) for (const t of s) if (t > start && t <= end) tokens++;
  return tokens / ((end - start) / 1000);
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
  const model = o.model ?? ensureGguf(CACHE_DIR, o.shape, SHAPES[o.shape]!.config, 'q8_0', log);
  const tools = await loadTextTools(model);
  if (!tools.tokenizer) throw new Error(`${model} has no tokenizer`);
  const template = tools.template ?? (await loadChatTemplate(BROWN))!;
  const engine = await startEngine({ model, modelId: 'bench', threads: o.threads, maxNumSeqs: o.streams });
  try {
    log(`synth bench: ${path.basename(model)}, ${o.threads} threads, ${o.streams} streams, ${o.units} ${o.method} units, max ${o.maxTokens} tokens per generation`);
    await decodeRate(engine, 2, 4, engine.info.vocabSize); // warm-up
    const decode = await decodeRate(engine, o.streams, o.maxTokens, engine.info.vocabSize);
    log(`  ${o.streams}-stream steady decode: ${decode.toFixed(1)} tok/s`);
    // the same sampling as the synth run (temperature 0.8, top-p 0.95): on a random-weight model the distribution is
    // nearly uniform, so top-p keeps most of the vocabulary and sampling itself costs more than the forward
    const decodeSampled = await decodeRate(engine, o.streams, o.maxTokens, engine.info.vocabSize, { temperature: 0.8, topP: 0.95 });
    log(`  ${o.streams}-stream steady decode, synth's sampling (T 0.8, top-p 0.95): ${decodeSampled.toFixed(1)} tok/s`);
    const llm = new EngineLlm(engine, tools.tokenizer, template, 'bench');
    const seeds = parseSeeds(fs.readFileSync(path.join(ROOT, 'data/synth/seeds.jsonl'), 'utf8'), 'seeds.jsonl');
    const units = o.method === 'magpie' ? magpieUnits(o.units, 1) : selfInstructUnits(seeds, o.units, 1, new LshIndex(0.7));
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'floe-bench-synth-')), 'out.jsonl');
    const before = await engine.stats();
    const s = await runSynth({
      method: o.method, units, llm, prompts: new PromptSet([path.join(ROOT, 'data/synth')]), out, format: 'messages', limits: DEFAULT_LIMITS,
      dedupThreshold: 0.7, window: 2 * o.streams, gen: { maxTokens: o.maxTokens, temperature: 0.8, topP: 0.95 }, params: { bench: true },
    });
    const after = await engine.stats();
    const synthTps = s.generated_tokens / s.seconds;
    const promptTps = (after.promptTokens - before.promptTokens) / s.seconds;
    log(`  synth: ${s.kept} kept of ${s.units} units, ${s.generated_tokens} generated tokens in ${s.seconds.toFixed(1)} s = ${s.samples_per_second.toFixed(2)} samples/s, ` +
      `${synthTps.toFixed(1)} tok/s (${(100 * synthTps / decode).toFixed(0)} % of ${o.streams}-stream decode), prompt tokens ${promptTps.toFixed(0)}/s`);
    const result = {
      machine, model: path.basename(model), threads: o.threads, streams: o.streams, units: o.units, method: o.method, max_tokens: o.maxTokens, quick: o.quick, notes,
      decode_tps: decode, decode_sampled_tps: decodeSampled, synth_tps: synthTps, synth_over_decode: synthTps / decode, synth_over_decode_sampled: synthTps / decodeSampled, target: 0.7, samples_per_second: s.samples_per_second,
      kept: s.kept, rejected: s.rejected, generated_tokens: s.generated_tokens, prompt_tps: promptTps, seconds: s.seconds,
      tokens_per_step: (after.generatedTokens - before.generatedTokens) / (after.steps - before.steps),
    };
    for (const n of notes) log(`  note: ${n}`);
    const text = JSON.stringify(result, null, 2) + '\n';
    if (o.out) fs.writeFileSync(o.out, text);
    process.stdout.write(text);
  } finally {
    await engine.shutdown(0);
  }
}

main().catch((e: unknown) => { process.stderr.write(`synth bench: ${(e as Error).stack ?? e}\n`); process.exit(1); });
