// Schemas whose alternatives share $ref targets or overlap at every level: a grammar step stays bounded (it was
// exponential in the nesting depth, stalling the engine on a 1 KB schema), and what the grammar takes validates (ajv).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ajv } from 'ajv';
import { compileGrammar } from '../../src/engine/constrained/constraint.js';
import { MAX_PARSES, type ByteGrammar, type JsonState } from '../../src/engine/constrained/grammar.js';
import { rand } from './helpers.js';

const ajv = new Ajv({ strict: false });

/** d0 = leaf; d(i) = {anyOf: [alt(i - 1), other(i - 1)]}, each a $ref into $defs; the schema is d(k). */
function ladder(k: number, leaf: object, other: (ref: object) => object): Record<string, unknown> {
  const defs: Record<string, object> = { d0: leaf };
  for (let i = 1; i <= k; i++) {
    const ref = { $ref: `#/$defs/d${i - 1}` };
    defs[`d${i}`] = { anyOf: [ref, other(ref)] };
  }
  return { $defs: defs, $ref: `#/$defs/d${k}` };
}

/** Feeds `text` byte by byte; the largest state seen, and whether the whole text is a value. */
function feed(g: ByteGrammar<JsonState>, text: string): { accepted: boolean; most: number } {
  let s: JsonState | null = g.start;
  let most = s.length;
  for (const b of Buffer.from(text, 'utf8')) {
    s = g.step(s, b);
    if (s === null) return { accepted: false, most };
    most = Math.max(most, s.length);
  }
  return { accepted: g.accepts(s), most };
}

test('alternatives reaching one $ref target twice, nested 22 deep: a value begins in one pass, not 2^22', () => {
  const leaf = { type: 'string', maxLength: 6 };
  const g = compileGrammar({ kind: 'json_schema', schema: ladder(22, leaf, (ref) => ref) }) as ByteGrammar<JsonState>;
  const texts = ['"abc"', '"abcdef"', '"abcdefg"', '12', '"a\\"b"'];
  const t0 = performance.now();
  const accepted = texts.map((text) => feed(g, text).accepted);
  const ms = performance.now() - t0;
  // the ladder is its leaf (ajv on the ladder itself would try the 2^22 alternatives too)
  assert.deepEqual(accepted, texts.map((text) => ajv.validate(leaf, JSON.parse(text))));
  assert.ok(ms < 500, `${texts.length} values read in ${ms.toFixed(0)} ms`); // ~1 ms; was ~5 s per value begun
});

test(`a schema ambiguous at every level ([X | array of X] nested 22 deep) keeps at most ${MAX_PARSES} parses; what it takes validates`, () => {
  const schema = ladder(22, { type: 'integer' }, (ref) => ({ type: 'array', items: ref }));
  const g = compileGrammar({ kind: 'json_schema', schema }) as ByteGrammar<JsonState>;
  // 11 brackets deep: C(22, 11) = 705432 ways to choose which levels are the arrays
  const deep = '['.repeat(11) + '1' + ']'.repeat(11);
  const r = feed(g, deep);
  assert.ok(r.most <= MAX_PARSES, `${r.most} parses at once`);
  assert.equal(r.accepted, ajv.validate(schema, JSON.parse(deep)));
  assert.equal(feed(g, '['.repeat(23) + '1' + ']'.repeat(23)).accepted, false, 'deeper than the schema');
  // random byte walks: every value the grammar lets end validates
  const rnd = rand(7);
  const bytes = [...'[]1, '].map((c) => c.charCodeAt(0));
  for (let w = 0; w < 40; w++) {
    let s: JsonState = g.start;
    const out: number[] = [];
    while (out.length < 60) {
      if (out.length > 0 && g.accepts(s) && rnd() < 0.2) break;
      const next = bytes.map((b) => [b, g.step(s, b)] as const).filter(([, n]) => n !== null);
      if (next.length === 0) break;
      const [b, n] = next[Math.floor(rnd() * next.length)]!;
      assert.ok(n!.length <= MAX_PARSES, `${n!.length} parses`);
      out.push(b);
      s = n!;
    }
    const text = Buffer.from(out).toString();
    if (g.accepts(s)) assert.ok(ajv.validate(schema, JSON.parse(text)), `${text} ${ajv.errorsText()}`);
  }
});
