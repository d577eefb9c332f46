// runSynth's output file: its folder is made when missing, and a rerun with other parameters says which ones differ.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LIMITS } from '../../src/platform/synth/filters.js';
import type { SynthLlm } from '../../src/platform/synth/llm.js';
import { runSynth, type SynthOptions } from '../../src/platform/synth/pipeline.js';
import { PromptSet } from '../../src/platform/synth/prompts.js';
import type { WorkUnit } from '../../src/platform/synth/methods.js';

const dir = mkdtempSync(join(tmpdir(), 'synth-out-'));

/** A run of the given units (none by default): no model is asked anything, only the output and its progress log are written. */
function opts(out: string, params: Record<string, unknown>, method = 'self-instruct', units: WorkUnit[] = []): SynthOptions {
  return {
    method, units, llm: { name: 'none' } as unknown as SynthLlm, prompts: new PromptSet([]), out, format: 'messages',
    gen: { maxTokens: 8, temperature: 0.8, topP: 0.95 }, limits: DEFAULT_LIMITS, dedupThreshold: 0.7, window: 1, params,
  };
}

/** A unit that is rejected without asking the model: a run of it commits one batch. */
const rejected = (id: string): WorkUnit => ({ id, seed: 1, run: async () => ({ ok: false, reason: 'instruction_too_short' }) });

test('the output\'s folder is created when it does not exist (as finetune, merge and batch do)', async () => {
  const out = join(dir, 'new', 'parent', 'x.jsonl');
  const s = await runSynth(opts(out, { seed: 1 }));
  assert.equal(s.units, 0);
  assert.ok(existsSync(out));
  assert.match(readFileSync(out + '.synth-progress', 'utf8'), /"floe_synth":1/);
});

test('a rerun with other parameters is refused naming each one that differs, old and new', async () => {
  const out = join(dir, 'p.jsonl');
  const long = 'x'.repeat(400); // the old message cut the header at 200 characters, before the differing values
  const units = [rejected('self-instruct/1/0')];
  await runSynth(opts(out, { docs: long, seed: 1, rounds: 3, num: 10 }, 'self-instruct', units));
  const again = await runSynth(opts(out, { docs: long, seed: 1, rounds: 3, num: 10 }, 'self-instruct', units)); // same parameters: resumes
  assert.equal(again.resumed_units, 1);
  await assert.rejects(runSynth(opts(out, { docs: long, seed: 2, rounds: 3, num: 12, judge: true })), (e: Error) => {
    assert.match(e.message, /its parameters differ: seed 1 -> 2, num 10 -> 12, judge \(none\) -> true/);
    assert.doesNotMatch(e.message, /rounds/);
    return true;
  });
  await assert.rejects(runSynth(opts(out, { docs: long, seed: 1, rounds: 3, num: 10 }, 'magpie')), /its parameters differ: method "self-instruct" -> "magpie"/);
});

// Before, the refusal came after the progress log was opened: an empty OUT.synth-progress was left beside the user's file.
test('an --out that synth did not make is refused, and no progress log is left beside it', async () => {
  for (const [name, bytes] of [['notes.jsonl', Buffer.from('{"mine": 1}\n')], ['latin1.jsonl', Buffer.from('caf\u00e9\n', 'latin1')]] as const) {
    const out = join(dir, name);
    writeFileSync(out, bytes);
    await assert.rejects(runSynth(opts(out, { seed: 1 })), /it was not made by floe synth: choose another --out/);
    assert.deepEqual(readFileSync(out), bytes, 'the file is kept');
    assert.ok(!existsSync(out + '.synth-progress'), `${name}: no progress log made`);
  }
});

// Before, a run that failed on its first request (a misspelt --endpoint-model: the server's 404) left a progress header
// that refused the corrected command as another run's, though it had committed nothing; the user had to find and delete it.
test('a run that committed no unit leaves nothing to resume: a rerun with other parameters starts over', async () => {
  const out = join(dir, 'failed-first.jsonl');
  const failing: WorkUnit = { id: 'self-instruct/1/0', seed: 1, run: async () => { throw new Error('HTTP 404: the model \'nope\' does not exist'); } };
  await assert.rejects(runSynth(opts(out, { seed: 1, model: 'nope' }, 'self-instruct', [failing])), /HTTP 404/);
  assert.ok(existsSync(out + '.synth-progress'));
  const s = await runSynth(opts(out, { seed: 1, model: 'floe-brown' }, 'self-instruct', [rejected('self-instruct/1/0')]));
  assert.equal(s.resumed_units, 0);
  assert.deepEqual(s.rejected, { instruction_too_short: 1 });
  const log = readFileSync(out + '.synth-progress', 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(log[0].params.model, 'floe-brown', 'the header is this run\'s');
  assert.equal(log.length, 2);
  // once a unit is committed, other parameters are refused as before
  await assert.rejects(runSynth(opts(out, { seed: 1, model: 'other' }, 'self-instruct', [rejected('self-instruct/1/0')])), /its parameters differ: model "floe-brown" -> "other"/);
});
