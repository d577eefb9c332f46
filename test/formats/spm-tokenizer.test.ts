// SentencePiece tokenizers: llama.cpp parity on a GGUF, sentencepiece parity on tokenizer.model, a naive merge oracle.
//
// Fixtures (test/fixtures/spm/, README.md there): a BPE SentencePiece model trained on Brown with byte fallback, a
// tiny Llama GGUF carrying it, and the ids llama.cpp (node-llama-cpp) and the sentencepiece library gave for 243 strings.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readGguf } from '../../src/formats/gguf.js';
import { ggufToTokenizerJson, tokenizerFromGguf } from '../../src/formats/gguf-tokenizer.js';
import { loadTokenizer, Tokenizer } from '../../src/formats/tokenizer.js';
import { SpmCodec, SpmTokenizer, SpmTokenType, type SpmModel } from '../../src/formats/spm.js';
import { parseSpmModelProto, spmModelFromProto } from '../../src/formats/spm-model.js';
import { IncrementalDetokenizer } from '../../src/formats/detokenize.js';
import { rng, tmpDir } from './fixtures.js';
import { repoPath } from '../repo.js';

const FIX = repoPath('test/fixtures/spm/');

interface LlamaCppCase {
  text: string; ids: number[]; ids_special: number[];
  decoded: string; decoded_special: string; decoded_bos: string; decoded_bos_special: string;
}
interface SpCase { text: string; ids: number[]; decoded: string }
const llamaCpp = JSON.parse(fs.readFileSync(FIX + 'llama-cpp.json', 'utf8')) as { bos_id: number; cases: LlamaCppCase[] };
const sp = JSON.parse(fs.readFileSync(FIX + 'sentencepiece.json', 'utf8')) as {
  bos_id: number; eos_id: number; unk_id: number; vocab: { piece: string; score: number; type: number }[]; cases: SpCase[];
};

async function ggufTokenizer(): Promise<SpmTokenizer> {
  const g = await readGguf(FIX + 'spm-llama.gguf');
  const tok = tokenizerFromGguf(g.metadata);
  assert.ok(tok instanceof SpmTokenizer, 'a "llama" GGUF vocab gets the SentencePiece codec');
  return tok;
}

test('GGUF SentencePiece: encode equals llama.cpp on every case, with and without special-token parsing', async () => {
  const tok = await ggufTokenizer();
  assert.ok(llamaCpp.cases.length >= 200);
  for (const c of llamaCpp.cases) {
    assert.deepEqual(tok.encode(c.text, { addSpecialTokens: false }), c.ids_special, `parse_special: ${JSON.stringify(c.text)}`);
    assert.deepEqual(tok.encode(c.text, { addSpecialTokens: false, parseSpecial: false }), c.ids, `plain: ${JSON.stringify(c.text)}`);
    // add_bos_token = true in the file: BOS first, even for the empty text (as llama.cpp)
    assert.deepEqual(tok.encode(c.text), [llamaCpp.bos_id, ...c.ids_special]);
  }
});

test('GGUF SentencePiece: decode equals llama.cpp detokenize (special tokens written or skipped, BOS first or not)', async () => {
  const tok = await ggufTokenizer();
  const bos = llamaCpp.bos_id;
  for (const c of llamaCpp.cases) {
    const at = JSON.stringify(c.text);
    assert.equal(tok.decode(c.ids, { skipSpecialTokens: true }), c.decoded, at);
    assert.equal(tok.decode(c.ids_special), c.decoded_special, at);
    assert.equal(tok.decode([bos, ...c.ids], { skipSpecialTokens: true }), c.decoded_bos, at);
    assert.equal(tok.decode([bos, ...c.ids_special]), c.decoded_bos_special, at);
  }
  assert.throws(() => tok.decode([5, sp.vocab.length]), /token id 3000 at position 1 is not in the vocabulary \(size 3000\)/);
});

test('GGUF SentencePiece: streaming detokenization after BOS emits llama.cpp\'s text, never half a character', async () => {
  const tok = await ggufTokenizer();
  for (const c of llamaCpp.cases) {
    const d = new IncrementalDetokenizer(tok, { skipSpecialTokens: true, promptIds: [llamaCpp.bos_id] });
    let text = '';
    for (const id of c.ids) {
      const piece = d.push(id);
      assert.ok(!piece.includes('\uFFFD') || c.decoded_bos.includes('\uFFFD'), `no split UTF-8 in ${JSON.stringify(c.text)}`);
      text += piece;
    }
    text += d.flush();
    assert.equal(text, c.decoded_bos, JSON.stringify(c.text));
  }
});

test('GGUF SentencePiece: vocabulary, BOS/EOS and special ids come from the metadata', async () => {
  const tok = await ggufTokenizer();
  assert.equal(tok.vocabSize, sp.vocab.length);
  assert.equal(tok.bosId, sp.bos_id);
  assert.deepEqual(tok.eosIds, [sp.eos_id]);
  assert.ok(tok.isSpecial(sp.bos_id) && tok.isSpecial(sp.eos_id) && !tok.isSpecial(100));
  for (const id of [0, 3, 4, 300, 2999]) assert.equal(tok.idToToken(id), sp.vocab[id]!.piece);
  assert.equal(tok.tokenToId('<0x41>'), 4 + 0x41);
});

test('GGUF SentencePiece as an HF tokenizer.json (@huggingface/tokenizers): llama.cpp\'s ids except at a leading space and after special tokens', async () => {
  const g = await readGguf(FIX + 'spm-llama.gguf');
  const files = ggufToTokenizerJson(g.metadata);
  const hf = new Tokenizer(files.tokenizerJson, files.tokenizerConfig);
  // Metaspace adds no prefix to text already starting with a space, nor after an added token: llama.cpp does both
  const plain = llamaCpp.cases.filter((c) => !/^[ \u2581]/.test(c.text) && !/<s>|<\/s>|<unk>|<\|user\|>/.test(c.text));
  assert.ok(plain.length > 150, `${plain.length} cases`);
  for (const c of plain) assert.deepEqual(hf.encode(c.text, { addSpecialTokens: false }), c.ids_special, JSON.stringify(c.text));
  assert.notDeepEqual(hf.encode(' a', { addSpecialTokens: false }), (await ggufTokenizer()).encode(' a', { addSpecialTokens: false }));
});

test('GGUF SentencePiece metadata errors name the key and what was expected', async () => {
  const g = await readGguf(FIX + 'spm-llama.gguf');
  const bad = (k: string, v: unknown) => () => tokenizerFromGguf(new Map([...g.metadata, [k, v]]));
  assert.throws(bad('tokenizer.ggml.scores', [0, 1]), /tokenizer\.ggml\.scores: length 2 does not match tokenizer\.ggml\.tokens length 3000/);
  assert.throws(bad('tokenizer.ggml.unknown_token_id', 5000), /unknown_token_id: id 5000 is outside the vocabulary \(size 3000\)/);
  const types = Array.from(g.metadata.get('tokenizer.ggml.token_type') as ArrayLike<number>);
  types[300] = SpmTokenType.BYTE;
  assert.throws(bad('tokenizer.ggml.token_type', types), /token 300 has type BYTE but text "[^"]+", expected <0xNN>/);
});

test('tokenizer.model: the protobuf reader gives the pieces, scores and types the sentencepiece library reported', () => {
  const p = parseSpmModelProto(fs.readFileSync(FIX + 'tokenizer.model'), 'tokenizer.model');
  assert.equal(p.pieces.length, sp.vocab.length);
  for (let i = 0; i < p.pieces.length; i++) {
    assert.equal(p.pieces[i], sp.vocab[i]!.piece);
    assert.equal(p.scores[i], Math.fround(sp.vocab[i]!.score));
    // the library has no user-defined query: the fixture script marks those itself
    assert.equal(p.types[i], sp.vocab[i]!.type, `type of ${i}`);
  }
  assert.equal(p.modelType, 2);
  assert.ok(p.byteFallback && p.addDummyPrefix && !p.removeExtraWhitespaces);
  assert.deepEqual([p.unkId, p.bosId, p.eosId, p.padId], [sp.unk_id, sp.bos_id, sp.eos_id, -1]);
  assert.equal(p.normalizerName, 'identity');
});

test('HF dir with tokenizer.model and no tokenizer.json: encode and decode equal the sentencepiece library', async () => {
  const dir = tmpDir('floe-spm-');
  try {
    fs.copyFileSync(FIX + 'tokenizer.model', path.join(dir, 'tokenizer.model'));
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ tokenizer_class: 'LlamaTokenizer', bos_token: '<s>', eos_token: '</s>', add_bos_token: true }));
    const tok = await loadTokenizer(dir);
    assert.ok(tok instanceof SpmTokenizer);
    for (const c of sp.cases) {
      const ids = tok.encode(c.text, { addSpecialTokens: false, parseSpecial: false });
      assert.deepEqual(ids, c.ids, JSON.stringify(c.text));
      assert.equal(tok.decode(c.ids, { skipSpecialTokens: true }), c.decoded, JSON.stringify(c.text));
    }
    assert.deepEqual(tok.encode('Hello'), [sp.bos_id, ...sp.cases.find((c) => c.text === 'Hello world')!.ids.slice(0, 3)]);
    assert.equal(tok.eosToken, '</s>');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('tokenizer.model with remove_extra_whitespaces (sentencepiece\'s default): ids and decode equal the library', async () => {
  const dir = tmpDir('floe-spm-');
  try {
    fs.copyFileSync(FIX + 'tokenizer-rws.model', path.join(dir, 'tokenizer.model'));
    const tok = await loadTokenizer(dir);
    assert.ok(tok instanceof SpmTokenizer);
    const ref = JSON.parse(fs.readFileSync(FIX + 'tokenizer-rws.json', 'utf8')) as { cases: SpCase[] };
    assert.ok(ref.cases.some((c) => c.text.includes('  ')));
    for (const c of ref.cases) {
      assert.deepEqual(tok.encode(c.text, { addSpecialTokens: false, parseSpecial: false }), c.ids, JSON.stringify(c.text));
      assert.equal(tok.decode(c.ids, { skipSpecialTokens: true }), c.decoded, JSON.stringify(c.text));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------- protobuf edge cases

/** Protobuf writer for hand-made ModelProtos: [field, value] with strings / nested arrays as length-delimited. */
function proto(fields: [number, number | boolean | string | Uint8Array | 'f32' | [number, unknown][], number?][]): Uint8Array {
  const out: number[] = [];
  const varint = (v: number) => { let x = BigInt.asUintN(64, BigInt(v)); do { let b = Number(x & 127n); x >>= 7n; if (x > 0n) b |= 128; out.push(b); } while (x > 0n); };
  for (const [f, v, score] of fields) {
    if (typeof v === 'number' || typeof v === 'boolean') { varint(f * 8); varint(Number(v)); continue; }
    if (v === 'f32') { varint(f * 8 + 5); const b = new Uint8Array(4); new DataView(b.buffer).setFloat32(0, score!, true); out.push(...b); continue; }
    const body = typeof v === 'string' ? new TextEncoder().encode(v) : v instanceof Uint8Array ? v : proto(v as never);
    varint(f * 8 + 2); varint(body.length); out.push(...body);
  }
  return Uint8Array.from(out);
}

test('tokenizer.model: settings floe does not implement are refused with the reason; truncation is reported', () => {
  const pieces: [number, unknown][] = [[1, [[1, '<unk>'], [3, 2]]], [1, [[1, 'a'], [2, 'f32', -1]]]];
  const ok = parseSpmModelProto(proto([...pieces as never, [2, [[3, 2]]], [3, [[1, 'identity']]]]), 'm');
  assert.deepEqual([ok.pieces, Array.from(ok.types), Array.from(ok.scores)], [['<unk>', 'a'], [2, 1], [0, -1]]);
  assert.doesNotThrow(() => spmModelFromProto(ok, 'm'));
  const unigram = parseSpmModelProto(proto([...pieces as never, [2, [[3, 1], [41, -1]]]]), 'm');
  assert.equal(unigram.bosId, -1);
  assert.throws(() => spmModelFromProto(unigram, 'x.model'), /x\.model: sentencepiece model_type 1 \(UNIGRAM\) is not supported/);
  const nfkc = parseSpmModelProto(proto([...pieces as never, [2, [[3, 2]]], [3, [[1, 'nmt_nfkc'], [2, new Uint8Array(10)]]]]), 'm');
  assert.throws(() => spmModelFromProto(nfkc, 'x.model'), /normalizer 'nmt_nfkc' \(10-byte charsmap\) is not supported/);
  const bytes = proto([...pieces as never]);
  assert.throws(() => parseSpmModelProto(bytes.subarray(0, bytes.length - 2), 'cut.model'), /cut\.model: .*(runs past the end|truncated)/);
});

test('tokenizer.model: a piece or normalizer name that is not UTF-8 is refused naming the file, the field and the byte', () => {
  const bad = new Uint8Array([0x61, 0xff, 0x62]); // 'a', a byte no UTF-8 sequence starts with, 'b'
  const piece = proto([[1, [[1, '<unk>'], [3, 2]]], [1, [[1, bad]]]]);
  assert.throws(() => parseSpmModelProto(piece, 'x.model'), (e: Error) => e.constructor === Error && /^x\.model: piece 1 text is not valid UTF-8 \(3 bytes at byte \d+\)$/.test(e.message));
  const norm = proto([[1, [[1, '<unk>'], [3, 2]]], [3, [[1, bad]]]]);
  assert.throws(() => parseSpmModelProto(norm, 'x.model'), (e: Error) => e.constructor === Error && /^x\.model: normalizer_spec\.name is not valid UTF-8/.test(e.message));
});

// ---------------------------------------------------------------- naive oracle on random vocabularies

/**
 * llama.cpp's SPM merge written the slow way: repeatedly merge the adjacent pair whose concatenation is the
 * highest-scoring token (leftmost on ties), then map each symbol to its token or its UTF-8 byte tokens.
 */
function naiveEncode(text: string, m: SpmModel): number[] {
  const id = new Map<string, number>();
  m.pieces.forEach((p, i) => id.set(p, i));
  const out: number[] = [];
  let run = (m.addSpacePrefix ? ' ' : '') + text;
  run = run.replaceAll(' ', '\u2581');
  const syms = Array.from(run);
  for (;;) {
    let best = -1, bestScore = -Infinity;
    for (let i = 0; i + 1 < syms.length; i++) {
      const t = id.get(syms[i]! + syms[i + 1]!);
      if (t !== undefined && m.scores[t]! > bestScore) { best = i; bestScore = m.scores[t]!; }
    }
    if (best < 0) break;
    syms.splice(best, 2, syms[best]! + syms[best + 1]!);
  }
  for (const s of syms) {
    const t = id.get(s);
    if (t !== undefined) out.push(t);
    else for (const b of new TextEncoder().encode(s)) out.push(id.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)!);
  }
  return out;
}

test('SpmCodec equals the naive merge on random vocabularies (score ties included) and random strings; decode inverts encode', () => {
  const r = rng(Date.now() >>> 0);
  const alphabet = ['a', 'b', 'c', '\u2581', 'é', '😀', 'x'];
  for (let trial = 0; trial < 20; trial++) {
    const pieces = ['<unk>', '<s>', '</s>'];
    const types: number[] = [SpmTokenType.UNKNOWN, SpmTokenType.CONTROL, SpmTokenType.CONTROL];
    for (let b = 0; b < 256; b++) { pieces.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`); types.push(SpmTokenType.BYTE); }
    const seen = new Set(pieces);
    for (const ch of alphabet.slice(0, 5)) { pieces.push(ch); types.push(SpmTokenType.NORMAL); seen.add(ch); } // 'x', '😀' fall back to bytes
    while (pieces.length < 259 + 5 + 60) {
      const len = 2 + Math.floor(r() * 4);
      let p = '';
      for (let i = 0; i < len; i++) p += alphabet[Math.floor(r() * 5)];
      if (!seen.has(p)) { seen.add(p); pieces.push(p); types.push(SpmTokenType.NORMAL); }
    }
    const scores = pieces.map((_, i) => (i < 259 ? 0 : -Math.floor(r() * 8))); // few distinct scores: many ties
    const m: SpmModel = { pieces, scores, types, unkId: 0, addSpacePrefix: true, prefixMode: 'llama.cpp' };
    const codec = new SpmCodec(m, `trial ${trial}`);
    for (let k = 0; k < 30; k++) {
      let text = '';
      const n = Math.floor(r() * 30);
      for (let i = 0; i < n; i++) text += r() < 0.2 ? ' ' : alphabet[Math.floor(r() * alphabet.length)]!.replace('\u2581', ' ');
      const ids = codec.encode(text, false);
      assert.deepEqual(ids, text === '' ? [] : naiveEncode(text, m), `trial ${trial}: ${JSON.stringify(text)}`);
      assert.equal(codec.decode(ids, false), text);
    }
  }
});
