// tokenizer.json added_tokens: each entry's flags are booleans and its content is not empty; a malformed entry is an
// error naming tokenizer.json, the entry and what it holds.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { tmpDir } from './fixtures.js';
import { repoPath } from '../repo.js';

const FIXTURE = repoPath('test/fixtures/train/tokenizer');
type Added = Record<string, unknown> & { id: number; content: string };

/** The fixture tokenizer with its added_tokens edited; returns the directory and its tokenizer.json. */
function withAdded(edit: (added: Added[]) => void): { dir: string; file: string } {
  const dir = tmpDir('floe-added-');
  fs.copyFileSync(path.join(FIXTURE, 'tokenizer_config.json'), path.join(dir, 'tokenizer_config.json'));
  const j = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'tokenizer.json'), 'utf8')) as { added_tokens: Added[] };
  edit(j.added_tokens);
  const file = path.join(dir, 'tokenizer.json');
  fs.writeFileSync(file, JSON.stringify(j));
  return { dir, file };
}

test('added_tokens flags (special, single_word, lstrip, rstrip, normalized) must be booleans; were read as truthy', async () => {
  for (const flag of ['special', 'single_word', 'lstrip', 'rstrip', 'normalized']) {
    for (const ok of [true, false, undefined]) assert.ok(await loadTokenizer(withAdded((a) => { a[1]![flag] = ok; }).dir), `${flag} ${ok}`);
    for (const [v, got] of [['false', '"false"'], [0, '0'], [null, 'null'], [{}, '{}']] as const) {
      const { dir, file } = withAdded((a) => { a[1]![flag] = v; });
      await assert.rejects(loadTokenizer(dir), (e: Error) => { assert.equal(e.message, `${file}: added_tokens[1] (id 1) "${flag}" must be true or false, got ${got}`); return true; });
    }
  }
  // what truthy reading did: "special": "false" made <s> special (skipped when decoding with skipSpecialTokens)
  const tok = (await loadTokenizer(withAdded((a) => { a[1]!.special = false; }).dir))!;
  assert.ok(!tok.isSpecial(1));
});

test('an added token with empty content is refused naming tokenizer.json', async () => {
  const { dir, file } = withAdded((a) => { a.push({ id: 200, content: '', special: true }); });
  await assert.rejects(loadTokenizer(dir), (e: Error) => { assert.equal(e.message, `${file}: added_tokens[3] (id 200) has an empty "content": no text can ever match it`); return true; });
});
