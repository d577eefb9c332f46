// openStage: only rank 0 (embedding and head in a serving pipeline) converts (--dtype) or repacks the embedding, final
// norm and head; another rank keeps them as the file's mapped views, converts and repacks its own layers only, and
// decodes the same as a one-process model over those layers.

import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadModel, type LoadDType } from '../../src/formats/load.js';
import { writeSafetensors, type StWriteTensor } from '../../src/formats/safetensors.js';
import { openStage } from '../../src/parallel/stage-model.js';
import { repoPath } from '../repo.js';

const MODEL = repoPath('models/floe-brown'); // f32, tied head, 6 layers
const EMBED = 'model.embed_tokens.weight';
const LAYER = /^model\.layers\.(\d+)\./;

/** floe-brown written as a bf16 checkpoint (what most HF checkpoints are): its embedding is what prepareWeights repacks. */
async function bf16Copy(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'floe-stage-bf16-'));
  const m = await loadModel(MODEL, { dtype: 'bf16' });
  const out: Record<string, StWriteTensor> = {};
  for (const [name, t] of m.tensors) out[name] = { dtype: t.dtype === 'bf16' ? 'BF16' : 'F32', shape: t.shape, data: t.data };
  writeSafetensors(join(dir, 'model.safetensors'), out);
  for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(MODEL, f), join(dir, f));
  m.dispose();
  return dir;
}

for (const dtype of ['bf16', 'fp8'] as const satisfies readonly LoadDType[]) {
  test(`2 stages of f32 floe-brown with --dtype ${dtype}: rank 1 converts only its layers, rank 0 every weight the rule names`, async () => {
    const s0 = await openStage(MODEL, 0, 2, { load: { dtype } });
    const s1 = await openStage(MODEL, 1, 2, { load: { dtype } });
    const held = dtype === 'bf16' ? 'bf16' : 'fp8_e4m3';
    // rank 1's layers are held converted; its embedding (and tied head) is the f32 file view, not a converted copy
    const r1 = [...s1.loaded.tensors].filter(([n]) => LAYER.test(n) && n.endsWith('_proj.weight'));
    assert.ok(r1.length > 0);
    for (const [n, t] of r1) assert.equal(t.dtype, held, `rank 1 ${n}`);
    assert.equal(s1.loaded.tensors.get(EMBED)!.dtype, 'f32', 'rank 1 keeps the embedding as stored');
    assert.equal(s1.loaded.tensors.get(EMBED)!.layout, 'rows');
    // rank 0 converts the embedding under bf16 (fp8 converts linear weights only)
    assert.equal(s0.loaded.tensors.get(EMBED)!.dtype, dtype === 'bf16' ? 'bf16' : 'f32', 'rank 0 embedding');
    for (const [n, t] of s0.loaded.tensors) if (LAYER.test(n) && n.endsWith('_proj.weight')) assert.equal(t.dtype, held, `rank 0 ${n}`);
    // each stage holds its own layers only, and the two cover the model
    const layersOf = (m: Map<string, unknown>) => [...new Set([...m.keys()].map((n) => LAYER.exec(n)?.[1]).filter((x) => x !== undefined))].map(Number).sort((a, b) => a - b);
    const range = (r: { start: number; end: number }) => Array.from({ length: r.end - r.start }, (_, i) => r.start + i);
    assert.deepEqual(layersOf(s0.loaded.tensors as Map<string, unknown>), range(s0.stages[0]!));
    assert.deepEqual(layersOf(s1.loaded.tensors as Map<string, unknown>), range(s1.stages[1]!));
    assert.deepEqual([...range(s0.stages[0]!), ...range(s1.stages[1]!)], [0, 1, 2, 3, 4, 5]);
    s0.loaded.dispose();
    s1.loaded.dispose();
  });
}

test('2 stages of a bf16 checkpoint: rank 1 does not repack the embedding for the GEMV (rank 0 does when the backend repacks)', async () => {
  const dir = await bf16Copy();
  const s0 = await openStage(dir, 0, 2);
  const s1 = await openStage(dir, 1, 2);
  const e0 = s0.loaded.tensors.get(EMBED)!, e1 = s1.loaded.tensors.get(EMBED)!;
  assert.equal(e1.dtype, 'bf16');
  assert.equal(e1.layout, 'rows', 'rank 1 embedding stays the mapped rows');
  // where the backend repacks bf16 (AVX-512 hosts), rank 0's embedding and rank 1's own layers take the r16 layout
  const q1 = s1.loaded.tensors.get('model.layers.3.self_attn.q_proj.weight')!;
  if (q1.layout !== 'rows') {
    assert.equal(q1.layout, 'bf16r16');
    assert.equal(e0.layout, 'bf16r16', 'rank 0 repacks the embedding it reads as the head');
  }
  s0.loaded.dispose();
  s1.loaded.dispose();
});
