// `floe chat` piped, checked against the library: the same template, history and greedy answers, turn by turn.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { encodeChat, loadChatTemplate, type ChatMessage } from '../../src/formats/chat-template.js';
import { generate } from '../../src/model/generate.js';
import { openModel } from '../../src/model/open.js';
import { TextStream } from '../../src/model/text-stream.js';
import { repoPath } from '../repo.js';

const ROOT = repoPath('');
const BIN = join(ROOT, 'bin', 'floe.js');
const BROWN = join(ROOT, 'models', 'floe-brown');
const MAX = 8;

function chat(input: string, ...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, 'chat', '--model', BROWN, '--backend', 'reference', '--temperature', '0', '--max-tokens', String(MAX), ...args], { encoding: 'utf8', input, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('floe chat: each line is a turn with the conversation so far; /bye ends it', async () => {
  const { model, tokenizer } = await openModel(BROWN, { backend: 'reference' });
  const template = (await loadChatTemplate(BROWN))!;
  const eos = [...new Set([...model.config.eosTokenIds, ...tokenizer!.eosIds])];
  const answer = (messages: ChatMessage[]) => generate(model, encodeChat(tokenizer!, template, messages, { addGenerationPrompt: true }), {
    maxTokens: MAX, sampling: { temperature: 0 }, stopTokenIds: eos, text: new TextStream(tokenizer!),
  }).text;
  const [u1, u2] = ['Where did the old man go?', 'And what did he say then?'];
  const a1 = answer([{ role: 'user', content: u1 }]);
  const a2 = answer([{ role: 'user', content: u1 }, { role: 'assistant', content: a1 }, { role: 'user', content: u2 }]);
  assert.notEqual(a2, answer([{ role: 'user', content: u2 }]), 'the second answer depends on the history (else this test could not tell)');

  const r = chat(`${u1}\n\n${u2}\n/bye\nnever answered\n`);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out, `${a1}\n${a2}\n`);

  const s = chat(`${u1}\n`, '--system', 'You are terse.'); // end of input ends it too
  assert.equal(s.code, 0, s.err);
  assert.equal(s.out, `${answer([{ role: 'system', content: 'You are terse.' }, { role: 'user', content: u1 }])}\n`);
});
