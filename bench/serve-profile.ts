// Engine profile without HTTP: S streams decoding in-process, each engine step split into its parts (kernels, scheduler, sampling, detokenization).
//
// usage: node --import tsx bench/serve-profile.ts <model> [--streams 1,16] [--prompt 128] [--decode 32] [--threads N]
// Prints one JSON line per stream count: decode tok/s and the share of step time per part. A diagnostic for
// finding engine overheads, not a benchmark figure (bench/serve.ts measures through the server).

import * as os from 'node:os';
import { openModel } from '../src/model/open.js';
import { Engine } from '../src/engine/engine.js';
import { DEFAULT_SAMPLING, Sampler } from '../src/model/sampler.js';
import { KvCache } from '../src/model/kv-cache.js';
import { IncrementalDetokenizer, StopStringMatcher } from '../src/formats/detokenize.js';
import { burstPrompts } from './serve-trace.js';

const times = new Map<string, number>();
const add = (k: string, ms: number): void => { times.set(k, (times.get(k) ?? 0) + ms); };

/** Wraps obj[name] so that its wall time accumulates under `key`. */
function timeMethod(obj: Record<string, unknown>, name: string, key: string): void {
  const f = obj[name] as (...a: unknown[]) => unknown;
  if (typeof f !== 'function') return;
  obj[name] = function (this: unknown, ...a: unknown[]) {
    const t = performance.now();
    try { return f.apply(this, a); } finally { add(key, performance.now() - t); }
  };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const model = argv[0];
  if (!model) throw new Error('usage: serve-profile.ts <model> [--streams 1,16] [--prompt 128] [--decode 32] [--threads N]');
  const opt = (name: string, d: string): string => { const i = argv.indexOf(name); return i > 0 && argv[i + 1] ? argv[i + 1]! : d; };
  const streams = opt('--streams', '1,16').split(',').map(Number);
  const P = Number(opt('--prompt', '128'));
  const decode = Number(opt('--decode', '32'));
  const threads = Number(opt('--threads', String(os.cpus().length)));
  const { model: m, tokenizer } = await openModel(model, { threads });
  const V = m.config.vocabSize;

  // kernels: every backend call, by name
  const be = m.backend as unknown as Record<string, unknown>;
  for (const k of ['matmul', 'rmsnorm', 'rope', 'swiglu', 'embedding', 'add', 'kvWrite', 'attention', 'logSoftmax', 'topk']) timeMethod(be, k, `kernel.${k}`);
  timeMethod(Sampler.prototype as unknown as Record<string, unknown>, 'sample', 'sampler.sample');
  timeMethod(IncrementalDetokenizer.prototype as unknown as Record<string, unknown>, 'push', 'detok.push');
  timeMethod(StopStringMatcher.prototype as unknown as Record<string, unknown>, 'push', 'stops.push');

  timeMethod(m as unknown as Record<string, unknown>, 'forward', 'model.forward');
  for (const S of streams) {
    const maxSeqs = Math.max(...streams);
    const engine = new Engine(m, tokenizer, { maxNumSeqs: maxSeqs, kvCacheMemory: KvCache.bytesPerToken(m.config.numLayers, m.config.numKvHeads, m.config.headDim, 'f32') * (P + decode + 32) * maxSeqs });
    const e = engine as unknown as Record<string, Record<string, unknown>>;
    timeMethod(e.scheduler!, 'schedule', 'scheduler.schedule');
    timeMethod(e.runner!, 'execute', 'runner.execute');
    timeMethod(e.kv!, 'cacheComputed', 'kv.cacheComputed');
    const prompts = burstPrompts(S, P, V, 11);
    prompts.forEach((p, i) => engine.add({
      kind: 'generate', id: `r${i}`, promptIds: p, sampling: { ...DEFAULT_SAMPLING, temperature: 0, logitBias: null }, maxTokens: decode + 1, n: 1, stop: [], stopTokenIds: [],
      ignoreEos: true, logprobs: null, promptLogprobs: null, skipSpecialTokens: true,
    }));
    // prefill (and the first token) outside the measurement
    while (engine.scheduler.running.length < S || engine.scheduler.waiting.length > 0 || (engine.stats().generatedTokens < S)) engine.step();
    times.clear();
    const g0 = engine.stats().generatedTokens;
    let steps = 0;
    const t0 = performance.now();
    while (engine.hasWork && steps < decode - 1) { engine.step(); steps++; }
    const ms = performance.now() - t0;
    const gen = engine.stats().generatedTokens - g0;
    const snap = new Map(times);
    while (engine.hasWork) engine.step();
    const get = (k: string): number => snap.get(k) ?? 0;
    const kernels = [...snap].filter(([k]) => k.startsWith('kernel.')).reduce((a, [, v]) => a + v, 0);
    // derived: forward time outside kernels (JS, allocations), and step time outside the runner and scheduler
    snap.set('forward.non_kernel', get('model.forward') - kernels);
    snap.set('runner.non_forward', get('runner.execute') - get('model.forward') - get('sampler.sample'));
    snap.set('step.outside_runner', ms - get('runner.execute') - get('scheduler.schedule'));
    const share: Record<string, string> = {};
    for (const [k, v] of [...snap].sort((a, b) => b[1] - a[1])) share[k] = `${(100 * v / ms).toFixed(1)}% (${(v / steps).toFixed(2)} ms/step)`;
    process.stdout.write(JSON.stringify({ model, streams: S, threads, prompt: P, steps, decode_tps: gen / (ms / 1000), ms_per_step: ms / steps, share }) + '\n');
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`serve-profile: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
