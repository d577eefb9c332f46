// floe serve --lora-modules with an adapter it cannot serve refuses before "listening": a directory without
// adapter_config.json, an adapter of another base, and one above --max-lora-rank each exit 1 naming the module and
// why, with nothing printed about listening. Before, the server printed "listening", then failed its load
// ("cannot load MODEL: loading MODEL: LoRA module ...") while a supervisor had already seen it up.

import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writePeftAdapter } from '../../src/formats/peft.js';
import { randomAdapter } from '../model/lora-helpers.js';
import { fixtureModel } from '../engine/helpers.js';
import { repoPath } from '../repo.js';

const FLOE = repoPath('bin/floe.js');
const TOOLS = repoPath('models/floe-brown-tools');

test('bad --lora-modules are refused before listening, naming the module and why', { timeout: 120_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'floe-lora-preflight-'));
  mkdirSync(join(root, 'empty'));
  writePeftAdapter(join(root, 'other'), randomAdapter(await fixtureModel('gqa_f32'), 1, 4), 'tiny-llama-gqa');
  cpSync(TOOLS, join(root, 'rank16'), { recursive: true });
  const serve = (module: string, ...extra: string[]) =>
    spawnSync(process.execPath, [FLOE, 'serve', '--port', '0', '--no-batch', '--no-ui', '--lora-modules', module, ...extra], { encoding: 'utf8', timeout: 60_000 });
  const cases: [string, string[], RegExp][] = [
    [`x=${join(root, 'empty')}`, [], /--lora-modules x=\S+empty: no adapter_config\.json there; expected a PEFT LoRA adapter directory/],
    [`x=${join(root, 'missing')}`, [], /--lora-modules x=\S+missing: no adapter_config\.json there/],
    [`o=${join(root, 'other')}`, [], /--lora-modules o=\S+other: .*an adapter of another base model \("tiny-llama-gqa" in adapter_config\.json\)/],
    [`t=${join(root, 'rank16')}`, ['--max-lora-rank', '8'], /--lora-modules t=\S+rank16: has rank 16, above --max-lora-rank 8/],
  ];
  for (const [module, extra, want] of cases) {
    const r = serve(module, ...extra);
    assert.equal(r.status, 1, `${module}: exit ${r.status}\n${r.stdout}${r.stderr}`);
    assert.match(r.stderr, want, module);
    assert.doesNotMatch(r.stdout + r.stderr, /listening/, `${module}: refused after listening`);
  }
  // the same adapter within the limit starts (and is then stopped): its "listening" line is waited for, or its exit (a
  // kill after 4 s cut it off on a loaded host: it took 2.2 s on a quiet one, 3.1 s beside two CPU burners)
  const ok = spawn(process.execPath, [FLOE, 'serve', '--port', '0', '--no-batch', '--no-ui', '--lora-modules', `t=${join(root, 'rank16')}`, '--max-lora-rank', '16'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((r) => ok.once('exit', r));
  let stdout = '', stderr = '';
  try {
    await new Promise<void>((resolve) => {
      ok.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); if (/listening/.test(stdout)) resolve(); });
      ok.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
      void exited.then(() => resolve());
    });
  } finally {
    ok.kill('SIGTERM');
    await exited;
  }
  assert.match(stdout, /listening/, `a good module starts: ${stdout}${stderr}`);
});
