// One `floe finetune` command line for the pipeline fine-tuning tests, and the comparisons against the single-process
// run: per-step metrics (metrics.jsonl) and the assembled PEFT adapter, factor by factor.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readHfConfig } from '../../src/formats/hf-config.js';
import { readPeftAdapter } from '../../src/model/adapter.js';
import { LORA_TARGETS } from '../../src/model/lora.js';
import { BIN, BROWN } from './mpi-helpers.js';

/** Micro-batches per step: the pipelined run's --micro-batches, the single run's --grad-accum. */
export const M = 4;

/** A short LoRA run on f32 floe-brown (4 steps, a checkpoint at step 2), fresh seed per test file. */
export function finetuneArgs(data: string, seed: string): string[] {
  return ['finetune', '--model', BROWN, '--data', data, '--max-steps', '4', '--batch-size', '2', '--lora-rank', '4', '--lr', '5e-3',
    '--max-grad-norm', '0.5', '--seed', seed, '--save-steps', '2', '--threads', '1', '--quiet', '--json'];
}

export interface Metric { step: number; loss: number; grad_norm: number; lr: number; tokens: number }
export const metrics = (out: string): Metric[] =>
  readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Metric);

/** `floe finetune ARGS --grad-accum M` in one process into OUT: its metrics. */
export function singleRun(args: readonly string[], out: string): Metric[] {
  const r = spawnSync(process.execPath, [BIN, ...args, '--out', out, '--grad-accum', String(M)], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  return metrics(out);
}

/**
 * Same steps, tokens and learning rates; loss and grad norm bit for bit (f32: every stage runs the single process's
 * ops on each micro-batch, accumulates gradients in micro-batch order and the norm's sum runs over the stages in order).
 */
export function assertSameRun(got: readonly Metric[], want: readonly Metric[]): void {
  assert.equal(got.length, want.length);
  got.forEach((g, i) => {
    const w = want[i]!;
    assert.equal(g.step, w.step);
    assert.equal(g.tokens, w.tokens);
    assert.equal(g.lr, w.lr);
    for (const k of ['loss', 'grad_norm'] as const) assert.equal(g[k], w[k], `step ${g.step} ${k}: ${g[k]} vs one process ${w[k]}`);
  });
}

/** Every factor of the adapter in DIR equals the one in WANT bit for bit; training moved every B. */
export function assertSameAdapter(dir: string, want: string): void {
  const { config } = readHfConfig(BROWN);
  const a = readPeftAdapter(dir, config), b = readPeftAdapter(want, config);
  for (let l = 0; l < config.numLayers; l++) for (const t of LORA_TARGETS) {
    const x = a.layers[l]![t]!, y = b.layers[l]![t]!;
    for (const [p, q, w] of [[x.a, y.a, 'A'], [x.b, y.b, 'B']] as const) {
      assert.equal(p.length, q.length, `layer ${l} ${t} ${w}: size`);
      for (let j = 0; j < q.length; j++) if (p[j] !== q[j]) assert.fail(`layer ${l} ${t} ${w}[${j}]: ${p[j]} vs one process ${q[j]}`);
    }
    assert.ok(y.b.some((v) => v !== 0), 'training moved B off zero');
  }
}
