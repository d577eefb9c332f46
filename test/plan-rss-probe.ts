// Child process for test/plan.test.ts: RSS growth from loading a model (every page touched) and filling a KV cache.
// argv: MODEL KV_BYTES; prints {"weights": bytes, "kv": bytes} as measured deltas of the resident set.

import { readFileSync } from 'node:fs';
import { KvCache } from '../src/model/kv-cache.js';
import { loadModel } from '../src/formats/load.js';
import { LlamaModel } from '../src/model/llama.js';
import { referenceBackend } from '../src/backend/reference.js';

const rss = (): number => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]) * 1024;
const [model, kvBytes] = [process.argv[2]!, Number(process.argv[3])];
const r0 = rss();
const loaded = await loadModel(model);
const m = LlamaModel.fromTensors(loaded.config, loaded.tensors, referenceBackend);
let sink = 0;
for (const t of loaded.tensors.values()) for (let i = 0; i < t.data.length; i += 1024) sink += t.data[i]!; // touch every page
const r1 = rss();
const c = m.config;
const perBlock = KvCache.bytesPerToken(c.numLayers, c.numKvHeads, c.headDim, 'f32') * 16;
const kv = new KvCache(c.numLayers, Math.floor(kvBytes / perBlock), 16, c.numKvHeads, c.headDim, 'f32');
for (const l of kv.layers) { l.k.fill(1); l.v.fill(1); }
const r2 = rss();
process.stdout.write(JSON.stringify({ weights: r1 - r0, kv: r2 - r1, kvAllocated: kv.totalBytes, sink: sink > -1 }) + '\n');
