// tokenizer_config.json: a malformed field floe or the tokenizers library reads fails naming tokenizer_config.json,
// the field and what it holds, never as the library's TypeError or a silent default.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { tmpDir } from './fixtures.js';
import { repoPath } from '../repo.js';

const FIXTURE = repoPath('test/fixtures/train/tokenizer');
const GOOD = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;

/** A copy of the fixture tokenizer with tokenizer_config.json's `key` set to `v`; returns the directory and the config path. */
function withConfig(key: string, v: unknown): { dir: string; file: string } {
  const dir = tmpDir('floe-tokcfg-');
  fs.copyFileSync(path.join(FIXTURE, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
  const file = path.join(dir, 'tokenizer_config.json');
  fs.writeFileSync(file, JSON.stringify({ ...GOOD, [key]: v }));
  return { dir, file };
}

/** Rejects with an Error whose message is exactly `want`. */
async function refuses(dir: string, want: string): Promise<void> {
  await assert.rejects(loadTokenizer(dir), (e: Error) => { assert.equal(e.constructor, Error); assert.equal(e.message, want); return true; });
}

test('additional_special_tokens: a list of strings or {content} objects; anything else names tokenizer_config.json', async () => {
  for (const ok of [[], ['<s>', '</s>'], [{ content: '</s>', special: true }], null]) assert.ok(await loadTokenizer(withConfig('additional_special_tokens', ok).dir), JSON.stringify(ok));
  for (const [v, got] of [['<s>', '"<s>"'], [5, '5'], [{}, '{}']] as const) {
    const { dir, file } = withConfig('additional_special_tokens', v);
    await refuses(dir, `${file}: "additional_special_tokens" must be a list of tokens, got ${got}`);
  }
  for (const [v, got] of [[[5], '5'], [['<s>', null], 'null'], [[{}], '{}']] as const) {
    const { dir, file } = withConfig('additional_special_tokens', v);
    await refuses(dir, `${file}: additional_special_tokens[${v.length - 1}] must be a string or an object with a string "content", got ${got}`);
  }
});

test('bos_token / eos_token / unk_token / pad_token and add_bos_token / add_eos_token of the wrong type name tokenizer_config.json (were ignored)', async () => {
  for (const k of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
    for (const ok of ['</s>', { content: '</s>', special: true }, null]) assert.ok(await loadTokenizer(withConfig(k, ok).dir), `${k} ${JSON.stringify(ok)}`);
    for (const [v, got] of [[5, '5'], [true, 'true'], [[], '[]'], [{}, '{}'], [{ content: 5 }, '{"content":5}']] as const) {
      const { dir, file } = withConfig(k, v);
      await refuses(dir, `${file}: "${k}" must be a string, an object with a string "content", or null, got ${got}`);
    }
  }
  for (const k of ['add_bos_token', 'add_eos_token']) {
    for (const ok of [true, false, null]) assert.ok(await loadTokenizer(withConfig(k, ok).dir), `${k} ${ok}`);
    for (const [v, got] of [['true', '"true"'], [1, '1'], [0, '0'], [[], '[]']] as const) {
      const { dir, file } = withConfig(k, v);
      await refuses(dir, `${file}: "${k}" must be true or false, got ${got}`);
    }
  }
  // what an ignored value cost: add_bos_token "false" (a string) still added BOS; false leaves it out
  const off = await loadTokenizer(withConfig('add_bos_token', false).dir);
  assert.notEqual(off!.encode('a')[0], off!.bosId);
});

test('a bos_token / eos_token the vocabulary lacks names tokenizer_config.json (was ignored: no BOS, no EOS id)', async () => {
  const vocab = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> }; added_tokens: { content: string }[] };
  for (const k of ['bos_token', 'eos_token']) {
    for (const v of ['<nope>', '', '<S>']) {
      assert.ok(!(v in vocab.model.vocab) && !vocab.added_tokens.some((t) => t.content === v), `the fixture has no ${JSON.stringify(v)}`);
      const { dir, file } = withConfig(k, v);
      await refuses(dir, `${file}: ${k} ${JSON.stringify(v)} is not a token of tokenizer.json (neither in model.vocab nor in added_tokens)`);
    }
    assert.ok(await loadTokenizer(withConfig(k, { content: '<unk>' }).dir));
  }
});
