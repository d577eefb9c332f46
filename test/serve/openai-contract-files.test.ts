// POST /v1/files against the openai client's FileCreateParams: every field it sends either works or is a 400 naming
// it; none is dropped on the floor.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { apiRefusal } from './helpers.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const T = 60_000;

let server: RunningServer;
let client: OpenAI;
before(async () => {
  server = await startServer({ model: BROWN, port: 0, ui: false, dataDir: mkdtempSync(join(tmpdir(), 'floe-contract-files-')), kvCacheMemory: 16 * 2 ** 20, threads: 1, log: () => {} });
  await server.ready;
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
after(async () => { await server?.close(0); });

const jsonl = JSON.stringify({ messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }] }) + '\n';
test('files.create with expires_after: a 400 naming it (files here never expire), not a file whose expires_at stays null', { timeout: T }, async () => {
  const before = (await client.files.list()).data.length;
  const r = await apiRefusal(client.files.create({ file: await toFile(Buffer.from(jsonl), 'ft.jsonl'), purpose: 'fine-tune', expires_after: { anchor: 'created_at', seconds: 3600 } }),
    'expires_after was accepted and ignored: the file would never expire as asked');
  assert.equal(r.status, 400);
  assert.equal(r.param, 'expires_after');
  assert.match(r.message, /expire/);
  assert.equal((await client.files.list()).data.length, before, 'nothing stored');
  // without it the same upload is stored
  const f = await client.files.create({ file: await toFile(Buffer.from(jsonl), 'ft.jsonl'), purpose: 'fine-tune' });
  assert.equal(f.purpose, 'fine-tune');
});

test('an unknown multipart field is a 400 naming it, before or after the file', { timeout: T }, async () => {
  for (const order of ['before', 'after'] as const) {
    const form = new FormData();
    form.append('purpose', 'fine-tune');
    if (order === 'before') form.append('purpse', 'batch');
    form.append('file', new Blob([jsonl]), 'ft.jsonl');
    if (order === 'after') form.append('purpse', 'batch');
    const res = await fetch(`${server.url}/v1/files`, { method: 'POST', body: form });
    const body = await res.json() as { error?: { param: unknown; code: unknown; message: string } };
    assert.equal(res.status, 400, `${order}: ${JSON.stringify(body)}`);
    assert.equal(body.error!.param, 'purpse');
    assert.equal(body.error!.code, 'unknown_parameter');
  }
});
