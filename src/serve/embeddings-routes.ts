// POST /v1/embeddings (OpenAI shape): the --embedding-model (or the --task embed model) when the request names it or
// names none, else the chat model and its adapters (a fine-tuning job's checkpoint loaded on first use, as chat loads
// it); every input of a request goes to the engine at once, so the scheduler packs them into shared forwards.
// `dimensions` other than the model's width is refused (no truncation); truncate_prompt_tokens keeps each input's first k tokens.

import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { EmbedOutput, EngineClient, EngineInfo, RequestPriority } from '../engine/protocol.js';
import type { Pooling } from '../model/embed.js';
import { PRIORITY_HEADER } from './batch-routes.js';
import { ApiError, invalid } from './errors.js';
import { keepCount, keepFirst } from './prompt-truncation.js';
import type { ServeMetrics } from './metrics.js';
import type { ServeTokenizer } from './token-text.js';
import { parseEmbeddingRequest, type Prompt, type ValidationContext } from './validate.js';

/** A model served for embeddings: its engine, tokenizer and embedding_config.json. */
export interface EmbeddingModel {
  readonly name: string; // the id requests send
  readonly engine: EngineClient;
  readonly tokenizer: ServeTokenizer | null;
  readonly pooling: Pooling; // used when the request gives none
  readonly maxTokens: number; // longer inputs are refused
  readonly skipBos?: boolean; // mean pooling leaves out a leading BOS (embedding_config.json pool_skip_bos), as Embedder does
  readonly bosId?: number | null; // the tokenizer's
}

/** First prompt position mean pooling reads: 1 past a leading BOS when the model leaves it out (pool_skip_bos), else 0. */
export function poolFrom(m: EmbeddingModel | null | undefined, ids: readonly number[], pooling: Pooling): number {
  return pooling === 'mean' && m?.skipBos && ids.length > 1 && ids[0] === m.bosId ? 1 : 0;
}

export interface EmbeddingRouteOptions {
  readonly metrics: ServeMetrics;
  /** The loaded context (throws 503 while loading): the chat model, and the embedding model when there is one. */
  readonly context: () => { readonly engine: EngineClient; readonly tokenizer: ServeTokenizer | null; readonly embedding?: EmbeddingModel | null };
  readonly modelName: string; // the chat model's id
  readonly tracked: <T>(fn: () => Promise<T>) => Promise<T>;
  readonly noteIgnored: (reply: FastifyReply, fields: readonly string[]) => void;
  /** A fine-tuning job's model that the request names is loaded on first use, as chat and completions load it. */
  readonly serveJobModel: (model: unknown, engine: EngineClient) => Promise<void>;
}

/** Routes that a --task embed server refuses (it has no generative model). */
const GENERATIVE = new Set(['/v1/chat/completions', '/v1/completions']);

export function registerEmbeddingRoutes(app: FastifyInstance, o: EmbeddingRouteOptions): void {
  app.addHook('preHandler', async (req) => {
    if (!GENERATIVE.has(req.routeOptions.url ?? '')) return;
    const c = o.context();
    if (c.embedding && c.embedding.engine === c.engine) {
      throw new ApiError(400, `this server runs --task embed: '${c.embedding.name}' is an embedding model; only /v1/embeddings answers`, 'model', 'model_not_supported');
    }
  });

  app.post('/v1/embeddings', (req, reply) => o.tracked(async () => {
    const c = o.context();
    const body = req.body as Record<string, unknown> | null;
    const asked = body !== null && typeof body === 'object' ? body.model : undefined;
    const emb = c.embedding && (asked === undefined || asked === c.embedding.name) ? c.embedding : null;
    if (!emb) await o.serveJobModel(asked, c.engine);
    const engine = emb ? emb.engine : c.engine;
    const info = engine.info;
    const adapterNames = emb ? [] : (c.engine.adapters?.() ?? []).map((a) => a.name);
    // a name that is none of them gets a 404 naming every model that embeds here, the embedding model included
    const otherNames = c.embedding && !emb && c.embedding.engine !== c.engine ? [c.embedding.name] : [];
    const vctx: ValidationContext = { modelName: emb ? emb.name : o.modelName, vocabSize: info.vocabSize, hiddenSize: info.hiddenSize, maxNumSeqs: info.maxNumSeqs, adapterNames, otherNames };
    const p = parseEmbeddingRequest(req.body, vctx);
    o.noteIgnored(reply, p.ignored);
    const priority = lane(req.headers);
    checkRoom(info, priority, p.inputs.length, 'input', `'input' holds ${p.inputs.length} inputs`);
    const tokenizer = emb ? emb.tokenizer : c.tokenizer;
    const inputs = embeddingIds(tokenizer, p.inputs, p.inputs.map((_, i) => (p.inputs.length > 1 ? `input[${i}]` : 'input')), p.truncatePromptTokens, inputLimit(engine, emb));
    const id = `embd-${randomUUID().replaceAll('-', '')}`;
    const pooling = p.pooling ?? emb?.pooling ?? 'mean';
    const outs = await embedAll(reply, o.metrics, engine, id, inputs,
      { pooling, poolFrom: (tokens) => poolFrom(emb, tokens, pooling), normalize: p.normalize, priority, adapter: emb || p.model === o.modelName ? null : p.model });
    const tokens = outs.reduce((s, x) => s + x.promptTokens, 0);
    return {
      object: 'list', model: p.model,
      data: outs.map((x, i) => ({
        object: 'embedding', index: i,
        embedding: p.encodingFormat === 'base64'
          ? Buffer.from(x.embedding.buffer, x.embedding.byteOffset, x.embedding.byteLength).toString('base64')
          : Array.from(x.embedding),
      })),
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    };
  }));
}

/** The engine lane of a request: 'batch' when it says so (the Batch API's lines do), else interactive. */
export function lane(headers: Readonly<Record<string, string | string[] | undefined>>): RequestPriority {
  return headers[PRIORITY_HEADER] === 'batch' ? 'batch' : 'interactive';
}

/**
 * A 400 naming `param` when `count` engine requests exceed the engine's slots plus its queue: past them the engine
 * refuses some every time, so a 429 (whose Retry-After promises success later, and which clients retry) would be a
 * lie, as on /v1/completions. `holds`: what the request holds, e.g. `'input' holds 6 inputs`.
 */
export function checkRoom(info: EngineInfo, priority: RequestPriority, count: number, param: string, holds: string): void {
  const slots = priority === 'batch' ? info.maxBatchSeqs ?? info.maxNumSeqs : info.maxNumSeqs;
  if (info.maxQueue !== undefined && count > slots + info.maxQueue) {
    throw invalid(param, `${holds}, but this server takes at most ${slots + info.maxQueue} at once ` +
      `(${slots} sequence slots, --max-num-seqs, plus ${info.maxQueue} waiting, --max-queue); send fewer inputs per request or raise those flags`);
  }
}

/** The most tokens one input may have: the embedding model's max_tokens (embedding_config.json) and the engine's KV budget. */
export function inputLimit(engine: EngineClient, emb: EmbeddingModel | null): number {
  return Math.min(engine.info.maxRequestTokens, emb?.maxTokens ?? Infinity);
}

/**
 * Each prompt's token ids as the engine gets them: truncate_prompt_tokens k keeps its first k (-1: `limit`; k past
 * `limit` is a 400), and an input with no tokens or more than `limit` is a 400 naming `params[i]`.
 */
export function embeddingIds(tok: ServeTokenizer | null, prompts: readonly Prompt[], params: readonly string[], truncate: number | null, limit: number): number[][] {
  const keep = keepCount(truncate, limit, limit);
  return prompts.map((inp, i) => {
    const param = params[i]!;
    const full = promptIds(tok, inp, param);
    const ids = keep === null ? full : keepFirst(full, keep);
    if (ids.length === 0) throw invalid(param, 'the input has no tokens', 'invalid_value');
    if (ids.length > limit) throw invalid(param, `the input is ${ids.length} tokens, but this model takes at most ${limit}`, 'context_length_exceeded');
    return ids;
  });
}

/** How embedAll embeds: the same for every input but the first pooled position. */
export interface EmbedSettings {
  readonly pooling: Pooling;
  readonly poolFrom: (ids: readonly number[]) => number;
  readonly normalize: boolean;
  readonly priority: RequestPriority;
  readonly adapter: string | null;
}

/**
 * Every input as one engine request (ids `${id}-${i}`), sent together so the scheduler packs them into shared
 * forwards; the outputs in input order. A client that leaves (now, or before the handler got here) aborts those
 * still waiting, and so does one refused input (a 429): the others would be computed for an answer that is an error.
 * Counts the prompt tokens in /metrics.
 */
export async function embedAll(reply: FastifyReply, metrics: ServeMetrics, engine: EngineClient, id: string, inputs: readonly (readonly number[])[], s: EmbedSettings): Promise<EmbedOutput[]> {
  const ids = inputs.map((_, i) => `${id}-${i}`);
  let settled = false;
  const abort = () => { for (const x of ids) engine.abort(x); };
  const left = () => {
    if (settled) return;
    metrics.aborted.inc();
    abort();
  };
  if (reply.raw.destroyed) left();
  else reply.raw.once('close', left);
  let outs: EmbedOutput[];
  try {
    outs = await Promise.all(inputs.map((tokens, i) =>
      engine.embed({ id: ids[i]!, promptIds: tokens, pooling: s.pooling, poolFrom: s.poolFrom(tokens), normalize: s.normalize, priority: s.priority, adapter: s.adapter })));
  } catch (e) {
    abort();
    throw e;
  } finally {
    settled = true;
  }
  metrics.promptTokens.inc(outs.reduce((t, x) => t + x.promptTokens, 0));
  return outs;
}

/** Token ids of one input (text with the tokenizer's BOS, or ids as given). */
function promptIds(tok: ServeTokenizer | null, p: Prompt, param: string): number[] {
  if ('ids' in p) return [...p.ids];
  if (!tok) throw invalid(param, 'this model has no tokenizer: send token ids instead of text');
  try {
    return tok.encode(p.text, { addSpecialTokens: true });
  } catch (e) {
    throw invalid(param, `cannot tokenize '${param}': ${(e as Error).message}`);
  }
}
