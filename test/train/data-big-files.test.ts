// Data files past V8's longest string (~512 MiB) or readFileSync's 2 GiB: `floe eval --data` (JSONL and plain-text
// paragraphs), contrastive pairs and the data fingerprint a run records read them a line / chunk at a time. Before,
// each failed ("Cannot create a string longer than 0x1fffffe8 characters"; ERR_FS_FILE_TOO_LARGE past 2 GiB).
// Plain-text paragraphs gathered line by line equal the whole-string rule on random text (CRLF, CR, blank lines of
// spaces and tabs, a BOM).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readEvalRecords, readEvalTexts } from '../../src/train/eval.js';
import { loadPairs } from '../../src/train/contrastive.js';
import { dataFingerprint } from '../../src/train/trainer.js';

const seed = process.env.FLOE_TEST_SEED ? Number(process.env.FLOE_TEST_SEED) : Math.floor(Math.random() * 1e9);
let s = seed;
const rnd = () => { s = (Math.imul(s, 1103515245) + 12345) & 0x7fffffff; return s / 2 ** 31; };
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;

/** The whole-string rule eval used before: universal newlines, split at blank lines, trimmed, empty dropped. */
const paragraphsOfString = (src: string): string[] => src.replace(/\r\n?/g, '\n').split(/\n[ \t]*\n/).map((p) => p.trim()).filter((p) => p !== '');

test(`plain-text eval paragraphs read line by line equal the whole-string rule (seed ${seed})`, () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-eval-par-'));
  try {
    for (let round = 0; round < 40; round++) {
      const words = ['the', 'river', 'é', 'Straße', '東京', '  ', '\t', 'old', 'man', '🙂'];
      const ends = ['\n', '\r\n', '\r', '\n \t\n', '\r\n\r\n', '\n\n\n', '\r\r', ' \n', '\n\t\n'];
      let text = round % 3 === 0 ? '\uFEFF' : '';
      const n = 1 + Math.floor(rnd() * 30);
      for (let i = 0; i < n; i++) text += Array.from({ length: 1 + Math.floor(rnd() * 5) }, () => pick(words)).join(' ') + pick(ends);
      if (rnd() < 0.5) text = text.trimEnd();
      const file = join(dir, `p${round}.txt`);
      writeFileSync(file, text);
      const want = paragraphsOfString(text.replace(/^\uFEFF/, ''));
      if (want.length === 0 || want[0]!.startsWith('{')) continue;
      assert.deepEqual(readEvalTexts(file), want, `seed ${seed} round ${round}: ${JSON.stringify(text)}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A file of `lines` lines, each `head` + ~1 MiB of JSON whitespace + `tail`: past the longest string in ~600 lines. */
function bigLines(file: string, lines: number, line: (i: number) => [string, string]): void {
  const pad = Buffer.alloc(2 ** 20, ' ');
  const fd = openSync(file, 'w');
  try {
    for (let i = 0; i < lines; i++) {
      const [head, tail] = line(i);
      writeSync(fd, head);
      writeSync(fd, pad);
      writeSync(fd, tail + '\n');
    }
  } finally {
    closeSync(fd);
  }
}

test('an eval JSONL past the longest string (~530 MiB) reads, record by record', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-eval-big-'));
  try {
    const file = join(dir, 'big.jsonl');
    bigLines(file, 530, (i) => [`{"text":"record ${i}"`, '}']);
    const r = readEvalRecords(file);
    assert.equal(r.records.length, 530);
    assert.deepEqual(r.records[529], { example: { kind: 'text', text: 'record 529' }, line: 530 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('contrastive pairs past the longest string (~530 MiB) read, line by line', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-pairs-big-'));
  try {
    const file = join(dir, 'pairs.jsonl');
    bigLines(file, 530, (i) => [`{"query":"q${i}"`, `,"positive":"p${i}"}`]);
    const tok = { encode: (t: string) => Array.from(t, (c) => c.charCodeAt(0)) };
    const r = loadPairs(file, tok, 16);
    assert.equal(r.samples.length, 530);
    assert.deepEqual([...r.samples[529]!.query], tok.encode('q529'));
    assert.equal(r.samples[529]!.line, 530);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// The file's sha256 as `printf '{"text":"a"}\\n' > f && truncate -s 2147487745 f && sha256sum f` prints it (and Python's
// hashlib over the same bytes): hashing the 2 GiB a second time in the test, with sha256sum, took half of its ~20 s.
const SHA256_2GIB = 'a9a43b6109ca12c411af3a62f41168a4352cb7f827e468144bbb1149656d7e91';

test('the data fingerprint of a file past 2 GiB (sparse) is its sha256', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-fp-big-'));
  try {
    const file = join(dir, 'big.jsonl');
    writeFileSync(file, '{"text":"a"}\n');
    truncateSync(file, 2 ** 31 + 4097); // a hole of zeros after the first line: no disk used
    const fp = dataFingerprint(file);
    assert.equal(fp.bytes, 2 ** 31 + 4097);
    assert.equal(fp.sha256, SHA256_2GIB);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
