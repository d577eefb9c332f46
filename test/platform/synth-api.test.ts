// `synth` as a library user calls it from the package entry: the in-process engine, the output finetune reads, resume,
// and clear errors for bad options.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { synth } from '../../src/index.js';
import { parseJsonl } from '../../src/train/data.js';
import { loadBrown } from '../../src/train/corpus.js';
import { repoPath } from '../repo.js';

const MODEL = repoPath('models/floe-brown');
const dir = mkdtempSync(join(tmpdir(), 'synth-api-'));

test('synth(): from-documents on floe-brown in-process, finetune-ready lines, resumed by a second call', async () => {
  const doc = loadBrown()[3]!;
  const docs = [{ name: doc.id, text: doc.paragraphs.slice(0, 6).map((p) => p.join(' ')).join('\n\n') }];
  const out = join(dir, 'docs.jsonl');
  const opts = {
    method: 'from-documents' as const, model: MODEL, docs, out, num: 4, chunkTokens: 64, chunkOverlap: 16, maxTokens: 40, temperature: 0.7,
    engine: { threads: 2, maxNumSeqs: 4 }, grounding: { minSupport: 0.2 },
  };
  const progress: number[] = [];
  const s = await synth({ ...opts, onProgress: (p) => progress.push(p.done) });
  assert.equal(s.units, 4);
  assert.equal(s.kept + Object.values(s.rejected).reduce((a, b) => a + b, 0), 4, JSON.stringify(s));
  assert.equal(progress.at(-1), 4);
  const text = readFileSync(out, 'utf8');
  const lines = text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.equal(lines.length, s.kept);
  if (lines.length) assert.equal(parseJsonl(text, out).length, lines.length);
  for (const l of lines) {
    assert.equal(l.provenance.model, 'floe-brown');
    assert.equal(l.provenance.params.chunk_overlap, 16);
    const src = l.provenance.source;
    assert.equal(l.provenance.id.split('/')[2], src.passage_id);
    assert.ok(l.provenance.scores.grounding.support >= 0.2);
  }
  const again = await synth(opts);
  assert.equal(again.resumed_units, 4);
  assert.equal(again.generated_tokens, 0);
  assert.equal(readFileSync(out, 'utf8'), text);
  await assert.rejects(synth({ ...opts, chunkTokens: 80 }), /made by another synth run/);
});

test('synth(): bad options are clear errors before any model loads', async () => {
  const out = join(dir, 'bad.jsonl');
  await assert.rejects(synth({ method: 'magpie', out }), /exactly one of model, endpoint or llm \(got 0\)/);
  await assert.rejects(synth({ method: 'from-documents', model: MODEL, out }), /from-documents needs docs/);
  await assert.rejects(synth({ method: 'magpie', model: MODEL, out, docs: ['x.txt'] }), /docs are for from-documents, not magpie/);
  await assert.rejects(synth({ method: 'nope' as 'magpie', model: MODEL, out }), /method must be one of/);
  await assert.rejects(synth({ method: 'from-documents', model: MODEL, out, docs: [{ name: 'd', text: 'x' }], chunkTokens: 32, chunkOverlap: 32 }), /chunkOverlap \(32\) must be below chunkTokens \(32\)/);
  await assert.rejects(synth({ method: 'from-documents', model: MODEL, out, docs: ['/nonexistent/doc.txt'] }), /no document file \/nonexistent\/doc.txt/);
  await assert.rejects(synth({ method: 'magpie', model: MODEL, out, minScore: 3 }), /minScore needs judge/);
});
