// FP8 checkpoints' scale tensors: a NaN, Inf, negative or (over nonzero weights) zero scale is refused naming the file,
// the scale tensor and the value; a zero scale over an all-zero block loads.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel } from '../../src/formats/load.js';
import { readSafetensorsSync, writeSafetensors, type StWriteTensor } from '../../src/formats/safetensors.js';
import { dequantizeRow } from '../../src/tensor/codecs.js';
import { tmpDir } from './fixtures.js';

const FIXTURE = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../fixtures/models/fp8_channel');
const W = 'model.layers.0.self_attn.o_proj.weight'; // F8_E4M3 [64, 64]
const S = `${W}_scale`; // F32 [64, 1]: one scale per output row

/** A copy of the per-channel FP8 fixture with `edit` applied to its tensors (copied out of the mapping). */
function variant(edit: (t: Record<string, { dtype: string; shape: readonly number[]; data: Uint8Array }>) => void): { dir: string; file: string } {
  const dir = tmpDir('floe-fp8-scales-');
  fs.copyFileSync(path.join(FIXTURE, 'config.json'), path.join(dir, 'config.json'));
  const st = readSafetensorsSync(path.join(FIXTURE, 'model.safetensors'));
  const t: Record<string, { dtype: string; shape: readonly number[]; data: Uint8Array }> = {};
  for (const [k, x] of st.tensors) t[k] = { dtype: x.dtype, shape: x.shape, data: x.data.slice() };
  edit(t);
  const file = path.join(dir, 'model.safetensors');
  writeSafetensors(file, t as Record<string, StWriteTensor>);
  return { dir, file };
}
const setScale = (t: Record<string, { data: Uint8Array }>, k: number, v: number) => { new DataView(t[S]!.data.buffer).setFloat32(k * 4, v, true); };

test('an FP8 scale that is NaN, +-Inf or negative is refused naming the file, the scale and the value', async () => {
  (await loadModel(variant(() => {}).dir)).dispose(); // the fixture itself loads
  for (const [k, v] of [[0, NaN], [5, Infinity], [63, -Infinity], [17, -0.002]] as const) {
    const { dir, file } = variant((t) => setScale(t, k, v));
    await assert.rejects(loadModel(dir), (e: Error) => {
      assert.equal(e.constructor, Error);
      const want = `${file}: scale "${S}" value ${k} (for rows ${k}..${k}, columns 0..63 of "${W}") is ${Math.fround(v)}; expected a finite positive number`;
      assert.ok(e.message.startsWith(want), `scale ${v}: ${e.message}`);
      return true;
    });
  }
});

test('a zero FP8 scale is refused over nonzero weights, and loads over a row of zero codes (as 0)', async () => {
  const nonzero = variant((t) => setScale(t, 9, 0));
  assert.ok(readSafetensorsSync(nonzero.file).tensors.get(W)!.data.subarray(9 * 64, 10 * 64).some((c) => (c & 0x7f) !== 0), 'fixture row 9 has nonzero codes');
  await assert.rejects(loadModel(nonzero.dir), (e: Error) => e.message.startsWith(`${nonzero.file}: scale "${S}" value 9 is 0, but the weights it scales (rows 9..9, columns 0..63 of "${W}") are not all zero`));
  // row 9 all +0 / -0 codes (0x00, 0x80) with scale 0: nothing is silenced, the row reads as zeros
  const zero = variant((t) => { setScale(t, 9, -0); t[W]!.data.fill(0x80, 9 * 64, 9 * 64 + 32).fill(0, 9 * 64 + 32, 10 * 64); });
  const m = await loadModel(zero.dir);
  const row = new Float32Array(64);
  dequantizeRow(m.tensors.get(W)!, 9, row);
  assert.ok(row.every((x) => x === 0), `row 9: ${row.slice(0, 4).join(', ')}...`);
  m.dispose();
});
