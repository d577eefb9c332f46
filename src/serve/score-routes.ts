// vLLM's Score API (POST /score, /v1/score) and Rerank API (POST /rerank, /v1/rerank, /v2/rerank: Jina's and Cohere's
// shape) on the embedding model: a pair's score is the cosine similarity of its two texts' embeddings, as vLLM scores
// with an embedding (bi-encoder) model. The texts are embedded exactly as /v1/embeddings embeds them.

import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { EmbedOutput, EngineClient, RequestPriority } from '../engine/protocol.js';
import { checkRoom, embedAll, embeddingIds, inputLimit, lane, poolFrom, type EmbeddingModel } from './embeddings-routes.js';
import { ApiError, invalid } from './errors.js';
import type { ServeMetrics } from './metrics.js';
import { parseRerankRequest, parseScoreRequest, type ScoreText } from './score-request.js';
import type { ServeTokenizer } from './token-text.js';

/** Routes outside /v1 that still need the API key and a loaded model (vLLM serves them at the root and /v2). */
export const SCORE_ROUTES: ReadonlySet<string> = new Set(['/score', '/rerank', '/v2/rerank']);

export interface ScoreRouteOptions {
  readonly metrics: ServeMetrics;
  /** The loaded context (throws 503 while loading): the chat model, and the embedding model when there is one. */
  readonly context: () => { readonly engine: EngineClient; readonly tokenizer: ServeTokenizer | null; readonly embedding?: EmbeddingModel | null };
  readonly modelName: string; // the chat model's id
  readonly tracked: <T>(fn: () => Promise<T>) => Promise<T>;
  readonly noteIgnored: (reply: FastifyReply, fields: readonly string[]) => void;
}

const EPS = 1e-8; // torch.nn.CosineSimilarity's default

/** a·b / (max(|a|, ε) · max(|b|, ε)) over (D), in f64: torch's CosineSimilarity, which vLLM applies to two embeddings. */
export function cosine(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`cosine: embeddings of ${a.length} and ${b.length} dimensions`);
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return ab / (Math.max(Math.sqrt(aa), EPS) * Math.max(Math.sqrt(bb), EPS));
}

export function registerScoreRoutes(app: FastifyInstance, o: ScoreRouteOptions): void {
  const score = async (req: FastifyRequest, reply: FastifyReply) => {
    const p = parseScoreRequest(req.body, (m) => scorer(o, m));
    const emb = p.model;
    o.noteIgnored(reply, p.ignored);
    const [f1, f2] = p.fields;
    const id = `score-${randomUUID().replaceAll('-', '')}`;
    const outs = await embedTexts(o, emb, req, reply, id, [...p.first, ...p.second], p.truncatePromptTokens, f2, `'${f1}' and '${f2}'`);
    const pairs = pairUp(outs.slice(0, p.first.length), outs.slice(p.first.length));
    const tokens = pairs.reduce((s, x) => s + x.tokens, 0);
    return {
      id, object: 'list', created: Math.floor(Date.now() / 1000), model: emb.name,
      data: pairs.map((x, i) => ({ index: i, object: 'score', score: x.score })),
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    };
  };

  const rerank = async (req: FastifyRequest, reply: FastifyReply) => {
    const p = parseRerankRequest(req.body, (m) => scorer(o, m));
    const emb = p.model;
    o.noteIgnored(reply, p.ignored);
    const id = `rerank-${randomUUID().replaceAll('-', '')}`;
    const outs = await embedTexts(o, emb, req, reply, id, [p.query, ...p.documents], p.truncatePromptTokens, 'documents', `'query' and 'documents'`);
    const pairs = pairUp(outs.slice(0, 1), outs.slice(1));
    const tokens = pairs.reduce((s, x) => s + x.tokens, 0);
    // best first (a stable sort: ties keep the documents' order), then the top_n of them (0: all), as vLLM answers
    const ranked = pairs.map((x, i) => ({
      index: i, ...(p.returnDocuments ? { document: { text: p.documents[i]!.text } } : {}), relevance_score: x.score,
    })).sort((a, b) => b.relevance_score - a.relevance_score);
    return {
      id, model: emb.name, usage: { prompt_tokens: tokens, total_tokens: tokens },
      results: p.topN > 0 ? ranked.slice(0, p.topN) : ranked,
    };
  };

  for (const url of ['/score', '/v1/score']) app.post(url, (req, reply) => o.tracked(() => score(req, reply)));
  for (const url of ['/rerank', '/v1/rerank', '/v2/rerank']) app.post(url, (req, reply) => o.tracked(() => rerank(req, reply)));
}

/**
 * The embedding model a request scores with: the embedding model when `model` names it or is absent. The chat model
 * (and its adapters) is a 400: its pooled hidden states are not trained for similarity, and vLLM serves these routes
 * only for pooling models. Any other name is a 404.
 */
function scorer(o: ScoreRouteOptions, asked: string | null): EmbeddingModel {
  const c = o.context();
  const emb = c.embedding ?? null;
  if (emb && (asked === null || asked === emb.name)) return emb;
  const generative = emb?.engine === c.engine ? [] : [o.modelName, ...(c.engine.adapters?.() ?? []).map((a) => a.name)];
  const use = emb ? `send "model": "${emb.name}" or leave it out`
    : 'start the server with --embedding-model PATH (e.g. models/floe-embed), or serve an embedding model with --task embed';
  const name = asked ?? o.modelName;
  if (generative.includes(name)) {
    throw new ApiError(400, `'${name}' is a generative model, not an embedding model: /score and /rerank score with an embedding model (the cosine similarity of two texts' embeddings); ${use}`, 'model', 'model_not_supported');
  }
  throw new ApiError(404, `the model '${name.slice(0, 200)}' does not exist; ${emb ? `this server scores with '${emb.name}'` : `this server has no embedding model: ${use}`}`, 'model', 'model_not_found');
}

/**
 * Every text embedded at once, as /v1/embeddings embeds its inputs (the model's pooling, L2-normalized). `param`: the
 * field a request with too many texts is told to shorten; `sides`: the fields that hold them.
 */
async function embedTexts(o: ScoreRouteOptions, emb: EmbeddingModel, req: FastifyRequest, reply: FastifyReply, id: string,
  texts: readonly ScoreText[], truncate: number | null, param: string, sides: string): Promise<EmbedOutput[]> {
  const priority: RequestPriority = lane(req.headers);
  checkRoom(emb.engine.info, priority, texts.length, param, `${sides} hold ${texts.length} texts to embed`);
  if (!emb.tokenizer) throw invalid(param, `the embedding model '${emb.name}' has no tokenizer, so it cannot score text`);
  const ids = embeddingIds(emb.tokenizer, texts.map((t) => ({ text: t.text })), texts.map((t) => t.param), truncate, inputLimit(emb.engine, emb));
  return embedAll(reply, o.metrics, emb.engine, id, ids,
    { pooling: emb.pooling, poolFrom: (tokens) => poolFrom(emb, tokens, emb.pooling), normalize: true, priority, adapter: null });
}

/**
 * Each second-side embedding scored against its first-side partner: the one first text (1:N) or the one at its index
 * (N:N). `tokens` counts both texts of the pair, as vLLM's usage does (a 1:N query once per pair).
 */
function pairUp(first: readonly EmbedOutput[], second: readonly EmbedOutput[]): Array<{ score: number; tokens: number }> {
  return second.map((y, i) => {
    const x = first.length === 1 ? first[0]! : first[i]!;
    return { score: cosine(x.embedding, y.embedding), tokens: x.promptTokens + y.promptTokens };
  });
}
