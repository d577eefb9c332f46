// startServer: listen first (/health 503 while loading), load the engine and tokenizer, then serve; graceful close.

import { statSync } from 'node:fs';
import { basename } from 'node:path';
import type { EngineClient, EngineInfo } from '../engine/protocol.js';
import { startEngine, type EngineStartOptions } from '../engine/client.js';
import { ChatTemplate, loadChatTemplate, selectChatTemplate } from '../formats/chat-template.js';
import { readGguf } from '../formats/gguf.js';
import { tokenizerFromGguf } from '../formats/gguf-tokenizer.js';
import { loadTokenizer, type Tokenizer } from '../formats/tokenizer.js';
import { createApp, type ServeApp } from './app.js';
import { ServeMetrics } from './metrics.js';

export interface ServeOptions extends Omit<EngineStartOptions, 'modelId'> {
  readonly host?: string; // default 127.0.0.1
  readonly port?: number; // default 8000; 0 picks a free port
  readonly apiKey?: string | null;
  readonly modelName?: string; // default: the model path's base name
  readonly bodyLimit?: number; // bytes
  readonly log?: (line: string) => void;
  readonly ui?: boolean; // the web console at / (default true)
}

export interface RunningServer {
  readonly url: string;
  readonly serve: ServeApp;
  readonly modelName: string;
  /** Resolves once the model is loaded and the routes answer; rejects when loading fails. */
  readonly ready: Promise<EngineInfo>;
  /** Stop accepting, let running requests finish within graceMs, abort the rest, stop the engine. */
  close(graceMs: number): Promise<void>;
}

/** The tokenizer and chat template of an HF directory or a GGUF file (either may be absent). */
export async function loadTextTools(path: string): Promise<{ tokenizer: Tokenizer | null; template: ChatTemplate | null }> {
  if (statSync(path).isDirectory()) return { tokenizer: await loadTokenizer(path), template: await loadChatTemplate(path) };
  const meta = (await readGguf(path)).metadata;
  const source = selectChatTemplate(meta.get('tokenizer.chat_template') ?? null, {}, `${path} tokenizer.chat_template`);
  return { tokenizer: tokenizerFromGguf(meta), template: source === null ? null : new ChatTemplate(source, `${path} tokenizer.chat_template`) };
}

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const log = opts.log ?? ((line: string) => process.stdout.write(line + '\n'));
  const modelName = opts.modelName ?? basename(opts.model.replace(/[/\\]+$/, ''));
  const serve = createApp({
    modelName, apiKey: opts.apiKey, bodyLimit: opts.bodyLimit, metrics: new ServeMetrics({ processMetrics: true }), ui: opts.ui, modelPath: opts.model,
  });
  const { host = '127.0.0.1', port = 8000 } = opts;
  await serve.app.listen({ host, port });
  const addr = serve.app.server.address();
  const bound = typeof addr === 'object' && addr !== null ? addr.port : port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${bound}`;
  log(`floe serve: listening on ${url} (loading ${opts.model} as '${modelName}'; /health answers 503 until ready)`);

  let engine: EngineClient | null = null;
  const { host: _h, port: _p, apiKey: _k, modelName: _n, bodyLimit: _b, log: _l, ui: _u, ...engineOpts } = opts;
  const ready = (async () => {
    const t0 = performance.now();
    // Test hook: hold the load back so that the loading state can be observed.
    const delay = Number(process.env.FLOE_SERVE_LOAD_DELAY_MS ?? 0);
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    const [e, tools] = await Promise.all([startEngine({ ...engineOpts, modelId: modelName }), loadTextTools(opts.model)]);
    engine = e;
    serve.ready({ engine: e, tokenizer: tools.tokenizer, template: tools.template });
    const i = e.info;
    log(`floe serve: model ready in ${((performance.now() - t0) / 1000).toFixed(1)} s; KV cache ${i.kvDtype}: ${i.kvBlocks} blocks × ${i.blockSize} = ` +
      `${i.kvTokens} tokens; longest request ${i.maxRequestTokens} tokens (context window ${i.maxModelLen})` +
      `${tools.tokenizer ? '' : '; no tokenizer: token-id prompts only'}${tools.template ? '' : '; no chat template: /v1/chat/completions unavailable'}`);
    return i;
  })();
  ready.catch(() => {}); // the caller observes it; no unhandled rejection meanwhile

  let closing: Promise<void> | null = null;
  return {
    url, serve, modelName, ready,
    close(graceMs) {
      closing ??= (async () => {
        serve.drain();
        const server = serve.app.server;
        // Connections still open past the grace period (and a margin for the aborted streams to end) are cut.
        const cut = setTimeout(() => server.closeAllConnections(), graceMs + 3000);
        // Keep-alive connections turn idle as their streams end; close them as they do.
        const idle = setInterval(() => server.closeIdleConnections(), 50);
        const stopEngine = engine ? engine.shutdown(graceMs).catch(() => {}) : Promise.resolve();
        await Promise.all([serve.app.close(), stopEngine]);
        clearTimeout(cut);
        clearInterval(idle);
      })();
      return closing;
    },
  };
}

/** "2GiB", "512MiB", "1.5GB", "4096" (bytes) → bytes. */
export function parseSize(s: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?)b?|b)?\s*$/i.exec(s);
  if (!m) throw new Error(`expected a size such as 2GiB, 512MiB, 1.5GB or a number of bytes, got '${s}'`);
  const exp = m[2] ? 'kmgt'.indexOf(m[2].toLowerCase()) + 1 : 0;
  const bytes = Number(m[1]) * (m[3] ? 1024 : 1000) ** exp;
  if (!Number.isFinite(bytes) || bytes < 1) throw new Error(`size '${s}' is out of range`);
  return Math.floor(bytes);
}
