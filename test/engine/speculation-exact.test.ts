// Token-exact speculation in the engine on a model with tiny top-1 margins (random weights, GQA 4, 16 layers):
// greedy with an oracle proposer (the target's own greedy continuation) equals plain greedy; needs batch-invariant
// attention and matmuls (a verify row must equal its decode step bitwise).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { KvDType } from '../../src/backend/backend.js';
import { loadNativeBackend } from '../../src/backend/native.js';
import { selectBackend } from '../../src/backend/select.js';
import { Engine } from '../../src/engine/engine.js';
import type { LlamaModel } from '../../src/model/llama.js';
import type { Proposal, Proposer, ProposeRequest } from '../../src/model/speculation.js';
import type { DType } from '../../src/tensor/tensor.js';
import { randomModel } from '../model/random-llama.js';
import { genReq, rand, randomPrompt, runAll } from './helpers.js';

const native = loadNativeBackend();
const SEED = process.env.FLOE_SEED !== undefined ? Number(process.env.FLOE_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;

/** Proposes each sequence's continuation from the plain greedy run (found by its prompt prefix). */
class OracleProposer implements Proposer {
  readonly name = 'oracle';
  proposed = 0;
  constructor(private readonly full: readonly (readonly number[])[]) {}
  propose(reqs: readonly ProposeRequest[]): Proposal[] {
    return reqs.map((r) => {
      const f = this.full.find((x) => r.tokens.every((t, i) => x[i] === t));
      const tokens = f ? f.slice(r.tokens.length, r.tokens.length + r.k) : [];
      this.proposed += tokens.length;
      return { tokens };
    });
  }
}

function greedyRun(model: LlamaModel, kvDtype: KvDType, prompts: number[][], maxTokens: number, spec?: { proposer: Proposer; k: number }): number[][] {
  const engine = new Engine(model, null, {
    kvDtype, maxBatchedTokens: 512, maxNumSeqs: 8, kvCacheMemory: 64 << 20,
    ...(spec ? { speculative: spec.proposer, numSpeculativeTokens: spec.k } : {}),
  });
  prompts.forEach((p, i) => engine.add(genReq(`r${i}`, p, { maxTokens, ignoreEos: true })));
  const { byId } = runAll(engine);
  return prompts.map((_, i) => byId.get(`r${i}`)!.tokens[0]!);
}

test('engine greedy with --speculative (oracle proposer) equals plain greedy on a random GQA-4, 16-layer model with tiny margins', { skip: !native && 'native addon not built' }, () => {
  const r = rand(SEED);
  const be = selectBackend('native', 2);
  // [weights, kv, concurrent requests, k]: at most 16 rows per step, the batch-invariant range of the matmuls
  const cases: [DType, KvDType, number, number][] = [['q8_0', 'bf16', 1, 8], ['q8_0', 'fp8_e4m3', 3, 4], ['bf16', 'bf16', 2, 6], ['fp8_e4m3', 'bf16', 3, 4]];
  for (const [dtype, kvDtype, n, k] of cases) {
    const model = randomModel(r, { H: 8, K: 2, E: 32, D: 256, F: 512, V: 256, layers: 16 }, dtype, be);
    const prompts = Array.from({ length: n }, () => randomPrompt(r, 20 + Math.floor(r() * 30)));
    const want = greedyRun(model, kvDtype, prompts, 48);
    const oracle = new OracleProposer(prompts.map((p, i) => [...p, ...want[i]!]));
    const got = greedyRun(model, kvDtype, prompts, 48, { proposer: oracle, k });
    const label = `${dtype} weights, ${kvDtype} KV, ${n} requests, k=${k}, seed ${SEED}`;
    got.forEach((g, i) => {
      const at = g.findIndex((t, j) => t !== want[i]![j]);
      assert.deepEqual(g, want[i], `${label}: request ${i} departs from plain greedy at output token ${at}`);
    });
    assert.ok(oracle.proposed >= n * 30, `${label}: ${oracle.proposed} draft tokens proposed (the verify path ran)`);
  }
});
