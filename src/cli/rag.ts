// `floe rag`: ingest documents into a LanceDB collection, query it, and answer questions over it with citations.

import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { BackendName } from '../backend/select.js';
import { startEngineChecked } from '../engine/client.js';
import type { EngineClient } from '../engine/protocol.js';
import { ask, type RagAnswer } from '../platform/rag/answer.js';
import { openEmbedder, type RagEmbedder } from '../platform/rag/embedder.js';
import { docKind } from '../platform/rag/extract.js';
import { FilterError, parseFilter, type Filter } from '../platform/rag/filter.js';
import { answerJson, collectionJson, passageJson } from '../platform/rag/json.js';
import type { Collection, IngestProgress, Passage, RagStore, SearchMode } from '../platform/rag/store.js';
import { builtinModel, DECIMAL, modelOrBuiltin, optNum, parse, threadsFlag, UsageError } from './args.js';

export const RAG_HELP = `Usage:
  floe rag ingest --db DIR --collection NAME [--embedding-model PATH] [--chunk-tokens N] [--overlap N]
                  [--commit-chunks N] [--allow-embedder-mismatch] [--json] FILES...
  floe rag query  --db DIR --collection NAME [--k 5] [--mode vector|bm25|hybrid] [--where JSON] [--rrf-k 60]
                  [--weights DENSE,BM25] [--allow-embedder-mismatch] [--json] "question"
  floe rag ask    --db DIR --collection NAME [--model PATH] [--k 5] [--mode ...] [--where JSON] [--rerank]
                  [--max-tokens N] [--allow-embedder-mismatch] [--json] "question"
  floe rag list   --db DIR [--json]
  floe rag delete --db DIR --collection NAME [--source PATH] [--json]

ingest: .txt, .md and .html files, split into token-aware chunks (the embedder's tokenizer, paragraph and sentence
boundaries, --chunk-tokens (256) with --overlap (chunk/8) tokens shared), embedded and stored with source, offsets
and a content hash. The collection is created on first ingest, recording the embedder; files unchanged and
chunked with the same --chunk-tokens / --overlap are skipped, others re-chunked and replaced. Each commit holds whole documents (--commit-chunks (512) chunks or more), so an
interrupted ingest leaves every document as it was or fully replaced. A progress bar goes to stderr on a terminal.
query: top-k passages: dense (cosine), BM25, or both fused by reciprocal rank (hybrid, the default); --where is a
structured filter, {"field","op","value"} or an array of them (all must hold): fields source, kind, doc_hash, chunk,
start_offset, end_offset; ops = != < <= > >= in not_in prefix (e.g. '{"field":"source","op":"prefix","value":"docs/"}').
Hybrid scores Σ w / (--rrf-k + rank) over the two lists, --weights DENSE,BM25 (default 1,1).
ask: retrieve, optionally --rerank (the chat model's log-likelihood of the question given each of the top 2k
passages), prompt with numbered passages that fit the context, answer with citations.
--embedding-model PATH (default: the collection's recorded embedder, else the built-in models/floe-embed); an embedder
other than the recorded one is refused (its vectors are not comparable) unless --allow-embedder-mismatch (e.g. the same
model moved to another path),
--model PATH (chat model, default the built-in models/floe-brown), --threads N, --backend native|reference.
--json prints one object, fields snake_case as every --json and the HTTP API: query {collection, mode, k, passages:
[{id, source, chunk, start, end, text, score, vector_rank?, bm25_rank?}]}; ask {collection, question, answer,
citations: [{index, id, source, chunk, start, end, score, cited}], dropped, finish_reason, usage: {prompt_tokens,
completion_tokens, total_tokens}}; list {collections: [{name, embedder, dim, chunks, documents, created, vector_index}]}.
`;

// LanceDB (the store) and the server's text tools load on use, so --help and usage errors answer at once (~0.2 s, not 1 s)
// LanceDB loads with the store module, so it is imported only when a command opens a store (never for --help or a
// usage error); storeModule is that module once loaded.
let storeModule: typeof import('../platform/rag/store.js') | undefined;
const ragStore = async () => (storeModule ??= await import('../platform/rag/store.js')).RagStore;

const str = { type: 'string' } as const;
const bool = { type: 'boolean' } as const;

export async function ragCmd(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(RAG_HELP);
    return 0;
  }
  switch (sub) {
    case 'ingest': return userErrors(() => ingestCmd(rest));
    case 'query': return userErrors(() => queryCmd(rest, false));
    case 'ask': return userErrors(() => queryCmd(rest, true));
    case 'list': return userErrors(() => listCmd(rest));
    case 'delete': return userErrors(() => deleteCmd(rest));
    case undefined: case 'help': case '--help': case '-h':
      process.stdout.write(RAG_HELP);
      return sub === undefined ? 1 : 0;
    default:
      throw new UsageError(`unknown rag command '${sub}'; expected ingest, query, ask, list or delete`);
  }
}

/** A --db, --collection or collection name that names nothing (or nothing valid) is the command line's mistake: exit 2. */
async function userErrors(f: () => Promise<number>): Promise<number> {
  try {
    return await f();
  } catch (e) {
    // only a command that opened a store can have failed to find a collection: no store, no LanceDB to load
    const notFound = storeModule !== undefined && e instanceof storeModule.CollectionNotFoundError;
    if (notFound || /^RAG database .* does not exist|^invalid collection name/.test((e as Error).message)) throw new UsageError((e as Error).message);
    throw e;
  }
}

/** The built-in embedder directory of the package. */
export function builtinEmbedder(): string {
  return builtinModel('floe-embed');
}

/** floe serve's RAG options: --rag-db with --embedding-model (default: the built-in embedder; none with --task embed). */
export function ragServeOptions(db: string | undefined, model: string | undefined, task: string | undefined): { ragDb?: string; embeddingModel?: string | null } {
  if (db !== undefined && existsSync(db) && !statSync(db).isDirectory()) throw new UsageError(`--rag-db ${db} is not a directory (the RAG database is one, created on first use)`);
  if (db === undefined || task === 'embed') return { ...(db !== undefined ? { ragDb: db } : {}), embeddingModel: model ?? null };
  const path = model ?? builtinEmbedder();
  if (!existsSync(path)) throw new UsageError(model ? `--embedding-model ${model} does not exist` : `--rag-db needs --embedding-model PATH (the built-in embedder ${path} is missing)`);
  return { ragDb: db, embeddingModel: path };
}

function backendOf(v: string | undefined): BackendName | undefined {
  if (v !== undefined && v !== 'native' && v !== 'reference') throw new UsageError(`--backend expects native or reference, got '${v}'`);
  return v;
}

/** --embedding-model, else the collection's recorded embedder when it is a directory here, else the built-in one. */
async function embedderFor(flag: string | undefined, recorded: string | null, opts: { threads?: number; backend?: BackendName }): Promise<RagEmbedder> {
  let path = flag;
  if (path === undefined && recorded !== null && existsSync(recorded) && statSync(recorded).isDirectory()) path = recorded;
  if (path === undefined) {
    path = builtinEmbedder();
    if (!existsSync(path)) throw new UsageError(`--embedding-model PATH is required (the built-in embedder ${path} is missing)`);
    process.stderr.write(`[floe] rag: no --embedding-model given, using the built-in embedder ${path}\n`);
  }
  if (!existsSync(path)) throw new Error(`embedding model ${path} does not exist`);
  return openEmbedder(path, { threads: opts.threads, backend: opts.backend, name: resolve(path) });
}

function need(v: string | undefined, flag: string): string {
  if (v === undefined || v === '') throw new UsageError(`${flag} is required`);
  return v;
}

async function ingestCmd(args: string[]): Promise<number> {
  const { values: v, positionals: files } = parse(args, {
    db: str, collection: str, 'embedding-model': str, 'chunk-tokens': str, overlap: str, 'commit-chunks': str, threads: str, backend: str, json: bool, quiet: bool,
    'allow-embedder-mismatch': bool,
  }, true);
  const db = need(v.db, '--db DIR'), name = need(v.collection, '--collection NAME');
  if (files.length === 0) throw new UsageError('give at least one file to ingest');
  for (const f of files) { // unsupported types and missing files are refused before anything opens
    if (!existsSync(f)) throw new UsageError(`${f}: no such file`);
    if (statSync(f).isDirectory()) throw new UsageError(`${f} is a directory; give the files in it (e.g. ${join(f, '*.md')})`);
    if (!statSync(f).isFile()) throw new UsageError(`${f}: not a file`);
    try { docKind(f); } catch (e) { throw new UsageError((e as Error).message); }
  }
  const chunkTokens = optNum(v['chunk-tokens'], 'chunk-tokens', true, { min: 2 });
  const overlap = optNum(v.overlap, 'overlap', true, { min: 0 });
  const commitChunks = optNum(v['commit-chunks'], 'commit-chunks', true, { min: 1 });
  const threads = threadsFlag(v.threads);
  if (overlap !== undefined && overlap >= (chunkTokens ?? 256)) throw new UsageError(`--overlap ${overlap} must be below --chunk-tokens ${chunkTokens ?? '(default 256)'}`);
  const store = await (await ragStore()).open(db, { create: true });
  const existed = await store.has(name);
  const recorded = existed ? (await store.collection(name)).embedderName : null;
  const embedder = await embedderFor(v['embedding-model'], recorded, { threads, backend: backendOf(v.backend) });
  chunkFlags(chunkTokens, overlap, embedder);
  const allowEmbedderMismatch = !!v['allow-embedder-mismatch'];
  if (existed) await checkEmbedder(await store.collection(name), embedder, allowEmbedderMismatch);
  const col = await store.create(name, embedder, { existOk: true, allowEmbedderMismatch });
  const bar = new Bar(!v.quiet && !v.json && !!process.stderr.isTTY);
  const t0 = performance.now();
  let r;
  try {
    r = await col.ingestFiles(files, embedder, { chunkTokens, overlap, commitChunks, allowEmbedderMismatch, onProgress: (p) => bar.draw(p) });
  } catch (e) {
    bar.end();
    if (!existed && (await col.table.countRows()) === 0) await store.drop(name); // do not leave an empty collection behind
    throw e;
  }
  bar.end();
  const seconds = (performance.now() - t0) / 1000;
  if (v.json) {
    process.stdout.write(JSON.stringify({
      collection: name, embedder: embedder.name, dim: embedder.dim, added: r.added, replaced: r.replaced, skipped: r.skipped,
      chunks: r.chunks, embedded_tokens: r.embeddedTokens, seconds, ms: r.ms,
    }) + '\n');
  } else {
    process.stderr.write(`[floe] rag ingest: ${r.added.length} added, ${r.replaced.length} replaced, ${r.skipped.length} unchanged; ` +
      `${r.chunks} chunks (${r.embeddedTokens} tokens embedded) in ${seconds.toFixed(1)} s -> ${name} in ${store.dir}\n`);
  }
  store.close();
  return 0;
}

/** --chunk-tokens / --overlap against the embedder: the special tokens it adds to every chunk take room too. */
function chunkFlags(chunkTokens: number | undefined, overlap: number | undefined, embedder: RagEmbedder): void {
  const chunk = chunkTokens ?? Math.min(256, embedder.maxTokens);
  const base = embedder.countTokens('');
  const text = chunk - base;
  if (chunk > embedder.maxTokens) throw new UsageError(`--chunk-tokens ${chunk} exceeds the embedder's ${embedder.maxTokens} tokens`);
  if (text < 1) throw new UsageError(`--chunk-tokens ${chunk} leaves no room for text (the embedder adds ${base} special tokens)`);
  const o = overlap ?? Math.floor(chunk / 8);
  if (o >= text) throw new UsageError(`--overlap ${o} must be below ${text}: --chunk-tokens ${chunk} less the embedder's ${base} special token${base === 1 ? '' : 's'}`);
}

/** The collection's recorded embedder against the one given: a mismatch is the user's to fix (or to allow), said before any work. */
async function checkEmbedder(col: Collection, embedder: RagEmbedder, allow: boolean): Promise<void> {
  const { EmbedderMismatchError } = await import('../platform/rag/store.js');
  try {
    col.checkEmbedder(embedder, { allowEmbedderMismatch: allow });
  } catch (e) {
    if (!(e instanceof EmbedderMismatchError)) throw e;
    const gone = !existsSync(col.embedderName) ? ` (${col.embedderName} does not exist here: give --embedding-model PATH of that model)` : '';
    // vectors of another dimension cannot be compared at all: --allow-embedder-mismatch (which the dimension check ignores) would not help
    const allowHint = embedder.dim === col.dim ? '; if it is the same model under another path, add --allow-embedder-mismatch' : '';
    throw new UsageError(`${e.message}${gone}${allowHint}`);
  }
}

/** --where: a JSON filter (filter.ts), validated before anything is opened. */
function whereArg(v: string | undefined): Filter | null {
  if (v === undefined) return null;
  let json: unknown;
  try {
    json = JSON.parse(v);
  } catch {
    throw new UsageError(`--where expects a JSON filter such as '{"field":"source","op":"=","value":"notes.md"}' (raw SQL is not accepted), got ${JSON.stringify(v)}`);
  }
  try {
    return parseFilter(json, '--where');
  } catch (e) {
    if (e instanceof FilterError) throw new UsageError(e.message);
    throw e;
  }
}

async function openCollection(db: string, name: string): Promise<{ store: RagStore; col: Collection }> {
  const store = await (await ragStore()).open(db);
  return { store, col: await store.collection(name) };
}

async function queryCmd(args: string[], answer: boolean): Promise<number> {
  const { values: v, positionals } = parse(args, {
    db: str, collection: str, k: str, mode: str, where: str, 'rrf-k': str, weights: str, json: bool, 'embedding-model': str, model: str, rerank: bool,
    'max-tokens': str, threads: str, backend: str, 'allow-embedder-mismatch': bool,
  }, true);
  const db = need(v.db, '--db DIR'), name = need(v.collection, '--collection NAME');
  if (positionals.length !== 1) throw new UsageError(`give the question as one argument (got ${positionals.length})`);
  const question = positionals[0]!;
  if (question.trim() === '') throw new UsageError('the question is empty');
  const k = optNum(v.k, 'k', true, { min: 1 }) ?? 5;
  const mode = (v.mode ?? 'hybrid') as SearchMode;
  const { SEARCH_MODES } = await import('../platform/rag/store.js');
  if (!SEARCH_MODES.includes(mode)) throw new UsageError(`--mode expects ${SEARCH_MODES.join(', ')}, got '${v.mode}'`);
  if (!answer && (v.model !== undefined || v.rerank || v['max-tokens'] !== undefined)) throw new UsageError('--model, --rerank and --max-tokens belong to rag ask');
  const maxTokens = optNum(v['max-tokens'], 'max-tokens', true, { min: 1 });
  const where = whereArg(v.where);
  const rrfK = optNum(v['rrf-k'], 'rrf-k', false, { min: 0 });
  const parts = v.weights?.split(',').map((x) => x.trim());
  const w = parts?.map(Number);
  if (parts && w && !(w.length === 2 && parts.every((x) => DECIMAL.test(x)) && w.every((x) => Number.isFinite(x) && x >= 0))) throw new UsageError(`--weights expects DENSE,BM25 (two numbers ≥ 0), got '${v.weights}'`);
  const fusion = { ...(rrfK !== undefined ? { rrfK } : {}), ...(w ? { weights: [w[0]!, w[1]!] as const } : {}) };
  const threads = threadsFlag(v.threads);
  const backend = backendOf(v.backend);
  const { store, col } = await openCollection(db, name);
  const embedder = mode === 'bm25' && !answer ? null : await embedderFor(v['embedding-model'], col.embedderName, { threads, backend });
  const allowEmbedderMismatch = !!v['allow-embedder-mismatch'];
  if (embedder) await checkEmbedder(col, embedder, allowEmbedderMismatch);
  if (!answer) {
    const passages = await col.search(question, embedder, { k, mode, where, ...fusion, allowEmbedderMismatch });
    if (v.json) process.stdout.write(JSON.stringify({ collection: name, mode, k, passages: passages.map(passageJson) }) + '\n');
    else process.stdout.write(passages.map((p, i) => formatPassage(p, i + 1)).join('\n\n') + (passages.length ? '\n' : 'no passages found\n'));
    store.close();
    return 0;
  }
  const modelPath = modelOrBuiltin(v.model, 'rag ask');
  let engine: EngineClient | null = null;
  try {
    const [e, tools] = await Promise.all([startEngineChecked({ model: modelPath, threads, backend, maxNumSeqs: 16 }), (await import('../serve/server.js')).loadTextTools(modelPath)]);
    engine = e;
    if (!tools.tokenizer) throw new Error(`${modelPath} has no tokenizer; rag ask needs one`);
    const res = await ask(col, embedder, { engine: e, tokenizer: tools.tokenizer, template: tools.template }, question,
      { k, mode, where, ...fusion, allowEmbedderMismatch, rerank: !!v.rerank, maxTokens });
    if (v.json) process.stdout.write(JSON.stringify({ collection: name, question, ...answerJson(res) }) + '\n');
    else process.stdout.write(formatAnswer(res));
  } finally {
    await engine?.shutdown(0);
    store.close();
  }
  return 0;
}

async function listCmd(args: string[]): Promise<number> {
  const { values: v } = parse(args, { db: str, json: bool });
  const store = await (await ragStore()).open(need(v.db, '--db DIR'));
  const list = await store.list();
  if (v.json) process.stdout.write(JSON.stringify({ collections: list.map(collectionJson) }) + '\n');
  else for (const c of list) process.stdout.write(`${c.name}\t${c.documents} documents\t${c.chunks} chunks\t${c.dim}-dim ${c.embedder}\t${c.vectorIndex ?? 'brute force'}\n`);
  store.close();
  return 0;
}

async function deleteCmd(args: string[]): Promise<number> {
  const { values: v } = parse(args, { db: str, collection: str, source: str, json: bool });
  const { store, col } = await openCollection(need(v.db, '--db DIR'), need(v.collection, '--collection NAME'));
  if (v.source !== undefined) {
    const n = await col.deleteSource(v.source);
    if (n === 0) throw new UsageError(`collection '${col.name}' has no document with source ${JSON.stringify(v.source)}`);
    if (v.json) process.stdout.write(JSON.stringify({ collection: col.name, source: v.source, deleted_chunks: n }) + '\n');
    else process.stdout.write(`deleted ${JSON.stringify(v.source)} from collection '${col.name}' (${n} chunk${n === 1 ? '' : 's'})\n`);
  } else {
    await store.drop(col.name);
    if (v.json) process.stdout.write(JSON.stringify({ collection: col.name, deleted: true }) + '\n');
    else process.stdout.write(`deleted collection '${col.name}'\n`);
  }
  store.close();
  return 0;
}

function formatPassage(p: Passage, n: number): string {
  return `[${n}] ${p.source}:${p.start}-${p.end} (score ${p.score.toFixed(4)})\n${p.text}`;
}

function formatAnswer(r: RagAnswer): string {
  const lines = [r.answer.trim(), '', 'Sources:'];
  for (const c of r.citations) lines.push(`[${c.index}]${c.cited ? '*' : ' '} ${c.source}:${c.start}-${c.end} (score ${c.score.toFixed(4)})`);
  if (r.dropped.length) lines.push(`(${r.dropped.length} lower-ranked passage${r.dropped.length > 1 ? 's' : ''} left out: the context window is full)`);
  return lines.join('\n') + '\n';
}

/** Progress bar on stderr (terminal only): documents done of total, chunks so far. */
class Bar {
  private drawn = false;
  constructor(private readonly on: boolean) {}
  draw(p: IngestProgress): void {
    if (!this.on) return;
    const w = 30, f = Math.round((p.done / Math.max(1, p.total)) * w);
    process.stderr.write(`\r[${'#'.repeat(f)}${'.'.repeat(w - f)}] ${p.done}/${p.total} documents, ${p.chunks} chunks`);
    this.drawn = true;
  }
  end(): void {
    if (this.drawn) process.stderr.write('\n');
    this.drawn = false;
  }
}

