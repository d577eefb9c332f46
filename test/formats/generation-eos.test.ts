// generation_config.json eos_token_id as loadTokenizer reads it (the server's text tools, RAG chunking, training):
// an id or a list of ids the tokenizer has; anything else is an error naming generation_config.json.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { tmpDir } from './fixtures.js';
import { repoPath } from '../repo.js';

const FIXTURE = repoPath('test/fixtures/train/tokenizer');

/** The fixture tokenizer with generation_config.json {"eos_token_id": v}; returns the directory and that file. */
function withEos(v: unknown): { dir: string; file: string } {
  const dir = tmpDir('floe-gen-eos-');
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
  const file = path.join(dir, 'generation_config.json');
  fs.writeFileSync(file, JSON.stringify({ eos_token_id: v }));
  return { dir, file };
}

test('eos_token_id: an id or a list of ids (merged after eos_token), null for none; other types name generation_config.json (were dropped)', async () => {
  // tokenizer_config.json's eos_token "</s>" is id 2
  for (const [v, want] of [[2, [2]], [[1], [2, 1]], [[1, 2, 1], [2, 1]], [null, [2]], [[], [2]]] as const) {
    assert.deepEqual((await loadTokenizer(withEos(v).dir))!.eosIds, want, JSON.stringify(v));
  }
  for (const [v, got] of [['1', '"1"'], [1.5, '1.5'], [-1, '-1'], [['</s>'], '["</s>"]'], [[[1]], '[[1]]'], [[1, null], '[1,null]'], [{}, '{}'], [true, 'true']] as const) {
    const { dir, file } = withEos(v);
    await assert.rejects(loadTokenizer(dir), (e: Error) => { assert.equal(e.message, `${file}: "eos_token_id" must be a token id or a list of them, got ${got}`); return true; });
  }
});

test('eos_token_id naming an id the tokenizer does not have is refused naming generation_config.json and tokenizer.json (was kept: a stop that never fires)', async () => {
  const j = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> }; added_tokens: { id: number }[] };
  const ids = new Set([...Object.values(j.model.vocab), ...j.added_tokens.map((t) => t.id)]);
  const max = Math.max(...ids);
  assert.equal(ids.size, max + 1, 'the fixture ids are 0..max');
  assert.deepEqual((await loadTokenizer(withEos([max]).dir))!.eosIds, [2, max]);
  for (const [v, bad] of [[max + 1, max + 1], [[2, 5000], 5000], [2 ** 40, 2 ** 40]] as const) {
    const { dir, file } = withEos(v);
    await assert.rejects(loadTokenizer(dir), (e: Error) => {
      assert.equal(e.message, `${file}: eos_token_id ${bad} is not a token of ${path.join(dir, 'tokenizer.json')} (its ids: 0..${max})`);
      return true;
    });
  }
});
