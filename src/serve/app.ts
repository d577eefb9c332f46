// The OpenAI-compatible HTTP app (Fastify): routes, auth, limits, errors, streaming; built around an EngineClient.

import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { EngineRequestError, type EngineClient, type EngineInfo, type GenerateOutput, type GenerateRequest, type LogprobEntry } from '../engine/protocol.js';
import type { ChatMessage, ChatTemplate } from '../formats/chat-template.js';
import { encodeChatRequest } from './chat-prompt.js';
import { cutToolCalls, parseToolCalls, ToolCallStream } from './tool-calls.js';
import type { GenerationDefaults } from '../formats/hf-config.js';
import { PRIORITY_HEADER, registerBatchRoutes, registerLineAborts } from './batch-routes.js';
import { ApiError, invalid } from './errors.js';
import { DEFAULT_JOBS_THREADS, registerFtRoutes } from './ft-routes.js';
import { ServeMetrics } from './metrics.js';
import type { LoadDType } from '../formats/load.js';
import { registerLoraRoutes } from './lora-routes.js';
import { DEFAULT_GUARD_WINDOW, registerGuardRoutes, takeRails, type Rails } from './guard-routes.js';
import type { Guard } from '../platform/guard/guard.js';
import { requestId } from '../platform/request-id.js'; // OpenAI's x-request-id (the SDKs' _request_id, APIError.requestID): one per answer
import { engineEmbedder, noRag, registerRagRoutes } from './rag-routes.js';
import { registerEmbeddingRoutes, type EmbeddingModel } from './embeddings-routes.js';
import { registerScoreRoutes, SCORE_ROUTES } from './score-routes.js';
import { registerConsole } from './static.js';
import { checkAllowedOrigins, hookHeaders, registerCors } from './cors.js';
import { registerResponsesRoutes } from './responses-routes.js';
import { chatSettings, ChunkAssembler, registerChatStoreRoutes } from './chat-store.js';
import { FLOE_VERSION, registerTokenizeRoutes, TOKENIZE_ROUTES } from './tokenize-routes.js';
import { TextOffsets, TokenTexts, type ServeTokenizer } from './token-text.js';
import { badWordIds } from './bad-words.js';
import { keepCount, keepLast } from './prompt-truncation.js';
import {
  nestingError, parseChatRequest, parseCompletionRequest,
  type ChatParams, type GenerationParams, type Prompt, type ValidationContext,
} from './validate.js';

export type { ServeTokenizer } from './token-text.js';

/** Everything the routes need once the model is loaded. */
export interface ModelContext {
  readonly engine: EngineClient;
  readonly tokenizer: ServeTokenizer | null;
  readonly template: ChatTemplate | null;
  readonly defaults?: GenerationDefaults; // sampling defaults from generation_config.json
  readonly guard?: Guard | null; // --guard-model: guardrails and /v1/moderations
  readonly embedding?: EmbeddingModel | null; // --embedding-model, or the model itself with --task embed
}

export interface AppOptions {
  readonly modelName: string;
  readonly apiKey?: string | null;
  readonly bodyLimit?: number; // bytes; larger bodies get 413
  readonly metrics?: ServeMetrics;
  readonly logger?: boolean;
  readonly ui?: boolean; // the web console at / (default true)
  readonly modelPath?: string | null; // for the console's model facts
  readonly webDir?: string; // the console's files (default: the package's web/)
  readonly dataDir?: string | null; // Files and Batch API state (SQLite); absent → no /v1/files, /v1/batches
  readonly files?: { readonly maxBatchBytes?: number; readonly maxFineTuneBytes?: number }; // upload limits (default 200 / 512 MiB, OpenAI's)
  readonly lora?: { readonly enableLoading: boolean; readonly root: string | null; readonly maxRank?: number }; // runtime adapter loading; --max-lora-rank
  readonly jobsThreads?: number; // the fine-tuning trainer's threads (with dataDir)
  readonly dtype?: LoadDType; // the server's --dtype: fine-tuning jobs train on the base converted the same way
  readonly guardrails?: { readonly enforce: boolean; readonly window: number }; // --guardrails, --guard-window
  readonly rag?: { readonly db: string; readonly embedderName: string; readonly maxFileBytes?: number } | null; // RAG collections and chat's `rag` field (embedded by the embedding model); absent → off; maxFileBytes: largest document upload (default 16 MiB, at most buffer.constants.MAX_STRING_LENGTH)
  readonly allowedOrigins?: readonly string[]; // CORS: browser origins (scheme://host[:port]) that may call the API, or ['*']; absent or empty → none
}

export interface ServeApp {
  readonly app: FastifyInstance;
  readonly metrics: ServeMetrics;
  /** Leave the loading state: /health turns 200 and the /v1 routes answer. */
  ready(ctx: ModelContext): void;
  /** Before ready(): serve the adapters of succeeded fine-tuning jobs again (no-op without a data dir). */
  restoreAdapters(engine: EngineClient): Promise<void>;
  /** Shutting down: /health and new /v1 requests answer 503. */
  drain(): void;
  /** Generation and embedding requests in flight. */
  inFlight(): number;
}

export const DEFAULT_BODY_LIMIT = 8 * 2 ** 20;

const LOGPROB_FLOOR = -9999; // JSON has no -Infinity
const MAX_PARAM_LENGTH = 1024; // characters of one path parameter (a model or object id)
const RETRY_AFTER_S = 1; // Retry-After on 429 and on 503 while loading

export function createApp(opts: AppOptions): ServeApp {
  if (opts.allowedOrigins !== undefined) checkAllowedOrigins(opts.allowedOrigins, 'createApp: allowedOrigins');
  const metrics = opts.metrics ?? new ServeMetrics();
  const bodyLimit = opts.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const app = Fastify({
    logger: opts.logger ?? false, bodyLimit, forceCloseConnections: 'idle', return503OnClosing: true,
    // Fastify's 100 cuts path parameters such as a fine-tuned checkpoint's model id (ft:<base>:floe:<suffix up to 64>:<job id>:ckpt-step-N)
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // the router's own refusals (a malformed %-escape, a parameter past that) in OpenAI's error shape, as every other answer
    frameworkErrors: (err, req, reply) => {
      const path = req.raw.url?.split('?')[0]?.slice(0, 200) ?? '';
      const e = err.code === 'FST_ERR_MAX_PARAM_LENGTH'
        ? new ApiError(414, `a path segment of ${path} is longer than ${MAX_PARAM_LENGTH} characters`, null, 'uri_too_long')
        : new ApiError(400, `the URL ${path} is not valid: ${err.message}`, null, 'invalid_url');
      void (reply as FastifyReply).code(e.status).header('x-request-id', requestId()).send(e.body());
    },
  });
  // Bodies are JSON (or multipart uploads). Fastify would hand a text/plain body (fetch's default for a string) to the
  // routes as a string, refused as 'not a JSON object'; a 415 that names the header to send says what to do instead.
  app.removeContentTypeParser('text/plain');
  // An empty JSON body is no body: openai-python sends 'Content-Type: application/json' with none on the POSTs that
  // take none (batches.cancel, fine_tuning.jobs.cancel), and Fastify's parser would refuse it. Routes that need a body
  // still say so ('must be a JSON object, got nothing'); anything else goes to Fastify's parser (proto-poisoning checks).
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  // A body nested past MAX_JSON_DEPTH is a 400 naming its field, before a route recurses into it.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (body === '') return done(null, undefined);
    json(req, String(body), (err, v) => (err ? done(jsonBodyError(String(body))) : done(nestingError(v, null), v)));
  });
  const created = Math.floor(Date.now() / 1000);
  let ctx: ModelContext | null = null;
  let texts = new TokenTexts(null);
  let fingerprint = '';
  let draining = false;
  let inFlight = 0;
  // Requests a graceful stop lets finish before it stops the engines they use (server.ts close)
  const tracked = async <T>(fn: () => Promise<T>): Promise<T> => {
    inFlight++;
    try {
      return await fn();
    } finally {
      inFlight--;
    }
  };
  const keyDigest = opts.apiKey ? createHash('sha256').update(opts.apiKey).digest() : null;

  registerLineAborts(app); // a cancelled batch line (app.inject) stops as a client that leaves
  app.addHook('onRequest', async (req, reply) => {
    // OpenAI's request id: clients show it (the SDKs' _request_id, APIError.requestID); on raw, so streams and errors carry it too
    reply.raw.setHeader('x-request-id', requestId());
    const route = req.routeOptions.url ?? 'unmatched';
    reply.raw.once('close', () => metrics.requests.inc({ route, status: String(reply.raw.statusCode) }));
  });
  // between the two hooks: a preflight is answered before the key check, and every other answer (a 401 too) carries the CORS headers
  if (opts.allowedOrigins?.length) registerCors(app, opts.allowedOrigins);
  app.addHook('onRequest', async (req) => {
    const route = req.routeOptions.url ?? 'unmatched';
    // Judge by the matched route too: an encoded path (/%761/models) must not slip past auth.
    if (!route.startsWith('/v1') && !req.url.startsWith('/v1') && !TOKENIZE_ROUTES.has(route) && !SCORE_ROUTES.has(route)) return;
    if (keyDigest) {
      const h = req.headers.authorization;
      const m = typeof h === 'string' ? /^Bearer\s+(.+)$/i.exec(h.trim()) : null;
      const got = m ? createHash('sha256').update(m[1]!).digest() : null;
      if (!got || !timingSafeEqual(got, keyDigest)) {
        throw new ApiError(401, h === undefined ? 'missing API key: send the header "Authorization: Bearer <key>"' : 'invalid API key', null, 'invalid_api_key');
      }
    }
    if (draining) throw new ApiError(503, 'the server is shutting down', null, 'shutting_down');
    if (!ctx && req.routeOptions.url !== undefined) throw new ApiError(503, 'the model is still loading; retry shortly (GET /health turns 200 when ready)', null, 'model_loading');
  });

  app.setErrorHandler((err: unknown, req, reply) => {
    const e = toApiError(err, bodyLimit, req.headers['content-type']);
    if (e.status === 500) console.error(`floe serve: ${req.method} ${req.url}:`, err);
    // A full queue or a loading model clears up by itself: tell clients when to come back.
    if (e.status === 429 || e.code === 'model_loading') void reply.header('retry-after', String(RETRY_AFTER_S));
    void reply.code(e.status).header('content-type', 'application/json; charset=utf-8').send(JSON.stringify(e.body()));
  });
  app.setNotFoundHandler((req, reply) => {
    const e = new ApiError(404, `no route for ${req.method} ${req.url.split('?')[0]!.slice(0, 200)}`, null, 'not_found');
    void reply.code(404).send(e.body());
  });

  const model = (): ModelContext => {
    if (!ctx) throw new ApiError(503, 'the model is still loading', null, 'model_loading');
    return ctx;
  };
  const vctx = (c: ModelContext): ValidationContext =>
    ({ modelName: opts.modelName, vocabSize: c.engine.info.vocabSize, hiddenSize: c.engine.info.hiddenSize, maxNumSeqs: c.engine.info.maxNumSeqs, defaults: c.defaults, adapterNames: adapterList(c).map((a) => a.name) });
  const adapterList = (c: ModelContext) => c.engine.adapters?.() ?? [];
  /** The engine adapter a request's model field selects: null for the base. */
  const adapterOf = (name: string): string | null => (name === opts.modelName ? null : name);

  app.get('/health', async (_req, reply) => {
    if (draining) return reply.code(503).send({ status: 'shutting_down' });
    if (!ctx) return reply.code(503).header('retry-after', String(RETRY_AFTER_S)).send({ status: 'loading' });
    const failure = ctx.engine.failure();
    if (failure !== null) return reply.code(503).send({ status: 'engine_failed', error: failure });
    return { status: 'ok' };
  });

  const refresh = async () => {
    if (!ctx) return;
    try {
      metrics.update(await withTimeout(ctx.engine.stats(), 2000, 'engine stats'));
    } catch {
      // Engine gone (shutting down): serve the last values.
    }
  };
  app.get('/metrics', async (_req, reply) => {
    await refresh();
    const body = await metrics.text();
    return reply.header('content-type', metrics.contentType).send(body);
  });

  const batch = opts.dataDir ? registerBatchRoutes(app, { dataDir: opts.dataDir, apiKey: opts.apiKey ?? null, metrics, maxFileBytes: opts.files?.maxBatchBytes, maxFineTuneFileBytes: opts.files?.maxFineTuneBytes, window: () => 2 * (ctx?.engine.info.maxBatchSeqs ?? ctx?.engine.info.maxNumSeqs ?? 1) }) : null;
  const ft = batch && registerFtRoutes(app, { dataDir: opts.dataDir!, store: () => batch.service().store, baseModel: opts.modelName, modelPath: opts.modelPath ?? null, threads: opts.jobsThreads ?? DEFAULT_JOBS_THREADS, dtype: opts.dtype, maxLoraRank: opts.lora?.maxRank, engine: () => ctx?.engine ?? null });
  registerConsole(app, { ui: opts.ui ?? true, metrics, refresh, engineInfo: () => model().engine.info, modelName: opts.modelName, modelPath: opts.modelPath, webDir: opts.webDir });

  // adapters are listed as vLLM lists them: their own id, the base as parent, their directory as root
  const modelCards = () => {
    const c = model();
    const info = c.engine.info;
    // an embedding model takes inputs up to embedding_config.json's max_tokens (and its KV budget), as /v1/embeddings checks
    const embedLen = (m: EmbeddingModel) => Math.min(m.engine.info.maxRequestTokens, m.maxTokens);
    const embedOnly = c.embedding && c.embedding.engine === c.engine ? c.embedding : null; // --task embed
    // floe extension `task` (as --task): 'embed' cards answer only /v1/embeddings, so the console keeps them out of chat
    const base = { id: opts.modelName, object: 'model', created, owned_by: 'floe', root: info.modelId, parent: null, max_model_len: embedOnly ? embedLen(embedOnly) : info.maxModelLen, task: embedOnly ? 'embed' : 'generate' };
    const emb = c.embedding && !embedOnly ? [{ ...base, id: c.embedding.name, root: c.embedding.engine.info.modelId, max_model_len: embedLen(c.embedding), task: 'embed' }] : [];
    return [base, ...adapterList(c).map((a) => ({ ...base, id: a.name, root: a.path, parent: opts.modelName })), ...emb];
  };
  app.get('/v1/models', async () => ({ object: 'list', data: modelCards() }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (req) => {
    // a job's checkpoint is a model before its first request too; a job above --max-lora-rank is a 400 saying so
    await ft?.serveJobModel(req.params.id, model().engine);
    const cards = modelCards();
    const card = cards.find((m) => m.id === req.params.id);
    if (!card) throw new ApiError(404, `the model '${req.params.id.slice(0, 200)}' does not exist; this server serves ${cards.map((m) => `'${m.id}'`).join(', ')}`, 'model', 'model_not_found');
    return card;
  });
  // OpenAI's DELETE /v1/models/{model} deletes fine-tuned models, which live in the data dir (ft-routes); without one
  // there are none, and the client still gets OpenAI's answer for a model it cannot delete rather than 'no route'
  if (!ft) {
    app.delete<{ Params: { id: string } }>('/v1/models/:id', async (req) => {
      const name = req.params.id.slice(0, 200);
      const why = 'this server has no data dir (--no-batch), so no fine-tuning jobs and no fine-tuned models to delete';
      const cards = modelCards();
      if (cards.some((m) => m.id === req.params.id)) {
        throw new ApiError(400, `'${name}' is not the fine-tuned model of a job: DELETE /v1/models deletes only those, and ${why} (a LoRA adapter is unloaded with POST /v1/unload_lora_adapter)`, 'model', 'invalid_value');
      }
      throw new ApiError(404, `the model '${name}' does not exist; ${why}; this server serves ${cards.map((m) => `'${m.id}'`).join(', ')}`, 'model', 'model_not_found');
    });
  }
  const guardOpts = { guard: () => model().guard ?? null, tracked, enforce: opts.guardrails?.enforce ?? false, window: opts.guardrails?.window ?? DEFAULT_GUARD_WINDOW };
  registerGuardRoutes(app, guardOpts);
  const ragChat = opts.rag ? registerRagRoutes(app, { db: opts.rag.db, maxFileBytes: opts.rag.maxFileBytes, tracked, embedder: async () => engineEmbedder(model().embedding ?? null, opts.rag!.embedderName) }) : noRag;
  registerLoraRoutes(app, { enabled: opts.lora?.enableLoading ?? false, root: opts.lora?.root ?? null, baseName: opts.modelName, engine: () => model().engine });
  registerTokenizeRoutes(app, { model, vctx });
  const chats = registerChatStoreRoutes(app, batch ? () => batch.service().store : null); // store: true

  /** Prompt ids of one prompt, checked against the vocabulary. */
  const promptIds = (c: ModelContext, p: Prompt, param: string): number[] => {
    if ('ids' in p) return [...p.ids];
    if (!c.tokenizer) throw invalid(param, 'this model has no tokenizer: send token ids instead of text');
    let ids: number[];
    try {
      ids = c.tokenizer.encode(p.text, { addSpecialTokens: true });
    } catch (e) {
      throw invalid(param, `cannot tokenize '${param}': ${(e as Error).message}`);
    }
    if (ids.length === 0) throw invalid(param, `'${param}' must not be empty: this model's tokenizer adds no BOS, so an empty text is no tokens`);
    return ids;
  };

  /** The ids a tokenizer adds in front of every text it encodes (Llama's BOS); empty without a tokenizer. */
  const prefixes = new WeakMap<ServeTokenizer, readonly number[]>();
  const addedPrefix = (c: ModelContext): readonly number[] => {
    const t = c.tokenizer;
    if (!t) return [];
    let pre = prefixes.get(t);
    if (!pre) {
      const plain = t.encode('a', { addSpecialTokens: false });
      const full = t.encode('a', { addSpecialTokens: true });
      const n = full.length - plain.length;
      pre = n > 0 && plain.every((id, j) => full[n + j] === id) ? full.slice(0, n) : [];
      prefixes.set(t, pre);
    }
    return pre;
  };

  /** Output budget for one prompt: the asked max_tokens, or what is left of the context; 400 when it cannot fit. */
  const budget = (c: ModelContext, g: GenerationParams, len: number, promptParam: string): number => {
    const info = c.engine.info;
    const kvNote = info.maxRequestTokens < info.maxModelLen
      ? ` (the KV cache holds at most ${info.maxRequestTokens} tokens per request; raise --kv-cache-memory)` : '';
    const limit = info.maxRequestTokens;
    if (len >= limit) {
      throw invalid(promptParam, `the prompt is ${len} tokens, but this model's maximum context length is ${limit} tokens${kvNote}, leaving no room for output`, 'context_length_exceeded');
    }
    if (g.maxTokens === null) {
      const room = Math.min(limit - len, g.maxTokensCap ?? Infinity);
      // validate.ts checks min_tokens against a max_tokens the request gives; without one, against what the answer may have
      if (g.minTokens > room) {
        const why = room === g.maxTokensCap ? `the model's max_new_tokens (generation_config.json)` : `what the context leaves after the ${len}-token prompt`;
        throw invalid('min_tokens', `'min_tokens' (${g.minTokens}) must be at most the ${room} tokens this answer may have ('${g.maxTokensParam}' left out: ${why})`);
      }
      return room;
    }
    if (len + g.maxTokens > limit) {
      throw invalid(g.maxTokensParam, `this model's maximum context length is ${limit} tokens${kvNote}; you requested ${len + g.maxTokens} tokens ` +
        `(${len} in the prompt, ${g.maxTokens} for the completion); reduce the prompt or '${g.maxTokensParam}'`, 'context_length_exceeded');
    }
    return g.maxTokens;
  };

  /**
   * vLLM's truncate_prompt_tokens on a generation prompt: its last k tokens (`prefix`, a text prompt's BOS, kept in
   * front); -1 keeps as many as leave room for the output (max_tokens). Before the budget, so that it checks what is kept.
   */
  const truncated = (c: ModelContext, g: GenerationParams, ids: number[], prefix: readonly number[] = []): number[] => {
    const info = c.engine.info;
    const n = keepCount(g.truncatePromptTokens, info.maxModelLen, info.maxRequestTokens - (g.maxTokens ?? g.maxTokensCap ?? 0));
    return n === null ? ids : keepLast(ids, n, prefix);
  };

  /** A prediction's token ids, as the text would continue the output (no BOS); once per request. */
  const predictions = new WeakMap<GenerationParams, number[]>();
  const predictionIds = (g: GenerationParams): number[] | null => {
    if (g.prediction === null) return null;
    let ids = predictions.get(g);
    if (!ids) {
      const t = model().tokenizer;
      if (!t) throw invalid('prediction', 'this model has no tokenizer to read a text prediction; leave out \'prediction\'');
      ids = t.encode(g.prediction, { addSpecialTokens: false });
      predictions.set(g, ids);
    }
    return ids;
  };

  /** bad_words as token id sequences (serve/bad-words.ts); once per request. */
  const badWordSeqs = new WeakMap<GenerationParams, number[][]>();
  const badWordIdsOf = (g: GenerationParams): number[][] => {
    if (g.badWords.length === 0) return [];
    let ids = badWordSeqs.get(g);
    if (!ids) {
      const t = model().tokenizer;
      if (!t) throw invalid('bad_words', 'this model has no tokenizer to read bad_words; leave them out');
      ids = badWordIds(t, g.badWords);
      badWordSeqs.set(g, ids);
    }
    return ids;
  };

  const engineRequest = (id: string, ids: number[], g: GenerationParams, maxTokens: number, promptLogprobs: number | null): Omit<GenerateRequest, 'kind'> => ({
    id, promptIds: ids, sampling: g.sampling, maxTokens, n: g.n, stop: g.stop, stopTokenIds: g.stopTokenIds,
    ignoreEos: g.ignoreEos, minTokens: g.minTokens, includeStopStr: g.includeStopStr, allowedTokenIds: g.allowedTokenIds, badWordIds: badWordIdsOf(g), logprobs: g.logprobs, promptLogprobs, skipSpecialTokens: g.skipSpecialTokens,
    speculative: g.speculative, adapter: adapterOf(g.model), constraint: g.constraint, prediction: predictionIds(g),
  });

  /** Start engine requests, abort them when the client goes away; yields outputs tagged with their prompt. */
  const run = (reply: FastifyReply, reqs: Array<Omit<GenerateRequest, 'kind'>>) => {
    const c = model();
    const ac = new AbortController();
    let finished = false;
    const abort = () => {
      if (ac.signal.aborted || finished) return;
      ac.abort();
      for (const r of reqs) c.engine.abort(r.id);
    };
    const left = () => {
      if (reply.raw.writableFinished || finished) return;
      metrics.aborted.inc();
      abort();
    };
    // A client may have left while the handler awaited (input rail, RAG): then 'close' has fired already.
    if (reply.raw.destroyed) left();
    else reply.raw.once('close', left);
    const priority = lane(reply);
    const sources = reqs.map((r) => c.engine.generate({ ...r, priority }, ac.signal));
    const stream = refuseAborts(merge(sources, () => { finished = true; }), ac.signal);
    return { stream, abort, aborted: () => ac.signal.aborted };
  };

  const warned = new Set<string>();
  /** Name the ignored request fields in a response header; log each field the first time it is seen. */
  const noteIgnored = (reply: FastifyReply, fields: readonly string[]) => {
    if (fields.length === 0) return;
    reply.raw.setHeader('x-floe-ignored-fields', fields.join(', '));
    const fresh = fields.filter((f) => !warned.has(f));
    if (fresh.length === 0) return;
    for (const f of fresh) warned.add(f);
    console.warn(`floe serve: ignoring request field${fresh.length > 1 ? 's' : ''} ${fresh.join(', ')} (no effect on this model's answer; named in x-floe-ignored-fields)`);
  };

  /** Chat-shaped requests (chat completions, responses): the template and tool support checked, the prompt encoded. */
  const chatPrompt = (c: ModelContext, p: ChatParams, param: string) => {
    if (!c.tokenizer) throw invalid(param, 'this model has no tokenizer, so chat is not available; use /v1/completions with token ids');
    if (!c.template) throw invalid(param, 'this model has no chat template (tokenizer_config.json chat_template or chat_template.jinja); use /v1/completions');
    const useTools = p.toolChoice !== 'none' && p.tools.length > 0;
    if (useTools && !c.template.readsTools) {
      throw invalid('tools', `this model's chat template (${c.template.origin}) has no tool support (it never reads 'tools'); give a template that renders tools or drop 'tools'`, 'unsupported_parameter');
    }
    const encode = (messages: readonly ChatMessage[]) => encodeChatRequest(c.tokenizer!, c.template!, messages, p, useTools ? p.tools : undefined, param);
    const ids = encode(p.messages);
    const toolNames = new Set(p.tools.map((t) => t.function.name));
    const forced = p.toolChoice === 'required' || typeof p.toolChoice === 'object';
    const maxCalls = p.parallelToolCalls ? Infinity : 1; // parallel_tool_calls false: at most one call, the rest dropped
    return { ids, encode, useTools, toolNames, forced, maxCalls };
  };

  /** A chat-shaped request on the engine. Guardrails: the input rail answers a flagged prompt without generating; the output rail holds text back until judged. */
  const chatJob = async (reply: FastifyReply, p: ChatParams, rails: Rails | null, id: string, ids: number[], maxTokens: number): Promise<Job> => {
    const refused = rails ? await rails.checkInput(p.messages) : null;
    const job0 = refused?.flagged ? refusal(rails!.responseWhenUnsafe, p.n, [{ source: 0, promptTokens: ids.length }]) : run(reply, [engineRequest(id, ids, p, maxTokens, p.promptLogprobs)]);
    return rails?.output && !refused?.flagged ? { ...job0, stream: rails.wrap(job0.stream, () => p.messages, p.n, p.n, p.stream ? guardOpts.window : Infinity, job0.abort, p.continueFinalMessage) } : job0;
  };

  /** Generated tokens' logprobs as chat's logprobs.content (the shape the Responses API's logprobs share). */
  const logprobContent = (entries: readonly LogprobEntry[], asIds = false) => entries.map((e) => ({
    ...tokenInfo(texts, e.token, e.logprob, asIds),
    top_logprobs: e.top.map(([t, lp]) => tokenInfo(texts, t, lp, asIds)),
  }));

  app.post('/v1/chat/completions', (req, reply) => tracked(async () => {
    const c = model();
    const rails = takeRails(req.body, guardOpts); // removes `guardrails` from the body
    await ft?.serveJobModel((req.body as { model?: unknown } | null)?.model, c.engine);
    const { body, rag } = ragChat.take(req.body);
    const p = parseChatRequest(body, vctx(c));
    // with a data dir `store: true` keeps the finished completion (and its metadata); else both are ignored
    const keep = chats !== null && (body as { store?: unknown }).store === true;
    noteIgnored(reply, chats ? p.ignored.filter((f) => f !== 'store' && !(keep && f === 'metadata')) : p.ignored);
    const save = (completion: Record<string, unknown> & { id: string; created: number; model: string }, choices: ReadonlyArray<{ finishReason: string | null }>) => {
      // a completion cut short (the client left, the engine ended it) is not kept
      if (keep && choices.every((ch) => ch.finishReason !== null) && !reply.raw.destroyed) {
        const b = body as { metadata?: Record<string, string> | null; messages: Array<Record<string, unknown>> };
        chats.put(completion, b.metadata ?? null, b.messages, String(reply.raw.getHeader('x-request-id')), chatSettings(b, p));
      }
    };
    const { ids: encoded, encode, useTools, toolNames, forced, maxCalls } = chatPrompt(c, p, 'messages');
    let ids = encoded;
    // rag: passages for the last user message, as many as fit before the answer's budget
    const ragged = rag ? await ragChat.apply(rag, p.messages, encode,
      c.engine.info.maxRequestTokens - (p.maxTokens ?? Math.min(256, Math.floor(c.engine.info.maxRequestTokens / 4)))) : null;
    if (ragged) ids = ragged.ids;
    ids = truncated(c, p, ids); // the rendered prompt's last k tokens: the template's BOS goes, as in vLLM
    const maxTokens = budget(c, p, ids.length, 'messages');
    const id = `chatcmpl-${randomUUID().replaceAll('-', '')}`;
    const t0 = performance.now();
    const job = await chatJob(reply, p, rails, id, ids, maxTokens);
    const railed = (usage: ReturnType<Accumulator['usage']>) => (rails ? rails.fields(usage) : { usage });
    const acc = new Accumulator(p.n, 1, metrics, t0, p.returnTokenIds);
    const head = { id, created: Math.floor(Date.now() / 1000), model: p.model, system_fingerprint: fingerprint };
    const chatLogprobs = (entries: readonly LogprobEntry[] | null) => entries === null ? null : { content: logprobContent(entries, p.tokensAsIds), refusal: null };

    if (!p.stream) {
      let promptLp: ReadonlyArray<LogprobEntry | null> | null = null;
      await drain(job, ({ source, value }) => { if (value.promptLogprobs) promptLp = value.promptLogprobs; return acc.add(source, value); });
      acc.done();
      const out = {
        ...head, object: 'chat.completion',
        choices: acc.choices.map((ch, i) => {
          // whole calls: finish_reason tool_calls. A call cut short (max_tokens, a stop sequence, an end of text inside
          // it) is read as streaming reads it: the call so far, finish_reason as the engine ended (length, stop)
          const whole = useTools && ch.finishReason === 'stop' ? parseToolCalls(ch.text, toolNames, maxCalls) : null;
          const read = !useTools || whole ? null : cutToolCalls(ch.text, toolNames, forced, maxCalls);
          const calls = whole ?? read;
          return {
          // refusal: the client's type requires the field; floe writes none there (a guardrail's refusal is content, finish_reason content_filter)
          index: i, message: calls ? { role: 'assistant', content: calls.content, refusal: null, tool_calls: calls.calls } : { role: 'assistant', content: ch.text, refusal: null },
          logprobs: p.logprobs === null ? null : chatLogprobs(ch.logprobs),
          finish_reason: (whole || (read && !read.cut)) && ch.finishReason === 'stop' ? 'tool_calls' : ch.finishReason, stop_reason: ch.stopReason,
          ...(p.returnTokenIds ? { token_ids: ch.ids } : {}),
          };
        }),
        ...(p.returnTokenIds ? { prompt_token_ids: ids } : {}),
        ...(p.promptLogprobs !== null ? { prompt_logprobs: promptLp ? promptLogprobsJson(texts, ids, promptLp, p.promptLogprobs) : null } : {}),
        ...railed(acc.usage()),
        ...(ragged ? ragged.cite(acc.choices[0]?.text ?? '') : {}),
      };
      save(out, acc.choices);
      return out;
    }
    // stored: the answer as the chunks sent make it up
    const asm = keep ? new ChunkAssembler() : null;
    const tap = (send: Send): Send => (asm ? (obj) => { asm.add(obj); send(obj); } : send);
    const toolStreams: ToolCallStream[] = [];
    const heldLogprobs: LogprobEntry[][] = []; // per choice: logprobs of tool-call text not yet sent
    await streamSse(reply, job, (send0, first) => {
      const send = tap(send0);
      if (first) for (let i = 0; i < p.n; i++) send(chatChunk(head, i, { role: 'assistant', content: forced ? null : '' }, null, null, p.includeUsage));
    }, (send0, source, o) => {
      const send = tap(send0);
      const ch = acc.add(source, o);
      if (useTools) {
        // tool calls: content or call deltas as the text proves which it is. The logprobs of text held back wait
        // for the next delta sent (or the finish chunk), so that the stream carries every token's, as the plain reply does.
        const ts = (toolStreams[ch] ??= new ToolCallStream(toolNames, forced, maxCalls));
        const held = (heldLogprobs[ch] ??= []);
        if (p.logprobs !== null && o.logprobs) held.push(...o.logprobs);
        const takeHeld = () => (p.logprobs === null ? null : chatLogprobs(held.splice(0)));
        const deltas = ts.push(o.text);
        const end = o.finishReason !== null ? ts.finish() : null;
        if (end) deltas.push(...end.deltas);
        deltas.forEach((d, k) => send(chatChunk(head, ch, d, k === 0 ? takeHeld() : null, null, p.includeUsage)));
        if (end) send(chatChunk(head, ch, {}, held.length > 0 ? takeHeld() : null, end.isCalls && !end.cut && o.finishReason === 'stop' ? 'tool_calls' : o.finishReason, p.includeUsage));
        return;
      }
      if (o.text !== '' || (p.logprobs !== null && o.logprobs?.length)) {
        const chunk = chatChunk(head, ch, { content: o.text }, p.logprobs === null ? null : chatLogprobs(o.logprobs), null, p.includeUsage);
        if (p.returnTokenIds) Object.assign(chunk.choices[0]!, { token_ids: o.tokenIds });
        send(chunk);
      }
      if (o.finishReason !== null) {
        const last = chatChunk(head, ch, {}, null, o.finishReason, p.includeUsage);
        send(ragged ? { ...last, ...ragged.cite(acc.choices[ch]?.text ?? '') } : last);
      }
    }, () => {
      acc.done();
      // save() keeps only a finished answer to a client still there; the job may be aborted by the output rail
      // having filtered every choice (content_filter), an answer kept as the non-streamed one is
      if (asm) {
        save({
          ...head, object: 'chat.completion',
          choices: acc.choices.map((ch, i) => ({ ...asm.choice(i, p.logprobs !== null), stop_reason: ch.stopReason, ...(p.returnTokenIds ? { token_ids: ch.ids } : {}) })),
          ...(p.returnTokenIds ? { prompt_token_ids: ids } : {}),
          ...railed(acc.usage()),
          ...(ragged ? ragged.cite(acc.choices[0]?.text ?? '') : {}),
        }, acc.choices);
      }
      const end = { ...head, object: 'chat.completion.chunk', choices: [] };
      if (rails) return p.includeUsage ? { ...end, ...railed(acc.usage()) } : { ...end, guardrails: rails.summary() };
      return p.includeUsage ? { ...end, usage: acc.usage() } : null;
    });
    return reply;
  }));

  app.post('/v1/completions', (req, reply) => tracked(async () => {
    const c = model();
    const rails = takeRails(req.body, guardOpts); // removes `guardrails` from the body
    await ft?.serveJobModel((req.body as { model?: unknown } | null)?.model, c.engine);
    const p = parseCompletionRequest(req.body, vctx(c));
    noteIgnored(reply, p.ignored);
    // Each prompt is one engine request: past the slots plus the queue the engine refuses some of them every time,
    // so a 429 (whose Retry-After promises success later) would be a lie.
    const info = c.engine.info;
    const slots = lane(reply) === 'batch' ? info.maxBatchSeqs ?? info.maxNumSeqs : info.maxNumSeqs;
    if (info.maxQueue !== undefined && p.prompts.length > slots + info.maxQueue) {
      throw invalid('prompt', `'prompt' holds ${p.prompts.length} prompts, but this server takes at most ${slots + info.maxQueue} requests at once ` +
        `(${slots} sequence slots, --max-num-seqs, plus ${info.maxQueue} waiting, --max-queue); send fewer prompts per request or raise those flags`);
    }
    const prompts = p.prompts.map((pr, i) => {
      const param = p.prompts.length > 1 ? `prompt[${i}]` : 'prompt';
      const full = promptIds(c, pr, param);
      const ids = truncated(c, p, full, 'text' in pr ? addedPrefix(c) : []);
      // a truncated prompt is echoed as the model sees it: the text of the ids kept, like a token-id prompt's
      const asText = 'text' in pr && ids.length === full.length ? pr.text : null;
      // Tokens the tokenizer adds in front of a text prompt (BOS): echoed in logprobs, not in the text. A token-id
      // prompt that starts with them echoes the same text as the text prompt would (specials it holds elsewhere stay).
      const added = asText !== null
        ? (p.echo && p.logprobs !== null ? ids.length - c.tokenizer!.encode(asText, { addSpecialTokens: false }).length : 0)
        : addedPrefix(c).every((t, j) => ids[j] === t) ? addedPrefix(c).length : 0;
      const text = asText ?? c.tokenizer?.decode(ids.slice(added)) ?? '';
      return { ids, text, added, maxTokens: budget(c, p, ids.length, param) };
    });
    const id = `cmpl-${randomUUID().replaceAll('-', '')}`;
    const wantPromptLp = p.echo && p.logprobs !== null ? Math.max(p.logprobs, p.promptLogprobs ?? 0) : p.promptLogprobs;
    const t0 = performance.now();
    // guardrails as in chat: a prompt is the user turn, its completion the agent's answer; refused prompts generate nothing
    const turns = (k: number) => [{ role: 'user', content: prompts[k]!.text }];
    if (rails && !c.tokenizer) throw invalid('guardrails', 'guardrails judge text, and this model has no tokenizer to read its token ids');
    const verdicts = rails?.input ? await Promise.all(prompts.map((_, k) => rails.checkInput(turns(k)))) : [];
    const live = prompts.map((_, k) => k).filter((k) => !verdicts[k]?.flagged);
    const started = live.length === 0 ? null
      : renumbered(run(reply, live.map((k) => engineRequest(prompts.length > 1 ? `${id}-${k}` : id, prompts[k]!.ids, p, prompts[k]!.maxTokens, wantPromptLp))), live);
    const checked = started && rails?.output
      ? { ...started, stream: rails.wrap(started.stream, turns, p.n, p.n * live.length, p.stream ? guardOpts.window : Infinity, started.abort) } : started;
    const refusedPrompts = prompts.map((pr, k) => ({ source: k, promptTokens: pr.ids.length })).filter(({ source }) => verdicts[source]?.flagged);
    const job = refusedPrompts.length === 0 ? checked! : refusal(rails!.responseWhenUnsafe, p.n, refusedPrompts, checked);
    const railed = (usage: ReturnType<Accumulator['usage']>) => (rails ? rails.fields(usage) : { usage });
    const acc = new Accumulator(p.n, prompts.length, metrics, t0, p.returnTokenIds);
    const head = { id, created: Math.floor(Date.now() / 1000), model: p.model, system_fingerprint: fingerprint };
    const promptLp: Array<ReadonlyArray<LogprobEntry | null> | null> = prompts.map(() => null);
    const offsets = Array.from({ length: p.n * prompts.length }, () => new TextOffsets());
    const echoed = new Array<boolean>(p.n * prompts.length).fill(false);

    /** Legacy logprobs of the echoed prompt (when asked) then of new tokens; advances the choice's text offset. */
    const legacy = (ch: number, k: number, entries: readonly LogprobEntry[] | null, withPrompt: boolean) => {
      if (p.logprobs === null) return null;
      const out = { tokens: [] as string[], token_logprobs: [] as Array<number | null>, top_logprobs: [] as Array<Record<string, number> | null>, text_offset: [] as number[] };
      // text_offset indexes the returned text: tokens absent from it (the added BOS, skipped specials) advance 0.
      const push = (tok: number, e: LogprobEntry | null, inText: boolean) => {
        const t = texts.get(tok);
        out.tokens.push(p.tokensAsIds ? tokenIdName(tok) : t.text);
        out.token_logprobs.push(e ? clampLp(e.logprob) : null);
        out.top_logprobs.push(e ? legacyTop(e, p.logprobs!) : null);
        out.text_offset.push(offsets[ch]!.push(t, inText));
      };
      if (withPrompt) prompts[k]!.ids.forEach((tok, j) => push(tok, promptLp[k]?.[j] ?? null, j >= prompts[k]!.added));
      for (const e of entries ?? []) push(e.token, e, !(p.skipSpecialTokens && texts.get(e.token).special));
      return out;
    };
    // OpenAI and vLLM: the token itself, then the k most likely (up to k + 1 entries; `logprobs: 0` gives the token alone)
    const legacyTop = (e: LogprobEntry, k: number): Record<string, number> => {
      const top = e.top.slice(0, k);
      const entries = top.some(([t]) => t === e.token) ? top : [[e.token, e.logprob] as const, ...top];
      return Object.fromEntries(entries.map(([t, lp]) => [p.tokensAsIds ? tokenIdName(t) : texts.text(t), clampLp(lp)]));
    };
    const vllmPromptLogprobs = (k: number) => {
      const lps = promptLp[k];
      if (p.promptLogprobs === null || !lps) return undefined;
      return promptLogprobsJson(texts, prompts[k]!.ids, lps, p.promptLogprobs);
    };
    const onOutput = (source: number, o: GenerateOutput) => {
      if (o.promptLogprobs) promptLp[source] = o.promptLogprobs;
      return acc.add(source, o);
    };

    if (!p.stream) {
      await drain(job, ({ source, value }) => onOutput(source, value));
      acc.done();
      return {
        ...head, object: 'text_completion',
        choices: acc.choices.map((ch, i) => {
          const k = Math.floor(i / p.n);
          return {
            index: i, text: (p.echo ? prompts[k]!.text : '') + ch.text,
            logprobs: legacy(i, k, ch.logprobs, p.echo),
            finish_reason: ch.finishReason, stop_reason: ch.stopReason,
            ...(p.promptLogprobs !== null ? { prompt_logprobs: vllmPromptLogprobs(k) ?? null } : {}),
            ...(p.returnTokenIds ? { prompt_token_ids: prompts[k]!.ids, token_ids: ch.ids } : {}),
          };
        }),
        ...railed(acc.usage()),
      };
    }
    await streamSse(reply, job, () => {}, (send, source, o) => {
      const ch = onOutput(source, o);
      const withPrompt = p.echo && !echoed[ch];
      echoed[ch] = true;
      const text = (withPrompt ? prompts[source]!.text : '') + o.text;
      // A token held back by the detokenizer (partial UTF-8) still reaches return_token_ids clients.
      if (text === '' && o.finishReason === null && !(p.logprobs !== null && o.logprobs?.length) && !(p.returnTokenIds && o.tokenIds.length)) return;
      send({
        ...head, object: 'text_completion',
        choices: [{
          index: ch, text, logprobs: legacy(ch, source, o.logprobs, withPrompt), finish_reason: o.finishReason, stop_reason: o.stopReason,
          ...(p.promptLogprobs !== null && o.promptLogprobs ? { prompt_logprobs: vllmPromptLogprobs(source) } : {}),
          ...(p.returnTokenIds ? { token_ids: o.tokenIds, ...(withPrompt ? { prompt_token_ids: prompts[source]!.ids } : {}) } : {}),
        }],
        ...(p.includeUsage ? { usage: null } : {}),
      });
    }, () => {
      acc.done();
      const end = { ...head, object: 'text_completion', choices: [] };
      if (rails) return p.includeUsage ? { ...end, ...railed(acc.usage()) } : { ...end, guardrails: rails.summary() };
      return p.includeUsage ? { ...end, usage: acc.usage() } : null;
    });
    return reply;
  }));

  registerEmbeddingRoutes(app, { metrics, context: model, modelName: opts.modelName, tracked, noteIgnored, serveJobModel: (m, e) => ft?.serveJobModel(m, e) ?? Promise.resolve() });
  registerScoreRoutes(app, { metrics, context: model, modelName: opts.modelName, tracked, noteIgnored });
  registerResponsesRoutes(app, {
    model, vctx, tracked, noteIgnored, chatPrompt, budget, chatJob, drain, logprobContent,
    rails: (body) => takeRails(body, guardOpts), serveJobModel: (m, e) => ft?.serveJobModel(m, e) ?? Promise.resolve(),
    accumulator: (t0) => new Accumulator(1, 1, metrics, t0), apiError: (e) => toApiError(e, 0), store: batch ? () => batch.service().store : null,
  });

  return {
    app, metrics,
    ready(c) {
      ctx = c;
      texts = new TokenTexts(c.tokenizer);
      fingerprint = systemFingerprint(c.engine.info);
    },
    drain() {
      draining = true;
    },
    inFlight: () => inFlight,
    restoreAdapters: (engine) => ft ? ft.restore(engine) : Promise.resolve(),
  };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms); });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/**
 * OpenAI's system_fingerprint: names the backend configuration a seed's samples depend on (floe's version, the model,
 * its weights as held after --dtype, the KV cache dtype, speculative decoding, the kernels: ISA, AMX, bf16 dot), so
 * that a client comparing runs sees when it changed.
 */
function systemFingerprint(info: EngineInfo): string {
  const config = { version: FLOE_VERSION, model: info.modelId, weights: info.weights ?? null, kv: info.kvDtype, speculative: info.speculative ?? null, kernels: info.kernels ?? null };
  return `fp_${createHash('sha256').update(JSON.stringify(config)).digest('hex').slice(0, 10)}`;
}

function clampLp(lp: number): number {
  return Number.isNaN(lp) ? LOGPROB_FLOOR : Math.max(lp, LOGPROB_FLOOR);
}

/** vLLM's prompt_logprobs: per prompt token null (the first) or {id: {logprob, rank, decoded_token}}, the token then the top k. */
function promptLogprobsJson(texts: TokenTexts, ids: readonly number[], lps: ReadonlyArray<LogprobEntry | null>, k: number) {
  return lps.map((e, j) => e === null ? null : Object.fromEntries([
    [String(ids[j]), { logprob: clampLp(e.logprob), rank: rankOf(e), decoded_token: texts.text(e.token) }],
    ...e.top.slice(0, k).map(([t, lp], r) => [String(t), { logprob: clampLp(lp), rank: r + 1, decoded_token: texts.text(t) }]),
  ]));
}

function rankOf(e: LogprobEntry): number | null {
  const i = e.top.findIndex(([t]) => t === e.token);
  return i < 0 ? null : i + 1;
}

/** vLLM's return_tokens_as_token_ids: a token named by its id, so that tokens that are not whole UTF-8 stay exact. */
const tokenIdName = (id: number): string => `token_id:${id}`;

/** A chat logprobs entry; `asIds`: the token as 'token_id:N', and bytes those of that name, as vLLM writes them. */
function tokenInfo(texts: TokenTexts, id: number, lp: number, asIds = false) {
  if (asIds) {
    const name = tokenIdName(id);
    return { token: name, logprob: clampLp(lp), bytes: [...Buffer.from(name, 'utf8')] };
  }
  const t = texts.get(id);
  return { token: t.text, logprob: clampLp(lp), bytes: t.bytes };
}

function chatChunk(head: { id: string; created: number; model: string; system_fingerprint: string }, index: number, delta: Record<string, unknown>,
  logprobs: unknown, finish: string | null, includeUsage: boolean) {
  return {
    ...head, object: 'chat.completion.chunk',
    choices: [{ index, delta, logprobs, finish_reason: finish }],
    ...(includeUsage ? { usage: null } : {}),
  };
}

/** Per-choice text, tokens and logprobs gathered from engine outputs; usage and latency metrics. */
class Accumulator {
  readonly choices: Array<{
    text: string; tokens: number; ids: number[]; logprobs: LogprobEntry[]; finishReason: string | null; stopReason: string | number | null; last: number;
    prediction: { accepted: number; rejected: number } | null; // with a prediction: its draft tokens kept / not kept
  }>;
  private readonly prompt: Array<{ tokens: number; cached: number }>;
  private firstToken = false;
  private counted = false;

  constructor(private readonly n: number, prompts: number, private readonly metrics: ServeMetrics, private readonly t0: number, private readonly keepIds = false) {
    this.choices = Array.from({ length: n * prompts }, () => ({ text: '', tokens: 0, ids: [] as number[], logprobs: [] as LogprobEntry[], finishReason: null, stopReason: null, last: t0, prediction: null }));
    this.prompt = Array.from({ length: prompts }, () => ({ tokens: 0, cached: 0 }));
  }

  /** Add one output; returns its choice index. */
  add(source: number, o: GenerateOutput): number {
    const i = source * this.n + o.index;
    const ch = this.choices[i];
    if (!ch) throw new Error(`engine output for completion ${o.index} of prompt ${source}, but n = ${this.n}`);
    const now = performance.now();
    if (o.tokenIds.length > 0) {
      if (!this.firstToken) this.metrics.ttft.observe((now - this.t0) / 1000);
      else if (ch.tokens > 0) this.metrics.itl.observe((now - ch.last) / 1000 / o.tokenIds.length);
      this.firstToken = true;
      ch.last = now;
    }
    ch.text += o.text;
    ch.tokens += o.tokenIds.length;
    if (this.keepIds) ch.ids.push(...o.tokenIds);
    if (o.logprobs) ch.logprobs.push(...o.logprobs);
    if (o.finishReason !== null) {
      ch.finishReason = o.finishReason;
      ch.stopReason = o.stopReason;
    }
    this.prompt[source] = { tokens: o.usage.promptTokens, cached: o.usage.cachedTokens };
    const u = o.usage;
    if (u.acceptedPredictionTokens !== undefined) ch.prediction = { accepted: u.acceptedPredictionTokens, rejected: u.rejectedPredictionTokens ?? 0 };
    return i;
  }

  done(): void {
    if (this.counted) return;
    this.counted = true;
    const u = this.usage();
    this.metrics.promptTokens.inc(u.prompt_tokens);
    this.metrics.cachedPromptTokens.inc(u.prompt_tokens_details.cached_tokens);
    this.metrics.generationTokens.inc(u.completion_tokens);
    this.metrics.e2e.observe((performance.now() - this.t0) / 1000);
  }

  usage() {
    const prompt = this.prompt.reduce((s, p) => s + p.tokens, 0);
    const completion = this.choices.reduce((s, c) => s + c.tokens, 0);
    const predicted = this.choices.filter((c) => c.prediction !== null);
    return {
      prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion,
      prompt_tokens_details: { cached_tokens: this.prompt.reduce((s, p) => s + p.cached, 0) },
      // OpenAI's Predicted Outputs counts: only for a request with a prediction
      ...(predicted.length > 0 ? {
        completion_tokens_details: {
          accepted_prediction_tokens: predicted.reduce((s, c) => s + c.prediction!.accepted, 0),
          rejected_prediction_tokens: predicted.reduce((s, c) => s + c.prediction!.rejected, 0),
        },
      } : {}),
    };
  }
}

type Send = (obj: unknown) => void;

/**
 * Server-sent events: waits for the first output so that refusals (429, 400) still get a proper status,
 * then streams `data: {json}` events and `data: [DONE]`. Errors after the headers go out as an error event.
 */
async function streamSse(
  reply: FastifyReply,
  job: { stream: AsyncGenerator<{ source: number; value: GenerateOutput }>; abort: () => void; aborted: () => boolean },
  onStart: (send: Send, first: boolean) => void,
  onOutput: (send: Send, source: number, o: GenerateOutput) => void,
  onEnd: () => unknown,
): Promise<void> {
  const it = job.stream;
  let first: IteratorResult<{ source: number; value: GenerateOutput }>;
  try {
    first = await it.next(); // throws → the error handler answers with a status
  } catch (err) {
    job.abort(); // the other sub-requests still run: the reply's close handler skips a reply that finished
    throw err;
  }
  reply.hijack();
  const raw = reply.raw;
  // the headers hooks set on the reply (CORS) go out too: a hijacked reply no longer sends them itself
  raw.writeHead(200, { ...hookHeaders(reply), 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
  const send: Send = (obj) => {
    if (!raw.destroyed && !raw.writableEnded) raw.write(`data: ${JSON.stringify(obj)}\n\n`);
  };
  try {
    onStart(send, true);
    if (!first.done) onOutput(send, first.value.source, first.value.value);
    for (let r = await it.next(); !r.done; r = await it.next()) {
      if (raw.destroyed) break;
      onOutput(send, r.value.source, r.value.value);
    }
    const last = onEnd();
    if (last !== null) send(last);
  } catch (err) {
    job.abort();
    send(toApiError(err, 0).body());
  } finally {
    void it.return(undefined).catch(() => {});
    if (!raw.destroyed && !raw.writableEnded) raw.end('data: [DONE]\n\n');
  }
}

/**
 * A non-streamed job's outputs, in order. A failing sub-request (429, 400 from the engine) fails the request, and
 * the reply's close handler will not abort the others (the reply finished), so they are aborted here.
 */
async function drain(job: Job, onItem: (item: { source: number; value: GenerateOutput }) => void): Promise<void> {
  try {
    for await (const item of job.stream) onItem(item);
  } catch (err) {
    job.abort();
    throw err;
  }
}

/**
 * 'abort' is the engine's word, not OpenAI's: a completion the engine ended without this client leaving
 * (shutdown past its grace period) fails the request with a 503 instead of carrying a made-up finish_reason.
 */
async function* refuseAborts<T extends { value: GenerateOutput }>(stream: AsyncGenerator<T>, clientLeft: AbortSignal): AsyncGenerator<T> {
  try {
    for await (const item of stream) {
      if (item.value.finishReason === 'abort') {
        if (clientLeft.aborted) return;
        throw new ApiError(503, 'the server shut down before this completion finished; retry it', null, 'shutting_down');
      }
      yield item;
    }
  } finally {
    await stream.return(undefined);
  }
}

/** Interleave several async streams as their items arrive; a failing stream fails the whole. */
async function* merge<T>(sources: readonly AsyncIterable<T>[], onEnd: () => void): AsyncGenerator<{ source: number; value: T }> {
  const its = sources.map((s) => s[Symbol.asyncIterator]());
  type Step = { k: number; r?: IteratorResult<T>; err?: unknown };
  const pending = new Map<number, Promise<Step>>();
  // Never-rejecting pulls: a failure is carried as data so that no rejection goes unhandled.
  const pull = (k: number) => pending.set(k, its[k]!.next().then((r) => ({ k, r }), (err: unknown) => ({ k, err })));
  its.forEach((_, k) => pull(k));
  try {
    while (pending.size > 0) {
      const s = await Promise.race(pending.values());
      pending.delete(s.k);
      if (s.err !== undefined) throw s.err;
      if (s.r!.done) continue;
      pull(s.k);
      yield { source: s.k, value: s.r!.value };
    }
    onEnd();
  } finally {
    for (const k of pending.keys()) void its[k]!.return?.()?.catch(() => {});
  }
}

/**
 * Why Fastify's parser refused a body, which it reports as 'Body is not valid JSON but content-type is set to
 * application/json' either way: where the JSON breaks (JSON.parse's position), or, for JSON that is valid, the
 * `__proto__` key (or `constructor.prototype`) it refuses against prototype poisoning.
 */
function jsonBodyError(text: string): ApiError {
  try {
    JSON.parse(text);
  } catch (e) {
    return new ApiError(400, `the request body is not valid JSON: ${(e as Error).message}`, null, 'invalid_json');
  }
  return new ApiError(400, `the request body holds a '__proto__' key (or 'constructor.prototype'), which this server refuses (prototype poisoning); rename the key`, null, 'invalid_body');
}

/** Any thrown value → an ApiError with the status the client should see. */
function toApiError(err: unknown, bodyLimit: number, contentType?: string): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof EngineRequestError) {
    const code = { 400: 'invalid_request', 404: 'model_not_found', 429: 'too_many_requests', 500: 'engine_error', 503: 'engine_unavailable' }[err.status];
    return new ApiError(err.status, err.message, null, code);
  }
  const e = err as { code?: unknown; statusCode?: unknown; message?: unknown };
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (e?.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new ApiError(413, `the request body is larger than the limit of ${bodyLimit} bytes`, null, 'body_too_large');
  if (e?.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    const got = contentType ? `Content-Type '${contentType.slice(0, 100)}'` : 'no Content-Type';
    return new ApiError(415, `the request body came with ${got}; send it as JSON with the header 'Content-Type: application/json'`, null, 'unsupported_media_type');
  }
  if (e?.statusCode === 400) return new ApiError(400, `the request body is not valid JSON: ${message}`, null, 'invalid_json');
  if (typeof e?.statusCode === 'number' && [401, 404, 405, 413, 415, 429, 503].includes(e.statusCode)) {
    return new ApiError(e.statusCode as 404, message, null, null);
  }
  return new ApiError(500, `internal error: ${message}`, null, 'internal_error');
}

/** The engine lane of a request: 'batch' when it says so (the Batch API's lines do), else interactive. */
function lane(r: { headers: Record<string, string | string[] | undefined> } | FastifyReply): 'batch' | 'interactive' {
  const h = 'request' in r ? r.request.headers : r.headers;
  return h[PRIORITY_HEADER] === 'batch' ? 'batch' : 'interactive';
}

type Job = { stream: AsyncGenerator<{ source: number; value: GenerateOutput }>; abort: () => void; aborted: () => boolean };

/**
 * The input rail's answer for the refused prompts: one output per choice with the refusal text, finish_reason
 * 'content_filter', no generation; then the outputs of `rest` (the prompts that passed), when there are any.
 */
function refusal(text: string, n: number, refused: ReadonlyArray<{ source: number; promptTokens: number }>, rest: Job | null = null): Job {
  async function* outputs(): AsyncGenerator<{ source: number; value: GenerateOutput }> {
    for (const { source, promptTokens } of refused) {
      for (let i = 0; i < n; i++) {
        yield { source, value: {
          kind: 'generate', id: 'refused', index: i, tokenIds: [], text, logprobs: null, finishReason: 'content_filter' as 'stop', stopReason: null,
          usage: { promptTokens, cachedTokens: 0, completionTokens: 0 }, promptLogprobs: null,
        } };
      }
    }
    if (rest) yield* rest.stream;
  }
  return { stream: outputs(), abort: () => rest?.abort(), aborted: () => rest?.aborted() ?? false };
}

/** A job whose sources are renumbered: source i of `job` becomes `sources[i]`. */
function renumbered(job: Job, sources: readonly number[]): Job {
  async function* outputs(): AsyncGenerator<{ source: number; value: GenerateOutput }> {
    for await (const item of job.stream) yield { source: sources[item.source]!, value: item.value };
  }
  return { ...job, stream: outputs() };
}
