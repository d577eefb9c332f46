// `floe synth`: synthetic instruction data (self-instruct, evol-instruct, Magpie, from documents) on floe's engine in-process
// or against an OpenAI-compatible endpoint; filtered, deduplicated, resumable JSONL that `floe finetune` reads.

import { existsSync } from 'node:fs';
import type { BackendName } from '../backend/select.js';
import { DEFAULT_LIMITS } from '../platform/synth/filters.js';
import { DEFAULT_GROUNDING } from '../platform/synth/grounding.js';
import { METHODS, type MethodName } from '../platform/synth/methods.js';
import type { SynthProgress } from '../platform/synth/pipeline.js';
import { synth } from '../platform/synth/synth.js';
import { kvCacheDtype, modelOrBuiltin, num, optNum, parse, parseSize, UsageError } from './args.js';

export async function synthCmd(args: string[]): Promise<number> {
  const str = { type: 'string' } as const;
  const bool = { type: 'boolean' } as const;
  const { values: v, positionals } = parse(args, {
    method: str, model: str, endpoint: str, 'api-key': str, 'endpoint-model': str, num: str, seeds: str, docs: { type: 'string', multiple: true },
    rounds: str, 'questions-per-passage': str, 'chunk-tokens': str, 'chunk-overlap': str, 'min-support': str, 'min-ll-gain': str, prompts: str, out: str, format: str, 'dedup-threshold': str,
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
  const engine = { threads: optNum(v.threads, 'threads', true, { min: 1 }), backend, kvCacheMemory, kvDtype: kvCacheDtype(v['kv-cache-dtype']), maxNumSeqs };
  const chunkOverlap = num(v['chunk-overlap'], 'chunk-overlap', 0, true, { min: 0 });
  if (chunkOverlap >= chunkTokens) throw new UsageError(`--chunk-overlap (${chunkOverlap}) must be below --chunk-tokens (${chunkTokens})`);
  const minSupport = v['min-support'] === 'off' ? null : num(v['min-support'], 'min-support', DEFAULT_GROUNDING.minSupport!, false, { min: 0, max: 1 });
  const minGain = optNum(v['min-ll-gain'], 'min-ll-gain', false, { min: -100, max: 100 }) ?? null;
  if (method !== 'from-documents' && (v['min-support'] !== undefined || minGain !== null || v['chunk-overlap'] !== undefined)) {
    throw new UsageError(`--chunk-overlap, --min-support and --min-ll-gain are for --method from-documents, not ${method}`);
  }
  if (minGain !== null && v.endpoint && !v.model) throw new UsageError('--min-ll-gain over an --endpoint needs --model DIR for the chat template the answers are scored in');
  for (const d of docs) if (!existsSync(d)) throw new UsageError(`--docs: no file ${d}`);
  if (v.seeds !== undefined && !existsSync(v.seeds)) throw new UsageError(`--seeds: no file ${v.seeds}`);
  const log = v.quiet || v.json ? () => {} : (s: string) => process.stderr.write(s);
  const bar = new Bar(!v.quiet && !v.json && !!process.stderr.isTTY);
  const s = await synth({
    method, out: v.out, format, num: v.num === undefined && method === 'from-documents' ? undefined : n, seed, rounds, seeds: v.seeds,
    ...(v.endpoint ? { endpoint: { url: v.endpoint, apiKey: v['api-key'], model: v['endpoint-model'], templateFrom: v.model } } : { model: modelOrBuiltin(v.model, 'synth') }),
    engine, concurrency: optNum(v.concurrency, 'concurrency', true, { min: 1 }), guardModel: v['guard-model'], judge: !!v.judge, minScore,
    docs, chunkTokens, chunkOverlap, questionsPerPassage: perPassage, grounding: { minSupport, minGain }, prompts: v.prompts, dedupThreshold,
    minChars: limits.minChars, maxChars: limits.maxChars, ...gen, onProgress: (p) => bar.draw(p),
  });
  bar.end();
  if (v.json) {
    process.stdout.write(JSON.stringify(s) + '\n');
  } else {
    const why = Object.entries(s.rejected).sort((a, b) => b[1] - a[1]).map(([r, k]) => `${r} ${k}`).join(', ') || 'none';
    log(`[floe] synth ${method}: ${s.kept} samples kept of ${s.units} units${s.resumed_units ? ` (${s.resumed_units} done by an earlier run)` : ''} -> ${s.out}\n` +
      `[floe] rejected: ${why}; near/exact duplicates removed: ${s.duplicates_removed}\n` +
      `[floe] ${s.generated_tokens} tokens in ${s.seconds.toFixed(1)} s: ${s.samples_per_second.toFixed(2)} samples/s, ${s.tokens_per_second.toFixed(1)} tokens/s; ` +
      `prompts ${s.prompt_tokens} tokens, ${s.cached_prompt_tokens} from the prefix cache\n`);
  }
  return 0;
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
