// startServer: listen first (/health 503 while loading), load the engine and tokenizer, then serve; graceful close.

import { existsSync, readFileSync, statSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { totalmem } from 'node:os';
import { basename, join } from 'node:path';
import type { EngineClient, EngineInfo } from '../engine/protocol.js';
import { checkEngineValues, startEngineChecked as startEngine, type EngineStartOptions } from '../engine/client.js';
import { ChatTemplate, loadChatTemplate, selectChatTemplate } from '../formats/chat-template.js';
import { readGguf } from '../formats/gguf.js';
import { readSafetensorsSync } from '../formats/safetensors.js';
import { readHfConfig, type GenerationDefaults } from '../formats/hf-config.js';
import { isGgufPath, statModel } from '../formats/load.js';
import { KvCache, kvDtypeFlagName } from '../model/kv-cache.js';
import { balancedStages, formatStages, parseStages } from '../parallel/stages.js';
import { tokenizerFromGguf } from '../formats/gguf-tokenizer.js';
import { loadTokenizer, type Tokenizer } from '../formats/tokenizer.js';
import { readEmbeddingConfig } from '../model/embed.js';
import { readPeftAdapter } from '../model/adapter.js';
import { PEFT_CONFIG } from '../formats/peft.js';
import { DEFAULT_MAX_LORA_RANK } from '../engine/adapters.js';
import { resolve } from 'node:path';
import { createApp, type ServeApp } from './app.js';
import type { EmbeddingModel } from './embeddings-routes.js';
import { ServeMetrics } from './metrics.js';
import { Guard } from '../platform/guard/guard.js';
import { checkOptions, describe, type OptionKeys } from '../tensor/options.js';
import { sqliteUnavailable } from '../platform/store.js';

export interface ServeOptions extends Omit<EngineStartOptions, 'modelId'> {
  readonly host?: string; // default 127.0.0.1
  readonly port?: number; // default 8000; 0 picks a free port
  readonly apiKey?: string | null;
  readonly modelName?: string; // default: the model path's base name (without .gguf)
  readonly bodyLimit?: number; // bytes
  readonly log?: (line: string) => void;
  readonly ui?: boolean; // the web console at / (default true)
  readonly dataDir?: string | null; // Files / Batch API state; absent → those routes are off
  readonly enableLoraLoading?: boolean; // POST /v1/load_lora_adapter and /v1/unload_lora_adapter answer
  readonly loraRoot?: string | null; // runtime adapter paths must lie inside this directory
  readonly jobsThreads?: number; // threads of the fine-tuning jobs' trainer process
  readonly guardModel?: string | null; // a Llama Guard checkpoint on its own engine: guardrails and /v1/moderations
  readonly guardrails?: boolean; // rails on for every chat request (needs guardModel)
  readonly guardWindow?: number; // tokens held back per streamed judgement (default 64)
  readonly guardKvCacheMemory?: number; // the guard's KV budget, taken out of kvCacheMemory when that is given
  readonly embeddingModel?: string | null; // a second model, served by /v1/embeddings under its base name
  readonly task?: 'generate' | 'embed'; // 'embed': --model is an embedding model; only /v1/embeddings answers
  readonly ragDb?: string | null; // RAG collections (LanceDB directory), embedded by the embedding model; absent → no /v1/rag routes
  readonly allowedOrigins?: readonly string[]; // CORS: browser origins that may call the API, or ['*'] (default none)
}

/** KV tokens of an --embedding-model's engine: room for many inputs at once, not for long chats. */
const EMBED_KV_TOKENS = 8192;
const EMBED_BATCHED_TOKENS = 4096;

export interface RunningServer {
  readonly url: string;
  readonly serve: ServeApp;
  readonly modelName: string;
  /** Resolves once the model is loaded and the routes answer; rejects when loading fails. */
  readonly ready: Promise<EngineInfo>;
  /** Stop accepting, let running requests finish within graceMs, abort the rest, stop the engine. */
  close(graceMs: number): Promise<void>;
}

/** The tokenizer, chat template and generation_config.json sampling defaults of an HF directory or a GGUF file (each may be absent). */
export async function loadTextTools(path: string): Promise<{ tokenizer: Tokenizer | null; template: ChatTemplate | null; defaults: GenerationDefaults }> {
  if (statModel(path).isDirectory()) {
    return { tokenizer: await loadTokenizer(path), template: await loadChatTemplate(path), defaults: readHfConfig(path).generation };
  }
  const meta = (await readGguf(path)).metadata;
  const source = selectChatTemplate(meta.get('tokenizer.chat_template') ?? null, {}, `${path} tokenizer.chat_template`);
  return { tokenizer: tokenizerFromGguf(meta), template: source === null ? null : new ChatTemplate(source, `${path} tokenizer.chat_template`), defaults: {} };
}

/** The model id clients send by default: the path's base name, without a .gguf extension. */
export function defaultModelName(model: string): string {
  return basename(model.replace(/[/\\]+$/, '')).replace(/\.gguf$/i, '');
}

const GIB = 2 ** 30;

/**
 * What can be checked without loading weights, before "listening" is printed: the model path is an HF directory
 * with a config.json or a GGUF file; each LoRA module is an adapter of this model within the rank limit; the KV cache
 * budget fits in RAM and holds at least one block.
 */
export const MODEL_EXPECTED = 'an HF model directory (config.json, *.safetensors) or a .gguf file';

export function preflight(opts: ServeOptions, flag = '--model', what = MODEL_EXPECTED): void {
  const p = opts.model;
  const expected = `expected ${what}`;
  let st;
  try {
    st = statSync(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`${flag} ${p}: ${code === 'ENOENT' ? 'no such file or directory' : (e as Error).message}; ${expected}`);
  }
  let hf: ReturnType<typeof readHfConfig> | null = null;
  if (st.isDirectory()) {
    if (!existsSync(join(p, 'config.json'))) throw new Error(`${flag} ${p}: the directory has no config.json; ${expected}`);
    hf = readHfConfig(p);
  } else if (!isGgufPath(p)) {
    throw new Error(`${flag} ${p}: a file that is not GGUF (no .gguf extension, no GGUF magic); ${expected}`);
  }
  // LoRA modules: read as the engine will read them (a wrong base, a missing file, a rank past the limit), so the
  // server refuses before "listening" rather than failing its load after it; a GGUF model's shapes are checked at load
  for (const m of opts.loraModules ?? []) {
    const what = `--lora-modules ${m.name}=${m.path}`;
    if (!existsSync(join(m.path, PEFT_CONFIG))) throw new Error(`${what}: no ${PEFT_CONFIG} there; expected a PEFT LoRA adapter directory`);
    if (!hf) continue;
    let rank: number;
    try {
      rank = readPeftAdapter(m.path, hf.config).config.rank;
    } catch (e) {
      throw new Error(`${what}: ${(e as Error).message}`);
    }
    const maxRank = opts.maxLoraRank ?? DEFAULT_MAX_LORA_RANK;
    if (rank > maxRank) throw new Error(`${what}: has rank ${rank}, above --max-lora-rank ${maxRank}`);
  }
  if (opts.swapSpace !== undefined && opts.swapSpace > totalmem()) {
    throw new Error(`--swap-space ${(opts.swapSpace / GIB).toFixed(2)} GiB is more than this machine's ${(totalmem() / GIB).toFixed(2)} GiB of RAM`);
  }
  const kv = opts.kvCacheMemory;
  if (kv === undefined) return;
  if (kv > totalmem()) {
    throw new Error(`--kv-cache-memory ${(kv / GIB).toFixed(2)} GiB is more than this machine's ${(totalmem() / GIB).toFixed(2)} GiB of RAM`);
  }
  if (hf) {
    const c = hf.config;
    const blockSize = opts.blockSize ?? 16;
    // as the engine picks (defaultKvDtype): f32 for f32 weights, else bf16; bf16 where the header cannot say
    const dtype = opts.kvDtype ?? (opts.dtype === undefined && storedQProjDtype(p) === 'F32' ? 'f32' : 'bf16');
    // a pipeline stage holds its own layers' KV from its own budget: the fullest stage's block is the one to fit
    let layers = c.numLayers, stage = '';
    if (opts.pipeline) {
      try {
        const st = opts.pipeline.stages !== undefined ? parseStages(opts.pipeline.stages, c.numLayers) : balancedStages(c, opts.pipeline.size);
        layers = Math.max(...st.map((r) => r.end - r.start));
        stage = ` on the fullest pipeline stage (${formatStages(st)})`;
      } catch { /* a layout that does not fit the model: the stages say so (exit 2) */ }
    }
    const perBlock = KvCache.bytesPerToken(layers, c.numKvHeads, c.headDim, dtype) * blockSize;
    const block = `one block of ${blockSize} tokens takes ${perBlock} bytes${stage} (${kvDtypeFlagName(dtype)}, ${layers} layers × ${c.numKvHeads} kv heads × ${c.headDim})`;
    if (kv < perBlock) throw new Error(`--kv-cache-memory ${kv} bytes holds no KV block: ${block}; give at least ${perBlock}`);
    const guard = guardKvShare(opts);
    if (kv - guard < perBlock) {
      throw new Error(`--kv-cache-memory ${kv} bytes less the guard's ${guard} (--guard-kv-cache-memory) leaves ${Math.max(0, kv - guard)} bytes for the chat model, ` +
        `which holds no KV block: ${block}; give --kv-cache-memory at least ${guard + perBlock}`);
    }
  }
}

/**
 * Bytes of KV the guard's engine takes out of the budget: --guard-kv-cache-memory, else a quarter of
 * --kv-cache-memory, or 256 MiB beside the default budget; 0 without a guard.
 */
function guardKvShare(opts: ServeOptions): number {
  if (!opts.guardModel) return 0;
  return opts.guardKvCacheMemory ?? (opts.kvCacheMemory ? Math.floor(opts.kvCacheMemory / 4) : 256 * 2 ** 20);
}

/** Layer 0's q_proj dtype as an HF directory's safetensors file states it (the file is mapped, not read), or null. */
function storedQProjDtype(dir: string): string | null {
  const name = 'model.layers.0.self_attn.q_proj.weight';
  try {
    const index = join(dir, 'model.safetensors.index.json');
    const shard = existsSync(index) ? (JSON.parse(readFileSync(index, 'utf8')) as { weight_map: Record<string, string> }).weight_map[name] : 'model.safetensors';
    return typeof shard === 'string' ? readSafetensorsSync(join(dir, shard)).tensors.get(name)?.dtype ?? null : null;
  } catch {
    return null; // loading reports a broken file with its own error
  }
}

/** Bytes as MiB, or KiB below one MiB. */
function fmtBytes(n: number): string {
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(0)} MiB` : `${(n / 1024).toFixed(0)} KiB`;
}

const SERVE_OPTIONS = {
  model: true, backend: true, threads: true, dtype: true, kvCacheMemory: true, kvDtype: true, swapSpace: true, kvPrefault: true, blockSize: true,
  maxBatchedTokens: true, maxNumSeqs: true, maxBatchSeqs: true, maxQueue: true, prefixCaching: true, speculative: true, numSpeculativeTokens: true,
  numPredictionTokens: true, loraModules: true, maxLoras: true, maxLoraRank: true, maxCpuLoras: true, offload: true, pipeline: true, host: true,
  port: true, apiKey: true, modelName: true, bodyLimit: true, log: true, ui: true, dataDir: true, enableLoraLoading: true, loraRoot: true,
  jobsThreads: true, guardModel: true, guardrails: true, guardWindow: true, guardKvCacheMemory: true, embeddingModel: true, task: true, ragDb: true, allowedOrigins: true
} as const satisfies OptionKeys<ServeOptions>;

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  checkOptions('startServer', opts, SERVE_OPTIONS, false);
  if (typeof opts.model !== 'string' || opts.model === '') throw new TypeError(`startServer: model must be the path of an HF model directory or a .gguf file, got ${describe(opts.model)}`);
  checkEngineValues(opts); // the engine's option values, before the server listens (its ready promise was the first to fail)
  const noSqlite = opts.dataDir ? sqliteUnavailable() : null; // else every /v1/files, /v1/batches, /v1/fine_tuning request answered 500
  if (noSqlite) {
    throw new Error(`the data dir (${opts.dataDir}: Files, Batch and fine-tuning jobs API) needs better-sqlite3's native module, which does not load: ${noSqlite}; ` +
      'build it (`npm rebuild better-sqlite3`) or turn those routes off (dataDir: null; CLI --no-batch)');
  }
  const log = opts.log ?? ((line: string) => process.stdout.write(line + '\n'));
  preflight(opts);
  if (opts.embeddingModel) preflight({ model: opts.embeddingModel }, '--embedding-model');
  if (opts.ragDb && !opts.embeddingModel && opts.task !== 'embed') throw new Error('--rag-db needs an embedding model: --embedding-model PATH (or --task embed)');
  if (opts.embeddingModel && opts.task === 'embed') throw new Error('--embedding-model adds an embedding model beside a chat model; with --task embed, --model is the embedding model');
  const modelName = opts.modelName ?? defaultModelName(opts.model);
  const serve = createApp({
    modelName, apiKey: opts.apiKey, bodyLimit: opts.bodyLimit, metrics: new ServeMetrics({ processMetrics: true }), ui: opts.ui, modelPath: opts.model, dataDir: opts.dataDir,
    lora: { enableLoading: opts.enableLoraLoading ?? false, root: opts.loraRoot ?? null, maxRank: opts.maxLoraRank }, jobsThreads: opts.jobsThreads, dtype: opts.dtype,
    guardrails: { enforce: opts.guardrails ?? false, window: opts.guardWindow ?? 64 }, allowedOrigins: opts.allowedOrigins,
    rag: opts.ragDb ? { db: opts.ragDb, embedderName: resolve(opts.task === 'embed' ? opts.model : opts.embeddingModel!) } : null,
  });
  if (opts.guardrails && !opts.guardModel) throw new Error('--guardrails needs --guard-model PATH (the guard that judges the answers)');
  const { host = '127.0.0.1', port = 8000 } = opts;
  // Connections that never sent a request: Node's closeIdleConnections leaves them open (waiting for headers), so a
  // graceful stop closes them itself (a balancer's pre-opened connection, the one undici opens after an aborted fetch).
  const unused = new Set<Socket>();
  serve.app.server.on('connection', (s: Socket) => { unused.add(s); s.once('close', () => unused.delete(s)); });
  serve.app.server.on('request', (req: IncomingMessage) => unused.delete(req.socket));
  await serve.app.listen({ host, port });
  const addr = serve.app.server.address();
  const bound = typeof addr === 'object' && addr !== null ? addr.port : port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${bound}`;
  log(`floe serve: listening on ${url} (loading ${opts.model} as '${modelName}'; /health answers 503 until ready)`);

  let engine: EngineClient | null = null;
  let guard: Guard | null = null;
  let embedEngine: EngineClient | null = null;
  const { host: _h, port: _p, apiKey: _k, modelName: _n, bodyLimit: _b, log: _l, ui: _u, dataDir: _d, jobsThreads: _j, guardModel, guardrails: _g, guardWindow: _w, guardKvCacheMemory: _gk, ragDb: _r, allowedOrigins: _ao, enableLoraLoading: _e, loraRoot: _lr, embeddingModel, task, ...engineOpts } = opts;
  // what is left must be engine options only (the checked startEngine refuses any other key): a new server-only
  // option that is not taken out above fails to compile here
  const _engineOnly: Record<Exclude<keyof typeof engineOpts, keyof EngineStartOptions>, never> = {};
  const guardKv = guardKvShare(opts);
  if (guardModel && opts.kvCacheMemory !== undefined) (engineOpts as { kvCacheMemory?: number }).kvCacheMemory = opts.kvCacheMemory - guardKv;
  const ready = (async () => {
    const t0 = performance.now();
    // Test hook: FLOE_SERVE_LOAD_HOLD=1 holds the load until SIGUSR2, so that the loading state can be observed.
    if (process.env.FLOE_SERVE_LOAD_HOLD === '1') await new Promise((r) => process.once('SIGUSR2', r));
    const embedOnly = task === 'embed';
    // Each part is kept as it loads, so that close() releases it when another part fails: an engine worker left
    // running would keep the process alive after 'cannot load'.
    const [e, tools, g] = await allLoaded([
      startEngine({
        ...engineOpts, modelId: modelName, ...(embedOnly ? { maxBatchedTokens: engineOpts.maxBatchedTokens ?? EMBED_BATCHED_TOKENS } : {}),
        // the engine worker joins the pipeline through src/parallel (named here, resolved from src/engine/worker)
        ...(engineOpts.pipeline ? { pipeline: { ...engineOpts.pipeline, join: '../parallel/serve-stage.js' } } : {}),
      }).then((x) => (engine = x)),
      loadTextTools(opts.model),
      guardModel ? Guard.open(guardModel, { backend: opts.backend, threads: opts.threads, kvCacheMemory: guardKv, maxNumSeqs: opts.maxNumSeqs }).then((x) => (guard = x)) : null,
    ] as const);
    await serve.restoreAdapters(e);
    let embedding: EmbeddingModel | null = null;
    if (embedOnly) embedding = embeddingModelOf(modelName, e, tools.tokenizer, opts.model);
    else if (embeddingModel) {
      const name = defaultModelName(embeddingModel);
      if (name === modelName) throw new Error(`--embedding-model ${embeddingModel} would be served as '${name}', the chat model's name; rename one of them`);
      const c = readHfConfig(embeddingModel).config;
      const [ee, et] = await allLoaded([
        startEngine({ model: embeddingModel, modelId: name, backend: opts.backend, threads: opts.threads, kvDtype: 'f32', maxBatchedTokens: EMBED_BATCHED_TOKENS,
          kvCacheMemory: KvCache.bytesPerToken(c.numLayers, c.numKvHeads, c.headDim, 'f32') * EMBED_KV_TOKENS }).then((x) => (embedEngine = x)),
        loadTextTools(embeddingModel),
      ] as const);
      embedding = embeddingModelOf(name, ee, et.tokenizer, embeddingModel);
      log(`floe serve: embedding model '${name}' (${embeddingModel}) ready: ${ee.info.hiddenSize} dimensions, ${embedding.pooling} pooling, inputs up to ${embedding.maxTokens} tokens`);
    }
    serve.ready({ engine: e, tokenizer: tools.tokenizer, template: embedOnly ? null : tools.template, defaults: tools.defaults, guard: g, embedding });
    if (g) log(`floe serve: guard ${guardModel} ready (${g.format}${g.template ? ', its own chat template' : ''}; KV ${g.engine.info.kvTokens} tokens in ${(guardKv / 2 ** 20).toFixed(0)} MiB)${opts.guardrails ? '; guardrails on for every chat request' : ''}`);
    const i = e.info;
    log(`floe serve: model ready in ${((performance.now() - t0) / 1000).toFixed(1)} s${i.weights?.converted ? `; weights ${i.weights.linear ?? '?'} (--dtype ${i.weights.converted})` : ''}; KV cache ${kvDtypeFlagName(i.kvDtype)}: ${i.kvBlocks} blocks × ${i.blockSize} = ` +
      `${i.kvTokens} tokens${opts.kvPrefault ? ' (its pages committed in the background: --kv-prefault)' : ''}; longest request ${i.maxRequestTokens} tokens (context window ${i.maxModelLen})` +
      `; ${i.swapSpace ? `swap space ${fmtBytes(i.swapSpace)} for preempted requests' KV` : 'no swap space: preempted requests are recomputed'}` +
      `${tools.tokenizer ? '' : '; no tokenizer: token-id prompts only'}${tools.template ? '' : '; no chat template: /v1/chat/completions unavailable'}` +
      `${Object.keys(tools.defaults).length ? `; defaults from generation_config.json: ${JSON.stringify(tools.defaults)}` : ''}`);
    return i;
  })();
  ready.catch(() => {}); // the caller observes it; no unhandled rejection meanwhile

  let closing: Promise<void> | null = null;
  return {
    url, serve, modelName, ready,
    close(graceMs) {
      closing ??= (async () => {
        // Still listening while running requests finish: /health and new requests answer 503 (load balancers see it).
        serve.drain();
        const server = serve.app.server;
        // Connections still open past the grace period (and a margin for the aborted streams to end) are cut.
        const cut = setTimeout(() => {
          log('floe serve: cutting the connections still open after the grace period');
          server.closeAllConnections();
        }, graceMs + 3000);
        // A request may use several engines in turn (the guard's input rail, the model, its output rail; RAG's
        // embedder, then the model), and an engine that shuts down takes no new request: the engines stop only once
        // the running requests have ended, or the grace period has (then they abort what is left).
        const until = Date.now() + graceMs;
        while (serve.inFlight() > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
        const left = Math.max(0, until - Date.now());
        await Promise.all([engine, embedEngine].map((en) => en?.shutdown(left).catch(() => {})));
        if (guard) await guard.close().catch(() => {});
        // Keep-alive connections turn idle as their streams end; close them as they do.
        const idle = setInterval(() => {
          server.closeIdleConnections();
          for (const s of unused) s.destroy();
        }, 50);
        await serve.app.close();
        clearTimeout(cut);
        clearInterval(idle);
      })();
      return closing;
    },
  };
}

/** Promise.all that settles only once every part has: on a failure the parts still loading are waited for (then released by close). */
async function allLoaded<T extends readonly unknown[]>(parts: T): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const settled = await Promise.allSettled(parts);
  const failed = settled.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as { -readonly [K in keyof T]: Awaited<T[K]> };
}

function embeddingModelOf(name: string, engine: EngineClient, tokenizer: Tokenizer | null, path: string): EmbeddingModel {
  const ec = statSync(path).isDirectory() ? readEmbeddingConfig(path, engine.info.maxModelLen) : { pooling: 'mean' as const, maxTokens: engine.info.maxRequestTokens, skipBos: false };
  return { name, engine, tokenizer, pooling: ec.pooling, maxTokens: Math.min(ec.maxTokens, engine.info.maxRequestTokens), skipBos: ec.skipBos, bosId: tokenizer?.bosId ?? null };
}

