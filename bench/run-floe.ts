// Child process: floe prefill + greedy decode timings, one JSON line on stdout.
//
// usage: node --import tsx bench/run-floe.ts <model.gguf | HF dir> <prompt-file> <threads> <decode-steps>
//                                            [--logits-out F] [--backend native|reference] [--prefill-reps R]
// --prefill-reps R: the prefill figure is the median of R passes after an untimed one of the whole prompt (the steady
// state of a server's prefill chunks: scratch buffers and packed panels already touched), where by default it is one
// pass after a 16-token warm-up (what a one-shot CLI call pays); prefill_best_ms is then the fastest pass.
// T tokens, V vocab. The loop is generate()'s: one prefill step over the prompt, then one token per step.

import * as fs from 'node:fs';
import { selectBackend, type BackendName } from '../src/backend/select.js';
import { loadModel } from '../src/formats/load.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { defaultKvDtype } from '../src/model/generate.js';
import { KvCache } from '../src/model/kv-cache.js';
import { LlamaModel } from '../src/model/llama.js';

const BLOCK = 16;

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const flag = (name: string): string | undefined => {
    const i = args.indexOf(name);
    if (i < 0) return undefined;
    const v = args[i + 1];
    args.splice(i, 2);
    return v;
  };
  const logitsOut = flag('--logits-out');
  const backendName = (flag('--backend') ?? 'native') as BackendName;
  const prefillReps = Number(flag('--prefill-reps') ?? 0);
  const [spec, promptFile, threadsArg, decodeArg] = args;
  if (!spec || !promptFile || !threadsArg || !decodeArg) throw new Error('usage: run-floe.ts <model.gguf | HF dir> <prompt-file> <threads> <decode-steps>');
  const threads = Number(threadsArg);
  const decode = Number(decodeArg);
  const prompt = Int32Array.from(fs.readFileSync(promptFile, 'utf8').trim().split(/\s+/).map(Number));

  const t0 = performance.now();
  const backend = selectBackend(backendName, backendName === 'native' ? threads : undefined);
  const loaded = await loadModel(spec);
  backend.prepareWeights?.(loaded.tensors as Map<string, Tensor>); // as openModel does: q8_0 → q8_0r16 on AVX-512
  const model = LlamaModel.fromTensors(loaded.config, loaded.tensors, backend, loaded.ropeFreqFactors);
  const loadMs = performance.now() - t0;
  const cfg = model.config;
  const total = prompt.length + decode + 1;
  const numBlocks = Math.ceil(total / BLOCK);
  const blockTable = Int32Array.from({ length: numBlocks }, (_, i) => i);
  const kvDtype = defaultKvDtype(model);
  const newCache = (): KvCache => new KvCache(cfg.numLayers, numBlocks, BLOCK, cfg.numKvHeads, cfg.headDim, kvDtype);

  // tokens (T) at positions start.. ; identity block table so slot == position
  const step = (kv: KvCache, tokens: Int32Array, start: number): Float32Array => {
    const T = tokens.length;
    const positions = Int32Array.from({ length: T }, (_, i) => start + i);
    return model.forward({
      tokens, positions, slots: positions,
      attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(start + T), blockTables: blockTable, maxBlocks: numBlocks },
      logitRows: Int32Array.of(T - 1),
    }, kv);
  };

  // warm-up outside the timed region: page-in of mapped weights, thread pool start (with --prefill-reps, the whole prompt)
  step(newCache(), prefillReps > 0 ? prompt : prompt.subarray(0, Math.min(16, prompt.length)), 0);

  const passes: number[] = [];
  let kv = newCache(), logits0: Float32Array = new Float32Array(0);
  for (let i = 0; i < Math.max(1, prefillReps); i++) {
    kv = newCache();
    const p0 = performance.now();
    logits0 = step(kv, prompt, 0);
    passes.push(performance.now() - p0);
  }
  passes.sort((a, b) => a - b);
  const prefillMs = passes[passes.length >> 1]!;
  if (logitsOut) fs.writeFileSync(logitsOut, new Uint8Array(logits0.buffer, logits0.byteOffset, logits0.byteLength));

  const tokens = [argmax(logits0)];
  const one = new Int32Array(1);
  const d0 = performance.now();
  for (let i = 0; i < decode; i++) {
    one[0] = tokens[tokens.length - 1]!;
    tokens.push(argmax(step(kv, one, prompt.length + i)));
  }
  const decodeMs = performance.now() - d0;

  const out = {
    engine: 'floe',
    backend: backend.name,
    threads,
    kv_dtype: kvDtype,
    prompt_tokens: prompt.length,
    decode_steps: decode,
    load_ms: loadMs,
    prefill_ms: prefillMs,
    ...(prefillReps > 0 ? { prefill_reps: prefillReps, prefill_best_ms: passes[0] } : {}),
    decode_ms: decodeMs,
    prefill_tps: prompt.length / (prefillMs / 1000),
    decode_tps: decode > 0 ? decode / (decodeMs / 1000) : 0,
    tokens: tokens.slice(0, 16),
  };
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`run-floe: ${(e as Error).message}\n`);
  process.exit(1);
});
