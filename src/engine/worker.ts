// Engine worker thread: loads the model, then loops step → forward → sample → post outputs, reading messages between steps.

import { parentPort, workerData } from 'node:worker_threads';
import { openModel } from '../model/open.js';
import type { LlamaModel } from '../model/llama.js';
import type { Tokenizer } from '../formats/tokenizer.js';
import { Engine } from './engine.js';
import { loadAddon } from '../backend/native-addon.js';
import type { RemoteForward } from './runner.js';
import { loadProposerModule, speculativeModuleOf, type SpeculativeSpec } from '../model/speculation.js';
import type { EngineStartOptions, ToWorker, FromWorker } from './client.js';
import { EngineRequestError, type EngineInfo, type EngineOutput } from './protocol.js';

const port = parentPort;
if (!port) throw new Error('src/engine/worker.ts must run in a worker_thread (use startEngine)');
const post = (m: FromWorker): void => port.postMessage(m);

const opts = workerData as EngineStartOptions;
let engine: Engine;
/** What joining a pipeline gives rank 0's engine: its first stage, the RemoteForward and the KV blocks every stage holds. */
interface PipelineJoin {
  readonly model: LlamaModel;
  readonly tokenizer: Tokenizer | null;
  readonly driver: RemoteForward & { close(): Promise<void> };
  readonly kvBlocks: number;
  readonly transport: { abort(code: number, message: string): Promise<void> | void; close(): Promise<void> };
  readonly weights: EngineInfo['weights']; // every stage's, as the stages told rank 0
}
// Under mpirun the forward pass continues on the other ranks. The engine only sees a RemoteForward: the caller (a layer
// above, which owns src/parallel) names the module that joins the job in opts.pipeline.join, resolved from this file.
let pipeline: PipelineJoin | null = null;
try {
  const open = { backend: opts.backend, threads: opts.threads, load: opts.dtype ? { dtype: opts.dtype } : undefined };
  if (opts.pipeline) {
    // model-free proposers draft on rank 0 from tokens alone; a draft model would need its KV beside every stage's
    const draftModel = opts.speculative !== undefined && opts.speculative !== 'ngram' && opts.speculative !== 'suffix';
    if (draftModel || opts.loraModules?.length) throw new Error('a draft model (--speculative PATH or module:) and LoRA modules are not supported with pipeline parallelism yet; --speculative ngram and suffix are');
    if (!opts.pipeline.join) throw new Error('pipeline parallelism: no join module given (startServer names src/parallel/serve-stage.js)');
    const join = (await import(opts.pipeline.join)) as { joinAsRank0(o: unknown): Promise<PipelineJoin> };
    pipeline = await join.joinAsRank0({ ...open, ...opts, stages: opts.pipeline.stages });
  }
  const { model, tokenizer } = pipeline ?? await openModel(opts.model, { ...open, offload: opts.offload });
  const spec = opts.speculative;
  let speculative: SpeculativeSpec | undefined;
  const specModule = speculativeModuleOf(spec);
  if (specModule) speculative = await loadProposerModule(specModule, model);
  else if (spec === 'ngram' || spec === 'suffix') speculative = spec;
  else if (typeof spec === 'string') {
    try { speculative = (await openModel(spec, open)).model; } catch (e) { throw new Error(`draft model ${spec}: ${(e as Error).message}`); }
  }
  engine = new Engine(model, tokenizer, {
    speculative, numSpeculativeTokens: opts.numSpeculativeTokens, numPredictionTokens: opts.numPredictionTokens,
    modelId: opts.modelId, kvCacheMemory: opts.kvCacheMemory, kvDtype: opts.kvDtype, blockSize: opts.blockSize,
    maxBatchedTokens: opts.maxBatchedTokens, maxNumSeqs: opts.maxNumSeqs, maxBatchSeqs: opts.maxBatchSeqs, maxQueue: opts.maxQueue, prefixCaching: opts.prefixCaching,
    extraEosIds: tokenizer?.eosIds, maxLoras: opts.maxLoras, maxLoraRank: opts.maxLoraRank, maxCpuLoras: opts.maxCpuLoras,
    remote: pipeline?.driver, kvBlocks: pipeline?.kvBlocks, swapSpace: opts.swapSpace,
  });
  if (opts.kvPrefault) loadAddon()?.prefault(engine.runner.kv.buffers());
  for (const m of opts.loraModules ?? []) {
    try { engine.loadAdapter(m.name, m.path); } catch (e) { throw new Error(`LoRA module ${m.name}=${m.path}: ${(e as Error).message}`); }
  }
} catch (e) {
  // the stages wait for rank 0: the job ends with the message
  if (pipeline) await pipeline.transport.abort(1, `floe serve: loading ${opts.model} on rank 0: ${(e as Error).message}; aborting the job`);
  post({ type: 'failed', message: `loading ${opts.model}: ${(e as Error).message}` });
  process.exit(1);
}
const held = pipeline ? null : engine.model.weights;
const weights = pipeline ? pipeline.weights : held ? { linear: held.layers[0]?.wq.dtype ?? null, embedding: held.embed.dtype, head: held.head.dtype, converted: opts.dtype ?? null } : undefined;
post({ type: 'ready', info: { ...engine.info, adapters: engine.adapters.list(), ...(weights ? { weights } : {}), kernels: kernelsOf(engine.model, weights) } });

function kernelsOf(model: LlamaModel, w: EngineInfo['weights']): EngineInfo['kernels'] {
  const a = model.backend.name === 'native' ? loadAddon() : null;
  if (!a) return { backend: model.backend.name, isa: null, amx: null, bf16Dot: null, r16Wide: null };
  const amx = a.amx();
  const halfWeights = [w?.linear, w?.embedding, w?.head, ...(w?.stages ?? []).map((s) => s.linear)].some((d) => d !== undefined && d !== null && /bf16|fp8/.test(d));
  return {
    backend: 'native', isa: a.isa(), amx: amx.active ? { mode: amx.mode, int8: amx.int8, attn: amx.attn } : null,
    bf16Dot: a.isa() === 'avx512' && halfWeights ? a.bf16Dot()?.mode ?? null : null,
    r16Wide: a.isa() === 'avx512' ? a.bf16Dot()?.r16Wide ?? null : null,
  };
}

let wake: (() => void) | null = null;
let shutdownAt: number | null = null;
// Test hook: FLOE_ENGINE_TEST_HOLD=N takes no step before N requests arrived (admitted or refused): bursts become deterministic.
let hold = Number(process.env.FLOE_ENGINE_TEST_HOLD ?? 0) || 0;

port.on('message', (m: ToWorker) => {
  switch (m.type) {
    case 'add':
      hold--;
      try {
        engine.add(m.req);
      } catch (e) {
        const status = e instanceof EngineRequestError ? e.status : 400;
        post({ type: 'outputs', outputs: [{ kind: 'error', id: m.req.id, status, message: (e as Error).message }] });
      }
      break;
    case 'abort':
      engine.abort(m.id);
      break;
    case 'stats':
      post({ type: 'stats', nonce: m.nonce, stats: engine.stats() });
      break;
    case 'adapter': {
      let error: { status: 400 | 404; message: string } | undefined;
      try {
        if (m.op === 'load') engine.loadAdapter(m.name, m.path ?? '');
        else if (!engine.unloadAdapter(m.name)) error = { status: 404, message: `no LoRA adapter named '${m.name}' is loaded` };
      } catch (e) {
        error = { status: 400, message: `loading LoRA adapter ${m.name} from ${m.path}: ${(e as Error).message}` };
      }
      post({ type: 'adapter', nonce: m.nonce, adapters: engine.adapters.list(), error });
      break;
    }
    case 'shutdown':
      engine.stopAccepting();
      shutdownAt = Date.now() + Math.max(0, m.graceMs);
      break;
  }
  wake?.();
});

// Test hook: FLOE_ENGINE_TEST_FAULT=exit@N or throw@N kills the worker at step N, as a native fault would.
const fault = /^(exit|throw)@(\d+)$/.exec(process.env.FLOE_ENGINE_TEST_FAULT ?? '');
let steps = 0;

// FLOE_ENGINE_STEP_DELAY_MS paces steps so tests can act mid-stream on tiny, fast models.
const stepDelayMs = Number(process.env.FLOE_ENGINE_STEP_DELAY_MS ?? 0) || 0;
const tick = (): Promise<void> => new Promise((r) => (stepDelayMs > 0 ? setTimeout(r, stepDelayMs) : setImmediate(r)));

// a pipeline keeps one step per stage in flight (micro-batches), so the stages overlap
const inflight: Promise<EngineOutput[]>[] = [];
const depth = opts.pipeline ? opts.pipeline.size : 1;
async function pipelineStep(): Promise<EngineOutput[]> {
  while (inflight.length < depth) {
    const p = engine.launchStep(depth);
    if (!p) break;
    p.catch(() => {}); // awaited in order below; a failure there ends the job
    inflight.push(p);
  }
  return inflight.length > 0 ? await inflight.shift()! : [];
}

for (;;) {
  if (shutdownAt !== null && (!engine.hasWork || Date.now() >= shutdownAt)) {
    while (inflight.length > 0) post({ type: 'outputs', outputs: await inflight.shift()! });
    const outs = engine.abortAll();
    if (outs.length > 0) post({ type: 'outputs', outputs: outs });
    if (pipeline) { await pipeline.driver.close(); await pipeline.transport.close(); }
    post({ type: 'closed' });
    port.close();
    break;
  }
  // a launched micro-batch is work too: its results may already have finished every request (engine.hasWork false)
  // while its outputs still wait in `inflight`; sleeping then would strand a burst's last tokens until the next request
  if ((engine.hasWork || inflight.length > 0) && hold <= 0) {
    if (fault && ++steps >= Number(fault[2])) {
      if (fault[1] === 'exit') process.exit(70);
      throw new Error(`test fault at engine step ${steps}`);
    }
    let outs: EngineOutput[];
    try {
      outs = pipeline ? await pipelineStep() : engine.step();
    } catch (e) {
      // the stages may be mid-step: a pipeline cannot go on, the job ends (mpirun takes every rank down)
      if (pipeline) await pipeline.transport.abort(1, `floe serve: pipeline step failed on rank 0: ${(e as Error).message}; aborting the job`);
      // a bug must not hang the clients: fail every live request and keep serving
      outs = engine.failAll(`engine step failed: ${(e as Error).message}`);
    }
    if (outs.length > 0) post({ type: 'outputs', outputs: outs });
    await tick(); // let messages (new requests, aborts) in between steps
  } else {
    await new Promise<void>((r) => {
      wake = r;
      if (shutdownAt !== null) setTimeout(r, Math.max(0, shutdownAt - Date.now()));
    });
    wake = null;
  }
}
