// `floe tokenizer train` with inputs a user gets wrong: --out a file is a usage error naming --out (was a raw
// "EEXIST: file already exists, mkdir", exit 1); a --data directory names the path (was "EISDIR: illegal operation on
// a directory, read", no path); an empty data file is refused (was a 0-merge, bytes-only tokenizer written, exit 0).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const root = mkdtempSync(join(tmpdir(), 'floe-tok-train-'));

function floe(...args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

test('tokenizer train: --out a file, a --data directory, empty data', { timeout: 60_000 }, () => {
  const data = join(root, 'data.jsonl');
  writeFileSync(data, '{"text":"the cat sat on the mat"}\n{"text":"the dog sat on the log"}\n');
  const file = join(root, 'a-file');
  writeFileSync(file, 'x');
  let r = floe('tokenizer', 'train', '--data', data, '--vocab-size', '270', '--out', file);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--out .*a-file: .*a-file is a file, not a directory; give a directory for the tokenizer files/);

  const dir = join(root, 'a-dir');
  mkdirSync(dir);
  r = floe('tokenizer', 'train', '--data', dir, '--vocab-size', '270', '--out', join(root, 'out1'));
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /a-dir: cannot read data: EISDIR/);

  for (const [name, body] of [['empty.jsonl', ''], ['blank.jsonl', '{"text":""}\n\n'], ['empty.txt', '']] as const) {
    const f = join(root, name);
    writeFileSync(f, body);
    const out = join(root, `out-${name}`);
    r = floe('tokenizer', 'train', '--data', f, '--vocab-size', '270', '--out', out);
    assert.equal(r.status, 1, `${name}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`${name}: no text to train a tokenizer on`));
    assert.ok(!existsSync(join(out, 'tokenizer.json')), `${name}: nothing written`);
  }

  r = floe('tokenizer', 'train', '--data', data, '--vocab-size', '270', '--out', join(root, 'ok'));
  assert.equal(r.status, 0, r.stderr);
  assert.ok(existsSync(join(root, 'ok', 'tokenizer.json')));
});

// Before, the files were read as UTF-8 with replacement: a Latin-1 corpus trained a tokenizer on U+FFFD (its merges
// EF BF BD pieces), exit 0.
test('tokenizer train: a file that is not UTF-8 is refused naming it and the offset; no tokenizer is written', { timeout: 60_000 }, () => {
  for (const name of ['latin1.txt', 'latin1.jsonl']) {
    const f = join(root, name);
    const text = name.endsWith('.jsonl') ? '{"text":"caf\u00e9 cr\u00e8me"}\n' : 'caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n';
    writeFileSync(f, Buffer.from(text, 'latin1'));
    const out = join(root, `out-${name}`);
    const r = floe('tokenizer', 'train', '--data', f, '--vocab-size', '270', '--out', out);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`${name}: not valid UTF-8 \\(an invalid byte at offset \\d+\\); convert the file to UTF-8 first`));
    assert.ok(!existsSync(join(out, 'tokenizer.json')), 'no tokenizer written');
  }
  // a leading byte order mark is no text, still dropped
  const bom = join(root, 'bom.txt');
  writeFileSync(bom, '\ufeffthe cat sat on the mat\n');
  const r = floe('tokenizer', 'train', '--data', bom, '--vocab-size', '270', '--out', join(root, 'out-bom'));
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(readFileSync(join(root, 'out-bom', 'tokenizer.json'), 'utf8'), /\u00ef\u00bb\u00bf|\ufeff/, 'no BOM piece in the vocabulary');
});

// Before, `--out models/floe-brown` wrote the new tokenizer.json and tokenizer_config.json over the model's own (exit 0):
// the model then read its prompts with a vocabulary its weights were never trained with.
test('tokenizer train: an --out that holds a model (config.json) is refused; the model\'s tokenizer is kept', { timeout: 60_000 }, () => {
  const model = join(root, 'a-model');
  cpSync(repoPath('models/floe-brown'), model, { recursive: true });
  const before = readFileSync(join(model, 'tokenizer.json'));
  const data = join(root, 'model-data.jsonl');
  writeFileSync(data, '{"text":"the cat sat on the mat"}\n');
  const r = floe('tokenizer', 'train', '--data', data, '--vocab-size', '270', '--out', model);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--out .*a-model holds a model \(config\.json\): the new tokenizer would replace the one its weights were trained with/);
  assert.deepEqual(readFileSync(join(model, 'tokenizer.json')), before, 'tokenizer.json kept');
});
