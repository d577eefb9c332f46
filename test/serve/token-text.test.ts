// Token names, bytes and text offsets for logprobs: byte-level BPE, SentencePiece byte fallback, random Unicode.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bytesName, TextOffsets, TokenTexts, type ServeTokenizer } from '../../src/serve/token-text.js';
import { byteTokenizer } from './helpers.js';

test('byte-level tokens: whole UTF-8 keeps its text, a partial sequence is named bytes:\\xNN; specials keep their symbol', () => {
  const texts = new TokenTexts(byteTokenizer());
  assert.deepEqual(texts.get(0x41), { text: 'A', bytes: [0x41], special: false });
  assert.deepEqual(texts.get(0xe6), { text: 'bytes:\\xe6', bytes: [0xe6], special: false });
  assert.deepEqual(texts.get(0x0a), { text: '\n', bytes: [0x0a], special: false });
  assert.deepEqual(texts.get(1), { text: '<|begin_of_text|>', bytes: [...Buffer.from('<|begin_of_text|>')], special: true });
  assert.equal(bytesName([0xe6, 0x97, 0xa5]), 'bytes:\\xe6\\x97\\xa5');
});

test('SentencePiece pieces: byte-fallback tokens (<0xE6>) map to their byte; a Latin-1-looking piece is its character', () => {
  const vocab = new Map([[3, '<0xE6>'], [4, '<0x41>'], [5, '▁hi'], [6, '<s>'], [7, 'é']]);
  // The four lookups TokenTexts uses, over a tiny SentencePiece-style vocabulary.
  const spm = {
    idToToken: (id: number) => vocab.get(id), isSpecial: (id: number) => id === 6,
    decode: (ids: readonly number[]) => ids.map((id) => (id === 5 ? ' hi' : id === 7 ? 'é' : '\uFFFD')).join(''),
  } as unknown as ServeTokenizer;
  const texts = new TokenTexts(spm);
  assert.deepEqual(texts.get(3), { text: 'bytes:\\xe6', bytes: [0xe6], special: false });
  assert.deepEqual(texts.get(4), { text: 'A', bytes: [0x41], special: false });
  assert.deepEqual(texts.get(5), { text: ' hi', bytes: [...Buffer.from(' hi')], special: false });
  assert.deepEqual(texts.get(7), { text: 'é', bytes: [0xc3, 0xa9], special: false }, "a piece 'é' is the character, not latin-1 byte 0xe9");
});

test('TextOffsets on random Unicode split into random byte chunks: each chunk sits at the JS offset of the character its first byte is in', () => {
  let seed = 12345;
  const u = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const pool = ['a', ' ', '\n', 'é', 'ß', '日', '本', '語', '😀', '𝔘', 'Ω'];
  for (let trial = 0; trial < 200; trial++) {
    const text = Array.from({ length: 1 + Math.floor(u() * 12) }, () => pool[Math.floor(u() * pool.length)]!).join('');
    const bytes = [...Buffer.from(text)];
    const chunks: number[][] = [];
    for (let i = 0; i < bytes.length;) {
      const n = 1 + Math.floor(u() * 4);
      chunks.push(bytes.slice(i, i + n));
      i += n;
    }
    // Reference: byte position -> JS offset of the character holding it.
    const charAt: number[] = [];
    for (let o = 0; o < text.length;) {
      const ch = String.fromCodePoint(text.codePointAt(o)!);
      for (let k = 0; k < Buffer.byteLength(ch); k++) charAt.push(o);
      o += ch.length;
    }
    const offsets = new TextOffsets();
    let pos = 0;
    for (const c of chunks) {
      assert.equal(offsets.push({ text: '', bytes: c, special: false }, true), charAt[pos], `${JSON.stringify(text)} chunk at byte ${pos}`);
      pos += c.length;
    }
    assert.equal(offsets.push({ text: '', bytes: [], special: false }, true), text.length, 'the end is the text length');
  }
});
