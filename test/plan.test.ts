// floe plan: the planner against public Llama 3.1 figures, against floe's own memory on the built-in model, and the CLI.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { readHfConfig } from '../src/formats/hf-config.js';
import { ALL_LORA_TARGETS, hostMemory, paramCounts, plan, PLAN_DEFAULTS, presetConfig, servingActivationBytes, weightBytes, type Plan, type PlanOptions } from '../src/platform/plan.js';
import { defaultSwapSpace } from '../src/engine/engine.js';
import { grownCapacity } from '../src/model/llama.js';
import { runEach } from './cli/run-each.js';
import { writeRandomGguf } from '../bench/gguf-gen.js';
import { nodeScript, repoPath } from './repo.js';
import { ggufTensor, readGguf } from '../src/formats/gguf.js';
import { writeGguf, type GgufWriteDType } from '../src/formats/gguf-writer.js';
import { dequantizeRow } from '../src/tensor/codecs.js';
import { quantizeTensor } from '../src/tensor/quantize.js';
import type { Tensor } from '../src/tensor/tensor.js';
import type { LlamaModel } from '../src/model/llama.js';
import { makeTinyHf } from './formats/fixtures.js';

const ROOT = repoPath('');
const near = (got: number, want: number, rel: number, what: string) =>
  assert.ok(Math.abs(got - want) <= rel * want, `${what}: got ${got}, expected ${want} ± ${rel * 100}%`);
const base: PlanOptions = { ...PLAN_DEFAULTS, dtype: 'bf16', context: 131072, concurrency: 1, deviceMemory: 80e9 };
const c405 = presetConfig('llama-3.1-405b');

/** Bytes an opened model holds of its weights: every matrix (data and fp8 scales), its f32 norms; `edges` false: its layers only (a later pipeline stage). */
function heldBytes(m: LlamaModel, edges = true): number {
  const w = m.weights, bytes = (t: Tensor) => t.data.byteLength + (t.scale?.byteLength ?? 0);
  return (edges ? bytes(w.embed) + (w.head === w.embed ? 0 : bytes(w.head)) + w.norm.byteLength : 0) +
    w.layers.reduce((a, l) => a + l.inputNorm.byteLength + l.postNorm.byteLength + [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown].reduce((b, t) => b + bytes(t), 0), 0);
}

/** `src` GGUF written again to `out` with the tensors `dtypeOf` names re-encoded in that dtype (the others as they are). */
async function remixGguf(src: string, out: string, dtypeOf: (gname: string) => GgufWriteDType | undefined): Promise<void> {
  const g = await readGguf(src);
  writeGguf(out, g.typed, [...g.tensors.values()].map((info) => {
    const t = ggufTensor(g, info);
    const d = dtypeOf(info.name) ?? t.dtype as GgufWriteDType;
    if (d === t.dtype) return { name: info.name, dtype: d, shape: t.shape, data: t.data };
    const values = new Float32Array(t.numel); // (N, C) whole rows move: Q / K keep llama.cpp's row order
    for (let r = 0; r < t.rows; r++) dequantizeRow(t, r, values.subarray(r * t.cols, (r + 1) * t.cols));
    return { name: info.name, dtype: d, shape: t.shape, data: quantizeTensor(values, t.shape, d).data };
  }));
}

type PlanJson = { options: PlanOptions & { weights?: { matrices?: Record<string, number> } }; cluster: Plan };

test('Llama 3.1 405B: parameters, KV per token and per 128K sequence (public figures)', () => {
  assert.equal(paramCounts(c405).total, 405_853_388_800);
  const p = plan(c405, base);
  assert.equal(p.kvBytesPerToken, 516_096);
  near(p.kvBytesPerToken * 131072, 67.6e9, 0.005, 'KV of one 128K sequence');
  assert.equal(p.device.kvCache, p.kvBytesPerToken * 131072);
});

test('Llama 3.1 405B: FP8 weights ≈ 406 GB, ≈ 50.7 GB per device at tensor-parallel 8', () => {
  const p = plan(c405, { ...base, dtype: 'fp8', devices: 8, tensorParallel: 8 });
  // linears in fp8 (+ per-row f32 scales), embedding and head in bf16: ~1% above one byte per parameter
  near(p.weightBytesTotal, 406e9, 0.015, 'fp8 weights');
  near(p.device.weights, 50.7e9, 0.015, 'fp8 weights per device');
  const wb = weightBytes(c405, 'fp8');
  assert.ok(wb.perLayer * c405.numLayers > 0.97 * p.weightBytesTotal, 'the layers are almost all of it');
  // the KV heads split over TP: 8 kv heads / 8 devices
  assert.equal(p.device.kvCache * 8, p.kvBytesPerToken * 131072);
  assert.ok(p.device.fits);
  assert.equal(plan(c405, { ...base, dtype: 'fp8' }).device.fits, false, 'one 80 GB device cannot hold it');
});

test('Llama 3.1 405B: full fine-tuning state at 16 bytes/parameter ≈ 6.5 TB', () => {
  const p = plan(c405, { ...base, train: { loraRank: null, loraTargets: [], microBatch: 1, seqLen: 1, checkpointActivations: true, zero: 0 } });
  near(p.device.loraParams + p.device.gradients + p.device.optimizer, 6.5e12, 0.01, 'f32 weights + gradients + AdamW m, v');
  assert.equal(p.device.loraParams + p.device.gradients + p.device.optimizer, 16 * 405_853_388_800);
});

test('Llama 3.1 405B: LoRA r64 on all seven projections, FP8 base, 75% offload, ZeRO-3 over 8 devices < 80 GB each', () => {
  const train = { loraRank: 64, loraTargets: ALL_LORA_TARGETS, microBatch: 1, seqLen: 2048, checkpointActivations: true, zero: 3 as const };
  const p = plan(c405, { ...base, dtype: 'fp8', devices: 8, offloadRatio: 0.75, train });
  // r·(N + C) per projection, per layer: 64·(2·32768 + 2·17408 + 3·69632) = 19,791,872
  assert.equal(p.trainableParams, 126 * 19_791_872);
  assert.ok(p.device.total < 80e9, `per device ${p.device.total}`);
  const layers = weightBytes(c405, 'fp8').perLayer; // streamed: 75% of the 126 layers, to the nearest layer, sharded over 8
  assert.equal(p.device.offloaded, Math.round(0.75 * 126) * layers / 8);
  // each part is needed: without the offload, or without sharding, it does not fit
  assert.equal(plan(c405, { ...base, dtype: 'fp8', devices: 8, offloadRatio: 0, train: { ...train, zero: 0 } }).device.fits, false);
  assert.equal(plan(c405, { ...base, dtype: 'fp8', devices: 8, offloadRatio: 0.75, train: { ...train, zero: 0 } }).device.fits, false);
});

test('presets are the HF configs: Llama 3.2 1B parameter count, 8B KV per token', () => {
  assert.equal(paramCounts(presetConfig('llama-3.2-1b')).total, 1_235_814_400);
  assert.equal(paramCounts(presetConfig('llama-3.1-8b')).total, 8_030_261_248);
  assert.equal(paramCounts(presetConfig('llama-3.1-70b')).total, 70_553_706_496);
  assert.equal(plan(presetConfig('llama-3.1-8b'), base).kvBytesPerToken, 131_072);
});

test('max concurrent sequences: the most whose KV and swap space fit in what weights and activations leave', () => {
  const c = presetConfig('llama-3.1-8b');
  const left = (p: Plan) => 40e9 - p.device.weights - p.device.activations;
  const seq = 8192 * plan(c, base).kvBytesPerToken;
  for (const swapSpace of [undefined, 0, 2 ** 30]) {
    const p = plan(c, { ...base, context: 8192, deviceMemory: 40e9, swapSpace });
    const n = p.maxConcurrentSequences;
    const swap = (k: number) => swapSpace ?? defaultSwapSpace(k * seq); // what floe serve takes beside a pool of k sequences
    assert.ok(n * seq + swap(n) <= left(p) && (n + 1) * seq + swap(n + 1) > left(p), `swap ${swapSpace}: ${n} sequences`);
    // so the plan at that concurrency fits, one more does not
    assert.equal(plan(c, { ...base, context: 8192, concurrency: n, deviceMemory: 40e9, swapSpace }).device.fits, true);
    assert.equal(plan(c, { ...base, context: 8192, concurrency: n + 1, deviceMemory: 40e9, swapSpace }).device.fits, false);
  }
  const none = plan(c, { ...base, context: 8192, deviceMemory: 40e9, swapSpace: 0 });
  assert.equal(none.maxConcurrentSequences, Math.floor(left(none) / seq), 'no swap space: KV alone');
  assert.throws(() => plan(c, { ...base, devices: 3, tensorParallel: 2 }), /not a multiple/);
});

test('swap space: serve\'s --swap-space counted per device; default what floe serve takes beside that KV cache; none in a pipeline', async () => {
  const c = presetConfig('llama-3.1-8b');
  for (const context of [1024, 131072]) { // under and over the 4 GiB cap
    const p = plan(c, { ...base, context });
    assert.equal(p.device.swapSpace, defaultSwapSpace(p.device.kvCache));
    assert.equal(p.device.total, p.device.weights + p.device.kvCache + p.device.swapSpace + p.device.activations, 'swap space counted in the total');
  }
  assert.equal(plan(c, { ...base, swapSpace: 0 }).device.swapSpace, 0);
  assert.equal(plan(c, { ...base, swapSpace: 12345 }).device.swapSpace, 12345);
  assert.equal(plan(c, { ...base, devices: 2, pipelineParallel: 2 }).device.swapSpace, 0, 'pipeline stages recompute');
  assert.throws(() => plan(c, { ...base, devices: 2, pipelineParallel: 2, swapSpace: 2 ** 30 }), /--swap-space does not combine with --pipeline-parallel/);
  // the engine floe serve runs, with the KV cache the plan sizes: the same swap space
  const model = `${ROOT}models/floe-brown`;
  const { openModel } = await import('../src/model/open.js');
  const { Engine } = await import('../src/engine/engine.js');
  const o = await openModel(model, { backend: 'reference', tokenizerOptional: true });
  const cfg = readHfConfig(model).config;
  const p = plan(cfg, { ...base, dtype: 'f32', kvDtype: 'f32', context: 1024, concurrency: 3 });
  const e = new Engine(o.model, null, { kvDtype: 'f32', kvCacheMemory: p.device.kvCache });
  assert.equal(e.info.kvTokens, 3 * 1024);
  assert.equal(p.device.swapSpace, e.info.swapSpace);
  o.loaded.dispose();
});

test('hostMemory reads /proc/meminfo', () => {
  assert.deepEqual(hostMemory('MemTotal:       1000 kB\nMemFree: 5 kB\nMemAvailable:    600 kB\n'), { total: 1024000, available: 614400 });
  assert.equal(hostMemory('nothing'), null);
});

test('the plan of the built-in model is floe\'s measured memory: RSS growth for weights + a filled KV cache within 5%', () => {
  const model = `${ROOT}models/floe-brown`;
  const cfg = readHfConfig(model).config;
  // KV large enough that the few MB the JS heap grows while loading stay well inside the 5%
  const kvBudget = 160 * 2 ** 20 + Math.floor(Math.random() * 64 * 2 ** 20);
  const r = spawnSync(process.execPath, [...nodeScript('test/plan-rss-probe.ts'), model, String(kvBudget)], { encoding: 'utf8', timeout: 60_000, cwd: ROOT });
  assert.equal(r.status, 0, r.stderr);
  const m = JSON.parse(r.stdout) as { weights: number; kv: number; kvAllocated: number };
  const p = plan(cfg, { ...base, dtype: 'f32', kvDtype: 'f32', context: m.kvAllocated / (2 * cfg.numLayers * cfg.numKvHeads * cfg.headDim * 4), concurrency: 1 });
  near(m.weights + m.kv, p.device.weights + p.device.kvCache, 0.05, 'measured RSS growth vs planned weights + KV');
});

test('floe plan CLI: table and --json for a preset on a cluster', () => {
  const lora = [['--concurrency', '8'], ['--context', '4096'], ['--kv-dtype', 'fp8'], ['--max-batched-tokens', '64']];
  const bad = [
    [['--swap-space', '4 apples'], /--swap-space: expected a size/], [['--swap-space=-1GiB'], /--swap-space: expected a size/],
    [['--swap-space', '1GiB', '--lora-rank', '8'], /--swap-space is a serving option/],
    [['--swap-space', '1GiB', '--devices', '2', '--pipeline-parallel', '2'], /--swap-space does not combine with --pipeline-parallel/],
    [['--devices', '3', '--tensor-parallel', '2'], /not a multiple/],
  ] as const;
  // all as run() calls of the built CLI in one process (cli/run-each.ts), not a process each (~0.2 s apiece)
  const [j, t, f, d, noLora, ...rest] = runEach([
    ['--preset', 'llama-3.1-405b', '--dtype', 'fp8', '--devices', '8', '--tensor-parallel', '8', '--context', '131072', '--json'],
    ['--preset', 'llama-3.1-8b', '--devices', '2', '--tensor-parallel', '2'],
    // a config.json, its directory: the same model
    ['--model', `${ROOT}models/floe-brown/config.json`, '--lora-rank', '8', '--seq-len', '128', '--json'],
    ['--model', `${ROOT}models/floe-brown`, '--lora-rank', '8', '--seq-len', '128', '--json'],
    ['--preset', 'llama-3.1-8b', '--seq-len', '128'],
    ...lora.map((flag) => ['--preset', 'llama-3.1-8b', '--lora-rank', '8', ...flag]),
    ['--preset', 'llama-3.1-8b', '--full', '--lora-targets', 'q_proj'],
    ...bad.map(([flags]) => ['--preset', 'llama-3.1-8b', ...flags]),
  ].map((a) => ['plan', ...a]));
  assert.equal(j!.status, 0, j!.stderr);
  const out = JSON.parse(j!.stdout);
  assert.equal(out.cluster.parameters.total, 405_853_388_800);
  assert.equal(out.cluster.device.fits, true);
  assert.ok(out.this_machine === null || out.this_machine.memory_total > 0);
  assert.equal(t!.status, 0, t!.stderr);
  assert.match(t!.stdout, /per device/);
  assert.match(t!.stdout, /max concurrent sequences at 131072 tokens/);
  assert.equal(f!.status, 0, f!.stderr);
  assert.deepEqual(JSON.parse(f!.stdout).cluster, JSON.parse(d!.stdout).cluster);
  assert.equal(JSON.parse(f!.stdout).cluster.mode, 'lora');
  assert.equal(noLora!.status, 2, 'a training flag without --lora-rank / --full');
  for (const [i, flag] of lora.entries()) {
    const r = rest[i]!;
    assert.equal(r.status, 2, `${flag[0]} with --lora-rank is not silently ignored`);
    assert.match(r.stderr, new RegExp(`${flag[0]} is a serving option`));
  }
  const lt = rest[lora.length]!;
  assert.equal(lt.status, 2);
  assert.match(lt.stderr, /--lora-targets/);
  for (const [i, [flags, err]] of bad.entries()) {
    const r = rest[lora.length + 1 + i]!;
    assert.equal(r.status, 2, flags.join(' '));
    assert.match(r.stderr, err);
  }
});

// Before, plan took what floe would refuse: a --context or --seq-len past the model's context ("fits: yes" for a
// floe-brown --seq-len 5000 that finetune refuses), a --lora-rank past the hidden size, and planned a fine-tuning step
// at 2048 tokens by default on floe-brown (context 1024), where finetune's default is min(2048, context).
test('floe plan CLI: sequences past the model\'s context and a LoRA rank past its hidden size are refused; the default --seq-len is finetune\'s', () => {
  const brown = `${ROOT}models/floe-brown`; // context 1024, hidden 256
  const [ctx, seq, rank, def, preset] = runEach([
    ['--model', brown, '--context', '1025'],
    ['--model', brown, '--lora-rank', '8', '--seq-len', '5000'],
    ['--model', brown, '--lora-rank', '257'],
    ['--model', brown, '--lora-rank', '8', '--json'],
    ['--preset', 'llama-3.1-8b', '--context', '1000000'],
  ].map((a) => ['plan', ...a]));
  for (const [r, re] of [[ctx, /--context 1025 exceeds the model's context of 1024 tokens; give at most 1024/], [seq, /--seq-len 5000 exceeds the model's context of 1024/],
    [rank, /--lora-rank 257 is above the hidden size \(256\)/], [preset, /--context 1000000 exceeds the model's context of 131072/]] as const) {
    assert.equal(r!.status, 2, r!.stderr);
    assert.match(r!.stderr, re);
  }
  assert.equal(def!.status, 0, def!.stderr);
  assert.equal(JSON.parse(def!.stdout).options.train.seqLen, 1024);
});

test('floe plan CLI: the swap space floe serve takes, in the table and --json, counted in the total', () => {
  // run() calls of the built CLI in one process (cli/run-each.ts), not a process each
  const [j, g, none, t] = runEach([['--json'], ['--swap-space', '1GiB', '--json'], ['--swap-space', '0', '--json'], []]
    .map((a) => ['plan', '--preset', 'llama-3.1-8b', '--context', '8192', '--concurrency', '2', ...a]));
  type Out = { options: PlanOptions; cluster: Plan; this_machine: { plan: Plan } | null };
  assert.equal(j.status, 0, j.stderr);
  const d = (JSON.parse(j!.stdout) as Out).cluster.device;
  assert.equal(d.swapSpace, defaultSwapSpace(d.kvCache));
  assert.equal(d.total, d.weights + d.kvCache + d.swapSpace + d.activations);
  const local = (JSON.parse(j!.stdout) as Out).this_machine;
  if (local) assert.equal(local.plan.device.swapSpace, defaultSwapSpace(local.plan.device.kvCache));
  const given = JSON.parse(g!.stdout) as Out;
  assert.equal(given.options.swapSpace, 2 ** 30);
  assert.equal(given.cluster.device.swapSpace, 2 ** 30);
  assert.equal((JSON.parse(none!.stdout) as Out).cluster.device.swapSpace, 0);
  assert.equal(t!.status, 0, t!.stderr);
  assert.match(t!.stdout, new RegExp(`^swap space +${(d.swapSpace / 1e9).toFixed(2)} GB`, 'm'));
});

test('floe plan --model with no --dtype / --kv-dtype plans what floe loads: the stored dtype, its default KV cache, the bytes it holds', async () => {
  const { openModel } = await import('../src/model/open.js');
  const { defaultKvDtype } = await import('../src/model/generate.js');
  const { KvCache } = await import('../src/model/kv-cache.js');
  // a q8_0 GGUF (every weight q8_0, as llama.cpp's --outtype q8_0 writes them)
  const q8 = join(mkdtempSync(join(tmpdir(), 'floe-plan-q8-')), 'q8.gguf');
  writeRandomGguf({ ...readHfConfig(repoPath('test/fixtures/models/gqa_f32')).config, vocabSize: 320, hiddenSize: 64, intermediateSize: 96 }, 'q8_0', q8);
  const cases = [
    ['models/floe-brown', [], 'f32', 0], // f32: an f32 KV cache, 4 bytes a weight
    ['models/floe-brown', ['--dtype', 'fp8'], 'fp8', 0], // --dtype fp8 keeps the f32 embedding
    ['models/floe-brown', ['--dtype', 'bf16'], 'bf16', 0], // --dtype bf16 converts linears, embedding and head
    ['test/fixtures/models/bf16', [], 'bf16', 0],
    ['test/fixtures/models/fp8_block', [], 'fp8', 0], // 128×128 block scales (quantization_config)
    // --dtype bf16 converts only f32 / f16 weights: fp8 and q8_0 checkpoints are held as stored
    ['test/fixtures/models/fp8_block', ['--dtype', 'bf16'], 'bf16', 0],
    [q8, [], 'q8_0', 0],
    [q8, ['--dtype', 'bf16'], 'bf16', 0],
  ] as const;
  for (const [at, flags, dtype, tol] of cases) {
    const dir = at.startsWith('/') ? at : `${ROOT}${at}`;
    const r = spawnSync(process.execPath, [`${ROOT}bin/floe.js`, 'plan', '--model', dir, ...flags, '--json'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { options: PlanOptions; cluster: { device: { weights: number }; kvBytesPerToken: number } };
    assert.equal(j.options.dtype, dtype, `${dir} ${flags.join(' ')}`);
    const o = await openModel(dir, { backend: 'reference', tokenizerOptional: true, load: flags.length ? { dtype: flags[1] as 'fp8' | 'bf16' } : undefined });
    const c = o.model.config;
    assert.equal(j.options.kvDtype, defaultKvDtype(o.model), `${dir}: the KV dtype floe picks`);
    assert.equal(j.cluster.kvBytesPerToken, KvCache.bytesPerToken(c.numLayers, c.numKvHeads, c.headDim, defaultKvDtype(o.model)));
    near(j.cluster.device.weights, heldBytes(o.model), tol, `${dir} ${flags.join(' ')}: planned weights vs the bytes floe holds`);
    o.loaded.dispose();
  }
  rmSync(dirname(q8), { recursive: true, force: true });
});

// Before, plan took one tensor's dtype (the first layer's q projection) for every weight: a q8_0 GGUF with an f16
// embedding, an f32 head and an f16 layer, as llama.cpp's quantizations leave many, was planned all q8_0 (and with
// --dtype bf16 still all q8_0, though the loader converts its f16 / f32 matrices): here 110 kB planned, 224 kB held.
test('floe plan --model on a GGUF of mixed dtypes plans the bytes floe holds of each tensor: as stored, --dtype bf16 and fp8, per pipeline stage', async () => {
  const { openModel } = await import('../src/model/open.js');
  const { openStage } = await import('../src/parallel/stage-model.js');
  const dir = mkdtempSync(join(tmpdir(), 'floe-plan-mixed-'));
  const q8 = join(dir, 'q8.gguf'), mixed = join(dir, 'mixed.gguf');
  writeRandomGguf({ ...readHfConfig(repoPath('test/fixtures/models/gqa_f32')).config, vocabSize: 320, hiddenSize: 64, intermediateSize: 96 }, 'q8_0', q8);
  // q8_0 layer 0 but its down projection (bf16) and attention norm (f16), layer 1 in f16, an f16 embedding, an f32 head
  await remixGguf(q8, mixed, (n) => (n === 'token_embd.weight' || n.startsWith('blk.1.') && !n.includes('norm') || n === 'blk.0.attn_norm.weight' ? 'f16'
    : n === 'output.weight' ? 'f32' : n === 'blk.0.ffn_down.weight' ? 'bf16' : undefined));
  const runs = runEach([[], ['--dtype', 'bf16'], ['--dtype', 'fp8'], ['--devices', '2', '--pipeline-parallel', '2'], ['--dtype', 'bf16', '--offload-ratio', '0.5']]
    .flatMap((f) => [['plan', '--model', mixed, ...f, '--json'], ['plan', '--model', mixed, ...f]]));
  for (const r of runs) assert.equal(r.status, 0, r.stderr);
  const [stored, bf16, fp8, staged, streamed] = [0, 2, 4, 6, 8].map((i) => JSON.parse(runs[i]!.stdout) as PlanJson);
  for (const [j, load] of [[stored, undefined], [bf16, 'bf16'], [fp8, 'fp8']] as const) {
    const o = await openModel(mixed, { backend: 'reference', tokenizerOptional: true, load: load && { dtype: load } });
    near(j!.cluster.device.weights, heldBytes(o.model), 0, `--dtype ${load}: planned weights vs the bytes floe holds`);
    assert.equal(j!.cluster.weightBytesTotal, heldBytes(o.model));
    o.loaded.dispose();
  }
  assert.deepEqual(stored!.options.weights?.matrices, { f16: 8, q8_0: 6, bf16: 1, f32: 1 }, 'the matrices as the file holds them');
  assert.match(runs[1]!.stdout, /weights [\d.]+ kB in mixed \(f16 ×8, q8_0 ×6, bf16 ×1, f32 ×1\);/);
  assert.deepEqual(bf16!.options.weights?.matrices, { bf16: 10, q8_0: 6 });
  assert.match(runs[3]!.stdout, /in mixed \(bf16 ×10, q8_0 ×6\) \(as stored: --dtype bf16 converts only f32 \/ f16 weights\);/);
  assert.deepEqual(fp8!.options.weights?.matrices, { fp8_e4m3: 14, f16: 1, f32: 1 }, 'fp8 converts the linears only');
  // each stage's own layers: layer 0 (q8_0 mostly) and the tables on stage 0, the f16 layer 1 on stage 1
  for (let s = 0; s < 2; s++) {
    const st = await openStage(mixed, s, 2, { backend: 'reference' });
    assert.deepEqual(staged!.cluster.stages, st.stages);
    assert.equal(staged!.cluster.stageDevices[s]!.weights, heldBytes(st.model, s === 0), `stage ${s} weights`);
    st.loaded.dispose();
  }
  // one of the two layers streamed (streamedLayerSet: layer 1), staged in slots the size of the larger layer
  const w = streamed!.options.weights as unknown as { layers: number[]; embed: number; head: number; norm: number };
  assert.equal(streamed!.cluster.device.offloaded, w.layers[1]);
  assert.equal(streamed!.cluster.device.weights, w.embed + w.head + w.norm + w.layers[0]! + Math.max(...w.layers));
  rmSync(dir, { recursive: true, force: true });
});

// Before, an HF checkpoint's dtype was its first q projection's: an f32 checkpoint with a bf16 embedding, an f16 head
// and a bf16 layer was planned all f32: here 296 kB planned, 210 kB held.
test('floe plan --model on safetensors of mixed dtypes plans the bytes floe holds of each tensor: as stored, --dtype bf16 and fp8', async () => {
  const { openModel } = await import('../src/model/open.js');
  const tiny = makeTinyHf({ vocab: 96, hidden: 64, ffn: 96, layers: 2, seed: 3,
    dtypeOf: (n) => (n === 'model.embed_tokens.weight' || n.startsWith('model.layers.1.') ? 'BF16' : n === 'lm_head.weight' ? 'F16' : undefined) });
  const runs = runEach([[], ['--dtype', 'bf16'], ['--dtype', 'fp8']].map((f) => ['plan', '--model', tiny.dir, ...f, '--json']));
  for (const [i, load] of ([undefined, 'bf16', 'fp8'] as const).entries()) {
    assert.equal(runs[i]!.status, 0, runs[i]!.stderr);
    const j = JSON.parse(runs[i]!.stdout) as PlanJson;
    const o = await openModel(tiny.dir, { backend: 'reference', tokenizerOptional: true, load: load && { dtype: load } });
    near(j.cluster.device.weights, heldBytes(o.model), 0, `--dtype ${load}: planned weights vs the bytes floe holds`);
    o.loaded.dispose();
  }
  assert.deepEqual((JSON.parse(runs[0]!.stdout) as PlanJson).options.weights?.matrices, { f32: 7, bf16: 8, f16: 1 });
  assert.equal((JSON.parse(runs[0]!.stdout) as PlanJson).options.kvDtype, 'f32', 'layer 0\'s q projection is f32: the engine\'s f32 KV cache');
  rmSync(tiny.dir, { recursive: true, force: true });
});

test('serving activations cover the workspace any history of steps of at most T tokens leaves (it grows geometrically)', () => {
  const c = readHfConfig(repoPath('test/fixtures/models/gqa_f32')).config;
  const perToken = 4 * (3 * c.hiddenSize + 2 * c.numHeads * c.headDim + 2 * c.numKvHeads * c.headDim + 2 * c.intermediateSize);
  for (const T of [1, 2, 7, 64, 512, 3000, 8192]) {
    const planned = servingActivationBytes(c, T, 1) - 4 * c.vocabSize;
    let worst = 0;
    for (let h = 0; h < 200; h++) {
      let cap = 0;
      for (let k = 0; k < 12; k++) cap = grownCapacity(cap, 1 + Math.floor(Math.random() * T));
      worst = Math.max(worst, cap);
    }
    worst = Math.max(worst, grownCapacity(grownCapacity(0, T - 1 || 1), T)); // T - 1 tokens, then T: the largest
    assert.ok(worst * perToken <= planned, `T=${T}: a workspace of ${worst} tokens, planned ${planned / perToken}`);
    assert.equal(planned, worst * perToken, `T=${T}: the plan is the largest such workspace, not more`);
  }
});
