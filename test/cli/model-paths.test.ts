// A model path that does not exist, on the commands that read its tokenizer beside starting its engine (guard, batch,
// rag ask): exit 1 naming the path and what it was opened as, as generate and finetune say it ("PATH: cannot open
// model: ..."). Before: a bare "ENOENT: no such file or directory, stat '/x'" that named neither flag nor model.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runEach } from './run-each.js';

const dir = mkdtempSync(join(tmpdir(), 'model-paths-'));
const missing = join(dir, 'no-such-model');

test('guard, batch and rag ask with a missing --model: exit 1, "PATH: cannot open (guard) model"', () => {
  const doc = join(dir, 'notes.txt');
  writeFileSync(doc, 'The keys are rotated every ninety days.\n');
  const batchIn = join(dir, 'in.jsonl');
  writeFileSync(batchIn, JSON.stringify({ custom_id: 'a', method: 'POST', url: '/v1/chat/completions', body: { messages: [{ role: 'user', content: 'hi' }] } }) + '\n');
  const db = join(dir, 'rag');
  const cases: [string[], RegExp][] = [
    [['guard', '--model', missing, '--text', 'hello'], /no-such-model: cannot open (guard )?model: ENOENT/],
    [['guard', '--model', missing, '--text', 'hello', '--json'], /no-such-model: cannot open (guard )?model: ENOENT/],
    [['batch', '--model', missing, '--input', batchIn, '--output', join(dir, 'out.jsonl'), '--quiet'], /no-such-model: cannot open model: ENOENT/],
    [['rag', 'ask', '--db', db, '--collection', 'notes', '--model', missing, 'when are the keys rotated?'], /no-such-model: cannot open model: ENOENT/],
  ];
  const [ingest, ...runs] = runEach([['rag', 'ingest', '--db', db, '--collection', 'notes', '--threads', '1', doc], ...cases.map(([argv]) => argv)]);
  assert.equal(ingest!.status, 0, ingest!.stderr);
  for (const [i, [argv, message]] of cases.entries()) {
    const r = runs[i]!;
    assert.equal(r.status, 1, `${argv.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr + r.stdout, message, argv.join(' '));
  }
});
