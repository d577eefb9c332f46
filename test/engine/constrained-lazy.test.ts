// The lazy grammar of strict tools under tool_choice auto (engine/constrained/lazy.ts): free text unless the output
// opens a call as tool-calls.ts reads one ('{' or <|python_tag|> past leading blanks), then the calls grammar; free
// text is left unmasked (special tokens included); random walks that open a call end as calls that validate.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ajv } from 'ajv';
import { ConstraintCache, compileGrammar, type ConstraintSpec } from '../../src/engine/constrained/constraint.js';
import type { ByteGrammar } from '../../src/engine/constrained/grammar.js';
import { PYTHON_TAG } from '../../src/engine/constrained/lazy.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { parseToolCalls } from '../../src/serve/tool-calls.js';
import { rand } from './helpers.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const tok = (await loadTokenizer(BROWN))!;
const V = tok.vocabSize;
const TAG_ID = 4093; // floe-brown has no <|python_tag|>: its <|start_header_id|> plays it here
const WORD = [...Array(V).keys()].find((id) => /^[A-Za-z]{4,}$/.test(tok.idToToken(id) ?? ''))!; // free text
const brace = tok.tokenToId('{')!;
const vocab = { vocabSize: V, idToToken: (id: number) => (id === TAG_ID ? PYTHON_TAG : tok.idToToken(id)), isSpecial: (id: number) => tok.isSpecial(id) };
const WEATHER = { type: 'object', properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city'], additionalProperties: false };
const SUM = { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'], additionalProperties: false };
const spec: ConstraintSpec = { kind: 'tool_calls', parallel: true, text: 'free', tools: [{ name: 'get_weather', parameters: WEATHER }, { name: 'sum', parameters: SUM }] };
const ajv = new Ajv({ strict: false });
const schemaOf = new Map<string, object>([['get_weather', WEATHER], ['sum', SUM]]);

function accepts(g: ByteGrammar, text: string): boolean {
  let s: unknown = g.start;
  for (const b of new TextEncoder().encode(text)) { s = g.step(s, b); if (s === null) return false; }
  return g.accepts(s);
}

test('the lazy grammar: any text that opens no call; past blanks, "{" or the tag open calls that must be whole and valid', () => {
  const g = compileGrammar(spec);
  const call = '{"name": "sum", "parameters": {"a": 1, "b": 2}}';
  for (const t of ['', 'Hello there', ' \n', 'It is {"name": "sum"}', ';{"name": "sum"}', '<|py not a tag', '\u00a0{ anything', `${call}`, ` \n${call}; {"name": "get_weather", "parameters": {"city": "Lyon"}}`, `${PYTHON_TAG}${call}`, ` ${PYTHON_TAG} \n${call}`]) {
    assert.ok(accepts(g, t), `takes ${JSON.stringify(t)}`);
  }
  for (const t of ['{', '{"name": "other", "parameters": {}}', '{"name": "sum", "parameters": {"a": 1}}', `${call} and text`, `${PYTHON_TAG}`, `${PYTHON_TAG}hello`, `${PYTHON_TAG};${call}`, ' {"text": 1}']) {
    assert.ok(!accepts(g, t), `refuses ${JSON.stringify(t)}`);
  }
  // how tool-calls.ts reads them agrees: calls where the grammar opened them, text where it went free
  const names = new Set(['sum', 'get_weather']);
  assert.equal(parseToolCalls(` ${PYTHON_TAG} \n${call}`, names)?.calls.length, 1);
  assert.equal(parseToolCalls(`;${call}`, names), null, 'a ";" before the first call opens no call');
  assert.equal(parseToolCalls(`\u00a0${call}`, names), null, 'nor does a blank beyond ASCII');
});

test('masks: free text is left as it is (special tokens too); before any text the tag token opens calls; EOS only where the output may end', () => {
  const cache = new ConstraintCache(vocab, V, tok.eosIds);
  const r = rand(5);
  const row = () => Float32Array.from({ length: V }, () => r() * 4 - 2);
  const st = cache.get(spec).start();
  // at the start: every token the grammar takes from its start (text, '{' and blanks), the specials (the tag), EOS
  const g = compileGrammar(spec);
  const x = row(), m = Float32Array.from(x);
  st.apply(m);
  let refused = 0;
  for (let id = 0; id < V; id++) {
    const bytes = cache.table[id];
    let s: unknown = g.start;
    if (bytes) for (const b of bytes) { s = g.step(s, b); if (s === null) break; }
    const kept = bytes ? s !== null : tok.isSpecial(id);
    if (!kept) refused++;
    assert.equal(m[id], kept ? x[id] : -Infinity, `token ${id} ${JSON.stringify(vocab.idToToken(id))}`);
  }
  assert.ok(refused < V / 100, `${refused} tokens refused before any text`);
  // free text: no mask at all
  const free = st.fork();
  assert.ok(free.advance(WORD));
  const y = row(), my = Float32Array.from(y);
  free.apply(my);
  assert.deepEqual(my, y);
  assert.ok(free.advance(4093) && free.advance(tok.tokenToId('{')!), 'any token after free text');
  // the tag: a call must follow, not text, and EOS may not come yet
  const tagged = st.fork();
  assert.ok(tagged.advance(TAG_ID));
  const z = row(), mz = Float32Array.from(z);
  tagged.apply(mz);
  assert.equal(mz[brace], z[brace]);
  assert.equal(mz[WORD], -Infinity);
  for (const e of tok.eosIds) assert.equal(mz[e], -Infinity);
  assert.ok(!tagged.advance(TAG_ID) && !tagged.advance(WORD));
});

test('random walks that open a call end as calls tool-calls.ts reads and the schemas accept', () => {
  const cache = new ConstraintCache(vocab, V, tok.eosIds);
  const r = rand(11);
  const quoteOrClose = new Set([...Array(V).keys()].filter((id) => cache.table[id]?.some((b) => b === 0x22 || b === 0x7d)));
  const digits = new Set([...Array(V).keys()].filter((id) => cache.table[id]?.some((b) => b >= 0x30 && b <= 0x39)));
  let ended = 0;
  for (let w = 0; w < 24; w++) {
    const st = cache.get(spec).start();
    const ids: number[] = [];
    // the first token opens a call: '{', ' {' or the tag
    const first = [tok.tokenToId('{')!, TAG_ID][w % 2]!;
    assert.ok(st.advance(first));
    ids.push(first);
    for (let i = 0; i < 120 && !st.finished; i++) {
      const logits = Float32Array.from({ length: V }, (_, id) => r() + (quoteOrClose.has(id) ? 1.5 : 0) + (digits.has(id) ? 0.5 : 0) + (tok.eosIds.includes(id) ? 2 : 0));
      st.apply(logits);
      let best = 0;
      for (let v = 1; v < V; v++) if (logits[v]! > logits[best]!) best = v;
      assert.ok(st.advance(best), `walk ${w}: the masked argmax ${best} is allowed`);
      if (!st.finished) ids.push(best);
    }
    if (!st.finished) continue;
    ended++;
    const text = tok.decode(ids, { skipSpecialTokens: true });
    const parsed = parseToolCalls(text, new Set(schemaOf.keys()));
    assert.ok(parsed && parsed.content === null, `walk ${w}: calls only: ${JSON.stringify(text)}`);
    for (const c of parsed.calls) assert.ok(ajv.validate(schemaOf.get(c.function.name)!, JSON.parse(c.function.arguments)), `walk ${w}: ${text}`);
  }
  assert.ok(ended >= 12, `${ended} of 24 walks ended`);
});

test('with response_format: its value, or calls opened as the lazy grammar opens them (past blanks, "{" or the tag, as text or as the special token)', () => {
  const ANSWER = { type: 'object', properties: { answer: { type: 'string' } }, required: ['answer'], additionalProperties: false };
  const either: ConstraintSpec = { ...spec, text: { kind: 'json_schema', schema: ANSWER } };
  const g = compileGrammar(either);
  const call = '{"name": "sum", "parameters": {"a": 1, "b": 2}}';
  for (const t of ['{"answer": "hi"}', call, ` \n${call}`, `${PYTHON_TAG}${call}`, ` ${PYTHON_TAG} \n${call}; ${call}`]) assert.ok(accepts(g, t), `takes ${JSON.stringify(t)}`);
  for (const t of ['', 'Hello', '<|py not a tag', PYTHON_TAG, `${PYTHON_TAG}{"answer": "hi"}`, ' {"answer": "hi"}', '{"answer": "hi"} more', `${call} text`]) {
    assert.ok(!accepts(g, t), `refuses ${JSON.stringify(t)}`);
  }
  const cache = new ConstraintCache(vocab, V, tok.eosIds);
  const r = rand(7);
  const row = () => Float32Array.from({ length: V }, () => r() * 4 - 2);
  const st = cache.get(either).start();
  const x = row(), m = Float32Array.from(x);
  st.apply(m);
  assert.equal(m[TAG_ID], x[TAG_ID], 'the tag token may open calls before any text');
  assert.equal(m[brace], x[brace]);
  assert.equal(m[WORD], -Infinity, 'no free text');
  assert.equal(m[4094], -Infinity, 'no other special token');
  for (const e of tok.eosIds) assert.equal(m[e], -Infinity);
  const tagged = st.fork();
  assert.ok(tagged.advance(TAG_ID), 'the tag token is taken');
  const z = row(), mz = Float32Array.from(z);
  tagged.apply(mz);
  assert.equal(mz[brace], z[brace]);
  assert.equal(mz[TAG_ID], -Infinity);
  for (const e of tok.eosIds) assert.equal(mz[e], -Infinity);
  // the call after the tag, token by token as the tokenizer writes it, ends where EOS may come
  for (const id of tok.encode(call, { addSpecialTokens: false })) assert.ok(tagged.advance(id), `token ${id}`);
  assert.ok(tagged.complete && tagged.advance(tok.eosIds[0]!));
  assert.ok(!st.fork().advance(4094), 'another special token is refused');
});
