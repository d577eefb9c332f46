// The floe console: web/ and its vendored ES modules at / and /ui/, and the JSON it reads (/v1/floe/stats, /v1/floe/info).

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { freemem, totalmem } from 'node:os';
import { dirname, extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { EngineInfo } from '../engine/protocol.js';
import { readHfConfig } from '../formats/hf-config.js';
import { readSafetensorsDir } from '../formats/safetensors.js';
import { KV_BYTES, KvCache, kvDtypeFlagName } from '../model/kv-cache.js';
import type { ServeMetrics } from './metrics.js';

export interface ConsoleOptions {
  readonly ui: boolean; // false: no page routes (`floe serve --no-ui`); the JSON routes stay
  readonly metrics: ServeMetrics;
  /** Copy the engine's current stats into `metrics` (no-op while loading). */
  readonly refresh: () => Promise<void>;
  /** The loaded engine's facts; throws the 503 ApiError while loading. */
  readonly engineInfo: () => EngineInfo;
  readonly modelName: string;
  readonly modelPath?: string | null; // HF directory or .gguf file, for the model facts
  readonly webDir?: string; // default: the package's web/
}

export const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

/** web/ next to src/ (tsx) or next to dist/src/ (built). */
export function defaultWebDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const up of ['../..', '../../..']) {
    const d = join(here, up, 'web');
    if (existsSync(join(d, 'index.html'))) return d;
  }
  throw new Error(`the console's web/ folder (web/index.html) was not found above ${here}; reinstall floe or run with --no-ui`);
}

/** The npm packages the page imports, by URL under /ui/vendor/ (no CDN: served from node_modules). */
function vendorFiles(): Map<string, string> {
  const at = (spec: string) => fileURLToPath(import.meta.resolve(spec));
  const uplotDir = dirname(at('uplot'));
  return new Map([
    ['/ui/vendor/preact.mjs', at('preact')],
    ['/ui/vendor/preact-hooks.mjs', at('preact/hooks')],
    ['/ui/vendor/htm.mjs', at('htm')],
    ['/ui/vendor/eventsource-parser.js', at('eventsource-parser')],
    ['/ui/vendor/uPlot.esm.js', join(uplotDir, 'uPlot.esm.js')],
    ['/ui/vendor/uPlot.min.css', join(uplotDir, 'uPlot.min.css')],
  ]);
}

/**
 * Every URL the console answers, fixed at start-up: web/ files of known types under /ui/, the vendor
 * files, and / for index.html. Anything else is a 404, so no request path ever reaches the file system.
 */
export function consoleFiles(webDir: string): Map<string, { file: string; type: string }> {
  const out = new Map<string, { file: string; type: string }>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.name.startsWith('.')) continue;
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && CONTENT_TYPES[extname(e.name)]) out.set('/ui/' + relative(webDir, p).split(sep).join('/'), { file: p, type: CONTENT_TYPES[extname(e.name)]! });
    }
  };
  walk(webDir);
  for (const [url, file] of vendorFiles()) {
    if (!existsSync(file)) throw new Error(`console vendor file ${file} is missing (for ${url}); run npm install`);
    out.set(url, { file, type: CONTENT_TYPES[extname(file)]! });
  }
  const index = out.get('/ui/index.html');
  if (!index) throw new Error(`${webDir}: no index.html`);
  out.set('/', index);
  return out;
}

/** What `floe info` prints, read from the model's headers only (the weights stay mapped, not loaded). */
export async function modelFacts(path: string): Promise<Record<string, unknown>> {
  if (!statSync(path).isDirectory()) return { path, format: 'gguf', file_bytes: statSync(path).size };
  const hf = readHfConfig(path);
  const st = await readSafetensorsDir(path);
  const dtypes: Record<string, number> = {};
  let parameters = 0;
  let weightBytes = 0;
  for (const t of st.tensors.values()) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    parameters += n;
    weightBytes += t.data.byteLength;
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + n;
  }
  const c = hf.config;
  return {
    path, format: 'hf', architecture: 'llama', parameters, weight_bytes: weightBytes, dtypes,
    torch_dtype: hf.torchDtype, quantization: hf.quantization?.method ?? null,
    config: {
      layers: c.numLayers, hidden_size: c.hiddenSize, intermediate_size: c.intermediateSize, heads: c.numHeads,
      kv_heads: c.numKvHeads, head_dim: c.headDim, vocab_size: c.vocabSize, context: c.maxPositionEmbeddings,
      rope_theta: c.ropeTheta, rope_scaling: c.ropeScaling?.type ?? null, tied_embeddings: c.tieWordEmbeddings,
    },
  };
}

export function registerConsole(app: FastifyInstance, opts: ConsoleOptions): void {
  if (opts.ui) {
    const files = consoleFiles(opts.webDir ?? defaultWebDir());
    const handler = async (req: { url: string }, reply: import('fastify').FastifyReply) => {
      const f = files.get(req.url.split('?')[0]!);
      if (!f) return reply.callNotFound();
      return reply.header('content-type', f.type).header('cache-control', 'no-cache').send(readFileSync(f.file));
    };
    app.get('/', handler);
    app.get('/ui/*', handler);
  }

  // Same registry as GET /metrics, as prom-client's JSON (histograms keep their cumulative buckets).
  app.get('/v1/floe/stats', async () => {
    opts.engineInfo(); // 503 while loading
    await opts.refresh();
    return { time: Date.now() / 1000, metrics: await opts.metrics.registry.getMetricsAsJSON() };
  });

  let facts: Promise<Record<string, unknown>> | null = null;
  app.get('/v1/floe/info', async () => {
    const engine = opts.engineInfo();
    if (opts.modelPath) facts ??= modelFacts(opts.modelPath).catch((e: Error) => ({ path: opts.modelPath, error: e.message }));
    const model = facts ? await facts : null;
    const c = model?.config as { layers: number; kv_heads: number; head_dim: number } | undefined;
    const perToken = c && engine.kvDtype in KV_BYTES ? KvCache.bytesPerToken(c.layers, c.kv_heads, c.head_dim, engine.kvDtype as keyof typeof KV_BYTES) : null;
    const m = process.memoryUsage();
    return {
      model_name: opts.modelName, model, engine,
      kv_cache: { dtype: kvDtypeFlagName(engine.kvDtype), blocks: engine.kvBlocks, block_size: engine.blockSize, tokens: engine.kvTokens, bytes_per_token: perToken, bytes: perToken === null ? null : perToken * engine.kvTokens },
      memory: { rss_bytes: m.rss, heap_used_bytes: m.heapUsed, external_bytes: m.external, system_total_bytes: totalmem(), system_free_bytes: freemem() },
      process: { node: process.version, pid: process.pid, uptime_s: process.uptime() },
    };
  });
}
