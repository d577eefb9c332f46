// A query parameter given twice (?after=a&after=b) on the list routes: Fastify reads it as an array, which the
// file, batch and fine-tuning lists handed to SQLite (500 'Too many parameter values were provided') and RAG's
// document delete to a string method (500 's.replaceAll is not a function'). Each is a 400 naming the parameter.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApp } from '../../src/serve/app.js';
import { byteTokenizer, FakeEngine } from './helpers.js';
import { repoPath } from '../repo.js';

const tok = byteTokenizer();
const dir = mkdtempSync(join(tmpdir(), 'floe-query-repeat-'));
const s = createApp({ modelName: 'tiny', modelPath: repoPath('models/floe-brown'), dataDir: join(dir, 'data'), rag: { db: join(dir, 'rag'), embedderName: 'embedder' }, ui: false });
s.ready({ engine: new FakeEngine(tok), tokenizer: tok, template: null });
after(() => s.app.close());

const cases: Array<[method: 'GET' | 'DELETE', url: string, param: string]> = [
  ['GET', '/v1/files?after=file-a&after=file-b', 'after'],
  ['GET', '/v1/files?purpose=batch&purpose=fine-tune', 'purpose'],
  ['GET', '/v1/files?limit=1&limit=2', 'limit'],
  ['GET', '/v1/batches?after=batch_a&after=batch_b', 'after'],
  ['GET', '/v1/fine_tuning/jobs?after=ftjob-a&after=ftjob-b', 'after'],
  ['GET', '/v1/fine_tuning/jobs?limit=1&limit=2', 'limit'],
  ['DELETE', '/v1/rag/collections/docs/documents?source=a.txt&source=b.txt', 'source'],
  ['GET', '/v1/chat/completions?after=a&after=b', 'after'],
];

for (const [method, url, param] of cases) {
  test(`${method} ${url}: 400 naming '${param}'`, async () => {
    const r = await s.app.inject({ method, url });
    assert.equal(r.statusCode, 400, r.body);
    assert.equal(r.json().error.param, param);
    assert.match(r.json().error.message, new RegExp(`'${param}' is given 2 times; give it once`));
  });
}

test('each parameter given once still lists (an unknown after is the usual 404)', async () => {
  assert.equal((await s.app.inject({ method: 'GET', url: '/v1/files?purpose=batch&limit=5&order=asc' })).statusCode, 200);
  assert.equal((await s.app.inject({ method: 'GET', url: '/v1/batches?limit=5' })).statusCode, 200);
  assert.equal((await s.app.inject({ method: 'GET', url: '/v1/fine_tuning/jobs?limit=5' })).statusCode, 200);
  const unknown = await s.app.inject({ method: 'GET', url: '/v1/files?after=file-nope' });
  assert.equal(unknown.statusCode, 404, unknown.body);
  assert.equal(unknown.json().error.param, 'after');
});
