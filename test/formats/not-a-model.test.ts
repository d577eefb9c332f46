// --model given a PEFT adapter directory (models/floe-brown-tools, a `floe finetune` output's final/) or a fine-tuning
// run directory: the error says what the directory is and what to do (the adapter's base, --adapter; the run's
// final/). Before, every command said only "DIR/config.json: cannot read: ENOENT: no such file or directory".

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/formats/load.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const TOOLS = repoPath('models/floe-brown-tools');
const root = mkdtempSync(join(tmpdir(), 'floe-not-a-model-'));

function floe(...args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

test('an adapter directory given as the model names its base and --adapter', { timeout: 60_000 }, async () => {
  for (const args of [['info', TOOLS], ['generate', '--model', TOOLS, '--prompt', 'hi', '--max-tokens', '1']]) {
    const r = floe(...args);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /floe-brown-tools is a PEFT LoRA adapter \(adapter_config\.json\), not a model; load its base model \(its base_model_name_or_path: "models\/floe-brown"\) and apply this directory as the adapter \(CLI: --model BASE --adapter .*floe-brown-tools\)/);
    assert.doesNotMatch(r.stderr, /ENOENT/);
  }
  await assert.rejects(loadModel(TOOLS), /is a PEFT LoRA adapter/);
});

test('a fine-tuning run directory given as the model points at its final/', { timeout: 60_000 }, async () => {
  const run = join(root, 'run');
  mkdirSync(run);
  cpSync(TOOLS, join(run, 'final'), { recursive: true });
  const r = floe('info', run);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /run\/config\.json: missing: .*run is a fine-tuning run; its result is .*run\/final/);
  // a directory that is neither still gets the plain error
  const empty = join(root, 'empty');
  mkdirSync(empty);
  assert.match(floe('info', empty).stderr, /empty\/config\.json: cannot read: ENOENT/);
});
