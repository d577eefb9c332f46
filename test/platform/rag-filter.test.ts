// Structured RAG filters: validation errors name the bad part; compiled predicates select in LanceDB exactly the rows an
// independent evaluation in JS selects, on random conditions whose values carry quotes, backslashes, % and _.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileFilter, FILTER_FIELDS, parseFilter, type FilterCondition, type FilterField } from '../../src/platform/rag/filter.js';
import { RagStore } from '../../src/platform/rag/store.js';
import { brownTokenizer, hashEmbedder, rng } from './rag-helpers.js';

const SEED = Number(process.env.FLOE_SEED ?? (Date.now() & 0x7fffffff));

test('parseFilter refuses raw SQL and malformed conditions with the path and what was expected', () => {
  assert.throws(() => parseFilter("source = 'a'"), /'where' must be a structured filter .* raw SQL is not accepted/);
  assert.throws(() => parseFilter("1=1; DROP TABLE x", 'rag.where'), /'rag.where' must be a structured filter/);
  assert.throws(() => parseFilter({ field: 'text', op: '=', value: 'x' }), /'where.field' must be one of source, kind, doc_hash, chunk, start_offset, end_offset, got "text"/);
  assert.throws(() => parseFilter({ field: 'source', op: 'LIKE', value: 'x' }), /'where.op' must be one of =, !=, <, <=, >, >=, in, not_in, prefix, got "LIKE"/);
  assert.throws(() => parseFilter({ field: 'chunk', op: '=', value: '1 OR 1=1' }), /'where.value' must be a 32-bit integer \(chunk is an integer\), got "1 OR 1=1"/);
  assert.throws(() => parseFilter({ field: 'chunk', op: '>', value: 1.5 }), /32-bit integer/);
  assert.throws(() => parseFilter({ field: 'source', op: '=', value: 3 }), /'where.value' must be a string \(source is text\), got 3/);
  assert.throws(() => parseFilter([{ field: 'source', value: 'a' }, { field: 'kind', op: 'in', value: [] }]), /'where\[1\].value' must be a non-empty array/);
  assert.throws(() => parseFilter({ field: 'chunk', op: 'prefix', value: 1 }), /prefix applies to text fields/);
  assert.throws(() => parseFilter({ field: 'source', op: '=', value: 'a', extra: 1 }), /unknown key 'extra'/);
  assert.throws(() => parseFilter([]), /empty array/);
  assert.equal(parseFilter(null), null);
  assert.deepEqual(parseFilter({ field: 'source', value: 'a' }), { field: 'source', op: '=', value: 'a' }); // op defaults to =
  assert.equal(compileFilter([{ field: 'source', op: '=', value: "it's" }, { field: 'chunk', op: 'in', value: [1, 2] }]), "(source = 'it''s') AND (chunk IN (1, 2))");
});

test(`compiled filters select in LanceDB exactly what a JS evaluation selects (seed ${SEED})`, async () => {
  const r = rng(SEED);
  const tok = await brownTokenizer();
  const emb = hashEmbedder(tok, 8);
  const store = await RagStore.open(join(mkdtempSync(join(tmpdir(), 'floe-rag-filter-')), 'db'), { create: true });
  const col = await store.create('f', emb);
  const ALPHA = ["a", "b", "'", "''", "\\", "%", "_", "é", " ", "\"", ";", "-"];
  const word = (n: number) => Array.from({ length: 1 + Math.floor(r() * n) }, () => ALPHA[Math.floor(r() * ALPHA.length)]!).join('');
  const sources = Array.from({ length: 12 }, () => `${word(3)}${word(4)}.txt`).filter((s, i, a) => a.indexOf(s) === i);
  const rows = sources.flatMap((source, d) => Array.from({ length: 1 + Math.floor(r() * 6) }, (_, c) => ({
    id: `${d}:${c}`, source, kind: d % 3 === 0 ? 'markdown' : 'text', doc_hash: `h${d % 4}`, chunk: c,
    start_offset: Math.floor(r() * 1000) - 100, end_offset: Math.floor(r() * 1000), text: `row ${d} ${c}`, vector: (emb.embed([`x${d}${c}`]) as Float32Array[])[0]!,
  })));
  await col.table.add(rows);
  const fields = Object.keys(FILTER_FIELDS) as FilterField[];
  const pickVal = (f: FilterField): string | number => {
    if (FILTER_FIELDS[f] === 'int') return r() < 0.5 ? (rows[Math.floor(r() * rows.length)]![f] as number) : Math.floor(r() * 1200) - 200;
    const vals = rows.map((x) => x[f] as string);
    return r() < 0.7 ? vals[Math.floor(r() * vals.length)]! : word(4);
  };
  const holds = (c: FilterCondition, row: Record<string, unknown>): boolean => {
    const x = row[c.field] as string | number, v = c.value;
    switch (c.op) {
      case '=': return x === v;
      case '!=': return x !== v;
      case '<': return x < (v as typeof x);
      case '<=': return x <= (v as typeof x);
      case '>': return x > (v as typeof x);
      case '>=': return x >= (v as typeof x);
      case 'in': return (v as unknown[]).includes(x);
      case 'not_in': return !(v as unknown[]).includes(x);
      case 'prefix': return (x as string).startsWith(v as string);
    }
  };
  for (let trial = 0; trial < 60; trial++) {
    const conds: FilterCondition[] = Array.from({ length: 1 + Math.floor(r() * 2) }, () => {
      const field = fields[Math.floor(r() * fields.length)]!;
      const isStr = FILTER_FIELDS[field] === 'string';
      // byte-wise string order in SQL vs UTF-16 in JS differ beyond ASCII: compare text only by =, !=, in, not_in, prefix
      const ops = isStr ? (['=', '!=', 'in', 'not_in', 'prefix'] as const) : (['=', '!=', '<', '<=', '>', '>=', 'in', 'not_in'] as const);
      const op = ops[Math.floor(r() * ops.length)]!;
      let value: FilterCondition['value'] = pickVal(field);
      if (op === 'in' || op === 'not_in') value = Array.from({ length: 1 + Math.floor(r() * 3) }, () => pickVal(field));
      if (op === 'prefix') value = (value as string).slice(0, 1 + Math.floor(r() * 3));
      return { field, op, value };
    });
    const f = parseFilter(conds)!;
    const got = ((await col.table.query().where(compileFilter(f)).select(['id']).toArray()) as Array<{ id: string }>).map((x) => x.id).sort();
    const want = rows.filter((row) => conds.every((c) => holds(c, row))).map((x) => x.id).sort();
    assert.deepEqual(got, want, `${compileFilter(f)}`);
  }
  // through search too: BM25 and vector honour the filter
  await col.updateIndexes();
  const src = sources[0]!;
  const hits = await col.search('row', emb, { mode: 'hybrid', k: 50, where: { field: 'source', op: '=', value: src } });
  assert.ok(hits.every((h) => h.source === src));
  store.close();
});
