// Child process: the median of R prefill passes over one prompt (after one untimed pass of the same length), one JSON
// line on stdout. Where run-floe.ts times a single prefill after a 16-token warm-up (what a one-shot CLI call pays),
// this is the steady state of a server's prefill chunks: scratch buffers and packed panels already touched.
//
// usage: node --import tsx bench/prefill-rep.ts <model.gguf | HF dir | models/NAME> <prompt-file> <threads> [reps=7]
import * as fs from 'node:fs';
import { selectBackend } from '../src/backend/select.js';
import { loadModel } from '../src/formats/load.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { defaultKvDtype } from '../src/model/generate.js';
import { KvCache } from '../src/model/kv-cache.js';
import { LlamaModel } from '../src/model/llama.js';

const BLOCK = 16;
const [spec, promptFile, threadsArg, repsArg] = process.argv.slice(2);
if (!spec || !promptFile || !threadsArg) throw new Error('usage: prefill-rep.ts <model> <prompt-file> <threads> [reps]');
const reps = Number(repsArg ?? 7);
const prompt = Int32Array.from(fs.readFileSync(promptFile, 'utf8').trim().split(/\s+/).map(Number));
const backend = selectBackend('native', Number(threadsArg));
const loaded = await loadModel(spec);
backend.prepareWeights?.(loaded.tensors as Map<string, Tensor>);
const model = LlamaModel.fromTensors(loaded.config, loaded.tensors, backend, loaded.ropeFreqFactors);
const cfg = model.config;
const T = prompt.length, numBlocks = Math.ceil(T / BLOCK);
const blockTable = Int32Array.from({ length: numBlocks }, (_, i) => i);
const positions = Int32Array.from({ length: T }, (_, i) => i);
const pass = (): number => {
  const kv = new KvCache(cfg.numLayers, numBlocks, BLOCK, cfg.numKvHeads, cfg.headDim, defaultKvDtype(model));
  const t0 = performance.now();
  model.forward({
    tokens: prompt, positions, slots: positions,
    attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(T), blockTables: blockTable, maxBlocks: numBlocks },
    logitRows: Int32Array.of(T - 1),
  }, kv);
  return performance.now() - t0;
};
pass();
const ms = Array.from({ length: reps }, pass).sort((a, b) => a - b);
process.stdout.write(JSON.stringify({ tokens: T, threads: Number(threadsArg), reps, median_ms: ms[reps >> 1], best_ms: ms[0], prefill_tps: T / (ms[reps >> 1]! / 1000) }) + '\n');
