// Files longer than one typed array may be (Node 20: 4 GiB; HF shards are up to ~5 GB, an 8B Q8_0 GGUF 8.5 GB): mapFile
// maps (or reads) them a range at a time. Before, the addon's whole-file mapping of such a file aborted the process
// (free(): double free: N-API's external buffer refuses it and frees the mapping's data twice).
// - the ranged path, forced on small files (setMapFileRangedAbove), gives the bytes, parsed tensors and file backing
//   of the whole-file path, memory-mapped and read;
// - a real 4.3 GiB sparse safetensors file (a zero pad tensor first, floe-brown's weights past 4 GiB) loads and gives
//   floe-brown's logits exactly.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadAddon } from '../../src/backend/native-addon.js';
import { fileBackingOf, mapFileSync, setMapFileMmap, setMapFileRangedAbove } from '../../src/formats/mapfile.js';
import { readSafetensorsSync, writeSafetensors } from '../../src/formats/safetensors.js';
import { readGguf } from '../../src/formats/gguf.js';
import { loadModel } from '../../src/formats/load.js';
import { selectBackend } from '../../src/backend/select.js';
import { LlamaModel } from '../../src/model/llama.js';
import { KvCache } from '../../src/model/kv-cache.js';
import { rng, tmpDir } from './fixtures.js';
import { repoPath } from '../repo.js';

const MODEL = repoPath('models/floe-brown');
const GGUF = repoPath('test/fixtures/gguf-independent/tiny-llama.gguf');

function ranged<T>(on: boolean, mmap: boolean, f: () => T): T {
  const prevR = setMapFileRangedAbove(on ? 0 : null), prevM = setMapFileMmap(mmap);
  try {
    return f();
  } finally {
    setMapFileRangedAbove(prevR);
    setMapFileMmap(prevM);
  }
}

for (const mmap of [true, false]) {
  test(`ranged ${mmap ? 'mmap' : 'read'} path: the same bytes, safetensors tensors and file offsets as the whole file`, () => {
    if (mmap && !loadAddon()) return;
    const seed = Math.floor(Math.random() * 1e9);
    const r = rng(seed);
    const file = path.join(tmpDir(), 'blob.bin');
    const bytes = new Uint8Array(3 * 4096 + 77).map(() => Math.floor(r() * 256));
    fs.writeFileSync(file, bytes);
    const whole = ranged(false, mmap, () => mapFileSync(file));
    const parts = ranged(true, mmap, () => mapFileSync(file));
    assert.equal(parts.byteLength, bytes.length);
    for (const [b, e] of [[0, 8], [1, 4097], [4095, 4096 + 3000], [8191, bytes.length], [bytes.length, bytes.length], [0, bytes.length]]) {
      const v = parts.subarray(b!, e!);
      assert.deepEqual(v, bytes.subarray(b!, e!), `seed ${seed}: [${b}, ${e})`);
      assert.equal(v.byteOffset % 64, b! % 64, 'a range keeps its file offset\'s alignment');
      assert.deepEqual(fileBackingOf(v), e! > b! || mmap ? { file, offset: b } : fileBackingOf(v));
      assert.deepEqual(whole.subarray(b!, e!), v);
    }
    assert.throws(() => parts.subarray(10, bytes.length + 1), new RegExp(`${file}: bytes \\[10, ${bytes.length + 1}\\) are not inside the file \\(${bytes.length} bytes\\)`));

    // a safetensors file parsed through ranges: every tensor equal to the whole-file parse, file offsets kept
    const st = path.join(tmpDir(), 'x.safetensors');
    const t1 = new Float32Array(1000).map(() => r() - 0.5), t2 = new Uint16Array(4097).map(() => Math.floor(r() * 65536));
    writeSafetensors(st, { a: { dtype: 'F32', shape: [10, 100], data: t1 }, b: { dtype: 'BF16', shape: [4097], data: t2 } });
    const w = ranged(false, mmap, () => readSafetensorsSync(st)), p = ranged(true, mmap, () => readSafetensorsSync(st));
    for (const name of ['a', 'b']) {
      assert.deepEqual(p.tensors.get(name)!.data, w.tensors.get(name)!.data, name);
      assert.deepEqual(fileBackingOf(p.tensors.get(name)!.data), fileBackingOf(w.tensors.get(name)!.data), `${name}'s file offset`);
    }
  });
}

test('ranged path: a GGUF (metadata, tokenizer, tensors) parses to the whole-file result', async () => {
  const w = await (async () => { const prev = setMapFileRangedAbove(null); try { return await readGguf(GGUF); } finally { setMapFileRangedAbove(prev); } })();
  const prev = setMapFileRangedAbove(0);
  try {
    const p = await readGguf(GGUF);
    assert.deepEqual([...p.metadata.keys()], [...w.metadata.keys()]);
    assert.deepEqual(p.metadata.get('tokenizer.ggml.tokens'), w.metadata.get('tokenizer.ggml.tokens'));
    assert.deepEqual([...p.tensors.keys()], [...w.tensors.keys()]);
    for (const [name, t] of p.tensors) assert.deepEqual(t.data, w.tensors.get(name)!.data, name);
  } finally {
    setMapFileRangedAbove(prev);
  }
});

test('mmapFile refuses a range outside the file, and one longer than an external buffer may be, with errors (no abort)', () => {
  const a = loadAddon();
  if (!a) return;
  const file = path.join(tmpDir(), 'small.bin');
  fs.writeFileSync(file, new Uint8Array(100));
  assert.throws(() => a.mmapFile(file, 90, 20), /range \[90\.?0*, \+20\.?0*\) is not inside '.*small\.bin' \(100 bytes\)/);
  const big = path.join(tmpDir(), 'sparse-big.bin');
  fs.closeSync(fs.openSync(big, 'w'));
  fs.truncateSync(big, bufferConstants.MAX_LENGTH + 4096); // sparse: no disk used
  assert.throws(() => a.mmapFile(big), /over Node's external-buffer limit/);
  const tail = new Uint8Array(a.mmapFile(big, bufferConstants.MAX_LENGTH, 4096));
  assert.equal(tail.length >= 4096, true);
  fs.rmSync(big);
});

test('a 4.3 GiB safetensors file (floe-brown past a zero pad) loads, and its logits are floe-brown\'s', { timeout: 120_000 }, async () => {
  const src = readSafetensorsSync(path.join(MODEL, 'model.safetensors'));
  const dir = tmpDir();
  for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(MODEL, f), path.join(dir, f));
  // header: two pads first (U8, 2 GiB each: a real shard's tensors are each under 4 GiB), then every floe-brown tensor,
  // past 4 GiB; data written at its offsets, the pads left a hole
  const PAD = bufferConstants.MAX_LENGTH / 2 + 12345;
  const header: Record<string, unknown> = {
    'pad.a': { dtype: 'U8', shape: [PAD], data_offsets: [0, PAD] }, 'pad.b': { dtype: 'U8', shape: [PAD], data_offsets: [PAD, 2 * PAD] },
  };
  let off = 2 * PAD;
  const place: [number, Uint8Array][] = [];
  for (const [name, t] of src.tensors) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.data.byteLength] };
    place.push([off, t.data]);
    off += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const file = path.join(dir, 'model.safetensors');
  const fd = fs.openSync(file, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    fs.writeSync(fd, len, 0, 8, 0);
    fs.writeSync(fd, Buffer.from(json), 0, json.length, 8);
    const start = 8 + json.length;
    for (const [o, d] of place) fs.writeSync(fd, d, 0, d.byteLength, start + o);
  } finally {
    fs.closeSync(fd);
  }
  assert.ok(fs.statSync(file).size > bufferConstants.MAX_LENGTH, 'the file is longer than one typed array may be');
  try {
    const big = await loadModel(dir);
    const ref = await loadModel(MODEL);
    for (const [name, t] of ref.tensors) assert.deepEqual(big.tensors.get(name)!.data, t.data, name);
    const be = selectBackend('reference');
    const logits = (m: typeof ref) => {
      const model = LlamaModel.fromTensors(m.config, m.tensors, be, m.ropeFreqFactors);
      const ids = [4091, 17, 300, 42, 9, 2000];
      const T = ids.length;
      const kv = new KvCache(m.config.numLayers, 1, 16, m.config.numKvHeads, m.config.headDim, 'f32');
      const positions = Int32Array.from({ length: T }, (_, i) => i);
      return model.forward({
        tokens: Int32Array.from(ids), positions, slots: positions,
        attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(T), blockTables: Int32Array.of(0), maxBlocks: 1 },
        logitRows: positions,
      }, kv);
    };
    assert.deepEqual(logits(big), logits(ref));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
