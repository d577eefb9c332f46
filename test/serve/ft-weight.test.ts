// OpenAI's fine-tuning format weighs assistant turns: `"weight": 0` leaves a turn out of the loss (it stays context),
// 1 (the default) trains on it. Before, floe read past the key: a weight-0 turn was trained on like any other, and
// a weight of 2 or on a user message was accepted. Now the trainer's mask leaves weight-0 turns out, and the
// upload check (POST /v1/files purpose fine-tune, through `floe serve` and the openai client) refuses a bad weight
// with its line.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { loadChatTemplate } from '../../src/formats/chat-template.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { encodeExample, parseJsonl } from '../../src/train/data.js';
import { client, serverProcs, startFloeServe } from './floe-process.js';
import { repoPath } from '../repo.js';

const MODEL = repoPath('models/floe-brown');
const BUILT = repoPath('dist/src/platform/jobs/child.js');
const procs = serverProcs();

const convo = (w1: number | undefined, w2: number | undefined) => ({ messages: [
  { role: 'user', content: 'the river' }, { role: 'assistant', content: 'was long and old', ...(w1 === undefined ? {} : { weight: w1 }) },
  { role: 'user', content: 'and the city' }, { role: 'assistant', content: 'came in the night', ...(w2 === undefined ? {} : { weight: w2 }) },
] });

test('weight 0 leaves an assistant turn out of the loss; weight 1 is the default; --train-on-prompt trains on it', async () => {
  const tok = (await loadTokenizer(MODEL))!;
  const template = (await loadChatTemplate(MODEL))!;
  const mask = (w1: number | undefined, w2: number | undefined, trainOnPrompt = false) => {
    const [{ example }] = parseJsonl(JSON.stringify(convo(w1, w2)), 'f.jsonl');
    return encodeExample(example!, tok, template, { maxSeqLen: 1024, trainOnPrompt }, 'f.jsonl:1');
  };
  const both = mask(undefined, undefined);
  assert.deepEqual(mask(1, 1), both, 'weight 1 is the default');
  const first = encodeExample({ kind: 'chat', messages: convo(undefined, undefined).messages.slice(0, 2) }, tok, template, { maxSeqLen: 1024 }, 'x');
  const firstTurn = first.mask.reduce((a, b) => a + b, 0);
  assert.ok(firstTurn > 0);
  const skipFirst = mask(0, 1);
  assert.deepEqual(skipFirst.tokens, both.tokens, 'a weight-0 turn stays in the context');
  assert.equal(skipFirst.mask.reduce((a, b) => a + b, 0), both.mask.reduce((a, b) => a + b, 0) - firstTurn, 'the first turn left the loss');
  assert.deepEqual(skipFirst.mask.slice(first.tokens.length), both.mask.slice(first.tokens.length), 'the second turn is trained as before');
  assert.deepEqual(skipFirst.mask.slice(0, first.tokens.length), first.mask.map(() => 0));
  assert.equal(mask(0, 0).mask.reduce((a, b) => a + b, 0), 0, 'nothing to learn (the loader drops such a line)');
  assert.ok(mask(0, 0, true).mask.every((m) => m === 1), '--train-on-prompt trains on every token');
});

test('the fine-tune upload refuses a weight other than 0 / 1 and a weight on a non-assistant message, naming the line', { timeout: 60_000 }, async () => {
  const floe = await startFloeServe(mkdtempSync(join(tmpdir(), 'floe-ftweight-')), { built: BUILT, procs });
  const c = client(floe);
  const upload = async (lines: unknown[]) => c.files.create({ file: await toFile(Buffer.from(lines.map((l) => JSON.stringify(l)).join('\n')), 'w.jsonl'), purpose: 'fine-tune' });
  assert.equal((await upload([convo(0, 1), convo(undefined, 0)])).purpose, 'fine-tune');
  await assert.rejects(upload([convo(0, 1), convo(2, 1)]), (e: unknown) => e instanceof OpenAI.BadRequestError && /line 2: messages\[1\]\.weight must be 0 \(leave the turn out of the loss\) or 1, got 2/.test(e.message));
  const onUser = convo(1, 1);
  (onUser.messages[0] as Record<string, unknown>).weight = 1;
  await assert.rejects(upload([onUser]), (e: unknown) => e instanceof OpenAI.BadRequestError && /line 1: messages\[0\]\.weight is read on assistant messages only \(role 'user'\)/.test(e.message));
  floe.proc.kill('SIGTERM');
  await floe.exit;
});
