// synth(): `floe synth` as a library call — a method's work units on floe's engine in-process, an OpenAI-compatible
// endpoint or a SynthLlm of your own, through the filters into resumable JSONL (pipeline.ts).

import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BackendName } from '../../backend/select.js';
import type { KvDType } from '../../backend/backend.js';
import { startEngineChecked } from '../../engine/client.js';
import { checkOptions, type OptionKeys } from '../../tensor/options.js';
import type { EngineClient } from '../../engine/protocol.js';
import { ChatTemplate, loadChatTemplate, selectChatTemplate } from '../../formats/chat-template.js';
import { readGguf } from '../../formats/gguf.js';
import { tokenizerFromGguf } from '../../formats/gguf-tokenizer.js';
import { fileLines, readTextFile } from '../../formats/lines.js';
import { loadTokenizer, type Tokenizer } from '../../formats/tokenizer.js';
import { Guard } from '../guard/guard.js';
import { DocumentChunker, type Chunker } from './chunk.js';
import { DEFAULT_LIMITS, RuntimeGuard, type GuardFilter } from './filters.js';
import { DEFAULT_GROUNDING, type GroundingOptions } from './grounding.js';
import { Judge } from './judge.js';
import { EndpointLlm, EngineLlm, type SynthLlm } from './llm.js';
import {
  evolInstructUnits, fromDocumentsUnits, magpieUnits, METHODS, parseSeeds, selfInstructUnits, type Doc, type MethodName, type SeedTask, type WorkUnit,
} from './methods.js';
import { LshIndex } from './minhash.js';
import { runSynth, type SynthProgress, type SynthSummary } from './pipeline.js';
import { PromptSet } from './prompts.js';

/** The engine options of an in-process model (and of the guard model). */
export interface SynthEngineOptions {
  readonly threads?: number;
  readonly backend?: BackendName;
  readonly kvCacheMemory?: number; // bytes
  readonly kvDtype?: KvDType;
  readonly maxNumSeqs?: number;
}
const SYNTH_ENGINE_OPTIONS = { threads: true, backend: true, kvCacheMemory: true, kvDtype: true, maxNumSeqs: true } as const satisfies OptionKeys<SynthEngineOptions>;

export interface SynthRunOptions {
  readonly method: MethodName;
  readonly out: string; // JSONL; re-running with the same options resumes it
  /** The generating model: exactly one of an HF dir / GGUF run in-process, an OpenAI-compatible endpoint, or your own. */
  readonly model?: string;
  readonly endpoint?: { readonly url: string; readonly apiKey?: string; readonly model?: string; readonly templateFrom?: string; readonly maxRetries?: number };
  readonly llm?: SynthLlm;
  readonly engine?: SynthEngineOptions;
  readonly num?: number; // work units (default 100; from-documents: every passage's questions unless given)
  readonly seed?: number; // default 0
  readonly seeds?: string | readonly SeedTask[]; // self-instruct / evol-instruct: JSONL file or tasks (default data/synth/seeds.jsonl)
  readonly rounds?: number; // evol-instruct (default 3)
  readonly docs?: readonly (string | Doc)[]; // from-documents: plain-text files or { name, text }
  readonly chunkTokens?: number; // from-documents passage size in tokens (default 256)
  readonly chunkOverlap?: number; // tokens a passage repeats from the previous one (default 0)
  readonly chunker?: Chunker; // overrides chunkTokens / chunkOverlap
  readonly questionsPerPassage?: number; // default 1
  readonly grounding?: Partial<GroundingOptions>; // from-documents (default: content-word support >= 0.5, no log-likelihood check)
  readonly prompts?: string; // DIR/<method>/<name>.txt over the shipped data/synth
  readonly format?: 'messages' | 'prompt-completion';
  readonly dedupThreshold?: number; // default 0.7; 1 = exact duplicates only
  readonly guardModel?: string; // a Llama-Guard-style model run in-process
  readonly guard?: GuardFilter; // or your own
  readonly judge?: boolean;
  readonly minScore?: number | null;
  readonly minChars?: number;
  readonly maxChars?: number;
  readonly maxTokens?: number; // per generation (default 256)
  readonly temperature?: number; // default 0.8
  readonly topP?: number; // default 0.95
  readonly concurrency?: number; // units in flight (default 2 × the engine's max sequences; endpoint 16)
  readonly onProgress?: (p: SynthProgress) => void;
  readonly log?: (line: string) => void;
}

/** The folder of the shipped prompt files (data/synth in the package). */
export function shippedPrompts(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const p = join(dir, 'data', 'synth');
    if (existsSync(join(p, 'seeds.jsonl'))) return p;
    if (dirname(dir) === dir) throw new Error(`cannot find floe's data/synth above ${fileURLToPath(import.meta.url)}`);
  }
}

async function textTools(path: string): Promise<{ tokenizer: Tokenizer | null; template: ChatTemplate | null }> {
  if (statSync(path).isDirectory()) return { tokenizer: await loadTokenizer(path), template: await loadChatTemplate(path) };
  const meta = (await readGguf(path)).metadata;
  const source = selectChatTemplate(meta.get('tokenizer.chat_template') ?? null, {}, `${path} tokenizer.chat_template`);
  return { tokenizer: tokenizerFromGguf(meta), template: source === null ? null : new ChatTemplate(source, `${path} tokenizer.chat_template`) };
}

/** A --docs file as text: it must be plain UTF-8 text (a PDF, an archive or a model file is refused, not chunked as garbage). */
function readDocument(file: string): string {
  if (!existsSync(file)) throw new Error(`synth: no document file ${file}`);
  const fd = openSync(file, 'r'); // a binary file shows itself in its first bytes: refuse it before reading it whole
  try {
    const head = Buffer.alloc(64 * 1024);
    const nul = head.subarray(0, readSync(fd, head, 0, head.length, 0)).indexOf(0);
    if (nul >= 0) throw new Error(`${file}: not a plain-text document (a NUL byte at offset ${nul}; a binary file?); from-documents reads UTF-8 text files`);
  } finally {
    closeSync(fd);
  }
  const text = readTextFile(file, { keepBom: true, notUtf8: (at) => `${file}: not UTF-8 text (an invalid byte at offset ${at}); from-documents reads UTF-8 text files` });
  const nul = text.indexOf('\0');
  if (nul >= 0) throw new Error(`${file}: not a plain-text document (a NUL byte at offset ${Buffer.byteLength(text.slice(0, nul))}; a binary file?); from-documents reads UTF-8 text files`);
  return text;
}

/**
 * The seed tasks of a JSONL file, read line by line (a file past the longest string, ~512 MiB, reads too), and the
 * first 16 hex digits of its SHA-256 (the run's inputs record it).
 */
function readSeeds(file: string): { seeds: SeedTask[]; sha: string } {
  const seeds: SeedTask[] = [];
  const hash = createHash('sha256'); // of the text's UTF-8, which (the reader refuses anything else) is the file's bytes
  for (const l of fileLines(file)) {
    hash.update(l.terminated ? `${l.text}\n` : l.text);
    if (!l.text.trim()) continue;
    // parseSeeds is given this one line, so its errors say line 1: they are about line l.number of the file
    try { seeds.push(...parseSeeds(l.text, file)); } catch (e) { throw new Error((e as Error).message.replace(`${file}:1:`, `${file}:${l.number}:`)); }
  }
  if (seeds.length === 0) throw new Error(`${file}: no seed tasks`);
  return { seeds, sha: hash.digest('hex').slice(0, 16) };
}

const modelName = (p: string) => basename(p.replace(/[/\\]+$/, '')).replace(/\.gguf$/i, '');

/** Make a synthetic data set; returns the run's summary (kept, rejected per reason, duplicates, unsafe, tokens/s). */
export async function synth(o: SynthRunOptions): Promise<SynthSummary> {
  if (!METHODS.includes(o.method)) throw new Error(`synth: method must be one of ${METHODS.join(', ')}, got '${o.method}'`);
  const sources = [o.model, o.endpoint, o.llm].filter((x) => x !== undefined).length;
  if (sources !== 1) throw new Error(`synth: give exactly one of model, endpoint or llm (got ${sources})`);
  const docs = o.docs ?? [];
  if (o.method === 'from-documents' && docs.length === 0) throw new Error('synth: from-documents needs docs (plain-text files or { name, text })');
  if (o.method !== 'from-documents' && docs.length > 0) throw new Error(`synth: docs are for from-documents, not ${o.method}`);
  if (o.minScore != null && !o.judge) throw new Error('synth: minScore needs judge');
  const int = (v: number | undefined, name: string, d: number, min: number) => {
    const x = v ?? d;
    if (!(Number.isInteger(x) && x >= min)) throw new RangeError(`synth: ${name} must be an integer >= ${min}, got ${x}`);
    return x;
  };
  const n = int(o.num, 'num', 100, 1), seed = int(o.seed, 'seed', 0, 0), rounds = int(o.rounds, 'rounds', 3, 1);
  const perPassage = int(o.questionsPerPassage, 'questionsPerPassage', 1, 1);
  const chunkTokens = int(o.chunkTokens, 'chunkTokens', 256, 16), chunkOverlap = int(o.chunkOverlap, 'chunkOverlap', 0, 0);
  if (chunkOverlap >= chunkTokens) throw new RangeError(`synth: chunkOverlap (${chunkOverlap}) must be below chunkTokens (${chunkTokens})`);
  const dedupThreshold = o.dedupThreshold ?? 0.7;
  if (!(dedupThreshold > 0 && dedupThreshold <= 1)) throw new RangeError(`synth: dedupThreshold must be in (0, 1], got ${dedupThreshold}`);
  const ground: GroundingOptions = { ...DEFAULT_GROUNDING, ...o.grounding };
  if (ground.minSupport !== null && !(ground.minSupport >= 0 && ground.minSupport <= 1)) throw new RangeError(`synth: grounding.minSupport must be in [0, 1], got ${ground.minSupport}`);
  if (ground.minGain !== null && !Number.isFinite(ground.minGain)) throw new RangeError(`synth: grounding.minGain must be a number, got ${ground.minGain}`);
  const format = o.format ?? 'messages';
  const limits = { ...DEFAULT_LIMITS, minChars: o.minChars ?? DEFAULT_LIMITS.minChars, maxChars: o.maxChars ?? DEFAULT_LIMITS.maxChars };
  const gen = { maxTokens: int(o.maxTokens, 'maxTokens', 256, 1), temperature: o.temperature ?? 0.8, topP: o.topP ?? 0.95 };
  if (!(gen.temperature >= 0)) throw new RangeError(`synth: temperature must be >= 0, got ${gen.temperature}`);
  if (!(gen.topP > 0 && gen.topP <= 1)) throw new RangeError(`synth: topP must be in (0, 1], got ${gen.topP}`);
  const shipped = shippedPrompts();
  const prompts = new PromptSet([...(o.prompts ? [o.prompts] : []), shipped]);
  const fileDocs: Doc[] = docs.map((d) => {
    const doc = typeof d === 'string' ? { name: d, text: readDocument(d) } : d;
    if (docs.findIndex((e) => (typeof e === 'string' ? e : e.name) === doc.name) !== docs.indexOf(d)) throw new Error(`synth: document ${doc.name} is given twice (unit ids name the document)`);
    if (doc.text.trim().length === 0) throw new Error(`${doc.name}: the document is empty (no text); from-documents has nothing to ask about`);
    return doc;
  });

  checkOptions('synth: engine', o.engine, SYNTH_ENGINE_OPTIONS); // a misspelt key would have started the engine on its default
  // the model paths, before any engine starts (else a raw "ENOENT: stat" from wherever they are first read)
  for (const [p, what] of [[o.model, 'model'], [o.endpoint?.templateFrom, "model (for the endpoint's chat template and tokenizer)"], [o.guardModel, 'guard model']] as const) {
    if (p !== undefined && !existsSync(p)) throw new Error(`${p}: cannot open ${what}: no such file or directory`);
  }
  const engines: EngineClient[] = [];
  try {
    // the generating model, and a token counter for the chunker
    let llm: SynthLlm;
    let count: ((t: string) => number) | undefined;
    let window: number;
    if (o.llm) {
      llm = o.llm;
      window = o.concurrency ?? 16;
    } else if (o.endpoint) {
      const tools = o.endpoint.templateFrom ? await textTools(o.endpoint.templateFrom) : null;
      llm = await EndpointLlm.open({ url: o.endpoint.url, apiKey: o.endpoint.apiKey, model: o.endpoint.model, retries: o.endpoint.maxRetries, template: tools?.template, bos: tools?.tokenizer?.bosToken ?? undefined, eos: tools?.tokenizer?.eosToken ?? undefined });
      if (tools?.tokenizer) count = (t) => tools.tokenizer!.encode(t, { addSpecialTokens: false }).length;
      window = o.concurrency ?? 16;
    } else {
      const name = modelName(o.model!);
      const [engine, tools] = await Promise.all([startEngineChecked({ ...o.engine, model: o.model!, modelId: name }), textTools(o.model!)]);
      engines.push(engine);
      if (!tools.tokenizer) throw new Error(`${o.model}: no tokenizer; synth needs one`);
      llm = new EngineLlm(engine, tools.tokenizer, tools.template, name);
      count = (t) => tools.tokenizer!.encode(t, { addSpecialTokens: false }).length;
      window = o.concurrency ?? 2 * engine.info.maxNumSeqs;
    }
    if (!(Number.isInteger(window) && window >= 1)) throw new RangeError(`synth: concurrency must be an integer >= 1, got ${window}`);
    let guard = o.guard;
    if (o.guardModel) {
      if (guard) throw new Error('synth: give guard or guardModel, not both');
      const g = await Guard.open(o.guardModel, o.engine ?? {});
      engines.push(g.engine);
      guard = new RuntimeGuard(g, modelName(o.guardModel));
    }

    const seedsFile = typeof o.seeds === 'string' ? o.seeds : o.seeds ? null : join(shipped, 'seeds.jsonl');
    const seedsRead = seedsFile && (o.method === 'self-instruct' || o.method === 'evol-instruct') ? readSeeds(seedsFile) : null;
    const seeds = o.method !== 'self-instruct' && o.method !== 'evol-instruct' ? []
      : seedsRead !== null ? seedsRead.seeds : [...(o.seeds as readonly SeedTask[])];
    if ((o.method === 'self-instruct' || o.method === 'evol-instruct') && seeds.length === 0) throw new Error('synth: no seed tasks');
    let units: WorkUnit[];
    if (o.method === 'self-instruct') {
      const seedIndex = new LshIndex(dedupThreshold);
      seeds.forEach((s, i) => seedIndex.add(`seed-${i}`, s.instruction));
      units = selfInstructUnits(seeds, n, seed, seedIndex);
    } else if (o.method === 'evol-instruct') {
      units = evolInstructUnits(seeds, n, seed, rounds);
    } else if (o.method === 'magpie') {
      units = magpieUnits(n, seed);
    } else {
      const countTokens = count ?? ((t: string) => (t.match(/\S+/g) ?? []).length); // no tokenizer (endpoint alone): words
      const chunker = o.chunker ?? new DocumentChunker({ maxTokens: chunkTokens, overlap: chunkOverlap, countTokens });
      units = fromDocumentsUnits(fileDocs, chunker, perPassage, seed, ground);
      if (o.num !== undefined) units = units.slice(0, n);
    }

    const params = {
      seed, num: units.length, model: llm.name, format, dedup_threshold: dedupThreshold, judge: !!o.judge, min_score: o.minScore ?? null, guard: guard?.name ?? null, ...gen,
      ...(o.method === 'evol-instruct' ? { rounds } : {}),
      ...(o.method === 'from-documents' ? {
        chunk_tokens: chunkTokens, ...(chunkOverlap ? { chunk_overlap: chunkOverlap } : {}), questions_per_passage: perPassage, docs: fileDocs.map((d) => d.name),
        min_support: ground.minSupport, ...(ground.minGain !== null ? { min_ll_gain: ground.minGain } : {}),
      } : {}),
      ...(seeds.length ? { seeds: seedsFile ?? `${seeds.length} given` } : {}), prompts: o.prompts ?? null, min_chars: limits.minChars, max_chars: limits.maxChars,
    };
    // what the files the run reads hold: a rerun after one was edited would mix old and new units, and is refused
    const sha = (t: string) => createHash('sha256').update(t).digest('hex').slice(0, 16);
    const inputs: Record<string, string> = {};
    if (seedsRead !== null) inputs[`seeds ${seedsFile}`] = seedsRead.sha;
    for (const d of fileDocs) inputs[`document ${d.name}`] = sha(d.text);
    for (const m of [o.method, ...(o.judge ? ['judge'] : [])]) {
      for (const f of readdirSync(join(shipped, m)).filter((n) => n.endsWith('.txt')).sort()) inputs[`prompt ${m}/${f}`] = sha(prompts.text(m, f.slice(0, -4)));
    }
    return await runSynth({
      method: o.method, units, llm, prompts, out: o.out, format, gen, limits, dedupThreshold, window, guard, inputs,
      judge: o.judge ? new Judge(llm, prompts) : null, minScore: o.minScore ?? null, params, onProgress: o.onProgress,
    });
  } finally {
    for (const e of engines) await e.shutdown(0);
  }
}
