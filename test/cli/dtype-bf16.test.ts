// `--dtype bf16` on the CLI: generate runs floe-brown (f32) in bf16 and prints text; a bad --dtype is a usage error
// (exit 2) naming fp8 and bf16 on every command that takes the flag, before any model is opened.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { runEach } from './run-each.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');

function floe(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000, input: '' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('floe generate --dtype bf16 on the built-in f32 model prints text; --json shows the run', () => {
  const r = floe('generate', '--dtype', 'bf16', '--prompt', 'Once upon a time', '--max-tokens', '8', '--temperature', '0', '--threads', '1', '--json');
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out) as { text: string; output_ids?: number[] };
  assert.ok(j.text.trim().length > 0, `text: ${JSON.stringify(j.text)}`);
  const plain = floe('generate', '--dtype', 'bf16', '--prompt', 'Once upon a time', '--max-tokens', '8', '--temperature', '0', '--threads', '1');
  assert.equal(plain.code, 0, plain.err);
  assert.equal(plain.out.trim(), j.text.trim(), 'streamed text is the --json text');
});

test('a bad --dtype exits 2 naming fp8 and bf16, before the model (a missing one here) is opened', () => {
  const missing = '/nonexistent/floe-model';
  const argvs = [
    ['generate', '--model', missing, '--prompt', 'hi', '--dtype', 'f64'],
    ['chat', '--model', missing, '--dtype', 'f64'],
    ['serve', '--model', missing, '--dtype', 'float16'],
    ['eval', '--model', missing, '--data', missing + '.jsonl', '--dtype', 'f64'],
    ['batch', '--model', missing, '--input', missing + '.jsonl', '--output', missing + '.out.jsonl', '--dtype', 'f64'],
  ];
  // run() calls of the built CLI in one process (run-each.ts), not a process each
  const runs = runEach(argvs);
  for (const [i, argv] of argvs.entries()) {
    const r = { code: runs[i]!.status, err: runs[i]!.stderr };
    assert.equal(r.code, 2, `${argv[0]}: exit ${r.code}\n${r.err}`);
    assert.match(r.err, /--dtype expects fp8 \(.*\) or bf16 \(.*\), got '(f64|float16)'/, argv[0]);
    assert.doesNotMatch(r.err, /cannot open model|nonexistent\/floe-model:/, `${argv[0]}: the model was not opened`);
  }
});
