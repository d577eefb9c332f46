// A batch input line whose body nests arrays and objects deeper than the HTTP API takes is refused at upload, naming
// the line, exactly where the server answers the same body 400 too_deeply_nested when sent directly. Before, the file
// was accepted and the line failed only when the batch ran it. A file stored before the check (its upload passed)
// fails the batch before any line runs, naming the line.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { BatchService, type Executor } from '../../src/platform/batch.js';
import { createFile } from '../../src/platform/files.js';
import { Store } from '../../src/platform/store.js';
import { createApp } from '../../src/serve/app.js';
import { rand } from '../engine/helpers.js';
import { byteTokenizer, FakeEngine } from './helpers.js';

const KEY = 'k-' + Math.random().toString(36).slice(2);
const tok = byteTokenizer();
const s = createApp({ modelName: 'tiny', apiKey: KEY, dataDir: mkdtempSync(join(tmpdir(), 'floe-batch-deep-')), ui: false });
s.ready({ engine: new FakeEngine(tok), tokenizer: tok, template: null });
const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
const client = new OpenAI({ baseURL: url + '/v1', apiKey: KEY, maxRetries: 0 });
after(() => s.app.close());

const seed = Number(process.env.FLOE_SEED ?? Math.floor(Math.random() * 2 ** 31));
const r = rand(seed);

/** A value of `levels` arrays / objects (drawn at random) around a number, built without recursion; its steps outermost first. */
function nested(levels: number): { value: unknown; steps: string[] } {
  let value: unknown = 1;
  const steps: string[] = [];
  for (let i = 0; i < levels; i++) {
    if (r() < 0.5) { value = [value]; steps.unshift('[0]'); } else { value = { k: value }; steps.unshift('.k'); }
  }
  return { value, steps };
}
const cut = (s: string) => (s.length > 120 ? `${s.slice(0, 120)}…` : s);

const line = (i: number, body: Record<string, unknown>) => JSON.stringify({ custom_id: `c${i}`, method: 'POST', url: '/v1/completions', body });
const plain = (i: number) => ({ model: 'tiny', prompt: [0x61 + (i % 26)], max_tokens: 1 });

/** Whether the server, sent `body` directly, refuses it as too deeply nested. */
async function tooDeep(body: unknown): Promise<string | null> {
  const res = await fetch(url + '/v1/completions', { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const j = (await res.json()) as { error?: { code?: string; message?: string } };
  return res.status === 400 && j.error?.code === 'too_deeply_nested' ? j.error.message! : null;
}

test(`upload refuses a line exactly when the server refuses its body as too deeply nested, naming the line (seed ${seed})`, async () => {
  let refusedSome = false, acceptedSome = false;
  for (let levels = 125; levels <= 131; levels++) {
    const n = 2 + Math.floor(r() * 8), at = Math.floor(r() * n);
    const deep = nested(levels);
    const body = { ...plain(at), extra: deep.value };
    const direct = await tooDeep(body);
    const text = Array.from({ length: n }, (_, i) => line(i, i === at ? body : plain(i))).join('\n') + '\n';
    const upload = client.files.create({ file: await toFile(Buffer.from(text), `deep-${levels}.jsonl`), purpose: 'batch' });
    const what = `${levels} levels under 'extra' on line ${at + 1} of ${n}`;
    if (direct !== null) {
      refusedSome = true;
      // the first value past 128 levels (the body is level 1, extra's outermost value level 2), as the server names it
      const path = `extra${deep.steps.slice(0, 127).join('')}`;
      assert.ok(direct.startsWith(`'${cut(path)}' nests arrays and objects more than 128 levels deep`), `${what}, sent directly: ${direct}`);
      await assert.rejects(upload, (e: unknown) => {
        assert.ok(e instanceof OpenAI.BadRequestError, `${what}: ${String(e)}`);
        assert.equal(e.code, 'invalid_file', what);
        assert.equal(e.param, 'body', what);
        const message = (e.error as { message: string }).message;
        assert.ok(message.startsWith(`line ${at + 1}: '${cut(`body.${path}`)}' nests arrays and objects more than 128 levels deep`), `${what}: ${message}`);
        return true;
      });
    } else {
      acceptedSome = true;
      assert.match((await upload).id, /^file-/, what);
    }
  }
  assert.ok(refusedSome && acceptedSome, 'the levels tried straddle the server\'s limit');
});

test(`a stored input file with a too-deep line (uploaded before the check) fails its batch before any line runs, naming the line (seed ${seed})`, async () => {
  const store = new Store(mkdtempSync(join(tmpdir(), 'floe-batch-deep-svc-')));
  const n = 3 + Math.floor(r() * 6), at = Math.floor(r() * n);
  const lines = Array.from({ length: n }, (_, i) => line(i, i === at ? { ...plain(i), extra: nested(200).value } : plain(i)) + '\n');
  const fileId = createFile(store, 'batch', 'old.jsonl', lines, n).id;
  let ran = 0;
  const exec: Executor = async () => { ran++; return { status: 200, body: '{}' }; };
  const svc = new BatchService(store, exec, { window: () => 2 });
  const b = await svc.wait(svc.create({ input_file_id: fileId, endpoint: '/v1/completions' }).id);
  assert.equal(b.status, 'failed');
  assert.equal(ran, 0, 'no line ran');
  const errors = JSON.parse(b.errors!) as { data: Array<{ code: string; message: string; line: number | null }> };
  assert.equal(errors.data[0]!.code, 'invalid_file');
  assert.equal(errors.data[0]!.line, at + 1);
  assert.match(errors.data[0]!.message, new RegExp(`^line ${at + 1}: 'body\\.extra[^']*' nests arrays and objects more than 128 levels deep`));
  await svc.close();
  store.close();
});
