// readPeftAdapter(dir, config) / applyAdapter(model, dir) called from JavaScript with a wrong argument: each fails naming
// the argument and what it needs. Before, readPeftAdapter(dir) without a config threw "Cannot read properties of
// undefined (reading 'numLayers')" from inside the reader.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as floe from '../../src/index.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const ADAPTER = repoPath('models/floe-brown-tools'); // a LoRA of floe-brown
const read = floe.readPeftAdapter as (...args: unknown[]) => ReturnType<typeof floe.readPeftAdapter>;
const apply = floe.applyAdapter as (...args: unknown[]) => ReturnType<typeof floe.applyAdapter>;

test('readPeftAdapter: a missing or wrong argument is a TypeError naming it, not a raw property read', async () => {
  const loaded = await floe.loadModel(BROWN);
  const cfg = loaded.config;
  const cases: [unknown[], RegExp][] = [
    [[ADAPTER], /config is missing: pass the LlamaConfig of the base model .*\.model\.config/],
    [[ADAPTER, null], /config is missing/],
    [[ADAPTER, 'floe-brown'], /config must be the base model's LlamaConfig, got 'floe-brown' \(a string\)/],
    [[ADAPTER, {}], /config\.numLayers must be a positive integer, got undefined/],
    [[ADAPTER, { ...cfg, headDim: '32' }], /config\.headDim must be a positive integer, got '32' \(a string\)/],
    [[ADAPTER, loaded], /config must be a LlamaConfig, got an object \(Object\): pass its \.config/],
    [[], /dir must be the path of a PEFT adapter directory .*got undefined/],
    [[cfg, ADAPTER], /dir must be the path of a PEFT adapter directory .*got an object/],
  ];
  for (const [args, want] of cases) {
    assert.throws(() => read(...args), (e: Error) => {
      assert.ok(e instanceof TypeError, `${args.length} args: ${e.stack}`);
      assert.match(e.message, want);
      assert.doesNotMatch(e.message, /Cannot read properties/);
      return true;
    });
  }
  // the directory is named where the config is the wrong argument
  assert.throws(() => read(ADAPTER), (e: Error) => e.message.startsWith(`readPeftAdapter('${ADAPTER}', config)`));
  // a directory that holds no adapter, with a config: the reader names the file it looked for
  assert.throws(() => read(BROWN, cfg), (e: Error) => e.message.includes(`${BROWN}/adapter_config.json`));
  // the right call reads one entry per layer of config.json
  const layers = (JSON.parse(readFileSync(`${BROWN}/config.json`, 'utf8')) as { num_hidden_layers: number }).num_hidden_layers;
  assert.equal(read(ADAPTER, cfg).layers.length, layers);
});

test('applyAdapter: a model that is not a LlamaModel (the arguments swapped) is a TypeError naming it', async () => {
  const opened = await floe.openModel(BROWN);
  assert.throws(() => apply(ADAPTER, opened.model), /applyAdapter\(model, dir\): model must be a LlamaModel .*got '.*floe-brown-tools' \(a string\)/);
  assert.throws(() => apply(opened, ADAPTER), /model must be a LlamaModel .*got an object/);
  assert.ok(apply(opened.model, ADAPTER) instanceof floe.LlamaModel);
});
