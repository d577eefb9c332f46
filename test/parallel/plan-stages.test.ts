// floe plan --pipeline-parallel P plans the stages floe runs: its own split (balancedStages: the head counted on stage 0
// when serving, on the last when training), not L / P layers each; each stage's weights, KV and 1F1B activations as
// floe holds them; the fullest stage is the device; the tightest stage bounds the concurrent sequences.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadNativeBackend } from '../../src/backend/native.js';
import { referenceBackend } from '../../src/backend/reference.js';
import type { TrainBackend } from '../../src/backend/backend.js';
import { readHfConfig } from '../../src/formats/hf-config.js';
import { loadModel } from '../../src/formats/load.js';
import { KvCache } from '../../src/model/kv-cache.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { LlamaTrainModel } from '../../src/model/llama-train.js';
import { slotsNeeded } from '../../src/parallel/1f1b.js';
import { openStage } from '../../src/parallel/stage-model.js';
import { balancedStages, formatStages } from '../../src/parallel/stages.js';
import { ALL_LORA_TARGETS, plan, PLAN_DEFAULTS, presetConfig, weightBytes, type PlanOptions } from '../../src/platform/plan.js';
import { initAdapter, loraConfigOf } from '../../src/train/trainer.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const base: PlanOptions = { ...PLAN_DEFAULTS, dtype: 'bf16', context: 131072, concurrency: 1, deviceMemory: 80e9 };

test('serving Llama 3.1 8B on 2 stages: stage 0 holds 15 layers, the embedding and the head (floe\'s split), and is the device', () => {
  const c = presetConfig('llama-3.1-8b');
  const p = plan(c, { ...base, devices: 2, pipelineParallel: 2 });
  assert.equal(formatStages(p.stages), '0-14,15-31');
  const wb = weightBytes(c, 'bf16');
  // before: 16 layers and the larger of embedding and head, 0.6 GB less than the stage floe loads
  assert.equal(p.device.weights, 15 * wb.perLayer + wb.embed + wb.head + wb.norm);
  assert.equal(p.stageDevices[1]!.weights, 17 * wb.perLayer);
  assert.equal(p.fullestStage, 0);
});

test('serving Llama 3.2 1B at 128K on 4 stages: the KV of the 5-layer stages, and the sequences the tightest stage holds', () => {
  const c = presetConfig('llama-3.2-1b');
  const o = { ...base, devices: 4, pipelineParallel: 4, deviceMemory: 24e9 };
  const p = plan(c, o);
  assert.equal(formatStages(p.stages), '0-0,1-5,6-10,11-15');
  const kv5 = KvCache.bytesPerToken(5, c.numKvHeads, c.headDim, 'bf16');
  assert.equal(p.device.kvCache, 131072 * kv5, 'before: 4 layers\' KV (ceil(16 / 4)), a quarter less than a 5-layer stage holds');
  assert.equal(p.layersPerStage, 5);
  // the job takes the least block count any stage holds: one more sequence does not fit on a 5-layer stage
  const n = p.maxConcurrentSequences;
  assert.ok(n > 0);
  assert.equal(plan(c, { ...o, concurrency: n }).device.fits, true);
  assert.equal(plan(c, { ...o, concurrency: n + 1 }).device.fits, false);
});

test('floe-brown on 2 and 3 stages: the planned stages are the ones floe opens, their weights the bytes each stage reads, their KV its pool', async () => {
  const c = readHfConfig(BROWN).config;
  const layerBytes = (m: LlamaModel) => m.weights.layers.reduce((a, l) => a + l.inputNorm.byteLength + l.postNorm.byteLength +
    [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown].reduce((b, t) => b + t.data.byteLength, 0), 0);
  for (const P of [2, 3]) {
    const p = plan(c, { ...base, dtype: 'f32', kvDtype: 'f32', context: 1024, concurrency: 4, devices: P, pipelineParallel: P });
    for (let s = 0; s < P; s++) {
      const st = await openStage(BROWN, s, P, { backend: 'reference' });
      assert.deepEqual(p.stages, st.stages, `P ${P}: floe's split`);
      const m = st.model;
      // stage 0 embeds and runs norm and head (tied: the embedding's table); the others read only their layers
      const edges = s === 0 ? m.weights.embed.data.byteLength + (m.weights.head === m.weights.embed ? 0 : m.weights.head.data.byteLength) + m.weights.norm.byteLength : 0;
      assert.equal(p.stageDevices[s]!.weights, layerBytes(m) + edges, `P ${P} stage ${s} weights`);
      assert.equal(p.stageDevices[s]!.kvCache, 4 * 1024 * KvCache.bytesPerToken(m.weights.layers.length, c.numKvHeads, c.headDim, 'f32'), `P ${P} stage ${s} KV`);
      st.loaded.dispose();
    }
    const totals = p.stageDevices.map((d) => d.total);
    assert.equal(p.device.total, Math.max(...totals));
  }
});

test('pipelined LoRA training: stage s keeps the activations of P - s micro-batches in flight (1F1B), as floe allocates them', async () => {
  const c = readHfConfig(BROWN).config;
  const be = (loadNativeBackend() ?? referenceBackend) as TrainBackend;
  const T = 64, P = 3;
  for (const ckpt of [false, true]) {
    const train = { loraRank: 4, loraTargets: ALL_LORA_TARGETS, microBatch: 1, seqLen: T, checkpointActivations: ckpt, zero: 0 as const };
    const p = plan(c, { ...base, dtype: 'f32', kvDtype: 'f32', devices: P, pipelineParallel: P, train });
    assert.deepEqual(p.stages, balancedStages(c, P, 'last'));
    const one = plan(c, { ...base, dtype: 'f32', kvDtype: 'f32', train }); // one process: one micro-batch's activations
    let oneHeld = 0; // what floe's one-process trainer keeps of them after a step
    {
      const loaded = await loadModel(BROWN);
      const lc = loraConfigOf({ model: BROWN, data: '', out: '', lora: { rank: 4 } });
      const model = LlamaTrainModel.fromTensors(c, loaded.tensors, be, { adapter: initAdapter(c, lc, 1), full: false, checkpointActivations: ckpt }, loaded.ropeFreqFactors);
      const b = { tokens: Int32Array.from({ length: T }, (_, i) => 10 + i), targets: Int32Array.from({ length: T }, (_, i) => 11 + i), positions: Int32Array.from({ length: T }, (_, i) => i), segStart: Int32Array.of(0, T) };
      model.forwardBackward(b, 1 / T);
      oneHeld = model.activationBytes;
      loaded.dispose();
    }
    for (let s = 0; s < P; s++) {
      const loaded = await loadModel(BROWN);
      const lc = loraConfigOf({ model: BROWN, data: '', out: '', lora: { rank: 4 } });
      const model = LlamaTrainModel.fromTensors(c, loaded.tensors, be, { adapter: initAdapter(c, lc, 1), full: false, checkpointActivations: ckpt },
        loaded.ropeFreqFactors, p.stages[s]!);
      const b = { tokens: Int32Array.from({ length: T }, (_, i) => 10 + i), targets: Int32Array.from({ length: T }, (_, i) => 11 + i), positions: Int32Array.from({ length: T }, (_, i) => i), segStart: Int32Array.of(0, T) };
      const D = c.hiddenSize;
      const slots = slotsNeeded(s, P, 8); // a step of 8 micro-batches
      for (let k = 0; k < slots; k++) model.stageForward(k, b, s === 0 ? null : new Float32Array(T * D));
      // floe's saved activations (Acts / checkpointed inputs) plus each slot's input and gradient rows (x, dx)
      const held = model.activationBytes + slots * 2 * T * D * 4;
      const planned = p.stageDevices[s]!.activations;
      const scratch = planned - held;
      assert.ok(scratch > 0, `P ${P} stage ${s} ckpt ${ckpt}: planned ${planned} covers the ${held} bytes floe keeps`);
      // the rest is the step's scratch: the same as one process's beside its one micro-batch, to the byte
      assert.equal(scratch, one.device.activations - oneHeld, `stage ${s} ckpt ${ckpt}: planned ${planned}, floe keeps ${held} + scratch`);
      loaded.dispose();
    }
  }
});
