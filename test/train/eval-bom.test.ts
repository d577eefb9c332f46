// `floe eval --data FILE` where FILE starts with a UTF-8 BOM (Windows editors save one): the same records and
// perplexity as without it, as `floe finetune` already read such a file. Before, a JSONL file failed on line 1
// ("bad JSON: Unexpected token '﻿'") and a plain-text file evaluated the BOM's bytes as part of its first paragraph.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readEvalTexts } from '../../src/train/eval.js';
import { readTrainingTexts } from '../../src/train/bpe-trainer.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const BROWN = repoPath('models/floe-brown');
const root = mkdtempSync(join(tmpdir(), 'floe-eval-bom-'));
const BOM = '\uFEFF';

function evalJson(file: string): { records: number; tokens: number; loss: number } {
  const r = spawnSync(process.execPath, [BIN, 'eval', '--model', BROWN, '--data', file, '--json', '--threads', '1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  return JSON.parse(r.stdout) as { records: number; tokens: number; loss: number };
}

test('an eval file with a UTF-8 BOM reads as the same file without it (JSONL and plain text)', { timeout: 60_000 }, () => {
  const jsonl = '{"text":"The old man said that he would come."}\n{"text":"She smiled."}\n';
  const plain = 'The old man said that he would come.\n\nShe smiled.\n';
  for (const [name, body] of [['data.jsonl', jsonl], ['data.txt', plain]] as const) {
    const a = join(root, name);
    const b = join(root, `bom-${name}`);
    writeFileSync(a, body);
    writeFileSync(b, BOM + body);
    assert.deepEqual(readEvalTexts(b), readEvalTexts(a), name);
    assert.deepEqual(readEvalTexts(a), ['The old man said that he would come.', 'She smiled.']);
    const [ra, rb] = [evalJson(a), evalJson(b)];
    assert.deepEqual([rb.records, rb.tokens, rb.loss], [ra.records, ra.tokens, ra.loss], name);
  }
});


// A plain-text eval file with Windows line ends: paragraphs split at blank lines and read with LF line ends, as the
// same file with LF ends. Before, "\r\n\r\n" was no paragraph break, so the whole file was one record (cut at the
// context) with its CRs in the text.
test('a plain-text eval file with CRLF line ends has the paragraphs of its LF twin', { timeout: 60_000 }, () => {
  const lf = 'The old man said that he would come.\nHe did not.\n\nShe smiled.\n \nThe end.\n';
  const a = join(root, 'lf.txt');
  const b = join(root, 'crlf.txt');
  writeFileSync(a, lf);
  writeFileSync(b, lf.replaceAll('\n', '\r\n'));
  assert.deepEqual(readEvalTexts(b), ['The old man said that he would come.\nHe did not.', 'She smiled.', 'The end.']);
  assert.deepEqual(readEvalTexts(b), readEvalTexts(a));
  const [ra, rb] = [evalJson(a), evalJson(b)];
  assert.deepEqual([rb.records, rb.tokens, rb.loss], [ra.records, ra.tokens, ra.loss]);
});

// `floe tokenizer train --data FILE` with a BOM: the same texts as without. Before, a JSONL file failed
// "invalid JSON" on line 1, and a plain-text file trained on the BOM's three bytes as text.
test('tokenizer train data with a UTF-8 BOM reads as without it (JSONL and plain text)', async () => {
  for (const [name, body] of [['t.jsonl', '{"text":"a b"}\n{"prompt":"c","completion":" d"}\n'], ['t.txt', 'plain text\n']] as const) {
    const a = join(root, name);
    const b = join(root, `bom-${name}`);
    writeFileSync(a, body);
    writeFileSync(b, BOM + body);
    assert.deepEqual(await readTrainingTexts(b), await readTrainingTexts(a), name);
  }
});
