// RAG collections on embedded LanceDB: one table per collection (chunks, vectors, BM25 index), ingest and search.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, realpathSync, statSync } from 'node:fs';
import { cpus } from 'node:os';
import { resolve } from 'node:path';
import * as lancedb from '@lancedb/lancedb';
import { Field, FixedSizeList, Float32, Int32, Schema, Utf8 } from 'apache-arrow';
import type { RagEmbedder } from './embedder.js';
import { docKind } from './extract.js';
import { docHash, prepareDocuments, type DocumentInput, type PrepareOptions, type Preparer } from './prepare.js';
import { compileFilter, parseFilter, sqlString, type Filter } from './filter.js';
import { rrf } from './fusion.js';
import { readTextFile } from '../../formats/lines.js';

// LanceDB's Rust log goes to stderr at warn by default ("No existing dataset … will be created"): errors only, unless set
process.env.LANCEDB_LOG ??= 'error';
// Lance sizes its CPU pool from the core count; on a 2-core host the default pool deadlocks Lance's BM25 index builder
// (every thread parked, 0% CPU) in the table.optimize() that merges new rows into the index, reproducibly near 15k
// chunks of Brown text, as LANCE_CPU_THREADS=1 does anywhere (lancedb/lancedb#3568 describes the cycle: a producer parks
// the only blocking thread that its consumer needs). 2 threads avoid it here; floe asks for at least 4 and keeps a
// user's setting. Lance reads it when it first starts its pool, which no import does, so setting it here is in time.
export const LANCE_MIN_CPU_THREADS = 4;
process.env.LANCE_CPU_THREADS ??= String(Math.max(LANCE_MIN_CPU_THREADS, cpus().length));

export type SearchMode = 'vector' | 'bm25' | 'hybrid';
export const SEARCH_MODES: readonly SearchMode[] = ['vector', 'bm25', 'hybrid'];

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const META_EMBEDDER = 'floe.embedder';
const META_DIM = 'floe.dim';
const META_CREATED = 'floe.created';
/** Below this many rows, vector search is exact (brute force); from it an IVF-HNSW-SQ index, from VECTOR_PQ_ROWS IVF-PQ. */
export const VECTOR_INDEX_ROWS = 20_000;
export const VECTOR_PQ_ROWS = 500_000;
const WRITE_ROWS = 512; // whole documents are written together until a commit holds at least this many chunks
const EMBED_BATCH = 64; // chunks per embed call
const INDEX_TRIES = 8; // index steps refused for a concurrent writer's commit are run again up to this many times
const TEXT_INDEX = () => lancedb.Index.fts({ withPosition: false }); // BM25 over the chunk text

/** Collection sizes (rows) from which vector search uses an index. */
export interface IndexPolicy { readonly hnswRows: number; readonly pqRows: number }

export interface CollectionInfo {
  readonly name: string;
  readonly embedder: string;
  readonly dim: number;
  readonly chunks: number;
  readonly documents: number;
  readonly created: string;
  readonly vectorIndex: string | null; // null: brute force
}

/** One stored chunk as search returns it. */
export interface Passage {
  readonly id: string;
  readonly source: string;
  readonly chunk: number; // index of the chunk in its document
  readonly start: number; // [start, end): UTF-16 offsets into the source file's text (extract.ts sourceSpan: plain text exact; Markdown with its elements' markup)
  readonly end: number;
  readonly text: string;
  readonly score: number; // vector: cosine similarity; bm25: BM25 score; hybrid: RRF score
  readonly vectorRank?: number; // 1-based rank in the dense list (hybrid only; absent: not in it)
  readonly bm25Rank?: number;
}

export interface SearchOptions {
  readonly k?: number; // default 5
  readonly mode?: SearchMode; // default hybrid
  readonly where?: Filter | null; // structured filter on source, kind, doc_hash, chunk, start_offset, end_offset (filter.ts)
  readonly depth?: number; // hybrid: candidates taken from each list (default max(50, 4k))
  readonly rrfK?: number; // hybrid: RRF constant (default 60)
  readonly weights?: readonly [number, number]; // hybrid: RRF weights of the [dense, BM25] lists (default [1, 1])
  readonly allowEmbedderMismatch?: boolean; // query with an embedder of another name (same dimension): e.g. the same model moved
}

export type { DocumentInput };

export interface IngestOptions {
  readonly chunkTokens?: number; // default min(256, embedder.maxTokens)
  readonly overlap?: number; // default chunkTokens / 8
  readonly commitChunks?: number; // whole documents go into one commit until it holds this many chunks (default 512)
  readonly allowEmbedderMismatch?: boolean; // add vectors from an embedder of another name (same dimension) than the recorded one
  readonly onProgress?: (p: IngestProgress) => void;
  /** Extraction and chunking off this thread (e.g. new ChunkWorker(modelDir).prepare); default: here, with embedder.countTokens. */
  readonly prepare?: Preparer;
}

/** After each embedding batch and each document: documents finished of total, chunks embedded so far. */
export interface IngestProgress { readonly done: number; readonly total: number; readonly source: string; readonly chunks: number }

export interface IngestResult {
  readonly added: string[]; // sources new to the collection
  readonly replaced: string[]; // sources whose content changed
  readonly skipped: string[]; // unchanged
  readonly chunks: number; // chunks written
  readonly embeddedTokens: number;
  readonly ms: { readonly extract: number; readonly embed: number; readonly write: number; readonly index: number };
}

export { sqlString };

/** Chunk ids are `${base}:${i}`; base hashes the source, its content and the chunk settings, so either changing re-chunks. */
function chunkIdBase(source: string, hash: string, o: PrepareOptions): string {
  return createHash('sha256').update(`${source}\0${hash}\0${o.chunkTokens}\0${o.overlap}`).digest('hex').slice(0, 16);
}

function schemaFor(dim: number, embedder: string, created: string): Schema {
  return new Schema([
    new Field('id', new Utf8(), false),
    new Field('source', new Utf8(), false),
    new Field('kind', new Utf8(), false),
    new Field('doc_hash', new Utf8(), false),
    new Field('chunk', new Int32(), false),
    new Field('start_offset', new Int32(), false),
    new Field('end_offset', new Int32(), false),
    new Field('text', new Utf8(), false),
    new Field('vector', new FixedSizeList(dim, new Field('item', new Float32(), true)), false),
  ], new Map([[META_EMBEDDER, embedder], [META_DIM, String(dim)], [META_CREATED, created]]));
}

/** Refuses a collection name other than 1-64 letters, digits, '_' or '-' starting with a letter or digit. */
export function checkName(name: string): void {
  if (!NAME_RE.test(name)) throw new Error(`invalid collection name ${JSON.stringify(name)}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit`);
}

/** A collection that does not exist; `have` lists the ones that do (the HTTP answer names them, not the store's path). */
export class CollectionNotFoundError extends Error {
  constructor(message: string, readonly collection: string = '', readonly have: readonly string[] = []) { super(message); }
}
/** ' (it has 'a', 'b')' or ' (it has none)'. */
export function haveList(have: readonly string[]): string {
  return have.length ? ` (it has ${have.map((n) => `'${n}'`).join(', ')})` : ' (it has none)';
}

/** The embedder is not the one the collection records (another name or dimension). */
export class EmbedderMismatchError extends Error {}

/** One embedder under two names: equal names, or paths that resolve to the same directory. */
function sameEmbedder(a: string, b: string): boolean {
  if (a === b) return true;
  try {
    return existsSync(a) && existsSync(b) && realpathSync(a) === realpathSync(b);
  } catch {
    return false;
  }
}

/** A directory of collections (a LanceDB database). */
export class RagStore {
  private constructor(readonly dir: string, private readonly db: lancedb.Connection, private readonly policy: IndexPolicy) {}

  /** Open (and create, when `create`) the database directory. */
  static async open(dir: string, opts: { create?: boolean; indexPolicy?: Partial<IndexPolicy> } = {}): Promise<RagStore> {
    const abs = resolve(dir);
    if (!existsSync(abs)) {
      if (!opts.create) throw new Error(`RAG database ${abs} does not exist; create a collection first (floe rag ingest creates both)`);
      mkdirSync(abs, { recursive: true });
    } else if (!statSync(abs).isDirectory()) throw new Error(`RAG database ${abs} is not a directory`);
    return new RagStore(abs, await lancedb.connect(abs), { hnswRows: VECTOR_INDEX_ROWS, pqRows: VECTOR_PQ_ROWS, ...opts.indexPolicy });
  }

  async names(): Promise<string[]> {
    return (await this.db.tableNames()).filter((n) => NAME_RE.test(n)).sort();
  }

  /** Every collection's info; one dropped or still being created meanwhile (here or by another process) is left out. */
  async list(): Promise<CollectionInfo[]> {
    const out: CollectionInfo[] = [];
    for (const n of await this.names()) {
      try {
        out.push(await (await this.collection(n)).info());
      } catch (e) {
        if (e instanceof CollectionNotFoundError || /not found/i.test((e as Error).message) || !(await this.has(n))) continue;
        throw e;
      }
    }
    return out;
  }

  async has(name: string): Promise<boolean> {
    return (await this.names()).includes(name);
  }

  /** Create a collection for an embedder; an existing one is returned when its dimension matches (existOk). */
  async create(name: string, embedder: Pick<RagEmbedder, 'name' | 'dim'>, opts: { existOk?: boolean; allowEmbedderMismatch?: boolean } = {}): Promise<Collection> {
    checkName(name);
    if (await this.has(name)) {
      if (!opts.existOk) throw new Error(`collection '${name}' already exists in ${this.dir}`);
      const c = await this.collection(name);
      c.checkEmbedder(embedder, opts);
      return c;
    }
    const created = new Date().toISOString(); // the time create() answers is the one the schema records
    const table = await this.db.createEmptyTable(name, schemaFor(embedder.dim, embedder.name, created), { mode: 'create' });
    // the BM25 index from the start: Lance searches rows an ingest has committed but not yet indexed through it
    await table.createIndex('text', { config: TEXT_INDEX() });
    return new Collection(name, embedder.name, embedder.dim, table, created, this.policy);
  }

  async collection(name: string): Promise<Collection> {
    checkName(name);
    if (!(await this.has(name))) {
      const have = await this.names();
      throw new CollectionNotFoundError(`collection '${name}' does not exist in ${this.dir}${haveList(have)}`, name, have);
    }
    const table = await this.db.openTable(name);
    const meta = (await table.schema()).metadata;
    const dim = Number(meta.get(META_DIM));
    if (!Number.isInteger(dim) || dim <= 0) throw new Error(`collection '${name}' in ${this.dir} is not a floe RAG collection (no ${META_DIM} in its schema)`);
    return new Collection(name, meta.get(META_EMBEDDER) ?? '?', dim, table, meta.get(META_CREATED) ?? '', this.policy);
  }

  async drop(name: string): Promise<void> {
    await this.collection(name);
    await this.db.dropTable(name);
  }

  close(): void {
    this.db.close();
  }
}

interface Row {
  id: string; source: string; kind: string; doc_hash: string; chunk: number; start_offset: number; end_offset: number; text: string; vector: Float32Array;
}

export class Collection {
  constructor(
    readonly name: string,
    readonly embedderName: string,
    readonly dim: number, // D
    readonly table: lancedb.Table,
    readonly created = '',
    readonly policy: IndexPolicy = { hnswRows: VECTOR_INDEX_ROWS, pqRows: VECTOR_PQ_ROWS },
  ) {}

  /**
   * Throw unless the embedder's vectors fit this collection: the same dimension always, and the recorded embedder
   * (name, or a path to the same directory) unless allowEmbedderMismatch: another model's vectors of the same size
   * would be compared as if they were one space, and every score would be noise.
   */
  checkEmbedder(e: Pick<RagEmbedder, 'name' | 'dim'>, opts: { allowEmbedderMismatch?: boolean } = {}): void {
    if (e.dim !== this.dim) {
      throw new EmbedderMismatchError(`collection '${this.name}' holds ${this.dim}-dim vectors from embedder '${this.embedderName}', but embedder '${e.name}' makes ${e.dim}-dim vectors; ` +
        `use that embedder (--embedding-model) or ingest into a new collection`);
    }
    if (!opts.allowEmbedderMismatch && !sameEmbedder(this.embedderName, e.name)) {
      throw new EmbedderMismatchError(`collection '${this.name}' was embedded by '${this.embedderName}', not by '${e.name}': vectors of two embedders are not comparable; ` +
        `use that embedder (--embedding-model), or allow the mismatch if it is the same model under another name`);
    }
  }

  async info(): Promise<CollectionInfo> {
    const chunks = await this.table.countRows();
    const docs = await this.documents();
    const vec = (await this.table.listIndices()).find((i) => i.columns.includes('vector'));
    return { name: this.name, embedder: this.embedderName, dim: this.dim, chunks, documents: docs.size, created: this.created, vectorIndex: vec ? vec.indexType : null };
  }

  /** source → content hash of every stored document. */
  async documents(): Promise<Map<string, string>> {
    const rows = await this.table.query().where('chunk = 0').select(['source', 'doc_hash']).toArray() as Array<{ source: string; doc_hash: string }>;
    return new Map(rows.map((r) => [r.source, r.doc_hash]));
  }

  /** source → id of its first chunk, which names the document's content and chunking (chunkIdBase). */
  private async firstChunkIds(): Promise<Map<string, string>> {
    const rows = await this.table.query().where('chunk = 0').select(['source', 'id']).toArray() as Array<{ source: string; id: string }>;
    return new Map(rows.map((r) => [r.source, r.id]));
  }

  /** Ingest files from disk (source = the path as given). */
  async ingestFiles(paths: readonly string[], embedder: RagEmbedder, opts: IngestOptions = {}): Promise<IngestResult> {
    const docs: DocumentInput[] = [];
    for (const p of paths) {
      docKind(p); // unsupported types fail before anything is read or written
      if (!existsSync(p)) throw new Error(`${p}: no such file`);
      if (!statSync(p).isFile()) throw new Error(`${p}: not a file`);
    }
    // as the HTTP upload reads them: a byte order mark is dropped, and bytes that are not UTF-8 fail the ingest before
    // any write (a lenient decode would turn them into U+FFFD and embed the damage without a word)
    for (const p of paths) {
      const content = readTextFile(p, { notUtf8: (at) => `${p}: not valid UTF-8 text (an invalid byte at offset ${at}); convert it first (e.g. iconv -f latin1 -t utf-8)` });
      docs.push({ source: p, content });
    }
    return this.ingest(docs, embedder, opts);
  }

  /**
   * Add or replace documents. Unchanged ones (same content hash) are skipped; each commit holds whole documents
   * (a changed document's old chunks go in the same commit its new ones arrive), so an interrupted ingest
   * leaves every document either as it was or fully replaced.
   */
  async ingest(docs: readonly DocumentInput[], embedder: RagEmbedder, opts: IngestOptions = {}): Promise<IngestResult> {
    this.checkEmbedder(embedder, opts);
    const chunkTokens = opts.chunkTokens ?? Math.min(256, embedder.maxTokens);
    if (chunkTokens > embedder.maxTokens) throw new RangeError(`chunk size ${chunkTokens} exceeds the embedder's ${embedder.maxTokens} tokens`);
    const overlap = opts.overlap ?? Math.floor(chunkTokens / 8);
    const seen = new Set<string>();
    for (const d of docs) {
      if (seen.has(d.source)) throw new Error(`${d.source}: given twice in one ingest`);
      seen.add(d.source);
    }
    // extract and chunk everything first (in opts.prepare's worker when given): a bad document fails the ingest before any write
    const t0 = performance.now();
    const existing = await this.firstChunkIds();
    const result = { added: [] as string[], replaced: [] as string[], skipped: [] as string[], chunks: 0, embeddedTokens: 0 };
    const changed: DocumentInput[] = [];
    const po = { chunkTokens, overlap };
    // skipped only when stored from the same content with the same chunking: other --chunk-tokens / --overlap re-chunk it
    for (const d of docs) {
      if (existing.get(d.source) === `${chunkIdBase(d.source, docHash(d.content), po)}:0`) result.skipped.push(d.source);
      else changed.push(d);
    }
    const todo = opts.prepare ? await opts.prepare(changed, po) : prepareDocuments(changed, po, (t) => embedder.countTokens(t));
    for (const d of todo) (existing.has(d.source) ? result.replaced : result.added).push(d.source);
    const ms = { extract: performance.now() - t0, embed: 0, write: 0, index: 0 };
    const total = todo.length;
    let pending: Row[] = [], pendingSources: string[] = [], done = 0, commits = 0;
    const flush = async () => {
      if (pendingSources.length === 0) return;
      const tw = performance.now();
      await this.table.mergeInsert('id').whenMatchedUpdateAll().whenNotMatchedInsertAll()
        .whenNotMatchedBySourceDelete({ where: `source IN (${pendingSources.map(sqlString).join(', ')})` })
        .execute(pending as unknown as Array<Record<string, unknown>>);
      ms.write += performance.now() - tw;
      pending = []; pendingSources = [];
      // tests: FLOE_TEST_RAG_COMMIT_PAUSE=N:MS stalls after this call's N-th commit, a window to SIGKILL it between commits
      const [pN, pMs] = (process.env.FLOE_TEST_RAG_COMMIT_PAUSE ?? '').split(':').map(Number);
      if (++commits === pN && pMs! > 0) {
        process.stderr.write(`rag: test pause after commit ${commits}\n`);
        await new Promise((r) => setTimeout(r, pMs));
      }
    };
    for (const d of todo) {
      const te = performance.now();
      const vectors: Float32Array[] = [];
      for (let i = 0; i < d.chunks.length; i += EMBED_BATCH) {
        const batch = d.chunks.slice(i, i + EMBED_BATCH);
        const vs = await embedder.embed(batch.map((c) => c.text));
        for (const v of vs) {
          if (v.length !== this.dim) throw new Error(`embedder '${embedder.name}' returned a ${v.length}-dim vector; collection '${this.name}' holds ${this.dim}`);
          vectors.push(v);
        }
        for (const c of batch) result.embeddedTokens += c.tokens;
        opts.onProgress?.({ done, total, source: d.source, chunks: result.chunks + vectors.length });
      }
      ms.embed += performance.now() - te;
      const idBase = chunkIdBase(d.source, d.hash, po);
      d.chunks.forEach((c, i) => pending.push({
        id: `${idBase}:${i}`, source: d.source, kind: d.kind, doc_hash: d.hash, chunk: i, start_offset: c.start, end_offset: c.end, text: c.text, vector: vectors[i]!,
      }));
      pendingSources.push(d.source);
      result.chunks += d.chunks.length;
      if (pending.length >= (opts.commitChunks ?? WRITE_ROWS)) await flush();
      opts.onProgress?.({ done: ++done, total, source: d.source, chunks: result.chunks });
    }
    await flush();
    const ti = performance.now();
    if (todo.length > 0) await this.updateIndexes();
    ms.index = performance.now() - ti;
    return { ...result, ms };
  }

  /** Remove a document's chunks; returns how many were removed. */
  async deleteSource(source: string): Promise<number> {
    const before = await this.table.countRows();
    await this.table.delete(`source = ${sqlString(source)}`);
    const removed = before - (await this.table.countRows());
    if (removed > 0) await this.updateIndexes();
    return removed;
  }

  /**
   * BM25 index always (rebuilt or merged); vector index once the collection is large enough, by size. Another writer
   * on the same directory (a second server, floe rag ingest) may commit in between: Lance refuses the later commit
   * with "Retryable commit conflict … Please retry", and the step is run again from the version that won (given up
   * after INDEX_TRIES: the committed rows are searched unindexed until a later index step folds them in).
   */
  async updateIndexes(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.updateIndexesOnce();
      } catch (e) {
        if (!/Retryable commit conflict/.test((e as Error).message)) throw e;
        // still racing: the rows are committed and searched unindexed until the next index step folds them in
        if (attempt >= INDEX_TRIES) return;
        await new Promise((r) => setTimeout(r, 10 + Math.random() * 25 * 2 ** attempt));
        await this.table.checkoutLatest(); // this handle reads its own last version until told to look again
      }
    }
  }

  private async updateIndexesOnce(): Promise<void> {
    const rows = await this.table.countRows();
    const indices = await this.table.listIndices();
    const fts = indices.find((i) => i.columns.includes('text') && i.indexType === 'FTS');
    const vec = indices.find((i) => i.columns.includes('vector'));
    if (rows === 0) return;
    if (!fts) await this.table.createIndex('text', { config: TEXT_INDEX(), replace: true });
    const want = rows >= this.policy.pqRows ? 'IvfPq' : rows >= this.policy.hnswRows ? 'IvfHnswSq' : null;
    if (want && vec?.indexType !== want) {
      const config = want === 'IvfPq'
        ? lancedb.Index.ivfPq({ distanceType: 'dot', numPartitions: Math.max(1, Math.round(Math.sqrt(rows))) })
        : lancedb.Index.hnswSq({ distanceType: 'dot' });
      await this.table.createIndex('vector', { config, replace: true });
    }
    // fold unindexed rows into existing indexes (fresh ones already cover everything)
    if (fts || vec) await this.table.optimize();
  }

  /** Top-k passages for a query: dense (cosine), BM25, or both fused by reciprocal rank. */
  async search(query: string, embedder: RagEmbedder | null, opts: SearchOptions = {}): Promise<Passage[]> {
    const k = opts.k ?? 5;
    const mode = opts.mode ?? 'hybrid';
    if (!Number.isInteger(k) || k < 1) throw new RangeError(`k must be a positive integer, got ${k}`);
    if (!SEARCH_MODES.includes(mode)) throw new RangeError(`mode must be one of ${SEARCH_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
    if (query.trim() === '') throw new RangeError('the query is empty');
    // validated again here: library callers may pass anything (a raw SQL string is refused)
    const f = parseFilter(opts.where);
    const where = f === null ? null : compileFilter(f);
    if (mode === 'bm25') return this.bm25(query, k, where);
    if (!embedder) throw new Error(`${mode} search needs an embedder`);
    this.checkEmbedder(embedder, opts);
    const [qv] = await embedder.embed([query]);
    if (mode === 'vector') return this.dense(qv!, k, where);
    const depth = opts.depth ?? Math.max(50, 4 * k);
    const [dense, sparse] = await Promise.all([this.dense(qv!, depth, where), this.bm25(query, depth, where)]);
    const fused = rrf([dense.map((p) => p.id), sparse.map((p) => p.id)], opts.rrfK ?? 60, opts.weights);
    const byId = new Map([...sparse, ...dense].map((p) => [p.id, p]));
    const dRank = new Map(dense.map((p, i) => [p.id, i + 1]));
    const sRank = new Map(sparse.map((p, i) => [p.id, i + 1]));
    return fused.slice(0, k).map(({ id, score }) => ({
      ...byId.get(id)!, score,
      ...(dRank.has(id) ? { vectorRank: dRank.get(id)! } : {}),
      ...(sRank.has(id) ? { bm25Rank: sRank.get(id)! } : {}),
    }));
  }

  /** Dense search over the unit vectors: score = dot product = cosine similarity. */
  async dense(qv: Float32Array, k: number, where: string | null): Promise<Passage[]> {
    if (qv.length !== this.dim) throw new Error(`query vector has ${qv.length} dims; collection '${this.name}' holds ${this.dim}`);
    let q = this.table.vectorSearch(qv).distanceType('dot').limit(k).select([...COLUMNS, '_distance']);
    if (where) q = q.where(where);
    const rows = await runQuery(q, where);
    return rows.map((r) => passage(r, 1 - (r._distance as number)));
  }

  async bm25(query: string, k: number, where: string | null): Promise<Passage[]> {
    if ((await this.table.countRows()) === 0) return [];
    // a collection without its text index (an older floe's, or an ingest killed before indexing) gets it now
    if (!(await this.table.listIndices()).some((i) => i.columns.includes('text') && i.indexType === 'FTS')) {
      await this.table.createIndex('text', { config: TEXT_INDEX(), replace: true });
    }
    let q = this.table.search(query, 'fts').limit(k).select([...COLUMNS, '_score']);
    if (where) q = q.where(where);
    const rows = await runQuery(q, where);
    return rows.map((r) => passage(r, r._score as number));
  }
}

const COLUMNS = ['id', 'source', 'chunk', 'start_offset', 'end_offset', 'text'];

async function runQuery(q: { toArray(): Promise<unknown[]> }, where: string | null): Promise<Array<Record<string, unknown>>> {
  try {
    return await q.toArray() as Array<Record<string, unknown>>;
  } catch (e) {
    if (where) throw new Error(`the filter ${JSON.stringify(where)} was refused: ${(e as Error).message.split('\n')[0]}`);
    throw e;
  }
}

function passage(r: Record<string, unknown>, score: number): Passage {
  return {
    id: r.id as string, source: r.source as string, chunk: r.chunk as number, start: r.start_offset as number, end: r.end_offset as number,
    text: r.text as string, score,
  };
}
