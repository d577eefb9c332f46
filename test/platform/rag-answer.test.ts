// Answer building: log-likelihood rerank through the engine equals the in-process model's prompt logprobs; the
// prompt keeps the best-ranked passages that fit and drops the rest; citations follow the answer's [n].

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startEngine } from '../../src/engine/client.js';
import { generate } from '../../src/model/generate.js';
import { openModel } from '../../src/model/open.js';
import { loadChatTemplate } from '../../src/formats/chat-template.js';
import { citations, citedNumbers, fitPassages, promptBuilder, rerank } from '../../src/platform/rag/answer.js';
import type { Passage } from '../../src/platform/rag/store.js';
import { BROWN, brownTokenizer, randomText, rng } from './rag-helpers.js';

const passage = (i: number, text: string): Passage => ({ id: `p${i}`, source: `doc${i}.txt`, chunk: 0, start: 0, end: text.length, text, score: 1 - i / 10 });

test('rerank: engine scores equal the mean prompt logprob of the question from the in-process model', { timeout: 120_000 }, async () => {
  const tok = await brownTokenizer();
  const r = rng((Date.now() ^ 0x1234) >>> 0);
  const query = 'Where did the old man keep the boat?';
  const ps = [randomText(r, 6), 'The old man kept the boat in the shed by the river.', randomText(r, 1), 'Prices rose in the spring.'].map((t, i) => passage(i, t));
  const engine = await startEngine({ model: BROWN, threads: 1, kvDtype: 'f32', kvCacheMemory: 32 * 2 ** 20 });
  try {
    const ranked = await rerank(engine, tok, query, ps);
    const m = await openModel(BROWN, { threads: 1 });
    const qIds = tok.encode(`\nQuestion: ${query}`, { addSpecialTokens: false });
    // a random passage may exceed the context (1,245 tokens seen against 1,024): rerank keeps the whole question
    // and cuts the passage from its end, so the reference scores the same cut prompt
    const limit = engine.info.maxRequestTokens - 1;
    const want = new Map(ps.map((p) => {
      const head = tok.encode(`Passage: ${p.text}`).slice(0, limit - qIds.length);
      const g = generate(m.model, [...head, ...qIds], { maxTokens: 1, promptLogprobs: 0, kvDtype: 'f32' });
      let sum = 0;
      for (let t = head.length; t < head.length + qIds.length; t++) sum += g.promptLogprobs![t]!.logprob;
      return [p.id, sum / qIds.length];
    }));
    assert.equal(ranked.length, ps.length);
    for (const [i, p] of ranked.entries()) {
      assert.ok(Math.abs(p.score - want.get(p.id)!) < 1e-3, `${p.id}: engine ${p.score} vs model ${want.get(p.id)}`);
      if (i > 0) assert.ok(ranked[i - 1]!.score >= p.score);
    }
    m.loaded.dispose();
  } finally {
    await engine.shutdown(0);
  }
});

test('fitPassages keeps the longest rank-order prefix that fits; citations follow [n] in the answer', async () => {
  const tok = await brownTokenizer();
  const template = await loadChatTemplate(BROWN);
  const r = rng((Date.now() ^ 0x4321) >>> 0);
  const ps = Array.from({ length: 8 }, (_, i) => passage(i, randomText(r, 2)));
  const build = promptBuilder({ tokenizer: tok, template }, 'What happened?');
  const sizes = ps.map((_, n) => build(ps.slice(0, n + 1)).ids.length);
  for (let n = 0; n < ps.length; n++) {
    const limit = n + 1 < ps.length ? sizes[n + 1]! - 1 : sizes[n]!; // fits n+1 passages, not n+2
    const f = fitPassages(ps, build, limit);
    assert.deepEqual(f.used.map((p) => p.id), ps.slice(0, n + 1).map((p) => p.id), `limit ${limit}`);
    assert.deepEqual(f.dropped.map((p) => p.id), ps.slice(n + 1).map((p) => p.id));
    assert.ok(f.ids.length <= limit);
    assert.deepEqual(f.ids, build(f.used).ids);
  }
  const none = fitPassages(ps, build, 1);
  assert.deepEqual([none.used.length, none.dropped.length], [0, ps.length]);
  const prompt = tok.decode(build(ps.slice(0, 2)).ids);
  assert.ok(prompt.includes(`[1] (doc0.txt) ${ps[0]!.text}`) && prompt.includes(`[2] (doc1.txt) ${ps[1]!.text}`));
  assert.deepEqual(citedNumbers('As [2] says, and [1, 3]; not [9] or [0].', 3), [2, 1, 3]);
  assert.deepEqual(citations(ps.slice(0, 3), 'see [3]').map((c) => [c.index, c.id, c.cited]), [[1, 'p0', false], [2, 'p1', false], [3, 'p2', true]]);
});
