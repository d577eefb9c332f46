// FP8 checkpoints' scale tensors: a NaN, Inf, negative or (over nonzero weights) zero scale is refused naming the file,
// the scale tensor and the value; a zero scale over an all-zero block loads. A weight scale must belong to one FP8
// weight: two scales for one weight, a scale beside a float weight or beside no weight are refused.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel } from '../../src/formats/load.js';
import { readSafetensorsSync, writeSafetensors, type StWriteTensor } from '../../src/formats/safetensors.js';
import { dequantizeRow, encodeBf16 } from '../../src/tensor/codecs.js';
import { tmpDir } from './fixtures.js';
import { repoPath } from '../repo.js';

const FIXTURE = repoPath('test/fixtures/models/fp8_channel');
const W = 'model.layers.0.self_attn.o_proj.weight'; // F8_E4M3 [64, 64]
const S = `${W}_scale`; // F32 [64, 1]: one scale per output row

/** A copy of the per-channel (or another) FP8 fixture with `edit` applied to its tensors (copied out of the mapping). */
function variant(edit: (t: Record<string, { dtype: string; shape: readonly number[]; data: Uint8Array }>) => void, fixture = FIXTURE): { dir: string; file: string } {
  const dir = tmpDir('floe-fp8-scales-');
  fs.copyFileSync(path.join(fixture, 'config.json'), path.join(dir, 'config.json'));
  const st = readSafetensorsSync(path.join(fixture, 'model.safetensors'));
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

const BLOCK_FIXTURE = path.resolve(FIXTURE, '../fp8_block'); // weight_scale_inv, 128x128 blocks

test('an FP8 weight with both weight_scale and weight_scale_inv is refused naming the file, the weight and both scales (one was loaded)', async () => {
  (await loadModel(variant(() => {}, BLOCK_FIXTURE).dir)).dispose();
  for (const [fixture, has, extra] of [[FIXTURE, S, `${W}_scale_inv`], [BLOCK_FIXTURE, `${W}_scale_inv`, S]] as const) {
    const { dir, file } = variant((t) => { t[extra] = { ...t[has]! }; }, fixture);
    await assert.rejects(loadModel(dir), (e: Error) => {
      assert.equal(e.message, `${file}: fp8 weight "${W}" has two scales, "${W}_scale_inv" and "${S}"; a checkpoint stores one (weight_scale_inv: fp8, weight_scale: compressed-tensors)`);
      return true;
    });
  }
  // the second scale in another shard: both files named
  const dir = tmpDir('floe-fp8-scales-sharded-');
  fs.copyFileSync(path.join(FIXTURE, 'config.json'), path.join(dir, 'config.json'));
  const st = readSafetensorsSync(path.join(FIXTURE, 'model.safetensors'));
  const [one, two] = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  const t: Record<string, StWriteTensor> = {};
  for (const [k, x] of st.tensors) t[k] = { dtype: x.dtype, shape: x.shape, data: x.data.slice() } as StWriteTensor;
  writeSafetensors(path.join(dir, one), t);
  writeSafetensors(path.join(dir, two), { [`${W}_scale_inv`]: t[S]! });
  const weightMap = Object.fromEntries([...Object.keys(t).map((k) => [k, one]), [`${W}_scale_inv`, two]]);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  await assert.rejects(loadModel(dir), (e: Error) => {
    assert.equal(e.message, `${path.join(dir, two)}: fp8 weight "${W}" has two scales, "${W}_scale_inv" and "${S}" (in ${path.join(dir, one)}); a checkpoint stores one (weight_scale_inv: fp8, weight_scale: compressed-tensors)`);
    return true;
  });
});

test('a weight scale beside a float weight, or beside no weight, is refused naming the file and both tensors (was ignored)', async () => {
  // o_proj stored dequantized as BF16 (the values the fp8 codes times their row scales make) with its scale left behind
  const m = await loadModel(FIXTURE);
  const o = m.tensors.get(W)!;
  const f32 = new Float32Array(o.numel);
  for (let r = 0; r < o.rows; r++) dequantizeRow(o, r, f32.subarray(r * o.cols, (r + 1) * o.cols));
  m.dispose();
  const cases: [(t: Record<string, { dtype: string; shape: readonly number[]; data: Uint8Array }>) => void, string, string][] = [
    [(t) => { t[W] = { dtype: 'BF16', shape: [64, 64], data: encodeBf16(f32) }; }, S, `belongs to "${W}", which is BF16, not F8_E4M3`],
    [(t) => { t['lm_head.weight_scale'] = { dtype: 'F32', shape: [256, 1], data: new Uint8Array(new Float32Array(256).fill(1).buffer) }; },
      'lm_head.weight_scale', 'belongs to "lm_head.weight", which is BF16, not F8_E4M3'],
    [(t) => { t['model.layers.0.self_attn.qkv_proj.weight_scale'] = { ...t[S]! }; },
      'model.layers.0.self_attn.qkv_proj.weight_scale', 'has no weight "model.layers.0.self_attn.qkv_proj.weight" in the checkpoint'],
  ];
  for (const [edit, scale, why] of cases) {
    const { dir, file } = variant(edit);
    await assert.rejects(loadModel(dir), (e: Error) => {
      assert.ok(e.message.startsWith(`${file}: scale "${scale}" ${why}`), e.message);
      return true;
    });
  }
});

test('an FP8 weight with a zero dim and a per-tensor / per-row scale is refused naming the file and both tensors', async () => {
  for (const [shape, sshape] of [[[0, 5], [1]], [[4, 0], [4]], [[0, 0], []]] as const) {
    const n = shape[0] * shape[1], sn = sshape.length === 0 ? 1 : sshape[0];
    const { dir, file } = variant((t) => {
      t['extra.weight'] = { dtype: 'F8_E4M3', shape, data: new Uint8Array(n) };
      t['extra.weight_scale'] = { dtype: 'F32', shape: sshape, data: new Uint8Array(new Float32Array(sn).fill(1).buffer) };
    });
    // was 'fp8 scale grid for [0,5] with block [0,5] needs NaN values, got 1' (Tensor's check: no file, no tensor)
    await assert.rejects(loadModel(dir), (e: Error) => e.message.startsWith(`${file}: scale "extra.weight_scale" has ${sn} values for fp8 weight "extra.weight" of shape [${shape.join(', ')}], which has no elements`), JSON.stringify(shape));
  }
});
