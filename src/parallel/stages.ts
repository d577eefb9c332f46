// Stage split: contiguous layer ranges per pipeline stage, balanced by per-token FLOPs and weight bytes, or given.

import type { LlamaConfig } from '../model/config.js';
import type { LayerRange } from '../model/llama.js';

/** A stage layout that cannot fit the model (an operator's flags, as a usage error: the same on every rank). */
export class StagePlanError extends RangeError {}

/**
 * Per-token FLOPs and weight bytes of a layer are both proportional to its parameters (same dtype in every layer),
 * so each layer costs its parameter count; stage 0 also runs the head (V·D, norm and sampling stay there when
 * serving), or the last stage does (`headOn: 'last'`, training: the loss runs after the last layer).
 * Returns the split that minimises the most expensive stage (ties: earlier stages take fewer layers).
 */
export function balancedStages(cfg: LlamaConfig, numStages: number, headOn: 'first' | 'last' = 'first'): LayerRange[] {
  const N = cfg.numLayers;
  if (!(Number.isInteger(numStages) && numStages >= 1)) throw new StagePlanError(`pipeline parallel size must be an integer >= 1, got ${numStages}`);
  if (numStages > N) throw new StagePlanError(`pipeline parallel size ${numStages} is more than the model's ${N} layers (each stage needs at least one)`);
  const { hiddenSize: D, numHeads: H, numKvHeads: K, headDim: E, intermediateSize: F, vocabSize: V } = cfg;
  const layer = 2 * D * H * E + 2 * D * K * E + 3 * D * F;
  const head = V * D;
  const headStage = headOn === 'first' ? 0 : numStages - 1;
  const cost = (s: number, a: number, b: number) => (b - a) * layer + (s === headStage ? head : 0);
  // best[s][n]: the least max-stage cost of splitting layers [0, n) into stages 0..s; cut[s][n]: where stage s starts
  const best = Array.from({ length: numStages }, () => new Array<number>(N + 1).fill(Infinity));
  const cut = Array.from({ length: numStages }, () => new Array<number>(N + 1).fill(0));
  for (let n = 1; n <= N; n++) best[0]![n] = cost(0, 0, n);
  for (let s = 1; s < numStages; s++) {
    for (let n = s + 1; n <= N; n++) {
      for (let a = n - 1; a >= s; a--) {
        const c = Math.max(best[s - 1]![a]!, cost(s, a, n));
        if (c < best[s]![n]!) { best[s]![n] = c; cut[s]![n] = a; }
      }
    }
  }
  const out: LayerRange[] = [];
  let end = N;
  for (let s = numStages - 1; s >= 0; s--) {
    const start = s === 0 ? 0 : cut[s]![end]!;
    out.unshift({ start, end });
    end = start;
  }
  return out;
}

/** `--pipeline-stages 0-7,8-15` (inclusive ranges): contiguous, in order, covering every layer exactly once. */
export function parseStages(spec: string, numLayers: number): LayerRange[] {
  const out: LayerRange[] = [];
  const parts = spec.split(',');
  for (const [i, p] of parts.entries()) {
    const m = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(p) ?? /^\s*(\d+)\s*$/.exec(p);
    if (!m) throw new StagePlanError(`--pipeline-stages: entry ${i} '${p}' is not FIRST-LAST (e.g. 0-7,8-15)`);
    const a = Number(m[1]);
    const b = Number(m[2] ?? m[1]);
    const expect = out.length === 0 ? 0 : out[out.length - 1]!.end;
    if (a !== expect) throw new StagePlanError(`--pipeline-stages: entry ${i} '${p}' starts at layer ${a}, expected ${expect} (stages are contiguous, in order)`);
    if (b < a) throw new StagePlanError(`--pipeline-stages: entry ${i} '${p}' ends before it starts`);
    out.push({ start: a, end: b + 1 });
  }
  const last = out[out.length - 1]!.end;
  if (last !== numLayers) throw new StagePlanError(`--pipeline-stages '${spec}' covers layers 0-${last - 1}, the model has ${numLayers} (0-${numLayers - 1})`);
  return out;
}

export function formatStages(stages: readonly LayerRange[]): string {
  return stages.map((s) => `${s.start}-${s.end - 1}`).join(',');
}
