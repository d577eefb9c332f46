// The native weight reader: O_DIRECT reads (aligned bounce buffer, then a copy) return the same bytes as a plain read
// for unaligned offsets, lengths and chunk sizes; FLOE_STREAM_DIRECT=0 and file systems that refuse O_DIRECT fall
// back to buffered reads; a read past the end names the offset.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { loadAddon } from '../../src/backend/native-addon.js';
import { rng } from '../formats/fixtures.js';

const addon = loadAddon();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'floe-stream-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function counter(name: string): number {
  return addon!.counters()[name] ?? 0;
}

function randomFile(r: () => number, bytes: number): { file: string; data: Uint8Array } {
  const data = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) data[i] = Math.floor(r() * 256);
  const file = path.join(dir, `w-${Math.floor(r() * 1e9)}.bin`);
  fs.writeFileSync(file, data);
  return { file, data };
}

function readAll(file: string, data: Uint8Array, r: () => number, reads: number): void {
  const fd = addon!.streamOpen(file);
  try {
    const jobs: Array<{ dst: Uint8Array; off: number; ticket: number }> = [];
    for (let i = 0; i < reads; i++) {
      const off = Math.floor(r() * (data.length - 1));
      const chunk = [1, 4096, 4097, 65_536, 1 << 20][Math.floor(r() * 5)]!;
      // 1-byte chunks: each is its own aligned O_DIRECT read, so their ranges stay short (300 KB of them took ~40 s)
      const len = 1 + Math.floor(r() * Math.min(chunk === 1 ? 5000 : 300_000, data.length - off));
      const dst = new Uint8Array(len);
      jobs.push({ dst, off, ticket: addon!.streamRead(fd, dst, off, chunk) });
    }
    for (const j of jobs) {
      addon!.streamWait(j.ticket);
      assert.deepEqual(j.dst, data.subarray(j.off, j.off + j.dst.length), `read at ${j.off} (+${j.dst.length})`);
    }
  } finally {
    addon!.streamClose(fd);
  }
}

describe('native weight reader', { skip: addon?.streamRead ? false : 'needs the native addon' }, () => {
  it('O_DIRECT reads equal the file for random unaligned ranges and chunk sizes, and the direct path ran', () => {
    const seed = (Date.now() ^ 0x5eed) >>> 0;
    const r = rng(seed);
    const { file, data } = randomFile(r, 1_500_000 + Math.floor(r() * 10_000));
    const before = counter('stream.direct.native');
    readAll(file, data, r, 24);
    // ext4, xfs, btrfs take O_DIRECT; tmpfs refuses it at open (then the buffered path is what ran)
    const tmpfs = fs.statfsSync(dir).type === 0x01021994;
    if (!tmpfs) assert.ok(counter('stream.direct.native') >= before + 24, `seed ${seed}: every read went through O_DIRECT`);
  });

  it('FLOE_STREAM_DIRECT=0 reads through the page cache with the same bytes', () => {
    const r = rng((Date.now() ^ 0xd1) >>> 0);
    const { file, data } = randomFile(r, 700_001);
    const direct = counter('stream.direct.native');
    const reads = counter('stream.read.native');
    process.env.FLOE_STREAM_DIRECT = '0';
    try {
      readAll(file, data, r, 12);
    } finally {
      delete process.env.FLOE_STREAM_DIRECT;
    }
    assert.equal(counter('stream.direct.native'), direct, 'no O_DIRECT read');
    assert.equal(counter('stream.read.native'), reads + 12);
  });

  it('a read past the end of the file fails with the offset, on both paths', () => {
    const r = rng(7);
    const { file } = randomFile(r, 10_000);
    for (const off of [undefined, '0']) {
      if (off) process.env.FLOE_STREAM_DIRECT = off;
      const fd = addon!.streamOpen(file);
      try {
        const t = addon!.streamRead(fd, new Uint8Array(5000), 8000, 4096);
        assert.throws(() => addon!.streamWait(t), /unexpected end of file reading \d+ bytes at offset 10000/);
      } finally {
        addon!.streamClose(fd);
        delete process.env.FLOE_STREAM_DIRECT;
      }
    }
  });
});
