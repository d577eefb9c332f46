// `floe synth`: synthetic instruction data (self-instruct, evol-instruct, Magpie, from documents) on floe's engine in-process
// or against an OpenAI-compatible endpoint; filtered, deduplicated, resumable JSONL that `floe finetune` reads.

import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { BackendName } from '../backend/select.js';
import { DEFAULT_LIMITS } from '../platform/synth/filters.js';
import { DEFAULT_GROUNDING } from '../platform/synth/grounding.js';
import { METHODS, type MethodName } from '../platform/synth/methods.js';
import type { SynthProgress } from '../platform/synth/pipeline.js';
import { synth } from '../platform/synth/synth.js';
import { kvCacheDtype, modelOrBuiltin, num, optNum, parse, parseSize, threadsFlag, UsageError } from './args.js';

export async function synthCmd(args: string[]): Promise<number> {
  const str = { type: 'string' } as const;
  const bool = { type: 'boolean' } as const;
  const { values: v, positionals } = parse(args, {
    method: str, model: str, endpoint: str, 'api-key': str, 'endpoint-model': str, 'max-retries': str, num: str, seeds: str, docs: { type: 'string', multiple: true },
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
  const only = (flags: readonly string[], methods: readonly MethodName[]) => {
    const given = flags.filter((f) => v[f as keyof typeof v] !== undefined);
    if (given.length && !methods.includes(method)) throw new UsageError(`${given.map((f) => `--${f}`).join(', ')} ${given.length > 1 ? 'are' : 'is'} for --method ${methods.join(' or ')}, not ${method}`);
  };
  only(['seeds'], ['self-instruct', 'evol-instruct']);
  only(['rounds'], ['evol-instruct']);
  only(['questions-per-passage', 'chunk-tokens'], ['from-documents']);
  if (v.endpoint !== undefined) {
    let url: URL | null = null;
    try { url = new URL(v.endpoint); } catch { /* reported below */ }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw new UsageError(`--endpoint expects an http:// or https:// URL of an OpenAI-compatible server, got '${v.endpoint}'`);
    const engineFlags = (['threads', 'backend', 'kv-cache-memory', 'kv-cache-dtype', 'max-num-seqs'] as const).filter((f) => v[f] !== undefined);
    if (engineFlags.length && !v['guard-model']) {
      throw new UsageError(`${engineFlags.map((f) => `--${f}`).join(', ')} configure${engineFlags.length > 1 ? '' : 's'} floe's in-process engine, which --endpoint does not use (with --guard-model they apply to the guard)`);
    }
    if (method === 'magpie' && !v.model) throw new UsageError('--method magpie with --endpoint needs --model DIR (or a GGUF) for the chat template whose open user header starts each unit');
  } else {
    const given = (['api-key', 'endpoint-model', 'max-retries'] as const).filter((f) => v[f] !== undefined);
    if (given.length) throw new UsageError(`${given.map((f) => `--${f}`).join(' and ')} ${given.length > 1 ? 'apply' : 'applies'} to --endpoint URL, which is not given`);
  }
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
  if (limits.minChars > limits.maxChars) throw new UsageError(`--min-chars (${limits.minChars}) must not exceed --max-chars (${limits.maxChars}): no sample could pass`);
  const gen = {
    maxTokens: num(v['max-tokens'], 'max-tokens', 256, true, { min: 1 }),
    temperature: num(v.temperature, 'temperature', 0.8, false, { min: 0 }),
    topP: num(v['top-p'], 'top-p', 0.95, false, { above: 0, max: 1 }),
  };
  const maxNumSeqs = optNum(v['max-num-seqs'], 'max-num-seqs', true, { min: 1 });
  const maxRetries = optNum(v['max-retries'], 'max-retries', true, { min: 0, max: 20 });
  const engine = { threads: threadsFlag(v.threads), backend, kvCacheMemory, kvDtype: kvCacheDtype(v['kv-cache-dtype']), maxNumSeqs };
  const chunkOverlap = num(v['chunk-overlap'], 'chunk-overlap', 0, true, { min: 0 });
  if (chunkOverlap >= chunkTokens) throw new UsageError(`--chunk-overlap (${chunkOverlap}) must be below --chunk-tokens (${chunkTokens})`);
  const minSupport = v['min-support'] === 'off' ? null : num(v['min-support'], 'min-support', DEFAULT_GROUNDING.minSupport!, false, { min: 0, max: 1 });
  const minGain = optNum(v['min-ll-gain'], 'min-ll-gain', false, { min: -100, max: 100 }) ?? null;
  if (method !== 'from-documents' && (v['min-support'] !== undefined || minGain !== null || v['chunk-overlap'] !== undefined)) {
    throw new UsageError(`--chunk-overlap, --min-support and --min-ll-gain are for --method from-documents, not ${method}`);
  }
  if (minGain !== null && v.endpoint && !v.model) throw new UsageError('--min-ll-gain over an --endpoint needs --model DIR for the chat template the answers are scored in');
  for (const d of docs) fileFlag('docs', d);
  const twice = docs.find((d, i) => docs.indexOf(d) !== i);
  if (twice !== undefined) throw new UsageError(`--docs: ${twice} is given twice (its passages would be asked about twice, under the same unit ids)`);
  if (v.seeds !== undefined) fileFlag('seeds', v.seeds);
  if (v.prompts !== undefined && !(existsSync(v.prompts) && statSync(v.prompts).isDirectory())) {
    throw new UsageError(`--prompts expects a directory of <method>/<name>.txt files, got '${v.prompts}' (${existsSync(v.prompts) ? 'a file' : 'no such directory'})`);
  }
  outFlag(v.out);
  const log = v.quiet || v.json ? () => {} : (s: string) => process.stderr.write(s);
  const bar = new Bar(!v.quiet && !v.json && !!process.stderr.isTTY);
  const s = await synth({
    method, out: v.out, format, num: v.num === undefined && method === 'from-documents' ? undefined : n, seed, rounds, seeds: v.seeds,
    ...(v.endpoint ? { endpoint: { url: v.endpoint, apiKey: v['api-key'], model: v['endpoint-model'], templateFrom: v.model, maxRetries } } : { model: modelOrBuiltin(v.model, 'synth') }),
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

/** A flag naming an input file: it must exist and be a file. */
function fileFlag(flag: string, path: string): void {
  if (!existsSync(path)) throw new UsageError(`--${flag}: no file ${path}`);
  if (statSync(path).isDirectory()) throw new UsageError(`--${flag} expects a file, got the directory ${path}`);
}

/** --out: a file path, not a directory; its folder is made by the run, so the nearest existing parent must be a directory. */
function outFlag(out: string): void {
  if (/[/\\]$/.test(out) || (existsSync(out) && statSync(out).isDirectory())) throw new UsageError(`--out expects a FILE.jsonl path, got the directory ${out}`);
  for (let d = dirname(resolve(out)); ; d = dirname(d)) {
    if (existsSync(d)) {
      if (!statSync(d).isDirectory()) throw new UsageError(`--out ${out}: ${d} is a file, not a folder`);
      return;
    }
    if (dirname(d) === d) return;
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
