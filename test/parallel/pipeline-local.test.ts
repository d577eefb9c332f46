// Pipeline stages over the in-process transport: generate() through 2 and 3 stages equals one process bit for bit
// (f32 floe-brown), stage plans, and the KV copy-on-write path.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { join } from 'node:path';
import { generate, generateAsync } from '../../src/model/generate.js';
import { openModel } from '../../src/model/open.js';
import { readHfConfig } from '../../src/formats/hf-config.js';
import { localGroup } from '../../src/parallel/transport.js';
import { openStage } from '../../src/parallel/stage-model.js';
import { PipelineDriver, runStage } from '../../src/parallel/pipeline.js';
import { balancedStages, formatStages, parseStages } from '../../src/parallel/stages.js';
import { repoPath } from '../repo.js';

const MODEL = repoPath('models/floe-brown');

test('stage plans: balanced split gives stage 0 fewer layers (it runs the head); --pipeline-stages is checked', () => {
  const { config } = readHfConfig(MODEL);
  assert.equal(formatStages(balancedStages(config, 2)), '0-1,2-5');
  const three = balancedStages(config, 3);
  assert.equal(three.length, 3);
  assert.equal(three[0]!.start, 0);
  assert.equal(three[2]!.end, config.numLayers);
  for (let i = 1; i < 3; i++) assert.equal(three[i]!.start, three[i - 1]!.end);
  assert.deepEqual(parseStages('0-2,3-5', 6), [{ start: 0, end: 3 }, { start: 3, end: 6 }]);
  assert.throws(() => parseStages('0-2,4-5', 6), /starts at layer 4, expected 3/);
  assert.throws(() => parseStages('0-2,3-4', 6), /covers layers 0-4, the model has 6/);
  assert.throws(() => balancedStages(config, 7), /more than the model's 6 layers/);
});

for (const size of [2, 3]) {
  test(`generate through ${size} in-process stages equals one process (tokens, logprobs, prompt logprobs; f32 bit for bit)`, async () => {
    const single = await openModel(MODEL);
    // a random prompt each run, in the vocabulary
    const V = single.model.config.vocabSize;
    const prompt = Array.from({ length: 5 + Math.floor(Math.random() * 20) }, () => Math.floor(Math.random() * (V - 10)));
    const opts = { maxTokens: 12, sampling: { temperature: 0 }, logprobs: 3, promptLogprobs: 2, stopTokenIds: [] };
    const want = generate(single.model, prompt, opts);

    const group = localGroup(size);
    const opened = await Promise.all(group.map((tr) => openStage(MODEL, tr.rank, size)));
    for (const [r, o] of opened.entries()) assert.equal(o.model.weights.layers.length, o.stages[r]!.end - o.stages[r]!.start);
    assert.ok(opened[0]!.model.weights.layers.length < single.model.config.numLayers, 'rank 0 holds only its layers');
    const stagesDone = group.slice(1).map((tr, i) => runStage(tr, opened[i + 1]!.model));
    const driver = new PipelineDriver(group[0]!, opened[0]!.model);
    const got = await generateAsync(opened[0]!.model, prompt, opts, ({ inp, kv }) => driver.forward(inp, kv));
    await driver.close();
    await Promise.all(stagesDone);
    assert.ok(driver.stats.steps >= opts.maxTokens, `the pipeline ran ${driver.stats.steps} steps`);
    assert.ok(driver.stats.bytesDown > 0 && driver.stats.bytesBack > 0);
    assert.deepEqual(got.outputIds, want.outputIds);
    assert.deepEqual(got.logprobs, want.logprobs);
    assert.deepEqual(got.promptLogprobs, want.promptLogprobs);
  });
}

test('floe serve\'s start-up check of --kv-cache-memory with stages: the budget is per stage, so the fullest stage\'s block must fit', async () => {
  const { preflight } = await import('../../src/serve/server.js');
  const { KvCache } = await import('../../src/model/kv-cache.js');
  const { config: c } = readHfConfig(MODEL);
  const block = (layers: number) => KvCache.bytesPerToken(layers, c.numKvHeads, c.headDim, 'f32') * 16; // f32 floe-brown: an f32 KV cache
  const fullest = Math.max(...balancedStages(c, 2).map((s) => s.end - s.start));
  assert.ok(fullest < c.numLayers);
  // one process needs a block of every layer; the balanced split's fullest stage needs one of its own layers
  assert.throws(() => preflight({ model: MODEL, kvCacheMemory: block(fullest) }), new RegExp(`give at least ${block(c.numLayers)}`));
  assert.doesNotThrow(() => preflight({ model: MODEL, kvCacheMemory: block(fullest), pipeline: { size: 2 } }));
  assert.throws(() => preflight({ model: MODEL, kvCacheMemory: block(fullest) - 1, pipeline: { size: 2 } }),
    new RegExp(`takes ${block(fullest)} bytes on the fullest pipeline stage .*${fullest} layers.*give at least ${block(fullest)}`));
  // explicit stages: 3 layers each
  assert.doesNotThrow(() => preflight({ model: MODEL, kvCacheMemory: block(3), pipeline: { size: 2, stages: '0-2,3-5' } }));
  assert.throws(() => preflight({ model: MODEL, kvCacheMemory: block(3) - 1, pipeline: { size: 2, stages: '0-2,3-5' } }), new RegExp(`give at least ${block(3)}`));
});
