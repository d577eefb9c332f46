// The `floe` command as a user runs it: a subprocess, checked against the PyTorch fixtures.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/floe.js', import.meta.url));
const FIX = fileURLToPath(new URL('../fixtures/models/', import.meta.url));

function floe(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('floe generate --json: greedy ids and prompt logprobs match PyTorch', () => {
  const ref = JSON.parse(readFileSync(FIX + 'gqa_f32/reference.json', 'utf8'));
  const r = floe('generate', '--model', FIX + 'gqa_f32', '--prompt-ids', ref.prompt_ids.join(','), '--max-tokens', String(ref.greedy_ids.length),
    '--temperature', '0', '--logprobs', '3', '--prompt-logprobs', '2', '--json');
  assert.equal(r.code, 0, r.err);
  const lines = r.out.trim().split('\n');
  assert.equal(lines.length, 1, 'exactly one JSON object');
  const j = JSON.parse(lines[0]!);
  assert.deepEqual(j.prompt_ids, ref.prompt_ids);
  assert.deepEqual(j.output_ids.slice(0, ref.greedy_ids.length), ref.greedy_ids.slice(0, j.output_ids.length));
  assert.equal(j.prompt_logprobs[0], null);
  assert.equal(j.prompt_logprobs.length, ref.prompt_ids.length);
  for (let i = 1; i < ref.prompt_ids.length; i++) {
    const e = j.prompt_logprobs[i];
    assert.equal(e.token, ref.prompt_ids[i]);
    const want = ref.logprobs[ref.logprob_positions.indexOf(i - 1)][ref.prompt_ids[i]];
    assert.ok(Math.abs(e.logprob - want) < 1e-4, `prompt logprob ${i}: ${e.logprob} vs ${want}`);
    assert.equal(e.top.length, 2);
    assert.ok(e.top[0][1] >= e.top[1][1]);
  }
  assert.equal(j.logprobs.length, j.output_ids.length);
  for (const [i, e] of j.logprobs.entries()) {
    assert.equal(e.token, j.output_ids[i]);
    assert.equal(e.top[0][0], e.token, 'greedy picks the top token');
    assert.equal(e.top.length, 3);
  }
  for (const k of ['load_ms', 'prompt_tokens', 'prompt_ms', 'generated_tokens', 'decode_ms']) assert.equal(typeof j.timings[k], 'number', k);
  assert.equal(j.timings.prompt_tokens, ref.prompt_ids.length);
});

test('floe generate: same seed, same sample; reference backend agrees with native', () => {
  const args = ['generate', '--model', FIX + 'mha_f32', '--prompt-ids', '5,6,7', '--max-tokens', '12', '--temperature', '1.0', '--top-p', '0.9', '--seed', '42', '--json'];
  const a = JSON.parse(floe(...args).out);
  const b = JSON.parse(floe(...args).out);
  const c = JSON.parse(floe(...args, '--backend', 'reference').out);
  assert.deepEqual(a.output_ids, b.output_ids);
  assert.deepEqual(a.output_ids, c.output_ids);
  const d = JSON.parse(floe(...args.slice(0, -3), '--seed', '43', '--json').out);
  assert.notDeepEqual(a.output_ids, d.output_ids, 'another seed gives another sample');
});

test('floe info prints the architecture', () => {
  const r = floe('info', FIX + 'fp8_block', '--json');
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.config.numLayers, 2);
  assert.ok(j.dtypes.fp8_e4m3 > 0);
  assert.ok(j.parameters > 0);
});

test('floe rejects bad input with a clear message', () => {
  const cases: [string[], RegExp][] = [
    [['generate', '--prompt-ids', '1'], /--model PATH is required/],
    [['generate', '--model', FIX + 'gqa_f32'], /exactly one of --prompt/],
    [['generate', '--model', FIX + 'gqa_f32', '--prompt-ids', '1,x'], /entry 1 'x' is not an integer/],
    [['generate', '--model', FIX + 'gqa_f32', '--prompt-ids', '1,99999'], /99999 outside the vocabulary/],
    [['generate', '--model', FIX + 'gqa_f32', '--prompt-ids', '1', '--max-tokens', '1000000'], /exceeds the model's context/],
    [['generate', '--model', FIX + 'gqa_f32', '--prompt-ids', '1', '--temperature', 'hot'], /--temperature expects a number/],
    [['generate', '--model', FIX + 'gqa_f32', '--prompt-ids', '1', '--kv-cache-dtype', 'f8'], /--kv-cache-dtype expects/],
    [['generate', '--model', '/nonexistent/model', '--prompt-ids', '1'], /nonexistent/],
    [['info'], /usage: floe info MODEL/],
    [['frobnicate'], /unknown command/],
  ];
  for (const [args, re] of cases) {
    const r = floe(...args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.err, re, args.join(' '));
    assert.doesNotMatch(r.err, /^\s+at /m, 'no stack trace');
  }
});
