// `floe merge` / `floe eval` as a user moving a model around meets them:
// - merge --out a directory that holds a sharded model (model.safetensors.index.json + shards), e.g. merging in place
//   into a downloaded sharded base: the merged weights are what the directory then loads. Before, merge wrote
//   model.safetensors beside the old index, the loader took the index, and the directory silently gave the base's
//   output (exit 0, "merged ..."). Stale weight files are removed, as transformers' save_pretrained does.
// - merge --out under a file: a usage error (exit 2) naming --out, before the model loads; before, merge loaded and
//   merged, then died on a raw EEXIST / ENOTDIR (exit 1).
// - eval --max-seq-len above the model's context: a usage error (exit 2) naming the flag; before, exit 1 with
//   "max sequence length N exceeds ..." (no flag named).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, writeFileSync, copyFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/formats/load.js';
import { readSafetensorsSync, writeSafetensors, type StWriteTensor } from '../../src/formats/safetensors.js';
import { dequantizeRow } from '../../src/tensor/codecs.js';
import type { Tensor } from '../../src/tensor/tensor.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const BROWN = repoPath('models/floe-brown');
const TOOLS = repoPath('models/floe-brown-tools');
const root = mkdtempSync(join(tmpdir(), 'floe-merge-out-'));

function floe(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, FLOE_THREADS: '1' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** floe-brown as HF saves a big model: two shards and model.safetensors.index.json. */
function shardedBrown(dir: string): void {
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(BROWN)) if (f !== 'model.safetensors') copyFileSync(join(BROWN, f), join(dir, f));
  const st = readSafetensorsSync(join(BROWN, 'model.safetensors'));
  const names = [...st.tensors.keys()];
  const weightMap: Record<string, string> = {};
  [names.slice(0, names.length >> 1), names.slice(names.length >> 1)].forEach((part, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    const out: Record<string, StWriteTensor> = {};
    for (const n of part) {
      const t = st.tensors.get(n)!;
      out[n] = { dtype: t.dtype as StWriteTensor['dtype'], shape: t.shape, data: t.data };
      weightMap[n] = file;
    }
    writeSafetensors(join(dir, file), out, { format: 'pt' });
  });
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
}

function values(t: Tensor): Float32Array {
  const out = new Float32Array(t.numel);
  for (let r = 0; r < t.rows; r++) dequantizeRow(t, r, out.subarray(r * t.cols, (r + 1) * t.cols));
  return out;
}

test('merge into a directory holding a sharded model: the directory loads the merged weights, no stale index or shards', { timeout: 120_000 }, async () => {
  const fresh = join(root, 'fresh');
  let r = floe('merge', '--model', BROWN, '--adapter', TOOLS, '--out', fresh, '--dtype', 'f32');
  assert.equal(r.status, 0, r.stderr);

  const inPlace = join(root, 'sharded');
  shardedBrown(inPlace);
  r = floe('merge', '--model', inPlace, '--adapter', TOOLS, '--out', inPlace, '--dtype', 'f32');
  assert.equal(r.status, 0, r.stderr);
  const left = readdirSync(inPlace).filter((f) => /safetensors/.test(f)).sort();
  assert.deepEqual(left, ['model.safetensors'], `weight files after the merge: ${left.join(', ')}`);

  const want = await loadModel(fresh);
  const got = await loadModel(inPlace);
  const base = await loadModel(BROWN);
  try {
    const name = 'model.layers.0.self_attn.q_proj.weight';
    const g = values(got.tensors.get(name)!);
    assert.notDeepEqual(g, values(base.tensors.get(name)!), 'the in-place merge changed the weights the directory loads');
    for (const [n, t] of want.tensors) assert.deepEqual(values(got.tensors.get(n)!), values(t), `${n}: in place vs fresh merge`);
  } finally {
    want.dispose(); got.dispose(); base.dispose();
  }
});

test('merge --out under a file: a usage error naming --out, before any model is read', { timeout: 60_000 }, () => {
  const file = join(root, 'a-file');
  writeFileSync(file, 'not a directory\n');
  for (const out of [file, join(file, 'sub')]) {
    let r = floe('merge', '--model', BROWN, '--adapter', TOOLS, '--out', out);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--out .*a-file is a file, not a directory; give a directory for the merged model/);
    assert.doesNotMatch(r.stderr, /EEXIST|ENOTDIR/);
  }
  // a base that does not exist is not looked at: the --out refusal comes first
  const r = floe('merge', '--model', join(root, 'no-such-model'), '--adapter', TOOLS, '--out', file);
  assert.equal(r.status, 2, r.stderr);
  assert.ok(!existsSync(join(root, 'no-such-model')));
});

test('eval --max-seq-len above the context is a usage error naming the flag; the context itself is fine', { timeout: 60_000 }, () => {
  const data = join(root, 'eval.jsonl');
  writeFileSync(data, '{"text":"The old man said that he would come."}\n');
  let r = floe('eval', '--model', BROWN, '--data', data, '--max-seq-len', '1025', '--json');
  assert.equal(r.status, 2, r.stdout + r.stderr);
  const e = JSON.parse(r.stdout) as { error: { message: string; type: string } };
  assert.equal(e.error.type, 'usage_error');
  assert.match(e.error.message, /^--max-seq-len 1025 exceeds the context of .*floe-brown \(1024 tokens\); give at most 1024$/);
  r = floe('eval', '--model', BROWN, '--data', data, '--max-seq-len', '1024', '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as { records: number }).records, 1);
});
