// POST /v1/files streams the upload to disk and checks it there line by line, under OpenAI's per-purpose limits
// (batch input 200 MiB, fine-tune 512 MiB; before, every upload was held in memory and capped at 200 MiB): a 210 MiB
// fine-tune file is taken; a file over its purpose's limit is a 413 naming the limit; a malformed or non-UTF-8 line a
// 400 naming its line; the purpose may come after the file; no partial upload is left in the store.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { createApp } from '../../src/serve/app.js';
import { byteTokenizer, FakeEngine } from './helpers.js';

const tok = byteTokenizer();
const apps: ReturnType<typeof createApp>[] = [];
after(async () => { for (const a of apps) await a.app.close(); });

async function server(files?: { maxBatchBytes?: number; maxFineTuneBytes?: number }): Promise<{ url: string; client: OpenAI; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'floe-files-upload-'));
  const s = createApp({ modelName: 'tiny', dataDir: dir, ui: false, files });
  apps.push(s);
  s.ready({ engine: new FakeEngine(tok), tokenizer: tok, template: null });
  const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  return { url, client: new OpenAI({ baseURL: url + '/v1', apiKey: 'unused', maxRetries: 0 }), dir };
}

/** Files in the store's directory other than stored ones: partial uploads left behind. */
const leftovers = (dir: string): string[] => readdirSync(join(dir, 'files')).filter((f) => !/^file-[A-Za-z0-9]+\.jsonl$/.test(f));

const ftLine = (i: number, pad = 0) => JSON.stringify({ messages: [{ role: 'user', content: `q${i}` }, { role: 'assistant', content: `a${i}${' '.repeat(pad)}` }] });
const batchLine = (i: number) => JSON.stringify({ custom_id: `c${i}`, method: 'POST', url: '/v1/completions', body: { model: 'tiny', prompt: 'x' } });
type ApiError = InstanceType<typeof OpenAI.APIError>;
const status = async (p: Promise<unknown>): Promise<{ status: number; code: unknown; message: string; param: unknown }> => {
  try {
    await p;
    return { status: 200, code: null, message: '', param: null };
  } catch (e) {
    const a = e as ApiError;
    return { status: a.status!, code: a.code, message: a.message, param: a.param };
  }
};

test('a 210 MiB fine-tune file (over the batch limit) uploads with the default limits, stored byte for byte', { timeout: 120_000 }, async () => {
  const { client, dir } = await server();
  const line = ftLine(0, 4000) + '\n';
  const n = Math.ceil((210 * 2 ** 20) / line.length);
  const body = Buffer.from(line.repeat(n));
  const f = await client.files.create({ file: await toFile(body, 'big.jsonl'), purpose: 'fine-tune' });
  assert.equal(f.bytes, body.length);
  assert.ok(f.bytes > 200 * 2 ** 20);
  const back = Buffer.from(await (await client.files.content(f.id)).arrayBuffer());
  assert.ok(back.equals(body), 'the stored file is the upload');
  assert.deepEqual(leftovers(dir), []);
});

test('per-purpose limits: over the batch limit is a 413 naming it, a fine-tune file of that size is taken, over the largest limit a 413; nothing left behind', async () => {
  const { client, dir } = await server({ maxBatchBytes: 4096, maxFineTuneBytes: 16384 });
  const batch = Array.from({ length: 60 }, (_, i) => batchLine(i)).join('\n') + '\n'; // ~6 KB
  assert.ok(batch.length > 4096 && batch.length < 16384);
  const r1 = await status(client.files.create({ file: await toFile(Buffer.from(batch), 'in.jsonl'), purpose: 'batch' }));
  assert.equal(r1.status, 413);
  assert.equal(r1.code, 'file_too_large');
  assert.match(r1.message, new RegExp(`in\\.jsonl is ${batch.length} bytes; a 'batch' file may be at most 4096 bytes`));
  const ft = Array.from({ length: 60 }, (_, i) => ftLine(i)).join('\n') + '\n';
  assert.ok(ft.length > 4096 && ft.length < 16384, String(ft.length));
  const ok = await client.files.create({ file: await toFile(Buffer.from(ft), 'ft.jsonl'), purpose: 'fine-tune' });
  assert.equal(ok.bytes, ft.length);
  const huge = Buffer.from(ftLine(0, 20000) + '\n');
  const r2 = await status(client.files.create({ file: await toFile(huge, 'huge.jsonl'), purpose: 'fine-tune' }));
  assert.equal(r2.status, 413);
  assert.deepEqual(leftovers(dir), []);
  assert.deepEqual((await client.files.list()).data.map((f) => f.filename), ['ft.jsonl']);
});

test('a malformed line and a line that is not UTF-8 are 400s naming the line; the purpose may follow the file', async () => {
  const { url, client, dir } = await server();
  const bad = [ftLine(0), ftLine(1), '{"messages": [', ftLine(3)].join('\n') + '\n';
  const r1 = await status(client.files.create({ file: await toFile(Buffer.from(bad), 'bad.jsonl'), purpose: 'fine-tune' }));
  assert.equal(r1.status, 400);
  assert.match(r1.message, /line 3/);
  const latin = Buffer.concat([Buffer.from(ftLine(0) + '\n'), Buffer.from('{"messages": [{"role": "user", "content": "caf'), Buffer.from([0xe9]), Buffer.from('"}]}\n')]);
  const r2 = await status(client.files.create({ file: await toFile(latin, 'latin.jsonl'), purpose: 'fine-tune' }));
  assert.equal(r2.status, 400);
  assert.match(r2.message, /line 2/);
  assert.match(r2.message, /UTF-8/);
  // file part first, purpose after it
  const form = new FormData();
  form.append('file', new Blob([ftLine(7) + '\n']), 'late.jsonl');
  form.append('purpose', 'fine-tune');
  const res = await fetch(url + '/v1/files', { method: 'POST', body: form });
  assert.equal(res.status, 200, await res.clone().text());
  assert.equal(((await res.json()) as { purpose: string }).purpose, 'fine-tune');
  assert.deepEqual(leftovers(dir), []);
});

test('a client that drops the connection mid-upload leaves no partial file in the store, and the server keeps serving', async () => {
  const { url, client, dir } = await server();
  const { request } = await import('node:http');
  const boundary = 'floe' + Math.random().toString(36).slice(2);
  const head = `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\nContent-Type: application/octet-stream\r\n\r\n`;
  const u = new URL(url + '/v1/files');
  const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': String(50 * 2 ** 20) } });
  req.on('error', () => {}); // the abort below
  req.write(head);
  req.write(Buffer.from((ftLine(1) + '\n').repeat(20000))); // ~1.3 MB of the announced 50 MiB
  // wait until the partial upload is on disk, then drop the connection
  const partial = () => (existsSync(join(dir, 'files')) ? readdirSync(join(dir, 'files')) : []).filter((f) => f.includes('.upload-'));
  for (let i = 0; i < 600 && partial().length === 0; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(partial().length, 1, 'the upload was being written');
  req.destroy();
  for (let i = 0; i < 600 && leftovers(dir).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(leftovers(dir), []);
  const f = await client.files.create({ file: await toFile(Buffer.from(ftLine(2) + '\n'), 'after.jsonl'), purpose: 'fine-tune' });
  assert.deepEqual((await client.files.list()).data.map((x) => x.id), [f.id]);
});
