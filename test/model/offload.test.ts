// Streamed layers (model/offload.ts): generation and LoRA gradients bit for bit equal to the resident model, the native
// reader thread really ran, and the layer choice follows the memory budget.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadAddon } from '../../src/backend/native-addon.js';
import { selectBackend } from '../../src/backend/select.js';
import type { TrainBackend } from '../../src/backend/backend.js';
import { loadModel } from '../../src/formats/load.js';
import { generate } from '../../src/model/generate.js';
import { LlamaTrainModel, type PackedBatch } from '../../src/model/llama-train.js';
import { diskChunkBytes, LayerStream, streamedLayerSet, type OffloadOptions } from '../../src/model/offload.js';
import { openModel } from '../../src/model/open.js';
import { rand } from '../engine/helpers.js';
import { randomAdapter } from './lora-helpers.js';
import { repoPath } from '../repo.js';

const ROOT = repoPath('');
const BROWN = `${ROOT}models/floe-brown`; // f32, 6 layers
const BF16 = `${ROOT}test/fixtures/models/bf16`; // bf16, 2 layers
const native = loadAddon() !== null;
const readers: OffloadOptions['reader'][] = native ? ['native', 'sync'] : ['sync'];

function gen(model: Awaited<ReturnType<typeof openModel>>['model'], prompt: number[]) {
  const r = generate(model, prompt, { maxTokens: 12, sampling: { temperature: 0 }, logprobs: 4, promptLogprobs: 4, prefillChunk: 5 });
  return { ids: r.outputIds, logprobs: r.logprobs, promptLogprobs: r.promptLogprobs };
}

/**
 * The resident model in the file's layout: a model with streamed layers keeps every weight in the file layout
 * (open.ts skips prepareWeights), and the repacked decode layouts sum in another order.
 */
async function openResident(dir: string, opts: Parameters<typeof openModel>[1]): ReturnType<typeof openModel> {
  const prev = process.env.FLOE_R16_REPACK;
  process.env.FLOE_R16_REPACK = '0';
  try {
    return await openModel(dir, opts);
  } finally {
    if (prev === undefined) delete process.env.FLOE_R16_REPACK;
    else process.env.FLOE_R16_REPACK = prev;
  }
}

function streamCount(): number {
  return loadAddon()?.counters()['stream.read.native'] ?? 0;
}

describe('streamed layers: generation equals the resident model bit for bit', () => {
  for (const [name, dir, V] of [['f32', BROWN, 4096], ['bf16', BF16, 256]] as const) {
    for (const reader of readers) {
      for (const offload of [{ offloadRatio: 0.5, ringSlots: 2 }, { offloadRatio: 1 }] as OffloadOptions[]) {
        it(`${name}, ${reader} reader, ${JSON.stringify(offload)}`, async () => {
          const r = rand(Math.floor(Math.random() * 1e9));
          const prompt = Array.from({ length: 7 + Math.floor(r() * 9) }, () => Math.floor(r() * V));
          const resident = await openResident(dir, { backend: 'native', tokenizerOptional: true });
          const before = streamCount();
          const streamed = await openModel(dir, { backend: 'native', tokenizerOptional: true, offload: { ...offload, reader } });
          const st = streamed.model.layerStream!;
          assert.equal(st.readerKind, reader);
          const L = resident.model.config.numLayers;
          assert.equal(st.stats.streamedLayers, Math.round(L * offload.offloadRatio!));
          assert.deepEqual(gen(streamed.model, prompt), gen(resident.model, prompt));
          assert.ok(st.stats.layerReads > 0 && st.stats.bytesRead > 0, 'layers were read from disk');
          if (reader === 'native') assert.ok(streamCount() > before, 'the native reader thread ran');
          st.dispose();
        });
      }
    }
  }

  it('--dtype fp8: streamed layers are quantized one tensor at a time into a spill file, resident ones in place', async () => {
    const prompt = [5, 17, 300, 9, 44, 1200];
    const resident = await openResident(BROWN, { backend: 'native', tokenizerOptional: true, load: { dtype: 'fp8' } });
    const streamed = await openModel(BROWN, { backend: 'native', tokenizerOptional: true, load: { dtype: 'fp8' }, offload: { offloadRatio: 0.5 } });
    assert.equal(streamed.model.weights.layers[1]!.wq.dtype, 'fp8_e4m3');
    assert.equal(streamed.model.layerStream!.stats.layerBytes, 256 * 256 * 2 + 128 * 256 * 2 + 3 * 256 * 704, 'slots sized for fp8, not f32');
    assert.deepEqual(gen(streamed.model, prompt), gen(resident.model, prompt));
    streamed.model.layerStream!.dispose();
  });
});

describe('a plan that streams no layer opens the resident model, repacked for decode', () => {
  const layouts = (m: Awaited<ReturnType<typeof openModel>>['model']) =>
    [...m.weights.layers.flatMap((l) => [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown]), m.weights.head].map((t) => `${t.dtype}/${t.layout}`);
  const gemvR16 = () => loadAddon()?.counters()['matmul.path.gemv_r16.avx512'] ?? 0;
  const r16 = native && loadAddon()!.isa() === 'avx512' && process.env.FLOE_R16_REPACK !== '0';
  for (const [name, dir, load] of [['bf16', BF16, undefined], ['f32 --dtype fp8', BROWN, { dtype: 'fp8' }]] as const) {
    for (const offload of [{ weightsMemory: 1 << 30 }, { offloadRatio: 0 }] as OffloadOptions[]) {
      it(`${name}, ${JSON.stringify(offload)}: no layer stream, the plain open's layouts, logits bit for bit`, async () => {
        const prompt = [5, 17, 30, 9, 44, 120];
        const plain = await openModel(dir, { backend: 'native', tokenizerOptional: true, load });
        const opened = await openModel(dir, { backend: 'native', tokenizerOptional: true, load, offload });
        assert.equal(opened.model.layerStream, null, 'every layer fits: nothing is streamed');
        assert.deepEqual(layouts(opened.model), layouts(plain.model));
        if (r16) assert.ok(layouts(opened.model).slice(0, -1).every((l) => l.endsWith('r16')), layouts(opened.model).join(','));
        const before = gemvR16();
        const got = gen(opened.model, prompt);
        if (r16) assert.ok(gemvR16() > before, 'decode ran the repacked GEMV');
        assert.deepEqual(got, gen(plain.model, prompt));
      });
    }
  }
});

describe('streamed layers: a LoRA step\'s gradients equal the resident model\'s bit for bit', () => {
  for (const ckpt of [false, true]) {
    for (const reader of readers) {
      it(`checkpointActivations ${ckpt}, ${reader} reader`, async () => {
        const be = selectBackend('native') as unknown as TrainBackend;
        const seed = Math.floor(Math.random() * 1e9);
        const make = async (offload: OffloadOptions | null) => {
          const loaded = await loadModel(BROWN);
          const stream = offload ? LayerStream.open(loaded, offload) : null;
          const base = await openModel(BROWN, { backend: 'native', tokenizerOptional: true });
          const adapter = randomAdapter(base.model, seed, 4);
          const m = LlamaTrainModel.fromTensors(loaded.config, loaded.tensors, be, { adapter, full: false, checkpointActivations: ckpt });
          if (stream) m.attachStream(stream);
          return { m, stream };
        };
        const r = rand(seed);
        const T = 24;
        const tokens = Int32Array.from({ length: T }, () => Math.floor(r() * 4096));
        const targets = Int32Array.from({ length: T }, (_, i) => (i % 5 === 0 ? -1 : Math.floor(r() * 4096)));
        const positions = Int32Array.from({ length: T }, (_, i) => (i < 10 ? i : i - 10));
        const b: PackedBatch = { tokens, targets, positions, segStart: Int32Array.from([0, 10, T]) };
        const a = await make(null);
        const s = await make({ offloadRatio: 0.5, reader });
        const short: PackedBatch = { tokens: tokens.subarray(0, 10), targets: targets.subarray(0, 10), positions: positions.subarray(0, 10), segStart: Int32Array.from([0, 10]) };
        for (let step = 0; step < 2; step++) { // the second step starts where the ring was left, with a shorter batch
          const bb = step === 0 ? b : short;
          a.m.zeroGrad(); s.m.zeroGrad();
          const ra = a.m.forwardBackward(bb, 1 / 19);
          const rs = s.m.forwardBackward(bb, 1 / 19);
          assert.equal(rs.lossSum, ra.lossSum);
          assert.equal(s.m.params.length, a.m.params.length);
          a.m.params.forEach((p, i) => assert.deepEqual(s.m.params[i]!.grad, p.grad, `${p.name} step ${step}`));
        }
        assert.equal(s.m.evalLoss(b).lossSum, a.m.evalLoss(b).lossSum);
        assert.ok(s.stream!.stats.layerReads >= 3);
        s.stream!.dispose();
      });
    }
  }

  it('full fine-tuning refuses a stream (its weights are trained in memory)', async () => {
    const loaded = await loadModel(BF16);
    const stream = LayerStream.open(loaded, { offloadRatio: 0.5 });
    const m = LlamaTrainModel.fromTensors(loaded.config, loaded.tensors, selectBackend('reference') as unknown as TrainBackend, { adapter: null, full: true, checkpointActivations: false });
    assert.throws(() => m.attachStream(stream), /frozen base/);
    stream.dispose();
  });
});

describe('layer choice', () => {
  it('pread size follows the disk (sysfs), within [1, 32] MiB', () => {
    const c = diskChunkBytes(`${BROWN}/model.safetensors`);
    assert.ok(c >= 1 << 20 && c <= 32 << 20 && c % 4096 === 0, `chunk ${c}`);
  });

  it('spreads the streamed layers evenly', () => {
    assert.deepEqual(streamedLayerSet(6, 3), [false, true, false, true, false, true]);
    assert.deepEqual(streamedLayerSet(4, 4), [true, true, true, true]);
    assert.equal(streamedLayerSet(126, 95).filter(Boolean).length, 95);
  });

  it('weightsMemory keeps as many layers resident as fit beside embedding, head, norms and the ring', async () => {
    const loaded = await loadModel(BROWN);
    const perLayer = 4 * (256 * 256 * 2 + 128 * 256 * 2 + 3 * 256 * 704); // f32 linears of one layer (all 64-byte multiples)
    const other = 4 * (4096 * 256 + 256 + 6 * 2 * 256); // tied embedding, final norm, 12 layer norms
    const resident = 2;
    const s = LayerStream.open(loaded, { weightsMemory: other + 3 * perLayer + resident * perLayer + perLayer / 2, reader: 'sync' });
    assert.equal(s.stats.streamedLayers, 6 - resident);
    assert.equal(s.stats.layerBytes, perLayer);
    assert.equal(s.stats.residentBytes, other + resident * perLayer);
    assert.throws(() => LayerStream.open(loaded, { weightsMemory: other + 2 * perLayer }), /below the minimum/);
    s.dispose();
  });

  it('a budget that holds every layer streams none, even a model with fewer layers than the ring has slots', async () => {
    const loaded = await loadModel(BF16); // 2 layers, 3 slots: the ring alone is bigger than the layers
    const whole = LayerStream.open(loaded, { offloadRatio: 0, reader: 'sync' }).stats.residentBytes;
    assert.equal(LayerStream.open(loaded, { weightsMemory: whole, reader: 'sync' }).stats.streamedLayers, 0);
    assert.throws(() => LayerStream.open(loaded, { weightsMemory: whole - 1, reader: 'sync' }), new RegExp(`below the minimum ${whole} .*all 2 layers`));
  });
});

describe('streamed layers in the serving engine', () => {
  it('12 concurrent greedy requests (chunked prefill + batched decode) give the resident engine\'s tokens', async () => {
    const { Engine } = await import('../../src/engine/engine.js');
    const { genReq, randomPrompt, runAll } = await import('../engine/helpers.js');
    const dir = BROWN; // 6 layers: 4 streamed through 2 slots, so every step reads
    const r = rand(Math.floor(Math.random() * 1e9));
    const reqs = Array.from({ length: 12 }, (_, i) => genReq(`r${i}`, randomPrompt(r, 1 + Math.floor(r() * 60)), { maxTokens: 1 + Math.floor(r() * 16), ignoreEos: true }));
    const run = async (offload: OffloadOptions | undefined) => {
      const m = await openModel(dir, { backend: 'native', tokenizerOptional: true, offload });
      const engine = new Engine(m.model, null, { kvDtype: 'f32', maxBatchedTokens: 40, maxNumSeqs: 8 });
      for (const q of reqs) engine.add(q);
      const { byId } = runAll(engine);
      return { tokens: reqs.map((q) => byId.get(q.id)!.tokens[0]), reads: m.model.layerStream?.stats.layerReads ?? 0 };
    };
    const a = await run(undefined);
    const b = await run({ offloadRatio: 0.67, ringSlots: 2 });
    assert.deepEqual(b.tokens, a.tokens);
    assert.ok(b.reads >= 4 * 10, `layer reads ${b.reads}`);
  });
});
