// floe synth --method from-documents with --docs files that are not plain text (subprocess on the src CLI): an empty
// file, a binary file (gzip) and a Latin-1 file are refused naming the file and what is wrong, before the model runs.
// Before, an empty file ran 0 units and exited 0 with an empty output, and a binary or Latin-1 file was chunked as
// replacement characters and the model asked questions about the garbage.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const README = repoPath('README.md');
const dir = mkdtempSync(join(tmpdir(), 'synth-docs-'));

function synth(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, 'synth', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, err: r.stderr };
}

const docs: [string, Buffer, RegExp][] = [
  ['empty.txt', Buffer.from(' \n\n  \n'), /empty\.txt: the document is empty \(no text\)/],
  ['readme.txt.gz', gzipSync(readFileSync(README)), /readme\.txt\.gz: not a plain-text document \(a NUL byte at offset \d+; a binary file\?\)/],
  // "café ok \uFFFD" in UTF-8 (a real replacement character is text), then "été" in Latin-1: é is the byte 0xe9 at offset 12
  ['latin1.txt', Buffer.concat([Buffer.from('café ok \uFFFD', 'utf8'), Buffer.from('été\n', 'latin1')]), /latin1\.txt: not UTF-8 text \(an invalid byte at offset 12\)/],
];

for (const [name, bytes, message] of docs) {
  test(`--docs ${name} is refused with exit 1 and no output`, () => {
    const file = join(dir, name);
    writeFileSync(file, bytes);
    const out = join(dir, `${name}.jsonl`);
    const r = synth('--method', 'from-documents', '--docs', file, '--out', out, '--threads', '1');
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, message);
    assert.ok(!existsSync(out) && !existsSync(`${out}.synth-progress`), 'no output was started');
  });
}

test('a UTF-8 document with a byte-order mark and a real U+FFFD is read, not refused', () => {
  const file = join(dir, 'bom.txt');
  writeFileSync(file, '\uFEFFThe river runs north through the valley. A \uFFFD marks a lost character in the old map.\n');
  const out = join(dir, 'bom.jsonl');
  const r = synth('--method', 'from-documents', '--docs', file, '--out', out, '--num', '1', '--max-tokens', '8', '--threads', '1', '--min-support', 'off');
  assert.equal(r.code, 0, r.err);
  assert.ok(existsSync(`${out}.synth-progress`));
});

test('the library refuses two documents of one name (unit ids name the document), before any model loads', async () => {
  const { synth: run } = await import('../../src/platform/synth/synth.js');
  const docs = [{ name: 'a.txt', text: 'The river runs north.' }, { name: 'a.txt', text: 'The fair began in 1820.' }];
  await assert.rejects(run({ method: 'from-documents', docs, out: join(dir, 'twice.jsonl'), model: join(dir, 'no-model') }), /synth: document a\.txt is given twice/);
  assert.ok(!existsSync(join(dir, 'twice.jsonl')));
});
