// sampleBatch against generate(): on the reference backend every sequence of a batch gets exactly the tokens it gets
// alone (seeded sampling and greedy, prompts and budgets of different lengths, EOS inside the batch).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { generate } from '../../src/model/generate.js';
import { sampleBatch } from '../../src/model/generate-batch.js';
import { openModel } from '../../src/model/open.js';
import { Rng } from '../../src/train/rng.js';
import { repoPath } from '../repo.js';

const FIXTURES = repoPath('test/fixtures/models');

test('sampleBatch gives each sequence generate()\'s tokens (reference backend, fresh seeds)', async () => {
  for (const name of ['gqa_f32', 'mha_f32']) {
    const { model, loaded } = await openModel(join(FIXTURES, name), { backend: 'reference' });
    const rng = new Rng(Date.now() >>> 0);
    const V = model.config.vocabSize;
    for (const temperature of [0, 1.2]) {
      // a draw where some sequence decodes several steps with the others (the added stop token, or short budgets, can
      // end every sequence early on these tiny models: redraw, as that batch would test little)
      let draw: { reqs: { promptIds: number[]; maxTokens: number; sampling: { temperature: number; seed: number } }[]; stopTokenIds: number[]; want: number[][] } | null = null;
      for (let attempt = 0; attempt < 20 && !draw; attempt++) {
        const reqs = Array.from({ length: 5 }, (_, s) => ({
          promptIds: Array.from({ length: 1 + rng.int(40) }, () => rng.int(V)),
          maxTokens: 1 + rng.int(24),
          sampling: { temperature, seed: rng.int(1 << 30) + s },
        }));
        // one sequence stops at the token it would sample first: EOS inside the batch
        const first = generate(model, reqs[2]!.promptIds, { maxTokens: 1, sampling: reqs[2]!.sampling, kvDtype: 'f32' }).outputIds[0]!;
        const stopTokenIds = [...model.config.eosTokenIds, first];
        const want = reqs.map((r) => generate(model, r.promptIds, { maxTokens: r.maxTokens, sampling: r.sampling, kvDtype: 'f32', stopTokenIds }).outputIds);
        if (want.some((o) => o.length > 4)) draw = { reqs, stopTokenIds, want };
      }
      assert.ok(draw, `${name} T=${temperature}: no draw in 20 where some sequence decodes several steps together`);
      const got = sampleBatch(model, draw.reqs, { kvDtype: 'f32', stopTokenIds: draw.stopTokenIds, prefillTokens: 48 });
      draw.want.forEach((want, s) => assert.deepEqual(got[s], want, `${name} T=${temperature} sequence ${s}`));
      assert.equal(got[2]!.length, 1);
    }
    assert.throws(() => sampleBatch(model, [{ promptIds: [], maxTokens: 2 }]), /sequence 0: prompt is empty/);
    assert.throws(() => sampleBatch(model, [{ promptIds: [1], maxTokens: 0 }]), /sequence 0: max tokens must be an integer >= 1, got 0/);
    loaded.dispose();
  }
});
