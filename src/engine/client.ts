// EngineClient: the main-thread handle on the engine worker (startEngine); the event loop never waits on a forward pass.

import { Worker } from 'node:worker_threads';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KV_DTYPES, type KvDType } from '../backend/backend.js';
import { checkOptions, describe, type OptionKeys } from '../tensor/options.js';
import type { BackendName } from '../backend/select.js';
import { LOAD_DTYPES, type LoadDType } from '../formats/load.js';
import type { OffloadOptions } from '../model/offload.js';
import type { SpeculativeModule } from '../model/speculation.js';
import {
  type AdapterInfo, EngineRequestError, type EmbedOutput, type EmbedRequest, type EngineClient, type EngineInfo, type EngineOutput,
  type EngineRequest, type EngineStats, type GenerateOutput, type GenerateRequest,
} from './protocol.js';

export interface EngineStartOptions {
  readonly model: string; // HF directory or .gguf file
  readonly modelId?: string; // name reported by /v1/models; default: the path
  readonly backend?: BackendName;
  readonly threads?: number;
  readonly dtype?: LoadDType; // while loading: 'fp8' quantizes the linear weights, 'bf16' converts f32 / f16 weight matrices
  readonly kvCacheMemory?: number; // bytes; default 0.3 × free RAM, capped at maxNumSeqs full contexts
  readonly kvDtype?: KvDType;
  readonly swapSpace?: number; // bytes for preempted sequences' KV, resumed bit for bit; 0 → recompute (default: the KV cache's size, at most 4 GiB)
  /**
   * Commit the KV cache's pages on a background thread at start (default false; serve --kv-prefault), as llama.cpp
   * clears its KV buffers: otherwise the first write to each page faults inside a decode step (a fresh server's
   * 16-stream decode measured ~10% slower until its blocks have been used once). Off by default: on the 2-core VMs
   * here committing runs at ~0.2 GB/s of one core (the hypervisor backs each page on first touch), ~40 s for the
   * default budget of 0.3 × free RAM.
   */
  readonly kvPrefault?: boolean;
  readonly blockSize?: number; // tokens per KV block, default 16
  readonly maxBatchedTokens?: number; // token budget per step, default 512
  readonly maxNumSeqs?: number; // default 64
  readonly maxBatchSeqs?: number; // batch lane's width: low-priority sequences at once while no interactive one runs (default maxNumSeqs)
  readonly maxQueue?: number; // requests waiting beyond the free sequence slots past this get 429; default 1024
  readonly prefixCaching?: boolean; // default true
  /**
   * Speculative decoding: 'ngram', 'suffix', the path of a draft model (HF dir or .gguf) sharing the tokenizer, or a
   * proposer module ({module, options} or 'module:PATH') whose default export makes the Proposer inside the worker.
   */
  readonly speculative?: string | SpeculativeModule;
  readonly numSpeculativeTokens?: number; // K, most draft tokens per sequence and step (default 4)
  readonly numPredictionTokens?: number; // most tokens of a request's prediction verified per sequence and step (default 15)
  readonly loraModules?: ReadonlyArray<{ readonly name: string; readonly path: string }>; // PEFT adapters served at start
  readonly maxLoras?: number; // distinct adapters in one step (default 4)
  readonly maxLoraRank?: number; // highest adapter rank accepted (default 64)
  readonly maxCpuLoras?: number; // adapters kept in host memory, LRU (default no limit)
  readonly offload?: OffloadOptions; // stream a share of the layers from disk (--weights-memory / --offload-ratio)
  /** Pipeline parallelism under mpirun: this worker is rank 0, the first stage (stages: --pipeline-stages). */
  readonly pipeline?: { readonly size: number; readonly stages?: string; readonly join?: string };
}

/** Every key of EngineStartOptions: the library's startEngine refuses any other. */
export const ENGINE_START_OPTIONS = {
  model: true, modelId: true, backend: true, threads: true, dtype: true, kvCacheMemory: true, kvDtype: true, swapSpace: true, kvPrefault: true,
  blockSize: true, maxBatchedTokens: true, maxNumSeqs: true, maxBatchSeqs: true, maxQueue: true, prefixCaching: true, speculative: true,
  numSpeculativeTokens: true, numPredictionTokens: true, loraModules: true, maxLoras: true, maxLoraRank: true, maxCpuLoras: true, offload: true,
  pipeline: true,
} as const satisfies OptionKeys<EngineStartOptions>;

/** Messages main → worker. */
export type ToWorker =
  | { readonly type: 'add'; readonly req: EngineRequest }
  | { readonly type: 'abort'; readonly id: string }
  | { readonly type: 'stats'; readonly nonce: number }
  | { readonly type: 'adapter'; readonly nonce: number; readonly op: 'load' | 'unload'; readonly name: string; readonly path?: string }
  | { readonly type: 'shutdown'; readonly graceMs: number };

/** Messages worker → main. */
export type FromWorker =
  | { readonly type: 'ready'; readonly info: EngineInfo }
  | { readonly type: 'failed'; readonly message: string }
  | { readonly type: 'outputs'; readonly outputs: readonly EngineOutput[] }
  | { readonly type: 'stats'; readonly nonce: number; readonly stats: EngineStats }
  | { readonly type: 'adapter'; readonly nonce: number; readonly adapters: readonly AdapterInfo[]; readonly error?: { readonly status: 400 | 404; readonly message: string } }
  | { readonly type: 'closed' };

/** Outputs of one request as an async queue. */
class Channel<T> {
  private items: T[] = [];
  private error: Error | null = null;
  private done = false;
  private waiter: (() => void) | null = null;

  push(x: T): void { this.items.push(x); this.wake(); }
  fail(e: Error): void { this.error = e; this.wake(); }
  end(): void { this.done = true; this.wake(); }
  private wake(): void { const w = this.waiter; this.waiter = null; w?.(); }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      if (this.items.length > 0) { yield this.items.shift()!; continue; }
      if (this.error) throw this.error;
      if (this.done) return;
      await new Promise<void>((r) => { this.waiter = r; });
    }
  }
}

/**
 * One 'abort' listener per signal, however many requests share it: a multi-prompt completion gives each prompt's
 * request the same signal, and past 10 listeners Node warns (MaxListenersExceededWarning) of a leak that is none.
 */
const signalWatchers = new WeakMap<AbortSignal, Set<() => void>>();

/** Call `fn` when `signal` aborts (now, if it has); returns the unsubscribe. */
function onAbortOf(signal: AbortSignal, fn: () => void): () => void {
  if (signal.aborted) { fn(); return () => {}; }
  let fns = signalWatchers.get(signal);
  if (!fns) {
    const set = new Set<() => void>();
    fns = set;
    signalWatchers.set(signal, set);
    signal.addEventListener('abort', () => {
      signalWatchers.delete(signal);
      for (const f of [...set]) f();
    }, { once: true });
  }
  fns.add(fn);
  const mine = fns;
  return () => { mine.delete(fn); };
}

interface Pending {
  readonly onOutput: (o: EngineOutput) => void;
  readonly onFail: (e: Error) => void;
}

/**
 * dist/ runs the compiled worker.js. From TS sources (tests under tsx) the worker is worker.ts; Node 20 does
 * not apply `--import tsx` from execArgv to a worker's entry module, so a tiny bootstrap registers tsx first.
 * The worker inherits the process's node flags by default. Passing `execArgv: process.execArgv` instead made Node
 * validate them as a worker's own, and a V8 or process flag there (`node --max-old-space-size=8192 …`; Node 24's
 * test runner gives its children a dozen such defaults) failed the engine's start with ERR_WORKER_INVALID_EXEC_ARGV.
 */
function spawnWorker(opts: EngineStartOptions): Worker {
  const ext = extname(fileURLToPath(import.meta.url));
  const workerUrl = new URL(`./worker${ext}`, import.meta.url);
  // only the engine's options cross to the worker (startServer's object carries its HTTP and LoRA-loading keys too)
  const workerData = Object.fromEntries(Object.entries(opts).filter(([k]) => Object.hasOwn(ENGINE_START_OPTIONS, k)));
  const options = { workerData };
  if (ext === '.js') return new Worker(workerUrl, options);
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const boot = `import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(workerUrl.href)}); })`;
  return new Worker(boot, { ...options, eval: true });
}

/**
 * startEngine as the library exports it (src/index.ts) and floe's own callers use it: an option key that is not an
 * engine option (a misspelling, `kvCacheDtype` for kvDtype) fails naming it and the nearest known one, before the
 * worker starts; else it ran on the default without a word.
 */
export async function startEngineChecked(opts: EngineStartOptions): Promise<EngineClient> {
  checkOptions('startEngine', opts, ENGINE_START_OPTIONS, false);
  return startEngine(opts);
}

/**
 * The option values startEngine refuses (TypeError / RangeError naming the option), checked where the caller's stack
 * is: inside the worker a bad kvDtype surfaced as a KV pool of NaN blocks, maxNumSeqs -1 as a negative KV cache memory.
 * startServer runs it too, before it listens.
 */
export function checkEngineValues(opts: EngineStartOptions): void {
  if (typeof opts.model !== 'string' || opts.model === '') throw new TypeError(`model must be the path of an HF model directory or a .gguf file, got ${describe(opts.model)}`);
  for (const k of ['threads', 'blockSize', 'maxBatchedTokens', 'maxNumSeqs', 'maxBatchSeqs', 'maxLoras', 'maxLoraRank'] as const) {
    const v = opts[k];
    if (v !== undefined && !(Number.isInteger(v) && v >= 1)) throw new RangeError(`${k} must be an integer >= 1, got ${describe(v)}`);
  }
  for (const k of ['kvCacheMemory', 'swapSpace'] as const) {
    const v = opts[k];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v >= (k === 'swapSpace' ? 0 : 1))) throw new RangeError(`${k} must be a number of bytes${k === 'swapSpace' ? ' >= 0' : ' > 0'}, got ${describe(v)}`);
  }
  if (opts.kvDtype !== undefined && !KV_DTYPES.includes(opts.kvDtype)) throw new TypeError(`kvDtype must be one of ${KV_DTYPES.join(', ')}, got ${describe(opts.kvDtype)}`);
  if (opts.dtype !== undefined && !LOAD_DTYPES.includes(opts.dtype)) throw new TypeError(`dtype must be 'fp8' or 'bf16' (convert the weights while loading) or absent, got ${describe(opts.dtype)}`);
}

/**
 * Start the engine in a worker_thread; resolves once the model is loaded. Keys that are not engine options are left
 * out, unchecked: startServer passes its own options object (less its HTTP keys) here. Called from code, the checked
 * entry above refuses them.
 */
export async function startEngine(opts: EngineStartOptions): Promise<EngineClient> {
  checkEngineValues(opts);
  const worker = spawnWorker(opts);
  const pending = new Map<string, Pending>();
  const statsWaiters = new Map<number, { resolve: (s: EngineStats) => void; reject: (e: Error) => void }>();
  const adapterWaiters = new Map<number, { resolve: (list: readonly AdapterInfo[]) => void; reject: (e: Error) => void }>();
  let nonce = 0;
  let closed: Error | null = null;
  let failure: string | null = null; // set when the worker died without being asked to
  let stopping = false; // shutdown() asked the worker to end
  let onClosed: (() => void) | null = null;
  const exited = new Promise<void>((r) => worker.once('exit', () => r()));

  const info = await new Promise<EngineInfo>((resolve, reject) => {
    const onError = (e: Error): void => done(() => reject(e));
    const onExit = (code: number): void => done(() => reject(new Error(`engine worker exited with code ${code} while loading ${opts.model}`)));
    const onMessage = (m: FromWorker): void => done(() => {
      if (m.type === 'ready') resolve(m.info);
      else if (m.type === 'failed') reject(new Error(m.message));
      else reject(new Error(`engine worker: unexpected first message ${m.type}`));
    });
    const done = (f: () => void): void => {
      worker.off('error', onError).off('exit', onExit).off('message', onMessage);
      f();
    };
    worker.on('error', onError).on('exit', onExit).on('message', onMessage);
  }).catch(async (e: unknown) => {
    await worker.terminate();
    throw e;
  });
  let adapters: readonly AdapterInfo[] = info.adapters ?? [];

  /** The worker is gone: fail what is in flight with `e`; later calls get a 503. */
  const failAll = (e: EngineRequestError): void => {
    if (!closed && stopping) closed = new EngineRequestError(503, 'the engine was shut down');
    if (!closed) {
      failure = e.message;
      closed = new EngineRequestError(503, `the engine is not running (${e.message}); restart the server`);
    }
    for (const p of pending.values()) p.onFail(e);
    pending.clear();
    for (const w of statsWaiters.values()) w.reject(e);
    statsWaiters.clear();
    for (const w of adapterWaiters.values()) w.reject(e);
    adapterWaiters.clear();
  };
  worker.on('message', (m: FromWorker) => {
    if (m.type === 'outputs') {
      for (const o of m.outputs) pending.get(o.id)?.onOutput(o);
    } else if (m.type === 'stats') {
      statsWaiters.get(m.nonce)?.resolve(m.stats);
      statsWaiters.delete(m.nonce);
    } else if (m.type === 'adapter') {
      adapters = m.adapters;
      const w = adapterWaiters.get(m.nonce);
      adapterWaiters.delete(m.nonce);
      if (m.error) w?.reject(new EngineRequestError(m.error.status, m.error.message));
      else w?.resolve(m.adapters);
    } else if (m.type === 'closed') {
      onClosed?.();
    }
  });
  /** Ask the worker to load or unload an adapter; resolves with the adapters served afterwards. */
  const adapterOp = (op: 'load' | 'unload', name: string, path?: string): Promise<readonly AdapterInfo[]> =>
    new Promise((resolve, reject) => {
      const n = nonce++;
      adapterWaiters.set(n, { resolve, reject });
      try { send({ type: 'adapter', nonce: n, op, name, path }); } catch (e) { adapterWaiters.delete(n); reject(e as Error); }
    });
  worker.on('error', (e) => failAll(new EngineRequestError(500, `the engine worker crashed: ${e.message}`)));
  worker.on('exit', (code) => failAll(new EngineRequestError(503, `the engine worker exited unexpectedly (code ${code})`)));

  const send = (m: ToWorker): void => {
    if (closed) throw closed instanceof EngineRequestError ? closed : new EngineRequestError(503, closed.message);
    worker.postMessage(m);
  };

  return {
    info,

    generate(req: Omit<GenerateRequest, 'kind'>, signal?: AbortSignal): AsyncIterable<GenerateOutput> {
      const ch = new Channel<GenerateOutput>();
      const open = new Set(Array.from({ length: req.n }, (_, i) => i));
      const onAbort = (): void => { if (pending.has(req.id) && !closed) worker.postMessage({ type: 'abort', id: req.id } satisfies ToWorker); };
      let unwatch = (): void => {};
      const finish = (): void => { pending.delete(req.id); unwatch(); };
      if (pending.has(req.id)) { ch.fail(new EngineRequestError(400, `request id ${req.id} is already in use`)); return ch; }
      pending.set(req.id, {
        onOutput: (o) => {
          if (o.kind === 'error') { finish(); ch.fail(new EngineRequestError(o.status, o.message)); return; }
          if (o.kind !== 'generate') return;
          ch.push(o);
          if (o.finishReason !== null) open.delete(o.index);
          if (open.size === 0) { finish(); ch.end(); }
        },
        onFail: (e) => { unwatch(); ch.fail(e); },
      });
      try {
        send({ type: 'add', req: { ...req, kind: 'generate' } });
      } catch (e) {
        finish();
        ch.fail(e as Error);
        return ch;
      }
      if (signal) unwatch = onAbortOf(signal, onAbort);
      return ch;
    },

    embed(req: Omit<EmbedRequest, 'kind'>): Promise<EmbedOutput> {
      return new Promise((resolve, reject) => {
        if (pending.has(req.id)) { reject(new EngineRequestError(400, `request id ${req.id} is already in use`)); return; }
        pending.set(req.id, {
          onOutput: (o) => {
            pending.delete(req.id);
            if (o.kind === 'embed') resolve(o);
            else if (o.kind === 'error') reject(new EngineRequestError(o.status, o.message));
            else reject(new EngineRequestError(500, `embedding request ${req.id} got a ${o.kind} output`));
          },
          onFail: reject,
        });
        try {
          send({ type: 'add', req: { ...req, kind: 'embed' } });
        } catch (e) {
          pending.delete(req.id);
          reject(e as Error);
        }
      });
    },

    abort(id: string): void {
      if (!closed) worker.postMessage({ type: 'abort', id } satisfies ToWorker);
    },

    stats(): Promise<EngineStats> {
      return new Promise((resolve, reject) => {
        const n = nonce++;
        statsWaiters.set(n, { resolve, reject });
        try { send({ type: 'stats', nonce: n }); } catch (e) { statsWaiters.delete(n); reject(e as Error); }
      });
    },

    async shutdown(graceMs: number): Promise<void> {
      if (closed) { await exited; return; }
      const done = new Promise<void>((r) => { onClosed = r; });
      stopping = true;
      worker.postMessage({ type: 'shutdown', graceMs } satisfies ToWorker);
      await Promise.race([done, exited]);
      closed ??= new EngineRequestError(503, 'the engine was shut down');
      await worker.terminate();
      await exited;
    },

    adapters: () => adapters,

    async loadAdapter(name: string, path: string): Promise<AdapterInfo> {
      const list = await adapterOp('load', name, path);
      return list.find((a) => a.name === name)!;
    },

    async unloadAdapter(name: string): Promise<void> {
      await adapterOp('unload', name);
    },

    failure: () => failure,
  };
}
