// Unbounded numbers in the JSON grammar: the longest digit runs and exponent it writes still parse as finite doubles
// (a 3-digit exponent let 9999999999999999e999 through, which JSON.parse reads as Infinity and zod's z.number() refuses).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileGrammar } from '../../src/engine/constrained/constraint.js';
import type { ByteGrammar, JsonState } from '../../src/engine/constrained/grammar.js';

/** Whether `text`, fed byte by byte, is a whole value of the grammar. */
function feed(g: ByteGrammar<JsonState>, text: string): boolean {
  let s: JsonState | null = g.start;
  for (const b of Buffer.from(text, 'utf8')) {
    s = g.step(s, b);
    if (s === null) return false;
  }
  return g.accepts(s);
}

test("an unbounded number's exponent has at most 2 digits: every number the grammar takes is a finite double", () => {
  for (const schema of [{ type: 'number' }, {}, { type: 'array', items: { type: 'number' } }]) {
    const g = compileGrammar({ kind: 'json_schema', schema }) as ByteGrammar<JsonState>;
    const wrap = (x: string) => ('items' in schema ? `[${x}]` : x);
    // the largest and smallest magnitudes the grammar writes: the longest digit runs, then exponent digits while it takes them
    for (const [mantissa, sign] of [['9'.repeat(16), ''], ['9'.repeat(16), '+'], ['0.' + '0'.repeat(15) + '1', '-'], ['-' + '9'.repeat(16) + '.' + '9'.repeat(16), '']]) {
      let text = `${mantissa}e${sign}`;
      while (feed(g, wrap(text + '9'))) text += '9';
      assert.ok(feed(g, wrap(text)), text);
      assert.ok(text.endsWith('9'), `${text}: an exponent digit is taken`);
      const v = JSON.parse(wrap(text)) as number | number[];
      const x = Array.isArray(v) ? v[0]! : v;
      assert.ok(Number.isFinite(x) && x !== 0, `${text} parses as ${x}`);
    }
    assert.equal(feed(g, wrap('1e999')), false);
  }
});
