// safetensors reader/writer: round trips on random tensors, sharding, and precise validation errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  parseSafetensors, readSafetensors, readSafetensorsDir, readSafetensorsSync, writeSafetensors, writeSafetensorsSharded,
  type StDType, type StWriteTensor,
} from '../../src/formats/safetensors.js';
import { rng, tmpDir } from './fixtures.js';

const SIZES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, I32: 4, I64: 8, U8: 1 };

function randomTensors(seed: number): Record<string, StWriteTensor> {
  const r = rng(seed);
  const out: Record<string, StWriteTensor> = {};
  const dtypes = Object.keys(SIZES) as StDType[];
  const n = 3 + Math.floor(r() * 6);
  for (let i = 0; i < n; i++) {
    const dtype = dtypes[Math.floor(r() * dtypes.length)]!;
    const rank = Math.floor(r() * 3) + 1;
    const shape = Array.from({ length: rank }, () => 1 + Math.floor(r() * 7));
    const bytes = new Uint8Array(shape.reduce((a, b) => a * b, 1) * SIZES[dtype]!);
    for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(r() * 256);
    out[`t${i}.${dtype.toLowerCase()}`] = { dtype, shape, data: bytes };
  }
  return out;
}

/** A raw file: u64 header length | header text | data. */
function raw(header: unknown, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const h = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

test('write then read returns identical bytes, shapes, dtypes and metadata', () => {
  const dir = tmpDir();
  for (let seed = 1; seed <= 20; seed++) {
    const tensors = randomTensors(seed);
    const file = path.join(dir, `m${seed}.safetensors`);
    writeSafetensors(file, tensors, { format: 'pt', seed: String(seed) });
    const st = readSafetensorsSync(file);
    assert.deepEqual(st.metadata, { format: 'pt', seed: String(seed) });
    assert.equal(st.tensors.size, Object.keys(tensors).length);
    for (const [name, t] of Object.entries(tensors)) {
      const got = st.tensors.get(name);
      assert.ok(got, name);
      assert.equal(got.dtype, t.dtype);
      assert.deepEqual(got.shape, t.shape);
      assert.deepEqual(got.data, t.data);
      // Zero-copy views aligned to their element size (widest-first layout, 8-aligned header).
      assert.equal((got.data.byteOffset) % SIZES[got.dtype]!, 0, `${name} alignment`);
    }
    const n = Number(fs.readFileSync(file).readBigUInt64LE(0));
    assert.equal((8 + n) % 8, 0);
  }
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.tmp')), [], 'no temp files left');
});

test('writer accepts floe dtypes and typed arrays; rejects wrong byte counts and q8_0', () => {
  const dir = tmpDir();
  const v = new Float32Array([1, 2, 3, 4, 5, 6]);
  writeSafetensors(path.join(dir, 'a.safetensors'), { w: { dtype: 'f32', shape: [2, 3], data: v } });
  const st = readSafetensorsSync(path.join(dir, 'a.safetensors'));
  assert.equal(st.tensors.get('w')!.dtype, 'F32');
  assert.deepEqual(new Float32Array(st.tensors.get('w')!.data.slice().buffer), v);
  assert.throws(() => writeSafetensors(path.join(dir, 'b.safetensors'), { w: { dtype: 'F32', shape: [2, 4], data: v } }), /"w".*needs 32 bytes, got 24/);
  assert.throws(() => writeSafetensors(path.join(dir, 'c.safetensors'), { w: { dtype: 'q8_0', shape: [1, 32], data: new Uint8Array(34) } }), /q8_0 cannot be stored/);
  assert.equal(fs.existsSync(path.join(dir, 'b.safetensors')), false);
});

test('sharded write + index read gives the same tensors as a single file', async () => {
  const dir = tmpDir();
  const tensors = { ...randomTensors(5), ...randomTensors(6) };
  const shards = writeSafetensorsSharded(dir, tensors, { maxShardBytes: 64 });
  assert.ok(shards.length > 1, `expected several shards, got ${shards.length}`);
  const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
  assert.deepEqual(Object.keys(index.weight_map).sort(), Object.keys(tensors).sort());
  const set = await readSafetensorsDir(dir);
  assert.equal(set.files.length, shards.length);
  for (const [name, t] of Object.entries(tensors)) assert.deepEqual(set.tensors.get(name)!.data, t.data, name);
});

test('sharded: missing shard, tensor missing from shard, duplicate across shards', async () => {
  const dir = tmpDir();
  writeSafetensorsSharded(dir, { a: { dtype: 'U8', shape: [4], data: new Uint8Array(4) }, b: { dtype: 'U8', shape: [4], data: new Uint8Array(4) } }, { maxShardBytes: 4 });
  const idxPath = path.join(dir, 'model.safetensors.index.json');
  const idx = JSON.parse(fs.readFileSync(idxPath, 'utf8'));
  fs.writeFileSync(idxPath, JSON.stringify({ weight_map: { ...idx.weight_map, c: idx.weight_map.a } }));
  await assert.rejects(readSafetensorsDir(dir), (e: Error) => e.message.includes('"c"') && e.message.includes('missing from this shard'));
  fs.writeFileSync(idxPath, JSON.stringify({ weight_map: { a: 'nope.safetensors' } }));
  await assert.rejects(readSafetensorsDir(dir), /nope\.safetensors.*does not exist/);
  const d2 = tmpDir();
  writeSafetensors(path.join(d2, 'x.safetensors'), { a: { dtype: 'U8', shape: [1], data: new Uint8Array(1) } });
  writeSafetensors(path.join(d2, 'y.safetensors'), { a: { dtype: 'U8', shape: [1], data: new Uint8Array(1) } });
  await assert.rejects(readSafetensorsDir(d2), /y\.safetensors: tensor "a" also appears in .*x\.safetensors/);
});

test('validation errors name the file, the tensor and expected vs got', async () => {
  const F = '/x/m.safetensors';
  const ok = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  const data8 = new Uint8Array(8);
  assert.doesNotThrow(() => parseSafetensors(raw(ok, data8), F));
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(5), /m\.safetensors: truncated: 5 bytes/],
    [raw(ok, data8).subarray(0, 20), /header length \d+ runs past the end/],
    [raw('{"a": {', data8), /bad header JSON/],
    [raw('[1,2]'), /header JSON is not an object/],
    [raw({ a: { dtype: 'F99', shape: [2], data_offsets: [0, 8] } }, data8), /tensor "a": unknown dtype "F99"/],
    [raw({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 16] } }, data8), /tensor "a": data_offsets \[0, 16\] run past the data section \(8 bytes\)/],
    [raw({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, data8), /tensor "a": F32\[3\] needs 12 bytes, data_offsets \[0, 8\] hold 8/],
    [raw({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 8] } }, data8), /tensor "a": shape must be/],
    [raw({ a: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } }, data8), /begin after end/],
    [raw({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [2, 6] } }, data8), /tensor "b" \[2, 6\) overlaps tensor "a" \[0, 4\)/],
    [raw('{"a": {"dtype":"U8","shape":[1],"data_offsets":[0,1]}, "a": {"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', data8), /duplicate tensor name "a"/],
    [raw({ __metadata__: [1] }), /__metadata__ is not an object/],
  ];
  for (const [bytes, re] of cases) {
    assert.throws(() => parseSafetensors(bytes, F), (e: Error) => e.message.startsWith(F) && re.test(e.message), String(re));
  }
  // A huge declared header length is rejected before anything is allocated.
  const huge = raw(ok, data8);
  new DataView(huge.buffer).setBigUint64(0, 0xffffffffffffn, true);
  assert.throws(() => parseSafetensors(huge, F), /runs past the end/);
  await assert.rejects(readSafetensors('/nonexistent/q.safetensors'), /\/nonexistent\/q\.safetensors: cannot open/);
});
