// RAG routes (under --rag-db): collections (create, list, get, delete), documents (add text or an uploaded file,
// delete by source), POST /v1/rag/query, and the `rag` extension of chat completions (passages in, citations out).

import { constants as bufferConstants } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import multipart from '@fastify/multipart';
import type { FastifyInstance } from 'fastify';
import type { ChatMessage } from '../formats/chat-template.js';
import { citations, fitPassages, injectPassages, type Citation } from '../platform/rag/answer.js';
import type { RagEmbedder } from '../platform/rag/embedder.js';
import { SUPPORTED_EXTENSIONS } from '../platform/rag/extract.js';
import { ChunkWorker } from '../platform/rag/chunk-pool.js';
import { FilterError, parseFilter, type Filter } from '../platform/rag/filter.js';
import { collectionJson, passageJson } from '../platform/rag/json.js';
import { checkName, CollectionNotFoundError, EmbedderMismatchError, haveList, RagStore, SEARCH_MODES, type Collection, type DocumentInput, type Passage, type SearchMode } from '../platform/rag/store.js';
import { poolFrom, type EmbeddingModel } from './embeddings-routes.js';
import { ApiError, invalid } from './errors.js';
import { multipartError } from './multipart.js';
import { queryOne } from './paging.js';
import { firstInvalidByte } from '../formats/lines.js';

/** RagEmbedder over the server's embedding engine (its worker thread embeds; the HTTP loop never waits on it). */
export function engineEmbedder(m: EmbeddingModel | null, name: string): RagEmbedder {
  if (!m) throw invalid('model', 'this server has no embedding model for RAG: start floe serve with --embedding-model PATH', 'rag_unavailable');
  const tok = m.tokenizer;
  if (!tok) throw new ApiError(500, `the embedding model '${m.name}' has no tokenizer`);
  const D = m.engine.info.hiddenSize;
  return {
    name, dim: D, maxTokens: m.maxTokens, tokenizerDir: name, // name: the embedding model's resolved directory
    countTokens: (t) => tok.encode(t, { addSpecialTokens: true }).length,
    embed: async (texts) => {
      const outs = await Promise.all(texts.map((t) => {
        const ids = tok.encode(t, { addSpecialTokens: true }).slice(0, m.maxTokens);
        return m.engine.embed({ id: `rag-${randomUUID()}`, promptIds: ids, pooling: m.pooling, poolFrom: poolFrom(m, ids, m.pooling), normalize: true });
      }));
      return outs.map((o) => o.embedding);
    },
  };
}

export interface RagRouteOptions {
  readonly db: string; // the LanceDB directory (created on first use)
  readonly embedder: () => Promise<RagEmbedder>; // the server's embedding model (throws while loading / when absent)
  readonly tracked: <T>(fn: () => Promise<T>) => Promise<T>; // a graceful stop lets it finish before the embedder stops
  readonly maxFileBytes?: number; // largest uploaded document (default 16 MiB; at most buffer.constants.MAX_STRING_LENGTH)
}

export const DEFAULT_RAG_FILE_BYTES = 16 * 2 ** 20;

/**
 * An upload is decoded whole into one string: past V8's longest (MAX_STRING_LENGTH UTF-16 units, ~512 MiB; a byte
 * of UTF-8 is at most one unit) the decoder throws, and a document a limit let in could never be read. Throws a
 * RangeError naming `what` and the limit.
 */
export function checkRagFileBytes(n: number | undefined, what: string): void {
  if (n === undefined) return;
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`${what} must be a whole number of bytes >= 1, got ${n}`);
  const max = bufferConstants.MAX_STRING_LENGTH;
  if (n > max) {
    throw new RangeError(`${what} is ${n} bytes, more than the ${max} (${(max / 2 ** 20).toFixed(0)} MiB) one JavaScript string holds; an uploaded document is decoded whole, so a larger one could never be read: give at most ${max}`);
  }
}

/** What the chat route needs: strip and check the `rag` field, then retrieve and inject. */
export interface RagChat {
  /** The body without `rag`, and the parsed field (null when absent). */
  take(body: unknown): { body: unknown; rag: RagChatSpec | null };
  /** Retrieve for the last user message, inject the passages that fit in `limit` prompt tokens. */
  apply(spec: RagChatSpec, messages: readonly ChatMessage[], encode: (m: readonly ChatMessage[]) => number[], limit: number): Promise<RagApplied>;
}

export interface RagChatSpec {
  readonly collection: string; readonly k: number; readonly mode: SearchMode; readonly where: Filter | null; readonly allowEmbedderMismatch: boolean;
}
export interface RagApplied {
  readonly messages: ChatMessage[];
  readonly ids: number[];
  readonly used: Passage[];
  readonly dropped: Passage[];
  /** Citations of the used passages, marking those the answer cites as [n]. */
  cite(answer: string): { citations: Citation[]; dropped: Array<Pick<Passage, 'id' | 'source' | 'chunk' | 'start' | 'end' | 'score'>> };
}

const fmtLimit = (n: number): string => (n % 2 ** 20 === 0 ? `${n / 2 ** 20} MiB` : `${n} bytes`);
const obj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Refuse a key outside `known` (as `guardrails` does): a misspelt or unsupported option would otherwise do nothing. */
function onlyKnown(o: Record<string, unknown>, known: readonly string[], prefix: string): void {
  for (const k of Object.keys(o)) if (!known.includes(k)) throw invalid(`${prefix}${k}`, `unrecognized argument '${prefix}${k}' (expected ${known.join(', ')})`, 'unknown_parameter');
}

function str(b: Record<string, unknown>, name: string, param = name): string {
  const v = b[name];
  if (typeof v !== 'string' || v.length === 0) throw invalid(param, `'${param}' must be a non-empty string`, 'invalid_type');
  return v;
}

function kOf(v: unknown, param: string): number {
  if (v === undefined) return 5;
  if (!(typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 100)) throw invalid(param, `'${param}' must be an integer in [1, 100], got ${JSON.stringify(v)}`);
  return v;
}

function modeOf(v: unknown, param: string): SearchMode {
  if (v === undefined) return 'hybrid';
  if (!SEARCH_MODES.includes(v as SearchMode)) throw invalid(param, `'${param}' must be one of ${SEARCH_MODES.join(', ')}, got ${JSON.stringify(v)}`);
  return v as SearchMode;
}

/** A structured filter ({field, op, value} or an array of them); raw SQL strings are refused with a 400. */
function whereOf(v: unknown, param: string): Filter | null {
  try {
    return parseFilter(v, param);
  } catch (e) {
    if (e instanceof FilterError) throw invalid(e.param, e.message, 'invalid_filter');
    throw e;
  }
}

/** Hybrid fusion: `rrf_k` (RRF constant, default 60) and `weights` [dense, bm25] (default [1, 1]). */
function fusionOf(b: Record<string, unknown>): { rrfK?: number; weights?: readonly [number, number] } {
  const out: { rrfK?: number; weights?: readonly [number, number] } = {};
  if (b.rrf_k !== undefined) {
    if (!(typeof b.rrf_k === 'number' && Number.isFinite(b.rrf_k) && b.rrf_k >= 0 && b.rrf_k <= 1e6)) throw invalid('rrf_k', `'rrf_k' must be a number in [0, 1e6], got ${JSON.stringify(b.rrf_k)}`);
    out.rrfK = b.rrf_k;
  }
  if (b.weights !== undefined) {
    const w = b.weights;
    if (!(Array.isArray(w) && w.length === 2 && w.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= 0 && x <= 1e6))) {
      throw invalid('weights', `'weights' must be [dense, bm25]: two numbers ≥ 0, got ${JSON.stringify(w)}`);
    }
    out.weights = [w[0] as number, w[1] as number];
  }
  return out;
}

function allowOf(v: unknown, param: string): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw invalid(param, `'${param}' must be a boolean`, 'invalid_type');
  return v;
}

/** Store errors as API errors: a missing collection is 404, a refused filter or bad document 400. */
async function api<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof ApiError) throw e;
    const m = (e as Error).message;
    // named without the store's path on this host, which is no client's business
    if (e instanceof CollectionNotFoundError) throw new ApiError(404, `collection '${e.collection}' does not exist on this server${haveList(e.have)}`, 'collection', 'collection_not_found');
    if (e instanceof EmbedderMismatchError) {
      throw new ApiError(400, `${m} (this server embeds with --embedding-model; a query may send "allow_embedder_mismatch": true to search it anyway)`, 'collection', 'embedder_mismatch');
    }
    // the field each refusal is about (the message names the document or value)
    const param = /invalid collection name/.test(m) ? 'collection' : /query is empty/.test(m) ? 'query'
      : /unsupported file type|document is empty|given twice/.test(m) ? 'documents' : /was refused/.test(m) ? 'where' : /-dim vectors/.test(m) ? 'collection' : null;
    if (param) throw invalid(param, m);
    throw e;
  }
}

export function registerRagRoutes(app: FastifyInstance, o: RagRouteOptions): RagChat {
  checkRagFileBytes(o.maxFileBytes, 'rag maxFileBytes');
  let storeP: Promise<RagStore> | null = null;
  const store = () => (storeP ??= RagStore.open(o.db, { create: true }));
  const embedder = () => o.embedder();
  // one writer at a time per process: LanceDB commits are atomic, but ingest reads then writes
  let writing: Promise<unknown> = Promise.resolve();
  // Run f on collection `name`; when it fails because the collection was dropped under it (DELETE while it ran, or
  // another process's `floe rag delete`: Lance's files vanish mid-read), answer the 404 a missing collection gets.
  // A DELETE of this process may still be removing the files: the writes under way finish before the check.
  const within = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    try {
      return await api(f);
    } catch (e) {
      if (e instanceof ApiError) throw e;
      await writing;
      if (await (await store()).has(name).catch(() => true)) throw e;
      throw new ApiError(404, `collection '${name}' was deleted while this request was using it`, 'collection', 'collection_not_found');
    }
  };
  const collection = async (name: string): Promise<Collection> => within(name, async () => (await store()).collection(name));
  const serial = <T>(f: () => Promise<T>): Promise<T> => {
    const next = writing.then(f, f);
    writing = next.catch(() => {});
    return next;
  };
  // fields snake_case, as every floe HTTP field (and `floe rag --json`); the library's objects are camelCase
  const info = async (c: Collection) => ({ object: 'rag.collection', ...collectionJson(await c.info()) });

  app.get('/v1/rag/collections', async () => {
    const s = await store();
    return { object: 'list', data: (await s.list()).map((c) => ({ object: 'rag.collection', ...collectionJson(c) })) };
  });

  app.post('/v1/rag/collections', async (req) => {
    if (!obj(req.body)) throw invalid('body', 'expected a JSON object {"name": "..."}');
    const name = str(req.body, 'name');
    return serial(() => api(async () => {
      try { checkName(name); } catch (e) { throw invalid('name', (e as Error).message); }
      const s = await store();
      if (await s.has(name)) throw new ApiError(400, `collection '${name}' already exists`, 'name', 'collection_exists');
      return info(await s.create(name, await embedder()));
    }));
  });

  app.get<{ Params: { name: string } }>('/v1/rag/collections/:name', async (req) => {
    const c = await collection(req.params.name);
    return within(c.name, () => info(c));
  });

  app.delete<{ Params: { name: string } }>('/v1/rag/collections/:name', async (req) => serial(async () => {
    await api(async () => (await store()).drop(req.params.name));
    return { object: 'rag.collection', name: req.params.name, deleted: true };
  }));

  // extraction and chunking (tokenizer-heavy) run in a worker thread, never on the HTTP event loop
  const chunkers = new Map<string, ChunkWorker>();
  app.addHook('onClose', async () => { await Promise.all([...chunkers.values()].map((w) => w.close())); });
  const chunker = (dir: string) => { let w = chunkers.get(dir); if (!w) chunkers.set(dir, w = new ChunkWorker(dir)); return w; };
  const ingest = async (name: string, docs: DocumentInput[]) => serial(async () => {
    const c = await collection(name);
    const e = await embedder();
    if (!e.tokenizerDir) throw new ApiError(500, `the embedding model '${e.name}' names no tokenizer directory to chunk with`);
    const r = await api(() => c.ingest(docs, e, { prepare: chunker(e.tokenizerDir!).prepare }));
    return { object: 'rag.ingest', collection: name, added: r.added, replaced: r.replaced, skipped: r.skipped, chunks: r.chunks };
  });

  void app.register(async (sub) => {
    await sub.register(multipart, { limits: { fileSize: o.maxFileBytes ?? DEFAULT_RAG_FILE_BYTES, files: 1 } });
    // JSON {"source", "text"} or {"documents": [{"source", "text"}, …]}, or multipart with a file (its name is the source)
    sub.post<{ Params: { name: string } }>('/v1/rag/collections/:name/documents', async (req) => {
      const docs: DocumentInput[] = [];
      if (req.isMultipart()) {
        let source: string | null = null;
        const limit = o.maxFileBytes ?? DEFAULT_RAG_FILE_BYTES;
        let current = 'the document'; // the file part being read
        try {
          for await (const part of req.parts()) {
            if (part.type === 'file') {
              if (part.fieldname !== 'file') throw invalid(part.fieldname, `unexpected file field '${part.fieldname}'; send the document as 'file'`);
              current = part.filename || current;
              const data = await part.toBuffer();
              let text: string;
              try {
                text = new TextDecoder('utf-8', { fatal: true }).decode(data);
              } catch (err) {
                const at = firstInvalidByte(data);
                if (at === data.length) throw err; // not the bytes (the size is checked at start: one string holds the largest upload)
                throw invalid('file', `${current} is not valid UTF-8 text (an invalid byte at offset ${at}: 0x${data[at]!.toString(16).padStart(2, '0')}); convert it first (e.g. iconv -f latin1 -t utf-8)`);
              }
              docs.push({ source: part.filename || 'upload.txt', content: text });
            } else if (part.fieldname === 'source') source = String(part.value);
          }
        } catch (e) {
          throw multipartError(e, 'document', () => new ApiError(413, `${current} is larger than the ${fmtLimit(limit)} an upload may be; split it`, 'file', 'file_too_large'));
        }
        if (docs.length === 0) throw invalid('file', `no file part: send the document as the multipart field 'file' (${SUPPORTED_EXTENSIONS.join(', ')})`);
        if (source !== null) docs[0] = { source, content: docs[0]!.content, kind: docs[0]!.source };
      } else {
        if (!obj(req.body)) throw invalid('body', 'expected {"source", "text"} or {"documents": [...]} (or multipart with a file)');
        const list = req.body.documents === undefined ? [req.body] : req.body.documents;
        if (!Array.isArray(list) || list.length === 0) throw invalid('documents', "'documents' must be a non-empty array");
        list.forEach((d, i) => {
          const p = req.body && (req.body as Record<string, unknown>).documents === undefined ? '' : `documents[${i}].`;
          if (!obj(d)) throw invalid(`${p}source`, `'${p.slice(0, -1) || 'body'}' must be an object`);
          const kind = d.kind === undefined ? undefined : str(d, 'kind', `${p}kind`);
          if (kind !== undefined && !SUPPORTED_EXTENSIONS.some((x) => kind.toLowerCase().endsWith(x))) {
            throw invalid(`${p}kind`, `'${p}kind' is a file name whose extension picks the parser (${SUPPORTED_EXTENSIONS.join(', ')}), got ${JSON.stringify(kind)}`);
          }
          docs.push({ source: str(d, 'source', `${p}source`), content: typeof d.text === 'string' ? d.text : str(d, 'text', `${p}text`), kind: kind ?? (/\.[a-z]+$/i.test(d.source as string) ? undefined : 'text.txt') });
        });
      }
      return o.tracked(() => ingest(req.params.name, docs));
    });
  });

  app.delete<{ Params: { name: string }; Querystring: { source?: string } }>('/v1/rag/collections/:name/documents', async (req) => {
    const source = queryOne(req.query, 'source');
    if (!source) throw invalid('source', "give the document's source as ?source=...");
    return serial(async () => {
      const c = await collection(req.params.name);
      const n = await c.deleteSource(source);
      if (n === 0) throw new ApiError(404, `collection '${c.name}' has no document with source ${JSON.stringify(source)}`, 'source', 'document_not_found');
      return { object: 'rag.document', source, deleted: true, chunks: n };
    });
  });

  app.post('/v1/rag/query', (req) => o.tracked(async () => {
    if (!obj(req.body)) throw invalid('body', 'expected {"collection", "query", "k"?, "mode"?, "where"?, "rrf_k"?, "weights"?, "allow_embedder_mismatch"?}');
    const b = req.body;
    onlyKnown(b, ['collection', 'query', 'k', 'mode', 'where', 'rrf_k', 'weights', 'allow_embedder_mismatch'], '');
    const name = str(b, 'collection'), query = str(b, 'query');
    const k = kOf(b.k, 'k'), mode = modeOf(b.mode, 'mode'), where = whereOf(b.where, 'where'), fusion = fusionOf(b);
    const allowEmbedderMismatch = allowOf(b.allow_embedder_mismatch, 'allow_embedder_mismatch');
    const c = await collection(name);
    const passages = await within(c.name, async () => c.search(query, mode === 'bm25' ? null : await embedder(), { k, mode, where, ...fusion, allowEmbedderMismatch }));
    return { object: 'list', collection: name, mode, data: passages.map((p, i) => ({ object: 'rag.passage', rank: i + 1, ...passageJson(p) })) };
  }));

  return {
    take(body) {
      if (!obj(body) || body.rag === undefined) return { body, rag: null };
      const { rag, ...rest } = body;
      if (!obj(rag)) throw invalid('rag', "'rag' must be an object {\"collection\", \"k\"?, \"mode\"?, \"where\"?}", 'invalid_type');
      onlyKnown(rag, ['collection', 'k', 'mode', 'where', 'allow_embedder_mismatch'], 'rag.');
      return {
        body: rest,
        rag: {
          collection: str(rag, 'collection', 'rag.collection'), k: kOf(rag.k, 'rag.k'), mode: modeOf(rag.mode, 'rag.mode'), where: whereOf(rag.where, 'rag.where'),
          allowEmbedderMismatch: allowOf(rag.allow_embedder_mismatch, 'rag.allow_embedder_mismatch'),
        },
      };
    },
    async apply(spec, messages, encode, limit) {
      const last = [...messages].reverse().find((m) => m.role === 'user');
      const query = typeof last?.content === 'string' ? last.content
        : Array.isArray(last?.content) ? last!.content.map((p) => (typeof p.text === 'string' ? p.text : '')).join(' ') : '';
      if (query.trim() === '') throw invalid('messages', 'rag needs a user message with text to retrieve for');
      const c = await collection(spec.collection);
      const found = await within(c.name, async () => c.search(query, spec.mode === 'bm25' ? null : await embedder(), { k: spec.k, mode: spec.mode, where: spec.where, allowEmbedderMismatch: spec.allowEmbedderMismatch }));
      const f = fitPassages(found, (ps) => {
        const m = injectPassages(messages, ps);
        return { ids: encode(m), messages: m };
      }, limit);
      return {
        messages: f.messages!, ids: f.ids, used: f.used, dropped: f.dropped,
        cite: (answer) => ({
          citations: citations(f.used, answer),
          dropped: f.dropped.map((p) => ({ id: p.id, source: p.source, chunk: p.chunk, start: p.start, end: p.end, score: p.score })),
        }),
      };
    },
  };
}

/** The chat route's answer when `rag` is sent to a server without --rag-db. */
export const noRag: RagChat = {
  take(body) {
    if (obj(body) && body.rag !== undefined) throw invalid('rag', "this server has no RAG database: start floe serve with --rag-db DIR (and an embedding model) to use 'rag'", 'rag_unavailable');
    return { body, rag: null };
  },
  apply() {
    throw new ApiError(500, 'rag is not configured');
  },
};
