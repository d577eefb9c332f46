// Malformed multipart uploads to POST /v1/files and RAG's document upload: a body with no boundary or cut short was a
// 500 'internal error: Multipart: Boundary not found' / '... unexpected end of multipart data' (busboy's errors), and two
// file parts on /v1/files a 413 'reach files limit' with no code. Each is now a 400 that says what to send. An upload
// cut short also left its partial file behind at times (the write stream opened after the removal).

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApp } from '../../src/serve/app.js';
import { byteTokenizer, FakeEngine } from './helpers.js';

const tok = byteTokenizer();
const dir = mkdtempSync(join(tmpdir(), 'floe-multipart-'));
const s = createApp({ modelName: 'tiny', dataDir: join(dir, 'data'), rag: { db: join(dir, 'rag'), embedderName: 'embedder' }, ui: false });
s.ready({ engine: new FakeEngine(tok), tokenizer: tok, template: null });
const url0 = await s.app.listen({ host: '127.0.0.1', port: 0 });
after(() => s.app.close());

const part = (name: string, value: string, filename?: string) =>
  `--xx\r\nContent-Disposition: form-data; name="${name}"${filename ? `; filename="${filename}"` : ''}\r\n\r\n${value}\r\n`;
async function post(url: string, body: string, contentType = 'multipart/form-data; boundary=xx') {
  const r = await fetch(url0 + url, { method: 'POST', headers: { 'content-type': contentType }, body });
  const text = await r.text();
  return { statusCode: r.status, body: text, json: () => JSON.parse(text) };
}

const FILES = '/v1/files';
const DOCS = '/v1/rag/collections/docs/documents';

for (const url of [FILES, DOCS]) {
  test(`${url}: a multipart body with no boundary, or cut short, is a 400 invalid_multipart`, async () => {
    const noBoundary = await post(url, 'garbage', 'multipart/form-data');
    const cut = await post(url, `${part('purpose', 'fine-tune')}--xx\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n{"text":"a"}\n`);
    for (const r of [noBoundary, cut]) {
      assert.equal(r.statusCode, 400, r.body);
      assert.equal(r.json().error.code, 'invalid_multipart');
      assert.match(r.json().error.message, /multipart\/form-data body is malformed/);
    }
  });
}

test('/v1/files: uploads cut short leave no partial file behind (the write stream opened after its removal)', async () => {
  const cut = part('purpose', 'fine-tune') + '--xx\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n{"text":"a"}\n';
  for (let i = 0; i < 20; i++) assert.equal((await post(FILES, cut)).statusCode, 400);
  await new Promise((r) => setTimeout(r, 200)); // a late open would have created its file by now
  assert.deepEqual(readdirSync(join(dir, 'data', 'files')).filter((f) => f.includes('.upload-')), []);
});

test('/v1/files: two file parts are a 400 naming file (was 413 "reach files limit"); no upload is left behind', async () => {
  const r = await post(FILES, part('purpose', 'fine-tune') + part('file', '{"text":"a"}', 'a.jsonl') + part('file', '{"text":"b"}', 'b.jsonl') + '--xx--\r\n');
  assert.equal(r.statusCode, 400, r.body);
  assert.equal(r.json().error.param, 'file');
  assert.match(r.json().error.message, /send one file per request/);
  assert.deepEqual(readdirSync(join(dir, 'data', 'files')).filter((f) => f.includes('.upload-')), []);
  const one = await post(FILES, part('purpose', 'fine-tune') + part('file', '{"text":"a"}', 'a.jsonl') + '--xx--\r\n');
  assert.equal(one.statusCode, 200, one.body);
});
