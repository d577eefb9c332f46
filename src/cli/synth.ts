// `floe synth`: synthetic instruction data (self-instruct, evol-instruct, Magpie, from documents) on floe's engine in-process
// or against an OpenAI-compatible endpoint; filtered, deduplicated, resumable JSONL that `floe finetune` reads.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BackendName } from '../backend/select.js';
import { startEngine } from '../engine/client.js';
import type { EngineClient } from '../engine/protocol.js';
import { ParagraphChunker } from '../platform/synth/chunk.js';
import { Guard } from '../platform/guard/guard.js';
import { DEFAULT_LIMITS, RuntimeGuard, type GuardFilter } from '../platform/synth/filters.js';
import { Judge } from '../platform/synth/judge.js';
import { EndpointLlm, EngineLlm, type SynthLlm } from '../platform/synth/llm.js';
import {
  evolInstructUnits, fromDocumentsUnits, magpieUnits, METHODS, type MethodName, parseSeeds, selfInstructUnits, type WorkUnit,
} from '../platform/synth/methods.js';
import { LshIndex } from '../platform/synth/minhash.js';
import { runSynth, type SynthProgress } from '../platform/synth/pipeline.js';
import { PromptSet } from '../platform/synth/prompts.js';
import { defaultModelName, loadTextTools, parseSize } from '../serve/server.js';
import { kvCacheDtype, modelOrBuiltin, num, optNum, packageRoot, parse, UsageError } from './args.js';

export async function synthCmd(args: string[]): Promise<number> {
  const str = { type: 'string' } as const;
  const bool = { type: 'boolean' } as const;
  const { values: v, positionals } = parse(args, {
    method: str, model: str, endpoint: str, 'api-key': str, 'endpoint-model': str, num: str, seeds: str, docs: { type: 'string', multiple: true },
    rounds: str, 'questions-per-passage': str, 'chunk-tokens': str, prompts: str, out: str, format: str, 'dedup-threshold': str,
    'guard-model': str, judge: bool, 'min-score': str, 'min-chars': str, 'max-chars': str, 'max-tokens': str, temperature: str, 'top-p': str,
    seed: str, concurrency: str, threads: str, backend: str, 'kv-cache-memory': str, 'kv-cache-dtype': str, 'max-num-seqs': str, json: bool, quiet: bool,
  }, true);
  const method = v.method as MethodName | undefined;
  if (!method || !METHODS.includes(method)) throw new UsageError(`--method expects one of ${METHODS.join(', ')}, got ${method === undefined ? 'nothing' : `'${method}'`}`);
  if (!v.out) throw new UsageError('--out FILE.jsonl is required');
  const docs = [...(v.docs ?? []), ...positionals];
  if (method === 'from-documents' && docs.length === 0) throw new UsageError('from-documents needs --docs FILE... (plain-text files; paragraphs are blank-line separated)');
  if (method !== 'from-documents' && docs.length > 0) throw new UsageError(`--docs / file arguments are for --method from-documents, not ${method}`);
  const format = v.format ?? 'messages';
  if (format !== 'messages' && format !== 'prompt-completion') throw new UsageError(`--format expects messages or prompt-completion, got '${format}'`);
  const backend = v.backend as BackendName | undefined;
  if (backend !== undefined && backend !== 'native' && backend !== 'reference') throw new UsageError(`--backend expects native or reference, got '${backend}'`);
  let kvCacheMemory: number | undefined;
  try { kvCacheMemory = v['kv-cache-memory'] === undefined ? undefined : parseSize(v['kv-cache-memory']); } catch (e) { throw new UsageError(`--kv-cache-memory: ${(e as Error).message}`); }
  const n = num(v.num, 'num', 100, true, { min: 1 });
  const seed = num(v.seed, 'seed', 0, true, { min: 0 });
  const rounds = num(v.rounds, 'rounds', 3, true, { min: 1 });
  const perPassage = num(v['questions-per-passage'], 'questions-per-passage', 1, true, { min: 1 });
  const chunkTokens = num(v['chunk-tokens'], 'chunk-tokens', 256, true, { min: 16 });
  const dedupThreshold = num(v['dedup-threshold'], 'dedup-threshold', 0.7, false, { above: 0, max: 1 });
  const minScore = optNum(v['min-score'], 'min-score', true, { min: 1, max: 5 }) ?? null;
  if (minScore !== null && !v.judge) throw new UsageError('--min-score needs --judge');
  const limits = { ...DEFAULT_LIMITS, minChars: num(v['min-chars'], 'min-chars', DEFAULT_LIMITS.minChars, true, { min: 0 }), maxChars: num(v['max-chars'], 'max-chars', DEFAULT_LIMITS.maxChars, true, { min: 1 }) };
  const gen = {
    maxTokens: num(v['max-tokens'], 'max-tokens', 256, true, { min: 1 }),
    temperature: num(v.temperature, 'temperature', 0.8, false, { min: 0 }),
    topP: num(v['top-p'], 'top-p', 0.95, false, { above: 0, max: 1 }),
  };
  const maxNumSeqs = optNum(v['max-num-seqs'], 'max-num-seqs', true, { min: 1 });
  const engineOpts = { threads: optNum(v.threads, 'threads', true, { min: 1 }), backend, kvCacheMemory, kvDtype: kvCacheDtype(v['kv-cache-dtype']), maxNumSeqs };
  const prompts = new PromptSet([...(v.prompts ? [v.prompts] : []), join(packageRoot(), 'data', 'synth')]);
  const log = v.quiet || v.json ? () => {} : (s: string) => process.stderr.write(s);

  const engines: EngineClient[] = [];
  try {
    // the generating model: floe's engine in-process, or the endpoint (with --model only for its chat template / tokenizer)
    let llm: SynthLlm;
    let count: ((t: string) => number) | undefined;
    let window: number;
    if (v.endpoint) {
      const tools = v.model ? await loadTextTools(v.model) : null;
      llm = await EndpointLlm.open({ url: v.endpoint, apiKey: v['api-key'], model: v['endpoint-model'], template: tools?.template, bos: tools?.tokenizer?.bosToken ?? undefined, eos: tools?.tokenizer?.eosToken ?? undefined });
      if (tools?.tokenizer) count = (t) => tools.tokenizer!.encode(t, { addSpecialTokens: false }).length;
      window = optNum(v.concurrency, 'concurrency', true, { min: 1 }) ?? 16;
    } else {
      const modelPath = modelOrBuiltin(v.model, 'synth');
      const name = defaultModelName(modelPath);
      const [engine, tools] = await Promise.all([startEngine({ model: modelPath, modelId: name, ...engineOpts }), loadTextTools(modelPath)]);
      engines.push(engine);
      if (!tools.tokenizer) throw new Error(`${modelPath} has no tokenizer; synth needs one`);
      llm = new EngineLlm(engine, tools.tokenizer, tools.template, name);
      count = (t) => tools.tokenizer!.encode(t, { addSpecialTokens: false }).length;
      window = optNum(v.concurrency, 'concurrency', true, { min: 1 }) ?? 2 * engine.info.maxNumSeqs;
    }
    let guard: GuardFilter | undefined;
    if (v['guard-model']) {
      const g = await Guard.open(v['guard-model'], engineOpts);
      engines.push(g.engine);
      guard = new RuntimeGuard(g, defaultModelName(v['guard-model']));
    }

    const seedsFile = v.seeds ?? join(packageRoot(), 'data', 'synth', 'seeds.jsonl');
    const seeds = method === 'self-instruct' || method === 'evol-instruct' ? parseSeeds(readFileSync(seedsFile, 'utf8'), seedsFile) : [];
    let units: WorkUnit[];
    if (method === 'self-instruct') {
      const seedIndex = new LshIndex(dedupThreshold);
      seeds.forEach((s, i) => seedIndex.add(`seed-${i}`, s.instruction));
      units = selfInstructUnits(seeds, n, seed, seedIndex);
    } else if (method === 'evol-instruct') {
      units = evolInstructUnits(seeds, n, seed, rounds);
    } else if (method === 'magpie') {
      units = magpieUnits(n, seed);
    } else {
      for (const d of docs) if (!existsSync(d)) throw new UsageError(`--docs: no file ${d}`);
      const chunker = new ParagraphChunker({ maxTokens: chunkTokens, minTokens: Math.floor(chunkTokens / 4), count });
      units = fromDocumentsUnits(docs.map((d) => ({ name: d, text: readFileSync(d, 'utf8') })), chunker, perPassage, seed);
      if (v.num !== undefined) units = units.slice(0, n);
    }

    const params = {
      seed, num: units.length, model: llm.name, format, dedup_threshold: dedupThreshold, judge: !!v.judge, min_score: minScore, guard: guard?.name ?? null, ...gen,
      ...(method === 'evol-instruct' ? { rounds } : {}), ...(method === 'from-documents' ? { chunk_tokens: chunkTokens, questions_per_passage: perPassage, docs } : {}),
      ...(seeds.length ? { seeds: seedsFile } : {}), prompts: v.prompts ?? null, min_chars: limits.minChars, max_chars: limits.maxChars,
    };
    const bar = new Bar(!v.quiet && !v.json && !!process.stderr.isTTY);
    const s = await runSynth({
      method, units, llm, prompts, out: v.out, format, gen, limits, dedupThreshold, window, guard,
      judge: v.judge ? new Judge(llm, prompts) : null, minScore, params, onProgress: (p) => bar.draw(p),
    });
    bar.end();
    if (v.json) {
      process.stdout.write(JSON.stringify(s) + '\n');
    } else {
      const why = Object.entries(s.rejected).sort((a, b) => b[1] - a[1]).map(([r, k]) => `${r} ${k}`).join(', ') || 'none';
      log(`[floe] synth ${method}: ${s.kept} samples kept of ${s.units} units${s.resumed_units ? ` (${s.resumed_units} done by an earlier run)` : ''} -> ${s.out}\n` +
        `[floe] rejected: ${why}; near/exact duplicates removed: ${s.duplicates_removed}\n` +
        `[floe] ${s.generated_tokens} tokens in ${s.seconds.toFixed(1)} s: ${s.samples_per_second.toFixed(2)} samples/s, ${s.tokens_per_second.toFixed(1)} tokens/s\n`);
    }
    return 0;
  } finally {
    for (const e of engines) await e.shutdown(0);
  }
}

/** One redrawn line on a terminal: units done, kept, rejected (duplicates), samples/s and tokens/s. */
class Bar {
  private drawn = false;
  constructor(private readonly on: boolean) {}
  draw(p: SynthProgress): void {
    if (!this.on) return;
    const w = 24;
    const f = p.total ? p.done / p.total : 1;
    const rate = p.seconds > 0 ? p.kept / p.seconds : 0;
    process.stderr.write(`\r[floe] synth [${'#'.repeat(Math.round(f * w)).padEnd(w, '.')}] ${p.done}/${p.total} units, kept ${p.kept}, rejected ${p.rejected} ` +
      `(dup ${p.duplicates}), ${rate.toFixed(2)} samples/s, ${(p.tokens / Math.max(p.seconds, 1e-9)).toFixed(0)} tok/s  `);
    this.drawn = true;
  }
  end(): void { if (this.drawn) process.stderr.write('\n'); }
}
