// Shared engine-test helpers: fixture model, request builders, a latin1 byte decoder, and running an engine to the end.

import { openModel } from '../../src/model/open.js';
import type { LlamaModel } from '../../src/model/llama.js';
import type { Decoder } from '../../src/formats/detokenize.js';
import type { Engine } from '../../src/engine/engine.js';
import type { EngineOutput, GenerateOutput, GenerateRequest, SamplingSpec } from '../../src/engine/protocol.js';
import { repoPath } from '../repo.js';

export const FIXTURES = repoPath('test/fixtures/models/');

export async function fixtureModel(name = 'gqa_f32'): Promise<LlamaModel> {
  return (await openModel(FIXTURES + name)).model;
}

/** Every id is one latin1 character: text and stop strings without a tokenizer file. */
export const byteDecoder: Decoder = { decode: (ids) => Buffer.from(ids.map((i) => i & 0xff)).toString('latin1') };

/** Deterministic PRNG for test inputs (mulberry32). */
export function rand(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

export function randomPrompt(r: () => number, len: number, vocab = 256): number[] {
  return Array.from({ length: len }, () => 3 + Math.floor(r() * (vocab - 3)));
}

export const GREEDY: SamplingSpec = {
  temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, frequencyPenalty: 0, presencePenalty: 0, logitBias: null, seed: null,
};

export function genReq(id: string, promptIds: number[], over: Partial<Omit<GenerateRequest, 'kind' | 'id' | 'promptIds'>> = {}): GenerateRequest {
  return {
    kind: 'generate', id, promptIds, sampling: GREEDY, maxTokens: 8, n: 1, stop: [], stopTokenIds: [], ignoreEos: false,
    logprobs: null, promptLogprobs: null, skipSpecialTokens: true, ...over,
  };
}

export interface Collected {
  tokens: number[][]; // per completion index
  text: string[];
  finish: (string | null)[];
  stopReason: (string | number | null)[];
  outputs: GenerateOutput[];
}

/** Step until idle (bounded), grouping outputs by request id. */
export function runAll(engine: Engine, maxSteps = 10_000): { byId: Map<string, Collected>; other: EngineOutput[] } {
  const byId = new Map<string, Collected>();
  const other: EngineOutput[] = [];
  for (let i = 0; engine.hasWork; i++) {
    if (i >= maxSteps) throw new Error(`engine still busy after ${maxSteps} steps`);
    for (const o of engine.step()) collect(byId, other, o);
  }
  return { byId, other };
}

export function collect(byId: Map<string, Collected>, other: EngineOutput[], o: EngineOutput): void {
  if (o.kind !== 'generate') { other.push(o); return; }
  let c = byId.get(o.id);
  if (!c) { c = { tokens: [], text: [], finish: [], stopReason: [], outputs: [] }; byId.set(o.id, c); }
  c.outputs.push(o);
  c.tokens[o.index] = [...(c.tokens[o.index] ?? []), ...o.tokenIds];
  c.text[o.index] = (c.text[o.index] ?? '') + o.text;
  if (o.finishReason !== null) {
    if (c.finish[o.index] != null) throw new Error(`${o.id}[${o.index}] finished twice`);
    c.finish[o.index] = o.finishReason;
    c.stopReason[o.index] = o.stopReason;
  }
}
