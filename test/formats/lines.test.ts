// The chunked line reader against readFileSync(...).split('\n') (multi-byte characters across chunk boundaries, CRLF,
// blank lines, no final newline, invalid UTF-8), and a JSONL file past V8's longest string read end to end.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, readdirSync, rmSync, statSync, closeSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileChunks, fileLines, firstInvalidByte, LineError, stringLines, type TextLine } from '../../src/formats/lines.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { FileValidationError, parseBatchFile, parseBatchInput, parseFineTuneFile, parseFineTuneInput } from '../../src/platform/files.js';
import { loadSamples } from '../../src/train/data.js';
import { Rng } from '../../src/train/rng.js';
import { FIXTURES } from '../train/fixtures.js';

const tmp = mkdtempSync(join(tmpdir(), 'floe-lines-'));
let files = 0;
const put = (bytes: string | Uint8Array): string => {
  const p = join(tmp, `f${files++}.txt`);
  writeFileSync(p, bytes);
  return p;
};

/** What fileLines should give: readFileSync's text split at '\n', with byte offsets and lengths counted independently. */
function expected(bytes: Buffer): TextLine[] {
  const parts = bytes.toString('utf8').split('\n');
  let offset = 0;
  return parts.map((text, i) => {
    const n = Buffer.byteLength(text);
    const l = { text, number: i + 1, offset, bytes: n, terminated: i < parts.length - 1 };
    offset += n + 1;
    return l;
  });
}

// pieces that random files are made of: 1-4 byte characters, CR, LF, CRLF, blank runs, a byte order mark
const PIECES = ['a', 'z', ' ', '{"t":1}', 'é', 'ß', '€', '中', '𝄞', '😀', '\r', '\n', '\r\n', '\n\n', '\uFEFF'];

function randomText(rng: Rng, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += PIECES[rng.int(PIECES.length)]!;
  return s;
}

const openFds = () => readdirSync('/proc/self/fd').length;

describe('fileLines', () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    it(`matches readFileSync().split('\\n') on random multi-byte text, chunks of 1..64 bytes and the default (seed ${seed})`, () => {
      const rng = new Rng(seed);
      const bytes = Buffer.from(randomText(rng, 50 + rng.int(400)));
      const p = put(bytes);
      const want = expected(bytes);
      // a multi-byte character must straddle a chunk boundary somewhere for a small chunk to test anything
      assert.ok(bytes.some((b) => b >= 0x80), 'the text has multi-byte characters');
      for (const chunkBytes of [1, 2, 3, 5, 7, 13, 64, undefined]) {
        assert.deepEqual([...fileLines(p, { chunkBytes })], want, `chunkBytes ${chunkBytes}`);
      }
      assert.deepEqual([...stringLines(bytes.toString('utf8'))].map((l) => l.text), want.map((l) => l.text));
    });
  }

  const cases: [string, string][] = [
    ['an empty file', ''],
    ['one newline', '\n'],
    ['CRLF lines', '{"a":1}\r\n{"b":2}\r\n'],
    ['no final newline', 'x\ny'],
    ['blank lines between', 'a\n\n\n b \n'],
    ['a byte order mark (kept, as readFileSync keeps it)', '\uFEFFa\nb'],
    ['a 4-byte character at the end, no newline', 'ab\n😀'],
  ];
  for (const [name, text] of cases) {
    it(`${name}: as split('\\n')`, () => {
      const bytes = Buffer.from(text);
      const p = put(bytes);
      for (const chunkBytes of [1, 2, 3, 7, undefined]) assert.deepEqual([...fileLines(p, { chunkBytes })], expected(bytes), `chunkBytes ${chunkBytes}`);
    });
  }

  it("unterminated: 'skip' leaves out the text after the last newline, undecoded (a torn write ending inside a character)", () => {
    const p = put(Buffer.concat([Buffer.from('{"a":1}\n\n{"b":"'), Buffer.from('€').subarray(0, 2)]));
    assert.deepEqual([...fileLines(p, { unterminated: 'skip', chunkBytes: 3 })].map((l) => l.text), ['{"a":1}', '']);
    assert.throws(() => [...fileLines(p)], (e: unknown) => e instanceof LineError && e.line === 3);
  });

  for (const chunkBytes of [1, 4, 7, undefined]) {
    it(`invalid UTF-8 is an error naming the file, the line and the byte (chunks of ${chunkBytes ?? 'default'})`, () => {
      // line 3 holds a Latin-1 'é' (0xE9 then a space: a 3-byte lead without its continuation bytes) at byte 6
      const p = put(Buffer.concat([Buffer.from('ok\n€ok\nabcd'), Buffer.from([0xe9]), Buffer.from(' x\nok\n')]));
      const seen: string[] = [];
      assert.throws(() => { for (const l of fileLines(p, { chunkBytes })) seen.push(l.text); }, (e: unknown) => {
        assert.ok(e instanceof LineError);
        assert.equal(e.message, `${p}:3: not valid UTF-8 (an invalid byte at column 5, 0xe9); convert the file to UTF-8 first (e.g. iconv -f latin1 -t utf-8)`);
        return true;
      });
      assert.deepEqual(seen, ['ok', '€ok'], 'the lines before it are read');
      assert.throws(() => [...fileLines(p, { name: 'data file' })], /^Error: data file:3: not valid UTF-8/);
    });
  }

  it('a file system error is thrown as fs throws it (with its code), and the file is closed after a break or a throw', () => {
    assert.throws(() => [...fileLines(join(tmp, 'missing.jsonl'))], (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT');
    assert.throws(() => [...fileLines(tmp)], (e: unknown) => (e as NodeJS.ErrnoException).code === 'EISDIR');
    const p = put('a\nb\nc\n');
    const before = openFds();
    for (const l of fileLines(p, { chunkBytes: 1 })) if (l.number === 2) break;
    assert.throws(() => { for (const l of fileLines(p)) if (l.number === 2) throw new Error('stop'); }, /stop/);
    assert.throws(() => [...fileLines(tmp)]); // EISDIR from the read: the opened directory is closed too
    assert.equal(openFds(), before);
  });
});

describe('fileChunks', () => {
  it('gives the file bytes in order, every chunk full but the last', () => {
    const bytes = Buffer.from(randomText(new Rng(7), 300));
    const p = put(bytes);
    for (const n of [1, 7, 64, bytes.length, bytes.length + 1]) {
      const chunks = [...fileChunks(p, n)];
      assert.deepEqual(Buffer.concat(chunks), bytes, `chunk ${n}`);
      assert.ok(chunks.slice(0, -1).every((c) => c.length === n));
    }
    assert.deepEqual([...fileChunks(put(''))], []);
  });
});

describe('firstInvalidByte', () => {
  for (const seed of [11, 12, 13]) {
    it(`is where TextDecoder's first U+FFFD replaces bytes, and 'length' exactly when the bytes decode (seed ${seed})`, () => {
      const rng = new Rng(seed);
      const valid = ['a', 'é', '€', '𝄞', '\n'];
      // the bytes where the lead and second-byte ranges change (overlong forms, surrogates, past U+10FFFF)
      const EDGES = [0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff];
      for (let t = 0; t < 2000; t++) {
        // valid characters and random bytes (lone continuation bytes, truncated or overlong sequences, surrogates, > U+10FFFF)
        const parts: Buffer[] = [];
        for (let k = rng.int(12); k > 0; k--) {
          const r = rng.next();
          parts.push(r < 0.4 ? Buffer.from(valid[rng.int(valid.length)]!) : Buffer.from([r < 0.6 ? rng.int(256) : EDGES[rng.int(EDGES.length)]!]));
        }
        const b = Buffer.concat(parts);
        if (b.includes(Buffer.from('\uFFFD'))) continue; // a literal U+FFFD would hide the replacement
        const text = new TextDecoder().decode(b);
        const bad = text.indexOf('\uFFFD');
        const want = bad < 0 ? b.length : Buffer.byteLength(text.slice(0, bad));
        assert.equal(firstInvalidByte(b), want, `bytes ${b.toString('hex')}`);
      }
    });
  }
});

describe('firstInvalidByte on every lead byte', () => {
  it("agrees with TextDecoder for each lead byte and second byte, followed by continuation bytes", () => {
    for (let lead = 0; lead < 256; lead++) {
      for (let second = 0; second < 256; second++) {
        for (const tail of [[], [0x61], [0x80], [0xc0], [0x80, 0xbf], [0x80, 0xc0], [0x80, 0x80, 0x61]]) {
          const b = Buffer.from([0x61, lead, second, ...tail]);
          if (b.includes(Buffer.from('\uFFFD'))) continue;
          const text = new TextDecoder().decode(b);
          const bad = text.indexOf('\uFFFD');
          assert.equal(firstInvalidByte(b), bad < 0 ? b.length : Buffer.byteLength(text.slice(0, bad)), `bytes ${b.toString('hex')}`);
        }
      }
    }
  });
});

describe('the file forms of the parsers', () => {
  const batchLine = (id: string) => JSON.stringify({ custom_id: id, method: 'POST', url: '/v1/embeddings', body: { input: 'é' } });
  const inputs = [
    `${batchLine('a')}\n${batchLine('b')}\n`,
    `\uFEFF${batchLine('a')}\r\n${batchLine('b')}`,
    `${batchLine('a')}\n\n${batchLine('b')}\n`, // an empty line: refused
    `${batchLine('a')}\n${batchLine('a')}\n`, // a custom_id used twice
    '', '\n',
  ];
  for (const [i, text] of inputs.entries()) {
    it(`parseBatchFile and parseFineTuneFile agree with the string forms (input ${i})`, () => {
      const p = put(text);
      const run = <T>(f: () => T): T | string => { try { return f(); } catch (e) { return `${(e as Error).constructor.name}: ${(e as Error).message} @${(e as FileValidationError).line}`; } };
      assert.deepEqual(run(() => parseBatchFile(p)), run(() => parseBatchInput(text)));
      const ft = text.replaceAll(batchLine('a'), '{"text":"a"}').replaceAll(batchLine('b'), '{"prompt":"p","completion":"c"}');
      const q = put(ft);
      assert.deepEqual(run(() => parseFineTuneFile(q)), run(() => parseFineTuneInput(ft)));
    });
  }

  it('a line that is not UTF-8 is refused with its line number; a missing file keeps its ENOENT', () => {
    const p = put(Buffer.concat([Buffer.from(`${batchLine('a')}\n{"custom_id":"`), Buffer.from([0xff]), Buffer.from('"}\n')]));
    assert.throws(() => parseBatchFile(p), (e: unknown) => e instanceof FileValidationError && e.line === 2 && /^line 2: not valid UTF-8 \(an invalid byte at column 15, 0xff\)/.test(e.message));
    const q = put(Buffer.concat([Buffer.from('{"text":"a"}\n\n{"text":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n')]));
    assert.throws(() => parseFineTuneFile(q), (e: unknown) => e instanceof FileValidationError && e.line === 3 && /^line 3: not valid UTF-8/.test(e.message));
    assert.throws(() => parseFineTuneFile(join(tmp, 'gone.jsonl')), (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT');
    assert.throws(() => parseBatchFile(join(tmp, 'gone.jsonl')), (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT');
  });
});

describe('a JSONL file larger than the longest JavaScript string', () => {
  it('loads through loadSamples and the fine-tune check, every line counted', async () => {
    const tok = (await loadTokenizer(join(FIXTURES, 'train', 'tokenizer')))!;
    // lines of ~1 MB (a short example, then JSON whitespace), so the sample count stays small while the file passes
    // 0x1fffffe8 characters; 1_000_003 bytes a line, so lines straddle the reader's 16 MiB chunks at varying places
    const LINE = 1_000_003;
    const line = Buffer.alloc(LINE, 0x20);
    line.write('{"text":"the cat é"}');
    line[LINE - 1] = 0x0a;
    const lines = Math.ceil(0x1fffffe8 / LINE) + 16; // 553 lines, ~553 MB
    const block = Buffer.concat(Array.from({ length: 32 }, () => line));
    const p = join(tmp, 'big.jsonl');
    const fd = openSync(p, 'w');
    try {
      for (let n = 0; n < lines; n += 32) writeSync(fd, block, 0, Math.min(32, lines - n) * LINE);
    } finally {
      closeSync(fd);
    }
    try {
      assert.ok(statSync(p).size > 0x1fffffe8, 'the file is longer than the longest string');
      const small = loadSamples(put('{"text":"the cat é"}\n'), tok, null, { maxSeqLen: 64 }).samples[0]!;
      const r = loadSamples(p, tok, null, { maxSeqLen: 64 });
      assert.equal(r.samples.length, lines);
      assert.deepEqual(r.samples.map((s) => s.line), Array.from({ length: lines }, (_, i) => i + 1));
      assert.ok(r.samples.every((s) => s.tokens.join() === small.tokens.join()), 'every line reads as the same one-line file does');
      assert.equal(parseFineTuneFile(p), lines);
    } finally {
      rmSync(p, { force: true });
    }
  });
});
