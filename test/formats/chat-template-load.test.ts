// Chat templates read from a model directory: a malformed tokenizer_config.json chat_template (or the file itself) is an
// error naming the file, never a stack overflow's or a TypeError's own words.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChatTemplate, loadChatTemplate } from '../../src/formats/chat-template.js';
import { tmpDir } from './fixtures.js';

test('a chat template nested thousands deep is a parse error naming its origin, not "Maximum call stack size exceeded"', async () => {
  const deepIf = '{% if true %}'.repeat(3000) + 'x' + '{% endif %}'.repeat(3000);
  const deepParen = `{{ ${'('.repeat(5000)}1${')'.repeat(5000)} }}`;
  // a few levels are fine
  assert.equal(new ChatTemplate('{% if true %}'.repeat(3) + 'x' + '{% endif %}'.repeat(3)).render([]), 'x');
  assert.equal(new ChatTemplate(`{{ ${'('.repeat(3)}1${')'.repeat(3)} }}`).render([]), '1');
  for (const src of [deepIf, deepParen]) {
    const dir = tmpDir('floe-chat-deep-');
    const file = path.join(dir, 'tokenizer_config.json');
    fs.writeFileSync(file, JSON.stringify({ chat_template: src }));
    await assert.rejects(loadChatTemplate(dir), (e: Error) => {
      assert.equal(e.message, `${file} chat_template: cannot parse chat template: blocks or expressions nested too deeply (${src.length} chars)`);
      return true;
    });
  }
});

test('tokenizer_config.json that is null, not an object, or not readable: no template, or an error naming the file', async () => {
  const dir = tmpDir('floe-chat-file-');
  const file = path.join(dir, 'tokenizer_config.json');
  fs.writeFileSync(file, 'null'); // as loadTokenizer reads it: no tokenizer_config.json
  assert.equal(await loadChatTemplate(dir), null);
  for (const [v, got] of [['42', '42'], ['"x"', '"x"'], ['[1]', '[1]']] as const) {
    fs.writeFileSync(file, v);
    await assert.rejects(loadChatTemplate(dir), (e: Error) => { assert.equal(e.message, `${file}: expected a JSON object, got ${got}`); return true; });
  }
  for (const name of ['tokenizer_config.json', 'chat_template.jinja']) {
    const d = tmpDir('floe-chat-file-');
    fs.mkdirSync(path.join(d, name));
    await assert.rejects(loadChatTemplate(d), (e: Error) => { assert.ok(e.message.startsWith(`${path.join(d, name)}: cannot read: `), e.message); return true; });
  }
});
