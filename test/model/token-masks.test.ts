// generate()'s minTokens, allowedTokenIds and badWordIds (the library side of vLLM's min_tokens, allowed_token_ids and
// bad_words, which the server takes too) on floe-brown, each against an oracle the sampler makes on its own: a logit
// bias of -100 / +100 on the ids the mask would take; stop strings cut by vLLM's rule; with and without speculation.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generate, type GenerateOptions } from '../../src/model/generate.js';
import { openModel } from '../../src/model/open.js';
import { TextStream } from '../../src/model/text-stream.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const opened = openModel(BROWN, { threads: 2 });
const PROMPTS = ['The old man said that', 'In the morning, the children', 'He looked at the house and'];

async function run(prompt: string, o: Partial<GenerateOptions> & { stops?: string[] }) {
  const { model, tokenizer } = await opened;
  const ids = tokenizer!.encode(prompt);
  const { stops, ...rest } = o;
  return generate(model, ids, { maxTokens: 30, sampling: { temperature: 0 }, text: new TextStream(tokenizer!, stops ?? []), ...rest });
}
const enc = async (s: string) => (await opened).tokenizer!.encode(s, { addSpecialTokens: false });
const bias = (ids: number[], v: number) => new Map(ids.map((id) => [id, v]));

test('generate minTokens: the stop ids are masked for the first N tokens (logit_bias -100 as the oracle), with and without ngram speculation', async () => {
  const stops = [...await enc('.'), ...await enc(','), ...await enc(' the')];
  for (const prompt of PROMPTS) {
    const free = await run(prompt, { stopTokenIds: stops });
    assert.equal(free.finishReason, 'stop');
    const min = free.outputIds.length + 5;
    const oracle = await run(prompt, { maxTokens: min, stopTokenIds: [], sampling: { temperature: 0, logitBias: bias(stops, -100) } });
    for (const speculative of [undefined, 'ngram' as const]) {
      const r = await run(prompt, { stopTokenIds: stops, minTokens: min, maxTokens: 60, speculative });
      assert.deepEqual(r.outputIds.slice(0, min), oracle.outputIds, `${prompt} ${speculative}`);
      assert.ok(r.outputIds.length > min);
    }
  }
});

test('generate minTokens: a stop string counts only from the token after them (vLLM\'s rule)', async () => {
  for (const prompt of PROMPTS) {
    const full = await run(prompt, { stopTokenIds: [] });
    for (const min of [2, 6]) {
      const head = await run(prompt, { stopTokenIds: [], maxTokens: min });
      for (const stop of ['e', 'th']) {
        const at = full.text.indexOf(stop, Math.max(0, head.text.length - stop.length + 1));
        if (at < 0 || at + stop.length > full.text.length - 8) continue;
        const r = await run(prompt, { stopTokenIds: [], minTokens: min, stops: [stop] });
        assert.equal(r.text, full.text.slice(0, at), `${prompt} min ${min} stop ${stop}`);
      }
    }
  }
});

test('generate allowedTokenIds equals logit_bias +100 on them (greedy, seeded, ngram); badWordIds never complete', async () => {
  const allowed = [...new Set([...await enc(' the old man and the river'), ...await enc(' was a house.')])];
  for (const prompt of PROMPTS) {
    for (const sampling of [{ temperature: 0 }, { temperature: 1, seed: 5 }]) {
      const oracle = await run(prompt, { stopTokenIds: [], sampling: { ...sampling, logitBias: bias(allowed, 100) } });
      for (const speculative of [undefined, 'ngram' as const]) {
        const r = await run(prompt, { stopTokenIds: [], sampling, allowedTokenIds: allowed, speculative });
        assert.deepEqual(r.outputIds, oracle.outputIds, `${prompt} ${JSON.stringify(sampling)} ${speculative}`);
      }
    }
  }
  let tried = 0;
  for (const prompt of PROMPTS) {
    const full = await run(prompt, { stopTokenIds: [], maxTokens: 40 });
    for (let i = 1; i + 1 < full.outputIds.length && tried < 6; i += 3) {
      const word = full.outputIds.slice(i, i + 2); // a two-token sequence the greedy output holds
      const r = await run(prompt, { stopTokenIds: [], maxTokens: 40, badWordIds: [word] });
      const first = full.outputIds.findIndex((_, j) => full.outputIds[j] === word[0] && full.outputIds[j + 1] === word[1]);
      assert.deepEqual(r.outputIds.slice(0, first + 1), full.outputIds.slice(0, first + 1));
      assert.notEqual(r.outputIds[first + 1], word[1]);
      assert.equal(r.outputIds.findIndex((_, j) => r.outputIds[j] === word[0] && r.outputIds[j + 1] === word[1]), -1);
      tried++;
    }
  }
  assert.ok(tried >= 3);
});

test('generate masks: bad options are RangeErrors naming them as generate() does; floe generate --min-tokens above --max-tokens is a usage error', async () => {
  await assert.rejects(run('The', { minTokens: 40, maxTokens: 30 }), { name: 'RangeError', message: /^minTokens must be an integer in \[0, maxTokens = 30\]/ });
  await assert.rejects(run('The', { allowedTokenIds: [] }), { name: 'RangeError', message: /^allowedTokenIds must be a non-empty/ });
  await assert.rejects(run('The', { allowedTokenIds: [5, 1 << 20] }), { name: 'RangeError', message: /^allowedTokenIds\[1\] is 1048576, outside the vocabulary/ });
  await assert.rejects(run('The', { allowedTokenIds: [2], stopTokenIds: [2], minTokens: 1 }), { name: 'RangeError', message: /^allowedTokenIds holds only stop ids, which minTokens masks/ });
  await assert.rejects(run('The', { badWordIds: [[3], []] }), { name: 'RangeError', message: /^badWordIds\[1\] must be a non-empty array/ });
  const bin = repoPath('bin/floe.js');
  const bad = spawnSync(process.execPath, [bin, 'generate', '--prompt', 'The', '--max-tokens', '4', '--min-tokens', '5'], { encoding: 'utf8' });
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /--min-tokens 5 is above --max-tokens 4/);
  const ok = spawnSync(process.execPath, [bin, 'generate', '--prompt', 'The old man', '--max-tokens', '12', '--min-tokens', '12', '--temperature', '0', '--json', '--threads', '1'], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  const out = JSON.parse(ok.stdout) as { output_ids: number[]; finish_reason: string };
  assert.equal(out.output_ids.length, 12);
  assert.equal(out.finish_reason, 'length');
});
