// Random Llama init: HF names and shapes, init statistics, seeded determinism, loadable and runnable by openModel.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initLlamaWeights, llamaConfigJson, writeInitModel, type InitModelOptions } from "../../src/train/init-model.js";
import { openModel } from "../../src/model/open.js";
import { generate } from "../../src/model/generate.js";

const OPTS: InitModelOptions = {
  vocabSize: 300, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, bosTokenId: 1, eosTokenIds: [2], seed: 5,
};

function stats(x: Float32Array): { mean: number; std: number } {
  let s = 0, s2 = 0;
  for (const v of x) { s += v; s2 += v * v; }
  const mean = s / x.length;
  return { mean, std: Math.sqrt(s2 / x.length - mean * mean) };
}

test("weights: HF names and shapes, normal(0, 0.02) with scaled output projections, unit norms, tied head", () => {
  const w = initLlamaWeights(OPTS);
  const shape = (n: string) => w[n]!.shape;
  assert.deepEqual(shape("model.embed_tokens.weight"), [300, 64]);
  assert.deepEqual(shape("model.layers.1.self_attn.q_proj.weight"), [64, 64]);
  assert.deepEqual(shape("model.layers.1.self_attn.k_proj.weight"), [32, 64]);
  assert.deepEqual(shape("model.layers.0.mlp.down_proj.weight"), [64, 96]);
  assert.equal(w["lm_head.weight"], undefined);
  assert.equal(Object.keys(w).length, 1 + 2 * 9 + 1);
  const e = stats(w["model.embed_tokens.weight"]!.data as Float32Array);
  assert.ok(Math.abs(e.mean) < 0.002 && Math.abs(e.std - 0.02) < 0.001, JSON.stringify(e));
  const d = stats(w["model.layers.0.mlp.down_proj.weight"]!.data as Float32Array);
  assert.ok(Math.abs(d.std - 0.02 / Math.sqrt(4)) < 0.001, JSON.stringify(d));
  assert.ok((w["model.norm.weight"]!.data as Float32Array).every((v) => v === 1));
  assert.ok(initLlamaWeights({ ...OPTS, tieWordEmbeddings: false })["lm_head.weight"] !== undefined);
});

test("one seed gives one model; another seed another", () => {
  const a = initLlamaWeights(OPTS)["model.layers.0.self_attn.v_proj.weight"]!.data as Float32Array;
  const b = initLlamaWeights(OPTS)["model.layers.0.self_attn.v_proj.weight"]!.data as Float32Array;
  const c = initLlamaWeights({ ...OPTS, seed: 6 })["model.layers.0.self_attn.v_proj.weight"]!.data as Float32Array;
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test("bad shapes are rejected with the field and value", () => {
  assert.throws(() => initLlamaWeights({ ...OPTS, numKvHeads: 3 }), /numHeads 4 is not a multiple of numKvHeads 3/);
  assert.throws(() => llamaConfigJson({ ...OPTS, hiddenSize: 0 }), /hiddenSize must be a positive integer, got 0/);
});

test("the written directory loads and generates", async () => {
  const dir = await mkdtemp(join(tmpdir(), "floe-init-"));
  try {
    writeInitModel(dir, OPTS);
    const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    assert.equal(cfg.num_key_value_heads, 2);
    assert.equal(cfg.tie_word_embeddings, true);
    const opened = await openModel(dir, { backend: "reference" });
    assert.equal(opened.model.config.vocabSize, 300);
    assert.equal(opened.model.config.headDim, 16);
    const res = generate(opened.model, [1, 5, 9], { maxTokens: 4, sampling: { temperature: 0 }, stopTokenIds: [] });
    assert.equal(res.outputIds.length, 4);
    assert.ok(res.outputIds.every((t) => t >= 0 && t < 300));
    opened.loaded.dispose();
    assert.throws(() => writeInitModel(join(dir, "x"), OPTS, join(dir, "nope")), /nope\/tokenizer\.json does not exist/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
