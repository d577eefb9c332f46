// Documents read whole (RAG ingest from files, synth --docs): a file past V8's longest string (~512 MiB) or
// readFileSync's 2 GiB is refused by name and size with "split it", not reported as "not valid UTF-8" (before, the
// decoder's ERR_STRING_TOO_LONG was caught as bad bytes; synth's fallback then threw the raw V8 error); bytes that are
// not UTF-8 name the offset of the first bad byte; a byte order mark is dropped or kept as the caller asks.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { constants } from 'node:buffer';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readTextFile } from '../../src/formats/lines.js';
import { RagStore } from '../../src/platform/rag/store.js';
import { synth } from '../../src/platform/synth/synth.js';
import { brownTokenizer, hashEmbedder, rng } from '../platform/rag-helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'floe-text-file-'));
const notUtf8 = (at: number) => `bad byte at ${at}`;

test('readTextFile: UTF-8 text whole (BOM dropped or kept), the first invalid byte named, fs errors as fs throws them', () => {
  const seed = (Date.now() ^ 0x5eed) >>> 0;
  const r = rng(seed);
  const words = ['river', 'café', 'naïve', '東京', '🙂', 'the', 'north'];
  const text = Array.from({ length: 2000 }, () => words[Math.floor(r() * words.length)]).join(' ');
  const p = join(dir, 'ok.txt');
  writeFileSync(p, `\uFEFF${text}`);
  assert.equal(readTextFile(p, { notUtf8 }), text, `seed ${seed}`);
  assert.equal(readTextFile(p, { keepBom: true, notUtf8 }), `\uFEFF${text}`);
  const prefix = Buffer.from(text.slice(0, 500));
  const bad = join(dir, 'bad.txt');
  writeFileSync(bad, Buffer.concat([prefix, Buffer.from([0xe9, 0x20])]));
  assert.throws(() => readTextFile(bad, { notUtf8 }), { message: `bad byte at ${prefix.length}` });
  assert.throws(() => readTextFile(join(dir, 'missing.txt'), { notUtf8 }), { code: 'ENOENT' });
});

test('a file past readFileSync\'s 2 GiB (sparse) is refused by size, before any read', () => {
  const p = join(dir, 'huge.txt');
  const fd = openSync(p, 'w');
  ftruncateSync(fd, 2 ** 31 + 4096);
  closeSync(fd);
  try {
    assert.throws(() => readTextFile(p, { notUtf8 }), { message: `${p}: ${2 ** 31 + 4096} bytes (2048 MiB) of text is more than one JavaScript string holds (${constants.MAX_STRING_LENGTH} characters, ~512 MiB) and this reader needs the document whole; split it into smaller files` });
  } finally {
    rmSync(p);
  }
});

test('a text file past the longest string: readTextFile, RAG ingest and synth --docs say so (not "not UTF-8"), nothing written', async () => {
  // ASCII, so every byte is one UTF-16 unit: 16 MiB past the limit
  const p = join(dir, 'long.txt');
  const n = constants.MAX_STRING_LENGTH + 16 * 2 ** 20;
  const line = Buffer.from(`${'the river runs north through the valley '.repeat(100)}\n`);
  const fd = openSync(p, 'w');
  for (let at = 0; at < n; at += line.length) writeSync(fd, line, 0, Math.min(line.length, n - at));
  closeSync(fd);
  const tooLong = new RegExp(`long\\.txt: ${n} bytes \\(\\d+ MiB\\) of text is more than one JavaScript string holds .*; split it into smaller files$`);
  try {
    assert.throws(() => readTextFile(p, { notUtf8 }), tooLong);

    const emb = hashEmbedder(await brownTokenizer());
    const store = await RagStore.open(join(dir, 'db'), { create: true });
    const col = await store.create('docs', emb);
    const small = join(dir, 'small.txt');
    writeFileSync(small, 'The zyxoquartz crystal was found in the old mine.');
    await col.ingestFiles([small], emb, { chunkTokens: 48 });
    const version = await col.table.version();
    await assert.rejects(col.ingestFiles([small, p], emb), tooLong);
    assert.equal(await col.table.version(), version);

    const out = join(dir, 'synth.jsonl');
    await assert.rejects(synth({ method: 'from-documents', docs: [p], out, model: join(dir, 'no-model') }), tooLong);
  } finally {
    rmSync(p);
  }
});
