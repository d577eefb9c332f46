// GGUF tokenizer.ggml.{bos,eos,eot,eom}_token_id against the model's vocabulary: an id past it is refused naming the
// file, the key, the id and the vocabulary size (and where that size came from).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GgufType, ggufToLlamaConfig, parseGguf, readGguf, type GgufValue } from '../../src/formats/gguf.js';
import { gv, hfToGguf, writeGguf } from '../../src/formats/gguf-writer.js';
import { loadModel } from '../../src/formats/load.js';
import { makeTinyHf, tmpDir } from './fixtures.js';

const V = 64; // the tiny model's vocab_size (embedding and head rows)

/** A GGUF floe writes from a tiny HF model (vocab V, bos 1, eos [2, 3], no tokenizer), these keys set over its own. */
async function tinyGguf(extra: Record<string, GgufValue>): Promise<string> {
  const hf = await loadModel(makeTinyHf({ vocab: V, seed: 5 }).dir);
  const file = path.join(tmpDir('floe-gguf-ids-'), 'm.gguf');
  await hfToGguf(hf, file, 'f32', { tokenizerJson: null, extraMetadata: extra });
  hf.dispose();
  return file;
}

const past = (file: string, key: string, id: number, from: string, n: number, why: string) =>
  `${file}: metadata "tokenizer.ggml.${key}" ${id} is past the model's vocabulary (${from}: ids 0..${n - 1}); ${why}`;
const NEVER_STOPS = 'generation could never stop on it';
const NO_ROW = 'the embedding has no row for it';

test('GGUF eos / eot / eom / bos ids past llama.vocab_size are refused by loadModel and by the config read plan uses (were kept)', async () => {
  // the last id is an id like any other
  const ok = await tinyGguf({ 'tokenizer.ggml.bos_token_id': gv.u32(V - 1), 'tokenizer.ggml.eot_token_id': gv.u32(V - 1), 'tokenizer.ggml.eom_token_id': gv.u32(0) });
  const m = await loadModel(ok);
  assert.equal(m.config.bosTokenId, V - 1);
  assert.deepEqual(m.config.eosTokenIds, [2, V - 1, 0]);
  m.dispose();
  for (const [key, id, why] of [
    ['eos_token_id', V, NEVER_STOPS], ['eot_token_id', 128009, NEVER_STOPS], ['eom_token_id', V + 1, NEVER_STOPS], ['bos_token_id', V, NO_ROW],
    ['eos_token_id', 2 ** 32 - 1, NEVER_STOPS],
  ] as const) {
    const file = await tinyGguf({ [`tokenizer.ggml.${key}`]: gv.u32(id) });
    const want = past(file, key, id, `llama.vocab_size ${V}`, V, why);
    await assert.rejects(loadModel(file), (e: Error) => { assert.equal(e.message, want, key); return true; });
    // floe plan reads the config alone (src/cli/plan.ts)
    const g = await readGguf(file);
    assert.throws(() => ggufToLlamaConfig(g), (e: Error) => { assert.equal(e.message, want, key); return true; });
  }
});

test('GGUF token ids that are not ids (a string, a negative i32) are refused naming the key (were ignored: no stop, no bos)', async () => {
  for (const [key, v, shown] of [
    ['eos_token_id', gv.str('2'), '"2"'], ['eot_token_id', gv.i32(-1), '-1'], ['bos_token_id', gv.f32(1.5), '1.5'],
  ] as const) {
    const file = await tinyGguf({ [`tokenizer.ggml.${key}`]: v });
    await assert.rejects(loadModel(file), (e: Error) => {
      assert.equal(e.message, `${file}: metadata "tokenizer.ggml.${key}" must be a token id (an integer >= 0), got ${shown}`);
      return true;
    });
  }
});

test('without llama.vocab_size the bound is tokenizer.ggml.tokens\' length, else token_embd.weight\'s rows, and the message says which', () => {
  const D = 8, N = 24; // N embedding rows
  const dir = tmpDir('floe-gguf-ids-');
  const llama: Record<string, GgufValue> = {
    'general.architecture': gv.str('llama'), 'llama.context_length': gv.u32(64), 'llama.embedding_length': gv.u32(D),
    'llama.block_count': gv.u32(1), 'llama.feed_forward_length': gv.u32(16), 'llama.attention.head_count': gv.u32(2),
  };
  const embd = { name: 'token_embd.weight', dtype: 'f32' as const, shape: [N, D], data: new Uint8Array(N * D * 4) };
  const config = (extra: Record<string, GgufValue>, name: string) => {
    const file = path.join(dir, name);
    writeGguf(file, { ...llama, ...extra }, [embd]);
    return { file, read: () => ggufToLlamaConfig(parseGguf(new Uint8Array(fs.readFileSync(file)), file)) };
  };
  const byRows = config({ 'tokenizer.ggml.eos_token_id': gv.u32(N) }, 'rows.gguf');
  assert.throws(byRows.read, (e: Error) => { assert.equal(e.message, past(byRows.file, 'eos_token_id', N, `token_embd.weight's ${N} rows`, N, NEVER_STOPS)); return true; });
  const tokens = gv.arr(GgufType.STRING, Array.from({ length: 20 }, (_, i) => `t${i}`));
  const byTokens = config({ 'tokenizer.ggml.tokens': tokens, 'tokenizer.ggml.bos_token_id': gv.u32(20) }, 'tokens.gguf');
  assert.throws(byTokens.read, (e: Error) => { assert.equal(e.message, past(byTokens.file, 'bos_token_id', 20, '20 tokenizer.ggml.tokens', 20, NO_ROW)); return true; });
  const fine = config({ 'tokenizer.ggml.tokens': tokens, 'tokenizer.ggml.bos_token_id': gv.u32(19), 'tokenizer.ggml.eos_token_id': gv.u32(N - 1) }, 'fine.gguf');
  // with both, the tokens' length is the size (as for llama.vocab_size's default): an embedding row past them is no token
  assert.throws(fine.read, (e: Error) => { assert.equal(e.message, past(fine.file, 'eos_token_id', N - 1, '20 tokenizer.ggml.tokens', 20, NEVER_STOPS)); return true; });
  const c = config({ 'tokenizer.ggml.tokens': tokens, 'tokenizer.ggml.bos_token_id': gv.u32(19), 'tokenizer.ggml.eos_token_id': gv.u32(0) }, 'ok.gguf').read();
  assert.equal(c.vocabSize, 20);
  assert.equal(c.bosTokenId, 19);
  assert.deepEqual(c.eosTokenIds, [0]);
});

test('GGUF tokenizer.ggml.tokens longer than the vocabulary is refused (its last ids had no embedding row); shorter (a padded embedding) loads', async () => {
  const strings = (n: number) => gv.arr(GgufType.STRING, Array.from({ length: n }, (_, i) => `w${i}`));
  for (const n of [V + 1, V + 37]) {
    const file = await tinyGguf({ 'tokenizer.ggml.tokens': strings(n) });
    const want = `${file}: tokenizer.ggml.tokens holds ${n} tokens, more than the model's vocabulary (llama.vocab_size ${V}: ids 0..${V - 1}); ids ${V}..${n - 1} would have no embedding row and no logit`;
    await assert.rejects(loadModel(file), (e: Error) => { assert.equal(e.message, want); return true; });
    assert.throws(() => ggufToLlamaConfig(parseGguf(new Uint8Array(fs.readFileSync(file)), file)), (e: Error) => { assert.equal(e.message, want); return true; });
  }
  for (const n of [V, V - 4]) {
    const m = await loadModel(await tinyGguf({ 'tokenizer.ggml.tokens': strings(n) }));
    assert.equal(m.config.vocabSize, V);
    m.dispose();
  }
});
