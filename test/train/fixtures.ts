// Train test helpers: PyTorch fixtures (scripts/make_train_fixtures.py), backends with training kernels, comparisons.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { Backend, TrainBackend } from '../../src/backend/backend.js';
import { referenceBackend } from '../../src/backend/reference.js';
import { loadNativeBackend } from '../../src/backend/native.js';
import { loadModel, type LoadedModel } from '../../src/formats/load.js';
import { readSafetensorsSync } from '../../src/formats/safetensors.js';
import { asF32 } from '../../src/tensor/tensor.js';
import type { PackedBatch } from '../../src/model/llama-train.js';
import { LORA_MODULE, LoraLinear, type LoraAdapter, type LoraTarget } from '../../src/model/lora.js';
import { KvCache } from '../../src/model/kv-cache.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { repoPath } from '../repo.js';

export const FIXTURES = repoPath('test/fixtures/');

export interface TrainFixture {
  model: string;
  kind: 'lora' | 'full';
  rank?: number; alpha?: number; rslora?: boolean; targets?: LoraTarget[];
  batch: { tokens: number[]; targets: number[]; positions: number[]; segStart: number[] };
  loss: number;
  adam?: { lr: number; betas: [number, number]; eps: number; weight_decay: number; max_grad_norm: number; steps: number; losses: number[] };
  tensors: Map<string, Float32Array>;
}

export function readFixture(name: string): TrainFixture {
  const dir = join(FIXTURES, 'train', name);
  const meta = JSON.parse(readFileSync(join(dir, 'fixture.json'), 'utf8')) as Omit<TrainFixture, 'tensors'>;
  const st = readSafetensorsSync(join(dir, 'tensors.safetensors'));
  const tensors = new Map<string, Float32Array>();
  for (const [n, t] of st.tensors) tensors.set(n, asF32(t.data).slice());
  return { ...meta, tensors };
}

export function loadBase(f: TrainFixture): Promise<LoadedModel> {
  return loadModel(join(FIXTURES, 'models', f.model));
}

export function packed(f: TrainFixture): PackedBatch {
  return {
    tokens: Int32Array.from(f.batch.tokens), targets: Int32Array.from(f.batch.targets),
    positions: Int32Array.from(f.batch.positions), segStart: Int32Array.from(f.batch.segStart),
  };
}

/** The adapter stored in a LoRA fixture (`init.` tensors); with zeroB, B = 0 as PEFT starts. */
export function fixtureAdapter(f: TrainFixture, numLayers: number, zeroB = false): LoraAdapter {
  const layers: Partial<Record<LoraTarget, LoraLinear>>[] = [];
  for (let l = 0; l < numLayers; l++) {
    const lay: Partial<Record<LoraTarget, LoraLinear>> = {};
    for (const t of f.targets!) {
      const key = `base_model.model.model.layers.${l}.${LORA_MODULE[t]}`;
      const a = f.tensors.get(`init.${key}.lora_A.weight`)!.slice();
      const b = f.tensors.get(`init.${key}.lora_B.weight`)!.slice();
      if (zeroB) b.fill(0);
      lay[t] = new LoraLinear(b.length / f.rank!, a.length / f.rank!, f.rank!, a, b);
    }
    layers.push(lay);
  }
  return { config: { rank: f.rank!, alpha: f.alpha!, rslora: f.rslora!, targets: f.targets!, dropout: 0 }, layers };
}

/** Both built-in backends implement the training kernels; assert it, so no test silently runs something else. */
export function asTrain(be: Backend): TrainBackend {
  const t = be as Partial<TrainBackend>;
  assert.equal(typeof t.crossEntropy, 'function', `${be.name} backend has training kernels`);
  assert.equal(typeof t.attentionDenseBackward, 'function', `${be.name} backend has training kernels`);
  return be as TrainBackend;
}

export function trainBackends(): [string, TrainBackend][] {
  const out: [string, TrainBackend][] = [['reference', asTrain(referenceBackend)]];
  const native = loadNativeBackend();
  if (native) out.push(['native', asTrain(native)]);
  return out;
}

/** Every |got - want| <= atol + rtol·|want|, with atol relative to the largest |want|; names the first bad index. */
export function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, rtol = 1e-3, atolFrac = 1e-4): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let mx = 0;
  for (let i = 0; i < want.length; i++) mx = Math.max(mx, Math.abs(want[i]!));
  const atol = atolFrac * mx + 1e-12;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i]! - want[i]!);
    if (!(d <= atol + rtol * Math.abs(want[i]!))) assert.fail(`${what}[${i}]: got ${got[i]}, want ${want[i]} (|Δ| ${d.toExponential(2)}, max |want| ${mx.toExponential(2)})`);
  }
}

/** ‖got - want‖₂ <= rel · ‖want‖₂ (for paths with low-precision activations, where single elements are noisy). */
export function assertRelNorm(got: ArrayLike<number>, want: ArrayLike<number>, what: string, rel: number): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let dd = 0, ww = 0;
  for (let i = 0; i < want.length; i++) { dd += (got[i]! - want[i]!) ** 2; ww += want[i]! ** 2; }
  const r = Math.sqrt(dd / ww);
  assert.ok(r <= rel, `${what}: relative error ${r.toExponential(2)} > ${rel}`);
}

/** A temporary HF model dir: a fixture checkpoint plus the tiny byte-level tokenizer with a chat template. */
export function tinyModelDir(model = 'gqa_f32'): string {
  const dir = mkdtempSync(join(tmpdir(), 'floe-tiny-'));
  for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(FIXTURES, 'models', model, f), join(dir, f));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(FIXTURES, 'train', 'tokenizer', f), join(dir, f));
  return dir;
}

/** (T, V) logits of one sequence `ids` through `model` (f32 paged KV, every position). */
export function seqLogits(model: LlamaModel, ids: readonly number[]): Float32Array {
  const cfg = model.config;
  const T = ids.length;
  const kv = new KvCache(cfg.numLayers, Math.ceil(T / 16), 16, cfg.numKvHeads, cfg.headDim, 'f32');
  const pos = Int32Array.from({ length: T }, (_, i) => i);
  return model.forward({
    tokens: Int32Array.from(ids), positions: pos, slots: pos,
    attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(T), blockTables: Int32Array.from({ length: kv.numBlocks }, (_, i) => i), maxBlocks: kv.numBlocks },
    logitRows: pos,
  }, kv);
}

/** A small JSONL training file in all three shapes. */
export function writeTrainData(dir: string, n = 12, name = 'train.jsonl'): string {
  const words = ['the cat', 'in the hat', 'sat on', 'a mat', 'and the dog', 'ran there', 'then in', 'the rain'];
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const a = words[i % words.length]!, b = words[(i * 3 + 1) % words.length]!;
    if (i % 3 === 0) lines.push(JSON.stringify({ text: `${a} ${b}.` }));
    else if (i % 3 === 1) lines.push(JSON.stringify({ prompt: `Q: ${a}?`, completion: ` ${b}` }));
    else lines.push(JSON.stringify({ messages: [{ role: 'user', content: a }, { role: 'assistant', content: b }] }));
  }
  const p = join(dir, name);
  writeFileSync(p, lines.join('\n') + '\n');
  return p;
}
