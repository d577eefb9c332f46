// POST /v1/load_lora_adapter with an adapter trained on another base model says so: a 400 on lora_path whose
// message names the adapter's base_model_name_or_path and calls it an adapter of another base (a factor whose
// model-side width, or a layer, this base does not have). Before, it gave only a tensor's shape against the
// expected one. A factor whose r disagrees with adapter_config.json is still told as a shape (not 'another base'),
// and an adapter above --max-lora-rank as its rank. `floe serve` on the built-in model, the official openai client.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { writePeftAdapter } from '../../src/formats/peft.js';
import { openModel } from '../../src/model/open.js';
import { randomAdapter } from '../model/lora-helpers.js';
import { fixtureModel } from '../engine/helpers.js';
import { startFloeServe } from './floe-process.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/platform/jobs/child.js');
const BROWN = repoPath('models/floe-brown');
const TOOLS = repoPath('models/floe-brown-tools');
const procs: ChildProcess[] = [];
after(() => { for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL'); });

test('an adapter of another base is a 400 naming its base; a wrong r and a rank above --max-lora-rank say what they are', { timeout: 60_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'floe-otherbase-'));
  const small = await fixtureModel('gqa_f32'); // hidden 64, 2 layers
  writePeftAdapter(join(root, 'other'), randomAdapter(small, 1, 4), 'tiny-llama-gqa');
  writePeftAdapter(join(root, 'other-q'), randomAdapter(small, 2, 4, ['q'])); // no base_model_name_or_path
  const brown = (await openModel(BROWN)).model;
  writePeftAdapter(join(root, 'deep'), randomAdapter(brown, 3, 2, ['q']), 'a-deeper-model');
  // layer 6 of 'deep': floe-brown has 6 layers (0-5); renaming a key keeps every shape right
  const st = join(root, 'deep', 'adapter_model.safetensors');
  writeFileSync(st, Buffer.from(readFileSync(st, 'latin1').replaceAll('layers.5.', 'layers.6.'), 'latin1'));
  cpSync(TOOLS, join(root, 'wrong-r'), { recursive: true });
  const cfg = JSON.parse(readFileSync(join(root, 'wrong-r', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(root, 'wrong-r', 'adapter_config.json'), JSON.stringify({ ...cfg, r: 8 })); // the tensors are r=16
  cpSync(TOOLS, join(root, 'rank16'), { recursive: true });

  const floe = await startFloeServe(mkdtempSync(join(tmpdir(), 'floe-otherbase-data-')), { built: BUILT, procs, args: ['--enable-lora-loading', '--lora-root', root, '--max-lora-rank', '12'] });
  const c = new OpenAI({ baseURL: floe.url + '/v1', apiKey: 'unused', maxRetries: 0 });
  const load = (path: string) => c.post('/load_lora_adapter', { body: { lora_name: path, lora_path: path } });
  const refused = (re: RegExp, not?: RegExp) => (e: unknown) =>
    e instanceof OpenAI.BadRequestError && e.param === 'lora_path' && e.code === 'invalid_adapter' && re.test(e.message) && !(not?.test(e.message));
  await assert.rejects(load('other'), refused(/has shape \[4, \d+\], expected \[4, \d+\] \(r=4\): an adapter of another base model \("tiny-llama-gqa" in adapter_config\.json\), not of this one/));
  await assert.rejects(load('other-q'), refused(/q_proj\.lora_[AB]\.weight" has shape .*: an adapter of another base model, not of this one/));
  await assert.rejects(load('deep'), refused(/is for layer 6, the model has 6 layers: an adapter of another base model \("a-deeper-model" in adapter_config\.json\)/));
  await assert.rejects(load('wrong-r'), refused(/has shape \[(16, \d+|\d+, 16)\], expected \[(8, \d+|\d+, 8)\] \(r=8\): \S+wrong-r\/adapter_config\.json says r = 8, the weights have another rank$/, /another base/));
  await assert.rejects(load('rank16'), refused(/has rank 16, above --max-lora-rank 12/));
  assert.deepEqual((await c.models.list()).data.map((m) => m.id), ['floe-brown'], 'nothing was loaded');
  floe.proc.kill('SIGTERM');
  await floe.exit;
});
