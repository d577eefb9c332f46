// Flag validation as a user meets it: bad values are usage errors (exit 2) that name the flag, before any work.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { num, UsageError } from '../../src/cli/args.js';

const BIN = fileURLToPath(new URL('../../bin/floe.js', import.meta.url));
const FIX = fileURLToPath(new URL('../fixtures/models/', import.meta.url));
const M = FIX + 'gqa_f32';

function floe(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function refused(cases: [string[], RegExp][]): void {
  for (const [args, re] of cases) {
    const r = floe(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}: ${r.err}`);
    assert.match(r.err, re, args.join(' '));
    assert.doesNotMatch(r.err, /^\s+at /m, 'no stack trace');
  }
}

test('integer flags take decimal integers only; number flags keep decimal and exponent forms', () => {
  for (const v of ['1e1', '0x10', '0b11', '0o7', '1.0', '', ' ']) {
    assert.throws(() => num(v, 'threads', 0, true), (e: Error) => e instanceof UsageError && /--threads expects an integer/.test(e.message), v);
  }
  assert.throws(() => num('0x10', 'lr', 0), UsageError);
  assert.equal(num('12', 'threads', 0, true), 12);
  assert.equal(num('+3', 'threads', 0, true), 3);
  assert.equal(num('1e-4', 'lr', 0), 1e-4);
  assert.equal(num('2E-3', 'lr', 0), 2e-3);
  assert.equal(num('.5', 'top-p', 0), 0.5);
  assert.equal(num('3.', 'temperature', 0), 3);
  assert.equal(num('-0.5', 'min-ll-gain', 0, false, { min: -100 }), -0.5);
});

test('empty lists, empty list entries, a zero token budget and non-decimal integers are usage errors naming the flag', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-flags-'));
  const data = join(dir, 'd.jsonl');
  writeFileSync(data, '{"text": "hello"}\n');
  refused([
    [['finetune', '--model', M, '--data', data, '--out', join(dir, 'a'), '--lora-targets', ''], /--lora-targets expects a subset of q,k,v,o,gate,up,down/],
    [['plan', '--preset', 'llama-3.2-1b', '--lora-rank', '8', '--lora-targets', ''], /--lora-targets/],
    [['rag', 'query', '--db', join(dir, 'db'), '--collection', 'c', '--weights', ',', 'q'], /--weights expects DENSE,BM25/],
    [['rag', 'query', '--db', join(dir, 'db'), '--collection', 'c', '--weights', '1,', 'q'], /--weights expects DENSE,BM25/],
    [['rag', 'query', '--db', join(dir, 'db'), '--collection', 'c', '--weights', '0x1,1', 'q'], /--weights expects DENSE,BM25/],
    [['generate', '--model', M, '--prompt-ids', '1', '--max-tokens', '0'], /--max-tokens expects an integer >= 1, got '0'/],
    [['generate', '--model', M, '--prompt-ids', '1', '--max-tokens', '1e1'], /--max-tokens expects an integer/],
    [['generate', '--model', M, '--prompt-ids', '1', '--threads', '0x10'], /--threads expects an integer/],
    [['generate', '--model', M, '--prompt-ids', '0x1'], /--prompt-ids: entry 0 '0x1'/],
    [['generate', '--model', M, '--prompt-ids', '1', '--num-speculative-tokens', '1e1'], /--num-speculative-tokens expects an integer/],
    [['finetune', '--model', M, '--data', data, '--out', join(dir, 'b'), '--max-steps', '1e1'], /--max-steps expects an integer/],
  ]);
});
