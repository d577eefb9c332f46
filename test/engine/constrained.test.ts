// Constrained decoding: grammars against ajv and JS RegExp, masks against a per-token brute force, and the engine
// producing schema-valid JSON for mixed schemas in one batch, and the same greedy tokens with speculation as without.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Ajv } from 'ajv';
import { z } from 'zod';
import { createRequire } from 'node:module';
import { Engine } from '../../src/engine/engine.js';
import { ConstraintCache, compileGrammar, type ConstraintSpec } from '../../src/engine/constrained/constraint.js';
import { textReads, type ByteGrammar, type JsonGrammar, type JsonState } from '../../src/engine/constrained/grammar.js';
import { ContinuationLengths, intersect, type Dfa } from '../../src/engine/constrained/dfa.js';
import { compileSchema, FORMATS, SchemaError } from '../../src/engine/constrained/json-schema.js';
import { toDec } from '../../src/engine/constrained/ranges.js';
import { RegexGrammar, choiceRegex, parseRegex, searchRegex } from '../../src/engine/constrained/regex.js';
import { Tokenizer, type TokenizerJson } from '../../src/formats/tokenizer.js';
import { openModel } from '../../src/model/open.js';
import { genReq, GREEDY, rand, runAll } from './helpers.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const brown = await openModel(BROWN, { threads: 2 });
const tok = brown.tokenizer!;
const V = brown.model.config.vocabSize;
const ajv = new Ajv({ strict: false });
(createRequire(import.meta.url)('ajv-formats') as (a: Ajv) => Ajv)(ajv); // ajv-formats (CommonJS): the formats' validators

const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer' },
    height: { type: 'number' },
    role: { enum: ['admin', 'user', 42, null] },
    tags: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 6 }, minItems: 1, maxItems: 3 },
    address: { type: 'object', properties: { city: { type: 'string', maxLength: 10 }, zip: { anyOf: [{ type: 'string', maxLength: 5 }, { type: 'integer' }] } }, required: ['city'], additionalProperties: false },
    active: { type: 'boolean' },
    nothing: { type: 'null' },
    kind: { const: 'person' },
  },
  required: ['name', 'age', 'tags', 'kind'],
  additionalProperties: false,
};
const SCHEMAS: Record<string, unknown> = {
  person: PERSON,
  list: { type: 'array', items: { type: 'object', properties: { x: { type: 'number' }, y: { type: 'array', items: { type: 'integer' } } }, required: ['x'] }, maxItems: 4 },
  scalar: { anyOf: [{ type: 'integer' }, { type: 'boolean' }, { type: 'string', maxLength: 8 }] },
};

function feed<S>(g: ByteGrammar<S>, text: string): S | null {
  let s: S | null = g.start;
  for (const b of Buffer.from(text, 'utf8')) { if (s === null) return null; s = g.step(s, b); }
  return s;
}
const acceptsText = <S>(g: ByteGrammar<S>, text: string): boolean => { const s = feed(g, text); return s !== null && g.accepts(s); };

/** A random-logits walk through the masks: every step samples among the allowed tokens. */
/** The cached mask of `st` equals walking every token's bytes through the grammar from `st`. */
function maskIsBruteForce(cache: ConstraintCache, g: ByteGrammar, st: unknown, what: string): void {
  const bits = cache.index.allowed(g, st);
  for (let v = 0; v < V; v++) {
    const bytes = cache.table[v];
    let x: unknown = st;
    if (bytes) for (const b of bytes) { x = g.step(x, b); if (x === null) break; }
    assert.equal(((bits[v >>> 5]! >>> (v & 31)) & 1) === 1, bytes !== null && x !== null, `${what}: token ${v} ${JSON.stringify(tok.idToToken(v))}`);
  }
}

/** `quote`: a boost for tokens with a '"' in them, so walks through strings that never need to end (a URL's path) close. */
function randomWalk(cache: ConstraintCache, spec: ConstraintSpec, r: () => number, maxTokens: number, quote = 0): { ids: number[]; ended: boolean } {
  const st = cache.get(spec).start();
  const ids: number[] = [];
  const logits = new Float32Array(V);
  for (let i = 0; i < maxTokens; i++) {
    for (let v = 0; v < V; v++) logits[v] = r() * 4;
    // lean towards closing: EOS and structural bytes get a boost so walks finish
    for (const e of tok.eosIds) logits[e] = 6;
    if (quote > 0) for (let v = 0; v < V; v++) if (cache.table[v]?.includes(0x22)) logits[v]! += quote;
    st.apply(logits);
    let best = -1;
    for (let v = 0; v < V; v++) if (best < 0 || logits[v]! > logits[best]!) best = v;
    assert.ok(logits[best]! > -Infinity, `step ${i}: no token allowed`);
    assert.ok(st.advance(best), `step ${i}: the masked choice ${best} was refused by advance()`);
    if (tok.eosIds.includes(best)) return { ids, ended: true };
    ids.push(best);
  }
  return { ids, ended: false };
}

/** Random walks through the masks: each one that ends is schema-valid (ajv with formats); returns how many ended. */
function walksValid(cache: ConstraintCache, schema: object, r: () => number, walks: number, maxTokens: number, quote = 0): number {
  let ended = 0;
  for (let i = 0; i < walks; i++) {
    const w = randomWalk(cache, { kind: 'json_schema', schema }, r, maxTokens, quote);
    if (!w.ended) continue;
    ended++;
    const text = tok.decode(w.ids);
    assert.ok(ajv.validate(schema, JSON.parse(text)), `${JSON.stringify(schema).slice(0, 200)}: ${text} ${ajv.errorsText()}`);
  }
  return ended;
}

test('JSON grammar accepts compact JSON.stringify of valid instances and refuses invalid ones (ajv decides)', () => {
  const g = compileGrammar({ kind: 'json_schema', schema: PERSON });
  const valid = [
    { name: 'A"\\ é😀\u0001', age: -3, tags: ['x'], kind: 'person' },
    { name: '123456789012', age: 1, tags: ['abcdef'], kind: 'person' },
    { name: '', age: 0, height: -1.5e-3, role: 42, tags: ['a', 'b', 'c'], address: { city: 'Oslo', zip: 123 }, active: false, nothing: null, kind: 'person' },
    { name: 'B', age: 7, role: null, tags: ['q'], address: { city: 'X', zip: '0' }, kind: 'person' },
  ];
  for (const v of valid) {
    assert.ok(ajv.validate(PERSON, v));
    assert.ok(acceptsText(g, JSON.stringify(v)), JSON.stringify(v));
  }
  const invalid = [
    { name: 'A', age: 1.5, tags: ['x'], kind: 'person' },
    { name: 'A', age: 1, tags: [], kind: 'person' },
    { name: 'A', age: 1, tags: ['a', 'b', 'c', 'd'], kind: 'person' },
    { name: 'A', tags: ['x'], kind: 'person' },
    { name: 'A', age: 1, tags: ['x'], kind: 'robot' },
    { name: 'A', age: 1, role: 'root', tags: ['x'], kind: 'person' },
    { name: 'A', age: 1, tags: ['x'], kind: 'person', extra: 1 },
    { name: 'A', age: 1, tags: ['x'], address: { zip: 1 }, kind: 'person' },
    { name: '1234567890123', age: 1, tags: ['x'], kind: 'person' },
    { name: 'A', age: 1, tags: [''], kind: 'person' },
  ];
  for (const v of invalid) {
    assert.ok(!ajv.validate(PERSON, v), JSON.stringify(v));
    assert.ok(!acceptsText(g, JSON.stringify(v)), JSON.stringify(v));
  }
  // one space after ':' and ',' (Llama's own style), no other whitespace
  assert.ok(acceptsText(g, '{"name": "A", "age": 1, "tags": ["x", "y"], "kind": "person"}'));
  for (const t of ['{ "name":"A","age":1,"tags":["x"],"kind":"person"}', '{"name":  "A","age":1,"tags":["x"],"kind":"person"}', '{"name":"A","age":1,"tags":["x"],"kind":"person" }', '{"name":"A","age":1,"tags":["x"],"kind":"person"} ']) {
    assert.ok(!acceptsText(g, t), t);
  }
  // truncated values are not complete: EOS is refused there
  const full = JSON.stringify(valid[1]);
  for (let i = 1; i < full.length; i++) assert.ok(!acceptsText(g, full.slice(0, i)), full.slice(0, i));
  // numbers: what JSON.parse reads, and not what it refuses
  const num = compileGrammar({ kind: 'json_schema', schema: { type: 'number' } });
  for (const s of ['0', '-0', '12', '1.25', '-3e7', '2E-2', '1.5e+3']) assert.ok(acceptsText(num, s), s);
  for (const s of ['01', '1.', '.5', '-', '1e', '+1', '1.5e', '1e1234', '1'.repeat(17)]) assert.ok(!acceptsText(num, s), s);
});

test('unsupported schema keywords are refused by name', () => {
  for (const [schema, kw] of [
    [{ type: 'string', pattern: '(?=a)b' }, 'pattern'],
    [{ type: 'object', properties: { a: { type: 'string', format: 'iri' } } }, 'format'],
    [{ $ref: '#/defs/x' }, '$ref'],
    [{ type: 'integer', not: { const: 3 } }, 'not'],
    [{ type: 'array', uniqueItems: true }, 'uniqueItems'],
  ] as const) {
    assert.throws(() => compileSchema(schema), (e: unknown) => e instanceof SchemaError && e.keyword === kw && e.message.includes(`'${kw}'`));
  }
});

test('schemas as users write them: each keyword holds (ajv decides), whole texts and random walks', () => {
  const cases: { schema: object; valid: unknown[]; invalid: unknown[]; narrowed?: unknown[] }[] = [
    // a key with a quote and a backslash in it: its escaped bytes hold '"'
    { schema: { type: 'object', properties: { 'say "hi"\\': { type: 'boolean' } }, required: ['say "hi"\\'] }, valid: [{ 'say "hi"\\': true }], invalid: [{}] },
    // a map: every value is the additionalProperties schema
    { schema: { type: 'object', additionalProperties: { type: 'integer' } }, valid: [{}, { a: 1, 'b c': -2 }], invalid: [{ a: 'x' }, { a: 1.5 }, { a: [1] }] },
    // enum beside type: values of another type are never produced
    { schema: { type: 'string', enum: ['a', 'b', 3, null] }, valid: ['a', 'b'], invalid: [3, null] },
    { schema: { type: ['integer', 'null'], enum: [1, 'x', null, 2.5] }, valid: [1, null], invalid: ['x', 2.5] },
    // keywords without 'type' apply to the type they name
    { schema: { properties: { x: { type: 'integer' } }, required: ['x'] }, valid: [{ x: 1 }], invalid: [{ x: 'a' }, {}], narrowed: ['a', 1] },
    { schema: { items: { type: 'integer' }, minItems: 1 }, valid: [[1], [1, 2]], invalid: [['a'], []], narrowed: ['a', true] },
    { schema: { maxLength: 2 }, valid: ['', 'ab'], invalid: ['abc'], narrowed: [1] },
    { schema: { type: ['string', 'null'], maxLength: 3 }, valid: ['abc', null], invalid: ['abcd', 1] },
  ];
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  const r = rand(21);
  for (const { schema, valid, invalid, narrowed = [] } of cases) {
    const g = compileGrammar({ kind: 'json_schema', schema });
    for (const v of valid) { assert.ok(ajv.validate(schema, v), JSON.stringify(v)); assert.ok(acceptsText(g, JSON.stringify(v)), `${JSON.stringify(schema)} takes ${JSON.stringify(v)}`); }
    for (const v of invalid) { assert.ok(!ajv.validate(schema, v), JSON.stringify(v)); assert.ok(!acceptsText(g, JSON.stringify(v)), `${JSON.stringify(schema)} refuses ${JSON.stringify(v)}`); }
    // valid, but of another type than the keywords speak of: not produced
    for (const v of narrowed) assert.ok(!acceptsText(g, JSON.stringify(v)), `${JSON.stringify(schema)} does not produce ${JSON.stringify(v)}`);
    assert.ok(walksValid(cache, schema, r, 8, 200) > 0, `${JSON.stringify(schema)}: no walk ended`);
  }
});

test('schemas that no output could honour are refused by keyword and path, not decoded unenforced', () => {
  for (const [schema, kw, path] of [
    [{ type: 'object', properties: { a: { type: [] } } }, 'type', '#/properties/a'],
    [{ type: 'object', required: ['id'] }, 'required', '#'],
    [{ properties: { a: { type: 'string' } }, required: ['a'], anyOf: [{ type: 'object' }, { type: 'null' }] }, 'properties', '#'],
    [{ anyOf: [{ type: 'string' }], oneOf: [{ type: 'null' }] }, 'oneOf', '#'],
    [{ type: 'object', properties: { e: { type: 'string', enum: [1, 2] } } }, 'enum', '#/properties/e'],
    [{ type: 'object', additionalProperties: { type: 'string', format: 'iri' } }, 'format', '#/additionalProperties'],
  ] as const) {
    assert.throws(() => compileSchema(schema), (e: unknown) => e instanceof SchemaError && e.keyword === kw && e.path === path && e.message.includes(`'${kw}'`), JSON.stringify(schema));
  }
});

test('regex grammar agrees with JS RegExp on random strings', () => {
  const r = rand(7);
  const patterns = ['[a-c]+(x|yz)?\\d{2,3}', '(ab|a)*b', '\\w+@\\w+\\.(com|org)', '[^a]é?.{0,2}', '(?:0|[1-9]\\d*)(\\.\\d+)?'];
  const alphabet = ['a', 'b', 'c', 'x', 'y', 'z', '0', '1', '9', '@', '.', 'é', '\n', 'o', 'm'];
  for (const p of patterns) {
    const g = new RegexGrammar(p);
    const re = new RegExp(`^(?:${p})$`, 'u');
    let agreed = 0;
    for (let i = 0; i < 400; i++) {
      const s = Array.from({ length: Math.floor(r() * 7) }, () => alphabet[Math.floor(r() * alphabet.length)]).join('');
      assert.equal(acceptsText(g, s), re.test(s), `${p} on ${JSON.stringify(s)}`);
      if (re.test(s)) agreed++;
    }
    for (const s of ['abx12', 'b', 'ab@cd.com', 'bé\n', '10.5']) assert.equal(acceptsText(g, s), re.test(s), `${p} on ${s}`);
    void agreed;
  }
  const choice = new RegexGrammar(choiceRegex(['yes', 'no', 'a.b (c)']));
  for (const s of ['yes', 'no', 'a.b (c)']) assert.ok(acceptsText(choice, s));
  for (const s of ['ye', 'yesno', 'axb (c)', '']) assert.ok(!acceptsText(choice, s));
});

test('masks equal a per-token brute force over the real vocabulary, at fresh random states', () => {
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  const r = rand(11);
  const specs: ConstraintSpec[] = [{ kind: 'json_schema', schema: PERSON }, { kind: 'json_object' }, { kind: 'regex', pattern: '[0-9]{1,4}-(foo|bar)+' }];
  for (const spec of specs) {
    const c = cache.get(spec);
    const g = c.grammar;
    const walk = randomWalk(cache, spec, r, 12);
    let s: unknown = g.start;
    const states = [s];
    for (const id of walk.ids) { for (const b of cache.table[id]!) s = g.step(s, b)!; states.push(s); }
    // apply() (bitset or id-list path) leaves exactly the allowed tokens, plus EOS where the value is complete
    const cs = c.start();
    for (let k = 0; k <= walk.ids.length; k++) {
      const row = Float32Array.from({ length: V }, () => r());
      cs.apply(row);
      const bits = cache.index.allowed(g, states[k]);
      for (let v = 0; v < V; v++) {
        const want = ((bits[v >>> 5]! >>> (v & 31)) & 1) === 1 || (tok.eosIds.includes(v) && g.accepts(states[k]));
        assert.equal(row[v]! > -Infinity, want, `${spec.kind} step ${k}: token ${v}`);
      }
      if (k < walk.ids.length) assert.ok(cs.advance(walk.ids[k]!));
    }
    for (const st of states) maskIsBruteForce(cache, g, st, spec.kind);
  }
});

test('random walks through the masks always end in schema-valid JSON', () => {
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  const r = rand(3);
  for (const [name, schema] of Object.entries(SCHEMAS)) {
    assert.ok(walksValid(cache, schema as object, r, 6, 400) > 0, `${name}: no walk ended`);
  }
});

test('engine: different schemas, a regex and a choice in one batch, sampled and greedy, with n-gram speculation, all decode valid; max_tokens cuts with length', () => {
  const engine = new Engine(brown.model, tok, { kvDtype: 'f32', kvCacheMemory: 64 << 20, maxNumSeqs: 16, speculative: 'ngram', extraEosIds: tok.eosIds });
  const prompt = tok.encode('The committee said on Friday that the', { addSpecialTokens: true });
  const sampled = { ...GREEDY, temperature: 0.9, seed: 5 };
  const reqs = [
    ...Object.entries(SCHEMAS).flatMap(([name, schema]) => [0, 1].map((i) => genReq(`${name}${i}`, prompt, {
      maxTokens: 160, sampling: i === 0 ? GREEDY : sampled, constraint: { kind: 'json_schema', schema }, n: i + 1,
    }))),
    genReq('obj', prompt, { maxTokens: 40, sampling: sampled, constraint: { kind: 'json_object' } }),
    genReq('re', prompt, { maxTokens: 40, sampling: sampled, constraint: { kind: 'regex', pattern: '(the|a) [a-z]+ (is|was) [0-9]{2}' } }),
    genReq('choice', prompt, { maxTokens: 10, sampling: sampled, constraint: { kind: 'choice', choices: ['red', 'green', 'blue'] } }),
    genReq('cut', prompt, { maxTokens: 3, constraint: { kind: 'json_schema', schema: PERSON } }),
    genReq('free', [...prompt, ...tok.encode(' the man and the man and the man and the')], { maxTokens: 30, ignoreEos: true }),
  ];
  for (const q of reqs) engine.add(q);
  const { byId, other } = runAll(engine);
  assert.deepEqual(other, []);
  for (const [name, schema] of Object.entries(SCHEMAS)) {
    for (const i of [0, 1]) {
      const c = byId.get(`${name}${i}`)!;
      for (let k = 0; k <= i; k++) {
        assert.equal(c.finish[k], 'stop', `${name}${i}[${k}]: ${c.text[k]}`);
        assert.ok(ajv.validate(schema as object, JSON.parse(c.text[k]!)), `${name}${i}[${k}]: ${c.text[k]} ${ajv.errorsText()}`);
      }
    }
  }
  const obj = byId.get('obj')!;
  assert.ok(obj.text[0]!.startsWith('{'));
  if (obj.finish[0] === 'stop') assert.equal(typeof JSON.parse(obj.text[0]!), 'object'); // free strings may run to max_tokens
  const re = byId.get('re')!;
  if (re.finish[0] === 'stop') assert.match(re.text[0]!, /^(the|a) [a-z]+ (is|was) [0-9]{2}$/);
  assert.ok(['red', 'green', 'blue'].includes(byId.get('choice')!.text[0]!), byId.get('choice')!.text[0]);
  const cut = byId.get('cut')!;
  assert.equal(cut.finish[0], 'length');
  assert.equal(cut.tokens[0]!.length, 3);
  const t = cut.text[0]!;
  assert.ok(t.length > 0 && ('{"name":"'.startsWith(t) || t.startsWith('{"name":"')), t); // the only way a person starts
  assert.ok(engine.runner.maskedSamples > 0, 'the masked sampling path ran');
  assert.ok((engine.stats().specSteps ?? 0) > 0, 'speculation ran');
});

test('engine: greedy constrained decoding with n-gram speculation gives the tokens it gives without; drafts were verified', () => {
  const prompt = tok.encode('The committee said on Friday that the committee said on Friday that the', { addSpecialTokens: true });
  const specs: ConstraintSpec[] = [
    { kind: 'json_schema', schema: SCHEMAS.person }, { kind: 'json_schema', schema: SCHEMAS.list },
    { kind: 'regex', pattern: '(the committee said on [A-Z][a-z]+ ?)+' }, { kind: 'json_object' },
  ];
  const run = (speculative: boolean) => {
    const engine = new Engine(brown.model, tok, { kvDtype: 'f32', kvCacheMemory: 64 << 20, extraEosIds: tok.eosIds, ...(speculative ? { speculative: 'ngram' as const, numSpeculativeTokens: 4 } : {}) });
    specs.forEach((constraint, i) => engine.add(genReq(`c${i}`, prompt, { maxTokens: 120, constraint })));
    const { byId } = runAll(engine);
    return { tokens: specs.map((_, i) => byId.get(`c${i}`)!.tokens[0]!), stats: engine.stats(), masked: engine.runner.maskedSamples };
  };
  const plain = run(false);
  const spec = run(true);
  assert.deepEqual(spec.tokens, plain.tokens);
  assert.ok((spec.stats.specSteps ?? 0) > 0 && (spec.stats.specAcceptedTokens ?? 0) > 0, `drafts verified and accepted: ${JSON.stringify(spec.stats)}`);
  assert.ok(spec.masked > 0);
});

test('engine: a constraint the compiler refuses is a 400 naming the keyword', () => {
  const engine = new Engine(brown.model, tok, { kvDtype: 'f32', kvCacheMemory: 8 << 20 });
  assert.throws(() => engine.add(genReq('bad', [1, 2, 3], { constraint: { kind: 'json_schema', schema: { type: 'array', uniqueItems: true } } })),
    (e: unknown) => (e as { status?: number }).status === 400 && /'uniqueItems'/.test((e as Error).message));
  assert.throws(() => engine.add(genReq('bad1', [1, 2, 3], { constraint: { kind: 'json_schema', schema: { type: 'integer', multipleOf: 997 } } })),
    (e: unknown) => (e as { status?: number }).status === 400 && /'multipleOf' 997 at # cannot be enforced/.test((e as Error).message));
  assert.throws(() => engine.add(genReq('bad2', [1, 2, 3], { constraint: { kind: 'regex', pattern: '(a)\\1' } })), /backreferences/);
  assert.throws(() => engine.add(genReq('bad3', [1, 2, 3], { ignoreEos: true, constraint: { kind: 'json_object' } })), /ignore_eos/);
});

// ---- $ref, numeric bounds, pattern, format: schemas pydantic and zod write ----

const PYDANTIC = JSON.parse(readFileSync(repoPath('test/fixtures/schemas/pydantic.json'), 'utf8')) as Record<string, object>;


test('$ref: pydantic $defs, recursion (tree, linked list), definitions and the root; random walks end valid', () => {
  const root = { type: 'object', properties: { v: { type: 'integer', minimum: 0, maximum: 9 }, kids: { type: 'array', items: { $ref: '#' }, maxItems: 2 } }, required: ['v', 'kids'] };
  const zodStyle = { type: 'object', properties: { a: { $ref: '#/definitions/P%20t' }, b: { $ref: '#/definitions/P%20t' } }, required: ['a', 'b'], definitions: { 'P t': { type: 'object', properties: { x: { type: 'boolean' } }, required: ['x'], additionalProperties: false } } };
  const allOf = { $defs: { E: { enum: ['a', 'b'] } }, type: 'object', properties: { e: { allOf: [{ $ref: '#/$defs/E' }], description: 'older pydantic' } }, required: ['e'] };
  const cases: [object, unknown[], unknown[]][] = [
    [PYDANTIC.tree!, [{ value: 1 }, { value: -10, children: [{ value: 10, children: [] }, { value: 0, children: [{ value: 3 }] }] }], [{ value: 11 }, { value: 1, children: [{}] }, { value: 1, children: [{ value: 1 }, { value: 1 }, { value: 1 }, { value: 1 }] }]],
    [PYDANTIC.list!, [{ label: 'a' }, { label: 'a', next: { label: 'b', next: { label: 'c', next: null } } }], [{ label: 'a', next: { next: null } }, { label: 'toolonglabel' }]],
    [root, [{ v: 1, kids: [] }, { v: 2, kids: [{ v: 3, kids: [] }] }], [{ v: 1 }, { v: 1, kids: [{ v: 10, kids: [] }] }]],
    [zodStyle, [{ a: { x: true }, b: { x: false } }], [{ a: { x: 1 }, b: { x: true } }, { a: { x: true } }]],
    [allOf, [{ e: 'a' }], [{ e: 'c' }]],
  ];
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  const r = rand(31);
  for (const [schema, valid, invalid] of cases) {
    const g = compileGrammar({ kind: 'json_schema', schema });
    for (const v of valid) { assert.ok(ajv.validate(schema, v), JSON.stringify(v)); assert.ok(acceptsText(g, JSON.stringify(v)), `takes ${JSON.stringify(v)}`); }
    for (const v of invalid) { assert.ok(!ajv.validate(schema, v), JSON.stringify(v)); assert.ok(!acceptsText(g, JSON.stringify(v)), `refuses ${JSON.stringify(v)}`); }
    assert.ok(walksValid(cache, schema, r, 8, 300) > 0, `${JSON.stringify(schema).slice(0, 120)}: no walk ended`);
  }
  // a deep recursion: the grammar stays finite (rules referencing rules), the state is a stack
  const deep = JSON.stringify(Array.from({ length: 200 }).reduce<object | null>((next, _, i) => ({ label: `n${i % 10}`, next }), null));
  assert.ok(acceptsText(compileGrammar({ kind: 'json_schema', schema: PYDANTIC.list! }), deep));
});

test('$ref that cannot be honoured is refused naming the ref and its path', () => {
  for (const [schema, path, msg] of [
    [{ type: 'object', properties: { a: { $ref: 'http://example.com/s.json' } } }, '#/properties/a', /'\$ref' "http:\/\/example.com\/s.json".*only references inside/],
    [{ $defs: { A: { type: 'string' } }, type: 'array', items: { $ref: '#/$defs/B' } }, '#/items', /'\$ref' "#\/\$defs\/B" at #\/items points to nothing/],
    [{ anyOf: [{ $ref: '#' }, { type: 'null' }] }, '#/anyOf/0', /refers back to itself before any value begins/],
    [{ $defs: { A: { $ref: '#/$defs/A' } }, $ref: '#/$defs/A' }, '#', /'\$ref' "#\/\$defs\/A" at # refers back to itself/],
    [{ $defs: { N: { type: 'object', properties: { next: { $ref: '#/$defs/N' } }, required: ['next'] } }, $ref: '#/$defs/N' }, '#', /recurses without a way out/],
    [{ type: 'object', properties: { a: { $ref: '#/$defs/A', type: 'object' } }, $defs: { A: {} } }, '#/properties/a', /'type' beside '\$ref'/],
    [{ allOf: [{ type: 'string' }, { maxLength: 3 }] }, '#', /'allOf' at # is supported with exactly one schema/],
  ] as const) {
    assert.throws(() => compileSchema(schema), (e: unknown) => e instanceof SchemaError && e.path === path && msg.test(e.message), JSON.stringify(schema));
  }
});

test('numeric bounds: integer and number grammars agree with ajv on fresh random bounds and values; no exponent, no value out of range', () => {
  const r = rand(41);
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  let checked = 0, walked = 0;
  for (let k = 0; k < 120; k++) {
    const type = r() < 0.5 ? 'integer' : 'number';
    const bound = (): number => { const d = type === 'integer' || r() < 0.4 ? 1 : 10 ** (1 + Math.floor(r() * 3)); return Math.round((r() * 240 - 120) * d) / d; };
    const schema: Record<string, unknown> = { type };
    const sides = r() < 0.6 ? ['Minimum', 'Maximum'] : [r() < 0.5 ? 'Minimum' : 'Maximum'];
    for (const side of sides) schema[r() < 0.5 ? side.toLowerCase() : `exclusive${side}`] = bound();
    let g: ByteGrammar;
    try { g = compileGrammar({ kind: 'json_schema', schema }); } catch (e) {
      // an empty range is a 400 naming the bound, and ajv agrees nothing fits
      assert.ok(e instanceof SchemaError && /^(exclusiveM|m)(in|ax)imum$/.test(e.keyword) && /no (integer|number) is/.test(e.message), String(e));
      for (let x = -130; x <= 130; x += 0.25) assert.ok(!ajv.validate(schema, x) || (type === 'integer' && !Number.isInteger(x)) || type === 'number', `${JSON.stringify(schema)} refused but ${x} fits`);
      continue;
    }
    for (let i = 0; i < 200; i++) {
      const scale = type === 'integer' ? 1 : 10 ** Math.floor(r() * 5);
      const x = Math.round((r() * 260 - 130) * scale) / scale;
      assert.equal(acceptsText(g, String(x)), ajv.validate(schema, x), `${JSON.stringify(schema)} on ${x}`);
      checked++;
    }
    for (const t of ['1e2', '-0', '01', '1.', '+1', '1.0e1']) assert.ok(!acceptsText(g, t), `${JSON.stringify(schema)} refuses ${t}`);
    if (k % 10 === 0) walked += walksValid(cache, schema, r, 3, 40);
  }
  assert.ok(checked > 15000 && walked > 0, `${checked} values, ${walked} walks`);
  // exact at the edges: bounds with 16-17 digit shortest forms, 15-digit values, the safe integer limit
  const edge = compileGrammar({ kind: 'json_schema', schema: { type: 'number', exclusiveMinimum: 0.1 + 0.2, exclusiveMaximum: 1234567890123.5 } });
  for (const x of [0.3, 0.30000000000000004, 0.3000000000001, 1234567890123.4, 1234567890123.5, 12345678901234]) {
    if (!/e/.test(String(x)) && String(x).replace(/[-.]/g, '').length <= 15) assert.equal(acceptsText(edge, String(x)), ajv.validate({ type: 'number', exclusiveMinimum: 0.1 + 0.2, exclusiveMaximum: 1234567890123.5 }, x), String(x));
  }
  const big = compileGrammar({ kind: 'json_schema', schema: { type: 'integer', minimum: -1 } });
  assert.ok(acceptsText(big, String(Number.MAX_SAFE_INTEGER)) && !acceptsText(big, String(2 ** 53)) && !acceptsText(big, '-2'));
  assert.throws(() => compileSchema({ type: 'integer', exclusiveMinimum: true, minimum: 1 }), (e: unknown) => e instanceof SchemaError && e.keyword === 'exclusiveMinimum' && /draft-4/.test(e.message));
});

/** Whether a number's text is an exact decimal multiple of m: |v|·10^s / (a·10^-f) is an integer, m = a·10^-s, v's f fraction digits. */
function isMultiple(text: string, m: number): boolean {
  const [i, f = ''] = text.replace('-', '').split('.');
  const { dec } = toDec(m);
  return (BigInt(i! + f) * 10n ** BigInt(dec.frac.length)) % (BigInt(`${dec.int}${dec.frac}`) * 10n ** BigInt(f.length)) === 0n;
}

test('multipleOf: integer and number steps with bounds beside them, on fresh random steps, bounds and values: exact in decimal, as zod checks; ajv agrees exactly where the step is a binary fraction; masks equal the brute force', () => {
  const r = rand(43);
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  let checked = 0, accepted = 0, walked = 0, refused = 0, fullAjv = 0;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  for (let k = 0; k < 90; k++) {
    const type = r() < 0.4 ? 'integer' : 'number';
    // integers, binary fractions (0.5, 0.375, 2.25), decimals (0.01, 0.3, 1.05, 1e-7)
    const kind = pick(['int', 'dyadic', 'decimal']);
    const m = kind === 'int' ? 1 + Math.floor(r() * 60) : kind === 'dyadic' ? (1 + Math.floor(r() * 15)) / 2 ** (1 + Math.floor(r() * 4)) : Number(`${1 + Math.floor(r() * 30)}e-${1 + Math.floor(r() * (r() < 0.1 ? 7 : 3))}`);
    const dyadic = (() => { const { dec } = toDec(m); return BigInt(`${dec.int}${dec.frac}`) % 5n ** BigInt(dec.frac.length) === 0n; })();
    const schema: Record<string, unknown> = { type, multipleOf: m };
    if (r() < 0.6) for (const side of r() < 0.5 ? ['Minimum', 'Maximum'] : [r() < 0.5 ? 'Minimum' : 'Maximum']) schema[r() < 0.5 ? side.toLowerCase() : `exclusive${side}`] = Math.round((r() * 240 - 120) * 4) / 4;
    const { multipleOf: _, ...bounds } = schema;
    let g: ByteGrammar;
    try { g = compileGrammar({ kind: 'json_schema', schema }); } catch (e) {
      // no multiple between the bounds (scanned at the step): the bound is named where the bounds alone are empty
      assert.ok(e instanceof SchemaError && /^(multipleOf|(exclusiveM|m)(in|ax)imum)$/.test(e.keyword) && e.path === '#' && /^no (integer|number) is .* a multiple of/.test(e.message), String(e));
      for (let x = -130; x <= 130; x += 0.25) for (const t of [String(x), String(Math.round(x / m) * m)]) assert.ok(!(ajv.validate(bounds, Number(t)) && isMultiple(t, m) && (type === 'number' || Number.isInteger(Number(t)))), `${JSON.stringify(schema)} refused but ${t} fits`);
      refused++;
      continue;
    }
    const { dec } = toDec(m);
    const s = dec.frac.length, a = BigInt(`${dec.int}${dec.frac}`);
    const text = (n: bigint, scale: number, pad: number): string => { // n·10^-scale, with `pad` trailing zeros
      const neg = n < 0n, d = (neg ? -n : n).toString().padStart(scale + 1, '0');
      const t = scale === 0 ? d : `${d.slice(0, -scale)}.${d.slice(-scale)}`.replace(/\.?0+$/, '');
      return (neg ? '-' : '') + t + (pad > 0 ? (t.includes('.') ? '' : '.') + '0'.repeat(pad) : '');
    };
    for (let i = 0; i < 150; i++) {
      const q = BigInt(Math.round((r() * 2 - 1) * Math.ceil(130 / m))); // about ±130: the bounds' range
      const n = pick([q * a, q * a + 1n, q * a - BigInt(Math.ceil(Number(a) / 2)), q * a * 10n + 5n]);
      const scale = n % 10n === 5n && n !== q * a ? s + 1 : s;
      const t = text(n, scale, type === 'number' && r() < 0.2 ? 1 : 0);
      if (t === '-0' || t.startsWith('-0.') && /^-0\.0*$/.test(t) || t.replace(/[-.]/g, '').length > 15) continue;
      const want = (type === 'number' || !t.includes('.')) && isMultiple(t, m) && ajv.validate(bounds, Number(t));
      assert.equal(acceptsText(g, t), want, `${JSON.stringify(schema)} on ${t}`);
      checked++;
      if (!want) continue;
      accepted++;
      assert.ok(z.number().multipleOf(m).safeParse(Number(t)).success, `zod: ${t} a multiple of ${m}`);
      if (dyadic) { assert.ok(ajv.validate(schema, Number(t)), `ajv: ${JSON.stringify(schema)} on ${t}`); fullAjv++; }
    }
    for (const t of ['1e2', '01', '1.', '+1', '-0']) assert.ok(!acceptsText(g, t), `${JSON.stringify(schema)} refuses ${t}`);
    // sampled through the masks: each ended walk is a multiple within the bounds; masks along it equal the brute force
    if (k % 6 === 0) {
      for (let w = 0; w < 3; w++) {
        const walk = randomWalk(cache, { kind: 'json_schema', schema }, r, 24);
        let st: unknown = g.start;
        for (const id of walk.ids.slice(0, 4)) { maskIsBruteForce(cache, g, st, `${JSON.stringify(schema)} after ${tok.decode(walk.ids.slice(0, 4))}`); for (const b of cache.table[id]!) st = g.step(st, b); }
        if (!walk.ended) continue;
        const out = tok.decode(walk.ids);
        assert.ok(isMultiple(out, m) && ajv.validate(bounds, JSON.parse(out)) && (!dyadic || ajv.validate(schema, JSON.parse(out))), `${JSON.stringify(schema)}: ${out}`);
        walked++;
      }
    }
  }
  assert.ok(checked > 8000 && accepted > 1500 && fullAjv > 500 && walked > 0 && refused < 20, `${checked} values, ${accepted} multiples, ${fullAjv} ajv, ${walked} walks, ${refused} empty`);
  // ajv's default check divides doubles: for a step that is no binary fraction it refuses some exact multiples (zod and pydantic take them)
  assert.ok(acceptsText(compileGrammar({ kind: 'json_schema', schema: { type: 'number', multipleOf: 0.01 } }), '0.07') && !ajv.validate({ multipleOf: 0.01 }, 0.07) && z.number().multipleOf(0.01).safeParse(0.07).success);
  // the edges: 15 digits, the safe integer limit, a step below 1e-6, trailing zeros past the step's digits
  const edge = (schema: object, yes: string[], no: string[]): void => {
    const g = compileGrammar({ kind: 'json_schema', schema });
    for (const t of yes) assert.ok(acceptsText(g, t), `${JSON.stringify(schema)} takes ${t}`);
    for (const t of no) assert.ok(!acceptsText(g, t), `${JSON.stringify(schema)} refuses ${t}`);
  };
  edge({ type: 'integer', multipleOf: 3 }, ['9007199254740990', '-9007199254740990', '0', '-3'], ['9007199254740991', '9007199254740993', '1', '3.0']); // 2^53 + 1 is a multiple past the safe limit
  edge({ type: 'number', multipleOf: 0.25 }, ['999999999999.75', '0.5', '-1.250', '2'], ['999999999999.76', '0.125', '99999999999999.75']);
  edge({ type: 'number', multipleOf: 1e-7 }, ['0.0000001', '1.2345678', '12.3456780'], ['0.00000001', '1.23456789']);
  edge({ multipleOf: 5, maximum: 12 }, ['10', '-5', '10.0'], ['12', '15', '"a"']);
  // a step's trailing zeros are counted, not read mod 10^k: 100000 and 1e20 took 10^5 states and more (a 400)
  edge({ type: 'integer', multipleOf: 100000 }, ['0', '100000', '-200000', '9007199254700000'], ['5', '10000', '100001', '1000000000000010']);
  edge({ type: 'number', multipleOf: 50000, minimum: -1e6 }, ['0', '0.0', '150000', '-50000.00', '1000000'], ['25000', '50000.5', '5', '-1050000']);
  edge({ type: 'integer', multipleOf: 1e20 }, ['0'], ['5', '100000000000000000', '-1']);
});

test('multipleOf that cannot be honoured is a 400 naming the keyword and its path: not a positive number, no multiple in the bounds, too many automaton states', () => {
  for (const [schema, path, msg] of [
    [{ type: 'object', properties: { n: { type: 'integer', multipleOf: 0 } } }, '#/properties/n', /'multipleOf' at #\/properties\/n must be a number greater than 0, got 0/],
    [{ type: 'number', multipleOf: -2 }, '#', /greater than 0, got -2/],
    [{ type: 'number', multipleOf: '5' }, '#', /greater than 0, got "5"/],
    [{ type: 'integer', multipleOf: 7, minimum: 1, maximum: 6 }, '#', /no integer is ≥ 1 and ≤ 6 and a multiple of 7 at #/],
    [{ type: 'number', multipleOf: 0.3, exclusiveMinimum: 0, exclusiveMaximum: 0.3 }, '#', /no number is > 0 and < 0.3 and a multiple of 0.3 at #/],
    [{ type: 'array', items: { type: 'integer', multipleOf: 997 } }, '#/items', /'multipleOf' 997 at #\/items cannot be enforced: too complex: more than 4096 automaton states \(a multiple's digits are read mod 997/],
    [{ type: 'number', multipleOf: 1.23456789, minimum: 0 }, '#', /'multipleOf' 1.23456789 at # cannot be enforced with its bounds: too complex: more than 4096 automaton states .*mod 123456789 /],
    // the README's limit, whichever stage of the build passes it (the parts' larger working caps are never named)
    [{ type: 'integer', multipleOf: 5003, minimum: 0, maximum: 100000000 }, '#', /'multipleOf' 5003 at # cannot be enforced with its bounds: too complex: more than 4096 automaton states \(/],
  ] as const) {
    assert.throws(() => compileSchema(schema), (e: unknown) => e instanceof SchemaError && e.keyword === 'multipleOf' && e.path === path && msg.test(e.message), JSON.stringify(schema));
  }
  // pydantic's conint(multiple_of=5, ge=0), confloat(multiple_of=0.25), Field(multiple_of=0.5, gt=0, lt=1000), IPv6Address
  const g = compileGrammar({ kind: 'json_schema', schema: PYDANTIC.order! });
  for (const v of [{ qty: 0, weight: -0.75, price: 999.5, host: '::1' }, { qty: 1005, weight: 3, price: 0.5, host: '2001:db8::8a2e:370:7334' }]) assert.ok(ajv.validate(PYDANTIC.order!, v) && acceptsText(g, JSON.stringify(v)), JSON.stringify(v));
  for (const v of [{ qty: -5, weight: 1, price: 1, host: '::' }, { qty: 5, weight: 0.1, price: 1, host: '::' }, { qty: 5, weight: 1, price: 1000, host: '::' }, { qty: 5, weight: 1, price: 1, host: '1.2.3.4' }]) assert.ok(!ajv.validate(PYDANTIC.order!, v) && !acceptsText(g, JSON.stringify(v)), JSON.stringify(v));
});

test('pattern: the decoded string value must match (ECMA search semantics, JSON escapes decoded), as ajv decides', () => {
  const r = rand(51);
  // [pattern, a string it matches, spliced into some of the random ones]
  const patterns = [['ab', 'ab'], ['^a.c$', 'a\u00a0c'], ['\\d{2}-x', '12-x'], ['^[^"\\\\]*$', 'x'], ['"', '"'], ['\\n', '\n'], ['é|^x', 'é'], ['^(?<y>\\d{2})$', '12'], ['^\\s*$', '\u00a0 '], ['^[a-z]+@[a-z]+\\.(com|org)$', 'ab@c.org'], ['b$', 'b'], ['^\\u{1F600}?.$', '😀\\']];
  const alphabet = ['a', 'b', 'c', 'x', '1', '2', '-', '"', '\\', '\n', '\t', 'é', '😀', '@', '.', ' ', '\u2028', '\u00a0'];
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  for (const [p, example] of patterns) {
    const schema = { type: 'string', pattern: p };
    const g = compileGrammar({ kind: 'json_schema', schema });
    const re = new RegExp(p, 'u');
    let matched = 0;
    for (let i = 0; i < 600; i++) {
      const str = Array.from({ length: Math.floor(r() * 6) }, () => alphabet[Math.floor(r() * alphabet.length)]).join('') + (r() < 0.3 ? example : '');
      assert.equal(acceptsText(g, JSON.stringify(str)), re.test(str), `${p} on ${JSON.stringify(str)}`);
      if (re.test(str)) matched++;
      // the same value written with \u escapes decodes the same
      const esc = '"' + [...str].map((c) => (c.codePointAt(0)! < 0x10000 ? `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}` : c)).join('') + '"';
      assert.equal(acceptsText(g, esc), re.test(str), `${p} on ${esc}`);
    }
    assert.ok(matched > 0, `${p}: no random string matched`);
    assert.ok(walksValid(cache, schema, r, 3, 60) >= 0);
  }
  // with lengths: folded in, so a walk never paints itself into a corner
  const sized = { type: 'string', pattern: '^[a-c]+$', minLength: 2, maxLength: 4 };
  const g = compileGrammar({ kind: 'json_schema', schema: sized });
  for (const s of ['a', 'ab', 'abcc', 'abcca', 'ax']) assert.equal(acceptsText(g, JSON.stringify(s)), ajv.validate(sized, s), s);
  assert.ok(walksValid(cache, sized, r, 6, 40) > 0);
  for (const [p, msg] of [['\\bx', /word boundaries/], ['\\p{L}', /Unicode property/], ['(a)\\1', /backreferences/], ['(', /missing '\)'/]] as const) {
    assert.throws(() => compileSchema({ type: 'object', properties: { s: { type: 'string', pattern: p } } }), (e: unknown) => e instanceof SchemaError && e.keyword === 'pattern' && e.path === '#/properties/s' && msg.test(e.message), p);
  }
  assert.throws(() => compileSchema({ type: 'string', pattern: '^a+$', minLength: 3, maxLength: 2 }), /minLength 3 > maxLength 2/);
  assert.throws(() => compileSchema({ type: 'string', pattern: 'a^b' }), (e: unknown) => e instanceof SchemaError && e.keyword === 'pattern' && /no string satisfies 'pattern' at #/.test(e.message)); // '^' after a character: never
  assert.throws(() => compileSchema({ type: 'string', pattern: '^a{5}$', maxLength: 3 }), (e: unknown) => e instanceof SchemaError && e.keyword === 'maxLength' && /no string satisfies 'pattern' and 'maxLength'/.test(e.message));
});

/** A random ECMA pattern over a|b|1|é: classes, groups, alternation, quantifiers, '^' / '$' anywhere, lookaheads (nested). */
/** `behinds`: lookbehinds too (none inside a lookaround, no lookaround and no '$' inside them, as the parser takes them). */
function randomPattern(r: () => number, depth = 0, behinds = false, inLook: 'ahead' | 'behind' | null = null): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const alt = (look: typeof inLook): string => Array.from({ length: 1 + Math.floor(r() * (depth < 2 ? 2 : 1)) }, () => randomPattern(r, depth + 1, behinds, look)).join('|');
  const parts: string[] = [];
  for (let n = 1 + Math.floor(r() * 4); n > 0; n--) {
    const x = r();
    if (x < 0.06) parts.push(inLook === 'behind' ? '^' : pick(['^', '$']));
    else if (x < 0.22 && depth < 3 && inLook !== 'behind') {
      const behind = behinds && inLook === null && r() < 0.6;
      parts.push(`(?${behind ? '<' : ''}${pick(['=', '!'])}${alt(behind ? 'behind' : 'ahead')})`);
    } else {
      const atom = x < 0.42 && depth < 3 ? `(?:${alt(inLook)})` : pick(['a', 'b', '1', 'é', '[ab]', '[^a]', '.', '\\d', '\\w']);
      parts.push(atom + (r() < 0.4 ? pick(['*', '+', '?', '{0,2}', '{2}']) : ''));
    }
  }
  return parts.join('');
}

test('pattern lookaheads (?=…) (?!…) and anchors anywhere: fresh random patterns agree with JS RegExp (u) on random strings, raw and \\u-escaped; a repeated lookahead and unknown groups are a 400 saying which and where', () => {
  const r = rand(97);
  const alphabet = ['a', 'b', '1', 'é', 'x', '\n'];
  let patterns = 0, matched = 0, unmatched = 0, never = 0;
  for (let k = 0; k < 160; k++) {
    const p = randomPattern(r);
    const re = new RegExp(p, 'u');
    let g: ByteGrammar;
    try { g = compileGrammar({ kind: 'json_schema', schema: { type: 'string', pattern: p } }); } catch (e) {
      // only where no string matches: the schema cannot be honoured (JS agrees on every string tried)
      assert.ok(e instanceof SchemaError && /no string satisfies 'pattern'/.test(e.message), `${p}: ${(e as Error).message}`);
      for (let i = 0; i < 200; i++) assert.ok(!re.test(Array.from({ length: Math.floor(r() * 7) }, () => alphabet[Math.floor(r() * alphabet.length)]).join('')), p);
      never++;
      continue;
    }
    patterns++;
    for (let i = 0; i < 300; i++) {
      const str = Array.from({ length: Math.floor(r() * 7) }, () => alphabet[Math.floor(r() * alphabet.length)]).join('');
      const want = re.test(str);
      assert.equal(acceptsText(g, JSON.stringify(str)), want, `${p} on ${JSON.stringify(str)}`);
      if (i % 4 === 0) assert.equal(acceptsText(g, '"' + [...str].map((c) => `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`).join('') + '"'), want, `${p} on ${JSON.stringify(str)} escaped`);
      if (want) matched++; else unmatched++;
    }
  }
  assert.ok(patterns > 120 && never < 40 && matched > 5000 && unmatched > 5000, `${patterns} patterns, ${never} never match, ${matched} / ${unmatched} strings`);
  // hand-picked: '^' inside a lookahead after the pattern's '^' (pydantic's), and away from the start; '$' inside a group
  for (const [p, yes, no] of [
    ['^(?!^[-+.]*$)[+-]?\\d*\\.?\\d*$', ['1', '-.5', '+7.', '007'], ['', '-', '+.', '.', '1a']],
    ['a(?!^)b', ['ab', 'xab'], ['a', 'b']], ['(?:a$|b)c?', ['a', 'xa', 'b', 'bc'], ['ac', 'c']],
    ['^(?=.*\\d)(?=.*[a-z])\\w{3,}$', ['ab1', '1a1'], ['abc', '123', 'a1']], ['^(?:(?!ab).)*$', ['ba', 'aa', ''], ['ab', 'xaby']],
  ] as const) {
    const g = compileGrammar({ kind: 'json_schema', schema: { type: 'string', pattern: p } });
    for (const s of yes) assert.ok(new RegExp(p, 'u').test(s) && acceptsText(g, JSON.stringify(s)), `${p} takes ${JSON.stringify(s)}`);
    for (const s of no) assert.ok(!new RegExp(p, 'u').test(s) && !acceptsText(g, JSON.stringify(s)), `${p} refuses ${JSON.stringify(s)}`);
  }
  assert.throws(() => compileSchema({ type: 'string', pattern: 'a(?=^)' }), /no string satisfies 'pattern' at #/); // the lookahead's '^' after a character
  // the 4096-state cap holds for a lookahead's automaton: its 13th character from the end, 2^13 states
  assert.throws(() => compileSchema({ type: 'string', pattern: '^(?![ab]*a[ab]{12}$)' }), (e: unknown) => e instanceof SchemaError && e.keyword === 'pattern' && /cannot be enforced: too complex: more than 4096 automaton states/.test(e.message));
  assert.ok(compileSchema({ type: 'string', pattern: '^(?![ab]*a[ab]{10}$)' }));
  for (const [p, msg] of [
    ['a(?=b)*', /at 6: a lookahead cannot be repeated \(invalid quantifier '\*'\)/],
    ['(?!b){2}', /a lookahead cannot be repeated \(invalid quantifier '\{'\)/], ['(?<=b)+a', /at 6: a lookbehind cannot be repeated \(invalid quantifier '\+'\)/],
    ['(?i)a', /at 0: unknown group '\(\?i' \(supported groups: \(…\), \(\?:…\), \(\?<name>…\), lookaheads \(\?=…\) \(\?!…\) and lookbehinds \(\?<=…\) \(\?<!…\)\)/],
  ] as const) {
    assert.throws(() => compileSchema({ type: 'object', properties: { s: { type: 'string', pattern: p } } }), (e: unknown) => e instanceof SchemaError && e.keyword === 'pattern' && e.path === '#/properties/s' && msg.test(e.message) && !/named groups/.test(e.message), p);
    assert.throws(() => new RegExp(p, 'u')); // JS refuses these too
  }
  // guided_regex is matched whole, without lookaround: refused by name (named groups were never its syntax)
  for (const [p, msg] of [['a(?=b)', /at 1: lookahead \(\?=…\) is not supported \(supported groups: \(…\) and \(\?:…\)\)/], ['(?<n>a)', /at 0: a named group \(\?<name>…\) is not supported/]] as const) {
    assert.throws(() => new RegexGrammar(p), (e: unknown) => msg.test((e as Error).message), p);
  }
});

test('pattern lookbehinds (?<=…) (?<!…) beside lookaheads and anchors: fresh random patterns agree with JS RegExp (u) on random strings, raw and \\u-escaped, and every prefix of a match is live; what stays unsupported is a 400 saying which and where', () => {
  const r = rand(2503);
  const alphabet = ['a', 'b', '1', 'é', 'x', '\n'];
  const str = (n: number): string => Array.from({ length: n }, () => alphabet[Math.floor(r() * alphabet.length)]).join('');
  let patterns = 0, withBehind = 0, matched = 0, unmatched = 0, never = 0, prefixes = 0, complex = 0;
  for (let k = 0; k < 280; k++) {
    const p = randomPattern(r, 0, true);
    const re = new RegExp(p, 'u');
    let g: ByteGrammar;
    try { g = compileGrammar({ kind: 'json_schema', schema: { type: 'string', pattern: p } }); } catch (e) {
      if (e instanceof SchemaError && /too complex: more than 4096 automaton states/.test(e.message)) { complex++; continue; }
      assert.ok(e instanceof SchemaError && /no string satisfies 'pattern'/.test(e.message), `${p}: ${(e as Error).message}`);
      for (let i = 0; i < 200; i++) assert.ok(!re.test(str(Math.floor(r() * 7))), p);
      never++;
      continue;
    }
    patterns++;
    if (p.includes('(?<')) withBehind++;
    for (let i = 0; i < 300; i++) {
      const s = str(Math.floor(r() * 7));
      const want = re.test(s);
      assert.equal(acceptsText(g, JSON.stringify(s)), want, `${p} on ${JSON.stringify(s)}`);
      if (i % 4 === 0) assert.equal(acceptsText(g, '"' + [...s].map((c) => `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`).join('') + '"'), want, `${p} on ${JSON.stringify(s)} escaped`);
      if (want) {
        matched++;
        // a prefix of a match can still be extended: the grammar keeps it; one that cannot be is refused (below)
        for (let j = 0; j <= s.length; j++) assert.ok(feed(g, JSON.stringify(s).slice(0, j + 1)) !== null, `${p}: prefix ${JSON.stringify(s.slice(0, j))} of ${JSON.stringify(s)}`);
      } else unmatched++;
    }
    // a prefix the grammar keeps has an ending JS matches: the shortest over the alphabet, found breadth first
    for (let i = 0; i < 6; i++) {
      const pre = str(Math.floor(r() * 4));
      if (feed(g, JSON.stringify(pre).slice(0, -1)) === null) continue;
      let frontier = [''], found: string | null = null;
      for (let d = 0; d <= 3 && found === null; d++) {
        found = frontier.find((e) => acceptsText(g, JSON.stringify(pre + e))) ?? null;
        frontier = frontier.flatMap((e) => alphabet.map((c) => e + c)).filter((e) => feed(g, JSON.stringify(pre + e).slice(0, -1)) !== null);
      }
      if (found === null) continue; // its shortest ending is longer or outside the alphabet
      assert.ok(re.test(pre + found), `${p}: ${JSON.stringify(pre + found)} is taken`);
      prefixes++;
    }
  }
  assert.ok(patterns > 200 && withBehind > 60 && never < 60 && complex < 12 && matched > 5000 && unmatched > 5000 && prefixes > 400, `${patterns} patterns (${withBehind} with a lookbehind), ${never} never match, ${complex} too complex, ${matched} / ${unmatched} strings, ${prefixes} prefixes completed`);
  // hand-picked: '^' inside a lookbehind, a lookbehind longer than what was read, digits not inside a longer number
  for (const [p, yes, no] of [
    ['(?<=a)b', ['ab', 'xab'], ['b', 'a', 'ba']], ['^(?:(?<!a)b|a)*$', ['', 'b', 'ba', 'bba'], ['ab', 'bab']],
    ['x(?<=^x)y', ['xy', 'xya'], ['axy', 'x']], ['(?<=ab|^c)d', ['abd', 'cd', 'cdx'], ['acd', 'bd', 'd']],
    ['(?<![0-9])[0-9]{2}(?![0-9])', ['12', 'a12b'], ['123', '1', 'a1b']], ['(?<=é.)x', ['éax', 'éé\u00e9x'.replace('\\u00e9', 'é')], ['éx', 'ax']],
  ] as const) {
    const g = compileGrammar({ kind: 'json_schema', schema: { type: 'string', pattern: p } });
    for (const s of yes) assert.ok(new RegExp(p, 'u').test(s) && acceptsText(g, JSON.stringify(s)), `${p} takes ${JSON.stringify(s)}`);
    for (const s of no) assert.ok(!new RegExp(p, 'u').test(s) && !acceptsText(g, JSON.stringify(s)), `${p} refuses ${JSON.stringify(s)}`);
  }
  for (const [p, msg] of [
    ['(?<=(?=a))b', /at 4: a lookahead inside a lookbehind is not supported/], ['(?<!a(?<=b))c', /at 5: a lookbehind inside a lookbehind is not supported/],
    ['(?=x(?<!a))x', /at 4: a lookbehind inside a lookahead is not supported/], ['(?<=a$)b', /at 5: '\$' inside a lookbehind is not supported/],
    ['(?<=(a)\\1)b', /backreferences are not supported/],
  ] as const) {
    assert.throws(() => compileSchema({ type: 'object', properties: { s: { type: 'string', pattern: p } } }), (e: unknown) => e instanceof SchemaError && e.keyword === 'pattern' && e.path === '#/properties/s' && msg.test(e.message), p);
    assert.doesNotThrow(() => new RegExp(p, 'u'), p); // valid JS: refused here only because it is not supported
  }
  // guided_regex stays without lookaround
  assert.throws(() => new RegexGrammar('(?<=a)b'), /at 0: lookbehind \(\?<=…\) is not supported \(supported groups: \(…\) and \(\?:…\)\)/);
});

test("pydantic's condecimal (a number, or a string whose pattern opens with a negative lookahead; max_digits adds a lookahead inside a group) decodes: outputs match as JS RegExp (u) and ajv decide; masks equal the brute force", () => {
  const money = PYDANTIC.money as { properties: Record<string, { anyOf: [object, { pattern: string }] }> };
  // as pydantic 2.13 writes condecimal(max_digits=8, decimal_places=2), condecimal(multiple_of=0.25), condecimal(ge=0, le=100, decimal_places=2), Decimal
  assert.equal(money.properties.price!.anyOf[1].pattern, '^(?!^[-+.]*$)[+-]?0*(?:\\d{0,6}|(?=[\\d.]{1,9}0*$)\\d{0,6}\\.\\d{0,2}0*$)');
  assert.equal(money.properties.total!.anyOf[1].pattern, '^(?!^[-+.]*$)[+-]?0*\\d*\\.?\\d*$');
  const g = compileGrammar({ kind: 'json_schema', schema: money });
  const r = rand(101);
  const chars = ['0', '1', '5', '9', '.', '-', '+', 'e', 'a'];
  for (const [name, prop] of Object.entries(money.properties)) {
    const pattern = prop.anyOf[1].pattern, re = new RegExp(pattern, 'u');
    const pg = compileGrammar({ kind: 'json_schema', schema: { type: 'string', pattern } });
    let yes = 0;
    for (let i = 0; i < 1500; i++) {
      const s = i < 12 ? ['', '-', '+.', '.', '-.5', '0.25', '+12.', '1234567.1', '123456.12', '123456.123', '1.2300', 'abc'][i]! : Array.from({ length: Math.floor(r() * 11) }, () => chars[Math.floor(r() * (r() < 0.8 ? 5 : chars.length))]).join('');
      assert.equal(acceptsText(pg, JSON.stringify(s)), re.test(s), `${name} on ${JSON.stringify(s)}`);
      if (re.test(s)) yes++;
    }
    assert.ok(yes > 300, `${name}: ${yes} matched`);
  }
  for (const v of [{ price: '1234567.1', rate: 0.75, fee: '99.50', total: '-0.001' }, { price: 12.5, rate: '3', fee: 100, total: '+7.' }]) assert.ok(ajv.validate(money, v) && acceptsText(g, JSON.stringify(v)), JSON.stringify(v));
  for (const v of [{ price: '', rate: 0.75, fee: 1, total: 1 }, { price: 1, rate: 0.3, fee: 1, total: 1 }, { price: 1, rate: 1, fee: '1.234', total: 1 }, { price: 1, rate: 1, fee: 1, total: '-.' }]) assert.ok(!ajv.validate(money, v) && !acceptsText(g, JSON.stringify(v)), JSON.stringify(v));
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  assert.ok(walksValid(cache, money, r, 8, 120, 1) > 0);
  // masks at states inside each string: before the lookahead is decided, inside max_digits' lookahead, after a '.'
  const cg = cache.get({ kind: 'json_schema', schema: money }).grammar;
  const head = '{"price":';
  const later = '{"price":1,"rate":1,"fee":1,"total":';
  for (const pre of ['', '"', '"-', '"+.', '"00', '"12345', '"123456.', '"123456.1', '"1234567', '"-.5', '"abc']) {
    for (const at of [head, later]) {
      const s = feed(cg, at + pre);
      if (s === null) { assert.ok(pre === '"abc' && at === later, `${at}${pre}`); continue; }
      maskIsBruteForce(cache, cg, s, `money after ${at}${pre}`);
    }
  }
});

test('format: date, time, date-time, uuid, email, ipv4, ipv6, hostname, uri, uri-reference decode to what ajv-formats accepts; others are refused by name', () => {
  const r = rand(61);
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  const valid: Record<string, string[]> = {
    date: ['2024-02-29', '2000-02-29', '1999-12-31'], time: ['23:59:59Z', '00:00:00.123+05:30'], 'date-time': ['2024-01-31T12:00:00Z'],
    uuid: ['123e4567-e89b-12d3-a456-426614174000'], email: ['a.b+c@mail.example.com'], ipv4: ['255.0.10.199'], hostname: ['a-b.example.org'],
    ipv6: ['::', '::1', '1::', 'fe80::1:2', '2001:db8:0:0:0:0:2:1', '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8', '1:2:3:4:5:6:255.255.255.255', '::ffff:192.0.2.128', '1::5:1.2.3.4'],
    uri: ['https://example.com', 'http://localhost:8080/a/b-c/?q=1&r=x%20y#top', 'https://10.0.0.255:65535/'],
    'uri-reference': ['https://a-b.example.org/x', '/a/b?c=d', 'a/b', '#frag', '?q', ''],
  };
  const invalid: Record<string, string[]> = {
    date: ['2023-02-29', '1900-02-29', '2024-04-31', '2024-13-01', '24-01-01'], time: ['24:00:00Z', '12:00:00', '12:60:00Z'], 'date-time': ['2024-01-31 12:00:00', '2024-01-32T00:00:00Z'],
    uuid: ['123e4567e89b12d3a456426614174000'], email: ['a@b', '@b.com'], ipv4: ['256.1.1.1', '01.1.1.1', '1.1.1'], hostname: ['-a.com'],
    ipv6: [':', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', '1:2:3:4:5:6:7:8::', '::1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:1.2.3.4', '::01.2.3.4', ':1::', 'g::', '1.2.3.4'],
    uri: ['example.com', '/a/b', 'https://a b.com', 'http://a.com/\\x'], 'uri-reference': ['\\x', 'a b'],
  };
  for (const f of Object.keys(valid)) {
    const schema = { type: 'string', format: f };
    const g = compileGrammar({ kind: 'json_schema', schema });
    for (const s of valid[f]!) { assert.ok(ajv.validate(schema, s), `${f} ${s}`); assert.ok(acceptsText(g, JSON.stringify(s)), `${f} takes ${s}`); }
    for (const s of invalid[f]!) { assert.ok(!ajv.validate(schema, s), `${f} ${s}`); assert.ok(!acceptsText(g, JSON.stringify(s)), `${f} refuses ${s}`); }
    assert.ok(walksValid(cache, schema, r, 4, 80, f.startsWith('uri') ? 2 : 0) > 0, `${f}: no walk ended`);
  }
  // zod writes format and a pattern together: both hold
  const both = { type: 'string', format: 'date', pattern: '^2\\d{3}-' };
  assert.ok(acceptsText(compileGrammar({ kind: 'json_schema', schema: both }), '"2024-02-29"') && !acceptsText(compileGrammar({ kind: 'json_schema', schema: both }), '"1999-01-01"'));
  // valid for ajv-formats, but outside what floe decodes (schemes other than http(s), hosts that are numbers, ports
  // over 65535: a URL parser such as pydantic's HttpUrl may refuse them)
  for (const s of ['mailto:a@b.c', 'https://xn--a.com', 'http://1.2.3', 'http://a.com:99999', 'HTTP://A.COM']) {
    assert.ok(ajv.validate({ type: 'string', format: 'uri' }, s), s);
    assert.ok(!acceptsText(compileGrammar({ kind: 'json_schema', schema: { type: 'string', format: 'uri' } }), JSON.stringify(s)), s);
  }
  for (const f of ['uri-template', 'iri', 'duration', 'binary']) {
    assert.throws(() => compileSchema({ type: 'object', properties: { x: { type: 'string', format: f } } }), (e: unknown) => e instanceof SchemaError && e.keyword === 'format' && e.path === '#/properties/x' && e.message.includes(`"${f}"`), f);
  }
  // format on a number (OpenAPI's int32, float) says nothing about a number: accepted
  assert.ok(acceptsText(compileGrammar({ kind: 'json_schema', schema: { type: 'integer', format: 'int32' } }), '12'));
});

/** (length 0..L) how many strings of each length a DFA takes. */
function countByLength(d: Dfa, L: number): bigint[] {
  let cur = new Map<number, bigint>([[d.start, 1n]]);
  const out: bigint[] = [];
  for (let l = 0; l <= L; l++) {
    let c = 0n;
    for (const [q, n] of cur) if (d.accept[q]) c += n;
    out.push(c);
    const next = new Map<number, bigint>();
    for (const [q, n] of cur) for (let i = 0; i < d.lo[q]!.length; i++) next.set(d.to[q]![i]!, (next.get(d.to[q]![i]!) ?? 0n) + n * BigInt(d.hi[q]![i]! - d.lo[q]![i]! + 1));
    cur = next;
  }
  return out;
}

test('format ipv6: exactly the lowercase addresses ajv-formats takes (every length counted), uniform samples and walks validate', () => {
  // ajv-formats' own regex, read as written (case-sensitive: its lowercase strings): A = B iff |A| = |B| = |A ∩ B| per length
  const theirs = (createRequire(import.meta.url)('ajv-formats/dist/formats') as { fullFormats: { ipv6: RegExp } }).fullFormats.ipv6;
  const ours = intersect([parseRegex(FORMATS.ipv6!, true)])!;
  const both = intersect([parseRegex(FORMATS.ipv6!, true), parseRegex(theirs.source)])!;
  const [a, b, c] = [ours, intersect([parseRegex(theirs.source)])!, both].map((d) => countByLength(d, 60));
  assert.deepEqual(a, b);
  assert.deepEqual(a, c);
  assert.equal(ours.lengths().max, 45); // 'ffff:…:ffff:255.255.255.255': every longer count above is 0 too
  // uniform samples (a length by its count, then each step by the strings left below it): ajv takes each, the grammar too
  const g = compileGrammar({ kind: 'json_schema', schema: { type: 'string', format: 'ipv6' } });
  const r = rand(67);
  const total = a.reduce((x, y) => x + y, 0n);
  const pick = (n: bigint): bigint => { let x = 0n; for (let i = 0; i < 4; i++) x = x * 65536n + BigInt(Math.floor(r() * 65536)); return x % n; };
  const below = (q: number, left: number, memo = new Map<string, bigint>()): bigint => {
    if (left === 0) return ours.accept[q] ? 1n : 0n;
    const k = `${q}.${left}`;
    let n = memo.get(k);
    if (n === undefined) { n = 0n; for (let i = 0; i < ours.lo[q]!.length; i++) n += BigInt(ours.hi[q]![i]! - ours.lo[q]![i]! + 1) * below(ours.to[q]![i]!, left - 1, memo); memo.set(k, n); }
    return n;
  };
  const memo = new Map<string, bigint>();
  const shapes = new Set<string>();
  for (let i = 0; i < 2000; i++) {
    let x = pick(total), len = 0;
    while (x >= a[len]!) x -= a[len++]!;
    let q = ours.start, str = '';
    for (let left = len; left > 0; left--) {
      for (let e = 0; ; e++) {
        const per = below(ours.to[q]![e]!, left - 1, memo), span = BigInt(ours.hi[q]![e]! - ours.lo[q]![e]! + 1);
        if (x < per * span) { str += String.fromCodePoint(ours.lo[q]![e]! + Number(x / per)); x %= per; q = ours.to[q]![e]!; break; }
        x -= per * span;
      }
    }
    assert.ok(ajv.validate({ type: 'string', format: 'ipv6' }, str) && theirs.test(str), str);
    assert.ok(acceptsText(g, JSON.stringify(str)), str);
    shapes.add(str.replace(/[0-9a-f]+/g, 'h'));
  }
  assert.ok(shapes.size > 20 && [...shapes].some((s) => s.includes('::')), [...shapes].slice(0, 20).join(' '));
  // uppercase hex is refused (ajv-formats takes it, case-insensitive; RFC 5952 writes lowercase)
  assert.ok(ajv.validate({ type: 'string', format: 'ipv6' }, 'FE80::1') && !acceptsText(g, '"FE80::1"'));
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  assert.ok(walksValid(cache, { type: 'object', properties: { ip: { type: 'string', format: 'ipv6' } }, required: ['ip'] }, r, 12, 60) > 0);
});

test('format / pattern strings: masks equal a per-token brute force at random states (escapes, \\u digits, partial UTF-8 included)', () => {
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  const r = rand(71);
  const schemas: object[] = [
    ...['date', 'time', 'date-time', 'uuid', 'email', 'ipv4', 'ipv6', 'hostname'].map((format) => ({ type: 'string', format })),
    { type: 'string', pattern: 'ok' }, { type: 'string', pattern: '^[α-ω]+$' }, { type: 'string', pattern: '[\\u{1F600}-\\u{1F64F}]' },
    { type: 'string', pattern: '^\\S+$', maxLength: 6 }, { type: 'string', pattern: '\\\\|"' }, { type: 'string', pattern: '^(?:[\\u0800-\\uffff]|\\n)+$' },
    { type: 'object', properties: { a: { type: 'string', format: 'uuid' }, b: { type: 'array', items: { type: 'string', pattern: '^[a-c]{1,3}$' } } }, required: ['a'] },
  ];
  // byte strings (latin1: '\xe0' is a lone UTF-8 lead byte), so states inside an escape or a code point are among them
  const prefixes = ['"', '"\\', '"\\u', '"\\u00', '"\\u4e2', '"a\\u0', '"\xce', '"\xe0', '"\xe4\xb8', '"\xf0', '"\xf0\x9f\x98', '"\xed', '"20', '"ab@c'];
  for (const schema of schemas) {
    const g = cache.get({ kind: 'json_schema', schema }).grammar;
    const states: unknown[] = [];
    // the prefixes, then random walks through the masks
    for (const pre of prefixes) {
      let s: unknown = g.start;
      for (const b of Buffer.from(((schema as { type: string }).type === 'object' ? '{"a":' : '') + pre, 'latin1')) if (s !== null) s = g.step(s, b);
      if (s !== null) states.push(s);
    }
    for (let w = 0; w < 3; w++) {
      let s: unknown = g.start;
      for (let i = 0; i < 8 && s !== null; i++) {
        states.push(s);
        const bits = cache.index.allowed(g, s);
        const ids: number[] = [];
        for (let v = 0; v < V; v++) if ((bits[v >>> 5]! >>> (v & 31)) & 1) ids.push(v);
        if (ids.length === 0) break;
        for (const b of cache.table[ids[Math.floor(r() * ids.length)]!]!) s = g.step(s, b);
      }
    }
    for (const st of states) maskIsBruteForce(cache, g, st, JSON.stringify(schema));
  }
  // lengths counted beside the automaton: states at and around minLength / maxLength, inside escapes and code points
  const a = (n: number): string => 'a'.repeat(n);
  const near: [object, string[]][] = [
    [{ type: 'string', pattern: '^[a-z]+$', maxLength: 10000 }, [`"${a(9998)}`, `"${a(9999)}`, `"${a(10000)}`]],
    [{ type: 'string', maxLength: 5 }, ['"abcd', '"abcde', '"abc\\u00', '"abcd\\u00e', '"abcd\\', '"abcd\xc3', '"abcd\xf0\x9f', '"abc\xe4\xb8']],
    [{ type: 'string', minLength: 4, maxLength: 6 }, ['"abc', '"abcd', '"abcdef', '"ab\\n']],
    [{ type: 'string', pattern: '^(?:aa)+$', minLength: 3, maxLength: 5 }, ['"', '"a', '"aa', '"aaa', '"aaaa']],
    [{ type: 'string', pattern: '^[a-z]+$', minLength: 3 }, ['"ab', '"abc', '"abcdefg']],
    [{ type: 'object', properties: { u: { type: 'string', format: 'uri', minLength: 1, maxLength: 24 } }, required: ['u'] }, ['{"u":"https://abc.de/fgh', '{"u":"https://abc.de/fghi', '{"u":"https://abc.de/fg', '{"u":"https://abc.de/fg%4', '{"u":"https://abc.de:655']],
  ];
  for (const [schema, pres] of near) {
    const g = cache.get({ kind: 'json_schema', schema }).grammar;
    for (const pre of pres) {
      let st: unknown = g.start;
      for (const b of Buffer.from(pre, 'latin1')) if (st !== null) st = g.step(st, b);
      assert.ok(st !== null, `${JSON.stringify(schema)}: ${pre.slice(-12)}`);
      maskIsBruteForce(cache, g, st, `${JSON.stringify(schema)} after ${pre.slice(-12)}`);
    }
  }
  // at maxLength - 1 only a closing quote or one more code point fits
  const g = cache.get({ kind: 'json_schema', schema: near[0]![0] }).grammar;
  const last = feed(g, `"${a(9999)}`)!;
  const fits = (text: string): boolean => { let x: unknown = last; for (const b of Buffer.from(text)) { x = g.step(x, b); if (x === null) return false; } return true; };
  assert.ok(fits('a') && fits('"') && fits('a"') && !fits('aa') && !fits('ab"'));
  assert.ok(!acceptsText(g, `"${a(10001)}"`) && acceptsText(g, `"${a(10000)}"`));
});

test('lengths are counted beside the pattern / format automaton: pydantic HttpUrl (uri, 1..2083) and a pattern with maxLength 10000 decode; the automaton keeps its 4096-state cap', () => {
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  const r = rand(81);
  const httpUrl = (PYDANTIC.link as { properties: { url: object } }).properties.url;
  assert.deepEqual(httpUrl, { format: 'uri', maxLength: 2083, minLength: 1, title: 'Url', type: 'string' });
  for (const schema of [httpUrl, PYDANTIC.link!, { type: 'string', pattern: '^[a-z]+$', maxLength: 10000 }, { type: 'string', format: 'email', minLength: 8, maxLength: 12 }]) {
    assert.ok(walksValid(cache, schema, r, 6, 120, 2) > 0, `${JSON.stringify(schema)}: no walk ended`);
  }
  const url = compileGrammar({ kind: 'json_schema', schema: httpUrl });
  const long = `https://example.com/${'a'.repeat(2063)}`;
  assert.equal(long.length, 2083);
  assert.ok(acceptsText(url, JSON.stringify(long)) && !acceptsText(url, JSON.stringify(long + 'b')));
  // the pattern's own automaton is still capped
  assert.throws(() => compileSchema({ type: 'string', pattern: '[ab]*a[ab]{12}$', maxLength: 20 }), (e: unknown) => e instanceof SchemaError && e.keyword === 'pattern' && /more than 4096 automaton states/.test(e.message));
  // lengths that repeat only with a period of 7·11·13·17·19·23: refused without a maxLength, decoded with one
  const lcm = '^(?:(?:a{7})*|(?:b{11})*|(?:c{13})*|(?:d{17})*|(?:e{19})*|(?:f{23})*)$';
  assert.throws(() => compileSchema({ type: 'string', pattern: lcm, minLength: 40 }), (e: unknown) => e instanceof SchemaError && e.keyword === 'minLength' && /the lengths of its strings repeat only after/.test(e.message));
  const lcmMax = compileGrammar({ kind: 'json_schema', schema: { type: 'string', pattern: lcm, minLength: 40, maxLength: 50 } });
  for (const str of ['a'.repeat(42), 'b'.repeat(44), 'a'.repeat(35), 'f'.repeat(46), 'f'.repeat(23)]) assert.equal(acceptsText(lcmMax, JSON.stringify(str)), ajv.validate({ type: 'string', pattern: lcm, minLength: 40, maxLength: 50 }, str), str);
  // lengths no string of the pattern has: refused by the length keyword
  assert.throws(() => compileSchema({ type: 'string', pattern: '^(?:ab)+$', minLength: 5, maxLength: 5 }), (e: unknown) => e instanceof SchemaError && e.keyword === 'minLength' && /no string satisfies 'pattern' and 'minLength' and 'maxLength'/.test(e.message));
  assert.throws(() => compileSchema({ type: 'string', format: 'date', maxLength: 9 }), (e: unknown) => e instanceof SchemaError && e.keyword === 'maxLength');
  // lengths the pattern allows only every so often (2, 3, 6, 7, 10, 11, …): exactly the ones in bounds, as ajv decides
  const gappy = { type: 'string', pattern: '^a{2,3}(?:b{4})*$', minLength: 7, maxLength: 11 };
  const gg = compileGrammar({ kind: 'json_schema', schema: gappy });
  let took = 0;
  for (let i = 0; i <= 4; i++) for (let j = 0; j <= 12; j++) {
    const str = 'a'.repeat(i) + 'b'.repeat(j);
    assert.equal(acceptsText(gg, JSON.stringify(str)), ajv.validate(gappy, str), str);
    if (ajv.validate(gappy, str)) took++;
  }
  assert.equal(took, 3);
  assert.ok(walksValid(cache, gappy, r, 6, 40) > 0);
  // the memo key carries the length only as far as it tells the future apart: short, and one key from minLength on
  // when there is no maxLength
  const atLeast = compileGrammar({ kind: 'json_schema', schema: { type: 'string', pattern: '^[a-z]+$', minLength: 3 } });
  assert.equal(atLeast.key(feed(atLeast, '"abcd')), atLeast.key(feed(atLeast, '"abcdefghij')));
  assert.notEqual(atLeast.key(feed(atLeast, '"ab')), atLeast.key(feed(atLeast, '"abc')));
  const big = compileGrammar({ kind: 'json_schema', schema: { type: 'string', pattern: '^[a-z]+$', maxLength: 10000 } });
  assert.ok(big.key(feed(big, `"${'a'.repeat(9999)}`)).length < 24);
});

test('inside a length-bounded string the mask memo keys counts that allow the same tokens alike: exact against the canonical state and a per-token brute force; a maxLength 200 string and HttpUrl miss once per count no more', () => {
  const full = new ConstraintCache(tok, V, tok.eosIds);
  const reads = full.index.reads, reach = full.index.reach;
  assert.ok(reach >= 4 && reach <= full.index.maxLen && reads[reach] === 1 && reads[1] === 1, `reach ${reach}`);
  const r = rand(97);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const int = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
  const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');
  // string texts as pieces (JSON-escaped, UTF-8), and ends that stop inside an escape or a code point
  const kinds = [
    { schema: {}, pre: '', pieces: ['a', 'é', '\\n', '\\u00e9', '😀', ' ', '\\"'], ends: ['\\', '\\u0', '\\u00e', '\xc3', '\xf0\x9f', '\xe4\xb8'] },
    { schema: { pattern: '^[a-z]+$' }, pre: '', pieces: ['a', 'z', '\\u0062'], ends: ['\\', '\\u00', '\\u006'] },
    { schema: { pattern: '^(?:ab|cde)*$' }, pre: '', pieces: ['ab', 'cde', '\\u0061b'], ends: ['a', 'cd', '\\u00', 'c\\'] },
    { schema: { format: 'uri' }, pre: 'https://ex.com/', pieces: ['a', '%20', '-', '/', 'b'], ends: ['%', '%2', '\\', '\\u002'] },
    { schema: { pattern: '^(?:...)*$' }, pre: '', pieces: ['abc', '   ', 'é😀x', '\\t-x'], ends: ['a', 'ab', '\\', 'x\\u00'] }, // lengths a multiple of 3: where a token ends decides how far the string still has to go
  ];
  let moved = 0, below = 0, tooFew = 0, checked = 0;
  // and a vocabulary whose tokens read no count in 6..11 (as Llama 3.1's read few past 60): counts left to maxLength
  // between two reads share a mask
  const gapped = new ConstraintCache({ vocabSize: tok.vocabSize, idToToken: (id) => tok.idToToken(id), isSpecial: (id) => tok.isSpecial(id) || (full.table[id] !== null && textReads(full.table[id]!).some((c) => c >= 6 && c <= 11)) }, V, tok.eosIds);
  assert.ok(gapped.index.reach === reach && gapped.index.reads.indexOf(1, 6) === 12, `${gapped.index.reads.join('')}`);
  for (const cache of [full, gapped]) {
    const reads = cache.index.reads;
    for (let trial = 0; trial < 40; trial++) {
      const kind = kinds[trial % kinds.length]!;
      const large = trial % 3 !== 0;
      const narrow = Math.floor(trial / kinds.length) % 3 === 1; // minLength = maxLength (or one less), both far out: which counts can still end in so narrow a window repeats with the pattern's period
      const max = narrow ? 3 * int(40, 800) : trial % 8 === 7 ? Infinity : large ? int(100, 2500) : int(20, 60);
      const min = narrow ? max - int(0, 1) : r() < 0.5 ? 0 : int(1, Math.min(max === Infinity ? 400 : max - 10, large ? 400 : 30));
      const schema = { type: 'string', ...kind.schema, ...(min > 0 ? { minLength: min } : {}), ...(max < Infinity ? { maxLength: max } : {}) };
      let g: JsonGrammar;
      try { g = cache.get({ kind: 'json_schema', schema }).grammar as JsonGrammar; } catch { continue; } // no string of the pattern fits these bounds
      for (let i = 0; i < 14; i++) {
        // a text of about `want` code points (near the start, near maxLength, just out of its reach, or from the start to
        // past minLength), maybe ending inside an escape or a code point
        const at = r();
        const want = i >= 10 ? (max < Infinity ? max - reach - 12 + i : min - reach - 12 + i) : at < 0.25 ? int(0, reach + 3) : at < 0.5 && max < Infinity ? max - int(0, 2 * reach) : int(0, Math.min(max, min + 3 * reach + 40) + 2);
        const parts = [utf8(`"${kind.pre}`)];
        let got = [...kind.pre].length;
        while (got < want) { const p = pick(kind.pieces); parts.push(utf8(p)); got += [...JSON.parse(`"${p}"`) as string].length; }
        if (r() < 0.4) parts.push(Buffer.from(pick(kind.ends), 'latin1'));
        let st: JsonState | null = g.start;
        for (const b of Buffer.concat(parts)) if (st !== null) st = g.step(st, b);
        if (st === null) continue; // past maxLength, or a piece the pattern refuses there
        const canon = g.alike(st, reads);
        const what = `${JSON.stringify(schema)} at ${Buffer.concat(parts).length} bytes`;
        assert.equal(g.maskKey(st, reads), g.key(canon), what);
        assert.equal(g.key(g.alike(canon, reads)), g.key(canon), `${what}: the canonical state is its own`);
        assert.deepEqual(cache.index.allowed(g, st), cache.index.allowed(g, canon), `${what}: mask at the canonical count`);
        maskIsBruteForce(cache, g, st, what);
        checked++;
        if (g.key(canon) !== g.key(st)) { moved++; if (got < min) below++; }
        // a reach shorter than the vocabulary's tokens would merge counts whose masks differ
        if (g.key(g.alike(st, ONE)) !== g.key(st) && !sameBits(cache.index.allowed(g, st), cache.index.allowed(g, g.alike(st, ONE)))) tooFew++;
      }
    }
  }
  assert.ok(checked > 300 && moved > 80 && below > 5 && tooFew > 0, `checked ${checked}, moved ${moved}, below minLength ${below}, wrong with reach 1 ${tooFew}`);
  // misses: one per count near maxLength, one for all the counts before (it was one per count)
  let walked = 0;
  const misses = (schema: object, text: string): number => {
    const c = new ConstraintCache(tok, V, tok.eosIds).get({ kind: 'json_schema', schema });
    let st: unknown = c.grammar.start;
    for (const b of utf8(text)) { c.mask(st); st = c.grammar.step(st, b); }
    c.mask(st);
    walked = c.stats.misses - c.stats.near;
    return c.stats.misses;
  };
  assert.equal(misses({ type: 'string', maxLength: 200 }, `"${'a'.repeat(200)}`), 1 + reads.reduce((a, x) => a + x, 0)); // the start, then one per count of code points a token can read (those left to maxLength tell the masks apart)
  assert.equal(walked, 2, 'the vocabulary is walked at the start and once for the counts far from maxLength; those near it filter that mask');
  const httpUrl = (PYDANTIC.link as { properties: { url: object } }).properties.url;
  assert.equal(misses(httpUrl, `"https://ex.com/${'a'.repeat(2000)}`), misses(httpUrl, '"https://ex.com/a')); // a longer path costs no miss
});

/** A random string schema's length keywords, and the patterns / formats it picks from. */
interface StrSpec { lengths(int: (lo: number, hi: number) => number, r: () => number): object; kinds: readonly object[] }
const KINDS = [{}, {}, { pattern: '^[a-z ]+$' }, { pattern: '^(?:ab|cde)*$' }, { pattern: '^a.{0,12}z$' }, { pattern: '^(?:[a-z]+@[a-z]+|x{3,9})$' }, { pattern: 'q' }, { format: 'email' }, { format: 'hostname' }];
const NEAR_MAX: StrSpec = {
  lengths: (int, r) => { const max = int(1, 60); const min = r() < 0.6 ? 0 : int(0, max); return { ...(min > 0 ? { minLength: min } : {}), maxLength: max }; },
  kinds: KINDS,
};
// minLength up to 50 (reach is 15 here), maxLength none or up to 80 above it
const NEAR_MIN: StrSpec = {
  lengths: (int, r) => { const min = int(1, 50); return { minLength: min, ...(r() < 0.5 ? {} : { maxLength: min + int(0, 80) }) }; },
  kinds: [...KINDS, { format: 'uri' }, { pattern: '^(?:abc)+$' }, { pattern: '^(?:[a-z ]+|[0-9]{1,5})$' }],
};

/** Random schemas with length-bounded strings (plain, pattern, format; in objects, arrays, anyOf, tool calls with and without response_format). */
function boundedSchemas(r: () => number, n: number, spec: StrSpec = NEAR_MAX): { spec: ConstraintSpec; what: string }[] {
  const int = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const str = (): object => {
    const lengths = spec.lengths(int, r);
    return { type: 'string', ...pick(spec.kinds), ...lengths };
  };
  const value = (depth: number): object => {
    const k = depth > 1 ? 0 : int(0, 4);
    if (k <= 1) return str();
    if (k === 2) return { type: 'array', items: str(), maxItems: 3 };
    if (k === 3) return { anyOf: [str(), { type: 'integer' }, str()] };
    return { type: 'object', properties: { a: value(depth + 1), b: str() }, required: ['a', 'b'], additionalProperties: false };
  };
  return Array.from({ length: n }, (_, i) => {
    const schema = { type: 'object', properties: { x: value(0), y: value(0) }, required: ['x', 'y'], additionalProperties: false };
    const calls = { kind: 'tool_calls', parallel: true, tools: [{ name: 'f', parameters: schema }] } as const;
    const spec: ConstraintSpec = i % 4 === 0 ? { kind: 'json_schema', schema: value(0) } : i % 4 === 1 ? { kind: 'json_schema', schema }
      : i % 4 === 2 ? { ...calls, text: 'free' } : { ...calls, text: { kind: 'json_schema', schema: value(0) } };
    return { spec, what: JSON.stringify(spec).slice(0, 300) };
  });
}

/** Random walks through random schemas' masks, each mask checked equal to the walk over the vocabulary; what was filtered, not walked. */
function nearMasksAreWalks(seed: number, n: number, strs: StrSpec): { states: number; near: number; belowMin: number } {
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  const r = rand(seed);
  const quote = new Set([...Array(V).keys()].filter((id) => cache.table[id]?.includes(0x22)));
  let states = 0, near = 0, belowMin = 0;
  for (const { spec, what } of boundedSchemas(r, n, strs)) {
    let c;
    try { c = cache.get(spec); } catch (e) { if (e instanceof SchemaError) continue; throw e; } // bounds no string of the pattern meets
    const g = c.grammar;
    for (let walk = 0; walk < 3; walk++) {
      let st: unknown = g.start;
      for (let step = 0; step < 200 && st !== null; step++) {
        const want = cache.index.allowed(g, st);
        for (const [id, text] of cache.specials) if (g.special?.(st, text) != null) want[id >>> 5]! |= 1 << (id & 31);
        const got: Uint32Array = c.mask(st).bits;
        // the message (a pass over the vocabulary) only on a failure: built for every state it was a third of the time
        if (!sameBits(got, want)) assert.fail(`${what} step ${step}: ${[...Array(V).keys()].filter((v) => ((got[v >>> 5]! ^ want[v >>> 5]!) >>> (v & 31)) & 1).map((v) => JSON.stringify(tok.idToToken(v))).slice(0, 8).join(' ')}`);
        states++;
        const ok = setBits(want, V);
        if (ok.length === 0) break;
        // strings run on to their maxLength: a '"' only now and then
        const inner = ok.filter((v) => !quote.has(v));
        const id = inner.length > 0 && r() < 0.85 ? pick(inner, r) : pick(ok, r);
        const bytes = cache.table[id];
        if (bytes) for (const b of bytes) st = st === null ? null : g.step(st, b);
        else st = g.special!(st, cache.specials.get(id)!);
        assert.ok(st !== null, `${what}: a masked token ${id} stepped`);
        if (g.free?.(st)) break;
      }
    }
    near += c.stats.near;
    belowMin += c.stats.belowMin;
  }
  return { states, near, belowMin };
}

test('near maxLength the masks filtered from the far one by code points read equal the walk over the vocabulary, on random schemas', () => {
  const { states, near } = nearMasksAreWalks(2025, 48, NEAR_MAX);
  assert.ok(states > 3000 && near > 300, `${states} states, ${near} near maxLength`);
});

test('below minLength the masks filtered from the one at minLength by code points read equal the walk over the vocabulary, on random schemas', () => {
  const { states, belowMin } = nearMasksAreWalks(2026, 64, NEAR_MIN);
  assert.ok(states > 3000 && belowMin > 350, `${states} states, ${belowMin} below minLength`); // 294 before narrow ranges (maxLength - minLength < reach) filtered too
  // the counts within reach of minLength filter the mask at minLength (each was a walk over the vocabulary): a plain
  // string walks it at the start, once for the counts far below minLength and once at it; a URI as without lengths
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  const walks = (schema: object, text: string): { misses: number; near: number; belowMin: number } => {
    const c = cache.get({ kind: 'json_schema', schema });
    let st: unknown = c.grammar.start;
    for (const b of Buffer.from(text, 'utf8')) { c.mask(st); st = c.grammar.step(st, b); }
    return c.stats;
  };
  const url = `"https://ex.com/${'a'.repeat(200)}`;
  for (const schema of [{ type: 'string', minLength: 200 }, { type: 'string', minLength: 200, maxLength: 300 }, { type: 'string', format: 'uri', minLength: 100 }]) {
    const s = walks(schema, 'format' in schema ? url : `"${'a'.repeat(220)}`);
    const want = 'format' in schema ? walks({ type: 'string', format: 'uri' }, url).misses + 1 : 3;
    assert.ok(s.belowMin >= cache.index.reach && s.misses - s.near === want, `${JSON.stringify(schema)}: ${JSON.stringify(s)}, ${want} walks expected`);
  }
  // a range narrower than a token reads (a currency code, a postcode): the counts within reach of minLength filter one
  // mask, of the same string without its maxLength (each was a walk of its own), and the counts past it the one at it
  for (const max of [200, 203, 210]) {
    const s = walks({ type: 'string', minLength: 200, maxLength: max }, `"${'a'.repeat(max)}`); // masked up to count max - 1
    const want = max > 200 ? 4 : 3; // before the quote, far below minLength, the unbounded string at it, the string at it
    assert.ok(s.belowMin >= cache.index.reach && s.misses - s.near === want, `minLength 200, maxLength ${max}: ${JSON.stringify(s)}, ${want} walks expected`);
  }
});
const pick = <T>(xs: readonly T[], r: () => number): T => xs[Math.floor(r() * xs.length)]!;

test("near a URI's maxLength a token is stepped only where a %-escape could leave it short of the bound, not the scheme's 9 code points", () => {
  const cache = new ConstraintCache(tok, V, tok.eosIds);
  const httpUrl = (PYDANTIC.link as { properties: { url: object } }).properties.url;
  const c = cache.get({ kind: 'json_schema', schema: httpUrl });
  const g = c.grammar as JsonGrammar;
  let st: JsonState | null = g.start;
  for (const b of Buffer.from(`"https://ex.com/${'a'.repeat(2083 - 15)}`, 'utf8')) { c.mask(st!); st = g.step(st!, b); }
  const f = st![0]!.f as { node: { lens: ContinuationLengths }; q: number };
  assert.deepEqual([f.node.lens.deepest, f.node.lens.deepestFrom[f.q]], [9, 2]); // 'http://aa' from the start; '%' and 2 hex digits in the path
  // a token reading c code points is stepped at most where c + 2 > left ≥ c: twice on the way to the bound (it was 9 times)
  let inPath = 0;
  for (const w of c.mask(feed(g, `"https://ex.com/${'a'.repeat(100)}`)!).bits) inPath += popcount(w);
  assert.ok(c.stats.near > cache.index.reach && c.stats.stepped <= 2 * inPath, `${JSON.stringify(c.stats)}, ${inPath} tokens in the path's mask`);
});

const ONE = Uint8Array.of(1, 1); // as if no token read more than one code point
function popcount(x: number): number { let n = 0; for (; x !== 0; x &= x - 1) n++; return n; }
function sameBits(a: Uint32Array, b: Uint32Array): boolean { return a.every((x, i) => x === b[i]); }
/** The ids below `n` whose bit is set in `bits`, ascending (as filtering 0..n-1 by the bit gives them). */
function setBits(bits: Uint32Array, n: number): number[] {
  const out: number[] = [];
  for (let w = 0; w < bits.length; w++) {
    for (let b = bits[w]!; b !== 0; b &= b - 1) {
      const id = w * 32 + 31 - Math.clz32(b & -b);
      if (id < n) out.push(id);
    }
  }
  return out;
}

test('string length is counted in code points as ajv counts them: an escape is one, a character beyond the BMP is one', () => {
  const r = rand(91);
  // JSON texts of string pieces: plain, UTF-8, escaped, and a surrogate pair written as two escapes
  const pieces = ['a', 'x', 'é', '\\u00e9', '😀', '\\ud83d\\ude00', '\\n', '\\"', '\\/'];
  const schemas = [
    { type: 'string', minLength: 2, maxLength: 3 }, { type: 'string', minLength: 2 }, { type: 'string', maxLength: 1 },
    { type: 'string', pattern: '^[^x]*$', minLength: 2, maxLength: 3 }, { type: 'string', pattern: 'a', minLength: 3 },
  ];
  for (const schema of schemas) {
    const g = compileGrammar({ kind: 'json_schema', schema });
    let took = 0;
    for (let i = 0; i < 400; i++) {
      const text = `"${Array.from({ length: Math.floor(r() * 5) }, () => pieces[Math.floor(r() * pieces.length)]).join('')}"`;
      const ok = ajv.validate(schema, JSON.parse(text));
      // every text taken is valid; a surrogate pair written as escapes is never taken (UTF-8 says the same in one)
      if (acceptsText(g, text)) { assert.ok(ok, `${JSON.stringify(schema)} took ${text}`); took++; } else assert.ok(!ok || text.includes('\\ud83d'), `${JSON.stringify(schema)} refused ${text}`);
    }
    assert.ok(took > 0, JSON.stringify(schema));
  }
  // the pair is one code point for ajv: taking it as two let a 1-character string through minLength 2
  const two = compileGrammar({ kind: 'json_schema', schema: { type: 'string', minLength: 2 } });
  assert.ok(!ajv.validate({ type: 'string', minLength: 2 }, JSON.parse('"\\ud83d\\ude00"')));
  assert.ok(!acceptsText(two, '"\\ud83d\\ude00"') && acceptsText(two, '"😀x"') && !acceptsText(two, '"😀"'));
});

test('the length table: next accepted length from every automaton state equals a walk over exact lengths', () => {
  const H = 300;
  for (const p of ['^(?:aa|bbb)+$', '^a{2,3}(?:b{4})*$', '^(?:a(?:bc){0,3}){1,4}$', '[ab]{3,}x', '^(?:a{5}|b{7})*c{0,2}$', '^x?$', '^[a-z]+$', '^(?:a{6})*(?:b{10})+$']) {
    const dfa = intersect([searchRegex(p)])!;
    const lens = ContinuationLengths.of(dfa);
    const upTo37 = ContinuationLengths.of(dfa, 37); // a maxLength of 37: lengths past it are never asked for
    // exact[k]: the states with an accepted continuation of exactly k code points, walked to H without a cycle search
    const exact: Set<number>[] = [new Set(dfa.accept.flatMap((a, q) => (a ? [q] : [])))];
    for (let k = 1; k < H; k++) exact.push(new Set(Array.from({ length: dfa.size }, (_, q) => q).filter((q) => dfa.to[q]!.some((t) => exact[k - 1]!.has(t)))));
    for (let q = 0; q < dfa.size; q++) {
      for (let L = 0; L < 200; L++) {
        let want = Infinity;
        for (let k = L; k < H; k++) if (exact[k]!.has(q)) { want = k; break; }
        const got = lens.next(q, L);
        assert.ok(want < H ? got === want : got >= H, `${p} state ${q} from ${L}: ${got}, want ${want}`);
        if (L <= 37) assert.ok(want <= 37 ? upTo37.next(q, L) === want : upTo37.next(q, L) > 37, `${p} up to 37, state ${q} from ${L}`);
      }
    }
  }
});

test('engine: pydantic and zod-style schemas ($ref recursion, bounds, pattern, formats) decode valid through floe-brown, sampled and greedy; max_tokens cuts a recursion', () => {
  const engine = new Engine(brown.model, tok, { kvDtype: 'f32', kvCacheMemory: 64 << 20, maxNumSeqs: 16, extraEosIds: tok.eosIds });
  const prompt = tok.encode('The committee said on Friday that the', { addSpecialTokens: true });
  const schemas: Record<string, object> = { ...PYDANTIC, ints: { type: 'array', items: { type: 'number', exclusiveMinimum: -2.5, maximum: 7.25 }, minItems: 2, maxItems: 4 } };
  const reqs = Object.entries(schemas).flatMap(([name, schema]) => [0, 1].map((i) => genReq(`${name}${i}`, prompt, {
    maxTokens: 400, sampling: i === 0 ? GREEDY : { ...GREEDY, temperature: 1, seed: 7 + i }, constraint: { kind: 'json_schema', schema },
  })));
  reqs.push(genReq('cut', prompt, { maxTokens: 30, sampling: { ...GREEDY, temperature: 1, seed: 3 }, constraint: { kind: 'json_schema', schema: PYDANTIC.tree! } }));
  for (const q of reqs) engine.add(q);
  const { byId } = runAll(engine);
  let stopped = 0;
  for (const [name, schema] of Object.entries(schemas)) {
    for (const i of [0, 1]) {
      const c = byId.get(`${name}${i}`)!;
      assert.ok(c.finish[0] === 'stop' || c.finish[0] === 'length', `${name}${i}: ${c.finish[0]}`);
      if (c.finish[0] !== 'stop') continue;
      stopped++;
      assert.ok(ajv.validate(schema, JSON.parse(c.text[0]!)), `${name}${i}: ${c.text[0]} ${ajv.errorsText()}`);
    }
  }
  assert.ok(stopped >= 5, `${stopped} of ${2 * Object.keys(schemas).length} ended by themselves`);
  const cut = byId.get('cut')!;
  assert.ok(cut.tokens[0]!.length <= 30 && (cut.finish[0] === 'length' || ajv.validate(PYDANTIC.tree!, JSON.parse(cut.text[0]!))));
});
